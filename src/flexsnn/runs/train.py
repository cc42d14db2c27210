"""Train a model per a RunSpec into a run folder (what ``flexsnn train`` runs)."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

import torch

from flexsnn.data.loaders import dataset_info
from flexsnn.errors import FlexSNNError
from flexsnn.io import write_json
from flexsnn.models import build_model
from flexsnn.runs.folder import check_run_dir, claim_run_dir
from flexsnn.runs.memory import check_memory, check_sample_num, model_footprint
from flexsnn.runs.spec import RunSpec, build_loaders, resolve_device, with_dataset_defaults
from flexsnn.runtime import use_channels_last
from flexsnn.train import MetricsLogger, fit, make_sampler, save_model
from flexsnn.train.distributed import barrier, calibrate_bn_synced, current_info, distributed_loader, wrap_ddp
from flexsnn.train.loop import check_resume

__all__ = ["check_training_memory", "train_run"]


def train_run(
    spec: RunSpec,
    run_dir: str | os.PathLike,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    loaders=None,
    on_start: Callable[[], None] | None = None,
) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Train per ``spec`` into ``run_dir``; BN is calibrated at uniform t_max before saving.

    Under torchrun (process group initialised, see flexsnn.train.distributed) the model is
    wrapped in DDP, each rank loads its shard of every global batch of ``spec.batch_size``,
    BN calibration is synced over ranks, and only rank 0 writes files. Per-epoch metrics go
    to metrics.json / metrics.csv / train.log (and TensorBoard when installed).

    The folder is locked while the run writes into it (a second writer gets
    RunFolderBusyError); a resume is checked against the checkpoint before anything is
    written, so a refused one changes nothing. ``on_start()`` is called on every rank once
    every check has passed and the folder is claimed, just before training starts (the CLI
    prints its opening line there, so a refused request prints only its error).
    """
    resolve_device(spec.device)
    spec = with_dataset_defaults(spec)
    info = current_info(spec.device)
    check_run_dir(run_dir, resume, overwrite, what="flexsnn train", enabled=info.is_main)  # before any work
    sampler = make_sampler(
        spec.method, spec.t_max, spec.t_min, spec.sample_num, spec.group_block_num, spec.first_stage_t
    )
    check_training_memory(spec)  # before the data is binned at data_t or the model is built
    # Data and model mismatches surface before the run folder is created.
    train_loader, test_loader = loaders if loaders is not None else build_loaders(spec)
    opts = spec.train_options()
    opts.device = info.device
    with claim_run_dir(run_dir, resume, overwrite, what="flexsnn train", enabled=info.is_main) as run_dir:
        if resume:  # a refused resume leaves the run folder as it was
            check_resume(run_dir, opts, sampler)
        barrier()  # every rank has checked the folder before rank 0 writes into it
        if on_start is not None:
            on_start()
        torch.manual_seed(spec.seed)  # model initialisation is part of the run's seed
        model = build_model(spec.model, **spec.model_kwargs)
        if info.distributed:
            train_loader = distributed_loader(train_loader, info, spec.batch_size, spec.seed)
        config = {"run": asdict(spec), "sampler": sampler.describe()}
        if info.is_main:
            write_json(run_dir / "run_spec.json", config)
        if opts.channels_last:
            use_channels_last(model)  # before DDP wraps it: DDP's gradient buckets follow the layout
        net = wrap_ddp(model, info, spec.sync_bn)
        model = getattr(net, "module", net)
        with MetricsLogger(run_dir, enabled=info.is_main, resume=resume, epochs=spec.epochs) as metrics:
            history = fit(
                net,
                train_loader,
                sampler,
                opts,
                run_dir=run_dir,
                resume=resume,
                progress=progress,
                on_epoch_end=metrics.log_epoch,
            )
        calibrate_bn_synced(model, train_loader, spec.t_max, spec.calib_batches)
        config["history"] = history
        if info.is_main:
            save_model(run_dir, model, config)
            write_json(run_dir / "history.json", history)
        barrier()
    return model, config


def _data_shape(dataset: str):
    try:
        return dataset_info(dataset).in_shape
    except FlexSNNError:  # an unknown dataset is named where the loaders are built
        return None


def check_training_memory(spec: RunSpec) -> None:
    """Refuse (ResourceError, one line naming the option) a spec whose training step would not fit
    in memory, or whose ``sample_num`` is above the cap (flexsnn.runs.memory)."""
    spec = with_dataset_defaults(spec)
    if spec.method == "mtt":
        check_sample_num(spec.sample_num)
    option = f"--t-max {spec.t_max}"
    if spec.first_stage_t is not None and spec.first_stage_t > spec.t_max:
        option = f"--first-stage-t {spec.first_stage_t}"
    if spec.data_t is not None and spec.data_t > max(spec.t_max, spec.first_stage_t or 0):
        option = f"--data-t {spec.data_t}"
    footprint = model_footprint(spec.model, spec.model_kwargs, _data_shape(spec.dataset))
    if footprint is None:
        return
    cfg = [spec.t_max]
    if spec.first_stage_t is not None and footprint.stage_numels:
        cfg = [spec.first_stage_t] + [spec.t_max] * (len(footprint.stage_numels) - 1)
    # under torchrun each process holds its share of the global batch
    world = os.environ.get("WORLD_SIZE", "1")
    world_size = int(world) if world.isascii() and world.isdigit() and int(world) > 0 else 1
    check_memory(
        footprint,
        [(option, cfg, spec.frames_t)],
        -(-spec.batch_size // world_size),
        training=True,
        optimizer=spec.optimizer,
        device=spec.device,
    )
