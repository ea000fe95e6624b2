"""One encoder per response: float audio chunks in, bytes of one container out.

Every response is a single stream in its format, fed chunk by chunk as the engine speaks, never a
container per chunk (which players treat as many files, or refuse):

* ``pcm``: 24 kHz signed 16-bit little-endian mono, no header (OpenAI's ``pcm``);
* ``wav``: one RIFF header whose RIFF and data sizes are ``0xFFFFFFFF`` ("unknown", as a stream
  cannot know its length up front), then the same PCM;
* ``mp3``, ``opus`` (in Ogg), ``aac`` (ADTS) and ``flac``: one PyAV (FFmpeg) muxer kept open for
  the whole response, writing into a sink that is emptied after every chunk.

:class:`FfmpegPipeEncoder` does the same through an ``ffmpeg`` process; ``benchmarks/serve.py``
measures both and the server uses PyAV (no process to start per response; RESULTS.md has the
figures).

Every successful response decodes, even one with no audio at all (a sentence whose GPT stopped at
its first code): an encoder closed after fewer than :data:`MIN_SAMPLES` (0.1 s) pads the response
with silence up to it. An mp3 or ADTS stream is nothing but frames, so without audio it is no file
at all; FFmpeg recognises an ADTS stream only from about its third frame (a 2-frame ``aac`` does not
open without a format hint); and a file of zero samples makes players (a browser's
``decodeAudioData``) fail. ``pcm`` is never padded: raw samples need no header, and none is a valid
answer.
"""

from __future__ import annotations

import os
import queue
import shutil
import struct
import subprocess
import threading
from typing import TYPE_CHECKING, Any, Protocol, cast

from xttsft.errors import MissingDependencyError

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

__all__ = [
    "FORMATS",
    "CONTENT_TYPES",
    "SAMPLE_RATE",
    "MIN_SAMPLES",
    "Encoder",
    "PcmEncoder",
    "WavStreamEncoder",
    "AvEncoder",
    "FfmpegPipeEncoder",
    "open_encoder",
    "to_s16",
    "wav_stream_header",
]

SAMPLE_RATE = 24000
"""XTTS-v2's HiFi-GAN speaks at 24 kHz; every format is encoded at that rate."""

MIN_SAMPLES = SAMPLE_RATE // 10
"""0.1 s: a shorter response (but ``pcm``) ends padded with silence up to it, so that it decodes."""

FORMATS: tuple[str, ...] = ("mp3", "opus", "aac", "flac", "wav", "pcm")

CONTENT_TYPES: dict[str, str] = {
    "mp3": "audio/mpeg",
    "opus": "audio/ogg; codecs=opus",
    "aac": "audio/aac",
    "flac": "audio/flac",
    "wav": "audio/wav",
    "pcm": "audio/pcm",
}

# format -> (FFmpeg muxer, encoder, muxer options, bit rate)
_AV: dict[str, tuple[str, str, dict[str, str], int | None]] = {
    # no Xing/LAME header: it holds the frame count, which a stream cannot know
    "mp3": ("mp3", "libmp3lame", {"write_xing": "0"}, 64000),
    # an Ogg page per 20 ms packet: the default (1 s pages) held audio back for a second
    "opus": ("ogg", "libopus", {"page_duration": "20000"}, 48000),
    "aac": ("adts", "aac", {}, 64000),
    "flac": ("flac", "flac", {}, None),
}


def to_s16(audio: np.ndarray) -> np.ndarray:
    """Float audio in [-1, 1] -> int16 samples (clipped)."""
    import numpy as np

    x = np.clip(np.asarray(audio, dtype=np.float32).reshape(-1), -1.0, 1.0)
    return (x * 32767.0).astype("<i2")


def _padding(samples: int) -> np.ndarray:
    """The silence that brings a response of ``samples`` samples up to :data:`MIN_SAMPLES`."""
    import numpy as np

    return np.zeros(max(0, MIN_SAMPLES - samples), dtype=np.float32)


def wav_stream_header(sample_rate: int = SAMPLE_RATE, channels: int = 1, bits: int = 16) -> bytes:
    """A 44-byte PCM WAV header for a stream of unknown length (RIFF and data sizes 0xFFFFFFFF)."""
    unknown = 0xFFFFFFFF
    block = channels * bits // 8
    return (
        b"RIFF"
        + struct.pack("<I", unknown)
        + b"WAVE"
        + b"fmt "
        + struct.pack("<IHHIIHH", 16, 1, channels, sample_rate, sample_rate * block, block, bits)
        + b"data"
        + struct.pack("<I", unknown)
    )


class Encoder(Protocol):
    """Chunks in, bytes out; :meth:`close` flushes and ends the container."""

    def encode(self, audio: np.ndarray) -> bytes: ...

    def close(self) -> bytes: ...

    def abort(self) -> None: ...


class PcmEncoder:
    """Raw 16-bit little-endian PCM."""

    def encode(self, audio: np.ndarray) -> bytes:
        return to_s16(audio).tobytes()

    def close(self) -> bytes:
        return b""

    def abort(self) -> None:
        pass


class WavStreamEncoder(PcmEncoder):
    """One WAV header with unknown sizes, then raw PCM (padded to :data:`MIN_SAMPLES`)."""

    def __init__(self, sample_rate: int = SAMPLE_RATE) -> None:
        self._header: bytes | None = wav_stream_header(sample_rate)
        self._samples = 0

    def _take_header(self) -> bytes:
        header, self._header = self._header or b"", None
        return header

    def encode(self, audio: np.ndarray) -> bytes:
        data = super().encode(audio)
        self._samples += len(data) // 2
        return self._take_header() + data

    def close(self) -> bytes:
        return self.encode(_padding(self._samples))


class _Sink:
    """A write-only file for PyAV: having no ``seek``, muxers treat the output as a stream."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def write(self, data: Any) -> int:
        self.parts.append(bytes(data))
        return len(data)

    def take(self) -> bytes:
        data = b"".join(self.parts)
        self.parts.clear()
        return data


class AvEncoder:
    """mp3, opus, aac or flac through one PyAV (FFmpeg) muxer kept open for the response."""

    def __init__(self, fmt: str, sample_rate: int = SAMPLE_RATE) -> None:
        import av

        muxer, codec, options, bit_rate = _AV[fmt]
        self._sink = _Sink()
        self._container = av.open(self._sink, mode="w", format=muxer, options=options)
        self._stream: Any = cast(Any, self._container.add_stream(codec, rate=sample_rate, layout="mono"))
        if bit_rate:
            self._stream.bit_rate = bit_rate
        self._rate = sample_rate
        self._pts = 0
        self._closed = False

    def encode(self, audio: np.ndarray) -> bytes:
        import av

        samples = to_s16(audio)
        if samples.size == 0:
            return b""
        frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = self._rate
        frame.pts = self._pts
        self._pts += frame.samples
        for packet in self._stream.encode(frame):
            self._container.mux(packet)
        return self._sink.take()

    def close(self) -> bytes:
        """Flush the encoder and write the trailer (Ogg writes its last page here); a response that
        is shorter than :data:`MIN_SAMPLES` is padded with silence first (see the module's note)."""
        if self._closed:
            return b""
        head = self.encode(_padding(self._pts))
        self._closed = True
        try:
            for packet in self._stream.encode(None):
                self._container.mux(packet)
        finally:
            self._container.close()
        return head + self._sink.take()

    def abort(self) -> None:
        """Free FFmpeg's buffers of a response cut short (nothing is flushed)."""
        if not self._closed:
            self._closed = True
            self._container.close()


class FfmpegPipeEncoder:
    """The same formats through an ``ffmpeg`` process (s16le on stdin, the container on stdout).

    Kept for the benchmark that chose PyAV; a reader thread drains stdout so neither pipe blocks.
    """

    def __init__(self, fmt: str, sample_rate: int = SAMPLE_RATE) -> None:
        ffmpeg = shutil.which("ffmpeg")
        if ffmpeg is None:
            raise MissingDependencyError("ffmpeg is not installed.", hint="apt-get install ffmpeg")
        muxer, codec, options, bit_rate = _AV[fmt]
        args = [
            ffmpeg,
            "-nostdin",
            "-loglevel",
            "error",
            "-f",
            "s16le",
            "-ar",
            str(sample_rate),
            "-ac",
            "1",
            "-i",
            "pipe:0",
            "-c:a",
            codec,
            "-flush_packets",
            "1",
        ]
        if bit_rate:
            args += ["-b:a", str(bit_rate)]
        for key, value in options.items():
            args += [f"-{key}", value]
        args += ["-f", muxer, "pipe:1"]
        self._proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self._out: queue.Queue[bytes] = queue.Queue()
        self._reader = threading.Thread(target=self._drain, daemon=True)
        self._reader.start()
        self._samples = 0

    def _drain(self) -> None:
        assert self._proc.stdout is not None
        while data := os.read(self._proc.stdout.fileno(), 65536):
            self._out.put(data)

    def _take(self) -> bytes:
        parts = []
        while not self._out.empty():
            parts.append(self._out.get_nowait())
        return b"".join(parts)

    def encode(self, audio: np.ndarray) -> bytes:
        assert self._proc.stdin is not None
        samples = to_s16(audio)
        self._samples += samples.size
        self._proc.stdin.write(samples.tobytes())
        self._proc.stdin.flush()
        return self._take()

    def close(self) -> bytes:
        assert self._proc.stdin is not None
        head = self.encode(_padding(self._samples))
        self._proc.stdin.close()
        self._reader.join()
        self._proc.wait()
        return head + self._take()

    def abort(self) -> None:
        if self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()


def open_encoder(fmt: str, sample_rate: int = SAMPLE_RATE, backend: str = "pyav") -> Encoder:
    """The encoder of one response in ``fmt`` (one of :data:`FORMATS`)."""
    if fmt == "pcm":
        return PcmEncoder()
    if fmt == "wav":
        return WavStreamEncoder(sample_rate)
    if fmt not in _AV:
        raise ValueError(f"unknown format {fmt!r}; one of {', '.join(FORMATS)}")
    return FfmpegPipeEncoder(fmt, sample_rate) if backend == "ffmpeg" else AvEncoder(fmt, sample_rate)
