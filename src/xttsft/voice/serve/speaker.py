"""XTTS-v2 behind the engine's :class:`~xttsft.voice.serve.engine.Speaker` interface, and the loader
that turns ``--model`` and ``--voices`` into a speaker and its voices.

The text goes through ``synth.prepare_text`` (the same expansion, sentence split and tokenizer
check as ``xttsft synth``); a piece whose tokens would still reach XTTS's text limit (numbers
spelled out grow) is cut again between words. Chunks come as coqui's ``Xtts.inference_stream``
makes them (its loop, from its own parts: :meth:`XttsSpeaker.stream`), ``serve.stream_chunk_size``
audio codes per chunk.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from xttsft.errors import DatasetError, InputError
from xttsft.model import safe_torch_load
from xttsft.voice.serve.voices import LatentCache, Latents, VoiceCatalog, VoiceEntry, check_voice_name, read_voices_dir
from xttsft.voice.synth import (
    conditioning,
    load_voice,
    normalize_language,
    prepare_text,
    resolve_model,
    sampling,
    select_reference_clips,
)

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

    from xttsft.paths import Workspace
    from xttsft.settings import ServeSettings, SynthSettings
    from xttsft.voice.synth import Voice

__all__ = ["XttsSpeaker", "Loaded", "load_xtts_speaker", "model_voices"]

log = logging.getLogger(__name__)


class XttsSpeaker:
    """A loaded XTTS-v2 model that speaks one piece at a time."""

    def __init__(
        self, voice: Voice, sampling: SynthSettings, *, cache_dir: Path | None, stream_chunk_size: int = 20
    ) -> None:
        self.voice = voice
        self.model = voice.model
        self.sampling = sampling
        self.sample_rate = voice.sample_rate
        self.stream_chunk_size = stream_chunk_size
        self.cache_dir = cache_dir
        self.cache = LatentCache(self._compute)
        self.computed = 0  # how many times latents were computed (not read from a cache)
        if sampling.max_audio_tokens is not None:
            gpt = self.model.gpt
            gpt.max_gen_mel_tokens = min(gpt.max_gen_mel_tokens, sampling.max_audio_tokens)

    def split(self, text: str, language: str) -> list[str]:

        pieces = prepare_text(self.model, text, language)
        limit = int(getattr(self.model.args, "gpt_max_text_tokens", 402)) - 2  # XTTS asserts tokens < limit
        return _fit_tokens(pieces, lambda p: len(self.model.tokenizer.encode(p.lower(), lang=language)), limit)

    def latents(self, voice: VoiceEntry) -> Latents:
        return self.cache.get(voice)

    def _compute(self, voice: VoiceEntry) -> tuple[Any, bool]:

        cond = conditioning(self.voice, list(voice.files), self.cache_dir)
        if not cond.cached:
            self.computed += 1
        return (cond.gpt_cond_latent, cond.speaker_embedding), cond.cached

    def stream(
        self, text: str, language: str, latents: Any, speed: float, cancel: threading.Event
    ) -> Generator[np.ndarray, None, None]:
        """Coqui's ``Xtts.inference_stream`` loop, from its own parts (GPT generator, HiFi-GAN,
        ``handle_chunks``), with two changes: ``cancel`` is checked after every audio code, and
        ``speed`` never shrinks the latents to nothing (coqui's ``scale_factor`` turns 1-3 codes
        at speed 4 into a zero-length tensor and the request fails)."""
        import torch

        model, s = self.model, sampling(self.voice, self.sampling)  # auto: the base model's config.json
        cond, speaker_embedding = (t.to(model.device) for t in latents)
        with torch.inference_mode():
            tokens = torch.IntTensor(model.tokenizer.encode(text.strip().lower(), lang=language)).unsqueeze(0)
            generator = model.gpt.get_generator(
                fake_inputs=model.gpt.compute_embeddings(cond, tokens.to(model.device)),
                top_k=int(s["top_k"]),
                top_p=s["top_p"],
                temperature=s["temperature"],
                do_sample=True,
                num_beams=1,
                num_return_sequences=1,
                length_penalty=float(s["length_penalty"]),
                repetition_penalty=float(s["repetition_penalty"]),
                output_attentions=False,
                output_hidden_states=True,
                return_dict_in_generate=True,
            )
        codes: list[Any] = []
        pending, previous, overlap = 0, None, None
        try:
            while not cancel.is_set():
                with torch.inference_mode():  # per step: the engine interleaves jobs on this thread
                    step = next(generator, None)
                    if step is not None:
                        codes.append(step[1])
                        pending += 1
                        if self.stream_chunk_size <= 0 or pending < self.stream_chunk_size:
                            continue
                    if not codes:
                        return
                    wav = model.hifigan_decoder(
                        self._stretch(torch.cat(codes, dim=0)[None, :], speed), g=speaker_embedding
                    )
                    chunk, previous, overlap = model.handle_chunks(
                        wav.squeeze(), previous, overlap, 1024, is_final=step is None
                    )
                    pending = 0
                yield chunk.detach().float().cpu().numpy().reshape(-1)
                if step is None:
                    return
        finally:
            generator.close()

    @staticmethod
    def _stretch(latents: Any, speed: float) -> Any:
        """GPT latents [1, T, C] resampled to T / speed frames (at least one), as XTTS applies speed."""
        import torch.nn.functional as F

        if speed == 1.0:
            return latents
        frames = max(1, int(latents.shape[1] / max(speed, 0.05)))
        return F.interpolate(latents.transpose(1, 2), size=frames, mode="linear").transpose(1, 2)


def _fit_tokens(pieces: list[str], count: Any, limit: int) -> list[str]:
    """Cut every piece of ``limit`` tokens or more in two between words, until all fit."""
    out: list[str] = []
    todo = list(reversed(pieces))
    while todo:
        piece = todo.pop()
        words = piece.split()
        if count(piece) < limit or len(words) < 2:
            if count(piece) >= limit:
                raise InputError(
                    f"A word of the text is too long to speak ({words[0][:40]}...).",
                    hint="Split it, or spell it out in words.",
                )
            out.append(piece)
            continue
        half = len(words) // 2
        todo += [" ".join(words[half:]), " ".join(words[:half])]
    return out


@dataclass
class Loaded:
    """What the server's loader hands over: the speaker, its voices and names for /v1/models."""

    speaker: Any  # a Speaker
    voices: VoiceCatalog
    model_name: str
    description: str
    language: str  # the server's language when neither the request nor the voice gives one


def model_voices(ws: Workspace, voice: Voice, num_references: int) -> list[VoiceEntry]:
    """The model's own voice first, then, for a model folder or ``base``, the other speakers stored in
    its ``speakers_xtts.pth`` (XTTS-v2's studio speakers; a run lists only its own voice).

    The own voice: a run's reference clips (from its dataset, as ``synth`` picks them); a folder's
    ``reference*.wav`` (an export ships them), named after the export's speaker; or its entry in
    ``speakers_xtts.pth``."""
    source = voice.source
    if source.kind == "run":
        return [
            VoiceEntry(
                _voice_name(source.name),
                f"the voice of {voice.description}",
                voice.language,
                _run_references(ws, voice, num_references),
                origin="model",
            )
        ]
    own_name, stored = _stored_speakers(voice)
    refs = tuple(sorted(voice.base_dir.glob("reference*.wav")))[:num_references] if voice.base_dir else ()
    if not refs:
        return stored
    name = own_name or _voice_name(source.path.name if source.path else source.name)
    own = VoiceEntry(name, f"the voice of {voice.description}", voice.language, refs, origin="model")
    return [own, *(v for v in stored if v.name.casefold() != name.casefold())]


def _run_references(ws: Workspace, voice: Voice, num_references: int) -> tuple[Path, ...]:

    dataset = voice.dataset_dir if voice.dataset_dir is not None else ws.dataset_dir
    try:
        return tuple(select_reference_clips(dataset, count=num_references, split_rule=voice.dataset_split))
    except DatasetError as exc:
        raise InputError(
            f"Run {voice.source.name} has no reference clips for its voice: {exc.message}",
            hint="Pass --voices DIR with reference wavs, or serve an export (xttsft export).",
        ) from None


def _voice_name(text: str) -> str:
    import re

    name = re.sub(r"[^A-Za-z0-9 ._-]+", "-", text).strip(" .-_")[:64] or "voice"
    return name if check_voice_name(name) is None else f"voice-{name}"[:64]


def _stored_speakers(voice: Voice) -> tuple[str | None, list[VoiceEntry]]:
    """The export's own speaker name (None if not an export), and the voices of ``speakers_xtts.pth``
    (the export's own first)."""
    import json

    if voice.base_dir is None or not (voice.base_dir / "speakers_xtts.pth").is_file():
        return None, []
    speakers = safe_torch_load(voice.base_dir / "speakers_xtts.pth")
    marker = voice.base_dir / "xttsft_export.json"
    own = json.loads(marker.read_text(encoding="utf-8")).get("speaker") if marker.is_file() else None
    names = sorted(speakers, key=lambda n: (n != own, str(n)))
    out = []
    for n in names:
        entry = speakers[n]
        if not isinstance(entry, dict) or "gpt_cond_latent" not in entry or "speaker_embedding" not in entry:
            continue
        stored = (entry["gpt_cond_latent"], entry["speaker_embedding"])
        desc = f"the voice of {voice.description}" if n == own else f"stored speaker {n}"
        out.append(
            VoiceEntry(
                _voice_name(str(n)),
                desc,
                voice.language if n == own else None,
                (),
                stored,
                origin="model" if n == own else "speakers",
            )
        )
    return (_voice_name(str(own)) if own else None), out


def load_xtts_speaker(
    serve: ServeSettings,
    synth: SynthSettings,
    ws: Workspace,
    model: str | None,
    default_base: str = "coqui/XTTS-v2",
    voices_dir: Path | None = None,
) -> Loaded:
    """Load the model ``--model`` names and the voices the server speaks with."""

    source = resolve_model(ws, model, default_base=default_base)
    voice = load_voice(ws, source, checkpoint=synth.checkpoint, device=synth.device)
    extra = read_voices_dir(voices_dir) if voices_dir is not None else []
    own = model_voices(ws, voice, synth.num_references)
    taken = {v.name.casefold() for v in extra}
    own = [v for v in own if v.name.casefold() not in taken]  # a --voices voice wins a name
    everything = own + extra
    if not everything:
        raise InputError(
            f"{voice.description} has no voice of its own to speak with.",
            hint="Pass --voices DIR: one NAME.wav, or one NAME/ folder of wavs, per voice.",
        )
    speaker = XttsSpeaker(voice, synth, cache_dir=ws.conditioning_cache_dir, stream_chunk_size=serve.stream_chunk_size)
    catalog = VoiceCatalog(everything, default=everything[0].name, aliases=serve.alias_map)
    language = normalize_language(serve.language or synth.language or voice.language or "en")
    name = source.name if source.kind == "run" else (source.path.name if source.path else source.name)
    return Loaded(
        speaker, catalog, model_name=f"xttsft-{_voice_name(name)}", description=voice.description, language=language
    )
