"""A small conversation of real and synthetic voices with known turns, for the speaker-turn tests and
the purity benchmark (issue 22).

The real voices are the two speakers of the 30 s telephone conversation that ships in the
pyannote.audio wheel (``pyannote/audio/sample/sample.wav``, 16 kHz, with ``sample.rttm`` giving who
speaks when; ``scripts/test_voices.sh`` fetches it). Only the parts where one speaker talks alone are
used, re-arranged into turns of 3-10 s, each piece once (a repeat would be a duplicate). Two
espeak-ng voices, plucked-chord music and white noise fill the rest; the turns change in pauses of
0.05-1.2 s, so some changes fall inside what the VAD hears as one stretch of speech.
"""

from __future__ import annotations

import functools
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from xttsft import audio
from xttsft.demo import DEMO_RECORDINGS_EN, Turn, _music, _overlap, _union, espeak_samples
from xttsft.errors import MissingDependencyError

SR = 16000
#: the pyannote sample's speakers, by their RTTM labels
DIANE, SHEILA = "speaker90", "speaker91"
#: where each real speaker talks alone in sample.wav (s; from sample.rttm, 50 ms in from each overlap)
PIECES: dict[str, list[tuple[float, float]]] = {
    DIANE: [(10.62, 14.40), (18.65, 21.45), (8.40, 9.88), (27.90, 29.95)],
    SHEILA: [(21.83, 27.80), (14.75, 17.88), (9.95, 10.52)],
}
MAIN, HOST = "en-us", "en-us+f3"
FRAME = 0.01  # s
#: a 10 ms frame louder than this can hold a word (the turns are at -23 dBFS; the real voices' telephone
#: floor is under -50 dBFS; 80-96% of a turn's frames are louder)
SPEECH_FLOOR_DBFS = -45.0

# (voice, what: sentence indexes of DEMO_RECORDINGS_EN flattened / piece indexes / seconds, pause before)
Script = list[tuple[str, tuple[float, ...], float]]
_SCRIPT: Script = [
    (MAIN, (0, 1), 0.4),
    (DIANE, (0, 1), 1.2),
    (HOST, (22,), 0.6),
    (SHEILA, (0,), 0.08),  # a change of voice inside speech
    (MAIN, (2, 3), 0.7),
    ("music", (4.0,), 0.8),
    (MAIN, (4, 5), 0.9),
    (DIANE, (2, 3), 0.1),
    (SHEILA, (1, 2), 0.9),
    (MAIN, (6, 7), 0.05),
    ("noise", (2.5,), 0.6),
    (HOST, (23,), 0.7),
    (MAIN, (8, 9), 0.3),
]
#: a real voice leads: speaker90 holds the most seconds (10.7 s in two turns), so the screen picks it
REAL_LED: Script = [
    (DIANE, (0, 1), 0.4),
    (HOST, (22,), 0.7),
    (DIANE, (2, 3), 0.8),
    (SHEILA, (1, 2), 0.6),
    ("noise", (1.5,), 0.6),
    (MAIN, (0, 1), 0.9),
]


@dataclass(frozen=True)
class Conversation:
    """The recording and its turns (voice: an espeak voice, a real speaker's label, "music", "noise")."""

    recording: Path
    turns: tuple[Turn, ...]
    references: dict[str, Path]  # a recording of each voice alone (its own turns, for --speaker-ref)

    @property
    def voices(self) -> list[str]:
        return sorted({t.voice for t in self.turns if t.voice not in ("music", "noise")})

    def seconds(self, voice: str) -> float:
        return sum(t.end - t.start for t in self.turns if t.voice == voice)

    def score(self, spans: list[tuple[float, float]], voice: str, min_turn: float = 0.0) -> dict[str, float]:
        """``recall``: the share of ``voice``'s seconds (in its turns of at least ``min_turn`` s) inside
        ``spans``; ``speech_recall``: the same over the 10 ms frames of those turns louder than
        SPEECH_FLOOR_DBFS (what can hold words: not the pauses inside a turn or at its edges);
        ``purity``: the share of the spans' sound (any turn) that is ``voice``."""
        union = _union(spans)
        mine = [t for t in self.turns if t.voice == voice and t.end - t.start >= min_turn]
        total = sum(t.end - t.start for t in mine)
        got = sum(_overlap(s, e, t.start, t.end) for s, e in union for t in mine)
        sound = sum(_overlap(s, e, t.start, t.end) for s, e in spans for t in self.turns)
        own = sum(_overlap(s, e, t.start, t.end) for s, e in spans for t in self.turns if t.voice == voice)
        loud = self._loud_frames
        frames = np.zeros(len(loud), dtype=bool)
        for t in mine:
            frames[int(round(t.start / FRAME)) : int(round(t.end / FRAME))] = True
        inside = np.zeros(len(loud), dtype=bool)
        for s, e in union:
            inside[int(round(s / FRAME)) : int(round(e / FRAME))] = True
        speech = frames & loud
        return {
            "recall": got / total if total else 1.0,
            "speech_recall": float((speech & inside).sum() / speech.sum()) if speech.any() else 1.0,
            "purity": own / sound if sound else 1.0,
            "seconds": total,
        }

    @functools.cached_property
    def _loud_frames(self) -> np.ndarray:
        """Which 10 ms frames of the recording are louder than SPEECH_FLOOR_DBFS (read once per conversation)."""
        x, sr = audio.read_wav(self.recording)
        return audio.frame_dbfs(x, int(sr * FRAME)) > SPEECH_FLOOR_DBFS


def _espeak(voice: str, text: str, tmp: Path) -> np.ndarray:
    espeak = shutil.which("espeak-ng")
    if espeak is None:
        raise MissingDependencyError("The conversation needs espeak-ng.", hint="sudo apt-get install -y espeak-ng")
    x = espeak_samples(espeak, voice, text, tmp, SR, rate=160)
    nz = np.flatnonzero(np.abs(x) > 0.01)  # espeak's own leading and trailing silence
    return x[nz[0] : nz[-1] + 1] if nz.size else x


def _level(x: np.ndarray) -> np.ndarray:
    """-23 dBFS RMS (no piece peaks above 0.92 there, so the peak limit never acts)."""
    return audio.normalize(x, target_dbfs=-23.0, peak_dbfs=0.0)


def _real(sample: np.ndarray, voice: str, which: tuple[float, ...]) -> np.ndarray:
    gap = np.zeros(int(0.3 * SR), dtype=np.float32)
    parts = []
    for k in which:
        a, b = PIECES[voice][int(k)]
        parts += [sample[int(a * SR) : int(b * SR)], gap]
    return np.concatenate(parts[:-1])


def make_conversation(sample_wav: Path, dest: Path, seed: int = 0, script: Script | None = None) -> Conversation:
    """Write ``dest/conversation.wav`` (16 kHz, about 75 s with the default script) and a reference per voice;
    return its turns."""
    import soundfile as sf

    dest.mkdir(parents=True, exist_ok=True)
    sample, sr = sf.read(str(sample_wav), dtype="float32")
    if sr != SR or sample.ndim != 1:
        raise ValueError(f"{sample_wav}: expected 16 kHz mono, got {sr} Hz {sample.shape}")
    sentences = [s for rec in DEMO_RECORDINGS_EN for s in rec]
    rng = np.random.default_rng(seed)
    parts: list[np.ndarray] = []
    turns: list[Turn] = []
    by_voice: dict[str, list[np.ndarray]] = {}
    pos = 0
    for k, (voice, which, pause) in enumerate(_SCRIPT if script is None else script):
        parts.append(np.zeros(int(pause * SR), dtype=np.float32))
        pos += len(parts[-1])
        text = ""
        if voice == "music":
            x = _music(which[0], SR, seed=seed + k) * 0.5
        elif voice == "noise":
            x = rng.normal(0, 0.03, int(which[0] * SR)).astype(np.float32)
        elif voice in PIECES:
            x = _level(_real(sample, voice, which))
        else:
            text = " ".join(sentences[int(i)] for i in which)
            pieces = [_espeak(voice, sentences[int(i)], dest / f".turn{k}.wav") for i in which]
            gap = np.zeros(int(0.35 * SR), dtype=np.float32)
            x = _level(np.concatenate([p for q in pieces for p in (q, gap)][:-1]))
        if voice not in ("music", "noise"):
            by_voice.setdefault(voice, []).append(x)
        turns.append(Turn(pos / SR, (pos + len(x)) / SR, voice, text))
        parts.append(x)
        pos += len(x)
    parts.append(np.zeros(int(0.5 * SR), dtype=np.float32))
    y = np.concatenate(parts)
    recording = dest / "conversation.wav"
    sf.write(str(recording), np.clip(y, -1, 1), SR, subtype="PCM_16")
    refs = {}
    for voice, xs in by_voice.items():
        refs[voice] = dest / f"ref-{voice.replace('+', '_')}.wav"
        sf.write(str(refs[voice]), np.concatenate(xs), SR, subtype="PCM_16")
    return Conversation(recording, tuple(turns), refs)
