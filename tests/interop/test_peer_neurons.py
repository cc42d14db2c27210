"""Real SpikingJelly and snnTorch neurons inside a StagedNet (through flexsnn.interop's adapters)
give the outputs their own library gives when run natively, and carry no state between forwards."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from flexsnn.errors import InputError
from flexsnn.interop import staged_from_layers
from flexsnn.staged import staged_from_layers as core_staged_from_layers


def _x():
    torch.manual_seed(0)
    return torch.rand(8, 4, 2, 6, 6) * 1.5  # [T, B, C, H, W]


def _conv():
    torch.manual_seed(1)
    conv = nn.Conv2d(2, 3, 3, padding=1)
    conv.weight.data.abs_()
    return conv


def _check(make_neuron, native):
    x = _x()
    conv = _conv()
    with pytest.raises(InputError, match="flexsnn.interop"):
        core_staged_from_layers([conv, make_neuron()], boundaries=[], input_kind="frames")
    net = staged_from_layers([conv, make_neuron()], boundaries=[], input_kind="frames")
    with torch.no_grad():
        first = net(x)
        second = net(x)
        want = native(conv, make_neuron(), x)
    assert torch.equal(first, second)
    assert torch.equal(first, want)
    assert first.sum() > 0 and (first == 0).any()  # spikes and silence (Sinabs: multi-spikes)


def test_spikingjelly_lif_node_multistep():
    neuron = pytest.importorskip("spikingjelly.activation_based.neuron")
    functional = pytest.importorskip("spikingjelly.activation_based.functional")

    def native(conv, node, x):
        node.step_mode = "m"
        functional.reset_net(node)
        return node(conv(x.flatten(0, 1)).unflatten(0, x.shape[:2]))  # SpikingJelly's multi-step layout

    _check(lambda: neuron.LIFNode(tau=2.0, step_mode="m"), native)
    _check(lambda: neuron.IFNode(step_mode="s"), native)


def test_snntorch_leaky():
    snn = pytest.importorskip("snntorch")

    def native(conv, leaky, x):
        mem = leaky.init_leaky()
        out = []
        for t in range(x.shape[0]):  # snnTorch's documented loop
            spk, mem = leaky(conv(x[t]), mem)
            out.append(spk)
        return torch.stack(out)

    _check(lambda: snn.Leaky(beta=0.8), native)
    _check(lambda: snn.Leaky(beta=0.5, reset_mechanism="zero"), native)


def test_sinabs_iaf_and_lif():
    layers = pytest.importorskip("sinabs.layers")

    def native(conv, layer, x):
        layer.reset_states()
        frames = conv(x.flatten(0, 1)).unflatten(0, x.shape[:2])
        return layer(frames.transpose(0, 1)).transpose(0, 1)  # Sinabs runs [B, T, ...]

    _check(lambda: layers.IAF(), native)
    _check(lambda: layers.LIF(tau_mem=2.0), native)
