"""doctor: the pure recommendation over a table of machines, the checks, and the CLI."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from xttsft.doctor import (
    EFFECTIVE_BATCH_SIZE,
    GpuFacts,
    HardwareFacts,
    Recommendation,
    current_recommendation,
    diagnose,
    hardware_facts,
    recommend,
)


def gpu(
    gb: float, cc: tuple[int, int] = (8, 6), name: str | None = None, index: int = 0, free_gb: float | None = None
) -> GpuFacts:
    mib = int(gb * 1024)
    return GpuFacts(index, name or f"GPU {gb:g} GB", mib, mib if free_gb is None else int(free_gb * 1024), cc)


def machine(*gpus: GpuFacts, ram: float = 64.0, cpus: int = 16) -> HardwareFacts:
    return HardwareFacts(gpus=tuple(gpus), cpu_count=cpus, ram_total_gib=ram)


# Sizes as drivers report them (an "8 GB" 3070 shows 7.8 GiB, a "24 GB" A10 22.5, an H100 79.6).
# columns: total GiB, compute capability, LoRA batch range, Whisper model
GPU_TABLE = [
    (6.0, (8, 6), (1, 1), "medium"),
    (7.8, (8, 6), (1, 2), "medium"),
    (8.0, (8, 9), (1, 2), "medium"),
    (12.0, (8, 6), (2, 4), "large-v3"),
    (15.0, (7, 5), (2, 6), "large-v3"),  # T4
    (16.0, (8, 9), (4, 6), "large-v3"),
    (22.5, (8, 6), (8, 8), "large-v3"),  # A10
    (24.0, (8, 6), (8, 12), "large-v3"),
    (48.0, (8, 6), (12, 24), "large-v3"),
    (79.6, (9, 0), (16, 64), "large-v3"),  # H100 80 GB
    (80.0, (8, 0), (16, 64), "large-v3"),
]


@pytest.mark.parametrize(("gb", "cc", "batch_range", "whisper"), GPU_TABLE)
def test_single_gpu_lora(gb, cc, batch_range, whisper):
    rec = recommend(machine(gpu(gb, cc)), use_lora=True)
    lo, hi = batch_range
    assert rec.device == "cuda" and rec.whisper_device == "cuda"
    assert lo <= rec.train_batch_size <= hi
    assert rec.use_amp is True
    assert rec.amp_dtype == ("bfloat16" if cc >= (8, 0) else "float16")
    assert rec.whisper_model == whisper
    assert rec.whisper_compute_type == "float16"
    # effective batch stays near the target whatever the card
    assert EFFECTIVE_BATCH_SIZE * 0.75 <= rec.effective_batch_size <= EFFECTIVE_BATCH_SIZE * 1.25
    # small cards trade speed for memory; big ones do not
    assert rec.gradient_checkpointing == (gb < 10)


def test_8gb_card_keeps_lora_training():
    """The case users hit most: an 8 GB card must get a LoRA setup that fits, with AMP."""
    rec = recommend(machine(gpu(8.0, (8, 6), "NVIDIA GeForce RTX 3070")), use_lora=True)
    assert rec.train_batch_size in (1, 2)
    assert rec.use_amp and rec.gradient_checkpointing
    assert not any("out of memory" in n or "out-of-memory" in n for n in rec.notes)


@pytest.mark.parametrize("gb", [6.0, 8.0, 12.0, 16.0, 24.0, 48.0, 80.0])
def test_full_finetune_needs_more_memory_than_lora(gb):
    lora = recommend(machine(gpu(gb)), use_lora=True)
    full = recommend(machine(gpu(gb)), use_lora=False)
    assert full.train_batch_size <= lora.train_batch_size
    assert full.gradient_checkpointing >= lora.gradient_checkpointing
    if gb < 20:
        assert full.gradient_checkpointing
    if gb < 10:  # full fine-tune of 427 M params does not fit: say so and point to LoRA
        assert any("LoRA" in n for n in full.notes)


def test_batch_grows_with_vram():
    batches = [recommend(machine(gpu(gb))).train_batch_size for gb in (6, 8, 12, 16, 24, 48, 80)]
    assert batches == sorted(batches) and batches[0] < batches[-1]
    assert batches[-1] >= 8 * batches[1]


def test_cpu_only():
    rec = recommend(machine(ram=32, cpus=8), use_lora=True)
    assert rec.device == "cpu" and rec.whisper_device == "cpu"
    assert rec.use_amp is False and rec.amp_dtype is None
    assert rec.whisper_model == "small" and rec.whisper_compute_type == "int8"
    assert 4 <= rec.whisper_batch_size <= 8
    assert rec.train_batch_size in (1, 2)
    assert any("CPU" in n for n in rec.notes)


def test_cpu_with_little_ram_shrinks_batch_and_warns():
    small = recommend(machine(ram=6, cpus=2))
    assert small.train_batch_size == 1 and small.gradient_checkpointing
    assert any("RAM" in n for n in small.notes)
    assert recommend(machine(ram=2.0, cpus=2)).whisper_batch_size == 4


def test_no_bf16_card_uses_fp16_and_says_why():
    rec = recommend(machine(gpu(11.0, (7, 5), "NVIDIA GeForce RTX 2080 Ti")))
    assert rec.amp_dtype == "float16" and rec.use_amp
    assert rec.whisper_compute_type == "float16"  # CTranslate2 fp16 from compute 7.0
    assert any("bfloat16" in n and "2080 Ti" in n for n in rec.notes)


def test_old_card_whisper_compute_type():
    pascal = recommend(machine(gpu(8.0, (6, 1), "GTX 1080")))
    assert pascal.whisper_compute_type == "int8" and pascal.amp_dtype == "float16"
    kepler = recommend(machine(gpu(12.0, (3, 7), "K80")))
    assert kepler.whisper_compute_type == "float32"


def test_two_gpus_batch_by_smallest_card_and_ddp_note():
    two = machine(gpu(24.0, index=0, name="RTX 4090"), gpu(12.0, index=1, name="RTX 3060"))
    rec = recommend(two)
    assert rec.train_batch_size == recommend(machine(gpu(12.0))).train_batch_size
    assert any("torchrun" in n and "DDP" in n and "RTX 3060" in n for n in rec.notes)
    same = recommend(machine(gpu(80.0, (9, 0), index=0), gpu(80.0, (9, 0), index=1)))
    assert same.train_batch_size == recommend(machine(gpu(80.0, (9, 0)))).train_batch_size
    # one card without bf16 forces fp16 for the whole DDP group
    mixed = recommend(machine(gpu(24.0, (8, 6), index=0), gpu(24.0, (7, 5), index=1)))
    assert mixed.amp_dtype == "float16"


def test_busy_gpu_is_noted():
    rec = recommend(machine(gpu(24.0, free_gb=6.0)))
    assert any("only 6.0 of 24.0 GB free" in n for n in rec.notes)


def test_recommend_is_pure():
    hw = machine(gpu(12.0))
    assert recommend(hw) == recommend(hw)
    assert recommend(hw, use_lora=False) == recommend(hw, use_lora=False)


def test_recommendation_dict_has_contract_fields():
    d = recommend(machine(gpu(8.0))).to_dict()
    for key in (
        "device",
        "train_batch_size",
        "grad_accum_steps",
        "use_amp",
        "amp_dtype",
        "gradient_checkpointing",
        "whisper_model",
        "whisper_device",
        "whisper_compute_type",
        "whisper_batch_size",
        "notes",
        "effective_batch_size",
    ):
        assert key in d
    json.dumps(d)


def test_current_recommendation_on_this_machine(caplog):
    from xttsft import logs

    caplog.set_level("INFO", logger="xttsft.hardware")
    logs._said.clear()  # logged once per process: make this the first time
    rec = current_recommendation()
    assert isinstance(rec, Recommendation)
    hw = hardware_facts()
    assert rec == recommend(hw)
    assert hw.cpu_count >= 1 and hw.ram_total_gib > 0
    assert caplog.text.count("Recommended (LoRA)") == 1  # the choice is logged
    current_recommendation()
    assert caplog.text.count("Recommended (LoRA)") == 1  # once: run-all's stages all ask for it


# ---------------------------------------------------------------- GPU discovery

H100_CSV = "0, NVIDIA H100 80GB HBM3, 81559, 80750, 9.0\n1, NVIDIA GeForce RTX 3070, 8192, 7900, 8.6\n"


@pytest.fixture
def fake_nvidia_smi(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """An ``nvidia-smi`` on PATH that prints the CSV a real driver gives for
    ``--query-gpu=index,name,memory.total,memory.free,compute_cap --format=csv,noheader,nounits``."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    exe = bindir / "nvidia-smi"
    exe.write_text(f'#!/bin/sh\ncase "$*" in *driver_version*) echo "570.86.15";; *) printf \'{H100_CSV}\';; esac\n')
    exe.chmod(exe.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    return exe


def test_gpus_read_from_nvidia_smi(fake_nvidia_smi):
    hw = hardware_facts()
    assert hw.gpu_source == "nvidia-smi"
    assert [g.name for g in hw.gpus] == ["NVIDIA H100 80GB HBM3", "NVIDIA GeForce RTX 3070"]
    h100, rtx = hw.gpus
    assert h100.compute_capability == (9, 0) and h100.bf16
    assert round(h100.total_gib, 1) == 79.6 and round(h100.free_gib, 1) == 78.9
    assert rtx.compute_capability == (8, 6)
    rec = recommend(hw)
    assert rec.train_batch_size == 2  # by the smallest card
    assert rec.whisper_model == "large-v3"  # Whisper runs on GPU 0


def test_cuda_visible_devices_filters_gpus(fake_nvidia_smi, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    hw = hardware_facts()
    assert [(g.index, g.name) for g in hw.gpus] == [(0, "NVIDIA GeForce RTX 3070")]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert hardware_facts().gpus == ()


def test_tiny_model_detected_in_cache(workspace, tmp_path, monkeypatch):
    """The tiny model's folder counts only once it is complete (its marker is written last)."""
    from xttsft import doctor

    monkeypatch.setenv("XTTSFT_CACHE_DIR", str(tmp_path / "cache"))
    assert doctor._tiny_model_dir() is None
    model = doctor._model_module()
    if model is None or not hasattr(model, "TINY_MARKER"):
        pytest.skip("xttsft.model does not define the tiny cache layout yet")
    tiny = tmp_path / "cache" / f"tiny-xtts-v{model.TINY_VERSION}"
    tiny.mkdir(parents=True)
    assert doctor._tiny_model_dir() is None  # half-built
    (tiny / model.TINY_MARKER).write_text("{}")
    assert doctor._tiny_model_dir() == tiny
    report = diagnose(workspace)
    assert report.facts["tiny_model_cached"] is True


def test_diagnose_reports_gpus_and_driver(fake_nvidia_smi, workspace):
    report = diagnose(workspace)
    d = report.to_dict()
    assert d["facts"]["nvidia_driver"] == "570.86.15"
    assert [c["name"] for c in d["checks"] if c["name"].startswith("gpu")] == ["gpu 0", "gpu 1"]
    assert d["facts"]["gpus"][0]["bf16"] is True


# ------------------------------------------------------------------------ checks


def test_checks_on_this_machine(workspace):
    report = diagnose(workspace)
    by_name = {c.name: c for c in report.checks}
    for name in (
        "python",
        "torch",
        "cpu",
        "ram",
        "disk",
        "ffmpeg",
        "espeak-ng",
        "xtts-v2 base",
        "tiny test model",
        "dataset",
        "settings",
    ):
        assert name in by_name, name
    assert by_name["ffmpeg"].status == "ok"  # conftest needs it, so it is here
    assert by_name["dataset"].status == "warn" and by_name["dataset"].fix
    assert all(c.fix for c in report.checks if c.status != "ok")


def test_missing_ffmpeg_fails_with_fix(workspace, tmp_path, monkeypatch):
    empty = tmp_path / "emptybin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    report = diagnose(workspace)
    ff = next(c for c in report.checks if c.name == "ffmpeg")
    assert ff.status == "fail" and "apt-get install ffmpeg" in ff.fix
    assert not report.ok
    assert next(c for c in report.checks if c.name == "espeak-ng").status == "warn"  # optional


def test_dataset_found(workspace):
    ds = workspace.dataset_dir
    ds.mkdir(parents=True)
    (ds / "metadata_train.csv").write_text("a|hello|hello\nb|world|world\n")
    (ds / "metadata_val.csv").write_text("c|again|again\n")
    report = diagnose(workspace)
    check = next(c for c in report.checks if c.name == "dataset")
    assert check.status == "ok" and "2 train, 1 val" in check.detail
    assert report.facts["dataset_exists"] and report.facts["dataset_train_samples"] == 2


def test_xtts_base_found_in_hf_cache(workspace, tmp_path, monkeypatch):
    """A snapshot laid out as huggingface_hub stores it is recognised without network."""
    import huggingface_hub.constants as hfc

    from xttsft.doctor import _xtts_files, _xtts_revision

    commit = _xtts_revision() or "abc123"  # the revision train pins, else the cache's main
    cache = tmp_path / "hf"
    repo = cache / "models--coqui--XTTS-v2"
    snap = repo / "snapshots" / commit
    snap.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    for name in _xtts_files():
        (snap / name).write_bytes(b"x")
    monkeypatch.setattr(hfc, "HF_HUB_CACHE", str(cache))
    report = diagnose(workspace)
    check = next(c for c in report.checks if c.name == "xtts-v2 base")
    assert check.status == "ok", check
    assert report.facts["xtts_base_cached"] is True
    (snap / "dvae.pth").unlink()
    check = next(c for c in diagnose(workspace).checks if c.name == "xtts-v2 base")
    assert check.status == "warn" and "dvae.pth" in check.detail


# --------------------------------------------------------------------------- CLI


def test_doctor_json(cli):
    res = cli("doctor", "--json")
    data = json.loads(res.stdout)
    assert res.exit_code == (0 if data["ok"] else 1)
    assert set(data) == {"ok", "facts", "recommendation", "checks"}
    for key in (
        "python",
        "torch",
        "torch_cuda",
        "gpus",
        "cpu_count",
        "ram_total_gib",
        "disk_free_gib",
        "ffmpeg",
        "espeak_ng",
        "xtts_base_cached",
        "tiny_model_cached",
        "dataset_exists",
    ):
        assert key in data["facts"], key
    for key in (
        "device",
        "train_batch_size",
        "grad_accum_steps",
        "use_amp",
        "amp_dtype",
        "gradient_checkpointing",
        "whisper_model",
        "whisper_compute_type",
        "whisper_batch_size",
        "notes",
    ):
        assert key in data["recommendation"], key
    assert all(c["status"] in {"ok", "warn", "fail"} for c in data["checks"])


def test_doctor_table(cli):
    res = cli("doctor")
    assert res.exit_code == 0, res.output
    assert "Recommended settings" in res.stdout and "ffmpeg" in res.stdout


def test_doctor_reports_invalid_settings_and_exits_1(cli):
    res = cli("doctor", "--json", env={"TRAIN_NUM_EPOCHS": "-3"})
    assert res.exit_code == 1
    data = json.loads(res.stdout)
    settings = next(c for c in data["checks"] if c["name"] == "settings")
    assert settings["status"] == "fail" and "TRAIN_NUM_EPOCHS" in settings["detail"]


def test_doctor_full_finetune_from_settings(cli):
    lora = json.loads(cli("doctor", "--json").stdout)["recommendation"]
    full = json.loads(cli("doctor", "--json", env={"TRAIN_USE_LORA": "false"}).stdout)["recommendation"]
    assert full["train_batch_size"] <= lora["train_batch_size"]


def test_doctor_exit_1_when_ffmpeg_missing(cli, tmp_path):
    empty = tmp_path / "emptybin"
    empty.mkdir()
    res = cli("doctor", env={"PATH": str(empty)})
    assert res.exit_code == 1
    out = " ".join(res.stdout.split())
    assert "Not ready: fix ffmpeg" in out and "apt-get install ffmpeg" in out


@pytest.mark.gpu
@pytest.mark.skipif(not __import__("shutil").which("nvidia-smi"), reason="needs an NVIDIA GPU and driver")
def test_nvidia_smi_facts_match_torch():
    """On a real GPU machine the cheap facts agree with what CUDA itself reports."""
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("CUDA is not usable here")
    from xttsft.doctor import _gpus_from_torch

    cheap = hardware_facts().gpus
    exact = _gpus_from_torch()
    assert [g.name for g in cheap] == [g.name for g in exact]
    for a, b in zip(cheap, exact, strict=True):
        assert a.compute_capability == b.compute_capability
        assert abs(a.total_memory_mib - b.total_memory_mib) <= 0.03 * b.total_memory_mib
