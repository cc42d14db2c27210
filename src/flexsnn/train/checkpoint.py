"""Run folders and checkpoints: safetensors + JSON, written atomically, loaded without pickle.

A run folder holds
  config.json            everything needed to rebuild the model (model spec, sampler, training
                         options, the TimeConfig the BN stats were calibrated for)
  model.safetensors      the final weights and BN buffers
  checkpoint.safetensors the last training state (model, optimizer, RNG states) with the
                         non-tensor state (epoch, step, scheduler, history) as JSON metadata
Checkpoints are single files replaced atomically (temp file, fsync, rename), so a killed run
resumes from the last complete one; a corrupt or truncated file raises CheckpointError, it
is never treated as "no checkpoint".
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from flexsnn.errors import CheckpointError
from flexsnn.io import atomic_write, read_json, write_json
from flexsnn.models import build_model

CONFIG_FILE = "config.json"
MODEL_FILE = "model.safetensors"
CHECKPOINT_FILE = "checkpoint.safetensors"
_STATE_KEY = "flexsnn_state"
# Metadata every training checkpoint must carry (written by flexsnn.train.loop.fit).
REQUIRED_STATE_KEYS = ("train_state", "scheduler", "optimizer", "rng", "options", "sampler")


def _contiguous(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # safetensors refuses shared or non-contiguous storage; checkpoints are small enough to copy.
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in state.items()}


def save_safetensors(path: str | os.PathLike, tensors: dict[str, torch.Tensor], metadata: dict | None = None) -> None:
    """Write ``tensors`` (+ JSON ``metadata``) to ``path`` atomically and durably.

    The bytes are flushed to disk (fsync) before the temporary file replaces ``path``, so
    neither a killed process nor a power cut can leave a half-written checkpoint in place.
    """
    meta = {_STATE_KEY: json.dumps(metadata)} if metadata is not None else None
    with atomic_write(path) as tmp:
        save_file(_contiguous(tensors), str(tmp), metadata=meta)
        _fsync(tmp)
    _fsync_dir(Path(path).parent)


def _fsync(path: Path) -> None:
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


def _fsync_dir(folder: Path) -> None:
    # Makes the rename itself durable; not every platform can open a folder (Windows).
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def load_safetensors(path: str | os.PathLike, what: str) -> tuple[dict[str, torch.Tensor], dict | None]:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{what} not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{what} {path} is corrupt or truncated ({exc})") from None
    try:
        state = json.loads(meta[_STATE_KEY]) if _STATE_KEY in meta else None
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{what} {path} is corrupt (its metadata is not valid JSON: {exc})") from None
    return tensors, state


def save_model(run_dir: str | os.PathLike, model: nn.Module, config: dict[str, Any]) -> None:
    """Write ``model.safetensors`` and ``config.json`` (config must be JSON-able)."""
    run_dir = Path(run_dir)
    config = dict(config)
    config["model"] = getattr(model, "model_spec", config.get("model"))
    config["bn_calibrated_for"] = _listify(getattr(model, "bn_calibrated_for", None))
    save_safetensors(run_dir / MODEL_FILE, model.state_dict())
    write_json(run_dir / CONFIG_FILE, config)


def load_model(
    run_dir: str | os.PathLike,
    device: str | torch.device = "cpu",
    prepare: Callable[[nn.Module], Any] | None = None,
) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the model of a run folder from ``config.json`` and load its weights.

    ``prepare(model)`` runs on the freshly built model before its weights load: a deployed
    run (BN folded away) strips its BN layers there (:func:`flexsnn.runs.load_deployed`).
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CheckpointError(f"run folder not found: {run_dir} (expected a folder written by `flexsnn train`)")
    config = read_json(run_dir / CONFIG_FILE, what="run config")
    spec = config.get("model")
    if not isinstance(spec, dict) or "name" not in spec:
        raise CheckpointError(f"{run_dir / CONFIG_FILE} has no model spec ({{'name': ..., 'kwargs': ...}})")
    if "deploy" in config and prepare is None:
        raise CheckpointError(f"{run_dir} is a deployed run (BN folded away, biases frozen); "
                              "load it with flexsnn.runs.load_run or flexsnn.runs.load_deployed")
    model = build_model(spec["name"], **spec.get("kwargs", {}))
    if prepare is not None:
        prepare(model)
    tensors, _ = load_safetensors(run_dir / MODEL_FILE, what="model weights")
    load_state(model, tensors, run_dir / MODEL_FILE)
    model.to(device)
    calibrated = config.get("bn_calibrated_for")
    if calibrated is not None and hasattr(model, "mark_calibrated"):
        model.mark_calibrated(tuple(calibrated))
    return model, config


def load_state(model: nn.Module, tensors: dict[str, torch.Tensor], source: Path) -> None:
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        raise CheckpointError(f"weights in {source} do not match the model in its config ({first})") from None


def _listify(value):
    return list(value) if isinstance(value, tuple) else value


# --- training state ---------------------------------------------------------------------

def optimizer_to_flat(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    """Split an optimizer state dict into tensors (for safetensors) and JSON."""
    sd = optimizer.state_dict()
    tensors, state_json = {}, {}
    for idx, per_param in sd["state"].items():
        entry = {}
        for name, value in per_param.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim.{idx}.{name}"] = value
                entry[name] = {"tensor": f"optim.{idx}.{name}"}
            else:
                entry[name] = value
        state_json[str(idx)] = entry
    return tensors, {"state": state_json, "param_groups": sd["param_groups"]}


def optimizer_from_flat(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    state = {}
    for idx, entry in meta["state"].items():
        state[int(idx)] = {
            name: tensors[value["tensor"]] if isinstance(value, dict) and "tensor" in value else value
            for name, value in entry.items()
        }
    # JSON turned tuples (AdamW's betas, Rprop's etas) into lists; give them back as tuples.
    groups = [{k: (v if k == "params" or not isinstance(v, list) else tuple(v)) for k, v in g.items()}
              for g in meta["param_groups"]]
    optimizer.load_state_dict({"state": state, "param_groups": groups})


def save_training_state(run_dir: str | os.PathLike, model: nn.Module, optimizer, extra_tensors: dict, meta: dict) -> None:
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    opt_tensors, opt_meta = optimizer_to_flat(optimizer)
    tensors.update(opt_tensors)
    tensors.update(extra_tensors)
    save_safetensors(Path(run_dir) / CHECKPOINT_FILE, tensors, {**meta, "optimizer": opt_meta})


def load_training_state(run_dir: str | os.PathLike, model: nn.Module, optimizer) -> tuple[dict, dict]:
    """Restore model + optimizer from the run's checkpoint; return (meta, remaining tensors)."""
    path = Path(run_dir) / CHECKPOINT_FILE
    tensors, meta = load_safetensors(path, what="training checkpoint")
    if meta is None:
        raise CheckpointError(f"training checkpoint {path} has no flexsnn state metadata")
    missing = [k for k in REQUIRED_STATE_KEYS if k not in meta]
    if missing:
        raise CheckpointError(
            f"training checkpoint {path} is incomplete (metadata lacks {missing}); "
            "it was not written by this version of flexsnn's training loop"
        )
    model_state = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    load_state(model, model_state, path)
    try:
        optimizer_from_flat(optimizer, tensors, meta["optimizer"])
    except (KeyError, ValueError, TypeError) as exc:
        raise CheckpointError(f"optimizer state in {path} does not match ({exc})") from None
    rest = {k: v for k, v in tensors.items() if not k.startswith(("model.", "optim."))}
    return meta, rest
