"""EventNet -> the flat arrays the kernels run on (:class:`CompiledNet`), cached per net.

Only the EventNet's public fields are read (``layers``, each layer's ``weight``, ``stride``,
``padding``, ``kernel``, ``neuron``, ``output_neuron``, ``shapes``). :func:`compiled_for` keeps
the encoding of each net it has seen (as long as the net lives) and reuses it while the net's
structure and every weight bit are unchanged: a weight changed in place, a replaced array or
layer, another neuron or another input shape all encode the net afresh.
"""

from __future__ import annotations

import math
import threading
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numba
import numpy as np

from flexsnn.deploy.eventnet import Conv, EventNet, Flatten, Linear, NeuronSpec, SumPool
from flexsnn.deploy.simulator.kernels import (
    CONV,
    FAN_COLUMNS,
    K_F,
    K_FAN,
    K_FCNT,
    K_IC,
    K_IH,
    K_IW,
    K_KH,
    K_KIND,
    K_KW,
    K_LUT,
    K_NEURON,
    K_OC,
    K_OH,
    K_OW,
    K_SOFF,
    K_WOFF,
    LINEAR,
    MAX_SIDE,
    N_COLUMNS,
    POOL,
)
from flexsnn.errors import InputError

__all__ = ["CompiledNet", "compile_net", "compiled_for"]


@dataclass
class CompiledNet:
    """An EventNet encoded as flat arrays for the kernel (one kernel handles any stack).

    The kernel keeps conv membranes as [H_out, W_out, C_out] (channel innermost), so a spike's
    fan-out at one output position is one contiguous run of weights and of membranes.
    """

    ops: np.ndarray  # int64 [n_ops, N_COLUMNS], see the K_* columns
    tables: np.ndarray  # int64: pool footprints (_footprint_table) and conv fan-out tables (_fan_table)
    weights: np.ndarray  # float32 (the EventNet's own values), conv [ci, kh, kw, co], linear [in, out]
    neurons: np.ndarray  # float64 [n_weighted, 5]: v_th, v_min (-inf = none), multi, hard, tau (0 = none)
    n_state: int  # total neurons of all weighted layers
    shapes: list[tuple[int, ...]] = field(default_factory=list)  # output shape per weighted layer
    input_shape: tuple[int, int, int] = (0, 0, 0)
    # weights laid out for the threads sharing a sample's layers, per thread count (see threads)
    split_weights: dict[int, np.ndarray] = field(default_factory=dict, repr=False)

    @property
    def leaks(self) -> bool:
        """True if some layer leaks (then the kernel keeps each neuron's last update time)."""
        return bool((self.neurons[:, 4] > 0).any())


def _neuron_row(spec: NeuronSpec) -> list[float]:
    return [
        spec.v_th,
        -math.inf if spec.v_min is None else spec.v_min,
        float(spec.multi_spike),
        float(spec.reset == "hard"),
        0.0 if spec.tau is None else spec.tau,
    ]


def _footprint_table(size_in: int, size_out: int, kernel: int, stride: int, pad: int) -> np.ndarray:
    """int64 [2, size_in]: first and last output index o whose window [o * stride - pad, + kernel)
    holds input index i (first > last: in no window). Replaces per-spike integer divisions."""
    i = np.arange(size_in, dtype=np.int64)
    first = np.maximum(0, -((kernel - 1 - i - pad) // stride))  # ceil((i + pad - kernel + 1) / stride)
    last = np.minimum(size_out - 1, (i + pad) // stride)
    return np.stack([first, last])


def _fan_table(conv: Conv, shape_in: tuple[int, ...], shape_out: tuple[int, ...]) -> tuple[int, np.ndarray, np.ndarray]:
    """A conv layer's fan-out per input position, precomputed: ``(F, entries, counts)``.

    For the input position p = y * W_in + x, ``counts[p]`` output positions (oy, ox) hold it in
    their window, listed in descending (oy, ox) order as the first counts[p] of its F rows in
    ``entries`` int64 [H_in * W_in * F, FAN_COLUMNS]: weight tap ky * kw + kx, spike key
    (oy << 16) | ox, position oy * W_out + ox (the kernel scales tap and position by the
    channels of its layout).
    A spike then walks a list instead of computing its footprint (no divisions, no bounds).
    """
    _, hi, wi = shape_in
    co, ho, wo = shape_out
    kh, kw = conv.weight.shape[2:]
    (sh, sw), (ph, pw) = conv.stride, conv.padding
    first_y, last_y = _footprint_table(hi, ho, kh, sh, ph)
    first_x, last_x = _footprint_table(wi, wo, kw, sw, pw)
    count_y, count_x = np.maximum(0, last_y - first_y + 1), np.maximum(0, last_x - first_x + 1)
    fy, fx = max(1, int(count_y.max())), max(1, int(count_x.max()))
    oy = first_y[:, None, None, None] + np.arange(fy)[None, None, :, None]  # [hi, 1, fy, 1]
    ox = first_x[None, :, None, None] + np.arange(fx)[None, None, None, :]  # [1, wi, 1, fx]
    ky = np.arange(hi)[:, None, None, None] + ph - oy * sh
    kx = np.arange(wi)[None, :, None, None] + pw - ox * sw
    valid = (np.arange(fy)[None, None, :, None] < count_y[:, None, None, None]) & (
        np.arange(fx)[None, None, None, :] < count_x[None, :, None, None]
    )
    shape = (hi, wi, fy, fx)
    columns = [np.broadcast_to(v, shape) for v in (ky * kw + kx, (oy << 16) | ox, oy * wo + ox)]
    # descending (oy, ox) is ascending (ky, kx): one spike's weights are read as one forward stream
    entries = np.stack(columns, axis=-1).reshape(hi, wi, fy * fx, FAN_COLUMNS)[:, :, ::-1]
    valid = np.broadcast_to(valid, shape).reshape(hi, wi, fy * fx)[:, :, ::-1]
    # valid entries first, in descending (oy, ox) order: a stable sort on "not valid"
    order = np.argsort(~valid, axis=-1, kind="stable")
    entries = np.take_along_axis(entries, order[..., None], axis=2)
    entries = np.where(np.take_along_axis(valid, order, axis=2)[..., None], entries, 0)
    counts = (count_y[:, None] * count_x[None, :]).astype(np.int64)
    return fy * fx, np.ascontiguousarray(entries, dtype=np.int64).ravel(), counts.ravel()


def compile_net(net: EventNet, input_shape: Sequence[int]) -> CompiledNet:
    """Encode ``net`` for an input map ``input_shape = (C, H, W)`` (validated; recorded on the net)."""
    net.set_input_shape(input_shape)
    shapes = net.shapes()
    for shape in shapes:
        if len(shape) == 3 and max(shape[1:]) >= MAX_SIDE:
            raise InputError(f"the simulator needs map heights and widths below {MAX_SIDE}; got a map {shape}")
    rows, views, neurons, out_shapes, tables = [], [], [], [], []
    w_off = s_off = t_off = 0
    last = len(net.layers) - 1

    def add_table(table: np.ndarray) -> int:
        nonlocal t_off
        tables.append(table)
        t_off += table.size
        return t_off - table.size

    for i, layer in enumerate(net.layers):
        if isinstance(layer, Flatten):
            continue
        shape_in, shape_out = shapes[i], shapes[i + 1]
        if len(shape_in) == 1:  # keys still carry (c, y, x) of the map before the Flatten(s)
            j = i
            while j > 0 and isinstance(net.layers[j - 1], Flatten):
                j -= 1
            shape_in = shapes[j]
        row = np.zeros(N_COLUMNS, dtype=np.int64)
        ci, hi, wi = (shape_in + (1, 1))[:3] if len(shape_in) == 1 else shape_in
        co, ho, wo = (shape_out + (1, 1))[:3] if len(shape_out) == 1 else shape_out
        row[[K_IC, K_IH, K_IW, K_OC, K_OH, K_OW]] = [ci, hi, wi, co, ho, wo]
        if isinstance(layer, SumPool):
            row[K_KIND], row[K_NEURON] = POOL, -1
            row[K_LUT] = add_table(
                np.concatenate(
                    [
                        _footprint_table(hi, ho, layer.kernel[0], layer.stride[0], 0).ravel(),
                        _footprint_table(wi, wo, layer.kernel[1], layer.stride[1], 0).ravel(),
                    ]
                )
            )
        else:
            if isinstance(layer, Conv):
                row[K_KIND] = CONV
                row[[K_KH, K_KW]] = layer.weight.shape[2:]
                fan, entries, counts = _fan_table(layer, shape_in, shape_out)
                row[K_F], row[K_FAN], row[K_FCNT] = fan, add_table(entries), add_table(counts)
                w = layer.weight.transpose(1, 2, 3, 0)  # [ci, kh, kw, co]: contiguous fan-out per tap
            else:
                row[K_KIND] = LINEAR
                w = layer.weight.T  # [in, out]: contiguous fan-out
            row[K_WOFF], row[K_SOFF], row[K_NEURON] = w_off, s_off, len(neurons)
            views.append((w_off, w))
            w_off += w.size
            s_off += int(np.prod(shape_out))
            neurons.append(_neuron_row(net.output_neuron if i == last else layer.neuron))
            out_shapes.append(tuple(shape_out))
        rows.append(row)
    ops = np.stack(rows)
    weights = np.empty(w_off, dtype=np.float32)  # EventNet weights are float32: copied exactly
    for off, w in views:
        np.copyto(weights[off : off + w.size].reshape(w.shape), w)
    return CompiledNet(
        ops=ops,
        tables=np.concatenate(tables) if tables else np.zeros(1, dtype=np.int64),
        weights=weights,
        neurons=np.asarray(neurons, dtype=np.float64),
        n_state=s_off,
        shapes=out_shapes,
        input_shape=tuple(net.input_shape),
    )


# ---- the cache -----------------------------------------------------------------------------
def _structure(net: EventNet) -> tuple[Any, ...]:
    """Everything but the weight values that the encoding depends on (cheap, hashable)."""
    parts: list[Any] = []
    for layer in net.layers:
        if isinstance(layer, (Conv, Linear)):
            w = layer.weight
            parts.append(
                (
                    type(layer).__name__,
                    getattr(layer, "stride", None),
                    getattr(layer, "padding", None),
                    layer.neuron,
                    type(w),
                    getattr(w, "shape", None),
                    getattr(w, "dtype", None),
                )
            )
        elif isinstance(layer, SumPool):
            parts.append(("SumPool", layer.kernel, layer.stride))
        else:
            parts.append((type(layer).__name__,))
    parts.append(net.output_neuron)
    return tuple(parts)


@numba.njit(cache=True, nogil=True)
def _same_words(a, b):
    """a == b bit for bit (same-size unsigned views of the weights), in one vectorised xor pass
    with no temporary array."""
    if a.size != b.size:
        return False
    diff = a.dtype.type(0)
    for i in range(a.size):
        diff |= a[i] ^ b[i]
    return diff == 0


def _words(w: np.ndarray) -> np.ndarray:
    """A contiguous float32 array as unsigned words: 64-bit when its size allows, else 32-bit."""
    flat = w.reshape(-1).view(np.uint32)
    return flat.view(np.uint64) if flat.size % 2 == 0 else flat


def _same_weights(net: EventNet, snapshot: list[np.ndarray]) -> bool:
    weights = [layer.weight for layer in net.layers if isinstance(layer, (Conv, Linear))]
    if len(weights) != len(snapshot):
        return False
    for w, s in zip(weights, snapshot):
        w = np.ascontiguousarray(w)
        if w.dtype != s.dtype or w.shape != s.shape:
            return False
        if w.dtype == np.float32:
            if not _same_words(_words(w), _words(s)):
                return False
        elif not np.array_equal(w, s):
            return False
    return True


_cache: weakref.WeakKeyDictionary[EventNet, tuple[Any, list[np.ndarray], CompiledNet]] = weakref.WeakKeyDictionary()
_cache_lock = threading.Lock()


def compiled_for(net: EventNet, input_shape: Sequence[int]) -> CompiledNet:
    """:func:`compile_net`, reused while ``net`` (the same object) keeps its structure and weights.

    Each call compares every weight bit with a private copy taken when the net was encoded (one
    pass over the weights, no hashing), so in-place changes are always seen. The entry lives as
    long as the net does.
    """
    shape = tuple(int(s) for s in input_shape)
    key = (shape, _structure(net))
    with _cache_lock:
        entry = _cache.get(net)
    if entry is not None and entry[0] == key and _same_weights(net, entry[1]):
        net.set_input_shape(shape)
        return entry[2]
    # the copy is taken first: a weight changed while encoding then fails the next comparison
    snapshot = [np.array(layer.weight, copy=True) for layer in net.layers if isinstance(layer, (Conv, Linear))]
    compiled = compile_net(net, shape)
    try:
        with _cache_lock:
            _cache[net] = (key, snapshot, compiled)
    except TypeError:  # a net type that cannot be weakly referenced: simply not cached
        pass
    return compiled
