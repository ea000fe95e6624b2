"""The workspace survives kills, full disks, concurrent runs and hostile names (issue 12).

Every test reproduces a failure found by running the real CLI: kills are real SIGKILLs of
real ``xttsft`` processes at a chosen moment, a full disk is a real (small) tmpfs."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import tmpfs
from xttsft.io import read_jsonl
from xttsft.paths import Workspace

XTTSFT = [sys.executable, "-m", "xttsft"]
TEXTS = [
    "Hello there, my friend.",
    "The cat sat on the mat.",
    "Good morning to you.",
    "It is a sunny day.",
    "We like green apples.",
    "Open the red door now.",
    "Birds fly over the sea.",
    "This is the last one.",
]


def _dataset(root: Path, speak) -> Path:
    rows = []
    for i, text in enumerate(TEXTS):
        speak(text, root / "wavs" / f"clip_{i:04d}.wav", rate=170)
        rows.append(f"clip_{i:04d}|{text}|{text}")
    (root / "metadata_train.csv").write_text("\n".join(rows[:6]) + "\n")
    (root / "metadata_val.csv").write_text("\n".join(rows[6:]) + "\n")
    (root / "lang.txt").write_text("en\n")
    return root


@pytest.fixture(scope="module")
def dataset(tmp_path_factory, speak) -> Path:
    return _dataset(tmp_path_factory.mktemp("faults") / "ds", speak)


def _train_args(ws: Path, dataset: Path, *more: str) -> list[str]:
    return [
        *XTTSFT,
        "--workdir",
        str(ws),
        "train",
        "--base-model",
        "tiny",
        "--dataset-dir",
        str(dataset),
        "--batch-size",
        "1",
        "--grad-accum-steps",
        "1",
        "--print-step",
        "1",
        *more,
    ]


def _xttsft(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*XTTSFT, *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=600,
        env={**os.environ, "COLUMNS": "200", **(env or {})},
    )


@contextlib.contextmanager
def _running(
    args: list[str], ready: Path, timeout: float = 240.0, env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen]:
    """Start ``args``; yield once ``ready`` exists; SIGKILL the process at the end (if it still runs)."""
    fd, name = tempfile.mkstemp(suffix=".out")  # a file, not a pipe: a full pipe would block the process
    out = Path(name)
    with os.fdopen(fd, "w") as fh:
        proc = subprocess.Popen(
            args, stdout=fh, stderr=subprocess.STDOUT, text=True, env={**(env or os.environ), "COLUMNS": "200"}
        )
    try:
        t0 = time.monotonic()
        while not ready.exists():
            if proc.poll() is not None:
                pytest.fail(f"the process ended (rc {proc.returncode}) before {ready} appeared:\n{out.read_text()}")
            if time.monotonic() - t0 > timeout:
                pytest.fail(f"{ready} did not appear in {timeout:.0f} s")
            time.sleep(0.05)
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def _info_log(ws: Path) -> str:
    return (ws / "logs" / "info.log").read_text(encoding="utf-8")


# ------------------------------------------------------------------ kills and concurrent runs
def test_kill_before_the_first_save_restarts_the_run(tmp_path: Path, dataset: Path) -> None:
    ws = tmp_path / "ws"
    run = ws / "train" / "checkpoints" / "k"
    # killed as soon as the run is set up, before its first epoch ends (a finished epoch would leave a best
    # model, which a resume then starts from): no epoch checkpoint either, however slow the machine
    args = _train_args(ws, dataset, "--run-name", "k", "--num-epochs", "200", "--save-every-n-epochs", "1000")
    with _running(args, run / "settings.json") as p:
        time.sleep(0.05)
        p.send_signal(signal.SIGKILL)
    assert not (run / "resume_state").exists() and not list(run.glob("checkpoint_epoch_*"))
    # before: "no complete checkpoint... start it again without --resume", and run-all failed forever
    res = subprocess.run(
        _train_args(ws, dataset, "--run-name", "k", "--num-epochs", "1", "--resume"),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    assert "starting it again from the beginning" in _info_log(ws)
    assert (run / "best_model" / "meta.json").is_file()
    assert json.loads((run / "settings.json").read_text())["train"]["num_epochs"] == 1


def test_a_second_writer_is_refused_and_a_kill_resumes_from_resume_state(tmp_path: Path, dataset: Path) -> None:
    ws = tmp_path / "ws"
    run = ws / "train" / "checkpoints" / "c2"
    # no epoch checkpoint before the kill however slow the machine: only resume_state (every 2 steps) is saved
    env = {**os.environ, "TRAIN_SAVE_EVERY_N_STEPS": "2", "TRAIN_SAVE_EVERY_N_EPOCHS": "1000"}
    args = _train_args(ws, dataset, "--run-name", "c2", "--num-epochs", "500")
    with _running(args, run / "resume_state" / "meta.json", env=env) as first:
        second = subprocess.run(args, capture_output=True, text=True, timeout=600, env=env)
        out = " ".join((second.stdout + second.stderr).split())
        assert second.returncode == 1, out
        assert "is being written by another xttsft" in out and f"pid {first.pid}" in out, out
        assert first.poll() is None, "the first run goes on"
        first.send_signal(signal.SIGKILL)  # a power cut: no interrupt checkpoint
    meta = json.loads((run / "resume_state" / "meta.json").read_text())
    assert meta["step"] >= 2 and (run / "resume_state" / "training_state.pt").is_file()
    assert not list(run.glob("checkpoint_epoch_*")), "resume_state is apart from the user's checkpoints"
    # the lock died with its process: the resume runs, from resume_state, to the end of that epoch
    until = str(meta["epoch"] + 1)
    again = subprocess.run([*args[:-1], until, "--resume"], capture_output=True, text=True, timeout=600, env=env)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "from resume_state" in _info_log(ws)
    assert (run / f"checkpoint_epoch_{until}" / "meta.json").is_file()


def test_build_is_refused_while_another_holds_the_dataset(tmp_path: Path) -> None:
    ws = Workspace(tmp_path / "ws").ensure()
    lock = ws.locks_dir / "build-MyTTSDataset.lock"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            (
                "import sys, time\nfrom pathlib import Path\nfrom xttsft.locks import hold\n"
                f"with hold(Path({str(lock)!r}), 'x'):\n    print('held', flush=True)\n    time.sleep(600)\n"
            ),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        res = _xttsft("--workdir", str(ws.root), "build")
        out = " ".join((res.stdout + res.stderr).split())
        assert res.returncode == 1 and "is being written by another xttsft" in out and f"pid {holder.pid}" in out, out
        assert "Traceback" not in out
    finally:
        holder.kill()  # SIGKILL: the kernel drops the lock; no stale lock file is in the way
        holder.wait()
    res = _xttsft("--workdir", str(ws.root), "build")
    out = " ".join((res.stdout + res.stderr).split())
    assert "another xttsft" not in out and "No transcripts" in out, out


# ------------------------------------------------------------------ names
@pytest.mark.parametrize("name", ["../../evil", "ABSOLUTE", ".hidden", "-rf"])
def test_run_names_stay_inside_the_workspace(tmp_path: Path, dataset: Path, name: str) -> None:
    ws = tmp_path / "deep" / "ws"
    name = str(tmp_path / "evil-abs") if name == "ABSOLUTE" else name
    res = subprocess.run(
        _train_args(ws, dataset, "--run-name", name, "--num-epochs", "1"), capture_output=True, text=True, timeout=600
    )
    out = res.stdout + res.stderr
    assert res.returncode == 1 and "--run-name" in out and "plain folder name" in " ".join(out.split()), out
    assert not (tmp_path / "evil").exists() and not (tmp_path / "evil-abs").exists()
    assert not list(tmp_path.rglob("checkpoint_epoch_*"))


def test_names_from_the_environment_are_checked_too(cli, workspace) -> None:
    res = cli("config", env={"BUILD_DATASET_NAME": "../outside", "TRAIN_RUN_NAME": "/abs"})
    assert res.exit_code == 1
    assert "BUILD_DATASET_NAME" in res.output and "TRAIN_RUN_NAME" in res.output


# ------------------------------------------------------------------ a full disk
@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    with tmpfs(tmp_path / "disk", "80M") as mnt:
        yield mnt


def _fill(disk: Path, leave_bytes: int) -> Path:
    filler = disk / "filler.bin"
    free = shutil.disk_usage(disk).free
    with open(filler, "ab") as fh:  # appended: a second fill keeps the first
        chunk = b"\0" * (1 << 20)
        left = free - leave_bytes
        while left > 0:
            fh.write(chunk[: min(left, len(chunk))])
            left -= len(chunk)
    return filler


def test_build_on_a_full_disk_keeps_the_previous_dataset(small_disk: Path, speak) -> None:
    from test_build import make_inputs  # the inputs of a real build

    ws = Workspace(small_disk / "ws").ensure()
    bank = [
        speak(f"Sentence number {i} of the disk test.", small_disk / "bank" / f"s{i}.wav", rate=170) for i in range(6)
    ]
    make_inputs(ws, bank)
    ok = _xttsft("--workdir", str(ws.root), "build", "--min-samples", "1")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    before = {p.name: p.read_bytes() for p in ws.dataset_dir.rglob("*") if p.is_file()}
    _fill(small_disk, leave_bytes=200_000)
    res = _xttsft("--workdir", str(ws.root), "build", "--min-samples", "1", "--val-fraction", "0.3")
    out = " ".join((res.stdout + res.stderr).split())
    assert res.returncode == 1 and "Disk full" in out and "MB" in out and "Unexpected" not in out, out
    after = {p.name: p.read_bytes() for p in ws.dataset_dir.rglob("*") if p.is_file()}
    assert after == before, "the previous dataset is whole and unchanged"
    assert not [p for p in ws.data_dir.iterdir() if p.name.startswith(".")], "no partial dataset left behind"


def test_a_write_that_hits_a_full_disk_is_named_as_such(small_disk: Path) -> None:
    import numpy as np
    import soundfile as sf

    from xttsft.storage import disk_full_cause

    _fill(small_disk, leave_bytes=0)
    with pytest.raises(Exception) as info:  # libsndfile says only "System error."
        sf.write(str(small_disk / "x.wav"), np.zeros(22050 * 30, dtype="float32"), 22050)
    full = disk_full_cause(info.value, small_disk)
    assert full is not None and "Disk full" in full.message and str(small_disk) in full.message
    # through our atomic writer: the partial file is removed (the space is free again), and still it says why
    from xttsft.io import atomic_path
    from xttsft.storage import DiskFullError

    (small_disk / "x.wav").unlink(missing_ok=True)
    _fill(small_disk, leave_bytes=0)
    with pytest.raises(DiskFullError), atomic_path(small_disk / "y.wav") as tmp:
        sf.write(str(tmp), np.zeros(22050 * 30, dtype="float32"), 22050)
    assert not list(small_disk.glob(".y.*"))
    err = OSError(errno.ENOSPC, "No space left on device", str(small_disk / "y"))
    assert disk_full_cause(RuntimeError("wrapped"), None) is None
    wrapped = RuntimeError("save failed")
    wrapped.__cause__ = err
    assert disk_full_cause(wrapped, None) is not None


def test_training_on_a_full_disk_refuses_before_it_starts(small_disk: Path, dataset: Path) -> None:
    ws = small_disk / "ws"
    ws.mkdir()
    _fill(small_disk, leave_bytes=1 << 20)
    res = subprocess.run(
        _train_args(ws, dataset, "--run-name", "d", "--num-epochs", "1"), capture_output=True, text=True, timeout=600
    )
    out = " ".join((res.stdout + res.stderr).split())
    assert res.returncode == 1 and "Disk full: training needs about" in out and "MB" in out, out
    assert not list((ws / "train" / "checkpoints").glob("d/checkpoint_*"))


# ------------------------------------------------------------------ damaged and half-written checkpoints
@pytest.fixture(scope="module")
def trained(tmp_path_factory, dataset: Path) -> Path:
    """A finished LoRA run "r" (2 epochs, a checkpoint each) in a workspace."""
    ws = tmp_path_factory.mktemp("trained") / "ws"
    res = subprocess.run(
        _train_args(ws, dataset, "--run-name", "r", "--num-epochs", "2", "--save-every-n-epochs", "1"),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    return ws


def _copy_ws(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def test_adapter_export_of_a_truncated_adapter_is_refused(tmp_path: Path, trained: Path) -> None:
    ws = _copy_ws(trained, tmp_path / "ws")
    adapter = ws / "train" / "checkpoints" / "r" / "best_model" / "adapter_model.safetensors"
    adapter.write_bytes(adapter.read_bytes()[: adapter.stat().st_size // 2])
    res = _xttsft("--workdir", str(ws), "export", "--run", "r", "--adapter-only")
    out = " ".join((res.stdout + res.stderr).split())
    assert res.returncode == 1 and str(adapter) in out and "damaged" in out, out
    assert not (ws / "train" / "exports" / "r-adapter").exists()


def test_resume_falls_back_to_the_newest_loadable_state(tmp_path: Path, trained: Path, dataset: Path) -> None:
    ws = _copy_ws(trained, tmp_path / "ws")
    run = ws / "train" / "checkpoints" / "r"
    newest = run / "checkpoint_epoch_2" / "training_state.pt"
    newest.write_bytes(newest.read_bytes()[:1000])
    res = subprocess.run(
        _train_args(ws, dataset, "--run-name", "r", "--num-epochs", "3", "--save-every-n-epochs", "1", "--resume"),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    log = _info_log(ws)
    assert "Cannot resume from checkpoint_epoch_2" in log and "Resuming r from checkpoint_epoch_1" in log
    assert "fetch it again" not in log.split("Cannot resume from checkpoint_epoch_2", 1)[1]
    assert (run / "checkpoint_epoch_3" / "meta.json").is_file()


def test_leftovers_of_a_kill_are_cleaned_and_never_picked(tmp_path: Path, trained: Path, dataset: Path) -> None:
    ws = _copy_ws(trained, tmp_path / "ws")
    run = ws / "train" / "checkpoints" / "r"
    # a kill between the two renames of a best_model swap, after the folder was set aside half-written
    aside = run / ".best_model.old.4242"
    aside.mkdir()
    shutil.copy(run / "best_model" / "meta.json", aside / "meta.json")  # meta.json but no weights
    shutil.rmtree(run / "best_model")
    (run / ".checkpoint_epoch_3.tmp.abcd").mkdir()
    res = _xttsft("--workdir", str(ws), "export", "--run", "r", "--adapter-only")
    assert res.returncode == 0, res.stdout + res.stderr
    record = json.loads((ws / "train" / "exports" / "r-adapter" / "xttsft_adapter.json").read_text())
    assert record["checkpoint"] == "checkpoint_epoch_2", "the incomplete folder is never picked"
    again = subprocess.run(
        _train_args(ws, dataset, "--run-name", "r", "--num-epochs", "2", "--resume"),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert again.returncode == 0, again.stdout + again.stderr
    assert not aside.exists() and not (run / ".checkpoint_epoch_3.tmp.abcd").exists()


def test_second_ctrl_c_during_the_interrupt_save_still_ends_cleanly(
    tmp_path: Path, dataset: Path, monkeypatch, caplog
) -> None:
    from xttsft.settings import load_settings
    from xttsft.training.train import TrainHooks, train

    ws = Workspace(tmp_path / "ws")
    settings, _ = load_settings(
        ws,
        flags={
            "train": {
                "base_model": "tiny",
                "dataset_dir": str(dataset),
                "batch_size": 1,
                "grad_accum_steps": 1,
                "run_name": "cc",
                "num_epochs": 3,
            }
        },
        environ={},
    )

    def first_ctrl_c(epoch, bi, step):
        if bi == 1:
            raise KeyboardInterrupt

    def second_ctrl_c(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr("xttsft.model.write_checkpoint", second_ctrl_c)  # Ctrl-C again while saving
    try:
        res = train(settings, ws, hooks=TrainHooks(after_batch=first_ctrl_c))
    except KeyboardInterrupt:
        pytest.fail("the second Ctrl-C escaped train(): the CLI then said 'run the same command again'")
    assert res.status == "interrupted"
    assert "Second Ctrl-C" in caplog.text
    monkeypatch.undo()
    again = train(settings, ws, resume=True)  # what the CLI then tells the user to run
    assert again.status == "finished" and again.resumed_from is None


# ------------------------------------------------------------------ settings that used to slip through
def test_non_utf8_env_file_names_the_file_and_line(cli, workspace) -> None:
    workspace.root.mkdir(parents=True, exist_ok=True)
    (workspace.root / ".env").write_bytes(b"TRAIN_NUM_EPOCHS=3\nTRAIN_RUN_NAME=caf\xe9\n")
    res = cli("config")
    assert res.exit_code == 1 and ".env:2" in res.output and "UTF-8" in res.output
    assert "Unexpected" not in res.output


def test_infinite_learning_rate_and_oversized_lora_rank_are_refused(tmp_path: Path, dataset: Path, cli) -> None:
    res = cli("config", env={"TRAIN_LEARNING_RATE": "inf"})
    assert res.exit_code == 1 and "TRAIN_LEARNING_RATE" in res.output and "finite" in res.output
    res = subprocess.run(
        _train_args(tmp_path / "ws", dataset, "--run-name", "big", "--num-epochs", "1", "--lora-rank", "512"),
        capture_output=True,
        text=True,
        timeout=600,
    )
    out = " ".join((res.stdout + res.stderr).split())
    assert res.returncode == 1 and "TRAIN_LORA_RANK=512 is larger than the GPT's width" in out, out


# ------------------------------------------------------------------ transcribe memory
def test_transcribe_loads_one_part_of_a_source_at_a_time(tmp_path: Path, speak, monkeypatch) -> None:
    """A 10-hour source must not sit in memory whole: clips load CHECKPOINT_CLIPS at a time."""
    from test_transcribe import tiny_en_path  # the bundled tiny.en Whisper
    from xttsft.data import transcribe as tr
    from xttsft.settings import TranscribeSettings

    ws = Workspace(tmp_path / "ws").ensure()
    wav = speak("Hello there, this is a clip.", tmp_path / "one.wav", rate=170)
    rows = []
    for i in range(6):
        shutil.copy(wav, ws.segments_dir / f"long_{i:04d}.wav")
        rows.append(
            {
                "id": f"long_{i:04d}",
                "wav": f"long_{i:04d}.wav",
                "source": "train/data/raw/long.wav",
                "source_sha256": "0" * 64,
                "start": 2.0 * i,
                "end": 2.0 * i + 1.9,
                "duration": 1.9,
                "sample_rate": 22050,
                "peak_dbfs": -1.0,
                "loudness_dbfs": -20.0,
                "flags": [],
            }
        )
    ws.segments_manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    events: list[str] = []
    load, decode = tr._load_clip, tr.transcribe_clips
    monkeypatch.setattr(tr, "CHECKPOINT_CLIPS", 2)
    monkeypatch.setattr(tr, "_load_clip", lambda p: events.append("load") or load(p))
    monkeypatch.setattr(tr, "transcribe_clips", lambda *a, **k: events.append("decode") or decode(*a, **k))
    settings = TranscribeSettings(
        model=str(tiny_en_path()), language="en", device="cpu", compute_type="int8", batch_size=4
    )
    res = tr.transcribe_segments(settings, ws)
    assert res.transcribed == 6 and len(read_jsonl(ws.transcripts_file)) == 6
    first_decode = events.index("decode")
    assert events[:first_decode].count("load") <= 2, events  # before: all 6 clips loaded up front


def test_a_fresh_start_never_hides_a_saved_state_and_resume_needs_a_run(
    tmp_path: Path, trained: Path, dataset: Path
) -> None:
    ws = _copy_ws(trained, tmp_path / "ws")
    run = ws / "train" / "checkpoints" / "r"
    # a run killed in its first long epoch: only resume_state/ was saved
    os.replace(run / "checkpoint_epoch_1", run / "resume_state")
    shutil.rmtree(run / "checkpoint_epoch_2")
    shutil.rmtree(run / "best_model")
    res = subprocess.run(
        _train_args(ws, dataset, "--run-name", "r", "--num-epochs", "1"), capture_output=True, text=True, timeout=600
    )
    out = " ".join((res.stdout + res.stderr).split())
    assert res.returncode == 1 and "already exists with saved training" in out and "--resume" in out, out
    assert (run / "resume_state" / "training_state.pt").is_file()
    typo = subprocess.run(
        _train_args(ws, dataset, "--run-name", "rr", "--num-epochs", "1", "--resume"),
        capture_output=True,
        text=True,
        timeout=600,
    )
    out = " ".join((typo.stdout + typo.stderr).split())
    assert typo.returncode == 1 and "There is no run 'rr' to resume" in out, out
    assert not (ws / "train" / "checkpoints" / "rr").exists()


def test_build_cleans_what_a_killed_build_left(tmp_path: Path, speak) -> None:
    from test_build import make_inputs

    ws = Workspace(tmp_path / "ws").ensure()
    make_inputs(ws, [speak(f"Sentence number {i} of the test.", tmp_path / "bank" / f"s{i}.wav") for i in range(3)])
    half = ws.data_dir / ".MyTTSDataset.tmp.k1ll3d"
    (half / "wavs").mkdir(parents=True)
    (half / "wavs" / "x.wav").write_bytes(b"0" * 1000)
    res = _xttsft("--workdir", str(ws.root), "build", "--min-samples", "1")
    assert res.returncode == 0, res.stdout + res.stderr
    assert not half.exists() and (ws.dataset_dir / "stats.json").is_file()
