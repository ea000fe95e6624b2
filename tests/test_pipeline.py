"""run-all: stages in order, skipped when up to date, redone when inputs or settings change."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from xttsft.cli import app
from xttsft.errors import InputError
from xttsft.pipeline import STAGES, stage_range

runner = CliRunner()


def _run(ws: Path, *args: str, env: dict[str, str] | None = None):
    return runner.invoke(app, ["--workdir", str(ws), "run-all", *args], env=env, catch_exceptions=False)


def _statuses(output: str) -> dict[str, str]:
    """{stage: done|skipped|failed} from the per-stage lines run-all prints."""
    found = {}
    for line in output.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0] in STAGES and parts[1] in ("done", "skipped", "failed"):
            found[parts[0]] = parts[1]
    return found


def test_stage_range() -> None:
    assert stage_range(None, None) == list(STAGES)
    assert stage_range("segment", "build") == ["segment", "transcribe", "build"]
    with pytest.raises(InputError, match="Unknown stage"):
        stage_range("segmnt", None)
    with pytest.raises(InputError, match="comes after"):
        stage_range("train", "fetch")


def test_run_all_without_sources_says_what_to_do(tmp_path: Path) -> None:
    res = _run(tmp_path / "empty", "--until", "segment")
    assert res.exit_code == 1
    assert "No sources and no audio" in res.output
    assert "Traceback" not in res.output


@pytest.fixture(scope="module")
def demo_ws(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo pipeline up to the dataset (real espeak-ng speech, Silero VAD, tiny.en Whisper)."""
    ws = tmp_path_factory.mktemp("runall") / "ws"
    res = _run(ws, "--demo", "--until", "build")
    assert res.exit_code == 0, res.output
    assert _statuses(res.output) == {s: "done" for s in ("doctor", "fetch", "segment", "transcribe", "build")}
    return ws


def test_demo_builds_a_dataset(demo_ws: Path) -> None:
    ds = demo_ws / "train" / "data" / "MyTTSDataset"
    stats = json.loads((ds / "stats.json").read_text())
    assert stats["language"] == "en"
    assert stats["samples"]["train"] >= 10 and stats["samples"]["val"] >= 1
    rows = (ds / "metadata_train.csv").read_text().splitlines()
    assert all(len(r.split("|")) == 3 for r in rows)
    # tiny.en heard the demo sentences: a few of their words must be in the transcripts
    text = " ".join(r.split("|")[1].lower() for r in rows)
    for word in ("garden", "library", "river", "language"):
        assert word in text


def test_rerun_skips_everything_up_to_date(demo_ws: Path) -> None:
    res = _run(demo_ws, "--demo", "--until", "build")
    assert res.exit_code == 0, res.output
    st = _statuses(res.output)
    assert st["segment"] == st["transcribe"] == st["build"] == "skipped"
    assert "train" in res.output and "val" in res.output  # the summary is read from disk


def test_changed_setting_redoes_from_that_stage(demo_ws: Path) -> None:
    res = _run(demo_ws, "--demo", "--from", "segment", "--until", "build", env={"BUILD_SEED": "7"})
    assert res.exit_code == 0, res.output
    st = _statuses(res.output)
    assert st["segment"] == "skipped" and st["transcribe"] == "skipped"
    assert st["build"] == "done"


@pytest.mark.slow
def test_train_export_then_skip(demo_ws: Path) -> None:
    env = {"TRAIN_NUM_EPOCHS": "1", "TRAIN_RUN_NAME": "pipe"}
    res = _run(demo_ws, "--demo", "--from", "train", "--until", "export", env=env)
    assert res.exit_code == 0, res.output
    assert _statuses(res.output) == {"train": "done", "export": "done"}
    assert (demo_ws / "train" / "checkpoints" / "pipe" / "best_model" / "meta.json").is_file()
    assert (demo_ws / "train" / "exports" / "pipe" / "model.pth").is_file()
    again = _run(demo_ws, "--demo", "--from", "train", "--until", "export", env=env)
    assert again.exit_code == 0, again.output
    assert _statuses(again.output) == {"train": "skipped", "export": "skipped"}
