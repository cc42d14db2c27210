"""Deployable nets for event-driven hardware (PAPER.md "Deployment path").

Bias-free throughout: Conv2d(bias=False) [+ BatchNorm2d, folded into the conv before
deployment] + IF(v_th=1, reset="subtract", multi_spike=True, v_min=-1), AvgPool2d(2) after
every conv, Flatten, and a Linear(bias=False) head with no neuron (the event-driven readout
is its accumulated input). A stage is a group of ``convs_per_stage`` (default 2) convs.
Input: event frames ``[T, B, 2, H, W]``.
"""
from __future__ import annotations

from typing import Optional, Sequence

from torch import nn

from flexsnn.errors import check_positive_int
from flexsnn.models.common import check_bool, check_int_list, conv_pool_stages, neuron_factory
from flexsnn.staged import StagedNet


def _deployable(
    channels: list[int], num_classes: int, in_channels: int, in_size: int, bn: bool,
    convs_per_stage: int, neuron: Optional[dict], ttm_mode: str,
) -> StagedNet:
    make = neuron_factory("if", neuron)
    cfg: list = []
    for c in channels:
        cfg += [c, "A"]
    stages, c, size = conv_pool_stages(cfg, in_channels, in_size, make, bn, convs_per_stage, conv_bias=False)
    stages[-1].append(nn.Flatten())
    return StagedNet(stages, head=nn.Linear(c * size * size, num_classes, bias=False), ttm_mode=ttm_mode,
                     input_kind="frames", input_shape=(in_channels, in_size, in_size))


def nmnist_net(
    num_classes: int = 10,
    in_channels: int = 2,
    in_size: int = 34,
    channels: Sequence[int] = (8, 16, 16),
    bn: bool = True,
    convs_per_stage: int = 2,
    neuron: Optional[dict] = None,
    ttm_mode: str = "hard",
) -> StagedNet:
    """3 conv + 1 FC for N-MNIST ``[T, B, 2, 34, 34]`` (6,160 weights at the defaults):
    conv 2->8, 8->16, 16->16 (each + pool: 34 -> 17 -> 8 -> 4), head Linear(256, 10).
    Two stages: convs 1-2 and conv 3."""
    return _deployable(check_int_list(channels, "channels"), check_positive_int(num_classes, "num_classes"),
                       check_positive_int(in_channels, "in_channels"), check_positive_int(in_size, "in_size"),
                       check_bool(bn, "bn"), convs_per_stage, neuron, ttm_mode)


def gesture_net(
    num_classes: int = 11,
    in_channels: int = 2,
    in_size: int = 32,
    channels: Sequence[int] = (16, 32, 32, 64),
    bn: bool = True,
    convs_per_stage: int = 2,
    neuron: Optional[dict] = None,
    ttm_mode: str = "hard",
) -> StagedNet:
    """4-conv net for DVS Gesture frames ``[T, B, 2, 32, 32]`` (or ``in_size=64``): convs
    2->16->32->32->64 each + pool, head Linear(64 * (in_size/16)^2, 11). Two stages."""
    return _deployable(check_int_list(channels, "channels"), check_positive_int(num_classes, "num_classes"),
                       check_positive_int(in_channels, "in_channels"), check_positive_int(in_size, "in_size"),
                       check_bool(bn, "bn"), convs_per_stage, neuron, ttm_mode)


__all__ = ["gesture_net", "nmnist_net"]
