"""`flexsnn deploy prepare | simulate | export`: happy path on tiny data, one-line errors."""

from __future__ import annotations

import json
import math

import nir
import numpy as np
import pytest
import torch
from conftest import tiny_nmnist_loaders, train_tiny_nmnist_run

from flexsnn.cli import main

DTYPE = np.dtype([("x", np.int16), ("y", np.int16), ("t", np.int64), ("p", np.int8)])


def tiny_loaders():
    return tiny_nmnist_loaders(t=4)


@pytest.fixture
def base_run(tmp_path, monkeypatch):
    import flexsnn.runs.deploy as run_deploy

    train_tiny_nmnist_run(tmp_path / "base", t=4)
    monkeypatch.setattr(run_deploy, "build_loaders", lambda spec, shuffle_seed=None: tiny_loaders())
    return tmp_path / "base"


def fake_event_split(dataset, split="test", root=None, max_samples=None):
    rng = np.random.default_rng(0)
    events, labels = [], []
    for i in range(max_samples or 6):
        ev = np.zeros(80, DTYPE)
        ev["x"], ev["y"], ev["p"] = rng.integers(0, 8, 80), rng.integers(0, 8, 80), rng.integers(0, 2, 80)
        ev["t"] = np.sort(rng.integers(0, 50_000, 80))
        events.append(ev)
        labels.append(i % 3)
    return events, labels, (8, 8, 2)


def one_line_error(capsys, argv, expected):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert expected in err, err


def test_prepare_simulate_export(base_run, tmp_path, capsys, monkeypatch):
    import flexsnn.cli.deploy_cmd as deploy_cmd
    from flexsnn.deploy import from_nir
    from flexsnn.runs import load_deployed

    for method in ("sdt", "mtt"):
        assert (
            main(
                [
                    "deploy",
                    "prepare",
                    "--run",
                    str(base_run),
                    "--out",
                    str(tmp_path / method),
                    "--method",
                    method,
                    "--epochs",
                    "1",
                    "--quiet",
                ]
            )
            == 0
        )
        out = capsys.readouterr().out
        assert "time-stepped accuracy at T=4 (bias-free)" in out

    assert (
        main(
            [
                "deploy",
                "prepare",
                "--run",
                str(base_run),
                "--out",
                str(tmp_path / "mtt_stage1"),
                "--pin",
                "stage1",
                "--epochs",
                "1",
                "--quiet",
            ]
        )
        == 0
    )
    capsys.readouterr()
    recorded = {
        name: json.loads((tmp_path / name / "config.json").read_text())["deploy"] for name in ("mtt", "mtt_stage1")
    }
    assert (recorded["mtt"]["pin"], recorded["mtt"]["sampler"]["first_stage_t"]) == ("input", None)  # the default
    assert (recorded["mtt_stage1"]["pin"], recorded["mtt_stage1"]["sampler"]["first_stage_t"]) == ("stage1", 4)

    # a recipe's finetune section, with a flag overriding one of its keys
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        "finetune: {method: mtt, t: 4, t_left: 2, epochs: 2, optimizer: sgd, lr: 0.01, momentum: 0.0,\n"
        "  weight_decay: 5.0e-4, schedule: cosine, schedule_epochs: 10, batch_size: 8, augment: vflip_roll20}\n"
    )
    assert (
        main(
            [
                "deploy",
                "prepare",
                "--run",
                str(base_run),
                "--out",
                str(tmp_path / "recipe"),
                "--config",
                str(recipe),
                "--lr",
                "0.02",
                "--quiet",
            ]
        )
        == 0
    )
    capsys.readouterr()
    deploy = json.loads((tmp_path / "recipe" / "config.json").read_text())["deploy"]
    opts = deploy["options"]
    assert (
        opts["optimizer"],
        opts["lr"],
        opts["momentum"],
        opts["weight_decay"],
        opts["schedule_epochs"],
        opts["epochs"],
    ) == ("sgd", 0.02, 0.0, 5e-4, 10, 2)
    assert (deploy["batch_size"], deploy["augment"], deploy["sampler"]["t_min"]) == (8, "vflip_roll20", 2)
    lrs = [row["lr"] for row in deploy["history"]]  # cosine over 10 epochs, stopped after 2
    assert lrs == pytest.approx([0.02 * 0.5 * (1 + math.cos(math.pi * e / 10)) for e in (1, 2)])
    one_line_error(
        capsys,
        [
            "deploy",
            "prepare",
            "--run",
            str(base_run),
            "--out",
            str(tmp_path / "bad"),
            "--config",
            str(tmp_path / "mtt" / "config.json"),
        ],
        "no `finetune:` mapping",
    )

    monkeypatch.setattr(deploy_cmd, "load_event_split", fake_event_split)
    assert (
        main(
            [
                "deploy",
                "simulate",
                "--run",
                str(tmp_path / "sdt"),
                "--run",
                str(tmp_path / "mtt"),
                "--max-samples",
                "5",
                "--threads",
                "1",
                "--quiet",
                "--out",
                str(tmp_path / "sim"),
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith(("SDT", "MTT"))]
    assert len(rows) == 2 and "time-stepped" in out and "event-driven" in out
    assert "ED spikes" in out and "ties" in out and "silent" in out  # the chip-style readout, next to it
    assert (tmp_path / "sim" / "deploy_results.json").is_file()
    monkeypatch.setattr(deploy_cmd, "load_event_split", lambda *a, **k: pytest.fail("refused too late"))
    huge = ["deploy", "simulate", "--run", str(tmp_path / "sdt"), "--t", "1000000000", "--quiet"]
    one_line_error(capsys, huge, "--t 1000000000 needs about")
    monkeypatch.setattr(deploy_cmd, "load_event_split", fake_event_split)

    path = tmp_path / "mtt.nir"
    assert main(["deploy", "export", "--run", str(tmp_path / "mtt"), "--out", str(path), "--input-shape", "2,8,8"]) == 0
    graph = nir.read(path)
    model, _ = load_deployed(tmp_path / "mtt")
    imported = from_nir(graph)
    x = next(iter(tiny_loaders()[1]))[0].transpose(0, 1)
    assert torch.equal(model.eval()(x, time_config=4), imported.eval()(x, time_config=4))
    capsys.readouterr()
    one_line_error(
        capsys,
        ["deploy", "export", "--run", str(tmp_path / "mtt"), "--out", str(path), "--input-shape", "2,8"],
        "--input-shape must be C,H,W",
    )


def test_one_line_errors(base_run, tmp_path, capsys):
    one_line_error(
        capsys,
        ["deploy", "prepare", "--run", str(tmp_path / "missing"), "--out", str(tmp_path / "o")],
        "run folder not found",
    )
    one_line_error(capsys, ["deploy", "simulate"], "give deployed runs with --run")
    one_line_error(
        capsys, ["deploy", "export", "--run", str(base_run), "--out", str(tmp_path / "x.nir")], "not a deployed run"
    )
    one_line_error(
        capsys,
        ["deploy", "prepare", "--run", str(base_run), "--out", str(tmp_path / "o"), "--resume", "--overwrite"],
        "exclude each other",
    )
    one_line_error(
        capsys, ["deploy", "simulate", "--run", str(base_run), "--dataset", "nope"], "dataset must be one of"
    )


def test_argparse_errors_are_one_line(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["deploy", "prepare", "--run", "r", "--out", "o", "--method", "nmt"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "invalid choice" in err
    with pytest.raises(SystemExit):
        main(["deploy", "prepare", "--run", "r", "--out", "o", "--pin", "stage2"])
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--pin" in err and "invalid choice" in err
    with pytest.raises(SystemExit):
        main(["deploy", "--help"])
    assert "prepare" in capsys.readouterr().out
