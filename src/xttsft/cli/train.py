"""``xttsft train``: fine-tune XTTS-v2 (LoRA or full) on the built dataset."""

from __future__ import annotations

import contextlib
import logging
import math
import os
from typing import TYPE_CHECKING

import typer
from rich.markup import escape
from rich.table import Table

from xttsft.cli._command import JSON_OPTION, command, load_with_provenance
from xttsft.cli._common import console, err_console, handle_errors, print_json, progress_bar
from xttsft.errors import XttsftError
from xttsft.paths import RunPaths

if TYPE_CHECKING:  # pragma: no cover
    from xttsft.training.train import TrainResult


def register(app: typer.Typer) -> None:
    command(app, "train", "train")(train)


@handle_errors
def train(
    ctx: typer.Context,
    resume: bool = typer.Option(
        False, "--resume", help="Continue the latest complete checkpoint of --run-name (else the newest run)."
    ),
    allow_changed_dataset: bool = typer.Option(
        False,
        "--allow-changed-dataset",
        help="With --resume: continue on a dataset that changed since the run recorded it. Every clip keeps its "
        "recorded side (train or val); new clips go where the split puts them.",
    ),
    as_json: bool = JSON_OPTION,
) -> None:
    """Fine-tune the XTTS-v2 GPT on your dataset: PEFT LoRA (default) or in full.

    **Reads** a dataset and the base model (`--base-model`, default coqui/XTTS-v2, downloaded once at a
    pinned revision). The dataset is the `xttsft build` one (train/data/DATASET_NAME/) or any folder
    given with `--dataset-dir`: LJSpeech `metadata_train.csv` + `metadata_val.csv` (or
    `metadata_eval.csv`), xtts-finetune-webui's `audio_file|text|speaker_name` files with `lang.txt`,
    or a single `metadata.csv` (split like `xttsft build` splits). Its language: `--language`, else
    `lang.txt`, else `stats.json`. Clips at other rates are converted on load. Every row the model
    cannot take is listed before training (`xttsft build --check DIR` lists the same rows).

    **Writes** train/checkpoints/RUN/: settings.json, run.json, checkpoint_epoch_N/
    (adapter or GPT weights as safetensors + training_state.pt + meta.json), best_model/
    (lowest val loss), resume_state/ (the newest state, every 10 minutes), loss_curve.png;
    TensorBoard events in train/runs/RUN/; logs/info.log.

    Every `auto` value (batch size, accumulation, AMP, gradient checkpointing) comes from
    `xttsft doctor`. Ctrl-C or SIGTERM (a job scheduler, `timeout`, `docker stop`) saves a checkpoint;
    `--resume` continues exactly where it stopped, and after a kill or power cut from the newest state
    on disk (a run killed before its first save starts again). A resume takes the run's own settings
    (settings.json) for every setting not given now, and refuses a dataset that changed since the run
    recorded it unless `--allow-changed-dataset`. One run is written by one process: a second `train`
    of the same run is refused. Multi-GPU: `torchrun --nproc_per_node N $(which xttsft) train ...`
    (data parallel; only rank 0 prints).

    Example: `xttsft train --run-name maria --num-epochs 50` then `xttsft train --run-name maria --resume`.
    Offline demo: `xttsft train --base-model tiny --num-epochs 2` (a random model: its output is noise).
    """
    from xttsft.training.train import train as run_train

    rank = int(os.environ.get("RANK", "0"))  # torchrun: only rank 0 tells the story
    try:
        settings, provenance, ws = load_with_provenance(ctx)
        if rank > 0:
            _quiet_rank(rank)
        ws.ensure()
        with progress_bar("Training", total=None) if rank == 0 else contextlib.nullcontext() as bar:
            result = run_train(
                settings,
                ws,
                resume=resume,
                provenance=provenance,
                allow_changed_dataset=allow_changed_dataset,
                progress=bar,
            )
    except XttsftError as exc:
        if rank > 0:
            raise type(exc)(f"[rank {rank}] {exc.message}", hint=exc.hint) from None
        raise
    if rank == 0:
        print_json(result) if as_json else _summary(result)
    code = {"interrupted": 130, "terminated": 143}.get(result.status)
    if code is not None:
        if rank == 0:
            what = "Interrupted." if code == 130 else "Terminated (SIGTERM)."
            err_console.print(f"[yellow]{what}[/] Continue with: xttsft train --run-name {result.run_name} --resume")
        raise typer.Exit(code)


def _quiet_rank(rank: int) -> None:
    """A torchrun process other than rank 0: warnings and errors only, each prefixed with its rank."""

    def prefix(record: logging.LogRecord) -> bool:
        if not getattr(record, "_rank_prefixed", False):
            record.msg, record._rank_prefixed = f"[rank {rank}] {record.msg}", True
        return True

    logging.getLogger("xttsft").setLevel(logging.WARNING)
    for h in logging.getLogger().handlers:
        h.addFilter(prefix)


def _summary(result: TrainResult) -> None:

    def first_to_last(losses: list[float]) -> str:
        known = [x for x in losses if math.isfinite(x)] or losses  # a resume from best_model knows no earlier ones
        return f"{known[0]:.4f} -> {losses[-1]:.4f}"

    table = Table(title=f"[bold]Run {result.run_name}[/] ({result.status})", title_justify="left")
    table.add_column("")
    table.add_column("value")
    table.add_row("mode / device", f"{result.mode} / {result.device}")
    table.add_row(
        "trainable params",
        f"{result.trainable_params:,} of {result.total_params:,} "
        f"({100 * result.trainable_params / max(1, result.total_params):.2f} %)",
    )
    table.add_row("samples", f"{result.train_samples} train + {result.val_samples} val ({result.hours:.2f} h)")
    if result.dropped:
        table.add_row("dropped", ", ".join(f"{n} {r}" for r, n in result.dropped.items()))
    table.add_row("epochs", f"{result.epochs_completed} of {result.num_epochs} (step {result.global_step})")
    if result.epoch_train_losses:
        table.add_row("train loss", first_to_last(result.epoch_train_losses))
        table.add_row("val loss", first_to_last(result.epoch_val_losses))
    if result.best_val_loss is not None:
        table.add_row(
            "best model",
            f"epoch {result.best_epoch}, val loss {result.best_val_loss:.4f}: {RunPaths(result.run_dir).best_model}",
        )
    if result.nan_skipped:
        table.add_row("non-finite losses skipped", str(result.nan_skipped))
    table.add_row("checkpoints", escape(", ".join(p.name for p in result.checkpoints)) or "none")
    table.add_row("TensorBoard", escape(f"tensorboard --logdir {result.tensorboard_dir}"))
    if result.loss_curve:
        table.add_row("loss curve", escape(str(result.loss_curve)))
    console.print(table)
