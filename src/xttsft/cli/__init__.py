"""The ``xttsft`` command: a thin Typer layer over the core modules.

Each command lives in its own module here: it names the settings it takes (their
options are generated from the fields, see ``_command``), resolves them and calls one
core function. Heavy libraries (torch, coqui-tts, faster-whisper) and the core modules
are imported inside the commands, so ``xttsft --help`` and ``xttsft doctor`` start fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from xttsft import __version__
from xttsft.cli import build as _build
from xttsft.cli import config as _config
from xttsft.cli import doctor as _doctor
from xttsft.cli import eval as _eval
from xttsft.cli import export as _export
from xttsft.cli import fetch as _fetch
from xttsft.cli import review as _review
from xttsft.cli import run_all as _run_all
from xttsft.cli import screen as _screen
from xttsft.cli import segment as _segment
from xttsft.cli import serve as _serve
from xttsft.cli import synth as _synth
from xttsft.cli import train as _train
from xttsft.cli import transcribe as _transcribe
from xttsft.cli._command import XttsftGroup, global_options
from xttsft.cli._common import AppState, console, err_console, set_state
from xttsft.hardware import tune_process
from xttsft.logs import configure_logging

# Exit codes (README, "Exit codes"): 0 done, 1 an error the user can fix (a bad flag or value
# included), 2 done in part (fetch: some sources failed), 130 Ctrl-C, 143 SIGTERM. Click's
# usage errors say 2; here every user error says 1, so 2 keeps one meaning. The class is typer's
# own copy of click's (typer._click), reached through its public BadParameter.
_USAGE_ERROR: Any = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "UsageError")
_USAGE_ERROR.exit_code = 1

app = typer.Typer(
    name="xttsft",
    help=(
        "Fine-tune XTTS-v2 on a voice: from an hour of someone speaking to a model that sounds like them.\n\n"
        "The pipeline, one command per stage, each reading and writing files in the workspace "
        "(--workdir, default: the current folder):\n\n"
        "fetch -> segment -> screen -> transcribe -> build -> train -> synth\n\n"
        "Start with `xttsft doctor` to check the machine. Settings come from flags, environment "
        "variables (TRAIN_NUM_EPOCHS=...), a .env file or xttsft.toml; `xttsft config` shows them all."
    ),
    cls=XttsftGroup,
    no_args_is_help=True,
    rich_markup_mode="markdown",
    context_settings={"help_option_names": ["-h", "--help"]},
    pretty_exceptions_enable=False,
    add_completion=True,  # --install-completion / --show-completion (bash, zsh, fish, PowerShell)
)


def _version(value: bool) -> None:
    if value:
        console.print(f"xttsft {__version__}")
        raise typer.Exit()


_GLOBAL = global_options()


@app.callback()
def _global(
    ctx: typer.Context,
    workdir: Path = _GLOBAL["workdir"],
    config: Path | None = _GLOBAL["config"],
    verbose: bool = _GLOBAL["verbose"],
    quiet: bool = _GLOBAL["quiet"],
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:

    ctx.obj = set_state(AppState(workdir=workdir, config_file=config, verbose=verbose, quiet=quiet and not verbose))
    configure_logging(err_console, verbose=verbose, quiet=quiet and not verbose)


_config.register(app)
_doctor.register(app)
_fetch.register(app)
_segment.register(app)
_screen.register(app)
_transcribe.register(app)
_review.register(app)
_build.register(app)
_train.register(app)
_synth.register(app)
_export.register(app)
_eval.register(app)
_run_all.register(app)
_serve.register(app)


def main() -> None:
    """Console-script entry point."""

    tune_process()  # OpenMP's wait policy and glibc's heap, before any import of torch
    app()
