"""Event streams: the one event dtype, packing coordinate arrays into it, and the one check.

An event stream is a Tonic-style 1-D numpy structured array with fields ``x, y, t, p``
(pixel column, pixel row, timestamp in microseconds, polarity). ``sensor_size`` is
``(W, H, P)`` as in Tonic. Every flexsnn reader returns :data:`EVENT_DTYPE`; the binning
(:func:`flexsnn.data.frames.to_frames`) and the event-driven simulator accept any integer
field types through :func:`check_events`.

Rules of :func:`check_events` (one set for every consumer):

- a 1-D structured numpy array with (at least) the fields x, y, t, p;
- ``x``, ``y``, ``p`` hold integers (``p`` may be bool) with ``0 <= x < W``, ``0 <= y < H``,
  ``0 <= p < P``;
- ``t`` holds integers that fit int64, or finite floats;
- at least one event unless ``allow_empty=True`` (the simulator accepts an empty stream;
  binning needs one event to place the bins).

:func:`make_events` never wraps or truncates: a value that is not an integer, or does not fit
the field's type, raises :class:`~flexsnn.errors.InputError` before anything is cast.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from flexsnn.errors import InputError, check_positive_int

__all__ = ["EVENT_DTYPE", "EVENT_FIELDS", "check_events", "check_sensor_size", "make_events", "sort_by_time"]

EVENT_DTYPE = np.dtype([("x", np.int16), ("y", np.int16), ("t", np.int64), ("p", np.int8)])
EVENT_FIELDS = ("x", "y", "t", "p")
_INT64 = np.iinfo(np.int64)
_FORM = "a 1-D numpy structured array with fields x, y, t, p (Tonic style, e.g. flexsnn.data.EVENT_DTYPE)"


def check_sensor_size(sensor_size: Any, name: str = "sensor_size") -> tuple[int, int, int]:
    """Return ``sensor_size`` as a ``(W, H, P)`` tuple of positive ints, else raise InputError."""
    form = f"{name} must be Tonic-style (width, height, polarities) of positive ints"
    if isinstance(sensor_size, (str, bytes)) or not isinstance(sensor_size, (Sequence, np.ndarray)):
        raise InputError(f"{form}, got {sensor_size!r}")
    values = tuple(sensor_size)
    if len(values) != 3:
        raise InputError(f"{form}, got {sensor_size!r}")
    width, height, pol = (check_positive_int(v, f"{name}[{i}]") for i, v in enumerate(values))
    return width, height, pol


def _column_range(values: np.ndarray) -> tuple[int, int]:
    return int(values.min()), int(values.max())


def check_events(
    events: Any, sensor_size: Sequence[int], *, allow_empty: bool = False, name: str = "events"
) -> np.ndarray:
    """Check one event stream against ``sensor_size`` (the rules in the module docstring).

    Returns ``events`` itself (no copy, order kept; see :func:`sort_by_time`). Raises
    InputError naming ``name``, the field and the offending value.
    """
    width, height, pol = check_sensor_size(sensor_size)
    if not isinstance(events, np.ndarray) or events.dtype.names is None:
        got = f"dtype {events.dtype}" if isinstance(events, np.ndarray) else type(events).__name__
        raise InputError(f"{name} must be {_FORM}; got {got}")
    missing = [f for f in EVENT_FIELDS if f not in events.dtype.names]
    if missing:
        raise InputError(f"{name} must be {_FORM}; missing fields {missing} (has {list(events.dtype.names)})")
    if events.ndim != 1:
        raise InputError(f"{name} must be {_FORM} (one record per event), got shape {events.shape}")
    if events.size == 0 and not allow_empty:
        raise InputError(f"{name} is empty; expected at least one event")
    for field, size in (("x", width), ("y", height), ("p", pol)):
        col = events[field]
        if col.dtype.kind not in "iub":  # signed / unsigned integer or bool
            raise InputError(f"{name}['{field}'] must hold integers, got dtype {col.dtype}")
        if col.size:
            lo, hi = _column_range(col)
            if lo < 0 or hi >= size:
                bad = lo if lo < 0 else hi
                raise InputError(
                    f"{name}['{field}'] has value {bad} outside [0, {size}) given "
                    f"sensor_size (W, H, P) = {(width, height, pol)}"
                )
    t = events["t"]
    if t.dtype.kind not in "iuf":
        raise InputError(f"{name}['t'] must hold integer or float timestamps, got dtype {t.dtype}")
    if t.size and t.dtype.kind == "u" and int(t.max()) > _INT64.max:
        raise InputError(f"{name}['t'] has value {int(t.max())} beyond the int64 range of timestamps")
    if t.size and t.dtype.kind == "f" and not np.isfinite(t).all():
        raise InputError(f"{name}['t'] contains NaN or infinite timestamps")
    return events


def sort_by_time(events: np.ndarray) -> np.ndarray:
    """``events`` ordered by ``t`` (stable: equal timestamps keep their order); a copy only if
    the stream is not already sorted."""
    t = events["t"]
    if t.size > 1 and bool((t[1:] < t[:-1]).any()):
        return events[np.argsort(t, kind="stable")]
    return events


def _as_integers(values: Any, field: str, dtype: np.dtype, name: str) -> np.ndarray:
    """``values`` as a 1-D array of exact integers that fit ``dtype``; refuses before casting."""
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise InputError(f"{name}['{field}'] must be 1-D, got shape {arr.shape}")
    if arr.dtype.kind == "f":
        finite = np.isfinite(arr)
        if not finite.all():
            raise InputError(f"{name}['{field}'] has value {arr[~finite][0].item()!r}; expected integers")
        fractional = arr != np.floor(arr)
        if fractional.any():
            raise InputError(f"{name}['{field}'] has value {arr[fractional][0].item()!r}; expected integers")
    elif arr.dtype.kind not in "iub":
        raise InputError(f"{name}['{field}'] must hold integers, got dtype {arr.dtype}")
    if arr.size:
        info = np.iinfo(dtype)
        # Compare as Python numbers: no numpy cast can wrap the comparison itself.
        lo, hi = arr.min().item(), arr.max().item()
        bad = lo if lo < info.min else hi if hi > info.max else None
        if bad is not None:
            shown = int(bad)
            raise InputError(
                f"{name}['{field}'] has value {shown} outside the {dtype} range "
                f"[{info.min}, {info.max}] of the event dtype"
            )
    return arr


def make_events(x: Any, y: Any, t: Any, p: Any, *, name: str = "events") -> np.ndarray:
    """Pack coordinate arrays into an :data:`EVENT_DTYPE` structured array (same order).

    Every value must be an integer (integer or bool arrays, or floats holding whole numbers)
    that fits its field (x, y: int16; t: int64; p: int8); otherwise InputError names the field
    and the value. Nothing is wrapped, rounded or clipped.
    """
    cols = {f: _as_integers(v, f, EVENT_DTYPE[f], name) for f, v in zip(EVENT_FIELDS, (x, y, t, p))}
    sizes = {f: c.shape[0] for f, c in cols.items()}
    if len(set(sizes.values())) != 1:
        raise InputError(f"{name}: x, y, t, p must have one value per event, got lengths {sizes}")
    events = np.empty(sizes["x"], dtype=EVENT_DTYPE)
    for field, col in cols.items():
        # float64 holds every integer up to 2**53 exactly; larger float timestamps are refused
        # rather than rounded by the cast.
        if col.dtype.kind == "f" and col.size and float(np.abs(col).max()) > 2.0**53:
            raise InputError(
                f"{name}['{field}'] has float value {float(np.abs(col).max())!r} too large "
                "to be an exact integer; store timestamps as integers"
            )
        events[field] = col
    return events
