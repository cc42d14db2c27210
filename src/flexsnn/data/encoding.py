"""Input encodings that produce time-first ``[T, B, ...]`` tensors.

Direct encoding (the paper's choice for static images) feeds the same analog input at every
time step; the first spiking layer turns it into spikes. Event frames arrive from loaders
batch-first ``[B, T, ...]`` and are transposed to time-first.
"""
from __future__ import annotations

import torch

from flexsnn.errors import InputError, check_positive_int


def direct_encode(x: torch.Tensor, t: int) -> torch.Tensor:
    """Repeat a static batch ``x`` ``[B, ...]`` over ``t`` steps: ``[t, B, ...]``.

    The result is an ``expand``ed view (no copy): every step shares ``x``'s memory, so write
    to it only after ``.contiguous()``.
    """
    t = check_positive_int(t, "t")
    if not isinstance(x, torch.Tensor):
        raise InputError(f"x must be a torch.Tensor shaped [B, ...], got {type(x).__name__}")
    if x.dim() < 1:
        raise InputError("x must have a batch dimension [B, ...], got a 0-dim tensor")
    return x.unsqueeze(0).expand(t, *x.shape)


def frames_to_time_first(x: torch.Tensor) -> torch.Tensor:
    """Batch-first frames ``[B, T, ...]`` (as DataLoaders yield them) -> time-first ``[T, B, ...]``.

    Returns a transposed view; layers run on it through ``reshape``, which copies if needed.
    """
    if not isinstance(x, torch.Tensor):
        raise InputError(f"x must be a torch.Tensor shaped [B, T, ...], got {type(x).__name__}")
    if x.dim() < 2:
        raise InputError(f"x must be batch-first frames [B, T, ...] with at least 2 dims, got shape {tuple(x.shape)}")
    if x.shape[1] < 1:
        raise InputError("x has T = 0 time steps; expected [B, T, ...] with T >= 1")
    return x.transpose(0, 1)
