"""The workspace layout of the guide, owned by one module."""

from __future__ import annotations

from pathlib import Path

import pytest

from xttsft.paths import DEFAULT_DATASET_NAME, Workspace

# relative path under the workdir, as the guide lays it out
LAYOUT = {
    "config_file": "xttsft.toml",
    "logs_dir": "logs",
    "info_log": "logs/info.log",
    "error_log": "logs/error.log",
    "train_dir": "train",
    "data_dir": "train/data",
    "raw_dir": "train/data/raw",
    "processed_dir": "train/data/processed",
    "segments_dir": "train/data/processed/segments",
    "segments_manifest": "train/data/processed/segments/manifest.jsonl",
    "transcriptions_dir": "train/data/processed/transcriptions",
    "transcripts_file": "train/data/processed/transcriptions/transcripts.jsonl",
    "dataset_dir": "train/data/MyTTSDataset",
    "checkpoints_dir": "train/checkpoints",
    "tensorboard_dir": "train/runs",
    "outputs_dir": "outputs",
}


@pytest.mark.parametrize(("prop", "rel"), list(LAYOUT.items()))
def test_layout(tmp_path, prop, rel):
    ws = Workspace(tmp_path)
    assert getattr(ws, prop) == tmp_path.resolve() / rel


def test_run_folders(tmp_path):
    ws = Workspace(tmp_path)
    assert ws.run_dir("voice1") == tmp_path.resolve() / "train/checkpoints/voice1"
    assert ws.tensorboard_run_dir("voice1") == tmp_path.resolve() / "train/runs/voice1"


def test_env_files_lowest_precedence_first(tmp_path):
    ws = Workspace(tmp_path)
    assert ws.env_files == (tmp_path.resolve() / "train/.env", tmp_path.resolve() / ".env")


def test_dataset_name_is_configurable(tmp_path):
    assert DEFAULT_DATASET_NAME == "MyTTSDataset"
    assert Workspace(tmp_path, dataset_name="Ana").dataset_dir == tmp_path.resolve() / "train/data/Ana"


def test_root_is_absolute_and_user_expanded(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert Workspace(Path("ws")).root == tmp_path.resolve() / "ws"
    monkeypatch.setenv("HOME", str(tmp_path))
    assert Workspace(Path("~/x")).root == tmp_path.resolve() / "x"


def test_ensure_creates_stage_folders_idempotently(tmp_path):
    ws = Workspace(tmp_path / "new")
    assert ws.ensure() is ws
    ws.ensure()
    for d in (ws.logs_dir, ws.raw_dir, ws.segments_dir, ws.transcriptions_dir, ws.checkpoints_dir, ws.tensorboard_dir):
        assert d.is_dir()


def test_latest_run(tmp_path):
    import os

    ws = Workspace(tmp_path)
    assert ws.latest_run() is None
    ws.checkpoints_dir.mkdir(parents=True)
    assert ws.latest_run() is None
    for i, name in enumerate(("a", "b", ".tmp-c")):
        (ws.checkpoints_dir / name).mkdir()
        os.utime(ws.checkpoints_dir / name, (1000 + i, 1000 + i))
    assert ws.latest_run() == "b"  # hidden folders (partial runs) are skipped


def test_paths_live_under_the_workdir(tmp_path):
    ws = Workspace(tmp_path)
    for prop in LAYOUT:
        assert getattr(ws, prop).is_relative_to(ws.root)
