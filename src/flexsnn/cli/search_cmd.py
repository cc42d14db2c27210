"""`flexsnn search`: the accuracy / synaptic-ops Pareto front over per-stage TimeConfigs of a run.

Every evaluated config is BN-calibrated (if the model has BN), then measured on validation
data: accuracy of the time-averaged output and synaptic ops per sample (accumulates of
spikes/counts x fan-out + MACs of real-valued inputs, counted on the data). Writes
search_configs.csv (all evaluated configs), pareto_front.csv, pareto.png and search.json,
and prints the most accurate config within --budget of uniform t_max's ops, ready for
`flexsnn evaluate --config`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from flexsnn.cli.common import HelpFormatter, nonnegative_int, positive_int
from flexsnn.evaluate.pareto import COSTS, STRATEGIES, plot_pareto, write_search_csv
from flexsnn.io import write_json
from flexsnn.runs import check_output_dir, claim_output_dir, search_run
from flexsnn.runs.evaluate import SPLITS

EXAMPLES = """examples:
  flexsnn search --run runs/mtt                              # T in [t_min, t_max] of the run
  flexsnn search --run runs/mtt --t-max 4 --strategy exhaustive
  flexsnn search --run runs/big --strategy greedy --max-evals 60 --cost energy --out runs/big/search
then: flexsnn evaluate --run runs/mtt --config 6,2,3   (the chosen config it prints)"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "search",
        help="Pareto search of per-stage TimeConfigs (accuracy vs synaptic ops)",
        description=__doc__,
        epilog=EXAMPLES,
        formatter_class=HelpFormatter,
    )
    p.add_argument("--run", type=Path, required=True, help="run folder written by `flexsnn train`")
    p.add_argument("--t-min", type=positive_int, default=None, help="smallest T per stage (default: the run's)")
    p.add_argument("--t-max", type=positive_int, default=None, help="largest T per stage (default: the run's)")
    p.add_argument(
        "--strategy",
        choices=STRATEGIES,
        default="auto",
        help="auto: exhaustive if the space fits --max-evals, else greedy then evolutionary",
    )
    p.add_argument("--max-evals", type=positive_int, default=128, help="most configs to evaluate")
    p.add_argument("--cost", choices=COSTS, default="synops", help="cost axis: synaptic ops or energy estimate")
    p.add_argument(
        "--split",
        choices=SPLITS,
        default="half",
        help="half: search on even test samples, report the choice on odd ones; test: whole test split",
    )
    p.add_argument("--budget", type=float, default=0.5, help="choose the best config costing <= this x uniform t_max")
    p.add_argument(
        "--calib-batches", type=positive_int, default=None, help="BN calibration batches (default: the run's)"
    )
    p.add_argument("--max-batches", type=positive_int, default=None, help="validation batches per config (default all)")
    p.add_argument("--seed", type=nonnegative_int, default=0, help="seed of the evolutionary search")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    p.add_argument("--out", type=Path, default=None, help="output folder (default RUN/search)")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace earlier results in an --out other than RUN/search (or in a run's folder)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


OUTPUTS = ("search_configs.csv", "pareto_front.csv", "pareto.png", "search.json")


def run(args: argparse.Namespace) -> int:
    out = args.out or args.run / "search"
    explicit = args.out is not None and out.resolve() != (args.run / "search").resolve()
    check_output_dir(out, OUTPUTS, args.overwrite, explicit)  # before the work, not after
    found = search_run(
        args.run,
        args.t_min,
        args.t_max,
        args.strategy,
        args.max_evals,
        args.cost,
        args.split,
        args.budget,
        args.calib_batches,
        args.max_batches,
        args.device,
        args.seed,
        progress=not args.quiet,
    )
    result, chosen = found["search"], found["chosen"]
    with claim_output_dir(out, OUTPUTS, args.overwrite, explicit, what="flexsnn search"):
        write_search_csv(out / "search_configs.csv", result.results, result.front)
        write_search_csv(out / "pareto_front.csv", result.front, result.front)
        plot_pareto(
            result,
            out / "pareto.png",
            title=f"{args.run}: {found['method'].upper()} {found['model']}, "
            f"{len(result.results)} configs ({result.strategy})",
        )
        summary = result.as_dict()
        summary.update(
            {
                "split": found["split"],
                "budget": found["budget"],
                "report": found["report"],
                "chosen_config": None if chosen is None else list(chosen.config),
            }
        )
        write_json(out / "search.json", summary)

    ref = result.reference
    print(
        f"{len(result.results)} configs evaluated ({result.strategy}); Pareto front "
        f"({'validation = even test samples' if found['split'] == 'half' else 'test split'}):"
    )
    print(f"  {'config':>14} {'acc %':>7} {'synops':>11} {'x T_max':>8}")
    for r in result.front:
        print(
            f"  {','.join(map(str, r.config)):>14} {100 * r.accuracy:7.2f} {r.synops:11.4g} "
            f"{r.cost(result.cost) / ref.cost(result.cost):8.2f}"
        )
    if chosen is None:
        print(f"no config costs <= {args.budget:g} x uniform T={result.t_max}")
    else:
        cfg = ",".join(map(str, chosen.config))
        print(
            f"chosen (best at <= {args.budget:g} x uniform T={result.t_max} {result.cost}): {cfg}, "
            f"{100 * chosen.accuracy:.2f} % vs {100 * ref.accuracy:.2f} % at uniform T={result.t_max}, "
            f"{chosen.cost(result.cost) / ref.cost(result.cost):.2f} x the cost"
        )
        rep = found["report"]
        if "chosen" in rep:
            print(
                f"held-out (odd test samples): {100 * rep['chosen']['accuracy']:.2f} % vs "
                f"{100 * rep['reference']['accuracy']:.2f} % at uniform T={result.t_max}"
            )
        print(f"use it: flexsnn evaluate --run {args.run} --config {cfg}")
    print(f"wrote {out}/search_configs.csv, pareto_front.csv, pareto.png, search.json")
    return 0
