"""``xttsft export``: ship a fine-tuned voice to other XTTS-v2 tools.

Two forms:

- **merged** (default): the run's LoRA adapter is folded into the GPT weights
  and written as a standard XTTS-v2 model folder -- ``model.pth`` (``{"model":
  state_dict}`` with coqui's ``Xtts`` key layout: no optimizer, no DVAE keys),
  ``config.json``, ``vocab.json``, ``dvae.pth``, ``mel_stats.pth``,
  ``speakers_xtts.pth`` (the base speakers plus this voice under the run's
  name), ``reference.wav`` (+ ``reference_2.wav`` ...) and
  ``xttsft_export.json``. Stock coqui-tts loads it unchanged
  (``Xtts.load_checkpoint(config, checkpoint_dir=...)`` or
  ``TTS(model_path=DIR, config_path=DIR/config.json)``), and so do tools built
  on it (xtts-finetune-webui, AllTalk).
- **adapter** (``adapter_only``): only the PEFT adapter
  (``adapter_model.safetensors`` + ``adapter_config.json``), the base model's
  identity (``xttsft_adapter.json``) and the reference wavs: a few MB, to share
  a voice without redistributing the base weights. ``xttsft synth --model DIR``
  loads it on top of the base.

Folders are written under a temporary name and renamed when complete; a re-run
with the same checkpoint is skipped (``force`` writes again). The marker lists the
files the export wrote (``files``): a new export replaces a folder only when it holds
nothing else, so a file the user put there is never deleted.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from xttsft import model as xmodel
from xttsft.errors import DatasetError, ExportError, InputError, ModelNotFoundError, XttsftError
from xttsft.io import atomic_dir, check_output_path, sha256_file, tidy_swaps
from xttsft.locks import stage_lock
from xttsft.paths import Workspace
from xttsft.progress import Progress, no_progress
from xttsft.records import AdapterMarker, CheckpointMeta, ExportMarker, ExportSource, Mode, read_marker, write_record
from xttsft.storage import require_free_space
from xttsft.voice.synth import ModelSource, Voice, conditioning, load_reference, select_reference_clips

__all__ = ["ExportResult", "EXPORT_MARKER", "ADAPTER_MARKER", "export_run", "stock_state_dict"]

log = logging.getLogger(__name__)

EXPORT_MARKER = ExportMarker.FILE
ADAPTER_MARKER = AdapterMarker.FILE
_COPIED = ("config.json", "vocab.json", "dvae.pth", "mel_stats.pth")


@dataclass
class ExportResult:
    """What ``export_run`` wrote."""

    out_dir: Path
    kind: str  # "merged" | "adapter"
    run: str
    checkpoint: str
    mode: str
    files: list[Path] = field(default_factory=list)
    skipped: bool = False
    tiny: bool = False

    @property
    def size_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.files if p.is_file())


def stock_state_dict(xtts: Any) -> dict[str, Any]:
    """``Xtts`` weights in the key layout of the stock XTTS-v2 ``model.pth``:
    without the inference GPT's aliases (``gpt.gpt_inference.*``, ``gpt.gpt.wte.*``,
    rebuilt at load time) and without the DVAE."""
    skip = ("gpt.gpt_inference.", "gpt.gpt.wte.", "dvae.", "torch_mel_spectrogram")
    return {k: v.detach().cpu().contiguous() for k, v in xtts.state_dict().items() if not k.startswith(skip)}


def _source_id(ck_path: Path, meta: CheckpointMeta, references: list[str]) -> ExportSource:
    return ExportSource(
        checkpoint=str(ck_path), saved=meta.saved, step=meta.step, epoch=meta.epoch, references=references
    )


@dataclass
class _Job:
    """One export: what is written where, from which checkpoint."""

    name: str
    kind: str
    mode: Mode
    info: Any
    checkpoint: Any
    out_dir: Path
    marker_cls: type[ExportMarker] | type[AdapterMarker]
    refs: list[Path]
    source: ExportSource

    @property
    def adapter_only(self) -> bool:
        return self.kind == "adapter"

    @property
    def marker(self) -> Path:
        return self.out_dir / self.marker_cls.FILE

    def result(self, skipped: bool = False) -> ExportResult:
        files = sorted(p for p in self.out_dir.iterdir() if p.is_file())
        return ExportResult(
            self.out_dir,
            self.kind,
            self.name,
            self.checkpoint.path.name,
            self.mode,
            files,
            skipped=skipped,
            tiny=self.info.tiny,
        )


@stage_lock("export")
def export_run(
    ws: Workspace,
    run: str | None = None,
    checkpoint: str = "best",
    out: Path | None = None,
    adapter_only: bool = False,
    references: list[Path] | None = None,
    num_references: int = 3,
    force: bool = False,
    progress: Progress | None = None,
) -> ExportResult:
    """Export a run's checkpoint as a merged XTTS-v2 folder or as its adapter only.

    Default ``out``: ``train/exports/<run>/`` (merged) or ``train/exports/<run>-adapter/``.
    """

    progress = progress or no_progress
    job = _plan(ws, run, checkpoint, out, adapter_only, references, num_references)
    if not force and job.marker.is_file():
        done = read_marker(job.out_dir, job.marker_cls)
        if done is not None and done.source == job.source:
            log.info("%s already holds this export; skipping (force to write again).", job.out_dir)
            return job.result(skipped=True)
    _require_replaceable(job.out_dir, job.marker)  # fails now, not after minutes of merging
    base, identity = _base_of(job, progress)
    src = job.checkpoint.path if adapter_only else base
    assert src is not None
    require_free_space(
        job.out_dir.parent,
        sum(f.stat().st_size for f in src.iterdir() if f.is_file()) + sum(r.stat().st_size for r in job.refs),
        "export",
    )
    with atomic_dir(job.out_dir) as tmp:
        _write(tmp, job, base, identity, progress)
    log.info("Exported %s (%s) to %s", job.name, job.kind, job.out_dir)
    return job.result()


def _plan(
    ws: Workspace,
    run: str | None,
    checkpoint: str,
    out: Path | None,
    adapter_only: bool,
    references: list[Path] | None,
    num_references: int,
) -> _Job:
    """The run, checkpoint, folder and reference clips, each checked before anything is merged."""

    name, run_dir = xmodel.resolve_run(ws, run)
    info = xmodel.read_run_info(run_dir)
    ck = xmodel.find_checkpoint(run_dir, checkpoint)
    mode: Mode = ck.record.mode or ("full" if info.mode == "full" else "lora")
    if adapter_only and mode != "lora":
        raise InputError(
            f"Run {name!r} was trained with full fine-tuning: it has no LoRA adapter to export.",
            hint="Export the merged model instead (xttsft export without --adapter-only).",
        )
    out_dir = Path(out) if out else ws.export_dir(f"{name}-adapter" if adapter_only else name)
    marker_cls = AdapterMarker if adapter_only else ExportMarker
    check_output_path(out_dir, "--out", folder=True)  # a file there, or a file on the way
    tidy_swaps(out_dir.parent, complete=lambda p: (p / marker_cls.FILE).is_file(), name=out_dir.name)  # a killed export
    refs = [Path(r) for r in references] if references else _dataset_references(info, num_references)
    for r in refs:  # a bad reference fails now, not after minutes of merging
        load_reference(r)
    # new reference clips make a new export, even from the same checkpoint
    source = _source_id(ck.path, ck.record, [sha256_file(r) for r in refs])
    return _Job(name, "adapter" if adapter_only else "merged", mode, info, ck, out_dir, marker_cls, refs, source)


def _base_of(job: _Job, progress: Progress) -> tuple[Path | None, Any]:
    """The base model folder (none for an adapter that knows its base's identity) and its identity."""

    if job.adapter_only and job.info.base_identity:
        return None, job.info.base_identity  # sharing an adapter must not need (or download) the base
    try:
        base = xmodel.validate_base_dir(job.info.base_dir)
    except ModelNotFoundError:
        base = xmodel.resolve_base_model(job.info.base_model, progress=progress)
    return base, xmodel.base_identity(base)


def _write(tmp: Path, job: _Job, base: Path | None, identity: Any, progress: Progress) -> None:
    """The export's files into ``tmp`` (swapped in whole by the caller), verified, marker last."""
    ck, info = job.checkpoint, job.info
    if job.adapter_only:
        progress(total=2, completed=0, description="copying the adapter")
        _check_adapter(
            ck.path,
            InputError,
            "Export another checkpoint (--checkpoint latest or "
            "checkpoint_epoch_N), or resume the training to write a new one.",
        )
        for fname in ("adapter_model.safetensors", "adapter_config.json"):
            shutil.copy2(ck.path / fname, tmp / fname)
        progress(advance=1)
    else:
        progress(total=4, completed=0, description="merging the adapter into the GPT")
        assert base is not None
        _write_merged(tmp, base, ck.path, job.mode, job.name, job.refs, info, progress)
    for i, ref in enumerate(job.refs):
        shutil.copy2(ref, tmp / ("reference.wav" if i == 0 else f"reference_{i + 1}.wav"))
    record = job.marker_cls(
        format="xttsft-adapter" if job.adapter_only else "xtts-v2",
        run=job.name,
        checkpoint=ck.path.name,
        mode=job.mode,
        language=info.language,
        base_model=info.base_model,
        base_identity=identity,
        dataset_dir=str(info.dataset_dir),
        speaker=job.name,
        references=[p.name for p in sorted(tmp.glob("reference*.wav"))],
        source=job.source,
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        adapter_target="xtts.gpt.gpt (transformers GPT2Model inside coqui's GPT)" if job.adapter_only else None,
    )
    _verify_written(tmp, job.adapter_only)  # what is shipped loads back, or nothing is shipped
    record.files = sorted([p.name for p in tmp.iterdir()] + [job.marker.name])
    _require_replaceable(job.out_dir, job.marker)  # again: the user may have added a file while it merged
    write_record(tmp / job.marker.name, job.marker_cls, record)
    progress(advance=1)


def _written_by_export(marker: Path) -> set[str] | None:
    """The names ``marker``'s export wrote; ``None`` for a marker written before it listed them."""
    record = read_marker(marker.parent, AdapterMarker if marker.name == AdapterMarker.FILE else ExportMarker)
    return set(record.files) | {marker.name} if record is not None and record.files is not None else None


_WRITTEN = (
    *_COPIED,
    "model.pth",
    "speakers_xtts.pth",
    "adapter_model.safetensors",
    "adapter_config.json",
    EXPORT_MARKER,
    ADAPTER_MARKER,
)


def _export_file(path: Path, written: set[str] | None) -> bool:
    """True for a file the export wrote: by the marker's list, or by name for a marker from before it."""
    if path.is_symlink() or not path.is_file():
        return False
    if written is not None:
        return path.name in written
    return path.name in _WRITTEN or re.fullmatch(r"reference(_\d+)?\.wav", path.name) is not None


def _require_replaceable(out_dir: Path, marker: Path) -> None:
    """Refuse to replace ``out_dir`` unless it is empty, or an export of this kind holding only what
    the export wrote (by its marker's list; by name for a marker from before the list)."""
    if not out_dir.is_dir() or not any(out_dir.iterdir()):
        return
    if not marker.is_file():
        raise InputError(
            f"{out_dir} exists and is not an xttsft export of this kind; not overwriting it.",
            hint="Choose another --out folder (an empty or new one), or move that folder's contents elsewhere.",
        )
    written = _written_by_export(marker)
    foreign = sorted(p for p in out_dir.iterdir() if not _export_file(p, written))
    if foreign:
        one = len(foreign) == 1
        shown = ", ".join(str(p) for p in foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
        raise InputError(
            f"{out_dir} holds {'a file' if one else f'{len(foreign)} files'} that no export wrote: {shown}; "
            f"exporting again would delete {'it' if one else 'them'}.",
            hint=f"Move {'it' if one else 'them'} out of that folder, or choose another --out folder; then export again.",
        )


def _check_adapter(folder: Path, error: type[XttsftError], hint: str) -> None:
    """Read every tensor of ``folder``'s adapter and parse its config: a truncated or damaged file
    raises ``error`` naming it."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    weights, config = folder / "adapter_model.safetensors", folder / "adapter_config.json"
    for path, read in (
        (weights, lambda: load_file(str(weights))),
        (config, lambda: json.loads(config.read_text(encoding="utf-8"))),
    ):
        try:
            value = read()
        except (OSError, ValueError, SafetensorError) as exc:
            raise error(f"{path} is damaged or missing ({exc}).", hint=hint) from None
        if path == weights:
            tensors = value
    if not tensors:
        raise error(f"{weights} holds no tensor.", hint=hint)


def _verify_written(tmp: Path, adapter_only: bool) -> None:
    """Load the export back from ``tmp``; a write cut short (a full disk) fails here, before the swap."""

    hint = "Check the free space and the disk, then export again."
    if adapter_only:
        _check_adapter(tmp, ExportError, hint)
        return
    try:  # memory-mapped: the merged model is already in memory once
        sd = xmodel.safe_torch_load(tmp / "model.pth", mmap=True)
        xmodel.safe_torch_load(tmp / "speakers_xtts.pth")
    except XttsftError as exc:
        raise ExportError(f"The export did not load back: {exc.message}", hint=hint) from None
    if not isinstance(sd, dict) or not sd.get("model"):
        raise ExportError(f"{tmp / 'model.pth'} holds no model weights.", hint=hint)


def _dataset_references(info: Any, count: int) -> list[Path]:

    dataset = Path(info.dataset_dir) if str(info.dataset_dir) not in {"", "."} else None
    if dataset is None or not dataset.is_dir():
        log.warning("No dataset for run %s: the export has no reference wavs.", info.run_dir.name)
        return []
    try:
        return select_reference_clips(dataset, count=count, split_rule=info.dataset_split)
    except DatasetError as exc:
        log.warning("No reference wavs in the export: %s", exc.message)
        return []


def _write_merged(
    tmp: Path, base: Path, ck_path: Path, mode: str, speaker: str, refs: list[Path], info: Any, progress: Progress
) -> None:
    import torch

    xtts = xmodel.load_xtts(base, device="cpu", for_training=True)
    xmodel.apply_checkpoint(xtts, ck_path, mode, merge=True)
    leftover = [n for n, _ in xtts.named_parameters() if "lora_" in n]
    if leftover:  # merge_lora must leave plain GPT-2 weights
        raise RuntimeError(f"LoRA layers left after merging: {leftover[:3]}")
    progress(advance=1, description="writing model.pth")
    torch.save({"model": stock_state_dict(xtts)}, tmp / "model.pth")
    for fname in _COPIED:
        shutil.copy2(base / fname, tmp / fname)
    progress(advance=1, description="adding the voice to speakers_xtts.pth")
    speakers = xmodel.safe_torch_load(base / "speakers_xtts.pth")
    if refs:
        xtts.gpt.init_gpt_for_inference(kv_cache=xtts.args.kv_cache, use_deepspeed=False)
        xtts.eval()
        voice = Voice(
            model=xtts,
            source=ModelSource("folder", str(tmp), tmp),
            description="export",
            language=info.language,
            base_dir=base,
            dataset_dir=None,
            tiny=xmodel.is_tiny(base),
            identity="export",
            device="cpu",
        )
        cond = conditioning(voice, refs, cache_dir=None)
        # SpeakerManager hands these to Xtts.inference in this order
        speakers = dict(speakers)
        speakers[speaker] = {"gpt_cond_latent": cond.gpt_cond_latent, "speaker_embedding": cond.speaker_embedding}
    torch.save(speakers, tmp / "speakers_xtts.pth")
    progress(advance=1)
