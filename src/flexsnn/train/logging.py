"""Per-epoch training metrics in the run folder: metrics.json, metrics.csv, train.log, and
TensorBoard event files when the ``tensorboard`` package is installed.

Both files are rewritten atomically from the whole history after every epoch, so they are
always complete and consistent; after a resume the epochs replayed since the last checkpoint
replace the rows an interrupted run had already logged for them (no duplicates).
Only the main process (rank 0) should log: build the logger with ``enabled=False`` elsewhere.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from flexsnn.errors import ConfigError
from flexsnn.io import atomic_write, write_json

METRICS_JSON = "metrics.json"
METRICS_CSV = "metrics.csv"
LOG_FILE = "train.log"
TENSORBOARD_DIR = "tensorboard"

log = logging.getLogger("flexsnn")


def tensorboard_available() -> bool:
    try:
        from torch.utils.tensorboard import SummaryWriter  # noqa: F401  (needs the tensorboard package)
    except ImportError:
        return False
    return True


def read_metrics(run_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """The rows of a run's metrics.json ([] when absent or unreadable)."""
    path = Path(run_dir) / METRICS_JSON
    if not path.is_file():
        return []
    try:
        rows = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        return []
    return [r for r in rows if isinstance(r, dict) and "epoch" in r] if isinstance(rows, list) else []


def write_metrics(run_dir: str | os.PathLike, rows: list[Mapping[str, Any]]) -> tuple[Path, Path]:
    """Write ``rows`` (one dict per epoch) to metrics.json and metrics.csv, atomically."""
    run_dir = Path(run_dir)
    write_json(run_dir / METRICS_JSON, [dict(r) for r in rows])
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(columns)
    for row in rows:
        writer.writerow([_cell(row.get(c, "")) for c in columns])
    with atomic_write(run_dir / METRICS_CSV) as tmp:
        tmp.write_text(buf.getvalue())
    return run_dir / METRICS_JSON, run_dir / METRICS_CSV


def _cell(value: Any) -> Any:
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.6g}"
    return value


def format_epoch(row: Mapping[str, Any], epochs: int | None = None) -> str:
    """One log line: ``epoch 3/10  train_loss 1.2345  train_acc 45.00%  lr 0.0950  12.3 s``."""
    parts = [f"epoch {row['epoch']}" + (f"/{epochs}" if epochs else "")]
    for key, value in row.items():
        if key in ("epoch", "seconds") or not isinstance(value, (int, float)):
            continue
        if key.endswith("_acc") or key.startswith("acc"):
            parts.append(f"{key} {100 * value:.2f}%")
        elif isinstance(value, float):
            parts.append(f"{key} {value:.4g}")
        else:
            parts.append(f"{key} {value}")
    if "seconds" in row:
        parts.append(f"{row['seconds']:.1f} s")
    return "  ".join(parts)


class MetricsLogger:
    """Collects one row per epoch; use ``logger.log_epoch`` as ``fit``'s ``on_epoch_end``.

    ``tensorboard``: "auto" (use it when installed), True (require it), False (off).
    ``resume=True`` keeps the rows already in the run folder (those of later epochs are
    replaced as the resumed run logs them again).
    """

    def __init__(
        self,
        run_dir: str | os.PathLike,
        enabled: bool = True,
        tensorboard: bool | str = "auto",
        resume: bool = False,
        epochs: int | None = None,
        log_file: bool = True,
    ) -> None:
        self.run_dir = Path(run_dir)
        self.enabled = enabled
        self.epochs = epochs
        self.rows: list[dict[str, Any]] = read_metrics(self.run_dir) if (enabled and resume) else []
        if tensorboard == "auto":
            tensorboard = tensorboard_available()
        elif tensorboard and not tensorboard_available():
            raise ConfigError("tensorboard=True but the tensorboard package is not installed (pip install tensorboard)")
        self.use_tensorboard = bool(tensorboard) and enabled
        self._writer = None
        self._handler: logging.Handler | None = None
        if enabled and log_file:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            self._handler = logging.FileHandler(self.run_dir / LOG_FILE, encoding="utf-8")
            self._handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
            log.addHandler(self._handler)
            if log.level == logging.NOTSET or log.level > logging.INFO:
                log.setLevel(logging.INFO)

    def log_epoch(self, epoch: int, row: Mapping[str, Any]) -> None:
        if not self.enabled:
            return
        row = {"epoch": epoch, **{k: v for k, v in row.items() if k != "epoch"}}
        self.rows = [r for r in self.rows if r["epoch"] < epoch] + [row]
        write_metrics(self.run_dir, self.rows)
        log.info(format_epoch(row, self.epochs))
        if self.use_tensorboard:
            writer = self._tensorboard(purge_step=epoch)
            for key, value in row.items():
                if key != "epoch" and isinstance(value, (int, float)) and not isinstance(value, bool):
                    writer.add_scalar(key, value, epoch)
            writer.flush()

    def log_final(self, name: str, values: Mapping[str, float]) -> None:
        """Final results (e.g. accuracy per T) -> TensorBoard ``name/<key>`` and the log."""
        if not self.enabled:
            return
        log.info(f"{name}: " + ", ".join(f"{k}={v:.4f}" for k, v in values.items()))
        if self.use_tensorboard:
            writer = self._tensorboard(purge_step=None)
            for key, value in values.items():
                step = int(key) if str(key).isdigit() else 0
                writer.add_scalar(name, value, step)
            writer.flush()

    def _tensorboard(self, purge_step: int | None):
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter

            # purge_step drops events an interrupted run logged past its last checkpoint
            self._writer = SummaryWriter(str(self.run_dir / TENSORBOARD_DIR), purge_step=purge_step)
        return self._writer

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if self._handler is not None:
            log.removeHandler(self._handler)
            self._handler.close()
            self._handler = None

    def __enter__(self) -> MetricsLogger:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
