"""The pure-Python oracle itself, checked against hand-computed traces."""

from __future__ import annotations

import numpy as np
import pytest

from flexsnn.deploy import Conv, EventNet, Flatten, Linear, NeuronSpec, SumPool, simulate_reference
from flexsnn.errors import InputError

DTYPE = np.dtype([("x", np.int16), ("y", np.int16), ("t", np.int64), ("p", np.int8)])


def make_events(rows) -> np.ndarray:
    return np.array([tuple(r) for r in rows], dtype=DTYPE)


def test_cascade_through_pool_conv_and_linear_by_hand():
    # input [2, 4, 4] -> SumPool(2) -> [2, 2, 2] -> conv 2->1 1x1 (weights 0.6, 1.2) -> Flatten -> Linear 4->2
    conv = Conv(np.array([0.6, 1.2]).reshape(1, 2, 1, 1), neuron=NeuronSpec())
    readout = Linear(np.array([[1.0, 0, 0, 0], [0, 0, 0, 2.0]]), neuron=None)
    net = EventNet([SumPool(2), conv, Flatten(), readout])
    events = make_events(
        [
            (0, 0, 1, 0),  # p0 (0,0) -> pooled (0,0,0): conv neuron 0 += 0.6 -> 0.6
            (1, 1, 2, 0),  # same pooled cell: 1.2 -> 1 spike (0.2 left); readout +1 on class 0
            (3, 3, 3, 1),  # p1 (3,3) -> pooled (1,1,1): neuron 3 += 1.2 -> 1 spike; class 1 += 2
            (2, 3, 3, 1),  # same cell, same t: 0.2 + 1.2 = 1.4 -> 1 spike; class 1 += 2
        ]
    )
    res = simulate_reference(net, events, (4, 4, 2))
    assert res.spike_trace[0].tolist() == [[1, 0], [2, 3], [3, 3]]
    np.testing.assert_allclose(res.membranes[0].ravel(), [0.2, 0, 0, 0.4], atol=1e-6)  # float32 weights
    assert res.scores.tolist() == [1.0, 4.0]
    assert res.layer_synops.tolist() == [4, 6]  # conv: one target per event; readout: 3 spikes x 2
    assert (res.prediction, res.first_decision_time, res.decision_settle_time) == (1, 2, 3)


def test_ties_pick_the_lowest_index_and_cancellation_removes_the_decision():
    readout = Linear(np.array([[1.0, -1.0], [1.0, -1.0]]), neuron=None)
    # input x=0 drives neuron 0, x=1 drives neuron 1 of the hidden layer
    hidden = Linear(np.array([[1.0, 0.0], [0.0, 1.0]]), neuron=NeuronSpec())
    net = EventNet([Flatten(), hidden, readout])
    res = simulate_reference(net, make_events([(0, 0, 5, 0)]), (2, 1, 1))
    assert res.scores.tolist() == [1.0, 1.0] and res.prediction == 0  # tie -> lowest index
    res = simulate_reference(net, make_events([(0, 0, 5, 0), (1, 0, 9, 0)]), (2, 1, 1))
    assert res.scores.tolist() == [0.0, 0.0] and res.prediction == -1
    assert res.first_decision_time == 5 and res.decision_settle_time is None


def test_conv_readout_scores_are_flat_and_output_neuron_counts_spikes():
    readout = Conv(np.ones((2, 1, 1, 1)) * 1.5, neuron=NeuronSpec(v_th=1.0, v_min=None))
    net = EventNet([readout])
    res = simulate_reference(net, make_events([(1, 0, 0, 0), (1, 0, 1, 0)]), (2, 1, 1))
    # output map [2, 1, 2]: position x=1 of both channels gets 1.5 twice -> flat indices 1 and 3
    assert res.scores.tolist() == [0.0, 3.0, 0.0, 3.0]
    assert res.output_spikes.tolist() == [0, 3, 0, 3]  # 1.5 -> 1 (0.5 left), 2.0 -> 2


def test_validation_is_shared_with_the_simulator():
    net = EventNet([Flatten(), Linear(np.ones((1, 1)), neuron=None)])
    with pytest.raises(InputError, match=r"events\['x'\]"):
        simulate_reference(net, make_events([(1, 0, 0, 0)]), (1, 1, 1))
