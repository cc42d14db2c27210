"""`flexsnn train`: train one model (SDT, NMT or MTT) into a run folder."""

from __future__ import annotations

import argparse
from pathlib import Path

from flexsnn.cli.common import HelpFormatter, nonnegative_int, positive_int
from flexsnn.errors import CheckpointError, ConfigError
from flexsnn.evaluate import format_table, write_results
from flexsnn.evaluate.final_report import write_final_report
from flexsnn.io import read_json, read_yaml
from flexsnn.runs import RunSpec, evaluate_run, holding_run_locks, resolve_device, train_run
from flexsnn.train.distributed import cleanup_distributed, init_distributed

EXAMPLES = """examples:
  flexsnn train --method mtt --t-min 1 --t-max 6 --epochs 10 --out runs/mtt
  flexsnn train --method sdt --t-max 6 --out runs/sdt --device cuda
  flexsnn train --config recipes/cifar10_resnet19_mtt.yaml --seed 2000 --out runs/c10_mtt_s2000
  flexsnn train --config recipes/cifar10_resnet19_mtt.yaml --smoke --out runs/smoke   # tiny, fake data
  flexsnn train --out runs/mtt --resume        # continue a killed run
  torchrun --nproc_per_node 4 -m flexsnn train --config recipes/cifar10_resnet19_mtt.yaml --device cuda --out runs/c10"""

# CLI flag -> RunSpec field; defaults stay None so a --config file is only overridden by
# the flags actually given.
FLAGS = {
    "dataset": dict(
        help="dataset name (default digits_dvs, the embedded data) or package.module:build of a "
        "@flexsnn.data.dataset_factory function (docs/custom_data_and_models.md)"
    ),
    "model": dict(
        help="model zoo name (default digits_conv) or package.module:factory of a "
        "@flexsnn.models.model_factory function"
    ),
    "method": dict(choices=["sdt", "nmt", "mtt"], help="training method (default mtt)"),
    "t_min": dict(type=positive_int, help="smallest T drawn by NMT/MTT (default 1)"),
    "t_max": dict(type=positive_int, help="largest T (the SDT training T; default 6)"),
    "sample_num": dict(
        type=positive_int,
        help="passes per iteration, s: MTT configs (default 3) or SDT identical passes, whose "
        "gradients add up (default 1; the paper authors' script makes 3)",
    ),
    "group_block_num": dict(type=positive_int, help="consecutive stages sharing one T (default 1)"),
    "first_stage_t": dict(
        type=positive_int, help="MTT: pin stage 1 to this T (default: every stage drawn; the input keeps the data's T)"
    ),
    "data_t": dict(type=positive_int, help="bin event frames at this T (default t_max)"),
    "epochs": dict(type=positive_int, help="training epochs (default 10)"),
    "batch_size": dict(type=positive_int, help="batch size (default 64)"),
    "optimizer": dict(choices=["sgd", "adamw"], help="optimizer (default sgd)"),
    "lr": dict(type=float, help="learning rate (default 0.1)"),
    "weight_decay": dict(type=float, help="weight decay (default 5e-4)"),
    "schedule": dict(choices=["cosine", "constant"], help="LR schedule (default cosine)"),
    "seed": dict(type=nonnegative_int, help="random seed (default 1000)"),
    "device": dict(help="cpu or cuda[:N] (default cpu)"),
    "amp": dict(
        choices=["none", "auto", "bf16", "fp16"],
        help="mixed precision; auto = fp16 + GradScaler on CUDA, none on CPU (default none)",
    ),
    "calib_batches": dict(type=positive_int, help="BN calibration batches (default 10)"),
    "num_workers": dict(type=nonnegative_int, help="data loader worker processes (default 0)"),
    "data_root": dict(help="folder holding the dataset files / cache"),
    "augment": dict(
        nargs="?",
        const=True,
        metavar="PROTOCOL",
        help="train-time augmentation (CIFAR: crop/flip/Cutout; DVS: flips + rolls, or a named "
        "protocol: flip_roll5, flip_or_reverse_roll5, vflip_roll20, none)",
    ),
    "autoaugment": dict(action="store_true", help="add AutoAugment (CIFAR)"),
    "checkpoint_every_steps": dict(type=nonnegative_int, help="also checkpoint every N steps (default 0: per epoch)"),
    "max_steps_per_epoch": dict(type=nonnegative_int, help="cut every epoch after N steps (default 0: whole epochs)"),
    "sync_bn": dict(
        action="store_const",
        const=True,
        help="DDP on CUDA: SyncBatchNorm while training (default: per-rank BN statistics)",
    ),
}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train a model into a run folder",
        description=__doc__,
        epilog=EXAMPLES,
        formatter_class=HelpFormatter,
    )
    p.add_argument("--config", type=Path, help="YAML/JSON file of run options (flags override it)")
    for name, kwargs in FLAGS.items():
        p.add_argument("--" + name.replace("_", "-"), dest=name, default=None, **kwargs)
    p.add_argument("--out", type=Path, required=True, help="run folder to create")
    p.add_argument("--resume", action="store_true", help="continue from the run folder's checkpoint")
    p.add_argument(
        "--smoke", action="store_true", help="apply the recipe's `smoke:` overrides (tiny model, fake data, one step)"
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


RECIPE_KEYS = {"run", "smoke", "seeds", "name", "description", "paper", "finetune", "notes"}


def load_config_file(path: Path, smoke: bool = False) -> dict:
    """Run options from a YAML/JSON file: a plain mapping of RunSpec fields, or a recipe.

    A recipe (recipes/*.yaml) holds ``run:`` (the options), ``smoke:`` (overrides applied
    with ``smoke=True``: a tiny model on fake data for one step), and documentation keys
    (name, description, paper, seeds, finetune, notes) that are not run options.
    """
    data = read_yaml(path, what="--config file", error=ConfigError)  # YAML is a superset of JSON
    if not isinstance(data, dict):
        raise ConfigError(f"--config file {path} must hold a mapping of run options, got {type(data).__name__}")
    if "run" not in data:
        if smoke:
            raise ConfigError(f"--smoke needs a recipe with a `smoke:` section; {path} has no `run:` section")
        return data
    unknown = sorted(set(data) - RECIPE_KEYS)
    if unknown:
        raise ConfigError(f"recipe {path} has unknown top-level key(s) {unknown}; expected {sorted(RECIPE_KEYS)}")
    if data["run"] is not None and not isinstance(data["run"], dict):
        raise ConfigError(f"recipe {path}: key 'run' must be a mapping of run options, got {data['run']!r:.60}")
    options = dict(data["run"] or {})
    if smoke:
        if not isinstance(data.get("smoke"), dict):
            raise ConfigError(f"--smoke given but recipe {path} has no `smoke:` mapping of overrides")
        overrides = dict(data["smoke"])
        if "model_kwargs" in overrides:  # merged, so a smoke variant only states what shrinks
            if not isinstance(overrides["model_kwargs"], dict) or not isinstance(options.get("model_kwargs", {}), dict):
                raise ConfigError(f"recipe {path}: key 'model_kwargs' must be a mapping in `run:` and `smoke:`")
            overrides["model_kwargs"] = {**options.get("model_kwargs", {}), **overrides["model_kwargs"]}
        options.update(overrides)
    return options


def spec_from_args(args: argparse.Namespace) -> RunSpec:
    if getattr(args, "smoke", False) and not args.config:
        raise ConfigError("--smoke needs --config RECIPE.yaml (it applies the recipe's `smoke:` overrides)")
    options = load_config_file(args.config, smoke=getattr(args, "smoke", False)) if args.config else {}
    saved = args.out / "run_spec.json"
    if args.resume and saved.is_file():
        stored = read_json(saved, what="run spec", error=CheckpointError)
        RunSpec.from_config(stored, str(saved))  # a tampered file is named, not half-used
        options = {**stored["run"], **_recorded_passes(stored), **options}
    options.update({k: getattr(args, k) for k in FLAGS if getattr(args, k) is not None})
    source = f"--config file {args.config} (with the flags given)" if args.config else "run options"
    return RunSpec.from_dict(options, source)


def _passes(spec: RunSpec) -> str:
    return f", s = {spec.sample_num}" if spec.method != "nmt" else ""


def _recorded_passes(stored: dict) -> dict:
    """``{"sample_num": s}`` of an SDT run from its sampler record: a run recorded before SDT
    took passes per iteration made one, whatever its ``run.sample_num`` says."""
    recorded = stored.get("sampler")
    if isinstance(recorded, dict) and recorded.get("method") == "sdt":
        return {"sample_num": recorded.get("sample_num", 1)}
    return {}


def run(args: argparse.Namespace) -> int:
    spec = spec_from_args(args)
    resolve_device(spec.device)
    info = init_distributed(spec.device)  # joins torchrun's group; a no-op otherwise

    def opening() -> None:  # once every check has passed: a refused request prints only its error
        if info.is_main:
            ranks = f" on {info.world_size} processes ({info.backend})" if info.distributed else ""
            print(
                f"training {spec.model} on {spec.dataset} with {spec.method.upper()} "
                f"(T in [{spec.t_min}, {spec.t_max}]{_passes(spec)}) for {spec.epochs} epochs{ranks} -> {args.out}",
                flush=True,
            )

    try:
        with holding_run_locks():  # no other writer between training and its report
            train_run(spec, args.out, resume=args.resume, progress=not args.quiet, on_start=opening)
            if not info.is_main:
                return 0  # rank 0 evaluates and reports
            result = evaluate_run(args.out, device=spec.device, progress=not args.quiet)
            results = {spec.method: result["uniform"]}
            write_results(args.out, results)
            report = write_final_report(
                [args.out], args.out, title=f"{spec.model} on {spec.dataset} ({spec.method.upper()})"
            )
        print(format_table(results))
        print(
            f"wrote {args.out}/model.safetensors, config.json, results.json, metrics.csv, accuracy_vs_T.png, "
            f"{report.name}"
        )
        return 0
    finally:
        cleanup_distributed()
