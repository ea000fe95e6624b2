"""model.py: the base model (tiny build, Hub resolution, folder validation), loading,
LoRA, and the run folder format. Real coqui classes, real files, no mocks."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from xttsft.errors import ModelNotFoundError
from xttsft.model import (
    HF_REPO_ID,
    XTTS_FILES,
    RunInfo,
    apply_checkpoint,
    attach_lora,
    build_tiny_model,
    count_parameters,
    find_checkpoint,
    is_tiny,
    load_dvae,
    load_finetuned,
    load_xtts,
    resolve_base_model,
    write_checkpoint,
    write_run_info,
)
from xttsft.settings import TrainSettings


@pytest.fixture(scope="module")
def tiny_dir() -> Path:
    return resolve_base_model("tiny")


def test_tiny_has_the_xtts_file_set_and_is_built_once(tmp_path: Path) -> None:
    dest = tmp_path / "tiny"
    d = build_tiny_model(dest=dest)
    assert d == dest
    for name in XTTS_FILES:
        assert (d / name).is_file() and (d / name).stat().st_size > 0, name
    assert is_tiny(d)
    stamp = (d / "model.pth").stat().st_mtime_ns
    assert build_tiny_model(dest=dest) == dest  # cached: not rebuilt
    assert (d / "model.pth").stat().st_mtime_ns == stamp
    assert not list(tmp_path.glob(".tiny.*")), "no temporary build folder left behind"


def test_tiny_cache_follows_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_dir: Path) -> None:
    monkeypatch.setenv("XTTSFT_CACHE_DIR", str(tmp_path / "cache"))
    from xttsft.model import cache_dir

    assert cache_dir() == tmp_path / "cache"


def test_load_tiny_through_the_real_loader(tiny_dir: Path) -> None:
    import torch

    xtts = load_xtts(tiny_dir)
    assert xtts.gpt is not None and xtts.hifigan_decoder is not None
    assert hasattr(xtts.gpt, "gpt_inference")  # ready for inference
    # the vocabulary covers Portuguese accents: no [UNK] (id 1), no [STOP] (id 0)
    ids = xtts.tokenizer.encode("Olá, coração! A ação é ótima; àquela lição, pôr, têm.", "pt")
    assert 1 not in ids and 0 not in ids
    # weights really come from model.pth (not a fresh random init)
    saved = torch.load(tiny_dir / "model.pth", weights_only=True)["model"]
    assert torch.equal(saved["gpt.text_embedding.weight"], xtts.gpt.text_embedding.weight.detach())
    dvae = load_dvae(tiny_dir)
    assert dvae.num_tokens == 1024
    assert not any(p.requires_grad for p in dvae.parameters())


def test_training_load_drops_decoder(tiny_dir: Path) -> None:
    xtts = load_xtts(tiny_dir, for_training=True, keep_decoder=False)
    assert xtts.hifigan_decoder is None
    assert xtts.gpt.training and not hasattr(xtts.gpt, "gpt_inference")


def test_hub_offline_names_missing_files(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    import huggingface_hub.constants as c

    monkeypatch.setattr(c, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(c, "HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    with pytest.raises(ModelNotFoundError) as err:
        resolve_base_model(HF_REPO_ID)
    msg = str(err.value)
    for name in XTTS_FILES:
        assert name in msg
    assert "--base-model" in (err.value.hint or "") and "hf download" in (err.value.hint or "")


def test_folder_with_missing_and_corrupt_files_is_named(tmp_path: Path, tiny_dir: Path) -> None:
    d = tmp_path / "base"
    shutil.copytree(tiny_dir, d)
    (d / "dvae.pth").unlink()
    (d / "speakers_xtts.pth").write_bytes(b"not a torch file")
    (d / "config.json").write_text("{broken")
    with pytest.raises(ModelNotFoundError) as err:
        resolve_base_model(str(d))
    msg = err.value.message
    assert "dvae.pth: missing" in msg
    assert "speakers_xtts.pth: corrupt" in msg
    assert "config.json: not valid JSON" in msg
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        resolve_base_model(str(tmp_path / "nope"))


def test_truncated_weights_fail_with_the_file_named(tmp_path: Path, tiny_dir: Path) -> None:
    d = tmp_path / "base"
    shutil.copytree(tiny_dir, d)
    data = (d / "model.pth").read_bytes()
    (d / "model.pth").write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelNotFoundError, match="model.pth"):
        load_xtts(d)


def test_attach_lora_trains_only_adapters_on_conv1d(tiny_dir: Path) -> None:
    from peft.tuners.lora import LoraLayer
    from transformers.pytorch_utils import Conv1D

    xtts = load_xtts(tiny_dir, for_training=True, keep_decoder=False)
    _, total_before = count_parameters(xtts.gpt)
    attach_lora(xtts.gpt, TrainSettings(lora_rank=4, lora_alpha=8))
    trainable, total = count_parameters(xtts.gpt)
    lora = [m for m in xtts.gpt.gpt.modules() if isinstance(m, LoraLayer)]
    assert len(lora) == 2 * 4  # 2 blocks x (c_attn, attn.c_proj, c_fc, mlp.c_proj)
    assert all(isinstance(m.get_base_layer(), Conv1D) for m in lora)
    assert all(m.fan_in_fan_out for m in lora)
    assert 0 < trainable < 0.05 * total
    assert trainable == total - total_before
    names = [n for n, p in xtts.gpt.named_parameters() if p.requires_grad]
    assert names and all("lora_" in n for n in names)


def _perturb(module, scale: float = 0.1) -> None:
    import torch

    with torch.no_grad():
        for p in module.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * scale)


@pytest.mark.parametrize("mode", ["lora", "full"])
def test_checkpoint_roundtrip_through_load_finetuned(tmp_path: Path, tiny_dir: Path, mode: str) -> None:
    import torch

    xtts = load_xtts(tiny_dir, for_training=True, keep_decoder=False)
    cfg = attach_lora(xtts.gpt, TrainSettings()) if mode == "lora" else None
    _perturb(xtts.gpt)
    run = tmp_path / "run"
    write_run_info(
        RunInfo(
            run_dir=run,
            base_model="tiny",
            base_dir=tiny_dir,
            language="pt",
            mode=mode,
            dataset_dir=tmp_path / "ds",
            created="now",
        )
    )
    write_checkpoint(run / "best_model", xtts.gpt, mode, {"epoch": 1, "step": 3, "val_loss": 1.0}, lora_config=cfg)
    files = sorted(p.name for p in (run / "best_model").iterdir())
    if mode == "lora":
        assert files == ["adapter_config.json", "adapter_model.safetensors", "meta.json"]
        assert json.loads((run / "best_model" / "adapter_config.json").read_text())["fan_in_fan_out"] is True
    else:
        assert files == ["gpt.safetensors", "meta.json"]
    # the reference output of the trained GPT, in training layout (adapters merged for LoRA)
    if mode == "lora":
        from xttsft.model import merge_lora

        merge_lora(xtts.gpt)
    ref = {k: v.detach().clone() for k, v in xtts.gpt.state_dict().items()}

    loaded, info = load_finetuned(run, "best")
    assert info.mode == mode and info.language == "pt" and info.tiny
    assert info.checkpoint == run / "best_model"
    got = loaded.gpt.state_dict()
    for k, v in ref.items():
        assert torch.allclose(got[k], v, atol=1e-5), k
    base = load_xtts(tiny_dir)
    assert not torch.allclose(base.gpt.gpt.h[0].attn.c_attn.weight, got["gpt.h.0.attn.c_attn.weight"])


def _fail_after_weights(monkeypatch: pytest.MonkeyPatch) -> None:
    """The next safetensors write succeeds, then the save fails (a kill or a full disk right after)."""
    import safetensors.torch

    real = safetensors.torch.save_file

    def save_then_fail(*args, **kwargs):
        real(*args, **kwargs)
        raise RuntimeError("injected failure after writing the weights")

    monkeypatch.setattr(safetensors.torch, "save_file", save_then_fail)


def test_failed_save_keeps_previous_checkpoint(tmp_path: Path, tiny_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    xtts = load_xtts(tiny_dir, for_training=True, keep_decoder=False)
    cfg = attach_lora(xtts.gpt, TrainSettings())
    run = tmp_path / "run"
    write_checkpoint(run / "best_model", xtts.gpt, "lora", {"epoch": 1, "step": 1}, lora_config=cfg)
    before = (run / "best_model" / "adapter_model.safetensors").read_bytes()
    _perturb(xtts.gpt)
    _fail_after_weights(monkeypatch)
    with pytest.raises(RuntimeError, match="injected"):
        write_checkpoint(run / "best_model", xtts.gpt, "lora", {"epoch": 2, "step": 2}, lora_config=cfg)
    assert (run / "best_model" / "adapter_model.safetensors").read_bytes() == before
    assert json.loads((run / "best_model" / "meta.json").read_text())["epoch"] == 1
    assert [p.name for p in run.iterdir()] == ["best_model"], "temporary folders are cleaned up"
    fresh = load_xtts(tiny_dir, for_training=True, keep_decoder=False)
    apply_checkpoint(fresh, run / "best_model", "lora")  # still loadable
    assert find_checkpoint(run, "latest").path == run / "best_model"


def test_best_model_left_aside_by_a_kill_is_found(tmp_path: Path, tiny_dir: Path) -> None:
    xtts = load_xtts(tiny_dir, for_training=True, keep_decoder=False)
    cfg = attach_lora(xtts.gpt, TrainSettings())
    run = tmp_path / "run"
    write_checkpoint(run / "best_model", xtts.gpt, "lora", {"epoch": 4, "step": 8}, lora_config=cfg)
    # what a SIGKILL between write_checkpoint's two renames leaves behind
    (run / "best_model").rename(run / ".best_model.old.1234")
    ck = find_checkpoint(run, "best")
    assert ck.path == run / ".best_model.old.1234" and ck.epoch == 4
    apply_checkpoint(load_xtts(tiny_dir, for_training=True, keep_decoder=False), ck.path, "lora")


def test_incomplete_checkpoint_is_refused(tmp_path: Path) -> None:
    (tmp_path / "checkpoint_epoch_3").mkdir()
    with pytest.raises(ModelNotFoundError, match="not a complete checkpoint"):
        find_checkpoint(tmp_path, tmp_path / "checkpoint_epoch_3")
    with pytest.raises(ModelNotFoundError, match="no complete"):
        find_checkpoint(tmp_path, "latest")


@pytest.mark.slow
def test_full_size_xtts_v2_lora_fraction_and_one_step() -> None:
    """The real XTTS-v2 GPT (random init, no download): LoRA r=8 trains ~0.9 % and a step runs."""
    import torch
    from TTS.tts.configs.xtts_config import XttsConfig
    from TTS.tts.models.xtts import Xtts

    from xttsft.training.train import gpt_loss

    torch.manual_seed(0)
    config = XttsConfig(model_args=__import__("xttsft.model", fromlist=["x"]).xtts_v2_args())
    xtts = Xtts(config)
    xtts.hifigan_decoder = None
    gpt = xtts.gpt
    _, total = count_parameters(gpt)
    # 441 M with XTTS-v2's 6681 text tokens (FACTS' 427.5 M counts a smaller text vocabulary)
    assert 420e6 < total < 445e6, total
    attach_lora(gpt, TrainSettings())
    trainable, _ = count_parameters(gpt)
    frac = trainable / total
    assert 0.005 < frac < 0.012, frac  # 3.9 M of 427 M with r=8 on c_attn/c_proj/c_fc
    gpt.train()
    opt = torch.optim.AdamW([p for p in gpt.parameters() if p.requires_grad], lr=1e-3)
    # batch 1: 1.5 s of audio codes, 3 s of conditioning mel, 12 text tokens
    batch = {
        "text_inputs": torch.randint(5, 6000, (1, 12)),
        "text_lengths": torch.tensor([12]),
        "audio_codes": torch.randint(0, 1024, (1, 33)),
        "wav_lengths": torch.tensor([33 * 1024]),
        "cond_mels": torch.randn(1, 1, 80, 259),
        "cond_idxs": None,  # conditioning from another clip of the speaker (see train.py)
        "cond_lens": torch.tensor([66150]),
    }
    lora_b = next(p for n, p in gpt.named_parameters() if "lora_B" in n).detach().clone()
    loss = gpt_loss(gpt, batch)["loss"]
    assert torch.isfinite(loss)
    loss.backward()
    opt.step()
    after = next(p for n, p in gpt.named_parameters() if "lora_B" in n)
    assert not torch.equal(lora_b, after.detach())


@pytest.mark.parametrize(
    ("env", "says"),
    [
        ({"HF_HUB_OFFLINE": "1"}, "HF_HUB_OFFLINE is set"),
        ({"HF_HUB_OFFLINE": "0", "HF_ENDPOINT": "http://127.0.0.1:9"}, "Cannot reach the Hugging Face Hub"),
    ],
)
def test_xtts_download_without_network_says_what_to_do(tmp_path, env: dict, says: str) -> None:
    """The real download code (no Hub here): offline, and a Hub that does not answer, each give one
    message that names the missing files and the `hf download` command."""
    import os
    import subprocess
    import sys

    code = (
        "from xttsft.model.base import resolve_base_model\n"
        "from xttsft.errors import XttsftError\n"
        "try:\n    resolve_base_model('coqui/XTTS-v2')\nexcept XttsftError as e:\n    print(e)\n"
    )
    res = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "HF_HOME": str(tmp_path / "hf"), **env},
    )
    out = " ".join(res.stdout.split())
    assert says in out and "model.pth" in out and "hf download coqui/XTTS-v2 --revision" in out, res.stdout + res.stderr
