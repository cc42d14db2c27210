"""Peer neurons inside a StagedNet: bare ones refused, adapted ones run over time like natively.

The fakes below have the shape of SpikingJelly's LIFNode, snnTorch's Leaky and Sinabs' IAF
(the attributes and methods the duck typing looks for, membrane kept between calls); the
real peers are checked in tests/interop/test_peer_neurons.py.
"""

import pytest
import torch
from torch import nn

from flexsnn.errors import InputError
from flexsnn.evaluate import spike_stats
from flexsnn.interop import SnnTorchNeuron, SpikingJellyNeuron, adapt_neuron, staged_from_layers
from flexsnn.neurons import LIF
from flexsnn.staged import staged_from_layers as core_staged_from_layers


class FakeSpikingJellyLIF(nn.Module):
    """v += (x - v) / tau; spike at v >= v_threshold; hard reset to 0; keeps v between calls."""

    def __init__(self, tau=2.0, step_mode="s"):
        super().__init__()
        self.tau, self.v_threshold, self.step_mode, self.v = tau, 1.0, step_mode, 0.0

    def reset(self):
        self.v = 0.0

    def single_step(self, x):
        self.v = self.v + (x - self.v) / self.tau
        s = (self.v >= self.v_threshold).float()
        self.v = self.v * (1 - s)
        return s

    def forward(self, x):
        if self.step_mode == "m":
            return torch.stack([self.single_step(x[t]) for t in range(x.shape[0])])
        return self.single_step(x)


class FakeSnnTorchLeaky(nn.Module):
    """mem = beta * mem + x - reset * threshold (subtract reset of the previous step); returns (spk, mem)."""

    def __init__(self, beta=0.5):
        super().__init__()
        self.beta, self.threshold, self.reset_mechanism = beta, 1.0, "subtract"
        self.mem = torch.zeros(1)

    def reset_mem(self):
        self.mem = torch.zeros(1)

    def forward(self, x):
        reset = (self.mem >= self.threshold).float()
        self.mem = self.beta * self.mem + x - reset * self.threshold
        return (self.mem >= self.threshold).float(), self.mem


class FakeSinabsIAF(nn.Module):
    """[B, T, ...] in; v_mem kept between calls; subtract reset."""

    def __init__(self):
        super().__init__()
        self.spike_threshold, self.v_mem = 1.0, None

    def reset_states(self):
        self.v_mem = None

    def forward(self, x):
        v = torch.zeros_like(x[:, 0]) if self.v_mem is None else self.v_mem
        out = []
        for t in range(x.shape[1]):
            v = v + x[:, t]
            s = (v >= self.spike_threshold).float()
            v = v - s
            out.append(s)
        self.v_mem = v
        return torch.stack(out, 1)


def _layers(neuron):
    torch.manual_seed(0)
    first = nn.Linear(6, 5)
    first.weight.data.abs_()  # positive drive: the neurons fire, but not every step
    return [first, neuron, nn.Linear(5, 3), LIF(v_th=0.3)]


def _x(t=6, b=4):
    torch.manual_seed(1)
    return torch.rand(t, b, 6) * 2.5


@pytest.mark.parametrize(
    "neuron, adapter",
    [
        (FakeSpikingJellyLIF(), "SpikingJellyNeuron"),
        (FakeSnnTorchLeaky(), "SnnTorchNeuron"),
        (FakeSinabsIAF(), "SinabsNeuron"),
    ],
)
def test_bare_peer_neuron_is_refused_naming_the_adapter(neuron, adapter):
    with pytest.raises(InputError, match=f"flexsnn.interop.{adapter}"):
        core_staged_from_layers(_layers(neuron), boundaries=[2], input_kind="frames")
    with pytest.raises(InputError, match=adapter):  # nested in a Sequential, or in the head
        core_staged_from_layers([nn.Linear(6, 5), nn.Sequential(nn.Identity(), neuron)], [1], input_kind="frames")


def _native(neuron, lin1, x):
    """What the peer's own per-step loop gives: the layer before it, then the neuron, step by step."""
    neuron_out = []
    for t in range(x.shape[0]):
        out = neuron(lin1(x[t]))
        neuron_out.append(out[0] if isinstance(out, tuple) else out)
    return torch.stack(neuron_out)


@pytest.mark.parametrize(
    "make", [FakeSpikingJellyLIF, lambda: FakeSpikingJellyLIF(step_mode="m"), FakeSnnTorchLeaky, FakeSinabsIAF]
)
def test_adapted_neuron_runs_over_time_and_state_does_not_leak(make):
    neuron = make()
    net = staged_from_layers(_layers(neuron), boundaries=[2], input_kind="frames")
    assert type(net.stages[0][1]).__name__.endswith("Neuron")
    x = _x()
    with torch.no_grad():
        first = net(x)
        second = net(x)
        hidden = net.stages[0][:2](x)
        native_peer = make()
        native_peer.__dict__.update({k: v for k, v in neuron.__dict__.items() if k in ("tau", "beta")})
        if isinstance(native_peer, FakeSinabsIAF):
            want = native_peer(net.stages[0][0](x).transpose(0, 1)).transpose(0, 1)
        else:
            if getattr(native_peer, "step_mode", "s") == "m":
                native_peer.step_mode = "s"
            want = _native(native_peer, net.stages[0][0], x)
    assert torch.equal(first, second)  # no state carried from the first forward
    assert torch.equal(hidden, want)
    assert 0 < hidden.sum() < hidden.numel()


def test_spikingjelly_like_lif_equals_flexsnn_lif_on_scaled_input():
    # tau = 2, decay_input: v = v/2 + x/2 -> flexsnn LIF(decay=0.5) on x/2, hard reset to 0
    x = _x(t=10)
    got = SpikingJellyNeuron(FakeSpikingJellyLIF(tau=2.0))(x)
    assert torch.equal(got, LIF(v_th=1.0, decay=0.5)(x / 2))


def test_adapters_count_spikes_for_the_evaluation():
    net = staged_from_layers(_layers(FakeSnnTorchLeaky()), boundaries=[2], input_kind="frames")
    x = torch.rand(8, 6, 6) * 10  # [N, T, features], as loaders yield
    loader = [(x, torch.zeros(8, dtype=torch.long))]
    stats = {s.layer: s for s in spike_stats(net, loader, 6)}
    adapter = net.stages[0][1]
    assert "stages.0.1" in stats
    with torch.no_grad():
        want = net.stages[0][:2](x.transpose(0, 1)).sum().item() / 8
    assert stats["stages.0.1"].spikes_per_sample == pytest.approx(want)
    assert adapter.record is False  # restored


def test_adapter_streaming_chunked_equals_full():
    x = _x(t=9)
    full = SnnTorchNeuron(FakeSnnTorchLeaky())(x)
    adapter = SnnTorchNeuron(FakeSnnTorchLeaky())
    net = staged_from_layers([nn.Identity(), adapter], boundaries=[], input_kind="frames")
    net.stateful = True
    assert adapter.stateful
    got = torch.cat([net(x[:4], time_config=4), net(x[4:], time_config=5)])
    assert torch.equal(got, full)
    net.reset_state()
    assert torch.equal(net(x[:4], time_config=4), full[:4])


def test_adapter_refuses_the_wrong_kind():
    with pytest.raises(InputError, match="SnnTorchNeuron"):
        SpikingJellyNeuron(FakeSnnTorchLeaky())
    with pytest.raises(InputError, match="spikingjelly"):
        SpikingJellyNeuron(nn.ReLU())
    relu = nn.ReLU()
    assert adapt_neuron(relu) is relu
