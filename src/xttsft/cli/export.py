"""``xttsft export``: a standard XTTS-v2 folder (LoRA merged) or the adapter alone."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.markup import escape
from rich.table import Table

from xttsft.cli._command import JSON_OPTION, command, load
from xttsft.cli._common import console, handle_errors, print_json, progress_bar

if TYPE_CHECKING:  # pragma: no cover
    from xttsft.voice.export import ExportResult


def register(app: typer.Typer) -> None:
    command(app, "export", "synth.checkpoint", "synth.num_references")(export)


@handle_errors
def export(
    ctx: typer.Context,
    run: str | None = typer.Option(None, "--run", "-r", help="Run name or folder. Default: the most recent run."),
    out: Path | None = typer.Option(
        None,
        "--out",
        "-o",
        file_okay=False,
        help="Output folder. Default: train/exports/RUN/, or train/exports/RUN-adapter/ with --adapter-only.",
    ),
    adapter_only: bool = typer.Option(
        False, "--adapter-only", help="Write only the LoRA adapter (a few MB) + the base model's identity."
    ),
    speaker_wav: list[Path] | None = typer.Option(
        None, "--speaker-wav", "-s", help="Reference wavs to ship. Default: the dataset's best 6-12 s clips."
    ),
    force: bool = typer.Option(False, "--force", help="Write again even if the folder holds this checkpoint's export."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Export a trained voice for other XTTS-v2 tools.

    **Merged (default):** folds the LoRA adapter into the GPT and writes a standard XTTS-v2
    folder: model.pth (stock key layout, no optimizer, no DVAE), config.json, vocab.json,
    dvae.pth, mel_stats.pth, speakers_xtts.pth (base speakers + this voice under the run's
    name), reference.wav and xttsft_export.json. Stock coqui-tts, xtts-finetune-webui and
    AllTalk load it unchanged; so does `xttsft synth --model FOLDER`.

    **--adapter-only:** adapter_model.safetensors + adapter_config.json (PEFT) +
    xttsft_adapter.json (the base model's identity) + reference.wav: share a voice without
    the base weights. `xttsft synth --model FOLDER` loads it on top of the base.

    Default folder: `train/exports/<run>/` (`<run>-adapter/` with --adapter-only). Re-running with the same checkpoint skips the work (--force writes again).
    An existing folder is replaced only when it holds nothing but the files an export wrote (listed in its
    marker); anything else there (your notes, another folder's contents) stops the export with its path.

    Example: `xttsft export --run my-voice --out ~/xtts-models/my-voice`
    """
    from xttsft.voice.export import export_run

    settings, ws = load(ctx)
    with progress_bar("exporting") as bar:
        result = export_run(
            ws,
            run=run,
            checkpoint=settings.synth.checkpoint,
            out=out,
            adapter_only=adapter_only,
            references=speaker_wav,
            num_references=settings.synth.num_references,
            force=force,
            progress=bar,
        )
    if as_json:
        print_json(result)
    else:
        _summary(result)


def _summary(result: ExportResult) -> None:
    title = f"export ({result.kind}) of run {result.run}, {result.checkpoint}"
    if result.skipped:
        title += ": already done, skipped"
    table = Table(title=title, title_justify="left")
    table.add_column("file")
    table.add_column("size", justify="right")
    for f in result.files:
        table.add_row(escape(f.name), _size(f.stat().st_size))
    table.add_row("[bold]total[/]", f"[bold]{_size(result.size_bytes)}[/]")
    console.print(table)
    console.print(f"folder: {escape(str(result.out_dir))}")
    if result.kind == "merged":
        console.print(
            "load it with coqui-tts: TTS(model_path=FOLDER, config_path=FOLDER/config.json)"
            f".tts_to_file(text, speaker={result.run!r}, language=...)"
        )


def _size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)
