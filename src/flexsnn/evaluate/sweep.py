"""Accuracy at uniform T values and at per-stage TimeConfigs, with BN calibration per config.

Calibration is part of changing the inference configuration: for a model with BatchNorm,
every function here re-estimates the BN statistics at the evaluated configuration (or at
``calib_config`` when given, e.g. T_max as the paper's authors do) before measuring.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Sequence

import torch
from torch import nn

from flexsnn.data.encoding import model_input
from flexsnn.errors import CalibrationWarning, InputError, check_positive_int
from flexsnn.progress import progress_bar
from flexsnn.train.bn_calibration import batchnorm_layers, calibrate_bn

TimeConfigLike = int | Sequence[int]


@torch.no_grad()
def accuracy_at(
    model: nn.Module,
    loader: Iterable,
    time_config: TimeConfigLike,
    max_batches: int | None = None,
) -> float:
    """Top-1 accuracy of the time-averaged output at ``time_config`` (model in eval mode)."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    correct = seen = 0
    try:
        for i, (x, y) in enumerate(loader):
            if max_batches is not None and i >= max_batches:
                break
            out = model(model_input(x.to(device), model), time_config=time_config)
            correct += int((out.mean(0).argmax(1) == y.to(device)).sum())
            seen += len(y)
    finally:
        model.train(was_training)
    if seen == 0:
        raise InputError("loader yielded no samples; expected a non-empty test split")
    return correct / seen


def evaluate_config(
    model: nn.Module,
    test_loader: Iterable,
    time_config: TimeConfigLike,
    calib_loader: Iterable | None = None,
    calib_batches: int = 10,
    calib_config: TimeConfigLike | None = None,
    calibrate: bool = True,
) -> float:
    """Calibrate BN (if any) at ``calib_config or time_config``, then measure accuracy.

    ``calibrate=False`` keeps the model's current BN statistics (e.g. those of a standard
    SDT run at its training T), which is how a baseline without calibration is measured.
    """
    if calibrate and batchnorm_layers(model):
        if calib_loader is None:
            raise InputError(
                "calib_loader is required: the model has BatchNorm, whose statistics must be "
                "re-estimated at every inference TimeConfig (pass the training loader)"
            )
        calibrate_bn(model, calib_loader, calib_config if calib_config is not None else time_config, calib_batches)
    if calibrate and calib_config is None:
        return accuracy_at(model, test_loader, time_config)
    with warnings.catch_warnings():  # statistics of another config, asked for on purpose
        warnings.simplefilter("ignore", CalibrationWarning)
        return accuracy_at(model, test_loader, time_config)


def sweep_uniform(
    model: nn.Module,
    test_loader: Iterable,
    t_values: Iterable[int],
    calib_loader: Iterable | None = None,
    calib_batches: int = 10,
    calib_config: TimeConfigLike | None = None,
    progress: bool = True,
    desc: str = "T sweep",
    calibrate: bool = True,
) -> dict[int, float]:
    """Accuracy at every uniform T in ``t_values`` -> ``{T: accuracy}``."""
    t_values = [check_positive_int(t, "t_values[]") for t in t_values]
    if not t_values:
        raise InputError("t_values is empty; expected at least one T >= 1")
    results = {}
    for t in progress_bar(t_values, desc=desc, enabled=progress, leave=False):
        results[t] = evaluate_config(model, test_loader, t, calib_loader, calib_batches, calib_config, calibrate)
    return results


def sweep_configs(
    model: nn.Module,
    test_loader: Iterable,
    configs: Iterable[TimeConfigLike],
    calib_loader: Iterable | None = None,
    calib_batches: int = 10,
    progress: bool = True,
    calib_config: TimeConfigLike | None = None,
    calibrate: bool = True,
) -> list[dict]:
    """Accuracy at each per-stage TimeConfig -> rows ``{"config": [...], "accuracy": a}``."""
    rows = []
    for cfg in progress_bar(list(configs), desc="configs", enabled=progress, leave=False):
        acc = evaluate_config(model, test_loader, cfg, calib_loader, calib_batches, calib_config, calibrate)
        rows.append(
            {
                "config": list(model.normalize_time_config(cfg)) if hasattr(model, "normalize_time_config") else cfg,
                "accuracy": acc,
            }
        )
    return rows
