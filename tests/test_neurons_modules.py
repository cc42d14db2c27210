"""LIF / IF layers (flexsnn.neurons.modules)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from flexsnn.errors import InputError
from flexsnn.multistep import MultiStepModule, TimeFirstSequential
from flexsnn.neurons import IF, LIF, NeuronParams, lif_multistep


def test_defaults_and_attributes_are_plain_values():
    lif = LIF()
    assert (lif.v_th, lif.decay, lif.reset, lif.multi_spike, lif.v_min) == (1.0, 0.5, "hard", False, None)
    assert (lif.surrogate, lif.alpha, lif.detach_reset, lif.backend) == ("triangle", 1.0, False, "auto")
    neuron = IF()
    assert (neuron.v_th, neuron.decay, neuron.reset) == (1.0, 1.0, "subtract")
    assert isinstance(lif, MultiStepModule) and isinstance(neuron, MultiStepModule)
    assert not isinstance(neuron, LIF)  # export code can tell them apart
    assert IF(surrogate="atan").alpha == 2.0 and LIF(surrogate="sigmoid").alpha == 4.0
    assert list(lif.parameters()) == [] and lif.state_dict() == {}


def test_extra_repr_shows_parameters():
    assert repr(LIF()) == (
        "LIF(v_th=1.0, decay=0.5, reset='hard', multi_spike=False, surrogate='triangle', alpha=1.0, backend='auto')"
    )
    assert repr(IF(multi_spike=True, v_min=-1.0, detach_reset=True)) == (
        "IF(v_th=1.0, reset='subtract', multi_spike=True, v_min=-1.0, surrogate='triangle', alpha=1.0, "
        "detach_reset=True, backend='auto')"
    )


def test_lif_forward_hand_trace():
    x = torch.tensor([0.6, 0.6, 0.6, 1.2, 0.1]).reshape(5, 1, 1)
    assert LIF()(x).flatten().tolist() == [0.0, 0.0, 1.0, 1.0, 0.0]


def test_if_event_driven_neuron_hand_trace():
    # see tests/test_neurons_reference.py: spikes [2, 0, 0, 0, 3]
    x = torch.tensor([2.5, -3.0, 0.4, 1.2, 2.7]).reshape(5, 1, 1)
    assert IF(multi_spike=True, v_min=-1.0)(x).flatten().tolist() == [2.0, 0.0, 0.0, 0.0, 3.0]


@pytest.mark.parametrize("backend", ["auto", "fused", "reference", "compiled"])
def test_backends_agree_with_functional(backend):
    torch.manual_seed(0)
    x = (torch.randn(6, 4, 3, 5, dtype=torch.float64) + 0.5).requires_grad_()
    layer = LIF(decay=0.7, reset="subtract", multi_spike=True, v_min=-0.5, backend=backend)
    s = layer(x)
    assert layer.params == NeuronParams(decay=0.7, reset="subtract", multi_spike=True, v_min=-0.5)
    s_ref, _ = lif_multistep(x, layer.params, backend="reference")
    assert torch.equal(s, s_ref)
    (g,) = torch.autograd.grad(s.sum(), x)
    (g_ref,) = torch.autograd.grad(s_ref.sum(), x)
    assert torch.allclose(g, g_ref)


def test_no_state_between_calls():
    layer = LIF()
    x = torch.full((3, 2, 4), 0.7)
    first = layer(x)
    assert torch.equal(layer(x), first)  # a carried membrane would fire earlier the second time
    assert first[:, 0, 0].tolist() == [0.0, 1.0, 0.0]  # 0.7 | 1.05 -> spike | 0.7


def test_record_counts_spikes_multi_spikes_by_value():
    layer = IF(multi_spike=True)
    assert layer.record is False and layer.last_spike_count is None
    x = torch.zeros(2, 3, 2, 2, 2)  # T=2, B=3, 8 neurons per sample
    x[0, 0, 0, 0, 0] = 2.5  # 2 spikes
    x[1, 2, 1, 1, 1] = 1.0  # 1 spike
    x[0, 1, 0, 1, 0] = 3.2  # 3 spikes
    layer(x)
    assert layer.last_spike_count is None  # off by default: training pays nothing
    layer.record = True
    layer(x)
    assert layer.last_spike_count == 6.0 and isinstance(layer.last_spike_count, float)
    assert (layer.last_num_neurons, layer.last_time_steps, layer.last_batch_size) == (8, 2, 3)
    layer(torch.zeros(4, 1, 5))
    assert (layer.last_spike_count, layer.last_num_neurons, layer.last_time_steps, layer.last_batch_size) == (
        0.0,
        5,
        4,
        1,
    )


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("cls", [LIF, IF])
def test_dtype_device_shape_preserved(cls, dtype):
    x = (torch.rand(3, 2, 4, 5) * 2).to(dtype).requires_grad_()
    s = cls()(x)
    assert s.dtype == dtype and s.device == x.device and s.shape == x.shape
    s.sum().backward()
    assert x.grad.dtype == dtype and x.grad.shape == x.shape


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_device_preserved():
    x = torch.rand(3, 2, 4, device="cuda", requires_grad=True)
    s = LIF()(x)
    assert s.device == x.device
    s.sum().backward()
    assert x.grad.device == x.device


def test_works_in_time_first_sequential_and_trains():
    torch.manual_seed(0)
    net = TimeFirstSequential(nn.Linear(6, 8), LIF(), nn.Linear(8, 2), IF(multi_spike=True, v_min=-1.0))
    x = torch.rand(4, 5, 6) * 3
    out = net(x)
    assert out.shape == (4, 5, 2)
    out.sum().backward()
    assert net[0].weight.grad is not None and net[0].weight.grad.abs().sum() > 0


def test_edited_attributes_take_effect_and_are_validated():
    layer = LIF()
    x = torch.full((2, 1, 1), 0.6)
    assert layer(x).flatten().tolist() == [0.0, 0.0]
    layer.v_th = 0.5
    assert layer(x).flatten().tolist() == [1.0, 1.0]
    assert layer.params.v_th == 0.5
    with pytest.raises(InputError, match="decay"):  # refused at assignment, the layer unchanged
        layer.decay = 3.0
    assert layer.decay == 0.5 and layer(x).flatten().tolist() == [1.0, 1.0]
    with pytest.raises(InputError, match="v_min must be below v_th"):
        layer.v_min = 0.7
    layer.backend = "cuda"  # the backend is checked when the layer runs
    with pytest.raises(InputError, match="backend"):
        layer(x)


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: LIF(backend="cuda"), "backend must be one of 'auto', 'fused', 'reference', 'compiled'"),
        (lambda: LIF(decay=0.0), "decay"),
        (lambda: LIF(v_th=-1.0), "v_th"),
        (lambda: IF(reset="soft"), "reset"),
        (lambda: IF(surrogate="erf"), "surrogate"),
        (lambda: IF(v_min=2.0), "v_min"),
    ],
)
def test_bad_construction(make, match):
    with pytest.raises(InputError, match=match):
        make()


@pytest.mark.parametrize(
    "x, match",
    [(torch.zeros(4), "time-first"), (torch.zeros(0, 2), "T = 0"), (torch.full((2, 2), float("nan")), "NaN")],
)
def test_bad_forward_input(x, match):
    with pytest.raises(InputError, match=match):
        LIF()(x)
