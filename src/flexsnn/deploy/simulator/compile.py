"""EventNet -> the flat arrays the kernels run on (:class:`CompiledNet`)."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from flexsnn.deploy.eventnet import Conv, EventNet, Flatten, NeuronSpec, SumPool
from flexsnn.deploy.simulator.kernels import (
    CONV, K_IC, K_IH, K_IW, K_KH, K_KIND, K_KW, K_LUT, K_NEURON, K_OC, K_OH, K_OW, K_PH, K_PW, K_SH, K_SOFF, K_SW,
    K_WOFF, LINEAR, MAX_SIDE, N_COLUMNS, POOL,
)
from flexsnn.errors import InputError

__all__ = ["CompiledNet", "compile_net"]


@dataclass
class CompiledNet:
    """An EventNet encoded as flat arrays for the kernel (one kernel handles any stack).

    The kernel keeps conv membranes as [H_out, W_out, C_out] (channel innermost), so a spike's
    fan-out at one output position is one contiguous run of weights and of membranes.
    """

    ops: np.ndarray        # int64 [n_ops, N_COLUMNS], see the K_* columns
    lut: np.ndarray        # int64, per conv / pool op its footprint tables (see _footprint_table)
    weights: np.ndarray    # float32 (the EventNet's own values), conv [ci, kh, kw, co], linear [in, out]
    neurons: np.ndarray    # float64 [n_weighted, 5]: v_th, v_min (-inf = none), multi, hard, tau (0 = none)
    n_state: int           # total neurons of all weighted layers
    shapes: list[tuple[int, ...]] = field(default_factory=list)  # output shape per weighted layer
    input_shape: tuple[int, int, int] = (0, 0, 0)


def _neuron_row(spec: NeuronSpec) -> list[float]:
    return [spec.v_th, -math.inf if spec.v_min is None else spec.v_min, float(spec.multi_spike),
            float(spec.reset == "hard"), 0.0 if spec.tau is None else spec.tau]


def _footprint_table(size_in: int, size_out: int, kernel: int, stride: int, pad: int) -> np.ndarray:
    """int64 [2, size_in]: first and last output index o whose window [o * stride - pad, + kernel)
    holds input index i (first > last: in no window). Replaces per-spike integer divisions."""
    i = np.arange(size_in, dtype=np.int64)
    first = np.maximum(0, -((kernel - 1 - i - pad) // stride))  # ceil((i + pad - kernel + 1) / stride)
    last = np.minimum(size_out - 1, (i + pad) // stride)
    return np.stack([first, last])


def compile_net(net: EventNet, input_shape: Sequence[int]) -> CompiledNet:
    """Encode ``net`` for an input map ``input_shape = (C, H, W)`` (validated)."""
    net.set_input_shape(input_shape)
    shapes = net.shapes()
    for shape in shapes:
        if len(shape) == 3 and max(shape[1:]) >= MAX_SIDE:
            raise InputError(f"the simulator needs map heights and widths below {MAX_SIDE}; got a map {shape}")
    rows, views, neurons, out_shapes, tables = [], [], [], [], []
    w_off = s_off = lut_off = 0
    last = len(net.layers) - 1
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
        row[[K_KH, K_KW, K_SH, K_SW]] = [1, 1, 1, 1]
        if isinstance(layer, (SumPool, Conv)):
            if isinstance(layer, SumPool):
                (kh, kw), (sh, sw), (ph, pw) = layer.kernel, layer.stride, (0, 0)
            else:
                (kh, kw), (sh, sw), (ph, pw) = layer.weight.shape[2:], layer.stride, layer.padding
            row[[K_KH, K_KW, K_SH, K_SW, K_PH, K_PW, K_LUT]] = [kh, kw, sh, sw, ph, pw, lut_off]
            table = np.concatenate([_footprint_table(hi, ho, kh, sh, ph).ravel(),
                                    _footprint_table(wi, wo, kw, sw, pw).ravel()])
            tables.append(table)
            lut_off += table.size
        if isinstance(layer, SumPool):
            row[K_KIND] = POOL
            row[K_NEURON] = -1
        else:
            if isinstance(layer, Conv):
                row[K_KIND] = CONV
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
    weights = np.empty(w_off, dtype=np.float32)  # EventNet weights are float32: copied exactly
    for off, w in views:
        np.copyto(weights[off:off + w.size].reshape(w.shape), w)
    return CompiledNet(
        ops=np.stack(rows), lut=np.concatenate(tables) if tables else np.zeros(1, dtype=np.int64),
        weights=weights, neurons=np.asarray(neurons, dtype=np.float64),
        n_state=s_off, shapes=out_shapes, input_shape=tuple(net.input_shape),
    )
