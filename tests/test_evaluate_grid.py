"""Per-stage configuration grid: the configs, the files, and the CLI's --grid."""

from __future__ import annotations

import csv
import json

import pytest

from flexsnn.errors import InputError
from flexsnn.evaluate.grid import grid_configs, write_config_grid


def test_grid_configs_vary_two_stages_row_major_and_fix_the_others():
    assert grid_configs(3, (1, 3), [1, 2], 6) == [(1, 6, 1), (1, 6, 2), (2, 6, 1), (2, 6, 2)]
    assert grid_configs(2, (2, 1), [4, 5], 9) == [(4, 4), (5, 4), (4, 5), (5, 5)]  # rows: stage 2
    for bad in [(0, 1), (1, 4), (2, 2)]:
        with pytest.raises(InputError, match="grid stages"):
            grid_configs(3, bad, [1], 6)


def test_write_config_grid_files(tmp_path):
    configs = grid_configs(2, (1, 2), [1, 3], 3)
    rows = [{"config": list(c), "accuracy": 0.1 * (k + 1)} for k, c in enumerate(configs)]
    grid = write_config_grid(tmp_path, rows, [1, 3], (1, 2), title="t")
    assert grid["accuracy"] == [[0.1, 0.2], [pytest.approx(0.3), 0.4]]
    assert json.loads((tmp_path / "config_grid.json").read_text())["configs"] == [[1, 1], [1, 3], [3, 1], [3, 3]]
    table = list(csv.reader((tmp_path / "config_grid.csv").open()))
    assert table[0] == ["T_stage1/T_stage2", "1", "3"] and table[2] == ["3", "0.3000", "0.4000"]
    assert (tmp_path / "config_grid.png").read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(InputError, match="expected 4 grid rows"):
        write_config_grid(tmp_path, rows[:3], [1, 3], (1, 2))


def test_cli_evaluate_grid(tmp_path, capsys, monkeypatch):
    from conftest import make_frame_loaders

    import flexsnn.runs.evaluate as run_evaluate
    from flexsnn.cli import main
    from flexsnn.runs import RunSpec, train_run

    spec = RunSpec(
        model="digits_mlp",
        model_kwargs={"in_shape": [2, 6, 6], "num_classes": 3, "hidden": [32, 16], "pool": 1},
        method="mtt",
        t_max=3,
        epochs=1,
        batch_size=16,
        calib_batches=2,
    )
    train_run(spec, tmp_path / "run", progress=False, loaders=make_frame_loaders(t=3))
    monkeypatch.setattr(run_evaluate, "build_loaders", lambda spec, shuffle_seed=None: make_frame_loaders(t=3))
    assert (
        main(
            [
                "evaluate",
                "--run",
                str(tmp_path / "run"),
                "--t",
                "3",
                "--grid",
                "1,2",
                "--grid-t",
                "1",
                "3",
                "--no-rebin",
                "--quiet",
            ]
        )
        == 0
    )
    grid = json.loads((tmp_path / "run" / "eval" / "config_grid.json").read_text())
    assert grid["stages"] == [1, 2] and grid["configs"][1][:2] == [1, 3]
    assert all(0.0 <= a <= 1.0 for row in grid["accuracy"] for a in row)
    assert "config_grid.png" in capsys.readouterr().out
    with pytest.raises(SystemExit):  # argparse refuses it before anything runs
        main(["evaluate", "--run", str(tmp_path / "run"), "--grid", "1"])
