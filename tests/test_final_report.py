"""The final Markdown report and the per-epoch metrics files."""

from __future__ import annotations

import csv
import json
import logging

import pytest

from flexsnn.errors import CheckpointError, ConfigError, InputError
from flexsnn.evaluate.final_report import aggregate, main, read_run, write_final_report
from flexsnn.train.logging import MetricsLogger, format_epoch, read_metrics, tensorboard_available


def fake_run(folder, method, seed, accs, losses=(1.5, 1.0)):
    folder.mkdir(parents=True)
    history = [
        {"epoch": i + 1, "train_loss": loss, "train_acc": 0.5, "lr": 0.1, "steps": 4, "seconds": 1.0}
        for i, loss in enumerate(losses)
    ]
    run = {"method": method, "model": "resnet19", "dataset": "cifar10", "t_min": 1, "t_max": 3, "seed": seed}
    (folder / "config.json").write_text(json.dumps({"run": run, "history": history}))
    (folder / "results.json").write_text(json.dumps({method: {str(t): a for t, a in enumerate(accs, 1)}}))
    return folder


def test_aggregate_gives_mean_and_sample_std_per_method_and_t(tmp_path):
    runs = [
        read_run(fake_run(tmp_path / "m1", "mtt", 1000, [0.80, 0.90, 0.92])),
        read_run(fake_run(tmp_path / "m2", "mtt", 2000, [0.84, 0.90, 0.96])),
        read_run(fake_run(tmp_path / "s1", "sdt", 1000, [0.20, 0.50, 0.95])),
    ]
    agg = aggregate(runs)
    assert list(agg) == ["mtt", "sdt"]
    assert agg["mtt"]["1"]["mean"] == pytest.approx(0.82)
    assert agg["mtt"]["1"]["std"] == pytest.approx(0.028284271247461926)  # sqrt(((0.02)^2 * 2) / 1)
    assert agg["mtt"]["2"]["std"] == pytest.approx(0.0) and agg["mtt"]["3"]["n"] == 2
    assert agg["sdt"]["3"] == {"mean": 0.95, "std": 0.0, "n": 1}


def test_report_has_the_tables_and_the_accuracy_plot(tmp_path):
    dirs = [
        fake_run(tmp_path / "mtt_s1000", "mtt", 1000, [0.80, 0.90, 0.92]),
        fake_run(tmp_path / "mtt_s2000", "mtt", 2000, [0.84, 0.90, 0.96]),
        fake_run(tmp_path / "sdt_s1000", "sdt", 1000, [0.20, 0.50, 0.95]),
    ]
    path = write_final_report(dirs, tmp_path / "report", title="C10 ResNet19")
    text = path.read_text()
    assert text.startswith("# C10 ResNet19\n")
    assert "![accuracy vs T](accuracy_vs_T.png)" in text
    assert "| 1 | 82.00 ± 2.83 (n=2) | 20.00 ± 0.00 (n=1) |" in text
    assert "| 3 | 94.00 ± 2.83 (n=2) | 95.00 ± 0.00 (n=1) |" in text
    assert "| mtt_s2000 | MTT | resnet19 | cifar10 | [1, 3] | 2000 | 2 | 1.0000 | 50.00 |" in text
    assert "| sdt_s1000 | SDT | resnet19 | cifar10 | 3 | 1000 | 2 | 1.0000 | 50.00 |" in text
    png = (tmp_path / "report" / "accuracy_vs_T.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    assert (tmp_path / "report" / "training_curves.png").is_file()
    summary = json.loads((tmp_path / "report" / "report.json").read_text())
    assert summary["aggregate"]["mtt"]["2"]["mean"] == pytest.approx(0.9)


def test_metrics_json_from_the_run_folder_wins_over_config_history(tmp_path):
    d = fake_run(tmp_path / "r", "mtt", 1000, [0.5])
    (d / "metrics.json").write_text(json.dumps([{"epoch": 1, "train_loss": 9.0}]))
    assert read_run(d).history == [{"epoch": 1, "train_loss": 9.0}]


def test_report_errors_are_clear(tmp_path, capsys):
    with pytest.raises(InputError, match="run_dirs is empty"):
        write_final_report([], tmp_path)
    with pytest.raises(CheckpointError, match="run folder not found"):
        read_run(tmp_path / "nope")
    d = fake_run(tmp_path / "r", "mtt", 1000, [0.5])
    (d / "results.json").unlink()
    with pytest.raises(CheckpointError, match="results .* not found"):
        read_run(d)
    assert main(["--out", str(tmp_path / "o"), str(tmp_path / "nope")]) == 2
    assert "run folder not found" in capsys.readouterr().err


def test_report_command_line(tmp_path, capsys):
    d = fake_run(tmp_path / "r", "mtt", 1000, [0.5, 0.75])
    assert main(["--out", str(tmp_path / "o"), str(d)]) == 0
    assert "| 2 | 75.00 |" in (tmp_path / "o" / "report.md").read_text()


# --- per-epoch metrics (flexsnn.train.logging) ---------------------------------------------


def test_metrics_logger_writes_json_csv_and_log_and_replays_cleanly(tmp_path):
    run = tmp_path / "run"
    with MetricsLogger(run, tensorboard=False, epochs=3) as log:
        log.log_epoch(1, {"train_loss": 2.0, "train_acc": 0.25, "lr": 0.1, "seconds": 1.5})
        log.log_epoch(2, {"train_loss": 1.5, "train_acc": 0.5, "lr": 0.05, "seconds": 1.25})
    # a resumed run (checkpoint after epoch 1) logs epoch 2 again: it replaces the old row
    with MetricsLogger(run, tensorboard=False, resume=True, epochs=3) as log:
        log.log_epoch(2, {"train_loss": 1.4, "train_acc": 0.5, "lr": 0.05, "seconds": 1.0})
        log.log_epoch(3, {"train_loss": 1.0, "train_acc": 0.75, "lr": 0.0, "seconds": 1.0})
    rows = read_metrics(run)
    assert [r["epoch"] for r in rows] == [1, 2, 3] and rows[1]["train_loss"] == 1.4
    with open(run / "metrics.csv") as fh:
        table = list(csv.reader(fh))
    assert table[0] == ["epoch", "train_loss", "train_acc", "lr", "seconds"]
    assert table[2] == ["2", "1.4", "0.5", "0.05", "1"]
    lines = (run / "train.log").read_text().splitlines()
    assert len(lines) == 4 and lines[-1].endswith("epoch 3/3  train_loss 1  train_acc 75.00%  lr 0  1.0 s")
    assert not logging.getLogger("flexsnn").handlers or all(
        getattr(h, "baseFilename", "") != str(run / "train.log") for h in logging.getLogger("flexsnn").handlers
    )


def test_non_main_ranks_write_nothing(tmp_path):
    with MetricsLogger(tmp_path / "run", enabled=False) as log:
        log.log_epoch(1, {"train_loss": 1.0})
    assert not (tmp_path / "run").exists()


def test_format_epoch():
    assert (
        format_epoch({"epoch": 2, "train_loss": 0.12345, "train_acc": 0.5, "steps": 10, "seconds": 3.21}, 5)
        == "epoch 2/5  train_loss 0.1235  train_acc 50.00%  steps 10  3.2 s"
    )


def test_tensorboard_is_optional(tmp_path):
    if tensorboard_available():
        with MetricsLogger(tmp_path / "run", tensorboard=True) as log:
            log.log_epoch(1, {"train_loss": 1.0, "lr": 0.1})
        assert list((tmp_path / "run" / "tensorboard").glob("events.out.tfevents.*"))
    else:
        with pytest.raises(ConfigError, match="pip install tensorboard"):
            MetricsLogger(tmp_path / "run", tensorboard=True)
        with MetricsLogger(tmp_path / "run2") as log:  # "auto": silently without
            log.log_epoch(1, {"train_loss": 1.0})
        assert not (tmp_path / "run2" / "tensorboard").exists()
