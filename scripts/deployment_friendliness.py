"""Why a bias-free model does or does not lose accuracy event-driven: per-layer spike-count
divergence between time-stepped and event-driven runs, and the decisions that change.

Reads the fine-tuned models that ``flexsnn demo --deploy`` (``make demo-deploy``) leaves in
``runs/demo/deploy`` and, for each, runs the test events

- event-driven (the compiled simulator, every spike recorded), and
- time-stepped at T = 1, 2, 5, 10, 20, 50, 100 (the events binned into T frames),

then prints, per T, the time-stepped accuracy, the per-layer SD against the event-driven run
(the readout's counting neuron last) and the fraction of predictions that differ, and at the
fine-tune's T which decisions change and how close they were. Writes ``friendliness.json``
and ``friendliness.png`` into ``--out``.

    .venv/bin/python scripts/deployment_friendliness.py [--deploy-dir runs/demo/deploy] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from flexsnn.data import to_frames
from flexsnn.deploy import (
    EventNet,
    event_driven_layer_spikes,
    layer_spike_divergence,
    predictions,
    simulate,
    time_stepped_layer_spikes,
)
from flexsnn.runs import load_deployed
from flexsnn.runs.deploy import load_event_split

T_GRID = (1, 2, 5, 10, 20, 50, 100)
MODELS = (("SDT", "deploy_sdt"), ("MTT", "deploy_mtt"), ("MTT/stage1", "deploy_mtt_stage1"))


def margins(scores: np.ndarray) -> np.ndarray:
    """(top score - second score) / |top score| per sample: how close a decision was."""
    top2 = np.sort(scores, axis=1)[:, -2:]
    return (top2[:, 1] - top2[:, 0]) / np.maximum(np.abs(top2[:, 1]), 1e-12)


def time_stepped(model, events, sensor, t, batch_size=64):
    """Scores [N, classes] and per-layer spike counts of ``model`` at uniform ``t``."""
    scores, layers = [], []
    for start in range(0, len(events), batch_size):
        chunk = events[start : start + batch_size]
        frames = torch.from_numpy(np.stack([to_frames(ev, sensor, n_time_bins=t) for ev in chunk], axis=1))
        chunk_scores, chunk_layers = time_stepped_layer_spikes(model, frames, t, return_scores=True)
        scores.append(chunk_scores)
        layers.append(chunk_layers)
    return np.concatenate(scores), [np.concatenate(parts) for parts in zip(*layers)]


def analyse(run_dir: Path, events, labels, sensor) -> dict:
    model, config = load_deployed(run_dir)
    t_run = int(config["deploy"]["t"])  # the T the bias-free fine-tune ran at
    results = simulate(EventNet.from_torch(model), events, sensor, record_spikes=True)
    ed_layers = event_driven_layer_spikes(results)
    ed_pred = predictions(results, readout="scores")
    labels = np.asarray(labels)
    out = {
        "t_finetune": t_run,
        "ed_accuracy": float((ed_pred == labels).mean()),
        "ed_spikes_per_sample": [float(a.sum(1).mean()) for a in ed_layers],
        "by_t": {},
    }
    for t in T_GRID:
        scores, ts_layers = time_stepped(model, events, sensor, t)
        ts_pred = scores.argmax(1)
        changed = ts_pred != ed_pred
        row = {
            "ts_accuracy": float((ts_pred == labels).mean()),
            "layer_sd": layer_spike_divergence(ts_layers, ed_layers),
            "ts_spikes_per_sample": [float(a.sum(1).mean()) for a in ts_layers],
            "changed": float(changed.mean()),
        }
        if t == t_run:
            m = margins(scores)
            row["lost"] = float((changed & (ts_pred == labels)).mean())  # right time-stepped, wrong event-driven
            row["gained"] = float((changed & (ed_pred == labels)).mean())
            row["median_margin_changed"] = float(np.median(m[changed])) if changed.any() else None
            row["median_margin_kept"] = float(np.median(m[~changed]))
        out["by_t"][str(t)] = row
    return out


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_layer, ax_sd, ax_acc) = plt.subplots(1, 3, figsize=(14, 4.2))
    colors = {"SDT": "tab:blue", "MTT": "tab:orange", "MTT/stage1": "tab:green", "MTT/R=10": "tab:red"}
    models = report["models"]
    width = 0.8 / max(len(models), 1)
    for k, (label, res) in enumerate(models.items()):
        at = res["by_t"][str(res["t_finetune"])]
        n_layers = len(at["layer_sd"])
        xs = np.arange(n_layers) + (k - (len(models) - 1) / 2) * width
        ax_layer.bar(xs, [100 * v for v in at["layer_sd"]], width, color=colors.get(label), label=label)
        ts = [int(t) for t in res["by_t"]]
        series = (
            (ax_sd, "layer_sd", -1, "-", "o", f"{label}: output layer"),
            (ax_sd, "layer_sd", 0, ":", ".", f"{label}: layer 1"),
            (ax_acc, "ts_accuracy", None, "-", "o", f"{label} time-stepped"),
        )
        for ax, key, layer, style, marker, name in series:
            values = [res["by_t"][str(t)][key] for t in ts]
            ys = [100 * (v if layer is None else v[layer]) for v in values]
            ax.plot(ts, ys, style, marker=marker, ms=3, color=colors.get(label), label=name)
        ax_acc.axhline(100 * res["ed_accuracy"], color=colors.get(label), ls="--", lw=1, label=f"{label} event-driven")
    t_ft = next(iter(models.values()))["t_finetune"]
    ax_layer.set_xticks(range(n_layers), [f"layer {i + 1}" for i in range(n_layers - 1)] + ["output"])
    ax_layer.set(ylabel="SD to the event-driven run (%)", title=f"Per-layer spike-count divergence at T={t_ft}")
    ax_layer.grid(True, axis="y", alpha=0.3)
    ax_layer.legend(fontsize=8)
    ax_sd.set(yscale="log", ylabel="SD to the event-driven run (%)", title="Divergence shrinks as T grows")
    ax_acc.set(ylabel="test accuracy (%)", title="Time-stepped accuracy vs event-driven (dashed)")
    for ax in (ax_sd, ax_acc):
        ax.set(xscale="log", xlabel="time steps T of the time-stepped run")
        ax.set_xticks(list(T_GRID), [str(t) for t in T_GRID])
        ax.tick_params(axis="x", which="minor", bottom=False)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--deploy-dir", default="runs/demo/deploy", help="the folder flexsnn demo --deploy wrote")
    parser.add_argument("--out", default=None, help="output folder (default: DEPLOY_DIR/friendliness)")
    parser.add_argument("--overwrite", action="store_true", help="replace an earlier report in --out")
    parser.add_argument("--plot-only", action="store_true", help="redraw friendliness.png from friendliness.json")
    parser.add_argument(
        "--run",
        action="append",
        default=[],
        metavar="LABEL=DIR",
        help="another deployed run to measure beside the demo's (e.g. MTT/R=10=runs/mtt_r10); repeatable",
    )
    args = parser.parse_args(argv)
    deploy_dir = Path(args.deploy_dir)
    out = Path(args.out) if args.out else deploy_dir / "friendliness"
    runs = [(label, deploy_dir / name) for label, name in MODELS if (deploy_dir / name).is_dir()]
    for item in args.run:
        label, sep, folder = item.rpartition("=")
        if not sep or not label or not Path(folder).is_dir():
            print(f"error: --run must be LABEL=DIR with DIR a deployed run folder, got {item!r}", file=sys.stderr)
            return 2
        runs.append((label, Path(folder)))
    if not runs:
        print(f"error: no fine-tuned runs in {deploy_dir}; run `make demo-deploy` first", file=sys.stderr)
        return 2
    if args.plot_only:
        plot(json.loads((out / "friendliness.json").read_text()), out / "friendliness.png")
        print(f"wrote {out / 'friendliness.png'}")
        return 0
    if (out / "friendliness.json").exists() and not args.overwrite:
        print(f"error: {out / 'friendliness.json'} exists; pass --overwrite to replace it", file=sys.stderr)
        return 2
    dataset = json.loads((deploy_dir / "deploy_results.json").read_text())["config"]["dataset"]
    events, labels, sensor = load_event_split(dataset, "test")
    report = {"dataset": dataset, "samples": len(events), "t_grid": list(T_GRID), "models": {}}
    for label, run_dir in runs:
        print(f"[{label}] {run_dir}: event-driven, then time-stepped at T = {', '.join(map(str, T_GRID))}")
        res = analyse(run_dir, events, labels, sensor)
        report["models"][label] = res
        n_layers = len(res["ed_spikes_per_sample"])
        names = [f"L{i + 1}" for i in range(n_layers - 1)] + ["out"]
        print(
            f"  event-driven accuracy {100 * res['ed_accuracy']:.2f}%, spikes/sample "
            + " ".join(f"{n} {s:,.0f}" for n, s in zip(names, res["ed_spikes_per_sample"]))
        )
        print(f"  {'T':>4} {'ts acc':>8} " + " ".join(f"{'SD ' + n:>9}" for n in names) + f" {'changed':>8}")
        for t, row in res["by_t"].items():
            sds = " ".join(f"{100 * v:>8.2f}%" for v in row["layer_sd"])
            print(f"  {t:>4} {100 * row['ts_accuracy']:>7.2f}% {sds} {100 * row['changed']:>7.1f}%")
        at = res["by_t"].get(str(res["t_finetune"]))
        if at is not None:
            print(
                f"  at T={res['t_finetune']}: decisions changed {100 * at['changed']:.1f}% (right -> wrong "
                f"{100 * at['lost']:.1f}%, wrong -> right {100 * at['gained']:.1f}%); median margin of the changed "
                f"{at['median_margin_changed'] or float('nan'):.3f}, of the kept {at['median_margin_kept']:.3f}"
            )
    out.mkdir(parents=True, exist_ok=True)
    (out / "friendliness.json").write_text(json.dumps(report, indent=1))
    plot(report, out / "friendliness.png")
    print(f"wrote {out / 'friendliness.json'}, {out / 'friendliness.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
