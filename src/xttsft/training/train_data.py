"""The training data: the dataset read and checked, samples, batches and the features the GPT eats.

* :func:`prepare_data` checks a dataset read by :mod:`xttsft.data.datasets` (any LJSpeech-style
  layout) against the model and counts every sample it cannot take (never replaced
  silently, unlike coqui's ``XTTSDataset``);
* :class:`ClipDataset` gives a sample with its conditioning: a 3-6 s slice of another
  clip of the same speaker; all randomness is a pure function of (seed, epoch, index),
  so any number of DataLoader workers and a resumed run draw the same batches;
* :func:`epoch_batches` orders an epoch: a seeded shuffle, then clips of similar length
  grouped into the same batch (length buckets), so a batch pads little;
* :func:`make_loader` wraps them in a ``torch.utils.data.DataLoader`` (``num_workers``);
* :class:`Featurizer` turns a batch into conditioning mels and DVAE codes on the device,
  as coqui's ``GPTTrainer.format_batch_on_device`` does;
* :func:`dataset_fingerprint` records what a run trains on (each clip's id, text and audio
  size, per split), :func:`dataset_changes` says what differs at a resume, and
  :func:`keep_recorded_split` keeps a run's validation clips where they were.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from xttsft.audio import TRAIN_SR as SAMPLE_RATE  # training and DVAE rate of XTTS-v2
from xttsft.audio import read_mono
from xttsft.data import datasets
from xttsft.errors import DatasetError, XttsftError
from xttsft.model import load_dvae, model_limits, safe_torch_load
from xttsft.records import read_dataset_stats

__all__ = [
    "SAMPLE_RATE",
    "Sample",
    "DataReport",
    "prepare_data",
    "ClipDataset",
    "collate",
    "epoch_batches",
    "make_loader",
    "Featurizer",
    "dataset_fingerprint",
    "DatasetChanges",
    "dataset_changes",
    "keep_recorded_split",
]

log = logging.getLogger(__name__)

MIN_CONDITIONING = 66150  # 3 s
MAX_CONDITIONING = 132300  # 6 s
#: Batches whose clips are sorted by length together: a bucket holds this many batches.
BUCKET_BATCHES = 16


Sample = datasets.Sample


@dataclass
class DataReport:
    """What the dataset gave and what training can use."""

    dataset_dir: Path
    language: str
    max_wav_length: int  # samples at 22050 Hz: the model's limit
    max_text_length: int  # tokens
    train: list[Sample]
    val: list[Sample]
    dropped: dict[str, list[str]]  # reason -> sample ids ("train:<id>")
    layout: str = ""
    resampled: int = 0  # clips converted to 22050 Hz mono on load

    @property
    def hours(self) -> float:
        return sum(s.n_samples for s in self.train + self.val) / SAMPLE_RATE / 3600

    @property
    def dropped_count(self) -> int:
        return sum(len(v) for v in self.dropped.values())


def prepare_data(
    ds: datasets.Dataset, tokenizer: Any, gpt_max_audio_tokens: int, gpt_max_text_tokens: int
) -> DataReport:
    """Check every sample of a dataset (any layout, see :mod:`xttsft.data.datasets`) against the model;
    count every sample it cannot take.

    Refuses (DatasetError) an empty train or val split, naming the cause.
    """
    max_wav_length = model_limits(gpt_max_audio_tokens)
    found = datasets.inspect_samples(
        ds, tokenizer.encode if tokenizer is not None else None, max_wav_length, gpt_max_text_tokens
    )
    for reason, ids in found.dropped.items():
        for sid in ids:
            log.warning("Skipping sample %s: %s", sid, reason)
    if found.resampled:
        log.info(
            "%d clips are not 22050 Hz mono: converted on load (soxr), the files are left as they are.", found.resampled
        )
    for split, kept, rows in (("train", found.train, ds.train), ("val", found.val, ds.val)):
        if not kept:
            refused = [w for w, _ in ds.refused]
            why = (
                f"it has no usable rows ({ds.layout}"
                + (f"; {len(refused)} refused: {', '.join(refused[:3])}" if refused else "")
                + ")"
                if not rows
                else f"all {len(rows)} {split} samples were dropped: "
                + "; ".join(
                    f"{sum(i.startswith(split + ':') for i in ids)} {r}"
                    for r, ids in found.dropped.items()
                    if any(i.startswith(split + ":") for i in ids)
                )
            )
            ours = (stats := read_dataset_stats(ds.root)) is not None and bool(stats.input_hash)
            raise DatasetError(
                f"The {split} split of {ds.root} is empty: {why}.",
                hint=(
                    "Add more audio or lower BUILD_VAL_FRACTION, then run `xttsft build` again; "
                    if ours
                    else f"Add rows to the {split} metadata file; "
                )
                + "`xttsft build --check DIR` lists every row "
                "training would drop.",
            )
    max_text = max(len(s.tokens) for s in found.train + found.val)
    return DataReport(
        ds.root,
        ds.language,
        max_wav_length,
        max_text,
        found.train,
        found.val,
        found.dropped,
        ds.layout,
        found.resampled,
    )


class ClipDataset:
    """Samples + conditioning from another clip of the same speaker; randomness is a
    pure function of (seed, epoch, index), so a resumed run draws the same batches."""

    def __init__(self, samples: list[Sample], seed: int, is_eval: bool) -> None:
        self.samples = samples
        self.seed = seed
        self.is_eval = is_eval
        self.epoch = 0
        self._cache: dict[Path, Any] = {}
        self._long = [i for i, s in enumerate(samples) if s.n_samples >= MIN_CONDITIONING]

    def __len__(self) -> int:
        return len(self.samples)

    def _load(self, path: Path):
        wav = self._cache.get(path)
        if wav is None:
            import numpy as np
            import torch

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
        # a short sentence (segment's short_share) is trained on, but conditions others only when no clip of 3 s is
        # there: the conditioning stays a 3-6 s slice, as in the recipe
        others = [i for i in self._long if i != index] or [i for i in range(len(self.samples)) if i != index] or [index]
        ref = self.samples[others[0] if self.is_eval else rng.choice(others)]
        ref_wav = self._load(ref.wav)
        length = (
            (MIN_CONDITIONING + MAX_CONDITIONING) // 2
            if self.is_eval
            else rng.randint(MIN_CONDITIONING, MAX_CONDITIONING)
        )
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
            filter_length=2048,
            hop_length=256,
            win_length=1024,
            normalize=False,
            sampling_rate=SAMPLE_RATE,
            mel_fmin=0,
            mel_fmax=8000,
            n_mel_channels=80,
            mel_norm_file=None,
        ).to(device)
        self.style.mel_norms = mel_norms.to(device)
        self.dvae_mel = TorchMelSpectrogram(mel_norm_file=None, sampling_rate=SAMPLE_RATE).to(device)
        self.dvae_mel.mel_norms = mel_norms.to(device)
        self.dvae = dvae.to(device).eval().requires_grad_(False)
        self.device = device

    @classmethod
    def from_base(cls, base_dir: Path, device: str) -> Featurizer:
        """The base model's frozen DVAE and mel statistics."""

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


def epoch_batches(
    lengths: list[int], batch_size: int, seed: int, epoch: int, rank: int = 0, world: int = 1, bucket: bool = True
) -> list[list[int]]:
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

    loader: Any = DataLoader(
        dataset,  # type: ignore[arg-type]  # a map-style dataset of dicts
        batch_sampler=batches,
        collate_fn=collate,
        num_workers=num_workers,
        persistent_workers=False,
        generator=torch.Generator().manual_seed(0),
    )
    return _worker_errors_unwrapped(loader) if num_workers else loader


def _worker_errors_unwrapped(loader: Any) -> Any:
    """Our errors raised in a worker come back as one message again (torch rebuilds them from the
    worker's traceback text: "Caught InputError in DataLoader worker process 0 ... Original Traceback")."""

    try:
        yield from loader
    except XttsftError as exc:
        if "DataLoader worker" not in exc.message:
            raise
        lines = [ln for ln in exc.message.strip().splitlines() if ln.strip()]
        ours = [k for k, ln in enumerate(lines) if ln.startswith("xttsft.") and ": " in ln]
        if not ours:
            raise
        k = ours[-1]
        hint = lines[k + 1].removeprefix("Hint: ") if k + 1 < len(lines) and lines[k + 1].startswith("Hint: ") else None
        raise type(exc)(lines[k].split(": ", 1)[1], hint=hint or "Or train with TRAIN_NUM_WORKERS=0.") from None


# --------------------------------------------------------------------------- what a run trained on
def dataset_fingerprint(ds: datasets.Dataset) -> dict[str, dict[str, list[Any]]]:
    """``{"train": {id: [text hash, audio bytes]}, "val": {...}}``: the rows of each split, cheaply
    (a stat per clip, no audio read). Recorded in run.json; a resume compares it."""

    def clip(row: datasets.Row) -> list[Any]:
        try:
            size = row.wav.stat().st_size
        except OSError:
            size = -1
        return [hashlib.sha1(row.text.encode("utf-8")).hexdigest()[:12], size]

    return {"train": {r.id: clip(r) for r in ds.train}, "val": {r.id: clip(r) for r in ds.val}}


@dataclass
class DatasetChanges:
    """What differs between a run's recorded dataset and the one read now (clip ids)."""

    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    audio: list[str] = field(default_factory=list)
    to_val: list[str] = field(default_factory=list)  # trained on before, a validation clip now
    to_train: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return any(dataclasses.astuple(self))

    def describe(self) -> str:
        """``3 clips added, 1 removed, 2 texts changed, 1 moved from train to val (e.g. clip_0007, ...)``."""

        def n(ids: list[str], one: str, many: str) -> str:
            return f"{len(ids)} {one if len(ids) == 1 else many}"

        parts = [
            n(self.added, "clip added", "clips added") if self.added else "",
            (f"{len(self.removed)} removed" if self.added else n(self.removed, "clip removed", "clips removed"))
            if self.removed
            else "",
            n(self.texts, "text changed", "texts changed") if self.texts else "",
            n(self.audio, "audio file changed", "audio files changed") if self.audio else "",
            f"{len(self.to_val)} moved from train to val" if self.to_val else "",
            f"{len(self.to_train)} moved from val to train" if self.to_train else "",
        ]
        examples = (self.to_val + self.added + self.removed + self.texts + self.audio + self.to_train)[:3]
        return ", ".join(p for p in parts if p) + f" (e.g. {', '.join(examples)})"


def dataset_changes(before: dict[str, Any], now: dict[str, Any]) -> DatasetChanges:
    """Compare two :func:`dataset_fingerprint` records."""
    side_before = {i: s for s in ("train", "val") for i in (before.get(s) or {})}
    side_now = {i: s for s in ("train", "val") for i in (now.get(s) or {})}
    ch = DatasetChanges(
        added=sorted(set(side_now) - set(side_before)), removed=sorted(set(side_before) - set(side_now))
    )
    for i in sorted(set(side_now) & set(side_before)):
        (text0, size0), (text1, size1) = before[side_before[i]][i], now[side_now[i]][i]
        if text0 != text1:
            ch.texts.append(i)
        if size0 != size1:
            ch.audio.append(i)
        if side_before[i] != side_now[i]:
            (ch.to_val if side_now[i] == "val" else ch.to_train).append(i)
    return ch


def keep_recorded_split(ds: datasets.Dataset, before: dict[str, Any]) -> datasets.Dataset:
    """``ds`` with every clip on the side ``before`` recorded it (validation clips stay validation
    clips); clips new since then stay where the dataset puts them (the stable split)."""
    recorded_val, recorded_train = set(before.get("val") or {}), set(before.get("train") or {})
    rows = ds.train + ds.val
    now_val = {r.id for r in ds.val}

    def in_val(r: Any) -> bool:
        return r.id in recorded_val or (r.id not in recorded_train and r.id in now_val)

    return dataclasses.replace(ds, train=[r for r in rows if not in_val(r)], val=[r for r in rows if in_val(r)])
