"""Time-stepped vs event-driven execution of the same bias-free weights.

:func:`evaluate_deployment` runs one bias-free model two ways on the same event streams:

- time-stepped: each stream binned into ``T`` count frames (:func:`flexsnn.data.to_frames`),
  the model run at the uniform time config ``T``; class scores = the readout layer's
  accumulated input (sum over time of its output; same argmax as the mean);
- event-driven: :func:`flexsnn.deploy.simulate`, one event at a time, no time steps, read
  out two ways: the readout layer's accumulated input (argmax, as time-stepped) and, as a chip
  like Speck reads its output layer, the output neurons' spike counts (the class that spiked
  most; a tie or silence is counted as such, never broken by class index).

Spike-count divergence (PAPER.md): ``SD(s0, s) = sum_i |s0[i] - s[i]| / sum_i s0[i]`` over
per-output-neuron spike counts, s0 the reference platform (here time-stepped), s the other
(event-driven). Which neurons: the readout layer has no neuron (its accumulated input is
the score), so -- as on a chip whose output layer spikes, and as the simulator's
``output_spikes`` -- its input drives a counting neuron with the deployment defaults (IF,
threshold 1, reset by subtraction, multi-spike, lower bound -1), one per class; it never
changes the scores. In the time-stepped run the same neuron runs on the readout's output
per step. The index i runs over (sample, class): the counts of all samples are summed
before dividing, so samples with few spikes cannot blow the ratio up.

The whole experiment on run folders (train, fine-tune with SDT and MTT, measure both) is
:func:`flexsnn.runs.compare_deployment`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from flexsnn.data import to_frames
from flexsnn.deploy.eventnet import EventNet
from flexsnn.deploy.simulator import predictions, simulate
from flexsnn.errors import InputError, check_positive_int
from flexsnn.neurons import IF, SpikingNeuron

__all__ = [
    "DeploymentMetrics",
    "spike_count_divergence",
    "layer_spike_divergence",
    "time_stepped_layer_spikes",
    "event_driven_layer_spikes",
    "time_stepped_outputs",
    "evaluate_deployment",
    "format_deployment_table",
]


def spike_count_divergence(s0: Any, s: Any) -> float:
    """``SD(s0, s) = sum |s0 - s| / sum s0`` over all entries (any matching shapes).

    ``s0`` is the reference platform's per-neuron spike counts (non-negative, not all zero).
    """
    a = np.asarray(s0.detach().cpu() if isinstance(s0, torch.Tensor) else s0, dtype=np.float64)
    b = np.asarray(s.detach().cpu() if isinstance(s, torch.Tensor) else s, dtype=np.float64)
    if a.shape != b.shape:
        raise InputError(f"s0 and s must have the same shape (per-neuron spike counts), got {a.shape} and {b.shape}")
    if a.size == 0:
        raise InputError("s0 is empty; expected per-neuron spike counts")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise InputError("s0 and s must be finite spike counts")
    if (a < 0).any() or (b < 0).any():
        raise InputError("spike counts must be non-negative")
    total = a.sum()
    if total <= 0:
        raise InputError("s0 has no spikes (sum s0 = 0); SD is undefined")
    return float(np.abs(a - b).sum() / total)


def layer_spike_divergence(ts_layers: Sequence[Any], ed_layers: Sequence[Any]) -> list[float]:
    """SD per layer: ``spike_count_divergence`` of each layer's ``[samples, neurons]`` counts.

    ``ts_layers`` / ``ed_layers``: one array per spiking layer, as returned by
    :func:`time_stepped_layer_spikes` and :func:`event_driven_layer_spikes` (the reference
    platform first). A layer without reference spikes gives NaN.
    """
    if len(ts_layers) != len(ed_layers):
        raise InputError(
            f"ts_layers and ed_layers must list the same layers, got {len(ts_layers)} and {len(ed_layers)}"
        )
    return [
        spike_count_divergence(a, b) if np.asarray(a).sum() > 0 else float("nan") for a, b in zip(ts_layers, ed_layers)
    ]


@torch.no_grad()
def time_stepped_layer_spikes(model: nn.Module, frames: torch.Tensor, t: int, return_scores: bool = False) -> Any:
    """Per-neuron spike counts of every spiking layer of ``model`` run at uniform ``t`` on
    ``frames [T, B, ...]``: one int64 array ``[B, neurons]`` per layer in forward order (neurons
    in the layer's ``C, H, W`` order, summed over time), then the readout's counting neuron
    (as in :func:`time_stepped_outputs`), so the list lines up with the event-driven
    ``layer_spikes`` of :func:`flexsnn.deploy.simulate`. ``return_scores=True`` returns
    ``(scores [B, classes], layers)`` from the same forward (the readout's accumulated input)."""
    t = check_positive_int(t, "t")
    counting = _counting_neuron(EventNet.from_torch(model))
    counts: list[torch.Tensor] = []

    def record(_module, _inputs, output):
        counts.append(output.sum(0).reshape(output.shape[1], -1).round().long().cpu())

    hooks = [m.register_forward_hook(record) for m in model.modules() if isinstance(m, SpikingNeuron)]
    try:
        scores, out_spikes = time_stepped_outputs(model, frames, t, counting)
    finally:
        for h in hooks:
            h.remove()
    layers = [c.numpy() for c in counts] + [out_spikes.round().long().cpu().numpy()]
    return (scores.double().cpu().numpy(), layers) if return_scores else layers


def event_driven_layer_spikes(results: Sequence[Any]) -> list[np.ndarray]:
    """Per-neuron spike counts ``[samples, neurons]`` of every weighted layer (the readout's
    counting neuron last) from :func:`flexsnn.deploy.simulate` results run with
    ``record_spikes=True``."""
    if len(results) == 0:
        raise InputError("results is empty; expected simulate(..., record_spikes=True) results")
    if any(r.spike_trace is None for r in results):
        raise InputError("results carry no spike trace; run simulate(..., record_spikes=True)")
    layers = []
    for i, membrane in enumerate(results[0].membranes):
        size = int(np.asarray(membrane).size)
        layers.append(np.stack([np.bincount(r.spike_trace[i][:, 1], minlength=size) for r in results]))
    return layers


def _counting_neuron(net) -> nn.Module:
    spec = net.output_neuron
    if spec.tau is not None:
        raise InputError("the readout's counting neuron leaks (tau set); expected an IF counting neuron")
    return IF(v_th=spec.v_th, reset=spec.reset, multi_spike=spec.multi_spike, v_min=spec.v_min)


@torch.no_grad()
def time_stepped_outputs(
    model: nn.Module,
    frames: torch.Tensor,
    t: int,
    counting_neuron: nn.Module | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run ``model`` on ``frames [T, B, C, H, W]`` at uniform ``t``.

    Returns ``(scores [B, classes], output_spikes [B, classes])``: the readout's accumulated
    input (sum over time of the model output) and the spike counts of ``counting_neuron``
    (default: the deployment IF) driven by the per-step output.
    """
    was_training = model.training
    model.eval()
    try:
        out = model(frames, time_config=t)
    finally:
        model.train(was_training)
    neuron = counting_neuron or IF(v_th=1.0, reset="subtract", multi_spike=True, v_min=-1.0)
    spikes = neuron(out).sum(0)
    return out.sum(0), spikes


@dataclass
class DeploymentMetrics:
    """One bias-free model measured time-stepped and event-driven on the same samples."""

    label: str
    t: int
    samples: int
    ts_accuracy: float  # time-stepped at T
    ed_accuracy: float  # event-driven (simulator)
    sd: float  # SD(time-stepped, event-driven) over output-neuron spike counts
    agreement: float  # fraction of samples where both predict the same class
    synops_per_sample: float  # event-driven synaptic operations per sample
    events_per_second: float  # input events simulated per wall-clock second
    sim_seconds: float
    input_events_per_sample: float
    ed_spike_accuracy: float = float("nan")  # event-driven, read out by output spike counts (chip style)
    spike_ties: float = float("nan")  # fraction of samples whose top spike count is shared (no prediction)
    spike_silent: float = float("nan")  # fraction of samples without any output spike (no prediction)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: an undefined SD (no time-stepped output spikes) becomes None."""
        return {k: (None if isinstance(v, float) and v != v else v) for k, v in asdict(self).items()}


def evaluate_deployment(
    model: nn.Module,
    events: Sequence[np.ndarray],
    labels: Sequence[int],
    sensor_size: Sequence[int],
    t: int,
    label: str = "model",
    batch_size: int = 64,
    num_threads: int | None = None,
    progress: bool = False,
) -> DeploymentMetrics:
    """Measure a bias-free ``model`` time-stepped at ``t`` and event-driven on ``events``.

    events: one Tonic-style structured array (x, y, t, p) per sample; labels: one int each.
    The model must already be bias-free (no BatchNorm, zero biases), else InputError.
    """
    t = check_positive_int(t, "t")
    batch_size = check_positive_int(batch_size, "batch_size")
    if len(events) == 0 or len(events) != len(labels):
        raise InputError(
            f"events and labels must be non-empty and of equal length, got {len(events)} and {len(labels)}"
        )
    net = EventNet.from_torch(model)  # raises a clear error for BN / biases
    labels_np = np.asarray(labels, dtype=np.int64)
    device = next(model.parameters()).device
    counting = _counting_neuron(net)

    ts_scores, ts_spikes = [], []
    for start in range(0, len(events), batch_size):
        chunk = events[start : start + batch_size]
        frames = np.stack([to_frames(ev, sensor_size, n_time_bins=t) for ev in chunk], axis=1)  # [T, B, P, H, W]
        scores, spikes = time_stepped_outputs(model, torch.from_numpy(frames).to(device), t, counting)
        ts_scores.append(scores.double().cpu().numpy())
        ts_spikes.append(spikes.double().cpu().numpy())
    ts_scores_np, ts_spikes_np = np.concatenate(ts_scores), np.concatenate(ts_spikes)

    simulate(net, events[0][:1], sensor_size)  # compile the kernel outside the timed run
    start = time.perf_counter()
    results = simulate(net, list(events), sensor_size, num_threads=num_threads, progress=progress)
    seconds = time.perf_counter() - start
    ed_pred = predictions(results, readout="scores")
    spike_pred = predictions(results, readout="spikes")
    ed_spikes = np.stack([r.output_spikes for r in results]).astype(np.float64)
    ts_pred = ts_scores_np.argmax(1)
    n_events = sum(int(r.num_events) for r in results)
    return DeploymentMetrics(
        label=label,
        t=t,
        samples=len(events),
        ts_accuracy=float((ts_pred == labels_np).mean()),
        ed_accuracy=float((ed_pred == labels_np).mean()),
        sd=spike_count_divergence(ts_spikes_np, ed_spikes) if ts_spikes_np.sum() > 0 else float("nan"),
        agreement=float((ts_pred == ed_pred).mean()),
        synops_per_sample=float(np.mean([r.synops for r in results])),
        events_per_second=n_events / seconds if seconds > 0 else float("inf"),
        sim_seconds=seconds,
        input_events_per_sample=n_events / len(events),
        ed_spike_accuracy=float((spike_pred == labels_np).mean()),
        spike_ties=float(np.mean([r.spike_tie for r in results])),
        spike_silent=float(np.mean([r.spike_silent for r in results])),
    )


def format_deployment_table(rows: Sequence[DeploymentMetrics]) -> str:
    """A fixed-width table: one row per model. "event-driven" reads the accumulated input (as
    time-stepped does); "ED spikes" reads the output spike counts as a chip does, with the
    samples it cannot classify (a shared top count, or no output spike) in "ties" and "silent"."""
    head = (
        f"{'model':<10}{'T':>4}{'time-stepped':>14}{'event-driven':>14}{'ED spikes':>11}{'ties':>7}"
        f"{'silent':>8}{'SD':>9}{'agree':>8}{'synops/sample':>15}{'events/s':>12}"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(
            f"{r.label:<10}{r.t:>4}{100 * r.ts_accuracy:>13.2f}%{100 * r.ed_accuracy:>13.2f}%"
            f"{100 * r.ed_spike_accuracy:>10.2f}%{100 * r.spike_ties:>6.1f}%{100 * r.spike_silent:>7.1f}%"
            f"{100 * r.sd:>8.2f}%{100 * r.agreement:>7.1f}%{r.synops_per_sample:>15,.0f}{r.events_per_second:>12,.0f}"
        )
    return "\n".join(lines)
