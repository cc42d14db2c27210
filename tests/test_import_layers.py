"""Imports go one way: the layer table of docs/architecture.md, checked on every module's AST.

(a) A module imports flexsnn code only from its own package or from a lower rank.
(b) No function-level (or class-level) imports of flexsnn modules, except the few listed in
    DEFERRED, each of which defers a real optional dependency.
The table is read from docs/architecture.md, so the document and the check cannot drift.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "flexsnn"
ARCHITECTURE = ROOT / "docs" / "architecture.md"

# (importing module, imported module): function-level imports that defer an optional
# dependency. Keep it short; every entry says which dependency it defers.
DEFERRED: dict[tuple[str, str], str] = {
    ("flexsnn.neurons.fused", "flexsnn.neurons.cpu_kernels"): "numba, loaded on the first CPU float32 neuron call",
}


def layer_ranks(markdown: str) -> dict[str, int]:
    """``{package: rank}`` from the "Import layers" table (rows like ``| 3 | `models`, `data` |``)."""
    section = markdown.split("### Import layers", 1)[1]
    ranks = {}
    for rank, cell in re.findall(r"^\|\s*(\d+)\s*\|([^|]*)\|", section, flags=re.M):
        for name in re.findall(r"`([\w.]+)`", cell.split("(")[0]):
            ranks[name] = int(rank)
    return ranks


def module_name(path: Path, src: Path) -> str:
    parts = ["flexsnn", *path.relative_to(src).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def package_of(module: str) -> str:
    """``flexsnn.deploy.nir`` -> ``deploy``; the package root ``flexsnn`` -> ``flexsnn``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "flexsnn"


# Top-level modules and packages: `from flexsnn import deploy` imports a package, while
# `from flexsnn import __version__` imports a name of the package root.
TOP_LEVEL = {p.stem for p in SRC.iterdir() if p.suffix == ".py" or (p / "__init__.py").is_file()} - {"__init__"}


class _Imports(ast.NodeVisitor):
    """Every flexsnn module a source imports: ``(line, target, nested)`` (nested = in a def/class)."""

    def __init__(self, module: str, is_package: bool):
        self.module, self.is_package = module, is_package
        self.found: list[tuple[int, str, bool]] = []
        self.depth = 0

    def _nested(self, node):
        self.depth += 1
        self.generic_visit(node)
        self.depth -= 1

    visit_FunctionDef = visit_AsyncFunctionDef = visit_ClassDef = visit_Lambda = _nested

    def _add(self, node, target: str):
        if target == "flexsnn" or target.startswith("flexsnn."):
            self.found.append((node.lineno, target, self.depth > 0))

    def visit_Import(self, node: ast.Import):
        for alias in node.names:
            self._add(node, alias.name)

    def visit_ImportFrom(self, node: ast.ImportFrom):
        base = node.module or ""
        if node.level:  # relative: resolve against this module's package
            package = self.module.split(".")
            package = package if self.is_package else package[:-1]
            package = package[: len(package) - (node.level - 1)]
            base = ".".join(package + ([node.module] if node.module else []))
        for alias in node.names:
            from_root = base == "flexsnn" and alias.name in TOP_LEVEL
            self._add(node, f"flexsnn.{alias.name}" if from_root else base)

    def visit_Call(self, node: ast.Call):
        # importlib.import_module("flexsnn.x") / __import__("flexsnn.x") hide an import from the above
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
        if name in ("import_module", "__import__") and node.args and isinstance(node.args[0], ast.Constant):
            if isinstance(node.args[0].value, str):
                self.found.append((node.lineno, node.args[0].value, True))
        self.generic_visit(node)


def flexsnn_imports(source: str, module: str, is_package: bool = False) -> list[tuple[int, str, bool]]:
    visitor = _Imports(module, is_package)
    visitor.visit(ast.parse(source))
    return [f for f in visitor.found if f[1] == "flexsnn" or f[1].startswith("flexsnn.")]


def violations(
    source: str,
    module: str,
    ranks: dict[str, int],
    is_package: bool = False,
    deferred: dict[tuple[str, str], str] | None = None,
    root_rank: int | None = None,
) -> list[str]:
    """Every broken rule of one module's source, as readable lines (empty: the module is fine).

    The package root ``flexsnn`` (its ``__init__``) may import anything; importing FROM it
    counts at ``root_rank`` (the highest rank the root imports).
    """
    deferred = DEFERRED if deferred is None else deferred
    own = package_of(module)
    problems = []
    for line, target, nested in flexsnn_imports(source, module, is_package):
        where = f"{module}:{line} imports {target}"
        if nested and (module, target) not in deferred:
            problems.append(f"{where} inside a function or class (only optional-dependency deferrals may)")
        if own == "flexsnn":
            continue
        dest = package_of(target)
        if dest == own:
            continue
        if own not in ranks:
            problems.append(f"{where}: package {own!r} is missing from the import-layer table")
            continue
        dest_rank = root_rank if dest == "flexsnn" else ranks.get(dest)
        if dest_rank is None:
            problems.append(f"{where}: package {dest!r} is missing from the import-layer table")
        elif dest_rank >= ranks[own]:
            problems.append(
                f"{where}: {own} (rank {ranks[own]}) may only import lower ranks, {dest} is rank {dest_rank}"
            )
    return problems


def source_modules() -> list[tuple[Path, str]]:
    return [(p, module_name(p, SRC)) for p in sorted(SRC.rglob("*.py"))]


RANKS = layer_ranks(ARCHITECTURE.read_text())


def _root_rank() -> int:
    init = SRC / "__init__.py"
    targets = [package_of(t) for _, t, _ in flexsnn_imports(init.read_text(), "flexsnn", True)]
    return max((RANKS[t] for t in targets if t in RANKS), default=0)


def test_the_table_names_every_package():
    packages = {package_of(m) for _, m in source_modules()} - {"flexsnn"}
    assert packages <= set(RANKS), f"add {sorted(packages - set(RANKS))} to the table in docs/architecture.md"
    assert RANKS["errors"] == 0 and RANKS["runs"] < RANKS["cli"] < RANKS["__main__"]


def test_every_module_imports_one_way_and_at_module_level():
    root_rank = _root_rank()
    problems = []
    for path, module in source_modules():
        problems += violations(path.read_text(), module, RANKS, path.name == "__init__.py", root_rank=root_rank)
    assert not problems, "\n".join(problems)


def test_every_deferral_still_exists():
    # a stale entry would let a new import in silently
    found = set()
    for path, module in source_modules():
        found |= {
            (module, t)
            for _, t, nested in flexsnn_imports(path.read_text(), module, path.name == "__init__.py")
            if nested
        }
    assert set(DEFERRED) <= found, f"remove stale DEFERRED entries {sorted(set(DEFERRED) - found)}"


# ---- the checker itself, on tiny synthetic modules ---------------------------------------------
TOY_RANKS = {"errors": 0, "neurons": 1, "train": 4, "deploy": 6, "cli": 9}


def test_table_parser_reads_ranks_and_skips_notes():
    text = (
        "### Import layers\n| rank | packages |\n|---|---|\n| 0 | `errors`, `io` (errors imports nothing) |\n"
        "| 4 | `train`, `inference` |\n"
    )
    assert layer_ranks(text) == {"errors": 0, "io": 0, "train": 4, "inference": 4}


def test_checker_accepts_downward_and_same_package_imports():
    src = (
        "from flexsnn.errors import InputError\nimport flexsnn.neurons\nfrom flexsnn.train.loop import fit\n"
        "from . import samplers\n"
    )
    assert violations(src, "flexsnn.train.checkpoint", TOY_RANKS, deferred={}) == []


@pytest.mark.parametrize(
    "src",
    [
        "from flexsnn.deploy.bias_removal import strip_batchnorm\n",  # train -> deploy: upward
        "import flexsnn.cli\n",
        "from flexsnn.inference import InferenceRunner\n",  # same rank, other package
        "from ..deploy import simulate\n",  # relative, upward
        "from flexsnn import deploy\n",  # a subpackage through the root
        "from flexsnn.models import build_model\n",  # not in the (toy) table
    ],
)
def test_checker_refuses_upward_or_unknown_imports(src):
    ranks = {**TOY_RANKS, "inference": 4}
    problems = violations(src, "flexsnn.train.checkpoint", ranks, deferred={})
    assert len(problems) == 1 and "flexsnn.train.checkpoint:1" in problems[0], problems


def test_checker_refuses_function_level_imports_unless_deferred():
    src = (
        "def load():\n    from flexsnn.errors import InputError\n    return InputError\n"
        "class A:\n    import flexsnn.neurons as n\n"
        "def hidden():\n    import importlib\n    return importlib.import_module('flexsnn.errors')\n"
    )
    problems = violations(src, "flexsnn.train.checkpoint", TOY_RANKS, deferred={})
    assert [p.split(" imports")[0] for p in problems] == [
        "flexsnn.train.checkpoint:2",
        "flexsnn.train.checkpoint:5",
        "flexsnn.train.checkpoint:8",
    ]
    allowed = {("flexsnn.train.checkpoint", "flexsnn.neurons"): "toy"}
    assert len(violations(src, "flexsnn.train.checkpoint", TOY_RANKS, deferred=allowed)) == 2
    # third-party imports inside functions (nir, sinabs, numba) are no concern of this check
    assert violations("def f():\n    import nir\n", "flexsnn.deploy.nir", TOY_RANKS, deferred={}) == []


def test_checker_lets_the_root_import_anything_and_ranks_imports_from_it():
    assert violations("from flexsnn.cli import main\n", "flexsnn", TOY_RANKS, True, deferred={}, root_rank=9) == []
    assert violations("from flexsnn import __version__\n", "flexsnn.cli", TOY_RANKS, deferred={}, root_rank=2) == []
    assert (
        len(
            violations(
                "from flexsnn import __version__\n", "flexsnn.neurons.modules", TOY_RANKS, deferred={}, root_rank=2
            )
        )
        == 1
    )
