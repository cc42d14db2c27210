"""Tampered configs and metadata end in one-line errors naming the file and the key: the bounded
readers (size, nesting, value count, duplicate keys), the schema checker, config.json of a run
folder and the metadata of a training checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from test_train_loop import TinyStaged, noisy_loader

from flexsnn.errors import CheckpointError, ConfigError
from flexsnn.io import (
    Bool,
    Dict,
    Float,
    Int,
    ListOf,
    MapOf,
    Nullable,
    Str,
    check_schema,
    parse_json,
    read_json,
    read_yaml,
)
from flexsnn.models import build_model
from flexsnn.train.checkpoint import CHECKPOINT_FILE, CONFIG_FILE, load_model, save_model
from flexsnn.train.loop import TrainOptions, fit
from flexsnn.train.samplers import SDTSampler

# --- bounded readers -----------------------------------------------------------------------


def test_reader_caps_size_depth_values_and_refuses_duplicate_keys(tmp_path):
    path = tmp_path / "c.json"
    cases = [
        ("[" * 100_000 + "]" * 100_000, "nested too deeply"),  # RecursionError in json
        ("[" * 70 + "]" * 70, r"nested too deeply \(more than 64 levels\)"),
        (json.dumps({"a": {"b": 1}, "a ": 2}).replace('"a "', '"a"'), "key 'a' appears twice"),
        ("{not json", "corrupt .not valid JSON"),
        ("", "corrupt .not valid JSON"),
        ("\xff\xfe{}", None),  # written as latin-1 below: not UTF-8
    ]
    for text, message in cases:
        if message is None:
            path.write_bytes(b"\xff\xfe{}")
            message = "not UTF-8"
        else:
            path.write_text(text)
        with pytest.raises(CheckpointError, match=message) as err:
            read_json(path, what="run config")
        assert str(path) in str(err.value) and "\n" not in str(err.value)
    path.write_text(json.dumps(list(range(1000))))
    with pytest.raises(CheckpointError, match="larger than 100 bytes"):
        read_json(path, max_bytes=100)
    with pytest.raises(CheckpointError, match="more than 500 values"):
        read_json(path, max_items=500)
    assert read_json(path) == list(range(1000))
    with pytest.raises(CheckpointError, match="not found"):
        read_json(tmp_path / "missing.json")
    with pytest.raises(CheckpointError, match="not found"):
        read_json(tmp_path)  # a folder is not a JSON file


def test_yaml_reader_stops_alias_bombs_and_self_references(tmp_path):
    path = tmp_path / "r.yaml"
    laughs = ["a: &a [x, x, x, x, x, x, x, x, x, x]"]
    for i in range(1, 9):
        laughs.append(f"{chr(97 + i)}: &{chr(97 + i)} [" + ", ".join([f"*{chr(96 + i)}"] * 10) + "]")
    path.write_text("\n".join(laughs) + "\n")  # 10**9 leaves through aliases
    with pytest.raises(ConfigError, match="holds more than"):
        read_yaml(path, what="--config file")
    path.write_text("&a [*a]\n")  # a list containing itself
    with pytest.raises(ConfigError, match="nested too deeply"):
        read_yaml(path)
    path.write_text("run: {lr: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML/JSON") as err:
        read_yaml(path)
    assert "\n" not in str(err.value)
    path.write_text("run: {lr: 0.1}\n")
    assert read_yaml(path, schema=Dict({"run": MapOf(Float())})) == {"run": {"lr": 0.1}}


SCHEMA = Dict(
    {
        "name": Str(),
        "mode?": Str(choices=["a", "b"]),
        "n": Int(min=1, max=9),
        "x?": Float(min=0),
        "flag?": Bool(),
        "maybe?": Nullable(ListOf(Int(min=1), min_len=1)),
        "tags?": MapOf(Str()),
        "rows?": ListOf(Dict({"v": float})),
    }
)


@pytest.mark.parametrize(
    "value, message",
    [
        ([1, 2, 3], "the top level must be a mapping"),
        ({"n": 1}, "key 'name' is missing"),
        ({"name": 7, "n": 1}, "key 'name' must be a string, got 7"),
        ({"name": "a", "n": "abc"}, r"key 'n' must be an integer in \[1, 9\], got 'abc'"),
        ({"name": "a", "n": -5}, r"key 'n' must be an integer in \[1, 9\], got -5"),
        ({"name": "a", "n": 10**9}, r"key 'n' must be an integer in \[1, 9\]"),
        ({"name": "a", "n": True}, "key 'n' must be an integer"),
        ({"name": "a", "n": 1.0}, "key 'n' must be an integer"),
        ({"name": "a", "n": 1, "mode": "c"}, "key 'mode' must be one of 'a', 'b'"),
        ({"name": "a", "n": 1, "x": float("nan")}, "key 'x' must be a finite number >= 0"),
        ({"name": "a", "n": 1, "x": float("inf")}, "key 'x' must be a finite number"),
        ({"name": "a", "n": 1, "x": -1}, "key 'x' must be a finite number >= 0"),
        ({"name": "a", "n": 1, "flag": 1}, "key 'flag' must be true or false"),
        ({"name": "a", "n": 1, "maybe": []}, "key 'maybe' must be null or a list of 1.. items"),
        ({"name": "a", "n": 1, "maybe": [1, 0]}, r"key 'maybe\[1\]' must be an integer >= 1"),
        ({"name": "a", "n": 1, "tags": {"k": 1}}, "key 'tags.k' must be a string"),
        ({"name": "a", "n": 1, "rows": [{"v": 1}, {"v": "1"}]}, r"key 'rows\[1\].v' must be a number"),
        ({"name": "a", "n": 1, "extra": 0}, r"unknown key\(s\) \['extra'\]"),
    ],
)
def test_schema_mismatches_name_the_file_and_the_key(value, message):
    with pytest.raises(ConfigError, match=message) as err:
        check_schema(value, SCHEMA, "run_spec.json")
    assert str(err.value).startswith("run_spec.json: ")


def test_schema_accepts_what_it_describes():
    good = {"name": "a", "n": 9, "x": 0, "maybe": None, "rows": [{"v": 1}, {"v": 2.5}], "flag": False}
    assert check_schema(good, SCHEMA, "f") is good
    assert parse_json('{"a": [1, 2]}', "f", schema=Dict({"a": ListOf(int)})) == {"a": [1, 2]}


# --- config.json of a run folder ------------------------------------------------------------


def tiny_run(run_dir: Path) -> dict:
    torch.manual_seed(0)
    save_model(run_dir, build_model("digits_mlp", hidden=[8, 6], pool=17), {"run": {"epochs": 1}})
    return json.loads((run_dir / CONFIG_FILE).read_text())


CONFIG_CASES = [
    (lambda c: [1, 2, 3], "the top level must be a mapping"),
    (lambda c: "text", "the top level must be a mapping"),
    (lambda c: {k: v for k, v in c.items() if k != "model"}, "key 'model' is missing"),
    (lambda c: {**c, "model": 7}, "key 'model' must be a mapping"),
    (lambda c: {**c, "model": {"kwargs": {}}}, "key 'model.name' is missing"),
    (lambda c: {**c, "model": {"name": 5}}, "key 'model.name' must be a string"),
    (lambda c: {**c, "model": {"name": "digits_mlp", "kwargs": [1]}}, "key 'model.kwargs' must be a mapping"),
    (lambda c: {**c, "model": {"name": "nope"}}, "key 'model' does not describe a model.*unknown model 'nope'"),
    (lambda c: {**c, "model": {"name": "digits_mlp", "kwargs": {"hidden": "abc"}}}, "key 'model' does not describe"),
    (lambda c: {**c, "model": {"name": "digits_mlp", "kwargs": {"bogus": 1}}}, "key 'model' does not describe"),
    (lambda c: {**c, "model": {"name": "digits_mlp", "kwargs": {"hidden": [-3]}}}, "key 'model' does not describe"),
    (lambda c: {**c, "bn_calibrated_for": "x"}, "key 'bn_calibrated_for' must be null or a list"),
    (lambda c: {**c, "bn_calibrated_for": [0, 1]}, r"key 'bn_calibrated_for\[0\]' must be an integer >= 1"),
    (lambda c: {**c, "bn_calibrated_for": [1, 2, 3]}, "key 'bn_calibrated_for' does not fit the model"),
    (lambda c: {**c, "weights_sha256": [1]}, "key 'weights_sha256' must be a mapping"),
    (lambda c: {**c, "history": {"a": 1}}, "key 'history' must be a list"),
    (lambda c: {**c, "run": [1]}, "key 'run' must be a mapping"),
]


@pytest.mark.parametrize("edit, message", CONFIG_CASES)
def test_tampered_run_config_is_refused_naming_file_and_key(tmp_path, edit, message):
    config = tiny_run(tmp_path)
    (tmp_path / CONFIG_FILE).write_text(json.dumps(edit(config)))
    with pytest.raises(CheckpointError, match=message) as err:
        load_model(tmp_path)
    assert str(tmp_path / CONFIG_FILE) in str(err.value) and "\n" not in str(err.value)


# --- training checkpoint metadata ----------------------------------------------------------

OPTS = dict(epochs=2, lr=0.05, seed=3, checkpoint_every_steps=0)


def finished_run(run_dir: Path):
    torch.manual_seed(0)
    history = fit(
        TinyStaged(), noisy_loader(n=16), SDTSampler(2), TrainOptions(**OPTS), run_dir=run_dir, progress=False
    )
    return history


def tamper_meta(run_dir: Path, edit) -> None:
    path = run_dir / CHECKPOINT_FILE
    with safe_open(str(path), framework="pt") as fh:
        meta = dict(fh.metadata())
        tensors = {k: fh.get_tensor(k) for k in fh.keys()}
    state = json.loads(meta["flexsnn_state"])
    edit(state)
    meta["flexsnn_state"] = json.dumps(state)
    save_file(tensors, str(path), metadata=meta)


def resume(run_dir: Path):
    torch.manual_seed(0)
    return fit(
        TinyStaged(),
        noisy_loader(n=16),
        SDTSampler(2),
        TrainOptions(**OPTS),
        run_dir=run_dir,
        resume=True,
        progress=False,
    )


def _ts(**kw):
    return lambda s: s["train_state"].update(kw)


META_CASES = [
    (_ts(epoch="abc"), r"key 'train_state.epoch' must be an integer >= 0, got 'abc'"),
    (_ts(epoch=-5), r"key 'train_state.epoch' must be an integer >= 0, got -5"),
    (_ts(epoch=10**9), r"key 'train_state.epoch' is 1000000000, beyond the run's 2 epochs"),
    (_ts(epoch=1), r"'train_state.history' has 2 rows for 1 completed epochs"),
    (_ts(step_in_epoch=1), r"'train_state.step_in_epoch' is 1, but every epoch is done"),
    (_ts(global_step=None), r"key 'train_state.global_step' must be an integer"),
    (_ts(epoch_loss_sum=float("nan")), r"key 'train_state.epoch_loss_sum' must be a finite number"),
    (_ts(history=[1, 2]), r"key 'train_state.history\[0\]' must be a mapping"),
    (_ts(surprise=1), r"unknown key\(s\) \['surprise'\] in 'train_state'"),
    (lambda s: s["train_state"].pop("epoch"), "key 'train_state.epoch' is missing"),
    (lambda s: s.update(train_state=[1]), "key 'train_state' must be a mapping"),
    (lambda s: s.pop("config_rng"), "key 'config_rng' is missing"),
    (lambda s: s.update(config_rng=[3, [1, 2], None]), "incomplete or malformed"),
    (lambda s: s["rng"].update(python="x"), "key 'rng.python' must be a list"),
    (lambda s: s["rng"].update(python=[3, [1] * 3, None]), "incomplete or malformed"),
    (lambda s: s["rng"].update(numpy=["MT19937", [1, 2], 0, 0, 0.0]), "incomplete or malformed"),
    (lambda s: s["scheduler"].update(last_epoch="x"), "scheduler state .*key 'last_epoch' is 'x'"),
    (lambda s: s["scheduler"].pop("T_max"), "scheduler state .* does not match: keys"),
    (lambda s: s.update(scheduler=5), "key 'scheduler' must be a mapping"),
    (lambda s: s.pop("options"), r"incomplete \(metadata lacks \['options'\]\)"),
]


def test_a_finished_run_resumes_to_the_same_history_without_training(tmp_path):
    history = finished_run(tmp_path)
    assert resume(tmp_path) == history


@pytest.mark.parametrize("edit, message", META_CASES)
def test_tampered_checkpoint_metadata_is_refused(tmp_path_factory, edit, message):
    run = tmp_path_factory.getbasetemp() / "finished-run"
    if not (run / CHECKPOINT_FILE).exists():
        finished_run(run)
    case = tmp_path_factory.mktemp("case")
    (case / CHECKPOINT_FILE).write_bytes((run / CHECKPOINT_FILE).read_bytes())
    tamper_meta(case, edit)
    with pytest.raises(CheckpointError, match=message) as err:
        resume(case)
    assert str(case / CHECKPOINT_FILE) in str(err.value) and "\n" not in str(err.value)
