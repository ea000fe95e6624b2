"""The files between stages: every record round-trips, and a foreign row is named by file, line and field."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import typing
from pathlib import Path

import pytest

from xttsft.records import (
    RECORDS,
    Part,
    Record,
    RecordError,
    read_record,
    read_records,
    write_record,
    write_records,
)

SAMPLE_VALUES = {str: "x", float: 1.5, int: 2, bool: True}
ROOT = Path(__file__).resolve().parents[1]


def _example_value(tp: typing.Any) -> typing.Any:
    origin = typing.get_origin(tp)
    if origin is typing.Literal:
        return typing.get_args(tp)[0]
    if isinstance(tp, type) and issubclass(tp, Part):
        return _example(tp)
    if origin in (list, dict) or tp in (list, dict):
        return {list: [], dict: {}}[origin or tp]
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if args:  # X | None: a value of X
        return _example_value(args[0])
    return SAMPLE_VALUES.get(tp, "x")


def _example(cls: type[Part]) -> dict:
    """A row with every field set to a value of its declared type."""
    hints = typing.get_type_hints(cls)
    return {f.name: _example_value(hints[f.name]) for f in dataclasses.fields(cls)}


def _stamped(cls: type[Record], row: dict) -> dict:
    return {"v": cls.VERSION, **row} if cls.VERSIONED else row


@pytest.mark.parametrize("name", sorted(RECORDS))
def test_every_record_round_trips_and_rejects_a_bad_row(tmp_path: Path, name: str) -> None:
    cls = RECORDS[name]
    row = _example(cls)
    jsonl, single = tmp_path / "rows.jsonl", tmp_path / "one.json"
    write_records(jsonl, cls, [row, cls.from_dict(row)])  # writers take dicts and instances alike
    back = read_records(jsonl, cls)
    assert all(type(r) is cls for r in back)  # readers return instances
    assert [r.to_dict() for r in back] == [_stamped(cls, row)] * 2
    write_record(single, cls, row)
    assert read_record(single, cls) == cls.from_dict(row)
    assert cls.from_dict(row).to_dict() == _stamped(cls, row)

    required = [
        f.name
        for f in dataclasses.fields(cls)
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    if required:  # a hand-edited row without a field: the file, the line and the field
        bad = {k: v for k, v in row.items() if k != required[0]}
        jsonl.write_text(json.dumps(row) + "\n" + json.dumps(bad) + "\n")
        with pytest.raises(RecordError, match=rf"rows.jsonl:2: field '{required[0]}': missing"):
            read_records(jsonl, cls)
    # a field the record does not declare is refused, not carried along
    jsonl.write_text(json.dumps(row) + "\n" + json.dumps({**row, "colour": "blue"}) + "\n")
    with pytest.raises(RecordError, match=r"rows.jsonl:2: field 'colour': not a field of this file"):
        read_records(jsonl, cls)
    if cls.VERSIONED:
        jsonl.write_text(json.dumps({**row, "v": cls.VERSION + 1}) + "\n")  # another version
        with pytest.raises(RecordError, match=rf"rows.jsonl:1: version {cls.VERSION + 1} of {cls.FILE}"):
            read_records(jsonl, cls)


def test_mistyped_field_and_broken_json_are_named(tmp_path: Path) -> None:
    from xttsft.records import ClipRecord

    f = tmp_path / "manifest.jsonl"
    good = {
        "id": "a",
        "wav": "a.wav",
        "source": "s.mp3",
        "source_sha256": "0" * 64,
        "start": 0.0,
        "end": 5.0,
        "duration": 5.0,
    }
    f.write_text(json.dumps(good) + "\n" + json.dumps({**good, "start": "zero"}) + "\n")
    with pytest.raises(RecordError, match=r"manifest.jsonl:2: field 'start': expected a number, got 'zero'") as exc:
        read_records(f, ClipRecord)
    assert "xttsft segment --force" in (exc.value.hint or "")
    f.write_text(json.dumps(good) + "\n{not json\n")
    with pytest.raises(RecordError, match=r"manifest.jsonl:2: not JSON"):
        read_records(f, ClipRecord)
    f.write_text(json.dumps({k: v for k, v in good.items()}) + "\n")  # no "v": written before versions
    assert read_records(f, ClipRecord)[0].to_dict()["v"] == 1


def test_a_misspelt_optional_field_is_refused_with_file_line_and_field(tmp_path: Path) -> None:
    """Before, `check()` kept undeclared keys: a misspelt `gain_bd` passed and `gain_db` was simply missing."""
    from xttsft.records import ClipRecord

    f = tmp_path / "manifest.jsonl"
    good = {
        "id": "a",
        "wav": "a.wav",
        "source": "s.mp3",
        "source_sha256": "0" * 64,
        "start": 0.0,
        "end": 5.0,
        "duration": 5.0,
    }
    f.write_text(json.dumps(good) + "\n" + json.dumps({**good, "gain_bd": 3.0}) + "\n")
    with pytest.raises(RecordError) as exc:
        read_records(f, ClipRecord)
    assert exc.value.message == f"{f}:2: field 'gain_bd': not a field of this file (misspelt?) (manifest.jsonl)."
    assert "xttsft segment --force" in (exc.value.hint or "")
    with pytest.raises(RecordError, match=r"field 'gain_bd'"):  # and a writer refuses it too
        write_records(f, ClipRecord, [{**good, "gain_bd": 3.0}])


def test_nested_parts_and_closed_sets_are_checked_by_path(tmp_path: Path) -> None:
    from xttsft.records import TranscriptRecord, Word

    f = tmp_path / "transcripts.jsonl"
    row = {
        "id": "a",
        "wav": "a.wav",
        "text": "hi",
        "language": "en",
        "trim_start": 0.0,
        "trim_end": 1.0,
        "status": "ok",
        "words": [{"word": " hi", "start": 0.1, "end": 0.4, "probability": 0.9}],
    }
    f.write_text(json.dumps(row) + "\n")
    back = read_records(f, TranscriptRecord)[0]
    assert back.words == [Word(word=" hi", start=0.1, end=0.4, probability=0.9)] and back.status == "ok"
    f.write_text(json.dumps({**row, "status": "fine"}) + "\n")
    with pytest.raises(RecordError, match=r"transcripts.jsonl:1: field 'status': expected 'ok' or 'rejected'"):
        read_records(f, TranscriptRecord)
    f.write_text(json.dumps({**row, "words": [{"word": "hi", "start": "0", "end": 0.4, "probability": 0.9}]}) + "\n")
    with pytest.raises(RecordError, match=r"field 'words\[0\].start': expected a number"):
        read_records(f, TranscriptRecord)
    f.write_text(json.dumps({**row, "words": [{"word": "hi", "start": 0, "end": 0.4, "prob": 0.9}]}) + "\n")
    with pytest.raises(RecordError, match=r"field 'words\[0\].prob': not a field"):
        read_records(f, TranscriptRecord)


def test_dataset_stats_round_trip_and_foreign_stats(tmp_path: Path) -> None:
    from xttsft.records import DatasetStats, SampleCounts, read_dataset_stats, stats_language

    stats = DatasetStats(
        language="pt",
        samples=SampleCounts(train=9, val=1, total=10),
        minutes=2.5,
        dropped={"too_long": 2},
        warnings=["few"],
        input_hash="abc",
        token_check="bpe",
    )
    write_record(tmp_path / "stats.json", DatasetStats, stats)
    assert read_dataset_stats(tmp_path) == stats
    assert read_record(tmp_path / "stats.json", DatasetStats).samples.total == 10
    # a dataset made elsewhere: its stats.json is its own; only its language is read
    (tmp_path / "stats.json").write_text(json.dumps({"language": "en", "samples": {"train": 3, "val": 1}}))
    assert read_dataset_stats(tmp_path) is None and stats_language(tmp_path) == "en"
    assert read_dataset_stats(tmp_path / "nowhere") is None and stats_language(tmp_path / "nowhere") is None


def test_screen_stats_and_export_markers_keep_their_shape(tmp_path: Path) -> None:
    """Files that never had a "v" (screen's stats.json, the export markers) are written as before."""
    from xttsft.records import AdapterMarker, ExportMarker, ExportSource, ScreenStats, SpeakerRow, read_marker

    stats = ScreenStats(
        version=1, clips=3, kept=2, speakers=[SpeakerRow(label="S1", clips=3, minutes=0.5, kept=2)], input_hash="h"
    )
    write_record(tmp_path / "stats.json", ScreenStats, stats)
    on_disk = json.loads((tmp_path / "stats.json").read_text())
    assert "v" not in on_disk and on_disk["speakers"][0]["label"] == "S1"
    assert read_record(tmp_path / "stats.json", ScreenStats) == stats

    marker = AdapterMarker(
        format="xttsft-adapter",
        run="r",
        checkpoint="best_model",
        mode="lora",
        language="pt",
        base_model="coqui/XTTS-v2",
        base_identity={},
        dataset_dir="ds",
        speaker="r",
        references=["reference.wav"],
        source=ExportSource(checkpoint="/x", step=3),
        created="now",
        files=["xttsft_adapter.json"],
    )
    write_record(tmp_path / AdapterMarker.FILE, AdapterMarker, marker)
    assert "v" not in json.loads((tmp_path / AdapterMarker.FILE).read_text())
    assert read_marker(tmp_path, AdapterMarker) == marker
    assert read_marker(tmp_path, ExportMarker) is None  # no merged export here
    (tmp_path / AdapterMarker.FILE).write_text("{broken")
    assert read_marker(tmp_path, AdapterMarker) is None


def test_formats_doc_is_generated_from_the_records() -> None:
    spec = importlib.util.spec_from_file_location("formats_doc", ROOT / "scripts" / "formats_doc.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert (ROOT / "docs" / "formats.md").read_text(encoding="utf-8") == module.render(), (
        "docs/formats.md is stale: run python scripts/formats_doc.py"
    )


def test_cli_hand_edited_manifest_gets_one_clear_message(cli, workspace) -> None:
    from xttsft.records import ClipRecord

    workspace.ensure()
    write_records(
        workspace.segments_manifest,
        ClipRecord,
        [
            {
                "id": "a",
                "wav": "a.wav",
                "source": "s.mp3",
                "source_sha256": "0" * 64,
                "start": 0.0,
                "end": 5.0,
                "duration": 5.0,
            }
        ],
    )
    text = workspace.segments_manifest.read_text().replace('"duration": 5.0', '"duration": "five"')
    workspace.segments_manifest.write_text(text)
    res = cli("transcribe", "--language", "en")
    out = " ".join(res.output.split())
    assert res.exit_code == 1 and "manifest.jsonl:1: field 'duration'" in out and "Traceback" not in out


def test_cli_undeclared_field_gets_one_clear_message(cli, workspace) -> None:
    from xttsft.records import ClipRecord

    workspace.ensure()
    write_records(
        workspace.segments_manifest,
        ClipRecord,
        [
            {
                "id": "a",
                "wav": "a.wav",
                "source": "s.mp3",
                "source_sha256": "0" * 64,
                "start": 0.0,
                "end": 5.0,
                "duration": 5.0,
            }
        ],
    )
    text = workspace.segments_manifest.read_text().replace('"duration": 5.0', '"duraton": 5.0, "duration": 5.0')
    workspace.segments_manifest.write_text(text)
    res = cli("transcribe", "--language", "en")
    out = " ".join(res.output.split())
    assert res.exit_code == 1 and "manifest.jsonl:1: field 'duraton': not a field" in out and "Traceback" not in out


def test_run_all_summary_is_read_from_the_records(workspace) -> None:
    """summarize reads every file through its record and hands the CLI typed parts (no nested dicts to dig)."""
    from xttsft.paths import RunPaths
    from xttsft.pipeline import RunSummary, _Records, summarize
    from xttsft.records import (
        CheckpointMeta,
        ClipRecord,
        DatasetStats,
        SampleCounts,
        ScreenStats,
        SourceRecord,
        SpeakerRow,
        TranscriptRecord,
    )
    from xttsft.settings import load_settings

    ws = workspace.ensure()
    write_records(
        ws.segment_sources_file,
        SourceRecord,
        [
            SourceRecord(
                source="a.wav", source_sha256="0", settings_hash="h", status="segmented", segments=["a_1", "a_2"]
            ),
            SourceRecord(source="b.wav", source_sha256="1", settings_hash="h", status="failed", reason="no speech"),
        ],
    )
    write_records(
        ws.segments_manifest,
        ClipRecord,
        [
            ClipRecord(
                id=f"a_{i}", wav=f"a_{i}.wav", source="a.wav", source_sha256="0", start=0.0, end=30.0, duration=30.0
            )
            for i in (1, 2)
        ],
    )
    write_records(
        ws.transcripts_file,
        TranscriptRecord,
        [
            TranscriptRecord(
                id="a_2",
                wav="a_2.wav",
                text="",
                language="en",
                trim_start=0.0,
                trim_end=30.0,
                status="rejected",
                reason="empty_text",
            )
        ],
    )
    write_record(
        ws.screen_stats,
        ScreenStats,
        ScreenStats(
            version=1, clips=2, kept=2, speakers=[SpeakerRow(label="S1", clips=2, minutes=1.0, kept=2, target=True)]
        ),
    )
    write_record(
        ws.dataset_dir / "stats.json",
        DatasetStats,
        DatasetStats(
            language="en",
            samples=SampleCounts(train=1, val=0, total=1),
            minutes=0.5,
            dropped={"rejected": 1},
            input_hash="x",
        ),
    )
    states = _Records(ws.state_file)
    states.save("train", "fp", run="r1", seconds=90.0)
    write_record(
        RunPaths.meta(RunPaths(ws.run_dir("r1")).best_model),
        CheckpointMeta,
        CheckpointMeta(epoch=3, step=30, val_loss=1.25),
    )

    s = summarize(load_settings(ws, environ={})[0], ws)
    assert isinstance(s, RunSummary)
    assert (s.sources.files, s.sources.failed, s.sources.clips, s.sources.clip_minutes) == (2, 1, 2, 1.0)
    assert s.screen is not None and s.screen.speakers[0].target and s.screen.map is None
    assert s.dataset.samples == SampleCounts(train=1, val=0, total=1) and s.dataset.language == "en"
    assert s.dataset.rejected_minutes_by_transcribe == {"empty_text": 0.5}
    assert s.train is not None and (s.train.run, s.train.best_epoch, s.train.best_val_loss, s.train.seconds) == (
        "r1",
        3,
        1.25,
        90.0,
    )
    assert json.loads(json.dumps(s.to_dict()))["dataset"]["samples"]["train"] == 1
    # the stage memory round-trips through StageRecord; a field it does not declare makes it start afresh
    assert _Records(ws.state_file).of("train").run == "r1"
    raw = json.loads(ws.state_file.read_text())
    raw["train"]["runn"] = "r2"
    ws.state_file.write_text(json.dumps(raw))
    assert _Records(ws.state_file).of("train").run is None
