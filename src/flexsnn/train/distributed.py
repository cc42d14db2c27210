"""Data-parallel training on torch.distributed: process group, DDP wrapper, sharded loaders,
and BatchNorm calibration whose statistics are those of the global batch.

Launch with torchrun (``torchrun --nproc_per_node N -m flexsnn train ...``). Every rank runs
the same program; :func:`init_distributed` reads torchrun's environment (RANK, WORLD_SIZE,
LOCAL_RANK, MASTER_ADDR/PORT) and joins the group: nccl on CUDA (one GPU per rank,
``cuda:LOCAL_RANK``), gloo on CPU. Without torchrun everything here is a no-op, so the same
code runs single-process.

Conventions:
- ``batch_size`` is the GLOBAL batch (the paper's 256 on CIFAR); each of N ranks loads
  ``batch_size / N`` samples per step through a DistributedSampler, so hyper-parameters do
  not change with N. The mean loss over ranks equals the mean over the global batch, and DDP
  averages gradients, so a step equals a single-process step on the global batch.
- MTT: every rank seeds its TimeConfig generator alike (``flexsnn.train.loop.fit``), so all
  ranks forward the same s configurations (no rank waits for a slower one), and only the
  last of the s backward passes all-reduces (``no_sync`` for the others).
- BatchNorm while training: by default each rank normalises with its LOCAL batch statistics
  (plain DDP; running stats are broadcast from rank 0 at each forward). ``sync_bn=True``
  converts BN layers to ``torch.nn.SyncBatchNorm`` (CUDA only, as PyTorch's SyncBatchNorm)
  so training normalises with global-batch statistics. Either way the running statistics
  that inference uses come from :func:`calibrate_bn_synced` after training, which equal a
  single-process calibration over the same global batches.
- Only rank 0 writes files and prints (checkpoints, metrics, reports).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from flexsnn.data.encoding import model_input
from flexsnn.errors import ConfigError, InputError, check_positive_int
from flexsnn.train.bn_calibration import batchnorm_layers, calibrate_bn


@dataclass(frozen=True)
class DistInfo:
    """This process's place in the job (``world_size == 1``: not distributed)."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    backend: str | None = None
    device: str = "cpu"  # this rank's device ("cuda:LOCAL_RANK" under nccl)

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_distributed(device: str = "cpu", backend: str | None = None, timeout_s: float = 1800.0) -> DistInfo:
    """Join the process group torchrun set up (nccl for CUDA, gloo for CPU) -> :class:`DistInfo`.

    Outside torchrun (WORLD_SIZE unset or 1) nothing is initialised and the returned info
    says rank 0 of 1 on ``device``.
    """
    if dist.is_available() and dist.is_initialized():
        return current_info(device)
    if not launched_by_torchrun():
        return DistInfo(device=device)
    if not dist.is_available():
        raise ConfigError("WORLD_SIZE > 1 but this torch build has no torch.distributed support")
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = device.startswith("cuda")
    backend = backend or ("nccl" if cuda else "gloo")
    if cuda:
        if torch.cuda.device_count() <= local_rank:
            raise ConfigError(
                f"LOCAL_RANK {local_rank} has no GPU ({torch.cuda.device_count()} visible); "
                "use --nproc_per_node <= number of GPUs or --device cpu"
            )
        torch.cuda.set_device(local_rank)
    import datetime

    dist.init_process_group(backend=backend, init_method="env://", timeout=datetime.timedelta(seconds=timeout_s))
    return current_info(device)


def current_info(device: str = "cpu") -> DistInfo:
    """The :class:`DistInfo` of an already initialised group (or the single-process one)."""
    if not (dist.is_available() and dist.is_initialized()):
        return DistInfo(device=device)
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    rank_device = f"cuda:{local_rank}" if device.startswith("cuda") else device
    return DistInfo(
        rank=dist.get_rank(),
        local_rank=local_rank,
        world_size=dist.get_world_size(),
        backend=dist.get_backend(),
        device=rank_device,
    )


def cleanup_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def get_rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def get_world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def is_main_process() -> bool:
    return get_rank() == 0


def barrier() -> None:
    if get_world_size() > 1:
        dist.barrier()


def _reduce_device() -> torch.device:
    # nccl reduces CUDA tensors only; gloo CPU tensors.
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_reduce_sums(values: Sequence[float], device: str | torch.device | None = None) -> list[float]:
    """Sum each number over all ranks (returned unchanged when not distributed)."""
    if get_world_size() == 1:
        return [float(v) for v in values]
    t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=_reduce_device())
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.tolist()


def wrap_ddp(model: nn.Module, info: DistInfo, sync_bn: bool = False) -> nn.Module:
    """Move ``model`` to the rank's device and wrap it in DistributedDataParallel.

    Returns ``model`` itself (on its device) when not distributed. ``sync_bn`` converts
    BatchNorm layers to SyncBatchNorm (needs CUDA). The StagedNet stays reachable as
    ``wrapped.module``; its ``time_config=`` forward keyword passes through DDP.
    """
    device = torch.device(info.device)
    if sync_bn and device.type != "cuda":
        raise ConfigError(
            "sync_bn needs CUDA devices (torch.nn.SyncBatchNorm has no CPU kernel); set sync_bn: false on CPU"
        )
    if not info.distributed:
        return model.to(device)
    if sync_bn:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    model.to(device)
    device_ids = (
        [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else None
    )
    return nn.parallel.DistributedDataParallel(model, device_ids=device_ids)


def per_rank_batch_size(global_batch: int, world_size: int) -> int:
    check_positive_int(global_batch, "batch_size")
    if global_batch % world_size:
        raise ConfigError(
            f"batch_size {global_batch} (the global batch) must be divisible by the number of "
            f"processes {world_size}; choose a multiple of {world_size}"
        )
    return global_batch // world_size


def distributed_loader(
    source: DataLoader | Dataset,
    info: DistInfo,
    batch_size: int,
    seed: int,
    shuffle: bool = True,
    drop_last: bool = False,
) -> DataLoader:
    """A loader giving this rank its shard of every global batch of ``batch_size`` samples.

    ``source`` is a DataLoader (its dataset, workers and collate function are reused) or a
    Dataset. Shuffling is DistributedSampler's: a permutation seeded by ``seed + epoch``
    (``fit`` calls ``set_epoch``), rank r taking every N-th index from r, so global batch k
    is ``perm[k*batch_size:(k+1)*batch_size]``, exactly what a single process with
    ``DistributedSampler(num_replicas=1)`` and the same seed uses.
    """
    dataset = source.dataset if isinstance(source, DataLoader) else source
    extra = {}
    if isinstance(source, DataLoader):
        extra = dict(num_workers=source.num_workers, collate_fn=source.collate_fn, pin_memory=source.pin_memory)
        if source.num_workers > 0:
            extra["persistent_workers"] = source.persistent_workers
    sampler = DistributedSampler(
        dataset, num_replicas=info.world_size, rank=info.rank, shuffle=shuffle, seed=seed, drop_last=drop_last
    )
    return DataLoader(
        dataset,
        batch_size=per_rank_batch_size(batch_size, info.world_size),
        sampler=sampler,
        drop_last=drop_last,
        **extra,
    )


@torch.no_grad()
def calibrate_bn_synced(
    model: nn.Module,
    loader: Iterable,
    time_config: int | Sequence[int],
    num_batches: int = 10,
    device: str | torch.device | None = None,
) -> None:
    """BN calibration over the GLOBAL batches of a distributed run (every rank calls it).

    Each rank forwards its shard of ``num_batches`` batches; every BatchNorm layer
    all-reduces the per-channel count, sum and squared deviation of its input, normalises
    with the global-batch statistics (as one process on the whole batch would, so deeper
    layers see the same inputs) and keeps the cumulative average of the global batch mean
    and unbiased variance. The resulting running statistics equal
    :func:`flexsnn.train.calibrate_bn` run in one process over the same global batches, and
    are identical on every rank. Single-process, this is :func:`calibrate_bn`.
    """
    model = getattr(model, "module", model)  # calibrate the net itself, never through DDP
    if get_world_size() == 1:
        return calibrate_bn(model, loader, time_config, num_batches, device)
    check_positive_int(num_batches, "num_batches")
    cfg = model.normalize_time_config(time_config) if hasattr(model, "normalize_time_config") else time_config
    layers = batchnorm_layers(model)
    if layers:
        device = device or next(model.parameters()).device
        was_training = model.training
        accs = [_GlobalBNStats(bn) for bn in layers]
        handles = [bn.register_forward_hook(acc.hook) for bn, acc in zip(layers, accs)]
        model.train()
        seen = 0
        try:
            iterator = iter(loader)
            while seen < num_batches:
                batch = next(iterator, None)
                # every rank must forward the same number of batches, or the reductions hang
                have = all_reduce_sums([0.0 if batch is None else 1.0])[0]
                if have < get_world_size():
                    break
                x = batch[0]
                model(model_input(x.to(device), model), time_config=cfg)
                seen += 1
        finally:
            for h in handles:
                h.remove()
            model.train(was_training)
        if seen == 0:
            raise InputError("loader yielded no batches on some rank; BN calibration needs training data")
        for acc in accs:
            acc.store()
    if hasattr(model, "mark_calibrated"):
        model.mark_calibrated(cfg)


class _GlobalBNStats:
    """Forward hook of one BN layer during synced calibration (see calibrate_bn_synced)."""

    def __init__(self, bn: nn.modules.batchnorm._BatchNorm) -> None:
        self.bn = bn
        self.mean: torch.Tensor | None = None
        self.var: torch.Tensor | None = None
        self.batches = 0

    def hook(self, module: nn.Module, inputs: tuple, output: torch.Tensor) -> torch.Tensor:
        x = inputs[0]
        dims = [d for d in range(x.dim()) if d != 1]
        shape = [1, -1] + [1] * (x.dim() - 2)
        xd = x.detach().to(torch.float64)
        dev = _reduce_device()
        count = torch.tensor([x.numel() / x.shape[1]], dtype=torch.float64, device=dev)
        total = xd.sum(dims).to(dev)
        dist.all_reduce(count)
        dist.all_reduce(total)
        mean = total / count
        sq = ((xd - mean.to(xd.device).view(shape)) ** 2).sum(dims).to(dev)  # two-pass: exact enough
        dist.all_reduce(sq)
        n = count.item()
        if n < 2:
            raise InputError("BN calibration needs at least 2 values per channel in a global batch")
        var_biased, var_unbiased = sq / n, sq / (n - 1)
        # the cumulative moving average BN keeps with momentum=None
        self.batches += 1
        if self.mean is None:
            self.mean, self.var = mean, var_unbiased
        else:
            f = 1.0 / self.batches
            self.mean = (1 - f) * self.mean + f * mean
            self.var = (1 - f) * self.var + f * var_unbiased
        bn = self.bn
        mean_x = mean.to(x.device).view(shape)
        y = (xd - mean_x) / torch.sqrt(var_biased.to(x.device).view(shape) + bn.eps)
        if bn.affine:
            y = y * bn.weight.detach().to(torch.float64).view(shape) + bn.bias.detach().to(torch.float64).view(shape)
        return y.to(output.dtype)

    def store(self) -> None:
        bn = self.bn
        bn.running_mean.copy_(self.mean.to(bn.running_mean))
        bn.running_var.copy_(self.var.to(bn.running_var))
        if bn.num_batches_tracked is not None:
            bn.num_batches_tracked.fill_(self.batches)
