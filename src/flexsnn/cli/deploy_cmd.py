"""`flexsnn deploy`: bias removal + fine-tune, event-driven simulation, NIR export.

prepare   bias removal (biases and BN means zeroed, BN folded) and the bias-free
          fine-tune with SDT or MTT, from a run written by `flexsnn train`
simulate  time-stepped vs event-driven accuracy, spike-count divergence, synaptic ops
          and events/s of deployed runs; without --run, the whole experiment on the
          default data (SDT base, SDT and MTT fine-tunes)
export    write a deployed run as a NIR graph (.nir, HDF5)
"""

from __future__ import annotations

import argparse
from pathlib import Path

from flexsnn.cli.common import HelpFormatter, nonnegative_int, parse_int_list, positive_int
from flexsnn.data import DigitsDVS
from flexsnn.deploy import evaluate_deployment, to_nir, write_nir
from flexsnn.deploy.compare import format_deployment_table
from flexsnn.deploy.finetune import PINS
from flexsnn.errors import CheckpointError, InputError
from flexsnn.io import Dict, Int, MapOf, Str, atomic_write, read_json, write_json
from flexsnn.runs import (
    compare_deployment,
    load_deployed,
    load_event_split,
    prepare_deployment,
    read_finetune_section,
    resolve_device,
)
from flexsnn.runs.deploy import check_event_dataset
from flexsnn.runs.memory import check_memory, footprint_of

SIMULATE_BATCH = 64  # samples binned and run time-stepped at once by deploy simulate

EXAMPLES = """examples:
  flexsnn train --model nmnist_net --method sdt --t-max 10 --epochs 6 --out runs/base
  flexsnn deploy prepare --run runs/base --method mtt --epochs 3 --out runs/deploy_mtt
  flexsnn deploy prepare --run runs/base --method sdt --epochs 3 --out runs/deploy_sdt
  flexsnn deploy simulate --run runs/deploy_sdt --run runs/deploy_mtt --dataset digits_dvs
  flexsnn deploy simulate --out runs/deploy_demo       # the whole experiment
  flexsnn deploy export --run runs/deploy_mtt --out runs/deploy_mtt/model.nir"""


# Fine-tune options: flag -> argparse keywords; the `finetune:` key is the dest. Defaults live in
# PREPARE_DEFAULTS so that a recipe is only overridden by the flags actually given.
PREPARE_FLAGS = {
    "--method": dict(choices=["mtt", "sdt"], help="fine-tune method (default mtt)"),
    "--t": dict(type=positive_int, help="input T (default: the run's t_max)"),
    "--L": dict(dest="t_left", type=nonnegative_int, help="MTT: stages from T-L (default T-1)"),
    "--R": dict(dest="t_right", type=nonnegative_int, help="MTT: stages up to T+R (default 0)"),
    "--pin": dict(
        choices=list(PINS),
        help="MTT: what stays at T: the input only, every stage drawn (the paper's scheme, default), or stage 1 too",
    ),
    "--sample-num": dict(
        dest="sample_num",
        type=positive_int,
        help="passes per iteration: MTT configs (default 3) or SDT identical passes (default 1)",
    ),
    "--epochs": dict(type=positive_int, help="fine-tune epochs (default 3)"),
    "--batch-size": dict(dest="batch_size", type=positive_int, help="batch size (default: the base run's)"),
    "--optimizer": dict(choices=["adamw", "sgd"], help="optimizer (default adamw)"),
    "--lr": dict(type=float, help="learning rate (default 1e-3)"),
    "--momentum": dict(type=float, help="SGD momentum, 0 = plain SGD (default 0.9)"),
    "--weight-decay": dict(dest="weight_decay", type=float, help="weight decay (default 0)"),
    "--schedule": dict(choices=["cosine", "constant"], help="lr schedule (default cosine)"),
    "--schedule-epochs": dict(
        dest="schedule_epochs",
        type=positive_int,
        help="cosine horizon in epochs (default: --epochs; the authors' 300 over a 60-epoch "
        "fine-tune leaves the lr at ~0.9x)",
    ),
    "--augment": dict(
        nargs="?",
        const=True,
        metavar="PROTOCOL",
        help="training augmentation of the frames: flip_roll5, flip_or_reverse_roll5, vflip_roll20, "
        "none (default: the base run's)",
    ),
    "--seed": dict(type=nonnegative_int, help="random seed (default 1000)"),
}
PREPARE_DEFAULTS = {
    "method": "mtt",
    "t": None,
    "t_left": None,
    "t_right": 0,
    "pin": "input",
    "sample_num": None,  # the method's: 3 for MTT, 1 for SDT
    "epochs": 3,
    "batch_size": None,
    "optimizer": "adamw",
    "lr": 1e-3,
    "momentum": 0.9,
    "weight_decay": 0.0,
    "schedule": "cosine",
    "schedule_epochs": 0,
    "augment": None,
    "seed": 1000,
}


DEPLOY_SPEC_SCHEMA = Dict(
    {
        "method": Str(choices=("mtt", "sdt")),
        "t": Int(min=1),
        "t_left": Int(min=0),
        "t_right": Int(min=0),
        "sample_num": Int(min=1),
        "options": MapOf(),
    },
    extra=True,
)


def prepare_options(args: argparse.Namespace) -> dict:
    """The fine-tune options: defaults, then the recipe's `finetune:` section, then (with
    --resume) the interrupted fine-tune's recipe from OUT/deploy_spec.json, then the flags given."""
    options = dict(PREPARE_DEFAULTS)
    if args.config is not None:
        options.update(read_finetune_section(args.config))
    saved_path = args.out / "deploy_spec.json"
    if getattr(args, "resume", False) and saved_path.is_file():  # the interrupted fine-tune's recipe
        saved = read_json(saved_path, what="deploy spec", schema=DEPLOY_SPEC_SCHEMA, error=CheckpointError)
        options.update(
            {
                k: saved[k]
                for k in ("method", "t", "t_left", "t_right", "sample_num", "pin", "batch_size", "augment")
                if k in saved
            }
        )
        options.update({k: v for k, v in saved["options"].items() if k in PREPARE_DEFAULTS})
        recorded = saved.get("sampler")
        if isinstance(recorded, dict) and recorded.get("method") == "sdt":
            # a fine-tune recorded before SDT took passes per iteration made one
            options["sample_num"] = recorded.get("sample_num", 1)
    options.update({k: getattr(args, k) for k in PREPARE_DEFAULTS if getattr(args, k, None) is not None})
    if options["augment"] == "none":
        options["augment"] = False
    return options


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "deploy",
        help="bias removal + fine-tune, event-driven simulation, NIR export",
        description=__doc__,
        epilog=EXAMPLES,
        formatter_class=HelpFormatter,
    )
    verbs = p.add_subparsers(dest="deploy_verb", metavar="ACTION", required=True)

    prep = verbs.add_parser(
        "prepare",
        help="bias removal + bias-free fine-tune (SDT or MTT)",
        description="Zero every bias and BN running mean, fold BN into the conv weights, then "
        "fine-tune with biases frozen at zero, with SDT or MTT (input at T, every stage from "
        "[T - L, T + R]; --pin stage1 keeps stage 1 at T too).",
        epilog=EXAMPLES,
        formatter_class=HelpFormatter,
    )
    prep.add_argument("--run", type=Path, required=True, help="run folder written by `flexsnn train`")
    prep.add_argument("--out", type=Path, required=True, help="deployed run folder to create")
    prep.add_argument(
        "--config",
        type=Path,
        default=None,
        metavar="RECIPE",
        help="deployment recipe (recipes/*_deploy.yaml) whose `finetune:` section sets the options; "
        "flags given override it",
    )
    for flag, kwargs in PREPARE_FLAGS.items():
        prep.add_argument(flag, **{**kwargs, "default": None})
    prep.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    prep.add_argument(
        "--checkpoint-every-steps",
        type=nonnegative_int,
        default=0,
        help="also checkpoint every N steps inside epochs (default 0: per epoch)",
    )
    prep.add_argument("--overwrite", action="store_true", help="replace an earlier run in --out")
    prep.add_argument(
        "--resume",
        action="store_true",
        help="continue a killed fine-tune in --out (with its recipe; flags given must match it)",
    )
    prep.add_argument("--quiet", action="store_true", help="no progress bars")
    prep.set_defaults(func=run_prepare)

    sim = verbs.add_parser(
        "simulate",
        help="time-stepped vs event-driven accuracy of deployed runs",
        description="Run deployed models time-stepped (at T) and event-driven (the simulator) "
        "on the same test events. Without --run: train an SDT base, fine-tune it with SDT and "
        "MTT, and compare (writes to --out).",
        epilog=EXAMPLES,
        formatter_class=HelpFormatter,
    )
    sim.add_argument("--run", type=Path, action="append", default=[], help="deployed run folder (repeatable)")
    sim.add_argument("--dataset", default="digits_dvs", help="event dataset of the test split")
    sim.add_argument("--data-root", default=None, help="dataset folder")
    sim.add_argument("--t", type=positive_int, default=None, help="time-stepped T (default: each run's T)")
    sim.add_argument("--max-samples", type=positive_int, default=None, help="test samples to use (default all)")
    sim.add_argument("--threads", type=positive_int, default=None, help="simulator threads (default: all cores)")
    sim.add_argument("--out", type=Path, default=None, help="folder for results (required without --run)")
    sim.add_argument("--model", default="nmnist_net", help="without --run: deployable model to train")
    sim.add_argument("--base-epochs", type=positive_int, default=6, help="without --run: SDT base epochs")
    sim.add_argument("--finetune-epochs", type=positive_int, default=3, help="without --run: fine-tune epochs")
    sim.add_argument("--base-run", type=Path, default=None, help="without --run: reuse this trained base run")
    sim.add_argument("--seed", type=nonnegative_int, default=1000, help="random seed")
    sim.add_argument("--device", default="cpu", help="cpu or cuda[:N] (the simulator runs on CPU)")
    sim.add_argument("--quiet", action="store_true", help="no progress bars")
    sim.set_defaults(func=run_simulate)

    exp = verbs.add_parser(
        "export",
        help="write a deployed run as a NIR graph",
        description="Export a bias-free run to NIR (nir.write, HDF5). Average pooling becomes "
        "SumPool2d with its scale folded into the next layer; what NIR cannot say (reset by "
        "subtraction, lower bound, multi-spike, stages, time config) goes into the graph's "
        "metadata.",
        epilog=EXAMPLES,
        formatter_class=HelpFormatter,
    )
    exp.add_argument("--run", type=Path, required=True, help="deployed run folder")
    exp.add_argument("--out", type=Path, required=True, help="output .nir file")
    exp.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    exp.add_argument("--input-shape", default=None, help="input map C,H,W (default: the dataset's sensor)")
    exp.add_argument(
        "--profile",
        default="flexsnn",
        choices=["flexsnn", "nir", "snntorch", "spikingjelly", "norse", "sinabs"],
        help="the reader the file is for (docs/interop.md): flexsnn reads back exactly; a peer "
        "profile works around that peer's importer",
    )
    exp.add_argument(
        "--dt",
        type=float,
        default=None,
        help="step in the reader's time unit (default: the profile's; flexsnn 1 step, snnTorch and "
        "SpikingJelly 1e-4 s, Norse 1e-3 s)",
    )
    exp.add_argument(
        "--pool",
        choices=["sum", "avg"],
        default=None,
        help="how average pooling is written (default: the profile's; flexsnn: sum)",
    )
    exp.add_argument("--linear", choices=["affine", "linear"], default="affine", help="NIR node for linear layers")
    exp.set_defaults(func=run_export)


def run_prepare(args: argparse.Namespace) -> int:
    if args.resume and args.overwrite:
        raise InputError("--resume and --overwrite exclude each other")
    options = prepare_options(args)
    opening = (
        f"bias removal + {options['method'].upper()} fine-tune of {args.run} for {options['epochs']} epochs "
        f"({options['optimizer']}, lr {options['lr']:g}) -> {args.out}"
    )
    _, config = prepare_deployment(
        args.run,
        args.out,
        on_start=lambda: print(opening, flush=True),
        device=args.device,
        progress=not args.quiet,
        overwrite=args.overwrite,
        resume=args.resume,
        checkpoint_every_steps=args.checkpoint_every_steps,
        **options,
    )
    deploy = config["deploy"]
    print(f"time-stepped accuracy at T={deploy['t']} (bias-free): {100 * deploy['accuracy_t']:.2f}%")
    print(f"wrote {args.out}/model.safetensors, config.json")
    return 0


READOUT_LEGEND = (
    "event-driven: accumulated input of the readout (argmax, as time-stepped); ED spikes: output "
    "spike counts, as a chip reads them (ties and silent samples have no prediction)"
)


def run_simulate(args: argparse.Namespace) -> int:
    resolve_device(args.device)
    if not args.run:
        if args.out is None:
            raise InputError("give deployed runs with --run, or --out to run the whole SDT vs MTT experiment")
        result = compare_deployment(
            args.out,
            dataset=args.dataset,
            model=args.model,
            t=args.t or 10,
            base_epochs=args.base_epochs,
            finetune_epochs=args.finetune_epochs,
            seed=args.seed,
            device=args.device,
            base_run=args.base_run,
            max_test_samples=args.max_samples,
            data_root=args.data_root,
            progress=not args.quiet,
        )
        print()
        print(result.format_table())
        print(READOUT_LEGEND)
        print(f"wrote {args.out}/deploy_results.json")
        return 0
    check_event_dataset(args.dataset)
    deployed = []
    for run in args.run:  # every run is loaded and its T checked before any events are read
        model, config = load_deployed(run, device=args.device)
        deploy = config["deploy"]
        t = args.t or int(deploy["t"])
        option = f"--t {t}" if args.t else f"t {t} of {run / 'config.json'}"
        check_memory(footprint_of(model), [(option, (t,), t)], SIMULATE_BATCH, device=args.device)
        deployed.append((run, model, t, str(deploy.get("method", run.name)).upper()))
    events, labels, sensor = load_event_split(args.dataset, "test", args.data_root, args.max_samples)
    rows = []
    for run, model, t, label in deployed:
        print(f"{run}: {label} fine-tune, simulating {len(events)} samples (time-stepped at T={t})")
        rows.append(
            evaluate_deployment(
                model,
                events,
                labels,
                sensor,
                t,
                label=label,
                batch_size=SIMULATE_BATCH,
                num_threads=args.threads,
                progress=not args.quiet,
            )
        )
    print()
    print(format_deployment_table(rows))
    print(READOUT_LEGEND)
    if args.out is not None:
        write_json(
            args.out / "deploy_results.json",
            {"rows": [r.as_dict() for r in rows], "runs": [str(r) for r in args.run], "dataset": args.dataset},
        )
        print(f"wrote {args.out}/deploy_results.json")
    return 0


def _shape_arg(text: str) -> tuple[int, int, int]:
    try:
        shape = parse_int_list(text, "--input-shape")
    except InputError:
        shape = ()
    if len(shape) != 3:
        raise InputError(f"--input-shape must be C,H,W positive integers like 2,34,34; got {text!r}")
    return shape  # type: ignore[return-value]


def run_export(args: argparse.Namespace) -> int:
    shape = _shape_arg(args.input_shape) if args.input_shape is not None else None
    if args.out.is_dir():
        raise InputError(f"--out {args.out} is a folder; give the .nir file to write")
    if args.out.exists() and not args.overwrite:
        raise CheckpointError(f"--out {args.out} already exists; pass --overwrite to replace it")
    model, config = load_deployed(args.run)
    if shape is None:
        shape = _dataset_input_shape(config.get("run", {}).get("dataset", "digits_dvs"))
    graph = to_nir(
        model,
        input_shape=shape,
        dt=args.dt,
        profile=args.profile,
        pool=args.pool,
        linear=args.linear,
        extra={"deploy": {k: v for k, v in config["deploy"].items() if k != "history"}, "source": str(args.run)},
    )
    with atomic_write(args.out) as tmp:
        write_nir(graph, tmp)  # nir.write with the schema the profile's reader needs
    print(f"wrote {args.out} ({len(graph.nodes)} NIR nodes, input {shape})")
    return 0


def _dataset_input_shape(dataset: str) -> tuple[int, int, int]:
    if dataset == "digits_dvs":
        w, h, p = DigitsDVS.sensor_size
        return (p, h, w)
    raise InputError(f"cannot infer the input shape of dataset {dataset!r}; pass --input-shape C,H,W")
