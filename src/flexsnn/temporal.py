"""Temporal Transformation Module (TTM): resample a spike tensor from ``t_in`` to ``t_out`` steps.

A TTM sits at every stage boundary of a :class:`flexsnn.staged.StagedNet` (and at the input
of a frames model whose data T differs from stage 1's T). Every mode is a linear map over
the time axis, ``out[j] = sum_i M[j, i] * x[i]`` with ``M`` of shape ``[t_out, t_in]``, and
differentiable. "soft" runs as one matrix product; "hard" and "trim" (0/1 matrices) as an
index_select (copies), an index_add (block sums, added left to right) or a slice, on the
``[T, N]`` memory view of ``x`` so that channels_last activations are never re-laid out.
``t_in == t_out`` is the identity (the input tensor is returned as it is).

Modes (PAPER.md, "Temporal Transformation Module"). "hard" and "trim"'s upsampling cut the
longer side into ``fewer = min(t_in, t_out)`` contiguous blocks; block ``k`` ends at
``e_{k+1}``, where ``e_k = k * more / fewer`` (``more = max(t_in, t_out)``) rounded to the
nearest integer with exact halves rounded DOWN, in integers
``e_k = floor((2 * k * more + fewer - 1) / (2 * fewer))`` (see :func:`block_edges`):

``"hard"`` (default)
    ``t_in > t_out``: output ``j`` is the SUM of the input block ``[e_j, e_{j+1})``; the blocks
    partition the input, so the total spike count is kept and outputs become counts.
    Examples: 5 -> 3 gives ``out0 = in0 + in1, out1 = in2, out2 = in3 + in4``; the tie
    3 -> 2 gives ``out0 = in0, out1 = in1 + in2``.
    ``t_in < t_out``: input ``i`` is COPIED to the outputs ``[e_i, e_{i+1})``; the runs
    partition the output, so per-step magnitude is kept. Examples: 3 -> 5 gives
    ``out0 = out1 = in0, out2 = in1, out3 = out4 = in2``; the tie 2 -> 3 gives
    ``out0 = in0, out1 = out2 = in1``.
``"soft"``
    Input step ``i`` is the interval ``[i, i+1)``, output bin ``j`` is
    ``[j * t_in / t_out, (j+1) * t_in / t_out)`` (both in input-step units) and
    ``M[j, i] = max(0, min(i+1, (j+1) * t_in / t_out) - max(i, j * t_in / t_out))``, the length
    of their overlap. The bins partition ``[0, t_in)``, so every input step's weights (a column
    of ``M``) sum to exactly 1: counts are kept in both directions, with no extra scaling.
    Downsampling averages fractional boundary steps; upsampling spreads each input step over
    the output steps it covers (1 -> 2 gives ``0.5 * in0`` twice).
``"trim"``
    ``t_in > t_out``: keep the first ``t_out`` steps (the rest are dropped); ``t_in < t_out``:
    as ``"hard"`` (same tie rule).
"""

from __future__ import annotations

import functools
import math
from fractions import Fraction

import torch

from flexsnn.errors import check_choice, check_positive_int, check_time_first
from flexsnn.multistep import MultiStepModule, from_time_major, steps_like, time_major_order, to_time_major

MODES = ("hard", "soft", "trim")

__all__ = ["MODES", "TTM", "block_edges", "transform_matrix", "ttm"]


def block_edges(t_in: int, t_out: int) -> list[int]:
    """The ``fewer + 1`` block edges of the hard TTM ``t_in -> t_out`` on the longer side's axis.

    ``e_k = floor((2 * k * more + fewer - 1) / (2 * fewer))`` for ``k = 0..fewer``: ``k * more /
    fewer`` rounded to the nearest integer, exact halves DOWN (the authors' ``round(x - 1e-5)``,
    in exact integers). Block ``k`` is ``[e_k, e_{k+1})``: the input steps summed into output
    ``k`` (downsampling) or the output steps that copy input ``k`` (upsampling).
    """
    t_in = check_positive_int(t_in, "t_in")
    t_out = check_positive_int(t_out, "t_out")
    fewer, more = min(t_in, t_out), max(t_in, t_out)
    return [_edge(k, fewer, more) for k in range(fewer + 1)]


def _edge(k: int, fewer: int, more: int) -> int:
    return (2 * k * more + fewer - 1) // (2 * fewer)


def _check_pair(t_in, t_out, mode) -> tuple[int, int, str]:
    return (
        check_positive_int(t_in, "t_in"),
        check_positive_int(t_out, "t_out"),
        check_choice(mode, "mode", MODES),
    )


@functools.lru_cache(maxsize=1024)
def _matrix_cpu64(t_in: int, t_out: int, mode: str) -> torch.Tensor:
    m = torch.zeros(t_out, t_in, dtype=torch.float64)
    if t_in == t_out:
        return torch.eye(t_in, dtype=torch.float64)
    if t_in > t_out and mode == "trim":
        m[torch.arange(t_out), torch.arange(t_out)] = 1.0
    elif mode == "soft":
        width = Fraction(t_in, t_out)  # output bin width in input-step units
        for j in range(t_out):
            lo, hi = j * width, (j + 1) * width
            for i in range(int(lo), min(t_in, math.ceil(hi))):
                overlap = min(Fraction(i + 1), hi) - max(Fraction(i), lo)
                if overlap > 0:
                    m[j, i] = float(overlap)
    elif t_in > t_out:  # hard, down: sum each input block
        edges = block_edges(t_in, t_out)
        for j in range(t_out):
            m[j, edges[j] : edges[j + 1]] = 1.0
    else:  # hard or trim, up: copy each input step to a run of outputs
        edges = block_edges(t_in, t_out)
        for i in range(t_in):
            m[edges[i] : edges[i + 1], i] = 1.0
    return m


@functools.lru_cache(maxsize=256)
def _matrix_on(t_in: int, t_out: int, mode: str, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    # Kept per device/dtype so a CUDA forward does not copy the matrix host->device each call.
    return _matrix_cpu64(t_in, t_out, mode).to(device=device, dtype=dtype)


def transform_matrix(t_in: int, t_out: int, mode: str = "hard") -> torch.Tensor:
    """The TTM as a float64 CPU matrix ``M`` ``[t_out, t_in]``: ``out[j] = sum_i M[j, i] x[i]``.

    Returns a fresh copy (the cached original is never handed out, so it cannot be mutated).
    """
    t_in, t_out, mode = _check_pair(t_in, t_out, mode)
    return _matrix_cpu64(t_in, t_out, mode).clone()


def ttm(x: torch.Tensor, t_out: int, mode: str = "hard") -> torch.Tensor:
    """Resample time-first ``x`` ``[t_in, ...]`` (any trailing shape) to ``[t_out, ...]``.

    Returns ``x`` itself when ``t_in == t_out``. Integer or bool inputs are promoted to the
    default float dtype (the result of "hard" downsampling and "soft" is not binary anyway).
    Differentiable: the backward pass is ``M^T`` applied to the output gradient.
    """
    t_out = check_positive_int(t_out, "t_out")
    mode = check_choice(mode, "mode", MODES)
    x = check_time_first(x, "x", min_dim=1)
    t_in = int(x.shape[0])
    if t_in == t_out:
        return x
    if not (x.is_floating_point() or x.is_complex()):
        x = x.to(torch.get_default_dtype())
    if mode != "soft" and not (t_in > t_out and mode == "trim") and _runs_by_blocks(x):
        return HardTTMFunction.apply(x, t_out)
    order = time_major_order(x)
    flat = to_time_major(x, order)
    if mode == "soft":
        out = _matrix_on(t_in, t_out, mode, x.device, x.dtype) @ flat
    elif t_in > t_out and mode == "trim":
        out = flat[:t_out]
    elif t_in > t_out:  # hard, down: out[j] = sum of its input block, added left to right
        index = torch.tensor(_hard_index(t_in, t_out), device=x.device)
        out = flat.new_zeros(t_out, flat.shape[1]).index_add(0, index, flat)
    else:  # hard or trim, up: out[j] = the input step it copies
        out = flat.index_select(0, torch.tensor(_hard_index(t_in, t_out), device=x.device))
    return from_time_major(out, x.shape, order)


def _hard_index(t_in: int, t_out: int) -> tuple[int, ...]:
    """Hard TTM as indices (the position of the single 1 in each column / row of ``M``):
    down, the output block of every input step; up, the input step every output step copies.

    Integer arithmetic only and no cache: torch.compile folds it into a constant instead of
    guarding on a cache that every new config would change.
    """
    fewer, more = min(t_in, t_out), max(t_in, t_out)
    return tuple(k for k in range(fewer) for _ in range(_edge(k + 1, fewer, more) - _edge(k, fewer, more)))


def _runs_by_blocks(x: torch.Tensor) -> bool:
    # On CPU a block of time steps is summed or copied slice by slice, in the input's own
    # layout; index_add / index_select (one kernel each, better on GPUs) go through a [T, N]
    # view (a copy for batch-first frames) and a zero-filled result or gradient.
    return x.device.type == "cpu" and not torch.compiler.is_compiling()


def _sum_blocks(x: torch.Tensor, edges: list[int]) -> torch.Tensor:
    """``out[k] = x[e_k] + ... + x[e_{k+1} - 1]``, added left to right."""
    out = steps_like(x[0], len(edges) - 1, x.device)
    for k in range(len(edges) - 1):
        lo, hi = edges[k], edges[k + 1]
        if hi - lo == 1:
            out[k].copy_(x[lo])
            continue
        torch.add(x[lo], x[lo + 1], out=out[k])
        for i in range(lo + 2, hi):
            out[k].add_(x[i])
    return out


def _repeat_blocks(x: torch.Tensor, edges: list[int]) -> torch.Tensor:
    """``out[e_k : e_{k+1}] = x[k]`` for every step ``k`` of ``x``."""
    out = steps_like(x[0], edges[-1], x.device)
    for k in range(len(edges) - 1):
        lo, hi = edges[k], edges[k + 1]
        out[lo:hi].copy_(x[k].expand(hi - lo, *x.shape[1:]))
    return out


class HardTTMFunction(torch.autograd.Function):
    """The hard TTM ``x [t_in, ...] -> [t_out, ...]`` (t_in != t_out) block by block.

    Down: block sums (:func:`_sum_blocks`); up: copied runs (:func:`_repeat_blocks`). Its
    transpose ``M^T`` is the hard TTM ``t_out -> t_in`` (the edges depend only on the two
    lengths), so the backward is this function the other way round, differentiable again.
    Every step of the result is laid out as ``x``'s steps (channels_last stays so).
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, t_out: int) -> torch.Tensor:  # noqa: D102
        t_in = int(x.shape[0])
        ctx.t_in = t_in
        edges = block_edges(t_in, t_out)
        return _sum_blocks(x, edges) if t_in > t_out else _repeat_blocks(x, edges)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # noqa: D102
        return HardTTMFunction.apply(grad, ctx.t_in), None


class TTM(MultiStepModule):
    """Temporal Transformation Module: ``forward(x [t_in, B, ...], t_out) -> [t_out, B, ...]``.

    A parameter-free module wrapping :func:`ttm` (see the module docstring for the modes).
    """

    def __init__(self, mode: str = "hard") -> None:
        super().__init__()
        self.mode = check_choice(mode, "mode", MODES)

    def forward(self, x: torch.Tensor, t_out: int) -> torch.Tensor:  # noqa: D102
        return ttm(x, t_out, self.mode)

    def extra_repr(self) -> str:
        return f"mode={self.mode!r}"
