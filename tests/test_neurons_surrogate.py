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
    assert set(SURROGATES) == {"triangle", "sigmoid", "atan"}
    assert {name: s.default_alpha for name, s in SURROGATES.items()} == {"triangle": 1.0, "sigmoid": 4.0, "atan": 2.0}


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


@pytest.mark.parametrize("name", ["triangle", "sigmoid", "atan"])
def test_inplace_matches_pure_and_pure_leaves_input_alone(name):
    x = X.clone()
    pure = SURROGATES[name](x, 1.7)
    assert torch.equal(x, X)
    inplace = SURROGATES[name](x, 1.7, inplace=True)
    assert inplace.data_ptr() == x.data_ptr()
    assert torch.equal(pure, inplace)


def test_unknown_surrogate_lists_choices():
    with pytest.raises(InputError, match="surrogate.*'triangle'.*'sigmoid'.*'atan'.*'relu'"):
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
