"""Real event-camera datasets read from a user's disk: N-MNIST, DVS Gesture, CIFAR10-DVS, N-Caltech101.

Thin Tonic-style classes over :mod:`flexsnn.data.readers`: each sets ``sensor_size``,
``dtype``, ``classes``, its ``folder`` and expected file layout as class attributes, lists its
files and reads a sample with one reader call. flexsnn never downloads: each class reads the
dataset's own on-disk layout under ``root`` (either ``root/<folder>`` as Tonic's ``save_to``
lays it out, or ``root`` itself) and yields samples ``(events, label)``: ``events`` is an
:data:`~flexsnn.data.events.EVENT_DTYPE` array sorted by ``t`` (microseconds, ``p`` in {0, 1}),
``label`` an int.

Why not ``tonic.datasets`` directly: Tonic downloads when its existence check fails, and its
checks need the full archives (10,000 N-MNIST .bin files, the .zip next to them, ...). We read
the same layouts ourselves, so a partial or re-packed copy works and nothing is ever fetched.
Layouts:

- N-MNIST: ``Train/<digit>/*.bin``, ``Test/<digit>/*.bin``; N-Caltech101:
  ``Caltech101/<class>/*.bin`` (events keep the raw sensor coordinates; frames use a 240x180
  canvas, as SpikingJelly does, and drop the rare events outside it).
- DVS Gesture, Tonic's preprocessed copy: ``ibmGesture{Train,Test}/userNN_<lighting>/<label>.npy``;
  IBM's original ``DvsGesture/`` folder: ``userNN_<lighting>.aedat`` (AEDAT 3.1),
  ``userNN_<lighting>_labels.csv`` and ``trials_to_{train,test}.txt``; a sample is the events
  with ``start <= t < end`` of one label row.
- CIFAR10-DVS: the original ``<class>/cifar10_<class>_<i>.aedat`` files (AEDAT 2.0), or
  SpikingJelly's converted ``events_np/<class>/*.npz``, in SpikingJelly's orientation.

Every sample is checked as it is read (:mod:`flexsnn.data.readers`: ranges, integrality, at
most ``max_events`` events, names inside the dataset folder); a bad file raises
:class:`~flexsnn.errors.DatasetError` naming it.

Splits: N-MNIST and DVS Gesture ship train/test. CIFAR10-DVS and N-Caltech101 do not;
:func:`per_class_split` splits each class deterministically: the first ``n_train`` files of
the class in natural file-name order (numbers compared as numbers) are train, the rest test.
CIFAR10-DVS uses the paper's 900 / 100 per class; N-Caltech101 puts ``floor(0.9 * n)`` of each
class in train. Frames: :meth:`EventDataset.frames` bins each sample to ``T`` frames
``[T, P, H, W]`` and optionally pools them (:func:`flexsnn.data.frames.bin_event_samples`),
caching the stacked split on disk keyed by every binning parameter;
:meth:`EventDataset.build_frames` is the same without the cache. The cache holds integer counts
as uint8/16/32 when they fit; averaged frames as float32. Memory: the split is returned as one
float32 array, e.g. CIFAR10-DVS train at T = 10 is 11.8 GB at 128x128 and 0.74 GB at
``spatial_factor=4``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from flexsnn.data.cache import cached_arrays, count_dtype
from flexsnn.data.events import EVENT_DTYPE, sort_by_time
from flexsnn.data.frames import POOL_MODES, bin_event_samples
from flexsnn.data.readers import (
    check_event_count,
    default_max_events,
    read_aedat2_dvs128,
    read_aedat31_polarity,
    read_atis_bin,
    read_events_npz,
    read_gesture_labels,
    read_tonic_gesture_npy,
    read_trial_list,
)
from flexsnn.errors import DatasetError, DatasetNotFoundError, InputError, check_choice, check_positive_int

__all__ = [
    "CIFAR10DVS",
    "DVSGesture",
    "EVENT_DATASETS",
    "EventDataset",
    "GESTURE_CLASSES",
    "NCaltech101",
    "NMNIST",
    "event_frames",
    "natural_key",
    "per_class_split",
]


# ----------------------------------------------------------------------------- splits


def natural_key(name: str) -> tuple:
    """Sort key comparing digit runs as numbers: ``img_2`` < ``img_10``."""
    return tuple((0, int(tok), "") if tok.isdigit() else (1, 0, tok) for tok in re.split(r"(\d+)", name) if tok)


def per_class_split(
    names_by_class: dict[Any, Sequence[str]],
    n_train: int | None = None,
    train_ratio: float | None = None,
) -> tuple[dict[Any, list[str]], dict[Any, list[str]]]:
    """Deterministic per-class split: the first files of each class (natural order) are train.

    Give ``n_train`` (files per class, e.g. 900 for CIFAR10-DVS) or ``train_ratio`` (train gets
    ``floor(ratio * n)`` files of a class of ``n``). Returns ``(train, test)`` dicts class -> names.
    """
    if (n_train is None) == (train_ratio is None):
        raise InputError("give exactly one of n_train (files per class) or train_ratio (0 < ratio < 1)")
    if n_train is not None:
        n_train = check_positive_int(n_train, "n_train")
    elif not 0.0 < float(train_ratio) < 1.0:
        raise InputError(f"train_ratio must be in (0, 1), got {train_ratio!r}")
    train, test = {}, {}
    for cls, names in names_by_class.items():
        ordered = sorted(names, key=natural_key)
        k = n_train if n_train is not None else int(np.floor(train_ratio * len(ordered)))
        if n_train is not None and len(ordered) <= k:
            raise InputError(f"class {cls!r} has {len(ordered)} files; n_train={k} leaves none for test")
        train[cls], test[cls] = ordered[:k], ordered[k:]
    return train, test


# ----------------------------------------------------------------------------- base class


@dataclass(frozen=True)
class _Sample:
    path: Path
    start: int | None = None  # [start, end) in us, for samples cut from a longer recording
    end: int | None = None

    def __str__(self) -> str:
        return str(self.path) if self.start is None else f"{self.path} [{self.start}, {self.end}) us"


class EventDataset:
    """Base of the event datasets: scan ``root`` once, read one sample per ``__getitem__``.

    Subclasses set the Tonic-style class attributes and implement ``_scan`` (list the files)
    and ``_read`` (one reader call). ``sensor_size`` is ``(W, H, P)`` as in Tonic; frames are
    ``[T, P, H, W]``. ``max_events``: the per-sample cap (default
    :func:`flexsnn.data.readers.default_max_events`); a larger sample raises DatasetError.
    """

    folder: ClassVar[str]  # Tonic's folder name under its save_to
    sensor_size: ClassVar[tuple[int, int, int]]
    dtype: ClassVar[np.dtype] = EVENT_DTYPE
    ordering: ClassVar[str] = "xytp"
    classes: ClassVar[Sequence[str]]
    expected_layout: ClassVar[str]  # human-readable layout, shown when files are missing
    download_from: ClassVar[str]

    def __init__(
        self,
        root: str | os.PathLike,
        train: bool = True,
        transform: Callable | None = None,
        target_transform: Callable | None = None,
        max_events: int | None = None,
    ):
        if root is None:
            raise InputError(f"{type(self).__name__} needs root= the folder holding the dataset files")
        self.root = Path(root).expanduser()
        self.train = bool(train)
        self.transform = transform
        self.target_transform = target_transform
        self.max_events = default_max_events() if max_events is None else check_positive_int(max_events, "max_events")
        self.location = self._locate()
        samples, targets = self._scan(self.location)
        if not samples:
            self._missing(f"no {'train' if self.train else 'test'} samples found under {self.location}")
        self.samples: list[_Sample] = samples
        self.targets: list[int] = targets

    # -- layout
    def _candidates(self) -> list[Path]:
        return [self.root / self.folder, self.root]

    def _looks_right(self, path: Path) -> bool:
        raise NotImplementedError

    def _locate(self) -> Path:
        for path in self._candidates():
            if path.is_dir() and self._looks_right(path):
                return path
        self._missing(f"dataset not found under {self.root}")

    def _missing(self, what: str):
        raise DatasetNotFoundError(
            f"{type(self).__name__}: {what}. flexsnn does not download datasets; put the files at\n"
            f"  {self.root / self.folder}\n(or directly in {self.root}) laid out as:\n{self.expected_layout}\n"
            f"Download from: {self.download_from}"
        )

    def _scan(self, location: Path) -> tuple[list[_Sample], list[int]]:
        raise NotImplementedError

    def _read(self, sample: _Sample) -> np.ndarray:
        raise NotImplementedError

    # -- Tonic-style access
    def __len__(self) -> int:
        return len(self.samples)

    def _load(self, sample: _Sample) -> np.ndarray:
        """One sample's events, capped at ``max_events`` and sorted by ``t`` (stable)."""
        events = self._read(sample)
        check_event_count(len(events), self.max_events, str(sample))
        return sort_by_time(events)

    def __getitem__(self, index: int) -> tuple[np.ndarray, int]:
        """``(events [N] EVENT_DTYPE sorted by t, label int)``."""
        events = self._load(self.samples[index])
        target = self.targets[index]
        if self.transform is not None:
            events = self.transform(events)
        if self.target_transform is not None:
            target = self.target_transform(target)
        return events, target

    def __repr__(self) -> str:
        return f"{type(self).__name__}(root={str(self.root)!r}, train={self.train}, samples={len(self)})"

    @property
    def split(self) -> str:
        return "train" if self.train else "test"

    def _fingerprint(self) -> list:
        """Relative paths, sizes and cut points of every sample: the cache key's view of the data."""
        out = []
        for s in self.samples:
            rel = os.path.relpath(s.path, self.location)
            out.append([rel, s.path.stat().st_size, s.start, s.end])
        return out

    def build_frames(
        self,
        n_time_bins: int,
        spatial_factor: int = 1,
        pool: str = "avg",
        progress: bool = True,
        frame_transform: Callable | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Bin the whole split, uncached: ``(x [N, T, P, H/f, W/f] float32, y [N] int64)``.

        Each sample is binned by ``flexsnn.data.frames.to_frames`` (event counts in ``T`` equal
        time bins between its first and last event), then pooled over ``spatial_factor`` x
        ``spatial_factor`` pixel blocks: ``pool="avg"`` (the paper's CIFAR10-DVS VGG9 average-pools
        128x128 by 4 to 32x32) or ``"sum"`` (keeps integer counts); see
        :func:`flexsnn.data.frames.bin_event_samples`; ``frame_transform`` (deterministic, e.g.
        ``ResizeFrames(48)``) then maps each sample's frames.
        """
        samples = ((self._inside_sensor(self._load(s)), t) for s, t in zip(self.samples, self.targets))
        return bin_event_samples(
            samples,
            len(self),
            self.sensor_size,
            n_time_bins,
            spatial_factor,
            pool,
            progress,
            desc=f"binning {type(self).__name__} {self.split}",
            frame_transform=frame_transform,
        )

    def frames(
        self,
        n_time_bins: int,
        spatial_factor: int = 1,
        pool: str = "avg",
        cache_root: str | os.PathLike | None = None,
        progress: bool = True,
        frame_transform: Callable | None = None,
    ) -> dict[str, np.ndarray]:
        """:meth:`build_frames` cached on disk: ``{"x": [N, T, P, H/f, W/f] float32, "y": [N] int64}``.

        The cache key holds the dataset, split, every sample's relative path / size / cut points,
        ``n_time_bins``, ``spatial_factor``, ``pool`` and the ``repr`` of ``frame_transform``
        (a dataclass such as ``ResizeFrames(size=48, antialias=False)`` names all its fields),
        so changing any of them rebuilds. ``cache_root`` defaults to ``$FLEXSNN_CACHE`` or
        ``~/.cache/flexsnn``.
        """
        n_time_bins = check_positive_int(n_time_bins, "n_time_bins")
        spatial_factor = check_positive_int(spatial_factor, "spatial_factor")
        check_choice(pool, "pool", POOL_MODES)
        params = {
            "dataset": type(self).__name__,
            "split": self.split,
            "n_time_bins": n_time_bins,
            "spatial_factor": spatial_factor,
            "pool": pool,
            "sensor_size": list(self.sensor_size),
            "files": self._fingerprint(),
            "format": 2,
        }
        if frame_transform is not None:
            params["frame_transform"] = repr(frame_transform)

        def build() -> dict[str, np.ndarray]:
            x, y = self.build_frames(n_time_bins, spatial_factor, pool, progress, frame_transform)
            return {"x": x.astype(count_dtype(x)), "y": y}  # integer counts stored compactly

        out = cached_arrays(f"{type(self).__name__.lower()}-{self.split}", params, build, root=cache_root)
        return {"x": out["x"].astype(np.float32, copy=False), "y": out["y"]}

    def _inside_sensor(self, events: np.ndarray) -> np.ndarray:
        """Hook: datasets whose recordings may exceed ``sensor_size`` crop here (default: keep all)."""
        return events

    def _split_samples(self, data_dir: Path, split: tuple[dict, dict]) -> tuple[list[_Sample], list[int]]:
        """This split's samples ``data_dir/<class>/<name>`` of a :func:`per_class_split` result;
        labels are the class indices in ``self.classes``."""
        chosen = split[0] if self.train else split[1]
        samples, targets = [], []
        for label, cls in enumerate(self.classes):
            for name in chosen[cls]:
                samples.append(_Sample(data_dir / cls / name))
                targets.append(label)
        return samples, targets


# ----------------------------------------------------------------------------- datasets


def _files_in_class_folders(location: Path, suffix: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for cls_dir in sorted(p for p in location.iterdir() if p.is_dir()):
        names = [f.name for f in cls_dir.iterdir() if f.is_file() and f.name.endswith(suffix)]
        if names:
            out[cls_dir.name] = names
    return out


class NMNIST(EventDataset):
    """N-MNIST (Orchard et al. 2015): 34x34 ATIS saccade recordings of MNIST digits, 10 classes."""

    folder = "NMNIST"
    sensor_size = (34, 34, 2)
    classes = tuple(str(d) for d in range(10))
    expected_layout = (
        "  Train/0/*.bin ... Train/9/*.bin   (60,000 files, from Train.zip)\n"
        "  Test/0/*.bin  ... Test/9/*.bin    (10,000 files, from Test.zip)"
    )
    download_from = (
        "https://www.garrickorchard.com/datasets/n-mnist (Train.zip, Test.zip; "
        "mirror: https://data.mendeley.com/datasets/468j46mzdv)"
    )

    def _looks_right(self, path: Path) -> bool:
        return (path / "Train").is_dir() or (path / "Test").is_dir()

    def _scan(self, location):
        split_dir = location / ("Train" if self.train else "Test")
        if not split_dir.is_dir():
            self._missing(f"folder {split_dir} is missing")
        samples, targets = [], []
        for cls, names in _files_in_class_folders(split_dir, ".bin").items():
            if cls not in self.classes:
                raise DatasetError(f"unexpected class folder {split_dir / cls}; N-MNIST class folders are 0..9")
            for name in sorted(names, key=natural_key):
                samples.append(_Sample(split_dir / cls / name))
                targets.append(int(cls))
        return samples, targets

    def _read(self, sample):
        return read_atis_bin(sample.path, self.sensor_size, max_events=self.max_events)


class NCaltech101(EventDataset):
    """N-Caltech101 (Orchard et al. 2015): ATIS recordings of Caltech101, 101 class folders.

    Labels are the indices of the class folders in sorted order (``self.classes``). There is no
    official split: train holds the first ``floor(train_ratio * n)`` files of each class in
    natural file-name order (``image_0001`` ... ), test the rest (SpikingJelly-style 90 / 10).
    Events keep the raw sensor coordinates; frames use a 240x180 (W x H) canvas, as SpikingJelly
    does, and drop the (rare) events outside it.
    """

    folder = "NCALTECH101"
    sensor_size = (240, 180, 2)
    classes: Sequence[str] = ()  # discovered from the class folders on disk
    expected_layout = (
        "  Caltech101/<class>/image_0001.bin ...   (101 class folders incl. BACKGROUND_Google,\n"
        "                                          8,709 files, from Caltech101.zip)"
    )
    download_from = (
        "https://www.garrickorchard.com/datasets/n-caltech101 (mirror: https://data.mendeley.com/datasets/cy6cvx3ryv)"
    )

    def __init__(
        self,
        root,
        train=True,
        transform=None,
        target_transform=None,
        train_ratio: float = 0.9,
        max_events: int | None = None,
    ):
        self.train_ratio = float(train_ratio)
        super().__init__(root, train, transform, target_transform, max_events)

    def _looks_right(self, path: Path) -> bool:
        return (path / "Caltech101").is_dir()

    def _scan(self, location):
        data_dir = location / "Caltech101"
        by_class = _files_in_class_folders(data_dir, ".bin")
        self.classes = sorted(by_class)
        return self._split_samples(data_dir, per_class_split(by_class, train_ratio=self.train_ratio))

    def _read(self, sample):
        return read_atis_bin(sample.path, max_events=self.max_events)  # raw coordinates, cropped for frames

    def _inside_sensor(self, events):
        w, h, _ = self.sensor_size
        return events[(events["x"] < w) & (events["y"] < h)]


class CIFAR10DVS(EventDataset):
    """CIFAR10-DVS (Li et al. 2017): 10 classes x 1000 DVS128 recordings of CIFAR10 images.

    Split (the paper's): per class, the first ``n_train_per_class`` files in natural file-name
    order (``cifar10_airplane_0`` .. ``_899``) are train and the rest (``_900`` .. ``_999``) test.
    ``n_train_per_class`` exists so small copies can be split too; keep 900 for the real data.
    """

    folder = "CIFAR10DVS"
    sensor_size = (128, 128, 2)
    classes = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
    expected_layout = (
        "  <class>/cifar10_<class>_<i>.aedat   for <class> in airplane automobile bird cat deer\n"
        "                                      dog frog horse ship truck, i = 0..999\n"
        "                                      (unzip airplane.zip ... truck.zip here)\n"
        "  or SpikingJelly's converted copy: events_np/<class>/cifar10_<class>_<i>.npz"
    )
    download_from = "https://figshare.com/articles/dataset/CIFAR10-DVS_New/4724671"

    def __init__(
        self,
        root,
        train=True,
        transform=None,
        target_transform=None,
        n_train_per_class: int = 900,
        max_events: int | None = None,
    ):
        self.n_train_per_class = check_positive_int(n_train_per_class, "n_train_per_class")
        super().__init__(root, train, transform, target_transform, max_events)

    def _candidates(self):
        base = super()._candidates()
        return [q for b in base for q in (b, b / "events_np")]

    def _looks_right(self, path: Path) -> bool:
        return any((path / c).is_dir() for c in self.classes)

    def _scan(self, location):
        by_class: dict[str, list[str]] = {}
        for cls in self.classes:
            cls_dir = location / cls
            if not cls_dir.is_dir():
                self._missing(f"class folder {cls_dir} is missing")
            names = [f.name for f in cls_dir.iterdir() if f.suffix in (".aedat", ".npz")]
            if not names:
                if any(f.suffix == ".aedat4" for f in cls_dir.iterdir()):
                    self._missing(
                        f"{cls_dir} holds Tonic's .aedat4 conversion, which flexsnn does not read; "
                        "use the original .aedat files"
                    )
                self._missing(f"{cls_dir} holds no .aedat or .npz files")
            by_class[cls] = names
        return self._split_samples(location, per_class_split(by_class, n_train=self.n_train_per_class))

    def _read(self, sample):
        if sample.path.suffix == ".npz":
            return read_events_npz(sample.path, self.sensor_size, max_events=self.max_events)
        return read_aedat2_dvs128(sample.path, max_events=self.max_events)


GESTURE_CLASSES = (
    "hand clapping",
    "right hand wave",
    "left hand wave",
    "right arm clockwise",
    "right arm counter-clockwise",
    "left arm clockwise",
    "left arm counter-clockwise",
    "arm roll",
    "air drums",
    "air guitar",
    "other gestures",
)


class DVSGesture(EventDataset):
    """IBM DVS128 Gesture (Amir et al. 2017): 11 classes, 29 users x 3 lighting conditions.

    Reads Tonic's preprocessed copy (``ibmGestureTrain`` / ``ibmGestureTest`` folders of
    ``<label>.npy``, label 0..10) or IBM's original ``DvsGesture`` folder (AEDAT 3.1 recordings
    cut into samples by their ``_labels.csv``; csv classes 1..11 become labels 0..10). The split
    is the official one (users 1-23 train, 24-29 test), as listed by the dataset's files.
    """

    folder = "DVSGesture"
    sensor_size = (128, 128, 2)
    classes = GESTURE_CLASSES
    expected_layout = (
        "  ibmGestureTrain/userNN_<lighting>/<label>.npy and ibmGestureTest/...   (Tonic's copy:\n"
        "        ibmGestureTrain.tar.gz, ibmGestureTest.tar.gz, unpacked here)\n"
        "  or IBM's original: DvsGesture/userNN_<lighting>.aedat, userNN_<lighting>_labels.csv,\n"
        "        trials_to_train.txt, trials_to_test.txt   (DvsGesture.tar.gz, unpacked here)"
    )
    download_from = (
        "https://research.ibm.com/interactive/dvsgesture/ (DvsGesture.tar.gz); Tonic's copy: "
        "https://figshare.com/ndownloader/files/38022171 (train), .../38020584 (test)"
    )

    def __init__(self, root, train=True, transform=None, target_transform=None, max_events: int | None = None):
        self._memo: tuple[Path, np.ndarray] | None = None  # last decoded .aedat recording
        super().__init__(root, train, transform, target_transform, max_events)

    def _looks_right(self, path: Path) -> bool:
        return any((path / d).is_dir() for d in ("ibmGestureTrain", "ibmGestureTest", "DvsGesture"))

    def _scan(self, location):
        tonic_dir = location / ("ibmGestureTrain" if self.train else "ibmGestureTest")
        if tonic_dir.is_dir():
            return self._scan_tonic(tonic_dir)
        if (location / "DvsGesture").is_dir():
            return self._scan_ibm(location / "DvsGesture")
        self._missing(f"folder {tonic_dir} is missing")

    def _scan_tonic(self, split_dir: Path):
        samples, targets = [], []
        for trial in sorted((p for p in split_dir.iterdir() if p.is_dir()), key=lambda p: natural_key(p.name)):
            for f in sorted(trial.glob("*.npy"), key=lambda p: natural_key(p.name)):
                if not f.stem.isdigit() or not 0 <= int(f.stem) < len(self.classes):
                    raise DatasetError(f"{f}: Tonic's DVS Gesture files are named <label>.npy with label 0..10")
                samples.append(_Sample(f))
                targets.append(int(f.stem))
        return samples, targets

    def _scan_ibm(self, data_dir: Path):
        list_file = data_dir / ("trials_to_train.txt" if self.train else "trials_to_test.txt")
        if not list_file.is_file():
            self._missing(f"{list_file} is missing")
        samples, targets = [], []
        for rec in read_trial_list(list_file, data_dir):
            labels = rec.with_name(rec.stem + "_labels.csv")
            if not rec.is_file() or not labels.is_file():
                self._missing(f"{rec.name} or its {labels.name} is missing from {data_dir}")
            for label, start, end in read_gesture_labels(labels, len(self.classes)):
                samples.append(_Sample(rec, start, end))
                targets.append(label)
        return samples, targets

    def _read(self, sample):
        if sample.start is None:
            return read_tonic_gesture_npy(sample.path, self.sensor_size, max_events=self.max_events)
        if self._memo is None or self._memo[0] != sample.path:
            self._memo = (sample.path, read_aedat31_polarity(sample.path, self.sensor_size))
        events = self._memo[1]
        return events[(events["t"] >= sample.start) & (events["t"] < sample.end)]


EVENT_DATASETS: dict[str, type[EventDataset]] = {
    "nmnist": NMNIST,
    "dvs_gesture": DVSGesture,
    "cifar10_dvs": CIFAR10DVS,
    "ncaltech101": NCaltech101,
}


def event_frames(
    name: str,
    root: str | os.PathLike,
    split: str = "train",
    n_time_bins: int = 10,
    spatial_factor: int = 1,
    pool: str = "avg",
    cache_root: str | os.PathLike | None = None,
    progress: bool = True,
    **dataset_kwargs,
) -> dict[str, np.ndarray]:
    """Frames of a real event dataset's split: ``{"x": [N, T, P, H, W] float32, "y": [N] int64}``.

    ``name`` is one of :data:`EVENT_DATASETS`; ``dataset_kwargs`` go to the dataset class
    (e.g. ``n_train_per_class`` for CIFAR10-DVS, ``max_events``). Cached on disk; see
    :meth:`EventDataset.frames`.
    """
    if name not in EVENT_DATASETS:
        raise InputError(f"name must be one of {', '.join(map(repr, EVENT_DATASETS))}, got {name!r}")
    if split not in ("train", "test"):
        raise InputError(f"split must be 'train' or 'test', got {split!r}")
    ds = EVENT_DATASETS[name](root, train=split == "train", **dataset_kwargs)
    return ds.frames(n_time_bins, spatial_factor=spatial_factor, pool=pool, cache_root=cache_root, progress=progress)
