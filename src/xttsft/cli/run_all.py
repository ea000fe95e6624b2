"""``xttsft run-all``: every stage in one go, resumably."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table

from xttsft.cli._command import JSON_OPTION, Setting, command, flags, load_with_provenance
from xttsft.cli._common import console, err_console, handle_errors, print_json, progress_bar
from xttsft.errors import ModelNotFoundError
from xttsft.hardware import current_recommendation

if TYPE_CHECKING:  # pragma: no cover
    from rich.console import Console

    from xttsft.pipeline import PipelineResult, StageOutcome


def register(app: typer.Typer) -> None:
    command(
        app,
        "run-all",
        Setting("transcribe.language", also=("build.language", "synth.language")),
        "screen.speaker_refs",
        "screen.speaker_filter",
        "screen.quality_filter",
        "screen.duplicate_filter",
    )(run_all)


_STATUS_STYLE = {"done": "green", "skipped": "dim", "failed": "bold red", "not run": "dim"}


@handle_errors
def run_all(
    ctx: typer.Context,
    sources: list[str] = typer.Argument(None, help="URLs (anything yt-dlp supports), audio files or folders."),
    from_file: Path | None = typer.Option(
        None, "--from-file", help="A text file of sources, one per line.", dir_okay=False
    ),
    from_stage: str | None = typer.Option(
        None,
        "--from",
        help="First stage to run (doctor, fetch, segment, screen, transcribe, build, train, export, synth, eval).",
    ),
    until_stage: str | None = typer.Option(None, "--until", help="Last stage to run."),
    demo: bool = typer.Option(
        False,
        "--demo",
        help="Offline demo: a generated Brazilian Portuguese voice (--language en: English), a "
        "bundled Whisper, and the tiny XTTS (or the real XTTS-v2 on a CUDA GPU when it is cached or can be "
        "downloaded).",
    ),
    sample_text: str | None = typer.Option(None, "--sample-text", help="Text of the sample synthesis."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Run every stage in one go: doctor, fetch, segment, screen, transcribe, build, train, export, synth, eval.

    Each stage is skipped when its outputs are up to date for its inputs and settings (recorded in
    `.xttsft-state.json` in the workdir), so running the same command again after a crash, a Ctrl-C
    or a settings change redoes only what changed; training resumes from its last checkpoint.
    `--from`/`--until` pick a range of stages. Every stage's settings come from the usual places
    (`xttsft config` shows them): e.g. `TRAIN_NUM_EPOCHS=50 xttsft run-all ...`.

    **Output:** the dataset, checkpoints, an exported XTTS-v2 folder, a sample wav and an eval table,
    with their paths in the summary at the end.

    Examples:

    `xttsft run-all https://www.youtube.com/watch?v=VIDEO_ID --language pt`

    `xttsft run-all ~/recordings/ --language pt --until build`

    `xttsft run-all interview.mp3 --speaker-ref maria.wav --language pt` (keep Maria's voice only)

    `xttsft run-all --demo` (offline, pt-BR, a few minutes on a CPU; this is what `make demo` runs)

    `xttsft run-all --demo --language en` (the English demo, with the smaller tiny.en Whisper)
    """
    from xttsft.data.fetch import read_source_list
    from xttsft.pipeline import PipelineStopped, stage_range
    from xttsft.pipeline import run_all as run_pipeline

    stages = stage_range(from_stage, until_stage)
    items = list(sources or [])
    if from_file is not None:
        items += read_source_list(from_file)
    given = flags(ctx).get("synth", {})
    if str(given.get("language", "")).lower() == "auto":  # detect it (transcribe, build); synth follows the run
        del given["language"]
    settings, provenance, ws = load_with_provenance(ctx)
    if demo:
        items, settings = _prepare_demo(settings, provenance, ws, items, stages)
    if settings.train.base_model == "tiny":
        _tiny_panel(demo)
    try:
        result = run_pipeline(
            settings,
            ws,
            items,
            stages=stages,
            demo=demo,
            sample_text=sample_text,
            stage_progress=_stage_bar,
            on_stage=functools.partial(_on_stage, err_console if as_json else console),
        )
    except PipelineStopped as stopped:
        _report(settings, ws, stopped.result, as_json)
        raise
    _report(settings, ws, result, as_json)


def _tiny_panel(demo: bool) -> None:
    err_console.print(
        Panel(
            "Training the [bold]tiny random XTTS[/] smoke model: every stage runs for real, but the voice it "
            "makes is noise.\nFor a real voice, run on a CUDA GPU with the XTTS-v2 base "
            "(the default `TRAIN_BASE_MODEL=coqui/XTTS-v2`).",
            title="demo" if demo else "tiny model",
            border_style="yellow",
        )
    )


@contextlib.contextmanager
def _stage_bar(name: str) -> Iterator[Any]:
    with progress_bar(name, total=None, transient=True) as bar:
        yield bar


def _on_stage(out: Console, outcome: StageOutcome) -> None:
    """One line per stage as it ends (on stderr with --json: stdout holds the JSON alone)."""
    style = _STATUS_STYLE.get(outcome.status, "")
    out.print(
        f"[{style}]{outcome.name:>10} {outcome.status}[/] [dim]{outcome.seconds:5.1f} s[/] {escape(outcome.detail)}"
    )


def _report(settings: Any, ws: Any, result: PipelineResult, as_json: bool) -> None:
    """The end of a run: the summary table, or with --json this run's result and the summary, read from
    the workspace."""
    if as_json:
        from xttsft.pipeline import summarize

        print_json({"pipeline": result, "summary": summarize(settings, ws)})
    else:
        _summary(settings, ws, result.stages)


def _prepare_demo(
    settings: Any, provenance: Any, ws: Any, items: list[str], stages: list[str]
) -> tuple[list[str], Any]:
    from xttsft.bundled_whisper import bundled_model_path
    from xttsft.demo import DEMO_WHISPER, demo_language, make_demo_corpus
    from xttsft.pipeline import demo_settings

    lang = demo_language(settings.transcribe.language)  # pt unless --language en
    whisper = DEMO_WHISPER[lang]
    bundled_model_path(whisper)  # installed? (a clear message now, not after the demo voice is made)
    base = "tiny"
    if provenance["train"]["base_model"].kind != "default":
        base = settings.train.base_model
    else:
        if current_recommendation().device == "cuda":
            from xttsft.model import HF_REPO_ID, resolve_base_model

            try:
                resolve_base_model(HF_REPO_ID)
                base = HF_REPO_ID
            except ModelNotFoundError as exc:
                err_console.print(
                    f"[yellow]XTTS-v2 is not available ({escape(exc.message)}); the demo uses the tiny model.[/]"
                )
    if not items and "fetch" in stages:
        with progress_bar("demo voice", total=None, transient=True) as bar:
            corpus = make_demo_corpus(ws.root / "demo-sources", progress=bar, language=lang)
        items = [str(p) for p in corpus]
    return items, demo_settings(settings, provenance, whisper_model=whisper, base_model=base, language=lang)


def _mixed(sc: Any) -> str:
    """The recut clips and the target's seconds lost to mixing, and where (the longest three)."""
    where = "; ".join(f"{x.source} {x.start:.1f}-{x.end:.1f} s" for x in sc.lost[:3])
    more = f" and {len(sc.lost) - 3} more (screen/stats.json)" if len(sc.lost) > 3 else ""
    text = f"{sc.recut} clip(s) recut to the target's part; {sc.lost_seconds:.1f} s of the target lost"
    return escape(text + (f": {where}{more}" if where else ""))


def _summary(settings: Any, ws: Any, outcomes: list[Any]) -> None:
    from xttsft.pipeline import STAGES, summarize

    s = summarize(settings, ws)
    done = {o.name: o for o in outcomes}
    table = Table(title="[bold]run-all[/]", title_justify="left", show_header=False)
    table.add_column("", style="bold", no_wrap=True)
    table.add_column("", overflow="fold")  # paths must stay whole, to copy them
    src = s.sources
    table.add_row(
        "sources", f"{src.files} file(s), {src.failed} failed; {src.clips} clips, {src.clip_minutes:.1f} min of speech"
    )
    ds, sc = s.dataset, s.screen
    if ds.samples:
        table.add_row(
            "dataset",
            f"{ds.samples.train} train / {ds.samples.val} val, "
            f"{ds.minutes or 0:.1f} min kept ({ds.language}): {escape(ds.dir)}",
        )
    if sc and sc.speakers:
        who = ", ".join(
            f"{sp.label}{' (target)' if sp.target else ''} {sp.minutes:.1f} min, {sp.kept}/{sp.clips} kept"
            for sp in sc.speakers
        )
        table.add_row("speakers", who)
    dropped = [f"{m:.1f} min {r}" for r, m in (sc.dropped_minutes if sc else {}).items() if m]
    dropped += [f"{m:.1f} min {r}" for r, m in ds.rejected_minutes_by_transcribe.items()]
    screen_reasons = set(sc.dropped_minutes) if sc else set()
    dropped += [f"{n} {r}" for r, n in ds.dropped_by_build.items() if n and r not in screen_reasons]
    if dropped:
        table.add_row("dropped", ", ".join(dropped))
    if sc and (sc.lost or sc.recut):
        table.add_row("mixed voices", _mixed(sc))
    if tr := s.train:
        secs = f", trained in {tr.seconds / 60:.1f} min" if tr.seconds else ""
        best = (
            f"best val loss {tr.best_val_loss:.4f} (epoch {tr.best_epoch})"
            if tr.best_val_loss is not None
            else "no best model yet"
        )
        table.add_row("training", escape(f"run {tr.run}: {best}{secs}"))
        table.add_row("checkpoints", escape(tr.run_dir))
        table.add_row("TensorBoard", escape(f"tensorboard --logdir {tr.tensorboard}"))
        if tr.loss_curve:
            table.add_row("loss curve", escape(tr.loss_curve))
    if s.export:
        table.add_row("export", escape(s.export))
    if s.sample:
        table.add_row("sample audio", escape(s.sample))
    if s.eval and s.eval.summary:
        parts = []
        for system, fig in s.eval.summary.items():  # eval.json's figures, by name
            figs = ", ".join(
                f"{k} {v:.3f}"
                for k in ("cer", "similarity", "similarity_ge2e", "rtf")
                if isinstance(v := fig.get(k), (int, float))
            )
            parts.append(f"{system}: {figs}")
        table.add_row("eval", escape("\n".join(parts + [s.eval.json])))
    if ds.histogram:
        table.add_row("durations", escape(ds.histogram))
    if sc and sc.map:
        table.add_row("speaker map", escape(sc.map))
    if sc and sc.dnsmos:
        table.add_row("DNSMOS", escape(sc.dnsmos))
    table.add_row("logs", escape(str(ws.info_log)))
    stages = " ".join(
        f"[{_STATUS_STYLE.get(done[n].status, '')}]{n}[/]" if n in done else f"[dim]{n}[/]" for n in STAGES
    )
    table.add_row("stages", stages)
    console.print(table)
