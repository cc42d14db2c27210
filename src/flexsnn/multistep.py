"""Time-first execution: which layers see ``[T, B, ...]`` and which see ``[T*B, ...]``.

Every tensor flowing between flexsnn layers is time-first, ``[T, B, ...]`` (the layout of
SpikingJelly's multi-step mode and Norse). Layers with state over time (spiking neurons) and
layers that change T (TTMs) subclass :class:`MultiStepModule` and receive the time-first
tensor as it is. Every other layer (conv, BatchNorm, pooling, linear, flatten, dropout) is
stateless in time and runs once on the flattened ``[T*B, ...]`` view, which is both correct
and the fastest way to run it.
"""
from __future__ import annotations

import math

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


# ---- the [T, N] memory view of a time-first tensor ----------------------------------------
# Kernels that act along time only (TTMs, compiled neurons) see a [T, ...] tensor as [T, N].
# A channels_last activation [T, B, C, H, W] is not viewable as [T, B*C*H*W]: reshaping it
# copies it, and the next convolution copies the result back to channels_last. Time being the
# outermost dimension in memory is all these kernels need, so they flatten in memory order.
CHANNELS_LAST_ORDER = (0, 1, 3, 4, 2)  # [T, B, C, H, W] -> [T, B, H, W, C]


def time_major_order(x: torch.Tensor) -> tuple[int, ...]:
    """A permutation (time first) under which ``x`` is contiguous; the identity otherwise."""
    if x.dim() == 5 and not x.is_contiguous() and x.permute(CHANNELS_LAST_ORDER).is_contiguous():
        return CHANNELS_LAST_ORDER
    return tuple(range(x.dim()))


def to_time_major(x: torch.Tensor, order: tuple[int, ...]) -> torch.Tensor:
    """``x`` ``[T, ...]`` as ``[T, N]`` in ``order`` (a view when ``x`` is laid out that way)."""
    xp = x.permute(order)
    return xp.reshape(x.shape[0], math.prod(xp.shape[1:]))


def from_time_major(flat: torch.Tensor, shape, order: tuple[int, ...]) -> torch.Tensor:
    """Inverse of :func:`to_time_major`: ``[T', N]`` -> ``[T', *shape[1:]]`` with the layout of ``order``."""
    inner = [shape[k] for k in order[1:]]
    inverse = tuple(sorted(range(len(order)), key=order.__getitem__))
    return flat.reshape(flat.shape[0], *inner).permute(inverse)
