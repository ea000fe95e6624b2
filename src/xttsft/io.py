"""Small file helpers shared by every stage: atomic writes and JSONL."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from xttsft.errors import InputError
from xttsft.storage import DiskFullError, disk_full_cause

log = logging.getLogger(__name__)

_UMASK = os.umask(0)
os.umask(_UMASK)

__all__ = [
    "sha256_file",
    "atomic_path",
    "atomic_dir",
    "check_output_path",
    "swap_target",
    "tidy_swaps",
    "atomic_write_text",
    "atomic_write_json",
    "read_json",
    "read_jsonl",
    "write_jsonl",
]


@contextlib.contextmanager
def atomic_path(final: Path, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path next to ``final``; rename it to ``final`` on success.

    A crash, an exception or Ctrl-C inside the block leaves no partial file under
    the final name (the temporary file is removed). ``suffix`` keeps an extension
    that writers such as soundfile or ffmpeg use to pick a format.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    # The extension stays last so that format-sniffing writers still work.
    ext = final.suffix if suffix is None else suffix
    fd, tmp = tempfile.mkstemp(prefix=f".{final.stem}.", suffix=f".tmp{ext}", dir=final.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    os.chmod(tmp_path, 0o666 & ~_UMASK)  # mkstemp makes 0600; outputs are ordinary files
    try:
        yield tmp_path
        os.replace(tmp_path, final)
    except BaseException as exc:
        full = _disk_full(exc, final.parent)  # asked now: removing the partial file frees the space
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        if full is not None:
            raise full from exc
        raise


@contextlib.contextmanager
def atomic_dir(dest: Path) -> Iterator[Path]:
    """Yield an empty temporary folder next to ``dest``; on success it replaces ``dest``.

    The previous ``dest`` is moved aside (``.NAME.old.PID``) for the instant of the swap and
    put back if the swap fails; a crash, an exception or Ctrl-C inside the block leaves the
    previous ``dest`` untouched and removes the temporary folder. The folder gets the
    ordinary permissions of the umask (mkdtemp makes 0700).

    When ``dest`` is a symlink (data kept on another disk), the folder it points to is the one
    replaced, beside itself: the link stays, and the data stays on its disk.
    """
    dest = swap_target(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.tmp.", dir=dest.parent))
    os.chmod(tmp, 0o777 & ~_UMASK)
    old: Path | None = None
    try:
        yield tmp
        if dest.exists():
            old = dest.with_name(f".{dest.name}.old.{os.getpid()}")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(dest, old)
        os.replace(tmp, dest)
    except BaseException as exc:
        full = _disk_full(exc, dest.parent)  # asked now: removing the partial folder frees the space
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None and old.exists() and not dest.exists():
            os.replace(old, dest)
        if full is not None:
            raise full from exc
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def check_output_path(path: Path, what: str, *, folder: bool = False) -> Path:
    """Refuse, before any work, an output path that cannot be written: a file where a folder is wanted
    (or the reverse), a folder on the way that is a file, or a parent that is not writable.

    ``what`` names the option in the message (``--out``). Returns ``path``."""

    path = Path(path)
    kind = "folder" if folder else "file"
    if path.is_dir() and not folder:
        raise InputError(
            f"{what} {path} is a folder; a file name is needed there.",
            hint=f"Give a file inside it, e.g. {what} {path / 'out.wav'}.",
        )
    if path.exists() and folder and not path.is_dir():
        raise InputError(
            f"{what} {path} is a file; a folder is needed there.",
            hint=f"Choose another {what}, or move that file away.",
        )
    for parent in path.parents:
        if not parent.exists():
            continue
        if not parent.is_dir():
            raise InputError(
                f"{what} {path} cannot be made: {parent} is a file, not a folder.",
                hint=f"Choose a {kind} under a folder, or move {parent} away.",
            )
        if not os.access(parent, os.W_OK | os.X_OK):
            raise InputError(
                f"{what} {path} cannot be written: {parent} is not writable.",
                hint=f"Choose a {kind} in a folder you can write to.",
            )
        break
    return path


def swap_target(dest: Path) -> Path:
    """The folder that :func:`atomic_dir` replaces for ``dest``: ``dest``, or where its symlink points."""
    dest = Path(dest)
    return dest.resolve() if dest.is_symlink() else dest


def _disk_full(exc: BaseException, where: Path) -> Exception | None:
    if not isinstance(exc, Exception):  # Ctrl-C, SystemExit: as they are
        return None

    full = disk_full_cause(exc, where)
    return None if full is None or isinstance(exc, DiskFullError) else full


def tidy_swaps(parent: Path, complete: Any, name: str | None = None) -> None:
    """Clean what a kill left beside ``atomic_dir`` outputs in ``parent`` (``name``: only that one's).

    ``.NAME.tmp.*`` is a half-written folder: deleted. ``.NAME.old.*`` is the previous ``NAME``,
    set aside for the instant of a swap: put back when ``NAME`` is missing and ``complete(folder)``
    says it is whole, else deleted. Call it holding the lock of whatever writes there."""
    parent = Path(parent)
    if not parent.is_dir():
        return
    stem = re.escape(name) if name is not None else r".+?"
    for p in sorted(parent.iterdir()):
        m = re.fullmatch(rf"\.({stem})\.(old|tmp)\.[^/]+", p.name)
        if m is None or not p.is_dir():
            continue
        dest = parent / m.group(1)
        if m.group(2) == "old" and not dest.exists() and complete(p):
            os.replace(p, dest)
            log.warning("Put back %s, left aside by an interrupted write.", dest)
        else:
            shutil.rmtree(p, ignore_errors=True)


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """SHA-256 of a file's content, read in chunks (large audio files never sit in memory)."""
    import hashlib

    h = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically (UTF-8)."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def atomic_write_json(path: Path, data: Any) -> None:
    """Write ``data`` as indented JSON to ``path`` atomically."""
    atomic_write_text(path, json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n")


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object from ``path``; ``{}`` when it is missing or unreadable (a summary, not an input)."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def write_jsonl(path: Path, rows: Iterable[dict[str, Any]]) -> None:
    """Write one JSON object per line to ``path`` atomically."""
    atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False, default=str) + "\n" for r in rows))


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Read a JSONL file; blank lines are skipped. A missing file reads as empty."""
    path = Path(path)
    if not path.exists():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            rows.append(json.loads(line))
    return rows
