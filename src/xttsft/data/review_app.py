"""The local page of ``xttsft review``: a small FastAPI app over :mod:`xttsft.data.review`.

Security, as Jupyter does it: the app is bound to 127.0.0.1 by the command, and every request
carries a random token (``?token=`` or the ``X-Review-Token`` header), compared in constant time;
without it the answer is 403, so another local user, or a web page open in the same browser,
cannot read or change the dataset. A clip is served by its id, never by a path.
"""

from __future__ import annotations

import hmac
from importlib import resources
from typing import Any, Literal

from pydantic import BaseModel

from xttsft.data.review import ReviewStore, clip_views
from xttsft.errors import XttsftError
from xttsft.paths import Workspace
from xttsft.records import ClipRecord, read_records

__all__ = ["create_app"]


class Edit(BaseModel):
    """One edit from the page: a new text, a keep/drop decision, or ``clear`` (forget the review)."""

    text: str | None = None
    decision: Literal["keep", "drop"] | None = None
    clear: bool = False


class Bulk(Edit):
    """The same edit for every clip the page shows."""

    ids: list[str]


def create_app(ws: Workspace, token: str) -> Any:
    from fastapi import FastAPI, Request
    from fastapi.responses import FileResponse, HTMLResponse, JSONResponse

    store = ReviewStore(ws)
    app = FastAPI(title="xttsft review", docs_url=None, redoc_url=None, openapi_url=None)
    page = resources.files(__package__ or "xttsft.data").joinpath("review_page.html").read_text(encoding="utf-8")

    @app.middleware("http")
    async def need_token(request: Request, call_next: Any) -> Any:
        given = request.query_params.get("token") or request.headers.get("x-review-token") or ""
        if not hmac.compare_digest(given.encode(), token.encode()):
            return JSONResponse(
                {"error": "forbidden: open the page through the URL xttsft review printed"}, status_code=403
            )
        return await call_next(request)

    @app.get("/", response_class=HTMLResponse)
    def index() -> str:
        return page

    @app.get("/api/clips")
    def clips() -> Any:
        try:
            views = clip_views(ws)
        except XttsftError as exc:  # the clips were removed, or a stage file is damaged: say so, in the page
            return JSONResponse({"error": str(exc)}, status_code=409)
        return {"workspace": str(ws.root), "clips": [v.to_dict() for v in views]}

    @app.get("/api/clips/{clip_id}/audio")
    def audio(clip_id: str) -> Any:
        view = next((c for c in _clips(ws) if c.id == clip_id), None)
        if view is None:
            return JSONResponse({"error": f"no clip {clip_id!r}"}, status_code=404)
        path = (ws.segments_dir / view.wav).resolve()
        if not path.is_relative_to(ws.segments_dir.resolve()) or not path.is_file():
            return JSONResponse({"error": f"the audio of {clip_id!r} is missing"}, status_code=404)
        return FileResponse(path, media_type="audio/wav")

    @app.post("/api/clips/{clip_id}")
    def edit(clip_id: str, body: Edit) -> Any:
        return _save(lambda: store.edit(clip_id, text=body.text, decision=body.decision, clear=body.clear), clip_id)

    @app.post("/api/bulk")
    def bulk(body: Bulk) -> Any:
        return _save(lambda: store.edit_many(body.ids, text=None, decision=body.decision, clear=body.clear), None)

    def _save(do: Any, clip_id: str | None) -> Any:
        if clip_id is not None and not store.knows(clip_id):
            return JSONResponse({"error": f"no clip {clip_id!r}"}, status_code=404)
        try:
            done = do()
        except XttsftError as exc:  # an unknown clip, an empty text, a damaged review.jsonl
            return JSONResponse({"error": str(exc)}, status_code=400)
        rows = done.values() if isinstance(done, dict) else [done] if done else []
        return {"saved": [r.to_dict() for r in rows]}

    return app


def _clips(ws: Workspace) -> list[Any]:

    return read_records(ws.segments_manifest, ClipRecord)
