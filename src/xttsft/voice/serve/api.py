"""The HTTP side: OpenAI's speech API over the engine, with health, readiness, metrics and a page.

:func:`create_app` builds the FastAPI app. Its lifespan starts a thread that runs ``load()`` (the
model and voices), computes every voice's latents, speaks one warm-up sentence and only then
starts the :class:`~xttsft.voice.serve.engine.Engine` and turns ``/readyz`` ready. Until then the
speech route answers 503 with ``Retry-After``, which the ``openai`` client honours.

Routes (docs/serve.md has the table): ``POST /v1/audio/speech``, ``GET /v1/models``,
``GET /v1/models/{id}``, ``GET /v1/audio/models``, ``GET /v1/audio/voices``, ``GET /healthz``,
``GET /readyz``, ``GET /metrics`` and ``GET /`` (the page). Errors have OpenAI's shape
``{"error": {"message", "type", "param", "code"}}``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hmac
import json
import logging
import math
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from importlib import resources
from typing import TYPE_CHECKING, Any, Literal

from fastapi import Request
from pydantic import BaseModel, ConfigDict, Field

from xttsft.errors import InputError
from xttsft.voice.serve.encode import CONTENT_TYPES, open_encoder
from xttsft.voice.serve.engine import Audio, Done, Engine, Failed, Job, QueueFullError
from xttsft.voice.serve.metrics import ServeMetrics
from xttsft.voice.serve.voices import UnknownVoiceError
from xttsft.voice.synth import normalize_language

if TYPE_CHECKING:  # pragma: no cover
    from fastapi import FastAPI

    from xttsft.settings import ServeSettings
    from xttsft.voice.serve.speaker import Loaded

__all__ = ["create_app", "ApiError", "SpeechRequest", "ServerState", "OPENAI_MODEL_NAMES"]

log = logging.getLogger(__name__)

#: Model names apps send (all speak with the one model this server holds).
OPENAI_MODEL_NAMES = ("tts-1", "tts-1-hd", "gpt-4o-mini-tts")
_WARMUP = {"en": "Hello, this is a warm-up.", "pt": "Olá, isto é um aquecimento."}
_CREATED = 1_700_000_000


class VoiceId(BaseModel):
    """``voice={"id": ...}``, as the openai client sends a custom voice."""

    model_config = ConfigDict(extra="ignore")
    id: str = Field(min_length=1, max_length=200)


class SpeechRequest(BaseModel):
    """The body of ``POST /v1/audio/speech`` (OpenAI's fields, plus ``language``)."""

    model_config = ConfigDict(extra="ignore")
    model: str = Field("xttsft", max_length=200, description="Any name: one model per server.")
    input: str = Field(description="The text to speak.")
    voice: str | VoiceId = Field("default", description="A voice name, an alias, or {'id': name}.")
    response_format: Literal["mp3", "opus", "aac", "flac", "wav", "pcm"] = "mp3"
    speed: float = Field(1.0, ge=0.25, le=4.0)
    stream_format: Literal["audio", "sse"] = "audio"
    instructions: str | None = Field(None, description="Accepted and ignored (XTTS takes no instructions).")
    language: str | None = Field(None, max_length=20, description="The text's language (extra_body).")

    @property
    def voice_name(self) -> str:
        return self.voice.id if isinstance(self.voice, VoiceId) else self.voice


class ApiError(Exception):
    """An error answered in OpenAI's shape."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code
        self.headers = headers or {}

    def response(self):
        from fastapi.responses import JSONResponse

        body = {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}
        return JSONResponse(body, status_code=self.status, headers=self.headers)


def _retry_headers(seconds: float) -> dict[str, str]:
    return {"Retry-After": str(max(1, math.ceil(seconds))), "retry-after-ms": str(max(1, int(seconds * 1000)))}


@dataclass
class ServerState:
    """What the routes share: readiness, the engine, the voices, the metrics."""

    settings: ServeSettings
    metrics: ServeMetrics
    expected_startup_s: float = 10.0
    sentence_pause: float = 0.25
    started: float = field(default_factory=time.monotonic)
    loaded: Loaded | None = None
    engine: Engine | None = None
    failure: BaseException | None = None
    stage: str = "starting"
    ready_after_s: float | None = None

    def require_ready(self) -> tuple[Loaded, Engine]:
        if self.loaded is not None and self.engine is not None and self.failure is None:
            return self.loaded, self.engine
        if self.failure is not None:
            self.metrics.requests.labels("failed_startup").inc()
            raise ApiError(
                500,
                f"The model failed to load: {self.failure}",
                type="server_error",
                code="model_load_failed",
                headers={"x-should-retry": "false"},
            )
        self.metrics.requests.labels("not_ready").inc()
        raise ApiError(
            503,
            f"The model is loading ({self.stage}); retry shortly.",
            type="server_error",
            code="model_loading",
            headers=_retry_headers(self.retry_after()),
        )

    def retry_after(self) -> float:
        """When to come back while loading: the rest of the last start's time; past it, half the time so far."""
        elapsed = time.monotonic() - self.started
        return min(30.0, max(1.0, self.expected_startup_s - elapsed, 0.5 * elapsed))


# --------------------------------------------------------------------------- start-up
def _start_up(
    state: ServerState, load: Callable[[], Loaded], on_failure: Callable[[BaseException], None] | None
) -> None:
    """The loader thread: model, voices' latents, one warm-up sentence, then the engine."""
    try:
        state.stage = "loading the model"
        loaded = load()
        state.metrics.sample_rate = loaded.speaker.sample_rate
        state.metrics.watch_gpu()
        state.stage = "computing the voices' latents"
        for voice in loaded.voices:
            state.metrics.latents(loaded.speaker.latents(voice).source)
        state.stage = "speaking a warm-up sentence"
        _warm_up(loaded)
        s = state.settings
        engine = Engine(
            loaded.speaker,
            max_queue=s.max_queue,
            max_streams=s.max_streams,
            sentence_pause=state.sentence_pause,
            metrics=state.metrics,
        )
        engine.start()
        state.loaded, state.engine = loaded, engine
        state.ready_after_s = time.monotonic() - state.started
        state.stage = "ready"
        log.info("Ready after %.1f s: %s, %d voice(s).", state.ready_after_s, loaded.description, len(loaded.voices))
    except BaseException as exc:  # noqa: BLE001 - reported on /readyz and to the caller
        state.failure = exc
        state.stage = "failed"
        log.error("The server could not start: %s", exc)
        if on_failure is not None:
            on_failure(exc)


def _warm_up(loaded: Loaded) -> None:
    speaker = loaded.speaker
    voice = loaded.voices.default
    language = "en" if loaded.language != "pt" else "pt"
    try:
        pieces = speaker.split(_WARMUP[language], language)
    except InputError:  # a model without English: its own language, one short word
        language = loaded.language
        pieces = speaker.split("Ok.", language)
    latents = speaker.latents(voice).value
    for _chunk in speaker.stream(pieces[0], language, latents, 1.0, threading.Event()):
        pass


# --------------------------------------------------------------------------- the app
def create_app(
    settings: ServeSettings,
    load: Callable[[], Loaded],
    *,
    sentence_pause: float = 0.25,
    expected_startup_s: float = 10.0,
    on_failure: Callable[[BaseException], None] | None = None,
    on_ready: Callable[[float], None] | None = None,
) -> FastAPI:
    """The app. ``load()`` runs on a background thread when the app starts; the server answers
    ``/healthz`` at once and everything else once the model is ready."""
    from fastapi import APIRouter, Depends, FastAPI

    state = ServerState(settings, ServeMetrics(), expected_startup_s=expected_startup_s, sentence_pause=sentence_pause)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        def run() -> None:
            _start_up(state, load, on_failure)
            if state.ready_after_s is not None and on_ready is not None:
                on_ready(state.ready_after_s)

        loader = threading.Thread(target=run, name="xttsft-loader", daemon=True)
        loader.start()
        try:
            yield
        finally:
            if state.engine is not None:
                state.engine.stop()

    app = FastAPI(title="xttsft serve", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.xttsft = state
    _install_errors(app)
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)
    v1 = APIRouter(dependencies=[Depends(_key_checker(settings, state))])
    _speech_routes(v1, state)
    _listing_routes(v1, state)
    app.include_router(v1)
    _open_routes(app, state)
    return app


def _key_checker(settings: ServeSettings, state: ServerState) -> Callable[..., None]:
    key = settings.api_key.encode() if settings.api_key else None

    def check(request: Request) -> None:
        if key is None:
            return
        auth = request.headers.get("authorization", "")
        given = auth[7:].strip() if auth[:7].lower() == "bearer " else request.headers.get("x-api-key", "")
        if not hmac.compare_digest(given.encode(), key):  # constant time
            state.metrics.requests.labels("unauthorized").inc()
            raise ApiError(
                401,
                "Incorrect API key provided." if given else "No API key provided: send 'Authorization: Bearer KEY'.",
                code="invalid_api_key",
            )

    return check


def _install_errors(app: FastAPI) -> None:
    from fastapi.exceptions import RequestValidationError
    from starlette.exceptions import HTTPException

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError):
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        app.state.xttsft.metrics.requests.labels("invalid").inc()
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        loc = [str(p) for p in first.get("loc", ())]
        param = loc[1] if len(loc) > 1 and loc[0] == "body" and not loc[1].isdigit() else None
        message = f"{param}: {first.get('msg')}" if param else f"Invalid request body: {first.get('msg')}"
        return ApiError(400, message, param=param, code="invalid_value" if param else "invalid_json").response()

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException):
        return ApiError(
            exc.status_code,
            str(exc.detail),
            code="not_found" if exc.status_code == 404 else None,
            headers=dict(exc.headers or {}),
        ).response()


# --------------------------------------------------------------------------- speech
def _speech_routes(router: Any, state: ServerState) -> None:
    from fastapi.concurrency import run_in_threadpool
    from fastapi.responses import StreamingResponse

    @router.post("/v1/audio/speech")
    async def speech(body: SpeechRequest):
        loaded, engine = state.require_ready()
        encoder = open_encoder(body.response_format, loaded.speaker.sample_rate)  # one per response
        try:
            job, channel = await _admit(body, loaded, engine, state, run_in_threadpool)
        except BaseException:
            encoder.abort()
            raise
        headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        if body.stream_format == "sse":
            events = _sse_body(engine, job, channel, encoder, body, state)
            return StreamingResponse(events, media_type="text/event-stream", headers=headers)
        audio = _audio_body(engine, job, channel, encoder, state)
        return StreamingResponse(audio, media_type=CONTENT_TYPES[body.response_format], headers=headers)


async def _admit(
    body: SpeechRequest, loaded: Loaded, engine: Engine, state: ServerState, to_thread: Any
) -> tuple[Job, asyncio.Queue]:
    """Validate a request and queue its job (400, or 429 when the queue is full)."""

    limit = state.settings.max_input_chars
    if len(body.input) > limit:
        raise _invalid(state, f"input: at most {limit} characters ({len(body.input)} given).", "input")
    try:
        voice = loaded.voices.resolve(body.voice_name)
    except UnknownVoiceError as exc:
        raise _invalid(state, f"{exc.message} {exc.hint}", "voice") from None
    try:
        language = normalize_language(body.language or voice.language or loaded.language)
    except InputError as exc:
        raise _invalid(state, f"{exc.message} {exc.hint}", "language") from None
    try:
        pieces = await to_thread(loaded.speaker.split, body.input, language)
    except InputError as exc:
        raise _invalid(state, f"{exc.message} {exc.hint or ''}".strip(), "input") from None
    loop = asyncio.get_running_loop()
    channel: asyncio.Queue = asyncio.Queue()

    def emit(event: Audio | Done | Failed) -> None:
        loop.call_soon_threadsafe(channel.put_nowait, event)

    job = Job(pieces, language, voice, body.speed, emit)
    try:
        engine.submit(job)
    except QueueFullError as exc:
        state.metrics.requests.labels("queue_full").inc()
        raise ApiError(
            429, exc.message, type="rate_limit_error", code="queue_full", headers=_retry_headers(exc.retry_after)
        ) from None
    return job, channel


def _invalid(state: ServerState, message: str, param: str) -> ApiError:
    state.metrics.requests.labels("invalid").inc()
    return ApiError(400, message, param=param, code="invalid_value")


async def _events(
    engine: Engine, job: Job, channel: asyncio.Queue, encoder: Any, state: ServerState
) -> AsyncIterator[tuple[bytes, Done | None]]:
    """(encoded bytes, Done at the end) for every engine event; a failure raises, which aborts the
    connection (a cut the client sees). A client that leaves cancels the job (``finally``)."""
    outcome = "cancelled"
    try:
        while True:
            event = await channel.get()
            if isinstance(event, Audio):
                yield encoder.encode(event.samples), None
            elif isinstance(event, Done):
                outcome = "ok"
                yield encoder.close(), event
                return
            else:
                outcome = "failed"
                raise RuntimeError(f"speech failed mid-stream: {event.error}") from event.error
    finally:
        state.metrics.requests.labels(outcome).inc()
        if outcome != "ok":
            engine.cancel(job)
            encoder.abort()


async def _audio_body(
    engine: Engine, job: Job, channel: asyncio.Queue, encoder: Any, state: ServerState
) -> AsyncIterator[bytes]:
    async for data, _done in _events(engine, job, channel, encoder, state):
        if data:
            yield data


async def _sse_body(
    engine: Engine, job: Job, channel: asyncio.Queue, encoder: Any, body: SpeechRequest, state: ServerState
) -> AsyncIterator[str]:
    """``speech.audio.delta`` events (base64 of the format's bytes), then ``speech.audio.done``."""
    async for data, done in _events(engine, job, channel, encoder, state):
        if data:
            delta = {"type": "speech.audio.delta", "audio": base64.b64encode(data).decode()}
            yield f"data: {json.dumps(delta)}\n\n"
        if done is not None:
            audio_tokens = round(done.samples / state.metrics.sample_rate * 21.5)  # XTTS: ~21.5 codes per second
            usage = {
                "input_tokens": len(body.input),
                "output_tokens": audio_tokens,
                "total_tokens": len(body.input) + audio_tokens,
            }
            yield f"data: {json.dumps({'type': 'speech.audio.done', 'usage': usage})}\n\n"


# --------------------------------------------------------------------------- listings
def _listing_routes(router: Any, state: ServerState) -> None:
    def model_ids() -> list[str]:
        own = state.loaded.model_name if state.loaded is not None else "xttsft"
        return [own, *OPENAI_MODEL_NAMES]

    def model(mid: str) -> dict[str, Any]:
        return {"id": mid, "object": "model", "created": _CREATED, "owned_by": "xttsft"}

    @router.get("/v1/models")
    async def models():
        return {"object": "list", "data": [model(m) for m in model_ids()]}

    @router.get("/v1/models/{model_id}")
    async def one_model(model_id: str):
        if model_id not in model_ids():
            raise ApiError(404, f"The model {model_id!r} does not exist.", param="model", code="model_not_found")
        return model(model_id)

    @router.get("/v1/audio/models")
    async def audio_models():
        return {"models": [{"id": m, "name": m} for m in model_ids()]}

    @router.get("/v1/audio/voices")
    async def voices():
        loaded, _engine = state.require_ready()
        return {
            "voices": [v.listing() for v in loaded.voices],
            "default": loaded.voices.default.name,
            "aliases": loaded.voices.aliases(),
        }


def _open_routes(app: FastAPI, state: ServerState) -> None:
    from fastapi import Depends
    from fastapi.responses import HTMLResponse, JSONResponse, Response

    @app.get("/healthz")
    async def healthz():
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz():
        if state.loaded is not None and state.engine is not None:
            return {
                "status": "ready",
                "model": state.loaded.description,
                "voices": len(state.loaded.voices),
                "ready_after_s": round(state.ready_after_s or 0.0, 2),
            }
        status = "failed" if state.failure is not None else "loading"
        body = {"status": status, "stage": state.stage, "detail": str(state.failure) if state.failure else None}
        headers = {} if state.failure else _retry_headers(state.retry_after())
        return JSONResponse(body, status_code=503, headers=headers)

    @app.get("/metrics", dependencies=[Depends(_key_checker(state.settings, state))])
    async def metrics():
        from prometheus_client import CONTENT_TYPE_LATEST

        return Response(state.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    page = resources.files(__package__ or "xttsft.voice.serve").joinpath("page.html").read_text(encoding="utf-8")

    @app.get("/", response_class=HTMLResponse)
    async def index():
        return HTMLResponse(page, headers={"Cache-Control": "no-cache"})


class BodyLimit:
    """Refuse request bodies over ``limit`` bytes (413), by Content-Length or as they arrive."""

    def __init__(self, app: Any, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        too_big = ApiError(413, f"The request body is larger than {self.limit} bytes.", code="request_too_large")
        length = dict(scope.get("headers") or []).get(b"content-length", b"0")
        if length.isdigit() and int(length) > self.limit:
            await too_big.response()(scope, receive, send)
            return
        seen = 0

        async def limited() -> dict:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise too_big
            return message

        try:
            await self.app(scope, limited, send)
        except ApiError as exc:
            if exc is not too_big:
                raise
            await too_big.response()(scope, receive, send)
