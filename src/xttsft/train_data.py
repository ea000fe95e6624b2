"""The training data: the dataset read and checked, samples, batches and the features the GPT eats.

* :func:`prepare_data` reads an LJSpeech dataset and counts every sample the model
  cannot take (never replaced silently, unlike coqui's ``XTTSDataset``);
* :class:`ClipDataset` gives a sample with its conditioning: a 3-6 s slice of another
  clip of the same speaker; all randomness is a pure function of (seed, epoch, index),
  so any number of DataLoader workers and a resumed run draw the same batches;
* :func:`epoch_batches` orders an epoch: a seeded shuffle, then clips of similar length
  grouped into the same batch (length buckets), so a batch pads little;
* :func:`make_loader` wraps them in a ``torch.utils.data.DataLoader`` (``num_workers``);
* :class:`Featurizer` turns a batch into conditioning mels and DVAE codes on the device,
  as coqui's ``GPTTrainer.format_batch_on_device`` does.
"""

from __future__ import annotations

import csv
import json
import logging
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from xttsft.errors import DatasetError

__all__ = [
    "SAMPLE_RATE",
    "Sample",
    "DataReport",
    "prepare_data",
    "check_dataset_files",
    "ClipDataset",
    "collate",
    "epoch_batches",
    "make_loader",
    "Featurizer",
]

log = logging.getLogger(__name__)

from xttsft.audio import TRAIN_SR as SAMPLE_RATE  # noqa: E402 - training and DVAE rate of XTTS-v2
MIN_CONDITIONING = 66150  # 3 s
MAX_CONDITIONING = 132300  # 6 s
MIN_SAMPLES = int(0.5 * SAMPLE_RATE)  # coqui refuses clips shorter than 0.5 s
#: Batches whose clips are sorted by length together: a bucket holds this many batches.
BUCKET_BATCHES = 16


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


def check_dataset_files(dataset_dir: Path) -> Path:
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

    dataset_dir = check_dataset_files(dataset_dir)
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


class ClipDataset:
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
            import numpy as np
            import torch

            from xttsft.audio import read_mono

            wav = torch.from_numpy(np.clip(read_mono(path, SAMPLE_RATE), -1.0, 1.0))[None]
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


def collate(items: list[dict[str, Any]]) -> dict[str, Any]:
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


class Featurizer:
    """GPTTrainer.format_batch_on_device: conditioning mels and DVAE codes, without grad."""

    def __init__(self, dvae: Any, mel_norms: Any, device: str) -> None:
        from TTS.tts.layers.tortoise.arch_utils import TorchMelSpectrogram

        self.style = TorchMelSpectrogram(
            filter_length=2048, hop_length=256, win_length=1024, normalize=False, sampling_rate=SAMPLE_RATE,
            mel_fmin=0, mel_fmax=8000, n_mel_channels=80, mel_norm_file=None,
        ).to(device)
        self.style.mel_norms = mel_norms.to(device)
        self.dvae_mel = TorchMelSpectrogram(mel_norm_file=None, sampling_rate=SAMPLE_RATE).to(device)
        self.dvae_mel.mel_norms = mel_norms.to(device)
        self.dvae = dvae.to(device).eval().requires_grad_(False)
        self.device = device

    @classmethod
    def from_base(cls, base_dir: Path, device: str) -> Featurizer:
        """The base model's frozen DVAE and mel statistics."""
        from xttsft.model import load_dvae, safe_torch_load

        return cls(load_dvae(base_dir, device), safe_torch_load(Path(base_dir) / "mel_stats.pth"), device)

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


def epoch_batches(lengths: list[int], batch_size: int, seed: int, epoch: int, rank: int = 0, world: int = 1,
                  bucket: bool = True) -> list[list[int]]:
    """The batches of one epoch (sample indices), for this rank.

    A seeded shuffle (seed, epoch) is split among the ranks; with ``bucket``, each run of
    ``batch_size * BUCKET_BATCHES`` shuffled samples is sorted by length and cut into
    batches, and the batches are shuffled again: clips of similar length share a batch,
    so little of a batch is padding, and the order stays random and reproducible.
    With several ranks every rank gets the same number of batches (a DDP step needs them all).
    """
    import torch

    g = torch.Generator().manual_seed(seed * 100003 + epoch)
    order = torch.randperm(len(lengths), generator=g).tolist()
    mine = order[rank::world]
    if bucket and batch_size > 1:
        span = batch_size * BUCKET_BATCHES
        batches = []
        for i in range(0, len(mine), span):
            chunk = sorted(mine[i : i + span], key=lambda k: lengths[k])
            batches += [chunk[j : j + batch_size] for j in range(0, len(chunk), batch_size)]
        perm = torch.randperm(len(batches), generator=g).tolist()
        batches = [batches[p] for p in perm]
    else:
        batches = [mine[i : i + batch_size] for i in range(0, len(mine), batch_size)]
    if world > 1:  # the rank with fewer samples repeats its last batch, as DistributedSampler pads
        per_rank = -(-len(lengths) // world)
        n = -(-per_rank // batch_size)
        batches = batches[:n] + [batches[-1]] * (n - len(batches))
    return batches


def make_loader(dataset: ClipDataset, batches: list[list[int]], num_workers: int) -> Any:
    """A DataLoader over ``batches`` (already ordered) with ``num_workers`` worker processes.

    It gets a generator of its own: a DataLoader otherwise draws its workers' base seed from
    torch's global RNG, which would shift dropout after a resume inside an epoch.
    """
    import torch
    from torch.utils.data import DataLoader

    return DataLoader(dataset, batch_sampler=batches, collate_fn=collate, num_workers=num_workers,
                      persistent_workers=False, generator=torch.Generator().manual_seed(0))
