"""Property tests over event arrays: make_events, check_events, to_frames and every file reader.

For any input: either flexsnn's own error, or a result whose values are exactly the input's
(a valid array round-trips, a valid file reads back what was written). Bytes of valid files
are also mutated at random: a reader either refuses them with DatasetError or returns events
that pass check_events.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from test_data_event_datasets import aedat31_packet, atis_bytes, dvs_word

from flexsnn.data.events import EVENT_DTYPE, check_events, make_events
from flexsnn.data.frames import to_frames
from flexsnn.data.readers import (
    read_aedat2_dvs128,
    read_aedat31_polarity,
    read_atis_bin,
    read_events_npz,
    read_gesture_labels,
    read_tonic_gesture_npy,
)
from flexsnn.errors import DatasetError, InputError

PROPERTY = settings(
    max_examples=60,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
INT_DTYPES = [np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64, np.bool_]
ANY_DTYPES = [*INT_DTYPES, np.float32, np.float64]
LIMITS = {f: np.iinfo(EVENT_DTYPE[f]) for f in ("x", "y", "t", "p")}


def column(size):
    return st.sampled_from(ANY_DTYPES).flatmap(lambda dt: hnp.arrays(dt, size))


def valid_value(v, field) -> bool:
    """The independent oracle of make_events: an integer that fits the field exactly."""
    v = v.item()
    if isinstance(v, float) and (not np.isfinite(v) or not v.is_integer() or abs(v) > 2.0**53):
        return False
    return LIMITS[field].min <= int(v) <= LIMITS[field].max


# ----------------------------------------------------------------------------- make_events


@PROPERTY
@given(st.integers(0, 8).flatmap(lambda n: st.tuples(column(n), column(n), column(n), column(n))))
def test_make_events_refuses_or_round_trips_exactly(cols):
    all_valid = all(valid_value(v, f) for f, c in zip("xytp", cols) for v in c)
    try:
        events = make_events(*cols)
    except InputError:
        assert not all_valid  # refused only for a real reason
        return
    assert all_valid
    for f, c in zip("xytp", cols):
        assert events[f].tolist() == [int(v.item()) for v in c]


# ----------------------------------------------------------------------------- check_events


@st.composite
def structured_events(draw):
    n = draw(st.integers(0, 10))
    dtypes = {f: draw(st.sampled_from(ANY_DTYPES)) for f in "xytp"}
    arr = np.empty(n, dtype=[(f, dtypes[f]) for f in "xytp"])
    for f in "xytp":
        arr[f] = draw(hnp.arrays(dtypes[f], n))
    return arr


@PROPERTY
@given(structured_events(), st.tuples(st.integers(1, 40), st.integers(1, 40), st.integers(1, 3)), st.booleans())
def test_check_events_accepts_exactly_the_valid_streams(events, sensor, allow_empty):
    before = events.copy()
    ok = (
        (allow_empty or events.size > 0)
        and all(events[f].dtype.kind in "iub" for f in "xyp")
        and (
            events["t"].dtype.kind in "iu"
            and (events.size == 0 or int(events["t"].max()) < 2**63)
            or events["t"].dtype.kind == "f"
            and bool(np.isfinite(events["t"]).all())
        )
    )
    for f, size in zip("xyp", sensor):
        ok = ok and all(0 <= int(v) < size for v in events[f].tolist()) if events[f].dtype.kind in "iub" else False
    try:
        out = check_events(events, sensor, allow_empty=allow_empty)
    except InputError:
        assert not ok
    else:
        assert ok and out is events
    assert events.tobytes() == before.tobytes()  # never modified


# ----------------------------------------------------------------------------- to_frames


@st.composite
def valid_stream(draw, t_min=-(2**62), t_max=2**62):
    w, h, p = draw(st.integers(1, 6)), draw(st.integers(1, 6)), draw(st.integers(1, 2))
    n = draw(st.integers(1, 30))
    rows = draw(
        st.lists(
            st.tuples(
                st.integers(0, w - 1),
                st.integers(0, h - 1),
                st.integers(t_min, t_max),
                st.integers(0, 1 if p == 1 else p - 1),
            ),
            min_size=n,
            max_size=n,
        )
    )
    return np.array(rows, dtype=EVENT_DTYPE), (w, h, p)


@PROPERTY
@given(valid_stream(), st.integers(1, 7), st.data())
def test_to_frames_counts_every_event_once_in_its_pixel(stream, n_bins, data):
    events, (w, h, p) = stream
    window = data.draw(st.none() | st.integers(1, 2**62) | st.floats(1e-3, 1e18))
    kwargs = {"n_time_bins": n_bins} if window is None else {"time_window": window}
    kwargs["max_values"] = 2**22  # a short window over a long stream would otherwise allocate up to 4 GiB
    try:
        frames = to_frames(events, (w, h, p), **kwargs)
    except InputError as exc:  # only a bin count too large to allocate
        assert window is not None and "max_values" in str(exc)
        return
    assert frames.dtype == np.float32 and frames.shape[1:] == (p, h, w)
    if window is None:
        assert frames.shape[0] == n_bins
    per_pixel = np.zeros((p, h, w))
    np.add.at(per_pixel, (events["p"] if p > 1 else 0, events["y"], events["x"]), 1)
    np.testing.assert_array_equal(frames.sum(axis=0), per_pixel)  # nothing lost, moved or duplicated
    # later events never land in earlier bins
    order = np.argsort(events["t"], kind="stable")
    bins = [
        int(
            np.flatnonzero(
                to_frames(
                    events[i : i + 1], (w, h, p), t_start=int(events["t"].min()), t_end=int(events["t"].max()), **kwargs
                ).sum(axis=(1, 2, 3))
            )[0]
        )
        for i in order[[0, -1]]
    ]
    assert bins[0] <= bins[1]
    span = int(events["t"].max()) - int(events["t"].min())
    assert bins[1] == (frames.shape[0] - 1 if span else 0)  # the last event sits in the last (closed) bin


@PROPERTY
@given(valid_stream(t_min=0, t_max=1000), st.integers(1, 5), st.integers(-10, 1010), st.integers(0, 1100))
def test_to_frames_with_a_span_counts_exactly_the_events_inside(stream, n_bins, t_start, length):
    events, sensor = stream
    t_end = t_start + length
    frames = to_frames(events, sensor, n_time_bins=n_bins, t_start=t_start, t_end=t_end)
    inside = (events["t"] >= t_start) & (events["t"] <= t_end)
    assert frames.sum() == inside.sum()


@PROPERTY
@given(structured_events(), st.tuples(st.integers(1, 8), st.integers(1, 8), st.integers(1, 2)), st.integers(1, 4))
def test_to_frames_on_any_array_raises_only_input_error(events, sensor, n_bins):
    try:
        frames = to_frames(events, sensor, n_time_bins=n_bins)
    except InputError:
        return
    assert frames.sum() == events.size


# ----------------------------------------------------------------------------- readers: round trips


@pytest.fixture(scope="module")
def scratch(tmp_path_factory) -> Path:
    """One folder for the files the examples write: each example overwrites its own file, so a
    run leaves one small folder under pytest's temporary root, not one per example."""
    return tmp_path_factory.mktemp("event-files")


@PROPERTY
@given(
    st.lists(
        st.tuples(st.integers(0, 33), st.integers(0, 33), st.integers(0, 2**23 - 1), st.integers(0, 1)), max_size=40
    )
)
def test_atis_bin_round_trip(scratch, rows):
    f = scratch / "s.bin"
    f.write_bytes(atis_bytes(rows))
    assert read_atis_bin(f, (34, 34, 2)).tolist() == rows


@st.composite
def dvs128_stream(draw):
    n = draw(st.integers(0, 40))
    gaps = draw(st.lists(st.integers(0, 2**31 - 1), min_size=n, max_size=n))  # < 2**31: unwrap is unambiguous
    t = np.cumsum(np.array([draw(st.integers(0, 2**33)), *gaps], dtype=np.int64))[1:] if n else np.zeros(0, np.int64)
    addr = draw(
        st.lists(st.tuples(st.integers(0, 127), st.integers(0, 127), st.integers(0, 1)), min_size=n, max_size=n)
    )
    return addr, t


@PROPERTY
@given(dvs128_stream())
def test_aedat2_round_trip_unwraps_timestamps(scratch, stream):
    addr, t = stream
    f = scratch / "c.aedat"
    body = b"".join(
        struct.pack(">II", (ya << 8) | (xa << 1) | pol, int(ts) % 2**32) for (xa, ya, pol), ts in zip(addr, t)
    )
    f.write_bytes(b"#!AER-DAT2.0\r\n# raw\r\n" + body)
    ev = read_aedat2_dvs128(f)
    assert ev.tolist() == [
        (127 - ya, 127 - xa, int(ts) - int(t[0]) // 2**32 * 2**32, 1 - pol) for (xa, ya, pol), ts in zip(addr, t)
    ]


@PROPERTY
@given(
    st.lists(
        st.tuples(
            st.integers(0, 3),
            st.lists(
                st.tuples(st.integers(0, 127), st.integers(0, 127), st.integers(0, 1), st.integers(0, 2**31 - 1)),
                max_size=6,
            ),
        ),
        max_size=5,
    )
)
def test_aedat31_round_trip(scratch, packets):
    f = scratch / "r.aedat"
    body = b"".join(
        aedat31_packet(1, [(dvs_word(x, y, p), ts) for x, y, p, ts in evs], overflow=ovf) for ovf, evs in packets
    )
    f.write_bytes(b"#!AER-DAT3.1\r\n#!END-HEADER\r\n" + aedat31_packet(0, [(0, 1)]) + body)
    expected = [(x, y, ts + (ovf << 31), p) for ovf, evs in packets for x, y, p, ts in evs]
    assert read_aedat31_polarity(f, (128, 128, 2)).tolist() == expected


@PROPERTY
@given(
    st.integers(0, 30).flatmap(
        lambda n: st.tuples(
            *(
                hnp.arrays(st.sampled_from([np.uint8, np.int16, np.int64, np.float64]), n, elements=st.integers(0, 127))
                for _ in range(2)
            ),
            hnp.arrays(st.sampled_from([np.int64, np.uint32, np.float64]), n, elements=st.integers(0, 2**31)),
            hnp.arrays(st.sampled_from([np.bool_, np.uint8, np.int8]), n, elements=st.integers(0, 1)),
        )
    )
)
def test_npz_round_trip(scratch, cols):
    x, y, t, p = cols
    f = scratch / "s.npz"
    np.savez_compressed(f, t=t, x=x, y=y, p=p)
    ev = read_events_npz(f, (128, 128, 2))
    assert ev.tolist() == [(int(a), int(b), int(c), int(d)) for a, b, c, d in zip(x, y, t, p)]


@PROPERTY
@given(
    st.lists(
        st.tuples(st.integers(0, 127), st.integers(0, 127), st.integers(0, 1), st.integers(0, 10**7)), max_size=30
    ),
    st.sampled_from([np.float64, np.int64, np.int32]),
)
def test_tonic_npy_round_trip(scratch, rows, dtype):
    f = scratch / "0.npy"
    np.save(f, np.array(rows, dtype=dtype).reshape(-1, 4))
    assert read_tonic_gesture_npy(f, (128, 128, 2)).tolist() == [(x, y, t * 1000, p) for x, y, p, t in rows]


@PROPERTY
@given(st.lists(st.tuples(st.integers(1, 11), st.integers(0, 10**9), st.integers(1, 10**6)), max_size=12))
def test_labels_round_trip(scratch, rows):
    f = scratch / "u_labels.csv"
    f.write_text("class,startTime_usec,endTime_usec\n" + "".join(f"{c},{s},{s + d}\n" for c, s, d in rows))
    assert read_gesture_labels(f) == [(c - 1, s, s + d) for c, s, d in rows]


# ----------------------------------------------------------------------------- readers: mutated files


def _bin_file(d: Path) -> Path:
    f = d / "s.bin"
    f.write_bytes(atis_bytes([(1, 2, 100, 1), (0, 240, 0, 0), (33, 3, 7, 0), (5, 6, 2**23 - 1, 1)]))
    return f


def _aedat2_file(d: Path) -> Path:
    f = d / "c.aedat"
    f.write_bytes(
        b"#!AER-DAT2.0\r\n# x\r\n"
        + b"".join(
            struct.pack(">II", (ya << 8) | (xa << 1) | 1, t)
            for xa, ya, t in [(1, 2, 5), (127, 0, 2**32 - 1), (3, 4, 2)]
        )
    )
    return f


def _aedat31_file(d: Path) -> Path:
    f = d / "r.aedat"
    f.write_bytes(
        b"#!AER-DAT3.1\r\n#!END-HEADER\r\n"
        + aedat31_packet(0, [(0, 1)])
        + aedat31_packet(1, [(dvs_word(1, 2, 1), 100), (dvs_word(127, 0, 0), 150)], overflow=1)
    )
    return f


def _npz_file(d: Path) -> Path:
    f = d / "s.npz"
    np.savez(
        f,
        t=np.array([1, 2, 3]),
        x=np.array([1, 2, 127], np.uint8),
        y=np.array([3, 4, 5], np.int16),
        p=np.array([True, False, True]),
    )
    return f


def _npy_file(d: Path) -> Path:
    f = d / "0.npy"
    np.save(f, np.array([[1, 2, 0, 1.5], [127, 127, 1, 3.0]]))
    return f


def _csv_file(d: Path) -> Path:
    f = d / "u_labels.csv"
    f.write_text("class,startTime_usec,endTime_usec\n1,0,100\n11,100,250\n")
    return f


# format -> (writes a valid file into a folder, reads it)
VALID_FILES = {
    "bin": (_bin_file, lambda p: read_atis_bin(p, (34, 34, 2))),
    "aedat2": (_aedat2_file, read_aedat2_dvs128),
    "aedat31": (_aedat31_file, lambda p: read_aedat31_polarity(p, (128, 128, 2))),
    "npz": (_npz_file, lambda p: read_events_npz(p, (128, 128, 2))),
    "npy": (_npy_file, lambda p: read_tonic_gesture_npy(p, (128, 128, 2))),
    "csv": (_csv_file, read_gesture_labels),
}


@pytest.mark.parametrize("fmt", list(VALID_FILES))
@settings(max_examples=80, deadline=None, database=None)
@given(data=st.data())
def test_mutated_files_are_refused_or_read_as_valid_events(scratch, fmt, data):
    write, read = VALID_FILES[fmt]
    path = write(scratch)
    raw = bytearray(path.read_bytes())
    for _ in range(data.draw(st.integers(1, 4))):
        kind = data.draw(st.sampled_from(["flip", "cut", "insert"]))
        at = data.draw(st.integers(0, max(len(raw) - 1, 0)))
        if kind == "flip" and raw:
            raw[at] ^= 1 << data.draw(st.integers(0, 7))
        elif kind == "cut":
            del raw[at : at + data.draw(st.integers(1, 16))]
        else:
            raw[at:at] = data.draw(st.binary(min_size=1, max_size=8))
    path.write_bytes(bytes(raw))
    try:
        out = read(path)
    except DatasetError as exc:
        assert str(path) in str(exc)
        return
    if fmt == "csv":
        assert all(0 <= c <= 10 and 0 <= s < e for c, s, e in out)
    else:
        assert out.dtype == EVENT_DTYPE
        if fmt in ("bin", "aedat31", "npz", "npy"):
            sensor = (34, 34, 2) if fmt == "bin" else (128, 128, 2)
            check_events(out, sensor, allow_empty=True)
        else:
            check_events(out, (128, 128, 2), allow_empty=True)  # AEDAT 2.0 addresses are 7 bits
