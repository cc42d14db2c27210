"""Fused multi-step LIF / IF: one autograd node for all T steps, BPTT written by hand.

Same dynamics, values and surrogate gradients as the reference loop
(:mod:`flexsnn.neurons.reference`). Layout: ``x`` ``[T, B, ...]`` -> ``(spikes [T, B, ...],
v_last [B, ...])``. The node runs a pair of :class:`~flexsnn.neurons.kernels.Kernels`: by
default the eager loops of :mod:`flexsnn.neurons.kernels` (forward without a graph, saving
only the pre-clip membrane; backward walking the steps from the end);
:mod:`flexsnn.neurons.compiled` passes its compiled kernels through the same node.

Public entry point: :func:`flexsnn.neurons.lif_multistep` with ``backend="fused"`` (or
``"auto"``, the default of the function and the LIF / IF layers).
"""

from __future__ import annotations

import torch
from torch.autograd.function import once_differentiable

from flexsnn.neurons.kernels import EAGER_KERNELS, Kernels, forward_traced
from flexsnn.neurons.params import NeuronParams
from flexsnn.neurons.reference import reference_multistep


class FusedLIFFunction(torch.autograd.Function):
    """autograd.Function over all T steps: ``apply(x, params, kernels=None) -> (spikes, v_last)``.

    ``kernels`` (default: the eager loops) lets :mod:`flexsnn.neurons.compiled` run its
    compiled kernels through the same node.
    """

    @staticmethod
    def forward(ctx, x, p, kernels=None):  # noqa: D102
        kernels = kernels or EAGER_KERNELS
        spikes, v_last, h_all = kernels.forward(x, p, True)
        ctx.save_for_backward(h_all)
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
        spikes, v_last, _ = kernels.forward(x, p, False)
    return spikes, v_last
