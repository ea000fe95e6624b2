"""What every command shares: the app state, error handling, progress, tables."""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import functools
import json
import logging
import math
import shlex
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import TYPE_CHECKING, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from xttsft.errors import InputError, XttsftError
from xttsft.logs import add_file_logs
from xttsft.paths import Workspace
from xttsft.storage import disk_full_cause

if TYPE_CHECKING:
    from xttsft.settings import Provenance, Settings


class _Console(Console):
    """A rich console whose plain lines (``print("...")``) soft-wrap: the terminal wraps them and rich
    does not cut them, so a path, URL or command stays whole and can be copied at 80 columns (rich broke
    them mid-word). Tables and panels still fit the width. ``emoji=False``: user text such as a clip id
    "zero" between colons is printed as written, not as an emoji; markup in user text is escaped
    where it is printed."""

    def print(self, *objects: Any, **kwargs: Any) -> None:
        if objects and all(isinstance(o, str) for o in objects):
            kwargs.setdefault("soft_wrap", True)
        super().print(*objects, **kwargs)


console = _Console(emoji=False)
err_console = _Console(stderr=True, emoji=False)
log = logging.getLogger("xttsft.cli")

F = TypeVar("F", bound=Callable[..., Any])


@dataclass
class AppState:
    """Global options, shared by every command through ``ctx.obj``."""

    workdir: Path = field(default_factory=Path.cwd)
    config_file: Path | None = None
    verbose: bool = False
    quiet: bool = False

    def load(self, file_logs: bool = True, **flags: dict[str, Any]) -> tuple[Settings, Workspace]:
        """Resolve the settings (flags per section) and the workspace.

        With ``file_logs`` the workspace's ``logs/`` get this command's story.
        """
        settings, _, ws = self.load_with_provenance(file_logs, **flags)
        return settings, ws

    def load_with_provenance(
        self, file_logs: bool = True, flag_names: dict[str, dict[str, str]] | None = None, **flags: dict[str, Any]
    ) -> tuple[Settings, Provenance, Workspace]:
        """Like :meth:`load`, plus where every value came from. ``flag_names``: the flag each value
        of ``flags`` was given with, where that is not the field's name with dashes."""
        from xttsft.settings import load_settings

        settings, provenance = load_settings(
            Workspace(self.workdir), flags=flags, config_file=self.config_file, flag_names=flag_names
        )
        ws = Workspace(self.workdir, dataset_name=settings.build.dataset_name)
        if file_logs:
            add_file_logs(ws.logs_dir)
            log.debug("xttsft %s", " ".join(sys.argv[1:]))
        return settings, provenance, ws


def print_json(result: Any) -> None:
    """The command's result object, serialised once, alone on stdout (tables and notes stay off it)."""
    typer.echo(json.dumps(jsonable(result), indent=2, ensure_ascii=False, allow_nan=False))


def jsonable(value: Any) -> Any:
    """JSON-ready data of a result: dataclasses (or objects with ``to_dict``) as objects, paths as
    strings, enums as their values, counters as objects, NaN and infinity as null."""
    if hasattr(value, "to_dict"):
        value = value.to_dict()
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    elif hasattr(value, "model_dump"):  # a pydantic model (settings)
        value = value.model_dump(mode="json")
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        items = sorted(value, key=str) if isinstance(value, (set, frozenset)) else value
        return [jsonable(v) for v in items]
    if isinstance(value, enum.Enum):
        return jsonable(value.value)
    if isinstance(value, PurePath):
        return str(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if hasattr(value, "item"):  # a numpy scalar
        return jsonable(value.item())
    return str(value)


def state(ctx: typer.Context) -> AppState:
    obj = ctx.find_root().obj
    return obj if isinstance(obj, AppState) else AppState()


def _log_to_files(level: int, msg: str, exc_info: bool = False) -> None:
    """Write to logs/*.log only (the console already showed the message)."""
    record = logging.getLogger("xttsft").makeRecord(
        "xttsft", level, __file__, 0, msg, (), sys.exc_info() if exc_info else None
    )
    for h in logging.getLogger().handlers:
        if getattr(h, "_xttsft_file", False) and record.levelno >= h.level:
            h.handle(record)


def handle_errors(fn: F) -> F:
    """Turn :class:`XttsftError` into a red message and exit 1; never a traceback
    for user errors. Unexpected errors name the log that holds the traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (typer.Exit, typer.Abort, SystemExit):
            raise
        except XttsftError as exc:
            _report(exc)
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            err_console.print("[yellow]Interrupted.[/] Finished work is kept; run the same command again to continue.")
            _log_to_files(logging.WARNING, "interrupted by the user")
            raise typer.Exit(130) from None
        except Exception as exc:  # noqa: BLE001 - last line of defence
            _log_to_files(logging.ERROR, f"unexpected error: {exc!r}", exc_info=True)
            mine = _disk_full(exc) or os_error_cause(exc)
            if mine is not None:  # a full disk, a read-only folder, a file in the way: the user's to fix
                _report(mine)
                raise typer.Exit(1) from None
            where = next(
                (
                    getattr(h, "baseFilename", None)
                    for h in logging.getLogger().handlers
                    if getattr(h, "_xttsft_file", False) and h.level >= logging.ERROR
                ),
                None,
            )
            err_console.print(f"[bold red]Unexpected error:[/] {escape(type(exc).__name__)}: {escape(str(exc))}")
            if where:
                err_console.print(f"The full traceback is in {escape(str(where))}. Please include it in a bug report.")
            else:
                err_console.print("Run again with -v to see the traceback.")
            st = _current_state()
            if st is not None and st.verbose:
                err_console.print_exception()
            raise typer.Exit(1) from None

    return wrapper  # type: ignore[return-value]


def _report(exc: XttsftError) -> None:
    err_console.print(f"[bold red]Error:[/] {escape(exc.message)}")
    if exc.hint:
        err_console.print(f"[yellow]Hint:[/] {escape(exc.hint)}")
    _log_to_files(logging.ERROR, str(exc))


def os_error_cause(exc: BaseException) -> XttsftError | None:
    """The user's side of an OS error on a path (permissions, a read-only disk, a file where a folder
    should be): the path, the cause and the fix. ``None`` when ``exc`` is not such an error."""
    import errno

    if not isinstance(exc, OSError) or not exc.filename:
        return None
    path = str(exc.filename)
    if isinstance(exc, PermissionError) or exc.errno == errno.EROFS:
        cause = "the file system is read-only" if exc.errno == errno.EROFS else "permission denied"
        return InputError(
            f"xttsft cannot use {path}: {cause}.",
            hint="Run xttsft on a folder you can write to (--workdir), or fix its permissions "
            f"(ls -ld {shlex.quote(path)}).",
        )
    if isinstance(exc, (NotADirectoryError, FileExistsError)):
        return InputError(
            f"Cannot use {path}: a file stands where a folder is needed on that path.",
            hint="Choose a path whose folders are folders, or move that file away.",
        )
    if isinstance(exc, IsADirectoryError):
        return InputError(
            f"{path} is a folder, but a file is needed there.",
            hint="Give a file name (for example out.wav), or remove that folder.",
        )
    if isinstance(exc, FileNotFoundError):
        return InputError(f"{path} does not exist.", hint="Check the path; it may have been moved or deleted.")
    return None


def _disk_full(exc: BaseException) -> XttsftError | None:

    st = _current_state()
    return disk_full_cause(exc, Path(st.workdir) if st is not None else Path.cwd())


#: The global options of the command being run, set by the app's callback (``set_state``). Not
#: looked up through click: typer ships its own copy of click, so ``click.get_current_context()``
#: from the separate package saw no context, and -q and -v did nothing.
_STATE: AppState | None = None


def set_state(st: AppState) -> AppState:
    global _STATE
    _STATE = st
    return st


def _current_state() -> AppState | None:
    return _STATE


@contextlib.contextmanager
def progress_bar(
    description: str, total: float | None = None, transient: bool = False
) -> Iterator[Callable[..., None]]:
    """A rich progress bar with an ETA, handed to the core as a ``progress`` callable."""
    from rich.progress import (  # not at the top: `xttsft --help` shows no bar
        BarColumn,
        MofNCompleteColumn,
        Progress,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns = (
        SpinnerColumn(),
        TextColumn("{task.description}", style="progress.description", markup=False),  # names files: literal
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
    )
    st = _current_state()
    with Progress(*columns, console=err_console, transient=transient, disable=bool(st and st.quiet)) as bar:
        task = bar.add_task(description, total=total)

        def update(
            *,
            advance: float = 0,
            completed: float | None = None,
            total: float | None = None,
            description: str | None = None,
        ) -> None:
            kw: dict[str, Any] = {}
            if completed is not None:
                kw["completed"] = completed
            if total is not None:
                kw["total"] = total
            if description is not None:
                kw["description"] = description
            bar.update(task, advance=advance, **kw)

        yield update
