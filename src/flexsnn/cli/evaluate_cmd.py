"""`flexsnn evaluate`: accuracy of a trained run at uniform T values and per-stage configs."""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

from flexsnn.cli.common import HelpFormatter, parse_int_list, positive_int, time_config_arg
from flexsnn.errors import InputError
from flexsnn.evaluate import format_table, plot_accuracy_vs_t, write_results
from flexsnn.evaluate.grid import grid_configs, write_config_grid
from flexsnn.io import atomic_write
from flexsnn.runs import RunSpec, check_output_dir, claim_output_dir, evaluate_run, load_run
from flexsnn.runs.evaluate import CALIBRATIONS

EXAMPLES = """examples:
  flexsnn evaluate --run runs/mtt                      # T = 1..t_max
  flexsnn evaluate --run runs/mtt --t 1 2 4 8 16 32 64   # events re-binned at each T
  flexsnn evaluate --run runs/mtt --calibration both   # BN per config and at t_max side by side
  flexsnn evaluate --run runs/mtt --config 6,1,3 --config 2,2,6 --out runs/mtt/eval"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate",
        help="evaluate a run over T and per-stage configs",
        description=__doc__,
        epilog=EXAMPLES,
        formatter_class=HelpFormatter,
    )
    p.add_argument("--run", type=Path, required=True, help="run folder written by `flexsnn train`")
    p.add_argument("--t", type=positive_int, nargs="+", help="uniform T values (default 1..t_max of the run)")
    p.add_argument(
        "--config",
        type=time_config_arg,
        action="append",
        default=[],
        help="a per-stage TimeConfig like 6,1,3 (repeatable)",
    )
    p.add_argument(
        "--calib-batches", type=positive_int, default=None, help="BN calibration batches (default: the run's)"
    )
    p.add_argument(
        "--calibration",
        choices=[*CALIBRATIONS, "both"],
        default="per_config",
        help="BN statistics: re-estimated at every evaluated config, once at uniform t_max (the "
        "paper authors' protocol), the run's saved ones, or both per_config and t_max side by side",
    )
    p.add_argument(
        "--grid",
        type=_stage_pair,
        default=None,
        metavar="I,J",
        help="also write a heatmap of accuracy over the T of stages I and J (1-based), the other "
        "stages at t_max: config_grid.png / .csv / .json",
    )
    p.add_argument(
        "--grid-t",
        type=positive_int,
        nargs="+",
        default=None,
        help="T values of the --grid axes (default 1..t_max of the run)",
    )
    p.add_argument(
        "--no-rebin",
        dest="rebin",
        action="store_false",
        help="event data: feed the frames binned at the run's data T to every T (the input TTM "
        "resamples them) instead of binning the events again at each T",
    )
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    p.add_argument("--out", type=Path, default=None, help="output folder (default RUN/eval)")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace earlier results in an --out other than RUN/eval (or in a run's folder)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def _stage_pair(text: str) -> tuple[int, int]:
    try:
        pair = parse_int_list(text, "--grid")
    except InputError:
        pair = ()
    if len(pair) != 2:
        raise argparse.ArgumentTypeError(f"--grid must be two stage numbers I,J like 1,2; got {text!r}")
    return pair  # type: ignore[return-value]


OUTPUTS = (
    "results.json",
    "results.csv",
    "accuracy_vs_T.png",
    "configs.csv",
    "config_grid.png",
    "config_grid.csv",
    "config_grid.json",
)


def run(args: argparse.Namespace) -> int:
    out = args.out or args.run / "eval"
    explicit = args.out is not None and out.resolve() != (args.run / "eval").resolve()
    check_output_dir(out, OUTPUTS, args.overwrite, explicit)  # before the evaluation, not after
    calibrations = ["per_config", "t_max"] if args.calibration == "both" else [args.calibration]
    outcomes = [
        evaluate_run(
            args.run,
            args.t,
            args.config,
            device=args.device,
            calib_batches=args.calib_batches,
            progress=not args.quiet,
            calibration=c,
            rebin=args.rebin,
        )
        for c in calibrations
    ]
    with claim_output_dir(out, OUTPUTS, args.overwrite, explicit, what="flexsnn evaluate"):
        _write(args, out, calibrations, outcomes)
    print(f"wrote {out}/results.json, results.csv, accuracy_vs_T.png")
    return 0


def _write(args: argparse.Namespace, out: Path, calibrations: list[str], outcomes: list[dict]) -> None:
    method = outcomes[0]["method"]
    if len(outcomes) == 1:
        results = {method: outcomes[0]["uniform"]}
    else:  # one column per calibration protocol
        results = {f"{method} (BN {c})": o["uniform"] for c, o in zip(calibrations, outcomes)}
    write_results(out, results)
    plot_accuracy_vs_t(results, out / "accuracy_vs_T.png", title=f"{args.run}")
    note = "events re-binned at each T" if outcomes[0]["rebinned"] else f"frames binned at T={outcomes[0]['data_t']}"
    print(f"accuracy (%) over uniform T ({note}; BN: {', '.join(calibrations)})")
    print(format_table(results))
    rows = outcomes[0]["configs"]
    if rows:
        with atomic_write(out / "configs.csv") as tmp, open(tmp, "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["config", *[f"accuracy_{c}" for c in calibrations]])
            for i, row in enumerate(rows):
                writer.writerow(
                    [",".join(map(str, row["config"])), *[f"{o['configs'][i]['accuracy']:.4f}" for o in outcomes]]
                )
        print("per-stage configs (" + ", ".join(f"BN {c}" for c in calibrations) + "):")
        for i, row in enumerate(rows):
            accs = "  ".join(f"{100 * o['configs'][i]['accuracy']:6.2f}" for o in outcomes)
            print(f"  {','.join(map(str, row['config'])):>12}  {accs}")
    if args.grid is not None:
        model, config = load_run(args.run)
        t_max = RunSpec.from_config(config, str(args.run / "config.json")).t_max
        t_grid = args.grid_t or list(range(1, t_max + 1))
        configs = grid_configs(model.num_stages, args.grid, t_grid, t_max)
        grid_result = evaluate_run(
            args.run,
            [t_max],
            configs,
            device=args.device,
            calib_batches=args.calib_batches,
            progress=not args.quiet,
            calibration=calibrations[0],
            rebin=False,
        )
        write_config_grid(
            out,
            grid_result["configs"],
            t_grid,
            args.grid,
            title=f"{args.run}: stages {args.grid[0]} x {args.grid[1]}, others at T={t_max}",
        )
        print(f"wrote {out}/config_grid.png, config_grid.csv, config_grid.json")
