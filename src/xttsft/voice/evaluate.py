"""``xttsft eval``: measure a fine-tuned voice against the base model.

For a fixed list of sentences (built in per language, or a file), both the
fine-tuned run and its base model speak every sentence with the same reference
clips and the same seed. Each audio is measured with the field's standard
measures:

- **CER**, character error rate: the audio is transcribed with faster-whisper
  and compared with the sentence (both lowercased, punctuation removed,
  whitespace collapsed): (substitutions + deletions + insertions) / characters
  of the sentence.
- **Speaker similarity** (SECS): cosine similarity between the 512-d speaker
  embedding of the synthesized audio and those of held-out real clips of the
  voice (the dataset's *val* split, never used for conditioning), averaged.
  The embeddings come from the H/ASP ResNet speaker encoder inside XTTS-v2's
  HiFi-GAN decoder (``hifigan_decoder.speaker_encoder``, what
  ``Xtts.get_conditioning_latents`` uses), taken from the *base* model so both
  systems are judged by the same encoder; it works offline.
- **Independent speaker similarity** (``similarity_ge2e``): the same comparison
  with the GE2E encoder shipped in ``resemblyzer``, a judge that is part neither
  of the model being judged nor of the screen that chose its data (CAM++).
- **DNSMOS** P.835 overall score (``dnsmos_ovrl``, 1-5) of the synthesized
  audio: a random or broken model makes noise, which scores low.
- **Duration** of the audio and **RTF** (synthesis seconds / audio seconds).

Output: ``outputs/eval/<run>/eval.json`` and ``<system>/sNN.wav``.
"""

from __future__ import annotations

import gc
import logging
import re
import time
import unicodedata
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from xttsft.audio import SPEECH_SR, read_mono
from xttsft.bundled_whisper import bundled_model_path
from xttsft.data.transcribe import load_whisper as load
from xttsft.data.transcribe import model_unavailable, resolve_runtime
from xttsft.encoders import SPEAKER_ENCODER_NAME, SR, SpeakerEncoder, cosine, dnsmos
from xttsft.errors import DatasetError, InputError
from xttsft.io import atomic_write_json
from xttsft.model import read_run_info, resolve_run
from xttsft.paths import Workspace
from xttsft.progress import Progress, no_progress
from xttsft.records import SampleRecord, read_records
from xttsft.voice.synth import (
    ModelSource,
    conditioning,
    load_voice,
    normalize_language,
    read_text_file,
    select_reference_clips,
    speak,
    write_audio,
)

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

    from xttsft.settings import SynthSettings, TranscribeSettings

__all__ = [
    "DEFAULT_SENTENCES",
    "SPEAKER_ENCODER",
    "EvalRow",
    "EvalResult",
    "normalize_for_cer",
    "character_error_rate",
    "speaker_embedding",
    "cosine",
    "speaker_similarity",
    "fetch_whisper",
    "whisper_name",
    "load_whisper",
    "transcribe_file",
    "read_sentences",
    "evaluate",
]

log = logging.getLogger(__name__)

SPEAKER_ENCODER = "XTTS-v2 HiFi-GAN decoder speaker encoder (H/ASP ResNet, 512-d, 16 kHz), from the base model"


DEFAULT_SENTENCES: dict[str, list[str]] = {
    "pt": [
        "Bom dia, hoje o céu está limpo e o sol brilha sobre a cidade.",
        "Você poderia me dizer onde fica a estação de trem mais próxima?",
        "A reunião foi adiada para quinta-feira, às três horas da tarde.",
        "Eu gosto de ler um bom livro antes de dormir.",
        "Precisamos comprar pão, leite e frutas no mercado.",
        "Obrigado pela ajuda, foi muito importante para mim.",
        "Sim.",  # short prompts: a fine-tuned XTTS often babbles after them (coqui-ai/TTS #3204, #3516)
        "Até amanhã.",
    ],
    "en": [
        "Good morning, the sky is clear and the sun is shining over the city.",
        "Could you tell me where the nearest train station is?",
        "The meeting was moved to Thursday at three in the afternoon.",
        "I like to read a good book before going to sleep.",
        "We need to buy bread, milk and fruit at the market.",
        "Thank you for your help, it meant a lot to me.",
        "Yes.",  # short prompts: a fine-tuned XTTS often babbles after them (coqui-ai/TTS #3204, #3516)
        "See you tomorrow.",
    ],
    "es": [
        "Buenos días, hoy el cielo está despejado y el sol brilla sobre la ciudad.",
        "¿Podría decirme dónde está la estación de tren más cercana?",
        "La reunión se aplazó al jueves a las tres de la tarde.",
        "Me gusta leer un buen libro antes de dormir.",
    ],
}


# ---------------------------------------------------------------------------
# measures
# ---------------------------------------------------------------------------


def normalize_for_cer(text: str) -> str:
    """Lowercase, NFKC, punctuation and symbols removed, whitespace collapsed."""
    text = unicodedata.normalize("NFKC", text or "").lower()
    text = "".join(" " if unicodedata.category(c)[0] in {"P", "S"} else c for c in text)
    return re.sub(r"\s+", " ", text).strip()


def _edit_distance(a: str, b: str) -> int:
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def character_error_rate(reference: str, hypothesis: str) -> float:
    """Levenshtein distance over characters / length of the reference, after
    :func:`normalize_for_cer`. 0 is perfect; above 1 is possible (insertions)."""
    ref, hyp = normalize_for_cer(reference), normalize_for_cer(hypothesis)
    if not ref:
        return 0.0 if not hyp else 1.0
    return _edit_distance(ref, hyp) / len(ref)


def _read_audio(path: Path) -> tuple[np.ndarray, int]:
    """Any audio as mono float32 at 16 kHz (the speaker encoder's rate), without
    the length checks reference clips get: synthesized audio may be short."""
    import numpy as np

    audio = read_mono(Path(path), SPEECH_SR)
    if len(audio) < 1600:  # the encoder needs a few frames
        audio = np.pad(audio, (0, 1600 - len(audio)))
    return audio, SPEECH_SR


def speaker_embedding(model: Any, path: Path) -> np.ndarray:
    """L2-normalised 512-d embedding of the audio in ``path`` (see :data:`SPEAKER_ENCODER`)."""
    import numpy as np
    import torch

    audio, sr = _read_audio(path)
    with torch.inference_mode():
        emb = model.get_speaker_embedding(torch.from_numpy(audio)[None].to(model.device), sr)
    v = emb.detach().cpu().float().numpy().reshape(-1)
    return v / (np.linalg.norm(v) + 1e-12)


def speaker_similarity(model: Any, a: Path, b: Path) -> float:
    """Cosine similarity of the speaker embeddings of two audio files (1.0: same)."""
    return cosine(speaker_embedding(model, a), speaker_embedding(model, b))


def fetch_whisper(name: str) -> str:
    """A local folder of Whisper model ``name``: the folder itself, or the Hub
    download (cached by faster-whisper). Called before any synthesis, so a missing
    model fails in seconds, not after minutes of work."""

    if (bundled := bundled_model_path(name)) is not None:  # bundled-base, bundled-tiny.en
        return str(bundled)
    if Path(name).expanduser().is_dir():
        return str(Path(name).expanduser())
    from faster_whisper.utils import download_model

    try:
        return download_model(name)
    except Exception as exc:  # noqa: BLE001 - hub, network and OS errors
        raise model_unavailable(name, exc, "--whisper-model") from None


def whisper_name(settings: TranscribeSettings, model: str | None = None) -> str:
    """The Whisper model eval uses: ``model`` (--whisper-model), else TRANSCRIBE_MODEL, ``auto`` resolved
    as ``xttsft transcribe`` resolves it (doctor's pick for the device)."""

    if model and model.strip().lower() != "auto":
        return model
    return resolve_runtime(settings.model_copy(update={"model": "auto"}) if model else settings).model


def load_whisper(settings: TranscribeSettings, model: str | None = None) -> Any:
    """faster-whisper model ``model`` (or ``settings.model``) on the settings' device, ``auto``
    resolved as ``xttsft transcribe`` resolves it."""

    rt = resolve_runtime(settings)
    return load(whisper_name(settings, model), rt.device, rt.compute_type, flag="--whisper-model")


def transcribe_file(whisper: Any, path: Path, language: str) -> str:
    """Greedy transcription of one file (no VAD: the whole audio counts)."""
    lang = language.split("-")[0]
    if not getattr(whisper.model, "is_multilingual", True):
        lang = "en"
    segments, _ = whisper.transcribe(
        str(path), language=lang, beam_size=1, vad_filter=False, condition_on_previous_text=False
    )
    return " ".join(s.text.strip() for s in segments).strip()


def read_sentences(path: Path) -> list[str]:
    """Non-empty lines of a UTF-8 file."""

    return read_text_file(path)


# ---------------------------------------------------------------------------
# the command
# ---------------------------------------------------------------------------


@dataclass
class EvalRow:
    """One sentence spoken by one system."""

    system: str  # "finetuned" | "base"
    index: int
    text: str
    wav: str  # relative to the eval folder
    transcript: str = ""
    cer: float = float("nan")
    similarity: float = float("nan")
    similarity_ge2e: float = float("nan")
    dnsmos_ovrl: float = float("nan")
    duration: float = 0.0
    seconds: float = 0.0
    expected: float = float("nan")  # seconds the text takes at the voice's own pace (its dataset's)

    @property
    def rtf(self) -> float:
        return self.seconds / self.duration if self.duration > 0 else float("nan")

    @property
    def length_ratio(self) -> float:
        """Output length over the expected length: well over 1 on a short prompt is a tail of babble."""
        return self.duration / self.expected if self.expected > 0 else float("nan")


@dataclass
class EvalResult:
    """Everything ``eval.json`` holds."""

    run: str
    language: str
    out_dir: Path
    rows: list[EvalRow]
    summary: dict[str, dict[str, float]]
    references: list[Path]
    heldout: list[Path]
    whisper_model: str
    speaker_encoder: str = SPEAKER_ENCODER
    heldout_self_similarity: float = float("nan")
    heldout_self_similarity_ge2e: float = float("nan")
    tiny: bool = False
    seed: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def json_path(self) -> Path:
        return self.out_dir / "eval.json"


def _mean(values: list[float]) -> float:
    vals = [v for v in values if v == v]
    return sum(vals) / len(vals) if vals else float("nan")


def _summarize(rows: list[EvalRow]) -> dict[str, float]:
    dur = sum(r.duration for r in rows)
    secs = sum(r.seconds for r in rows)
    return {
        "sentences": len(rows),
        "cer": _mean([r.cer for r in rows]),
        "similarity": _mean([r.similarity for r in rows]),
        "similarity_ge2e": _mean([r.similarity_ge2e for r in rows]),
        "dnsmos_ovrl": _mean([r.dnsmos_ovrl for r in rows]),
        "duration": dur,
        "seconds": secs,
        "rtf": secs / dur if dur > 0 else float("nan"),
        "length_ratio": _mean([r.length_ratio for r in rows]),
        "short_length_ratio": _mean([r.length_ratio for r in rows if len(r.text) <= SHORT_PROMPT_CHARS]),
    }


#: a prompt this short is where a fine-tuned XTTS babbles (eval reports its length apart)
SHORT_PROMPT_CHARS = 20
#: characters per second when the dataset does not say (Portuguese and English read speech)
DEFAULT_CHARS_PER_SECOND = 14.0


def speaking_rate(dataset: Path) -> float:
    """The voice's own pace, in characters per second: the median over the dataset's samples."""

    try:
        rows = read_records(dataset / "samples.jsonl", SampleRecord)
    except DatasetError:
        rows = []
    rates = sorted(len(r.text) / r.duration for r in rows if r.duration > 0 and r.text)
    return rates[len(rates) // 2] if rates else DEFAULT_CHARS_PER_SECOND


def _independent_measures(rows: list[EvalRow], heldout: list[Path], out_dir: Path) -> float:
    """GE2E similarity to the held-out clips and DNSMOS of every row; returns the held-out clips'
    GE2E similarity among themselves (the ceiling a perfect clone would reach)."""
    enc = SpeakerEncoder("cpu")
    held = [enc.utterance(read_mono(h, SR)) for h in heldout]
    for row in rows:
        x = read_mono(out_dir / row.wav, SR)
        row.similarity_ge2e = _mean([cosine(enc.utterance(x), h) for h in held])
        row.dnsmos_ovrl = dnsmos(x).ovrl
    return _mean([cosine(a, b) for i, a in enumerate(held) for b in held[i + 1 :]])


def _release() -> None:
    """Give back the memory of models the caller has dropped (set to None) first."""
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


@dataclass
class _Plan:
    """What eval will measure, every input checked before a model loads."""

    run: str
    run_dir: Path
    language: str
    chars_per_second: float
    sentences: list[str]
    refs: list[Path]
    heldout: list[Path]
    whisper_model: str
    whisper_path: Any


def evaluate(
    ws: Workspace,
    settings: SynthSettings,
    transcribe_settings: TranscribeSettings,
    *,
    run: str | None = None,
    sentences_file: Path | None = None,
    include_base: bool = True,
    whisper_model: str | None = None,
    num_heldout: int = 5,
    progress: Progress | None = None,
) -> EvalResult:
    """Speak the sentences with the run and its base model, then measure CER,
    speaker similarity, duration and RTF (see the module docstring)."""
    progress = progress or no_progress
    plan = _plan(ws, settings, transcribe_settings, run, sentences_file, whisper_model, num_heldout)
    out_dir = ws.eval_dir(plan.run)
    seed = settings.seed if settings.seed is not None else 0
    systems = ["finetuned"] + (["base"] if include_base else [])
    progress(total=len(plan.sentences) * len(systems) * 2, completed=0, description="synthesizing")
    rows, voice = _synthesize(ws, plan, settings, systems, out_dir, seed, progress)
    tiny = voice.tiny
    # speaker similarity with the base model's encoder (the last voice loaded is the base
    # when include_base; otherwise the fine-tuned model's decoder, which training leaves frozen)
    progress(description="speaker similarity")
    held_self = _xtts_similarity(voice.model, rows, plan.heldout, out_dir)
    del voice  # its memory goes back before GE2E and Whisper load
    _release()
    held_self_ge2e = _independent_measures(rows, plan.heldout, out_dir)
    _transcribe_rows(rows, transcribe_settings, plan, out_dir, progress)

    summary = {s: _summarize([r for r in rows if r.system == s]) for s in systems}
    # the tiny model's warning itself was logged once when it loaded; this says what it means here
    notes = ["These numbers measure the tiny random model's noise, not a voice."] if tiny else []
    notes += _babble_notes(summary)
    result = EvalResult(
        run=plan.run,
        language=plan.language,
        out_dir=out_dir,
        rows=rows,
        summary=summary,
        references=plan.refs,
        heldout=plan.heldout,
        whisper_model=plan.whisper_model,
        heldout_self_similarity=held_self,
        tiny=tiny,
        seed=seed,
        notes=notes,
        heldout_self_similarity_ge2e=held_self_ge2e,
    )
    atomic_write_json(result.json_path, _to_json(result))
    return result


def _babble_notes(summary: dict[str, dict[str, float]]) -> list[str]:
    """Say when short prompts come out much longer than their words: the babble users report."""
    out = []
    for system, figs in summary.items():
        ratio = figs.get("short_length_ratio", float("nan"))
        if ratio == ratio and ratio > 1.5:
            out.append(
                f"{system}: short prompts came out {ratio:.1f}x as long as their words take: a tail of noise "
                "or babble after short sentences. Training on short clips too helps (issue of every XTTS "
                "fine-tune: coqui-ai/TTS #3204)."
            )
    return out


def _plan(
    ws: Workspace,
    settings: SynthSettings,
    transcribe_settings: TranscribeSettings,
    run: str | None,
    sentences_file: Path | None,
    whisper_model: str | None,
    num_heldout: int,
) -> _Plan:
    """The run, language, sentences, reference and held-out clips and the Whisper model: all checked
    (and Whisper fetched) before a TTS model loads."""

    if settings.language is not None:
        normalize_language(settings.language)
    sentences = read_sentences(sentences_file) if sentences_file else None
    name, run_dir = resolve_run(ws, run)
    whisper_model = whisper_name(transcribe_settings, whisper_model)
    whisper_path = fetch_whisper(whisper_model)
    info = read_run_info(run_dir)  # cheap: every input is checked before a model loads
    language = normalize_language(settings.language or info.language or "pt")
    if sentences is None:
        sentences = DEFAULT_SENTENCES.get(language.split("-")[0])
        if not sentences:
            raise InputError(
                f"There is no built-in sentence list for {language!r} (built in: {', '.join(DEFAULT_SENTENCES)}).",
                hint="Pass --sentences FILE with one sentence per line.",
            )
    dataset = Path(info.dataset_dir) if str(info.dataset_dir) not in {"", "."} else ws.dataset_dir
    if not dataset.is_dir() and ws.dataset_dir.is_dir():  # the run's dataset was moved or deleted
        dataset = ws.dataset_dir
    refs, heldout = _clips(dataset, settings.num_references, num_heldout, info.dataset_split)
    return _Plan(
        name, run_dir, language, speaking_rate(dataset), list(sentences), refs, heldout, whisper_model, whisper_path
    )


def _clips(dataset: Path, num_references: int, num_heldout: int, split_rule: Any) -> tuple[list[Path], list[Path]]:
    """Conditioning clips (train split first) and held-out clips (val split) the outputs are compared with."""

    try:
        refs = select_reference_clips(dataset, count=num_references, split="train", split_rule=split_rule)
    except DatasetError:
        refs = select_reference_clips(dataset, count=num_references, split_rule=split_rule)
    try:
        heldout = select_reference_clips(
            dataset, count=num_heldout, min_seconds=2.0, max_seconds=30.0, split="val", split_rule=split_rule
        )
    except DatasetError as exc:
        raise DatasetError(
            f"No held-out clips to measure speaker similarity against: {exc.message}",
            hint="Build the dataset with a val split (xttsft build), so eval can compare with real clips.",
        ) from None
    unseen = [h for h in heldout if h not in refs]
    if not unseen:
        log.warning(
            "Every held-out clip is also a conditioning clip; speaker similarity will read high. "
            "A larger val split (BUILD_VAL_FRACTION) gives an honest figure."
        )
    return refs, unseen or heldout


def _synthesize(
    ws: Workspace,
    plan: _Plan,
    settings: SynthSettings,
    systems: list[str],
    out_dir: Path,
    seed: int,
    progress: Progress,
) -> tuple[list[EvalRow], Any]:
    """Every sentence with every system (the fine-tuned run, then its base); the last voice loaded."""

    progress(description="loading the fine-tuned model")
    voice: Any = load_voice(
        ws, ModelSource("run", plan.run, plan.run_dir), checkpoint=settings.checkpoint, device=settings.device
    )
    base_spec = str(voice.base_dir)
    rows: list[EvalRow] = []
    for system in systems:
        if system == "base":
            voice = None  # the fine-tuned model must be gone before the base loads
            _release()
            progress(description="loading the base model")
            voice = load_voice(ws, ModelSource("base", base_spec, None, base_spec=base_spec), device=settings.device)
        cond = conditioning(voice, plan.refs, ws.conditioning_cache_dir)
        progress(description=f"synthesizing ({system})")
        for i, text in enumerate(plan.sentences, 1):
            t0 = time.perf_counter()
            wav, _ = speak(voice, cond, text, plan.language, settings, seed=seed + i)
            elapsed = time.perf_counter() - t0
            rel = f"{system}/s{i:02d}.wav"
            write_audio(wav, out_dir / rel, voice.sample_rate)
            rows.append(
                EvalRow(
                    system,
                    i,
                    text,
                    rel,
                    duration=len(wav) / voice.sample_rate,
                    seconds=elapsed,
                    expected=len(text) / plan.chars_per_second,
                )
            )
            progress(advance=1)
    return rows, voice


def _xtts_similarity(model: Any, rows: list[EvalRow], heldout: list[Path], out_dir: Path) -> float:
    """Each output's mean cosine to the held-out clips (XTTS's speaker encoder); the held-out clips' own."""
    held_emb = [speaker_embedding(model, h) for h in heldout]
    held_self = _mean([cosine(a, b) for i, a in enumerate(held_emb) for b in held_emb[i + 1 :]])
    for row in rows:
        emb = speaker_embedding(model, out_dir / row.wav)
        row.similarity = _mean([cosine(emb, h) for h in held_emb])
    return held_self


def _transcribe_rows(
    rows: list[EvalRow], transcribe_settings: TranscribeSettings, plan: _Plan, out_dir: Path, progress: Progress
) -> None:
    """What Whisper hears in every output, and its character error rate against the sentence."""
    progress(description="transcribing with Whisper")
    whisper = load_whisper(transcribe_settings, plan.whisper_path)
    for row in rows:
        row.transcript = transcribe_file(whisper, out_dir / row.wav, plan.language)
        row.cer = character_error_rate(row.text, row.transcript)
        progress(advance=1)
    del whisper
    gc.collect()


def _to_json(result: EvalResult) -> dict[str, Any]:
    def clean(v: Any) -> Any:
        if isinstance(v, float) and v != v:
            return None
        return round(v, 4) if isinstance(v, float) else v

    return {
        "run": result.run,
        "language": result.language,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "whisper_model": result.whisper_model,
        "speaker_encoder": result.speaker_encoder,
        "seed": result.seed,
        "tiny": result.tiny,
        "references": [str(p) for p in result.references],
        "heldout": [str(p) for p in result.heldout],
        "heldout_self_similarity": clean(result.heldout_self_similarity),
        "independent_speaker_encoder": SPEAKER_ENCODER_NAME + ", independent of XTTS",
        "heldout_self_similarity_ge2e": clean(result.heldout_self_similarity_ge2e),
        "summary": {s: {k: clean(v) for k, v in d.items()} for s, d in result.summary.items()},
        "rows": [
            {**{k: clean(v) for k, v in asdict(r).items()}, "rtf": clean(r.rtf), "length_ratio": clean(r.length_ratio)}
            for r in result.rows
        ],
        "notes": result.notes,
    }
