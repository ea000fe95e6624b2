"""The demo voice: a small corpus that ``run-all --demo`` and ``make demo`` use offline.

espeak-ng reads a fixed set of English sentences (our own text, Apache-2.0 like
the code) in one voice, a few sentences per "recording" with natural pauses, so
the whole pipeline (segment at pauses, transcribe with the bundled tiny.en
Whisper, build, train, synth, eval) has real speech with a known transcript.
It is not a human voice: the point of the demo is to show every stage working
on any machine in minutes. For a real voice, run the same pipeline on your own
recordings.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
from pathlib import Path

from xttsft.errors import MissingDependencyError
from xttsft.io import atomic_path
from xttsft.progress import Progress, no_progress

__all__ = ["DEMO_LANGUAGE", "DEMO_RECORDINGS", "make_demo_corpus", "demo_transcript"]

log = logging.getLogger(__name__)

DEMO_LANGUAGE = "en"
DEMO_VOICE = "en-us"

# Each inner list is one recording; sentences are separated by a pause.
DEMO_RECORDINGS: list[list[str]] = [
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


def demo_transcript() -> list[str]:
    """Every demo sentence, in order."""
    return [s for rec in DEMO_RECORDINGS for s in rec]


def _speak(espeak: str, text: str, out: Path, rate: int) -> None:
    subprocess.run([espeak, "-v", DEMO_VOICE, "-s", str(rate), "-w", str(out), text], check=True, capture_output=True)


def make_demo_corpus(dest: Path, pause_seconds: float = 0.7, progress: Progress = no_progress) -> list[Path]:
    """Write the demo recordings (WAV, one per entry of DEMO_RECORDINGS) into ``dest``.

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
    progress(total=len(DEMO_RECORDINGS), description="Demo voice")
    for i, sentences in enumerate(DEMO_RECORDINGS, start=1):
        out = dest / f"demo_{i:02d}.wav"
        paths.append(out)
        if out.exists():
            progress(advance=1)
            continue
        parts = []
        for j, text in enumerate(sentences):
            part = dest / f".demo_{i:02d}_{j:02d}.wav"
            _speak(espeak, text, part, rate=150 + 10 * (j % 3))
            parts.append(part)
        # Concatenate with silences between sentences, at 22050 Hz mono.
        inputs: list[str] = []
        filters = []
        n = 0
        for j, part in enumerate(parts):
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
        graph = ";".join(filters + [lead]) + ";[lead]" + "".join(labels) + f"[tail]concat=n={len(labels) + 2}:v=0:a=1[out]"
        with atomic_path(out) as tmp:
            subprocess.run(
                [ffmpeg, "-nostdin", "-loglevel", "error", "-y", *inputs, "-filter_complex", graph,
                 "-map", "[out]", "-c:a", "pcm_s16le", str(tmp)],
                check=True,
            )
        for part in parts:
            part.unlink()
        log.info("demo recording %s (%d sentences)", out.name, len(sentences))
        progress(advance=1)
    return paths
