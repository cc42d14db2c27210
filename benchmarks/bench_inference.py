"""Inference time per batch at T = 1..16: flexsnn eager (no grad) and compiled vs the peers.

The benchmark network (benchmarks/common.py), batch 32, forward only under torch.no_grad().
flexsnn runs as a one-stage StagedNet: "flexsnn_eager" calls it directly (fused neuron
path, no autograd), "flexsnn_runner" goes through flexsnn.inference.InferenceRunner
(torch.compile, one compile per T and micro-batch shape, done in the warm-up and reported apart),
"flexsnn_runner_bf16" the same with ``amp="bf16"`` (an extra row: not float32). The peers run
their eager forward. Libraries are interleaved per repeat; the figure is the median.

    .venv-bench/bin/python benchmarks/bench_inference.py [--steps 1 2 4 8 16] [--repeats 5] [--allocator tuned]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

PEER_LIBS = ("plain_pytorch", "plain_pytorch_cl", "snntorch", "spikingjelly", "norse", "sinabs")


def flexsnn_staged():
    from torch import nn

    from flexsnn.neurons import LIF
    from flexsnn.runtime import use_channels_last
    from flexsnn.staged import staged_from_layers

    torch.manual_seed(0)
    layers = [
        nn.Conv2d(2, 32, 3, padding=1),
        LIF(),
        nn.AvgPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1),
        LIF(),
        nn.AvgPool2d(2),
        nn.Flatten(),
        nn.Linear(64 * 8 * 8, common.NUM_CLASSES),
    ]
    net = staged_from_layers(layers, [], input_kind="frames").eval()
    return use_channels_last(net)  # as InferenceRunner lays it out


def run(steps_list, repeats: int, warmup: int, compile_runner: bool = True) -> dict:
    from flexsnn.inference import InferenceRunner

    names, skipped = common.available(PEER_LIBS)
    fwd = {}
    for n in names:
        mod, f = common.BUILDERS[n]()
        mod.eval()
        fwd[n] = f
    net = flexsnn_staged()
    fwd["flexsnn_eager"] = lambda x: net(x, time_config=x.shape[0])
    runner = InferenceRunner(net, compile=compile_runner)
    runner_bf16 = InferenceRunner(net, compile=compile_runner, amp="bf16")  # extra row, not the fp32 target
    if runner.compile:
        fwd["flexsnn_runner"] = lambda x: runner(x, x.shape[0])
        fwd["flexsnn_runner_bf16"] = lambda x: runner_bf16(x, x.shape[0])
    result = {
        "header": common.machine_header(),
        "peers": common.peer_versions(),
        "skipped": skipped,
        "batch": common.BATCH,
        "repeats": repeats,
        "by_T": {},
        "compile_s": {},
    }
    for steps in steps_list:
        x, _ = common.synthetic_batch(steps)
        with torch.no_grad():
            for name in ("flexsnn_runner", "flexsnn_runner_bf16"):
                if name in fwd:
                    t0 = time.perf_counter()
                    fwd[name](x)
                    result["compile_s"].setdefault(name, {})[str(steps)] = time.perf_counter() - t0
            samples = {n: [] for n in fwd}
            for i in range(warmup + repeats):
                for n, f in fwd.items():
                    t0 = common.now()
                    f(x)
                    if i >= warmup:
                        samples[n].append(time.perf_counter() - t0)
        ms = {n: common.median_ms(s) for n, s in samples.items()}
        eager_peers = [p for p in common.PEERS if p in ms]
        fastest = min(eager_peers, key=ms.get) if eager_peers else None
        result["by_T"][str(steps)] = {
            "ms": ms,
            "fastest_eager_peer": fastest,
            "speedup_vs_fastest_peer": {n: ms[fastest] / t for n, t in ms.items()} if fastest else {},
        }
    result["runner"] = runner.stats()
    result["runner_bf16"] = runner_bf16.stats()
    return result


def format_table(result: dict) -> str:
    rows = result["by_T"]
    names = sorted(next(iter(rows.values()))["ms"])
    lines = [
        f"inference ms/batch (batch {result['batch']}); last columns: flexsnn speedup vs the fastest eager peer",
        "  T  " + " ".join(f"{n:>15s}" for n in names) + "   eager x  runner x  bf16 x",
    ]
    for steps, row in rows.items():
        sp = row["speedup_vs_fastest_peer"]
        lines.append(
            f"{int(steps):3d}  "
            + " ".join(f"{row['ms'][n]:15.1f}" for n in names)
            + f"  {sp.get('flexsnn_eager', float('nan')):7.2f}  {sp.get('flexsnn_runner', float('nan')):7.2f}"
            + f"  {sp.get('flexsnn_runner_bf16', float('nan')):6.2f}"
        )
    lines.append(
        f"runner: {result['runner']}; first-call compile seconds per T: "
        + ", ".join(f"{k}:{v:.1f}" for k, v in result["compile_s"].get("flexsnn_runner", {}).items())
    )
    lines.append(
        "flexsnn_runner_bf16: the same runner with amp='bf16' (convs / linear under CPU autocast, "
        "neurons in float32): not the fp32 comparison the target asks for"
    )
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, nargs="+", default=list(range(1, 17)))
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--no-compile", action="store_true")
    ap.add_argument("--json")
    common.add_allocator_arg(ap)
    args = ap.parse_args(argv)
    common.set_allocator(args.allocator)
    result = run(args.steps, args.repeats, args.warmup, not args.no_compile)
    print(format_table(result))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
