"""Whole runs on run folders: what the ``flexsnn`` verbs call, usable as well from a notebook.

Train per a :class:`RunSpec` into a folder, then evaluate, search, early-exit or deploy
that folder; each function rebuilds the run's model and loaders from the folder, then calls
the library functions of :mod:`flexsnn.train`, :mod:`flexsnn.evaluate` and
:mod:`flexsnn.deploy`, which work on models and loaders only.
"""

from flexsnn.runs.deploy import (
    DeploymentComparison,
    compare_deployment,
    load_event_split,
    prepare_deployment,
    read_finetune_section,
)
from flexsnn.runs.evaluate import early_exit_run, evaluate_run, rebinned_sweep, search_run
from flexsnn.runs.folder import (
    check_output_dir,
    check_run_dir,
    claim_output_dir,
    claim_run_dir,
    holding_run_locks,
    is_deployed,
    load_deployed,
    load_run,
    prepare_run_dir,
    run_folder_lock,
)
from flexsnn.runs.spec import RunSpec, build_loaders, resolve_device, with_dataset_defaults
from flexsnn.runs.train import train_run

__all__ = [
    "RunSpec",
    "build_loaders",
    "resolve_device",
    "with_dataset_defaults",
    "is_deployed",
    "load_deployed",
    "load_run",
    "prepare_run_dir",
    "check_run_dir",
    "claim_run_dir",
    "check_output_dir",
    "claim_output_dir",
    "holding_run_locks",
    "run_folder_lock",
    "train_run",
    "evaluate_run",
    "search_run",
    "early_exit_run",
    "rebinned_sweep",
    "prepare_deployment",
    "compare_deployment",
    "DeploymentComparison",
    "load_event_split",
    "read_finetune_section",
]
