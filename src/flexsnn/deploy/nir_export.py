"""NIR export and import of deployable (bias-free IF) networks: :func:`to_nir`, :func:`from_nir`.

NIR (the Neuromorphic Intermediate Representation, package ``nir``) is the exchange format
read by Sinabs, Norse, snnTorch, Lava and others. A deployable flexsnn model maps to a chain
``Input -> Conv2d / SumPool2d / Flatten / Affine|Linear / IF ... -> Output``:

=====================  ==========================================================
flexsnn / torch        NIR node
=====================  ==========================================================
nn.Conv2d (no bias)    Conv2d (bias = zeros, input_shape recorded)
nn.AvgPool2d(k)        SumPool2d(k) with the 1/(kh*kw) scale folded into the NEXT
                       weighted layer's weights (``pool="sum"``, the default, what
                       chips run), or AvgPool2d (``pool="avg"``)
SumPool2d              SumPool2d
nn.Flatten             Flatten(start_dim=0) (NIR dims exclude the batch)
nn.Linear (no bias)    Affine with a zero bias (``linear="affine"``, the default:
                       Sinabs reads Affine but not Linear) or Linear
IF                     IF(r = 1, v_threshold = v_th, v_reset = 0)
LIF                    LIF(tau = 1 / (1 - decay), r = tau, v_leak = 0), i.e. the
                       Euler step dt = 1 of NIR's ODE gives u = decay * u + x
=====================  ==========================================================

What NIR cannot say is stored in the graph's ``metadata`` (NIRGraph has a ``metadata``
dict in nir 1.0.4 and 1.0.8; it survives ``nir.write`` / ``nir.read``) under the key
``"flexsnn"`` as ONE JSON string (HDF5 keeps strings intact, nested dicts and lists would
come back as numpy arrays). Its fields:

- ``format``: ``"flexsnn.nir/1"``.
- ``neurons``: per IF/LIF node name: ``v_th``, ``decay``, ``reset`` ("subtract"/"hard";
  NIR's IF resets to ``v_reset``), ``multi_spike`` (NIR emits at most one spike),
  ``v_min`` (membrane lower bound, Sinabs' ``min_v_mem``), ``threshold_rule`` ("u >= v_th";
  NIR writes ``v > v_thr``).
- ``stages``: the node names of every stage, ``head``: the node names of the head (TTM
  stage boundaries), ``ttm_mode``, ``input_kind``, ``time_config`` (the model's current
  per-stage time steps), ``input_shape``.
- ``pool_folding``: for each SumPool2d that came from an AvgPool2d, the scale and the
  node it was folded into.
- ``readout``: "accumulated input of the last weighted layer" (no neuron after it).
- anything passed as ``extra`` (e.g. the training recipe).

:func:`from_nir` reads such a graph back into a :class:`flexsnn.staged.StagedNet` with the
same stages. A graph WITHOUT flexsnn metadata is read with the deployment defaults: IF
threshold from the node, reset by subtraction, multi-spike, membrane lower bound -1, one
stage, and the final weighted layer as the head.
"""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from flexsnn.errors import InputError, check_choice

__all__ = ["SumPool2d", "to_nir", "from_nir", "nir_metadata", "METADATA_KEY", "FORMAT", "DEPLOY_DEFAULTS"]

METADATA_KEY = "flexsnn"
FORMAT = "flexsnn.nir/1"
#: How a graph without flexsnn metadata is read (the paper's event-driven neuron).
DEPLOY_DEFAULTS = {"reset": "subtract", "multi_spike": True, "v_min": -1.0}
_SUPPORTED_NODES = "Input, Output, Conv2d, SumPool2d, AvgPool2d, Flatten, Linear, Affine (zero bias), IF, LIF"


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


def _pair(value: Any, name: str) -> tuple[int, int]:
    arr = np.asarray(value).reshape(-1)
    if arr.size == 1:
        arr = np.repeat(arr, 2)
    if arr.size != 2 or not all(float(v) == int(v) and int(v) >= 1 for v in arr):
        raise InputError(f"{name} must be a positive int or a pair of them, got {value!r}")
    return int(arr[0]), int(arr[1])


# ---- export ------------------------------------------------------------------------------------
@dataclass
class _Layer:
    """One leaf of the model in execution order, with the stage it belongs to (-1 = head)."""

    module: nn.Module
    stage: int
    name: str


def _layers(model: nn.Module) -> list[_Layer]:
    def flat(module: nn.Module, stage: int, prefix: str):
        if isinstance(module, (nn.Sequential, nn.ModuleList)):
            for attr, child in module.named_children():
                yield from flat(child, stage, f"{prefix}.{attr}" if prefix else attr)
        else:
            yield _Layer(module, stage, prefix or type(module).__name__)

    if hasattr(model, "stages") and hasattr(model, "head") and not isinstance(model, nn.Sequential):
        out = []
        for i, stage in enumerate(model.stages):
            out += list(flat(stage, i, f"stages.{i}"))
        if model.head is not None:
            out += list(flat(model.head, -1, "head"))
        return out
    if isinstance(model, nn.Module):
        return list(flat(model, 0, ""))
    raise InputError(f"model must be a flexsnn StagedNet or an nn.Sequential, got {type(model).__name__}")


def _neuron_kind(module: nn.Module) -> str | None:
    kind = type(module).__name__
    if kind in ("IF", "LIF") and hasattr(module, "v_th") and hasattr(module, "reset"):
        return kind
    return None


def _zero_bias(module: nn.Module, where: str) -> None:
    bias = getattr(module, "bias", None)
    if bias is not None and bool((bias.detach() != 0).any()):
        raise InputError(
            f"{where} has a non-zero bias; deployable models are bias-free: run "
            "flexsnn.deploy.remove_biases(model) (and fine-tune) before export"
        )


def _input_shape(model: nn.Module, input_shape: Sequence[int] | None) -> tuple[int, int, int]:
    shape = input_shape if input_shape is not None else getattr(model, "input_shape", None)
    if shape is None or any(s is None for s in shape):
        raise InputError("input_shape is required: pass the model's input map (C, H, W), e.g. (2, 34, 34)")
    try:
        shape = tuple(int(s) for s in shape)
    except (TypeError, ValueError):
        raise InputError(f"input_shape must be (C, H, W) positive ints, got {input_shape!r}") from None
    if len(shape) != 3 or min(shape) < 1:
        raise InputError(f"input_shape must be (C, H, W) positive ints, got {shape}")
    return shape  # type: ignore[return-value]


def _time_config(model: nn.Module) -> list[int] | None:
    cfg = getattr(model, "time_config", None)
    try:
        return [int(t) for t in cfg] if cfg is not None else None
    except TypeError:
        return None


def to_nir(
    model: nn.Module,
    input_shape: Sequence[int] | None = None,
    pool: str = "sum",
    linear: str = "affine",
    extra: dict[str, Any] | None = None,
):
    """Export a bias-free model (StagedNet or nn.Sequential) as a ``nir.NIRGraph``.

    input_shape: the input map ``(C, H, W)`` (default: ``model.input_shape`` if set).
    pool: "sum" (AvgPool2d becomes SumPool2d with its scale folded into the next weighted
    layer) or "avg" (AvgPool2d node). linear: "affine" (zero-bias Affine) or "linear".
    extra: JSON-able values added to the flexsnn metadata.
    Raises InputError for BatchNorm (fold it first), non-zero biases and unsupported modules.
    """
    import nir

    check_choice(pool, "pool", ("sum", "avg"))
    check_choice(linear, "linear", ("affine", "linear"))
    shape = _input_shape(model, input_shape)
    layers = _layers(model)
    nodes: dict[str, Any] = {"input": nir.Input(input_type={"input": np.array(shape)})}
    order = ["input"]
    neurons: dict[str, dict[str, Any]] = {}
    folding: dict[str, dict[str, Any]] = {}
    stage_nodes: dict[int, list[str]] = {}
    pending_scale: list[tuple[str, float]] = []  # sum pools whose scale waits for the next weighted layer
    current = torch.zeros(1, *shape)
    index = 0

    def add(node: Any, kind: str, stage: int) -> str:
        nonlocal index
        name = f"{kind}_{index}"
        index += 1
        nodes[name] = node
        order.append(name)
        stage_nodes.setdefault(stage, []).append(name)
        return name

    with torch.no_grad():
        for layer in layers:
            m, where = layer.module, f"module {layer.name!r} ({type(layer.module).__name__})"
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                raise InputError(f"{where}: fold BatchNorm first: flexsnn.deploy.remove_biases(model)")
            if isinstance(m, (nn.Identity, nn.modules.dropout._DropoutNd)) or type(m).__name__ == "TTM":
                continue
            kind = _neuron_kind(m)
            if kind is not None:
                if pending_scale:
                    raise InputError(f"{where}: an AvgPool2d must be followed by a weighted layer before any neuron")
                n = tuple(current.shape[1:])
                if kind == "IF" or float(m.decay) == 1.0:
                    node = nir.IF(r=np.ones(n, np.float32), v_threshold=np.full(n, float(m.v_th), np.float32),
                                  **_v_reset(nir.IF, n))
                    name = add(node, "if", layer.stage)
                else:
                    decay = float(m.decay)
                    tau = 1.0 / (1.0 - decay)
                    node = nir.LIF(tau=np.full(n, tau, np.float32), r=np.full(n, tau, np.float32),
                                   v_leak=np.zeros(n, np.float32), v_threshold=np.full(n, float(m.v_th), np.float32),
                                   **_v_reset(nir.LIF, n))
                    name = add(node, "lif", layer.stage)
                neurons[name] = {
                    "type": kind, "v_th": float(m.v_th), "decay": float(getattr(m, "decay", 1.0)),
                    "reset": m.reset, "multi_spike": bool(m.multi_spike),
                    "v_min": None if m.v_min is None else float(m.v_min), "threshold_rule": "u >= v_th",
                }
                continue
            if isinstance(m, nn.Conv2d):
                _zero_bias(m, where)
                if m.padding_mode != "zeros":
                    raise InputError(f"{where}: only zero padding can be exported, got padding_mode={m.padding_mode!r}")
                weight = _scaled(m.weight, pending_scale)
                padding = m.padding if isinstance(m.padding, str) else tuple(int(p) for p in m.padding)
                node = nir.Conv2d(
                    input_shape=tuple(int(s) for s in current.shape[2:]), weight=weight,
                    stride=tuple(int(s) for s in m.stride), padding=padding,
                    dilation=tuple(int(d) for d in m.dilation), groups=int(m.groups),
                    bias=np.zeros(weight.shape[0], np.float32),
                )
                name = add(node, "conv2d", layer.stage)
                _record_folding(folding, pending_scale, name)
                current = m(current)
                continue
            if isinstance(m, nn.Linear):
                _zero_bias(m, where)
                weight = _scaled(m.weight, pending_scale)
                if linear == "affine":
                    name = add(nir.Affine(weight=weight, bias=np.zeros(weight.shape[0], np.float32)), "affine", layer.stage)
                else:
                    name = add(nir.Linear(weight=weight), "linear", layer.stage)
                _record_folding(folding, pending_scale, name)
                current = m(current)
                continue
            if isinstance(m, nn.Flatten):
                if m.start_dim != 1 or m.end_dim != -1:
                    raise InputError(f"{where}: only nn.Flatten(start_dim=1, end_dim=-1) can be exported")
                add(nir.Flatten(input_type={"input": np.array(current.shape[1:])}, start_dim=0, end_dim=-1),
                    "flatten", layer.stage)
                current = m(current)
                continue
            if isinstance(m, nn.AvgPool2d) or type(m).__name__ in ("SumPool2d", "SumPool"):
                kernel = _pair(m.kernel_size, f"{where}.kernel_size")
                stride = _pair(m.stride if m.stride else kernel, f"{where}.stride")
                pad = getattr(m, "padding", 0)
                if _pad_pair(pad) != (0, 0) or getattr(m, "ceil_mode", False):
                    raise InputError(f"{where}: only pooling without padding and with ceil_mode=False can be exported")
                is_avg = isinstance(m, nn.AvgPool2d) and getattr(m, "divisor_override", None) != 1
                if is_avg and pool == "avg":
                    if m.divisor_override is not None:
                        raise InputError(f"{where}: AvgPool2d with divisor_override cannot be exported as NIR AvgPool2d; use pool='sum'")
                    add(nir.AvgPool2d(kernel_size=np.array(kernel), stride=np.array(stride), padding=np.array((0, 0))),
                        "avgpool2d", layer.stage)
                else:
                    name = add(nir.SumPool2d(kernel_size=np.array(kernel), stride=np.array(stride),
                                             padding=np.array((0, 0))), "sumpool2d", layer.stage)
                    if is_avg:
                        divisor = m.divisor_override or kernel[0] * kernel[1]
                        pending_scale.append((name, 1.0 / float(divisor)))
                current = F.avg_pool2d(current, kernel, stride)
                continue
            raise InputError(f"{where} cannot be exported to NIR; supported: Conv2d, AvgPool2d, SumPool2d, Flatten, "
                             "Linear (bias-free), IF, LIF, Identity, Dropout")
    if pending_scale:
        raise InputError("the model ends with an AvgPool2d whose scale has no weighted layer to fold into; use pool='avg'")
    if len(order) == 1:
        raise InputError("model has no layers to export")
    nodes["output"] = nir.Output(output_type={"output": np.array(current.shape[1:])})
    order.append("output")
    stages = [stage_nodes[s] for s in sorted(k for k in stage_nodes if k >= 0)]
    meta = {
        "format": FORMAT,
        "neurons": neurons,
        "stages": stages,
        "head": stage_nodes.get(-1, []),
        "ttm_mode": getattr(model, "ttm_mode", None),
        "input_kind": getattr(model, "input_kind", "frames"),
        "time_config": _time_config(model),
        "input_shape": list(shape),
        "pool_folding": folding,
        "readout": "accumulated input of the last weighted layer (sum over time of its output); argmax = class",
        "model_spec": getattr(model, "model_spec", None),
        "extra": extra or {},
    }
    edges = [(a, b) for a, b in zip(order[:-1], order[1:])]
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata={METADATA_KEY: json.dumps(meta)})


def _v_reset(cls: type, shape: tuple[int, ...]) -> dict[str, np.ndarray]:
    # nir >= 1.0.5 has v_reset (0: the node resets to 0, which our metadata corrects to
    # "subtract"); nir 1.0.4, the version Sinabs pins, has no such field.
    names = {f.name for f in dataclasses.fields(cls)}
    return {"v_reset": np.zeros(shape, np.float32)} if "v_reset" in names else {}


def _pad_pair(pad: Any) -> tuple[int, int]:
    arr = np.asarray(pad).reshape(-1)
    if arr.size == 1:
        arr = np.repeat(arr, 2)
    return int(arr[0]), int(arr[1])


def _scaled(weight: torch.Tensor, pending: list[tuple[str, float]]) -> np.ndarray:
    # Computed like EventNet.from_torch (float64 product, cast once), so both paths agree bit for bit.
    w = np.ascontiguousarray(weight.detach().cpu().numpy())  # channels_last weights (fit lays them out so)
    if not pending:
        return w.astype(np.float32)
    scale = math.prod(s for _, s in pending)
    return (w.astype(np.float64) * scale).astype(np.float32)


def _record_folding(folding: dict, pending: list[tuple[str, float]], into: str) -> None:
    for pool_name, scale in pending:
        folding[pool_name] = {"from": "AvgPool2d", "scale": scale, "folded_into": into}
    pending.clear()


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
        raise InputError(f"graph.metadata[{METADATA_KEY!r}] has format {data.get('format') if isinstance(data, dict) else data!r}, expected {FORMAT!r}")
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
            raise InputError(f"only sequential graphs (a chain Input -> ... -> Output) can be imported; node {name!r} branches")
        name = nxt[0]
        if name in order:
            raise InputError(f"graph has a cycle through node {name!r}; only feed-forward chains can be imported")
    if len(order) != len(nodes):
        missing = sorted(set(nodes) - set(order))
        raise InputError(f"graph is not one chain from its Input: nodes {missing} are not reached")
    if not isinstance(nodes[order[-1]], nir.Output):
        raise InputError(f"graph chain must end in an Output node, ends in {type(nodes[order[-1]]).__name__}")
    return order


def _uniform(values: Any, what: str) -> float:
    arr = np.asarray(values, dtype=np.float64).reshape(-1)
    if arr.size == 0 or not np.all(arr == arr[0]):
        raise InputError(f"{what} must be the same for every neuron of the layer (flexsnn neurons share one value)")
    return float(arr[0])


def _zero_node_bias(node: Any, name: str) -> None:
    bias = np.asarray(getattr(node, "bias", 0.0))
    if np.any(bias != 0):
        raise InputError(
            f"node {name!r} ({type(node).__name__}) has a non-zero bias; flexsnn deployable models are bias-free "
            "(event-driven chips have no biases): remove biases before export"
        )


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
    arr = np.asarray(padding).reshape(-1)
    if arr.size == 1:
        arr = np.repeat(arr, 2)
    return int(arr[0]), int(arr[1])


def _neuron_from_node(node: Any, name: str, info: dict[str, Any] | None) -> nn.Module:
    import nir

    from flexsnn.neurons import IF, LIF

    v_th = _uniform(node.v_threshold, f"node {name!r} v_threshold")
    if info is not None:
        reset, multi, v_min = info["reset"], bool(info["multi_spike"]), info["v_min"]
        v_th = float(info.get("v_th", v_th))
    else:
        reset, multi, v_min = DEPLOY_DEFAULTS["reset"], DEPLOY_DEFAULTS["multi_spike"], DEPLOY_DEFAULTS["v_min"]
    if isinstance(node, nir.IF):
        r = _uniform(node.r, f"node {name!r} r")
        if r != 1.0:
            raise InputError(f"node {name!r}: IF with r={r} is not supported; expected r = 1 (input adds to the membrane)")
        return IF(v_th=v_th, reset=reset, multi_spike=multi, v_min=v_min)
    if np.any(np.asarray(node.v_leak) != 0):
        raise InputError(f"node {name!r}: LIF with v_leak != 0 is not supported; expected v_leak = 0")
    if info is not None:
        decay = float(info["decay"])
    else:
        tau = _uniform(node.tau, f"node {name!r} tau")
        r = _uniform(node.r, f"node {name!r} r")
        if tau <= 1.0 or not math.isclose(r, tau, rel_tol=1e-6):
            raise InputError(
                f"node {name!r}: LIF is read with the Euler step dt = 1 (decay = 1 - 1/tau), which needs tau > 1 "
                f"and r = tau; got tau={tau}, r={r}"
            )
        decay = 1.0 - 1.0 / tau
    return LIF(v_th=v_th, decay=decay, reset=reset, multi_spike=multi, v_min=v_min)


def from_nir(graph: Any, ttm_mode: str | None = None) -> nn.Module:
    """Build a deployable :class:`flexsnn.staged.StagedNet` from a ``nir.NIRGraph``.

    Supported nodes: Input, Output, Conv2d, SumPool2d, AvgPool2d, Flatten, Linear, Affine
    (zero bias), IF (r = 1), LIF (v_leak = 0). With flexsnn metadata the stages, neuron
    options, ttm_mode and time config are restored; without it the deployment defaults apply
    (module docstring). The last weighted layer (and anything after it) becomes the head
    unless a neuron follows it. The returned model takes frames ``[T, B, C, H, W]`` and has
    ``input_shape``, ``nir_metadata`` attributes.
    """
    import nir

    from flexsnn.staged import staged_from_layers

    order = _chain(graph)
    meta = nir_metadata(graph)
    neuron_info = (meta or {}).get("neurons", {})
    modules: list[tuple[str, nn.Module]] = []
    input_shape = None
    in_node = graph.nodes[order[0]]
    in_type = getattr(in_node, "input_type", {}) or {}
    if in_type.get("input") is not None and len(np.asarray(in_type["input"]).reshape(-1)) == 3:
        input_shape = tuple(int(s) for s in np.asarray(in_type["input"]).reshape(-1))
    for name in order[1:-1]:
        node = graph.nodes[name]
        if isinstance(node, nir.Conv2d):
            _zero_node_bias(node, name)
            weight = torch.as_tensor(np.asarray(node.weight, dtype=np.float32))
            if weight.dim() != 4:
                raise InputError(f"node {name!r}: Conv2d weight must be [C_out, C_in, kh, kw], got {tuple(weight.shape)}")
            conv = nn.Conv2d(
                int(weight.shape[1]) * int(node.groups), int(weight.shape[0]), tuple(weight.shape[2:]),
                stride=_pair(node.stride, f"node {name!r} stride"), padding=_conv_padding(node.padding, name),
                dilation=_pair(node.dilation, f"node {name!r} dilation"), groups=int(node.groups), bias=False,
            )
            with torch.no_grad():
                conv.weight.copy_(weight)
            modules.append((name, conv))
        elif isinstance(node, (nir.Affine, nir.Linear)):
            if isinstance(node, nir.Affine):
                _zero_node_bias(node, name)
            weight = torch.as_tensor(np.asarray(node.weight, dtype=np.float32))
            if weight.dim() != 2:
                raise InputError(f"node {name!r}: {type(node).__name__} weight must be [out, in], got {tuple(weight.shape)}")
            lin = nn.Linear(int(weight.shape[1]), int(weight.shape[0]), bias=False)
            with torch.no_grad():
                lin.weight.copy_(weight)
            modules.append((name, lin))
        elif isinstance(node, (nir.SumPool2d, nir.AvgPool2d)):
            if _pad_pair(node.padding) != (0, 0):
                raise InputError(f"node {name!r}: pooling with padding is not supported; expected padding 0")
            kernel = _pair(node.kernel_size, f"node {name!r} kernel_size")
            stride = _pair(node.stride, f"node {name!r} stride")
            pool = SumPool2d(kernel, stride) if isinstance(node, nir.SumPool2d) else nn.AvgPool2d(kernel, stride)
            modules.append((name, pool))
        elif isinstance(node, nir.Flatten):
            start, end = int(node.start_dim), int(node.end_dim)
            if start != 0 or end != -1:
                shape = node.input_type.get("input") if isinstance(node.input_type, dict) else None
                full = shape is not None and start == 0 and end == len(np.asarray(shape).reshape(-1)) - 1
                if not full:
                    raise InputError(f"node {name!r}: only a full Flatten (start_dim=0, end_dim=-1) is supported, "
                                     f"got start_dim={start}, end_dim={end}")
            modules.append((name, nn.Flatten()))
        elif isinstance(node, (nir.IF, nir.LIF)):
            modules.append((name, _neuron_from_node(node, name, neuron_info.get(name))))
        else:
            raise InputError(f"node {name!r} of type {type(node).__name__} is not supported; supported: {_SUPPORTED_NODES}")
    if not modules:
        raise InputError("graph has no layers between its Input and Output")
    names = [n for n, _ in modules]
    layers = [m for _, m in modules]
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
    shape = (meta or {}).get("input_shape") or input_shape
    kwargs = {"head": head, "input_kind": (meta or {}).get("input_kind") or "frames",
              "input_shape": tuple(int(s) for s in shape) if shape else None}
    mode = ttm_mode or (meta or {}).get("ttm_mode")
    if mode:
        kwargs["ttm_mode"] = mode
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
    if any(_neuron_kind(m) for m in layers[last + 1:]):
        return len(layers)  # ends with a spiking layer: no separate head
    return last
