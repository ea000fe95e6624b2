"""xttsft export: a merged folder that STOCK coqui-tts loads and speaks with,
the adapter-only form, and merged == base + adapter."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from synth_helpers import make_dataset, make_run
from xttsft.paths import Workspace
from xttsft.settings import SynthSettings
from xttsft.voice import synth


def said(res) -> str:
    return " ".join(res.output.split())


def names_path(res, path: Path) -> bool:
    """``path`` is in the output, even where the console folded it over two lines."""
    return "".join(str(path).split()) in "".join(res.output.split())


@pytest.fixture(scope="module")
def run_ws(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    ws = Workspace(tmp_path_factory.mktemp("export") / "ws")
    make_dataset(ws)
    make_run(ws)
    return ws


@pytest.fixture(scope="module")
def merged(run_ws: Workspace) -> Path:
    from xttsft.voice.export import export_run

    result = export_run(run_ws)
    assert result.kind == "merged" and not result.skipped
    return result.out_dir


def test_merged_folder_has_the_stock_files_and_key_layout(merged: Path) -> None:
    import torch

    names = {p.name for p in merged.iterdir()}
    assert {
        "model.pth",
        "config.json",
        "vocab.json",
        "dvae.pth",
        "mel_stats.pth",
        "speakers_xtts.pth",
        "reference.wav",
        "xttsft_export.json",
    } <= names
    ckpt = torch.load(merged / "model.pth", map_location="cpu", weights_only=True)
    assert set(ckpt) == {"model"}  # weights only: no optimizer, no config object
    keys = list(ckpt["model"])
    assert not [k for k in keys if "lora_" in k or k.startswith(("dvae.", "gpt.gpt_inference."))]
    assert any(k.startswith("gpt.gpt.h.0.attn.c_attn") for k in keys) and any(
        k.startswith("hifigan_decoder.") for k in keys
    )
    speakers = torch.load(merged / "speakers_xtts.pth", map_location="cpu", weights_only=True)
    assert "run1" in speakers and list(speakers["run1"]) == ["gpt_cond_latent", "speaker_embedding"]
    meta = json.loads((merged / "xttsft_export.json").read_text())
    assert meta["run"] == "run1" and meta["mode"] == "lora" and meta["base_model"] == "tiny"


def test_stock_coqui_loads_the_export_and_synthesizes(merged: Path) -> None:
    """Exactly what a user of coqui-tts (or xtts-finetune-webui / AllTalk) does."""
    from TTS.api import TTS
    from TTS.tts.configs.xtts_config import XttsConfig
    from TTS.tts.models.xtts import Xtts

    config = XttsConfig()
    config.load_json(str(merged / "config.json"))
    model = Xtts.init_from_config(config)
    model.load_checkpoint(config, checkpoint_dir=str(merged), eval=True)  # strict=True by default
    model.gpt.max_gen_mel_tokens = 8
    out = model.synthesize("hello world", speaker_wav=str(merged / "reference.wav"), language="en")
    assert out["wav"].size > 0 and np.isfinite(out["wav"]).all()
    out = model.synthesize("hello world", speaker="run1", language="en")  # the voice shipped in speakers_xtts.pth
    assert out["wav"].size > 0

    tts = TTS(model_path=str(merged), config_path=str(merged / "config.json"), progress_bar=False)
    tts.synthesizer.tts_model.gpt.max_gen_mel_tokens = 8
    wav = tts.tts("hello world", speaker="run1", language="en")
    assert len(wav) > 0


def test_merged_export_sounds_like_the_run_and_base_plus_adapter(
    run_ws: Workspace, merged: Path, tmp_path: Path
) -> None:
    import torch

    from xttsft.voice.export import export_run

    settings = SynthSettings(max_audio_tokens=8, language="en")
    refs = [merged / "reference.wav"]
    run_voice = synth.load_voice(run_ws, synth.resolve_model(run_ws, "run1"), device="cpu")
    folder_voice = synth.load_voice(run_ws, synth.resolve_model(run_ws, str(merged)), device="cpu")
    a, _ = synth.speak(run_voice, synth.conditioning(run_voice, refs), "Hello there.", "en", settings, seed=5)
    b, _ = synth.speak(folder_voice, synth.conditioning(folder_voice, refs), "Hello there.", "en", settings, seed=5)
    assert np.array_equal(a, b)  # same seed, same weights -> the same audio

    adapter = export_run(run_ws, adapter_only=True, out=tmp_path / "adapter").out_dir
    unmerged = synth.load_voice(run_ws, synth.resolve_model(run_ws, str(adapter)), device="cpu", merge_lora=False)
    assert any("lora_" in n for n, _ in unmerged.model.gpt.named_parameters())
    # same GPT latents for the same text, codes and conditioning (to float tolerance)
    cond = synth.conditioning(folder_voice, refs)
    text = torch.IntTensor(folder_voice.model.tokenizer.encode("hello there", lang="en")).unsqueeze(0)
    codes = torch.randint(0, 1024, (1, 12), generator=torch.Generator().manual_seed(0))
    latents = []
    for v in (folder_voice, unmerged):
        with torch.inference_mode():
            latents.append(
                v.model.gpt(
                    text,
                    torch.tensor([text.shape[-1]]),
                    codes,
                    torch.tensor([codes.shape[-1] * 1024]),
                    cond_latents=cond.gpt_cond_latent,
                    return_attentions=False,
                    return_latent=True,
                )
            )
    assert torch.allclose(latents[0], latents[1], atol=1e-4), (latents[0] - latents[1]).abs().max()
    base = synth.load_voice(run_ws, synth.ModelSource("base", "tiny", None, base_spec="tiny"), device="cpu")
    with torch.inference_mode():
        base_lat = base.model.gpt(
            text,
            torch.tensor([text.shape[-1]]),
            codes,
            torch.tensor([codes.shape[-1] * 1024]),
            cond_latents=cond.gpt_cond_latent,
            return_attentions=False,
            return_latent=True,
        )
    assert not torch.allclose(base_lat, latents[0], atol=1e-4)  # the adapter does change the GPT


def test_cli_adapter_only_is_small_and_rerun_skips(cli, run_ws: Workspace) -> None:
    res = cli("export", "--adapter-only", workdir=run_ws.root)
    assert res.exit_code == 0, res.output
    out = run_ws.export_dir("run1-adapter")
    names = {p.name for p in out.iterdir()}
    assert names == {
        "adapter_model.safetensors",
        "adapter_config.json",
        "xttsft_adapter.json",
        "reference.wav",
        "reference_2.wav",
        "reference_3.wav",
    }  # synth.num_references = 3
    assert (out / "adapter_model.safetensors").stat().st_size < 5_000_000
    ident = json.loads((out / "xttsft_adapter.json").read_text())
    assert ident["base_model"] == "tiny" and ident["base_identity"]["tiny"] is True
    res = cli("export", "--adapter-only", workdir=run_ws.root)
    assert res.exit_code == 0 and "already done, skipped" in said(res)


def test_cli_errors(cli, workspace: Workspace, tmp_path: Path) -> None:
    res = cli("export")
    assert res.exit_code == 1 and "No training run" in said(res)
    res = cli("export", "--run", "ghost")
    assert res.exit_code == 1 and "No training run named 'ghost'" in said(res)
    run = workspace.run_dir("full")
    run.mkdir(parents=True)
    (run / "run.json").write_text(json.dumps({"base_model": "tiny", "base_dir": "/x", "mode": "full"}))
    (run / "best_model").mkdir()
    (run / "best_model" / "meta.json").write_text(json.dumps({"mode": "full", "epoch": 1}))
    (run / "best_model" / "gpt.safetensors").write_bytes(b"")  # a folder without its weights is never picked
    res = cli("export", "--run", "full", "--adapter-only")
    assert res.exit_code == 1 and "full fine-tuning: it has no LoRA adapter" in said(res)


def test_export_replaces_only_what_an_export_wrote(cli, run_ws: Workspace, tmp_path: Path) -> None:
    """A re-export never deletes the user's files; --out that is no export, or under a file, is refused."""
    out = tmp_path / "shared"
    res = cli("export", "--adapter-only", "--out", str(out), workdir=run_ws.root)
    assert res.exit_code == 0, res.output
    written = {p.name for p in out.iterdir()}
    (out / "my_notes.txt").write_text("mine")
    res = cli("export", "--adapter-only", "--force", "--out", str(out), workdir=run_ws.root)
    assert res.exit_code == 1 and names_path(res, out / "my_notes.txt") and "Move it out" in said(res), res.output
    assert (out / "my_notes.txt").read_text() == "mine" and written < {p.name for p in out.iterdir()}
    (out / "my_notes.txt").unlink()
    res = cli("export", "--adapter-only", "--force", "--out", str(out), workdir=run_ws.root)
    assert res.exit_code == 0 and {p.name for p in out.iterdir()} == written, res.output
    assert set(json.loads((out / "xttsft_adapter.json").read_text())["files"]) == written

    other = tmp_path / "photos"
    other.mkdir()
    (other / "cat.jpg").write_bytes(b"meow")
    res = cli("export", "--adapter-only", "--force", "--out", str(other), workdir=run_ws.root)
    assert res.exit_code == 1 and names_path(res, other) and "not an xttsft export" in said(res), res.output
    assert [p.name for p in other.iterdir()] == ["cat.jpg"]

    (tmp_path / "somefile.txt").write_text("x")
    res = cli("export", "--adapter-only", "--out", str(tmp_path / "somefile.txt" / "x"), workdir=run_ws.root)
    assert res.exit_code == 1 and "Unexpected error" not in res.output, res.output
    assert names_path(res, tmp_path / "somefile.txt") and "is a file" in said(res) and "Hint:" in said(res), res.output
