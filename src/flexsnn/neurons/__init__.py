"""Spiking neurons: multi-step LIF / IF layers, surrogate gradients and a fused BPTT path.

Every function and layer takes time-first input ``[T, B, ...]`` and returns spikes of the
same shape, dtype and device.
"""
from flexsnn.neurons.functional import NeuronParams, lif_multistep, neuron_params
from flexsnn.neurons.fused import lif_multistep_fused  # deprecated alias
from flexsnn.neurons.modules import IF, LIF, SpikingNeuron
from flexsnn.neurons.surrogate import SURROGATES, spike

__all__ = [
    "LIF",
    "IF",
    "SpikingNeuron",
    "lif_multistep",
    "lif_multistep_fused",
    "neuron_params",
    "NeuronParams",
    "SURROGATES",
    "spike",
]
