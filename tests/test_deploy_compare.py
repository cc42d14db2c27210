"""Spike-count divergence and the time-stepped vs event-driven measurement."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from flexsnn.data import to_frames
from flexsnn.deploy import evaluate_deployment, spike_count_divergence, spike_count_readout
from flexsnn.deploy.compare import DeploymentMetrics, format_deployment_table, time_stepped_outputs
from flexsnn.errors import InputError
from flexsnn.neurons import IF
from flexsnn.staged import staged_from_layers

DTYPE = np.dtype([("x", np.int16), ("y", np.int16), ("t", np.int64), ("p", np.int8)])


def test_sd_hand_computed():
    # |3-1| + |0-1| + |2-2| = 3 over sum s0 = 5
    assert spike_count_divergence([3, 0, 2], [1, 1, 2]) == pytest.approx(0.6)
    # any shape; (sample, neuron) entries all count: (1 + 0 + 2 + 4) / (1 + 2 + 3 + 4)
    assert spike_count_divergence(np.array([[1, 2], [3, 4]]), torch.tensor([[0, 2], [5, 0]])) == pytest.approx(0.7)
    assert spike_count_divergence([4, 4], [4, 4]) == 0.0
    # not symmetric: the reference is the denominator
    assert spike_count_divergence([1, 1], [3, 3]) == pytest.approx(2.0)
    assert spike_count_divergence([3, 3], [1, 1]) == pytest.approx(2 / 3)


@pytest.mark.parametrize(
    "s0, s, message",
    [
        ([1, 2], [1, 2, 3], "same shape"),
        ([0, 0], [1, 0], "no spikes"),
        ([1, -1], [1, 1], "non-negative"),
        ([1, float("nan")], [1, 1], "finite"),
        ([], [], "empty"),
    ],
)
def test_sd_bad_inputs(s0, s, message):
    with pytest.raises(InputError, match=message):
        spike_count_divergence(s0, s)


class FixedOutput(nn.Module):
    """Stand-in model whose output per step is given (the readout layer's output)."""

    def __init__(self, out):
        super().__init__()
        self.out = out
        self.w = nn.Parameter(torch.zeros(1))

    def forward(self, x, time_config=None):
        return self.out


def test_time_stepped_scores_and_counting_neuron_hand_computed():
    # one class, outputs per step 2.5, -3, 0.4, 1.2 into IF(1, subtract, multi, v_min=-1):
    # u = 2.5 -> 2 spikes, u = 0.5; u = -2.5 -> clipped to -1; u = -0.6; u = 0.6 -> no spike
    out = torch.tensor([2.5, -3.0, 0.4, 1.2]).reshape(4, 1, 1)
    scores, spikes = time_stepped_outputs(FixedOutput(out), torch.zeros(4, 1, 1), 4)
    assert scores.item() == pytest.approx(1.1)  # accumulated input: 2.5 - 3 + 0.4 + 1.2
    assert spikes.item() == 2.0


def dyadic_net(seed=0):
    """Non-negative weights that are multiples of 1/8: float32 and float64 sums are exact."""
    g = torch.Generator().manual_seed(seed)

    def neuron():
        return IF(v_th=1.0, reset="subtract", multi_spike=True, v_min=-1.0)

    layers = [
        nn.Conv2d(2, 3, 3, padding=1, bias=False),
        neuron(),
        nn.AvgPool2d(2),
        nn.Flatten(),
        nn.Linear(3 * 3 * 3, 6, bias=False),
        neuron(),
    ]
    head = nn.Linear(6, 4, bias=False)
    with torch.no_grad():
        for m in [layers[0], layers[4], head]:
            m.weight.copy_(torch.randint(0, 9, m.weight.shape, generator=g).float() / 8)
    return staged_from_layers(layers, [3], head=head, input_kind="frames", input_shape=(2, 6, 6))


def one_event_per_bin(n, rng):
    ev = np.zeros(n, DTYPE)
    ev["x"], ev["y"], ev["p"] = rng.integers(0, 6, n), rng.integers(0, 6, n), rng.integers(0, 2, n)
    ev["t"] = np.arange(n) * 1000  # evenly spaced: binning at T = n puts one event in each bin
    return ev


def test_evaluate_deployment_agrees_where_the_platforms_coincide():
    rng = np.random.default_rng(0)
    n = 12
    events = [one_event_per_bin(n, rng) for _ in range(10)]
    labels = list(rng.integers(0, 4, 10))
    m = evaluate_deployment(dyadic_net(), events, labels, (6, 6, 2), t=n, label="X", batch_size=4)
    assert isinstance(m, DeploymentMetrics)
    assert m.samples == 10 and m.t == n and m.input_events_per_sample == n
    assert m.sd == 0.0 and m.agreement == 1.0
    assert m.ts_accuracy == m.ed_accuracy
    # equal spike counts on both platforms (sd == 0): the chip-style readout of the time-stepped counts
    counting = IF(v_th=1.0, reset="subtract", multi_spike=True, v_min=-1.0)
    frames = torch.from_numpy(np.stack([to_frames(ev, (6, 6, 2), n_time_bins=n) for ev in events], axis=1))
    _, ts_spikes = time_stepped_outputs(dyadic_net(), frames, n, counting)
    readouts = [spike_count_readout(row) for row in ts_spikes.numpy()]
    assert m.ed_spike_accuracy == np.mean([p == y for (p, _, _), y in zip(readouts, labels)])
    assert m.spike_ties == np.mean([tie for _, tie, _ in readouts])
    assert m.spike_silent == np.mean([silent for _, _, silent in readouts])
    assert m.synops_per_sample > 0 and m.events_per_second > 0
    table = format_deployment_table([m])
    assert "time-stepped" in table and "ED spikes" in table and "X" in table.splitlines()[2]


def test_evaluate_deployment_differs_with_coarse_bins():
    # all events in ONE time step: the time-stepped net sees the summed input at once, while
    # event-driven execution interleaves firing; with negative weights the two can differ
    g = torch.Generator().manual_seed(3)
    net = dyadic_net()
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                m.weight.copy_((torch.randint(-8, 9, m.weight.shape, generator=g).float()) / 4)
    rng = np.random.default_rng(1)
    events = [one_event_per_bin(40, rng) for _ in range(8)]
    m = evaluate_deployment(net, events, [0] * 8, (6, 6, 2), t=1)
    assert m.sd > 0


def test_evaluate_deployment_input_errors():
    ev = one_event_per_bin(4, np.random.default_rng(0))
    with pytest.raises(InputError, match="equal length"):
        evaluate_deployment(dyadic_net(), [ev], [0, 1], (6, 6, 2), t=4)
    biased = dyadic_net()
    biased.head.bias = nn.Parameter(torch.ones(4))
    with pytest.raises(InputError, match="bias"):
        evaluate_deployment(biased, [ev], [0], (6, 6, 2), t=4)
    with pytest.raises(InputError, match="t must be a positive integer"):
        evaluate_deployment(dyadic_net(), [ev], [0], (6, 6, 2), t=0)
