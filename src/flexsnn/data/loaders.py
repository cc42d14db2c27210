"""Binned event datasets as tensors, cached on disk, and their DataLoaders.

``load_frames(name, split, n_time_bins)`` returns a ``TensorDataset`` of
``(x [N, T, P, H, W] float32 event counts, y [N] int64)``; the binned arrays are cached
under (dataset, split, n_time_bins, builder version), so each binning is computed once.
DataLoaders yield batch-first ``(x [B, T, P, H, W], y [B])``; the training loop makes them
time-first.

New datasets are added with :func:`register_frame_dataset`.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset

from flexsnn.data.cache import cached_arrays
from flexsnn.errors import InputError, check_choice, check_positive_int

SPLITS = ("train", "test")

# build(split, n_time_bins, root) -> (x [N, T, P, H, W] event counts, y [N] int labels)
FrameBuild = Callable[[str, int, "str | os.PathLike | None"], "tuple[np.ndarray, np.ndarray]"]


@dataclass(frozen=True)
class FrameBuilder:
    """How to produce a dataset's binned frames; bump ``version`` when ``build``'s output
    changes so old caches are not reused."""

    build: FrameBuild
    version: int = 1


FRAME_DATASETS: dict[str, FrameBuilder] = {}


def register_frame_dataset(name: str, build: FrameBuild, version: int = 1) -> None:
    """Make ``load_frames(name, ...)`` available; ``build(split, n_time_bins, root)`` must
    return ``(x [N, T, P, H, W], y [N])``."""
    FRAME_DATASETS[name] = FrameBuilder(build=build, version=version)


def bin_event_dataset(dataset, n_time_bins: int) -> tuple[np.ndarray, np.ndarray]:
    """Bin every sample of a Tonic-style event dataset (``sensor_size``, ``(events, label)``
    items) into ``n_time_bins`` frames: ``(x [N, T, P, H, W] float32, y [N] int64)``."""
    from flexsnn.data.frames import to_frames

    width, height, pol = dataset.sensor_size
    x = np.zeros((len(dataset), n_time_bins, pol, height, width), dtype=np.float32)
    y = np.zeros(len(dataset), dtype=np.int64)
    for i in range(len(dataset)):
        events, label = dataset[i]
        x[i] = to_frames(events, dataset.sensor_size, n_time_bins=n_time_bins)
        y[i] = label
    return x, y


def _digits_dvs_frames(split: str, n_time_bins: int, root) -> tuple[np.ndarray, np.ndarray]:
    from flexsnn.data.digits_dvs import DigitsDVS

    return bin_event_dataset(DigitsDVS(root=root, train=split == "train"), n_time_bins)


register_frame_dataset("digits_dvs", _digits_dvs_frames, version=1)


def _count_dtype(x: np.ndarray) -> np.dtype:
    """The smallest unsigned int type that holds the counts exactly (smaller cache files)."""
    if x.size == 0 or (x.min() >= 0 and np.array_equal(x, np.round(x))):
        for dtype in (np.uint8, np.uint16, np.uint32):
            if x.size == 0 or x.max() <= np.iinfo(dtype).max:
                return np.dtype(dtype)
    return np.dtype(np.float32)


def load_frames(
    dataset: str = "digits_dvs",
    split: str = "train",
    n_time_bins: int = 10,
    root: str | os.PathLike | None = None,
) -> TensorDataset:
    """The ``split`` of ``dataset`` binned into ``n_time_bins`` frames, cached on disk.

    Returns a ``TensorDataset`` of ``(x [N, T, P, H, W] float32 counts, y [N] int64)``;
    for ``digits_dvs`` ``[N, T, 2, 34, 34]``. ``root`` is the data/cache folder.
    """
    check_choice(dataset, "dataset", sorted(FRAME_DATASETS))
    check_choice(split, "split", SPLITS)
    n_time_bins = check_positive_int(n_time_bins, "n_time_bins")
    builder = FRAME_DATASETS[dataset]

    def build() -> dict[str, np.ndarray]:
        x, y = builder.build(split, n_time_bins, root)
        return {"x": x.astype(_count_dtype(x)), "y": np.asarray(y, dtype=np.int64)}

    params = {"dataset": dataset, "split": split, "n_time_bins": n_time_bins, "version": builder.version}
    arrays = cached_arrays(f"frames-{dataset}-{split}-T{n_time_bins}", params, build, root=root)
    x = torch.from_numpy(arrays["x"].astype(np.float32, copy=False))
    y = torch.from_numpy(arrays["y"].astype(np.int64, copy=False))
    return TensorDataset(x, y)


def make_loaders(
    dataset: str = "digits_dvs",
    n_time_bins: int = 10,
    batch_size: int = 64,
    seed: int = 0,
    root: str | os.PathLike | None = None,
    num_workers: int = 0,
) -> tuple[DataLoader, DataLoader]:
    """``(train_loader, test_loader)`` over :func:`load_frames`; batches are ``(x [B, T, P,
    H, W], y [B])``. The training order is shuffled by a generator seeded with ``seed``
    (``train_loader.generator``), so runs are reproducible; the test order is fixed."""
    batch_size = check_positive_int(batch_size, "batch_size")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise InputError(f"seed must be an integer, got {seed!r}")
    if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 0:
        raise InputError(f"num_workers must be an integer >= 0, got {num_workers!r}")
    train = load_frames(dataset, "train", n_time_bins, root)
    test = load_frames(dataset, "test", n_time_bins, root)
    generator = torch.Generator().manual_seed(seed)
    train_loader = DataLoader(train, batch_size=batch_size, shuffle=True, generator=generator,
                              num_workers=num_workers)
    test_loader = DataLoader(test, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    return train_loader, test_loader
