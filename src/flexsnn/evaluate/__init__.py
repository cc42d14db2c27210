"""Evaluation: accuracy over T and per-stage TimeConfigs, spike statistics, reports."""

from flexsnn.evaluate.activity import LayerActivity, recording, spike_stats, spiking_layers
from flexsnn.evaluate.cost import (
    E_AC_PJ,
    E_MAC_PJ,
    LayerOps,
    OpCounter,
    OpCounts,
    accuracy_and_ops,
    count_ops,
    energy_pj,
)
from flexsnn.evaluate.early_exit import EarlyExitResult, early_exit_sweep, plot_early_exit
from flexsnn.evaluate.pareto import (
    ConfigResult,
    SearchResult,
    pareto_front,
    plot_pareto,
    search,
    search_configs,
)
from flexsnn.evaluate.report import (
    format_table,
    plot_accuracy_vs_t,
    plot_accuracy_vs_t_panels,
    results_from_sweep,
    write_results,
)
from flexsnn.evaluate.sweep import accuracy_at, evaluate_config, sweep_configs, sweep_uniform

__all__ = [
    "E_AC_PJ",
    "E_MAC_PJ",
    "LayerOps",
    "OpCounter",
    "OpCounts",
    "accuracy_and_ops",
    "count_ops",
    "energy_pj",
    "EarlyExitResult",
    "early_exit_sweep",
    "plot_early_exit",
    "ConfigResult",
    "SearchResult",
    "pareto_front",
    "plot_pareto",
    "search",
    "search_configs",
    "LayerActivity",
    "accuracy_at",
    "evaluate_config",
    "format_table",
    "plot_accuracy_vs_t",
    "plot_accuracy_vs_t_panels",
    "recording",
    "results_from_sweep",
    "spike_stats",
    "spiking_layers",
    "sweep_configs",
    "sweep_uniform",
    "write_results",
]
