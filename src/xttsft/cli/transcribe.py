"""``xttsft transcribe``: faster-whisper over the segment clips, in batches."""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer
from rich.markup import escape
from rich.table import Table

from xttsft.cli._command import JSON_OPTION, command, load
from xttsft.cli._common import console, err_console, handle_errors, print_json, progress_bar

if TYPE_CHECKING:  # pragma: no cover
    from xttsft.data.transcribe import TranscribeResult


def register(app: typer.Typer) -> None:
    command(app, "transcribe", "transcribe")(transcribe)


@handle_errors
def transcribe(ctx: typer.Context, as_json: bool = JSON_OPTION) -> None:
    """Transcribe every segment clip with faster-whisper, in batches, and reject bad transcripts.

    **Input:** the clips and `manifest.jsonl` in `train/data/processed/segments/` (run `xttsft segment` first).

    **How:** clips of one source file are packed side by side (1 s of silence between them) into 30 s
    Whisper windows, and the windows are decoded `--batch-size` at a time: several times faster than one
    call per clip on a CPU. Word timestamps give every clip its own words and tighten its edges to the first
    and last word plus the segment pad. Model, device, compute type and batch size default to `xttsft doctor`'s
    recommendation (model: large-v3 on a GPU of 10 GB+, medium on 5 GB+, small on CPU). With `--language auto` the language is detected per source file and shown; when Whisper
    is unsure (p < 0.5) or hears a language XTTS-v2 does not speak, it stops and asks for `--language`. With a
    language given, each clip heard confidently as another language is rejected as wrong_language.

    **Rejected** (with a count per reason): empty_text, no_letters, repetition (an n-gram repeated back to
    back), hallucination (no-speech probability or compression ratio too high), low_confidence (average
    log-probability too low), wrong_language.

    **Output:** `train/data/processed/transcriptions/transcripts.jsonl`, one row per clip (text, language,
    word timestamps, avg_logprob, no_speech_prob, compression_ratio, trim_start, trim_end, status, reason).
    Clips already transcribed with the same model, language and decoding settings are skipped.

    Example: `xttsft transcribe --model large-v3 --language pt`
    """
    from xttsft.data.transcribe import transcribe_segments

    settings, ws = load(ctx)
    with progress_bar("transcribe", total=None) as bar:
        result = transcribe_segments(settings.transcribe, ws, pad=settings.segment.pad, progress=bar)
    print_json(result) if as_json else _summary(result)
    if result.failed:
        err_console.print(f"[bold red]{len(result.failed)} clip(s) could not be read[/]; the others were transcribed.")
        raise typer.Exit(1)


def _summary(result: TranscribeResult) -> None:
    rt = result.runtime
    table = Table(
        title=f"transcribe ({escape(rt.model)}, {rt.device} {rt.compute_type}, batch {rt.batch_size})",
        title_justify="left",
    )
    table.add_column("")
    table.add_column("clips", justify="right")
    table.add_column("")
    table.add_row("[green]kept[/]", str(result.kept), f"{result.kept_seconds / 60:.1f} min of speech")
    for reason, n in sorted(result.rejected.items()):
        table.add_row(f"[yellow]rejected: {reason}[/]", str(n), "")
    if result.failed:
        table.add_row("[bold red]failed[/]", str(len(result.failed)), "unreadable clips (see above)")
    table.add_row(
        "transcribed now",
        str(result.transcribed),
        f"{result.audio_seconds / 60:.1f} min in {result.elapsed:.0f} s"
        + (f" = {result.realtime:.1f}x realtime" if result.realtime else ""),
    )
    table.add_row("[dim]already done[/]", str(result.reused), "[dim]skipped[/]")
    for source, (code, prob) in result.detected.items():  # --language auto: what Whisper heard, per file
        table.add_row("[dim]detected[/]", "", f"{escape(source)}: {code} (p={prob:.2f})")
    console.print(table)
    langs = ", ".join(f"{k} ({v})" for k, v in result.languages.most_common())
    console.print(f"language: {escape(langs or '-')}; transcripts: {escape(str(result.transcripts))}")
