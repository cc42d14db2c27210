"""Multi-step LIF / IF dynamics: the readable reference loop (autograd through every step).

Layout: the input current ``x`` is time-first ``[T, B, ...]``; the spikes returned have the
same shape, dtype and device. The membrane starts at 0 on every call. Per step ``t``::

    h = decay * u + x[t]                  # leaky integration (IF: decay = 1)
    m = max(h, v_min)                     # only if v_min is not None; no gradient where clipped
    s = spike(m)                          # single: m >= v_th; multi: floor(m / v_th), >= 0
    hard reset:     u = m * (1 - H(s > 0))    # to 0 after any spike
    subtract reset: u = m - s * v_th

``detach_reset=True`` detaches the reset term's dependence on ``s`` (``H(s > 0)`` or ``s``)
from the graph. Surrogate gradients are described in :mod:`flexsnn.neurons.surrogate`.

Sinabs (``IAF`` with ``min_v_mem``) clips after the reset instead of before the spike: the
spikes and membranes are the same, but at a step where the clip acts Sinabs still passes the
spike's surrogate gradient to the input, while here the clipped step passes none.

This loop is the ground truth the fused (:mod:`flexsnn.neurons.fused`) and compiled
(:mod:`flexsnn.neurons.compiled`) backends are tested against: one autograd node per step,
simple and slow.
"""

from __future__ import annotations

import torch

from flexsnn.neurons.params import NeuronParams
from flexsnn.neurons.surrogate import SpikeFunction


def reference_multistep(x: torch.Tensor, p: NeuronParams) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-step loop with autograd (no input checks): ``(spikes [T, B, ...], v_last [B, ...])``."""
    u = torch.zeros_like(x[0])
    spikes = []
    for t in range(x.shape[0]):
        h = u + x[t] if p.decay == 1.0 else p.decay * u + x[t]
        m = h if p.v_min is None else torch.clamp(h, min=p.v_min)
        s = SpikeFunction.apply(m, p.v_th, p.multi_spike, p.surrogate_fn, p.alpha)
        if p.reset == "hard":
            # H(s > 0): s itself for single spikes; a separate gate node for multi-spikes.
            gate = SpikeFunction.apply(m, p.v_th, True, p.surrogate_fn, p.alpha, True) if p.multi_spike else s
            if p.detach_reset:
                gate = gate.detach()
            u = m * (1.0 - gate)
        else:
            u = m - (s.detach() if p.detach_reset else s) * p.v_th
        spikes.append(s)
    return torch.stack(spikes), u
