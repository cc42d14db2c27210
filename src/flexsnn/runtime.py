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
the neurons, time-first pooling and time-first convolutions (outputs and input gradients)
take their ``[T, ...]`` buffers from
:data:`flexsnn.buffers.STEP_BUFFERS`, which hands a buffer out again only once nothing refers
to its memory any more.
"""

from __future__ import annotations

import ctypes
import os
import platform

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
