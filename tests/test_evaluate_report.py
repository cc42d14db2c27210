import csv
import json

from flexsnn.evaluate.report import format_table, plot_accuracy_vs_t, results_from_sweep, write_results


def test_results_files_have_the_public_shape(tmp_path):
    results = {"sdt": results_from_sweep({2: 0.5, 1: 0.25, 10: 0.75}), "mtt": {"1": 0.5, "2": 0.6}}
    assert list(results["sdt"]) == ["1", "2", "10"]
    json_path, csv_path = write_results(tmp_path, results)
    assert json.loads(json_path.read_text()) == results
    rows = list(csv.reader(csv_path.open()))
    assert rows[0] == ["T", "sdt", "mtt"]
    assert rows[1] == ["1", "0.2500", "0.5000"]
    assert rows[3] == ["10", "0.7500", ""]


def test_table_and_plot(tmp_path):
    results = {"sdt": {"1": 0.1, "2": 0.9}, "mtt": {"1": 0.8, "2": 0.91}}
    table = format_table(results)
    assert "SDT" in table and "MTT" in table
    assert "10.00" in table and "91.00" in table
    png = plot_accuracy_vs_t(results, tmp_path / "p.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
