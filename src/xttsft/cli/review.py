"""``xttsft review``: listen to every clip and fix its transcript in a local page."""

from __future__ import annotations

import secrets

import typer

from xttsft.cli._command import command, load
from xttsft.cli._common import console, handle_errors


def register(app: typer.Typer) -> None:
    command(app, "review")(review)


@handle_errors
def review(
    ctx: typer.Context,
    port: int = typer.Option(8766, "--port", min=0, max=65535, help="Port on 127.0.0.1 (0: any free port)."),
    no_browser: bool = typer.Option(False, "--no-browser", help="Print the page's address instead of opening it."),
) -> None:
    """Listen to every clip and fix its transcript, in a page on this machine, before `xttsft build`.

    **When:** after `xttsft transcribe`, before `xttsft build`. The page lists every clip most likely
    wrong first (Whisper's confidence, the screen's speaker similarity and DNSMOS), with its audio,
    its transcript (editable), the stage and reason that dropped it, and its scores. Filter by
    decision, reason, speaker and length; keep or drop a clip, or every clip shown.

    **Keys:** j/k next and previous, space play/pause, a keep, d drop, e edit, u undo.

    **Where edits go:** train/data/processed/review/review.jsonl, saved as you make them. They never
    change the transcripts or the screen's files; `xttsft build` applies them (an edited text is
    used as written, after the language's normalisation; a clip dropped here is listed with the
    reason `review`; a clip kept here goes in even if the screen dropped it).

    **Security:** the page listens on 127.0.0.1 only, and its address carries a random token: a
    request without it gets 403. Stop it with Ctrl-C.

    Example: `xttsft review --no-browser`
    """
    import uvicorn

    from xttsft.data.review import clip_views
    from xttsft.data.review_app import create_app

    _, ws = load(ctx)
    clips = clip_views(ws)  # fails here, with its hint, when there is nothing to review
    token = secrets.token_urlsafe(24)
    config = uvicorn.Config(create_app(ws, token), host="127.0.0.1", port=port, log_level="warning")
    server = uvicorn.Server(config)
    sockets = [config.bind_socket()]  # bound now: the address printed is the one that answers
    sockets[0].listen(config.backlog)  # and listening: a browser opened at once waits instead of being refused
    url = f"http://127.0.0.1:{sockets[0].getsockname()[1]}/?token={token}"
    doubtful = sum(1 for c in clips if c.doubt > 1.0)
    console.print(f"Reviewing {len(clips)} clips ({doubtful} doubtful) of {ws.root}")
    console.print(f"Open: {url}")
    console.print("Edits are saved as you make them; stop with Ctrl-C, then run `xttsft build`.")
    if not no_browser:
        import webbrowser

        webbrowser.open(url)
    server.run(sockets=sockets)
