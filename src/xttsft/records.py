"""The files that pass between stages, declared once: their fields, types and version.

Every stage writes these files with :func:`write_records` / :func:`write_record` and reads them
with :func:`read_records` / :func:`read_record`, which check each row against its record class:
a row of another version, a missing or mistyped field, or a line that is not JSON gets a
:class:`RecordError` naming the file, the line and the field (a foreign or hand-edited file
never gets half-read). Rows are written with their version (``"v"``); rows written before
versions existed read as version 1. Fields a record does not declare are kept as they are.

The classes are dataclasses, so code can also hold a row as an object
(``ClipRecord.from_dict(row, where)``); the readers hand plain dicts to the stages.
``docs/formats.md`` describes every file.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from xttsft.errors import DatasetError

__all__ = [
    "RecordError",
    "Record",
    "ClipRecord",
    "SourceRecord",
    "ScreenRecord",
    "TranscriptRecord",
    "SampleRecord",
    "DropRecord",
    "DatasetStats",
    "RunRecord",
    "CheckpointMeta",
    "StageRecord",
    "RECORDS",
    "read_records",
    "write_records",
    "read_record",
    "write_record",
]


class RecordError(DatasetError):
    """A stage file that does not match its declared format."""


@dataclass
class Record:
    """Base of every record: a version and the check of a dict against the fields."""

    VERSION: ClassVar[int] = 1
    FILE: ClassVar[str] = ""
    STAGE: ClassVar[str] = ""  # the command that writes it (for the hint)

    @classmethod
    def check(cls, data: Any, where: str) -> dict[str, Any]:
        """``data`` checked against the declared fields; returns it with the version set."""
        if not isinstance(data, dict):
            raise cls._error(where, None, f"expected a JSON object, got {type(data).__name__}")
        version = data.get("v", 1)
        if type(version) is not int or version != cls.VERSION:
            raise RecordError(
                f"{where}: version {version!r} of {cls.FILE}, but this xttsft reads version {cls.VERSION}.",
                hint=f"It was written by another version of xttsft: run `xttsft {cls.STAGE}` again to rewrite it.",
            )
        hints = _hints(cls)
        for f in dataclasses.fields(cls):
            required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
            if f.name not in data:
                if required:
                    raise cls._error(where, f.name, "missing")
                continue
            if not _fits(data[f.name], hints[f.name]):
                raise cls._error(where, f.name, f"expected {_name(hints[f.name])}, got {data[f.name]!r:.60}")
        return {"v": cls.VERSION, **{k: v for k, v in data.items() if k != "v"}}

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "") -> Record:
        data = cls.check(data, where or cls.FILE)
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

    def to_dict(self) -> dict[str, Any]:
        return {"v": self.VERSION, **dataclasses.asdict(self)}

    @classmethod
    def _error(cls, where: str, name: str | None, what: str) -> RecordError:
        return RecordError(
            f"{where}: " + (f"field {name!r}: " if name else "") + what + f" ({cls.FILE}).",
            hint=f"The file was edited by hand or written by another program; run `xttsft {cls.STAGE}` again "
            "to rewrite it.",
        )


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _fits(value: Any, tp: Any) -> bool:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return any(_fits(value, t) for t in typing.get_args(tp))
    if tp is type(None):
        return value is None
    if tp is Any:
        return True
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if origin in (list, tuple):
        return isinstance(value, list)
    if origin is dict or tp is dict:
        return isinstance(value, dict)
    return isinstance(value, tp)


def _name(tp: Any) -> str:
    args = typing.get_args(tp)
    if args and typing.get_origin(tp) not in (list, dict, tuple):
        return " or ".join(_name(a) for a in args)
    if tp is type(None):
        return "null"
    origin = typing.get_origin(tp)
    return {list: "a list", dict: "an object", str: "text", float: "a number", int: "a whole number",
            bool: "true or false"}.get(origin or tp, str(tp))


# ------------------------------------------------------------------ the records


@dataclass
class ClipRecord(Record):
    """``segments/manifest.jsonl``: one clip cut by ``segment``."""

    FILE: ClassVar[str] = "manifest.jsonl"
    STAGE: ClassVar[str] = "segment --force"
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


@dataclass
class SourceRecord(Record):
    """``segments/sources.jsonl``: what ``segment`` did with one source file."""

    FILE: ClassVar[str] = "sources.jsonl"
    STAGE: ClassVar[str] = "segment --force"
    source: str
    source_sha256: str
    settings_hash: str
    status: str
    stem: str | None = None
    reason: str | None = None
    notes: list[str] = field(default_factory=list)
    duration: float | None = None
    segments: list[str] = field(default_factory=list)
    dropped: int = 0
    date: str | None = None


@dataclass
class ScreenRecord(Record):
    """``screen/screen.jsonl``: the screen's decision about one clip."""

    FILE: ClassVar[str] = "screen.jsonl"
    STAGE: ClassVar[str] = "screen --force"
    id: str
    status: str  # kept | dropped
    reason: str | None = None
    detail: str = ""
    wav: str | None = None
    source: str | None = None
    source_sha256: str | None = None
    start: float | None = None
    end: float | None = None
    duration: float | None = None
    speaker: str | None = None
    similarity: float | None = None
    window_min_similarity: float | None = None
    dnsmos: dict[str, float] | None = None
    duplicate_of: str | None = None


@dataclass
class TranscriptRecord(Record):
    """``transcriptions/transcripts.jsonl``: Whisper's output for one clip and the verdict."""

    FILE: ClassVar[str] = "transcripts.jsonl"
    STAGE: ClassVar[str] = "transcribe"
    id: str
    wav: str
    text: str
    language: str
    status: str  # ok | rejected
    trim_start: float
    trim_end: float
    duration: float | None = None
    reason: str | None = None
    language_probability: float | None = None
    detected_language: str | None = None
    detected_probability: float | None = None
    avg_logprob: float = 0.0
    no_speech_prob: float = 0.0
    compression_ratio: float = 0.0
    window_clips: int = 1
    words: list[dict[str, Any]] = field(default_factory=list)
    speech: list[float] | None = None
    model: str | None = None
    requested_language: str | None = None
    key: str | None = None


@dataclass
class SampleRecord(Record):
    """``<dataset>/samples.jsonl``: one sample ``build`` kept."""

    FILE: ClassVar[str] = "samples.jsonl"
    STAGE: ClassVar[str] = "build"
    id: str
    wav: str
    duration: float
    split: str  # train | val
    text: str = ""
    language: str | None = None
    avg_logprob: float | None = None
    source: str | None = None


@dataclass
class DropRecord(Record):
    """``<dataset>/dropped.jsonl``: an item ``build`` (or ``screen``) left out, and why."""

    FILE: ClassVar[str] = "dropped.jsonl"
    STAGE: ClassVar[str] = "build"
    id: str | None
    reason: str
    detail: str = ""
    duplicate_of: str | None = None


@dataclass
class DatasetStats(Record):
    """``<dataset>/stats.json``: the dataset ``build`` wrote (the fields other stages read)."""

    FILE: ClassVar[str] = "stats.json"
    STAGE: ClassVar[str] = "build"
    language: str
    samples: dict[str, int]
    minutes: float
    max_audio_seconds: float | None = None
    dropped: dict[str, int] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    input_hash: str | None = None
    token_check: str | None = None


@dataclass
class RunRecord(Record):
    """``checkpoints/<run>/run.json``: what a training run was trained from."""

    FILE: ClassVar[str] = "run.json"
    STAGE: ClassVar[str] = "train"
    base_model: str
    language: str = "en"
    mode: str = "lora"  # lora | full
    base_dir: str | None = None
    dataset_dir: str | None = None
    created: str | None = None
    base_identity: dict[str, Any] | None = None
    dataset_split: dict[str, Any] | None = None


@dataclass
class CheckpointMeta(Record):
    """``checkpoints/<run>/<checkpoint>/meta.json``: written last, so a folder with it is complete."""

    FILE: ClassVar[str] = "meta.json"
    STAGE: ClassVar[str] = "train --resume"
    epoch: int
    step: int
    mode: str | None = None
    optimizer_step: int | None = None
    batch_in_epoch: int | None = None
    train_loss: float | None = None
    val_loss: float | None = None
    run: str | None = None
    saved: str | None = None


@dataclass
class StageRecord(Record):
    """One stage's entry in ``.xttsft-state.json`` (run-all's memory of what ran on what)."""

    FILE: ClassVar[str] = ".xttsft-state.json"
    STAGE: ClassVar[str] = "run-all"
    fingerprint: str | None = None
    finished: str | None = None
    run: str | None = None
    pending: str | None = None


#: Every record, by the file it describes.
RECORDS: dict[str, type[Record]] = {
    cls.FILE: cls for cls in (ClipRecord, SourceRecord, ScreenRecord, TranscriptRecord, SampleRecord, DropRecord,
                              DatasetStats, RunRecord, CheckpointMeta, StageRecord)
}


# ------------------------------------------------------------------ reading and writing


def read_records(path: Path, cls: type[Record]) -> list[dict[str, Any]]:
    """The rows of a JSONL file, each checked against ``cls`` (a missing file reads as empty)."""
    path = Path(path)
    if not path.exists():
        return []
    rows = []
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        line = path.read_bytes()[: exc.start].count(b"\n") + 1
        raise cls._error(f"{path}:{line}", None, "not UTF-8 text") from None
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
        except ValueError as exc:
            raise cls._error(f"{path}:{n}", None, f"not JSON ({exc.msg})") from None
        rows.append(cls.check(data, f"{path}:{n}"))
    return rows


def write_records(path: Path, cls: type[Record], rows: typing.Iterable[dict[str, Any]]) -> None:
    """Check every row against ``cls`` and write them as JSONL, atomically."""
    from xttsft.io import write_jsonl

    write_jsonl(path, [cls.check(r, f"{path} (row {k} being written)") for k, r in enumerate(rows, 1)])


def read_record(path: Path, cls: type[Record]) -> dict[str, Any]:
    """A JSON file checked against ``cls``. Raises :class:`RecordError` when it is missing or malformed."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise cls._error(str(path), None, "missing") from None
    except (OSError, ValueError) as exc:
        raise cls._error(str(path), None, f"not readable JSON ({exc})") from None
    return cls.check(data, str(path))


def write_record(path: Path, cls: type[Record], data: dict[str, Any]) -> None:
    """Check ``data`` against ``cls`` and write it as indented JSON, atomically."""
    from xttsft.io import atomic_write_json

    atomic_write_json(path, cls.check(data, f"{path} (being written)"))
