"""Norse 1.1 <-> flexsnn through NIR (norse.torch.to_nir / from_nir)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

norse = pytest.importorskip("norse.torch")

from flexsnn.deploy import from_nir  # noqa: E402
from interop.peer_models import CONV_SHAPE, MLP_SHAPE, export_cell, frames, run_cell  # noqa: E402

FLEXSNN_PROFILE_NOTE = "written with dt = 1, read with dt = 1e-3; Flatten(start_dim=0) read as nn.Flatten(0)"
PEER = "norse"
DT = 1e-3  # Norse's default step


def run_norse(module, x):
    state, outs = None, []
    for x_t in x:
        out, state = module(x_t, state)
        outs.append(out)
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
def test_flexsnn_to_norse(record, model, flavour, profile):
    export_cell(
        record,
        PEER,
        model,
        flavour,
        profile,
        lambda graph, x: run_norse(norse.from_nir(graph, dt=DT, ignore_warnings=True), x),
        EXPORT_EXPECTED[(model, flavour, profile)],
        FLEXSNN_PROFILE_NOTE,
    )


def norse_model(model: str):
    """Norse's exporter maps no pooling: the conv model strides instead."""
    torch.manual_seed(5)
    if model == "conv":
        layers = [
            nn.Conv2d(2, 4, 3, padding=1),
            norse.IAFCell(),
            nn.Conv2d(4, 4, 3, stride=3),
            norse.IAFCell(),
            nn.Flatten(),
            nn.Linear(16, 5),
        ]
    else:  # LIFBox: v += dt * tau_mem_inv * (-v + i); dt * tau_mem_inv = 0.25
        layers = [
            nn.Linear(16, 12),
            norse.LIFBoxCell(norse.LIFBoxParameters(tau_mem_inv=torch.tensor(250.0))),
            nn.Linear(12, 4),
            norse.LIBoxCell(norse.LIBoxParameters(tau_mem_inv=torch.tensor(500.0))),
        ]
    net = norse.SequentialState(*layers)
    with torch.no_grad():
        for m in layers:
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                m.weight.mul_(4.0)
    return net


# Norse's exporter maps no nn.Flatten (it writes a None node), so no conv -> linear model crosses.
IMPORT_EXPECTED = {"conv": ("error",), "mlp": ("exact", "close")}


@pytest.mark.parametrize("model", sorted(IMPORT_EXPECTED))
def test_norse_to_flexsnn(record, model):
    net = norse_model(model)
    x = frames(CONV_SHAPE if model == "conv" else MLP_SHAPE, seed=3)

    def run():
        ref = run_norse(net, x)
        graph = norse.to_nir(net, x[0], dt=DT)
        back = from_nir(graph, profile=PEER).eval()
        return back(x), ref.detach()

    assert run_cell(record, PEER, "peer -> flexsnn", model, PEER, run) in IMPORT_EXPECTED[model]
