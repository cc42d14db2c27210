"""Fused multi-step LIF / IF: one autograd node for all T steps, BPTT written by hand.

Same dynamics, values and surrogate gradients as the reference loop
(:mod:`flexsnn.neurons.reference`). Layout: ``x`` ``[T, B, ...]`` -> ``(spikes [T, B, ...],
v_last [B, ...])``. The node runs a pair of :class:`~flexsnn.neurons.kernels.Kernels`: on
float32 CPU tensors the numba kernels of :mod:`flexsnn.neurons.cpu_kernels` where they apply
(one pass per step; the same spikes bit for bit), else the eager loops of
:mod:`flexsnn.neurons.kernels` (forward without a graph, saving only the pre-clip membrane;
backward walking the steps from the end); :mod:`flexsnn.neurons.compiled` passes its compiled
kernels through the same node.

Public entry point: :func:`flexsnn.neurons.lif_multistep` with ``backend="fused"`` (or
``"auto"``, the default of the function and the LIF / IF layers).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from flexsnn.buffers import STEP_BUFFERS
from flexsnn.multistep import avg_pool2d_backward_into, memory_format_of, steps_like
from flexsnn.neurons.kernels import EAGER_KERNELS, Kernels, backward_loop, forward_loop, forward_traced
from flexsnn.neurons.params import NeuronParams
from flexsnn.neurons.reference import reference_multistep


class FusedLIFFunction(torch.autograd.Function):
    """autograd.Function over all T steps: ``apply(x, params, kernels=None) -> (spikes, v_last)``.

    ``kernels`` (default: the eager loops) lets :mod:`flexsnn.neurons.compiled` run its
    compiled kernels through the same node.
    """

    @staticmethod
    def forward(ctx, x, p, kernels=None):  # noqa: D102
        kernels = _kernels_for(x, p, kernels or EAGER_KERNELS)
        spikes, v_last, h_all = kernels.forward(x, p, True)
        ctx.save_for_backward(h_all)
        ctx.set_materialize_grads(False)  # an unused v_last (the usual case) gets no zero gradient
        ctx.params = p
        ctx.kernels = kernels
        return spikes, v_last

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_spikes, grad_v):  # noqa: D102
        (h_all,) = ctx.saved_tensors
        return ctx.kernels.backward(h_all, grad_spikes, grad_v, ctx.params), None, None


def fused_multistep(
    x: torch.Tensor, p: NeuronParams, kernels: Kernels = EAGER_KERNELS
) -> tuple[torch.Tensor, torch.Tensor]:
    """Fused dynamics (no input checks); saves nothing when no gradient is needed.

    Under ``torch.compile`` (InferenceRunner, a user's compiled model) the eager loops cannot
    be traced (dynamo rejects ``out=`` into channels_last slices), so the traceable
    formulations run instead: :func:`~flexsnn.neurons.kernels.forward_traced`, which inductor
    fuses into one kernel, or the reference loop when a gradient is needed.
    """
    if torch.compiler.is_compiling() and kernels is EAGER_KERNELS:
        if torch.is_grad_enabled() and x.requires_grad:
            return reference_multistep(x, p)
        spikes, v_last, _ = forward_traced(x, p, False)
        return spikes, v_last
    if torch.is_grad_enabled() and x.requires_grad:
        return FusedLIFFunction.apply(x, p, kernels)
    with torch.no_grad():
        spikes, v_last, _ = _kernels_for(x, p, kernels).forward(x, p, False)
    return spikes, v_last


def _cpu_kernels(x: torch.Tensor, p: NeuronParams):
    """:mod:`flexsnn.neurons.cpu_kernels` when its numba kernels run ``x`` with ``p``, else None
    (imported on the first CPU float32 call: numba is not loaded for anything else)."""
    if x.device.type != "cpu" or x.dtype != torch.float32:
        return None
    import flexsnn.neurons.cpu_kernels as cpu_kernels

    return cpu_kernels if cpu_kernels.supports(x, p) else None


def _kernels_for(x: torch.Tensor, p: NeuronParams, kernels: Kernels) -> Kernels:
    """The numba kernels in place of the eager loops where they apply (the same values)."""
    if kernels is EAGER_KERNELS:
        cpu = _cpu_kernels(x, p)
        if cpu is not None:
            return cpu.CPU_KERNELS
    return kernels


# ---- a neuron followed by average pooling, in one pass ----------------------------------------
def _pool_steps_into(x: torch.Tensor, pool_args: tuple):
    """The ``[T, B, C, H', W']`` result buffer and the sink that pools step t's spikes into it."""
    out = steps_like(F.avg_pool2d(x[0].to("meta"), *pool_args), x.shape[0], x.device)

    def sink(t: int, s: torch.Tensor) -> None:
        torch.ops.aten.avg_pool2d.out(s, *pool_args, out=out[t])

    return out, sink


class FusedLIFAvgPoolFunction(torch.autograd.Function):
    """The fused neuron over all T steps followed by ``F.avg_pool2d`` of each step's spikes,
    one autograd node: ``apply(x, p, pool_args) -> (pooled spikes [T, B, C, H', W'], v_last)``
    (``v_last``: the membrane after the last step, not differentiable)
    (``pool_args``: avg_pool2d's kernel_size, stride, padding, ceil_mode, count_include_pad,
    divisor_override).

    The spikes ``[T, B, C, H, W]``, as large as the neuron's input, are never stored: each
    step's spikes sit in one step buffer, warm in cache, and are pooled at once; the backward
    takes each step's gradient back through the pooling when the neuron's loop reaches that
    step. Values and gradients are those of the two layers run one after the other (the same
    kernels, step by step; test_neurons_fused.py compares them bit for bit).
    """

    @staticmethod
    def forward(ctx, x, p, pool_args):  # noqa: D102
        out, v_last, h_all, ctx.cpu = _pooled_forward(x, p, pool_args, True)
        ctx.save_for_backward(h_all)
        ctx.mark_non_differentiable(v_last)
        ctx.set_materialize_grads(False)
        ctx.params = p
        ctx.pool_args = pool_args
        return out, v_last

    @staticmethod
    @once_differentiable
    def backward(ctx, grad, _grad_v):  # noqa: D102
        if grad is None:
            return None, None, None
        (h,) = ctx.saved_tensors
        if ctx.cpu is not None:
            cpu, k, divisor = ctx.cpu
            return cpu.pooled_backward(h, grad, ctx.params, k, divisor), None, None
        return backward_loop(h, _pool_backward_steps(grad, h, ctx.pool_args), None, ctx.params), None, None


def _pooled_forward(x: torch.Tensor, p: NeuronParams, pool_args: tuple, keep_membrane: bool):
    """``(pooled, v_last, h or None, cpu)``: the numba kernels where k x k windows tile a
    channels_last map from its top-left corner (``cpu`` = (module, k, divisor) for the
    backward), else the eager loop (``cpu`` None)."""
    cpu = _cpu_kernels(x, p)
    k = None if cpu is None else _tiles(pool_args, x[0], floor=True)
    if k is not None:
        divisor = pool_args[5] or k * k
        out, v_last, h_all = cpu.pooled_forward(x, p, keep_membrane, k, divisor)
        return out, v_last, h_all, (cpu, k, divisor)
    out, sink = _pool_steps_into(x, pool_args)
    _, v_last, h_all = forward_loop(x, p, keep_membrane, sink=sink)
    return out, v_last, h_all, None


def _tiles(pool_args: tuple, step: torch.Tensor, floor: bool = False) -> int | None:
    """k where the pooling tiles a channels_last step exactly with k x k windows (kernel =
    stride = k, no padding, sizes divisible by k; ceil_mode then changes nothing), else None.
    ``floor=True`` also takes sizes not divisible by k without ceil_mode (the windows tile the
    top-left part; the last rows and columns are in none)."""
    kernel, stride, padding, ceil_mode, _, _ = pool_args
    k = _pair(kernel)
    if (
        k[0] != k[1]
        or _pair(stride) != k
        or _pair(padding) != (0, 0)
        or memory_format_of(step) is not torch.channels_last
        or min(step.shape[2], step.shape[3]) < k[0]
    ):
        return None
    if (step.shape[2] % k[0] or step.shape[3] % k[0]) and (ceil_mode or not floor):
        return None
    return k[0]


def _pair(v) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[-1]))


def _pool_backward_steps(grad: torch.Tensor, h: torch.Tensor, pool_args: tuple):
    """The ``(t, s_prime, out)`` function of :func:`backward_loop`: ``out = s_prime * dL/ds[t]``
    with ``dL/ds[t]`` the pooling's backward of ``grad[t]``.

    Where the windows tile the map, ``dL/ds`` is ``grad[t] / divisor`` at every position of
    its window: k * k strided multiplies into ``out`` (values as avg_pool2d_backward's, without
    its zero fill and its step-sized result). Otherwise avg_pool2d_backward runs into one step
    buffer.
    """
    k = _tiles(pool_args, h[0])
    if k is not None:
        divisor = pool_args[5] or k * k
        offsets = [(i, j) for i in range(k) for j in range(k)]
        layout = torch.empty(grad.shape[1:], dtype=grad.dtype, device="meta", memory_format=torch.channels_last)
        g = steps_like(layout, 1, grad.device)[0]  # one channels_last step, pooled on CPU

        def tiled(t: int, s_prime: torch.Tensor, out: torch.Tensor) -> None:
            torch.div(grad[t], divisor, out=g)  # into one channels_last step buffer
            for i, j in offsets:  # one multiply per window position: a third faster than one broadcast
                torch.mul(s_prime[:, :, i::k, j::k], g, out=out[:, :, i::k, j::k])

        return tiled
    step = STEP_BUFFERS.empty_like(h[0])

    def general(t: int, s_prime: torch.Tensor, out: torch.Tensor) -> None:
        torch.mul(s_prime, avg_pool2d_backward_into(grad[t], h[t], pool_args, step), out=out)

    return general


def fused_avg_pool(x: torch.Tensor, p: NeuronParams, pool_args: tuple) -> tuple[torch.Tensor, torch.Tensor]:
    """``avg_pool2d`` (``pool_args``) of every step of the fused neuron's spikes, in one pass:
    ``(pooled [T, B, C, H', W'], v_last [B, C, H, W])``; only the pooled spikes carry a gradient."""
    if torch.is_grad_enabled() and x.requires_grad:
        return FusedLIFAvgPoolFunction.apply(x, p, pool_args)
    with torch.no_grad():
        out, v_last, _, _ = _pooled_forward(x, p, pool_args, False)
    return out, v_last
