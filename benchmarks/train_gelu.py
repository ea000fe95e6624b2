"""The fused GELU against transformers' gelu_new, in one process, on the same batches.

``xttsft`` gives coqui's GPT-2 blocks PyTorch's ``nn.GELU(approximate="tanh")`` in place of
transformers' ``gelu_new`` (``xttsft.model.fuse_gelu``). An epoch-level comparison
(``train_vs_coqui.py --ablations``) runs each system in its own process, minutes apart, and
this 2-core machine drifts by up to 10 % in that time: more than the effect. Here one
full-size model (random weights, full fine-tune, fp32, 2 threads) runs forward + backward on
the same batch with each activation in turn, in alternating order, and the medians are
compared. The batches are the longest and the shortest of ``train_vs_coqui``'s 12 clips.

    python benchmarks/train_gelu.py              # 3 rounds
    python benchmarks/train_gelu.py --rounds 5

Writes benchmarks/results/train_gelu.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from datetime import date
from pathlib import Path

from _common import machine

HERE = Path(__file__).resolve().parent


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    from xttsft.hardware import tune_process

    tune_process()  # before torch loads, as the CLI does
    import torch
    from transformers.activations import NewGELUActivation

    from train_vs_coqui import CACHE, make_base, make_dataset
    from xttsft.data.datasets import read_dataset
    from xttsft.settings import TrainSettings
    from xttsft.training.train import build_model, gpt_loss, resolve_train_settings, set_threads
    from xttsft.training.train_data import ClipDataset, Featurizer, epoch_batches, make_loader, prepare_data

    CACHE.mkdir(parents=True, exist_ok=True)
    base, ds = make_base(CACHE), make_dataset(CACHE, 12)
    ts = TrainSettings(
        base_model=str(base),
        dataset_dir=ds,
        use_lora=False,
        batch_size=2,
        grad_accum_steps=1,
        device="cpu",
        use_amp=False,
        gradient_checkpointing=False,
        num_threads=args.threads,
        use_tensorboard=False,
    )
    res = resolve_train_settings(ts)
    set_threads(ts)
    torch.manual_seed(0)
    model = build_model(base, ts, res)  # load_xtts: the fused GELU
    gpt = model.gpt.train()
    feats = Featurizer.from_base(base, "cpu")
    data = prepare_data(
        read_dataset(ds),
        model.xtts.tokenizer,
        model.xtts.args.gpt_max_audio_tokens,
        model.xtts.args.gpt_max_text_tokens,
    )
    batches = list(
        make_loader(
            ClipDataset(data.train, ts.seed, is_eval=False),
            epoch_batches([s.n_samples for s in data.train], 2, ts.seed, 0),
            0,
        )
    )
    by_length = sorted(batches, key=lambda b: b["wav"].shape[-1])
    acts = {
        "fused GELU (xttsft)": [b.mlp.act for b in gpt.gpt.h],
        "gelu_new (coqui, transformers)": [NewGELUActivation() for _ in gpt.gpt.h],
    }

    def step(fb: dict) -> float:
        t = time.perf_counter()
        gpt_loss(gpt, fb)["loss"].backward()
        gpt.zero_grad(set_to_none=True)
        return time.perf_counter() - t

    rows, ratios = [], {}
    for label, batch in (("longest", by_length[-1]), ("shortest", by_length[0])):
        fb = feats(batch)
        step(fb)  # warm-up
        times: dict[str, list[float]] = {k: [] for k in acts}
        for r in range(args.rounds):
            for name in list(acts) if r % 2 == 0 else list(acts)[::-1]:
                for block, act in zip(gpt.gpt.h, acts[name], strict=True):
                    block.mlp.act = act
                times[name].append(round(step(fb), 2))
        tokens = int(fb["audio_codes"].shape[-1])
        for name, ts_ in times.items():
            rows.append(
                {
                    "batch": f"{label} (2 x {tokens} audio tokens)",
                    "activation": name,
                    "median_s": round(statistics.median(ts_), 2),
                    "each_s": ts_,
                }
            )
            print(rows[-1], file=sys.stderr, flush=True)
        fused, plain = (statistics.median(v) for v in times.values())
        ratios[f"fused_vs_gelu_new_{label}"] = round(fused / plain, 3)
    print(json.dumps(ratios, indent=2))
    out = {
        "name": "train_gelu",
        "date": date.today().isoformat(),
        "machine": machine(),
        "notes": f"full-size XTTS-v2 GPT (random weights), full fine-tune forward + backward (no optimizer), "
        f"fp32, {args.threads} threads; one process, the activation swapped between steps, "
        f"{args.rounds} alternating rounds, medians. `python benchmarks/train_gelu.py`.",
        "rows": rows,
        "ratios": ratios,
    }
    (HERE / "results" / "train_gelu.json").write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
