"""The ``flexsnn`` command. Each verb lives in its own module with a ``register`` function.

User mistakes (any FlexSNNError) and operating-system failures (any OSError: a missing file,
a full disk, a read-only file system; safetensors' I/O errors) print one line naming the path
to stderr and exit 2; nothing prints a traceback for them. flexsnn's warnings print as one
line too.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
import warnings
from collections.abc import Sequence

from safetensors import SafetensorError

from flexsnn import __version__
from flexsnn.cli import demo_cmd, deploy_cmd, early_exit_cmd, evaluate_cmd, search_cmd, train_cmd
from flexsnn.errors import FlexSNNError, FlexSNNWarning, describe_os_error
from flexsnn.runtime import tune_cpu_allocator

EPILOG = """examples:
  flexsnn demo --out runs/demo
  flexsnn train --method mtt --t-min 1 --t-max 6 --epochs 10 --out runs/mtt
  flexsnn evaluate --run runs/mtt --t 1 2 4 6 --config 6,1,3
Run `flexsnn VERB --help` for each verb's options."""


class OneLineErrorParser(argparse.ArgumentParser):
    """Argument mistakes print a single line (not argparse's usage block) and exit 2."""

    def error(self, message: str):  # noqa: D102
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


# One module per verb, each with ``register(subparsers)``, in the order `flexsnn --help` lists them.
VERBS = (train_cmd, evaluate_cmd, demo_cmd, deploy_cmd, search_cmd, early_exit_cmd)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineErrorParser(
        prog="flexsnn",
        description="Train temporally flexible spiking neural networks (MTT + TTM), evaluate "
        "them at any number of time steps, and deploy them event-driven.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"flexsnn {__version__}")
    sub = parser.add_subparsers(dest="verb", metavar="VERB", required=True)
    for module in VERBS:
        module.register(sub)
    return parser


def one_line(message: str) -> str:
    """Multi-line explanations (e.g. a dataset's expected layout) joined into one line."""
    return " ".join(part.strip() for part in message.splitlines() if part.strip())


def error_message(exc: BaseException) -> str:
    """What the user is told: flexsnn's own message, or the OS reason and the path concerned
    (disk full, read-only file system, a path component that is a file, ...)."""
    if isinstance(exc, FlexSNNError):
        return str(exc)
    if isinstance(exc, OSError):
        return describe_os_error(exc)
    return f"cannot read or write a safetensors file: {' '.join(str(exc).split())}"


@contextlib.contextmanager
def _one_line_warnings(verb: str):
    """flexsnn's own warnings print as one line (``flexsnn VERB: warning: ...``)."""
    original = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, FlexSNNWarning):
            print(f"flexsnn {verb}: warning: {one_line(str(message))}", file=sys.stderr)
        else:
            original(message, category, filename, lineno, file, line)

    warnings.showwarning = show
    try:
        yield
    finally:
        warnings.showwarning = original


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    parser = build_parser()
    args = parser.parse_args(argv)
    # The CLI owns its process: keep large tensors on malloc's heap (flexsnn.runtime; opt out
    # with FLEXSNN_CPU_ALLOCATOR=default). Up to ~2x faster CPU steps on glibc.
    tune_cpu_allocator()
    try:
        with _one_line_warnings(args.verb):
            return int(args.func(args) or 0)
    except (FlexSNNError, OSError, SafetensorError) as exc:
        print(f"flexsnn {args.verb}: error: {one_line(error_message(exc))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"flexsnn {args.verb}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
