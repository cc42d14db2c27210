"""StagedNet: a spiking network split into stages, each running at its own number of time steps.

A :data:`TimeConfig` gives every stage its T (``(T_1, ..., T_G)``). Stage 1 runs at ``T_1``;
between stage ``i`` and ``i+1`` a :class:`flexsnn.temporal.TTM` resamples the spike tensor from
``T_i`` to ``T_{i+1}``; an optional ``head`` (the classifier) then runs on the last stage's
output. All tensors are time-first ``[T, B, ...]``; the output is ``[T_G, B, num_classes]`` and
:meth:`StagedNet.readout` averages it over time.

Inputs (``input_kind``):
- ``"static"``: ``x`` ``[B, ...]`` (e.g. images ``[B, 3, 32, 32]``), repeated ``T_1`` times
  (direct encoding);
- ``"frames"``: ``x`` ``[T_in, B, ...]`` (e.g. event frames ``[T, B, 2, 34, 34]``), resampled to
  ``T_1`` by the input TTM when ``T_in != T_1``.

Where a ``"hard"`` or ``"trim"`` TTM raises T (it copies whole steps), the next stage's leading
per-step layers run on the ``T_i`` distinct steps and their outputs are copied instead of
their inputs: the same values for fewer conv / linear steps (:meth:`StagedNet.run_stages`).

The input TTM has its own mode (``input_ttm_mode``, default: the stage boundaries'
``ttm_mode``). The TimeConfig holds the stages' T only: the input's T is the data's (frames
binned at ``T_in``), so "the input pinned at T, every stage drawn" is a frames input at
``T_in = T`` with any TimeConfig; the input TTM maps ``T -> T_1``. E.g. the authors' DVS
Gesture net trims its 40 input frames to the first ``T_1`` (``input_ttm_mode="trim"``) and
uses hard TTMs between stages.

BatchNorm running statistics depend on the time configuration, so a BN model tracks whether
its statistics are fresh: ``bn_calibrated_for`` is the TimeConfig they were last estimated at
(:func:`flexsnn.train.calibrate_bn` calls :meth:`StagedNet.mark_calibrated`), and becomes
``None`` as soon as a forward runs in train mode. With ``require_calibration = True`` (the
default) an eval-mode forward of a BN model whose statistics are stale raises
:class:`flexsnn.errors.CalibrationError`, and one at a TimeConfig other than
``bn_calibrated_for`` issues a :class:`flexsnn.errors.CalibrationWarning` (once per config);
``require_calibration = "exact"`` makes that an error too, ``False`` turns both checks off.
"""

from __future__ import annotations

import contextlib
import numbers
import warnings
from collections.abc import Iterable, Iterator, Sequence
from typing import Union

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from flexsnn.errors import (
    CalibrationError,
    CalibrationWarning,
    ConfigError,
    InputError,
    check_choice,
    check_finite,
    check_positive_int,
)
from flexsnn.multistep import TimeFirstSequential, apply_flat, check_no_bare_peer_neurons, is_multistep, run_time_first
from flexsnn.temporal import MODES, TTM

TimeConfig = tuple[int, ...]
TimeConfigLike = Union[int, Sequence[int]]  # noqa: UP007 (a runtime alias, valid on Python 3.10)
INPUT_KINDS = ("static", "frames")

__all__ = [
    "INPUT_KINDS",
    "SharedBatchStatistics",
    "Stage",
    "StagedNet",
    "TimeConfig",
    "normalize_time_config",
    "stage_time_steps",
    "staged_from_layers",
]

#: A stage is a :class:`~flexsnn.multistep.TimeFirstSequential` (plain layers run on the
#: ``[T*B, ...]`` view, neurons and blocks on ``[T, B, ...]``).
Stage = TimeFirstSequential


def normalize_time_config(cfg: TimeConfigLike, num_stages: int) -> TimeConfig:
    """``cfg`` as a tuple of ``num_stages`` positive ints; an int means the same T everywhere.

    Raises ConfigError naming ``time_config`` and the expected form otherwise.
    """
    expected = f"an int >= 1 or a sequence of {num_stages} ints >= 1 (one per stage)"
    if _is_int(cfg):
        values: tuple = (cfg,) * num_stages
    elif isinstance(cfg, (str, bytes, dict)) or not _is_iterable(cfg):
        raise ConfigError(f"time_config must be {expected}, got {cfg!r}")
    else:
        values = tuple(cfg.tolist() if isinstance(cfg, torch.Tensor) else cfg)
        if len(values) != num_stages:
            raise ConfigError(
                f"time_config must have {num_stages} entries (one T per stage), got {len(values)}: {cfg!r}"
            )
    for v in values:
        if not _is_int(v) or v < 1:
            raise ConfigError(f"time_config must be {expected}; got {cfg!r} (entry {v!r} is not an int >= 1)")
    return tuple(int(v) for v in values)


def _is_int(v) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _is_iterable(v) -> bool:
    try:
        iter(v)
    except TypeError:
        return False
    return True


def _as_stage(module, where: str) -> TimeFirstSequential:
    if isinstance(module, TimeFirstSequential):
        return module
    if isinstance(module, nn.Sequential):  # keep child names so state_dict keys do not move
        stage = TimeFirstSequential()
        for name, child in module.named_children():
            stage.add_module(name, child)
        return stage
    if isinstance(module, (list, tuple)):
        for k, m in enumerate(module):
            if not isinstance(m, nn.Module):
                raise InputError(f"{where}[{k}] must be an nn.Module, got {type(m).__name__}")
        return TimeFirstSequential(*module)
    if isinstance(module, nn.Module):
        return TimeFirstSequential(module)
    raise InputError(f"{where} must be an nn.Module or a list of nn.Modules, got {type(module).__name__}")


class StagedNet(nn.Module):
    """Stages with a TTM at every boundary; ``forward(x, time_config=None) -> [T_G, B, classes]``.

    Args:
        stages: one entry per stage: a ``TimeFirstSequential``, an ``nn.Sequential`` or a list
            of modules (wrapped into a ``TimeFirstSequential``), or a single module.
        head: optional classifier run on the last stage's output: a multi-step module gets
            ``[T, B, ...]``; an ``nn.Sequential`` / list runs as a ``TimeFirstSequential``; any
            other module runs per time step on the ``[T*B, ...]`` view.
        ttm_mode: ``"hard"`` | ``"soft"`` | ``"trim"`` (see :mod:`flexsnn.temporal`): the TTM at
            every stage boundary.
        input_kind: ``"static"`` (``x`` ``[B, ...]``) or ``"frames"`` (``x`` ``[T_in, B, ...]``).
        time_config: initial TimeConfig (int or one int per stage). ``None``: a frames model
            runs every stage at the input's T until a config is set; a static model needs one.
        input_shape: optional per-sample shape (``None`` entries match any size), checked on
            every forward, e.g. ``(2, 34, 34)`` or ``(3, None, None)``.
        input_ttm_mode: mode of the TTM from a frames input's ``T_in`` to ``T_1``; ``None`` (the
            default) means ``ttm_mode``. Unused for static input (direct encoding repeats the
            image ``T_1`` times).

    Attributes: ``stages`` (``nn.ModuleList``), ``head``, ``ttm`` (stage boundaries),
    ``input_ttm`` (frames input -> stage 1), ``input_kind``,
    ``require_calibration`` (True, ``"exact"`` or False), ``bn_calibrated_for`` (TimeConfig or None), ``model_spec``
    (dict set by :func:`flexsnn.models.build_model`, else None).
    """

    def __init__(
        self,
        stages: Sequence,
        head: nn.Module | None = None,
        ttm_mode: str = "hard",
        input_kind: str = "static",
        time_config: TimeConfigLike | None = None,
        input_shape: Sequence[int | None] | None = None,
        input_ttm_mode: str | None = None,
    ) -> None:
        super().__init__()
        if (isinstance(stages, nn.Module) and not isinstance(stages, nn.ModuleList)) or not _is_iterable(stages):
            raise InputError(
                f"stages must be a list of stages (modules or lists of modules), got {type(stages).__name__}"
            )
        stages = list(stages)
        if not stages:
            raise InputError("stages is empty; a StagedNet needs at least one stage")
        self.stages = nn.ModuleList(_as_stage(s, f"stages[{i}]") for i, s in enumerate(stages))
        if isinstance(head, (nn.Sequential, list, tuple)):
            head = _as_stage(head, "head")
        elif head is not None and not isinstance(head, nn.Module):
            raise InputError(f"head must be None, an nn.Module or a list of modules, got {type(head).__name__}")
        self.head = head
        for i, stage in enumerate(self.stages):
            check_no_bare_peer_neurons(stage, f"stages[{i}]")
        if head is not None:
            check_no_bare_peer_neurons(head, "head")
        self.ttm = TTM(check_choice(ttm_mode, "ttm_mode", MODES))
        self.input_ttm = TTM(
            ttm_mode if input_ttm_mode is None else check_choice(input_ttm_mode, "input_ttm_mode", MODES)
        )
        self.input_kind = check_choice(input_kind, "input_kind", INPUT_KINDS)
        self.input_shape = None if input_shape is None else tuple(None if s is None else int(s) for s in input_shape)
        self._time_config: TimeConfig | None = None
        if time_config is not None:
            self.set_time_config(time_config)
        self.require_calibration: bool | str = True  # True | "exact" | False
        self.bn_calibrated_for: TimeConfig | None = None
        self._calibration_warned: set[TimeConfig] = set()
        self.model_spec: dict | None = None

    # ---- time configuration ---------------------------------------------------------------
    @property
    def num_stages(self) -> int:
        return len(self.stages)

    @property
    def ttm_mode(self) -> str:
        """Mode of the TTMs at the stage boundaries."""
        return self.ttm.mode

    @property
    def input_ttm_mode(self) -> str:
        """Mode of the TTM from a frames input's T to stage 1's T."""
        return self.input_ttm.mode

    def normalize_time_config(self, cfg: TimeConfigLike) -> TimeConfig:
        """``cfg`` validated for this net's number of stages (int -> uniform)."""
        return normalize_time_config(cfg, self.num_stages)

    def set_time_config(self, cfg: TimeConfigLike) -> None:
        """Set the TimeConfig used by forwards that pass none (int means uniform)."""
        self._time_config = self.normalize_time_config(cfg)

    @property
    def time_config(self) -> TimeConfig | None:
        """The TimeConfig set with :meth:`set_time_config` (None until one is set)."""
        return self._time_config

    @time_config.setter
    def time_config(self, cfg: TimeConfigLike) -> None:
        self.set_time_config(cfg)

    # ---- BatchNorm bookkeeping ------------------------------------------------------------
    @property
    def has_batchnorm(self) -> bool:
        """True if any BatchNorm layer keeps running statistics (they depend on the config)."""
        return any(isinstance(m, _BatchNorm) and m.track_running_stats for m in self.modules())

    def mark_calibrated(self, cfg: TimeConfigLike) -> None:
        """Record that BN running statistics were just estimated at ``cfg``."""
        self.bn_calibrated_for = self.normalize_time_config(cfg)
        self._calibration_warned = set()

    def _check_calibration(self, cfg: TimeConfig, stacklevel: int = 5) -> None:
        # stacklevel: the warning points at the line that called forward (or stage_input)
        if self.training:
            # Any train-mode forward updates BN running stats: they are stale from now on.
            self.bn_calibrated_for = None
            return
        if not self.require_calibration:
            return
        if self.bn_calibrated_for is None:
            if self.has_batchnorm:
                raise CalibrationError(
                    "this model's BatchNorm running statistics are stale (it was trained, or never calibrated, "
                    "since the last calibration); call flexsnn.train.calibrate_bn(model, loader, time_config) "
                    "before evaluating, or set model.require_calibration = False to use the statistics as they are"
                )
            return
        if cfg != self.bn_calibrated_for and cfg not in self._calibration_warned and self.has_batchnorm:
            message = (
                f"this model's BatchNorm statistics were calibrated for TimeConfig {self.bn_calibrated_for}, "
                f"not for {cfg}, the one this forward runs at; call flexsnn.train.calibrate_bn(model, loader, "
                f"{cfg}) first, or set model.require_calibration = False to use them as they are"
            )
            if self.require_calibration == "exact":
                raise CalibrationError(message)
            self._calibration_warned.add(cfg)
            warnings.warn(CalibrationWarning(message), stacklevel=stacklevel)

    # ---- forward --------------------------------------------------------------------------
    def _check_input(self, x) -> torch.Tensor:
        layout = "[B, ...]" if self.input_kind == "static" else "[T, B, ...]"
        if self.input_shape is not None:
            dims = ", ".join("*" if s is None else str(s) for s in self.input_shape)
            layout = f"[B, {dims}]" if self.input_kind == "static" else f"[T, B, {dims}]"
        if not isinstance(x, torch.Tensor):
            raise InputError(f"x must be a torch.Tensor shaped {layout}, got {type(x).__name__}")
        lead = 1 if self.input_kind == "static" else 2
        min_dim = lead + (len(self.input_shape) if self.input_shape is not None else 1)
        if x.dim() < min_dim or (self.input_shape is not None and x.dim() != min_dim):
            raise InputError(
                f"x must be {self.input_kind} input shaped {layout}, got shape {tuple(x.shape)}"
                + (
                    " (frames from a DataLoader are [B, T, ...]: transpose them to [T, B, ...])"
                    if self.input_kind == "frames"
                    else ""
                )
            )
        if self.input_shape is not None:
            got = tuple(x.shape[lead:])
            if any(s is not None and s != g for s, g in zip(self.input_shape, got)):
                raise InputError(f"x must be {self.input_kind} input shaped {layout}, got shape {tuple(x.shape)}")
        if any(s == 0 for s in x.shape[:lead]):
            raise InputError(f"x has an empty {'time or batch' if lead == 2 else 'batch'} axis: shape {tuple(x.shape)}")
        if not (x.is_floating_point() or x.is_complex()):
            x = x.to(torch.get_default_dtype())
        return check_finite(x, "x")

    def resolve_time_config(self, x: torch.Tensor, time_config: TimeConfigLike | None = None) -> TimeConfig:
        """The config a forward on ``x`` uses: the argument, else the set one, else (frames) T_in."""
        if time_config is not None:
            return self.normalize_time_config(time_config)
        if self._time_config is not None:
            return self._time_config
        if self.input_kind == "frames":
            return (int(x.shape[0]),) * self.num_stages
        raise ConfigError(
            "no time_config: a static-input StagedNet needs one; call net.set_time_config(T or (T_1, ..., T_G)) "
            "or pass forward(x, time_config=...)"
        )

    def forward(
        self, x: torch.Tensor, time_config: TimeConfigLike | None = None, stem_output: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``x`` (``[B, ...]`` static or ``[T_in, B, ...]`` frames) -> ``[T_G, B, num_classes]``.

        ``time_config`` applies to this call only (the set config is left unchanged).
        ``stem_output``: :meth:`run_stem`'s result for this ``x`` (static input only); stage 1
        then starts after the stem, from that ``[B, ...]`` tensor repeated ``T_1`` times.
        """
        x = self._check_input(x)
        cfg = self.resolve_time_config(x, time_config)
        self._check_calibration(cfg)
        x = self._first_stage_input(x, cfg, stem_output)
        x = self.run_stages(x, cfg, 0, self.num_stages, after_stem=stem_output is not None)
        return self.run_head(x)

    # ---- a forward in pieces: input, a range of stages, head ------------------------------
    # forward(x, cfg) == run_head(run_stages(*stage_input(x, cfg), 0, G)); running stages
    # [0, k) once and [k, G) per config is how configs sharing T_1..T_k share that work.
    def stage_input(
        self, x: torch.Tensor, time_config: TimeConfigLike | None = None, stem_output: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, TimeConfig]:
        """Stage 1's input ``[T_1, B, ...]`` for ``x`` and the resolved TimeConfig (see :meth:`forward`)."""
        x = self._check_input(x)
        cfg = self.resolve_time_config(x, time_config)
        self._check_calibration(cfg, stacklevel=3)
        return self._first_stage_input(x, cfg, stem_output), cfg

    def _first_stage_input(self, x: torch.Tensor, cfg: TimeConfig, stem_output: torch.Tensor | None) -> torch.Tensor:
        if stem_output is not None:
            if self.input_kind != "static" or stem_output.shape[0] != x.shape[0]:
                raise InputError(
                    f"stem_output must be run_stem(x) of a static input: a [B={x.shape[0]}, ...] tensor, "
                    f"got shape {tuple(stem_output.shape)} for input_kind={self.input_kind!r}"
                )
            return stem_output.unsqueeze(0).expand(cfg[0], *stem_output.shape)
        if self.input_kind == "static":
            return x.unsqueeze(0).expand(cfg[0], *x.shape)  # direct encoding (a view, no copy)
        return self.input_ttm(x, cfg[0])

    def run_stages(
        self, x: torch.Tensor, time_config: TimeConfig, start: int, stop: int, after_stem: bool = False
    ) -> torch.Tensor:
        """Stages ``start .. stop - 1`` (0-based) on ``x``: stage ``start``'s input for
        ``start == 0`` (:meth:`stage_input`), else stage ``start - 1``'s output, which the TTM
        takes to ``T_{start}`` first. ``after_stem``: stage 1's input is a stem output, so its
        stem layers are skipped."""
        if not 0 <= start <= stop <= self.num_stages:
            raise InputError(f"stages [{start}, {stop}) are not a range of this net's {self.num_stages} stages")
        for i in range(start, stop):
            if i > 0 and time_config[i] > x.shape[0] and (lead := self._steps_before_repeat(i)):
                # The TTM copies steps here: the stage's leading per-step layers run on the
                # T_{i-1} distinct steps and their outputs are copied instead of their inputs.
                layers = list(self.stages[i])
                x = run_time_first(layers[:lead], x)
                x = run_time_first(layers[lead:], self.ttm(x, time_config[i]))
                continue
            if i > 0:
                x = self.ttm(x, time_config[i])
            if i == 0 and after_stem:
                x = run_time_first(list(self.stages[0])[self.stem_length() :], x)
            else:
                x = self.stages[i](x)
        return x

    def _steps_before_repeat(self, i: int) -> int:
        """How many leading layers of stage ``i`` an up-sampling TTM into it may follow instead
        of precede (0: none).

        A "hard" or "trim" TTM that raises T copies whole time steps, and a layer that maps each
        step of each sample on its own, without randomness or state, gives copied outputs for
        copied inputs: :data:`STEM_LAYERS` types (exact types) except train-mode BatchNorm (its
        batch statistics mix the samples). Only while no forward hook would see the difference
        (on the net's TTM, the stage, those layers, or every module).
        """
        stage = self.stages[i]
        if self.ttm.mode == "soft" or type(stage) is not TimeFirstSequential or not without_global_hooks():
            return 0
        if has_forward_hooks(self.ttm) or has_forward_hooks(stage):
            return 0
        count = 0
        for layer in stage:
            if type(layer) not in STEM_LAYERS or has_forward_hooks(layer):
                break
            if isinstance(layer, _BatchNorm) and (layer.training or layer.running_mean is None):
                break
            count += 1
        return count

    def run_head(self, x: torch.Tensor) -> torch.Tensor:
        """The head on the last stage's output (``x`` itself without a head)."""
        if self.head is None:
            return x
        if is_multistep(self.head) or isinstance(self.head, TimeFirstSequential):
            return self.head(x)
        return apply_flat(self.head, x)

    # ---- the stem: stage 1's layers before its first neuron, on static input --------------
    def stem_length(self) -> int:
        """How many leading layers of stage 1 form the stem (0 for frames input).

        With direct encoding every time step of stage 1 sees the same image, so its leading
        stateless, deterministic layers (:data:`STEM_LAYERS`: conv, linear, BatchNorm,
        pooling, flatten) compute the same ``[B, ...]`` result at every step and for every
        TimeConfig: :meth:`run_stem` computes it once.
        """
        if self.input_kind != "static":
            return 0
        count = 0
        for layer in self.stages[0]:
            if type(layer) not in STEM_LAYERS:
                break
            count += 1
        return count

    def run_stem(self, x: torch.Tensor, first_steps: Sequence[int]) -> torch.Tensor:
        """The stem's output ``[B, ...]`` for static ``x`` ``[B, ...]``, shared by the forwards to come.

        ``first_steps``: stage 1's T of each forward that will use the result (one entry per
        TimeConfig, in order). In train mode each BatchNorm of the stem updates its running
        statistics once per entry, exactly as those forwards would have on the repeated
        ``[T_1*B, ...]`` input: same batch mean and variance, the unbiased variance with
        ``n = T_1 * B * H * W``, ``num_batches_tracked`` counted per forward. Pass the result
        as ``forward(x, cfg, stem_output=...)``.
        """
        if self.input_kind != "static":
            raise InputError(f"run_stem needs a static-input StagedNet, this one has input_kind={self.input_kind!r}")
        steps = [check_positive_int(t, "first_steps[i]") for t in first_steps]
        if not steps:
            raise InputError("first_steps is empty; expected stage 1's T of at least one forward")
        x = self._check_input(x)
        for layer in list(self.stages[0])[: self.stem_length()]:
            if isinstance(layer, _BatchNorm) and layer.training and layer.track_running_stats:
                x = _stem_batch_norm(layer, x, steps)
            else:
                x = layer(x)
        return x

    # ---- streaming ------------------------------------------------------------------------
    def _stateful_modules(self) -> list[nn.Module]:
        return [m for m in self.modules() if m is not self and hasattr(m, "stateful") and hasattr(m, "reset_state")]

    @property
    def stateful(self) -> bool:
        """True when every neuron carries its membrane across forwards (streaming mode).

        Setting it sets every neuron's ``stateful`` and resets their state. Chunks of one
        stream fed one after the other give exactly the output of one forward on the whole
        stream when every chunk and stage runs at the same T (set the TimeConfig to the chunk
        length): the TTMs are then identities. A TTM that changes T resamples each chunk on
        its own: hard and soft down-sampling by an integer ratio ``r`` with chunks that are
        multiples of ``r`` form the same blocks and agree; blocks that would span a chunk
        boundary, and ``"trim"`` (the first steps of each chunk, not of the stream), differ.
        Static input is repeated ``T_1`` times per call.
        """
        mods = self._stateful_modules()
        return bool(mods) and all(m.stateful for m in mods)

    @stateful.setter
    def stateful(self, value: bool) -> None:
        if not isinstance(value, bool):
            raise InputError(f"stateful must be True or False, got {value!r}")
        for m in self._stateful_modules():
            m.stateful = value
            m.reset_state()

    def reset_state(self) -> None:
        """Start the next forward from a zero membrane in every neuron (streaming mode)."""
        for m in self._stateful_modules():
            m.reset_state()

    @staticmethod
    def readout(out: torch.Tensor) -> torch.Tensor:
        """Time-averaged output: ``[T, B, classes]`` -> ``[B, classes]``."""
        return out.mean(0)

    def extra_repr(self) -> str:
        modes = f"ttm_mode={self.ttm_mode!r}"
        if self.input_kind == "frames":
            modes += f", input_ttm_mode={self.input_ttm_mode!r}"
        return f"input_kind={self.input_kind!r}, num_stages={self.num_stages}, {modes}, time_config={self._time_config}"


def staged_from_layers(
    layers: Sequence[nn.Module],
    boundaries: Sequence[int],
    head: nn.Module | None = None,
    **kwargs,
) -> StagedNet:
    """Split a flat list of layers into stages at ``boundaries`` and build a :class:`StagedNet`.

    ``boundaries=[3, 6]`` gives stages ``layers[0:3]``, ``layers[3:6]``, ``layers[6:]``; the
    indices must be increasing and strictly inside the list (every stage non-empty); ``[]``
    gives one stage. ``kwargs`` go to :class:`StagedNet`.
    """
    layers = list(layers.children()) if isinstance(layers, nn.Sequential) else list(layers)
    if not layers:
        raise InputError("layers is empty; expected a list of nn.Modules to split into stages")
    bounds = list(boundaries)
    expected = f"increasing ints strictly between 0 and {len(layers)} (the number of layers)"
    if not all(_is_int(b) for b in bounds):
        raise InputError(f"boundaries must be {expected}, got {boundaries!r}")
    if any(b <= 0 or b >= len(layers) for b in bounds) or any(a >= b for a, b in zip(bounds, bounds[1:])):
        raise InputError(f"boundaries must be {expected}, got {boundaries!r}")
    edges = [0, *bounds, len(layers)]
    stages = [layers[a:b] for a, b in zip(edges, edges[1:])]
    return StagedNet(stages, head=head, **kwargs)


def stage_time_steps(net: StagedNet, time_config: TimeConfigLike | None = None) -> list[tuple[int, int]]:
    """``[(stage index, T), ...]`` for ``time_config`` (default: the net's set config), for reports."""
    cfg = net.normalize_time_config(time_config) if time_config is not None else net.time_config
    if cfg is None:
        raise ConfigError("the net has no time_config set; pass one: stage_time_steps(net, time_config)")
    return list(enumerate(cfg))


def without_global_hooks() -> bool:
    """No global forward hook is registered: one may count on seeing every module's forward
    (e.g. an op counter), which rules out running a layer fewer times than written."""
    return not (nn.modules.module._global_forward_hooks or nn.modules.module._global_forward_pre_hooks)


def has_forward_hooks(module: nn.Module) -> bool:
    """``module`` itself carries forward (pre-)hooks."""
    return bool(module._forward_hooks or module._forward_pre_hooks)


#: Layer types a static input's stem may hold (exact types: a subclass may add randomness or
#: state). Each gives the same result on an image however often it is repeated over time.
STEM_LAYERS: tuple[type[nn.Module], ...] = (
    nn.Conv1d,
    nn.Conv2d,
    nn.Conv3d,
    nn.Linear,
    nn.BatchNorm1d,
    nn.BatchNorm2d,
    nn.BatchNorm3d,
    nn.AvgPool1d,
    nn.AvgPool2d,
    nn.AvgPool3d,
    nn.MaxPool1d,
    nn.MaxPool2d,
    nn.MaxPool3d,
    nn.AdaptiveAvgPool1d,
    nn.AdaptiveAvgPool2d,
    nn.AdaptiveAvgPool3d,
    nn.Flatten,
    nn.Identity,
)


def _stem_batch_norm(bn: _BatchNorm, x: torch.Tensor, steps: Sequence[int]) -> torch.Tensor:
    """Train-mode BatchNorm of ``x`` ``[B, C, ...]`` standing for ``len(steps)`` forwards on
    ``x`` repeated ``steps[k]`` times: the batch statistics of a repeated batch are those of
    ``x``; only the unbiased variance's ``n`` and the number of updates differ."""
    per_copy = x.numel() // x.shape[1]
    if per_copy > 1:
        y = F.batch_norm(x, None, None, bn.weight, bn.bias, True, 0.0, bn.eps)
    else:  # one value per channel is refused; two copies have the statistics of T copies
        y = F.batch_norm(torch.cat([x, x]), None, None, bn.weight, bn.bias, True, 0.0, bn.eps)[: x.shape[0]]
    with torch.no_grad():
        var, mean = torch.var_mean(x.detach(), dim=[d for d in range(x.dim()) if d != 1], correction=0)
        for t in steps:
            n = t * per_copy
            bn.num_batches_tracked.add_(1)
            factor = bn.momentum if bn.momentum is not None else 1.0 / float(bn.num_batches_tracked)
            bn.running_mean.mul_(1.0 - factor).add_(mean.to(bn.running_mean.dtype), alpha=factor)
            unbiased = var * (n / (n - 1)) if n > 1 else var
            bn.running_var.mul_(1.0 - factor).add_(unbiased.to(bn.running_var.dtype), alpha=factor)
    return y


class SharedBatchStatistics:
    """The batch statistics of one train-mode forward through some modules' BatchNorms, for
    several forwards that share it: :meth:`capture` runs the forward without touching the
    running statistics, and each :meth:`update` then updates them as one of those forwards
    would have (``r <- (1 - m) r + m s``; with ``momentum=None`` the cumulative average),
    so calling it at each forward's turn keeps every BatchNorm's updates in their order.
    """

    def __init__(self, modules: nn.Module | Iterable[nn.Module]) -> None:
        roots = [modules] if isinstance(modules, nn.Module) else list(modules)
        self.batch_norms = [
            m
            for root in roots
            for m in root.modules()
            if isinstance(m, _BatchNorm) and m.training and m.track_running_stats
        ]
        self.statistics: list[tuple[torch.Tensor, torch.Tensor]] | None = None

    @contextlib.contextmanager
    def capture(self) -> Iterator[None]:
        """Run the forward inside. Each BatchNorm runs on stand-in running buffers with
        momentum 1, which end up holding its batch statistics exactly; its own buffers are
        untouched. The stand-ins are kept as the statistics and never written again, since
        the forward's autograd graph saved them (later in-place updates of the real buffers
        would otherwise fail its version check)."""
        real = [(bn.running_mean, bn.running_var, bn.num_batches_tracked, bn.momentum) for bn in self.batch_norms]
        for bn, (mean, var, tracked, _) in zip(self.batch_norms, real):
            bn.running_mean, bn.running_var, bn.num_batches_tracked = mean.clone(), var.clone(), tracked.clone()
            bn.momentum = 1.0
        try:
            yield
            self.statistics = [(bn.running_mean, bn.running_var) for bn in self.batch_norms]
        finally:
            for bn, (mean, var, tracked, momentum) in zip(self.batch_norms, real):
                bn.running_mean, bn.running_var, bn.num_batches_tracked = mean, var, tracked
                bn.momentum = momentum

    def update(self) -> None:
        """One forward's update of every BatchNorm's running statistics."""
        if self.statistics is None:
            raise RuntimeError("no batch statistics captured yet; run the forward inside capture() first")
        with torch.no_grad():
            for bn, (mean, var) in zip(self.batch_norms, self.statistics):
                bn.num_batches_tracked.add_(1)
                factor = bn.momentum if bn.momentum is not None else 1.0 / float(bn.num_batches_tracked)
                bn.running_mean.mul_(1.0 - factor).add_(mean, alpha=factor)
                bn.running_var.mul_(1.0 - factor).add_(var, alpha=factor)
