"""Our training step computes what coqui's recipe computes (issue 22).

xttsft replaces coqui's ``GPTTrainer``, ``XTTSDataset`` and ``format_batch_on_device`` with its own
loop, data and featurizer. Here both run on the same weights and the same clips, with the same
conditioning slice (the one coqui's dataset drew), on the ``cond_lens`` conditioning path:

* the text and mel cross-entropies agree within 1e-5 (relative);
* after 3 optimizer steps with the recipe's AdamW settings the GPT weights agree.

Dropout is off in both (the models are in eval mode while they train): the two draw their masks
from the random stream in different orders (SDPA against eager attention), so with dropout on the
same computation would see different masks. The learning-rate schedule is left out too (coqui's
recipe keeps the rate constant for 50 000 steps; ours warms up and decays): docs/train.md lists
both as deliberate differences.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

LR = 5e-6  # the recipe's


def _base(root: Path, args) -> Path:
    """A model folder with random weights for ``args`` and the DVAE that GPTTrainer hard-codes."""
    import torch
    from TTS.tts.configs.xtts_config import XttsAudioConfig, XttsConfig
    from TTS.tts.layers.xtts.tokenizer import VoiceBpeTokenizer
    from TTS.tts.models.xtts import Xtts

    from xttsft.model.base import _build_tiny_vocab, _new_dvae

    base = root / "base"
    base.mkdir(parents=True)
    _build_tiny_vocab(base / "vocab.json")
    config = XttsConfig(
        model_args=args,
        audio=XttsAudioConfig(sample_rate=22050, output_sample_rate=24000, dvae_sample_rate=22050),
        languages=["en"],
    )
    config.model_args.tokenizer_file = ""
    torch.manual_seed(0)
    model = Xtts(config)
    model.tokenizer = VoiceBpeTokenizer(vocab_file=str(base / "vocab.json"))
    model.init_models()
    torch.save({"model": model.state_dict()}, base / "model.pth")
    # coqui's checkpoint: the same weights without the HiFi-GAN (neither trainer uses it, and GPTTrainer
    # builds its decoder at XTTS-v2's width, which the tiny GPT's latents do not have)
    if args.gpt_n_model_channels != 1024:
        state = {k: v for k, v in model.state_dict().items() if not k.startswith("hifigan_decoder.")}
        torch.save({"model": state}, base / "coqui.pth")
    else:  # XTTS-v2's width: coqui reads the very same file
        (base / "coqui.pth").symlink_to(base / "model.pth")
    config.save_json(str(base / "config.json"))
    torch.save(_new_dvae().state_dict(), base / "dvae.pth")
    torch.save(torch.ones(80), base / "mel_stats.pth")
    torch.save(
        {
            "x": {
                "gpt_cond_latent": torch.randn(1, 32, args.gpt_n_model_channels),
                "speaker_embedding": torch.randn(1, 512, 1),
            }
        },
        base / "speakers_xtts.pth",
    )
    return base


def _clips(root: Path, speak, n: int) -> list[dict]:
    texts = [
        "The cat sat on the mat today.",
        "We like green apples and pears.",
        "Open the red door now please.",
        "Birds fly over the quiet sea.",
        "It is a sunny day in the park.",
        "Good morning to you, my friend.",
    ]
    return [
        {
            "text": t,
            "audio_file": str(speak(t, root / "wavs" / f"c{i}.wav", rate=150)),
            "speaker_name": "s",
            "language": "en",
            "root_path": str(root),
            "audio_unique_name": f"c{i}",
        }
        for i, t in enumerate(texts[:n])
    ]


def _coqui(base: Path, args, masking: bool = False, batch_size: int = 2):
    from TTS.tts.configs.xtts_config import XttsAudioConfig
    from TTS.tts.layers.xtts.trainer.gpt_trainer import GPTArgs, GPTTrainer, GPTTrainerConfig

    names = (
        "gpt_layers",
        "gpt_n_model_channels",
        "gpt_n_heads",
        "gpt_max_audio_tokens",
        "gpt_max_text_tokens",
        "gpt_max_prompt_tokens",
        "gpt_number_text_tokens",
        "gpt_start_text_token",
        "gpt_stop_text_token",
        "gpt_num_audio_tokens",
        "gpt_start_audio_token",
        "gpt_stop_audio_token",
        "gpt_code_stride_len",
        "gpt_use_masking_gt_prompt_approach",
        "gpt_use_perceiver_resampler",
    )
    gpt_args = GPTArgs(  # recipes/ljspeech/xtts_v2/train_gpt_xtts.py
        max_conditioning_length=132300,
        min_conditioning_length=66150,
        debug_loading_failures=False,
        max_wav_length=255995,
        max_text_length=200,
        mel_norm_file=str(base / "mel_stats.pth"),
        dvae_checkpoint=str(base / "dvae.pth"),
        xtts_checkpoint=str(base / "coqui.pth"),
        tokenizer_file=str(base / "vocab.json"),
        **{k: getattr(args, k) for k in names},
    )
    # its dataset then draws a conditioning slice and its length (cond_lens), the path xttsft trains on,
    # instead of marking a span of the clip itself (cond_idxs)
    gpt_args.gpt_use_masking_gt_prompt_approach = masking
    config = GPTTrainerConfig(
        model_args=gpt_args,
        audio=XttsAudioConfig(sample_rate=22050, dvae_sample_rate=22050, output_sample_rate=24000),
        batch_size=batch_size,
        eval_batch_size=batch_size,
        num_loader_workers=0,
        optimizer="AdamW",
        optimizer_wd_only_on_weights=True,
        optimizer_params={"betas": [0.9, 0.96], "eps": 1e-8, "weight_decay": 1e-2},
        lr=LR,
    )
    return GPTTrainer.init_from_config(config), config


def _coqui_run(base: Path, args, samples: list[dict], steps: int) -> tuple[list[dict], list[tuple[float, float]], dict]:
    """coqui's recipe: the raw batches its dataset drew, its losses per step, its GPT weights after."""
    import torch

    torch.manual_seed(1)
    trainer, config = _coqui(base, args)
    loader = trainer.get_data_loader(config, is_eval=False, samples=samples, verbose=False)
    raws: list[dict] = []
    while len(raws) < steps:  # as many epochs as it takes: each draws new conditioning slices
        raws += [copy.deepcopy(b) for b in loader][: steps - len(raws)]
    opt = trainer.get_optimizer()
    trainer.xtts.gpt.eval()  # no dropout (module docstring)
    losses = []
    for raw in raws:
        batch = trainer.format_batch_on_device(trainer.format_batch(copy.deepcopy(raw)))
        assert batch["cond_idxs"] is None and batch["cond_lens"] is not None  # the cond_lens path
        _, out = trainer.train_step(batch, None)
        out["loss"].backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append((float(out["loss_text_ce"]), float(out["loss_mel_ce"])))
    return raws, losses, {k: v.detach().clone() for k, v in trainer.xtts.gpt.state_dict().items()}


def _ours_run(base: Path, raws: list[dict]) -> tuple[list[tuple[float, float]], dict, dict]:
    """xttsft's step on the same raw batches: Featurizer, gpt_loss, the fused AdamW of build_optimization."""

    from xttsft.settings import TrainSettings
    from xttsft.training.train import build_model, build_optimization, gpt_loss, resolve_train_settings
    from xttsft.training.train_data import Featurizer

    ts = TrainSettings(
        base_model=str(base),
        use_lora=False,
        batch_size=2,
        grad_accum_steps=1,
        device="cpu",
        use_amp=False,
        gradient_checkpointing=False,
        learning_rate=LR,
        warmup_steps=0,
        max_grad_norm=0.0,
    )
    res = resolve_train_settings(ts)
    gpt = build_model(base, ts, res).gpt
    before = {k: v.detach().clone() for k, v in gpt.state_dict().items()}
    gpt.eval()  # no dropout (module docstring)
    feats = Featurizer.from_base(base, "cpu")
    opt = build_optimization(gpt, ts, res, total_steps=1000).optimizer
    losses = []
    for raw in raws:
        out = gpt_loss(gpt, feats(copy.deepcopy(raw)))
        out["loss"].backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append((float(out["loss_text_ce"]), float(out["loss_mel_ce"])))
    return losses, before, {k: v.detach().clone() for k, v in gpt.state_dict().items()}


def _check(base: Path, args, samples: list[dict], steps: int) -> None:
    raws, theirs, coqui_after = _coqui_run(base, args, samples, steps)
    ours, before, ours_after = _ours_run(base, raws)
    from xttsft.training.train import MEL_CE_WEIGHT, TEXT_CE_WEIGHT

    for (t1, m1), (t2, m2) in zip(theirs, ours, strict=True):  # coqui reports its losses already weighted
        assert t2 * TEXT_CE_WEIGHT == pytest.approx(t1, rel=1e-5), (theirs, ours)
        assert m2 * MEL_CE_WEIGHT == pytest.approx(m1, rel=1e-5), (theirs, ours)
    assert theirs[-1] != theirs[0], "the steps changed the model"
    moved = max(float((ours_after[k] - before[k]).abs().max()) for k in before)
    assert moved > LR / 2, "the weights moved"
    worst = max(float((ours_after[k] - coqui_after[k].to(ours_after[k].dtype)).abs().max()) for k in before)
    # each AdamW step moves a weight by at most about the learning rate; both moved the same way
    assert worst < LR * 0.1, f"weights differ by up to {worst:.2e} after {steps} steps (lr {LR:.0e})"


def test_tiny_step_equals_coquis_recipe(tmp_path: Path, speak) -> None:
    from xttsft.model.base import _tiny_config

    args = _tiny_config(tmp_path / "unused.json").model_args
    args.gpt_number_text_tokens = 6681
    base = _base(tmp_path, args)
    _check(base, args, _clips(tmp_path / "ds", speak, 6), steps=3)


@pytest.mark.heavy
def test_full_size_step_equals_coquis_recipe(tmp_path: Path, speak) -> None:
    """The full-size XTTS-v2 architecture (random weights, fp32, CPU): 30 layers, width 1024."""
    from xttsft.model.base import xtts_v2_args

    args = xtts_v2_args()
    base = _base(tmp_path, args)
    _check(base, args, _clips(tmp_path / "ds", speak, 2), steps=3)


def test_coquis_masking_approach_gives_a_nan_validation_loss(tmp_path: Path, speak) -> None:
    """Why xttsft conditions on a slice of another clip (docs/train.md, Data): coqui's default
    "masking" approach slices the target clip itself and GPT.forward masks the mel targets from the
    slice's start on, counting the slice in mel frames (256 samples) where targets are codes (1024
    samples). Validation slices from the start of the clip, so every target of a clip up to about
    18 s is masked and the validation mel loss is NaN; the cond_lens path on the same clips is not."""
    import math

    import torch

    from xttsft.model.base import _tiny_config

    args = _tiny_config(tmp_path / "unused.json").model_args
    args.gpt_number_text_tokens = 6681
    base = _base(tmp_path, args)
    samples = _clips(tmp_path / "ds", speak, 2)  # 2-3 s each
    mel = {}
    for masking in (True, False):
        torch.manual_seed(1)
        trainer, config = _coqui(base, args, masking=masking, batch_size=1)
        batch = next(iter(trainer.get_data_loader(config, is_eval=True, samples=samples, verbose=False)))
        batch = trainer.format_batch_on_device(trainer.format_batch(batch))
        trainer.xtts.gpt.eval()
        with torch.no_grad():
            mel[masking] = float(trainer.train_step(batch, None)[1]["loss_mel_ce"])
    assert math.isnan(mel[True]) and math.isfinite(mel[False]), mel
