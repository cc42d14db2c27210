"""LIF and IF layers: thin nn.Module wrappers over the multi-step dynamics.

``forward(x [T, B, ...]) -> spikes [T, B, ...]`` (same dtype and device). The membrane
starts at 0 on every call: no state is kept between calls, so there is nothing to reset.
Parameters are plain Python floats/strings stored as attributes (``v_th``, ``decay``,
``reset``, ...), read again at every call, so export code can read (and deployment code
can change) them; they are not in ``state_dict``.
"""
from __future__ import annotations

import math
from typing import Optional

import torch

from flexsnn.errors import check_choice
from flexsnn.multistep import MultiStepModule
from flexsnn.neurons.functional import NeuronParams, check_input, multistep_runner, neuron_params

# "auto" is the fused path; "compiled" is opt-in (compiles per T, needs a C++ compiler).
BACKENDS = ("auto", "fused", "reference", "compiled")
LOW_PRECISION = (torch.float16, torch.bfloat16)  # autocast dtypes; neurons integrate in float32


class SpikingNeuron(MultiStepModule):
    """Common base of :class:`LIF` and :class:`IF`; see :mod:`flexsnn.neurons.functional`.

    Spike recording: set ``record = True`` and every forward stores ``last_spike_count``
    (float, total spikes over T, batch and neurons; multi-spikes counted by value),
    ``last_num_neurons`` (neurons per sample, ``prod(x.shape[2:])``), ``last_time_steps``
    (T) and ``last_batch_size`` (B). They are ``None`` until a recorded forward.
    """

    def __init__(
        self,
        v_th: float,
        decay: float,
        reset: str,
        multi_spike: bool,
        v_min: Optional[float],
        surrogate: str,
        alpha: Optional[float],
        detach_reset: bool,
        backend: str,
    ) -> None:
        super().__init__()
        p = neuron_params(v_th, decay, reset, multi_spike, v_min, surrogate, alpha, detach_reset)
        self.v_th = p.v_th
        self.decay = p.decay
        self.reset = p.reset
        self.multi_spike = p.multi_spike
        self.v_min = p.v_min
        self.surrogate = p.surrogate
        self.alpha = p.alpha  # resolved: the surrogate's default when None was given
        self.detach_reset = p.detach_reset
        self.backend = check_choice(backend, "backend", BACKENDS)
        self.record = False
        self.last_spike_count: Optional[float] = None
        self.last_num_neurons: Optional[int] = None
        self.last_time_steps: Optional[int] = None
        self.last_batch_size: Optional[int] = None

    def neuron_params(self) -> NeuronParams:
        """The current attributes, validated (they may have been edited since __init__)."""
        return neuron_params(
            self.v_th, self.decay, self.reset, self.multi_spike, self.v_min,
            self.surrogate, self.alpha, self.detach_reset,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` ``[T, B, ...]`` input current -> spikes ``[T, B, ...]``."""
        x = check_input(x)
        if x.dtype in LOW_PRECISION and torch.is_autocast_enabled(x.device.type):
            # Mixed precision: currents may arrive in bf16 / fp16, the membrane integrates in
            # float32 (an 8-bit mantissa would move spikes at the threshold over T steps).
            x = x.float()
        p = self.neuron_params()
        backend = check_choice(self.backend, "backend", BACKENDS)
        spikes, _ = multistep_runner("fused" if backend == "auto" else backend)(x, p)
        if self.record:
            self.last_spike_count = float(spikes.detach().sum(dtype=torch.float64))
            self.last_num_neurons = math.prod(x.shape[2:])
            self.last_time_steps = int(x.shape[0])
            self.last_batch_size = int(x.shape[1])
        return spikes

    def extra_repr(self) -> str:
        parts = [f"v_th={self.v_th}"]
        if not isinstance(self, IF):
            parts.append(f"decay={self.decay}")
        parts += [f"reset={self.reset!r}", f"multi_spike={self.multi_spike}"]
        if self.v_min is not None:
            parts.append(f"v_min={self.v_min}")
        parts += [f"surrogate={self.surrogate!r}", f"alpha={self.alpha}"]
        if self.detach_reset:
            parts.append("detach_reset=True")
        parts.append(f"backend={self.backend!r}")
        return ", ".join(parts)


class LIF(SpikingNeuron):
    """Leaky integrate-and-fire layer, ``x`` ``[T, B, ...]`` -> spikes ``[T, B, ...]``.

    ``u = decay * u + x[t]``; spike at ``u >= v_th`` (or ``floor(u / v_th)`` spikes with
    ``multi_spike``); ``reset="hard"`` sets u to 0 after a spike, ``"subtract"`` removes
    ``s * v_th``; ``v_min`` clips the membrane from below. ``backend``: ``"auto"`` and
    ``"fused"`` use the hand-written BPTT, ``"reference"`` the per-step autograd loop,
    ``"compiled"`` (opt-in) the same BPTT as torch.compile'd kernels: the first call per T
    and parameter set compiles for seconds and needs a C++ compiler.
    """

    def __init__(
        self,
        v_th: float = 1.0,
        decay: float = 0.5,
        reset: str = "hard",
        multi_spike: bool = False,
        v_min: Optional[float] = None,
        surrogate: str = "triangle",
        alpha: Optional[float] = None,
        detach_reset: bool = False,
        backend: str = "auto",
    ) -> None:
        super().__init__(v_th, decay, reset, multi_spike, v_min, surrogate, alpha, detach_reset, backend)


class IF(SpikingNeuron):
    """Integrate-and-fire layer (LIF without leak, ``decay = 1``), reset by subtraction.

    The paper's event-driven neuron is ``IF(multi_spike=True, v_min=-1.0)``.
    """

    def __init__(
        self,
        v_th: float = 1.0,
        reset: str = "subtract",
        multi_spike: bool = False,
        v_min: Optional[float] = None,
        surrogate: str = "triangle",
        alpha: Optional[float] = None,
        detach_reset: bool = False,
        backend: str = "auto",
    ) -> None:
        super().__init__(v_th, 1.0, reset, multi_spike, v_min, surrogate, alpha, detach_reset, backend)
