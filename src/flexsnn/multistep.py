"""Time-first execution: which layers see ``[T, B, ...]`` and which see ``[T*B, ...]``.

Every tensor flowing between flexsnn layers is time-first, ``[T, B, ...]`` (the layout of
SpikingJelly's multi-step mode and Norse). Layers with state over time (spiking neurons) and
layers that change T (TTMs) subclass :class:`MultiStepModule` and receive the time-first
tensor as it is. Every other layer (conv, BatchNorm, pooling, linear, flatten, dropout) is
stateless in time and runs once on the flattened ``[T*B, ...]`` view, which is both correct
and the fastest way to run it.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

from flexsnn.buffers import STEP_BUFFERS
from flexsnn.errors import InputError


class MultiStepModule(nn.Module):
    """Marker base class: ``forward`` takes and returns time-first ``[T, B, ...]`` tensors."""


def is_multistep(module: nn.Module) -> bool:
    return isinstance(module, MultiStepModule)


def apply_flat(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Run a time-stateless ``module`` on ``x`` ``[T, B, ...]`` via the ``[T*B, ...]`` view.

    On CPU an ``nn.AvgPool2d`` (in training) and an ``nn.Conv2d`` with a large output run
    :class:`PooledAvgPool2d` / :func:`pooled_conv2d`: the same values, their large outputs and
    input gradients in :data:`flexsnn.buffers.STEP_BUFFERS`.
    """
    t, b = x.shape[0], x.shape[1]
    flat = x.reshape(t * b, *x.shape[2:])
    y = None
    if type(module) is nn.AvgPool2d:
        y = _pooled_avg_pool(module, flat)
    elif type(module) is nn.Conv2d:
        y = pooled_conv2d(module, flat)
    if y is None:
        y = module(flat)
    return y.reshape(t, b, *y.shape[1:])


class PooledAvgPool2d(torch.autograd.Function):
    """``F.avg_pool2d`` whose output and input gradient are :data:`STEP_BUFFERS` buffers.

    A time-first step's pooling input (the spikes ``[T*B, C, H, W]``) is tens of MiB; its
    gradient would be a fresh block, faulted in on every step with glibc's default malloc.
    ``apply(x, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override)``.
    """

    @staticmethod
    def forward(ctx, x, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override):  # noqa: D102
        args = (kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override)
        like = F.avg_pool2d(x.to("meta"), *args)  # shape and layout of the result
        out = STEP_BUFFERS.empty_strided(like.shape, like.stride(), x.dtype)
        torch.ops.aten.avg_pool2d.out(x, *args, out=out)
        ctx.save_for_backward(x)
        ctx.args = args
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):  # noqa: D102
        (x,) = ctx.saved_tensors
        grad_input = avg_pool2d_backward_into(grad, x, ctx.args, STEP_BUFFERS.empty_like(x))
        return grad_input, None, None, None, None, None, None


def avg_pool2d_backward_into(
    grad: torch.Tensor, x: torch.Tensor, args: tuple, grad_input: torch.Tensor
) -> torch.Tensor:
    """``avg_pool2d``'s input gradient (``args`` as avg_pool2d takes them after the input) into
    ``grad_input``. A gradient arriving through a flatten is NCHW while ``x`` is channels_last:
    the kernel's mixed-layout path is ~10x slower than converting the (smaller) gradient first."""
    grad = grad.contiguous(memory_format=memory_format_of(x))
    return torch.ops.aten.avg_pool2d_backward.grad_input(grad, x, *args, grad_input=grad_input)


def _plain_call_only(module: nn.Module, x: torch.Tensor) -> bool:
    """True where a pooled replacement must not stand in for ``module(x)``: not CPU, not 4-D,
    under torch.compile (which plans its own buffers), or with hooks that expect the module call."""
    return bool(
        x.device.type != "cpu"
        or x.dim() != 4
        or torch.compiler.is_compiling()
        or module._forward_hooks
        or module._forward_pre_hooks
        or nn.modules.module._global_forward_hooks
        or nn.modules.module._global_forward_pre_hooks
    )


def _pooled_avg_pool(module: nn.AvgPool2d, x: torch.Tensor) -> torch.Tensor | None:
    """:class:`PooledAvgPool2d` where it applies (CPU, a gradient to compute, 4-D, no hooks
    and not under torch.compile), else None."""
    if _plain_call_only(module, x) or not (torch.is_grad_enabled() and x.requires_grad):
        return None
    return PooledAvgPool2d.apply(x, *_avg_pool_args(module))


def _avg_pool_args(pool: nn.AvgPool2d) -> tuple:
    """What ``F.avg_pool2d`` takes after the input: kernel_size, stride (the kernel when None),
    padding, ceil_mode, count_include_pad, divisor_override."""
    stride = pool.stride if pool.stride is not None else pool.kernel_size
    return (pool.kernel_size, stride, pool.padding, pool.ceil_mode, pool.count_include_pad, pool.divisor_override)


#: A pooled convolution runs on batch chunks whose output is about this size: small enough
#: for glibc's heap to keep serving without faults (its mmap threshold adapts up to 32 MiB,
#: but it trims the heap's top above twice that threshold; 8 MiB chunks still faulted now
#: and then), large enough for oneDNN to run at full speed.
CONV_CHUNK_BYTES = 2 << 20


def _batch_chunks(n: int, bytes_per_sample: int) -> list[tuple[int, int]]:
    rows = max(1, CONV_CHUNK_BYTES // max(1, bytes_per_sample))
    return [(i, min(n, i + rows)) for i in range(0, n, rows)]


def _conv_output_bytes(x: torch.Tensor, weight: torch.Tensor, args) -> int:
    """Bytes of ``conv2d(x, weight)`` (zero padding, int pairs), by the output-size formula."""
    stride, padding, dilation, _ = args
    numel = x.shape[0] * weight.shape[0]
    for k in (0, 1):
        span = dilation[k] * (weight.shape[2 + k] - 1) + 1
        numel *= max(0, (x.shape[2 + k] + 2 * padding[k] - span) // stride[k] + 1)
    return numel * x.element_size()


def _chunked_into(n: int, bytes_per_sample: int, compute, out: torch.Tensor | None = None) -> torch.Tensor:
    """``out[i:j] = compute(i, j)`` over batch chunks: every temporary stays heap-sized.

    Without ``out`` the pooled block is allocated on the first chunk, in that chunk's memory
    format (oneDNN picks channels_last when the input or the weight is).
    """
    for i, j in _batch_chunks(n, bytes_per_sample):
        part = compute(i, j)
        if out is None:
            shape = (n, *part.shape[1:])
            stride_of = torch.empty(shape, device="meta", memory_format=memory_format_of(part)).stride()
            out = STEP_BUFFERS.empty_strided(shape, stride_of, part.dtype)
        out[i:j].copy_(part)
    if out is None:  # pooled_conv2d never passes an empty batch
        raise ValueError("_chunked_into needs at least one sample")
    return out


def _pooled_conv_forward(x: torch.Tensor, weight, bias, args, out_bytes: int) -> torch.Tensor:
    """``conv(x)`` (``out_bytes`` in all) computed chunk by chunk into a pooled block."""
    stride, padding, dilation, groups = args
    n = x.shape[0]
    return _chunked_into(
        n, out_bytes // n, lambda i, j: F.conv2d(x[i:j], weight, bias, stride, padding, dilation, groups)
    )


def memory_format_of(t: torch.Tensor) -> torch.memory_format:
    """channels_last for a 4-D tensor laid out so (and not also contiguous), else contiguous."""
    if t.is_contiguous(memory_format=torch.channels_last) and not t.is_contiguous():
        return torch.channels_last
    return torch.contiguous_format


def steps_like(step: torch.Tensor, steps: int, device: torch.device) -> torch.Tensor:
    """An uninitialised ``[steps, *step.shape]`` tensor on ``device``, time outermost, whose
    every step is laid out as ``step`` (channels_last or contiguous); a :data:`STEP_BUFFERS`
    buffer on CPU."""
    shape = (steps, *step.shape)
    if step.dim() == 4 and memory_format_of(step) is torch.channels_last:
        t, b, c, h, w = shape
        stride = torch.empty((t, b, h, w, c), device="meta").permute(0, 1, 4, 2, 3).stride()
    else:
        stride = torch.empty(shape, device="meta").stride()
    if device.type == "cpu":
        return STEP_BUFFERS.empty_strided(shape, stride, step.dtype)
    return torch.empty_strided(shape, stride, dtype=step.dtype, device=device)


def in_weight_layout(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``x`` converted once to channels_last when the weight is and ``x`` is not (an NCHW
    network input into a channels_last first conv): oneDNN would convert every batch chunk,
    and the whole batch again for the weight gradient (the same values either way)."""
    if (
        x.dim() == 4
        and x.shape[1] > 1
        and memory_format_of(weight) is torch.channels_last
        and memory_format_of(x) is not torch.channels_last
    ):
        stride = torch.empty(x.shape, device="meta", memory_format=torch.channels_last).stride()
        return STEP_BUFFERS.empty_strided(x.shape, stride, x.dtype).copy_(x)
    return x


class PooledConv2d(torch.autograd.Function):
    """``F.conv2d`` (zero padding) whose output and input gradient are :data:`STEP_BUFFERS` buffers.

    The output of a time-first convolution (``[T*B, C, H, W]``, 47 MiB for 32 channels of
    34x34 at T=10, batch 32) is above glibc's largest mmap threshold, so torch's own
    allocation of it is a fresh ``mmap`` faulted in on every step (about 15 ms of a 3 ms conv
    on 2 cores). Here the convolution runs on batch chunks and each chunk is copied into a
    pooled block; the input gradient likewise. The weight gradient comes from one
    ``convolution_backward`` over the whole batch, as in ``nn.Conv2d``; the bias gradient is
    the gradient summed over batch and positions (torch's summation: equal to the module's
    within float rounding, several times faster than the reduction inside
    ``convolution_backward``). Every sample's output and input gradient are computed exactly
    as unchunked (samples are independent).
    ``apply(x, weight, bias, stride, padding, dilation, groups, out_bytes)`` (``out_bytes``:
    the size of the whole output, which the caller has already worked out).
    """

    @staticmethod
    def forward(ctx, x, weight, bias, stride, padding, dilation, groups, out_bytes):  # noqa: D102
        args = (stride, padding, dilation, groups)
        x = in_weight_layout(x, weight)
        out = _pooled_conv_forward(x, weight, bias, args, out_bytes)
        ctx.save_for_backward(x, weight)
        ctx.args = args
        ctx.has_bias = bias is not None
        ctx.out_format = memory_format_of(out)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):  # noqa: D102
        x, weight = ctx.saved_tensors
        grad = grad.contiguous(memory_format=ctx.out_format)
        stride, padding, dilation, groups = ctx.args
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        conv_args = (stride, padding, dilation, False, [0, 0], groups)
        grad_x = grad_w = grad_b = None
        if need_w:
            grad_w = torch.ops.aten.convolution_backward(grad, x, weight, None, *conv_args, (False, True, False))[1]
        if need_b and ctx.has_bias:
            # a plain sum over batch and positions: oneDNN's bias reduction inside
            # convolution_backward took 8.4 ms against 1.2 ms for [320, 32, 34, 34] channels_last
            grad_b = grad.sum((0, 2, 3))
        if need_x:
            grad_x = _chunked_into(
                x.shape[0],
                x[0].numel() * x.element_size(),
                lambda i, j: torch.ops.aten.convolution_backward(
                    grad[i:j], x[i:j], weight, None, *conv_args, (True, False, False)
                )[0],
                out=STEP_BUFFERS.empty_like(x),
            )
        return grad_x, grad_w, grad_b, None, None, None, None, None


def pooled_conv2d(module: nn.Conv2d, x: torch.Tensor) -> torch.Tensor | None:
    """``module(x)`` with a pooled output where that helps (CPU, zero padding, an output of
    more than one chunk, no hooks, not under torch.compile), else None.

    Without a gradient to compute (inference) only the chunked forward runs.
    """
    if (
        _plain_call_only(module, x)
        or module.padding_mode != "zeros"
        or isinstance(module.padding, str)
        or torch.is_autocast_enabled("cpu")  # autocast casts inside conv2d; the backward here would not
    ):
        return None
    m = module
    args = (m.stride, m.padding, m.dilation, m.groups)
    if x.shape[0] == 0 or x.dtype != m.weight.dtype:
        return None
    out_bytes = _conv_output_bytes(x, m.weight, args)
    if out_bytes <= CONV_CHUNK_BYTES:
        return None
    needs_grad = torch.is_grad_enabled() and (
        x.requires_grad or m.weight.requires_grad or (m.bias is not None and m.bias.requires_grad)
    )
    if needs_grad:
        return PooledConv2d.apply(x, m.weight, m.bias, *args, out_bytes)
    return _pooled_conv_forward(in_weight_layout(x, m.weight), m.weight, m.bias, args, out_bytes)


def run_time_first(layers, x: torch.Tensor) -> torch.Tensor:
    """Run a sequence of layers on ``x`` ``[T, B, ...]``, flattening time for stateless ones.

    A neuron followed by an ``nn.AvgPool2d`` runs as one pass where the neuron offers it
    (``forward_into_avg_pool``: flexsnn's LIF / IF layers on CPU), so the spikes between
    them are never stored whole.
    """
    layers = list(layers)
    i = 0
    while i < len(layers):
        layer = layers[i]
        if is_multistep(layer):
            y = _neuron_then_avg_pool(layer, layers[i + 1], x) if i + 1 < len(layers) else None
            if y is not None:
                x = y
                i += 2
                continue
            x = layer(x)
        else:
            x = apply_flat(layer, x)
        i += 1
    return x


def _neuron_then_avg_pool(neuron: nn.Module, pool: nn.Module, x: torch.Tensor) -> torch.Tensor | None:
    """``pool`` applied to ``neuron(x)`` in one pass, or None where that does not apply (a
    neuron without ``forward_into_avg_pool``, not a plain AvgPool2d, hooks, compiling)."""
    fused = getattr(neuron, "forward_into_avg_pool", None)
    if fused is None or type(pool) is not nn.AvgPool2d or x.dim() != 5 or _plain_call_only(pool, x[0]):
        return None
    return fused(x, _avg_pool_args(pool))


# ---- peer neurons: stateful modules that must not run on the [T*B, ...] view ----------------
# Recognised by duck typing (no peer imports): each kind's marks and the flexsnn.interop adapter.
PEER_NEURON_ADAPTERS = {
    "spikingjelly": "SpikingJellyNeuron",
    "snntorch": "SnnTorchNeuron",
    "sinabs": "SinabsNeuron",
}


def peer_neuron_kind(module: nn.Module) -> str | None:
    """``"spikingjelly"`` / ``"snntorch"`` / ``"sinabs"`` for a peer library's stateful neuron, else None.

    SpikingJelly nodes have ``step_mode``, ``v_threshold`` and ``reset()``; snnTorch neurons
    ``threshold``, ``reset_mechanism`` and ``reset_mem()``; Sinabs layers ``spike_threshold`` and
    ``reset_states()``. Such a module keeps its membrane in attributes between calls: run on
    the ``[T*B, ...]`` view it would integrate over the batch instead of time, and its state
    would leak from one forward into the next.
    """
    if isinstance(module, MultiStepModule):
        return None
    if hasattr(module, "step_mode") and hasattr(module, "v_threshold") and callable(getattr(module, "reset", None)):
        return "spikingjelly"
    if (
        hasattr(module, "reset_mechanism")
        and hasattr(module, "threshold")
        and callable(getattr(module, "reset_mem", None))
    ):
        return "snntorch"
    if hasattr(module, "spike_threshold") and callable(getattr(module, "reset_states", None)):
        return "sinabs"
    return None


def find_peer_neurons(module: nn.Module, prefix: str = "") -> list[tuple[str, str]]:
    """``[(name, kind), ...]`` of peer neurons in ``module`` that are not inside a multi-step module."""
    kind = peer_neuron_kind(module)
    if kind is not None:
        return [(prefix or type(module).__name__, kind)]
    if isinstance(module, MultiStepModule):
        return []  # an adapter (or any multi-step module) owns what it holds
    found = []
    for name, child in module.named_children():
        found += find_peer_neurons(child, f"{prefix}.{name}" if prefix else name)
    return found


def check_no_bare_peer_neurons(module: nn.Module, where: str) -> None:
    """Refuse a peer library's stateful neuron that would run on the ``[T*B, ...]`` view."""
    found = find_peer_neurons(module)
    if found:
        name, kind = found[0]
        adapter = PEER_NEURON_ADAPTERS[kind]
        raise InputError(
            f"{where}: {name} is a {kind} neuron; it keeps state between calls and would run on the [T*B, ...] view "
            f"(integrating over the batch, leaking state across forwards). Wrap it: flexsnn.interop.{adapter}(layer), "
            f"or build with flexsnn.interop.staged_from_layers(...) which wraps every peer neuron"
        )


class TimeFirstSequential(nn.Sequential):
    """An ``nn.Sequential`` that takes ``[T, B, ...]`` and may mix neurons with plain layers.

    Plain PyTorch layers are applied to the ``[T*B, ...]`` view, multi-step layers to the
    time-first tensor, so users build SNNs from ordinary layers without wrappers.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return run_time_first(self, x)


# ---- the [T, N] memory view of a time-first tensor ----------------------------------------
# Kernels that act along time only (TTMs, compiled neurons) see a [T, ...] tensor as [T, N].
# A channels_last activation [T, B, C, H, W] is not viewable as [T, B*C*H*W]: reshaping it
# copies it, and the next convolution copies the result back to channels_last. Time being the
# outermost dimension in memory is all these kernels need, so they flatten in memory order.
CHANNELS_LAST_ORDER = (0, 1, 3, 4, 2)  # [T, B, C, H, W] -> [T, B, H, W, C]


def time_major_order(x: torch.Tensor) -> tuple[int, ...]:
    """A permutation (time first) under which ``x`` is contiguous; the identity otherwise."""
    if x.dim() == 5 and not x.is_contiguous() and x.permute(CHANNELS_LAST_ORDER).is_contiguous():
        return CHANNELS_LAST_ORDER
    return tuple(range(x.dim()))


def to_time_major(x: torch.Tensor, order: tuple[int, ...]) -> torch.Tensor:
    """``x`` ``[T, ...]`` as ``[T, N]`` in ``order`` (a view when ``x`` is laid out that way)."""
    xp = x.permute(order)
    return xp.reshape(x.shape[0], math.prod(xp.shape[1:]))


def from_time_major(flat: torch.Tensor, shape, order: tuple[int, ...]) -> torch.Tensor:
    """Inverse of :func:`to_time_major`: ``[T', N]`` -> ``[T', *shape[1:]]`` with the layout of ``order``."""
    inner = [shape[k] for k in order[1:]]
    inverse = tuple(sorted(range(len(order)), key=order.__getitem__))
    return flat.reshape(flat.shape[0], *inner).permute(inverse)
