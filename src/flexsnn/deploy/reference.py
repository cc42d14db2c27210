"""Deliberately simple pure-Python event-driven simulator: a test oracle, not for real use.

It implements exactly the rules of ``docs/event_driven.md``, with dicts, lists, one global
FIFO queue of pending spikes and obvious loops over every output neuron, straight from the
:class:`~flexsnn.deploy.eventnet.EventNet` layer specs (no flat-array encoding). The tests
compare it spike for spike with the compiled kernel, so the two must never share simulation
code; only input validation is reused.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from typing import Any

import numpy as np

from flexsnn.data.events import check_events, check_sensor_size, sort_by_time
from flexsnn.deploy.eventnet import Conv, EventNet, Flatten, Linear, NeuronSpec, SumPool
from flexsnn.deploy.simulator.simulate import SimulationResult, _as_eventnet

__all__ = ["simulate_reference"]


def _fire(u: float, spec: NeuronSpec) -> tuple[int, float]:
    """Threshold check of one neuron after a delivery: (number of spikes, membrane after reset)."""
    if u < spec.v_th:
        return 0, u
    n = math.floor(u / spec.v_th) if spec.multi_spike else 1
    if spec.reset == "hard":
        return n, 0.0
    return n, u - n * spec.v_th


def simulate_reference(model: Any, events: np.ndarray, sensor_size: Sequence[int]) -> SimulationResult:
    """Simulate one event stream; returns a SimulationResult with spike_trace and membranes."""
    width, height, pols = check_sensor_size(sensor_size)
    events = sort_by_time(check_events(events, (width, height, pols), allow_empty=True))
    net: EventNet = _as_eventnet(model)
    shapes = net.shapes((pols, height, width))
    layers = net.layers
    readout = len(layers) - 1
    weighted = [i for i, layer in enumerate(layers) if isinstance(layer, (Conv, Linear))]

    membrane = {i: {} for i in weighted}  # flat neuron index -> membrane
    last_time = {i: {} for i in weighted}  # flat neuron index -> time of its last update
    trace = {i: [] for i in weighted}  # (event index, flat neuron index), in emission order
    synops = {i: 0 for i in weighted}
    out_shape = shapes[readout + 1]
    n_out = int(np.prod(out_shape))
    scores = [0.0] * n_out
    decision, first_decision, settle = -1, None, None

    for e, event in enumerate(events):
        t = float(event["t"])
        queue = deque([(0, (int(event["p"]), int(event["y"]), int(event["x"])))])  # (layer, coordinate)
        readout_touched = False
        while queue:
            i, coord = queue.popleft()
            layer = layers[i]
            if isinstance(layer, SumPool):
                c, y, x = coord
                _, oh, ow = shapes[i + 1]
                for oy in range(oh):
                    for ox in range(ow):
                        inside_y = oy * layer.stride[0] <= y < oy * layer.stride[0] + layer.kernel[0]
                        inside_x = ox * layer.stride[1] <= x < ox * layer.stride[1] + layer.kernel[1]
                        if inside_y and inside_x:
                            queue.append((i + 1, (c, oy, ox)))
                continue
            if isinstance(layer, Flatten):
                shape = shapes[i]
                flat = int(np.ravel_multi_index(coord, shape))
                queue.append((i + 1, (flat,)))
                continue
            # weighted layer: list (target flat index, weight) in ascending flat order
            targets = []
            if isinstance(layer, Conv):
                c, y, x = coord
                c_out, oh, ow = shapes[i + 1]
                _, _, kh, kw = layer.weight.shape
                for co in range(c_out):
                    for oy in range(oh):
                        for ox in range(ow):
                            ky = y + layer.padding[0] - oy * layer.stride[0]
                            kx = x + layer.padding[1] - ox * layer.stride[1]
                            if 0 <= ky < kh and 0 <= kx < kw:
                                targets.append(((co * oh + oy) * ow + ox, float(layer.weight[co, c, ky, kx])))
            else:
                (s,) = coord if len(coord) == 1 else (int(np.ravel_multi_index(coord, shapes[i])),)
                for o in range(layer.weight.shape[0]):
                    targets.append((o, float(layer.weight[o, s])))
            spec = net.output_neuron if i == readout else layer.neuron
            for j, w in targets:
                synops[i] += 1
                u = membrane[i].get(j, 0.0)
                if spec.tau is not None:
                    u = u * math.exp(-(t - last_time[i].get(j, 0.0)) / spec.tau)
                    last_time[i][j] = t
                u = u + w
                if spec.v_min is not None and u < spec.v_min:
                    u = spec.v_min
                n, u = _fire(u, spec)
                membrane[i][j] = u
                trace[i].extend([(e, j)] * n)
                if i == readout:
                    scores[j] += w
                    readout_touched = True
                else:
                    for _ in range(n):
                        queue.append((i + 1, _unflatten(j, shapes[i + 1])))
        if readout_touched:
            if any(s != 0.0 for s in scores):
                state = max(range(n_out), key=lambda k: (scores[k], -k))  # lowest index on ties
            else:
                state = -1
            if state != decision:
                decision, settle = state, e
                if first_decision is None and state != -1:
                    first_decision = e

    t_col = events["t"]
    output_spikes = np.zeros(n_out, dtype=np.int64)
    for _, j in trace[readout]:
        output_spikes[j] += 1
    membranes = []
    for i in weighted:
        m = np.zeros(int(np.prod(shapes[i + 1])))
        for j, value in membrane[i].items():
            m[j] = value
        membranes.append(m.reshape(shapes[i + 1]))
    layer_synops = np.array([synops[i] for i in weighted], dtype=np.int64)
    return SimulationResult(
        scores=np.array(scores, dtype=np.float64),
        prediction=decision,
        output_spikes=output_spikes,
        layer_spikes=np.array([len(trace[i]) for i in weighted], dtype=np.int64),
        layer_synops=layer_synops,
        synops=int(layer_synops.sum()),
        num_events=int(events.size),
        empty=events.size == 0,
        first_decision_time=None if first_decision is None else t_col[first_decision].item(),
        decision_settle_time=None if settle is None or decision < 0 else t_col[settle].item(),
        spike_trace=[np.array(trace[i], dtype=np.int64).reshape(-1, 2) for i in weighted],
        membranes=membranes,
    )


def _unflatten(j: int, shape: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(int(v) for v in np.unravel_index(j, shape))
