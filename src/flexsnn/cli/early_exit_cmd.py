"""`flexsnn early-exit`: per-sample dynamic T. Accuracy vs average T and synaptic ops per threshold.

Rule: run the model at --config (default uniform t_max of the run); after each step t of the
last stage, take the mean of the first t outputs; a sample exits as soon as its max softmax
probability is >= the threshold (threshold 0: always t = 1; above 1: never early). Only the
time steps the exit depends on are counted as ops. The fixed-T curve stops every sample at t.
Writes early_exit.csv, early_exit.json and early_exit.png.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from flexsnn.cli.common import HelpFormatter, positive_int, time_config_arg
from flexsnn.evaluate.early_exit import DEFAULT_THRESHOLDS, plot_early_exit, write_early_exit_csv
from flexsnn.io import write_json
from flexsnn.runs import check_output_dir, claim_output_dir, early_exit_run

EXAMPLES = """examples:
  flexsnn early-exit --run runs/mtt
  flexsnn early-exit --run runs/mtt --thresholds 0.5 0.8 0.9 0.95 0.99
  flexsnn early-exit --run runs/mtt --config 6,3,6 --out runs/mtt/ee_636"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "early-exit",
        help="dynamic T per sample: accuracy vs average T for confidence thresholds",
        description=__doc__,
        epilog=EXAMPLES,
        formatter_class=HelpFormatter,
    )
    p.add_argument("--run", type=Path, required=True, help="run folder written by `flexsnn train`")
    p.add_argument(
        "--config",
        type=time_config_arg,
        default=None,
        help="TimeConfig to run at, e.g. 6 or 6,3,6 (default: uniform t_max of the run)",
    )
    p.add_argument(
        "--thresholds",
        type=float,
        nargs="+",
        default=None,
        help="confidence thresholds (default 0 0.3 0.5 ... 0.999 1.01)",
    )
    p.add_argument(
        "--calib-batches", type=positive_int, default=None, help="BN calibration batches (default: the run's)"
    )
    p.add_argument("--max-batches", type=positive_int, default=None, help="test batches (default all)")
    p.add_argument(
        "--rebinned",
        action="store_true",
        help="also plot uniform T = 1..T re-binning the input at each T (as `flexsnn evaluate` does)",
    )
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    p.add_argument("--out", type=Path, default=None, help="output folder (default RUN/early_exit)")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace earlier results in an --out other than RUN/early_exit (or in a run's folder)",
    )
    p.set_defaults(func=run)


OUTPUTS = ("early_exit.csv", "early_exit.json", "early_exit.png")


def run(args: argparse.Namespace) -> int:
    out = args.out or args.run / "early_exit"
    explicit = args.out is not None and out.resolve() != (args.run / "early_exit").resolve()
    check_output_dir(out, OUTPUTS, args.overwrite, explicit)  # before the work, not after
    cfg = args.config[0] if args.config is not None and len(args.config) == 1 else args.config
    result = early_exit_run(
        args.run,
        cfg,
        args.thresholds or DEFAULT_THRESHOLDS,
        args.calib_batches,
        args.max_batches,
        args.device,
        rebinned=args.rebinned,
    )
    with claim_output_dir(out, OUTPUTS, args.overwrite, explicit, what="flexsnn early-exit"):
        write_early_exit_csv(out / "early_exit.csv", result)
        write_json(out / "early_exit.json", result.as_dict())
        plot_early_exit(result, out / "early_exit.png")
    print(f"config {','.join(map(str, result.time_config))}, {result.samples} test samples")
    print(f"  {'threshold':>9} {'acc %':>7} {'avg T':>6} {'synops':>11}")
    for p in result.points:
        print(f"  {p.threshold:9.6g} {100 * p.accuracy:7.2f} {p.avg_t:6.2f} {p.synops:11.4g}")
    print("  fixed T:")
    for p in result.fixed:
        print(f"  {'t=' + str(round(p.avg_t)):>9} {100 * p.accuracy:7.2f} {p.avg_t:6.2f} {p.synops:11.4g}")
    if result.rebinned:
        print("  uniform T, input re-binned: " + ", ".join(f"T={t} {100 * a:.2f}" for t, a in result.rebinned.items()))
    print(f"wrote {out}/early_exit.csv, early_exit.json, early_exit.png")
    return 0
