"""``fetch``: download audio with yt-dlp, or import local audio files, into ``train/data/raw/``.

* **URLs** (a video, playlist or channel; anything yt-dlp supports) go through
  yt-dlp's Python API, never a shell: best audio stream, extracted by ffmpeg
  (``FFmpegExtractAudio``) at the chosen quality, saved as ``<id>.<ext>`` with a
  sidecar ``<id>.json`` (title, uploader, duration, URL). yt-dlp's download
  archive (``raw/.download-archive.txt``) makes re-runs skip what is there.
  yt-dlp's generic extractor (a direct link, a page with ``<audio>``) takes the
  file name as the id, so ``a/talk.wav`` and ``b/talk.wav`` would share one
  archive line and one file: its ids get a digest of the URL (``talk-1a2b3c4d``).
  Each failed item is reported with yt-dlp's reason; the others go on.
* **Local files and folders** (MP3, WAV, M4A, OGG, OPUS, FLAC, WEBM) are
  hard-linked (or copied) into the raw folder. Other files are skipped with a
  reason, and so are empty ones.
* A source that looks like a command-line option (``--exec=...``) is refused: it
  is never handed to yt-dlp.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

from xttsft import audio
from xttsft.errors import InputError
from xttsft.io import atomic_path, atomic_write_json, atomic_write_text, sha256_file
from xttsft.locks import stage_lock
from xttsft.paths import Workspace
from xttsft.progress import Progress, no_progress
from xttsft.settings import FetchSettings

__all__ = ["FetchItem", "FetchResult", "fetch", "read_source_list", "ytdlp_options"]

log = logging.getLogger(__name__)

Status = Literal["fetched", "present", "skipped", "failed"]

_URL_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")
_NETWORK_MARKERS = (
    "Errno",
    "timed out",
    "Name or service not known",
    "Temporary failure in name resolution",
    "Connection refused",
    "Network is unreachable",
    "getaddrinfo",
    "Connection reset",
    "No route to host",
)
NETWORK_HINT = "Check the network connection (offline? import local files instead: `xttsft fetch FILE_OR_FOLDER`)."


@dataclass
class FetchItem:
    """One fetched, present (already there), skipped or failed item."""

    source: str  # the URL or path as given
    status: Status
    path: str | None = None  # the file in the raw folder
    title: str | None = None
    reason: str | None = None
    hint: str | None = None


@dataclass
class FetchResult:
    items: list[FetchItem] = field(default_factory=list)
    raw_dir: Path | None = None
    sources: int = 0  # how many sources were given
    failed_sources: list[str] = field(default_factory=list)  # those with a failed item

    def count(self, status: Status) -> int:
        return sum(1 for i in self.items if i.status == status)

    @property
    def ok(self) -> bool:
        """True when anything usable is in the raw folder: fetched now or already present."""
        return any(i.status in ("fetched", "present") for i in self.items)


def read_source_list(path: Path) -> list[str]:
    """Sources from a text file: one per line; blank lines and ``#`` comments are ignored."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file.", hint="Give --from-file a text file with one URL or path per line.")
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            out.append(line)
    return out


# --------------------------------------------------------------------------- local files


def visible_name(name: str) -> str:
    """``name`` without leading dots or dashes: a raw file must not be hidden (segment skips dot
    files) or read as an option. ``.._.._evil.mp3`` -> ``evil.mp3``."""
    stem, dot, ext = name.rpartition(".") if "." in name.lstrip(".") else (name, "", "")
    clean = stem.lstrip(".-_") or "audio"
    return f"{clean}{dot}{ext}"


def _make_visible(fp: Path) -> Path:
    """Rename a downloaded file (and nothing else) whose name would hide it."""
    name = visible_name(fp.name)
    if name == fp.name:
        return fp
    dest = fp.with_name(name)
    if dest.exists():
        dest = fp.with_name(f"{Path(name).stem}-{sha256_file(fp)[:8]}{fp.suffix}")
    os.replace(fp, dest)
    return dest


def _probe_audio(path: Path) -> tuple[audio.AudioInfo | None, str | None]:
    """ffprobe's description of ``path``, or why it is not audio ffprobe can read."""
    try:
        info = audio.probe(path)
    except InputError as exc:  # not MissingDependencyError: without ffprobe nothing is "not audio"
        return None, exc.message.split(": ", 1)[-1].rstrip(".")
    if not info.duration:
        return None, "not audio: ffprobe measures no duration in it"
    return info, None


def _forget_download(archive: Path, info: dict[str, Any]) -> None:
    """Take ``info``'s line out of yt-dlp's download archive, so the next run fetches it again."""
    key = f"{str(info.get('extractor_key') or info.get('extractor') or '').lower()} {info.get('id')}"
    try:
        lines = archive.read_text(encoding="utf-8").splitlines()
    except OSError:
        return
    kept = [ln for ln in lines if ln.strip() != key]
    if len(kept) != len(lines):
        atomic_write_text(archive, "".join(f"{ln}\n" for ln in kept))


def _unique_generic_id(info: dict[str, Any], raw_dir: Path) -> dict[str, Any]:
    """Give a generic-extractor download an id of its own: the name plus a digest of the URL.

    That id is the archive line and the file name. A download kept under the bare name by an
    earlier version (its sidecar names this URL, its line is in the archive) still counts as done.
    """
    if str(info.get("extractor_key") or "").lower() != "generic" or not info.get("id"):
        return info
    url = str(info.get("webpage_url") or info.get("original_url") or info.get("url") or "")
    digest = hashlib.sha256(url.encode("utf-8")).hexdigest()[:8]
    bare = str(info["id"])
    if bare.endswith(f"-{digest}"):
        return info
    info = {**info, "id": f"{bare}-{digest}"}
    if any(_sidecar_of(p, bare, url) for p in raw_dir.glob("*.json")):
        info["_old_archive_ids"] = [*(info.get("_old_archive_ids") or []), f"generic {bare}"]
    return info


def _sidecar_of(path: Path, bare_id: str, url: str) -> bool:
    try:
        side = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return (
        isinstance(side, dict)
        and str(side.get("extractor")).lower() == "generic"
        and side.get("id") == bare_id
        and url in (side.get("url"), side.get("source"))
    )


def _import_file(src: Path, raw_dir: Path, shown: str) -> FetchItem:
    ext = src.suffix.lower()
    if ext not in audio.AUDIO_EXTENSIONS:
        return FetchItem(
            shown,
            "skipped",
            reason=(
                f"not a supported audio format ({ext or 'no extension'}); "
                f"supported: {', '.join(sorted(e[1:].upper() for e in audio.AUDIO_EXTENSIONS))}"
            ),
        )
    if src.stat().st_size == 0:
        return FetchItem(shown, "skipped", reason="empty file (0 bytes)")
    _, not_audio = _probe_audio(src)
    if not_audio:
        return FetchItem(
            shown,
            "failed",
            reason=not_audio,
            hint="Import audio files (the extension alone is not enough), or convert this one with ffmpeg.",
        )
    dest = raw_dir / visible_name(src.name)
    if dest.exists():
        if dest.resolve() == src.resolve() or dest.samefile(src):
            return FetchItem(shown, "present", path=str(dest), reason="already in the raw folder")
        sha = sha256_file(src)
        if sha256_file(dest) == sha:
            return FetchItem(shown, "present", path=str(dest), reason="already imported (same content)")
        dest = raw_dir / visible_name(f"{src.stem}-{sha[:8]}{src.suffix}")
        if dest.exists():
            return FetchItem(shown, "present", path=str(dest), reason="already imported (same content)")
    with atomic_path(dest) as tmp:
        try:  # a hard link costs no space; across file systems, copy
            tmp.unlink()
            os.link(src, tmp)
            how = "linked"
        except OSError:
            shutil.copyfile(src, tmp)
            how = "copied"
    log.debug("%s %s -> %s", how, src, dest)
    return FetchItem(shown, "fetched", path=str(dest), title=src.stem, reason=how)


def _import_local(src: Path, raw_dir: Path) -> list[FetchItem]:
    if src.is_dir():
        files = sorted(
            p
            for p in src.rglob("*")
            if p.is_file() and not any(part.startswith(".") for part in p.relative_to(src).parts)
        )
        if not files:
            return [FetchItem(str(src), "skipped", reason="empty folder")]
        return [_import_file(p, raw_dir, str(p)) for p in files]
    return [_import_file(src, raw_dir, str(src))]


# --------------------------------------------------------------------------- yt-dlp
class _YtdlpLogger:
    """yt-dlp's messages go to our logging (never to stdout); errors are kept for the summary."""

    def __init__(self) -> None:
        self.errors: list[str] = []
        self.archived: list[str] = []

    def debug(self, msg: str) -> None:
        if "has already been recorded in the archive" in msg:
            self.archived.append(msg.split("]", 1)[-1].split(" has already")[0].strip())
        log.debug("yt-dlp: %s", msg)

    def info(self, msg: str) -> None:
        self.debug(msg)

    def warning(self, msg: str) -> None:
        if "Falling back on generic information extractor" in msg:
            log.debug("yt-dlp: %s", msg)
        else:
            log.warning("yt-dlp: %s", msg)

    def error(self, msg: str) -> None:
        log.debug("yt-dlp: %s", msg)
        self.errors.append(_clean_error(msg))


def _clean_error(msg: str) -> str:
    msg = re.sub(r"\x1b\[[0-9;]*m", "", msg).strip()
    msg = re.sub(r"^ERROR:\s*", "", msg)
    msg = re.sub(r"\s*\(caused by .*\)\s*$", "", msg)
    return msg.splitlines()[0] if msg else "unknown yt-dlp error"


def ytdlp_options(settings: FetchSettings, raw_dir: Path, archive: Path) -> dict[str, Any]:
    """The yt-dlp options ``fetch`` uses (audio only, named by id, archive, bounded retries)."""
    if settings.quality == "best":
        pp = {"key": "FFmpegExtractAudio", "preferredcodec": "best"}
    else:
        pp = {"key": "FFmpegExtractAudio", "preferredcodec": "mp3", "preferredquality": settings.quality.rstrip("k")}
    return {
        "format": "bestaudio/best",
        "outtmpl": {"default": str(raw_dir / "%(id)s.%(ext)s")},
        "restrictfilenames": True,
        "postprocessors": [pp],
        "download_archive": str(archive),
        "noplaylist": not settings.playlist,
        "retries": settings.retries,
        "fragment_retries": settings.retries,
        "extractor_retries": settings.retries,
        "file_access_retries": settings.retries,
        "socket_timeout": settings.socket_timeout,
        "ignoreerrors": True,  # one bad playlist item must not stop the others
        "quiet": True,
        "no_warnings": False,
        "noprogress": True,
        "color": {"stdout": "never", "stderr": "never"},
        "overwrites": False,
        "writeinfojson": False,
    }


def _download(url: str, settings: FetchSettings, ws: Workspace) -> list[FetchItem]:
    import yt_dlp
    from yt_dlp.postprocessor import PostProcessor

    logger = _YtdlpLogger()
    done: list[dict[str, Any]] = []

    def on_pp(d: dict[str, Any]) -> None:
        if d.get("status") == "finished" and d.get("postprocessor") == "MoveFiles":
            done.append(d["info_dict"])

    class UniqueGenericId(PostProcessor):
        def run(self, info: dict[str, Any]) -> tuple[list[str], dict[str, Any]]:
            return [], _unique_generic_id(info, ws.raw_dir)

    opts = ytdlp_options(settings, ws.raw_dir, ws.download_archive)
    opts["logger"] = logger
    opts["postprocessor_hooks"] = [on_pp]
    try:
        with yt_dlp.YoutubeDL(opts) as ydl:
            ydl.add_post_processor(UniqueGenericId(ydl), when="pre_process")  # before the archive is asked
            ydl.extract_info(url, download=True)
    except yt_dlp.utils.DownloadError as exc:  # raised despite ignoreerrors for some failures
        logger.errors.append(_clean_error(str(exc)))
    except Exception as exc:  # noqa: BLE001 - a broken extractor must not stop the other sources
        logger.errors.append(f"yt-dlp failed: {type(exc).__name__}: {exc}")
    items: list[FetchItem] = []
    for info in done:
        if not info.get("filepath") or not Path(info["filepath"]).is_file():
            items.append(
                FetchItem(url, "failed", title=info.get("title"), reason="yt-dlp reported no audio file for this item")
            )
            continue
        fp = Path(info["filepath"])
        info_audio, not_audio = _probe_audio(fp)
        if not_audio or info_audio is None:  # an HTML error page, zeros, a broken stream: never archived as done
            fp.unlink(missing_ok=True)
            _forget_download(ws.download_archive, info)
            items.append(
                FetchItem(
                    url,
                    "failed",
                    title=info.get("title"),
                    reason=f"the download is {not_audio}",
                    hint="Check the URL in a browser; the next run tries it again.",
                )
            )
            continue
        fp = _make_visible(fp)
        duration = info.get("duration") or info_audio.duration
        sidecar = {
            "id": info.get("id"),
            "title": info.get("title"),
            "uploader": info.get("uploader"),
            "duration": duration,
            "url": info.get("webpage_url") or info.get("original_url") or url,
            "source": url,
            "extractor": info.get("extractor_key") or info.get("extractor"),
            "file": fp.name,
            "fetched_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        atomic_write_json(fp.with_suffix(".json"), sidecar)
        items.append(FetchItem(url, "fetched", path=str(fp), title=info.get("title")))
    for vid in logger.archived:
        items.append(FetchItem(url, "present", title=vid, reason="already downloaded (in the download archive)"))
    for err in dict.fromkeys(logger.errors):
        hint = NETWORK_HINT if any(m in err for m in _NETWORK_MARKERS) else None
        items.append(FetchItem(url, "failed", reason=err, hint=hint))
    if not items:
        items.append(FetchItem(url, "failed", reason="yt-dlp found nothing to download at this URL"))
    return items


# --------------------------------------------------------------------------- driver
@stage_lock("fetch")
def fetch(
    sources: Sequence[str],
    settings: FetchSettings,
    ws: Workspace,
    progress: Progress = no_progress,
) -> FetchResult:
    """Download or import every source into ``ws.raw_dir``; one item per file.

    Never raises for one bad source: it becomes a ``failed`` or ``skipped`` item
    with the reason. Raises :class:`InputError` only when no source is given.
    """
    if not sources:
        raise InputError(
            "No source given.",
            hint="Pass URLs, files or folders (`xttsft fetch URL FILE DIR`) or --from-file LIST.txt.",
        )
    ws.raw_dir.mkdir(parents=True, exist_ok=True)
    result = FetchResult(raw_dir=ws.raw_dir, sources=len(sources))
    progress(total=len(sources), completed=0)
    for src in sources:
        src = src.strip()
        before = len(result.items)
        progress(description=f"fetch {src[:60]}")
        path = Path(src).expanduser()
        if path.exists():
            result.items.extend(_import_local(path, ws.raw_dir))
        elif src.lower().startswith("file:"):
            result.items.append(
                FetchItem(
                    src,
                    "failed",
                    reason="file:// URLs are not downloaded",
                    hint="Import local files by their path: xttsft fetch /path/to/recording.mp3 (or a folder).",
                )
            )
        elif src.startswith("-"):
            result.items.append(
                FetchItem(
                    src,
                    "failed",
                    reason="refused: looks like a command-line option, not a URL or a file",
                    hint="Give URLs (https://...) or paths; options go before the sources.",
                )
            )
        elif _URL_RE.match(src) and not re.match(r"^[A-Za-z]:[\\/]", src):
            audio.require_ffmpeg()
            result.items.extend(_download(src, settings, ws))
        else:
            result.items.append(
                FetchItem(
                    src,
                    "failed",
                    reason="no such file or folder, and not a URL",
                    hint="Check the path, or give a full URL starting with https://.",
                )
            )
        for item in result.items[before:]:
            if item.status == "failed":  # to the log files: the caller shows the reasons once, its own way
                log.warning("%s: %s", item.source, item.reason, extra={"console": False})
        if any(item.status == "failed" for item in result.items[before:]):
            result.failed_sources.append(src)
        progress(advance=1)
    return result
