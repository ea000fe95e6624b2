"""``xttsft fetch``: download with yt-dlp or import local audio into train/data/raw/."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.markup import escape
from rich.table import Table

from xttsft.cli._command import JSON_OPTION, command, load
from xttsft.cli._common import console, err_console, handle_errors, print_json, progress_bar

if TYPE_CHECKING:  # pragma: no cover
    from xttsft.data.fetch import FetchResult


def register(app: typer.Typer) -> None:
    command(app, "fetch", "fetch")(fetch)


@handle_errors
def fetch(
    ctx: typer.Context,
    sources: list[str] | None = typer.Argument(
        None,
        help="URLs (video, playlist, channel: anything yt-dlp supports), audio files or folders.",
        show_default=False,
    ),
    from_file: Path | None = typer.Option(
        None,
        "--from-file",
        help="Text file with one URL or path per line (# comments and blank lines ignored).",
        dir_okay=False,
    ),
    as_json: bool = JSON_OPTION,
) -> None:
    """Download audio with yt-dlp, or import local audio, into `train/data/raw/`.

    **URLs** are downloaded with yt-dlp's Python API (no shell): audio only, extracted by ffmpeg at
    `--quality`, saved as `raw/<id>.<ext>` with a sidecar `raw/<id>.json` (title, uploader, duration, URL).
    The download archive `raw/.download-archive.txt` makes re-runs skip what is already there.

    **Local files and folders** (MP3, WAV, M4A, OGG, OPUS, FLAC, WEBM) are hard-linked or copied into
    `raw/`; other files and empty files are listed as skipped with the reason.

    A failed item (404, private, no media, network error) is reported with yt-dlp's reason and the
    others go on. Exit status: 0 when every source was fetched (or was already there); 2 when some
    sources failed and the rest was fetched (run the same command again to retry the failed ones);
    1 when nothing could be fetched.

    Examples: `xttsft fetch https://www.youtube.com/watch?v=ID ~/recordings/`,
    `xttsft fetch --from-file sources.txt --quality 128k`
    """
    from xttsft.data.fetch import fetch as run_fetch
    from xttsft.data.fetch import read_source_list

    settings, ws = load(ctx)
    items = list(sources or [])
    if from_file is not None:
        items += read_source_list(from_file)
    with progress_bar("fetch", total=len(items) or None) as bar:
        result = run_fetch(items, settings.fetch, ws, progress=bar)
    if as_json:
        print_json(result)
    else:
        _summary(result)
    if not result.ok:
        err_console.print("[bold red]Nothing could be fetched.[/] See the reasons above.")
        raise typer.Exit(1)
    if result.failed_sources:  # a playlist with a bad item is one source, failed in part
        n = len(result.failed_sources)
        what = f"{n} of {result.sources} sources" if n < result.sources else f"{result.count('failed')} items"
        err_console.print(
            f"[bold yellow]{what} failed[/] (exit status 2); the rest was fetched. "
            "See the reasons above; run the same command again to retry the failed ones."
        )
        raise typer.Exit(2)


def _summary(result: FetchResult) -> None:
    table = Table(title="fetch", title_justify="left")
    table.add_column("source", overflow="fold")  # a URL is copied whole, never cut with an ellipsis
    table.add_column("status")
    table.add_column("file", overflow="fold")
    table.add_column("reason", overflow="fold")
    style = {"fetched": "green", "present": "dim", "skipped": "yellow", "failed": "bold red"}
    for it in result.items:
        shown = "skipped" if it.status == "present" else it.status
        file = Path(it.path).name if it.path else (it.title or "")
        reason = it.reason or ""
        if it.hint:
            reason += f" ({it.hint})"
        table.add_row(escape(it.source), f"[{style[it.status]}]{shown}[/]", escape(file), escape(reason))
    console.print(table)
    skipped = result.count("present") + result.count("skipped")
    console.print(
        f"fetched {result.count('fetched')}, skipped {skipped}, failed {result.count('failed')}; "
        f"audio in {escape(str(result.raw_dir))}"
    )
