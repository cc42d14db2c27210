"""Synaptic-operation counts per weighted layer, measured on data, and an energy estimate.

Every ``Conv1d/2d/3d`` and ``Linear`` of a model gets a forward hook. For each call it looks
at the layer's input tensor and counts, per input element, how many output neurons that
element reaches (its exact *fan-out*):

- ``Linear(in, out)``: every input feature reaches ``out`` outputs;
- ``ConvNd``: ``out_channels / groups`` times the number of output positions whose receptive
  field covers the input position. It is computed exactly (stride, padding borders,
  dilation, padding modes) as the input-gradient of a one-channel all-ones convolution, so
  border positions have a smaller fan-out than centre ones.

What a call costs depends on what the input holds (decided per call, on the whole tensor):

- **event-valued** input, every value a non-negative integer: spikes (0/1), multi-spikes,
  the counts a hard TTM makes when it sums steps, event-frame counts. Each unit of value is
  one event delivered to its fan-out, so the layer does ``sum(value * fan_out)``
  **accumulates** (ACs; a count of 3 is 3 events);
- **real-valued** input (static images under direct encoding, average-pooled spikes, a soft
  TTM's fractions, BN outputs): the layer does ``sum((value != 0) * fan_out)`` **MACs**, i.e.
  every nonzero input is multiplied by each weight it touches. For a dense input this is the
  usual dense MAC count, minus products with zero padding.

``synops = ACs + MACs``. Layers without weights (BN, pooling, neurons, TTMs) are not counted.
All counts are **per sample**: hooks see the ``[T*B, ...]`` view of a StagedNet (or
``[T, B, ...]``), so the totals are divided by the batch size, never by T.

Energy (an **estimate**, :func:`energy_pj`): ``ACs * e_ac + MACs * e_mac`` with the 45 nm CMOS,
32-bit floating-point figures of Horowitz (ISSCC 2014) that SNN papers commonly quote:
``E_AC_PJ = 0.9`` pJ per add, ``E_MAC_PJ = 4.6`` pJ per multiply-accumulate (3.7 pJ multiply +
0.9 pJ add). It ignores memory access, data movement and neuron state updates, which often
dominate on real hardware; use it to compare configurations of one model, not chips.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.conv import _ConvNd

from flexsnn.data.encoding import model_input
from flexsnn.errors import InputError

#: Energy per accumulate (pJ): 32-bit float add, 45 nm (Horowitz, ISSCC 2014). An estimate.
E_AC_PJ = 0.9
#: Energy per multiply-accumulate (pJ): 3.7 pJ multiply + 0.9 pJ add, 45 nm. An estimate.
E_MAC_PJ = 4.6

WEIGHTED_LAYERS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
_CONV_FN = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}

__all__ = [
    "E_AC_PJ",
    "E_MAC_PJ",
    "LayerOps",
    "OpCounter",
    "OpCounts",
    "WEIGHTED_LAYERS",
    "accuracy_and_ops",
    "conv_fanout_map",
    "count_ops",
    "energy_pj",
    "is_event_valued",
    "layer_ops",
    "weighted_layers",
]


# ---- pure maths -------------------------------------------------------------------------------
def is_event_valued(x: torch.Tensor) -> bool:
    """True if every value of ``x`` is a non-negative integer (spikes, counts): ACs, not MACs."""
    if not x.is_floating_point():
        return bool((x >= 0).all())
    return bool(((x >= 0) & (x == torch.floor(x))).all())


@functools.lru_cache(maxsize=256)
def _fanout_positions(
    kernel: tuple, stride: tuple, padding, dilation: tuple, padding_mode: str, reversed_padding: tuple, spatial: tuple
) -> torch.Tensor:
    dims = len(spatial)
    with torch.enable_grad():
        x = torch.ones(1, 1, *spatial, dtype=torch.float64, requires_grad=True)
        inp = x
        if padding_mode != "zeros":  # padded copies of border inputs reach extra outputs
            inp = F.pad(x, reversed_padding, mode=padding_mode)
            padding = 0
        weight = torch.ones(1, 1, *kernel, dtype=torch.float64)
        out = _CONV_FN[dims](inp, weight, None, stride, padding, dilation, 1)
        (grad,) = torch.autograd.grad(out.sum(), x)
    return grad[0, 0].detach()


def conv_fanout_map(layer: _ConvNd, spatial: Sequence[int]) -> torch.Tensor:
    """Fan-out of every input position of ``layer`` for an input of spatial size ``spatial``.

    Returns a float64 CPU tensor shaped ``spatial``: ``out_channels / groups`` times the number
    of output positions that read the position (exact at borders, for any stride, padding,
    dilation and padding mode). The fan-out is the same for every input channel.
    """
    if not isinstance(layer, _ConvNd) or isinstance(layer, nn.modules.conv._ConvTransposeNd):
        raise InputError(f"layer must be a torch ConvNd (not transposed), got {type(layer).__name__}")
    dims = len(layer.kernel_size)
    spatial = tuple(int(s) for s in spatial)
    if len(spatial) != dims:
        raise InputError(f"spatial must have {dims} sizes for {type(layer).__name__}, got {spatial}")
    padding = layer.padding if isinstance(layer.padding, str) else tuple(layer.padding)
    positions = _fanout_positions(
        tuple(layer.kernel_size),
        tuple(layer.stride),
        padding,
        tuple(layer.dilation),
        layer.padding_mode,
        tuple(layer._reversed_padding_repeated_twice),
        spatial,
    )
    return positions * (layer.out_channels // layer.groups)


def layer_ops(layer: nn.Module, x: torch.Tensor) -> tuple[bool, torch.Tensor]:
    """Ops of one call of a weighted ``layer`` on input ``x``, per leading row.

    ``x`` is what the layer receives: ``[N, C, *spatial]`` for a conv (``N`` = T*B rows),
    ``[..., in_features]`` for a Linear (every leading index is a row). Returns
    ``(event_valued, ops [rows] float64)``: ACs per row if the input is event-valued, else
    MACs per row (see the module docstring).
    """
    event = is_event_valued(x)
    if isinstance(layer, nn.Linear):
        rows = x.reshape(-1, x.shape[-1])
        per_row = rows.sum(1) if event else (rows != 0).sum(1)
        return event, per_row.double() * layer.out_features
    if isinstance(layer, _ConvNd):
        dims = len(layer.kernel_size)
        if x.dim() == dims + 1:  # unbatched [C, *spatial]
            x = x.unsqueeze(0)
        per_pos = x.sum(1) if event else (x != 0).sum(1)  # channel sums: exact for counts < 2**24
        fanout = conv_fanout_map(layer, x.shape[2:]).to(per_pos.device)
        return event, (per_pos.double() * fanout).flatten(1).sum(1)
    raise InputError(f"layer must be one of {[c.__name__ for c in WEIGHTED_LAYERS]}, got {type(layer).__name__}")


def energy_pj(acs: float, macs: float, e_ac_pj: float = E_AC_PJ, e_mac_pj: float = E_MAC_PJ) -> float:
    """Estimated energy in pJ: ``acs * e_ac_pj + macs * e_mac_pj`` (45 nm defaults; an estimate)."""
    return float(acs) * e_ac_pj + float(macs) * e_mac_pj


class PerSampleCost:
    """Mixin for results carrying per-sample ``acs`` and ``macs``: their sum and energy."""

    acs: float
    macs: float

    @property
    def synops(self) -> float:
        return self.acs + self.macs

    @property
    def energy_pj(self) -> float:
        """Estimated energy per sample (pJ), 45 nm figures; an estimate."""
        return energy_pj(self.acs, self.macs)


def weighted_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Named Conv/Linear modules of ``model``, in registration order."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, WEIGHTED_LAYERS)]


# ---- results ----------------------------------------------------------------------------------
@dataclass
class LayerOps:
    """Per-sample ops of one weighted layer."""

    layer: str  # module name inside the model
    kind: str  # Conv2d, Linear, ...
    input: str  # "events" (ACs), "real" (MACs) or "events+real" (varied between calls)
    time_steps: int  # T the layer ran at (rows / batch size per call), 0 if never called
    acs: float  # accumulates per sample
    macs: float  # multiply-accumulates per sample

    @property
    def synops(self) -> float:
        return self.acs + self.macs

    def as_dict(self) -> dict:
        return {**asdict(self), "synops": self.synops}


@dataclass
class OpCounts:
    """Per-sample op counts of a model at one TimeConfig, measured on ``samples`` samples."""

    time_config: tuple | None
    samples: int
    layers: list[LayerOps] = field(default_factory=list)

    @property
    def acs(self) -> float:
        return sum(l.acs for l in self.layers)

    @property
    def macs(self) -> float:
        return sum(l.macs for l in self.layers)

    @property
    def synops(self) -> float:
        return self.acs + self.macs

    def energy_pj(self, e_ac_pj: float = E_AC_PJ, e_mac_pj: float = E_MAC_PJ) -> float:
        """Estimated energy per sample in pJ (see :func:`energy_pj`)."""
        return energy_pj(self.acs, self.macs, e_ac_pj, e_mac_pj)

    def as_dict(self) -> dict:
        return {
            "time_config": None if self.time_config is None else list(self.time_config),
            "samples": self.samples,
            "acs": self.acs,
            "macs": self.macs,
            "synops": self.synops,
            "energy_pj_estimate": self.energy_pj(),
            "energy_model": {"e_ac_pj": E_AC_PJ, "e_mac_pj": E_MAC_PJ},
            "layers": [l.as_dict() for l in self.layers],
        }

    def format_table(self) -> str:
        """Plain-text table: one row per layer, then the total."""
        lines = [f"{'layer':<28} {'input':<11} {'T':>3} {'ACs':>14} {'MACs':>14}"]
        for l in self.layers:
            lines.append(f"{l.layer:<28} {l.input:<11} {l.time_steps:>3} {l.acs:>14,.0f} {l.macs:>14,.0f}")
        lines.append(f"{'total':<28} {'':<11} {'':>3} {self.acs:>14,.0f} {self.macs:>14,.0f}")
        return "\n".join(lines)


# ---- measuring --------------------------------------------------------------------------------
class _LayerTally:
    def __init__(self, name: str, module: nn.Module):
        self.name, self.module = name, module
        self.acs = self.macs = 0.0
        self.kinds: set[str] = set()
        self.time_steps = 0
        self.step_ops: list[tuple[bool, torch.Tensor]] = []  # this batch, per call: (event, [T_l, B] ops)


class OpCounter:
    """Hooks on every weighted layer of ``model`` that tally ACs / MACs while active.

    Use as a context manager around forwards, calling :meth:`start_batch` with each batch's
    size first (hooks see ``[T*B, ...]`` rows and need B to recover T and per-sample counts)::

        with OpCounter(model) as counter:
            for x, y in loader:
                counter.start_batch(len(y)); model(x)
        counts = counter.result(time_config)

    With ``per_step=True`` every call also keeps its ops per time step and sample,
    ``tally.step_ops``: a list of ``(event_valued, ops [T_l, B])`` per call for the current batch
    (early exit needs them).
    """

    def __init__(self, model: nn.Module, per_step: bool = False):
        self.model = model
        self.per_step = per_step
        self.tallies = [_LayerTally(name, m) for name, m in weighted_layers(model)]
        if not self.tallies:
            raise InputError("model has no Conv/Linear layers to count synaptic operations on")
        self._handles: list = []
        self.batch_size: int | None = None
        self.samples = 0

    def __enter__(self) -> OpCounter:
        for tally in self.tallies:
            self._handles.append(tally.module.register_forward_hook(self._hook(tally)))
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def start_batch(self, batch_size: int) -> None:
        """Announce the next forward's batch size (samples are counted per batch)."""
        self.batch_size = int(batch_size)
        self.samples += self.batch_size
        for tally in self.tallies:
            tally.step_ops = []

    def _hook(self, tally: _LayerTally):
        def hook(module, inputs, output):
            if self.batch_size is None:
                raise InputError("OpCounter.start_batch(batch_size) must be called before each forward")
            with torch.no_grad():
                event, per_row = layer_ops(module, inputs[0].detach())
            total = float(per_row.sum())
            if event:
                tally.acs += total
            else:
                tally.macs += total
            tally.kinds.add("events" if event else "real")
            rows = per_row.numel()
            if rows % self.batch_size:
                raise InputError(
                    f"layer {tally.name!r} got {rows} rows, not a multiple of the batch size {self.batch_size}; "
                    "expected time-first [T*B, ...] or [T, B, ...] inputs"
                )
            tally.time_steps = rows // self.batch_size
            if self.per_step:  # rows are t-major (index t*B + b) in both layouts
                tally.step_ops.append((event, per_row.reshape(tally.time_steps, self.batch_size)))

        return hook

    def result(self, time_config: Sequence[int] | None = None) -> OpCounts:
        """Per-sample counts over every batch seen so far."""
        if self.samples == 0:
            raise InputError("no samples were counted; expected at least one batch")
        layers = [
            LayerOps(
                t.name,
                type(t.module).__name__,
                "+".join(sorted(t.kinds)) or "none",
                t.time_steps,
                t.acs / self.samples,
                t.macs / self.samples,
            )
            for t in self.tallies
        ]
        return OpCounts(None if time_config is None else tuple(time_config), self.samples, layers)


@torch.no_grad()
def accuracy_and_ops(
    model: nn.Module,
    loader: Iterable,
    time_config,
    max_batches: int | None = None,
) -> tuple[float, OpCounts]:
    """One eval pass at ``time_config``: top-1 accuracy of the time-averaged output and op counts.

    ``loader`` yields ``(x, y)`` as the evaluation loaders do (frames batch-first ``[B, T, ...]``).
    BN models must be calibrated for ``time_config`` first (:func:`flexsnn.train.calibrate_bn`).
    """
    device = next(model.parameters()).device
    cfg = model.normalize_time_config(time_config) if hasattr(model, "normalize_time_config") else time_config
    was_training = model.training
    model.eval()
    correct = 0
    try:
        with OpCounter(model) as counter:
            for i, (x, y) in enumerate(loader):
                if max_batches is not None and i >= max_batches:
                    break
                counter.start_batch(len(y))
                out = model(model_input(x.to(device), model), time_config=cfg)
                correct += int((out.mean(0).argmax(1) == y.to(device)).sum())
    finally:
        model.train(was_training)
    if counter.samples == 0:
        raise InputError("loader yielded no samples; expected a non-empty split")
    cfg_tuple = tuple(cfg) if isinstance(cfg, (tuple, list)) else (cfg,)
    return correct / counter.samples, counter.result(cfg_tuple)


def count_ops(
    model: nn.Module,
    loader: Iterable,
    time_config,
    max_batches: int | None = None,
) -> OpCounts:
    """Per-sample ACs / MACs of every weighted layer at ``time_config``, measured on ``loader``."""
    return accuracy_and_ops(model, loader, time_config, max_batches)[1]
