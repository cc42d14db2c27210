"""LIF and IF layers: thin nn.Modules holding one :class:`~flexsnn.neurons.params.NeuronParams`.

``forward(x [T, B, ...]) -> spikes [T, B, ...]`` (same dtype and device). By default the
membrane starts at 0 on every call: no state is kept between calls, so there is nothing to
reset. Streaming (online inference over chunks of a recording): ``layer.stateful = True``
carries the membrane after a call's last step into the next call (detached: no gradient
flows across calls), so running chunks one after the other gives exactly the spikes of one
call on the whole sequence; ``layer.reset_state()`` starts the next sequence at 0. The
carried membrane enters as ``decay * v`` added to the first step's input, which rounds as
the in-loop step does, so the equality is bit-exact (eager backends). ``record_membrane =
True`` keeps the membrane after the last step of each call in ``last_membrane`` ``[B, ...]``.

The layer's parameters are ``layer.params`` (frozen, passed unchanged to
:func:`flexsnn.neurons.lif_multistep`'s backends). Each field is also an attribute
(``layer.v_th``, ``layer.decay``, ``layer.reset``, ...) that export code can read and
deployment code can assign: an assignment builds a new NeuronParams, so a bad value raises
:class:`flexsnn.errors.InputError` at once and leaves the layer as it was. They are not in
``state_dict``.

Why the reset defaults differ: ``LIF`` resets hard (to 0), ``IF`` by subtraction. Each is
the paper's choice for the nets that use it: time-stepped LIF nets reset to 0 (the triangle
surrogate, decay 0.5), while the event-driven IF neuron (no leak, multi-spike, the chip's
neuron) subtracts the threshold, so the excess charge above ``v_th`` is kept and the spike
count over time tracks the integrated input, as on the target hardware. Making them equal
would silently change one of the two paper models; pass ``reset=`` to get the other.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import torch

from flexsnn.errors import InputError, check_choice
from flexsnn.multistep import MultiStepModule
from flexsnn.neurons.dispatch import BACKENDS, check_input, check_last_membrane, multistep_runner
from flexsnn.neurons.fused import fused_avg_pool
from flexsnn.neurons.params import NeuronParams

LOW_PRECISION = (torch.float16, torch.bfloat16)  # autocast dtypes; neurons integrate in float32


class _ParamField:
    """A layer attribute that reads one field of ``layer.params``; assigning replaces the
    params with a validated copy (``dataclasses.replace``)."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, layer: Any, owner: type | None = None) -> Any:
        return self if layer is None else getattr(layer.params, self.name)

    def __set__(self, layer: Any, value: Any) -> None:
        layer.params = dataclasses.replace(layer.params, **{self.name: value})


class SpikingNeuron(MultiStepModule):
    """Common base of :class:`LIF` and :class:`IF`: ``SpikingNeuron(params, backend="auto")``.

    Spike recording: set ``record = True`` and every forward stores ``last_spike_count``
    (float, total spikes over T, batch and neurons; multi-spikes counted by value),
    ``last_num_neurons`` (neurons per sample, ``prod(x.shape[2:])``), ``last_time_steps``
    (T) and ``last_batch_size`` (B). They are ``None`` until a recorded forward.

    Streaming: ``stateful = True`` carries the membrane across calls until
    :meth:`reset_state`; ``record_membrane = True`` stores ``last_membrane`` (module docstring).
    """

    v_th = _ParamField()
    decay = _ParamField()
    reset = _ParamField()
    multi_spike = _ParamField()
    v_min = _ParamField()
    surrogate = _ParamField()
    alpha = _ParamField()  # resolved: the surrogate's default when None was given
    detach_reset = _ParamField()

    def __init__(self, params: NeuronParams, backend: str = "auto") -> None:
        super().__init__()
        self.params = params
        self.backend = check_choice(backend, "backend", BACKENDS)
        self.record = False
        self.last_spike_count: float | None = None
        self.last_num_neurons: int | None = None
        self.last_time_steps: int | None = None
        self.last_batch_size: int | None = None
        self.stateful = False
        self.record_membrane = False
        self.last_membrane: torch.Tensor | None = None
        self._membrane: torch.Tensor | None = None

    def reset_state(self) -> None:
        """Forget the carried membrane: the next forward starts at 0 (``stateful`` mode)."""
        self._membrane = None

    def _carry_in(self, x: torch.Tensor) -> torch.Tensor:
        v = self._membrane
        if v.shape != x.shape[1:]:
            raise InputError(
                f"stateful {type(self).__name__}: x is [T, {', '.join(map(str, x.shape[1:]))}] but the carried "
                f"membrane is [{', '.join(map(str, v.shape))}]; call reset_state() before a new stream"
            )
        v = v.to(device=x.device, dtype=x.dtype)
        first = v + x[0] if self.params.decay == 1.0 else torch.mul(v, self.params.decay) + x[0]
        return torch.cat([first.unsqueeze(0), x[1:]])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` ``[T, B, ...]`` input current -> spikes ``[T, B, ...]``."""
        x = check_input(x, self.params, self.backend)
        if x.dtype in LOW_PRECISION and torch.is_autocast_enabled(x.device.type):
            # Mixed precision: currents may arrive in bf16 / fp16, the membrane integrates in
            # float32 (an 8-bit mantissa would move spikes at the threshold over T steps).
            x = x.float()
        if self.stateful and self._membrane is not None:
            x = self._carry_in(x)
        spikes, v_last = multistep_runner(self.backend)(x, self.params)
        check_last_membrane(x, v_last, self.params, self.backend)
        if self.stateful:
            self._membrane = v_last.detach()
        if self.record_membrane:
            self.last_membrane = v_last.detach()
        if self.record:
            self.last_spike_count = float(spikes.detach().sum(dtype=torch.float64))
            self.last_num_neurons = math.prod(x.shape[2:])
            self.last_time_steps = int(x.shape[0])
            self.last_batch_size = int(x.shape[1])
        return spikes

    def forward_into_avg_pool(self, x: torch.Tensor, pool_args: tuple) -> torch.Tensor | None:
        """``F.avg_pool2d(spikes[t], *pool_args)`` for every step of ``self(x)``, in one pass
        (:func:`flexsnn.neurons.fused.fused_avg_pool`: the spikes are never stored whole),
        or None where this layer must run by itself: another backend, recording, streaming,
        hooks, low precision, not a 5-D CPU input. Called by the time-first runner for a
        neuron followed by ``nn.AvgPool2d``; same values and gradients as the two layers."""
        if (
            self.backend not in ("auto", "fused")
            or self.record
            or self.stateful
            or self.record_membrane
            or self._forward_hooks
            or self._forward_pre_hooks
            or not isinstance(x, torch.Tensor)
            or x.dim() != 5
            or x.device.type != "cpu"
            or x.dtype in LOW_PRECISION
            or torch.compiler.is_compiling()
        ):
            return None
        pooled, v_last = fused_avg_pool(check_input(x, self.params, self.backend), self.params, pool_args)
        check_last_membrane(x, v_last, self.params, self.backend)
        return pooled

    def extra_repr(self) -> str:
        p = self.params
        parts = [f"v_th={p.v_th}"]
        if not isinstance(self, IF):
            parts.append(f"decay={p.decay}")
        parts += [f"reset={p.reset!r}", f"multi_spike={p.multi_spike}"]
        if p.v_min is not None:
            parts.append(f"v_min={p.v_min}")
        parts += [f"surrogate={p.surrogate!r}", f"alpha={p.alpha}"]
        if p.detach_reset:
            parts.append("detach_reset=True")
        parts.append(f"backend={self.backend!r}")
        return ", ".join(parts)


class LIF(SpikingNeuron):
    """Leaky integrate-and-fire layer, ``x`` ``[T, B, ...]`` -> spikes ``[T, B, ...]``.

    ``u = decay * u + x[t]``; spike at ``u >= v_th`` (or ``floor(u / v_th)`` spikes with
    ``multi_spike``); ``reset="hard"`` sets u to 0 after a spike, ``"subtract"`` removes
    ``s * v_th``; ``v_min`` clips the membrane from below. The keywords are the fields of
    :class:`~flexsnn.neurons.params.NeuronParams`. ``backend``: ``"auto"`` and ``"fused"``
    use the hand-written BPTT, ``"reference"`` the per-step autograd loop, ``"compiled"``
    (opt-in) the same BPTT as torch.compile'd kernels: the first call per T and parameter
    set compiles for seconds and needs a C++ compiler.
    """

    def __init__(
        self,
        v_th: float = 1.0,
        decay: float = 0.5,
        reset: str = "hard",
        multi_spike: bool = False,
        v_min: float | None = None,
        surrogate: str = "triangle",
        alpha: float | None = None,
        detach_reset: bool = False,
        backend: str = "auto",
    ) -> None:
        super().__init__(NeuronParams(v_th, decay, reset, multi_spike, v_min, surrogate, alpha, detach_reset), backend)


class IF(SpikingNeuron):
    """Integrate-and-fire layer (LIF without leak, ``decay = 1``), reset by subtraction.

    The paper's event-driven neuron is ``IF(multi_spike=True, v_min=-1.0,
    surrogate="exponential")`` (the deployable zoo nets' default). Why the reset default
    differs from :class:`LIF`'s: module docstring.
    """

    def __init__(
        self,
        v_th: float = 1.0,
        reset: str = "subtract",
        multi_spike: bool = False,
        v_min: float | None = None,
        surrogate: str = "triangle",
        alpha: float | None = None,
        detach_reset: bool = False,
        backend: str = "auto",
    ) -> None:
        super().__init__(NeuronParams(v_th, 1.0, reset, multi_spike, v_min, surrogate, alpha, detach_reset), backend)
