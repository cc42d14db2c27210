"""Deployment: the event-driven (clock-free) simulator and the numpy description it runs.

``simulate(model, events, sensor_size)`` runs a bias-free IF network on event streams, one
event at a time, with no time steps (rules: ``docs/event_driven.md``).
``EventNet.from_torch(model)`` converts a flexsnn StagedNet / ``nn.Sequential``.
"""

from flexsnn.data.events import check_events
from flexsnn.deploy.eventnet import Conv, DeployStep, EventNet, Flatten, Linear, NeuronSpec, SumPool, walk_torch
from flexsnn.deploy.reference import simulate_reference
from flexsnn.deploy.simulator import SimulationError, SimulationResult, predictions, simulate, spike_count_readout

__all__ = [
    "simulate",
    "simulate_reference",
    "SimulationResult",
    "SimulationError",
    "predictions",
    "spike_count_readout",
    "check_events",
    "EventNet",
    "NeuronSpec",
    "Conv",
    "SumPool",
    "Flatten",
    "Linear",
    "DeployStep",
    "walk_torch",
]

# Bias removal, the bias-free fine-tune, NIR export and the deployment comparison.
from flexsnn.deploy.bias_removal import (  # noqa: E402
    check_bias_free,
    fold_batchnorm,
    freeze_biases,
    remove_biases,
    strip_batchnorm,
    zero_biases,
)
from flexsnn.deploy.compare import (  # noqa: E402
    DeploymentMetrics,
    evaluate_deployment,
    event_driven_layer_spikes,
    layer_spike_divergence,
    spike_count_divergence,
    time_stepped_layer_spikes,
)
from flexsnn.deploy.finetune import deployment_sampler, finetune_bias_free  # noqa: E402
from flexsnn.deploy.nir import PROFILES, Profile, SumPool2d, from_nir, read_nir, to_nir, write_nir  # noqa: E402

__all__ += [
    "check_bias_free",
    "fold_batchnorm",
    "freeze_biases",
    "remove_biases",
    "strip_batchnorm",
    "zero_biases",
    "DeploymentMetrics",
    "evaluate_deployment",
    "spike_count_divergence",
    "layer_spike_divergence",
    "time_stepped_layer_spikes",
    "event_driven_layer_spikes",
    "deployment_sampler",
    "finetune_bias_free",
    "SumPool2d",
    "from_nir",
    "to_nir",
    "read_nir",
    "write_nir",
    "Profile",
    "PROFILES",
]
