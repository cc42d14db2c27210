"""Run folders: refuse to write over a run by accident, load a trained or deployed run.

A trained run (``flexsnn train``) and a deployed one (``flexsnn deploy prepare``) hold the
same files (:mod:`flexsnn.train.checkpoint`); a deployed run's ``config.json`` also has a
``deploy`` section, and its weights are those of the model with BN folded away and biases
frozen at zero, so its architecture is adapted before the weights load.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from flexsnn.deploy import freeze_biases, strip_batchnorm
from flexsnn.errors import CheckpointError
from flexsnn.io import read_json
from flexsnn.train import load_model
from flexsnn.train.checkpoint import CHECKPOINT_FILE, CONFIG_FILE, MODEL_FILE

__all__ = ["is_deployed", "load_deployed", "load_run", "prepare_run_dir"]


def prepare_run_dir(run_dir: str | os.PathLike, resume: bool, overwrite: bool = False) -> Path:
    """Refuse to write over an existing run unless resuming (or explicitly overwriting)."""
    run_dir = Path(run_dir)
    existing = [p for p in (CONFIG_FILE, MODEL_FILE, CHECKPOINT_FILE) if (run_dir / p).exists()]
    if resume:
        if not (run_dir / CHECKPOINT_FILE).exists():
            raise CheckpointError(f"--resume given but {run_dir / CHECKPOINT_FILE} does not exist")
    elif existing and not overwrite:
        raise CheckpointError(
            f"run folder {run_dir} already holds a run ({', '.join(existing)}); "
            "pass --resume to continue it or choose another --out"
        )
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir


def is_deployed(run_dir: str | os.PathLike) -> bool:
    """Whether ``run_dir`` holds a deployed run (its config.json has a ``deploy`` section)."""
    path = Path(run_dir) / CONFIG_FILE
    return path.is_file() and "deploy" in read_json(path, what="run config")


def load_deployed(run_dir: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild a deployed (bias-free, BN-folded) run written by :func:`flexsnn.runs.prepare_deployment`."""
    run_dir = Path(run_dir)
    if run_dir.is_dir() and not is_deployed(run_dir):
        raise CheckpointError(
            f"{run_dir} is not a deployed run (no 'deploy' section in {CONFIG_FILE}); "
            "run `flexsnn deploy prepare --run RUN --out OUT` first"
        )
    model, config = load_model(run_dir, device, prepare=strip_batchnorm)
    freeze_biases(model)  # raises if a saved bias is not zero
    return model, config


def load_run(run_dir: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """The model and config of any run folder: deployed via :func:`load_deployed`, trained via
    :func:`flexsnn.train.load_model`."""
    if is_deployed(run_dir):
        return load_deployed(run_dir, device)
    return load_model(run_dir, device)
