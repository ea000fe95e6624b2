"""Free space: refuse early when a stage cannot fit, and name a full disk when a write fails.

A full disk used to surface as ``LibsndfileError: System error.`` (build) or
``RuntimeError: [enforce fail at inline_container.cc:672]`` (a checkpoint). Every stage that
writes a lot (segment, build, train, export) now checks its estimate before it starts, and
the CLI turns a write that still fails for lack of space into one message: what was needed,
where, and how much is free.
"""

from __future__ import annotations

import errno
import shutil
from pathlib import Path

from xttsft.errors import XttsftError

__all__ = ["DiskFullError", "free_bytes", "require_free_space", "disk_full_cause", "LOW_SPACE_BYTES"]

#: below this much free space, a write error without an errno (libsndfile, torch's zip writer) is a full disk
LOW_SPACE_BYTES = 16 << 20
#: left free on top of every estimate: logs, temp files, the file system's own needs
MARGIN_BYTES = 64 << 20

_NO_SPACE_ERRNOS = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}
#: the words of a full disk in errors that carry no errno (safetensors' Rust IoError, C++ and C libraries)
_NO_SPACE_WORDS = ("No space left on device", "os error 28", "StorageFull", "Disk quota exceeded")
#: write failures that do not say why: a full disk when the disk is (nearly) full at that moment
_NO_ERRNO_WRITE_FAILURES = ("inline_container", "System error", "file write failed", "unexpected pos")


class DiskFullError(XttsftError):
    """Not enough free space for a stage's outputs."""


def _mb(n: float) -> str:
    return f"{n / (1 << 20):,.0f} MB"


def free_bytes(path: Path) -> int:
    """Free bytes on the file system of ``path`` (or of its nearest existing parent)."""
    p = Path(path).absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    return shutil.disk_usage(p).free


def _hint() -> str:
    return (
        "Free some space (old runs under train/checkpoints/, exports, train/data/raw/), or move the "
        "workspace to a larger disk (--workdir), then run the same command again: finished work is kept."
    )


def require_free_space(path: Path, need_bytes: float, stage: str) -> None:
    """Refuse with :class:`DiskFullError` when ``stage`` would write more than ``path``'s disk has free."""
    free = free_bytes(path)
    need = int(need_bytes) + MARGIN_BYTES
    if need > free:
        raise DiskFullError(
            f"Disk full: {stage} needs about {_mb(need)} at {path}, and {_mb(free)} is free.", hint=_hint()
        )


def disk_full_cause(exc: BaseException, where: Path | None) -> DiskFullError | None:
    """A :class:`DiskFullError` when ``exc`` (or an exception it came from) is a failed write on a full disk.

    An ``OSError`` with ``ENOSPC``/``EDQUOT``, or an error that says "No space left on device" /
    "os error 28" (safetensors), always is; a write error that carries no errno (libsndfile's
    "System error", torch's zip writer) is when ``where``'s disk is nearly full. The atomic writers
    (``io.atomic_path``/``atomic_dir``) ask before they delete their partial output, which frees the space.
    """
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, DiskFullError):
            return e
        path = getattr(e, "filename", None) or where
        if (isinstance(e, OSError) and e.errno in _NO_SPACE_ERRNOS) or any(w in str(e) for w in _NO_SPACE_WORDS):
            return _full(Path(path) if path else None)
        if (
            where is not None
            and any(s in str(e) for s in _NO_ERRNO_WRITE_FAILURES)
            and free_bytes(where) < LOW_SPACE_BYTES
        ):
            return _full(where)
        e = e.__cause__ or e.__context__
    return None


def _full(path: Path | None) -> DiskFullError:
    if path is None:
        return DiskFullError("Disk full: a write failed for lack of space.", hint=_hint())
    return DiskFullError(f"Disk full while writing {path}: {_mb(free_bytes(path))} is free there.", hint=_hint())
