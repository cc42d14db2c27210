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
