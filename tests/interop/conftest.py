"""The NIR compatibility suite: flexsnn <-> each peer, both directions, conv and MLP models.

It runs in the interop venvs (``make test-interop`` builds them with tests/interop/setup_env.sh);
in the main venv every module here is skipped because its peer is not installed. Each test
records its matrix cell; with ``FLEXSNN_INTEROP_RESULTS=path.json`` set the cells are written
there when the session ends, and ``render_matrix.py`` turns the files into docs/interop.md's table.
"""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path

import pytest

RESULTS_ENV = "FLEXSNN_INTEROP_RESULTS"
_CELLS: list[dict] = []


@pytest.fixture
def record():
    """record(peer, direction, model, profile, status, max_diff=None, note="") adds one matrix cell."""

    def add(peer, direction, model, profile, status, max_diff=None, note=""):
        _CELLS.append(
            {
                "peer": peer,
                "direction": direction,
                "model": model,
                "profile": profile,
                "status": status,
                "max_diff": max_diff,
                "note": note,
            }
        )

    return add


def pytest_sessionfinish(session, exitstatus):
    path = os.environ.get(RESULTS_ENV)
    if not path or not _CELLS:
        return
    import importlib.metadata as md

    versions = {}
    for dist in ("torch", "nir", "nirtorch", "snntorch", "spikingjelly", "norse", "rockpool", "sinabs"):
        try:
            versions[dist] = md.version(dist)
        except md.PackageNotFoundError:
            pass
    out = {"python": platform.python_version(), "versions": versions, "cells": _CELLS}
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(out, indent=1) + "\n")
