"""NeuronParams: the one parameter object of a LIF / IF neuron, validated at construction.

It is passed unchanged from the layers (:mod:`flexsnn.neurons.modules`) to the functional
API (:func:`flexsnn.neurons.dispatch.lif_multistep`) and every backend. Being frozen and
hashable, it also keys the compiled kernels. Change a field with ``dataclasses.replace``
(which validates again)::

    p = NeuronParams(decay=1.0, reset="subtract", multi_spike=True, v_min=-1.0)  # IF
    p2 = dataclasses.replace(p, v_th=0.5)
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field

from flexsnn.errors import InputError, check_choice
from flexsnn.neurons.surrogate import Surrogate, resolve_surrogate

RESETS = ("hard", "subtract")


def _real(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(float(value)):
        raise InputError(f"{name} must be a finite number, got {value!r}")
    return float(value)


def _flag(value, name: str) -> bool:
    if not isinstance(value, bool):
        raise InputError(f"{name} must be True or False, got {value!r}")
    return value


@dataclass(frozen=True)
class NeuronParams:
    """Parameters of the multi-step LIF / IF dynamics (equations in :mod:`flexsnn.neurons.reference`).

    v_th: threshold (> 0). decay: membrane decay per step in (0, 1] (1 = IF, no leak).
    reset: ``"hard"`` (to 0 after a spike) or ``"subtract"`` (``u - s * v_th``).
    multi_spike: emit ``floor(u / v_th)`` spikes per step instead of at most one.
    v_min: lower clip of the membrane (below ``v_th``), or None.
    surrogate: a name in :data:`flexsnn.neurons.surrogate.SURROGATES`.
    alpha: the surrogate's width / sharpness; None is the surrogate's default, and after
    construction ``alpha`` always holds the resolved float.
    detach_reset: cut the reset term's dependence on the spike from the graph.

    Invalid values raise :class:`flexsnn.errors.InputError` naming the field. ``surrogate_fn``
    is derived (the :class:`~flexsnn.neurons.surrogate.Surrogate` of ``surrogate``).
    """

    v_th: float = 1.0
    decay: float = 0.5
    reset: str = "hard"
    multi_spike: bool = False
    v_min: float | None = None
    surrogate: str = "triangle"
    alpha: float | None = None
    detach_reset: bool = False
    surrogate_fn: Surrogate = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        v_th = _real(self.v_th, "v_th")
        if v_th <= 0:
            raise InputError(f"v_th must be > 0, got {v_th}")
        decay = _real(self.decay, "decay")
        if not 0.0 < decay <= 1.0:
            raise InputError(f"decay must be in (0, 1] (1 = IF, no leak), got {decay}")
        check_choice(self.reset, "reset", RESETS)
        _flag(self.multi_spike, "multi_spike")
        v_min = self.v_min
        if v_min is not None:
            v_min = _real(v_min, "v_min")
            if v_min >= v_th:
                raise InputError(f"v_min must be below v_th ({v_th}) or None, got {v_min}")
        surrogate_fn, alpha = resolve_surrogate(self.surrogate, self.alpha)
        _flag(self.detach_reset, "detach_reset")
        # normalised plain floats (an int 1 becomes 1.0), so equal parameters hash equal
        for name, value in (
            ("v_th", v_th),
            ("decay", decay),
            ("v_min", v_min),
            ("alpha", alpha),
            ("surrogate_fn", surrogate_fn),
        ):
            object.__setattr__(self, name, value)
