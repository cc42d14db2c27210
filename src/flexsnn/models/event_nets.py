"""Deployable nets for event-driven hardware (PAPER.md "Deployment path").

Bias-free throughout: Conv2d(bias=False) [+ BatchNorm2d, folded into the conv before
deployment] + IF(v_th=1, reset="subtract", multi_spike=True, v_min=-1), AvgPool2d(2)
pooling, Flatten, and a Linear(bias=False) head with no neuron (the event-driven readout is
its accumulated input). Input: event frames ``[T, B, 2, H, W]``.

- ``nmnist_net``: conv + pool units, a stage is ``convs_per_stage`` (default 2) of them.
- ``gesture_net``: the paper's authors' DVS Gesture net, 3 stages (two conv stages and an FC
  stage), its input trimmed to the first ``T_1`` frames.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from flexsnn.errors import InputError, check_positive_int
from flexsnn.models.common import (
    NeuronFactory,
    check_bool,
    check_int_list,
    conv_out,
    conv_pool_stages,
    conv_unit,
    neuron_factory,
)
from flexsnn.staged import StagedNet


def _deployable(
    channels: list[int],
    num_classes: int,
    in_channels: int,
    in_size: int,
    bn: bool,
    convs_per_stage: int,
    neuron: dict | None,
    ttm_mode: str,
    input_ttm_mode: str | None,
) -> StagedNet:
    make = neuron_factory("if", neuron)
    cfg: list = []
    for c in channels:
        cfg += [c, "A"]
    stages, c, size = conv_pool_stages(cfg, in_channels, in_size, make, bn, convs_per_stage, conv_bias=False)
    stages[-1].append(nn.Flatten())
    return StagedNet(
        stages,
        head=nn.Linear(c * size * size, num_classes, bias=False),
        ttm_mode=ttm_mode,
        input_kind="frames",
        input_shape=(in_channels, in_size, in_size),
        input_ttm_mode=input_ttm_mode,
    )


def nmnist_net(
    num_classes: int = 10,
    in_channels: int = 2,
    in_size: int = 34,
    channels: Sequence[int] = (8, 16, 16),
    bn: bool = True,
    convs_per_stage: int = 2,
    neuron: dict | None = None,
    ttm_mode: str = "hard",
    input_ttm_mode: str | None = None,
) -> StagedNet:
    """3 conv + 1 FC for N-MNIST ``[T, B, 2, 34, 34]`` (6,160 weights at the defaults):
    conv 2->8, 8->16, 16->16 (each + pool: 34 -> 17 -> 8 -> 4), head Linear(256, 10).
    Two stages: convs 1-2 and conv 3."""
    return _deployable(
        check_int_list(channels, "channels"),
        check_positive_int(num_classes, "num_classes"),
        check_positive_int(in_channels, "in_channels"),
        check_positive_int(in_size, "in_size"),
        check_bool(bn, "bn"),
        convs_per_stage,
        neuron,
        ttm_mode,
        input_ttm_mode,
    )


def gesture_net(
    num_classes: int = 11,
    in_channels: int = 2,
    in_size: int = 128,
    channels: Sequence[int] = (8, 16, 32, 32),
    hidden: int = 64,
    bn: bool = True,
    neuron: dict | None = None,
    ttm_mode: str = "hard",
    input_ttm_mode: str | None = "trim",
) -> StagedNet:
    """The paper's authors' DVS Gesture net on 128x128 frames ``[T, B, 2, 128, 128]``:

    ``AvgPool 2, conv 2->8 stride 2, BN, IF, AvgPool 2, conv 8->16, BN, IF |
    AvgPool 2, conv 16->32, BN, IF, AvgPool 2, conv 32->32, BN, IF |
    Flatten, FC 512->64, IF`` and the head FC 64->11 (3x3 convs with padding 1, no biases;
    ``|`` separates the 3 stages, a hard TTM at each). 48,768 weight + BN parameters at the
    defaults. The input is trimmed to its first ``T_1`` frames (``input_ttm_mode="trim"``).
    ``channels`` are the four conv widths, ``hidden`` the FC width; the FC input is
    ``channels[3] * (in_size / 32)^2``.
    """
    num_classes = check_positive_int(num_classes, "num_classes")
    in_channels = check_positive_int(in_channels, "in_channels")
    in_size = check_positive_int(in_size, "in_size")
    c1, c2, c3, c4 = _four(check_int_list(channels, "channels"))
    hidden = check_positive_int(hidden, "hidden")
    bn = check_bool(bn, "bn")
    make = neuron_factory("if", neuron)
    size = conv_out(in_size // 2, 2) // 2 // 2 // 2  # pool, conv stride 2, pool, pool, pool
    if size < 1:
        raise InputError(
            f"in_size must be at least 30 pixels for gesture_net's 4 poolings and stride-2 conv "
            f"(the paper's is 128), got {in_size}"
        )
    stages = [
        [nn.AvgPool2d(2), *_unit(in_channels, c1, make, bn, stride=2), nn.AvgPool2d(2), *_unit(c1, c2, make, bn)],
        [nn.AvgPool2d(2), *_unit(c2, c3, make, bn), nn.AvgPool2d(2), *_unit(c3, c4, make, bn)],
        [nn.Flatten(), nn.Linear(c4 * size * size, hidden, bias=False), make()],
    ]
    return StagedNet(
        stages,
        head=nn.Linear(hidden, num_classes, bias=False),
        ttm_mode=ttm_mode,
        input_kind="frames",
        input_shape=(in_channels, in_size, in_size),
        input_ttm_mode=input_ttm_mode,
    )


def _unit(c_in: int, c_out: int, make: NeuronFactory, bn: bool, stride: int = 1) -> list[nn.Module]:
    return conv_unit(c_in, c_out, make, bn, stride=stride, bias=False)


def _four(channels: list[int]) -> list[int]:
    if len(channels) != 4:
        raise InputError(f"channels must be 4 conv widths (the paper's: [8, 16, 32, 32]), got {channels!r}")
    return channels


__all__ = ["gesture_net", "nmnist_net"]
