"""The BPTT kernels of the fused and compiled backends: pure tensor loops, no autograd.

Two formulations of the same dynamics and gradients (equations in
:mod:`flexsnn.neurons.reference`), each a pair ``forward(x, p, keep_membrane) ->
(spikes, v_last, h or None)`` and ``backward(h, grad_spikes, grad_v, p) -> dx``:

- eager (:func:`forward_loop`, :func:`backward_loop`): per-step ops into buffers allocated
  once per call, values bit-identical to the reference loop. :mod:`flexsnn.neurons.fused`
  runs them where the numba kernels of :mod:`flexsnn.neurons.cpu_kernels` do not apply;
  :mod:`flexsnn.neurons.compiled` falls back to them.
- traceable (:func:`forward_traced`, :func:`backward_traced`): plain functional ops that
  ``torch.compile`` can trace with the loop over T unrolled. :mod:`flexsnn.neurons.compiled`
  compiles them; the fused path runs the traced forward when a user's model is compiled.

Both save one tensor for the backward, the pre-clip membrane ``h[t]`` of every step (the
clipped membrane ``m = max(h, v_min)``, the spikes and the clip mask ``h >= v_min`` are
recomputed from it). The backward walks the steps from the end::

    dm[t] = dL/ds[t] * s'(m[t]) + C[t] * dL/du[t]     C[t] = du[t]/dm[t] (reset term,
    dh[t] = pass[t] * dm[t]                            1 - g - m g' or 1 - v_th s'; without
    dL/dx[t] = dh[t]                                   the s-dependence if detach_reset)
    dL/du[t-1] = decay * dh[t]                         (dL/du[T-1] = dL/dv_last)

with ``pass = 0`` where the clip was active.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch

from flexsnn.buffers import STEP_BUFFERS
from flexsnn.neurons.params import NeuronParams
from flexsnn.neurons.surrogate import gate_surrogate, spike_forward, spike_surrogate


class Kernels(NamedTuple):
    """The pair of loops one multi-step autograd node runs."""

    forward: Callable  # (x, p, keep_membrane) -> (spikes, v_last, h or None)
    backward: Callable  # (h, grad_spikes, grad_v, p) -> dx


# ----------------------------------------------------------------------------- eager loops
def forward_loop(
    x: torch.Tensor, p: NeuronParams, keep_membrane: bool, sink: Callable | None = None
) -> tuple[torch.Tensor | None, torch.Tensor, torch.Tensor | None]:
    """Run the dynamics without autograd: ``(spikes, v_last, h or None)``.

    Every value is computed with ops that round exactly as the reference loop's do, so
    spikes and membranes are bit-identical to it. Results go into preallocated ``[T, ...]``
    buffers; per-step values into step-sized buffers allocated once, so the loop allocates
    nothing. Both kinds come from :data:`flexsnn.buffers.STEP_BUFFERS` (where large enough):
    a training loop reuses the previous step's memory instead of faulting in fresh pages. The
    fired mask is computed once per step (for single spikes it *is* ``s``); step 0 starts from
    ``x[0]`` (the zero membrane is never filled in).

    ``sink(t, s)``: hand each step's spikes to the next layer at once instead of keeping
    them (``spikes`` is then None); ``s`` is a step buffer that step ``t + 1`` overwrites.
    """
    step = x[0]
    spikes = STEP_BUFFERS.empty_like(x) if sink is None else None
    step_spikes = None if sink is None else STEP_BUFFERS.empty_like(step)
    h_all = STEP_BUFFERS.empty_like(x) if keep_membrane else None
    u = STEP_BUFFERS.empty_like(step)  # written by step 0's reset before it is read
    h_buf = None if keep_membrane else STEP_BUFFERS.empty_like(step)
    m_buf = None if p.v_min is None else STEP_BUFFERS.empty_like(step)
    # hard reset, multi-spike: H(s > 0); subtract, multi-spike: s * v_th
    scratch = STEP_BUFFERS.empty_like(step) if p.multi_spike else None
    for t in range(x.shape[0]):
        h = h_all[t] if h_all is not None else h_buf
        if t == 0:
            # u = 0: decay * 0 + x[0] is x[0] + 0, the same bits (-0.0 becomes +0.0 in both)
            torch.add(x[0], 0.0, out=h)
        elif p.decay == 1.0:
            torch.add(u, x[t], out=h)
        else:
            torch.mul(u, p.decay, out=h).add_(x[t])
        m = h if m_buf is None else torch.clamp_min(h, p.v_min, out=m_buf)
        s = spike_forward(m, p.v_th, p.multi_spike, out=spikes[t] if sink is None else step_spikes)
        # u is dead once h is computed: overwrite it in place.
        if p.reset == "hard":
            # H(s > 0); for multi-spikes s >= 1 exactly when u / v_th >= 1 (threshold_reached)
            fired = torch.ge(s, 1.0, out=scratch) if p.multi_spike else s
            torch.addcmul(m, m, fired, value=-1.0, out=u)  # m - m * g == m * (1 - g) exactly, g in {0, 1}
        elif p.multi_spike:
            torch.sub(m, torch.mul(s, p.v_th, out=scratch), out=u)  # same rounding as m - s * v_th
        else:
            torch.sub(m, s, alpha=p.v_th, out=u)  # s in {0, 1}: exact, same value as m - s * v_th
        if sink is not None:
            sink(t, s)
    return spikes, u, h_all


def _surrogate_into(m: torch.Tensor, p: NeuronParams, out: torch.Tensor) -> torch.Tensor:
    """``grad(m - v_th)`` written into ``out``: the single-spike (and gate) surrogate."""
    return p.surrogate_fn.slope(torch.sub(m, p.v_th, out=out), p.alpha, p.v_th, inplace=True)


def backward_loop(
    h: torch.Tensor,
    grad_spikes: torch.Tensor | Callable | None,
    grad_v: torch.Tensor | None,
    p: NeuronParams,
) -> torch.Tensor:
    """dL/dx ``[T, B, ...]`` from the saved pre-clip membrane ``h`` ``[T, B, ...]``.

    Runs step by step from the end. Each step's factors live in four step-sized buffers
    allocated once (so they stay warm in cache and the loop allocates nothing); the only
    ``[T, ...]`` tensor is the result, whose slice ``dx[t]`` also serves as the carry.
    ``grad_spikes``: ``[T, B, ...]``, or a function ``(t, s_prime, out)`` that writes
    ``s_prime * dL/ds[t]`` into ``out`` (the next layer's backward, one step at a time, so
    that gradient is never stored whole).
    """
    dx = STEP_BUFFERS.empty_like(h)
    step = h[0]
    s_prime = STEP_BUFFERS.empty_like(step)
    coef_buf = STEP_BUFFERS.empty_like(step)  # coef = du[t] / dm[t]
    scratch = STEP_BUFFERS.empty_like(step)
    m_buf = None if p.v_min is None else STEP_BUFFERS.empty_like(step)
    envelope = p.multi_spike and p.surrogate_fn.multi_spike_envelope
    carry = grad_v  # dL/du[t] before the decay factor; None means zero
    carry_scale = 1.0  # dL/du[T-1] is grad_v itself; earlier steps get decay * dh[t + 1]
    for t in range(h.shape[0] - 1, -1, -1):
        m = h[t] if m_buf is None else torch.clamp_min(h[t], p.v_min, out=m_buf)
        _surrogate_into(m, p, s_prime)  # single-spike surrogate = hard-reset gate surrogate
        if p.multi_spike:
            reached = torch.div(m, p.v_th, out=scratch).ge_(1.0)  # H(s > 0), as threshold_reached

        coef: torch.Tensor | None  # None means 1 (subtract reset, detached)
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
        if envelope:
            # s' = 1 / v_th at or above threshold: blend with the 0/1 mask (x - x * 1 == 0 exactly)
            s_prime.addcmul_(s_prime, reached, value=-1.0).add_(reached, alpha=1.0 / p.v_th)
        if p.reset == "subtract" and not p.detach_reset:
            coef = torch.mul(s_prime, -p.v_th, out=coef_buf).add_(1.0)  # d(m - v_th s)/dm

        # dm[t] = dL/ds[t] * s'(m[t]) + coef[t] * dL/du[t]
        if grad_spikes is None:
            dm = dx[t].zero_()
        elif callable(grad_spikes):
            dm = dx[t]
            grad_spikes(t, s_prime, dm)
        else:
            dm = torch.mul(s_prime, grad_spikes[t], out=dx[t])
        if carry is not None:
            if coef is None:
                dm.add_(carry, alpha=carry_scale)
            else:
                dm.addcmul_(coef, carry, value=carry_scale)
        if p.v_min is not None:
            dm.mul_(torch.ge(h[t], p.v_min, out=scratch))  # no gradient where clipped
        carry, carry_scale = dm, p.decay  # dL/du[t-1] = decay * dh[t] = decay * dx[t]
    return dx


EAGER_KERNELS = Kernels(forward_loop, backward_loop)


# ------------------------------------------------------------------------ traceable loops
def forward_traced(x: torch.Tensor, p: NeuronParams, keep_membrane: bool):
    """x ``[T, N]`` (or ``[T, ...]``) -> (spikes, v_last, h or None), functional ops only."""
    u = torch.zeros_like(x[0])
    spikes, hs = [], []
    for t in range(x.shape[0]):
        h = u + x[t] if p.decay == 1.0 else p.decay * u + x[t]
        m = h if p.v_min is None else torch.clamp_min(h, p.v_min)
        s = spike_forward(m, p.v_th, p.multi_spike)
        if p.reset == "hard":
            u = torch.where(m >= p.v_th, torch.zeros_like(m), m)
        else:
            u = m - s * p.v_th
        spikes.append(s)
        hs.append(h)
    return torch.stack(spikes), u, (torch.stack(hs) if keep_membrane else None)


def backward_traced(h: torch.Tensor, grad_spikes, grad_v, p: NeuronParams):
    """dL/dx from the pre-clip membrane ``h``: the recurrence of :func:`backward_loop`, functional."""
    m = h if p.v_min is None else torch.clamp_min(h, p.v_min)
    s_prime = spike_surrogate(m, p.v_th, p.multi_spike, p.surrogate_fn, p.alpha)
    if p.reset == "hard":
        coef = (m < p.v_th).to(h.dtype)
        if not p.detach_reset:
            gate_prime = gate_surrogate(m, p.v_th, p.surrogate_fn, p.alpha) if p.multi_spike else s_prime
            coef = coef - m * gate_prime
    else:
        coef = None if p.detach_reset else 1.0 - p.v_th * s_prime
    direct = grad_spikes * s_prime if grad_spikes is not None else torch.zeros_like(h)
    if p.v_min is not None:
        passed = (h >= p.v_min).to(h.dtype)
        direct = direct * passed
        coef = passed if coef is None else coef * passed
    last = h.shape[0] - 1
    d = direct[last]
    if grad_v is not None:
        d = d + (grad_v if coef is None else coef[last] * grad_v)
    out = [d]
    for t in range(last - 1, -1, -1):
        carry = p.decay * d
        d = direct[t] + (carry if coef is None else coef[t] * carry)
        out.append(d)
    out.reverse()
    return torch.stack(out)
