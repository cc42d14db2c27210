"""Results files and plots: accuracy per method per T as JSON, CSV, a table and a PNG.

The results shape is public: ``{"sdt": {"1": 0.91, "2": ...}, "mtt": {...}}`` (accuracy in
[0, 1], keys are T as strings).
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Mapping
from pathlib import Path

from flexsnn.evaluate.plotting import pyplot, save_figure
from flexsnn.io import atomic_write, write_json

Results = Mapping[str, Mapping[str, float]]


def results_from_sweep(sweep: Mapping[int, float]) -> dict[str, float]:
    """``{T: acc}`` -> ``{"T": acc}`` sorted by T."""
    return {str(t): float(acc) for t, acc in sorted(sweep.items())}


def _t_values(results: Results) -> list[str]:
    return sorted({t for per_t in results.values() for t in per_t}, key=int)


def write_results(out_dir: str | os.PathLike, results: Results, stem: str = "results") -> tuple[Path, Path]:
    """Write ``<stem>.json`` and ``<stem>.csv`` (columns: T, then one per method)."""
    out_dir = Path(out_dir)
    json_path, csv_path = out_dir / f"{stem}.json", out_dir / f"{stem}.csv"
    write_json(json_path, {m: dict(v) for m, v in results.items()})
    buf = io.StringIO()
    writer = csv.writer(buf)
    methods = list(results)
    writer.writerow(["T", *methods])
    for t in _t_values(results):
        writer.writerow([t, *(f"{results[m][t]:.4f}" if t in results[m] else "" for m in methods)])
    with atomic_write(csv_path) as tmp:
        tmp.write_text(buf.getvalue())
    return json_path, csv_path


def format_table(results: Results) -> str:
    """A plain-text table: one row per T, one column per method, accuracy in percent."""
    methods = list(results)
    header = f"{'T':>4} " + " ".join(f"{m.upper():>8}" for m in methods)
    lines = [header, "-" * len(header)]
    for t in _t_values(results):
        cells = " ".join(f"{100 * results[m][t]:8.2f}" if t in results[m] else f"{'':>8}" for m in methods)
        lines.append(f"{t:>4} {cells}")
    return "\n".join(lines)


def plot_accuracy_vs_t(
    results: Results,
    path: str | os.PathLike,
    title: str | None = None,
    spread: Mapping[str, Mapping[str, float]] | None = None,
) -> Path:
    """Accuracy (%) against inference T, one line per method; written atomically as PNG.

    ``spread`` (same keys, values in [0, 1]) draws a +- band, e.g. the std over seeds.
    """
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    for method, per_t in results.items():
        ts = sorted(per_t, key=int)
        x = [int(t) for t in ts]
        y = [100 * per_t[t] for t in ts]
        ax.plot(x, y, marker="o", label=method.upper() if method.isidentifier() else method)
        if spread and method in spread:
            s = [100 * spread[method].get(t, 0.0) for t in ts]
            ax.fill_between(x, [a - b for a, b in zip(y, s)], [a + b for a, b in zip(y, s)], alpha=0.2)
    ax.set_xlabel("inference time steps T")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(title or "Accuracy across time steps")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return save_figure(fig, path)


def plot_accuracy_vs_t_panels(
    panels: Mapping[str, Results],
    path: str | os.PathLike,
    title: str | None = None,
    log_t: bool = True,
) -> Path:
    """Accuracy (%) against T side by side: one panel per entry of ``panels`` (its title ->
    results as for :func:`plot_accuracy_vs_t`), the same methods in the same colours, a shared
    y axis; ``log_t`` puts T on a log axis (sweeps up to tens of steps). Written atomically."""
    plt = pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.8), dpi=120, sharey=True, squeeze=False)
    colours: dict[str, str] = {}
    for ax, (name, results) in zip(axes[0], panels.items()):
        for method, per_t in results.items():
            ts = sorted(per_t, key=int)
            label = method.upper() if method.isidentifier() else method
            line = ax.plot(
                [int(t) for t in ts],
                [100 * per_t[t] for t in ts],
                marker="o",
                ms=3,
                label=label,
                color=colours.get(label),
            )[0]
            colours.setdefault(label, line.get_color())
        if log_t:
            ax.set_xscale("log")
            top = max((int(t) for per_t in results.values() for t in per_t), default=1)
            ticks = [t for t in (1, 2, 5, 10, 20, 50, 100, 200, 500) if t <= top]
            ax.set_xticks(ticks, [str(t) for t in ticks])
            ax.minorticks_off()
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("inference time steps T")
        ax.grid(alpha=0.3, which="both")
    axes[0][0].set_ylabel("test accuracy (%)")
    axes[0][0].legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return save_figure(fig, path)
