"""`make gpu-check`: everything that only a GPU can measure, in one command (about 8 minutes on one GPU; the
step timeouts add up to 12).

Without a CUDA GPU it prints what it would run and exits 0 (CI runs it that way). With one, in order:

1. ``pytest -m gpu``: the GPU-only tests (nvidia-smi facts, the CUDA out-of-memory message,
   a single-GPU torchrun NCCL run);
2. the training-step matrix on the full-size XTTS-v2 architecture (random weights, no download):
   LoRA and full x bf16 / fp16 (+GradScaler) / fp32 x gradient checkpointing off/on x batch 1, 2, 4
   (6 s clips): s/step and peak VRAM (``torch.cuda.max_memory_allocated``), checked against the
   README's "LoRA trains on an 8 GB card" and against doctor's table;
3. ``benchmarks/synth.py --quick``: RTF and the streaming first-chunk latency;
4. ``benchmarks/transcribe.py --quick --device cuda``: batched faster-whisper on the GPU.

Results go to ``benchmarks/results/gpu_check.json`` (named after the GPU), and
``benchmarks/run_all.py --report`` renders them into ``benchmarks/RESULTS.md``.

    python scripts/gpu_check.py            # everything
    python scripts/gpu_check.py --dry-run  # only say what would run
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "gpu_check.json"
EIGHT_GB = 8.0
#: (mode, gradient checkpointing) per worker process; each builds the model once.
MATRIX = [("lora", False), ("lora", True), ("full", False), ("full", True)]
PRECISIONS = ("bfloat16", "float16", "float32")
BATCHES = (1, 2, 4)


def plan() -> list[tuple[str, list[str]]]:
    py = sys.executable
    return [
        ("GPU tests", [py, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider"]),
        *[(f"train step {m}{' +gc' if gc else ''}: {', '.join(PRECISIONS)} x batch {', '.join(map(str, BATCHES))}",
           [py, __file__, "--worker", m] + (["--gc"] if gc else [])) for m, gc in MATRIX],
        ("synth RTF and streaming first chunk", [py, str(ROOT / "benchmarks" / "synth.py"), "--quick"]),
        ("batched faster-whisper on the GPU", [py, str(ROOT / "benchmarks" / "transcribe.py"), "--quick",
                                               "--device", "cuda"]),
    ]


def worker(mode: str, gc: bool) -> list[dict]:
    """One model, every precision x batch: s/step and peak VRAM of the shipping step."""
    import torch
    from TTS.tts.configs.xtts_config import XttsConfig
    from TTS.tts.models.xtts import Xtts

    from xttsft.model import _new_dvae, attach_lora, fuse_gelu, xtts_v2_args
    from xttsft.settings import TrainSettings
    from xttsft.train import _enable_gradient_checkpointing, build_optimization, gpt_loss
    from xttsft.train_data import Featurizer
    from xttsft.trainer import Trainer, TrainState

    xtts = Xtts(XttsConfig(model_args=xtts_v2_args()))
    xtts.hifigan_decoder = None
    gpt = xtts.gpt
    del xtts
    fuse_gelu(gpt.gpt)  # as load_xtts does for `xttsft train`
    if mode == "lora":
        attach_lora(gpt, TrainSettings())
    else:
        gpt.requires_grad_(True)
    if gc:
        _enable_gradient_checkpointing(gpt.gpt)
    gpt.to("cuda").train()
    feats = Featurizer(_new_dvae(), torch.ones(80), "cuda")
    rows = []
    for precision in PRECISIONS:
        for batch in BATCHES:
            rows.append(_time_config(torch, gpt, feats, gpt_loss, Trainer, TrainState, build_optimization, mode, gc,
                                     precision, batch))
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    return rows


def _time_config(torch, gpt, feats, loss_fn, Trainer, TrainState, build_optimization, mode, gc, precision,  # noqa: N803
                 batch) -> dict:
    """One configuration through the shipping parts: train.build_optimization (fused AdamW, decay on
    weights only, the GradScaler for fp16) and Trainer.train_step + optimizer_step."""
    from xttsft.settings import TrainSettings
    from xttsft.train import Resolved

    row = {"mode": mode, "gc": gc, "precision": precision, "batch": batch}
    amp = None if precision == "float32" else precision
    res = Resolved("cuda", mode, 1e-5, batch, 1, amp is not None, amp, gc)
    optim = build_optimization(gpt, TrainSettings(use_lora=mode == "lora"), res, total_steps=1000)
    opt = optim.optimizer
    dtype = optim.amp_dtype
    trainer = Trainer(gpt=gpt, model=gpt, featurize=feats, loss_fn=loss_fn, optimizer=opt, scheduler=optim.scheduler,
                      scaler=optim.scaler, batches_of=lambda e: [], loader_of=lambda e, b: [], validate=lambda: 0.0,
                      save_checkpoint=lambda *a: Path(), save_best=lambda *a: None, num_epochs=1,
                      grad_accum_steps=1, max_grad_norm=1.0, max_nan_steps=5, save_every_n_epochs=1,
                      amp_dtype=dtype, device_type="cuda")
    trainer.state = TrainState()
    n, text_len = 6 * 22050, 72
    data = {"padded_text": torch.randint(5, 6000, (batch, text_len)), "text_lengths": torch.full((batch,), text_len),
            "wav": torch.randn(batch, 1, n) * 0.1, "wav_lengths": torch.full((batch,), n),
            "conditioning": torch.randn(batch, 1, 1, 132300) * 0.1, "cond_lens": torch.full((batch,), 132300)}
    try:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        trainer.train_step(data)
        trainer.optimizer_step(1)
        torch.cuda.synchronize()
        t = time.perf_counter()
        for _ in range(2):
            trainer.train_step(data)
            trainer.optimizer_step(1)
        torch.cuda.synchronize()
        row["s_per_step"] = round((time.perf_counter() - t) / 2, 3)
        row["peak_vram_gb"] = round(torch.cuda.max_memory_allocated() / 1024**3, 2)
        row["featurize_share"] = _featurize_share(torch, feats, data, row["s_per_step"])
    except torch.cuda.OutOfMemoryError:
        row["s_per_step"], row["peak_vram_gb"] = None, "OOM"
    finally:
        del opt, optim, trainer
        gpt.zero_grad(set_to_none=True)
        torch.cuda.empty_cache()
    return row


def _featurize_share(torch, feats, data: dict, s_per_step: float) -> float:
    """The share of a step that goes to the conditioning mels and DVAE codes (what a per-clip cache
    of them would save; on a CPU it is about 1 %)."""
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(2):
        feats(data)
    torch.cuda.synchronize()
    return round((time.perf_counter() - t) / 2 / s_per_step, 3)


def _run(label: str, cmd: list[str], timeout: int) -> tuple[int, str, float]:
    """Run one step; returns (exit status, its stdout, seconds). Its output is echoed as it was."""
    print(f"== {label}: {' '.join(cmd)}", flush=True)
    t = time.perf_counter()
    try:
        p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
        out, rc = p.stdout, p.returncode
        print((p.stdout + p.stderr)[-1500:], flush=True)
    except subprocess.TimeoutExpired:
        out, rc = "", 124
        print(f"timed out after {timeout} s", flush=True)
    return rc, out, time.perf_counter() - t


def _verdicts(rows: list[dict]) -> dict:
    """The 8 GB promise (LoRA, AMP, checkpointing, batch 2 as doctor picks for 8 GB) and the rest of doctor's table."""
    def row(mode: str, gc: bool, precision: str, batch: int) -> dict:
        return next((r for r in rows if (r["mode"], r["gc"], r["precision"], r["batch"]) == (mode, gc, precision, batch)),
                    {})

    eight = row("lora", True, "bfloat16", 2).get("peak_vram_gb")
    return {
        "lora_bf16_gc_batch2_peak_gb": eight,
        "fits_8gb_card": isinstance(eight, float) and eight <= EIGHT_GB - 1.0,  # leave ~1 GB to CUDA's context
        "full_fp32_batch1_peak_gb": row("full", False, "float32", 1).get("peak_vram_gb"),
        "lora_fp32_batch4_peak_gb": row("lora", False, "float32", 4).get("peak_vram_gb"),
        # above ~0.05, caching DVAE codes and conditioning mels per clip is worth building
        "featurize_share_lora_bf16_batch2": row("lora", False, "bfloat16", 2).get("featurize_share"),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dry-run", action="store_true", help="only print what would run")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--gc", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.gc)))
        return 0
    import torch

    steps = plan()
    if args.dry_run or not torch.cuda.is_available():
        print("No CUDA GPU here: `make gpu-check` would run, on a GPU machine:" if not args.dry_run else "Would run:")
        for label, cmd in steps:
            print(f"  - {label}: {' '.join(Path(c).name if c.endswith('.py') else c for c in cmd)}")
        print(f"and write {RESULTS.relative_to(ROOT)}, rendered into benchmarks/RESULTS.md.")
        return 0
    gpu = torch.cuda.get_device_name(0)
    t0 = time.perf_counter()
    report: dict = {"name": f"gpu_check ({gpu})", "date": date.today().isoformat(), "rows": [], "ratios": {}}
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from _common import machine

    report["machine"] = machine()
    rc, out, secs = _run(*steps[0], timeout=180)
    tail = [ln for ln in out.strip().splitlines() if ln.strip()][-1:] or ["?"]
    report["ratios"]["pytest_gpu"] = f"exit {rc}: {tail[0]} ({secs:.0f} s)"
    for label, cmd in steps[1:5]:
        rc, out, _ = _run(label, cmd, timeout=100)
        if rc == 0:
            report["rows"] += json.loads(out.strip().splitlines()[-1])
        else:
            report["rows"].append({"mode": label, "error": f"exit {rc}"})
    report["ratios"].update(_verdicts([r for r in report["rows"] if "precision" in r]))
    for label, cmd in steps[5:]:
        rc, _, secs = _run(label, cmd, timeout=60)
        report["ratios"][label] = f"exit {rc} in {secs:.0f} s (figures in its own results file)"
    report["ratios"]["total_seconds"] = round(time.perf_counter() - t0)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    subprocess.run([sys.executable, str(ROOT / "benchmarks" / "run_all.py"), "--report"], cwd=ROOT)
    print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
