"""``xttsft serve``: a fine-tuned voice behind an OpenAI-compatible speech API.

* :mod:`.engine`: one thread owns the model; requests wait in a bounded queue and take turns
  sentence by sentence; each can be cancelled within one chunk.
* :mod:`.speaker`: XTTS-v2 behind the engine's ``Speaker`` interface, and the loader.
* :mod:`.voices`: voices by name, OpenAI's names as aliases, latents cached in memory and on disk.
* :mod:`.encode`: one persistent encoder per response (PyAV), streamed WAV and raw PCM.
* :mod:`.api`: the FastAPI app (``create_app``), its errors, metrics and page.
* :func:`run_server` is what the CLI calls: checks, then one uvicorn worker.

One worker per model: each uvicorn worker is a process with its own copy of the model (1.8 GB
for XTTS-v2, and as much GPU memory), and workers cannot share one engine's queue or turns; to use
two GPUs, run two servers on two ports.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import socket
from pathlib import Path
from typing import TYPE_CHECKING

from xttsft.errors import InputError, XttsftError
from xttsft.voice.serve.api import create_app
from xttsft.voice.serve.speaker import load_xtts_speaker
from xttsft.voice.synth import resolve_model

if TYPE_CHECKING:  # pragma: no cover
    from xttsft.paths import Workspace
    from xttsft.settings import Settings

__all__ = ["run_server", "check_binding", "ServerUnsafeError"]

log = logging.getLogger(__name__)


class ServerUnsafeError(XttsftError):
    """The server would listen beyond this machine without an API key."""


def _is_loopback(host: str) -> bool:
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:  # a host name: it may resolve to any interface
        return False


def check_binding(host: str, port: int, api_key: str | None) -> None:
    """Refuse a non-loopback address without a key, and a port that is taken."""
    if not _is_loopback(host) and not api_key:
        raise ServerUnsafeError(
            f"Listening on {host} makes the server reachable from other machines, and no API key is set.",
            hint="Set one (export SERVE_API_KEY=$(openssl rand -hex 24)) and give it to your apps, or keep the "
            "default --host 127.0.0.1.",
        )
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host.strip("[]"), port))
        except OSError as exc:
            raise InputError(
                f"Cannot listen on {host}:{port}: {exc.strerror or exc}.",
                hint="Pick another --port, or stop what already listens there.",
            ) from None


def _startup_record(ws: Workspace) -> Path:
    return ws.root / ".cache" / "serve" / "startup.json"


def _expected_startup(ws: Workspace, key: str) -> float:
    """Seconds the last start of this model took (10 s the first time): the 503's Retry-After."""
    try:
        return float(json.loads(_startup_record(ws).read_text(encoding="utf-8"))[key])
    except (OSError, ValueError, KeyError, TypeError):
        return 10.0


def _remember_startup(ws: Workspace, key: str, seconds: float) -> None:
    path = _startup_record(ws)
    try:
        data = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
        data[key] = round(seconds, 2)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    except (OSError, ValueError) as exc:
        log.debug("Could not record the start-up time: %s", exc)


def run_server(
    settings: Settings,
    ws: Workspace,
    model: str | None,
    *,
    default_base: str = "coqui/XTTS-v2",
    access_log: bool = False,
) -> None:
    """Serve until Ctrl-C: check the address and key, start uvicorn (one worker), load in the background.

    A model or voices that fail to load stop the server and raise here."""
    import uvicorn

    serve = settings.serve
    check_binding(serve.host, serve.port, serve.api_key)
    if serve.voices_dir is not None and not Path(serve.voices_dir).expanduser().is_dir():
        raise InputError(
            f"Voices folder {serve.voices_dir} does not exist.",
            hint="Pass a folder with one NAME.wav, or one NAME/ folder of wavs, per voice.",
        )
    source = resolve_model(ws, model, default_base=default_base)  # an unknown model fails before the server starts
    key = f"{source.kind}:{source.path or source.name}"
    failure: list[BaseException] = []
    server: uvicorn.Server | None = None

    def load():
        return load_xtts_speaker(
            serve,
            settings.synth,
            ws,
            model,
            default_base=default_base,
            voices_dir=Path(serve.voices_dir).expanduser() if serve.voices_dir else None,
        )

    def on_failure(exc: BaseException) -> None:
        failure.append(exc)
        if server is not None:
            server.should_exit = True

    app = create_app(
        serve,
        load,
        sentence_pause=settings.synth.sentence_pause,
        expected_startup_s=_expected_startup(ws, key),
        on_failure=on_failure,
        on_ready=lambda s: _remember_startup(ws, key, s),
    )
    config = uvicorn.Config(
        app,
        host=serve.host.strip("[]"),
        port=serve.port,
        workers=1,
        log_config=None,
        access_log=access_log,
        timeout_graceful_shutdown=5,
    )
    server = uvicorn.Server(config)
    log.info("Listening on http://%s:%d (loading %s).", serve.host, serve.port, source.name)
    server.run()
    if failure:
        exc = failure[0]
        if isinstance(exc, XttsftError):
            raise exc
        raise XttsftError(
            f"The server could not start: {type(exc).__name__}: {exc}",
            hint="Run again with --verbose for the traceback.",
        ) from exc
