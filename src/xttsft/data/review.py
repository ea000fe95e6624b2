"""``xttsft review``: listen to every clip and fix its transcript before ``build``.

What a person decides is kept apart from what the stages wrote: ``review.jsonl`` holds one
:class:`~xttsft.records.ReviewRecord` per clip touched (a text override, a keep/drop override, the
time), rewritten atomically on every edit. The transcripts and the screen's files are never
changed, so re-running ``transcribe`` or ``screen`` keeps the review, and ``build`` applies it
(:func:`overrides`).

The page lists the clips most likely wrong first (:func:`doubt`): Whisper's confidence (average
log-probability, no-speech probability, compression ratio) and the screen's scores (speaker
similarity, DNSMOS), so an hour of clips takes minutes to check.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

from xttsft.errors import InputError
from xttsft.paths import Workspace
from xttsft.records import (
    ClipRecord,
    ReviewRecord,
    ScreenRecord,
    TranscriptRecord,
    read_records,
    write_records,
)

log = logging.getLogger(__name__)

__all__ = ["ClipView", "ReviewStore", "clip_views", "doubt", "overrides", "Overrides"]

Decision = Literal["keep", "drop"]


@dataclass
class ClipView:
    """One row of the review page: the clip, what the stages decided and why, and the review's edits."""

    id: str
    duration: float
    source: str
    speaker: str | None
    decision: Literal["kept", "dropped", "pending"]  # what build would do, the review included
    stage: str | None  # the stage that dropped it: screen, transcribe, review
    reason: str | None
    detail: str
    text: str  # the transcript, or the review's text
    transcript: str | None  # what Whisper heard
    language: str | None
    avg_logprob: float | None
    no_speech_prob: float | None
    compression_ratio: float | None
    similarity: float | None
    dnsmos_ovrl: float | None
    doubt: float
    reviewed: Decision | None
    edited: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def doubt(t: TranscriptRecord | None, s: ScreenRecord | None) -> float:
    """How likely the clip is wrong: higher first on the page.

    Whisper's average log-probability below -0.3, its no-speech probability, a compression ratio
    over 1.8 (repetition), a speaker similarity under 0.75 and a DNSMOS under 3.0 each add to it;
    a clip that was never transcribed is as doubtful as it gets."""
    score = 0.0
    if t is None:
        score += 3.0
    else:
        score += max(0.0, -0.3 - t.avg_logprob) * 2.0
        score += t.no_speech_prob * 2.0
        score += max(0.0, t.compression_ratio - 1.8)
    if s is not None:
        if s.similarity is not None:
            score += max(0.0, 0.75 - s.similarity) * 2.0
        if s.dnsmos is not None:
            score += max(0.0, 3.0 - s.dnsmos.ovrl) * 0.5
    return round(score, 4)


def clip_views(ws: Workspace) -> list[ClipView]:
    """Every segmented clip as the page shows it, most doubtful first."""
    clips = read_records(ws.segments_manifest, ClipRecord)
    if not clips:
        raise InputError(
            f"No clips to review: {ws.segments_manifest} is missing or empty.",
            hint="Run `xttsft segment` and `xttsft transcribe` first, then `xttsft review`.",
        )
    screen = {r.id: r for r in read_records(ws.screen_file, ScreenRecord)}
    transcripts = {r.id: r for r in read_records(ws.transcripts_file, TranscriptRecord)}
    review = {r.id: r for r in read_records(ws.review_file, ReviewRecord)}
    views = [_view(c, transcripts.get(c.id), screen.get(c.id), review.get(c.id)) for c in clips]
    return sorted(views, key=lambda v: (-v.doubt, v.id))


def _view(c: ClipRecord, t: TranscriptRecord | None, s: ScreenRecord | None, r: ReviewRecord | None) -> ClipView:
    stage, reason, detail = _stage_decision(t, s)
    decision: Literal["kept", "dropped", "pending"]
    if r is not None and r.decision == "drop":
        decision, stage_now, reason_now = "dropped", "review", "review"
    elif r is not None and r.decision == "keep":
        decision, stage_now, reason_now = "kept", None, None
    else:
        decision = "pending" if t is None and stage is None else "kept" if stage is None else "dropped"
        stage_now, reason_now = stage, reason
    return ClipView(
        id=c.id,
        duration=round(c.duration, 3),
        source=Path(c.source).name,
        speaker=s.speaker if s else None,
        decision=decision,
        stage=stage_now,
        reason=reason_now,
        detail=detail if reason_now == reason else "",
        text=(r.text if r is not None and r.text is not None else t.text if t else ""),
        transcript=t.text if t else None,
        language=t.language if t else None,
        avg_logprob=t.avg_logprob if t else None,
        no_speech_prob=t.no_speech_prob if t else None,
        compression_ratio=t.compression_ratio if t else None,
        similarity=s.similarity if s else None,
        dnsmos_ovrl=s.dnsmos.ovrl if s and s.dnsmos else None,
        doubt=doubt(t, s),
        reviewed=r.decision if r else None,
        edited=bool(r and r.text is not None),
    )


def _stage_decision(t: TranscriptRecord | None, s: ScreenRecord | None) -> tuple[str | None, str | None, str]:
    """The stage and reason that dropped the clip before any review, or ``(None, None, "")``."""
    if s is not None and s.status == "dropped":
        return "screen", s.reason, s.detail
    if t is not None and t.status == "rejected":
        return "transcribe", t.reason, ""
    return None, None, ""


class ReviewStore:
    """The review's edits for one workspace: one writer (this process) behind a lock, so two pages
    editing at once lose neither edit; every edit rewrites ``review.jsonl`` atomically."""

    def __init__(self, ws: Workspace) -> None:
        self.ws = ws
        self._lock = threading.Lock()
        self._ids = {c.id for c in read_records(ws.segments_manifest, ClipRecord)}

    def knows(self, clip_id: str) -> bool:
        return clip_id in self._ids

    def edit(
        self, clip_id: str, *, text: str | None = None, decision: Decision | None = None, clear: bool = False
    ) -> ReviewRecord | None:
        """Set the text and/or the decision of one clip (``clear``: forget the clip's review)."""
        return self.edit_many([clip_id], text=text, decision=decision, clear=clear).get(clip_id)

    def edit_many(
        self, ids: list[str], *, text: str | None = None, decision: Decision | None = None, clear: bool = False
    ) -> dict[str, ReviewRecord]:
        unknown = [i for i in ids if i not in self._ids]
        if unknown:
            raise InputError(f"No clip {unknown[0]!r} in this workspace.", hint="Reload the review page.")
        if text is not None and not text.strip():
            raise InputError("The text is empty.", hint="Drop the clip instead of emptying its text.")
        with self._lock:  # read, merge and write as one step: another page's edit is never lost
            rows = {r.id: r for r in read_records(self.ws.review_file, ReviewRecord)}
            now = datetime.now(timezone.utc).isoformat(timespec="seconds")
            for clip_id in ids:
                if clear:
                    rows.pop(clip_id, None)
                    continue
                old = rows.get(clip_id)
                rows[clip_id] = ReviewRecord(
                    id=clip_id,
                    time=now,
                    text=text.strip() if text is not None else (old.text if old else None),
                    decision=decision if decision is not None else (old.decision if old else None),
                )
            write_records(self.ws.review_file, ReviewRecord, list(rows.values()))
            return {i: rows[i] for i in ids if i in rows}


@dataclass
class Overrides:
    """What ``build`` takes from the review: text and decisions for clips that exist, and the ids of
    overrides whose clip is gone (reported, never applied to another clip)."""

    rows: dict[str, ReviewRecord]
    stale: list[str]

    @property
    def changed(self) -> int:
        return len(self.rows)


def overrides(ws: Workspace) -> Overrides:
    """The review's edits that ``build`` applies."""
    rows = {r.id: r for r in read_records(ws.review_file, ReviewRecord)}
    if not rows:
        return Overrides({}, [])
    known = {c.id for c in read_records(ws.segments_manifest, ClipRecord)}
    stale = sorted(i for i in rows if i not in known)
    if stale:
        log.warning(
            "review.jsonl has %d edit(s) for clips that no longer exist (e.g. %s); they are not applied. "
            "Segment made new clips: review them again with `xttsft review`.",
            len(stale),
            stale[0],
        )
    return Overrides({i: r for i, r in rows.items() if i in known}, stale)
