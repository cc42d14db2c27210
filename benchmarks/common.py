"""Shared pieces of the benchmarks: the benchmark network in every library, timing, memory.

The network: input frames ``[T, B, 2, 34, 34]``; conv 3x3 2->32 (pad 1) -> LIF ->
avg-pool 2 -> conv 3x3 32->64 (pad 1) -> LIF -> avg-pool 2 -> flatten -> linear 64*8*8 -> 10;
loss = cross-entropy of the time-averaged output. Avg-pool 2 after each LIF shrinks 34x34
before the linear layer. LIF: decay 0.5 (u = 0.5 u + x), threshold 1,
hard reset to 0, each library's own surrogate.

Every builder returns ``(module, forward)`` where ``forward(x [T, B, 2, 34, 34]) ->
[T, B, 10]``, so one timing loop serves all libraries.
"""

from __future__ import annotations

import gc
import importlib
import importlib.metadata
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

import torch
from torch import nn

NUM_CLASSES = 10
BATCH = 32
IN_SHAPE = (2, 34, 34)
PEERS = ("snntorch", "spikingjelly", "norse", "sinabs")


ALLOCATORS = ("default", "tuned")
TUNED_ENV = {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": "2147483647"}


def set_allocator(mode: str) -> None:
    """``"tuned"``: flexsnn.runtime.tune_cpu_allocator() for this whole process (every library in
    it alike) and the same settings as environment variables for child processes; ``"default"``:
    glibc's own settings."""
    if mode not in ALLOCATORS:
        raise SystemExit(f"--allocator must be one of {ALLOCATORS}, got {mode!r}")
    if mode == "tuned":
        from flexsnn.runtime import tune_cpu_allocator

        if not tune_cpu_allocator():
            raise SystemExit("--allocator tuned needs glibc (Linux)")
        os.environ.update(TUNED_ENV)


def allocator_mode() -> str:
    from flexsnn.runtime import allocator_tuned

    tuned = allocator_tuned() or all(os.environ.get(k) == v for k, v in TUNED_ENV.items())
    return "tuned" if tuned else "default"


def add_allocator_arg(ap) -> None:
    ap.add_argument(
        "--allocator",
        choices=ALLOCATORS,
        default="tuned",
        help="glibc malloc settings for the whole process, all libraries alike "
        "(tuned = flexsnn.runtime.tune_cpu_allocator; default = glibc's own)",
    )


def allocator_settings() -> dict:
    """The glibc malloc variables (they changed eager timings by up to 2x) and threads."""
    keys = (
        "MALLOC_MMAP_MAX_",
        "MALLOC_MMAP_THRESHOLD_",
        "MALLOC_TRIM_THRESHOLD_",
        "MALLOC_ARENA_MAX",
        "MALLOC_TOP_PAD_",
        "LD_PRELOAD",
        "OMP_NUM_THREADS",
    )
    env = {k: os.environ.get(k, "unset") for k in keys}
    env["mode"] = allocator_mode()
    env["torch_threads"] = torch.get_num_threads()
    return env


def machine_header() -> dict:
    return {
        "machine": platform.machine(),
        "cpu": _cpu_name(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "allocator": f"glibc malloc, {allocator_mode()} settings"
        + ("" if not os.environ.get("LD_PRELOAD") else " + LD_PRELOAD"),
        "allocator_env": allocator_settings(),
        "load_avg_at_start": os.getloadavg(),
    }


def _cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def peer_versions() -> dict:
    out = {}
    for name in PEERS:
        try:
            importlib.import_module(name)
            out[name] = importlib.metadata.version(name)
        except Exception as exc:  # a missing peer is skipped, not fatal
            out[name] = f"unavailable ({type(exc).__name__})"
    return out


def synthetic_batch(steps: int, batch: int = BATCH, seed: int = 0):
    """Sparse event-count frames ``[T, B, 2, 34, 34]`` (about 10 % nonzero) and labels."""
    g = torch.Generator().manual_seed(seed)
    x = (torch.rand(steps, batch, *IN_SHAPE, generator=g) < 0.1).float()
    y = torch.randint(0, NUM_CLASSES, (batch,), generator=g)
    return x, y


def _layers():
    return (
        nn.Conv2d(2, 32, 3, padding=1),
        nn.AvgPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1),
        nn.AvgPool2d(2),
        nn.Flatten(),
        nn.Linear(64 * 8 * 8, NUM_CLASSES),
    )


# ---------------------------------------------------------------- plain PyTorch (per-step loop)
class _Spike(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u):
        ctx.save_for_backward(u)
        return (u >= 1.0).to(u.dtype)

    @staticmethod
    def backward(ctx, g):
        (u,) = ctx.saved_tensors
        return g * (1.0 - (u - 1.0).abs()).clamp_min(0.0)


def build_plain():
    c1, p1, c2, p2, fl, fc = _layers()
    mod = nn.ModuleList([c1, c2, fc])

    def forward(x):
        u1 = u2 = None
        outs = []
        for t in range(x.shape[0]):
            h = c1(x[t])
            u1 = h if u1 is None else 0.5 * u1 + h
            s1 = _Spike.apply(u1)
            u1 = u1 * (1.0 - s1)
            h = c2(p1(s1))
            u2 = h if u2 is None else 0.5 * u2 + h
            s2 = _Spike.apply(u2)
            u2 = u2 * (1.0 - s2)
            outs.append(fc(fl(p2(s2))))
        return torch.stack(outs)

    return mod, forward


def build_plain_channels_last():
    """Reference row, not a peer: the plain loop with its conv weights in channels_last."""
    mod, forward = build_plain()
    mod.to(memory_format=torch.channels_last)
    return mod, forward


# ---------------------------------------------------------------- flexsnn
def build_flexsnn(path: str = "fused"):
    """flexsnn as a user writes it: its LIF layers in a TimeFirstSequential (time-first
    flattening for stateless layers; a neuron followed by AvgPool2d runs as one pass).

    ``path``: the LIF layers' backend, "reference" (per-step autograd), "fused" (hand-written
    BPTT, eager; the default) or "compiled" (fused BPTT with torch.compile'd kernels).
    Conv weights in channels_last, as ``fit`` and ``InferenceRunner`` lay them out
    (flexsnn.runtime.use_channels_last).
    """
    from flexsnn.multistep import TimeFirstSequential
    from flexsnn.neurons import LIF
    from flexsnn.runtime import use_channels_last

    def neuron():
        return LIF(v_th=1.0, decay=0.5, reset="hard", surrogate="triangle", backend=path)

    c1, p1, c2, p2, fl, fc = _layers()
    mod = use_channels_last(TimeFirstSequential(c1, neuron(), p1, c2, neuron(), p2, fl, fc))
    return mod, mod


# ---------------------------------------------------------------- snnTorch (per-step loop, its idiom)
def build_snntorch():
    import snntorch as snn

    c1, p1, c2, p2, fl, fc = _layers()
    l1 = snn.Leaky(beta=0.5, threshold=1.0, reset_mechanism="zero")
    l2 = snn.Leaky(beta=0.5, threshold=1.0, reset_mechanism="zero")
    mod = nn.ModuleList([c1, c2, fc, l1, l2])

    def forward(x):
        m1, m2 = l1.init_leaky(), l2.init_leaky()
        outs = []
        for t in range(x.shape[0]):
            s1, m1 = l1(c1(x[t]), m1)
            s2, m2 = l2(c2(p1(s1)), m2)
            outs.append(fc(fl(p2(s2))))
        return torch.stack(outs)

    return mod, forward


# ---------------------------------------------------------------- SpikingJelly (multi-step, torch backend)
def build_spikingjelly():
    from spikingjelly.activation_based import functional, layer, neuron

    def lif():
        return neuron.LIFNode(tau=2.0, decay_input=False, v_threshold=1.0, v_reset=0.0, step_mode="m")

    net = nn.Sequential(
        layer.Conv2d(2, 32, 3, padding=1, step_mode="m"),
        lif(),
        layer.AvgPool2d(2, step_mode="m"),
        layer.Conv2d(32, 64, 3, padding=1, step_mode="m"),
        lif(),
        layer.AvgPool2d(2, step_mode="m"),
        layer.Flatten(step_mode="m"),
        layer.Linear(64 * 8 * 8, NUM_CLASSES, step_mode="m"),
    )

    def forward(x):
        functional.reset_net(net)
        return net(x)

    return net, forward


# ---------------------------------------------------------------- Norse (cells in a per-step loop, its idiom)
def build_norse():
    import norse.torch as norse

    # v += dt * tau_mem_inv * (x - v): dt * tau_mem_inv = 0.5 gives v = 0.5 v + 0.5 x.
    p = norse.LIFBoxParameters(tau_mem_inv=torch.as_tensor(500.0), v_th=torch.as_tensor(0.5))
    c1, p1, c2, p2, fl, fc = _layers()
    n1, n2 = norse.LIFBoxCell(p), norse.LIFBoxCell(p)
    mod = nn.ModuleList([c1, c2, fc, n1, n2])

    def forward(x):
        s1 = s2 = None
        outs = []
        for t in range(x.shape[0]):
            z1, s1 = n1(c1(x[t]), s1)
            z2, s2 = n2(c2(p1(z1)), s2)
            outs.append(fc(fl(p2(z2))))
        return torch.stack(outs)

    return mod, forward


# ---------------------------------------------------------------- Sinabs (squeezed [B*T] layers, its idiom)
def build_sinabs():
    import sinabs.activation as sa
    import sinabs.layers as sl

    def lif():
        return sl.LIFSqueeze(
            tau_mem=1.0 / math.log(2.0),
            norm_input=False,
            spike_fn=sa.SingleSpike,
            reset_fn=sa.MembraneReset(),
            batch_size=BATCH,
        )

    c1, p1, c2, p2, fl, fc = _layers()
    net = nn.Sequential(c1, lif(), p1, c2, lif(), p2, fl, fc)

    def forward(x):  # sinabs wants batch-major [B*T, ...]
        t, b = x.shape[:2]
        for m in net:
            if isinstance(m, sl.StatefulLayer):
                m.reset_states()
        out = net(x.transpose(0, 1).reshape(b * t, *x.shape[2:]))
        return out.reshape(b, t, -1).transpose(0, 1)

    return net, forward


BUILDERS: dict[str, Callable] = {
    "plain_pytorch": build_plain,
    "plain_pytorch_cl": build_plain_channels_last,
    "flexsnn_fused": lambda: build_flexsnn("fused"),
    "flexsnn_compiled": lambda: build_flexsnn("compiled"),
    "snntorch": build_snntorch,
    "spikingjelly": build_spikingjelly,
    "norse": build_norse,
    "sinabs": build_sinabs,
}
FLEXSNN = ("flexsnn_fused", "flexsnn_compiled")


def available(names) -> tuple[list[str], dict]:
    ok, skipped = [], {}
    for name in names:
        try:
            BUILDERS[name]()
            ok.append(name)
        except Exception as exc:
            skipped[name] = f"{type(exc).__name__}: {exc}"
    return ok, skipped


def median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1e3


def run_subprocess_json(args: list[str], timeout: float = 600.0) -> dict:
    """Run ``python args...`` (same interpreter) and parse the JSON on its last stdout line."""
    proc = subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        return {"error": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"rc={proc.returncode}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def maxrss_mib() -> float:
    """Peak resident set size of this process so far (Linux: ru_maxrss is in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def now() -> float:
    gc.collect()
    return time.perf_counter()


def stage_step_floor(configs_per_iter, num_stages: int, t_max: int) -> float:
    """The FLOP floor of MTT/SDT: stage-steps MTT sampled (every stage's T in every config)
    over SDT's (stages x T_max per iteration), for the configurations actually sampled."""
    mtt = sum(sum(sum(cfg) for cfg in configs) for configs in configs_per_iter)
    return mtt / (len(configs_per_iter) * num_stages * t_max)


def _distinct_prefix_steps(configs_per_iter, num_stages: int, t_max: int, steps) -> float:
    """Per iteration, ``steps(prefix)`` summed over each distinct prefix ``cfg[:d + 1]`` (stage
    d runs once per distinct prefix), over SDT's stage-steps."""
    run = 0
    for configs in configs_per_iter:
        for d in range(num_stages):
            run += sum(steps(prefix) for prefix in {tuple(cfg[: d + 1]) for cfg in configs})
    return run / (len(configs_per_iter) * num_stages * t_max)


def shared_stage_step_ratio(configs_per_iter, num_stages: int, t_max: int) -> float:
    """Stage-steps MTT runs once configs drawing the same T_1..T_k share stages 1..k
    (``train_step(share_stages=True)``, every stage shareable), over SDT's: per iteration,
    each distinct prefix ``cfg[:k]`` runs stage k once."""
    return _distinct_prefix_steps(configs_per_iter, num_stages, t_max, lambda p: p[-1])


def weighted_layer_step_ratio(configs_per_iter, num_stages: int, t_max: int) -> float:
    """As :func:`shared_stage_step_ratio`, with a stage that the hard TTM up-samples into
    counted at the T before it: its leading conv / linear runs on the distinct steps and the
    copies follow it (``StagedNet.run_stages``), so this counts the steps the stages' weighted
    layers run, over SDT's."""
    return _distinct_prefix_steps(configs_per_iter, num_stages, t_max, lambda p: min(p[-2:]))
