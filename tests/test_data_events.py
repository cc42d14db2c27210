"""The one event check and packer: rules shared by binning and the simulator."""

from __future__ import annotations

import numpy as np
import pytest

from flexsnn.data.events import EVENT_DTYPE, check_events, check_sensor_size, make_events, sort_by_time
from flexsnn.errors import InputError

SENSOR = (4, 3, 2)


def events(rows, dtype=EVENT_DTYPE):
    return np.array(rows, dtype=dtype)


def test_valid_stream_is_returned_unchanged_and_uncopied():
    ev = events([(0, 0, 5, 1), (3, 2, 1, 0)])
    assert check_events(ev, SENSOR) is ev


def test_empty_stream_only_when_allowed():
    with pytest.raises(InputError, match="events is empty"):
        check_events(events([]), SENSOR)
    assert check_events(events([]), SENSOR, allow_empty=True).size == 0


@pytest.mark.parametrize(
    "field, value, match",
    [
        ("x", 4, r"events\['x'\] has value 4 outside \[0, 4\)"),
        ("y", -1, r"events\['y'\] has value -1 outside \[0, 3\)"),
        ("p", 2, r"events\['p'\] has value 2 outside \[0, 2\)"),
    ],
)
def test_out_of_sensor_values_are_named(field, value, match):
    ev = events([(0, 0, 0, 0), (1, 1, 1, 1)])
    ev[field][1] = value
    with pytest.raises(InputError, match=match):
        check_events(ev, SENSOR)


def test_polarity_checked_for_single_polarity_sensor():
    with pytest.raises(InputError, match=r"events\['p'\] has value 1 outside \[0, 1\)"):
        check_events(events([(0, 0, 0, 1)]), (4, 3, 1))


def test_field_types():
    float_x = np.zeros(1, dtype=[("x", "f4"), ("y", "i2"), ("t", "i8"), ("p", "i1")])
    with pytest.raises(InputError, match=r"events\['x'\] must hold integers"):
        check_events(float_x, SENSOR)
    nan_t = np.zeros(1, dtype=[("x", "i2"), ("y", "i2"), ("t", "f8"), ("p", "i1")])
    nan_t["t"] = np.nan
    with pytest.raises(InputError, match="NaN or infinite"):
        check_events(nan_t, SENSOR)
    huge_t = np.zeros(1, dtype=[("x", "i2"), ("y", "i2"), ("t", "u8"), ("p", "?")])
    huge_t["t"] = 2**63
    with pytest.raises(InputError, match="beyond the int64 range"):
        check_events(huge_t, SENSOR)
    with pytest.raises(InputError, match=r"missing fields \['p'\]"):
        check_events(np.zeros(2, dtype=[("x", "i2"), ("y", "i2"), ("t", "i8")]), SENSOR)
    with pytest.raises(InputError, match="1-D"):
        check_events(np.zeros((2, 2), dtype=EVENT_DTYPE), SENSOR)


def test_check_sensor_size():
    assert check_sensor_size([34, 34, np.int64(2)]) == (34, 34, 2)
    for bad, match in [
        ((4, 3), "Tonic-style"),
        ("abc", "Tonic-style"),
        ((4, 3, 0), r"sensor_size\[2\]"),
        ((4.5, 3, 2), r"sensor_size\[0\]"),
        ((True, 3, 2), r"sensor_size\[0\]"),
    ]:
        with pytest.raises(InputError, match=match):
            check_sensor_size(bad)


def test_sort_by_time_is_stable_and_copies_only_when_needed():
    ordered = events([(0, 0, 1, 0), (1, 0, 2, 0)])
    assert sort_by_time(ordered) is ordered
    shuffled = events([(0, 0, 5, 0), (1, 0, 1, 0), (2, 0, 5, 0)])
    assert sort_by_time(shuffled)["x"].tolist() == [1, 0, 2]


def test_make_events_round_trips_and_refuses_instead_of_casting():
    ev = make_events([0, 32767], [5, 0], [2**62, -3], [1, 0])
    assert ev.dtype == EVENT_DTYPE
    assert ev["x"].tolist() == [0, 32767] and ev["t"].tolist() == [2**62, -3]
    assert make_events(np.array([1.0]), [2], [3.0], [True])["p"].tolist() == [1]
    for kwargs, match in [
        (dict(x=[65541]), r"events\['x'\] has value 65541 outside the int16 range"),
        (dict(p=[257]), r"events\['p'\] has value 257"),
        (dict(p=[0.5]), r"events\['p'\] has value 0.5; expected integers"),
        (dict(x=[3.7]), r"events\['x'\] has value 3.7"),
        (dict(t=[np.inf]), r"events\['t'\] has value inf"),
        (dict(t=[2.0**60]), "too large to be an exact integer"),
        (dict(t=np.array([2**64 - 1], dtype=np.uint64)), r"events\['t'\] has value 18446744073709551615"),
        (dict(y=["a"]), r"events\['y'\] must hold integers"),
        (dict(y=[1, 2]), "one value per event"),
    ]:
        cols = dict(x=[0], y=[0], t=[0], p=[0]) | kwargs
        with pytest.raises(InputError, match=match):
            make_events(**cols)
