"""The files between stages: every record round-trips, and a foreign row is named by file, line and field."""

from __future__ import annotations

import dataclasses
import json
import typing
from pathlib import Path

import pytest

from xttsft.records import RECORDS, Record, RecordError, read_record, read_records, write_record, write_records

SAMPLE_VALUES = {str: "x", float: 1.5, int: 2, bool: True}


def _example(cls: type[Record]) -> dict:
    """A row with every field set to a value of its declared type."""
    hints = typing.get_type_hints(cls)
    row = {}
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if typing.get_origin(tp) in (list, dict):
            base = typing.get_origin(tp)
        else:  # X | None: a value of X
            args = [a for a in typing.get_args(tp) if a is not type(None)] or [tp]
            base = typing.get_origin(args[0]) or args[0]
        row[f.name] = {list: [], dict: {}}.get(base, SAMPLE_VALUES.get(base, "x"))
    return row


@pytest.mark.parametrize("name", sorted(RECORDS))
def test_every_record_round_trips_and_rejects_a_bad_row(tmp_path: Path, name: str) -> None:
    cls = RECORDS[name]
    row = _example(cls)
    jsonl, single = tmp_path / "rows.jsonl", tmp_path / "one.json"
    write_records(jsonl, cls, [row, row])
    back = read_records(jsonl, cls)
    assert back == [{"v": cls.VERSION, **row}] * 2
    write_record(single, cls, row)
    assert read_record(single, cls) == {"v": cls.VERSION, **row}
    assert cls.from_dict(row).to_dict() == {"v": cls.VERSION, **row}

    required = [f.name for f in dataclasses.fields(cls)
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if required:  # a hand-edited row without a field: the file, the line and the field
        bad = {k: v for k, v in row.items() if k != required[0]}
        jsonl.write_text(json.dumps(row) + "\n" + json.dumps(bad) + "\n")
        with pytest.raises(RecordError, match=rf"rows.jsonl:2: field '{required[0]}': missing"):
            read_records(jsonl, cls)
    jsonl.write_text(json.dumps({**row, "v": cls.VERSION + 1}) + "\n")  # another version
    with pytest.raises(RecordError, match=rf"rows.jsonl:1: version {cls.VERSION + 1} of {cls.FILE}"):
        read_records(jsonl, cls)


def test_mistyped_field_and_broken_json_are_named(tmp_path: Path) -> None:
    from xttsft.records import ClipRecord

    f = tmp_path / "manifest.jsonl"
    good = {"id": "a", "wav": "a.wav", "source": "s.mp3", "source_sha256": "0" * 64, "start": 0.0, "end": 5.0,
            "duration": 5.0}
    f.write_text(json.dumps(good) + "\n" + json.dumps({**good, "start": "zero"}) + "\n")
    with pytest.raises(RecordError, match=r"manifest.jsonl:2: field 'start': expected a number, got 'zero'") as exc:
        read_records(f, ClipRecord)
    assert "xttsft segment --force" in (exc.value.hint or "")
    f.write_text(json.dumps(good) + "\n{not json\n")
    with pytest.raises(RecordError, match=r"manifest.jsonl:2: not JSON"):
        read_records(f, ClipRecord)
    f.write_text(json.dumps({k: v for k, v in good.items()}) + "\n")  # no "v": written before versions
    assert read_records(f, ClipRecord)[0]["v"] == 1


def test_cli_hand_edited_manifest_gets_one_clear_message(cli, workspace) -> None:
    from xttsft.records import ClipRecord

    workspace.ensure()
    write_records(workspace.segments_manifest, ClipRecord, [
        {"id": "a", "wav": "a.wav", "source": "s.mp3", "source_sha256": "0" * 64, "start": 0.0, "end": 5.0,
         "duration": 5.0}])
    text = workspace.segments_manifest.read_text().replace('"duration": 5.0', '"duration": "five"')
    workspace.segments_manifest.write_text(text)
    res = cli("transcribe", "--language", "en")
    out = " ".join(res.output.split())
    assert res.exit_code == 1 and "manifest.jsonl:1: field 'duration'" in out and "Traceback" not in out
