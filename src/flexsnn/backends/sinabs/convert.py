"""Convert a bias-free flexsnn model to Sinabs layers for Speck / DYNAP-CNN.

The conversion goes through :class:`flexsnn.deploy.EventNet`, the numpy description the
event-driven simulator runs, so the chip, the simulator and the NIR export see the same
weights (average pooling already turned into sum pooling with its scale folded into the
next weighted layer):

==================  ===================================================================
EventNet            Sinabs
==================  ===================================================================
Conv + neuron       ``nn.Conv2d(bias=False)`` + ``sinabs.layers.IAFSqueeze``
SumPool             ``sinabs.layers.SumPool2d``
Flatten             ``nn.Flatten``
Linear + neuron     ``nn.Linear(bias=False)`` + ``IAFSqueeze``
readout             ``nn.Linear`` / ``nn.Conv2d`` + an ``IAFSqueeze`` counting neuron when
                    ``output_neuron=True`` (the default: on the chip every layer spikes,
                    and DynapcnnNetwork needs a spiking layer after every weighted one)
==================  ===================================================================

IAFSqueeze: ``spike_threshold = v_th``, ``min_v_mem = v_min``, ``MultiSpike`` (or
``SingleSpike``), ``MembraneSubtract`` (or ``MembraneReset`` for a hard reset): the same
dynamics as :class:`flexsnn.neurons.IF`. Layout: Sinabs' ``*Squeeze`` layers take
``[B*T, ...]`` ordered batch-major (all steps of sample 0, then sample 1, ...), whereas
flexsnn is time-first ``[T, B, ...]``: feed ``x.transpose(0, 1).reshape(B * T, ...)``.
Leaky neurons cannot be mapped (Speck's neurons are IF): InputError.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from flexsnn.deploy.eventnet import Conv, EventNet, Flatten, Linear, SumPool
from flexsnn.errors import FlexSNNError, InputError

__all__ = ["SinabsUnavailableError", "sinabs_available", "require_sinabs", "to_sinabs", "to_dynapcnn"]

INSTALL_HINT = "pip install 'flexsnn[sinabs]' (sinabs pins nir<=1.0.4; use a separate environment if needed)"


class SinabsUnavailableError(FlexSNNError, ImportError):
    """Sinabs (or samna, for the chip) is not installed."""


def sinabs_available() -> bool:
    return importlib.util.find_spec("sinabs") is not None


def require_sinabs():
    """Import and return ``sinabs``, or raise SinabsUnavailableError with the install hint."""
    try:
        import sinabs  # noqa: F401
        import sinabs.layers  # noqa: F401
    except ImportError as exc:
        raise SinabsUnavailableError(f"the Sinabs back end needs sinabs ({exc}); {INSTALL_HINT}") from None
    return sinabs


def _neuron(spec, batch_size: int | None, num_timesteps: int | None, where: str) -> nn.Module:
    import sinabs.activation as sa
    import sinabs.layers as sl

    if spec.tau is not None:
        raise InputError(f"{where}: leaky neurons (tau={spec.tau}) cannot run on Speck; expected IF neurons")
    return sl.IAFSqueeze(
        spike_threshold=torch.tensor(float(spec.v_th)),
        min_v_mem=None if spec.v_min is None else float(spec.v_min),
        spike_fn=sa.MultiSpike if spec.multi_spike else sa.SingleSpike,
        reset_fn=sa.MembraneSubtract() if spec.reset == "subtract" else sa.MembraneReset(),
        batch_size=batch_size,
        num_timesteps=num_timesteps,
    )


def to_sinabs(
    model: Any,
    input_shape: Sequence[int] | None = None,
    batch_size: int | None = 1,
    num_timesteps: int | None = None,
    output_neuron: bool = True,
) -> nn.Sequential:
    """A Sinabs ``nn.Sequential`` equivalent to the bias-free ``model``.

    model: a flexsnn StagedNet / ``nn.Sequential`` accepted by ``EventNet.from_torch`` (bias-free,
    BN folded) or an EventNet. input_shape: ``(C, H, W)``, checked against the layers when given
    (default ``model.input_shape`` if the model has one). batch_size / num_timesteps: passed to
    every ``IAFSqueeze`` (one of them is needed to unsqueeze ``[B*T, ...]``). output_neuron: add the
    readout's counting neuron (see the module docstring).
    """
    require_sinabs()
    import sinabs.layers as sl

    if batch_size is None and num_timesteps is None:
        raise InputError("to_sinabs needs batch_size or num_timesteps (IAFSqueeze unflattens [B*T, ...] with it)")
    net = model if isinstance(model, EventNet) else EventNet.from_torch(model)
    shape = input_shape if input_shape is not None else getattr(model, "input_shape", None)
    if shape is not None:
        net.set_input_shape(shape)
    layers: list[nn.Module] = []
    last = len(net.layers) - 1
    for i, layer in enumerate(net.layers):
        where = f"EventNet layer {i} ({type(layer).__name__})"
        if isinstance(layer, Conv):
            c_out, c_in, kh, kw = layer.weight.shape
            conv = nn.Conv2d(c_in, c_out, (kh, kw), stride=layer.stride, padding=layer.padding, bias=False)
            with torch.no_grad():
                conv.weight.copy_(torch.from_numpy(layer.weight))
            layers.append(conv)
        elif isinstance(layer, Linear):
            out_f, in_f = layer.weight.shape
            lin = nn.Linear(in_f, out_f, bias=False)
            with torch.no_grad():
                lin.weight.copy_(torch.from_numpy(layer.weight))
            layers.append(lin)
        elif isinstance(layer, SumPool):
            layers.append(sl.SumPool2d(kernel_size=layer.kernel, stride=layer.stride))
            continue
        elif isinstance(layer, Flatten):
            layers.append(nn.Flatten())
            continue
        else:  # pragma: no cover - EventNet validates its layers
            raise InputError(f"{where} has no Sinabs equivalent")
        if i < last:
            layers.append(_neuron(layer.neuron, batch_size, num_timesteps, where))
        elif output_neuron:
            layers.append(_neuron(net.output_neuron, batch_size, num_timesteps, where + " (readout counting neuron)"))
    return nn.Sequential(*layers)


def to_dynapcnn(
    model: Any,
    input_shape: Sequence[int],
    batch_size: int = 1,
    discretize: bool = True,
    **kwargs: Any,
):
    """``sinabs.backend.dynapcnn.DynapcnnNetwork`` of :func:`to_sinabs` (model) for Speck.

    Needs sinabs and samna (samna is imported by sinabs' dynapcnn module). ``kwargs`` go to
    ``DynapcnnNetwork``. Uploading to a chip is then ``net.to(device="speck2fmodule:0")``.
    """
    snn = to_sinabs(model, input_shape=input_shape, batch_size=batch_size, output_neuron=True)
    try:
        from sinabs.backend.dynapcnn import DynapcnnNetwork
    except ImportError as exc:
        raise SinabsUnavailableError(
            f"DynapcnnNetwork needs sinabs with samna ({exc}); {INSTALL_HINT} and samna"
        ) from None
    return DynapcnnNetwork(
        snn, input_shape=tuple(int(s) for s in input_shape), batch_size=batch_size, discretize=discretize, **kwargs
    )
