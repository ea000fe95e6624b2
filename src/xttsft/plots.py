"""The PNGs the stages write: one figure factory, one histogram with its limit, one atomic save.

matplotlib is imported on first use, with the Agg backend (no display needed).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from xttsft.io import atomic_path

__all__ = ["figure", "histogram", "save_png"]


def figure(width: float = 7.0, height: float = 3.5) -> Any:
    """A matplotlib Figure that needs no display (not registered with pyplot, so nothing leaks)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height))


def histogram(
    ax: Any,
    values: Sequence[float],
    *,
    limit: float,
    limit_label: str,
    xlabel: str,
    ylabel: str,
    title: str,
    value_range: tuple[float, float],
) -> None:
    """A histogram of ``values`` with a dashed line at ``limit``; counts get whole-number ticks
    (a few clips gave "0.2 clips")."""
    from matplotlib.ticker import MaxNLocator

    ax.hist(list(values), bins=30, range=value_range, color="#4477aa")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.axvline(limit, color="#cc3311", linestyle="--", label=limit_label)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend()


def save_png(fig: Any, path: Path) -> Path:
    """Write ``fig`` to ``path`` atomically (a crash leaves no half-written PNG)."""
    fig.tight_layout()
    with atomic_path(Path(path)) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    return Path(path)
