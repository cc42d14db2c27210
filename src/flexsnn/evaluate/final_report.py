"""The final report of one or several runs: a Markdown page with the accuracy-vs-T plot.

Each run folder written by ``flexsnn train`` holds ``config.json`` (run options + history),
``results.json`` (``{method: {"T": accuracy}}``) and ``metrics.json`` (per-epoch rows).
:func:`write_final_report` reads any number of them (e.g. SDT and MTT, three seeds each),
groups them by method, and writes

  report.md             runs table, accuracy per T (mean +- std over seeds), training curves
  accuracy_vs_T.png     mean accuracy against inference T, one line per method, std band
  training_curves.png   train loss per epoch, one line per run

Command line: ``python -m flexsnn.evaluate.final_report --out REPORT_DIR RUN [RUN ...]``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import statistics
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flexsnn.errors import CheckpointError, InputError
from flexsnn.evaluate.plotting import pyplot, save_figure
from flexsnn.evaluate.report import plot_accuracy_vs_t
from flexsnn.io import atomic_write, read_json

REPORT_FILE = "report.md"
PLOT_FILE = "accuracy_vs_T.png"
CURVES_FILE = "training_curves.png"


@dataclass
class RunSummary:
    """What the report needs from one run folder."""

    path: Path
    method: str
    run: dict[str, Any]
    results: dict[str, dict[str, float]]  # {method: {"T": acc}}
    history: list[dict[str, Any]] = field(default_factory=list)
    configs: list[dict[str, Any]] = field(default_factory=list)  # per-stage config rows, if any


def read_run(run_dir: str | os.PathLike) -> RunSummary:
    """Load a finished run folder (config.json + results.json; metrics.json if present)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CheckpointError(f"run folder not found: {run_dir} (expected a folder written by `flexsnn train`)")
    config = read_json(run_dir / "config.json", what="run config")
    results = read_json(run_dir / "results.json", what="results (written by `flexsnn train` after evaluation)")
    if not isinstance(results, dict) or not all(isinstance(v, dict) for v in results.values()):
        raise CheckpointError(f"{run_dir / 'results.json'} must map method -> {{T: accuracy}}")
    history = config.get("history") or []
    metrics_path = run_dir / "metrics.json"
    if metrics_path.is_file():
        rows = read_json(metrics_path, what="metrics")
        if isinstance(rows, list) and rows:
            history = rows
    run = config.get("run", {})
    method = str(run.get("method") or next(iter(results), "run"))
    configs = []
    if (run_dir / "configs.json").is_file():
        configs = read_json(run_dir / "configs.json", what="per-stage config results")
    return RunSummary(run_dir, method, run, results, history, configs)


def aggregate(runs: Sequence[RunSummary]) -> dict[str, dict[str, dict[str, float]]]:
    """Accuracy per method and T over runs: ``{method: {"T": {"mean", "std", "n"}}}``.

    ``std`` is the sample standard deviation (0 for a single run).
    """
    per: dict[str, dict[str, list[float]]] = {}
    for run in runs:
        for method, per_t in run.results.items():
            for t, acc in per_t.items():
                per.setdefault(method, {}).setdefault(str(t), []).append(float(acc))
    out: dict[str, dict[str, dict[str, float]]] = {}
    for method, per_t in per.items():
        out[method] = {}
        for t in sorted(per_t, key=int):
            values = per_t[t]
            out[method][t] = {
                "mean": statistics.fmean(values),
                "std": statistics.stdev(values) if len(values) > 1 else 0.0,
                "n": len(values),
            }
    return out


def plot_mean_accuracy(
    agg: Mapping[str, Mapping[str, Mapping[str, float]]], path: str | os.PathLike, title: str | None = None
) -> Path:
    """Mean accuracy (%) against T per method, a +-std band when several runs; PNG, atomic."""

    def label(method: str, per_t) -> str:
        n = max(v["n"] for v in per_t.values())
        return method.upper() + (f" (n={n})" if n > 1 else "")

    means = {label(m, per_t): {t: v["mean"] for t, v in per_t.items()} for m, per_t in agg.items()}
    stds = {label(m, per_t): {t: v["std"] for t, v in per_t.items()} for m, per_t in agg.items()}
    return plot_accuracy_vs_t(means, path, title=title, spread=stds)


def plot_training_curves(runs: Sequence[RunSummary], path: str | os.PathLike) -> Path | None:
    """Train loss per epoch, one line per run (None when no run has a history)."""
    curves = [(r, [h for h in r.history if "train_loss" in h]) for r in runs]
    curves = [(r, h) for r, h in curves if h]
    if not curves:
        return None
    plt = pyplot()

    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    for run, rows in curves:
        ax.plot(
            [h["epoch"] for h in rows],
            [h["train_loss"] for h in rows],
            marker=".",
            label=f"{run.method.upper()} {run.path.name}",
        )
    ax.set_xlabel("epoch")
    ax.set_ylabel("train loss")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    return save_figure(fig, path)


def _pct(value: float) -> str:
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{100 * value:.2f}"


def render_markdown(
    runs: Sequence[RunSummary], agg: Mapping, title: str, plot_name: str | None, curves_name: str | None
) -> str:
    """The report text (pure: no files touched)."""
    lines = [
        f"# {title}",
        "",
        f"Generated by flexsnn on {datetime.datetime.now().strftime('%Y-%m-%d %H:%M')} from "
        f"{len(runs)} run(s). Accuracy is top-1 on the test split of the time-averaged "
        "readout; BN statistics are re-estimated at every evaluated T.",
        "",
    ]
    lines += [
        "## Runs",
        "",
        "| run | method | model | dataset | train T | seed | epochs | final train loss | final train acc (%) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in runs:
        last = r.history[-1] if r.history else {}
        t_range = f"{r.run.get('t_max')}" if r.method == "sdt" else f"[{r.run.get('t_min')}, {r.run.get('t_max')}]"
        loss = last.get("train_loss")
        lines.append(
            f"| {r.path.name} | {r.method.upper()} | {r.run.get('model', '')} | {r.run.get('dataset', '')} | "
            f"{t_range} | {r.run.get('seed', '')} | {len(r.history) or r.run.get('epochs', '')} | "
            f"{'' if loss is None else f'{loss:.4f}'} | {_pct(last.get('train_acc', float('nan')))} |"
        )
    lines += ["", "## Accuracy across inference time steps", ""]
    if plot_name:
        lines += [f"![accuracy vs T]({plot_name})", ""]
    methods = list(agg)
    if methods:
        several = any(cell["n"] > 1 for per_t in agg.values() for cell in per_t.values())
        unit = "mean ± std over runs, %" if several else "%"
        lines += [
            "| T | " + " | ".join(f"{m.upper()} ({unit})" for m in methods) + " |",
            "|---|" + "---|" * len(methods),
        ]
        ts = sorted({t for per_t in agg.values() for t in per_t}, key=int)
        for t in ts:
            cells = []
            for m in methods:
                cell = agg[m].get(t)
                if cell is None:
                    cells.append("")
                elif several:
                    cells.append(f"{100 * cell['mean']:.2f} ± {100 * cell['std']:.2f} (n={cell['n']})")
                else:
                    cells.append(f"{100 * cell['mean']:.2f}")
            lines.append(f"| {t} | " + " | ".join(cells) + " |")
        lines.append("")
    config_rows = [(r, row) for r in runs for row in r.configs]
    if config_rows:
        lines += ["## Per-stage time configurations", "", "| run | config | accuracy (%) |", "|---|---|---|"]
        for r, row in config_rows:
            lines.append(f"| {r.path.name} | {tuple(row['config'])} | {_pct(row['accuracy'])} |")
        lines.append("")
    lines += ["## Training", ""]
    if curves_name:
        lines += [f"![training curves]({curves_name})", ""]
    for r in runs:
        if not r.history:
            continue
        keys = [k for k in ("epoch", "train_loss", "train_acc", "lr", "seconds") if k in r.history[0]]
        lines += [
            f"### {r.path.name} ({r.method.upper()})",
            "",
            "| " + " | ".join(keys) + " |",
            "|" + "---|" * len(keys),
        ]
        for h in r.history:
            cells = []
            for k in keys:
                v = h.get(k, "")
                cells.append(_pct(v) if k == "train_acc" else (f"{v:.4g}" if isinstance(v, float) else str(v)))
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def write_final_report(
    run_dirs: Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    title: str | None = None,
) -> Path:
    """Write report.md + accuracy_vs_T.png (+ training_curves.png) into ``out_dir``.

    ``run_dirs`` are finished run folders; runs sharing a method are averaged per T.
    Returns the report's path.
    """
    if not run_dirs:
        raise InputError("run_dirs is empty; expected at least one run folder written by `flexsnn train`")
    runs = [read_run(d) for d in run_dirs]
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    agg = aggregate(runs)
    if title is None:
        first = runs[0].run
        title = f"flexsnn report: {first.get('model', 'model')} on {first.get('dataset', 'data')}"
    plot = plot_mean_accuracy(agg, out_dir / PLOT_FILE, title=title) if agg else None
    curves = plot_training_curves(runs, out_dir / CURVES_FILE)
    text = render_markdown(runs, agg, title, plot.name if plot else None, curves.name if curves else None)
    path = out_dir / REPORT_FILE
    with atomic_write(path) as tmp:
        tmp.write_text(text + "\n", encoding="utf-8")
    with atomic_write(out_dir / "report.json") as tmp:
        tmp.write_text(json.dumps({"aggregate": agg, "runs": [str(r.path) for r in runs]}, indent=2) + "\n")
    return path


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m flexsnn.evaluate.final_report",
        description="Markdown report (accuracy vs T, mean ± std over seeds) of finished run folders.",
        epilog="example:\n  python -m flexsnn.evaluate.final_report --out reports/c10 runs/c10_sdt_s* runs/c10_mtt_s*",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("runs", nargs="+", type=Path, help="run folders written by `flexsnn train`")
    parser.add_argument("--out", type=Path, required=True, help="folder for report.md and the plots")
    parser.add_argument("--title", help="report title")
    args = parser.parse_args(argv)
    try:
        path = write_final_report(args.runs, args.out, args.title)
    except (CheckpointError, InputError) as exc:
        print(f"final_report: error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
