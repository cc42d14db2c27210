"""Sinabs / Speck back end. Needs sinabs (an optional extra): skipped when it is absent,
except the test of the error a user without sinabs gets."""

from __future__ import annotations

import importlib.util
import sys
import types
from unittest import mock

import pytest
import torch
from torch import nn

from flexsnn.backends.sinabs import SinabsUnavailableError, sinabs_available, to_sinabs
from flexsnn.errors import InputError

HAS_SINABS = importlib.util.find_spec("sinabs") is not None
needs_sinabs = pytest.mark.skipif(not HAS_SINABS, reason="sinabs is not installed (optional extra flexsnn[sinabs])")

SHAPE = (2, 16, 16)


def speck_net(seed=0):
    """A Speck-sized deployable net: conv-IF-avgpool | conv-IF-avgpool-flatten | linear head."""
    from flexsnn.neurons import IF
    from flexsnn.staged import staged_from_layers

    torch.manual_seed(seed)

    def neuron():
        return IF(v_th=1.0, reset="subtract", multi_spike=True, v_min=-1.0)

    layers = [
        nn.Conv2d(2, 4, 3, padding=1, bias=False),
        neuron(),
        nn.AvgPool2d(2),
        nn.Conv2d(4, 8, 3, padding=1, bias=False),
        neuron(),
        nn.AvgPool2d(2),
        nn.Flatten(),
    ]
    head = nn.Linear(8 * 4 * 4, 5, bias=False)
    with torch.no_grad():
        for m in [*layers, head]:
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                m.weight.mul_(8.0)
    return staged_from_layers(layers, [3], head=head, input_kind="frames", input_shape=SHAPE)


@pytest.mark.skipif(HAS_SINABS, reason="checks the message a user without sinabs gets")
def test_clear_error_without_sinabs():
    assert not sinabs_available()
    with pytest.raises(SinabsUnavailableError, match=r"pip install 'flexsnn\[sinabs\]'"):
        to_sinabs(speck_net(), SHAPE)


@needs_sinabs
def test_to_sinabs_layers_and_same_outputs_as_time_stepped():
    import sinabs.activation as sa
    import sinabs.layers as sl

    net = speck_net().eval()
    t, b = 5, 3
    snn = to_sinabs(net, SHAPE, batch_size=b, output_neuron=False)
    kinds = [type(m).__name__ for m in snn]
    assert kinds == ["Conv2d", "IAFSqueeze", "SumPool2d", "Conv2d", "IAFSqueeze", "SumPool2d", "Flatten", "Linear"]
    neuron = snn[1]
    assert float(neuron.spike_threshold) == 1.0 and float(neuron.min_v_mem) == -1.0
    assert neuron.spike_fn is sa.MultiSpike and isinstance(neuron.reset_fn, sa.MembraneSubtract)
    assert all(m.bias is None for m in snn if isinstance(m, (nn.Conv2d, nn.Linear)))
    x = torch.poisson(torch.full((t, b, *SHAPE), 0.5), generator=torch.Generator().manual_seed(0))
    expected = net(x, time_config=t)
    assert expected.abs().sum() > 0
    out = snn(x.transpose(0, 1).reshape(b * t, *SHAPE)).reshape(b, t, -1).transpose(0, 1)
    torch.testing.assert_close(out, expected)
    with_neuron = to_sinabs(net, SHAPE, batch_size=b)
    assert isinstance(with_neuron[-1], sl.IAFSqueeze)


@needs_sinabs
def test_to_sinabs_errors():
    with pytest.raises(InputError, match="fold BN"):
        to_sinabs(nn.Sequential(nn.Conv2d(2, 2, 1, bias=False), nn.BatchNorm2d(2)), SHAPE)
    with pytest.raises(InputError, match="batch_size or num_timesteps"):
        to_sinabs(speck_net(), SHAPE, batch_size=None)
    with pytest.raises(InputError):
        to_sinabs(speck_net(), (2, 3, 3))  # the layers do not fit this input map


def _stub_samna():
    """samna (Speck's driver) cannot be installed offline; sinabs' dynapcnn module imports it at
    the top but needs it only to talk to a chip. A stand-in lets DynapcnnNetwork map the net."""
    names = [
        "samna",
        "samnagui",
        "samna.speck2e",
        "samna.speck2e.configuration",
        "samna.speck2f",
        "samna.speck2f.configuration",
        "samna.specksim",
        "samna.specksim.nodes",
    ]
    modules = {}
    for name in names:
        mod = types.ModuleType(name)
        mod.__getattr__ = lambda attr: mock.MagicMock(name=attr)  # type: ignore[method-assign]
        modules[name] = mod
    return modules


@needs_sinabs
def test_dynapcnn_network_accepts_the_sinabs_model():
    from flexsnn.backends.sinabs import to_dynapcnn

    stub = {} if importlib.util.find_spec("samna") else _stub_samna()
    with mock.patch.dict(sys.modules, stub):
        dyn = to_dynapcnn(speck_net(), SHAPE, batch_size=1)
        assert type(dyn).__name__ == "DynapcnnNetwork"
        assert len(dyn.dynapcnn_layers) == 3  # two conv layers and the linear readout, each with its neuron
        x = torch.poisson(torch.full((6, *SHAPE), 0.5), generator=torch.Generator().manual_seed(0))
        out = dyn(x)  # runs the discretized network in torch
        out = out[0] if isinstance(out, tuple) else out
        assert out.shape[0] == 6 and out.shape[1] == 5
