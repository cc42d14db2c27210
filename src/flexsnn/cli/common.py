"""Argument parsing helpers shared by the CLI verbs."""

from __future__ import annotations

import argparse

from flexsnn.errors import InputError


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Shows defaults, except None ones (their help text already says what happens)."""

    def _get_help_string(self, action):
        if action.default is None or action.default is False:
            return action.help
        return super()._get_help_string(action)


def parse_time_config(text: str) -> tuple[int, ...]:
    """'6,1,3' -> (6, 1, 3); every entry a positive integer."""
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise InputError(f"--config must be comma-separated positive integers like 6,1,3; got {text!r}") from None
    if not values or any(v < 1 for v in values):
        raise InputError(f"--config entries must be positive integers (T >= 1); got {text!r}")
    return values


def time_config_arg(text: str) -> tuple[int, ...]:
    try:
        return parse_time_config(text)
    except InputError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer (>= 1), got {value}")
    return value
