"""Spiking ResNets for CIFAR-size inputs (ResNet-18, ResNet-19), one stage per residual block.

Layout ``[T, B, C, H, W]`` inside; static images ``[B, 3, 32, 32]`` are direct-encoded by the
StagedNet, DVS frames (``in_channels=2, input_kind="frames"``) come as ``[T, B, 2, H, W]``.
The stem (conv3x3 + BN + LIF) belongs to the first stage and the global average pool to the
last; the head is a Linear on the pooled features (both nets, as the paper's authors build
them). A stage is one
:class:`BasicBlock`, or ``group_block_num`` consecutive blocks (equivalent to drawing one T
per group of stages in the sampler; use one of the two, not both).
"""

from __future__ import annotations

import torch
from torch import nn

from flexsnn.errors import check_choice, check_positive_int
from flexsnn.models.common import NeuronFactory, check_width, conv_unit, neuron_factory, scaled
from flexsnn.multistep import MultiStepModule, TimeFirstSequential
from flexsnn.staged import INPUT_KINDS, StagedNet


class BasicBlock(MultiStepModule):
    """``x [T, B, C, H, W]`` -> ``neuron(BN(conv(neuron(BN(conv(x))))) + shortcut(x))``.

    The shortcut is the identity, or conv1x1 + BN when the stride or the width changes.
    """

    def __init__(self, in_planes: int, planes: int, stride: int, neuron: NeuronFactory) -> None:
        super().__init__()
        self.residual = TimeFirstSequential(
            *conv_unit(in_planes, planes, neuron, bn=True, stride=stride),
            nn.Conv2d(planes, planes, 3, padding=1, bias=False),
            nn.BatchNorm2d(planes),
        )
        if stride != 1 or in_planes != planes:
            self.shortcut = TimeFirstSequential(
                nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False), nn.BatchNorm2d(planes)
            )
        else:
            self.shortcut = TimeFirstSequential()  # empty: returns x unchanged
        self.neuron = neuron()

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return self.neuron(self.residual(x) + self.shortcut(x))


def _resnet(
    layers: list[tuple[int, int, int]],
    stem: int,
    num_classes: int,
    in_channels: int,
    input_kind: str,
    width: float,
    group_block_num: int,
    neuron: dict | None,
    ttm_mode: str,
    input_ttm_mode: str | None,
) -> StagedNet:
    num_classes = check_positive_int(num_classes, "num_classes")
    in_channels = check_positive_int(in_channels, "in_channels")
    check_choice(input_kind, "input_kind", INPUT_KINDS)
    width = check_width(width)
    group_block_num = check_positive_int(group_block_num, "group_block_num")
    make = neuron_factory("lif", neuron)
    planes_in = scaled(stem, width)
    blocks: list[nn.Module] = []
    for planes, count, stride in layers:
        planes = scaled(planes, width)
        for k in range(count):
            blocks.append(BasicBlock(planes_in, planes, stride if k == 0 else 1, make))
            planes_in = planes
    stages: list[list[nn.Module]] = [blocks[i : i + group_block_num] for i in range(0, len(blocks), group_block_num)]
    stages[0] = conv_unit(in_channels, scaled(stem, width), make, bn=True) + stages[0]
    stages[-1] = stages[-1] + [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    return StagedNet(
        stages,
        head=nn.Linear(planes_in, num_classes),
        ttm_mode=ttm_mode,
        input_kind=input_kind,
        input_shape=(in_channels, None, None),
        input_ttm_mode=input_ttm_mode,
    )


def resnet18(
    num_classes: int = 10,
    in_channels: int = 3,
    input_kind: str = "static",
    width: float = 1.0,
    group_block_num: int = 1,
    neuron: dict | None = None,
    ttm_mode: str = "hard",
    input_ttm_mode: str | None = None,
) -> StagedNet:
    """CIFAR ResNet-18: stem 64, blocks [2, 2, 2, 2] x [64, 128, 256, 512] (strides 1, 2, 2, 2).

    8 blocks -> ``ceil(8 / group_block_num)`` stages; head Linear(512, num_classes).
    ``input_ttm_mode`` (frames input): the TTM from the data's T to stage 1's (default
    ``ttm_mode``; ``"trim"`` feeds the first T_1 frames).
    """
    return _resnet(
        [(64, 2, 1), (128, 2, 2), (256, 2, 2), (512, 2, 2)],
        64,
        num_classes,
        in_channels,
        input_kind,
        width,
        group_block_num,
        neuron,
        ttm_mode,
        input_ttm_mode,
    )


def resnet19(
    num_classes: int = 10,
    in_channels: int = 3,
    input_kind: str = "static",
    width: float = 1.0,
    group_block_num: int = 1,
    neuron: dict | None = None,
    ttm_mode: str = "hard",
    input_ttm_mode: str | None = None,
) -> StagedNet:
    """CIFAR ResNet-19 as the paper's authors build it: stem 128, blocks [3, 3, 2] x
    [128, 256, 512] (strides 1, 2, 2), global pool, head Linear(512, num_classes) (no hidden
    FC; 12,569,226 parameters for 10 classes).

    8 blocks -> ``ceil(8 / group_block_num)`` stages.
    """
    return _resnet(
        [(128, 3, 1), (256, 3, 2), (512, 2, 2)],
        128,
        num_classes,
        in_channels,
        input_kind,
        width,
        group_block_num,
        neuron,
        ttm_mode,
        input_ttm_mode,
    )


__all__ = ["BasicBlock", "resnet18", "resnet19"]
