"""The fused neuron's loops as numba kernels, for dense float32 CPU tensors.

The eager loops of :mod:`flexsnn.neurons.kernels` run each step as 5 (forward) to 10
(backward) torch ops, every one a pass over the step's memory. These kernels compute the same
values in one pass per step, element by element, with the loop over channels vectorised:
the same dynamics, the spikes, membranes and pooled spikes bit for bit those of the eager
loops, the gradients within float rounding (the eager ops may fuse a multiply-add). Each
element's recurrence over T is its own, so the elements are cut into one contiguous part per
torch thread (:func:`flexsnn.workers.run_parts`) that walks every step without waiting for
the others.

Kernel pairs (``forward``, ``backward``) as :class:`~flexsnn.neurons.kernels.Kernels`:
:data:`CPU_KERNELS` for any dense layout (elementwise on the memory), and
:func:`pooled_forward` / :func:`pooled_backward` for a neuron followed by average pooling
whose k x k windows tile a channels_last map from its top-left corner (the last rows and
columns may be in no window: floor mode), the spikes never stored whole.

Scope (:func:`supports`): single spikes, the triangle surrogate (any width), both resets,
with or without ``v_min`` and ``detach_reset``; float32 on CPU, each step dense, time
outermost. Everything else runs the eager loops, which is also what
``settings.enabled = False`` asks for. Compiled on first use (numba's disk cache then keeps
them); ``import flexsnn`` does not import numba.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numba
import numpy as np
import torch

from flexsnn.buffers import STEP_BUFFERS
from flexsnn.multistep import memory_format_of, steps_like
from flexsnn.neurons.kernels import Kernels, backward_loop
from flexsnn.neurons.params import NeuronParams
from flexsnn.workers import run_parts

MIN_PART_ELEMENTS = 1 << 15  # per thread and step: below this one thread is faster than a hand-off
ALIGN = 16  # parts start on a 64-byte cache line (16 float32)

_JIT = {"nogil": True, "cache": True, "error_model": "numpy", "boundscheck": False}
ONE = np.float32(1.0)
ZERO = np.float32(0.0)


@dataclass
class Settings:
    """``enabled = False`` runs the eager loops everywhere instead (same values)."""

    enabled: bool = True


settings = Settings()


def supports(x: torch.Tensor, p: NeuronParams) -> bool:
    """Whether these kernels run a neuron on ``x`` ``[T, B, ...]`` with ``p`` (module docstring)."""
    return (
        settings.enabled
        and x.device.type == "cpu"
        and x.dtype == torch.float32
        and not p.multi_spike
        and p.surrogate == "triangle"
        and x.dim() >= 2
        and x.shape[0] > 0
        and x[0].numel() > 0
        and _dense_steps(x)
        and not torch.compiler.is_compiling()
    )


def _dense_steps(x: torch.Tensor) -> bool:
    """Time outermost (stride = one step's size) and each step a permutation of a dense layout."""
    step = x[0]
    if x.stride(0) != step.numel():
        return False
    sizes_strides = sorted((s, n) for n, s in zip(step.shape, step.stride()) if n != 1)
    expected = 1
    for stride, size in sizes_strides:
        if stride != expected:
            return False
        expected *= size
    return True


def _flat(x: torch.Tensor) -> np.ndarray:
    """``[T, N]`` numpy view of a time-outermost tensor with dense steps (its memory order)."""
    t = x.shape[0]
    n = x[0].numel()
    return x.detach().as_strided((t, n), (n, 1)).numpy()


def _same_layout(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.shape == b.shape and a.stride() == b.stride() and a.dtype == b.dtype and a.device == b.device


def _scalars(p: NeuronParams) -> tuple:
    """The float32 parameters the kernels take, rounded as torch rounds a Python scalar for a
    float32 op; no clip is ``v_min = -inf`` (then ``h < v_min`` never holds), the surrogate's
    width 1 is None (the kernels then skip its two divisions, as the eager loop does)."""
    v_min = -math.inf if p.v_min is None else p.v_min
    alpha = None if p.alpha == 1.0 else np.float32(p.alpha)
    return np.float32(p.decay), np.float32(p.v_th), np.float32(v_min), alpha


def _parts(rows: int, row_elements: int, align: int) -> list[tuple[int, int]]:
    """Cut ``rows`` into contiguous ranges, one per torch thread, each at least
    :data:`MIN_PART_ELEMENTS` elements and starting at a multiple of ``align`` rows."""
    threads = max(1, torch.get_num_threads())
    parts = max(1, min(threads, rows * row_elements // MIN_PART_ELEMENTS))
    edges = [0]
    for i in range(1, parts):
        edge = (rows * i // parts) // align * align
        if edge > edges[-1]:
            edges.append(edge)
    edges.append(rows)
    return list(zip(edges[:-1], edges[1:]))


def _run(kernel, parts: list[tuple[int, int]], *args) -> None:
    run_parts(lambda i: kernel(*args, *parts[i]), len(parts))


# ----------------------------------------------------------------------- numba kernels
@numba.njit(inline="always")
def _fire(hv, v_th, v_min, hard):  # pragma: no cover - numba
    """(spike, membrane after the reset) of an element with pre-clip membrane ``hv``."""
    m = v_min if hv < v_min else hv
    s = ONE if m >= v_th else ZERO
    return s, (m - m * s if hard else m - s * v_th)


@numba.njit(**_JIT)
def _forward_kernel(x, spikes, h, u, decay, v_th, v_min, hard, lo, hi):  # pragma: no cover - numba
    """Steps 0..T-1 of elements [lo, hi): h into h[t] (h[0] for every step when h has one row)."""
    keep = h.shape[0] > 1
    for t in range(x.shape[0]):
        xt = x[t][lo:hi]
        st = spikes[t][lo:hi]
        ht = h[t if keep else 0][lo:hi]
        ut = u[lo:hi]
        if t == 0:  # u = 0: 0 * decay + x[0] is x[0] + 0, the same bits
            for i in range(hi - lo):
                hv = xt[i] + ZERO
                ht[i] = hv
                st[i], ut[i] = _fire(hv, v_th, v_min, hard)
        else:
            for i in range(hi - lo):
                hv = ut[i] * decay + xt[i]
                ht[i] = hv
                st[i], ut[i] = _fire(hv, v_th, v_min, hard)


@numba.njit(inline="always")
def _grad_step(hv, g, carry, scale, v_th, v_min, alpha, hard, detach, clip, with_carry):  # pragma: no cover - numba
    """dL/dx of one element at one step from its pre-clip membrane ``hv``: ``g`` = dL/ds,
    ``scale * carry`` = dL/du (no such term unless ``with_carry``, as in the eager loop)."""
    m = v_min if hv < v_min else hv
    d = abs(m - v_th)
    if alpha is not None:  # None: width 1, no divisions (compiled out)
        d = d / alpha
    sp = ONE - d
    sp = ZERO if sp < ZERO else sp
    if alpha is not None:
        sp = sp / alpha
    if hard:
        coef = ONE if m < v_th else ZERO
        if not detach:
            coef = coef - m * sp
    elif detach:
        coef = ONE
    else:
        coef = sp * -v_th + ONE
    dm = sp * g
    if with_carry:
        dm = dm + scale * coef * carry
    if clip:
        dm = dm * (ONE if hv >= v_min else ZERO)
    return dm


@numba.njit(**_JIT)
def _backward_kernel(
    h, grad, grad_v, has_grad_v, dx, decay, v_th, v_min, alpha, hard, detach, clip, lo, hi
):  # pragma: no cover - numba
    """dL/dx of elements [lo, hi) at steps T-1..0 (the carry dL/du[t] is dx[t + 1] times decay).
    Each case has a loop of its own with plain slices: a view picked by a condition inside the
    loop nest keeps LLVM from vectorising it."""
    last = h.shape[0] - 1
    for t in range(last, -1, -1):
        ht = h[t][lo:hi]
        gt = grad[t][lo:hi]
        out = dx[t][lo:hi]
        if t < last:
            carry = dx[t + 1][lo:hi]
            for i in range(hi - lo):
                out[i] = _grad_step(ht[i], gt[i], carry[i], decay, v_th, v_min, alpha, hard, detach, clip, True)
        elif has_grad_v:
            carry = grad_v[lo:hi]
            for i in range(hi - lo):
                out[i] = _grad_step(ht[i], gt[i], carry[i], ONE, v_th, v_min, alpha, hard, detach, clip, True)
        else:
            for i in range(hi - lo):
                out[i] = _grad_step(ht[i], gt[i], ZERO, ZERO, v_th, v_min, alpha, hard, detach, clip, False)


@numba.njit(inline="always")
def _neuron_span(xt, ht, u, lo, hi, first, decay, v_th, v_min, hard):  # pragma: no cover - numba
    """One step of elements [lo, hi) whose spikes no window pools (kept: their membranes)."""
    xs = xt[lo:hi]
    hs = ht[lo:hi]
    us = u[lo:hi]
    if first:
        for i in range(hi - lo):
            hv = xs[i] + ZERO
            hs[i] = hv
            _, us[i] = _fire(hv, v_th, v_min, hard)
    else:
        for i in range(hi - lo):
            hv = us[i] * decay + xs[i]
            hs[i] = hv
            _, us[i] = _fire(hv, v_th, v_min, hard)


@numba.njit(**_JIT)
def _pooled_forward_kernel(
    x, pooled, h, u, decay, v_th, v_min, hard, k, divisor, height, width, channels, lo, hi
):  # pragma: no cover - numba
    """Pooled rows [lo, hi) (row = (b, y'), channels_last) at every step: the neuron on the
    k input rows of each, their spikes summed per window and divided by ``divisor``. The rows
    and columns below and right of the last window (floor mode) get the neuron only; the last
    pooled row of each sample takes the rows below it."""
    keep = h.shape[0] > 1
    out_h, out_w = height // k, width // k
    prow_size = out_w * channels
    covered = out_w * k * channels  # elements of an input row inside a window
    row = width * channels
    for t in range(x.shape[0]):
        xt = x[t]
        ht = h[t if keep else 0]
        pt = pooled[t]
        for r in range(lo, hi):
            b, y_out = r // out_h, r % out_h
            prow = pt[r * prow_size : (r + 1) * prow_size]
            prow[:] = ZERO
            rows_here = k if y_out < out_h - 1 else height - y_out * k
            for dy in range(rows_here):
                base = (b * height + y_out * k + dy) * row
                if dy >= k:
                    _neuron_span(xt, ht, u, base, base + row, t == 0, decay, v_th, v_min, hard)
                    continue
                for xx in range(out_w * k):
                    i0 = base + xx * channels
                    xs = xt[i0 : i0 + channels]
                    hs = ht[i0 : i0 + channels]
                    us = u[i0 : i0 + channels]
                    ps = prow[(xx // k) * channels : (xx // k + 1) * channels]
                    if t == 0:  # one loop per case: a second pass over hs would not vectorise
                        for c in range(channels):
                            hv = xs[c] + ZERO
                            hs[c] = hv
                            s, us[c] = _fire(hv, v_th, v_min, hard)
                            ps[c] += s
                    else:
                        for c in range(channels):
                            hv = us[c] * decay + xs[c]
                            hs[c] = hv
                            s, us[c] = _fire(hv, v_th, v_min, hard)
                            ps[c] += s
                _neuron_span(xt, ht, u, base + covered, base + row, t == 0, decay, v_th, v_min, hard)
            for j in range(prow_size):
                prow[j] = prow[j] / divisor


@numba.njit(inline="always")
def _unpooled_grad_span(
    ht, carry, out, lo, hi, scale, v_th, v_min, alpha, hard, detach, clip, with_carry
):  # pragma: no cover - numba
    """dL/dx of elements [lo, hi) in no window: dL/ds = 0 there."""
    hs = ht[lo:hi]
    cs = carry[lo:hi]
    os_ = out[lo:hi]
    for i in range(hi - lo):
        os_[i] = _grad_step(hs[i], ZERO, cs[i], scale, v_th, v_min, alpha, hard, detach, clip, with_carry)


@numba.njit(inline="always")
def _pooled_grad_step(ht, gt, carry, out, scale, with_carry, alpha, neuron, pool, lo, hi):  # pragma: no cover - numba
    """dL/dx of input rows [lo, hi) at one step (``carry`` read only ``with_carry``);
    neuron = (v_th, v_min, hard, detach, clip), pool = (k, divisor, height, width, channels).
    alpha stays an argument of its own: numba compiles its None case out only for arguments."""
    v_th, v_min, hard, detach, clip = neuron
    k, divisor, height, width, channels = pool
    out_h, out_w = height // k, width // k
    covered = out_w * k * channels
    row = width * channels
    for r in range(lo, hi):
        base = r * row
        if r % height >= out_h * k:
            _unpooled_grad_span(
                ht, carry, out, base, base + row, scale, v_th, v_min, alpha, hard, detach, clip, with_carry
            )
            continue
        g_base = ((r // height) * out_h + (r % height) // k) * out_w * channels
        for xx in range(out_w * k):
            i0 = base + xx * channels
            g0 = g_base + (xx // k) * channels
            hs = ht[i0 : i0 + channels]
            os_ = out[i0 : i0 + channels]
            cs = carry[i0 : i0 + channels]
            gs = gt[g0 : g0 + channels]
            for c in range(channels):
                os_[c] = _grad_step(
                    hs[c], gs[c] / divisor, cs[c], scale, v_th, v_min, alpha, hard, detach, clip, with_carry
                )
        _unpooled_grad_span(
            ht, carry, out, base + covered, base + row, scale, v_th, v_min, alpha, hard, detach, clip, with_carry
        )


@numba.njit(**_JIT)
def _pooled_backward_kernel(
    h, grad, dx, decay, v_th, v_min, alpha, hard, detach, clip, k, divisor, height, width, channels, lo, hi
):  # pragma: no cover - numba
    """dL/dx of input rows [lo, hi) (row = (b, y), channels_last) at steps T-1..0: dL/ds =
    grad / divisor at every position of a window (as the eager loop divides), 0 outside them.
    The last step (no carry) is its own call of the step with a constant flag: a view picked by
    a condition inside the loop nest keeps LLVM from vectorising it."""
    neuron = (v_th, v_min, hard, detach, clip)
    pool = (k, divisor, height, width, channels)
    last = h.shape[0] - 1
    _pooled_grad_step(h[last], grad[last], dx[last], dx[last], ZERO, False, alpha, neuron, pool, lo, hi)
    for t in range(last - 1, -1, -1):
        _pooled_grad_step(h[t], grad[t], dx[t + 1], dx[t], decay, True, alpha, neuron, pool, lo, hi)


# ----------------------------------------------------------------------- the kernel pairs
def forward(x: torch.Tensor, p: NeuronParams, keep_membrane: bool):
    """:class:`~flexsnn.neurons.kernels.Kernels` forward: ``(spikes, v_last, h or None)``."""
    step = x[0]
    spikes = STEP_BUFFERS.empty_like(x)
    h_all = STEP_BUFFERS.empty_like(x) if keep_membrane else STEP_BUFFERS.empty_like(x[:1])
    u = STEP_BUFFERS.empty_like(step)
    decay, v_th, v_min, _ = _scalars(p)
    n = step.numel()
    u_flat = u.detach().as_strided((n,), (1,)).numpy()
    _run(
        _forward_kernel,
        _parts(n, 1, ALIGN),
        _flat(x),
        _flat(spikes),
        _flat(h_all),
        u_flat,
        decay,
        v_th,
        v_min,
        p.reset == "hard",
    )
    return spikes, u, (h_all if keep_membrane else None)


def backward(h: torch.Tensor, grad_spikes, grad_v, p: NeuronParams) -> torch.Tensor:
    """:class:`~flexsnn.neurons.kernels.Kernels` backward: dL/dx ``[T, ...]`` laid out as ``h``.
    A gradient in another layout (or a per-step function) goes to the eager loop."""
    if grad_spikes is None or callable(grad_spikes) or not _same_layout(grad_spikes, h):
        return backward_loop(h, grad_spikes, grad_v, p)  # no spike gradient (v_last only): rare
    step = h[0]
    if grad_v is not None and not _same_layout(grad_v, step):
        grad_v = STEP_BUFFERS.empty_like(step).copy_(grad_v)
    dx = STEP_BUFFERS.empty_like(h)
    _, v_th, v_min, alpha = _scalars(p)
    n = step.numel()
    h_flat = _flat(h)
    _run(
        _backward_kernel,
        _parts(n, 1, ALIGN),
        h_flat,
        _flat(grad_spikes),
        h_flat[0] if grad_v is None else grad_v.detach().as_strided((n,), (1,)).numpy(),
        grad_v is not None,
        _flat(dx),
        np.float32(p.decay),
        v_th,
        v_min,
        alpha,
        p.reset == "hard",
        p.detach_reset,
        p.v_min is not None,
    )
    return dx


CPU_KERNELS = Kernels(forward, backward)


def _channels_last_steps(grad: torch.Tensor) -> torch.Tensor:
    """``grad`` ``[T, B, C, H, W]`` as time-outermost channels_last steps (a copy if it is not)."""
    if grad.stride(0) == grad[0].numel() and memory_format_of(grad[0]) is torch.channels_last and _dense_steps(grad):
        return grad
    layout = torch.empty(grad.shape[1:], device="meta", memory_format=torch.channels_last)
    return steps_like(layout, grad.shape[0], grad.device).copy_(grad)


def _geometry(x: torch.Tensor, k: int) -> tuple[int, int, int, int]:
    """(pooled rows, height, width, channels) of a channels_last ``[T, B, C, H, W]``."""
    _, b, c, height, width = x.shape
    return b * (height // k), height, width, c


def pooled_forward(x: torch.Tensor, p: NeuronParams, keep_membrane: bool, k: int, divisor: float):
    """The neuron on channels_last ``x`` ``[T, B, C, H, W]`` then k x k average pooling that
    tiles the map: ``(pooled [T, B, C, H/k, W/k], v_last, h or None)``."""
    rows, height, width, channels = _geometry(x, k)
    step = x[0]
    layout = torch.empty(
        (x.shape[1], channels, height // k, width // k), device="meta", memory_format=torch.channels_last
    )
    pooled = steps_like(layout, x.shape[0], x.device)
    h_all = STEP_BUFFERS.empty_like(x) if keep_membrane else STEP_BUFFERS.empty_like(x[:1])
    u = STEP_BUFFERS.empty_like(step)
    decay, v_th, v_min, _ = _scalars(p)
    u_flat = u.detach().as_strided((step.numel(),), (1,)).numpy()
    _run(
        _pooled_forward_kernel,
        _parts(rows, k * width * channels, 1),
        _flat(x),
        _flat(pooled),
        _flat(h_all),
        u_flat,
        decay,
        v_th,
        v_min,
        p.reset == "hard",
        k,
        np.float32(divisor),
        height,
        width,
        channels,
    )
    return pooled, u, (h_all if keep_membrane else None)


def pooled_backward(h: torch.Tensor, grad: torch.Tensor, p: NeuronParams, k: int, divisor: float) -> torch.Tensor:
    """dL/dx ``[T, B, C, H, W]`` of :func:`pooled_forward` from the pooled spikes' gradient."""
    _, height, width, channels = _geometry(h, k)
    rows = h.shape[1] * height
    dx = STEP_BUFFERS.empty_like(h)
    _, v_th, v_min, alpha = _scalars(p)
    _run(
        _pooled_backward_kernel,
        _parts(rows, width * channels, 1),
        _flat(h),
        _flat(_channels_last_steps(grad)),
        _flat(dx),
        np.float32(p.decay),
        v_th,
        v_min,
        alpha,
        p.reset == "hard",
        p.detach_reset,
        p.v_min is not None,
        k,
        np.float32(divisor),
        height,
        width,
        channels,
    )
    return dx
