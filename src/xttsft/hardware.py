"""The machine and the settings it should train with: one place for every ``auto``.

* :func:`hardware_facts` gathers the cheap facts (GPUs through ``nvidia-smi``, CPU cores,
  RAM) without importing torch unless a GPU is present and ``nvidia-smi`` cannot describe it.
* :func:`recommend` is a **pure** function of those facts: batch size, gradient
  accumulation, mixed precision, gradient checkpointing and the Whisper model.
* :func:`current_recommendation` is that for this machine, logged once per process;
  train, transcribe, eval and run-all resolve their ``auto`` settings from it.
* :func:`resolve_device` turns a ``device`` setting (auto, cpu, cuda) into the device to use.
* :func:`tune_process` sets what must be set before torch loads (the CLI calls it first).

``xttsft doctor`` (:mod:`xttsft.doctor`) only reports these facts; the stages depend on
this module, not on the diagnostic command.
"""

from __future__ import annotations

import ctypes
import logging
import os
import shutil
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from xttsft.errors import SettingsError
from xttsft.logs import log_once

__all__ = [
    "GpuFacts",
    "HardwareFacts",
    "Recommendation",
    "EFFECTIVE_BATCH_SIZE",
    "hardware_facts",
    "recommend",
    "whisper_model_for",
    "CPU_WHISPER_MODEL",
    "current_recommendation",
    "resolve_device",
    "tune_process",
]

log = logging.getLogger(__name__)

# Effective batch (batch x grad accumulation) of one optimizer update.
# Coqui's recipe uses 3 x 84 = 252, sized for hundreds of hours of LJSpeech-like
# data. A personal dataset is 30-120 minutes, i.e. 300-1500 clips: at 252 an
# epoch is 1-6 updates, so the 50 warm-up steps alone outlast many epochs and the
# model sees few updates. 32 gives 10-50 updates per epoch while still averaging
# enough clips for a stable AdamW step (Coqui itself trained with 8 x 1).
EFFECTIVE_BATCH_SIZE = 32

GiB = 1024**3


# --------------------------------------------------------------------------- facts


@dataclass(frozen=True)
class GpuFacts:
    """One CUDA GPU as the driver reports it."""

    index: int
    name: str
    total_memory_mib: int
    free_memory_mib: int | None = None
    compute_capability: tuple[int, int] = (0, 0)

    @property
    def total_gib(self) -> float:
        return self.total_memory_mib / 1024

    @property
    def free_gib(self) -> float | None:
        return None if self.free_memory_mib is None else self.free_memory_mib / 1024

    @property
    def bf16(self) -> bool:
        """bfloat16 runs natively from Ampere (compute capability 8.0) on."""
        return self.compute_capability >= (8, 0)

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "name": self.name,
            "total_memory_gib": round(self.total_gib, 2),
            "free_memory_gib": None if self.free_gib is None else round(self.free_gib, 2),
            "compute_capability": f"{self.compute_capability[0]}.{self.compute_capability[1]}",
            "bf16": self.bf16,
        }


@dataclass(frozen=True)
class HardwareFacts:
    """What :func:`recommend` needs to know about the machine."""

    gpus: tuple[GpuFacts, ...] = ()
    cpu_count: int = 1
    ram_total_gib: float = 0.0
    ram_available_gib: float | None = None
    gpu_source: str = "none"  # nvidia-smi, torch or none

    @property
    def has_gpu(self) -> bool:
        return bool(self.gpus)

    def to_dict(self) -> dict[str, Any]:
        return {
            "gpus": [g.to_dict() for g in self.gpus],
            "gpu_source": self.gpu_source,
            "cpu_count": self.cpu_count,
            "ram_total_gib": round(self.ram_total_gib, 2),
            "ram_available_gib": None if self.ram_available_gib is None else round(self.ram_available_gib, 2),
        }


def _visible_indices() -> list[int] | None:
    """GPU indices allowed by CUDA_VISIBLE_DEVICES; None: all, or not decidable here."""
    value = os.environ.get("CUDA_VISIBLE_DEVICES")
    if value is None:
        return None
    value = value.strip()
    if value == "":
        return []
    out: list[int] = []
    for part in value.split(","):
        part = part.strip()
        if not part.lstrip("-").isdigit():
            return None  # UUIDs or MIG names: let torch decide
        if int(part) < 0:
            break  # CUDA stops at the first invalid index
        out.append(int(part))
    return out


def _nvidia_smi(query: str) -> str | None:
    """Output of ``nvidia-smi --query-gpu=QUERY`` as CSV; None when it is missing or fails."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        proc = subprocess.run(
            [exe, f"--query-gpu={query}", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        log.debug("nvidia-smi failed: %s", exc)
        return None
    if proc.returncode != 0:
        # no driver loaded, or a driver too old for the query (compute_cap): let torch decide
        log.debug("nvidia-smi exit %s: %s", proc.returncode, proc.stderr.strip())
        return None
    return proc.stdout


def _gpus_from_nvidia_smi() -> list[GpuFacts] | None:
    """GPUs from ``nvidia-smi``'s CSV query; None when it is missing or fails."""
    out = _nvidia_smi("index,name,memory.total,memory.free,compute_cap")
    if out is None:
        return None
    gpus: list[GpuFacts] = []
    for line in out.strip().splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) < 5:
            return None
        try:
            major, minor = (int(x) for x in parts[4].split(".")[:2])
            gpus.append(GpuFacts(int(parts[0]), parts[1], int(float(parts[2])), int(float(parts[3])), (major, minor)))
        except ValueError:
            return None  # "[N/A]" fields (old driver): ask torch instead
    visible = _visible_indices()
    if visible is None and "CUDA_VISIBLE_DEVICES" in os.environ:
        return None
    if visible is not None:
        by_index = {g.index: g for g in gpus}
        gpus = [by_index[i] for i in visible if i in by_index]
        # renumber as CUDA will see them
        gpus = [
            GpuFacts(n, g.name, g.total_memory_mib, g.free_memory_mib, g.compute_capability) for n, g in enumerate(gpus)
        ]
    return gpus


def _gpus_from_torch() -> list[GpuFacts]:
    try:
        import torch
    except Exception as exc:  # noqa: BLE001 - torch missing or broken: doctor says so elsewhere
        log.debug("cannot import torch: %s", exc)
        return []
    if not torch.cuda.is_available():
        return []
    gpus = []
    for i in range(torch.cuda.device_count()):
        props = torch.cuda.get_device_properties(i)
        try:
            free, total = torch.cuda.mem_get_info(i)
        except Exception:  # noqa: BLE001
            free, total = None, props.total_memory
        gpus.append(
            GpuFacts(
                i,
                props.name,
                int(total // 2**20),
                None if free is None else int(free // 2**20),
                (props.major, props.minor),
            )
        )
    return gpus


def _ram_gib() -> tuple[float, float | None]:
    try:
        import psutil

        vm = psutil.virtual_memory()
        return vm.total / GiB, vm.available / GiB
    except Exception:  # noqa: BLE001
        pass
    try:
        pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        return pages / GiB, None
    except (ValueError, OSError, AttributeError):
        return 0.0, None


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def hardware_facts() -> HardwareFacts:
    """The cheap facts: GPUs (``nvidia-smi`` first; torch only when a GPU is
    present and nvidia-smi cannot describe it), usable CPU cores and RAM."""
    gpus = _gpus_from_nvidia_smi()
    source = "nvidia-smi"
    if gpus is None:
        if Path("/proc/driver/nvidia").exists() or shutil.which("nvidia-smi"):
            gpus, source = _gpus_from_torch(), "torch"
        else:
            gpus = []
    if not gpus:
        source = "none"
    total, available = _ram_gib()
    return HardwareFacts(
        gpus=tuple(gpus), cpu_count=_cpu_count(), ram_total_gib=total, ram_available_gib=available, gpu_source=source
    )


# -------------------------------------------------------------------- recommendation


@dataclass(frozen=True)
class Recommendation:
    """Settings for this hardware. Stages use them for every ``auto`` value."""

    device: Literal["cuda", "cpu"]
    train_batch_size: int
    grad_accum_steps: int
    use_amp: bool
    amp_dtype: Literal["bfloat16", "float16"] | None
    gradient_checkpointing: bool
    whisper_model: str
    whisper_device: Literal["cuda", "cpu"]
    whisper_compute_type: str
    whisper_batch_size: int
    notes: list[str] = field(default_factory=list)

    @property
    def effective_batch_size(self) -> int:
        return self.train_batch_size * self.grad_accum_steps

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["effective_batch_size"] = self.effective_batch_size
        return d

    def summary(self) -> str:
        """One line for the logs."""
        amp = f"AMP {self.amp_dtype}" if self.use_amp else "AMP off"
        return (
            f"device {self.device}, batch {self.train_batch_size} x accum {self.grad_accum_steps}, {amp}, "
            f"gradient checkpointing {'on' if self.gradient_checkpointing else 'off'}; "
            f"Whisper {self.whisper_model} on {self.whisper_device} ({self.whisper_compute_type}, "
            f"batch {self.whisper_batch_size})"
        )


# Per-GPU training batch by total VRAM of the smallest card (GiB as the driver
# reports it: an "8 GB" card shows 7.8-8.0, a "24 GB" A10 22.5, a "16 GB" T4 15).
# Columns: minimum GiB, LoRA batch, LoRA checkpointing, full batch, full checkpointing.
# XTTS-v2 loads ~2 GB of fp32 weights (GPT 427.5 M params); a full fine-tune adds
# gradients and AdamW moments for all of them (~5 GB more), LoRA only for ~4 M.
# One 11.6 s sample (the longest XTTS trains on) costs roughly 0.5 GB of
# activations in mixed precision without checkpointing.
_GPU_TIERS: tuple[tuple[float, int, bool, int, bool], ...] = (
    (70.0, 32, False, 24, False),  # 80 GB (A100/H100 80G)
    (40.0, 16, False, 12, False),  # 40-48 GB (A100 40G, A6000, L40S)
    (20.0, 8, False, 4, False),  # 24 GB (3090/4090, A10)
    (14.0, 6, False, 2, True),  # 16 GB (T4, 4080, A4000)
    (10.0, 4, False, 2, True),  # 10-12 GB (3080, 3060 12G, 2080 Ti 11G)
    (7.0, 2, True, 1, True),  # 8 GB (3070, 2080, 4060)
    (0.0, 1, True, 1, True),  # 6 GB and less
)


def _tier(total_gib: float) -> tuple[float, int, bool, int, bool]:
    return next(t for t in _GPU_TIERS if total_gib >= t[0])


def _whisper_for_gpu(gpu: GpuFacts) -> tuple[str, str, int]:
    """(model, compute type, batch size) for faster-whisper on one GPU."""
    gib = gpu.total_gib
    if gib >= 10:
        model = "large-v3"
        batch = 24 if gib >= 20 else 16 if gib >= 14 else 8
    elif gib >= 5:
        model = "medium"
        batch = 8 if gib >= 7 else 4
    else:
        model = "small"
        batch = 4
    # CTranslate2: float16 needs compute capability >= 7.0, int8 >= 6.1.
    if gpu.compute_capability >= (7, 0):
        compute = "float16"
    elif gpu.compute_capability >= (6, 1):
        compute = "int8"
    else:
        compute = "float32"
    return model, compute, batch


#: The Whisper model doctor picks for a CPU.
CPU_WHISPER_MODEL = "small"


def whisper_model_for(hw: HardwareFacts, device: str) -> tuple[str, str]:
    """The Whisper model ``TRANSCRIBE_MODEL=auto`` stands for on ``device`` (``cuda`` or ``cpu``), and why,
    in words: the model :func:`recommend` picks, for the device actually used (TRANSCRIBE_DEVICE=cpu on a
    GPU machine gets the CPU's model). Pure, like :func:`recommend`."""
    if device.startswith("cuda") and hw.gpus:
        gpu = hw.gpus[0]
        return _whisper_for_gpu(gpu)[0], f"cuda, {gpu.name} {gpu.total_gib:.0f} GB"
    return CPU_WHISPER_MODEL, f"cpu, {hw.ram_total_gib:.0f} GB RAM"


def recommend(hw: HardwareFacts, use_lora: bool = True) -> Recommendation:
    """Training and transcription settings for ``hw``. Pure: same facts, same answer.

    * GPU: the per-GPU batch follows the smallest card's VRAM (8 GB -> 2 with
      LoRA, 12 GB -> 4, 24 GB -> 8, 80 GB -> 32); a full fine-tune gets smaller
      batches and gradient checkpointing below 20 GB. AMP is on, bfloat16 where
      the card supports it (compute capability >= 8.0), else float16.
    * CPU: batch 2 (1 with little RAM), AMP off, Whisper ``small`` in int8.
    * Gradient accumulation keeps the effective batch near
      :data:`EFFECTIVE_BATCH_SIZE`.
    * Whisper: large-v3 on >= 10 GB, medium on >= 5 GB, small below or on CPU.
    """
    return _recommend_gpu(hw, use_lora) if hw.gpus else _recommend_cpu(hw, use_lora)


def _recommend_gpu(hw: HardwareFacts, use_lora: bool) -> Recommendation:
    smallest = min(hw.gpus, key=lambda g: g.total_memory_mib)
    _, lora_batch, lora_ckpt, full_batch, full_ckpt = _tier(smallest.total_gib)
    batch, ckpt = (lora_batch, lora_ckpt) if use_lora else (full_batch, full_ckpt)
    bf16 = all(g.bf16 for g in hw.gpus)
    whisper_model, whisper_compute, whisper_batch = _whisper_for_gpu(hw.gpus[0])
    return Recommendation(
        device="cuda",
        train_batch_size=batch,
        grad_accum_steps=max(1, round(EFFECTIVE_BATCH_SIZE / batch)),
        use_amp=True,
        amp_dtype="bfloat16" if bf16 else "float16",
        gradient_checkpointing=ckpt,
        whisper_model=whisper_model,
        whisper_device="cuda",
        whisper_compute_type=whisper_compute,
        whisper_batch_size=whisper_batch,
        notes=_gpu_notes(hw, smallest, use_lora, bf16, ckpt),
    )


def _gpu_notes(hw: HardwareFacts, smallest: GpuFacts, use_lora: bool, bf16: bool, ckpt: bool) -> list[str]:
    """What a user of these cards should know: no bf16, too little VRAM, checkpointing, DDP, busy cards."""
    notes: list[str] = []
    gib = smallest.total_gib
    if not bf16:
        notes.append(
            f"{smallest.name} has no bfloat16 (compute capability "
            f"{smallest.compute_capability[0]}.{smallest.compute_capability[1]} < 8.0): AMP uses float16 "
            "with a gradient scaler."
        )
    if use_lora and gib < 5.5:
        notes.append(
            f"{gib:.1f} GB of VRAM is below what XTTS-v2 needs even with LoRA (about 6 GB); "
            "expect out-of-memory errors, or train on CPU with --device cpu."
        )
    if not use_lora and gib < 10:
        notes.append(
            f"A full fine-tune keeps gradients and AdamW state for all 427 M GPT weights (about 7 GB before "
            f"activations); {gib:.1f} GB will likely run out of memory. Use LoRA (TRAIN_USE_LORA=true)."
        )
    if ckpt:
        mode = "LoRA" if use_lora else "full fine-tune"
        notes.append(
            f"Gradient checkpointing on: it trades about 30% speed for memory on a {gib:.0f} GB card ({mode})."
        )
    if len(hw.gpus) > 1:
        notes.append(
            f"{len(hw.gpus)} GPUs: DDP through torchrun is possible (one process per GPU); the batch is per GPU, "
            f"sized by the smallest card ({smallest.name}, {gib:.0f} GB); divide grad_accum_steps by "
            f"{len(hw.gpus)} to keep the effective batch. A plain run uses only TRAIN_CUDA_DEVICE_ID."
        )
    for g in hw.gpus:
        if g.free_gib is not None and g.free_gib < 0.8 * g.total_gib:
            notes.append(
                f"GPU {g.index} ({g.name}) has only {g.free_gib:.1f} of {g.total_gib:.1f} GB free: other processes use "
                "it; the batch assumes the whole card."
            )
    return notes


def _recommend_cpu(hw: HardwareFacts, use_lora: bool) -> Recommendation:
    # Measured: LoRA at batch 2 peaks at 8.7 GB RSS, a full fine-tune at 10.8 GB.
    need = 9.0 if use_lora else 11.0
    batch = 2 if hw.ram_total_gib >= need + 4 else 1
    notes = [
        "No CUDA GPU: training runs on CPU, about 10-20 s per step of 2 clips with the full XTTS-v2; "
        "fine for tests and the tiny model, very slow for a real voice."
    ]
    if hw.ram_total_gib and hw.ram_total_gib < need:
        notes.append(
            f"{hw.ram_total_gib:.0f} GB of RAM is below the ~{need:.0f} GB XTTS-v2 "
            f"{'LoRA' if use_lora else 'full fine-tune'} needs on CPU; "
            "gradient checkpointing is on and it may still run out of memory."
        )
    return Recommendation(
        device="cpu",
        train_batch_size=batch,
        grad_accum_steps=max(1, round(EFFECTIVE_BATCH_SIZE / batch)),
        use_amp=False,
        amp_dtype=None,
        gradient_checkpointing=hw.ram_total_gib < need,
        whisper_model=CPU_WHISPER_MODEL,
        whisper_device="cpu",
        whisper_compute_type="int8",
        whisper_batch_size=8 if hw.cpu_count >= 8 else 4,
        notes=notes,
    )


def current_recommendation(use_lora: bool = True) -> Recommendation:
    """:func:`recommend` for this machine (cheap: no torch import without a GPU)."""
    hw = hardware_facts()
    rec = recommend(hw, use_lora=use_lora)
    gpus = ", ".join(f"{g.name} {g.total_gib:.0f} GB" for g in hw.gpus) or "no GPU"

    log_once(log, logging.INFO, "Hardware: %s, %d CPU cores, %.0f GB RAM", gpus, hw.cpu_count, hw.ram_total_gib)
    log_once(log, logging.INFO, "Recommended (%s): %s", "LoRA" if use_lora else "full", rec.summary())
    return rec


def resolve_device(setting: str, what: str = "--device ") -> str:
    """``auto`` -> ``cuda`` when torch sees a GPU, else ``cpu``; ``cuda`` without a GPU is refused.

    ``what`` names the setting in the message: ``"--device "`` or ``"TRAIN_DEVICE="``."""
    if setting not in ("auto", "cuda"):
        return setting
    import torch

    if setting == "cuda":
        if not torch.cuda.is_available():
            raise SettingsError(
                f"{what}cuda but no CUDA GPU is visible to PyTorch.",
                hint=f"Use {what}auto or {what}cpu, or check `xttsft doctor`.",
            )
        return "cuda"
    choice = "cuda" if torch.cuda.is_available() else "cpu"

    log_once(log, logging.INFO, "device auto -> %s", choice)
    return choice


def tune_process() -> None:
    """Process-wide settings for CPU work, set before torch loads (the environment wins).

    * ``OMP_WAIT_POLICY=PASSIVE``: OpenMP threads sleep instead of spinning while they wait. With a
      second busy process on a 2-core machine a training step took 4.1x its idle time with spinning
      threads and 1.75x with passive ones, for about 5 % when idle.
    * glibc keeps freed blocks up to 32 MB in its heap (``M_MMAP_THRESHOLD``) and does not hand
      them back (``M_TRIM_THRESHOLD``, ``M_TOP_PAD``): a training step frees and allocates
      gigabytes of activations and gradients, and every ``munmap``/``mmap`` pair costs page faults
      again. A full-size CPU epoch took 6 % less (84.4 vs 90.0 s, 2 rounds each), for 0.35 GB more peak RSS.
      ``MALLOC_*`` environment variables, when set, are left to glibc.

    Measured with ``benchmarks/train_vs_coqui.py`` (RESULTS.md)."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    if not sys.platform.startswith("linux") or any(k.startswith("MALLOC_") for k in os.environ):
        return
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc (musl, ...): nothing to tune
        return
    m_trim_threshold, m_top_pad, m_mmap_threshold = -1, -2, -3
    libc.mallopt(m_mmap_threshold, 32 << 20)  # glibc's largest mmap threshold on 64-bit
    libc.mallopt(m_trim_threshold, 2**31 - 1)
    libc.mallopt(m_top_pad, 1 << 30)
