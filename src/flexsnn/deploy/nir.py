"""NIR export and import: :func:`to_nir`, :func:`from_nir`, :func:`write_nir`, :func:`read_nir`.

NIR (the Neuromorphic Intermediate Representation, package ``nir``) is the exchange format
of Sinabs, Norse, snnTorch, SpikingJelly, Rockpool, Lava and others. Its neuron nodes are
ODEs in continuous time; a library that runs in discrete steps reads them with a step
``dt``. flexsnn works in steps, so its own files use ``dt = 1``; the peers work in
seconds (snnTorch and SpikingJelly 1e-4, Norse 1e-3). ``to_nir(model, dt=...)`` writes the
time constants for a given step, ``from_nir(graph, dt=...)`` reads them with one.

Export (``to_nir``) walks the model with :func:`flexsnn.deploy.eventnet.walk_torch`, the same
walker the event-driven simulator and the Sinabs back end use, and maps each step through
``{layer type: exporter}``:

=====================  ==========================================================
walker step            NIR node
=====================  ==========================================================
Conv (no bias)         Conv2d (zero bias, input_shape recorded)
SumPool                SumPool2d; from an nn.AvgPool2d its 1/(kh*kw) scale is
                       folded into the NEXT weighted layer's weights (``pool="sum"``,
                       what chips run), or AvgPool2d with the weights unscaled
                       (``pool="avg"``)
Flatten                Flatten(start_dim=0) (NIR dims exclude the batch)
Linear (no bias)       Affine with a zero bias (``linear="affine"``) or Linear
IF neuron              IF(r = 1/dt, v_threshold = v_th, v_reset = 0)
LIF neuron (decay d)   LIF(tau = dt/(1-d), r = tau/dt, v_leak = 0): NIR's ODE
                       ``tau dv/dt = -v + r I`` stepped by Euler with ``dt`` gives
                       back ``u = d * u + x``
=====================  ==========================================================

NIR neurons emit one spike per step and reset to ``v_reset``; flexsnn's deployment neurons
may fire several spikes per step, reset by subtraction and floor the membrane. What NIR
cannot say is stored in the graph's ``metadata["flexsnn"]`` as ONE JSON string (HDF5 keeps
strings intact; nested dicts would come back as numpy arrays): ``format``, ``dt``,
``profile``, ``neurons`` (per node: ``v_th``, ``decay``, ``reset``, ``multi_spike``,
``v_min``, ``threshold_rule``), ``stages``/``head`` (node names per stage), ``ttm_mode``,
``input_ttm_mode``, ``input_kind``, ``time_config``, ``input_shape``, ``pool_folding``, ``readout``,
``model_spec`` and anything passed as ``extra``.

Profiles (:data:`PROFILES`) say how one reader understands NIR. ``"flexsnn"`` (the default)
writes the table above and reads back exactly. ``"nir"`` is the spec read as written. The
peer profiles ``"snntorch"``, ``"spikingjelly"``, ``"norse"``, ``"sinabs"`` work around each
peer's importer (which pooling node it maps, how it treats Flatten's ``start_dim`` and IF's
``r``, its step, its leak rule, the nir version it pins); ``docs/interop.md`` lists them with
the measured compatibility matrix. Exporting a neuron the reader cannot run as flexsnn
does (multi-spike, subtract reset, floor) warns.

Import (``from_nir``) maps ``{NIR node type: builder}`` into a :class:`flexsnn.staged.StagedNet`.
With flexsnn metadata the stages and neuron options come back exactly; without it the
graph is read as the spec (or the given profile) says: single spike, reset to ``v_reset``
(only 0 is supported), no floor, biases kept, LI and CubaLIF nodes as
:class:`LeakyIntegrator` / :class:`CurrentLIF`. A neuron's input gain (``dt * r / tau``)
and leak drive are folded into the weighted layer before it, so IF/LIF graphs stay
deployable.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from flexsnn.deploy.eventnet import Conv, DeployStep, Flatten, Linear, NeuronSpec, SumPool, walk_torch
from flexsnn.errors import InputError, check_choice
from flexsnn.io import atomic_write
from flexsnn.multistep import MultiStepModule
from flexsnn.neurons import IF, LIF
from flexsnn.staged import staged_from_layers

__all__ = [
    "SumPool2d",
    "LeakyIntegrator",
    "CurrentLIF",
    "Profile",
    "PROFILES",
    "to_nir",
    "from_nir",
    "write_nir",
    "read_nir",
    "nir_metadata",
    "METADATA_KEY",
    "FORMAT",
]

METADATA_KEY = "flexsnn"
FORMAT = "flexsnn.nir/1"
_SUPPORTED_NODES = "Input, Output, Conv2d, SumPool2d, AvgPool2d, Flatten, Linear, Affine, IF, LIF, LI, CubaLIF"
#: Neuron behaviour of the NIR spec: one spike per step, reset to v_reset (0), no floor.
NIR_NEURON = {"multi_spike": False, "reset": "hard", "v_min": None}
#: A leak this slow rounds to decay 1 in float32 and float64: how an IF is written as a LIF.
_NO_LEAK_STEPS = 1e30


# ---- profiles -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Profile:
    """How one reader (or writer) of NIR understands the nodes.

    dt: its step, in its time unit. pool: the pooling node it maps ("sum": SumPool2d with the
    average-pool scale folded into the next weights, "avg": AvgPool2d). flatten_start_dim:
    0 (NIR, no batch axis) or 1 (readers that hand start_dim to ``nn.Flatten`` unchanged).
    if_node: write an IF as "IF" or as "LIF" with a leak too slow to matter (readers that map
    IF wrongly). if_gain: how it turns IF's ``r`` into the per-step input gain: "r_dt" (NIR:
    ``dv/dt = r I``, so ``r = 1/dt`` adds the input once) or "one" (``r`` ignored). leak: decay
    per step from ``tau``: "euler" (``1 - dt/tau``) or "exp" (``exp(-dt/tau)``). lif_gain:
    LIF input gain: "r_dt_tau" (NIR Euler: ``dt r / tau``), "dt_tau" (``r`` ignored; the
    export scales the threshold instead) or "one". cuba: how a CubaLIF runs: "nir" (the gains
    of the Euler step) or "rockpool" (``i = e_syn (i + x)``, ``v = e_mem v + i`` with
    ``e = exp(-dt/tau)``, ``r`` and ``w_in`` ignored). tau_times_dt: the writer stores
    ``dt * tau`` as tau (Norse 1.1's exporter writes ``dt / tau_mem_inv``); divided out on import. scalar_params: neuron parameters written
    with shape (1,) where uniform. schema: "current" or "1.0.4" (IF/LIF without ``v_reset``,
    the nir that Sinabs pins; applied by :func:`write_nir`). if_runs_as: the neuron the reader
    builds from an IF (its reset, multi-spike, floor; "-v_th" = floor at minus the
    threshold). metadata: write flexsnn's metadata.
    """

    name: str
    dt: float = 1.0
    pool: str = "sum"
    flatten_start_dim: int = 0
    if_node: str = "IF"
    if_gain: str = "r_dt"
    leak: str = "euler"
    lif_gain: str = "r_dt_tau"
    cuba: str = "nir"
    tau_times_dt: bool = False
    scalar_params: bool = False
    schema: str = "current"
    if_runs_as: dict = field(default_factory=lambda: dict(NIR_NEURON))
    lif_runs_as: dict = field(default_factory=lambda: dict(NIR_NEURON))
    metadata: bool = True


_SINABS_IF = {"multi_spike": True, "reset": "subtract", "v_min": "-v_th"}
_SINABS_LIF = {"multi_spike": True, "reset": "subtract", "v_min": None}
_ROCKPOOL_LIF = {"multi_spike": True, "reset": "subtract", "v_min": None}

#: The profiles by name; see the module docstring and docs/interop.md.
PROFILES: dict[str, Profile] = {
    "flexsnn": Profile("flexsnn"),
    "nir": Profile("nir", metadata=False),
    # snnTorch 1.0: no SumPool2d mapping; Flatten(start_dim) straight to nn.Flatten; IF read as
    # Leaky(beta=0.9) and r must be 1; LIF with dt = 1e-4 and r / threshold rescaled.
    "snntorch": Profile("snntorch", dt=1e-4, pool="avg", flatten_start_dim=1, if_node="LIF", if_gain="one"),
    # SpikingJelly 2.0: AvgPool2d only; follows the spec (IF r = 1/dt, start_dim + 1).
    "spikingjelly": Profile("spikingjelly", dt=1e-4, pool="avg"),
    # Norse 1.1: SumPool2d only (LPPool2d); Flatten(start_dim) straight to nn.Flatten; its IAF adds
    # the input per step; its LIF ignores r (gain dt / tau).
    # Its exporter writes tau = dt / tau_mem_inv (dt times the time constant).
    "norse": Profile("norse", dt=1e-3, flatten_start_dim=1, if_gain="one", lif_gain="dt_tau", tau_times_dt=True),
    # Sinabs 3.1: steps; IF -> IAF (multi-spike, subtract, floor -v_th); LIF tau in steps with an
    # exponential leak and no input gain; fails on per-neuron LIF arrays; pins nir <= 1.0.4.
    "sinabs": Profile(
        "sinabs",
        if_gain="one",
        leak="exp",
        lif_gain="one",
        scalar_params=True,
        schema="1.0.4",
        if_runs_as=_SINABS_IF,
        lif_runs_as=_SINABS_LIF,
    ),
    # Rockpool 3.1 (import only: its importer maps no IF, Conv2d or pooling and fails on LIF nodes):
    # LIFTorch exports a CubaLIF it runs with exponential decays, multi-spike, subtract reset.
    "rockpool": Profile("rockpool", dt=1e-3, leak="exp", cuba="rockpool", lif_runs_as=_ROCKPOOL_LIF),
}


def _profile(profile: str | Profile) -> Profile:
    if isinstance(profile, Profile):
        return profile
    check_choice(profile, "profile", tuple(PROFILES))
    return PROFILES[profile]


def _check_dt(dt: Any, name: str = "dt") -> float:
    try:
        value = float(dt)
    except (TypeError, ValueError):
        value = float("nan")
    if not math.isfinite(value) or value <= 0:
        raise InputError(f"{name} must be a finite number > 0 (the step in the graph's time unit), got {dt!r}")
    return value


# ---- modules the import builds ------------------------------------------------------------------
class SumPool2d(nn.Module):
    """Sum pooling (no padding, floor mode): ``avg_pool2d`` with ``divisor_override=1``.

    Runs on ``[N, C, H, W]`` (a stateless layer: inside a StagedNet it sees ``[T*B, ...]``).
    The event-driven simulator routes spikes through it without a weight.
    """

    def __init__(self, kernel_size: int | Sequence[int], stride: int | Sequence[int] | None = None) -> None:
        super().__init__()
        self.kernel_size = _pair(kernel_size, "kernel_size")
        self.stride = _pair(stride, "stride") if stride is not None else self.kernel_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return F.avg_pool2d(x, self.kernel_size, self.stride, divisor_override=1)

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}"


def leaky_integrate(x: torch.Tensor, decay: float) -> torch.Tensor:
    """Membrane trace of a leaky integrator: ``v[t] = decay * v[t-1] + x[t]``, ``v[-1] = 0``."""
    v = torch.zeros_like(x[0])
    out = []
    for x_t in x:
        v = decay * v + x_t
        out.append(v)
    return torch.stack(out)


def current_lif(
    x: torch.Tensor,
    syn_decay: float,
    decay: float,
    gain: float,
    v_th: float,
    reset: str = "hard",
    multi_spike: bool = False,
) -> torch.Tensor:
    """Spikes of a current-based LIF, per step (the synaptic current ``i`` and membrane ``v``
    start at 0)::

        i = syn_decay * i + x[t];  v = decay * v + gain * i
        s = (v >= v_th) (one spike) or floor(v / v_th) clamped >= 0 (multi_spike)
        v = 0 where s > 0 (reset "hard") or v -= s * v_th ("subtract")
    """
    i = torch.zeros_like(x[0])
    v = torch.zeros_like(x[0])
    out = []
    for x_t in x:
        i = syn_decay * i + x_t
        v = decay * v + gain * i
        s = torch.clamp(torch.floor(v / v_th), min=0) if multi_spike else (v >= v_th).to(x.dtype)
        v = v * (s <= 0) if reset == "hard" else v - s * v_th
        out.append(s)
    return torch.stack(out)


class LeakyIntegrator(MultiStepModule):
    """NIR ``LI`` read in steps: outputs its membrane ``v = decay * v + x`` (no spikes).

    The usual readout of Norse and Rockpool models. State starts at 0 on every call.
    """

    def __init__(self, decay: float) -> None:
        super().__init__()
        self.decay = float(decay)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return leaky_integrate(x, self.decay)

    def extra_repr(self) -> str:
        return f"decay={self.decay}"


class CurrentLIF(MultiStepModule):
    """NIR ``CubaLIF`` read in steps (see :func:`current_lif`); state starts at 0 on every call."""

    def __init__(
        self, syn_decay: float, decay: float, gain: float, v_th: float, reset: str = "hard", multi_spike: bool = False
    ) -> None:
        super().__init__()
        self.syn_decay, self.decay, self.gain, self.v_th = float(syn_decay), float(decay), float(gain), float(v_th)
        self.reset = check_choice(reset, "reset", ("hard", "subtract"))
        self.multi_spike = bool(multi_spike)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return current_lif(x, self.syn_decay, self.decay, self.gain, self.v_th, self.reset, self.multi_spike)

    def extra_repr(self) -> str:
        return (
            f"syn_decay={self.syn_decay}, decay={self.decay}, gain={self.gain}, v_th={self.v_th}, "
            f"reset={self.reset!r}, multi_spike={self.multi_spike}"
        )


def _pair(value: Any, name: str, minimum: int = 1) -> tuple[int, int]:
    arr = np.asarray(value).reshape(-1)
    if arr.size == 1:
        arr = np.repeat(arr, 2)
    try:
        ok = arr.size == 2 and all(float(v) == int(v) and int(v) >= minimum for v in arr)
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise InputError(f"{name} must be an int >= {minimum} or a pair of them, got {value!r}")
    return int(arr[0]), int(arr[1])


# ---- export -------------------------------------------------------------------------------------
@dataclass
class _Export:
    """State of one export: the nodes written so far and what the metadata needs."""

    nir: Any
    profile: Profile
    dt: float
    pool: str
    linear: str
    shape: tuple[int, ...]
    nodes: dict[str, Any] = field(default_factory=dict)
    order: list[str] = field(default_factory=list)
    stage_nodes: dict[int, list[str]] = field(default_factory=dict)
    neurons: dict[str, dict[str, Any]] = field(default_factory=dict)
    folding: dict[str, dict[str, Any]] = field(default_factory=dict)
    pending_pools: list[tuple[str, float]] = field(default_factory=list)
    mismatches: list[str] = field(default_factory=list)

    def add(self, node: Any, kind: str, step: DeployStep) -> str:
        name = f"{kind}_{len(self.order) - 1}"  # "input" is order[0]: the first layer is <kind>_0
        self.nodes[name] = node
        self.order.append(name)
        self.stage_nodes.setdefault(step.stage, []).append(name)
        return name

    def param(self, value: float, shape: tuple[int, ...]) -> np.ndarray:
        """A neuron parameter: per neuron, or shape (1,) when the profile wants scalars."""
        return np.full((1,) if self.profile.scalar_params else shape, value, np.float32)


def _export_conv(step: DeployStep, ex: _Export) -> None:
    layer: Conv = step.layer
    node = ex.nir.Conv2d(
        input_shape=tuple(int(s) for s in ex.shape[1:]),
        weight=_export_weight(step, ex),
        stride=layer.stride,
        padding=layer.padding,
        dilation=(1, 1),
        groups=1,
        bias=np.zeros(layer.weight.shape[0], np.float32),
    )
    _record_folding(ex, ex.add(node, "conv2d", step))


def _export_linear(step: DeployStep, ex: _Export) -> None:
    weight = _export_weight(step, ex)
    if ex.linear == "affine":
        name = ex.add(ex.nir.Affine(weight=weight, bias=np.zeros(weight.shape[0], np.float32)), "affine", step)
    else:
        name = ex.add(ex.nir.Linear(weight=weight), "linear", step)
    _record_folding(ex, name)


def _export_pool(step: DeployStep, ex: _Export) -> None:
    layer: SumPool = step.layer
    kernel, stride, zero = np.array(layer.kernel), np.array(layer.stride), np.array((0, 0))
    if step.pool_scale != 1.0 and ex.pool == "avg":
        if not math.isclose(step.pool_scale * layer.kernel[0] * layer.kernel[1], 1.0):
            raise InputError(
                f"module {step.name!r}: AvgPool2d with divisor_override cannot be written as NIR "
                "AvgPool2d; use pool='sum'"
            )
        ex.add(ex.nir.AvgPool2d(kernel_size=kernel, stride=stride, padding=zero), "avgpool2d", step)
        return
    name = ex.add(ex.nir.SumPool2d(kernel_size=kernel, stride=stride, padding=zero), "sumpool2d", step)
    if step.pool_scale != 1.0:
        ex.pending_pools.append((name, step.pool_scale))


def _export_flatten(step: DeployStep, ex: _Export) -> None:
    start = ex.profile.flatten_start_dim
    node = ex.nir.Flatten(input_type={"input": np.array(ex.shape)}, start_dim=start, end_dim=-1)
    ex.add(node, "flatten", step)  # start_dim 1 breaks NIR's type check: to_nir skips it then


def _export_neuron(step: DeployStep, ex: _Export) -> None:
    spec: NeuronSpec = step.layer
    shape, p, dt = ex.shape, ex.profile, ex.dt
    leaky = step.decay != 1.0
    as_lif = leaky or p.if_node == "LIF"
    if not as_lif:
        r = 1.0 / dt if p.if_gain == "r_dt" else 1.0
        node = ex.nir.IF(r=ex.param(r, shape), v_threshold=ex.param(spec.v_th, shape), **_v_reset(ex.nir.IF, ex, shape))
        name = ex.add(node, "if", step)
    else:
        if leaky:
            steps = 1.0 / (1.0 - step.decay) if p.leak == "euler" else -1.0 / math.log(step.decay)
        else:
            steps = _NO_LEAK_STEPS
        tau = steps * dt
        r, v_th = {"r_dt_tau": (steps, spec.v_th), "dt_tau": (1.0, spec.v_th / steps), "one": (1.0, spec.v_th)}[
            p.lif_gain
        ]
        node = ex.nir.LIF(
            tau=ex.param(tau, shape),
            r=ex.param(r, shape),
            v_leak=ex.param(0.0, shape),
            v_threshold=ex.param(v_th, shape),
            **_v_reset(ex.nir.LIF, ex, shape),
        )
        name = ex.add(node, "lif", step)
    ex.neurons[name] = {
        "type": "LIF" if leaky else "IF",
        "v_th": spec.v_th,
        "decay": step.decay,
        "reset": spec.reset,
        "multi_spike": spec.multi_spike,
        "v_min": spec.v_min,
        "threshold_rule": "u >= v_th",
    }
    runs_as = p.lif_runs_as if as_lif else p.if_runs_as
    wanted = {"multi_spike": spec.multi_spike, "reset": spec.reset, "v_min": spec.v_min}
    got = {**runs_as, "v_min": -spec.v_th if runs_as["v_min"] == "-v_th" else runs_as["v_min"]}
    diff = [f"{k}={wanted[k]!r} (reader: {got[k]!r})" for k in wanted if wanted[k] != got[k]]
    if diff:
        ex.mismatches.append(f"{name}: " + ", ".join(diff))


#: {walker layer type: exporter(step, export state)}.
_EXPORTERS: dict[type, Callable[[DeployStep, _Export], None]] = {
    Conv: _export_conv,
    Linear: _export_linear,
    SumPool: _export_pool,
    Flatten: _export_flatten,
    NeuronSpec: _export_neuron,
}


def _v_reset(cls: type, ex: _Export, shape: tuple[int, ...]) -> dict[str, np.ndarray]:
    # nir >= 1.0.5 has v_reset (0: the node resets to 0; flexsnn's metadata states a subtract
    # reset); nir 1.0.4, the version Sinabs pins, has no such field.
    names = {f.name for f in dataclasses.fields(cls)}
    return {"v_reset": ex.param(0.0, shape)} if "v_reset" in names else {}


def _export_weight(step: DeployStep, ex: _Export) -> np.ndarray:
    if ex.pool == "avg" and step.folded_scale != 1.0:
        # every scale folded here came from an AvgPool2d written as a NIR AvgPool2d: unscaled weights
        return np.ascontiguousarray(step.module.weight.detach().cpu().numpy(), dtype=np.float32)
    return step.layer.weight  # contiguous float32, the pool scales folded in (walk_torch)


def _record_folding(ex: _Export, into: str) -> None:
    for pool_name, scale in ex.pending_pools:
        ex.folding[pool_name] = {"from": "AvgPool2d", "scale": scale, "folded_into": into}
    ex.pending_pools.clear()


def _input_shape(model: nn.Module, input_shape: Sequence[int] | None) -> tuple[int, ...]:
    shape = input_shape if input_shape is not None else getattr(model, "input_shape", None)
    form = "(C, H, W) for a conv model or (N,) for an MLP, positive ints"
    if shape is None or any(s is None for s in shape):
        raise InputError(f"input_shape is required: pass the model's input {form}, e.g. (2, 34, 34)")
    try:
        shape = tuple(int(s) for s in shape)
    except (TypeError, ValueError):
        raise InputError(f"input_shape must be {form}, got {input_shape!r}") from None
    if len(shape) not in (1, 3) or min(shape) < 1:
        raise InputError(f"input_shape must be {form}, got {shape}")
    return shape


def _time_config(model: nn.Module) -> list[int] | None:
    cfg = getattr(model, "time_config", None)
    try:
        return [int(t) for t in cfg] if cfg is not None else None
    except TypeError:
        return None


def to_nir(
    model: nn.Module,
    input_shape: Sequence[int] | None = None,
    dt: float | None = None,
    profile: str | Profile = "flexsnn",
    pool: str | None = None,
    linear: str = "affine",
    extra: dict[str, Any] | None = None,
):
    """Export a bias-free model (StagedNet or nn.Sequential) as a ``nir.NIRGraph``.

    input_shape: the input ``(C, H, W)`` or ``(N,)`` (default: ``model.input_shape``).
    dt: the step in the reader's time unit (default: the profile's; flexsnn's is 1 step).
    profile: a name in :data:`PROFILES` or a :class:`Profile` (whose reader the file is
    for). pool: "sum" or "avg" (default: the profile's). linear: "affine" (zero-bias Affine,
    which every peer reads) or "linear". extra: JSON-able values added to the metadata.
    Warns (UserWarning) when the reader will run a neuron differently (e.g. single-spike).
    Raises InputError for BatchNorm (fold it first), non-zero biases and unsupported modules.
    """
    import nir

    prof = _profile(profile)
    step_dt = _check_dt(prof.dt if dt is None else dt)
    pool = check_choice(prof.pool if pool is None else pool, "pool", ("sum", "avg"))
    check_choice(linear, "linear", ("affine", "linear"))
    shape = _input_shape(model, input_shape)
    steps = walk_torch(model)
    ex = _Export(nir, prof, step_dt, pool, linear, shape)
    ex.nodes["input"] = nir.Input(input_type={"input": np.array(shape)})
    ex.order.append("input")
    for step in steps:
        _EXPORTERS[type(step.layer)](step, ex)
        if not isinstance(step.layer, NeuronSpec):
            try:
                ex.shape = tuple(step.layer.output_shape(ex.shape))
            except InputError as exc:
                raise InputError(f"module {step.name!r} does not fit input_shape {shape}: {exc}") from None
    ex.nodes["output"] = nir.Output(output_type={"output": np.array(ex.shape)})
    ex.order.append("output")
    if ex.mismatches and prof.name != "flexsnn":  # flexsnn reads its metadata: nothing differs
        warnings.warn(
            f"NIR profile {prof.name!r}: the reader will run these neurons differently from flexsnn ("
            + "; ".join(ex.mismatches)
            + "); flexsnn's metadata keeps the exact options",
            UserWarning,
            stacklevel=2,
        )
    metadata = {}
    if prof.metadata:
        stages = [ex.stage_nodes[s] for s in sorted(k for k in ex.stage_nodes if k >= 0)]
        meta = {
            "format": FORMAT,
            "dt": step_dt,
            "profile": prof.name,
            "schema": prof.schema,
            "neurons": ex.neurons,
            "stages": stages,
            "head": ex.stage_nodes.get(-1, []),
            "ttm_mode": getattr(model, "ttm_mode", None),
            "input_ttm_mode": getattr(model, "input_ttm_mode", None),
            "input_kind": getattr(model, "input_kind", "frames"),
            "time_config": _time_config(model),
            "input_shape": list(shape),
            "pool_folding": ex.folding,
            "readout": "accumulated input of the last weighted layer (sum over time of its output); argmax = class",
            "model_spec": getattr(model, "model_spec", None),
            "extra": extra or {},
        }
        metadata = {METADATA_KEY: json.dumps(meta)}
    edges = list(zip(ex.order[:-1], ex.order[1:]))
    return _graph(nir, ex.nodes, edges, metadata, type_check=prof.flatten_start_dim == 0 and not prof.scalar_params)


def _graph(nir: Any, nodes: dict, edges: list, metadata: dict, type_check: bool = True):
    fields = {f.name for f in dataclasses.fields(nir.NIRGraph)}
    if "metadata" not in fields:  # pragma: no cover - every supported nir has metadata
        raise InputError(f"nir {getattr(nir, '__version__', '?')} has no NIRGraph.metadata; install nir >= 1.0.4")
    try:  # nir >= 1.0.5 type-checks on construction
        return nir.NIRGraph(nodes=nodes, edges=edges, metadata=metadata, type_check=type_check)
    except TypeError:  # nir 1.0.4 (the version Sinabs pins) has no type_check
        return nir.NIRGraph(nodes=nodes, edges=edges, metadata=metadata)


# ---- files ---------------------------------------------------------------------------------------
_V_RESET_NODES = ("IF", "LIF", "CubaLIF")


def write_nir(graph: Any, path: str | Path, schema: str | None = None) -> Path:
    """``nir.write`` with the schema a reader needs: "current" or "1.0.4" (default: the schema
    in the graph's flexsnn metadata, else "current").

    nir 1.0.4 (which Sinabs pins) has no ``v_reset`` on IF / LIF / CubaLIF and refuses files
    that carry it; "1.0.4" drops it, which keeps the meaning only where it is 0 (InputError
    otherwise). The file is written to a temporary name and moved into place (nothing is
    left behind on an error).
    """
    import h5py
    import nir

    meta = nir_metadata(graph) or {}
    schema = check_choice(schema or meta.get("schema", "current"), "schema", ("current", "1.0.4"))
    path = Path(path)
    with atomic_write(path) as tmp:
        nir.write(tmp, graph)
        if schema == "1.0.4":
            with h5py.File(tmp, "r+") as f:
                for name, node in f["node"]["nodes"].items():
                    kind = node["type"][()]
                    kind = kind.decode() if isinstance(kind, bytes) else str(kind)
                    if kind in _V_RESET_NODES and "v_reset" in node:
                        if np.any(node["v_reset"][()] != 0):
                            raise InputError(
                                f"node {name!r} ({kind}) resets to a non-zero v_reset, which the nir "
                                "1.0.4 schema cannot state; write it with schema='current'"
                            )
                        del node["v_reset"]
    return path


def read_nir(path: str | Path) -> Any:
    """``nir.read`` with a clear error for a file the installed nir cannot read."""
    import nir

    try:
        return nir.read(path)
    except TypeError as exc:
        if "unexpected keyword argument" not in str(exc):
            raise
        raise InputError(
            f"{path}: written with a newer nir schema than the installed nir {getattr(nir, '__version__', '?')} reads "
            f"({exc}); write it with flexsnn.deploy.write_nir(graph, path, schema='1.0.4') "
            "(or to_nir(..., profile='sinabs')), or install a newer nir"
        ) from None


# ---- import ------------------------------------------------------------------------------------
def nir_metadata(graph: Any) -> dict[str, Any] | None:
    """The flexsnn metadata of a NIR graph as a dict, or None if the graph has none."""
    meta = getattr(graph, "metadata", None)
    if not isinstance(meta, dict) or METADATA_KEY not in meta:
        return None
    raw = meta[METADATA_KEY]
    if isinstance(raw, bytes):
        raw = raw.decode("utf8")
    if isinstance(raw, np.ndarray) and raw.dtype.kind in "SUO" and raw.size == 1:
        raw = raw.item()
        raw = raw.decode("utf8") if isinstance(raw, bytes) else raw
    try:
        data = json.loads(raw)
    except (TypeError, json.JSONDecodeError) as exc:
        raise InputError(f"graph.metadata[{METADATA_KEY!r}] is not the JSON string flexsnn writes ({exc})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise InputError(
            f"graph.metadata[{METADATA_KEY!r}] has format {data.get('format') if isinstance(data, dict) else data!r}, expected {FORMAT!r}"
        )
    return data


def _chain(graph: Any) -> list[str]:
    """Node names from the Input to the Output of a sequential graph."""
    import nir

    if not isinstance(graph, nir.NIRGraph):
        raise InputError(f"graph must be a nir.NIRGraph, got {type(graph).__name__}")
    nodes, edges = graph.nodes, [(str(a), str(b)) for a, b in graph.edges]
    inputs = [k for k, n in nodes.items() if isinstance(n, nir.Input)]
    if len(inputs) != 1:
        raise InputError(f"graph must have exactly one Input node, found {len(inputs)}")
    succ: dict[str, list[str]] = {}
    pred_count: dict[str, int] = {}
    for a, b in edges:
        if a not in nodes or b not in nodes:
            raise InputError(f"graph edge ({a!r}, {b!r}) names a node that does not exist")
        succ.setdefault(a, []).append(b)
        pred_count[b] = pred_count.get(b, 0) + 1
    order, name = [], inputs[0]
    while True:
        order.append(name)
        nxt = succ.get(name, [])
        if not nxt:
            break
        if len(nxt) > 1 or pred_count.get(nxt[0], 0) > 1:
            raise InputError(
                f"only sequential graphs (a chain Input -> ... -> Output) can be imported; node {name!r} branches"
            )
        name = nxt[0]
        if name in order:
            raise InputError(f"graph has a cycle through node {name!r}; only feed-forward chains can be imported")
    if len(order) != len(nodes):
        missing = sorted(set(nodes) - set(order))
        raise InputError(f"graph is not one chain from its Input: nodes {missing} are not reached")
    if not isinstance(nodes[order[-1]], nir.Output):
        raise InputError(f"graph chain must end in an Output node, ends in {type(nodes[order[-1]]).__name__}")
    return order


@dataclass
class _Import:
    """State of one import: the modules built so far and how to read the neurons."""

    profile: Profile
    dt: float
    neuron_info: dict[str, dict[str, Any]]
    shape: tuple[int, ...] | None
    modules: list[tuple[str, nn.Module]] = field(default_factory=list)


def _array(node: Any, attr: str, name: str, allow_inf: bool = False) -> np.ndarray:
    """A node's numeric field as float64, refused with the node's name if it is not finite."""
    try:
        arr = np.asarray(getattr(node, attr), dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError(f"node {name!r} ({type(node).__name__}): {attr} must be numeric") from None
    bad = np.isnan(arr) | (np.isinf(arr) & ~(allow_inf & (arr > 0)))
    if bad.any():
        raise InputError(
            f"node {name!r} ({type(node).__name__}): {attr} contains NaN or infinite values; expected finite numbers"
        )
    return arr


def _uniform(node: Any, attr: str, name: str, allow_inf: bool = False) -> float:
    arr = _array(node, attr, name, allow_inf).reshape(-1)
    if arr.size == 0 or not np.all(arr == arr[0]):
        raise InputError(
            f"node {name!r}: {attr} must be the same for every neuron of the layer (flexsnn neurons share one value)"
        )
    return float(arr[0])


def _check_neuron_shape(node: Any, attr: str, name: str, ctx: _Import) -> None:
    arr = np.asarray(getattr(node, attr))
    if ctx.shape is not None and arr.size > 1 and tuple(arr.shape) != tuple(ctx.shape):
        raise InputError(
            f"node {name!r} ({type(node).__name__}): {attr} has shape {tuple(arr.shape)} but its input "
            f"is shaped {ctx.shape}"
        )


def _weight(node: Any, name: str, ndim: int, form: str) -> torch.Tensor:
    w = _array(node, "weight", name)
    if w.ndim != ndim or 0 in w.shape:
        raise InputError(f"node {name!r} ({type(node).__name__}): weight must be {form}, got shape {w.shape}")
    return torch.from_numpy(w.astype(np.float32))


def _bias(node: Any, name: str, out: int) -> torch.Tensor | None:
    raw = getattr(node, "bias", None)
    if raw is None:
        return None
    b = _array(node, "bias", name)
    if b.size == 1:
        b = np.repeat(b.reshape(-1), out)
    if b.shape != (out,):
        raise InputError(
            f"node {name!r} ({type(node).__name__}): bias must have {out} entries (one per output), got shape {b.shape}"
        )
    return None if not np.any(b) else torch.from_numpy(b.astype(np.float32))


def _build_conv(node: Any, name: str, ctx: _Import) -> nn.Module:
    weight = _weight(node, name, 4, "[C_out, C_in, kh, kw]")
    groups = int(np.asarray(node.groups).reshape(-1)[0])
    bias = _bias(node, name, int(weight.shape[0]))
    conv = nn.Conv2d(
        int(weight.shape[1]) * groups,
        int(weight.shape[0]),
        tuple(weight.shape[2:]),
        stride=_pair(node.stride, f"node {name!r} stride"),
        padding=_conv_padding(node.padding, name),
        dilation=_pair(node.dilation, f"node {name!r} dilation"),
        groups=groups,
        bias=bias is not None,
    )
    with torch.no_grad():
        conv.weight.copy_(weight)
        if bias is not None:
            conv.bias.copy_(bias)
    return conv


def _build_dense(node: Any, name: str, ctx: _Import) -> nn.Module:
    weight = _weight(node, name, 2, "[out, in]")
    bias = _bias(node, name, int(weight.shape[0]))
    lin = nn.Linear(int(weight.shape[1]), int(weight.shape[0]), bias=bias is not None)
    with torch.no_grad():
        lin.weight.copy_(weight)
        if bias is not None:
            lin.bias.copy_(bias)
    return lin


def _build_pool(node: Any, name: str, ctx: _Import) -> nn.Module:
    import nir

    if _pair(node.padding, f"node {name!r} padding", 0) != (0, 0):
        raise InputError(f"node {name!r}: pooling with padding is not supported; expected padding 0")
    kernel = _pair(node.kernel_size, f"node {name!r} kernel_size")
    stride = _pair(node.stride, f"node {name!r} stride")
    return SumPool2d(kernel, stride) if isinstance(node, nir.SumPool2d) else nn.AvgPool2d(kernel, stride)


def _build_flatten(node: Any, name: str, ctx: _Import) -> nn.Module:
    start, end = int(node.start_dim), int(node.end_dim)
    ndim = len(ctx.shape) if ctx.shape is not None else None
    full_ends = (-1,) if ndim is None else (-1, ndim - 1)
    # start_dim 1 with the batch counted is how snnTorch and Norse write (and read) a full flatten
    starts = (0, 1) if ctx.profile.flatten_start_dim == 1 or (ndim is not None and ndim == 1) else (0,)
    if start not in starts or end not in full_ends:
        raise InputError(
            f"node {name!r}: only a full Flatten (start_dim=0, end_dim=-1; NIR dims exclude the batch) "
            f"is supported, got start_dim={start}, end_dim={end}"
        )
    return nn.Flatten()


def _neuron_options(name: str, ctx: _Import, runs_as: dict, v_th: float) -> dict[str, Any]:
    info = ctx.neuron_info.get(name)
    if info is not None:  # flexsnn metadata: exact
        return {"reset": info["reset"], "multi_spike": bool(info["multi_spike"]), "v_min": info["v_min"]}
    v_min = -v_th if runs_as["v_min"] == "-v_th" else runs_as["v_min"]
    return {"reset": runs_as["reset"], "multi_spike": bool(runs_as["multi_spike"]), "v_min": v_min}


def _check_v_reset(node: Any, name: str) -> None:
    if getattr(node, "v_reset", None) is not None and np.any(_array(node, "v_reset", name) != 0):
        raise InputError(
            f"node {name!r} ({type(node).__name__}): a reset to v_reset != 0 is not supported; "
            "flexsnn neurons reset to 0 (or by subtraction)"
        )


def _tau(node: Any, attr: str, name: str, ctx: _Import) -> float:
    """A uniform time constant in the graph's unit (> 0, +inf = no leak)."""
    tau = _uniform(node, attr, name, allow_inf=True)
    if not tau > 0:
        raise InputError(f"node {name!r}: {attr} must be > 0, got {tau}")
    return tau / ctx.dt if ctx.profile.tau_times_dt else tau


def _decay_from_tau(tau: float, name: str, ctx: _Import) -> float:
    """Per-step decay of a leak with time constant ``tau`` (in the graph's unit) at step dt."""
    if math.isinf(tau):
        return 1.0
    if ctx.profile.leak == "exp":
        return math.exp(-ctx.dt / tau)
    decay = 1.0 - ctx.dt / tau
    if not decay > 0.0:
        raise InputError(
            f"node {name!r}: tau={tau} is not longer than the step dt={ctx.dt}; the Euler step "
            "1 - dt/tau would not decay the membrane (pass the dt the graph was written for)"
        )
    return decay


def _snap(value: float) -> float:
    """Round a gain that is 1 up to float error (tau/dt * dt/tau) to exactly 1."""
    return 1.0 if math.isclose(value, 1.0, rel_tol=1e-6) else value


def _fold_input(ctx: _Import, name: str, gain: float, drive: float) -> None:
    """Fold a neuron's input gain and constant drive into the weighted layer before it."""
    if gain == 1.0 and drive == 0.0:
        return
    prev = ctx.modules[-1][1] if ctx.modules else None
    if not isinstance(prev, (nn.Conv2d, nn.Linear)):
        raise InputError(
            f"node {name!r}: its input gain {gain} / leak drive {drive} must fold into a Conv2d or "
            "Linear/Affine node right before it; none there"
        )
    with torch.no_grad():
        if gain != 1.0:
            prev.weight.mul_(gain)
        if prev.bias is not None:
            prev.bias.mul_(gain)
        if drive != 0.0:
            if prev.bias is None:
                prev.bias = nn.Parameter(torch.zeros(prev.weight.shape[0], dtype=prev.weight.dtype))
            prev.bias.add_(drive)


def _build_if(node: Any, name: str, ctx: _Import) -> nn.Module:
    for attr in ("r", "v_threshold"):
        _check_neuron_shape(node, attr, name, ctx)
    _check_v_reset(node, name)
    v_th = _uniform(node, "v_threshold", name)
    r = _uniform(node, "r", name)
    info = ctx.neuron_info.get(name)
    if info is None:
        gain = _snap(r * ctx.dt) if ctx.profile.if_gain == "r_dt" else 1.0
        _fold_input(ctx, name, gain, 0.0)
    else:
        v_th = float(info.get("v_th", v_th))
    return IF(v_th=v_th, **_neuron_options(name, ctx, ctx.profile.if_runs_as, v_th))


def _build_lif(node: Any, name: str, ctx: _Import) -> nn.Module:
    for attr in ("tau", "r", "v_leak", "v_threshold"):
        _check_neuron_shape(node, attr, name, ctx)
    _check_v_reset(node, name)
    v_th = _uniform(node, "v_threshold", name)
    info = ctx.neuron_info.get(name)
    if info is not None:
        decay, v_th = float(info["decay"]), float(info.get("v_th", v_th))
    else:
        tau = _tau(node, "tau", name, ctx)
        r = _uniform(node, "r", name, allow_inf=True)
        v_leak = _uniform(node, "v_leak", name)
        decay = _decay_from_tau(tau, name, ctx)
        rule = ctx.profile.lif_gain
        if rule == "one":
            gain, drive = 1.0, v_leak
        elif math.isinf(tau):  # no leak: dt * r / tau is 0 * inf; snnTorch writes r = tau / dt, gain 1
            gain, drive = 1.0, 0.0
        else:
            gain = ctx.dt / tau * (r if rule == "r_dt_tau" else 1.0)
            drive = ctx.dt / tau * v_leak
        _fold_input(ctx, name, _snap(gain), drive)
    options = _neuron_options(name, ctx, ctx.profile.lif_runs_as, v_th)
    if decay == 1.0:
        return IF(v_th=v_th, **options)
    return LIF(v_th=v_th, decay=decay, **options)


def _build_li(node: Any, name: str, ctx: _Import) -> nn.Module:
    for attr in ("tau", "r", "v_leak"):
        _check_neuron_shape(node, attr, name, ctx)
    tau = _tau(node, "tau", name, ctx)
    r, v_leak = _uniform(node, "r", name, allow_inf=True), _uniform(node, "v_leak", name)
    decay = _decay_from_tau(tau, name, ctx)
    if math.isinf(tau) or ctx.profile.lif_gain == "one":
        gain, drive = 1.0, (0.0 if math.isinf(tau) else v_leak)
    else:
        gain = ctx.dt / tau * (r if ctx.profile.lif_gain == "r_dt_tau" else 1.0)
        drive = ctx.dt / tau * v_leak
    _fold_input(ctx, name, _snap(gain), drive)
    return LeakyIntegrator(decay)


def _build_cuba_lif(node: Any, name: str, ctx: _Import) -> nn.Module:
    for attr in ("tau_syn", "tau_mem", "r", "v_leak", "v_threshold", "w_in"):
        _check_neuron_shape(node, attr, name, ctx)
    _check_v_reset(node, name)
    tau_syn, tau_mem = _tau(node, "tau_syn", name, ctx), _tau(node, "tau_mem", name, ctx)
    r, w_in = _uniform(node, "r", name, allow_inf=True), _uniform(node, "w_in", name)
    if np.any(_array(node, "v_leak", name) != 0):
        raise InputError(f"node {name!r}: CubaLIF with v_leak != 0 is not supported; expected v_leak = 0")
    v_th = _uniform(node, "v_threshold", name)
    syn_decay, decay = _decay_from_tau(tau_syn, name, ctx), _decay_from_tau(tau_mem, name, ctx)
    if ctx.profile.cuba == "rockpool":  # the input joins the current before it decays
        syn_gain, gain = syn_decay, 1.0
    elif ctx.profile.lif_gain == "one":
        syn_gain, gain = 1.0, 1.0
    else:
        syn_gain = 1.0 if math.isinf(tau_syn) else ctx.dt / tau_syn * w_in
        gain = 1.0 if math.isinf(tau_mem) else ctx.dt / tau_mem * (r if ctx.profile.lif_gain == "r_dt_tau" else 1.0)
    _fold_input(ctx, name, _snap(syn_gain), 0.0)
    options = _neuron_options(name, ctx, ctx.profile.lif_runs_as, v_th)
    if options["v_min"] is not None:
        raise InputError(f"node {name!r}: a CubaLIF with a membrane floor is not supported")
    return CurrentLIF(syn_decay, decay, _snap(gain), v_th, options["reset"], options["multi_spike"])


@functools.cache
def _builders() -> dict[type, Callable[[Any, str, _Import], nn.Module]]:
    """{NIR node type: builder(node, name, import state) -> module} (nir imported on first use)."""
    import nir

    return {
        nir.Conv2d: _build_conv,
        nir.Affine: _build_dense,
        nir.Linear: _build_dense,
        nir.SumPool2d: _build_pool,
        nir.AvgPool2d: _build_pool,
        nir.Flatten: _build_flatten,
        nir.IF: _build_if,
        nir.LIF: _build_lif,
        nir.LI: _build_li,
        nir.CubaLIF: _build_cuba_lif,
    }


def _conv_padding(padding: Any, name: str) -> Any:
    if isinstance(padding, bytes):
        padding = padding.decode("utf8")
    if isinstance(padding, np.ndarray) and padding.dtype.kind in "SUO":
        padding = padding.item()
        padding = padding.decode("utf8") if isinstance(padding, bytes) else padding
    if isinstance(padding, str):
        if padding not in ("same", "valid"):
            raise InputError(f"node {name!r}: padding must be 'same', 'valid' or ints, got {padding!r}")
        return padding
    return _pair(padding, f"node {name!r} padding", 0)


def _next_shape(module: nn.Module, name: str, shape: tuple[int, ...] | None) -> tuple[int, ...] | None:
    """The output shape of ``module`` for one sample shaped ``shape``, or an InputError naming the node."""
    if shape is None or isinstance(module, MultiStepModule):
        return shape
    try:
        with torch.no_grad():
            out = module(torch.zeros(1, *shape))
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        raise InputError(
            f"node {name!r} ({type(module).__name__}) does not fit its input shaped {shape}: {first}"
        ) from None
    return tuple(out.shape[1:])


def _input_type(graph: Any, order: list[str]) -> tuple[int, ...] | None:
    in_type = getattr(graph.nodes[order[0]], "input_type", {}) or {}
    raw = in_type.get("input") if isinstance(in_type, dict) else None
    if raw is None:
        return None
    arr = np.asarray(raw).reshape(-1)
    if arr.size == 0 or not all(float(s) == int(s) and int(s) >= 1 for s in arr):
        raise InputError(f"the Input node's shape must be positive ints, got {raw!r}")
    return tuple(int(s) for s in arr)


def _without_batch(shape: tuple[int, ...], first: Any) -> tuple[int, ...]:
    """Drop a batch axis that an exporter left in the Input type (Norse 1.1 records its sample's
    batch): one axis more than the first node takes (Conv2d: C, H, W; Linear/Affine: N)."""
    import nir

    if isinstance(first, nir.Conv2d) and len(shape) == 4:
        return shape[1:]
    if isinstance(first, (nir.Linear, nir.Affine)) and len(shape) == 2:
        w = np.asarray(first.weight)
        if w.ndim == 2 and shape[1] == w.shape[1]:
            return shape[1:]
    return shape


def from_nir(
    graph: Any,
    dt: float | None = None,
    profile: str | Profile | None = None,
    ttm_mode: str | None = None,
) -> nn.Module:
    """Build a :class:`flexsnn.staged.StagedNet` from a ``nir.NIRGraph``.

    dt: the step to read the graph's time constants with, in the graph's time unit
    (default: the flexsnn metadata's, else the profile's; pass the peer's: snnTorch and
    SpikingJelly 1e-4, Norse 1e-3). profile: how the writer meant the nodes (a name in
    :data:`PROFILES`; default "flexsnn" for a graph with flexsnn metadata, else "nir").
    Supported nodes: ``Input, Output, Conv2d, SumPool2d, AvgPool2d, Flatten, Linear, Affine,
    IF, LIF, LI, CubaLIF``. With flexsnn metadata the stages, neuron options, ttm_mode and
    time config are restored. The last weighted layer (and anything after it) becomes the head
    unless a neuron follows it. The model takes frames ``[T, B, *input_shape]`` and has
    ``input_shape``, ``nir_metadata`` attributes. Raises InputError naming the node for
    unsupported nodes, non-finite values and shapes that do not chain.
    """
    order = _chain(graph)
    meta = nir_metadata(graph)
    prof = _profile(profile if profile is not None else ("flexsnn" if meta is not None else "nir"))
    if dt is None:
        dt = (meta or {}).get("dt", 1.0) if meta is not None else prof.dt
    ctx = _Import(prof, _check_dt(dt), (meta or {}).get("neurons", {}), _input_type(graph, order))
    if ctx.shape is not None and len(order) > 2:
        ctx.shape = _without_batch(ctx.shape, graph.nodes[order[1]])
    shape = ctx.shape
    builders = _builders()
    for name in order[1:-1]:
        node = graph.nodes[name]
        build = builders.get(type(node))
        if build is None:
            raise InputError(
                f"node {name!r} of type {type(node).__name__} is not supported; supported: {_SUPPORTED_NODES}"
            )
        module = build(node, name, ctx)
        ctx.shape = _next_shape(module, name, ctx.shape)
        ctx.modules.append((name, module))
    if not ctx.modules:
        raise InputError("graph has no layers between its Input and Output")
    names = [n for n, _ in ctx.modules]
    layers = [m for _, m in ctx.modules]
    head_names = set((meta or {}).get("head") or [])
    if meta is not None and head_names:
        head_start = min(names.index(n) for n in head_names if n in names)
    else:
        head_start = _default_head_start(layers)
    body, head_layers = layers[:head_start], layers[head_start:]
    boundaries = []
    if meta is not None and meta.get("stages"):
        for stage in meta["stages"][1:]:
            first = next((names.index(n) for n in stage if n in names), None)
            if first is not None and 0 < first < head_start:
                boundaries.append(first)
    if not body:
        raise InputError("graph has no spiking body before its readout layer; expected at least one neuron layer")
    head = None
    if head_layers:
        head = head_layers[0] if len(head_layers) == 1 else nn.Sequential(*head_layers)
    in_shape = (meta or {}).get("input_shape") or shape
    kwargs = {
        "head": head,
        "input_kind": (meta or {}).get("input_kind") or "frames",
        "input_shape": tuple(int(s) for s in in_shape) if in_shape else None,
    }
    mode = ttm_mode or (meta or {}).get("ttm_mode")
    if mode:
        kwargs["ttm_mode"] = mode
    if (meta or {}).get("input_ttm_mode"):
        kwargs["input_ttm_mode"] = meta["input_ttm_mode"]
    net = staged_from_layers(body, boundaries, **kwargs)
    cfg = (meta or {}).get("time_config")
    if cfg and len(cfg) == net.num_stages:
        net.set_time_config(tuple(int(t) for t in cfg))
    net.nir_metadata = meta
    return net


def _default_head_start(layers: list[nn.Module]) -> int:
    """Without metadata the head starts at the last weighted layer, if no neuron follows it."""
    weighted = [i for i, m in enumerate(layers) if isinstance(m, (nn.Conv2d, nn.Linear))]
    if not weighted:
        raise InputError("graph has no weighted layer (Conv2d, Linear, Affine)")
    last = weighted[-1]
    if any(isinstance(m, MultiStepModule) for m in layers[last + 1 :]):
        return len(layers)  # ends with a neuron layer: no separate head
    return last
