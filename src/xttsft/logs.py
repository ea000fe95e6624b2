"""Logging set-up, called once by the CLI (the core only uses getLogger)."""

from __future__ import annotations

import logging
import logging.handlers
import os
import warnings
from pathlib import Path

from rich.console import Console
from rich.logging import RichHandler

__all__ = ["configure_logging", "add_file_logs", "log_once", "CHATTY_LOGGERS"]

# Dependencies that log a lot at INFO; they are kept at WARNING on the console.
CHATTY_LOGGERS = (
    "numba",
    "matplotlib",
    "transformers",
    "TTS",
    "trainer",
    "faster_whisper",
    "httpx",
    "httpcore",
    "urllib3",
    "filelock",
    "huggingface_hub",
    "fsspec",
    "PIL",
    "h5py",
    "tensorboard",
    "torio",
)

#: What log_once has said in this command.
_said: set[tuple[str, str]] = set()

_FILE_FORMAT = "%(asctime)s %(levelname)-8s %(name)s: %(message)s"


def configure_logging(console: Console, verbose: bool = False, quiet: bool = False) -> None:
    _said.clear()  # log_once: once per command
    """Console logging through rich: INFO by default, DEBUG with -v, WARNING with -q."""
    root = logging.getLogger()
    for h in list(root.handlers):
        if getattr(h, "_xttsft", False):
            root.removeHandler(h)
        elif getattr(h, "_xttsft_file", False):
            # a new command starts without file logs; a previous command's (another
            # workdir, in the same process) must not get this one's records
            root.removeHandler(h)
            h.close()
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    handler = RichHandler(
        console=console,
        level=level,
        show_path=verbose,
        show_time=verbose,
        markup=False,
        rich_tracebacks=verbose,
        log_time_format="[%X]",
    )
    handler._xttsft = True  # type: ignore[attr-defined]
    handler.setFormatter(logging.Formatter("%(message)s"))
    # Records logged with extra={"console": False} go to the log files only (the CLI
    # already showed them its own way, e.g. run-all's per-stage lines).
    handler.addFilter(lambda record: getattr(record, "console", True))
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    for name in CHATTY_LOGGERS:
        logging.getLogger(name).setLevel(logging.DEBUG if verbose else logging.WARNING)
    if not verbose:
        # transformers warns about the tiny model's GPT-2 config (bos/eos ids) through
        # its own handler; nothing a user can act on. Its import resets its logger's level
        # from TRANSFORMERS_VERBOSITY, so that is what must say "error" (torch is not loaded yet).
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        logging.getLogger("transformers").setLevel(logging.ERROR)
    if not verbose:
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", category=UserWarning, module=r"(torch|torchaudio|librosa|TTS|trainer)\b.*")


def add_file_logs(logs_dir: Path) -> None:
    """Rotating ``info.log`` (INFO and up) and ``error.log`` (ERROR and up)."""
    logs_dir.mkdir(parents=True, exist_ok=True)
    root = logging.getLogger()
    for h in list(root.handlers):
        if getattr(h, "_xttsft_file", False):
            root.removeHandler(h)
            h.close()
    for name, level in (("info.log", logging.INFO), ("error.log", logging.ERROR)):
        fh = logging.handlers.RotatingFileHandler(logs_dir / name, maxBytes=5_000_000, backupCount=3, encoding="utf-8")
        fh.setLevel(level)
        fh.setFormatter(logging.Formatter(_FILE_FORMAT))
        fh._xttsft_file = True  # type: ignore[attr-defined]
        root.addHandler(fh)


def log_once(logger: logging.Logger, level: int, msg: str, *args: object) -> None:
    """Log ``msg % args`` the first time this process sees it: stages that run one after the other
    in run-all (or share a helper) tell the user a fact once, not once per stage."""
    key = (logger.name, msg % args if args else msg)
    if key not in _said:
        _said.add(key)
        logger.log(level, msg, *args)
