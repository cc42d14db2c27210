"""Evaluate a saved run: accuracy over T and configs, the TimeConfig search, early exit.

Each function loads the run folder, rebuilds its loaders from the stored RunSpec (unless
``loaders`` are given) and calls the library function of :mod:`flexsnn.evaluate` that works
on a model and loaders. What ``flexsnn evaluate`` / ``search`` / ``early-exit`` run.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from torch.utils.data import DataLoader

from flexsnn.data.loaders import dataset_info, load_frames
from flexsnn.errors import ConfigError, InputError, check_choice, check_positive_int
from flexsnn.evaluate import results_from_sweep, search_configs, sweep_configs, sweep_uniform
from flexsnn.evaluate.cost import accuracy_and_ops
from flexsnn.evaluate.early_exit import DEFAULT_THRESHOLDS, EarlyExitResult, early_exit_sweep
from flexsnn.evaluate.pareto import holdout_split
from flexsnn.progress import progress_bar
from flexsnn.runs.folder import load_run
from flexsnn.runs.memory import check_memory, footprint_of
from flexsnn.runs.spec import RunSpec, build_loaders, resolve_device
from flexsnn.train import batchnorm_layers, calibrate_bn, fixed_calibration_loader
from flexsnn.train.checkpoint import CONFIG_FILE

__all__ = ["CALIBRATIONS", "SPLITS", "early_exit_run", "evaluate_run", "rebinned_sweep", "search_run"]

CALIBRATIONS = ("per_config", "t_max", "none")
SPLITS = ("half", "test")


def _load(run_dir, device: str) -> tuple:
    """``(model, spec)`` of a saved run, the model on ``device`` and ``spec.device`` set to it."""
    resolve_device(device)
    model, config = load_run(run_dir, device=device)
    spec = RunSpec.from_config(config, str(Path(run_dir) / CONFIG_FILE))
    spec.device = device
    return model, spec


def evaluate_run(
    run_dir: str | os.PathLike,
    t_values: Sequence[int] | None = None,
    configs: Sequence[Sequence[int]] = (),
    device: str = "cpu",
    calib_batches: int | None = None,
    progress: bool = True,
    loaders=None,
    calibration: str = "per_config",
    rebin: bool | None = None,
) -> dict[str, Any]:
    """Accuracy of a saved run at each uniform T (default 1..t_max) and at per-stage configs.

    ``calibration``: "per_config" re-estimates BN statistics at every evaluated config (the
    MTT recipe), "t_max" once at uniform t_max for all (the paper authors' protocol), "none"
    keeps the run's saved statistics (those of its training T: how plain SDT is used).
    ``rebin`` (event datasets; default True unless ``loaders`` are given): at each uniform T
    the events are binned again into T frames (the test split, and with per-config calibration
    the calibration batches), so any T can
    be measured, as the paper runs a T=10 model up to T~200; False feeds the frames binned at
    the run's data T and lets the model's input TTM resample them. Per-stage configs always
    see the frames at the data T (the input is pinned there).
    """
    model, spec = _load(run_dir, device)
    explicit = list(t_values) if t_values else None
    for t in explicit or []:
        check_positive_int(t, "T")
    configs = [_checked_config(model, cfg) for cfg in configs]  # before any sweep runs
    calib = calib_batches if calib_batches is not None else spec.calib_batches
    check_choice(calibration, "calibration", CALIBRATIONS)
    if rebin is None:
        rebin = loaders is None and dataset_info(spec.dataset).input_kind == "frames"
    if rebin and loaders is not None:
        raise InputError("rebin=True builds the loaders at each T from the run's spec; do not pass loaders")
    _check_eval_memory(model, spec, Path(run_dir), explicit, configs, rebin, calibration, loaders is None)
    t_values = explicit or list(range(1, spec.t_max + 1))
    train_loader, test_loader = loaders if loaders is not None else build_loaders(spec)
    train_loader = fixed_calibration_loader(train_loader, calib, spec.seed)
    if calibration == "t_max":
        calibrate_bn(model, train_loader, spec.t_max, calib)
    options = dict(calib_batches=calib, calibrate=calibration == "per_config")
    if rebin:
        sweep = rebinned_sweep(model, spec, t_values, (train_loader, test_loader), calibration, calib, progress)
    else:
        sweep = sweep_uniform(model, test_loader, t_values, calib_loader=train_loader, progress=progress, **options)
    rows = (
        sweep_configs(model, test_loader, configs, calib_loader=train_loader, progress=progress, **options)
        if configs
        else []
    )
    return {
        "uniform": results_from_sweep(sweep),
        "configs": rows,
        "method": spec.method,
        "calibration": calibration,
        "rebinned": bool(rebin),
        "data_t": spec.frames_t,
    }


def rebinned_sweep(
    model,
    spec: RunSpec,
    t_values: Sequence[int],
    loaders: tuple,
    calibration: str = "per_config",
    calib_batches: int | None = None,
    progress: bool = False,
) -> dict[int, float]:
    """``{T: accuracy}`` at uniform T with the events binned again into T frames at each T.

    ``loaders``: the run's ``(calibration loader, test loader)`` at its data T, used at that
    T. ``calibration="per_config"``: BN re-estimated at each T on training frames binned at
    T; otherwise the model's statistics stay as they are and only the test split is binned
    again.
    """
    check_choice(calibration, "calibration", CALIBRATIONS)
    calib = spec.calib_batches if calib_batches is None else calib_batches
    per_t = calibration == "per_config"
    sweep: dict[int, float] = {}
    for t in progress_bar(t_values, desc="T sweep (re-binned)", enabled=progress, leave=False):
        if t == spec.frames_t:
            calib_t, test_t = loaders
        elif per_t:  # calibration data at T too
            train_t, test_t = build_loaders(dataclasses.replace(spec, data_t=t))
            calib_t = fixed_calibration_loader(train_t, calib, spec.seed)
        else:  # the statistics are fixed: only the test split is binned again
            test_set = load_frames(spec.dataset, "test", t, spec.data_root)
            calib_t, test_t = None, DataLoader(test_set, batch_size=spec.batch_size)
        sweep.update(
            sweep_uniform(
                model, test_t, [t], calib_loader=calib_t, calib_batches=calib, calibrate=per_t, progress=False
            )
        )
    return sweep


def _check_eval_memory(
    model, spec: RunSpec, run_dir: Path, t_values, configs, rebin: bool, calibration: str, own_loaders: bool
) -> None:
    """Refuse, before any loader or sweep, an evaluation whose steps would not fit in memory."""
    source = run_dir / CONFIG_FILE
    requests = []
    if own_loaders:  # the run's own loaders bin the frames at its data T
        requests.append((f"data_t {spec.frames_t} of {source}", (1,), spec.frames_t))
    if calibration == "t_max":
        requests.append((f"t_max {spec.t_max} of {source}", (spec.t_max,), spec.frames_t))
    if t_values is None:
        t_values = [spec.t_max]
        label = "--t {t} (the default: 1..t_max of the run)"
    else:
        label = "--t {t}"
    requests += [(label.format(t=t), (t,), t if rebin else spec.frames_t) for t in sorted(set(t_values))[::-1]]
    requests += [("--config " + ",".join(map(str, c)), c, spec.frames_t) for c in configs]
    _check_requests(model, spec, source, requests)


def _run_memory(model, spec: RunSpec, run_dir, option: str, largest_t: int) -> None:
    """Refuse a search / early exit whose largest T (``option``) or the run's data T does not fit."""
    source = Path(run_dir) / CONFIG_FILE
    requests = [(f"data_t {spec.frames_t} of {source}", (1,), spec.frames_t), (option, (largest_t,), spec.frames_t)]
    _check_requests(model, spec, source, requests)


def _check_requests(model, spec: RunSpec, source: Path, requests) -> None:
    """check_memory of ``requests`` at the run's batch size, the batch named as the run's own."""
    check_memory(
        footprint_of(model, dataset_info(spec.dataset).in_shape),
        requests,
        spec.batch_size,
        device=spec.device,
        batch_option=f"batch_size {{batch}} of {source}",
    )


def _checked_config(model, cfg) -> tuple[int, ...]:
    try:
        return model.normalize_time_config(cfg)
    except ConfigError as exc:
        text = ",".join(map(str, cfg)) if isinstance(cfg, (list, tuple)) else repr(cfg)
        raise ConfigError(f"--config {text} does not fit this run's {model.num_stages}-stage model: {exc}") from None


def search_run(
    run_dir,
    t_min: int | None = None,
    t_max: int | None = None,
    strategy: str = "auto",
    max_evals: int = 128,
    cost: str = "synops",
    split: str = "half",
    budget: float = 0.5,
    calib_batches: int | None = None,
    max_batches: int | None = None,
    device: str = "cpu",
    seed: int = 0,
    progress: bool = True,
    loaders=None,
) -> dict:
    """Search the TimeConfigs of a saved run (``flexsnn search``); defaults from its run spec.

    ``split="half"``: search on the even test samples, report the chosen config and uniform
    ``t_max`` on the odd ones; ``"test"``: search on the whole test split (optimistic). The
    chosen config is the most accurate front config costing at most ``budget`` times uniform
    ``t_max``. Returns ``{"search": SearchResult, "chosen": ConfigResult | None,
    "report": {...}, ...}``.
    """
    check_choice(split, "split", SPLITS)
    if isinstance(budget, bool) or not isinstance(budget, (int, float)) or not 0 < budget <= 1:
        raise InputError(f"budget must be a fraction in (0, 1] of uniform t_max's cost, got {budget!r}")
    model, spec = _load(run_dir, device)
    t_min = spec.t_min if t_min is None else check_positive_int(t_min, "t_min")
    t_max = spec.t_max if t_max is None else check_positive_int(t_max, "t_max")
    calib = spec.calib_batches if calib_batches is None else check_positive_int(calib_batches, "calib_batches")
    _run_memory(model, spec, run_dir, f"--t-max {t_max}", t_max)
    train_loader, test_loader = loaders if loaders is not None else build_loaders(spec)
    train_loader = fixed_calibration_loader(train_loader, calib, spec.seed)
    val_loader, report_loader = holdout_split(test_loader) if split == "half" else (test_loader, None)
    result = search_configs(
        model, val_loader, t_min, t_max, train_loader, calib, strategy, max_evals, cost, seed, max_batches, progress
    )
    chosen = result.best_within(budget)
    report = {}
    if report_loader is not None:
        has_bn = bool(batchnorm_layers(model))
        for name, r in (("reference", result.reference), ("chosen", chosen)):
            if r is None:
                continue
            if has_bn:
                calibrate_bn(model, train_loader, r.config, calib)
            acc, counts = accuracy_and_ops(model, report_loader, r.config)
            report[name] = {"config": list(r.config), "accuracy": acc, "synops": counts.synops}
    return {
        "search": result,
        "chosen": chosen,
        "budget": budget,
        "split": split,
        "report": report,
        "method": spec.method,
        "model": spec.model,
    }


def early_exit_run(
    run_dir,
    time_config=None,
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
    calib_batches: int | None = None,
    max_batches: int | None = None,
    device: str = "cpu",
    loaders=None,
    rebinned: bool = False,
) -> EarlyExitResult:
    """:func:`flexsnn.evaluate.early_exit_sweep` on a saved run's test split (``flexsnn early-exit``).

    ``time_config`` defaults to uniform ``t_max`` of the run; BN is calibrated there on the
    training split. ``rebinned=True`` also measures uniform T = 1..T_G the way ``flexsnn
    evaluate`` does into ``result.rebinned``: on event data the events binned again into T
    frames at each T (:func:`rebinned_sweep`), BN calibrated per T; static images are
    encoded at each T anyway.
    """
    model, spec = _load(run_dir, device)
    calib = spec.calib_batches if calib_batches is None else check_positive_int(calib_batches, "calib_batches")
    cfg = spec.t_max if time_config is None else time_config
    largest = cfg if isinstance(cfg, int) else max(cfg) if isinstance(cfg, (list, tuple)) and cfg else None
    if isinstance(largest, int) and not isinstance(largest, bool):
        _run_memory(model, spec, run_dir, f"--config {largest} (its largest T)", largest)
    train_loader, test_loader = loaders if loaders is not None else build_loaders(spec)
    train_loader = fixed_calibration_loader(train_loader, calib, spec.seed)
    result = early_exit_sweep(model, test_loader, cfg, thresholds, train_loader, calib, max_batches)
    if rebinned:
        ts = range(1, result.time_config[-1] + 1)
        if dataset_info(spec.dataset).input_kind == "frames":
            sweep = rebinned_sweep(model, spec, ts, (train_loader, test_loader), "per_config", calib)
        else:
            sweep = sweep_uniform(model, test_loader, ts, train_loader, calib, progress=False)
        result.rebinned = results_from_sweep(sweep)
    return result
