import numpy as np
import pytest

from flexsnn.data.cache import cache_key, cached_arrays
from flexsnn.errors import CheckpointError
from flexsnn.io import atomic_write, load_arrays, read_json, save_arrays, write_json


def test_atomic_write_keeps_old_file_when_writer_fails(tmp_path):
    target = tmp_path / "a.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_write(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert target.read_text() == "old"
    assert list(tmp_path.iterdir()) == [target]  # no temp file left behind


def test_json_roundtrip_and_corrupt_file(tmp_path):
    write_json(tmp_path / "c.json", {"a": [1, 2]})
    assert read_json(tmp_path / "c.json") == {"a": [1, 2]}
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="corrupt"):
        read_json(tmp_path / "bad.json")
    with pytest.raises(CheckpointError, match="not found"):
        read_json(tmp_path / "missing.json")


def test_arrays_roundtrip_refuse_truncation(tmp_path):
    save_arrays(tmp_path / "a.npz", {"x": np.arange(5)})
    assert np.array_equal(load_arrays(tmp_path / "a.npz")["x"], np.arange(5))
    data = (tmp_path / "a.npz").read_bytes()
    (tmp_path / "t.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_arrays(tmp_path / "t.npz")


def test_cache_builds_once_and_keys_on_params(tmp_path):
    calls = []

    def build():
        calls.append(1)
        return {"v": np.ones(3)}

    cached_arrays("thing", {"bins": 4}, build, root=tmp_path)
    cached_arrays("thing", {"bins": 4}, build, root=tmp_path)
    assert len(calls) == 1
    cached_arrays("thing", {"bins": 5}, build, root=tmp_path)
    assert len(calls) == 2
    assert cache_key({"a": 1, "b": 2}) == cache_key({"b": 2, "a": 1})


def test_corrupt_cache_entry_is_rebuilt(tmp_path):
    cached_arrays("thing", {}, lambda: {"v": np.ones(3)}, root=tmp_path)
    (path,) = tmp_path.glob("thing-*.npz")
    path.write_bytes(b"garbage")
    out = cached_arrays("thing", {}, lambda: {"v": np.zeros(2)}, root=tmp_path)
    assert np.array_equal(out["v"], np.zeros(2))
