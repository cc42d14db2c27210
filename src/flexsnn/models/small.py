"""Small nets for the embedded digits dataset (event frames ``[T, B, 2, 34, 34]``), CPU-fast.

``digits_mlp``: [avg-pool] -> flatten -> one stage per hidden layer (Linear + BN1d + LIF),
head Linear. ``digits_conv``: one stage per strided conv (Conv3x3/s2 + BN2d + LIF), a last
stage flatten + Linear + BN1d + LIF, head Linear.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from flexsnn.errors import check_positive_int
from flexsnn.models.common import check_bool, check_in_shape, check_int_list, conv_out, conv_unit, neuron_factory
from flexsnn.staged import StagedNet


def digits_mlp(
    num_classes: int = 10,
    in_shape: Sequence[int] = (2, 34, 34),
    hidden: Sequence[int] = (256, 128),
    pool: int = 2,
    bn: bool = True,
    neuron: dict | None = None,
    ttm_mode: str = "hard",
    input_ttm_mode: str | None = None,
) -> StagedNet:
    """MLP on frames ``[T, B, C, H, W]``: ``len(hidden)`` stages, output ``[T_last, B, num_classes]``.

    Stage 1 average-pools by ``pool`` (1 = none) and flattens; default 2x34x34 -> 578 -> 256 -> 128 -> 10.
    """
    num_classes = check_positive_int(num_classes, "num_classes")
    c, h, w = check_in_shape(in_shape)
    hidden = check_int_list(hidden, "hidden")
    pool = check_positive_int(pool, "pool")
    bn = check_bool(bn, "bn")
    make = neuron_factory("lif", neuron)
    stages: list[list[nn.Module]] = []
    first: list[nn.Module] = [nn.AvgPool2d(pool)] if pool > 1 else []
    features = c * (h // pool) * (w // pool)
    for k, width in enumerate(hidden):
        layers = (first + [nn.Flatten()]) if k == 0 else []
        layers.append(nn.Linear(features, width, bias=not bn))
        if bn:
            layers.append(nn.BatchNorm1d(width))
        layers.append(make())
        stages.append(layers)
        features = width
    return StagedNet(
        stages,
        head=nn.Linear(features, num_classes),
        ttm_mode=ttm_mode,
        input_kind="frames",
        input_shape=(c, h, w),
        input_ttm_mode=input_ttm_mode,
    )


def digits_conv(
    num_classes: int = 10,
    in_shape: Sequence[int] = (2, 34, 34),
    channels: Sequence[int] = (16, 32),
    hidden: int = 128,
    bn: bool = True,
    neuron: dict | None = None,
    ttm_mode: str = "hard",
    input_ttm_mode: str | None = None,
) -> StagedNet:
    """Conv net on frames ``[T, B, C, H, W]``: ``len(channels) + 1`` stages.

    Default: Conv(2,16,3,s2)+BN+LIF | Conv(16,32,3,s2)+BN+LIF | flatten+Linear(32*9*9,128)+BN1d+LIF,
    head Linear(128, 10).
    """
    num_classes = check_positive_int(num_classes, "num_classes")
    c, h, w = check_in_shape(in_shape)
    channels = check_int_list(channels, "channels")
    hidden = check_positive_int(hidden, "hidden")
    bn = check_bool(bn, "bn")
    make = neuron_factory("lif", neuron)
    stages: list[list[nn.Module]] = []
    c_in = c
    for c_out in channels:
        stages.append(conv_unit(c_in, c_out, make, bn, stride=2))
        c_in, h, w = c_out, conv_out(h, 2), conv_out(w, 2)
    last: list[nn.Module] = [nn.Flatten(), nn.Linear(c_in * h * w, hidden, bias=not bn)]
    if bn:
        last.append(nn.BatchNorm1d(hidden))
    last.append(make())
    stages.append(last)
    return StagedNet(
        stages,
        head=nn.Linear(hidden, num_classes),
        ttm_mode=ttm_mode,
        input_kind="frames",
        input_shape=check_in_shape(in_shape),
        input_ttm_mode=input_ttm_mode,
    )
