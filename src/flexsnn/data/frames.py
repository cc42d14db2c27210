"""Event -> frame binning: count events per (time bin, polarity, y, x).

Events are Tonic-style structured numpy arrays with fields ``x``, ``y``, ``t``, ``p``;
``sensor_size`` is ``(W, H, P)`` as in Tonic. Frames are ``[T, P, H, W]`` float32 counts.

Bin rules (``t_start``/``t_end`` default to the first/last event's timestamp):

- ``n_time_bins=T``: ``[t_start, t_end]`` is cut into T bins of equal length, like
  ``tonic.transforms.ToFrame(n_time_bins=T)``; bin ``i`` is ``[t_start + i*L, t_start +
  (i+1)*L)`` with ``L = (t_end - t_start) / T``, except the last bin, which is closed, so the
  last event goes in the last bin (Tonic's integer window length can drop it instead).
  Event ``t`` goes to ``floor((t - t_start) * T / (t_end - t_start))``, computed exactly in
  integers; if ``t_end == t_start`` every event goes in bin 0.
- ``time_window=w``: bins of fixed duration ``w`` starting at ``t_start``; their number is
  ``max(1, ceil((t_end - t_start) / w))`` and the last bin again includes ``t_end``.

Events outside ``[t_start, t_end]`` are dropped. With ``P == 1`` polarity is ignored.
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from flexsnn.errors import InputError, check_positive_int

_FIELDS = ("x", "y", "t", "p")
_DTYPE_HINT = "[('x', int16), ('y', int16), ('t', int64), ('p', int8)] (DigitsDVS.dtype)"


def check_sensor_size(sensor_size: Sequence[int], name: str = "sensor_size") -> tuple[int, int, int]:
    """Return ``sensor_size`` as a ``(W, H, P)`` tuple of positive ints, else raise InputError."""
    if not isinstance(sensor_size, (tuple, list)) or len(sensor_size) != 3:
        raise InputError(f"{name} must be a (width, height, polarities) tuple, got {sensor_size!r}")
    width, height, pol = (check_positive_int(v, f"{name}[{i}]") for i, v in enumerate(sensor_size))
    return width, height, pol


def check_events(events: np.ndarray, sensor_size: tuple[int, int, int], name: str = "events") -> np.ndarray:
    """Check ``events`` is a non-empty structured array with x, y, t, p inside ``sensor_size``."""
    if not isinstance(events, np.ndarray) or events.dtype.names is None or not set(_FIELDS) <= set(
        events.dtype.names
    ):
        got = events.dtype if isinstance(events, np.ndarray) else type(events).__name__
        raise InputError(f"{name} must be a 1-D structured numpy array with fields x, y, t, p, e.g. "
                         f"dtype {_DTYPE_HINT}; got {got}")
    if events.ndim != 1:
        raise InputError(f"{name} must be 1-D (one record per event), got shape {events.shape}")
    if events.size == 0:
        raise InputError(f"{name} is empty; expected at least one event to bin")
    width, height, pol = sensor_size
    limits = {"x": width, "y": height} if pol == 1 else {"x": width, "y": height, "p": pol}
    for field, limit in limits.items():
        values = events[field]
        lo, hi = values.min(), values.max()
        if lo < 0 or hi >= limit:
            raise InputError(
                f"{name}['{field}'] must lie in [0, {limit - 1}] for sensor_size {sensor_size}, "
                f"got values in [{lo}, {hi}]"
            )
    return events


def _check_time_window(time_window: float) -> float:
    if isinstance(time_window, bool) or not isinstance(time_window, numbers.Real) or not (
        math.isfinite(time_window) and time_window > 0
    ):
        raise InputError(f"time_window must be a positive number of microseconds, got {time_window!r}")
    return time_window


def time_bin_index(
    t: np.ndarray,
    n_time_bins: int | None = None,
    time_window: float | None = None,
    t_start: int | None = None,
    t_end: int | None = None,
) -> tuple[np.ndarray, int]:
    """Bin index of every timestamp (-1 for timestamps outside [t_start, t_end]) and the
    number of bins, following the rules in the module docstring. ``t`` must be non-empty."""
    if (n_time_bins is None) == (time_window is None):
        raise InputError("give exactly one of n_time_bins or time_window, "
                         f"got n_time_bins={n_time_bins!r}, time_window={time_window!r}")
    t = np.asarray(t, dtype=np.int64)
    start = int(t.min()) if t_start is None else int(t_start)
    end = int(t.max()) if t_end is None else int(t_end)
    if end < start:
        raise InputError(f"t_end must be >= t_start, got t_start={start}, t_end={end}")
    rel = t - start
    if n_time_bins is not None:
        count = check_positive_int(n_time_bins, "n_time_bins")
        span = end - start
        index = rel * count // span if span > 0 else np.zeros_like(rel)
    else:
        window = _check_time_window(time_window)
        count = max(1, math.ceil((end - start) / window))
        if isinstance(window, numbers.Integral):
            index = rel // int(window)
        else:
            index = np.floor(rel / float(window)).astype(np.int64)
    index = np.minimum(index, count - 1)  # t == t_end belongs to the last (closed) bin
    index[(t < start) | (t > end)] = -1
    return index, count


def to_frames(
    events: np.ndarray,
    sensor_size: Sequence[int],
    n_time_bins: int | None = None,
    time_window: float | None = None,
    t_start: int | None = None,
    t_end: int | None = None,
) -> np.ndarray:
    """Count events per time bin, polarity and pixel.

    Args:
        events: structured array with fields x, y, t (microseconds), p.
        sensor_size: ``(W, H, P)``.
        n_time_bins: number of equal bins over ``[t_start, t_end]`` (exclusive with time_window).
        time_window: bin duration in microseconds (exclusive with n_time_bins).
        t_start, t_end: the binned span; default first and last event timestamps.

    Returns:
        float32 array ``[T, P, H, W]``; ``frames[i, p, y, x]`` is the number of events in bin i
        at pixel (x, y) with polarity p.
    """
    width, height, pol = check_sensor_size(sensor_size)
    check_events(events, (width, height, pol))
    index, count = time_bin_index(events["t"], n_time_bins, time_window, t_start, t_end)
    keep = index >= 0
    polarity = events["p"].astype(np.int64) if pol > 1 else np.zeros(len(events), np.int64)
    flat = ((index * pol + polarity) * height + events["y"].astype(np.int64)) * width + events["x"]
    counts = np.bincount(flat[keep], minlength=count * pol * height * width)
    return counts.astype(np.float32).reshape(count, pol, height, width)


def spatial_pool(frames: np.ndarray, factor: int) -> np.ndarray:
    """Sum-pool ``frames`` [..., H, W] over ``factor x factor`` pixel blocks (counts are kept).

    H and W must be multiples of ``factor``; e.g. 128x128 DVS frames -> 32x32 with factor 4.
    """
    factor = check_positive_int(factor, "factor")
    frames = np.asarray(frames)
    if frames.ndim < 2 or frames.shape[-1] % factor or frames.shape[-2] % factor:
        raise InputError(f"frames must be [..., H, W] with H and W multiples of factor={factor}, "
                         f"got shape {frames.shape}")
    h, w = frames.shape[-2] // factor, frames.shape[-1] // factor
    blocks = frames.reshape(*frames.shape[:-2], h, factor, w, factor)
    return blocks.sum(axis=(-3, -1))


@dataclass(frozen=True)
class ToFrame:
    """Tonic-style transform: ``ToFrame(sensor_size, n_time_bins=T)(events) -> [T, P, H, W]``."""

    sensor_size: tuple[int, int, int]
    n_time_bins: int | None = None
    time_window: float | None = None

    def __call__(self, events: np.ndarray) -> np.ndarray:
        return to_frames(events, self.sensor_size, n_time_bins=self.n_time_bins, time_window=self.time_window)


@dataclass(frozen=True)
class SpatialPool:
    """Tonic-style transform on frames: ``SpatialPool(4)(frames [T, P, H, W]) -> [T, P, H/4, W/4]``."""

    factor: int

    def __call__(self, frames: np.ndarray) -> np.ndarray:
        return spatial_pool(frames, self.factor)
