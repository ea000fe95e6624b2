"""Benchmark one XTTS-v2 training step: LoRA vs full fine-tune, gradient checkpointing (and AMP on a GPU).

Full-size XTTS-v2 architecture (GPT 30 layers x 1024, random init: no download), the
same batch for every mode, timed through the step `xttsft train` runs:
``xttsft.training.trainer.Trainer.train_step`` (conditioning mels and DVAE codes under no_grad,
coqui's GPT forward + weighted loss under autocast, scaled backward) and
``Trainer.optimizer_step`` (unscale, clip, AdamW, schedule), with the optimizer and AMP
dtype set up by ``xttsft.training.train``'s own ``build_optimization``/``resolve_train_settings``.
Each mode runs in its own subprocess so peak memories do not mix (peak RSS on CPU,
torch.cuda.max_memory_allocated on GPU).

    python benchmarks/train_step.py            # batch 2 x 6 s clips, 2 timed steps
    python benchmarks/train_step.py --quick    # batch 1 x 3 s, 1 timed step

Writes benchmarks/results/train_step.json. FACTS.md's CPU reference (coqui-style step,
batch 2 x 6 s): LoRA ~11 s and 8.7 GB, full ~16 s and 10.8 GB.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

from _common import machine

RESULTS = Path(__file__).parent / "results" / "train_step.json"
FACTS_CPU = {"lora": {"s_per_step": 11.0, "peak_gb": 8.7}, "full": {"s_per_step": 16.0, "peak_gb": 10.8}}


def worker(mode: str, batch: int, seconds: float, steps: int, amp: bool, gc: bool = False) -> dict:
    """Time the shipping step: xttsft.training.trainer.Trainer.train_step + optimizer_step, set up by train.py's parts."""
    import torch
    from TTS.tts.configs.xtts_config import XttsConfig
    from TTS.tts.models.xtts import Xtts

    from xttsft.model import _new_dvae, attach_lora, count_parameters, fuse_gelu, xtts_v2_args
    from xttsft.settings import TrainSettings
    from xttsft.training.train import (
        _enable_gradient_checkpointing,
        build_optimization,
        gpt_loss,
        resolve_train_settings,
    )
    from xttsft.training.train_data import Featurizer
    from xttsft.training.trainer import Trainer, TrainState

    torch.manual_seed(0)
    cuda = torch.cuda.is_available()
    ts = TrainSettings(
        use_lora=mode == "lora",
        use_amp=amp and cuda,
        gradient_checkpointing=gc,
        batch_size=batch,
        grad_accum_steps=1,
        device="cuda" if cuda else "cpu",
    )
    res = resolve_train_settings(ts)  # AMP dtype chosen exactly as `xttsft train` chooses it
    dev = res.device
    xtts = Xtts(XttsConfig(model_args=xtts_v2_args()))
    xtts.hifigan_decoder = None  # frozen and unused while training: not kept in memory
    gpt = xtts.gpt
    del xtts
    fuse_gelu(gpt.gpt)  # as load_xtts does for `xttsft train`
    if mode == "lora":
        attach_lora(gpt, ts)
    if gc:
        _enable_gradient_checkpointing(gpt.gpt)
    trainable, total = count_parameters(gpt)
    gpt.to(dev).train()
    optim = build_optimization(gpt, ts, res, total_steps=1000)
    feats = Featurizer(_new_dvae(), torch.ones(80), dev)
    trainer = Trainer(
        gpt=gpt,
        model=gpt,
        featurize=feats,
        loss_fn=gpt_loss,
        optimizer=optim.optimizer,
        scheduler=optim.scheduler,
        scaler=optim.scaler,
        batches_of=lambda e: [],
        loader_of=lambda e, b: [],
        validate=lambda: float("nan"),
        save_checkpoint=lambda *a: Path(),
        save_best=lambda *a: None,
        num_epochs=1,
        grad_accum_steps=1,
        max_grad_norm=1.0,
        max_nan_steps=5,
        save_every_n_epochs=1,
        amp_dtype=optim.amp_dtype,
        device_type=optim.device_type,
    )
    trainer.state = TrainState()
    g = torch.Generator().manual_seed(1)
    n = int(seconds * 22050)
    text_len = int(seconds * 12)
    data = {
        "padded_text": torch.randint(5, 6000, (batch, text_len), generator=g),
        "text_lengths": torch.full((batch,), text_len),
        "wav": torch.randn(batch, 1, n, generator=g) * 0.1,
        "wav_lengths": torch.full((batch,), n),
        "conditioning": torch.randn(batch, 1, 1, 132300, generator=g) * 0.1,
        "cond_lens": torch.full((batch,), 132300),
    }

    def step() -> None:
        trainer.train_step(data)
        trainer.optimizer_step(1)

    step()  # warm-up (allocations, AdamW state)
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t = time.perf_counter()
    for _ in range(steps):
        step()
    if cuda:
        torch.cuda.synchronize()
    s_per_step = (time.perf_counter() - t) / steps
    row = {
        "mode": mode + (f"+{res.amp_dtype}" if res.amp_dtype else "") + ("+gc" if gc else ""),
        "device": dev,
        "batch": f"{batch} x {seconds:g} s",
        "s_per_step": round(s_per_step, 2),
        "trainable_params": trainable,
        "trainable_pct": round(100 * trainable / total, 3),
        "gpt_params": total,
        "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2, 2),
        "threads": torch.get_num_threads(),
    }
    if cuda:
        row["peak_vram_gb"] = round(torch.cuda.max_memory_allocated() / 1024**3, 2)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="batch 1 x 3 s, 1 timed step")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--amp", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--gc", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, default=RESULTS, help="JSON results file")
    args = ap.parse_args()
    batch, seconds, steps = (1, 3.0, 1) if args.quick else (2, 6.0, 2)
    if args.worker:
        from xttsft.hardware import tune_process

        tune_process()  # the process settings `xttsft train` runs with (OpenMP passive wait, glibc heap)
        print(json.dumps(worker(args.worker, batch, seconds, steps, args.amp, args.gc)))
        return

    import torch
    from rich.console import Console
    from rich.table import Table

    console = Console()
    # (mode, AMP, gradient checkpointing); AMP rows only where a GPU exists
    modes = [("lora", False, False), ("full", False, False), ("lora", False, True)]
    if torch.cuda.is_available():
        modes += [("lora", True, False), ("full", True, False), ("lora", True, True)]
    rows = []
    load_before = os.getloadavg()[0]
    for mode, amp, gc in modes:
        console.print(
            f"running {mode}{'+amp' if amp else ''}{'+gc' if gc else ''} ({batch} x {seconds:g} s, {steps} timed steps)..."
        )
        cmd = (
            [sys.executable, __file__, "--worker", mode]
            + (["--quick"] if args.quick else [])
            + (["--amp"] if amp else [])
            + (["--gc"] if gc else [])
        )
        p = subprocess.run(cmd, capture_output=True, text=True)
        if p.returncode != 0:
            console.print(f"[red]{mode} failed:[/]\n{p.stderr[-2000:]}")
            sys.exit(1)
        rows.append(json.loads(p.stdout.strip().splitlines()[-1]))
    by = {r["mode"]: r for r in rows}
    ratios = {
        "full_over_lora_time": round(by["full"]["s_per_step"] / by["lora"]["s_per_step"], 2),
        "full_over_lora_peak_rss": round(by["full"]["peak_rss_gb"] / by["lora"]["peak_rss_gb"], 2),
        "full_over_lora_trainable": round(by["full"]["trainable_params"] / by["lora"]["trainable_params"], 1),
    }
    if not args.quick and by["lora"]["device"] == "cpu":
        for m in ("lora", "full"):
            ratios[f"facts_over_ours_{m}_time"] = round(FACTS_CPU[m]["s_per_step"] / by[m]["s_per_step"], 2)
            ratios[f"facts_over_ours_{m}_peak"] = round(FACTS_CPU[m]["peak_gb"] / by[m]["peak_rss_gb"], 2)
    ratios["lora_over_lora_gc_peak_rss"] = round(by["lora"]["peak_rss_gb"] / by["lora+gc"]["peak_rss_gb"], 2)
    ratios["lora_gc_over_lora_time"] = round(by["lora+gc"]["s_per_step"] / by["lora"]["s_per_step"], 2)
    amp_row = next((m for m in by if m.startswith("lora+") and "float" in m and "gc" not in m), None)
    if amp_row is not None:
        ratios["lora_amp_over_lora_vram"] = round(by[amp_row]["peak_vram_gb"] / by["lora"]["peak_vram_gb"], 2)
    table = Table(title=f"XTTS-v2 training step ({machine()})")
    heads = {
        "mode": "mode",
        "device": "device",
        "batch": "batch",
        "s_per_step": "s/step",
        "peak_rss_gb": "peak RSS GB",
        "peak_vram_gb": "peak VRAM GB",
        "trainable_params": "trainable",
        "trainable_pct": "trainable %",
    }
    cols = [c for c in heads if any(c in r for r in rows)]
    for c in cols:
        table.add_column(heads[c])
    for r in rows:
        table.add_row(*[f"{r[c]:,}" if isinstance(r.get(c), int) else str(r.get(c, "")) for c in cols])
    if by["lora"]["device"] == "cpu" and not args.quick:
        for m in ("lora", "full"):
            ref = {
                "mode": f"{m} (FACTS.md)",
                "device": "cpu",
                "batch": "2 x 6 s",
                "s_per_step": FACTS_CPU[m]["s_per_step"],
                "peak_rss_gb": FACTS_CPU[m]["peak_gb"],
            }
            table.add_row(*[str(ref.get(c, "")) for c in cols])
    console.print(table)
    for k, v in ratios.items():
        console.print(f"{k}: {v}x")
    out = {
        "name": "train_step",
        "date": date.today().isoformat(),
        "machine": machine(),
        "config": {
            "batch": batch,
            "clip_seconds": seconds,
            "timed_steps": steps,
            "quick": args.quick,
            # other work on a shared machine inflates s/step: the 1-min load average
            "load_average_before_after": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        },
        "rows": rows,
        "reference_facts_cpu": FACTS_CPU,
        "ratios": ratios,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    console.print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
