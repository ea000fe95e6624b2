"""Any LJSpeech-style dataset, read one way by ``train``, ``build --check``, ``synth``, ``export`` and ``eval``.

Layouts, detected in this order (:func:`read_dataset` says which in one log line):

* ``metadata_train.csv`` + ``metadata_val.csv``: LJSpeech rows ``id|text[|normalized_text]``,
  audio in ``wavs/<id>.wav`` (what ``xttsft build`` writes);
* ``metadata_train.csv`` + ``metadata_eval.csv``: the same rows (coqui's recipe);
* the coqui formatter layout: a header ``audio_file|text|speaker_name`` and rows
  ``wavs/x.wav|text|speaker`` in ``metadata_train.csv`` + ``metadata_eval.csv``
  (xtts-finetune-webui, coqui's XTTS demo), with ``lang.txt``;
* a single ``metadata.csv`` (downloaded corpora): split deterministically with the rules
  of ``xttsft build`` (:func:`split_ids`, validation fraction and seed).

The language comes from ``--language``, then ``lang.txt``, then ``stats.json``; a dataset
with none, or with one XTTS-v2 does not speak, is refused with the fix.

Rows that cannot be trained on are reported with the file, line and reason, never
reinterpreted: a ``|`` inside the text, a duplicate id, an audio path that leaves the
folder (``../``, absolute, a symlink out), empty text. :func:`inspect_samples` then
measures every remaining clip against the model (length, tokens): ``train`` drops what it
lists and ``build --check`` reports the very same list.
"""

from __future__ import annotations

import csv
import hashlib
import io
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from xttsft.audio import SILENT_DBFS, TRAIN_SR, peak_dbfs
from xttsft.errors import DatasetError
from xttsft.records import stats_language
from xttsft.settings import XTTS_LANGUAGES

__all__ = ["XTTS_LANGUAGES", "Row", "Dataset", "Sample", "Inspection", "read_dataset", "inspect_samples"]

log = logging.getLogger(__name__)

COQUI_HEADER = ("audio_file", "text", "speaker_name")
MIN_SAMPLES = int(0.5 * TRAIN_SR)  # coqui refuses clips shorter than 0.5 s


@dataclass(frozen=True)
class Row:
    """One row of a metadata file: where it is, and the audio it names."""

    id: str
    wav: Path
    text: str
    where: str  # "metadata_train.csv:12"


@dataclass
class Dataset:
    """A dataset folder as read: its layout, language and rows per split, and what was refused."""

    root: Path
    layout: str
    language: str
    language_source: str
    train: list[Row]
    val: list[Row]
    refused: list[tuple[str, str]] = field(default_factory=list)  # (where: id, why)

    def describe(self) -> str:
        return (
            f"{self.root}: {self.layout}, {len(self.train)} train + {len(self.val)} val rows, "
            f"language {self.language} (from {self.language_source})"
        )


@dataclass
class Sample:
    """A clip training can take."""

    id: str
    wav: Path
    text: str
    tokens: list[int]
    n_samples: int  # at 22050 Hz


@dataclass
class Inspection:
    """What the model can take of a dataset, and why the rest is dropped."""

    train: list[Sample]
    val: list[Sample]
    dropped: dict[str, list[str]]  # reason -> ["train:<id>", ...]
    resampled: int = 0  # clips at another rate or with several channels (converted on load)


# ------------------------------------------------------------------ layout


def _read_rows(path: Path) -> tuple[list[list[str]], bool]:
    """The rows of a metadata file and whether it has the coqui header. Non-UTF-8 text is refused
    with the line it is on; a byte-order mark (Excel, Notepad) is dropped."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        line = path.read_bytes()[: exc.start].count(b"\n") + 1
        raise DatasetError(
            f"{path}:{line}: not UTF-8 text ({exc.reason}).",
            hint="Save the metadata as UTF-8 (most editors: 'Save with encoding').",
        ) from None
    except OSError as exc:
        raise DatasetError(
            f"{path}: cannot read it ({exc.strerror or exc}).", hint="Check the file's permissions."
        ) from None
    rows = list(csv.reader(text.splitlines(), delimiter="|", quoting=csv.QUOTE_NONE))
    header = bool(rows) and tuple(c.strip() for c in rows[0][:3]) == COQUI_HEADER
    return rows, header


def _inside(root: Path, rel: str) -> Path | None:
    """``root / rel`` when it stays inside ``root`` (symlinks resolved), else None."""
    if not rel or Path(rel).is_absolute() or ".." in Path(rel).parts:
        return None
    p = root / rel
    try:
        return p if p.resolve().is_relative_to(root.resolve()) else None
    except (OSError, RuntimeError):
        return None


def _rows_of(root: Path, path: Path, coqui: bool, seen: set[str], refused: list[tuple[str, str]]) -> list[Row]:
    raw, header = _read_rows(path)
    out = []
    for n, cols in enumerate(raw, 1):
        if header and n == 1:
            continue
        where = f"{path.name}:{n}"
        if not cols or not "".join(cols).strip():
            continue
        if len(cols) < 2:
            refused.append((where, f"expected id|text, got {'|'.join(cols)[:60]!r}"))
            continue
        if len(cols) > 3:
            refused.append((f"{where}: {cols[0].strip()}", f"{len(cols)} columns ('|' inside the text?)"))
            continue
        if coqui:
            rel: str | None = cols[0].strip()
            sid, text = Path(cols[0].strip()).stem, cols[1].strip()
        else:
            sid = cols[0].strip()
            text = (cols[2] if len(cols) > 2 and cols[2].strip() else cols[1]).strip()
            rel = None if Path(sid).is_absolute() or ".." in Path(sid).parts else f"wavs/{sid}.wav"
        if not sid:
            refused.append((where, "empty id"))
            continue
        wav = _inside(root, rel) if rel else None
        if wav is None:
            refused.append((f"{where}: {sid}", "the audio path leaves the dataset folder"))
            continue
        if sid in seen:
            refused.append((f"{where}: {sid}", f"duplicate id {sid}"))
            continue
        if not text:
            refused.append((f"{where}: {sid}", "empty text"))
            continue
        if not any(ch.isalnum() for ch in text):
            refused.append((f"{where}: {sid}", "no words in the text (only punctuation)"))
            continue
        seen.add(sid)
        out.append(Row(sid, wav, text, where))
    return out


def _language(root: Path, flag: str | None) -> tuple[str, str]:
    if flag and flag != "auto":
        lang, source = flag, "--language"
    elif (root / "lang.txt").is_file():
        lang, source = (root / "lang.txt").read_text(encoding="utf-8-sig", errors="replace").strip(), "lang.txt"
    elif (from_stats := stats_language(root)) is not None:
        lang, source = from_stats, "stats.json"
    else:
        raise DatasetError(
            f"{root}: the dataset's language is unknown (no lang.txt, no language in stats.json).",
            hint="Pass --language (pt, en, ...), or write it in lang.txt in the dataset folder.",
        )
    lang = lang.strip().lower()
    if lang not in XTTS_LANGUAGES:
        raise DatasetError(
            f"{root}: language {lang!r} (from {source}) is not one XTTS-v2 speaks.",
            hint=f"XTTS-v2 speaks {', '.join(XTTS_LANGUAGES)}; pass --language.",
        )
    return lang, source


def split_ids(ids: list[str], val_fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """Deterministic train/val split that stays put when clips are added or removed.

    Each id's side comes from a hash of the seed and the id alone: a clip goes to val when its
    hash falls under ``val_fraction``. Adding a clip never moves another clip across, so a
    resumed run never validates on what it trained on. With 2 or more samples, val has at least
    one and train at least one (the clip nearest the threshold is moved to make it so).
    """
    unique = sorted(set(ids))
    if len(unique) < 2:
        return unique, []
    score = {i: _split_score(i, seed) for i in unique}
    val = [i for i in unique if score[i] < val_fraction]
    if not val:
        val = [min(unique, key=score.__getitem__)]
    elif len(val) == len(unique):
        val.remove(max(val, key=score.__getitem__))
    val_set = set(val)
    return [i for i in unique if i not in val_set], sorted(val)


def _split_score(clip_id: str, seed: int) -> float:
    """A uniform number in [0, 1) fixed by the seed and the clip id (the split's coin)."""
    digest = hashlib.blake2b(f"{seed}:{clip_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def read_dataset(root: Path, language: str | None = None, val_fraction: float = 0.1, seed: int = 42) -> Dataset:
    """Read any supported layout (see the module docstring). Raises :class:`DatasetError` when
    the folder holds none, or its language is unknown or unsupported."""

    root = Path(root).expanduser()
    if not root.is_dir():
        raise DatasetError(
            f"Dataset folder {root} does not exist.",
            hint="Run `xttsft build` first, or point --dataset-dir at an LJSpeech folder.",
        )
    lang, source = _language(root, language)
    refused: list[tuple[str, str]] = []
    seen: set[str] = set()
    train_file = root / "metadata_train.csv"
    val_file = next((root / n for n in ("metadata_val.csv", "metadata_eval.csv") if (root / n).is_file()), None)
    if train_file.is_file() and val_file is not None:
        coqui = _read_rows(train_file)[1]
        layout = (
            "coqui formatter (audio_file|text|speaker_name)"
            if coqui
            else f"LJSpeech metadata_train.csv + {val_file.name}"
        )
        train = _rows_of(root, train_file, coqui, seen, refused)
        val = _rows_of(root, val_file, coqui, seen, refused)
    elif (root / "metadata.csv").is_file():
        coqui = _read_rows(root / "metadata.csv")[1]
        rows = _rows_of(root, root / "metadata.csv", coqui, seen, refused)
        train_ids, val_ids = split_ids([r.id for r in rows], val_fraction, seed)
        by_id = {r.id: r for r in rows}
        train, val = [by_id[i] for i in train_ids], [by_id[i] for i in val_ids]
        layout = f"a single metadata.csv, split {1 - val_fraction:.0%}/{val_fraction:.0%} with seed {seed}"
    else:
        raise DatasetError(
            f"{root} holds no dataset: expected metadata_train.csv with metadata_val.csv or metadata_eval.csv, "
            "or a metadata.csv.",
            hint="Point --dataset-dir at an LJSpeech folder, or run `xttsft build`.",
        )
    for where, why in refused:
        log.warning("%s: %s", where, why)
    return Dataset(root, layout, lang, source, train, val, refused)


# ------------------------------------------------------------------ samples


def inspect_samples(
    ds: Dataset,
    tokenize: Callable[[str, str], list[int]] | None,
    max_wav_samples: int,
    max_text_tokens: int,
) -> Inspection:
    """Measure every row against the model: unreadable or missing audio, shorter than 0.5 s,
    longer than the model takes, ``[UNK]``/``[STOP]`` tokens, too many tokens, the same audio
    as an earlier row. ``tokenize=None`` counts characters (+1) as an upper bound of tokens."""
    import soundfile as sf

    dropped: dict[str, list[str]] = {f"refused: {why}": [] for _, why in ds.refused}
    for where, why in ds.refused:
        dropped[f"refused: {why}"].append(where)
    out = Inspection([], [], {k: v for k, v in dropped.items() if v})
    by_audio: dict[str, str] = {}
    for split, rows in (("train", ds.train), ("val", ds.val)):
        kept = out.train if split == "train" else out.val
        for row in rows:
            reason, sample = _measure(row, ds.language, tokenize, max_wav_samples, max_text_tokens, sf, by_audio, out)
            if reason is not None:
                out.dropped.setdefault(reason, []).append(f"{split}:{row.id}")
            else:
                kept.append(sample)  # type: ignore[arg-type]
    return out


def _measure(
    row: Row,
    language: str,
    tokenize: Any,
    max_wav: int,
    max_tokens: int,
    sf: Any,
    by_audio: dict[str, str],
    out: Inspection,
) -> tuple[str | None, Sample | None]:
    if not row.wav.is_file():
        return "missing wav", None
    try:
        data = row.wav.read_bytes()
        info = sf.info(io.BytesIO(data))
        samples, _ = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    except Exception:  # noqa: BLE001 - soundfile raises several kinds
        return "unreadable wav", None
    digest = hashlib.sha256(data).hexdigest()
    if digest in by_audio:
        return f"same audio as {by_audio[digest]}", None
    by_audio[digest] = row.id
    if peak_dbfs(samples) < SILENT_DBFS:
        return f"silent audio (peak under {SILENT_DBFS:.0f} dBFS)", None
    if info.samplerate != TRAIN_SR or info.channels != 1:
        out.resampled += 1
    n = int(round(info.frames * TRAIN_SR / info.samplerate))
    if tokenize is None:
        tokens = [2] * (len(row.text) + 1)
    else:
        try:
            tokens = list(tokenize(row.text, language))
        except Exception as exc:  # noqa: BLE001 - cleaners/tokenizer errors
            return f"text not tokenizable ({type(exc).__name__})", None
    if n < MIN_SAMPLES:
        return "shorter than 0.5 s", None
    if n > max_wav:
        return f"longer than {max_wav / TRAIN_SR:.1f} s (the model's limit)", None
    if 1 in tokens:
        return "[UNK] tokens (characters outside the vocabulary)", None
    if 0 in tokens:
        return "[STOP] token in the text", None
    if len(tokens) > max_tokens:
        return f"more than {max_tokens} text tokens", None
    return None, Sample(row.id, row.wav, row.text, tokens, n)
