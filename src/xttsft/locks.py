"""One writer at a time for each run and each stage output.

Two ``xttsft train --run-name R`` at once used to mix their checkpoints in one folder, and two
``xttsft build`` deleted each other's wavs. Each writer now holds a lock under
``<workspace>/.locks/`` for as long as it writes:

* ``train-<run>.lock``: one training run (rank 0 of a DDP job holds it for every rank);
* ``build-<dataset>.lock``, ``export.lock``, ``fetch.lock``, ``segment.lock``, ``screen.lock``,
  ``transcribe.lock``.

The lock is an OS file lock (``filelock``: ``flock`` on Linux and macOS, ``msvcrt`` on
Windows), so the kernel drops it when its process dies, kill -9 and power cuts included:
a lock left by a dead process is never in the way. Beside it, ``<name>.lock.holder`` records
who holds it (pid, host, command, start time), for the message the second writer gets.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import json
import logging
import os
import socket
import sys
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypeVar

from xttsft.errors import InputError

log = logging.getLogger(__name__)

__all__ = ["hold", "holder_of", "stage_lock"]

F = TypeVar("F")


def holder_of(lock_file: Path) -> dict | None:
    """What ``<lock>.holder`` says of the process holding ``lock_file`` (``None`` when unreadable)."""
    try:
        return json.loads(_holder_file(lock_file).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _holder_file(lock_file: Path) -> Path:
    return lock_file.with_name(lock_file.name + ".holder")


def _describe(holder: dict | None) -> str:
    if not holder:
        return "another process"
    cmd = holder.get("command") or "xttsft"
    return f"pid {holder.get('pid')} on {holder.get('host')} ({cmd}, since {holder.get('since')})"


@contextlib.contextmanager
def hold(lock_file: Path, what: str) -> Iterator[None]:
    """Hold ``lock_file`` for the block, or refuse at once with :class:`InputError` naming the holder.

    ``what`` names the guarded thing in the message, e.g. ``"Run 'c2'"`` or ``"The dataset MyTTSDataset"``.
    """
    from filelock import FileLock, Timeout

    lock_file = Path(lock_file)
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(lock_file), timeout=0, is_singleton=False)
    try:
        lock.acquire()
    except Timeout:
        raise InputError(
            f"{what} is being written by another xttsft: {_describe(holder_of(lock_file))}.",
            hint="Wait for that command to finish, or stop it, then run this one again. Two writers would mix "
            "their files. The lock goes away by itself when that process ends.",
        ) from None
    holder = _holder_file(lock_file)
    try:
        holder.write_text(
            json.dumps(
                {
                    "pid": os.getpid(),
                    "host": socket.gethostname(),
                    "command": " ".join(["xttsft", *sys.argv[1:]])[:300],
                    "since": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                }
            )
            + "\n",
            encoding="utf-8",
        )
        yield
    finally:
        with contextlib.suppress(OSError):
            holder.unlink()
        lock.release()


def stage_lock(stage: str | Callable[[Any], str], after: tuple[str, ...] = ()) -> Any:
    """Decorator: the stage function holds ``<ws>/.locks/<stage>.lock`` while it runs.

    The function takes the workspace as its ``ws`` argument; ``stage`` is a name or a function of
    the workspace (``lambda ws: f"build-{ws.dataset_name}"``: one lock per dataset).

    ``after`` names the stages whose output this one reads (``build`` after ``transcribe``): their
    locks are held too, so this stage never reads what a running upstream stage is still writing
    (a build beside a running transcription took 8 of 48 clips and said nothing), and that stage
    cannot start under it."""

    def deco(fn: F) -> F:
        sig = inspect.signature(fn)  # type: ignore[arg-type]

        @functools.wraps(fn)  # type: ignore[arg-type]
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            ws = sig.bind_partial(*args, **kwargs).arguments["ws"]
            name = stage(ws) if callable(stage) else stage
            with contextlib.ExitStack() as stack:
                for upstream in after:
                    stack.enter_context(_upstream_idle(ws.locks_dir / f"{upstream}.lock", upstream, name))
                stack.enter_context(hold(ws.locks_dir / f"{name}.lock", f"The {name} stage of workspace {ws.root}"))
                return fn(*args, **kwargs)  # type: ignore[operator]

        return wrapper  # type: ignore[return-value]

    return deco


@contextlib.contextmanager
def _upstream_idle(lock_file: Path, upstream: str, stage: str) -> Iterator[None]:
    """Hold an upstream stage's lock, or refuse: that stage is running and its output is not whole yet."""
    held = hold(lock_file, upstream)
    try:
        held.__enter__()
    except InputError:
        raise InputError(
            f"`xttsft {stage.split('-')[0]}` reads what `xttsft {upstream}` writes, and {upstream} is running in "
            f"this workspace: {_describe(holder_of(lock_file))}.",
            hint=f"Wait for {upstream} to finish (or stop it), then run this command again; its output is not "
            "complete yet.",
        ) from None
    with contextlib.ExitStack() as stack:
        stack.push(held.__exit__)
        yield
