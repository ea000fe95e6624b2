"""The speaker-turn corpus (issue 22): two real voices (the pyannote.audio sample's telephone speakers),
two espeak-ng voices, music and noise, in turns of 2.4-7.6 s (xttsft.conversation). Recall and purity are
measured in seconds of each voice's turns, against the clips the screen keeps.

Measured here (docs/screen.md): the main espeak voice as the target, and with --speaker-ref, keeps 100% of
its seconds at 100% purity; each real speaker with --speaker-ref keeps 94-98% of its seconds in turns of at
least 5 s at 100% purity (before issue 22: 41-48%, the clips mixed both speakers), and 96-99% of all its
seconds now that short turns are clips, a pause just after a change inside speech is not taken for one, and
a change just past a pause is placed by side similarity (56-63% with none, 79-89% with short turns only);
the espeak host, 2.4 and 3.2 s, keeps both turns."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from xttsft.conversation import DIANE, HOST, MAIN, REAL_LED, SHEILA, Conversation, make_conversation
from xttsft.data.screen import screen_clips
from xttsft.data.segment import segment_sources
from xttsft.paths import Workspace
from xttsft.records import ClipRecord, ScreenRecord, read_records
from xttsft.settings import ScreenSettings, SegmentSettings

ROOT = Path(__file__).resolve().parents[1]
VOICES = ROOT / "tests" / ".voices"


@pytest.fixture(scope="module")
def conversation(tmp_path_factory) -> Conversation:
    wav = VOICES / "pyannote_sample.wav"
    if not wav.is_file():  # `make test` fetched it already; a bare pytest fetches it here
        res = subprocess.run(
            ["bash", str(ROOT / "scripts" / "test_voices.sh"), str(VOICES)],
            capture_output=True,
            text=True,
            cwd=ROOT,
            env={**os.environ, "PY": sys.executable},
        )
        if res.returncode == 3:
            pytest.skip(f"the real test voices could not be downloaded (no package registry): {res.stderr[-300:]}")
        assert res.returncode == 0, res.stderr
    return make_conversation(wav, tmp_path_factory.mktemp("conversation"))


def _segmented(root: Path, source: Path, turns: bool) -> Workspace:
    ws = Workspace(root).ensure()
    shutil.copy(source, ws.raw_dir)
    segment_sources(SegmentSettings(speaker_turns=turns), ws)
    return ws


def _kept(ws: Workspace, ref: Path | None = None) -> list[tuple[float, float]]:
    screen_clips(ScreenSettings(speaker_refs=[str(ref)] if ref else []), ws, force=True)
    return [(d.start or 0.0, d.end or 0.0) for d in read_records(ws.screen_file, ScreenRecord) if d.status == "kept"]


@pytest.fixture(scope="module")
def turned(conversation: Conversation, tmp_path_factory) -> Workspace:
    return _segmented(tmp_path_factory.mktemp("turned"), conversation.recording, turns=True)


def test_the_target_keeps_its_turns_and_only_them(conversation: Conversation, turned: Workspace) -> None:
    for ref in (None, conversation.references[MAIN]):
        score = conversation.score(_kept(turned, ref), MAIN)
        assert score["recall"] >= 0.95 and score["purity"] >= 0.95, (ref, score)
    clips = read_records(turned.segments_manifest, ClipRecord)
    turns = conversation.turns
    for u, v in zip(turns, turns[1:], strict=False):  # a change of voice in a pause of 0.1 s or more is a cut
        if v.start - u.end >= 0.1 and u.voice != v.voice:
            across = [c.id for c in clips if c.start < u.end - 0.3 and c.end > v.start + 0.3]
            assert not across, (u.voice, u.end, v.voice, v.start, across)


def test_speaker_ref_keeps_every_long_turn_of_each_real_voice(conversation: Conversation, turned: Workspace) -> None:
    for voice in (DIANE, SHEILA):
        kept = _kept(turned, conversation.references[voice])
        score = conversation.score(kept, voice, min_turn=5.0)
        assert score["recall"] >= 0.9 and score["purity"] >= 0.95, (voice, score)
        # its short turns (3.8-4.0 s) too, as short clips: 0.56-0.63 of all its seconds before they were kept,
        # 0.785 for speaker90 while its pause 1.5 s after a change inside speech was taken for a change,
        # 0.894 for speaker91 while its last 0.57 s (a change to the main voice with no pause) went with the
        # change into its pause before them (measured 0.988 and 0.964)
        every = conversation.score(kept, voice)
        assert every["recall"] >= 0.93 and every["speech_recall"] >= 0.93, (voice, every)


def test_the_voice_with_only_short_turns_keeps_them(conversation: Conversation, turned: Workspace) -> None:
    """The espeak host speaks twice, 2.4 s and 3.2 s. The 2.8 s clip of its first turn scored DNSMOS BAK 2.66
    once, under the 2.8 bar: DNSMOS loops a clip that short to fill 9 s, and where the loop starts moved that
    score from 2.59 to 3.10. A short clip near a bar is judged on the mean of 4 loop starts (8: 2.93): both turns
    are kept."""
    score = conversation.score(_kept(turned, conversation.references[HOST]), HOST)
    assert score["recall"] >= 0.9 and score["purity"] >= 0.95, score


def test_a_real_voice_picked_as_the_target_keeps_its_turns(conversation: Conversation, tmp_path: Path) -> None:
    """speaker90 leads a 30 s conversation: the screen picks it without a reference and keeps its turns, and
    only them: segment cuts at its change to speaker91 in a 0.6 s pause (GE2E put the two telephone speakers
    0.7-0.8 apart, above every threshold that holds for one voice, and their clip was kept whole: purity 0.77;
    CAM++ puts them at 0.50-0.63)."""
    del conversation  # the fixture fetched the real voices
    conv = make_conversation(VOICES / "pyannote_sample.wav", tmp_path / "led", script=REAL_LED)
    ws = _segmented(tmp_path / "ws", conv.recording, turns=True)
    kept = _kept(ws)
    score = conv.score(kept, DIANE)
    assert score["recall"] >= 0.95 and score["purity"] >= 0.95, score
    for other in (MAIN, HOST):
        assert conv.score(kept, other)["recall"] == 0.0, other


def test_a_mixed_clip_is_recut_and_what_was_lost_is_reported(conversation: Conversation, tmp_path: Path) -> None:
    """Without turn cuts (segment as before issue 22), three clips mix the main voice with another: the screen
    keeps the main voice's part of each as a new clip instead of dropping it whole."""
    ws = _segmented(tmp_path, conversation.recording, turns=False)
    score = conversation.score(_kept(ws), MAIN)
    assert score["recall"] >= 0.95 and score["purity"] >= 0.95, score
    decisions = read_records(ws.screen_file, ScreenRecord)
    recut = [d for d in decisions if d.recut is not None]
    assert recut and all(d.status == "dropped" and d.reason == "mixed_speakers" for d in recut)
    manifest = {r.id: r for r in read_records(ws.segments_manifest, ClipRecord)}
    for d in recut:
        assert d.recut is not None
        new = manifest[d.recut.clip]
        assert "recut" in new.flags and (ws.segments_dir / new.wav).is_file()
        assert [new.start, new.end] == d.recut.kept and d.recut.dropped and d.recut.why
        assert new.end - new.start >= 5.0 - 1e-6
    stats = json.loads(ws.screen_stats.read_text())
    assert stats["recut"] == len(recut) and stats["lost_seconds"] >= 0.0
    again = screen_clips(ScreenSettings(), ws)  # a re-run: nothing re-decided, the recut clips stay
    assert again.unchanged and again.recut == len(recut)
    assert {r.id for r in read_records(ws.segments_manifest, ClipRecord)} == set(manifest)


def test_one_voice_loses_nothing(conversation: Conversation, tmp_path: Path) -> None:
    ws = _segmented(tmp_path, conversation.references[MAIN], turns=True)
    clips = read_records(ws.segments_manifest, ClipRecord)
    res = screen_clips(ScreenSettings(), ws)
    kept = sum(d.duration or 0.0 for d in read_records(ws.screen_file, ScreenRecord) if d.status == "kept")
    assert kept >= 0.98 * sum(c.duration for c in clips), res.dropped
    assert res.recut == 0 and not res.lost


def test_speech_recall_counts_the_frames_that_can_hold_words(conversation: Conversation) -> None:
    """``speech_recall`` counts a voice's loud frames, not its pauses: every turn kept whole is 1.0 either way;
    one turn of two holds a different share of the speech than of the seconds."""
    mine = [t for t in conversation.turns if t.voice == DIANE]
    whole = conversation.score([(t.start, t.end) for t in mine], DIANE)
    assert whole["recall"] == pytest.approx(1.0) and whole["speech_recall"] == pytest.approx(1.0)
    assert conversation.score([], DIANE)["speech_recall"] == 0.0
    part = conversation.score([(mine[0].start, mine[0].end)], DIANE)
    assert 0.0 < part["speech_recall"] < 1.0 and part["speech_recall"] != pytest.approx(part["recall"], abs=1e-3)
