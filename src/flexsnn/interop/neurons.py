"""Adapters running a peer library's stateful neuron inside a StagedNet: multi-step over the
time-first tensor ``[T, B, ...]``, state reset at every forward, spikes counted like flexsnn's.

SpikingJelly nodes, snnTorch neurons and Sinabs layers keep their membrane in attributes
between calls. A StagedNet runs plain layers on the ``[T*B, ...]`` view, which for such a
neuron integrates over the batch instead of time and leaks state from one forward into the
next, so StagedNet refuses them bare (:func:`flexsnn.multistep.check_no_bare_peer_neurons`).
Wrapped, they receive ``[T, B, ...]`` and run over T the way their own library runs them:

- :class:`SpikingJellyNeuron`: ``node.reset()``, then the node in multi-step mode on
  ``[T, B, ...]`` (SpikingJelly's own layout) when ``step_mode == "m"``, else one call per step;
- :class:`SnnTorchNeuron`: ``neuron.reset_mem()``, then one call per step (snnTorch's loop),
  the spikes being the first output;
- :class:`SinabsNeuron`: ``layer.reset_states()``, then one call on ``[B, T, ...]`` (Sinabs'
  layout), transposed back.

Every adapter has flexsnn's neuron interface: ``record`` / ``last_spike_count`` /
``last_num_neurons`` / ``last_time_steps`` / ``last_batch_size`` (so spike statistics, synops,
search and early exit see the adapted neurons), and ``stateful`` / ``reset_state()`` for
streaming. No peer library is imported here: the adapters call the wrapped module's methods.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from flexsnn.errors import InputError
from flexsnn.multistep import MultiStepModule, peer_neuron_kind
from flexsnn.neurons.dispatch import check_input
from flexsnn.staged import StagedNet
from flexsnn.staged import staged_from_layers as _staged_from_layers


class PeerNeuron(MultiStepModule):
    """Base of the adapters: ``forward(x [T, B, ...]) -> spikes [T, B, ...]`` around ``self.neuron``."""

    kind = ""

    def __init__(self, neuron: nn.Module) -> None:
        super().__init__()
        found = peer_neuron_kind(neuron)
        if found != self.kind:
            raise InputError(
                f"{type(self).__name__} wraps a {self.kind} neuron, got {type(neuron).__name__}"
                + (f" (a {found} neuron: use {ADAPTERS[found].__name__})" if found else "")
            )
        self.neuron = neuron
        self.record = False
        self.stateful = False
        self.last_spike_count: float | None = None
        self.last_num_neurons: int | None = None
        self.last_time_steps: int | None = None
        self.last_batch_size: int | None = None
        self._fresh = True  # the next stateful forward starts from a reset

    def reset_state(self) -> None:
        """The next forward starts from the peer's reset state (streaming mode)."""
        self._fresh = True

    def _reset_peer(self) -> None:
        raise NotImplementedError

    def _run(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` ``[T, B, ...]`` -> spikes ``[T, B, ...]``; state reset first unless streaming."""
        x = check_input(x)
        if not self.stateful or self._fresh:
            self._reset_peer()
            self._fresh = False
        spikes = self._run(x)
        if not self.stateful:
            self._reset_peer()  # no state (nor its graph) is kept past the forward
            self._fresh = True
        if self.record:
            self.last_spike_count = float(spikes.detach().sum(dtype=torch.float64))
            self.last_num_neurons = math.prod(x.shape[2:])
            self.last_time_steps = int(x.shape[0])
            self.last_batch_size = int(x.shape[1])
        return spikes

    def extra_repr(self) -> str:
        return f"stateful={self.stateful}"


def _first(out):
    return out[0] if isinstance(out, (tuple, list)) else out


class SpikingJellyNeuron(PeerNeuron):
    """A SpikingJelly node (``LIFNode``, ``IFNode``, ...) on ``[T, B, ...]``."""

    kind = "spikingjelly"

    def _reset_peer(self) -> None:
        self.neuron.reset()

    def _run(self, x: torch.Tensor) -> torch.Tensor:
        if getattr(self.neuron, "step_mode", "s") == "m":
            return _first(self.neuron(x))
        return torch.stack([_first(self.neuron(x[t])) for t in range(x.shape[0])])


class SnnTorchNeuron(PeerNeuron):
    """An snnTorch neuron (``Leaky``, ``Synaptic``, ...) on ``[T, B, ...]``, one call per step."""

    kind = "snntorch"

    def _reset_peer(self) -> None:
        self.neuron.reset_mem()

    def _run(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([_first(self.neuron(x[t])) for t in range(x.shape[0])])


class SinabsNeuron(PeerNeuron):
    """A Sinabs spiking layer (``IAF``, ``LIF``, ...) on ``[T, B, ...]`` (Sinabs runs ``[B, T, ...]``)."""

    kind = "sinabs"

    def _reset_peer(self) -> None:
        self.neuron.reset_states()

    def _run(self, x: torch.Tensor) -> torch.Tensor:
        return _first(self.neuron(x.transpose(0, 1).contiguous())).transpose(0, 1)


ADAPTERS = {"spikingjelly": SpikingJellyNeuron, "snntorch": SnnTorchNeuron, "sinabs": SinabsNeuron}


def adapt_neuron(module: nn.Module) -> nn.Module:
    """``module`` wrapped in its adapter if it is a peer stateful neuron, else ``module`` itself."""
    kind = peer_neuron_kind(module)
    return module if kind is None else ADAPTERS[kind](module)


def adapt_peer_neurons(module: nn.Module) -> nn.Module:
    """Wrap every bare peer neuron inside ``module`` in place (and ``module`` itself); returns it."""
    if peer_neuron_kind(module) is not None:
        return adapt_neuron(module)
    if isinstance(module, MultiStepModule):
        return module
    for name, child in list(module.named_children()):
        adapted = adapt_peer_neurons(child)
        if adapted is not child:
            setattr(module, name, adapted)
    return module


def staged_from_layers(
    layers: Sequence[nn.Module], boundaries: Sequence[int], head: nn.Module | None = None, **kwargs
) -> StagedNet:
    """:func:`flexsnn.staged.staged_from_layers` with every peer neuron wrapped in its adapter."""
    layers = list(layers.children()) if isinstance(layers, nn.Sequential) else list(layers)
    layers = [adapt_peer_neurons(m) if isinstance(m, nn.Module) else m for m in layers]
    if head is not None and isinstance(head, nn.Module):
        head = adapt_peer_neurons(head)
    elif isinstance(head, (list, tuple)):
        head = [adapt_peer_neurons(m) if isinstance(m, nn.Module) else m for m in head]
    return _staged_from_layers(layers, boundaries, head=head, **kwargs)
