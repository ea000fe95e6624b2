"""Prometheus metrics of one server, in the app's own registry (two apps in one process, as in
the tests, never share or clash)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from xttsft.voice.serve.engine import EngineMetrics

if TYPE_CHECKING:  # pragma: no cover
    from xttsft.voice.serve.engine import Job

__all__ = ["ServeMetrics", "OUTCOMES"]

#: How a speech request ended: spoken to the end, left by its client, failed in the model, refused
#: as invalid, refused with a full queue, before ready, without the right key, or after a failed start.
OUTCOMES = ("ok", "cancelled", "failed", "invalid", "queue_full", "not_ready", "unauthorized", "failed_startup")
_LATENCY_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0)
_RTF_BUCKETS = (0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 4.0, 8.0, 16.0)


class ServeMetrics(EngineMetrics):
    """``xttsft_*`` metrics: queue, streams, time to first audio, real-time factor, cancellations,
    latent-cache hits, requests by outcome and, on CUDA, GPU memory."""

    def __init__(self, sample_rate: int = 24000) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.sample_rate = sample_rate
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.queue_depth = Gauge("xttsft_queue_depth", "Speech requests waiting to start.", registry=r)
        self.active_streams = Gauge("xttsft_active_streams", "Speech requests being spoken (taking turns).", registry=r)
        self.ttfa = Histogram(
            "xttsft_time_to_first_audio_seconds",
            "From a request's arrival to its first audio chunk.",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.rtf = Histogram(
            "xttsft_real_time_factor",
            "Model time spent on a request / seconds of audio it got (below 1 is faster than real time).",
            buckets=_RTF_BUCKETS,
            registry=r,
        )
        self.audio_seconds = Counter("xttsft_audio_seconds", "Seconds of audio spoken.", registry=r)
        self.cancellations = Counter(
            "xttsft_cancellations", "Requests whose client left before the end.", ["stage"], registry=r
        )
        self.latent_lookups = Counter(
            "xttsft_latent_cache_lookups",
            "Voice latents by where they came from (memory and disk are cache hits; computed is a miss).",
            ["source"],
            registry=r,
        )
        self.requests = Counter("xttsft_requests", "Speech requests by outcome.", ["outcome"], registry=r)
        self.failures = Counter("xttsft_engine_failures", "Speech requests that failed in the model.", registry=r)
        for stage in ("queued", "speaking"):
            self.cancellations.labels(stage)
        for source in ("memory", "disk", "computed"):
            self.latent_lookups.labels(source)
        for outcome in OUTCOMES:
            self.requests.labels(outcome)

    def watch_gpu(self) -> None:
        """GPU memory gauges, once a model is on CUDA (called after loading)."""
        import sys

        torch = sys.modules.get("torch")  # never import torch for this: no model, no GPU
        if torch is None or not torch.cuda.is_available():
            return
        from prometheus_client import Gauge

        registry = self.registry
        Gauge(
            "xttsft_gpu_memory_allocated_bytes", "GPU memory held by tensors (torch).", registry=registry
        ).set_function(lambda: torch.cuda.memory_allocated())
        Gauge(
            "xttsft_gpu_memory_reserved_bytes", "GPU memory reserved by torch's caching allocator.", registry=registry
        ).set_function(lambda: torch.cuda.memory_reserved())

    # EngineMetrics
    def queue(self, waiting: int, active: int) -> None:
        self.queue_depth.set(waiting)
        self.active_streams.set(active)

    def first_audio(self, seconds: float) -> None:
        self.ttfa.observe(seconds)

    def finished(self, job: Job, seconds: float) -> None:
        audio = job.samples / self.sample_rate
        self.audio_seconds.inc(audio)
        if audio > 0:
            self.rtf.observe(job.compute_s / audio)

    def cancelled(self, started: bool) -> None:
        self.cancellations.labels("speaking" if started else "queued").inc()

    def latents(self, source: str) -> None:
        self.latent_lookups.labels(source).inc()

    def failed(self) -> None:
        self.failures.inc()

    def render(self) -> bytes:
        from prometheus_client import generate_latest

        return generate_latest(self.registry)
