"""Options are validated when they are made, not when they break something later: TrainOptions,
fit's inputs, and the calibration contract of a BatchNorm model (stale statistics raise; a
TimeConfig other than the calibrated one warns, or raises with ``require_calibration="exact"``)."""

from __future__ import annotations

import warnings

import pytest
import torch
from conftest import make_frame_loaders, tiny_staged_net
from test_train_loop import TinyStaged, noisy_loader

from flexsnn.errors import CalibrationError, CalibrationWarning, InputError
from flexsnn.evaluate import sweep_uniform
from flexsnn.train import calibrate_bn
from flexsnn.train.loop import TrainOptions, fit
from flexsnn.train.samplers import SDTSampler

BAD_OPTIONS = [
    ("lr", float("inf")),
    ("lr", float("nan")),
    ("lr", 0),
    ("lr", -0.1),
    ("lr", "0.1"),
    ("lr", None),
    ("lr", True),
    ("momentum", -1),
    ("momentum", 1.0),
    ("momentum", float("nan")),
    ("momentum", "0.9"),
    ("weight_decay", float("nan")),
    ("weight_decay", -1),
    ("weight_decay", float("inf")),
    ("weight_decay", [0]),
    ("seed", "x"),
    ("seed", 1.5),
    ("seed", True),
    ("seed", -1),
    ("seed", 2**64),
    ("seed", None),
    ("device", "tpu"),
    ("device", "cuda:x"),
    ("device", "CPU"),
    ("device", ""),
    ("device", 5),
    ("device", None),
    ("epochs", 0),
    ("epochs", "3"),
    ("epochs", 2.0),
    ("optimizer", "adam"),
    ("schedule", "step"),
    ("amp", "fp8"),
    ("checkpoint_every_steps", -1),
    ("max_steps_per_epoch", 1.5),
    ("channels_last", 1),
]


@pytest.mark.parametrize("name, value", BAD_OPTIONS)
def test_bad_train_options_are_refused_at_construction_naming_the_option(name, value):
    with pytest.raises(InputError, match=rf"^{name} must be") as err:
        TrainOptions(**{name: value})
    assert repr(value) in str(err.value) or str(value) in str(err.value)


@pytest.mark.parametrize(
    "name, value",
    [
        ("lr", 1e-6),
        ("lr", 3),
        ("momentum", 0),
        ("momentum", 0.99),
        ("weight_decay", 0),
        ("seed", 0),
        ("seed", 2**63 - 1),
        ("device", "cuda"),
        ("device", "cuda:3"),
        ("device", torch.device("cpu")),
    ],
)
def test_good_train_options_are_kept_as_given(name, value):
    assert getattr(TrainOptions(**{name: value}), name) == value


def test_fit_on_an_empty_loader_is_an_error_not_a_nan_loss():
    for empty in ([], torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.zeros(0, 3, 8)))):
        with pytest.raises(InputError, match="train_loader yielded no batches in epoch 1"):
            fit(TinyStaged(), empty, SDTSampler(2), TrainOptions(epochs=1), progress=False)


class Exploding(TinyStaged):
    def forward(self, x, time_config):
        return super().forward(x, time_config) * float("inf")


def test_a_diverged_loss_stops_training_naming_the_learning_rate(tmp_path):
    with pytest.raises(InputError, match=r"training diverged: the loss is nan at epoch 1, step 1; .*lr=0.1"):
        fit(Exploding(), noisy_loader(n=16), SDTSampler(2), TrainOptions(epochs=1), run_dir=tmp_path, progress=False)
    assert not list(tmp_path.iterdir())  # no checkpoint of a diverged model


def calibrated_net():
    torch.manual_seed(0)
    train, test = make_frame_loaders(n_train=32, n_test=16)
    net = tiny_staged_net()
    calibrate_bn(net, train, (2, 2), num_batches=2)
    net.eval()
    return net, train, test


def test_eval_at_another_config_than_the_calibrated_one_warns_once_per_config():
    net, train, test = calibrated_net()
    x = next(iter(test))[0].transpose(0, 1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        net(x, time_config=(2, 2))  # the calibrated config: silent
    with pytest.warns(CalibrationWarning, match=r"calibrated for TimeConfig \(2, 2\), not for \(3, 1\)") as record:
        net(x, time_config=(3, 1))
        net(x, time_config=(3, 1))
    assert len([w for w in record if w.category is CalibrationWarning]) == 1
    assert record[0].filename == __file__  # points at the caller's line, not into torch
    net.require_calibration = "exact"
    with pytest.raises(CalibrationError, match=r"calibrated for TimeConfig \(2, 2\), not for \(1, 4\)"):
        net(x, time_config=(1, 4))
    net.require_calibration = False
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        net(x, time_config=(1, 4))
    net.require_calibration = True
    calibrate_bn(net, train, (1, 4), num_batches=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        net(x, time_config=(1, 4))  # recalibrated there: silent again


def test_sweeps_warn_only_when_the_statistics_of_another_config_were_not_asked_for():
    net, train, test = calibrated_net()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sweep_uniform(net, test, [1, 3], calib_loader=train, calib_batches=2, progress=False)  # per config
        sweep_uniform(net, test, [1, 3], calib_loader=train, calib_batches=2, calib_config=2, progress=False)
        sweep_uniform(net, test, [1, 3], calibrate=False, progress=False)  # the saved statistics, on purpose


def test_stage_input_warns_at_its_caller_too():
    net, _, test = calibrated_net()
    x = next(iter(test))[0].transpose(0, 1)
    with pytest.warns(CalibrationWarning, match=r"not for \(3, 1\)") as record:
        net.stage_input(x, (3, 1))
    assert record[0].filename == __file__
