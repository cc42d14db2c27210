"""Spike functions and their surrogate gradients.

A spiking neuron fires when its membrane ``u`` reaches the threshold ``v_th``. The firing
function is a step, whose true derivative is zero almost everywhere, so training replaces
d spike / d u by a smooth *surrogate* evaluated at ``x = u - v_th``.

Surrogates (``SURROGATES[name]``, a :class:`Surrogate`; ``SURROGATES[name](x, alpha)`` is
d spike / d u at ``x = u - v_th`` for ``v_th = 1``, elementwise, any shape):

- ``"triangle"`` (the paper's, for time-stepped LIF nets): ``max(0, 1 - |x| / alpha) / alpha``.
  ``alpha`` is the half-width of the triangle; the height ``1 / alpha`` keeps the area at 1.
  The default ``alpha = 1`` gives exactly the paper's ``max(0, 1 - |u - V_th|)``.
- ``"exponential"`` (Sinabs' default ``SingleExponential``, used by the authors' event-driven
  IF nets): ``exp(-|x| / w) / w`` with width ``w = alpha * v_th``, default ``alpha = 0.5``
  (Sinabs' ``grad_width``). So ``d s / d u = (2 / v_th) exp(-2 |u - v_th| / v_th)``, which is
  ``2 exp(-2 |u - 1|)`` at ``v_th = 1``: the width grows with the threshold and the height
  ``1 / w`` shrinks with it (area 2 for every ``v_th``), exactly as Sinabs scales it.
- ``"sigmoid"``: ``alpha * sig(alpha x) * (1 - sig(alpha x))`` (derivative of
  ``sig(alpha x)``), default ``alpha = 4``.
- ``"atan"``: ``(alpha / 2) / (1 + (pi / 2 * alpha * x) ** 2)`` (derivative of
  ``atan(pi / 2 * alpha * x) / pi``), default ``alpha = 2``.

Only the exponential scales with ``v_th`` (:attr:`Surrogate.scales_with_threshold`); the
others are the same function of ``u - v_th`` at every threshold.

Single spike: ``s = H(u - v_th)`` (1 when ``u >= v_th``), surrogate ``grad(u - v_th)``.

Multi-spike: ``s = floor(u / v_th)`` clamped at >= 0. Two rules
(:attr:`Surrogate.multi_spike_envelope`):

- envelope (triangle, sigmoid, atan): below threshold (``s = 0``) ``grad(u - v_th)``, as for a
  single spike (the neuron is about to emit its first spike); at or above threshold
  (``s >= 1``) ``1 / v_th``, the slope of the linear envelope ``u / v_th`` of the staircase
  ``floor(u / v_th)``. Under subtract reset, ``u - v_th * s`` then has surrogate derivative
  ``1 - v_th * (1 / v_th) = 0`` above threshold: the residual membrane of a firing
  multi-spike neuron carries no gradient back through the reset (``detach_reset=True`` keeps
  the temporal path open instead).
- one bump (exponential, as Sinabs' ``MultiSpike``): ``grad(u - v_th)`` at every membrane
  value, above threshold too. Under subtract reset the reset path passes
  ``1 - v_th * grad(u - v_th) = 1 - 2 exp(-2 |u - v_th| / v_th)``: at ``v_th = 1`` the
  paper's "1 - that value".

The hard-reset gate ``H(s > 0)`` (single spike: ``s`` itself) uses the single-spike
surrogate ``grad(u - v_th)`` in both modes.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from flexsnn.errors import InputError

SurrogateGrad = Callable[..., torch.Tensor]  # grad(x, alpha, inplace=False) -> tensor


def triangle_grad(x: torch.Tensor, alpha: float = 1.0, inplace: bool = False) -> torch.Tensor:
    """``max(0, 1 - |x| / alpha) / alpha``; alpha = 1 is the paper's ``max(0, 1 - |x|)``.

    ``inplace=True`` overwrites ``x`` (the fused backward passes a temporary it owns).
    """
    y = x if inplace else x.clone()
    y.abs_()
    if alpha != 1.0:
        y.div_(alpha)
    y.neg_().add_(1.0).clamp_min_(0.0)
    return y if alpha == 1.0 else y.div_(alpha)


def exponential_grad(x: torch.Tensor, alpha: float = 0.5, inplace: bool = False) -> torch.Tensor:
    """``exp(-|x| / alpha) / alpha`` (alpha = the width); ``inplace=True`` overwrites ``x``."""
    y = x if inplace else x.clone()
    return y.abs_().mul_(-1.0 / alpha).exp_().div_(alpha)


def sigmoid_grad(x: torch.Tensor, alpha: float = 4.0, inplace: bool = False) -> torch.Tensor:
    """``alpha * sig(alpha x) * (1 - sig(alpha x))``; ``inplace=True`` overwrites ``x``."""
    y = x if inplace else x.clone()
    y.mul_(alpha).sigmoid_()
    return y.mul_(1.0 - y).mul_(alpha)


def atan_grad(x: torch.Tensor, alpha: float = 2.0, inplace: bool = False) -> torch.Tensor:
    """``(alpha / 2) / (1 + (pi / 2 * alpha * x) ** 2)``; ``inplace=True`` overwrites ``x``."""
    y = x if inplace else x.clone()
    return y.mul_(math.pi / 2.0 * alpha).square_().add_(1.0).reciprocal_().mul_(alpha / 2.0)


@dataclass(frozen=True)
class Surrogate:
    """A surrogate gradient: the function, its default ``alpha`` and how it meets the neuron.

    ``scales_with_threshold``: the function receives ``alpha * v_th`` instead of ``alpha``
    (a width relative to the threshold, as Sinabs' ``grad_width``).
    ``multi_spike_envelope``: multi-spike neurons use ``1 / v_th`` at or above threshold
    (True) or the same function at every membrane value (False); module docstring.
    """

    grad: SurrogateGrad
    default_alpha: float
    scales_with_threshold: bool = False
    multi_spike_envelope: bool = True

    def slope(self, x: torch.Tensor, alpha: float, v_th: float, inplace: bool = False) -> torch.Tensor:
        """d spike / d u at ``x = u - v_th`` for a neuron with threshold ``v_th``."""
        return self.grad(x, alpha * v_th if self.scales_with_threshold else alpha, inplace)

    def __call__(self, x: torch.Tensor, alpha: float | None = None, inplace: bool = False) -> torch.Tensor:
        """d spike / d u at ``x = u - 1`` (threshold 1); ``alpha=None`` is the default."""
        return self.grad(x, self.default_alpha if alpha is None else alpha, inplace)


SURROGATES: dict[str, Surrogate] = {
    "triangle": Surrogate(triangle_grad, 1.0),
    "exponential": Surrogate(exponential_grad, 0.5, scales_with_threshold=True, multi_spike_envelope=False),
    "sigmoid": Surrogate(sigmoid_grad, 4.0),
    "atan": Surrogate(atan_grad, 2.0),
}


def resolve_surrogate(surrogate: str, alpha: float | None = None) -> tuple[Surrogate, float]:
    """Return ``(Surrogate, alpha)`` for a surrogate name; ``alpha=None`` picks its default."""
    if surrogate not in SURROGATES:
        raise InputError(f"surrogate must be one of {', '.join(map(repr, SURROGATES))}, got {surrogate!r}")
    if alpha is None:
        return SURROGATES[surrogate], SURROGATES[surrogate].default_alpha
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not math.isfinite(alpha) or alpha <= 0:
        raise InputError(f"alpha must be a finite number > 0 (or None for the default), got {alpha!r}")
    return SURROGATES[surrogate], float(alpha)


def threshold_reached(u: torch.Tensor, v_th: float, multi_spike: bool) -> torch.Tensor:
    """``H(s > 0)`` as a float tensor of ``u``'s dtype (1 where the neuron fires at all).

    Single spike: ``u >= v_th``. Multi-spike: ``u / v_th >= 1``, the exact condition for
    ``floor(u / v_th) >= 1`` (it can differ from ``u >= v_th`` by rounding, in the last ulp).
    Comparisons write straight into a float tensor: much faster on CPU than a bool mask.
    """
    if torch.compiler.is_compiling():  # dynamo cannot trace out= into channels_last tensors
        return ((u / v_th >= 1.0) if multi_spike else (u >= v_th)).to(u.dtype)
    out = torch.empty_like(u)
    if multi_spike:
        return torch.ge(u / v_th, 1.0, out=out)
    return torch.ge(u, v_th, out=out)


def spike_forward(u: torch.Tensor, v_th: float, multi_spike: bool, out: torch.Tensor | None = None) -> torch.Tensor:
    """Spikes emitted by membrane ``u`` (any shape), in ``u``'s dtype. No gradient.

    Single: ``u >= v_th`` as 0/1; multi: ``floor(u / v_th)`` clamped at >= 0. ``out``: an
    optional tensor like ``u`` to write into.
    """
    if out is None:
        if torch.compiler.is_compiling():  # dynamo cannot trace out= into channels_last tensors
            return torch.floor(u / v_th).clamp_min(0.0) if multi_spike else (u >= v_th).to(u.dtype)
        out = torch.empty_like(u)
    if multi_spike:
        return torch.div(u, v_th, out=out).floor_().clamp_min_(0.0)
    return torch.ge(u, v_th, out=out)


def spike_surrogate(
    u: torch.Tensor, v_th: float, multi_spike: bool, surrogate: Surrogate, alpha: float
) -> torch.Tensor:
    """Surrogate d spike / d u at membrane ``u`` (the module docstring gives the rules)."""
    base = surrogate.slope(u - v_th, alpha, v_th, inplace=True)
    if not (multi_spike and surrogate.multi_spike_envelope):
        return base
    # Above threshold: 1 / v_th. Arithmetic blend with a 0/1 float mask (no bool masks).
    reached = threshold_reached(u, v_th, True)
    return base.mul_(1.0 - reached).add_(reached, alpha=1.0 / v_th)


def gate_surrogate(u: torch.Tensor, v_th: float, surrogate: Surrogate, alpha: float) -> torch.Tensor:
    """Surrogate d H(s > 0) / d u for the hard-reset gate: the single-spike surrogate."""
    return surrogate.slope(u - v_th, alpha, v_th, inplace=True)


class SpikeFunction(torch.autograd.Function):
    """Spike with surrogate gradient: ``apply(u, v_th, multi_spike, surrogate, alpha, gate=False)``.

    ``surrogate`` is a :class:`Surrogate`. ``gate=True`` returns the hard-reset gate
    ``H(s > 0)`` instead of ``s``, with the single-spike surrogate.
    """

    @staticmethod
    def forward(ctx, u, v_th, multi_spike, surrogate, alpha, gate=False):  # noqa: D102
        ctx.save_for_backward(u)
        ctx.params = (v_th, multi_spike, surrogate, alpha, gate)
        if gate:
            return threshold_reached(u, v_th, multi_spike)
        return spike_forward(u, v_th, multi_spike)

    @staticmethod
    def backward(ctx, grad_out):  # noqa: D102
        (u,) = ctx.saved_tensors
        v_th, multi_spike, surrogate, alpha, gate = ctx.params
        if gate:
            slope = gate_surrogate(u, v_th, surrogate, alpha)
        else:
            slope = spike_surrogate(u, v_th, multi_spike, surrogate, alpha)
        return grad_out * slope, None, None, None, None, None


def spike(
    u: torch.Tensor,
    v_th: float = 1.0,
    multi_spike: bool = False,
    surrogate: str = "triangle",
    alpha: float | None = None,
) -> torch.Tensor:
    """Differentiable spike function: forward as :func:`spike_forward`, backward by surrogate."""
    fn, alpha = resolve_surrogate(surrogate, alpha)
    return SpikeFunction.apply(u, float(v_th), bool(multi_spike), fn, alpha)
