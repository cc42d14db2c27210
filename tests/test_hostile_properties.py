"""Property tests: whatever goes into TimeConfig parsing, the CLI's config parsing, the bounded
readers, the schema checks and ``ttm``, the result is either flexsnn's own error or the correct
value; nothing else escapes and nothing is silently changed."""

from __future__ import annotations

import argparse
import json
import math

import numpy as np
import pytest
import torch
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flexsnn.cli import main
from flexsnn.cli.common import integer, nonnegative_int, parse_time_config, positive_int
from flexsnn.cli.train_cmd import load_config_file
from flexsnn.errors import CheckpointError, ConfigError, FlexSNNError, InputError
from flexsnn.io import parse_json
from flexsnn.runs import RunSpec
from flexsnn.staged import normalize_time_config
from flexsnn.temporal import transform_matrix, ttm
from flexsnn.train.checkpoint import RUN_CONFIG_SCHEMA

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

scalars = st.one_of(
    st.integers(-5, 40),
    st.integers(),
    st.floats(allow_nan=True),
    st.booleans(),
    st.none(),
    st.text(max_size=4),
    st.integers(1, 9).map(np.int64),
    st.integers(-3, 9).map(lambda v: torch.tensor(v)),
)
time_configs = st.one_of(
    scalars,
    st.lists(scalars, max_size=5),
    st.lists(st.integers(1, 9), max_size=5).map(tuple),
    st.lists(st.integers(-2, 9), min_size=1, max_size=4).map(torch.tensor),
    st.lists(st.lists(st.integers(1, 3), max_size=2), max_size=3),
)


@SETTINGS
@given(cfg=time_configs, stages=st.integers(1, 4))
def test_time_config_is_the_given_positive_ints_or_a_config_error(cfg, stages):
    try:
        out = normalize_time_config(cfg, stages)
    except ConfigError:
        return
    assert isinstance(out, tuple) and len(out) == stages
    assert all(type(v) is int and v >= 1 for v in out)
    if isinstance(cfg, (int, np.integer)) and not isinstance(cfg, bool):
        assert out == (int(cfg),) * stages  # an int means uniform
    else:
        values = cfg.tolist() if isinstance(cfg, torch.Tensor) else list(cfg)
        assert [int(v) for v in values] == list(out) and all(float(v) == int(v) for v in values)


@SETTINGS
@given(
    text=st.one_of(
        st.text(max_size=12), st.lists(st.integers(-3, 20), min_size=1, max_size=4).map(lambda v: ",".join(map(str, v)))
    )
)
def test_cli_config_text_parses_to_its_numbers_or_an_input_error(text):
    try:
        out = parse_time_config(text)
    except InputError:
        return
    assert out == tuple(int(part) for part in text.split(",")) and all(v >= 1 for v in out)
    assert all(part.isascii() and part.isdigit() for part in text.split(","))  # plain digits only


# What Python's int() accepts besides plain digits: spaces, signs, underscores, other scripts' digits.
int_lookalikes = st.builds(
    lambda n, form: form.format(n),
    st.integers(1, 999),
    st.sampled_from([" {}", "{} ", "+{}", "{}\n", "\t{}", "1_{}", "{}_0"]),
) | st.text(alphabet="\u0663\u0967\uff13\u09e9\u2083", min_size=1, max_size=3)


@SETTINGS
@given(bad=int_lookalikes, position=st.integers(0, 2))
def test_cli_integers_are_plain_ascii_digits_only(bad, position):
    parts = ["6", "1", "3"]
    parts[position] = bad
    with pytest.raises(InputError, match="--config .*plain digits 0-9"):
        parse_time_config(",".join(parts))
    for parse in (positive_int, nonnegative_int, integer):
        with pytest.raises(argparse.ArgumentTypeError, match="plain digits 0-9"):
            parse(bad)


@SETTINGS
@given(value=st.integers(-(10**30), 10**30))
def test_cli_integer_parsers_give_back_the_number_written(value):
    text = str(value)
    assert integer(text) == value
    for parse, minimum in ((positive_int, 1), (nonnegative_int, 0)):
        if value >= minimum:
            assert parse(text) == value
        else:
            with pytest.raises(argparse.ArgumentTypeError):
                parse(text)


@pytest.mark.parametrize(
    "argv",
    [
        ["train", "--t-max", " 3"],
        ["train", "--seed", "1_000"],
        ["train", "--epochs", "+3"],
        ["train", "--batch-size", "\u0663"],
        ["evaluate", "--run", "R", "--t", "1", "\u0663"],
        ["evaluate", "--run", "R", "--grid", "1,+2"],
        ["deploy", "prepare", "--run", "R", "--L", "1_0"],
        ["deploy", "export", "--run", "R", "--input-shape", "2, 34,34"],
        ["search", "--run", "R", "--seed", " 0"],
    ],
)
def test_cli_refuses_int_lookalikes_in_one_line(tmp_path, capsys, argv):
    argv = [str(tmp_path / a) if a == "R" else a for a in argv]
    if argv[0] == "train":
        argv += ["--out", str(tmp_path / "out")]
    if argv[:2] == ["deploy", "prepare"]:
        argv += ["--out", str(tmp_path / "out")]
    if argv[:2] == ["deploy", "export"]:
        argv += ["--out", str(tmp_path / "m.nir")]
    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code
    err = capsys.readouterr().err
    option = next(a for a in reversed(argv[: argv.index("--out")] if "--out" in argv else argv) if a.startswith("--"))
    assert code == 2 and err.count("\n") == 1 and option in err and "Traceback" not in err, err
    assert not (tmp_path / "out").exists()


@SETTINGS
@given(text=st.text(max_size=10))
def test_cli_evaluate_config_flag_is_one_line_whatever_it_is(tmp_path_factory, capsys, text):
    missing = tmp_path_factory.getbasetemp() / "no-such-run"
    try:
        code = main(["evaluate", "--run", str(missing), "--config", text])
    except SystemExit as exc:  # argparse refused the value
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err, err


json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=6)),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=6), inner, max_size=4)),
    max_leaves=20,
)
run_options = st.dictionaries(
    st.sampled_from(
        [
            "lr",
            "epochs",
            "method",
            "t_max",
            "t_min",
            "seed",
            "device",
            "model_kwargs",
            "augment",
            "data_t",
            "momentum",
            "run",
            "smoke",
            "bogus",
        ]
    ),
    json_values,
    max_size=5,
)


@SETTINGS
@given(data=st.one_of(json_values, run_options, st.builds(lambda r: {"run": r}, run_options)), raw=st.text(max_size=30))
def test_config_files_give_a_config_error_or_a_valid_spec(tmp_path_factory, data, raw):
    path = tmp_path_factory.mktemp("cfg") / "run.yaml"
    for text in (yaml.safe_dump(data), raw):
        path.write_text(text)
        try:
            options = load_config_file(path)
            spec = RunSpec.from_dict(options, str(path))
        except ConfigError:
            continue
        assert isinstance(options, dict)
        for key, value in options.items():  # what was given is what the spec holds
            assert getattr(spec, key) == value


@SETTINGS
@given(value=json_values, raw=st.text(max_size=20))
def test_run_config_readers_give_a_checkpoint_error_or_the_value(value, raw):
    for text in (json.dumps(value), raw, "[" * 200 + "]" * 200):
        try:
            out = parse_json(text, "config.json", schema=RUN_CONFIG_SCHEMA)
        except CheckpointError:
            continue
        assert json.dumps(out, sort_keys=True) == json.dumps(json.loads(text), sort_keys=True)


@SETTINGS
@given(
    t_in=st.integers(1, 12),
    width=st.integers(0, 3),
    t_out=st.one_of(st.integers(-2, 16), st.floats(allow_nan=True), st.booleans(), st.none(), st.text(max_size=2)),
    mode=st.sampled_from(["hard", "soft", "trim", "Hard", "", None, 1]),
    dtype=st.sampled_from([torch.float32, torch.float64, torch.int64, torch.bool]),
)
def test_ttm_is_the_transform_matrix_or_a_flexsnn_error(t_in, width, t_out, mode, dtype):
    x = (torch.arange(t_in * width * 2).reshape(t_in, width, 2) % 5).to(dtype)
    try:
        out = ttm(x, t_out, mode)
    except FlexSNNError:
        return
    assert out.shape == (t_out, width, 2)
    expected = transform_matrix(t_in, t_out, mode) @ x.double().reshape(t_in, -1)
    assert torch.allclose(out.double().reshape(t_out, -1), expected, atol=1e-5)
    if mode == "soft" or (mode == "hard" and t_out <= t_in):
        assert math.isclose(float(out.double().sum()), float(x.double().sum()), rel_tol=1e-6, abs_tol=1e-6)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), 1e9 + 0.5])
def test_ttm_refuses_a_non_integral_t_out(bad):
    with pytest.raises(InputError, match="t_out must be a positive integer"):
        ttm(torch.ones(3, 2), bad)
