"""The functional entry point (flexsnn.neurons.dispatch): one function, every backend."""

from __future__ import annotations

import pytest
import torch

import flexsnn.neurons
from flexsnn.errors import InputError
from flexsnn.neurons import NeuronParams, lif_multistep


@pytest.mark.parametrize(
    "x, match",
    [
        (torch.zeros(0, 2, 3), "T = 0"),
        (torch.zeros(5), "time-first"),
        (torch.tensor([[0.1, float("nan")]]), "NaN"),
        (torch.tensor([[0.1, float("inf")]]), "NaN or infinite"),
        (torch.zeros(3, 2, dtype=torch.int64), "floating-point"),
        ([[0.1, 0.2]], "torch.Tensor"),
    ],
)
def test_bad_input_tensor(x, match):
    with pytest.raises(InputError, match=match):
        lif_multistep(x)


# ---------------------------------------------------------------- one entry point, three backends
@pytest.mark.parametrize("backend", ["auto", "fused", "compiled"])
def test_backend_argument_matches_reference_values_and_gradients(backend):
    torch.manual_seed(3)
    x = (torch.randn(5, 2, 3, 4) * 1.5).requires_grad_()
    p = NeuronParams(decay=0.5, reset="hard", multi_spike=False, v_min=-1.0)
    s_ref, v_ref = lif_multistep(x, p, backend="reference")
    s, v = lif_multistep(x, p, backend=backend)
    assert s_ref.sum() > 0 and torch.equal(s, s_ref)
    torch.testing.assert_close(v, v_ref)
    w = torch.randn_like(s)
    (g_ref,) = torch.autograd.grad((s_ref * w).sum() + v_ref.sum(), x)
    (g,) = torch.autograd.grad((s * w).sum() + v.sum(), x)
    assert g_ref.abs().sum() > 0
    torch.testing.assert_close(g, g_ref)


def test_backend_is_validated_before_running():
    with pytest.raises(InputError, match="backend must be one of 'auto', 'fused', 'reference', 'compiled', got 'cuda'"):
        lif_multistep(torch.zeros(2, 1), backend="cuda")


def test_default_params_and_backend():
    x = torch.tensor([0.6, 0.6, 0.6, 1.2, 0.1]).reshape(5, 1, 1).requires_grad_()
    s, v = lif_multistep(x)  # NeuronParams() on the fused path (= "auto")
    assert s.flatten().tolist() == [0.0, 0.0, 1.0, 1.0, 0.0]
    assert type(s.grad_fn).__name__.startswith("FusedLIFFunction")
    s_ref, v_ref = lif_multistep(x, NeuronParams(), backend="reference")
    assert torch.equal(s, s_ref) and torch.equal(v, v_ref)


@pytest.mark.parametrize("params", [{"v_th": 0.5}, 0.5, "triangle"])
def test_params_must_be_a_neuron_params(params):
    with pytest.raises(InputError, match="params must be a NeuronParams"):
        lif_multistep(torch.zeros(2, 1), params)


def test_keywords_are_not_accepted_one_parameter_object_instead():
    with pytest.raises(TypeError):
        lif_multistep(torch.zeros(2, 1), v_th=0.5)


def test_deprecated_per_backend_aliases_are_gone():
    from flexsnn.neurons import compiled, fused

    assert not hasattr(flexsnn.neurons, "lif_multistep_fused") and not hasattr(fused, "lif_multistep_fused")
    assert not hasattr(compiled, "lif_multistep_compiled")


def test_input_check_does_not_break_torch_compile_graphs():
    from flexsnn.errors import check_finite

    def f(x):
        return check_finite(x * 2.0, "x") + 1.0

    explained = torch._dynamo.explain(f)(torch.ones(3))
    assert explained.graph_break_count == 0 and explained.graph_count == 1
    with pytest.raises(InputError, match="NaN"):  # eager calls still check
        f(torch.tensor([float("nan")]))


def test_finiteness_is_checked_on_cpu_and_not_read_back_from_accelerators():
    from flexsnn.neurons.dispatch import check_input

    with pytest.raises(InputError, match="NaN or infinite"):
        check_input(torch.tensor([[0.1, float("nan")]]))
    # a "meta" tensor has no data: reading a value back would raise, so no check may read it
    x = torch.empty(3, 2, 4, device="meta")
    assert check_input(x) is x


# ------------------------------------------------ the finiteness check read from the last membrane
NONFINITE_PARAMS = [
    NeuronParams(decay=decay, reset=reset, multi_spike=multi, v_min=v_min)
    for decay in (1.0, 0.5)
    for reset in ("hard", "subtract")
    for multi in (False, True)
    for v_min in (None, -1.0)
]


def _with_bad_value(value: float, step: int) -> torch.Tensor:
    torch.manual_seed(0)
    x = torch.rand(4, 2, 3, 6, 6) * 1.5
    x[step, 1, 2, 3, 4] = value
    return x


@pytest.mark.parametrize("params", NONFINITE_PARAMS, ids=repr)
@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
@pytest.mark.parametrize("step", [0, 2, 3])
def test_a_nonfinite_input_anywhere_is_refused_by_every_path(params, value, step):
    from torch import nn

    from flexsnn.multistep import TimeFirstSequential
    from flexsnn.neurons import LIF

    x = _with_bad_value(value, step)
    for backend in ("fused", "reference"):
        with pytest.raises(InputError, match="NaN or infinite"):
            lif_multistep(x, params, backend=backend)
        lif = LIF(params.v_th, params.decay, params.reset, params.multi_spike, params.v_min, backend=backend)
        with pytest.raises(InputError, match="NaN or infinite"):
            lif(x)
        # the neuron then its pooling, run as one pass for the fused backend
        net = TimeFirstSequential(lif, nn.AvgPool2d(2)).to(memory_format=torch.channels_last)
        with pytest.raises(InputError, match="NaN or infinite"):
            net(x.clone().requires_grad_())


def test_the_whole_input_is_read_only_when_the_last_membrane_is_not_finite(monkeypatch):
    import flexsnn.neurons.dispatch as dispatch

    calls = []
    real = dispatch.check_finite
    monkeypatch.setattr(dispatch, "check_finite", lambda x, name="x": calls.append(x.shape) or real(x, name))
    x = torch.rand(6, 2, 5)
    lif_multistep(x, NeuronParams())
    assert calls == []  # one sum over v_last, no pass over the T steps
    lif_multistep(x, NeuronParams(v_min=-1.0))  # a clip can hide -inf: x itself is checked
    assert calls == [x.shape]
    # huge finite currents overflow the membrane of an IF neuron with subtract reset: the
    # last membrane is inf, x is then checked element by element and passes (no error)
    huge = torch.full((3, 1, 2), 3e38)
    _, v_last = lif_multistep(huge, NeuronParams(decay=1.0, reset="subtract"))
    assert torch.isinf(v_last).all() and calls[-1] == huge.shape
    # the compiled kernels' hard reset zeroes +inf, so that backend checks x before the run
    n = len(calls)
    with pytest.raises(InputError, match="NaN or infinite"):
        lif_multistep(_with_bad_value(float("inf"), 0), NeuronParams(), backend="compiled")
    assert len(calls) == n + 1
