"""``xttsft synth``: speak text with a fine-tuned XTTS-v2 voice.

The pieces, each usable on its own (``export`` and ``eval`` reuse them):

- :func:`resolve_model` finds what ``--model`` names: a training run (default:
  the most recent one), ``base`` (the base model alone) or a folder holding a
  standard XTTS-v2 model (an ``xttsft export``, or any stock XTTS-v2 folder).
- :func:`load_voice` loads it through :mod:`xttsft.model` (base + the run's
  LoRA adapter or GPT weights) and returns a :class:`Voice`.
- :func:`select_reference_clips` picks conditioning clips from the dataset's
  ``samples.jsonl``: 6-12 s clips with the highest transcription confidence.
- :func:`conditioning` computes the GPT conditioning latents and the 512-d
  speaker embedding once per model + references, cached under
  ``ws.conditioning_cache_dir`` as safetensors keyed by hashes.
- :func:`split_text` cuts long text into sentences under the tokenizer's
  per-language character limit; :func:`check_text` rejects empty text and
  characters the tokenizer cannot encode.
- :func:`speak` generates one text (sentences joined with short pauses) and
  :func:`write_audio` writes 24 kHz WAV, or any format ffmpeg writes.
- :func:`synthesize` is what the CLI calls.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import random
import re
import shutil
import subprocess
import textwrap
import time
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from xttsft import audio as xaudio
from xttsft import model as xmodel
from xttsft.audio import write_wav
from xttsft.data.datasets import read_dataset
from xttsft.errors import DatasetError, InputError, MissingDependencyError, ModelNotFoundError, XttsftError
from xttsft.hardware import resolve_device
from xttsft.io import atomic_path, check_output_path, read_jsonl, sha256_file, write_jsonl
from xttsft.logs import log_once
from xttsft.model import resolve_run
from xttsft.paths import RunPaths, Workspace
from xttsft.progress import Progress, no_progress
from xttsft.records import (
    AdapterMarker,
    ExportMarker,
    RecordError,
    RunRecord,
    SampleRecord,
    read_marker,
    read_record,
    read_records,
)
from xttsft.settings import XTTS_LANGUAGES
from xttsft.textnorm import expand

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

    from xttsft.settings import SynthSettings

__all__ = [
    "OUTPUT_SAMPLE_RATE",
    "REFERENCE_SAMPLE_RATE",
    "SUPPORTED_LANGUAGES",
    "ModelSource",
    "Voice",
    "Conditioning",
    "SynthItem",
    "SynthResult",
    "normalize_language",
    "split_text",
    "check_text",
    "resolve_model",
    "load_voice",
    "sampling",
    "select_reference_clips",
    "load_reference",
    "conditioning",
    "prepare_text",
    "speak",
    "write_audio",
    "read_text_file",
    "synthesize",
]

log = logging.getLogger(__name__)

OUTPUT_SAMPLE_RATE = 24000  # = xttsft.audio.OUTPUT_SR
"""XTTS-v2's HiFi-GAN decoder writes 24 kHz audio."""

REFERENCE_SAMPLE_RATE = 22050
"""Conditioning audio is read at 22.05 kHz, like the training data."""

SUPPORTED_LANGUAGES = XTTS_LANGUAGES  # one list: xttsft.settings.XTTS_LANGUAGES

# VoiceBpeTokenizer.char_limits of coqui-tts 0.28; the loaded tokenizer's own table wins.
_CHAR_LIMITS = {
    "en": 250,
    "de": 253,
    "fr": 273,
    "es": 239,
    "it": 213,
    "pt": 203,
    "pl": 224,
    "zh": 82,
    "ar": 166,
    "cs": 186,
    "ru": 182,
    "nl": 251,
    "tr": 226,
    "ja": 71,
    "hu": 224,
    "ko": 95,
    "hi": 150,
}

_REF_MIN_SECONDS = 1.0  # XTTS needs 0.33 s; anything under a second carries no voice
_REF_RECOMMENDED_SECONDS = 3.0


# ---------------------------------------------------------------------------
# text
# ---------------------------------------------------------------------------


def normalize_language(language: str) -> str:
    """``pt``, ``PT``, ``pt-BR`` -> ``pt``; ``zh`` -> ``zh-cn``. Unsupported -> InputError."""
    lang = (language or "").strip().lower().replace("_", "-")
    if lang in {"zh", "zh-cn", "zh-hans"}:
        return "zh-cn"
    base = lang.split("-")[0]
    if base not in SUPPORTED_LANGUAGES:
        raise InputError(
            f"Language {language!r} is not supported by XTTS-v2.",
            hint=f"Use one of: {', '.join(SUPPORTED_LANGUAGES)}.",
        )
    return base


def _char_limit(language: str, tokenizer: Any = None) -> int:
    key = language.split("-")[0]
    limits = getattr(tokenizer, "char_limits", None) or _CHAR_LIMITS
    return int(limits.get(key, _CHAR_LIMITS.get(key, 250)))


# An abbreviation or an initial before a dot does not end a sentence.
_ABBREVIATIONS = {
    "sr",
    "sra",
    "srs",
    "sras",
    "dr",
    "dra",
    "drs",
    "dras",
    "prof",
    "profa",
    "eng",
    "exmo",
    "exma",
    "av",
    "pág",
    "pag",
    "nº",
    "no",
    "núm",
    "num",
    "cap",
    "art",
    "fig",
    "vol",
    "ed",
    "etc",
    "ex",
    "obs",
    "tel",
    "mr",
    "mrs",
    "ms",
    "st",
    "jr",
    "vs",
    "approx",
    "dept",
    "est",
    "inc",
    "ltd",
    "co",
    "gen",
    "col",
    "lt",
    "sgt",
    "capt",
    "rev",
    "hon",
    "mme",
    "mlle",
    "m",
    "sres",
    "ud",
    "uds",
    "hr",
    "fr",
    "frau",
    "nr",
    "bzw",
    "ca",
    "usw",
    "z.b",
    "e.g",
    "i.e",
    "a.c",
    "d.c",
}
_SENTENCE_END = re.compile(r"([.!?…]+[\"'”’»)\]]*)(\s+)|([。！？])")


def _sentences(text: str) -> list[str]:
    out: list[str] = []
    start = 0
    for m in _SENTENCE_END.finditer(text):
        end = m.end(1) if m.group(1) else m.end(3)
        piece = text[start:end]
        if m.group(1) and m.group(1).startswith(".") and len(m.group(1)) == 1:
            last_word = re.split(r"\s", piece[:-1].strip())[-1].lower() if piece[:-1].strip() else ""
            if last_word in _ABBREVIATIONS or (len(last_word) == 1 and last_word.isalpha()):
                continue  # "Sr. Silva", "J. R. R. Tolkien"
            if re.fullmatch(r"\d+", last_word) and m.end() < len(text) and text[m.end()].islower():
                continue  # "o 3. lugar"
        out.append(piece.strip())
        start = m.end()
    tail = text[start:].strip()
    if tail:
        out.append(tail)
    return [s for s in out if s]


def _wrap(sentence: str, limit: int) -> list[str]:
    """Cut one sentence longer than ``limit`` at clause marks, then between words."""
    if len(sentence) <= limit:
        return [sentence]
    parts: list[str] = []
    current = ""
    for clause in re.split(r"(?<=[,;:—–])\s+", sentence):
        candidate = f"{current} {clause}".strip()
        if len(candidate) <= limit:
            current = candidate
            continue
        if current:
            parts.append(current)
        if len(clause) <= limit:
            current = clause
        else:
            wrapped = textwrap.wrap(clause, width=limit, break_long_words=True, break_on_hyphens=False)
            parts.extend(wrapped[:-1])
            current = wrapped[-1] if wrapped else ""
    if current:
        parts.append(current)
    return parts


def split_text(text: str, language: str, limit: int | None = None) -> list[str]:
    """Split ``text`` into sentences of at most ``limit`` characters (default: the
    tokenizer's limit for ``language``, e.g. pt 203, en 250).

    Sentences end at ``. ! ? …`` followed by a space (not after an abbreviation
    such as "Sr." or an initial); a sentence longer than the limit is cut at
    commas, semicolons and colons, then between words. Empty text -> InputError.
    """
    cleaned = " ".join((text or "").split())
    if not cleaned:
        raise InputError("The text is empty.", hint='Give the words to speak, e.g. xttsft synth "Olá, tudo bem?"')
    limit = limit or _char_limit(language)
    chunks: list[str] = []
    for sentence in _sentences(cleaned):
        chunks.extend(_wrap(sentence, limit))
    return [c for c in chunks if c.strip()]


def check_text(tokenizer: Any, text: str, language: str) -> None:
    """Raise InputError when the text is empty after cleaning or holds characters
    the model's tokenizer cannot encode (they would become ``[UNK]`` or vanish).

    The text first goes through coqui's multilingual cleaners (lowercase,
    numbers and abbreviations spelled out), as it does at inference.
    """
    lang = language.split("-")[0]
    try:
        cleaned = tokenizer.preprocess_text(text, lang)
    except NotImplementedError as exc:
        raise InputError(
            f"Language {language!r} is not supported by this model's tokenizer.",
            hint=f"Use one of: {', '.join(SUPPORTED_LANGUAGES)}.",
        ) from exc
    if not cleaned.strip():
        raise InputError(f"The text {text!r} is empty once cleaned.", hint="Give words to speak.")
    hf = tokenizer.tokenizer
    unk = hf.token_to_id("[UNK]")
    bad: list[str] = []
    for ch in sorted(set(cleaned) - {" "}):
        ids = hf.encode(ch).ids
        if not ids or (unk is not None and unk in ids):
            bad.append(ch)
    if bad:
        shown = ", ".join(f"{c!r} (U+{ord(c):04X} {unicodedata.name(c, '?')})" for c in bad)
        raise InputError(
            f"The model's tokenizer cannot encode {len(bad)} character{'s' if len(bad) > 1 else ''} "
            f"of the text: {shown}.",
            hint="Remove these characters or spell them out in words, and check --language.",
        )


def read_text_file(path: Path) -> list[str]:
    """Non-empty lines of a UTF-8 text file (one utterance per line)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"Text file {path} does not exist.", hint="Pass a UTF-8 file with one sentence per line.")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise InputError(f"Text file {path} is not UTF-8 text ({exc.reason}).", hint="Save it as UTF-8.") from exc
    texts = [line.strip() for line in lines if line.strip()]
    if not texts:
        raise InputError(f"Text file {path} has no text.", hint="Write one sentence per line.")
    return texts


# ---------------------------------------------------------------------------
# the model
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelSource:
    """What ``--model`` names, before anything is loaded."""

    kind: str  # "run" | "base" | "folder" (a model folder) | "adapter" (an adapter-only export)
    name: str  # run name, base spec or folder, for messages
    path: Path | None  # run dir or model folder; None for a base spec
    base_spec: str | None = None  # the base model spec ("coqui/XTTS-v2", "tiny", a folder)


def _is_model_folder(path: Path) -> bool:
    return (path / "model.pth").is_file() and (path / "config.json").is_file()


def resolve_model(ws: Workspace, model: str | None, default_base: str = "coqui/XTTS-v2") -> ModelSource:
    """Turn ``--model`` into a :class:`ModelSource`.

    ``None`` -> the most recent run; ``base`` -> the base model of the most recent
    run (or ``default_base`` when there is none); a run name; a run folder; a
    folder with ``model.pth`` + ``config.json`` (an export or a stock XTTS-v2).
    """

    if model is None:
        return ModelSource(
            "run",
            *resolve_run(
                ws,
                None,
                no_run_hint="Train first (xttsft train), pass --model base to use the base model alone, "
                "or --model FOLDER for an exported model.",
            ),
        )
    if model == "base":
        run = ws.latest_run()
        spec = default_base
        if run is not None and ws.run(run).run_json.is_file():
            with contextlib.suppress(RecordError):
                spec = read_record(ws.run(run).run_json, RunRecord).base_model
        return ModelSource("base", spec, None, base_spec=spec)
    with contextlib.suppress(ModelNotFoundError):  # a run, by name or folder
        return ModelSource("run", *resolve_run(ws, model))
    path = Path(model).expanduser()
    if path.is_dir():
        if _is_model_folder(path):
            return ModelSource("folder", str(path), path.resolve())
        marker = read_marker(path, AdapterMarker)
        if marker is not None and (path / "adapter_model.safetensors").is_file():
            return ModelSource("adapter", str(path), path.resolve(), base_spec=marker.base_model)
        raise ModelNotFoundError(
            f"{path} is neither a training run (no run.json) nor an XTTS-v2 model folder (no model.pth + config.json).",
            hint="Pass a run name from train/checkpoints/, an `xttsft export` folder, or `base`.",
        )
    runs = sorted(p.name for p in ws.checkpoints_dir.iterdir() if p.is_dir()) if ws.checkpoints_dir.is_dir() else []
    raise ModelNotFoundError(
        f"No run or model folder named {model!r}.",
        hint=(f"Runs in this workspace: {', '.join(runs)}. " if runs else "There are no runs in this workspace. ")
        + "Or pass `base`, or the path of an exported model folder.",
    )


@dataclass
class Voice:
    """A loaded model ready to speak."""

    model: Any  # coqui Xtts
    source: ModelSource
    description: str
    language: str | None  # the run's language, if known
    base_dir: Path | None
    dataset_dir: Path | None
    tiny: bool
    identity: str  # hash of what the weights come from (for the latent cache)
    device: str
    checkpoint: str | None = None
    dataset_split: dict[str, Any] | None = None  # how the run split a single metadata.csv

    @property
    def sample_rate(self) -> int:
        return int(getattr(self.model.args, "output_sample_rate", OUTPUT_SAMPLE_RATE) or OUTPUT_SAMPLE_RATE)


def _files_identity(paths: list[Path]) -> str:
    """Hash of path, size and modification time of the files weights come from
    (cheap: XTTS' model.pth is 1.8 GB, too big to hash on every call)."""
    h = hashlib.sha256()
    for p in sorted(paths):
        if p.is_file():
            st = p.stat()
            h.update(f"{p.resolve()}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def _weight_files(folder: Path) -> list[Path]:
    if not Path(folder).is_dir():
        return []
    return [p for p in Path(folder).iterdir() if p.is_file() and p.suffix in {".safetensors", ".json"}]


def load_voice(
    ws: Workspace,
    source: ModelSource,
    checkpoint: str = "best",
    device: str = "auto",
    progress: Progress | None = None,
    merge_lora: bool = True,
) -> Voice:
    """Load what ``source`` names on ``device`` (auto: GPU when present).

    A run: its base model + the chosen checkpoint (``best``, ``latest`` or a
    folder); LoRA adapters are merged into the GPT unless ``merge_lora`` is
    False (then they run as separate PEFT layers: same output, a bit slower).
    """

    device = resolve_device(device)
    if source.kind == "run":
        return _load_run(source, checkpoint, device, progress, merge_lora)
    if source.kind == "adapter":
        return _load_adapter(source, device, progress, merge_lora)
    return _load_folder(source, device, progress)


def _load_run(source: ModelSource, checkpoint: str, device: str, progress: Progress | None, merge_lora: bool) -> Voice:
    """A run: its base model and the chosen checkpoint's adapter or GPT weights."""

    run_dir = source.path
    assert run_dir is not None
    try:
        model, info = xmodel.load_finetuned(
            run_dir, checkpoint=checkpoint, device=device, progress=progress, merge=merge_lora
        )
    except XttsftError:
        raise
    except (RuntimeError, ValueError, KeyError) as exc:
        raise InputError(
            f"The weights of run {source.name!r} do not fit its base model: {_short(exc)}",
            hint="The adapter or GPT weights were trained on another base model (shape or base mismatch). "
            "Check run.json's base_model, or train the run again.",
        ) from exc
    ckpt_dir = Path(info.checkpoint) if info.checkpoint else run_dir
    identity = _files_identity(
        _weight_files(ckpt_dir) + [RunPaths(run_dir).run_json, Path(info.base_dir) / "model.pth"]
    ) + ("" if merge_lora else "-unmerged")
    return Voice(
        model=model,
        source=source,
        description=f"run {source.name} ({ckpt_dir.name}, {info.mode})",
        language=info.language,
        base_dir=Path(info.base_dir),
        dataset_dir=Path(info.dataset_dir) if str(info.dataset_dir) not in {"", "."} else None,
        dataset_split=info.dataset_split,
        tiny=xmodel.is_tiny(Path(info.base_dir)),
        identity=identity,
        device=device,
        checkpoint=ckpt_dir.name,
    )


def _load_adapter(source: ModelSource, device: str, progress: Progress | None, merge_lora: bool) -> Voice:
    """An adapter-only export on top of its base model."""

    assert source.path is not None
    marker = read_marker(source.path, AdapterMarker)
    base_dir = xmodel.resolve_base_model(source.base_spec or "coqui/XTTS-v2", progress=progress)
    try:
        model = xmodel.load_xtts(base_dir, device="cpu", for_training=True)
        xmodel.apply_checkpoint(model, source.path, "lora", merge=merge_lora)
    except XttsftError:
        raise
    except (RuntimeError, ValueError, KeyError) as exc:
        raise InputError(
            f"The adapter in {source.path} does not fit the base model {source.base_spec}: {_short(exc)}",
            hint="Use the base model the adapter was trained on (see base_model in xttsft_adapter.json).",
        ) from exc
    model.gpt.init_gpt_for_inference(kv_cache=model.args.kv_cache, use_deepspeed=False)
    model.eval()
    model.to(device)
    return Voice(
        model=model,
        source=source,
        description=f"adapter {source.path.name} on {source.base_spec}",
        language=marker.language if marker else None,
        base_dir=source.path,
        dataset_dir=None,
        tiny=xmodel.is_tiny(base_dir),
        identity=_files_identity(_weight_files(source.path) + [base_dir / "model.pth"])
        + ("" if merge_lora else "-unmerged"),
        device=device,
    )


def _load_folder(source: ModelSource, device: str, progress: Progress | None) -> Voice:
    """The base model (a name) or a model folder (a merged export, or any XTTS-v2 folder)."""

    if source.kind == "base":
        base_dir = xmodel.resolve_base_model(source.base_spec or source.name, progress=progress)
        desc = f"base {source.name}"
    else:
        assert source.path is not None
        base_dir = xmodel.resolve_base_model(str(source.path), progress=progress)
        desc = f"model folder {source.path}"
    try:
        model = xmodel.load_xtts(base_dir, device=device)
    except XttsftError:
        raise
    except (RuntimeError, ValueError, KeyError) as exc:
        raise InputError(
            f"{base_dir} does not hold a loadable XTTS-v2 model: {_short(exc)}",
            hint="Export it again with `xttsft export`, or check that model.pth and config.json belong together.",
        ) from exc
    export_info = read_marker(base_dir, ExportMarker)
    return Voice(
        model=model,
        source=source,
        description=desc,
        language=export_info.language if export_info else None,
        base_dir=base_dir,
        dataset_dir=Path(export_info.dataset_dir) if export_info and export_info.dataset_dir else None,
        tiny=xmodel.is_tiny(base_dir),
        identity=_files_identity([base_dir / "model.pth", base_dir / "config.json"]),
        device=device,
    )


#: the sampling settings that ``auto`` takes from the base model's config.json
SAMPLING = ("temperature", "length_penalty", "repetition_penalty", "top_k", "top_p")


def sampling(voice: Voice, settings: SynthSettings) -> dict[str, float]:
    """Temperature, penalties, top-k and top-p for ``model.inference``: a setting given wins, ``auto`` takes the
    base model's own config.json (XTTS-v2 ships 0.75 and 5.0, not XttsConfig's class defaults 0.85 and 2.0)."""
    config = getattr(voice.model, "config", None)
    chosen: dict[str, float] = {}
    for name in SAMPLING:
        value = getattr(settings, name)
        chosen[name] = getattr(config, name) if value == "auto" else value
    return chosen


def _short(exc: BaseException, limit: int = 300) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ---------------------------------------------------------------------------
# references and conditioning
# ---------------------------------------------------------------------------


def select_reference_clips(
    dataset_dir: Path,
    count: int = 3,
    min_seconds: float = 6.0,
    max_seconds: float = 12.0,
    split: str | None = None,
    split_rule: dict[str, Any] | None = None,
) -> list[Path]:
    """The ``count`` clips of 6-12 s with the highest ``avg_logprob`` in the
    dataset (optionally only from one ``split``): its ``samples.jsonl`` when ``xttsft build``
    made it, else its metadata in any layout :mod:`xttsft.data.datasets` reads (durations from
    the wav headers).

    When no clip is 6-12 s long, the longest clips are taken instead (with a
    warning). No dataset or no clips -> DatasetError.
    """

    samples_file = Path(dataset_dir) / SampleRecord.FILE
    rows = (
        read_records(samples_file, SampleRecord)
        if samples_file.is_file()
        else _rows_from_metadata(Path(dataset_dir), split_rule or {})
    )
    if split is not None:
        rows = [r for r in rows if r.split == split]
    rows = [
        r
        for r in rows
        if (Path(dataset_dir) / r.wav).is_file() or (Path(dataset_dir) / "wavs" / f"{r.id}.wav").is_file()
    ]
    if not rows:
        raise DatasetError(
            f"No clips to condition on in {samples_file}" + (f" (split {split})" if split else "") + ".",
            hint="Build the dataset first (xttsft build), or pass reference audio with --speaker-wav.",
        )

    def path_of(r: SampleRecord) -> Path:
        p = Path(dataset_dir) / r.wav
        return p if p.is_file() else Path(dataset_dir) / "wavs" / f"{r.id}.wav"

    def score(r: SampleRecord) -> float:
        return float(r.avg_logprob) if r.avg_logprob is not None else -1e9

    fitting = [r for r in rows if min_seconds <= r.duration <= max_seconds]
    if fitting:
        chosen = sorted(fitting, key=lambda r: (-score(r), r.id))[:count]
    else:
        log_once(
            log,
            logging.WARNING,
            "No clip of %.0f-%.0f s in %s; conditioning on the longest clips instead.",
            min_seconds,
            max_seconds,
            Path(dataset_dir),
        )
        chosen = sorted(rows, key=lambda r: (-r.duration, r.id))[:count]
    return [path_of(r) for r in chosen]


def _rows_from_metadata(dataset_dir: Path, split_rule: dict[str, Any]) -> list[SampleRecord]:
    """samples.jsonl-like rows of a dataset made elsewhere: id, wav, duration, split (a single
    metadata.csv is split with ``split_rule``, the run's: eval's held-out clips are the run's val)."""
    import soundfile as sf

    try:
        ds = read_dataset(
            dataset_dir,
            language="en",  # the language plays no part in picking clips
            val_fraction=float(split_rule.get("val_fraction", 0.1)),
            seed=int(split_rule.get("seed", 42)),
        )
    except XttsftError:
        return []
    rows = []
    splits: tuple[tuple[Literal["train", "val"], list[Any]], ...] = (("train", ds.train), ("val", ds.val))
    for split, items in splits:
        for r in items:
            try:
                duration = sf.info(str(r.wav)).duration
            except (RuntimeError, OSError, sf.LibsndfileError):
                continue
            rows.append(SampleRecord(id=r.id, wav=str(r.wav.relative_to(ds.root)), duration=duration, split=split))
    return rows


def load_reference(path: Path, sample_rate: int = REFERENCE_SAMPLE_RATE) -> np.ndarray:
    """Read reference audio as mono float32 at ``sample_rate`` (WAV/FLAC/OGG via
    soundfile, anything else via ffmpeg). Missing, unreadable, too short or
    silent audio -> InputError naming the file."""
    import numpy as np

    path = Path(path)
    if not path.is_file():
        raise InputError(f"Reference audio {path} does not exist.", hint="Pass existing audio files to --speaker-wav.")
    audio = _decode(path, sample_rate)
    seconds = len(audio) / sample_rate
    if seconds < _REF_MIN_SECONDS:
        raise InputError(
            f"Reference audio {path} is too short ({seconds:.2f} s).",
            hint=f"Use clean speech of {_REF_RECOMMENDED_SECONDS:.0f}-12 s per reference clip.",
        )
    if not np.isfinite(audio).all() or float(np.abs(audio).max()) < 1e-4:
        raise InputError(f"Reference audio {path} is silent.", hint="Use a clip where the voice speaks clearly.")
    if seconds < _REF_RECOMMENDED_SECONDS:
        log.warning("Reference audio %s is short (%.1f s); 3-12 s of speech clones the voice better.", path, seconds)
    return np.clip(audio, -1.0, 1.0)


def _decode(path: Path, sample_rate: int) -> np.ndarray:
    """Mono float32 at ``sample_rate`` through the shared loader; a non-audio file is named."""

    try:
        return xaudio.read_mono(path, sample_rate)
    except InputError as exc:
        raise InputError(
            f"Cannot read reference audio {path}: not an audio file, or corrupt.",
            hint="Pass a WAV, FLAC or MP3 file of clean speech to --speaker-wav. " + (exc.message or ""),
        ) from None


@dataclass
class Conditioning:
    """GPT conditioning latents and the decoder's speaker embedding of a voice."""

    gpt_cond_latent: Any  # torch.Tensor [1, 32, 1024] (perceiver) or [1, T, dim]
    speaker_embedding: Any  # torch.Tensor [1, 512, 1]
    references: list[Path]
    cache_file: Path | None = None
    cached: bool = False


def conditioning(voice: Voice, references: list[Path], cache_dir: Path | None = None) -> Conditioning:
    """Latents of ``references`` for ``voice``, computed once and then read from
    ``cache_dir/<hash>.safetensors`` (the hash covers the model identity, every
    reference file's content and the conditioning settings).

    It does what coqui's ``Xtts.get_conditioning_latents`` does: one speaker
    embedding per file (averaged) and GPT latents of the joined audio, with the
    model config's ``gpt_cond_len``, ``gpt_cond_chunk_len`` and ``max_ref_len``.
    """
    import torch

    if not references:
        raise InputError("No reference audio to clone the voice from.", hint="Pass --speaker-wav FILE.")
    refs = [Path(r) for r in references]
    cfg = voice.model.config
    cond_len = int(getattr(cfg, "gpt_cond_len", 12))
    chunk_len = int(getattr(cfg, "gpt_cond_chunk_len", 4))
    max_ref = int(getattr(cfg, "max_ref_len", 10))
    norm = bool(getattr(cfg, "sound_norm_refs", False))

    missing = [r for r in refs if not r.is_file()]
    if missing:
        raise InputError(
            "Reference audio does not exist: " + ", ".join(str(m) for m in missing) + ".",
            hint="Pass existing audio files to --speaker-wav.",
        )
    key_src = json.dumps(
        {
            "model": voice.identity,
            "refs": [sha256_file(r) for r in refs],
            "cond": [cond_len, chunk_len, max_ref, norm, REFERENCE_SAMPLE_RATE],
            "v": 1,
        },
        sort_keys=True,
    )
    key = hashlib.sha256(key_src.encode()).hexdigest()[:24]
    cache_file = Path(cache_dir) / f"{key}.safetensors" if cache_dir else None
    if cache_file is not None and cache_file.is_file():
        from safetensors.torch import load_file

        try:
            t = load_file(str(cache_file))
            log.info("Conditioning latents from the cache (%s).", cache_file.name)
            return Conditioning(t["gpt_cond_latent"], t["speaker_embedding"], refs, cache_file, cached=True)
        except Exception as exc:  # noqa: BLE001 - a broken cache entry is recomputed
            log.warning("Ignoring a broken latent cache entry %s (%s).", cache_file, exc)

    audios = []
    embeddings = []
    model = voice.model
    for ref in refs:
        audio = torch.from_numpy(load_reference(ref))[None, : REFERENCE_SAMPLE_RATE * max_ref].to(model.device)
        if norm:
            audio = (audio / audio.abs().max()) * 0.75
        embeddings.append(model.get_speaker_embedding(audio, REFERENCE_SAMPLE_RATE))
        audios.append(audio)
    with torch.inference_mode():
        latent = model.get_gpt_cond_latents(
            torch.cat(audios, dim=-1), REFERENCE_SAMPLE_RATE, length=cond_len, chunk_length=chunk_len
        )
    speaker = torch.stack(embeddings).mean(dim=0)
    latent = latent.detach().cpu().contiguous()
    speaker = speaker.detach().cpu().contiguous()
    if cache_file is not None:
        from safetensors.torch import save_file

        with atomic_path(cache_file) as tmp:
            save_file({"gpt_cond_latent": latent, "speaker_embedding": speaker}, str(tmp), metadata={"key": key_src})
    return Conditioning(latent, speaker, refs, cache_file, cached=False)


# ---------------------------------------------------------------------------
# speaking and writing
# ---------------------------------------------------------------------------


def seed_everything(seed: int) -> None:
    """Seed torch, numpy and random: the same seed gives the same audio."""
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def prepare_text(model: Any, text: str, language: str) -> list[str]:
    """The sentences ``model`` will speak for ``text`` in ``language`` (already normalized):
    the language checked against the model's, the text expanded (:mod:`xttsft.textnorm`), split
    under the tokenizer's character limit and checked for characters it cannot encode.
    ``speak`` and ``xttsft serve`` both go through it."""
    langs = list(getattr(model.config, "languages", []) or SUPPORTED_LANGUAGES)
    if language not in langs and not (language == "zh-cn" and "zh" in langs):
        raise InputError(
            f"Language {language!r} is not supported by this model.", hint=f"Use one of: {', '.join(langs)}."
        )

    # what coqui reads wrong (pt: R$ 5,50, 14h30, "ponto" at a sentence end) is written out first,
    # as build wrote the text the voice was trained on
    chunks = split_text(expand(text, language), language, _char_limit(language, model.tokenizer))
    for chunk in chunks:
        check_text(model.tokenizer, chunk, language)
    return chunks


def speak(
    voice: Voice,
    cond: Conditioning,
    text: str,
    language: str,
    settings: SynthSettings,
    seed: int | None = None,
) -> tuple[np.ndarray, list[str]]:
    """Synthesize ``text``: split into sentences, generate each, join them with
    ``settings.sentence_pause`` of silence. Returns (24 kHz float32 audio, sentences)."""
    import numpy as np
    import torch

    language = normalize_language(language)
    model = voice.model
    chunks = prepare_text(model, text, language)
    if seed is not None:
        seed_everything(seed)
    gpt = model.gpt
    original_cap = gpt.max_gen_mel_tokens
    if settings.max_audio_tokens is not None:
        gpt.max_gen_mel_tokens = min(original_cap, settings.max_audio_tokens)
    pause = np.zeros(int(settings.sentence_pause * voice.sample_rate), dtype=np.float32)
    pieces: list[np.ndarray] = []
    try:
        for i, chunk in enumerate(chunks):
            out = model.inference(
                chunk,
                "zh-cn" if language == "zh-cn" else language,
                cond.gpt_cond_latent.to(model.device),
                cond.speaker_embedding.to(model.device),
                **sampling(voice, settings),
                speed=settings.speed,
                enable_text_splitting=False,
            )
            wav = out["wav"]
            wav = wav.detach().cpu().numpy() if isinstance(wav, torch.Tensor) else np.asarray(wav)
            if i:
                pieces.append(pause)
            pieces.append(wav.astype(np.float32).reshape(-1))
    finally:
        gpt.max_gen_mel_tokens = original_cap
    return np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.float32), chunks


def write_audio(wav: np.ndarray, path: Path, sample_rate: int = OUTPUT_SAMPLE_RATE) -> Path:
    """Write mono audio atomically: ``.wav`` as 16-bit PCM, any other extension
    (.mp3, .flac, .ogg, .m4a, ...) through ffmpeg, which picks the format."""
    import numpy as np
    import soundfile as sf

    path = Path(path)
    ext = path.suffix.lower()
    if not ext:
        raise InputError(f"Output {path} has no extension.", hint="Name it like out.wav, out.mp3 or out.flac.")
    data = np.clip(np.asarray(wav, dtype=np.float32).reshape(-1), -1.0, 1.0)
    if ext == ".wav":
        return write_wav(path, data, sample_rate)
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        raise MissingDependencyError(
            f"Writing {ext} files needs ffmpeg, which is not installed.",
            hint="Install ffmpeg (apt-get install ffmpeg), or write a .wav file.",
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    import tempfile

    with (
        tempfile.TemporaryDirectory(prefix=".xttsft-", dir=path.parent if path.parent.is_dir() else None) as td,
        atomic_path(path) as tmp,
    ):
        src = Path(td) / "audio.wav"
        sf.write(str(src), data, sample_rate, subtype="PCM_16", format="WAV")
        proc = subprocess.run(
            [ffmpeg, "-nostdin", "-loglevel", "error", "-y", "-i", str(src), str(tmp)],
            capture_output=True,
            check=False,
        )
        if proc.returncode != 0:
            why = proc.stderr.decode(errors="replace").strip().splitlines()[-1:] or ["unknown error"]
            raise InputError(
                f"ffmpeg cannot write {path.name}: {why[0]}",
                hint="Use an extension ffmpeg knows, e.g. .wav, .mp3, .flac, .ogg or .m4a.",
            )
    return path


# ---------------------------------------------------------------------------
# the command
# ---------------------------------------------------------------------------


@dataclass
class SynthItem:
    """One synthesized utterance."""

    text: str
    path: Path
    duration: float  # seconds of audio
    seconds: float  # wall time to synthesize
    sentences: int
    skipped: bool = False

    @property
    def rtf(self) -> float:
        return self.seconds / self.duration if self.duration > 0 else float("nan")


@dataclass
class SynthResult:
    """What ``synthesize`` did."""

    items: list[SynthItem]
    model: str
    language: str
    references: list[Path]
    device: str
    tiny: bool
    cached_latents: bool
    seed: int | None
    sample_rate: int = OUTPUT_SAMPLE_RATE
    manifest: Path | None = None
    notes: list[str] = field(default_factory=list)


def _slug(text: str, limit: int = 40) -> str:
    norm = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^a-zA-Z0-9]+", "_", norm).strip("_").lower()[:limit].strip("_")
    return slug or "speech"


def _item_key(voice_identity: str, refs: list[Path], text: str, language: str, settings: SynthSettings) -> str:
    payload = json.dumps(
        {
            "model": voice_identity,
            "refs": [str(r) for r in refs],
            "text": text,
            "language": language,
            "sampling": settings.model_dump(mode="json", exclude={"device", "checkpoint", "language"}),
        },
        sort_keys=True,
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def synthesize(
    settings: SynthSettings,
    ws: Workspace,
    texts: list[str],
    *,
    model: str | None = None,
    speaker_wavs: list[Path] | None = None,
    out: Path | None = None,
    out_dir: Path | None = None,
    default_base: str = "coqui/XTTS-v2",
    progress: Progress | None = None,
) -> SynthResult:
    """Speak ``texts`` with the voice ``model`` names (see :func:`resolve_model`).

    One text -> ``out`` (default ``outputs/synth/<slug>.wav``). Several texts
    (``--text-file``) -> ``out_dir/0001.wav ...`` plus ``out_dir/manifest.jsonl``;
    a re-run skips lines whose audio exists with the same text, model and
    settings. References: ``speaker_wavs``, else clips picked from the run's
    dataset (:func:`select_reference_clips`).
    """
    progress = progress or no_progress
    _check_inputs(settings, texts, speaker_wavs, out, out_dir)
    source = resolve_model(ws, model, default_base=default_base)
    progress(description="loading the model")
    voice = load_voice(ws, source, checkpoint=settings.checkpoint, device=settings.device, progress=progress)
    language = normalize_language(settings.language or voice.language or "pt")
    if settings.language is None:
        log.info("language: %s (from the %s)", language, "run" if voice.language else "default")
    refs = [Path(w) for w in speaker_wavs] if speaker_wavs else _default_references(ws, voice, settings)
    progress(description="conditioning on the references")
    cond = conditioning(voice, refs, ws.conditioning_cache_dir)
    targets, manifest = _targets(ws, texts, out, out_dir)
    previous = {r["wav"]: r for r in read_jsonl(manifest)} if manifest is not None else {}
    items: list[SynthItem] = []
    rows: list[dict[str, Any]] = []
    progress(total=len(texts), completed=0, description="synthesizing")
    for text, target in zip(texts, targets, strict=True):
        key = _item_key(voice.identity, refs, text, language, settings)
        prev = previous.get(target.name)
        if prev and prev.get("key") == key and target.is_file():  # a re-run skips what is done
            items.append(
                SynthItem(
                    text, target, float(prev.get("duration", 0)), 0.0, int(prev.get("sentences", 1)), skipped=True
                )
            )
            rows.append(prev)
        else:
            item = _speak_to(voice, cond, text, language, settings, target)
            items.append(item)
            rows.append(
                {
                    "wav": target.name,
                    "text": text,
                    "language": language,
                    "duration": round(item.duration, 3),
                    "sentences": item.sentences,
                    "seed": settings.seed,
                    "key": key,
                }
            )
            if manifest is not None:
                write_jsonl(manifest, rows + [r for n, r in previous.items() if n not in {x["wav"] for x in rows}])
        progress(advance=1)
    return SynthResult(
        items=items,
        model=voice.description,
        language=language,
        references=refs,
        device=voice.device,
        tiny=voice.tiny,
        cached_latents=cond.cached,
        seed=settings.seed,
        sample_rate=voice.sample_rate,
        manifest=manifest,
        notes=[],  # the tiny model's warning was logged once when it loaded
    )


def _check_inputs(
    settings: SynthSettings, texts: list[str], speaker_wavs: list[Path] | None, out: Path | None, out_dir: Path | None
) -> None:
    """Everything a user gave, checked before a model loads (not after it has spoken)."""
    if not texts or not any(t.strip() for t in texts):
        raise InputError("The text is empty.", hint='Give the words to speak, e.g. xttsft synth "Olá, tudo bem?"')
    if settings.language is not None:
        normalize_language(settings.language)
    for w in speaker_wavs or []:
        load_reference(Path(w))  # missing, corrupt, silent or too short
    if out is not None:
        check_output_path(out, "--out")
    if out_dir is not None:
        check_output_path(out_dir, "--out-dir", folder=True)


def _targets(ws: Workspace, texts: list[str], out: Path | None, out_dir: Path | None) -> tuple[list[Path], Path | None]:
    """One file for one text; numbered files and their manifest.jsonl for a text file."""
    if len(texts) == 1 and out_dir is None:
        return [Path(out) if out else ws.outputs_dir / "synth" / f"{_slug(texts[0])}.wav"], None
    folder = Path(out_dir) if out_dir else ws.outputs_dir / "synth" / time.strftime("%Y%m%d-%H%M%S")
    ext = Path(out).suffix if out else ".wav"
    return [folder / f"{i:04d}{ext}" for i in range(1, len(texts) + 1)], folder / "manifest.jsonl"


def _speak_to(voice: Voice, cond: Any, text: str, language: str, settings: SynthSettings, target: Path) -> SynthItem:
    t0 = time.perf_counter()
    wav, sentences = speak(voice, cond, text, language, settings, seed=settings.seed)
    elapsed = time.perf_counter() - t0
    write_audio(wav, target, voice.sample_rate)
    return SynthItem(text, target, len(wav) / voice.sample_rate, elapsed, len(sentences))


def _default_references(ws: Workspace, voice: Voice, settings: SynthSettings) -> list[Path]:
    """Reference clips when --speaker-wav is not given: the dataset's best 6-12 s
    clips, or the reference wavs shipped inside an exported model folder."""
    if voice.source.kind in {"folder", "adapter"} and voice.base_dir is not None:
        shipped = sorted(voice.base_dir.glob("reference*.wav"))
        if shipped:
            return shipped[: settings.num_references]
    dataset = voice.dataset_dir
    if dataset is None and ws.dataset_dir.is_dir():
        dataset = ws.dataset_dir
    if dataset is None or not dataset.is_dir():
        raise InputError(
            "No reference audio: pass --speaker-wav, or build a dataset to pick reference clips from.",
            hint='e.g. xttsft synth "Olá" --speaker-wav voice.wav',
        )
    refs = select_reference_clips(dataset, count=settings.num_references, split_rule=voice.dataset_split)
    log.info("reference clips: %s", ", ".join(r.name for r in refs))
    return refs
