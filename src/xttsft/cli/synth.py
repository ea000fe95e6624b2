"""``xttsft synth``: speak text with the fine-tuned voice."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.markup import escape
from rich.table import Table

from xttsft.cli._command import JSON_OPTION, command, load
from xttsft.cli._common import console, handle_errors, print_json, progress_bar
from xttsft.errors import InputError

if TYPE_CHECKING:  # pragma: no cover
    from xttsft.voice.synth import SynthResult


def register(app: typer.Typer) -> None:
    command(app, "synth", "synth")(synth)


@handle_errors
def synth(
    ctx: typer.Context,
    text: str | None = typer.Argument(None, help="Text to speak. Long text is split into sentences."),
    text_file: Path | None = typer.Option(
        None, "--text-file", help="UTF-8 file, one utterance per line: one audio file per line.", dir_okay=False
    ),
    model: str | None = typer.Option(
        None,
        "--model",
        "-m",
        help="A run name (default: the most recent run), `base` (the base model alone), or a model folder "
        "(an `xttsft export`).",
    ),
    speaker_wav: list[Path] | None = typer.Option(
        None,
        "--speaker-wav",
        "-s",
        help="Reference audio of the voice (repeat for several). Default: the dataset's best 6-12 s clips.",
    ),
    out: Path | None = typer.Option(
        None,
        "--out",
        "-o",
        help="Output file; the extension picks the format (.wav, or .mp3/.flac/.ogg via ffmpeg). With --text-file: "
        "the extension of the numbered files. Default: outputs/synth/TEXT.wav.",
    ),
    out_dir: Path | None = typer.Option(
        None,
        "--out-dir",
        help="With --text-file: folder of the numbered files. Default: outputs/synth/<file name>/.",
        file_okay=False,
    ),
    as_json: bool = JSON_OPTION,
) -> None:
    """Speak text with the fine-tuned voice and write 24 kHz audio.

    **Model:** the most recent run in train/checkpoints/ (base XTTS-v2 + its LoRA adapter, or its
    full GPT weights), `--model RUN`, `--model base`, or an exported folder. GPU when present.

    **Voice:** conditioning clips from `--speaker-wav`, or picked from the run's dataset
    (samples.jsonl: 6-12 s clips with the best transcription). Their latents are cached in
    .cache/conditioning/, so the next call starts faster.

    **Text:** split into sentences under the per-language character limit (pt 203, en 250),
    numbers and abbreviations spelled out by coqui's cleaners, joined with short pauses.

    **Output:** `outputs/synth/<text>.wav` (or `--out`), or with `--text-file` one numbered file per
    line plus manifest.jsonl; a re-run skips lines already done with the same settings.

    Example: `xttsft synth "Olá, tudo bem?" --language pt --seed 1 --out ola.mp3`
    """
    from xttsft.voice.synth import read_text_file, synthesize

    if text is None and text_file is None:
        raise InputError("No text given.", hint='Pass the text (xttsft synth "Olá") or --text-file FILE.')
    if text is not None and text_file is not None:
        raise InputError("Pass either TEXT or --text-file, not both.", hint="Put every line in the file.")
    settings, ws = load(ctx)
    texts = read_text_file(text_file) if text_file is not None else [text or ""]
    folder = (out_dir or ws.synth_dir / text_file.stem) if text_file is not None else None
    with progress_bar("synthesizing", total=len(texts)) as bar:
        result = synthesize(
            settings.synth,
            ws,
            texts,
            model=model,
            speaker_wavs=speaker_wav,
            out=out,
            out_dir=folder,
            default_base=settings.train.base_model,
            progress=bar,
        )
    if as_json:
        print_json(result)
    else:
        _summary(result)


def _summary(result: SynthResult) -> None:
    table = Table(title=f"synth: {result.model}", title_justify="left")
    table.add_column("file")
    table.add_column("text", overflow="fold", max_width=60)
    table.add_column("audio s", justify="right")
    table.add_column("RTF", justify="right")
    for item in result.items:
        table.add_row(
            escape(str(item.path)),
            escape(item.text),
            f"{item.duration:.2f}",
            "skipped" if item.skipped else f"{item.rtf:.2f}",
        )
    console.print(table)
    refs = escape(", ".join(p.name for p in result.references))
    console.print(
        f"language {result.language} · device {result.device} · seed {result.seed} · references: {refs}"
        + (" (latents from cache)" if result.cached_latents else "")
    )
    if result.manifest is not None:
        console.print(f"manifest: {escape(str(result.manifest))}")
    for note in result.notes:
        console.print(f"[bold yellow]Note:[/] {note}")
