"""Pareto search over TimeConfigs: front correctness, strategies, and the model-level search."""

import random

import pytest
import torch
from conftest import make_frame_loaders, tiny_staged_net

from flexsnn.errors import InputError
from flexsnn.evaluate import evaluate_config
from flexsnn.evaluate.cost import count_ops
from flexsnn.evaluate.pareto import (
    ConfigResult,
    SearchResult,
    config_space,
    holdout_split,
    pareto_front,
    search,
    search_configs,
    space_size,
)


def test_pareto_front_by_hand():
    costs = [1, 2, 3, 2, 4, 5]
    accs = [0.5, 0.7, 0.6, 0.7, 0.9, 0.9]
    # 2 is dominated by 1; 3 duplicates 1 (first kept); 5 is dominated by 4 (same acc, dearer)
    assert pareto_front(costs, accs) == [0, 1, 4]
    with pytest.raises(InputError, match="same length"):
        pareto_front([1], [])


def _dominates(a, b):
    return a[0] <= b[0] and a[1] >= b[1] and (a[0] < b[0] or a[1] > b[1])


def test_front_is_non_dominated_and_covers_every_point():
    rng = random.Random(3)
    pts = [(rng.randint(0, 20), rng.randint(0, 20) / 20) for _ in range(200)]
    front = pareto_front(*zip(*pts))
    for i in front:
        assert not any(_dominates(p, pts[i]) for p in pts)
    for p in pts:  # every point is on the front or weakly dominated by a front point
        assert any(pts[i][0] <= p[0] and pts[i][1] >= p[1] for i in front)


def _synthetic(weights=(10, 1), loss=(0.01, 0.2), t_max=3):
    """Cost sum(w_i * T_i); accuracy 0.9 - sum(loss_i * (t_max - T_i)); records the call order."""
    calls = []

    def evaluate(cfg):
        calls.append(cfg)
        acc = 0.9 - sum(l * (t_max - t) for l, t in zip(loss, cfg))
        return ConfigResult(cfg, acc, float(sum(w * t for w, t in zip(weights, cfg))), 0.0)

    return evaluate, calls


def test_exhaustive_evaluates_every_config_once():
    evaluate, calls = _synthetic(weights=(1, 2, 3), loss=(0.1, 0.05, 0.02))
    search(evaluate, 3, 1, 3, strategy="exhaustive", max_evals=27)
    assert sorted(calls) == sorted(config_space(3, 1, 3)) and len(calls) == space_size(3, 1, 3) == 27
    assert search(_synthetic()[0], 2, 1, 3, strategy="auto", max_evals=9).strategy == "exhaustive"
    with pytest.raises(InputError, match="exhaustive search needs 27"):
        search(evaluate, 3, 1, 3, strategy="exhaustive", max_evals=20)


def test_greedy_follows_least_accuracy_lost_per_op_saved():
    # lowering stage 0 saves 10 ops for 0.01 accuracy; stage 1 saves 1 op for 0.2: stage 0 goes first
    evaluate, calls = _synthetic()
    result = search(evaluate, 2, 1, 3, strategy="greedy", max_evals=100)
    assert calls[:3] == [(3, 3), (2, 2), (1, 1)]  # uniform configs first
    assert calls[3:] == [(2, 3), (3, 2), (1, 3), (1, 2)]
    # costs 11, 12, 13, 23, 33; (2, 2) (cost 22, acc 0.69) is dominated by (1, 3) (13, 0.88)
    assert [r.config for r in result.front] == [(1, 1), (1, 2), (1, 3), (2, 3), (3, 3)]


def test_front_weakly_dominates_every_uniform_point_for_every_strategy():
    loss = (0.03, 0.001, 0.05, 0.002)
    for strategy in ("exhaustive", "greedy", "evolutionary", "auto"):
        evaluate, calls = _synthetic(weights=(5, 1, 3, 2), loss=loss, t_max=4)
        budget = 256 if strategy == "exhaustive" else 40
        result = search(evaluate, 4, 1, 4, strategy=strategy, max_evals=budget, seed=1)
        assert len(calls) == len(set(calls)) <= budget
        assert all(1 <= t <= 4 for cfg in calls for t in cfg)
        uniform = [r for r in result.results if r.uniform]
        assert len(uniform) == 4
        for u in uniform:
            assert any(f.synops <= u.synops and f.accuracy >= u.accuracy for f in result.front)
        assert max(f.accuracy for f in result.front) >= max(u.accuracy for u in uniform)
        costs = [f.synops for f in result.front]
        assert costs == sorted(costs) and [f.accuracy for f in result.front] == sorted(f.accuracy for f in result.front)


def test_evolutionary_is_seeded_and_finds_better_than_uniform_points():
    runs = []
    for _ in range(2):
        evaluate, calls = _synthetic(weights=(5, 1, 3, 2), loss=(0.03, 0.001, 0.05, 0.002), t_max=4)
        search(evaluate, 4, 1, 4, strategy="evolutionary", max_evals=60, seed=7)
        runs.append(calls)
    assert runs[0] == runs[1] and len(runs[0]) == 60
    evaluate, _ = _synthetic(weights=(5, 1, 3, 2), loss=(0.03, 0.001, 0.05, 0.002), t_max=4)
    result = search(evaluate, 4, 1, 4, strategy="evolutionary", max_evals=60, seed=7)
    # stage 1 is cheap to lower and barely matters: (4, 1, 4, 1) beats uniform 4 at lower cost
    best = result.best_within(0.9)
    assert best is not None and best.accuracy > 0.89 and best.synops <= 0.9 * result.reference.synops


def test_best_within_budget():
    rows = [
        ConfigResult((4, 4), 0.90, 100.0, 0.0),
        ConfigResult((2, 4), 0.88, 60.0, 0.0),
        ConfigResult((4, 1), 0.85, 45.0, 0.0),
        ConfigResult((1, 1), 0.50, 20.0, 0.0),
        ConfigResult((2, 2), 0.80, 50.0, 0.0),
    ]
    result = SearchResult(rows, "exhaustive", t_min=1, t_max=4)
    assert result.best_within(0.5).config == (4, 1)
    assert result.best_within(0.6).config == (2, 4)
    assert result.best_within(0.1) is None
    assert [r.config for r in result.front] == [(1, 1), (4, 1), (2, 4), (4, 4)]


def test_search_arguments_are_checked():
    evaluate, _ = _synthetic()
    with pytest.raises(InputError, match="t_min must be <= t_max"):
        search(evaluate, 2, 3, 1)
    with pytest.raises(InputError, match="strategy"):
        search(evaluate, 2, 1, 3, strategy="annealing")
    with pytest.raises(InputError, match="max_evals must be >= 3"):
        search(evaluate, 2, 1, 3, max_evals=2)


def test_search_on_a_bn_model_calibrates_each_config_and_measures_it():
    torch.manual_seed(0)
    train, test = make_frame_loaders(t=2)
    train = torch.utils.data.DataLoader(train.dataset, batch_size=16)  # same calibration batches every time
    model = tiny_staged_net(bn=True)
    with pytest.raises(InputError, match="calib_loader is required"):
        search_configs(model, test, 1, 2)
    result = search_configs(model, test, 1, 2, calib_loader=train, calib_batches=2, progress=False)
    assert sorted(r.config for r in result.results) == [(1, 1), (1, 2), (2, 1), (2, 2)]
    assert model.bn_calibrated_for == result.results[-1].config
    for r in result.results:
        acc = evaluate_config(model, test, r.config, train, calib_batches=2)  # calibrates at r.config
        assert r.accuracy == acc
        assert r.synops == pytest.approx(count_ops(model, test, r.config).synops)


def test_holdout_split_halves_the_dataset():
    _, test = make_frame_loaders(n_test=9)
    val, report = holdout_split(test)
    assert len(val.dataset) == 5 and len(report.dataset) == 4
    assert torch.equal(next(iter(report))[0][0], test.dataset[1][0])
