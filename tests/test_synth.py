"""xttsft synth on the tiny random XTTS (noise audio: these tests check the
plumbing, determinism, formats and every bad-input message)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from synth_helpers import make_dataset, make_run
from xttsft.errors import DatasetError, InputError
from xttsft.paths import Workspace
from xttsft.settings import SynthSettings
from xttsft.voice import synth

TOKENS = "8"  # a random GPT never emits STOP: keep generation short


def said(res) -> str:
    """The command's output with rich's line wrapping undone."""
    return " ".join(res.output.split())


# --------------------------------------------------------------------------- pure parts
def test_split_text_keeps_every_word_under_the_limit() -> None:
    text = (
        "Olá, Sr. Silva. Tudo bem? Hoje eu comprei 3 maçãs e duas peras no mercado da esquina! "
        + "Esta frase é longa, muito longa, cheia de vírgulas, de ideias e de palavras, " * 6
        + "e termina aqui."
    )
    chunks = synth.split_text(text, "pt")
    assert chunks[:3] == ["Olá, Sr. Silva.", "Tudo bem?", "Hoje eu comprei 3 maçãs e duas peras no mercado da esquina!"]
    assert all(len(c) <= 203 for c in chunks)  # coqui's pt limit
    assert len(chunks) >= 5
    assert " ".join(chunks).split() == text.split()


def test_split_text_cuts_a_sentence_without_punctuation_between_words() -> None:
    text = " ".join(["palavra"] * 80)
    chunks = synth.split_text(text, "pt", limit=50)
    assert all(len(c) <= 50 for c in chunks)
    assert " ".join(chunks).split() == text.split()


@pytest.mark.parametrize("text", ["", "   \n\t "])
def test_empty_text_is_an_input_error(text: str) -> None:
    with pytest.raises(InputError, match="The text is empty"):
        synth.split_text(text, "pt")


def test_unsupported_language_lists_the_supported_ones() -> None:
    with pytest.raises(InputError) as err:
        synth.normalize_language("xx")
    assert "not supported" in err.value.message and "pt" in err.value.hint and "zh-cn" in err.value.hint
    assert synth.normalize_language("pt-BR") == "pt"
    assert synth.normalize_language("zh") == "zh-cn"


def test_reference_selection_prefers_6_to_12_s_clips_with_the_best_logprob(tmp_path: Path) -> None:
    rows = [
        ("a", 4.0, -0.01, "train"),
        ("b", 7.0, -0.5, "train"),
        ("c", 9.0, -0.2, "train"),
        ("d", 11.0, -0.3, "val"),
        ("e", 14.0, -0.01, "train"),
        ("f", 8.0, -0.1, "train"),
    ]
    (tmp_path / "wavs").mkdir()
    for rid, *_ in rows:
        (tmp_path / "wavs" / f"{rid}.wav").write_bytes(b"")
    (tmp_path / "samples.jsonl").write_text(
        "".join(
            json.dumps({"id": r, "wav": f"wavs/{r}.wav", "duration": d, "avg_logprob": lp, "split": s}) + "\n"
            for r, d, lp, s in rows
        )
    )
    picked = synth.select_reference_clips(tmp_path, count=3)
    assert [p.stem for p in picked] == ["f", "c", "d"]
    assert [p.stem for p in synth.select_reference_clips(tmp_path, count=3, split="train")] == ["f", "c", "b"]
    with pytest.raises(DatasetError, match="No clips to condition on"):
        synth.select_reference_clips(tmp_path / "nowhere")


def test_write_audio_wav_is_24k_16bit_and_other_formats_go_through_ffmpeg(tmp_path: Path) -> None:
    wav = (0.3 * np.sin(np.linspace(0, 2000, 24000))).astype(np.float32)
    out = synth.write_audio(wav, tmp_path / "a.wav")
    info = sf.info(str(out))
    assert (info.samplerate, info.channels, info.subtype) == (24000, 1, "PCM_16")
    flac = synth.write_audio(wav, tmp_path / "a.flac")
    probe = subprocess.run(
        ["ffprobe", "-v", "error", "-show_entries", "stream=codec_name,sample_rate", "-of", "json", str(flac)],
        capture_output=True,
        text=True,
        check=True,
    )
    stream = json.loads(probe.stdout)["streams"][0]
    assert stream["codec_name"] == "flac" and stream["sample_rate"] == "24000"
    with pytest.raises(InputError, match="ffmpeg cannot write"):
        synth.write_audio(wav, tmp_path / "a.notaformat")
    assert not (tmp_path / "a.notaformat").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.flac", "a.wav"]  # no temporary leftovers


# --------------------------------------------------------------------------- the tiny model
@pytest.fixture(scope="module")
def voice_ws(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    ws = Workspace(tmp_path_factory.mktemp("synth") / "ws")
    make_dataset(ws)
    make_run(ws)
    return ws


@pytest.fixture(scope="module")
def voice(voice_ws: Workspace) -> synth.Voice:
    source = synth.resolve_model(voice_ws, None)
    assert source.kind == "run" and source.name == "run1"
    return synth.load_voice(voice_ws, source, device="cpu")


def test_same_seed_same_audio_other_seed_other_audio(voice: synth.Voice, voice_ws: Workspace) -> None:
    settings = SynthSettings(max_audio_tokens=8, language="en")
    refs = synth.select_reference_clips(voice.dataset_dir, count=2)
    cond = synth.conditioning(voice, refs, voice_ws.conditioning_cache_dir)
    assert not cond.cached and cond.cache_file.is_file()
    again = synth.conditioning(voice, refs, voice_ws.conditioning_cache_dir)
    assert again.cached and np.array_equal(again.gpt_cond_latent.numpy(), cond.gpt_cond_latent.numpy())
    a, sents = synth.speak(voice, cond, "Hello there. How are you?", "en", settings, seed=7)
    b, _ = synth.speak(voice, again, "Hello there. How are you?", "en", settings, seed=7)
    c, _ = synth.speak(voice, cond, "Hello there. How are you?", "en", settings, seed=8)
    assert sents == ["Hello there.", "How are you?"]
    assert a.size > 0 and np.array_equal(a, b)
    assert not np.array_equal(a, c)
    # two sentences of at most 8 tokens (1024 samples at 22.05 kHz each) plus one pause
    assert len(a) <= 2 * 8 * 1024 * 24000 / 22050 + 0.25 * 24000 + 2048


def test_characters_the_tokenizer_cannot_encode_are_named(voice: synth.Voice) -> None:
    with pytest.raises(InputError) as err:
        synth.check_text(voice.model.tokenizer, "olá ☃ mundo", "pt")
    assert "U+2603" in err.value.message and "SNOWMAN" in err.value.message
    synth.check_text(voice.model.tokenizer, "Olá, você tem 3 maçãs?", "pt")  # numbers are spelled out


def test_cli_synth_writes_24k_wav_and_says_the_tiny_model_is_noise(cli, voice_ws: Workspace, tmp_path: Path) -> None:
    out = tmp_path / "ola.wav"
    res = cli(
        "synth",
        "Olá, tudo bem?",
        "--language",
        "pt",
        "--seed",
        "1",
        "--max-audio-tokens",
        TOKENS,
        "--out",
        str(out),
        workdir=voice_ws.root,
    )
    assert res.exit_code == 0, res.output
    assert said(res).count("noise") == 1 and "run run1" in said(res)  # the tiny-model warning, once
    info = sf.info(str(out))
    assert (info.samplerate, info.channels, info.subtype) == (24000, 1, "PCM_16") and info.frames > 0


@pytest.mark.slow
def test_cli_text_file_one_file_per_line_and_rerun_skips(cli, voice_ws: Workspace, tmp_path: Path) -> None:
    lines = tmp_path / "lines.txt"
    lines.write_text("First line.\n\nSecond line!\n", encoding="utf-8")
    out_dir = tmp_path / "many"
    args = (
        "synth",
        "--text-file",
        str(lines),
        "--out-dir",
        str(out_dir),
        "--language",
        "en",
        "--seed",
        "3",
        "--max-audio-tokens",
        TOKENS,
        "--speaker-wav",
        str(voice_ws.dataset_dir / "wavs" / "clip_0000.wav"),
    )
    res = cli(*args, workdir=voice_ws.root)
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in out_dir.iterdir()) == ["0001.wav", "0002.wav", "manifest.jsonl"]
    rows = [json.loads(x) for x in (out_dir / "manifest.jsonl").read_text().splitlines()]
    assert [r["text"] for r in rows] == ["First line.", "Second line!"]
    before = (out_dir / "0001.wav").stat().st_mtime_ns
    res = cli(*args, workdir=voice_ws.root)
    assert res.exit_code == 0 and said(res).count("skipped") == 2, res.output
    assert "latents from cache" in said(res)
    assert (out_dir / "0001.wav").stat().st_mtime_ns == before


# --------------------------------------------------------------------------- bad input, through the CLI
def test_cli_empty_text(cli, voice_ws: Workspace) -> None:
    res = cli("synth", "  ", workdir=voice_ws.root)
    assert res.exit_code == 1 and "The text is empty" in said(res)


def test_cli_unsupported_language(cli, voice_ws: Workspace) -> None:
    res = cli("synth", "Olá", "--language", "klingon", workdir=voice_ws.root)
    assert res.exit_code == 1 and "not supported" in said(res) and "pt, pl" in said(res)


def test_cli_missing_and_corrupt_reference_audio(cli, voice_ws: Workspace, tmp_path: Path) -> None:
    res = cli("synth", "Olá", "--speaker-wav", str(tmp_path / "nope.wav"), workdir=voice_ws.root)
    assert res.exit_code == 1 and "does not exist" in said(res)
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF this is not audio at all" * 10)
    res = cli("synth", "Olá", "--speaker-wav", str(bad), workdir=voice_ws.root)
    assert res.exit_code == 1 and "Cannot read reference audio" in said(res) and "bad.wav" in said(res)
    short = tmp_path / "short.wav"
    sf.write(str(short), 0.1 * np.ones(2205, dtype=np.float32), 22050)
    res = cli("synth", "Olá", "--speaker-wav", str(short), workdir=voice_ws.root)
    assert res.exit_code == 1 and "too short" in said(res)


def test_cli_unencodable_characters(cli, voice_ws: Workspace) -> None:
    res = cli("synth", "Olá ☃", "--language", "pt", "--max-audio-tokens", TOKENS, workdir=voice_ws.root)
    assert res.exit_code == 1 and "cannot encode" in said(res) and "U+2603" in said(res)


def test_cli_no_run_and_run_without_checkpoints(cli, workspace: Workspace) -> None:
    res = cli("synth", "Olá")
    assert res.exit_code == 1 and "No training run" in said(res) and "--model base" in said(res)
    run = workspace.run_dir("empty-run")
    run.mkdir(parents=True)
    (run / "run.json").write_text(json.dumps({"base_model": "tiny", "base_dir": "/nowhere", "language": "pt"}))
    res = cli("synth", "Olá", "--model", "empty-run")
    assert res.exit_code == 1 and "no complete best_model or checkpoint" in said(res)
    res = cli("synth", "Olá", "--model", "nonexistent")
    assert res.exit_code == 1 and "No run or model folder named 'nonexistent'" in said(res)


def test_cli_incompatible_adapter(cli, voice_ws: Workspace, tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    ws = Workspace(tmp_path / "ws2")
    src = voice_ws.run_dir("run1")
    dst = ws.run_dir("broken")
    shutil.copytree(src, dst)
    f = dst / "best_model" / "adapter_model.safetensors"
    tensors = load_file(str(f))
    save_file({k: v[:, :-1].contiguous() if "lora_A" in k else v for k, v in tensors.items()}, str(f))  # wrong width
    res = cli("synth", "Olá", "--speaker-wav", str(voice_ws.dataset_dir / "wavs" / "clip_0000.wav"), workdir=ws.root)
    assert res.exit_code == 1 and "does not fit this model" in said(res) and "size mismatch" in said(res), res.output
    assert "Traceback" not in res.output


def test_sampling_auto_takes_the_base_models_own_config(tmp_path: Path, voice_ws: Workspace) -> None:
    """Issue 22: synth, eval and serve sampled with XttsConfig's class defaults (temperature 0.85, repetition
    penalty 2.0), while XTTS-v2's config.json, and the apps people use, say 0.75 and 5.0."""
    import json
    import shutil

    from xttsft.model import build_tiny_model

    folder = tmp_path / "model"
    shutil.copytree(build_tiny_model(), folder)
    config = json.loads((folder / "config.json").read_text())
    config.update(temperature=0.75, repetition_penalty=5.0, top_k=40)
    (folder / "config.json").write_text(json.dumps(config))
    voice = synth.load_voice(voice_ws, synth.ModelSource("folder", str(folder), folder), device="cpu")
    chosen = synth.sampling(voice, SynthSettings())
    assert (chosen["temperature"], chosen["repetition_penalty"], chosen["top_k"]) == (0.75, 5.0, 40)
    assert synth.sampling(voice, SynthSettings(temperature=0.3))["temperature"] == 0.3  # a setting given wins
