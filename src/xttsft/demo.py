"""The demo voice: a small corpus that ``run-all --demo`` and ``make demo`` use offline.

espeak-ng reads a fixed set of Brazilian Portuguese sentences (the default: most of our
users speak it) or English ones (``--language en``), our own text, Apache-2.0 like the
code, in one voice, a few sentences per "recording" with natural pauses, so the whole
pipeline (segment at pauses, transcribe with the bundled Whisper, build, train, synth,
eval) has real speech with a known transcript.
It is not a human voice: the point of the demo is to show every stage working
on any machine in minutes. For a real voice, run the same pipeline on your own
recordings.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from xttsft.errors import InputError, MissingDependencyError
from xttsft.io import atomic_path
from xttsft.progress import Progress, no_progress

__all__ = [
    "DEMO_LANGUAGE",
    "DEMO_RECORDINGS",
    "DEMO_WHISPER",
    "demo_language",
    "make_demo_corpus",
    "demo_transcript",
    "Turn",
    "Interview",
    "make_interview",
]

log = logging.getLogger(__name__)

DEMO_LANGUAGE = "pt"  # the default demo; "en" is the other one
DEMO_VOICES = {"pt": "pt-br", "en": "en-us"}
#: the bundled Whisper each demo transcribes with (bundled_whisper.py)
DEMO_WHISPER = {"pt": "bundled-base", "en": "bundled-tiny.en"}

# Each inner list is one recording; sentences are separated by a pause.
DEMO_RECORDINGS_EN: list[list[str]] = [
    [
        "The morning train was late again, so I walked along the river instead.",
        "The water was calm and the air smelled of rain.",
        "A fisherman waved at me from a small green boat.",
        "By the time I reached the bridge, the sun had come out.",
        "I sat on a bench and watched the city wake up.",
        "Bakers opened their shops and the streets filled with people.",
    ],
    [
        "My grandmother kept a garden behind her house for fifty years.",
        "She grew tomatoes, beans, and tall yellow sunflowers.",
        "Every summer we helped her pick the ripe fruit.",
        "She said that good soil is patient and never in a hurry.",
        "I still remember the sound of the old gate opening.",
        "Now I grow a few herbs on my own kitchen window.",
    ],
    [
        "Learning a new language takes time and a little courage.",
        "At first every sentence feels like climbing a hill.",
        "Then one day you understand a joke, and you laugh out loud.",
        "Reading short stories helps more than memorising long lists.",
        "Speaking with friends is the best practice of all.",
        "Mistakes are simply steps on the way to fluency.",
    ],
    [
        "The library on the corner opens at nine in the morning.",
        "It has a quiet room with large windows and wooden tables.",
        "Students come to read, write, and sometimes to sleep.",
        "The librarian knows where every book is hiding.",
        "On rainy afternoons the room is almost full.",
        "I borrowed a book about the history of music there last week.",
    ],
]


DEMO_RECORDINGS_PT: list[list[str]] = [
    [
        "O trem da manhã atrasou de novo, então fui andando pela beira do rio.",
        "A água estava calma e o ar tinha cheiro de chuva.",
        "Um pescador acenou para mim de um pequeno barco verde.",
        "Quando cheguei à ponte, o sol já tinha aparecido.",
        "Sentei num banco e vi a cidade acordar devagar.",
        "As padarias abriram as portas e as ruas se encheram de gente.",
    ],
    [
        "Minha avó cuidou de uma horta atrás de casa durante cinquenta anos.",
        "Ela plantava tomate, feijão e girassóis amarelos bem altos.",
        "Todo verão a gente ajudava a colher as frutas maduras.",
        "Ela dizia que a terra boa é paciente e nunca tem pressa.",
        "Ainda lembro do barulho do portão velho se abrindo.",
        "Hoje eu planto algumas ervas na janela da cozinha.",
    ],
    [
        "Aprender uma língua nova leva tempo e um pouco de coragem.",
        "No começo cada frase parece a subida de um morro.",
        "Um dia você entende uma piada e ri alto sozinho.",
        "Ler histórias curtas ajuda mais do que decorar listas compridas.",
        "Conversar com os amigos é o melhor treino de todos.",
        "Os erros são apenas passos no caminho da fluência.",
    ],
    [
        "A biblioteca da esquina abre às nove horas da manhã.",
        "Ela tem uma sala silenciosa com janelas grandes e mesas de madeira.",
        "Os estudantes vêm para ler, escrever e às vezes para dormir.",
        "A bibliotecária sabe onde cada livro está escondido.",
        "Nas tardes de chuva a sala fica quase cheia.",
        "Na semana passada peguei emprestado um livro sobre a história da música.",
    ],
]
DEMO_RECORDINGS = {"pt": DEMO_RECORDINGS_PT, "en": DEMO_RECORDINGS_EN}


def demo_language(language: str | None) -> str:
    """The demo of ``language`` (``pt`` for ``pt-br``, ``auto`` or none); other languages have none."""
    lang = (language or DEMO_LANGUAGE).lower().split("-")[0]
    lang = DEMO_LANGUAGE if lang == "auto" else lang
    if lang not in DEMO_RECORDINGS:
        raise InputError(f"There is no {language!r} demo.", hint="Run the demo with --language pt (the default) or en.")
    return lang


def demo_transcript(language: str = DEMO_LANGUAGE) -> list[str]:
    """Every demo sentence of ``language``, in order."""
    return [s for rec in DEMO_RECORDINGS[language] for s in rec]


def _speak(espeak: str, voice: str, text: str, out: Path, rate: int) -> None:
    subprocess.run([espeak, "-v", voice, "-s", str(rate), "-w", str(out), text], check=True, capture_output=True)


def espeak_samples(espeak: str, voice: str, text: str, scratch: Path, sr: int, rate: int) -> np.ndarray:
    """espeak-ng speech of ``text`` as float32 samples at ``sr`` (``scratch``: a WAV path, removed after)."""
    import soundfile as sf

    _speak(espeak, voice, text, scratch, rate)
    x, file_sr = sf.read(str(scratch), dtype="float32")
    scratch.unlink()
    if file_sr != sr:
        import soxr

        x = soxr.resample(x, file_sr, sr).astype(np.float32)
    return x


def make_demo_corpus(
    dest: Path, pause_seconds: float = 0.7, progress: Progress = no_progress, language: str = DEMO_LANGUAGE
) -> list[Path]:
    """Write the demo recordings of ``language`` (a WAV per entry of DEMO_RECORDINGS[language]) into ``dest``.

    Existing recordings are kept (re-runs do nothing). Returns their paths.
    """
    espeak = shutil.which("espeak-ng")
    ffmpeg = shutil.which("ffmpeg")
    if espeak is None or ffmpeg is None:
        raise MissingDependencyError(
            "The demo voice needs espeak-ng and ffmpeg.",
            hint="Install them: sudo apt-get install -y espeak-ng ffmpeg (make demo does this for you).",
        )
    dest.mkdir(parents=True, exist_ok=True)
    paths = []
    recordings = DEMO_RECORDINGS[language]
    progress(total=len(recordings), description="Demo voice")
    for i, sentences in enumerate(recordings, start=1):
        out = dest / (f"demo_{i:02d}.wav" if language == "en" else f"demo_{language}_{i:02d}.wav")
        paths.append(out)
        if out.exists():
            progress(advance=1)
            continue
        parts = []
        for j, text in enumerate(sentences):
            part = dest / f".demo_{i:02d}_{j:02d}.wav"
            _speak(espeak, DEMO_VOICES[language], text, part, rate=150 + 10 * (j % 3))
            parts.append(part)
        # Concatenate with silences between sentences, at 22050 Hz mono.
        inputs: list[str] = []
        filters = []
        n = 0
        for part in parts:
            inputs += ["-i", str(part)]
            filters.append(f"[{n}:a]aresample=22050,aformat=channel_layouts=mono[s{n}]")
            n += 1
        silence = f"aevalsrc=0:d={pause_seconds}:s=22050:c=mono"
        labels = []
        for j in range(len(parts)):
            labels.append(f"[s{j}]")
            if j < len(parts) - 1:
                filters.append(f"{silence}[p{j}]")
                labels.append(f"[p{j}]")
        lead = f"aevalsrc=0:d=0.5:s=22050:c=mono[lead];{silence}[tail]"
        graph = (
            ";".join(filters + [lead]) + ";[lead]" + "".join(labels) + f"[tail]concat=n={len(labels) + 2}:v=0:a=1[out]"
        )
        with atomic_path(out) as tmp:
            subprocess.run(
                [
                    ffmpeg,
                    "-nostdin",
                    "-loglevel",
                    "error",
                    "-y",
                    *inputs,
                    "-filter_complex",
                    graph,
                    "-map",
                    "[out]",
                    "-c:a",
                    "pcm_s16le",
                    str(tmp),
                ],
                check=True,
            )
        for part in parts:
            part.unlink()
        log.info("demo recording %s (%d sentences)", out.name, len(sentences))
        progress(advance=1)
    return paths


# ------------------------------------------------------------------ an interview, for the screen
INTERVIEW_MAIN_VOICE = "en-us"
INTERVIEW_HOST_VOICE = "en-us+f3"  # CAM++ similarity to the main voice about 0.5 (GE2E 0.71)
INTERVIEW_GUEST_VOICE = "en-029+f2"  # CAM++ about 0.57 (GE2E 0.75)


@dataclass(frozen=True)
class Turn:
    """Who speaks (or plays) what, when, in the interview (seconds)."""

    start: float
    end: float
    voice: str  # an espeak voice, or "music"
    text: str = ""
    background: str = ""  # "music" or "noise" mixed under the speech


@dataclass(frozen=True)
class Interview:
    """The interview recording, a re-encoded excerpt of it, and what is where."""

    recording: Path
    excerpt: Path
    excerpt_offset: float  # the excerpt starts here in the recording
    turns: tuple[Turn, ...]

    def score(self, clips: list[tuple[str, float, float]], voice: str = INTERVIEW_MAIN_VOICE) -> dict[str, float]:
        """How pure a set of clips ``(source file name, start, end)`` is, against what is where.

        ``main_share``: the share of the clips' sound (speech and music, not pauses) that is ``voice``;
        ``main_words``: the share of ``voice``'s words inside the clips; ``main_clean_words``: the same over its
        turns with nothing under them (the ones over loud noise should be dropped);
        ``duplicate_seconds``: audio present in two clips (the excerpt repeats the recording).
        """
        spans = []
        for source, start, end in clips:
            off = self.excerpt_offset if Path(source).name == self.excerpt.name else 0.0
            spans.append((start + off, end + off))
        total = sum(e - s for s, e in spans)
        mine = [t for t in self.turns if t.voice == voice]
        main = sum(_overlap(s, e, t.start, t.end) for s, e in spans for t in mine)
        sound = sum(_overlap(s, e, t.start, t.end) for s, e in spans for t in self.turns)
        words = sum(len(t.text.split()) for t in mine)
        union = _union(spans)
        kept = {
            t: len(t.text.split()) * sum(_overlap(s, e, t.start, t.end) for s, e in union) / (t.end - t.start)
            for t in mine
        }
        clean = [t for t in mine if not t.background]
        return {
            "main_share": main / sound if sound else 0.0,
            "main_words": sum(kept.values()) / words,
            "main_clean_words": sum(kept[t] for t in clean) / max(sum(len(t.text.split()) for t in clean), 1),
            "duplicate_seconds": total - sum(e - s for s, e in union),
            "minutes": total / 60,
        }


def _overlap(a0: float, a1: float, b0: float, b1: float) -> float:
    return max(0.0, min(a1, b1) - max(a0, b0))


def _union(spans: list[tuple[float, float]]) -> list[tuple[float, float]]:
    out: list[list[float]] = []
    for s, e in sorted(spans):
        if out and s <= out[-1][1]:
            out[-1][1] = max(out[-1][1], e)
        else:
            out.append([s, e])
    return [(s, e) for s, e in out]


def _interview_script() -> list[tuple[str, str, float, str]]:
    """(voice, text or seconds of music, pause before, background)."""
    host, guest, main = INTERVIEW_HOST_VOICE, INTERVIEW_GUEST_VOICE, INTERVIEW_MAIN_VOICE
    r = DEMO_RECORDINGS_EN
    return [
        (host, "Welcome to the show. Today my guest tells us about walks, gardens and libraries.", 0.5, ""),
        *[(main, s, 0.7 if k else 0.35, "") for k, s in enumerate(r[0][:3])],
        (host, "That sounds lovely. What happened next, after the bridge?", 0.7, ""),
        *[(main, s, 0.7 if k else 0.25, "") for k, s in enumerate(r[0][3:])],
        ("music", "8", 0.8, ""),
        (guest, "A quick word from our sponsor. Fresh bread every morning at the corner bakery.", 0.6, ""),
        *[(main, s, 0.7, "") for s in r[1][:3]],
        (host, "Really? Tell me more about her.", 0.6, ""),
        *[(main, s, 0.7 if k else 0.2, "") for k, s in enumerate(r[1][3:])],
        *[(main, s, 0.7, "") for s in r[2][:4]],
        (host, "And what about the library on the corner?", 0.7, ""),
        *[(main, s, 0.7 if k else 0.3, "") for k, s in enumerate(r[2][4:] + r[3][:4])],
        *[(main, s, 0.7, "noise") for s in r[3][4:]],
        (guest, "Thank you for listening to the show. See you all next week.", 0.8, ""),
    ]


def _music(seconds: float, sr: int, seed: int = 7) -> np.ndarray:
    """Plucked chords: decaying harmonics, a new chord every half second."""
    rng = np.random.default_rng(seed)
    n = int(seconds * sr)
    out = np.zeros(n, dtype=np.float32)
    t = np.arange(int(0.9 * sr)) / sr
    for start in range(0, n, sr // 2):
        root = 110.0 * 2 ** (rng.integers(0, 12) / 12)
        note = sum(np.sin(2 * np.pi * root * r * h * t) / h for r in (1, 1.25, 1.5) for h in (1, 2, 3))
        note = (note * np.exp(-4 * t)).astype(np.float32)
        end = min(n, start + len(note))
        out[start:end] += note[: end - start]
    return out / max(1e-6, float(np.abs(out).max())) * 0.3


def make_interview(dest: Path, seed: int = 0) -> Interview:
    """A ~2.5 minute "interview" of three espeak voices, music and noise, plus a re-encoded excerpt.

    The main voice reads the demo sentences (about 60% of the speech); a host asks
    questions, sometimes answered after a short pause; a guest reads an ad and the
    goodbye; 8 s of music stand alone; the main voice's last sentences are spoken
    over loud white noise. ``interview.mp3`` is the recording; ``excerpt.ogg`` is a
    50 s excerpt of it re-encoded, the same speech fetched twice.
    """
    import soundfile as sf

    espeak, ffmpeg = shutil.which("espeak-ng"), shutil.which("ffmpeg")
    if espeak is None or ffmpeg is None:
        raise MissingDependencyError(
            "The interview needs espeak-ng and ffmpeg.", hint="sudo apt-get install -y espeak-ng ffmpeg"
        )
    sr = 22050
    dest.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    parts: list[np.ndarray] = []
    turns: list[Turn] = []
    pos = 0
    for k, (voice, text, pause, background) in enumerate(_interview_script()):
        parts.append(np.zeros(int(pause * sr), dtype=np.float32))
        pos += len(parts[-1])
        if voice == "music":
            x = _music(float(text), sr, seed=seed + k)
        else:
            x = espeak_samples(espeak, voice, text, dest / f".turn_{k:02d}.wav", sr, rate=155)
            x = x / max(1e-6, float(np.abs(x).max())) * 0.5
            if background == "noise":
                rms = float(np.sqrt(np.mean(x**2)))
                x = x + rng.normal(0, rms * 1.0, len(x)).astype(np.float32)  # 0 dB SNR
        turns.append(Turn(pos / sr, (pos + len(x)) / sr, voice, "" if voice == "music" else text, background))
        parts.append(x.astype(np.float32))
        pos += len(x)
    parts.append(np.zeros(sr, dtype=np.float32))
    y = np.concatenate(parts)
    y = y / max(1e-6, float(np.abs(y).max())) * 0.9
    wav = dest / ".interview.wav"
    sf.write(str(wav), y, sr, subtype="PCM_16")
    recording, excerpt = dest / "interview.mp3", dest / "excerpt.ogg"
    offset = 20.0
    for out, args in (
        (recording, ["-c:a", "libmp3lame", "-b:a", "128k"]),
        (excerpt, ["-ss", str(offset), "-t", "50", "-c:a", "libvorbis", "-b:a", "64k", "-ar", "44100"]),
    ):
        with atomic_path(out) as tmp:
            subprocess.run(
                [ffmpeg, "-nostdin", "-loglevel", "error", "-y", "-i", str(wav), *args, str(tmp)], check=True
            )
    wav.unlink()
    return Interview(recording, excerpt, offset, tuple(turns))
