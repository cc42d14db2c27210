"""DigitsDVS: the simulated DVS recording of sklearn's digits, its split and its cache."""

from __future__ import annotations

import numpy as np
import pytest

from flexsnn.data import digits_dvs
from flexsnn.data.digits_dvs import (
    GENERATOR_VERSION,
    STAT_COLUMNS,
    VERSION1_PARAMS,
    DigitsDVS,
    DVSSimParams,
    background_activity,
    compare_statistics,
    ink,
    load_source,
    main,
    recording_statistics,
    saccade_path,
    simulate_dvs,
    statistics_table,
    stratified_test_mask,
    threshold_crossings,
)
from flexsnn.data.loaders import DATASETS
from flexsnn.errors import InputError


@pytest.fixture(scope="module")
def source():
    return load_source()


@pytest.fixture(scope="module")
def few(source):
    """The first 12 digits and their simulated recordings."""
    images, labels = source
    events, offsets, noise = simulate_dvs(images[:12], return_noise_mask=True)
    return images[:12], labels[:12], events, offsets, noise


NO_NOISE = DVSSimParams(leak_hz=0.0, shot_hz=0.0)


@pytest.fixture(scope="module")
def every_tenth(source):
    """Statistics of every 10th digit (180 recordings) with the default parameters."""
    images, _ = source
    return recording_statistics(*simulate_dvs(images[::10], return_noise_mask=True))


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


@pytest.mark.parametrize("profile", ["cosine", "linear"])
def test_saccade_path_is_a_closed_triangle(profile):
    params = DVSSimParams(velocity_profile=profile)
    path = saccade_path(params)
    assert path.shape == (3 * params.segment_us // params.step_us, 2)
    steps = params.segment_us // params.step_us
    d = params.saccade_px
    np.testing.assert_allclose(path[steps - 1], [d, d])  # diagonal
    np.testing.assert_allclose(path[2 * steps - 1], [0.0, d])  # back horizontally
    np.testing.assert_allclose(path[-1], [0.0, 0.0], atol=1e-12)  # back up: closed


def test_saccade_speed_profiles():
    # 100 steps per saccade; after a quarter of the first one the image has travelled
    # 1/4 (linear) or (1 - cos(pi/4)) / 2 = 0.1464 (cosine) of the diagonal of side 4.
    linear = saccade_path(DVSSimParams(velocity_profile="linear"))
    cosine = saccade_path(DVSSimParams(velocity_profile="cosine"))
    np.testing.assert_allclose(linear[24], [1.0, 1.0])
    np.testing.assert_allclose(cosine[24], [4 * (1 - np.cos(np.pi / 4)) / 2] * 2)
    speed = np.abs(np.diff(cosine[:100, 0]))
    assert speed.argmax() in (48, 49) and speed[0] < 0.1 * speed.max()  # starts slow, fastest mid-way
    np.testing.assert_allclose(np.diff(linear[:100, 0]), 0.04)  # constant speed
    assert saccade_path(VERSION1_PARAMS)[99].tolist() == [2.0, 2.0]


def test_ink_turns_coverage_into_strokes():
    c = np.array([0.0, 0.25, 0.5, 0.6, 1.0], dtype=np.float32)

    def logistic(z):
        return 1 / (1 + np.exp(-z))

    expected = (logistic((c - 0.5) / 0.1) - logistic(-5.0)) / (logistic(5.0) - logistic(-5.0))
    out = ink(c, 0.1)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, expected, atol=1e-6)
    np.testing.assert_allclose(out[[0, 2, 4]], [0.0, 0.5, 1.0], atol=1e-6)
    assert out[3] > 0.7 and out[1] < 0.1  # sharper than the coverage itself
    assert ink(c, None) is c


def test_params_are_checked():
    with pytest.raises(InputError, match="velocity_profile"):
        DVSSimParams(velocity_profile="jerk")
    with pytest.raises(InputError, match="shot_hz"):
        DVSSimParams(shot_hz=-1.0)
    with pytest.raises(InputError, match="stroke_edge"):
        DVSSimParams(stroke_edge=0.0)
    with pytest.raises(InputError, match="threshold"):
        DVSSimParams(threshold=0.0)


def test_generator_is_deterministic_and_per_sample(few):
    images, _, events, offsets, _ = few
    again, offsets_again = simulate_dvs(images)
    np.testing.assert_array_equal(events, again)
    np.testing.assert_array_equal(offsets, offsets_again)
    # sample i depends only on its own image and index: simulating 5..7 alone gives the same
    part, _ = simulate_dvs(images[5:8], first_index=5)
    np.testing.assert_array_equal(part, events[offsets[5] : offsets[8]])
    # ...and the index matters (it seeds the threshold mismatch and the noise)
    shifted, _ = simulate_dvs(images[5:6], first_index=6)
    assert not np.array_equal(shifted, events[offsets[5] : offsets[6]])


def test_events_sorted_inside_sensor_both_polarities(few):
    _, _, events, offsets, noise = few
    params = DVSSimParams()
    assert events.dtype == DigitsDVS.dtype
    for i in range(len(offsets) - 1):
        ev = events[offsets[i] : offsets[i + 1]]
        assert 2500 <= len(ev) <= 6500
        assert np.all(np.diff(ev["t"]) >= 0)
        assert ev["x"].min() >= 0 and ev["x"].max() < 34
        assert ev["y"].min() >= 0 and ev["y"].max() < 34
        assert set(np.unique(ev["p"])) == {0, 1}
        assert ev["t"].min() >= 0 and ev["t"].max() <= params.duration_us
        assert 0.03 < noise[offsets[i] : offsets[i + 1]].mean() < 0.15


def test_statistics_are_close_to_nmnist(every_tenth):
    # N-MNIST: ~4,000 events per sample over three 100 ms saccades, ON / OFF near 50 / 50
    st = every_tenth
    assert 3600 <= st["events_mean"] <= 4800
    assert 200 <= st["events_std"] <= 900
    assert 290 <= st["duration_ms"] <= 300
    assert 0.48 <= st["on_fraction"] <= 0.54
    # 1 Hz of background activity per pixel: 1156 px * 0.3 s = 347 noise events per sample
    assert 0.06 <= st["noise_fraction"] <= 0.11
    np.testing.assert_allclose(st["noise_fraction"] * st["events_mean"], 346.8, rtol=0.05)
    saccades = [st[f"saccade_{k}"] for k in (1, 2, 3)]
    np.testing.assert_allclose(sum(saccades), st["events_mean"])
    assert min(saccades) >= 800 and saccades[0] == max(saccades)  # the diagonal moves both axes


def test_version1_parameters_reproduce_the_previous_generator(source):
    # the "before" column of the module docstring's table: these are version 1's recordings
    images, _ = source
    events, offsets = simulate_dvs(images[:12], VERSION1_PARAMS)
    assert np.diff(offsets).tolist() == [1516, 1132, 1365, 1246, 1312, 1311, 1147, 1428, 1333, 1423, 1404, 1129]
    assert int(events["p"].sum()) == 7922
    # Event times are rounded to whole microseconds from numpy's vectorised log / cos, whose last
    # bits differ between CPU families (AVX-512 or not): a few of the 15,746 times may round the
    # other way, by 1 us each. 2,095,071,441 us on the machine that recorded these figures.
    assert abs(int(events["t"].sum()) - 2095071441) <= 50


def test_closed_path_balances_on_and_off_per_pixel(few):
    # The image returns to where it started, so each pixel's reference ends within one
    # threshold of where it began: ON and OFF counts of the digit's events differ by at most
    # one per pixel (noise events are left out: they do not move the reference).
    _, _, events, offsets, noise = few
    sample = np.repeat(np.arange(len(offsets) - 1), np.diff(offsets))
    pixel = (sample * 34 + events["y"].astype(np.int64)) * 34 + events["x"]
    signal = ~noise
    net = np.bincount(pixel[signal], weights=2 * events["p"][signal].astype(np.int64) - 1)
    total = np.bincount(pixel[signal])
    assert np.abs(net).max() <= 1
    assert total.max() >= 4  # pixels do fire back and forth


def test_noise_leaves_the_digits_events_unchanged(few):
    images, _, events, offsets, noise = few
    quiet, quiet_offsets = simulate_dvs(images, NO_NOISE)
    np.testing.assert_array_equal(events[~noise], quiet)
    sample = np.repeat(np.arange(12), np.diff(offsets))
    np.testing.assert_array_equal(np.bincount(sample[~noise], minlength=12), np.diff(quiet_offsets))


def test_background_activity_rates_and_polarity():
    # 40 blank recordings: only noise. Per recording Poisson(1156 * 0.3 s * (0.2 + 0.8 Hz)) =
    # 346.8 events; ON fraction (0.2 + 0.8 / 2) / 1.0 = 0.6; uniform over time and pixels.
    params = DVSSimParams()
    events, _, noise = simulate_dvs(np.zeros((40, 8, 8), np.float32), params, return_noise_mask=True)
    assert noise.all()
    n = len(events)
    assert abs(n - 40 * 346.8) < 4 * np.sqrt(40 * 346.8)
    assert abs(events["p"].mean() - 0.6) < 4 * np.sqrt(0.24 / n)
    per_saccade = np.bincount(events["t"] // params.segment_us, minlength=3)
    assert per_saccade.size == 3 and np.all(np.abs(per_saccade - n / 3) < 4 * np.sqrt(n / 3))
    assert len(np.unique(events["y"].astype(int) * 34 + events["x"])) > 0.9 * 1156  # spread over the sensor
    # leak only: all ON, at the leak rate
    _, pixel, t, p = background_activity(40, DVSSimParams(shot_hz=0.0))
    assert np.all(p == 1) and abs(p.size - 40 * 69.36) < 4 * np.sqrt(40 * 69.36)
    assert t.min() >= 0 and t.max() < params.duration_us and pixel.max() < 1156
    assert background_activity(3, NO_NOISE)[0].size == 0


def test_blank_image_without_noise_gives_no_events():
    events, offsets = simulate_dvs(np.zeros((2, 8, 8), np.float32), NO_NOISE)
    assert len(events) == 0
    np.testing.assert_array_equal(offsets, [0, 0, 0])


def test_edge_moving_onto_a_pixel_gives_on_then_off():
    # Version 1's geometry (28 px image, 2 px saccades, raw coverage, C = 0.4, no noise):
    # a bright square (source rows/cols 2..5) upscaled x3.5 at origin 2: sensor row 23 lies on
    # its bottom ramp (intensity 0.36 at dy=0, 0.93 at dy=2). The first saccade (down-right)
    # brightens it: ON only; the horizontal move leaves a mid-column pixel alone; the move
    # back up darkens it: OFF only.
    image = np.zeros((1, 8, 8), np.float32)
    image[0, 2:6, 2:6] = 1.0
    events, _ = simulate_dvs(image, VERSION1_PARAMS)
    at = events[(events["x"] == 14) & (events["y"] == 23)]
    first, middle, last = (at[(at["t"] > a) & (at["t"] <= a + 100_000)] for a in (-1, 100_000, 200_000))
    # log(0.93 + 0.1) - log(0.36 + 0.1) = 0.81, two thresholds of 0.4 (one or two crossings
    # depending on where the pixel's reference starts)
    assert 1 <= len(first) <= 2 and np.all(first["p"] == 1)
    assert len(middle) == 0
    assert 1 <= len(last) <= 2 and np.all(last["p"] == 0)


def test_cosine_profile_concentrates_events_mid_saccade(source):
    # Same digits, same path: the speed profile moves events in time; their number changes only
    # by the sampling of the path in 1 ms steps.
    images, _ = source
    cos_ev, cos_off = simulate_dvs(images[:6], NO_NOISE)
    lin_ev, lin_off = simulate_dvs(images[:6], DVSSimParams(velocity_profile="linear", leak_hz=0.0, shot_hz=0.0))
    np.testing.assert_allclose(np.diff(cos_off), np.diff(lin_off), rtol=0.005)

    def phase(ev):
        return (ev["t"] % 100_000) / 100_000

    def middle(ev):
        return np.mean((phase(ev) > 0.25) & (phase(ev) < 0.75))

    # the middle half of each saccade covers (1 - cos(3pi/4))/2 - (1 - cos(pi/4))/2 = 71 % of the path
    assert middle(cos_ev) > 0.62 and 0.4 < middle(lin_ev) < 0.6


def test_recording_statistics_by_hand():
    # sample 0: t = 5, 150_000, 250_000 (p = 1, 0, 1); sample 1: t = 20_000, 20_000 (p = 0, 0)
    events = np.zeros(5, dtype=DigitsDVS.dtype)
    events["t"] = [5, 150_000, 250_000, 20_000, 20_000]
    events["p"] = [1, 0, 1, 0, 0]
    noise = np.array([False, True, False, False, False])
    st = recording_statistics(events, np.array([0, 3, 5]), noise)
    assert st == {
        "events_mean": 2.5,
        "events_std": 0.5,
        "duration_ms": (249.995 + 0.0) / 2,
        "on_fraction": 0.4,
        "noise_fraction": 0.2,
        "saccade_1": 1.5,
        "saccade_2": 0.5,
        "saccade_3": 0.5,
    }
    assert recording_statistics(events, np.array([0, 3, 5]))["noise_fraction"] == 0.0
    with pytest.raises(InputError, match="empty sample"):
        recording_statistics(events, np.array([0, 0, 5]))


def test_statistics_table_and_script(capsys):
    row = {key: 1.0 for key, _, _ in STAT_COLUMNS}
    table = statistics_table({"a": row, "b": {**row, "events_mean": 4193.4}})
    lines = table.splitlines()
    assert lines[0] == "| statistic | a | b |" and lines[1] == "|---|---|---|"
    assert lines[2] == "| events / sample (mean) | 1 | 4193 |"
    assert lines[5] == "| ON fraction | 1.000 | 1.000 |" and len(lines) == 2 + len(STAT_COLUMNS)
    rows = compare_statistics(every=300)  # 6 digits
    assert list(rows) == ["version 1", f"version {GENERATOR_VERSION}"]
    assert rows["version 1"]["noise_fraction"] == 0.0 and rows["version 2"]["noise_fraction"] > 0.0
    assert rows["version 2"]["events_mean"] > 2 * rows["version 1"]["events_mean"]
    assert main(["--every", "600"]) == 0
    assert capsys.readouterr().out.startswith("| statistic | version 1 | version 2 |")
    with pytest.raises(InputError, match="--every"):
        main(["--every", "0"])


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
            np.testing.assert_array_equal(events, expected[offsets[source] : offsets[source + 1]])
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
    assert 2500 <= min(counts) and max(counts) <= 6500
    assert 3600 <= np.mean(counts) <= 4800


def test_a_new_generator_version_is_not_served_from_an_old_cache(tmp_path, tiny_source, monkeypatch):
    _, _, calls = tiny_source
    DigitsDVS(root=tmp_path)
    DigitsDVS(root=tmp_path)
    assert len(calls) == 1
    monkeypatch.setattr(digits_dvs, "GENERATOR_VERSION", GENERATOR_VERSION + 1)
    DigitsDVS(root=tmp_path)
    assert len(calls) == 2
    # binned frames are cached under the same version
    assert DATASETS["digits_dvs"].version == GENERATOR_VERSION == 2
