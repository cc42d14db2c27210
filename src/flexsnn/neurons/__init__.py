"""Spiking neurons: multi-step LIF / IF layers, surrogate gradients and a fused BPTT path.

Every function and layer takes time-first input ``[T, B, ...]`` and returns spikes of the
same shape, dtype and device. One parameter object, :class:`NeuronParams`, goes unchanged
from the layers to :func:`lif_multistep` and its backends.

Modules, each importing only those above it: ``surrogate`` (spike functions, surrogate
gradients) -> ``params`` (NeuronParams) -> ``reference`` (the per-step autograd loop) ->
``kernels`` (the BPTT loops, eager and traceable) -> ``fused`` (one autograd node for all T)
-> ``compiled`` (torch.compile'd kernels) -> ``dispatch`` (``lif_multistep``) -> ``modules``
(LIF, IF).
"""

from flexsnn.neurons.dispatch import lif_multistep
from flexsnn.neurons.modules import IF, LIF, SpikingNeuron
from flexsnn.neurons.params import NeuronParams
from flexsnn.neurons.surrogate import SURROGATES, Surrogate, spike

__all__ = [
    "LIF",
    "IF",
    "SpikingNeuron",
    "lif_multistep",
    "NeuronParams",
    "SURROGATES",
    "Surrogate",
    "spike",
]
