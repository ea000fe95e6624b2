"""Shared fixtures: a temporary workspace, espeak-ng speech with known text,
and a CLI runner. Stage-specific fixtures live in the stage's test module."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from xttsft.paths import Workspace

# Settings must come from the test, not from the developer's shell.
_SECTION_PREFIXES = ("FETCH_", "SEGMENT_", "SCREEN_", "TRANSCRIBE_", "BUILD_", "TRAIN_", "SYNTH_", "SERVE_", "XTTSFT_")


@pytest.fixture(autouse=True)
def _clean_settings_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith(_SECTION_PREFIXES):
            monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture
def workspace(tmp_path: Path) -> Workspace:
    """An empty workspace in a temporary folder."""
    return Workspace(tmp_path / "ws")


@pytest.fixture
def cli(workspace: Workspace) -> Callable[..., object]:
    """Run ``xttsft --workdir <workspace> ARGS...`` through typer's CliRunner."""
    from xttsft.cli import app

    runner = CliRunner()

    def run(*args: str, env: dict[str, str] | None = None, workdir: Path | None = None):
        root = workdir or workspace.root
        root.mkdir(parents=True, exist_ok=True)
        return runner.invoke(app, ["--workdir", str(root), *args], env=env, catch_exceptions=False)

    return run


def _need(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        pytest.fail(f"{tool} is not installed; `make test` installs it (scripts/install-system-deps.sh)")
    return path


@pytest.fixture(scope="session")
def speak() -> Callable[..., Path]:
    """``speak(text, out, voice="en-us", rate=160, sample_rate=22050)`` writes espeak-ng
    speech of ``text`` to ``out`` (a WAV, resampled with ffmpeg) and returns ``out``."""
    espeak = _need("espeak-ng")
    ffmpeg = _need("ffmpeg")

    def make(text: str, out: Path, voice: str = "en-us", rate: int = 160, sample_rate: int = 22050) -> Path:
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        raw = out.with_suffix(".espeak.wav")
        subprocess.run([espeak, "-v", voice, "-s", str(rate), "-w", str(raw), text], check=True)
        subprocess.run(
            [
                ffmpeg,
                "-nostdin",
                "-loglevel",
                "error",
                "-y",
                "-i",
                str(raw),
                "-ac",
                "1",
                "-ar",
                str(sample_rate),
                str(out),
            ],
            check=True,
        )
        raw.unlink()
        return out

    return make


@contextlib.contextmanager
def tmpfs(where: Path, size: str) -> Iterator[Path]:
    """A real small tmpfs mounted at ``where`` (root, as in CI's container); the test is skipped where
    mounting is not allowed. Unmounted afterwards."""
    where.mkdir(parents=True, exist_ok=True)
    mount = ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)]
    if subprocess.run(mount, capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here (not root)")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)
