"""Real event datasets, exercised on tiny fake files written in each dataset's real on-disk format."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from flexsnn.data.event_datasets import (
    CIFAR10DVS,
    NMNIST,
    DVSGesture,
    NCaltech101,
    event_frames,
    natural_key,
    per_class_split,
)
from flexsnn.data.events import EVENT_DTYPE
from flexsnn.data.readers import read_atis_bin
from flexsnn.errors import DatasetError, DatasetNotFoundError, InputError

# ----------------------------------------------------------------------------- fake file writers
# Each writer packs bits by hand from the format's documentation, independently of the readers.


def atis_bytes(events) -> bytes:
    """N-MNIST / N-Caltech101 .bin: x, y, then p in bit 7 + 23-bit timestamp over 3 bytes."""
    out = bytearray()
    for x, y, t, p in events:
        out += bytes([x, y, (p << 7) | ((t >> 16) & 0x7F), (t >> 8) & 0xFF, t & 0xFF])
    return bytes(out)


def write_atis(path, events):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(atis_bytes(events))


def write_aedat2(path, addr_events):
    """CIFAR10-DVS .aedat: '#' header lines, then big-endian (address, timestamp) uint32 pairs."""
    path.parent.mkdir(parents=True, exist_ok=True)
    header = b"#!AER-DAT2.0\r\n# This is a raw AE data file - do not edit\r\n#End Of ASCII Header\r\n"
    body = b"".join(struct.pack(">II", (ya << 8) | (xa << 1) | pol, t) for xa, ya, pol, t in addr_events)
    path.write_bytes(header + body)


def aedat31_packet(e_type, events, overflow=0):
    """AEDAT 3.1 packet: 28-byte little-endian header + 8-byte (data, timestamp) events."""
    body = b"".join(struct.pack("<II", data, ts) for data, ts in events)
    header = struct.pack("<hhiiiiii", e_type, 1, 8, 4, overflow, len(events), len(events), len(events))
    return header + body


def dvs_word(x, y, p):
    return (x << 17) | (y << 2) | (p << 1) | 1  # bit 0 = valid mark


CLASSES10 = CIFAR10DVS.classes


# ----------------------------------------------------------------------------- N-MNIST


def test_atis_bin_decodes_hand_packed_bytes(tmp_path):
    f = tmp_path / "one.bin"
    f.write_bytes(bytes([5, 7, 0x81, 0x23, 0x45]))  # x=5, y=7, p=1, t=0x012345
    ev = read_atis_bin(f)
    assert ev.dtype == EVENT_DTYPE
    assert ev.tolist() == [(5, 7, 0x012345, 1)]


def test_atis_overflow_marker_adds_2_pow_13_and_is_dropped(tmp_path):
    f = tmp_path / "ovf.bin"
    write_atis(f, [(1, 2, 100, 0), (0, 240, 0, 0), (3, 4, 50, 1), (0, 240, 0, 0), (6, 7, 10, 1)])
    ev = read_atis_bin(f)
    assert ev["x"].tolist() == [1, 3, 6]
    assert ev["t"].tolist() == [100, 50 + 8192, 10 + 2 * 8192]
    assert ev["p"].tolist() == [0, 1, 1]


def test_atis_truncated_file_is_rejected(tmp_path):
    f = tmp_path / "bad.bin"
    f.write_bytes(b"\x00" * 7)
    with pytest.raises(DatasetError, match="multiple of 5"):
        read_atis_bin(f)


def _nmnist_tree(root):
    samples = {
        ("Train", 0, "00002.bin"): [(0, 0, 10, 1), (33, 33, 20, 0)],
        ("Train", 0, "00010.bin"): [(1, 2, 5, 0)],
        ("Train", 3, "00001.bin"): [(4, 5, 0, 1), (4, 5, 1000, 1), (6, 7, 2000, 0)],
        ("Test", 9, "00007.bin"): [(8, 9, 3, 1)],
    }
    for (split, label, name), events in samples.items():
        write_atis(root / "NMNIST" / split / str(label) / name, events)
    return samples


def test_nmnist_reads_real_layout_and_decodes_events_exactly(tmp_path):
    samples = _nmnist_tree(tmp_path)
    ds = NMNIST(tmp_path, train=True)
    assert len(ds) == 3 and ds.targets == [0, 0, 3]
    assert ds.sensor_size == (34, 34, 2) and ds.ordering == "xytp"
    events, label = ds[2]
    assert label == 3
    assert events.tolist() == samples[("Train", 3, "00001.bin")]
    test = NMNIST(tmp_path / "NMNIST", train=False)  # the dataset folder itself works as root too
    assert len(test) == 1 and test[0][1] == 9


def test_nmnist_missing_names_the_path_and_source(tmp_path):
    with pytest.raises(DatasetNotFoundError) as info:
        NMNIST(tmp_path / "nowhere")
    msg = str(info.value)
    assert str(tmp_path / "nowhere" / "NMNIST") in msg
    assert "Train/0/*.bin" in msg and "garrickorchard.com" in msg
    assert isinstance(info.value, InputError) and isinstance(info.value, FileNotFoundError)


def test_nmnist_frames_are_cached_and_keyed_by_binning(tmp_path, monkeypatch):
    samples = _nmnist_tree(tmp_path)
    ds = NMNIST(tmp_path, train=True)
    cache = tmp_path / "cache"
    out = ds.frames(n_time_bins=2, cache_root=cache, progress=False)
    x, y = out["x"], out["y"]
    assert x.shape == (3, 2, 2, 34, 34) and x.dtype == np.float32
    assert y.tolist() == [0, 0, 3]
    # sample 2: t = 0, 1000, 2000 over [0, 2000] in 2 bins -> bins 0, 1, 1
    assert x[2, 0, 1, 5, 4] == 1 and x[2, 1, 1, 5, 4] == 1 and x[2, 1, 0, 7, 6] == 1
    assert x[2].sum() == 3 and x[0].sum() == len(samples[("Train", 0, "00002.bin")])
    # second call reads the cache: reading any file now would fail
    monkeypatch.setattr(NMNIST, "_read", lambda self, s: (_ for _ in ()).throw(AssertionError("re-read")))
    again = ds.frames(n_time_bins=2, cache_root=cache, progress=False)
    np.testing.assert_array_equal(again["x"], x)
    with pytest.raises(AssertionError, match="re-read"):  # a new n_time_bins is a new cache entry
        ds.frames(n_time_bins=3, cache_root=cache, progress=False)


def test_frames_spatial_pooling_avg_and_sum(tmp_path):
    _nmnist_tree(tmp_path)
    ds = NMNIST(tmp_path, train=True)
    full = ds.build_frames(1, progress=False)[0]
    summed = ds.build_frames(1, spatial_factor=2, pool="sum", progress=False)[0]
    avg = ds.build_frames(1, spatial_factor=2, pool="avg", progress=False)[0]
    assert summed.shape == (3, 1, 2, 17, 17)
    np.testing.assert_array_equal(summed, full.reshape(3, 1, 2, 17, 2, 17, 2).sum(axis=(4, 6)))
    np.testing.assert_allclose(avg, summed / 4)
    with pytest.raises(InputError, match="spatial_factor"):
        ds.build_frames(1, spatial_factor=4, progress=False)  # 34 is not a multiple of 4


# ----------------------------------------------------------------------------- DVS Gesture


def test_gesture_tonic_layout(tmp_path):
    base = tmp_path / "DVSGesture"
    a = np.array([[10, 20, 1, 0.0], [11, 21, 0, 1.5], [127, 0, 1, 3.0]])  # x, y, p, t (ms)
    for split, trial, label, arr in [
        ("ibmGestureTrain", "user01_fluorescent", 0, a),
        ("ibmGestureTrain", "user01_fluorescent", 10, a[:1]),
        ("ibmGestureTrain", "user02_led", 3, a[1:]),
        ("ibmGestureTest", "user24_natural", 5, a),
    ]:
        (base / split / trial).mkdir(parents=True, exist_ok=True)
        np.save(base / split / trial / f"{label}.npy", arr)
    ds = DVSGesture(tmp_path, train=True)
    assert ds.targets == [0, 10, 3] and len(ds.classes) == 11
    events, label = ds[0]
    assert label == 0
    assert events.tolist() == [(10, 20, 0, 1), (11, 21, 1500, 0), (127, 0, 3000, 1)]
    assert DVSGesture(tmp_path, train=False).targets == [5]


def test_gesture_ibm_aedat31_layout_cuts_samples_by_labels_csv(tmp_path):
    d = tmp_path / "DvsGesture"
    d.mkdir()
    header = b"#!AER-DAT3.1\r\n#Format: RAW\r\n#Source 1: DVS128\r\n#!END-HEADER\r\n"
    special = aedat31_packet(0, [(0, 5)])  # a non-polarity packet: skipped
    p1 = aedat31_packet(1, [(dvs_word(1, 2, 1), 100), (dvs_word(3, 4, 0), 150), (dvs_word(5, 6, 1), 250)])
    p2 = aedat31_packet(1, [(dvs_word(7, 8, 0), 10)], overflow=1)  # t = 10 + 2**31
    (d / "user01_fluorescent.aedat").write_bytes(header + special + p1 + p2)
    (d / "user01_fluorescent_labels.csv").write_text(
        "class,startTime_usec,endTime_usec\n1,100,200\n3,200,300\n11,2147483600,2147483700\n"
    )
    (d / "trials_to_train.txt").write_text("user01_fluorescent.aedat\n\n")
    (d / "trials_to_test.txt").write_text("")
    ds = DVSGesture(tmp_path, train=True)
    assert ds.targets == [0, 2, 10]
    assert ds[0][0].tolist() == [(1, 2, 100, 1), (3, 4, 150, 0)]
    assert ds[1][0].tolist() == [(5, 6, 250, 1)]
    assert ds[2][0].tolist() == [(7, 8, 10 + 2**31, 0)]
    frames = ds.build_frames(2, spatial_factor=4, progress=False)[0]
    assert frames.shape == (3, 2, 2, 32, 32) and frames[0].sum() == 2 / 16
    with pytest.raises(DatasetNotFoundError, match="no test samples"):
        DVSGesture(tmp_path, train=False)


def test_gesture_missing_lists_both_layouts(tmp_path):
    with pytest.raises(DatasetNotFoundError) as info:
        DVSGesture(tmp_path)
    msg = str(info.value)
    assert str(tmp_path / "DVSGesture") in msg and "ibmGestureTrain" in msg and "trials_to_train.txt" in msg


# ----------------------------------------------------------------------------- CIFAR10-DVS


def test_cifar10dvs_aedat2_decoding_and_orientation(tmp_path):
    # (x_addr, y_addr, polarity, t) -> SpikingJelly orientation: x = 127 - y_addr, y = 127 - x_addr, p = 1 - pol
    raw = [(0, 0, 0, 5), (127, 3, 1, 9), (10, 120, 1, 70000)]
    for cls in CLASSES10:
        for i in (0, 2, 10, 11):
            write_aedat2(tmp_path / "CIFAR10DVS" / cls / f"cifar10_{cls}_{i}.aedat", raw)
    ds = CIFAR10DVS(tmp_path, train=True, n_train_per_class=2)
    events, label = ds[0]
    assert label == 0
    assert events.tolist() == [(127, 127, 5, 1), (124, 0, 9, 0), (7, 117, 70000, 0)]
    # natural file-name order: train = _0, _2 ; test = _10, _11 (lexicographic would put _10 in train)
    assert [s.path.name for s in ds.samples[:2]] == ["cifar10_airplane_0.aedat", "cifar10_airplane_2.aedat"]
    test = CIFAR10DVS(tmp_path, train=False, n_train_per_class=2)
    assert [s.path.name for s in test.samples[:2]] == ["cifar10_airplane_10.aedat", "cifar10_airplane_11.aedat"]
    assert len(ds) == len(test) == 20
    assert test.targets == [c for c in range(10) for _ in range(2)]
    x = ds.frames(n_time_bins=2, spatial_factor=4, cache_root=tmp_path / "c", progress=False)["x"]
    assert x.shape == (20, 2, 2, 32, 32) and np.allclose(x.sum(axis=(1, 2, 3, 4)), 3 / 16)


def test_cifar10dvs_reads_spikingjelly_events_np(tmp_path):
    for label, cls in enumerate(CLASSES10):
        for i in range(3):
            d = tmp_path / "events_np" / cls
            d.mkdir(parents=True, exist_ok=True)
            np.savez(
                d / f"cifar10_{cls}_{i}.npz",
                t=np.array([1, 2]),
                x=np.array([i, label]),
                y=np.array([3, 4]),
                p=np.array([0, 1]),
            )
    ds = CIFAR10DVS(tmp_path, train=False, n_train_per_class=2)
    assert len(ds) == 10
    events, label = ds[4]
    assert label == 4 and events.tolist() == [(2, 3, 1, 0), (4, 4, 2, 1)]


def test_cifar10dvs_aedat4_only_and_missing_are_explained(tmp_path):
    for cls in CLASSES10:
        (tmp_path / "CIFAR10DVS" / cls).mkdir(parents=True)
        (tmp_path / "CIFAR10DVS" / cls / "x.aedat4").write_bytes(b"")
    with pytest.raises(DatasetNotFoundError, match="aedat4"):
        CIFAR10DVS(tmp_path)
    with pytest.raises(DatasetNotFoundError) as info:
        CIFAR10DVS(tmp_path / "empty")
    assert "figshare" in str(info.value) and str(tmp_path / "empty" / "CIFAR10DVS") in str(info.value)


def test_paper_split_default_numbers_on_file_lists():
    rng = np.random.default_rng(0)
    names = {c: [f"cifar10_{c}_{i}.aedat" for i in rng.permutation(1000)] for c in CLASSES10}
    train, test = per_class_split(names, n_train=900)
    for c in CLASSES10:
        assert train[c] == [f"cifar10_{c}_{i}.aedat" for i in range(900)]
        assert test[c] == [f"cifar10_{c}_{i}.aedat" for i in range(900, 1000)]
    tr, te = per_class_split({"a": [f"image_{i:04d}.bin" for i in range(31, 0, -1)]}, train_ratio=0.9)
    assert len(tr["a"]) == 27 and te["a"] == [f"image_{i:04d}.bin" for i in range(28, 32)]
    with pytest.raises(InputError, match="leaves none for test"):
        per_class_split({"a": ["1", "2"]}, n_train=2)
    with pytest.raises(InputError, match="exactly one"):
        per_class_split({"a": ["1"]})
    assert natural_key("x_9") < natural_key("x_10")


# ----------------------------------------------------------------------------- N-Caltech101


def test_ncaltech101_labels_split_and_sensor_crop(tmp_path):
    base = tmp_path / "NCALTECH101" / "Caltech101"
    for cls, n in [("accordion", 10), ("BACKGROUND_Google", 4), ("yin_yang", 3)]:
        for i in range(1, n + 1):
            write_atis(base / cls / f"image_{i:04d}.bin", [(i, 2, 0, 1), (239, 179, 5, 0), (250, 3, 9, 1)])
    ds = NCaltech101(tmp_path, train=True)
    assert ds.classes == ["BACKGROUND_Google", "accordion", "yin_yang"]
    assert ds.targets == [0] * 3 + [1] * 9 + [2] * 2  # floor(0.9 n) per class
    test = NCaltech101(tmp_path, train=False)
    assert test.targets == [0, 1, 2] and test.samples[1].path.name == "image_0010.bin"
    events, _ = ds[0]
    assert events.tolist() == [(1, 2, 0, 1), (239, 179, 5, 0), (250, 3, 9, 1)]  # raw coordinates kept
    x = ds.build_frames(1, progress=False)[0]
    assert x.shape == (14, 1, 2, 180, 240)
    assert x[0].sum() == 2 and x[0, 0, 0, 179, 239] == 1  # x=250 lies outside the 240-wide canvas


def test_event_frames_entry_point_checks_arguments(tmp_path):
    _nmnist_tree(tmp_path)
    out = event_frames("nmnist", tmp_path, split="test", n_time_bins=1, cache_root=tmp_path / "c", progress=False)
    assert out["x"].shape == (1, 1, 2, 34, 34) and out["y"].tolist() == [9]
    with pytest.raises(InputError, match="name must be one of"):
        event_frames("mnist", tmp_path)
    with pytest.raises(InputError, match="split"):
        event_frames("nmnist", tmp_path, split="val")
    with pytest.raises(InputError, match="n_time_bins"):
        event_frames("nmnist", tmp_path, n_time_bins=0, progress=False)
