"""``xttsft synth``: speak text with the fine-tuned voice."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape
from rich.table import Table

from xttsft.cli._common import console, handle_errors, progress_bar, state


def register(app: typer.Typer) -> None:
    app.command("synth")(synth)


@handle_errors
def synth(
    ctx: typer.Context,
    text: str | None = typer.Argument(None, help="Text to speak. Long text is split into sentences."),
    text_file: Path | None = typer.Option(
        None, "--text-file", help="UTF-8 file, one utterance per line: one audio file per line.", dir_okay=False
    ),
    model: str | None = typer.Option(
        None, "--model", "-m",
        help="A run name (default: the most recent run), `base` (the base model alone), or a model folder "
        "(an `xttsft export`).",
    ),
    checkpoint: str | None = typer.Option(None, "--checkpoint", help="best, latest or a checkpoint folder. [default: best]"),
    speaker_wav: list[Path] | None = typer.Option(
        None, "--speaker-wav", "-s",
        help="Reference audio of the voice (repeat for several). Default: the dataset's best 6-12 s clips.",
    ),
    language: str | None = typer.Option(None, "--language", "-l", help="Language of the text. [default: the run's]"),
    out: Path | None = typer.Option(
        None, "--out", "-o",
        help="Output file; the extension picks the format (.wav, or .mp3/.flac/.ogg via ffmpeg). With --text-file: "
        "the extension of the numbered files. [default: outputs/synth/TEXT.wav]",
    ),
    out_dir: Path | None = typer.Option(
        None, "--out-dir", help="With --text-file: folder of the numbered files. [default: outputs/synth/<file name>/]",
        file_okay=False,
    ),
    temperature: float | None = typer.Option(None, "--temperature", help="Sampling temperature. [default: 0.85]"),
    top_p: float | None = typer.Option(None, "--top-p", help="Nucleus sampling. [default: 0.85]"),
    top_k: int | None = typer.Option(None, "--top-k", help="Top-k sampling. [default: 50]"),
    repetition_penalty: float | None = typer.Option(None, "--repetition-penalty", help="[default: 2.0]"),
    length_penalty: float | None = typer.Option(None, "--length-penalty", help="[default: 1.0]"),
    speed: float | None = typer.Option(None, "--speed", help="Speaking speed factor. [default: 1.0]"),
    seed: int | None = typer.Option(None, "--seed", help="Seed: the same seed gives the same audio."),
    device: str | None = typer.Option(None, "--device", help="auto, cpu or cuda. [default: auto]"),
    max_audio_tokens: int | None = typer.Option(
        None, "--max-audio-tokens", help="Cap on audio tokens per sentence (~21.5 per second). [default: the model's]"
    ),
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
    from xttsft.synth import read_text_file, synthesize

    if text is None and text_file is None:
        from xttsft.errors import InputError

        raise InputError("No text given.", hint='Pass the text (xttsft synth "Olá") or --text-file FILE.')
    if text is not None and text_file is not None:
        from xttsft.errors import InputError

        raise InputError("Pass either TEXT or --text-file, not both.", hint="Put every line in the file.")
    settings, ws = state(ctx).load(
        synth={
            "language": language, "checkpoint": checkpoint, "temperature": temperature, "top_p": top_p,
            "top_k": top_k, "repetition_penalty": repetition_penalty, "length_penalty": length_penalty,
            "speed": speed, "seed": seed, "device": device, "max_audio_tokens": max_audio_tokens,
        }
    )
    if text_file is not None:
        texts = read_text_file(text_file)
        folder = out_dir or ws.synth_dir / text_file.stem
    else:
        texts = [text or ""]
        folder = None
    with progress_bar("synthesizing", total=len(texts)) as bar:
        result = synthesize(
            settings.synth, ws, texts, model=model, speaker_wavs=speaker_wav, out=out, out_dir=folder,
            default_base=settings.train.base_model, progress=bar,
        )
    table = Table(title=f"synth: {result.model}", title_justify="left")
    table.add_column("file")
    table.add_column("text", overflow="fold", max_width=60)
    table.add_column("audio s", justify="right")
    table.add_column("RTF", justify="right")
    for item in result.items:
        table.add_row(
            escape(str(item.path)), escape(item.text), f"{item.duration:.2f}",
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
