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


def test_panel_plot_draws_one_panel_per_protocol_with_the_same_colours(tmp_path, monkeypatch):
    import matplotlib.pyplot as plt

    from flexsnn.evaluate.report import plot_accuracy_vs_t_panels

    figures = []
    monkeypatch.setattr(plt, "close", lambda fig=None: figures.append(fig))  # keep the figure to inspect
    panels = {
        "a": {"sdt": {"1": 0.5, "10": 0.9, "60": 0.8}, "mtt": {"1": 0.9, "10": 0.9, "60": 0.9}},
        "b": {"sdt": {"1": 0.1, "60": 0.1}, "mtt": {"1": 0.2, "60": 0.3}},
    }
    png = plot_accuracy_vs_t_panels(panels, tmp_path / "panels.png", title="t")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    fig = next(f for f in figures if f is not None)
    axes = fig.axes
    assert [ax.get_title() for ax in axes] == ["a", "b"]
    assert [t.get_text() for t in axes[0].get_xticklabels()] == ["1", "2", "5", "10", "20", "50"]
    colours = [[line.get_color() for line in ax.get_lines()] for ax in axes]
    assert colours[0] == colours[1] and colours[0][0] != colours[0][1]  # SDT and MTT alike in every panel
    assert list(axes[1].get_lines()[1].get_ydata()) == [20.0, 30.0]
