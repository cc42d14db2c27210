"""What the event-driven simulator's innermost loop costs on its own, per synaptic operation.

A conv delivery adds one weight block (float32, one tap of one input channel, all output
channels) into one output position's run of float64 membranes, clamps at ``v_min`` and counts
the neurons at threshold. This probe runs that loop alone over random positions and weight
blocks, three ways (the kernel's loop; without the count; add only), with the membranes small
enough for L1 (16 KiB) or as large as a wide layer's (1 MiB), the cases taking turns within
one process (best of --repeats). The threshold is out of reach, so nothing fires: only the
loop is timed. It says how much of the kernel's time any change around the loop could win.

    python benchmarks/probe_inner_loop.py
"""

from __future__ import annotations

import argparse
import time

import numba
import numpy as np

_JIT = {"nogil": True, "error_model": "numpy"}  # the simulator kernel's settings, minus the disk cache


@numba.njit(**_JIT)
def kernel_loop(u, w, pos, wpos, oc, v_th, v_min):
    """The simulator's loop: add, clamp at v_min, store, count at threshold."""
    total = 0
    for i in range(pos.size):
        ub = np.uint64(pos[i])
        wb = np.uint64(wpos[i])
        at_th = 0
        for k in range(np.uint64(0), np.uint64(oc)):
            v = u[ub + k] + w[wb + k]
            v = v_min if v < v_min else v
            u[ub + k] = v
            at_th += v >= v_th
        total += at_th
    return total


@numba.njit(**_JIT)
def without_count(u, w, pos, wpos, oc, v_th, v_min):
    for i in range(pos.size):
        ub = np.uint64(pos[i])
        wb = np.uint64(wpos[i])
        for k in range(np.uint64(0), np.uint64(oc)):
            v = u[ub + k] + w[wb + k]
            u[ub + k] = v_min if v < v_min else v
    return 0


@numba.njit(**_JIT)
def add_only(u, w, pos, wpos, oc, v_th, v_min):
    for i in range(pos.size):
        ub = np.uint64(pos[i])
        wb = np.uint64(wpos[i])
        for k in range(np.uint64(0), np.uint64(oc)):
            u[ub + k] += w[wb + k]
    return 0


LOOPS = {"kernel loop": kernel_loop, "without count": without_count, "add only": add_only}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=8, help="best of this many rounds")
    parser.add_argument("--positions", type=int, default=20000, help="deliveries per timed call")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    weight_bytes = 16 * 1024  # weights in L1 as well: the membranes are the variable here
    cases = {}
    for oc in (128, 256, 512):
        for membrane_kib in (16, 1024):
            n_runs = max(1, membrane_kib * 1024 // (8 * oc))
            n_blocks = max(1, weight_bytes // (4 * oc))
            u = np.zeros(n_runs * oc)
            w = (rng.standard_normal(n_blocks * oc) * 1e-3).astype(np.float32)
            pos = rng.integers(0, n_runs, args.positions).astype(np.int64) * oc
            wpos = rng.integers(0, n_blocks, args.positions).astype(np.int64) * oc
            cases[(oc, membrane_kib)] = (u, w, pos, wpos, oc, 1e9, -1.0)
    for loop in LOOPS.values():  # compile outside the timing
        for case in cases.values():
            loop(*case)
    best = {(name, key): float("inf") for name in LOOPS for key in cases}
    for _ in range(args.repeats):
        for name, loop in LOOPS.items():
            for key, case in cases.items():
                t0 = time.perf_counter()
                loop(*case)
                best[name, key] = min(best[name, key], time.perf_counter() - t0)
    print(f"ns per synaptic operation, best of {args.repeats} rounds of {args.positions} deliveries")
    print(f"  {'channels':>8s} {'membranes':>10s} " + " ".join(f"{name:>14s}" for name in LOOPS))
    for oc, membrane_kib in cases:
        row = [best[name, (oc, membrane_kib)] / (args.positions * oc) * 1e9 for name in LOOPS]
        print(f"  {oc:8d} {membrane_kib:7d} KiB " + " ".join(f"{ns:14.3f}" for ns in row))


if __name__ == "__main__":
    main()
