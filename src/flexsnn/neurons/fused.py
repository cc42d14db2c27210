"""Fast multi-step LIF / IF: one autograd node for all T steps, BPTT written by hand.

Same dynamics, values and surrogate gradients as :func:`flexsnn.neurons.functional.lif_multistep`
(see that module for the equations). Layout: ``x`` ``[T, B, ...]`` -> spikes ``[T, B, ...]``.

Forward loops over T without building a graph and saves one tensor, the pre-clip membrane
``h[t]`` of every step (the clipped membrane ``m = max(h, v_min)``, the spikes and the clip
mask ``h >= v_min`` are recomputed from it). Backward walks the steps from the end and runs
the BPTT recurrence by hand::

    dm[t] = dL/ds[t] * s'(m[t]) + C[t] * dL/du[t]     C[t] = du[t]/dm[t] (reset term,
    dh[t] = pass[t] * dm[t]                            1 - g - m g' or 1 - v_th s'; without
    dL/dx[t] = dh[t]                                   the s-dependence if detach_reset)
    dL/du[t-1] = decay * dh[t]                         (dL/du[T-1] = dL/dv_last)

with ``pass = 0`` where the clip was active. Each step's factors are computed just before
use into a few step-sized buffers allocated once per call (no ``[T, ...]`` temporaries, no
allocation inside the loop), so they stay in cache; the forward likewise writes into
preallocated buffers and computes the fired mask once per step.

Public entry point: :func:`flexsnn.neurons.functional.lif_multistep` with
``backend="fused"`` (the LIF / IF layers' default).
"""
from __future__ import annotations

import warnings
from typing import Callable, Optional

import torch
from torch.autograd.function import once_differentiable

from flexsnn.neurons.functional import NeuronParams, lif_multistep, reference_multistep
from flexsnn.neurons.surrogate import spike_forward


def _forward_loop(
    x: torch.Tensor, p: NeuronParams, keep_membrane: bool
) -> tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor]]:
    """Run the dynamics without autograd: ``(spikes, v_last, h or None)``.

    Every value is computed with ops that round exactly as the reference loop's do, so
    spikes and membranes are bit-identical to it. Results go into preallocated ``[T, ...]``
    buffers; per-step values into step-sized buffers allocated once, so the loop allocates
    nothing. The fired mask is computed once per step (for single spikes it *is* ``s``).
    """
    spikes = torch.empty_like(x)
    h_all = torch.empty_like(x) if keep_membrane else None
    u = torch.zeros_like(x[0])
    h_buf = None if keep_membrane else torch.empty_like(u)
    m_buf = None if p.v_min is None else torch.empty_like(u)
    # hard reset, multi-spike: H(s > 0); subtract, multi-spike: s * v_th
    scratch = torch.empty_like(u) if p.multi_spike else None
    for t in range(x.shape[0]):
        h = h_all[t] if h_all is not None else h_buf
        if p.decay == 1.0:
            torch.add(u, x[t], out=h)
        else:
            torch.mul(u, p.decay, out=h).add_(x[t])
        m = h if m_buf is None else torch.clamp_min(h, p.v_min, out=m_buf)
        s = spike_forward(m, p.v_th, p.multi_spike, out=spikes[t])
        # u is dead once h is computed: overwrite it in place.
        if p.reset == "hard":
            # H(s > 0); for multi-spikes s >= 1 exactly when u / v_th >= 1 (threshold_reached)
            fired = torch.ge(s, 1.0, out=scratch) if p.multi_spike else s
            torch.addcmul(m, m, fired, value=-1.0, out=u)  # m - m * g == m * (1 - g) exactly, g in {0, 1}
        elif p.multi_spike:
            torch.sub(m, torch.mul(s, p.v_th, out=scratch), out=u)  # same rounding as m - s * v_th
        else:
            torch.sub(m, s, alpha=p.v_th, out=u)  # s in {0, 1}: exact, same value as m - s * v_th
    return spikes, u, h_all


def _surrogate_into(m: torch.Tensor, p: NeuronParams, out: torch.Tensor) -> torch.Tensor:
    """``grad_fn(m - v_th)`` written into ``out``: the single-spike (and gate) surrogate."""
    return p.grad_fn(torch.sub(m, p.v_th, out=out), p.alpha, inplace=True)


def _backward(
    h: torch.Tensor, grad_spikes: Optional[torch.Tensor], grad_v: Optional[torch.Tensor], p: NeuronParams
) -> torch.Tensor:
    """dL/dx ``[T, B, ...]`` from the saved pre-clip membrane ``h`` ``[T, B, ...]``.

    Runs step by step from the end. Each step's factors live in four step-sized buffers
    allocated once (so they stay warm in cache and the loop allocates nothing); the only
    ``[T, ...]`` tensor is the result, whose slice ``dx[t]`` also serves as the carry.
    """
    dx = torch.empty_like(h)
    step = h[0]
    s_prime = torch.empty_like(step)
    coef_buf = torch.empty_like(step)  # coef = du[t] / dm[t]
    scratch = torch.empty_like(step)
    m_buf = None if p.v_min is None else torch.empty_like(step)
    carry = grad_v  # dL/du[t] before the decay factor; None means zero
    carry_scale = 1.0  # dL/du[T-1] is grad_v itself; earlier steps get decay * dh[t + 1]
    for t in range(h.shape[0] - 1, -1, -1):
        m = h[t] if m_buf is None else torch.clamp_min(h[t], p.v_min, out=m_buf)
        _surrogate_into(m, p, s_prime)  # single-spike surrogate = hard-reset gate surrogate
        if p.multi_spike:
            reached = torch.div(m, p.v_th, out=scratch).ge_(1.0)  # H(s > 0), as threshold_reached

        coef: Optional[torch.Tensor]  # None means 1 (subtract reset, detached)
        if p.reset == "hard":
            # u = m * (1 - g): du/dm = (1 - g) - m * g' (the last term only if not detached)
            if p.multi_spike:
                coef = torch.neg(reached, out=coef_buf).add_(1.0)
            else:
                coef = torch.lt(m, p.v_th, out=coef_buf)  # 1 - H(m >= v_th), exactly
            if not p.detach_reset:
                coef.addcmul_(m, s_prime, value=-1.0)  # gate' = the single-spike surrogate
        else:
            coef = None
        if p.multi_spike:
            # s' = 1 / v_th at or above threshold: blend with the 0/1 mask (x - x * 1 == 0 exactly)
            s_prime.addcmul_(s_prime, reached, value=-1.0).add_(reached, alpha=1.0 / p.v_th)
        if p.reset == "subtract" and not p.detach_reset:
            coef = torch.mul(s_prime, -p.v_th, out=coef_buf).add_(1.0)  # d(m - v_th s)/dm

        # dm[t] = dL/ds[t] * s'(m[t]) + coef[t] * dL/du[t]
        dm = torch.mul(s_prime, grad_spikes[t], out=dx[t]) if grad_spikes is not None else dx[t].zero_()
        if carry is not None:
            if coef is None:
                dm.add_(carry, alpha=carry_scale)
            else:
                dm.addcmul_(coef, carry, value=carry_scale)
        if p.v_min is not None:
            dm.mul_(torch.ge(h[t], p.v_min, out=scratch))  # no gradient where clipped
        carry, carry_scale = dm, p.decay  # dL/du[t-1] = decay * dh[t] = decay * dx[t]
    return dx


# (forward_loop(x, p, keep_membrane) -> (spikes, v_last, h or None),
#  backward(h, grad_spikes, grad_v, p) -> dx): the pair one multi-step autograd node runs.
Kernels = tuple[Callable, Callable]
EAGER_KERNELS: Kernels = (_forward_loop, _backward)


class FusedLIFFunction(torch.autograd.Function):
    """autograd.Function over all T steps: ``apply(x, params, kernels=None) -> (spikes, v_last)``.

    ``kernels`` (default: this module's eager loops) lets :mod:`flexsnn.neurons.compiled`
    run its compiled kernels through the same node.
    """

    @staticmethod
    def forward(ctx, x, p, kernels=None):  # noqa: D102
        kernels = kernels or EAGER_KERNELS
        spikes, v_last, h_all = kernels[0](x, p, True)
        ctx.save_for_backward(h_all)
        ctx.params = p
        ctx.kernels = kernels
        return spikes, v_last

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_spikes, grad_v):  # noqa: D102
        (h_all,) = ctx.saved_tensors
        return ctx.kernels[1](h_all, grad_spikes, grad_v, ctx.params), None, None


def fused_multistep(
    x: torch.Tensor, p: NeuronParams, kernels: Kernels = EAGER_KERNELS
) -> tuple[torch.Tensor, torch.Tensor]:
    """Fused dynamics (no input checks); saves nothing when no gradient is needed.

    Under ``torch.compile`` (InferenceRunner, a user's compiled model) the loops above cannot
    be traced (dynamo rejects ``out=`` into channels_last slices), so the traceable
    formulations run instead: the functional forward of :mod:`flexsnn.neurons.compiled`,
    which inductor fuses into one kernel, or the reference loop when a gradient is needed.
    """
    if torch.compiler.is_compiling() and kernels[0] is _forward_loop:
        if torch.is_grad_enabled() and x.requires_grad:
            return reference_multistep(x, p)
        from flexsnn.neurons.compiled import _forward_kernel  # lazy: compiled imports this module

        spikes, v_last, _ = _forward_kernel(x, p, False)
        return spikes, v_last
    if torch.is_grad_enabled() and x.requires_grad:
        return FusedLIFFunction.apply(x, p, kernels)
    with torch.no_grad():
        spikes, v_last, _ = kernels[0](x, p, False)
    return spikes, v_last


def lif_multistep_fused(*args, **kwargs) -> tuple[torch.Tensor, torch.Tensor]:
    """Deprecated alias of ``lif_multistep(..., backend="fused")`` (same arguments)."""
    warnings.warn(
        'lif_multistep_fused is deprecated; use lif_multistep(..., backend="fused")', DeprecationWarning, stacklevel=2
    )
    return lif_multistep(*args, backend="fused", **kwargs)
