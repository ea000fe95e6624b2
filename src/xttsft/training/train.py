"""``xttsft train``: fine-tune the XTTS-v2 GPT (LoRA or in full) on the build dataset.

This module is the orchestration: resolve the settings, open the run folder, build the
model, read the data, set up the optimizer and its state, then hand the named parts to
:class:`xttsft.training.trainer.Trainer`, which only loops. The data side lives in
:mod:`xttsft.training.train_data`.

Built on coqui-tts' own classes -- ``Xtts``/``GPT`` forward and loss, the frozen
``DiscreteVAE`` that turns 22.05 kHz mels into audio codes, ``TorchMelSpectrogram``
-- the way ``GPTTrainer`` uses them, but with our own loop instead of coqui's
``Trainer``: exact resume, NaN/inf handling, AMP, atomic checkpoints, data checks.

Differences from coqui's recipe, on purpose:

* Samples the model cannot take (too long, too much text, ``[UNK]`` tokens, missing
  or unreadable wav, shorter than 0.5 s) are counted and reported before training,
  never replaced silently by another sample (``XTTSDataset`` does that).
* The conditioning clip of a sample is a 3-6 s slice of *another* clip of the same
  speaker (``cond_lens`` path of ``GPT.forward``). coqui's masking approach slices
  the target clip itself and, because ``GPT.forward`` mixes mel-frame and code units,
  masks every target of clips shorter than ~6 s: the mel loss is then NaN.
* The HiFi-GAN decoder is not kept in memory during training (it is frozen and unused).

Default learning rates (``TRAIN_LEARNING_RATE=auto``, see :data:`DEFAULT_LR` and
docs/train.md): an overfit experiment on the tiny model (6 clips, 15 epochs, lr sweep)
picked the largest rate whose loss fell steadily: LoRA 3e-3, full 1e-3. It also showed
LoRA needs several times the full fine-tune's rate for the same progress. The real,
pretrained XTTS-v2 takes far smaller steps: full 5e-6 (coqui's recipe; FACTS.md saw it
overfit one batch at once even at 1e-5) and LoRA 1e-4 (at 1e-5 LoRA barely moved).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import random
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from xttsft import model as model_io
from xttsft.audio import TRAIN_SR as SAMPLE_RATE
from xttsft.data.datasets import read_dataset
from xttsft.errors import DatasetError, SettingsError, XttsftError
from xttsft.hardware import current_recommendation, hardware_facts, recommend, resolve_device
from xttsft.io import atomic_write_json, read_json
from xttsft.locks import hold
from xttsft.logs import log_once
from xttsft.model import (
    TINY_NOISE_WARNING,
    RunInfo,
    attach_lora,
    base_identity,
    checkpoint_bytes,
    count_parameters,
    is_tiny,
    list_checkpoints,
    load_gpt_weights,
    load_xtts,
    merged_gpt_state,
    read_run_info,
    resolve_base_model,
    resumable_states,
    safe_torch_load,
    tidy_run_dir,
    write_run_info,
)
from xttsft.model.runs import weights_only_start
from xttsft.paths import RunPaths
from xttsft.plots import figure, save_png
from xttsft.progress import Progress, no_progress
from xttsft.settings import TrainSettings
from xttsft.storage import require_free_space
from xttsft.training.train_data import (
    ClipDataset,
    DataReport,
    Featurizer,
    collate,
    dataset_changes,
    dataset_fingerprint,
    epoch_batches,
    keep_recorded_split,
    make_loader,
    prepare_data,
)
from xttsft.training.trainer import (
    ConsoleCallback,
    TensorBoardCallback,
    Trainer,
    TrainHooks,
    TrainingError,
    TrainState,
    prune_checkpoints,
    set_rng_state,
)

if TYPE_CHECKING:  # pragma: no cover
    from xttsft.data.datasets import Dataset
    from xttsft.paths import Workspace
    from xttsft.settings import Provenance, Settings, TrainSettings

__all__ = [
    "gpt_loss",
    "TEXT_CE_WEIGHT",
    "MEL_CE_WEIGHT",
    "DEFAULT_LR",
    "TrainingError",
    "TrainHooks",
    "TrainState",
    "Resolved",
    "DataReport",
    "TrainResult",
    "resolve_train_settings",
    "resume_settings",
    "prepare_data",
    "train",
    "TEST_SENTENCES",
]

log = logging.getLogger(__name__)

#: coqui's recipe: loss = 0.01 x text cross-entropy + 1.0 x mel (audio code) cross-entropy.
TEXT_CE_WEIGHT = 0.01
MEL_CE_WEIGHT = 1.0
#: Peak learning rate for TRAIN_LEARNING_RATE=auto, per model kind and mode.
#: tiny: the winners of the overfit sweep on the tiny model (docs/train.md: LoRA 1e-3 too
#: slow, 3e-3 steady, 1e-2 oscillates; full 5e-5 and 3e-4 slow, 1e-3 steady).
#: xtts-v2 (pretrained): full = coqui's recipe 5e-6; LoRA 20x that (the sweep and FACTS.md
#: show LoRA needs a much higher rate than full fine-tuning for the same progress).
DEFAULT_LR = {"tiny": {"lora": 3e-3, "full": 1e-3}, "xtts-v2": {"lora": 1e-4, "full": 5e-6}}
ADAMW_BETAS = (0.9, 0.96)
ADAMW_EPS = 1e-8


def gpt_loss(gpt, batch: dict[str, Any]) -> dict[str, Any]:
    """coqui's GPTTrainer.train_step on a formatted batch: the weighted text + mel CE."""
    cond_idxs = batch.get("cond_idxs")
    loss_text, loss_mel, _ = gpt(
        batch["text_inputs"],
        batch["text_lengths"],
        batch["audio_codes"],
        batch["wav_lengths"],
        cond_mels=batch["cond_mels"],
        # GPT.forward rescales cond_idxs in place: give it a copy
        cond_idxs=None if cond_idxs is None else cond_idxs.clone(),
        cond_lens=batch.get("cond_lens"),
    )
    loss = loss_text * TEXT_CE_WEIGHT + loss_mel * MEL_CE_WEIGHT
    return {"loss": loss, "loss_text_ce": loss_text, "loss_mel_ce": loss_mel}


# --------------------------------------------------------------------------- settings
@dataclass
class Resolved:
    """Every ``auto`` setting resolved for this machine, and why."""

    device: str
    mode: str
    learning_rate: float
    batch_size: int
    grad_accum_steps: int
    use_amp: bool
    amp_dtype: str | None
    gradient_checkpointing: bool
    notes: list[str] = field(default_factory=list)


def _recommendation(use_lora: bool, on_gpu: bool = True):
    """doctor's recommendation; ``on_gpu=False`` asks for the CPU one even where a GPU is present."""
    try:
        if on_gpu:
            return current_recommendation(use_lora=use_lora)
        import dataclasses

        return recommend(dataclasses.replace(hardware_facts(), gpus=(), gpu_source="none"), use_lora=use_lora)
    except Exception as exc:  # noqa: BLE001 - the recommendation must never stop training
        log.debug("doctor's recommendation unavailable: %r", exc)
        return None


def resolve_train_settings(ts: TrainSettings, tiny: bool = False) -> Resolved:
    """Resolve device, batch size, accumulation, AMP, checkpointing and lr (``auto`` values)."""
    import torch

    notes: list[str] = []
    device = resolve_device(ts.device, what="TRAIN_DEVICE=")
    if device == "cuda":
        if ts.cuda_device_id >= torch.cuda.device_count():
            raise SettingsError(
                f"TRAIN_CUDA_DEVICE_ID={ts.cuda_device_id} but only {torch.cuda.device_count()} GPU(s) are visible.",
                hint="Pick an index below the GPU count.",
            )
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', ts.cuda_device_id))}"
    mode = "lora" if ts.use_lora else "full"
    on_gpu = device.startswith("cuda")
    rec = _recommendation(ts.use_lora, on_gpu=on_gpu)

    def pick(name: str, value: Any, rec_value: Any, fallback: Any) -> Any:
        if value != "auto":
            return value
        chosen = rec_value if rec is not None else fallback
        notes.append(f"{name}=auto -> {chosen} ({'doctor' if rec is not None else 'default'})")
        return chosen

    batch_size = pick("batch_size", ts.batch_size, getattr(rec, "train_batch_size", None), 2)
    accum = pick("grad_accum_steps", ts.grad_accum_steps, getattr(rec, "grad_accum_steps", None), 1)
    use_amp = pick("use_amp", ts.use_amp, bool(getattr(rec, "use_amp", False)) and on_gpu, on_gpu)
    gc_ = pick("gradient_checkpointing", ts.gradient_checkpointing, getattr(rec, "gradient_checkpointing", None), False)
    amp_dtype: str | None = None
    if use_amp:
        if on_gpu:
            # the chosen card, natively: is_bf16_supported() asks the current device (GPU 0 before
            # set_device) and counts emulated bf16 (T4, V100) as supported
            native = bool(torch.version.hip) or torch.cuda.get_device_properties(torch.device(device)).major >= 8
            amp_dtype = "bfloat16" if native else "float16"
        else:
            amp_dtype = "bfloat16"  # CPU autocast supports bf16 only
        notes.append(f"AMP dtype {amp_dtype}" + (" with a GradScaler" if amp_dtype == "float16" else ""))
    if ts.learning_rate == "auto":
        kind = "tiny" if tiny else "xtts-v2"
        lr = DEFAULT_LR[kind][mode]
        notes.append(f"learning_rate=auto -> {lr:g} (tested default for {mode} on the {kind} model)")
    else:
        lr = float(ts.learning_rate)
    for n in notes:
        log.info("auto: %s", n)
    return Resolved(device, mode, lr, int(batch_size), int(accum), bool(use_amp), amp_dtype, bool(gc_), notes)


# --------------------------------------------------------------------------- test audio
TEST_SENTENCES = {
    "pt": ["Olá! Esta é a minha voz, treinada com o xttsft.", "O sol brilhava sobre o mar azul."],
    "en": ["Hello! This is my voice, trained with xttsft.", "The sun was shining on the blue sea."],
    "es": ["¡Hola! Esta es mi voz, entrenada con xttsft."],
}


class _TestAudio:
    """Speak a few test sentences with the current weights, for TensorBoard (real model only).

    A separate inference XTTS (with the HiFi-GAN decoder) is loaded on the CPU at the first
    evaluation and moved to the training device only while it speaks. Failures are logged,
    never fatal.
    """

    def __init__(self, base_dir: Path, language: str, speaker_wav: Path, device: str) -> None:
        self.base_dir, self.language, self.speaker_wav, self.device = base_dir, language, speaker_wav, device
        self.xtts: Any = None

    def _cuda_devices(self) -> list[int]:
        import torch

        return [torch.device(self.device).index or 0] if self.device.startswith("cuda") else []

    def __call__(self, gpt, mode: str, writer, step: int) -> int:
        import torch

        done = 0
        try:
            if self.xtts is None:  # built under a forked RNG: a resumed run draws what an uninterrupted one does
                with torch.random.fork_rng(devices=self._cuda_devices()):
                    self.xtts = load_xtts(self.base_dir, device="cpu")
                if is_tiny(self.base_dir):  # a random GPT never stops: keep its noise short (~3 s)
                    self.xtts.gpt.max_gen_mel_tokens = min(self.xtts.gpt.max_gen_mel_tokens, 64)

            self.xtts.gpt.load_state_dict(merged_gpt_state(gpt, mode), strict=False)
            self.xtts.gpt.init_gpt_for_inference(kv_cache=self.xtts.args.kv_cache, use_deepspeed=False)
            self.xtts.to(self.device).eval()
            sr = int(self.xtts.args.output_sample_rate)
            for i, text in enumerate(TEST_SENTENCES.get(self.language, TEST_SENTENCES["en"])):
                with torch.inference_mode(), torch.random.fork_rng(devices=self._cuda_devices()):
                    out = self.xtts.synthesize(
                        text, speaker_wav=str(self.speaker_wav), language=self.language, gpt_cond_len=3
                    )
                wav = torch.as_tensor(out["wav"], dtype=torch.float32).flatten().clamp(-1, 1)
                writer.add_audio(f"test/audio_{i}", wav.unsqueeze(0), step, sample_rate=sr)
                done += 1
        except Exception as exc:  # noqa: BLE001 - test audio must never stop training
            log.warning("Test sentences could not be synthesized (%s: %s); training goes on.", type(exc).__name__, exc)
        finally:
            if self.xtts is not None:
                self.xtts.to("cpu")
        return done


# --------------------------------------------------------------------------- the run
@dataclass
class TrainResult:
    """What a training run did."""

    run_name: str
    run_dir: Path
    tensorboard_dir: Path
    mode: str
    device: str
    base_model: str
    tiny: bool
    num_epochs: int
    epochs_completed: int
    global_step: int  # batches trained (all epochs, this and earlier sessions)
    optimizer_steps: int
    learning_rate: float
    trainable_params: int
    total_params: int
    train_samples: int
    val_samples: int
    hours: float
    dropped: dict[str, int]
    step_losses: list[float]  # this session's batch losses (NaN ones included)
    epoch_train_losses: list[float]
    epoch_val_losses: list[float]
    best_val_loss: float | None
    best_epoch: int | None
    nan_skipped: int
    status: str  # finished | interrupted (Ctrl-C) | terminated (SIGTERM) | already finished
    resumed_from: Path | None
    checkpoints: list[Path]
    loss_curve: Path | None
    seconds: float
    rank: int = 0  # this process' rank under torchrun: only rank 0 speaks to the user


def _decay_groups(gpt, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups as coqui's optimizer_wd_only_on_weights: no decay on biases, norms, embeddings."""
    import torch.nn as nn

    norm = (nn.LayerNorm, nn.GroupNorm, nn.BatchNorm1d, nn.BatchNorm2d, nn.InstanceNorm1d, nn.InstanceNorm2d)
    emb = (nn.Embedding, nn.EmbeddingBag)
    decay, no_decay, seen = [], [], set()
    for _, module in gpt.named_modules():
        for pname, p in module.named_parameters(recurse=False):
            if not p.requires_grad or id(p) in seen:
                continue
            seen.add(id(p))
            if pname.endswith("bias") or isinstance(module, norm + emb) or p.ndim < 2:
                no_decay.append(p)
            else:
                decay.append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _lr_lambda(warmup: int, total: int) -> Callable[[int], float]:
    def f(step: int) -> float:
        if warmup > 0 and step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))  # cosine down to 10 %

    return f


def _dist() -> tuple[int, int]:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _init_distributed(device: str) -> bool:
    import torch.distributed as dist

    launched = "TORCHELASTIC_RUN_ID" in os.environ  # torchrun, even with one process (the NCCL smoke test)
    if (int(os.environ.get("WORLD_SIZE", "1")) <= 1 and not launched) or dist.is_initialized():
        return False
    backend = "nccl" if device.startswith("cuda") else "gloo"
    from datetime import timedelta

    dist.init_process_group(backend=backend, timeout=timedelta(minutes=10))
    log.info("DDP: rank %d of %d (%s)", dist.get_rank(), dist.get_world_size(), backend)
    return True


def _loss_curve(path: Path, train_losses: list[float], val_losses: list[float]) -> Path | None:

    fig = figure(6, 3.5)
    ax = fig.add_subplot()
    ax.plot(range(1, len(train_losses) + 1), train_losses, marker="o", label="train")
    ax.plot(range(1, len(val_losses) + 1), val_losses, marker="o", label="val")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.legend()
    ax.grid(alpha=0.3)
    return save_png(fig, path)


@contextlib.contextmanager
def _oom_as_training_error(res: Resolved) -> Any:
    """CUDA out of memory, while loading or training, becomes our message with the settings to change."""
    import torch

    try:
        yield
    except torch.cuda.OutOfMemoryError:
        raise _oom_message(res) from None


def _oom_message(res: Resolved) -> TrainingError:
    rec = _recommendation(res.mode == "lora")
    doc = (
        f" doctor suggests batch {rec.train_batch_size} x accum {rec.grad_accum_steps}, "
        f"AMP {'on' if rec.use_amp else 'off'}, gradient checkpointing {'on' if rec.gradient_checkpointing else 'off'}."
        if rec is not None
        else ""
    )
    return TrainingError(
        f"CUDA out of memory with batch size {res.batch_size}, AMP {'on' if res.use_amp else 'off'}, "
        f"gradient checkpointing {'on' if res.gradient_checkpointing else 'off'}, mode {res.mode}.{doc}",
        hint="Lower TRAIN_BATCH_SIZE (raise TRAIN_GRAD_ACCUM_STEPS to keep the effective batch), set "
        "TRAIN_USE_AMP=true, TRAIN_GRADIENT_CHECKPOINTING=true, or keep TRAIN_USE_LORA=true; then --resume.",
    )


# --------------------------------------------------------------------------- the parts
RESUME_HINT = (
    "Resume with the base model and TRAIN_LORA_* settings the run was trained with (see run.json and "
    "settings.json in the run folder), or start a new run."
)


@dataclass
class RunDir:
    """The run folder: its name, where checkpoints and TensorBoard go, what can be resumed."""

    name: str
    path: Path
    tensorboard: Path
    resumable: list[Any]  # CheckpointInfo with a training_state.pt, oldest first (resume_state included)
    resume: bool = False  # continue from ``resumable`` (or ``weights_only``); False: a fresh start
    #: best_model's CheckpointInfo when no training state is saved (a kill after the first best model,
    #: before the first checkpoint): what a resume starts from when ``resumable`` is empty
    weights_only: Any = None


def _resume_name(ws: Workspace, ts: TrainSettings) -> str:
    """The run ``--resume`` continues: ``--run-name``, else the most recently modified run."""
    name = ts.run_name or ws.latest_run()
    if name is None:
        raise SettingsError(
            "--resume found no run to continue under " + str(ws.checkpoints_dir) + ".",
            hint="Start a run first, or name one with --run-name.",
        )
    return name


def open_run(
    ws: Workspace, ts: TrainSettings, resume: bool, distributed: bool, lock: contextlib.ExitStack | None = None
) -> RunDir:
    """Name the run (a timestamp unless named; the latest run with --resume), take its lock
    into ``lock`` (rank 0), tidy what a kill left behind, and check that ``resume`` fits what is on disk.

    A run that stopped before its first saved state (a kill in its first minutes) cannot be
    resumed: it starts again from the beginning, and says so. One that saved a best model but no
    training state yet resumes from the best model's weights (:func:`restore_weights`)."""

    name = _resume_name(ws, ts) if resume else ts.run_name or datetime.now().strftime("run-%Y%m%d-%H%M%S")
    if distributed and not ts.run_name and not resume:  # every rank must agree on the timestamp
        import torch.distributed as dist

        names = [name]
        dist.broadcast_object_list(names, src=0)
        name = names[0]
    path = ws.run_dir(name)
    if lock is not None:
        lock.enter_context(hold(ws.locks_dir / f"train-{name}.lock", f"Run {name!r}"))
        tidy_run_dir(path)
    if distributed:  # the other ranks look at the folder once rank 0 has tidied it
        import torch.distributed as dist

        dist.barrier()
    run = RunDir(name, path, ws.tensorboard_run_dir(name), resumable_states(path), resume)
    run.weights_only = None if run.resumable else weights_only_start(path)
    if resume and not run.resumable and run.weights_only is None:
        _no_state_to_resume(ws, run)
    elif not resume and (run.resumable or run.weights_only is not None or RunPaths(path).best_model.exists()):
        raise SettingsError(f"Run {name!r} already exists with saved training in {path}.", hint=_continue_hint(run))
    if not run.resume and lock is not None:
        _forget_start(run)
    return run


def _continue_hint(run: RunDir) -> str:
    """What continues a run that exists, for the re-run without --resume: what --resume would do."""
    if run.resumable:
        return "Continue it with --resume, or pick another --run-name."
    if run.weights_only is not None:
        return (
            f"Continue it with --resume (from its {run.weights_only.path.name} of epoch {run.weights_only.epoch}; "
            "it has no training state yet, so the optimizer starts afresh), or pick another --run-name."
        )
    return "Pick another --run-name: it has no complete checkpoint to continue from."


def _no_state_to_resume(ws: Workspace, run: RunDir) -> None:
    """``--resume`` of a run with nothing to resume from: refused when it does not exist, else it
    starts again from the beginning (it stopped before its first save), and says so."""
    if RunPaths(run.path).best_model.exists():  # there, but not loadable: never trained over
        raise SettingsError(
            f"Run {run.name!r} has no complete checkpoint to resume from ({run.path}).",
            hint="Train a new run (another --run-name); the run folder is left as it is.",
        )
    if not RunPaths(run.path).settings_json.exists() and not RunPaths(run.path).run_json.exists():
        raise SettingsError(
            f"There is no run {run.name!r} to resume in {ws.checkpoints_dir}.",
            hint="Check the name (xttsft export and eval list the runs), or start it without --resume.",
        )
    log.warning(
        "Run %r has no saved training state yet (it stopped before its first save): starting it "
        "again from the beginning.",
        run.name,
    )
    run.resume = False


def _forget_start(run: RunDir) -> None:
    """The files of a start that saved no state: its run.json and settings.json are rewritten, its
    TensorBoard events would overlap the new ones."""
    for f in (RunPaths(run.path).run_json, RunPaths(run.path).settings_json):
        f.unlink(missing_ok=True)
    shutil.rmtree(RunPaths(run.path).resume_state, ignore_errors=True)  # never a state of this start
    shutil.rmtree(run.tensorboard, ignore_errors=True)


@dataclass
class Model:
    """The XTTS model set up for training: the GPT (with LoRA or all trainable)."""

    xtts: Any
    gpt: Any
    lora_config: Any
    gpt_params: int
    trainable: int
    total: int


def build_model(base_dir: Path, ts: TrainSettings, res: Resolved) -> Model:
    """Load the base XTTS (no HiFi-GAN decoder), add LoRA or unfreeze the GPT, move it to the device."""

    xtts = load_xtts(base_dir, device="cpu", for_training=True, keep_decoder=False)
    gpt = xtts.gpt
    _, gpt_total = count_parameters(gpt)
    lora_cfg = attach_lora(gpt, ts) if res.mode == "lora" else None
    if lora_cfg is None:
        gpt.requires_grad_(True)
    if res.gradient_checkpointing:
        _enable_gradient_checkpointing(gpt.gpt)
    trainable, total = count_parameters(gpt)
    gpt.to(res.device)
    return Model(xtts, gpt, lora_cfg, gpt_total, trainable, total)


@dataclass
class Optimization:
    optimizer: Any
    scheduler: Any
    scaler: Any
    amp_dtype: Any
    device_type: str


def build_optimization(gpt, ts: TrainSettings, res: Resolved, total_steps: int) -> Optimization:
    """Fused AdamW (decay on weights only), warm-up then cosine, and the fp16 GradScaler when needed."""
    import torch

    # the fused kernel (one pass over the weights instead of one per tensor): 0.24 vs 0.61 s per step
    # for the 441 M weights of a full fine-tune on 2 CPU cores; same results, same state dict
    opt = torch.optim.AdamW(
        _decay_groups(gpt, ts.weight_decay), lr=res.learning_rate, betas=ADAMW_BETAS, eps=ADAMW_EPS, fused=True
    )
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(min(ts.warmup_steps, total_steps // 2), total_steps))
    amp_dtype = {"bfloat16": torch.bfloat16, "float16": torch.float16}.get(res.amp_dtype or "")
    dev_type = "cuda" if res.device.startswith("cuda") else "cpu"
    scaler = torch.amp.GradScaler(dev_type, enabled=res.amp_dtype == "float16")
    return Optimization(opt, sched, scaler, amp_dtype, dev_type)


def batch_layout(res: Resolved, ts: TrainSettings, world: int, train_samples: int) -> dict[str, int]:
    """What decides which batches an epoch has: a resume inside an epoch needs the same."""
    return {
        "batch_size": res.batch_size,
        "grad_accum_steps": res.grad_accum_steps,
        "processes": world,
        "seed": ts.seed,
        "train_samples": train_samples,
    }


def restore(
    run: RunDir, gpt, res: Resolved, optim: Optimization, layout: dict[str, int] | None = None
) -> tuple[TrainState, Path]:
    """Weights, optimizer, schedule, scaler and RNG of the run's newest loadable saved state.

    A damaged newest state (a disk that filled up, a copy cut short) is skipped with a warning
    for the one before it. A checkpoint saved inside an epoch is refused when the batches would
    differ (batch size, accumulation, processes, seed or samples changed, e.g. ``auto`` on another GPU)."""
    _check_mode(run, run.resumable[-1].meta.get("mode"), res)
    failures = []
    for ck in reversed(run.resumable):
        try:
            saved = _load_state(ck, gpt, res)
        except (XttsftError, OSError, RuntimeError, ValueError, KeyError) as exc:
            failures.append(f"{ck.path.name}: {getattr(exc, 'message', exc)}")
            log.warning(
                "Cannot resume from %s (%s); trying the state saved before it.",
                ck.path.name,
                getattr(exc, "message", exc),
            )
            continue
        _check_layout(ck, saved, layout)
        optim.optimizer.load_state_dict(saved["optimizer"])
        optim.scheduler.load_state_dict(saved["scheduler"])
        if saved.get("scaler"):
            optim.scaler.load_state_dict(saved["scaler"])

        set_rng_state(saved["rng"])
        state = TrainState.from_dict(saved)
        log.info(
            "Resuming %s from %s: continuing at epoch %d%s, step %d",
            run.name,
            ck.path.name,
            state.epoch + 1,
            f" batch {state.batch_in_epoch + 1}" if state.batch_in_epoch else "",
            state.global_step + 1,
        )
        return state, ck.path
    raise SettingsError(
        f"No saved state of run {run.name!r} can be loaded: " + "; ".join(failures) + ".", hint=RESUME_HINT
    )


def _check_mode(run: RunDir, meta_mode: Any, res: Resolved) -> None:
    if meta_mode != res.mode:
        raise SettingsError(
            f"Run {run.name!r} was trained with {meta_mode}; TRAIN_USE_LORA now asks for {res.mode}.",
            hint=f"Resume with TRAIN_USE_LORA={'true' if meta_mode == 'lora' else 'false'}, or start a new run.",
        )


def restore_weights(
    run: RunDir, gpt, res: Resolved, optim: Optimization, steps_per_epoch: int
) -> tuple[TrainState, Path]:
    """Resume a run that saved weights but no training state yet (killed after its first best model,
    before its first checkpoint): the weights, and the epoch and step counters of their ``meta.json``;
    the learning-rate schedule is moved to where those counters put it. AdamW's moments and the
    random state were never saved: they start afresh, and that is said once."""

    ck = run.weights_only
    _check_mode(run, ck.meta.get("mode"), res)
    load_gpt_weights(gpt, ck.path, res.mode, error=SettingsError, hint=RESUME_HINT)
    epoch, steps = ck.epoch, ck.epoch * steps_per_epoch
    if steps:
        import warnings

        with warnings.catch_warnings():  # "scheduler.step() before optimizer.step()": on purpose
            warnings.simplefilter("ignore", UserWarning)
            optim.scheduler.last_epoch = steps - 1
            optim.scheduler.step()
    best = ck.meta.get("val_loss")
    unknown = [float("nan")] * max(0, epoch - 1)  # the losses of the epochs before it were not saved
    state = TrainState(
        epoch=epoch,
        global_step=ck.step,
        optimizer_step=steps,
        best_val_loss=best,
        best_epoch=epoch if best is not None else None,
        history_train=unknown + [_loss(ck.meta.get("train_loss"))] if epoch else [],
        history_val=unknown + [_loss(best)] if epoch else [],
    )
    log.warning(
        "Run %s has no saved training state (it stopped before its first checkpoint): continuing from its "
        "%s (epoch %d). Its weights are restored; the optimizer's state (AdamW moments) and the random state "
        "were never saved and start afresh; the epoch and step counters come from its meta.json, and the "
        "learning-rate schedule is set from them.",
        run.name,
        ck.path.name,
        epoch,
    )
    return state, ck.path


def _loss(value: Any) -> float:
    return float("nan") if value is None else float(value)


def _load_state(ck: Any, gpt, res: Resolved) -> dict[str, Any]:
    """Load ``ck``'s weights into ``gpt``; its ``training_state.pt``, checked for what resume needs."""

    load_gpt_weights(gpt, ck.path, res.mode, error=SettingsError, hint=RESUME_HINT)
    saved = safe_torch_load(ck.path / "training_state.pt")
    missing = [k for k in ("optimizer", "scheduler", "rng") if k not in saved]
    if missing:
        raise SettingsError(f"training_state.pt lacks {', '.join(missing)}")
    return saved


def _check_layout(ck: Any, saved: dict[str, Any], layout: dict[str, int] | None) -> None:
    before = saved.get("layout")
    if layout is not None and before and int(saved.get("batch_in_epoch", 0)) > 0 and before != layout:
        diff = ", ".join(f"{k} {before.get(k)} -> {v}" for k, v in layout.items() if before.get(k) != v)
        raise SettingsError(
            f"{ck.path.name} was saved inside an epoch, and its batches would differ now ({diff}).",
            hint="Resume with the settings it was saved with (settings.json in the run folder: TRAIN_BATCH_SIZE, "
            "TRAIN_GRAD_ACCUM_STEPS), or delete that checkpoint to resume from the last epoch's.",
        )


def set_threads(ts: TrainSettings) -> int:
    """torch's intra-op threads: ``num_threads``, or one per physical core less the DataLoader workers."""
    import psutil
    import torch

    if ts.num_threads == "auto":
        cores = psutil.cpu_count(logical=False) or os.cpu_count() or 1
        n = max(1, cores - ts.num_workers)
    else:
        n = int(ts.num_threads)
    torch.set_num_threads(n)
    return n


#: Settings that change what a resumed run learns (not only how fast or where it runs): a change of
#: one is a warning. Batch size and accumulation make the effective batch (and the schedule's length).
LEARNING_SETTINGS = (
    "learning_rate",
    "batch_size",
    "grad_accum_steps",
    "weight_decay",
    "warmup_steps",
    "max_grad_norm",
    "lora_alpha",
    "lora_dropout",
)
#: Compared as resolved: ``auto`` and what it stands for are the same.
_COMPARED_RESOLVED = ("learning_rate", "batch_size", "grad_accum_steps")
#: Taken as resolved by a resume: ``auto`` could pick other numbers on this machine than the run trained with.
_TAKEN_RESOLVED = ("batch_size", "grad_accum_steps")
#: Never taken from the run, nor reported: the name names the run; the dataset is compared clip by clip.
_NOT_COMPARED = ("run_name", "dataset_dir")


def _last_session(settings_json: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """A run's train settings of its last session, as given and as resolved (``{}`` when unknown)."""

    saved = read_json(settings_json)  # {} when missing or damaged: nothing to take or compare
    given: dict[str, Any] = saved["train"] if isinstance(saved.get("train"), dict) else {}
    resolved: dict[str, Any] = saved["resolved"] if isinstance(saved.get("resolved"), dict) else {}
    return given, resolved


def _run_info(run_dir: Path) -> Any:
    """run.json of a run folder, or ``None`` when it is missing or unreadable."""

    try:
        return read_run_info(run_dir) if RunPaths(run_dir).run_json.is_file() else None
    except XttsftError as exc:
        log_once(log, logging.WARNING, "%s", exc.message)
        return None


def resume_settings(
    settings: Settings, provenance: Provenance | None, ws: Workspace
) -> tuple[Settings, dict[str, str]]:
    """The settings a resume trains with: the run's own (settings.json of its last session) for each
    train setting that no flag, environment variable, .env or config file sets now, so a bare
    ``--resume`` trains as the run did (base model, epochs, batch, ...); one set now wins, and
    :func:`_say_changed_settings` reports it. The dataset folder comes from run.json (relative to this
    workspace), the split's fraction and seed too. Returns the settings and, for each setting set
    now, where it came from (without ``provenance`` every value counts as set, by the API's caller)."""
    from pydantic import ValidationError

    name = _resume_name(ws, settings.train)
    src = (provenance or {}).get("train", {})
    explicit = {
        f: (src[f].detail or src[f].kind) if f in src else ""
        for f in TrainSettings.model_fields
        if provenance is None or (f in src and src[f].kind != "default")
    }
    given, resolved = _last_session(ws.run(name).settings_json)
    info = _run_info(ws.run_dir(name))
    values = settings.train.model_dump(mode="json")
    taken: dict[str, Any] = {}
    for f, value in given.items():
        if f in explicit or f not in values or f == "run_name":
            continue
        if f in _TAKEN_RESOLVED and value == "auto" and resolved.get(f) is not None:
            value = resolved[f]
        if f == "dataset_dir" and value is not None and info is not None and str(info.dataset_dir) not in ("", "."):
            value = str(info.dataset_dir)  # a copied workspace trains on its own copy
        try:
            TrainSettings(**{**values, f: value})
        except ValidationError:  # a value this version no longer takes: today's stays
            continue
        if value != values[f]:
            taken[f] = value
    if taken:
        log.info(
            "Run %s resumes with its own settings (settings.json) where none is given now: %s.",
            name,
            ", ".join(f"{k} {v}" for k, v in taken.items()),
        )
    split = (info.dataset_split if info is not None else None) or {}
    bsrc = (provenance or {}).get("build", {})
    build: dict[str, Any] = {
        f: split[f]
        for f in ("val_fraction", "seed")
        if f in split and provenance is not None and f in bsrc and bsrc[f].kind == "default"
    }
    return settings.model_copy(
        update={
            "train": TrainSettings(**{**values, **taken, "run_name": name}),
            "build": settings.build.model_copy(update=build),
        }
    ), explicit


def changed_settings(settings_json: Path, ts: TrainSettings, res: Resolved) -> list[tuple[str, Any, Any]]:
    """(name, before, now) for each train setting that differs from the run's last session
    (:data:`_NOT_COMPARED` aside); learning rate, batch size and accumulation as resolved."""
    given, resolved = _last_session(settings_json)
    before = {**given, **{k: resolved[k] for k in _COMPARED_RESOLVED if k in resolved}}
    now = {**ts.model_dump(mode="json"), **{k: getattr(res, k) for k in _COMPARED_RESOLVED}}
    return [(k, before[k], now[k]) for k in now if k in before and k not in _NOT_COMPARED and before[k] != now[k]]


def changed_learning_settings(settings_json: Path, ts: TrainSettings, res: Resolved) -> list[tuple[str, Any, Any]]:
    """(name, before, now) for each of :data:`LEARNING_SETTINGS` that differs from the run's last session."""
    return [c for c in changed_settings(settings_json, ts, res) if c[0] in LEARNING_SETTINGS]


def _say_changed_settings(run: RunDir, changed: list[tuple[str, Any, Any]], explicit: dict[str, str]) -> None:
    """Once: a warning for the learning settings set now to other values than the run's last session
    (e.g. TRAIN_LORA_DROPOUT, whose default was 0.05 before 0), a note for the others."""

    def show(items: list[tuple[str, Any, Any]]) -> str:
        return ", ".join(f"{k} {b} -> {n}" + (f" ({explicit[k]})" if explicit.get(k) else "") for k, b, n in items)

    learning = [c for c in changed if c[0] in LEARNING_SETTINGS]
    other = [c for c in changed if c[0] not in LEARNING_SETTINGS]
    if learning:
        log.warning(
            "Run %s continues with other settings than its last session: %s. To train as before, leave them "
            "out (a resume takes the run's own) or set %s.",
            run.name,
            show(learning),
            " ".join(f"TRAIN_{k.upper()}={b}" for k, b, _ in learning),
        )
    if other:
        log.info(
            "Run %s continues with settings changed since its last session: %s.%s",
            run.name,
            show(other),
            " The learning-rate schedule is stretched to the new number of epochs."
            if any(k == "num_epochs" for k, _, _ in other)
            else "",
        )


def check_dataset(run: RunDir, dataset: Dataset, allow_changed: bool) -> Dataset:
    """A resume trains on the dataset its run recorded (run.json's fingerprint). A changed one is refused,
    naming what changed, unless ``allow_changed`` (--allow-changed-dataset): then every clip keeps the
    side (train or val) the run recorded, and new clips go where the dataset's split puts them."""

    info = _run_info(run.path) if run.resume else None
    before = info.dataset_fingerprint if info is not None else None
    if not before:  # a new run, or one from before fingerprints: recorded from now on
        return dataset
    changes = dataset_changes(before, dataset_fingerprint(dataset))
    if not changes:
        return dataset
    if not allow_changed:
        raise DatasetError(
            f"Run {run.name!r} was trained on another version of its dataset ({dataset.root}): {changes.describe()}.",
            hint="Train a new run on it (--run-name OTHER), or continue this one with --allow-changed-dataset: every "
            "clip keeps the side (train or val) the run recorded, new clips go where the split puts them.",
        )
    kept = keep_recorded_split(dataset, before)
    new_val = [r.id for r in kept.val if r.id in changes.added]
    log.warning(
        "Run %s continues on a changed dataset (%s), as --allow-changed-dataset asks: every clip keeps its "
        "recorded side%s.",
        run.name,
        changes.describe(),
        f"; {len(new_val)} new clips validate, so the val loss (and the best model) counts them from now on"
        if new_val
        else "",
    )
    return kept


def _write_run_files(
    settings: Settings,
    run: RunDir,
    res: Resolved,
    data: DataReport,
    base_dir: Path,
    explicit: dict[str, str],
    fingerprint: dict[str, Any],
) -> None:

    run.path.mkdir(parents=True, exist_ok=True)
    if run.resume:
        _say_changed_settings(run, changed_settings(RunPaths(run.path).settings_json, settings.train, res), explicit)
    atomic_write_json(
        RunPaths(run.path).settings_json,
        {
            **settings.to_dict(),
            "resolved": res.__dict__,
            "data": {"max_wav_length": data.max_wav_length, "max_text_length": data.max_text_length},
        },
    )
    if not RunPaths(run.path).run_json.exists():
        write_run_info(
            RunInfo(
                run_dir=run.path,
                base_model=settings.train.base_model,
                base_dir=base_dir,
                language=data.language,
                mode=res.mode,
                dataset_dir=data.dataset_dir,
                created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                base_identity=base_identity(base_dir),
                dataset_split={"val_fraction": settings.build.val_fraction, "seed": settings.build.seed},
                dataset_fingerprint=fingerprint,
            )
        )
    elif (info := _run_info(run.path)) is not None and info.dataset_fingerprint != fingerprint:
        info.dataset_fingerprint = fingerprint  # a change allowed by --allow-changed-dataset, or a run from before
        write_run_info(info)


def _log_banner(
    ts: TrainSettings,
    res: Resolved,
    model: Model,
    data: DataReport,
    base_dir: Path,
    tiny: bool,
    world: int,
    n_batches: int,
    threads: int,
) -> None:
    log.info(
        "Device: %s%s | AMP: %s | gradient checkpointing: %s | CPU threads: %d | data workers: %d",
        res.device,
        f" x {world} processes (DDP)" if world > 1 else "",
        res.amp_dtype or "off",
        "on" if res.gradient_checkpointing else "off",
        threads,
        ts.num_workers,
    )
    log.info(
        "Model: %s (%s) | GPT %.1f M params | trainable %.2f M (%.2f %%, %s)",
        ts.base_model,
        "tiny random" if tiny else str(base_dir),
        model.gpt_params / 1e6,
        model.trainable / 1e6,
        100 * model.trainable / model.total,
        res.mode,
    )
    log.info(
        "Dataset: %s | %d train + %d val samples | %.2f h (%.1f min) | language %s | dropped %d",
        data.dataset_dir,
        len(data.train),
        len(data.val),
        data.hours,
        data.hours * 60,
        data.language,
        data.dropped_count,
    )
    log.info(
        "Batch %d x accum %d%s | lr %.2e | %d epochs x %d steps",
        res.batch_size,
        res.grad_accum_steps,
        f" x {world} GPUs" if world > 1 else "",
        res.learning_rate,
        ts.num_epochs,
        n_batches,
    )


def _checkpoint_writer(
    run: RunDir, model: Model, res: Resolved, optim: Optimization, keep: int, layout: dict[str, int]
) -> tuple[Callable[..., Path], Callable[..., None]]:
    """save(name, state, _) for epoch/interrupt checkpoints, save_best(state, train, val) for best_model."""

    def save(name: str, st: TrainState, _: Any = None) -> Path:
        meta = {
            "epoch": st.epoch,
            "step": st.global_step,
            "optimizer_step": st.optimizer_step,
            "batch_in_epoch": st.batch_in_epoch,
            "train_loss": st.history_train[-1] if st.history_train else None,
            "val_loss": st.history_val[-1] if st.history_val else None,
            "run": run.name,
        }
        p = model_io.write_checkpoint(
            run.path / name,
            model.gpt,
            res.mode,
            meta,
            {**st.to_dict(optim.optimizer, optim.scheduler, optim.scaler), "layout": layout},
            lora_config=model.lora_config,
        )
        prune_checkpoints(run.path, keep)
        log.info("Saved %s", p)
        return p

    def save_best(st: TrainState, train_loss: float, val_loss: float) -> None:
        model_io.write_checkpoint(
            RunPaths(run.path).best_model,
            model.gpt,
            res.mode,
            {
                "epoch": st.epoch,
                "step": st.global_step,
                "val_loss": val_loss,
                "train_loss": train_loss,
                "run": run.name,
            },
            lora_config=model.lora_config,
        )
        log.info("New best model (val loss %.4f) -> %s", val_loss, RunPaths(run.path).best_model)

    return save, save_best


def _callbacks(
    ts: TrainSettings,
    run: RunDir,
    res: Resolved,
    data: DataReport,
    base_dir: Path,
    tiny: bool,
    main: bool,
    hooks: TrainHooks,
) -> list[Any]:

    cbs: list[Any] = [ConsoleCallback(ts.print_step, epochs(ts))] if main else []
    if main and ts.use_tensorboard:
        speak = None
        if not tiny or hooks.force_test_audio:
            audio = _TestAudio(base_dir, data.language, data.val[0].wav, res.device)
            speak = lambda gpt, writer, step: audio(gpt, res.mode, writer, step)  # noqa: E731
        cbs.append(TensorBoardCallback(run.tensorboard, speak))
    return cbs


# --------------------------------------------------------------------------- train
def _wrap_ddp(gpt, res: Resolved, distributed: bool) -> Any:
    """The GPT in DistributedDataParallel when several processes train it, else itself."""
    if not distributed:
        return gpt
    import torch
    from torch.nn.parallel import DistributedDataParallel as DDP

    return DDP(
        gpt,
        device_ids=[torch.device(res.device).index] if res.device.startswith("cuda") else None,
        find_unused_parameters=res.mode == "full",
    )


def _make_trainer(
    ts: TrainSettings,
    res: Resolved,
    run: RunDir,
    model: Model,
    feats: Any,
    data: DataReport,
    optim: Optimization,
    *,
    distributed: bool,
    rank: int,
    world: int,
    callbacks: list[Any],
    hooks: TrainHooks,
    progress: Progress,
) -> Any:
    """The loop over this run's parts: batches, loader, validation and checkpoint writers."""

    train_ds, val_ds = ClipDataset(data.train, ts.seed, is_eval=False), ClipDataset(data.val, ts.seed, is_eval=True)
    lengths = [s.n_samples for s in data.train]

    def loader_of(epoch: int, batches: list[list[int]]) -> Any:
        train_ds.epoch = epoch
        return make_loader(train_ds, batches, ts.num_workers)

    save, save_best = _checkpoint_writer(
        run, model, res, optim, ts.keep_last_checkpoints, batch_layout(res, ts, world, len(data.train))
    )
    return Trainer(
        gpt=model.gpt,
        model=_wrap_ddp(model.gpt, res, distributed),
        featurize=feats,
        loss_fn=gpt_loss,
        optimizer=optim.optimizer,
        scheduler=optim.scheduler,
        scaler=optim.scaler,
        batches_of=lambda epoch: epoch_batches(lengths, res.batch_size, ts.seed, epoch, rank, world),
        loader_of=loader_of,
        validate=lambda: _validate(model.gpt, val_ds, feats, res.batch_size, optim.device_type, optim.amp_dtype),
        save_checkpoint=save,
        save_best=save_best,
        num_epochs=epochs(ts),
        grad_accum_steps=res.grad_accum_steps,
        max_grad_norm=ts.max_grad_norm,
        max_nan_steps=ts.max_nan_steps,
        save_every_n_epochs=ts.save_every_n_epochs,
        state_every_minutes=ts.save_every_n_minutes,
        state_every_steps=ts.save_every_n_steps,
        patience=ts.early_stopping_patience,
        amp_dtype=optim.amp_dtype,
        device_type=optim.device_type,
        main=rank == 0,
        distributed=distributed,
        callbacks=callbacks,
        hooks=hooks,
        progress=progress,
        run_name=run.name,
    )


def _fit(trainer: Any, state: TrainState, res: Resolved, distributed: bool) -> str:
    """Run the loop; out of memory becomes our message; the process group always goes."""
    try:
        with _oom_as_training_error(res):
            return trainer.fit(state)
    finally:
        if distributed:
            import torch.distributed as dist

            with contextlib.suppress(Exception):
                dist.destroy_process_group()


def train(
    settings: Settings,
    ws: Workspace,
    *,
    resume: bool = False,
    provenance: Provenance | None = None,
    allow_changed_dataset: bool = False,
    progress: Progress | None = None,
    hooks: TrainHooks | None = None,
) -> TrainResult:
    """Fine-tune the XTTS-v2 GPT on the build dataset; see the module docstring.

    ``resume`` continues a run with its own recorded settings wherever ``provenance`` (from
    :func:`xttsft.settings.load_settings`) says a value is a default (:func:`resume_settings`), on the
    dataset it recorded (:func:`check_dataset`; ``allow_changed_dataset`` keeps its split instead).
    Writes ``ws.run_dir(run)``: settings.json, run.json, checkpoint_epoch_N/, best_model/,
    loss_curve.png; TensorBoard events in ``ws.tensorboard_run_dir(run)``.
    """
    import torch

    t0 = time.time()
    settings, explicit = resume_settings(settings, provenance, ws) if resume else (settings, {})
    ts = settings.train
    hooks = hooks or TrainHooks()
    progress = progress or no_progress
    folder = Path(ts.dataset_dir) if ts.dataset_dir else ws.dataset_dir
    dataset = read_dataset(folder, ts.language, settings.build.val_fraction, settings.build.seed)  # cheap: first
    log.info("Dataset: %s", dataset.describe())
    base_dir = resolve_base_model(ts.base_model, progress=progress)
    tiny = is_tiny(base_dir)
    res = resolve_train_settings(ts, tiny=tiny)
    threads = set_threads(ts)
    if res.device.startswith("cuda"):
        torch.cuda.set_device(torch.device(res.device))
    distributed = _init_distributed(res.device)
    rank, world = _dist()
    with contextlib.ExitStack() as held:  # rank 0 holds the run's lock until the run ends
        run = open_run(ws, ts, resume, distributed, held if rank == 0 else None)
        dataset = check_dataset(run, dataset, allow_changed_dataset)
        if tiny:
            log_once(log, logging.WARNING, TINY_NOISE_WARNING)
        model, feats = _load_model(base_dir, ts, res, run, rank)
        data = _prepare(dataset, model, world)
        ts = resolve_epochs(ts, data)
        settings = settings.model_copy(update={"train": ts})  # settings.json records the number of epochs
        n_batches, optim, state, resumed_from = _start(run, ts, res, model, data, rank, world)
        if rank == 0 and state.epoch < epochs(ts):  # a finished run keeps the record of how it was trained
            _write_run_files(settings, run, res, data, base_dir, explicit, dataset_fingerprint(dataset))
        _log_banner(ts, res, model, data, base_dir, tiny, world, n_batches, threads)
        callbacks = _callbacks(ts, run, res, data, base_dir, tiny, rank == 0, hooks)
        trainer = _make_trainer(
            ts,
            res,
            run,
            model,
            feats,
            data,
            optim,
            distributed=distributed,
            rank=rank,
            world=world,
            callbacks=callbacks,
            hooks=hooks,
            progress=progress,
        )
        status = _fit(trainer, state, res, distributed)
        if status == "already finished":
            log.info("Run %s already trained %d of %d epochs; nothing to do (--num-epochs N trains it further).",
                     run.name, state.epoch, ts.num_epochs)  # fmt: skip
        return _result(ts, res, run, model, data, trainer, status, resumed_from, tiny, rank, time.time() - t0)


def _load_model(base_dir: Path, ts: TrainSettings, res: Resolved, run: RunDir, rank: int) -> tuple[Model, Any]:
    """The model to train and the frozen featurizer, seeded; a full disk is said before minutes of work."""
    import torch

    torch.manual_seed(ts.seed)
    random.seed(ts.seed)
    with _oom_as_training_error(res):
        model = build_model(base_dir, ts, res)
        feats = Featurizer.from_base(base_dir, res.device)
    if rank == 0:  # a checkpoint and the best model must fit, or the first save fails after minutes
        require_free_space(run.path.parent, 2 * checkpoint_bytes(model.gpt, True), "training")
    return model, feats


#: ``TRAIN_NUM_EPOCHS=auto`` trains until the model has heard about this much audio (10 hours)
AUTO_EPOCHS_AUDIO_MINUTES = 600.0
AUTO_EPOCHS_RANGE = (10, 1000)


def epochs(ts: TrainSettings) -> int:
    """The number of epochs, once :func:`resolve_epochs` has settled ``auto``."""
    if not isinstance(ts.num_epochs, int):
        raise TypeError("num_epochs is still 'auto': resolve_epochs(ts, data) first")
    return ts.num_epochs


def resolve_epochs(ts: TrainSettings, data: DataReport) -> TrainSettings:
    """``num_epochs=auto``: sized from the training audio's minutes, and said once with why."""
    if ts.num_epochs != "auto":
        return ts
    minutes = sum(s.n_samples for s in data.train) / SAMPLE_RATE / 60
    lo, hi = AUTO_EPOCHS_RANGE
    epochs = max(lo, min(hi, math.ceil(AUTO_EPOCHS_AUDIO_MINUTES / max(minutes, 1e-6))))
    log.info(
        "num_epochs: auto -> %d (%.1f minutes of training audio, about %.0f hours heard; early stopping after "
        "%d epochs without a better val loss; TRAIN_NUM_EPOCHS=1000 as in the guide trains longer)",
        epochs,
        minutes,
        epochs * minutes / 60,
        ts.early_stopping_patience,
    )
    return ts.model_copy(update={"num_epochs": epochs})


def _prepare(dataset: Dataset, model: Model, world: int) -> DataReport:
    """The samples the model can take; every process needs one."""
    data = prepare_data(
        dataset, model.xtts.tokenizer, model.xtts.args.gpt_max_audio_tokens, model.xtts.args.gpt_max_text_tokens
    )
    if len(data.train) < world:
        raise DatasetError(
            f"{len(data.train)} training samples for {world} processes: every process needs one.",
            hint="Train with fewer processes (torchrun --nproc_per_node), or add samples.",
        )
    return data


def _start(
    run: RunDir, ts: TrainSettings, res: Resolved, model: Model, data: DataReport, rank: int, world: int
) -> tuple[int, Optimization, TrainState, Path | None]:
    """Batches per epoch, the optimizer and the state to start from: a fresh one, the newest saved
    training state, or (a run killed before its first one) the best model's weights."""

    n_batches = len(epoch_batches([s.n_samples for s in data.train], res.batch_size, ts.seed, 0, rank, world))
    steps_per_epoch = math.ceil(n_batches / res.grad_accum_steps)
    optim = build_optimization(model.gpt, ts, res, steps_per_epoch * epochs(ts))
    if not run.resume:
        return n_batches, optim, TrainState(), None
    if not run.resumable:
        return n_batches, optim, *restore_weights(run, model.gpt, res, optim, steps_per_epoch)
    return n_batches, optim, *restore(run, model.gpt, res, optim, batch_layout(res, ts, world, len(data.train)))


def _result(
    ts: TrainSettings,
    res: Resolved,
    run: RunDir,
    model: Model,
    data: DataReport,
    trainer: Any,
    status: str,
    resumed_from: Path | None,
    tiny: bool,
    rank: int,
    seconds: float,
) -> TrainResult:

    st = trainer.state
    curve = (
        _loss_curve(RunPaths(run.path).loss_curve, st.history_train, st.history_val)
        if rank == 0 and st.history_train
        else None
    )
    return TrainResult(
        run_name=run.name,
        run_dir=run.path,
        tensorboard_dir=run.tensorboard,
        mode=res.mode,
        device=res.device,
        base_model=ts.base_model,
        tiny=tiny,
        num_epochs=epochs(ts),
        epochs_completed=len(st.history_train),
        global_step=st.global_step,
        optimizer_steps=st.optimizer_step,
        learning_rate=res.learning_rate,
        trainable_params=model.trainable,
        total_params=model.total,
        train_samples=len(data.train),
        val_samples=len(data.val),
        hours=data.hours,
        dropped={k: len(v) for k, v in data.dropped.items()},
        step_losses=trainer.step_losses,
        epoch_train_losses=st.history_train,
        epoch_val_losses=st.history_val,
        best_val_loss=st.best_val_loss,
        best_epoch=st.best_epoch,
        nan_skipped=trainer.nan_skipped,
        status=status,
        resumed_from=resumed_from,
        checkpoints=[c.path for c in list_checkpoints(run.path)],
        loss_curve=curve,
        seconds=seconds,
        rank=rank,
    )


def _enable_gradient_checkpointing(hf_gpt2) -> None:
    """Activation checkpointing of the GPT-2 blocks (non-reentrant).

    transformers' ``gradient_checkpointing_enable`` also hooks the input embeddings, which
    coqui's GPT2Model does not have (it feeds ``inputs_embeds``); non-reentrant checkpoints
    need no such hook, so the blocks are switched on directly.
    """
    import functools
    import inspect

    from torch.utils.checkpoint import checkpoint

    func = functools.partial(checkpoint, use_reentrant=False)
    params = inspect.signature(hf_gpt2._set_gradient_checkpointing).parameters
    if "gradient_checkpointing_func" in params:
        hf_gpt2._set_gradient_checkpointing(enable=True, gradient_checkpointing_func=func)
    else:  # pragma: no cover - transformers < 4.35
        hf_gpt2.gradient_checkpointing_enable()


def _validate(gpt, val_ds: Any, feats: Any, bs: int, dev_type: str, amp_dtype) -> float:
    """Mean loss over the val split (deterministic conditioning), in eval mode."""
    import torch

    was_training = gpt.training
    gpt.eval()  # dropout off: a deterministic val loss
    total, n = 0.0, 0
    with torch.no_grad():
        for i in range(0, len(val_ds), bs):
            fb = feats(collate([val_ds[j] for j in range(i, min(i + bs, len(val_ds)))]))
            with torch.autocast(dev_type, dtype=amp_dtype, enabled=amp_dtype is not None):
                loss = gpt_loss(gpt, fb)["loss"]
            k = len(fb["text_lengths"])
            total += float(loss) * k
            n += k
    gpt.train(was_training)
    return total / n if n else float("nan")
