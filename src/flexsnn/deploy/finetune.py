"""The bias-removal fine-tune (SDT or MTT) and deployed run folders.

After :func:`flexsnn.deploy.remove_biases` (biases and BN means zeroed, BN folded into the
weights, biases frozen), the network is fine-tuned with its biases held at zero (PAPER.md,
"Deployment path", step 2):

- SDT: every stage at the input's ``T`` on every iteration;
- MTT: ``sample_num`` configurations per iteration; the first stage stays at the input's
  ``T`` and every other stage draws its T uniformly from ``[T - t_left, T + t_right]``
  (clipped at 1). The paper's event-driven recipe is ``t_left = T - 1, t_right = 0``, i.e.
  other stages from ``[1, T]`` (the default).

At the end the model is checked again (:func:`flexsnn.deploy.check_bias_free`: no BN came
back, every bias is still zero). A deployed run folder holds ``config.json`` (the source
run's spec plus a ``deploy`` section) and ``model.safetensors`` (the folded weights, no BN
entries); :func:`load_deployed` rebuilds it.
"""
from __future__ import annotations

import copy
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any, Iterable

import torch
from torch import nn

from flexsnn.errors import CheckpointError, InputError, check_choice, check_positive_int

__all__ = ["DEPLOY_METHODS", "deployment_sampler", "finetune_bias_free", "prepare_deployment", "load_deployed"]

DEPLOY_METHODS = ("sdt", "mtt")


def deployment_sampler(method: str, t: int, t_left: int | None = None, t_right: int = 0, sample_num: int = 3):
    """The sampler of the bias-free fine-tune: SDT at ``t``, or MTT with stage 1 pinned to ``t``.

    MTT draws the other stages from ``[max(1, t - t_left), t + t_right]``; ``t_left``
    defaults to ``t - 1`` (so ``[1, t]`` with ``t_right = 0``).
    """
    from flexsnn.train import MTTSampler, SDTSampler

    check_choice(method, "method", DEPLOY_METHODS)
    t = check_positive_int(t, "t")
    if method == "sdt":
        return SDTSampler(t)
    t_left = t - 1 if t_left is None else t_left
    if isinstance(t_left, bool) or not isinstance(t_left, int) or t_left < 0:
        raise InputError(f"t_left (L) must be an int >= 0, got {t_left!r}")
    if isinstance(t_right, bool) or not isinstance(t_right, int) or t_right < 0:
        raise InputError(f"t_right (R) must be an int >= 0, got {t_right!r}")
    return MTTSampler(t_min=max(1, t - t_left), t_max=t + t_right, sample_num=sample_num, first_stage_t=t)


def finetune_bias_free(
    model: nn.Module,
    train_loader: Iterable,
    method: str = "mtt",
    t: int = 10,
    t_left: int | None = None,
    t_right: int = 0,
    sample_num: int = 3,
    options: Any = None,
    run_dir: str | os.PathLike | None = None,
    resume: bool = False,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Bias removal (if not done yet) then the bias-free fine-tune of ``model``, in place.

    options: a :class:`flexsnn.train.TrainOptions` (default: 3 epochs of AdamW, lr 1e-3, no
    weight decay, cosine). run_dir: where :func:`flexsnn.train.fit` checkpoints (resumable).
    Returns the per-epoch history. Afterwards the model is still bias-free (checked).
    """
    from flexsnn.deploy.bias_removal import check_bias_free, fold_batchnorm, remove_biases
    from flexsnn.train import TrainOptions, fit

    sampler = deployment_sampler(method, t, t_left, t_right, sample_num)
    options = options or TrainOptions(epochs=3, optimizer="adamw", lr=1e-3, weight_decay=0.0)
    remove_biases(model)
    history = fit(model, train_loader, sampler, options, run_dir=run_dir, resume=resume, progress=progress)
    fold_batchnorm(model)  # "fold again": a no-op unless something added BN back
    check_bias_free(model)
    return history


def prepare_deployment(
    run: str | os.PathLike,
    out: str | os.PathLike,
    method: str = "mtt",
    t: int | None = None,
    t_left: int | None = None,
    t_right: int = 0,
    sample_num: int = 3,
    epochs: int = 3,
    optimizer: str = "adamw",
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    seed: int = 1000,
    device: str = "cpu",
    batch_size: int | None = None,
    progress: bool = True,
    loaders: tuple | None = None,
    overwrite: bool = False,
    resume: bool = False,
) -> tuple[nn.Module, dict[str, Any]]:
    """`flexsnn deploy prepare`: bias removal + fine-tune of a trained run into a deployed run.

    run: a run folder written by ``flexsnn train``. out: the deployed run folder. t: the
    input T (default: the run's t_max). Frames are binned at ``t``. Returns the bias-free
    model and the saved config (``config["deploy"]`` holds the recipe and the time-stepped
    accuracy at ``t``).
    """
    from flexsnn.evaluate import accuracy_at
    from flexsnn.io import write_json
    from flexsnn.train import TrainOptions, load_model, save_model
    from flexsnn.workflow import RunSpec, build_loaders, prepare_run_dir, resolve_device

    resolve_device(device)
    check_choice(method, "method", DEPLOY_METHODS)
    check_positive_int(epochs, "epochs")
    from flexsnn.io import read_json
    from flexsnn.train.checkpoint import CONFIG_FILE

    if (Path(run) / CONFIG_FILE).is_file() and "deploy" in read_json(Path(run) / CONFIG_FILE, what="run config"):
        raise InputError(f"--run {run} is already a deployed run; pass the run folder written by `flexsnn train`")
    base, config = load_model(run, device=device)
    spec = RunSpec.from_dict(config["run"])
    t = spec.t_max if t is None else check_positive_int(t, "t")
    spec.data_t = t  # frames binned at the deployment T
    spec.device = device
    if batch_size is not None:
        spec.batch_size = check_positive_int(batch_size, "batch_size")
    out = prepare_run_dir(out, resume=resume, overwrite=overwrite)
    train_loader, test_loader = loaders if loaders is not None else build_loaders(spec)
    options = TrainOptions(epochs=epochs, optimizer=optimizer, lr=lr, weight_decay=weight_decay, seed=seed,
                           device=device)
    model = copy.deepcopy(base)
    sampler = deployment_sampler(method, t, t_left, t_right, sample_num)
    recipe = {
        "source_run": str(run), "method": method, "t": t, "t_left": t_left if t_left is not None else t - 1,
        "t_right": t_right, "sample_num": sample_num, "sampler": sampler.describe(), "options": asdict(options),
        "bias_free": True, "batchnorm_folded": True,
    }
    write_json(out / "deploy_spec.json", recipe)
    history = finetune_bias_free(model, train_loader, method, t, t_left, t_right, sample_num, options,
                                 run_dir=out, resume=resume, progress=progress)
    recipe["history"] = history
    recipe["accuracy_t"] = accuracy_at(model, test_loader, t)
    new_config = {"run": asdict(spec), "sampler": sampler.describe(), "deploy": recipe}
    save_model(out, model, new_config)
    return model, {**new_config, "model": getattr(model, "model_spec", None)}


def load_deployed(run_dir: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild a deployed (bias-free, BN-folded) run written by :func:`prepare_deployment`."""
    from flexsnn.io import read_json
    from flexsnn.train.checkpoint import CONFIG_FILE, load_model

    run_dir = Path(run_dir)
    if run_dir.is_dir() and "deploy" not in read_json(run_dir / CONFIG_FILE, what="run config"):
        raise CheckpointError(f"{run_dir} is not a deployed run (no 'deploy' section in {CONFIG_FILE}); "
                              "run `flexsnn deploy prepare --run RUN --out OUT` first")
    return load_model(run_dir, device)


def load_any(run_dir: str | os.PathLike, device: str = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """A deployed run via :func:`load_deployed`, any other run via ``flexsnn.train.load_model``."""
    from flexsnn.io import read_json
    from flexsnn.train import load_model
    from flexsnn.train.checkpoint import CONFIG_FILE

    path = Path(run_dir) / CONFIG_FILE
    if path.is_file() and "deploy" in read_json(path, what="run config"):
        return load_deployed(run_dir, device)
    return load_model(run_dir, device)
