"""SpikingJelly 2.0 <-> flexsnn through NIR (spikingjelly.activation_based.nir_exchange)."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("spikingjelly")
nir_exchange = pytest.importorskip("spikingjelly.activation_based.nir_exchange")
from spikingjelly.activation_based import functional, layer, neuron  # noqa: E402

from flexsnn.deploy import from_nir  # noqa: E402
from interop.peer_models import CONV_SHAPE, MLP_SHAPE, export_cell, frames, run_cell  # noqa: E402

FLEXSNN_PROFILE_NOTE = "written with dt = 1, read with dt = 1e-4; no SumPool2d mapping"
PEER = "spikingjelly"
DT = 1e-4  # SpikingJelly's default step


def run_spikingjelly(module, x):
    out = module(x)
    return out[0] if isinstance(out, tuple) else out


EXPORT_EXPECTED = {
    ("conv", "nir", "flexsnn"): "error",
    ("conv", "nir", PEER): "exact",
    ("conv", "deploy", "flexsnn"): "error",
    ("conv", "deploy", PEER): "differs",
    ("mlp", "nir", "flexsnn"): "error",
    ("mlp", "nir", PEER): "exact",
    ("mlp", "deploy", "flexsnn"): "error",
    ("mlp", "deploy", PEER): "differs",
}


@pytest.mark.parametrize("model, flavour, profile", sorted(EXPORT_EXPECTED))
def test_flexsnn_to_spikingjelly(record, model, flavour, profile):
    export_cell(
        record,
        PEER,
        model,
        flavour,
        profile,
        lambda graph, x: run_spikingjelly(nir_exchange.import_from_nir(graph, dt=DT, step_mode="m"), x),
        EXPORT_EXPECTED[(model, flavour, profile)],
        FLEXSNN_PROFILE_NOTE,
    )


def spikingjelly_model(model: str):
    torch.manual_seed(4)
    if model == "conv":
        layers = [
            layer.Conv2d(2, 4, 3, padding=1),
            neuron.IFNode(v_reset=0.0),
            layer.AvgPool2d(2),
            layer.Conv2d(4, 4, 3),
            neuron.IFNode(v_reset=0.0),
            layer.Flatten(),
            layer.Linear(16, 5),
        ]
    else:  # decay_input=False: v = v - v / tau + x, i.e. decay 1 - 1/tau = 0.75
        layers = [layer.Linear(16, 12), neuron.LIFNode(tau=4.0, decay_input=False, v_reset=0.0), layer.Linear(12, 4)]
    net = torch.nn.Sequential(*layers)
    with torch.no_grad():
        for m in net:
            if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
                m.weight.mul_(4.0)
    functional.set_step_mode(net, "m")
    return net


@pytest.mark.parametrize("model", ["conv", "mlp"])
def test_spikingjelly_to_flexsnn(record, model):
    net = spikingjelly_model(model)
    x = frames(CONV_SHAPE if model == "conv" else MLP_SHAPE, seed=3)

    def run():
        functional.reset_net(net)
        ref = net(x)
        functional.reset_net(net)
        graph = nir_exchange.export_to_nir(net, x, dt=DT)
        back = from_nir(graph, profile=PEER).eval()
        return back(x), ref.detach()

    assert run_cell(record, PEER, "peer -> flexsnn", model, PEER, run) in ("exact", "close")
