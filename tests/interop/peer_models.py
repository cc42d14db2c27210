"""Shared pieces of the interop suite: the flexsnn models, inputs and the comparison rule."""

from __future__ import annotations

import re
import warnings

import torch
from torch import nn

from flexsnn.neurons import IF, LIF
from flexsnn.staged import staged_from_layers

CONV_SHAPE = (2, 8, 8)
MLP_SHAPE = (16,)
T, B = 6, 3
#: |difference| up to this (relative to the output's scale) is float rounding, not a behaviour change.
CLOSE = 1e-5


def neuron(leaky: bool, flavour: str) -> nn.Module:
    """flavour "nir": NIR's neuron (one spike, reset to 0, no floor); "deploy": flexsnn's
    deployment neuron (multi-spike, subtract reset, floor at -1); "multi": multi-spike,
    subtract reset, no floor (Sinabs' LIF)."""
    opts = {
        "nir": {"reset": "hard"},
        "deploy": {"reset": "subtract", "multi_spike": True, "v_min": -1.0},
        "multi": {"reset": "subtract", "multi_spike": True, "v_min": None},
    }[flavour]
    return LIF(v_th=1.0, decay=0.75, **opts) if leaky else IF(v_th=1.0, **opts)


def _scaled(modules, scale=8.0):
    with torch.no_grad():
        for m in modules:
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                m.weight.mul_(scale)


def conv_net(flavour: str = "nir", pool: bool = True, seed: int = 0):
    """conv-IF-avgpool | conv-IF-flatten | linear head, bias-free, input (2, 8, 8)."""
    torch.manual_seed(seed)
    layers = [nn.Conv2d(2, 4, 3, padding=1, bias=False), neuron(False, flavour)]
    layers += [nn.AvgPool2d(2), nn.Conv2d(4, 4, 3, bias=False)] if pool else [nn.Conv2d(4, 4, 3, stride=3, bias=False)]
    layers += [neuron(False, flavour), nn.Flatten()]
    head = nn.Linear(16 if pool else 36, 5, bias=False)
    _scaled([*layers, head])
    return staged_from_layers(layers, [2], head=head, input_kind="frames", input_shape=CONV_SHAPE).eval()


def mlp_net(flavour: str = "nir", seed: int = 0):
    """linear-LIF(decay 0.75) | linear head, bias-free, vector input (16,)."""
    torch.manual_seed(seed)
    layers = [nn.Linear(16, 12, bias=False), neuron(True, flavour)]
    head = nn.Linear(12, 4, bias=False)
    _scaled([*layers, head])
    return staged_from_layers(layers, [], head=head, input_kind="frames", input_shape=MLP_SHAPE).eval()


def frames(shape, t=T, b=B, seed=1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.poisson(torch.full((t, b, *shape), 0.5), generator=g)


def compare(out: torch.Tensor, ref: torch.Tensor) -> tuple[str, float]:
    """("exact" | "close" | "differs", max |out - ref|) of two [T, B, ...] outputs."""
    if out.shape != ref.shape:
        raise AssertionError(f"output shape {tuple(out.shape)} != reference shape {tuple(ref.shape)}")
    diff = float((out.double() - ref.double()).abs().max())
    if diff == 0.0:
        return "exact", diff
    return ("close" if diff <= CLOSE * max(1.0, float(ref.abs().max())) else "differs"), diff


def export(net, profile, **kw):
    """to_nir with its warnings caught: (graph, the warning messages)."""
    from flexsnn.deploy import to_nir

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        graph = to_nir(net, profile=profile, **kw)
    return graph, [str(w.message) for w in caught if issubclass(w.category, UserWarning)]


def reader_differences(warned: list[str]) -> str:
    """The neuron options a peer profile's warning says the reader runs differently, once each."""
    found = []
    for text in warned:
        for key, theirs in re.findall(r"(\w+)=[^,;()]+ \(reader: ([^)]*)\)", text):
            if f"{key}={theirs}" not in found:
                found.append(f"{key}={theirs}")
    return "peer runs " + ", ".join(found) if found else ""


def first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:160]


def run_cell(record, peer: str, direction: str, model: str, profile: str, run, why: str = "") -> str:
    """Run one matrix cell: ``run()`` returns (peer output, flexsnn output[, note]); an exception
    is the cell's result ("error", with its first line and ``why`` as the note). Returns the status."""
    try:
        result = run()
    except Exception as exc:  # the cell's outcome: recorded, then checked against the expected table
        record(peer, direction, model, profile, "error", None, first_line(exc) + (f" ({why})" if why else ""))
        return "error"
    out, ref, *note = result
    assert float(ref.abs().max()) > 0, "the reference output is all zero: the model is too quiet to compare"
    status, diff = compare(out, ref)
    record(peer, direction, model, profile, status, diff, note[0] if note else "")
    return status


def flexsnn_model(model: str, flavour: str):
    return conv_net(flavour) if model == "conv" else mlp_net(flavour)


def export_cell(
    record,
    peer: str,
    model: str,
    flavour: str,
    profile: str,
    load_and_run,
    expected: str,
    flexsnn_note: str,
    warns=None,
) -> None:
    """One "flexsnn -> peer" cell: export ``flexsnn_model(model, flavour)`` with ``profile``, run
    the graph through ``load_and_run(graph, frames)`` and check the status against ``expected``.

    ``warns(warned)`` checks the exporter's warnings; by default a peer profile must warn about
    the multi-spike deployment neuron."""
    net = flexsnn_model(model, flavour)
    x = frames(net.input_shape)

    def run():
        graph, warned = export(net, profile)
        if warns is not None:
            warns(warned)
        else:
            assert flavour == "nir" or profile == "flexsnn" or warned, "a peer profile must warn about multi-spike"
        note = reader_differences(warned) if profile == peer else flexsnn_note
        return load_and_run(graph, x), net(x), note

    why = flexsnn_note if profile == "flexsnn" else ""
    assert run_cell(record, peer, "flexsnn -> peer", f"{model} ({flavour} neuron)", profile, run, why) == expected
