"""Training step time and peak memory: flexsnn vs plain PyTorch and the peer libraries.

One forward + backward + SGD step of the benchmark network (benchmarks/common.py) at
T = 4, 10, 16, batch 32. Timing: every library is built in THIS process and the steps are
interleaved (lib A, lib B, ..., then again), so load from other processes hits all alike;
the figure is the median of --repeats steps after --warmup steps.

Peak memory: a fresh subprocess per (library, T) runs --warmup steps, releases free heap
pages (gc + glibc malloc_trim(0)), resets the kernel's peak-RSS mark (/proc/self/clear_refs
"5"), records VmRSS, runs 3 steps and reports VmHWM - VmRSS: the extra resident memory the
steps needed. (tracemalloc does not see torch's allocations.)

    .venv-bench/bin/python benchmarks/bench_training.py [--steps 4 10 16] [--repeats 10] [--allocator tuned]

"plain_pytorch_cl" (the plain loop with channels_last conv weights) is a reference row that
shows how much of flexsnn's lead is the memory format; it is not a peer.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

LIBS = (
    "plain_pytorch",
    "plain_pytorch_cl",
    "flexsnn_fused",
    "flexsnn_compiled",
    "snntorch",
    "spikingjelly",
    "norse",
    "sinabs",
)


def make_step(name: str):
    torch.manual_seed(0)
    module, forward = common.BUILDERS[name]()
    opt = torch.optim.SGD(module.parameters(), lr=0.01, momentum=0.9)

    def step(x, y):
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(forward(x).mean(0), y)
        loss.backward()
        opt.step()
        return float(loss.detach())

    return step


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def peak_memory_child(name: str, steps: int, warmup: int) -> dict:
    step = make_step(name)
    x, y = common.synthetic_batch(steps)
    for _ in range(warmup):
        step(x, y)
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    base = _status_kib("VmRSS")
    for _ in range(3):
        step(x, y)
    return {"peak_step_mib": (_status_kib("VmHWM") - base) / 1024.0}


def time_interleaved(names, steps: int, warmup: int, repeats: int) -> dict:
    x, y = common.synthetic_batch(steps)
    fns = {n: make_step(n) for n in names}
    samples = {n: [] for n in names}
    for i in range(warmup + repeats):
        for n in names:
            t0 = common.now()
            fns[n](x, y)
            if i >= warmup:
                samples[n].append(time.perf_counter() - t0)
    return {n: common.median_ms(s) for n, s in samples.items()}


def ratios(times: dict, peers) -> tuple[str | None, dict]:
    present = [p for p in peers if p in times]
    if not present:
        return None, {}
    fastest = min(present, key=times.get)
    return fastest, {n: times[fastest] / t for n, t in times.items()}


def run(steps_list, repeats: int, warmup: int, memory: bool, libs=LIBS) -> dict:
    names, skipped = common.available(libs)
    result = {
        "header": common.machine_header(),
        "peers": common.peer_versions(),
        "skipped": skipped,
        "batch": common.BATCH,
        "repeats": repeats,
        "warmup": warmup,
        "by_T": {},
    }
    for steps in steps_list:
        times = time_interleaved(names, steps, warmup, repeats)
        fastest, speedup = ratios(times, common.PEERS)
        row = {"step_ms": times, "fastest_peer": fastest, "speedup_vs_fastest_peer": speedup}
        if memory:
            mem = {
                n: common.run_subprocess_json(
                    [__file__, "--child-memory", n, str(steps), str(warmup), "--allocator", common.allocator_mode()]
                )
                for n in names
            }
            row["peak_step_mib"] = {n: m.get("peak_step_mib", float("nan")) for n, m in mem.items()}
            errors = {n: m["error"] for n, m in mem.items() if "error" in m}
            if errors:
                row["memory_errors"] = errors
        result["by_T"][str(steps)] = row
    return result


def format_table(result: dict) -> str:
    lines = []
    for steps, row in result["by_T"].items():
        fastest = row["fastest_peer"]
        lines.append(f"T={steps}  (ratio = fastest peer time / time; fastest peer: {fastest})")
        lines.append(f"  {'library':18s} {'step ms':>9s} {'speedup':>8s} {'peak MiB':>9s} {'mem/peer':>9s}")
        mem = row.get("peak_step_mib", {})
        for n, ms in sorted(row["step_ms"].items(), key=lambda kv: kv[1]):
            m = mem.get(n, float("nan"))
            mr = m / mem[fastest] if fastest in mem and mem[fastest] else float("nan")
            lines.append(
                f"  {n:18s} {ms:9.1f} {row['speedup_vs_fastest_peer'].get(n, float('nan')):7.2f}x {m:9.1f} {mr:8.2f}x"
            )
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, nargs="+", default=[4, 10, 16])
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--no-memory", action="store_true")
    ap.add_argument("--libs", nargs="+", default=list(LIBS))
    ap.add_argument("--json", help="write the result here")
    ap.add_argument("--child-memory", nargs=3, help=argparse.SUPPRESS)
    common.add_allocator_arg(ap)
    args = ap.parse_args(argv)
    common.set_allocator(args.allocator)
    if args.child_memory:
        name, steps, warmup = args.child_memory
        print(json.dumps(peak_memory_child(name, int(steps), int(warmup))))
        return 0
    result = run(args.steps, args.repeats, args.warmup, not args.no_memory, args.libs)
    print(json.dumps({"header": result["header"], "peers": result["peers"], "skipped": result["skipped"]}, indent=1))
    print(format_table(result))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
