"""xttsft train on the tiny random XTTS and a small espeak-ng LJSpeech dataset.

Real coqui GPT/DVAE, real PEFT, real files; runs are shared through module fixtures
to keep the file within a few minutes on 2 cores."""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import soundfile as sf

from xttsft.errors import DatasetError, SettingsError
from xttsft.paths import Workspace
from xttsft.settings import load_settings
from xttsft.training.train import TrainHooks, TrainingError
from xttsft.training.train import train as run_train

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


def _write_dataset(root: Path, speak, n_train: int = 6, n_val: int = 2, max_audio_seconds: float = 15.0) -> Path:
    wavs = root / "wavs"
    rows = []
    for i, text in enumerate(TEXTS[: n_train + n_val]):
        sid = f"clip_{i:04d}"
        speak(text, wavs / f"{sid}.wav", rate=170)
        rows.append(f"{sid}|{text}|{text}")
    (root / "metadata.csv").write_text("\n".join(rows) + "\n")
    (root / "metadata_train.csv").write_text("\n".join(rows[:n_train]) + "\n")
    (root / "metadata_val.csv").write_text("\n".join(rows[n_train:]) + ("\n" if n_val else ""))
    (root / "stats.json").write_text(
        json.dumps(
            {"language": "en", "max_audio_seconds": max_audio_seconds, "samples": {"train": n_train, "val": n_val}}
        )
    )
    return root


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory, speak) -> Path:
    return _write_dataset(tmp_path_factory.mktemp("ds") / "MyTTSDataset", speak)


def _settings(ws: Workspace, dataset: Path, env: dict[str, str] | None = None, **flags_):
    flags = {
        "base_model": "tiny",
        "dataset_dir": str(dataset),
        "batch_size": 3,
        "grad_accum_steps": 1,
        "print_step": 1,
        "warmup_steps": 1,
        **flags_,
    }
    return load_settings(ws, flags={"train": flags}, environ=env or {})


def _run(tmp: Path, dataset: Path, env=None, resume=False, hooks=None, allow_changed_dataset=False, **flags_):
    """train() as the CLI calls it: these flags (and ``env``) set, the rest defaults."""
    ws = Workspace(tmp)
    settings, provenance = _settings(ws, dataset, env, **flags_)
    return run_train(
        settings, ws, resume=resume, provenance=provenance, hooks=hooks, allow_changed_dataset=allow_changed_dataset
    ), ws


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory, dataset):
    # env vars drive the run: TRAIN_NUM_EPOCHS and TRAIN_SAVE_EVERY_N_EPOCHS
    env = {"TRAIN_NUM_EPOCHS": "6", "TRAIN_SAVE_EVERY_N_EPOCHS": "2", "TRAIN_KEEP_LAST_CHECKPOINTS": "2"}
    return _run(tmp_path_factory.mktemp("lora"), dataset, env, run_name="lora")


@pytest.fixture(scope="module")
def full_run(tmp_path_factory, dataset):
    env = {
        "TRAIN_USE_LORA": "false",
        "TRAIN_NUM_EPOCHS": "6",
        "TRAIN_SAVE_EVERY_N_EPOCHS": "3",
        "TRAIN_GRADIENT_CHECKPOINTING": "true",
    }
    return _run(tmp_path_factory.mktemp("full"), dataset, env, run_name="full")


@pytest.mark.parametrize("which", ["lora_run", "full_run"])
def test_overfits_a_handful_of_samples(request, which) -> None:
    result, _ = request.getfixturevalue(which)
    assert result.status == "finished" and result.epochs_completed == 6
    losses = result.epoch_train_losses
    assert all(math.isfinite(x) for x in losses)
    # real learning: a clear drop of the training loss (random init starts at ~ln(1026) = 6.9)
    assert losses[-1] < losses[0] - 0.5, losses
    assert result.epoch_val_losses[-1] < result.epoch_val_losses[0], result.epoch_val_losses


def test_env_vars_change_mode_epochs_and_checkpoints(lora_run, full_run) -> None:
    lora, _ = lora_run
    full, _ = full_run
    assert lora.mode == "lora" and full.mode == "full"
    assert lora.trainable_params < 0.05 * lora.total_params
    assert full.trainable_params == full.total_params
    # TRAIN_SAVE_EVERY_N_EPOCHS=2 and keep last 2 -> epochs 4 and 6; =3 -> 3 and 6
    assert [p.name for p in lora.checkpoints] == ["checkpoint_epoch_4", "checkpoint_epoch_6"]
    assert [p.name for p in full.checkpoints] == ["checkpoint_epoch_3", "checkpoint_epoch_6"]


def test_run_folder_checkpoints_and_tensorboard(lora_run, full_run) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    result, ws = lora_run
    run = ws.run_dir("lora")
    for name in ("settings.json", "run.json", "loss_curve.png"):
        assert (run / name).is_file(), name
    info = json.loads((run / "run.json").read_text())
    assert info["base_model"] == "tiny" and info["mode"] == "lora" and info["language"] == "en"
    ck = run / "checkpoint_epoch_6"
    assert sorted(p.name for p in ck.iterdir()) == [
        "adapter_config.json",
        "adapter_model.safetensors",
        "meta.json",
        "training_state.pt",
    ]
    best = json.loads((run / "best_model" / "meta.json").read_text())
    assert best["epoch"] == result.best_epoch and best["val_loss"] == pytest.approx(min(result.epoch_val_losses))
    assert not (run / "best_model" / "training_state.pt").exists()  # the best model is weights only
    full, fws = full_run
    assert (fws.run_dir("full") / "checkpoint_epoch_6" / "gpt.safetensors").is_file()
    acc = EventAccumulator(str(ws.tensorboard_run_dir("lora")))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"train/loss", "train/avg_loss", "train/lr", "train/grad_norm", "epoch/train_loss", "epoch/val_loss"} <= tags
    assert len(acc.Scalars("epoch/val_loss")) == 6


def test_finetuned_run_loads_for_synthesis(lora_run) -> None:
    import torch

    from xttsft.model import load_finetuned, load_xtts

    _, ws = lora_run
    xtts, info = load_finetuned(ws.run_dir("lora"), "best")
    base = load_xtts(info.base_dir)
    w = "gpt.h.0.attn.c_attn.weight"
    assert not torch.allclose(
        xtts.gpt.gpt.state_dict()[w.removeprefix("gpt.")], base.gpt.gpt.state_dict()[w.removeprefix("gpt.")]
    )


def test_resume_equals_uninterrupted(tmp_path, dataset) -> None:
    import torch
    from safetensors.torch import load_file

    straight, ws1 = _run(tmp_path / "a", dataset, num_epochs=2, save_every_n_epochs=1, run_name="r")

    def interrupt(epoch, bi, step):  # Ctrl-C right after the last batch of epoch 1
        if epoch == 0 and bi == 1:
            raise KeyboardInterrupt

    first, ws2 = _run(
        tmp_path / "b",
        dataset,
        num_epochs=2,
        save_every_n_epochs=1,
        run_name="r",
        hooks=TrainHooks(after_batch=interrupt),
    )
    assert first.status == "interrupted"
    assert first.checkpoints, "Ctrl-C saved a checkpoint"
    second, _ = _run(tmp_path / "b", dataset, resume=True, num_epochs=2, save_every_n_epochs=1)
    assert second.run_name == "r" and second.resumed_from is not None
    assert second.global_step == straight.global_step and second.optimizer_steps == straight.optimizer_steps
    a = load_file(str(ws1.run_dir("r") / "checkpoint_epoch_2" / "adapter_model.safetensors"))
    b = load_file(str(ws2.run_dir("r") / "checkpoint_epoch_2" / "adapter_model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-6), k
    assert second.epoch_train_losses == pytest.approx(straight.epoch_train_losses, abs=1e-5)
    assert second.epoch_val_losses == pytest.approx(straight.epoch_val_losses, abs=1e-5)


def test_resume_inside_an_accumulation_window_counts_each_batch_once(tmp_path, dataset) -> None:
    # batch 1 x accum 2 over 6 clips: windows [0,1] [2,3] [4,5]; Ctrl-C after batch 2 (window open)
    flags = {"num_epochs": 1, "batch_size": 1, "grad_accum_steps": 2, "run_name": "w"}
    straight, _ = _run(tmp_path / "a", dataset, **flags)

    def interrupt(epoch, bi, step):
        if epoch == 0 and bi == 2:
            raise KeyboardInterrupt

    first, ws = _run(tmp_path / "b", dataset, hooks=TrainHooks(after_batch=interrupt), **flags)
    assert first.status == "interrupted"
    assert [p.name for p in first.checkpoints] == ["checkpoint_epoch_0_step_2"]
    state_meta = json.loads((ws.run_dir("w") / "checkpoint_epoch_0_step_2" / "meta.json").read_text())
    assert state_meta["step"] == 2 and state_meta["batch_in_epoch"] == 2
    second, _ = _run(tmp_path / "b", dataset, resume=True, **flags)
    assert second.global_step == straight.global_step == 6
    assert second.optimizer_steps == straight.optimizer_steps == 3
    assert second.epoch_train_losses == pytest.approx(straight.epoch_train_losses, abs=1e-5)
    assert second.epoch_val_losses == pytest.approx(straight.epoch_val_losses, abs=1e-5)


def test_failed_interrupt_save_is_reported_not_hidden(tmp_path, dataset, caplog, monkeypatch) -> None:
    import xttsft.model

    def interrupt(epoch, bi, step):
        raise KeyboardInterrupt

    def full_disk(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(xttsft.model, "write_checkpoint", full_disk)
    result, _ = _run(tmp_path, dataset, num_epochs=1, run_name="f", hooks=TrainHooks(after_batch=interrupt))
    assert result.status == "interrupted" and not result.checkpoints
    assert "Could not save the interrupt checkpoint" in caplog.text
    assert "continue with --resume" not in caplog.text


def _fake_gpus(monkeypatch, majors: list[int]):
    """Pretend torch sees GPUs with these compute-capability majors (24 GB each)."""
    import types

    import torch

    import xttsft.hardware as doctor

    facts = doctor.HardwareFacts(
        gpus=tuple(doctor.GpuFacts(i, f"gpu{i}", 24576, 24576, (m, 0)) for i, m in enumerate(majors)),
        cpu_count=4,
        ram_total_gib=64.0,
        gpu_source="test",
    )
    monkeypatch.setattr(doctor, "hardware_facts", lambda: facts)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: len(majors))
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)  # emulation counts: must not be asked
    monkeypatch.setattr(
        torch.cuda, "get_device_properties", lambda d: types.SimpleNamespace(major=majors[torch.device(d).index or 0])
    )
    monkeypatch.setattr(torch.version, "hip", None)
    monkeypatch.delenv("LOCAL_RANK", raising=False)


def test_bf16_follows_the_chosen_gpu_not_emulation(monkeypatch) -> None:
    from xttsft.settings import TrainSettings
    from xttsft.training.train import resolve_train_settings

    _fake_gpus(monkeypatch, [8, 7])  # an A100-class card 0, a V100/T4-class card 1
    on_old = resolve_train_settings(TrainSettings(device="cuda", cuda_device_id=1, use_amp=True))
    assert on_old.device == "cuda:1" and on_old.amp_dtype == "float16"
    on_new = resolve_train_settings(TrainSettings(device="cuda", cuda_device_id=0, use_amp=True))
    assert on_new.amp_dtype == "bfloat16"


def test_cpu_training_on_a_gpu_machine_uses_the_cpu_recommendation(monkeypatch) -> None:
    from xttsft.doctor import HardwareFacts, recommend
    from xttsft.settings import TrainSettings
    from xttsft.training.train import resolve_train_settings

    _fake_gpus(monkeypatch, [8])
    cpu_rec = recommend(HardwareFacts(cpu_count=4, ram_total_gib=64.0))
    res = resolve_train_settings(TrainSettings(device="cpu"))
    assert res.device == "cpu" and not res.use_amp
    assert (res.batch_size, res.grad_accum_steps, res.gradient_checkpointing) == (
        cpu_rec.train_batch_size,
        cpu_rec.grad_accum_steps,
        cpu_rec.gradient_checkpointing,
    )
    gpu = resolve_train_settings(TrainSettings(device="cuda"))
    assert gpu.batch_size != res.batch_size  # the 24 GB recommendation differs


def test_resume_refuses_a_checkpoint_that_does_not_fit(tmp_path, dataset) -> None:
    import torch
    from safetensors.torch import load_file, save_file

    from xttsft.errors import SettingsError

    _run(tmp_path, dataset, num_epochs=1, run_name="m")
    # another LoRA rank: every adapter tensor has the wrong shape
    with pytest.raises(SettingsError, match="does not fit this model") as err:
        _run(tmp_path, dataset, resume=True, num_epochs=2, run_name="m", lora_rank=4)
    assert "run.json" in err.value.hint
    # an adapter weight this model has no place for
    f = Workspace(tmp_path).run_dir("m") / "checkpoint_epoch_1" / "adapter_model.safetensors"
    sd = load_file(str(f))
    key = next(iter(sd))
    assert key.startswith("h.0."), key
    sd["h.99." + key.removeprefix("h.0.")] = torch.zeros_like(sd[key])
    save_file(sd, str(f))
    with pytest.raises(SettingsError, match=r"1 unexpected weights"):
        _run(tmp_path, dataset, resume=True, num_epochs=2, run_name="m")


def test_resume_with_other_learning_settings_says_which_and_how_to_keep_them(tmp_path, dataset, caplog) -> None:
    """A run started with the old LoRA dropout default (0.05) resumes with today's (0): said once, with the way back."""
    from xttsft.io import read_json

    _run(tmp_path, dataset, num_epochs=1, run_name="d", lora_dropout=0.05)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="xttsft"):
        _run(tmp_path, dataset, resume=True, num_epochs=2, run_name="d", lora_dropout=0.0)
    said = [r.getMessage() for r in caplog.records if "other settings" in r.getMessage()]
    assert len(said) == 1, said
    assert "lora_dropout 0.05 -> 0.0 (--lora-dropout)" in said[0] and "TRAIN_LORA_DROPOUT=0.05" in said[0]
    assert "num_epochs" not in said[0]  # more epochs is what resume is for
    assert read_json(Workspace(tmp_path).run_dir("d") / "settings.json")["train"]["lora_dropout"] == 0.0
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="xttsft"):  # nothing left to train: nothing said, nothing rewritten
        _run(tmp_path, dataset, resume=True, num_epochs=2, run_name="d", lora_dropout=0.05)
    assert not [r for r in caplog.records if "other settings" in r.getMessage()]
    assert read_json(Workspace(tmp_path).run_dir("d") / "settings.json")["train"]["lora_dropout"] == 0.0
    caplog.clear()
    lr = read_json(Workspace(tmp_path).run_dir("d") / "settings.json")["resolved"]["learning_rate"]
    with caplog.at_level(
        logging.WARNING, logger="xttsft"
    ):  # the same settings, auto's rate spelled out: nothing to say
        _run(tmp_path, dataset, resume=True, num_epochs=3, run_name="d", learning_rate=lr)
    assert not [r for r in caplog.records if "other settings" in r.getMessage()]


def test_resume_on_a_changed_dataset_is_refused_naming_what_changed(tmp_path, dataset, speak) -> None:
    """Issue 18: a clip added to the dataset re-shuffled the split and a resume silently validated on
    clips it had trained on. Now the run records its clips and split; a resume on another version of
    the dataset is refused naming what changed, and --allow-changed-dataset keeps the recorded split."""
    ds = Path(shutil.copytree(dataset, tmp_path / "ds"))
    _run(tmp_path / "ws", ds, num_epochs=1, run_name="c")
    train_rows = (ds / "metadata_train.csv").read_text().splitlines()
    val_rows = (ds / "metadata_val.csv").read_text().splitlines()
    speak("A new clip appears here.", ds / "wavs" / "clip_0100.wav", rate=170)
    train_rows[0] = train_rows[0].replace("my friend", "my dear friend")  # one text changed
    moved = val_rows.pop(0)  # a clip validated on before is a training clip now
    (ds / "metadata_train.csv").write_text("\n".join([*train_rows, moved, "clip_0100|A new clip appears here."]) + "\n")
    (ds / "metadata_val.csv").write_text("\n".join(val_rows) + "\n")
    with pytest.raises(DatasetError) as err:
        _run(tmp_path / "ws", ds, resume=True, num_epochs=2, run_name="c")
    assert "1 clip added, 1 text changed, 1 moved from val to train" in err.value.message, err.value.message
    assert "--run-name" in err.value.hint and "--allow-changed-dataset" in err.value.hint
    result, ws = _run(tmp_path / "ws", ds, resume=True, num_epochs=2, run_name="c", allow_changed_dataset=True)
    assert result.status == "finished" and (result.train_samples, result.val_samples) == (7, 2)
    recorded = json.loads((ws.run_dir("c") / "run.json").read_text())["dataset_fingerprint"]
    assert moved.split("|")[0] in recorded["val"] and "clip_0100" in recorded["train"]


def test_resume_reports_a_changed_batch_size_and_accumulation(tmp_path, dataset, caplog) -> None:
    """Issue 18: the resume warning listed learning settings but not the batch: an accumulation of 1
    became 16 without a word. Now both are compared (as resolved) and named with where they came from."""
    _run(tmp_path, dataset, num_epochs=1, run_name="g", batch_size=3, grad_accum_steps=1)
    with caplog.at_level(logging.WARNING, logger="xttsft"):
        _run(tmp_path, dataset, resume=True, num_epochs=2, run_name="g", batch_size=2, grad_accum_steps=2)
    said = [r.getMessage() for r in caplog.records if "other settings" in r.getMessage()]
    assert len(said) == 1, said
    assert "batch_size 3 -> 2 (--batch-size)" in said[0] and "grad_accum_steps 1 -> 2 (--grad-accum-steps)" in said[0]
    assert "TRAIN_GRAD_ACCUM_STEPS=1" in said[0]


def test_a_bare_resume_trains_as_the_run_did(tmp_path, dataset, caplog) -> None:
    """Issue 18: `train --run-name R --resume` forgot the run's --base-model (and tried to download
    XTTS-v2 offline), its epochs (a finished 5-epoch run went on towards 1000) and its batch. Now every
    setting not given takes the run's own; one given is said once."""
    from xttsft.io import read_json

    ws = Workspace(tmp_path)
    _run(tmp_path, dataset, num_epochs=2, run_name="own", batch_size=1, grad_accum_steps=2, lora_rank=4)
    settings, provenance = load_settings(ws, flags={"train": {"run_name": "own"}}, environ={})  # HF offline
    result = run_train(settings, ws, resume=True, provenance=provenance)
    assert (result.status, result.base_model, result.num_epochs, result.epochs_completed) == (
        "already finished",
        "tiny",
        2,
        2,
    )
    settings, provenance = load_settings(ws, flags={"train": {"run_name": "own", "num_epochs": 3}}, environ={})
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="xttsft"):
        result = run_train(settings, ws, resume=True, provenance=provenance)
    assert result.status == "finished" and result.epochs_completed == 3 and result.global_step == 18
    saved = read_json(ws.run_dir("own") / "settings.json")["train"]
    assert (saved["base_model"], saved["batch_size"], saved["grad_accum_steps"], saved["lora_rank"]) == (
        "tiny",
        1,
        2,
        4,
    )
    changed = [r.getMessage() for r in caplog.records if "last session" in r.getMessage()]
    assert changed == [
        "Run own continues with settings changed since its last session: num_epochs 2 -> 3 "
        "(--num-epochs). The learning-rate schedule is stretched to the new number of epochs."
    ]


def test_a_run_killed_after_its_first_best_model_resumes_from_it(tmp_path, dataset, caplog) -> None:
    """Issue 18: a run killed during epoch 2 (best_model saved, no training state yet) could neither be
    resumed ("no checkpoint with a training state") nor re-run ("continue it with --resume"). Now
    --resume starts from best_model's weights and says once what it could not restore."""
    from xttsft.model import resumable_states

    class Killed(Exception):
        pass

    def kill(epoch, bi, step):
        if epoch == 1:
            raise Killed

    flags = {"num_epochs": 3, "save_every_n_epochs": 10, "save_every_n_minutes": 0, "run_name": "b"}
    with pytest.raises(Killed):
        _run(tmp_path, dataset, hooks=TrainHooks(after_batch=kill), **flags)
    run = Workspace(tmp_path).run_dir("b")
    assert (run / "best_model" / "meta.json").is_file() and not resumable_states(run)
    with pytest.raises(SettingsError, match="already exists") as err:
        _run(tmp_path, dataset, **flags)
    assert "--resume (from its best_model of epoch 1" in err.value.hint
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="xttsft"):
        result, _ = _run(tmp_path, dataset, resume=True, **flags)
    assert result.status == "finished" and result.resumed_from == run / "best_model"
    assert result.epochs_completed == 3 and result.global_step == 6 and result.optimizer_steps == 6
    said = [r.getMessage() for r in caplog.records if "no saved training state" in r.getMessage()]
    assert len(said) == 1 and "AdamW" in said[0] and "meta.json" in said[0], said


def test_a_copied_workspace_reads_its_own_dataset(tmp_path, dataset) -> None:
    """Issue 18: run.json held the dataset's absolute path, so `eval` in a copy of the workspace read
    the original's dataset. A path inside the workspace is now stored relative to it."""
    from xttsft.model import read_run_info

    a = Workspace(tmp_path / "a")
    shutil.copytree(dataset, a.dataset_dir)
    _run(a.root, a.dataset_dir, num_epochs=1, run_name="cp")
    assert json.loads((a.run_dir("cp") / "run.json").read_text())["dataset_dir"] == "train/data/MyTTSDataset"
    shutil.copytree(a.root, tmp_path / "b")
    shutil.rmtree(a.root)  # the copy stands alone
    b = Workspace(tmp_path / "b")
    assert read_run_info(b.run_dir("cp")).dataset_dir == b.dataset_dir
    settings, provenance = load_settings(b, flags={"train": {"run_name": "cp", "num_epochs": 2}}, environ={})
    assert run_train(settings, b, resume=True, provenance=provenance).status == "finished"


def test_sigterm_saves_a_resumable_state_like_ctrl_c(tmp_path, dataset) -> None:
    """Issue 18: job schedulers, timeout, docker stop and systemd send SIGTERM, which saved nothing.
    A real `xttsft train` process gets a real SIGTERM mid-epoch: it saves as on Ctrl-C and exits 143."""
    import signal
    import time

    from xttsft.model import resumable_states

    ws = tmp_path / "ws"
    args = [
        sys.executable,
        "-m",
        "xttsft",
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
        "--num-epochs",
        "200",
        "--run-name",
        "t",
        "--save-every-n-minutes",
        "0",
    ]
    out = tmp_path / "out.txt"
    with out.open("w") as fh:  # a file, not a pipe: a full pipe would block the process
        proc = subprocess.Popen(args, stdout=fh, stderr=subprocess.STDOUT, env={**os.environ, "COLUMNS": "200"})
    try:
        info_log, t0 = ws / "logs" / "info.log", time.monotonic()
        while not (info_log.is_file() and "Epoch 1/200 | Step 2/" in info_log.read_text()):
            assert proc.poll() is None, out.read_text()
            assert time.monotonic() - t0 < 300, "training did not start"
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = " ".join(out.read_text().split())
    assert rc == 143, text[-3000:]
    assert "Terminated (SIGTERM)" in text and "Traceback" not in text
    states = resumable_states(Workspace(ws).run_dir("t"))
    assert states and states[-1].path.name.startswith("checkpoint_epoch_"), states


def test_failed_save_leaves_previous_checkpoint_loadable(tmp_path, dataset, monkeypatch) -> None:
    import torch

    from xttsft.model import find_checkpoint, load_finetuned

    _run(tmp_path, dataset, num_epochs=1, run_name="k")

    def fail(*a, **k):  # training_state.pt is written after the weights
        raise RuntimeError("injected failure after writing the weights")

    monkeypatch.setattr(torch, "save", fail)
    with pytest.raises(RuntimeError, match="injected"):
        _run(tmp_path, dataset, resume=True, num_epochs=2, run_name="k")
    monkeypatch.undo()
    run = Workspace(tmp_path).run_dir("k")
    assert not (run / "checkpoint_epoch_2").exists()
    assert not [p for p in run.iterdir() if p.name.startswith(".")], "no temporary folders left"
    assert find_checkpoint(run, "latest").path.name == "checkpoint_epoch_1"
    load_finetuned(run, "latest")


def test_test_sentences_reach_tensorboard(tmp_path, dataset) -> None:
    """Real models log test audio at each evaluation; forced here on the tiny model."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    result, ws = _run(tmp_path, dataset, num_epochs=1, run_name="audio", hooks=TrainHooks(force_test_audio=True))
    acc = EventAccumulator(str(ws.tensorboard_run_dir("audio")))
    acc.Reload()
    assert {"test/audio_0", "test/audio_1"} <= set(acc.Tags()["audio"])
    assert acc.Audio("test/audio_0")[0].sample_rate == 24000


def test_merged_state_equals_peft_merge(tiny_gpt_pair) -> None:
    import torch

    from xttsft.model import merge_lora, merged_gpt_state

    gpt = tiny_gpt_pair
    sd = merged_gpt_state(gpt, "lora")
    merge_lora(gpt)
    ref = gpt.state_dict()
    assert set(sd) == set(ref)
    for k in ref:
        assert torch.allclose(sd[k], ref[k], atol=1e-6), k


@pytest.fixture
def tiny_gpt_pair():
    import torch

    from xttsft.model import attach_lora, load_xtts, resolve_base_model
    from xttsft.settings import TrainSettings

    xtts = load_xtts(resolve_base_model("tiny"), for_training=True, keep_decoder=False)
    attach_lora(xtts.gpt, TrainSettings())
    with torch.no_grad():
        for n, p in xtts.gpt.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.1)
    return xtts.gpt


def test_nan_loss_is_skipped_and_a_streak_stops(tmp_path, dataset) -> None:
    import torch

    def one_nan(loss, step):
        return loss * float("nan") if step == 0 else loss

    result, ws = _run(tmp_path / "a", dataset, num_epochs=1, run_name="n", hooks=TrainHooks(loss_filter=one_nan))
    assert result.nan_skipped == 1 and result.status == "finished"
    assert math.isnan(result.step_losses[0]) and math.isfinite(result.step_losses[1])
    from safetensors.torch import load_file

    for v in load_file(str(ws.run_dir("n") / "best_model" / "adapter_model.safetensors")).values():
        assert torch.isfinite(v).all()
    with pytest.raises(TrainingError, match="2 non-finite losses in a row"):
        _run(
            tmp_path / "b",
            dataset,
            {"TRAIN_MAX_NAN_STEPS": "2"},
            num_epochs=1,
            run_name="n",
            hooks=TrainHooks(loss_filter=lambda loss, step: loss * float("inf")),
        )


def test_bad_samples_are_counted_not_replaced(tmp_path, speak) -> None:
    from xttsft.data.datasets import read_dataset
    from xttsft.model import load_xtts, model_limits, resolve_base_model
    from xttsft.training.train import prepare_data

    ds = _write_dataset(tmp_path / "ds", speak, max_audio_seconds=1.5)
    rows = (ds / "metadata_train.csv").read_text().splitlines()
    rows.append("clip_9999|a missing file|a missing file")
    rows.append("clip_0003|中文 text|中文 text")  # an id twice: refused, never read as another sample
    (ds / "wavs" / "clip_0000.wav").rename(ds / "wavs" / "clip_0010.wav")
    rows = [r.replace("clip_0000|", "clip_0010|") for r in rows]
    rows.append("clip_0011|中文 text|中文 text")
    x, sr = sf.read(str(ds / "wavs" / "clip_0001.wav"), dtype="float32")
    sf.write(str(ds / "wavs" / "clip_0011.wav"), x * 0.5, sr)  # other audio: not a duplicate
    (ds / "metadata_train.csv").write_text("\n".join(rows) + "\n")
    xtts = load_xtts(resolve_base_model("tiny"), for_training=True, keep_decoder=False)
    rep = prepare_data(read_dataset(ds), xtts.tokenizer, xtts.args.gpt_max_audio_tokens, xtts.args.gpt_max_text_tokens)
    assert rep.dropped["missing wav"] == ["train:clip_9999"]
    assert rep.dropped["refused: duplicate id clip_0003"] == ["metadata_train.csv:8: clip_0003"]
    assert rep.dropped["[UNK] tokens (characters outside the vocabulary)"] == ["train:clip_0011"]
    # the limit is the model's (the tiny GPT: 11.5 s), not the 1.5 s stats.json claims
    assert rep.max_wav_length == model_limits(xtts.args.gpt_max_audio_tokens)
    assert not any(r.startswith("longer than") for r in rep.dropped)
    assert rep.max_text_length == max(len(s.tokens) for s in rep.train + rep.val)


LONG_TEXTS = [
    "The quick brown fox jumps over the lazy dog, and then it runs far away into the deep green forest.",
    "Every morning we walk along the river to the old bridge, where the boats wait for the tide to turn.",
]


def test_short_sentences_train_and_are_conditioned_on_long_clips(tmp_path, speak) -> None:
    """Short sentences (1.2-1.7 s, as segment's short_share keeps) beside long clips train without a NaN; every
    sample is conditioned on a 3-6 s slice of a long clip, and clips under 3 s condition only when nothing longer
    is there."""
    from xttsft.data.datasets import Sample
    from xttsft.training.train_data import MIN_CONDITIONING, ClipDataset

    ds = _write_dataset(tmp_path / "ds", speak, n_train=3, n_val=1)
    rows = (ds / "metadata_train.csv").read_text().splitlines()
    for k, text in enumerate(LONG_TEXTS):
        speak(text, ds / "wavs" / f"long_{k}.wav", rate=150)
        rows.append(f"long_{k}|{text}|{text}")
    (ds / "metadata_train.csv").write_text("\n".join(rows) + "\n")
    result, _ = _run(tmp_path / "ws", ds, num_epochs=2, batch_size=2, run_name="short")
    assert result.status == "finished" and result.epochs_completed == 2
    assert (result.train_samples, result.val_samples, result.dropped) == (5, 1, {})
    assert all(math.isfinite(x) for x in result.epoch_train_losses + result.epoch_val_losses + result.step_losses)

    wavs = sorted((ds / "wavs").glob("*.wav"))
    samples = [Sample(w.stem, w, "x", [1], sf.info(str(w)).frames) for w in wavs]
    lengths = {s.id: s.n_samples for s in samples}
    assert (
        sum(n < MIN_CONDITIONING for n in lengths.values()) >= 3
        and sum(n >= 2 * MIN_CONDITIONING for n in lengths.values()) == 2
    )
    for is_eval in (False, True):
        data = ClipDataset(samples, seed=1, is_eval=is_eval)
        for epoch in range(3):
            data.epoch = epoch
            for i in range(len(samples)):
                assert MIN_CONDITIONING <= int(data[i]["cond_lens"]) <= data[i]["conditioning"].shape[-1]
    shorts = [s for s in samples if s.n_samples < MIN_CONDITIONING]
    item = ClipDataset(shorts, seed=1, is_eval=False)[0]
    assert int(item["cond_lens"]) < MIN_CONDITIONING  # nothing longer: a short clip conditions, whole


def test_data_loader_workers_draw_the_same_batches(tmp_path, dataset) -> None:
    """TRAIN_NUM_WORKERS reads the clips in worker processes; every sample's randomness depends only
    on (seed, epoch, index), so the losses are those of the in-process loader."""
    inline, _ = _run(tmp_path / "a", dataset, num_epochs=1, run_name="w0", num_workers=0)
    workers, _ = _run(tmp_path / "b", dataset, num_epochs=1, run_name="w2", num_workers=2)
    assert workers.step_losses == pytest.approx(inline.step_losses, abs=1e-6)


def test_resume_inside_an_epoch_refuses_other_batches(tmp_path, dataset) -> None:
    flags = {"num_epochs": 1, "batch_size": 1, "grad_accum_steps": 1, "run_name": "lay"}

    def interrupt(epoch, bi, step):
        if epoch == 0 and bi == 1:
            raise KeyboardInterrupt

    first, _ = _run(tmp_path, dataset, hooks=TrainHooks(after_batch=interrupt), **flags)
    assert first.status == "interrupted"
    with pytest.raises(
        SettingsError, match=r"saved inside an epoch, and its batches would differ now \(batch_size 1 -> 2"
    ):
        _run(tmp_path, dataset, resume=True, **{**flags, "batch_size": 2})


def test_empty_val_split_is_refused_with_the_cause(tmp_path, speak) -> None:
    ds = _write_dataset(tmp_path / "ds", speak, n_train=2, n_val=0)
    with pytest.raises(DatasetError, match="val split .* is empty: it has no usable rows"):
        _run(tmp_path / "ws", ds, num_epochs=1)


def test_cli_train_tiny_and_bad_dataset(cli, workspace, dataset) -> None:
    r = cli(
        "train",
        "--base-model",
        "tiny",
        "--dataset-dir",
        str(dataset),
        "--num-epochs",
        "1",
        "--run-name",
        "cli",
        "--batch-size",
        "3",
        "--print-step",
        "1",
    )
    assert r.exit_code == 0, r.output
    assert "Run cli" in r.output and "noise" in r.output
    assert (workspace.run_dir("cli") / "best_model" / "meta.json").is_file()
    info_log = workspace.info_log.read_text()
    assert "Epoch 1/1 | Step 1/2 | Loss:" in info_log and "trainable" in info_log
    r = cli(
        "train",
        "--base-model",
        "tiny",
        "--run-name",
        "cli",
        "--num-epochs",
        "1",
        "--batch-size",
        "3",
        "--dataset-dir",
        str(dataset),
    )
    out = " ".join(r.output.split())
    assert r.exit_code == 1 and "already exists" in out and "--resume" in out
    r = cli("train", "--base-model", "tiny", "--dataset-dir", str(workspace.root / "nope"), "--run-name", "x")
    out = " ".join(r.output.split())
    assert r.exit_code == 1
    assert "does not exist" in out and "xttsft build" in out and "Traceback" not in out


@pytest.mark.slow
def _torchrun(
    tmp_path: Path,
    dataset: Path,
    *,
    nproc: int,
    port: int,
    run: str,
    device: str,
    epochs: int = 1,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess:
    """``torchrun --nproc_per_node N xttsft train`` on the tiny model, with only ``env``'s TRAIN_ variables."""
    xttsft = shutil.which("xttsft") or str(Path(sys.executable).parent / "xttsft")
    base = {k: v for k, v in os.environ.items() if not k.startswith("TRAIN_")}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc), "--master_port", str(port),
           xttsft, "--workdir", str(tmp_path), "train", "--base-model", "tiny", "--dataset-dir", str(dataset),
           "--num-epochs", str(epochs), "--run-name", run, "--device", device]  # fmt: skip
    return subprocess.run(cmd, env={**base, **(env or {})}, capture_output=True, text=True, timeout=300)


def test_ddp_two_processes_gloo(tmp_path, dataset) -> None:
    """Data-parallel training through torchrun: 2 CPU processes, gloo backend."""
    env = {"OMP_NUM_THREADS": "1", "TRAIN_BATCH_SIZE": "2", "TRAIN_GRAD_ACCUM_STEPS": "1"}
    p = _torchrun(tmp_path, dataset, nproc=2, port=29517, run="ddp", device="cpu", env=env)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    out = p.stdout + p.stderr
    assert "x 2 processes (DDP)" in out
    # issue 18: only rank 0 speaks to the user; another rank's warnings say whose they are
    assert out.count("Run ddp (finished)") == 1, out[-3000:]
    assert "[rank 1] " in out and "[rank 0]" not in out
    run = Workspace(tmp_path).run_dir("ddp")
    assert (run / "checkpoint_epoch_1" / "meta.json").is_file()
    meta = json.loads((run / "checkpoint_epoch_1" / "meta.json").read_text())
    assert meta["step"] == 2  # 6 samples / 2 ranks / batch 2 = 2 steps per rank


@pytest.mark.gpu
@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_out_of_memory_gives_our_message(tmp_path, dataset) -> None:
    import torch

    torch.cuda.set_per_process_memory_fraction(0.0002)  # ~16 MB on an 80 GB card: the model cannot fit
    try:
        with pytest.raises(TrainingError, match="CUDA out of memory with batch size"):
            _run(tmp_path, dataset, num_epochs=1, run_name="oom", device="cuda", batch_size=2)
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0)
        torch.cuda.empty_cache()


@pytest.mark.gpu
@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="needs a CUDA GPU")
def test_torchrun_nccl_single_gpu(tmp_path, dataset) -> None:
    """torchrun with one process initialises NCCL and trains (the DDP path on a real GPU)."""
    p = _torchrun(tmp_path, dataset, nproc=1, port=29519, run="nccl", device="cuda")
    out = p.stdout + p.stderr
    assert p.returncode == 0, out[-3000:]
    assert "DDP: rank 0 of 1 (nccl)" in out
    assert (Workspace(tmp_path).run_dir("nccl") / "checkpoint_epoch_1" / "meta.json").is_file()


def test_ctrl_c_during_an_optimizer_step_is_held_until_the_step_is_recorded(tmp_path, dataset, monkeypatch) -> None:
    """A Ctrl-C that lands inside the optimizer step (after the weights moved, before the state that
    records it) is held to the step's end: the interrupt checkpoint matches its weights, and the
    resumed run ends as an uninterrupted one."""
    import signal

    import torch

    flags = {"num_epochs": 1, "batch_size": 1, "grad_accum_steps": 2, "run_name": "sig"}
    straight, _ = _run(tmp_path / "a", dataset, **flags)
    real_step = torch.optim.AdamW.step
    calls = {"n": 0}

    def step_then_ctrl_c(self, *a, **k):
        out = real_step(self, *a, **k)
        calls["n"] += 1
        if calls["n"] == 2:  # the second window: its weights have just moved
            os.kill(os.getpid(), signal.SIGINT)
        return out

    monkeypatch.setattr(torch.optim.AdamW, "step", step_then_ctrl_c)
    first, ws = _run(tmp_path / "b", dataset, **flags)
    monkeypatch.undo()
    assert first.status == "interrupted" and first.optimizer_steps == 2
    meta = json.loads((ws.run_dir("sig") / "checkpoint_epoch_0_step_4" / "meta.json").read_text())
    assert meta["optimizer_step"] == 2 and meta["batch_in_epoch"] == 4
    second, _ = _run(tmp_path / "b", dataset, resume=True, **flags)
    assert second.optimizer_steps == straight.optimizer_steps
    assert second.epoch_train_losses == pytest.approx(straight.epoch_train_losses, abs=1e-5)


def test_early_stopping_ends_a_run_whose_val_loss_rises(tmp_path, dataset, caplog) -> None:
    """Issue 22: the demo's val loss rose from 5.16 to 5.21 while training went on. A full fine-tune
    of the tiny model at a rate far too high overfits its 6 clips at once; patience 2 stops it."""
    caplog.set_level(logging.INFO, logger="xttsft")
    result, ws = _run(
        tmp_path,
        dataset,
        num_epochs=40,
        run_name="es",
        early_stopping_patience=2,
        use_lora=False,
        learning_rate=0.05,
        warmup_steps=0,
        save_every_n_epochs=100,
    )
    val = result.epoch_val_losses
    assert result.status == "stopped early" and result.epochs_completed < 40, (result.status, val)
    assert result.best_epoch == result.epochs_completed - 2 and min(val) == val[result.best_epoch - 1]
    assert all(v > min(val) for v in val[result.best_epoch :])
    assert "Early stopping after epoch" in caplog.text and f"best {min(val):.4f}" in caplog.text
    last = ws.run_dir("es") / f"checkpoint_epoch_{result.epochs_completed}"
    assert (last / "meta.json").is_file(), "the last epoch stays resumable"


def test_auto_epochs_are_sized_from_the_training_audio() -> None:
    from xttsft.data.datasets import Sample
    from xttsft.settings import TrainSettings
    from xttsft.training.train import resolve_epochs
    from xttsft.training.train_data import DataReport

    def report(minutes: float) -> DataReport:
        n = int(minutes * 60 * 22050)
        return DataReport(Path("."), "en", 0, 0, [Sample("a", Path("a.wav"), "a", [1], n)], [], {})

    auto = TrainSettings(num_epochs="auto")
    assert [resolve_epochs(auto, report(m)).num_epochs for m in (60, 30, 6, 0.1)] == [10, 20, 100, 1000]
    assert resolve_epochs(TrainSettings(num_epochs=1000), report(60)).num_epochs == 1000  # the guide's value


def test_ddp_ranks_stop_early_together(tmp_path, dataset) -> None:
    """Early stopping under torchrun: every rank tracks the best val loss, so all stop at the same epoch
    (rank 0 alone did, and rank 1 waited in the next epoch's all-reduce forever)."""
    env = {"OMP_NUM_THREADS": "1", "TRAIN_BATCH_SIZE": "2", "TRAIN_GRAD_ACCUM_STEPS": "1",
           "TRAIN_EARLY_STOPPING_PATIENCE": "1", "TRAIN_LEARNING_RATE": "0.05", "TRAIN_USE_LORA": "false",
           "TRAIN_WARMUP_STEPS": "0"}  # fmt: skip
    p = _torchrun(tmp_path, dataset, nproc=2, port=29521, run="es", device="cpu", epochs=12, env=env)
    out = p.stdout + p.stderr
    assert p.returncode == 0, out[-3000:]
    assert out.count("Run es (stopped early)") == 1, out[-3000:]
