"""MTT epoch time vs SDT epoch time at equal T_max on the default data.

flexsnn.data.make_loaders("digits_dvs", T_max) + build_model("digits_conv"); one epoch of
train_step with SDTSampler(T_max) and one with MTTSampler(1, T_max, sample_num=3), same
batches, alternated --rounds times; the figure is the median epoch time of each. Neuron
path: "fused" (flexsnn's default eager BPTT) and "compiled" (flexsnn.neurons.compiled,
swapped in for this benchmark); for "compiled" the number of kernels compiled during each
MTT epoch is reported (the first epoch meets every T once; later epochs must compile 0). Next to the measured
ratio: the FLOP floor, the stage-step ratio of the configurations MTT sampled, the
stage-steps MTT runs once configs drawing the same leading T's share those stages, and the
steps the stages' conv / linear layers then run (a stage the TTM up-samples into runs its
leading conv / linear at the T before it and copies the outputs).

    .venv-bench/bin/python benchmarks/bench_mtt_epoch.py [--t-max 10] [--rounds 2] [--allocator tuned]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402


def use_neuron_path(model, path: str) -> None:
    """Point every flexsnn LIF/IF layer of ``model`` at the fused (default) or compiled backend."""
    from flexsnn.neurons import SpikingNeuron

    for module in model.modules():
        if isinstance(module, SpikingNeuron):
            module.backend = path


def epoch_seconds(model, loader, sampler, optimizer, seed: int, sampled: list | None = None) -> float:
    """One epoch of train_step; the configs drawn per iteration are appended to ``sampled``."""
    from flexsnn.train import model_input, train_step

    rng = random.Random(seed)
    model.train()
    t0 = time.perf_counter()
    for x, y in loader:
        configs = sampler.sample(rng, model.num_stages)
        if sampled is not None:
            sampled.append(configs)
        train_step(model, model_input(x, model), y, configs, optimizer)
    return time.perf_counter() - t0


def run(t_max: int, rounds: int, batch: int, paths=("fused", "compiled")) -> dict:
    from flexsnn.data import make_loaders
    from flexsnn.models import build_model
    from flexsnn.neurons import compiled
    from flexsnn.runtime import use_channels_last
    from flexsnn.train import MTTSampler, SDTSampler

    train_loader, _ = make_loaders("digits_dvs", n_time_bins=t_max, batch_size=batch, seed=0)
    samplers = {"sdt": SDTSampler(t_max), "mtt": MTTSampler(1, t_max, sample_num=3)}
    result = {
        "header": common.machine_header(),
        "t_max": t_max,
        "batch": batch,
        "rounds": rounds,
        "batches_per_epoch": len(train_loader),
        "by_path": {},
    }
    for path in paths:
        times = {"sdt": [], "mtt": []}
        compiles = []
        sampled: list = []
        num_stages = 1
        for r in range(rounds):
            for method, sampler in samplers.items():
                torch.manual_seed(0)
                model = use_channels_last(build_model("digits_conv"))  # as fit() lays it out
                use_neuron_path(model, path)
                opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
                before = compiled.compile_count()
                num_stages = model.num_stages
                times[method].append(
                    epoch_seconds(
                        model, train_loader, sampler, opt, seed=r, sampled=sampled if method == "mtt" else None
                    )
                )
                if method == "mtt" and path == "compiled":
                    compiles.append(compiled.compile_count() - before)
        # The first round of the compiled path includes compilation: report it apart.
        steady = {m: (t[1:] if path == "compiled" and len(t) > 1 else t) for m, t in times.items()}
        row = {"epoch_s": {m: statistics.median(t) for m, t in steady.items()}, "all_epoch_s": times}
        row["mtt_over_sdt"] = row["epoch_s"]["mtt"] / row["epoch_s"]["sdt"]
        row["flop_floor"] = common.stage_step_floor(sampled, num_stages, t_max)
        row["shared_stage_steps"] = common.shared_stage_step_ratio(sampled, num_stages, t_max)
        row["weighted_layer_steps"] = common.weighted_layer_step_ratio(sampled, num_stages, t_max)
        if path == "compiled":
            row["kernels_compiled_per_mtt_epoch"] = compiles
        result["by_path"][path] = row
    return result


def format_table(result: dict) -> str:
    lines = [
        f"MTT vs SDT epoch, digits_dvs + digits_conv, T_max={result['t_max']}, batch {result['batch']}, "
        f"{result['batches_per_epoch']} batches/epoch"
    ]
    for path, row in result["by_path"].items():
        e = row["epoch_s"]
        extra = (
            f"  kernels compiled per MTT epoch: {row['kernels_compiled_per_mtt_epoch']}"
            if "kernels_compiled_per_mtt_epoch" in row
            else ""
        )
        lines.append(
            f"  {path:9s} SDT {e['sdt']:7.2f} s  MTT {e['mtt']:7.2f} s  MTT/SDT {row['mtt_over_sdt']:.2f}x"
            f"  FLOP floor (stage-step ratio) {row['flop_floor']:.2f}x  "
            f"measured/floor {row['mtt_over_sdt'] / row['flop_floor']:.2f}"
            f"  (stage-steps run after sharing: {row['shared_stage_steps']:.2f}x; conv/linear steps, an up-sampled"
            f" stage's at the T before it: {row['weighted_layer_steps']:.2f}x){extra}"
        )
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--t-max", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--paths", nargs="+", default=["fused", "compiled"], choices=["fused", "compiled"])
    ap.add_argument("--json")
    common.add_allocator_arg(ap)
    args = ap.parse_args(argv)
    common.set_allocator(args.allocator)
    result = run(args.t_max, args.rounds, args.batch, tuple(args.paths))
    print(format_table(result))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
