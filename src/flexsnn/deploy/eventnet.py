"""A plain, numpy-only description of a deployable spiking network (no torch needed).

An :class:`EventNet` is an ordered list of layer specs that the event-driven simulator
(:mod:`flexsnn.deploy.simulator`) and its pure-Python oracle (:mod:`flexsnn.deploy.reference`)
consume. Layouts are channel-first, one sample, no batch and no time axis:

- :class:`Conv`: ``weight`` float32 ``[C_out, C_in, kh, kw]``, ``stride`` and ``padding``
  ``(rows, cols)``, zero padding, no bias. Output map ``[C_out, H_out, W_out]``.
- :class:`SumPool`: ``kernel`` and ``stride`` ``(rows, cols)``. A spike at ``(c, y, x)`` is
  routed, unchanged (no weight, no neuron), to every pooled position ``(c, oy, ox)`` whose
  window contains it; with ``stride == kernel`` that is exactly ``(c, y // kh, x // kw)``.
  Spikes that fall in no window (the rows/columns beyond ``H_out * stride`` that a floor-mode
  pool drops) are dropped.
- :class:`Flatten`: ``[C, H, W] -> [C * H * W]``; a neuron's flat index ``c * H * W + y * W + x``
  is unchanged, so flatten only changes the shape.
- :class:`Linear`: ``weight`` float32 ``[out, in]``, no bias.

Every weighted layer (Conv, Linear) carries a :class:`NeuronSpec` (``neuron``) except the last
one, the readout: its accumulated input is the network's class score. The readout may carry a
neuron too; that neuron only counts "output spikes" (as on a chip whose output layer spikes)
and never changes the scores. Without one, output spikes are counted with the default
deployment neuron ``NeuronSpec()`` (IF, threshold 1, lower bound -1, multi-spike, subtract).

Structure rule: routing ops (SumPool, Flatten) sit between a spiking output (or the input
map) and the next weighted layer, e.g. ``SumPool(4) -> Conv -> SumPool(2) -> Conv -> Flatten
-> Linear``. The input map is ``[P, H, W]`` for an event sensor of size ``(W, H, P)``: an event
``(x, y, t, p)`` is one spike at ``(p, y, x)``.

:func:`walk_torch` is the one walker from a torch model (a flexsnn StagedNet or any
``nn.Sequential``) to its deployable layers, with the accepted modules and the folding of
average pooling; :meth:`EventNet.from_torch` builds an EventNet from it, and the NIR export
(:mod:`flexsnn.deploy.nir`) writes its nodes from the same steps.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from flexsnn.errors import InputError

__all__ = ["NeuronSpec", "Conv", "SumPool", "Flatten", "Linear", "EventNet", "RESETS", "DeployStep", "walk_torch"]

RESETS = ("subtract", "hard")


def _pair(value: Any, name: str, minimum: int) -> tuple[int, int]:
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        value = (int(value), int(value))
    try:
        a, b = (int(v) for v in value)
        ok = all(float(v) == int(v) for v in value)
    except (TypeError, ValueError):
        ok = False
    if not ok or a < minimum or b < minimum:
        raise InputError(f"{name} must be an int >= {minimum} or a pair (rows, cols) of them, got {value!r}")
    return a, b


@dataclass(frozen=True)
class NeuronSpec:
    """Integrate-and-fire neuron parameters of one weighted layer.

    v_th: threshold > 0. v_min: lower bound of the membrane (applied after every delivery) or
    None for no bound. multi_spike: fire floor(u / v_th) spikes at once (else at most one per
    delivery). reset: "subtract" (u -= n * v_th) or "hard" (u = 0 after firing).
    tau: optional leak time constant in the events' time unit; the membrane decays as
    exp(-dt / tau), applied lazily when a neuron next receives input. None = no leak (IF).
    """

    v_th: float = 1.0
    v_min: float | None = -1.0
    multi_spike: bool = True
    reset: str = "subtract"
    tau: float | None = None

    def __post_init__(self) -> None:
        v_th = float(self.v_th)
        if not math.isfinite(v_th) or v_th <= 0:
            raise InputError(f"NeuronSpec.v_th must be a finite number > 0, got {self.v_th!r}")
        object.__setattr__(self, "v_th", v_th)
        if self.v_min is not None:
            v_min = float(self.v_min)
            if not math.isfinite(v_min) or v_min >= v_th:
                raise InputError(
                    f"NeuronSpec.v_min must be None or a finite number below v_th={v_th}, got {self.v_min!r}"
                )
            object.__setattr__(self, "v_min", v_min)
        if self.reset not in RESETS:
            raise InputError(f"NeuronSpec.reset must be one of {RESETS}, got {self.reset!r}")
        object.__setattr__(self, "multi_spike", bool(self.multi_spike))
        if self.tau is not None:
            tau = float(self.tau)
            if not math.isfinite(tau) or tau <= 0:
                raise InputError(f"NeuronSpec.tau must be None (no leak) or a finite number > 0, got {self.tau!r}")
            object.__setattr__(self, "tau", tau)


def _check_weight(weight: Any, ndim: int, name: str, form: str) -> np.ndarray:
    try:
        w = np.ascontiguousarray(np.asarray(weight, dtype=np.float32))
    except (TypeError, ValueError) as exc:
        raise InputError(f"{name} must be a float array shaped {form}: {exc}") from None
    if w.ndim != ndim or 0 in w.shape:
        raise InputError(f"{name} must be a non-empty float array shaped {form}, got shape {w.shape}")
    if not np.isfinite(w).all():
        raise InputError(f"{name} contains NaN or infinite values; expected finite weights")
    return w


@dataclass
class Conv:
    """2-D convolution, weight float32 [C_out, C_in, kh, kw], zero padding, no bias."""

    weight: np.ndarray
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    neuron: NeuronSpec | None = field(default_factory=NeuronSpec)

    def __post_init__(self) -> None:
        self.weight = _check_weight(self.weight, 4, "Conv.weight", "[C_out, C_in, kh, kw]")
        self.stride = _pair(self.stride, "Conv.stride", 1)
        self.padding = _pair(self.padding, "Conv.padding", 0)

    def output_shape(self, shape: tuple[int, ...]) -> tuple[int, int, int]:
        c_out, c_in, kh, kw = self.weight.shape
        if len(shape) != 3 or shape[0] != c_in:
            raise InputError(
                f"Conv with weight {self.weight.shape} expects an input map [C_in={c_in}, H, W], got {shape}"
            )
        h = (shape[1] + 2 * self.padding[0] - kh) // self.stride[0] + 1
        w = (shape[2] + 2 * self.padding[1] - kw) // self.stride[1] + 1
        if h < 1 or w < 1:
            raise InputError(
                f"Conv with kernel {(kh, kw)} and padding {self.padding} does not fit its input map {shape}"
            )
        return (c_out, h, w)


@dataclass
class SumPool:
    """Sum pooling as spike routing: kernel and stride (rows, cols); stride None = kernel."""

    kernel: tuple[int, int]
    stride: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        self.kernel = _pair(self.kernel, "SumPool.kernel", 1)
        self.stride = self.kernel if self.stride is None else _pair(self.stride, "SumPool.stride", 1)

    def output_shape(self, shape: tuple[int, ...]) -> tuple[int, int, int]:
        if len(shape) != 3:
            raise InputError(f"SumPool expects an input map [C, H, W], got shape {shape}")
        h = (shape[1] - self.kernel[0]) // self.stride[0] + 1
        w = (shape[2] - self.kernel[1]) // self.stride[1] + 1
        if h < 1 or w < 1:
            raise InputError(f"SumPool with kernel {self.kernel} does not fit its input map {shape}")
        return (shape[0], h, w)


@dataclass
class Flatten:
    """[C, H, W] -> [C * H * W]; flat neuron indices are unchanged."""

    def output_shape(self, shape: tuple[int, ...]) -> tuple[int]:
        return (int(np.prod(shape)),)


@dataclass
class Linear:
    """Fully connected layer, weight float32 [out, in], no bias; its input must be flat (after Flatten)."""

    weight: np.ndarray
    neuron: NeuronSpec | None = field(default_factory=NeuronSpec)

    def __post_init__(self) -> None:
        self.weight = _check_weight(self.weight, 2, "Linear.weight", "[out, in]")

    def output_shape(self, shape: tuple[int, ...]) -> tuple[int]:
        n_in = int(np.prod(shape))
        if len(shape) != 1 or n_in != self.weight.shape[1]:
            raise InputError(
                f"Linear with weight {self.weight.shape} expects a flat input of {self.weight.shape[1]} "
                f"features (add a Flatten before it), got shape {shape}"
            )
        return (self.weight.shape[0],)


WEIGHTED = (Conv, Linear)
ROUTING = (SumPool, Flatten)
Layer = Conv | SumPool | Flatten | Linear

_SUPPORTED_TORCH = (
    "nn.Conv2d, nn.Linear (bias None or all zero), nn.AvgPool2d, a SumPool2d-like module, nn.Flatten, "
    "IF / LIF neurons, nn.Identity, nn.Dropout, TTM (skipped), nested nn.Sequential"
)


class EventNet:
    """An ordered stack of Conv / SumPool / Flatten / Linear specs (see the module docstring).

    ``layers``: the specs, validated against the structure rule. ``input_shape``: the input map
    ``(C, H, W)``, None until known (the simulator sets it from ``sensor_size``).
    """

    def __init__(self, layers: Iterable[Layer], input_shape: Sequence[int] | None = None) -> None:
        self.layers: list[Layer] = list(layers)
        self._validate_structure()
        self.input_shape: tuple[int, int, int] | None = None
        if input_shape is not None:
            self.set_input_shape(input_shape)

    # ---- structure -------------------------------------------------------------------
    def _validate_structure(self) -> None:
        if not self.layers:
            raise InputError("EventNet needs at least one weighted layer (Conv or Linear); got no layers")
        for i, layer in enumerate(self.layers):
            if not isinstance(layer, WEIGHTED + ROUTING):
                raise InputError(
                    f"EventNet layer {i} must be Conv, SumPool, Flatten or Linear, got {type(layer).__name__}"
                )
        weighted = [i for i, layer in enumerate(self.layers) if isinstance(layer, WEIGHTED)]
        if not weighted:
            raise InputError("EventNet needs at least one weighted layer (Conv or Linear) as readout")
        if weighted[-1] != len(self.layers) - 1:
            raise InputError(
                f"EventNet must end with its readout (a Conv or Linear layer); layer {len(self.layers) - 1} is "
                f"{type(self.layers[-1]).__name__}"
            )
        for i in weighted[:-1]:
            neuron = self.layers[i].neuron
            if not isinstance(neuron, NeuronSpec):
                raise InputError(
                    f"EventNet layer {i} ({type(self.layers[i]).__name__}) is not the readout, so it needs a "
                    f"NeuronSpec as .neuron (its spikes feed the next layer), got {neuron!r}"
                )
        last = self.layers[-1].neuron
        if last is not None and not isinstance(last, NeuronSpec):
            raise InputError(f"the readout layer's .neuron must be None or a NeuronSpec, got {last!r}")

    @property
    def weighted_layers(self) -> list[Conv | Linear]:
        return [layer for layer in self.layers if isinstance(layer, WEIGHTED)]

    @property
    def output_neuron(self) -> NeuronSpec:
        """Neuron used to count output spikes of the readout (never affects the scores)."""
        return self.layers[-1].neuron or NeuronSpec()

    def set_input_shape(self, input_shape: Sequence[int]) -> None:
        """Record the input map (C, H, W) after checking that every layer fits it."""
        shape = tuple(int(s) for s in input_shape)
        if len(shape) != 3 or min(shape) < 1:
            raise InputError(f"input_shape must be (C, H, W) with positive sizes, got {tuple(input_shape)}")
        self.shapes(shape)
        self.input_shape = shape

    def shapes(self, input_shape: Sequence[int] | None = None) -> list[tuple[int, ...]]:
        """Shapes of the input map and of every layer's output: ``[input, out_0, out_1, ...]``."""
        shape = tuple(int(s) for s in (input_shape if input_shape is not None else self.input_shape or ()))
        if len(shape) != 3:
            raise InputError("EventNet.shapes needs input_shape (C, H, W); none was given or recorded")
        out = [shape]
        for i, layer in enumerate(self.layers):
            try:
                shape = layer.output_shape(shape)
            except InputError as exc:
                raise InputError(f"EventNet layer {i}: {exc} (input map {out[0]})") from None
            out.append(shape)
        return out

    def __repr__(self) -> str:
        lines = [f"EventNet(input_shape={self.input_shape}, layers=["]
        for layer in self.layers:
            if isinstance(layer, Conv):
                lines.append(
                    f"  Conv({tuple(layer.weight.shape)}, stride={layer.stride}, padding={layer.padding}, neuron={layer.neuron})"
                )
            elif isinstance(layer, Linear):
                lines.append(f"  Linear({tuple(layer.weight.shape)}, neuron={layer.neuron})")
            else:
                lines.append(f"  {layer!r}")
        lines.append("])")
        return "\n".join(lines)

    # ---- conversion from torch ---------------------------------------------------------
    @classmethod
    def from_torch(cls, model: Any, step_duration: float | None = None) -> EventNet:
        """Convert a flexsnn StagedNet (``stages`` + ``head``) or an ``nn.Sequential``.

        The model is read by :func:`walk_torch` (accepted modules and the average-pool folding
        are described there). Each neuron becomes the ``neuron`` of the weighted layer before
        it; a neuron after the last weighted layer becomes the readout's output neuron (it only
        counts output spikes). A leaky neuron (``decay < 1``) becomes the time constant
        ``tau = -step_duration / ln(decay)``, so ``step_duration``, the events' time per
        training step, is required for leaky models.
        """
        layers: list[Layer] = []
        for step in walk_torch(model):
            if isinstance(step.layer, NeuronSpec):
                layers[-1].neuron = _with_leak(step, step_duration)
            else:
                layers.append(step.layer)
        return cls(layers)


# ---- the walker: torch model -> deployable steps ------------------------------------------------
@dataclass
class DeployStep:
    """One deployable piece of a torch model, in execution order (what :func:`walk_torch` returns).

    layer: a :class:`Conv` / :class:`SumPool` / :class:`Flatten` / :class:`Linear` (weights with the
    average-pool scale already folded in, ``neuron`` None) or, for a spiking neuron, its
    :class:`NeuronSpec` (``tau`` None: a step-based leak is ``decay``). name: the module's path in
    the model (``"stages.1.0"``). stage: the StagedNet stage it belongs to, -1 for the head.
    module: the torch module it came from. pool_scale: for a SumPool that came from an
    ``nn.AvgPool2d``, its ``1 / (kh * kw)``. folded_scale: for a weighted layer, the product of
    the pool scales folded into its weights (1.0 if none). decay: for a neuron, the per-step
    membrane decay (1.0 = IF).
    """

    layer: Any
    name: str
    stage: int
    module: Any
    pool_scale: float = 1.0
    folded_scale: float = 1.0
    decay: float = 1.0


def walk_torch(model: Any) -> list[DeployStep]:
    """The deployable steps of a flexsnn StagedNet or an ``nn.Sequential`` (nested ones flattened).

    Accepted modules: ``nn.Conv2d`` (groups 1, dilation 1, zero padding) and ``nn.Linear`` with
    bias None or all zero (otherwise run bias removal first); ``nn.AvgPool2d`` (no padding,
    floor mode), converted to :class:`SumPool` with its ``1 / (kh * kw)`` scale (or
    ``1 / divisor_override``) folded into the NEXT weighted layer's weights, which is exact
    because pooling and the layer are both linear; a SumPool2d-like module (class name
    ``SumPool2d``/``SumPool`` with ``kernel_size``, ``stride``); ``nn.Flatten``; neurons
    duck-typed by class name: ``IF`` with attributes ``v_th, v_min, multi_spike, reset``, and
    ``LIF`` (also ``decay``); ``nn.Identity``, ``nn.Dropout*`` and ``TTM`` modules are skipped
    (no time steps here). Structure: a neuron directly follows a weighted layer and every
    weighted layer except the last (the readout) has one. BatchNorm raises: fold it first with
    ``flexsnn.deploy.fold_batchnorm``.
    """
    steps: list[DeployStep] = []
    scale = 1.0
    after_weighted = False  # the previous kept step is weighted and still lacks its neuron
    for name, stage, module in _modules(model):
        kind = type(module).__name__
        where = f"module {name!r} ({kind})"
        convert = _converter(module, where)
        if convert is None:  # skipped: no time steps, no weights
            continue
        step = DeployStep(convert(module, where), name, stage, module)
        if isinstance(step.layer, NeuronSpec):
            if not after_weighted:
                raise InputError(f"{where}: a spiking neuron must directly follow a Conv2d or Linear layer")
            step.decay = _decay(module, where)
            after_weighted = False
        else:
            if after_weighted:
                raise InputError(
                    f"{where} follows the weighted layer {type(steps[-1].layer).__name__} without a spiking neuron "
                    "in between; every weighted layer except the last (the readout) needs an IF neuron after it"
                )
            if isinstance(step.layer, SumPool):
                step.pool_scale = _avgpool_scale(module, step.layer)
                scale *= step.pool_scale
            elif isinstance(step.layer, WEIGHTED):
                if scale != 1.0:  # float64 product, cast once: every export path gives the same weights
                    step.layer.weight = (step.layer.weight.astype(np.float64) * scale).astype(np.float32)
                    step.folded_scale, scale = scale, 1.0
                step.layer.neuron = None
                after_weighted = True
        steps.append(step)
    layers = [s.layer for s in steps if not isinstance(s.layer, NeuronSpec)]
    if not layers or not isinstance(layers[-1], WEIGHTED):
        raise InputError(
            "the model must end with its readout layer (nn.Linear or nn.Conv2d, optionally followed by an IF "
            f"neuron); supported modules: {_SUPPORTED_TORCH}"
        )
    return steps


def _with_leak(step: DeployStep, step_duration: float | None) -> NeuronSpec:
    if step.decay == 1.0:
        return step.layer
    if step_duration is None or not step_duration > 0:
        raise InputError(
            f"module {step.name!r} leaks (decay={step.decay}); pass step_duration > 0 (event time per training "
            "step) so the leak can become a time constant tau = -step_duration / ln(decay)"
        )
    return dataclasses.replace(step.layer, tau=-float(step_duration) / math.log(step.decay))


# ---- torch helpers (torch imported lazily so this module stays numpy-only) -----------------
def _modules(model: Any, prefix: str = "", stage: int = 0):
    """(name, stage, leaf module) in execution order; stage -1 is a StagedNet's head."""
    import torch.nn as nn

    if hasattr(model, "stages") and hasattr(model, "head") and not isinstance(model, nn.Sequential):
        for i, stage_module in enumerate(model.stages):
            yield from _modules(stage_module, f"{prefix}stages.{i}", i)
        if model.head is not None:
            yield from _modules(model.head, f"{prefix}head", -1)
        return
    if isinstance(model, (nn.Sequential, nn.ModuleList)):
        for child_name, child in model.named_children():
            yield from _modules(child, f"{prefix}.{child_name}" if prefix else child_name, stage)
        return
    if not isinstance(model, nn.Module):
        raise InputError(
            f"model must be a torch nn.Module (a flexsnn StagedNet or nn.Sequential) or an EventNet, got {type(model).__name__}"
        )
    yield (prefix or type(model).__name__, stage, model)


def _converter(module: Any, where: str):
    """The converter of ``module`` (looked up by class name along its MRO), None to skip it."""
    for cls in type(module).__mro__:
        name = cls.__name__
        if "BatchNorm" in name:
            name = "_BatchNorm"
        if name in _SKIPPED:
            return None
        if name in _REFUSED:
            raise InputError(f"{where}{_REFUSED[name]}")
        if name in _CONVERTERS:
            return _CONVERTERS[name]
    raise InputError(f"{where} is not supported by the event-driven simulator; supported: {_SUPPORTED_TORCH}")


def _bias_free(module: Any, where: str) -> None:
    bias = getattr(module, "bias", None)
    if bias is not None and bool((bias.detach() != 0).any()):
        raise InputError(
            f"{where} has a non-zero bias; the event-driven simulator (like the target chips) has no biases: "
            "run bias removal first (flexsnn.deploy.remove_biases(model), then fine-tune) or set bias=None"
        )


def _conv_from_torch(module: Any, where: str) -> Conv:
    if module.groups != 1 or tuple(module.dilation) != (1, 1):
        raise InputError(f"{where}: only groups=1, dilation=1 convolutions are supported")
    if module.padding_mode != "zeros":
        raise InputError(f"{where}: only zero padding is supported, got padding_mode={module.padding_mode!r}")
    padding = module.padding
    if isinstance(padding, str):
        if padding == "valid":
            padding = (0, 0)
        else:  # "same" (stride 1 only in torch); symmetric only for odd kernels
            if any(k % 2 == 0 for k in module.kernel_size):
                raise InputError(f"{where}: padding='same' with an even kernel is asymmetric; use explicit padding")
            padding = tuple((k - 1) // 2 for k in module.kernel_size)
    _bias_free(module, where)
    # contiguous copy: channels_last weights (fit / InferenceRunner lay them out so) come out C-ordered
    return Conv(module.weight.detach().cpu().numpy(), stride=tuple(module.stride), padding=tuple(padding))


def _linear_from_torch(module: Any, where: str) -> Linear:
    _bias_free(module, where)
    return Linear(module.weight.detach().cpu().numpy())


def _flatten_from_torch(module: Any, where: str) -> Flatten:
    if module.start_dim != 1 or module.end_dim != -1:
        raise InputError(f"{where}: only nn.Flatten(start_dim=1, end_dim=-1) is supported")
    return Flatten()


def _avgpool_from_torch(module: Any, where: str) -> SumPool:
    if _pair(module.padding, f"{where}.padding", 0) != (0, 0) or module.ceil_mode:
        raise InputError(f"{where}: only AvgPool2d without padding and with ceil_mode=False is supported")
    return SumPool(module.kernel_size, module.stride if module.stride else None)


def _sumpool_from_torch(module: Any, where: str) -> SumPool:
    if not hasattr(module, "kernel_size"):
        raise InputError(f"{where}: a sum pool needs a kernel_size attribute")
    return SumPool(module.kernel_size, getattr(module, "stride", None) or None)


def _avgpool_scale(module: Any, pool: SumPool) -> float:
    if any(cls.__name__ == "AvgPool2d" for cls in type(module).__mro__):
        divisor = module.divisor_override or pool.kernel[0] * pool.kernel[1]
        return 1.0 / float(divisor)
    return 1.0  # a true sum pool has no scale


def _neuron_from_torch(module: Any, where: str) -> NeuronSpec:
    missing = [a for a in ("v_th", "v_min", "multi_spike", "reset") if not hasattr(module, a)]
    if missing:
        raise InputError(f"{where}: a neuron needs attributes v_th, v_min, multi_spike, reset; missing {missing}")
    reset = module.reset
    if reset not in RESETS:
        raise InputError(f"{where}: reset must be one of {RESETS}, got {reset!r}")
    v_min = None if module.v_min is None else float(module.v_min)
    return NeuronSpec(v_th=float(module.v_th), v_min=v_min, multi_spike=bool(module.multi_spike), reset=reset)


def _decay(module: Any, where: str) -> float:
    decay = float(getattr(module, "decay", 1.0))
    if not 0.0 < decay <= 1.0:
        raise InputError(f"{where}: decay must be in (0, 1] for event-driven leak, got {decay}")
    return decay


#: {class name (anywhere in the module's MRO): converter(module, where) -> layer spec}.
_CONVERTERS: dict[str, Any] = {
    "Conv2d": _conv_from_torch,
    "Linear": _linear_from_torch,
    "Flatten": _flatten_from_torch,
    "AvgPool2d": _avgpool_from_torch,
    "SumPool2d": _sumpool_from_torch,
    "SumPool": _sumpool_from_torch,
    "IF": _neuron_from_torch,
    "LIF": _neuron_from_torch,
}
_SKIPPED = frozenset({"Identity", "_DropoutNd", "TTM"})
_REFUSED = {
    "_BatchNorm": ": BatchNorm cannot run event-driven; fold BN first: flexsnn.deploy.fold_batchnorm(model)",
    "MaxPool2d": " cannot be expressed as event routing; use nn.AvgPool2d (sum pooling) instead",
    "AdaptiveAvgPool2d": " cannot be expressed as event routing; use nn.AvgPool2d (sum pooling) instead",
    "AdaptiveMaxPool2d": " cannot be expressed as event routing; use nn.AvgPool2d (sum pooling) instead",
}
