"""How the simulator spreads its work over threads: whole samples, or one sample's neurons.

Two ways, both exact (every neuron gets the same additions in the same order):

- by samples: each thread takes the next chunk of samples and runs it with the compiled
  kernel (:func:`run_jobs`); the best use of the threads when samples are many and cheap;
- by neurons: the threads share one sample (:func:`run_split`). Each weighted layer's output
  channels are cut into one range per thread; a block of spikes is delivered to every range at
  once (no neuron is in two ranges), then this thread gathers the fired neurons in flat order
  for the next layer. A few hand-offs per layer and block: worth it when a sample's layers are
  wide and the samples are fewer than the threads (one live stream: its latency).
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

from flexsnn.deploy.simulator.compile import CompiledNet
from flexsnn.deploy.simulator.kernels import (
    BLOCK_EVENTS,
    CONV,
    GROW_LOG,
    GROW_QUEUE,
    K_IC,
    K_IH,
    K_IW,
    K_KH,
    K_KIND,
    K_KW,
    K_NEURON,
    K_OC,
    K_OH,
    K_OW,
    K_SOFF,
    K_WOFF,
    LOG_START,
    OVERFLOW,
    POOL,
    QUEUE_START,
    buffer_sizes,
    clear_state,
    deliver,
    emit,
    layer_pass,
    load_block,
    spike_lists,
)
from flexsnn.workers import run_parts

MIN_PART_CHANNELS = 16  # a layer is split only if each thread gets at least this many channels


def chunks(n: int, threads: int) -> list[np.ndarray]:
    """Sample ids in chunks of a few per kernel call: small enough to balance the threads
    (samples differ in cost), large enough that the per-call overhead stays negligible."""
    if threads == 1:
        return [np.arange(n, dtype=np.int64)]
    size = max(1, min(64, n // (4 * threads)))
    return [np.arange(i, min(i + size, n), dtype=np.int64) for i in range(0, n, size)]


def run_jobs(jobs: list, threads: int, bar: Any) -> None:
    """Run ``(fn, arg)`` jobs on ``threads`` threads (this one and pool workers), each taking
    the next job as it finishes one: one hand-off per thread, not one per job."""
    if threads == 1 or len(jobs) == 1:
        for fn, arg in jobs:
            done = fn(arg)
            if bar is not None:
                bar.update(done)
        return
    queue = iter(jobs)
    lock = threading.Lock()

    def worker() -> None:
        while True:
            with lock:
                job = next(queue, None)
            if job is None:
                return
            done = job[0](job[1])
            if bar is not None:
                with lock:
                    bar.update(done)

    run_parts(lambda _: worker(), min(threads, len(jobs)))


def channel_ranges(compiled: CompiledNet, threads: int) -> list[list[tuple[int, ...]] | None]:
    """Per op, each thread's output channels and where their values lie, ``(k_lo, k_hi,
    run_base, run_stride, w_base, w_stride)`` for :func:`~flexsnn.deploy.simulator.kernels.deliver`,
    or None for an op run whole on one thread (pooling, the readout, a layer too narrow to split).

    Each range keeps its conv membranes in a block of their own, [H, W, k_hi - k_lo], and its
    weights too (:func:`split_weights`), one block after the other: in the kernel's layout two
    threads would work on the two halves of every channel run, and each core's prefetcher would
    fetch the other's half (measured: barely faster than one thread, slower with shared membranes).
    """
    ops = compiled.ops
    out: list[list[tuple[int, ...]] | None] = []
    for op in range(ops.shape[0]):
        oc = int(ops[op, K_OC])
        parts = min(threads, oc // MIN_PART_CHANNELS)
        if ops[op, K_KIND] == POOL or op == ops.shape[0] - 1 or parts < 2:
            out.append(None)
            continue
        edges = [int(e) for e in np.linspace(0, oc, parts + 1).round()]
        hw = int(ops[op, K_OH] * ops[op, K_OW]) if ops[op, K_KIND] == CONV else 1
        rows = _weight_rows(ops, op)
        out.append([(lo, hi, lo * hw - lo, hi - lo, lo * rows - lo, hi - lo) for lo, hi in zip(edges[:-1], edges[1:])])
    return out


def _weight_rows(ops: np.ndarray, op: int) -> int:
    """Rows of op's weight matrix [rows, C_out]: ci * kh * kw (conv) or the inputs (linear)."""
    if ops[op, K_KIND] == CONV:
        return int(ops[op, K_IC] * ops[op, K_KH] * ops[op, K_KW])
    return int(ops[op, K_IC] * ops[op, K_IH] * ops[op, K_IW])


def split_weights(compiled: CompiledNet, threads: int) -> np.ndarray:
    """The weight vector with each split layer's matrix [rows, C_out] stored range by range,
    [rows, k_hi - k_lo] each (kept on the compiled net, which lives while its weights do)."""
    cached = compiled.split_weights.get(threads)
    if cached is not None:
        return cached
    weights = compiled.weights.copy()
    ops = compiled.ops
    for op, ranges in enumerate(channel_ranges(compiled, threads)):
        if ranges is None:
            continue
        w_off, oc, rows = int(ops[op, K_WOFF]), int(ops[op, K_OC]), _weight_rows(ops, op)
        matrix = compiled.weights[w_off : w_off + rows * oc].reshape(rows, oc)
        for lo, hi, *_ in ranges:
            weights[w_off + rows * lo : w_off + rows * hi] = matrix[:, lo:hi].ravel()
    compiled.split_weights[threads] = weights
    return weights


def standard_layout(u: np.ndarray, compiled: CompiledNet, threads: int) -> np.ndarray:
    """The membranes of :func:`run_split` in the kernel's own layout (conv [H, W, C])."""
    out = u.copy()
    ops = compiled.ops
    for op, ranges in enumerate(channel_ranges(compiled, threads)):
        if ranges is None or ops[op, K_KIND] != CONV:
            continue
        s_off, oc, hw = int(ops[op, K_SOFF]), int(ops[op, K_OC]), int(ops[op, K_OH] * ops[op, K_OW])
        layer = out[s_off : s_off + hw * oc].reshape(hw, oc)
        for lo, hi, *_ in ranges:
            layer[:, lo:hi] = u[s_off + lo * hw : s_off + hi * hw].reshape(hw, hi - lo)
    return out


def splits(compiled: CompiledNet, threads: int, n_samples: int, parallel: str) -> bool:
    """Whether to share each sample's neurons between the threads (else: samples on threads)."""
    if threads < 2 or parallel == "samples":
        return False
    wide = any(r is not None for r in channel_ranges(compiled, threads))
    if parallel == "neurons":
        return wide
    return wide and n_samples < threads  # else whole samples keep every thread busy, without hand-offs


def run_split(
    compiled: CompiledNet,
    keys: np.ndarray,
    times: np.ndarray,
    threads: int,
    max_queue: int,
    record: bool,
    scores: np.ndarray,
    out_spikes: np.ndarray,
    layer_spikes: np.ndarray,
    layer_synops: np.ndarray,
) -> tuple[int, int, int, int, np.ndarray, np.ndarray]:
    """One sample (packed keys and times) with its wide layers' channels shared by ``threads``
    threads, into the given output rows. Returns (first decision event, settle event, decision,
    status, log [3, n], final membranes u in the kernel's layout; the last two only if record).
    Exactly the kernel's results: the same additions per neuron in the same order, the spikes
    gathered in flat order."""
    sample = _SharedSample(compiled, keys, times, threads, max_queue, record)
    outputs = (scores, out_spikes, layer_spikes, layer_synops)
    room, log_size = QUEUE_START, LOG_START if record else 1
    while True:
        status, need = sample.run(room, log_size, *outputs)
        if status == GROW_QUEUE:
            room = need
        elif status == GROW_LOG:
            log_size = need
        else:
            u = standard_layout(sample.u, compiled, threads) if record else sample.u
            st = sample.st
            return int(st[0]), int(st[1]), int(st[2]), int(status), sample.log[:, : st[3]], u


class _SharedSample:
    """The state and buffers of one sample run by :func:`run_split` (allocated once; the spike
    lists and the log again with more room when they fill up)."""

    def __init__(
        self, compiled: CompiledNet, keys: np.ndarray, times: np.ndarray, threads: int, max_queue: int, record: bool
    ):
        self.compiled, self.keys, self.times, self.max_queue, self.record = compiled, keys, times, max_queue, record
        self.ranges = channel_ranges(compiled, threads)
        parts = max(len(r) for r in self.ranges if r is not None)
        self.weights = split_weights(compiled, threads)  # the layers run whole keep their own layout
        self.u = np.empty(compiled.n_state)
        self.t_last = np.empty(compiled.n_state if compiled.leaks else 1)
        max_targets, max_runs = buffer_sizes(compiled.ops)
        self.fired_key = np.empty((parts, 2, max_targets), dtype=np.int64)
        self.fired_n = np.empty((parts, 2, max_targets), dtype=np.int64)
        self.runs = np.empty((parts, 2, max_runs), dtype=np.int64)
        self.st = np.empty(4, dtype=np.int64)
        self.log = np.empty((3, 1), dtype=np.int64)

    def run(
        self,
        room: int,
        log_size: int,
        scores: np.ndarray,
        out_spikes: np.ndarray,
        layer_spikes: np.ndarray,
        layer_synops: np.ndarray,
    ) -> tuple[int, int]:
        """The whole sample from a cleared state: (status, room needed)."""
        self.lists = spike_lists(room, self.fired_key.shape[0])
        self.log = np.empty((3, log_size), dtype=np.int64)
        self.outputs = (scores, out_spikes, layer_spikes, layer_synops)
        clear_state(self.u, self.t_last, *self.outputs)
        self.st[:] = (-1, -1, -1, 0)
        spikes, tags = self.lists[:2]
        for e0 in range(0, self.keys.size, BLOCK_EVENTS):
            n_cur = load_block(self.keys, e0, spikes, tags)
            a = np.int64(0)  # typed: a literal 0 would make numba compile the kernels once more
            for op in range(self.compiled.ops.shape[0]):
                if n_cur == 0:
                    break
                status, need, n_cur = self._pass(op, a, n_cur)
                if status != 0:
                    return status, need
                a = 1 - a
        return 0, 0

    def _pass(self, op: int, a: np.int64, n_cur: int) -> tuple[int, int, int]:
        """Spike list a through op: (status, room needed, spikes in the new list)."""
        c = self.compiled
        spikes, tags, out_key, out_n, out_q = self.lists
        scores, out_spikes, layer_spikes, layer_synops = self.outputs
        if self.ranges[op] is None:
            return layer_pass(
                op,
                c.ops,
                c.tables,
                self.weights,
                c.neurons,
                self.times,
                spikes,
                tags,
                a,
                n_cur,
                self.max_queue,
                self.record,
                self.log,
                self.u,
                self.t_last,
                self.fired_key[0],
                self.fired_n[0],
                self.runs[0],
                out_key,
                out_n,
                out_q,
                scores,
                out_spikes,
                layer_spikes,
                layer_synops,
                self.st,
            )
        n_parts = len(self.ranges[op])
        done = run_parts(lambda p: self._deliver(op, p, a, n_cur), n_parts)
        statuses = [d[0] for d in done]
        if OVERFLOW in statuses:
            return OVERFLOW, 0, 0
        if GROW_QUEUE in statuses:
            return GROW_QUEUE, max(d[1] for d in done), 0
        li = c.ops[op, K_NEURON]
        layer_synops[li] += sum(d[2] for d in done)
        n_fired = np.array([d[3] for d in done], dtype=np.int64)
        status, need, n_nxt, emitted = emit(
            op,
            c.ops,
            spikes,
            tags,
            a,
            out_key,
            out_n,
            out_q,
            n_fired,
            self.max_queue,
            self.record,
            self.log,
            out_spikes,
            self.st,
        )
        layer_spikes[li] += emitted
        return status, need, n_nxt

    def _deliver(self, op: int, p: int, a: np.int64, n_cur: int) -> tuple[int, int, int, int]:
        """Part p of op's delivery (on whichever thread calls it)."""
        c = self.compiled
        spikes, tags, out_key, out_n, out_q = self.lists
        lo, hi, run_base, run_stride, w_base, w_stride = self.ranges[op][p]
        return deliver(
            op,
            c.ops,
            c.tables,
            self.weights,
            c.neurons,
            self.times,
            spikes,
            tags,
            a,
            n_cur,
            lo,
            hi,
            run_base,
            run_stride,
            w_base,
            w_stride,
            self.max_queue,
            self.u,
            self.t_last,
            self.fired_key[p],
            self.fired_n[p],
            self.runs[p],
            out_key[p],
            out_n[p],
            out_q[p],
            self.outputs[0],
            self.st,
        )
