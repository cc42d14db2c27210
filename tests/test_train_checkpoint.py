"""Checkpoint files: safetensors + JSON metadata, atomic and durable, clear errors when broken."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file
from test_train_loop import TinyStaged

from flexsnn.errors import CheckpointError
from flexsnn.train import checkpoint as ckpt
from flexsnn.train.checkpoint import (
    CHECKPOINT_FILE,
    load_safetensors,
    load_training_state,
    save_safetensors,
    save_training_state,
)

META = {"train_state": {"epoch": 1}, "scheduler": {}, "rng": {}, "options": {}, "sampler": {"method": "sdt"}}


def trained_model_and_optimizer(kind="sgd"):
    torch.manual_seed(0)
    model = TinyStaged(bn=True)
    opt = (
        torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        if kind == "sgd"
        else torch.optim.AdamW(model.parameters(), lr=0.01)
    )
    for _ in range(2):
        opt.zero_grad()
        model(torch.randn(2, 4, 8), time_config=(2, 1)).sum().backward()
        opt.step()
    return model, opt


@pytest.mark.parametrize("kind", ["sgd", "adamw"])
def test_training_state_round_trips_model_optimizer_and_extra_tensors(tmp_path, kind):
    model, opt = trained_model_and_optimizer(kind)
    rng = torch.get_rng_state()
    save_training_state(tmp_path, model, opt, {"rng.torch": rng}, META)
    torch.manual_seed(1)
    model2 = TinyStaged(bn=True)
    opt2 = (
        torch.optim.SGD(model2.parameters(), lr=0.1, momentum=0.9)
        if kind == "sgd"
        else torch.optim.AdamW(model2.parameters(), lr=0.01)
    )
    meta, extra = load_training_state(tmp_path, model2, opt2)
    assert meta["train_state"] == {"epoch": 1}
    assert torch.equal(extra["rng.torch"], rng)
    for (k, a), b in zip(model.state_dict().items(), model2.state_dict().values()):
        assert torch.equal(a, b), k
    s1, s2 = opt.state_dict(), opt2.state_dict()
    assert s1["param_groups"] == s2["param_groups"]
    for idx in s1["state"]:
        for name, value in s1["state"][idx].items():
            other = s2["state"][idx][name]
            assert torch.equal(value, other) if isinstance(value, torch.Tensor) else value == other


def test_truncated_or_garbage_file_raises_checkpoint_error(tmp_path):
    path = tmp_path / "x.safetensors"
    save_safetensors(path, {"a": torch.arange(1000.0)}, {"k": 1})
    data = path.read_bytes()
    for broken in (data[:-10], data[:20], b"", b"not a safetensors file at all"):
        path.write_bytes(broken)
        with pytest.raises(CheckpointError, match="corrupt or truncated"):
            load_safetensors(path, what="training checkpoint")
    with pytest.raises(CheckpointError, match="not found"):
        load_safetensors(tmp_path / "missing.safetensors", what="training checkpoint")


def test_incomplete_or_bad_metadata_is_named(tmp_path):
    model, opt = trained_model_and_optimizer()
    save_file(
        {"model.fc1.weight": model.fc1.weight.detach().contiguous()},
        str(tmp_path / CHECKPOINT_FILE),
        metadata={"flexsnn_state": "{not json"},
    )
    with pytest.raises(CheckpointError, match=r"metadata of training checkpoint .* is corrupt \(not valid JSON"):
        load_training_state(tmp_path, model, opt)
    save_file(
        {"a": torch.zeros(1)}, str(tmp_path / CHECKPOINT_FILE), metadata={"flexsnn_state": json.dumps({"epoch": 1})}
    )
    with pytest.raises(CheckpointError, match="incomplete"):
        load_training_state(tmp_path, model, opt)
    save_file({"a": torch.zeros(1)}, str(tmp_path / CHECKPOINT_FILE))
    with pytest.raises(CheckpointError, match="no flexsnn state metadata"):
        load_training_state(tmp_path, model, opt)


def test_weights_of_another_model_are_refused(tmp_path):
    model, opt = trained_model_and_optimizer()
    save_training_state(tmp_path, model, opt, {}, META)
    other = TinyStaged(hidden=5)
    with pytest.raises(CheckpointError, match="do not match"):
        load_training_state(tmp_path, other, torch.optim.SGD(other.parameters(), lr=0.1))


def test_a_write_that_dies_midway_leaves_the_previous_checkpoint_intact(tmp_path, monkeypatch):
    path = tmp_path / CHECKPOINT_FILE
    save_safetensors(path, {"a": torch.ones(3)}, {"v": 1})
    before = path.read_bytes()

    def dying_save(tensors, filename, metadata=None):
        with open(filename, "wb") as fh:
            fh.write(b"half a file")
        raise KeyboardInterrupt  # e.g. Ctrl-C while writing

    monkeypatch.setattr(ckpt, "save_file", dying_save)
    with pytest.raises(KeyboardInterrupt):
        save_safetensors(path, {"a": torch.zeros(3)}, {"v": 2})
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == [CHECKPOINT_FILE]  # no temp file left
    tensors, meta = load_safetensors(path, what="checkpoint")
    assert meta == {"v": 1} and torch.equal(tensors["a"], torch.ones(3))


def test_saved_bytes_are_fsynced_before_the_rename(tmp_path, monkeypatch):
    calls = []
    real_fsync = ckpt.os.fsync
    real_replace = ckpt.os.replace if hasattr(ckpt.os, "replace") else None

    def spy_fsync(fd):
        calls.append("fsync")
        return real_fsync(fd)

    import flexsnn.io as fio

    def spy_replace(src, dst):
        calls.append("replace")
        return real_replace(src, dst)

    monkeypatch.setattr(ckpt.os, "fsync", spy_fsync)
    monkeypatch.setattr(fio.os, "replace", spy_replace)
    save_safetensors(tmp_path / "c.safetensors", {"a": torch.ones(2)})
    assert calls[:2] == ["fsync", "replace"]  # file data durable first, then the atomic rename
