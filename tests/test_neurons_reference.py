"""Reference multi-step dynamics (flexsnn.neurons.reference): hand traces and hand gradients."""

from __future__ import annotations

import math

import pytest
import torch

from flexsnn.neurons import NeuronParams, lif_multistep


def reference(x, **kw):
    return lif_multistep(x, NeuronParams(**kw), backend="reference")


def trace(values, **kw):
    """One neuron, batch 1: x [T, 1, 1] -> (spikes list, v_last float)."""
    x = torch.tensor(values, dtype=torch.float64).reshape(-1, 1, 1)
    s, v = reference(x, **kw)
    assert s.shape == x.shape and v.shape == x.shape[1:]
    return s.flatten().tolist(), float(v)


def test_lif_hard_reset_single_spike():
    # decay 0.5, v_th 1: h = 0.6 | 0.3+0.6=0.9 | 0.45+0.6=1.05 -> spike, u=0 | 1.2 -> spike, u=0 | 0.1
    s, v = trace([0.6, 0.6, 0.6, 1.2, 0.1])
    assert s == [0.0, 0.0, 1.0, 1.0, 0.0]
    assert v == pytest.approx(0.1)


def test_lif_subtract_reset_keeps_the_excess():
    # subtract: 1.5 -> spike, u=0.5 | 0.25+0.8=1.05 -> spike, u=0.05 | 0.025
    s, v = trace([1.5, 0.8, 0.0], reset="subtract")
    assert s == [1.0, 1.0, 0.0]
    assert v == pytest.approx(0.025)
    # hard: 1.5 -> spike, u=0 | 0.8 | 0.4: the second spike is lost
    s, v = trace([1.5, 0.8, 0.0], reset="hard")
    assert s == [1.0, 0.0, 0.0]
    assert v == pytest.approx(0.4)


def test_if_subtract_multi_spike_with_clip():
    # IF (decay 1), v_th 1, v_min -1, multi-spike, subtract:
    #   t0: h = 2.5            -> s = floor(2.5) = 2, u = 0.5
    #   t1: h = 0.5 - 3 = -2.5 -> clipped to -1, s = 0, u = -1
    #   t2: h = -1 + 0.4 = -0.6 -> s = 0, u = -0.6
    #   t3: h = -0.6 + 1.2 = 0.6 -> s = 0, u = 0.6
    #   t4: h = 0.6 + 2.7 = 3.3 -> s = 3, u = 0.3
    kw = dict(decay=1.0, reset="subtract", multi_spike=True, v_min=-1.0)
    s, v = trace([2.5, -3.0, 0.4, 1.2, 2.7], **kw)
    assert s == [2.0, 0.0, 0.0, 0.0, 3.0]
    assert v == pytest.approx(0.3)
    membranes = [trace([2.5, -3.0, 0.4, 1.2, 2.7][: t + 1], **kw)[1] for t in range(5)]
    assert membranes == pytest.approx([0.5, -1.0, -0.6, 0.6, 0.3])
    # without the clip the membrane falls to -2.5 and 0.4 + 1.2 + 2.7 never catches up to fire 3
    s, v = trace([2.5, -3.0, 0.4, 1.2, 2.7], decay=1.0, reset="subtract", multi_spike=True)
    assert s == [2.0, 0.0, 0.0, 0.0, 1.0]
    assert v == pytest.approx(0.8)


def test_multi_spike_hard_reset_goes_to_zero_and_threshold_scales_count():
    # v_th 0.5, hard: 1.7 -> floor(3.4) = 3 spikes, u = 0 | 0.3 | 0.15+0.4=0.55 -> 1 spike
    s, v = trace([1.7, 0.3, 0.4], v_th=0.5, multi_spike=True)
    assert s == [3.0, 0.0, 1.0]
    assert v == 0.0


def test_decay_other_than_half():
    # decay 0.9: 0.5 | 0.45+0.5=0.95 | 0.855+0.5=1.355 -> spike, u=0 | 0.2
    s, v = trace([0.5, 0.5, 0.5, 0.2], decay=0.9)
    assert s == [0.0, 0.0, 1.0, 0.0]
    assert v == pytest.approx(0.2)
    # decay 0.5 never reaches 1 on the same input: 0.5, 0.75, 0.875, 0.6375
    s, v = trace([0.5, 0.5, 0.5, 0.2], decay=0.5)
    assert s == [0.0, 0.0, 0.0, 0.0]
    assert v == pytest.approx(0.6375)


def test_v_th_other_than_one():
    # v_th 2, decay 0.5, hard: 1.5 | 0.75+1.5=2.25 -> spike | 1.5
    s, v = trace([1.5, 1.5, 1.5], v_th=2.0)
    assert s == [0.0, 1.0, 0.0]
    assert v == pytest.approx(1.5)


def grad_of_spike_sum(values, **kw):
    x = torch.tensor(values, dtype=torch.float64).reshape(-1, 1, 1).requires_grad_()
    s, v = reference(x, **kw)
    return s, v, x


def test_hand_computed_gradient_triangle_hard_reset():
    # x = [0.8, 0.9, 0.3], decay 0.5, v_th 1, hard reset, L = sum(s).
    # forward: m = [0.8, 1.3, 0.3], s = [0, 1, 0]
    # s'(m) = max(0, 1 - |m - 1|) = [0.8, 0.7, 0.3]
    # du/dm = (1 - s) - m * s' = [1 - 0.64, 0 - 0.91, 1 - 0.09] = [0.36, -0.91, 0.91]
    # dx2 = 0.3; du1 = 0.5 * 0.3 = 0.15; dx1 = 0.7 + 0.15 * -0.91 = 0.5635
    # du0 = 0.5 * 0.5635 = 0.28175; dx0 = 0.8 + 0.28175 * 0.36 = 0.90143
    s, v, x = grad_of_spike_sum([0.8, 0.9, 0.3])
    assert s.flatten().tolist() == [0.0, 1.0, 0.0]
    s.sum().backward()
    assert torch.allclose(x.grad.flatten(), torch.tensor([0.90143, 0.5635, 0.3], dtype=torch.float64))


def test_hand_computed_gradient_detach_reset():
    # detach_reset: du/dm = 1 - s = [1, 0, 1]
    # dx2 = 0.3; dx1 = 0.7 + 0.15 * 0 = 0.7; dx0 = 0.8 + 0.35 * 1 = 1.15
    s, v, x = grad_of_spike_sum([0.8, 0.9, 0.3], detach_reset=True)
    s.sum().backward()
    assert torch.allclose(x.grad.flatten(), torch.tensor([1.15, 0.7, 0.3], dtype=torch.float64))


def test_hand_computed_gradient_through_clip_and_v_last():
    # IF, multi-spike, subtract, v_min -1: x = [2.5, -3, 0.4], L = sum(s) + v_last
    # h = [2.5, -2.5 (clipped, pass 0), -0.6]; m = [2.5, -1, -0.6]; s = [2, 0, 0]; v_last = -0.6
    # s'(m) = [1/v_th = 1, tri(-2) = 0, tri(-1.6) = 0]; du/dm = 1 - v_th * s' = [0, 1, 1]
    # dm2 = 0 + 1 * 1 = 1 -> dx2 = 1; dm1 = 0 + 1 * 1 = 1 but clipped -> dx1 = 0
    # du0 = 0 -> dx0 = s'0 = 1
    s, v, x = grad_of_spike_sum([2.5, -3.0, 0.4], decay=1.0, reset="subtract", multi_spike=True, v_min=-1.0)
    assert s.flatten().tolist() == [2.0, 0.0, 0.0]
    assert float(v.detach()) == pytest.approx(-0.6)
    (s.sum() + v.sum()).backward()
    assert torch.allclose(x.grad.flatten(), torch.tensor([1.0, 0.0, 1.0], dtype=torch.float64))


def test_membrane_starts_at_zero_each_call_and_batch_is_independent():
    x = torch.rand(4, 3, 2, 5, dtype=torch.float64) * 2
    s1, v1 = reference(x)
    s2, v2 = reference(x)
    assert torch.equal(s1, s2) and torch.equal(v1, v2)
    s_one, _ = reference(x[:, 1:2])
    assert torch.equal(s_one, s1[:, 1:2])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_dtype_and_shape_preserved(dtype):
    x = torch.rand(3, 2, 4, 5).to(dtype)
    s, v = reference(x)
    assert s.dtype == dtype and v.dtype == dtype
    assert s.shape == x.shape and v.shape == x.shape[1:]


# ------------------------------------------------------------ exponential surrogate, by hand
EVENT_IF = dict(decay=1.0, reset="subtract", multi_spike=True, v_min=-1.0, surrogate="exponential")
E1, E06 = math.exp(-1.0), math.exp(-0.6)


def test_hand_computed_gradient_exponential_event_driven_if():
    # IF, v_th 1, subtract, multi-spike, v_min -1, x = [1.5, 0.2], L = sum(s)
    # m = [1.5, 0.7], s = [1, 0]; s'(m) = 2 exp(-2 |m - 1|) = [2 e^-1, 2 e^-0.6] (no envelope:
    # the bump also applies above threshold); the reset path passes 1 - s'(m0) = 1 - 2 e^-1
    # dx1 = 2 e^-0.6 = 1.097623; dx0 = 2 e^-1 + (1 - 2 e^-1) * 2 e^-0.6 = 1.025796
    s, v, x = grad_of_spike_sum([1.5, 0.2], **EVENT_IF)
    assert s.flatten().tolist() == [1.0, 0.0] and float(v.detach()) == pytest.approx(0.7)
    s.sum().backward()
    expected = [2 * E1 + (1 - 2 * E1) * 2 * E06, 2 * E06]
    assert torch.allclose(x.grad.flatten(), torch.tensor(expected, dtype=torch.float64))
    assert expected == pytest.approx([1.025796, 1.097623], abs=1e-6)
    # the triangle on the same neuron: envelope 1 above threshold, the reset path closed (0)
    s, _, x = grad_of_spike_sum([1.5, 0.2], **{**EVENT_IF, "surrogate": "triangle"})
    s.sum().backward()
    assert torch.allclose(x.grad.flatten(), torch.tensor([1.0, 0.7], dtype=torch.float64))


def test_reset_path_passes_one_minus_the_surrogate_at_every_step():
    # L = v_last = m1 - s1: dv/dx1 = 1 - s'(m1), dv/dx0 = (1 - s'(m1)) * (1 - s'(m0))
    s, v, x = grad_of_spike_sum([1.5, 0.2], **EVENT_IF)
    v.sum().backward()
    expected = [(1 - 2 * E06) * (1 - 2 * E1), 1 - 2 * E06]
    assert torch.allclose(x.grad.flatten(), torch.tensor(expected, dtype=torch.float64))
    assert expected[1] == pytest.approx(-0.097623, abs=1e-6)  # just below threshold: negative


def test_exponential_scales_with_threshold_by_hand():
    # v_th 2, x = [3.0, 0.4]: m = [3.0, 1.4], s = [floor(1.5) = 1, 0]
    # s'(m) = (2 / v_th) exp(-2 |m - v_th| / v_th) = exp(-|m - 2|) = [e^-1, e^-0.6]: half the
    # v_th = 1 values at the same m / v_th; the reset path 1 - v_th s'(m0) = 1 - 2 e^-1 is the same
    s, _, x = grad_of_spike_sum([3.0, 0.4], **EVENT_IF, v_th=2.0)
    assert s.flatten().tolist() == [1.0, 0.0]
    s.sum().backward()
    expected = [E1 + (1 - 2 * E1) * E06, E06]
    assert torch.allclose(x.grad.flatten(), torch.tensor(expected, dtype=torch.float64))


def straight_through(x, v_th, decay, reset, multi_spike, v_min, detach_reset, slope):
    """The same dynamics written with plain autograd ops: each spike is its step value plus
    ``slope(m) * (m - m.detach())`` (value unchanged, derivative = the surrogate)."""
    u = torch.zeros_like(x[0])
    spikes = []
    for t in range(x.shape[0]):
        h = decay * u + x[t]
        m = h if v_min is None else torch.clamp(h, min=v_min)
        value = torch.floor(m / v_th).clamp(min=0) if multi_spike else (m >= v_th).to(m.dtype)
        s = value.detach() + slope(m.detach(), v_th) * (m - m.detach())
        if reset == "hard":
            fired = (m >= v_th).to(m.dtype)
            g = fired + slope(m.detach(), v_th) * (m - m.detach())
            u = m * (1.0 - (g.detach() if detach_reset else g))
        else:
            u = m - (s.detach() if detach_reset else s) * v_th
        spikes.append(s)
    return torch.stack(spikes), u


def exponential_slope(m, v_th):
    return 2.0 / v_th * torch.exp(-2.0 * (m - v_th).abs() / v_th)


@pytest.mark.parametrize("reset", ["hard", "subtract"])
@pytest.mark.parametrize("multi_spike", [False, True])
@pytest.mark.parametrize("detach_reset", [False, True])
@pytest.mark.parametrize("v_th, decay, v_min", [(1.0, 1.0, -1.0), (0.6, 0.8, None), (2.0, 0.5, -0.5)])
def test_exponential_reference_equals_autograd_through_a_straight_through_loop(
    reset, multi_spike, detach_reset, v_th, decay, v_min
):
    g = torch.Generator().manual_seed(7)
    x = (torch.randn(8, 3, 5, generator=g, dtype=torch.float64) * 1.5 * v_th + 0.3).requires_grad_()
    kw = dict(v_th=v_th, decay=decay, reset=reset, multi_spike=multi_spike, v_min=v_min, detach_reset=detach_reset)
    s, v = reference(x, surrogate="exponential", **kw)
    s_st, v_st = straight_through(x, slope=exponential_slope, **kw)
    assert torch.equal(s, s_st) and torch.allclose(v, v_st)
    if multi_spike:
        assert s.max() >= 2  # some steps fire several spikes, where the bump differs from an envelope
    w_s, w_v = torch.randn(s.shape, generator=g, dtype=x.dtype), torch.randn(v.shape, generator=g, dtype=x.dtype)
    (grad,) = torch.autograd.grad((s * w_s).sum() + (v * w_v).sum(), x)
    (grad_st,) = torch.autograd.grad((s_st * w_s).sum() + (v_st * w_v).sum(), x)
    assert grad.abs().sum() > 0
    torch.testing.assert_close(grad, grad_st, rtol=1e-12, atol=1e-12)
