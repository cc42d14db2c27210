"""Per-layer spike counts of the time-stepped and the event-driven run, and their divergence."""

import numpy as np
import pytest
import torch
from torch import nn

from flexsnn.data import make_events, to_frames
from flexsnn.deploy import (
    event_driven_layer_spikes,
    layer_spike_divergence,
    simulate,
    time_stepped_layer_spikes,
)
from flexsnn.errors import InputError
from flexsnn.neurons import IF
from flexsnn.staged import staged_from_layers

SENSOR = (3, 2, 2)  # W, H, P


def _net(conv_weight: torch.Tensor, head_weight: torch.Tensor) -> nn.Module:
    conv = nn.Conv2d(2, conv_weight.shape[0], 1, bias=False)
    head = nn.Linear(conv_weight.shape[0] * 2 * 3, head_weight.shape[0], bias=False)
    with torch.no_grad():
        conv.weight.copy_(conv_weight)
        head.weight.copy_(head_weight)
    layers = [conv, IF(v_th=1.0, reset="subtract", multi_spike=True, v_min=-1.0), nn.Flatten()]
    return staged_from_layers(layers, [], head=head, input_kind="frames").eval()


def _both(net, events, t):
    frames = torch.from_numpy(np.stack([to_frames(ev, SENSOR, n_time_bins=t) for ev in events], axis=1))
    ts = time_stepped_layer_spikes(net, frames, t)
    ed = event_driven_layer_spikes(simulate(net, events, SENSOR, record_spikes=True))
    return ts, ed


def test_positive_weights_give_the_same_counts_per_neuron_at_every_t():
    # Non-negative input to an IF neuron with subtract reset: the count is floor(total input)
    # however the input is split in time, so both runs agree neuron by neuron.
    rng = np.random.default_rng(0)
    conv_w = torch.tensor([[[[0.6]], [[0.3]]], [[[0.2]], [[0.9]]]])  # [2 out, 2 in, 1, 1]
    head_w = torch.rand(3, 12, generator=torch.Generator().manual_seed(0))
    net = _net(conv_w, head_w)
    events = []
    for _ in range(3):
        n = 40
        events.append(
            make_events(
                x=rng.integers(0, 3, n),
                y=rng.integers(0, 2, n),
                t=np.sort(rng.integers(0, 1000, n)),
                p=rng.integers(0, 2, n),
            )
        )
    for t in (1, 3, 7):
        ts, ed = _both(net, events, t)
        assert [a.shape for a in ts] == [(3, 12), (3, 3)]
        assert [a.shape for a in ed] == [(3, 12), (3, 3)]
        np.testing.assert_array_equal(ts[0], ed[0])
        assert ts[0].sum() > 0
        assert layer_spike_divergence(ts, ed)[0] == 0.0


def test_an_off_event_after_on_events_diverges_as_computed_by_hand():
    # One pixel, weight +1 from ON (p = 1, channel 1), -1 from OFF (p = 0). Events: ON, ON, OFF.
    # Event-driven: v = 1 -> spike, v = 1 -> spike, v = -1: 2 spikes.
    # Time-stepped at T=1: one step with input 1 + 1 - 1 = 1 -> 1 spike. SD = |1 - 2| / 1 = 1.
    conv_w = torch.tensor([[[[-1.0]], [[1.0]]]])
    head_w = torch.ones(1, 6)
    net = _net(conv_w, head_w)
    events = [make_events(x=[0, 0, 0], y=[0, 0, 0], t=[0, 10, 20], p=[1, 1, 0])]
    ts, ed = _both(net, events, 1)
    assert ts[0][0, 0] == 1 and ed[0][0, 0] == 2
    assert ts[0].sum() == 1 and ed[0].sum() == 2
    assert layer_spike_divergence(ts, ed)[0] == pytest.approx(1.0)
    # At T=3 every event has its own step: the same order as event-driven, no divergence.
    ts3, ed3 = _both(net, events, 3)
    assert ts3[0][0, 0] == 2 and layer_spike_divergence(ts3, ed3)[0] == 0.0


def test_results_without_a_spike_trace_and_mismatched_layer_lists_are_refused():
    net = _net(torch.ones(1, 2, 1, 1), torch.ones(1, 6))
    events = [make_events(x=[0], y=[0], t=[0], p=[1])]
    with pytest.raises(InputError, match="record_spikes=True"):
        event_driven_layer_spikes(simulate(net, events, SENSOR))
    with pytest.raises(InputError, match="results is empty"):
        event_driven_layer_spikes([])
    with pytest.raises(InputError, match="same layers"):
        layer_spike_divergence([np.ones((1, 2))], [])
    # a layer without reference spikes has no defined SD
    assert np.isnan(layer_spike_divergence([np.zeros((1, 2))], [np.ones((1, 2))])[0])


def test_scores_come_from_the_same_forward_as_the_counts():
    from flexsnn.deploy.compare import time_stepped_outputs

    net = _net(torch.tensor([[[[-1.0]], [[1.0]]]]), torch.tensor([[1.0] * 6, [0.5] * 6]))
    events = [make_events(x=[0, 1, 2], y=[0, 1, 0], t=[0, 10, 20], p=[1, 1, 0])]
    frames = torch.from_numpy(np.stack([to_frames(ev, SENSOR, n_time_bins=2) for ev in events], axis=1))
    scores, layers = time_stepped_layer_spikes(net, frames, 2, return_scores=True)
    np.testing.assert_array_equal(scores, time_stepped_outputs(net, frames, 2)[0].double().numpy())
    assert scores.tolist() == [[2.0, 1.0]]  # two ON spikes reach the head: 2 x 1.0 and 2 x 0.5
    assert [a.tolist() for a in layers] == [a.tolist() for a in time_stepped_layer_spikes(net, frames, 2)]
