"""Segmentation benchmark: Silero VAD vs energy thresholds, and streamed vs whole-file decoding.

On the same generated audio (espeak-ng sentences joined by 0.3-1.2 s pauses, with
light background noise) it measures, side by side:

* speed (x realtime) and what each speech finder finds: our Silero VAD pass, our
  energy pass (``--method energy``, -40 dBFS) and the naive
  ``librosa.effects.split(top_db=40)`` on the whole file in memory;
* clips planned from each, and how many clip edges fall inside a sentence;
* with the default clips (5-15 s): the short sentences kept (``short_share``), their share of the
  clips and of the audio, whether each holds whole sentences only, and the sentence seconds that
  lie whole in a clip, against ``short_share`` 0 (no speech may be lost to them);
* peak RSS of decoding a longer file (the audio looped) whole into memory
  (``librosa.load``) vs our block stream (``xttsft.audio.stream_blocks``), each in
  a fresh process.

    python benchmarks/segment.py            # 5 min of speech, 30 min for the RSS test
    python benchmarks/segment.py --quick    # 1 min, 10 min
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import numpy as np

from _common import machine

HERE = Path(__file__).resolve().parent
SR = 22050
WORDS = (
    "the voice of a speaker is shaped by breath rhythm and the small pauses between phrases "
    "we record an hour of clean speech then cut it into short clips that a model can learn from "
    "every clip should start and end in silence and never in the middle of a word"
).split()


def make_speech(out: Path, minutes: float, seed: int = 0) -> list[tuple[float, float]]:
    """espeak-ng sentences with random pauses and light noise; returns the sentence spans."""
    import soundfile as sf

    rng = np.random.default_rng(seed)
    tmp = out.parent / "s.wav"
    parts, spans, t = [np.zeros(int(0.5 * SR), np.float32)], [], 0.5
    sentences: list[np.ndarray] = []
    for _ in range(12):  # a pool of distinct sentences, reused in random order
        words = rng.choice(WORDS, size=int(rng.integers(5, 14)))
        subprocess.run(
            ["espeak-ng", "-s", str(int(rng.integers(140, 190))), "-w", str(tmp), " ".join(words)], check=True
        )
        x, sr = sf.read(tmp, dtype="float32")
        x = np.interp(np.arange(0, len(x), sr / SR), np.arange(len(x)), x).astype(np.float32)
        voiced = np.flatnonzero(np.abs(x) > 0.01)
        sentences.append(x[voiced[0] : voiced[-1] + 1])
    while t < minutes * 60:
        x = sentences[int(rng.integers(len(sentences)))]
        spans.append((t, t + len(x) / SR))
        gap = float(rng.uniform(0.3, 1.2))
        parts += [x, np.zeros(int(gap * SR), np.float32)]
        t += len(x) / SR + int(gap * SR) / SR
    y = np.concatenate(parts)
    y += rng.normal(0, 0.006, len(y)).astype(np.float32)  # about -44 dBFS of noise
    sf.write(out, y, SR, subtype="PCM_16")
    tmp.unlink()
    return spans


def inside(t: float, spans: list[tuple[float, float]], tol: float = 0.02) -> bool:
    i = np.searchsorted([a for a, _ in spans], t) - 1
    return bool(i >= 0 and spans[i][0] + tol < t < spans[i][1] - tol)


def shorts_kept(wav: Path, spans: list[tuple[float, float]], analyze, plan_segments, settings_cls) -> list[dict]:
    """The default clips (5-15 s) with the default short_share and with none: how many short sentences are
    kept, their share of the clips and of the audio, whether each holds whole sentences only, and the
    seconds of sentences that lie whole in a clip (no speech is lost to them)."""
    an = analyze(wav, settings_cls())
    rows = []
    for share in (0.0, settings_cls().short_share):
        st = settings_cls(short_share=share)
        t0 = time.perf_counter()
        kept, _ = plan_segments(an.regions, an.duration, st, an.envelope_db)
        sec = time.perf_counter() - t0
        shorts = [k for k in kept if "short_sentence" in k.flags]
        whole = [
            k
            for k in shorts
            if any(k.start <= a and b <= k.end for a, b in spans)
            and not any(a < k.end and k.start < b and not (k.start <= a and b <= k.end) for a, b in spans)
        ]
        rows.append(
            {
                "method": f"xttsft VAD, {st.min_duration:g}-{st.max_duration:g} s clips, short_share {share:g}",
                "plan_seconds": round(sec, 3),
                "clips": len(kept),
                "edges_inside_sentences": int(sum(inside(k.start, spans) + inside(k.end, spans) for k in kept)),
                "short_clips": len(shorts),
                "short_share_of_clips": round(len(shorts) / max(1, len(kept)), 3),
                "short_share_of_audio": round(
                    sum(k.duration for k in shorts) / max(1e-9, sum(k.duration for k in kept)), 3
                ),
                "short_clips_of_whole_sentences": len(whole),
                "sentence_seconds_in_clips": round(
                    sum(b - a for a, b in spans if any(k.start <= a and b <= k.end for k in kept)), 1
                ),
            }
        )
    return rows


_RSS = r"""
import sys
from pathlib import Path
import numpy as np
mode, path = sys.argv[1], sys.argv[2]
import librosa
from xttsft import audio
# ru_maxrss is inherited across fork+exec (this benchmark's own process, with torch loaded by the speaker
# turns, would hide the child's peak), so reset this process's high-water mark and read VmHWM instead
Path("/proc/self/clear_refs").write_text("5")
def hwm():
    return next(int(l.split()[1]) for l in Path("/proc/self/status").read_text().splitlines() if l.startswith("VmHWM:"))
base = hwm()
if mode == "whole":
    x, _ = librosa.load(path, sr=22050, mono=True)
    n = len(x)
else:
    n = sum(len(b) for b in audio.stream_blocks(path, sr=22050))
print(n, hwm(), base)
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="1 min of speech, 10 min for the RSS test")
    args = ap.parse_args()
    minutes, rss_minutes = (1.0, 10) if args.quick else (5.0, 30)

    import librosa
    from rich.console import Console
    from rich.table import Table

    from xttsft import audio
    from xttsft.data.segment import Region, analyze, plan_segments
    from xttsft.settings import SegmentSettings

    console = Console()
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as d:
        wav = Path(d) / "speech.wav"
        spans = make_speech(wav, minutes)
        dur = audio.probe(wav).duration or 0.0
        st_vad = SegmentSettings(method="vad", min_duration=3, max_duration=12)
        st_en = SegmentSettings(method="energy", min_duration=3, max_duration=12)
        analyze(wav, SegmentSettings(method="vad"), expected=None)  # warm up the ONNX session

        for name, st in (("xttsft VAD (Silero, streamed)", st_vad), ("xttsft energy -40 dBFS (streamed)", st_en)):
            t0 = time.perf_counter()
            an = analyze(wav, st)
            kept, _ = plan_segments(an.regions, an.duration, st, an.envelope_db)
            sec = time.perf_counter() - t0
            rows.append(
                {
                    "method": name,
                    "seconds": round(sec, 2),
                    "x_realtime": round(dur / sec, 1),
                    "speech_regions": len(an.regions),
                    "clips": len(kept),
                    "edges_inside_sentences": int(sum(inside(k.start, spans) + inside(k.end, spans) for k in kept)),
                }
            )

        short_rows = shorts_kept(wav, spans, analyze, plan_segments, SegmentSettings)
        librosa.effects.split(np.zeros(SR, np.float32) + 0.1, top_db=40)  # warm up (numba JIT)
        t0 = time.perf_counter()
        y, _ = librosa.load(wav, sr=SR)
        iv = librosa.effects.split(y, top_db=40)
        regions = [Region(a / SR, b / SR) for a, b in iv]
        kept, _ = plan_segments(regions, len(y) / SR, st_en)
        sec = time.perf_counter() - t0
        rows.append(
            {
                "method": "naive librosa.effects.split(top_db=40), whole file",
                "seconds": round(sec, 2),
                "x_realtime": round(dur / sec, 1),
                "speech_regions": len(iv),
                "clips": len(kept),
                "edges_inside_sentences": int(sum(inside(k.start, spans) + inside(k.end, spans) for k in kept)),
            }
        )

        rows += short_rows
        long = Path(d) / "long.wav"
        subprocess.run(
            [
                "ffmpeg",
                "-nostdin",
                "-loglevel",
                "error",
                "-y",
                "-stream_loop",
                "-1",
                "-i",
                str(wav),
                "-t",
                str(rss_minutes * 60),
                "-ar",
                "44100",
                str(long),
            ],
            check=True,
        )
        rss = {}
        for mode in ("whole", "stream"):
            out = subprocess.run(
                [sys.executable, "-c", _RSS, mode, str(long)], capture_output=True, text=True, check=True
            ).stdout.split()
            rss[mode] = (int(out[1]) - int(out[2])) / 1024  # above the same imports
        rows.append(
            {
                "method": f"decode {rss_minutes} min 44.1 kHz -> 22050: librosa.load whole file",
                "peak_rss_mb_above_imports": round(rss["whole"], 1),
            }
        )
        rows.append(
            {
                "method": f"decode {rss_minutes} min 44.1 kHz -> 22050: xttsft stream_blocks (30 s)",
                "peak_rss_mb_above_imports": round(rss["stream"], 1),
            }
        )

    ratios = {
        "vad_speed_vs_naive_energy": round(rows[0]["x_realtime"] / rows[2]["x_realtime"], 2),
        "vad_clips_vs_naive_energy_clips": round(rows[0]["clips"] / max(1, rows[2]["clips"]), 2),
        # extra RSS over the imports; the stream's is below 1 MB, so it is floored at 1 MB
        "whole_decode_extra_rss_vs_streamed_floor_1mb": round(rss["whole"] / max(rss["stream"], 1.0), 1),
        # short sentences kept with the default short_share, and the sentence seconds in clips against none
        "short_share_of_clips_default": short_rows[1]["short_share_of_clips"],
        "sentence_seconds_in_clips_vs_no_short": round(
            short_rows[1]["sentence_seconds_in_clips"] / max(1e-9, short_rows[0]["sentence_seconds_in_clips"]), 3
        ),
    }
    table = Table(title=f"segment benchmark: {dur / 60:.1f} min of noisy espeak-ng speech, {len(spans)} sentences")
    cols = [
        "method",
        "seconds",
        "x_realtime",
        "speech_regions",
        "clips",
        "edges_inside_sentences",
        "short_clips",
        "short_share_of_clips",
        "short_share_of_audio",
        "short_clips_of_whole_sentences",
        "sentence_seconds_in_clips",
        "peak_rss_mb_above_imports",
    ]
    for c in cols:
        table.add_column(c, justify="left" if c == "method" else "right")
    for r in rows:
        table.add_row(*[str(r.get(c, "")) for c in cols])
    console.print(table)
    for k, v in ratios.items():
        console.print(f"{k}: [bold]{v}x[/]")
    result = {
        "name": "segment",
        "date": date.today().isoformat(),
        "machine": machine(),
        "audio_minutes": round(dur / 60, 2),
        "sentences": len(spans),
        "rows": rows,
        "ratios": ratios,
    }
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "segment.json").write_text(json.dumps(result, indent=2, default=float) + "\n")
    console.print(f"wrote {HERE / 'results' / 'segment.json'}")


if __name__ == "__main__":
    main()
