"""DigitsDVS: the embedded default dataset, scikit-learn's 8x8 digits seen by a simulated DVS.

No download: the source is ``sklearn.datasets.load_digits()`` (1797 images, 10 classes), and
every image is turned into an event stream the way N-MNIST was recorded (Orchard et al.
2015): the digit is shown on a 34x34 pixel array and moved along three saccades, a closed
triangle (diagonal down-right, back left, back up, 100 ms each, 300 ms in all), while a
dynamic vision sensor reports per-pixel log-intensity changes.

The DVS model (simulated every ``step_us`` microseconds, all pixels and images at once):
each pixel keeps a reference log-intensity ``ref``; whenever ``log(I + eps)`` has moved by
the pixel's contrast threshold ``C`` from ``ref``, it emits ``n = floor(|L - ref| / C)``
events of polarity ON (p=1, brighter) or OFF (p=0, darker), timestamped where the linearly
interpolated log-intensity crosses ``ref +- k*C`` inside the step, and moves ``ref`` by
``n*C``. Per-pixel thresholds carry a small mismatch drawn from a generator seeded by
``(seed, sample index)``, as are the initial references (within half a threshold of the
first view's log-intensity), so each sample's events depend only on its own image and index.

The generated events of all samples are cached on disk (see :mod:`flexsnn.data.cache`).
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from flexsnn.data.cache import cached_arrays
from flexsnn.data.events import EVENT_DTYPE
from flexsnn.errors import InputError

# Bump when the generator's output changes for the same parameters (invalidates caches).
GENERATOR_VERSION = 1

@dataclass(frozen=True)
class DVSSimParams:
    """Parameters of the simulated recording (all lengths in sensor pixels, times in us)."""

    sensor_px: int = 34           # square pixel array, as N-MNIST
    image_px: float = 28.0        # the 8x8 digit is upscaled to image_px x image_px
    saccade_px: float = 2.0       # side of the triangular saccade path
    segment_us: int = 100_000     # duration of each of the three saccades
    step_us: int = 1_000          # DVS simulation step
    threshold: float = 0.4        # contrast threshold C on log(I + eps)
    threshold_mismatch: float = 0.03  # relative std of the per-pixel threshold
    eps: float = 0.1              # dark level inside the log (the background is I = 0)
    seed: int = 0


def load_source() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's bundled digits: images [1797, 8, 8] scaled to [0, 1], labels [1797]."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    return (digits.images / 16.0).astype(np.float32), digits.target.astype(np.int64)


def stratified_test_mask(labels: np.ndarray, every: int = 5) -> np.ndarray:
    """Deterministic stratified split: the every-th sample of each class (ranks every-1,
    2*every-1, ... in dataset order) goes to the test split. Returns a bool mask [N]."""
    labels = np.asarray(labels)
    mask = np.zeros(len(labels), dtype=bool)
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        mask[members[every - 1::every]] = True
    return mask


def saccade_path(params: DVSSimParams) -> np.ndarray:
    """Image offsets (dx, dy) in pixels at the end of every simulation step, [S, 2].

    Closed triangle: (0,0) -> (d,d) -> (0,d) -> (0,0), one segment per ``segment_us``.
    """
    steps = params.segment_us // params.step_us
    if steps < 1:
        raise InputError(f"segment_us must be >= step_us, got {params.segment_us} < {params.step_us}")
    d = params.saccade_px
    vertices = np.array([(0.0, 0.0), (d, d), (0.0, d), (0.0, 0.0)])
    frac = (np.arange(1, steps + 1) / steps)[:, None]
    segments = [a + (b - a) * frac for a, b in zip(vertices[:-1], vertices[1:])]
    return np.concatenate(segments, axis=0)


def _interp_matrix(shift: float, src_px: int, params: DVSSimParams) -> np.ndarray:
    """Bilinear (triangle-kernel) resampling matrix [sensor_px, src_px] for one axis: row i
    holds the weights of the source pixels seen by sensor pixel i when the upscaled image
    sits at ``origin + shift``."""
    origin = (params.sensor_px - params.image_px - params.saccade_px) / 2.0
    scale = params.image_px / src_px  # sensor pixels per source pixel
    src_coord = (np.arange(params.sensor_px) + 0.5 - origin - shift) / scale - 0.5
    weights = 1.0 - np.abs(src_coord[:, None] - np.arange(src_px)[None, :])
    return np.maximum(weights, 0.0).astype(np.float32)


def render(images: np.ndarray, dx: float, dy: float, params: DVSSimParams) -> np.ndarray:
    """Intensity seen by the sensor, [N, H, W], with the images shifted by (dx, dy) pixels."""
    rows = _interp_matrix(dy, images.shape[1], params)
    cols = _interp_matrix(dx, images.shape[2], params)
    return (rows @ images) @ cols.T


def pixel_state(n: int, params: DVSSimParams, first_index: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Per-pixel contrast thresholds [n, H, W] and initial reference offsets [n, H, W] (in
    units of the threshold, uniform in [-0.5, 0.5): a real pixel's reference is left wherever
    its past put it). Sample i's values come from a generator seeded with (seed, index)."""
    shape = (params.sensor_px, params.sensor_px)
    thresholds = np.empty((n, *shape), dtype=np.float32)
    offsets = np.empty((n, *shape), dtype=np.float32)
    for i in range(n):
        rng = np.random.default_rng([params.seed, first_index + i])
        jitter = 1.0 + params.threshold_mismatch * rng.standard_normal(shape)
        thresholds[i] = params.threshold * np.clip(jitter, 0.5, 1.5)
        offsets[i] = rng.uniform(-0.5, 0.5, shape)
    return thresholds, offsets


def threshold_crossings(
    d0: np.ndarray, d1: np.ndarray, thr: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Events of one simulation step for pixels whose log-intensity, relative to their
    reference, moves linearly from ``d0`` (``|d0| < thr``) to ``d1`` during the step.

    Returns ``(count, which, frac)``: ``count[j] = floor(|d1[j]| / thr[j])`` events per pixel;
    per event, ``which`` is its pixel's position in the inputs and ``frac`` in [0, 1] the
    fraction of the step at which the path crosses ``sign(d1) * k * thr`` (k = 1..count),
    in order of k.
    """
    count = np.floor(np.abs(d1) / thr).astype(np.int64)
    which = np.repeat(np.arange(count.size), count)
    k = np.arange(which.size) - np.repeat(np.cumsum(count) - count, count) + 1
    level = np.sign(d1[which]) * k * thr[which]
    frac = (level - d0[which]) / (d1[which] - d0[which])
    return count, which, np.clip(frac, 0.0, 1.0)


def simulate_dvs(
    images: np.ndarray, params: DVSSimParams = DVSSimParams(), first_index: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Simulate the DVS recording of every image.

    Args:
        images: [N, h, w] intensities in [0, 1].
        params: recording parameters.
        first_index: dataset index of ``images[0]`` (selects the per-sample seeds).

    Returns:
        ``(events, offsets)``: events is a structured array of dtype :data:`EVENT_DTYPE`
        holding all samples' events back to back, each sample's sorted by t; sample i's
        events are ``events[offsets[i]:offsets[i + 1]]`` (offsets is [N + 1] int64).
    """
    images = np.asarray(images, dtype=np.float32)
    if images.ndim != 3:
        raise InputError(f"images must be [N, h, w], got shape {images.shape}")
    n = images.shape[0]
    px = params.sensor_px * params.sensor_px
    thresholds, ref_offsets = (a.ravel() for a in pixel_state(n, params, first_index))
    log_prev = np.log(render(images, 0.0, 0.0, params) + params.eps).ravel()
    # The sensor starts adapted to the first view (no initial burst), each reference within
    # half a threshold of it.
    ref = log_prev + ref_offsets * thresholds
    chunks: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    gap = np.empty_like(ref)  # scratch buffer: |L - ref| of every pixel
    for step, (dx, dy) in enumerate(saccade_path(params)):
        log_now = render(images, dx, dy, params).ravel()
        np.log(np.add(log_now, params.eps, out=log_now), out=log_now)
        np.abs(np.subtract(log_now, ref, out=gap), out=gap)
        firing = np.flatnonzero(gap >= thresholds)
        if firing.size:
            thr = thresholds[firing]
            d0 = log_prev[firing] - ref[firing]   # |d0| < thr: residual left by the last step
            d1 = log_now[firing] - ref[firing]
            count, which, frac = threshold_crossings(d0, d1, thr)
            sign = np.sign(d1)
            ref[firing] += sign * count * thr
            t = np.round((step + frac) * params.step_us).astype(np.int64)
            chunks.append((firing[which], t, (sign[which] > 0).astype(np.int8)))
        log_prev = log_now
    if chunks:
        flat = np.concatenate([c[0] for c in chunks])
        t = np.concatenate([c[1] for c in chunks])
        p = np.concatenate([c[2] for c in chunks])
    else:
        flat, t, p = np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int8)
    sample, pixel = np.divmod(flat, px)
    order = np.lexsort((t, sample))  # stable: by sample, then time
    events = np.empty(order.size, dtype=EVENT_DTYPE)
    events["x"] = pixel[order] % params.sensor_px
    events["y"] = pixel[order] // params.sensor_px
    events["t"] = t[order]
    events["p"] = p[order]
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.bincount(sample, minlength=n), out=offsets[1:])
    return events, offsets


def build_digits_dvs(params: DVSSimParams = DVSSimParams()) -> dict[str, np.ndarray]:
    """Generate the whole dataset as flat arrays (the form stored in the cache)."""
    images, labels = load_source()
    events, offsets = simulate_dvs(images, params)
    return {
        "x": events["x"], "y": events["y"], "t": events["t"], "p": events["p"],
        "offsets": offsets, "labels": labels, "is_test": stratified_test_mask(labels),
    }


def load_digits_dvs_arrays(
    root: str | os.PathLike | None = None, params: DVSSimParams = DVSSimParams()
) -> dict[str, np.ndarray]:
    """The cached flat arrays of the whole dataset, generated on first use."""
    key = {"version": GENERATOR_VERSION, **dataclasses.asdict(params)}
    return cached_arrays("digits_dvs", key, lambda: build_digits_dvs(params), root=root)


class DigitsDVS:
    """Tonic-style event dataset: sklearn's digits recorded by a simulated DVS (N-MNIST-like).

    ``dataset[i] -> (events, label)``: events is a structured array of :attr:`dtype`
    (x, y in pixels, t in microseconds, p: 0 = OFF, 1 = ON) sorted by t, label an int 0..9.
    ``train`` selects the deterministic stratified split (4/5 train, every 5th sample of each
    class test). ``root`` is the cache folder (default ``$FLEXSNN_CACHE`` or
    ``~/.cache/flexsnn``); the first use generates all 1797 recordings (a few seconds).
    """

    sensor_size = (34, 34, 2)
    dtype = EVENT_DTYPE
    ordering = "xytp"
    classes = [str(i) for i in range(10)]

    def __init__(
        self,
        root: str | os.PathLike | None = None,
        train: bool = True,
        transform: Callable[[np.ndarray], Any] | None = None,
        target_transform: Callable[[int], Any] | None = None,
    ) -> None:
        if not isinstance(train, bool):
            raise InputError(f"train must be True or False, got {train!r}")
        self.root = root
        self.train = train
        self.transform = transform
        self.target_transform = target_transform
        arrays = load_digits_dvs_arrays(root)
        self._x, self._y, self._t, self._p = arrays["x"], arrays["y"], arrays["t"], arrays["p"]
        self._offsets = arrays["offsets"]
        keep = ~arrays["is_test"] if train else arrays["is_test"]
        self.indices = np.flatnonzero(keep)  # positions in sklearn's load_digits order
        self.targets = arrays["labels"][self.indices]

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> tuple[Any, Any]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for DigitsDVS split of {len(self)} samples")
        source = self.indices[index]
        lo, hi = self._offsets[source], self._offsets[source + 1]
        events = np.empty(hi - lo, dtype=self.dtype)
        events["x"], events["y"] = self._x[lo:hi], self._y[lo:hi]
        events["t"], events["p"] = self._t[lo:hi], self._p[lo:hi]
        target: Any = int(self.targets[index])
        if self.transform is not None:
            events = self.transform(events)
        if self.target_transform is not None:
            target = self.target_transform(target)
        return events, target
