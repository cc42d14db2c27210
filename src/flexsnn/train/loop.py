"""The training loop: one optimizer step per batch over the sampler's TimeConfigs.

An MTT iteration forwards the same batch once per sampled TimeConfig, backpropagates each
loss right away (so only one configuration's activations are alive at a time: peak memory
is that of a single pass) and steps the optimizer once on the summed gradients. Under
DistributedDataParallel only the last backward all-reduces (``no_sync`` for the others).
"""
from __future__ import annotations

import contextlib
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from flexsnn.errors import CheckpointError, InputError, check_choice, check_positive_int
from flexsnn.train.bn_calibration import model_input
from flexsnn.train.checkpoint import CHECKPOINT_FILE, load_training_state, save_training_state
from flexsnn.train.samplers import Sampler, TimeConfig


def time_averaged_loss(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the output averaged over time (``out`` is ``[T, B, classes]``)."""
    return F.cross_entropy(out.mean(0), y)


def train_step(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    configs: Sequence[TimeConfig],
    optimizer: torch.optim.Optimizer,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = time_averaged_loss,
    autocast_dtype: torch.dtype | None = None,
    scaler: torch.amp.GradScaler | None = None,
) -> float:
    """One iteration: a forward/backward per config (gradients add up), one optimizer step.

    ``x`` is already in the model's layout. Returns the mean loss over the configs.
    """
    if not configs:
        raise InputError("configs is empty; expected at least one TimeConfig per iteration")
    optimizer.zero_grad(set_to_none=True)
    total = 0.0
    last = len(configs) - 1
    for k, cfg in enumerate(configs):
        # Only the last backward of an iteration may all-reduce under DDP.
        sync = model.no_sync() if (k < last and hasattr(model, "no_sync")) else contextlib.nullcontext()
        with sync:
            with _autocast(x.device, autocast_dtype):
                loss = loss_fn(model(x, time_config=cfg), y)
            (scaler.scale(loss) if scaler is not None else loss).backward()
        total += float(loss.detach())
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    return total / len(configs)


def _autocast(device: torch.device, dtype: torch.dtype | None):
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


@dataclass
class TrainOptions:
    """Optimizer, schedule and bookkeeping options of :func:`fit` (JSON-able)."""

    epochs: int = 10
    optimizer: str = "sgd"  # sgd | adamw
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: str = "cosine"  # cosine | constant
    seed: int = 1000
    device: str = "cpu"
    amp: str = "none"  # none | bf16 | fp16 (fp16 uses a GradScaler; CUDA only)
    checkpoint_every_steps: int = 0  # 0: only at the end of each epoch

    def __post_init__(self) -> None:
        check_positive_int(self.epochs, "epochs")
        check_choice(self.optimizer, "optimizer", ("sgd", "adamw"))
        check_choice(self.schedule, "schedule", ("cosine", "constant"))
        check_choice(self.amp, "amp", ("none", "bf16", "fp16"))
        if not self.lr > 0:
            raise InputError(f"lr must be a positive number, got {self.lr!r}")


def build_optimizer(model: nn.Module, opts: TrainOptions) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if opts.optimizer == "sgd":
        return torch.optim.SGD(params, lr=opts.lr, momentum=opts.momentum, weight_decay=opts.weight_decay)
    return torch.optim.AdamW(params, lr=opts.lr, weight_decay=opts.weight_decay)


def build_scheduler(optimizer: torch.optim.Optimizer, opts: TrainOptions):
    if opts.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=opts.epochs)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda epoch: 1.0)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@dataclass
class TrainState:
    """Where a run is: restored from the checkpoint on resume."""

    epoch: int = 0  # completed epochs
    step_in_epoch: int = 0  # completed steps of the current epoch
    global_step: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)


def fit(
    model: nn.Module,
    train_loader: Iterable,
    sampler: Sampler,
    opts: TrainOptions,
    run_dir: str | Path | None = None,
    resume: bool = False,
    progress: bool = True,
    on_epoch_end: Callable[[int, dict[str, Any]], None] | None = None,
    distributed_rank: int = 0,
) -> list[dict[str, Any]]:
    """Train ``model`` with ``sampler``'s TimeConfigs; return per-epoch history rows.

    With ``run_dir`` a checkpoint is written atomically at the end of every epoch (and every
    ``opts.checkpoint_every_steps`` steps); ``resume=True`` continues from it with optimizer,
    scheduler and RNG states restored, so the result equals an uninterrupted run.
    """
    device = torch.device(opts.device)
    seed_everything(opts.seed)
    config_rng = random.Random(opts.seed)
    core = getattr(model, "module", model)  # the StagedNet inside a DDP wrapper
    num_stages = core.num_stages
    optimizer = build_optimizer(model, opts)
    scheduler = build_scheduler(optimizer, opts)
    autocast_dtype = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}[opts.amp]
    scaler = torch.amp.GradScaler(device.type) if opts.amp == "fp16" else None
    state = TrainState()
    generator = getattr(train_loader, "generator", None)
    if generator is None and hasattr(train_loader, "sampler"):
        generator = getattr(train_loader.sampler, "generator", None)

    if resume:
        if run_dir is None or not (Path(run_dir) / CHECKPOINT_FILE).is_file():
            raise CheckpointError(f"cannot resume: no {CHECKPOINT_FILE} in run folder {run_dir}")
        meta, extra = load_training_state(run_dir, core, optimizer)
        scheduler.load_state_dict(meta["scheduler"])
        state = TrainState(**meta["train_state"])
        config_rng.setstate(_tuplify(meta["config_rng"]))
        random.setstate(_tuplify(meta["python_rng"]))
        torch.set_rng_state(extra["torch_rng"])
        np.random.set_state(tuple(meta["numpy_rng"][:1]) + (np.array(meta["numpy_rng"][1], dtype=np.uint32),) + tuple(meta["numpy_rng"][2:]))
        if generator is not None and "loader_rng" in extra:
            generator.set_state(extra["loader_rng"])
        epoch_loader_rng = extra.get("epoch_loader_rng")
    else:
        epoch_loader_rng = None

    def checkpoint(loader_state: torch.Tensor | None) -> None:
        if run_dir is None or distributed_rank != 0:
            return
        np_state = np.random.get_state()
        extra_tensors = {"torch_rng": torch.get_rng_state()}
        if loader_state is not None:
            extra_tensors["epoch_loader_rng"] = loader_state
        if generator is not None:
            extra_tensors["loader_rng"] = generator.get_state()
        meta = {
            "train_state": asdict(state),
            "scheduler": scheduler.state_dict(),
            "config_rng": _listify(config_rng.getstate()),
            "python_rng": _listify(random.getstate()),
            "numpy_rng": [np_state[0], np_state[1].tolist(), *np_state[2:]],
            "options": asdict(opts),
            "sampler": sampler.describe(),
        }
        save_training_state(run_dir, core, optimizer, extra_tensors, meta)

    model.to(device)
    for epoch in range(state.epoch, opts.epochs):
        if hasattr(getattr(train_loader, "sampler", None), "set_epoch"):
            train_loader.sampler.set_epoch(epoch)
        # The shuffling order of an epoch is fixed by the loader RNG at the epoch's start; a
        # mid-epoch resume rewinds it to that point and skips the batches already done.
        if epoch_loader_rng is not None and generator is not None:
            generator.set_state(epoch_loader_rng)
        start_state = generator.get_state() if generator is not None else None
        epoch_loader_rng = None
        model.train()
        t0 = time.perf_counter()
        losses = []
        skip = state.step_in_epoch
        bar = tqdm(train_loader, desc=f"epoch {epoch + 1}/{opts.epochs} [{sampler.describe()['method']}]",
                   disable=not progress or distributed_rank != 0, leave=False)
        for i, (x, y) in enumerate(bar):
            if i < skip:
                continue
            x, y = model_input(x.to(device, non_blocking=True), core), y.to(device, non_blocking=True)
            configs = sampler.sample(config_rng, num_stages)
            loss = train_step(model, x, y, configs, optimizer, autocast_dtype=autocast_dtype, scaler=scaler)
            losses.append(loss)
            state.step_in_epoch = i + 1
            state.global_step += 1
            bar.set_postfix(loss=f"{loss:.3f}")
            if opts.checkpoint_every_steps and state.global_step % opts.checkpoint_every_steps == 0:
                checkpoint(start_state)
        scheduler.step()
        row = {
            "epoch": epoch + 1,
            "train_loss": float(np.mean(losses)) if losses else float("nan"),
            "lr": optimizer.param_groups[0]["lr"],
            "seconds": time.perf_counter() - t0,
        }
        state.history.append(row)
        state.epoch = epoch + 1
        state.step_in_epoch = 0
        if on_epoch_end is not None:
            on_epoch_end(epoch + 1, row)
        checkpoint(None)
    return state.history


def _listify(obj):
    if isinstance(obj, tuple):
        return [_listify(o) for o in obj]
    return obj


def _tuplify(obj):
    if isinstance(obj, list):
        return tuple(_tuplify(o) for o in obj)
    return obj
