"""BPTT kernels (flexsnn.neurons.kernels): the traceable loops equal the eager ones in every mode.

The traceable pair is what flexsnn.neurons.compiled compiles; run eagerly here (no compile),
so every mode is covered in well under a second. The eager pair is checked against the
reference loop in tests/test_neurons_fused.py.
"""

from __future__ import annotations

import itertools

import pytest
import torch

from flexsnn.neurons import NeuronParams
from flexsnn.neurons.kernels import EAGER_KERNELS, backward_loop, backward_traced, forward_loop, forward_traced

MODES = list(
    itertools.product(
        [0.5, 1.0],  # decay
        ["hard", "subtract"],
        [False, True],  # multi_spike
        [None, -1.0],  # v_min
        ["triangle", "exponential", "sigmoid", "atan"],
        [False, True],  # detach_reset
    )
)


@pytest.mark.parametrize("mode", MODES, ids=lambda m: "-".join(map(str, m)))
def test_traced_kernels_equal_eager_loops(mode):
    decay, reset, multi, v_min, surrogate, detach = mode
    p = NeuronParams(
        v_th=0.7, decay=decay, reset=reset, multi_spike=multi, v_min=v_min, surrogate=surrogate, detach_reset=detach
    )
    g = torch.Generator().manual_seed(MODES.index(mode))
    x = torch.randn(6, 4, 5, generator=g, dtype=torch.float64) * 1.5 + 0.3
    s, v, h = forward_loop(x, p, True)
    s_t, v_t, h_t = forward_traced(x, p, True)
    assert torch.equal(s, s_t) and torch.allclose(v, v_t) and torch.equal(h, h_t)
    assert s.sum() > 0
    grad_s = torch.randn(s.shape, generator=g, dtype=x.dtype)
    grad_v = torch.randn(v.shape, generator=g, dtype=x.dtype)
    for gs, gv in ((grad_s, grad_v), (grad_s, None), (None, grad_v)):
        dx = backward_loop(h, gs, gv, p)
        assert dx.abs().sum() > 0
        torch.testing.assert_close(backward_traced(h, gs, gv, p), dx, rtol=1e-12, atol=1e-12)


def test_forward_without_membrane_saves_nothing():
    x = torch.rand(3, 2, 4)
    s, v, h = EAGER_KERNELS.forward(x, NeuronParams(), False)
    assert h is None and forward_traced(x, NeuronParams(), False)[2] is None
    assert torch.equal(s, forward_loop(x, NeuronParams(), True)[0])
