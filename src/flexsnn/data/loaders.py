"""Every dataset name of :func:`make_loaders`, and the DataLoaders over them.

One registry, :data:`DATASETS` (name -> :class:`DatasetEntry`); :func:`dataset_info` tells
the workflow what a name yields so it can check the model against it:

================ ====== ================ ======= ==============================================
name             input  per sample       classes ``root``
================ ====== ================ ======= ==============================================
digits_dvs       frames [T, 2, 34, 34]   10      optional cache folder (embedded, generated)
nmnist           frames [T, 2, 34, 34]   10      data folder (required), full resolution
dvs_gesture      frames [T, 2, 32, 32]   11      data folder; 128x128 average-pooled by 4
dvs_gesture_128  frames [T, 2, 128, 128] 11      data folder; unpooled (the paper's ``gesture_net``)
cifar10_dvs      frames [T, 2, 32, 32]   10      data folder; 128x128 average-pooled by 4 (paper)
cifar10_dvs_128  frames [T, 2, 128, 128] 10      data folder; unpooled (vgg9_dvs ``input_pool=4``)
cifar10_dvs_48   frames [T, 2, 48, 48]   10      data folder; 128x128 resized to 48x48 (paper's ResNet-18)
ncaltech101      frames [T, 2, 45, 60]   101     data folder; 240x180 average-pooled by 4
ncaltech101_48   frames [T, 2, 48, 48]   101     data folder; 240x180 resized to 48x48 (paper's ResNet-18)
cifar10          static [3, 32, 32]      10      data folder (binary version)
cifar100         static [3, 32, 32]      100     data folder (binary version, fine labels)
================ ====== ================ ======= ==============================================

Data folder vs cache: for every dataset but ``digits_dvs``, ``root`` (``--data-root``) is the
user's copy of the files and is only read; binned frames are cached under
:func:`flexsnn.data.cache.cache_dir` (``$FLEXSNN_CACHE``, else ``~/.cache/flexsnn``) keyed by
the files and every binning parameter. ``digits_dvs`` is generated, so its ``root`` is just
where its cache goes.

Batches: frames datasets yield batch-first ``(x [B, T, P, H, W] float32 event counts, y [B]
int64)``, the training loop makes them time-first; static datasets yield normalised images
``(x [B, 3, 32, 32] float32, y [B])``, repeated over T by the model (direct encoding).

Training augmentation (never on the test loader):

- frames, opt-in: ``augment=True`` (the ``"flip_roll5"`` protocol: per-sample random
  horizontal flip and roll by up to 5 pixels) or the name of a protocol of
  :data:`flexsnn.data.augment.FRAME_AUGMENTATIONS` (``"flip_or_reverse_roll5"``,
  ``"vflip_roll20"``, ``"none"``), applied per batch on the batch's device by the training
  loader's ``collate_fn`` (:class:`AugmentFramesCollate`). The ``*_48`` datasets resize each
  binned sample to 48x48 (:class:`flexsnn.data.augment.ResizeFrames`) before caching.
- static, on by default: [AutoAugment, ``autoaugment=True``] -> random crop 32 (padding 4) ->
  horizontal flip -> normalise -> Cutout (:func:`flexsnn.data.augment.cifar_train_transform`).

Randomness: augmentations draw from the training loader's shuffling generator
(``train_loader.generator``, seeded with ``seed``) in the main process, and from the worker's
torch RNG (which DataLoader seeds from that generator) in worker processes. So a seed fixes
the augmentations too, and the training checkpoint, which saves that generator's state,
replays them exactly on resume.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, TensorDataset, default_collate, get_worker_info

from flexsnn.data.augment import (
    DEFAULT_FRAME_AUGMENTATION,
    FRAME_AUGMENTATIONS,
    FrameAugmentation,
    ResizeFrames,
    cifar_train_transform,
    frame_augmentation,
)
from flexsnn.data.cache import cached_arrays, count_dtype
from flexsnn.data.digits_dvs import GENERATOR_VERSION as DIGITS_DVS_VERSION
from flexsnn.data.digits_dvs import DigitsDVS
from flexsnn.data.event_datasets import CIFAR10DVS, NMNIST, DVSGesture, NCaltech101
from flexsnn.data.frames import bin_event_dataset
from flexsnn.data.image_datasets import CIFAR10, CIFAR100
from flexsnn.errors import DatasetNotFoundError, InputError, check_choice, check_positive_int
from flexsnn.io import import_factory, is_import_path, mark_factory

SPLITS = ("train", "test")
INPUT_KINDS = ("frames", "static")

# build(split, n_time_bins, root) -> (x [N, T, P, H, W] event counts, y [N] int labels)
FrameBuild = Callable[[str, int, "str | os.PathLike | None"], "tuple[np.ndarray, np.ndarray]"]


class DatasetInfo(NamedTuple):
    """What a dataset name yields: ``input_kind`` ("frames" | "static"), the per-sample
    ``in_shape`` (``(P, H, W)`` per time step, or ``(C, H, W)``; None if unknown) and
    ``num_classes`` (None if unknown)."""

    input_kind: str
    in_shape: tuple[int, ...] | None
    num_classes: int | None


@dataclass(frozen=True)
class DatasetEntry:
    """One name of :func:`make_loaders`.

    Frames datasets have ``build`` (bump ``version`` when its output changes, so old caches
    are not reused); static datasets have ``images``, a class called as ``images(root,
    train=..., transform=...)`` yielding ``(float image [C, H, W], label)``, and
    ``train_transform(autoaugment) -> transform`` for its training split. ``root_is_data``:
    ``root`` is the user's data folder (required, read only; ``build`` caches by itself under
    ``cache_dir()``, keyed by the files) rather than an optional cache folder. ``source``: the
    class whose attributes describe the expected files, for the missing-data message.
    """

    input_kind: str
    in_shape: tuple[int, ...] | None = None
    num_classes: int | None = None
    root_is_data: bool = False
    build: FrameBuild | None = None
    version: int = 1
    images: Callable[..., Dataset] | None = None
    train_transform: Callable[[bool], Callable] | None = None
    source: type | None = None

    @property
    def info(self) -> DatasetInfo:
        return DatasetInfo(self.input_kind, self.in_shape, self.num_classes)


DATASETS: dict[str, DatasetEntry] = {}


def _shape(in_shape: Iterable[int] | None) -> tuple[int, ...] | None:
    return None if in_shape is None else tuple(check_positive_int(s, "in_shape") for s in in_shape)


def register_frame_dataset(
    name: str,
    build: FrameBuild,
    version: int = 1,
    *,
    in_shape: Iterable[int] | None = None,
    num_classes: int | None = None,
    root_is_data: bool = False,
    source: type | None = None,
) -> None:
    """Make ``load_frames(name, ...)`` / ``make_loaders(name, ...)`` available.

    ``build(split, n_time_bins, root)`` returns ``(x [N, T, P, H, W], y [N])``. With
    ``root_is_data=False`` :func:`load_frames` caches its output under ``root`` (or
    ``cache_dir()``); with ``root_is_data=True`` ``root`` is a required data folder and
    ``build`` must do its own caching, outside ``root``.
    """
    DATASETS[name] = DatasetEntry(
        input_kind="frames",
        in_shape=_shape(in_shape),
        num_classes=None if num_classes is None else check_positive_int(num_classes, "num_classes"),
        root_is_data=bool(root_is_data),
        build=build,
        version=version,
        source=source,
    )


def register_image_dataset(
    name: str,
    images: Callable[..., Dataset],
    num_classes: int,
    train_transform: Callable[[bool], Callable],
    in_shape: Iterable[int] = (3, 32, 32),
) -> None:
    """Make ``make_loaders(name, ...)`` yield static images ``[B, C, H, W]`` read by
    ``images(root, train=..., transform=...)`` from the user's data folder ``root``; the
    training split uses ``train_transform(autoaugment)``, the test split the class default."""
    DATASETS[name] = DatasetEntry(
        input_kind="static",
        in_shape=_shape(in_shape),
        num_classes=check_positive_int(num_classes, "num_classes"),
        root_is_data=True,
        images=images,
        train_transform=train_transform,
        source=images,
    )


def dataset_factory(num_classes: int | None = None, in_shape: Iterable[int] | None = None, version: int = 1):
    """Mark ``build(split, n_time_bins, root) -> (x [N, T, P, H, W], y [N])`` as a frames dataset
    that ``--dataset package.module:build`` (and a run config naming it) loads; ``num_classes`` /
    ``in_shape`` (``(P, H, W)``) fill the model's defaults and checks. Frames are cached as the
    registered datasets' are (bump ``version`` when the output changes)."""

    def mark(build):
        build.dataset_entry = dict(num_classes=num_classes, in_shape=in_shape, version=version)
        return mark_factory("dataset")(build)

    return mark


def check_dataset(name: str) -> str:
    """``name`` if it is a registered dataset; an import path of a :func:`dataset_factory`
    function is imported (that module only) and registered under it first."""
    if name not in DATASETS and is_import_path(name):
        build = import_factory(name, "dataset", "dataset")
        register_frame_dataset(name, build, **build.dataset_entry)
    check_choice(name, "dataset", sorted(DATASETS))
    return name


def dataset_info(name: str) -> DatasetInfo:
    """``(input_kind, in_shape, num_classes)`` of dataset ``name``; e.g. ``dataset_info("cifar10")
    == ("static", (3, 32, 32), 10)``."""
    check_dataset(name)
    return DATASETS[name].info


# ----------------------------------------------------------------------------- registrations


def _digits_dvs_frames(split: str, n_time_bins: int, root) -> tuple[np.ndarray, np.ndarray]:
    return bin_event_dataset(DigitsDVS(root=root, train=split == "train"), n_time_bins)


def _event_frames_builder(
    cls: type, spatial_factor: int, pool: str = "avg", frame_transform: Callable | None = None
) -> FrameBuild:
    """``build`` of a real event dataset: read ``root`` (the data folder), cache the binned
    split under ``cache_dir()`` keyed by the files and binning (``EventDataset.frames``)."""

    def build(split: str, n_time_bins: int, root) -> tuple[np.ndarray, np.ndarray]:
        out = cls(root, train=split == "train").frames(
            n_time_bins,
            spatial_factor=spatial_factor,
            pool=pool,
            cache_root=None,
            progress=True,
            frame_transform=frame_transform,
        )
        return out["x"], out["y"]

    return build


def _register_event_dataset(
    name: str, cls: type, spatial_factor: int, num_classes: int, resize: int | None = None
) -> None:
    width, height, pol = cls.sensor_size
    transform = None if resize is None else ResizeFrames(resize)
    size = (height // spatial_factor, width // spatial_factor) if resize is None else (resize, resize)
    register_frame_dataset(
        name,
        _event_frames_builder(cls, spatial_factor, frame_transform=transform),
        version=1,
        in_shape=(pol, *size),
        num_classes=num_classes,
        root_is_data=True,
        source=cls,
    )


# the frames cache follows the event generator: new events, new frames
register_frame_dataset(
    "digits_dvs", _digits_dvs_frames, version=DIGITS_DVS_VERSION, in_shape=(2, 34, 34), num_classes=10
)
_register_event_dataset("nmnist", NMNIST, spatial_factor=1, num_classes=10)
_register_event_dataset("dvs_gesture", DVSGesture, spatial_factor=4, num_classes=len(DVSGesture.classes))
_register_event_dataset("dvs_gesture_128", DVSGesture, spatial_factor=1, num_classes=len(DVSGesture.classes))
_register_event_dataset("cifar10_dvs", CIFAR10DVS, spatial_factor=4, num_classes=len(CIFAR10DVS.classes))
_register_event_dataset("cifar10_dvs_128", CIFAR10DVS, spatial_factor=1, num_classes=len(CIFAR10DVS.classes))
_register_event_dataset("cifar10_dvs_48", CIFAR10DVS, spatial_factor=1, num_classes=len(CIFAR10DVS.classes), resize=48)
_register_event_dataset("ncaltech101", NCaltech101, spatial_factor=4, num_classes=101)
_register_event_dataset("ncaltech101_48", NCaltech101, spatial_factor=1, num_classes=101, resize=48)
register_image_dataset("cifar10", CIFAR10, 10, functools.partial(cifar_train_transform, "cifar10"))
register_image_dataset("cifar100", CIFAR100, 100, functools.partial(cifar_train_transform, "cifar100"))


# ----------------------------------------------------------------------------- datasets


def _missing_root(name: str, entry: DatasetEntry) -> DatasetNotFoundError:
    src = entry.source
    where = ""
    if src is not None and hasattr(src, "expected_layout"):  # event datasets
        where = f" holding {src.folder}/ laid out as:\n{src.expected_layout}\nDownload from: {src.download_from}"
    elif src is not None and hasattr(src, "train_files"):  # CIFAR binary
        where = (
            f" holding {src.folder}/ with {', '.join([*src.train_files, *src.test_files])} "
            f"(the binary version: {src.url})"
        )
    return DatasetNotFoundError(
        f"dataset {name!r} is read from your own copy of its files: pass --data-root (root=) the "
        f"folder{where}\nflexsnn never downloads datasets; binned frames are cached under "
        f"$FLEXSNN_CACHE (default ~/.cache/flexsnn), never in the data folder."
    )


def _entry(name: str, root) -> DatasetEntry:
    check_dataset(name)
    entry = DATASETS[name]
    if entry.root_is_data and root is None:
        raise _missing_root(name, entry)
    return entry


def load_frames(
    dataset: str = "digits_dvs",
    split: str = "train",
    n_time_bins: int = 10,
    root: str | os.PathLike | None = None,
) -> TensorDataset:
    """The ``split`` of frames dataset ``dataset`` binned into ``n_time_bins`` frames, cached.

    Returns a ``TensorDataset`` of ``(x [N, T, P, H, W] float32 counts, y [N] int64)``;
    for ``digits_dvs`` ``[N, T, 2, 34, 34]``. ``root``: the data folder (required) for real
    datasets, the cache folder for ``digits_dvs`` (see the module docstring).
    """
    entry = _entry(dataset, root)
    if entry.input_kind != "frames":
        frames = sorted(n for n, e in DATASETS.items() if e.input_kind == "frames")
        raise InputError(
            f"dataset {dataset!r} holds static images, not event frames; load_frames takes one of "
            f"{', '.join(map(repr, frames))} (make_loaders serves both kinds)"
        )
    check_choice(split, "split", SPLITS)
    n_time_bins = check_positive_int(n_time_bins, "n_time_bins")
    if entry.root_is_data:
        x, y = entry.build(split, n_time_bins, root)  # cached by the builder, outside root
    else:

        def build() -> dict[str, np.ndarray]:
            x, y = entry.build(split, n_time_bins, root)
            return {"x": x.astype(count_dtype(x)), "y": np.asarray(y, dtype=np.int64)}

        params = {"dataset": dataset, "split": split, "n_time_bins": n_time_bins, "version": entry.version}
        arrays = cached_arrays(f"frames-{dataset.replace(':', '-')}-{split}-T{n_time_bins}", params, build, root=root)
        x, y = arrays["x"], arrays["y"]
    return TensorDataset(
        torch.from_numpy(np.asarray(x).astype(np.float32, copy=False)),
        torch.from_numpy(np.asarray(y).astype(np.int64, copy=False)),
    )


# ----------------------------------------------------------------------------- augmentation


def loader_generator_here(generator: torch.Generator | None) -> torch.Generator | None:
    """The generator augmentations draw from: the loader's own in the main process; ``None``
    (the process-wide torch RNG, which DataLoader seeds from that generator) in a worker."""
    return generator if get_worker_info() is None else None


class _DropsGeneratorWhenPickled:
    # A worker process draws from its own seeded torch RNG, never from a copy of the
    # loader's generator, so the generator need not (and may not) be sent to it.
    generator: torch.Generator | None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "generator": None}


@dataclass
class AugmentFramesCollate(_DropsGeneratorWhenPickled):
    """``collate_fn`` of a frames training loader: stack ``(x [T, P, H, W], y)`` samples, then
    flip / reverse / roll each sample of ``x [B, T, P, H, W]`` at random
    (:meth:`flexsnn.data.augment.FrameAugmentation.apply_batch`)."""

    generator: torch.Generator | None = None
    augmentation: FrameAugmentation = field(default_factory=FrameAugmentation)

    def __call__(self, batch):
        x, y = default_collate(batch)
        return self.augmentation.apply_batch(x, loader_generator_here(self.generator)), y


@dataclass
class TorchSeededTransform(_DropsGeneratorWhenPickled):
    """Run a numpy-random per-sample transform (``transform(x, rng=...)``, e.g. a
    :class:`flexsnn.data.augment.Compose`) with a numpy Generator seeded by a draw from
    ``generator`` (see :func:`loader_generator_here`), so the loader's seed fixes it."""

    transform: Callable
    generator: torch.Generator | None = None

    def __call__(self, x):
        seed = int(torch.randint(0, 2**62, (1,), generator=loader_generator_here(self.generator)))
        return self.transform(x, rng=np.random.default_rng(seed))


# ----------------------------------------------------------------------------- loaders


def _check_flag(value: Any, name: str, allow_none: bool = False) -> None:
    if not (isinstance(value, bool) or (allow_none and value is None)):
        raise InputError(f"{name} must be True or False{' or None' if allow_none else ''}, got {value!r}")


def make_loaders(
    dataset: str = "digits_dvs",
    n_time_bins: int = 10,
    batch_size: int = 64,
    seed: int = 0,
    root: str | os.PathLike | None = None,
    num_workers: int = 0,
    augment: bool | str | None = None,
    autoaugment: bool = False,
) -> tuple[DataLoader, DataLoader]:
    """``(train_loader, test_loader)`` of ``dataset`` (a name of :data:`DATASETS`).

    Batches: ``(x [B, T, P, H, W], y [B])`` for frames datasets (binned at ``n_time_bins``),
    ``(x [B, C, H, W], y [B])`` for static ones (``n_time_bins`` unused). ``root``: see the
    module docstring. The training order is shuffled by ``train_loader.generator`` seeded with
    ``seed``; the test order is fixed. ``augment``: training augmentation on or off, ``None``
    = the dataset's default (frames: off; static: crop / flip / Cutout on); for frames datasets
    also the name of a protocol of :data:`flexsnn.data.augment.FRAME_AUGMENTATIONS`
    (``True`` = ``"flip_roll5"``). ``autoaugment``:
    add CIFAR AutoAugment to a static dataset's training pipeline. The test loader is never
    augmented.
    """
    batch_size = check_positive_int(batch_size, "batch_size")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise InputError(f"seed must be an integer, got {seed!r}")
    if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 0:
        raise InputError(f"num_workers must be an integer >= 0, got {num_workers!r}")
    if isinstance(augment, str):
        if augment not in FRAME_AUGMENTATIONS:
            raise InputError(
                f"augment must be True, False, None or the name of an event-frame protocol "
                f"({', '.join(map(repr, sorted(FRAME_AUGMENTATIONS)))}), got {augment!r}"
            )
    else:
        _check_flag(augment, "augment", allow_none=True)
    _check_flag(autoaugment, "autoaugment")
    n_time_bins = check_positive_int(n_time_bins, "n_time_bins")
    entry = _entry(dataset, root)
    generator = torch.Generator().manual_seed(seed)
    collate_fn = None
    if entry.input_kind == "frames":
        if autoaugment:
            raise InputError(
                f"autoaugment applies to static image datasets, not to the event dataset {dataset!r}; "
                "use augment=True for its flips and rolls"
            )
        augmentation = frame_augmentation(
            augment if isinstance(augment, str) else DEFAULT_FRAME_AUGMENTATION if augment else "none"
        )
        train = load_frames(dataset, "train", n_time_bins, root)
        test = load_frames(dataset, "test", n_time_bins, root)
        if augmentation is not None:
            collate_fn = AugmentFramesCollate(generator, augmentation)
    else:
        if isinstance(augment, str):
            raise InputError(
                f"augment={augment!r} names an event-frame protocol; the static image dataset "
                f"{dataset!r} takes augment=True / False (crop / flip / Cutout) and autoaugment"
            )
        if autoaugment and augment is False:
            raise InputError("autoaugment=True needs augmentation on; got augment=False")
        transform = None  # the dataset's own: Normalize only
        if augment is not False:
            transform = TorchSeededTransform(entry.train_transform(autoaugment), generator)
        train = entry.images(root, train=True, transform=transform)
        test = entry.images(root, train=False)
    train_loader = DataLoader(
        train, batch_size=batch_size, shuffle=True, generator=generator, num_workers=num_workers, collate_fn=collate_fn
    )
    test_loader = DataLoader(test, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    return train_loader, test_loader


# ----------------------------------------------------------------------------- model checks


def dataset_model_kwargs(dataset: str, accepted: Iterable[str]) -> dict[str, Any]:
    """Model-zoo keyword arguments that fit ``dataset``, restricted to the ``accepted`` names:
    ``num_classes``, ``in_shape`` (list), ``in_channels``, ``in_size`` (square inputs only) and
    ``input_kind``. Merge the user's own kwargs over them."""
    info = dataset_info(dataset)
    accepted = set(accepted)
    out: dict[str, Any] = {}
    if info.num_classes is not None:
        out["num_classes"] = info.num_classes
    if info.in_shape is not None:
        out["in_shape"] = list(info.in_shape)
        out["in_channels"] = info.in_shape[0]
        if len(info.in_shape) == 3 and info.in_shape[1] == info.in_shape[2]:
            out["in_size"] = info.in_shape[1]
    out["input_kind"] = info.input_kind
    return {k: v for k, v in out.items() if k in accepted}


def _model_num_classes(model: Any) -> int | None:
    head = getattr(model, "head", None)
    linears = [m for m in head.modules() if isinstance(m, torch.nn.Linear)] if head is not None else []
    return linears[-1].out_features if linears else None


def _fits(model_shape: tuple, data_shape: tuple | None) -> bool:
    """Does a model's ``input_shape`` (``None`` = any size) accept per-sample ``data_shape``?"""
    return (
        data_shape is not None
        and len(model_shape) == len(data_shape)
        and all(s is None or s == d for s, d in zip(model_shape, data_shape))
    )


def _layout(kind: str, shape: Iterable[Any] | None) -> str:
    dims = ", ".join("*" if s is None else str(s) for s in shape) if shape is not None else "..."
    return f"[B, T, {dims}]" if kind == "frames" else f"[B, {dims}]"


def check_model_input(dataset: str, model: Any) -> None:
    """Raise InputError unless ``model`` (a StagedNet: ``input_kind``, ``input_shape``, a
    Linear head) takes what ``dataset`` yields: same input kind, a per-sample shape that
    matches (``None`` entries match any size) and at least as many outputs as classes."""
    info = dataset_info(dataset)
    kind = getattr(model, "input_kind", None)
    shape = getattr(model, "input_shape", None)
    fix = "pick a model for this input or set model_kwargs to match (in_channels / in_size / in_shape / input_kind)"
    if kind is not None and kind != info.input_kind:
        raise InputError(
            f"model takes {kind} input {_layout(kind, shape)} but dataset {dataset!r} yields {info.input_kind} "
            f"batches {_layout(info.input_kind, info.in_shape)}; {fix}"
        )
    if shape is not None and info.in_shape is not None and not _fits(shape, info.in_shape):
        same_files = [
            n
            for n, e in DATASETS.items()
            if n != dataset
            and e.source is not None
            and e.source is DATASETS[dataset].source
            and _fits(shape, e.in_shape)
        ]
        other = f" (dataset {same_files[0]!r} yields those from the same files)" if same_files else ""
        raise InputError(
            f"model takes {_layout(info.input_kind, shape)} but dataset {dataset!r} yields "
            f"{_layout(info.input_kind, info.in_shape)}{other}; {fix}"
        )
    classes = _model_num_classes(model)
    if classes is not None and info.num_classes is not None and classes < info.num_classes:
        raise InputError(
            f"model has {classes} outputs but dataset {dataset!r} has {info.num_classes} classes; "
            f"set model_kwargs num_classes={info.num_classes}"
        )
