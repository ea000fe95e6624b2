"""``xttsft train``: fine-tune XTTS-v2 (LoRA or full) on the built dataset."""

from __future__ import annotations

import contextlib
import logging
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.markup import escape
from rich.table import Table

from xttsft.cli._common import console, err_console, handle_errors, progress_bar, state
from xttsft.errors import XttsftError

if TYPE_CHECKING:  # pragma: no cover
    from xttsft.train import TrainResult


def register(app: typer.Typer) -> None:
    app.command("train")(train)


@handle_errors
def train(
    ctx: typer.Context,
    base_model: str | None = typer.Option(
        None, "--base-model", help="coqui/XTTS-v2 (downloaded once), a local model folder, or tiny (random test model: noise)."
    ),
    dataset_dir: Path | None = typer.Option(
        None, "--dataset-dir", help="Dataset folder: ours, an LJSpeech one, xtts-finetune-webui's or a bare metadata.csv "
        "(default: train/data/<dataset_name>)."
    ),
    language: str | None = typer.Option(
        None, "--language", help="Language of the dataset (pt, en, ...) [default: lang.txt, then stats.json of the dataset]."
    ),
    run_name: str | None = typer.Option(None, "--run-name", help="Run folder name under train/checkpoints/ (default: a timestamp)."),
    resume: bool = typer.Option(False, "--resume", help="Continue the latest complete checkpoint of --run-name (else the newest run)."),
    num_epochs: int | None = typer.Option(None, "--num-epochs", help="Epochs to train in total."),
    batch_size: str | None = typer.Option(None, "--batch-size", help="Samples per step, or auto (doctor's pick)."),
    grad_accum_steps: str | None = typer.Option(None, "--grad-accum-steps", help="Steps per optimizer update, or auto."),
    learning_rate: str | None = typer.Option(None, "--learning-rate", help="Peak learning rate, or auto (XTTS-v2: LoRA 1e-4, full 5e-6; tiny: 3e-3 / 1e-3)."),
    use_lora: bool | None = typer.Option(None, "--use-lora/--full", help="LoRA adapters (default) or a full GPT fine-tune."),
    lora_rank: int | None = typer.Option(None, "--lora-rank", help="LoRA rank r."),
    use_amp: str | None = typer.Option(None, "--use-amp", help="Mixed precision: true, false or auto (on with a GPU)."),
    gradient_checkpointing: str | None = typer.Option(None, "--gradient-checkpointing", help="true, false or auto."),
    device: str | None = typer.Option(None, "--device", help="auto, cpu or cuda."),
    save_every_n_epochs: int | None = typer.Option(None, "--save-every-n-epochs", help="Write checkpoint_epoch_N every N epochs."),
    save_every_n_minutes: float | None = typer.Option(
        None, "--save-every-n-minutes",
        help="Save the training state (resume_state/) every N minutes, so a kill or power cut loses at most that "
        "much (default 10; 0: off)."),
    print_step: int | None = typer.Option(None, "--print-step", help="Print the loss line every N steps."),
    allow_changed_dataset: bool = typer.Option(
        False, "--allow-changed-dataset",
        help="With --resume: continue on a dataset that changed since the run recorded it. Every clip keeps its "
        "recorded side (train or val); new clips go where the split puts them."),
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
    from xttsft.train import train as run_train

    st = state(ctx)
    rank = int(os.environ.get("RANK", "0"))  # torchrun: only rank 0 tells the story
    flags = {
        "base_model": base_model, "dataset_dir": dataset_dir, "language": language, "run_name": run_name,
        "num_epochs": num_epochs,
        "batch_size": batch_size, "grad_accum_steps": grad_accum_steps, "learning_rate": learning_rate,
        "use_lora": use_lora, "lora_rank": lora_rank, "use_amp": use_amp,
        "gradient_checkpointing": gradient_checkpointing, "device": device,
        "save_every_n_epochs": save_every_n_epochs, "save_every_n_minutes": save_every_n_minutes,
        "print_step": print_step,
    }
    try:
        settings, provenance, ws = st.load_with_provenance(train=flags)
        if rank > 0:
            _quiet_rank(rank)
        ws.ensure()
        with progress_bar("Training", total=None) if rank == 0 else contextlib.nullcontext() as bar:
            result = run_train(settings, ws, resume=resume, provenance=provenance,
                               allow_changed_dataset=allow_changed_dataset, progress=bar)
    except XttsftError as exc:
        if rank > 0:
            raise type(exc)(f"[rank {rank}] {exc.message}", hint=exc.hint) from None
        raise
    if rank == 0:
        _summary(result)
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
    from xttsft.paths import RunPaths

    def first_to_last(losses: list[float]) -> str:
        known = [x for x in losses if math.isfinite(x)] or losses  # a resume from best_model knows no earlier ones
        return f"{known[0]:.4f} -> {losses[-1]:.4f}"

    table = Table(title=f"[bold]Run {result.run_name}[/] ({result.status})", title_justify="left")
    table.add_column("")
    table.add_column("value")
    table.add_row("mode / device", f"{result.mode} / {result.device}")
    table.add_row("trainable params", f"{result.trainable_params:,} of {result.total_params:,} "
                  f"({100 * result.trainable_params / max(1, result.total_params):.2f} %)")
    table.add_row("samples", f"{result.train_samples} train + {result.val_samples} val ({result.hours:.2f} h)")
    if result.dropped:
        table.add_row("dropped", ", ".join(f"{n} {r}" for r, n in result.dropped.items()))
    table.add_row("epochs", f"{result.epochs_completed} of {result.num_epochs} (step {result.global_step})")
    if result.epoch_train_losses:
        table.add_row("train loss", first_to_last(result.epoch_train_losses))
        table.add_row("val loss", first_to_last(result.epoch_val_losses))
    if result.best_val_loss is not None:
        table.add_row("best model", f"epoch {result.best_epoch}, val loss {result.best_val_loss:.4f}: "
                      f"{RunPaths(result.run_dir).best_model}")
    if result.nan_skipped:
        table.add_row("non-finite losses skipped", str(result.nan_skipped))
    table.add_row("checkpoints", escape(", ".join(p.name for p in result.checkpoints)) or "none")
    table.add_row("TensorBoard", escape(f"tensorboard --logdir {result.tensorboard_dir}"))
    if result.loss_curve:
        table.add_row("loss curve", escape(str(result.loss_curve)))
    console.print(table)
