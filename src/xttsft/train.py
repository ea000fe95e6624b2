"""``xttsft train``: fine-tune the XTTS-v2 GPT (LoRA or in full) on the build dataset.

Built on coqui-tts' own classes -- ``Xtts``/``GPT`` forward and loss, the frozen
``DiscreteVAE`` that turns 22.05 kHz mels into audio codes, ``TorchMelSpectrogram``
-- the way ``GPTTrainer`` uses them, but with our own loop instead of coqui's
``Trainer``: exact resume, NaN/inf handling, AMP, atomic checkpoints, data checks.

Differences from coqui's recipe, on purpose:

* Samples the model cannot take (too long, too much text, ``[UNK]`` tokens, missing
  or unreadable wav, shorter than 0.5 s) are counted and reported before training,
  never replaced silently by another sample (``XTTSDataset`` does that).
* The conditioning clip of a sample is a 3-6 s slice of *another* clip of the same
  speaker (``cond_lens`` path of ``GPT.forward``). coqui's masking approach slices
  the target clip itself and, because ``GPT.forward`` mixes mel-frame and code units,
  masks every target of clips shorter than ~6 s: the mel loss is then NaN.
* The HiFi-GAN decoder is not kept in memory during training (it is frozen and unused).

Default learning rates (``TRAIN_LEARNING_RATE=auto``, see :data:`DEFAULT_LR` and
docs/train.md): an overfit experiment on the tiny model (6 clips, 15 epochs, lr sweep)
picked the largest rate whose loss fell steadily: LoRA 3e-3, full 1e-3. It also showed
LoRA needs several times the full fine-tune's rate for the same progress. The real,
pretrained XTTS-v2 takes far smaller steps: full 5e-6 (coqui's recipe; FACTS.md saw it
overfit one batch at once even at 1e-5) and LoRA 1e-4 (at 1e-5 LoRA barely moved).
"""

from __future__ import annotations

import contextlib
import csv
import json
import logging
import math
import os
import random
import shutil
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from xttsft.errors import DatasetError, SettingsError, XttsftError
from xttsft.progress import Progress, no_progress

if TYPE_CHECKING:  # pragma: no cover
    from xttsft.paths import Workspace
    from xttsft.settings import Settings, TrainSettings

__all__ = [
    "gpt_loss",
    "TEXT_CE_WEIGHT",
    "MEL_CE_WEIGHT",
    "DEFAULT_LR",
    "TrainingError",
    "TrainHooks",
    "Resolved",
    "DataReport",
    "TrainResult",
    "resolve_train_settings",
    "prepare_data",
    "train",
    "merged_gpt_state",
    "TEST_SENTENCES",
]

log = logging.getLogger(__name__)

#: coqui's recipe: loss = 0.01 x text cross-entropy + 1.0 x mel (audio code) cross-entropy.
TEXT_CE_WEIGHT = 0.01
MEL_CE_WEIGHT = 1.0
#: Peak learning rate for TRAIN_LEARNING_RATE=auto, per model kind and mode.
#: tiny: the winners of the overfit sweep on the tiny model (docs/train.md: LoRA 1e-3 too
#: slow, 3e-3 steady, 1e-2 oscillates; full 5e-5 and 3e-4 slow, 1e-3 steady).
#: xtts-v2 (pretrained): full = coqui's recipe 5e-6; LoRA 20x that (the sweep and FACTS.md
#: show LoRA needs a much higher rate than full fine-tuning for the same progress).
DEFAULT_LR = {"tiny": {"lora": 3e-3, "full": 1e-3}, "xtts-v2": {"lora": 1e-4, "full": 5e-6}}
SAMPLE_RATE = 22050  # training and DVAE rate of XTTS-v2
MIN_CONDITIONING = 66150  # 3 s
MAX_CONDITIONING = 132300  # 6 s
MIN_SAMPLES = int(0.5 * SAMPLE_RATE)  # coqui refuses clips shorter than 0.5 s
ADAMW_BETAS = (0.9, 0.96)
ADAMW_EPS = 1e-8


class TrainingError(XttsftError):
    """Training cannot go on (NaN losses, out of memory)."""


def gpt_loss(gpt, batch: dict[str, Any]) -> dict[str, Any]:
    """coqui's GPTTrainer.train_step on a formatted batch: the weighted text + mel CE."""
    cond_idxs = batch.get("cond_idxs")
    loss_text, loss_mel, _ = gpt(
        batch["text_inputs"],
        batch["text_lengths"],
        batch["audio_codes"],
        batch["wav_lengths"],
        cond_mels=batch["cond_mels"],
        # GPT.forward rescales cond_idxs in place: give it a copy
        cond_idxs=None if cond_idxs is None else cond_idxs.clone(),
        cond_lens=batch.get("cond_lens"),
    )
    loss = loss_text * TEXT_CE_WEIGHT + loss_mel * MEL_CE_WEIGHT
    return {"loss": loss, "loss_text_ce": loss_text, "loss_mel_ce": loss_mel}


# --------------------------------------------------------------------------- settings
@dataclass
class Resolved:
    """Every ``auto`` setting resolved for this machine, and why."""

    device: str
    mode: str
    learning_rate: float
    batch_size: int
    grad_accum_steps: int
    use_amp: bool
    amp_dtype: str | None
    gradient_checkpointing: bool
    notes: list[str] = field(default_factory=list)


def _recommendation(use_lora: bool, on_gpu: bool = True):
    """doctor's recommendation; ``on_gpu=False`` asks for the CPU one even where a GPU is present."""
    try:
        if on_gpu:
            from xttsft.doctor import current_recommendation

            return current_recommendation(use_lora=use_lora)
        import dataclasses

        from xttsft.doctor import hardware_facts, recommend

        return recommend(dataclasses.replace(hardware_facts(), gpus=(), gpu_source="none"), use_lora=use_lora)
    except Exception as exc:  # noqa: BLE001 - doctor must never stop training
        log.debug("doctor's recommendation unavailable: %r", exc)
        return None


def resolve_train_settings(ts: TrainSettings, tiny: bool = False) -> Resolved:
    """Resolve device, batch size, accumulation, AMP, checkpointing and lr (``auto`` values)."""
    import torch

    notes: list[str] = []
    cuda = torch.cuda.is_available()
    if ts.device == "auto":
        device = "cuda" if cuda else "cpu"
    elif ts.device == "cuda" and not cuda:
        raise SettingsError(
            "TRAIN_DEVICE=cuda but no CUDA GPU is visible to PyTorch.",
            hint="Use TRAIN_DEVICE=auto or cpu, or check `xttsft doctor`.",
        )
    else:
        device = ts.device
    if device == "cuda":
        if ts.cuda_device_id >= torch.cuda.device_count():
            raise SettingsError(
                f"TRAIN_CUDA_DEVICE_ID={ts.cuda_device_id} but only {torch.cuda.device_count()} GPU(s) are visible.",
                hint="Pick an index below the GPU count.",
            )
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', ts.cuda_device_id))}"
    mode = "lora" if ts.use_lora else "full"
    on_gpu = device.startswith("cuda")
    rec = _recommendation(ts.use_lora, on_gpu=on_gpu)

    def pick(name: str, value: Any, rec_value: Any, fallback: Any) -> Any:
        if value != "auto":
            return value
        chosen = rec_value if rec is not None else fallback
        notes.append(f"{name}=auto -> {chosen} ({'doctor' if rec is not None else 'default'})")
        return chosen

    batch_size = pick("batch_size", ts.batch_size, getattr(rec, "train_batch_size", None), 2)
    accum = pick("grad_accum_steps", ts.grad_accum_steps, getattr(rec, "grad_accum_steps", None), 1)
    use_amp = pick("use_amp", ts.use_amp, bool(getattr(rec, "use_amp", False)) and on_gpu, on_gpu)
    gc_ = pick(
        "gradient_checkpointing", ts.gradient_checkpointing, getattr(rec, "gradient_checkpointing", None), False
    )
    amp_dtype: str | None = None
    if use_amp:
        if on_gpu:
            # the chosen card, natively: is_bf16_supported() asks the current device (GPU 0 before
            # set_device) and counts emulated bf16 (T4, V100) as supported
            native = bool(torch.version.hip) or torch.cuda.get_device_properties(torch.device(device)).major >= 8
            amp_dtype = "bfloat16" if native else "float16"
        else:
            amp_dtype = "bfloat16"  # CPU autocast supports bf16 only
        notes.append(f"AMP dtype {amp_dtype}" + (" with a GradScaler" if amp_dtype == "float16" else ""))
    if ts.learning_rate == "auto":
        kind = "tiny" if tiny else "xtts-v2"
        lr = DEFAULT_LR[kind][mode]
        notes.append(f"learning_rate=auto -> {lr:g} (tested default for {mode} on the {kind} model)")
    else:
        lr = float(ts.learning_rate)
    for n in notes:
        log.info("auto: %s", n)
    return Resolved(device, mode, lr, int(batch_size), int(accum), bool(use_amp), amp_dtype, bool(gc_), notes)


# --------------------------------------------------------------------------- data
@dataclass
class Sample:
    id: str
    wav: Path
    text: str
    tokens: list[int]
    n_samples: int


@dataclass
class DataReport:
    """What the dataset gave and what training can use."""

    dataset_dir: Path
    language: str
    max_wav_length: int  # samples at 22050 Hz
    max_text_length: int  # tokens
    train: list[Sample]
    val: list[Sample]
    dropped: dict[str, list[str]]  # reason -> sample ids ("train:<id>")

    @property
    def hours(self) -> float:
        return sum(s.n_samples for s in self.train + self.val) / SAMPLE_RATE / 3600

    @property
    def dropped_count(self) -> int:
        return sum(len(v) for v in self.dropped.values())


def _read_metadata(path: Path) -> list[tuple[str, str]]:
    rows = []
    with path.open(encoding="utf-8", newline="") as fh:
        for lineno, row in enumerate(csv.reader(fh, delimiter="|", quoting=csv.QUOTE_NONE), 1):
            if not row or not row[0].strip():
                continue
            if len(row) < 2:
                raise DatasetError(
                    f"{path}:{lineno}: expected `id|text|normalized_text`, got {'|'.join(row)!r}.",
                    hint="Rebuild the dataset with `xttsft build`.",
                )
            text = row[2] if len(row) > 2 and row[2].strip() else row[1]
            rows.append((row[0].strip(), text.strip()))
    return rows


def _check_dataset_files(dataset_dir: Path) -> Path:
    """The dataset folder and its three files exist (cheap: checked before loading the model)."""
    dataset_dir = Path(dataset_dir)
    if not dataset_dir.is_dir():
        raise DatasetError(
            f"Dataset folder {dataset_dir} does not exist.",
            hint="Run `xttsft build` first, or point TRAIN_DATASET_DIR at an LJSpeech folder.",
        )
    missing = [n for n in ("metadata_train.csv", "metadata_val.csv", "stats.json") if not (dataset_dir / n).is_file()]
    if missing:
        raise DatasetError(
            f"Dataset {dataset_dir} lacks {', '.join(missing)}.",
            hint="Run `xttsft build` to (re)write the dataset.",
        )
    return dataset_dir


def prepare_data(dataset_dir: Path, tokenizer, gpt_max_audio_tokens: int, gpt_max_text_tokens: int) -> DataReport:
    """Read and check the build dataset; count every sample the model cannot take.

    Refuses (DatasetError) a missing dataset or an empty train or val split, naming the cause.
    """
    import soundfile as sf

    dataset_dir = _check_dataset_files(dataset_dir)
    try:
        stats = json.loads((dataset_dir / "stats.json").read_text(encoding="utf-8"))
    except ValueError as exc:
        raise DatasetError(f"{dataset_dir / 'stats.json'} is not valid JSON ({exc}).", hint="Run `xttsft build`.") from None
    language = str(stats.get("language") or "en")
    max_audio_seconds = float(stats.get("max_audio_seconds") or 15.0)
    model_wav_limit = (gpt_max_audio_tokens - 3) * 1024  # codes + start/stop/pad fit the position table
    max_wav_length = min(int(max_audio_seconds * SAMPLE_RATE), model_wav_limit)
    if int(max_audio_seconds * SAMPLE_RATE) > model_wav_limit:
        log.warning(
            "The dataset allows clips up to %.1f s but this model takes at most %.1f s; longer ones are dropped.",
            max_audio_seconds, model_wav_limit / SAMPLE_RATE,
        )
    dropped: dict[str, list[str]] = {}
    splits: dict[str, list[Sample]] = {}
    for split in ("train", "val"):
        kept: list[Sample] = []
        for sid, text in _read_metadata(dataset_dir / f"metadata_{split}.csv"):
            wav = dataset_dir / "wavs" / f"{sid}.wav"
            reason = None
            n = 0
            tokens: list[int] = []
            if not text:
                reason = "empty text"
            elif not wav.is_file():
                reason = "missing wav"
            else:
                try:
                    info = sf.info(str(wav))
                    n = int(round(info.frames * SAMPLE_RATE / info.samplerate))
                except Exception:  # noqa: BLE001 - soundfile raises several kinds
                    reason = "unreadable wav"
            if reason is None:
                try:
                    tokens = list(tokenizer.encode(text, language))
                except Exception as exc:  # noqa: BLE001 - cleaners/tokenizer errors
                    reason = f"text not tokenizable ({type(exc).__name__})"
            if reason is None:
                if n < MIN_SAMPLES:
                    reason = "shorter than 0.5 s"
                elif n > max_wav_length:
                    reason = f"longer than {max_wav_length / SAMPLE_RATE:.1f} s"
                elif 1 in tokens:
                    reason = "[UNK] tokens (characters outside the vocabulary)"
                elif 0 in tokens:
                    reason = "[STOP] token in the text"
                elif len(tokens) > gpt_max_text_tokens:
                    reason = f"more than {gpt_max_text_tokens} text tokens"
            if reason is not None:
                dropped.setdefault(reason, []).append(f"{split}:{sid}")
                log.warning("Skipping %s sample %s: %s", split, sid, reason)
                continue
            kept.append(Sample(sid, wav, text, tokens, n))
        splits[split] = kept
    for split in ("train", "val"):
        if not splits[split]:
            total = len(_read_metadata(dataset_dir / f"metadata_{split}.csv"))
            why = (
                f"metadata_{split}.csv has no rows"
                if total == 0
                else f"all {total} {split} samples were dropped: "
                + "; ".join(f"{len([i for i in ids if i.startswith(split + ':')])} {r}" for r, ids in dropped.items()
                            if any(i.startswith(split + ":") for i in ids))
            )
            raise DatasetError(
                f"The {split} split of {dataset_dir} is empty: {why}.",
                hint="Add more audio or lower BUILD_VAL_FRACTION, then run `xttsft build` again.",
            )
    max_text = max(len(s.tokens) for s in splits["train"] + splits["val"])
    return DataReport(dataset_dir, language, max_wav_length, max_text, splits["train"], splits["val"], dropped)


class _ClipDataset:
    """Samples + conditioning from another clip of the same speaker; randomness is a
    pure function of (seed, epoch, index), so a resumed run draws the same batches."""

    def __init__(self, samples: list[Sample], seed: int, is_eval: bool) -> None:
        self.samples = samples
        self.seed = seed
        self.is_eval = is_eval
        self.epoch = 0
        self._cache: dict[Path, Any] = {}

    def __len__(self) -> int:
        return len(self.samples)

    def _load(self, path: Path):
        wav = self._cache.get(path)
        if wav is None:
            from TTS.tts.models.xtts import load_audio

            wav = load_audio(str(path), SAMPLE_RATE)
            if len(self._cache) < 2048:
                self._cache[path] = wav
        return wav

    def __getitem__(self, index: int) -> dict[str, Any]:
        import torch
        import torch.nn.functional as F

        s = self.samples[index]
        rng = random.Random(f"{self.seed}/{self.epoch}/{index}/{'eval' if self.is_eval else 'train'}")
        wav = self._load(s.wav)
        others = [i for i in range(len(self.samples)) if i != index] or [index]
        ref = self.samples[others[0] if self.is_eval else rng.choice(others)]
        ref_wav = self._load(ref.wav)
        length = (MIN_CONDITIONING + MAX_CONDITIONING) // 2 if self.is_eval else rng.randint(MIN_CONDITIONING, MAX_CONDITIONING)
        if ref_wav.shape[-1] < length:
            length = ref_wav.shape[-1]
        start = 0 if self.is_eval else rng.randint(0, ref_wav.shape[-1] - length)
        cond = ref_wav[:, start : start + length]
        cond = F.pad(cond, (0, MAX_CONDITIONING - cond.shape[-1]))
        tokens = torch.tensor(s.tokens, dtype=torch.long)
        return {
            "id": s.id,
            "text": tokens,
            "text_lengths": torch.tensor(len(s.tokens), dtype=torch.long),
            "wav": wav,
            "wav_lengths": torch.tensor(wav.shape[-1], dtype=torch.long),
            "conditioning": cond.unsqueeze(0),  # (1 cond sample, 1 channel, T)
            "cond_lens": torch.tensor(length, dtype=torch.long),
        }


def _collate(items: list[dict[str, Any]]) -> dict[str, Any]:
    import torch

    b = len(items)
    text_lengths = torch.stack([i["text_lengths"] for i in items])
    wav_lengths = torch.stack([i["wav_lengths"] for i in items])
    text = torch.zeros(b, int(text_lengths.max()), dtype=torch.long)
    wav = torch.zeros(b, 1, int(wav_lengths.max()))
    for k, it in enumerate(items):
        text[k, : it["text_lengths"]] = it["text"]
        wav[k, :, : it["wav_lengths"]] = it["wav"]
    return {
        "ids": [i["id"] for i in items],
        "padded_text": text,
        "text_lengths": text_lengths,
        "wav": wav,
        "wav_lengths": wav_lengths,
        "conditioning": torch.stack([i["conditioning"] for i in items]),
        "cond_lens": torch.stack([i["cond_lens"] for i in items]),
    }


class _Featurizer:
    """GPTTrainer.format_batch_on_device: conditioning mels and DVAE codes, without grad."""

    def __init__(self, base_dir: Path, device: str) -> None:
        from TTS.tts.layers.tortoise.arch_utils import TorchMelSpectrogram

        from xttsft.model import load_dvae, safe_torch_load

        norms = safe_torch_load(Path(base_dir) / "mel_stats.pth")
        self.style = TorchMelSpectrogram(
            filter_length=2048, hop_length=256, win_length=1024, normalize=False, sampling_rate=SAMPLE_RATE,
            mel_fmin=0, mel_fmax=8000, n_mel_channels=80, mel_norm_file=None,
        ).to(device)
        self.style.mel_norms = norms.to(device)
        self.dvae_mel = TorchMelSpectrogram(mel_norm_file=None, sampling_rate=SAMPLE_RATE).to(device)
        self.dvae_mel.mel_norms = norms.to(device)
        self.dvae = load_dvae(base_dir, device)
        self.device = device

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        import torch

        dev = self.device
        with torch.no_grad():
            cond = batch["conditioning"].to(dev)
            b, n, c, t = cond.shape
            mels = self.style(cond.view(b * n, c, t))
            mels = mels.view(b, n, mels.shape[1], mels.shape[2])
            codes = self.dvae.get_codebook_indices(self.dvae_mel(batch["wav"].to(dev)))
        return {
            "text_inputs": batch["padded_text"].to(dev),
            "text_lengths": batch["text_lengths"].to(dev),
            "audio_codes": codes,
            "wav_lengths": batch["wav_lengths"].to(dev),
            "cond_mels": mels,
            "cond_idxs": None,
            "cond_lens": batch["cond_lens"].to(dev),
        }


# --------------------------------------------------------------------------- test audio
TEST_SENTENCES = {
    "pt": ["Olá! Esta é a minha voz, treinada com o xttsft.", "O sol brilhava sobre o mar azul."],
    "en": ["Hello! This is my voice, trained with xttsft.", "The sun was shining on the blue sea."],
    "es": ["¡Hola! Esta es mi voz, entrenada con xttsft."],
}


def merged_gpt_state(gpt, mode: str) -> dict[str, Any]:
    """The GPT's weights with LoRA deltas folded in (the training model is left as it is)."""
    import torch

    with torch.no_grad():
        sd = {k.replace(".base_layer.", "."): v.detach() for k, v in gpt.state_dict().items() if "lora_" not in k}
        if mode == "lora":
            from peft.tuners.lora import LoraLayer

            for name, m in gpt.gpt.named_modules():
                if isinstance(m, LoraLayer):
                    key = f"gpt.{name}.weight"
                    sd[key] = sd[key] + m.get_delta_weight("default").to(sd[key].dtype)
    return sd


class _TestAudio:
    """Speak a few test sentences with the current weights, for TensorBoard (real model only).

    A separate inference XTTS (with the HiFi-GAN decoder) is loaded on the CPU at the first
    evaluation and moved to the training device only while it speaks. Failures are logged,
    never fatal.
    """

    def __init__(self, base_dir: Path, language: str, speaker_wav: Path, device: str) -> None:
        self.base_dir, self.language, self.speaker_wav, self.device = base_dir, language, speaker_wav, device
        self.xtts = None

    def __call__(self, gpt, mode: str, writer, step: int) -> int:
        import torch

        from xttsft.model import is_tiny, load_xtts

        done = 0
        try:
            if self.xtts is None:
                self.xtts = load_xtts(self.base_dir, device="cpu")
                if is_tiny(self.base_dir):  # a random GPT never stops: keep its noise short (~3 s)
                    self.xtts.gpt.max_gen_mel_tokens = min(self.xtts.gpt.max_gen_mel_tokens, 64)
            self.xtts.gpt.load_state_dict(merged_gpt_state(gpt, mode), strict=False)
            self.xtts.gpt.init_gpt_for_inference(kv_cache=self.xtts.args.kv_cache, use_deepspeed=False)
            self.xtts.to(self.device).eval()
            sr = int(self.xtts.args.output_sample_rate)
            for i, text in enumerate(TEST_SENTENCES.get(self.language, TEST_SENTENCES["en"])):
                with torch.inference_mode():
                    out = self.xtts.synthesize(text, speaker_wav=str(self.speaker_wav), language=self.language,
                                               gpt_cond_len=3)
                wav = torch.as_tensor(out["wav"], dtype=torch.float32).flatten().clamp(-1, 1)
                writer.add_audio(f"test/audio_{i}", wav.unsqueeze(0), step, sample_rate=sr)
                done += 1
        except Exception as exc:  # noqa: BLE001 - test audio must never stop training
            log.warning("Test sentences could not be synthesized (%s: %s); training goes on.", type(exc).__name__, exc)
        finally:
            if self.xtts is not None:
                self.xtts.to("cpu")
        return done


# --------------------------------------------------------------------------- loop
@dataclass
class TrainHooks:
    """Test seams: called inside the loop (may raise KeyboardInterrupt)."""

    after_batch: Callable[[int, int, int], None] | None = None  # (epoch, batch index, global step)
    loss_filter: Callable[[Any, int], Any] | None = None  # (loss, global step) -> loss
    save_fail_after: str | None = None  # make the next epoch checkpoint save fail
    force_test_audio: bool = False  # synthesize test sentences even with the tiny model


@dataclass
class TrainResult:
    """What a training run did."""

    run_name: str
    run_dir: Path
    tensorboard_dir: Path
    mode: str
    device: str
    base_model: str
    tiny: bool
    num_epochs: int
    epochs_completed: int
    global_step: int  # batches trained (all epochs, this and earlier sessions)
    optimizer_steps: int
    learning_rate: float
    trainable_params: int
    total_params: int
    train_samples: int
    val_samples: int
    hours: float
    dropped: dict[str, int]
    step_losses: list[float]  # this session's batch losses (NaN ones included)
    epoch_train_losses: list[float]
    epoch_val_losses: list[float]
    best_val_loss: float | None
    best_epoch: int | None
    nan_skipped: int
    status: str  # finished | interrupted | already finished
    resumed_from: Path | None
    checkpoints: list[Path]
    loss_curve: Path | None
    seconds: float


def _decay_groups(gpt, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups as coqui's optimizer_wd_only_on_weights: no decay on biases, norms, embeddings."""
    import torch.nn as nn

    norm = (nn.LayerNorm, nn.GroupNorm, nn.BatchNorm1d, nn.BatchNorm2d, nn.InstanceNorm1d, nn.InstanceNorm2d)
    emb = (nn.Embedding, nn.EmbeddingBag)
    decay, no_decay, seen = [], [], set()
    for _, module in gpt.named_modules():
        for pname, p in module.named_parameters(recurse=False):
            if not p.requires_grad or id(p) in seen:
                continue
            seen.add(id(p))
            if pname.endswith("bias") or isinstance(module, norm + emb) or p.ndim < 2:
                no_decay.append(p)
            else:
                decay.append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _lr_lambda(warmup: int, total: int) -> Callable[[int], float]:
    def f(step: int) -> float:
        if warmup > 0 and step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))  # cosine down to 10 %

    return f


def _rng_state() -> dict[str, Any]:
    import torch

    st: dict[str, Any] = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        st["cuda"] = torch.cuda.get_rng_state_all()
    return st


def _set_rng_state(st: dict[str, Any]) -> None:
    import torch

    torch.set_rng_state(st["torch"])
    if "python" in st:
        py = st["python"]
        random.setstate((py[0], tuple(py[1]), py[2]))
    if "cuda" in st and torch.cuda.is_available():
        with contextlib.suppress(Exception):
            torch.cuda.set_rng_state_all(st["cuda"])


def _dist() -> tuple[int, int]:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _init_distributed(device: str) -> bool:
    import torch.distributed as dist

    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or dist.is_initialized():
        return False
    backend = "nccl" if device.startswith("cuda") else "gloo"
    from datetime import timedelta

    dist.init_process_group(backend=backend, timeout=timedelta(minutes=10))
    log.info("DDP: rank %d of %d (%s)", dist.get_rank(), dist.get_world_size(), backend)
    return True


def _loss_curve(path: Path, train_losses: list[float], val_losses: list[float]) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # pragma: no cover
        return None
    from xttsft.io import atomic_path

    fig, ax = plt.subplots(figsize=(6, 3.5))
    xs = range(1, len(train_losses) + 1)
    ax.plot(xs, train_losses, marker="o", label="train")
    ax.plot(range(1, len(val_losses) + 1), val_losses, marker="o", label="val")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return path


def _oom_message(res: Resolved) -> TrainingError:
    rec = _recommendation(res.mode == "lora")
    doc = f" doctor suggests batch {rec.train_batch_size} x accum {rec.grad_accum_steps}, " \
          f"AMP {'on' if rec.use_amp else 'off'}, gradient checkpointing {'on' if rec.gradient_checkpointing else 'off'}." \
        if rec is not None else ""
    return TrainingError(
        f"CUDA out of memory with batch size {res.batch_size}, AMP {'on' if res.use_amp else 'off'}, "
        f"gradient checkpointing {'on' if res.gradient_checkpointing else 'off'}, mode {res.mode}.{doc}",
        hint="Lower TRAIN_BATCH_SIZE (raise TRAIN_GRAD_ACCUM_STEPS to keep the effective batch), set "
        "TRAIN_USE_AMP=true, TRAIN_GRADIENT_CHECKPOINTING=true, or keep TRAIN_USE_LORA=true; then --resume.",
    )


def train(
    settings: Settings,
    ws: Workspace,
    *,
    resume: bool = False,
    progress: Progress | None = None,
    hooks: TrainHooks | None = None,
) -> TrainResult:
    """Fine-tune the XTTS-v2 GPT on the build dataset; see the module docstring.

    Writes ``ws.run_dir(run)``: settings.json, run.json, checkpoint_epoch_N/, best_model/,
    loss_curve.png; TensorBoard events in ``ws.tensorboard_run_dir(run)``.
    """
    import torch

    from xttsft.io import atomic_write_json
    from xttsft.model import (
        TINY_NOISE_WARNING,
        RunInfo,
        attach_lora,
        base_identity,
        count_parameters,
        is_tiny,
        list_checkpoints,
        load_xtts,
        resolve_base_model,
        safe_torch_load,
        write_checkpoint,
        write_run_info,
    )

    t0 = time.time()
    ts = settings.train
    hooks = hooks or TrainHooks()
    progress = progress or no_progress
    ds_dir = _check_dataset_files(Path(ts.dataset_dir) if ts.dataset_dir else ws.dataset_dir)
    base_dir = resolve_base_model(ts.base_model, progress=progress)
    tiny = is_tiny(base_dir)
    res = resolve_train_settings(ts, tiny=tiny)
    if res.device.startswith("cuda"):
        torch.cuda.set_device(torch.device(res.device))
    distributed = _init_distributed(res.device)
    rank, world = _dist()
    main = rank == 0

    # ---- run folder
    run_name = ts.run_name
    if resume and not run_name:
        run_name = ws.latest_run()
        if run_name is None:
            raise SettingsError("--resume found no run to continue under " + str(ws.checkpoints_dir) + ".",
                                hint="Start a run first, or name one with --run-name.")
    if not run_name:
        run_name = datetime.now().strftime("run-%Y%m%d-%H%M%S")
    if distributed and not ts.run_name and not resume:
        # every rank must agree on the timestamp name
        import torch.distributed as dist

        names = [run_name]
        dist.broadcast_object_list(names, src=0)
        run_name = names[0]
    run_dir = ws.run_dir(run_name)
    tb_dir = ws.tensorboard_run_dir(run_name)
    checkpoints = list_checkpoints(run_dir)
    resumable = [c for c in checkpoints if (c.path / "training_state.pt").is_file()]
    if resume and not resumable:
        raise SettingsError(
            f"Run {run_name!r} has no complete checkpoint to resume from ({run_dir}).",
            hint="Start it again without --resume (or with another --run-name).",
        )
    if not resume and run_dir.exists() and (checkpoints or (run_dir / "best_model").exists()):
        raise SettingsError(
            f"Run {run_name!r} already exists with checkpoints in {run_dir}.",
            hint="Continue it with --resume, or pick another --run-name.",
        )

    # ---- model
    if tiny:
        log.warning("!" * 20 + " " + TINY_NOISE_WARNING + " " + "!" * 20)
    torch.manual_seed(ts.seed)
    random.seed(ts.seed)
    xtts = load_xtts(base_dir, device="cpu", for_training=True, keep_decoder=False)
    gpt = xtts.gpt
    _, gpt_total = count_parameters(gpt)
    lora_cfg = None
    if res.mode == "lora":
        lora_cfg = attach_lora(gpt, ts)
    else:
        gpt.requires_grad_(True)
    if res.gradient_checkpointing:
        _enable_gradient_checkpointing(gpt.gpt)
    trainable, total = count_parameters(gpt)
    gpt.to(res.device)
    feats = _Featurizer(base_dir, res.device)

    # ---- data
    data = prepare_data(ds_dir, xtts.tokenizer, xtts.args.gpt_max_audio_tokens, xtts.args.gpt_max_text_tokens)
    train_ds = _ClipDataset(data.train, ts.seed, is_eval=False)
    val_ds = _ClipDataset(data.val, ts.seed, is_eval=True)
    bs = res.batch_size
    n_batches = math.ceil(len(data.train[rank::world]) / bs) if len(data.train) >= world else 1
    opt_steps_per_epoch = math.ceil(n_batches / res.grad_accum_steps)
    total_opt_steps = opt_steps_per_epoch * ts.num_epochs

    # ---- optimiser, schedule, AMP
    model = gpt
    if distributed:
        from torch.nn.parallel import DistributedDataParallel as DDP

        model = DDP(gpt, device_ids=[torch.device(res.device).index] if res.device.startswith("cuda") else None,
                    find_unused_parameters=res.mode == "full")
    opt = torch.optim.AdamW(_decay_groups(gpt, ts.weight_decay), lr=res.learning_rate, betas=ADAMW_BETAS, eps=ADAMW_EPS)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(min(ts.warmup_steps, total_opt_steps // 2), total_opt_steps))
    amp_dtype = {"bfloat16": torch.bfloat16, "float16": torch.float16}.get(res.amp_dtype or "")
    dev_type = "cuda" if res.device.startswith("cuda") else "cpu"
    scaler = torch.amp.GradScaler(dev_type, enabled=res.amp_dtype == "float16")

    # ---- state
    epoch0, skip_batches, global_step, opt_step = 0, 0, 0, 0
    resume_loss = (0.0, 0)
    run_loss, run_n = 0.0, 0
    best_val: float | None = None
    best_epoch: int | None = None
    history: dict[str, list[float]] = {"train": [], "val": []}
    resumed_from = None
    if resume:
        ck = resumable[-1]
        meta_mode = ck.meta.get("mode")
        if meta_mode != res.mode:
            raise SettingsError(
                f"Run {run_name!r} was trained with {meta_mode}; TRAIN_USE_LORA now asks for {res.mode}.",
                hint=f"Resume with TRAIN_USE_LORA={'true' if meta_mode == 'lora' else 'false'}, or start a new run.",
            )
        _load_weights(gpt, ck.path, res.mode)
        state = safe_torch_load(ck.path / "training_state.pt")
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        if state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        _set_rng_state(state["rng"])
        epoch0 = int(state["epoch"])
        skip_batches = int(state.get("batch_in_epoch", 0))
        global_step = int(state["global_step"])
        opt_step = int(state["optimizer_step"])
        best_val = state.get("best_val_loss")
        best_epoch = state.get("best_epoch")
        history = {"train": list(state.get("history_train", [])), "val": list(state.get("history_val", []))}
        resumed_from = ck.path
        resume_loss = (float(state.get("epoch_loss_sum", 0.0)), int(state.get("epoch_loss_n", 0)))
        log.info("Resuming %s from %s: continuing at epoch %d%s, step %d", run_name, ck.path.name, epoch0 + 1,
                 f" batch {skip_batches + 1}" if skip_batches else "", global_step + 1)

    # ---- banner, run files
    if main:
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_json(run_dir / "settings.json", {**settings.to_dict(), "resolved": res.__dict__,
                                                      "data": {"max_wav_length": data.max_wav_length,
                                                               "max_text_length": data.max_text_length}})
        if not (run_dir / "run.json").exists():
            write_run_info(RunInfo(
                run_dir=run_dir, base_model=ts.base_model, base_dir=base_dir, language=data.language, mode=res.mode,
                dataset_dir=data.dataset_dir, created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                base_identity=base_identity(base_dir),
            ))
    log.info("Device: %s%s | AMP: %s | gradient checkpointing: %s", res.device,
             f" x {world} processes (DDP)" if world > 1 else "", res.amp_dtype or "off",
             "on" if res.gradient_checkpointing else "off")
    log.info("Model: %s (%s) | GPT %.1f M params | trainable %.2f M (%.2f %%, %s)", ts.base_model,
             "tiny random" if tiny else str(base_dir), gpt_total / 1e6, trainable / 1e6, 100 * trainable / total, res.mode)
    log.info("Dataset: %s | %d train + %d val samples | %.2f h (%.1f min) | language %s | dropped %d",
             data.dataset_dir, len(data.train), len(data.val), data.hours, data.hours * 60, data.language,
             data.dropped_count)
    log.info("Batch %d x accum %d%s | lr %.2e | %d epochs x %d steps", bs, res.grad_accum_steps,
             f" x {world} GPUs" if world > 1 else "", res.learning_rate, ts.num_epochs, n_batches)
    if tiny:
        log.warning(TINY_NOISE_WARNING)

    writer = None
    if main and ts.use_tensorboard:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(log_dir=str(tb_dir))

    test_audio = None
    if writer is not None and (not tiny or hooks.force_test_audio):
        test_audio = _TestAudio(base_dir, data.language, data.val[0].wav, res.device)
    step_losses: list[float] = []
    nan_streak = 0
    nan_skipped = 0
    status = "finished"
    epoch = epoch0
    batch_in_epoch = skip_batches
    last_opt_batch = skip_batches
    # The state as of the last optimizer step: an interrupt inside an accumulation window
    # resumes at that step's batch, so the window's batches must not be counted yet.
    snap = _Snapshot(epoch0, skip_batches, resume_loss[0], resume_loss[1], global_step, _rng_state())

    def training_state(epochs_done: int, batch_pos: int, at: _Snapshot | None = None) -> dict[str, Any]:
        loss_sum, loss_n = (at.run_loss, at.run_n) if at is not None else (run_loss, run_n)
        return {
            "epoch": epochs_done, "batch_in_epoch": batch_pos,
            "global_step": at.global_step if at is not None else global_step,
            "optimizer_step": opt_step, "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
            "scaler": scaler.state_dict() if scaler.is_enabled() else {},
            "rng": at.rng if at is not None else _rng_state(),
            "best_val_loss": best_val, "best_epoch": best_epoch,
            "history_train": history["train"], "history_val": history["val"],
            "epoch_loss_sum": loss_sum if batch_pos else 0.0, "epoch_loss_n": loss_n if batch_pos else 0,
        }

    def save_epoch_checkpoint(name: str, epochs_done: int, batch_pos: int, fail: str | None = None,
                              at: _Snapshot | None = None) -> Path:
        step = at.global_step if at is not None else global_step
        meta = {"epoch": epochs_done, "step": step, "optimizer_step": opt_step, "batch_in_epoch": batch_pos,
                "train_loss": history["train"][-1] if history["train"] else None,
                "val_loss": history["val"][-1] if history["val"] else None, "run": run_name}
        p = write_checkpoint(run_dir / name, gpt, res.mode, meta, training_state(epochs_done, batch_pos, at),
                             lora_config=lora_cfg, _fail_after=fail)
        for old in list_checkpoints(run_dir)[: -ts.keep_last_checkpoints]:
            shutil.rmtree(old.path, ignore_errors=True)
        log.info("Saved %s", p)
        return p

    if epoch0 >= ts.num_epochs:
        status = "already finished"
        log.info("Run %s already trained %d of %d epochs; nothing to do.", run_name, epoch0, ts.num_epochs)
    try:
        for epoch in range(epoch0, ts.num_epochs):
            train_ds.epoch = epoch
            g = torch.Generator().manual_seed(ts.seed * 100003 + epoch)
            order = torch.randperm(len(train_ds), generator=g).tolist()[rank::world]
            batches = [order[i : i + bs] for i in range(0, len(order), bs)]
            if distributed:  # every rank runs the same number of steps
                batches = batches[:n_batches] + [batches[-1]] * (n_batches - len(batches))
            start = skip_batches if epoch == epoch0 else 0
            model.train()
            progress(total=len(batches), completed=start, description=f"Epoch {epoch + 1}/{ts.num_epochs}")
            run_loss, run_n = resume_loss if (epoch == epoch0 and start) else (0.0, 0)
            opt.zero_grad(set_to_none=True)
            accum_bad = False
            last_opt_batch = start
            snap = _Snapshot(epoch, start, run_loss, run_n, global_step, _rng_state())
            for bi in range(start, len(batches)):
                batch_in_epoch = bi
                fb = feats(_collate([train_ds[i] for i in batches[bi]]))
                with torch.autocast(dev_type, dtype=amp_dtype, enabled=amp_dtype is not None):
                    loss = gpt_loss(model, fb)["loss"]
                if hooks.loss_filter is not None:
                    loss = hooks.loss_filter(loss, global_step)
                finite = torch.isfinite(loss.detach()).float()
                if distributed:
                    import torch.distributed as dist

                    dist.all_reduce(finite, op=dist.ReduceOp.MIN)
                lv = float(loss.detach())
                step_losses.append(lv)
                global_step += 1
                if finite.item() < 1:
                    nan_streak += 1
                    nan_skipped += 1
                    accum_bad = True
                    log.warning("Non-finite loss (%s) at epoch %d step %d: update skipped (%d in a row)",
                                lv, epoch + 1, bi + 1, nan_streak)
                    if nan_streak >= ts.max_nan_steps:
                        raise TrainingError(
                            f"Stopped: {nan_streak} non-finite losses in a row (epoch {epoch + 1}, step {bi + 1}). "
                            "The last good checkpoint is intact.",
                            hint="Lower TRAIN_LEARNING_RATE, keep TRAIN_MAX_GRAD_NORM on, try TRAIN_USE_AMP=false "
                            "(fp16 overflows), check the dataset for silent or broken clips; then --resume.",
                        )
                else:
                    nan_streak = 0
                    scaler.scale(loss / res.grad_accum_steps).backward()
                    run_loss += lv
                    run_n += 1
                last_of_window = (bi + 1) % res.grad_accum_steps == 0 or bi + 1 == len(batches)
                if last_of_window:
                    grad_norm = None
                    if accum_bad:
                        opt.zero_grad(set_to_none=True)
                    else:
                        scaler.unscale_(opt)
                        params = [p for p in gpt.parameters() if p.requires_grad]
                        grad_norm = torch.nn.utils.clip_grad_norm_(
                            params, ts.max_grad_norm if ts.max_grad_norm > 0 else float("inf")
                        )
                        scaler.step(opt)
                        scaler.update()
                        opt.zero_grad(set_to_none=True)
                        opt_step += 1
                    with warnings.catch_warnings():  # a skipped update still advances the schedule
                        warnings.simplefilter("ignore", UserWarning)
                        sched.step()
                    accum_bad = False
                    last_opt_batch = bi + 1
                    snap = _Snapshot(epoch, last_opt_batch, run_loss, run_n, global_step, _rng_state())
                    if writer is not None and grad_norm is not None:
                        writer.add_scalar("train/grad_norm", float(grad_norm), global_step)
                avg = run_loss / run_n if run_n else float("nan")
                lr_now = opt.param_groups[0]["lr"]
                if writer is not None:
                    writer.add_scalar("train/loss", lv, global_step)
                    writer.add_scalar("train/avg_loss", avg, global_step)
                    writer.add_scalar("train/lr", lr_now, global_step)
                if main and ((bi + 1) % ts.print_step == 0 or bi == start):
                    log.info("Epoch %d/%d | Step %d/%d | Loss: %.4f | Avg: %.4f | LR: %.2e",
                             epoch + 1, ts.num_epochs, bi + 1, len(batches), lv, avg, lr_now)
                progress(advance=1)
                if hooks.after_batch is not None:
                    hooks.after_batch(epoch, bi, global_step)
            # ---- end of epoch: validation, checkpoints
            batch_in_epoch = 0
            train_loss = run_loss / run_n if run_n else float("nan")
            val_loss = _validate(gpt, val_ds, feats, bs, dev_type, amp_dtype)
            history["train"].append(train_loss)
            history["val"].append(val_loss)
            done = epoch + 1
            log.info("Epoch %d/%d done | train loss %.4f | val loss %.4f", done, ts.num_epochs, train_loss, val_loss)
            if writer is not None:
                writer.add_scalar("epoch/train_loss", train_loss, done)
                writer.add_scalar("epoch/val_loss", val_loss, done)
                if test_audio is not None:
                    test_audio(gpt, res.mode, writer, done)
                writer.flush()
            if main:
                if math.isfinite(val_loss) and (best_val is None or val_loss < best_val):
                    best_val, best_epoch = val_loss, done
                    write_checkpoint(run_dir / "best_model", gpt, res.mode,
                                     {"epoch": done, "step": global_step, "val_loss": val_loss,
                                      "train_loss": train_loss, "run": run_name}, lora_config=lora_cfg)
                    log.info("New best model (val loss %.4f) -> %s", val_loss, run_dir / "best_model")
                if done % ts.save_every_n_epochs == 0 or done == ts.num_epochs:
                    save_epoch_checkpoint(f"checkpoint_epoch_{done}", done, 0, hooks.save_fail_after)
            snap = _Snapshot(done, 0, 0.0, 0, global_step, _rng_state())
            if distributed:
                import torch.distributed as dist

                dist.barrier()
    except KeyboardInterrupt:
        status = "interrupted"
        if main:
            done_epochs, pos = snap.epoch, snap.batch_in_epoch
            log.warning("Interrupted: saving a checkpoint (epoch %d, step %d)...", done_epochs + 1, pos)
            name = (f"checkpoint_epoch_{done_epochs}_step_{snap.global_step}" if pos
                    else f"checkpoint_epoch_{done_epochs}")
            try:
                saved = save_epoch_checkpoint(name, done_epochs, pos, at=snap)
            except Exception as exc:  # noqa: BLE001 - report it; the interrupt still ends the run
                log.error("Could not save the interrupt checkpoint (%s: %s); --resume would continue from the "
                          "last saved checkpoint, if any.", type(exc).__name__, exc)
            else:
                log.warning("Saved %s; continue with --resume --run-name %s", saved, run_name)
    except torch.cuda.OutOfMemoryError:
        raise _oom_message(res) from None
    finally:
        if writer is not None:
            writer.close()
        if distributed:
            import torch.distributed as dist

            with contextlib.suppress(Exception):
                dist.destroy_process_group()

    curve = None
    if main and history["train"]:
        curve = _loss_curve(run_dir / "loss_curve.png", history["train"], history["val"])
    return TrainResult(
        run_name=run_name, run_dir=run_dir, tensorboard_dir=tb_dir, mode=res.mode, device=res.device,
        base_model=ts.base_model, tiny=tiny, num_epochs=ts.num_epochs, epochs_completed=len(history["train"]),
        global_step=global_step, optimizer_steps=opt_step, learning_rate=res.learning_rate,
        trainable_params=trainable, total_params=total, train_samples=len(data.train), val_samples=len(data.val),
        hours=data.hours, dropped={k: len(v) for k, v in data.dropped.items()}, step_losses=step_losses,
        epoch_train_losses=history["train"], epoch_val_losses=history["val"], best_val_loss=best_val,
        best_epoch=best_epoch, nan_skipped=nan_skipped, status=status, resumed_from=resumed_from,
        checkpoints=[c.path for c in list_checkpoints(run_dir)], loss_curve=curve, seconds=time.time() - t0,
    )


@dataclass(frozen=True)
class _Snapshot:
    """Where training stood after the last optimizer step (what an interrupt checkpoint saves)."""

    epoch: int  # epochs completed
    batch_in_epoch: int  # batches of ``epoch`` done and applied
    run_loss: float
    run_n: int
    global_step: int
    rng: dict[str, Any]


def _enable_gradient_checkpointing(hf_gpt2) -> None:
    """Activation checkpointing of the GPT-2 blocks (non-reentrant).

    transformers' ``gradient_checkpointing_enable`` also hooks the input embeddings, which
    coqui's GPT2Model does not have (it feeds ``inputs_embeds``); non-reentrant checkpoints
    need no such hook, so the blocks are switched on directly.
    """
    import functools
    import inspect

    from torch.utils.checkpoint import checkpoint

    func = functools.partial(checkpoint, use_reentrant=False)
    params = inspect.signature(hf_gpt2._set_gradient_checkpointing).parameters
    if "gradient_checkpointing_func" in params:
        hf_gpt2._set_gradient_checkpointing(enable=True, gradient_checkpointing_func=func)
    else:  # pragma: no cover - transformers < 4.35
        hf_gpt2.gradient_checkpointing_enable()


def _load_weights(gpt, ckpt_dir: Path, mode: str) -> None:
    """Load a checkpoint's trainable weights into a GPT already set up for ``mode``.

    Raises :class:`SettingsError` when the checkpoint does not fit the model (other base model,
    other LoRA rank or targets): resuming must never silently continue from base weights.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    file = ckpt_dir / ("adapter_model.safetensors" if mode == "lora" else "gpt.safetensors")
    hint = ("Resume with the base model and TRAIN_LORA_* settings the run was trained with (see run.json and "
            "settings.json in the run folder), or start a new run.")
    try:
        sd = load_file(str(file))
    except (OSError, SafetensorError) as exc:
        raise SettingsError(f"{file} is missing or corrupt ({exc}).", hint=hint) from None
    try:
        if mode == "lora":
            from peft import set_peft_model_state_dict

            result = set_peft_model_state_dict(gpt.gpt, sd)
            unexpected = list(getattr(result, "unexpected_keys", []))
            missing = [k for k in getattr(result, "missing_keys", []) if "lora_" in k]
        else:
            missing, unexpected = gpt.load_state_dict(sd, strict=False)
            # the same exemptions as xttsft.model.apply_checkpoint: tied/inference-only weights
            missing = [k for k in missing if not k.startswith(("gpt_inference.", "gpt.wte."))]
    except RuntimeError as exc:  # size mismatches
        first = str(exc).strip().splitlines()[-1].strip() if str(exc).strip() else type(exc).__name__
        raise SettingsError(f"{file} does not fit this model: {first}", hint=hint) from None
    if missing or unexpected:
        shown = ", ".join((unexpected + missing)[:3])
        raise SettingsError(
            f"{file} does not fit this model ({len(missing)} missing, {len(unexpected)} unexpected weights: "
            f"{shown}{', ...' if len(missing) + len(unexpected) > 3 else ''}).",
            hint=hint,
        )


def _validate(gpt, val_ds: _ClipDataset, feats: _Featurizer, bs: int, dev_type: str, amp_dtype) -> float:
    """Mean loss over the val split (deterministic conditioning), in eval mode."""
    import torch

    was_training = gpt.training
    gpt.eval()  # dropout off: a deterministic val loss
    total, n = 0.0, 0
    with torch.no_grad():
        for i in range(0, len(val_ds), bs):
            fb = feats(_collate([val_ds[j] for j in range(i, min(i + bs, len(val_ds)))]))
            with torch.autocast(dev_type, dtype=amp_dtype, enabled=amp_dtype is not None):
                loss = gpt_loss(gpt, fb)["loss"]
            k = len(fb["text_lengths"])
            total += float(loss) * k
            n += k
    gpt.train(was_training)
    return total / n if n else float("nan")
