"""Data augmentation without torchvision: CIFAR crops / flips / Cutout / AutoAugment; DVS frame
resizing, flips, rolls and time-and-polarity reversal.

Layouts: images are channels-first ``[C, H, W]`` (numpy or torch; AutoAugment wants uint8),
event frames are ``[T, C, H, W]`` per sample or ``[B, T, C, H, W]`` per batch. Spatial ops act
on the last two axes, so every time step and channel of a sample gets the same crop / flip / roll.

Pure functions (``hflip``, ``vflip``, ``pad_crop``, ``cutout``, ``shift2d``,
``reverse_time_polarity``, ``resize_frames``, ``autoaugment_op``) hold the maths; dataclass
transforms draw the random parameters. Randomness: every transform owns a
``numpy.random.Generator`` built from its ``seed`` field, and ``__call__(x, rng=None)`` uses the
``rng`` passed in instead when given (:class:`Compose` passes one generator down the chain), so
the same seed gives the same augmentations. DataLoader workers each get a copy of a transform,
i.e. the same stream: call ``reseed(seed + worker_id)`` in ``worker_init_fn``.

DVS training protocols (:data:`FRAME_AUGMENTATIONS`, names ``make_loaders(augment=...)`` and
the recipes take; each a :class:`FrameAugmentation`), as in the paper authors' code:

- ``"flip_roll5"``: horizontal flip with p = 0.5, then roll by up to +-5 px (CIFAR10-DVS,
  ResNet-18 at 48x48; also what ``augment=True`` means for event frames).
- ``"flip_or_reverse_roll5"``: horizontal flip with p = 0.25 or else time-and-polarity
  reversal with p = 0.25 (never both), then roll by up to +-5 px (N-Caltech101, ResNet-18).
- ``"vflip_roll20"``: vertical flip with p = 0.5, then roll by up to +-20 px (CIFAR10-DVS
  VGG-9 bias-free fine-tune at 128x128).
- ``"none"``.

Rolls wrap around (``torch.roll``) and draw ``dy`` and ``dx`` uniformly from the integers
``[-max_shift, max_shift]``. :meth:`FrameAugmentation.apply_batch` (used by the loaders, on the
batch's device, drawing from a ``torch.Generator``) and :meth:`FrameAugmentation.transform` (a
per-sample :class:`Compose` over numpy generators) apply the same distribution.
Resizing (:func:`resize_frames`, :class:`ResizeFrames`) is bilinear (``align_corners=False``),
without antialiasing by default, as torchvision's ``Resize`` on tensors before version 0.17.

CIFAR AutoAugment (:class:`CIFAR10AutoAugment`): the 25 sub-policies found on reduced CIFAR-10
by Cubuk et al. 2019 (AutoAugment, appendix table; the same list as torchvision's
``AutoAugmentPolicy.CIFAR10``), each two ``(op, probability, level)`` steps, implemented with PIL.
Levels 0..9 map linearly to: shear 0..0.3, translate 0..150/331 of the image side, rotate
0..30 degrees, colour / contrast / brightness / sharpness factor 1 +- 0..0.9 (random sign, also
for the geometric ops), posterize 8..4 bits, solarize threshold 256..0. Geometric ops fill with
grey 128 and resample nearest.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from flexsnn.data.image_datasets import (
    CIFAR10_MEAN,
    CIFAR10_STD,
    CIFAR100_MEAN,
    CIFAR100_STD,
    Normalize,
)
from flexsnn.errors import (
    InputError,
    check_choice,
    check_positive_int,
    check_probability,
)

Array = Any  # numpy.ndarray or torch.Tensor


def _rng(own: np.random.Generator, given: np.random.Generator | None) -> np.random.Generator:
    return own if given is None else given


def _check_spatial(x: Array, name: str, min_dim: int = 3) -> None:
    if not isinstance(x, (np.ndarray, torch.Tensor)):
        raise InputError(f"{name} must be a numpy array or torch tensor, got {type(x).__name__}")
    if x.ndim < min_dim:
        raise InputError(f"{name} must have at least {min_dim} dims [..., H, W], got shape {tuple(x.shape)}")


# ----------------------------------------------------------------------------- pure functions


def hflip(x: Array) -> Array:
    """Mirror the last axis (width): ``out[..., j] = x[..., W - 1 - j]``."""
    if isinstance(x, torch.Tensor):
        return torch.flip(x, dims=(-1,))
    return np.ascontiguousarray(x[..., ::-1])


def vflip(x: Array) -> Array:
    """Mirror the second-to-last axis (height): ``out[..., i, :] = x[..., H - 1 - i, :]``."""
    if isinstance(x, torch.Tensor):
        return torch.flip(x, dims=(-2,))
    return np.ascontiguousarray(x[..., ::-1, :])


def pad_crop(x: Array, top: int, left: int, size: tuple[int, int], padding: int, fill: float = 0) -> Array:
    """Pad H and W by ``padding`` with ``fill``, then crop ``size`` from (``top``, ``left``) of the padded image."""
    h, w = size
    if isinstance(x, torch.Tensor):
        padded = torch.nn.functional.pad(x, (padding,) * 4, value=fill) if padding else x
    else:
        pad = [(0, 0)] * (x.ndim - 2) + [(padding, padding)] * 2
        padded = np.pad(x, pad, constant_values=fill) if padding else x
    if not (0 <= top <= padded.shape[-2] - h and 0 <= left <= padded.shape[-1] - w):
        raise InputError(f"crop {h}x{w} at ({top}, {left}) does not fit the padded {tuple(padded.shape[-2:])} image")
    return (
        padded[..., top : top + h, left : left + w].clone()
        if isinstance(x, torch.Tensor)
        else np.ascontiguousarray(padded[..., top : top + h, left : left + w])
    )


def cutout(x: Array, cy: int, cx: int, length: int, value: float = 0) -> Array:
    """Set the square rows ``cy - length//2 .. cy + length//2`` (exclusive end), same for columns,
    clipped to the image, to ``value`` (DeVries & Taylor 2017); returns a copy."""
    h, w = x.shape[-2:]
    y0, y1 = max(0, cy - length // 2), min(h, cy + length // 2)
    x0, x1 = max(0, cx - length // 2), min(w, cx + length // 2)
    out = x.clone() if isinstance(x, torch.Tensor) else x.copy()
    out[..., y0:y1, x0:x1] = value
    return out


def shift2d(x: Array, dy: int, dx: int, mode: str = "roll") -> Array:
    """Move the content of the last two axes by ``dy`` rows and ``dx`` columns.

    ``mode="roll"`` wraps around (``out[..., i, j] = x[..., (i - dy) % H, (j - dx) % W]``);
    ``mode="shift"`` fills the uncovered border with zeros instead.
    """
    check_choice(mode, "mode", ("roll", "shift"))
    is_t = isinstance(x, torch.Tensor)
    rolled = torch.roll(x, shifts=(dy, dx), dims=(-2, -1)) if is_t else np.roll(x, (dy, dx), axis=(-2, -1))
    if mode == "roll":
        return rolled
    h, w = x.shape[-2:]
    if dy > 0:
        rolled[..., : min(dy, h), :] = 0
    elif dy < 0:
        rolled[..., max(h + dy, 0) :, :] = 0
    if dx > 0:
        rolled[..., :, : min(dx, w)] = 0
    elif dx < 0:
        rolled[..., :, max(w + dx, 0) :] = 0
    return rolled


def reverse_time_polarity(x: Array) -> Array:
    """Play event frames backwards: reverse the time axis and swap the polarity channels, so
    ``out[t, p] = x[T - 1 - t, P - 1 - p]`` for ``[T, P, H, W]`` (or ``[B, T, P, H, W]``: axes
    -4 and -3). A recording played backwards turns every brightening into a darkening."""
    _check_spatial(x, "frames", 4)
    if isinstance(x, torch.Tensor):
        return torch.flip(x, dims=(-4, -3))
    return np.ascontiguousarray(x[..., ::-1, ::-1, :, :])


def resize_frames(x: Array, size: int | tuple[int, int], antialias: bool = False) -> Array:
    """Resize the last two axes of ``x [..., H, W]`` to ``size`` (an int: square) by bilinear
    interpolation with ``align_corners=False`` (torch's ``interpolate``; what torchvision's
    ``Resize`` does to tensors). Returns float32 (numpy in, numpy out) or the tensor's float
    dtype. Downsampling by an integer factor 2 without antialiasing averages 2x2 blocks."""
    _check_spatial(x, "frames", 2)
    h, w = (size, size) if isinstance(size, int) else tuple(size)
    h, w = check_positive_int(h, "size"), check_positive_int(w, "size")
    is_t = isinstance(x, torch.Tensor)
    t = x if is_t else torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    if not t.is_floating_point():
        t = t.float()
    lead = t.shape[:-2]
    flat = t.reshape(-1, 1, *t.shape[-2:])
    out = torch.nn.functional.interpolate(
        flat, size=(h, w), mode="bilinear", align_corners=False, antialias=antialias
    ).reshape(*lead, h, w)
    return out if is_t else out.numpy()


# ----------------------------------------------------------------------------- transforms


@dataclass
class _Random:
    seed: int | None = field(default=None, kw_only=True)

    def __post_init__(self):
        self.rng = np.random.default_rng(self.seed)

    def reseed(self, seed: int | None) -> None:
        """Restart this transform's random stream (e.g. per DataLoader worker)."""
        self.seed = seed
        self.rng = np.random.default_rng(seed)


@dataclass
class Compose:
    """Apply transforms in order, passing one generator to all of them (seeded by ``seed``)."""

    transforms: Sequence[Callable]
    seed: int | None = field(default=None, kw_only=True)

    def __post_init__(self):
        self.rng = np.random.default_rng(self.seed)

    def reseed(self, seed: int | None) -> None:
        self.seed = seed
        self.rng = np.random.default_rng(seed)

    def __call__(self, x, rng: np.random.Generator | None = None):
        r = _rng(self.rng, rng)
        for t in self.transforms:
            x = t(x, rng=r)
        return x


@dataclass
class RandomCrop(_Random):
    """Pad by ``padding`` (``fill``) and crop ``size`` at a uniformly random position; ``[..., H, W]``."""

    size: int | tuple[int, int] = 32
    padding: int = 4
    fill: float = 0

    def __post_init__(self):
        super().__post_init__()
        size = (self.size, self.size) if isinstance(self.size, int) else tuple(self.size)
        self._size = (check_positive_int(size[0], "size"), check_positive_int(size[1], "size"))
        if not isinstance(self.padding, int) or self.padding < 0:
            raise InputError(f"padding must be an integer >= 0, got {self.padding!r}")

    def __call__(self, x, rng=None):
        _check_spatial(x, "image", 2)
        r = _rng(self.rng, rng)
        h, w = x.shape[-2] + 2 * self.padding, x.shape[-1] + 2 * self.padding
        if h < self._size[0] or w < self._size[1]:
            raise InputError(f"RandomCrop size {self._size} is larger than the padded image {h}x{w}")
        top = int(r.integers(0, h - self._size[0] + 1))
        left = int(r.integers(0, w - self._size[1] + 1))
        return pad_crop(x, top, left, self._size, self.padding, self.fill)


@dataclass
class RandomHorizontalFlip(_Random):
    """Mirror the width axis with probability ``p``; works on ``[C, H, W]`` and ``[T, C, H, W]``."""

    p: float = 0.5

    def __post_init__(self):
        super().__post_init__()
        check_probability(self.p, "p")

    def __call__(self, x, rng=None):
        _check_spatial(x, "x", 2)
        return hflip(x) if _rng(self.rng, rng).random() < self.p else x


@dataclass
class Cutout(_Random):
    """Zero ``n_holes`` squares of side ``length`` centred uniformly in the image (clipped at the
    border). Common settings: length 16 for CIFAR-10, 8 for CIFAR-100. Apply after Normalize."""

    length: int = 16
    n_holes: int = 1
    value: float = 0.0

    def __post_init__(self):
        super().__post_init__()
        check_positive_int(self.length, "length")
        check_positive_int(self.n_holes, "n_holes")

    def __call__(self, x, rng=None):
        _check_spatial(x, "image", 2)
        r = _rng(self.rng, rng)
        h, w = x.shape[-2:]
        for _ in range(self.n_holes):
            x = cutout(x, int(r.integers(0, h)), int(r.integers(0, w)), self.length, self.value)
        return x


@dataclass
class RandomFlipFrames(RandomHorizontalFlip):
    """DVS: mirror every frame of a sample ``[T, C, H, W]`` left-right with probability ``p``."""


@dataclass
class RandomRollFrames(_Random):
    """DVS: move a sample ``[T, C, H, W]`` by ``dy, dx`` drawn uniformly from ``[-max_shift, max_shift]``.

    ``mode="roll"`` wraps around (the "rolls" of the paper's DVS recipe, as in ``torch.roll``);
    ``mode="shift"`` is a translation with zero fill.
    """

    max_shift: int = 5
    mode: str = "roll"

    def __post_init__(self):
        super().__post_init__()
        if not isinstance(self.max_shift, int) or self.max_shift < 0:
            raise InputError(f"max_shift must be an integer >= 0, got {self.max_shift!r}")
        check_choice(self.mode, "mode", ("roll", "shift"))

    def __call__(self, x, rng=None):
        _check_spatial(x, "frames", 2)
        r = _rng(self.rng, rng)
        dy, dx = (int(v) for v in r.integers(-self.max_shift, self.max_shift + 1, size=2))
        return shift2d(x, dy, dx, self.mode)


@dataclass
class RandomVerticalFlipFrames(_Random):
    """DVS: mirror every frame of a sample ``[T, C, H, W]`` upside down with probability ``p``."""

    p: float = 0.5

    def __post_init__(self):
        super().__post_init__()
        check_probability(self.p, "p")

    def __call__(self, x, rng=None):
        _check_spatial(x, "frames", 2)
        return vflip(x) if _rng(self.rng, rng).random() < self.p else x


@dataclass
class RandomTimePolarityReversal(_Random):
    """DVS: play a sample ``[T, P, H, W]`` backwards (:func:`reverse_time_polarity`) with probability ``p``."""

    p: float = 0.5

    def __post_init__(self):
        super().__post_init__()
        check_probability(self.p, "p")

    def __call__(self, x, rng=None):
        return reverse_time_polarity(x) if _rng(self.rng, rng).random() < self.p else x


@dataclass
class RandomChoice(_Random):
    """Apply at most one of ``ops`` (functions ``x -> x``): one uniform draw ``u``; ``ops[k]``
    runs when ``sum(p[:k]) <= u < sum(p[:k + 1])``, nothing when ``u >= sum(p)`` (<= 1)."""

    ops: Sequence[Callable] = ()
    p: Sequence[float] = ()

    def __post_init__(self):
        super().__post_init__()
        if len(self.ops) != len(self.p):
            raise InputError(f"RandomChoice needs one probability per op, got {len(self.ops)} ops and p={list(self.p)}")
        for q in self.p:
            check_probability(q, "p")
        if sum(self.p) > 1 + 1e-9:
            raise InputError(f"RandomChoice probabilities must sum to at most 1, got p={list(self.p)}")
        self._edges = np.cumsum(self.p)

    def __call__(self, x, rng=None):
        k = int(np.searchsorted(self._edges, _rng(self.rng, rng).random(), side="right"))
        return self.ops[k](x) if k < len(self.ops) else x


@dataclass
class ResizeFrames:
    """Resize every frame of ``[..., H, W]`` to ``size`` (:func:`resize_frames`; deterministic).
    The paper authors' ResNet-18-DVS input: ``ResizeFrames(48)``."""

    size: int | tuple[int, int] = 48
    antialias: bool = False

    def __post_init__(self):
        size = (self.size, self.size) if isinstance(self.size, int) else tuple(self.size)
        if len(size) != 2:
            raise InputError(f"size must be an int or an (H, W) pair, got {self.size!r}")
        self._size = (check_positive_int(size[0], "size"), check_positive_int(size[1], "size"))

    def __call__(self, x, rng=None):
        return resize_frames(x, self._size, self.antialias)


@dataclass(frozen=True)
class FrameAugmentation:
    """A DVS training augmentation, drawn independently for every sample of ``[T, P, H, W]``:

    1. one uniform draw ``u``: mirror left-right if ``u < hflip_p``, else play backwards
       (:func:`reverse_time_polarity`) if ``u < hflip_p + reverse_p`` (the two never combine);
    2. mirror upside down with probability ``vflip_p`` (a second draw, only when ``vflip_p > 0``);
    3. roll (``mode="roll"``, wrap-around) or shift (``"shift"``, zero fill) by ``dy, dx``
       uniform in the integers ``[-max_shift, max_shift]``.
    """

    hflip_p: float = 0.5
    reverse_p: float = 0.0
    vflip_p: float = 0.0
    max_shift: int = 5
    mode: str = "roll"

    def __post_init__(self):
        for name in ("hflip_p", "reverse_p", "vflip_p"):
            check_probability(getattr(self, name), name)
        if self.hflip_p + self.reverse_p > 1 + 1e-9:
            raise InputError(
                f"hflip_p + reverse_p must be at most 1 (they exclude each other), "
                f"got {self.hflip_p} + {self.reverse_p}"
            )
        if isinstance(self.max_shift, bool) or not isinstance(self.max_shift, int) or self.max_shift < 0:
            raise InputError(f"max_shift must be an integer >= 0, got {self.max_shift!r}")
        check_choice(self.mode, "mode", ("roll", "shift"))

    def transform(self, seed: int | None = None) -> Compose:
        """The same augmentation as a per-sample numpy :class:`Compose` (``[T, P, H, W]``)."""
        steps: list[Callable] = [RandomChoice(ops=[hflip, reverse_time_polarity], p=[self.hflip_p, self.reverse_p])]
        if self.vflip_p > 0:
            steps.append(RandomVerticalFlipFrames(p=self.vflip_p))
        steps.append(RandomRollFrames(max_shift=self.max_shift, mode=self.mode))
        return Compose(steps, seed=seed)

    def apply_batch(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Augment every sample of a batch ``[B, T, P, H, W]`` on its own device; see
        :func:`augment_frames_batch` (which this calls) for the draws."""
        return augment_frames_batch(
            x, generator, self.hflip_p, self.max_shift, self.mode, vflip_p=self.vflip_p, reverse_p=self.reverse_p
        )


FRAME_AUGMENTATIONS: dict[str, FrameAugmentation | None] = {
    "flip_roll5": FrameAugmentation(hflip_p=0.5, max_shift=5),
    "flip_or_reverse_roll5": FrameAugmentation(hflip_p=0.25, reverse_p=0.25, max_shift=5),
    "vflip_roll20": FrameAugmentation(hflip_p=0.0, vflip_p=0.5, max_shift=20),
    "none": None,
}
"""Named DVS training augmentations (see the module docstring); ``None`` = no augmentation."""

DEFAULT_FRAME_AUGMENTATION = "flip_roll5"  # what augment=True means for event frames


def frame_augmentation(name: str) -> FrameAugmentation | None:
    """The :class:`FrameAugmentation` called ``name`` in :data:`FRAME_AUGMENTATIONS` (``None``
    for ``"none"``); an unknown name raises InputError listing the known ones."""
    check_choice(name, "augment", sorted(FRAME_AUGMENTATIONS))
    return FRAME_AUGMENTATIONS[name]


def dvs_train_transform(
    flip_p: float = 0.5, max_shift: int = 5, mode: str = "roll", seed: int | None = None
) -> Compose:
    """The paper's CIFAR10-DVS training augmentation for one sample ``[T, C, H, W]``: flip, then roll."""
    return Compose([RandomFlipFrames(p=flip_p), RandomRollFrames(max_shift=max_shift, mode=mode)], seed=seed)


def augment_frames_batch(
    x: torch.Tensor,
    generator: torch.Generator | None = None,
    flip_p: float = 0.5,
    max_shift: int = 5,
    mode: str = "roll",
    vflip_p: float = 0.0,
    reverse_p: float = 0.0,
) -> torch.Tensor:
    """Per-sample random flips / reversal + roll of a batch ``[B, T, C, H, W]`` on its own device.

    Draws from ``generator`` (a CPU ``torch.Generator``; same seed, same result), in this order:
    ``u = rand(B)`` (sample b is mirrored left-right if ``u[b] < flip_p``, else played backwards
    if ``u[b] < flip_p + reverse_p``), then, only when ``vflip_p > 0``, ``v = rand(B)`` (mirrored
    upside down if ``v[b] < vflip_p``), then shifts ``randint(-max_shift, max_shift + 1, (B, 2))``
    (dy, dx). Returns a new tensor; sample b equals ``shift2d(vflip?(hflip?|reverse?(x[b])), dy[b],
    dx[b], mode)``.
    """
    if not isinstance(x, torch.Tensor) or x.dim() != 5:
        raise InputError(
            f"x must be a torch.Tensor shaped [B, T, C, H, W], got "
            f"{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}"
        )
    check_probability(flip_p, "flip_p")
    check_probability(vflip_p, "vflip_p")
    check_probability(reverse_p, "reverse_p")
    if flip_p + reverse_p > 1 + 1e-9:
        raise InputError(f"flip_p + reverse_p must be at most 1 (they exclude each other), got {flip_p} + {reverse_p}")
    check_choice(mode, "mode", ("roll", "shift"))
    b, _, _, h, w = x.shape
    u = torch.rand(b, generator=generator)
    flips = u < flip_p
    vflips = torch.rand(b, generator=generator) < vflip_p if vflip_p > 0 else None
    shifts = torch.randint(-max_shift, max_shift + 1, (b, 2), generator=generator)
    out = torch.where(flips.to(x.device).view(b, 1, 1, 1, 1), torch.flip(x, dims=(-1,)), x)
    if reverse_p > 0:
        reverse = (~flips & (u < flip_p + reverse_p)).to(x.device).view(b, 1, 1, 1, 1)
        out = torch.where(reverse, torch.flip(out, dims=(1, 2)), out)
    if vflips is not None:
        out = torch.where(vflips.to(x.device).view(b, 1, 1, 1, 1), torch.flip(out, dims=(-2,)), out)
    # Gather with per-sample index grids: row i of the output reads row (i - dy) % H of the input.
    rows = (torch.arange(h).view(1, h) - shifts[:, :1]) % h  # [B, H]
    cols = (torch.arange(w).view(1, w) - shifts[:, 1:]) % w  # [B, W]
    rows, cols = rows.to(x.device), cols.to(x.device)
    idx_r = rows.view(b, 1, 1, h, 1).expand(-1, *out.shape[1:3], h, w)
    out = torch.gather(out, 3, idx_r)
    idx_c = cols.view(b, 1, 1, 1, w).expand(-1, *out.shape[1:3], h, w)
    out = torch.gather(out, 4, idx_c)
    if mode == "shift":
        dy, dx = shifts[:, 0].view(b, 1), shifts[:, 1].view(b, 1)
        i, j = torch.arange(h).view(1, h), torch.arange(w).view(1, w)
        keep_r = ((i - dy) >= 0) & ((i - dy) < h)  # [B, H]
        keep_c = ((j - dx) >= 0) & ((j - dx) < w)  # [B, W]
        mask = (keep_r.view(b, 1, 1, h, 1) & keep_c.view(b, 1, 1, 1, w)).to(x.device)
        out = out * mask.to(out.dtype)
    return out


# ----------------------------------------------------------------------------- AutoAugment

CIFAR10_POLICY: list[tuple[tuple[str, float, int], tuple[str, float, int]]] = [
    (("Invert", 0.1, 7), ("Contrast", 0.2, 6)),
    (("Rotate", 0.7, 2), ("TranslateX", 0.3, 9)),
    (("Sharpness", 0.8, 1), ("Sharpness", 0.9, 3)),
    (("ShearY", 0.5, 8), ("TranslateY", 0.7, 9)),
    (("AutoContrast", 0.5, 8), ("Equalize", 0.9, 2)),
    (("ShearY", 0.2, 7), ("Posterize", 0.3, 7)),
    (("Color", 0.4, 3), ("Brightness", 0.6, 7)),
    (("Sharpness", 0.3, 9), ("Brightness", 0.7, 9)),
    (("Equalize", 0.6, 5), ("Equalize", 0.5, 1)),
    (("Contrast", 0.6, 7), ("Sharpness", 0.6, 5)),
    (("Color", 0.7, 7), ("TranslateX", 0.5, 8)),
    (("Equalize", 0.3, 7), ("AutoContrast", 0.4, 8)),
    (("TranslateY", 0.4, 3), ("Sharpness", 0.2, 6)),
    (("Brightness", 0.9, 6), ("Color", 0.2, 8)),
    (("Solarize", 0.5, 2), ("Invert", 0.0, 3)),
    (("Equalize", 0.2, 0), ("AutoContrast", 0.6, 0)),
    (("Equalize", 0.2, 8), ("Equalize", 0.6, 4)),
    (("Color", 0.9, 9), ("Equalize", 0.6, 6)),
    (("AutoContrast", 0.8, 4), ("Solarize", 0.2, 8)),
    (("Brightness", 0.1, 3), ("Color", 0.7, 0)),
    (("Solarize", 0.4, 5), ("AutoContrast", 0.9, 3)),
    (("TranslateY", 0.9, 9), ("TranslateY", 0.7, 9)),
    (("AutoContrast", 0.9, 2), ("Solarize", 0.8, 3)),
    (("Equalize", 0.8, 8), ("Invert", 0.1, 3)),
    (("TranslateY", 0.7, 9), ("AutoContrast", 0.9, 1)),
]
"""The 25 CIFAR-10 AutoAugment sub-policies: ((op, probability, level 0..9), (op, probability, level))."""

AUTOAUGMENT_OPS = (
    "ShearX",
    "ShearY",
    "TranslateX",
    "TranslateY",
    "Rotate",
    "Color",
    "Posterize",
    "Solarize",
    "Contrast",
    "Sharpness",
    "Brightness",
    "AutoContrast",
    "Equalize",
    "Invert",
)
_SIGNED = {"ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate", "Color", "Contrast", "Sharpness", "Brightness"}


def autoaugment_magnitude(op: str, level: int, image_size: int = 32) -> float:
    """The (unsigned) magnitude of ``op`` at ``level`` 0..9 (see the module docstring)."""
    check_choice(op, "op", AUTOAUGMENT_OPS)
    if not isinstance(level, int) or not 0 <= level <= 9:
        raise InputError(f"level must be an integer in 0..9, got {level!r}")
    frac = level / 9
    return {
        "ShearX": 0.3 * frac,
        "ShearY": 0.3 * frac,
        "TranslateX": 150 / 331 * image_size * frac,
        "TranslateY": 150 / 331 * image_size * frac,
        "Rotate": 30.0 * frac,
        "Color": 0.9 * frac,
        "Contrast": 0.9 * frac,
        "Sharpness": 0.9 * frac,
        "Brightness": 0.9 * frac,
        "Posterize": float(round(8 - 4 * frac)),
        "Solarize": 256.0 * (1 - frac),
    }.get(op, 0.0)


def autoaugment_op(image, op: str, magnitude: float, fill: int = 128):
    """Apply one AutoAugment op with a signed ``magnitude`` to a PIL RGB image; returns a PIL image."""
    from PIL import Image, ImageEnhance, ImageOps

    fillcolor = (fill,) * 3
    if op == "ShearX":
        return image.transform(image.size, Image.AFFINE, (1, magnitude, 0, 0, 1, 0), Image.NEAREST, fillcolor=fillcolor)
    if op == "ShearY":
        return image.transform(image.size, Image.AFFINE, (1, 0, 0, magnitude, 1, 0), Image.NEAREST, fillcolor=fillcolor)
    if op == "TranslateX":  # PIL's affine maps output to input, so -m moves the content by +m
        return image.transform(
            image.size, Image.AFFINE, (1, 0, -magnitude, 0, 1, 0), Image.NEAREST, fillcolor=fillcolor
        )
    if op == "TranslateY":
        return image.transform(
            image.size, Image.AFFINE, (1, 0, 0, 0, 1, -magnitude), Image.NEAREST, fillcolor=fillcolor
        )
    if op == "Rotate":
        return image.rotate(magnitude, resample=Image.NEAREST, fillcolor=fillcolor)
    if op in ("Color", "Contrast", "Sharpness", "Brightness"):
        enhancer = {
            "Color": ImageEnhance.Color,
            "Contrast": ImageEnhance.Contrast,
            "Sharpness": ImageEnhance.Sharpness,
            "Brightness": ImageEnhance.Brightness,
        }[op]
        return enhancer(image).enhance(1.0 + magnitude)
    if op == "Posterize":
        return ImageOps.posterize(image, int(magnitude))
    if op == "Solarize":
        return ImageOps.solarize(image, int(magnitude))
    if op == "AutoContrast":
        return ImageOps.autocontrast(image)
    if op == "Equalize":
        return ImageOps.equalize(image)
    if op == "Invert":
        return ImageOps.invert(image)
    raise InputError(f"op must be one of {', '.join(AUTOAUGMENT_OPS)}, got {op!r}")


@dataclass
class CIFAR10AutoAugment(_Random):
    """AutoAugment with the CIFAR-10 policy on a uint8 image ``[3, H, W]`` (numpy or torch).

    Draws one of the 25 sub-policies uniformly; each of its two steps runs with its probability,
    signed ops get a random sign. Returns the same type and layout (uint8 ``[3, H, W]``).
    """

    fill: int = 128
    policy: Sequence = field(default_factory=lambda: list(CIFAR10_POLICY))

    def __call__(self, x, rng=None):
        from PIL import Image

        _check_spatial(x, "image", 3)
        is_t = isinstance(x, torch.Tensor)
        arr = x.detach().cpu().numpy() if is_t else np.asarray(x)
        if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[0] != 3:
            raise InputError(f"CIFAR10AutoAugment needs a uint8 image [3, H, W], got {arr.dtype} {arr.shape}")
        r = _rng(self.rng, rng)
        image = Image.fromarray(np.ascontiguousarray(arr.transpose(1, 2, 0)), mode="RGB")
        for op, prob, level in self.policy[int(r.integers(len(self.policy)))]:
            if r.random() < prob:
                magnitude = autoaugment_magnitude(op, level, image_size=arr.shape[-1])
                if op in _SIGNED and r.random() < 0.5:
                    magnitude = -magnitude
                image = autoaugment_op(image, op, magnitude, self.fill)
        out = np.asarray(image, dtype=np.uint8).transpose(2, 0, 1).copy()
        return torch.from_numpy(out).to(x.device) if is_t else out


def cifar_train_transform(
    dataset: str = "cifar10", autoaugment: bool = False, cutout: bool = True, seed: int | None = None
) -> Compose:
    """The usual CIFAR training pipeline on a uint8 ``[3, 32, 32]`` image -> float32 tensor:
    [AutoAugment] -> RandomCrop(32, padding 4) -> RandomHorizontalFlip -> Normalize -> [Cutout
    (16 px for CIFAR-10, 8 for CIFAR-100)]."""
    check_choice(dataset, "dataset", ("cifar10", "cifar100"))
    mean, std = (CIFAR10_MEAN, CIFAR10_STD) if dataset == "cifar10" else (CIFAR100_MEAN, CIFAR100_STD)
    steps: list[Callable] = [CIFAR10AutoAugment()] if autoaugment else []
    steps += [RandomCrop(size=32, padding=4), RandomHorizontalFlip(p=0.5), Normalize(mean, std)]
    if cutout:
        steps.append(Cutout(length=16 if dataset == "cifar10" else 8))
    return Compose(steps, seed=seed)
