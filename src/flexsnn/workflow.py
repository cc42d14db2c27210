"""Whole runs: train a model into a run folder, evaluate a run folder over T and configs.

The CLI verbs are thin shells around these functions, so a notebook can do exactly what
``flexsnn train`` / ``flexsnn evaluate`` do.
"""
from __future__ import annotations

import dataclasses
import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch

from flexsnn.errors import CheckpointError, ConfigError, InputError, check_choice, check_positive_int
from flexsnn.io import write_json
from flexsnn.train import (
    TrainOptions,
    calibrate_bn,
    fit,
    load_model,
    make_sampler,
    save_model,
)
from flexsnn.train.bn_calibration import fixed_calibration_loader
from flexsnn.train.checkpoint import CHECKPOINT_FILE, CONFIG_FILE, MODEL_FILE

log = logging.getLogger("flexsnn")

CALIBRATIONS = ("per_config", "t_max", "none")


@dataclass
class RunSpec:
    """Everything a training run needs (JSON/YAML-able; stored in the run's config.json)."""

    dataset: str = "digits_dvs"
    model: str = "digits_conv"
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    method: str = "mtt"  # sdt | nmt | mtt
    t_min: int = 1
    t_max: int = 6
    sample_num: int = 3
    group_block_num: int = 1
    first_stage_t: int | None = None
    data_t: int | None = None  # frames are binned at this T (default t_max) and resampled by the first TTM
    batch_size: int = 64
    epochs: int = 10
    optimizer: str = "sgd"
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: str = "cosine"
    seed: int = 1000
    device: str = "cpu"
    amp: str = "none"
    calib_batches: int = 10
    num_workers: int = 0
    data_root: str | None = None  # real datasets: the folder with their files (read only); digits_dvs: its cache
    augment: bool = False  # event datasets: random flips / rolls of training batches (static ones always augment)
    autoaugment: bool = False  # cifar10 / cifar100: add AutoAugment to the training pipeline
    checkpoint_every_steps: int = 0
    max_steps_per_epoch: int = 0  # 0: whole epochs; >0 cuts epochs short (smoke runs)
    sync_bn: bool = False  # DDP on CUDA: SyncBatchNorm while training (default: per-rank BN stats)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "RunSpec":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown run option(s) {unknown}; known options: {sorted(known)}")
        return cls(**data)

    def train_options(self) -> TrainOptions:
        return TrainOptions(
            epochs=self.epochs, optimizer=self.optimizer, lr=self.lr, momentum=self.momentum,
            weight_decay=self.weight_decay, schedule=self.schedule, seed=self.seed,
            device=self.device, amp=self.amp, checkpoint_every_steps=self.checkpoint_every_steps,
            max_steps_per_epoch=self.max_steps_per_epoch,
        )

    @property
    def frames_t(self) -> int:
        return self.data_t if self.data_t is not None else self.t_max


def resolve_device(device: str) -> str:
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise InputError(f"device {device!r} requested but CUDA is not available; use --device cpu")
    if not (device == "cpu" or device.startswith("cuda")):
        raise InputError(f"device must be 'cpu' or 'cuda[:N]', got {device!r}")
    return device


def with_dataset_defaults(spec: RunSpec) -> RunSpec:
    """``spec`` with the dataset's class count / input shape filled into the model kwargs
    the model accepts; kwargs the user gave win."""
    import inspect

    from flexsnn.data.loaders import dataset_model_kwargs
    from flexsnn.models import MODELS

    if spec.model not in MODELS:
        return spec  # build_model raises the clear unknown-model error later
    accepted = inspect.signature(MODELS[spec.model]).parameters
    defaults = dataset_model_kwargs(spec.dataset, accepted)
    return dataclasses.replace(spec, model_kwargs={**defaults, **spec.model_kwargs})


def build_loaders(spec: RunSpec, shuffle_seed: int | None = None):
    """``(train_loader, test_loader)`` of ``spec.dataset``; first checks that ``spec.model``
    takes what the dataset yields (input kind, shape, classes), before any data is read."""
    from flexsnn.data.loaders import check_model_input, make_loaders
    from flexsnn.models import build_model

    try:
        with torch.device("meta"):  # only the model's input kind / shape / head are read
            net = build_model(spec.model, **spec.model_kwargs)
    except (RuntimeError, NotImplementedError):  # a model that cannot be built without data
        net = None
    if net is not None:
        check_model_input(spec.dataset, net)
    return make_loaders(
        spec.dataset, n_time_bins=spec.frames_t, batch_size=spec.batch_size,
        seed=spec.seed if shuffle_seed is None else shuffle_seed, root=spec.data_root,
        num_workers=spec.num_workers, augment=True if spec.augment else None, autoaugment=spec.autoaugment,
    )


def prepare_run_dir(run_dir: str | os.PathLike, resume: bool, overwrite: bool = False) -> Path:
    """Refuse to write over an existing run unless resuming (or explicitly overwriting)."""
    run_dir = Path(run_dir)
    existing = [p for p in (CONFIG_FILE, MODEL_FILE, CHECKPOINT_FILE) if (run_dir / p).exists()]
    if resume:
        if not (run_dir / CHECKPOINT_FILE).exists():
            raise CheckpointError(f"--resume given but {run_dir / CHECKPOINT_FILE} does not exist")
    elif existing and not overwrite:
        raise CheckpointError(
            f"run folder {run_dir} already holds a run ({', '.join(existing)}); "
            "pass --resume to continue it or choose another --out"
        )
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir


def train_run(
    spec: RunSpec,
    run_dir: str | os.PathLike,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    loaders=None,
) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Train per ``spec`` into ``run_dir``; BN is calibrated at uniform t_max before saving.

    Under torchrun (process group initialised, see flexsnn.train.distributed) the model is
    wrapped in DDP, each rank loads its shard of every global batch of ``spec.batch_size``,
    BN calibration is synced over ranks, and only rank 0 writes files. Per-epoch metrics go
    to metrics.json / metrics.csv / train.log (and TensorBoard when installed).
    """
    from flexsnn.models import build_model
    from flexsnn.runtime import use_channels_last
    from flexsnn.train.distributed import barrier, calibrate_bn_synced, current_info, distributed_loader, wrap_ddp
    from flexsnn.train.logging import MetricsLogger

    resolve_device(spec.device)
    spec = with_dataset_defaults(spec)
    info = current_info(spec.device)
    sampler = make_sampler(spec.method, spec.t_max, spec.t_min, spec.sample_num,
                           spec.group_block_num, spec.first_stage_t)
    # Data and model mismatches surface before the run folder is created.
    train_loader, test_loader = loaders if loaders is not None else build_loaders(spec)
    run_dir = prepare_run_dir(run_dir, resume, overwrite)
    barrier()  # every rank has checked the folder before rank 0 writes into it
    torch.manual_seed(spec.seed)  # model initialisation is part of the run's seed
    model = build_model(spec.model, **spec.model_kwargs)
    if info.distributed:
        train_loader = distributed_loader(train_loader, info, spec.batch_size, spec.seed)
    config = {"run": asdict(spec), "sampler": sampler.describe()}
    if info.is_main:
        write_json(run_dir / "run_spec.json", config)
    opts = spec.train_options()
    opts.device = info.device
    if opts.channels_last:
        use_channels_last(model)  # before DDP wraps it: DDP's gradient buckets follow the layout
    net = wrap_ddp(model, info, spec.sync_bn)
    model = getattr(net, "module", net)
    with MetricsLogger(run_dir, enabled=info.is_main, resume=resume, epochs=spec.epochs) as metrics:
        history = fit(net, train_loader, sampler, opts, run_dir=run_dir, resume=resume,
                      progress=progress, on_epoch_end=metrics.log_epoch)
    calibrate_bn_synced(model, train_loader, spec.t_max, spec.calib_batches)
    config["history"] = history
    if info.is_main:
        save_model(run_dir, model, config)
        write_json(run_dir / "history.json", history)
    barrier()
    return model, config


def evaluate_run(
    run_dir: str | os.PathLike,
    t_values: Sequence[int] | None = None,
    configs: Sequence[Sequence[int]] = (),
    device: str = "cpu",
    calib_batches: int | None = None,
    progress: bool = True,
    loaders=None,
    calibration: str = "per_config",
) -> dict[str, Any]:
    """Accuracy of a saved run at each uniform T (default 1..t_max) and at per-stage configs.

    ``calibration``: "per_config" re-estimates BN statistics at every evaluated config (the
    MTT recipe), "t_max" once at uniform t_max for all (the paper authors' protocol), "none"
    keeps the run's saved statistics (those of its training T: how plain SDT is used).
    """
    from flexsnn.evaluate import sweep_configs, sweep_uniform
    from flexsnn.evaluate.report import results_from_sweep

    resolve_device(device)
    model, config = load_model(run_dir, device=device)
    spec = RunSpec.from_dict(config["run"])
    spec.device = device
    t_values = list(t_values) if t_values else list(range(1, spec.t_max + 1))
    for t in t_values:
        check_positive_int(t, "T")
    calib = calib_batches if calib_batches is not None else spec.calib_batches
    train_loader, test_loader = loaders if loaders is not None else build_loaders(spec)
    train_loader = fixed_calibration_loader(train_loader, calib, spec.seed)
    check_choice(calibration, "calibration", CALIBRATIONS)
    if calibration == "t_max":
        calibrate_bn(model, train_loader, spec.t_max, calib)
    options = dict(calib_loader=train_loader, calib_batches=calib, progress=progress,
                   calibrate=calibration == "per_config")
    sweep = sweep_uniform(model, test_loader, t_values, **options)
    rows = sweep_configs(model, test_loader, configs, **options) if configs else []
    return {"uniform": results_from_sweep(sweep), "configs": rows, "method": spec.method,
            "calibration": calibration}
