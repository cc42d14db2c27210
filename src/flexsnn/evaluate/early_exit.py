"""Dynamic T (early exit): per sample, stop adding time steps once the output is confident.

The rule (the one the sweep reports): run the model at a fixed TimeConfig ``(T_1, ..., T_G)``
and read its output ``out [T_G, B, classes]`` step by step along the LAST stage's time axis.
After step ``t`` (1-based) the running prediction is the time average of the first ``t``
output steps, ``m_t = mean(out[:t])``, and its confidence is ``max(softmax(m_t))``. A sample
exits at the first ``t`` whose confidence is ``>= threshold`` (at ``T_G`` if none is), and is
classified by ``argmax(m_t)``. So threshold 0 always exits at ``t = 1`` and any threshold
above 1 never exits early (``t = T_G``).

Cost of an exit at last-stage step ``t``: only the time steps the first ``t`` outputs depend
on are counted. Neurons are causal, so inside stage ``i`` those are its first ``n_i(t)``
steps, where ``n_G(t) = t`` and ``n_i`` follows from the TTM matrix ``M`` of the boundary
``T_i -> T_{i+1}``: ``n_i(t) = 1 + max{k : M[j, k] != 0 for some j < n_{i+1}(t)}`` (a hard TTM
that sums blocks needs the whole block; trim needs only the kept steps). Per-step ops
come from :class:`flexsnn.evaluate.cost.OpCounter`. For a uniform config ``n_i(t) = t``, and
for a static-input (direct encoding) model the first ``t`` steps are exactly a run at
uniform ``T = t``; for a frames model the run reads the first ``t`` of the ``T_1`` input
frames (the events seen so far), which differs from re-binning all events into ``t`` frames.

The *fixed-T* curve that early exit is compared against is the same run stopped at step
``t`` for every sample (accuracy of ``m_t``, cost of ``t`` steps), ``t = 1..T_G``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from flexsnn.data.encoding import model_input
from flexsnn.errors import InputError
from flexsnn.evaluate.cost import E_AC_PJ, E_MAC_PJ, OpCounter, PerSampleCost
from flexsnn.evaluate.plotting import pyplot, save_figure
from flexsnn.io import atomic_write
from flexsnn.temporal import transform_matrix
from flexsnn.train.bn_calibration import batchnorm_layers, calibrate_bn

__all__ = [
    "DEFAULT_THRESHOLDS",
    "EarlyExitPoint",
    "EarlyExitResult",
    "early_exit_sweep",
    "exit_steps",
    "plot_early_exit",
    "required_steps",
    "running_confidence",
    "write_early_exit_csv",
]

DEFAULT_THRESHOLDS = (0.0, 0.3, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 0.999, 1.01)


# ---- pure maths -------------------------------------------------------------------------------
def running_confidence(out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``out [T, B, C]`` -> (confidence ``[T, B]``, prediction ``[T, B]``) of the running mean.

    Row ``t`` uses ``mean(out[:t+1])``: confidence is its max softmax probability.
    """
    if out.dim() != 3:
        raise InputError(f"out must be [T, B, classes], got shape {tuple(out.shape)}")
    steps = torch.arange(1, out.shape[0] + 1, device=out.device, dtype=out.dtype).view(-1, 1, 1)
    mean = out.cumsum(0) / steps
    conf, pred = mean.softmax(-1).max(-1)
    return conf, pred


def exit_steps(confidence: torch.Tensor, threshold: float) -> torch.Tensor:
    """0-based exit step per sample: first ``t`` with ``confidence[t] >= threshold``, else ``T-1``."""
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or math.isnan(threshold):
        raise InputError(f"threshold must be a number (0 exits at once, > 1 never early), got {threshold!r}")
    hit = confidence >= threshold  # [T, B]
    t = confidence.shape[0]
    idx = torch.arange(t, device=confidence.device).view(-1, 1).expand_as(hit)
    return torch.where(hit, idx, torch.full_like(idx, t - 1)).min(0).values


def required_steps(time_config: Sequence[int], ttm_mode: str = "hard") -> torch.Tensor:
    """``n [G, T_G]`` long: ``n[i, t-1]`` = steps of stage ``i`` the first ``t`` outputs need."""
    cfg = [int(t) for t in time_config]
    if not cfg or any(t < 1 for t in cfg):
        raise InputError(f"time_config must be positive ints, one per stage, got {time_config!r}")
    g = len(cfg)
    need = torch.zeros(g, cfg[-1], dtype=torch.long)
    need[-1] = torch.arange(1, cfg[-1] + 1)
    for i in range(g - 2, -1, -1):
        m = transform_matrix(cfg[i], cfg[i + 1], ttm_mode) != 0  # [T_{i+1}, T_i]
        cols = torch.arange(cfg[i]).expand_as(m)
        last_in = torch.where(m, cols, torch.full_like(cols, -1)).max(1).values  # per output row
        upto = last_in.cummax(0).values + 1  # steps needed for output rows 0..j
        need[i] = upto[need[i + 1] - 1]
    return need


# ---- results ----------------------------------------------------------------------------------
@dataclass
class EarlyExitPoint(PerSampleCost):
    """One threshold (or one fixed t): accuracy and per-sample averages."""

    threshold: float | None  # None for fixed-T points
    accuracy: float
    avg_t: float  # mean exit step along the last stage's axis (1..T_G)
    acs: float
    macs: float

    def as_dict(self) -> dict:
        return {**asdict(self), "synops": self.synops, "energy_pj_estimate": self.energy_pj}


@dataclass
class EarlyExitResult:
    time_config: tuple
    points: list[EarlyExitPoint]  # one per threshold, in the order given
    fixed: list[EarlyExitPoint] = field(default_factory=list)  # stop at t = 1..T_G for every sample
    samples: int = 0
    rebinned: dict = field(default_factory=dict)  # optional {"T": accuracy}: uniform runs, input re-binned

    def as_dict(self) -> dict:
        return {
            "time_config": list(self.time_config),
            "samples": self.samples,
            "rule": "exit at the first last-stage step t with max softmax(mean(out[:t])) >= threshold",
            "energy_model": {"e_ac_pj": E_AC_PJ, "e_mac_pj": E_MAC_PJ, "note": "45 nm estimate"},
            "early_exit": [p.as_dict() for p in self.points],
            "fixed_t": [p.as_dict() for p in self.fixed],
            "uniform_rebinned": dict(self.rebinned),
        }


# ---- on a model -------------------------------------------------------------------------------
def _stage_of(name: str, num_stages: int) -> int:
    parts = name.split(".")
    if len(parts) > 1 and parts[0] == "stages" and parts[1].isdigit():
        return int(parts[1])
    return num_stages - 1  # the head runs on the last stage's output


@torch.no_grad()
def early_exit_sweep(
    model: nn.Module,
    loader: Iterable,
    time_config,
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
    calib_loader: Iterable | None = None,
    calib_batches: int = 10,
    max_batches: int | None = None,
) -> EarlyExitResult:
    """Accuracy, average exit step and per-sample ops for each threshold (rule: module docstring).

    ``model`` is a StagedNet run at ``time_config`` (int = uniform); a BN model is calibrated
    there on ``calib_loader`` first. One forward per batch serves every threshold.
    """
    if not hasattr(model, "normalize_time_config"):
        raise InputError(f"model must be a StagedNet, got {type(model).__name__}")
    cfg = model.normalize_time_config(time_config)
    thresholds = list(thresholds)
    if not thresholds:
        raise InputError("thresholds is empty; expected numbers like 0.5 0.9 0.99")
    for th in thresholds:
        exit_steps(torch.zeros(1, 1), th)  # validates each threshold
    if batchnorm_layers(model):
        if calib_loader is None:
            raise InputError("calib_loader is required: the model has BatchNorm (calibrated at time_config first)")
        calibrate_bn(model, calib_loader, cfg, calib_batches)
    need = required_steps(cfg, getattr(model, "ttm_mode", "hard"))  # [G, T_G]
    g, t_last = len(cfg), cfg[-1]
    device = next(model.parameters()).device
    confs, preds, labels, cum_acs, cum_macs = [], [], [], [], []
    was_training = model.training
    model.eval()
    try:
        with OpCounter(model, per_step=True) as counter:
            for b, (x, y) in enumerate(loader):
                if max_batches is not None and b >= max_batches:
                    break
                counter.start_batch(len(y))
                out = model(model_input(x.to(device), model), time_config=cfg)
                conf, pred = running_confidence(out.float())
                confs.append(conf.cpu()), preds.append(pred.cpu()), labels.append(y.cpu())
                acs = torch.zeros(t_last, len(y), dtype=torch.float64)
                macs = torch.zeros_like(acs)
                for tally in counter.tallies:
                    stage = _stage_of(tally.name, g)
                    for event, ops in tally.step_ops:  # [T_l, B] per call
                        if ops.shape[0] != cfg[stage]:
                            raise InputError(
                                f"layer {tally.name!r} ran at T={ops.shape[0]} but its stage {stage} runs at "
                                f"T={cfg[stage]}; early exit needs every weighted layer inside a stage or the head"
                            )
                        cum = ops.cpu().cumsum(0)[need[stage] - 1]  # [T_G, B]: ops of the steps needed
                        (acs if event else macs).add_(cum)
                cum_acs.append(acs), cum_macs.append(macs)
    finally:
        model.train(was_training)
    if not labels:
        raise InputError("loader yielded no samples; expected a non-empty split")
    conf, pred, y = torch.cat(confs, 1), torch.cat(preds, 1), torch.cat(labels)
    acs, macs = torch.cat(cum_acs, 1), torch.cat(cum_macs, 1)
    cols = torch.arange(len(y))

    def point(steps: torch.Tensor, threshold) -> EarlyExitPoint:
        correct = (pred[steps, cols] == y).double().mean()
        return EarlyExitPoint(
            threshold,
            float(correct),
            float((steps + 1).double().mean()),
            float(acs[steps, cols].mean()),
            float(macs[steps, cols].mean()),
        )

    points = [point(exit_steps(conf, th), float(th)) for th in thresholds]
    fixed = [point(torch.full((len(y),), t, dtype=torch.long), None) for t in range(t_last)]
    return EarlyExitResult(tuple(cfg), points, fixed, len(y))


# ---- reports ----------------------------------------------------------------------------------
def write_early_exit_csv(path, result: EarlyExitResult) -> None:
    """CSV rows: mode (early_exit | fixed_T), threshold, accuracy, avg_T, acs, macs, synops, energy."""
    import csv

    with atomic_write(path) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["mode", "threshold", "accuracy", "avg_T", "acs", "macs", "synops", "energy_uJ_estimate"])
        for mode, pts in (("early_exit", result.points), ("fixed_T", result.fixed)):
            for p in pts:
                writer.writerow(
                    [
                        mode,
                        "" if p.threshold is None else p.threshold,
                        f"{p.accuracy:.4f}",
                        f"{p.avg_t:.3f}",
                        f"{p.acs:.1f}",
                        f"{p.macs:.1f}",
                        f"{p.synops:.1f}",
                        f"{p.energy_pj / 1e6:.6f}",
                    ]
                )


def plot_early_exit(result: EarlyExitResult, path, title: str | None = None):
    """Two panels: accuracy vs average T and vs synaptic ops; early exit against fixed T.

    If ``result.rebinned`` holds ``{T: accuracy}`` of uniform runs that re-bin the input at
    each T (``flexsnn evaluate``), it is drawn too: for frames models it differs from the
    fixed-T prefix, which sees only the first t of the T_1 input frames.
    """
    rebinned = result.rebinned
    plt = pyplot()

    fig, axes = plt.subplots(1, 2, figsize=(10, 4), dpi=120)
    for ax, key, label in (
        (axes[0], "avg_t", "average time steps (last stage)"),
        (axes[1], "synops", "synaptic ops per sample (M)"),
    ):
        scale = 1e6 if key == "synops" else 1.0
        val = (lambda p, scale=scale: p.synops / scale) if key == "synops" else (lambda p: p.avg_t)
        pts = sorted(result.points, key=val)
        ax.plot(
            [val(p) for p in result.fixed],
            [100 * p.accuracy for p in result.fixed],
            "-s",
            color="C0",
            label="fixed T (every sample stops at t)",
        )
        ax.plot(
            [val(p) for p in pts],
            [100 * p.accuracy for p in pts],
            "-o",
            color="C3",
            label="early exit (threshold sweep)",
        )
        for p in pts:
            ax.annotate(
                f"{p.threshold:g}",
                (val(p), 100 * p.accuracy),
                fontsize=6,
                xytext=(3, -9),
                textcoords="offset points",
                color="C3",
            )
        if rebinned and key == "avg_t":
            ts = sorted(rebinned, key=int)
            ax.plot(
                [int(t) for t in ts],
                [100 * rebinned[t] for t in ts],
                "--^",
                color="0.5",
                label="uniform T, input re-binned",
            )
        ax.set_xlabel(label)
        ax.set_ylabel("accuracy (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    fig.suptitle(title or f"Early exit at config {','.join(map(str, result.time_config))}")
    fig.tight_layout()
    return save_figure(fig, path)
