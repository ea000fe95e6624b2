"""build: LJSpeech dataset from segment clips + transcripts, and --check of any LJSpeech folder."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from xttsft.audio import read_wav, write_wav
from xttsft.io import read_jsonl
from xttsft.paths import Workspace
from xttsft.settings import BuildSettings

SR = 22050
WORDS = "alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike november oscar papa".split()


@pytest.fixture(scope="module")
def speech_bank(tmp_path_factory, speak) -> list[Path]:
    """Twelve distinct espeak-ng sentences (about 2-3 s each)."""
    d = tmp_path_factory.mktemp("bank")
    return [speak(f"Sentence {WORDS[i]} is number {i + 1} of the test.", d / f"s{i}.wav", rate=170) for i in range(12)]


def transcript_row(cid: str, text: str, duration: float, **kw) -> dict:
    """A transcripts.jsonl row as `transcribe` writes it (docs/transcribe.md)."""
    row = {
        "id": cid,
        "wav": f"{cid}.wav",
        "text": text,
        "language": "en",
        "language_probability": 1.0,
        "avg_logprob": -0.2,
        "no_speech_prob": 0.01,
        "compression_ratio": 1.2,
        "words": [],
        "trim_start": 0.1,
        "trim_end": round(duration - 0.1, 3),
        "status": "ok",
        "reason": None,
        "model": "tiny.en",
    }
    row.update(kw)
    return row


def make_inputs(ws: Workspace, bank: list[Path]) -> dict[str, str]:
    """Manifest, clips and transcripts: 12 good clips plus one item for each drop reason.

    Returns the expected drop reason per dropped id.
    """
    manifest, rows = [], []

    def clip(cid: str, x: np.ndarray) -> float:
        write_wav(ws.segments_dir / f"{cid}.wav", x, SR)
        dur = len(x) / SR
        manifest.append(
            {
                "id": cid,
                "wav": f"{cid}.wav",
                "source": "train/data/raw/talk.wav",
                "source_sha256": "0" * 64,
                "start": 0.0,
                "end": dur,
                "duration": dur,
                "sample_rate": SR,
                "peak_dbfs": -1.0,
                "loudness_dbfs": -20.0,
                "flags": [],
            }
        )
        return dur

    for i, path in enumerate(bank):
        x, _ = read_wav(path)
        cid = f"talk_{i + 1:04d}"
        rows.append(transcript_row(cid, f"Sentence {WORDS[i]} is number {i + 1} of the test.", clip(cid, x)))
    x, _ = read_wav(bank[0])
    rng = np.random.default_rng(1)
    expected = {}

    def extra(cid: str, drop_reason: str, **kw) -> None:
        y = x + 0.01 * rng.standard_normal(len(x)).astype(np.float32)  # distinct audio
        dur = clip(cid, y)
        rows.append(transcript_row(cid, kw.pop("text", "A perfectly fine sentence."), dur, **kw))
        expected[cid] = drop_reason

    extra("bad_0001", "rejected", status="rejected", reason="hallucination")
    extra("bad_0002", "too_short", trim_start=0.5, trim_end=0.9)
    extra("bad_0003", "too_long", trim_start=0.0, trim_end=16.0)
    extra("bad_0004", "bad_character", text="left | right")
    extra("bad_0005", "too_many_tokens", text="word " * 90)  # 450 characters: over the GPT's 402 text tokens
    extra("bad_0006", "other_language", language="pt")
    extra("bad_0007", "empty_text", text="   ")
    extra("bad_0008", "missing_audio")
    (ws.segments_dir / "bad_0008.wav").unlink()
    clip("bad_0009", x * 0.5)  # in the manifest, never transcribed
    expected["bad_0009"] = "not_transcribed"

    ws.segments_manifest.write_text("".join(json.dumps(r) + "\n" for r in manifest))
    ws.transcripts_file.parent.mkdir(parents=True, exist_ok=True)
    ws.transcripts_file.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return expected


@pytest.fixture
def inputs(workspace: Workspace, speech_bank: list[Path]) -> dict[str, str]:
    workspace.ensure()
    return make_inputs(workspace, speech_bank)


def meta_rows(path: Path) -> list[list[str]]:
    return [line.split("|") for line in path.read_text(encoding="utf-8").splitlines()]


def test_build_writes_an_ljspeech_dataset_and_explains_every_drop(workspace: Workspace, inputs) -> None:
    from xttsft.data.build import build_dataset

    result = build_dataset(BuildSettings(), workspace, max_audio_seconds=15.0)
    d = workspace.dataset_dir
    assert d == workspace.data_dir / "MyTTSDataset"
    from xttsft.data.build import split_ids

    n_train, n_val = (len(x) for x in split_ids([f"talk_{i:04d}" for i in range(1, 13)], 0.1, seed=42))
    assert (result.train, result.val, result.language) == (n_train, n_val, "en") and n_val >= 1

    dropped = {r["id"]: r["reason"] for r in read_jsonl(d / "dropped.jsonl")}
    assert dropped == inputs
    assert sum(result.dropped.values()) == len(inputs)

    all_rows = meta_rows(d / "metadata.csv")
    train, val = meta_rows(d / "metadata_train.csv"), meta_rows(d / "metadata_val.csv")
    assert len(all_rows) == 12 and all(len(r) == 3 for r in all_rows)
    assert {r[0] for r in train} | {r[0] for r in val} == {r[0] for r in all_rows}
    assert not {r[0] for r in train} & {r[0] for r in val}
    for cid, text, norm in all_rows:
        assert text.startswith("Sentence") and norm == norm.lower() and "number" in norm
        info = sf.info(str(d / "wavs" / f"{cid}.wav"))
        assert info.samplerate == SR and info.channels == 1 and info.subtype == "PCM_16"
    # clips are cut to trim_start..trim_end
    src, _ = read_wav(workspace.segments_dir / "talk_0001.wav")
    out, _ = read_wav(d / "wavs" / "talk_0001.wav")
    t = next(r for r in read_jsonl(workspace.transcripts_file) if r["id"] == "talk_0001")
    assert len(out) == round(t["trim_end"] * SR) - round(t["trim_start"] * SR) < len(src)
    np.testing.assert_allclose(out[:100], src[round(0.1 * SR) : round(0.1 * SR) + 100], atol=1e-4)
    assert sorted(p.stem for p in (d / "wavs").glob("*.wav")) == sorted(r[0] for r in all_rows)

    samples = read_jsonl(d / "samples.jsonl")
    assert len(samples) == 12 and {s["split"] for s in samples} == {"train", "val"}
    assert all(s["wav"] == f"wavs/{s['id']}.wav" and s["language"] == "en" and s["source"] for s in samples)
    stats = json.loads((d / "stats.json").read_text())
    assert stats["language"] == "en" and stats["max_audio_seconds"] == 15.0
    assert stats["samples"] == {"train": n_train, "val": n_val, "total": 12}
    assert stats["minutes"] == pytest.approx(sum(s["duration"] for s in samples) / 60, rel=1e-3)
    assert stats["dropped"]["too_long"] == 1 and stats["token_check"] == "characters"
    assert any("samples" in w for w in stats["warnings"]) and any("minutes" in w for w in stats["warnings"])
    assert (d / "durations.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_coqui_ljspeech_formatter_reads_every_row(workspace: Workspace, inputs) -> None:
    from TTS.config.shared_configs import BaseDatasetConfig
    from TTS.tts.configs.shared_configs import BaseTTSConfig
    from TTS.tts.datasets import load_tts_samples

    from xttsft.data.build import build_dataset

    build_dataset(BuildSettings(), workspace, max_audio_seconds=15.0)
    d = workspace.dataset_dir
    cfg = BaseTTSConfig(
        datasets=[
            BaseDatasetConfig(
                formatter="ljspeech",
                dataset_name="mine",
                path=str(d),
                meta_file_train="metadata_train.csv",
                meta_file_val="metadata_val.csv",
                language="en",
            )
        ]
    )
    train, val = load_tts_samples(cfg, eval_split=True)
    assert len(train) == len(meta_rows(d / "metadata_train.csv")) and len(val) == len(meta_rows(d / "metadata_val.csv"))
    for s in train + val:
        assert Path(s["audio_file"]).is_file() and s["text"].strip() and s["language"] == "en"


def test_split_is_deterministic_and_val_never_empty() -> None:
    from xttsft.data.build import split_ids

    ids = [f"c{i:03d}" for i in range(50)]
    a = split_ids(ids, 0.1, seed=1)
    assert a == split_ids(list(reversed(ids)), 0.1, seed=1)
    assert 1 <= len(a[1]) <= 12 and not set(a[0]) & set(a[1]) and sorted(a[0] + a[1]) == ids
    assert split_ids(ids, 0.1, seed=2) != a
    many = split_ids([f"x{i}" for i in range(2000)], 0.1, seed=0)
    assert 150 <= len(many[1]) <= 250  # the fraction holds on average
    assert [len(x) for x in split_ids(["a", "b"], 0.1, seed=0)] == [1, 1]
    train, val = split_ids(["a", "b", "c"], 0.99, seed=0)
    assert len(train) == 1 and len(val) == 2  # train never empty
    assert split_ids(["a"], 0.1, seed=0) == (["a"], [])


def test_split_keeps_every_clip_on_its_side_when_clips_are_added() -> None:
    """Issue 18: adding one clip re-shuffled the split, so a clip trained on became a val clip."""
    from xttsft.data.build import split_ids

    ids = [f"clip_{i:04d}" for i in range(40)]
    train, val = split_ids(ids, 0.1, seed=42)
    for extra in (["clip_0040"], [f"new_{i}" for i in range(25)]):
        train2, val2 = split_ids(ids + extra, 0.1, seed=42)
        assert set(train) <= set(train2) and set(val) <= set(val2)


def test_rerun_with_unchanged_inputs_rewrites_nothing(workspace: Workspace, inputs) -> None:
    from xttsft.data.build import build_dataset

    first = build_dataset(BuildSettings(), workspace, max_audio_seconds=15.0)
    d = workspace.dataset_dir
    files = [p for p in d.rglob("*") if p.is_file()]
    before = {p: p.stat().st_mtime_ns for p in files}
    again = build_dataset(BuildSettings(), workspace, max_audio_seconds=15.0)
    assert again.unchanged and (again.train, again.val) == (first.train, first.val)
    assert {p: p.stat().st_mtime_ns for p in files} == before

    other = build_dataset(BuildSettings(seed=7), workspace, max_audio_seconds=15.0)
    assert not other.unchanged
    assert (d / "stats.json").stat().st_mtime_ns != before[d / "stats.json"]
    # a lower audio limit drops more, and the wavs of dropped samples go away
    durations = sorted(r["duration"] for r in read_jsonl(d / "samples.jsonl"))
    short = build_dataset(BuildSettings(), workspace, max_audio_seconds=durations[6])
    assert short.dropped["too_long"] > 1 and 2 <= short.samples < 12
    assert len(list((d / "wavs").glob("*.wav"))) == short.samples


def test_nothing_usable_is_an_error_with_the_reasons(workspace: Workspace, inputs) -> None:
    from xttsft.data.build import build_dataset
    from xttsft.errors import DatasetError

    rows = read_jsonl(workspace.transcripts_file)
    for r in rows:
        r["status"], r["reason"] = "rejected", "low_confidence"
    workspace.transcripts_file.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(DatasetError, match="every clip was rejected"):
        build_dataset(BuildSettings(), workspace, max_audio_seconds=15.0)


def test_check_lists_every_problem(workspace: Workspace, inputs, tmp_path: Path) -> None:
    from xttsft.data.build import build_dataset, check_dataset

    build_dataset(BuildSettings(), workspace, max_audio_seconds=15.0)
    good = workspace.dataset_dir
    assert check_dataset(good).ok

    bad = tmp_path / "bad"
    shutil.copytree(good, bad)
    ids = [r[0] for r in meta_rows(bad / "metadata.csv")]
    (bad / "wavs" / f"{ids[0]}.wav").unlink()  # missing
    (bad / "wavs" / f"{ids[1]}.wav").write_bytes(b"RIFF garbage")  # unreadable
    x, _ = read_wav(bad / "wavs" / f"{ids[2]}.wav")
    sf.write(str(bad / "wavs" / f"{ids[2]}.wav"), x, 16000, subtype="PCM_16")  # wrong rate
    shutil.copy(bad / "wavs" / f"{ids[3]}.wav", bad / "wavs" / "copy.wav")  # identical audio
    outside = tmp_path / "outside.wav"
    shutil.copy(bad / "wavs" / f"{ids[4]}.wav", outside)
    (bad / "wavs" / f"{ids[4]}.wav").unlink()
    os.symlink(outside, bad / "wavs" / f"{ids[4]}.wav")  # symlink out
    extra = [
        f"{ids[5]}|duplicate id|duplicate id",
        "copy|the same audio|the same audio",
        f"{ids[6]}_x||",
        "../../escape|leaves|leaves",
        f"{outside.with_suffix('')}|absolute|absolute",
    ]
    with (bad / "metadata_train.csv").open("a") as fh:  # what train reads
        fh.write("\n".join(extra) + "\n")

    result = check_dataset(bad, base_model="tiny")
    problems = "\n".join(result.problems)
    assert f"{ids[0]}: missing wav" in problems
    assert f"{ids[1]}: unreadable wav" in problems
    assert f"{ids[2]}:" not in problems  # another rate is converted on load, as train does
    assert any("not 22050 Hz mono: training converts them on load" in n for n in result.notes)
    assert f"copy: same audio as {ids[3]}" in problems
    assert f"{ids[4]}: the audio path leaves the dataset folder" in problems  # a symlink out
    assert f"duplicate id {ids[5]}" in problems
    assert f"{ids[6]}_x: empty text" in problems
    assert "../../escape: the audio path leaves the dataset folder" in problems
    assert f"{outside.with_suffix('')}: the audio path leaves the dataset folder" in problems


# ------------------------------------------------------------------ CLI


def flat(res) -> str:
    return " ".join(res.output.split())


def test_cli_build_and_check(cli, workspace: Workspace, inputs) -> None:
    res = cli("build", "--val-fraction", "0.25", "--seed", "3")
    assert res.exit_code == 0, res.output
    out = flat(res)
    assert "train" in out and "dropped: too_long" in out and "dropped.jsonl" in out
    from xttsft.data.build import split_ids

    ids = [r[0] for r in meta_rows(workspace.dataset_dir / "metadata.csv")]
    val = sorted(r[0] for r in meta_rows(workspace.dataset_dir / "metadata_val.csv"))
    assert val == split_ids(ids, 0.25, seed=3)[1] and 1 <= len(val) < len(ids)
    res = cli("build", "--val-fraction", "0.25", "--seed", "3")
    assert res.exit_code == 0 and "nothing rewritten" in flat(res)

    res = cli("build", "--check", str(workspace.dataset_dir))
    assert res.exit_code == 0 and "OK" in res.output
    (workspace.dataset_dir / "wavs" / "talk_0001.wav").unlink()
    res = cli("build", "--check", str(workspace.dataset_dir))
    assert res.exit_code == 1 and "talk_0001: missing wav" in flat(res) and "training would use" in flat(res)


def test_cli_build_without_transcripts_and_bad_settings(cli, tmp_path: Path) -> None:
    res = cli("build", workdir=tmp_path / "empty")
    assert res.exit_code == 1 and "xttsft transcribe" in flat(res) and "Traceback" not in res.output
    res = cli("build", "--val-fraction", "1.5", workdir=tmp_path / "empty")
    assert res.exit_code == 1 and "--val-fraction" in flat(res)
    res = cli("build", "--check", str(tmp_path / "nowhere"))
    assert res.exit_code == 1 and "not a folder" in flat(res)


def test_a_long_fluent_clip_is_kept_by_build_and_taken_by_train(workspace: Workspace, speech_bank) -> None:
    """Issue 22: without a local vocabulary build dropped a fluent 13.3 s clip ("244 characters > 200"),
    which train's 402-token limit accepts. One limit now, the model's: build keeps it, and build --check
    (train's own reading of the dataset) takes it."""
    from test_build import make_inputs
    from xttsft.data.build import build_dataset, check_dataset
    from xttsft.records import TranscriptRecord, read_records, write_records

    workspace.ensure()
    make_inputs(workspace, speech_bank)
    long_text = (
        "Numa tarde de domingo, a família inteira se reuniu na casa da avó para comer bolo de fubá, "
        "contar histórias antigas e ouvir as músicas que tocavam no rádio quando todos eram jovens, "
        "até que o sol se pôs devagar atrás das montanhas azuis."
    )
    assert 230 < len(long_text) < 260
    rows = read_records(workspace.transcripts_file, TranscriptRecord)
    for r in rows:
        if r.id == "talk_0004":
            r.text, r.language = long_text, "en"
    write_records(workspace.transcripts_file, TranscriptRecord, rows)
    result = build_dataset(BuildSettings(), workspace, max_audio_seconds=15.0)
    kept = {r[0]: r for r in meta_rows(workspace.dataset_dir / "metadata.csv")}
    assert result.token_check == "characters" and "talk_0004" in kept
    check = check_dataset(workspace.dataset_dir, base_model="tiny", language="en")
    assert check.ok, check.problems
