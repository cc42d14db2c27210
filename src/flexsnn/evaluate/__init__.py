"""Evaluation: accuracy over T and per-stage TimeConfigs, spike statistics, reports."""
from flexsnn.evaluate.activity import LayerActivity, recording, spike_stats, spiking_layers
from flexsnn.evaluate.report import (
    format_table,
    plot_accuracy_vs_t,
    results_from_sweep,
    write_results,
)
from flexsnn.evaluate.sweep import accuracy_at, evaluate_config, sweep_configs, sweep_uniform

__all__ = [
    "LayerActivity", "accuracy_at", "evaluate_config", "format_table", "plot_accuracy_vs_t",
    "recording", "results_from_sweep", "spike_stats", "spiking_layers", "sweep_configs",
    "sweep_uniform", "write_results",
]
