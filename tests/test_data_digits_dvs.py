"""DigitsDVS: the simulated DVS recording of sklearn's digits, its split and its cache."""
from __future__ import annotations

import numpy as np
import pytest

from flexsnn.data import digits_dvs
from flexsnn.data.digits_dvs import (
    DigitsDVS,
    DVSSimParams,
    load_source,
    saccade_path,
    simulate_dvs,
    stratified_test_mask,
    threshold_crossings,
)
from flexsnn.errors import InputError


@pytest.fixture(scope="module")
def source():
    return load_source()


@pytest.fixture(scope="module")
def few(source):
    """The first 12 digits and their simulated recordings."""
    images, labels = source
    events, offsets = simulate_dvs(images[:12])
    return images[:12], labels[:12], events, offsets


@pytest.fixture
def tiny_source(monkeypatch, source):
    """Replace sklearn's 1797 digits by 30 of them (3 classes x 10) so DigitsDVS builds fast."""
    images, labels = source
    picks = np.concatenate([np.flatnonzero(labels == c)[:10] for c in (0, 1, 2)])
    picks.sort()
    calls = []

    def fake_source():
        calls.append(1)
        return images[picks], labels[picks]

    monkeypatch.setattr(digits_dvs, "load_source", fake_source)
    return images[picks], labels[picks], calls


def test_threshold_crossings_by_hand():
    # pixel 0: 0.1 -> 1.0 with C = 0.4 crosses +0.4 and +0.8 at (0.4-0.1)/0.9 and (0.8-0.1)/0.9
    # pixel 1: -0.2 -> -1.3 with C = 0.5 crosses -0.5 and -1.0 at 0.3/1.1 and 0.8/1.1
    # pixel 2: 0.0 -> 0.3 with C = 0.4: no event
    d0 = np.array([0.1, -0.2, 0.0])
    d1 = np.array([1.0, -1.3, 0.3])
    thr = np.array([0.4, 0.5, 0.4])
    count, which, frac = threshold_crossings(d0, d1, thr)
    np.testing.assert_array_equal(count, [2, 2, 0])
    np.testing.assert_array_equal(which, [0, 0, 1, 1])
    np.testing.assert_allclose(frac, [0.3 / 0.9, 0.7 / 0.9, 0.3 / 1.1, 0.8 / 1.1])


def test_saccade_path_is_a_closed_triangle():
    params = DVSSimParams()
    path = saccade_path(params)
    assert path.shape == (3 * params.segment_us // params.step_us, 2)
    steps = params.segment_us // params.step_us
    d = params.saccade_px
    np.testing.assert_allclose(path[steps - 1], [d, d])        # diagonal
    np.testing.assert_allclose(path[2 * steps - 1], [0.0, d])  # back horizontally
    np.testing.assert_array_equal(path[-1], [0.0, 0.0])        # back up: closed


def test_generator_is_deterministic_and_per_sample(few):
    images, _, events, offsets = few
    again, offsets_again = simulate_dvs(images)
    np.testing.assert_array_equal(events, again)
    np.testing.assert_array_equal(offsets, offsets_again)
    # sample i depends only on its own image and index: simulating 5..7 alone gives the same
    part, part_offsets = simulate_dvs(images[5:8], first_index=5)
    np.testing.assert_array_equal(part, events[offsets[5]:offsets[8]])
    # ...and the index matters (it seeds the threshold mismatch)
    shifted, _ = simulate_dvs(images[5:6], first_index=6)
    assert not np.array_equal(shifted, events[offsets[5]:offsets[6]])


def test_events_sorted_inside_sensor_both_polarities_moderate_count(few):
    _, _, events, offsets = few
    params = DVSSimParams()
    assert events.dtype == DigitsDVS.dtype
    for i in range(len(offsets) - 1):
        ev = events[offsets[i]:offsets[i + 1]]
        assert 500 <= len(ev) <= 3000
        assert np.all(np.diff(ev["t"]) >= 0)
        assert ev["x"].min() >= 0 and ev["x"].max() < 34
        assert ev["y"].min() >= 0 and ev["y"].max() < 34
        assert set(np.unique(ev["p"])) == {0, 1}
        assert ev["t"].min() >= 0 and ev["t"].max() <= 3 * params.segment_us


def test_closed_path_balances_on_and_off_per_pixel(few):
    # The image returns to where it started, so each pixel's reference ends within one
    # threshold of where it began: ON and OFF counts differ by at most one per pixel.
    _, _, events, offsets = few
    sample = np.repeat(np.arange(len(offsets) - 1), np.diff(offsets))
    pixel = (sample * 34 + events["y"].astype(np.int64)) * 34 + events["x"]
    net = np.bincount(pixel, weights=2 * events["p"].astype(np.int64) - 1)
    total = np.bincount(pixel)
    assert np.abs(net).max() <= 1
    assert total.max() >= 4  # pixels do fire back and forth


def test_blank_image_gives_no_events():
    events, offsets = simulate_dvs(np.zeros((2, 8, 8), np.float32))
    assert len(events) == 0
    np.testing.assert_array_equal(offsets, [0, 0, 0])


def test_edge_moving_onto_a_pixel_gives_on_then_off():
    # A bright square (source rows/cols 2..5) upscaled x3.5 at origin 2: sensor row 23 lies on
    # its bottom ramp (intensity 0.36 at dy=0, 0.93 at dy=2). The first saccade (down-right)
    # brightens it: ON only; the horizontal move leaves a mid-column pixel alone; the move
    # back up darkens it: OFF only.
    image = np.zeros((1, 8, 8), np.float32)
    image[0, 2:6, 2:6] = 1.0
    events, _ = simulate_dvs(image)
    at = events[(events["x"] == 14) & (events["y"] == 23)]
    first, middle, last = (at[(at["t"] > a) & (at["t"] <= a + 100_000)] for a in (-1, 100_000, 200_000))
    # log(0.93 + 0.1) - log(0.36 + 0.1) = 0.81, two thresholds of 0.4 (one or two crossings
    # depending on where the pixel's reference starts)
    assert 1 <= len(first) <= 2 and np.all(first["p"] == 1)
    assert len(middle) == 0
    assert 1 <= len(last) <= 2 and np.all(last["p"] == 0)


def test_simulate_rejects_bad_images():
    with pytest.raises(InputError, match="images"):
        simulate_dvs(np.zeros((8, 8)))


def test_stratified_split_is_every_fifth_of_each_class():
    labels = np.array([0, 1, 0, 0, 1, 0, 0, 1, 1, 1, 0, 0, 0, 0, 0])
    mask = stratified_test_mask(labels)
    # class 0 at positions 0,2,3,5,6,10,11,12,13,14 -> 5th and 10th are 6 and 14
    # class 1 at positions 1,4,7,8,9 -> 5th is 9
    np.testing.assert_array_equal(np.flatnonzero(mask), [6, 9, 14])


def test_dataset_tonic_interface_split_and_labels(tmp_path, tiny_source):
    images, labels, _ = tiny_source
    train, test = DigitsDVS(root=tmp_path, train=True), DigitsDVS(root=tmp_path, train=False)
    assert DigitsDVS.sensor_size == (34, 34, 2) and DigitsDVS.ordering == "xytp"
    assert DigitsDVS.classes == [str(i) for i in range(10)]
    assert len(train) == 24 and len(test) == 6  # 2 of 10 per class
    assert set(train.indices).isdisjoint(test.indices)
    assert sorted(np.concatenate([train.indices, test.indices])) == list(range(30))
    assert np.bincount(test.targets).tolist() == [2, 2, 2]
    expected, offsets = simulate_dvs(images)
    for ds in (train, test):
        for i in (0, len(ds) - 1):
            events, label = ds[i]
            source = ds.indices[i]
            assert label == labels[source] and isinstance(label, int)
            np.testing.assert_array_equal(events, expected[offsets[source]:offsets[source + 1]])
    with pytest.raises(IndexError):
        train[len(train)]


def test_dataset_transforms_and_cache(tmp_path, tiny_source, monkeypatch):
    _, _, calls = tiny_source
    ds = DigitsDVS(root=tmp_path, transform=len, target_transform=lambda y: y + 100)
    n_events, target = ds[0]
    assert n_events == len(DigitsDVS(root=tmp_path)[0][0]) and target == ds.targets[0] + 100
    assert len(calls) == 1  # the second dataset came from the cache
    assert list(tmp_path.glob("digits_dvs-*.npz"))

    def fail(*args, **kwargs):
        raise AssertionError("generator called despite the cache")

    monkeypatch.setattr(digits_dvs, "simulate_dvs", fail)
    assert len(DigitsDVS(root=tmp_path, train=False)) == 6
    with pytest.raises(InputError, match="train"):
        DigitsDVS(root=tmp_path, train="yes")


def test_full_dataset_labels_and_split(tmp_path_factory, source):
    # The real thing (a few seconds once; shared with other tests through the session cache).
    _, labels = source
    root = tmp_path_factory.getbasetemp() / "flexsnn-cache"
    train, test = DigitsDVS(root=root, train=True), DigitsDVS(root=root, train=False)
    assert len(train) + len(test) == 1797
    np.testing.assert_array_equal(train.targets, labels[train.indices])
    np.testing.assert_array_equal(test.targets, labels[test.indices])
    per_class = np.bincount(labels)
    np.testing.assert_array_equal(np.bincount(test.targets), per_class // 5)
    counts = [len(train[i][0]) for i in range(0, len(train), 50)]
    assert 500 <= min(counts) and max(counts) <= 3000
