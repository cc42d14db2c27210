"""Progress display for long work: a bar on a terminal, nothing (or one line per unit) elsewhere.

Bars redraw many times a second; written to a log file or a CI console that is hundreds of
lines of carriage returns. So a bar is shown only when stderr is a terminal, and long loops
that want a trace elsewhere log one line per epoch instead (the training loop does).
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import Any

from tqdm.auto import tqdm


def on_terminal() -> bool:
    """True when stderr is an interactive terminal (where a progress bar is readable)."""
    stream = sys.stderr
    return bool(getattr(stream, "isatty", None)) and stream.isatty()


def progress_bar(iterable: Iterable[Any] | None = None, *, enabled: bool = True, **kwargs: Any) -> tqdm:
    """A tqdm bar that is shown only if ``enabled`` and stderr is a terminal; otherwise silent.

    Works like ``tqdm(iterable, **kwargs)`` in both cases (``update``, ``set_postfix``, ``close``
    are harmless no-ops on a disabled bar).
    """
    return tqdm(iterable, disable=not (enabled and on_terminal()), **kwargs)
