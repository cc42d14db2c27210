"""Numba kernels of the event-driven simulator (the rules: ``docs/event_driven.md``).

Flat on purpose: one kernel runs any stack of layers encoded as flat arrays by
:mod:`flexsnn.deploy.simulator.compile` (an op table, footprint tables, one weight vector), so
numba compiles it once per process (cached on disk) whatever the network.

How it runs: a list of samples is cut into chunks; each chunk is one kernel call
(``nogil=True``) on a thread pool, with its own membrane state. Spikes travel as packed
(channel, row, column) keys; a delivery adds the weights to contiguous runs of membranes (conv
membranes are kept [H, W, C], so the run is the channel axis at one output position) in a
vectorised pass, then fires only the runs that reached threshold and merges them into flat
order (no sort, no allocation per delivery). Float64 membranes, one addition per neuron per
delivery in the oracle's order: without leak the results are bit-identical to
:mod:`flexsnn.deploy.reference` (with a leak, up to exp's last bit).
"""
from __future__ import annotations

import math

import numba
import numpy as np

POOL, CONV, LINEAR = 0, 1, 2
# columns of the op table
(K_KIND, K_IC, K_IH, K_IW, K_OC, K_OH, K_OW, K_KH, K_KW, K_SH, K_SW, K_PH, K_PW, K_WOFF, K_SOFF, K_NEURON,
 K_LUT) = range(17)
N_COLUMNS = 17

# A queued spike is one int64 key (channel << 32) | (row << 16) | column: decoding takes shifts,
# not divisions, and keys order like flat (channel, row, column) indices. A flat map (Linear
# output) uses (index << 32). Every delivery is two passes over each contiguous run of targets:
# add + clip (vectorised, no branch), then, only for a run where some neuron reached v_th, a
# scan that fires and resets. One addition per neuron per delivery either way, so the floats
# match the oracle exactly. Runs are sorted by channel; a conv delivery's runs (one per output
# position, ascending) are merged into flat order before the spikes are queued (rule 4).
MAX_SIDE = 1 << 16
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
def run_sample(keys, times, ops, lut, weights, neurons, record, max_queue, u, t_last,
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
    """The event loop of :func:`run_sample` on preallocated buffers (none is ever replaced).

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
def run_batch(keys, times, offsets, samples, ops, lut, weights, neurons, n_state, record, max_queue,
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
        first, settle, decision, status, _ = run_sample(
            keys[lo:hi], times[lo:hi], ops, lut, weights, neurons, record, max_queue, u, t_last,
            scores[b], out_spikes[b], layer_spikes[b], layer_synops[b])
        info[b, 0] = first
        info[b, 1] = settle
        info[b, 2] = decision
        info[b, 3] = status
        if status != 0:
            return
