"""RunSpec: everything a training run needs, and what it implies (device, model kwargs, loaders).

A RunSpec is JSON/YAML-able and stored in the run's ``config.json``, so every later step on
the run folder (evaluate, search, early exit, deploy) rebuilds the same data from it.
"""

from __future__ import annotations

import dataclasses
import inspect
from dataclasses import dataclass, field
from typing import Any

import torch

from flexsnn.data.augment import FRAME_AUGMENTATIONS
from flexsnn.data.loaders import check_model_input, dataset_model_kwargs, make_loaders
from flexsnn.errors import CheckpointError, ConfigError, InputError
from flexsnn.io import Bool, Dict, Either, Float, Int, MapOf, Nullable, Str, check_schema, is_import_path
from flexsnn.models import MODELS, build_model, model_builder
from flexsnn.train import METHODS, TrainOptions, default_sample_num
from flexsnn.train.loop import AMP_MODES

__all__ = ["RUN_SPEC_SCHEMA", "RunSpec", "build_loaders", "resolve_device", "with_dataset_defaults"]


_POSITIVE = Int(min=1)
RUN_SPEC_SCHEMA = Dict(
    {
        "dataset?": Str(),
        "model?": Str(),
        "model_kwargs?": MapOf(),
        "method?": Str(choices=METHODS),
        "t_min?": _POSITIVE,
        "t_max?": _POSITIVE,
        "sample_num?": Nullable(_POSITIVE),
        "group_block_num?": _POSITIVE,
        "first_stage_t?": Nullable(_POSITIVE),
        "data_t?": Nullable(_POSITIVE),
        "batch_size?": _POSITIVE,
        "epochs?": _POSITIVE,
        "optimizer?": Str(choices=("sgd", "adamw")),
        "lr?": Float(min=0, min_exclusive=True),
        "momentum?": Float(min=0, max=1),
        "weight_decay?": Float(min=0),
        "schedule?": Str(choices=("cosine", "constant")),
        "seed?": Int(min=0, max=2**63 - 1),
        "device?": Str(),
        "amp?": Str(choices=AMP_MODES),
        "calib_batches?": _POSITIVE,
        "num_workers?": Int(min=0),
        "data_root?": Nullable(Str()),
        "augment?": Either(Bool(), Str(choices=sorted(FRAME_AUGMENTATIONS))),
        "autoaugment?": Bool(),
        "checkpoint_every_steps?": Int(min=0),
        "max_steps_per_epoch?": Int(min=0),
        "sync_bn?": Bool(),
    }
)


@dataclass
class RunSpec:
    """Everything a training run needs (JSON/YAML-able; stored in the run's config.json)."""

    dataset: str = "digits_dvs"
    model: str = "digits_conv"
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    method: str = "mtt"  # sdt | nmt | mtt
    t_min: int = 1
    t_max: int = 6
    sample_num: int | None = None  # passes per iteration (SDT, MTT); None: 3 for MTT, 1 for SDT
    group_block_num: int = 1
    first_stage_t: int | None = None
    data_t: int | None = None  # frames are binned at this T (default t_max) and resampled by the first TTM
    batch_size: int = 64
    epochs: int = 10
    optimizer: str = "sgd"
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: str = "cosine"
    seed: int = 1000
    device: str = "cpu"
    amp: str = "none"
    calib_batches: int = 10
    num_workers: int = 0
    data_root: str | None = None  # real datasets: the folder with their files (read only); digits_dvs: its cache
    # event datasets: True (flips + rolls) or a protocol of flexsnn.data.augment.FRAME_AUGMENTATIONS;
    # static ones always augment
    augment: bool | str = False
    autoaugment: bool = False  # cifar10 / cifar100: add AutoAugment to the training pipeline
    checkpoint_every_steps: int = 0
    max_steps_per_epoch: int = 0  # 0: whole epochs; >0 cuts epochs short (smoke runs)
    sync_bn: bool = False  # DDP on CUDA: SyncBatchNorm while training (default: per-rank BN stats)

    def __post_init__(self) -> None:
        check_schema(dataclasses.asdict(self), RUN_SPEC_SCHEMA, "run options")
        if self.sample_num is None:  # stored resolved, so the run's record says what it did
            self.sample_num = default_sample_num(self.method)

    @classmethod
    def from_dict(cls, data: Any, source: str = "run options") -> RunSpec:
        """A RunSpec from a mapping of its fields (a config file's ``run`` section); types and
        ranges are checked with errors naming ``source`` (the file) and the key."""
        known = {f.name for f in dataclasses.fields(cls)}
        if isinstance(data, dict):
            unknown = sorted(map(str, set(data) - known))
            if unknown:
                raise ConfigError(f"{source}: unknown run option(s) {unknown}; known options: {sorted(known)}")
        check_schema(data, RUN_SPEC_SCHEMA, source)
        return cls(**data)

    @classmethod
    def from_config(cls, config: dict[str, Any], source: str) -> RunSpec:
        """The RunSpec stored in a run's ``config.json`` / ``run_spec.json`` (``source``)."""
        if not isinstance(config, dict) or "run" not in config:
            raise CheckpointError(
                f"{source}: key 'run' is missing (the run's options); it was not written by `flexsnn train`"
            )
        if not isinstance(config["run"], dict):
            raise CheckpointError(f"{source}: key 'run' must be a mapping of run options, got {config['run']!r:.60}")
        try:
            return cls.from_dict(config["run"], source)
        except ConfigError as exc:
            raise CheckpointError(str(exc).replace(f"{source}: key '", f"{source}: key 'run.")) from None

    def train_options(self) -> TrainOptions:
        return TrainOptions(
            epochs=self.epochs,
            optimizer=self.optimizer,
            lr=self.lr,
            momentum=self.momentum,
            weight_decay=self.weight_decay,
            schedule=self.schedule,
            seed=self.seed,
            device=self.device,
            amp=self.amp,
            checkpoint_every_steps=self.checkpoint_every_steps,
            max_steps_per_epoch=self.max_steps_per_epoch,
        )

    @property
    def frames_t(self) -> int:
        return self.data_t if self.data_t is not None else self.t_max


def resolve_device(device: str) -> str:
    """``device`` if it names a usable device ("cpu", "cuda[:N]"), else InputError."""
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise InputError(f"device {device!r} requested but CUDA is not available; use --device cpu")
    if not (device == "cpu" or device.startswith("cuda")):
        raise InputError(f"device must be 'cpu' or 'cuda[:N]', got {device!r}")
    return device


def with_dataset_defaults(spec: RunSpec) -> RunSpec:
    """``spec`` with the dataset's class count / input shape filled into the model kwargs
    the model accepts; kwargs the user gave win."""
    if spec.model not in MODELS and not is_import_path(spec.model):
        return spec  # build_model raises the clear unknown-model error later
    accepted = inspect.signature(model_builder(spec.model)).parameters
    defaults = dataset_model_kwargs(spec.dataset, accepted)
    return dataclasses.replace(spec, model_kwargs={**defaults, **spec.model_kwargs})


def build_loaders(spec: RunSpec, shuffle_seed: int | None = None):
    """``(train_loader, test_loader)`` of ``spec.dataset``; first checks that ``spec.model``
    takes what the dataset yields (input kind, shape, classes), before any data is read."""
    try:
        with torch.device("meta"):  # only the model's input kind / shape / head are read
            net = build_model(spec.model, **spec.model_kwargs)
    except (RuntimeError, NotImplementedError):  # a model that cannot be built without data
        net = None
    if net is not None:
        check_model_input(spec.dataset, net)
    return make_loaders(
        spec.dataset,
        n_time_bins=spec.frames_t,
        batch_size=spec.batch_size,
        seed=spec.seed if shuffle_seed is None else shuffle_seed,
        root=spec.data_root,
        num_workers=spec.num_workers,
        autoaugment=spec.autoaugment,
        augment=spec.augment if isinstance(spec.augment, str) else (True if spec.augment else None),
    )
