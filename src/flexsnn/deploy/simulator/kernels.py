"""Numba kernels of the event-driven simulator (the rules: ``docs/event_driven.md``).

Flat on purpose: one kernel runs any stack of layers encoded as flat arrays by
:mod:`flexsnn.deploy.simulator.compile` (an op table, footprint and fan-out tables, one weight
vector), so numba compiles it once per process (cached on disk) whatever the network.

How it runs. Layer by layer over blocks of events: the first op takes a block of input events
and lists every spike it emits, tagged with the input event that caused it; the next op takes
that list, and so on to the readout. There is no feedback, so every layer receives exactly the
spike sequence that event-by-event processing gives it (rule 5), each spike with its event's
time (for the leak); the readout re-evaluates the decision at the end of each event's spikes,
as after each cascade. Working a whole block through one layer keeps that layer's membranes
and weights in cache and its loop tight.

One layer pass is two steps: :func:`deliver` adds a block's spikes into the layer and lists
the neurons that fire, per input spike; :func:`emit` turns that list into the next layer's
spike list (and the log). Deliver works on a range of output channels, so the threads can
share one sample's wide layers, each on its own channels (:mod:`flexsnn.deploy.simulator.threads`);
otherwise one thread runs whole samples: a chunk of samples is one kernel call
(``nogil=True``) on a thread pool, with its own membrane state and spike lists, allocated once
per call.

Spikes are packed (channel, row, column) keys. A conv spike walks its input position's
precomputed fan-out list (output positions in descending order, i.e. kernel taps ascending, so
the spike's weights are read as one forward stream; no footprint arithmetic); each output
position is one contiguous run of membranes (conv membranes are kept [H, W, C], so the run is
the channel axis) that gets its weights added in a vectorised pass that also counts the
neurons at threshold; only runs with such neurons are scanned to fire, and the fired runs are
merged into flat order (no sort, no allocation per delivery). Float64 membranes, one addition
per neuron per delivery in the oracle's order (the order of the positions does not matter: no
neuron is in two of them): without leak the results are bit-identical to
:mod:`flexsnn.deploy.reference` (with a leak, up to exp's last bit).
"""

from __future__ import annotations

import math

import numba
import numpy as np

POOL, CONV, LINEAR = 0, 1, 2
# columns of the op table: kind, input map (c, h, w), output map (c, h, w), conv kernel (h, w), weight offset,
# membrane offset, neuron row, pool footprint table offset, conv fan-out: entries per position, entries offset,
# per-position counts offset
(K_KIND, K_IC, K_IH, K_IW, K_OC, K_OH, K_OW, K_KH, K_KW, K_WOFF, K_SOFF, K_NEURON, K_LUT, K_F, K_FAN, K_FCNT) = range(
    16
)
N_COLUMNS = 16
FAN_COLUMNS = 3  # weight tap, spike key, output position (see compile._fan_table)

# A queued spike is one int64 key (channel << 32) | (row << 16) | column: decoding takes shifts,
# not divisions, and keys order like flat (channel, row, column) indices. A flat map (Linear
# output) uses (index << 32). The innermost loops index with unsigned ints (numba then skips
# the negative-index wraparound and the loops vectorise); unsigned and signed ints are never
# mixed in one expression (numba would make it a float).
MAX_SIDE = 1 << 16
OVERFLOW, GROW_QUEUE, GROW_LOG = 1, 2, 3  # kernel status codes (0: done)
QUEUE_START, LOG_START = 1 << 14, 1 << 14  # first room per spike list / log; doubled when short
BLOCK_EVENTS = 2048  # input events worked through one layer at a time (QUEUE_START must hold them)
SCAN_BLOCK = 32  # neurons counted at once when looking for those at threshold
# typed constants for helper arguments: a literal (0, False) would make numba compile a second version
ZERO, ONE, NO, YES = np.int64(0), np.int64(1), np.bool_(False), np.bool_(True)
_JIT = {"cache": True, "nogil": True, "error_model": "numpy"}  # numpy error model: no zero-division checks


@numba.njit(inline="always", **_JIT)
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
def buffer_sizes(ops):
    """(fired spikes one delivery can produce, output positions one conv delivery can reach)."""
    max_targets = 1
    max_runs = 1
    for op in range(ops.shape[0]):
        if ops[op, K_KIND] == CONV:
            max_targets = max(max_targets, ops[op, K_OC] * ops[op, K_F])
            max_runs = max(max_runs, ops[op, K_F])
        elif ops[op, K_KIND] == LINEAR:
            max_targets = max(max_targets, ops[op, K_OC])
    return max_targets, max_runs


@numba.njit(inline="always", **_JIT)
def _fire_run(u, ub, oc, at_th, v_th, multi, hard, key_base, fired_key, fired_n, nf):
    """Fire and reset the at_th neurons at or above v_th among u[ub:ub + oc], in channel order;
    append (key_base + (channel << 32), spikes) to row 0 of fired_key / fired_n from nf on.

    Blocks of SCAN_BLOCK neurons are counted first (a vectorised pass) and only blocks holding
    such neurons are walked one by one; the scan stops once at_th neurons have fired.
    Returns the new nf.
    """
    start = 0
    while at_th > 0:
        end = min(start + SCAN_BLOCK, oc)
        in_block = 0
        for k in range(ub + np.uint64(start), ub + np.uint64(end)):
            in_block += u[k] >= v_th
        if in_block > 0:
            for k in range(start, end):
                i = ub + np.uint64(k)
                v = u[i]
                if v >= v_th:
                    n = int(math.floor(v / v_th)) if multi else 1
                    u[i] = 0.0 if hard else v - n * v_th
                    fired_key[0, nf] = key_base + (k << 32)
                    fired_n[0, nf] = n
                    nf += 1
            at_th -= in_block
        start = end
    return nf


@numba.njit(inline="always", **_JIT)
def _note_decision(scores, n_out, last_e, st):
    """After event last_e's spikes reached the readout: record a change of the decision in st
    (first decision event, settle event, decision)."""
    state = _decision(scores, n_out)
    if state != st[2]:
        st[2] = state
        st[1] = last_e
        if st[0] == -1 and state != -1:
            st[0] = last_e


@numba.njit(**_JIT)
def load_block(keys, e0, spikes, tags):
    """Input events keys[e0:e0 + BLOCK_EVENTS] as spike list 0 (each tagged with its event);
    returns their number."""
    n_cur = min(BLOCK_EVENTS, keys.size - e0)
    for q in range(n_cur):
        spikes[0, q] = keys[e0 + q]
        tags[0, q] = e0 + q
    return n_cur


@numba.njit(inline="always", **_JIT)
def pool_pass(op, ops, tables, spikes, tags, a, n_cur, max_queue):
    """Route spike list a (n_cur spikes) through pooling op into list 1 - a.
    Returns (status, room needed, spikes in the new list)."""
    ih = ops[op, K_IH]
    iw = ops[op, K_IW]
    lb = ops[op, K_LUT]
    mask = (1 << 16) - 1
    b = 1 - a
    room = spikes.shape[1]
    n_nxt = 0
    cascade = 0  # spikes emitted for the current input event (max_queue)
    last_e = -1
    for q in range(n_cur):
        s = spikes[a, q]
        e = tags[a, q]
        if e != last_e:
            last_e = e
            cascade = 0
        c = s >> 32
        y = (s >> 16) & mask
        x = s & mask
        lo_x = tables[lb + 2 * ih + x]
        hi_x = tables[lb + 2 * ih + iw + x]
        for oy in range(tables[lb + y], tables[lb + ih + y] + 1):
            for ox in range(lo_x, hi_x + 1):
                cascade += 1
                if cascade > max_queue:
                    return OVERFLOW, cascade, n_nxt
                if n_nxt == room:
                    return GROW_QUEUE, 2 * room, n_nxt
                spikes[b, n_nxt] = (c << 32) | (oy << 16) | ox
                tags[b, n_nxt] = e
                n_nxt += 1
    return 0, 0, n_nxt


@numba.njit(inline="always", **_JIT)
def deliver(
    op,
    ops,
    tables,
    weights,
    neurons,
    times,
    spikes,
    tags,
    a,
    n_cur,
    k_lo,
    k_hi,
    run_base,
    run_stride,
    w_base,
    w_stride,
    max_queue,
    u,
    t_last,
    fired_key,
    fired_n,
    runs,
    out_key,
    out_n,
    out_q,
    scores,
    st,
):
    """Deliver spike list a (n_cur spikes) to the output channels [k_lo, k_hi) of weighted op:
    add the weights, fire and reset. Where this range's values lie: a conv position's membranes
    at u[s_off + run_base + position * run_stride + k], k in [k_lo, k_hi); a conv tap's weights
    of input channel c at weights[w_off + w_base + (c * kh * kw + tap) * w_stride + k], a linear
    input's at weights[w_off + w_base + input * w_stride + k]. The kernel's own layout (conv
    membranes [H, W, C], weights [ci, kh, kw, co] / [in, out]) is 0, C, 0, C;
    :mod:`~flexsnn.deploy.simulator.threads` gives each range blocks of its own. Each input spike's fired neurons go to out_key / out_n
    (key, spikes) in flat order, out_q the input spike of each; channel ranges never
    share a neuron, so several ranges can be delivered at once on different threads.
    The readout (the last op) takes all its channels in one range: it also follows the decision
    (st: first decision event, settle event, decision).
    Returns (status, room needed, synaptic operations, fired neurons listed); status OVERFLOW when the range alone
    emits more than max_queue spikes for one input event, GROW_QUEUE when out_key is full.
    """
    n_ops = ops.shape[0]
    n_out = ops[n_ops - 1, K_OC] * ops[n_ops - 1, K_OH] * ops[n_ops - 1, K_OW]
    ih = ops[op, K_IH]
    iw = ops[op, K_IW]
    oc = ops[op, K_OC]
    u_lo = np.uint64(k_lo)
    u_hi = np.uint64(k_hi)
    width = k_hi - k_lo
    ohw = ops[op, K_OH] * ops[op, K_OW]
    li = ops[op, K_NEURON]
    is_readout = op == n_ops - 1
    v_th = neurons[li, 0]
    v_min = neurons[li, 1]
    multi = neurons[li, 2] != 0.0
    hard = neurons[li, 3] != 0.0
    tau = neurons[li, 4]
    leaky = tau > 0.0
    w_off = ops[op, K_WOFF]
    s_off = ops[op, K_SOFF]
    fan = ops[op, K_F]
    fan_off = ops[op, K_FAN]
    cnt_off = ops[op, K_FCNT]
    channel_block = ops[op, K_KH] * ops[op, K_KW] * w_stride
    w_start = w_off + w_base
    is_conv = ops[op, K_KIND] == CONV
    mask = (1 << 16) - 1
    room = out_key.size
    channel_base = k_lo << 32
    synops = 0
    n_f = 0
    cascade = 0
    last_e = -1
    for q in range(n_cur):
        s = spikes[a, q]
        e = tags[a, q]
        if e != last_e:
            if is_readout and last_e >= 0:  # the previous event's cascade is complete
                _note_decision(scores, n_out, last_e, st)
            last_e = e
            cascade = 0
        t = times[e]
        c = s >> 32
        y = (s >> 16) & mask
        x = s & mask
        nf = ZERO
        n_runs = ZERO
        if is_conv:
            p = y * iw + x
            n_pos = tables[cnt_off + p]
            synops += n_pos * width
            entry = fan_off + p * fan * FAN_COLUMNS
            w_chan = w_start + c * channel_block
            for _ in range(n_pos):
                pos = tables[entry + 2]
                ub = np.uint64(s_off + run_base + pos * run_stride)
                wb = np.uint64(w_chan + tables[entry] * w_stride)
                at_th = 0
                if leaky:
                    for k in range(u_lo, u_hi):
                        v = u[ub + k] * math.exp(-(t - t_last[ub + k]) / tau)
                        t_last[ub + k] = t
                        v = v + weights[wb + k]
                        v = v_min if v < v_min else v
                        u[ub + k] = v
                        at_th += v >= v_th
                else:
                    for k in range(u_lo, u_hi):
                        v = u[ub + k] + weights[wb + k]
                        v = v_min if v < v_min else v
                        u[ub + k] = v
                        at_th += v >= v_th
                if is_readout:
                    for k in range(oc):
                        scores[pos + k * ohw] += weights[wb + np.uint64(k)]
                if at_th > 0:
                    runs[0, n_runs] = nf
                    nf = _fire_run(
                        u,
                        ub + u_lo,
                        width,
                        at_th,
                        v_th,
                        multi,
                        hard,
                        tables[entry + 1] + channel_base,
                        fired_key,
                        fired_n,
                        nf,
                    )
                    runs[1, n_runs] = nf
                    n_runs += 1
                entry += FAN_COLUMNS
        else:
            ub = np.uint64(s_off)
            wb = np.uint64(w_start + ((c * ih + y) * iw + x) * w_stride)  # flat input index
            synops += width
            at_th = 0
            if leaky:
                for k in range(u_lo, u_hi):
                    v = u[ub + k] * math.exp(-(t - t_last[ub + k]) / tau)
                    t_last[ub + k] = t
                    v = v + weights[wb + k]
                    v = v_min if v < v_min else v
                    u[ub + k] = v
                    at_th += v >= v_th
            else:
                for k in range(u_lo, u_hi):
                    v = u[ub + k] + weights[wb + k]
                    v = v_min if v < v_min else v
                    u[ub + k] = v
                    at_th += v >= v_th
            if is_readout:
                for k in range(np.uint64(oc)):
                    scores[k] += weights[wb + k]
            nf = _fire_run(u, ub + u_lo, width, at_th, v_th, multi, hard, channel_base, fired_key, fired_n, nf)
        if nf > 0:
            row = 0
            if n_runs > 1:
                _merge_runs(fired_key, fired_n, runs, n_runs, nf)
                row = 1
            if n_f + nf > room:
                return GROW_QUEUE, max(2 * room, n_f + nf), synops, n_f
            for f in range(nf):
                out_key[n_f + f] = fired_key[row, f]
                out_n[n_f + f] = fired_n[row, f]
                out_q[n_f + f] = q
                cascade += fired_n[row, f]
            n_f += nf
            if cascade > max_queue and not is_readout:
                return OVERFLOW, cascade, synops, n_f
    if is_readout and last_e >= 0:  # the block's last event that reached the readout
        _note_decision(scores, n_out, last_e, st)
    return 0, 0, synops, n_f


@numba.njit(inline="always", **_JIT)
def emit(op, ops, spikes, tags, a, out_key, out_n, out_q, n_fired, max_queue, record, log, out_spikes, st):
    """The spikes weighted op fired for spike list a, gathered from the channel ranges of
    :func:`deliver` (row p of out_key / out_n / out_q: n_fired[p] neurons, ranges in channel
    order) input spike by input spike: into list 1 - a (or the readout's counts) in flat order,
    and into the log (layer, event, flat neuron) when record is set (st[3]: log length).
    Returns (status, room needed, spikes in the new list, spikes emitted)."""
    n_ops = ops.shape[0]
    oh = ops[op, K_OH]
    ow = ops[op, K_OW]
    li = ops[op, K_NEURON]
    is_readout = op == n_ops - 1
    mask = (1 << 16) - 1
    b = 1 - a
    room = spikes.shape[1]
    n_parts = n_fired.size
    heads = np.zeros(n_parts, dtype=np.int64)
    n_log = st[3]
    n_nxt = 0
    emitted = 0
    cascade = 0
    last_e = -1
    while True:
        part = -1  # the range holding the next input spike's first fired neurons
        q = 0
        for r in range(n_parts):
            h = heads[r]
            if h < n_fired[r] and (part < 0 or out_q[r, h] < q):
                part = r
                q = out_q[r, h]
        if part < 0:
            break
        e = tags[a, q]
        if e != last_e:
            last_e = e
            cascade = 0
        f = heads[part]
        while f < n_fired[part] and out_q[part, f] == q:
            key = out_key[part, f]
            n = out_n[part, f]
            f += 1
            emitted += n
            flat = ((key >> 32) * oh + ((key >> 16) & mask)) * ow + (key & mask)
            if is_readout:
                out_spikes[flat] += n
            else:
                cascade += n
                if cascade > max_queue:
                    return OVERFLOW, cascade, n_nxt, emitted
                if n_nxt + n > room:
                    return GROW_QUEUE, max(2 * room, n_nxt + n), n_nxt, emitted
                for r in range(n):
                    spikes[b, n_nxt + r] = key
                    tags[b, n_nxt + r] = e
                n_nxt += n
            if record:
                if n_log + n > log.shape[1]:
                    return GROW_LOG, max(2 * log.shape[1], n_log + n), n_nxt, emitted
                for r in range(n):
                    log[0, n_log + r] = li
                    log[1, n_log + r] = e
                    log[2, n_log + r] = flat
                n_log += n
        heads[part] = f
    st[3] = n_log
    return 0, 0, n_nxt, emitted


@numba.njit(inline="always", **_JIT)
def layer_pass(
    op,
    ops,
    tables,
    weights,
    neurons,
    times,
    spikes,
    tags,
    a,
    n_cur,
    max_queue,
    record,
    log,
    u,
    t_last,
    fired_key,
    fired_n,
    runs,
    out_key,
    out_n,
    out_q,
    scores,
    out_spikes,
    layer_spikes,
    layer_synops,
    st,
):
    """Spike list a through op on this thread (all channels at once): list 1 - a.
    Returns (status, room needed, spikes in the new list)."""
    if ops[op, K_KIND] == POOL:
        return pool_pass(op, ops, tables, spikes, tags, a, n_cur, max_queue)
    status, need, synops, n_f = deliver(
        op,
        ops,
        tables,
        weights,
        neurons,
        times,
        spikes,
        tags,
        a,
        n_cur,
        ZERO,
        ops[op, K_OC],
        ZERO,
        ops[op, K_OC],
        ZERO,
        ops[op, K_OC],
        max_queue,
        u,
        t_last,
        fired_key,
        fired_n,
        runs,
        out_key[0],
        out_n[0],
        out_q[0],
        scores,
        st,
    )
    if status != 0:
        return status, need, ZERO
    status, need, n_nxt, emitted = emit(
        op, ops, spikes, tags, a, out_key, out_n, out_q, np.full(1, n_f), max_queue, record, log, out_spikes, st
    )
    li = ops[op, K_NEURON]
    layer_synops[li] += synops
    layer_spikes[li] += emitted
    return status, need, n_nxt


@numba.njit(**_JIT)
def _run_core(
    keys,
    times,
    ops,
    tables,
    weights,
    neurons,
    record,
    max_queue,
    u,
    t_last,
    spikes,
    tags,
    log,
    fired_key,
    fired_n,
    runs,
    out_key,
    out_n,
    out_q,
    scores,
    out_spikes,
    layer_spikes,
    layer_synops,
    st,
):
    """One sample on preallocated buffers (none is ever replaced: numba would then
    reference-count it on every iteration), layer by layer over blocks of events on this
    thread. The state arrays must be zero on entry.

    spikes / tags int64 [2, room]: two spike lists (one read, one written), spike keys and the
    input event of each; out_key / out_n / out_q [1, room]: one layer's fired neurons.
    st int64 [4] (first decision event, settle event, decision, log length) is set here.
    Returns (status, room needed); status OVERFLOW when a layer emits more than max_queue
    spikes for one input event, GROW_QUEUE / GROW_LOG when a list or the log needs more room.
    """
    st[0] = st[1] = st[2] = -1
    st[3] = 0
    for e0 in range(0, keys.size, BLOCK_EVENTS):
        n_cur = load_block(keys, e0, spikes, tags)
        a = ZERO
        for op in range(ops.shape[0]):
            if n_cur == 0:
                break
            status, need, n_cur = layer_pass(
                op,
                ops,
                tables,
                weights,
                neurons,
                times,
                spikes,
                tags,
                a,
                n_cur,
                max_queue,
                record,
                log,
                u,
                t_last,
                fired_key,
                fired_n,
                runs,
                out_key,
                out_n,
                out_q,
                scores,
                out_spikes,
                layer_spikes,
                layer_synops,
                st,
            )
            if status != 0:
                return status, need
            a = 1 - a
    return 0, 0


@numba.njit(**_JIT)
def pack_streams(x, y, t, p, offsets, width, height, pols, keys, times, unsorted):
    """Check and pack the streams of one structured array in one pass (the rules of
    :func:`flexsnn.data.events.check_events`): stream b is rows offsets[b]:offsets[b + 1] of the
    fields x, y, t, p (any integer types; t integer or float).

    Writes keys (p << 32 | y << 16 | x), float64 times and, per stream, whether it is out of
    time order (unsorted; the caller sorts those). Returns False at the first value that
    breaks a rule (a coordinate out of range, a non-finite or beyond-int64 timestamp): the
    caller then words the error with check_events.
    """
    n = x.size
    lo_x = hi_x = lo_y = hi_y = lo_p = hi_p = 0
    if n:
        lo_x = hi_x = np.int64(x[0])
        lo_y = hi_y = np.int64(y[0])
        lo_p = hi_p = np.int64(p[0])
    # separate simple loops (no branch per value): the compiler keeps each one tight
    for i in range(n):
        xi = np.int64(x[i])  # a huge unsigned value wraps negative: the range check refuses it too
        yi = np.int64(y[i])
        pi = np.int64(p[i])
        lo_x, hi_x = min(lo_x, xi), max(hi_x, xi)
        lo_y, hi_y = min(lo_y, yi), max(hi_y, yi)
        lo_p, hi_p = min(lo_p, pi), max(hi_p, pi)
        keys[i] = (pi << 32) | (yi << 16) | xi
    for i in range(n):
        times[i] = np.float64(t[i])
    ok = lo_x >= 0 and hi_x < width and lo_y >= 0 and hi_y < height and lo_p >= 0 and hi_p < pols
    for i in range(n):
        ti = times[i]
        ok &= (ti - ti == 0.0) & (ti < 9223372036854775808.0)  # finite, below 2**63 (int64's range)
    for b in range(offsets.size - 1):
        in_order = True
        for i in range(offsets[b] + 1, offsets[b + 1]):
            in_order &= t[i] >= t[i - 1]
        unsorted[b] = not in_order
    return ok


@numba.njit(inline="always", **_JIT)
def _decision(scores, n_out):
    """argmax of the scores with the lowest index on ties; -1 while every score is zero."""
    state = -1
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
    return state


@numba.njit(**_JIT)
def clear_state(u, t_last, scores, out_spikes, layer_spikes, layer_synops):
    u[:] = 0.0
    t_last[:] = 0.0
    scores[:] = 0.0
    out_spikes[:] = 0
    layer_spikes[:] = 0
    layer_synops[:] = 0


@numba.njit(**_JIT)
def spike_lists(room, n_parts):
    """Two spike lists (keys, tags) of room spikes and n_parts rows of fired neurons (keys,
    counts, input spikes) of room each."""
    spikes = np.empty((2, room), dtype=np.int64)
    tags = np.empty((2, room), dtype=np.int64)
    out_key = np.empty((n_parts, room), dtype=np.int64)
    out_n = np.empty((n_parts, room), dtype=np.int64)
    out_q = np.empty((n_parts, room), dtype=np.int64)
    return spikes, tags, out_key, out_n, out_q


@numba.njit(**_JIT)
def run_sample(
    keys,
    times,
    offsets,
    b,
    ops,
    tables,
    weights,
    neurons,
    max_queue,
    u,
    t_last,
    scores,
    out_spikes,
    layer_spikes,
    layer_synops,
):
    """Run sample b (events keys[offsets[b]:offsets[b + 1]]) recording every spike, into row b
    of the outputs (the rules: docs/event_driven.md).

    keys: int64 packed input spikes; times: float64, sorted per sample.
    u: float64 [n_state], the final membranes (conv layers [H, W, C]); t_last: float64
    [n_state] (last update times) if some layer leaks, else any size.
    Returns (first decision event, settle event, decision, status, log): status OVERFLOW if a
    layer would emit more than max_queue spikes for one input event; log int64 [3, n] rows
    (layer, event, flat neuron), in emission order within each layer.
    If a spike list or the log fills up, the sample runs again from the start with more room.
    (The events are sliced here as in :func:`run_batch`, so both call one compiled core.)
    """
    lo = offsets[b]
    hi = offsets[b + 1]
    max_targets, max_runs = buffer_sizes(ops)
    fired_key = np.empty((2, max_targets), dtype=np.int64)  # one delivery's spikes: run by run, flat order
    fired_n = np.empty((2, max_targets), dtype=np.int64)
    runs = np.empty((2, max_runs), dtype=np.int64)  # head and end of each run
    st = np.empty(4, dtype=np.int64)
    room = np.int64(QUEUE_START)
    log_size = LOG_START
    while True:
        spikes, tags, out_key, out_n, out_q = spike_lists(room, ONE)
        log = np.empty((3, log_size), dtype=np.int64)
        clear_state(u, t_last, scores[b], out_spikes[b], layer_spikes[b], layer_synops[b])
        status, need = _run_core(
            keys[lo:hi],
            times[lo:hi],
            ops,
            tables,
            weights,
            neurons,
            YES,
            max_queue,
            u,
            t_last,
            spikes,
            tags,
            log,
            fired_key,
            fired_n,
            runs,
            out_key,
            out_n,
            out_q,
            scores[b],
            out_spikes[b],
            layer_spikes[b],
            layer_synops[b],
            st,
        )
        if status == GROW_QUEUE:
            room = need
        elif status == GROW_LOG:
            log_size = need
        else:
            return st[0], st[1], st[2], status, log[:, : st[3]]


@numba.njit(**_JIT)
def run_batch(
    keys,
    times,
    offsets,
    samples,
    ops,
    tables,
    weights,
    neurons,
    n_state,
    leaks,
    max_queue,
    scores,
    out_spikes,
    layer_spikes,
    layer_synops,
    info,
):
    """Run the listed samples (events keys[offsets[b]:offsets[b + 1]]) into row b of the outputs.

    info int64 [n_samples, 4]: first decision event, settle event, decision, status. Stops at the
    first sample whose status is not 0. State and buffers are allocated once per call (a
    sample that needs longer spike lists runs again with them, and later samples keep them).
    """
    u = np.empty(n_state)
    t_last = np.empty(n_state if leaks else 1)
    max_targets, max_runs = buffer_sizes(ops)
    fired_key = np.empty((2, max_targets), dtype=np.int64)
    fired_n = np.empty((2, max_targets), dtype=np.int64)
    runs = np.empty((2, max_runs), dtype=np.int64)
    log = np.empty((3, 1), dtype=np.int64)
    st = np.empty(4, dtype=np.int64)
    spikes, tags, out_key, out_n, out_q = spike_lists(np.int64(QUEUE_START), ONE)
    for i in range(samples.size):
        b = samples[i]
        lo = offsets[b]
        hi = offsets[b + 1]
        while True:
            clear_state(u, t_last, scores[b], out_spikes[b], layer_spikes[b], layer_synops[b])
            status, need = _run_core(
                keys[lo:hi],
                times[lo:hi],
                ops,
                tables,
                weights,
                neurons,
                NO,
                max_queue,
                u,
                t_last,
                spikes,
                tags,
                log,
                fired_key,
                fired_n,
                runs,
                out_key,
                out_n,
                out_q,
                scores[b],
                out_spikes[b],
                layer_spikes[b],
                layer_synops[b],
                st,
            )
            if status != GROW_QUEUE:
                break
            spikes, tags, out_key, out_n, out_q = spike_lists(need, ONE)
        info[b, 0] = st[0]
        info[b, 1] = st[1]
        info[b, 2] = st[2]
        info[b, 3] = status
        if status != 0:
            return
