"""Event binning: exact counts on hand-built streams, both bin rules, validation."""

from __future__ import annotations

import numpy as np
import pytest

from flexsnn.data import SpatialPool, ToFrame, spatial_pool, to_frames
from flexsnn.data.events import EVENT_DTYPE
from flexsnn.errors import InputError

SENSOR = (4, 3, 2)  # W=4, H=3, P=2 -> frames [T, 2, 3, 4]


def make(rows):
    return np.array(rows, dtype=EVENT_DTYPE)


# (x, y, t, p): five events over t = 0..40
FIVE = make([(0, 0, 0, 1), (3, 2, 10, 0), (1, 1, 25, 1), (1, 1, 30, 1), (2, 0, 40, 0)])


def expected(n_bins, placements):
    out = np.zeros((n_bins, 2, 3, 4), np.float32)
    for b, (x, y, _, p) in placements:
        out[b, p, y, x] += 1
    return out


def test_n_time_bins_exact_counts_last_event_in_last_bin():
    # span [0, 40] in 4 bins of 10: t=0->0, 10->1, 25->2, 30->3, 40 (the end) -> 3
    frames = to_frames(FIVE, SENSOR, n_time_bins=4)
    assert frames.shape == (4, 2, 3, 4) and frames.dtype == np.float32
    np.testing.assert_array_equal(frames, expected(4, zip([0, 1, 2, 3, 3], FIVE.tolist())))


def test_n_time_bins_uneven_span_uses_exact_integer_edges():
    # span 40 in 3 bins: edges 13.33, 26.67 -> t=0,10 -> 0; 25 -> 1; 30, 40 -> 2
    frames = to_frames(FIVE, SENSOR, n_time_bins=3)
    np.testing.assert_array_equal(frames, expected(3, zip([0, 0, 1, 2, 2], FIVE.tolist())))


def test_time_window_bins():
    # w=15: ceil(40/15)=3 bins [0,15) [15,30) [30,40]: t=0,10 -> 0; 25 -> 1; 30, 40 -> 2
    frames = to_frames(FIVE, SENSOR, time_window=15)
    np.testing.assert_array_equal(frames, expected(3, zip([0, 0, 1, 2, 2], FIVE.tolist())))
    # w=20 divides the span: 2 bins, and t=40 (= t_end) joins the closed last bin
    frames = to_frames(FIVE, SENSOR, time_window=20)
    np.testing.assert_array_equal(frames, expected(2, zip([0, 0, 1, 1, 1], FIVE.tolist())))
    # a float window behaves the same
    np.testing.assert_array_equal(to_frames(FIVE, SENSOR, time_window=20.0), frames)


def test_explicit_span_drops_events_outside():
    # [5, 35] in 3 bins of 10: t=0 and t=40 dropped; 10 -> 0, 25 -> 2, 30 -> 2
    frames = to_frames(FIVE, SENSOR, n_time_bins=3, t_start=5, t_end=35)
    np.testing.assert_array_equal(
        frames, expected(3, [(0, FIVE[1].tolist()), (2, FIVE[2].tolist()), (2, FIVE[3].tolist())])
    )
    with pytest.raises(InputError, match="t_end"):
        to_frames(FIVE, SENSOR, n_time_bins=3, t_start=30, t_end=10)


def test_single_timestamp_goes_in_bin_zero():
    events = make([(0, 0, 7, 0), (1, 0, 7, 1)])
    frames = to_frames(events, SENSOR, n_time_bins=3)
    assert frames[0].sum() == 2 and frames[1:].sum() == 0


def test_single_polarity_sensor_merges_polarities():
    frames = to_frames(FIVE, (4, 3, 1), n_time_bins=1)
    assert frames.shape == (1, 1, 3, 4)
    assert frames[0, 0, 1, 1] == 2 and frames.sum() == 5


def test_total_count_random_stream_and_toframe():
    rng = np.random.default_rng(0)
    n = 1000
    events = np.zeros(n, EVENT_DTYPE)
    events["x"] = rng.integers(0, 34, n)
    events["y"] = rng.integers(0, 34, n)
    events["t"] = np.sort(rng.integers(0, 300_000, n))
    events["p"] = rng.integers(0, 2, n)
    frames = to_frames(events, (34, 34, 2), n_time_bins=7)
    assert frames.sum() == n
    np.testing.assert_array_equal(frames.sum(axis=(0, 2, 3)), np.bincount(events["p"], minlength=2))
    np.testing.assert_array_equal(ToFrame((34, 34, 2), n_time_bins=7)(events), frames)
    np.testing.assert_array_equal(
        ToFrame((34, 34, 2), time_window=50_000)(events), to_frames(events, (34, 34, 2), time_window=50_000)
    )


def test_matches_tonic_except_tonics_dropped_last_event():
    tonic = pytest.importorskip("tonic")
    rng = np.random.default_rng(1)
    n = 400
    events = np.zeros(n, EVENT_DTYPE)
    events["x"], events["y"] = rng.integers(0, 34, n), rng.integers(0, 34, n)
    events["t"] = np.sort(rng.integers(0, 100_000, n))
    events["t"][0], events["t"][-1] = 0, 100_000  # span divisible by T: same bin edges
    events["p"] = rng.integers(0, 2, n)
    ours = to_frames(events, (34, 34, 2), n_time_bins=5)
    theirs = tonic.transforms.ToFrame(sensor_size=(34, 34, 2), n_time_bins=5)(events)
    last = events[-1]
    ours[4, last["p"], last["y"], last["x"]] -= 1  # Tonic's half-open last bin drops t_end
    np.testing.assert_array_equal(ours, theirs)


def test_bad_events_raise_naming_events():
    with pytest.raises(InputError, match="events must be a 1-D numpy structured array"):
        to_frames(np.zeros((5, 4)), SENSOR, n_time_bins=2)
    with pytest.raises(InputError, match="events must be"):
        to_frames([(0, 0, 0, 0)], SENSOR, n_time_bins=2)
    with pytest.raises(InputError, match="events is empty"):
        to_frames(FIVE[:0], SENSOR, n_time_bins=2)
    bad = FIVE.copy()
    bad["x"][2] = 4
    with pytest.raises(InputError, match=r"events\['x'\] has value 4 outside \[0, 4\)"):
        to_frames(bad, SENSOR, n_time_bins=2)
    bad = FIVE.copy()
    bad["y"][0] = -1
    with pytest.raises(InputError, match=r"events\['y'\]"):
        to_frames(bad, SENSOR, n_time_bins=2)
    bad = FIVE.copy()
    bad["p"][0] = -1  # -1/+1 polarity must be mapped to 0/1 first
    with pytest.raises(InputError, match=r"events\['p'\]"):
        to_frames(bad, SENSOR, n_time_bins=2)


def test_bad_bin_arguments():
    with pytest.raises(InputError, match="n_time_bins"):
        to_frames(FIVE, SENSOR, n_time_bins=0)
    with pytest.raises(InputError, match="n_time_bins"):
        to_frames(FIVE, SENSOR, n_time_bins=2.5)
    with pytest.raises(InputError, match="exactly one of n_time_bins or time_window"):
        to_frames(FIVE, SENSOR)
    with pytest.raises(InputError, match="exactly one of n_time_bins or time_window"):
        to_frames(FIVE, SENSOR, n_time_bins=2, time_window=10)
    with pytest.raises(InputError, match="time_window"):
        to_frames(FIVE, SENSOR, time_window=-5)
    with pytest.raises(InputError, match="sensor_size"):
        to_frames(FIVE, (4, 3), n_time_bins=2)
    with pytest.raises(InputError, match=r"sensor_size\[2\]"):
        to_frames(FIVE, (4, 3, 0), n_time_bins=2)


def test_spatial_pool_sums_blocks():
    frames = np.arange(2 * 1 * 4 * 4, dtype=np.float32).reshape(2, 1, 4, 4)
    pooled = spatial_pool(frames, 2)
    assert pooled.shape == (2, 1, 2, 2)
    assert pooled[0, 0, 0, 0] == 0 + 1 + 4 + 5 and pooled[1, 0, 1, 1] == 26 + 27 + 30 + 31
    assert pooled.sum() == frames.sum()
    np.testing.assert_array_equal(SpatialPool(2)(frames), pooled)
    with pytest.raises(InputError, match="factor=3"):
        spatial_pool(frames, 3)
    with pytest.raises(InputError, match="factor"):
        spatial_pool(frames, 0)
