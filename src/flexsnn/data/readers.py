"""File-format readers of the event datasets, as functions (Tonic keeps them in ``tonic/io.py``).

Every reader returns a structured array of :data:`flexsnn.data.events.EVENT_DTYPE` in file
order and never wraps, rounds or guesses: values are checked for range and integrality
BEFORE they are cast into the event dtype, and anything wrong raises
:class:`~flexsnn.errors.DatasetError` naming the file, the field and the bad value (OS, zip,
numpy and struct errors are wrapped the same way). Formats:

- :func:`read_atis_bin`: N-MNIST / N-Caltech101 ``.bin``, 5 bytes per event: ``x`` (8 bits),
  ``y`` (8 bits), polarity (1 bit), timestamp (23 bits, us); ``y == 240`` marks a
  timestamp-overflow event adding 2**13 us to every later timestamp (Orchard's
  ``eventvision.py``, Tonic).
- :func:`read_aedat2_dvs128`: AEDAT 2.0 (CIFAR10-DVS): ``#`` header lines starting with
  ``#!AER-DAT2.0``, then big-endian uint32 ``(address, timestamp)`` pairs of a DVS128: polarity
  = bit 0, x_addr = bits 1-7, y_addr = bits 8-14; a set bit above bit 14 (a special or foreign
  event) is refused. The uint32 timestamp wraps after 2**32 us: a drop of more than 2**31 is a
  wrap and adds 2**32 to the events from there on (explicit unwrapping, no re-sorting).
- :func:`read_aedat31_polarity`: AEDAT 3.1 (IBM DVS Gesture): header from ``#!AER-DAT3.1`` to
  ``#!END-HEADER``, then packets of a 28-byte little-endian header (type, source: int16; event
  size, ts offset, ts overflow, capacity, number, valid: int32) and ``capacity * size`` bytes.
  Polarity packets (type 1) hold 8-byte events: ``data`` (x = bits 17-31, y = bits 2-16,
  p = bit 1) and a non-negative int32 timestamp extended by ``overflow << 31``.
- :func:`read_events_npz`: SpikingJelly's ``events_np`` ``.npz`` (arrays ``t, x, y, p``).
- :func:`read_tonic_gesture_npy`: Tonic's DVS Gesture ``.npy``, ``[N, 4]`` columns ``x, y, p,
  t`` with ``t`` in milliseconds (converted to whole microseconds).
- :func:`read_gesture_labels`: DVS Gesture ``userNN_<lighting>_labels.csv`` (class 1..11,
  start and end in us); :func:`read_trial_list`: ``trials_to_{train,test}.txt``, whose names
  must stay inside the dataset folder.

Bounded resources: a sample may hold at most ``max_events`` events (default
:func:`default_max_events`: :data:`MAX_EVENTS_PER_SAMPLE`, or ``$FLEXSNN_MAX_EVENTS``). The
check runs before the data is loaded: on the file size for the raw formats, on the array sizes
declared in the ``.npy`` / ``.npz`` headers (so a small deflated ``.npz`` cannot expand to
gigabytes). An AEDAT 3.1 recording holds many samples; its memory is bounded by its file size
and the cap applies to each sample cut from it.
"""

from __future__ import annotations

import csv
import math
import os
import struct
import tokenize
import zipfile
import zlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path, PurePath
from typing import IO, Any

import numpy as np

from flexsnn.data.events import EVENT_DTYPE, check_events, make_events
from flexsnn.errors import DatasetError, DatasetNotFoundError, FlexSNNError, InputError

__all__ = [
    "MAX_EVENTS_PER_SAMPLE",
    "check_event_count",
    "default_max_events",
    "read_aedat2_dvs128",
    "read_aedat31_polarity",
    "read_atis_bin",
    "read_events_npz",
    "read_gesture_labels",
    "read_tonic_gesture_npy",
    "read_trial_list",
]

# 10 M events = 130 MB as EVENT_DTYPE; the largest samples of the supported datasets hold
# about 1 M. Raise it per call (max_events=), per dataset (max_events=) or for a whole run
# ($FLEXSNN_MAX_EVENTS).
MAX_EVENTS_PER_SAMPLE = 10_000_000
MAX_EVENTS_ENV = "FLEXSNN_MAX_EVENTS"

PathLike = str | os.PathLike


def default_max_events() -> int:
    """The per-sample event cap: ``$FLEXSNN_MAX_EVENTS`` if set, else :data:`MAX_EVENTS_PER_SAMPLE`."""
    raw = os.environ.get(MAX_EVENTS_ENV)
    if raw is None or raw.strip() == "":
        return MAX_EVENTS_PER_SAMPLE
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise InputError(f"${MAX_EVENTS_ENV} must be a positive integer (events per sample), got {raw!r}")
    return value


def _cap(max_events: int | None) -> int:
    if max_events is None:
        return default_max_events()
    if isinstance(max_events, bool) or not isinstance(max_events, int) or max_events < 1:
        raise InputError(f"max_events must be a positive integer (events per sample), got {max_events!r}")
    return max_events


def check_event_count(count: int, max_events: int | None, where: str) -> None:
    """Raise DatasetError if ``count`` events exceed the cap (``None`` = :func:`default_max_events`)."""
    cap = _cap(max_events)
    if count > cap:
        raise DatasetError(
            f"{where} holds {count} events, more than max_events={cap} per sample; if the file "
            f"is genuine, raise the cap (max_events= or ${MAX_EVENTS_ENV})"
        )


@contextmanager
def _reading(path: PathLike, what: str) -> Iterator[None]:
    """Turn every failure while reading ``path`` into one DatasetError that names the file."""
    try:
        yield
    except (DatasetError, DatasetNotFoundError):
        raise
    except InputError as exc:  # a value check of make_events / check_events: add the file
        raise DatasetError(f"{path}: {exc}") from None
    except FlexSNNError:
        raise
    except (
        OSError,
        ValueError,
        OverflowError,
        EOFError,
        zipfile.BadZipFile,
        zlib.error,
        struct.error,
        UnicodeDecodeError,
        csv.Error,
        SyntaxError,
        tokenize.TokenError,
        NotImplementedError,
        RuntimeError,
    ) as exc:  # numpy parses .npy headers with tokenize/ast; zipfile raises the last two
        raise DatasetError(f"{path} is not a readable {what} ({type(exc).__name__}: {exc})") from None


def _events(x: Any, y: Any, t: Any, p: Any, sensor_size: Sequence[int] | None) -> np.ndarray:
    events = make_events(x, y, t, p)
    if sensor_size is not None:
        check_events(events, sensor_size, allow_empty=True)
    return events


# ----------------------------------------------------------------------------- raw binary formats


def read_atis_bin(
    path: PathLike, sensor_size: Sequence[int] | None = None, *, max_events: int | None = None
) -> np.ndarray:
    """Decode an N-MNIST / N-Caltech101 ``.bin`` file (40 bits per event).

    Byte 0 = x, byte 1 = y, byte 2 bit 7 = polarity, bits 22..0 of bytes 2-4 = timestamp (us).
    Events with ``y == 240`` are timestamp-overflow markers: they are dropped and add 2**13 us
    to the timestamps of every event from there on. With ``sensor_size``, coordinates outside
    it are refused.
    """
    with _reading(path, "N-MNIST/N-Caltech101 .bin file"):
        size = os.path.getsize(path)
        if size % 5:
            raise DatasetError(
                f"{path} is truncated or not an N-MNIST/N-Caltech101 .bin file: "
                f"{size} bytes is not a multiple of 5 (5 bytes per event)"
            )
        check_event_count(size // 5, max_events, str(path))
        raw = np.fromfile(path, dtype=np.uint8).reshape(-1, 5).astype(np.int64)
        x, y = raw[:, 0], raw[:, 1]
        p = raw[:, 2] >> 7
        t = ((raw[:, 2] & 0x7F) << 16) | (raw[:, 3] << 8) | raw[:, 4]
        overflow = y == 240
        t = t + np.cumsum(overflow) * 2**13
        keep = ~overflow
        return _events(x[keep], y[keep], t[keep], p[keep], sensor_size)


def _ascii_header(data: bytes) -> tuple[list[bytes], int]:
    """The ``#``-prefixed header lines of an AEDAT file and the offset of the first data byte."""
    lines, pos = [], 0
    while data[pos : pos + 1] == b"#":
        end = data.find(b"\n", pos)
        if end < 0:
            end = len(data) - 1
        line = data[pos : end + 1].rstrip(b"\r\n")
        lines.append(line)
        pos = end + 1
        if line.startswith(b"#!END-HEADER"):  # AEDAT 3.x ends its header explicitly
            break
    return lines, pos


def _check_version(path: PathLike, lines: list[bytes], expected: bytes, name: str) -> None:
    first = lines[0] if lines else b""
    if not first.startswith(expected):
        got = first[:40].decode("ascii", "replace") if first else "no '#!AER-DAT' header line"
        raise DatasetError(f"{path} is not an {name} file: expected a first line {expected.decode()}..., got {got!r}")


def read_aedat2_dvs128(path: PathLike, *, max_events: int | None = None) -> np.ndarray:
    """Decode a CIFAR10-DVS ``.aedat`` (AEDAT 2.0, DVS128 addresses) into events.

    Output orientation follows SpikingJelly: ``x = 127 - y_addr``, ``y = 127 - x_addr``,
    ``p = 1 - polarity`` (the frames most CIFAR10-DVS papers train on). Timestamps are
    unwrapped as the module docstring says.
    """
    with _reading(path, "AEDAT 2.0 file"):
        data = Path(path).read_bytes()
        lines, start = _ascii_header(data)
        _check_version(path, lines, b"#!AER-DAT2.0", "AEDAT 2.0")
        body = memoryview(data)[start:]
        if len(body) % 8:
            raise DatasetError(
                f"{path} is truncated or not an AEDAT 2.0 file: {len(body)} data bytes "
                "is not a multiple of 8 (address + timestamp per event)"
            )
        check_event_count(len(body) // 8, max_events, str(path))
        words = np.frombuffer(body, dtype=">u4").astype(np.int64).reshape(-1, 2)
        addr, t = words[:, 0], words[:, 1]
        foreign = addr >> 15
        if foreign.any():
            i = int(np.flatnonzero(foreign)[0])
            raise DatasetError(
                f"{path}: event {i} has address {int(addr[i]):#010x} with bits above bit 14 set "
                "(not a DVS128 polarity event)"
            )
        wraps = np.diff(t, prepend=t[:1]) < -(2**31)
        t = t + np.cumsum(wraps) * 2**32
        x_addr = (addr >> 1) & 0x7F
        y_addr = (addr >> 8) & 0x7F
        return _events(127 - y_addr, 127 - x_addr, t, 1 - (addr & 1), None)


_PACKET = struct.Struct("<hhiiiiii")


def read_aedat31_polarity(path: PathLike, sensor_size: Sequence[int] | None = None) -> np.ndarray:
    """Decode the polarity events of an AEDAT 3.1 file (IBM DVS Gesture recordings).

    Non-polarity packets are skipped. A packet that declares a negative size, count,
    capacity or overflow, more events than its capacity, or more bytes than the file holds
    is refused, as is a negative timestamp. With ``sensor_size``, coordinates outside it are
    refused.
    """
    with _reading(path, "AEDAT 3.1 file"):
        data = Path(path).read_bytes()
        lines, pos = _ascii_header(data)
        _check_version(path, lines, b"#!AER-DAT3.", "AEDAT 3.1")
        chunks = []
        while pos < len(data):
            if pos + _PACKET.size > len(data):
                raise DatasetError(f"{path} is truncated: a packet header is cut at byte {pos}")
            e_type, _src, e_size, _off, e_overflow, e_cap, e_num, _valid = _PACKET.unpack_from(data, pos)
            at = pos
            pos += _PACKET.size
            for field, value in (
                ("event size", e_size),
                ("capacity", e_cap),
                ("event number", e_num),
                ("timestamp overflow", e_overflow),
            ):
                if value < (1 if field == "event size" else 0):
                    raise DatasetError(
                        f"{path}: packet at byte {at} has {field} {value}; expected >= "
                        f"{1 if field == 'event size' else 0}"
                    )
            if e_num > e_cap:
                raise DatasetError(f"{path}: packet at byte {at} has event number {e_num} > capacity {e_cap}")
            length = e_cap * e_size
            if pos + length > len(data):
                raise DatasetError(
                    f"{path} is truncated or corrupt: packet at byte {at} claims {e_cap} events of "
                    f"{e_size} bytes, {len(data) - pos} bytes remain"
                )
            if e_type == 1 and e_num > 0:
                if e_size != 8:
                    raise DatasetError(f"{path}: polarity packet at byte {at} has event size {e_size} (expected 8)")
                block = np.frombuffer(data, dtype="<u4", count=e_num * 2, offset=pos).reshape(e_num, 2)
                word, ts = block[:, 0].astype(np.int64), block[:, 1].astype(np.int64)
                if ts.max() >= 2**31:
                    raise DatasetError(
                        f"{path}: polarity packet at byte {at} has a negative int32 timestamp ({int(ts.max()) - 2**32})"
                    )
                ts = ts | (int(e_overflow) << 31)
                chunks.append(_events((word >> 17) & 0x7FFF, (word >> 2) & 0x7FFF, ts, (word >> 1) & 1, sensor_size))
            pos += length
        return np.concatenate(chunks) if chunks else np.empty(0, dtype=EVENT_DTYPE)


# ----------------------------------------------------------------------------- numpy formats


def _npy_header(fp: IO[bytes], path: PathLike, name: str, max_values: int) -> tuple[tuple[int, ...], np.dtype]:
    """Read and check an .npy header (shape, dtype) without reading the data."""
    version = np.lib.format.read_magic(fp)
    if version == (1, 0):
        shape, _fortran, dtype = np.lib.format.read_array_header_1_0(fp)
    elif version == (2, 0):
        shape, _fortran, dtype = np.lib.format.read_array_header_2_0(fp)
    else:
        raise DatasetError(f"{path}: array {name!r} uses .npy format version {version}; expected 1.0 or 2.0")
    if dtype.hasobject or dtype.kind not in "biuf":
        raise DatasetError(f"{path}: array {name!r} has dtype {dtype}; expected plain numbers (no objects)")
    values = math.prod(shape)
    if values > max_values:
        raise DatasetError(
            f"{path}: array {name!r} declares shape {shape} = {values} values, more than "
            f"{max_values} (max_events per sample); if the file is genuine, raise max_events "
            f"or ${MAX_EVENTS_ENV}"
        )
    return shape, dtype


def _whole_timestamps(t: np.ndarray, scale: int, path: PathLike, unit: str) -> np.ndarray:
    """Timestamps ``t`` (in ``unit``) as int64 microseconds ``t * scale``: non-negative, finite,
    and whole microseconds (float representation error below 1e-3 us is the only rounding)."""
    if t.size == 0:
        return t.astype(np.int64)
    if t.dtype.kind == "f":
        bad = ~np.isfinite(t)
        if bad.any():
            raise DatasetError(f"{path}: events['t'] has value {t[bad][0].item()!r}; expected finite timestamps")
    lo = t.min().item()
    if lo < 0:
        raise DatasetError(f"{path}: events['t'] has value {lo} {unit}; expected timestamps >= 0")
    hi = t.max().item()
    if hi * scale > np.iinfo(np.int64).max // 2:
        raise DatasetError(f"{path}: events['t'] has value {hi} {unit}, beyond the int64 microsecond range")
    if t.dtype.kind in "iub":
        return t.astype(np.int64) * scale
    us = t.astype(np.float64) * scale
    whole = np.rint(us)
    off = np.abs(us - whole) > 1e-3
    if off.any():
        raise DatasetError(
            f"{path}: events['t'] has value {t[off][0].item()!r} {unit}, not a whole number of microseconds"
        )
    if float(whole.max()) > 2.0**53:
        raise DatasetError(f"{path}: events['t'] has float value {hi} {unit}, too large to be an exact microsecond")
    return whole.astype(np.int64)


def read_tonic_gesture_npy(
    path: PathLike, sensor_size: Sequence[int] | None = None, *, max_events: int | None = None
) -> np.ndarray:
    """Read one sample of Tonic's preprocessed DVS Gesture: ``[N, 4]`` = x, y, p, t (ms) -> t in us.

    The header's declared shape and dtype are checked before any data is read; x, y and p
    must be integers (integer arrays or whole floats), t non-negative whole microseconds.
    """
    cap = _cap(max_events)
    with _reading(path, ".npy array"):
        with open(path, "rb") as fp:
            shape, _dtype = _npy_header(fp, path, "array", 4 * cap)
        if len(shape) != 2 or shape[1] != 4:
            raise DatasetError(f"{path} has shape {shape}; expected [N, 4] columns x, y, p, t (ms)")
        arr = np.load(path, allow_pickle=False)
        t_us = _whole_timestamps(arr[:, 3], 1000, path, "ms")
        return _events(arr[:, 0], arr[:, 1], t_us, arr[:, 2], sensor_size)


def read_events_npz(
    path: PathLike, sensor_size: Sequence[int] | None = None, *, max_events: int | None = None
) -> np.ndarray:
    """Read SpikingJelly's ``events_np`` ``.npz`` (1-D arrays ``t, x, y, p``; t in us).

    Each array's declared shape and dtype are checked from its .npy header before it is
    decompressed; pickles are refused.
    """
    cap = _cap(max_events)
    with _reading(path, "events .npz"), zipfile.ZipFile(path) as archive:
        names = set(archive.namelist())
        missing = [k for k in "txyp" if f"{k}.npy" not in names]
        if missing:
            raise DatasetError(f"{path} lacks arrays {missing}; expected an .npz with t, x, y, p")
        arrays = {}
        for key in "txyp":
            with archive.open(f"{key}.npy") as fp:
                shape, _dtype = _npy_header(fp, path, key, cap)
            if len(shape) != 1:
                raise DatasetError(f"{path}: array {key!r} has shape {shape}; expected 1-D (one value per event)")
            with archive.open(f"{key}.npy") as fp:
                arrays[key] = np.lib.format.read_array(fp, allow_pickle=False)
        t_us = _whole_timestamps(arrays["t"], 1, path, "us")
        return _events(arrays["x"], arrays["y"], t_us, arrays["p"], sensor_size)


# ----------------------------------------------------------------------------- text files


def read_gesture_labels(path: PathLike, num_classes: int = 11) -> list[tuple[int, int, int]]:
    """Rows ``(label, start, end)`` of a DVS Gesture ``_labels.csv``; label = csv class - 1.

    The first row may be a header; every other non-blank row must hold three integers with
    ``1 <= class <= num_classes`` and ``0 <= start < end`` (a sample is ``start <= t < end``).
    """
    with _reading(path, "labels .csv"), open(path, newline="", encoding="utf-8") as fh:
        out = []
        for line_no, row in enumerate(csv.reader(fh), start=1):
            cells = [c.strip() for c in row]
            if not any(cells):
                continue
            if line_no == 1 and not cells[0].lstrip("-").isdigit():
                continue  # the header row
            if len(cells) < 3 or not all(c.lstrip("-").isdigit() for c in cells[:3]):
                raise DatasetError(f"{path}, line {line_no}: expected class,start,end as integers, got {row!r}")
            cls, start, end = (int(c) for c in cells[:3])
            if not 1 <= cls <= num_classes:
                raise DatasetError(f"{path}, line {line_no}: class {cls} outside 1..{num_classes}")
            if start < 0 or end <= start:
                raise DatasetError(
                    f"{path}, line {line_no}: start {start} / end {end} do not form a segment "
                    "0 <= start < end (microseconds)"
                )
            out.append((cls - 1, start, end))
        return out


def read_trial_list(path: PathLike, data_dir: PathLike) -> list[Path]:
    """The recordings named in a DVS Gesture ``trials_to_{train,test}.txt``, as paths in ``data_dir``.

    Names are relative to ``data_dir`` and must stay inside it: absolute paths, ``..`` parts,
    or links resolving outside are refused.
    """
    base = Path(data_dir)
    root = base.resolve()
    with _reading(path, "trial list"):
        text = Path(path).read_text(encoding="utf-8")
        out = []
        for line_no, line in enumerate(text.splitlines(), start=1):
            name = line.strip()
            if not name:
                continue
            pure = PurePath(name)
            if pure.is_absolute() or ".." in pure.parts or name.startswith(("/", "\\")) or ":" in name:
                raise DatasetError(
                    f"{path}, line {line_no}: {name!r} points outside the dataset folder {root} "
                    "(names must be relative, without '..')"
                )
            target = base / pure
            if not target.resolve().is_relative_to(root):
                raise DatasetError(
                    f"{path}, line {line_no}: {name!r} resolves to {target.resolve()}, "
                    f"outside the dataset folder {root}"
                )
            out.append(target)
        return out
