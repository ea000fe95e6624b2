"""``xttsft segment``: cut raw recordings into clean clips at the pauses."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.markup import escape
from rich.table import Table

from xttsft.cli._command import JSON_OPTION, command, load
from xttsft.cli._common import console, err_console, handle_errors, print_json, progress_bar

if TYPE_CHECKING:  # pragma: no cover
    from xttsft.data.segment import SegmentResult


def register(app: typer.Typer) -> None:
    command(app, "segment", "segment")(segment)


@handle_errors
def segment(
    ctx: typer.Context,
    inputs: list[Path] | None = typer.Argument(
        None,
        help="Audio files or folders to segment (default: the workspace's train/data/raw/).",
        show_default=False,
    ),
    force: bool = typer.Option(False, "--force", help="Redo sources already segmented; their old clips are replaced."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Cut recordings into 22050 Hz mono clips at the pauses, between --min-duration and --max-duration.

    **Input:** every audio file under `train/data/raw/` (or the FILES/FOLDERS given): anything ffmpeg
    decodes, any sample rate, mono or stereo, any length (long files are streamed).

    **How:** Silero VAD (offline, inside faster-whisper) finds the speech, or `--method energy` with
    `--silence-threshold`. Clips are cut at the longest pauses, never inside a word when a pause exists;
    speech longer than the maximum with no pause is split at its quietest point (flag `forced_split`).
    Each clip keeps `--pad` seconds of silence at both ends, never the neighbour's speech, and is
    normalised to `--target-loudness` dBFS RMS without its peak going over `--peak-limit`. Whole short
    sentences (from `--short-min-duration` s) that stand alone between pauses are kept too, as up to
    `--short-share` of the clips (flag `short_sentence`), so that the model learns to end short prompts,
    and every short turn (one voice's 1-5 s bounded by a change of voice) that could join no longer clip
    (flag `short_turn`; `--no-short-turns` drops them).

    **Output:** `train/data/processed/segments/<source>_0001.wav` ... (16-bit PCM), `manifest.jsonl`
    (one row per clip: source, start, end, duration, peak, loudness, flags) and `sources.jsonl`.
    Sources already segmented with the same content and settings are skipped; `--force` redoes them.
    A bad file gets one line with its reason and the others go on; exit status 1 if any failed.

    Example: `xttsft segment --min-duration 3 --max-duration 12`
    """
    from xttsft.data.segment import segment_sources

    settings, ws = load(ctx)
    with progress_bar("segment", total=None) as bar:
        result = segment_sources(settings.segment, ws, inputs=inputs or None, force=force, progress=bar)
    if as_json:
        print_json(result)
    else:
        _summary(result)
    if result.failed:
        err_console.print(
            f"[bold red]{len(result.failed)} of {len(result.sources)} file(s) failed[/] (see above); "
            "the others were segmented."
        )
        raise typer.Exit(1)


def _summary(result: SegmentResult) -> None:
    table = Table(title="segment", title_justify="left")
    table.add_column("source", no_wrap=True)
    table.add_column("status")
    table.add_column("clips", justify="right")
    table.add_column("minutes", justify="right")
    table.add_column("short", justify="right")  # sentences, +turns when any
    table.add_column("dropped", justify="right")
    table.add_column("reason / notes")
    style = {"segmented": "green", "skipped": "dim", "failed": "bold red"}
    for s in result.sources:
        text = "; ".join(([s.reason] if s.reason else []) + s.notes)
        table.add_row(
            escape(Path(s.source).name),
            f"[{style[s.status]}]{s.status}[/]",
            str(s.segments),
            f"{s.seconds / 60:.1f}",
            f"{s.short}+{s.short_turns}" if s.short_turns else str(s.short),
            str(s.dropped),
            escape(text),
        )
    console.print(table)
    console.print(
        f"{result.total_segments} clips, {result.total_seconds / 60:.1f} min in {escape(str(result.segments_dir))}; "
        f"{result.short_summary}; manifest: {escape(str(result.manifest))}"
    )
