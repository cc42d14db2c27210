"""Memory a request needs, estimated before anything is allocated, and the refusal when it does not fit.

Every verb that runs a model at some T and batch size (``train``, ``evaluate``, ``deploy
prepare``, a run loaded from its folder) asks :func:`check_memory` first, so that
``--t-max 1000000000`` or a ``config.json`` with a layer of 10^12 units is refused in one line
instead of exhausting the machine.

The estimate (deliberately small and conservative; docs/architecture.md, "Bounded resources"):

- The model is built on PyTorch's ``meta`` device (shapes, no storage) and run once at T = 1
  on a batch of 2; hooks record every layer's output size per sample and time step, per stage
  (:func:`model_footprint`).
- Activations: ``batch x sum over stages of (T_i x that stage's layer outputs) x 4 bytes``,
  times :data:`AUTOGRAD_FACTOR` when training (autograd keeps every layer's output and the
  neurons' membranes for the backward pass, and the backward pass allocates gradients of the
  same size); when evaluating, only the largest layer at a time, twice (its input and output).
- Input: ``batch x T_data x input size x 4 bytes``, twice (the batch and its resampled copy).
- Parameters: 4 bytes each; training adds their gradients and the optimizer's state (SGD
  momentum: 1 more copy, AdamW: 2).

The limit is the memory available now (``MemAvailable`` of ``/proc/meminfo``, or the free
memory of the CUDA device the model runs on) times :data:`LIMIT_FRACTION`. Set
``FLEXSNN_MEMORY_LIMIT`` to a size (``64GB``, ``512MiB``, bytes) to use that limit instead, or to
``off`` to skip the check.

Time is not memory: the number of MTT configs drawn per step (``sample_num``) multiplies the
time of every step, not its memory (configs are run one after another). It is capped at
:data:`MAX_SAMPLE_NUM` (the paper uses 3); ``FLEXSNN_MAX_SAMPLE_NUM`` raises the cap.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from flexsnn.errors import InputError
from flexsnn.models import build_model

__all__ = [
    "AUTOGRAD_FACTOR",
    "LIMIT_FRACTION",
    "MAX_SAMPLE_NUM",
    "MemoryEstimate",
    "ModelFootprint",
    "ResourceError",
    "available_memory",
    "check_memory",
    "check_sample_num",
    "estimate_memory",
    "footprint_of",
    "format_bytes",
    "memory_limit",
    "model_footprint",
]

#: Activation bytes kept for and made by the backward pass, per byte of forward outputs. Measured
#: on digits_conv (T = 6, 24, 48, batch 64, CPU): the peak RSS of one training step grew by
#: 1.8-2.0x its forward outputs; 2 is the estimate (within about 20 % of those measurements).
AUTOGRAD_FACTOR = 2.0
#: Share of the available memory a request may take.
LIMIT_FRACTION = 0.9
#: Largest ``sample_num`` (MTT configs per step) accepted without ``FLEXSNN_MAX_SAMPLE_NUM``.
MAX_SAMPLE_NUM = 64
BYTES_PER_VALUE = 4  # float32; mixed precision halves some of it, which only makes the estimate safer
OPTIMIZER_STATES = {"sgd": 1, "adamw": 2}


class ResourceError(InputError):
    """A request (a T, a batch size, a layer size) needs more memory than the machine has, or
    more work than the documented caps allow; the message names the option and the estimate."""


@dataclass(frozen=True)
class ModelFootprint:
    """Sizes of one model, per sample and time step: ``input_numel`` (the input frame, or the
    static image), ``stage_numels[i]`` (sum of the outputs of stage i's layers), ``largest_numel``
    (the largest single layer output), and ``param_count`` (parameters and buffers). ``measured``
    is False when the model cannot run on the meta device: then only parameters and the input
    are counted."""

    name: str
    input_kind: str
    input_numel: int
    stage_numels: tuple[int, ...]
    largest_numel: int
    param_count: int
    measured: bool = True


@dataclass(frozen=True)
class MemoryEstimate:
    activations: int
    inputs: int
    parameters: int

    @property
    def total(self) -> int:
        return self.activations + self.inputs + self.parameters


def format_bytes(n: float) -> str:
    """``3.1 TB``, ``24 GB``, ``512 MB`` (powers of 1000)."""
    for unit, scale in (("EB", 1e18), ("PB", 1e15), ("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            value = n / scale
            return (
                f"{value:.1f} {unit}"
                if value < 100
                else f"{value:.3g} {unit}"
                if value < 1000
                else f"{value:.0f} {unit}"
            )
    return f"{int(n)} B"


def model_footprint(
    model: str, model_kwargs: dict[str, Any] | None = None, data_shape: Sequence[int] | None = None
) -> ModelFootprint | None:
    """The :class:`ModelFootprint` of zoo model / factory ``model`` built with ``model_kwargs``,
    measured on the meta device (nothing is allocated). ``data_shape``: the dataset's per-sample
    input shape, filling what the model leaves open (a ResNet takes any image size). None if the
    model cannot even be built there (its own errors surface later, where it is built for real)."""
    try:
        with torch.device("meta"):
            net = build_model(model, **(model_kwargs or {}))
    except (RuntimeError, NotImplementedError, TypeError, ValueError, AttributeError):
        return None
    params = sum(t.numel() for t in (*net.parameters(), *net.buffers()))
    shape = getattr(net, "input_shape", None)
    if shape and None in shape and data_shape is not None and len(data_shape) == len(shape):
        shape = tuple(d if s is None else s for s, d in zip(shape, data_shape))
    input_numel = math.prod(shape) if shape and None not in shape else 0
    stages = list(getattr(net, "stages", []))
    if not input_numel or not stages:
        return ModelFootprint(model, net.input_kind, input_numel, (), 0, params, measured=False)
    sums = [0] * len(stages)
    largest = [0]
    batch = 2  # BatchNorm refuses a batch of 1 in training mode
    hooks = []

    def record(stage: int):
        def hook(_module, _args, out):
            if isinstance(out, torch.Tensor):
                per_sample = out.numel() // batch
                sums[stage] += per_sample
                largest[0] = max(largest[0], per_sample)

        return hook

    for i, stage in enumerate(stages):
        for module in stage.modules():
            if not any(True for _ in module.children()):
                hooks.append(module.register_forward_hook(record(i)))
    shape = (1, batch, *shape) if net.input_kind == "frames" else (batch, *shape)
    try:
        net.train()  # no calibration needed; BatchNorm updates meta statistics only
        with torch.no_grad():
            net(torch.empty(shape, device="meta"), (1,) * len(stages))
        measured = True
    except Exception:  # noqa: BLE001 - a layer without meta support: count parameters and input only
        measured = False
    finally:
        for h in hooks:
            h.remove()
    return ModelFootprint(model, net.input_kind, input_numel, tuple(sums), largest[0], params, measured)


def estimate_memory(
    footprint: ModelFootprint,
    time_config: Sequence[int],
    batch_size: int,
    data_t: int | None = None,
    training: bool = False,
    optimizer: str = "sgd",
) -> MemoryEstimate:
    """Bytes one step needs at per-stage ``time_config`` (one T per stage, or one T for all) and
    ``batch_size``; ``data_t``: the T the input frames are binned at (default: stage 1's T)."""
    stages = footprint.stage_numels
    cfg = [int(t) for t in time_config]
    if len(cfg) == 1 and len(stages) > 1:
        cfg = cfg * len(stages)
    b = int(batch_size)
    if footprint.measured and stages:
        if training:
            activations = b * sum(t * n for t, n in zip(cfg, stages)) * BYTES_PER_VALUE * AUTOGRAD_FACTOR
        else:
            activations = b * max(cfg) * footprint.largest_numel * BYTES_PER_VALUE * 2
    else:
        activations = 0
    t_in = (data_t if data_t is not None else cfg[0]) if footprint.input_kind == "frames" else 1
    inputs = b * int(t_in) * footprint.input_numel * BYTES_PER_VALUE * 2
    copies = (2 + OPTIMIZER_STATES.get(optimizer, 2)) if training else 1
    parameters = footprint.param_count * BYTES_PER_VALUE * copies
    return MemoryEstimate(int(activations), int(inputs), int(parameters))


def _parse_size(text: str) -> int | None:
    units = {
        "": 1,
        "b": 1,
        "kb": 10**3,
        "mb": 10**6,
        "gb": 10**9,
        "tb": 10**12,
        "kib": 2**10,
        "mib": 2**20,
        "gib": 2**30,
        "tib": 2**40,
    }
    s = text.strip().lower().replace(" ", "")
    number = s.rstrip("abcdefghijklmnopqrstuvwxyz")
    unit = s[len(number) :]
    try:
        value = float(number)
    except ValueError:
        return None
    if unit not in units or not math.isfinite(value) or value <= 0:
        return None
    return int(value * units[unit])


def available_memory(device: str | torch.device = "cpu") -> int:
    """Bytes available now: free memory of a CUDA ``device``, else the host's MemAvailable."""
    device = torch.device(device)
    if device.type == "cuda" and torch.cuda.is_available():
        free, _total = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):  # pragma: no cover - not POSIX
        return 2**63 - 1


def memory_limit(device: str | torch.device = "cpu") -> tuple[int | None, str]:
    """``(bytes a request may take or None for no check, how it was chosen)``."""
    text = os.environ.get("FLEXSNN_MEMORY_LIMIT", "").strip()
    if text.lower() in ("off", "none", "0"):
        return None, "check off"
    if text:
        size = _parse_size(text)
        if size is None:
            raise InputError(f"FLEXSNN_MEMORY_LIMIT must be a size like 64GB or 512MiB, or off; got {text!r}")
        return size, f"FLEXSNN_MEMORY_LIMIT={text}"
    where = "this GPU has" if torch.device(device).type == "cuda" else "this machine has"
    free = available_memory(device)
    return int(free * LIMIT_FRACTION), f"{where} {format_bytes(free)} available"


def check_memory(
    footprint: ModelFootprint | None,
    requests: Sequence[tuple[str, Sequence[int], int | None]],
    batch_size: int,
    training: bool = False,
    optimizer: str = "sgd",
    device: str | torch.device = "cpu",
    what: str = "",
    batch_option: str = "--batch-size {batch}",
) -> MemoryEstimate | None:
    """Refuse (ResourceError) the first request that needs more memory than :func:`memory_limit`.

    ``requests``: ``(option text, time_config, data_t)`` triples, e.g. ``("--t-max 1000000000",
    (10**9,), 10**9)``; the option text is what the message names (its first word is the one to
    lower). ``batch_option`` is named instead when the request fits at batch 1, and the layer
    sizes when the parameters alone do not fit. Returns the largest estimate (None: no check).
    """
    if footprint is None or not requests:
        return None
    limit, source = memory_limit(device)
    worst = None
    for option, cfg, data_t in requests:
        est = estimate_memory(footprint, cfg, batch_size, data_t, training, optimizer)
        if worst is None or est.total > worst.total:
            worst = est
        if limit is None or est.total <= limit:
            continue
        single = estimate_memory(footprint, cfg, 1, data_t, training, optimizer)
        kind = "training" if training else "evaluation"
        context = f"batch {batch_size}, {footprint.name}{f', {what}' if what else ''}, {kind}"
        if est.parameters > limit:
            culprit, advice = "the model's layer sizes need", "use a smaller model"
            part = f"{format_bytes(est.parameters)} of parameter memory"
        else:
            if single.total > limit:
                culprit, advice = f"{option} needs", f"lower {option.split()[0]}"
            else:
                culprit = f"{batch_option.format(batch=batch_size)} needs"
                advice = f"lower {batch_option.split()[0]}"
            big = "activation" if est.activations >= est.inputs else "input frame"
            part = f"{format_bytes(est.total)} of memory, mostly {big}s"
        raise ResourceError(
            f"{culprit} about {part} ({context}); {source}; {advice} (or set FLEXSNN_MEMORY_LIMIT if you know it fits)"
        )
    return worst


def check_sample_num(sample_num: int, option: str = "--sample-num") -> int:
    """``sample_num`` if at most the cap (:data:`MAX_SAMPLE_NUM`, or ``FLEXSNN_MAX_SAMPLE_NUM``),
    else ResourceError: every training step runs that many forward and backward passes."""
    text = os.environ.get("FLEXSNN_MAX_SAMPLE_NUM", "").strip()
    cap = int(text) if text.isascii() and text.isdigit() else MAX_SAMPLE_NUM
    if isinstance(sample_num, int) and sample_num > cap:
        raise ResourceError(
            f"{option} {sample_num} runs {sample_num} forward and backward passes per training step "
            f"(about {sample_num / 3:.3g}x the time of the paper's 3); the cap is {cap}: lower {option} "
            "(or set FLEXSNN_MAX_SAMPLE_NUM)"
        )
    return sample_num


def footprint_of(net: nn.Module, data_shape: Sequence[int] | None = None) -> ModelFootprint | None:
    """The footprint of an already built flexsnn model (from its ``model_spec``)."""
    spec = getattr(net, "model_spec", None)
    if not isinstance(spec, dict) or "name" not in spec:
        return None
    return model_footprint(spec["name"], spec.get("kwargs", {}), data_shape)
