"""Augmentations: exact mirrors / crops / holes / rolls, seeded determinism, shapes kept."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from flexsnn.data.augment import (
    CIFAR10_POLICY,
    CIFAR10AutoAugment,
    Compose,
    Cutout,
    RandomCrop,
    RandomFlipFrames,
    RandomHorizontalFlip,
    RandomRollFrames,
    augment_frames_batch,
    autoaugment_magnitude,
    autoaugment_op,
    cifar_train_transform,
    cutout,
    dvs_train_transform,
    hflip,
    pad_crop,
    shift2d,
)
from flexsnn.errors import InputError


def image(seed=0, shape=(3, 32, 32)):
    return np.random.default_rng(seed).integers(0, 256, size=shape, dtype=np.uint8)


def test_hflip_is_an_exact_mirror_numpy_and_torch():
    x = image()
    out = hflip(x)
    for j in range(32):
        np.testing.assert_array_equal(out[..., j], x[..., 31 - j])
    t = torch.from_numpy(x)
    assert torch.equal(hflip(t), torch.from_numpy(out))
    assert np.array_equal(RandomHorizontalFlip(p=1.0)(x), out)
    assert RandomHorizontalFlip(p=0.0)(x) is x


def test_random_crop_is_a_window_of_the_zero_padded_image():
    x = image(1)
    padded = np.pad(x, ((0, 0), (4, 4), (4, 4)))
    crop = RandomCrop(32, padding=4, seed=3)
    draws = np.random.default_rng(3)
    for _ in range(5):
        out = crop(x)
        top, left = int(draws.integers(0, 41 - 32)), int(draws.integers(0, 41 - 32))
        assert out.shape == x.shape
        np.testing.assert_array_equal(out, padded[:, top:top + 32, left:left + 32])
    assert np.array_equal(RandomCrop(32, padding=0, seed=0)(x), x)
    t = torch.from_numpy(x)
    assert torch.equal(pad_crop(t, 1, 7, (32, 32), 4), torch.from_numpy(padded[:, 1:33, 7:39]))
    with pytest.raises(InputError, match="larger than the padded"):
        RandomCrop(48, padding=4)(x)


def test_cutout_zeroes_exactly_the_hole():
    x = np.ones((3, 32, 32), dtype=np.float32)
    out = cutout(x, 10, 20, 16)
    hole = np.zeros((32, 32), bool)
    hole[2:18, 12:28] = True
    assert np.all(out[:, hole] == 0) and np.all(out[:, ~hole] == 1)
    corner = cutout(torch.ones(3, 32, 32), 0, 31, 8)  # clipped at the border: rows 0..3, cols 27..31
    assert int((corner == 0).sum()) == 3 * 4 * 5 and bool((corner[:, :4, 27:] == 0).all())
    assert np.all(x == 1)  # input untouched
    c = Cutout(length=16, seed=5)
    r = np.random.default_rng(5)
    cy, cx = int(r.integers(0, 32)), int(r.integers(0, 32))
    np.testing.assert_array_equal(c(x), cutout(x, cy, cx, 16))


def test_compose_is_deterministic_under_a_seed():
    x = image(2)
    a = cifar_train_transform("cifar10", autoaugment=True, cutout=True, seed=11)
    b = cifar_train_transform("cifar10", autoaugment=True, cutout=True, seed=11)
    outs_a = [a(x) for _ in range(6)]
    outs_b = [b(x) for _ in range(6)]
    for u, v in zip(outs_a, outs_b):
        assert u.shape == (3, 32, 32) and u.dtype == torch.float32 and torch.equal(u, v)
    assert any(not torch.equal(outs_a[0], o) for o in outs_a[1:])  # it does vary between calls
    c = cifar_train_transform("cifar100", seed=11)
    assert isinstance(c.transforms[-1], Cutout) and c.transforms[-1].length == 8
    a.reseed(11)
    assert torch.equal(a(x), outs_a[0])


def test_autoaugment_single_ops_exact():
    x = image(3)
    pil = Image.fromarray(x.transpose(1, 2, 0))

    def run(op, m):
        return np.asarray(autoaugment_op(pil, op, m)).transpose(2, 0, 1)

    np.testing.assert_array_equal(run("Invert", 0), 255 - x)
    np.testing.assert_array_equal(run("Posterize", 4), x & 0xF0)
    np.testing.assert_array_equal(run("Solarize", 128), np.where(x >= 128, 255 - x, x))
    np.testing.assert_array_equal(run("Rotate", 0.0), x)
    shifted = run("TranslateX", 3)
    np.testing.assert_array_equal(shifted[:, :, 3:], x[:, :, :-3])
    assert np.all(shifted[:, :, :3] == 128)
    down = run("TranslateY", -2)
    np.testing.assert_array_equal(down[:, :-2, :], x[:, 2:, :])
    assert autoaugment_magnitude("Posterize", 9) == 4 and autoaugment_magnitude("Rotate", 9) == 30
    assert autoaugment_magnitude("Solarize", 0) == 256 and autoaugment_magnitude("Equalize", 5) == 0


def test_every_cifar10_subpolicy_runs_and_keeps_shape():
    assert len(CIFAR10_POLICY) == 25
    x = image(4)
    for sub in CIFAR10_POLICY:
        forced = [tuple((op, 1.0, level) for op, _, level in sub)]
        out = CIFAR10AutoAugment(policy=forced, seed=0)(x)
        assert out.shape == x.shape and out.dtype == np.uint8
    t = CIFAR10AutoAugment(seed=1)(torch.from_numpy(x))
    assert isinstance(t, torch.Tensor) and t.shape == (3, 32, 32)
    a, b = CIFAR10AutoAugment(seed=9), CIFAR10AutoAugment(seed=9)
    for _ in range(10):
        np.testing.assert_array_equal(a(x), b(x))
    with pytest.raises(InputError, match="uint8"):
        CIFAR10AutoAugment()(x.astype(np.float32))


def test_dvs_flip_and_roll_frames():
    x = np.arange(2 * 2 * 5 * 6, dtype=np.float32).reshape(2, 2, 5, 6)  # [T, C, H, W]
    np.testing.assert_array_equal(RandomFlipFrames(p=1.0)(x), x[..., ::-1])
    np.testing.assert_array_equal(shift2d(x, 2, -1), np.roll(x, (2, -1), axis=(-2, -1)))
    s = shift2d(x, 2, -1, mode="shift")
    np.testing.assert_array_equal(s[..., 2:, :5], x[..., :3, 1:])
    assert np.all(s[..., :2, :] == 0) and np.all(s[..., :, 5:] == 0)
    roll = RandomRollFrames(max_shift=2, seed=4)
    r = np.random.default_rng(4)
    dy, dx = (int(v) for v in r.integers(-2, 3, size=2))
    np.testing.assert_array_equal(roll(x), np.roll(x, (dy, dx), axis=(-2, -1)))
    t = dvs_train_transform(seed=3)
    u = dvs_train_transform(seed=3)
    xt = torch.from_numpy(x)
    for _ in range(4):
        a = t(xt)
        assert a.shape == xt.shape and torch.equal(a, u(xt))
        assert torch.equal(a.sum(), xt.sum())  # rolls and flips only move values


@pytest.mark.parametrize("mode", ["roll", "shift"])
def test_augment_frames_batch_matches_per_sample_ops(mode):
    x = torch.randn(4, 3, 2, 6, 7, generator=torch.Generator().manual_seed(0))
    out = augment_frames_batch(x, torch.Generator().manual_seed(5), flip_p=0.5, max_shift=3, mode=mode)
    g = torch.Generator().manual_seed(5)
    flips = torch.rand(4, generator=g) < 0.5
    shifts = torch.randint(-3, 4, (4, 2), generator=g)
    for b in range(4):
        ref = hflip(x[b]) if flips[b] else x[b]
        ref = shift2d(ref, int(shifts[b, 0]), int(shifts[b, 1]), mode)
        assert torch.equal(out[b], ref)
    again = augment_frames_batch(x, torch.Generator().manual_seed(5), flip_p=0.5, max_shift=3, mode=mode)
    assert torch.equal(out, again)
    with pytest.raises(InputError, match=r"\[B, T, C, H, W\]"):
        augment_frames_batch(x[0])


def test_bad_arguments_are_named():
    with pytest.raises(InputError, match="p must be"):
        RandomHorizontalFlip(p=1.5)
    with pytest.raises(InputError, match="length"):
        Cutout(length=0)
    with pytest.raises(InputError, match="mode"):
        RandomRollFrames(mode="wrap")
    with pytest.raises(InputError, match="dataset"):
        cifar_train_transform("svhn")
    with pytest.raises(InputError, match="at least 2 dims"):
        RandomCrop(4)(np.zeros(5))
    assert isinstance(Compose([], seed=0)(np.zeros(2)), np.ndarray)
