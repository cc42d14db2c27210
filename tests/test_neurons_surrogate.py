"""Surrogate gradients and the spike function (flexsnn.neurons.surrogate)."""

from __future__ import annotations

import math

import pytest
import torch

from flexsnn.errors import InputError
from flexsnn.neurons import SURROGATES
from flexsnn.neurons.surrogate import (
    SpikeFunction,
    resolve_surrogate,
    spike,
    spike_forward,
    spike_surrogate,
    threshold_reached,
)

X = torch.tensor([-2.0, -1.0, -0.5, -0.25, 0.0, 0.25, 0.5, 1.0, 1.5], dtype=torch.float64)


def test_registry_names_and_defaults():
    assert set(SURROGATES) == {"triangle", "exponential", "sigmoid", "atan"}
    assert {name: s.default_alpha for name, s in SURROGATES.items()} == {
        "triangle": 1.0,
        "exponential": 0.5,
        "sigmoid": 4.0,
        "atan": 2.0,
    }
    # only the exponential (Sinabs' SingleExponential with MultiSpike) scales with v_th and
    # keeps its bump above a multi-spike threshold
    assert [n for n, s in SURROGATES.items() if s.scales_with_threshold] == ["exponential"]
    assert [n for n, s in SURROGATES.items() if not s.multi_spike_envelope] == ["exponential"]


def test_triangle_default_is_the_papers_max_0_1_minus_abs():
    expected = torch.tensor([0.0, 0.0, 0.5, 0.75, 1.0, 0.75, 0.5, 0.0, 0.0], dtype=torch.float64)
    assert torch.equal(SURROGATES["triangle"](X, 1.0), expected)
    assert torch.equal(SURROGATES["triangle"](X), expected)  # alpha defaults to 1


def test_triangle_alpha_is_half_width_with_unit_area():
    # alpha = 2: max(0, 1 - |x| / 2) / 2 -> at 0: 0.5, at +-1: 0.25, at +-2: 0
    got = SURROGATES["triangle"](X, 2.0)
    expected = torch.tensor([0.0, 0.25, 0.375, 0.4375, 0.5, 0.4375, 0.375, 0.25, 0.125], dtype=torch.float64)
    assert torch.allclose(got, expected)
    grid = torch.linspace(-3, 3, 60001, dtype=torch.float64)
    for alpha in (0.5, 1.0, 2.0):
        area = torch.trapezoid(SURROGATES["triangle"](grid, alpha), grid)
        assert abs(float(area) - 1.0) < 1e-6


@pytest.mark.parametrize(
    "name, primitive",
    [
        ("sigmoid", lambda x, a: torch.sigmoid(a * x)),
        ("atan", lambda x, a: torch.atan(math.pi / 2 * a * x) / math.pi),
    ],
)
@pytest.mark.parametrize("alpha", [None, 0.5, 3.0])
def test_smooth_surrogates_are_derivatives_of_their_primitive(name, primitive, alpha):
    a = SURROGATES[name].default_alpha if alpha is None else alpha
    x = X.clone().requires_grad_()
    (autograd_grad,) = torch.autograd.grad(primitive(x, a).sum(), x)
    fn, resolved = resolve_surrogate(name, alpha)
    assert resolved == a
    assert torch.allclose(fn(X, resolved), autograd_grad)


def test_sigmoid_and_atan_peak_values():
    zero = torch.zeros(1, dtype=torch.float64)
    assert float(SURROGATES["sigmoid"](zero)) == pytest.approx(1.0)  # 4 * 1/2 * 1/2
    assert float(SURROGATES["atan"](zero)) == pytest.approx(1.0)  # 2 / 2


@pytest.mark.parametrize("name", ["triangle", "exponential", "sigmoid", "atan"])
def test_inplace_matches_pure_and_pure_leaves_input_alone(name):
    x = X.clone()
    pure = SURROGATES[name](x, 1.7)
    assert torch.equal(x, X)
    inplace = SURROGATES[name](x, 1.7, inplace=True)
    assert inplace.data_ptr() == x.data_ptr()
    assert torch.equal(pure, inplace)


def test_unknown_surrogate_lists_choices():
    with pytest.raises(InputError, match="surrogate.*'triangle'.*'exponential'.*'sigmoid'.*'atan'.*'relu'"):
        resolve_surrogate("relu")


@pytest.mark.parametrize("alpha", [0.0, -1.0, float("nan"), True, "2"])
def test_bad_alpha_rejected(alpha):
    with pytest.raises(InputError, match="alpha"):
        resolve_surrogate("triangle", alpha)


def test_single_spike_fires_at_and_above_threshold():
    u = torch.tensor([0.0, 0.99, 1.0, 1.5, 3.7, -2.0])
    assert spike_forward(u, 1.0, False).tolist() == [0.0, 0.0, 1.0, 1.0, 1.0, 0.0]
    assert spike_forward(u, 1.0, False).dtype == u.dtype


def test_multi_spike_is_floor_clamped_at_zero():
    u = torch.tensor([-2.5, -0.1, 0.0, 0.49, 0.5, 1.2, 1.5, 3.7], dtype=torch.float64)
    assert spike_forward(u, 0.5, True).tolist() == [0.0, 0.0, 0.0, 0.0, 1.0, 2.0, 3.0, 7.0]
    assert threshold_reached(u, 0.5, True).tolist() == [0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0]


def test_multi_spike_surrogate_below_and_above_threshold():
    # v_th = 0.5: below threshold the triangle at u - 0.5, at/above it 1 / v_th = 2.
    u = torch.tensor([-1.0, 0.0, 0.25, 0.5, 0.9, 2.0], dtype=torch.float64)
    fn, alpha = resolve_surrogate("triangle")
    got = spike_surrogate(u.clone(), 0.5, True, fn, alpha)
    assert torch.allclose(got, torch.tensor([0.0, 0.5, 0.75, 2.0, 2.0, 2.0], dtype=torch.float64))
    single = spike_surrogate(u.clone(), 0.5, False, fn, alpha)
    assert torch.allclose(single, torch.tensor([0.0, 0.5, 0.75, 1.0, 0.6, 0.0], dtype=torch.float64))


def test_spike_function_backward_uses_surrogate():
    u = torch.tensor([0.2, 0.8, 1.0, 1.3, 2.5], dtype=torch.float64, requires_grad=True)
    s = spike(u, v_th=1.0)
    assert s.tolist() == [0.0, 0.0, 1.0, 1.0, 1.0]
    s.sum().backward()
    assert torch.allclose(u.grad, torch.tensor([0.2, 0.8, 1.0, 0.7, 0.0], dtype=torch.float64))


def test_gate_kind_returns_any_spike_indicator_with_single_surrogate():
    u = torch.tensor([0.5, 1.0, 2.6], dtype=torch.float64, requires_grad=True)
    fn, alpha = resolve_surrogate("triangle")
    g = SpikeFunction.apply(u, 1.0, True, fn, alpha, True)
    assert g.tolist() == [0.0, 1.0, 1.0]
    g.sum().backward()
    assert torch.allclose(u.grad, torch.tensor([0.5, 1.0, 0.0], dtype=torch.float64))


# ------------------------------------------------------------------ exponential (Sinabs' default)
def test_exponential_at_threshold_one_is_two_exp_minus_two_abs():
    # d s / d u = 2 exp(-2 |u - 1|): 2 at the threshold, 2/e half a unit away on either side
    got = SURROGATES["exponential"](X)
    assert torch.allclose(got, 2.0 * torch.exp(-2.0 * X.abs()))
    assert float(got[4]) == 2.0 and float(got[2]) == pytest.approx(2.0 / math.e) == float(got[6])
    u = X + 1.0
    fn, alpha = resolve_surrogate("exponential")
    assert torch.equal(spike_surrogate(u.clone(), 1.0, False, fn, alpha), got)


def sinabs_single_exponential(v_mem, spike_threshold, grad_width=0.5, grad_scale=1.0):
    """Sinabs' SingleExponential, written out: width relative to the threshold."""
    abs_width = spike_threshold * grad_width
    return grad_scale / abs_width * torch.exp(-torch.abs(v_mem - spike_threshold) / abs_width)


@pytest.mark.parametrize("v_th", [0.5, 1.0, 2.0])
@pytest.mark.parametrize("alpha", [None, 0.25])
def test_exponential_width_scales_with_threshold_as_sinabs(v_th, alpha):
    fn, a = resolve_surrogate("exponential", alpha)
    u = torch.linspace(-2.0, 3.0 * v_th, 101, dtype=torch.float64)
    got = spike_surrogate(u.clone(), v_th, False, fn, a)
    # width w = alpha * v_th, height 1 / w: (2 / v_th) exp(-2 |u - v_th| / v_th) at alpha = 0.5
    assert torch.allclose(got, sinabs_single_exponential(u, v_th, grad_width=a))
    if alpha is None:
        assert torch.allclose(got, 2.0 / v_th * torch.exp(-2.0 * (u - v_th).abs() / v_th))
    # in units of the threshold the curve is the same: v_th * s'(v_th * z) does not depend on v_th
    z = torch.linspace(-1.0, 3.0, 41, dtype=torch.float64)
    assert torch.allclose(v_th * fn.slope(v_th * z - v_th, a, v_th), fn.slope(z - 1.0, a, 1.0))
    # area 2 (Sinabs' grad_scale 1 with height 1 / width), whatever the threshold
    grid = torch.linspace(v_th - 40 * a * v_th, v_th + 40 * a * v_th, 400001, dtype=torch.float64)
    assert float(torch.trapezoid(fn.slope(grid - v_th, a, v_th), grid)) == pytest.approx(2.0, rel=1e-6)


def test_exponential_multi_spike_keeps_the_bump_above_threshold():
    # Sinabs' MultiSpike uses the surrogate at every membrane value: no 1 / v_th envelope
    u = torch.tensor([-1.0, 0.0, 0.25, 0.5, 0.9, 2.0], dtype=torch.float64)
    fn, alpha = resolve_surrogate("exponential")
    expected = 4.0 * torch.exp(-4.0 * (u - 0.5).abs())  # v_th = 0.5: (2 / 0.5) exp(-2 |u - 0.5| / 0.5)
    assert torch.allclose(spike_surrogate(u.clone(), 0.5, True, fn, alpha), expected)
    assert torch.allclose(spike_surrogate(u.clone(), 0.5, False, fn, alpha), expected)
    tri, a = resolve_surrogate("triangle")
    assert spike_surrogate(u.clone(), 0.5, True, tri, a)[3:].tolist() == [2.0, 2.0, 2.0]  # envelope kept


class _Primitive(torch.autograd.Function):
    """Forward: a surrogate's smooth primitive F; backward: the surrogate itself."""

    @staticmethod
    def forward(ctx, x, name, primitive, alpha):
        ctx.save_for_backward(x)
        ctx.name, ctx.alpha = name, alpha
        return primitive(x, alpha)

    @staticmethod
    def backward(ctx, grad_out):
        (x,) = ctx.saved_tensors
        return grad_out * SURROGATES[ctx.name](x, ctx.alpha), None, None, None


PRIMITIVES = {
    # F' is the surrogate: gradcheck compares our surrogate with finite differences of F
    "triangle": lambda x, a: torch.where(x.abs() <= a, 0.5 + x / a - x * x.abs() / (2 * a * a), (x > 0).to(x.dtype)),
    "exponential": lambda x, a: torch.sign(x) * (1.0 - torch.exp(-x.abs() / a)),
    "sigmoid": lambda x, a: torch.sigmoid(a * x),
    "atan": lambda x, a: torch.atan(math.pi / 2 * a * x) / math.pi,
}


@pytest.mark.parametrize("name", list(PRIMITIVES))
@pytest.mark.parametrize("alpha", [None, 0.7])
def test_gradcheck_every_surrogate_is_the_derivative_of_its_primitive(name, alpha):
    a = SURROGATES[name].default_alpha if alpha is None else alpha
    g = torch.Generator().manual_seed(0)
    x = torch.rand(40, generator=g, dtype=torch.float64) * 4 - 2
    x = x[(x.abs() > 1e-3) & ((x.abs() - a).abs() > 1e-3)].requires_grad_()  # off the kinks
    assert torch.autograd.gradcheck(lambda t: _Primitive.apply(t, name, PRIMITIVES[name], a), (x,))
