"""Event-driven simulator: hand-computed cases, the pure-Python oracle, the time-stepped net."""

from __future__ import annotations

import importlib

import numpy as np
import pytest
import torch
from torch import nn

from flexsnn.deploy import (
    Conv,
    EventNet,
    Flatten,
    Linear,
    NeuronSpec,
    SimulationError,
    SumPool,
    predictions,
    simulate,
    simulate_reference,
    spike_count_readout,
)
from flexsnn.deploy.simulator import compiled_for
from flexsnn.errors import InputError
from flexsnn.multistep import MultiStepModule, run_time_first

DTYPE = np.dtype([("x", np.int16), ("y", np.int16), ("t", np.int64), ("p", np.int8)])
IMPLEMENTATIONS = [pytest.param(simulate, id="numba"), pytest.param(simulate_reference, id="reference")]


def sim(run, net, events, sensor_size):
    """Run either implementation with the full spike trace and final membranes."""
    if run is simulate:
        return simulate(net, events, sensor_size, record_spikes=True)
    return run(net, events, sensor_size)


def make_events(rows) -> np.ndarray:
    """rows: (x, y, t, p) tuples."""
    return np.array([tuple(r) for r in rows], dtype=DTYPE)


def random_events(rng, n, sensor_size, t_max=50) -> np.ndarray:
    w, h, p = sensor_size
    ev = np.zeros(n, dtype=DTYPE)
    ev["x"] = rng.integers(0, w, n)
    ev["y"] = rng.integers(0, h, n)
    ev["p"] = rng.integers(0, p, n)
    ev["t"] = np.sort(rng.integers(0, t_max, n))  # small t_max: many equal timestamps
    return ev


# ---- (c) hand-computed cases --------------------------------------------------------------------
def two_by_two_net() -> EventNet:
    # input map [1, 3, 3] -> conv 2x2 -> [1, 2, 2] (IF, v_th 1, v_min -1, multi-spike) -> readout
    conv = Conv(np.array([[[[0.5, 2.5], [-1.5, 1.0]]]]), neuron=NeuronSpec(v_th=1.0, v_min=-1.0))
    readout = Linear(np.array([[1.0, 0, 0, 0], [0, 0, 0, 3.0]]), neuron=None)
    return EventNet([conv, Flatten(), readout])


@pytest.mark.parametrize("run", IMPLEMENTATIONS)
def test_hand_computed_conv_multi_spike_and_clipping(run):
    # Event A at (y=1, x=1) reaches every output (oy, ox) through kernel tap (1 - oy, 1 - ox):
    #   out0 (0,0) += 1.0 -> 1 spike, u 0 | out1 (0,1) += -1.5 -> clipped to -1
    #   out2 (1,0) += 2.5 -> 2 spikes (floor 2.5), u 0.5 | out3 (1,1) += 0.5 -> 0.5
    # Event B at (0, 0) reaches only out0 through tap (0, 0): u 0.5, no spike.
    # Event A again: out0 1.5 -> 1 spike, 0.5 | out1 -1 - 1.5 = -2.5 -> clipped -1 |
    #   out2 0.5 + 2.5 = 3.0 -> 3 spikes, 0 | out3 0.5 + 0.5 = 1.0 -> 1 spike, 0.
    events = make_events([(1, 1, 10, 0), (0, 0, 20, 0), (1, 1, 30, 0)])
    res = sim(run, two_by_two_net(), events, (3, 3, 1))
    np.testing.assert_array_equal(res.spike_trace[0], [[0, 0], [0, 2], [0, 2], [2, 0], [2, 2], [2, 2], [2, 2], [2, 3]])
    np.testing.assert_array_equal(res.membranes[0], [[[0.5, -1.0], [0.0, 0.0]]])
    # readout: out0 spiked twice (weight 1), out3 once (weight 3); spikes of out2 have weight 0
    np.testing.assert_array_equal(res.scores, [2.0, 3.0])
    np.testing.assert_array_equal(res.output_spikes, [2, 3])  # default output neuron, v_th 1
    np.testing.assert_array_equal(res.layer_spikes, [8, 5])
    # conv: 4 + 1 + 4 deliveries; readout: 8 spikes x 2 outputs
    np.testing.assert_array_equal(res.layer_synops, [9, 16])
    assert res.synops == 25
    # after event 0 scores (1, 0) -> class 0; event 2 makes them (2, 3) -> class 1
    assert res.prediction == 1
    assert res.first_decision_time == 10
    assert res.decision_settle_time == 30
    assert res.num_events == 3 and not res.empty


def fifo_net(v_min=-1.0) -> EventNet:
    # input [1, 1, 2] -> flatten -> A, C (both fire on input x=0) -> B (A: +1, C: -1.5) -> readout
    first = Linear(np.array([[1.0, 0.0], [1.0, 0.0]]), neuron=NeuronSpec(v_min=v_min))
    second = Linear(np.array([[1.0, -1.5]]), neuron=NeuronSpec(v_min=v_min))
    return EventNet([Flatten(), first, second, Linear(np.array([[1.0]]), neuron=None)])


@pytest.mark.parametrize("run", IMPLEMENTATIONS)
def test_fifo_order_decides_the_outcome(run):
    # A (index 0) and C (index 1) fire after the same delivery; A emits first (flat order).
    # B: +1 -> 1.0 fires (u 0), then -1.5 -> clipped at -1. Reversed order would give
    # -1.5 -> -1, +1 -> 0: no spike. So B's one spike proves the order.
    res = sim(run, fifo_net(), make_events([(0, 0, 5, 0)]), (2, 1, 1))
    np.testing.assert_array_equal(res.layer_spikes, [2, 1, 1])
    np.testing.assert_array_equal(res.scores, [1.0])
    assert res.membranes[1].tolist() == [-1.0]


@pytest.mark.parametrize("run", IMPLEMENTATIONS)
def test_multi_spike_neuron_emits_consecutively_and_single_spike_fires_once(run):
    # A gets 2.5 -> 2 spikes (then C 1 spike): order A, A, C
    layer = Linear(np.array([[2.5], [1.0]]), neuron=NeuronSpec())
    net = EventNet([Flatten(), layer, Linear(np.ones((1, 2)), neuron=None)])
    res = sim(run, net, make_events([(0, 0, 0, 0)]), (1, 1, 1))
    np.testing.assert_array_equal(res.spike_trace[0], [[0, 0], [0, 0], [0, 1]])
    single = Linear(np.array([[2.5], [1.0]]), neuron=NeuronSpec(multi_spike=False))
    net = EventNet([Flatten(), single, Linear(np.ones((1, 2)), neuron=None)])
    res = sim(run, net, make_events([(0, 0, 0, 0), (0, 0, 1, 0)]), (1, 1, 1))
    # single spike: 2.5 -> 1 spike, u 1.5 (still above threshold, waits); next: 4.0 -> 1 spike, 3.0
    np.testing.assert_array_equal(res.layer_spikes, [4, 4])
    np.testing.assert_allclose(res.membranes[0], [3.0, 0.0])


@pytest.mark.parametrize("run", IMPLEMENTATIONS)
def test_hard_reset_and_lazy_leak(run):
    hard = Linear(np.array([[2.5]]), neuron=NeuronSpec(reset="hard"))
    res = sim(
        run, EventNet([Flatten(), hard, Linear(np.ones((1, 1)), neuron=None)]), make_events([(0, 0, 0, 0)]), (1, 1, 1)
    )
    assert res.layer_spikes[0] == 2 and res.membranes[0].tolist() == [0.0]
    # leak tau = 10: 0.75 at t=0, decays exp(-1) until t=10, + 0.75 -> 0.75 * (1 + e^-1) = 1.026 -> 1 spike
    leaky = Linear(np.array([[0.75]]), neuron=NeuronSpec(tau=10.0))
    net = EventNet([Flatten(), leaky, Linear(np.ones((1, 1)), neuron=None)])
    res = sim(run, net, make_events([(0, 0, 0, 0), (0, 0, 10, 0)]), (1, 1, 1))
    assert res.layer_spikes[0] == 1
    np.testing.assert_allclose(res.membranes[0], [0.75 * (1 + np.exp(-1.0)) - 1.0], rtol=1e-12)
    # 20 time units apart: 0.75 * (1 + e^-2) < 1, no spike
    res = run(net, make_events([(0, 0, 0, 0), (0, 0, 20, 0)]), (1, 1, 1))
    assert res.layer_spikes[0] == 0


@pytest.mark.parametrize("run", IMPLEMENTATIONS)
def test_pooling_routes_and_drops_outside_spikes(run):
    # 5x5 input, SumPool(2) -> 2x2 map; row/col 4 lies in no window and is dropped.
    net = EventNet([SumPool(2), Flatten(), Linear(np.array([[1.0, 2.0, 3.0, 4.0]]))])
    events = make_events([(3, 1, 0, 0), (4, 0, 1, 0), (0, 4, 2, 0), (1, 3, 3, 0)])
    res = run(net, events, (5, 5, 1))
    # (y=1, x=3) -> pooled (0, 1), weight 2; (y=3, x=1) -> pooled (1, 0), weight 3
    np.testing.assert_array_equal(res.scores, [5.0])
    assert res.synops == 2
    # overlapping pool (kernel 2, stride 1): (y=1, x=1) lies in windows (0,0), (0,1), (1,0), (1,1)
    net = EventNet([SumPool(2, stride=1), Flatten(), Linear(np.ones((1, 4)))])
    res = run(net, make_events([(1, 1, 0, 0)]), (3, 3, 1))
    np.testing.assert_array_equal(res.scores, [4.0])


def test_stride_and_padding_footprint():
    # 1 -> 2 channels, 3x3 kernel, stride 2, padding 1 on a 5x5 map -> 3x3 output.
    rng = np.random.default_rng(3)
    weight = rng.integers(1, 8, size=(2, 1, 3, 3)).astype(np.float32) / 8
    net = EventNet(
        [Conv(weight, stride=2, padding=1, neuron=NeuronSpec(v_th=100.0)), Flatten(), Linear(np.ones((1, 18)))]
    )
    res = simulate(net, make_events([(2, 1, 0, 0)]), (5, 5, 1), record_spikes=True)
    # by hand: output (oy, ox) sees input (y, x) = (2 oy - 1 + ky, 2 ox - 1 + kx)
    expected = np.zeros((2, 3, 3))
    for co in range(2):
        for oy in range(3):
            for ox in range(3):
                ky, kx = 1 + 1 - 2 * oy, 2 + 1 - 2 * ox
                if 0 <= ky < 3 and 0 <= kx < 3:
                    expected[co, oy, ox] = weight[co, 0, ky, kx]
    np.testing.assert_array_equal(res.membranes[0], expected)
    assert res.layer_synops[0] == np.count_nonzero(expected)


# ---- (a) compiled kernel == pure-Python oracle, spike for spike -------------------------------
def random_neuron(rng, allow_leak=False) -> NeuronSpec:
    return NeuronSpec(
        v_th=float(rng.choice([0.5, 1.0, 1.5])),
        v_min=[None, -1.0, -0.25][rng.integers(3)],
        multi_spike=bool(rng.random() < 0.7),
        reset="subtract" if rng.random() < 0.8 else "hard",
        tau=float(rng.uniform(5, 50)) if allow_leak and rng.random() < 0.5 else None,
    )


def random_net(rng, allow_leak=False) -> tuple[EventNet, tuple[int, int, int]]:
    """Small random stacks: optional input pool, conv with random stride/padding, sum pool, linear."""
    sensor = (int(rng.integers(6, 11)), int(rng.integers(6, 11)), int(rng.integers(1, 3)))
    layers, channels = [], sensor[2]
    if rng.random() < 0.4:
        layers.append(SumPool(2, stride=int(rng.integers(1, 3))))
    for _ in range(int(rng.integers(1, 3))):
        c_out, k = int(rng.integers(2, 5)), int(rng.integers(1, 4))
        w = rng.normal(0.15, 1.0, size=(c_out, channels, k, k)) * rng.choice([0.7, 1.5, 3.0])
        layers.append(
            Conv(
                w,
                stride=int(rng.integers(1, 3)),
                padding=int(rng.integers(0, k)),
                neuron=random_neuron(rng, allow_leak),
            )
        )
        channels = c_out
        if rng.random() < 0.4:
            layers.append(SumPool(2))
    layers.append(Flatten())
    try:
        shape = (sensor[2], sensor[1], sensor[0])
        for layer in layers:
            shape = layer.output_shape(shape)
        (n_flat,) = shape
    except InputError:
        return random_net(rng, allow_leak)  # the random stack shrank the map to nothing; draw again
    if rng.random() < 0.6:
        hidden = int(rng.integers(3, 7))
        layers.append(Linear(rng.normal(0.1, 1.0, size=(hidden, n_flat)) * 1.5, neuron=random_neuron(rng, allow_leak)))
        n_flat = hidden
    readout_neuron = None if rng.random() < 0.5 else random_neuron(rng, allow_leak)
    layers.append(Linear(rng.normal(0.0, 1.0, size=(4, n_flat)), neuron=readout_neuron))
    return EventNet(layers), sensor


def assert_same_results(a, b, exact_membranes=True):
    for x, y in zip(a.spike_trace, b.spike_trace):
        np.testing.assert_array_equal(x, y)
    for x, y in zip(a.membranes, b.membranes):
        if exact_membranes:
            np.testing.assert_array_equal(x, y)
        else:
            np.testing.assert_allclose(x, y, rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(a.output_spikes, b.output_spikes)
    np.testing.assert_array_equal(a.layer_spikes, b.layer_spikes)
    np.testing.assert_array_equal(a.layer_synops, b.layer_synops)
    assert (a.prediction, a.first_decision_time, a.decision_settle_time) == (
        b.prediction,
        b.first_decision_time,
        b.decision_settle_time,
    )


@pytest.mark.parametrize("seed", range(12))
def test_numba_matches_reference_spike_for_spike(seed):
    rng = np.random.default_rng(seed)
    net, sensor = random_net(rng)
    events = random_events(rng, int(rng.integers(20, 60)), sensor)
    fast = simulate(net, events, sensor, record_spikes=True)
    slow = simulate_reference(net, events, sensor)
    assert sum(len(tr) for tr in slow.spike_trace[:-1]) > 0  # the case exercises spiking layers
    assert_same_results(fast, slow)
    np.testing.assert_array_equal(fast.scores, slow.scores)  # same additions in the same order


@pytest.mark.parametrize("seed", range(3))
def test_numba_matches_reference_with_leak(seed):
    rng = np.random.default_rng(100 + seed)
    net, sensor = random_net(rng, allow_leak=True)
    events = random_events(rng, 40, sensor, t_max=200)
    fast = simulate(net, events, sensor, record_spikes=True)
    slow = simulate_reference(net, events, sensor)
    for a, b in zip(fast.spike_trace, slow.spike_trace):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(fast.membranes, slow.membranes):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(fast.scores, slow.scores, rtol=1e-12)


# ---- (b) the time-stepped IF net, one input event per time step ---------------------------------
class IF(MultiStepModule):
    """Minimal time-stepped IF (the duck-typed attributes from_torch reads): x [T, B, ...]."""

    def __init__(self, v_th=1.0, v_min=-1.0, multi_spike=True, reset="subtract"):
        super().__init__()
        self.v_th, self.v_min, self.multi_spike, self.reset = v_th, v_min, multi_spike, reset
        self.counts = None

    def forward(self, x):
        u = torch.zeros_like(x[0])
        out = []
        for xt in x:
            u = u + xt
            if self.v_min is not None:
                u = u.clamp_min(self.v_min)
            s = torch.floor(u / self.v_th).clamp_min(0) if self.multi_spike else (u >= self.v_th).to(u.dtype)
            u = u - s * self.v_th
            out.append(s)
        out = torch.stack(out)
        self.counts = out.sum(0)[0]
        return out


def one_event_per_step(events, sensor_size) -> torch.Tensor:
    w, h, p = sensor_size
    frames = torch.zeros(len(events), 1, p, h, w, dtype=torch.float64)
    frames[
        torch.arange(len(events)),
        0,
        torch.as_tensor(events["p"].astype(np.int64)),
        torch.as_tensor(events["y"].astype(np.int64)),
        torch.as_tensor(events["x"].astype(np.int64)),
    ] = 1.0
    return frames


def dyadic(rng, shape, low=0, high=6):
    # multiples of 1/16: every sum is exact in float, so ties at threshold behave the same
    return torch.as_tensor(rng.integers(low, high, size=shape) / 16.0)


def torch_net(rng, low=0):
    layers = nn.Sequential(
        nn.AvgPool2d(2),
        nn.Conv2d(2, 4, 3, padding=1, bias=False),
        IF(),
        nn.AvgPool2d(2),
        nn.Conv2d(4, 4, 3, stride=2, bias=False),
        IF(),
        nn.Flatten(),
        nn.Linear(16, 6, bias=False),
        IF(),
        nn.Linear(6, 3, bias=False),
        IF(),
    ).double()
    with torch.no_grad():
        for m in layers:
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                m.weight.copy_(dyadic(rng, tuple(m.weight.shape), low=low, high=low + 12))
    return layers


@pytest.mark.parametrize("seed", range(3))
def test_time_stepped_if_net_matches_with_non_negative_weights(seed):
    rng = np.random.default_rng(seed)
    model = torch_net(rng)
    events = random_events(rng, 120, (20, 20, 2))
    with torch.no_grad():
        x = one_event_per_step(events, (20, 20, 2))
        readout_input = run_time_first(list(model)[:-1], x)  # [T, 1, 3]: accumulated input of the last layer
        model[-1](readout_input)
    neurons = [m for m in model if isinstance(m, IF)]
    res = simulate(model, events, (20, 20, 2))
    assert res.layer_spikes[1] > 0  # activity reaches deep layers, so the comparison means something
    np.testing.assert_allclose(res.scores, readout_input.sum(0)[0].numpy(), rtol=1e-12)
    np.testing.assert_array_equal(res.output_spikes, neurons[-1].counts.numpy().astype(np.int64))
    np.testing.assert_array_equal(res.layer_spikes, [int(n.counts.sum()) for n in neurons])


def test_time_stepped_differs_with_negative_weights():
    # The FIFO case: A, C fire together; B gets +1 then -1.5. Event-driven: B fires once
    # before C's negative spike arrives. Time-stepped: B sums +1 - 1.5 = -0.5 in one step: silent.
    res = simulate(fifo_net(), make_events([(0, 0, 5, 0)]), (2, 1, 1))
    model = nn.Sequential(
        nn.Flatten(), nn.Linear(2, 2, bias=False), IF(), nn.Linear(2, 1, bias=False), IF(), nn.Linear(1, 1, bias=False)
    ).double()
    with torch.no_grad():
        model[1].weight.copy_(torch.tensor([[1.0, 0.0], [1.0, 0.0]]))
        model[3].weight.copy_(torch.tensor([[1.0, -1.5]]))
        model[5].weight.fill_(1.0)
        x = torch.tensor([1.0, 0.0], dtype=torch.float64).reshape(1, 1, 1, 1, 2)  # [T=1, B=1, P, H, W]
        stepped = run_time_first(model, x)
    assert res.scores.tolist() == [1.0]
    assert stepped.item() == 0.0
    assert simulate(model, make_events([(0, 0, 5, 0)]), (2, 1, 1)).scores.tolist() == [1.0]


# ---- interface, batching, errors --------------------------------------------------------------------
def test_result_dict_access_and_batching():
    rng = np.random.default_rng(7)
    net, sensor = random_net(rng)
    streams = [random_events(rng, 30, sensor) for _ in range(5)]
    batch = simulate(net, streams, sensor, num_threads=2, progress=True)
    assert isinstance(batch, list) and len(batch) == 5
    for res, ev in zip(batch, streams):
        one = simulate(net, ev, sensor)
        np.testing.assert_array_equal(res["scores"], one.scores)
        np.testing.assert_array_equal(res["output_spikes"], one.output_spikes)
        assert res["synops"] == one.synops and "prediction" in res
    assert set(
        ["scores", "output_spikes", "synops", "layer_spikes", "first_decision_time", "decision_settle_time"]
    ) <= set(batch[0].keys())
    with pytest.raises(KeyError, match="keys are"):
        batch[0]["nope"]


def test_unsorted_stream_is_sorted_stably_and_empty_stream_is_flagged():
    net = two_by_two_net()
    events = make_events([(1, 1, 30, 0), (1, 1, 10, 0), (0, 0, 20, 0)])
    res = simulate(net, events, (3, 3, 1))
    assert res.first_decision_time == 10 and res.scores.tolist() == [2.0, 3.0]
    empty = simulate(net, np.zeros(0, dtype=DTYPE), (3, 3, 1))
    assert empty.empty and empty.prediction == -1 and empty.synops == 0
    assert empty.first_decision_time is None and not empty.scores.any()


def test_runaway_cascade_raises():
    net = EventNet([Flatten(), Linear(np.array([[5000.0]]), neuron=NeuronSpec()), Linear(np.ones((1, 1)), neuron=None)])
    with pytest.raises(SimulationError, match="max_queue"):
        simulate(net, make_events([(0, 0, 0, 0)]), (1, 1, 1), max_queue=1024)


@pytest.mark.parametrize(
    "events, sensor, match",
    [
        (np.zeros((3, 4)), (3, 3, 1), "structured array"),
        (np.zeros(2, dtype=[("x", "i2"), ("y", "i2"), ("t", "i8")]), (3, 3, 1), r"missing fields \['p'\]"),
        (make_events([(3, 0, 0, 0)]), (3, 3, 1), r"events\['x'\] has value 3 outside \[0, 3\)"),
        (make_events([(0, -1, 0, 0)]), (3, 3, 1), r"events\['y'\] has value -1"),
        (make_events([(0, 0, 0, 1)]), (3, 3, 1), r"events\['p'\] has value 1 outside \[0, 1\)"),
        ([], (3, 3, 1), "empty list"),
        ([make_events([(0, 0, 0, 0)]), make_events([(9, 0, 0, 0)])], (3, 3, 1), r"events\[1\]\['x'\]"),
        (make_events([(0, 0, 0, 0)]), (3, 3), "sensor_size must be Tonic-style"),
        (make_events([(0, 0, 0, 0)]), (4, 4, 1), "layer"),  # the net does not fit a 4x4 input
    ],
)
def test_bad_inputs_raise_clear_errors(events, sensor, match):
    with pytest.raises(InputError, match=match):
        simulate(two_by_two_net(), events, sensor)


def test_float_timestamps_must_be_finite():
    ev = np.zeros(2, dtype=[("x", "i2"), ("y", "i2"), ("t", "f8"), ("p", "i1")])
    ev["t"] = [0.0, np.nan]
    with pytest.raises(InputError, match="NaN"):
        simulate(two_by_two_net(), ev, (3, 3, 1))


def unsorted_streams(rng, sensor, dtype):
    """Streams of ``dtype``: sorted, unsorted with equal timestamps, empty, one event."""
    out = []
    for n, shuffled in ((40, False), (50, True), (0, False), (1, False), (30, True)):
        src = random_events(rng, n, sensor, t_max=12)
        ev = np.zeros(n, dtype=dtype)
        for f in ("x", "y", "t", "p"):
            ev[f] = src[f]
        if shuffled:
            ev = ev[rng.permutation(n)]
        out.append(ev)
    return out


@pytest.mark.parametrize(
    "dtype",
    [
        DTYPE,
        np.dtype([("t", "f8"), ("x", "u1"), ("y", "i8"), ("p", "?"), ("extra", "f4")]),
        np.dtype([("x", "u8"), ("y", "u2"), ("t", "u4"), ("p", "i4")]),
    ],
    ids=["event_dtype", "float_t_bool_p_extra_field", "unsigned"],
)
def test_one_pass_packing_equals_checking_each_stream(dtype):
    from flexsnn.data.events import check_events, sort_by_time

    mod = importlib.import_module("flexsnn.deploy.simulator.simulate")  # the package exports the function
    rng = np.random.default_rng(5)
    sensor = (7, 5, 2)
    streams = unsorted_streams(rng, sensor, dtype)
    assert mod._one_packable_dtype(streams)
    got_streams, keys, times, offsets = mod._checked_and_packed(streams, sensor, ["e"] * len(streams))
    want_streams = [sort_by_time(check_events(s, sensor, allow_empty=True)) for s in streams]
    want_keys, want_times, want_offsets = mod._pack_events(want_streams)
    assert keys.dtype == np.int64 and times.dtype == np.float64
    np.testing.assert_array_equal(keys, want_keys)
    np.testing.assert_array_equal(times, want_times)
    np.testing.assert_array_equal(offsets, want_offsets)
    for got, want in zip(got_streams, want_streams):
        np.testing.assert_array_equal(got, want)
    # and the simulation itself: a mixed-dtype list (the per-stream path) gives the same results
    net = two_by_two_net()
    sensor = (3, 3, 1)
    small = [random_events(rng, 25, sensor, t_max=6)[rng.permutation(25)] for _ in range(4)]
    other = np.zeros(25, dtype=[("x", ">i8"), ("y", "u1"), ("t", ">f4"), ("p", "?")])  # big-endian too
    for f in ("x", "y", "t", "p"):
        other[f] = small[0][f]
    mixed = [other] + small[1:]
    assert not mod._one_packable_dtype(mixed)
    for a, b in zip(simulate(net, small, sensor), simulate(net, mixed, sensor)):
        np.testing.assert_array_equal(a.scores, b.scores)
        assert (a.prediction, a.first_decision_time, a.synops) == (b.prediction, b.first_decision_time, b.synops)


@pytest.mark.parametrize(
    "field, value, match",
    [
        ("x", 3, r"events\[2\]\['x'\] has value 3 outside \[0, 3\)"),
        ("y", -2, r"events\[2\]\['y'\] has value -2"),
        ("p", 1, r"events\[2\]\['p'\] has value 1 outside \[0, 1\)"),
        ("t", np.inf, r"events\[2\]\['t'\] contains NaN or infinite"),
    ],
)
def test_one_pass_refusals_are_worded_by_check_events(field, value, match):
    dtype = np.dtype([("x", "i2"), ("y", "i2"), ("t", "f8"), ("p", "i1")])
    streams = [make_events([(0, 0, i, 0), (1, 1, i + 1, 0)]).astype(dtype) for i in range(4)]
    streams[2][field][1] = value
    with pytest.raises(InputError, match=match):
        simulate(two_by_two_net(), streams, (3, 3, 1))


def test_one_pass_refuses_unsigned_timestamps_beyond_int64_and_keeps_huge_float_ones():
    net = two_by_two_net()
    ev = np.zeros(2, dtype=[("x", "u8"), ("y", "i2"), ("t", "u8"), ("p", "i1")])
    ev["t"] = [1, 2**63]
    with pytest.raises(InputError, match=r"events\['t'\] has value 9223372036854775808 beyond the int64"):
        simulate(net, ev, (3, 3, 1))
    ev["t"] = [1, 2]
    ev["x"][1] = 2**64 - 1  # would wrap to -1 as int64: still refused, with its real value
    with pytest.raises(InputError, match=r"events\['x'\] has value 18446744073709551615"):
        simulate(net, ev, (3, 3, 1))
    big = np.zeros(2, dtype=[("x", "i2"), ("y", "i2"), ("t", "f8"), ("p", "i1")])
    big["t"] = [1e19, 2e19]  # finite floats beyond 2**63 are valid timestamps (the per-stream path)
    assert simulate(net, big, (3, 3, 1)).first_decision_time is not None


# ---- the compiled kernel's own machinery (queue growth, merge order, threads, one compile) -----------
def burst_net(weight: float) -> EventNet:
    # one input spike makes neuron A (v_th 1, multi-spike) emit `weight` spikes at once
    return EventNet(
        [Flatten(), Linear(np.array([[weight]]), neuron=NeuronSpec()), Linear(np.array([[0.5], [-0.25]]), neuron=None)]
    )


def test_burst_beyond_the_first_queue_and_log_room_is_exact():
    # 20000 spikes per event exceed the kernel's first queue and log room (16384): the sample is
    # rerun with more room. Readout output 0 gets +0.5 per spike: its counting neuron fires on
    # every second one; output 1 gets -0.25 and stays clipped at -1.
    res = simulate(burst_net(20000.0), make_events([(0, 0, 0, 0), (0, 0, 1, 0)]), (1, 1, 1), record_spikes=True)
    np.testing.assert_array_equal(res.layer_spikes, [40000, 20000])
    np.testing.assert_array_equal(res.layer_synops, [2, 80000])
    np.testing.assert_array_equal(res.scores, [20000.0, -10000.0])
    np.testing.assert_array_equal(res.output_spikes, [20000, 0])
    np.testing.assert_array_equal(res.spike_trace[0], [[0, 0]] * 20000 + [[1, 0]] * 20000)
    np.testing.assert_array_equal(res.spike_trace[1], [[0, 0]] * 10000 + [[1, 0]] * 10000)
    assert res.membranes[1].tolist() == [0.0, -1.0]
    np.testing.assert_array_equal(
        simulate(burst_net(20000.0), make_events([(0, 0, 0, 0)]), (1, 1, 1)).scores, [10000.0, -5000.0]
    )


@pytest.mark.parametrize("spikes, max_queue", [(5000, 5000), (5000, 4999), (20000, 20000), (20000, 19999)])
def test_max_queue_caps_exactly_the_spikes_of_one_cascade(spikes, max_queue):
    def run():
        return simulate(burst_net(float(spikes)), make_events([(0, 0, 0, 0)]), (1, 1, 1), max_queue=max_queue)

    if spikes <= max_queue:
        assert run().layer_spikes[0] == spikes
    else:
        with pytest.raises(SimulationError, match=f"max_queue={max_queue}"):
            run()


def test_wide_conv_fan_out_is_merged_into_flat_order():
    # 3x3 conv, 9 output channels, padding 1: one spike reaches up to 9 positions x 9 channels
    # and many of them fire at once. The kernel finds them position by position (channel runs)
    # and must emit them channel-major, in flat order, like the oracle.
    rng = np.random.default_rng(11)
    first = Conv(rng.uniform(0.2, 1.2, size=(9, 2, 3, 3)), padding=1, neuron=NeuronSpec())
    second = Conv(rng.normal(0.3, 0.8, size=(5, 9, 3, 3)), padding=1, neuron=NeuronSpec(multi_spike=False))
    net = EventNet([first, second, Flatten(), Linear(rng.normal(size=(3, 5 * 6 * 6)))])
    events = random_events(rng, 40, (6, 6, 2))
    fast = simulate(net, events, (6, 6, 2), record_spikes=True)
    slow = simulate_reference(net, events, (6, 6, 2))
    for a, b in zip(fast.spike_trace, slow.spike_trace):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(fast.membranes, slow.membranes):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(fast.scores, slow.scores)
    # the case needs the merge: some event's spikes are not in position-major order
    trace = fast.spike_trace[0]
    mixed = False
    for e in np.unique(trace[:, 0]):
        flat = trace[trace[:, 0] == e, 1]
        position_major = flat[np.lexsort((flat // 36, flat % 36))]
        mixed |= not np.array_equal(flat, position_major)
    assert mixed


def test_many_samples_in_chunks_on_threads_match_one_by_one():
    rng = np.random.default_rng(5)
    net, sensor = random_net(rng)
    streams = [random_events(rng, int(rng.integers(0, 40)), sensor) for _ in range(70)]
    batch = simulate(net, streams, sensor, num_threads=2)
    for res, ev in zip(batch, streams):
        one = simulate(net, ev, sensor, num_threads=1)
        np.testing.assert_array_equal(res.scores, one.scores)
        np.testing.assert_array_equal(res.layer_spikes, one.layer_spikes)
        assert (res.prediction, res.first_decision_time) == (one.prediction, one.first_decision_time)
        assert (res.spike_prediction, res.spike_tie, res.spike_silent) == (
            one.spike_prediction,
            one.spike_tie,
            one.spike_silent,
        )
        assert res.num_events == ev.size


def test_a_failing_chunk_on_a_helper_thread_is_raised(monkeypatch):
    import importlib

    simulate_module = importlib.import_module("flexsnn.deploy.simulator.simulate")
    rng = np.random.default_rng(5)
    net, sensor = random_net(rng)
    streams = [random_events(rng, 20, sensor) for _ in range(40)]
    calls = []
    run_batch = simulate_module.run_batch

    def failing_once(*args):
        calls.append(args[3].tolist())
        if len(calls) == 3:  # on whichever thread takes the third chunk
            raise RuntimeError("chunk failed")
        return run_batch(*args)

    monkeypatch.setattr(simulate_module, "run_batch", failing_once)
    with pytest.raises(RuntimeError, match="chunk failed"):
        simulate(net, streams, sensor, num_threads=2)
    monkeypatch.undo()
    batch = simulate(net, streams, sensor, num_threads=2)  # the pool still works afterwards
    assert [r.num_events for r in batch] == [20] * 40
    assert sorted(i for chunk in calls for i in chunk) == list(range(40))  # every chunk was taken once


def test_each_kernel_is_compiled_once():
    # Every path (single / list / record, leak, conv readout, pooling) must reuse one compiled
    # version of each kernel: a literal argument would make numba compile (and cache) another.
    from flexsnn.deploy.simulator import kernels

    rng = np.random.default_rng(2)
    leaky, sensor = random_net(rng, allow_leak=True)
    conv_readout = EventNet([SumPool(2), Conv(np.ones((2, 1, 2, 2)), neuron=None)])
    simulate(leaky, [random_events(rng, 10, sensor)] * 3, sensor, num_threads=2)
    simulate(leaky, random_events(rng, 10, sensor), sensor, record_spikes=True)
    simulate(conv_readout, make_events([(1, 1, 0, 0), (2, 3, 1, 0)]), (6, 6, 1))
    assert len(kernels.run_batch.signatures) == 1 and len(kernels.run_sample.signatures) == 1
    # the helpers are only listed when compiled in this process (not when loaded from numba's cache)
    simulate(leaky, random_events(rng, 10, sensor), sensor, num_threads=2, parallel="neurons", record_spikes=True)
    simulate(leaky, [random_events(rng, 10, sensor)] * 2, sensor, num_threads=2, parallel="neurons")
    helpers = [kernels._run_core, kernels._merge_runs, kernels.clear_state, kernels.buffer_sizes, kernels.spike_lists]
    helpers += [kernels.deliver, kernels.emit, kernels.layer_pass, kernels.pool_pass, kernels.load_block]
    assert all(len(k.signatures) <= 1 for k in helpers), [
        (k.__name__, k.signatures) for k in helpers if len(k.signatures) > 1
    ]


# ---- the chip-style readout: output spike counts, ties and silence reported as such ---------------
def readout_net(w_h0, w_h1) -> EventNet:
    # input x=0 makes hidden neuron h0 fire once, x=1 makes h1 fire once (identity, weight 1);
    # the readout's counting neuron is the default (v_th 1, subtract, v_min -1, multi-spike)
    hidden = Linear(np.eye(2), neuron=NeuronSpec())
    return EventNet([Flatten(), hidden, Linear(np.array([w_h0, w_h1], dtype=float).T, neuron=None)])


@pytest.mark.parametrize("run", IMPLEMENTATIONS)
def test_spike_readout_differs_from_the_accumulated_input(run):
    # class 0: +1, +1 (2 output spikes, u 0), then -3 -> score -1, u clipped at -1: still 2 spikes.
    # class 1: 0, 0, then +0.5 -> score 0.5, no spike. Scores pick class 1, spike counts class 0.
    net = readout_net([1.0, 0.0], [-3.0, 0.5])
    res = sim(run, net, make_events([(0, 0, 1, 0), (0, 0, 2, 0), (1, 0, 3, 0)]), (2, 1, 1))
    assert res.scores.tolist() == [-1.0, 0.5] and res.prediction == 1
    assert res.output_spikes.tolist() == [2, 0]
    assert (res.spike_prediction, res.spike_tie, res.spike_silent) == (0, False, False)
    assert predictions(res, readout="spikes").tolist() == [0] and predictions(res).tolist() == [1]


@pytest.mark.parametrize("run", IMPLEMENTATIONS)
def test_spike_readout_reports_ties_and_silence(run):
    # one spike of h0: class 0 gets 1.0 (1 spike), class 1 gets 1.5 (1 spike, 0.5 left): the
    # scores pick class 1, the spike counts tie and give no class (not the lower index)
    res = sim(run, readout_net([1.0, 1.5], [0.0, 0.0]), make_events([(0, 0, 1, 0)]), (2, 1, 1))
    assert res.prediction == 1 and res.output_spikes.tolist() == [1, 1]
    assert (res.spike_prediction, res.spike_tie, res.spike_silent) == (-1, True, False)
    # 0.5 and 0.4: scores decide (class 0), no output neuron reaches threshold: silent
    res = sim(run, readout_net([0.5, 0.4], [0.0, 0.0]), make_events([(0, 0, 1, 0)]), (2, 1, 1))
    assert res.prediction == 0 and res.output_spikes.tolist() == [0, 0]
    assert (res.spike_prediction, res.spike_tie, res.spike_silent) == (-1, False, True)
    empty = run(readout_net([1.0, 1.5], [0.0, 0.0]), np.zeros(0, dtype=DTYPE), (2, 1, 1))
    assert (empty.spike_prediction, empty.spike_tie, empty.spike_silent) == (-1, False, True)


def test_spike_count_readout_and_predictions():
    assert spike_count_readout([0, 3, 1]) == (1, False, False)
    assert spike_count_readout([2, 0, 2]) == (-1, True, False)
    assert spike_count_readout(np.zeros(4, dtype=np.int64)) == (-1, False, True)
    assert spike_count_readout(np.array([[0, 1], [5, 0]])) == (2, False, False)  # a conv readout: flat index
    from flexsnn.deploy.simulator.simulate import _spike_count_readouts

    rows = np.array([[0, 3, 1], [2, 0, 2], [0, 0, 0], [4, 4, 4], [0, 0, 7], [1, 0, 0]])
    batched = list(zip(*(r.tolist() for r in _spike_count_readouts(rows))))
    assert batched == [spike_count_readout(r) for r in rows]
    assert _spike_count_readouts(np.zeros((2, 0), dtype=np.int64))[2].tolist() == [True, True]
    results = simulate(
        readout_net([1.0, 1.5], [2.0, 0.0]), [make_events([(0, 0, 1, 0)]), make_events([(1, 0, 1, 0)])], (2, 1, 1)
    )
    assert predictions(results, "scores").tolist() == [1, 0]
    assert predictions(results, "spikes").tolist() == [-1, 0]
    with pytest.raises(InputError, match="readout must be one of"):
        predictions(results, "membranes")


# ---- the compiled form is cached per net, and refreshed when the net changes -----------------------
def test_compiled_net_is_reused_and_changed_weights_are_picked_up():
    net, sensor = two_by_two_net(), (3, 3, 1)
    events = make_events([(1, 1, 10, 0), (0, 0, 20, 0), (1, 1, 30, 0)])
    first = compiled_for(net, (1, 3, 3))
    assert compiled_for(net, (1, 3, 3)) is first  # unchanged net: no re-encoding
    base = simulate(net, events, sensor)
    assert base.scores.tolist() == [2.0, 3.0]

    def check_against_oracle():
        fast, slow = simulate(net, events, sensor), simulate_reference(net, events, sensor)
        np.testing.assert_array_equal(fast.scores, slow.scores)
        np.testing.assert_array_equal(fast.layer_spikes, slow.layer_spikes)
        return fast

    net.layers[0].weight[0, 0, 1, 1] = 2.0  # in place: the tap through which event (1, 1) reaches out0
    changed = check_against_oracle()
    assert compiled_for(net, (1, 3, 3)) is not first
    assert changed.layer_spikes.tolist() != base.layer_spikes.tolist()
    net.layers[0].weight[0, 0, 1, 1] = 1.0
    assert check_against_oracle().scores.tolist() == base.scores.tolist()  # back to the old weights
    net.layers[-1].weight = np.array([[0.0, 0, 0, 0], [0, 0, 0, -3.0]], dtype=np.float32)  # a new array
    assert check_against_oracle().scores.tolist() == [0.0, -3.0]
    net.layers[0].neuron = NeuronSpec(v_th=10.0)  # another neuron: nothing fires
    assert check_against_oracle().layer_spikes.tolist() == [0, 0]
    # the smallest change, one bit of one weight, is seen too
    net.layers[0].neuron = NeuronSpec(v_th=1.0, v_min=-1.0)
    net.layers[-1].weight = np.array([[1.0, 0, 0, 0], [0, 0, 0, 3.0]], dtype=np.float32)
    before = compiled_for(net, (1, 3, 3))
    net.layers[-1].weight.view(np.uint32)[0, 0] ^= 1
    after = compiled_for(net, (1, 3, 3))
    assert after is not before and after.weights.view(np.uint32).tolist() != before.weights.view(np.uint32).tolist()
    # another input shape is another encoding
    conv_only = EventNet([Conv(np.ones((1, 1, 2, 2)), neuron=None)])
    assert compiled_for(conv_only, (1, 3, 3)).n_state == 4 and compiled_for(conv_only, (1, 4, 4)).n_state == 9


def test_torch_models_see_changed_parameters():
    model = nn.Sequential(nn.Flatten(), nn.Linear(2, 1, bias=False))
    with torch.no_grad():
        model[1].weight.fill_(1.0)
    events = make_events([(0, 0, 0, 0), (1, 0, 1, 0)])
    assert simulate(model, events, (2, 1, 1)).scores.tolist() == [2.0]
    with torch.no_grad():
        model[1].weight.mul_(0.25)
    assert simulate(model, events, (2, 1, 1)).scores.tolist() == [0.5]


@pytest.mark.parametrize("pools", [[SumPool(2)], [SumPool(2), SumPool((1, 2))], [SumPool(2, stride=1)]])
def test_leading_pools_route_events_like_the_oracle(pools):
    # input pools (non-overlapping, stacked, overlapping) on odd sizes: rows / columns that
    # no window holds are dropped; every spike as in the oracle
    rng = np.random.default_rng(4)
    sensor = (9, 7, 2)  # odd sizes: the last row / column falls outside every 2-window
    shape = (2, 7, 9)
    for pool in pools:
        shape = pool.output_shape(shape)
    conv = Conv(rng.uniform(0.3, 1.2, size=(3, 2, 2, 2)), neuron=NeuronSpec())
    n_flat = int(np.prod(conv.output_shape(shape)))
    net = EventNet([*pools, conv, Flatten(), Linear(rng.normal(size=(3, n_flat)))])
    events = random_events(rng, 80, sensor)
    assert (events["y"] == 6).any() and (events["x"] == 8).any()
    fast = simulate(net, events, sensor, record_spikes=True)
    slow = simulate_reference(net, events, sensor)
    assert len(slow.spike_trace[0]) > 0
    for a, b in zip(fast.spike_trace, slow.spike_trace):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(fast.scores, slow.scores)
    np.testing.assert_array_equal(fast.layer_synops, slow.layer_synops)


def test_streams_longer_than_a_block_match_the_oracle():
    # the kernel works blocks of events through one layer at a time: a stream of several
    # blocks (with leak, so every spike must carry its own event's time) spike for spike
    from flexsnn.deploy.simulator.kernels import BLOCK_EVENTS

    rng = np.random.default_rng(21)
    sensor = (5, 5, 2)
    first = Conv(rng.normal(0.3, 0.6, size=(3, 2, 3, 3)), padding=1, neuron=NeuronSpec(tau=400.0))
    net = EventNet(
        [
            first,
            Flatten(),
            Linear(rng.normal(0.1, 0.5, size=(4, 75)), neuron=NeuronSpec(v_th=2.0)),
            Linear(rng.normal(0.0, 1.0, size=(3, 4))),
        ]
    )
    events = random_events(rng, 2 * BLOCK_EVENTS + 300, sensor, t_max=100_000)
    fast = simulate(net, events, sensor, record_spikes=True)
    slow = simulate_reference(net, events, sensor)
    assert slow.layer_spikes[1] > 0 and slow.spike_trace[0][-1, 0] > 2 * BLOCK_EVENTS  # spikes in the last block
    for a, b in zip(fast.spike_trace, slow.spike_trace):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(fast.scores, slow.scores, rtol=1e-12)
    assert (fast.prediction, fast.first_decision_time, fast.decision_settle_time) == (
        slow.prediction,
        slow.first_decision_time,
        slow.decision_settle_time,
    )
    np.testing.assert_array_equal(simulate(net, [events, events[:50]], sensor)[0].layer_spikes, fast.layer_spikes)


# ---- one sample shared by the threads (parallel="neurons"): the same spikes bit for bit ----------
@pytest.fixture
def split_every_layer(monkeypatch):
    """Split every weighted layer of two or more channels (the default needs 16 per thread)."""
    threads_module = importlib.import_module("flexsnn.deploy.simulator.threads")
    monkeypatch.setattr(threads_module, "MIN_PART_CHANNELS", 1)
    return threads_module


@pytest.mark.parametrize("threads", [2, 3])
@pytest.mark.parametrize("seed", range(8))
def test_shared_sample_matches_the_oracle_spike_for_spike(split_every_layer, seed, threads):
    rng = np.random.default_rng(300 + seed)
    leak = seed % 3 == 0
    net, sensor = random_net(rng, allow_leak=leak)
    ranges = split_every_layer.channel_ranges(compiled_for(net, (sensor[2], sensor[1], sensor[0])), threads)
    assert any(r is not None for r in ranges)  # some layer is really shared
    events = random_events(rng, int(rng.integers(20, 60)), sensor, t_max=200 if leak else 50)
    fast = simulate(net, events, sensor, record_spikes=True, num_threads=threads, parallel="neurons")
    slow = simulate_reference(net, events, sensor)
    assert_same_results(fast, slow, exact_membranes=not leak)
    if leak:
        np.testing.assert_allclose(fast.scores, slow.scores, rtol=1e-12)
    else:
        np.testing.assert_array_equal(fast.scores, slow.scores)
    unrecorded = simulate(net, [events, events[:7]], sensor, num_threads=threads, parallel="neurons")
    by_samples = simulate(net, [events, events[:7]], sensor, num_threads=threads, parallel="samples")
    for a, b in zip(unrecorded, by_samples):
        np.testing.assert_array_equal(a.scores, b.scores)
        np.testing.assert_array_equal(a.layer_spikes, b.layer_spikes)
        np.testing.assert_array_equal(a.layer_synops, b.layer_synops)
    np.testing.assert_array_equal(unrecorded[0].scores, fast.scores)


def test_channel_ranges_cover_each_wide_layer_once():
    from flexsnn.deploy.simulator.threads import MIN_PART_CHANNELS, channel_ranges, splits

    rng = np.random.default_rng(4)
    wide = EventNet(
        [
            Conv(rng.normal(size=(40, 2, 3, 3)), padding=1, neuron=NeuronSpec()),  # 40 channels: 2 ranges
            SumPool(2),
            Conv(rng.normal(size=(100, 40, 3, 3)), padding=1, neuron=NeuronSpec()),  # 100: 3 ranges of 33-34
            Flatten(),
            Linear(rng.normal(size=(50, 100 * 2 * 2)), neuron=NeuronSpec()),  # 50: 3 ranges
            Linear(rng.normal(size=(10, 50))),  # the readout: never split
        ]
    )
    compiled = compiled_for(wide, (2, 4, 4))
    ranges = channel_ranges(compiled, 3)
    assert ranges[1] is None and ranges[-1] is None  # the pool and the readout
    assert [(lo, hi) for lo, hi, *_ in ranges[0]] == [(0, 20), (20, 40)]  # 40 // 16 = 2 ranges only
    assert [(lo, hi) for lo, hi, *_ in ranges[2]] == [(0, 33), (33, 67), (67, 100)]
    assert [(lo, hi) for lo, hi, *_ in ranges[3]] == [(0, 17), (17, 33), (33, 50)]
    assert all(hi - lo >= MIN_PART_CHANNELS for r in ranges if r for lo, hi, *_ in r)
    # "auto" shares a wide net's samples' neurons when the samples are few; a narrow net never
    assert splits(compiled, 2, 1, "auto") and not splits(compiled, 2, 2, "auto")
    assert splits(compiled, 2, 64, "neurons") and not splits(compiled, 2, 1, "samples")
    assert not splits(compiled, 1, 1, "neurons")
    assert not splits(compiled_for(two_by_two_net(), (1, 3, 3)), 2, 1, "neurons")


def test_shared_wide_conv_net_by_default_equals_one_thread():
    # a 64-channel conv stack with the default threshold: "auto" shares one sample's layers
    rng = np.random.default_rng(8)
    net = EventNet(
        [
            Conv(rng.uniform(0.0, 0.6, size=(64, 2, 3, 3)), padding=1, neuron=NeuronSpec()),
            Conv(rng.normal(0.02, 0.1, size=(48, 64, 3, 3)), padding=1, neuron=NeuronSpec(tau=300.0)),
            SumPool(2),
            Flatten(),
            Linear(rng.normal(size=(5, 48 * 4 * 4))),
        ]
    )
    from flexsnn.deploy.simulator.threads import splits

    assert splits(compiled_for(net, (2, 8, 8)), 2, 1, "auto")
    events = random_events(rng, 300, (8, 8, 2), t_max=2000)
    shared = simulate(net, events, (8, 8, 2), num_threads=2, record_spikes=True)
    one = simulate(net, events, (8, 8, 2), num_threads=1, record_spikes=True)
    assert shared.layer_spikes[0] > 100 and shared.layer_spikes[1] > 10
    assert_same_results(shared, one)
    np.testing.assert_array_equal(shared.scores, one.scores)


def wide_burst_net(neurons: int) -> EventNet:
    # every input event makes each of `neurons` hidden neurons fire once
    return EventNet(
        [
            Flatten(),
            Linear(np.ones((neurons, 1)), neuron=NeuronSpec()),
            Linear(np.tile([[0.5], [-0.25]], (1, neurons))),
        ]
    )


def test_shared_sample_grows_its_lists_and_caps_cascades_exactly(split_every_layer):
    # 20000 fired neurons per event: more than the first room of the lists of fired neurons
    # and of spikes (16384) in one block, in each range and in the gathered list
    events = make_events([(0, 0, t, 0) for t in range(3)])
    shared = simulate(wide_burst_net(20000), events, (1, 1, 1), num_threads=2, parallel="neurons", record_spikes=True)
    one = simulate(wide_burst_net(20000), events, (1, 1, 1), num_threads=1, record_spikes=True)
    assert shared.layer_spikes.tolist() == [60000, 30000]
    assert_same_results(shared, one)
    np.testing.assert_array_equal(shared.scores, [30000.0, -15000.0])
    for max_queue, threads in ((20000, 2), (19999, 2), (9999, 2), (6666, 3)):

        def run(threads=threads, max_queue=max_queue):
            return simulate(
                wide_burst_net(20000), events, (1, 1, 1), num_threads=threads, parallel="neurons", max_queue=max_queue
            )

        if max_queue >= 20000:
            assert run().layer_spikes[0] == 60000
        else:  # caught once the ranges are gathered (19999) or within one range already
            with pytest.raises(SimulationError, match=f"max_queue={max_queue}"):
                run()


def test_bad_parallel_mode_raises():
    with pytest.raises(InputError, match="parallel must be one of"):
        simulate(two_by_two_net(), make_events([(0, 0, 0, 0)]), (3, 3, 1), parallel="channels")
