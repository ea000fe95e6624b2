"""Transcribe the segment clips with faster-whisper, in batches, and judge them.

Input: the segment manifest (``ws.segments_manifest``) and its clips, less the
clips that ``screen`` dropped (another speaker, noise, a duplicate).
Output: ``ws.transcripts_file`` (``transcripts.jsonl``), one row per clip (see
docs/transcribe.md for every field).

**How the batching works.** Whisper pads every input to a 30 s window, so one
call per 5-15 s clip spends most of its compute on padding. Running one clip per
window through ``BatchedInferencePipeline`` does not help much on a CPU: the
encoder still processes 30 s per clip (measured here: 1.0-1.1x). What does help is
*packing*: clips of the same source file are laid side by side (first-fit decreasing),
separated by :data:`GAP_SECONDS` of silence, into windows of at most
``window_seconds`` (30 s); the windows then go through
``BatchedInferencePipeline`` ``batch_size`` at a time, with ``clip_timestamps``
set to the window edges. Each word comes back with timestamps and is given to
the clip that contains its middle, so every clip gets its own words, text and
edges. ``window_seconds=0`` decodes each clip alone in its own window (exact
per-clip decoding; slower).

Per clip we keep Whisper's statistics, tighten the clip's edges to its first and
last word plus the pad (``trim_start`` / ``trim_end``; ``build`` applies them), and
reject likely bad transcripts with a reason (:data:`REASONS`). Rows already
transcribed with the same model, language and decoding settings are reused on
a re-run; only the rejection rules are applied again.
"""

from __future__ import annotations

import bisect
import dataclasses
import gzip
import hashlib
import json
import logging
import math
import re
import time
import typing
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from xttsft.audio import read_mono
from xttsft.bundled_whisper import bundled_model_path, offline_hint
from xttsft.data.review import overrides
from xttsft.data.screen import kept_ids, read_decisions, recut_children
from xttsft.errors import DatasetError, InputError, ModelNotFoundError, SettingsError, XttsftError
from xttsft.hardware import current_recommendation, hardware_facts, whisper_model_for
from xttsft.io import atomic_write_text
from xttsft.locks import stage_lock
from xttsft.logs import log_once
from xttsft.paths import Workspace
from xttsft.progress import Progress, no_progress
from xttsft.records import ClipRecord, TranscriptReason, TranscriptRecord, Word, read_records, records_text
from xttsft.settings import TranscribeSettings

__all__ = [
    "REASONS",
    "GAP_SECONDS",
    "WhisperRuntime",
    "ClipTranscript",
    "TranscribeResult",
    "resolve_runtime",
    "load_whisper",
    "transcribe_clips",
    "clip_language_probabilities",
    "transcribe_segments",
    "judge",
    "has_repetition",
    "compression_ratio",
    "normalize_words",
    "word_error_rate",
]

log = logging.getLogger(__name__)

#: Rejection reasons, in the order they are checked.
REASONS: tuple[TranscriptReason, ...] = typing.get_args(TranscriptReason)
#: Silence between two packed clips, seconds: long enough that Whisper never runs words together.
GAP_SECONDS = 1.0
# transcripts.jsonl is rewritten after this many clips of a source (resumable long sources)
CHECKPOINT_CLIPS = 64
WHISPER_SR = 16000  # = xttsft.audio.SPEECH_SR
_FRAMES_PER_SECOND = 50  # Whisper's encoder output: 1500 frames per 30 s window
#: A detected language must be at least this probable to call a file "wrong language".
LANGUAGE_CONFIDENCE = 0.5
#: a clip is rejected as another language only when Whisper hears one XTTS-v2 speaks with this probability,
#: and the requested one below WRONG_LANGUAGE_MAX_REQUESTED. Measured with Whisper base: espeak-ng English
#: clips are en 0.89-0.92 (pt <= 0.001); espeak-ng pt-br clips scatter (th 0.79, ar 0.39, la 0.2, pt 0.32):
#: a robotic voice leads the detector to languages XTTS-v2 does not speak, which never reject a clip.
WRONG_LANGUAGE_CONFIDENCE = 0.7
WRONG_LANGUAGE_MAX_REQUESTED = 0.2
#: under ``auto``, a clip (checked alone when its packed frames looked doubtful) is another language below this
#: probability of its file's: espeak-ng German in English talks 0.01-0.22, English clips 0.94-0.99; 0.3, not the
#: file's 0.5, leaves room for short sentences, accents and names, where Whisper's detection is weakest.
AUTO_WRONG_LANGUAGE_MAX = 0.3
#: Whisper's code of each language XTTS-v2 speaks, and XTTS-v2's own (zh -> zh-cn)
XTTS_LANGUAGES = {
    "en": "en",
    "es": "es",
    "fr": "fr",
    "de": "de",
    "it": "it",
    "pt": "pt",
    "pl": "pl",
    "tr": "tr",
    "ru": "ru",
    "nl": "nl",
    "cs": "cs",
    "ar": "ar",
    "zh": "zh-cn",
    "ja": "ja",
    "hu": "hu",
    "ko": "ko",
    "hi": "hi",
}


def xtts_language(whisper_code: str) -> str | None:
    """XTTS-v2's code of a language Whisper detected, or ``None`` when XTTS-v2 does not speak it."""
    return XTTS_LANGUAGES.get(whisper_code)


#: Version of the packing/decoding procedure; part of the re-run key.
ALGO_VERSION = 4  # 3: the language is checked per clip; 4: from the decoding's encoder pass, also under auto


@dataclass(frozen=True)
class WhisperRuntime:
    """The resolved Whisper set-up (no ``auto`` left)."""

    model: str
    device: str
    compute_type: str
    batch_size: int


@dataclass
class ClipTranscript:
    """Whisper's output for one clip (times in seconds inside the clip)."""

    text: str
    words: list[Word]
    avg_logprob: float
    no_speech_prob: float
    compression_ratio: float
    window_clips: int = 1  # clips decoded in the same window (no_speech_prob is the window's)
    #: the clip's language probabilities, from its own frames of the window's encoder output (the pass the
    #: decoding made: see _frame_languages); None with an English-only model
    languages: dict[str, float] | None = None


@dataclass
class TranscribeResult:
    """What :func:`transcribe_segments` did."""

    transcripts: Path
    runtime: WhisperRuntime
    total: int = 0
    transcribed: int = 0
    reused: int = 0
    kept: int = 0
    rejected: Counter = field(default_factory=Counter)
    kept_seconds: float = 0.0
    audio_seconds: float = 0.0  # newly transcribed audio
    elapsed: float = 0.0  # seconds spent transcribing (model load excluded)
    load_seconds: float = 0.0
    languages: Counter = field(default_factory=Counter)
    failed: list[tuple[str, str]] = field(default_factory=list)  # (clip id, reason)
    detected: dict[str, tuple[str, float]] = field(default_factory=dict)  # --language auto: source -> (code, p)

    @property
    def realtime(self) -> float:
        """Audio seconds transcribed per wall-clock second (0 when nothing was new)."""
        return self.audio_seconds / self.elapsed if self.elapsed > 0 and self.audio_seconds else 0.0


# ------------------------------------------------------------------ set-up


def resolve_runtime(settings: TranscribeSettings) -> WhisperRuntime:
    """Replace every ``auto`` (model, device, compute type, batch size) by doctor's pick, and log it once."""

    values: dict[str, Any] = {
        "device": settings.device,
        "compute_type": settings.compute_type,
        "batch_size": settings.batch_size,
    }
    if "auto" in values.values():
        rec = current_recommendation()
        picked = {
            "device": rec.whisper_device,
            "compute_type": rec.whisper_compute_type,
            "batch_size": rec.whisper_batch_size,
        }
        for key, value in values.items():
            if value == "auto":
                values[key] = picked[key]
                log_once(log, logging.INFO, "transcribe.%s = auto -> %s (doctor's recommendation)", key, picked[key])
    model = settings.model
    if model.strip().lower() == "auto":
        model, why = whisper_model_for(hardware_facts(), str(values["device"]))
        log_once(log, logging.INFO, "Whisper: auto -> %s (%s; set TRANSCRIBE_MODEL to choose)", model, why)
    return WhisperRuntime(
        model=model,
        device=str(values["device"]),
        compute_type=str(values["compute_type"]),
        batch_size=int(values["batch_size"]),
    )


def model_unavailable(model: str, exc: BaseException, flag: str = "--model") -> ModelNotFoundError:
    """The error of a Whisper model name that is neither cached nor downloadable (offline): the model,
    the first sentence of why, and the ways out, the bundled offline models among them."""

    if isinstance(exc, ValueError) and ("Invalid model size" in str(exc) or "Repo id" in str(exc)):
        return ModelNotFoundError(
            f"Unknown Whisper model {model!r}.",
            hint="Use a name such as tiny, base, small, medium, large-v3, turbo, a Hugging Face repo id "
            "(Systran/faster-whisper-medium), a local CTranslate2 model folder, bundled-base or "
            "bundled-tiny.en (offline), or auto.",
        )
    # the first sentence of why, whole (huggingface_hub's go on with advice that does not apply here)
    why = re.split(r"(?<=[.!?])\s", str(exc).strip().split("\n", 1)[0], maxsplit=1)[0].rstrip(".")
    return ModelNotFoundError(
        f"Whisper model {model!r} is not on this machine and could not be downloaded "
        f"({type(exc).__name__}{': ' + why if why else ''}).",
        hint=offline_hint(model, flag),
    )


#: What CTranslate2 says when CUDA is present but cannot run it (a library, the driver): the CPU takes over.
_CUDA_FAILURE = re.compile(r"cuda|cublas|cudnn|libcu|\.so\b|driver", re.IGNORECASE)


def load_whisper(
    model: str, device: str = "cpu", compute_type: str = "int8", cpu_threads: int = 0, flag: str = "--model"
) -> Any:
    """A ``faster_whisper.WhisperModel`` from a name (downloaded once when online), a local folder, or
    a model bundled in a Python package (``bundled-base``, ``bundled-tiny.en``: see ``bundled_whisper``).

    On ``cuda`` the model also runs one encoder pass: CTranslate2 loads cuBLAS and cuDNN only then.
    When CUDA cannot run it, at load or at that pass (CTranslate2 4.x needs CUDA 12's libcublas.so.12,
    which a CUDA 13 system lacks), the model is loaded on the CPU in int8 instead, with one warning.

    Raises :class:`ModelNotFoundError` naming the model and how to get it when it is
    neither on disk nor downloadable (offline).
    """
    from faster_whisper import WhisperModel

    target = _whisper_target(model)
    try:
        loaded = WhisperModel(target, device=device, compute_type=compute_type, cpu_threads=cpu_threads)
        if device.startswith("cuda"):
            loaded.encode(np.zeros((loaded.model.n_mels, 3000), dtype=np.float32))  # 30 s: loads cuBLAS, cuDNN
        return loaded
    except ValueError as exc:
        if "Invalid model size" in str(exc) or "Repo id" in str(exc):
            raise model_unavailable(model, exc, flag) from None
        raise SettingsError(
            f"Whisper cannot load {model!r} on {device} with {compute_type}: {exc}",
            hint="Try --device cpu and --compute-type int8.",
        ) from None
    except OSError as exc:  # huggingface_hub's LocalEntryNotFoundError and network errors
        raise model_unavailable(model, exc, flag) from None
    except RuntimeError as exc:  # CTranslate2: a CUDA library or driver, an unsupported device / compute type
        if device.startswith("cuda") and _CUDA_FAILURE.search(str(exc)):
            return _whisper_on_cpu(WhisperModel, target, model, exc, cpu_threads)
        raise SettingsError(
            f"Whisper cannot run {model!r} on {device} with {compute_type}: {exc}",
            hint="Try --device cpu and --compute-type int8.",
        ) from None


def _whisper_target(model: str) -> str:
    """What ``WhisperModel`` is given: a bundled model's folder, a checked local folder, or the name."""

    bundled = bundled_model_path(model)  # bundled-base, bundled-tiny.en: offline, for tests and the demo
    if bundled is not None:
        model = str(bundled)
    path = Path(model).expanduser()
    local = path.exists() or model.startswith((".", "/", "~")) or "\\" in model
    if not local:
        return model
    if not path.is_dir() or not (path / "model.bin").is_file():
        raise ModelNotFoundError(
            f"Whisper model folder {path} is not a CTranslate2 model (no model.bin in it).",
            hint="Pass a folder made by ct2-transformers-converter (model.bin, config.json, tokenizer.json), "
            "or a model name such as medium or large-v3.",
        )
    return str(path)


def _whisper_on_cpu(whisper_model: Any, target: str, model: str, exc: RuntimeError, cpu_threads: int) -> Any:
    """CUDA cannot run Whisper here: the same model on the CPU in int8, with one warning saying why."""

    why = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    if re.search(r"cublas|cudnn|\.so\b", why, re.IGNORECASE):
        todo = (
            "CTranslate2 4.x needs CUDA 12's cuBLAS and cuDNN 9, which a CUDA 13 system does not have: install "
            "them (pip install nvidia-cublas-cu12 nvidia-cudnn-cu12, their lib folders on LD_LIBRARY_PATH)"
        )
    else:
        todo = "Check that nvidia-smi sees the GPU and that its driver runs CUDA 12"
    log_once(
        log,
        logging.WARNING,
        "Whisper cannot use CUDA here (%s): it transcribes on the CPU in int8 instead, "
        "several times slower. %s, or pass --device cpu to skip the attempt.",
        why,
        todo,
    )
    try:
        return whisper_model(target, device="cpu", compute_type="int8", cpu_threads=cpu_threads)
    except (RuntimeError, ValueError) as cpu_exc:
        raise SettingsError(
            f"Whisper cannot run {model!r} on cuda ({why}) nor on the CPU ({cpu_exc}).",
            hint="Check the model folder, or try another model (--model small).",
        ) from None


# ------------------------------------------------------------------ decoding


def compression_ratio(text: str) -> float:
    """Whisper's gzip compression ratio of ``text`` (high = repetitive); 0 for empty text."""
    data = text.encode("utf-8")
    return len(data) / len(gzip.compress(data)) if data else 0.0


def _pack(durations: Sequence[float], window_seconds: float) -> list[list[int]]:
    """Group clip indices into as few windows of at most ``window_seconds`` (gaps included) as
    first-fit decreasing finds; ``window_seconds <= 0``: one clip per window.

    Fewer windows means fewer 30 s encoder passes, the bulk of Whisper's work on a CPU.
    Clips keep their order inside a window; the result is deterministic.
    """
    if window_seconds <= 0:
        return [[i] for i in range(len(durations))]
    windows: list[list[int]] = []
    lengths: list[float] = []
    for i in sorted(range(len(durations)), key=lambda k: (-durations[k], k)):
        d = durations[i]
        for w, length in enumerate(lengths):
            if length + GAP_SECONDS + d <= window_seconds:
                windows[w].append(i)
                lengths[w] = length + GAP_SECONDS + d
                break
        else:
            windows.append([i])
            lengths.append(d)
    return sorted((sorted(w) for w in windows), key=lambda w: w[0])


def transcribe_clips(
    model: Any,
    clips: Sequence[np.ndarray],
    language: str,
    *,
    batch_size: int = 8,
    beam_size: int = 5,
    window_seconds: float = 30.0,
    retry_below: float = -0.8,
    retry_above_ratio: float = 2.4,
    progress: Progress | None = None,
    languages: bool = True,
) -> list[ClipTranscript]:
    """Transcribe 16 kHz mono float32 ``clips`` in batches; one :class:`ClipTranscript` per clip, in order.

    Clips are packed into windows (see the module docstring) and the windows are
    decoded ``batch_size`` at a time. ``window_seconds=0`` gives every clip its
    own window. The output of a clip does not depend on ``batch_size``. A packed
    clip that comes back without words, with an average log-probability under
    ``retry_below``, a high compression ratio, no letters or a repetition loop is
    decoded again alone, and that result is kept. ``languages``: each clip's language probabilities too
    (multilingual models; see :func:`_frame_languages`).
    """
    progress = progress or no_progress
    pipeline = _pipeline(model)
    durations = [len(c) / WHISPER_SR for c in clips]
    windows = _pack(durations, min(window_seconds, 30.0))
    out = _decode_windows(pipeline, clips, windows, language, batch_size, beam_size, progress, languages)
    # A packed clip that came back empty or doubtful is decoded again alone: packing must never
    # cost a clip its words, and alone it gets its own no-speech probability.
    retry = [i for i, o in enumerate(out) if o.window_clips > 1 and _doubtful(o, retry_below, retry_above_ratio)]
    if retry:
        log.debug("decoding %d doubtful packed clip(s) again alone", len(retry))
        again = _decode_windows(
            pipeline,
            [clips[i] for i in retry],
            [[k] for k in range(len(retry))],
            language,
            batch_size,
            beam_size,
            no_progress,
            languages,
        )
        for i, o in zip(retry, again, strict=True):
            out[i] = o
    return out


def _pipeline(model: Any) -> Any:
    """A ``BatchedInferencePipeline`` that keeps the encoder output of each batch of windows it decodes
    (``encoded``), so that each clip's language is read from the pass the decoding made anyway."""
    from faster_whisper import BatchedInferencePipeline

    class _KeepEncoded(BatchedInferencePipeline):
        encoded: list[Any]

        def generate_segment_batched(self, features: Any, tokenizer: Any, options: Any) -> Any:
            encoder_output, output = super().generate_segment_batched(features, tokenizer, options)
            self.encoded.append(encoder_output)
            return encoder_output, output

    pipeline = _KeepEncoded(model)
    pipeline.encoded = []
    return pipeline


def _frame_languages(
    pipeline: Any, group: list[list[int]], spans: dict[int, tuple[float, float]], edges: list[dict[str, float]]
) -> dict[int, dict[str, float]]:
    """Each clip's language probabilities from its own frames of its window's encoder output.

    Whisper's language detection is one decoder step over encoder frames (20 ms each). Given only the clip's
    frames, it hears the clip alone; the windows were encoded for the decoding already, so the check costs one
    decoder step per clip instead of one more 30 s encoder pass (a ``detect_language`` call per clip).
    Empty with an English-only model, or a faster-whisper that does not hand the encoder output back."""
    import ctranslate2

    encoded = pipeline.encoded
    if not pipeline.model.model.is_multilingual or not encoded:
        return {}
    arrays = [
        np.asarray(e.to_device(ctranslate2.Device.cpu) if e.device != "cpu" else e, dtype=np.float32) for e in encoded
    ]
    frames = np.concatenate(arrays) if len(arrays) > 1 else arrays[0]  # [windows, 1500, d_model]
    if frames.shape[0] != len(group):
        return {}
    n_mels = pipeline.model.model.n_mels
    out: dict[int, dict[str, float]] = {}
    for wi, win in enumerate(group):
        for i in win:
            c0, c1 = (t - edges[wi]["start"] for t in spans[i])
            f0 = min(max(int(c0 * _FRAMES_PER_SECOND), 0), frames.shape[1] - 1)
            f1 = min(max(math.ceil(c1 * _FRAMES_PER_SECOND), f0 + 1), frames.shape[1])
            if f1 - f0 == n_mels:  # CTranslate2 would read n_mels frames as a spectrogram: one frame more
                f0, f1 = (f0, f1 + 1) if f1 < frames.shape[1] else (f0 - 1, f1)
            part = ctranslate2.StorageView.from_array(np.ascontiguousarray(frames[wi : wi + 1, f0:f1]))
            out[i] = {token[2:-2]: float(p) for token, p in pipeline.model.model.detect_language(part)[0]}
    return out


def clip_language_probabilities(
    model: Any,
    outs: Sequence[ClipTranscript | None],
    clips: Sequence[np.ndarray],
    language: str,
    requested: str,
) -> list[dict[str, float] | None]:
    """The language probabilities each clip decoded in ``language`` is judged by (``requested``: the setting);
    ``None`` for a clip not decoded.

    First the clip's frames of its decoding's encoder pass (``out.languages``: no encoder work of its own).
    Those frames also hear their neighbours (one espeak clip twice in a window: the second heard as zh 0.8,
    en 0.12; alone, en 0.92), so a suspect clip is checked again alone (``detect_language``, one 30 s encoder
    pass), and that decides: the extra pass is paid by the suspect clips only. A clip is suspect when its
    frames make it wrong (:func:`judge`'s rule) or, where Whisper knows the language in this voice (``auto``,
    or the clips' median probability of it >= LANGUAGE_CONFIDENCE), when they give it less than that (under
    ``auto``, less than AUTO_WRONG_LANGUAGE_MAX, the bar the clip is judged by)."""
    heard = [o.languages if o is not None else None for o in outs]
    typical = [h.get(language, 0.0) for h in heard if h is not None]
    known = requested == "auto" or (bool(typical) and float(np.median(typical)) >= LANGUAGE_CONFIDENCE)
    # under auto, a clip whose frames already clear the bar it is judged by needs no pass of its own: foreign
    # clips' frames gave their file's language 0.001-0.24 beside English neighbours, good ones 0.32-0.99
    bar = AUTO_WRONG_LANGUAGE_MAX if requested == "auto" else LANGUAGE_CONFIDENCE
    result: list[dict[str, float] | None] = []
    for out, probs, clip in zip(outs, heard, clips, strict=True):
        suspect = probs is None or (
            (known and probs.get(language, 0.0) < bar) or _wrong_language(_as_heard(language, probs), requested)
        )
        result.append(None if out is None else _detect(model, [clip])[2] if suspect else probs)
    return result


def _as_heard(language: str, probs: dict[str, float]) -> Heard:
    detected = max(probs, key=lambda k: probs[k])
    return Heard(
        language=language,
        language_probability=probs.get(language, 0.0),
        detected_language=detected,
        detected_probability=probs[detected],
    )


def _doubtful(o: ClipTranscript, retry_below: float, max_ratio: float = 2.4) -> bool:
    return (
        not o.words
        or o.avg_logprob < retry_below
        or o.compression_ratio > max_ratio
        or not _LETTER.search(o.text)
        or has_repetition(o.text)
    )


def _decode_windows(
    pipeline: Any,
    clips: Sequence[np.ndarray],
    windows: list[list[int]],
    language: str,
    batch_size: int,
    beam_size: int,
    progress: Progress,
    languages: bool = True,
) -> list[ClipTranscript]:
    gap = np.zeros(int(GAP_SECONDS * WHISPER_SR), dtype=np.float32)
    out: list[ClipTranscript | None] = [None] * len(clips)

    for b in range(0, len(windows), batch_size):
        group = windows[b : b + batch_size]
        audio, spans, edges = _concatenate(clips, group, gap)
        segments, _ = pipeline.transcribe(
            audio,
            language=language,
            beam_size=beam_size,
            word_timestamps=True,
            clip_timestamps=edges,
            batch_size=batch_size,
            vad_filter=False,
        )
        words: dict[int, list[Word]] = {i: [] for win in group for i in win}
        stats: dict[int, tuple[float, float]] = {}  # window index in group -> (avg_logprob, no_speech_prob)
        starts = [e["start"] for e in edges]
        for seg in segments:
            # the window that contains the segment's start (a window yields several segments,
            # so "nearest window start" would hand a late segment to the next window)
            # Whisper's times come in 20 ms steps, so a segment may start just before its window;
            # windows are GAP_SECONDS apart, so half a gap of slack is unambiguous.
            wi = max(0, bisect.bisect_right(starts, seg.start + GAP_SECONDS / 2) - 1)
            stats.setdefault(wi, (float(seg.avg_logprob), float(seg.no_speech_prob)))
            for w in seg.words or []:  # faster-whisper's Word, in the window's time: the clip's Word record
                mid = (w.start + w.end) / 2
                owner = min(group[wi], key=lambda i: _distance(mid, spans[i]))
                c0, c1 = spans[owner]
                dur = c1 - c0
                words[owner].append(
                    Word(
                        word=w.word,
                        start=round(min(max(w.start - c0, 0.0), dur), 3),
                        end=round(min(max(w.end - c0, 0.0), dur), 3),
                        probability=round(float(w.probability), 4),
                    )
                )
        heard = _frame_languages(pipeline, group, spans, edges) if languages else {}
        pipeline.encoded.clear()
        for wi, win in enumerate(group):
            avg_logprob, no_speech = stats.get(wi, (0.0, 1.0))
            for i in win:
                ws_ = words[i]
                text = "".join(w.word for w in ws_).strip()
                if len(win) > 1:  # packed: this clip's share of the window
                    avg_logprob = (
                        float(np.mean([math.log(max(w.probability, 1e-6)) for w in ws_])) if ws_ else -math.inf
                    )
                out[i] = ClipTranscript(
                    text=text,
                    words=ws_,
                    avg_logprob=round(avg_logprob, 4) if math.isfinite(avg_logprob) else -10.0,
                    no_speech_prob=round(no_speech, 4),
                    compression_ratio=round(compression_ratio(text), 4),
                    window_clips=len(win),
                    languages=heard.get(i),
                )
        progress(advance=sum(len(win) for win in group))
    return [o for o in out if o is not None]


def _concatenate(
    clips: Sequence[np.ndarray], group: list[list[int]], gap: np.ndarray
) -> tuple[np.ndarray, dict[int, tuple[float, float]], list[dict[str, float]]]:
    """The windows of ``group`` as one signal, a gap between clips and windows; each clip's span (seconds)
    in it, and each window's edges (Whisper's ``clip_timestamps``)."""
    parts: list[np.ndarray] = []
    spans: dict[int, tuple[float, float]] = {}  # clip index -> (start, end) in the concatenation
    edges: list[dict[str, float]] = []
    pos = 0
    for win in group:
        w_start = pos
        for k, i in enumerate(win):
            if k:
                parts.append(gap)
                pos += len(gap)
            spans[i] = (pos / WHISPER_SR, (pos + len(clips[i])) / WHISPER_SR)
            parts.append(np.asarray(clips[i], dtype=np.float32))
            pos += len(clips[i])
        edges.append({"start": w_start / WHISPER_SR, "end": pos / WHISPER_SR})
        parts.append(gap)  # windows never touch
        pos += len(gap)
    return np.concatenate(parts), spans, edges


def _distance(t: float, span: tuple[float, float]) -> float:
    return 0.0 if span[0] <= t <= span[1] else min(abs(t - span[0]), abs(t - span[1]))


# ------------------------------------------------------------------ judging

_LETTER = re.compile(r"[^\W\d_]", re.UNICODE)


def normalize_words(text: str) -> list[str]:
    """Lower-case words without punctuation (for WER and n-gram checks)."""
    text = unicodedata.normalize("NFKC", text).lower().replace("-", " ")
    return [w for w in re.sub(r"[^\w' ]+", " ", text).split() if w.strip("'")]


def has_repetition(text: str) -> bool:
    """True when an n-gram (n = 1..5) repeats back to back: 4x for one word, 3x for longer ones.

    That is Whisper's typical hallucination loop ("thank you thank you thank you").
    """
    words = normalize_words(text)
    for n in range(1, 6):
        need = 4 if n == 1 else 3
        for start in range(0, len(words) - n * need + 1):
            gram = words[start : start + n]
            if all(words[start + k * n : start + (k + 1) * n] == gram for k in range(1, need)):
                return True
    return False


@dataclass
class Heard:
    """What :func:`judge` weighs: Whisper's figures of one clip (a :class:`TranscriptRecord` has them all)."""

    text: str = ""
    language: str | None = None
    language_probability: float | None = None
    detected_language: str | None = None
    detected_probability: float | None = None
    avg_logprob: float = 0.0
    no_speech_prob: float = 0.0
    compression_ratio: float = 0.0
    window_clips: int = 1

    @classmethod
    def of(cls, row: Mapping[str, Any]) -> Heard:
        """The figures a mapping holds (the rest at their defaults)."""
        return cls(**{f.name: row[f.name] for f in dataclasses.fields(cls) if f.name in row})


def _wrong_language(row: TranscriptRecord | Heard, requested: str) -> bool:
    """The row's clip is not in the language it was decoded in (``language``: the requested one, or under
    ``auto`` its file's), as Whisper heard the clip (``detected_language``; see :func:`clip_language_probabilities`).

    Under ``auto`` the clip must be heard in its file's language with AUTO_WRONG_LANGUAGE_MAX at least: the file
    was, on its first 30 s, so Whisper knows the language in this voice, and a clip where it falls below is in
    another one, whichever Whisper names (espeak-ng German in an English talk: en
    0.01-0.22, heard as German or as nothing in particular; the English clips: en 0.94-0.99). With a language given, the
    clip is wrong only when that language gets under WRONG_LANGUAGE_MAX_REQUESTED and Whisper hears another one
    XTTS-v2 speaks clearly (WRONG_LANGUAGE_CONFIDENCE): a robotic voice leads Whisper to unrelated languages, and
    it may not hear the requested language at all (espeak-ng pt-br: pt <= 0.01)."""
    decoded = row.language or (None if requested == "auto" else requested)
    detected = row.detected_language
    if decoded is None or detected is None:
        return False
    p_decoded = float(row.language_probability or 0.0)
    if requested == "auto":
        return p_decoded < AUTO_WRONG_LANGUAGE_MAX
    return (
        detected != decoded
        and p_decoded < WRONG_LANGUAGE_MAX_REQUESTED
        and xtts_language(detected) is not None
        and float(row.detected_probability or 0.0) >= WRONG_LANGUAGE_CONFIDENCE
    )


def judge(
    row: TranscriptRecord | Heard | Mapping[str, Any], settings: TranscribeSettings, requested_language: str
) -> TranscriptReason | None:
    """The rejection reason of a transcript row (one of :data:`REASONS`), or None to keep it.

    ``row`` is a record, or a mapping of some of its fields (the others at their defaults)."""
    if isinstance(row, Mapping):
        row = Heard.of(row)
    if _wrong_language(row, requested_language):
        return "wrong_language"
    text = (row.text or "").strip()
    if not text:
        return "empty_text"
    if not _LETTER.search(text):
        return "no_letters"
    if has_repetition(text):
        return "repetition"
    alone = (row.window_clips or 1) == 1  # a packed clip's no_speech_prob is its window's
    if (alone and row.no_speech_prob > settings.max_no_speech_prob) or (
        row.compression_ratio > settings.max_compression_ratio
    ):
        return "hallucination"
    if row.avg_logprob < settings.min_avg_logprob:
        return "low_confidence"
    return None


def _speech_edges(x: np.ndarray, words: list[Word], sr: int = WHISPER_SR) -> tuple[float, float] | None:
    """First and last word edges, corrected with the clip's energy so no sound is cut.

    Whisper's word timestamps are off by up to a few tenths of a second (the first
    word often "starts" at 0, the last one may end before its final consonant).
    Each edge is moved onto sound when it lies in silence, and outwards to the end
    of the sound it lies in: the edge never falls inside a voiced stretch.
    """
    if not words:
        return None
    hop = sr // 100  # 10 ms frames
    n = len(x) // hop
    if n == 0:
        return words[0].start, words[-1].end
    frames = x[: n * hop].reshape(n, hop).astype(np.float64)
    db = 10 * np.log10(np.mean(frames**2, axis=1) + 1e-12)
    floor = max(float(db.max()) - 45.0, float(np.percentile(db, 10)) + 6.0, -70.0)
    voiced = db > floor
    bridge = 5
    first = min(int(words[0].start * 100), n - 1)
    last = min(max(int(math.ceil(words[-1].end * 100)) - 1, 0), n - 1)
    first_end = min(max(int(words[0].end * 100), first), n - 1)
    last_start = max(min(int(words[-1].start * 100), last), 0)
    if not voiced[first] and voiced[first : first_end + 1].any():  # edge in silence: step onto the word
        first += int(np.argmax(voiced[first : first_end + 1]))
    while first > 0 and voiced[max(0, first - bridge) : first].any():  # gaps under 50 ms are bridged
        first -= 1
    if not voiced[last] and voiced[last_start : last + 1].any():
        last = last_start + int(np.flatnonzero(voiced[last_start : last + 1])[-1])
    while last < n - 1 and voiced[last + 1 : last + 1 + bridge].any():
        last += 1
    if last < first:
        return words[0].start, words[-1].end
    return first / 100, (last + 1) / 100


def _round_edges(edges: tuple[float, float] | None) -> list[float] | None:
    return [round(edges[0], 3), round(edges[1], 3)] if edges else None


def _trim(edges: Sequence[float] | None, duration: float, pad: float) -> tuple[float, float]:
    if not edges:
        return 0.0, round(duration, 3)
    start = max(0.0, edges[0] - pad)
    end = min(duration, edges[1] + pad)
    if end <= start:
        return 0.0, round(duration, 3)
    return round(start, 3), round(end, 3)


def word_error_rate(references: Sequence[str] | str, hypotheses: Sequence[str] | str) -> float:
    """Word error rate (substitutions + deletions + insertions over reference words), case and punctuation ignored."""
    if isinstance(references, str):
        references, hypotheses = [references], [hypotheses]  # type: ignore[list-item]
    errors = total = 0
    for ref, hyp in zip(references, hypotheses, strict=True):
        r, h = normalize_words(ref), normalize_words(hyp)
        total += len(r)
        prev = list(range(len(h) + 1))
        for i, rw in enumerate(r, 1):
            cur = [i] + [0] * len(h)
            for j, hw in enumerate(h, 1):
                cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (rw != hw))
            prev = cur
        errors += prev[len(h)]
    return errors / total if total else float(errors > 0)


# ------------------------------------------------------------------ the stage


def _load_clip(path: Path) -> np.ndarray:
    """A clip as 16 kHz mono float32."""

    x = read_mono(path, WHISPER_SR)
    if x.size == 0:
        raise InputError(f"{path.name}: the clip is empty.", hint="Run `xttsft segment --force` to re-create it.")
    return x


def _key(seg: ClipRecord, settings: TranscribeSettings, language: str, model: str) -> str:
    """The re-run key of one clip; ``model`` is the resolved one (never ``auto``)."""
    data = {
        "algo": ALGO_VERSION,
        "model": model,
        "language": language,
        "beam": settings.beam_size,
        "clip_language": settings.check_clip_language,
        "window": settings.window_seconds,
        "source_sha256": seg.source_sha256,
        "start": seg.start,
        "end": seg.end,
        "wav": seg.wav,
    }
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def _detect(model: Any, clips: list[np.ndarray]) -> tuple[str, float, dict[str, float]]:
    """Language of a source from (up to) its first 30 s of clips."""
    first: list[np.ndarray] = []
    n = 0
    for c in clips:  # only what the first 30 s need, not a copy of the whole source
        first.append(c)
        n += len(c)
        if n >= 30 * WHISPER_SR:
            break
    audio = np.concatenate(first)[: 30 * WHISPER_SR]
    lang, prob, all_probs = model.detect_language(audio=audio)
    return lang, float(prob), dict(all_probs or [])


@dataclass
class _Language:
    """The language a clip is transcribed in and its probability, and what Whisper heard (the file's, or the
    clip's own: see _Job._clip_languages)."""

    language: str
    probability: float
    detected: str
    detected_probability: float
    multilingual: bool
    wrong: bool = False  # the file, checked once, was heard confidently as another language: not decoded


@dataclass
class _Job:
    """One transcribe run over sources: loads CHECKPOINT_CLIPS clips at a time, so memory stays
    flat however long a source is."""

    model: Any
    settings: TranscribeSettings
    runtime: WhisperRuntime
    requested: str
    multilingual: bool
    ws: Workspace
    result: TranscribeResult
    progress: Progress
    pad: float

    def source(self, source: str, segs: list[ClipRecord]) -> Iterator[list[TranscriptRecord]]:
        """The transcript rows of one source's clips, a part at a time."""
        lang: _Language | None = None
        for c0 in range(0, len(segs), CHECKPOINT_CLIPS):
            part, audios = self._load(segs[c0 : c0 + CHECKPOINT_CLIPS])
            if not part:
                continue
            if lang is None:
                lang = self._source_language(source, audios)
            outs = self._decode(audios, lang)
            yield [
                self._row(seg, a, out, cl)
                for seg, a, out, cl in zip(part, audios, outs, self._clip_languages(lang, outs, audios), strict=True)
            ]

    def _load(self, segs: list[ClipRecord]) -> tuple[list[ClipRecord], list[np.ndarray]]:
        ok, audios = [], []
        for seg in segs:
            try:
                audios.append(_load_clip(self.ws.segments_dir / seg.wav))
                ok.append(seg)
            except XttsftError as exc:
                log.warning("%s: %s", seg.id, exc.message)
                self.result.failed.append((seg.id, exc.message))
                self.progress(advance=1)
        return ok, audios

    def _source_language(self, source: str, audios: list[np.ndarray]) -> _Language:
        """``auto``: the source's language from its first 30 s, or a refusal when Whisper is unsure
        or hears a language XTTS-v2 does not speak. A given language: that one (checked on the whole
        file once when each clip's language is not checked)."""
        shown = source or "(no source)"
        if not self.multilingual:
            return _Language("en", 1.0, "en", 1.0, False)
        if self.requested != "auto":
            if self.settings.check_clip_language:
                return _Language(self.requested, 1.0, self.requested, 1.0, True)
            return self._heard(_detect(self.model, audios), shown)  # the whole file, once
        detected, prob, all_probs = _detect(self.model, audios)
        self.result.detected[shown] = (detected, round(prob, 3))
        top = ", ".join(f"{k} {v:.2f}" for k, v in sorted(all_probs.items(), key=lambda kv: -kv[1])[:3])
        if prob < LANGUAGE_CONFIDENCE or xtts_language(detected) is None:
            why = (
                "XTTS-v2 does not speak it"
                if xtts_language(detected) is None
                else f"below the {LANGUAGE_CONFIDENCE:g} needed to trust it"
            )
            raise SettingsError(
                f"{shown}: Whisper is not sure which language this is (it heard {top}; {why}).",
                hint="Say it with --language (pt, en, es, fr, de, it, ...); TRANSCRIBE_LANGUAGE=pt in .env keeps it.",
            )
        log.info("%s: language %s (p=%.2f)", shown, detected, prob)
        return _Language(detected, prob, detected, prob, True)

    def _clip_languages(
        self, lang: _Language, outs: list[ClipTranscript | None], audios: list[np.ndarray]
    ) -> list[_Language]:
        """Each clip's own language (``check_clip_language``, a multilingual model), as
        :func:`clip_language_probabilities` hears it; :func:`judge` rejects the clip when it is not in the
        language it was decoded in (see _wrong_language)."""
        if not lang.multilingual or lang.wrong or not self.settings.check_clip_language:
            return [lang] * len(outs)
        out: list[_Language] = []
        for probs in clip_language_probabilities(self.model, outs, audios, lang.language, self.requested):
            if probs is None:
                out.append(lang)
                continue
            detected = max(probs, key=lambda k: probs[k])
            out.append(_Language(lang.language, probs.get(lang.language, 0.0), detected, probs[detected], True))
        return out

    def _heard(self, detection: tuple[str, float, dict[str, float]], source: str) -> _Language:
        """The requested language, and whether Whisper clearly heard another one XTTS-v2 speaks in the file."""
        detected, prob, all_probs = detection
        requested_p = all_probs.get(self.requested, 0.0)
        wrong = (
            detected != self.requested
            and xtts_language(detected) is not None
            and prob >= WRONG_LANGUAGE_CONFIDENCE
            and requested_p < WRONG_LANGUAGE_MAX_REQUESTED
        )
        if wrong:
            log.warning(
                "%s: speech detected as %s (p=%.2f), not %s: its clips are rejected",
                source,
                detected,
                prob,
                self.requested,
            )
        return _Language(self.requested, requested_p, detected, prob, True, wrong)

    def _decode(self, audios: list[np.ndarray], lang: _Language) -> list[ClipTranscript | None]:
        if lang.wrong:  # the whole file is in another language
            self.progress(advance=len(audios))
            return [None] * len(audios)
        st = self.settings
        return list(
            transcribe_clips(
                self.model,
                audios,
                lang.language,
                batch_size=self.runtime.batch_size,
                beam_size=st.beam_size,
                window_seconds=st.window_seconds,
                retry_below=max(st.min_avg_logprob, -0.8),
                retry_above_ratio=min(st.max_compression_ratio, 2.4),
                progress=self.progress,
                languages=st.check_clip_language,
            )
        )

    def _row(
        self, seg: ClipRecord, audio_: np.ndarray, out: ClipTranscript | None, lang: _Language
    ) -> TranscriptRecord:
        duration = len(audio_) / WHISPER_SR
        self.result.audio_seconds += duration
        self.result.transcribed += 1
        row = TranscriptRecord(
            id=seg.id,
            wav=seg.wav,
            text=out.text if out else "",
            language=lang.language,
            language_probability=round(lang.probability, 4),
            detected_language=lang.detected if lang.multilingual else None,
            detected_probability=round(lang.detected_probability, 4) if lang.multilingual else None,
            avg_logprob=out.avg_logprob if out else 0.0,
            no_speech_prob=out.no_speech_prob if out else 0.0,
            compression_ratio=out.compression_ratio if out else 0.0,
            window_clips=out.window_clips if out else 1,
            words=out.words if out else [],
            speech=_round_edges(_speech_edges(audio_, out.words if out else [])),
            duration=round(duration, 3),
            model=self.runtime.model,
            requested_language=self.requested,
            key=_key(seg, self.settings, self.requested, self.runtime.model),
            trim_start=0.0,
            trim_end=round(duration, 3),
            status="ok",  # the verdict: _finish
        )
        return _finish(row, self.settings, self.requested, self.pad)


@stage_lock("transcribe", after=("segment", "screen"))
def transcribe_segments(
    settings: TranscribeSettings,
    ws: Workspace,
    *,
    pad: float = 0.2,
    model: Any | None = None,
    progress: Progress | None = None,
) -> TranscribeResult:
    """Transcribe every clip of the segment manifest that is not transcribed yet.

    ``pad`` is the silence kept around the first and last word (``segment.pad``).
    ``model`` is an already loaded ``WhisperModel`` (tests, run-all); otherwise it is
    loaded from ``settings.model``. Writes ``ws.transcripts_file`` after every CHECKPOINT_CLIPS clips,
    so an interrupted run keeps what it finished.
    """
    progress = progress or no_progress
    full_manifest = read_records(ws.segments_manifest, ClipRecord)
    if not full_manifest:
        raise DatasetError(
            f"No segments to transcribe: {ws.segments_manifest} is missing or empty.",
            hint="Run `xttsft segment` first (it writes the clips and their manifest).",
        )
    manifest, screened = _screened(ws, full_manifest)
    runtime = resolve_runtime(settings)
    result = TranscribeResult(transcripts=ws.transcripts_file, runtime=runtime, total=len(manifest))
    requested = settings.language.strip().lower()
    store, todo = _Transcripts.load(
        ws.transcripts_file,
        full_manifest,
        manifest,
        screened,
        lambda seg: _key(seg, settings, requested, runtime.model),
    )
    result.reused = len(store.done)
    if todo:
        log.info("%d of %d clips to transcribe (%d already done)", len(todo), len(manifest), len(store.done))
        model = _open_model(model, runtime, requested, result)
        job = _Job(model, settings, runtime, requested, bool(model.model.is_multilingual), ws, result, progress, pad)
        _run_job(job, todo, store)
    for row in store.done.values():  # the (possibly changed) rejection rules and pad, on reused rows too
        _finish(row, settings, requested, pad)
    store.save()
    _tally(result, store.done.values())
    return result


def _finish(row: TranscriptRecord, settings: TranscribeSettings, requested: str, pad: float) -> TranscriptRecord:
    """The row's trimmed edges (its speech plus ``pad``) and verdict (:func:`judge`)."""
    row.trim_start, row.trim_end = _trim(row.speech, row.duration or 0.0, pad)
    reason = judge(row, settings, requested)
    row.status = "rejected" if reason else "ok"
    row.reason = reason
    return row


@dataclass
class _Transcripts:
    """``transcripts.jsonl`` as this run keeps it: the rows done (reused or new) and, set aside, the rows of
    clips the screen drops now (a looser screen later reuses them), in the manifest's order."""

    path: Path
    order: list[ClipRecord]
    done: dict[str, TranscriptRecord]
    aside: dict[str, TranscriptRecord]

    @classmethod
    def load(
        cls,
        path: Path,
        full_manifest: list[ClipRecord],
        manifest: list[ClipRecord],
        screened: set[str] | None,
        key: Callable[[ClipRecord], str],
    ) -> tuple[_Transcripts, list[ClipRecord]]:
        """The rows on disk that still fit their clip (same ``key``), and the clips left to transcribe."""
        old = {r.id: r for r in read_records(path, TranscriptRecord)}
        done: dict[str, TranscriptRecord] = {}
        todo: list[ClipRecord] = []
        for seg in manifest:
            prev = old.get(seg.id)
            if prev is not None and prev.key == key(seg):
                done[seg.id] = prev
            else:
                todo.append(seg)
        aside = {
            s.id: old[s.id]
            for s in full_manifest
            if s.id not in done and s.id in old and (screened is not None and s.id not in screened)
        }
        return cls(path, full_manifest, done, aside), todo

    def save(self) -> None:
        """Write the file; an unchanged re-run rewrites nothing."""
        rows = [self.done.get(s.id) or self.aside[s.id] for s in self.order if s.id in self.done or s.id in self.aside]
        text = records_text(self.path, TranscriptRecord, rows)
        current = self.path.read_text(encoding="utf-8") if self.path.exists() else None
        if text != current:
            atomic_write_text(self.path, text)


def _run_job(job: _Job, todo: list[ClipRecord], store: _Transcripts) -> None:
    """Transcribe ``todo``, source by source (the language is decided per source file), saving as it goes."""
    job.progress(total=len(todo), completed=0, description="transcribe")
    t1 = time.perf_counter()
    by_source: dict[str, list[ClipRecord]] = {}
    for seg in todo:
        by_source.setdefault(seg.source, []).append(seg)
    for source, segs in by_source.items():
        for rows in job.source(source, segs):  # CHECKPOINT_CLIPS clips at a time, then saved
            for row in rows:
                store.done[row.id] = row
            store.save()
    job.result.elapsed = time.perf_counter() - t1


def _screened(ws: Workspace, manifest: list[ClipRecord]) -> tuple[list[ClipRecord], set[str] | None]:
    """The clips ``xttsft screen`` kept (all of them when it has not run), and its kept ids. A clip the screen
    dropped and a person kept in ``xttsft review`` is transcribed too: build then takes it."""

    screened = kept_ids(ws, manifest)
    if screened is None:
        return manifest, None
    kept_in_review = {cid for cid, r in overrides(ws).rows.items() if r.decision == "keep"}
    screened |= kept_in_review
    screened -= set(recut_children(read_decisions(ws, manifest), kept_in_review))  # their parent has the audio
    kept = [seg for seg in manifest if seg.id in screened]
    if len(kept) < len(manifest):
        log.info("%d clip(s) dropped by `xttsft screen` are not transcribed", len(manifest) - len(kept))
    if not kept:
        raise DatasetError(
            "Every clip was dropped by `xttsft screen`; there is nothing to transcribe.",
            hint=f"See {ws.screen_file} for the reasons.",
        )
    return kept, screened


def _open_model(model: Any | None, runtime: WhisperRuntime, requested: str, result: TranscribeResult) -> Any:
    """The given Whisper model, or the settings' one loaded (timed); an English-only one takes only en."""
    t0 = time.perf_counter()
    if model is None:
        log.info("Loading Whisper %s on %s (%s)", runtime.model, runtime.device, runtime.compute_type)
        model = load_whisper(runtime.model, runtime.device, runtime.compute_type)
        if model.model.device != runtime.device.split(":")[0]:  # CUDA could not run it: on the CPU, int8
            from dataclasses import replace

            result.runtime = replace(runtime, device=str(model.model.device), compute_type="int8")
    result.load_seconds = time.perf_counter() - t0
    if not model.model.is_multilingual and requested not in ("auto", "en"):
        raise SettingsError(
            f"Whisper model {runtime.model!r} is English-only, but --language is {requested!r}.",
            hint="Use a multilingual model (medium, large-v3, turbo) or --language en.",
        )
    return model


def _tally(result: TranscribeResult, rows: Iterable[TranscriptRecord]) -> None:
    for row in rows:
        result.languages[row.language] += 1
        if row.status == "ok":
            result.kept += 1
            result.kept_seconds += row.trim_end - row.trim_start
        else:
            result.rejected[row.reason] += 1
