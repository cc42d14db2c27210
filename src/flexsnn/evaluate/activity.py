"""Spike counts and firing rates per spiking layer, measured on data."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass

import torch
from torch import nn

from flexsnn.data.encoding import model_input
from flexsnn.errors import InputError


@dataclass
class LayerActivity:
    layer: str  # module name inside the model
    neurons: int  # neurons per sample
    time_steps: int  # T this layer ran at
    spikes_per_sample: float  # multi-spikes counted by value
    firing_rate: float  # spikes / (neurons * time_steps), per sample

    def as_dict(self) -> dict:
        return asdict(self)


def spiking_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Named modules that can record their spikes (flexsnn neurons)."""
    return [(name, m) for name, m in model.named_modules() if hasattr(m, "record") and hasattr(m, "last_spike_count")]


@contextlib.contextmanager
def recording(model: nn.Module) -> Iterator[list[tuple[str, nn.Module]]]:
    """Turn spike recording on for every neuron of ``model`` inside the block."""
    layers = spiking_layers(model)
    previous = [m.record for _, m in layers]
    for _, m in layers:
        m.record = True
    try:
        yield layers
    finally:
        for (_, m), rec in zip(layers, previous):
            m.record = rec


@torch.no_grad()
def spike_stats(
    model: nn.Module,
    loader: Iterable,
    time_config: int | Sequence[int],
    max_batches: int | None = None,
) -> list[LayerActivity]:
    """Average spikes per sample and firing rate of every spiking layer at ``time_config``."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    totals: dict[str, float] = {}
    shape: dict[str, tuple[int, int]] = {}
    samples = 0
    try:
        with recording(model) as layers:
            if not layers:
                raise InputError("model has no spiking layers to record (expected flexsnn LIF/IF neurons)")
            for i, (x, _) in enumerate(loader):
                if max_batches is not None and i >= max_batches:
                    break
                model(model_input(x.to(device), model), time_config=time_config)
                samples += x.shape[0]
                for name, m in layers:
                    totals[name] = totals.get(name, 0.0) + float(m.last_spike_count)
                    shape[name] = (int(m.last_num_neurons), int(m.last_time_steps))
    finally:
        model.train(was_training)
    if samples == 0:
        raise InputError("loader yielded no samples; expected a non-empty split")
    rows = []
    for name, _ in layers:
        neurons, steps = shape[name]
        per_sample = totals[name] / samples
        rows.append(LayerActivity(name, neurons, steps, per_sample, per_sample / (neurons * steps)))
    return rows
