"""Compiled multi-step LIF / IF: the fused BPTT with each direction as ONE generated kernel.

Same dynamics, values and surrogate gradients as
:func:`flexsnn.neurons.functional.lif_multistep` (equations there). Layout: ``x``
``[T, B, ...]`` -> ``(spikes [T, B, ...], v_last [B, ...])``.

Why: the eager fused path (:mod:`flexsnn.neurons.fused`) runs a handful of elementwise
kernels per time step, each streaming the whole ``[B, ...]`` slice through memory, plus
temporaries. On CPU that memory traffic, not arithmetic, is the cost. Here the forward loop
and the backward recurrence are each traced once with the loop over T unrolled, and
``torch.compile`` (inductor) emits a single loop nest that keeps a neuron's state in
registers across the T steps: one read of ``x`` and one write of spikes (+ membrane) per
step. Measured on 2 CPU cores it is several times faster than the eager fused path
(benchmarks/README.md).

Compile policy (what MTT needs: no recompilation per sampled TimeConfig beyond the first
time a T is seen):

- One kernel per (direction, T, neuron parameters, dtype, device, gradient inputs present).
  The neuron dimension is flattened to ``[T, N]`` and ``N`` is marked dynamic, so batch size
  and layer shape do not trigger recompiles. Each kernel gets its own code object, so
  dynamo's per-function recompile limit never silently sends a key back to eager.
- ``T > MAX_COMPILED_STEPS`` (unrolled graphs grow with T) or a platform where
  ``torch.compile`` fails falls back to the eager fused path, with the same results.
- :func:`compile_count` reports how many kernels were compiled in this process.
"""
from __future__ import annotations

import threading
import types
import warnings
from typing import Callable, Optional

import torch

from flexsnn.multistep import from_time_major, time_major_order, to_time_major
from flexsnn.neurons import fused
from flexsnn.neurons.functional import NeuronParams, lif_multistep
from flexsnn.neurons.surrogate import gate_surrogate, spike_forward, spike_surrogate

MAX_COMPILED_STEPS = 64

_lock = threading.Lock()
_kernels: dict[tuple, Callable] = {}
_stats = {"compiles": 0, "fallbacks": 0}
_disabled_reason: Optional[str] = None


def compile_count() -> int:
    """Kernels compiled by this module in this process (each is compiled exactly once)."""
    return _stats["compiles"]


def fallback_count() -> int:
    """Calls that ran the eager fused path instead (T too large, or compile unavailable)."""
    return _stats["fallbacks"]


def _forward_kernel(x: torch.Tensor, p: NeuronParams, keep_membrane: bool):
    """x ``[T, N]`` -> (spikes ``[T, N]``, v_last ``[N]``, h ``[T, N]`` or None); traced."""
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


def _backward_kernel(h: torch.Tensor, grad_spikes, grad_v, p: NeuronParams):
    """dL/dx ``[T, N]`` from the pre-clip membrane ``h``: the recurrence of fused.py; traced."""
    m = h if p.v_min is None else torch.clamp_min(h, p.v_min)
    s_prime = spike_surrogate(m, p.v_th, p.multi_spike, p.grad_fn, p.alpha)
    if p.reset == "hard":
        coef = (m < p.v_th).to(h.dtype)
        if not p.detach_reset:
            gate_prime = gate_surrogate(m, p.v_th, p.grad_fn, p.alpha) if p.multi_spike else s_prime
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


def _counting_backend(gm, example_inputs):
    from torch._inductor.compile_fx import compile_fx

    _stats["compiles"] += 1
    return compile_fx(gm, example_inputs)


def _fresh(fn: Callable, tag: str) -> Callable:
    """A copy of ``fn`` with its own code object, so dynamo keeps a separate cache for it."""
    code = fn.__code__.replace(co_name=f"{fn.__name__}_{tag}")
    return types.FunctionType(code, fn.__globals__, code.co_name, fn.__defaults__, fn.__closure__)


def _kernel(kind: str, key: tuple) -> Callable:
    with _lock:
        compiled = _kernels.get((kind, key))
        if compiled is None:
            base = _forward_kernel if kind == "fwd" else _backward_kernel
            compiled = torch.compile(_fresh(base, str(len(_kernels))), backend=_counting_backend)
            _kernels[(kind, key)] = compiled
    return compiled


def _flat(t: Optional[torch.Tensor], order: tuple[int, ...]) -> Optional[torch.Tensor]:
    """``t`` ``[T, ...]`` as ``[T, N]`` in memory ``order`` (no copy for contiguous or
    channels_last activations); the neuron dimension is marked dynamic."""
    if t is None:
        return None
    t = to_time_major(t, order)
    if t.shape[-1] > 1:
        torch._dynamo.maybe_mark_dynamic(t, 1)
    return t


def _usable(steps: int) -> bool:
    return _disabled_reason is None and steps <= MAX_COMPILED_STEPS


def _disable(exc: Exception) -> None:
    global _disabled_reason
    _disabled_reason = f"{type(exc).__name__}: {exc}"
    warnings.warn(f"flexsnn compiled neurons unavailable, using the eager fused path ({_disabled_reason})")


def _run_forward(x: torch.Tensor, p: NeuronParams, keep_membrane: bool):
    steps = x.shape[0]
    if _usable(steps):
        key = (steps, p, x.dtype, x.device.type, keep_membrane)
        try:
            order = time_major_order(x)
            s, v, h = _kernel("fwd", key)(_flat(x, order), p, keep_membrane)
            shape = x.shape
            v = from_time_major(v.unsqueeze(0), shape, order)[0]
            h = from_time_major(h, shape, order) if h is not None else None
            return from_time_major(s, shape, order), v, h
        except Exception as exc:  # no C++ compiler / triton: stay correct, just slower
            _disable(exc)
    _stats["fallbacks"] += 1
    return fused._forward_loop(x, p, keep_membrane)


def _run_backward(h: torch.Tensor, grad_spikes, grad_v, p: NeuronParams) -> torch.Tensor:
    steps = h.shape[0]
    if _usable(steps):
        key = (steps, p, h.dtype, h.device.type, grad_spikes is not None, grad_v is not None)
        try:
            order = time_major_order(h)  # the gradients are read in h's memory order
            gv = None
            if grad_v is not None:
                gv = to_time_major(grad_v.unsqueeze(0), order)[0]
                if gv.shape[0] > 1:
                    torch._dynamo.maybe_mark_dynamic(gv, 0)
            dx = _kernel("bwd", key)(_flat(h, order), _flat(grad_spikes, order), gv, p)
            return from_time_major(dx, h.shape, order)
        except Exception as exc:
            _disable(exc)
    _stats["fallbacks"] += 1
    return fused._backward(h, grad_spikes, grad_v, p)


COMPILED_KERNELS: fused.Kernels = (_run_forward, _run_backward)


def compiled_multistep(x: torch.Tensor, p: NeuronParams) -> tuple[torch.Tensor, torch.Tensor]:
    """Compiled dynamics (no input checks): the fused autograd node with compiled kernels."""
    return fused.fused_multistep(x, p, COMPILED_KERNELS)


def lif_multistep_compiled(*args, **kwargs) -> tuple[torch.Tensor, torch.Tensor]:
    """Deprecated alias of ``lif_multistep(..., backend="compiled")`` (same arguments)."""
    warnings.warn(
        'lif_multistep_compiled is deprecated; use lif_multistep(..., backend="compiled")',
        DeprecationWarning,
        stacklevel=2,
    )
    return lif_multistep(*args, backend="compiled", **kwargs)
