"""``xttsft eval``: CER, speaker similarity, duration and RTF, base vs fine-tuned."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.markup import escape
from rich.table import Table

from xttsft.cli._command import JSON_OPTION, Setting, command, load
from xttsft.cli._common import console, handle_errors, print_json, progress_bar

if TYPE_CHECKING:  # pragma: no cover
    from xttsft.voice.evaluate import EvalResult


def register(app: typer.Typer) -> None:
    command(
        app,
        "eval",
        "synth.language",
        "synth.checkpoint",
        "synth.seed",
        "synth.device",
        "synth.max_audio_tokens",
        Setting("transcribe.model", flag="--whisper-model"),
    )(eval_)


def _f(v: float, fmt: str = ".3f") -> str:
    return "-" if v != v else format(v, fmt)


@handle_errors
def eval_(
    ctx: typer.Context,
    run: str | None = typer.Option(None, "--run", "-r", help="Run name or folder. Default: the most recent run."),
    sentences: Path | None = typer.Option(
        None,
        "--sentences",
        dir_okay=False,
        help="UTF-8 file, one sentence per line. Default: a built-in list (pt, en, es).",
    ),
    base: bool = typer.Option(True, "--base/--no-base", help="Also measure the base model, for comparison."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Measure the fine-tuned voice against its base model.

    Both speak the same sentences with the same reference clips (dataset train split) and
    seeds. For every audio: **CER** (faster-whisper transcript vs the sentence, punctuation and
    case ignored), **speaker similarity** (cosine of the 512-d embeddings of XTTS' HiFi-GAN
    decoder speaker encoder, vs held-out real clips of the val split; 1.0 = same), duration
    and **RTF** (synthesis time / audio time). Sentence i (from 1) is spoken with seed `--seed` + i
    (0 + i when unset). Lower CER and higher similarity are better. A second,
    independent similarity comes from the GE2E encoder (neither XTTS's nor the screen's), and DNSMOS
    P.835 scores the synthesized audio's quality (1-5).

    **Output:** `outputs/eval/<run>/eval.json` and `outputs/eval/<run>/{finetuned,base}/sNN.wav`.

    Example: `xttsft eval --language pt --whisper-model large-v3`
    """
    from xttsft.voice.evaluate import evaluate

    settings, ws = load(ctx)
    with progress_bar("evaluating") as bar:
        result = evaluate(
            ws,
            settings.synth,
            settings.transcribe,
            run=run,
            sentences_file=sentences,
            include_base=base,
            progress=bar,
        )
    if as_json:
        print_json(result)
        return
    _print_rows(result)
    _summary(result)


def _summary(result: EvalResult) -> None:
    summary = Table(title="summary (CER lower is better, similarity higher is better)", title_justify="left")
    for col in ("measure", *result.summary):
        summary.add_column(col, justify="right")
    for key, label in (
        ("cer", "CER"),
        ("similarity", "speaker similarity (XTTS encoder)"),
        ("similarity_ge2e", "speaker similarity (GE2E, independent)"),
        ("dnsmos_ovrl", "DNSMOS OVRL"),
        ("duration", "audio s"),
        ("length_ratio", "length / expected at the voice's pace"),
        ("short_length_ratio", "the same, short prompts (babble shows here)"),
        ("rtf", "RTF"),
    ):
        summary.add_row(label, *(_f(result.summary[s][key]) for s in result.summary))
    console.print(summary)
    console.print(
        f"held-out clips: {len(result.heldout)} (similarity among themselves: XTTS {_f(result.heldout_self_similarity)}, "
        f"GE2E {_f(result.heldout_self_similarity_ge2e)}) · "
        f"Whisper: {result.whisper_model}"
    )
    console.print(f"results: {escape(str(result.json_path))}")
    for note in result.notes:
        console.print(f"[bold yellow]Note:[/] {note}")


def _print_rows(result: Any) -> None:
    """One row per sentence. Where the terminal is narrow (under 120 columns) the text and what Whisper
    heard go on their own lines under the table: ten columns in 80 wrapped one word per line."""
    wide = console.width >= 120
    rows = Table(title=f"eval of run {escape(result.run)} ({result.language})", title_justify="left")
    numeric = ("CER", "sim XTTS", "sim GE2E", "DNSMOS", "audio s (x exp.)", "RTF")
    for col in ("system", "#", *(("text", "transcript") if wide else ()), *numeric):
        texts = col in {"text", "transcript"}
        rows.add_column(
            col, overflow="fold", no_wrap=not texts, justify="left" if texts or col == "system" else "right"
        )
    heard = lambda r: escape(r.transcript) if r.transcript else "[dim](nothing)[/]"  # noqa: E731
    for r in result.rows:
        words = (escape(r.text), heard(r)) if wide else ()
        rows.add_row(
            r.system,
            str(r.index),
            *words,
            _f(r.cer),
            _f(r.similarity),
            _f(r.similarity_ge2e),
            _f(r.dnsmos_ovrl, ".2f"),
            f"{_f(r.duration, '.2f')} (x{_f(r.length_ratio, '.1f')})",
            _f(r.rtf, ".2f"),
        )
    console.print(rows)
    if not wide:
        for r in result.rows:
            console.print(f"{r.system} #{r.index}: {escape(r.text)}\n    heard: {heard(r)}")
