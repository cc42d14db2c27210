"""The training loop: one optimizer step per batch over the sampler's TimeConfigs.

An MTT iteration forwards the same batch once per sampled TimeConfig, backpropagates each
loss right away (so only one configuration's activations are alive at a time: peak memory
is that of a single pass) and steps the optimizer once on the summed gradients. Under
DistributedDataParallel only the last backward all-reduces (``no_sync`` for the others), and
every rank draws the same TimeConfigs from a generator seeded alike, so no rank waits for a
slower configuration.

Crash safety: with a run folder, :func:`fit` writes a checkpoint atomically at the end of
every epoch and every ``checkpoint_every_steps`` steps. It holds the model, optimizer,
scheduler, GradScaler, the TimeConfig generator and every RNG (python, numpy, torch, CUDA,
the loader's shuffling generator) plus the RNG state at the start of the epoch, so that a
resumed run replays the epoch's shuffling order, skips the batches already done, and then
continues bit-for-bit like the uninterrupted run.
"""

from __future__ import annotations

import collections
import contextlib
import math
import numbers
import random
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from flexsnn.data.encoding import model_input
from flexsnn.errors import CheckpointError, ConfigError, FlexSNNError, InputError, check_choice, check_positive_int
from flexsnn.io import Dict, Float, Int, ListOf, MapOf, Nullable
from flexsnn.models.resnet import BasicBlock
from flexsnn.multistep import TimeFirstSequential
from flexsnn.neurons import SpikingNeuron
from flexsnn.progress import progress_bar
from flexsnn.runtime import use_channels_last
from flexsnn.staged import STEM_LAYERS, SharedBatchStatistics, StagedNet, has_forward_hooks, without_global_hooks
from flexsnn.train import distributed as dist_utils
from flexsnn.train.checkpoint import CHECKPOINT_FILE, load_training_state, read_training_metadata, save_training_state
from flexsnn.train.samplers import Sampler, TimeConfig, sampler_from_dict


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
    stats: dict[str, float] | None = None,
    share_stem: bool = True,
    share_stages: bool = True,
) -> float:
    """One iteration: a forward/backward per config (gradients add up), one optimizer step.

    ``x`` is already in the model's layout. Returns the mean loss over the configs. With a
    ``stats`` dict, adds the number of correct time-averaged predictions (``"correct"``) and
    of predictions made (``"seen"``, batch size x configs) to it.

    ``share_stem``: on a static-input StagedNet the stem (stage 1's layers before its first
    neuron, identical at every step and in every config) runs once per iteration on ``[B,
    ...]``: one forward, one backward of the summed gradient, BatchNorm statistics updated
    once per config as the unshared forwards would (:meth:`StagedNet.run_stem`).

    ``share_stages``: configs that draw the same T for stages 1..k compute exactly the same
    output of those stages, so those stages run once for them: one forward (BatchNorm
    running statistics updated at each config's turn, as the unshared loop does), each
    config continues from that output, and one backward of their summed gradient. Only for
    stages whose every module is deterministic (:func:`shareable_stage`). Both sharings give
    the unshared gradients up to the order of floating-point additions; neither applies
    under DistributedDataParallel or while forward hooks watch the shared layers.
    """
    if not configs:
        raise InputError("configs is empty; expected at least one TimeConfig per iteration")
    optimizer.zero_grad(set_to_none=True)
    losses: list[float] = []

    def finish(out: torch.Tensor) -> None:
        with _autocast(x.device, autocast_dtype):
            loss = loss_fn(out, y)
        (scaler.scale(loss) if scaler is not None else loss).backward()
        losses.append(float(loss.detach()))
        if stats is not None:
            stats["correct"] = stats.get("correct", 0) + int((out.detach().float().mean(0).argmax(-1) == y).sum())
            stats["seen"] = stats.get("seen", 0) + int(y.numel())

    stem = stem_input = None
    if share_stem and _can_share_stem(model):
        with _autocast(x.device, autocast_dtype):
            stem = model.run_stem(x, [cfg[0] for cfg in configs])
        # a leaf the configs' backwards add their gradients into; the stem's backward runs once
        stem_input = stem.detach().requires_grad_(stem.requires_grad)
    if share_stages and len(configs) > 1 and _can_share_stages(model):
        cfgs = [model.normalize_time_config(cfg) for cfg in configs]
        shareable = [shareable_stage(stage) for stage in model.stages]
        _SharedPrefix(model, x, cfgs, shareable, stem_input, finish, lambda: _autocast(x.device, autocast_dtype)).run()
    else:
        last = len(configs) - 1
        for k, cfg in enumerate(configs):
            # Only the last backward of an iteration may all-reduce under DDP.
            sync = model.no_sync() if (k < last and hasattr(model, "no_sync")) else contextlib.nullcontext()
            with sync:
                with _autocast(x.device, autocast_dtype):
                    out = (
                        model(x, time_config=cfg) if stem is None else model(x, time_config=cfg, stem_output=stem_input)
                    )
                finish(out)
    if stem is not None and stem.requires_grad and stem_input.grad is not None:
        stem.backward(stem_input.grad)
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    return sum(losses) / len(configs)


@dataclass
class _SharedStage:
    """A stage run once for several configs: its output, the leaf they continue from, its
    BatchNorms' batch statistics, and how many of those configs are still to finish."""

    output: torch.Tensor
    leaf: torch.Tensor
    statistics: SharedBatchStatistics
    configs_left: int


class _SharedPrefix:
    """Runs a StagedNet's configs in their order so that those drawing the same ``T_1 .. T_k``
    share stages ``1 .. k`` (see :func:`train_step`).

    A shared stage runs when its first config needs it; its output is a leaf that each of
    its configs continues from, and once the last of them is done its backward runs on the
    summed gradient. Its BatchNorms' running statistics are updated at each config's turn
    (:class:`~flexsnn.staged.SharedBatchStatistics`), so every update, and every random
    number a later layer draws, comes in the order of the unshared loop.
    """

    def __init__(self, model, x, configs, shareable, stem_output, finish, autocast) -> None:
        self.model, self.x, self.configs, self.shareable = model, x, configs, shareable
        self.stem_output, self.finish, self.autocast = stem_output, finish, autocast
        self.sharing = collections.Counter(cfg[: d + 1] for cfg in configs for d in range(model.num_stages))

    def run(self) -> None:
        stages = self.model.num_stages
        live: dict[tuple[int, ...], _SharedStage] = {}  # by the T prefix its configs share
        for cfg in self.configs:
            h, done, used = None, 0, []
            while done < stages and self.shareable[done] and self.sharing[cfg[: done + 1]] > 1:
                key = cfg[: done + 1]
                if key not in live:
                    statistics = SharedBatchStatistics(self._layers_run(done))
                    with self.autocast(), statistics.capture():
                        output = self._forward(h, cfg, done, done + 1)
                    leaf = output.detach().requires_grad_(output.requires_grad)
                    live[key] = _SharedStage(output, leaf, statistics, self.sharing[key])
                live[key].statistics.update()
                h = live[key].leaf
                used.append(key)
                done += 1
            with self.autocast():
                out = self.model.run_head(self._forward(h, cfg, done, stages) if done < stages else h)
            self.finish(out)
            for key in reversed(used):  # the deepest first: its backward adds into its parent's leaf
                live[key].configs_left -= 1
                if live[key].configs_left == 0:
                    shared = live.pop(key)
                    if shared.leaf.grad is not None:
                        shared.output.backward(shared.leaf.grad)

    def _layers_run(self, stage: int):
        layers = self.model.stages[stage]
        if stage == 0 and self.stem_output is not None:
            return list(layers)[self.model.stem_length() :]  # the stem's statistics are run_stem's
        return layers

    def _forward(self, h, cfg, start: int, stop: int) -> torch.Tensor:
        """Stages ``start .. stop - 1`` of config ``cfg``; ``h`` is stage ``start - 1``'s output."""
        if start == 0:
            h, cfg = self.model.stage_input(self.x, cfg, self.stem_output)
        return self.model.run_stages(h, cfg, start, stop, after_stem=self.stem_output is not None)


def _can_share_stages(model: nn.Module) -> bool:
    """A StagedNet (not wrapped) whose own forward no hook watches: the shared path runs its
    pieces (:meth:`StagedNet.stage_input`, ``run_stages``, ``run_head``), not ``forward``."""
    return isinstance(model, StagedNet) and not has_forward_hooks(model) and without_global_hooks()


#: Module types whose forward depends on their input and parameters only (BatchNorm's
#: running statistics aside, which :class:`~flexsnn.staged.SharedBatchStatistics` updates
#: as the unshared forwards would): a stage made of them gives the same output however often it runs.
DETERMINISTIC_LAYERS: tuple[type[nn.Module], ...] = (*STEM_LAYERS, TimeFirstSequential, nn.Sequential, BasicBlock)


def shareable_stage(stage: nn.Module) -> bool:
    """Whether a stage's forward may run once for several configs: every module in it is a
    :data:`DETERMINISTIC_LAYERS` type (exact types) or a flexsnn neuron that neither records,
    streams nor keeps its membrane, and no module carries forward hooks."""
    for m in stage.modules():
        if has_forward_hooks(m):
            return False
        if isinstance(m, SpikingNeuron):
            if m.record or m.stateful or m.record_membrane:
                return False
        elif type(m) not in DETERMINISTIC_LAYERS:
            return False
    return True


def _can_share_stem(model: nn.Module) -> bool:
    """A static-input StagedNet (not wrapped) with a stem and no forward hooks on it."""
    if not isinstance(model, StagedNet) or model.stem_length() == 0:
        return False
    if not without_global_hooks():
        return False
    stem = list(model.stages[0])[: model.stem_length()]
    return not any(has_forward_hooks(m) for layer in stem for m in layer.modules())


def _autocast(device: torch.device, dtype: torch.dtype | None):
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


AMP_MODES = ("none", "auto", "bf16", "fp16")


def resolve_amp(amp: str, device: str | torch.device) -> str:
    """``"auto"`` means fp16 with a GradScaler on CUDA (the paper's mixed precision), none on CPU."""
    check_choice(amp, "amp", AMP_MODES)
    if amp == "auto":
        return "fp16" if torch.device(device).type == "cuda" else "none"
    return amp


@dataclass
class TrainOptions:
    """Optimizer, schedule and bookkeeping options of :func:`fit` (JSON-able)."""

    epochs: int = 10
    optimizer: str = "sgd"  # sgd | adamw
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: str = "cosine"  # cosine | constant
    schedule_epochs: int = 0  # cosine horizon in epochs; 0 = epochs (a longer one stops the lr part-way down)
    seed: int = 1000
    device: str = "cpu"
    amp: str = "none"  # none | auto (fp16 on CUDA, none on CPU) | bf16 | fp16 (GradScaler)
    checkpoint_every_steps: int = 0  # 0: only at the end of each epoch
    max_steps_per_epoch: int = 0  # 0: the whole loader; >0 cuts every epoch short (smoke runs)
    channels_last: bool = True  # conv weights (and so activations) channels_last: faster convs (flexsnn.runtime)

    def __post_init__(self) -> None:
        check_positive_int(self.epochs, "epochs")
        check_choice(self.optimizer, "optimizer", ("sgd", "adamw"))
        check_choice(self.schedule, "schedule", ("cosine", "constant"))
        check_choice(self.amp, "amp", AMP_MODES)
        _check_number(self.lr, "lr", "a finite number > 0", lambda v: v > 0)
        _check_number(self.momentum, "momentum", "a finite number in [0, 1)", lambda v: 0 <= v < 1)
        _check_number(self.weight_decay, "weight_decay", "a finite number >= 0", lambda v: v >= 0)
        if isinstance(self.seed, bool) or not isinstance(self.seed, numbers.Integral) or not 0 <= self.seed < 2**63:
            raise InputError(f"seed must be an integer in [0, 2**63), got {self.seed!r}")
        check_device(self.device)
        if not isinstance(self.channels_last, bool):
            raise InputError(f"channels_last must be True or False, got {self.channels_last!r}")
        if (
            isinstance(self.schedule_epochs, bool)
            or not isinstance(self.schedule_epochs, int)
            or self.schedule_epochs < 0
        ):
            raise InputError(
                f"schedule_epochs must be an integer >= 0 (0 = the run's epochs), got {self.schedule_epochs!r}"
            )
        for name in ("checkpoint_every_steps", "max_steps_per_epoch"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise InputError(f"{name} must be an integer >= 0 (0 = off), got {value!r}")


def _check_number(value: Any, name: str, expected: str, ok: Callable[[float], bool]) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) or not ok(value):
        raise InputError(f"{name} must be {expected}, got {value!r}")


_DEVICE = re.compile(r"^(cpu|cuda(:\d+)?)$")


def check_device(device: Any, name: str = "device") -> str:
    """``device`` as a string "cpu", "cuda" or "cuda:N" (a torch.device is accepted too)."""
    text = str(device) if isinstance(device, torch.device) else device
    if not isinstance(text, str) or not _DEVICE.match(text):
        raise InputError(f"{name} must be 'cpu', 'cuda' or 'cuda:N', got {device!r}")
    return text


# Options that may change between a run and its resumption without changing its result.
RESUMABLE_CHANGES = ("device", "checkpoint_every_steps")


def build_optimizer(model: nn.Module, opts: TrainOptions) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if opts.optimizer == "sgd":
        return torch.optim.SGD(params, lr=opts.lr, momentum=opts.momentum, weight_decay=opts.weight_decay)
    return torch.optim.AdamW(params, lr=opts.lr, weight_decay=opts.weight_decay)


def build_scheduler(optimizer: torch.optim.Optimizer, opts: TrainOptions):
    if opts.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=opts.schedule_epochs or opts.epochs)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda epoch: 1.0)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


# --- RNG snapshots -----------------------------------------------------------------------


def capture_rng(generator: torch.Generator | None, device: torch.device, prefix: str) -> tuple[dict, dict]:
    """Every RNG that training consumes -> (JSON part, tensor part named ``prefix.*``)."""
    np_state = np.random.get_state()
    meta = {
        "python": _listify(random.getstate()),
        "numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]],
    }
    tensors = {f"{prefix}.torch": torch.get_rng_state()}
    if device.type == "cuda":
        tensors[f"{prefix}.cuda"] = torch.cuda.get_rng_state(device)
    if generator is not None:
        tensors[f"{prefix}.loader"] = generator.get_state()
    return meta, tensors


def restore_rng(
    meta: dict, tensors: dict, generator: torch.Generator | None, device: torch.device, prefix: str
) -> None:
    """Inverse of :func:`capture_rng`."""
    random.setstate(_tuplify(meta["python"]))
    np_state = meta["numpy"]
    np.random.set_state((np_state[0], np.array(np_state[1], dtype=np.uint32), *np_state[2:]))
    torch.set_rng_state(tensors[f"{prefix}.torch"])
    if device.type == "cuda" and f"{prefix}.cuda" in tensors:
        torch.cuda.set_rng_state(tensors[f"{prefix}.cuda"], device)
    if generator is not None and f"{prefix}.loader" in tensors:
        generator.set_state(tensors[f"{prefix}.loader"])


def loader_generator(loader: Iterable) -> torch.Generator | None:
    """The torch.Generator that shuffles ``loader`` (DataLoader's or its sampler's), if any."""
    generator = getattr(loader, "generator", None)
    if generator is None:
        generator = getattr(getattr(loader, "sampler", None), "generator", None)
    return generator


@dataclass
class TrainState:
    """Where a run is: restored from the checkpoint on resume."""

    epoch: int = 0  # completed epochs
    step_in_epoch: int = 0  # completed steps of the current epoch
    global_step: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    # running sums of the current epoch, so a mid-epoch resume reports the whole epoch
    epoch_loss_sum: float = 0.0
    epoch_steps: int = 0
    epoch_correct: int = 0
    epoch_seen: int = 0
    epoch_seconds: float = 0.0


def fit(
    model: nn.Module,
    train_loader: Iterable,
    sampler: Sampler,
    opts: TrainOptions,
    run_dir: str | Path | None = None,
    resume: bool = False,
    progress: bool = True,
    on_epoch_end: Callable[[int, dict[str, Any]], None] | None = None,
    distributed_rank: int | None = None,
) -> list[dict[str, Any]]:
    """Train ``model`` with ``sampler``'s TimeConfigs; return per-epoch history rows.

    ``model`` is a StagedNet or a DistributedDataParallel around one; ``train_loader`` yields
    ``(x, y)`` as the data loaders do (frames batch-first). With ``run_dir`` a checkpoint is
    written atomically at the end of every epoch (and every ``opts.checkpoint_every_steps``
    steps) by rank 0 only; ``resume=True`` continues from it with model, optimizer,
    scheduler, GradScaler and RNG states restored, so the result equals an uninterrupted run.
    A missing, corrupt or truncated checkpoint raises CheckpointError (never a fresh start).
    History rows: epoch, train_loss (mean over steps and ranks), train_acc (time-averaged
    readout, over the sampled configs), lr (after the epoch's scheduler step), steps, seconds.
    ``on_epoch_end(epoch, row)`` is called on every rank (log on rank 0 only).
    """
    rank = dist_utils.get_rank() if distributed_rank is None else distributed_rank
    device = torch.device(opts.device)
    seed_everything(opts.seed)
    config_rng = random.Random(opts.seed)  # identical on every rank: same TimeConfigs everywhere
    core = getattr(model, "module", model)  # the StagedNet inside a DDP wrapper
    num_stages = core.num_stages
    optimizer = build_optimizer(model, opts)
    scheduler = build_scheduler(optimizer, opts)
    amp = resolve_amp(opts.amp, device)
    autocast_dtype = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}[amp]
    scaler = torch.amp.GradScaler(device.type) if amp == "fp16" else None
    state = TrainState()
    generator = loader_generator(train_loader)
    model.to(device)
    if opts.channels_last and model is core:  # a DDP wrapper is laid out before wrapping (wrap_ddp)
        use_channels_last(core)

    pending_rng = None  # mid-epoch resume: RNG state to restore once the done batches are skipped
    if resume:
        if run_dir is None:
            raise CheckpointError("cannot resume: no run folder given (run_dir=None)")
        path = Path(run_dir) / CHECKPOINT_FILE
        if not path.is_file():
            raise CheckpointError(f"cannot resume: no {CHECKPOINT_FILE} in run folder {run_dir}")
        check_resume(run_dir, opts, sampler)  # metadata first: refusals cost no tensor reads
        meta, extra = load_training_state(run_dir, core, optimizer, meta_schema=RESUME_SCHEMA)
        state = TrainState(**meta["train_state"])
        _check_like(meta["scheduler"], scheduler.state_dict(), "scheduler", path)
        if scaler is not None and meta.get("scaler"):
            _check_like(meta["scaler"], scaler.state_dict(), "scaler", path)
        try:
            scheduler.load_state_dict(meta["scheduler"])
            if scaler is not None and meta.get("scaler"):
                scaler.load_state_dict(meta["scaler"])
            if rank != 0:  # rank 0 holds the partial sums of all ranks
                state.epoch_loss_sum, state.epoch_steps, state.epoch_correct, state.epoch_seen = 0.0, 0, 0, 0
            config_rng.setstate(_tuplify(meta["config_rng"]))
            if state.step_in_epoch == 0:
                restore_rng(meta["rng"], extra, generator, device, "rng")
            else:
                # Replay the epoch's shuffling from its start; the step-time RNG comes back after
                # the batches already trained have been skipped (their loading consumes RNG too).
                restore_rng(meta["epoch_rng"], extra, generator, device, "epoch_rng")
                pending_rng = (meta["rng"], extra)
                _check_rng(meta["rng"], extra, generator, device, path)
        except (KeyError, TypeError, ValueError, RuntimeError, OverflowError, IndexError) as exc:
            raise CheckpointError(f"training checkpoint {path} is incomplete or malformed ({exc})") from None

    loader_sampler = getattr(train_loader, "sampler", None)
    if state.epoch > 0 and hasattr(loader_sampler, "set_epoch"):
        # DistributedSampler: the order of the last epoch done, as after an uninterrupted
        # run, so that work after fit (BN calibration) sees the same batches
        loader_sampler.set_epoch(state.epoch - 1)
    epoch_start_rng: tuple[dict, dict] | None = None

    def checkpoint() -> None:
        if run_dir is None:
            return
        # The epoch's running sums are stored summed over ranks (a collective, so every rank
        # comes here); on resume rank 0 carries them and the other ranks restart from zero.
        partial = dist_utils.all_reduce_sums(
            [state.epoch_loss_sum, state.epoch_steps, state.epoch_correct, state.epoch_seen], device
        )
        if rank != 0:
            return
        saved = asdict(state)
        saved.update(
            epoch_loss_sum=partial[0],
            epoch_steps=int(partial[1]),
            epoch_correct=int(partial[2]),
            epoch_seen=int(partial[3]),
        )
        rng_meta, tensors = capture_rng(generator, device, "rng")
        meta = {
            "train_state": saved,
            "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict() if scaler is not None else None,
            "config_rng": _listify(config_rng.getstate()),
            "rng": rng_meta,
            "options": asdict(opts),
            "sampler": sampler.describe(),
        }
        if state.step_in_epoch > 0 and epoch_start_rng is not None:
            meta["epoch_rng"] = epoch_start_rng[0]
            tensors.update(epoch_start_rng[1])
        save_training_state(run_dir, core, optimizer, tensors, meta)

    for epoch in range(state.epoch, opts.epochs):
        if hasattr(loader_sampler, "set_epoch"):
            loader_sampler.set_epoch(epoch)  # DistributedSampler: a new order per epoch
        epoch_start_rng = capture_rng(generator, device, "epoch_rng")
        model.train()
        t0 = time.perf_counter()
        skip = state.step_in_epoch
        limit = opts.max_steps_per_epoch
        bar = progress_bar(
            train_loader,
            desc=f"epoch {epoch + 1}/{opts.epochs} [{sampler.describe()['method']}]",
            total=epoch_total(train_loader, limit),
            enabled=progress and rank == 0,
            leave=False,
        )
        for i, (x, y) in enumerate(bar):
            if i < skip:
                if i == skip - 1 and pending_rng is not None:
                    restore_rng(*pending_rng, generator, device, "rng")
                    pending_rng = None
                if limit and i + 1 >= limit:
                    break
                continue
            x, y = model_input(x.to(device, non_blocking=True), core), y.to(device, non_blocking=True)
            configs = sampler.sample(config_rng, num_stages)
            stats: dict[str, float] = {}
            loss = train_step(
                model, x, y, configs, optimizer, autocast_dtype=autocast_dtype, scaler=scaler, stats=stats
            )
            if not math.isfinite(loss):
                raise InputError(
                    f"training diverged: the loss is {loss} at epoch {epoch + 1}, step {i + 1}; "
                    f"lower the learning rate (lr={opts.lr})"
                )
            state.epoch_loss_sum += loss
            state.epoch_steps += 1
            state.epoch_correct += int(stats["correct"])
            state.epoch_seen += int(stats["seen"])
            state.step_in_epoch = i + 1
            state.global_step += 1
            bar.set_postfix(loss=f"{loss:.3f}")
            if limit and i + 1 >= limit:
                break  # checked before the periodic checkpoint's fetch of another batch
            if opts.checkpoint_every_steps and state.global_step % opts.checkpoint_every_steps == 0:
                state.epoch_seconds += time.perf_counter() - t0
                t0 = time.perf_counter()
                checkpoint()
        if pending_rng is not None:  # the loader had fewer batches than the checkpoint skipped
            restore_rng(*pending_rng, generator, device, "rng")
            pending_rng = None
        loss_sum, steps, correct, seen = dist_utils.all_reduce_sums(
            [state.epoch_loss_sum, state.epoch_steps, state.epoch_correct, state.epoch_seen], device
        )
        if not steps:
            raise InputError(
                f"train_loader yielded no batches in epoch {epoch + 1}; expected a non-empty iterable of (x, y) batches"
            )
        scheduler.step()
        row = {
            "epoch": epoch + 1,
            "train_loss": loss_sum / steps if steps else float("nan"),
            "train_acc": correct / seen if seen else float("nan"),
            "lr": optimizer.param_groups[0]["lr"],
            "steps": int(round(steps / dist_utils.get_world_size())),  # per rank
            "seconds": state.epoch_seconds + time.perf_counter() - t0,
        }
        state.history.append(row)
        state.epoch = epoch + 1
        state.step_in_epoch = 0
        state.epoch_loss_sum, state.epoch_steps, state.epoch_correct, state.epoch_seen = 0.0, 0, 0, 0
        state.epoch_seconds = 0.0
        if on_epoch_end is not None:
            on_epoch_end(epoch + 1, row)
        checkpoint()  # after the callback, so RNG it consumes is part of the saved state
    return state.history


def epoch_total(loader: Any, limit: int) -> int | None:
    """Steps one epoch runs: the loader's length, cut to ``limit`` (max_steps_per_epoch) when set."""
    try:
        total = len(loader)
    except TypeError:  # an iterable without a length
        return limit or None
    return min(total, limit) if limit else total


_RNG_SCHEMA = Dict({"python": ListOf(), "numpy": ListOf()}, extra=True)
RESUME_SCHEMA = Dict(
    {
        "train_state": Dict(
            {
                "epoch": Int(min=0),
                "step_in_epoch": Int(min=0),
                "global_step": Int(min=0),
                "history": ListOf(MapOf()),
                "epoch_loss_sum": Float(),
                "epoch_steps": Int(min=0),
                "epoch_correct": Int(min=0),
                "epoch_seen": Int(min=0),
                "epoch_seconds": Float(min=0),
            }
        ),
        "scheduler": MapOf(),
        "scaler?": Nullable(MapOf()),
        "config_rng": ListOf(),
        "rng": _RNG_SCHEMA,
        "epoch_rng?": _RNG_SCHEMA,
    },
    extra=True,
)


def check_resume(run_dir: str | Path, opts: TrainOptions, sampler: Sampler) -> dict:
    """Refuse a resume from ``run_dir`` that :func:`fit` would refuse (options or sampler that
    differ from the interrupted run's, metadata that is malformed or out of range), reading
    only the checkpoint's header: call it before writing anything into the run folder.
    Returns the checkpoint's metadata."""
    path = Path(run_dir) / CHECKPOINT_FILE
    if not path.is_file():
        raise CheckpointError(f"cannot resume: no {CHECKPOINT_FILE} in run folder {run_dir}")
    meta = read_training_metadata(run_dir, RESUME_SCHEMA)
    _check_resumable(meta, opts, sampler, path)
    _check_train_state(TrainState(**meta["train_state"]), opts, "epoch_rng" in meta, path)
    return meta


def _check_train_state(state: TrainState, opts: TrainOptions, has_epoch_rng: bool, path: Path) -> None:
    """Where the checkpoint says the run is must be a place this run can be."""
    where = f"the metadata of training checkpoint {path}: key 'train_state"
    if state.epoch > opts.epochs:
        raise CheckpointError(f"{where}.epoch' is {state.epoch}, beyond the run's {opts.epochs} epochs")
    if len(state.history) != state.epoch:
        raise CheckpointError(f"{where}.history' has {len(state.history)} rows for {state.epoch} completed epochs")
    if state.step_in_epoch and (state.epoch == opts.epochs or not has_epoch_rng):
        raise CheckpointError(
            f"{where}.step_in_epoch' is {state.step_in_epoch}, but "
            + ("every epoch is done" if state.epoch == opts.epochs else "the epoch's RNG state is missing")
        )
    if opts.max_steps_per_epoch and state.step_in_epoch > opts.max_steps_per_epoch:
        raise CheckpointError(
            f"{where}.step_in_epoch' is {state.step_in_epoch}, beyond max_steps_per_epoch {opts.max_steps_per_epoch}"
        )
    if state.global_step < state.step_in_epoch or state.epoch_correct > state.epoch_seen:
        raise CheckpointError(
            f"{where}' is inconsistent (global_step {state.global_step} < step_in_epoch "
            f"{state.step_in_epoch}, or epoch_correct {state.epoch_correct} > epoch_seen "
            f"{state.epoch_seen})"
        )


def _check_like(saved: dict, now: dict, what: str, path: Path) -> None:
    """``saved`` (from a checkpoint) must have the keys of ``now`` with values of the same kind."""
    if set(saved) != set(now):
        raise CheckpointError(f"{what} state in {path} does not match: keys {sorted(saved)}, expected {sorted(now)}")
    for key, value in now.items():
        if not _same_kind(saved[key], value):
            raise CheckpointError(
                f"{what} state in {path}: key {key!r} is {saved[key]!r}, expected a value like {value!r}"
            )


def _same_kind(a: Any, b: Any) -> bool:
    if isinstance(b, bool) or b is None:
        return type(a) is type(b)
    if isinstance(b, numbers.Real):
        return isinstance(a, numbers.Real) and not isinstance(a, bool) and math.isfinite(a) == math.isfinite(b)
    if isinstance(b, (list, tuple)):
        return isinstance(a, (list, tuple)) and len(a) == len(b) and all(map(_same_kind, a, b))
    if isinstance(b, dict):
        return isinstance(a, dict) and set(a) == set(b) and all(_same_kind(a[k], b[k]) for k in b)
    return isinstance(a, type(b))


def _check_rng(meta: dict, tensors: dict, generator, device: torch.device, path: Path) -> None:
    """Try the step-time RNG state now (it is restored later, mid-epoch), keeping the current one."""
    saved = capture_rng(generator, device, "check")
    try:
        restore_rng(meta, tensors, generator, device, "rng")
    finally:
        restore_rng(saved[0], saved[1], generator, device, "check")


def _check_resumable(meta: dict, opts: TrainOptions, sampler: Sampler, path: Path) -> None:
    """A resumed run must train exactly as the interrupted one did."""
    saved = meta.get("options", {})
    now = asdict(opts)
    changed = sorted(k for k in now if k not in RESUMABLE_CHANGES and k in saved and saved[k] != now[k])
    if changed:
        diffs = ", ".join(f"{k}: {saved[k]!r} -> {now[k]!r}" for k in changed)
        raise ConfigError(f"cannot resume from {path}: training options differ from the interrupted run ({diffs})")
    if _recorded_sampler(meta.get("sampler")) != sampler.describe():
        raise ConfigError(
            f"cannot resume from {path}: the TimeConfig sampler differs from the interrupted run "
            f"({meta.get('sampler')} -> {sampler.describe()})"
        )


def _recorded_sampler(record: Any) -> Any:
    """A checkpoint's sampler record with missing fields at their defaults (a record from
    before a field existed), or the record itself when it is not a sampler's."""
    try:
        return sampler_from_dict(record).describe()
    except (FlexSNNError, TypeError):
        return record


def _listify(obj):
    if isinstance(obj, tuple):
        return [_listify(o) for o in obj]
    return obj


def _tuplify(obj):
    if isinstance(obj, list):
        return tuple(_tuplify(o) for o in obj)
    return obj
