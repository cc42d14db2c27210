"""Large CPU buffers reused across training steps, never while anything still refers to them.

With glibc's default malloc every block above its mmap threshold (at most 32 MiB) is a fresh
``mmap``, page-faulted in on first touch and unmapped on ``free``: a time-first training step
handles several ``[T*B, ...]`` tensors of that size (47 MiB each for a 32-channel 34x34 conv
output at T=10, batch 32) and would fault them all in again on every step. The neurons,
time-first pooling and time-first convolutions take such buffers from :data:`STEP_BUFFERS` instead, so the pages are
faulted in once, whatever the process's allocator settings
(:func:`flexsnn.runtime.tune_cpu_allocator` is still there for torch's own temporaries).
"""

from __future__ import annotations

import threading

import torch


def _storage_refs(storage: torch.UntypedStorage) -> int:
    return torch._C._storage_Use_Count(storage._cdata)


def _nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


class BufferPool:
    """Large CPU buffers handed out again once nothing refers to their memory any more.

    :meth:`empty_like` is ``torch.empty_like`` (same shape, dtype, device and strides; the
    values are garbage) for tensors of at least ``min_bytes`` on CPU; smaller or non-CPU
    requests go to torch unchanged. A pooled buffer is a flat block; a request gets a view of
    the smallest free block that is large enough (a shorter T reuses the block of a longer
    one), else a new block. A block counts as free when no tensor, view, autograd node or
    ``.grad`` refers to its storage (the storage's reference count is back to what the pool
    holds), so two steps never share a result while the first is still alive. Free blocks
    are dropped, least recently used first, when a new block would make more than
    ``max_blocks`` blocks or more than ``max_free_bytes`` of free blocks (so memory a caller
    let go of is not kept for ever). Thread-safe.
    """

    def __init__(self, min_bytes: int = 1 << 20, max_blocks: int = 32, max_free_bytes: int = 1 << 30):
        self.min_bytes = min_bytes
        self.max_blocks = max_blocks
        self.max_free_bytes = max_free_bytes
        self._blocks: list[list] = []  # [flat tensor, its storage, refs when free, last use]
        self._clock = 0
        self._lock = threading.Lock()
        self.enabled = True

    def empty_like(self, x: torch.Tensor) -> torch.Tensor:
        """An uninitialised tensor like ``x`` (``torch.empty_like`` semantics), pooled when large."""
        if not self._pooled(x.numel() * x.element_size(), x.device):
            return torch.empty_like(x)
        stride = torch.empty_like(x, device="meta").stride()  # the layout empty_like gives
        return self.empty_strided(x.shape, stride, x.dtype)

    def empty_strided(self, shape, stride, dtype: torch.dtype) -> torch.Tensor:
        """An uninitialised CPU tensor of ``shape`` and dense ``stride`` (a permutation of a
        contiguous layout, e.g. channels_last), pooled when large."""
        numel = 1
        for n in shape:
            numel *= n
        if not self._pooled(numel * dtype.itemsize, torch.device("cpu")):
            return torch.empty_strided(shape, stride, dtype=dtype)
        with self._lock:
            return self._take(numel, dtype).as_strided(shape, stride, 0)

    def _pooled(self, nbytes: int, device: torch.device) -> bool:
        return self.enabled and device.type == "cpu" and nbytes >= self.min_bytes

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
        free = sorted((e for e in self._blocks if _storage_refs(e[1]) == e[2]), key=lambda e: e[3])
        free_bytes = sum(_nbytes(e[0]) for e in free)
        dropped: set[int] = set()
        for entry in free:  # least recently used first
            if len(self._blocks) - len(dropped) + 1 <= self.max_blocks and free_bytes <= self.max_free_bytes:
                break
            dropped.add(id(entry))
            free_bytes -= _nbytes(entry[0])
        if dropped:  # by identity: list.remove would compare the blocks' tensors element-wise
            self._blocks = [e for e in self._blocks if id(e) not in dropped]

    def pooled_bytes(self) -> int:
        """Bytes held by the pool (free and handed-out blocks)."""
        with self._lock:
            return sum(_nbytes(e[0]) for e in self._blocks)

    def clear(self) -> None:
        """Drop every block (handed-out ones stay valid: their holders keep the memory alive)."""
        with self._lock:
            self._blocks.clear()


#: The pool the neurons' multi-step kernels draw their ``[T, ...]`` buffers from.
#: ``STEP_BUFFERS.enabled = False`` turns it off; ``STEP_BUFFERS.clear()`` frees its memory.
STEP_BUFFERS = BufferPool()
