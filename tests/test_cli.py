import json
import subprocess
import sys
from pathlib import Path

import pytest

from flexsnn.cli import main

FLEXSNN = str(Path(sys.executable).parent / "flexsnn")  # the installed console script


@pytest.mark.parametrize("verb", ["train", "evaluate", "demo"])
def test_every_verb_has_help_with_examples(verb, capsys):
    with pytest.raises(SystemExit) as exc:
        main([verb, "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "examples:" in out and f"flexsnn {verb}" in out


def test_argument_errors_are_one_line(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["train", "--out", "x", "--t-max", "0"])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--t-max" in err and "positive integer" in err


def test_user_errors_print_one_line_and_exit_nonzero(tmp_path, capsys):
    assert main(["evaluate", "--run", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.splitlines() == [err] and "run folder not found" in err
    assert main(["train", "--out", str(tmp_path / "r"), "--model", "no_such_model", "--epochs", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no_such_model" in err
    bad = tmp_path / "bad.yaml"
    bad.write_text("- just\n- a list\n")
    assert main(["train", "--out", str(tmp_path / "r2"), "--config", str(bad)]) == 2
    assert "mapping of run options" in capsys.readouterr().err


def test_train_augment_flag_takes_a_protocol_name(tmp_path, capsys):
    from flexsnn.cli import build_parser
    from flexsnn.cli.train_cmd import spec_from_args

    def spec(*flags):
        return spec_from_args(build_parser().parse_args(["train", "--out", str(tmp_path / "r"), *flags]))

    assert spec().augment is False and spec("--augment").augment is True
    assert spec("--augment", "flip_or_reverse_roll5").augment == "flip_or_reverse_roll5"
    recipe = tmp_path / "r.yaml"
    recipe.write_text("run: {augment: vflip_roll20}\n")
    assert spec("--config", str(recipe)).augment == "vflip_roll20"  # the file's value stays
    assert main(["train", "--out", str(tmp_path / "bad"), "--augment", "wobble", "--epochs", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "'wobble'" in err and "flip_roll5" in err


def test_bad_per_stage_config_is_rejected(capsys):
    with pytest.raises(SystemExit):
        main(["evaluate", "--run", "r", "--config", "3,0,1"])
    assert "positive integers" in capsys.readouterr().err


@pytest.mark.slow
def test_train_then_evaluate_on_the_default_data(tmp_path):
    run = tmp_path / "run"
    cmd = [
        FLEXSNN,
        "train",
        "--model",
        "digits_mlp",
        "--method",
        "mtt",
        "--t-max",
        "2",
        "--epochs",
        "1",
        "--batch-size",
        "128",
        "--calib-batches",
        "2",
        "--out",
        str(run),
        "--quiet",
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    results = json.loads((run / "results.json").read_text())
    assert list(results) == ["mtt"] and set(results["mtt"]) == {"1", "2"}
    assert results["mtt"]["2"] > 0.3  # ten classes: chance is 0.1
    assert (run / "accuracy_vs_T.png").stat().st_size > 1000
    # a second train into the same folder must refuse rather than overwrite
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert again.returncode == 2 and "already holds a run" in again.stderr
    assert again.stdout == ""  # refused before the opening line
    ev = subprocess.run(
        [FLEXSNN, "evaluate", "--run", str(run), "--t", "1", "3", "--config", "2,1", "--quiet"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert ev.returncode == 0, ev.stderr
    assert set(json.loads((run / "eval" / "results.json").read_text())["mtt"]) == {"1", "3"}
    assert "events re-binned at each T" in ev.stdout
    both = subprocess.run(
        [
            FLEXSNN,
            "evaluate",
            "--run",
            str(run),
            "--t",
            "1",
            "2",
            "--config",
            "2,1",
            "--calibration",
            "both",
            "--out",
            str(tmp_path / "both"),
            "--quiet",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert both.returncode == 0, both.stderr
    side_by_side = json.loads((tmp_path / "both" / "results.json").read_text())
    assert list(side_by_side) == ["mtt (BN per_config)", "mtt (BN t_max)"]
    assert side_by_side["mtt (BN per_config)"]["2"] == side_by_side["mtt (BN t_max)"]["2"]  # t_max = 2: same stats
    assert (tmp_path / "both" / "configs.csv").read_text().startswith("config,accuracy_per_config,accuracy_t_max")


def test_multi_line_explanations_become_one_line(tmp_path, capsys):
    assert main(["train", "--dataset", "nmnist", "--out", str(tmp_path / "r"), "--epochs", "1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--data-root" in err and "Train/0/*.bin" in err
    assert not (tmp_path / "r").exists()  # nothing created for a run that could not start


@pytest.mark.slow
def test_demo_writes_the_public_results_shape(tmp_path, capsys):
    out = tmp_path / "demo"
    args = [
        "demo",
        "--out",
        str(out),
        "--epochs",
        "1",
        "--t-max",
        "2",
        "--model",
        "digits_mlp",
        "--quiet",
        "--t-sweep",
        "1",
        "5",
    ]
    assert main(args) == 0
    results = json.loads((out / "results.json").read_text())
    assert list(results) == ["sdt", "mtt"]
    for per_t in results.values():
        assert set(per_t) == {"1", "2"} and all(0.0 <= a <= 1.0 for a in per_t.values())
    assert results["mtt"]["2"] > 0.3  # ten classes: it learned something in one epoch
    ablation = json.loads((out / "results_with_ablation.json").read_text())
    assert set(ablation) == {"sdt", "mtt", "sdt_calibrated"}
    assert (out / "accuracy_vs_T.png").read_bytes()[:4] == b"\x89PNG"
    assert (out / "accuracy_vs_T_rebinned.png").read_bytes()[:4] == b"\x89PNG"
    table = capsys.readouterr().out
    assert "SDT" in table and "MTT" in table and "mixed per-stage configs" in table
    assert "re-binned: the test events binned again into T frames" in table
    rebinned = json.loads((out / "results_rebinned.json").read_text())
    protocols = ("", "_bn_at_t", "_no_rebin")
    assert list(rebinned) == [m + p for m in ("sdt", "mtt") for p in protocols]
    assert all(set(v) == {"1", "5"} for v in rebinned.values())
    assert "re-binned, BN@T" in table and "not re-binned, BN@Tmax" in table
    assert main(args) == 2  # an earlier demo is never replaced without --overwrite
    assert "--overwrite" in capsys.readouterr().err


@pytest.mark.slow
def test_demo_with_deploy_end_to_end(tmp_path, capsys):
    # the whole `flexsnn demo --deploy`, shrunk: re-binned sweep and the three-sampler event-driven table
    out = tmp_path / "demo"
    assert (
        main(
            [
                "demo",
                "--out",
                str(out),
                "--epochs",
                "1",
                "--t-max",
                "2",
                "--model",
                "digits_mlp",
                "--quiet",
                "--t-sweep",
                "1",
                "4",
                "--deploy",
                "--deploy-epochs",
                "1",
            ]
        )
        == 0
    )
    table = capsys.readouterr().out
    deploy = json.loads((out / "deploy" / "deploy_results.json").read_text())
    assert [row["label"] for row in deploy["rows"]] == ["SDT", "MTT", "MTT/stage1"]
    for row in deploy["rows"]:
        assert 0.0 <= row["ed_accuracy"] <= 1.0 and 0.0 <= row["ed_spike_accuracy"] <= 1.0
    stage1 = json.loads((out / "deploy" / "deploy_mtt_stage1" / "config.json").read_text())["deploy"]
    assert stage1["pin"] == "stage1" and stage1["sampler"]["first_stage_t"] == 10
    assert "ED spikes" in table and "MTT/stage1" in table
