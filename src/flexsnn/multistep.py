"""Time-first execution: which layers see ``[T, B, ...]`` and which see ``[T*B, ...]``.

Every tensor flowing between flexsnn layers is time-first, ``[T, B, ...]`` (the layout of
SpikingJelly's multi-step mode and Norse). Layers with state over time (spiking neurons) and
layers that change T (TTMs) subclass :class:`MultiStepModule` and receive the time-first
tensor as it is. Every other layer (conv, BatchNorm, pooling, linear, flatten, dropout) is
stateless in time and runs once on the flattened ``[T*B, ...]`` view, which is both correct
and the fastest way to run it.
"""
from __future__ import annotations

import torch
from torch import nn


class MultiStepModule(nn.Module):
    """Marker base class: ``forward`` takes and returns time-first ``[T, B, ...]`` tensors."""


def is_multistep(module: nn.Module) -> bool:
    return isinstance(module, MultiStepModule)


def apply_flat(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Run a time-stateless ``module`` on ``x`` ``[T, B, ...]`` via the ``[T*B, ...]`` view."""
    t, b = x.shape[0], x.shape[1]
    y = module(x.reshape(t * b, *x.shape[2:]))
    return y.reshape(t, b, *y.shape[1:])


def run_time_first(layers, x: torch.Tensor) -> torch.Tensor:
    """Run a sequence of layers on ``x`` ``[T, B, ...]``, flattening time for stateless ones."""
    for layer in layers:
        x = layer(x) if is_multistep(layer) else apply_flat(layer, x)
    return x


class TimeFirstSequential(nn.Sequential):
    """An ``nn.Sequential`` that takes ``[T, B, ...]`` and may mix neurons with plain layers.

    Plain PyTorch layers are applied to the ``[T*B, ...]`` view, multi-step layers to the
    time-first tensor, so users build SNNs from ordinary layers without wrappers.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return run_time_first(self, x)
