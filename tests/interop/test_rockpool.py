"""Rockpool 3.1 <-> flexsnn through NIR (rockpool.nn.modules.torch.nir)."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("rockpool")
rp_nir = pytest.importorskip("rockpool.nn.modules.torch.nir")
from rockpool.nn.combinators import Sequential  # noqa: E402
from rockpool.nn.modules import LIFTorch, LinearTorch  # noqa: E402

from flexsnn.deploy import from_nir  # noqa: E402
from interop.peer_models import MLP_SHAPE, export, flexsnn_model, frames, run_cell  # noqa: E402

PEER = "rockpool"
DT = 1e-3


def run_rockpool(module, x):
    """Rockpool modules take [B, T, N] and return (output, state, record)."""
    with torch.no_grad():
        out = module(x.transpose(0, 1))
    return (out[0] if isinstance(out, tuple) else out).transpose(0, 1)


# Rockpool's importer maps no IF, Conv2d, pooling or Flatten node, and reads a LIF node's
# `tau_mem` (a CubaLIF field): nothing flexsnn writes loads there.
EXPORT_EXPECTED = {("conv", "nir"): "error", ("mlp", "nir"): "error"}


@pytest.mark.parametrize("model, flavour", sorted(EXPORT_EXPECTED))
def test_flexsnn_to_rockpool(record, model, flavour):
    net = flexsnn_model(model, flavour)
    x = frames(net.input_shape)

    def run():
        graph, _ = export(net, "flexsnn", dt=DT)
        return run_rockpool(rp_nir.from_nir(graph), x), net(x)

    name = f"{model} ({flavour} neuron)"
    why = "Rockpool maps no IF, Conv2d, pooling or Flatten node and reads LIF.tau_mem"
    expected = EXPORT_EXPECTED[(model, flavour)]
    assert run_cell(record, PEER, "flexsnn -> peer", name, "flexsnn", run, why) == expected


def rockpool_mlp():
    torch.manual_seed(6)
    net = Sequential(
        LinearTorch((16, 12)),
        LIFTorch(12, tau_mem=0.004, tau_syn=0.002, dt=DT),
        LinearTorch((12, 4)),
        LIFTorch(4, tau_mem=0.004, tau_syn=0.002, dt=DT),
    )
    with torch.no_grad():
        for linear in (net[0], net[2]):
            linear.weight.mul_(3.0)
    return net


def test_rockpool_to_flexsnn(record):
    """LIFTorch exports as CubaLIF; the "rockpool" profile runs it as Rockpool does
    (exponential decays, the input joins the current before it decays, multi-spike, subtract)."""
    net = rockpool_mlp()
    x = frames(MLP_SHAPE, seed=3)

    def run():
        ref = run_rockpool(net, x)
        graph = rp_nir.to_nir(net, x[0])
        return from_nir(graph, profile=PEER).eval()(x), ref

    assert run_cell(record, PEER, "peer -> flexsnn", "mlp", PEER, run) in ("exact", "close")
