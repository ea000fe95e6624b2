"""Shared audio helpers: ffmpeg probing and decoding, levels, normalisation, WAV writing.

Every stage that reads or writes audio goes through these functions, so all of
them agree on the conventions:

* samples are ``float32`` numpy arrays in [-1, 1], mono unless asked otherwise;
* decoding uses ffmpeg (anything ffmpeg reads: MP3, M4A, OGG, OPUS, FLAC, WEBM,
  video files...), downmixes with ``-ac 1`` and resamples with ``-ar``;
* long files are read with :func:`stream_blocks`, a block at a time, so an hour
  of audio never sits in memory;
* levels are in dBFS (0 dBFS = full scale); silence is ``-inf``;
* clips are written as 16-bit PCM WAV through :func:`xttsft.io.atomic_path`
  (a temporary name, then a rename), so a crash never leaves a partial file.

Example::

    from xttsft import audio
    info = audio.probe("talk.mp3")                 # AudioInfo(duration=..., sample_rate=44100, ...)
    x = audio.decode("talk.mp3", sr=22050, start=10.0, duration=5.0)
    y = audio.normalize(x, target_dbfs=-20.0, peak_dbfs=-1.0)
    audio.write_wav("clip.wav", y, 22050)
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from xttsft.errors import InputError, MissingDependencyError
from xttsft.io import atomic_path

__all__ = [
    "TRAIN_SR",
    "SPEECH_SR",
    "OUTPUT_SR",
    "AudioInfo",
    "AUDIO_EXTENSIONS",
    "require_ffmpeg",
    "probe",
    "decode",
    "stream_blocks",
    "read_wav",
    "read_mono",
    "write_wav",
    "rms_dbfs",
    "frame_dbfs",
    "peak_dbfs",
    "normalization_gain_db",
    "normalize",
    "clipped_runs",
    "db_to_gain",
]

log = logging.getLogger(__name__)

#: XTTS-v2's rate: segment clips, the dataset, the DVAE and training.
TRAIN_SR = 22050
#: Whisper, Silero VAD, the CAM++ and GE2E speaker encoders and DNSMOS.
SPEECH_SR = 16000
#: What XTTS-v2's HiFi-GAN decoder speaks.
OUTPUT_SR = 24000

#: Extensions imported by ``fetch`` and looked at by ``segment`` (lower case, with the dot).
AUDIO_EXTENSIONS = frozenset({".mp3", ".wav", ".m4a", ".ogg", ".opus", ".flac", ".webm"})

_INSTALL_HINT = "Install ffmpeg (Debian/Ubuntu: `sudo apt-get install ffmpeg`, macOS: `brew install ffmpeg`)."


@dataclass(frozen=True)
class AudioInfo:
    """What ffprobe says about the first audio stream of a file."""

    path: Path
    duration: float | None  # seconds; None when the container does not say
    sample_rate: int
    channels: int
    codec: str
    format_name: str
    size_bytes: int
    #: for WAV, the length the header declares; longer than ``duration`` when the file is truncated
    header_duration: float | None = None


def require_ffmpeg() -> tuple[str, str]:
    """Paths of ``ffmpeg`` and ``ffprobe``; :class:`MissingDependencyError` if absent."""
    ffmpeg, ffprobe = shutil.which("ffmpeg"), shutil.which("ffprobe")
    missing = [name for name, p in (("ffmpeg", ffmpeg), ("ffprobe", ffprobe)) if p is None]
    if missing:
        raise MissingDependencyError(f"{' and '.join(missing)} not found on PATH.", hint=_INSTALL_HINT)
    return ffmpeg, ffprobe  # type: ignore[return-value]


def _last_line(stderr: bytes | str) -> str:
    text = stderr.decode("utf-8", "replace") if isinstance(stderr, bytes) else stderr
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1] if lines else "no details from ffmpeg"


def probe(path: str | Path) -> AudioInfo:
    """Describe the first audio stream of ``path`` with ffprobe.

    Raises :class:`InputError` for a missing or empty file, a file ffmpeg cannot
    read, or one without an audio stream.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file.", hint="Check the path.")
    size = path.stat().st_size
    if size == 0:
        raise InputError(f"{path}: empty file (0 bytes).", hint="Fetch or copy the file again.")
    _, ffprobe = require_ffmpeg()
    proc = subprocess.run(
        [
            ffprobe,
            "-v",
            "error",
            "-print_format",
            "json",
            "-show_format",
            "-show_streams",
            "-select_streams",
            "a",
            str(path),
        ],
        capture_output=True,
        check=False,
    )
    if proc.returncode != 0:
        raise InputError(
            f"{path}: not audio that ffmpeg can read ({_last_line(proc.stderr)}).",
            hint="Convert it to WAV, MP3 or FLAC, or remove it.",
        )
    data = json.loads(proc.stdout or b"{}")
    streams = data.get("streams") or []
    if not streams:
        raise InputError(f"{path}: has no audio stream.", hint="Remove it, or extract the audio first.")
    st, fmt = streams[0], data.get("format") or {}
    duration = None
    for candidate in (st.get("duration"), fmt.get("duration")):
        try:
            duration = float(candidate)  # type: ignore[arg-type]  # None raises TypeError: the next one
            break
        except (TypeError, ValueError):
            continue
    return AudioInfo(
        path=path,
        duration=duration,
        sample_rate=int(st.get("sample_rate") or 0),
        channels=int(st.get("channels") or 0),
        codec=str(st.get("codec_name") or "?"),
        format_name=str(fmt.get("format_name") or "?"),
        size_bytes=size,
        header_duration=_wav_header_duration(path) if fmt.get("format_name") == "wav" else None,
    )


def _wav_header_duration(path: Path) -> float | None:
    """Seconds of audio a RIFF/WAVE header declares (its ``data`` chunk size), or None."""
    import struct

    try:
        with path.open("rb") as fh:
            head = fh.read(12)
            if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
                return None
            byte_rate = None
            while True:
                hdr = fh.read(8)
                if len(hdr) < 8:
                    return None
                cid, size = hdr[:4], struct.unpack("<I", hdr[4:])[0]
                if cid == b"fmt ":
                    fmt = fh.read(size)
                    byte_rate = struct.unpack("<I", fmt[8:12])[0] if len(fmt) >= 12 else None
                    if size % 2:
                        fh.read(1)
                elif cid == b"data":
                    if not byte_rate or size in (0, 0xFFFFFFFF):  # streamed WAVs leave it unset
                        return None
                    return size / byte_rate
                else:
                    fh.seek(size + size % 2, 1)
    except OSError:
        return None


def _ffmpeg_cmd(path: Path, sr: int, mono: bool, start: float | None, duration: float | None) -> list[str]:
    ffmpeg, _ = require_ffmpeg()
    cmd = [ffmpeg, "-nostdin", "-hide_banner", "-loglevel", "error"]
    if start:
        cmd += ["-ss", f"{start:.6f}"]
    cmd += ["-i", str(path)]
    if duration is not None:
        cmd += ["-t", f"{duration:.6f}"]
    cmd += ["-map", "0:a:0", "-vn", "-sn", "-dn"]
    if mono:
        cmd += ["-ac", "1"]
    cmd += ["-ar", str(sr), "-f", "f32le", "-acodec", "pcm_f32le", "pipe:1"]
    return cmd


def stream_blocks(
    path: str | Path,
    sr: int = 22050,
    block_seconds: float = 30.0,
    mono: bool = True,
    start: float | None = None,
    duration: float | None = None,
) -> Iterator[np.ndarray]:
    """Yield consecutive ``float32`` blocks of ``block_seconds`` (the last one shorter).

    Memory stays at about one block whatever the file length. Mono blocks have
    shape ``(n,)``; with ``mono=False`` they have shape ``(n, channels)``.
    Raises :class:`InputError` if ffmpeg fails (the file is named with ffmpeg's reason).
    """
    path = Path(path)
    channels = 1 if mono else max(1, probe(path).channels)
    frame_bytes = 4 * channels
    block_bytes = max(1, int(block_seconds * sr)) * frame_bytes
    proc = subprocess.Popen(
        _ffmpeg_cmd(path, sr, mono, start, duration), stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert proc.stdout is not None and proc.stderr is not None
    import threading

    err_chunks: list[bytes] = []
    # Drain stderr in the background so a chatty ffmpeg never blocks on a full pipe.
    stderr = proc.stderr
    reader = threading.Thread(target=lambda: err_chunks.append(stderr.read()), daemon=True)
    reader.start()
    pending = b""
    try:
        while True:
            chunk = proc.stdout.read(block_bytes - len(pending))
            if not chunk:
                break
            pending += chunk
            if len(pending) >= block_bytes:
                block = np.frombuffer(pending, dtype="<f4").copy()
                pending = b""
                yield block if mono else block.reshape(-1, channels)
        usable = len(pending) - len(pending) % frame_bytes
        if usable:
            block = np.frombuffer(pending[:usable], dtype="<f4").copy()
            yield block if mono else block.reshape(-1, channels)
    finally:
        if proc.poll() is None and proc.stdout is not None:
            proc.stdout.close()
        rc = proc.wait()
        reader.join(timeout=5)
    if rc != 0:
        raise InputError(
            f"{path}: ffmpeg could not decode it ({_last_line(b''.join(err_chunks))}).",
            hint="The file may be truncated or corrupt; fetch it again or convert it with ffmpeg.",
        )


def decode(
    path: str | Path,
    sr: int = 22050,
    mono: bool = True,
    start: float | None = None,
    duration: float | None = None,
) -> np.ndarray:
    """Decode (a part of) ``path`` into memory as ``float32`` at ``sr`` Hz.

    ``start`` and ``duration`` are in seconds. For whole long files prefer
    :func:`stream_blocks`. Raises :class:`InputError` if ffmpeg cannot decode it.
    """
    blocks = list(stream_blocks(path, sr=sr, block_seconds=60.0, mono=mono, start=start, duration=duration))
    if not blocks:
        return np.zeros((0,) if mono else (0, 1), dtype=np.float32)
    return np.concatenate(blocks)


def read_wav(path: str | Path) -> tuple[np.ndarray, int]:
    """Read a WAV/FLAC file with soundfile: ``(float32 samples, sample_rate)``, mono if the file is."""
    import soundfile as sf

    try:
        x, sr = sf.read(str(path), dtype="float32", always_2d=False)
    except (sf.LibsndfileError, RuntimeError) as exc:
        raise InputError(f"{path}: cannot read audio ({exc}).", hint="Check the file; re-create it.") from None
    return x, int(sr)


def read_mono(path: str | Path, sr: int) -> np.ndarray:
    """Any audio file as mono float32 at ``sr``: the one loader of every stage.

    WAV, FLAC and OGG through soundfile (fast; channels averaged, soxr resampling), anything
    else through ffmpeg. Raises :class:`InputError` naming the file when neither reads it.
    """
    import soundfile as sf

    try:
        x, file_sr = sf.read(str(path), dtype="float32", always_2d=False)
    except (sf.LibsndfileError, RuntimeError, ValueError):
        if not Path(path).is_file():
            raise InputError(f"{path}: no such file.", hint="Check the path.") from None
        return decode(path, sr=sr)
    file_sr = int(file_sr)
    if x.ndim > 1:
        x = x.mean(axis=1)
    if file_sr != sr and x.size:
        import soxr

        x = soxr.resample(x, file_sr, sr)
    return np.ascontiguousarray(x, dtype=np.float32)


def write_wav(path: str | Path, x: np.ndarray, sr: int) -> Path:
    """Write ``x`` as 16-bit PCM WAV atomically (temporary name, then rename).

    Samples outside [-1, 1] are clipped by the conversion; call :func:`normalize`
    first to stay inside the peak limit.
    """
    import soundfile as sf

    path = Path(path)
    with atomic_path(path) as tmp:
        sf.write(str(tmp), np.asarray(x, dtype=np.float32), sr, subtype="PCM_16", format="WAV")
    return path


SILENT_DBFS = -60.0  # a file or clip whose peak is under this holds no speech


def rms_dbfs(x: np.ndarray) -> float:
    """Root-mean-square level in dBFS (a full-scale sine is -3 dBFS); ``-inf`` for silence."""
    if x.size == 0:
        return -math.inf
    ms = float(np.mean(np.square(x, dtype=np.float64)))
    return 10.0 * math.log10(ms) if ms > 0 else -math.inf


def frame_dbfs(block: np.ndarray, hop: int) -> np.ndarray:
    """The level in dBFS of each ``hop``-sample frame of ``block`` (the tail frame zero-padded; silence: -200)."""
    n = len(block) // hop * hop
    frames = block[:n].reshape(-1, hop)
    if len(block) > n:  # the tail frame, zero-padded
        tail = np.zeros(hop, dtype=np.float32)
        tail[: len(block) - n] = block[n:]
        frames = np.vstack([frames, tail])
    ms = np.mean(np.square(frames, dtype=np.float64), axis=1)
    with np.errstate(divide="ignore"):
        return 10.0 * np.log10(np.maximum(ms, 1e-20))


def peak_dbfs(x: np.ndarray) -> float:
    """Highest absolute sample in dBFS; ``-inf`` for silence."""
    if x.size == 0:
        return -math.inf
    peak = float(np.max(np.abs(x)))
    return 20.0 * math.log10(peak) if peak > 0 else -math.inf


_PEAK_MARGIN_DB = 0.01


def db_to_gain(db: float) -> float:
    return 10.0 ** (db / 20.0)


def normalization_gain_db(x: np.ndarray, target_dbfs: float, peak_dbfs_limit: float) -> float:
    """Gain (dB) that brings the RMS of ``x`` to ``target_dbfs`` without its peak going
    above ``peak_dbfs_limit``: when both cannot hold, the peak limit wins (the clip
    ends up quieter than the target, never clipped). 0 for silence."""
    rms = rms_dbfs(x)
    if not math.isfinite(rms):
        return 0.0
    gain = target_dbfs - rms
    peak = peak_dbfs(x)
    if math.isfinite(peak) and peak + gain > peak_dbfs_limit - _PEAK_MARGIN_DB:
        # a hair under the limit, so float32 and 16-bit rounding cannot cross it
        gain = peak_dbfs_limit - _PEAK_MARGIN_DB - peak
    return gain


def normalize(x: np.ndarray, target_dbfs: float = -20.0, peak_dbfs: float = -1.0) -> np.ndarray:
    """Scale ``x`` to ``target_dbfs`` RMS with a sample-peak limit of ``peak_dbfs``.

    Never clips: if the target would push the peak above the limit, the gain is
    reduced so the peak sits exactly at the limit.
    """
    gain = normalization_gain_db(x, target_dbfs, peak_dbfs)
    return (np.asarray(x, dtype=np.float32) * np.float32(db_to_gain(gain))).astype(np.float32)


def clipped_runs(x: np.ndarray, level: float = 0.999, min_run: int = 3) -> int:
    """Number of runs of at least ``min_run`` consecutive samples at or above ``level``
    (absolute value): the signature of a recording that hit full scale."""
    if x.size < min_run:
        return 0
    hot = np.abs(x) >= level
    if not hot.any():
        return 0
    padded = np.concatenate(([False], hot, [False]))
    edges = np.flatnonzero(padded[1:] != padded[:-1])
    lengths = edges[1::2] - edges[0::2]
    return int(np.count_nonzero(lengths >= min_run))
