"""The files that pass between stages, declared once: their fields, types and version.

Every stage writes these files with :func:`write_records` / :func:`write_record` and reads them
with :func:`read_records` / :func:`read_record`, which turn each row into an instance of its
record class (and back): a row of another version, a missing, mistyped or undeclared field, or
a line that is not JSON gets a :class:`RecordError` naming the file, the line and the field (a
foreign or hand-edited file never gets half-read, and a misspelt optional field is never
silently dropped). Rows are written with their version (``"v"``); rows written before versions
existed read as version 1.

A record holds nested objects as :class:`Part` instances (a transcript's words, the DNSMOS
scores of a clip), checked the same way. Closed sets of values are ``Literal`` types.
``docs/formats.md`` is generated from these classes (``scripts/formats_doc.py``).
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal, TypeVar

from xttsft.errors import DatasetError
from xttsft.io import atomic_write_json, atomic_write_text

__all__ = [
    "ReviewRecord",
    "RecordError",
    "Part",
    "Record",
    "Word",
    "Dnsmos",
    "LostSpan",
    "Recut",
    "SampleCounts",
    "SpeakerRow",
    "ScreenSummary",
    "ExportSource",
    "ClipRecord",
    "SourceRecord",
    "ScreenRecord",
    "TranscriptRecord",
    "SampleRecord",
    "DropRecord",
    "DatasetStats",
    "ScreenStats",
    "RunRecord",
    "CheckpointMeta",
    "StageRecord",
    "ExportMarker",
    "AdapterMarker",
    "RECORDS",
    "TranscriptReason",
    "ScreenReason",
    "DropReason",
    "read_records",
    "write_records",
    "records_text",
    "read_record",
    "write_record",
    "read_dataset_stats",
    "stats_language",
    "read_marker",
]

P = TypeVar("P", bound="Part")
R = TypeVar("R", bound="Record")


class RecordError(DatasetError):
    """A stage file that does not match its declared format."""


#: Why ``transcribe`` rejects a clip, in the order the rules are checked.
TranscriptReason = Literal[
    "wrong_language", "empty_text", "no_letters", "repetition", "hallucination", "low_confidence"
]
#: Why ``screen`` drops a clip.
ScreenReason = Literal[
    "other_speaker",  # not the target voice (detail: similarity and threshold)
    "mixed_speakers",  # another voice inside the clip
    "low_quality",  # DNSMOS under the threshold
    "duplicate",  # the same audio as another clip (detail names it)
]
#: Why an item is not in ``build``'s dataset.
DropReason = Literal[
    ScreenReason,
    "rejected",  # transcribe rejected it (detail: its reason)
    "not_transcribed",  # in the manifest but not in transcripts.jsonl
    "missing_audio",  # the clip is gone or unreadable
    "other_language",  # transcribed in another language than the dataset's
    "too_short",
    "too_long",
    "bad_character",  # '|' or a line break in the text
    "empty_text",
    "too_many_chars",  # over the tokenizer's character limit for the language
    "too_many_tokens",  # over build.TEXT_TOKEN_LIMIT
    "unknown_tokens",  # the base model's vocabulary has no token for a character
    "review",  # dropped by hand in `xttsft review`
]
Mode = Literal["lora", "full"]


# ------------------------------------------------------------------ checking


@dataclass(kw_only=True)
class Part:
    """An object nested in a record (a word, a score set): its fields are checked like the record's."""


@dataclass(kw_only=True)
class Record(Part):
    """Base of every file's record: a version, where the file lives, and the check of a dict against the fields."""

    VERSION: ClassVar[int] = 1
    #: whether rows carry ``"v"``; files that never had it (screen's stats, export markers) keep their shape
    VERSIONED: ClassVar[bool] = True
    FILE: ClassVar[str] = ""
    STAGE: ClassVar[str] = ""  # the command that writes it (for the hint)
    PATH: ClassVar[str] = ""  # where it lives (docs/formats.md)
    WRITTEN_BY: ClassVar[str] = ""
    READ_BY: ClassVar[str] = ""

    @classmethod
    def from_dict(cls: type[R], data: Any, where: str = "") -> R:
        """``data`` (a parsed JSON object) checked against the declared fields, as an instance."""
        where = where or cls.FILE
        if not isinstance(data, dict):
            raise cls._error(where, None, f"expected a JSON object, got {type(data).__name__}")
        if cls.VERSIONED:
            version = data.get("v", 1)
            if type(version) is not int or version != cls.VERSION:
                raise RecordError(
                    f"{where}: version {version!r} of {cls.FILE}, but this xttsft reads version {cls.VERSION}.",
                    hint=f"It was written by another version of xttsft: run `xttsft {cls.STAGE}` again to rewrite it.",
                )
        return _build(cls, data, where, cls, "")

    @classmethod
    def check(cls, data: Any, where: str) -> dict[str, Any]:
        """``data`` checked against the declared fields; returns it as the file holds it (version set)."""
        return cls.from_dict(data, where).to_dict()

    def to_dict(self) -> dict[str, Any]:
        body = dataclasses.asdict(self)
        return {"v": self.VERSION, **body} if self.VERSIONED else body

    @classmethod
    def _error(cls, where: str, name: str | None, what: str) -> RecordError:
        return RecordError(
            f"{where}: " + (f"field {name!r}: " if name else "") + what + f" ({cls.FILE}).",
            hint=f"The file was edited by hand or written by another program; run `xttsft {cls.STAGE}` again "
            "to rewrite it.",
        )


_HINTS: dict[type, dict[str, Any]] = {}


def _hints(cls: type) -> dict[str, Any]:
    """The resolved field types of a record or part (resolved once per class)."""
    if cls not in _HINTS:
        _HINTS[cls] = typing.get_type_hints(cls)
    return _HINTS[cls]


def _required(f: dataclasses.Field[Any]) -> bool:
    return f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING


def _build(cls: type[P], data: Any, where: str, owner: type[Record], prefix: str) -> P:
    """An instance of ``cls`` from ``data``; every problem is named by ``owner``'s file and the field's path."""
    if not isinstance(data, dict):
        raise owner._error(where, prefix.rstrip("."), f"expected an object, got {data!r:.60}")
    hints = _hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in data:
        if key not in fields and not (key == "v" and not prefix and owner.VERSIONED):
            raise owner._error(where, prefix + str(key), "not a field of this file (misspelt?)")
    values = {}
    for name, f in fields.items():
        if name in data:
            values[name] = _value(data[name], hints[name], where, owner, prefix + name)
        elif _required(f):
            raise owner._error(where, prefix + name, "missing")
    return cls(**values)


def _value(value: Any, tp: Any, where: str, owner: type[Record], name: str) -> Any:
    """``value`` checked against the type ``tp`` (nested parts built, lists and objects copied)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        if len(options) == 1:
            return _value(value, options[0], where, owner, name)
        for option in options:
            try:
                return _value(value, option, where, owner, name)
            except RecordError:
                continue
    elif tp is Any:
        return value
    elif origin is Literal:
        if any(value == a and type(value) is type(a) for a in args):
            return value
    elif isinstance(tp, type) and issubclass(tp, Part):
        return _build(tp, value, where, owner, name + ".")
    elif origin in (list, tuple) or tp in (list, tuple):
        if isinstance(value, list):
            item = args[0] if args else Any
            return [_value(v, item, where, owner, f"{name}[{i}]") for i, v in enumerate(value)]
    elif origin is dict or tp is dict:
        if isinstance(value, dict):
            item = args[1] if args else Any
            return {k: _value(v, item, where, owner, f"{name}.{k}") for k, v in value.items()}
    elif _fits(value, tp):
        return value
    raise owner._error(where, name, f"expected {_name(tp)}, got {value!r:.60}")


def _fits(value: Any, tp: Any) -> bool:
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, tp)


def _name(tp: Any) -> str:
    """A type in words (messages and docs/formats.md)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Literal:
        return " or ".join(repr(a) for a in args)
    if isinstance(tp, type) and issubclass(tp, Part):
        return f"an object ({tp.__name__})"
    if origin in (list, tuple) and args and isinstance(args[0], type) and issubclass(args[0], Part):
        return f"a list of objects ({args[0].__name__})"
    if args and origin not in (list, dict, tuple):
        return " or ".join(_name(a) for a in args)
    if tp is type(None):
        return "null"
    return {
        list: "a list",
        dict: "an object",
        str: "text",
        float: "a number",
        int: "a whole number",
        bool: "true or false",
    }.get(origin or tp, str(tp))


# ------------------------------------------------------------------ nested parts


@dataclass(kw_only=True)
class Word(Part):
    """One word Whisper heard: its text and times in seconds inside the clip."""

    word: str
    start: float
    end: float
    probability: float


@dataclass(kw_only=True)
class Dnsmos(Part):
    """DNSMOS P.835 scores of a clip (1-5)."""

    sig: float
    bak: float
    ovrl: float


@dataclass(kw_only=True)
class SampleCounts(Part):
    """Samples per split of a dataset."""

    train: int
    val: int
    total: int


@dataclass(kw_only=True)
class Recut(Part):
    """A mixed clip that ``screen`` split at the change of voice: the target's part became clip ``clip``."""

    clip: str  # the new clip's id (its row is in the segment manifest, flag "recut")
    kept: list[float]  # [start, end] of the kept part, s in the source
    dropped: list[list[float]]  # [start, end] of each part dropped, s in the source
    why: str  # why those parts were dropped


@dataclass(kw_only=True)
class LostSpan(Part):
    """Speech of the target voice that ``screen`` dropped because another voice was in the same clip."""

    source: str
    start: float  # s in the source
    end: float
    clip: str  # the clip it was in


@dataclass(kw_only=True)
class SpeakerRow(Part):
    """One voice ``screen`` found."""

    label: str
    clips: int
    minutes: float
    kept: int
    kept_minutes: float = 0.0
    similarity_to_target: float | None = None  # NaN when there is no target
    target: bool = False


@dataclass(kw_only=True)
class ScreenSummary(Part):
    """What ``screen`` found, in short, as the dataset was built from it (a copy of its stats.json's figures)."""

    clips: int | None = None
    kept: int | None = None
    kept_minutes: float | None = None
    dropped: dict[str, int] | None = None
    dropped_minutes: dict[str, float] | None = None
    speakers: list[SpeakerRow] | None = None
    thresholds: dict[str, float] | None = None
    dnsmos_ovrl: dict[str, float] | None = None
    dnsmos_bak: dict[str, float] | None = None
    filters: dict[str, bool] | None = None
    speaker_refs: list[str] | None = None
    speaker_encoder: str | None = None


@dataclass(kw_only=True)
class ExportSource(Part):
    """What an export was made from: a re-export of the same is skipped."""

    checkpoint: str
    saved: str | None = None
    step: int | None = None
    epoch: int | None = None
    references: list[str] = field(default_factory=list)  # SHA-256 of each reference clip


# ------------------------------------------------------------------ the records


@dataclass(kw_only=True)
class ClipRecord(Record):
    """``segments/manifest.jsonl``: one clip cut by ``segment``."""

    FILE: ClassVar[str] = "manifest.jsonl"
    STAGE: ClassVar[str] = "segment --force"
    PATH: ClassVar[str] = "train/data/processed/segments/manifest.jsonl"
    WRITTEN_BY: ClassVar[str] = "segment"
    READ_BY: ClassVar[str] = "screen, transcribe, build, run-all"
    id: str
    wav: str
    source: str
    source_sha256: str
    start: float
    end: float
    duration: float
    sample_rate: int = 22050
    peak_dbfs: float | None = None
    loudness_dbfs: float | None = None
    gain_db: float | None = None
    flags: list[str] = field(default_factory=list)


@dataclass(kw_only=True)
class SourceRecord(Record):
    """``segments/sources.jsonl``: what ``segment`` did with one source file."""

    FILE: ClassVar[str] = "sources.jsonl"
    STAGE: ClassVar[str] = "segment --force"
    PATH: ClassVar[str] = "train/data/processed/segments/sources.jsonl"
    WRITTEN_BY: ClassVar[str] = "segment"
    READ_BY: ClassVar[str] = "segment (re-runs), screen, run-all"
    source: str
    source_sha256: str
    settings_hash: str
    stem: str | None = None
    status: Literal["segmented", "failed"]
    reason: str | None = None
    notes: list[str] = field(default_factory=list)
    duration: float | None = None
    segments: list[str] = field(default_factory=list)
    dropped: int = 0
    date: str | None = None


@dataclass(kw_only=True)
class ScreenRecord(Record):
    """``screen/screen.jsonl``: the screen's decision about one clip."""

    FILE: ClassVar[str] = "screen.jsonl"
    STAGE: ClassVar[str] = "screen --force"
    PATH: ClassVar[str] = "train/data/processed/screen/screen.jsonl"
    WRITTEN_BY: ClassVar[str] = "screen"
    READ_BY: ClassVar[str] = "transcribe, build"
    id: str
    wav: str | None = None
    source: str | None = None
    source_sha256: str | None = None
    start: float | None = None
    end: float | None = None
    duration: float | None = None
    reason: ScreenReason | None = None
    detail: str = ""
    duplicate_of: str | None = None
    status: Literal["kept", "dropped"]
    speaker: str | None = None
    similarity: float | None = None
    window_min_similarity: float | None = None
    dnsmos: Dnsmos | None = None
    recut: Recut | None = None  # a dropped mixed clip whose target part was kept as another clip
    recut_from: str | None = None  # on that new clip: the mixed clip it was cut from


@dataclass(kw_only=True)
class TranscriptRecord(Record):
    """``transcriptions/transcripts.jsonl``: Whisper's output for one clip and the verdict."""

    FILE: ClassVar[str] = "transcripts.jsonl"
    STAGE: ClassVar[str] = "transcribe"
    PATH: ClassVar[str] = "train/data/processed/transcriptions/transcripts.jsonl"
    WRITTEN_BY: ClassVar[str] = "transcribe"
    READ_BY: ClassVar[str] = "transcribe (re-runs), build, run-all"
    id: str
    wav: str
    text: str
    language: str
    language_probability: float | None = None
    detected_language: str | None = None
    detected_probability: float | None = None
    avg_logprob: float = 0.0
    no_speech_prob: float = 0.0
    compression_ratio: float = 0.0
    window_clips: int = 1
    words: list[Word] = field(default_factory=list)
    speech: list[float] | None = None
    duration: float | None = None
    model: str | None = None
    requested_language: str | None = None
    key: str | None = None
    trim_start: float
    trim_end: float
    status: Literal["ok", "rejected"]
    reason: TranscriptReason | None = None


@dataclass(kw_only=True)
class SampleRecord(Record):
    """``<dataset>/samples.jsonl``: one sample ``build`` kept."""

    FILE: ClassVar[str] = "samples.jsonl"
    STAGE: ClassVar[str] = "build"
    PATH: ClassVar[str] = "train/data/<dataset>/samples.jsonl"
    WRITTEN_BY: ClassVar[str] = "build"
    READ_BY: ClassVar[str] = "synth, export, eval (reference and held-out clips)"
    id: str
    wav: str
    text: str = ""
    duration: float
    split: Literal["train", "val"]
    language: str | None = None
    avg_logprob: float | None = None
    source: str | None = None


@dataclass(kw_only=True)
class DropRecord(Record):
    """``<dataset>/dropped.jsonl``: an item ``build`` (or ``screen``) left out, and why."""

    FILE: ClassVar[str] = "dropped.jsonl"
    STAGE: ClassVar[str] = "build"
    PATH: ClassVar[str] = "train/data/<dataset>/dropped.jsonl"
    WRITTEN_BY: ClassVar[str] = "build (screen's drops included)"
    READ_BY: ClassVar[str] = "you"
    id: str | None
    reason: DropReason
    detail: str = ""
    duplicate_of: str | None = None


@dataclass(kw_only=True)
class ReviewRecord(Record):
    """``review.jsonl``: what a person decided for one clip in `xttsft review` (the latest edit wins).

    ``text`` replaces the transcript (normalised for the language by build); ``decision`` keeps a
    clip the screen or transcribe dropped, or drops a kept one. Neither ever rewrites the
    transcripts or the screen's files."""

    FILE: ClassVar[str] = "review.jsonl"
    STAGE: ClassVar[str] = "review"
    PATH: ClassVar[str] = "train/data/processed/review/review.jsonl"
    WRITTEN_BY: ClassVar[str] = "review"
    READ_BY: ClassVar[str] = "build, run-all"
    id: str
    text: str | None = None
    decision: Literal["keep", "drop"] | None = None
    time: str


@dataclass(kw_only=True)
class DatasetStats(Record):
    """``<dataset>/stats.json``: the dataset ``build`` wrote."""

    FILE: ClassVar[str] = "stats.json"
    STAGE: ClassVar[str] = "build"
    PATH: ClassVar[str] = "train/data/<dataset>/stats.json"
    WRITTEN_BY: ClassVar[str] = "build (last, so a dataset with it is complete)"
    READ_BY: ClassVar[str] = "build (re-runs), train (language), run-all"
    language: str
    max_audio_seconds: float | None = None
    min_audio_seconds: float | None = None
    char_limit: int | None = None
    text_token_limit: int | None = None
    token_check: Literal["bpe", "characters"] = "characters"
    samples: SampleCounts
    minutes: float
    minutes_per_split: dict[str, float] = field(default_factory=dict)
    duration_seconds: dict[str, float] = field(default_factory=dict)
    chars_per_second: dict[str, float] = field(default_factory=dict)
    dropped: dict[str, int] = field(default_factory=dict)
    rejected_by_transcribe: dict[str, int] = field(default_factory=dict)
    screen: ScreenSummary | None = None
    val_fraction: float | None = None
    seed: int | None = None
    warnings: list[str] = field(default_factory=list)
    input_hash: str | None = None
    created: str | None = None


@dataclass(kw_only=True)
class ScreenStats(Record):
    """``screen/stats.json``: the voices ``screen`` found, its thresholds and drops."""

    VERSIONED: ClassVar[bool] = False
    FILE: ClassVar[str] = "screen/stats.json"
    STAGE: ClassVar[str] = "screen --force"
    PATH: ClassVar[str] = "train/data/processed/screen/stats.json"
    WRITTEN_BY: ClassVar[str] = "screen"
    READ_BY: ClassVar[str] = "screen (re-runs), build (its summary), run-all"
    version: int
    clips: int
    kept: int
    kept_minutes: float = 0.0
    dropped: dict[str, int] = field(default_factory=dict)
    dropped_minutes: dict[str, float] = field(default_factory=dict)
    speakers: list[SpeakerRow] = field(default_factory=list)
    thresholds: dict[str, float] = field(default_factory=dict)
    dnsmos_ovrl: dict[str, float] = field(default_factory=dict)
    dnsmos_bak: dict[str, float] = field(default_factory=dict)
    filters: dict[str, bool] = field(default_factory=dict)
    speaker_refs: list[str] = field(default_factory=list)
    speaker_encoder: str | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    input_hash: str | None = None
    created: str | None = None
    recut: int = 0  # mixed clips split at the change of voice, their target part kept
    lost_seconds: float = 0.0  # the target's speech dropped because another voice shared its clip
    lost: list[LostSpan] = field(default_factory=list)  # where (source and time), longest first


@dataclass(kw_only=True)
class RunRecord(Record):
    """``checkpoints/<run>/run.json``: what a training run was trained from."""

    FILE: ClassVar[str] = "run.json"
    STAGE: ClassVar[str] = "train"
    PATH: ClassVar[str] = "train/checkpoints/<run>/run.json"
    WRITTEN_BY: ClassVar[str] = "train"
    READ_BY: ClassVar[str] = "synth, export, eval, run-all"
    base_model: str
    base_dir: str | None = None
    language: str = "en"
    mode: Mode = "lora"
    dataset_dir: str | None = None
    created: str | None = None
    base_identity: dict[str, Any] | None = None
    dataset_split: dict[str, Any] | None = None  # how a single metadata.csv was split: val_fraction, seed
    dataset_fingerprint: dict[str, Any] | None = None  # the clips trained on, per split (a resume compares it)


@dataclass(kw_only=True)
class CheckpointMeta(Record):
    """``checkpoints/<run>/<checkpoint>/meta.json``: written last, so a folder with it is complete."""

    FILE: ClassVar[str] = "meta.json"
    STAGE: ClassVar[str] = "train --resume"
    PATH: ClassVar[str] = "train/checkpoints/<run>/<checkpoint>/meta.json"
    WRITTEN_BY: ClassVar[str] = "train (last, so a folder with it is complete)"
    READ_BY: ClassVar[str] = "train --resume, synth, export, eval"
    epoch: int | None = None  # epoch checkpoints without it: the N of checkpoint_epoch_N
    step: int = 0
    optimizer_step: int | None = None
    batch_in_epoch: int | None = None
    train_loss: float | None = None
    val_loss: float | None = None
    run: str | None = None
    mode: Mode | None = None
    saved: str | None = None


@dataclass(kw_only=True)
class StageRecord(Record):
    """One stage's entry in ``.xttsft-state.json`` (run-all's memory of what ran on what)."""

    FILE: ClassVar[str] = ".xttsft-state.json"
    STAGE: ClassVar[str] = "run-all"
    PATH: ClassVar[str] = "<workdir>/.xttsft-state.json (one entry per stage)"
    WRITTEN_BY: ClassVar[str] = "run-all"
    READ_BY: ClassVar[str] = "run-all"
    fingerprint: str | None = None
    finished: str | None = None
    run: str | None = None  # train: the run it trains (or trained)
    pending: str | None = None  # train: the fingerprint of a run that has not finished yet
    seconds: float | None = None  # train: how long it took
    out: str | None = None  # export, synth: what it wrote
    json: str | None = None  # eval: its eval.json


@dataclass(kw_only=True)
class ExportMarker(Record):
    """``<export>/xttsft_export.json``: what a merged export holds (written last, so the folder is complete)."""

    VERSIONED: ClassVar[bool] = False
    FILE: ClassVar[str] = "xttsft_export.json"
    STAGE: ClassVar[str] = "export --force"
    PATH: ClassVar[str] = "train/exports/<run>/xttsft_export.json"
    WRITTEN_BY: ClassVar[str] = "export"
    READ_BY: ClassVar[str] = "export (re-runs), synth (language, dataset)"
    format: Literal["xtts-v2", "xttsft-adapter"]
    run: str
    checkpoint: str
    mode: Mode
    language: str
    base_model: str
    base_identity: dict[str, Any]
    dataset_dir: str
    speaker: str
    references: list[str]  # the reference wavs beside it
    source: ExportSource
    created: str
    adapter_target: str | None = None
    files: list[str] | None = None  # what the export wrote (exports before this field: None)


@dataclass(kw_only=True)
class AdapterMarker(ExportMarker):
    """``<export>/xttsft_adapter.json``: what an adapter-only export holds, and the base model it needs."""

    FILE: ClassVar[str] = "xttsft_adapter.json"
    PATH: ClassVar[str] = "train/exports/<run>-adapter/xttsft_adapter.json"
    WRITTEN_BY: ClassVar[str] = "export --adapter-only"
    READ_BY: ClassVar[str] = "export (re-runs), synth (base model, language)"


#: Every record, by the file it describes.
RECORDS: dict[str, type[Record]] = {
    cls.FILE: cls
    for cls in (
        ClipRecord,
        SourceRecord,
        ScreenRecord,
        TranscriptRecord,
        ReviewRecord,
        SampleRecord,
        DropRecord,
        DatasetStats,
        ScreenStats,
        RunRecord,
        CheckpointMeta,
        StageRecord,
        ExportMarker,
        AdapterMarker,
    )
}


# ------------------------------------------------------------------ reading and writing


def read_records(path: Path, cls: type[R]) -> list[R]:
    """The rows of a JSONL file as ``cls`` instances (a missing file reads as empty)."""
    path = Path(path)
    if not path.exists():
        return []
    rows = []
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        at = path.read_bytes()[: exc.start].count(b"\n") + 1
        raise cls._error(f"{path}:{at}", None, "not UTF-8 text") from None
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
        except json.JSONDecodeError as exc:
            raise cls._error(f"{path}:{n}", None, f"not JSON ({exc.msg})") from None
        rows.append(cls.from_dict(data, f"{path}:{n}"))
    return rows


def _checked(cls: type[R], row: R | dict[str, Any], where: str) -> dict[str, Any]:
    """A row about to be written, checked (an instance is checked too: dataclasses do not check types)."""
    data = row.to_dict() if isinstance(row, Record) else row
    return cls.from_dict(data, where).to_dict()


def records_text(path: Path, cls: type[R], rows: Iterable[R | dict[str, Any]]) -> str:
    """The JSONL text :func:`write_records` writes (to compare with what is on disk)."""
    return "".join(
        json.dumps(_checked(cls, r, f"{path} (row {k} being written)"), ensure_ascii=False, default=str) + "\n"
        for k, r in enumerate(rows, 1)
    )


def write_records(path: Path, cls: type[R], rows: Iterable[R | dict[str, Any]]) -> None:
    """Check every row against ``cls`` and write them as JSONL, atomically."""
    atomic_write_text(path, records_text(path, cls, rows))


def read_record(path: Path, cls: type[R]) -> R:
    """A JSON file as a ``cls`` instance. Raises :class:`RecordError` when it is missing or malformed."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise cls._error(str(path), None, "missing") from None
    except (OSError, ValueError) as exc:
        raise cls._error(str(path), None, f"not readable JSON ({exc})") from None
    return cls.from_dict(data, str(path))


def write_record(path: Path, cls: type[R], data: R | dict[str, Any]) -> None:
    """Check ``data`` against ``cls`` and write it as indented JSON, atomically."""
    atomic_write_json(path, _checked(cls, data, f"{path} (being written)"))


def _raw(path: Path) -> Any:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def read_dataset_stats(folder: Path) -> DatasetStats | None:
    """``folder/stats.json`` when ``xttsft build`` wrote it (it has an ``input_hash``); ``None`` when it is
    missing, unreadable, another program's, or no longer matches its record (a hand-edited file: the
    dataset is then treated as one made elsewhere, and rebuilt by ``build``)."""
    data = _raw(Path(folder) / DatasetStats.FILE)
    if not isinstance(data, dict) or "input_hash" not in data:
        return None
    try:
        return DatasetStats.from_dict(data, str(Path(folder) / DatasetStats.FILE))
    except RecordError:
        return None


def stats_language(folder: Path) -> str | None:
    """The ``language`` of a dataset's ``stats.json``, build's or another program's (datasets made
    elsewhere may have a stats.json of their own: only its language is read)."""
    data = _raw(Path(folder) / DatasetStats.FILE)
    lang = data.get("language") if isinstance(data, dict) else None
    return str(lang) if lang else None


def read_marker(folder: Path, cls: type[ExportMarker]) -> ExportMarker | None:
    """The export marker ``cls.FILE`` in ``folder``; ``None`` when there is none or it is not one an export
    wrote (an export folder is also read by hand-made copies and other tools)."""
    data = _raw(Path(folder) / cls.FILE)
    try:
        return cls.from_dict(data, str(Path(folder) / cls.FILE)) if data is not None else None
    except RecordError:
        return None
