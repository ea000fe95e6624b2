"""``xttsft doctor``: check the machine and recommend settings for it."""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer
from rich.markup import escape
from rich.table import Table

from xttsft.cli._command import command
from xttsft.cli._common import console, handle_errors, print_json, state
from xttsft.errors import SettingsError
from xttsft.paths import Workspace

if TYPE_CHECKING:  # pragma: no cover
    from xttsft.doctor import DoctorReport


def register(app: typer.Typer) -> None:
    command(app, "doctor")(doctor)


_STYLE = {"ok": "green", "warn": "yellow", "fail": "bold red"}


@handle_errors
def doctor(
    ctx: typer.Context,
    as_json: bool = typer.Option(
        False, "--json", help="Print JSON: {ok, facts, recommendation, checks} instead of tables."
    ),
) -> None:
    """Check this machine for training and recommend settings for it.

    Looks at: Python, torch and its CUDA build, every NVIDIA GPU (name, total and free
    VRAM, compute capability, bf16), CPU cores, RAM, free disk in the workdir, ffmpeg,
    espeak-ng (optional), whether the XTTS-v2 base files are in the local Hugging Face
    cache, whether the tiny test model is built, whether the workspace's dataset
    (train/data/<dataset_name>/metadata_train.csv) exists, and whether the settings are valid.

    Then recommends, for this hardware and the train.use_lora setting: batch size,
    gradient accumulation, mixed precision (bf16 where supported, else fp16; off on CPU),
    gradient checkpointing, and the Whisper model, compute type and batch size. Every
    setting left at `auto` (TRAIN_BATCH_SIZE, TRAIN_USE_AMP, TRANSCRIBE_COMPUTE_TYPE, ...)
    takes these values.

    Exit code 1 when something training needs is missing (a `fail` row); a missing GPU
    is only a warning. Writes nothing.

    Example: `xttsft doctor`, or `xttsft doctor --json | jq .recommendation`
    """
    from xttsft.doctor import diagnose
    from xttsft.settings import load_settings

    st = state(ctx)
    ws = Workspace(st.workdir)
    settings_error = None
    dataset_dir = None
    use_lora = True
    try:
        settings, _ = load_settings(ws, config_file=st.config_file)
        ws = Workspace(st.workdir, dataset_name=settings.build.dataset_name)
        dataset_dir = settings.train.dataset_dir
        use_lora = settings.train.use_lora
    except SettingsError as exc:
        settings_error = exc.message

    report = diagnose(ws, dataset_dir=dataset_dir, settings_error=settings_error, use_lora=use_lora)

    if as_json:
        print_json(report)
    else:
        _print_report(report, use_lora)
    if not report.ok:
        raise typer.Exit(1)


def _print_report(report: DoctorReport, use_lora: bool) -> None:
    checks = Table(title="[bold]xttsft doctor[/]", title_justify="left")
    checks.add_column("check")
    checks.add_column("status")
    checks.add_column("found")
    checks.add_column("fix", style="cyan")
    for c in report.checks:
        checks.add_row(c.name, f"[{_STYLE[c.status]}]{c.status}[/]", escape(c.detail), escape(c.fix))
    console.print(checks)
    _print_recommendation(report, use_lora)
    if report.ok:
        console.print(
            "[green]Ready to train.[/]"
            if report.facts["dataset_exists"]
            else "[green]Ready[/]: build a dataset next (xttsft fetch ... build)."
        )
    else:
        failed = ", ".join(c.name for c in report.checks if c.status == "fail")
        console.print(f"[bold red]Not ready:[/] fix {escape(failed)} (see the fix column).")


def _print_recommendation(report: DoctorReport, use_lora: bool) -> None:
    rec = report.recommendation
    mode = "LoRA" if use_lora else "full fine-tune"
    table = Table(title=f"[bold]Recommended settings[/] ({mode}, used where a setting is auto)", title_justify="left")
    table.add_column("setting")
    table.add_column("value", style="bold")
    table.add_column("environment variable", style="dim")
    amp = f"on ({rec.amp_dtype})" if rec.use_amp else "off"
    rows = [
        ("device", rec.device, "TRAIN_DEVICE"),
        ("batch size", str(rec.train_batch_size), "TRAIN_BATCH_SIZE"),
        (
            "gradient accumulation",
            f"{rec.grad_accum_steps} (effective batch {rec.effective_batch_size})",
            "TRAIN_GRAD_ACCUM_STEPS",
        ),
        ("mixed precision", amp, "TRAIN_USE_AMP"),
        ("gradient checkpointing", "on" if rec.gradient_checkpointing else "off", "TRAIN_GRADIENT_CHECKPOINTING"),
        ("Whisper model", rec.whisper_model, "TRANSCRIBE_MODEL"),
        ("Whisper device", rec.whisper_device, "TRANSCRIBE_DEVICE"),
        ("Whisper compute type", rec.whisper_compute_type, "TRANSCRIBE_COMPUTE_TYPE"),
        ("Whisper batch size", str(rec.whisper_batch_size), "TRANSCRIBE_BATCH_SIZE"),
    ]
    for row in rows:
        table.add_row(*row)
    console.print(table)
    for note in rec.notes:
        console.print(f"[dim]-[/] {escape(note)}")
