"""Compiled multi-step LIF / IF: the fused BPTT with each direction as ONE generated kernel.

Same dynamics, values and surrogate gradients as the reference loop
(:mod:`flexsnn.neurons.reference`). Layout: ``x`` ``[T, B, ...]`` -> ``(spikes [T, B, ...],
v_last [B, ...])``. The kernels compiled are the traceable loops of
:mod:`flexsnn.neurons.kernels`, run through the fused autograd node
(:class:`flexsnn.neurons.fused.FusedLIFFunction`).

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
from collections.abc import Callable

import torch

from flexsnn.multistep import from_time_major, time_major_order, to_time_major
from flexsnn.neurons.fused import fused_multistep
from flexsnn.neurons.kernels import Kernels, backward_loop, backward_traced, forward_loop, forward_traced
from flexsnn.neurons.params import NeuronParams

MAX_COMPILED_STEPS = 64

_lock = threading.Lock()
_kernels: dict[tuple, Callable] = {}
_stats = {"compiles": 0, "fallbacks": 0}
_disabled_reason: str | None = None


def compile_count() -> int:
    """Kernels compiled by this module in this process (each is compiled exactly once)."""
    return _stats["compiles"]


def fallback_count() -> int:
    """Calls that ran the eager fused path instead (T too large, or compile unavailable)."""
    return _stats["fallbacks"]


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
            base = forward_traced if kind == "fwd" else backward_traced
            compiled = torch.compile(_fresh(base, str(len(_kernels))), backend=_counting_backend)
            _kernels[(kind, key)] = compiled
    return compiled


def _flat(t: torch.Tensor | None, order: tuple[int, ...]) -> torch.Tensor | None:
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
    warnings.warn(
        f"flexsnn compiled neurons unavailable, using the eager fused path ({_disabled_reason})", stacklevel=2
    )


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
    return forward_loop(x, p, keep_membrane)


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
    return backward_loop(h, grad_spikes, grad_v, p)


COMPILED_KERNELS = Kernels(_run_forward, _run_backward)


def compiled_multistep(x: torch.Tensor, p: NeuronParams) -> tuple[torch.Tensor, torch.Tensor]:
    """Compiled dynamics (no input checks): the fused autograd node with compiled kernels."""
    return fused_multistep(x, p, COMPILED_KERNELS)
