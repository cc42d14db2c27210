#!/usr/bin/env bash
# Build the two venvs of the NIR compatibility suite (repo root):
#   .venv-interop         nir 1.0.8 + snnTorch, SpikingJelly, Norse, Rockpool
#   .venv-interop-sinabs  nir 1.0.4 + Sinabs (Sinabs pins nir<=1.0.4)
# each with CPU torch==2.13.0 (pinned by constraints.txt), flexsnn's runtime deps and
# flexsnn editable. The peers are test-only dependencies, never runtime ones.
#   usage: bash tests/interop/setup_env.sh [VENV_DIR [SINABS_VENV_DIR]]
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
VENV="${1:-$ROOT/.venv-interop}"
SINABS_VENV="${2:-$ROOT/.venv-interop-sinabs}"
PYTHON="${PYTHON:-python3}"
FIND_LINKS=()
# The CPU torch wheel lies in /opt/wheels on our machines; elsewhere pip uses PyPI.
if [ -d /opt/wheels ]; then FIND_LINKS=(--find-links /opt/wheels); fi
# Without /opt/wheels, take torch from the CPU index so no CUDA build is downloaded.
EXTRA_INDEX=()
if [ ! -d /opt/wheels ]; then EXTRA_INDEX=(--extra-index-url https://download.pytorch.org/whl/cpu); fi

# flexsnn's pinned runtime deps without torch (installed first) and nir (chosen per venv).
LOCK_NO_NIR="$(mktemp)"
trap 'rm -f "$LOCK_NO_NIR"' EXIT
grep -v -E '^(nir|torch)==' "$ROOT/requirements.lock" > "$LOCK_NO_NIR"

build() {  # build VENV_DIR REQUIREMENTS_FILE
    local venv="$1" reqs="$2"
    test -x "$venv/bin/python" || "$PYTHON" -m venv "$venv"
    local pip=("$venv/bin/python" -m pip install -q "${FIND_LINKS[@]}" "${EXTRA_INDEX[@]}"
               -c "$HERE/constraints.txt")
    "${pip[@]}" torch==2.13.0
    "${pip[@]}" -r "$LOCK_NO_NIR" -r "$reqs"
    "$venv/bin/python" -m pip install -q --no-deps --no-build-isolation -e "$ROOT"
    "$venv/bin/python" - <<'PY'
import importlib, torch
print(f"torch {torch.__version__} (cuda build: {torch.version.cuda})")
for name in ("flexsnn", "nir", "nirtorch", "snntorch", "spikingjelly", "norse", "rockpool", "sinabs"):
    try:
        mod = importlib.import_module(name)
        print(f"  {name:13s} {getattr(mod, '__version__', '?')}")
    except Exception as exc:  # report, do not fail: the suite skips a missing peer
        print(f"  {name:13s} not importable: {type(exc).__name__}: {exc}")
PY
}

build "$VENV" "$HERE/requirements.txt"
build "$SINABS_VENV" "$HERE/requirements-sinabs.txt"
# samna on PyPI (pulled by sinabs) is a placeholder that pip-installs the real driver from
# another index when first imported; without it the tests stand in for the chip driver.
"$SINABS_VENV/bin/python" -m pip uninstall -q -y samna
