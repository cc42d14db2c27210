"""`flexsnn evaluate`: accuracy of a trained run at uniform T values and per-stage configs."""
from __future__ import annotations

import argparse
import csv
from pathlib import Path

from flexsnn.cli.common import HelpFormatter, positive_int, time_config_arg
from flexsnn.evaluate import format_table, plot_accuracy_vs_t, write_results
from flexsnn.io import atomic_write
from flexsnn.runs import evaluate_run
from flexsnn.runs.evaluate import CALIBRATIONS

EXAMPLES = """examples:
  flexsnn evaluate --run runs/mtt                      # T = 1..t_max
  flexsnn evaluate --run runs/mtt --t 1 2 4 8 16
  flexsnn evaluate --run runs/mtt --config 6,1,3 --config 2,2,6 --out runs/mtt/eval"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="evaluate a run over T and per-stage configs", description=__doc__,
                       epilog=EXAMPLES, formatter_class=HelpFormatter)
    p.add_argument("--run", type=Path, required=True, help="run folder written by `flexsnn train`")
    p.add_argument("--t", type=positive_int, nargs="+", help="uniform T values (default 1..t_max of the run)")
    p.add_argument("--config", type=time_config_arg, action="append", default=[],
                   help="a per-stage TimeConfig like 6,1,3 (repeatable)")
    p.add_argument("--calib-batches", type=positive_int, default=None, help="BN calibration batches (default: the run's)")
    p.add_argument("--calibration", choices=CALIBRATIONS, default="per_config",
                   help="BN statistics: re-estimated at every evaluated config, once at t_max, "
                        "or the run's saved ones")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    p.add_argument("--out", type=Path, default=None, help="output folder (default RUN/eval)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    result = evaluate_run(args.run, args.t, args.config, device=args.device,
                          calib_batches=args.calib_batches, progress=not args.quiet,
                          calibration=args.calibration)
    out = args.out or args.run / "eval"
    results = {result["method"]: result["uniform"]}
    write_results(out, results)
    plot_accuracy_vs_t(results, out / "accuracy_vs_T.png", title=f"{args.run}")
    print(format_table(results))
    if result["configs"]:
        with atomic_write(out / "configs.csv") as tmp, open(tmp, "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["config", "accuracy"])
            for row in result["configs"]:
                writer.writerow([",".join(map(str, row["config"])), f"{row['accuracy']:.4f}"])
        print("per-stage configs:")
        for row in result["configs"]:
            print(f"  {','.join(map(str, row['config'])):>12}  {100 * row['accuracy']:6.2f}")
    print(f"wrote {out}/results.json, results.csv, accuracy_vs_T.png")
    return 0
