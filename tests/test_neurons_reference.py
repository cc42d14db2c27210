"""Reference multi-step dynamics (flexsnn.neurons.reference): hand traces and hand gradients."""
from __future__ import annotations

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
