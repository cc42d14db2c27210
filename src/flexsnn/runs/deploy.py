"""Deployed runs: the bias-free fine-tune of a trained run folder, and the whole comparison.

A deployed run folder holds ``config.json`` (the source run's spec plus a ``deploy``
section: the recipe and the time-stepped accuracy at its T) and ``model.safetensors`` (the
folded weights, no BN entries); :func:`flexsnn.runs.load_deployed` rebuilds it. The library
functions underneath work on models and loaders: :func:`flexsnn.deploy.finetune_bias_free`,
:func:`flexsnn.deploy.evaluate_deployment`.
"""

from __future__ import annotations

import copy
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from flexsnn.data import DigitsDVS
from flexsnn.data.augment import FRAME_AUGMENTATIONS
from flexsnn.data.event_datasets import EVENT_DATASETS
from flexsnn.deploy import remove_biases
from flexsnn.deploy.compare import DeploymentMetrics, evaluate_deployment, format_deployment_table
from flexsnn.deploy.finetune import DEPLOY_METHODS, deployment_sampler, finetune_bias_free
from flexsnn.errors import ConfigError, InputError, check_choice, check_positive_int
from flexsnn.evaluate import accuracy_at
from flexsnn.io import read_yaml, write_json
from flexsnn.runs.folder import check_run_dir, claim_run_dir, is_deployed, load_run
from flexsnn.runs.memory import check_memory, check_sample_num, footprint_of
from flexsnn.runs.spec import RunSpec, build_loaders, resolve_device
from flexsnn.runs.train import train_run
from flexsnn.train import TrainOptions, save_model
from flexsnn.train.checkpoint import CONFIG_FILE
from flexsnn.train.loop import check_resume

__all__ = [
    "FINETUNE_KEYS",
    "DeploymentComparison",
    "check_event_dataset",
    "compare_deployment",
    "load_event_split",
    "prepare_deployment",
    "read_finetune_section",
]

#: Keys of a recipe's ``finetune:`` section: the keyword arguments of :func:`prepare_deployment` they set.
FINETUNE_KEYS = (
    "method",
    "t",
    "t_left",
    "t_right",
    "pin",
    "sample_num",
    "epochs",
    "batch_size",
    "optimizer",
    "lr",
    "momentum",
    "weight_decay",
    "schedule",
    "schedule_epochs",
    "augment",
    "seed",
)


#: Fine-tunes :func:`compare_deployment` can compare: name -> (method, pin).
COMPARISON_METHODS = {"sdt": ("sdt", "input"), "mtt": ("mtt", "input"), "mtt_stage1": ("mtt", "stage1")}


def read_finetune_section(path: str | os.PathLike) -> dict[str, Any]:
    """The ``finetune:`` section of a deployment recipe (recipes/*_deploy.yaml) as keyword
    arguments of :func:`prepare_deployment`; ConfigError if the file has none or an unknown key."""
    data = read_yaml(path, "recipe")
    if not isinstance(data, dict) or not isinstance(data.get("finetune"), dict):
        raise ConfigError(f"--config {path} has no `finetune:` mapping (a deployment recipe, recipes/*_deploy.yaml)")
    section = dict(data["finetune"])
    unknown = sorted(set(section) - set(FINETUNE_KEYS))
    if unknown:
        raise ConfigError(f"recipe {path}: unknown finetune key(s) {unknown}; known keys: {list(FINETUNE_KEYS)}")
    return section


def prepare_deployment(
    run: str | os.PathLike,
    out: str | os.PathLike,
    method: str = "mtt",
    t: int | None = None,
    t_left: int | None = None,
    t_right: int = 0,
    sample_num: int | None = None,
    epochs: int = 3,
    optimizer: str = "adamw",
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    seed: int = 1000,
    device: str = "cpu",
    batch_size: int | None = None,
    momentum: float = 0.9,
    schedule: str = "cosine",
    schedule_epochs: int = 0,
    augment: bool | str | None = None,
    progress: bool = True,
    loaders: tuple | None = None,
    overwrite: bool = False,
    resume: bool = False,
    pin: str = "input",
    checkpoint_every_steps: int = 0,
    on_start: Callable[[], None] | None = None,
) -> tuple[nn.Module, dict[str, Any]]:
    """`flexsnn deploy prepare`: bias removal + fine-tune of a trained run into a deployed run.

    run: a run folder written by ``flexsnn train``. out: the deployed run folder. t: the
    input T (default: the run's t_max). Frames are binned at ``t``. pin (MTT): ``"input"``
    (default, the paper's authors' scheme: every stage drawn from ``[t - t_left, t + t_right]``)
    or ``"stage1"`` (stage 1 kept at ``t`` too); see :func:`flexsnn.deploy.deployment_sampler`.
    sample_num: passes per iteration, MTT configs (default 3) or SDT identical passes (default
    1; the paper authors' script makes 3). Returns the bias-free
    model and the saved config (``config["deploy"]`` holds the recipe and the time-stepped
    accuracy at ``t``).
    Optimizer settings: ``optimizer`` (sgd | adamw), ``lr``, ``momentum`` (SGD's; 0 = plain
    SGD), ``weight_decay``, ``schedule`` (cosine | constant) and ``schedule_epochs`` (the
    cosine horizon; 0 = ``epochs``). ``batch_size`` and ``augment`` (a name of
    :data:`flexsnn.data.augment.FRAME_AUGMENTATIONS`, True or False) default to the base run's.

    The fine-tune checkpoints into ``out`` after every epoch and every
    ``checkpoint_every_steps`` steps; ``resume=True`` continues a killed one exactly as
    ``flexsnn train --resume`` does (checked against the checkpoint before anything is
    written). ``out`` is locked while it is written. ``on_start()`` is called once every check
    has passed and ``out`` is claimed, just before the fine-tune starts (the CLI prints its
    opening line there, so a refused request prints only its error).
    """
    resolve_device(device)
    check_choice(method, "method", DEPLOY_METHODS)
    check_positive_int(epochs, "epochs")
    if is_deployed(run):
        raise InputError(f"--run {run} is already a deployed run; pass the run folder written by `flexsnn train`")
    base, config = load_run(run, device=device)
    spec = RunSpec.from_config(config, str(Path(run) / CONFIG_FILE))
    t = spec.t_max if t is None else check_positive_int(t, "t")
    spec.data_t = t  # frames binned at the deployment T
    spec.device = device
    if batch_size is not None:
        spec.batch_size = check_positive_int(batch_size, "batch_size")
    if augment is not None:
        if not isinstance(augment, bool) and augment not in FRAME_AUGMENTATIONS:
            raise InputError(f"augment must be True, False or one of {sorted(FRAME_AUGMENTATIONS)}, got {augment!r}")
        spec.augment = augment
    options = TrainOptions(
        epochs=epochs,
        optimizer=optimizer,
        lr=lr,
        momentum=momentum,
        weight_decay=weight_decay,
        schedule=schedule,
        schedule_epochs=schedule_epochs,
        seed=seed,
        device=device,
        checkpoint_every_steps=checkpoint_every_steps,
    )
    sampler = deployment_sampler(method, t, t_left, t_right, sample_num, pin)
    check_run_dir(out, resume, overwrite, what="flexsnn deploy prepare")  # before the work
    if method == "mtt":
        check_sample_num(sample_num)
    t_top = t + (t_right if method == "mtt" else 0)  # the largest stage T drawn
    option = f"--R {t_right}" if t_top > 2 * t else f"--t {t}"
    check_memory(  # before the frames are binned at t
        footprint_of(base), [(option, (t_top,), t)], spec.batch_size, training=True, optimizer=optimizer, device=device
    )
    train_loader, test_loader = loaders if loaders is not None else build_loaders(spec)
    recipe = {
        "source_run": str(run),
        "method": method,
        "t": t,
        "t_left": t_left if t_left is not None else t - 1,
        "t_right": t_right,
        "sample_num": sampler.sample_num,
        "pin": pin,
        "sampler": sampler.describe(),
        "options": asdict(options),
        "batch_size": spec.batch_size,
        "augment": spec.augment,
        "bias_free": True,
        "batchnorm_folded": True,
    }
    with claim_run_dir(out, resume, overwrite, what="flexsnn deploy prepare") as out:
        if resume:  # a refused resume leaves the folder as it was
            check_resume(out, options, sampler)
        if on_start is not None:
            on_start()
        model = copy.deepcopy(base)
        write_json(out / "deploy_spec.json", recipe)
        history = finetune_bias_free(
            model,
            train_loader,
            method,
            t,
            t_left,
            t_right,
            sample_num,
            options,
            run_dir=out,
            resume=resume,
            progress=progress,
            pin=pin,
        )
        recipe["history"] = history
        recipe["accuracy_t"] = accuracy_at(model, test_loader, t)
        new_config = {"run": asdict(spec), "sampler": sampler.describe(), "deploy": recipe}
        save_model(out, model, new_config)
    return model, {**new_config, "model": getattr(model, "model_spec", None)}


def check_event_dataset(dataset: str) -> str:
    """``dataset`` if it names an event dataset :func:`load_event_split` reads, else InputError."""
    if dataset != "digits_dvs" and dataset not in EVENT_DATASETS:
        choices = ["digits_dvs", *sorted(EVENT_DATASETS)]
        raise InputError(f"dataset must be one of {', '.join(map(repr, choices))}, got {dataset!r}")
    return dataset


def load_event_split(
    dataset: str, split: str = "test", root: str | None = None, max_samples: int | None = None
) -> tuple[list[np.ndarray], list[int], tuple[int, int, int]]:
    """Event streams, labels and sensor size of a split of a Tonic-style event dataset.

    ``digits_dvs`` is the embedded default; the others are those of
    :data:`flexsnn.data.event_datasets.EVENT_DATASETS` (they need their files on disk).
    """
    if split not in ("train", "test"):
        raise InputError(f"split must be 'train' or 'test', got {split!r}")
    check_event_dataset(dataset)
    if dataset == "digits_dvs":
        ds = DigitsDVS(root=root, train=split == "train")
    else:
        ds = EVENT_DATASETS[dataset](root=root, train=split == "train")
    n = len(ds) if max_samples is None else min(len(ds), check_positive_int(max_samples, "max_samples"))
    events, labels = [], []
    for i in range(n):
        ev, y = ds[i]
        events.append(ev)
        labels.append(int(y))
    return events, labels, tuple(ds.sensor_size)


@dataclass
class DeploymentComparison:
    """Result of :func:`compare_deployment`: one :class:`DeploymentMetrics` per fine-tune method."""

    rows: list[DeploymentMetrics]
    base_accuracy: float  # the SDT-trained model with biases/BN, time-stepped at T
    bias_removed_accuracy: float  # after bias removal, before any fine-tune
    config: dict[str, Any] = field(default_factory=dict)

    def format_table(self) -> str:
        return format_deployment_table(self.rows)

    def as_dict(self) -> dict[str, Any]:
        return {
            "rows": [r.as_dict() for r in self.rows],
            "base_accuracy": self.base_accuracy,
            "bias_removed_accuracy": self.bias_removed_accuracy,
            "config": self.config,
        }


def compare_deployment(
    out: str | Path,
    dataset: str = "digits_dvs",
    model: str = "nmnist_net",
    t: int = 10,
    base_epochs: int = 6,
    finetune_epochs: int = 3,
    methods: Sequence[str] = ("sdt", "mtt"),
    seed: int = 1000,
    device: str = "cpu",
    base_run: str | Path | None = None,
    max_test_samples: int | None = None,
    base_lr: float = 0.1,
    finetune_lr: float = 0.01,
    batch_size: int = 64,
    data_root: str | None = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> DeploymentComparison:
    """The event-driven comparison on ``dataset`` (default: the embedded DigitsDVS events).

    1. Base model: ``base_run`` (a run folder) or a new time-stepped SDT run of ``model`` at
       ``t`` for ``base_epochs`` (written to ``out/base``).
    2. For each method in ``methods`` (``"sdt"``, ``"mtt"``: input at ``t``, every stage
       from [1, t]; ``"mtt_stage1"``: stage 1 at ``t`` too): a copy of the base goes through
       bias removal and the bias-free fine-tune (``finetune_epochs``), written to
       ``out/deploy_<method>``.
    3. Each fine-tuned model is measured by :func:`evaluate_deployment` on the test split's
       events. Writes ``out/deploy_results.json`` and returns the comparison.
    """
    t = check_positive_int(t, "t")
    out = Path(out)
    start = time.perf_counter()
    spec = RunSpec(
        dataset=dataset,
        model=model,
        method="sdt",
        t_min=1,
        t_max=t,
        epochs=base_epochs,
        seed=seed,
        device=device,
        lr=base_lr,
        batch_size=batch_size,
        data_root=data_root,
    )
    loaders = build_loaders(spec)
    if base_run is None:
        base_run = out / "base"
        log(f"[base] training {model} time-stepped with SDT at T={t} for {base_epochs} epochs -> {base_run}")
        train_run(spec, base_run, overwrite=True, progress=progress, loaders=loaders)
    base, _ = load_run(base_run, device=device)
    base_acc = accuracy_at(base, loaders[1], t)
    stripped = remove_biases(copy.deepcopy(base))
    removed_acc = accuracy_at(stripped, loaders[1], t)
    log(
        f"[base] time-stepped accuracy at T={t}: {100 * base_acc:.2f}%; after bias removal (no fine-tune): "
        f"{100 * removed_acc:.2f}%"
    )
    events, labels, sensor = load_event_split(dataset, "test", data_root, max_test_samples)
    rows = []
    what = {
        "sdt": f" at T={t}",
        "input": f" (input at T={t}, every stage from [1, {t}])",
        "stage1": f" (input and stage 1 at T={t}, later stages from [1, {t}])",
    }
    for name in methods:
        check_choice(name, "methods[]", list(COMPARISON_METHODS))
        method, pin = COMPARISON_METHODS[name]
        label = name.upper().replace("_STAGE1", "/stage1")
        log(f"[{label}] bias-free fine-tune for {finetune_epochs} epochs" + what["sdt" if method == "sdt" else pin])
        tuned, _ = prepare_deployment(
            base_run,
            out / f"deploy_{name}",
            method=method,
            t=t,
            epochs=finetune_epochs,
            lr=finetune_lr,
            seed=seed,
            device=device,
            progress=progress,
            loaders=loaders,
            overwrite=True,
            pin=pin,
        )
        log(f"[{label}] simulating {len(events)} test samples event-driven")
        rows.append(evaluate_deployment(tuned, events, labels, sensor, t, label=label))
    result = DeploymentComparison(
        rows,
        base_acc,
        removed_acc,
        config={
            "dataset": dataset,
            "model": model,
            "t": t,
            "base_epochs": base_epochs,
            "finetune_epochs": finetune_epochs,
            "seed": seed,
            "base_run": str(base_run),
            "seconds": time.perf_counter() - start,
        },
    )
    write_json(out / "deploy_results.json", result.as_dict())
    return result
