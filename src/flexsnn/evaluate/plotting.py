"""Matplotlib set-up shared by every plot flexsnn writes: headless backend, atomic PNG."""

from __future__ import annotations

import os
from pathlib import Path

from flexsnn.io import atomic_write


def pyplot():
    """``matplotlib.pyplot`` on the headless Agg backend (plots are files, never windows)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: str | os.PathLike) -> Path:
    """Write ``fig`` as PNG atomically, close it, and return the path."""
    path = Path(path)
    with atomic_write(path) as tmp:
        fig.savefig(tmp, format="png")
    pyplot().close(fig)
    return path
