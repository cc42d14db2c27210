"""CIFAR10 / CIFAR100 binary readers, on tiny fake files in the official binary record format."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from flexsnn.data.image_datasets import (
    CIFAR10,
    CIFAR10_MEAN,
    CIFAR10_STD,
    CIFAR100,
    Normalize,
    normalize,
    read_cifar_records,
)
from flexsnn.errors import DatasetNotFoundError, InputError


def fake_image(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(3, 32, 32), dtype=np.uint8)


def record(labels: list[int], image: np.ndarray) -> bytes:
    """Label byte(s), then the red, green and blue 32x32 planes, each row-major."""
    planes = b"".join(image[c].tobytes(order="C") for c in range(3))
    return bytes(labels) + planes


def write_cifar10(root, n_per_batch=2):
    d = root / "cifar-10-batches-bin"
    d.mkdir(parents=True)
    truth = []
    for b in range(1, 6):
        recs = []
        for k in range(n_per_batch):
            seed = 10 * b + k
            label = (b + k) % 10
            recs.append(record([label], fake_image(seed)))
            truth.append((label, seed))
        (d / f"data_batch_{b}.bin").write_bytes(b"".join(recs))
    (d / "test_batch.bin").write_bytes(record([7], fake_image(99)))
    return truth


def test_cifar10_binary_records_decode_exactly(tmp_path):
    truth = write_cifar10(tmp_path)
    ds = CIFAR10(tmp_path, train=True)
    assert len(ds) == 10 and ds.data.shape == (10, 3, 32, 32) and ds.data.dtype == np.uint8
    assert ds.targets.tolist() == [label for label, _ in truth]
    for i, (_, seed) in enumerate(truth):
        np.testing.assert_array_equal(ds.data[i], fake_image(seed))
    test = CIFAR10(tmp_path / "cifar-10-batches-bin", train=False)  # the folder itself works as root
    assert test.targets.tolist() == [7]


def test_default_transform_normalises_with_cifar_stats(tmp_path):
    write_cifar10(tmp_path)
    ds = CIFAR10(tmp_path, train=False)
    x, y = ds[0]
    assert y == 7 and isinstance(x, torch.Tensor) and x.dtype == torch.float32 and x.shape == (3, 32, 32)
    img = fake_image(99).astype(np.float64) / 255.0
    for c in range(3):
        np.testing.assert_allclose(x[c].numpy(), (img[c] - CIFAR10_MEAN[c]) / CIFAR10_STD[c], rtol=1e-5, atol=1e-5)
    raw = CIFAR10(tmp_path, train=False, transform=lambda im: im)[0][0]
    np.testing.assert_array_equal(raw, fake_image(99))


def test_cifar100_fine_and_coarse_labels_and_names(tmp_path):
    d = tmp_path / "cifar-100-binary"
    d.mkdir()
    (d / "train.bin").write_bytes(record([3, 42], fake_image(1)) + record([19, 99], fake_image(2)))
    (d / "test.bin").write_bytes(record([0, 0], fake_image(3)))
    (d / "coarse_label_names.txt").write_text("\n".join(f"super{i}" for i in range(20)) + "\n")
    fine = CIFAR100(tmp_path, train=True)
    assert fine.targets.tolist() == [42, 99] and len(fine.classes) == 100
    coarse = CIFAR100(tmp_path, train=True, label="coarse")
    assert coarse.targets.tolist() == [3, 19] and coarse.classes[3] == "super3"
    np.testing.assert_array_equal(fine.data[1], fake_image(2))
    x, _ = fine[0]
    assert x.shape == (3, 32, 32)
    with pytest.raises(InputError, match="label must be"):
        CIFAR100(tmp_path, label="medium")


def test_python_version_is_refused_with_pointer_to_binary(tmp_path):
    d = tmp_path / "cifar-10-batches-py"
    d.mkdir()
    (d / "batches.meta").write_bytes(b"not unpickled")
    (d / "data_batch_1").write_bytes(b"not unpickled")
    with pytest.raises(DatasetNotFoundError) as info:
        CIFAR10(tmp_path)
    msg = str(info.value)
    assert "BINARY" in msg and "cifar-10-binary.tar.gz" in msg and str(tmp_path / "cifar-10-batches-bin") in msg


def test_missing_and_truncated_files(tmp_path):
    with pytest.raises(DatasetNotFoundError) as info:
        CIFAR100(tmp_path)
    assert str(tmp_path / "cifar-100-binary") in str(info.value) and "train.bin" in str(info.value)
    write_cifar10(tmp_path)
    bad = tmp_path / "cifar-10-batches-bin" / "test_batch.bin"
    bad.write_bytes(bad.read_bytes()[:-1])
    with pytest.raises(InputError, match="3073"):
        CIFAR10(tmp_path, train=False)
    with pytest.raises(InputError, match="3073"):
        read_cifar_records(bad, 1)


def test_normalize_accepts_uint8_float_and_batches():
    img = np.full((3, 2, 2), 255, dtype=np.uint8)
    out = normalize(img, (0.5, 0.5, 0.5), (0.25, 0.5, 1.0))
    assert torch.allclose(out[:, 0, 0], torch.tensor([2.0, 1.0, 0.5]))
    batch = torch.ones(4, 3, 2, 2)
    assert torch.allclose(Normalize((0.5,) * 3, (0.5,) * 3)(batch), torch.ones(4, 3, 2, 2))
    with pytest.raises(InputError, match=r"\[\.\.\., 3, H, W\]"):
        normalize(np.zeros((2, 4, 4)), CIFAR10_MEAN, CIFAR10_STD)
