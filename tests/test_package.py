"""Package metadata: the version comes from the installed distribution, and the CLI reports it."""

import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import flexsnn

REPO = Path(__file__).resolve().parents[1]


def test_version_is_the_distribution_version():
    assert flexsnn.__version__ == version("flexsnn")
    assert flexsnn.__version__[0].isdigit()


def test_all_names_exist():
    for name in flexsnn.__all__:
        assert hasattr(flexsnn, name), name


def test_cli_version():
    done = subprocess.run([sys.executable, "-m", "flexsnn", "--version"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0
    assert done.stdout.strip() == f"flexsnn {flexsnn.__version__}"


def test_project_files_exist():
    license_text = (REPO / "LICENSE").read_text()
    assert "MIT License" in license_text
    assert "Temporal Flexibility in Spiking Neural Networks" in (REPO / "CITATION.cff").read_text()
    assert "## [Unreleased]" in (REPO / "CHANGELOG.md").read_text()


# import name -> distribution name where they differ
IMPORT_TO_DIST = {"PIL": "pillow", "yaml": "pyyaml", "sklearn": "scikit-learn"}
# imported only inside functions, behind an optional extra
OPTIONAL_IMPORTS = {"sinabs", "tonic", "samna"}


def _declared(requirements):
    import re

    return {re.split(r"[<>=!~; \[]", r, maxsplit=1)[0].lower() for r in requirements}


def _third_party_imports():
    import ast

    names = set()
    for path in (REPO / "src" / "flexsnn").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return {n for n in names if n != "flexsnn" and n not in sys.stdlib_module_names}


def test_runtime_dependencies_are_exactly_what_src_imports():
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    declared = _declared(project["dependencies"])
    imported = {IMPORT_TO_DIST.get(n, n).lower() for n in _third_party_imports() - OPTIONAL_IMPORTS}
    assert imported - declared == set(), "imported by src/ but not declared"
    assert declared - imported == set(), "declared but never imported by src/"
    extras = set().union(*(_declared(v) for v in project["optional-dependencies"].values()))
    assert {n for n in OPTIONAL_IMPORTS if n in _third_party_imports()} <= extras | {"samna"}


def test_lock_pins_every_runtime_dependency():
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    pinned = {
        line.split("==")[0].lower()
        for line in (REPO / "requirements.lock").read_text().splitlines()
        if "==" in line and not line.startswith("#")
    }
    assert _declared(project["dependencies"]) <= pinned
    assert "tonic" not in pinned and "librosa" not in pinned
