"""segment: espeak-ng sentences with known silences between them, and bad files."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from xttsft.data.segment import Region, plan_segments, segment_sources
from xttsft.io import read_jsonl
from xttsft.settings import SegmentSettings

SR = 22050
SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "She sells sea shells by the shore.",
    "A journey begins with a single step.",
    "Please call Stella and ask her to come.",
    "We need a small plastic snake.",
]
SILENCES = [0.5, 0.9, 0.6, 1.2, 0.7, 0.5]  # before the first sentence, between them, after the last


@pytest.fixture(scope="module")
def talk(tmp_path_factory: pytest.TempPathFactory, speak) -> tuple[Path, list[tuple[float, float]]]:
    """A WAV of the sentences joined by known silences, with light noise; and each sentence's span."""
    d = tmp_path_factory.mktemp("talk")
    rng = np.random.default_rng(0)
    parts = [np.zeros(int(SILENCES[0] * SR), np.float32)]
    spans, t = [], SILENCES[0]
    for i, text in enumerate(SENTENCES):
        x, _ = sf.read(speak(text, d / f"s{i}.wav"), dtype="float32")
        voiced = np.flatnonzero(np.abs(x) > 0.01)
        x = x[voiced[0] : voiced[-1] + 1]
        spans.append((t, t + len(x) / SR))
        parts += [x, np.zeros(int(SILENCES[i + 1] * SR), np.float32)]
        t += len(x) / SR + int(SILENCES[i + 1] * SR) / SR
    y = np.concatenate(parts)
    y += rng.normal(0, 0.002, len(y)).astype(np.float32)
    out = d / "talk.wav"
    sf.write(out, y, SR, subtype="PCM_16")
    return out, spans


def _settings(**kw: object) -> SegmentSettings:
    return SegmentSettings(**{"min_duration": 1.0, "max_duration": 4.0, **kw})


def _inside(t: float, spans: list[tuple[float, float]], tol: float = 0.02) -> bool:
    return any(a + tol < t < b - tol for a, b in spans)


@pytest.mark.parametrize("method", ["vad", "energy"])
def test_cuts_fall_in_the_silences(talk, workspace, method: str) -> None:
    path, spans = talk
    st = _settings(method=method)
    res = segment_sources(st, workspace, inputs=[path])
    assert [s.status for s in res.sources] == ["segmented"]
    rows = read_jsonl(workspace.segments_manifest)
    assert len(rows) >= 3
    for r in rows:
        assert st.min_duration <= r["duration"] <= st.max_duration + 1e-3, r
        # never cut inside a sentence: both edges lie in silence
        assert not _inside(r["start"], spans) and not _inside(r["end"], spans), (r, spans)
        assert r["sample_rate"] == SR and r["source_sha256"] and r["id"].startswith("talk_")
        info = sf.info(workspace.segments_dir / r["wav"])
        assert (info.samplerate, info.channels, info.subtype) == (SR, 1, "PCM_16")
        assert abs(info.duration - r["duration"]) < 0.01
        x, _ = sf.read(workspace.segments_dir / r["wav"], dtype="float32")
        peak = 20 * np.log10(np.max(np.abs(x)))
        rms = 10 * np.log10(np.mean(x.astype(np.float64) ** 2))
        assert peak <= st.peak_limit + 0.01
        assert abs(rms - r["loudness_dbfs"]) < 0.1
        if "peak_limited" in r["flags"]:
            assert st.target_loudness - 12 < rms < st.target_loudness
        else:
            assert abs(rms - st.target_loudness) < 0.3
    # every sentence lies whole inside one clip, with some pad before and after it
    for a, b in spans:
        holders = [r for r in rows if r["start"] <= a and b <= r["end"]]
        assert len(holders) == 1, (a, b, rows)
        assert a - holders[0]["start"] >= 0.1 - 0.04 and holders[0]["end"] - b >= 0.1 - 0.04


def test_rerun_skips_and_force_redoes(talk, workspace, cli) -> None:
    path, _ = talk
    raw = workspace.raw_dir
    raw.mkdir(parents=True)
    (raw / "talk.wav").write_bytes(path.read_bytes())
    args = ("segment", "--min-duration", "1", "--max-duration", "4")
    r = cli(*args)
    assert r.exit_code == 0, r.output
    rows = read_jsonl(workspace.segments_manifest)
    assert rows and all(row["source"] == "train/data/raw/talk.wav" for row in rows)
    first = workspace.segments_dir / rows[0]["wav"]
    mtime = first.stat().st_mtime_ns

    r = cli(*args)
    assert r.exit_code == 0 and "already segmented" in r.output
    assert first.stat().st_mtime_ns == mtime
    assert read_jsonl(workspace.segments_manifest) == rows

    r = cli(*args, "--force")
    assert r.exit_code == 0 and "segmented" in r.output
    assert first.stat().st_mtime_ns != mtime
    assert [x["id"] for x in read_jsonl(workspace.segments_manifest)] == [x["id"] for x in rows]

    # other settings: the source is redone and its old clips replaced, not added to
    r = cli("segment", "--min-duration", "1", "--max-duration", "8")
    assert r.exit_code == 0
    new = read_jsonl(workspace.segments_manifest)
    on_disk = sorted(p.name for p in workspace.segments_dir.glob("*.wav"))
    assert on_disk == sorted(x["wav"] for x in new)
    assert max(x["duration"] for x in new) <= 8.0


def test_segment_keeps_a_sources_speaker_windows_until_the_source_changes(talk, workspace) -> None:
    """The CAM++ windows segment embedded for speaker turns are kept beside the clips, named by the source's
    content (the screen reads them); a changed source replaces them."""
    from xttsft.data.segment import read_source_windows, source_windows_path
    from xttsft.encoders import MOMENTS_DIM
    from xttsft.io import sha256_file

    path, _ = talk
    workspace.raw_dir.mkdir(parents=True)
    src = workspace.raw_dir / "talk.wav"
    src.write_bytes(path.read_bytes())
    segment_sources(_settings(), workspace)
    old = sha256_file(src)
    kept = read_source_windows(workspace, old)
    assert kept is not None and kept.embeddings.shape == (len(kept.starts), 192) and len(kept.starts) >= 5
    assert np.allclose(kept.starts / 0.8, np.round(kept.starts / 0.8))  # 1.6 s windows every 0.8 s
    assert kept.starts.max() + 1.6 <= sf.info(src).duration + 1e-6
    assert kept.moments is not None and kept.moments.shape == (len(kept.starts), MOMENTS_DIM)  # the screen pools them
    with np.load(source_windows_path(workspace, sha256_file(src))) as z:  # a file from before the moments
        older = {k: z[k] for k in z.files if k != "moments"}
    np.savez(source_windows_path(workspace, sha256_file(src)), **older)
    before = read_source_windows(workspace, old)
    assert before is not None and before.moments is None and np.array_equal(before.embeddings, kept.embeddings)
    x, sr = sf.read(src, dtype="float32")
    sf.write(src, x[: len(x) // 2], sr)
    segment_sources(_settings(), workspace)
    assert not source_windows_path(workspace, old).exists()
    new = sha256_file(src)
    assert read_source_windows(workspace, new) is not None
    with np.load(source_windows_path(workspace, new)) as z:  # a damaged file is no windows, not a crash
        arrays = {k: z[k] for k in z.files}
    np.savez(source_windows_path(workspace, new), **{**arrays, "starts": arrays["starts"][:-1]})
    assert read_source_windows(workspace, new) is None


def test_plan_forces_split_of_long_speech_and_merges_short_pieces() -> None:
    st = _settings(pad=0.2)
    env = np.full(1200, -20.0, dtype=np.float32)
    env[520:525] = -45.0  # the quietest moment of the long stretch, at 5.2 s
    kept, dropped = plan_segments([Region(0.5, 9.5)], 12.0, st, env)
    assert len(kept) >= 3 and not dropped
    assert all(k.duration <= st.max_duration + 1e-6 and "forced_split" in k.flags for k in kept)
    # pieces meet exactly at the cuts (no pad into the other piece)
    assert all(abs(a.end - b.start) < 1e-9 for a, b in zip(kept, kept[1:], strict=False))

    # a 0.4 s word alone is too short: merged with its neighbour across a short pause
    kept, dropped = plan_segments([Region(0.5, 0.9), Region(1.5, 3.0)], 4.0, st)
    assert len(kept) == 1 and not dropped and "merged" in kept[0].flags
    assert kept[0].start == pytest.approx(0.3) and kept[0].end == pytest.approx(3.2)
    # ... but never across a pause longer than max_pause: then it is dropped
    kept, dropped = plan_segments([Region(0.5, 0.9), Region(3.5, 5.0)], 6.0, st)
    assert len(kept) == 1 and len(dropped) == 1
    # pads never reach into neighbouring speech: at most half the pause
    kept, _ = plan_segments([Region(0.5, 2.0), Region(2.1, 3.8)], 5.0, _settings(max_duration=3.0, pad=0.2))
    assert kept[0].end <= 2.05 + 1e-9 and kept[1].start >= 2.05 - 1e-9


def test_bad_inputs_each_get_a_line(talk, tmp_path: Path, cli, workspace) -> None:
    path, _ = talk
    d = tmp_path / "bad"
    d.mkdir()
    x, _ = sf.read(path, dtype="float32")
    (d / "zero.wav").write_bytes(b"")
    (d / "notes.mp3").write_text("this is not audio")
    sf.write(d / "silence.wav", np.zeros(3 * SR, np.float32), SR, subtype="PCM_16")
    rng = np.random.default_rng(1)
    sf.write(d / "noise.wav", rng.normal(0, 0.1, 4 * SR).astype(np.float32), SR, subtype="PCM_16")
    full = path.read_bytes()
    (d / "truncated.wav").write_bytes(full[: len(full) // 2])
    ff = ["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-i", str(path)]
    subprocess.run([*ff, "-ar", "8000", str(d / "phone8k.wav")], check=True)
    subprocess.run([*ff, "-ac", "2", "-ar", "48000", str(d / "stereo48k.flac")], check=True)
    sf.write(d / "clipped.wav", np.clip(x * 6, -1, 1), SR, subtype="PCM_16")

    r = cli("segment", str(d), "--min-duration", "1", "--max-duration", "4")
    out = "".join(r.output.split())  # rich wraps long lines anywhere

    def shown(text: str) -> bool:
        return "".join(text.split()) in out

    assert r.exit_code == 1
    assert shown("4 of 8 file(s) failed")
    assert shown("zero.wav: empty file (0 bytes)")
    assert shown("notes.mp3: not audio that ffmpeg can read")
    assert shown("silence.wav: no speech: the file is silent")
    assert shown("noise.wav: no speech found by the VAD")
    assert shown("truncated: the header says")
    assert shown("8000 Hz source upsampled")
    assert shown("2 channels at 48000 Hz downmixed")
    rows = read_jsonl(workspace.segments_manifest)
    by_source = {Path(r["source"]).name for r in rows}
    assert by_source == {"truncated.wav", "phone8k.wav", "stereo48k.flac", "clipped.wav"}
    clipped = [r for r in rows if r["source"].endswith("clipped.wav")]
    assert clipped and any("clipped_input" in r["flags"] for r in clipped)
    assert all(r["peak_dbfs"] <= -1.0 for r in rows)
    records = read_jsonl(workspace.segment_sources_file)
    assert {r["status"] for r in records} == {"segmented", "failed"}


def test_cli_errors_without_traceback(cli, workspace) -> None:
    r = cli("segment")
    assert r.exit_code == 1 and "No audio" in r.output and "xttsft fetch" in r.output
    r = cli("segment", "--min-duration", "9", "--max-duration", "4")
    assert r.exit_code == 1 and "min_duration" in r.output
    r = cli("segment", "--method", "magic")
    assert r.exit_code == 1 and "method" in r.output


RUNNING = [  # sentences said one after the other, 0.2 s apart: running speech
    ["She sells sea shells by the shore.", "A journey begins with a single step.", "We need a small plastic snake."],
    ["Please call Stella and ask her to come.", "The rain in Spain stays mainly in the plain.", "Open the door."],
]
ALONE = "Good morning to you."  # about 1.3 s, between pauses of 1.2 s


@pytest.fixture(scope="module")
def talk_with_short(tmp_path_factory: pytest.TempPathFactory, speak) -> tuple[Path, list[tuple[float, float]], int]:
    """Running speech, a stand-alone short sentence between long pauses, running speech again; the
    sentence spans and the index of the short one."""
    d = tmp_path_factory.mktemp("short")
    rng = np.random.default_rng(2)
    texts = [*RUNNING[0], ALONE, *RUNNING[1]]
    gaps = [0.5, 0.2, 0.2, 1.2, 1.2, 0.2, 0.2, 0.5]  # before each sentence, and after the last
    parts, spans, t = [], [], 0.0
    for i, text in enumerate(texts):
        x, _ = sf.read(speak(text, d / f"s{i}.wav"), dtype="float32")
        voiced = np.flatnonzero(np.abs(x) > 0.01)
        x = x[voiced[0] : voiced[-1] + 1]
        parts += [np.zeros(int(gaps[i] * SR), np.float32), x]
        t += int(gaps[i] * SR) / SR
        spans.append((t, t + len(x) / SR))
        t += len(x) / SR
    parts.append(np.zeros(int(gaps[-1] * SR), np.float32))
    y = np.concatenate(parts)
    y += rng.normal(0, 0.002, len(y)).astype(np.float32)
    out = d / "talk.wav"
    sf.write(out, y, SR, subtype="PCM_16")
    return out, spans, len(RUNNING[0])


def test_a_stand_alone_short_sentence_is_kept_as_its_own_clip(talk_with_short, cli, workspace) -> None:
    path, spans, alone = talk_with_short
    r = cli("segment", str(path), "--min-duration", "4", "--max-duration", "10", "--short-share", "0.34")
    assert r.exit_code == 0, r.output
    rows = read_jsonl(workspace.segments_manifest)
    short = [row for row in rows if "short_sentence" in row["flags"]]
    assert len(short) == 1, rows
    a, b = spans[alone]
    clip = short[0]
    # the whole sentence, its pads, and nothing of the running speech on either side
    assert clip["start"] <= a - 0.1 and b + 0.1 <= clip["end"] and 1.0 <= clip["duration"] < 4.0, (clip, spans)
    assert spans[alone - 1][1] < clip["start"] and clip["end"] < spans[alone + 1][0]
    for row in rows:  # the other clips keep the minimum, and no edge falls inside a sentence
        assert row is clip or row["duration"] >= 4.0 - 1e-3, row
        assert not _inside(row["start"], spans) and not _inside(row["end"], spans), (row, spans)
    assert "".join("1 short sentence (".split()) in "".join(r.output.split())
    # the default share (15%) of 3 clips keeps no short one: the sentence is merged as before
    r = cli("segment", str(path), "--min-duration", "4", "--max-duration", "10", "--force")
    assert r.exit_code == 0 and "no short sentence" in " ".join(r.output.split())
    assert not any("short_sentence" in row["flags"] for row in read_jsonl(workspace.segments_manifest))


def _short_plan(regions: list[Region], duration: float, **kw: object):
    st = SegmentSettings(**{"min_duration": 4.0, "max_duration": 10.0, "pad": 0.2, "short_share": 0.5, **kw})
    kept, dropped = plan_segments(regions, duration, st)
    return [k for k in kept if {"short_sentence", "short_turn"} & set(k.flags)], kept, dropped


def test_short_fragments_of_running_speech_are_not_short_clips() -> None:
    # a 2 s sentence 0.2 s after running speech is part of it, however long the pause after it ...
    running = [Region(0.5, 3.0), Region(3.2, 5.2), Region(7.0, 10.0), Region(10.2, 13.0)]
    shorts, kept, _ = _short_plan(running, 14.0)
    assert not shorts and len(kept) == 2
    # ... and so is one with 0.2 s on both sides (a fragment inside running speech)
    inside = [Region(0.5, 3.5), Region(3.7, 5.7), Region(5.9, 9.0)]
    shorts, kept, _ = _short_plan(inside, 10.0)
    assert not shorts
    # pieces of speech split for having no pause are not sentences either, even when shorter than the minimum
    kept, dropped = plan_segments([Region(0.5, 16.5)], 17.0, SegmentSettings(min_duration=4, max_duration=6))
    assert kept and all("forced_split" in k.flags and "short_sentence" not in k.flags for k in kept + dropped)
    # the same 2 s sentence with 1 s of silence on both sides stands alone: it is kept as a short clip
    alone = [Region(0.5, 3.0), Region(3.2, 5.2), Region(6.2, 8.2), Region(9.2, 12.0), Region(12.2, 15.0)]
    shorts, kept, dropped = _short_plan(alone, 16.0)
    assert [(k.speech_start, k.speech_end) for k in shorts] == [(6.2, 8.2)] and not dropped
    assert shorts[0].start == pytest.approx(6.0) and shorts[0].end == pytest.approx(8.4)


def test_a_short_turn_is_kept_outside_the_share() -> None:
    """A 2.4 s turn between two other voices (changes in pauses of 0.1-0.2 s) is a voice's whole turn: kept as a
    short clip, whatever the share of short sentences, where it was dropped for lacking 0.5 s pauses."""
    turns = [Region(0.5, 6.5), Region(6.6, 9.0, turn=True), Region(9.2, 15.0, turn=True)]
    for share in (0.15, 0.5):
        shorts, kept, dropped = _short_plan(turns, 15.5, short_share=share)
        assert [(k.speech_start, k.speech_end) for k in shorts] == [(6.6, 9.0)] and not dropped, (share, kept)
        assert "speaker_turn" in shorts[0].flags and len(kept) == 3
        assert shorts[0].start == pytest.approx(6.55) and shorts[0].end == pytest.approx(9.1)  # half the pauses
    # a turn cut inside speech (no pause) bounds it as well; a 1 s pause on the other side, and the next
    # sentence too long to join it
    cut = [Region(0.5, 6.5, forced_end=True), Region(6.5, 9.0, forced_start=True, turn=True), Region(10.0, 17.0)]
    shorts, kept, dropped = _short_plan(cut, 17.5, short_share=0.15)
    assert [(k.speech_start, k.speech_end) for k in shorts] == [(6.5, 9.0)] and not dropped
    # a turn with a 0.6 s pause inside is kept whole, not as its first sentence with the rest dropped
    inner = [Region(0.5, 6.5), Region(6.6, 8.6, turn=True), Region(9.2, 9.9), Region(10.0, 16.0, turn=True)]
    shorts, kept, dropped = _short_plan(inner, 16.5, short_share=0.15)
    assert [(k.speech_start, k.speech_end) for k in shorts] == [(6.6, 9.9)] and not dropped, kept
    assert "short_turn" in shorts[0].flags and "short_sentence" not in shorts[0].flags
    # but not a piece of speech split for lacking a pause, and nothing when short turns are off
    forced = [Region(0.5, 6.5, forced_end=True), Region(6.5, 9.0, forced_start=True), Region(9.1, 15.0, turn=True)]
    assert not _short_plan(forced, 15.5, short_share=0.15)[0]
    assert not _short_plan(turns, 15.5, short_share=0.0, short_turns=False)[0]
    assert _short_plan(turns, 15.5, short_share=0.0)[0], "short sentences off: short turns stay"


def test_the_short_share_cap_holds() -> None:
    # 12 short sentences (2 s) between 1 s pauses, each next to 6 s of running speech
    regions, t = [], 0.5
    for k in range(12):
        regions += [Region(t, t + 3.0), Region(t + 3.2, t + 6.2), Region(t + 7.2, t + 9.2)]
        t += 10.2 + 0.05 * k  # the later pauses are a little longer: those sentences stand more alone
    duration = t + 0.5
    speech = sum(r.duration for r in regions)
    for share in (0.1, 0.25, 0.5):
        shorts, kept, dropped = _short_plan(regions, duration, short_share=share)
        assert 0 < len(shorts) <= share * len(kept) + 1e-9, (share, len(shorts), len(kept))
        assert (len(shorts) + 1) > share * (len(kept) + 1), "the cap is reached, not undershot"
        assert not dropped and sum(k.speech_end - k.speech_start for k in kept) >= speech - 1e-6
        assert all(4.0 - 1e-6 <= k.duration <= 10.0 + 1e-6 for k in kept if k not in shorts)
        assert all(1.0 <= k.duration < 4.0 and k.speech_end - k.speech_start == pytest.approx(2.0) for k in shorts)
    assert not _short_plan(regions, duration, short_share=0.0)[0]
    # isolated short sentences (pauses over max_pause) that would be dropped: only the share is kept, the longest
    lone = [Region(0.5, 6.5), Region(9.0, 15.0)] + [Region(18.0 + 4 * k, 19.0 + 4 * k + 0.1 * k) for k in range(6)]
    shorts, kept, dropped = _short_plan(lone, 45.0, short_share=0.34)
    assert len(kept) == 3 and len(dropped) == 5
    assert [k.speech_start for k in shorts] == [38.0]


_HOUR = r"""
import resource, sys
from pathlib import Path
import numpy as np, soundfile as sf
from xttsft.paths import Workspace
from xttsft.data.segment import segment_sources
from xttsft.settings import SegmentSettings
speech, sr = sf.read(sys.argv[1], dtype="float32")
out = Path(sys.argv[2]) / "hour.flac"
rng = np.random.default_rng(0)
with sf.SoundFile(out, "w", sr, 1, "PCM_16") as fh:   # 1 h of faint noise, speech at 3 places
    for minute in range(60):
        block = rng.normal(0, 0.0003, 60 * sr).astype(np.float32)
        if minute in (0, 30, 59):
            block[5 * sr: 5 * sr + len(speech)] += speech
        fh.write(block)
# ru_maxrss is inherited across fork+exec (a big pytest parent would show up here),
# so reset this process's high-water mark and read VmHWM instead.
Path("/proc/self/clear_refs").write_text("5")
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
res = segment_sources(SegmentSettings(min_duration=1, max_duration=4), Workspace(Path(sys.argv[2]) / "ws"), inputs=[out])
peak = next(int(l.split()[1]) for l in Path("/proc/self/status").read_text().splitlines() if l.startswith("VmHWM:"))
print(res.sources[0].status, res.sources[0].duration, res.total_segments, before, peak)
"""


@pytest.mark.slow
def test_hour_long_file_streams_in_bounded_memory(talk, tmp_path: Path) -> None:
    path, _ = talk
    proc = subprocess.run(
        [sys.executable, "-c", _HOUR, str(path), str(tmp_path)], capture_output=True, text=True, check=True, timeout=600
    )
    status, duration, clips, _before, peak_kb = proc.stdout.split()
    assert status == "segmented" and float(duration) == pytest.approx(3600, abs=1)
    assert int(clips) >= 3 * 3
    assert int(peak_kb) < 1_000_000, f"peak RSS {int(peak_kb) / 1024:.0f} MB"


# ------------------------------------------------------------------ speaker turns (issue 22)
def _voices(cos: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two unit 256-d voice directions with cosine ``cos``."""
    rng = np.random.default_rng(seed)
    a, n = rng.normal(size=256), rng.normal(size=256)
    a /= np.linalg.norm(a)
    n -= (n @ a) * a
    n /= np.linalg.norm(n)
    return a, cos * a + np.sqrt(1 - cos**2) * n


def _windows(who: list[tuple[float, float, np.ndarray]], end: float, seed: int = 1) -> tuple[list[float], np.ndarray]:
    """1.6 s windows every 0.8 s: each the voice speaking most of it, with a little noise (None in silence)."""
    rng = np.random.default_rng(seed)
    starts, embs = [], []
    t = 0.0
    while t + 1.6 <= end + 1e-9:
        share = [(min(t + 1.6, b) - max(t, a), v) for a, b, v in who]
        best = max(share, key=lambda s: s[0])
        if best[0] > 0.4:
            e = best[1] + rng.normal(scale=0.03, size=256)
            starts.append(t)
            embs.append(e / np.linalg.norm(e))
        t = round(t + 0.8, 6)
    return starts, np.array(embs, dtype=np.float32)


def _clips_across(regions: list[Region], at: float, end: float) -> list[tuple[float, float]]:
    kept, _ = plan_segments(regions, end, SegmentSettings(), np.full(int(end / 0.01) + 1, -30.0, np.float32))
    return [(s.start, s.end) for s in kept if s.start < at - 0.15 and s.end > at + 0.15]


def test_a_turn_in_a_pause_is_a_cut_there() -> None:
    """Two real-like voices (window similarity 0.55: CAM++ puts 95% of the pyannote sample's two speakers'
    1.6 s windows at 0.55 or below; benchmarks/speaker_encoders.py) change in a 0.4 s pause: the clip plan
    would join the 6.5 s and 4 s of speech; the change is a cut there."""
    from xttsft.data.segment import mark_turns

    a, b = _voices(0.55)
    regions = [Region(0.3, 3.4), Region(3.7, 6.8), Region(7.2, 11.2), Region(11.5, 13.0)]
    starts, embs = _windows([(0.0, 7.0, a), (7.0, 13.5, b)], 13.5)
    marked, n = mark_turns(regions, starts, embs, np.full(1400, -30.0, np.float32))
    assert n >= 1 and marked[2].turn and not marked[1].turn
    assert _clips_across(marked, 7.0, 13.5) == []


def test_a_short_turn_near_a_clip_edge_is_cut_on_both_sides() -> None:
    """A 2.4 s answer of another voice between two pauses, at the end of a 6 s stretch of the first: too short
    for the 3.2 s context on each side of the window test, found by the pause test; no clip holds both."""
    from xttsft.data.segment import mark_turns

    a, b = _voices(0.52, seed=3)
    regions = [Region(0.3, 3.0), Region(3.3, 6.3), Region(6.9, 9.3), Region(9.8, 12.8), Region(13.1, 16.0)]
    starts, embs = _windows([(0.0, 6.6, a), (6.6, 9.55, b), (9.55, 16.5, a)], 16.5, seed=4)
    marked, _ = mark_turns(regions, starts, embs, np.full(1700, -30.0, np.float32))
    assert marked[2].turn and marked[3].turn
    assert _clips_across(marked, 6.6, 16.5) == [] and _clips_across(marked, 9.55, 16.5) == []


def test_a_turn_inside_speech_is_cut_at_its_quietest_point_not_in_a_pause_of_one_voice() -> None:
    """A change inside speech (no pause), 1.1 s after a short pause between two sentences of the first voice:
    the cut goes to the quietest 50 ms near the change, not into that pause (which holds one voice)."""
    from xttsft.data.segment import mark_turns

    a, b = _voices(0.2, seed=5)
    regions = [Region(0.3, 5.0), Region(5.3, 14.0)]
    env = np.full(1500, -30.0, np.float32)
    env[655:662] = -55.0  # the breath between the two voices, at 6.55-6.62 s
    starts, embs = _windows([(0.0, 6.6, a), (6.6, 14.5, b)], 14.5, seed=6)
    marked, n = mark_turns(regions, starts, embs, env)
    assert n >= 1 and not marked[1].turn
    cuts = [r.start for r in marked if r.turn]
    assert len(cuts) == 1 and 6.4 <= cuts[0] <= 6.7, cuts
    assert _clips_across(marked, 6.6, 14.5) == []


def _change_then_pause() -> tuple[list[Region], list[float], np.ndarray, np.ndarray]:
    """One voice, then another from 3.8 s with no pause (a breath at 3.78-3.83 s), pausing at 5.3-5.6 s."""
    a, b = _voices(0.3, seed=7)
    regions = [Region(0.3, 1.6), Region(1.9, 5.3), Region(5.6, 7.5), Region(7.8, 9.5), Region(9.8, 12.0)]
    env = np.full(1300, -30.0, np.float32)
    env[378:383] = -55.0
    starts, embs = _windows([(0.0, 3.8, a), (3.8, 12.5, b)], 12.5, seed=8)
    return regions, starts, embs, env


def test_a_pause_just_after_a_change_inside_speech_is_judged_on_its_own_voice() -> None:
    """The conversation's speaker90 starts 0.1 s after another voice stops, and pauses 1.5 s later: the 3.2 s
    before that pause still held the other voice, so the pause looked like a change, and its 3.9 s turn was
    cut in two (the 2.2 s half then fell to DNSMOS); the pause before the change looked like one too.
    Windows past a change found inside speech do not judge a pause: one cut, at the change."""
    from xttsft.data.segment import _pause_scores, _window_changes, mark_turns, speech_windows

    regions, starts, embs, env = _change_then_pause()
    t, e = speech_windows(regions, starts, embs)
    changes = _window_changes(t, e)
    assert len(changes) == 1 and 3.0 <= changes[0] <= 4.6, changes
    assert {1, 2} <= set(_pause_scores(regions, t, e))  # the windows across the change judge both pauses
    assert not {1, 2} & set(_pause_scores(regions, t, e, changes))
    marked, _ = mark_turns(regions, starts, embs, env)
    cuts = [round(r.start, 2) for r in marked if r.turn]
    assert len(cuts) == 1 and 3.6 <= cuts[0] <= 4.0, cuts
    assert _clips_across(marked, 3.8, 12.5) == []


@pytest.mark.parametrize("found", [4.0, 4.3, 4.45])
def test_a_change_found_a_hop_or_more_from_a_pause_is_not_put_in_it(found: float) -> None:
    """Wherever the windows place that change within their hop (the grid gave 4.0; 4.1 gives 4.8, which is
    the pause's own), a change more than a hop before the pause at 5.3 s is cut in the speech near it,
    not moved into that pause (which the windows past the change no longer judge)."""
    from xttsft.data.segment import _place_turn

    regions, _, _, env = _change_then_pause()
    placed, ok = _place_turn(regions, found, env)
    assert ok and not any(r.turn for r in placed if r.start > 5.0)
    cuts = [round(r.start, 2) for r in placed if r.turn]
    assert len(cuts) == 1 and 3.6 <= cuts[0] <= 4.0, cuts


def test_a_change_just_past_a_short_pause_goes_where_the_voices_part_most() -> None:
    """Speaker91's last 0.57 s: the windows find a change at 52.8 s, within a hop of its 0.3 s pause
    (51.7-52.02 s), but the voice changes at 52.58 s with no pause. Given the source's side similarities
    (CAM++ on the 1.6 s before and after each point: 0.39 at the pause, 0.26 at the quiet point inside
    speech), the change moves out of the pause, even one step 1 had marked; sides that part no clearer
    (or none given) leave it in the pause."""
    from xttsft.data.segment import TURN_SPEECH_MARGIN, _place_turn

    env = np.full(6100, -25.0, np.float32)
    env[5255:5262] = -60.0  # the 0.07 s dip where the voice changes

    def regions() -> list[Region]:
        return [Region(48.5, 51.7), Region(52.02, 60.2, turn=True)]  # step 1 marked the pause

    def sides(pause: float):
        return lambda pairs: [pause if a == 51.7 else 0.26 for a, _ in pairs]

    moved, counted = _place_turn(regions(), 52.8, env, sides=sides(0.39), marked={52.02})
    assert [r.turn for r in moved] == [False, False, True] and not counted  # the same change, moved
    assert 52.55 <= moved[2].start <= 52.62 and moved[1].end == moved[2].start
    # a pause another change was put in (not test 1) keeps it: this one is a second change, cut in the speech
    second, counted = _place_turn(regions(), 52.8, env, sides=sides(0.39))
    assert [r.turn for r in second] == [False, True, True] and counted
    for kept in (
        _place_turn(regions(), 52.8, env, sides=sides(0.26 + TURN_SPEECH_MARGIN / 2))[0],
        _place_turn(regions(), 52.8, env)[0],
    ):
        assert [(r.start, r.turn) for r in kept] == [(48.5, False), (52.02, True)]
