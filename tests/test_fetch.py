"""fetch: real yt-dlp against a local HTTP server on 127.0.0.1, and local imports."""

from __future__ import annotations

import functools
import http.server
import json
import os
import re
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from xttsft.data.fetch import fetch, read_source_list
from xttsft.paths import Workspace
from xttsft.settings import FetchSettings


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:  # keep test output clean
        pass


class _QuietServer(http.server.ThreadingHTTPServer):
    def handle_error(self, request: object, client_address: object) -> None:
        """A client that hangs up early (yt-dlp probing) must not print a traceback
        into the output of the CLI run that the test inspects."""


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, speak) -> Iterator[str]:
    """A local web site: speech.wav, a page with <audio>, a page without media."""
    root = tmp_path_factory.mktemp("site")
    speak("Hello from the local test server.", root / "speech.wav")
    speak("This one is embedded in a web page.", root / "talk.wav")
    (root / "page.html").write_text(
        '<html><head><title>My talk</title></head><body><audio src="talk.wav"></audio></body></html>'
    )
    (root / "nomedia.html").write_text("<html><head><title>Nothing</title></head><body>text only</body></html>")
    (root / "noise.mp3").write_bytes(os.urandom(200_000))  # an "audio" URL that serves no audio
    shutil.copyfile(root / "speech.wav", root / ".._.._evil.wav")  # a name that yt-dlp keeps with leading dots
    speak("The first talk.", root / "a" / "talk.wav")  # two URLs, one file name
    speak("A second, different talk.", root / "b" / "talk.wav")
    server = _QuietServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


def _settings(**kw: object) -> FetchSettings:
    return FetchSettings(**{"retries": 0, "socket_timeout": 5, **kw})


def test_downloads_media_and_page_reports_failures_and_skips_on_rerun(site: str, workspace) -> None:
    sources = [
        f"{site}/speech.wav",
        f"{site}/page.html",
        f"{site}/missing.mp3",
        f"{site}/nomedia.html",
        f"--exec=touch {workspace.root.parent / 'pwned'}",
    ]
    res = fetch(sources, _settings(), workspace)
    by = {(i.source, i.status) for i in res.items}
    assert (f"{site}/speech.wav", "fetched") in by
    assert (f"{site}/page.html", "fetched") in by
    failed = {i.source: i.reason for i in res.items if i.status == "failed"}
    assert "HTTP Error 404" in failed[f"{site}/missing.mp3"]
    assert "Unsupported URL" in failed[f"{site}/nomedia.html"]
    assert "option" in failed[sources[-1]]
    assert not (workspace.root.parent / "pwned").exists()

    # files named by id (a direct link's id: its name and a digest of the URL), with a sidecar JSON
    wav = Path(next(i.path for i in res.items if i.source == f"{site}/speech.wav"))
    assert wav.parent == workspace.raw_dir and wav.name.startswith("speech-") and wav.suffix == ".wav"
    assert wav.is_file() and wav.stat().st_size > 1000
    side = json.loads(wav.with_suffix(".json").read_text())
    assert side["url"] == f"{site}/speech.wav" and side["title"] == "speech" and side["duration"] > 1
    page_files = [Path(i.path) for i in res.items if i.source.endswith("page.html") and i.path]
    assert page_files and page_files[0].is_file()
    assert json.loads(page_files[0].with_suffix(".json").read_text())["title"].startswith("My talk")
    assert workspace.download_archive.is_file()

    mtime = wav.stat().st_mtime_ns
    again = fetch([f"{site}/speech.wav", f"{site}/page.html"], _settings(), workspace)
    assert [i.status for i in again.items] == ["present", "present"]
    assert wav.stat().st_mtime_ns == mtime


def test_quality_64k_gives_mp3(site: str, workspace) -> None:
    res = fetch([f"{site}/speech.wav"], _settings(quality="64k"), workspace)
    (item,) = res.items
    assert item.status == "fetched" and item.path.endswith(".mp3")
    from xttsft.audio import probe

    assert probe(item.path).codec == "mp3"


def test_network_error_has_hint(workspace) -> None:
    # a port nobody listens on: connection refused, like being offline
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    res = fetch([f"http://127.0.0.1:{port}/a.mp3"], _settings(), workspace)
    (item,) = res.items
    assert item.status == "failed" and "refused" in item.reason.lower()
    assert item.hint and "network" in item.hint.lower()
    assert not res.ok


def test_local_import(tmp_path: Path, workspace, speak) -> None:
    src = tmp_path / "in"
    speak("One local file.", src / "a.wav")
    (src / "sub").mkdir()
    speak("Another one.", src / "sub" / "b.wav")
    (src / "notes.txt").write_text("not audio")
    (src / "empty.mp3").write_bytes(b"")
    res = fetch([str(src)], _settings(), workspace)
    status = {Path(i.source).name: (i.status, i.reason) for i in res.items}
    assert status["a.wav"][0] == "fetched" and status["b.wav"][0] == "fetched"
    assert status["notes.txt"][0] == "skipped" and "not a supported audio format" in status["notes.txt"][1]
    assert status["empty.mp3"] == ("skipped", "empty file (0 bytes)")
    assert (workspace.raw_dir / "a.wav").read_bytes() == (src / "a.wav").read_bytes()
    again = fetch([str(src / "a.wav")], _settings(), workspace)
    assert again.items[0].status == "present"


def test_source_list(tmp_path: Path) -> None:
    f = tmp_path / "list.txt"
    f.write_text("# my sources\n\nhttps://example.org/a\n  /data/b.wav  \n")
    assert read_source_list(f) == ["https://example.org/a", "/data/b.wav"]


def test_cli_summary_and_exit_codes(site: str, cli, tmp_path: Path) -> None:
    lst = tmp_path / "sources.txt"
    lst.write_text(f"# test\n{site}/speech.wav\n{site}/missing.mp3\n--exec=echo hi\n")
    r = cli("fetch", "--from-file", str(lst), "--retries", "0")
    assert r.exit_code == 2, r.output  # some sources failed
    assert "fetched 1, skipped 0, failed 2" in r.output
    assert "HTTPError404" in re.sub(r"[\s│]", "", r.output) and "option" in r.output

    r = cli("fetch", "--retries", "0", "--", f"{site}/missing.mp3", "--exec=echo hi")
    assert r.exit_code == 1
    assert "Nothing could be fetched" in r.output

    r = cli("fetch", "--retries", "0", f"{site}/speech.wav")
    assert r.exit_code == 0 and "fetched 0, skipped 1, failed 0" in r.output

    r = cli("fetch")
    assert r.exit_code == 1 and "No source given" in r.output


def test_downloaded_non_audio_fails_and_is_tried_again(site: str, workspace) -> None:
    res = fetch([f"{site}/noise.mp3"], _settings(), workspace)
    (item,) = res.items
    assert item.status == "failed" and "not audio" in item.reason, item
    assert not list(workspace.raw_dir.glob("noise*")), "the bytes are not kept as audio"
    archived = workspace.download_archive.read_text() if workspace.download_archive.exists() else ""
    assert "noise" not in archived, "a failed download is not archived: the next run tries it again"
    again = fetch([f"{site}/noise.mp3"], _settings(), workspace)
    assert again.items[0].status == "failed" and "not audio" in again.items[0].reason


def test_imported_non_audio_fails(tmp_path: Path, workspace) -> None:
    fake = tmp_path / "zeros.mp3"
    fake.write_bytes(bytes(300_000))
    (item,) = fetch([str(fake)], _settings(), workspace).items
    assert item.status == "failed" and "not audio" in item.reason
    assert not list(workspace.raw_dir.glob("zeros*"))


def test_file_url_points_to_import_by_path(workspace, tmp_path: Path) -> None:
    (item,) = fetch([f"file://{tmp_path}/talk.mp3"], _settings(), workspace).items
    assert item.status == "failed" and "file://" in item.reason
    assert "--enable-file-urls" not in (item.reason + (item.hint or "")) and "by their path" in item.hint


def test_hidden_names_become_visible(site: str, workspace, tmp_path: Path, speak) -> None:
    (item,) = fetch([f"{site}/.._.._evil.wav"], _settings(), workspace).items
    assert item.status == "fetched", item
    path = Path(item.path)
    assert path.parent == workspace.raw_dir and not path.name.startswith(".") and path.is_file()
    local = speak("A hidden local file.", tmp_path / ".secret-talk.wav")
    (imp,) = fetch([str(local)], _settings(), workspace).items
    assert imp.status == "fetched" and Path(imp.path).name == "secret-talk.wav"


def test_two_urls_with_one_file_name_are_both_kept(site: str, workspace) -> None:
    """yt-dlp's generic extractor takes the file name as the id: the archive must still tell them apart."""
    urls = [f"{site}/a/talk.wav", f"{site}/b/talk.wav"]
    res = fetch(urls, _settings(), workspace)
    assert [(i.source, i.status) for i in res.items] == [(u, "fetched") for u in urls], res.items
    a, b = (Path(i.path) for i in res.items)
    assert a != b and a.parent == b.parent == workspace.raw_dir and a.is_file() and b.is_file()
    assert a.read_bytes() != b.read_bytes()
    assert [json.loads(p.with_suffix(".json").read_text())["source"] for p in (a, b)] == urls
    again = fetch(urls, _settings(), workspace)
    assert [i.status for i in again.items] == ["present", "present"], again.items

    # kept under the bare name by an earlier version: still done, and the other URL still fetched
    old = Workspace(workspace.root.parent / "old")
    old.raw_dir.mkdir(parents=True)
    shutil.copyfile(a, old.raw_dir / "talk.wav")
    (old.raw_dir / "talk.json").write_text(json.dumps({"id": "talk", "extractor": "Generic", "source": urls[0]}))
    old.download_archive.write_text("generic talk\n")
    res = fetch(urls, _settings(), old)
    assert [i.status for i in res.items] == ["present", "fetched"], res.items


def test_cli_partial_failure_exits_2(site: str, cli) -> None:
    r = cli("fetch", "--retries", "0", f"{site}/speech.wav", f"{site}/missing.mp3", f"{site}/nomedia.html")
    assert r.exit_code == 2, r.output
    flat = " ".join(r.output.split())
    cells = re.sub(r"[\s│]", "", r.output)  # table cells unfolded
    assert "fetched 1, skipped 0, failed 2" in r.output and "HTTPError404" in cells  # the table is still printed
    assert "2 of 3 sources failed" in flat
    # each reason once: in the table, not again as a warning ("404" alone also matches a port such as 40405)
    assert cells.count("HTTPError404") == 1, r.output
    assert "…" not in r.output  # URLs whole (folded where narrow), never cut with an ellipsis
