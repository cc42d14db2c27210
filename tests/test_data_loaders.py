"""load_frames / make_loaders: shapes, dtypes, caching, determinism, registry."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from flexsnn.data import DATASETS, digits_dvs, load_frames, loaders, make_loaders
from flexsnn.data.digits_dvs import load_source, simulate_dvs
from flexsnn.data.frames import to_frames
from flexsnn.data.loaders import register_frame_dataset
from flexsnn.errors import InputError


@pytest.fixture
def tiny_digits(monkeypatch):
    """DigitsDVS built from 20 digits (2 classes x 10) instead of 1797; counts generator calls."""
    images, labels = load_source()
    picks = np.sort(np.concatenate([np.flatnonzero(labels == c)[:10] for c in (3, 7)]))
    calls = []

    def fake_source():
        calls.append(1)
        return images[picks], labels[picks]

    monkeypatch.setattr(digits_dvs, "load_source", fake_source)
    return images[picks], labels[picks], calls


def test_load_frames_shapes_values_and_cache(tmp_path, tiny_digits, monkeypatch):
    images, labels, calls = tiny_digits
    train = load_frames("digits_dvs", "train", n_time_bins=6, root=tmp_path)
    test = load_frames("digits_dvs", "test", n_time_bins=6, root=tmp_path)
    x, y = train.tensors
    assert x.shape == (16, 6, 2, 34, 34) and x.dtype == torch.float32
    assert y.shape == (16,) and y.dtype == torch.int64
    assert test.tensors[0].shape == (4, 6, 2, 34, 34)
    assert sorted(test.tensors[1].tolist()) == [3, 3, 7, 7]
    # the frames are the binned events of the right samples
    events, offsets = simulate_dvs(images)
    rank = [list(labels[: i + 1]).count(labels[i]) for i in range(20)]  # 1-based rank in class
    train_positions = [i for i in range(20) if rank[i] % 5 != 0]  # every 5th per class is test
    assert [labels[i] for i in train_positions] == y.tolist()
    i = train_positions[3]
    np.testing.assert_array_equal(
        x[3].numpy(), to_frames(events[offsets[i] : offsets[i + 1]], (34, 34, 2), n_time_bins=6)
    )
    assert x.sum().item() == sum(offsets[i + 1] - offsets[i] for i in train_positions)
    assert len(calls) == 1  # the events were generated once for both splits

    def fail(*args, **kwargs):
        raise AssertionError("rebuilt despite the cache")

    monkeypatch.setattr(digits_dvs, "simulate_dvs", fail)
    monkeypatch.setattr(loaders, "bin_event_dataset", fail)
    again = load_frames("digits_dvs", "train", n_time_bins=6, root=tmp_path)
    assert torch.equal(again.tensors[0], x) and torch.equal(again.tensors[1], y)
    # a new bin count is a new cache entry (binned from the cached events, no regeneration)
    monkeypatch.undo()
    monkeypatch.setattr(digits_dvs, "load_source", lambda: (_ for _ in ()).throw(AssertionError("regenerated")))
    assert load_frames("digits_dvs", "train", n_time_bins=3, root=tmp_path).tensors[0].shape[1] == 3


def test_make_loaders_batches_and_seeded_shuffle(tmp_path, tiny_digits):
    train, test = make_loaders("digits_dvs", n_time_bins=4, batch_size=5, seed=3, root=tmp_path)
    x, y = next(iter(test))
    assert x.shape == (4, 4, 2, 34, 34) and y.shape == (4,)  # test split has 4 samples
    assert train.generator is not None

    def order(loader):
        return torch.cat([yb for _, yb in loader]).tolist(), torch.cat([xb.sum(dim=(1, 2, 3, 4)) for xb, _ in loader])

    again, _ = make_loaders("digits_dvs", n_time_bins=4, batch_size=5, seed=3, root=tmp_path)
    other, _ = make_loaders("digits_dvs", n_time_bins=4, batch_size=5, seed=4, root=tmp_path)
    first, sums = order(train)
    assert [b[0].shape[0] for b in train] == [5, 5, 5, 1]
    again_labels, again_sums = order(again)
    assert first == again_labels and torch.equal(sums, again_sums)
    assert not torch.equal(sums, order(other)[1])
    assert not torch.equal(order(train)[1], sums)  # next epoch, new order
    test_sums = [xb.sum().item() for xb, _ in test]
    assert test_sums == [xb.sum().item() for xb, _ in test]  # test order fixed


def test_registry_and_bad_arguments(tmp_path):
    assert "digits_dvs" in DATASETS
    with pytest.raises(InputError, match="dataset must be one of.*'digits_dvs'.*got 'mnist9'"):
        load_frames("mnist9", root=tmp_path)
    with pytest.raises(InputError, match="split must be one of 'train', 'test'"):
        load_frames("digits_dvs", split="val", root=tmp_path)
    with pytest.raises(InputError, match="n_time_bins"):
        load_frames("digits_dvs", n_time_bins=0, root=tmp_path)
    with pytest.raises(InputError, match="batch_size"):
        make_loaders("digits_dvs", n_time_bins=2, batch_size=0, seed=0, root=tmp_path)
    with pytest.raises(InputError, match="seed"):
        make_loaders("digits_dvs", n_time_bins=2, batch_size=4, seed="x", root=tmp_path)
    with pytest.raises(InputError, match="dataset must be one of"):
        make_loaders("nope", n_time_bins=2, batch_size=4, seed=0, root=tmp_path)


def test_registered_dataset_is_cached_by_version(tmp_path, monkeypatch):
    calls = []

    def build(split, n_time_bins, root):
        calls.append((split, n_time_bins))
        x = np.full((3, n_time_bins, 1, 2, 2), 2.0 if split == "train" else 1.0, np.float32)
        return x, np.array([0, 1, 2])

    monkeypatch.setitem(DATASETS, "toy", None)  # removed again after the test
    register_frame_dataset("toy", build, version=1)
    ds = load_frames("toy", "train", n_time_bins=2, root=tmp_path)
    assert ds.tensors[0].shape == (3, 2, 1, 2, 2) and ds.tensors[0].dtype == torch.float32
    assert ds.tensors[0].sum().item() == 3 * 2 * 4 * 2.0 and ds.tensors[1].dtype == torch.int64
    load_frames("toy", "train", n_time_bins=2, root=tmp_path)
    assert calls == [("train", 2)]
    register_frame_dataset("toy", build, version=2)  # new version: cache not reused
    load_frames("toy", "train", n_time_bins=2, root=tmp_path)
    assert calls == [("train", 2), ("train", 2)]
