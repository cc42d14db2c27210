"""Tampered weight files are refused: every loaded tensor is checked (names, dtype, shape, finite
values) and matched against the SHA-256 recorded when it was saved; training checkpoints too,
including optimizer state that does not fit its parameters."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from test_train_loop import TinyStaged

from flexsnn.cli import main
from flexsnn.errors import CheckpointError, UnverifiedWeightsWarning
from flexsnn.models import build_model
from flexsnn.train.checkpoint import (
    CHECKPOINT_FILE,
    CONFIG_FILE,
    MODEL_FILE,
    WEIGHTS_HASH_KEY,
    add_content_hashes,
    load_model,
    load_training_state,
    save_model,
    save_training_state,
    tensor_sha256,
)

KWARGS = {"hidden": [8, 6], "pool": 17}  # digits_mlp with 8 inputs: 14 tensors, ~200 weights


def tiny_run(run_dir: Path) -> torch.nn.Module:
    torch.manual_seed(0)
    model = build_model("digits_mlp", **KWARGS)
    run = {"model": "digits_mlp", "model_kwargs": KWARGS, "t_max": 2, "epochs": 1}
    save_model(run_dir, model, {"run": run})
    return model


def tensor_ranges(path: Path) -> dict[str, tuple[int, int]]:
    """Byte range of every tensor's data in a safetensors file (parsed from its header)."""
    data = path.read_bytes()
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + n])
    return {
        k: (8 + n + v["data_offsets"][0], 8 + n + v["data_offsets"][1])
        for k, v in header.items()
        if k != "__metadata__"
    }


def flip_bit(path: Path, offset: int, bit: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 1 << bit
    path.write_bytes(bytes(data))


def rewrite(path: Path, change) -> None:
    """Rewrite a safetensors file with ``change(tensors, metadata)`` applied (keeps the header's
    metadata unless ``change`` edits it)."""
    with safe_open(str(path), framework="pt") as fh:
        meta = dict(fh.metadata() or {})
        tensors = {k: fh.get_tensor(k) for k in fh.keys()}
    change(tensors, meta)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path), metadata=meta)


def test_saved_run_loads_bit_for_bit_without_warnings(tmp_path):
    model = tiny_run(tmp_path)
    config = json.loads((tmp_path / CONFIG_FILE).read_text())
    assert set(config[WEIGHTS_HASH_KEY]) == set(model.state_dict())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loaded, _ = load_model(tmp_path)
    for name, t in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], t), name


def test_a_digest_covers_dtype_and_shape_not_only_bytes():
    t = torch.arange(6, dtype=torch.int32)
    assert tensor_sha256(t) != tensor_sha256(t.view(2, 3))
    assert tensor_sha256(t) != tensor_sha256(t.view(torch.float32))
    assert tensor_sha256(t) == tensor_sha256(t.clone())


def test_one_flipped_bit_anywhere_in_any_tensor_is_caught(tmp_path):
    tiny_run(tmp_path)
    path = tmp_path / MODEL_FILE
    original = path.read_bytes()
    cases = 0
    for name, (start, end) in tensor_ranges(path).items():
        for offset, bit in ((start, 0), ((start + end) // 2, 3), (end - 1, 7)):
            path.write_bytes(original)
            flip_bit(path, offset, bit)
            with pytest.raises(CheckpointError) as err:
                load_model(tmp_path)
            assert str(path) in str(err.value) and repr(name) in str(err.value), str(err.value)
            cases += 1
    assert cases == 3 * 14


@pytest.mark.parametrize("with_hash", [True, False])
def test_nan_in_head_weight_is_refused_with_or_without_a_hash(tmp_path, with_hash):
    tiny_run(tmp_path)

    def plant_nan(tensors, meta):
        tensors["head.weight"][0, 0] = float("nan")
        if not with_hash:  # as an older flexsnn wrote it: nothing to compare against
            meta.pop("flexsnn_sha256")

    rewrite(tmp_path / MODEL_FILE, plant_nan)
    if not with_hash:
        config = json.loads((tmp_path / CONFIG_FILE).read_text())
        del config[WEIGHTS_HASH_KEY]
        (tmp_path / CONFIG_FILE).write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=r"tensor 'head.weight' holds NaN or infinite values"):
        load_model(tmp_path)


@pytest.mark.parametrize(
    "change, message",
    [
        (
            lambda t: t.update({"head.weight": t["head.weight"].to(torch.int32)}),
            r"'head.weight' is int32 \[10, 6\], the model expects float32 \[10, 6\]",
        ),
        (lambda t: t.update({"head.weight": t["head.weight"].double()}), r"'head.weight' is float64"),
        (lambda t: t.update({"head.weight": t["head.weight"][:, :5]}), r"'head.weight' is float32 \[10, 5\]"),
        (lambda t: t.pop("head.bias"), r"missing 'head.bias'"),
        (lambda t: t.update({"extra.weight": torch.zeros(2)}), r"unexpected 'extra.weight'"),
    ],
)
def test_retyped_reshaped_missing_or_extra_tensors_are_refused_not_cast(tmp_path, change, message):
    tiny_run(tmp_path)

    def tamper(tensors, meta):
        change(tensors)
        meta.pop("flexsnn_sha256")  # even without any hash, the model itself is the reference

    rewrite(tmp_path / MODEL_FILE, tamper)
    with pytest.raises(CheckpointError, match=message):
        load_model(tmp_path)


def test_weights_of_another_save_do_not_pass_for_the_config_ones(tmp_path):
    tiny_run(tmp_path / "a")
    torch.manual_seed(1)
    save_model(tmp_path / "b", build_model("digits_mlp", **KWARGS), {})
    (tmp_path / "a" / MODEL_FILE).write_bytes((tmp_path / "b" / MODEL_FILE).read_bytes())
    with pytest.raises(CheckpointError, match="is not the file .*config.json was saved with"):
        load_model(tmp_path / "a")


def test_old_run_folders_load_with_a_warning_until_rehashed(tmp_path):
    model = tiny_run(tmp_path)
    rewrite(tmp_path / MODEL_FILE, lambda tensors, meta: meta.pop("flexsnn_sha256"))
    config = json.loads((tmp_path / CONFIG_FILE).read_text())
    del config[WEIGHTS_HASH_KEY]
    (tmp_path / CONFIG_FILE).write_text(json.dumps(config))
    with pytest.warns(UnverifiedWeightsWarning, match="no content hashes.*add_content_hashes"):
        loaded, _ = load_model(tmp_path)
    assert torch.equal(loaded.head.weight, model.head.weight)
    add_content_hashes(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_model(tmp_path)
    start, _ = tensor_ranges(tmp_path / MODEL_FILE)["head.bias"]
    flip_bit(tmp_path / MODEL_FILE, start, 1)
    with pytest.raises(CheckpointError, match="'head.bias' does not match the SHA-256"):
        load_model(tmp_path)


def test_cli_prints_one_line_for_a_corrupted_run(tmp_path, capsys):
    tiny_run(tmp_path)
    start, _ = tensor_ranges(tmp_path / MODEL_FILE)["stages.0.2.weight"]
    flip_bit(tmp_path / MODEL_FILE, start + 5, 6)
    assert main(["evaluate", "--run", str(tmp_path), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "stages.0.2.weight" in err and MODEL_FILE in err


# --- training checkpoints ------------------------------------------------------------------

META = {"train_state": {"epoch": 1}, "scheduler": {}, "rng": {}, "options": {}, "sampler": {"method": "sdt"}}


def checkpoint(tmp_path, kind="sgd"):
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
    save_training_state(tmp_path, model, opt, {"rng.torch": torch.get_rng_state()}, META)
    return model, opt


def fresh(kind="sgd"):
    model = TinyStaged(bn=True)
    opt = (
        torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        if kind == "sgd"
        else torch.optim.AdamW(model.parameters(), lr=0.01)
    )
    return model, opt


def test_flipped_bits_in_a_training_checkpoint_are_caught(tmp_path):
    checkpoint(tmp_path, "adamw")
    path = tmp_path / CHECKPOINT_FILE
    original = path.read_bytes()
    ranges = tensor_ranges(path)
    assert any(k.startswith("optim.") for k in ranges) and "rng.torch" in ranges
    for name, (start, end) in ranges.items():
        path.write_bytes(original)
        flip_bit(path, (start + end) // 2, 2)
        with pytest.raises(CheckpointError, match=repr(name).replace(".", r"\.")):
            load_training_state(tmp_path, *fresh("adamw"))


@pytest.mark.parametrize(
    "kind, tensor, bad, message",
    [
        ("sgd", "momentum_buffer", lambda t: t.reshape(-1)[:-1].clone(), r"is float32 \[\d+\], its parameter is"),
        ("sgd", "momentum_buffer", lambda t: t.t().contiguous() if t.dim() == 2 else t[:-1], "its parameter is"),
        ("sgd", "momentum_buffer", lambda t: t.to(torch.int32), "is int32"),
        ("adamw", "exp_avg_sq", lambda t: torch.full_like(t, float("inf")), "NaN or infinite"),
        ("adamw", "exp_avg", lambda t: t.unsqueeze(0), "its parameter is"),
    ],
)
def test_optimizer_state_that_does_not_fit_its_parameter_is_refused(tmp_path, kind, tensor, bad, message):
    checkpoint(tmp_path, kind)

    def tamper(tensors, meta):
        tensors[f"optim.0.{tensor}"] = bad(tensors[f"optim.0.{tensor}"])
        meta.pop("flexsnn_sha256")  # an older checkpoint: only the structural checks apply

    rewrite(tmp_path / CHECKPOINT_FILE, tamper)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnverifiedWeightsWarning)
        with pytest.raises(CheckpointError, match=message):
            load_training_state(tmp_path, *fresh(kind))


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda o: o["state"].update({"99": o["state"]["0"]}), "names parameter '99'"),
        (lambda o: o["state"]["0"].update({"momentum_buffer": {"tensor": "optim.7.nothing"}}), "refers to tensor"),
        (lambda o: o["param_groups"][0].update({"lr": float("nan")}), r"param_groups\[0\]\.lr must be a finite"),
        (lambda o: o["param_groups"][0].update({"weight_decay": -1}), r"weight_decay must be a finite number >= 0"),
        (lambda o: o["param_groups"][0].update({"params": [0, 1]}), "parameters per group"),
        (lambda o: o.update({"param_groups": []}), r"key 'optimizer.param_groups' must be a list of 1.. items"),
        (lambda o: o.update({"state": [1, 2]}), r"key 'optimizer.state' must be a mapping"),
    ],
)
def test_tampered_optimizer_metadata_is_refused(tmp_path, edit, message):
    checkpoint(tmp_path)

    def tamper(tensors, meta):
        state = json.loads(meta["flexsnn_state"])
        edit(state["optimizer"])
        meta["flexsnn_state"] = json.dumps(state)

    rewrite(tmp_path / CHECKPOINT_FILE, tamper)
    with pytest.raises(CheckpointError, match=message):
        load_training_state(tmp_path, *fresh())
