"""``segment``: cut long recordings into 22050 Hz mono clips at the pauses.

Each source goes through two streaming passes, so memory stays flat whatever
its length (an hour of audio is never held in memory):

1. **Analysis** at 16 kHz, in 30 s blocks: a 10 ms energy envelope (dBFS) and
   the speech regions, found by Silero VAD (``faster_whisper.vad``, offline) or,
   with ``method="energy"``, by the envelope crossing ``silence_threshold``.
   Blocks quieter than -60 dBFS throughout are not given to the VAD.
2. **Cutting** at 22050 Hz, in 30 s blocks: every planned clip is copied out,
   normalised and written as 16-bit PCM WAV through a temporary name.

The plan (:func:`plan_segments`, pure) works on the speech regions:

* a region longer than ``max_duration - 2 * pad`` (speech with no pause) is
  split at its quietest 50 ms inside the window that keeps both parts short
  enough; the clips it yields carry the flag ``forced_split``;
* consecutive regions are then grouped by dynamic programming: a clip is valid
  if, pads included, it lasts at most ``max_duration`` and holds no pause longer
  than ``max_pause``; a clip shorter than ``min_duration`` costs a lot (it is
  dropped), cutting at a pause of ``g`` seconds scores ``min(g, 2) - 0.35``.
  So cuts go to the longest pauses, never inside a region (a word) when a pause
  exists, and a short piece is merged with a neighbour when that keeps the clip
  under the maximum (flag ``merged`` when the clip spans a pause over 0.5 s);
* each clip gets ``pad`` seconds of context at both ends, limited to half the
  pause to the neighbouring speech (and to the file's ends), so it never takes
  in a neighbour's speech.

Clips are normalised to ``target_loudness`` dBFS RMS with a sample-peak limit of
``peak_limit`` dBFS: when both cannot hold, the gain is lowered (flag
``peak_limited``), so nothing is ever clipped. Sources with runs of full-scale
samples get the flag ``clipped_input`` on the affected clips.

Outputs (see docs/segment.md): ``<segments_dir>/<id>.wav``, the manifest
``manifest.jsonl`` (one row per clip) and ``sources.jsonl`` (one record per
source: content hash, settings hash, status, clip ids), which makes re-runs
skip sources already segmented with the same content and settings; with speaker
turns on, ``voices/<hash>.npz`` keeps the source's CAM++ windows for the screen.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
import zipfile
from collections.abc import Callable, Iterable, Mapping, Sequence, Set
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

import numpy as np

from xttsft import audio
from xttsft.encoders import EMBED_HOP, EMBED_WINDOW, MOMENTS_DIM, VOICE_DIM, VOICE_ENCODER_NAME, VoiceEncoder, unit
from xttsft.errors import InputError, XttsftError
from xttsft.io import atomic_path, sha256_file
from xttsft.locks import stage_lock
from xttsft.paths import Workspace
from xttsft.progress import Progress, no_progress
from xttsft.records import ClipRecord, SourceRecord, read_records, write_records
from xttsft.settings import SegmentSettings
from xttsft.storage import require_free_space

__all__ = [
    "SAMPLE_RATE",
    "Region",
    "PlannedSegment",
    "Analysis",
    "SourceResult",
    "SegmentResult",
    "find_sources",
    "analyze",
    "plan_segments",
    "segment_sources",
    "settings_hash",
]

log = logging.getLogger(__name__)

SAMPLE_RATE = audio.TRAIN_SR  # clips, the DVAE and XTTS training all use 22050 Hz
VAD_RATE = audio.SPEECH_SR  # Silero VAD works at 16 kHz
HOP = 0.010  # energy envelope hop, seconds
BLOCK_SECONDS = 30.0
VAD_FLOOR_DBFS = -60.0  # a block whose loudest 10 ms is below this holds no speech
SILENT_DBFS = audio.SILENT_DBFS
MIN_REGION = 0.10  # speech shorter than this is a click, not speech
MIN_GAP = 0.10  # pauses shorter than this do not separate regions
CUT_PAUSE_REF = 0.35  # cutting at a shorter pause costs, at a longer one pays
MERGED_PAUSE = 0.5  # a clip spanning a pause this long is flagged "merged"
DROP_COST = 100.0
SHORT_PAUSE = 0.5  # a short sentence stands alone: at least this much silence before and after it
SHORT_COST = 50.0  # a short clip costs this, less the bonus the share search sets (a drop costs more)
SHORT_TIE = 1e-3  # the most isolated short sentence gets up to this much more bonus than the least
ALGO_VERSION = 7  # bump when a change alters the clips, so re-runs redo them (7: side similarity, kept windows)


@dataclass
class Region:
    """A stretch of speech in the source, in seconds. ``forced_*``: this edge is a forced cut;
    ``turn``: another voice than the previous region's starts here (no clip spans it)."""

    start: float
    end: float
    forced_start: bool = False
    forced_end: bool = False
    turn: bool = False

    @property
    def duration(self) -> float:
        return self.end - self.start


@dataclass(frozen=True)
class PlannedSegment:
    """One planned clip: position in the source (pads included) and its flags."""

    start: float
    end: float
    speech_start: float
    speech_end: float
    flags: tuple[str, ...] = ()

    @property
    def duration(self) -> float:
        return self.end - self.start


@dataclass
class Analysis:
    """What pass 1 found in a source."""

    duration: float  # seconds actually decoded
    regions: list[Region]
    envelope_db: np.ndarray  # 10 ms frame RMS, dBFS
    peak_dbfs: float
    turns: int = 0  # speaker changes found
    voices: SourceWindows | None = None  # the speaker windows, when speaker turns were looked for


@dataclass
class SourceResult:
    """The outcome for one source file."""

    source: str  # path as shown to the user (relative to the workdir when inside it)
    status: Literal["segmented", "skipped", "failed"]
    segments: int = 0
    seconds: float = 0.0  # total duration of its clips
    dropped: int = 0  # speech pieces shorter than min_duration that could not be merged
    short: int = 0  # of its clips, the short sentences kept (flag "short_sentence")
    short_seconds: float = 0.0
    short_turns: int = 0  # of its clips, the short turns kept (flag "short_turn")
    duration: float | None = None  # source duration
    reason: str | None = None  # why it failed or was skipped
    notes: list[str] = field(default_factory=list)  # warnings (8 kHz, truncated, ...)


@dataclass
class SegmentResult:
    sources: list[SourceResult]
    manifest: Path
    segments_dir: Path

    @property
    def failed(self) -> list[SourceResult]:
        return [s for s in self.sources if s.status == "failed"]

    @property
    def total_segments(self) -> int:
        """Clips written or kept by this run's sources."""
        return sum(s.segments for s in self.sources)

    @property
    def total_seconds(self) -> float:
        return sum(s.seconds for s in self.sources)

    @property
    def total_short(self) -> int:
        """Of those clips, the short sentences (flag ``short_sentence``)."""
        return sum(s.short for s in self.sources)

    @property
    def short_summary(self) -> str:
        """How many short sentences were kept and their share of the clips and of the audio; and short turns."""
        n, total = self.total_short, self.total_segments
        turns = sum(s.short_turns for s in self.sources)
        also = f", {turns} short turn{'s' if turns != 1 else ''}" if turns else ""
        if not n:
            return "no short sentence" + also
        sec = sum(s.short_seconds for s in self.sources)
        return (
            f"{n} short sentence{'s' if n != 1 else ''} ({n / total:.0%} of the clips, "
            f"{sec / max(self.total_seconds, 1e-9):.0%} of the audio){also}"
        )


# --------------------------------------------------------------------------- sources
_SKIP_SUFFIXES = (".json", ".part", ".ytdl", ".txt", ".md", ".jsonl")


def find_sources(inputs: Sequence[Path]) -> list[Path]:
    """Files to segment: each input file as given, and every file under each folder
    (recursively, sorted), except hidden files, sidecar JSON, partial downloads and text."""
    found: list[Path] = []
    for item in inputs:
        item = Path(item)
        if item.is_dir():
            for p in sorted(item.rglob("*")):
                rel_parts = p.relative_to(item).parts
                if not p.is_file() or any(part.startswith(".") for part in rel_parts):
                    continue
                if p.suffix.lower() in _SKIP_SUFFIXES or ".tmp" in p.name:
                    continue
                found.append(p)
        else:
            found.append(item)
    seen: set[Path] = set()
    unique = []
    for p in found:
        key = p.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(p)
    return unique


def settings_hash(settings: SegmentSettings) -> str:
    """Hash of everything that changes the clips (settings + algorithm version)."""
    data = {"algo": ALGO_VERSION, "sr": SAMPLE_RATE, **settings.model_dump(mode="json")}
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def _stem(path: Path) -> str:
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", path.stem).strip("._-")
    return stem or "audio"


def _display(path: Path, root: Path) -> str:
    try:
        return str(path.resolve().relative_to(root))
    except ValueError:
        return str(path.resolve())


# --------------------------------------------------------------------------- pass 1
def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """[start, end) index pairs of the True runs of ``mask``."""
    padded = np.concatenate(([False], mask, [False]))
    edges = np.flatnonzero(padded[1:] != padded[:-1])
    return list(zip(edges[0::2].tolist(), edges[1::2].tolist(), strict=True))


def _tidy(regions: list[Region]) -> list[Region]:
    """Join regions separated by less than MIN_GAP; drop those shorter than MIN_REGION."""
    out: list[Region] = []
    for r in sorted(regions, key=lambda r: r.start):
        if out and r.start - out[-1].end < MIN_GAP:
            out[-1].end = max(out[-1].end, r.end)
        else:
            out.append(Region(r.start, r.end))
    return [r for r in out if r.duration >= MIN_REGION]


def _energy_regions(env_db: np.ndarray, threshold_db: float) -> list[Region]:
    return _tidy([Region(a * HOP, b * HOP) for a, b in _runs(env_db > threshold_db)])


def analyze(
    path: Path, settings: SegmentSettings, progress: Progress = no_progress, expected: float | None = None
) -> Analysis:
    """Pass 1: stream ``path`` at 16 kHz; return its speech regions and energy envelope.

    ``progress`` is advanced by the seconds decoded. Raises :class:`InputError`
    if ffmpeg cannot decode it.
    """
    hop = int(VAD_RATE * HOP)
    env_parts: list[np.ndarray] = []
    regions: list[Region] = []
    offset = 0  # samples
    peak = 0.0
    vad_opts = None
    if settings.method == "vad":
        from faster_whisper.vad import VadOptions, get_speech_timestamps

        vad_opts = VadOptions(
            threshold=settings.vad_threshold,
            min_speech_duration_ms=int(MIN_REGION * 1000),
            min_silence_duration_ms=int(MIN_GAP * 1000),
            speech_pad_ms=0,
        )
    tracker = _TurnTracker() if settings.speaker_turns else None
    for block in audio.stream_blocks(path, sr=VAD_RATE, block_seconds=BLOCK_SECONDS):
        if tracker is not None:
            tracker.feed(block)
        env = audio.frame_dbfs(block, hop)
        env_parts.append(env.astype(np.float32))
        if block.size:
            peak = max(peak, float(np.max(np.abs(block))))
        if vad_opts is not None and env.size and float(env.max()) > VAD_FLOOR_DBFS:
            block_start = offset / VAD_RATE
            for ts in get_speech_timestamps(block, vad_opts, sampling_rate=VAD_RATE):
                s, e = block_start + ts["start"] / VAD_RATE, block_start + ts["end"] / VAD_RATE
                # A region cut by the block boundary (the VAD restarts per block) is joined.
                if regions and regions[-1].end >= block_start - 0.1 and s <= block_start + 0.25:
                    regions[-1].end = e
                else:
                    regions.append(Region(s, e))
        offset += len(block)
        progress(advance=len(block) / VAD_RATE)
    env_db = np.concatenate(env_parts) if env_parts else np.zeros(0, dtype=np.float32)
    duration = offset / VAD_RATE
    if settings.method == "energy":
        regions = _energy_regions(env_db, settings.silence_threshold)
    else:
        regions = _tidy(regions)
    for r in regions:
        r.end = min(r.end, duration)
    turns, voices = 0, None
    if tracker is not None:
        voices = tracker.windows()
        if regions:
            regions, turns = mark_turns(regions, tracker.starts, voices.embeddings, env_db, _side_similarity(path))
    peak_db = 20 * math.log10(peak) if peak > 0 else -math.inf
    return Analysis(duration, regions, env_db, peak_db, turns, voices)


# --------------------------------------------------------------------------- speaker turns
TURN_SILENT_DBFS = VAD_FLOOR_DBFS  # a 1.6 s window quieter than this is not embedded (the fbank is mean-normalised)
TURN_CONTEXT = 3  # windows compared on each side of a candidate change (3.2 s of speech each)
TURN_DROP = 0.24  # a change: the left/right similarity this far below the source's median ...
TURN_FLOOR, TURN_CEILING = 0.35, 0.60  # ... kept within these (CAM++; measured in docs/segment.md)
TURN_PAUSE_REACH = 3.2  # at a pause: the speech windows within this many seconds on each side are compared
TURN_PAUSE_DROP = 0.10  # a pause is a change when that similarity is this far below the pauses' upper quartile
TURN_PAUSE_FLOOR, TURN_PAUSE_CEILING = 0.45, 0.58  # ... kept within these (CAM++; docs/segment.md)


class _TurnTracker:
    """CAM++ embeddings of the 1.6 s windows (hop 0.8 s) of a stream, fed block by block."""

    def __init__(self) -> None:

        self.win, self.hop = int(EMBED_WINDOW * VAD_RATE), int(EMBED_HOP * VAD_RATE)
        self.buf = np.zeros(0, dtype=np.float32)
        self.buf_start = 0  # sample index of buf[0]
        self.starts: list[float] = []
        self.pieces: list[np.ndarray] = []
        self._embs: list[np.ndarray] = []
        self._moments: list[np.ndarray] = []
        self._encoder: Any = None

    def feed(self, block: np.ndarray) -> None:
        self.buf = np.concatenate([self.buf, block])
        while len(self.buf) >= self.win:
            piece = self.buf[: self.win]
            if audio.rms_dbfs(piece) > TURN_SILENT_DBFS:
                self.starts.append(self.buf_start / VAD_RATE)
                self.pieces.append(piece.copy())
            self.buf = self.buf[self.hop :]
            self.buf_start += self.hop
        if len(self.pieces) >= 256:
            self._flush()

    def _flush(self) -> None:
        if not self.pieces:
            return
        if self._encoder is None:
            self._encoder = VoiceEncoder()
        embeddings, moments = self._encoder.window_moments(self.pieces)
        self._embs.append(embeddings)
        self._moments.append(moments.astype(np.float16))  # what the file keeps (cosine 1.0000 pooled)
        self.pieces = []

    def windows(self) -> SourceWindows:
        """The windows embedded so far, with their moments."""
        self._flush()
        if not self._embs:
            empty = np.zeros((0, VOICE_DIM), np.float32)
            return SourceWindows(np.zeros(0), empty, np.zeros((0, MOMENTS_DIM), np.float16))
        starts = np.array(self.starts, dtype=np.float64)
        return SourceWindows(starts, np.concatenate(self._embs), np.concatenate(self._moments))


@dataclass
class SourceWindows:
    """The CAM++ embeddings of a source's 1.6 s windows (hop 0.8 s; silent ones left out). Segment keeps them
    beside the clips, and the screen takes a clip's windows from them instead of embedding its audio again."""

    starts: np.ndarray  # (n,) source seconds
    embeddings: np.ndarray  # (n, VOICE_DIM), unit length
    moments: np.ndarray | None = None  # (n, MOMENTS_DIM) float16, VoiceEncoder.window_moments (older files: none)

    def inside(self, start: float, end: float) -> SourceWindows:
        """The windows that lie within source seconds ``start``-``end``, their starts counted from ``start``."""
        keep = (self.starts >= start - WINDOW_SLACK) & (self.starts + EMBED_WINDOW <= end + WINDOW_SLACK)
        moments = self.moments[keep] if self.moments is not None else None
        return SourceWindows(self.starts[keep] - start, self.embeddings[keep], moments)


#: A window this close to inside a clip (rounding of the clip's edges) counts as inside.
WINDOW_SLACK = 0.02
VOICES_VERSION = 1  # bump when the windows change (their encoder's name is checked too)


def source_windows_path(ws: Workspace, source_sha256: str) -> Path:
    """Where segment keeps a source's speaker windows: named by the source's content, so copies share it."""
    return ws.segments_dir / "voices" / f"{source_sha256[:16]}.npz"


def _save_windows(ws: Workspace, sha: str, voices: SourceWindows) -> None:
    arrays: dict[str, Any] = {
        "version": np.array(VOICES_VERSION),
        "encoder": np.array(VOICE_ENCODER_NAME),
        "source_sha256": np.array(sha),
        "starts": voices.starts,
        "embeddings": voices.embeddings.astype(np.float32),
    }
    if voices.moments is not None:
        arrays["moments"] = voices.moments.astype(np.float16)
    with atomic_path(source_windows_path(ws, sha)) as tmp:
        with tmp.open("wb") as fh:
            np.savez(fh, **arrays)


def read_source_windows(ws: Workspace, source_sha256: str) -> SourceWindows | None:
    """The speaker windows segment kept for a source, or None (turns off, an older segment run, another
    encoder, or a damaged file)."""
    path = source_windows_path(ws, source_sha256)
    try:
        with np.load(path) as z:
            if (
                int(z["version"]) != VOICES_VERSION
                or str(z["encoder"]) != VOICE_ENCODER_NAME
                or str(z["source_sha256"]) != source_sha256
            ):
                return None
            starts, embeddings = z["starts"], z["embeddings"]
            moments = z["moments"] if "moments" in z.files else None  # files from before the moments: none
            if starts.ndim != 1 or embeddings.shape != (len(starts), VOICE_DIM):
                return None
            if moments is not None and moments.shape != (len(starts), MOMENTS_DIM):
                moments = None
            return SourceWindows(starts, embeddings, moments)
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return None


def _speech_share(start: float, end: float, regions: Sequence[Region]) -> float:
    inside = sum(max(0.0, min(end, r.end) - max(start, r.start)) for r in regions)
    return inside / (end - start)


def speech_windows(
    regions: Sequence[Region], starts: Sequence[float], embs: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The starts and embeddings of the windows that are at least half speech: the ones the turn tests use."""
    keep = [i for i, s in enumerate(starts) if _speech_share(s, s + EMBED_WINDOW, regions) >= 0.5]
    t = np.array([starts[i] for i in keep], dtype=np.float64)
    e = embs[keep] if keep else np.zeros((0, embs.shape[1] if embs.ndim == 2 else VOICE_DIM), dtype=np.float32)
    return t, e


def mark_turns(
    regions: list[Region],
    starts: Sequence[float],
    embs: np.ndarray,
    env_db: np.ndarray,
    sides: SideSimilarity | None = None,
) -> tuple[list[Region], int]:
    """Mark (or cut) the regions where the voice changes; no clip spans a region marked ``turn``.

    1. At each pause, the speech windows within TURN_PAUSE_REACH seconds before it are compared with those
       after it (no window reaches across the pause; within the neighbouring region when a window fits; none
       past a change of voice that step 2 finds inside speech, and a side left with no window is not
       judged); a similarity TURN_PAUSE_DROP below the upper quartile of the source's pauses (most pauses are within
       one voice; kept within TURN_PAUSE_FLOOR..TURN_PAUSE_CEILING) is a change there.
    2. Along the speech windows, the mean of TURN_CONTEXT windows before each window is compared with the
       mean of TURN_CONTEXT windows after it; a local minimum of that similarity TURN_DROP below the
       source's median (kept within TURN_FLOOR..TURN_CEILING) is a change of voice. It goes into the
       longest pause within reach that step 1 did not find to hold one voice on both sides, else the
       region is cut at its quietest 50 ms near the change; with ``sides`` (the source's audio), that cut
       wins over the pause when the voices on its two sides differ clearly more (:func:`_place_turn`).
    """

    t, e = speech_windows(regions, starts, embs)
    out = [Region(r.start, r.end, r.forced_start, r.forced_end, r.turn) for r in regions]
    placed = 0
    same: set[float] = set()  # starts of the regions after a pause with one voice on both sides
    marked: set[float] = set()  # ... and after a pause test 1 marked
    changes = _window_changes(t, e)
    scores = _pause_scores(out, t, e, changes)
    if scores:
        cut_below = min(
            max(float(np.percentile(list(scores.values()), 75)) - TURN_PAUSE_DROP, TURN_PAUSE_FLOOR),
            TURN_PAUSE_CEILING,
        )
        for k, v in scores.items():
            if v < cut_below:
                placed += not out[k].turn
                out[k].turn = True
                marked.add(out[k].start)
            else:
                same.add(out[k].start)
    for c in changes:
        out, ok = _place_turn(out, c, env_db, same=same, sides=sides, marked=marked)
        placed += ok
    return out, placed


def _own_change(at: float, end: float, start: float) -> bool:
    """Whether a change found along the windows at ``at`` can be the one in the pause ``end``..``start``: the
    windows place a change within a hop (0.8 s) of where it is."""
    return end - EMBED_HOP <= at <= start + EMBED_HOP


def _pause_scores(
    regions: list[Region], t: np.ndarray, e: np.ndarray, changes: Sequence[float] = ()
) -> dict[int, float]:
    """Per pause (the index of the region after it): the similarity of the speech windows just before it to
    those just after it, each side up to TURN_PAUSE_REACH s and at most half the pause into it. No window
    may hold a change found along the windows (``changes``) that is not the pause's own: each such change
    lies somewhere in the window centred on it, so the windows on that side start or end beyond that one.
    A pause left with no window on a side is not judged."""
    scores: dict[int, float] = {}
    n = len(regions)
    for k in range(1, n):
        end, start = regions[k - 1].end, regions[k].start
        slack = min(0.3, (start - end) / 2)
        others = [c for c in changes if not _own_change(c, end, start)]
        from_t = max((c for c in others if c < end), default=-math.inf) + EMBED_WINDOW / 2
        to_t = min((c for c in others if c > start), default=math.inf) - EMBED_WINDOW / 2
        left = (t >= max(end - TURN_PAUSE_REACH - slack, from_t)) & (t + EMBED_WINDOW <= end + slack)
        right = (t >= start - slack) & (t + EMBED_WINDOW <= min(start + TURN_PAUSE_REACH + slack, to_t))
        # the next pause may hold another change: stay within the neighbouring region when a window fits in it
        prev_end = regions[k - 2].end if k > 1 else -math.inf
        near = left & (t >= regions[k - 1].start - min(0.3, (regions[k - 1].start - prev_end) / 2))
        left = near if near.any() else left
        next_start = regions[k + 1].start if k + 1 < n else math.inf
        near = right & (t + EMBED_WINDOW <= regions[k].end + min(0.3, (next_start - regions[k].end) / 2))
        right = near if near.any() else right
        if left.any() and right.any():
            scores[k] = float(unit(e[left].mean(axis=0)) @ unit(e[right].mean(axis=0)))
    return scores


def _window_changes(t: np.ndarray, e: np.ndarray) -> list[float]:
    """Times of the changes of voice along the windows (step 2 of :func:`mark_turns`)."""
    ctx, n = TURN_CONTEXT, len(t)
    if n < 2 * ctx + 1:
        return []
    sim = np.full(n, np.nan)
    for j in range(ctx, n - ctx):
        sim[j] = float(unit(e[j - ctx : j].mean(axis=0)) @ unit(e[j + 1 : j + 1 + ctx].mean(axis=0)))
    threshold = min(max(float(np.nanmedian(sim)) - TURN_DROP, TURN_FLOOR), TURN_CEILING)
    return [
        float(t[j] + EMBED_WINDOW / 2)
        for j in range(ctx, n - ctx)
        if sim[j] < threshold and sim[j] == np.nanmin(sim[max(ctx, j - 2) : j + 3])
    ]


#: Side similarity of a point inside speech this far under the pause's makes the change go there, not in the
#: pause (docs/segment.md: a change 0.57 s past a pause scored 0.125 under it; at the 7 pauses that held their
#: change, the point inside speech scored 0.04-0.37 over).
TURN_SPEECH_MARGIN = 0.08

#: The CAM++ similarity of the 1.6 s of source audio ending at the first time to the 1.6 s starting at the
#: second, for each pair.
SideSimilarity = Callable[[Sequence[tuple[float, float]]], list[float]]


def _place_turn(
    regions: list[Region],
    at: float,
    env_db: np.ndarray,
    same: Set[float] = frozenset(),
    sides: SideSimilarity | None = None,
    marked: Set[float] = frozenset(),
) -> tuple[list[Region], bool]:
    """Put a change of voice near ``at``: in the longest pause that can hold it (its edges within a window hop,
    :func:`_own_change`; not one known to hold the same voice on both sides: ``same`` holds the starts of the
    regions after those), else a cut at the quietest 50 ms within a hop (0.8 s: the windows place a change no
    closer than that). With ``sides``, a pause is passed over for that cut when the audio on the two sides of
    the cut differs more than on the two sides of the pause (by TURN_SPEECH_MARGIN): a change a little past a
    short pause, with none at it (a mark step 1 put on that pause, ``marked`` holding the starts of the regions
    after those, moves to the cut: it saw this change, on windows past it)."""
    best = _pause_for(regions, at, same)
    cut = _speech_cut(regions, at, env_db)
    moved = False  # the pause held this change (step 1 marked it), found again a little past it
    if best is not None and cut is not None and sides is not None:
        pause, speech = sides([(regions[best - 1].end, regions[best].start), (cut[1], cut[1])])
        if speech < pause - TURN_SPEECH_MARGIN:
            if regions[best].start in marked:
                regions[best].turn = False
                moved = True
            best = None
    if best is not None:
        if regions[best].turn:
            return regions, False
        regions[best].turn = True
        return regions, True
    if cut is None:
        return regions, False
    k, t = cut
    r = regions[k]
    split = [Region(r.start, t, r.forced_start, True, r.turn), Region(t, r.end, True, r.forced_end, True)]
    return regions[:k] + split + regions[k + 1 :], not moved


def _pause_for(regions: list[Region], at: float, same: Set[float]) -> int | None:
    """The index of the region after the longest pause that can hold a change found at ``at``, or None."""
    best, best_gap = None, 0.0
    for k in range(1, len(regions)):
        end, start = regions[k - 1].end, regions[k].start
        if _own_change(at, end, start) and start - end > best_gap and start not in same:
            best, best_gap = k, start - end
    return best


def _speech_cut(regions: list[Region], at: float, env_db: np.ndarray) -> tuple[int, float] | None:
    """Where a change at ``at`` inside a region is cut: (the region's index, its quietest 50 ms within a hop)."""
    for k, r in enumerate(regions):
        if r.start + MIN_REGION < at < r.end - MIN_REGION:
            lo, hi = max(r.start + MIN_REGION, at - EMBED_HOP), min(r.end - MIN_REGION, at + EMBED_HOP)
            return k, _quietest(env_db, lo, hi)
    return None


def _side_similarity(path: Path) -> SideSimilarity:
    """Side similarities from the source's audio, decoded once per call around the points asked."""

    encoder = VoiceEncoder()

    def sides(pairs: Sequence[tuple[float, float]]) -> list[float]:
        lo = max(0.0, min(a for a, _ in pairs) - EMBED_WINDOW)
        try:
            x = audio.decode(path, sr=VAD_RATE, start=lo, duration=max(b for _, b in pairs) + EMBED_WINDOW - lo)
        except XttsftError:  # the first pass read it: keep the windows' placement rather than fail the source
            return [math.nan] * len(pairs)
        at = lambda t: int(round((t - lo) * VAD_RATE))  # noqa: E731
        width = int(EMBED_WINDOW * VAD_RATE)
        pieces = [p for a, b in pairs for p in (x[max(0, at(a) - width) : at(a)], x[at(b) : at(b) + width])]
        e = encoder.window_embeddings(pieces)
        return [float(e[2 * i] @ e[2 * i + 1]) for i in range(len(pairs))]

    return sides


# --------------------------------------------------------------------------- plan
def quietest_point(x: np.ndarray, sr: int, lo: float, hi: float) -> float:
    """Time (s) of the quietest 50 ms of ``x`` between ``lo`` and ``hi``: where to cut speech."""
    return _quietest(audio.frame_dbfs(np.asarray(x, dtype=np.float32), max(1, int(round(sr * HOP)))), lo, hi)


def _quietest(env_db: np.ndarray, lo: float, hi: float) -> float:
    """Time (s) of the quietest 50 ms between ``lo`` and ``hi``."""
    a, b = int(math.ceil(lo / HOP)), int(math.floor(hi / HOP))
    b = min(b, len(env_db) - 1)
    if b <= a:
        return (lo + hi) / 2
    seg = env_db[max(0, a - 2) : b + 3].astype(np.float64)
    smooth = np.convolve(seg, np.ones(5) / 5, mode="same")[a - max(0, a - 2) : a - max(0, a - 2) + (b - a + 1)]
    return (a + int(np.argmin(smooth))) * HOP


def _force_split(r: Region, limit: float, min_piece: float, env_db: np.ndarray) -> list[Region]:
    """Split speech longer than ``limit`` at its quietest points into pieces <= ``limit``."""
    pieces: list[Region] = []
    cur = Region(r.start, r.end, r.forced_start, r.forced_end, r.turn)
    while cur.duration > limit + 1e-9:
        length = cur.duration
        want = min(min_piece, limit / 2)
        if length <= 2 * limit:
            lo, hi = max(length - limit, want), min(limit, length - want)
            if lo > hi:
                lo, hi = length - limit, limit
        else:
            lo, hi = want, limit
        cut = _quietest(env_db, cur.start + lo, cur.start + hi)
        cut = min(max(cur.start + (length - limit if length <= 2 * limit else 0.0), cut), cur.start + limit)
        pieces.append(Region(cur.start, cut, cur.forced_start, True, cur.turn))
        cur = Region(cut, cur.end, True, cur.forced_end)
    pieces.append(cur)
    return pieces


def plan_segments(
    regions: Sequence[Region],
    duration: float,
    settings: SegmentSettings,
    envelope_db: np.ndarray | None = None,
) -> tuple[list[PlannedSegment], list[PlannedSegment]]:
    """Group speech ``regions`` of a ``duration``-second source into clips.

    Returns ``(kept, dropped)``; ``dropped`` are the clips shorter than
    ``min_duration`` that no valid merge could save. Pure: no I/O.
    """
    if envelope_db is None:
        envelope_db = np.zeros(int(duration / HOP) + 1, dtype=np.float32)
    speech_limit = settings.max_duration - 2 * settings.pad
    regs: list[Region] = []
    for r in regions:
        regs.extend(
            _force_split(r, speech_limit, settings.min_duration, envelope_db) if r.duration > speech_limit else [r]
        )
    if not regs:
        return [], []
    pads = _Pads(regs, duration, settings.pad)
    bounds, shorts = _group(regs, pads, settings), set[tuple[int, int]]()
    units = _short_units(regs, pads, settings)
    if units:
        bounds, shorts = _with_shorts(regs, pads, settings, units, bounds)
    return _planned(regs, bounds, pads, duration, settings.min_duration, shorts)


@dataclass
class _Pads:
    """The context each clip gets: half the pause to a neighbour, the whole of it to the file's ends."""

    regs: list[Region]
    duration: float
    pad: float

    def __call__(self, i: int, j: int) -> tuple[float, float]:
        """(left, right) pad of the clip of regions ``i`` to ``j - 1``."""
        regs, n = self.regs, len(self.regs)
        before = regs[i].start - (regs[i - 1].end if i > 0 else 0.0)
        after = (regs[j].start if j < n else self.duration) - regs[j - 1].end
        gb = before / (2 if i > 0 else 1)
        ga = after / (2 if j < n else 1)
        return min(self.pad, max(gb, 0.0)), min(self.pad, max(ga, 0.0))


def _group(
    regs: list[Region],
    pads: _Pads,
    settings: SegmentSettings,
    shorts: Mapping[tuple[int, int], float] | None = None,
) -> list[tuple[int, int]]:
    """Dynamic programming over the cuts between regions: the ``(i, j)`` region spans of the cheapest clips
    (cuts at long pauses pay, short clips cost DROP_COST; see the module docstring). A stand-alone short
    sentence or short turn, ``shorts[(i, j)] == bonus``, costs SHORT_COST - bonus instead."""
    n = len(regs)
    best = [math.inf] * (n + 1)
    back = [0] * (n + 1)
    best[0] = 0.0
    for j in range(1, n + 1):
        for i in range(j - 1, -1, -1):
            if i < j - 1 and (regs[i + 1].start - regs[i].end > settings.max_pause or regs[i + 1].turn):
                break  # the clip would hold too long a silence, or a change of voice
            pl, pr = pads(i, j)
            dur = regs[j - 1].end - regs[i].start + pl + pr
            if dur > settings.max_duration + 1e-6 and i < j - 1:
                break
            # cutting between regs[i-1] and regs[i] at a pause of g seconds costs CUT_PAUSE_REF - min(g, 2)
            cost = best[i] + (CUT_PAUSE_REF - min(regs[i].start - regs[i - 1].end, 2.0) if i > 0 else 0.0)
            if dur < settings.min_duration - 1e-6:
                bonus = shorts.get((i, j)) if shorts else None
                cost += SHORT_COST - bonus if bonus is not None else DROP_COST + (regs[j - 1].end - regs[i].start)
            if cost < best[j]:
                best[j], back[j] = cost, i
    bounds = []
    j = n
    while j > 0:
        bounds.append((back[j], j))
        j = back[j]
    return bounds[::-1]


def _short_units(regs: list[Region], pads: _Pads, settings: SegmentSettings) -> dict[tuple[int, int], bool]:
    """The short clips that may be kept, as ``{(i, j): turn}`` region spans from ``short_min_duration`` to under
    ``min_duration`` long with their pads, each edge a pause of at least SHORT_PAUSE (the file's ends count
    when as much silence lies there) or a change of voice, and no change of voice inside:

    * a stand-alone short sentence (``turn`` false): both edges pauses, none that long inside, no forced cut
      at its edges; only with ``short_share`` above 0;
    * a short turn (``turn`` true): a change of voice at one edge at least, pauses inside up to ``max_pause``,
      forced cuts only at a change of voice; only with ``short_turns``.
    """
    n, units = len(regs), {}
    sentences, turns = settings.short_share > 0, settings.short_turns

    def edges(i: int, j: int) -> tuple[bool, bool] | None:
        """(change before, change after) when both edges of span ``(i, j)`` stand alone, else None."""
        turn_before, turn_after = i > 0 and regs[i].turn, j < n and regs[j].turn
        before = regs[i].start - (regs[i - 1].end if i > 0 else 0.0)
        after = (regs[j].start if j < n else pads.duration) - regs[j - 1].end
        alone = (before >= SHORT_PAUSE or turn_before) and (after >= SHORT_PAUSE or turn_after)
        forced = (regs[i].forced_start and not turn_before) or (regs[j - 1].forced_end and not turn_after)
        return (turn_before, turn_after) if alone and not forced else None

    def fits(i: int, j: int) -> bool:
        pl, pr = pads(i, j)
        return (
            settings.short_min_duration - 1e-6
            <= regs[j - 1].end - regs[i].start + pl + pr
            < settings.min_duration - 1e-6
        )

    for i in range(n):
        for j in range(i + 1, n + 1):
            if j > i + 1 and (regs[j - 1].turn or regs[j - 1].start - regs[j - 2].end > settings.max_pause):
                break
            if regs[j - 1].end - regs[i].start >= settings.min_duration:
                break
            bounds = edges(i, j)
            if bounds is None or not fits(i, j):
                continue
            inner = max((regs[k].start - regs[k - 1].end for k in range(i + 1, j)), default=0.0)
            if turns and any(bounds):
                units[(i, j)] = True
            elif sentences and inner < SHORT_PAUSE and not any(bounds):
                units[(i, j)] = False
    return units


def _with_shorts(
    regs: list[Region],
    pads: _Pads,
    settings: SegmentSettings,
    units: dict[tuple[int, int], bool],
    base: list[tuple[int, int]],
) -> tuple[list[tuple[int, int]], set[tuple[int, int]]]:
    """The grouping with the short turns that would otherwise be dropped, and as many stand-alone short
    sentences as ``short_share`` allows; and the short spans kept.

    A short turn (bounded by a change of voice) is kept whenever it would be dropped, outside the share: it
    is a voice's turn, and conversations change voice every few seconds. For the sentences, a bonus is
    searched (bisection) for the most short clips that keep their share of the clips at most ``short_share``
    and drop no more speech than the grouping with the turns alone: first the short sentences that would be
    dropped, then, cut out of longer clips, those whose cut pays most (the longest pauses; a bonus under
    SHORT_TIE ranks the most isolated first, so that equal pauses do not come all at once). When even the
    rescued ones are too many, the longest are kept."""
    min_dur, share = settings.min_duration, settings.short_share
    turns = {span for span, turn in units.items() if turn}
    sentences = [span for span, turn in units.items() if not turn]

    def length(i: int, j: int) -> float:
        pl, pr = pads(i, j)
        return regs[j - 1].end - regs[i].start + pl + pr

    def gaps(span: tuple[int, int]) -> tuple[float, float, int]:
        i, j = span
        before = regs[i].start - (regs[i - 1].end if i > 0 else 0.0)
        after = (regs[j].start if j < len(regs) else pads.duration) - regs[j - 1].end
        return min(before, after), before + after, -i

    rank = {span: k / max(len(sentences), 1) for k, span in enumerate(sorted(sentences, key=gaps))}

    def plan(bonus: float | None) -> tuple[list[tuple[int, int]], set[tuple[int, int]], int, float]:
        """The grouping with the turns, and the sentences at ``bonus`` (None: without them); its short spans,
        its long clips and the speech it drops."""
        costs = {span: 0.0 for span in turns}
        if bonus is not None:
            costs |= {span: bonus + SHORT_TIE * rank[span] for span in sentences}
        bounds = _group(regs, pads, settings, costs)
        shorts = {b for b in bounds if b in costs and length(*b) < min_dur - 1e-6}
        ok = [b in shorts or length(*b) >= min_dur - 1e-6 for b in bounds]
        lost = sum(regs[j - 1].end - regs[i].start for (i, j), kept in zip(bounds, ok, strict=True) if not kept)
        return bounds, shorts, sum(ok) - len(shorts), lost

    def fits(got: tuple[list[tuple[int, int]], set[tuple[int, int]], int, float]) -> bool:
        _, shorts, longs, lost = got
        return len(shorts - turns) <= share * (longs + len(shorts)) + 1e-9 and lost <= base_lost + 1e-6

    with_turns = plan(None) if turns else (base, set[tuple[int, int]](), 0, _lost(regs, base, length, min_dur))
    if not sentences:
        return with_turns[0], with_turns[1]
    base_lost = with_turns[3]
    lo, hi = 0.0, SHORT_COST + 10.0  # past SHORT_COST + 2 * (2 - CUT_PAUSE_REF), every unit that can be is cut out
    best = plan(lo)
    if not fits(best):
        bounds, shorts, longs, _ = best
        ones = shorts - turns
        keep = math.floor(share * (longs + len(shorts) - len(ones)) / (1 - share) + 1e-9)
        return bounds, (shorts & turns) | set(sorted(ones, key=lambda s: (-length(*s), s))[:keep])
    top = plan(hi)
    if fits(top):
        return top[0], top[1]
    while hi - lo > SHORT_TIE / (4 * len(sentences)):
        mid = (lo + hi) / 2
        got = plan(mid)
        lo, hi, best = (mid, hi, got) if fits(got) else (lo, mid, best)
    return best[0], best[1]


def _lost(
    regs: list[Region], bounds: list[tuple[int, int]], length: Callable[[int, int], float], min_dur: float
) -> float:
    """Seconds of speech in the spans of ``bounds`` too short to keep."""
    return sum(regs[j - 1].end - regs[i].start for i, j in bounds if length(i, j) < min_dur - 1e-6)


def _planned(
    regs: list[Region],
    bounds: list[tuple[int, int]],
    pads: _Pads,
    duration: float,
    min_duration: float,
    shorts: Set[tuple[int, int]] = frozenset(),
) -> tuple[list[PlannedSegment], list[PlannedSegment]]:
    """The clips of the region spans, with their pads and flags: (kept, too short); the spans in ``shorts``
    are kept short sentences (flag ``short_sentence``)."""
    n = len(regs)
    kept: list[PlannedSegment] = []
    dropped: list[PlannedSegment] = []
    for i, j in bounds:
        pl, pr = pads(i, j)
        flags = []
        group = regs[i:j]
        if any(r.forced_start or r.forced_end for r in group):
            flags.append("forced_split")
        if group[0].turn or (j < n and regs[j].turn):
            flags.append("speaker_turn")
        if any(group[k + 1].start - group[k].end > MERGED_PAUSE for k in range(len(group) - 1)):
            flags.append("merged")
        short = (i, j) in shorts
        if short:
            flags.append("short_turn" if "speaker_turn" in flags else "short_sentence")
        seg = PlannedSegment(
            start=max(0.0, group[0].start - pl),
            end=min(duration, group[-1].end + pr),
            speech_start=group[0].start,
            speech_end=group[-1].end,
            flags=tuple(flags),
        )
        (kept if short or seg.duration >= min_duration - 1e-6 else dropped).append(seg)
    return kept, dropped


# --------------------------------------------------------------------------- pass 2
def _cut_and_write(
    path: Path,
    plans: list[PlannedSegment],
    ids: list[str],
    out_dir: Path,
    settings: SegmentSettings,
    progress: Progress,
    source: tuple[str, str],
) -> list[ClipRecord]:
    """Pass 2: stream ``path`` at 22050 Hz and write each planned clip; ``source``: (shown path, content hash)."""
    sr = SAMPLE_RATE
    spans = [(int(round(p.start * sr)), int(round(p.end * sr))) for p in plans]
    rows: list[ClipRecord] = []
    k = 0  # next clip to complete
    buf: list[np.ndarray] = []
    offset = 0

    def finish(idx: int, x: np.ndarray) -> None:
        p = plans[idx]
        flags = list(p.flags)
        if audio.clipped_runs(x) > 0:
            flags.append("clipped_input")
        gain = audio.normalization_gain_db(x, settings.target_loudness, settings.peak_limit)
        if audio.rms_dbfs(x) + gain < settings.target_loudness - 0.05:
            flags.append("peak_limited")
        y = (x * np.float32(audio.db_to_gain(gain))).astype(np.float32)
        wav = f"{ids[idx]}.wav"
        audio.write_wav(out_dir / wav, y, sr)
        rows.append(
            ClipRecord(
                id=ids[idx],
                wav=wav,
                source=source[0],
                source_sha256=source[1],
                start=round(p.start, 3),
                end=round(p.start + len(x) / sr, 3),
                duration=round(len(x) / sr, 3),
                sample_rate=sr,
                peak_dbfs=round(audio.peak_dbfs(y), 2),
                loudness_dbfs=round(audio.rms_dbfs(y), 2),
                gain_db=round(gain, 2),
                flags=flags,
            )
        )

    for block in audio.stream_blocks(path, sr=sr, block_seconds=BLOCK_SECONDS):
        b_start, b_end = offset, offset + len(block)
        while k < len(spans):
            s, e = spans[k]
            if s >= b_end:
                break
            buf.append(block[max(s, b_start) - b_start : min(e, b_end) - b_start])
            if e <= b_end:
                finish(k, np.concatenate(buf))
                buf = []
                k += 1
            else:
                break
        offset = b_end
        progress(advance=len(block) / sr)
    if k < len(spans) and buf:  # the file ended early (decoded length rounding)
        finish(k, np.concatenate(buf))
        k += 1
    return rows


# --------------------------------------------------------------------------- driver
def _note_format(info: audio.AudioInfo) -> list[str]:
    notes = []
    if info.sample_rate and info.sample_rate < SAMPLE_RATE:
        notes.append(
            f"{info.sample_rate} Hz source upsampled to {SAMPLE_RATE} Hz: its clips have nothing above "
            f"{info.sample_rate // 2} Hz; a better source gives a better voice"
        )
    if info.channels > 1:
        notes.append(f"{info.channels} channels at {info.sample_rate} Hz downmixed to mono {SAMPLE_RATE} Hz")
    return notes


def _check_space(out_dir: Path, infos: dict[Path, Any], done: Callable[[Path], bool]) -> None:
    """Refuse early when the clips of the sources still to segment (16-bit, 22050 Hz, about their
    length again for the decoded copy) would not fit."""

    todo = sum(i.duration or 0.0 for f, i in infos.items() if isinstance(i, audio.AudioInfo) and not done(f))
    require_free_space(out_dir, todo * SAMPLE_RATE * 2 * 2, "segment")


@stage_lock("segment", after=("fetch",))
def segment_sources(
    settings: SegmentSettings,
    ws: Workspace,
    inputs: Sequence[Path] | None = None,
    force: bool = False,
    progress: Progress = no_progress,
) -> SegmentResult:
    """Segment every source (default: the workspace's raw folder) into clips.

    One bad file never stops the others: it gets ``status="failed"`` and a
    reason. A source whose content hash and settings match its record in
    ``sources.jsonl`` (and whose clips are all on disk) is skipped unless
    ``force``; ``force`` replaces that source's old clips.
    """
    audio.require_ffmpeg()
    files = _plan(ws, inputs)
    ws.segments_dir.mkdir(parents=True, exist_ok=True)
    run = _Run.load(ws, settings, force, progress)
    infos: dict[Path, audio.AudioInfo | XttsftError] = {}
    for f in files:
        try:
            infos[f] = audio.probe(f)
        except XttsftError as exc:
            infos[f] = exc
    total = sum(2 * (i.duration or 0.0) for i in infos.values() if isinstance(i, audio.AudioInfo))
    progress(total=total or None, completed=0)
    _check_space(ws.segments_dir, infos, run.recorded)
    results = [run.source(f, infos[f]) for f in files]
    if not ws.segments_manifest.exists():
        write_records(ws.segments_manifest, ClipRecord, run.manifest)
    return SegmentResult(sources=results, manifest=ws.segments_manifest, segments_dir=ws.segments_dir)


def _plan(ws: Workspace, inputs: Sequence[Path] | None) -> list[Path]:
    """The source files to segment (default: the raw folder); refuses inputs that are missing or hold no file."""
    if inputs is None:
        if not ws.raw_dir.is_dir():
            raise InputError(
                f"No audio to segment: {ws.raw_dir} does not exist.",
                hint="Run `xttsft fetch URL_OR_FILE` first, or pass files: `xttsft segment FILE...`.",
            )
        inputs = [ws.raw_dir]
    for item in inputs:
        if not Path(item).exists():
            raise InputError(f"{item}: no such file or folder.", hint="Check the path.")
    files = find_sources(inputs)
    if not files:
        where = ", ".join(str(i) for i in inputs)
        raise InputError(
            f"No audio files found in {where}.",
            hint="Run `xttsft fetch URL_OR_FILE` first, or pass audio files to `xttsft segment`.",
        )
    return files


@dataclass
class _Run:
    """One :func:`segment_sources` call: the sources' records and the manifest, updated source by source."""

    ws: Workspace
    settings: SegmentSettings
    force: bool
    progress: Progress
    shash: str
    records: dict[str, SourceRecord]  # by the source as shown
    manifest: list[ClipRecord]
    used_stems: dict[str, str]  # clip id stem -> the source that has it
    seen: dict[str, str] = field(default_factory=dict)  # content hash -> the source shown with it

    @classmethod
    def load(cls, ws: Workspace, settings: SegmentSettings, force: bool, progress: Progress) -> _Run:
        records = {r.source: r for r in read_records(ws.segment_sources_file, SourceRecord)}
        return cls(
            ws,
            settings,
            force,
            progress,
            settings_hash(settings),
            records,
            read_records(ws.segments_manifest, ClipRecord),
            {r.stem: r.source for r in records.values() if r.stem is not None},
        )

    def recorded(self, f: Path) -> bool:
        """Whether ``f`` was segmented with these settings (as its record says)."""
        r = self.records.get(_display(f, self.ws.root))
        return r is not None and r.status == "segmented" and r.settings_hash == self.shash

    def source(self, f: Path, info: audio.AudioInfo | XttsftError) -> SourceResult:
        """Segment one source, or say why it is skipped or failed."""
        shown = _display(f, self.ws.root)
        self.progress(description=f"segment {f.name}")
        if isinstance(info, XttsftError):
            res = SourceResult(shown, "failed", reason=_reason(info, f))
            log.warning("%s: %s", shown, res.reason)
            return res
        sha = sha256_file(f)
        skipped = self._skip(shown, sha, info)
        if skipped is not None:
            self.progress(advance=2 * (info.duration or 0.0))
            return skipped
        return self._segment(f, shown, sha, info)

    def _skip(self, shown: str, sha: str, info: audio.AudioInfo) -> SourceResult | None:
        """A skipped result for a copy of an earlier source, or one already segmented with these settings."""
        if sha in self.seen:
            return SourceResult(shown, "skipped", duration=info.duration, reason=f"same content as {self.seen[sha]}")
        self.seen[sha] = shown
        rec = self.records.get(shown)
        if (
            rec is None
            or self.force
            or rec.status != "segmented"
            or rec.source_sha256 != sha
            or rec.settings_hash != self.shash
            or not all((self.ws.segments_dir / f"{i}.wav").is_file() for i in rec.segments)
        ):
            return None
        rows = [r for r in self.manifest if r.source == shown and "recut" not in r.flags]  # screen's, not ours
        shorts = [r for r in rows if "short_sentence" in r.flags]
        return SourceResult(
            shown,
            "skipped",
            segments=len(rows),
            seconds=sum(r.duration for r in rows),
            short=len(shorts),
            short_seconds=sum(r.duration for r in shorts),
            short_turns=sum("short_turn" in r.flags for r in rows),
            duration=info.duration,
            reason="already segmented with these settings (--force redoes it)",
        )

    def _segment(self, f: Path, shown: str, sha: str, info: audio.AudioInfo) -> SourceResult:
        rec = self.records.get(shown)
        stem = rec.stem if rec and rec.stem else _stem(f)
        if self.used_stems.get(stem, shown) != shown:
            stem = f"{stem}-{sha[:8]}"
        self.used_stems[stem] = shown
        res, rows = _segment_one(f, shown, sha, stem, info, self.settings, self.ws, self.progress)
        if res.status == "failed":
            log.warning("%s: %s", shown, res.reason)
        self._commit(
            SourceRecord(
                source=shown,
                source_sha256=sha,
                settings_hash=self.shash,
                stem=stem,
                status="failed" if res.status == "failed" else "segmented",
                reason=res.reason,
                notes=res.notes,
                duration=res.duration,
                segments=sorted(r.id for r in rows),
                dropped=res.dropped,
                date=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            ),
            rows,
        )
        return res

    def _commit(self, record: SourceRecord, rows: list[ClipRecord]) -> None:
        """Replace the source's old clips (a changed file, changed settings or --force) with ``rows``, and
        write the manifest and the source's record."""
        shown, old = record.source, self.records.get(record.source)
        old_ids = set(old.segments) if old else set()
        old_ids |= {r.id for r in self.manifest if r.source == shown}
        for gone in old_ids - set(record.segments):
            (self.ws.segments_dir / f"{gone}.wav").unlink(missing_ok=True)
        self.manifest = [r for r in self.manifest if r.source != shown] + rows
        write_records(self.ws.segments_manifest, ClipRecord, self.manifest)
        self.records[shown] = record
        write_records(self.ws.segment_sources_file, SourceRecord, self.records.values())
        if old and old.source_sha256 != record.source_sha256:  # the file changed: its old windows serve no clip
            if all(r.source_sha256 != old.source_sha256 for r in self.records.values()):
                source_windows_path(self.ws, old.source_sha256).unlink(missing_ok=True)


def _reason(exc: XttsftError, path: Path) -> str:
    msg = exc.message
    prefix = f"{path}: "
    return msg[len(prefix) :] if msg.startswith(prefix) else msg


def _segment_one(
    f: Path,
    shown: str,
    sha: str,
    stem: str,
    info: audio.AudioInfo,
    settings: SegmentSettings,
    ws: Workspace,
    progress: Progress,
) -> tuple[SourceResult, list[ClipRecord]]:
    notes = _note_format(info)
    try:
        an = analyze(f, settings, progress=progress)
        if an.voices is not None and len(an.voices.starts):
            _save_windows(ws, sha, an.voices)  # before the clips: a clip never lacks the windows it came with
        declared = max(info.duration or 0.0, info.header_duration or 0.0)
        if declared and an.duration < 0.98 * declared and declared - an.duration > 0.5:
            notes.append(
                f"truncated: the header says {declared:.1f} s but only {an.duration:.1f} s decode; "
                "used the readable part"
            )
        if an.duration == 0:
            raise InputError(f"{f}: no audio samples could be decoded (truncated?).")
        if not an.regions:
            if an.peak_dbfs < SILENT_DBFS:
                peak = "-inf" if not math.isfinite(an.peak_dbfs) else f"{an.peak_dbfs:.0f}"
                raise InputError(f"{f}: no speech: the file is silent (peak {peak} dBFS).")
            how = "the VAD" if settings.method == "vad" else f"the energy threshold ({settings.silence_threshold:g} dB)"
            raise InputError(f"{f}: no speech found by {how} in {an.duration:.1f} s (noise or music only?).")
        kept, dropped = plan_segments(an.regions, an.duration, settings, an.envelope_db)
        if not kept:
            raise InputError(
                f"{f}: no clip of at least {settings.min_duration:g} s: {len(dropped)} speech piece(s), "
                f"the longest {max(d.duration for d in dropped):.1f} s."
            )
        ids = [f"{stem}_{k:04d}" for k in range(1, len(kept) + 1)]
        rows = _cut_and_write(f, kept, ids, ws.segments_dir, settings, progress, (shown, sha))
    except XttsftError as exc:
        return SourceResult(shown, "failed", duration=info.duration, reason=_reason(exc, f), notes=notes), []
    for note in notes:
        log.warning("%s: %s", shown, note)
    if dropped:
        log.info("%s: dropped %d speech piece(s) shorter than %g s", shown, len(dropped), settings.min_duration)
    shorts = [r for r in rows if "short_sentence" in r.flags]
    return (
        SourceResult(
            shown,
            "segmented",
            segments=len(rows),
            seconds=sum(r.duration for r in rows),
            dropped=len(dropped),
            short=len(shorts),
            short_seconds=sum(r.duration for r in shorts),
            short_turns=sum("short_turn" in r.flags for r in rows),
            duration=an.duration,
            notes=notes,
        ),
        rows,
    )


def _as_dict(results: Iterable[SourceResult]) -> list[dict[str, Any]]:
    return [asdict(r) for r in results]
