"""Render the NIR compatibility matrix measured by the interop suite into docs/interop.md.

Reads the JSON files the suite wrote (``make test-interop`` sets FLEXSNN_INTEROP_RESULTS per
venv) and replaces the table between the ``<!-- matrix:start -->`` / ``<!-- matrix:end -->``
markers.   usage: python tests/interop/render_matrix.py [results.json ...]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
DOC = HERE.parents[1] / "docs" / "interop.md"
START, END = "<!-- matrix:start -->", "<!-- matrix:end -->"
PEERS = ["snntorch", "spikingjelly", "norse", "sinabs", "rockpool"]


def cell_text(cell: dict) -> str:
    status, diff = cell["status"], cell["max_diff"]
    if status == "exact":
        return "exact"
    if status == "close":
        return f"close (max diff {diff:.1e})"
    if status == "differs":
        return f"differs (max diff {diff:.3g})"
    return f"error: {cell['note'].replace('|', '/')}"


def render(paths: list[Path]) -> str:
    cells, envs = [], []
    for path in paths:
        data = json.loads(path.read_text())
        cells += data["cells"]
        envs.append(f"`{path.stem}`: " + ", ".join(f"{k} {v}" for k, v in sorted(data["versions"].items())))
    order = {p: i for i, p in enumerate(PEERS)}
    cells.sort(
        key=lambda c: (
            order.get(c["peer"], 99),
            c["direction"] != "flexsnn -> peer",
            c["model"],
            c["profile"] != "flexsnn",
        )
    )
    lines = [
        "| peer | direction | model | profile | result | why |",
        "|---|---|---|---|---|---|",
    ]
    for c in cells:
        why = "" if c["status"] in ("exact", "error") else c["note"].replace("|", "/")
        lines.append(f"| {c['peer']} | {c['direction']} | {c['model']} | `{c['profile']}` | {cell_text(c)} | {why} |")
    return "\n".join(["Measured in the venvs (one result file each):", "", *[f"- {e}" for e in envs], "", *lines])


def main(argv: list[str]) -> int:
    paths = [Path(a) for a in argv] or sorted((HERE / "results").glob("*.json"))
    if not paths:
        print("no results: run `make test-interop` first", file=sys.stderr)
        return 1
    text = DOC.read_text()
    if START not in text or END not in text:
        print(f"{DOC} lacks the {START} / {END} markers", file=sys.stderr)
        return 1
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    DOC.write_text(f"{head}{START}\n{render(paths)}\n{END}{tail}")
    print(f"wrote the matrix of {len(paths)} result file(s) into {DOC}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
