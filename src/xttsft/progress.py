"""Opt-in progress reporting for the core.

Core functions take an optional ``progress`` callable and call it with keyword
arguments only; they never draw anything. The CLI passes one that drives a rich
progress bar (see ``xttsft.cli._common.progress_bar``); tests pass nothing.
"""

from __future__ import annotations

from typing import Protocol

__all__ = ["Progress", "no_progress"]


class Progress(Protocol):
    def __call__(
        self,
        *,
        advance: float = 0,
        completed: float | None = None,
        total: float | None = None,
        description: str | None = None,
    ) -> None: ...


def no_progress(
    *,
    advance: float = 0,
    completed: float | None = None,
    total: float | None = None,
    description: str | None = None,
) -> None:
    """A :class:`Progress` that does nothing."""
