"""Hostile dataset files, written in each format's real on-disk layout, must be refused clearly.

One test per case class: values that do not fit or are not integers (checked before any cast),
AEDAT 3.1 packet headers, DVS Gesture label rows, AEDAT 2.0 addresses and timestamp wraps,
errors of the underlying libraries (wrapped so the message names the file), bounded
resources (declared array sizes, events per sample, frame sizes) and paths that leave the
dataset folder. Every refusal is a DatasetError naming the file; what is read is exact.
"""

from __future__ import annotations

import os
import struct
import time
import tracemalloc
import zipfile

import numpy as np
import pytest
from test_data_event_datasets import aedat31_packet, dvs_word, write_aedat2, write_atis

from flexsnn.data import to_frames
from flexsnn.data.event_datasets import CIFAR10DVS, NMNIST, DVSGesture
from flexsnn.data.readers import (
    MAX_EVENTS_ENV,
    MAX_EVENTS_PER_SAMPLE,
    read_aedat2_dvs128,
    read_aedat31_polarity,
    read_atis_bin,
    read_events_npz,
    read_gesture_labels,
    read_tonic_gesture_npy,
    read_trial_list,
)
from flexsnn.errors import DatasetError, FlexSNNError, InputError

GESTURE = (128, 128, 2)
AEDAT31_HEADER = b"#!AER-DAT3.1\r\n#Format: RAW\r\n#Source 1: DVS128\r\n#!END-HEADER\r\n"


def refused(call, *fragments):
    """Run ``call``; it must raise DatasetError whose message holds every fragment."""
    with pytest.raises(DatasetError) as info:
        call()
    msg = str(info.value)
    for fragment in fragments:
        assert str(fragment) in msg, f"{fragment!r} not in {msg!r}"
    assert "\n" not in msg.strip()  # one line
    return msg


def gesture_npy(path, rows, dtype=np.float64):
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, np.array(rows, dtype=dtype))
    return path


def events_npz(path, **arrays):
    cols = {"t": [1, 2], "x": [3, 4], "y": [5, 6], "p": [0, 1]}
    cols.update(arrays)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **{k: np.asarray(v) for k, v in cols.items()})
    return path


def aedat31_file(path, *packets, header=AEDAT31_HEADER):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(header + b"".join(packets))
    return path


def raw_packet(e_type=1, e_size=8, overflow=0, cap=1, num=1, body=None):
    header = struct.pack("<hhiiiiii", e_type, 1, e_size, 4, overflow, cap, num, num)
    if body is None:
        body = struct.pack("<II", dvs_word(1, 2, 1), 10) * max(cap, 0)
    return header + body


# ----------------------------------------------------------------------------- 1. range / integrality


@pytest.mark.parametrize(
    "column, value, shown",
    [
        (0, 65541, "65541"),  # int16 would wrap it to 5
        (0, 3.7, "3.7"),  # int cast would truncate to 3
        (0, 200, "200"),  # fits int16 but not the 128-wide sensor
        (1, -1, "-1"),
        (1, np.inf, "inf"),
        (2, 257, "257"),  # int8 would wrap it to 1
        (2, 0.5, "0.5"),  # int cast would make it 0
        (2, 2, "2"),  # fits int8, not 2 polarities
        (3, -1.0, "-1.0"),  # negative timestamp
        (3, np.nan, "nan"),
        (3, 0.0005, "0.0005"),  # half a microsecond
        (3, 1e300, "1e+300"),  # beyond int64 microseconds
    ],
)
def test_gesture_npy_values_checked_before_cast(tmp_path, column, value, shown):
    row = [10.0, 20.0, 1.0, 3.0]
    row[column] = value
    f = gesture_npy(tmp_path / "0.npy", [[1, 2, 0, 1.0], row])
    field = "xypt"[column]
    refused(lambda: read_tonic_gesture_npy(f, GESTURE), f, f"{field}", shown)


@pytest.mark.parametrize(
    "key, values, shown",
    [
        ("x", np.array([1, 65541]), "65541"),
        ("x", np.array([1.0, 3.7]), "3.7"),
        ("x", np.array([1, 128]), "128"),
        ("y", np.array([-3, 1]), "-3"),
        ("p", np.array([0, 257], dtype=np.uint16), "257"),
        ("p", np.array([0.5, 1.0]), "0.5"),
        ("t", np.array([1.5, 2.0]), "1.5"),
        ("t", np.array([1, 2**63 + 1], dtype=np.uint64), str(2**63 + 1)),
        ("t", np.array([-5, 2]), "-5"),
    ],
)
def test_cifar10dvs_npz_values_checked_before_cast(tmp_path, key, values, shown):
    f = events_npz(tmp_path / "s.npz", **{key: values})
    refused(lambda: read_events_npz(f, (128, 128, 2)), f, key, shown)


def test_values_checked_through_the_dataset_classes(tmp_path):
    gesture_npy(tmp_path / "DVSGesture" / "ibmGestureTrain" / "user01_led" / "3.npy", [[65541, 2, 1, 0.0]])
    refused(lambda: DVSGesture(tmp_path)[0], "3.npy", "x", "65541")
    for cls in CIFAR10DVS.classes:
        for i in range(2):
            events_npz(tmp_path / "CIFAR10DVS" / cls / f"c_{i}.npz", p=np.array([0, 257]))
    refused(lambda: CIFAR10DVS(tmp_path, n_train_per_class=1)[0], "c_0.npz", "p", "257")
    write_atis(tmp_path / "NMNIST" / "Train" / "0" / "1.bin", [(200, 3, 5, 1)])  # N-MNIST is 34 wide
    refused(lambda: NMNIST(tmp_path)[0], "1.bin", "x", "200")


# ----------------------------------------------------------------------------- 2. AEDAT 3.1 packets


@pytest.mark.parametrize(
    "packet, fragment",
    [
        (raw_packet(num=-1), "event number -1"),
        (raw_packet(cap=-1, body=b""), "capacity -1"),
        (raw_packet(e_size=0), "event size 0"),
        (raw_packet(e_size=-8), "event size -8"),
        (raw_packet(overflow=-1), "timestamp overflow -1"),
        (raw_packet(cap=1, num=2), "event number 2 > capacity 1"),
        (raw_packet(cap=5, body=b"\x00" * 8), "claims 5 events"),
        (raw_packet(e_size=16, body=b"\x00" * 16), "event size 16"),
        (raw_packet(body=struct.pack("<II", dvs_word(1, 2, 1), 2**31 + 7)), "negative int32 timestamp"),
        (raw_packet(body=struct.pack("<II", dvs_word(300, 2, 1), 5)), "300"),  # x outside 128
        (raw_packet()[:20], "packet header is cut"),
    ],
)
def test_aedat31_bad_packets(tmp_path, packet, fragment):
    f = aedat31_file(tmp_path / "user01_led.aedat", aedat31_packet(1, [(dvs_word(0, 0, 0), 1)]), packet)
    refused(lambda: read_aedat31_polarity(f, GESTURE), f, fragment)


@pytest.mark.parametrize("header", [b"#!AER-DAT2.0\r\n", b"", b"#Format: RAW\r\n#!END-HEADER\r\n"])
def test_aedat31_wrong_or_missing_version(tmp_path, header):
    f = aedat31_file(tmp_path / "r.aedat", aedat31_packet(1, [(dvs_word(0, 0, 0), 1)]), header=header)
    refused(lambda: read_aedat31_polarity(f), f, "AEDAT 3.1")


# ----------------------------------------------------------------------------- 3. label rows


@pytest.mark.parametrize(
    "row, fragment",
    [
        ("1,300,200", "start 300 / end 200"),
        ("1,200,200", "start 200 / end 200"),
        ("1,-5,200", "start -5"),
        ("0,100,200", "class 0 outside 1..11"),
        ("12,100,200", "class 12 outside 1..11"),
        ("1,abc,200", "expected class,start,end as integers"),
        ("1,100", "expected class,start,end"),
        ("1,1.5,200", "expected class,start,end as integers"),
    ],
)
def test_gesture_label_rows(tmp_path, row, fragment):
    f = tmp_path / "user01_led_labels.csv"
    f.write_text(f"class,startTime_usec,endTime_usec\n1,0,100\n{row}\n")
    refused(lambda: read_gesture_labels(f), f, "line 3", fragment)
    f.write_text("class,startTime_usec,endTime_usec\n\n1,0,100\n11,100,250\n")
    assert read_gesture_labels(f) == [(0, 0, 100), (10, 100, 250)]


# ----------------------------------------------------------------------------- 4. AEDAT 2.0


@pytest.mark.parametrize("bit", [15, 16, 31])
def test_aedat2_address_bits_above_14_refused(tmp_path, bit):
    f = tmp_path / "c.aedat"
    write_aedat2(f, [(1, 2, 0, 5)])
    with open(f, "ab") as fh:
        fh.write(struct.pack(">II", (1 << bit) | (3 << 8), 9))
    refused(lambda: read_aedat2_dvs128(f), f, "event 1", f"{(1 << bit) | (3 << 8):#010x}", "bits above bit 14")


def test_aedat2_timestamp_wraps_are_unwrapped_in_file_order(tmp_path):
    f = tmp_path / "c.aedat"
    ts = [2**32 - 20, 2**32 - 1, 3, 10, 2**32 - 5, 4]  # two wraps
    write_aedat2(f, [(i, 0, 0, t) for i, t in enumerate(ts)])
    ev = read_aedat2_dvs128(f)
    assert ev["t"].tolist() == [2**32 - 20, 2**32 - 1, 2**32 + 3, 2**32 + 10, 2**33 - 5, 2**33 + 4]
    assert ev["y"].tolist() == [127 - i for i in range(6)]  # file order kept: nothing re-sorted


@pytest.mark.parametrize(
    "mutate, fragment",
    [
        (lambda b: b + b"\x00\x01\x02", "not a multiple of 8"),
        (lambda b: b.replace(b"#!AER-DAT2.0", b"#!AER-DAT1.0"), "AEDAT 2.0"),
        (lambda b: b[b.index(b"#End Of ASCII Header\r\n") + 22 :], "no '#!AER-DAT' header line"),
    ],
)
def test_aedat2_truncated_or_wrong_version(tmp_path, mutate, fragment):
    f = tmp_path / "c.aedat"
    write_aedat2(f, [(1, 2, 0, 5), (3, 4, 1, 6)])
    f.write_bytes(mutate(f.read_bytes()))
    refused(lambda: read_aedat2_dvs128(f), f, fragment)


# ----------------------------------------------------------------------------- 5. wrapped library errors


def _corrupt_crc(path):
    data = bytearray(path.read_bytes())
    at = data.index(b"\x93NUMPY") + 60  # inside the first member's data (stored, not deflated)
    data[at] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    "case",
    [
        "npz_not_a_zip",
        "npz_truncated",
        "npz_bad_crc",
        "npz_missing_key",
        "npz_object_dtype",
        "npz_2d",
        "npy_garbage",
        "npy_truncated",
        "npy_wrong_shape",
        "npy_object_dtype",
        "bin_missing",
        "bin_is_dir",
        "aedat31_missing",
        "csv_undecodable",
        "trials_undecodable",
    ],
)
def test_library_errors_name_the_file(tmp_path, case):
    f = tmp_path / "sample.npz"
    if case.startswith("npz"):
        events_npz(f)
        if case == "npz_not_a_zip":
            f.write_bytes(b"this is not a zip archive")
        elif case == "npz_truncated":
            f.write_bytes(f.read_bytes()[:100])
        elif case == "npz_bad_crc":
            _corrupt_crc(f)
        elif case == "npz_missing_key":
            np.savez(f, t=[1], x=[1], y=[1])
        elif case == "npz_object_dtype":
            np.savez(f, t=np.array([1, "a"], dtype=object), x=[1, 1], y=[1, 1], p=[0, 1])
        elif case == "npz_2d":
            np.savez(f, t=np.zeros((1, 2)), x=[1, 1], y=[1, 1], p=[0, 1])
        call = lambda: read_events_npz(f)  # noqa: E731
    elif case.startswith("npy"):
        f = tmp_path / "0.npy"
        gesture_npy(f, [[1, 2, 0, 1.0]] * 4)
        if case == "npy_garbage":
            f.write_bytes(b"\x00garbage" * 10)
        elif case == "npy_truncated":
            f.write_bytes(f.read_bytes()[:-40])
        elif case == "npy_wrong_shape":
            gesture_npy(f, [[1, 2, 0]])
        elif case == "npy_object_dtype":
            np.save(f, np.array([[1, 2, 0, None]], dtype=object), allow_pickle=True)
        call = lambda: read_tonic_gesture_npy(f)  # noqa: E731
    elif case == "bin_missing":
        f = tmp_path / "gone.bin"
        call = lambda: read_atis_bin(f)  # noqa: E731
    elif case == "bin_is_dir":
        f = tmp_path / "dir.bin"
        f.mkdir()
        call = lambda: read_atis_bin(f)  # noqa: E731
    elif case == "aedat31_missing":
        f = tmp_path / "gone.aedat"
        call = lambda: read_aedat31_polarity(f)  # noqa: E731
    elif case == "csv_undecodable":
        f = tmp_path / "x_labels.csv"
        f.write_bytes(b"\xff\xfe\x00\x81" * 8)
        call = lambda: read_gesture_labels(f)  # noqa: E731
    else:
        f = tmp_path / "trials_to_train.txt"
        f.write_bytes(b"\xff\xfe\x00\x81" * 8)
        call = lambda: read_trial_list(f, tmp_path)  # noqa: E731
    refused(call, f)


# ----------------------------------------------------------------------------- 6. bounded resources


def _deflated_npz(path, n):
    """A real .npz of n zero events (t int64, x/y/p uint8), streamed through deflate in chunks."""
    chunk = 1 << 20
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        for key, dtype in (("t", np.int64), ("x", np.uint8), ("y", np.uint8), ("p", np.uint8)):
            with zf.open(f"{key}.npy", "w", force_zip64=True) as fp:
                np.lib.format.write_array_header_1_0(
                    fp, {"descr": np.dtype(dtype).str, "fortran_order": False, "shape": (n,)}
                )
                left = n * np.dtype(dtype).itemsize
                zeros = bytes(chunk)
                while left > 0:
                    fp.write(zeros[: min(chunk, left)])
                    left -= chunk


def test_deflate_bomb_npz_refused_from_its_header(tmp_path):
    f = tmp_path / "bomb.npz"
    n = 25_000_000  # 275 MB of arrays, 1.3 GB once in the event dtype and frames
    _deflated_npz(f, n)
    assert f.stat().st_size < 400_000
    tracemalloc.start()
    start = time.perf_counter()
    try:
        refused(lambda: read_events_npz(f), f, "'t'", f"{n} values", f"more than {MAX_EVENTS_PER_SAMPLE}")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 * 2**20  # refused before anything was decompressed
    assert time.perf_counter() - start < 5


def test_npy_header_declaring_too_many_rows_refused_before_loading(tmp_path):
    f = tmp_path / "0.npy"
    with open(f, "wb") as fp:  # a header promising 30 M rows, followed by one
        np.lib.format.write_array_header_1_0(fp, {"descr": "<f8", "fortran_order": False, "shape": (30_000_000, 4)})
        fp.write(np.zeros(4).tobytes())
    refused(lambda: read_tonic_gesture_npy(f), f, "(30000000, 4)", "max_events")


def test_events_per_sample_cap_is_documented_and_overridable(tmp_path, monkeypatch):
    rows = [(i % 30, 1, i, 0) for i in range(100)]
    write_atis(tmp_path / "NMNIST" / "Train" / "0" / "1.bin", rows)
    f = tmp_path / "NMNIST" / "Train" / "0" / "1.bin"
    refused(lambda: read_atis_bin(f, max_events=99), f, "100 events", "max_events=99", MAX_EVENTS_ENV)
    assert read_atis_bin(f, max_events=100)["t"].tolist() == list(range(100))
    refused(lambda: NMNIST(tmp_path, max_events=50)[0], "100 events", "max_events=50")
    monkeypatch.setenv(MAX_EVENTS_ENV, "10")
    refused(lambda: NMNIST(tmp_path)[0], "max_events=10")
    monkeypatch.setenv(MAX_EVENTS_ENV, "many")
    with pytest.raises(InputError, match=MAX_EVENTS_ENV):
        NMNIST(tmp_path)
    monkeypatch.delenv(MAX_EVENTS_ENV)
    for cap in (0, -1, 2.5, True):
        with pytest.raises(InputError, match="max_events"):
            NMNIST(tmp_path, max_events=cap)
    write_aedat2(tmp_path / "c.aedat", [(1, 2, 0, t) for t in range(20)])
    refused(lambda: read_aedat2_dvs128(tmp_path / "c.aedat", max_events=19), "20 events")
    events_npz(tmp_path / "s.npz")
    refused(lambda: read_events_npz(tmp_path / "s.npz", max_events=1), "'t'", "(2,)")


def test_cap_applies_to_samples_cut_from_an_aedat31_recording(tmp_path):
    d = tmp_path / "DvsGesture"
    aedat31_file(d / "user01_led.aedat", aedat31_packet(1, [(dvs_word(1, 1, 1), t) for t in range(10)]))
    (d / "user01_led_labels.csv").write_text("class,startTime_usec,endTime_usec\n1,0,3\n2,3,10\n")
    (d / "trials_to_train.txt").write_text("user01_led.aedat\n")
    ds = DVSGesture(tmp_path, max_events=5)
    assert len(ds[0][0]) == 3
    refused(lambda: ds[1], "user01_led.aedat [3, 10) us", "7 events", "max_events=5")


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        ({"time_window": 1e-9}, "GiB"),
        ({"time_window": 1e-300}, "GiB"),
        ({"n_time_bins": 10**12}, "1000000000000 bins"),
        ({"n_time_bins": 10**30}, "bins"),
    ],
)
def test_to_frames_refuses_huge_frames_before_allocating(kwargs, fragment):
    events = np.array([(0, 0, 0, 0), (1, 1, 10**6, 1)], dtype=[("x", "i2"), ("y", "i2"), ("t", "i8"), ("p", "i1")])
    with pytest.raises(InputError, match=fragment):
        to_frames(events, (34, 34, 2), **kwargs)
    assert to_frames(events, (34, 34, 2), n_time_bins=3, max_values=3 * 2 * 34 * 34).sum() == 2
    with pytest.raises(InputError, match="max_values"):
        to_frames(events, (34, 34, 2), n_time_bins=3, max_values=3 * 2 * 34 * 34 - 1)


# ----------------------------------------------------------------------------- 7. paths stay inside


def _ibm_folder(tmp_path, trial_names):
    d = tmp_path / "DvsGesture"
    d.mkdir(parents=True, exist_ok=True)
    aedat31_file(d / "user01_led.aedat", aedat31_packet(1, [(dvs_word(1, 1, 1), 5)]))
    (d / "user01_led_labels.csv").write_text("class,startTime_usec,endTime_usec\n1,0,10\n")
    (d / "trials_to_train.txt").write_text("\n".join(trial_names) + "\n")
    return d


@pytest.mark.parametrize(
    "name",
    [
        "{outside}",
        "../outside.aedat",
        "sub/../../outside.aedat",
        "/etc/hostname",
        "C:\\outside.aedat",
        "link.aedat",
    ],
)
def test_trial_list_names_outside_the_dataset_are_refused(tmp_path, name):
    outside = tmp_path / "outside.aedat"  # a valid recording the list must not reach
    aedat31_file(outside, aedat31_packet(1, [(dvs_word(1, 1, 1), 5)]))
    (tmp_path / "outside_labels.csv").write_text("1,0,10\n")
    d = _ibm_folder(tmp_path, ["user01_led.aedat", name.format(outside=outside)])
    (d / "link.aedat").symlink_to(outside)
    (d / "link_labels.csv").write_text("1,0,10\n")
    refused(lambda: DVSGesture(tmp_path), "trials_to_train.txt", "line 2", "outside the dataset folder")


def test_trial_list_inside_the_dataset_is_read(tmp_path):
    d = _ibm_folder(tmp_path, ["user01_led.aedat", "", "  sub/user02_led.aedat  "])
    (d / "sub").mkdir()
    aedat31_file(d / "sub" / "user02_led.aedat", aedat31_packet(1, [(dvs_word(2, 3, 0), 7)]))
    (d / "sub" / "user02_led_labels.csv").write_text("4,0,10\n")
    ds = DVSGesture(tmp_path)
    assert ds.targets == [0, 3]
    assert ds[1][0].tolist() == [(2, 3, 7, 0)]


def test_every_refusal_is_a_flexsnn_error():
    assert issubclass(DatasetError, FlexSNNError) and issubclass(DatasetError, ValueError)
    assert os.environ.get(MAX_EVENTS_ENV) is None  # the suite runs with the documented default
