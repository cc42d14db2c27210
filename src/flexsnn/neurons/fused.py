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
use, so its temporaries stay in cache; measured on CPU this beat evaluating them for all T
at once, and both beat the per-step autograd graph of the reference.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch.autograd.function import once_differentiable

from flexsnn.neurons.functional import NeuronParams, check_input, neuron_params
from flexsnn.neurons.surrogate import gate_surrogate, spike_forward, spike_surrogate, threshold_reached


def _forward_loop(
    x: torch.Tensor, p: NeuronParams, keep_membrane: bool
) -> tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor]]:
    """Run the dynamics without autograd: ``(spikes, v_last, h or None)``.

    Every value is computed with ops that round exactly as the reference loop's do, so
    spikes and membranes are bit-identical to it; results go into preallocated ``[T, ...]``
    buffers instead of being stacked.
    """
    spikes = torch.empty_like(x)
    h_all = torch.empty_like(x) if keep_membrane else None
    u = torch.zeros_like(x[0])
    for t in range(x.shape[0]):
        out = h_all[t] if h_all is not None else None
        if p.decay == 1.0:
            h = torch.add(u, x[t], out=out)
        else:
            h = torch.mul(u, p.decay, out=out).add_(x[t])
        m = h if p.v_min is None else h.clamp_min(p.v_min)
        s = spike_forward(m, p.v_th, p.multi_spike, out=spikes[t])
        if p.reset == "hard":
            # H(s > 0); for multi-spikes s >= 1 exactly when u / v_th >= 1 (threshold_reached)
            gate = torch.ge(s, 1.0, out=torch.empty_like(s)) if p.multi_spike else s
            u = torch.addcmul(m, m, gate, value=-1.0)  # m - m * g == m * (1 - g) exactly, g in {0, 1}
        elif p.multi_spike:
            u = m - s * p.v_th
        else:
            u = torch.sub(m, s, alpha=p.v_th)  # s in {0, 1}: exact, same value as m - s * v_th
    return spikes, u, h_all


def _backward(
    h: torch.Tensor, grad_spikes: Optional[torch.Tensor], grad_v: Optional[torch.Tensor], p: NeuronParams
) -> torch.Tensor:
    """dL/dx ``[T, B, ...]`` from the saved pre-clip membrane ``h`` ``[T, B, ...]``.

    Runs step by step from the end so each step's temporaries stay in cache (measured
    faster on CPU than evaluating the factors for all T at once), in place where it can.
    """
    dx = torch.empty_like(h)
    carry = grad_v  # dL/du[t] before the decay factor; None means zero
    carry_scale = 1.0  # dL/du[T-1] is grad_v itself; earlier steps get decay * dh[t + 1]
    for t in range(h.shape[0] - 1, -1, -1):
        m = h[t] if p.v_min is None else h[t].clamp_min(p.v_min)
        s_prime = spike_surrogate(m, p.v_th, p.multi_spike, p.grad_fn, p.alpha)
        # coef = du[t] / dm[t]; None means 1 (subtract reset, detached).
        coef: Optional[torch.Tensor]
        if p.reset == "hard":
            # u = m * (1 - g): du/dm = (1 - g) - m * g' (the last term only if not detached)
            coef = threshold_reached(m, p.v_th, p.multi_spike).neg_().add_(1.0)
            if not p.detach_reset:
                gate_prime = s_prime if not p.multi_spike else gate_surrogate(m, p.v_th, p.grad_fn, p.alpha)
                coef.sub_(m * gate_prime)
        elif p.detach_reset:
            coef = None
        else:
            coef = torch.mul(s_prime, -p.v_th).add_(1.0)  # d(m - v_th * s)/dm = 1 - v_th * s'

        # dm[t] = dL/ds[t] * s'(m[t]) + coef[t] * dL/du[t]
        if grad_spikes is not None:
            dm = torch.mul(s_prime, grad_spikes[t], out=dx[t])
        else:
            dm = dx[t].zero_()
        if carry is not None:
            if coef is None:
                dm.add_(carry, alpha=carry_scale)
            else:
                dm.addcmul_(coef, carry, value=carry_scale)
        if p.v_min is not None:
            dm.mul_(torch.ge(h[t], p.v_min, out=torch.empty_like(m)))  # no gradient where clipped
        carry, carry_scale = dm, p.decay  # dL/du[t-1] = decay * dh[t] = decay * dx[t]
    return dx


class FusedLIFFunction(torch.autograd.Function):
    """autograd.Function over all T steps: ``apply(x, params) -> (spikes, v_last)``."""

    @staticmethod
    def forward(ctx, x, p):  # noqa: D102
        spikes, v_last, h_all = _forward_loop(x, p, keep_membrane=True)
        ctx.save_for_backward(h_all)
        ctx.params = p
        return spikes, v_last

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_spikes, grad_v):  # noqa: D102
        (h_all,) = ctx.saved_tensors
        return _backward(h_all, grad_spikes, grad_v, ctx.params), None


def fused_multistep(x: torch.Tensor, p: NeuronParams) -> tuple[torch.Tensor, torch.Tensor]:
    """Fused dynamics (no input checks); saves nothing when no gradient is needed."""
    if torch.is_grad_enabled() and x.requires_grad:
        return FusedLIFFunction.apply(x, p)
    with torch.no_grad():
        spikes, v_last, _ = _forward_loop(x, p, keep_membrane=False)
    return spikes, v_last


def lif_multistep_fused(
    x: torch.Tensor,
    v_th: float = 1.0,
    decay: float = 0.5,
    reset: str = "hard",
    multi_spike: bool = False,
    v_min: Optional[float] = None,
    surrogate: str = "triangle",
    alpha: Optional[float] = None,
    detach_reset: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Fused equivalent of :func:`~flexsnn.neurons.functional.lif_multistep` (same arguments).

    ``x`` ``[T, B, ...]`` -> ``(spikes [T, B, ...], v_last [B, ...])``, same dtype/device.
    """
    p = neuron_params(v_th, decay, reset, multi_spike, v_min, surrogate, alpha, detach_reset)
    return fused_multistep(check_input(x), p)
