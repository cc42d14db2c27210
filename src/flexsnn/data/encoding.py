"""The one helper turning a loader batch into a model's time-first input.

Loaders yield event frames batch-first ``[B, T, ...]`` and static images ``[B, ...]``.
:func:`model_input` gives the model what it takes:

- frames: the time-first view ``[T, B, ...]`` (a transpose, no copy; layers run on it through
  ``reshape``, which copies if needed);
- static: ``x`` unchanged, since a :class:`~flexsnn.staged.StagedNet` repeats it over its first
  stage's ``T`` itself (direct encoding, the paper's choice for images); with ``t=`` the repeat
  is done here, ``[t, B, ...]``, for models that take time-first input only. The repeat is an
  ``expand``ed view: every step shares ``x``'s memory, so write to it only after
  ``.contiguous()``.
"""

from __future__ import annotations

from typing import Any

import torch

from flexsnn.errors import InputError, check_choice, check_positive_int

__all__ = ["INPUT_KINDS", "model_input"]

INPUT_KINDS = ("frames", "static")


def model_input(x: torch.Tensor, kind: Any = "frames", t: int | None = None) -> torch.Tensor:
    """A loader batch ``x`` as the model takes it (see the module docstring).

    Args:
        x: ``[B, T, ...]`` frames or ``[B, ...]`` static inputs.
        kind: ``"frames"`` / ``"static"``, or a model whose ``input_kind`` attribute says
            which (models without one are static).
        t: static only: repeat over ``t`` steps to ``[t, B, ...]`` (direct encoding).
    """
    if not isinstance(kind, str):
        kind = getattr(kind, "input_kind", "static")
    check_choice(kind, "kind", INPUT_KINDS)
    layout = "[B, T, ...]" if kind == "frames" else "[B, ...]"
    if not isinstance(x, torch.Tensor):
        raise InputError(f"x must be a torch.Tensor shaped {layout}, got {type(x).__name__}")
    if kind == "frames":
        if t is not None:
            raise InputError("t applies to static input (direct encoding); frames carry their own T")
        if x.dim() < 2:
            raise InputError(
                f"x must be batch-first frames [B, T, ...] with at least 2 dims, got shape {tuple(x.shape)}"
            )
        if x.shape[1] < 1:
            raise InputError("x has T = 0 time steps; expected [B, T, ...] with T >= 1")
        return x.transpose(0, 1)
    if x.dim() < 1:
        raise InputError("x must have a batch dimension [B, ...], got a 0-dim tensor")
    if t is None:
        return x
    t = check_positive_int(t, "t")
    return x.unsqueeze(0).expand(t, *x.shape)
