"""The engine: one thread owns the model; requests wait in a bounded queue and take turns.

* :class:`Speaker` is what the engine needs from a model: split text into pieces, the latents
  of a voice, and a stream of audio chunks for one piece. :class:`xttsft.voice.serve.speaker.XttsSpeaker`
  is XTTS-v2; the tests' engine double is another.
* :meth:`Engine.submit` admits a :class:`Job` or raises :class:`QueueFullError` (the API's 429).
* The engine's thread is the only one that calls the speaker. It gives each active job (at most
  ``max_streams``) one piece in turn, so a long text does not hold a short one back. Chunks go
  to the job's ``emit`` callback as they are generated.
* Each job has its own ``cancel`` event: the engine checks it after every chunk (the speaker may
  check it more often), so a client that leaves stops its generation within one chunk, and a
  queued job whose client left is dropped without starting.
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import logging
import threading
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from xttsft.errors import XttsftError

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

    from xttsft.voice.serve.voices import Latents, VoiceEntry

__all__ = ["Speaker", "Job", "Audio", "Done", "Failed", "Engine", "EngineMetrics", "QueueFullError"]

log = logging.getLogger(__name__)


class Speaker(Protocol):
    """The model side of the engine. Only the engine's thread calls ``latents`` and ``stream``."""

    sample_rate: int

    def split(self, text: str, language: str) -> list[str]:
        """Pieces the model can speak one at a time (raises InputError on text it cannot speak)."""
        ...

    def latents(self, voice: VoiceEntry) -> Latents:
        """The conditioning of ``voice`` (cached)."""
        ...

    def stream(
        self, text: str, language: str, latents: Any, speed: float, cancel: threading.Event
    ) -> Generator[np.ndarray, None, None]:
        """Float32 mono chunks of one piece; stops early once ``cancel`` is set."""
        ...


class QueueFullError(XttsftError):
    """The queue is full; ``retry_after`` is a guess, in seconds, of when a place frees up."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message, hint="Retry later, or raise serve.max_queue.")
        self.retry_after = retry_after


@dataclass(frozen=True)
class Audio:
    """A chunk of audio for the job's client."""

    samples: np.ndarray


@dataclass(frozen=True)
class Done:
    """The job spoke every piece."""

    samples: int
    seconds: float


@dataclass(frozen=True)
class Failed:
    """The job stopped on an error (the API aborts the connection)."""

    error: BaseException


@dataclass(eq=False)
class Job:
    """One request: its pieces, voice and speed, where its chunks go, and its cancel event."""

    pieces: list[str]
    language: str
    voice: VoiceEntry
    speed: float
    emit: Callable[[Audio | Done | Failed], None]
    cancel: threading.Event = field(default_factory=threading.Event)
    submitted: float = field(default_factory=time.perf_counter)
    id: int = 0
    # the engine's bookkeeping
    latents: Any = None
    next_piece: int = 0
    samples: int = 0
    compute_s: float = 0.0
    started: bool = False
    first_audio_s: float | None = None


class EngineMetrics:
    """What the engine reports; the API binds these to Prometheus. Every method is a no-op here."""

    def queue(self, waiting: int, active: int) -> None: ...

    def first_audio(self, seconds: float) -> None: ...

    def finished(self, job: Job, seconds: float) -> None: ...

    def cancelled(self, started: bool) -> None: ...

    def latents(self, source: str) -> None: ...

    def failed(self) -> None: ...


class Engine:
    """Feeds one :class:`Speaker` from a bounded queue on one thread."""

    def __init__(
        self,
        speaker: Speaker,
        *,
        max_queue: int = 16,
        max_streams: int = 4,
        sentence_pause: float = 0.0,
        metrics: EngineMetrics | None = None,
    ) -> None:
        self.speaker = speaker
        self.max_queue = max_queue
        self.max_streams = max_streams
        self.metrics = metrics or EngineMetrics()
        self._pause_samples = int(round(sentence_pause * speaker.sample_rate))
        self._waiting: collections.deque[Job] = collections.deque()
        self._active: collections.deque[Job] = collections.deque()
        self._in_turn: Job | None = None
        self._cond = threading.Condition()
        self._ids = itertools.count(1)
        self._stopping = False
        self._durations: collections.deque[float] = collections.deque(maxlen=32)
        self._thread = threading.Thread(target=self._run, name="xttsft-engine", daemon=True)

    # ------------------------------------------------------------------ the API side
    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Cancel every job and end the thread."""
        with self._cond:
            self._stopping = True
            for job in [*self._waiting, *self._active]:
                job.cancel.set()
            self._cond.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def submit(self, job: Job) -> Job:
        """Queue ``job``; QueueFullError when ``max_streams + max_queue`` jobs are already in."""
        with self._cond:
            if self._stopping:
                raise QueueFullError("The server is shutting down.", retry_after=5.0)
            if self._load() >= self.max_streams + self.max_queue:
                raise QueueFullError(
                    f"The speech queue is full ({self._load()} requests in progress or waiting).",
                    retry_after=self._retry_after(),
                )
            job.id = next(self._ids)
            if len(self._active) + (self._in_turn is not None) < self.max_streams:
                self._active.append(job)  # its turn comes after the piece being spoken
            else:
                self._waiting.append(job)
            self._report()
            self._cond.notify_all()
        return job

    def cancel(self, job: Job) -> None:
        """The client left: stop ``job`` within one chunk, or drop it if it has not started."""
        job.cancel.set()
        with self._cond:
            for line in (self._waiting, self._active):
                if job in line and not job.started:
                    line.remove(job)
                    self.metrics.cancelled(started=False)
                    self._report()
                    self._cond.notify_all()
        # a started job ends on the engine's thread, after its current chunk

    @property
    def waiting(self) -> int:
        with self._cond:
            return len(self._waiting)

    @property
    def active(self) -> int:
        with self._cond:
            return len(self._active) + (self._in_turn is not None)

    def _load(self) -> int:
        return len(self._waiting) + len(self._active) + (self._in_turn is not None)

    def _retry_after(self) -> float:
        """A guess of when a place frees up: the typical request time, times the queue in front."""
        typical = sorted(self._durations)[len(self._durations) // 2] if self._durations else 2.0
        return max(1.0, min(60.0, typical * (1 + len(self._waiting)) / max(1, self.max_streams)))

    def _report(self) -> None:
        self.metrics.queue(len(self._waiting), len(self._active) + (self._in_turn is not None))

    # ------------------------------------------------------------------ the engine's thread
    def _run(self) -> None:
        while True:
            job = self._next_turn()
            if job is None:
                return
            try:
                finished = self._turn(job)
            except Exception as exc:  # noqa: BLE001 - one job's failure must not stop the others
                log.exception("Speech job %d failed", job.id)
                self.metrics.failed()
                self._emit(job, Failed(exc))
                finished = True
            with self._cond:
                self._in_turn = None
                if not finished:
                    self._active.append(job)
                self._report()

    def _next_turn(self) -> Job | None:
        """The job whose turn it is (admitting waiting jobs first); None when stopping."""
        with self._cond:
            while True:
                if self._stopping:
                    return None
                while self._waiting and len(self._active) < self.max_streams:
                    self._active.append(self._waiting.popleft())
                if self._active:
                    self._in_turn = self._active.popleft()
                    self._report()
                    return self._in_turn
                self._cond.wait()

    def _turn(self, job: Job) -> bool:
        """Speak the next piece of ``job``; True when the job is over (done or cancelled)."""
        if job.cancel.is_set():
            self.metrics.cancelled(started=job.started)
            return True
        job.started = True
        t0 = time.perf_counter()
        if job.latents is None:
            got = self.speaker.latents(job.voice)
            self.metrics.latents(got.source)
            job.latents = got.value
        piece = job.pieces[job.next_piece]
        with contextlib.closing(self.speaker.stream(piece, job.language, job.latents, job.speed, job.cancel)) as chunks:
            for chunk in chunks:  # closing: a cancelled piece frees the model's generator at once
                if job.cancel.is_set():
                    break
                self._audio(job, chunk)
        job.next_piece += 1
        if job.cancel.is_set():
            job.compute_s += time.perf_counter() - t0
            self.metrics.cancelled(started=True)
            return True
        if job.next_piece < len(job.pieces) and self._pause_samples:
            import numpy as np

            self._audio(job, np.zeros(self._pause_samples, dtype=np.float32))
        job.compute_s += time.perf_counter() - t0
        if job.next_piece < len(job.pieces):
            return False
        total = time.perf_counter() - job.submitted
        self._durations.append(total)
        self.metrics.finished(job, total)
        self._emit(job, Done(job.samples, total))
        return True

    def _audio(self, job: Job, chunk: Any) -> None:
        import numpy as np

        samples = np.asarray(chunk, dtype=np.float32).reshape(-1)
        if samples.size == 0:
            return
        if job.first_audio_s is None:
            job.first_audio_s = time.perf_counter() - job.submitted
            self.metrics.first_audio(job.first_audio_s)
        job.samples += samples.size
        self._emit(job, Audio(samples))

    @staticmethod
    def _emit(job: Job, event: Audio | Done | Failed) -> None:
        try:
            job.emit(event)
        except Exception:  # noqa: BLE001 - a consumer that is gone cannot take the event
            log.debug("Job %d: its consumer is gone", job.id, exc_info=True)
            job.cancel.set()
