"""The pt-BR path for real (issue 13): the bundled multilingual Whisper base on espeak-ng pt-br and
en speech made here, language checks per clip, `auto` detection and its refusal when unsure."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from xttsft.io import read_jsonl
from xttsft.paths import Workspace
from xttsft.settings import TranscribeSettings

PT = [
    "O trem da manhã atrasou de novo, então fui andando pela beira do rio.",
    "Minha avó cuidou de uma horta atrás de casa durante cinquenta anos.",
    "Aprender uma língua nova leva tempo e um pouco de coragem.",
    "A biblioteca da esquina abre às nove horas da manhã.",
]
EN = [
    "The museum will be closed on Monday because the workers are repairing the roof.",
    "Please remember to turn off the lights and lock the back door before you leave tonight.",
    "She opened the old wooden box and found a bundle of letters tied with a faded blue ribbon.",
    "The baker wakes up early every morning to prepare fresh bread for the whole village.",
]
DE = [
    "Das Museum bleibt am Montag geschlossen, weil die Arbeiter das Dach reparieren.",
    "Bitte denk daran, das Licht auszuschalten und die Hintertür abzuschließen.",
    "Sie öffnete die alte Holzkiste und fand einen Stapel Briefe mit einem blauen Band.",
    "Der Bäcker steht jeden Morgen früh auf, um frisches Brot für das ganze Dorf zu backen.",
]


@pytest.fixture(scope="module")
def base():
    from xttsft.data.transcribe import load_whisper

    return load_whisper("bundled-base", device="cpu", compute_type="int8", cpu_threads=2)


def _clips(ws: Workspace, speak, items: list[tuple[str, str]], source: str) -> list[str]:
    """Write ``(voice, text)`` clips of one source into the segments folder and its manifest."""
    import soundfile as sf

    ws.ensure()
    rows, ids = [], []
    for i, (voice, text) in enumerate(items):
        cid = f"{Path(source).stem}_{i:04d}"
        wav = speak(text, ws.segments_dir / f"{cid}.wav", voice=voice, rate=150)
        dur = sf.info(str(wav)).duration
        rows.append(
            {
                "id": cid,
                "wav": f"{cid}.wav",
                "source": source,
                "source_sha256": "0" * 64,
                "start": 10.0 * i,
                "end": 10.0 * i + dur,
                "duration": dur,
                "sample_rate": 22050,
                "peak_dbfs": -1.0,
                "loudness_dbfs": -20.0,
                "flags": [],
            }
        )
        ids.append(cid)
    with ws.segments_manifest.open("a", encoding="utf-8") as fh:
        fh.write("".join(json.dumps(r) + "\n" for r in rows))
    return ids


def _settings(language: str) -> TranscribeSettings:
    # the demo's settings for espeak's robotic pt-br (pipeline.demo_settings)
    return TranscribeSettings(
        model="bundled-base",
        language=language,
        device="cpu",
        compute_type="int8",
        batch_size=4,
        beam_size=5,
        min_avg_logprob=-1.5,
    )


def test_the_bundled_base_is_rebuilt_checked_and_reused(tmp_path: Path) -> None:
    from xttsft.bundled_whisper import BASE_MODEL_BIN_SIZE, multilingual_base_path

    folder = multilingual_base_path(tmp_path)
    assert (folder / "model.bin").stat().st_size == BASE_MODEL_BIN_SIZE
    assert {p.name for p in folder.iterdir()} >= {"config.json", "tokenizer.json", "vocabulary.txt", "model.bin"}
    mtime = (folder / "model.bin").stat().st_mtime_ns
    assert multilingual_base_path(tmp_path) == folder and (folder / "model.bin").stat().st_mtime_ns == mtime
    with open(folder / "model.bin", "r+b") as fh:  # a damaged copy is rebuilt, not used
        fh.truncate(1000)
    multilingual_base_path(tmp_path)
    assert (folder / "model.bin").stat().st_size == BASE_MODEL_BIN_SIZE


def test_pt_run_rejects_the_english_clips_of_a_mixed_source(tmp_path: Path, speak, base) -> None:
    from xttsft.data.transcribe import normalize_words, transcribe_segments

    ws = Workspace(tmp_path / "ws")
    items = [("pt-br", PT[0]), ("en-us", EN[0]), ("pt-br", PT[1]), ("pt-br", PT[2]), ("en-us", EN[1]), ("pt-br", PT[3])]
    ids = _clips(ws, speak, items, "train/data/raw/entrevista.wav")
    res = transcribe_segments(_settings("pt"), ws, model=base)
    rows = {r["id"]: r for r in read_jsonl(ws.transcripts_file)}
    english = [ids[1], ids[4]]
    assert all(rows[i]["reason"] == "wrong_language" and rows[i]["detected_language"] == "en" for i in english)
    assert res.rejected["wrong_language"] == 2
    portuguese = [i for i in ids if i not in english]
    assert sum(rows[i]["status"] == "ok" for i in portuguese) >= 3, [
        (rows[i]["reason"], rows[i]["avg_logprob"], rows[i]["detected_language"], rows[i]["text"]) for i in portuguese
    ]
    known = set(normalize_words(" ".join(PT)))
    heard = normalize_words(" ".join(rows[i]["text"] for i in portuguese))
    assert sum(w in known for w in heard) >= 0.5 * len(normalize_words(" ".join(PT))), heard


@pytest.mark.parametrize(("voice", "texts"), [("de", DE), ("pt-br", PT)], ids=["en-de", "en-pt"])
def test_auto_rejects_the_clips_of_a_mixed_source_in_the_other_language(
    tmp_path: Path, speak, base, monkeypatch, voice: str, texts: list[str]
) -> None:
    """Issue 22: a talk that switches from English to German kept the German half, decoded as English nonsense
    ("to modify, to modify, to connect"), as ok under --language auto. Each clip's language is now read from
    the encoder pass its decoding made; only a clip that fails there gets a detect_language pass of its own."""
    from xttsft.data.transcribe import transcribe_segments

    ws = Workspace(tmp_path / "ws")
    ids = _clips(ws, speak, [("en-us", t) for t in EN] + [(voice, t) for t in texts], "train/data/raw/talk.wav")
    calls = []
    detect = base.detect_language
    monkeypatch.setattr(base, "detect_language", lambda *a, **k: calls.append(1) or detect(*a, **k))
    res = transcribe_segments(_settings("auto"), ws, model=base)
    rows = read_jsonl(ws.transcripts_file)
    seen = [(r["reason"], r["language_probability"], r["detected_language"], r["text"][:40]) for r in rows]
    assert res.detected == {"train/data/raw/talk.wav": ("en", pytest.approx(0.9, abs=0.1))}
    assert [r["id"] for r in rows] == ids
    assert all(r["status"] == "ok" and r["language"] == "en" for r in rows[: len(EN)]), seen
    assert all(r["reason"] == "wrong_language" for r in rows[len(EN) :]), seen
    assert res.rejected["wrong_language"] == len(texts)
    assert len(calls) == 1 + len(texts)  # the file's language, then one confirmation per suspect clip: no English one


def test_auto_detects_english_and_shows_it(tmp_path: Path, speak, cli, workspace) -> None:
    _clips(workspace, speak, [("en-us", t) for t in EN[:2] * 2], "train/data/raw/talk.wav")
    res = cli(
        "transcribe",
        "--model",
        "bundled-base",
        "--language",
        "auto",
        "--device",
        "cpu",
        "--compute-type",
        "int8",
        env={"COLUMNS": "200"},
    )
    assert res.exit_code == 0, res.output
    assert "detected" in res.output and "train/data/raw/talk.wav: en (p=" in res.output
    rows = read_jsonl(workspace.transcripts_file)
    assert {r["language"] for r in rows} == {"en"} and all(r["status"] == "ok" for r in rows), [
        (r["reason"], r["language_probability"], r["detected_language"], r["avg_logprob"], r["text"]) for r in rows
    ]


def test_auto_unsure_of_robotic_portuguese_asks_for_the_language(tmp_path: Path, speak, cli, workspace) -> None:
    """Whisper base calls espeak-ng's pt-br Latin or Italian (p < 0.5): no Latin dataset, a question."""
    _clips(workspace, speak, [("pt-br", t) for t in PT], "train/data/raw/robo.wav")
    res = cli(
        "transcribe",
        "--model",
        "bundled-base",
        "--language",
        "auto",
        "--device",
        "cpu",
        "--compute-type",
        "int8",
        env={"COLUMNS": "200", "TRANSCRIBE_MIN_AVG_LOGPROB": "-1.5"},
    )
    out = " ".join(res.output.split())
    assert res.exit_code == 1, out
    assert "train/data/raw/robo.wav: Whisper is not sure which language this is" in out and "--language" in out
    assert "Traceback" not in out
    again = cli(
        "transcribe",
        "--model",
        "bundled-base",
        "--language",
        "pt",
        "--device",
        "cpu",
        "--compute-type",
        "int8",
        env={"TRANSCRIBE_MIN_AVG_LOGPROB": "-1.5"},
    )
    assert again.exit_code == 0, again.output
    assert {r["language"] for r in read_jsonl(workspace.transcripts_file)} == {"pt"}


def test_checking_each_file_once_makes_one_detection(tmp_path: Path, speak, base, monkeypatch) -> None:
    """TRANSCRIBE_CHECK_CLIP_LANGUAGE=false: one detection per file, and an English file is rejected whole."""
    from xttsft.data.transcribe import transcribe_segments

    ws = Workspace(tmp_path / "ws")
    _clips(ws, speak, [("en-us", t) for t in EN[:2] + EN[:1]], "train/data/raw/english.wav")
    calls = []
    detect = base.detect_language
    monkeypatch.setattr(base, "detect_language", lambda *a, **k: calls.append(1) or detect(*a, **k))
    settings = _settings("pt").model_copy(update={"check_clip_language": False})
    res = transcribe_segments(settings, ws, model=base)
    assert len(calls) == 1 and res.rejected["wrong_language"] == 3


def test_eval_finds_the_bundled_models() -> None:
    """run-all --demo's eval stage asked the Hub for 'bundled-base' (found by running the pt demo)."""
    from xttsft.voice.evaluate import fetch_whisper

    assert (Path(fetch_whisper("bundled-base")) / "model.bin").is_file()
    assert (Path(fetch_whisper("bundled-tiny.en")) / "model.bin").is_file()
