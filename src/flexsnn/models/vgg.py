"""Spiking VGGs: ``vgg14`` (static CIFAR images) and ``vgg9_dvs`` (CIFAR10-DVS frames).

Every conv is conv3x3 (padding 1) + BN + neuron; pooling is AvgPool2d(2); the classifier head
is a single Linear on the flattened last feature map. A stage is ``convs_per_stage``
consecutive convs with their pooling: VGG-14 defaults to one stage per conv (13 stages, as
the paper's authors split it), VGG-9 to two convs per stage. Layout ``[T, B, C, H, W]`` inside.
"""

from __future__ import annotations

from torch import nn

from flexsnn.errors import InputError, check_choice, check_positive_int
from flexsnn.models.common import check_bool, check_width, conv_pool_stages, neuron_factory
from flexsnn.staged import INPUT_KINDS, StagedNet

#: 13 convs + 1 linear = 14 weight layers (VGG-16's conv stack without its hidden FC layers).
VGG14_CFG = [64, 64, "A", 128, 128, "A", 256, 256, 256, "A", 512, 512, 512, "A", 512, 512, 512, "A"]
#: 8 convs + 1 linear (the VGGSNN of the TET / CIFAR10-DVS literature).
VGG9_CFG = [64, 128, "A", 256, 256, "A", 512, 512, "A", 512, 512, "A"]


def vgg14(
    num_classes: int = 10,
    in_channels: int = 3,
    in_size: int = 32,
    input_kind: str = "static",
    width: float = 1.0,
    convs_per_stage: int = 1,
    neuron: dict | None = None,
    ttm_mode: str = "hard",
    input_ttm_mode: str | None = None,
) -> StagedNet:
    """VGG-14 on ``[B, 3, in_size, in_size]`` images: 13 convs, one stage each by default
    (``convs_per_stage=2`` gives 7 stages of 2, 2, 2, 2, 2, 2, 1 convs), 5 avg-pools, head
    Linear(512 * (in_size/32)^2, num_classes)."""
    num_classes = check_positive_int(num_classes, "num_classes")
    in_channels = check_positive_int(in_channels, "in_channels")
    in_size = check_positive_int(in_size, "in_size")
    check_choice(input_kind, "input_kind", INPUT_KINDS)
    make = neuron_factory("lif", neuron)
    stages, c, size = conv_pool_stages(VGG14_CFG, in_channels, in_size, make, True, convs_per_stage, check_width(width))
    stages[-1].append(nn.Flatten())
    return StagedNet(
        stages,
        head=nn.Linear(c * size * size, num_classes),
        ttm_mode=ttm_mode,
        input_kind=input_kind,
        input_shape=(in_channels, in_size, in_size),
        input_ttm_mode=input_ttm_mode,
    )


def vgg9_dvs(
    num_classes: int = 10,
    in_channels: int = 2,
    in_size: int = 32,
    input_pool: int = 1,
    deployable: bool = False,
    bn: bool = True,
    width: float = 1.0,
    convs_per_stage: int = 2,
    neuron: dict | None = None,
    ttm_mode: str = "hard",
    input_ttm_mode: str | None = None,
) -> StagedNet:
    """VGG-9 on frames ``[T, B, 2, in_size, in_size]``: 8 convs in 4 stages, 4 avg-pools.

    ``input_pool`` average-pools the input first (the paper feeds 128x128 CIFAR10-DVS pooled
    by 4, i.e. ``in_size=128, input_pool=4``; or pool in the data pipeline and keep 32, 1).
    ``deployable=True`` builds the bias-free event-driven variant: Conv2d(bias=False) + BN
    (folded before deployment) + IF(v_th=1, subtract reset, multi-spike, v_min=-1), head
    Linear(bias=False) with no neuron. Otherwise LIF neurons (time-stepped training).
    Head: Linear(512 * (in_size / input_pool / 16)^2, num_classes).
    """
    num_classes = check_positive_int(num_classes, "num_classes")
    in_channels = check_positive_int(in_channels, "in_channels")
    in_size = check_positive_int(in_size, "in_size")
    input_pool = check_positive_int(input_pool, "input_pool")
    deployable = check_bool(deployable, "deployable")
    bn = check_bool(bn, "bn")
    if in_size % input_pool:
        raise InputError(f"in_size ({in_size}) must be divisible by input_pool ({input_pool})")
    make = neuron_factory("if" if deployable else "lif", neuron)
    stages, c, size = conv_pool_stages(
        VGG9_CFG,
        in_channels,
        in_size // input_pool,
        make,
        bn,
        convs_per_stage,
        check_width(width),
        conv_bias=False if deployable else None,
    )
    if input_pool > 1:
        stages[0].insert(0, nn.AvgPool2d(input_pool))
    stages[-1].append(nn.Flatten())
    head = nn.Linear(c * size * size, num_classes, bias=not deployable)
    return StagedNet(
        stages,
        head=head,
        ttm_mode=ttm_mode,
        input_kind="frames",
        input_shape=(in_channels, in_size, in_size),
        input_ttm_mode=input_ttm_mode,
    )


__all__ = ["VGG14_CFG", "VGG9_CFG", "vgg14", "vgg9_dvs"]
