"""EventNet: structure validation, shapes, and conversion from torch models."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from flexsnn.deploy import Conv, EventNet, Flatten, Linear, NeuronSpec, SumPool
from flexsnn.errors import InputError


class IF(nn.Module):
    def __init__(self, v_th=1.0, v_min=-1.0, multi_spike=True, reset="subtract"):
        super().__init__()
        self.v_th, self.v_min, self.multi_spike, self.reset = v_th, v_min, multi_spike, reset


class LIF(IF):
    def __init__(self, decay=0.5, **kw):
        super().__init__(**kw)
        self.decay = decay


class TTM(nn.Module):
    pass


def deployable(**if_kw):
    torch.manual_seed(0)
    return nn.Sequential(
        nn.AvgPool2d(4),
        nn.Sequential(nn.Conv2d(2, 4, 3, padding=1, bias=False), IF(**if_kw), nn.Dropout(0.1)),
        nn.AvgPool2d(2),
        TTM(),
        nn.Conv2d(4, 8, 3, stride=2, padding="valid", bias=False),
        IF(),
        nn.Flatten(),
        nn.Identity(),
        nn.Linear(8 * 1 * 1, 5, bias=False),
    )


def test_from_torch_folds_avgpool_and_records_neurons():
    model = deployable(v_th=0.5, v_min=None, multi_spike=False, reset="hard")
    net = EventNet.from_torch(model)
    kinds = [type(layer).__name__ for layer in net.layers]
    assert kinds == ["SumPool", "Conv", "SumPool", "Conv", "Flatten", "Linear"]
    # the 1/16 of AvgPool2d(4) goes into the first conv, the 1/4 of AvgPool2d(2) into the second
    np.testing.assert_allclose(net.layers[1].weight, model[1][0].weight.detach().numpy() / 16, rtol=1e-6)
    np.testing.assert_allclose(net.layers[3].weight, model[4].weight.detach().numpy() / 4, rtol=1e-6)
    np.testing.assert_allclose(net.layers[5].weight, model[8].weight.detach().numpy())
    assert net.layers[1].neuron == NeuronSpec(v_th=0.5, v_min=None, multi_spike=False, reset="hard")
    assert net.layers[3].stride == (2, 2) and net.layers[3].padding == (0, 0)
    assert net.layers[-1].neuron is None and net.output_neuron == NeuronSpec()
    # 2 x 32 x 32 -> pool 4 -> 8x8 -> conv -> 8x8 -> pool 2 -> 4x4 -> conv s2 -> 1x1 -> 8 -> 5
    assert net.shapes((2, 32, 32))[1:] == [(2, 8, 8), (4, 8, 8), (4, 4, 4), (8, 1, 1), (8,), (5,)]


def test_from_torch_staged_net_trailing_neuron_and_leak():
    class Staged(nn.Module):  # duck-typed flexsnn StagedNet: stages + head
        def __init__(self):
            super().__init__()
            self.stages = nn.ModuleList(
                [nn.Sequential(nn.Conv2d(1, 2, 1, bias=False), LIF(decay=0.5)), nn.Sequential(nn.Flatten())]
            )
            self.head = nn.Sequential(nn.Linear(8, 3), IF(v_th=2.0))

    model = Staged()
    with torch.no_grad():
        model.head[0].bias.zero_()  # an all-zero bias is accepted
    net = EventNet.from_torch(model, step_duration=1000.0)
    assert net.layers[0].neuron.tau == pytest.approx(1000.0 / math.log(2.0))
    assert net.layers[-1].neuron.v_th == 2.0 and net.output_neuron.v_th == 2.0
    with pytest.raises(InputError, match="step_duration"):
        EventNet.from_torch(model)


def test_flexsnn_if_neurons_are_accepted():
    neurons = pytest.importorskip("flexsnn.neurons")
    model = nn.Sequential(
        nn.Flatten(),
        nn.Linear(4, 3, bias=False),
        neurons.IF(v_th=1.0, v_min=-1.0, multi_spike=True, reset="subtract"),
        nn.Linear(3, 2, bias=False),
    )
    net = EventNet.from_torch(model)
    assert net.layers[1].neuron == NeuronSpec()


@pytest.mark.parametrize(
    "model, match",
    [
        (
            nn.Sequential(nn.Conv2d(2, 4, 3, bias=False), nn.BatchNorm2d(4), IF(), nn.Flatten(), nn.Linear(4, 2)),
            "fold BN first: flexsnn.deploy.fold_batchnorm",
        ),
        (nn.Sequential(nn.Flatten(), nn.Linear(4, 2)), "non-zero bias"),
        (nn.Sequential(IF(), nn.Flatten(), nn.Linear(4, 2, bias=False)), "must directly follow"),
        (
            nn.Sequential(
                nn.Conv2d(2, 4, 3, bias=False), nn.AvgPool2d(2), IF(), nn.Flatten(), nn.Linear(4, 2, bias=False)
            ),
            "without a spiking neuron in between",
        ),
        (
            nn.Sequential(
                nn.Conv2d(2, 4, 3, bias=False), IF(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(4, 2, bias=False)
            ),
            "use nn.AvgPool2d",
        ),
        (nn.Sequential(nn.Conv2d(2, 4, 3, bias=False), IF(), nn.Flatten()), "must end with its readout"),
        (
            nn.Sequential(nn.Conv2d(2, 4, 3, bias=False), nn.ReLU(), nn.Flatten(), nn.Linear(4, 2, bias=False)),
            "ReLU.*not supported",
        ),
        (
            nn.Sequential(nn.Conv2d(2, 4, 3, groups=2, bias=False), IF(), nn.Flatten(), nn.Linear(4, 2, bias=False)),
            "groups=1",
        ),
        (
            nn.Sequential(nn.Flatten(), nn.Linear(4, 2, bias=False), LIF(decay=1.5), nn.Linear(2, 2, bias=False)),
            "decay must be in",
        ),
        ("not a model", "must be a torch nn.Module"),
    ],
)
def test_from_torch_rejects_unsupported_models(model, match):
    with pytest.raises(InputError, match=match):
        EventNet.from_torch(model)


def test_structure_and_shape_validation():
    w = np.ones((2, 1, 3, 3), dtype=np.float32)
    with pytest.raises(InputError, match="at least one weighted layer"):
        EventNet([])
    with pytest.raises(InputError, match="needs a NeuronSpec"):
        EventNet([Conv(w, neuron=None), Flatten(), Linear(np.ones((1, 2)))])
    with pytest.raises(InputError, match="must end with its readout"):
        EventNet([Conv(w), SumPool(2)])
    with pytest.raises(InputError, match="must be Conv, SumPool, Flatten or Linear"):
        EventNet([nn.ReLU(), Linear(np.ones((1, 2)))])
    net = EventNet([Conv(w), Flatten(), Linear(np.ones((3, 18)), neuron=None)])
    assert net.shapes((1, 5, 5))[-1] == (3,)
    with pytest.raises(InputError, match=r"Linear .* expects a flat input of 18 features"):
        net.set_input_shape((1, 6, 6))
    with pytest.raises(InputError, match=r"C_in=1"):
        net.set_input_shape((2, 5, 5))
    with pytest.raises(InputError, match="does not fit"):
        net.set_input_shape((1, 2, 2))
    net.set_input_shape((1, 5, 5))
    assert net.input_shape == (1, 5, 5) and "Conv((2, 1, 3, 3)" in repr(net)


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: NeuronSpec(v_th=0), "v_th must be a finite number > 0"),
        (lambda: NeuronSpec(v_min=2.0), "v_min must be None or a finite number below"),
        (lambda: NeuronSpec(reset="zero"), "reset must be one of"),
        (lambda: NeuronSpec(tau=-1), "tau must be None"),
        (lambda: Conv(np.ones((2, 3))), r"Conv.weight must be a non-empty float array shaped \[C_out, C_in, kh, kw\]"),
        (lambda: Conv(np.ones((1, 1, 1, 1)), stride=0), "Conv.stride must be an int >= 1"),
        (lambda: Linear(np.array([[np.nan]])), "NaN"),
        (lambda: SumPool((2, 0)), "SumPool.kernel"),
    ],
)
def test_spec_validation(make, match):
    with pytest.raises(InputError, match=match):
        make()
