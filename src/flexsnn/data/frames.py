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

Events outside ``[t_start, t_end]`` are dropped. With ``P == 1`` polarities are merged (``p``
must still be 0 or 1). Events are checked by :func:`flexsnn.data.events.check_events`; float
timestamps must hold whole microseconds. The frames' size is checked before allocating
(``max_values``, default :data:`MAX_FRAME_VALUES`).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from flexsnn.data.events import check_events, check_sensor_size
from flexsnn.errors import InputError, check_choice, check_positive_int
from flexsnn.progress import progress_bar

# Frames above this many values (4 GiB of float32) are refused before allocating: a tiny
# time_window or a huge sensor_size would otherwise ask for terabytes. Override per call.
MAX_FRAME_VALUES = 2**30
_MAX_BIN = 2**62  # bin indices are clipped here so huge bin counts reach the size check, not an overflow


def _check_time_window(time_window: float) -> float:
    if (
        isinstance(time_window, bool)
        or not isinstance(time_window, numbers.Real)
        or not (math.isfinite(time_window) and time_window > 0)
    ):
        raise InputError(f"time_window must be a positive number of microseconds, got {time_window!r}")
    return time_window


def _timestamps(t: np.ndarray) -> np.ndarray:
    """``t`` as int64 microseconds; float timestamps must be whole numbers (no truncation)."""
    t = np.asarray(t)
    if t.dtype.kind == "f":
        if not np.isfinite(t).all():
            raise InputError("events['t'] contains NaN or infinite timestamps")
        whole = t == np.floor(t)
        if not whole.all():
            raise InputError(f"events['t'] has value {t[~whole][0].item()!r}; binning needs whole microseconds")
        if t.size and float(np.abs(t).max()) > 2.0**53:
            raise InputError(
                f"events['t'] has float value {float(np.abs(t).max())!r} too large to be exact; "
                "store timestamps as int64"
            )
    elif t.dtype.kind == "u" and t.size and int(t.max()) > np.iinfo(np.int64).max:
        raise InputError(f"events['t'] has value {int(t.max())} beyond the int64 range")
    return t.astype(np.int64)


def _bound(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise InputError(f"{name} must be an integer timestamp in microseconds, got {value!r}")
    info = np.iinfo(np.int64)
    if not info.min <= int(value) <= info.max:
        raise InputError(f"{name} must fit int64 microseconds, got {value}")
    return int(value)


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
        raise InputError(
            "give exactly one of n_time_bins or time_window, "
            f"got n_time_bins={n_time_bins!r}, time_window={time_window!r}"
        )
    t = _timestamps(t)
    start = int(t.min()) if t_start is None else _bound(t_start, "t_start")
    end = int(t.max()) if t_end is None else _bound(t_end, "t_end")
    if end < start:
        raise InputError(f"t_end must be >= t_start, got t_start={start}, t_end={end}")
    span = end - start  # a Python int: exact even when it exceeds int64
    inside = (t >= start) & (t <= end)
    rel = np.zeros(t.shape, dtype=np.uint64)
    # t - start lies in [0, span] for kept events; uint64 holds it even when span > int64 max.
    rel[inside] = t[inside].astype(np.uint64) - np.uint64(start % 2**64)
    if n_time_bins is not None:
        count = check_positive_int(n_time_bins, "n_time_bins")
        if span == 0:
            index = np.zeros(t.shape, dtype=np.int64)
        elif span * count < 2**63:
            index = (rel.astype(np.int64) * count) // span
        else:  # rel * count would overflow int64: exact Python-int arithmetic (rare, slower)
            index = np.array([min(int(r) * count // span, _MAX_BIN) for r in rel], dtype=np.int64)
    else:
        window = _check_time_window(time_window)
        if isinstance(window, numbers.Integral):
            count = max(1, -(-span // int(window)))
            index = np.minimum(rel // np.uint64(min(int(window), 2**64 - 1)), _MAX_BIN).astype(np.int64)
        else:
            ratio = span / float(window)  # may be inf for a tiny window: refused by the caller's size check
            count = max(1, math.ceil(ratio)) if ratio < _MAX_BIN else _MAX_BIN + 1
            with np.errstate(over="ignore"):
                index = np.floor(np.minimum(rel.astype(np.float64) / float(window), _MAX_BIN)).astype(np.int64)
    index = np.minimum(index, min(count - 1, _MAX_BIN))  # t == t_end belongs to the last (closed) bin
    index[~inside] = -1
    return index, count


def to_frames(
    events: np.ndarray,
    sensor_size: Sequence[int],
    n_time_bins: int | None = None,
    time_window: float | None = None,
    t_start: int | None = None,
    t_end: int | None = None,
    max_values: int = MAX_FRAME_VALUES,
) -> np.ndarray:
    """Count events per time bin, polarity and pixel.

    Args:
        events: structured array with fields x, y, t (microseconds), p; checked by
            :func:`flexsnn.data.events.check_events` (with ``P == 1``, ``p`` may be 0 or 1).
        sensor_size: ``(W, H, P)``.
        n_time_bins: number of equal bins over ``[t_start, t_end]`` (exclusive with time_window).
        time_window: bin duration in microseconds (exclusive with n_time_bins).
        t_start, t_end: the binned span; default first and last event timestamps.
        max_values: refuse (InputError) frames with more values than this, before allocating.

    Returns:
        float32 array ``[T, P, H, W]``; ``frames[i, p, y, x]`` is the number of events in bin i
        at pixel (x, y) with polarity p.
    """
    width, height, pol = check_sensor_size(sensor_size)
    # P == 1 merges polarities, but a polarity must still be one (0 or 1).
    check_events(events, (width, height, max(pol, 2)) if pol == 1 else (width, height, pol))
    limit = check_positive_int(max_values, "max_values")
    index, count = time_bin_index(events["t"], n_time_bins, time_window, t_start, t_end)
    values = count * pol * height * width
    if values > limit:
        raise InputError(
            f"to_frames would allocate {count} bins x {pol} x {height} x {width} = {values} "
            f"float32 values ({values * 4 / 2**30:.1f} GiB) > max_values={limit}; "
            "use fewer time bins, a longer time_window or raise max_values"
        )
    keep = index >= 0
    polarity = events["p"].astype(np.int64) if pol > 1 else np.zeros(len(events), np.int64)
    flat = ((index * pol + polarity) * height + events["y"].astype(np.int64)) * width + events["x"].astype(np.int64)
    counts = np.bincount(flat[keep], minlength=values)
    return counts.astype(np.float32).reshape(count, pol, height, width)


def spatial_pool(frames: np.ndarray, factor: int) -> np.ndarray:
    """Sum-pool ``frames`` [..., H, W] over ``factor x factor`` pixel blocks (counts are kept).

    H and W must be multiples of ``factor``; e.g. 128x128 DVS frames -> 32x32 with factor 4.
    """
    factor = check_positive_int(factor, "factor")
    frames = np.asarray(frames)
    if frames.ndim < 2 or frames.shape[-1] % factor or frames.shape[-2] % factor:
        raise InputError(
            f"frames must be [..., H, W] with H and W multiples of factor={factor}, got shape {frames.shape}"
        )
    h, w = frames.shape[-2] // factor, frames.shape[-1] // factor
    blocks = frames.reshape(*frames.shape[:-2], h, factor, w, factor)
    return blocks.sum(axis=(-3, -1))


POOL_MODES = ("avg", "sum")


def bin_event_samples(
    samples: Iterable[tuple[np.ndarray, int]],
    count: int,
    sensor_size: Sequence[int],
    n_time_bins: int,
    spatial_factor: int = 1,
    pool: str = "avg",
    progress: bool = False,
    desc: str = "binning",
    frame_transform: Callable[[np.ndarray], np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Bin ``count`` ``(events, label)`` samples: ``(x [N, T, P, H/f, W/f] float32, y [N] int64)``.

    Each sample is binned by :func:`to_frames` (counts in ``n_time_bins``
    equal bins between its first and last event; an empty recording gives all-zero frames
    instead of an error mid-way through a split), then pooled over ``spatial_factor`` x
    ``spatial_factor`` blocks with :func:`spatial_pool`: ``pool="sum"``
    keeps the counts, ``"avg"`` divides them by ``factor**2`` (the paper's CIFAR10-DVS input).
    ``frame_transform`` (e.g. ``flexsnn.data.augment.ResizeFrames(48)``) then maps each sample's
    ``[T, P, h, w]`` frames to the stored ones (their shape sets ``x``'s last two axes), one
    sample at a time, so a split is never held at full resolution.
    """

    width, height, pol = check_sensor_size(tuple(sensor_size))
    n_time_bins = check_positive_int(n_time_bins, "n_time_bins")
    factor = check_positive_int(spatial_factor, "spatial_factor")
    check_choice(pool, "pool", POOL_MODES)
    if height % factor or width % factor:
        raise InputError(f"spatial_factor={factor} must divide the sensor size {height}x{width} (H x W)")
    pooled_shape = (n_time_bins, pol, height // factor, width // factor)
    scale = np.float32(factor * factor) if pool == "avg" and factor > 1 else None

    def finish(frames: np.ndarray) -> np.ndarray:
        if scale is not None:
            frames = frames / scale
        return frames if frame_transform is None else np.asarray(frame_transform(frames), dtype=np.float32)

    sample_shape = finish(np.zeros(pooled_shape, np.float32)).shape
    x = np.zeros((count, *sample_shape), dtype=np.float32)
    y = np.zeros(count, dtype=np.int64)
    for i, (events, label) in enumerate(progress_bar(samples, total=count, desc=desc, enabled=progress)):
        if i >= count:
            raise InputError(f"samples yielded more than count={count} items")
        if len(events):  # else: left all-zero
            x[i] = finish(spatial_pool(to_frames(events, (width, height, pol), n_time_bins=n_time_bins), factor))
        y[i] = label
    return x, y


def bin_event_dataset(
    dataset, n_time_bins: int, spatial_factor: int = 1, pool: str = "avg", progress: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Bin every sample of a Tonic-style event dataset (``sensor_size``, ``len``, items
    ``(events, label)``): ``(x [N, T, P, H/f, W/f] float32, y [N] int64)``; see
    :func:`bin_event_samples`."""
    items = (dataset[i] for i in range(len(dataset)))
    return bin_event_samples(
        items,
        len(dataset),
        dataset.sensor_size,
        n_time_bins,
        spatial_factor,
        pool,
        progress,
        desc=f"binning {type(dataset).__name__}",
    )


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
