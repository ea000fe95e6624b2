"""The page of xttsft serve in a real headless Chromium (Debian's package, driven by Playwright
through executable_path): pick a voice, play a sentence, and check that audio arrived and played.

The server is real uvicorn on 127.0.0.1 with the tiny random XTTS of a run made by make_run.
XTTSFT_UPDATE_SCREENSHOT=1 also copies the screenshot to docs/img/serve-page.png (the README's).
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from synth_helpers import make_dataset, make_run
from xttsft.paths import Workspace

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--no-sandbox",
    "--headless",
    "--disable-gpu",
    "--autoplay-policy=no-user-gesture-required",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(autouse=True)
def _no_serve_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith("SERVE_"):
            monkeypatch.delenv(key, raising=False)


@pytest.fixture(scope="module")
def page_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    import httpx2

    from xttsft.settings import ServeSettings, SynthSettings
    from xttsft.voice.serve.api import create_app
    from xttsft.voice.serve.background import BackgroundServer
    from xttsft.voice.serve.speaker import load_xtts_speaker

    ws = Workspace(tmp_path_factory.mktemp("page") / "ws")
    make_dataset(ws)
    make_run(ws)
    serve = ServeSettings(stream_chunk_size=0)
    synth = SynthSettings(max_audio_tokens=8, num_references=1, device="cpu")
    app = create_app(
        serve, lambda: load_xtts_speaker(serve, synth, ws, "run1", default_base="tiny"), sentence_pause=0.1
    )
    with BackgroundServer(app) as srv:
        deadline = time.monotonic() + 180
        while httpx2.get(srv.url + "/readyz").status_code != 200:
            assert time.monotonic() < deadline, "the server did not become ready"
            time.sleep(0.2)
        yield srv.url


def test_the_page_plays_a_sentence_as_it_streams(page_server: str, tmp_path: Path) -> None:
    if not Path(CHROMIUM).is_file():
        pytest.fail("chromium is not installed; `make test` installs it (scripts/install-system-deps.sh)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 900, "height": 820})
            page.goto(page_server + "/")
            page.wait_for_function("window.xttsft.state === 'ready'", timeout=30_000)
            assert page.locator("#voice option").all_text_contents()[0].startswith("run1")
            page.fill("#text", "Hello from the page. This sentence streams as it is spoken. And a third one.")
            page.fill("#speed", "2")
            page.click("#play")
            page.wait_for_function("['done', 'error'].includes(window.xttsft.state)", timeout=120_000)
            stats = page.evaluate("window.xttsft")
            shot = tmp_path / "serve-page.png"
            page.screenshot(path=str(shot), full_page=True)
        finally:
            browser.close()
    assert stats["error"] is None and stats["state"] == "done", stats
    # the random GPT may stop a sentence early: the length varies, never below the 0.1 s pause
    assert stats["bytes"] >= 4800 and stats["scheduledS"] >= 0.1, stats
    assert 0 < stats["ttfaMs"] < stats["lastMs"], stats  # audio arrived before the last sentence was spoken
    assert stats["playedS"] > 0.5 * stats["scheduledS"], stats  # the AudioContext's clock ran: it played
    assert shot.stat().st_size > 10_000
    if os.environ.get("XTTSFT_UPDATE_SCREENSHOT"):
        target = Path(__file__).resolve().parents[1] / "docs" / "img" / "serve-page.png"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, target)
