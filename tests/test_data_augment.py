"""Augmentations: exact mirrors / crops / holes / rolls / reversals / resizes, seeded determinism,
the DVS protocols' probabilities (checked over many seeded draws), shapes kept."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from flexsnn.data.augment import (
    CIFAR10_POLICY,
    DEFAULT_FRAME_AUGMENTATION,
    FRAME_AUGMENTATIONS,
    CIFAR10AutoAugment,
    Compose,
    Cutout,
    FrameAugmentation,
    RandomChoice,
    RandomCrop,
    RandomFlipFrames,
    RandomHorizontalFlip,
    RandomRollFrames,
    RandomTimePolarityReversal,
    RandomVerticalFlipFrames,
    ResizeFrames,
    augment_frames_batch,
    autoaugment_magnitude,
    autoaugment_op,
    cifar_train_transform,
    cutout,
    dvs_train_transform,
    frame_augmentation,
    hflip,
    pad_crop,
    resize_frames,
    reverse_time_polarity,
    shift2d,
    vflip,
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
        np.testing.assert_array_equal(out, padded[:, top : top + 32, left : left + 32])
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


# ----------------------------------------------------------------------------- DVS protocols


def frames(t=3, p=2, h=3, w=4, seed=0):
    """Distinct values everywhere, so every flip / reversal / roll gives a different array."""
    return np.random.default_rng(seed).permutation(t * p * h * w).astype(np.float32).reshape(t, p, h, w)


def test_vflip_and_time_polarity_reversal_exact():
    x = frames()
    v = vflip(x)
    for i in range(3):
        np.testing.assert_array_equal(v[..., i, :], x[..., 2 - i, :])
    assert torch.equal(vflip(torch.from_numpy(x)), torch.from_numpy(v))
    r = reverse_time_polarity(x)
    for t in range(3):
        for p in range(2):
            np.testing.assert_array_equal(r[t, p], x[2 - t, 1 - p])
    assert torch.equal(reverse_time_polarity(torch.from_numpy(x)), torch.from_numpy(r))
    batch = np.stack([x, x + 100])
    np.testing.assert_array_equal(reverse_time_polarity(batch)[1], r + 100)  # [B, T, P, H, W]
    np.testing.assert_array_equal(reverse_time_polarity(r), x)  # its own inverse
    with pytest.raises(InputError, match="at least 4 dims"):
        reverse_time_polarity(np.zeros((2, 3, 4)))


def test_resize_frames_bilinear_by_hand():
    x = np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4)  # [T, P, H, W]
    # 4 -> 2 samples source coordinates 0.5 and 2.5: the means of the 2x2 blocks
    blocks = x[0, 0].reshape(2, 2, 2, 2).mean(axis=(1, 3))
    out = resize_frames(x, 2)
    assert out.shape == (1, 1, 2, 2) and out.dtype == np.float32 and isinstance(out, np.ndarray)
    np.testing.assert_allclose(out[0, 0], blocks)
    np.testing.assert_allclose(out[0, 0], [[2.5, 4.5], [10.5, 12.5]])
    # 2 -> 4 per axis: a, 0.75 a + 0.25 b, 0.25 a + 0.75 b, b (coordinates -0.25 clamp to 0)
    up = resize_frames(np.array([[0.0, 4.0], [8.0, 12.0]], dtype=np.float32), (4, 4))
    np.testing.assert_allclose(up[0], [0.0, 1.0, 3.0, 4.0])
    np.testing.assert_allclose(up[:, 0], [0.0, 2.0, 6.0, 8.0])
    # 6 -> 2 without antialiasing reads rows / columns 1 and 4 exactly; with it, it averages more
    six = np.arange(36, dtype=np.float32).reshape(6, 6) ** 2
    np.testing.assert_allclose(resize_frames(six, 2), six[[1, 4]][:, [1, 4]])
    assert not np.allclose(resize_frames(six, 2, antialias=True), six[[1, 4]][:, [1, 4]])
    # integers in, float32 out; torch in, torch out; a CIFAR10-DVS sample to the paper's 48x48
    assert resize_frames(np.ones((2, 2), np.uint8), 3).dtype == np.float32
    sample = torch.rand(10, 2, 128, 128, generator=torch.Generator().manual_seed(0))
    small = ResizeFrames(48)(sample)
    assert isinstance(small, torch.Tensor) and small.shape == (10, 2, 48, 48)
    assert abs(float(small.mean() - sample.mean())) < 0.01
    assert ResizeFrames((48, 64))(np.zeros((2, 180, 240), np.float32)).shape == (2, 48, 64)
    with pytest.raises(InputError, match="size"):
        ResizeFrames(0)


def _frequency(transform, x, n, ops):
    """Fraction of n seeded calls whose output equals op(x), for each op of ops (name -> fn)."""
    rng = np.random.default_rng(123)
    hits = dict.fromkeys(ops, 0)
    for _ in range(n):
        out = transform(x, rng=rng)
        for name, op in ops.items():
            hits[name] += bool(np.array_equal(out, op(x)))
    return {name: count / n for name, count in hits.items()}


def test_random_flips_and_reversal_happen_with_their_probability():
    x = frames()
    n = 4000
    tol = 4 * np.sqrt(0.25 / n)  # 4 standard deviations of a fraction near 1/2
    freq = _frequency(RandomVerticalFlipFrames(p=0.5), x, n, {"v": vflip, "same": lambda a: a})
    assert abs(freq["v"] - 0.5) < tol and freq["v"] + freq["same"] == 1.0
    freq = _frequency(RandomTimePolarityReversal(p=0.3), x, n, {"r": reverse_time_polarity})
    assert abs(freq["r"] - 0.3) < tol
    np.testing.assert_array_equal(RandomVerticalFlipFrames(p=1.0)(x), vflip(x))
    np.testing.assert_array_equal(RandomTimePolarityReversal(p=0.0)(x), x)


def test_random_choice_applies_at_most_one_op():
    x = frames()
    choice = RandomChoice(ops=[hflip, reverse_time_polarity], p=[0.25, 0.25])
    n = 8000
    freq = _frequency(
        choice,
        x,
        n,
        {
            "h": hflip,
            "r": reverse_time_polarity,
            "same": lambda a: a,
            "both": lambda a: hflip(reverse_time_polarity(a)),
        },
    )
    tol = 4 * np.sqrt(0.25 / n)
    assert abs(freq["h"] - 0.25) < tol and abs(freq["r"] - 0.25) < tol and abs(freq["same"] - 0.5) < tol
    assert freq["both"] == 0.0
    # u in [0, 0.25): first op; [0.25, 0.5): second; else none (the generator's first draw decides)
    for seed in range(20):
        u = np.random.default_rng(seed).random()
        expected = hflip(x) if u < 0.25 else reverse_time_polarity(x) if u < 0.5 else x
        np.testing.assert_array_equal(choice(x, rng=np.random.default_rng(seed)), expected)
    with pytest.raises(InputError, match="one probability per op"):
        RandomChoice(ops=[hflip], p=[0.2, 0.2])
    with pytest.raises(InputError, match="sum to at most 1"):
        RandomChoice(ops=[hflip, vflip], p=[0.6, 0.6])


def test_named_protocols_are_the_papers():
    assert DEFAULT_FRAME_AUGMENTATION == "flip_roll5"
    assert FRAME_AUGMENTATIONS == {
        "flip_roll5": FrameAugmentation(hflip_p=0.5, reverse_p=0.0, vflip_p=0.0, max_shift=5, mode="roll"),
        "flip_or_reverse_roll5": FrameAugmentation(hflip_p=0.25, reverse_p=0.25, vflip_p=0.0, max_shift=5),
        "vflip_roll20": FrameAugmentation(hflip_p=0.0, reverse_p=0.0, vflip_p=0.5, max_shift=20),
        "none": None,
    }
    assert frame_augmentation("vflip_roll20").max_shift == 20 and frame_augmentation("none") is None
    with pytest.raises(InputError, match="augment must be one of.*'flip_roll5'.*got 'flip'"):
        frame_augmentation("flip")
    with pytest.raises(InputError, match="hflip_p \\+ reverse_p"):
        FrameAugmentation(hflip_p=0.75, reverse_p=0.5)
    with pytest.raises(InputError, match="max_shift"):
        FrameAugmentation(max_shift=-1)


OUTCOMES = ("none", "h", "r", "v", "hv", "rv")


def _outcomes(samples, x):
    """[n, 6] bool: which of the protocols' flip / reversal outcomes (no roll) each sample is."""
    refs = {
        "none": x,
        "h": hflip(x),
        "r": reverse_time_polarity(x),
        "v": vflip(x),
        "hv": vflip(hflip(x)),
        "rv": vflip(reverse_time_polarity(x)),
    }
    flat = samples.reshape(len(samples), -1)
    return torch.stack([(flat == refs[k].reshape(1, -1)).all(1) for k in OUTCOMES], dim=1)


@pytest.mark.parametrize(
    "name, expected",
    [
        ("flip_roll5", {"h": 0.5, "none": 0.5}),
        ("flip_or_reverse_roll5", {"h": 0.25, "r": 0.25, "none": 0.5}),
        ("vflip_roll20", {"v": 0.5, "none": 0.5}),
    ],
)
def test_protocol_frequencies_on_a_batch(name, expected):
    # The protocol's flips / reversal with the roll switched off, over a batch of 4000 copies.
    proto = FRAME_AUGMENTATIONS[name]
    no_roll = FrameAugmentation(proto.hflip_p, proto.reverse_p, proto.vflip_p, max_shift=0)
    x = torch.from_numpy(frames())
    n = 4000
    out = no_roll.apply_batch(x.expand(n, *x.shape).clone(), torch.Generator().manual_seed(7))
    found = _outcomes(out, x)
    assert torch.all(found.sum(1) == 1)  # always exactly one of the known outcomes
    tol = 4 * np.sqrt(0.25 / n)
    for k, frac in zip(OUTCOMES, found.float().mean(0).tolist()):
        assert abs(frac - expected.get(k, 0.0)) < tol, (k, frac)
    # the per-sample numpy version draws from the same distribution
    per_sample = no_roll.transform(seed=3)
    m = 2000
    found = _outcomes(torch.stack([torch.from_numpy(per_sample(frames())) for _ in range(m)]), x)
    assert torch.all(found.sum(1) == 1)
    for k, frac in zip(OUTCOMES, found.float().mean(0).tolist()):
        assert abs(frac - expected.get(k, 0.0)) < 4 * np.sqrt(0.25 / m), (k, frac)


@pytest.mark.parametrize("name, size", [("flip_roll5", 16), ("vflip_roll20", 48)])
def test_protocol_rolls_are_uniform_in_the_range(name, size):
    # one hot pixel at (0, 0) of a [1, 1, size, size] frame lands at (dy mod size, dx mod size)
    proto = FRAME_AUGMENTATIONS[name]
    only_roll = FrameAugmentation(hflip_p=0.0, max_shift=proto.max_shift)
    n = 6000
    x = torch.zeros(n, 1, 1, size, size)
    x[:, 0, 0, 0, 0] = 1.0
    out = only_roll.apply_batch(x, torch.Generator().manual_seed(11))
    where = out.reshape(n, -1).argmax(1)
    dy = (where // size + size // 2) % size - size // 2  # back to signed shifts
    dx = (where % size + size // 2) % size - size // 2
    assert torch.equal(out.reshape(n, -1).sum(1), torch.ones(n))
    k = proto.max_shift
    for d in (dy, dx):
        counts = torch.bincount(d + k, minlength=2 * k + 1)
        assert d.min() == -k and d.max() == k and counts.numel() == 2 * k + 1
        expected = n / (2 * k + 1)
        assert torch.all((counts - expected).abs() < 5 * np.sqrt(expected))


def test_augment_frames_batch_with_reversal_and_vflip_matches_per_sample_ops():
    x = torch.randn(6, 3, 2, 5, 7, generator=torch.Generator().manual_seed(0))
    out = augment_frames_batch(
        x, torch.Generator().manual_seed(2), flip_p=0.25, max_shift=2, vflip_p=0.5, reverse_p=0.25
    )
    g = torch.Generator().manual_seed(2)
    u = torch.rand(6, generator=g)
    v = torch.rand(6, generator=g) < 0.5
    shifts = torch.randint(-2, 3, (6, 2), generator=g)
    for b in range(6):
        ref = hflip(x[b]) if u[b] < 0.25 else reverse_time_polarity(x[b]) if u[b] < 0.5 else x[b]
        ref = vflip(ref) if v[b] else ref
        assert torch.equal(out[b], shift2d(ref, int(shifts[b, 0]), int(shifts[b, 1])))
    with pytest.raises(InputError, match="flip_p \\+ reverse_p"):
        augment_frames_batch(x, flip_p=0.8, reverse_p=0.4)
