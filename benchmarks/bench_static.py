"""The paper's time-stepped workload: ResNet-19 on static 32x32 images, direct encoding.

Training step (forward + backward + SGD) at batch 32, T = 2, 4, 6: flexsnn
(``build_model("resnet19", width=W)``, channels_last as ``fit`` lays it out, the default fused
neurons, the step ``fit`` runs: ``flexsnn.train.train_step``, which computes the stem before
the first neuron once on ``[B, ...]``) against a plain eager PyTorch per-step loop of the same layers and, where they are
installed (.venv-bench), snnTorch, SpikingJelly and Norse built from the same layers in their
own idiom (snnTorch / Norse: per-step loop, BN over each step's [B]; SpikingJelly:
multi-step layers, BN over [T*B]). Steps are interleaved library by library in one process
(median of --repeats after --warmup), so load from other processes hits all alike.

The width is reduced to fit a 2-core CPU: ``--width 0.25`` (default) gives stem 32, blocks
[3, 3, 2] x [32, 64, 128] channels (789,162 parameters instead of 12,569,226).

Also the MTT/SDT epoch ratio on this net: ``--epoch-batches`` synthetic batches, one epoch
of ``train_step`` with ``SDTSampler(T_max)`` and one with ``MTTSampler(1, T_max, sample_num=3)``
(T_max = 6), next to the FLOP floor (the stage-step ratio of the configurations MTT sampled:
sum of all stages' T over the configs, over SDT's stages x T_max).

    .venv-bench/bin/python benchmarks/bench_static.py [--steps 2 4 6] [--repeats 5] [--width 0.25]
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
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

LIBS = ("plain_pytorch", "flexsnn_fused", "snntorch", "spikingjelly", "norse")
PEERS = ("snntorch", "spikingjelly", "norse")
IMAGE = (3, 32, 32)
NUM_CLASSES = 10
#: ResNet-19 as flexsnn.models.resnet19 builds it: (planes, blocks, stride) after a stem.
LAYOUT = ((128, 3, 1), (256, 3, 2), (512, 2, 2))
STEM = 128


def scaled(c: int, width: float) -> int:
    return max(1, int(round(c * width)))


# ---------------------------------------------------------------- one ResNet-19 for the peers
class PerStepNeuron(nn.Module):
    """Plain PyTorch LIF for one step: u = 0.5 u + x, spike at u >= 1, hard reset (state kept)."""

    def __init__(self) -> None:
        super().__init__()
        self.u = None

    def reset(self) -> None:
        self.u = None

    def forward(self, x):
        u = x if self.u is None else 0.5 * self.u + x
        s = common._Spike.apply(u)
        self.u = u * (1.0 - s)
        return s


class SnnTorchNeuron(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        import snntorch as snn

        self.cell = snn.Leaky(beta=0.5, threshold=1.0, reset_mechanism="zero")
        self.mem = None

    def reset(self) -> None:
        self.mem = self.cell.init_leaky()

    def forward(self, x):
        s, self.mem = self.cell(x, self.mem)
        return s


class NorseNeuron(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        import norse.torch as norse

        # v += dt * tau_mem_inv * (x - v): dt * tau_mem_inv = 0.5 gives v = 0.5 v + 0.5 x.
        p = norse.LIFBoxParameters(tau_mem_inv=torch.as_tensor(500.0), v_th=torch.as_tensor(0.5))
        self.cell = norse.LIFBoxCell(p)
        self.state = None

    def reset(self) -> None:
        self.state = None

    def forward(self, x):
        z, self.state = self.cell(x, self.state)
        return z


class Block(nn.Module):
    def __init__(self, c_in, c_out, stride, conv, bn, neuron) -> None:
        super().__init__()
        self.conv1, self.bn1, self.n1 = conv(c_in, c_out, 3, stride, 1), bn(c_out), neuron()
        self.conv2, self.bn2 = conv(c_out, c_out, 3, 1, 1), bn(c_out)
        self.short = (
            nn.Sequential(conv(c_in, c_out, 1, stride, 0), bn(c_out)) if stride != 1 or c_in != c_out else nn.Identity()
        )
        self.n2 = neuron()

    def forward(self, x):
        h = self.bn2(self.conv2(self.n1(self.bn1(self.conv1(x)))))
        return self.n2(h + self.short(x))


class ResNet19(nn.Module):
    """The same layers as flexsnn's resnet19; ``forward`` takes one step ([B, ...]) or, with
    multi-step layers (SpikingJelly), all steps ([T, B, ...])."""

    def __init__(self, width, conv, bn, neuron, pool, flatten, linear) -> None:
        super().__init__()
        c = scaled(STEM, width)
        layers = [conv(3, c, 3, 1, 1), bn(c), neuron()]
        for planes, count, stride in LAYOUT:
            for k in range(count):
                layers.append(Block(c, scaled(planes, width), stride if k == 0 else 1, conv, bn, neuron))
                c = scaled(planes, width)
        self.features = nn.Sequential(*layers, pool(), flatten())
        self.fc = linear(c, NUM_CLASSES)

    def forward(self, x):
        return self.fc(self.features(x))


def _torch_layers():
    return (
        lambda i, o, k, s, p: nn.Conv2d(i, o, k, s, p, bias=False),
        nn.BatchNorm2d,
        lambda: nn.AdaptiveAvgPool2d(1),
        nn.Flatten,
        nn.Linear,
    )


def _per_step(width, neuron):
    conv, bn, pool, flatten, linear = _torch_layers()
    net = ResNet19(width, conv, bn, neuron, pool, flatten, linear)
    neurons = [m for m in net.modules() if isinstance(m, (PerStepNeuron, SnnTorchNeuron, NorseNeuron))]

    def forward(x, steps):
        for n in neurons:
            n.reset()
        return torch.stack([net(x) for _ in range(steps)])  # direct encoding: x at every step

    return net, forward


def build_spikingjelly(width):
    from spikingjelly.activation_based import functional, layer, neuron

    net = ResNet19(
        width,
        lambda i, o, k, s, p: layer.Conv2d(i, o, k, s, p, bias=False, step_mode="m"),
        lambda c: layer.BatchNorm2d(c, step_mode="m"),
        lambda: neuron.LIFNode(tau=2.0, decay_input=False, v_threshold=1.0, v_reset=0.0, step_mode="m"),
        lambda: layer.AdaptiveAvgPool2d(1, step_mode="m"),
        lambda: layer.Flatten(step_mode="m"),
        lambda i, o: layer.Linear(i, o, step_mode="m"),
    )

    def forward(x, steps):
        functional.reset_net(net)
        return net(x.unsqueeze(0).repeat(steps, 1, 1, 1, 1))

    return net, forward


def build_flexsnn(width):
    from flexsnn.models import build_model
    from flexsnn.runtime import use_channels_last

    net = use_channels_last(build_model("resnet19", width=width, num_classes=NUM_CLASSES))

    def forward(x, steps):
        return net(x, time_config=(steps,) * net.num_stages)

    return net, forward


BUILDERS = {
    "plain_pytorch": lambda w: _per_step(w, PerStepNeuron),
    "flexsnn_fused": build_flexsnn,
    "snntorch": lambda w: _per_step(w, SnnTorchNeuron),
    "spikingjelly": build_spikingjelly,
    "norse": lambda w: _per_step(w, NorseNeuron),
}


def make_step(name: str, width: float):
    torch.manual_seed(0)
    module, forward = BUILDERS[name](width)
    module.train()
    opt = torch.optim.SGD(module.parameters(), lr=0.01, momentum=0.9)
    if name == "flexsnn_fused":
        from flexsnn.train import train_step

        # the step fit runs (the stem before the first neuron computed once on [B, ...])
        def flexsnn_step(x, y, steps):
            return train_step(module, x, y, [(steps,) * module.num_stages], opt)

        return flexsnn_step, sum(p.numel() for p in module.parameters())

    def step(x, y, steps):
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(forward(x, steps).mean(0), y)
        loss.backward()
        opt.step()
        return float(loss.detach())

    return step, sum(p.numel() for p in module.parameters())


def synthetic_images(batch: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, *IMAGE, generator=g), torch.randint(0, NUM_CLASSES, (batch,), generator=g)


def time_training(names, steps_list, width, batch, warmup, repeats) -> tuple[dict, dict, dict]:
    fns, skipped, params = {}, {}, {}
    for n in names:
        try:
            fns[n], params[n] = make_step(n, width)
        except Exception as exc:  # a peer that is not installed is skipped
            skipped[n] = f"{type(exc).__name__}: {exc}"
    x, y = synthetic_images(batch)
    by_t = {}
    for steps in steps_list:
        samples = {n: [] for n in fns}
        for i in range(warmup + repeats):
            for n, fn in fns.items():
                t0 = common.now()
                fn(x, y, steps)
                if i >= warmup:
                    samples[n].append(time.perf_counter() - t0)
        times = {n: common.median_ms(s) for n, s in samples.items()}
        present = [p for p in PEERS if p in times]
        fastest = min(present, key=times.get) if present else None
        ref = fastest or "plain_pytorch"
        by_t[str(steps)] = {
            "step_ms": times,
            "fastest_peer": fastest,
            "reference": ref,
            "speedup_vs_reference": {n: times[ref] / t for n, t in times.items()},
            "speedup_vs_plain": {n: times["plain_pytorch"] / t for n, t in times.items()}
            if "plain_pytorch" in times
            else {},
        }
    return by_t, skipped, params


def mtt_epoch(width: float, batch: int, t_max: int, batches: int, rounds: int) -> dict:
    """One "epoch" of ``batches`` synthetic static batches, SDT vs MTT, alternated ``rounds`` times."""
    from flexsnn.models import build_model
    from flexsnn.runtime import use_channels_last
    from flexsnn.train import MTTSampler, SDTSampler, train_step

    data = [synthetic_images(batch, seed=i) for i in range(batches)]
    samplers = {"sdt": SDTSampler(t_max), "mtt": MTTSampler(1, t_max, sample_num=3)}
    times = {"sdt": [], "mtt": []}
    sampled = []
    for r in range(rounds):
        for method, sampler in samplers.items():
            torch.manual_seed(0)
            model = use_channels_last(build_model("resnet19", width=width, num_classes=NUM_CLASSES))
            model.train()
            opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
            rng = random.Random(r)
            configs = [sampler.sample(rng, model.num_stages) for _ in data]
            t0 = time.perf_counter()
            for (x, y), cfgs in zip(data, configs):
                train_step(model, x, y, cfgs, opt)
            times[method].append(time.perf_counter() - t0)
            if method == "mtt":
                sampled.extend(configs)
    epoch = {m: statistics.median(t) for m, t in times.items()}
    return {
        "t_max": t_max,
        "batch": batch,
        "batches": batches,
        "rounds": rounds,
        "epoch_s": epoch,
        "all_epoch_s": times,
        "mtt_over_sdt": epoch["mtt"] / epoch["sdt"],
        "flop_floor": common.stage_step_floor(sampled, model.num_stages, t_max),
        "shared_stage_steps": common.shared_stage_step_ratio(sampled, model.num_stages, t_max),
    }


def run(
    steps_list, width=0.25, batch=32, warmup=1, repeats=5, libs=LIBS, epoch_batches=4, epoch_rounds=2, t_max=6
) -> dict:
    by_t, skipped, params = time_training(libs, steps_list, width, batch, warmup, repeats)
    result = {
        "header": common.machine_header(),
        "peers": common.peer_versions(),
        "skipped": skipped,
        "width": width,
        "parameters": params,
        "batch": batch,
        "repeats": repeats,
        "warmup": warmup,
        "by_T": by_t,
    }
    if epoch_batches:
        result["mtt_epoch"] = mtt_epoch(width, batch, t_max, epoch_batches, epoch_rounds)
    result["load_avg_at_end"] = os.getloadavg()
    return result


def format_table(result: dict) -> str:
    p = result["parameters"].get("flexsnn_fused", 0)
    lines = [
        f"ResNet-19 (width {result['width']}, {p} parameters), static 3x32x32, direct encoding, "
        f"batch {result['batch']}, training step (forward + backward + SGD)"
    ]
    if result["skipped"]:
        lines.append(f"  skipped: {sorted(result['skipped'])}")
    for steps, row in result["by_T"].items():
        ref = row["reference"]
        lines.append(f"T={steps}  (speedup = {ref} time / time; vs plain = plain_pytorch time / time)")
        lines.append(f"  {'library':16s} {'step ms':>9s} {'speedup':>8s} {'vs plain':>9s}")
        for n, ms in sorted(row["step_ms"].items(), key=lambda kv: kv[1]):
            lines.append(
                f"  {n:16s} {ms:9.1f} {row['speedup_vs_reference'][n]:7.2f}x"
                f" {row['speedup_vs_plain'].get(n, float('nan')):8.2f}x"
            )
    e = result.get("mtt_epoch")
    if e:
        lines.append(
            f"MTT vs SDT epoch ({e['batches']} synthetic batches of {e['batch']}, T_max={e['t_max']}, "
            f"MTTSampler(1, {e['t_max']}, sample_num=3)): SDT {e['epoch_s']['sdt']:.2f} s  "
            f"MTT {e['epoch_s']['mtt']:.2f} s  MTT/SDT {e['mtt_over_sdt']:.2f}x  "
            f"FLOP floor (stage-step ratio) {e['flop_floor']:.2f}x  "
            f"measured/floor {e['mtt_over_sdt'] / e['flop_floor']:.2f}  "
            f"(stage-steps run after sharing: {e['shared_stage_steps']:.2f}x)"
        )
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, nargs="+", default=[2, 4, 6])
    ap.add_argument("--width", type=float, default=0.25)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--libs", nargs="+", default=list(LIBS), choices=list(LIBS))
    ap.add_argument("--epoch-batches", type=int, default=4, help="batches per MTT/SDT epoch (0: skip)")
    ap.add_argument("--epoch-rounds", type=int, default=2)
    ap.add_argument("--t-max", type=int, default=6)
    ap.add_argument("--json")
    common.add_allocator_arg(ap)
    args = ap.parse_args(argv)
    common.set_allocator(args.allocator)
    result = run(
        args.steps,
        args.width,
        args.batch,
        args.warmup,
        args.repeats,
        tuple(args.libs),
        args.epoch_batches,
        args.epoch_rounds,
        args.t_max,
    )
    print(format_table(result))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
