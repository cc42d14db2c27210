"""Search per-stage TimeConfigs for the accuracy / cost Pareto front of a trained model.

A TimeConfig gives each of the G stages its own T in ``[t_min, t_max]``: ``(t_max - t_min +
1) ** G`` candidates. Every evaluated config is measured on a validation loader (accuracy
of the time-averaged output and per-sample synaptic ops, :mod:`flexsnn.evaluate.cost`), after
BN calibration at that config when the model has BatchNorm. The objective pair is
(maximise accuracy, minimise cost), cost being ``"synops"`` (ACs + MACs) or ``"energy"`` (the
45 nm estimate).

Strategies (:func:`search`):

``"exhaustive"``
    every config of the space.
``"greedy"``
    start at uniform ``t_max``; at each step evaluate every neighbour with ONE stage's T
    lowered by 1 and move to the neighbour that loses the least accuracy per unit of cost
    saved (``(acc_now - acc_nb) / (cost_now - cost_nb)``, among neighbours that save cost;
    ties: the larger saving); stop at uniform ``t_min`` or when the budget is spent. About
    ``G**2 * (t_max - t_min)`` evaluations: a path from the most to the least expensive config.
``"evolutionary"``
    a seeded (mu + lambda)-style search on the archive of everything evaluated: each child
    takes a parent from the current Pareto front (and, half the time, crosses it stage-wise
    with a second front member), then moves each stage's T by +-1 or +-2 with probability
    1/G (at least one stage moves), clipped to ``[t_min, t_max]``; unseen children are
    evaluated until ``max_evals`` is reached or no unseen child turns up in 200 tries.
``"auto"`` (default)
    exhaustive if the space has at most ``max_evals`` configs, else greedy followed by
    evolutionary search with the remaining budget.

Every strategy also evaluates all uniform configs ``(t,) * G``, so the front always
weakly dominates each of them.
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field

from torch import nn

from flexsnn.errors import InputError, check_choice, check_positive_int
from flexsnn.evaluate.cost import E_AC_PJ, E_MAC_PJ, PerSampleCost, accuracy_and_ops
from flexsnn.evaluate.plotting import pyplot, save_figure
from flexsnn.io import atomic_write
from flexsnn.progress import progress_bar
from flexsnn.train.bn_calibration import batchnorm_layers, calibrate_bn

STRATEGIES = ("auto", "exhaustive", "greedy", "evolutionary")
COSTS = ("synops", "energy")

__all__ = [
    "COSTS",
    "ConfigResult",
    "STRATEGIES",
    "SearchResult",
    "config_space",
    "holdout_split",
    "pareto_front",
    "plot_pareto",
    "search",
    "search_configs",
    "space_size",
    "write_search_csv",
]

TimeConfig = tuple[int, ...]


@dataclass
class ConfigResult(PerSampleCost):
    """One evaluated TimeConfig: accuracy in [0, 1] and per-sample costs."""

    config: TimeConfig
    accuracy: float
    acs: float
    macs: float

    @property
    def uniform(self) -> bool:
        return len(set(self.config)) == 1

    def cost(self, kind: str = "synops") -> float:
        return self.synops if kind == "synops" else self.energy_pj

    def as_dict(self) -> dict:
        return {
            **asdict(self),
            "config": list(self.config),
            "synops": self.synops,
            "energy_pj_estimate": self.energy_pj,
            "uniform": self.uniform,
        }


def pareto_front(costs: Sequence[float], accuracies: Sequence[float]) -> list[int]:
    """Indices of the non-dominated points, by increasing cost (then decreasing accuracy).

    Point ``i`` is dominated if some ``j`` has ``cost_j <= cost_i`` and ``acc_j >= acc_i`` with
    at least one strict. Of exact duplicates only the first index is kept.
    """
    if len(costs) != len(accuracies):
        raise InputError(f"costs and accuracies must have the same length, got {len(costs)} and {len(accuracies)}")
    order = sorted(range(len(costs)), key=lambda i: (costs[i], -accuracies[i], i))
    front, best = [], -math.inf
    for i in order:  # cheapest first: a point is on the front iff it beats every cheaper one
        if accuracies[i] > best:
            front.append(i)
            best = accuracies[i]
    return front


def space_size(num_stages: int, t_min: int, t_max: int) -> int:
    return (t_max - t_min + 1) ** num_stages


def config_space(num_stages: int, t_min: int, t_max: int) -> Iterable[TimeConfig]:
    """Every TimeConfig with each stage's T in ``[t_min, t_max]`` (lexicographic order)."""
    return itertools.product(range(t_min, t_max + 1), repeat=num_stages)


@dataclass
class SearchResult:
    """All evaluated configs (in evaluation order), the front, and how they were found."""

    results: list[ConfigResult]
    strategy: str
    cost: str = "synops"
    t_min: int = 1
    t_max: int = 1
    front: list[ConfigResult] = field(init=False)

    def __post_init__(self):
        idx = pareto_front([r.cost(self.cost) for r in self.results], [r.accuracy for r in self.results])
        self.front = [self.results[i] for i in idx]

    def get(self, config: Sequence[int]) -> ConfigResult | None:
        config = tuple(config)
        return next((r for r in self.results if r.config == config), None)

    @property
    def reference(self) -> ConfigResult:
        """Uniform ``t_max``: the config costs are compared against."""
        ref = self.get((self.t_max,) * len(self.results[0].config))
        if ref is None:
            raise InputError("uniform t_max was not evaluated; it is the reference of cost fractions")
        return ref

    def best_within(self, fraction: float) -> ConfigResult | None:
        """Most accurate config costing at most ``fraction`` of uniform ``t_max`` (None if none)."""
        limit = fraction * self.reference.cost(self.cost)
        fits = [r for r in self.front if r.cost(self.cost) <= limit]
        return max(fits, key=lambda r: r.accuracy) if fits else None

    def as_dict(self) -> dict:
        return {
            "strategy": self.strategy,
            "cost": self.cost,
            "t_min": self.t_min,
            "t_max": self.t_max,
            "energy_model": {"e_ac_pj": E_AC_PJ, "e_mac_pj": E_MAC_PJ, "note": "45 nm estimate"},
            "evaluated": [r.as_dict() for r in self.results],
            "front": [r.as_dict() for r in self.front],
        }


# ---- strategies (model-free: ``evaluate(config) -> ConfigResult``) ----------------------------------
class _Evaluations:
    """Cache + budget around the evaluate callback."""

    def __init__(self, evaluate: Callable[[TimeConfig], ConfigResult], max_evals: int, progress: bool):
        self.evaluate, self.max_evals = evaluate, max_evals
        self.done: dict[TimeConfig, ConfigResult] = {}
        self.bar = progress_bar(total=max_evals, desc="configs", enabled=progress, leave=False)

    @property
    def left(self) -> int:
        return self.max_evals - len(self.done)

    def __call__(self, cfg: TimeConfig) -> ConfigResult | None:
        if cfg not in self.done:
            if self.left <= 0:
                return None
            result = self.evaluate(cfg)
            if tuple(result.config) != cfg:
                raise InputError(f"evaluate({cfg}) returned a result for config {result.config}")
            self.done[cfg] = result
            self.bar.update(1)
        return self.done[cfg]


def _greedy(ev: _Evaluations, g: int, t_min: int, t_max: int, cost: str) -> None:
    current = ev((t_max,) * g)
    while current is not None and any(t > t_min for t in current.config):
        neighbours = []
        for s in range(g):
            if current.config[s] > t_min:
                cfg = current.config[:s] + (current.config[s] - 1,) + current.config[s + 1 :]
                r = ev(cfg)
                if r is None:
                    return  # budget spent
                neighbours.append(r)
        saving = [(r, current.cost(cost) - r.cost(cost)) for r in neighbours]
        cheaper = [(r, s) for r, s in saving if s > 0]
        if cheaper:
            current = min(cheaper, key=lambda rs: ((current.accuracy - rs[0].accuracy) / rs[1], -rs[1]))[0]
        else:  # measured costs did not drop (rare): take the cheapest neighbour
            current = min(neighbours, key=lambda r: (r.cost(cost), -r.accuracy))


def _evolutionary(
    ev: _Evaluations, g: int, t_min: int, t_max: int, cost: str, rng: random.Random, population: int = 8
) -> None:
    if t_min == t_max:
        return
    while len(ev.done) < population and ev.left > 0:  # random start on top of what is known
        ev(tuple(rng.randint(t_min, t_max) for _ in range(g)))
    stale = 0
    while ev.left > 0 and stale < 200:
        results = list(ev.done.values())
        front = [results[i] for i in pareto_front([r.cost(cost) for r in results], [r.accuracy for r in results])]
        child = list(rng.choice(front).config)
        if len(front) > 1 and rng.random() < 0.5:
            other = rng.choice(front).config
            child = [a if rng.random() < 0.5 else b for a, b in zip(child, other)]
        moved = [s for s in range(g) if rng.random() < 1.0 / g] or [rng.randrange(g)]
        for s in moved:
            child[s] = min(t_max, max(t_min, child[s] + rng.choice((-2, -1, 1, 2))))
        cfg = tuple(child)
        if cfg in ev.done:
            stale += 1
            continue
        stale = 0
        ev(cfg)


def search(
    evaluate: Callable[[TimeConfig], ConfigResult],
    num_stages: int,
    t_min: int,
    t_max: int,
    strategy: str = "auto",
    max_evals: int = 128,
    cost: str = "synops",
    seed: int = 0,
    progress: bool = False,
) -> SearchResult:
    """Run ``strategy`` over ``[t_min, t_max] ** num_stages`` with ``evaluate(config) -> ConfigResult``.

    Each config is evaluated at most once; at most ``max_evals`` are evaluated, the uniform
    configs first (so ``max_evals`` must be at least ``t_max - t_min + 1``).
    """
    num_stages = check_positive_int(num_stages, "num_stages")
    t_min, t_max = check_positive_int(t_min, "t_min"), check_positive_int(t_max, "t_max")
    if t_min > t_max:
        raise InputError(f"t_min must be <= t_max, got t_min={t_min}, t_max={t_max}")
    check_choice(strategy, "strategy", STRATEGIES)
    check_choice(cost, "cost", COSTS)
    max_evals = check_positive_int(max_evals, "max_evals")
    if max_evals < t_max - t_min + 1:
        raise InputError(f"max_evals must be >= {t_max - t_min + 1} (one per uniform config), got {max_evals}")
    size = space_size(num_stages, t_min, t_max)
    if strategy == "auto":
        strategy = "exhaustive" if size <= max_evals else "greedy+evolutionary"
    elif strategy == "exhaustive" and size > max_evals:
        raise InputError(
            f"exhaustive search needs {size} evaluations (({t_max} - {t_min} + 1) ** {num_stages}) but max_evals is "
            f"{max_evals}; raise max_evals or use strategy 'greedy', 'evolutionary' or 'auto'"
        )
    ev = _Evaluations(evaluate, min(max_evals, size), progress)
    try:
        for t in range(t_max, t_min - 1, -1):
            ev((t,) * num_stages)
        if strategy == "exhaustive":
            for cfg in config_space(num_stages, t_min, t_max):
                ev(cfg)
        if "greedy" in strategy:
            _greedy(ev, num_stages, t_min, t_max, cost)
        if "evolutionary" in strategy:
            _evolutionary(ev, num_stages, t_min, t_max, cost, random.Random(seed))
    finally:
        ev.bar.close()
    return SearchResult(list(ev.done.values()), strategy, cost, t_min, t_max)


# ---- on a model -----------------------------------------------------------------------------
def search_configs(
    model: nn.Module,
    val_loader: Iterable,
    t_min: int,
    t_max: int,
    calib_loader: Iterable | None = None,
    calib_batches: int = 10,
    strategy: str = "auto",
    max_evals: int = 128,
    cost: str = "synops",
    seed: int = 0,
    max_batches: int | None = None,
    progress: bool = True,
) -> SearchResult:
    """Pareto search over a StagedNet's per-stage TimeConfigs, measured on ``val_loader``.

    For a BN model every config is first calibrated on ``calib_loader`` (``calib_batches``
    training batches), as :func:`flexsnn.evaluate.evaluate_config` does. ``max_batches``
    limits the validation batches per config. The model is left calibrated at the last
    evaluated config.
    """
    if not hasattr(model, "num_stages"):
        raise InputError(f"model must be a StagedNet (with num_stages), got {type(model).__name__}")
    has_bn = bool(batchnorm_layers(model))
    if has_bn and calib_loader is None:
        raise InputError(
            "calib_loader is required: the model has BatchNorm, whose statistics must be re-estimated at every "
            "TimeConfig the search evaluates (pass the training loader)"
        )

    def evaluate(cfg: TimeConfig) -> ConfigResult:
        if has_bn:
            calibrate_bn(model, calib_loader, cfg, calib_batches)
        acc, counts = accuracy_and_ops(model, val_loader, cfg, max_batches)
        return ConfigResult(tuple(cfg), acc, counts.acs, counts.macs)

    return search(evaluate, model.num_stages, t_min, t_max, strategy, max_evals, cost, seed, progress)


# ---- reports --------------------------------------------------------------------------------
def write_search_csv(path, results: Sequence[ConfigResult], front: Sequence[ConfigResult] = ()) -> None:
    """CSV: config, accuracy, acs, macs, synops, energy_uJ_estimate, uniform, on_front (atomic)."""
    import csv

    on_front = {r.config for r in front}
    with atomic_write(path) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["config", "accuracy", "acs", "macs", "synops", "energy_uJ_estimate", "uniform", "on_front"])
        for r in results:
            writer.writerow(
                [
                    ",".join(map(str, r.config)),
                    f"{r.accuracy:.4f}",
                    f"{r.acs:.1f}",
                    f"{r.macs:.1f}",
                    f"{r.synops:.1f}",
                    f"{r.energy_pj / 1e6:.6f}",
                    int(r.uniform),
                    int(r.config in on_front),
                ]
            )


def plot_pareto(result: SearchResult, path, title: str | None = None, annotate: int = 8):
    """Scatter of every evaluated config (accuracy vs cost), front as a line, uniform T marked."""
    plt = pyplot()

    scale, unit = (1e6, "M synaptic ops") if result.cost == "synops" else (1e6, "uJ (45 nm estimate)")
    xs = lambda rs: [r.cost(result.cost) / scale for r in rs]  # noqa: E731
    ys = lambda rs: [100 * r.accuracy for r in rs]  # noqa: E731
    fig, ax = plt.subplots(figsize=(6.5, 4.5), dpi=120)
    ax.scatter(xs(result.results), ys(result.results), s=14, color="0.7", label="evaluated configs")
    ax.plot(xs(result.front), ys(result.front), "-o", color="C3", ms=5, label="Pareto front")
    uniform = sorted((r for r in result.results if r.uniform), key=lambda r: r.config[0])
    ax.scatter(
        xs(uniform),
        ys(uniform),
        marker="s",
        s=40,
        facecolors="none",
        edgecolors="C0",
        linewidths=1.5,
        label="uniform T",
        zorder=3,
    )
    for r in uniform:
        ax.annotate(
            f"T={r.config[0]}",
            (r.cost(result.cost) / scale, 100 * r.accuracy),
            fontsize=7,
            xytext=(4, -10),
            textcoords="offset points",
            color="C0",
        )
    step = max(1, math.ceil(len(result.front) / max(1, annotate)))
    for r in result.front[::step]:
        ax.annotate(
            ",".join(map(str, r.config)),
            (r.cost(result.cost) / scale, 100 * r.accuracy),
            fontsize=7,
            xytext=(4, 4),
            textcoords="offset points",
            color="C3",
        )
    ax.set_xlabel(f"cost per sample ({unit})")
    ax.set_ylabel("validation accuracy (%)")
    ax.set_title(title or f"TimeConfig search ({result.strategy}), {len(result.results)} configs")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path)


# ---- validation halves --------------------------------------------------------------------------
def holdout_split(loader) -> tuple:
    """``(val_loader, report_loader)`` over the even / odd samples of ``loader.dataset``.

    The search picks configs on the even half; the odd half measures the chosen ones, so the
    reported accuracy is not the one the choice was optimised on. Both keep the batch size
    and are not shuffled.
    """
    from torch.utils.data import DataLoader, Subset

    dataset = getattr(loader, "dataset", None)
    if dataset is None or len(dataset) < 2:
        raise InputError("loader must be a DataLoader over a dataset of at least 2 samples to split in halves")
    batch = loader.batch_size or 1
    halves = (Subset(dataset, range(0, len(dataset), 2)), Subset(dataset, range(1, len(dataset), 2)))
    return tuple(DataLoader(h, batch_size=batch, shuffle=False) for h in halves)
