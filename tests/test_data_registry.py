"""The dataset registry end to end: names, data folder vs cache, augmentation, model checks.

Real datasets are replaced by tiny fake folders in their real on-disk formats, written by the
same writers as tests/test_data_event_datasets.py and tests/test_data_image_datasets.py.
"""

from __future__ import annotations

import inspect
import os

import numpy as np
import pytest
import torch
from test_data_event_datasets import write_atis
from test_data_image_datasets import fake_image, write_cifar10

import flexsnn.data.event_datasets as event_datasets
import flexsnn.errors
from flexsnn.data import (
    DATASETS,
    EVENT_DTYPE,
    NMNIST,
    NCaltech101,
    dataset_info,
    load_frames,
    make_loaders,
    to_frames,
)
from flexsnn.data.augment import (
    FRAME_AUGMENTATIONS,
    FrameAugmentation,
    hflip,
    resize_frames,
    reverse_time_polarity,
    shift2d,
)
from flexsnn.data.image_datasets import CIFAR10_MEAN, CIFAR10_STD, normalize
from flexsnn.data.loaders import (
    AugmentFramesCollate,
    check_model_input,
    dataset_model_kwargs,
    register_frame_dataset,
)
from flexsnn.errors import DatasetNotFoundError, InputError
from flexsnn.models import MODELS, build_model
from flexsnn.runs import RunSpec, build_loaders

EXPECTED = {  # name: (input_kind, per-sample shape, classes)
    "digits_dvs": ("frames", (2, 34, 34), 10),
    "nmnist": ("frames", (2, 34, 34), 10),
    "dvs_gesture": ("frames", (2, 32, 32), 11),
    "dvs_gesture_128": ("frames", (2, 128, 128), 11),
    "cifar10_dvs": ("frames", (2, 32, 32), 10),
    "cifar10_dvs_128": ("frames", (2, 128, 128), 10),
    "cifar10_dvs_48": ("frames", (2, 48, 48), 10),
    "ncaltech101": ("frames", (2, 45, 60), 101),
    "ncaltech101_48": ("frames", (2, 48, 48), 101),
    "cifar10": ("static", (3, 32, 32), 10),
    "cifar100": ("static", (3, 32, 32), 100),
}
REAL = sorted(set(EXPECTED) - {"digits_dvs"})


@pytest.fixture
def cache(tmp_path, monkeypatch):
    path = tmp_path / "cache"
    monkeypatch.setenv("FLEXSNN_CACHE", str(path))
    return path


def snapshot(folder):
    """Every file under ``folder`` with its size and mtime: equal snapshots = nothing written."""
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(folder.rglob("*"))}


# Fake N-MNIST: 6 train samples (labels 0, 0, 1, 1, 2, 2) and 3 test samples, 2 events each at
# distinct pixels, so every sample and every flip / roll of it is different.
def nmnist_folder(root):
    truth = {"train": [], "test": []}
    for split, folder, n in (("train", "Train", 6), ("test", "Test", 3)):
        for i in range(n):
            label = i // 2
            events = [(3 + 4 * i, 2 + i, 0, 1), (30 - 3 * i, 25 - 2 * i, 900 + 100 * i, 0), (7, 9 + i, 450, 1)]
            write_atis(root / "NMNIST" / folder / str(label) / f"{i:05d}.bin", events)
            truth[split].append((events, label))
    return truth


def frames_of(events, t):
    arr = np.zeros(len(events), dtype=EVENT_DTYPE)
    for k, (x, y, ts, p) in enumerate(events):
        arr[k] = (x, y, ts, p)
    return torch.from_numpy(to_frames(arr, (34, 34, 2), n_time_bins=t))


# ----------------------------------------------------------------------------- names


def test_every_registered_name_resolves_to_its_kind_shape_and_classes():
    assert set(DATASETS) == set(EXPECTED)
    for name, (kind, shape, classes) in EXPECTED.items():
        info = dataset_info(name)
        assert info == (kind, shape, classes)  # a plain tuple with names
        assert (info.input_kind, info.in_shape, info.num_classes) == (kind, shape, classes)
        entry = DATASETS[name]
        assert (entry.build is not None) == (kind == "frames") and (entry.images is not None) == (kind == "static")
        assert entry.root_is_data == (name != "digits_dvs")
    with pytest.raises(InputError, match="dataset must be one of.*'cifar10_dvs'.*got 'cifar11'"):
        dataset_info("cifar11")
    with pytest.raises(InputError, match="dataset 'cifar10' holds static images, not event frames"):
        load_frames("cifar10", root="/any/folder")


@pytest.mark.parametrize("name", REAL)
def test_real_datasets_need_a_data_root_and_say_where_files_go(name, tmp_path, cache):
    with pytest.raises(DatasetNotFoundError) as info:
        make_loaders(name, n_time_bins=2, batch_size=2, seed=0)
    msg = str(info.value)
    assert f"dataset {name!r}" in msg and "--data-root" in msg and "never downloads" in msg
    assert DATASETS[name].source.folder in msg  # e.g. NMNIST, CIFAR10DVS, cifar-10-batches-bin
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DatasetNotFoundError):
        make_loaders(name, n_time_bins=2, batch_size=2, seed=0, root=empty)
    assert snapshot(empty) == {} and not cache.exists()


def test_dataset_not_found_error_lives_in_errors_and_old_path_still_works():
    assert event_datasets.DatasetNotFoundError is flexsnn.errors.DatasetNotFoundError is DatasetNotFoundError
    assert issubclass(DatasetNotFoundError, InputError) and issubclass(DatasetNotFoundError, FileNotFoundError)


# ----------------------------------------------------------------------------- N-MNIST end to end


def test_fake_nmnist_through_make_loaders(tmp_path, cache, monkeypatch):
    data = tmp_path / "data"
    truth = nmnist_folder(data)
    before = snapshot(data)
    train, test = make_loaders("nmnist", n_time_bins=3, batch_size=4, seed=0, root=data)
    assert [tuple(x.shape) for x, _ in train] == [(4, 3, 2, 34, 34), (2, 3, 2, 34, 34)]
    ((x, y),) = list(test)  # 3 test samples: one batch, in file order
    assert x.shape == (3, 3, 2, 34, 34) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert y.tolist() == [0, 0, 1]
    for i, (events, _) in enumerate(truth["test"]):  # bins 0, 1, 2 for t = 0, 450, 900 + 100 i
        assert torch.equal(x[i], frames_of(events, 3))
        assert (
            x[i, 0, 1, 2 + i, 3 + 4 * i] == 1 and x[i, 1, 1, 9 + i, 7] == 1 and x[i, 2, 0, 25 - 2 * i, 30 - 3 * i] == 1
        )
    train_x = torch.cat([xb for xb, _ in train])
    assert train_x.sum() == 6 * 3  # every event of every training sample, once

    # the data folder is untouched; the binned splits are in the cache folder
    assert snapshot(data) == before
    cached = sorted(p.name for p in cache.iterdir())
    assert len(cached) == 2 and cached[0].startswith("nmnist-test-") and cached[1].startswith("nmnist-train-")

    # a second call reads the cache, not the files; another T is another cache entry
    monkeypatch.setattr(NMNIST, "_read", lambda self, s: (_ for _ in ()).throw(AssertionError("re-read")))
    _, again = make_loaders("nmnist", n_time_bins=3, batch_size=4, seed=0, root=data)
    assert torch.equal(next(iter(again))[0], x)
    with pytest.raises(AssertionError, match="re-read"):
        load_frames("nmnist", "test", n_time_bins=2, root=data)


def test_cached_counts_are_compact_and_come_back_as_float32(tmp_path, cache):
    data = tmp_path / "data"
    nmnist_folder(data)
    load_frames("nmnist", "train", n_time_bins=2, root=data)
    (npz,) = cache.glob("nmnist-train-*.npz")
    with np.load(npz, allow_pickle=False) as stored:
        assert stored["x"].dtype == np.uint8
    again = load_frames("nmnist", "train", n_time_bins=2, root=data)
    assert again.tensors[0].dtype == torch.float32 and again.tensors[0].sum() == 18


def test_data_root_builders_get_the_root_and_are_not_cached_into_it(tmp_path, cache, monkeypatch):
    calls = []

    def build(split, n_time_bins, root):
        calls.append(root)
        return np.ones((2, n_time_bins, 1, 2, 2), np.float32), np.array([0, 1])

    monkeypatch.setitem(DATASETS, "toy_data", None)  # removed again after the test
    register_frame_dataset("toy_data", build, in_shape=(1, 2, 2), num_classes=2, root_is_data=True)
    with pytest.raises(DatasetNotFoundError, match="--data-root"):
        load_frames("toy_data", "train", 2)
    (tmp_path / "mine").mkdir()
    ds = load_frames("toy_data", "train", 2, root=tmp_path / "mine")
    assert ds.tensors[0].shape == (2, 2, 1, 2, 2) and calls == [tmp_path / "mine"]
    assert snapshot(tmp_path / "mine") == {} and not cache.exists()  # caching is the builder's job


# ----------------------------------------------------------------------------- frames augmentation


def _matches_a_flip_and_roll(sample, originals, max_shift=5):
    for orig in originals:
        for flipped in (orig, hflip(orig)):
            for dy in range(-max_shift, max_shift + 1):
                for dx in range(-max_shift, max_shift + 1):
                    if torch.equal(shift2d(flipped, dy, dx), sample):
                        return (dy, dx) != (0, 0) or flipped is not orig
    raise AssertionError("training sample is no flip + roll of any original sample")


def test_frames_augmentation_only_on_train_seeded_and_replayable(tmp_path, cache):
    data = tmp_path / "data"
    truth = nmnist_folder(data)
    plain_train, plain_test = make_loaders("nmnist", n_time_bins=3, batch_size=6, seed=5, root=data)
    train, test = make_loaders("nmnist", n_time_bins=3, batch_size=6, seed=5, root=data, augment=True)
    assert isinstance(train.collate_fn, AugmentFramesCollate) and train.collate_fn.generator is train.generator
    assert not isinstance(test.collate_fn, AugmentFramesCollate)
    # test split: exactly the unaugmented frames, every time
    for (xa, ya), (xb, yb) in zip(test, plain_test):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    # train split: every sample is a flip / roll of an original; at least one is changed
    originals = [frames_of(ev, 3) for ev, _ in truth["train"]]
    ((x, y),) = list(train)
    changed = [_matches_a_flip_and_roll(x[i], originals) for i in range(len(x))]
    assert any(changed)
    assert torch.equal(x.sum(dim=(1, 2, 3, 4)).sort().values, torch.full((6,), 3.0))  # rolls keep every event
    ((xp, _),) = list(plain_train)
    assert not torch.equal(x.sum(dim=(1, 2)), xp.sum(dim=(1, 2)))
    # same seed, same augmented batches; the loader's generator state replays them (resume)
    again, _ = make_loaders("nmnist", n_time_bins=3, batch_size=6, seed=5, root=data, augment=True)
    assert torch.equal(next(iter(again))[0], x)
    state = train.generator.get_state()
    first = next(iter(train))[0]
    second = next(iter(train))[0]
    assert not torch.equal(first, second)  # a new epoch: new order and new augmentations
    train.generator.set_state(state)
    assert torch.equal(next(iter(train))[0], first)
    other, _ = make_loaders("nmnist", n_time_bins=3, batch_size=6, seed=6, root=data, augment=True)
    assert not torch.equal(next(iter(other))[0], x)


def test_frames_augmentation_in_worker_processes_is_seeded(tmp_path, cache):
    data = tmp_path / "data"
    nmnist_folder(data)

    def batches(seed):
        train, _ = make_loaders(
            "nmnist", n_time_bins=2, batch_size=3, seed=seed, root=data, augment=True, num_workers=1
        )
        return [xb for xb, _ in train]

    a, b = batches(1), batches(1)
    assert all(torch.equal(p, q) for p, q in zip(a, b))
    assert not all(torch.equal(p, q) for p, q in zip(a, batches(2)))


def test_autoaugment_is_for_static_datasets_only(tmp_path, cache):
    data = tmp_path / "data"
    nmnist_folder(data)
    with pytest.raises(InputError, match="autoaugment applies to static image datasets"):
        make_loaders("nmnist", n_time_bins=2, batch_size=2, seed=0, root=data, autoaugment=True)
    with pytest.raises(
        InputError,
        match="augment must be True, False, None or the name of an event-frame protocol .*'flip_roll5'.*got 'yes'",
    ):
        make_loaders("nmnist", n_time_bins=2, batch_size=2, seed=0, root=data, augment="yes")
    with pytest.raises(InputError, match="augment must be True or False or None"):
        make_loaders("nmnist", n_time_bins=2, batch_size=2, seed=0, root=data, augment=1.5)


def test_named_frame_protocols_reach_the_training_loader(tmp_path, cache):
    data = tmp_path / "data"
    truth = nmnist_folder(data)
    for augment, expected in [
        (True, "flip_roll5"),
        ("flip_roll5", "flip_roll5"),
        ("flip_or_reverse_roll5", "flip_or_reverse_roll5"),
        ("vflip_roll20", "vflip_roll20"),
    ]:
        train, test = make_loaders("nmnist", n_time_bins=3, batch_size=6, seed=5, root=data, augment=augment)
        assert train.collate_fn.augmentation == FRAME_AUGMENTATIONS[expected]
        assert not isinstance(test.collate_fn, AugmentFramesCollate)
    for off in (None, False, "none"):
        train, _ = make_loaders("nmnist", n_time_bins=3, batch_size=6, seed=5, root=data, augment=off)
        assert not isinstance(train.collate_fn, AugmentFramesCollate)
    # a reversal protocol without rolls: every training sample is an original, mirrored or played backwards
    collate = AugmentFramesCollate(
        torch.Generator().manual_seed(0), FrameAugmentation(hflip_p=0.25, reverse_p=0.25, max_shift=0)
    )
    originals = [frames_of(ev, 3) for ev, _ in truth["train"]]
    outs = [collate([(o, 0) for o in originals])[0] for _ in range(20)]
    kinds = set()
    for out in outs:
        for got, orig in zip(out, originals):
            kind = [
                k
                for k, ref in (("same", orig), ("h", hflip(orig)), ("r", reverse_time_polarity(orig)))
                if torch.equal(got, ref)
            ]
            assert len(kind) == 1
            kinds.add(kind[0])
    assert kinds == {"same", "h", "r"}
    write_cifar10(tmp_path / "cifar")
    with pytest.raises(InputError, match="static image dataset 'cifar10' takes augment=True / False"):
        make_loaders("cifar10", n_time_bins=1, batch_size=2, seed=0, root=tmp_path / "cifar", augment="flip_roll5")


def test_48x48_datasets_resize_every_binned_sample(tmp_path, cache):
    # fake N-Caltech101: 3 classes, events spread over the 240x180 sensor (one outside it)
    base = tmp_path / "data" / "NCALTECH101" / "Caltech101"
    rng = np.random.default_rng(0)
    for _c, cls in enumerate(["accordion", "BACKGROUND_Google", "yin_yang"]):
        for i in range(1, 4):
            ev = [
                (int(rng.integers(0, 240)), int(rng.integers(0, 180)), int(t), int(rng.integers(0, 2)))
                for t in sorted(rng.integers(0, 5000, 40))
            ] + [(250, 3, 5000, 1)]
            write_atis(base / cls / f"image_{i:04d}.bin", ev)
    root = tmp_path / "data"
    big = load_frames("ncaltech101", "test", n_time_bins=2, root=root)  # 4x average-pooled: 45x60
    small = load_frames("ncaltech101_48", "test", n_time_bins=2, root=root)
    x = small.tensors[0]
    assert x.shape == (3, 2, 2, 48, 48) and big.tensors[0].shape == (3, 2, 2, 45, 60)
    full = NCaltech101(root, train=False).build_frames(2, progress=False)[0]  # [3, 2, 2, 180, 240]
    assert torch.allclose(x, torch.from_numpy(resize_frames(full, 48)))
    assert float(x.sum()) > 0
    again = load_frames("ncaltech101_48", "test", n_time_bins=2, root=root)  # from the cache
    assert torch.equal(again.tensors[0], x)
    assert len(list(cache.glob("ncaltech101-test-*.npz"))) == 2  # pooled and resized caches side by side


# ----------------------------------------------------------------------------- CIFAR10 end to end


def _explains_crop_flip_cutout(out, originals):
    """True if ``out`` [3, 32, 32] is a crop (padding 4, zero fill) of a maybe-flipped original,
    normalised, with one Cutout square (value 0) of side <= 16, clipped at the border."""
    for img in originals:
        for flip in (False, True):
            src = img[:, :, ::-1] if flip else img
            padded = np.pad(src, ((0, 0), (4, 4), (4, 4)))
            for top in range(9):
                for left in range(9):
                    ref = normalize(padded[:, top : top + 32, left : left + 32], CIFAR10_MEAN, CIFAR10_STD)
                    diff = ~torch.isclose(out, ref, atol=1e-6).all(0)
                    if not diff.any():
                        return True
                    rows, cols = diff.any(1).nonzero(), diff.any(0).nonzero()
                    h, w = rows.max() - rows.min() + 1, cols.max() - cols.min() + 1
                    hole = out[:, rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
                    if h <= 16 and w <= 16 and bool((hole == 0).all()):
                        return True
    return False


def test_fake_cifar10_through_make_loaders_with_augmentation_on_train_only(tmp_path, cache):
    data = tmp_path / "data"
    truth = write_cifar10(data)  # 10 train images, 1 test image (label 7, seed 99)
    before = snapshot(data)
    train, test = make_loaders("cifar10", n_time_bins=4, batch_size=4, seed=0, root=data)
    batches = list(train)
    assert [tuple(xb.shape) for xb, _ in batches] == [(4, 3, 32, 32), (4, 3, 32, 32), (2, 3, 32, 32)]
    assert batches[0][0].dtype == torch.float32 and batches[0][1].dtype == torch.int64
    ((xt, yt),) = list(test)
    assert yt.tolist() == [7]
    assert torch.equal(xt[0], normalize(fake_image(99), CIFAR10_MEAN, CIFAR10_STD))  # test: Normalize only
    x = torch.cat([xb for xb, _ in batches])
    y = torch.cat([yb for _, yb in batches])
    assert sorted(y.tolist()) == sorted(label for label, _ in truth)
    by_label: dict[int, list] = {}
    for label, seed in truth:
        by_label.setdefault(label, []).append(fake_image(seed))
    for i in range(len(x)):
        assert _explains_crop_flip_cutout(x[i], by_label[int(y[i])]), f"training image {i} is not crop/flip/cutout"
    plain = [normalize(img, CIFAR10_MEAN, CIFAR10_STD) for imgs in by_label.values() for img in imgs]
    assert sum(any(torch.equal(x[i], p) for p in plain) for i in range(len(x))) < len(x)  # augmented
    assert any(bool((x[i] == 0).all(0).any()) for i in range(len(x)))  # Cutout holes are there
    # seeded: same seed, same images; augment=False: the plain normalised images
    again, _ = make_loaders("cifar10", n_time_bins=4, batch_size=4, seed=0, root=data)
    assert torch.equal(torch.cat([xb for xb, _ in again]), x)
    off, _ = make_loaders("cifar10", n_time_bins=4, batch_size=4, seed=0, root=data, augment=False)
    for xb, _ in off:
        assert all(any(torch.equal(img, p) for p in plain) for img in xb)
    assert snapshot(data) == before and not cache.exists()  # static data: read only, nothing cached


def test_cifar10_autoaugment_option(tmp_path, cache):
    data = tmp_path / "data"
    write_cifar10(data)
    a, _ = make_loaders("cifar10", n_time_bins=1, batch_size=10, seed=3, root=data, autoaugment=True)
    b, _ = make_loaders("cifar10", n_time_bins=1, batch_size=10, seed=3, root=data, autoaugment=True)
    xa, xb = next(iter(a))[0], next(iter(b))[0]
    assert xa.shape == (10, 3, 32, 32) and torch.equal(xa, xb)
    with pytest.raises(InputError, match="autoaugment=True needs augmentation on"):
        make_loaders("cifar10", n_time_bins=1, batch_size=2, seed=0, root=data, autoaugment=True, augment=False)


# ----------------------------------------------------------------------------- model checks


def test_model_checks_name_the_mismatch():
    with pytest.raises(
        InputError,
        match=r"model takes frames input \[B, T, 2, 34, 34\] but dataset 'cifar10' "
        r"yields static batches \[B, 3, 32, 32\]",
    ):
        check_model_input("cifar10", build_model("digits_conv"))
    with pytest.raises(InputError, match=r"model takes static input .* dataset 'cifar10_dvs' yields frames"):
        check_model_input("cifar10_dvs", build_model("resnet18", width=0.0625))
    with pytest.raises(
        InputError,
        match=r"model takes \[B, T, 2, 34, 34\] but dataset 'cifar10_dvs' yields "
        r"\[B, T, 2, 32, 32\]",
    ):
        check_model_input("cifar10_dvs", build_model("nmnist_net"))
    with pytest.raises(InputError, match="model has 10 outputs but dataset 'cifar100' has 100 classes"):
        check_model_input("cifar100", build_model("resnet18", width=0.0625))
    with pytest.raises(InputError, match=r"yields \[B, T, 2, 32, 32\] \(dataset 'cifar10_dvs_128' yields those"):
        check_model_input("cifar10_dvs", build_model("vgg9_dvs", in_size=128, input_pool=4, width=0.0625))
    check_model_input("cifar10_dvs_128", build_model("vgg9_dvs", in_size=128, input_pool=4, width=0.0625))
    check_model_input("cifar10", build_model("resnet18", width=0.0625))
    check_model_input("dvs_gesture_128", build_model("gesture_net"))  # the paper's net takes 128x128 frames
    check_model_input("dvs_gesture", build_model("gesture_net", in_size=32))
    check_model_input("cifar10_dvs", build_model("vgg9_dvs", width=0.0625))


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_filled_model_kwargs_give_a_matching_model(name):
    kind, shape, classes = EXPECTED[name]
    model = "digits_mlp" if kind == "frames" else "resnet18"
    kwargs = dataset_model_kwargs(name, inspect.signature(MODELS[model]).parameters)
    expected = (
        {"num_classes": classes, "in_shape": list(shape)}
        if kind == "frames"
        else {"num_classes": classes, "in_channels": 3, "input_kind": "static"}
    )
    assert kwargs == expected
    with torch.device("meta"):  # shapes only
        check_model_input(name, build_model(model, **kwargs))
    resnet = dataset_model_kwargs("ncaltech101", ["num_classes", "in_channels", "input_kind", "width"])
    assert resnet == {"num_classes": 101, "in_channels": 2, "input_kind": "frames"}
    assert dataset_model_kwargs("cifar10_dvs", ["in_size"]) == {"in_size": 32}


def test_build_loaders_checks_the_model_before_reading_data(tmp_path, cache):
    spec = RunSpec(dataset="cifar10", model="digits_conv", data_root=str(tmp_path / "nowhere"))
    with pytest.raises(InputError, match="model takes frames input"):
        build_loaders(spec)
    data = tmp_path / "data"
    nmnist_folder(data)
    spec = RunSpec(dataset="nmnist", model="nmnist_net", data_root=str(data), augment=True, batch_size=4, t_max=2)
    train, test = build_loaders(spec)
    assert isinstance(train.collate_fn, AugmentFramesCollate) and next(iter(test))[0].shape == (3, 2, 2, 34, 34)
    assert not isinstance(
        build_loaders(RunSpec(**{**spec.__dict__, "augment": False}))[0].collate_fn, AugmentFramesCollate
    )


def test_cli_trains_on_a_fake_real_dataset(tmp_path, cache, capsys):
    from flexsnn.cli import main

    data = tmp_path / "data"
    nmnist_folder(data)
    config = tmp_path / "run.yaml"
    config.write_text("augment: true\nmodel_kwargs: {channels: [2, 2, 2]}\n")
    argv = [
        "train",
        "--dataset",
        "nmnist",
        "--data-root",
        str(data),
        "--model",
        "nmnist_net",
        "--config",
        str(config),
        "--t-max",
        "2",
        "--epochs",
        "1",
        "--batch-size",
        "3",
        "--calib-batches",
        "1",
        "--quiet",
        "--out",
        str(tmp_path / "run"),
    ]
    assert main(argv) == 0, capsys.readouterr().err
    assert (tmp_path / "run" / "model.safetensors").is_file()
    assert not any(p.suffix == ".npz" for p in data.rglob("*")) and any(cache.glob("nmnist-*.npz"))
    assert os.listdir(data) == ["NMNIST"]
