"""Worker threads for numba kernels that release the GIL: one pool per thread count.

The neurons' CPU kernels and the event-driven simulator split their work into parts and run
them on this thread and pool workers at once. The pools start on first use and stay idle
between calls, so a hand-off costs tens of microseconds, not a thread start.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")

_pools: dict[int, ThreadPoolExecutor] = {}
_pools_lock = threading.Lock()


def _forget_pools() -> None:
    """In a forked child the parent's workers do not exist: start new pools there."""
    global _pools_lock
    _pools.clear()
    _pools_lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pools)


def pool(threads: int) -> ThreadPoolExecutor:
    """A worker pool per thread count, started once per process (threads idle between calls)."""
    with _pools_lock:
        workers = _pools.get(threads)
        if workers is None:
            workers = _pools[threads] = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="flexsnn-worker")
        return workers


def run_parts(fn: Callable[[int], T], parts: int) -> list[T]:
    """``[fn(0), ..., fn(parts - 1)]`` run at once: part 0 on this thread, the others on pool
    workers; returns when every part has finished and raises what one raised."""
    if parts == 1:
        return [fn(0)]
    futures = [pool(parts - 1).submit(fn, part) for part in range(1, parts)]
    try:
        first = fn(0)
    finally:
        rest = [future.result() for future in futures]  # every part has finished before anything is read
    return [first, *rest]
