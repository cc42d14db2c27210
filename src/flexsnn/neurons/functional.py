"""Multi-step LIF / IF dynamics: the readable reference implementation.

Layout: the input current ``x`` is time-first ``[T, B, ...]``; the spikes returned have the
same shape, dtype and device. The membrane starts at 0 on every call. Per step ``t``::

    h = decay * u + x[t]                  # leaky integration (IF: decay = 1)
    m = max(h, v_min)                     # only if v_min is not None; no gradient where clipped
    s = spike(m)                          # single: m >= v_th; multi: floor(m / v_th), >= 0
    hard reset:     u = m * (1 - H(s > 0))    # to 0 after any spike
    subtract reset: u = m - s * v_th

``detach_reset=True`` detaches the reset term's dependence on ``s`` (``H(s > 0)`` or ``s``)
from the graph. Surrogate gradients are described in :mod:`flexsnn.neurons.surrogate`.

Backends (``lif_multistep(..., backend=...)``; every one gives the same spikes and
gradients allclose to the reference):

- ``"reference"``: this module, one autograd node per step (simple, slow, the ground truth
  for tests);
- ``"fused"``: :mod:`flexsnn.neurons.fused`, one node for all T steps with a hand-written
  BPTT, eager (the layers' default);
- ``"compiled"``: :mod:`flexsnn.neurons.compiled`, the same BPTT as torch.compile'd kernels.
  Opt-in: the first call per (T, parameters, dtype, device) compiles for seconds and needs a
  C++ compiler (without one it warns and runs the fused path).
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Callable, Optional

import torch

from flexsnn.errors import InputError, check_choice, check_finite, check_time_first
from flexsnn.neurons.surrogate import SpikeFunction, SurrogateGrad, resolve_surrogate

RESETS = ("hard", "subtract")
BACKENDS = ("reference", "fused", "compiled")


@dataclass(frozen=True)
class NeuronParams:
    """Validated neuron parameters (plain Python values), shared by every backend."""

    v_th: float
    decay: float
    reset: str
    multi_spike: bool
    v_min: Optional[float]
    surrogate: str
    alpha: float
    detach_reset: bool
    grad_fn: SurrogateGrad


def _check_real(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(float(value)):
        raise InputError(f"{name} must be a finite number, got {value!r}")
    return float(value)


def _check_bool(value, name: str) -> bool:
    if not isinstance(value, bool):
        raise InputError(f"{name} must be True or False, got {value!r}")
    return value


def neuron_params(
    v_th: float = 1.0,
    decay: float = 0.5,
    reset: str = "hard",
    multi_spike: bool = False,
    v_min: Optional[float] = None,
    surrogate: str = "triangle",
    alpha: Optional[float] = None,
    detach_reset: bool = False,
) -> NeuronParams:
    """Validate neuron parameters; raise InputError naming the bad argument."""
    v_th = _check_real(v_th, "v_th")
    if v_th <= 0:
        raise InputError(f"v_th must be > 0, got {v_th}")
    decay = _check_real(decay, "decay")
    if not 0.0 < decay <= 1.0:
        raise InputError(f"decay must be in (0, 1] (1 = IF, no leak), got {decay}")
    check_choice(reset, "reset", RESETS)
    multi_spike = _check_bool(multi_spike, "multi_spike")
    if v_min is not None:
        v_min = _check_real(v_min, "v_min")
        if v_min >= v_th:
            raise InputError(f"v_min must be below v_th ({v_th}) or None, got {v_min}")
    grad_fn, alpha = resolve_surrogate(surrogate, alpha)
    detach_reset = _check_bool(detach_reset, "detach_reset")
    return NeuronParams(v_th, decay, reset, multi_spike, v_min, surrogate, alpha, detach_reset, grad_fn)


def check_input(x) -> torch.Tensor:
    """Check the neuron input: a floating-point tensor ``[T, B, ...]`` with T >= 1, finite.

    Finiteness is checked on CPU only: on an accelerator reading the answer back would stall
    the device once per neuron layer. There a StagedNet still checks its own input once per
    forward (:meth:`flexsnn.staged.StagedNet.forward`), and a NaN born inside the network
    shows in the loss.
    """
    x = check_time_first(x, "x", min_dim=2)
    if not x.is_floating_point():
        raise InputError(f"x must be a floating-point tensor [T, B, ...], got dtype {x.dtype}")
    return check_finite(x, "x") if x.device.type == "cpu" else x


def reference_multistep(x: torch.Tensor, p: NeuronParams) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-step loop with autograd (no input checks): ``(spikes [T, B, ...], v_last [B, ...])``."""
    u = torch.zeros_like(x[0])
    spikes = []
    for t in range(x.shape[0]):
        h = u + x[t] if p.decay == 1.0 else p.decay * u + x[t]
        m = h if p.v_min is None else torch.clamp(h, min=p.v_min)
        s = SpikeFunction.apply(m, p.v_th, p.multi_spike, p.grad_fn, p.alpha)
        if p.reset == "hard":
            # H(s > 0): s itself for single spikes; a separate gate node for multi-spikes.
            gate = SpikeFunction.apply(m, p.v_th, True, p.grad_fn, p.alpha, True) if p.multi_spike else s
            if p.detach_reset:
                gate = gate.detach()
            u = m * (1.0 - gate)
        else:
            u = m - (s.detach() if p.detach_reset else s) * p.v_th
        spikes.append(s)
    return torch.stack(spikes), u


def multistep_runner(backend: str) -> Callable[[torch.Tensor, NeuronParams], tuple[torch.Tensor, torch.Tensor]]:
    """``run(x, params) -> (spikes, v_last)`` of a backend in :data:`BACKENDS` (no input checks)."""
    check_choice(backend, "backend", BACKENDS)
    if backend == "fused":
        from flexsnn.neurons.fused import fused_multistep  # lazy: fused imports this module

        return fused_multistep
    if backend == "compiled":
        from flexsnn.neurons.compiled import compiled_multistep

        return compiled_multistep
    return reference_multistep


def lif_multistep(
    x: torch.Tensor,
    v_th: float = 1.0,
    decay: float = 0.5,
    reset: str = "hard",
    multi_spike: bool = False,
    v_min: Optional[float] = None,
    surrogate: str = "triangle",
    alpha: Optional[float] = None,
    detach_reset: bool = False,
    backend: str = "reference",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run LIF (IF when ``decay=1``) over ``x`` ``[T, B, ...]``.

    Returns ``(spikes, v_last)``: spikes ``[T, B, ...]`` (0/1, or counts when
    ``multi_spike``) in ``x``'s dtype and device, and the membrane after the last step's
    reset, ``[B, ...]``. Both are differentiable w.r.t. ``x`` through the surrogate.
    ``alpha=None`` uses the surrogate's default width (triangle 1, sigmoid 4, atan 2).
    ``backend``: ``"reference"`` | ``"fused"`` | ``"compiled"`` (module docstring).
    """
    run = multistep_runner(backend)
    p = neuron_params(v_th, decay, reset, multi_spike, v_min, surrogate, alpha, detach_reset)
    return run(check_input(x), p)
