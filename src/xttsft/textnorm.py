"""Text as XTTS-v2 should read it: Brazilian Portuguese first.

coqui's ``multilingual_cleaners`` (which the XTTS tokenizer applies before BPE) reads Portuguese
numbers, but gets much of what Whisper writes in Brazilian transcripts wrong:

=================  ==========================================  ==========================================
written            coqui-tts 0.28 reads                        xttsft writes
=================  ==========================================  ==========================================
``R$ 5,50``        "r dólar cinco vírgula cinco"               "cinco reais e cinquenta centavos"
``14h30``          "catorzehtrinta"                            "catorze horas e trinta minutos"
``3ª vez``         "terceiro vez"                              "terceira vez"
``Nº 5``           "nº cinco"                                  "número cinco"
``exemplo.com.br`` "exemplo.com.br" (the model says anything)  "exemplo ponto com ponto br"
``2,50 m``         "dois vírgula cinco m"                      "dois vírgula cinquenta m"
=================  ==========================================  ==========================================

and XTTS-v2 says "ponto" aloud at a Portuguese sentence end glued to its word (coqui-ai/TTS
#2952; the maintainers' workaround is a space before the period). :func:`expand` rewrites these
before coqui's cleaner runs, the same way for the dataset (``build``'s normalized text, which
training reads) and for ``synth``, so the model learns and speaks one reading. Other languages
pass through unchanged: coqui's cleaner is right for them as far as we know.
"""

from __future__ import annotations

import re
from collections.abc import Callable

__all__ = ["expand", "expand_pt"]

_PT_ABBREVIATIONS = {
    "sr": "senhor",
    "sra": "senhora",
    "srta": "senhorita",
    "dr": "doutor",
    "dra": "doutora",
    "prof": "professor",
    "profa": "professora",
    "av": "avenida",
    "etc": "etcétera",
    "exmo": "excelentíssimo",
    "exma": "excelentíssima",
    "vs": "versus",
    "pág": "página",
    "tel": "telefone",
    # coqui's own pt list: written out here, since the sentence-period rule below would unglue their dot
    "st": "santo",
    "co": "companhia",
    "cia": "companhia",
    "jr": "júnior",
    "ltd": "limitada",
}
_CURRENCIES = {  # symbol -> (singular, plural); cents are centavos (pence for the pound)
    "R$": ("real", "reais"),
    "US$": ("dólar", "dólares"),
    "$": ("dólar", "dólares"),
    "€": ("euro", "euros"),
    "£": ("libra", "libras"),
}
# 1.234,56 | 1234,56 | 5 (Brazilian grouping: dots for thousands, a comma for decimals)
_NUM = r"\d{1,3}(?:\.\d{3})+(?:,\d+)?|\d+(?:,\d+)?"
_SCALE = r"(?:\s+(mil|milhão|milhões|bilhão|bilhões))?"
_MONEY_BEFORE = re.compile(r"(R\$|US\$|\$|€|£)\s?(" + _NUM + r")" + _SCALE + r"\b")
_MONEY_AFTER = re.compile(r"(" + _NUM + r")" + _SCALE + r"\s?(€|£)")
_H = r"([01]?\d|2[0-3])"
# 14h30, 14h, 14:30 (two-digit hours only: "João 3:16" and "Capítulo 3: 10 dicas" are not times)
_HOURS = re.compile(r"\b" + _H + r"h([0-5]\d)\b(?:\s?min\b)?|\b([01]\d|2[0-3]):([0-5]\d)\b|\b" + _H + r"\s?h\b")
_ORDINAL = re.compile(r"\b(\d+)\s?([ºª]|\.º|\.ª)(?=\W|$)")  # not °: coqui reads 30° as "trinta graus"
_NUMERO = re.compile(r"\b[Nn](?:\.\s?[º°o]|[º°])\s?(?=\d)|\b[Nn][º°]")  # nº 5, n.º 5, n. o 5; not "no 7"
_ABBREV = re.compile(
    r"\b(" + "|".join(sorted(_PT_ABBREVIATIONS, key=len, reverse=True)) + r")\.(?=\s|$)", re.IGNORECASE
)
_DOMAIN = re.compile(r"\b((?:[a-z0-9-]+\.)+(?:com|org|net|gov|edu|br|io|pt)(?:\.[a-z]{2})?)\b", re.IGNORECASE)
_EMAIL = re.compile(r"\b([\w.+-]+)@([\w-]+(?:\.[\w-]+)+)\b")
_GROUPED = re.compile(r"\b\d{1,3}(?:\.\d{3})+(?:,\d+)?\b")
_DECIMAL = re.compile(r"\b(\d+),(\d+)\b")
_SENTENCE_DOT = re.compile(r"(?<=\w)\.(?=\s+\S|\s*$)")


def _words(n: int) -> str:
    from num2words import num2words

    return num2words(n, lang="pt_BR").replace(",", "")


def _number(text: str) -> str:
    """``1.234,56`` -> "mil duzentos e trinta e quatro vírgula cinquenta e seis"."""
    whole, _, frac = text.replace(".", "").partition(",")
    out = _words(int(whole))
    if frac:  # read as written: 2,50 is "dois vírgula cinquenta", 0,05 "zero vírgula zero cinco"
        lead = len(frac) - len(frac.lstrip("0"))
        out += " vírgula " + " ".join(["zero"] * lead + ([_words(int(frac))] if frac.strip("0") else []))
    return out


_FEMININE = [
    (re.compile(r"\bum\b(?!\s+(?:milh|bilh))"), "uma"),
    (re.compile(r"\bdois\b(?!\s+(?:milh|bilh))"), "duas"),
    (re.compile(r"\b(\w+)entos\b"), r"\1entas"),
]


def _words_f(n: int) -> str:
    """``n`` before a feminine noun: uma hora, duas libras, vinte e uma horas, duzentas libras."""
    out = _words(n)
    for pattern, repl in _FEMININE:
        out = pattern.sub(repl, out)
    return out


def _money(amount: str, symbol: str, scale: str | None = None) -> str:
    singular, plural = _CURRENCIES[symbol]
    count = _words_f if symbol == "£" else _words  # a libra is feminine
    if scale:  # R$ 5 milhões: cinco milhões de reais; R$ 10 mil: dez mil reais
        linker = " " if scale == "mil" else " de "
        return f"{_number(amount)} {scale}{linker}{plural}"
    whole, _, frac = amount.replace(".", "").partition(",")
    units, cents = int(whole), int((frac + "00")[:2]) if frac else 0
    parts = []
    if units or not cents:
        parts.append(f"{count(units)} {singular if units == 1 else plural}")
    if cents:
        cent = ("centavo", "centavos") if symbol != "£" else ("pêni", "pence")
        parts.append(f"{_words(cents)} {cent[0] if cents == 1 else cent[1]}")
    return " e ".join(parts)


def _ordinal(m: re.Match) -> str:
    from num2words import num2words

    words = num2words(int(m.group(1)), lang="pt_BR", to="ordinal")
    if "ª" in m.group(2):  # feminine: primeira, vigésima primeira
        words = " ".join(w[:-1] + "a" if w.endswith("o") else w for w in words.split())
    return words


def _hours(m: re.Match) -> str:
    g = m.groups()
    h, mins = (
        (int(g[0]), int(g[1])) if g[0] is not None else (int(g[2]), int(g[3])) if g[2] is not None else (int(g[4]), 0)
    )
    out = f"{_words_f(h)} {'hora' if h == 1 else 'horas'}"
    return out + (f" e {_words(mins)} {'minuto' if mins == 1 else 'minutos'}" if mins else "")


def _abbreviation(m: re.Match) -> str:
    word = _PT_ABBREVIATIONS[m.group(1).lower()]
    return word + "." if word == "etcétera" else word  # "etc." ends sentences: its period stays one


def _spell_dots(m: re.Match) -> str:
    return " ponto ".join(m.group(0).split("."))


def expand_pt(text: str) -> str:
    """Brazilian Portuguese text with currency, hours, ordinals, "nº", abbreviations, addresses and
    Brazilian-grouped numbers written out, and sentence periods kept off their word (see the module docstring)."""
    steps: list[tuple[re.Pattern, str | Callable[[re.Match], str]]] = [
        (_EMAIL, lambda m: f"{m.group(1).replace('.', ' ponto ')} arroba {m.group(2).replace('.', ' ponto ')}"),
        (_DOMAIN, _spell_dots),
        (_MONEY_BEFORE, lambda m: _money(m.group(2), m.group(1), m.group(3))),
        (_MONEY_AFTER, lambda m: _money(m.group(1), m.group(3), m.group(2))),
        (_HOURS, _hours),
        (_ORDINAL, _ordinal),
        (_NUMERO, "número "),
        (_ABBREV, _abbreviation),
        (_GROUPED, lambda m: _number(m.group(0))),
        (_DECIMAL, lambda m: _number(m.group(0))),
        (_SENTENCE_DOT, " ."),
    ]
    for pattern, repl in steps:
        text = pattern.sub(repl, text)
    return " ".join(text.split())


_BY_LANGUAGE: dict[str, Callable[[str], str]] = {"pt": expand_pt}


def expand(text: str, language: str) -> str:
    """``text`` as XTTS-v2 should read it in ``language`` (``pt``, ``pt-br``, ``en``, ...)."""
    fn = _BY_LANGUAGE.get(language.lower().split("-")[0])
    return fn(text) if fn else text
