"""`flexsnn search` and `flexsnn early-exit` on a tiny trained run (synthetic loaders)."""

import csv
import json

import pytest
from conftest import make_frame_loaders
from torch.utils.data import DataLoader

import flexsnn.runs.evaluate as run_evaluate
from flexsnn.cli import main
from flexsnn.runs import RunSpec, train_run

TINY = {"in_shape": [2, 6, 6], "pool": 1, "hidden": [8, 8], "num_classes": 3}


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    train, test = make_frame_loaders(t=2, n_test=32)
    # unshuffled: every BN calibration sees the same batches, so calibrated runs are comparable exactly
    loaders = (DataLoader(train.dataset, batch_size=16), test)
    spec = RunSpec(
        model="digits_mlp",
        model_kwargs=TINY,
        method="mtt",
        t_min=1,
        t_max=2,
        epochs=1,
        batch_size=16,
        calib_batches=2,
        seed=3,
    )
    run = tmp_path_factory.mktemp("runs") / "mtt"
    train_run(spec, run, progress=False, loaders=loaders)
    return run, loaders


@pytest.fixture
def synthetic_data(monkeypatch, tiny_run):
    # the CLI builds the run's loaders from its spec: hand it the tiny synthetic ones instead
    monkeypatch.setattr(run_evaluate, "build_loaders", lambda spec, shuffle_seed=None: tiny_run[1])


@pytest.mark.parametrize("verb", ["search", "early-exit"])
def test_help_has_examples(verb, capsys):
    with pytest.raises(SystemExit) as exc:
        main([verb, "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "examples:" in out and f"flexsnn {verb}" in out


def test_search_writes_front_plot_and_a_usable_config(tiny_run, synthetic_data, tmp_path, capsys):
    run, _ = tiny_run
    out = tmp_path / "search"
    assert main(["search", "--run", str(run), "--out", str(out), "--quiet", "--budget", "1"]) == 0
    printed = capsys.readouterr().out
    with open(out / "search_configs.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert sorted(r["config"] for r in rows) == ["1,1", "1,2", "2,1", "2,2"]  # exhaustive over [1, 2]^2
    assert {r["config"] for r in rows if r["uniform"] == "1"} == {"1,1", "2,2"}
    with open(out / "pareto_front.csv") as fh:
        front = list(csv.DictReader(fh))
    assert front and all(r["on_front"] == "1" for r in front)
    costs = [float(r["synops"]) for r in front]
    assert costs == sorted(costs)
    assert (out / "pareto.png").stat().st_size > 1000
    summary = json.loads((out / "search.json").read_text())
    assert summary["strategy"] == "exhaustive" and summary["split"] == "half"
    # budget 1: the most accurate config costing at most uniform T_max's ops
    best = max(
        (r for r in rows if float(r["synops"]) <= float(next(r2 for r2 in rows if r2["config"] == "2,2")["synops"])),
        key=lambda r: float(r["accuracy"]),
    )
    cfg = ",".join(map(str, summary["chosen_config"]))
    assert float(best["accuracy"]) == float(next(r for r in rows if r["config"] == cfg)["accuracy"])
    assert f"--config {cfg}" in printed
    assert set(summary["report"]) == {"reference", "chosen"}  # measured again on the odd test samples
    # the printed config is accepted by `flexsnn evaluate`
    assert (
        main(["evaluate", "--run", str(run), "--config", cfg, "--t", "1", "--quiet", "--out", str(tmp_path / "eval")])
        == 0
    )


def test_early_exit_writes_curves(tiny_run, synthetic_data, tmp_path, capsys):
    run, _ = tiny_run
    out = tmp_path / "ee"
    assert (
        main(["early-exit", "--run", str(run), "--out", str(out), "--thresholds", "0", "0.9", "2", "--rebinned"]) == 0
    )
    with open(out / "early_exit.csv") as fh:
        rows = list(csv.DictReader(fh))
    early = [r for r in rows if r["mode"] == "early_exit"]
    fixed = [r for r in rows if r["mode"] == "fixed_T"]
    assert [float(r["avg_T"]) for r in fixed] == [1.0, 2.0]
    assert float(early[0]["avg_T"]) == 1.0 and float(early[-1]["avg_T"]) == 2.0
    assert early[0]["accuracy"] == fixed[0]["accuracy"] and early[-1]["accuracy"] == fixed[-1]["accuracy"]
    assert (out / "early_exit.png").stat().st_size > 1000
    summary = json.loads((out / "early_exit.json").read_text())
    assert summary["time_config"] == [2, 2] and set(summary["uniform_rebinned"]) == {"1", "2"}
    # uniform T = T_max with the data binned at T_max is the same run as the full early-exit pass
    assert summary["uniform_rebinned"]["2"] == pytest.approx(float(early[-1]["accuracy"]), abs=1e-4)


def test_user_errors_are_one_line(tiny_run, synthetic_data, tmp_path, capsys):
    run, _ = tiny_run
    assert main(["search", "--run", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "run folder not found" in err
    assert (
        main(
            [
                "search",
                "--run",
                str(run),
                "--strategy",
                "exhaustive",
                "--t-max",
                "9",
                "--max-evals",
                "10",
                "--out",
                str(tmp_path / "s"),
            ]
        )
        == 2
    )
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "exhaustive search needs" in err
    assert main(["search", "--run", str(run), "--budget", "1.5", "--out", str(tmp_path / "s")]) == 2
    assert "budget" in capsys.readouterr().err
    assert main(["early-exit", "--run", str(run), "--config", "2,2,2", "--out", str(tmp_path / "e")]) == 2
    assert "time_config must have 2 entries" in capsys.readouterr().err
