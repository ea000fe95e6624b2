"""``screen``: only the target speaker's clean speech, once, goes on to transcription.

Input: the segment manifest and its clips. Output, in ``ws.screen_dir``
(``train/data/processed/screen/``)::

    screen.jsonl    one decision per clip: status kept/dropped, reason, detail,
                    speaker, similarity to the target, DNSMOS, duplicate_of
    stats.json      the speakers found (minutes, clips, kept), thresholds, drops
    speakers.png    2-D map of the clips' speaker embeddings
    dnsmos.png      histogram of the DNSMOS overall scores, threshold marked
    features/       cached measures per clip, keyed by the clip's content

Three filters, in this order (each can be switched off):

1. **Speaker.** Every clip gets a CAM++ embedding (:mod:`xttsft.encoders`; pooled
   from segment's window moments when they cover the clip, see ``_Measurer.voice``). The
   clips are clustered (average linkage on cosine distance, merged while their
   average similarity is above ``cluster_similarity``), which gives the table of
   speakers. The target is the cluster with the most minutes or, with
   ``speaker_refs``, the clips nearest to the reference recordings (within
   :data:`REF_CORE_MARGIN` of the nearest one). A clip is
   another speaker (``other_speaker``) when its similarity to the target's
   centroid is below a threshold that adapts to the voice: the target clips'
   median similarity minus ``similarity_sigmas`` robust standard deviations,
   kept between ``min_similarity`` and ``sure_similarity``. A clip that passes
   but holds two or more consecutive 1.6 s windows that fall far from the target
   is dropped as ``mixed_speakers``.
2. **Quality.** The clips still kept get DNSMOS P.835 scores (a short clip scored
   near a bar: the mean of DNSMOS_LOOP_STARTS loop starts); OVRL under
   ``min_dnsmos`` or BAK (background) under ``min_dnsmos_bak`` is ``low_quality``.
3. **Duplicates.** Audio fingerprints find speech that arrived twice (another
   format, an excerpt, overlapping downloads). The copy from the longer source
   is kept; the other is ``duplicate`` and names the clip it repeats.

``transcribe`` skips the dropped clips and ``build`` lists them in its
``dropped.jsonl``. Re-runs reuse the measures of unchanged clips, so changing a
threshold only redoes the decisions.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import typing
import zipfile
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from xttsft import audio
from xttsft.data.segment import SourceWindows, quietest_point, read_source_windows
from xttsft.encoders import (
    DNSMOS_SECONDS,
    EMBED_HOP,
    EMBED_WINDOW,
    SR,
    VOICE_ENCODER_NAME,
    ClipVoice,
    VoiceEncoder,
    cosine,
    dnsmos,
    fingerprint,
    match_fingerprints,
    unit,
)
from xttsft.errors import DatasetError, InputError
from xttsft.io import atomic_path, sha256_file
from xttsft.locks import stage_lock
from xttsft.paths import Workspace
from xttsft.plots import figure, histogram, save_png
from xttsft.progress import Progress, no_progress
from xttsft.records import (
    ClipRecord,
    Dnsmos,
    LostSpan,
    RecordError,
    Recut,
    ScreenReason,
    ScreenRecord,
    ScreenStats,
    SourceRecord,
    SpeakerRow,
    read_record,
    read_records,
    write_record,
    write_records,
)
from xttsft.settings import ScreenSettings, SegmentSettings

__all__ = [
    "DROP_REASONS",
    "ClipFeatures",
    "Speaker",
    "ScreenResult",
    "screen_clips",
    "kept_ids",
    "read_decisions",
    "embed_reference",
]

log = logging.getLogger(__name__)

#: Why screen drops a clip.
DROP_REASONS: tuple[ScreenReason, ...] = typing.get_args(ScreenReason)
FEATURES_VERSION = 2  # 2: CAM++ embeddings (GE2E before)
SCREEN_VERSION = 4  # 2: recut of mixed clips (issue 22); 3: CAM++ and its thresholds; 4: DNSMOS loop starts
#: Window-level bounds of the mixed-voice test (1.6 s windows are noisier than whole clips).
WINDOW_FLOOR, WINDOW_CEILING = 0.35, 0.58
#: Consecutive foreign windows (0.8 s hop) that make a clip "mixed": about 2.4 s of another voice.
MIXED_WINDOWS = 2
#: This many windows covering this share of a clip give its embedding (pooled from their moments) instead of
#: CAM++ on the clip: about 4.8 s of speech
POOLED_WINDOWS, POOLED_COVERAGE = 5, 0.8
#: Shortest speech accepted in a reference recording, seconds.
MIN_REFERENCE_SPEECH = 2.0
#: With --speaker-ref, the target's clips are those within this similarity of the clip nearest the reference.
REF_CORE_MARGIN = 0.10
#: A clip outside the target's cluster that is this much more similar to its own cluster (without itself) than
#: to the target is another voice, even above the threshold (not above sure_similarity): two voices of one
#: channel (a telephone call) sat at 0.8 from each other on GE2E (0.50-0.63 on CAM++), and the nearest voice
#: tells them apart where one threshold cannot.
NEARER_VOICE_MARGIN = 0.10
#: DNSMOS reads 9.01 s; a shorter clip is repeated to fill it, and where the repeats start moved one score from
#: the mean of 8 starts by up to 0.48: one scored within DNSMOS_NEAR of a bar is scored from DNSMOS_LOOP_STARTS
#: starts, and the mean decides. Against 16 starts, over 29 clips of 1.8-8.6 s, the mean of 4 erred by 0.027 in
#: the median (0.25 at most), of 8 by 0.021 (0.14), one start by 0.11 (0.27): 4 (3 runs more) halves the cost of 8.
DNSMOS_NEAR = 0.5
DNSMOS_LOOP_STARTS = 4
#: The smallest spread of similarities the adaptive thresholds assume.
MIN_SIGMA = 0.03
#: A recut's edge moves inwards, up to this many seconds, to the quietest 50 ms (not mid-word).
RECUT_SNAP = 0.3
#: The manifest flag of a clip that screen cut out of a mixed one (the target's part).
RECUT_FLAG = "recut"
#: Segment's shortest clip: the shortest target part a recut keeps, unless the caller says otherwise.
DEFAULT_MIN_DURATION = float(SegmentSettings.model_fields["min_duration"].default)


@dataclass
class ClipFeatures:
    """The cached measures of one clip (``None``: not measured)."""

    key: str
    embedding: np.ndarray | None = None
    windows: np.ndarray | None = None
    window_starts: np.ndarray | None = None  # seconds into the clip
    fingerprint: np.ndarray | None = None
    dnsmos: tuple[float, float, float] | None = None  # sig, bak, ovrl
    dnsmos_mean: tuple[float, float, float] | None = None  # over DNSMOS_LOOP_STARTS (a short clip near a bar)


@dataclass
class Speaker:
    """One cluster of clips."""

    label: str
    clips: int
    minutes: float
    kept: int = 0
    kept_minutes: float = 0.0
    similarity: float = float("nan")  # of its centroid to the target's
    target: bool = False


@dataclass
class ScreenResult:
    """What :func:`screen_clips` decided."""

    screen_file: Path
    total: int = 0
    kept: int = 0
    kept_minutes: float = 0.0
    dropped: Counter[str] = field(default_factory=Counter)
    dropped_minutes: dict[str, float] = field(default_factory=dict)  # by reason
    speakers: list[Speaker] = field(default_factory=list)
    thresholds: dict[str, float] = field(default_factory=dict)
    measured: int = 0  # clips whose measures were computed in this run (the rest came from the cache)
    recut: int = 0  # mixed clips whose target part was kept as a new clip
    lost: list[LostSpan] = field(default_factory=list)  # the target's speech dropped with mixed clips
    unchanged: bool = False
    map_png: Path | None = None
    dnsmos_png: Path | None = None


# ------------------------------------------------------------------ measures


def _features_path(ws: Workspace, clip_id: str) -> Path:
    return ws.screen_features_dir / f"{clip_id}.npz"


def _load_features(path: Path, key: str) -> ClipFeatures:
    try:
        with np.load(path) as z:
            if str(z["key"]) != key:
                return ClipFeatures(key)
            get = lambda n: z[n] if n in z.files else None  # noqa: E731
            d, m = get("dnsmos"), get("dnsmos_mean")
            starts = get("dnsmos_starts")
            if starts is None or int(starts) != DNSMOS_LOOP_STARTS:
                m = None  # a mean over another number of loop starts (8 before it was saved) is scored again
            return ClipFeatures(
                key,
                get("embedding"),
                get("windows"),
                get("window_starts"),
                get("fingerprint"),
                tuple(float(v) for v in d) if d is not None else None,  # type: ignore[arg-type]  # 3 scores saved
                tuple(float(v) for v in m) if m is not None else None,  # type: ignore[arg-type]
            )
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):  # missing or damaged: measure again
        return ClipFeatures(key)


def _save_features(path: Path, f: ClipFeatures) -> None:
    arrays: dict[str, Any] = {"key": np.array(f.key)}
    for name in ("embedding", "windows", "window_starts", "fingerprint"):
        if getattr(f, name) is not None:
            arrays[name] = getattr(f, name)
    for name in ("dnsmos", "dnsmos_mean"):
        if getattr(f, name) is not None:
            arrays[name] = np.array(getattr(f, name), dtype=np.float64)
    if f.dnsmos_mean is not None:
        arrays["dnsmos_starts"] = np.array(DNSMOS_LOOP_STARTS)
    with atomic_path(path) as tmp:
        with tmp.open("wb") as fh:
            np.savez(fh, **arrays)


class _Measurer:
    """Computes the missing measures of clips, loading each model once."""

    def __init__(self, ws: Workspace) -> None:
        self.ws = ws
        self._speaker: Any = None
        self._source: tuple[str, SourceWindows | None] = ("", None)  # the last one read (clips come by source)

    @property
    def speaker(self) -> Any:
        if self._speaker is None:
            self._speaker = VoiceEncoder()
        return self._speaker

    def voice(self, f: ClipFeatures, x: np.ndarray, row: ClipRecord) -> bool:
        if _has_voice(f):
            return False
        sha = row.source_sha256
        if self._source[0] != sha:
            self._source = (sha, read_source_windows(self.ws, sha))
        v = clip_voice(self.speaker, x, clip_windows(self._source[1], row.start, row.end))
        f.embedding, f.windows, f.window_starts = v.embedding, v.windows, v.starts
        return True

    @staticmethod
    def print_(f: ClipFeatures, x: np.ndarray) -> bool:
        if f.fingerprint is not None:
            return False

        f.fingerprint = fingerprint(x)
        return True

    @staticmethod
    def quality(f: ClipFeatures, x: np.ndarray, settings: ScreenSettings) -> bool:
        """DNSMOS once; again from DNSMOS_LOOP_STARTS loop starts for a clip that DNSMOS repeats (shorter than
        its window) scored within DNSMOS_NEAR of a bar, where the one score is a coin toss."""
        changed = f.dnsmos is None
        if f.dnsmos is None:
            s = dnsmos(x)
            f.dnsmos = (s.sig, s.bak, s.ovrl)
        if f.dnsmos is not None and _wants_mean(f, len(x) / SR, settings):
            sig, bak, ovrl = f.dnsmos
            s = dnsmos(x, loop_starts=DNSMOS_LOOP_STARTS, first=Dnsmos(sig=sig, bak=bak, ovrl=ovrl))  # 1 run fewer
            f.dnsmos_mean, changed = (s.sig, s.bak, s.ovrl), True
        return changed


def clip_windows(source: SourceWindows | None, start: float, end: float) -> SourceWindows | None:
    """The windows segment embedded inside a clip's span (source seconds) of its source; None when it kept
    none for the source or fewer than MIXED_WINDOWS lie inside."""
    if source is None:
        return None
    inside = source.inside(start, end)
    return inside if len(inside.starts) >= MIXED_WINDOWS else None


def clip_voice(encoder: VoiceEncoder, x: np.ndarray, windows: SourceWindows | None) -> ClipVoice:
    """A clip's embedding and its windows' (:func:`clip_windows`). Segment's windows are the same audio, so
    they are the clip's windows; where they cover most of it (:func:`_poolable`), the clip's embedding is
    pooled from their moments and CAM++ does not run on the clip at all; otherwise it embeds the whole clip
    once (and, with no windows from segment, the clip's own windows too)."""
    if windows is None:
        return encoder.clip(x)
    if windows.moments is not None and _poolable(windows, len(x) / SR):
        embedding = encoder.pooled(windows.moments)
    else:
        embedding = encoder.utterance(x)
    return ClipVoice(embedding=embedding, windows=windows.embeddings, starts=windows.starts)


def _poolable(windows: SourceWindows, duration: float) -> bool:
    """Whether a clip's windows give its embedding: they carry (finite) moments, are many enough, and cover
    most of it (a short clip pooled from 3 windows over 78% of it fell 0.114 under the clip nearest the
    reference, past REF_CORE_MARGIN, docs/screen.md)."""
    return (
        windows.moments is not None
        and len(windows.starts) >= POOLED_WINDOWS
        and _coverage(windows.starts, duration) >= POOLED_COVERAGE
        and bool(np.isfinite(windows.moments).all())
    )


def _coverage(starts: np.ndarray, duration: float) -> float:
    """The share of a clip of ``duration`` seconds that its 1.6 s windows starting at ``starts`` cover."""
    covered, reach = 0.0, 0.0
    for t in np.sort(starts):
        lo, hi = max(float(t), reach), min(float(t) + EMBED_WINDOW, duration)
        covered += max(0.0, hi - lo)
        reach = max(reach, hi)
    return covered / duration if duration > 0 else 0.0


def _wants_mean(f: ClipFeatures, duration: float, settings: ScreenSettings) -> bool:
    """Whether a scored clip still lacks the mean over loop starts: short enough to be repeated, and near a bar."""
    return (
        f.dnsmos is not None and f.dnsmos_mean is None and duration < DNSMOS_SECONDS and _near_bar(f.dnsmos, settings)
    )


def _near_bar(scores: tuple[float, float, float], settings: ScreenSettings) -> bool:
    """Whether DNSMOS scores (sig, bak, ovrl) lie within DNSMOS_NEAR of a quality bar."""
    _, bak, ovrl = scores
    return abs(ovrl - settings.min_dnsmos) < DNSMOS_NEAR or abs(bak - settings.min_dnsmos_bak) < DNSMOS_NEAR


def embed_reference(path: Path, encoder: Any | None = None) -> np.ndarray:
    """The speaker embedding of the speech in a reference recording (any format ffmpeg reads).

    Raises :class:`InputError` when it cannot be decoded or holds under
    :data:`MIN_REFERENCE_SPEECH` seconds of speech (Silero VAD).
    """
    from faster_whisper.vad import VadOptions, get_speech_timestamps

    path = Path(path).expanduser()
    if not path.is_file():
        raise InputError(f"Speaker reference {path} does not exist.", hint="Pass an audio file of the target voice.")
    x = audio.decode(path, sr=SR)
    stamps = get_speech_timestamps(x, VadOptions(min_speech_duration_ms=100), sampling_rate=SR)
    speech = np.concatenate([x[s["start"] : s["end"]] for s in stamps]) if stamps else np.zeros(0, np.float32)
    if len(speech) < MIN_REFERENCE_SPEECH * SR:
        raise InputError(
            f"Speaker reference {path} holds no speech ({len(speech) / SR:.1f} s found by the VAD).",
            hint=f"Pass a recording with at least {MIN_REFERENCE_SPEECH:g} s of the target voice speaking.",
        )
    return (encoder or VoiceEncoder()).utterance(speech)


# ------------------------------------------------------------------ decisions


def _clusters(emb: np.ndarray, similarity: float) -> np.ndarray:
    """Cluster index per clip (average linkage, cosine distance, cut at ``1 - similarity``)."""
    if len(emb) < 2:
        return np.zeros(len(emb), dtype=int)
    from scipy.cluster.hierarchy import fcluster, linkage

    z = linkage(emb.astype(np.float64), method="average", metric="cosine")
    return fcluster(z, t=1.0 - similarity, criterion="distance") - 1


#: the two largest voices within this share of each other: the target was close to a coin toss
NEAR_TIE = 0.8


def _warn_near_tie(minutes: list[float]) -> None:
    """Say so when the second voice has nearly as many minutes as the first (the target is the larger)."""
    if len(minutes) == 2 and minutes[0] > 0 and minutes[1] >= NEAR_TIE * minutes[0]:
        log.warning(
            "The two largest voices are close: S1 has %.2f min and S2 %.2f min; S1 is the target. If the "
            "voice you want is S2, pass --speaker-ref with a clip of it (speakers.png shows both).",
            minutes[0],
            minutes[1],
        )


def _nearer_voice(
    emb: np.ndarray, dur: np.ndarray, labels: np.ndarray, sims: np.ndarray, target: int, core: np.ndarray
) -> dict[int, float]:
    """The clips of other clusters (not the reference's core) at least NEARER_VOICE_MARGIN more similar to
    their own cluster's other clips (duration-weighted centroid) than to the target: index -> that similarity."""
    weighted = emb * dur[:, None]
    sums = {k: weighted[labels == k].sum(axis=0) for k in set(labels.tolist())}
    counts = np.bincount(labels)
    out = {}
    for i in np.flatnonzero((labels != target) & ~core).tolist():
        if counts[labels[i]] < 2:
            continue  # alone in its cluster: nothing to be nearer to
        own = float(unit(sums[labels[i]] - weighted[i]) @ emb[i])
        if own - float(sims[i]) >= NEARER_VOICE_MARGIN:
            out[i] = own
    return out


def _robust_threshold(values: np.ndarray, sigmas: float, lo: float, hi: float) -> float:
    """median - sigmas * max(1.4826 * MAD, MIN_SIGMA), kept within [lo, hi].

    The floor on the spread keeps a handful of near-identical clips (a small --speaker-ref
    core) from setting the threshold at their own similarity."""
    if values.size == 0:
        return lo
    med = float(np.median(values))
    mad = max(float(np.median(np.abs(values - med))) * 1.4826, MIN_SIGMA)
    return float(min(max(med - sigmas * mad, lo), hi))


def _target_parts(target: np.ndarray, starts: np.ndarray, duration: float) -> list[tuple[float, float]]:
    """The stretches (clip seconds) of a mixed clip's windows that are the target: the windows between the
    runs of MIXED_WINDOWS or more foreign ones, less foreign windows at their ends. A part's edge next to a
    foreign window is where that window ends (it may hold the other voice up to there); ``starts``: where
    each window starts (clip seconds)."""
    n = len(target)
    foreign = np.zeros(n, dtype=bool)
    k = 0
    while k < n:
        j = k
        while j < n and not target[j]:
            j += 1
        if j - k >= MIXED_WINDOWS or (j > k and (k == 0 or j == n)):
            foreign[k:j] = True
        k = max(j, k + 1)
    parts = []
    for a, b in _runs(~foreign):
        start = 0.0 if a == 0 else float(starts[a - 1]) + EMBED_WINDOW
        end = duration if b == n else float(starts[b])
        if end > start:
            parts.append((start, end))
    return parts


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """[a, b) index ranges where ``mask`` holds."""
    out, start = [], None
    for i, m in enumerate(mask.tolist() + [False]):
        if m and start is None:
            start = i
        elif not m and start is not None:
            out.append((start, i))
            start = None
    return out


def _longest_run(mask: np.ndarray, starts: np.ndarray) -> int:
    """The most windows in a row where ``mask`` holds; a gap over a hop between two windows (silent windows
    that segment left out) ends a run."""
    best = run = 0
    for k, m in enumerate(mask.tolist()):
        apart = k > 0 and starts[k] - starts[k - 1] > EMBED_HOP + 0.05
        run = (1 if apart else run + 1) if m else 0
        best = max(best, run)
    return best


def _has_voice(f: ClipFeatures) -> bool:
    """Whether the clip's speaker measures are all there (a file of an older version may lack the starts)."""
    w, t = f.windows, f.window_starts
    return f.embedding is not None and w is not None and t is not None and len(w) == len(t)


@dataclass
class _Clip:
    """A clip of the manifest, its measures, and the decision about it (kept until a filter drops it)."""

    row: ClipRecord
    features: ClipFeatures
    decision: ScreenRecord
    target_parts: list[tuple[float, float]] = field(default_factory=list)  # mixed: the target's parts (clip s)

    @property
    def id(self) -> str:
        return self.row.id

    @property
    def duration(self) -> float:
        return self.row.duration

    def drop(self, reason: ScreenReason, detail: str, duplicate_of: str | None = None) -> None:
        d = self.decision
        d.status, d.reason, d.detail, d.duplicate_of = "dropped", reason, detail, duplicate_of

    @property
    def kept(self) -> bool:
        return self.decision.status == "kept"


def _screen_speakers(
    clips: list[_Clip], settings: ScreenSettings, refs: list[np.ndarray]
) -> tuple[list[Speaker], dict[str, float], np.ndarray, np.ndarray, np.ndarray]:
    """Cluster, pick the target, drop other speakers and mixed clips. Returns the speakers,
    thresholds, the embeddings, the cluster index per clip and the target centroid."""

    emb = np.stack([c.features.embedding for c in clips]).astype(np.float32)  # type: ignore[misc]  # measured first
    dur = np.array([c.duration for c in clips])
    labels = _clusters(emb, settings.cluster_similarity)
    order = sorted(set(labels.tolist()), key=lambda k: -dur[labels == k].sum())
    rank = {k: i for i, k in enumerate(order)}
    labels = np.array([rank[k] for k in labels.tolist()])
    centroids = [unit((emb[labels == k] * dur[labels == k, None]).sum(axis=0)) for k in range(len(order))]
    if refs:
        # the target: the clips nearest to the reference (clusters of similar voices may hold more than it)
        to_ref = emb @ unit(np.mean(refs, axis=0))
        best = float(to_ref.max())
        if best < settings.min_similarity:
            raise InputError(
                f"The speaker reference matches no clip: the best similarity found is {best:.2f}, "
                f"under SCREEN_MIN_SIMILARITY {settings.min_similarity:g}.",
                hint="Check that the reference is the voice in these recordings, or lower --min-similarity; "
                "--no-speaker-filter keeps every voice.",
            )
        core = to_ref >= best - REF_CORE_MARGIN
        target = int(np.argmax(np.bincount(labels[core], weights=dur[core], minlength=len(order))))
    else:
        core = labels == 0
        target = 0
        _warn_near_tie([float(dur[labels == k].sum()) / 60 for k in range(min(2, len(order)))])
    centroid = unit((emb[core] * dur[core, None]).sum(axis=0))
    sims = emb @ centroid
    threshold = _robust_threshold(
        sims[core], settings.similarity_sigmas, settings.min_similarity, settings.sure_similarity
    )
    passing = [i for i, c in enumerate(clips) if sims[i] >= threshold]
    win_sims = [clips[i].features.windows @ centroid for i in passing]
    w_threshold = _robust_threshold(
        np.concatenate(win_sims) if win_sims else np.zeros(0), settings.similarity_sigmas, WINDOW_FLOOR, WINDOW_CEILING
    )
    nearer = _nearer_voice(emb, dur, labels, sims, target, core)
    for i, c in enumerate(clips):
        c.decision.speaker, c.decision.similarity = f"S{labels[i] + 1}", round(float(sims[i]), 4)
        w = c.features.windows @ centroid
        c.decision.window_min_similarity = round(float(w.min()), 4)
        if sims[i] < threshold:
            c.drop("other_speaker", f"similarity {sims[i]:.2f} < {threshold:.2f} (speaker S{labels[i] + 1})")
        elif i in nearer and sims[i] < settings.sure_similarity:
            c.drop(
                "other_speaker",
                f"nearer its own voice S{labels[i] + 1} ({nearer[i]:.2f}) than the target ({sims[i]:.2f})",
            )
        elif _longest_run(w < w_threshold, c.features.window_starts) >= MIXED_WINDOWS:  # type: ignore[arg-type]
            c.drop(
                "mixed_speakers",
                f"{int((w < w_threshold).sum())} of {len(w)} windows sound like another voice "
                f"(lowest {w.min():.2f} < {w_threshold:.2f})",
            )
            c.target_parts = _target_parts(w >= w_threshold, c.features.window_starts, c.duration)  # type: ignore[arg-type]
    speakers = []
    for k in range(len(order)):
        members = [c for i, c in enumerate(clips) if labels[i] == k]
        speakers.append(
            Speaker(
                label=f"S{k + 1}",
                clips=len(members),
                minutes=sum(c.duration for c in members) / 60,
                similarity=round(cosine(centroids[k], centroid), 4),
                target=k == target,
            )
        )
    return (
        speakers,
        {"similarity": round(threshold, 4), "window_similarity": round(w_threshold, 4)},
        emb,
        labels,
        centroid,
    )


def _screen_quality(clips: list[_Clip], settings: ScreenSettings) -> None:
    for c in clips:
        first, averaged = c.features.dnsmos, c.features.dnsmos_mean
        use_mean = averaged is not None and _near_bar(first, settings)  # type: ignore[arg-type]  # measured
        sig, bak, ovrl = averaged if use_mean else first  # type: ignore[misc]
        c.decision.dnsmos = Dnsmos(sig=round(sig, 3), bak=round(bak, 3), ovrl=round(ovrl, 3))
        mean = f", the mean of {DNSMOS_LOOP_STARTS} loop starts" if use_mean else ""
        if c.kept and ovrl < settings.min_dnsmos:
            c.drop(
                "low_quality",
                f"DNSMOS OVRL {ovrl:.2f} < {settings.min_dnsmos:g} (SIG {sig:.2f}, BAK {bak:.2f}{mean})",
            )
        elif c.kept and bak < settings.min_dnsmos_bak:
            c.drop(
                "low_quality",
                f"DNSMOS BAK {bak:.2f} < {settings.min_dnsmos_bak:g}: noise or music behind the voice "
                f"(OVRL {ovrl:.2f}{mean})",
            )


def _screen_duplicates(clips: list[_Clip], source_length: dict[str, float]) -> None:
    """Among the kept clips, keep the copy from the longer source (then the earlier one)."""

    kept = [c for c in clips if c.kept]
    kept.sort(key=lambda c: (-source_length.get(c.row.source, 0.0), c.row.source, c.row.start))
    matches = match_fingerprints([c.features.fingerprint for c in kept])  # type: ignore[misc]
    partners: dict[int, list[tuple[int, Any]]] = {}
    for m in matches:
        partners.setdefault(m.b, []).append((m.a, m))
    for j, c in enumerate(kept):  # a earlier in rank than b: b is the copy, unless a was itself dropped
        for a, m in partners.get(j, []):
            if kept[a].kept:
                c.drop(
                    "duplicate",
                    f"same audio as {kept[a].id} ({m.overlap_seconds:.1f} s, {m.bit_error_rate:.0%} bits differ)",
                    duplicate_of=kept[a].id,
                )
                break


# ------------------------------------------------------------------ plots


def _plot_map(
    path: Path, emb: np.ndarray, labels: np.ndarray, kept: np.ndarray, centroid: np.ndarray, speakers: list[Speaker]
) -> None:
    import matplotlib

    centre = centroid * float(np.median(emb @ centroid)) if len(emb) else centroid  # where its clips sit
    pts = np.vstack([emb, centre[None]]).astype(np.float64)
    pts -= pts.mean(axis=0)
    if len(pts) >= 2:
        _, _, vt = np.linalg.svd(pts, full_matrices=False)
        xy = pts @ vt[:2].T if vt.shape[0] >= 2 else np.c_[pts @ vt[0], np.zeros(len(pts))]
    else:
        xy = np.zeros((len(pts), 2))
    fig = figure(7, 5.5)
    ax = fig.add_subplot()
    colors = matplotlib.colormaps["tab10"]
    for k, sp in enumerate(speakers):
        sel = labels == k
        col = colors(k % 10)
        ax.scatter(
            xy[:-1][sel & kept, 0],
            xy[:-1][sel & kept, 1],
            s=22,
            color=col,
            marker="o",
            label=f"{sp.label}{' (target)' if sp.target else ''}: {sp.minutes:.1f} min, {sp.kept} kept",
        )
        ax.scatter(xy[:-1][sel & ~kept, 0], xy[:-1][sel & ~kept, 1], s=26, color=col, marker="x")
    ax.scatter([xy[-1, 0]], [xy[-1, 1]], s=260, marker="*", color="black", label="target voice")
    ax.scatter([], [], marker="x", color="grey", label="dropped")
    ax.set_title(f"speakers: {len(emb)} clips, principal components of CAM++ embeddings")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.legend(fontsize=8, loc="best")
    save_png(fig, path)


def _plot_dnsmos(path: Path, scores: list[tuple[float, float]], settings: ScreenSettings) -> None:
    """Histograms of OVRL and BAK with their thresholds."""

    fig = figure(9, 3.5)
    for k, (name, threshold) in enumerate(
        (("overall (OVRL)", settings.min_dnsmos), ("background (BAK)", settings.min_dnsmos_bak))
    ):
        values = [s[k] for s in scores]
        histogram(
            fig.add_subplot(1, 2, k + 1),
            values,
            limit=threshold,
            limit_label=f"threshold {threshold:g}",
            xlabel=f"DNSMOS P.835 {name}",
            ylabel="clips",
            value_range=(1.0, 5.0),
            title=f"{sum(v < threshold for v in values)} of {len(values)} clips under it",
        )
    save_png(fig, path)


# ------------------------------------------------------------------ the stage


def _input_hash(
    ws: Workspace, settings: ScreenSettings, refs: Sequence[Path], manifest: list[ClipRecord], min_duration: float
) -> str:
    h = hashlib.sha256()
    h.update(json.dumps([r.to_dict() for r in manifest], sort_keys=True).encode())  # segment's clips, no recut
    f = ws.segment_sources_file  # the sources' lengths pick a duplicate's keeper
    h.update(f.read_bytes() if f.is_file() else b"")
    h.update(
        json.dumps(
            {
                "v": SCREEN_VERSION,
                "min_duration": min_duration,
                **settings.model_dump(mode="json", exclude={"speaker_refs"}),
            },
            sort_keys=True,
        ).encode()
    )
    for r in refs:
        h.update(sha256_file(r).encode())
    return h.hexdigest()


def _source_lengths(ws: Workspace, manifest: list[ClipRecord]) -> dict[str, float]:
    """Duration of each source (segment's record, else the end of its last clip)."""
    lengths = {r.source: r.duration for r in read_records(ws.segment_sources_file, SourceRecord) if r.duration}
    for r in manifest:
        if r.source not in lengths or lengths[r.source] < r.end:
            lengths[r.source] = r.end
    return lengths


def _measure(clips: list[_Clip], ws: Workspace, settings: ScreenSettings, progress: Progress) -> int:
    """Fill in the voice and fingerprint measures (cached per clip content). Returns how many were computed."""

    m = _Measurer(ws)
    computed = 0
    progress(total=len(clips), completed=0, description="screen: speakers")
    for c in clips:
        f = c.features
        need_voice = settings.speaker_filter and not _has_voice(f)
        need_print = settings.duplicate_filter and c.features.fingerprint is None
        if need_voice or need_print:
            x = audio.read_mono(ws.segments_dir / c.row.wav, SR)
            changed = (m.voice(c.features, x, c.row) if need_voice else False) | (
                m.print_(c.features, x) if need_print else False
            )
            if changed:
                _save_features(_features_path(ws, c.id), c.features)
                computed += 1
        progress(advance=1)
    return computed


def _measure_quality(clips: list[_Clip], ws: Workspace, settings: ScreenSettings, progress: Progress) -> int:
    """DNSMOS of the clips still kept (cached per clip content). Returns how many were measured."""
    todo = [c for c in clips if c.kept and _needs_quality(c.features, c.duration, settings)]
    progress(total=len(todo) or None, completed=0, description="screen: DNSMOS")
    for c in todo:
        _Measurer.quality(c.features, audio.read_mono(ws.segments_dir / c.row.wav, SR), settings)
        _save_features(_features_path(ws, c.id), c.features)
        progress(advance=1)
    return len(todo)


def _needs_quality(f: ClipFeatures, duration: float, settings: ScreenSettings) -> bool:
    """Whether a clip lacks DNSMOS scores, or the mean over loop starts that its one score calls for."""
    return f.dnsmos is None or _wants_mean(f, duration, settings)


def _load_clips(ws: Workspace, manifest: list[ClipRecord]) -> list[_Clip]:
    clips = []
    for row in manifest:
        wav = ws.segments_dir / row.wav
        if not wav.is_file():
            raise DatasetError(
                f"Clip {wav} of the segment manifest is missing.",
                hint="Run `xttsft segment` again (it re-creates missing clips).",
            )
        clips.append(_new_clip(ws, row))
    return clips


def _new_clip(ws: Workspace, row: ClipRecord) -> _Clip:
    """A clip of the manifest, kept until a filter drops it, with its cached measures."""
    key = f"{FEATURES_VERSION}:{sha256_file(ws.segments_dir / row.wav)[:32]}"
    decision = ScreenRecord(
        id=row.id,
        wav=row.wav,
        source=row.source,
        source_sha256=row.source_sha256,
        start=row.start,
        end=row.end,
        duration=row.duration,
        status="kept",
    )
    return _Clip(row, _load_features(_features_path(ws, row.id), key), decision)


def _recut(
    clips: list[_Clip], ws: Workspace, settings: ScreenSettings, min_duration: float, centroid: np.ndarray
) -> tuple[list[_Clip], list[LostSpan]]:
    """Split each mixed clip at the change of voice: its longest target part becomes a new clip (wav and
    manifest row, flag ``recut``) when it lasts ``min_duration``; the target's other parts are lost."""
    new: list[_Clip] = []
    lost: list[LostSpan] = []
    m = _Measurer(ws)
    for c in clips:
        if c.decision.reason != "mixed_speakers" or not c.target_parts:
            continue
        a, b = max(c.target_parts, key=lambda part: part[1] - part[0])
        rest = c.target_parts
        if b - a >= min_duration - 1e-6:
            new.append(_cut_clip(c, a, b, m, settings, centroid))
            rest = [part for part in c.target_parts if part != (a, b)]
        lost += [
            LostSpan(source=c.row.source, start=round(c.row.start + x, 2), end=round(c.row.start + y, 2), clip=c.id)
            for x, y in rest
        ]
    return new, lost


def _cut_clip(c: _Clip, a: float, b: float, m: _Measurer, settings: ScreenSettings, centroid: np.ndarray) -> _Clip:
    """Write seconds ``a``-``b`` of clip ``c`` as a new clip (atomically) and measure it."""
    ws = m.ws
    x, sr = audio.read_wav(ws.segments_dir / c.row.wav)
    # the windows place the change on a 0.8 s grid: cut at the quietest 50 ms within RECUT_SNAP inside it
    if a > 0:
        a = quietest_point(x, sr, a, min(a + RECUT_SNAP, b))
    if b < len(x) / sr - 1e-3:
        b = quietest_point(x, sr, max(b - RECUT_SNAP, a), b)
    piece = x[int(round(a * sr)) : int(round(b * sr))]
    # the span in the id: a recut that moves gets a new file, never new audio under an old row (or review edit)
    cid = f"{c.id}r{round(a * 1000)}-{round(b * 1000)}"
    wav = audio.write_wav(ws.segments_dir / f"{cid}.wav", piece, sr)
    row = ClipRecord(
        id=cid,
        wav=wav.name,
        source=c.row.source,
        source_sha256=c.row.source_sha256,
        start=round(c.row.start + a, 3),
        end=round(c.row.start + b, 3),
        duration=round(len(piece) / sr, 3),
        sample_rate=sr,
        peak_dbfs=round(audio.peak_dbfs(piece), 2),
        loudness_dbfs=round(audio.rms_dbfs(piece), 2),
        gain_db=c.row.gain_db,
        flags=[*c.row.flags, RECUT_FLAG],
    )
    clip = _new_clip(ws, row)
    x16 = audio.read_mono(wav, SR)
    changed = (m.voice(clip.features, x16, row) if settings.speaker_filter else False) | (
        m.print_(clip.features, x16) if settings.duplicate_filter else False
    )
    if changed:
        _save_features(_features_path(ws, cid), clip.features)
    d = clip.decision
    d.recut_from, d.speaker = c.id, c.decision.speaker
    d.detail = f"the target's part of {c.id} ({c.row.start + a:.2f}-{c.row.start + b:.2f} s)"
    if clip.features.embedding is not None:
        d.similarity = round(float(clip.features.embedding @ centroid), 4)
        d.window_min_similarity = round(float((clip.features.windows @ centroid).min()), 4)
    dropped = [[c.row.start, row.start], [row.end, c.row.end]]
    c.decision.recut = Recut(
        clip=cid,
        kept=[row.start, row.end],
        dropped=[[round(s, 3), round(e, 3)] for s, e in dropped if e - s > 0.01],
        why=f"another voice: {c.decision.detail}",
    )
    c.decision.detail += f"; recut: {row.start:.2f}-{row.end:.2f} s kept as {cid}"
    return clip


def _write_recuts(ws: Workspace, manifest: list[ClipRecord], old: list[ClipRecord], clips: list[_Clip]) -> None:
    """The segment manifest with this run's recut clips (and without the last run's that are gone)."""
    rows = [c.row for c in clips if RECUT_FLAG in c.row.flags]
    if rows or old:
        write_records(ws.segments_manifest, ClipRecord, [*manifest, *rows])
    ids = {r.id for r in rows}
    for r in old:  # after the manifest: a row never points at a file already gone
        if r.id not in ids:
            (ws.segments_dir / r.wav).unlink(missing_ok=True)


def _all_dropped_error(result: ScreenResult) -> InputError:
    counts = ", ".join(f"{r}: {n}" for r, n in result.dropped.most_common())
    fixes = {
        "other_speaker": "--speaker-ref FILE to pick the voice, or --no-speaker-filter",
        "mixed_speakers": "--no-speaker-filter",
        "low_quality": "a lower --min-dnsmos or --min-dnsmos-bak (SCREEN_MIN_DNSMOS, SCREEN_MIN_DNSMOS_BAK), "
        "or --no-quality-filter",
        "duplicate": "--keep-duplicates",
    }
    hint = "; ".join(f"{r}: {fixes[r]}" for r in result.dropped) or "check the audio"
    return InputError(
        f"Every clip was dropped by the screen ({counts}); nothing was changed on disk.",
        hint=f"To keep more, run `xttsft screen` with: {hint}.",
    )


def _screen_voices(
    clips: list[_Clip],
    result: ScreenResult,
    ws: Workspace,
    settings: ScreenSettings,
    refs: list[np.ndarray],
    min_duration: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The speaker screen, then the recut of mixed clips (appended to ``clips``). Returns the embeddings, the
    cluster index per clip and the target's centroid."""
    result.speakers, result.thresholds, emb, labels, centroid = _screen_speakers(clips, settings, refs)
    recuts, result.lost = _recut(clips, ws, settings, min_duration, centroid)
    result.recut, result.total = len(recuts), len(clips) + len(recuts)
    clips += recuts
    if recuts:
        labels = np.concatenate([labels, [int(str(c.decision.speaker)[1:]) - 1 for c in recuts]]).astype(int)
        emb = np.concatenate([emb, np.stack([c.features.embedding for c in recuts])])  # type: ignore[misc]
    return emb, labels, centroid


@stage_lock("screen", after=("segment",))
def screen_clips(
    settings: ScreenSettings,
    ws: Workspace,
    *,
    force: bool = False,
    progress: Progress | None = None,
    min_duration: float = DEFAULT_MIN_DURATION,
) -> ScreenResult:
    """Decide, for every clip of the segment manifest, whether it is the target's clean speech.

    See the module docstring. A mixed clip whose target part lasts ``min_duration`` (segment's shortest
    clip) is recut: that part is written as a new clip and added to the manifest (flag ``recut``).
    Raises :class:`InputError` for a bad reference, a reference that matches no clip, or when every
    clip would be dropped (the previous outputs are then left as they were).
    """
    progress = progress or no_progress
    everything = read_records(ws.segments_manifest, ClipRecord)
    manifest = [r for r in everything if RECUT_FLAG not in r.flags]
    old_recuts = [r for r in everything if RECUT_FLAG in r.flags]
    if not manifest:
        raise DatasetError(
            f"No clips to screen: {ws.segments_manifest} is missing or empty.",
            hint="Run `xttsft segment` first.",
        )
    refs = [Path(r).expanduser() for r in settings.speaker_refs]
    for r in refs:
        if not r.is_file():
            raise InputError(f"Speaker reference {r} does not exist.", hint="Pass an audio file of the target voice.")
    input_hash = _input_hash(ws, settings, refs, manifest, min_duration)
    result = ScreenResult(screen_file=ws.screen_file, total=len(manifest))
    if not force and ws.screen_file.is_file() and ws.screen_stats.is_file():
        old = _read_stats(ws)
        if old is not None and old.input_hash == input_hash:
            log.info("Screen decisions are up to date (clips and settings unchanged).")
            return _result_from_stats(ws, old, unchanged=True)

    ref_embs = []
    if refs and settings.speaker_filter:
        enc = VoiceEncoder()
        ref_embs = [embed_reference(r, enc) for r in refs]
    clips = _load_clips(ws, manifest)
    result.measured = _measure(clips, ws, settings, progress)
    emb: Any = None
    labels: Any = None
    centroid: Any = None
    if settings.speaker_filter:
        emb, labels, centroid = _screen_voices(clips, result, ws, settings, ref_embs, min_duration)
    if settings.quality_filter:
        result.measured += _measure_quality(clips, ws, settings, progress)
        _screen_quality([c for c in clips if c.kept], settings)
    if settings.duplicate_filter:
        _screen_duplicates(clips, _source_lengths(ws, manifest))
    _tally(result, clips)
    if result.kept == 0:
        listed = {r.wav for r in old_recuts}
        for c in clips[len(manifest) :]:  # nothing changes on disk: this run's new recut files go
            if c.row.wav not in listed:
                (ws.segments_dir / c.row.wav).unlink(missing_ok=True)
        raise _all_dropped_error(result)

    scores = _charts(result, clips, ws, settings, (emb, labels, centroid))
    _write_recuts(ws, manifest, old_recuts, clips)
    write_records(ws.screen_file, ScreenRecord, [c.decision for c in clips])
    write_record(ws.screen_stats, ScreenStats, _stats(result, settings, refs, scores, input_hash))
    _forget_stale_features(ws, {c.id for c in clips})
    return result


def _charts(
    result: ScreenResult, clips: list[_Clip], ws: Workspace, settings: ScreenSettings, voices: tuple[Any, Any, Any]
) -> list[tuple[float, float]]:
    """The speakers' kept counts, speakers.png and dnsmos.png (a chart this run has no data for is removed:
    the last run's would mislead). Returns the DNSMOS (overall, background) scores."""
    emb, labels, centroid = voices
    kept_mask = np.array([c.kept for c in clips])
    if emb is not None:
        for k, sp in enumerate(result.speakers):
            sel = labels == k
            sp.kept = int((sel & kept_mask).sum())
            sp.kept_minutes = sum(c.duration for c, s in zip(clips, sel, strict=True) if s and c.kept) / 60
        result.map_png = ws.screen_dir / "speakers.png"
        _plot_map(result.map_png, emb, labels, kept_mask, centroid, result.speakers)
    else:
        (ws.screen_dir / "speakers.png").unlink(missing_ok=True)
    scores = [(d.ovrl, d.bak) for c in clips if (d := c.decision.dnsmos) is not None]
    if scores:
        result.dnsmos_png = ws.screen_dir / "dnsmos.png"
        _plot_dnsmos(result.dnsmos_png, scores, settings)
    else:
        (ws.screen_dir / "dnsmos.png").unlink(missing_ok=True)
    return scores


def _tally(result: ScreenResult, clips: list[_Clip]) -> None:
    for c in clips:
        if c.kept:
            result.kept += 1
            result.kept_minutes += c.duration / 60
        else:
            reason = str(c.decision.reason)
            result.dropped[reason] += 1
            result.dropped_minutes[reason] = result.dropped_minutes.get(reason, 0.0) + c.duration / 60


def _stats(
    result: ScreenResult, settings: ScreenSettings, refs: list[Path], scores: list[tuple[float, float]], input_hash: str
) -> ScreenStats:

    return ScreenStats(
        version=SCREEN_VERSION,
        clips=result.total,
        kept=result.kept,
        kept_minutes=round(result.kept_minutes, 3),
        dropped=dict(result.dropped),
        dropped_minutes={k: round(v, 3) for k, v in result.dropped_minutes.items()},
        speakers=[
            SpeakerRow(
                label=s.label,
                clips=s.clips,
                minutes=round(s.minutes, 3),
                kept=s.kept,
                kept_minutes=round(s.kept_minutes, 3),
                similarity_to_target=s.similarity,
                target=s.target,
            )
            for s in result.speakers
        ],
        thresholds={**result.thresholds, "min_dnsmos": settings.min_dnsmos, "min_dnsmos_bak": settings.min_dnsmos_bak},
        dnsmos_ovrl=_quantiles([s[0] for s in scores]),
        dnsmos_bak=_quantiles([s[1] for s in scores]),
        filters={
            "speaker": settings.speaker_filter,
            "quality": settings.quality_filter,
            "duplicate": settings.duplicate_filter,
        },
        speaker_refs=[str(r) for r in refs],
        speaker_encoder=VOICE_ENCODER_NAME,
        settings=settings.model_dump(mode="json"),
        input_hash=input_hash,
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        recut=result.recut,
        lost_seconds=round(sum(x.end - x.start for x in result.lost), 2),
        lost=sorted(result.lost, key=lambda x: x.start - x.end),
    )


def _quantiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    q = np.quantile(np.array(values), [0.0, 0.1, 0.5, 0.9, 1.0])
    return dict(zip(("min", "p10", "median", "p90", "max"), (round(float(v), 3) for v in q), strict=True))


def _read_stats(ws: Workspace) -> ScreenStats | None:
    """The last screen's stats.json; ``None`` when it is missing or damaged (the screen then runs again)."""
    try:
        return read_record(ws.screen_stats, ScreenStats)
    except RecordError as exc:
        log.info("Screening again: %s", exc.message)
        return None


def _result_from_stats(ws: Workspace, stats: ScreenStats, unchanged: bool) -> ScreenResult:
    res = ScreenResult(
        screen_file=ws.screen_file,
        total=stats.clips,
        kept=stats.kept,
        kept_minutes=stats.kept_minutes,
        dropped=Counter(stats.dropped),
        dropped_minutes=dict(stats.dropped_minutes),
        thresholds=dict(stats.thresholds),
        unchanged=unchanged,
        recut=stats.recut,
        lost=list(stats.lost),
    )
    res.speakers = [
        Speaker(
            s.label,
            s.clips,
            s.minutes,
            s.kept,
            s.kept_minutes,
            math.nan if s.similarity_to_target is None else s.similarity_to_target,
            s.target,
        )
        for s in stats.speakers
    ]
    for name, attr in (("speakers.png", "map_png"), ("dnsmos.png", "dnsmos_png")):
        if (ws.screen_dir / name).is_file():
            setattr(res, attr, ws.screen_dir / name)
    return res


def _forget_stale_features(ws: Workspace, ids: set[str]) -> None:
    if ws.screen_features_dir.is_dir():
        for p in ws.screen_features_dir.glob("*.npz"):
            if p.stem not in ids:
                p.unlink(missing_ok=True)


# ------------------------------------------------------------------ readers


def _same_clip(decision: ScreenRecord, row: ClipRecord) -> bool:
    return (decision.source, decision.source_sha256, decision.start, decision.end) == (
        row.source,
        row.source_sha256,
        row.start,
        row.end,
    )


def _clip_rows(manifest: Sequence[ClipRecord | dict[str, Any]]) -> list[ClipRecord]:
    """The manifest's rows as records (a caller may hold them as the JSON it read)."""
    return [r if isinstance(r, ClipRecord) else ClipRecord.from_dict(r) for r in manifest]


def read_decisions(
    ws: Workspace,
    manifest: Sequence[ClipRecord | dict[str, Any]] | None = None,
) -> dict[str, ScreenRecord]:
    """Screen decisions by clip id ({} when the screen has not run).

    With ``manifest``, only the decisions about those very clips (same source, content and
    times): a clip segmented again after the screen ran has no decision yet.
    """
    decisions = {r.id: r for r in read_records(ws.screen_file, ScreenRecord)}
    if manifest is None:
        return decisions
    rows = {r.id: r for r in _clip_rows(manifest)}
    return {i: d for i, d in decisions.items() if i in rows and _same_clip(d, rows[i])}


def recut_children(decisions: Mapping[str, ScreenRecord], kept: set[str]) -> dict[str, str]:
    """``{child: parent}`` for each mixed clip in ``kept`` (a person kept it in ``xttsft review``) that screen
    recut: the parent holds the child's audio, so the child must not reach the dataset as well."""
    return {d.recut.clip: cid for cid, d in decisions.items() if cid in kept and d.recut is not None}


def kept_ids(ws: Workspace, manifest: Sequence[ClipRecord | dict[str, Any]]) -> set[str] | None:
    """Ids of the manifest's clips that the screen did not drop; ``None`` when the screen has not run.

    A clip the screen has no decision for (segmented after it ran) counts as kept, with a warning.
    """
    if not ws.screen_file.is_file():
        return None
    rows = _clip_rows(manifest)
    decisions = read_decisions(ws, rows)
    unscreened = [r.id for r in rows if r.id not in decisions]
    if unscreened:
        log.warning(
            "%d clip(s) are newer than the last `xttsft screen` and were not screened; run it again.", len(unscreened)
        )
    return {r.id for r in rows if (d := decisions.get(r.id)) is None or d.status != "dropped"}
