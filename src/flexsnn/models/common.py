"""Building blocks shared by the model zoo: argument checks, neuron factories, conv units.

Every zoo model is a :class:`flexsnn.staged.StagedNet`; its layers are plain PyTorch layers
(run on the ``[T*B, ...]`` view) and flexsnn neurons (run on ``[T, B, ...]``).
"""

from __future__ import annotations

import inspect
import math
import numbers
from collections.abc import Callable, Sequence
from typing import Any

from torch import nn

from flexsnn.errors import InputError, check_positive_int
from flexsnn.neurons import IF, LIF

#: Time-stepped models (PAPER.md "Neurons"): LIF, V_th = 1, decay 0.5, hard reset, triangle surrogate.
LIF_DEFAULTS: dict[str, Any] = {"v_th": 1.0, "decay": 0.5, "reset": "hard"}
#: Deployable (event-driven) models: IF, V_th = 1, reset by subtraction, multi-spike, v_min = -1,
#: and the exponential surrogate (Sinabs' default, as the paper's event-driven models train).
IF_DEFAULTS: dict[str, Any] = {
    "v_th": 1.0,
    "reset": "subtract",
    "multi_spike": True,
    "v_min": -1.0,
    "surrogate": "exponential",
}

NeuronFactory = Callable[[], nn.Module]


def neuron_factory(kind: str, overrides: dict | None, defaults: dict | None = None) -> NeuronFactory:
    """A zero-argument callable making fresh ``LIF`` (``kind="lif"``) or ``IF`` neurons.

    ``overrides`` (e.g. ``{"decay": 0.25}``) are merged over the defaults; keys are checked
    against the neuron's constructor so a typo fails here, naming ``neuron``.
    """
    cls = LIF if kind == "lif" else IF
    base = dict(LIF_DEFAULTS if kind == "lif" else IF_DEFAULTS) if defaults is None else dict(defaults)
    if overrides is None:
        overrides = {}
    if not isinstance(overrides, dict) or not all(isinstance(k, str) for k in overrides):
        raise InputError(
            f"neuron must be a dict of {cls.__name__} keyword arguments, e.g. {{'v_th': 0.5}}, got {overrides!r}"
        )
    allowed = [p for p in inspect.signature(cls).parameters if p != "self"]
    unknown = sorted(set(overrides) - set(allowed))
    if unknown:
        raise InputError(f"neuron has unknown {cls.__name__} argument(s) {unknown}; allowed: {allowed}")
    kwargs = {**base, **overrides}
    cls(**kwargs)  # validate once now (raises InputError naming the bad parameter)
    return lambda: cls(**kwargs)


def check_width(width: Any) -> float:
    if isinstance(width, bool) or not isinstance(width, numbers.Real) or not math.isfinite(width) or width <= 0:
        raise InputError(f"width must be a positive number (channel multiplier, 1.0 = paper size), got {width!r}")
    return float(width)


def scaled(channels: int, width: float) -> int:
    """Channel count scaled by the width multiplier (at least 1)."""
    return max(1, int(round(channels * width)))


def check_int_list(values: Any, name: str, min_len: int = 1) -> list[int]:
    """A non-empty list of positive ints (JSON gives lists; tuples are accepted too)."""
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or len(values) < min_len:
        raise InputError(f"{name} must be a list of at least {min_len} positive ints, got {values!r}")
    return [check_positive_int(v, f"{name}[{i}]") for i, v in enumerate(values)]


def check_in_shape(in_shape: Any) -> tuple[int, int, int]:
    shape = check_int_list(in_shape, "in_shape")
    if len(shape) != 3:
        raise InputError(f"in_shape must be [channels, height, width], got {in_shape!r}")
    return shape[0], shape[1], shape[2]


def check_bool(value: Any, name: str) -> bool:
    if not isinstance(value, bool):
        raise InputError(f"{name} must be True or False, got {value!r}")
    return value


def conv_unit(
    c_in: int, c_out: int, neuron: NeuronFactory, bn: bool, stride: int = 1, bias: bool | None = None
) -> list[nn.Module]:
    """Conv3x3 (padding 1) [+ BatchNorm2d] + neuron. Bias only when no BN follows (unless given)."""
    if bias is None:
        bias = not bn
    layers: list[nn.Module] = [nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=bias)]
    if bn:
        layers.append(nn.BatchNorm2d(c_out))
    layers.append(neuron())
    return layers


def conv_out(size: int, stride: int) -> int:
    """Spatial size after a 3x3 conv with padding 1 and ``stride``."""
    return (size - 1) // stride + 1


def group_stages(units: Sequence[list[nn.Module]], per_stage: int) -> list[list[nn.Module]]:
    """Concatenate consecutive units (e.g. conv layers with their BN/neuron/pool) into stages."""
    per_stage = check_positive_int(per_stage, "convs_per_stage")
    return [[m for unit in units[i : i + per_stage] for m in unit] for i in range(0, len(units), per_stage)]


def conv_pool_stages(
    cfg: Sequence[Any],
    in_channels: int,
    in_size: int,
    neuron: NeuronFactory,
    bn: bool,
    convs_per_stage: int,
    width: float = 1.0,
    conv_bias: bool | None = None,
) -> tuple[list[list[nn.Module]], int, int]:
    """VGG-style features from ``cfg`` (ints: conv3x3 + [BN] + neuron; ``"A"``: AvgPool2d(2)).

    Each pool joins the unit of the conv before it; ``convs_per_stage`` consecutive units form
    a stage. Returns ``(stages, channels, spatial size)`` of the last feature map.
    """
    units: list[list[nn.Module]] = []
    c, size = in_channels, in_size
    for item in cfg:
        if item == "A":
            units[-1].append(nn.AvgPool2d(2))
            size //= 2
        else:
            c_out = scaled(int(item), width)
            units.append(conv_unit(c, c_out, neuron, bn, bias=conv_bias))
            c = c_out
    if size < 1:
        raise InputError(
            f"in_size: an input of {in_size}x{in_size} pixels (after any input pooling) is too small "
            f"for this net's {cfg.count('A')} 2x2 poolings"
        )
    return group_stages(units, convs_per_stage), c, size
