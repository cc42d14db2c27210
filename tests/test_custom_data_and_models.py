"""Bring your own dataset and model: import paths in the CLI and the run config, every verb on the run."""

import json
import sys
import textwrap

import pytest
import torch

from flexsnn.cli import main
from flexsnn.data import DATASETS
from flexsnn.errors import ConfigError
from flexsnn.models import build_model
from flexsnn.runs import load_run

USER_MODULE = textwrap.dedent('''
    import numpy as np
    from torch import nn

    from flexsnn.data import dataset_factory
    from flexsnn.models import model_factory
    from flexsnn.neurons import LIF
    from flexsnn.staged import staged_from_layers

    CALLS = []

    @dataset_factory(num_classes=2, in_shape=(2, 4, 4))
    def stripes(split, n_time_bins, root):
        """Class 0: events in the top half, class 1: in the bottom half."""
        rng = np.random.default_rng(0 if split == "train" else 1)
        n = 48 if split == "train" else 16
        y = np.arange(n) % 2
        x = (rng.random((n, n_time_bins, 2, 4, 4)) < 0.1).astype(np.float32)
        for i, label in enumerate(y):
            x[i, :, :, 2 * label:2 * label + 2] += rng.random((n_time_bins, 2, 2, 4)) < 0.7
        return x, y

    @model_factory
    def tiny(num_classes=2, in_shape=(2, 4, 4), hidden=12):
        CALLS.append(hidden)
        c, h, w = in_shape
        return staged_from_layers(
            [nn.Flatten(), nn.Linear(c * h * w, hidden), nn.BatchNorm1d(hidden), LIF(),
             nn.Linear(hidden, num_classes), LIF(v_th=0.5)],
            boundaries=[4], input_kind="frames")

    def not_marked(**kw):
        raise AssertionError("must never be called")
''')


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    (tmp_path / "my_snn_pkg.py").write_text(USER_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("FLEXSNN_CACHE", str(tmp_path / "cache"))
    yield "my_snn_pkg"
    # the registry and the module cache are process-wide: leave them as they were
    for name in [n for n in DATASETS if n.startswith("my_snn_pkg:")]:
        del DATASETS[name]
    sys.modules.pop("my_snn_pkg", None)


@pytest.mark.slow
def test_cli_round_trip_on_a_custom_dataset_and_model(tmp_path, user_module, capsys):
    run = tmp_path / "run"
    assert (
        main(
            [
                "train",
                "--dataset",
                f"{user_module}:stripes",
                "--model",
                f"{user_module}:tiny",
                "--t-max",
                "3",
                "--epochs",
                "3",
                "--batch-size",
                "16",
                "--lr",
                "0.2",
                "--calib-batches",
                "2",
                "--out",
                str(run),
                "--quiet",
            ]
        )
        == 0
    )
    config = json.loads((run / "config.json").read_text())
    assert config["model"] == {"name": f"{user_module}:tiny", "kwargs": {"num_classes": 2, "in_shape": [2, 4, 4]}}
    assert config["run"]["dataset"] == f"{user_module}:stripes"
    assert json.loads((run / "results.json").read_text())["mtt"]["3"] >= 0.75  # learns (chance 0.5)
    assert main(["evaluate", "--run", str(run), "--t", "1", "3", "--quiet"]) == 0
    assert set(json.loads((run / "eval" / "results.json").read_text())["mtt"]) == {"1", "3"}
    assert main(["search", "--run", str(run), "--out", str(tmp_path / "search"), "--quiet", "--budget", "1"]) == 0
    assert (tmp_path / "search" / "search_configs.csv").is_file()
    assert main(["early-exit", "--run", str(run), "--out", str(tmp_path / "ee"), "--thresholds", "0", "2"]) == 0
    assert (tmp_path / "ee" / "early_exit.csv").is_file()
    assert (
        main(["deploy", "prepare", "--run", str(run), "--out", str(tmp_path / "dep"), "--epochs", "1", "--quiet"]) == 0
    )
    model, _ = load_run(tmp_path / "dep")
    assert model.model_spec["name"] == f"{user_module}:tiny"
    capsys.readouterr()


def test_fit_run_dir_then_save_model_reloads_a_custom_net(tmp_path, user_module):
    import importlib

    from torch.utils.data import DataLoader

    from flexsnn.data import make_loaders
    from flexsnn.train import MTTSampler, TrainOptions, calibrate_bn, fit, load_model, save_model

    mod = importlib.import_module(user_module)
    net = mod.tiny(hidden=8)  # called directly in Python: the net still records how to rebuild it
    assert net.model_spec == {"name": f"{user_module}:tiny", "kwargs": {"hidden": 8}}
    train, _ = make_loaders(f"{user_module}:stripes", n_time_bins=2, batch_size=16)
    fit(net, train, MTTSampler(1, 2), TrainOptions(epochs=1), run_dir=tmp_path, progress=False)
    calibrate_bn(net, DataLoader(train.dataset, batch_size=16), 2, num_batches=2)
    save_model(tmp_path, net, {})
    again, _ = load_model(tmp_path)
    x = torch.rand(2, 3, 2, 4, 4)
    net.eval(), again.eval()
    with torch.no_grad():
        assert torch.equal(again(x), net(x))


@pytest.mark.parametrize(
    "path, message",
    [
        ("my_snn_pkg:not_marked", "not marked as a flexsnn model factory"),
        ("os:system", "standard library"),
        ("my_snn_pkg:missing", "no attribute 'missing'"),
        ("no_such_module_xyz:f", "cannot be imported"),
        ("my_snn_pkg:tiny; import os", "import path"),
    ],
)
def test_only_marked_factories_are_called(user_module, path, message):
    with pytest.raises(ConfigError, match=message):
        build_model(path)


def test_cli_refuses_an_unmarked_dataset_in_one_line(tmp_path, user_module, capsys):
    assert (
        main(
            [
                "train",
                "--dataset",
                f"{user_module}:not_marked",
                "--model",
                f"{user_module}:tiny",
                "--out",
                str(tmp_path / "r"),
                "--epochs",
                "1",
                "--quiet",
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "dataset_factory" in err
    assert not (tmp_path / "r").exists()
