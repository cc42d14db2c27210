"""Event-driven (clock-free) simulator of a deployable spiking network, compiled with numba.

There are no time steps. The rules below are the contract; :mod:`flexsnn.deploy.reference`
implements the same rules in plain Python and the tests compare the two spike for spike.

1. Input. One sample is an event stream, a structured array with fields ``x, y, t, p``
   (Tonic style) for a sensor of ``sensor_size = (W, H, P)``. Events are processed one at a
   time in timestamp order; a stream that is not sorted by ``t`` is sorted with a stable sort
   (events with equal ``t`` keep their order). An event is one spike at ``(p, y, x)`` of the
   input map ``[P, H, W]``.
2. Delivery. Every spike is delivered individually to its fan-out: the conv footprint (every
   output neuron whose receptive field contains it, inside the map; padding positions have no
   neuron), or the whole row set of a linear layer. Each target receives one weight addition
   per spike: one synaptic operation (``synops`` counts exactly these additions).
3. Neurons. After each delivery, for each target neuron: (leak, optional) its membrane first
   decays by ``exp(-(t - t_last) / tau)`` from the time it was last updated (lazy leak); then
   ``u += w``; then ``u = max(u, v_min)`` (clip at the lower bound, if any); then if
   ``u >= v_th`` it fires at once: ``n = floor(u / v_th)`` spikes (multi-spike; 1 otherwise),
   reset by subtraction ``u -= n * v_th`` (or ``u = 0`` for a hard reset). A single-spike
   neuron left above threshold fires again at its next delivery, not before.
4. Order. The neurons that fire after one delivery emit in the order of their flat index
   ``(channel, row, column)``, a neuron's n spikes consecutively. Spikes queue FIFO for the
   next layer and every layer processes its incoming spikes in arrival order. A pooling layer
   only routes: a spike at ``(c, y, x)`` goes to every pooled position ``(c, oy, ox)`` whose
   window contains it (ascending flat order; exactly ``(c, y // k, x // k)`` when
   stride == kernel), and is dropped if no window contains it. Flatten keeps flat indices.
5. Zero delay. An input event's whole cascade completes before the next input event. (Since
   there is no feedback, every layer then sees the same spike sequence whether the cascade
   is run layer by layer, as here, or through one global FIFO, as in the reference.)
6. Readout. The last weighted layer has no effect on spikes: its accumulated input is the
   score vector (never clipped nor leaked); ``prediction`` is its argmax (lowest index on
   ties), or -1 while all scores are zero. ``output_spikes`` counts the spikes the readout's
   neuron (``EventNet.output_neuron``) would emit under rule 3; they never change the scores.
   ``first_decision_time``: ``t`` of the input event whose cascade first made the scores
   non-zero. ``decision_settle_time``: ``t`` of the last input event whose cascade changed
   the decision (after it the argmax never changed again). Both are None without a decision.

Where the time-stepped IF net (one input event per step, same weights) gives the same result:
with all weights >= 0 (so the membrane never falls and ``v_min`` never acts), multi-spike,
subtraction reset and no leak, both produce identical spike counts per neuron and scores;
otherwise they can differ (a positive spike can make a neuron fire before a negative one
cancels it, which summing a whole time step first would not).

How it runs: the net is encoded as flat arrays (:func:`compile_net`) for one numba kernel
that handles any stack (compiled once per process, cached on disk). A list of samples is cut
into chunks; each chunk is one kernel call (``nogil=True``) on a thread pool, with its own
membrane state. Spikes travel as packed (channel, row, column) keys; a delivery adds the
weights to contiguous runs of membranes (conv membranes are kept [H, W, C], so the run is the
channel axis at one output position) in a vectorised pass, then fires only the runs that
reached threshold and merges them into flat order (no sort, no allocation per delivery).
Float64 membranes, one addition per neuron per delivery in the oracle's order: without leak
the results are bit-identical to :mod:`flexsnn.deploy.reference` (with a leak, up to exp's
last bit).
"""
from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, fields
from typing import Any, Iterator, Sequence

import numba
import numpy as np

from flexsnn.deploy.eventnet import Conv, EventNet, Flatten, NeuronSpec, SumPool
from flexsnn.errors import FlexSNNError, InputError

__all__ = ["simulate", "SimulationResult", "SimulationError", "compile_net", "check_events", "CompiledNet"]

POOL, CONV, LINEAR = 0, 1, 2
# columns of the op table
(K_KIND, K_IC, K_IH, K_IW, K_OC, K_OH, K_OW, K_KH, K_KW, K_SH, K_SW, K_PH, K_PW, K_WOFF, K_SOFF, K_NEURON,
 K_LUT) = range(17)
N_COLUMNS = 17
DEFAULT_MAX_QUEUE = 1 << 27  # spikes one layer may emit in one input event's cascade


class SimulationError(FlexSNNError, RuntimeError):
    """The simulation could not finish (e.g. a runaway cascade exceeded max_queue)."""


@dataclass
class SimulationResult:
    """Outcome of one sample. Attributes are also readable as ``result["scores"]``.

    scores: float64 [num_outputs], accumulated input of the readout (flat for a conv readout).
    prediction: argmax of scores, -1 while all scores are zero (no decision).
    output_spikes: int64 [num_outputs], spikes of the readout's counting neuron.
    layer_spikes: int64 [num_weighted_layers], spikes emitted by each weighted layer's neurons
        (the last entry is output_spikes.sum()).
    layer_synops: int64 [num_weighted_layers], synaptic operations delivered INTO each layer.
    synops: total synaptic operations (sum of layer_synops).
    num_events: input events processed. empty: True for an empty stream (zero scores).
    first_decision_time / decision_settle_time: event timestamps (see the module docstring) or None.
    spike_trace: with ``record_spikes=True``, per weighted layer an int64 array [n, 2] of
        (input event index, flat neuron index) in emission order; else None.
    membranes: with ``record_spikes=True``, final membrane of each weighted layer (float64,
        layer output shape; the readout's counting neuron last); else None.
    """

    scores: np.ndarray
    prediction: int
    output_spikes: np.ndarray
    layer_spikes: np.ndarray
    layer_synops: np.ndarray
    synops: int
    num_events: int
    empty: bool
    first_decision_time: Any = None
    decision_settle_time: Any = None
    spike_trace: list[np.ndarray] | None = None
    membranes: list[np.ndarray] | None = None

    def keys(self) -> list[str]:
        return [f.name for f in fields(self)]

    def __getitem__(self, key: str) -> Any:
        if key not in self.keys():
            raise KeyError(f"{key!r}; SimulationResult keys are {', '.join(self.keys())}")
        return getattr(self, key)

    def __contains__(self, key: object) -> bool:
        return key in self.keys()

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys())

    def get(self, key: str, default: Any = None) -> Any:
        return getattr(self, key) if key in self.keys() else default

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.keys()}


# ---- the compiled net: layers as flat arrays -----------------------------------------------
@dataclass
class CompiledNet:
    """An EventNet encoded as flat arrays for the kernel (one kernel handles any stack).

    The kernel keeps conv membranes as [H_out, W_out, C_out] (channel innermost), so a spike's
    fan-out at one output position is one contiguous run of weights and of membranes.
    """

    ops: np.ndarray        # int64 [n_ops, N_COLUMNS], see the K_* columns
    lut: np.ndarray        # int64, per conv / pool op its footprint tables (see _footprint_table)
    weights: np.ndarray    # float32 (the EventNet's own values), conv [ci, kh, kw, co], linear [in, out]
    neurons: np.ndarray    # float64 [n_weighted, 5]: v_th, v_min (-inf = none), multi, hard, tau (0 = none)
    n_state: int           # total neurons of all weighted layers
    shapes: list[tuple[int, ...]] = field(default_factory=list)  # output shape per weighted layer
    input_shape: tuple[int, int, int] = (0, 0, 0)


def _neuron_row(spec: NeuronSpec) -> list[float]:
    return [spec.v_th, -math.inf if spec.v_min is None else spec.v_min, float(spec.multi_spike),
            float(spec.reset == "hard"), 0.0 if spec.tau is None else spec.tau]


def _footprint_table(size_in: int, size_out: int, kernel: int, stride: int, pad: int) -> np.ndarray:
    """int64 [2, size_in]: first and last output index o whose window [o * stride - pad, + kernel)
    holds input index i (first > last: in no window). Replaces per-spike integer divisions."""
    i = np.arange(size_in, dtype=np.int64)
    first = np.maximum(0, -((kernel - 1 - i - pad) // stride))  # ceil((i + pad - kernel + 1) / stride)
    last = np.minimum(size_out - 1, (i + pad) // stride)
    return np.stack([first, last])


def compile_net(net: EventNet, input_shape: Sequence[int]) -> CompiledNet:
    """Encode ``net`` for an input map ``input_shape = (C, H, W)`` (validated)."""
    net.set_input_shape(input_shape)
    shapes = net.shapes()
    for shape in shapes:
        if len(shape) == 3 and max(shape[1:]) >= _MAX_SIDE:
            raise InputError(f"the simulator needs map heights and widths below {_MAX_SIDE}; got a map {shape}")
    rows, views, neurons, out_shapes, tables = [], [], [], [], []
    w_off = s_off = lut_off = 0
    last = len(net.layers) - 1
    for i, layer in enumerate(net.layers):
        if isinstance(layer, Flatten):
            continue
        shape_in, shape_out = shapes[i], shapes[i + 1]
        if len(shape_in) == 1:  # keys still carry (c, y, x) of the map before the Flatten(s)
            j = i
            while j > 0 and isinstance(net.layers[j - 1], Flatten):
                j -= 1
            shape_in = shapes[j]
        row = np.zeros(N_COLUMNS, dtype=np.int64)
        ci, hi, wi = (shape_in + (1, 1))[:3] if len(shape_in) == 1 else shape_in
        co, ho, wo = (shape_out + (1, 1))[:3] if len(shape_out) == 1 else shape_out
        row[[K_IC, K_IH, K_IW, K_OC, K_OH, K_OW]] = [ci, hi, wi, co, ho, wo]
        row[[K_KH, K_KW, K_SH, K_SW]] = [1, 1, 1, 1]
        if isinstance(layer, (SumPool, Conv)):
            if isinstance(layer, SumPool):
                (kh, kw), (sh, sw), (ph, pw) = layer.kernel, layer.stride, (0, 0)
            else:
                (kh, kw), (sh, sw), (ph, pw) = layer.weight.shape[2:], layer.stride, layer.padding
            row[[K_KH, K_KW, K_SH, K_SW, K_PH, K_PW, K_LUT]] = [kh, kw, sh, sw, ph, pw, lut_off]
            table = np.concatenate([_footprint_table(hi, ho, kh, sh, ph).ravel(),
                                    _footprint_table(wi, wo, kw, sw, pw).ravel()])
            tables.append(table)
            lut_off += table.size
        if isinstance(layer, SumPool):
            row[K_KIND] = POOL
            row[K_NEURON] = -1
        else:
            if isinstance(layer, Conv):
                row[K_KIND] = CONV
                w = layer.weight.transpose(1, 2, 3, 0)  # [ci, kh, kw, co]: contiguous fan-out per tap
            else:
                row[K_KIND] = LINEAR
                w = layer.weight.T  # [in, out]: contiguous fan-out
            row[K_WOFF], row[K_SOFF], row[K_NEURON] = w_off, s_off, len(neurons)
            views.append((w_off, w))
            w_off += w.size
            s_off += int(np.prod(shape_out))
            neurons.append(_neuron_row(net.output_neuron if i == last else layer.neuron))
            out_shapes.append(tuple(shape_out))
        rows.append(row)
    weights = np.empty(w_off, dtype=np.float32)  # EventNet weights are float32: copied exactly
    for off, w in views:
        np.copyto(weights[off:off + w.size].reshape(w.shape), w)
    return CompiledNet(
        ops=np.stack(rows), lut=np.concatenate(tables) if tables else np.zeros(1, dtype=np.int64),
        weights=weights, neurons=np.asarray(neurons, dtype=np.float64),
        n_state=s_off, shapes=out_shapes, input_shape=tuple(net.input_shape),
    )


# ---- the kernel ----------------------------------------------------------------------------
# A queued spike is one int64 key (channel << 32) | (row << 16) | column: decoding takes shifts,
# not divisions, and keys order like flat (channel, row, column) indices. A flat map (Linear
# output) uses (index << 32). Every delivery is two passes over each contiguous run of targets:
# add + clip (vectorised, no branch), then, only for a run where some neuron reached v_th, a
# scan that fires and resets. One addition per neuron per delivery either way, so the floats
# match the oracle exactly. Runs are sorted by channel; a conv delivery's runs (one per output
# position, ascending) are merged into flat order before the spikes are queued (rule 4).
_MAX_SIDE = 1 << 16
OVERFLOW, GROW_QUEUE, GROW_LOG = 1, 2, 3  # kernel status codes (0: done)
ZERO, ONE = np.int64(0), np.int64(1)  # non-literal ints for helper calls (one compiled version each)
QUEUE_START, LOG_START = 1 << 14, 1 << 14  # first room per queue row / log; doubled when short
_JIT = dict(cache=True, nogil=True, error_model="numpy")  # numpy error model: no zero-division checks


@numba.njit(**_JIT)
def _add_clip(u, u_off, w, w_off, n, v_min, v_th):
    """``u[u_off + k] += w[w_off + k]`` then clip at v_min, k < n; True if some neuron reached v_th.

    Unsigned indices: numba then skips the negative-index wraparound, and the loop vectorises.
    """
    u_off = np.uint64(u_off)
    w_off = np.uint64(w_off)
    hit = False
    for k in range(np.uint64(n)):
        v = u[u_off + k] + w[w_off + k]
        v = v_min if v < v_min else v
        u[u_off + k] = v
        hit |= v >= v_th
    return hit


@numba.njit(**_JIT)
def _leak_add_clip(u, t_last, u_off, w, w_off, n, v_min, v_th, t, tau):
    """Lazy leak since each neuron's last update, then add and clip (rule 3); True if some reached v_th."""
    u_off = np.uint64(u_off)
    w_off = np.uint64(w_off)
    hit = False
    for k in range(np.uint64(n)):
        v = u[u_off + k] * math.exp(-(t - t_last[u_off + k]) / tau)
        t_last[u_off + k] = t
        v = v + w[w_off + k]
        v = v_min if v < v_min else v
        u[u_off + k] = v
        hit |= v >= v_th
    return hit


@numba.njit(**_JIT)
def _add_scores(scores, base, stride, w, w_off, n):
    """Readout: scores[base + k * stride] += w[w_off + k] (scores are flat (channel, row, column))."""
    for k in range(n):
        scores[base + k * stride] += w[w_off + k]


@numba.njit(**_JIT)
def _fire(u, u_off, n_run, v_th, multi, hard, key_base, fired_key, fired_n, nf):
    """Fire and reset every neuron u[u_off + k] (k < n_run) at or above v_th; append (key, spikes)
    in channel order to row 0 of fired_key / fired_n, key = key_base + (k << 32). Returns the new nf."""
    for k in range(n_run):
        i = np.uint64(u_off + k)
        v = u[i]
        if v >= v_th:
            n = int(math.floor(v / v_th)) if multi else 1
            u[i] = 0.0 if hard else v - n * v_th
            fired_key[0, nf] = key_base + (k << 32)
            fired_n[0, nf] = n
            nf += 1
    return nf


@numba.njit(**_JIT)
def _merge_runs(key, count, runs, n_runs, nf):
    """Merge n_runs ascending runs of row 0 of key / count (run r: [runs[0, r], runs[1, r]))
    into row 1, in ascending key order; consumes runs[0]."""
    for f in range(nf):
        best = -1
        best_key = 0
        for r in range(n_runs):
            h = runs[0, r]
            if h < runs[1, r] and (best < 0 or key[0, h] < best_key):
                best = r
                best_key = key[0, h]
        key[1, f] = best_key
        count[1, f] = count[0, runs[0, best]]
        runs[0, best] += 1


@numba.njit(**_JIT)
def _run_sample(keys, times, ops, lut, weights, neurons, record, max_queue, u, t_last,
                scores, out_spikes, layer_spikes, layer_synops):
    """Run one sample (rules in the module docstring); every array after max_queue is output
    and is zeroed first.

    keys: int64 [n_events] packed input spikes; times: float64 [n_events], sorted.
    u: float64 [n_state], the final membranes (conv layers [H, W, C]); t_last: float64
    [n_state] (last update times) if some layer leaks, else any size.
    Returns (first decision event, settle event, decision, status, log): status OVERFLOW if a
    layer would emit more than max_queue spikes in one cascade; log int64 [3, n] rows
    (layer, event, flat neuron) with record, else empty.
    If the queue or the log fills up, the sample runs again from the start with twice the room:
    the core then never replaces an array inside its loops (numba would reference-count such
    an array on every iteration, which cost more than the work on a small net).
    """
    max_targets = 1
    max_runs = 1
    for op in range(ops.shape[0]):
        max_targets = max(max_targets, ops[op, K_OC] * ops[op, K_KH] * ops[op, K_KW])
        max_runs = max(max_runs, ops[op, K_KH] * ops[op, K_KW])
    fired_key = np.empty((2, max_targets), dtype=np.int64)  # one delivery's spikes: run by run, flat order
    fired_n = np.empty((2, max_targets), dtype=np.int64)
    runs = np.empty((2, max_runs), dtype=np.int64)  # head and end of each run
    queue_size = min(QUEUE_START, max_queue)
    log_size = LOG_START if record else 1
    while True:
        u[:] = 0.0
        t_last[:] = 0.0
        queue = np.empty((2, queue_size), dtype=np.int64)
        log = np.empty((3, log_size), dtype=np.int64)
        scores[:] = 0.0
        out_spikes[:] = 0
        layer_spikes[:] = 0
        layer_synops[:] = 0
        status, need, first, settle, decision, n_log = _run_core(
            keys, times, ops, lut, weights, neurons, record, max_queue, u, t_last, queue, log, fired_key, fired_n,
            runs, scores, out_spikes, layer_spikes, layer_synops)
        if status == GROW_QUEUE:
            queue_size = min(max(2 * queue_size, need), max_queue)
        elif status == GROW_LOG:
            log_size = max(2 * log_size, need)
        else:
            return first, settle, decision, status, log[:, :n_log]


@numba.njit(**_JIT)
def _run_core(keys, times, ops, lut, weights, neurons, record, max_queue, u, t_last, queue, log, fired_key, fired_n,
              runs, scores, out_spikes, layer_spikes, layer_synops):
    """The event loop of :func:`_run_sample` on preallocated buffers (none is ever replaced).

    Returns (status, room needed, first decision event, settle event, decision, log length).
    """
    n_ops = ops.shape[0]
    n_out = ops[n_ops - 1, K_OC] * ops[n_ops - 1, K_OH] * ops[n_ops - 1, K_OW]
    a = 0  # queue row being read; the other row is being filled (no array swap)
    n_log = 0
    first_decision = -1
    settle = -1
    decision = -1
    mask = (1 << 16) - 1
    for e in range(keys.size):
        t = times[e]
        queue[a, 0] = keys[e]
        n_cur = 1
        readout_touched = False
        for op in range(n_ops):
            kind = ops[op, K_KIND]
            ih = ops[op, K_IH]
            iw = ops[op, K_IW]
            oc = ops[op, K_OC]
            oh = ops[op, K_OH]
            ow = ops[op, K_OW]
            lb = ops[op, K_LUT]
            b = 1 - a
            n_nxt = 0
            if kind == POOL:
                for q in range(n_cur):
                    s = queue[a, q]
                    c = s >> 32
                    y = (s >> 16) & mask
                    x = s & mask
                    lo_x = lut[lb + 2 * ih + x]
                    hi_x = lut[lb + 2 * ih + iw + x]
                    for oy in range(lut[lb + y], lut[lb + ih + y] + 1):
                        for ox in range(lo_x, hi_x + 1):
                            if n_nxt == queue.shape[1]:
                                status = OVERFLOW if n_nxt >= max_queue else GROW_QUEUE
                                return status, n_nxt + 1, first_decision, settle, decision, n_log
                            queue[b, n_nxt] = (c << 32) | (oy << 16) | ox
                            n_nxt += 1
            else:
                li = ops[op, K_NEURON]
                is_readout = op == n_ops - 1
                v_th = neurons[li, 0]
                v_min = neurons[li, 1]
                multi = neurons[li, 2] != 0.0
                hard = neurons[li, 3] != 0.0
                tau = neurons[li, 4]
                kh = ops[op, K_KH]
                kw = ops[op, K_KW]
                sh = ops[op, K_SH]
                sw = ops[op, K_SW]
                ph = ops[op, K_PH]
                pw = ops[op, K_PW]
                w_off = ops[op, K_WOFF]
                s_off = ops[op, K_SOFF]
                ohw = oh * ow
                synops = 0
                for q in range(n_cur):
                    s = queue[a, q]
                    c = s >> 32
                    y = (s >> 16) & mask
                    x = s & mask
                    nf = ZERO  # (typed int64: a literal 0 here would compile the helpers twice)
                    n_runs = ZERO
                    if kind == CONV:
                        lo_y = lut[lb + y]
                        hi_y = lut[lb + ih + y]
                        lo_x = lut[lb + 2 * ih + x]
                        hi_x = lut[lb + 2 * ih + iw + x]
                        if lo_y > hi_y or lo_x > hi_x:
                            continue
                        synops += oc * (hi_y - lo_y + 1) * (hi_x - lo_x + 1)
                        for oy in range(lo_y, hi_y + 1):
                            ky = y + ph - oy * sh
                            for ox in range(lo_x, hi_x + 1):
                                kx = x + pw - ox * sw
                                wb = w_off + ((c * kh + ky) * kw + kx) * oc
                                ub = s_off + (oy * ow + ox) * oc
                                if tau > 0.0:
                                    hit = _leak_add_clip(u, t_last, ub, weights, wb, oc, v_min, v_th, t, tau)
                                else:
                                    hit = _add_clip(u, ub, weights, wb, oc, v_min, v_th)
                                if is_readout:
                                    _add_scores(scores, oy * ow + ox, ohw, weights, wb, oc)
                                if hit:
                                    runs[0, n_runs] = nf
                                    nf = _fire(u, ub, oc, v_th, multi, hard, (oy << 16) | ox, fired_key, fired_n, nf)
                                    runs[1, n_runs] = nf
                                    n_runs += 1
                    else:
                        wb = w_off + ((c * ih + y) * iw + x) * oc  # flat input index * oc
                        synops += oc
                        if tau > 0.0:
                            hit = _leak_add_clip(u, t_last, s_off, weights, wb, oc, v_min, v_th, t, tau)
                        else:
                            hit = _add_clip(u, s_off, weights, wb, oc, v_min, v_th)
                        if is_readout:
                            _add_scores(scores, ZERO, ONE, weights, wb, oc)
                        if hit:
                            nf = _fire(u, s_off, oc, v_th, multi, hard, ZERO, fired_key, fired_n, ZERO)
                    if is_readout:
                        readout_touched = True
                    if nf == 0:
                        continue
                    row = 0
                    if n_runs > 1:
                        _merge_runs(fired_key, fired_n, runs, n_runs, nf)
                        row = 1
                    for f in range(nf):
                        key = fired_key[row, f]
                        n = fired_n[row, f]
                        layer_spikes[li] += n
                        flat = ((key >> 32) * oh + ((key >> 16) & mask)) * ow + (key & mask)
                        if is_readout:
                            out_spikes[flat] += n
                        else:
                            if n_nxt + n > queue.shape[1]:
                                status = OVERFLOW if n_nxt + n > max_queue else GROW_QUEUE
                                return status, n_nxt + n, first_decision, settle, decision, n_log
                            for r in range(n):
                                queue[b, n_nxt + r] = key
                            n_nxt += n
                        if record:
                            if n_log + n > log.shape[1]:
                                return GROW_LOG, n_log + n, first_decision, settle, decision, n_log
                            for r in range(n):
                                log[0, n_log + r] = li
                                log[1, n_log + r] = e
                                log[2, n_log + r] = flat
                            n_log += n
                layer_synops[li] += synops
            # the queue just filled becomes the next op's input, in arrival (FIFO) order
            a = b
            n_cur = n_nxt
            if n_cur == 0:
                break
        if readout_touched:
            state = -1  # argmax with lowest index on ties; -1 while every score is zero
            for j in range(n_out):
                if scores[j] != 0.0:
                    state = 0
                    break
            if state == 0:
                best = scores[0]
                for j in range(1, n_out):
                    if scores[j] > best:
                        best = scores[j]
                        state = j
            if state != decision:
                decision = state
                settle = e
                if first_decision == -1 and state != -1:
                    first_decision = e
    return 0, 0, first_decision, settle, decision, n_log


@numba.njit(**_JIT)
def _leaks(neurons):
    """True if some layer's neuron has a leak (tau > 0): then last-update times are kept."""
    for li in range(neurons.shape[0]):
        if neurons[li, 4] > 0.0:
            return True
    return False


@numba.njit(**_JIT)
def _run_batch(keys, times, offsets, samples, ops, lut, weights, neurons, n_state, record, max_queue,
               scores, out_spikes, layer_spikes, layer_synops, info):
    """Run the listed samples (events keys[offsets[b]:offsets[b + 1]]) into row b of the outputs.

    info int64 [n_samples, 4]: first decision event, settle event, decision, status. Stops at the
    first sample whose status is not 0. The membrane state is allocated once per call.
    """
    u = np.empty(n_state)
    t_last = np.empty(n_state if _leaks(neurons) else 1)
    for i in range(samples.size):
        b = samples[i]
        lo = offsets[b]
        hi = offsets[b + 1]
        first, settle, decision, status, _ = _run_sample(
            keys[lo:hi], times[lo:hi], ops, lut, weights, neurons, record, max_queue, u, t_last,
            scores[b], out_spikes[b], layer_spikes[b], layer_synops[b])
        info[b, 0] = first
        info[b, 1] = settle
        info[b, 2] = decision
        info[b, 3] = status
        if status != 0:
            return


# ---- input checks ---------------------------------------------------------------------------
def check_sensor_size(sensor_size: Any) -> tuple[int, int, int]:
    """Return ``(W, H, P)`` from a Tonic-style sensor size, or raise InputError."""
    try:
        values = tuple(sensor_size)
        ok = len(values) == 3 and all(float(v) == int(v) and int(v) >= 1 for v in values)
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise InputError(f"sensor_size must be Tonic-style (width, height, polarities) of positive ints, got {sensor_size!r}")
    return tuple(int(v) for v in values)  # type: ignore[return-value]


def check_events(events: Any, sensor_size: Sequence[int], name: str = "events") -> np.ndarray:
    """Validate one event stream and return it sorted by ``t`` (stable sort; a copy only if needed).

    Expected form: a 1-D numpy structured array with integer fields ``x, y, p`` (``p`` may be
    bool) and an integer or float field ``t``, with ``0 <= x < W``, ``0 <= y < H``,
    ``0 <= p < P`` for ``sensor_size = (W, H, P)``.
    """
    form = "a 1-D numpy structured array with fields x, y, t, p (Tonic style)"
    if not isinstance(events, np.ndarray) or events.dtype.names is None:
        raise InputError(f"{name} must be {form}, got {type(events).__name__}")
    missing = [f for f in ("x", "y", "t", "p") if f not in events.dtype.names]
    if missing:
        raise InputError(f"{name} must be {form}; missing fields {missing} (has {list(events.dtype.names)})")
    if events.ndim != 1:
        raise InputError(f"{name} must be {form}, got shape {events.shape}")
    width, height, pols = sensor_size
    for f, size in (("x", width), ("y", height), ("p", pols)):
        col = events[f]
        if col.dtype.kind not in "iub":  # signed / unsigned integer or bool
            raise InputError(f"{name}['{f}'] must hold integers, got dtype {col.dtype}")
        if col.size:
            lo, hi = int(col.min()), int(col.max())
            if lo < 0 or hi >= size:
                bad = lo if lo < 0 else hi
                raise InputError(
                    f"{name}['{f}'] has value {bad} outside [0, {size}) given sensor_size (W, H, P) = {tuple(sensor_size)}"
                )
    t = events["t"]
    if t.dtype.kind not in "iuf":
        raise InputError(f"{name}['t'] must hold integer or float timestamps, got dtype {t.dtype}")
    if t.dtype.kind == "f" and not np.isfinite(t).all():
        raise InputError(f"{name}['t'] contains NaN or infinite timestamps")
    if t.size > 1 and bool((t[1:] < t[:-1]).any()):
        events = events[np.argsort(t, kind="stable")]
    return events


def _as_eventnet(model: Any) -> EventNet:
    if isinstance(model, EventNet):
        return model
    return EventNet.from_torch(model)


def _py_time(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value


# ---- public entry point ----------------------------------------------------------------------
def _pack_events(streams: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All streams as one array of packed input keys (p << 32 | y << 16 | x), float64 times and
    int64 offsets [n_streams + 1] (stream b is keys[offsets[b]:offsets[b + 1]])."""
    sizes = np.fromiter((s.size for s in streams), dtype=np.int64, count=len(streams))
    offsets = np.zeros(len(streams) + 1, dtype=np.int64)
    np.cumsum(sizes, out=offsets[1:])
    if len(streams) == 1:
        p, y, x, t = (streams[0][f] for f in ("p", "y", "x", "t"))
    else:
        p, y, x, t = (np.concatenate([s[f] for s in streams]) for f in ("p", "y", "x", "t"))
    keys = (p.astype(np.int64) << 32) | (y.astype(np.int64) << 16) | x.astype(np.int64)
    return keys, t.astype(np.float64), offsets


def _chunks(n: int, threads: int) -> list[np.ndarray]:
    """Sample ids in chunks of a few per kernel call: small enough to balance the threads, large
    enough that the per-call overhead stays negligible."""
    size = max(1, min(64, n // (4 * threads)))
    return [np.arange(i, min(i + size, n), dtype=np.int64) for i in range(0, n, size)]


def simulate(
    model: Any,
    events: Any,
    sensor_size: Sequence[int],
    num_threads: int | None = None,
    progress: bool = False,
    record_spikes: bool = False,
    max_queue: int = DEFAULT_MAX_QUEUE,
) -> SimulationResult | list[SimulationResult]:
    """Run the event-driven simulation of ``model`` on one event stream or a list of them.

    model: an :class:`EventNet` or a torch model accepted by :meth:`EventNet.from_torch`.
    events: a Tonic-style structured array (fields x, y, t, p) or a non-empty list of them,
        one per sample. sensor_size: Tonic-style ``(W, H, P)``; the input map is ``[P, H, W]``.
    num_threads: worker threads for a list (default: all cores). progress: show a tqdm bar.
    record_spikes: also return every spike in order (``spike_trace``) and final membranes
        (runs the samples one by one).
    max_queue: cap on the spikes one layer may emit in one input event's cascade.
    Returns one :class:`SimulationResult` for one stream, a list for a list. An empty stream
    gives zero scores, prediction -1 and ``empty=True``.
    The kernel is compiled on the first call in a process (seconds; numba caches it on disk,
    so later processes only load it).
    """
    sensor = check_sensor_size(sensor_size)
    single = isinstance(events, np.ndarray)
    if single:
        streams = [check_events(events, sensor)]
    else:
        if not isinstance(events, (list, tuple)):
            raise InputError(
                f"events must be a structured array with fields x, y, t, p or a list of them, got {type(events).__name__}"
            )
        if len(events) == 0:
            raise InputError("events is an empty list; expected at least one event stream (structured array x, y, t, p)")
        streams = [check_events(ev, sensor, name=f"events[{i}]") for i, ev in enumerate(events)]
    net = _as_eventnet(model)
    width, height, pols = sensor
    compiled = compile_net(net, (pols, height, width))
    if isinstance(max_queue, bool) or not isinstance(max_queue, (int, np.integer)) or max_queue < 16:
        raise InputError(f"max_queue must be an int >= 16, got {max_queue!r}")
    threads = num_threads if num_threads is not None else (os.cpu_count() or 1)
    if isinstance(threads, bool) or not isinstance(threads, (int, np.integer)) or threads < 1:
        raise InputError(f"num_threads must be a positive int or None, got {num_threads!r}")
    threads = min(int(threads), len(streams))

    n, n_w = len(streams), len(compiled.shapes)
    n_out = int(np.prod(compiled.shapes[-1]))
    scores = np.zeros((n, n_out))
    out_spikes = np.zeros((n, n_out), dtype=np.int64)
    layer_spikes = np.zeros((n, n_w), dtype=np.int64)
    layer_synops = np.zeros((n, n_w), dtype=np.int64)
    info = np.zeros((n, 4), dtype=np.int64)
    keys, times, offsets = _pack_events(streams)
    net_args = (compiled.ops, compiled.lut, compiled.weights, compiled.neurons, compiled.n_state)
    traces: list[Any] = [None] * n
    membranes: list[Any] = [None] * n

    def run_recorded(b: int) -> int:
        lo, hi = offsets[b], offsets[b + 1]
        u = np.empty(compiled.n_state)
        t_last = np.empty(compiled.n_state if (compiled.neurons[:, 4] > 0).any() else 1)
        first, settle, decision, status, log = _run_sample(
            keys[lo:hi], times[lo:hi], *net_args[:4], True, int(max_queue), u, t_last,
            scores[b], out_spikes[b], layer_spikes[b], layer_synops[b])
        info[b] = first, settle, decision, status
        traces[b] = [np.ascontiguousarray(log[1:, log[0] == li].T) for li in range(n_w)]
        membranes[b] = _unpack_membranes(u, compiled.shapes)
        return 1

    def run_chunk(samples: np.ndarray) -> int:
        _run_batch(keys, times, offsets, samples, *net_args, False, int(max_queue),
                   scores, out_spikes, layer_spikes, layer_synops, info)
        return samples.size

    jobs = [(run_recorded, b) for b in range(n)] if record_spikes else [(run_chunk, c) for c in _chunks(n, threads)]
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=n, desc="simulate", unit="sample")
    try:
        if threads == 1:
            for fn, arg in jobs:
                done = fn(arg)
                if bar is not None:
                    bar.update(done)
        else:
            with ThreadPoolExecutor(max_workers=threads) as pool:
                for future in [pool.submit(fn, arg) for fn, arg in jobs]:
                    done = future.result()
                    if bar is not None:
                        bar.update(done)
    finally:
        if bar is not None:
            bar.close()
    if info[:, 3].any():
        raise SimulationError(
            f"an input event's cascade emitted more than max_queue={max_queue} spikes in one layer; the "
            "network's activity runs away (weights too large?) or raise max_queue"
        )
    results = []
    for b, stream in enumerate(streams):
        first, settle, decision, _ = (int(v) for v in info[b])
        t = stream["t"]
        results.append(SimulationResult(
            scores=scores[b], prediction=decision, output_spikes=out_spikes[b], layer_spikes=layer_spikes[b],
            layer_synops=layer_synops[b], synops=int(layer_synops[b].sum()), num_events=int(stream.size),
            empty=stream.size == 0,
            first_decision_time=None if first < 0 else _py_time(t[first]),
            decision_settle_time=None if settle < 0 or decision < 0 else _py_time(t[settle]),
            spike_trace=traces[b], membranes=membranes[b],
        ))
    return results[0] if single else results


def _unpack_membranes(u: np.ndarray, shapes: list[tuple[int, ...]]) -> list[np.ndarray]:
    """Split the kernel's state into one membrane array per weighted layer, in the layer's shape."""
    offsets = np.cumsum([0] + [int(np.prod(s)) for s in shapes])
    out = []
    for i, shape in enumerate(shapes):
        segment = u[offsets[i]:offsets[i + 1]]
        if len(shape) == 3:  # conv membranes are stored [H, W, C] in the kernel
            segment = segment.reshape(shape[1], shape[2], shape[0]).transpose(2, 0, 1)
        out.append(np.ascontiguousarray(segment.reshape(shape)))
    return out
