#!/usr/bin/env bash
# Make the benchmark venv .venv-bench (repo root): CPU torch==2.13.0, the peer libraries
# (snnTorch, SpikingJelly, Norse, Sinabs), flexsnn's runtime deps and flexsnn editable.
# Independent of the Makefile and of .venv; the peers are optional benchmark deps only.
#   usage: bash benchmarks/setup_env.sh [VENV_DIR]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${1:-$ROOT/.venv-bench}"
PYTHON="${PYTHON:-python3}"
FIND_LINKS=()
# The CPU torch wheel lies in /opt/wheels on our machines; elsewhere pip uses PyPI.
if [ -d /opt/wheels ]; then FIND_LINKS=(--find-links /opt/wheels); fi
# Without /opt/wheels, take torch from the CPU index so no CUDA build is downloaded.
EXTRA_INDEX=()
if [ ! -d /opt/wheels ]; then EXTRA_INDEX=(--extra-index-url https://download.pytorch.org/whl/cpu); fi

test -x "$VENV/bin/python" || "$PYTHON" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip install -q "${FIND_LINKS[@]}" "${EXTRA_INDEX[@]}")

"${PIP[@]}" -c "$ROOT/benchmarks/constraints.txt" torch==2.13.0
# flexsnn's pinned runtime deps, except torch (done) and nir: sinabs pins nir<=1.0.4,
# so nir is left for the resolver to choose next to the peers.
LOCK_NO_NIR="$(mktemp)"
trap 'rm -f "$LOCK_NO_NIR"' EXIT
grep -v -E '^(nir|torch)==' "$ROOT/requirements.lock" > "$LOCK_NO_NIR"
"${PIP[@]}" -c "$ROOT/benchmarks/constraints.txt" -r "$LOCK_NO_NIR" -r "$ROOT/benchmarks/requirements.txt"
"$VENV/bin/python" -m pip install -q --no-deps --no-build-isolation -e "$ROOT"

# Report which peers import beside the CPU torch; a missing one is skipped by the benchmarks.
"$VENV/bin/python" - <<'PY'
import importlib, torch
print(f"torch {torch.__version__} (cuda build: {torch.version.cuda})")
for name in ("flexsnn", "snntorch", "spikingjelly", "norse", "sinabs", "nir"):
    try:
        mod = importlib.import_module(name)
        print(f"  {name:13s} {getattr(mod, '__version__', '?')}")
    except Exception as exc:  # report, do not fail: peers are optional
        print(f"  {name:13s} NOT importable: {type(exc).__name__}: {exc}")
PY
