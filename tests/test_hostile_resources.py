"""Bounded resources: a T, batch size, sample count or layer size that cannot fit is refused in one
line naming the option and the estimate, before anything is allocated; normal requests pass."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import train_tiny_nmnist_run

from flexsnn.runs import RunSpec
from flexsnn.runs.memory import (
    MAX_SAMPLE_NUM,
    ResourceError,
    check_memory,
    check_sample_num,
    estimate_memory,
    format_bytes,
    memory_limit,
    model_footprint,
)
from flexsnn.runs.train import check_training_memory

BIG = "1000000000"


def test_footprint_and_estimate_of_a_tiny_mlp_by_hand():
    # digits_mlp, input 2x4x4, no pooling, hidden 8 and 4, 3 classes:
    # stage 1: Flatten 32 + Linear 8 + BN 8 + LIF 8 = 56 values per sample and step; stage 2: 4 + 4 + 4 = 12
    fp = model_footprint("digits_mlp", {"in_shape": [2, 4, 4], "hidden": [8, 4], "pool": 1, "num_classes": 3})
    assert fp.measured and fp.input_numel == 32
    assert fp.stage_numels == (56, 12) and fp.largest_numel == 32
    # parameters + buffers: Linear 32x8 (no bias: BN follows), BN1d(8): weight, bias, mean, var (8 each)
    # + num_batches_tracked; Linear 8x4, BN1d(4) likewise; head Linear 4x3 + bias 3
    assert fp.param_count == 256 + 33 + 32 + 17 + 15
    est = estimate_memory(fp, (5, 2), batch_size=7, data_t=5, training=True, optimizer="sgd")
    assert est.activations == 7 * (5 * 56 + 2 * 12) * 4 * 2  # x AUTOGRAD_FACTOR 2
    assert est.inputs == 7 * 5 * 32 * 4 * 2  # the batch and its resampled copy
    assert est.parameters == 353 * 4 * 3  # weights, gradients, SGD momentum
    assert estimate_memory(fp, (5, 2), 7, 5, training=True, optimizer="adamw").parameters == 353 * 4 * 4
    ev = estimate_memory(fp, (5, 2), batch_size=7, data_t=5)
    assert ev.activations == 7 * 5 * 32 * 4 * 2 and ev.parameters == 353 * 4  # largest layer in and out
    assert estimate_memory(fp, (3,), 1).activations == estimate_memory(fp, (3, 3), 1).activations  # one T = uniform


def test_models_open_in_image_size_are_measured_at_the_dataset_shape():
    fp = model_footprint("resnet19", {"width": 0.25}, (3, 32, 32))  # the net takes any H, W
    assert fp.measured and fp.input_numel == 3 * 32 * 32 and fp.stage_numels
    assert not model_footprint("resnet19", {"width": 0.25}).measured  # without it: parameters and input only


def test_limit_comes_from_the_environment_or_the_machine(monkeypatch):
    monkeypatch.setenv("FLEXSNN_MEMORY_LIMIT", "2GiB")
    assert memory_limit() == (2 * 2**30, "FLEXSNN_MEMORY_LIMIT=2GiB")
    monkeypatch.setenv("FLEXSNN_MEMORY_LIMIT", "off")
    assert memory_limit()[0] is None
    check_training_memory(RunSpec(t_max=10**9))  # the user said so: no check
    monkeypatch.setenv("FLEXSNN_MEMORY_LIMIT", "lots")
    with pytest.raises(Exception, match="FLEXSNN_MEMORY_LIMIT must be a size"):
        memory_limit()
    monkeypatch.delenv("FLEXSNN_MEMORY_LIMIT")
    limit, source = memory_limit()
    assert 0 < limit and source.startswith("this machine has")
    assert format_bytes(3.1e12) == "3.1 TB" and format_bytes(512e6) == "512 MB"


def test_normal_requests_pass_and_a_small_limit_refuses_them(monkeypatch):
    monkeypatch.setenv("FLEXSNN_MEMORY_LIMIT", "8GB")
    check_training_memory(RunSpec())  # digits_conv, T = 6, batch 64
    check_training_memory(RunSpec(method="sdt", t_max=64, batch_size=128))
    fp = model_footprint("digits_conv")
    assert check_memory(fp, [("--t 200", (200,), 200)], 64).total < 8e9  # evaluation at T = 200
    monkeypatch.setenv("FLEXSNN_MEMORY_LIMIT", "10MB")  # digits_conv's 4.1 MB of weights, gradients, momentum fit
    with pytest.raises(ResourceError, match=r"^--t-max 100 needs about .* FLEXSNN_MEMORY_LIMIT=10MB; lower --t-max"):
        check_training_memory(RunSpec(t_max=100, batch_size=1))
    with pytest.raises(ResourceError, match=r"^--batch-size 512 needs about .*; lower --batch-size"):
        check_memory(fp, [("--t 1", (1,), 1)], 512)
    monkeypatch.setenv("FLEXSNN_MEMORY_LIMIT", "1MB")
    with pytest.raises(ResourceError, match=r"^the model's layer sizes need about 4.1 MB of parameter memory"):
        check_training_memory(RunSpec(batch_size=1))


def test_under_torchrun_each_process_is_checked_with_its_share_of_the_batch(monkeypatch):
    monkeypatch.setenv("FLEXSNN_MEMORY_LIMIT", "20MB")  # batch 256: about 59 MB; 32: about 11 MB
    spec = RunSpec(t_max=1, batch_size=256)
    with pytest.raises(ResourceError, match=r"^--batch-size 256 needs about"):
        check_training_memory(spec)
    monkeypatch.setenv("WORLD_SIZE", "8")  # 32 per process fits
    check_training_memory(spec)


def test_sample_num_is_capped(monkeypatch):
    assert check_sample_num(MAX_SAMPLE_NUM) == MAX_SAMPLE_NUM
    with pytest.raises(ResourceError, match=f"--sample-num {MAX_SAMPLE_NUM + 1} runs {MAX_SAMPLE_NUM + 1} forward"):
        check_sample_num(MAX_SAMPLE_NUM + 1)
    monkeypatch.setenv("FLEXSNN_MAX_SAMPLE_NUM", "1000")
    assert check_sample_num(1000) == 1000


DRIVER = """
import contextlib, io, json, resource, sys
from flexsnn.cli import main
results = []
for argv in json.loads(sys.argv[1]):
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = main(argv)
        except SystemExit as exc:
            code = exc.code
    results.append([code, err.getvalue()])
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kB on Linux
print(json.dumps({"results": results, "peak_rss": peak}))
"""


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A tiny trained run, and copies whose config.json was tampered with."""
    root = tmp_path_factory.mktemp("resources")
    base = train_tiny_nmnist_run(root / "run", t=3, calib_batches=1)
    edits = {
        "channels": lambda c: c["model"]["kwargs"].__setitem__("channels", [4, 4, 10**8]),
        "in_size": lambda c: c["model"]["kwargs"].__setitem__("in_size", 10**6),
        "t_max": lambda c: c["run"].__setitem__("t_max", 10**9),
        "batch": lambda c: c["run"].__setitem__("batch_size", 10**9),
    }
    for name, edit in edits.items():
        shutil.copytree(base, root / name)
        config = json.loads((root / name / "config.json").read_text())
        edit(config)
        (root / name / "config.json").write_text(json.dumps(config))
    return root


CASES = [
    (["train", "--t-max", BIG], f"--t-max {BIG} needs about"),
    (["train", "--data-t", BIG], f"--data-t {BIG} needs about"),
    (["train", "--batch-size", BIG], f"--batch-size {BIG} needs about"),
    (["train", "--sample-num", BIG], f"--sample-num {BIG} runs"),
    (["train", "--config", "{big_model}"], "the model's layer sizes need about"),
    (["evaluate", "--run", "{run}", "--t", "1", "2", BIG], f"--t {BIG} needs about"),
    (["evaluate", "--run", "{run}", "--config", f"3,{BIG}"], f"--config 3,{BIG} needs about"),
    (["deploy", "prepare", "--run", "{run}", "--t", BIG], f"--t {BIG} needs about"),
    (["deploy", "prepare", "--run", "{run}", "--sample-num", BIG], f"--sample-num {BIG} runs"),
    (["deploy", "prepare", "--run", "{run}", "--batch-size", BIG], f"--batch-size {BIG} needs about"),
    (["search", "--run", "{run}", "--t-max", BIG], f"--t-max {BIG} needs about"),
    (["evaluate", "--run", "{channels}"], "key 'model' describes a model of 4,300,000,251 parameters"),
    (["evaluate", "--run", "{in_size}"], "key 'model' describes a model of"),
    (["deploy", "prepare", "--run", "{channels}"], "key 'model' describes a model of"),
    (["evaluate", "--run", "{t_max}"], f"data_t {BIG} of"),
    (["evaluate", "--run", "{batch}"], f"batch_size {BIG} of"),
]


def test_huge_requests_are_refused_in_one_line_before_anything_is_allocated(runs, tmp_path):
    big_model = tmp_path / "big.json"
    big_model.write_text(json.dumps({"run": {"model_kwargs": {"hidden": 10**12}}}))
    names = {
        "run": runs / "run",
        "big_model": big_model,
        **{n: runs / n for n in ("channels", "in_size", "t_max", "batch")},
    }
    argvs = []
    for i, (argv, _) in enumerate(CASES):
        argv = [a.format(**names) for a in argv]
        if argv[0] == "train" or argv[:2] == ["deploy", "prepare"]:
            argv += ["--out", str(tmp_path / f"out{i}")]
        argvs.append(argv + ["--quiet"])
    env = {**os.environ, "FLEXSNN_MEMORY_LIMIT": "16GB"}  # the same refusals on every machine
    child = subprocess.Popen(
        [sys.executable, "-c", DRIVER, json.dumps(argvs)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env
    )
    out, err = child.communicate(timeout=300)
    assert child.returncode == 0, err.decode()
    report = json.loads(out)
    assert len(report["results"]) == len(CASES)
    for (argv, expected), (code, message) in zip(CASES, report["results"]):
        assert code == 2 and message.count("\n") == 1 and "Traceback" not in message, (argv, message)
        assert expected in message, (argv, message)
        if "needs about" in expected:  # the estimate (TB / PB) and the limit it was held against
            assert "B of memory" in message and "FLEXSNN_MEMORY_LIMIT=16GB" in message, message
    # python + torch + flexsnn and all these refusals: far below any of the requests
    assert report["peak_rss"] < 1.5e9, format_bytes(report["peak_rss"])
    assert not any((tmp_path / f"out{i}").exists() for i in range(len(CASES)))  # nothing was created


def test_the_estimate_is_checked_before_any_data_is_binned(monkeypatch):
    import flexsnn.runs.train as run_train

    def no_loaders(*args, **kwargs):
        raise AssertionError("loaders were built before the memory check")

    monkeypatch.setattr(run_train, "build_loaders", no_loaders)
    monkeypatch.setenv("FLEXSNN_MEMORY_LIMIT", "16GB")
    with pytest.raises(ResourceError, match=f"--data-t {BIG}"):
        run_train.train_run(RunSpec(data_t=10**9), Path("never-created"), progress=False)
    assert not Path("never-created").exists()


def test_load_model_called_directly_refuses_a_config_far_larger_than_its_weights(runs):
    from flexsnn.errors import CheckpointError
    from flexsnn.runs import load_deployed, load_run
    from flexsnn.train import load_model

    for load in (load_model, load_run):
        with pytest.raises(CheckpointError, match="describes a model of 4,300,000,251 parameters"):
            load(runs / "channels")
    with pytest.raises(CheckpointError, match="is not a deployed run"):
        load_deployed(runs / "channels")
    model, _ = load_model(runs / "run")  # the untampered run still loads
    assert sum(p.numel() for p in model.parameters()) > 0


def test_a_refused_deploy_prepare_prints_only_its_error(runs, tmp_path, capsys, monkeypatch):
    from flexsnn.cli import main

    monkeypatch.setenv("FLEXSNN_MEMORY_LIMIT", "16GB")
    out = tmp_path / "deployed"
    code = main(["deploy", "prepare", "--run", str(runs / "run"), "--t", BIG, "--out", str(out), "--quiet"])
    captured = capsys.readouterr()
    assert code == 2 and captured.out == "", captured.out
    assert captured.err.count("\n") == 1 and f"--t {BIG} needs about" in captured.err
    assert not out.exists()
