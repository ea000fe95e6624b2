"""``xttsft build``: the LJSpeech dataset for XTTS-v2, or ``--check`` of any LJSpeech folder."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.markup import escape
from rich.table import Table

from xttsft.cli._command import JSON_OPTION, command, flags, load
from xttsft.cli._common import console, err_console, handle_errors, print_json, progress_bar

if TYPE_CHECKING:  # pragma: no cover
    from xttsft.data.build import BuildResult, CheckResult


def register(app: typer.Typer) -> None:
    command(app, "build", "build")(build)


@handle_errors
def build(
    ctx: typer.Context,
    check: Path | None = typer.Option(
        None,
        "--check",
        help="Only validate this LJSpeech folder (ours or made elsewhere); exit 1 if invalid.",
        file_okay=False,
    ),
    as_json: bool = JSON_OPTION,
) -> None:
    """Build the LJSpeech dataset XTTS-v2 fine-tuning reads, keeping only what it accepts and saying why the rest went.

    **Input:** `train/data/processed/transcriptions/transcripts.jsonl` (`xttsft transcribe`) and the segment
    clips. **Kept:** transcripts with status ok, 0.5 s up to the segment maximum (`segment.max_duration`,
    which `train` honours) after the word-based trim, text within
    the GPT's 402 text-token limit (what `train` applies), no `|` or line break. Everything else is listed with its
    reason in `dropped.jsonl` and in the table below.

    **Output:** `train/data/MyTTSDataset/`: `wavs/<id>.wav` (22050 Hz mono 16-bit, trimmed), `metadata.csv`,
    `metadata_train.csv`, `metadata_val.csv` (`id|text|normalized_text`, no header; the split is deterministic
    for a seed and val is never empty with 2+ samples), `samples.jsonl`, `dropped.jsonl`, `stats.json` and
    `durations.png`. Warns below 100 samples / 15 minutes (500-5000 samples, 15-60 minutes recommended).
    Unchanged inputs and settings: nothing is rewritten.

    `--check PATH` validates any dataset folder instead, exactly as `xttsft train` reads it (the same
    code): every row training would refuse or drop (missing or unreadable wavs, too short or too long
    for the model, characters the vocabulary lacks, duplicate ids or audio, empty text, `|` in the
    text, paths that leave the folder), against the base model's limits (TRAIN_BASE_MODEL, as `xttsft train --base-model` sets it).

    Examples: `xttsft build --val-fraction 0.1 --seed 7` ; `xttsft build --check train/data/MyTTSDataset`
    """
    if check is not None:
        _check(ctx, check, as_json)
        return
    from xttsft.data.build import build_dataset, find_vocab

    settings, ws = load(ctx)
    vocab = find_vocab(settings.train.base_model)
    with progress_bar("build", total=None) as bar:
        result = build_dataset(
            settings.build,
            ws,
            max_audio_seconds=settings.segment.max_duration,
            vocab_file=vocab,
            progress=bar,
        )
    if as_json:
        print_json(result)
    else:
        _summary(result)


def _summary(result: BuildResult) -> None:
    table = Table(title=f"build: {escape(str(result.dataset_dir))}", title_justify="left")
    table.add_column("")
    table.add_column("samples", justify="right")
    table.add_row("[green]train[/]", str(result.train))
    table.add_row("[green]val[/]", str(result.val))
    for reason, n in sorted(result.dropped.items()):
        table.add_row(f"[yellow]dropped: {reason}[/]", str(n))
    console.print(table)
    console.print(
        f"language {result.language}, {result.minutes:.1f} minutes, text limit checked with "
        f"{'the base model vocabulary' if result.token_check == 'bpe' else 'characters (no local vocab)'}"
        + ("; [dim]inputs unchanged, nothing rewritten[/]" if result.unchanged else "")
    )
    if result.dropped:
        console.print(f"every dropped item and its reason: {escape(str(result.dataset_dir / 'dropped.jsonl'))}")


def _check(ctx: typer.Context, path: Path, as_json: bool) -> None:
    from xttsft.data.build import check_dataset

    settings, _ = load(ctx, file_logs=False)
    # --language given: that language (pt-BR parsed to pt); else the one train would take
    language = settings.build.language if "language" in flags(ctx).get("build", {}) else None
    result = check_dataset(
        path,
        base_model=settings.train.base_model,
        language=language if language not in (None, "auto") else settings.train.language,
        val_fraction=settings.build.val_fraction,
        seed=settings.build.seed,
    )
    if as_json:
        print_json(result)
    else:
        _print_check(path, result)
    if not result.ok:
        raise typer.Exit(1)


def _print_check(path: Path, result: CheckResult) -> None:
    for note in result.notes:
        console.print(f"[dim]{escape(note)}[/]")
    if result.ok:
        console.print(
            f"[green]OK[/] {escape(str(path))}: {result.rows} rows; training would use "
            f"{result.train} train + {result.val} val samples and drop none."
        )
        return
    err_console.print(
        f"[bold red]Invalid dataset[/] {escape(str(path))}: {len(result.problems)} problem(s); "
        f"training would use {result.train} train + {result.val} val samples"
    )
    for p in result.problems:
        err_console.print(f"  - {escape(p)}")
