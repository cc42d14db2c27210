"""Time-stepped vs event-driven execution of the same bias-free weights.

:func:`evaluate_deployment` runs one bias-free model two ways on the same event streams:

- time-stepped: each stream binned into ``T`` count frames (:func:`flexsnn.data.to_frames`),
  the model run at the uniform time config ``T``; class scores = the readout layer's
  accumulated input (sum over time of its output; same argmax as the mean);
- event-driven: :func:`flexsnn.deploy.simulate`, one event at a time, no time steps.

Spike-count divergence (PAPER.md): ``SD(s0, s) = sum_i |s0[i] - s[i]| / sum_i s0[i]`` over
per-output-neuron spike counts, s0 the reference platform (here time-stepped), s the other
(event-driven). Which neurons: the readout layer has no neuron (its accumulated input is
the score), so -- as on a chip whose output layer spikes, and as the simulator's
``output_spikes`` -- its input drives a counting neuron with the deployment defaults (IF,
threshold 1, reset by subtraction, multi-spike, lower bound -1), one per class; it never
changes the scores. In the time-stepped run the same neuron runs on the readout's output
per step. The index i runs over (sample, class): the counts of all samples are summed
before dividing, so samples with few spikes cannot blow the ratio up.

:func:`compare_deployment` is the whole experiment on the default data (the demo and
``flexsnn deploy simulate`` use it): train a deployable model time-stepped with SDT at
``T``, run the bias-removal fine-tune with SDT and with MTT, and measure both.
"""
from __future__ import annotations

import copy
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn

from flexsnn.errors import InputError, check_positive_int

__all__ = [
    "DeploymentMetrics", "DeploymentComparison", "spike_count_divergence", "time_stepped_outputs",
    "evaluate_deployment", "compare_deployment", "load_event_split", "format_deployment_table",
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


def _counting_neuron(net) -> nn.Module:
    from flexsnn.neurons import IF

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
    from flexsnn.neurons import IF

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
    from flexsnn.data import to_frames
    from flexsnn.deploy.eventnet import EventNet
    from flexsnn.deploy.simulator import simulate

    t = check_positive_int(t, "t")
    batch_size = check_positive_int(batch_size, "batch_size")
    if len(events) == 0 or len(events) != len(labels):
        raise InputError(f"events and labels must be non-empty and of equal length, got {len(events)} and {len(labels)}")
    net = EventNet.from_torch(model)  # raises a clear error for BN / biases
    labels_np = np.asarray(labels, dtype=np.int64)
    device = next(model.parameters()).device
    counting = _counting_neuron(net)

    ts_scores, ts_spikes = [], []
    for start in range(0, len(events), batch_size):
        chunk = events[start:start + batch_size]
        frames = np.stack([to_frames(ev, sensor_size, n_time_bins=t) for ev in chunk], axis=1)  # [T, B, P, H, W]
        scores, spikes = time_stepped_outputs(model, torch.from_numpy(frames).to(device), t, counting)
        ts_scores.append(scores.double().cpu().numpy())
        ts_spikes.append(spikes.double().cpu().numpy())
    ts_scores_np, ts_spikes_np = np.concatenate(ts_scores), np.concatenate(ts_spikes)

    simulate(net, events[0][:1], sensor_size)  # compile the kernel outside the timed run
    start = time.perf_counter()
    results = simulate(net, list(events), sensor_size, num_threads=num_threads, progress=progress)
    seconds = time.perf_counter() - start
    ed_pred = np.array([r.prediction for r in results])
    ed_spikes = np.stack([r.output_spikes for r in results]).astype(np.float64)
    ts_pred = ts_scores_np.argmax(1)
    n_events = sum(int(r.num_events) for r in results)
    return DeploymentMetrics(
        label=label, t=t, samples=len(events),
        ts_accuracy=float((ts_pred == labels_np).mean()),
        ed_accuracy=float((ed_pred == labels_np).mean()),
        sd=spike_count_divergence(ts_spikes_np, ed_spikes) if ts_spikes_np.sum() > 0 else float("nan"),
        agreement=float((ts_pred == ed_pred).mean()),
        synops_per_sample=float(np.mean([r.synops for r in results])),
        events_per_second=n_events / seconds if seconds > 0 else float("inf"),
        sim_seconds=seconds,
        input_events_per_sample=n_events / len(events),
    )


def format_deployment_table(rows: Sequence[DeploymentMetrics]) -> str:
    """A fixed-width table: one row per model."""
    head = (f"{'model':<10}{'T':>4}{'time-stepped':>14}{'event-driven':>14}{'SD':>9}{'agree':>8}"
            f"{'synops/sample':>15}{'events/s':>12}")
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(
            f"{r.label:<10}{r.t:>4}{100 * r.ts_accuracy:>13.2f}%{100 * r.ed_accuracy:>13.2f}%"
            f"{100 * r.sd:>8.2f}%{100 * r.agreement:>7.1f}%{r.synops_per_sample:>15,.0f}{r.events_per_second:>12,.0f}"
        )
    return "\n".join(lines)


def load_event_split(dataset: str, split: str = "test", root: str | None = None,
                     max_samples: int | None = None) -> tuple[list[np.ndarray], list[int], tuple[int, int, int]]:
    """Event streams, labels and sensor size of a split of a Tonic-style event dataset.

    ``digits_dvs`` is the embedded default; other names are looked up in
    :mod:`flexsnn.data.event_datasets` (they need their files on disk).
    """
    if split not in ("train", "test"):
        raise InputError(f"split must be 'train' or 'test', got {split!r}")
    if dataset == "digits_dvs":
        from flexsnn.data import DigitsDVS

        ds = DigitsDVS(root=root, train=split == "train")
    else:
        ds = _other_event_dataset(dataset, split, root)
    n = len(ds) if max_samples is None else min(len(ds), check_positive_int(max_samples, "max_samples"))
    events, labels = [], []
    for i in range(n):
        ev, y = ds[i]
        events.append(ev)
        labels.append(int(y))
    return events, labels, tuple(ds.sensor_size)


def _other_event_dataset(dataset: str, split: str, root: str | None):
    try:
        from flexsnn.data import event_datasets as mod
    except ImportError:  # pragma: no cover - partial install
        mod = None
    registry = getattr(mod, "EVENT_DATASETS", None) or getattr(mod, "DATASETS", None) or {}
    if dataset not in registry:
        choices = ["digits_dvs", *sorted(registry)]
        raise InputError(f"dataset must be one of {', '.join(map(repr, choices))}, got {dataset!r}")
    cls = registry[dataset]
    try:
        return cls(root=root, train=split == "train")
    except TypeError:
        return cls(root, train=split == "train")


@dataclass
class DeploymentComparison:
    """Result of :func:`compare_deployment`: one :class:`DeploymentMetrics` per fine-tune method."""

    rows: list[DeploymentMetrics]
    base_accuracy: float  # the SDT-trained model with biases/BN, time-stepped at T
    bias_removed_accuracy: float  # after bias removal, before any fine-tune
    config: dict[str, Any] = field(default_factory=dict)

    def format_table(self) -> str:
        return format_deployment_table(self.rows)

    def as_dict(self) -> dict[str, Any]:
        return {"rows": [r.as_dict() for r in self.rows], "base_accuracy": self.base_accuracy,
                "bias_removed_accuracy": self.bias_removed_accuracy, "config": self.config}


def compare_deployment(
    out: str | Path,
    dataset: str = "digits_dvs",
    model: str = "nmnist_net",
    t: int = 10,
    base_epochs: int = 6,
    finetune_epochs: int = 3,
    methods: Sequence[str] = ("sdt", "mtt"),
    seed: int = 1000,
    device: str = "cpu",
    base_run: str | Path | None = None,
    max_test_samples: int | None = None,
    base_lr: float = 0.1,
    finetune_lr: float = 0.01,
    batch_size: int = 64,
    data_root: str | None = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> DeploymentComparison:
    """The event-driven comparison on ``dataset`` (default: the embedded DigitsDVS events).

    1. Base model: ``base_run`` (a run folder) or a new time-stepped SDT run of ``model`` at
       ``t`` for ``base_epochs`` (written to ``out/base``).
    2. For each method in ``methods``: a copy of the base goes through bias removal and the
       bias-free fine-tune (``finetune_epochs``; MTT: first stage at ``t``, others from
       [1, t]), written to ``out/deploy_<method>``.
    3. Each fine-tuned model is measured by :func:`evaluate_deployment` on the test split's
       events. Writes ``out/deploy_results.json`` and returns the comparison.
    """
    from flexsnn.deploy.bias_removal import remove_biases
    from flexsnn.deploy.finetune import prepare_deployment
    from flexsnn.evaluate import accuracy_at
    from flexsnn.io import write_json
    from flexsnn.train import load_model
    from flexsnn.workflow import RunSpec, build_loaders, train_run

    t = check_positive_int(t, "t")
    out = Path(out)
    start = time.perf_counter()
    spec = RunSpec(dataset=dataset, model=model, method="sdt", t_min=1, t_max=t, epochs=base_epochs, seed=seed,
                   device=device, lr=base_lr, batch_size=batch_size, data_root=data_root)
    loaders = build_loaders(spec)
    if base_run is None:
        base_run = out / "base"
        log(f"[base] training {model} time-stepped with SDT at T={t} for {base_epochs} epochs -> {base_run}")
        train_run(spec, base_run, overwrite=True, progress=progress, loaders=loaders)
    base, _ = load_model(base_run, device=device)
    base_acc = accuracy_at(base, loaders[1], t)
    stripped = remove_biases(copy.deepcopy(base))
    removed_acc = accuracy_at(stripped, loaders[1], t)
    log(f"[base] time-stepped accuracy at T={t}: {100 * base_acc:.2f}%; after bias removal (no fine-tune): "
        f"{100 * removed_acc:.2f}%")
    events, labels, sensor = load_event_split(dataset, "test", data_root, max_test_samples)
    rows = []
    for method in methods:
        log(f"[{method.upper()}] bias-free fine-tune for {finetune_epochs} epochs"
            + (f" (stage 1 at T={t}, other stages from [1, {t}])" if method == "mtt" else f" at T={t}"))
        tuned, _ = prepare_deployment(base_run, out / f"deploy_{method}", method=method, t=t, epochs=finetune_epochs,
                                      lr=finetune_lr, seed=seed, device=device, progress=progress, loaders=loaders,
                                      overwrite=True)
        log(f"[{method.upper()}] simulating {len(events)} test samples event-driven")
        rows.append(evaluate_deployment(tuned, events, labels, sensor, t, label=method.upper()))
    result = DeploymentComparison(rows, base_acc, removed_acc, config={
        "dataset": dataset, "model": model, "t": t, "base_epochs": base_epochs, "finetune_epochs": finetune_epochs,
        "seed": seed, "base_run": str(base_run), "seconds": time.perf_counter() - start,
    })
    write_json(out / "deploy_results.json", result.as_dict())
    return result
