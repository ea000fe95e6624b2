"""``run-all``: every stage in order, resumably.

This module only calls the stage modules in order; it holds no stage logic.
Each stage is skipped when its outputs are up to date for its inputs and
settings. A small record per stage in ``ws.state_file`` holds a fingerprint
(a hash of the stage's settings and of its input files); when the fingerprint
and the outputs are still there, the stage is skipped. Stages also skip their
own finished work (a crash half-way through ``segment`` redoes only the
unfinished sources), so a re-run after Ctrl-C, a crash or a settings change
redoes only what changed. ``train`` resumes its run from the latest complete
checkpoint.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import hashlib
import json
import logging
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from xttsft.data.build import build_dataset, find_vocab
from xttsft.data.fetch import fetch
from xttsft.data.review import overrides
from xttsft.data.screen import screen_clips
from xttsft.data.segment import segment_sources
from xttsft.data.transcribe import transcribe_segments
from xttsft.doctor import diagnose
from xttsft.errors import InputError, XttsftError
from xttsft.io import atomic_write_json, sha256_file
from xttsft.paths import RunPaths, Workspace
from xttsft.progress import Progress, no_progress
from xttsft.records import (
    CheckpointMeta,
    ClipRecord,
    LostSpan,
    RecordError,
    RunRecord,
    SampleCounts,
    ScreenStats,
    SourceRecord,
    SpeakerRow,
    StageRecord,
    TranscriptRecord,
    read_dataset_stats,
    read_record,
    read_records,
)
from xttsft.settings import Settings
from xttsft.training.train import train
from xttsft.voice.evaluate import evaluate
from xttsft.voice.export import export_run
from xttsft.voice.synth import synthesize

__all__ = [
    "STAGES",
    "StageOutcome",
    "PipelineResult",
    "PipelineStopped",
    "demo_settings",
    "stage_range",
    "run_all",
    "RunSummary",
    "summarize",
    "free_accelerator_memory",
]

log = logging.getLogger(__name__)

STAGES = ("doctor", "fetch", "segment", "screen", "transcribe", "build", "train", "export", "synth", "eval")
Stage = Literal["doctor", "fetch", "segment", "screen", "transcribe", "build", "train", "export", "synth", "eval"]

SAMPLE_TEXT = {
    "pt": "Olá! Esta é a minha voz, treinada com o xttsft. Espero que soe natural.",
    "en": "Hello! This is my voice, fine-tuned with xttsft. I hope it sounds natural.",
}

StageProgress = Callable[[str], AbstractContextManager[Progress]]


@dataclass
class StageOutcome:
    """What one stage did in this run."""

    name: str
    status: Literal["done", "skipped", "failed", "not run"]
    seconds: float = 0.0
    detail: str = ""
    result: Any = None  # the stage's own result dataclass, when it ran


@dataclass
class PipelineResult:
    stages: list[StageOutcome] = field(default_factory=list)
    demo: bool = False
    tiny: bool = False

    def outcome(self, name: str) -> StageOutcome | None:
        return next((s for s in self.stages if s.name == name), None)

    @property
    def ok(self) -> bool:
        return all(s.status != "failed" for s in self.stages)


class PipelineStopped(XttsftError):
    """A stage failed; earlier stages' outputs are kept and a re-run resumes."""

    def __init__(self, stage: str, cause: XttsftError, result: PipelineResult) -> None:
        super().__init__(f"run-all stopped at {stage}: {cause.message}", cause.hint)
        self.stage = stage
        self.result = result


# ---------------------------------------------------------------- stage records
def _hash(*parts: Any) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(json.dumps(p, sort_keys=True, default=str).encode())
        h.update(b"\0")
    return h.hexdigest()[:16]


def _file_fingerprint(path: Path) -> str:
    """Content hash of a (small) file, or of a folder's listing; '' when missing."""
    if path.is_file():
        return sha256_file(path)[:16]
    if path.is_dir():
        rows = sorted(
            (str(p.relative_to(path)), p.stat().st_size, p.stat().st_mtime_ns)
            for p in path.rglob("*")
            if p.is_file() and not p.name.startswith(".")
        )
        return _hash(rows)
    return ""


class _Records:
    """``ws.state_file``: a :class:`StageRecord` per stage (its fingerprint, when it finished, ...)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            raw = json.loads(path.read_text()) if path.is_file() else {}
            self.data = {k: StageRecord.from_dict(v, f"{path}: {k}") for k, v in raw.items()}
        except (OSError, ValueError, AttributeError, RecordError) as exc:
            log.warning(
                "Ignoring an unreadable stage record %s (%s); every stage is checked again.",
                path,
                getattr(exc, "message", exc),
            )
            self.data = {}

    def fresh(self, stage: str, fingerprint: str) -> bool:
        return self.of(stage).fingerprint == fingerprint

    def of(self, stage: str) -> StageRecord:
        return self.data.get(stage) or StageRecord()

    def save(self, stage: str, fingerprint: str, **extra: Any) -> None:
        """The stage finished on these inputs; ``extra``: other :class:`StageRecord` fields (run, out, ...)."""
        self.data[stage] = StageRecord(fingerprint=fingerprint, finished=time.strftime("%Y-%m-%dT%H:%M:%S"), **extra)
        self._write()

    def note(self, stage: str, **extra: Any) -> None:
        """Remember something about a stage before it finishes (e.g. the run name)."""
        self.data[stage] = dataclasses.replace(self.of(stage), **extra)
        self._write()

    def _write(self) -> None:
        atomic_write_json(self.path, {k: r.to_dict() for k, r in self.data.items()})


@dataclass
class _Context:
    """What one stage hands to the next within a run-all."""

    run: str | None = None  # the training run train made or found up to date


# ---------------------------------------------------------------- settings
def demo_settings(
    settings: Settings, provenance: dict[str, dict[str, Any]], whisper_model: str, base_model: str, language: str = "en"
) -> Settings:
    """The demo's choices, for every setting the user left at its default.

    espeak-ng speech in ``language`` (pt or en), a bundled Whisper, 2-8 s clips from the
    short demo recordings, and a short training run.
    """
    tiny = base_model == "tiny"
    wanted: dict[str, dict[str, Any]] = {
        "segment": {"min_duration": 2.0, "max_duration": 8.0},
        # espeak-ng's robotic pt-br is hard for Whisper base: beam 5 recovers about half of its words
        # (greedy, a third), at an average log-probability of -1.36..-0.5 (median -0.87), below the
        # -1.0 a human voice gets; the demo keeps such clips. English with tiny.en is fine greedy.
        "transcribe": {
            "model": whisper_model,
            "language": language,
            **({"beam_size": 1} if language == "en" else {"beam_size": 5, "min_avg_logprob": -1.5}),
        },
        "build": {"min_samples": 10, "language": language},
        "train": {
            "base_model": base_model,
            "num_epochs": 4 if tiny else 20,
            "save_every_n_epochs": 2 if tiny else 5,
            "print_step": 5,
            "warmup_steps": 2,
            "batch_size": 2 if tiny else "auto",
            "grad_accum_steps": 1 if tiny else "auto",
        },
        "synth": {"language": language, **({"max_audio_tokens": 40} if tiny else {})},
    }
    updated: dict[str, Any] = {}
    for section, values in wanted.items():
        current = getattr(settings, section)
        changes = {k: v for k, v in values.items() if provenance[section][k].kind == "default"}
        if changes:
            data = current.model_dump()
            data.update(changes)
            updated[section] = type(current)(**data)
    return settings.model_copy(update=updated)


def stage_range(from_stage: str | None, until_stage: str | None) -> list[str]:
    """The stages between ``from_stage`` and ``until_stage`` (inclusive), in order."""
    for name in (from_stage, until_stage):
        if name is not None and name not in STAGES:
            raise InputError(f"Unknown stage {name!r}.", hint=f"Stages, in order: {', '.join(STAGES)}.")
    lo = STAGES.index(from_stage) if from_stage else 0
    hi = STAGES.index(until_stage) if until_stage else len(STAGES) - 1
    if lo > hi:
        raise InputError(
            f"--from {from_stage} comes after --until {until_stage}.",
            hint=f"Stages, in order: {', '.join(STAGES)}.",
        )
    return list(STAGES[lo : hi + 1])


def free_accelerator_memory() -> None:
    """Release cached GPU memory between stages (after Whisper, before XTTS)."""
    gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()


@contextlib.contextmanager
def _no_bar(description: str) -> Iterator[Progress]:
    yield no_progress


# ---------------------------------------------------------------- the pipeline
def run_all(
    settings: Settings,
    ws: Workspace,
    sources: Sequence[str] = (),
    *,
    stages: Sequence[str] = STAGES,
    demo: bool = False,
    sample_text: str | None = None,
    stage_progress: StageProgress = _no_bar,
    on_stage: Callable[[StageOutcome], None] | None = None,
) -> PipelineResult:
    """Run ``stages`` in order; skip what is up to date; stop at the first failure.

    ``sources`` go to ``fetch`` (URLs, files, folders); with none, ``fetch`` is
    skipped when the raw folder already has audio. ``stage_progress(name)`` gives
    a progress callable per stage (the CLI draws rich bars); ``on_stage`` hears
    about every finished stage. Raises :class:`PipelineStopped` on a stage's
    error, with the outcomes so far.
    """
    ws.ensure()
    records = _Records(ws.state_file)
    result = PipelineResult(demo=demo, tiny=settings.train.base_model == "tiny")
    ctx = _Context()

    runners: dict[str, Callable[[Progress], StageOutcome]] = {
        "doctor": lambda p: _doctor(settings, ws),
        "fetch": lambda p: _fetch(settings, ws, sources, records, p),
        "segment": lambda p: _segment(settings, ws, records, p),
        "screen": lambda p: _screen(settings, ws, records, p),
        "transcribe": lambda p: _transcribe(settings, ws, records, p),
        "build": lambda p: _build(settings, ws, records, p),
        "train": lambda p: _train(settings, ws, records, ctx, p),
        "export": lambda p: _export(settings, ws, records, ctx, p),
        "synth": lambda p: _synth(settings, ws, records, ctx, sample_text, p),
        "eval": lambda p: _eval(settings, ws, records, ctx, p),
    }
    for name in STAGES:
        if name not in stages:
            continue
        t0 = time.perf_counter()
        try:
            with stage_progress(name) as bar:
                outcome = runners[name](bar)
        except XttsftError as exc:
            outcome = StageOutcome(name, "failed", time.perf_counter() - t0, exc.message)
            result.stages.append(outcome)
            if on_stage:
                on_stage(outcome)
            raise PipelineStopped(name, exc, result) from exc
        outcome.seconds = time.perf_counter() - t0
        result.stages.append(outcome)
        log.info(
            "run-all: %s %s in %.1f s%s",
            name,
            outcome.status,
            outcome.seconds,
            f" ({outcome.detail})" if outcome.detail else "",
            extra={"console": on_stage is None},
        )
        if on_stage:
            on_stage(outcome)
        if name == "transcribe":
            free_accelerator_memory()
    return result


# ---------------------------------------------------------------- stages
def _doctor(settings: Settings, ws: Workspace) -> StageOutcome:

    report = diagnose(ws, use_lora=settings.train.use_lora)
    failed = [c for c in report.checks if c.status == "fail"]
    if failed:
        lines = "; ".join(f"{c.name}: {c.detail}" for c in failed)
        fixes = "; ".join(c.fix for c in failed if c.fix)
        raise XttsftError(f"doctor found a blocking problem: {lines}", hint=fixes or "Run `xttsft doctor`.")
    rec = report.recommendation
    return StageOutcome("doctor", "done", detail=f"{rec.device}, batch {rec.train_batch_size}", result=report)


def _fetch(settings: Settings, ws: Workspace, sources: Sequence[str], records: _Records, p: Progress) -> StageOutcome:

    fp = _hash(sorted(sources), settings.fetch.model_dump(mode="json"))
    has_audio = ws.raw_dir.is_dir() and any(f.is_file() and not f.name.startswith(".") for f in ws.raw_dir.iterdir())
    if not sources:
        if has_audio:
            return StageOutcome("fetch", "skipped", detail="no new sources; using the audio in train/data/raw")
        raise InputError(
            "No sources and no audio in train/data/raw.",
            hint="Pass URLs, files or folders: `xttsft run-all URL_OR_FILE ...`, or try `xttsft run-all --demo`.",
        )
    if records.fresh("fetch", fp) and has_audio:
        return StageOutcome("fetch", "skipped", detail="sources already fetched")
    res = fetch(list(sources), settings.fetch, ws, progress=p)
    if not res.ok:
        reasons = "; ".join(f"{i.source}: {i.reason}" for i in res.items if i.status in ("failed", "skipped"))
        raise InputError(f"Nothing could be fetched ({reasons}).", hint="Check the URLs or paths; see logs/info.log.")
    if res.count("failed") == 0:  # a failed source (network, 404) is tried again next time
        records.save("fetch", fp)
    for item in res.items:
        if item.status == "failed":
            log.warning("%s: %s", item.source, item.reason)
    detail = f"{res.count('fetched')} fetched, {res.count('present')} present, {res.count('failed')} failed"
    return StageOutcome("fetch", "done", detail=detail, result=res)


def _segment(settings: Settings, ws: Workspace, records: _Records, p: Progress) -> StageOutcome:

    fp = _hash(_file_fingerprint(ws.raw_dir), settings.segment.model_dump(mode="json"))
    if records.fresh("segment", fp) and ws.segments_manifest.is_file():
        return StageOutcome("segment", "skipped", detail="up to date")
    res = segment_sources(settings.segment, ws, progress=p)
    if res.total_segments == 0:
        reasons = "; ".join(f"{s.source}: {s.reason}" for s in res.failed) or "no speech found"
        raise InputError(
            f"No clips were cut ({reasons}).", hint="Check the audio files; `xttsft segment` shows per-file reasons."
        )
    if not res.failed:  # a failed source is retried next time
        records.save("segment", fp)
    detail = f"{res.total_segments} clips, {res.total_seconds / 60:.1f} min, {res.short_summary}"
    if res.failed:
        detail += f"; {len(res.failed)} file(s) failed"
    return StageOutcome("segment", "done", detail=detail, result=res)


def _screen(settings: Settings, ws: Workspace, records: _Records, p: Progress) -> StageOutcome:

    refs = [_file_fingerprint(Path(r).expanduser()) for r in settings.screen.speaker_refs]
    # segment's clips without the recut rows screen itself adds, else each recut would re-run screen once more
    clips = (
        [r.to_dict() for r in read_records(ws.segments_manifest, ClipRecord) if "recut" not in r.flags]
        if ws.segments_manifest.is_file()
        else None
    )
    fp = _hash(clips, settings.screen.model_dump(mode="json"), refs, settings.segment.min_duration)
    if records.fresh("screen", fp) and ws.screen_file.is_file():
        return StageOutcome("screen", "skipped", detail="up to date")
    res = screen_clips(settings.screen, ws, progress=p, min_duration=settings.segment.min_duration)
    records.save("screen", fp)
    dropped = ", ".join(f"{n} {r}" for r, n in res.dropped.most_common())
    target = next((s for s in res.speakers if s.target), None)
    who = f"{len(res.speakers)} speaker(s), target {target.label}; " if target else ""
    return StageOutcome(
        "screen",
        "done",
        result=res,
        detail=f"{who}{res.kept} of {res.total} clips kept" + (f" ({dropped} dropped)" if dropped else ""),
    )


def _transcribe(settings: Settings, ws: Workspace, records: _Records, p: Progress) -> StageOutcome:

    fp = _hash(
        _file_fingerprint(ws.segments_manifest),
        _file_fingerprint(ws.screen_file),
        settings.transcribe.model_dump(mode="json"),
        settings.segment.pad,
    )
    if records.fresh("transcribe", fp) and ws.transcripts_file.is_file():
        return StageOutcome("transcribe", "skipped", detail="up to date")
    res = transcribe_segments(settings.transcribe, ws, pad=settings.segment.pad, progress=p)
    if res.kept == 0:
        raise XttsftError(
            f"Every clip was rejected ({dict(res.rejected)}).",
            hint="Check the language (--language) and the audio; `xttsft transcribe` shows the reasons.",
        )
    records.save("transcribe", fp)
    rejected = sum(res.rejected.values())
    return StageOutcome("transcribe", "done", detail=f"{res.kept} kept, {rejected} rejected", result=res)


def _build(settings: Settings, ws: Workspace, records: _Records, p: Progress) -> StageOutcome:

    fp = _hash(
        _file_fingerprint(ws.transcripts_file),
        _file_fingerprint(ws.segments_manifest),
        _file_fingerprint(ws.screen_file),
        _file_fingerprint(ws.review_file),  # an edit in `xttsft review` builds again
        settings.build.model_dump(mode="json"),
        settings.segment.max_duration,
        settings.train.base_model,
    )
    if records.fresh("build", fp) and (ws.dataset_dir / "metadata_train.csv").is_file():
        return StageOutcome("build", "skipped", detail="up to date")
    res = build_dataset(
        settings.build,
        ws,
        max_audio_seconds=settings.segment.max_duration,
        vocab_file=find_vocab(settings.train.base_model),
        progress=p,
    )
    records.save("build", fp)

    changed = overrides(ws).changed
    reviewed = f"; the review changed {changed} clip(s)" if changed else ""
    return StageOutcome(
        "build", "done", detail=f"{res.train} train / {res.val} val, {res.minutes:.1f} min{reviewed}", result=res
    )


def _dataset_dir(settings: Settings, ws: Workspace) -> Path:
    return Path(settings.train.dataset_dir) if settings.train.dataset_dir else ws.dataset_dir


def _best_meta(run_dir: Path) -> Path:
    return RunPaths.meta(RunPaths(run_dir).best_model)


def _train(settings: Settings, ws: Workspace, records: _Records, ctx: _Context, p: Progress) -> StageOutcome:

    ds = _dataset_dir(settings, ws)
    train_cfg = settings.train.model_dump(mode="json", exclude={"run_name"})
    fp = _hash(
        _file_fingerprint(ds / "metadata_train.csv"),
        _file_fingerprint(ds / "metadata_val.csv"),
        _file_fingerprint(ds / "stats.json"),
        train_cfg,
    )
    rec = records.of("train")
    run = settings.train.run_name or (rec.run if fp in (rec.pending, rec.fingerprint) else None)
    if records.fresh("train", fp) and run and _best_meta(ws.run_dir(run)).is_file():
        ctx.run = run
        return StageOutcome("train", "skipped", detail=f"run {run} is up to date")
    # A run that started with these inputs and settings and did not finish is resumed.
    resume = bool(run and ws.run_dir(run).is_dir() and rec.pending == fp)
    if run is None:
        run = time.strftime("run-%Y%m%d-%H%M%S")
    records.note("train", run=run, pending=fp)
    train_settings = settings.model_copy(update={"train": settings.train.model_copy(update={"run_name": run})})
    res = train(train_settings, ws, resume=resume, progress=p)
    if res.status not in ("finished", "already finished", "stopped early"):
        raise XttsftError(
            f"Training stopped ({res.status}) after epoch {res.epochs_completed}.",
            hint="Run the same command again to resume from the last checkpoint.",
        )
    ctx.run = res.run_name
    records.save("train", fp, run=res.run_name, seconds=round(res.seconds, 1))
    best = f", best val loss {res.best_val_loss:.4f}" if res.best_val_loss is not None else ""
    verb = "resumed and finished" if resume else "finished"
    return StageOutcome("train", "done", detail=f"run {res.run_name} {verb}{best}", result=res)


def _run_for(ws: Workspace, records: _Records, ctx: _Context) -> str:
    run = ctx.run or records.of("train").run or ws.latest_run()
    if not run:
        raise InputError("No training run found.", hint="Run the train stage first (`--from train`).")
    return run


def _run_language(ws: Workspace, run: str) -> str:
    try:
        return read_record(ws.run(run).run_json, RunRecord).language
    except RecordError:
        return "pt"  # SynthSettings' documented default without a run


def _export(settings: Settings, ws: Workspace, records: _Records, ctx: _Context, p: Progress) -> StageOutcome:

    run = _run_for(ws, records, ctx)
    fp = _hash(run, _file_fingerprint(_best_meta(ws.run_dir(run))))
    out = ws.export_dir(run)
    if records.fresh("export", fp) and out.is_dir():
        return StageOutcome("export", "skipped", detail=f"{out} is up to date")
    res = export_run(ws, run=run, checkpoint="best", force=True, progress=p)
    records.save("export", fp, out=str(res.out_dir))
    return StageOutcome("export", "done", detail=str(res.out_dir), result=res)


def _synth(
    settings: Settings, ws: Workspace, records: _Records, ctx: _Context, text: str | None, p: Progress
) -> StageOutcome:

    run = _run_for(ws, records, ctx)
    language = settings.synth.language or _run_language(ws, run)
    text = text or SAMPLE_TEXT.get(language.split("-")[0], SAMPLE_TEXT["en"])
    out = ws.outputs_dir / "run-all" / f"sample-{run}.wav"
    fp = _hash(run, _file_fingerprint(_best_meta(ws.run_dir(run))), settings.synth.model_dump(mode="json"), text)
    if records.fresh("synth", fp) and out.is_file():
        return StageOutcome("synth", "skipped", detail=f"{out} is up to date")
    res = synthesize(settings.synth, ws, [text], model=run, out=out, progress=p)
    records.save("synth", fp, out=str(out))
    return StageOutcome("synth", "done", detail=str(out), result=res)


def _eval(settings: Settings, ws: Workspace, records: _Records, ctx: _Context, p: Progress) -> StageOutcome:

    run = _run_for(ws, records, ctx)
    fp = _hash(
        run,
        _file_fingerprint(_best_meta(ws.run_dir(run))),
        settings.synth.model_dump(mode="json"),
        settings.transcribe.model,
    )
    prev = records.of("eval").json
    if records.fresh("eval", fp) and prev and Path(prev).is_file():
        return StageOutcome("eval", "skipped", detail=f"{prev} is up to date")
    res = evaluate(ws, settings.synth, settings.transcribe, run=run, progress=p)
    records.save("eval", fp, json=str(res.json_path))
    return StageOutcome("eval", "done", detail=str(res.json_path), result=res)


# ---------------------------------------------------------------- summary
@dataclass
class SourcesSummary:
    files: int
    failed: int
    clip_minutes: float
    clips: int


@dataclass
class ScreenFindings:
    speakers: list[SpeakerRow]
    dropped_minutes: dict[str, float]
    map: str | None  # speakers.png
    dnsmos: str | None  # dnsmos.png
    recut: int = 0  # mixed clips split at the change of voice, the target's part kept
    lost_seconds: float = 0.0  # the target's speech lost to mixing (too short to keep alone)
    lost: list[LostSpan] = field(default_factory=list)  # where: source and time, longest first


@dataclass
class DatasetSummary:
    dir: str
    language: str | None
    samples: SampleCounts | None
    minutes: float | None
    dropped_by_build: dict[str, int]
    rejected_minutes_by_transcribe: dict[str, float]
    histogram: str | None  # durations.png


@dataclass
class TrainSummary:
    run: str
    run_dir: str
    best_val_loss: float | None
    best_epoch: int | None
    seconds: float | None
    tensorboard: str
    loss_curve: str | None


@dataclass
class EvalSummary:
    json: str
    summary: dict[str, dict[str, Any]]  # eval.json's figures per system (cer, similarity, rtf, ...)


@dataclass
class RunSummary:
    """The figures of run-all's end-of-run table, read from the workspace's files (see :func:`summarize`)."""

    sources: SourcesSummary
    screen: ScreenFindings | None
    dataset: DatasetSummary
    train: TrainSummary | None = None
    export: str | None = None
    sample: str | None = None  # the sample synthesis
    eval: EvalSummary | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def summarize(settings: Settings, ws: Workspace) -> RunSummary:
    """The figures of the end-of-run table, read from the workspace's files.

    Read from disk rather than from this run's results, so a re-run whose stages
    were all skipped shows the same summary.
    """
    sources = read_records(ws.segment_sources_file, SourceRecord)
    every = read_records(ws.segments_manifest, ClipRecord)
    manifest = [r for r in every if "recut" not in r.flags]  # segment's clips; screen's recut rows re-use audio
    summary = RunSummary(
        sources=SourcesSummary(
            files=len(sources),
            failed=sum(1 for s in sources if s.status == "failed"),
            clip_minutes=round(sum(r.duration for r in manifest) / 60, 2),
            clips=len(manifest),
        ),
        screen=_screen_findings(ws),
        dataset=_dataset_summary(settings, ws, {r.id: r.duration for r in every}),
    )
    stages = _Records(ws.state_file)
    run = stages.of("train").run or ws.latest_run()
    if run:
        summary.train = _train_summary(ws, run, stages.of("train").seconds)
        export = ws.export_dir(run)
        summary.export = str(export) if export.is_dir() else None
        sample = ws.outputs_dir / "run-all" / f"sample-{run}.wav"
        summary.sample = str(sample) if sample.is_file() else None
        ev = stages.of("eval").json
        summary.eval = EvalSummary(json=ev, summary=_eval_figures(Path(ev))) if ev else None
    return summary


def _file(path: Path) -> str | None:
    return str(path) if path.is_file() else None


def _screen_findings(ws: Workspace) -> ScreenFindings | None:
    try:
        screen = read_record(ws.screen_stats, ScreenStats)
    except RecordError:
        return None
    return ScreenFindings(
        speakers=screen.speakers,
        dropped_minutes=screen.dropped_minutes,
        map=_file(ws.screen_dir / "speakers.png"),
        dnsmos=_file(ws.screen_dir / "dnsmos.png"),
        recut=screen.recut,
        lost_seconds=screen.lost_seconds,
        lost=screen.lost,
    )


def _dataset_summary(settings: Settings, ws: Workspace, durations: dict[str, float]) -> DatasetSummary:
    rejected: dict[str, float] = {}
    for t in read_records(ws.transcripts_file, TranscriptRecord):
        if t.status == "rejected":
            reason = str(t.reason or "rejected")
            rejected[reason] = rejected.get(reason, 0.0) + durations.get(t.id, 0.0) / 60
    ds = _dataset_dir(settings, ws)
    stats = read_dataset_stats(ds)
    return DatasetSummary(
        dir=str(ds),
        language=stats.language if stats else None,
        samples=stats.samples if stats else None,
        minutes=stats.minutes if stats else None,
        dropped_by_build=dict(stats.dropped) if stats else {},
        rejected_minutes_by_transcribe={k: round(v, 2) for k, v in rejected.items()},
        histogram=_file(ds / "durations.png"),
    )


def _train_summary(ws: Workspace, run: str, seconds: float | None) -> TrainSummary:
    run_dir = ws.run_dir(run)
    try:
        best: CheckpointMeta | None = read_record(_best_meta(run_dir), CheckpointMeta)
    except RecordError:
        best = None
    return TrainSummary(
        run=run,
        run_dir=str(run_dir),
        best_val_loss=best.val_loss if best else None,
        best_epoch=best.epoch if best else None,
        seconds=seconds,
        tensorboard=str(ws.tensorboard_run_dir(run)),
        loss_curve=_file(ws.run(run).loss_curve),
    )


def _eval_figures(path: Path) -> dict[str, dict[str, Any]]:
    """The per-system figures of an ``eval.json`` (written by :mod:`xttsft.voice.evaluate`, read here only for them)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    figures = data.get("summary") if isinstance(data, dict) else None
    return figures if isinstance(figures, dict) else {}
