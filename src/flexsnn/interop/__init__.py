"""Interop with the peer libraries: adapters running SpikingJelly / snnTorch / Sinabs neurons
inside a StagedNet (:mod:`flexsnn.interop.neurons`). No peer library is imported."""

from flexsnn.interop.neurons import (
    ADAPTERS,
    PeerNeuron,
    SinabsNeuron,
    SnnTorchNeuron,
    SpikingJellyNeuron,
    adapt_neuron,
    adapt_peer_neurons,
    staged_from_layers,
)

__all__ = [
    "ADAPTERS",
    "PeerNeuron",
    "SinabsNeuron",
    "SnnTorchNeuron",
    "SpikingJellyNeuron",
    "adapt_neuron",
    "adapt_peer_neurons",
    "staged_from_layers",
]
