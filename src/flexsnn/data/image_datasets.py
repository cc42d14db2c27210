"""CIFAR10 / CIFAR100 read from the official BINARY distribution with numpy (no torchvision).

Record layouts (https://www.cs.toronto.edu/~kriz/cifar.html):
- CIFAR-10, ``cifar-10-batches-bin/data_batch_{1..5}.bin`` and ``test_batch.bin``: 10,000
  records each of 1 label byte + 3072 pixel bytes.
- CIFAR-100, ``cifar-100-binary/train.bin`` (50,000) and ``test.bin`` (10,000): records of
  1 coarse label byte + 1 fine label byte + 3072 pixel bytes.
The 3072 pixel bytes are the red, green then blue 32x32 planes, row-major, so a record's pixels
reshape straight to ``[3, 32, 32]`` (channels-first, as torch wants).

The pickled "python version" is never read: unpickling a downloaded file can run code. A user
who only has it is told to fetch the binary version.

Images are kept as ``uint8 [N, 3, 32, 32]``; ``__getitem__`` applies ``transform`` to one uint8
image, by default :class:`Normalize` with the dataset's mean / std (float32 ``[3, 32, 32]``).
Augmentations (:mod:`flexsnn.data.augment`) run on the uint8 image before :class:`Normalize`,
Cutout after it (so the hole is the mean colour, as in DeVries & Taylor).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch

from flexsnn.errors import DatasetNotFoundError, InputError

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
CIFAR100_MEAN = (0.5071, 0.4865, 0.4409)
CIFAR100_STD = (0.2673, 0.2564, 0.2762)

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]

IMAGE_BYTES = 3 * 32 * 32


def read_cifar_records(path: str | os.PathLike, label_bytes: int) -> tuple[np.ndarray, np.ndarray]:
    """Read a CIFAR binary file: ``(images uint8 [N, 3, 32, 32], labels uint8 [N, label_bytes])``."""
    raw = np.fromfile(path, dtype=np.uint8)
    record = label_bytes + IMAGE_BYTES
    if raw.size == 0 or raw.size % record:
        raise InputError(
            f"{path} is truncated or not a CIFAR binary file: {raw.size} bytes is not a "
            f"positive multiple of {record} ({label_bytes} label byte(s) + 3072 pixel bytes)"
        )
    raw = raw.reshape(-1, record)
    return raw[:, label_bytes:].reshape(-1, 3, 32, 32).copy(), raw[:, :label_bytes].copy()


def normalize(image: np.ndarray | torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """uint8 (0..255) or float (0..1) image ``[..., 3, H, W]`` -> float32 ``(x - mean) / std`` per channel."""
    x = torch.as_tensor(np.ascontiguousarray(image) if isinstance(image, np.ndarray) else image)
    x = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
    if x.dim() < 3 or x.shape[-3] != len(mean):
        raise InputError(f"image must be shaped [..., {len(mean)}, H, W], got {tuple(x.shape)}")
    shape = (len(mean), 1, 1)
    m = torch.tensor(mean, dtype=x.dtype, device=x.device).view(shape)
    s = torch.tensor(std, dtype=x.dtype, device=x.device).view(shape)
    return (x - m) / s


@dataclass
class Normalize:
    """Transform: uint8 / float image ``[3, H, W]`` -> normalised float32 tensor."""

    mean: Sequence[float] = CIFAR10_MEAN
    std: Sequence[float] = CIFAR10_STD

    def __call__(self, image, rng=None):
        return normalize(image, self.mean, self.std)


class CIFARBinary:
    """Base class: CIFAR binary files under ``root`` -> ``(image, label)`` samples."""

    folder: ClassVar[str]
    python_folder: ClassVar[str]
    train_files: ClassVar[Sequence[str]]
    test_files: ClassVar[Sequence[str]]
    label_bytes: ClassVar[int]
    url: ClassVar[str]
    mean: ClassVar[tuple[float, float, float]]
    std: ClassVar[tuple[float, float, float]]
    image_shape = (3, 32, 32)

    def __init__(
        self,
        root: str | os.PathLike,
        train: bool = True,
        transform: Callable | None = None,
        target_transform: Callable | None = None,
    ):
        if root is None:
            raise InputError(f"{type(self).__name__} needs root= the folder holding {self.folder}/")
        self.root = Path(root).expanduser()
        self.train = bool(train)
        self.transform = transform if transform is not None else Normalize(self.mean, self.std)
        self.target_transform = target_transform
        self.location = self._locate()
        images, labels = [], []
        for name in self.train_files if self.train else self.test_files:
            x, y = read_cifar_records(self.location / name, self.label_bytes)
            images.append(x)
            labels.append(y)
        self.data = np.concatenate(images)  # uint8 [N, 3, 32, 32]
        self.targets = self._labels(np.concatenate(labels))  # int64 [N]
        if self.targets.size and self.targets.max() >= len(self.classes):
            raise InputError(
                f"{self.location}: label {int(self.targets.max())} outside 0..{len(self.classes) - 1}; "
                "is this the right CIFAR variant?"
            )

    def _labels(self, label_bytes: np.ndarray) -> np.ndarray:
        return label_bytes[:, 0].astype(np.int64)

    def _locate(self) -> Path:
        files = list(self.train_files if self.train else self.test_files)
        for path in (self.root / self.folder, self.root):
            if all((path / f).is_file() for f in files):
                return path
        for path in (self.root / self.python_folder, self.root):
            if (path / "batches.meta").is_file() or (path / "meta").is_file():
                raise DatasetNotFoundError(
                    f"{path} holds the pickled 'python version' of {type(self).__name__}, which flexsnn "
                    f"refuses to read (unpickling a download can run code). Get the BINARY version "
                    f"{self.url} and unpack it so that {self.root / self.folder}/ holds {', '.join(files)}"
                )
        raise DatasetNotFoundError(
            f"{type(self).__name__} not found: expected {', '.join(files)} in {self.root / self.folder}/ "
            f"(or directly in {self.root}). flexsnn does not download datasets; get the binary version "
            f"from {self.url} and unpack it in {self.root}"
        )

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int):
        """``(transform(uint8 image [3, 32, 32]), label int)``; default transform = Normalize."""
        image, target = self.data[index], int(self.targets[index])
        image = self.transform(image)
        if self.target_transform is not None:
            target = self.target_transform(target)
        return image, target

    def arrays(self) -> dict[str, np.ndarray]:
        """The whole split without transforms: ``{"x": uint8 [N, 3, 32, 32], "y": int64 [N]}``."""
        return {"x": self.data, "y": self.targets}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(root={str(self.root)!r}, train={self.train}, samples={len(self)})"


class CIFAR10(CIFARBinary):
    """CIFAR-10, binary version: 50,000 train / 10,000 test 32x32 RGB images, 10 classes."""

    folder = "cifar-10-batches-bin"
    python_folder = "cifar-10-batches-py"
    train_files = [f"data_batch_{i}.bin" for i in range(1, 6)]
    test_files = ["test_batch.bin"]
    label_bytes = 1
    url = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"
    mean, std = CIFAR10_MEAN, CIFAR10_STD
    classes = CIFAR10_CLASSES


class CIFAR100(CIFARBinary):
    """CIFAR-100, binary version: labels are the 100 fine classes (``label="fine"``) or the 20
    superclasses (``label="coarse"``). Class names come from ``fine_label_names.txt`` /
    ``coarse_label_names.txt`` next to the data when present, else numbers."""

    folder = "cifar-100-binary"
    python_folder = "cifar-100-python"
    train_files = ["train.bin"]
    test_files = ["test.bin"]
    label_bytes = 2
    url = "https://www.cs.toronto.edu/~kriz/cifar-100-binary.tar.gz"
    mean, std = CIFAR100_MEAN, CIFAR100_STD

    def __init__(self, root, train=True, transform=None, target_transform=None, label: str = "fine"):
        if label not in ("fine", "coarse"):
            raise InputError(f"label must be 'fine' or 'coarse', got {label!r}")
        self.label = label
        self.classes = [str(i) for i in range(100 if label == "fine" else 20)]
        super().__init__(root, train, transform, target_transform)
        names = self.location / f"{label}_label_names.txt"
        if names.is_file():
            read = [n.strip() for n in names.read_text().splitlines() if n.strip()]
            if len(read) == len(self.classes):
                self.classes = read

    def _labels(self, label_bytes):
        return label_bytes[:, 1 if self.label == "fine" else 0].astype(np.int64)
