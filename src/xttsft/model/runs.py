"""The run folder format (``train/checkpoints/<run>/``): run.json, checkpoints written atomically
(adapters as safetensors, ``meta.json`` last), finding them again, and loading a fine-tuned model."""

from __future__ import annotations

import dataclasses
import json
import logging
import re
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from xttsft.errors import InputError, ModelNotFoundError, XttsftError
from xttsft.io import atomic_dir, tidy_swaps
from xttsft.logs import log_once
from xttsft.model.base import TINY_NOISE_WARNING, is_tiny, load_xtts, resolve_base_model, validate_base_dir
from xttsft.model.lora import merge_lora
from xttsft.paths import RunPaths, name_problem
from xttsft.progress import Progress
from xttsft.records import CheckpointMeta, RecordError, RunRecord, read_record, write_record
from xttsft.storage import require_free_space

if TYPE_CHECKING:  # pragma: no cover
    from TTS.tts.models.xtts import Xtts

    from xttsft.paths import Workspace

__all__ = [
    "RunInfo",
    "CheckpointInfo",
    "write_checkpoint",
    "list_checkpoints",
    "find_checkpoint",
    "weights_only_start",
    "load_gpt_weights",
    "apply_checkpoint",
    "resolve_run",
    "write_run_info",
    "read_run_info",
    "load_finetuned",
]

log = logging.getLogger(__name__)

# --------------------------------------------------------------------------- run folders
#: Weights a full checkpoint leaves out: inference-only copies and the tied embedding.
_NOT_SAVED = ("gpt_inference.", "gpt.wte.")


@dataclass
class RunInfo:
    """What a run folder says about itself (``run.json``)."""

    run_dir: Path
    base_model: str
    base_dir: Path
    language: str
    mode: str  # "lora" or "full"
    dataset_dir: Path
    created: str = ""
    base_identity: dict[str, Any] = field(default_factory=dict)
    #: how a dataset with a single metadata.csv was split: {"val_fraction": .., "seed": ..}
    dataset_split: dict[str, Any] | None = None
    #: the clips trained on, per split (xttsft.training.train_data.dataset_fingerprint): a resume compares it
    dataset_fingerprint: dict[str, Any] | None = None
    checkpoint: Path | None = None  # the checkpoint applied by load_finetuned

    @property
    def tiny(self) -> bool:
        return is_tiny(self.base_dir)

    def to_json(self) -> dict[str, Any]:
        """run.json's fields; a path inside the run's workspace is written relative to the workspace
        root, so a copied workspace reads its own dataset, not the original's."""
        d = asdict(self)
        d.pop("checkpoint", None)
        run_dir = Path(d.pop("run_dir"))
        return {k: (_workspace_relative(v, run_dir) if isinstance(v, Path) else v) for k, v in d.items()}


def _workspace_root(run_dir: Path) -> Path | None:
    """The workspace a run folder lives in (``<root>/train/checkpoints/<run>``), else None."""
    p = Path(run_dir).absolute()
    return p.parents[2] if p.parent.name == "checkpoints" and p.parent.parent.name == "train" else None


def _workspace_relative(path: Path, run_dir: Path) -> str:
    """``path`` relative to the run's workspace when inside it, else absolute (never relative to the
    folder the command happened to run in)."""
    if not str(path) or str(path) == ".":
        return str(path)
    path, root = Path(path).absolute(), _workspace_root(run_dir)
    try:
        return path.relative_to(root).as_posix() if root is not None else str(path)
    except ValueError:
        return str(path)


def _from_workspace(value: str | None, run_dir: Path) -> Path:
    """A path of run.json: absolute as older versions wrote it, else relative to the run's workspace."""
    if not value:
        return Path("")
    p = Path(value)
    return p if p.is_absolute() else (_workspace_root(run_dir) or Path(run_dir).absolute()) / p


@dataclass
class CheckpointInfo:
    """One complete checkpoint folder and its ``meta.json``."""

    path: Path
    record: CheckpointMeta

    @property
    def epoch(self) -> int:
        return self.record.epoch or 0

    @property
    def step(self) -> int:
        return self.record.step

    @property
    def meta(self) -> dict[str, Any]:
        """``meta.json`` as the file holds it."""
        return self.record.to_dict()


#: ``checkpoint_epoch_N`` (end of epoch N) or ``checkpoint_epoch_N_step_S`` (Ctrl-C during epoch N+1)
_EPOCH_RE = re.compile(r"^checkpoint_epoch_(\d+)(?:_step_\d+)?$")


def write_checkpoint(
    dest: Path,
    gpt,
    mode: str,
    meta: dict[str, Any],
    training_state: dict[str, Any] | None = None,
    lora_config=None,
) -> Path:
    """Write a checkpoint folder atomically: files into a temporary folder, ``meta.json``
    last, then rename. A crash mid-way leaves any previous ``dest`` untouched.

    LoRA: ``adapter_model.safetensors`` + ``adapter_config.json`` (PEFT format, keys of
    ``xtts.gpt.gpt``). Full: ``gpt.safetensors`` (``xtts.gpt`` state dict).
    ``training_state`` (optimizer, scheduler, scaler, RNG, counters) goes to
    ``training_state.pt`` (tensors and plain types only: loads with ``weights_only=True``).
    """
    import torch
    from safetensors.torch import save_file

    if mode not in ("lora", "full"):
        raise ValueError(f"mode must be 'lora' or 'full', not {mode!r}")
    dest = Path(dest)
    require_free_space(dest.parent, checkpoint_bytes(gpt, training_state is not None), f"saving {dest.name}")
    with atomic_dir(dest) as tmp:
        if mode == "lora":
            from peft import get_peft_model_state_dict

            sd = get_peft_model_state_dict(gpt.gpt)
            save_file({k: v.detach().contiguous().cpu() for k, v in sd.items()}, str(tmp / "adapter_model.safetensors"))
            if lora_config is not None:
                cfg = lora_config.to_dict()
                cfg["target_modules"] = sorted(cfg["target_modules"]) if cfg.get("target_modules") else None
                (tmp / "adapter_config.json").write_text(json.dumps(cfg, indent=2, default=str) + "\n")
        else:
            sd = {k: v.detach().contiguous().cpu() for k, v in gpt.state_dict().items() if not k.startswith(_NOT_SAVED)}
            save_file(sd, str(tmp / "gpt.safetensors"))
        if training_state is not None:
            torch.save(training_state, tmp / "training_state.pt")
        meta = CheckpointMeta.check(
            {**meta, "mode": mode, "saved": datetime.now(timezone.utc).isoformat(timespec="seconds")},
            str(RunPaths.meta(dest)),
        )
        RunPaths.meta(tmp).write_text(json.dumps(meta, indent=2, default=str) + "\n")  # last: the folder is complete
    return dest


_WEIGHTS = {"lora": "adapter_model.safetensors", "full": "gpt.safetensors"}


def checkpoint_bytes(gpt, with_training_state: bool) -> int:
    """About how many bytes a checkpoint of ``gpt`` takes: its trainable weights, and AdamW's two
    moments of each with the training state."""
    n = sum(p.numel() * p.element_size() for p in gpt.parameters() if p.requires_grad)
    return n * (3 if with_training_state else 1)


def _read_meta(path: Path) -> CheckpointMeta | None:
    """``meta.json`` of a complete checkpoint folder: ``None`` when it or the weights it names are missing
    (or it is not a meta.json train wrote: said once, and the folder is passed over)."""
    if not RunPaths.meta(path).is_file():
        return None
    try:
        meta = read_record(RunPaths.meta(path), CheckpointMeta)
    except RecordError as exc:
        log_once(log, logging.WARNING, "%s %s is not used as a checkpoint.", exc.message, path)
        return None
    weights = _WEIGHTS.get(str(meta.mode))
    if weights is None or not (path / weights).is_file():
        return None
    return meta


def resumable_states(run_dir: Path) -> list[CheckpointInfo]:
    """Every complete saved state with a ``training_state.pt`` (epoch checkpoints and
    ``resume_state``), oldest first by training step."""
    states = [c for c in list_checkpoints(run_dir) if (c.path / "training_state.pt").is_file()]
    rs = RunPaths(run_dir).resume_state
    meta = _read_meta(rs)
    if meta is not None and (rs / "training_state.pt").is_file():
        states.append(CheckpointInfo(rs, meta))
    # at equal steps the epoch checkpoint wins: it resumes at an epoch boundary (validation done)
    return sorted(states, key=lambda c: (c.step, c.path.name != RunPaths.RESUME_STATE))


def weights_only_start(run_dir: Path) -> CheckpointInfo | None:
    """``best_model`` (weights only) when it is complete: what a run killed after its first best model
    and before its first training state resumes from. ``None`` when there is none."""
    best = RunPaths(Path(run_dir)).best_model
    meta = _read_meta(best)
    return None if meta is None else CheckpointInfo(best, meta)


def tidy_run_dir(run_dir: Path) -> None:
    """Clean what a kill left in a run folder (its writer holds the run's lock): half-written
    ``.NAME.tmp.*`` folders go; a complete ``.best_model.old.*`` comes back when ``best_model`` is missing."""

    tidy_swaps(run_dir, complete=lambda p: _read_meta(p) is not None)


def list_checkpoints(run_dir: Path) -> list[CheckpointInfo]:
    """Complete epoch checkpoints (``meta.json`` present) of a run, oldest first."""
    out: list[CheckpointInfo] = []
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return out
    for p in run_dir.iterdir():
        m = _EPOCH_RE.match(p.name)
        if m and p.is_dir():
            meta = _read_meta(p)
            if meta is not None:
                if meta.epoch is None:
                    meta = dataclasses.replace(meta, epoch=int(m.group(1)))
                out.append(CheckpointInfo(p, meta))
    return sorted(out, key=lambda c: (c.epoch, c.step))


def find_checkpoint(run_dir: Path, checkpoint: str | Path = "best") -> CheckpointInfo:
    """``best`` (best_model), ``latest`` (newest complete epoch checkpoint, else best) or a folder."""
    run_dir = Path(run_dir)
    if str(checkpoint) == "best":
        p = RunPaths(run_dir).best_model
        meta = _read_meta(p)
        if meta is None:
            # a kill between write_checkpoint's two renames leaves the previous best aside
            for aside in sorted(run_dir.glob(".best_model.old.*")):
                if (aside_meta := _read_meta(aside)) is not None:
                    log.warning("best_model is missing; using the previous one left at %s", aside)
                    return CheckpointInfo(aside, aside_meta)
        if meta is None:
            latest = list_checkpoints(run_dir)
            if latest:
                return latest[-1]
            raise ModelNotFoundError(
                f"Run {run_dir} has no complete best_model or checkpoint.",
                hint="Train it first (`xttsft train`), or let a running training save one.",
            )
        return CheckpointInfo(p, meta)
    if str(checkpoint) == "latest":
        cks = list_checkpoints(run_dir)
        if cks:
            return cks[-1]
        return find_checkpoint(run_dir, "best")
    p = Path(checkpoint)
    if not p.is_absolute() and not p.exists():
        p = run_dir / p
    meta = _read_meta(p)
    if meta is None:
        raise ModelNotFoundError(
            f"{p} is not a complete checkpoint (no meta.json).",
            hint="Pick best, latest or a checkpoint_epoch_N folder that has meta.json.",
        )
    return CheckpointInfo(p, meta)


def load_gpt_weights(
    gpt,
    ckpt_dir: Path,
    mode: str,
    *,
    inject: bool = False,
    error: type[XttsftError] = ModelNotFoundError,
    hint: str = "Load it with the base model it was trained on (see run.json).",
) -> None:
    """Load a checkpoint's GPT weights into ``gpt``: the LoRA adapter (``inject``: add its layers
    from ``adapter_config.json`` first) or the whole GPT.

    Raises ``error`` (with ``hint``) when a file is missing or corrupt, or when the weights do
    not fit this model (other base model, other LoRA rank or targets): a checkpoint never loads
    halfway and silently leaves base weights in place.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if mode not in ("lora", "full"):
        raise error(f"Unknown checkpoint mode {mode!r} in {ckpt_dir}.", hint="Expected lora or full.")
    file = Path(ckpt_dir) / ("adapter_model.safetensors" if mode == "lora" else "gpt.safetensors")
    try:
        sd = load_file(str(file))
    except (OSError, SafetensorError) as exc:
        raise error(f"{file} is missing or corrupt ({exc}).", hint=hint) from None
    try:
        if mode == "lora":
            from peft import inject_adapter_in_model, set_peft_model_state_dict

            if inject:
                inject_adapter_in_model(_read_lora_config(Path(ckpt_dir), error, hint), gpt.gpt)
            result = set_peft_model_state_dict(gpt.gpt, sd)
            unexpected = list(getattr(result, "unexpected_keys", []))
            missing = [k for k in getattr(result, "missing_keys", []) if "lora_" in k]
        else:
            missing, unexpected = gpt.load_state_dict(sd, strict=False)
            missing = [k for k in missing if not k.startswith(_NOT_SAVED)]
    except RuntimeError as exc:  # size mismatches
        first = str(exc).strip().splitlines()[-1].strip() if str(exc).strip() else type(exc).__name__
        raise error(f"{file} does not fit this model: {first}", hint=hint) from None
    if missing or unexpected:
        shown = ", ".join((list(unexpected) + list(missing))[:3])
        raise error(
            f"{file} does not fit this model ({len(missing)} missing, {len(unexpected)} unexpected weights: "
            f"{shown}{', ...' if len(missing) + len(unexpected) > 3 else ''}).",
            hint=hint,
        )


def _read_lora_config(ckpt_dir: Path, error: type[XttsftError], hint: str):
    from peft import LoraConfig

    cfg_file = ckpt_dir / "adapter_config.json"
    try:
        cfg_dict = json.loads(cfg_file.read_text())
    except (OSError, ValueError) as exc:
        raise error(f"{cfg_file} is missing or corrupt ({exc}).", hint=hint) from None
    known = set(LoraConfig.__dataclass_fields__)
    return LoraConfig(**{k: v for k, v in cfg_dict.items() if k in known})


def apply_checkpoint(xtts, ckpt_dir: Path, mode: str, merge: bool = True) -> None:
    """Apply a checkpoint's GPT weights to a loaded base ``xtts`` (training layout).

    LoRA adapters are injected and, with ``merge``, folded into the weights.
    """
    load_gpt_weights(xtts.gpt, ckpt_dir, mode, inject=True)
    if mode == "lora" and merge:
        merge_lora(xtts.gpt)


def resolve_run(ws: Workspace, run: str | None, *, no_run_hint: str = "Train first: xttsft train.") -> tuple[str, Path]:
    """A run's name and folder: ``None`` -> the most recent run; a name under train/checkpoints/;
    or a run folder (one with ``run.json``). Raises :class:`ModelNotFoundError` naming the runs there are."""
    if run is None:
        name = ws.latest_run()
        if name is None:
            raise ModelNotFoundError(f"No training run in {ws.checkpoints_dir}.", hint=no_run_hint)
        return name, ws.run_dir(name)

    if name_problem(run) is None and ws.run_dir(run).is_dir():
        return run, ws.run_dir(run)
    path = Path(run).expanduser()
    if path.is_dir() and RunPaths(path).run_json.is_file():
        return path.name, path.resolve()
    runs = sorted(p.name for p in ws.checkpoints_dir.iterdir() if p.is_dir()) if ws.checkpoints_dir.is_dir() else []
    raise ModelNotFoundError(
        f"No training run named {run!r}.",
        hint=f"Runs in this workspace: {', '.join(runs)}." if runs else "There are no runs yet: xttsft train.",
    )


def write_run_info(info: RunInfo) -> Path:
    """Write ``run.json`` into ``info.run_dir`` (atomically)."""
    path = RunPaths(Path(info.run_dir)).run_json
    write_record(path, RunRecord, info.to_json())
    return path


def read_run_info(run_dir: Path) -> RunInfo:
    """Parse ``run.json`` of a run folder."""
    run_dir = Path(run_dir)
    f = RunPaths(run_dir).run_json
    try:
        d = json.loads(f.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(
            f"{run_dir} is not a training run (no run.json).",
            hint="Pass a folder under train/checkpoints/ made by `xttsft train`.",
        ) from None
    except ValueError as exc:
        raise InputError(f"{f} is corrupt ({exc}).", hint="Restore it or train again.") from None
    rec = RunRecord.from_dict(d, str(f))
    return RunInfo(
        run_dir=run_dir,
        base_model=rec.base_model,
        base_dir=_from_workspace(rec.base_dir, run_dir),
        language=rec.language,
        mode=rec.mode,
        dataset_dir=_from_workspace(rec.dataset_dir, run_dir),
        created=rec.created or "",
        base_identity=rec.base_identity or {},
        dataset_split=rec.dataset_split,
        dataset_fingerprint=rec.dataset_fingerprint,
    )


def load_finetuned(
    run_dir: Path,
    checkpoint: str | Path = "best",
    device: str = "cpu",
    progress: Progress | None = None,
    merge: bool = True,
) -> tuple[Xtts, RunInfo]:
    """Base model + a run's weights, ready for inference.

    ``checkpoint``: ``best`` (default), ``latest`` or a checkpoint folder. With
    ``merge=False`` LoRA layers stay separate (benchmarks, equivalence tests).
    """
    info = read_run_info(run_dir)
    ck = find_checkpoint(run_dir, checkpoint)
    base = info.base_dir
    try:
        base = validate_base_dir(base)
    except ModelNotFoundError:
        base = resolve_base_model(info.base_model, progress=progress)
    info.base_dir = base
    info.checkpoint = ck.path
    mode = ck.record.mode or info.mode
    xtts = load_xtts(base, device="cpu", for_training=True)
    apply_checkpoint(xtts, ck.path, mode, merge=merge)
    xtts.gpt.init_gpt_for_inference(kv_cache=xtts.args.kv_cache, use_deepspeed=False)
    xtts.eval()
    xtts.to(device)
    if info.tiny:
        log_once(log, logging.WARNING, TINY_NOISE_WARNING)
    return xtts, info
