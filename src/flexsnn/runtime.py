"""Process settings that decide CPU speed more than any kernel: allocator and memory format.

Time-first execution runs every convolution, pooling and BatchNorm once on the flattened
``[T*B, ...]`` tensor, so a step handles a few tensors of tens of MiB instead of many small
ones. Two settings then matter (measured on the 2-core project machine, benchmarks/README.md):

- **Allocator.** glibc malloc serves blocks above its mmap threshold (128 KiB, rising
  with use to at most 32 MiB) with a fresh ``mmap`` that is page-faulted in on first touch
  and unmapped on ``free``. Every large temporary is therefore faulted in again on every
  step: here about 0.6 ms per MiB, more than the arithmetic on it. :func:`tune_cpu_allocator`
  makes glibc serve large blocks from its heap and keep freed memory for reuse
  (``mallopt(M_MMAP_MAX, 0)``, ``mallopt(M_TRIM_THRESHOLD, 2 GiB)``): in a training loop
  the pages are then faulted in once, not on every step (measured: 0 faults on most steps;
  now and then one block is placed fresh, a glibc fragmentation effect). The cost: memory freed by the process returns to the OS only when more
  than 2 GiB sits free at the top of the heap, so the resident size stays at its peak. It is
  process-wide (every library in the process gets it), which is why the CLI calls it and
  the library never does so on its own. Same effect as starting Python with
  ``MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=2147483647``.
- **Memory format.** oneDNN convolutions on CPU (and cuDNN with AMP on GPU) run faster on
  channels_last tensors. :func:`use_channels_last` re-lays out the weights of a model's 2-D
  convolutions; activations follow the weights' layout through conv, pooling, BN
  and the neurons (which preserve their input's strides). Values are unchanged;
  convolution results may differ in the last bits (another summation order).

Without the tuned allocator the largest per-step tensors are still faulted in only once:
the neurons take their ``[T, ...]`` buffers (spikes, saved membranes, input gradients) from
:data:`STEP_BUFFERS`, a :class:`BufferPool` that hands a buffer out again only once nothing
refers to its memory any more (so a result a caller or autograd still holds is never
overwritten).
"""

from __future__ import annotations

import ctypes
import os
import platform
import threading

import torch
from torch import nn

# mallopt parameter numbers (glibc malloc.h)
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
TRIM_THRESHOLD = 2**31 - 1  # mallopt takes a C int
ENV_OPT_OUT = "FLEXSNN_CPU_ALLOCATOR"  # "default" keeps glibc's own settings

_state = {"tuned": False}


def is_glibc() -> bool:
    return platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"


def tune_cpu_allocator() -> bool:
    """Keep large blocks on glibc's heap and freed memory for reuse (module docstring).

    Returns True when the settings are in effect (now or from an earlier call), False on a
    non-glibc platform or when ``FLEXSNN_CPU_ALLOCATOR=default`` opts out.
    """
    if _state["tuned"]:
        return True
    if os.environ.get(ENV_OPT_OUT, "").lower() == "default" or not is_glibc():
        return False
    libc = ctypes.CDLL("libc.so.6")
    ok = libc.mallopt(M_MMAP_MAX, 0) == 1 and libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
    _state["tuned"] = bool(ok)
    return _state["tuned"]


def allocator_tuned() -> bool:
    """Whether :func:`tune_cpu_allocator` changed glibc's settings in this process."""
    return _state["tuned"]


def use_channels_last(model: nn.Module) -> nn.Module:
    """Re-lay out the weights of every ``nn.Conv2d`` as channels_last (in place); returns ``model``.

    Parameter objects stay the same (an optimizer built before keeps working); checkpoints
    are written contiguous anyway. A model without 2-D convolutions is untouched.
    """
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Conv2d) and m.weight.dim() == 4:
                m.weight.data = m.weight.data.contiguous(memory_format=torch.channels_last)
    return model


# ---- buffers reused across training steps -----------------------------------------------
def _storage_refs(storage: torch.UntypedStorage) -> int:
    return torch._C._storage_Use_Count(storage._cdata)


class BufferPool:
    """Large CPU buffers handed out again once nothing refers to their memory any more.

    :meth:`empty_like` is ``torch.empty_like`` (same shape, dtype, device and strides; the
    values are garbage) for tensors of at least ``min_bytes`` on CPU; smaller or non-CPU
    requests go to torch unchanged. A pooled buffer is a flat block; a request gets a view of
    the smallest free block that is large enough (a shorter T reuses the block of a longer
    one), else a new block. A block counts as free when no tensor, view, autograd node or
    ``.grad`` refers to its storage (the storage's reference count is back to what the pool
    holds), so two steps never share a result while the first is still alive. Free blocks
    beyond ``max_blocks`` are dropped, least recently used first. Thread-safe.
    """

    def __init__(self, min_bytes: int = 1 << 20, max_blocks: int = 32):
        self.min_bytes = min_bytes
        self.max_blocks = max_blocks
        self._blocks: list[list] = []  # [flat tensor, its storage, refs when free, last use]
        self._clock = 0
        self._lock = threading.Lock()
        self.enabled = True

    def empty_like(self, x: torch.Tensor) -> torch.Tensor:
        """An uninitialised tensor like ``x`` (``torch.empty_like`` semantics), pooled when large."""
        numel = x.numel()
        if not self.enabled or x.device.type != "cpu" or numel * x.element_size() < self.min_bytes:
            return torch.empty_like(x)
        stride = torch.empty_like(x, device="meta").stride()  # the layout empty_like gives
        with self._lock:
            block = self._take(numel, x.dtype)
            return block.as_strided(x.shape, stride, 0)

    def _take(self, numel: int, dtype: torch.dtype) -> torch.Tensor:
        self._clock += 1
        best = None
        inference = torch.is_inference_mode_enabled()  # inference tensors cannot enter autograd
        for entry in self._blocks:
            flat, storage, free_refs, _ = entry
            if (
                flat.dtype == dtype
                and flat.numel() >= numel
                and flat.is_inference() == inference
                and _storage_refs(storage) == free_refs
            ):
                if best is None or flat.numel() < best[0].numel():
                    best = entry
        if best is None:
            flat = torch.empty(numel, dtype=dtype)
            storage = flat.untyped_storage()
            best = [flat, storage, _storage_refs(storage), self._clock]
            self._evict()
            self._blocks.append(best)
        best[3] = self._clock
        return best[0]

    def _evict(self) -> None:
        free = [e for e in self._blocks if _storage_refs(e[1]) == e[2]]
        excess = len(self._blocks) + 1 - self.max_blocks
        for entry in sorted(free, key=lambda e: e[3])[: max(excess, 0)]:
            self._blocks.remove(entry)

    def pooled_bytes(self) -> int:
        """Bytes held by the pool (free and handed-out blocks)."""
        with self._lock:
            return sum(e[0].numel() * e[0].element_size() for e in self._blocks)

    def clear(self) -> None:
        """Drop every block (handed-out ones stay valid: their holders keep the memory alive)."""
        with self._lock:
            self._blocks.clear()


#: The pool the neurons' multi-step kernels draw their ``[T, ...]`` buffers from.
#: ``STEP_BUFFERS.enabled = False`` turns it off; ``STEP_BUFFERS.clear()`` frees its memory.
STEP_BUFFERS = BufferPool()
