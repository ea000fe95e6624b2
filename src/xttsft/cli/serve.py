"""``xttsft serve``: the fine-tuned voice behind an OpenAI-compatible speech API."""

from __future__ import annotations

import typer

from xttsft.cli._command import command, load
from xttsft.cli._common import handle_errors, state

# every serve setting, and the synth settings that choose and load the model
_TAKES = ("serve", "synth.checkpoint", "synth.device", "synth.max_audio_tokens", "synth.num_references")


def register(app: typer.Typer) -> None:
    command(app, "serve", *_TAKES)(serve)


@handle_errors
def serve(
    ctx: typer.Context,
    model: str | None = typer.Option(
        None,
        "--model",
        "-m",
        help="A run name (default: the most recent run), `base` (the base model alone), or a model folder "
        "(an `xttsft export`).",
    ),
) -> None:
    """Serve the voice on OpenAI's speech API (`POST /v1/audio/speech`), streaming, until Ctrl-C.

    **Apps:** Open WebUI, SillyTavern, Home Assistant and the `openai` client: base URL
    `http://HOST:PORT/v1`, any model name, voice `default` (or alloy, nova, ...: the default
    voice), or a voice of `--voices DIR` (NAME.wav, or NAME/ with wavs and voice.json).

    **Streaming:** mp3, opus, aac, flac, wav or pcm, sentence by sentence as it is generated;
    requests take turns, a full queue answers 429, a client that leaves stops its generation.

    **Safety:** listens on 127.0.0.1 unless `--host` says otherwise; any other address needs an
    API key (SERVE_API_KEY). One worker per model: a second worker would load a second copy of the
    model; run a second server on another port instead.

    **Check:** `/readyz` (ready after the model, the voices and a warm-up sentence), `/metrics`
    (Prometheus), and a page to listen at `http://HOST:PORT/`.

    Example: `SERVE_API_KEY=secret xttsft serve --model my-voice --host 0.0.0.0 --port 8000`
    """
    from xttsft.voice.serve import run_server

    settings, ws = load(ctx)
    run_server(settings, ws, model, default_base=settings.train.base_model, access_log=state(ctx).verbose)
