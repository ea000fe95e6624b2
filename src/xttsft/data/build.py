"""Build the LJSpeech dataset that XTTS-v2 fine-tuning reads, and check any LJSpeech folder.

Input: the segment manifest, the ``screen`` decisions and ``transcripts.jsonl`` (``transcribe``).
Output: ``ws.dataset_dir`` (``train/data/<build.dataset_name>/``)::

    wavs/<id>.wav          22050 Hz mono 16-bit, cut to the transcript's trim_start..trim_end
    metadata.csv           id|text|normalized_text, every kept sample (no header)
    metadata_train.csv     the train split (same columns)
    metadata_val.csv       the val split, never empty with 2 or more samples
    samples.jsonl          {"id","wav","text","duration","split","language","avg_logprob","source"} per sample
    dropped.jsonl          {"id","reason","detail"} per dropped item (screen's drops included)
    stats.json             counts, minutes, distributions, limits, warnings, input hash
    durations.png          histogram of the durations

Only samples that XTTS-v2 fine-tuning accepts are kept: 0.5 s up to
``max_audio_seconds`` (the segment maximum; ``train`` itself takes up to the model's
limit, 28 s for XTTS-v2, so that datasets made elsewhere fit), text within
the tokenizer's per-language character limit and the GPT's text-token limit
(:data:`TEXT_TOKEN_LIMIT`), no ``|`` and no line breaks. Every other item is
listed in ``dropped.jsonl`` with its reason (:data:`DROP_REASONS`).

A re-run whose inputs and settings have not changed (same hash as in
``stats.json``) rewrites nothing.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import statistics
import typing
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, NamedTuple

from xttsft.audio import TRAIN_SR as SAMPLE_RATE
from xttsft.audio import read_mono, write_wav
from xttsft.data.datasets import inspect_samples, read_dataset, split_ids
from xttsft.data.review import overrides
from xttsft.data.screen import read_decisions, recut_children
from xttsft.errors import DatasetError, XttsftError
from xttsft.io import atomic_dir, atomic_write_text, swap_target, tidy_swaps
from xttsft.locks import stage_lock
from xttsft.model import HF_REPO_ID, HF_REVISION, load_xtts, model_limits, resolve_base_model
from xttsft.paths import Workspace
from xttsft.plots import figure, histogram, save_png
from xttsft.progress import Progress, no_progress
from xttsft.records import (
    ClipRecord,
    DatasetStats,
    DropReason,
    DropRecord,
    RecordError,
    ReviewRecord,
    SampleCounts,
    SampleRecord,
    ScreenStats,
    ScreenSummary,
    TranscriptRecord,
    read_dataset_stats,
    read_record,
    read_records,
    write_record,
    write_records,
)
from xttsft.settings import BuildSettings
from xttsft.storage import require_free_space
from xttsft.textnorm import expand

__all__ = [
    "SAMPLE_RATE",
    "MIN_AUDIO_SECONDS",
    "TEXT_TOKEN_LIMIT",
    "DROP_REASONS",
    "BuildResult",
    "CheckResult",
    "build_dataset",
    "check_dataset",
    "char_limit",
    "normalize_text",
    "find_vocab",
    "split_ids",
]

log = logging.getLogger(__name__)

#: XTTS' dataset drops anything shorter than this (coqui's XTTSDataset, 0.5 s).
MIN_AUDIO_SECONDS = 0.5
#: The GPT's text positions (``gpt_max_text_tokens`` of XTTS-v2's config): the one limit ``train`` applies
#: too (:func:`xttsft.training.train_data.prepare_data`). coqui's recipe cut at 200, which dropped fluent 13 s clips.
TEXT_TOKEN_LIMIT = 402
#: Why an item is not in the dataset (each one explained in :data:`xttsft.records.DropReason`).
DROP_REASONS: tuple[DropReason, ...] = typing.get_args(DropReason)
TARGET_MIN_SAMPLES_RECOMMENDED = 500
TARGET_MAX_SAMPLES_RECOMMENDED = 5000
TARGET_MIN_MINUTES = 15.0
TARGET_MAX_MINUTES = 60.0
BUILD_VERSION = 2  # 2: the normalized text is textnorm.expand'ed (Portuguese) and its tokens counted


@dataclass
class BuildResult:
    """What :func:`build_dataset` produced."""

    dataset_dir: Path
    language: str
    train: int
    val: int
    minutes: float
    dropped: Counter = field(default_factory=Counter)
    warnings: list[str] = field(default_factory=list)
    unchanged: bool = False  # inputs and settings as last time: nothing was rewritten
    token_check: str = "characters"  # "bpe" when the base model's vocab was used

    @property
    def samples(self) -> int:
        return self.train + self.val


@dataclass
class CheckResult:
    """What :func:`check_dataset` found: exactly what ``xttsft train`` would refuse or drop."""

    dataset_dir: Path
    rows: int = 0
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # fine for training, worth knowing (layout, conversions)
    train: int = 0  # samples train would use
    val: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems


# ------------------------------------------------------------------ text


def char_limit(language: str) -> int:
    """The XTTS tokenizer's character limit for ``language`` (250 when it has none)."""
    from TTS.tts.layers.xtts.tokenizer import VoiceBpeTokenizer

    return VoiceBpeTokenizer().char_limits.get(language.split("-")[0], 250)


def normalize_text(text: str, language: str) -> str:
    """``textnorm.expand`` (what coqui reads wrong in Portuguese), then coqui's multilingual cleaner
    for ``language`` (what the XTTS tokenizer applies before BPE). Training reads this column."""
    from TTS.tts.layers.xtts.tokenizer import multilingual_cleaners

    text = expand(text, language)
    try:
        return multilingual_cleaners(text, language.split("-")[0]).strip()
    except (KeyError, NotImplementedError):  # a language the cleaner does not know: lower-case only
        return " ".join(text.lower().split())


def find_vocab(base_model: str) -> Path | None:
    """The base model's ``vocab.json`` if it is on this machine (never downloads)."""
    path = Path(base_model).expanduser()
    if path.is_dir():
        return path / "vocab.json" if (path / "vocab.json").is_file() else None
    if base_model == "coqui/XTTS-v2":
        try:
            import huggingface_hub as hf

            found = hf.try_to_load_from_cache(HF_REPO_ID, "vocab.json", revision=HF_REVISION)
            return Path(found) if isinstance(found, str) else None
        except Exception:  # noqa: BLE001 - no cache, no model module: fall back to characters
            return None
    return None


# ------------------------------------------------------------------ split


# ------------------------------------------------------------------ build


def _hash_inputs(ws: Workspace, settings: BuildSettings, extra: dict[str, Any]) -> str:
    h = hashlib.sha256()
    for path in (ws.segments_manifest, ws.screen_file, ws.transcripts_file, ws.review_file):
        h.update(path.read_bytes() if path.exists() else b"")
    h.update(
        json.dumps(
            {"v": BUILD_VERSION, **settings.model_dump(mode="json"), **extra}, sort_keys=True, default=str
        ).encode()
    )
    return h.hexdigest()


def _outputs(d: Path) -> list[Path]:
    return [
        d / n
        for n in (
            "metadata.csv",
            "metadata_train.csv",
            "metadata_val.csv",
            "samples.jsonl",
            "dropped.jsonl",
            "stats.json",
            "durations.png",
        )
    ]


def _histogram(durations: list[float], max_seconds: float, out: Path) -> None:

    fig = figure()
    histogram(
        fig.add_subplot(),
        durations,
        limit=max_seconds,
        limit_label=f"limit {max_seconds:g} s",
        xlabel="duration (s)",
        ylabel="samples",
        title=f"{len(durations)} samples, {sum(durations) / 60:.1f} min",
        value_range=(0, max(max_seconds, max(durations, default=1.0))),
    )
    save_png(fig, out)


def _distribution(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    s = sorted(values)
    pick = lambda q: s[min(len(s) - 1, int(q * (len(s) - 1) + 0.5))]  # noqa: E731
    return {
        "min": round(s[0], 3),
        "p10": round(pick(0.1), 3),
        "median": round(statistics.median(s), 3),
        "p90": round(pick(0.9), 3),
        "max": round(s[-1], 3),
        "mean": round(statistics.fmean(s), 3),
    }


class _Sample(NamedTuple):
    """A transcript that can be a sample: its text, the normalized text training reads, and its length."""

    row: TranscriptRecord
    text: str
    norm: str
    duration: float


@dataclass
class _Drops:
    """What is left out of the dataset, and why (``dropped.jsonl``)."""

    rows: list[DropRecord] = field(default_factory=list)

    def add(self, cid: str | None, reason: DropReason, detail: str = "", duplicate_of: str | None = None) -> None:
        self.rows.append(DropRecord(id=cid, reason=reason, detail=detail, duplicate_of=duplicate_of))

    def reasons(self) -> str:
        return ", ".join(f"{k}: {v}" for k, v in Counter(d.reason for d in self.rows).most_common())


Drop = Callable[..., None]  # _Drops.add


@stage_lock(lambda ws: f"build-{ws.dataset_dir.name}", after=("segment", "screen", "transcribe"))  # checks the name
def build_dataset(
    settings: BuildSettings,
    ws: Workspace,
    *,
    max_audio_seconds: float,
    vocab_file: Path | None = None,
    progress: Progress | None = None,
) -> BuildResult:
    """Turn the kept transcripts into ``ws.dataset_dir`` (see the module docstring).

    ``max_audio_seconds`` is the longest sample kept (``segment.max_duration``).
    ``settings.language`` forces the dataset language; ``auto`` takes the language of
    most kept transcripts. ``vocab_file`` (the base model's BPE vocabulary) makes the
    text-token check exact; without it the normalized text's length in characters
    (+1 for the language token) is used as an upper bound of its BPE token count.
    Raises :class:`DatasetError` when the inputs are missing or nothing is left.
    """
    progress = progress or no_progress
    target = _start(ws)
    out = ws.dataset_dir
    extra = {
        "max_audio_seconds": max_audio_seconds,
        "vocab": hashlib.sha256(vocab_file.read_bytes()).hexdigest() if vocab_file else None,
    }
    input_hash = _hash_inputs(ws, settings, extra)
    done = _unchanged(out, input_hash)
    if done is not None:
        log.info("Dataset %s is up to date (inputs and settings unchanged); nothing rewritten.", out)
        for w in done.warnings:  # said once, as a written build says them
            log.warning("%s", w)
        return done

    manifest = {r.id: r for r in read_records(ws.segments_manifest, ClipRecord)}
    drops = _Drops()
    ok_rows = _usable_transcripts(ws, manifest, drops)
    lang = _dataset_language(settings, ok_rows, drops)
    limit_chars = char_limit(lang)
    tokenizer = None
    if vocab_file is not None:
        from TTS.tts.layers.xtts.tokenizer import VoiceBpeTokenizer

        tokenizer = VoiceBpeTokenizer(vocab_file=str(vocab_file))
    candidates = [
        c for row in ok_rows if (c := _candidate(row, ws, lang, max_audio_seconds, limit_chars, tokenizer, drops.add))
    ]

    # the new dataset is written beside the old one and swapped in whole: a failed build
    # (full disk, Ctrl-C, no usable sample) leaves the previous dataset as it was
    require_free_space(target.parent, sum(c.duration for c in candidates) * SAMPLE_RATE * 2 + (1 << 20), "build")
    with atomic_dir(out) as tmp:
        kept = _cut_clips(ws, candidates, tmp / "wavs", drops.add, progress)
        if not kept:
            failed = ws.logs_dir / "build-dropped.jsonl"
            write_records(failed, DropRecord, drops.rows)
            raise DatasetError(
                f"No sample is usable for XTTS-v2 fine-tuning ({drops.reasons()}).",
                hint=f"Every dropped item and its reason is in {failed}.",
            )
        stats = _write_tables(
            tmp,
            ws,
            settings,
            kept,
            drops.rows,
            manifest,
            lang,
            max_audio_seconds,
            limit_chars,
            "bpe" if tokenizer is not None else "characters",
            input_hash,
        )
    return _result(out, stats)


def _start(ws: Workspace) -> Path:
    """Clean what a killed build left, and refuse to start without transcripts or over a folder build did not
    write. Returns the folder the dataset is swapped into (beside a symlinked dataset's real folder)."""

    # what a killed build left: GBs of half-written wavs, or the previous dataset set aside
    target = swap_target(ws.dataset_dir)
    tidy_swaps(target.parent, complete=lambda p: (p / "stats.json").is_file(), name=target.name)
    if not ws.transcripts_file.exists():
        raise DatasetError(
            f"No transcripts: {ws.transcripts_file} does not exist.",
            hint="Run `xttsft segment` and `xttsft transcribe` first.",
        )
    _refuse_foreign(ws.dataset_dir)
    return target


def _dataset_language(settings: BuildSettings, ok_rows: list[TranscriptRecord], drops: _Drops) -> str:
    """``settings.language``, or (``auto``) the language of most kept transcripts; refuses when none is kept."""
    forced = None if settings.language == "auto" else settings.language.strip().lower()
    if forced:
        return forced
    langs = Counter(r.language for r in ok_rows)
    if not langs:
        reasons = Counter(d.reason + (f" ({d.detail})" if d.reason == "rejected" else "") for d in drops.rows)
        raise DatasetError(
            "No usable transcripts: every clip was rejected or is missing ("
            + ", ".join(f"{k}: {v}" for k, v in reasons.most_common())
            + ").",
            hint="See transcripts.jsonl for the reasons; try a larger Whisper model or check the audio.",
        )
    return langs.most_common(1)[0][0]


def _result(out: Path, stats: DatasetStats, unchanged: bool = False) -> BuildResult:
    return BuildResult(
        dataset_dir=out,
        language=stats.language,
        train=stats.samples.train,
        val=stats.samples.val,
        minutes=stats.minutes,
        dropped=Counter(stats.dropped),
        warnings=list(stats.warnings),
        unchanged=unchanged,
        token_check=stats.token_check,
    )


def _refuse_foreign(out: Path) -> None:
    """Refuse to replace a folder that ``build`` did not write: build swaps its dataset in whole."""
    if not out.exists() and not out.is_symlink():
        return
    if out.is_dir() and (read_dataset_stats(out) is not None or not any(out.iterdir())):
        return
    raise DatasetError(
        f"{out} exists and was not written by `xttsft build` (it has no build stats.json). Build replaces its "
        "dataset folder whole, so it would delete what is there.",
        hint="Choose another --dataset-name (BUILD_DATASET_NAME), or move that folder away. To train on a dataset "
        "made elsewhere, give it to `xttsft train --dataset-dir PATH`.",
    )


def _unchanged(out: Path, input_hash: str) -> BuildResult | None:
    """The existing dataset's result when it was built from these very inputs and settings."""
    if not all(p.exists() for p in _outputs(out)):
        return None
    old = read_dataset_stats(out)
    if old is None or old.input_hash != input_hash or len(list((out / "wavs").glob("*.wav"))) != old.samples.total:
        return None
    return _result(out, old, unchanged=True)


def _usable_transcripts(ws: Workspace, manifest: dict[str, ClipRecord], drops: _Drops) -> list[TranscriptRecord]:
    """The transcripts marked ok; every other clip of the manifest goes to ``drops`` with its reason
    (the screen's, transcribe's rejection, the review's, or never transcribed). The review's edits
    (``xttsft review``) win: its text replaces the transcript's, its keep overrides the screen and
    transcribe, its drop leaves the clip out with the reason ``review``."""

    review = overrides(ws).rows
    screened = set()
    decisions = read_decisions(ws, list(manifest.values()))
    for cid, d in decisions.items():
        if d.status == "dropped" and d.reason is not None and _decision(review, cid) != "keep":
            drops.add(cid, d.reason, d.detail, d.duplicate_of or None)
            screened.add(cid)
    for child, parent in recut_children(decisions, {c for c in decisions if _decision(review, c) == "keep"}).items():
        drops.add(child, "duplicate", f"{parent}, kept in xttsft review, holds its audio", parent)
        screened.add(child)
    seen = set(screened)
    ok_rows = []
    for row in read_records(ws.transcripts_file, TranscriptRecord):
        if row.id in screened:  # transcribed before the screen dropped it
            continue
        seen.add(row.id)
        edit = review.get(row.id)
        if edit is not None and edit.decision == "drop":
            drops.add(row.id, "review", "dropped in xttsft review")
        elif row.status != "ok" and (edit is None or edit.decision != "keep"):
            drops.add(row.id, "rejected", str(row.reason))
        else:
            ok_rows.append(row if edit is None or edit.text is None else dataclasses.replace(row, text=edit.text))
    for cid in manifest:
        if cid not in seen:
            kept_in_review = _decision(review, cid) == "keep"
            drops.add(
                cid,
                "not_transcribed",
                "kept in xttsft review: run `xttsft transcribe`, then build again"
                if kept_in_review
                else "run `xttsft transcribe` again",
            )
    if review:
        log.info(
            "review: %d clip(s) changed by xttsft review (%d edited, %d kept, %d dropped)",
            len(review),
            sum(r.text is not None for r in review.values()),
            sum(r.decision == "keep" for r in review.values()),
            sum(r.decision == "drop" for r in review.values()),
        )
    return ok_rows


def _decision(review: dict[str, ReviewRecord], cid: str) -> str | None:
    edit = review.get(cid)
    return edit.decision if edit is not None else None


def _candidate(
    row: TranscriptRecord,
    ws: Workspace,
    lang: str,
    max_audio_seconds: float,
    limit_chars: int,
    tokenizer: Any,
    drop: Drop,
) -> _Sample | None:
    """The transcript as a :class:`_Sample` when it can be one, else ``drop`` it with the reason."""
    text = (row.text or "").strip()
    duration = row.trim_end - row.trim_start
    if row.language != lang:
        drop(row.id, "other_language", f"{row.language} (dataset: {lang})")
    elif not (ws.segments_dir / row.wav).is_file():
        drop(row.id, "missing_audio", f"{row.wav} not found")
    elif duration < MIN_AUDIO_SECONDS:
        drop(row.id, "too_short", f"{duration:.2f} s < {MIN_AUDIO_SECONDS} s")
    elif duration > max_audio_seconds + 1e-6:
        drop(row.id, "too_long", f"{duration:.2f} s > {max_audio_seconds:g} s")
    elif "|" in text or "\n" in text or "\r" in text:
        drop(row.id, "bad_character", "'|' or a line break in the text")
    elif not text:
        drop(row.id, "empty_text")
    else:
        norm = normalize_text(text, lang)
        if not norm:
            drop(row.id, "empty_text", "nothing left after normalization")
        elif tokenizer is not None:
            tokens = tokenizer.encode(norm, lang)  # the column training reads
            if len(tokens) > TEXT_TOKEN_LIMIT:
                drop(row.id, "too_many_tokens", f"{len(tokens)} > {TEXT_TOKEN_LIMIT} BPE tokens")
            elif 1 in tokens:  # [UNK]
                drop(row.id, "unknown_tokens", "the base model's vocabulary lacks a character of the text")
            else:
                return _Sample(row, text, norm, duration)
        elif len(norm) + 1 > TEXT_TOKEN_LIMIT:
            drop(row.id, "too_many_tokens", f"{len(norm) + 1} characters > {TEXT_TOKEN_LIMIT} (upper bound of tokens)")
        else:
            return _Sample(row, text, norm, duration)
    return None


def _cut_clips(ws: Workspace, candidates: list[_Sample], wavs: Path, drop: Drop, progress: Progress) -> list[_Sample]:
    """Cut each candidate (trim_start..trim_end of its segment) into ``wavs/<id>.wav``; the kept ones, with
    their length as cut."""

    wavs.mkdir(parents=True, exist_ok=True)
    progress(total=len(candidates), completed=0, description="build")
    kept: list[_Sample] = []
    for c in candidates:
        row = c.row
        try:
            x = read_mono(ws.segments_dir / row.wav, SAMPLE_RATE)
        except XttsftError as exc:
            drop(row.id, "missing_audio", exc.message)
            progress(advance=1)
            continue
        piece = x[int(round(row.trim_start * SAMPLE_RATE)) : int(round(row.trim_end * SAMPLE_RATE))]
        write_wav(wavs / f"{row.id}.wav", piece, SAMPLE_RATE)
        kept.append(c._replace(duration=len(piece) / SAMPLE_RATE))
        progress(advance=1)
    return kept


def _warnings(n: int, minutes: float, has_val: bool, settings: BuildSettings) -> list[str]:
    warnings = []
    if n < settings.min_samples:
        warnings.append(
            f"only {n} samples: at least {settings.min_samples} are needed for a usable voice "
            f"({TARGET_MIN_SAMPLES_RECOMMENDED}-{TARGET_MAX_SAMPLES_RECOMMENDED} recommended)"
        )
    elif n < TARGET_MIN_SAMPLES_RECOMMENDED:
        warnings.append(
            f"{n} samples: {TARGET_MIN_SAMPLES_RECOMMENDED}-{TARGET_MAX_SAMPLES_RECOMMENDED} are recommended"
        )
    elif n > TARGET_MAX_SAMPLES_RECOMMENDED:
        warnings.append(f"{n} samples: more than the recommended {TARGET_MAX_SAMPLES_RECOMMENDED}; training is slower")
    if minutes < TARGET_MIN_MINUTES:
        warnings.append(
            f"{minutes:.1f} minutes of audio: {TARGET_MIN_MINUTES:g}-{TARGET_MAX_MINUTES:g} are recommended"
        )
    elif minutes > TARGET_MAX_MINUTES:
        warnings.append(f"{minutes:.1f} minutes of audio: more than the {TARGET_MAX_MINUTES:g} recommended")
    if not has_val:
        warnings.append("the val split is empty: 2 or more samples are needed")
    return warnings


def _write_tables(
    out: Path,
    ws: Workspace,
    settings: BuildSettings,
    kept: list[_Sample],
    dropped: list[DropRecord],
    manifest: dict[str, ClipRecord],
    lang: str,
    max_audio_seconds: float,
    limit_chars: int,
    token_check: typing.Literal["bpe", "characters"],
    input_hash: str,
) -> DatasetStats:
    """metadata*.csv, samples.jsonl, dropped.jsonl, durations.png and, last, stats.json of the kept clips."""
    train_ids, val_ids = split_ids(sorted(k.row.id for k in kept), settings.val_fraction, settings.seed)
    split_of: dict[str, typing.Literal["train", "val"]] = {i: "train" for i in train_ids}
    split_of.update((i, "val") for i in val_ids)
    kept.sort(key=lambda k: k.row.id)
    line = {k.row.id: f"{k.row.id}|{k.text}|{k.norm}\n" for k in kept}
    atomic_write_text(out / "metadata.csv", "".join(line[k.row.id] for k in kept))
    atomic_write_text(out / "metadata_train.csv", "".join(line[i] for i in train_ids))
    atomic_write_text(out / "metadata_val.csv", "".join(line[i] for i in val_ids))
    write_records(
        out / "samples.jsonl",
        SampleRecord,
        [
            SampleRecord(
                id=k.row.id,
                wav=f"wavs/{k.row.id}.wav",
                text=k.text,
                duration=round(k.duration, 3),
                split=split_of[k.row.id],
                language=lang,
                avg_logprob=k.row.avg_logprob,
                source=clip.source if (clip := manifest.get(k.row.id)) else None,
            )
            for k in kept
        ],
    )
    write_records(out / "dropped.jsonl", DropRecord, dropped)

    durations = [k.duration for k in kept]
    minutes = sum(durations) / 60
    by_split = {s: sum(k.duration for k in kept if split_of[k.row.id] == s) / 60 for s in ("train", "val")}
    warnings = _warnings(len(kept), minutes, bool(val_ids), settings)
    for w in warnings:
        log.warning("%s", w)
    _histogram(durations, max_audio_seconds, out / "durations.png")
    stats = DatasetStats(
        language=lang,
        max_audio_seconds=max_audio_seconds,
        min_audio_seconds=MIN_AUDIO_SECONDS,
        char_limit=limit_chars,
        text_token_limit=TEXT_TOKEN_LIMIT,
        token_check=token_check,
        samples=SampleCounts(train=len(train_ids), val=len(val_ids), total=len(kept)),
        minutes=round(minutes, 3),
        minutes_per_split={k: round(v, 3) for k, v in by_split.items()},
        duration_seconds=_distribution(durations),
        chars_per_second=_distribution([len(k.text) / k.duration for k in kept if k.duration > 0]),
        dropped=dict(Counter(d.reason for d in dropped)),
        rejected_by_transcribe=dict(Counter(d.detail for d in dropped if d.reason == "rejected")),
        screen=_screen_summary(ws),
        val_fraction=settings.val_fraction,
        seed=settings.seed,
        warnings=warnings,
        input_hash=input_hash,
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )
    write_record(out / "stats.json", DatasetStats, stats)  # written last: the dataset is complete
    return stats


def _screen_summary(ws: Workspace) -> ScreenSummary | None:
    """What ``screen`` found (speakers, thresholds, drops, DNSMOS), for stats.json."""
    if not ws.screen_stats.is_file():
        return None
    try:
        s = read_record(ws.screen_stats, ScreenStats)
    except RecordError:
        return None
    return ScreenSummary(
        clips=s.clips,
        kept=s.kept,
        kept_minutes=s.kept_minutes,
        dropped=s.dropped,
        dropped_minutes=s.dropped_minutes,
        speakers=s.speakers,
        thresholds=s.thresholds,
        dnsmos_ovrl=s.dnsmos_ovrl,
        dnsmos_bak=s.dnsmos_bak,
        filters=s.filters,
        speaker_refs=s.speaker_refs,
        speaker_encoder=s.speaker_encoder,
    )


# ------------------------------------------------------------------ check


def check_dataset(
    path: Path,
    base_model: str = "coqui/XTTS-v2",
    language: str | None = None,
    val_fraction: float = 0.1,
    seed: int = 42,
) -> CheckResult:
    """Validate any dataset folder the way ``xttsft train`` reads it (the same code,
    :mod:`xttsft.data.datasets`): every row it would refuse or drop is listed, none stops the check.

    The text-token and length limits are those of ``base_model`` when its files are on this
    machine (the tiny model is built when asked for); otherwise XTTS-v2's limits and a
    character count stand in for the tokenizer, and a note says so.
    """

    root = Path(path).expanduser()
    result = CheckResult(dataset_dir=root)
    if not root.is_dir():
        result.problems.append(f"{root}: not a folder")
        return result
    try:
        ds = read_dataset(root, language, val_fraction, seed)
    except XttsftError as exc:
        result.problems.append(exc.message + (f" ({exc.hint})" if exc.hint else ""))
        return result
    result.notes.append(f"layout: {ds.layout}; language {ds.language} (from {ds.language_source})")
    tokenize, max_wav, max_tokens, how = _check_limits(base_model)
    result.notes.append(how)
    found = inspect_samples(ds, tokenize, max_wav, max_tokens)
    result.rows = len(ds.train) + len(ds.val) + len(ds.refused)
    result.train, result.val = len(found.train), len(found.val)
    for reason, ids in found.dropped.items():
        for sid in ids:
            result.problems.append(f"{sid}: {reason.removeprefix('refused: ')}")
    if found.resampled:
        result.notes.append(f"{found.resampled} clips are not 22050 Hz mono: training converts them on load")
    for split, n in (("train", result.train), ("val", result.val)):
        if n == 0:
            result.problems.append(f"the {split} split would be empty: training refuses this dataset")
    return result


def _check_limits(base_model: str) -> tuple[Any, int, int, str]:
    """(tokenize, longest clip in samples, most text tokens, a note): the base model's when it is on
    this machine (the tiny model is built; nothing is downloaded), else XTTS-v2's limits and characters."""

    try:
        spec = Path(base_model).expanduser()
        if base_model == "tiny" or spec.is_dir():
            xtts = load_xtts(resolve_base_model(base_model), for_training=True, keep_decoder=False)
            return (
                xtts.tokenizer.encode,
                model_limits(xtts.args.gpt_max_audio_tokens),
                xtts.args.gpt_max_text_tokens,
                f"limits and tokens of the base model {base_model}",
            )
        vocab = find_vocab(base_model)
        if vocab is not None:  # XTTS-v2's vocabulary is cached: its tokens, its limits
            from TTS.tts.layers.xtts.tokenizer import VoiceBpeTokenizer

            return (
                VoiceBpeTokenizer(vocab_file=str(vocab)).encode,
                model_limits(605),
                402,
                f"limits and tokens of {base_model}",
            )
    except Exception as exc:  # noqa: BLE001 - a broken or partial model folder: say so, check on
        log.warning("Cannot read the base model %s for --check (%s); checking by characters.", base_model, exc)
    return (
        None,
        model_limits(605),
        402,
        f"{base_model} is not on this machine: XTTS-v2's limits, text length counted in characters",
    )
