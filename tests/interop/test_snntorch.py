"""snnTorch 1.0 <-> flexsnn through NIR (snnTorch's export_to_nir / import_from_nir)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

snn = pytest.importorskip("snntorch")
from snntorch import utils  # noqa: E402
from snntorch.export_nir import export_to_nir  # noqa: E402
from snntorch.import_nir import import_from_nir  # noqa: E402

from flexsnn.deploy import from_nir  # noqa: E402
from interop.peer_models import CONV_SHAPE, MLP_SHAPE, export_cell, frames, run_cell  # noqa: E402

FLEXSNN_PROFILE_NOTE = "snnTorch reads with dt = 1e-4 (hard-coded) and maps no SumPool2d"
PEER = "snntorch"


def run_snntorch(module, x):
    utils.reset(module)
    outs = []
    for x_t in x:
        out = module(x_t)
        outs.append(out[0] if isinstance(out, tuple) else out)
    return torch.stack(outs)


EXPORT_EXPECTED = {
    ("conv", "nir", "flexsnn"): "error",
    ("conv", "nir", PEER): "exact",
    ("conv", "deploy", "flexsnn"): "error",
    ("conv", "deploy", PEER): "differs",
    ("mlp", "nir", "flexsnn"): "differs",
    ("mlp", "nir", PEER): "exact",
    ("mlp", "deploy", "flexsnn"): "differs",
    ("mlp", "deploy", PEER): "differs",
}


@pytest.mark.parametrize("model, flavour, profile", sorted(EXPORT_EXPECTED))
def test_flexsnn_to_snntorch(record, model, flavour, profile):
    export_cell(
        record,
        PEER,
        model,
        flavour,
        profile,
        lambda graph, x: run_snntorch(import_from_nir(graph), x),
        EXPORT_EXPECTED[(model, flavour, profile)],
        FLEXSNN_PROFILE_NOTE,
    )


def snntorch_model(model: str):
    """Per-neuron beta and threshold: snnTorch's exporter writes scalar ones with shape (), which
    nir 1.0.8's type inference refuses."""
    torch.manual_seed(2)

    def lif(shape, beta):  # reset to zero: what NIR's LIF says (snnTorch's default subtracts)
        return snn.Leaky(
            beta=torch.full(shape, beta), threshold=torch.ones(shape), init_hidden=True, reset_mechanism="zero"
        )

    if model == "conv":  # beta = 1: an IF (snnTorch writes tau = inf)
        layers = [
            nn.Conv2d(2, 4, 3, padding=1),
            lif((4, 8, 8), 1.0),
            nn.AvgPool2d(2),
            nn.Conv2d(4, 4, 3),
            lif((4, 2, 2), 1.0),
            nn.Flatten(),
            nn.Linear(16, 5),
        ]
    else:
        layers = [nn.Linear(16, 12), lif((12,), 0.75), nn.Linear(12, 4)]
    net = nn.Sequential(*layers)
    with torch.no_grad():
        for m in net:
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                m.weight.mul_(4.0)
    return net


@pytest.mark.parametrize("model", ["conv", "mlp"])
def test_snntorch_to_flexsnn(record, model):
    net = snntorch_model(model)
    x = frames(CONV_SHAPE if model == "conv" else MLP_SHAPE, seed=3)

    def run():
        ref = run_snntorch(net, x)
        graph = export_to_nir(net, x[0], ignore_dims=[0])  # NIR shapes exclude the batch
        back = from_nir(graph, profile=PEER).eval()  # dt = 1e-4, snnTorch's step
        return back(x), ref

    assert run_cell(record, PEER, "peer -> flexsnn", model, PEER, run) in ("exact", "close")
