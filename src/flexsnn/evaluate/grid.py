"""Per-stage configuration heatmap: accuracy over a 2-D grid of two stages' T, the others fixed.

The paper reads temporal flexibility off such grids: a flexible model is accurate over the
whole grid, a uniform-T model only near its training T on the diagonal.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from flexsnn.errors import InputError, check_positive_int
from flexsnn.evaluate.plotting import pyplot, save_figure
from flexsnn.io import atomic_write, write_json

__all__ = ["grid_configs", "plot_config_grid", "write_config_grid"]


def grid_configs(
    num_stages: int, stages: tuple[int, int], t_values: Sequence[int], fixed: int
) -> list[tuple[int, ...]]:
    """Configs with stage ``stages[0]`` (rows) and ``stages[1]`` (columns) over ``t_values``
    and every other stage at ``fixed``; stages are 1-based. Row-major order."""
    i, j = stages
    for s in (i, j):
        if isinstance(s, bool) or not isinstance(s, int) or not 1 <= s <= num_stages:
            raise InputError(f"grid stages must be integers in 1..{num_stages} (the model's stages), got {stages!r}")
    if i == j:
        raise InputError(f"grid stages must be two different stages, got {stages!r}")
    t_values = [check_positive_int(t, "grid T") for t in t_values]
    if not t_values:
        raise InputError("grid T values are empty; expected at least one T >= 1")
    fixed = check_positive_int(fixed, "fixed T")
    configs = []
    for ti in t_values:
        for tj in t_values:
            cfg = [fixed] * num_stages
            cfg[i - 1], cfg[j - 1] = ti, tj
            configs.append(tuple(cfg))
    return configs


def plot_config_grid(
    accuracy: Sequence[Sequence[float]],
    t_values: Sequence[int],
    stages: tuple[int, int],
    path: str | os.PathLike,
    title: str = "",
) -> Path:
    """Heatmap PNG: rows stage ``stages[0]``'s T, columns stage ``stages[1]``'s T, cells accuracy %."""
    plt = pyplot()
    n = len(t_values)
    fig, ax = plt.subplots(figsize=(1.0 + 0.55 * n, 0.8 + 0.5 * n), dpi=120)
    values = [[100 * a for a in row] for row in accuracy]
    image = ax.imshow(values, cmap="viridis", origin="lower", vmin=min(map(min, values)), vmax=max(map(max, values)))
    ax.set_xticks(range(n), [str(t) for t in t_values])
    ax.set_yticks(range(n), [str(t) for t in t_values])
    ax.set_xlabel(f"T of stage {stages[1]}")
    ax.set_ylabel(f"T of stage {stages[0]}")
    mid = (min(map(min, values)) + max(map(max, values))) / 2
    for r, row in enumerate(values):
        for c, v in enumerate(row):
            ax.text(c, r, f"{v:.1f}", ha="center", va="center", fontsize=7, color="black" if v > mid else "white")
    fig.colorbar(image, ax=ax, label="accuracy (%)")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path)


def write_config_grid(
    out: str | os.PathLike,
    rows: Sequence[dict[str, Any]],
    t_values: Sequence[int],
    stages: tuple[int, int],
    title: str = "",
) -> dict[str, Any]:
    """``rows`` (from :func:`flexsnn.evaluate.sweep_configs` over :func:`grid_configs`) as
    ``config_grid.csv``, ``config_grid.json`` and ``config_grid.png`` in ``out``; returns the JSON."""
    out = Path(out)
    n = len(t_values)
    if len(rows) != n * n:
        raise InputError(f"expected {n * n} grid rows (row-major over the T values), got {len(rows)}")
    accuracy = [[rows[r * n + c]["accuracy"] for c in range(n)] for r in range(n)]
    grid = {
        "stages": list(stages),
        "t_values": list(t_values),
        "accuracy": accuracy,
        "configs": [list(row["config"]) for row in rows],
    }
    write_json(out / "config_grid.json", grid)
    with atomic_write(out / "config_grid.csv") as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow([f"T_stage{stages[0]}/T_stage{stages[1]}", *t_values])
        for t, row in zip(t_values, accuracy):
            writer.writerow([t, *[f"{a:.4f}" for a in row]])
    plot_config_grid(accuracy, t_values, stages, out / "config_grid.png", title)
    return grid
