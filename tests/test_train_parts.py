"""The training engine's parts on their own: batches, the state a resume restores, the GPU check's CPU mode."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from xttsft.training.train_data import epoch_batches
from xttsft.training.trainer import TrainState

ROOT = Path(__file__).resolve().parents[1]


def test_batches_are_seeded_complete_and_bucketed_by_length() -> None:
    lengths = [(k * 7919) % 300 + 30 for k in range(200)]  # a 3-15 s like mix, scrambled
    a = epoch_batches(lengths, 4, seed=1, epoch=0)
    assert a == epoch_batches(lengths, 4, seed=1, epoch=0)  # reproducible: resume draws the same batches
    assert a != epoch_batches(lengths, 4, seed=1, epoch=1)  # a new order every epoch
    assert sorted(i for b in a for i in b) == list(range(200))
    padding = lambda bs: sum(max(lengths[i] for i in b) * len(b) - sum(lengths[i] for i in b) for b in bs)  # noqa: E731
    plain = epoch_batches(lengths, 4, seed=1, epoch=0, bucket=False)
    assert padding(a) < 0.25 * padding(plain)  # similar lengths share a batch


@pytest.mark.parametrize("n,world", [(5, 2), (6, 2), (7, 2), (3, 3), (101, 3)])
def test_every_rank_gets_the_same_number_of_batches(n: int, world: int) -> None:
    # 101 samples, batch 2: several bucket spans of 32 samples per rank
    per_rank = [epoch_batches(list(range(1, n + 1)), 2, seed=3, epoch=0, rank=r, world=world) for r in range(world)]
    assert len({len(b) for b in per_rank}) == 1  # a DDP step needs every rank
    assert {i for bs in per_rank for b in bs for i in b} == set(range(n))  # no sample left out


def test_train_state_round_trip() -> None:
    import torch

    from xttsft.training.trainer import rng_state

    st = TrainState(
        epoch=2,
        batch_in_epoch=3,
        global_step=11,
        optimizer_step=5,
        run_loss=1.5,
        run_n=3,
        best_val_loss=0.7,
        best_epoch=2,
        history_train=[1.0, 0.9],
        history_val=[0.8, 0.7],
        rng=rng_state(),
    )
    p = torch.nn.Parameter(torch.zeros(2))
    opt = torch.optim.AdamW([p])
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    back = TrainState.from_dict(st.to_dict(opt, sched, scaler))
    assert (back.epoch, back.batch_in_epoch, back.global_step, back.optimizer_step) == (2, 3, 11, 5)
    assert (back.run_loss, back.run_n, back.best_val_loss, back.history_val) == (1.5, 3, 0.7, [0.8, 0.7])
    at_epoch_end = TrainState(epoch=3, run_loss=9.0, run_n=4).to_dict(opt, sched, scaler)
    assert at_epoch_end["epoch_loss_n"] == 0  # between epochs no partial sums are saved


def test_gpu_check_without_a_gpu_says_what_it_would_run() -> None:
    import torch

    dry = ["--dry-run"] if torch.cuda.is_available() else []  # on a GPU machine the real check takes minutes
    p = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gpu_check.py"), *dry], capture_output=True, text=True, timeout=120
    )
    assert p.returncode == 0, p.stderr
    assert "would run" in p.stdout.lower()
    for step in ("GPU tests", "train step lora", "train step full +gc", "synth", "faster-whisper"):
        assert step in p.stdout


def _formatted_batch(seed: int) -> dict:
    """A batch as Featurizer gives it, for the tiny GPT: two samples of 12 and 9 text tokens."""
    import torch

    g = torch.Generator().manual_seed(seed)
    return {
        "text_inputs": torch.randint(5, 200, (2, 12), generator=g),
        "text_lengths": torch.tensor([12, 9]),
        "audio_codes": torch.randint(0, 1024, (2, 40), generator=g),
        "wav_lengths": torch.tensor([40960, 30720]),
        "cond_mels": torch.randn(2, 1, 80, 120, generator=g),
        "cond_idxs": None,
        "cond_lens": torch.tensor([66150, 66150]),
    }


def test_gpt_attention_is_sdpa_and_matches_eager() -> None:
    """coqui's GPT-2 runs PyTorch's scaled_dot_product_attention (flash on a GPU that has it);
    it must give the loss the plain attention gives."""
    import torch

    from xttsft.model import build_tiny_model, load_xtts
    from xttsft.training.train import gpt_loss

    xtts = load_xtts(build_tiny_model(), for_training=True, keep_decoder=False)
    gpt = xtts.gpt.eval()
    assert gpt.gpt.config._attn_implementation == "sdpa"
    batch = _formatted_batch(seed=0)
    with torch.no_grad():
        sdpa = gpt_loss(gpt, batch)["loss"]
        gpt.gpt.config._attn_implementation = "eager"
        eager = gpt_loss(gpt, batch)["loss"]
    assert torch.isfinite(sdpa) and torch.allclose(sdpa, eager, rtol=1e-4, atol=1e-5)


def test_gpt_blocks_use_the_fused_gelu_and_it_gives_the_same_loss_and_gradients() -> None:
    """load_xtts swaps transformers' gelu_new (five tensor ops) for PyTorch's fused tanh GELU;
    the loss and the gradients must be those of the original activation."""
    import torch
    from transformers.activations import NewGELUActivation

    from xttsft.model import build_tiny_model, load_xtts
    from xttsft.training.train import gpt_loss

    xtts = load_xtts(build_tiny_model(), for_training=True, keep_decoder=False)
    gpt = xtts.gpt.eval()  # no dropout: the two passes must see the same network
    blocks = gpt.gpt.h
    assert len(blocks) > 0 and all(isinstance(b.mlp.act, torch.nn.GELU) for b in blocks)
    assert all(b.mlp.act.approximate == "tanh" for b in blocks)
    batch = _formatted_batch(seed=1)

    def loss_and_grads():
        gpt.zero_grad(set_to_none=True)
        loss = gpt_loss(gpt, batch)["loss"]
        loss.backward()
        return loss.detach(), [p.grad.clone() for p in blocks.parameters()]

    fused, fused_grads = loss_and_grads()
    for b in blocks:
        b.mlp.act = NewGELUActivation()
    plain, plain_grads = loss_and_grads()
    assert torch.isfinite(fused) and torch.allclose(fused, plain, rtol=1e-5, atol=1e-6)
    for a, b in zip(fused_grads, plain_grads, strict=True):
        assert torch.allclose(a, b, rtol=1e-3, atol=1e-6)


def test_an_error_in_a_data_loader_worker_reaches_the_user_as_one_message() -> None:
    from xttsft.errors import InputError
    from xttsft.training.train_data import make_loader

    class Broken:
        def __len__(self) -> int:
            return 2

        def __getitem__(self, i: int):
            raise InputError(f"clip {i}: cannot read audio.", hint="Re-create it.")

    with pytest.raises(InputError) as exc:
        list(make_loader(Broken(), [[0, 1]], num_workers=1))
    assert exc.value.message == "clip 0: cannot read audio." and exc.value.hint == "Re-create it."
    assert "Traceback" not in str(exc.value)
