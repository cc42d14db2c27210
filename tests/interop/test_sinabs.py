"""Sinabs 3.1 <-> flexsnn through NIR (sinabs.to_nir / from_nir). Runs in .venv-interop-sinabs:
Sinabs pins nir <= 1.0.4, older than the nir the other peers need."""

from __future__ import annotations

import os
import subprocess
import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn

sinabs = pytest.importorskip("sinabs")
import sinabs.layers as sl  # noqa: E402

from flexsnn.deploy import from_nir, read_nir  # noqa: E402
from flexsnn.errors import InputError  # noqa: E402
from interop.peer_models import (  # noqa: E402
    CONV_SHAPE,
    MLP_SHAPE,
    B,
    conv_net,
    export_cell,
    frames,
    run_cell,
)

FLEXSNN_PROFILE_NOTE = "Euler leak (1 - dt/tau) read as exp(-1/tau); IF read as multi-spike, subtract, floor -v_th"
PEER = "sinabs"
ROOT = Path(__file__).resolve().parents[2]


def run_sinabs(module, x):
    """Sinabs' squeezed layers take [B*T, ...] ordered batch-major."""
    t, b = x.shape[:2]
    out = module(x.transpose(0, 1).reshape(b * t, *x.shape[2:]))
    out = out[0] if isinstance(out, tuple) else out  # nirtorch >= 2 returns (output, state)
    return out.reshape(b, t, *out.shape[1:]).transpose(0, 1)


EXPORT_EXPECTED = {
    ("conv", "nir", "flexsnn"): "differs",
    ("conv", "nir", PEER): "differs",
    ("conv", "deploy", "flexsnn"): "exact",
    ("conv", "deploy", PEER): "exact",
    ("mlp", "nir", "flexsnn"): "differs",
    ("mlp", "nir", PEER): "differs",
    ("mlp", "deploy", "flexsnn"): "differs",
    ("mlp", "deploy", PEER): "differs",
    ("mlp", "multi", "flexsnn"): "differs",
    ("mlp", "multi", PEER): "exact",
}


@pytest.mark.parametrize("model, flavour, profile", sorted(EXPORT_EXPECTED))
def test_flexsnn_to_sinabs(record, model, flavour, profile):
    """Sinabs runs a NIR IF as flexsnn's deployment neuron (multi-spike, subtract, floor -v_th) and
    a LIF multi-spike with subtract reset and no floor: the other neurons differ, and the peer
    profile says so."""
    expected = EXPORT_EXPECTED[(model, flavour, profile)]

    def warns(warned):
        if profile == PEER:
            assert bool(warned) == (expected == "differs")

    def load_and_run(graph, x):
        return run_sinabs(sinabs.from_nir(graph, batch_size=x.shape[1]), x)

    export_cell(record, PEER, model, flavour, profile, load_and_run, expected, FLEXSNN_PROFILE_NOTE, warns=warns)


def sinabs_model(model: str):
    torch.manual_seed(7)
    if model == "conv":  # min_v_mem = -v_th: what Sinabs' importer gives an IF (its exporter drops it)

        def iaf():
            return sl.IAFSqueeze(batch_size=B, min_v_mem=-1.0)

        layers = [
            nn.Conv2d(2, 4, 3, padding=1),
            iaf(),
            sl.SumPool2d(2),
            nn.Conv2d(4, 4, 3),
            iaf(),
            nn.Flatten(),
            nn.Linear(16, 5),
        ]
    else:  # tau in steps, exponential leak: decay exp(-1/4)
        layers = [nn.Linear(16, 12), sl.LIFSqueeze(tau_mem=4.0, batch_size=B, norm_input=False), nn.Linear(12, 4)]
    net = nn.Sequential(*layers)
    with torch.no_grad():
        for m in net:
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                m.weight.mul_(4.0)
    return net


@pytest.mark.parametrize("model", ["conv", "mlp"])
def test_sinabs_to_flexsnn(record, model):
    net = sinabs_model(model)
    x = frames(CONV_SHAPE if model == "conv" else MLP_SHAPE, seed=3)

    def run():
        ref = run_sinabs(net, x).detach()
        for m in net:
            if hasattr(m, "reset_states"):
                m.reset_states()
        graph = sinabs.to_nir(net, x[0])
        return from_nir(graph, profile=PEER).eval()(x), ref

    assert run_cell(record, PEER, "peer -> flexsnn", model, PEER, run) in ("exact", "close")


WRITER = os.environ.get("FLEXSNN_INTEROP_WRITER", str(ROOT / ".venv-interop" / "bin" / "python"))


def test_file_written_with_newer_nir(record, tmp_path):
    """A flexsnn file written with nir 1.0.8 (in the other interop venv): the default schema is
    refused with a clear error; write_nir(schema="1.0.4") / profile "sinabs" reads exactly."""
    if not Path(WRITER).exists():
        pytest.skip(f"needs the nir 1.0.8 interop venv at {WRITER} (make test-interop builds it)")
    script = textwrap.dedent(f"""
        import sys; sys.path.insert(0, {str(Path(__file__).parent)!r})
        import nir, warnings
        from flexsnn.deploy import to_nir, write_nir
        from peer_models import conv_net
        warnings.simplefilter("ignore")
        net = conv_net("deploy")
        nir.write({str(tmp_path / "current.nir")!r}, to_nir(net))
        write_nir(to_nir(net), {str(tmp_path / "old.nir")!r}, schema="1.0.4")
        write_nir(to_nir(net, profile="sinabs"), {str(tmp_path / "sinabs.nir")!r})
        print(nir.__version__ if hasattr(nir, "__version__") else "")
    """)
    subprocess.run([WRITER, "-c", script], check=True, cwd=ROOT, capture_output=True, text=True)
    with pytest.raises(InputError, match=r"newer nir schema.*schema='1.0.4'"):
        read_nir(tmp_path / "current.nir")
    net = conv_net("deploy")
    x = frames(CONV_SHAPE)
    for name in ("old", "sinabs"):

        def run(name=name):
            graph = read_nir(tmp_path / f"{name}.nir")
            return run_sinabs(sinabs.from_nir(graph, batch_size=x.shape[1]), x), net(x), "file written with nir 1.0.8"

        profile = "flexsnn (schema 1.0.4)" if name == "old" else PEER
        assert run_cell(record, PEER, "flexsnn -> peer", "conv (deploy neuron), file", profile, run) == "exact"
