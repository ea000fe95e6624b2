"""screen: only the target speaker's clean speech, once, on real encoders and real (espeak-ng) voices.

The interview (``xttsft.demo.make_interview``) holds a main voice, a host and a
guest, music, speech under loud noise, and a re-encoded excerpt of itself; its
script says who speaks when, so every figure here is checked against the truth.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from xttsft import audio
from xttsft.data.screen import screen_clips
from xttsft.data.segment import segment_sources
from xttsft.demo import INTERVIEW_HOST_VOICE, Interview, make_demo_corpus, make_interview
from xttsft.encoders import SR, dnsmos, fingerprint, match_fingerprints
from xttsft.errors import DatasetError, InputError
from xttsft.io import read_jsonl
from xttsft.paths import Workspace
from xttsft.settings import ScreenSettings, SegmentSettings


def _kept_spans(ws: Workspace) -> tuple[list[tuple[str, float, float]], list[tuple[str, float, float]]]:
    """(every clip, the clips the screen kept) as (source, start, end)."""
    man = {r["id"]: r for r in read_jsonl(ws.segments_manifest)}
    decided = {r["id"]: r["status"] for r in read_jsonl(ws.screen_file)}
    span = lambda r: (r["source"], r["start"], r["end"])  # noqa: E731
    return [span(r) for r in man.values()], [span(r) for i, r in man.items() if decided.get(i) == "kept"]


@pytest.fixture(scope="module")
def interview(tmp_path_factory: pytest.TempPathFactory) -> Interview:
    return make_interview(tmp_path_factory.mktemp("interview"))


def _segmented(tmp: Path, iv: Interview, settings: SegmentSettings) -> Workspace:
    ws = Workspace(tmp / "ws").ensure()
    for f in (iv.recording, iv.excerpt):
        shutil.copy(f, ws.raw_dir)
    res = segment_sources(settings, ws)
    assert not res.failed
    return ws


@pytest.fixture(scope="module")
def screened(tmp_path_factory: pytest.TempPathFactory, interview: Interview) -> tuple[Workspace, object]:
    ws = _segmented(tmp_path_factory.mktemp("screened"), interview, SegmentSettings())
    return ws, screen_clips(ScreenSettings(), ws)


def test_interview_keeps_the_main_voice_once(screened, interview: Interview) -> None:
    ws, res = screened
    every, kept = _kept_spans(ws)
    before, after = interview.score(every), interview.score(kept)
    # what segment alone gives: other voices and the excerpt's copies
    assert before["main_share"] < 0.9 and before["duplicate_seconds"] > 10
    assert after["main_share"] >= 0.95
    assert after["main_words"] >= 0.80
    assert after["main_clean_words"] >= 0.95  # every clean sentence (measured 0.97; the noisy ones go)
    assert after["duplicate_seconds"] < 0.5
    assert {"other_speaker", "duplicate"} <= set(res.dropped)


def test_speakers_table_and_files(screened) -> None:
    ws, res = screened
    assert len(res.speakers) >= 2
    target = [s for s in res.speakers if s.target]
    assert len(target) == 1 and target[0] is res.speakers[0]  # the most minutes
    assert target[0].minutes == max(s.minutes for s in res.speakers)
    stats = json.loads(ws.screen_stats.read_text())
    assert stats["kept"] == res.kept and stats["dropped"] == dict(res.dropped)
    assert stats["speakers"][0]["target"] is True and stats["thresholds"]["min_dnsmos_bak"] == 2.8
    for png in ("speakers.png", "dnsmos.png"):
        assert (ws.screen_dir / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_every_drop_has_its_reason_and_score(screened) -> None:
    ws, _ = screened
    rows = {r["id"]: r for r in read_jsonl(ws.screen_file)}
    for r in rows.values():
        assert r["status"] in ("kept", "dropped") and isinstance(r["similarity"], float)
        if r["status"] == "dropped":
            assert r["reason"] in ("other_speaker", "mixed_speakers", "low_quality", "duplicate") and r["detail"]
        else:
            assert r["dnsmos"]["ovrl"] >= 2.0 and r["dnsmos"]["bak"] >= 2.8
    dups = [r for r in rows.values() if r["reason"] == "duplicate"]
    assert dups and all(rows[d["duplicate_of"]]["status"] == "kept" for d in dups)
    # the copy from the longer source (the recording) is the one kept
    assert all(d["source"].endswith("excerpt.ogg") for d in dups)
    assert all("similarity" in r["detail"] for r in rows.values() if r["reason"] == "other_speaker")


def test_speaker_ref_picks_another_voice(tmp_path: Path, interview: Interview, speak) -> None:
    # 3 s clips, so the host's short turns make clips at all
    ws = _segmented(tmp_path, interview, SegmentSettings(min_duration=3.0, max_duration=12.0))
    ref = speak(
        "Good evening and welcome back. I am your host, and I love asking questions about books.",
        tmp_path / "host.wav",
        voice=INTERVIEW_HOST_VOICE,
    )
    res = screen_clips(ScreenSettings(speaker_refs=[ref]), ws)
    _, kept = _kept_spans(ws)
    assert res.kept >= 2
    assert interview.score(kept, voice=INTERVIEW_HOST_VOICE)["main_share"] >= 0.95
    assert interview.score(kept)["main_share"] < 0.05  # none of the main voice


def test_quality_drops_speech_under_noise(tmp_path: Path, speak) -> None:
    import soundfile as sf

    clean = speak(
        "The water was calm and the air smelled of rain, so we walked to the bridge.",
        tmp_path / "c.wav",
        sample_rate=SR,
    )
    x, _ = sf.read(str(clean), dtype="float32")
    noisy = x + np.random.default_rng(0).normal(0, float(np.sqrt(np.mean(x**2))), len(x)).astype(np.float32)
    good, bad = dnsmos(x), dnsmos(np.clip(noisy, -1, 1))
    # the background score is what falls; synthetic speech keeps a low overall score even when clean
    assert bad.bak < ScreenSettings().min_dnsmos_bak < good.bak
    assert good.ovrl > ScreenSettings().min_dnsmos


def test_a_short_clips_dnsmos_can_be_the_mean_of_several_loop_starts(tmp_path: Path, speak) -> None:
    """DNSMOS repeats a clip shorter than its 9.01 s window to fill it; where the repeats start moves the
    scores, and ``loop_starts`` averages that many evenly spaced starts. A long clip is scored once."""
    x = audio.read_mono(speak("The water was calm, so we walked to the bridge.", tmp_path / "c.wav"), SR)
    x = x[: int(2.5 * SR)]
    singles = [dnsmos(np.roll(x, -(len(x) * k // 4))) for k in range(4)]
    assert len({round(s.bak, 3) for s in singles}) > 1  # the start matters
    mean = dnsmos(x, loop_starts=4)
    assert mean.bak == pytest.approx(np.mean([s.bak for s in singles]), abs=1e-6)
    assert mean.ovrl == pytest.approx(np.mean([s.ovrl for s in singles]), abs=1e-6)
    assert dnsmos(x, loop_starts=4, first=singles[0]) == mean  # the first start's score, known, is reused
    shifted = dataclasses.replace(singles[0], bak=singles[0].bak + 1.0)
    assert dnsmos(x, loop_starts=4, first=shifted).bak == pytest.approx(mean.bak + 0.25, abs=1e-6)
    long = np.tile(x, 5)
    assert dnsmos(long, loop_starts=4) == dnsmos(long)


def test_a_short_clip_near_a_quality_bar_is_judged_on_the_mean_of_its_loop_starts(tmp_path: Path) -> None:
    """One DNSMOS score of a short clip is a coin toss near a bar: such a clip (only) is scored from
    DNSMOS_LOOP_STARTS loop starts, and the mean decides; the measures are cached, so a new bar measures only the clips now near it,
    and a re-run nothing."""
    from xttsft.data.screen import DNSMOS_LOOP_STARTS, DNSMOS_NEAR

    ws = Workspace(tmp_path / "ws").ensure()
    make_demo_corpus(ws.raw_dir, language="en")
    segment_sources(SegmentSettings(min_duration=2.0, max_duration=8.0), ws)
    screen_clips(ScreenSettings(), ws)

    def features() -> dict[str, dict[str, np.ndarray]]:
        out = {}
        for f in ws.screen_features_dir.glob("*.npz"):
            with np.load(f) as z:
                out[f.stem] = {k: z[k] for k in z.files}
        return out

    def near(fs: dict[str, dict[str, np.ndarray]], st: ScreenSettings) -> set[str]:
        return {
            i
            for i, f in fs.items()
            if abs(float(f["dnsmos"][1]) - st.min_dnsmos_bak) < DNSMOS_NEAR
            or abs(float(f["dnsmos"][2]) - st.min_dnsmos) < DNSMOS_NEAR
        }

    first = features()
    averaged = {i for i, f in first.items() if "dnsmos_mean" in f}
    assert averaged == near(first, ScreenSettings()) and len(averaged) < len(first)
    bak = sorted(float(f["dnsmos"][1]) for f in first.values())
    strict = ScreenSettings(min_dnsmos_bak=bak[len(bak) // 2] + 0.05)  # half the clips near this bar
    assert near(first, strict) - averaged
    res = screen_clips(strict, ws)
    assert res.measured == len(near(first, strict) - averaged)  # only what the new bar calls for
    after = features()
    assert {i for i, f in after.items() if "dnsmos_mean" in f} == averaged | near(first, strict)
    for d in read_jsonl(ws.screen_file):  # the mean decides while the first score is near a bar, else that one
        f = after[d["id"]]
        used = f["dnsmos_mean"] if d["id"] in near(first, strict) else f["dnsmos"]
        assert d["dnsmos"]["bak"] == pytest.approx(float(used[1]), abs=1e-3)
        assert (d["status"] == "kept") == (used[1] >= strict.min_dnsmos_bak and used[2] >= strict.min_dnsmos)
        if d["status"] == "dropped" and d["id"] in near(first, strict):
            assert f"mean of {DNSMOS_LOOP_STARTS} loop starts" in d["detail"]
    assert screen_clips(strict, ws, force=True).measured == 0


def test_fingerprints_find_reencoded_speech_only(tmp_path: Path, speak) -> None:
    from xttsft.audio import decode

    a = speak(
        "My grandmother kept a garden behind her house for fifty years. She grew tomatoes and beans.",
        tmp_path / "a.wav",
        sample_rate=SR,
    )
    other_text = speak(
        "Learning a new language takes time and a little courage, and many short stories.",
        tmp_path / "b.wav",
        sample_rate=SR,
    )
    other_voice = speak(
        "My grandmother kept a garden behind her house for fifty years. She grew tomatoes and beans.",
        tmp_path / "c.wav",
        voice="en-us+f3",
        sample_rate=SR,
    )
    excerpt = tmp_path / "a.ogg"
    subprocess.run(
        [
            "ffmpeg",
            "-nostdin",
            "-loglevel",
            "error",
            "-y",
            "-i",
            str(a),
            "-ss",
            "1.37",
            "-t",
            "4",
            "-c:a",
            "libvorbis",
            "-b:a",
            "48k",
            "-ar",
            "44100",
            str(excerpt),
        ],
        check=True,
    )
    prints = [fingerprint(decode(p, sr=SR)) for p in (a, other_text, other_voice, excerpt)]
    pairs = {(m.a, m.b) for m in match_fingerprints(prints)}
    assert pairs == {(0, 3)}


def test_one_speaker_loses_nothing_and_reruns_reuse_measures(tmp_path: Path) -> None:
    ws = Workspace(tmp_path / "ws").ensure()
    make_demo_corpus(ws.raw_dir, language="en")
    segment_sources(SegmentSettings(min_duration=2.0, max_duration=8.0), ws)
    first = screen_clips(ScreenSettings(), ws)
    assert first.kept == first.total and not first.dropped  # the demo voice loses nothing
    assert first.measured >= first.total  # every clip measured once (voice, fingerprint, DNSMOS)
    again = screen_clips(ScreenSettings(), ws)
    assert again.unchanged and again.kept == first.kept
    # a changed threshold re-decides from the cached measures: nothing is measured again
    before = ws.screen_file.read_text()
    with pytest.raises(InputError, match="Every clip was dropped") as exc:
        screen_clips(ScreenSettings(min_dnsmos_bak=4.9), ws)
    assert "--min-dnsmos" in (exc.value.hint or "")
    assert ws.screen_file.read_text() == before  # a failed screen leaves the previous decisions
    changed = screen_clips(ScreenSettings(cluster_similarity=0.7), ws)
    assert changed.measured == 0 and not changed.unchanged  # (a new quality bar may score the clips near it)


def test_reference_errors(tmp_path: Path, speak, screened) -> None:
    ws, _ = screened
    silent = tmp_path / "silent.wav"
    subprocess.run(
        [
            "ffmpeg",
            "-nostdin",
            "-loglevel",
            "error",
            "-f",
            "lavfi",
            "-i",
            "anullsrc=r=16000:cl=mono",
            "-t",
            "3",
            str(silent),
        ],
        check=True,
    )
    with pytest.raises(InputError, match="holds no speech"):
        screen_clips(ScreenSettings(speaker_refs=[silent]), ws)
    with pytest.raises(InputError, match="does not exist"):
        screen_clips(ScreenSettings(speaker_refs=[tmp_path / "nope.wav"]), ws)
    stranger = speak(
        "Hello there, this is somebody who never spoke in the interview at all.",
        tmp_path / "stranger.wav",
        voice="en-us+f3",
    )
    with pytest.raises(InputError, match=r"matches no clip: the best similarity found is 0\.\d\d"):
        screen_clips(ScreenSettings(speaker_refs=[stranger], min_similarity=0.99, sure_similarity=0.995), ws)


def test_no_clips_to_screen(workspace: Workspace) -> None:
    with pytest.raises(DatasetError, match="No clips to screen"):
        screen_clips(ScreenSettings(), workspace)


def test_filters_off_keep_everything(tmp_path: Path, interview: Interview) -> None:
    ws = _segmented(tmp_path, interview, SegmentSettings())
    res = screen_clips(ScreenSettings(speaker_filter=False, quality_filter=False, duplicate_filter=False), ws)
    assert res.kept == res.total and not res.speakers
    assert not any((ws.screen_dir / p).exists() for p in ("speakers.png", "dnsmos.png"))


def test_segment_cuts_at_a_change_of_voice(tmp_path: Path, speak) -> None:
    """Two voices answer each other after short pauses: without the turn detection a clip spans both."""
    turns = []
    parts = []
    texts = [
        "The morning train was late again, so I walked along the river. The water was calm that day.",
        "A fisherman waved at me from a small green boat. Then the sun came out over the hills. It was warm.",
        "Really? And what did you see there by the water? Was it not a very cold morning?",
        "By the time I reached the bridge, the city was awake. The bakers opened their shops. I bought bread.",
        "I sat on a bench and watched the people. Later I walked home along the same river, slowly.",
    ]
    pos = 0.0
    import soundfile as sf

    sr = 22050
    for k, text in enumerate(texts):
        voice = "en-us+f3" if k == 2 else "en-us"
        x, _ = sf.read(str(speak(text, tmp_path / f"t{k}.wav", voice=voice, sample_rate=sr)), dtype="float32")
        turns.append((pos, pos + len(x) / sr, voice))
        parts += [x, np.zeros(int(0.2 * sr), np.float32)]
        pos += len(x) / sr + 0.2
    src = tmp_path / "talk.wav"
    sf.write(str(src), np.concatenate(parts), sr)

    def voices_per_clip(turn_cuts: bool) -> list[set[str]]:
        ws = Workspace(tmp_path / f"ws{turn_cuts}").ensure()
        segment_sources(SegmentSettings(min_duration=7.0, speaker_turns=turn_cuts), ws, inputs=[src])
        out = []
        for r in read_jsonl(ws.segments_manifest):
            out.append({v for s, e, v in turns if min(e, r["end"]) - max(s, r["start"]) > 0.3})
        return out

    assert any(len(v) > 1 for v in voices_per_clip(False))
    with_turns = voices_per_clip(True)
    assert with_turns and all(len(v) == 1 for v in with_turns)


def test_the_screen_takes_a_clips_windows_from_segment_and_they_are_its_own(screened) -> None:
    """Segment keeps each source's CAM++ windows and their moments; the screen takes a clip's windows from them
    and pools the clip's embedding from their moments (so CAM++ does not run on the clip), and they are what
    the clip's own audio gives at those times."""
    from xttsft.data.screen import _poolable
    from xttsft.data.segment import read_source_windows
    from xttsft.encoders import EMBED_WINDOW, VoiceEncoder
    from xttsft.records import ClipRecord, read_records

    ws, _ = screened
    enc = VoiceEncoder("cpu")
    rows = [r for r in read_records(ws.segments_manifest, ClipRecord) if r.duration >= 5]
    pooled = 0
    for r in rows[:4]:
        source = read_source_windows(ws, r.source_sha256)
        assert source is not None and source.moments is not None
        inside = source.inside(r.start, r.end)
        starts, windows = inside.starts, inside.embeddings
        x = audio.read_mono(ws.segments_dir / r.wav, SR)
        with np.load(ws.screen_features_dir / f"{r.id}.npz") as f:
            assert np.array_equal(f["window_starts"], starts) and np.array_equal(f["windows"], windows)
            embedding = f["embedding"]
        if _poolable(inside, r.duration):
            pooled += 1
            assert np.allclose(embedding, enc.pooled(inside.moments), atol=1e-6)
        assert float(embedding @ enc.utterance(x)) > 0.9  # the whole clip's own, or near it
        assert starts.min() >= -0.02 and (starts + EMBED_WINDOW).max() <= r.duration + 0.02
        own = enc.window_embeddings([x[int(t * SR) : int((t + EMBED_WINDOW) * SR)] for t in np.clip(starts, 0, None)])
        assert float(np.min(np.sum(own * windows, axis=1))) > 0.95
    assert pooled >= 2


def test_without_segments_windows_the_screen_embeds_the_clip_windows_and_decides_alike(
    tmp_path: Path, screened
) -> None:
    """A workspace segmented before segment kept its windows (or with speaker turns off) is screened from the
    clips' own windows, and keeps the same clips."""
    ws, _ = screened
    copy = Workspace(tmp_path / "copy")
    shutil.copytree(ws.root, copy.root)
    shutil.rmtree(copy.segments_dir / "voices")
    shutil.rmtree(copy.screen_features_dir)
    again = screen_clips(ScreenSettings(), copy, force=True)
    assert again.measured >= again.total
    first = read_jsonl(copy.segments_manifest)[0]["id"]
    with np.load(copy.screen_features_dir / f"{first}.npz") as f:  # the clip's own grid, from its start
        assert f["window_starts"][0] == 0 and np.allclose(np.diff(f["window_starts"])[:-1], 0.8)
    kept = lambda w: {r["id"] for r in read_jsonl(w.screen_file) if r["status"] == "kept"}  # noqa: E731
    assert kept(copy) == kept(ws)


def test_cli_messages(cli, screened, tmp_path: Path) -> None:
    ws, _ = screened
    ok = cli("screen", workdir=ws.root)
    assert ok.exit_code == 0, ok.output
    flat = ok.output.replace("\n", "")  # rich folds long paths
    assert "speakers found" in flat and "(target)" in flat and "speakers.png" in flat
    missing = cli("screen", "--speaker-ref", str(tmp_path / "nope.wav"), workdir=ws.root)
    assert missing.exit_code == 1 and "does not exist" in missing.output and "Traceback" not in missing.output
    empty = cli("screen", workdir=tmp_path / "empty")
    assert empty.exit_code == 1 and "No clips to screen" in empty.output and "xttsft segment" in empty.output
    strict = cli("screen", "--min-dnsmos-bak", "4.95", workdir=ws.root)
    assert strict.exit_code == 1 and "Every clip was dropped" in strict.output and "--min-dnsmos" in strict.output


def test_decisions_apply_only_to_the_clips_they_were_made_for(screened) -> None:
    from xttsft.data.screen import kept_ids, read_decisions

    ws, res = screened
    manifest = read_jsonl(ws.segments_manifest)
    assert len(read_decisions(ws, manifest)) == len(manifest)
    assert len(kept_ids(ws, manifest)) == res.kept
    # the same id cut again elsewhere (segment --force with other settings): no decision, so not dropped
    moved = [dict(r, start=r["start"] + 0.5) if r["id"] == manifest[0]["id"] else r for r in manifest]
    assert manifest[0]["id"] not in read_decisions(ws, moved)
    assert manifest[0]["id"] in kept_ids(ws, moved)


def test_switched_off_filters_remove_old_plots_and_a_damaged_cache_is_measured_again(tmp_path: Path) -> None:
    ws = Workspace(tmp_path / "ws").ensure()
    make_demo_corpus(ws.raw_dir, language="en")
    segment_sources(SegmentSettings(min_duration=2.0, max_duration=8.0), ws)
    screen_clips(ScreenSettings(), ws)
    assert (ws.screen_dir / "speakers.png").is_file() and (ws.screen_dir / "dnsmos.png").is_file()
    off = screen_clips(ScreenSettings(speaker_filter=False, quality_filter=False), ws)
    assert off.map_png is None and not (ws.screen_dir / "speakers.png").exists()
    assert not (ws.screen_dir / "dnsmos.png").exists()
    damaged = next(ws.screen_features_dir.glob("*.npz"))
    damaged.write_bytes(b"PK\x03\x04 not a zip")
    again = screen_clips(ScreenSettings(), ws, force=True)
    assert again.measured >= 1 and again.kept == again.total


def test_windows_without_moments_leave_the_clip_embedded_whole(tmp_path: Path, screened) -> None:
    """Segment's windows from before it kept their moments still give a clip's windows; its embedding is then
    CAM++'s over the whole clip, and the same clips are kept."""
    from xttsft.data.screen import _poolable, clip_windows
    from xttsft.data.segment import read_source_windows
    from xttsft.encoders import VoiceEncoder
    from xttsft.records import ClipRecord, read_records

    ws, _ = screened
    copy = Workspace(tmp_path / "copy")
    shutil.copytree(ws.root, copy.root)
    for path in (copy.segments_dir / "voices").glob("*.npz"):
        with np.load(path) as z:
            older = {k: z[k] for k in z.files if k != "moments"}
        np.savez(path, **older)
    shutil.rmtree(copy.screen_features_dir)
    screen_clips(ScreenSettings(), copy, force=True)

    def pooled_here(r: ClipRecord) -> bool:
        windows = clip_windows(read_source_windows(ws, r.source_sha256), r.start, r.end)
        return windows is not None and _poolable(windows, r.duration)

    first = next(r for r in read_records(ws.segments_manifest, ClipRecord) if pooled_here(r))
    with (
        np.load(copy.screen_features_dir / f"{first.id}.npz") as f,
        np.load(ws.screen_features_dir / f"{first.id}.npz") as g,
    ):
        assert np.array_equal(f["windows"], g["windows"])
        whole = VoiceEncoder("cpu").utterance(audio.read_mono(copy.segments_dir / first.wav, SR))
        assert np.allclose(f["embedding"], whole, atol=1e-5) and not np.allclose(g["embedding"], whole, atol=1e-3)
    kept = lambda w: {r["id"] for r in read_jsonl(w.screen_file) if r["status"] == "kept"}  # noqa: E731
    assert kept(copy) == kept(ws)


def test_a_cached_dnsmos_mean_over_another_number_of_starts_is_scored_again(tmp_path: Path) -> None:
    """The loop-start mean is cached with its number of starts; one over another number (8, before it was
    saved) is not used, so the clip is scored again as a fresh run would."""
    from xttsft.data.screen import ClipFeatures, _load_features, _save_features

    path = tmp_path / "f.npz"
    _save_features(path, ClipFeatures("k", dnsmos=(3.0, 2.7, 2.4), dnsmos_mean=(3.1, 2.9, 2.5)))
    assert _load_features(path, "k").dnsmos_mean == (3.1, 2.9, 2.5)
    with np.load(path) as z:
        older = {k: z[k] for k in z.files if k != "dnsmos_starts"}
    np.savez(path, **older)
    again = _load_features(path, "k")
    assert again.dnsmos == (3.0, 2.7, 2.4) and again.dnsmos_mean is None


def test_only_enough_finite_windows_over_most_of_a_clip_pool_its_embedding() -> None:
    """A clip's embedding is pooled from 5 or more windows over 80% of it, never from damaged (non-finite)
    moments: those clips are embedded whole instead."""
    from xttsft.data.screen import _poolable
    from xttsft.data.segment import SourceWindows
    from xttsft.encoders import MOMENTS_DIM

    def windows(n: int, moments: np.ndarray | None = None) -> SourceWindows:
        m = np.ones((n, MOMENTS_DIM), np.float16) if moments is None else moments
        return SourceWindows(np.arange(n) * 0.8, np.zeros((n, 192), np.float32), m)

    assert _poolable(windows(5), 4.8)
    assert not _poolable(windows(4), 4.0)  # too few
    assert not _poolable(windows(5), 8.0)  # 4.8 s of 8: under 80%
    damaged = np.ones((5, MOMENTS_DIM), np.float16)
    damaged[2, 7] = np.inf  # a float16 overflow
    assert not _poolable(windows(5, damaged), 4.8)


def test_coverage_of_a_clip_by_its_windows() -> None:
    from xttsft.data.screen import _coverage

    assert _coverage(np.array([0.0, 0.8, 1.6]), 3.2) == pytest.approx(1.0)
    assert _coverage(np.array([0.8, 1.6]), 4.0) == pytest.approx(2.4 / 4.0)
    assert _coverage(np.array([0.0, 3.2]), 4.0) == pytest.approx(2.4 / 4.0)  # a gap (silent windows left out)


def test_windows_apart_by_a_silence_are_not_a_run_of_another_voice() -> None:
    """Segment leaves silent windows out, so two foreign windows next to each other in the list may lie
    seconds apart: they are not the two in a row (about 2.4 s of another voice) that make a clip mixed."""
    from xttsft.data.screen import _longest_run

    foreign = np.array([False, True, True, False])
    assert _longest_run(foreign, np.array([0.0, 0.8, 1.6, 2.4])) == 2
    assert _longest_run(foreign, np.array([0.0, 0.8, 3.2, 4.0])) == 1


def test_a_near_tie_between_the_two_largest_voices_is_said(caplog) -> None:
    """Issue 22: the top two speakers had 0.488 and 0.461 minutes, and the target was picked without a word."""
    from xttsft.data.screen import _warn_near_tie

    caplog.set_level("WARNING")
    _warn_near_tie([0.488, 0.2])
    assert "close" not in caplog.text
    _warn_near_tie([0.488, 0.461])
    assert "The two largest voices are close" in caplog.text and "--speaker-ref" in caplog.text


def test_a_clip_nearer_its_own_voice_than_the_target_is_another_speaker() -> None:
    """Two voices of one channel sit at 0.8 from each other, above every threshold: each clip goes to the
    voice it is nearest (its cluster without itself), by NEARER_VOICE_MARGIN, never a lone clip or the core."""
    from xttsft.data.screen import NEARER_VOICE_MARGIN, _nearer_voice
    from xttsft.encoders import unit

    rng = np.random.default_rng(0)
    a, b = unit(rng.normal(size=256)), unit(rng.normal(size=256))
    b = unit(0.8 * a + 0.6 * unit(b - (b @ a) * a))  # cosine(a, b) = 0.8

    def near(v: np.ndarray, spread: float) -> np.ndarray:
        return unit(v + spread * unit(rng.normal(size=256)))

    emb = np.stack([near(a, 0.15) for _ in range(4)] + [near(b, 0.15) for _ in range(2)] + [near(b, 0.3)])
    labels = np.array([0, 0, 0, 0, 1, 1, 2])  # the last: alone in its cluster
    dur = np.full(len(emb), 5.0)
    sims = emb @ unit(emb[:4].mean(axis=0))
    core = labels == 0
    got = _nearer_voice(emb, dur, labels, sims, target=0, core=core)
    assert sorted(got) == [4, 5], (got, sims)
    assert all(got[i] - sims[i] >= NEARER_VOICE_MARGIN for i in got)
    assert min(sims[4:6]) > 0.7, "above the default thresholds: only the nearer-voice rule drops them"
    core[4] = True  # a reference's core clip is the target whatever its cluster
    assert sorted(_nearer_voice(emb, dur, labels, sims, target=0, core=core)) == [5]


def _clips_of(emb: np.ndarray) -> list:
    from xttsft.data.screen import ClipFeatures, _Clip
    from xttsft.records import ClipRecord, ScreenRecord

    out = []
    for k, e in enumerate(emb):
        row = ClipRecord(id=f"c{k}", wav=f"c{k}.wav", source="s.wav", source_sha256="0", start=0, end=6, duration=6)
        feats = ClipFeatures(
            key="",
            embedding=e.astype(np.float32),
            windows=np.stack([e] * 6).astype(np.float32),
            window_starts=np.arange(6) * 0.8,
        )
        out.append(_Clip(row, feats, ScreenRecord(id=row.id, status="kept")))
    return out


def test_the_nearer_voice_rule_in_the_screen_spares_a_sure_target() -> None:
    """The same rule inside the speaker screen: a second voice at 0.8 from the target goes, as other_speaker
    with its reason, although above the similarity threshold; but a clip at or above sure_similarity stays the
    target, the promise of that setting."""
    from xttsft.data.screen import _screen_speakers
    from xttsft.encoders import unit

    rng = np.random.default_rng(1)
    a = unit(rng.normal(size=256))

    def at(cos: float, base: np.ndarray) -> np.ndarray:
        side = unit(rng.normal(size=256))
        side = unit(side - (side @ base) * base)
        return unit(cos * base + np.sqrt(1 - cos**2) * side)

    other = at(0.8, a)
    # a loose target voice (clips 0.78-0.97 from its middle), and a tight second voice 0.8 from it
    emb = np.stack([at(c, a) for c in (0.78, 0.82, 0.86, 0.9, 0.94, 0.97)] + [at(0.99, other) for _ in range(3)])
    # on a looser scale than CAM++'s defaults (a loose target, whose threshold falls below sure_similarity)
    loose = ScreenSettings(min_similarity=0.70, sure_similarity=0.85, cluster_similarity=0.75)
    clips = _clips_of(emb)
    _, thresholds, *_ = _screen_speakers(clips, loose, [])
    sims = [c.decision.similarity or 0.0 for c in clips]
    assert all(thresholds["similarity"] < s < loose.sure_similarity for s in sims[6:]), (thresholds, sims)
    dropped = {c.id: c.decision for c in clips if not c.kept}
    assert set(dropped) == {"c6", "c7", "c8"}, [(c.decision.similarity, c.decision.detail) for c in clips]
    assert all(d.reason == "other_speaker" and "nearer its own voice" in d.detail for d in dropped.values())
    sure = ScreenSettings(min_similarity=0.5, sure_similarity=min(sims[6:]) - 0.01, cluster_similarity=0.75)
    clips = _clips_of(emb)
    _screen_speakers(clips, sure, [])
    assert all(c.kept for c in clips), [(c.decision.similarity, c.decision.detail) for c in clips]
