"""Errors a user can act on.

The core raises :class:`XttsftError` (or a subclass) with a message that says
what is wrong and a hint that says what to do. Only the CLI turns them into a
red one-line message and a non-zero exit code.
"""

from __future__ import annotations

__all__ = [
    "XttsftError",
    "SettingsError",
    "InputError",
    "MissingDependencyError",
    "ModelNotFoundError",
    "DatasetError",
    "ExportError",
]


class XttsftError(Exception):
    """An error caused by the user's input or environment, with a fix."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message}\nHint: {self.hint}"


class SettingsError(XttsftError):
    """One or more settings are invalid (all of them are listed together)."""


class InputError(XttsftError):
    """An input file, folder or URL is missing, empty or unreadable."""


class MissingDependencyError(XttsftError):
    """A system tool (ffmpeg, espeak-ng) or optional package is missing."""


class ModelNotFoundError(XttsftError):
    """A model (XTTS-v2, Whisper) is not available locally and cannot be fetched."""


class DatasetError(XttsftError):
    """The dataset is missing, empty or invalid."""


class ExportError(XttsftError):
    """An export did not load back after it was written."""
