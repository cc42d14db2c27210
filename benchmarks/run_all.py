"""Run every flexsnn benchmark in one go; write benchmarks/results/*.json and FIGURES.md.

    bash benchmarks/setup_env.sh            # once: .venv-bench with the peers
    .venv-bench/bin/python benchmarks/run_all.py [--quick] [--allocator tuned|default]

The peers are optional: a library that is not installed is listed as skipped. The
event-driven simulator's throughput comes from bench_simulator.py (written separately) when
it exists. FIGURES.md (FIGURES_default_allocator.md with ``--allocator default``, likewise the
JSON files) is the text to copy into benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import bench_inference  # noqa: E402
import bench_mtt_epoch  # noqa: E402
import bench_static  # noqa: E402
import bench_training  # noqa: E402
import common  # noqa: E402


def targets(training: dict, inference: dict, mtt: dict, static: dict | None = None) -> list[str]:
    """The speed targets, as measured ratios (never asserted: a benchmark reports)."""
    out = []
    row = training["by_T"].get("10")
    if row and row["fastest_peer"]:
        peer = row["fastest_peer"]
        best = max(common.FLEXSNN, key=lambda n: row["speedup_vs_fastest_peer"].get(n, 0))
        sp = row["speedup_vs_fastest_peer"][best]
        mem = row.get("peak_step_mib", {})
        mem_ratio = mem.get(best, float("nan")) / mem[peer] if mem.get(peer) else float("nan")
        out.append(
            f"training T=10: {best} is {sp:.2f}x the fastest peer ({peer}); target >= 1.5x "
            f"[{'met' if sp >= 1.5 else 'MISSED'}]; peak memory {mem_ratio:.2f}x the peer's "
            f"[{'met' if mem_ratio <= 1.0 else 'MISSED'}]"
        )
    # the default training path (fused neurons) against the plain loop and the fastest peer, every T
    mode = training.get("header", {}).get("allocator_env", {}).get("mode", "?")
    for steps, r in training["by_T"].items():
        times, peer = r["step_ms"], r["fastest_peer"]
        if "flexsnn_fused" not in times or "plain_pytorch" not in times or not peer:
            continue
        vs_plain = times["plain_pytorch"] / times["flexsnn_fused"]
        vs_peer = r["speedup_vs_fastest_peer"]["flexsnn_fused"]
        out.append(
            f"training T={steps} ({mode} allocator): flexsnn_fused {vs_plain:.2f}x the plain loop (target >= 1.7x "
            f"[{'met' if vs_plain >= 1.7 else 'MISSED'}]), {vs_peer:.2f}x the fastest peer {peer} "
            f"(target >= 1.5x [{'met' if vs_peer >= 1.5 else 'MISSED'}])"
        )
    worst = {}
    for _steps, r in inference["by_T"].items():
        for n in ("flexsnn_eager", "flexsnn_runner"):
            if n in r["ms"] and r["fastest_eager_peer"]:
                worst[n] = min(worst.get(n, float("inf")), r["speedup_vs_fastest_peer"][n])
    for n, sp in worst.items():
        out.append(
            f"inference: {n} worst-case speedup over T vs the fastest eager peer {sp:.2f}x; target >= 3x "
            f"[{'met' if sp >= 3 else 'MISSED'}]"
        )
    for path, r in mtt["by_path"].items():
        ratio = r["mtt_over_sdt"]
        out.append(
            f"MTT/SDT epoch ({path} neurons): {ratio:.2f}x; target <= 1.6x [{'met' if ratio <= 1.6 else 'MISSED'}]"
        )
        if "flop_floor" in r:
            rel = ratio / r["flop_floor"]
            out.append(
                f"MTT/SDT epoch ({path} neurons) over its FLOP floor {r['flop_floor']:.2f}x: {rel:.2f}; "
                f"target <= 1.10 [{'met' if rel <= 1.10 else 'MISSED'}]"
            )
    e = (static or {}).get("mtt_epoch")
    if e:
        rel = e["mtt_over_sdt"] / e["flop_floor"]
        out.append(
            f"static ResNet-19 MTT/SDT epoch {e['mtt_over_sdt']:.2f}x over its FLOP floor {e['flop_floor']:.2f}x: "
            f"{rel:.2f}; target <= 1.10 [{'met' if rel <= 1.10 else 'MISSED'}]"
        )
    return out


def simulator_figures() -> str:
    script = HERE / "bench_simulator.py"
    if not script.exists():
        return "event-driven simulator: bench_simulator.py not present yet"
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=1800)
    return proc.stdout.strip() if proc.returncode == 0 else f"bench_simulator.py failed: {proc.stderr.strip()[-500:]}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer repeats and T values (a smoke run)")
    ap.add_argument(
        "--short",
        action="store_true",
        help="every benchmark and training T, fewer repeats and inference T values (for a loaded machine)",
    )
    ap.add_argument("--out", default=str(HERE / "results"))
    common.add_allocator_arg(ap)
    args = ap.parse_args(argv)
    common.set_allocator(args.allocator)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    if args.quick:
        training = bench_training.run([4, 10], repeats=3, warmup=1, memory=True)
        inference = bench_inference.run([1, 4, 8], repeats=3, warmup=1)
        mtt = bench_mtt_epoch.run(t_max=10, rounds=2, batch=64)
        static = bench_static.run([2, 4], width=0.125, repeats=2, warmup=1, epoch_batches=1, epoch_rounds=1)
    elif args.short:
        training = bench_training.run([4, 10, 16], repeats=5, warmup=2, memory=True)
        inference = bench_inference.run([1, 2, 4, 8, 16], repeats=3, warmup=1)
        mtt = bench_mtt_epoch.run(t_max=10, rounds=2, batch=64)
        static = bench_static.run([2, 4, 6], width=0.25, repeats=3, warmup=1, epoch_batches=4, epoch_rounds=2)
    else:
        training = bench_training.run([4, 10, 16], repeats=10, warmup=2, memory=True)
        inference = bench_inference.run(list(range(1, 17)), repeats=5, warmup=1)
        mtt = bench_mtt_epoch.run(t_max=10, rounds=3, batch=64)
        static = bench_static.run([2, 4, 6], width=0.25, repeats=5, warmup=1, epoch_batches=4, epoch_rounds=2)
    # the two allocator modes keep separate result files
    suffix = "" if args.allocator == "tuned" else f"_{args.allocator}_allocator"
    for name, res in (("training", training), ("inference", inference), ("mtt_epoch", mtt), ("static", static)):
        (out / f"{name}{suffix}.json").write_text(json.dumps(res, indent=1))
    header = common.machine_header()
    text = [
        f"Command: {sys.executable} benchmarks/run_all.py{' --quick' if args.quick else ''}"
        f"{' --short' if args.short else ''} --allocator {args.allocator}",
        f"Machine: {header['cpu']}, {header['cores']} cores, torch {header['torch']}, python {header['python']}",
        f"Allocator: {header['allocator']}; env {header['allocator_env']}",
        f"Load average at the end: {os.getloadavg()} (other processes share the cores)",
        f"Peers: {training['peers']}; skipped: {training['skipped'] or 'none'}",
        "",
        "Training step (forward + backward + SGD), batch 32:",
        bench_training.format_table(training),
        "",
        bench_inference.format_table(inference),
        "",
        bench_mtt_epoch.format_table(mtt),
        "",
        bench_static.format_table(static),
        "",
        simulator_figures(),
        "",
        "Targets:",
        *("  " + t for t in targets(training, inference, mtt, static)),
        "",
        f"Total wall time {time.time() - t0:.0f} s",
    ]
    (out / f"FIGURES{suffix}.md").write_text("```\n" + "\n".join(text) + "\n```\n")
    print("\n".join(text))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
