"""The public entry point of the event-driven simulator: :func:`simulate` and its result.

The rules the simulation follows are the contract in ``docs/event_driven.md`` (one copy, not
repeated here); :mod:`flexsnn.deploy.reference` implements them in plain Python and the tests
compare the two spike for spike.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import InitVar, dataclass, field, fields
from typing import Any

import numpy as np

from flexsnn.data.events import EVENT_FIELDS, check_events, check_sensor_size, sort_by_time
from flexsnn.deploy.eventnet import EventNet
from flexsnn.deploy.simulator.compile import CompiledNet, compiled_for
from flexsnn.deploy.simulator.kernels import pack_streams, run_batch, run_sample
from flexsnn.deploy.simulator.threads import chunks, run_jobs, run_split, splits
from flexsnn.errors import FlexSNNError, InputError
from flexsnn.progress import progress_bar

__all__ = ["simulate", "SimulationResult", "SimulationError", "spike_count_readout", "predictions", "READOUTS"]

DEFAULT_MAX_QUEUE = 1 << 27  # spikes one layer may emit in one input event's cascade
READOUTS = ("scores", "spikes")
PARALLEL = ("auto", "samples", "neurons")  # how simulate spreads its work over threads


class SimulationError(FlexSNNError, RuntimeError):
    """The simulation could not finish (e.g. a runaway cascade exceeded max_queue)."""


def spike_count_readout(output_spikes: Any) -> tuple[int, bool, bool]:
    """Chip-style readout of one sample: ``(prediction, tie, silent)`` from per-class spike counts.

    prediction: the class whose output neuron spiked most, or -1 when that is not one class:
    ``silent`` (no output spike at all) or ``tie`` (two or more classes share the largest
    count). A tie is never broken by class index.
    """
    prediction, tie, silent = _spike_count_readouts(np.asarray(output_spikes).reshape(1, -1))
    return int(prediction[0]), bool(tie[0]), bool(silent[0])


@dataclass
class SimulationResult:
    """Outcome of one sample. Attributes are also readable as ``result["scores"]``.

    scores: float64 [num_outputs], accumulated input of the readout (flat for a conv readout).
    prediction: argmax of scores, -1 while all scores are zero (no decision).
    output_spikes: int64 [num_outputs], spikes of the readout's counting neuron.
    spike_prediction / spike_tie / spike_silent: the chip-style readout of output_spikes
        (:func:`spike_count_readout`): the class that spiked most, or -1 with ``spike_tie``
        (several classes share the top count) or ``spike_silent`` (no output spike) set.
    layer_spikes: int64 [num_weighted_layers], spikes emitted by each weighted layer's neurons
        (the last entry is output_spikes.sum()).
    layer_synops: int64 [num_weighted_layers], synaptic operations delivered INTO each layer.
    synops: total synaptic operations (sum of layer_synops).
    num_events: input events processed. empty: True for an empty stream (zero scores).
    first_decision_time / decision_settle_time: event timestamps (rule 6 of docs/event_driven.md) or None.
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
    spike_prediction: int = field(init=False)
    spike_tie: bool = field(init=False)
    spike_silent: bool = field(init=False)

    readout: InitVar[tuple[int, bool, bool] | None] = None

    def __post_init__(self, readout: tuple[int, bool, bool] | None) -> None:
        # readout: spike_count_readout(output_spikes), when the caller has it already
        self.spike_prediction, self.spike_tie, self.spike_silent = readout or spike_count_readout(self.output_spikes)

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


def predictions(results: SimulationResult | Sequence[SimulationResult], readout: str = "scores") -> np.ndarray:
    """int64 predictions of results: ``readout="scores"`` (the accumulated input, argmax) or
    ``"spikes"`` (chip style: the class that spiked most; -1 for a tie or silence)."""
    if readout not in READOUTS:
        raise InputError(f"readout must be one of {READOUTS}, got {readout!r}")
    items = [results] if isinstance(results, SimulationResult) else list(results)
    attr = "prediction" if readout == "scores" else "spike_prediction"
    return np.array([getattr(r, attr) for r in items], dtype=np.int64)


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
    offsets = _offsets(streams)
    if len(streams) == 1:
        p, y, x, t = (streams[0][f] for f in ("p", "y", "x", "t"))
    else:  # field by field: contiguous copies (joining the records first is slower)
        p, y, x, t = (np.concatenate([s[f] for s in streams]) for f in ("p", "y", "x", "t"))
    keys = p.astype(np.int64) << 32
    keys |= y.astype(np.int64) << 16
    keys |= x.astype(np.int64)  # numpy will not OR uint64 into int64 (values are range-checked)
    return keys, t.astype(np.float64), offsets


def _offsets(streams: Sequence[np.ndarray]) -> np.ndarray:
    """int64 [n_streams + 1]: where each stream starts in the joined arrays, and the total."""
    sizes = np.fromiter((s.size for s in streams), dtype=np.int64, count=len(streams))
    offsets = np.zeros(len(streams) + 1, dtype=np.int64)
    np.cumsum(sizes, out=offsets[1:])
    return offsets


def _one_packable_dtype(streams: Sequence[Any]) -> bool:
    """True when every stream is a 1-D structured array of one dtype whose x, y, p are integers
    and t integer or float, all in native byte order: the streams can be checked and packed in
    one compiled pass."""
    first = streams[0]
    if not isinstance(first, np.ndarray) or first.dtype.names is None:
        return False
    dtype = first.dtype
    if any(f not in dtype.names for f in EVENT_FIELDS):
        return False
    if any(dtype[f].kind not in "iub" for f in ("x", "y", "p")) or dtype["t"].kind not in "iuf":
        return False
    if not all(dtype[f].isnative for f in EVENT_FIELDS):  # numba reads native byte order only
        return False
    return all(isinstance(s, np.ndarray) and s.ndim == 1 and s.dtype == dtype for s in streams)


def _joined(streams: Sequence[np.ndarray]) -> np.ndarray:
    """Structured arrays of one dtype as one array: their bytes joined (numpy's own
    concatenation of structured arrays goes record by record, ~20x slower)."""
    parts = [np.ascontiguousarray(s).view(np.uint8) for s in streams]
    return np.concatenate(parts).view(streams[0].dtype)


def _checked_and_packed(
    streams: list[Any], sensor: tuple[int, int, int], names: list[str]
) -> tuple[list[np.ndarray], np.ndarray, np.ndarray, np.ndarray]:
    """The streams checked (:func:`check_events`) and ordered by time (:func:`sort_by_time`),
    with their packed keys, times and offsets (:func:`_pack_events`).

    Streams of one dtype take a single compiled pass (the per-stream numpy checks cost more
    than the simulation of a small net); any other list, and any value the pass refuses, goes
    through check_events stream by stream, which words the error.
    """
    if _one_packable_dtype(streams):
        offsets = _offsets(streams)
        joined = streams[0] if len(streams) == 1 else _joined(streams)
        keys = np.empty(joined.size, dtype=np.int64)
        times = np.empty(joined.size, dtype=np.float64)
        unsorted = np.zeros(len(streams), dtype=np.bool_)
        width, height, pols = sensor
        fields = (joined[f] for f in ("x", "y", "t", "p"))
        if pack_streams(*fields, offsets, width, height, pols, keys, times, unsorted):
            streams = list(streams)
            for b in np.flatnonzero(unsorted):
                order = np.argsort(streams[b]["t"], kind="stable")  # as sort_by_time
                lo, hi = offsets[b], offsets[b + 1]
                keys[lo:hi] = keys[lo:hi][order]
                times[lo:hi] = times[lo:hi][order]
                streams[b] = streams[b][order]
            return streams, keys, times, offsets
    checked = [sort_by_time(check_events(ev, sensor, allow_empty=True, name=nm)) for ev, nm in zip(streams, names)]
    return (checked, *_pack_events(checked))


def simulate(
    model: Any,
    events: Any,
    sensor_size: Sequence[int],
    num_threads: int | None = None,
    progress: bool = False,
    record_spikes: bool = False,
    max_queue: int = DEFAULT_MAX_QUEUE,
    parallel: str = "auto",
) -> SimulationResult | list[SimulationResult]:
    """Run the event-driven simulation of ``model`` on one event stream or a list of them.

    model: an :class:`EventNet` or a torch model accepted by :meth:`EventNet.from_torch`
        (converted on every call: convert once with ``EventNet.from_torch`` to simulate a
        model repeatedly; an EventNet's encoding is cached while its weights are unchanged).
    events: a Tonic-style structured array (fields x, y, t, p) or a non-empty list of them,
        one per sample. sensor_size: Tonic-style ``(W, H, P)``; the input map is ``[P, H, W]``.
    num_threads: worker threads for a list (default: all cores). progress: show a tqdm bar.
    record_spikes: also return every spike in order (``spike_trace``) and final membranes
        (runs the samples one by one).
    max_queue: cap on the spikes one layer may emit in one input event's cascade.
    parallel: how the threads share the work: ``"samples"`` (each thread runs whole samples),
        ``"neurons"`` (the threads share each sample: every wide layer's channels are cut into
        one range per thread; a net without a layer of 32 or more channels runs by samples) or
        ``"auto"`` (by neurons for such a wide net when the samples are fewer than the threads,
        else by samples). The results are the same bit for bit.
    Returns one :class:`SimulationResult` for one stream, a list for a list. An empty stream
    gives zero scores, prediction -1 and ``empty=True``. Both readouts are in each result:
    ``prediction`` from the accumulated input, ``spike_prediction`` (with ``spike_tie`` /
    ``spike_silent``) from the output spike counts, as a chip reads them (:func:`predictions`).
    The kernel is compiled on the first call in a process (seconds; numba caches it on disk,
    so later processes only load it).
    """
    sensor = check_sensor_size(sensor_size)
    single = isinstance(events, np.ndarray)
    if single:
        streams, names = [events], ["events"]
    else:
        if not isinstance(events, (list, tuple)):
            raise InputError(
                f"events must be a structured array with fields x, y, t, p or a list of them, got {type(events).__name__}"
            )
        if len(events) == 0:
            raise InputError(
                "events is an empty list; expected at least one event stream (structured array x, y, t, p)"
            )
        streams, names = list(events), [f"events[{i}]" for i in range(len(events))]
    if isinstance(max_queue, bool) or not isinstance(max_queue, (int, np.integer)) or max_queue < 16:
        raise InputError(f"max_queue must be an int >= 16, got {max_queue!r}")
    threads = num_threads if num_threads is not None else (os.cpu_count() or 1)
    if isinstance(threads, bool) or not isinstance(threads, (int, np.integer)) or threads < 1:
        raise InputError(f"num_threads must be a positive int or None, got {num_threads!r}")
    if parallel not in PARALLEL:
        raise InputError(f"parallel must be one of {PARALLEL}, got {parallel!r}")
    streams, keys, times, offsets = _checked_and_packed(streams, sensor, names)
    net = _as_eventnet(model)
    width, height, pols = sensor
    compiled = compiled_for(net, (pols, height, width))
    split = splits(compiled, int(threads), len(streams), parallel)
    threads = int(threads) if split else min(int(threads), len(streams))

    n, n_w = len(streams), len(compiled.shapes)
    n_out = int(np.prod(compiled.shapes[-1]))
    scores = np.empty((n, n_out))  # every row is cleared by the kernel
    out_spikes = np.empty((n, n_out), dtype=np.int64)
    layer_spikes = np.empty((n, n_w), dtype=np.int64)
    layer_synops = np.empty((n, n_w), dtype=np.int64)
    info = np.zeros((n, 4), dtype=np.int64)
    traces: list[Any] = [None] * n
    membranes: list[Any] = [None] * n

    def run_recorded(b: int) -> int:
        u = np.empty(compiled.n_state)
        t_last = np.empty(compiled.n_state if compiled.leaks else 1)
        first, settle, decision, status, log = run_sample(
            keys,
            times,
            offsets,
            b,
            compiled.ops,
            compiled.tables,
            compiled.weights,
            compiled.neurons,
            int(max_queue),
            u,
            t_last,
            scores,
            out_spikes,
            layer_spikes,
            layer_synops,
        )
        keep(b, (first, settle, decision, status), log, u)
        return 1

    def run_shared(b: int) -> int:
        lo, hi = offsets[b], offsets[b + 1]
        *head, log, u = run_split(
            compiled,
            keys[lo:hi],
            times[lo:hi],
            threads,
            int(max_queue),
            record_spikes,
            scores[b],
            out_spikes[b],
            layer_spikes[b],
            layer_synops[b],
        )
        keep(b, head, log if record_spikes else None, u)
        return 1

    def keep(b: int, head: Any, log: Any, u: np.ndarray) -> None:
        info[b] = head
        if log is not None:
            traces[b] = [np.ascontiguousarray(log[1:, log[0] == li].T) for li in range(n_w)]
            membranes[b] = _unpack_membranes(u, compiled)

    def run_chunk(samples: np.ndarray) -> int:
        run_batch(
            keys,
            times,
            offsets,
            samples,
            compiled.ops,
            compiled.tables,
            compiled.weights,
            compiled.neurons,
            compiled.n_state,
            compiled.leaks,
            int(max_queue),
            scores,
            out_spikes,
            layer_spikes,
            layer_synops,
            info,
        )
        return samples.size

    if split:  # one sample at a time, its wide layers shared by the threads
        jobs, job_threads = [(run_shared, b) for b in range(n)], 1
    elif record_spikes:
        jobs, job_threads = [(run_recorded, b) for b in range(n)], threads
    else:
        jobs, job_threads = [(run_chunk, c) for c in chunks(n, threads)], threads
    bar = progress_bar(total=n, desc="simulate", unit="sample", enabled=progress) if progress else None
    try:
        run_jobs(jobs, job_threads, bar)
    finally:
        if bar is not None:
            bar.close()
    if info[:, 3].any():
        raise SimulationError(
            f"an input event's cascade emitted more than max_queue={max_queue} spikes in one layer; the "
            "network's activity runs away (weights too large?) or raise max_queue"
        )
    results = []
    readouts = zip(*(r.tolist() for r in _spike_count_readouts(out_spikes)))
    synops = layer_synops.sum(axis=1).tolist()
    for b, (stream, (first, settle, decision, _), readout) in enumerate(zip(streams, info.tolist(), readouts)):
        result = SimulationResult(
            scores=scores[b],
            prediction=decision,
            output_spikes=out_spikes[b],
            layer_spikes=layer_spikes[b],
            layer_synops=layer_synops[b],
            synops=synops[b],
            num_events=int(stream.size),
            empty=stream.size == 0,
            first_decision_time=None if first < 0 else _py_time(stream["t"][first]),
            decision_settle_time=None if settle < 0 or decision < 0 else _py_time(stream["t"][settle]),
            spike_trace=traces[b],
            membranes=membranes[b],
            readout=readout,
        )
        results.append(result)
    return results[0] if single else results


def _spike_count_readouts(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`spike_count_readout` of every row of ``counts`` [n, classes] at once:
    (predictions, ties, silences)."""
    silent = ~counts.any(axis=1)
    if counts.shape[1] == 0:
        return np.full(len(counts), -1, dtype=np.int64), np.zeros(len(counts), dtype=bool), silent
    top = counts.max(axis=1)
    tie = ~silent & ((counts == top[:, None]).sum(axis=1) > 1)
    return np.where(silent | tie, -1, counts.argmax(axis=1)), tie, silent


def _unpack_membranes(u: np.ndarray, compiled: CompiledNet) -> list[np.ndarray]:
    """Split the kernel's state into one membrane array per weighted layer, in the layer's shape."""
    offsets = np.cumsum([0] + [int(np.prod(s)) for s in compiled.shapes])
    out = []
    for i, shape in enumerate(compiled.shapes):
        segment = u[offsets[i] : offsets[i + 1]]
        if len(shape) == 3:  # conv membranes are stored [H, W, C] in the kernel
            segment = segment.reshape(shape[1], shape[2], shape[0]).transpose(2, 0, 1)
        out.append(np.ascontiguousarray(segment.reshape(shape)))
    return out
