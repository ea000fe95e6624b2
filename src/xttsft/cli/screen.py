"""``xttsft screen``: keep only the target speaker's clean speech, once."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.markup import escape
from rich.table import Table

from xttsft.cli._common import console, handle_errors, progress_bar, state


def register(app: typer.Typer) -> None:
    app.command("screen")(screen)


def screen_flags(
    speaker_ref: list[Path] | None,
    no_speaker_filter: bool,
    no_quality_filter: bool,
    keep_duplicates: bool = False,
    **values: Any,
) -> dict[str, Any]:
    """The ``screen`` section's flags (``None``: not given), shared with run-all."""
    return {
        "speaker_refs": list(speaker_ref) if speaker_ref else None,
        "speaker_filter": False if no_speaker_filter else None,
        "quality_filter": False if no_quality_filter else None,
        "duplicate_filter": False if keep_duplicates else None,
        **values,
    }


SPEAKER_REF_HELP = (
    "A recording of the target voice (repeatable); default: the speaker with the most minutes. "
    "Any format ffmpeg reads, at least 2 s of speech."
)


@handle_errors
def screen(
    ctx: typer.Context,
    speaker_ref: list[Path] | None = typer.Option(None, "--speaker-ref", help=SPEAKER_REF_HELP, dir_okay=False),
    no_speaker_filter: bool = typer.Option(False, "--no-speaker-filter", help="Keep every voice (a one-speaker recording)."),
    no_quality_filter: bool = typer.Option(False, "--no-quality-filter", help="Keep clips whatever their DNSMOS score."),
    keep_duplicates: bool = typer.Option(False, "--keep-duplicates", help="Keep speech that arrived twice."),
    min_similarity: float | None = typer.Option(
        None, "--min-similarity", help="Below this similarity to the target a clip is always another voice [default: 0.70]."
    ),
    min_dnsmos: float | None = typer.Option(None, "--min-dnsmos", help="Lowest DNSMOS overall score (OVRL) kept, 1-5 [default: 2.0]."),
    min_dnsmos_bak: float | None = typer.Option(
        None, "--min-dnsmos-bak", help="Lowest DNSMOS background score (BAK) kept, 1-5 [default: 2.8]."
    ),
    force: bool = typer.Option(False, "--force", help="Decide again even when nothing changed."),
) -> None:
    """Keep only the target speaker's clean speech, once: drop other voices, mixed clips, noise and duplicates.

    **Input:** the clips of `xttsft segment`. Runs before `xttsft transcribe`, which then skips the dropped
    clips; `xttsft build` lists them with their reasons in `dropped.jsonl`.

    **How:** a pretrained speaker encoder (GE2E, shipped with resemblyzer, offline) embeds every clip and
    every 1.6 s window. The clips are clustered into speakers; the target is the one with the most minutes,
    or the one closest to `--speaker-ref`. A clip far from the target voice is `other_speaker`; one whose
    windows show a second voice is `mixed_speakers`. DNSMOS P.835 (Microsoft, shipped with speechmos) scores
    the rest; overall (OVRL) under `--min-dnsmos` or background (BAK) under `--min-dnsmos-bak` is
    `low_quality` (music, noise, bad microphones). An audio
    fingerprint finds speech that arrived twice (another format, an excerpt): the copy from the longer
    source is kept, the other is `duplicate`.

    **Output:** `train/data/processed/screen/`: `screen.jsonl` (one decision per clip, with its similarity
    and scores), `stats.json`, `speakers.png` (a map of the clips by voice) and `dnsmos.png`. Measures are
    cached per clip, so a changed threshold re-decides in seconds.

    Examples: `xttsft screen` ; `xttsft screen --speaker-ref maria.wav` ; `xttsft screen --no-speaker-filter`
    """
    from xttsft.screen import screen_clips

    st = state(ctx)
    settings, ws = st.load(screen=screen_flags(
        speaker_ref, no_speaker_filter, no_quality_filter, keep_duplicates,
        min_similarity=min_similarity, min_dnsmos=min_dnsmos, min_dnsmos_bak=min_dnsmos_bak,
    ))
    with progress_bar("screen", total=None) as bar:
        result = screen_clips(settings.screen, ws, force=force, progress=bar)
    print_speakers(result.speakers)
    table = Table(title="screen", title_justify="left")
    table.add_column("")
    table.add_column("clips", justify="right")
    table.add_column("minutes", justify="right")
    table.add_row("[green]kept[/]", str(result.kept), f"{result.kept_minutes:.1f}")
    for reason, n in result.dropped.most_common():
        table.add_row(f"[yellow]dropped: {reason}[/]", str(n), f"{result.dropped_minutes[reason]:.1f}")
    console.print(table)
    th = result.thresholds
    if th:
        console.print(f"thresholds: similarity {th.get('similarity', float('nan')):.2f} (clip), "
                      f"{th.get('window_similarity', float('nan')):.2f} (1.6 s window), "
                      f"DNSMOS OVRL {settings.screen.min_dnsmos:g}, BAK {settings.screen.min_dnsmos_bak:g}"
                      + ("; [dim]inputs unchanged, nothing re-decided[/]" if result.unchanged else ""))
    for label, path in (("speaker map", result.map_png), ("DNSMOS histogram", result.dnsmos_png)):
        if path is not None:
            console.print(f"{label}: {escape(str(path))}")
    console.print(f"every decision and its reason: {escape(str(result.screen_file))}")


def print_speakers(speakers: list[Any]) -> None:
    """The table of speakers found (shared with run-all's summary)."""
    if not speakers:
        return
    table = Table(title="speakers found", title_justify="left")
    for col, just in (("speaker", "left"), ("minutes", "right"), ("clips", "right"), ("kept", "right"),
                      ("similarity to target", "right")):
        table.add_column(col, justify=just)  # type: ignore[arg-type]
    for s in speakers:
        label = f"[bold]{s.label} (target)[/]" if s.target else s.label
        table.add_row(label, f"{s.minutes:.1f}", str(s.clips), str(s.kept), f"{s.similarity:.2f}")
    console.print(table)
