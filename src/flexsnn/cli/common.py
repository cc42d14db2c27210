"""Argument parsing helpers shared by the CLI verbs.

Integers on the command line are plain ASCII digits (an optional leading ``-`` where negative
values make sense): no spaces, no ``+``, no ``_`` separators, no other scripts' digits, no
``1e3``. Python's ``int()`` accepts all of those, so a typo could pass as a number.
"""

from __future__ import annotations

import argparse
import re

from flexsnn.errors import InputError

_DIGITS = re.compile(r"[0-9]+")
_SIGNED_DIGITS = re.compile(r"-?[0-9]+")


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Shows defaults, except None ones (their help text already says what happens)."""

    def _get_help_string(self, action):
        if action.default is None or action.default is False:
            return action.help
        return super()._get_help_string(action)


def parse_int(text: str, name: str, minimum: int | None = None) -> int:
    """``text`` as an int if it is plain ASCII digits (a leading ``-`` only when ``minimum`` is
    None or negative) and at least ``minimum``; else InputError naming ``name``."""
    pattern = _SIGNED_DIGITS if minimum is None or minimum < 0 else _DIGITS
    if not isinstance(text, str) or pattern.fullmatch(text) is None:
        form = "an integer" if minimum is None else f"an integer >= {minimum}"
        raise InputError(f"{name} must be {form} written in plain digits 0-9, got {text!r}")
    try:
        value = int(text)
    except ValueError:  # more digits than Python converts (sys.get_int_max_str_digits)
        raise InputError(f"{name} has too many digits ({len(text)}), got {text[:20]!r}...") from None
    if minimum is not None and value < minimum:
        raise InputError(f"{name} must be an integer >= {minimum}, got {value}")
    return value


def parse_int_list(text: str, name: str, minimum: int = 1) -> tuple[int, ...]:
    """'6,1,3' -> (6, 1, 3): integers in plain digits separated by single commas, no spaces."""
    form = "positive integers (>= 1)" if minimum == 1 else f"integers >= {minimum}"
    parts = text.split(",") if isinstance(text, str) else [None]
    if not all(isinstance(p, str) and _DIGITS.fullmatch(p) for p in parts):
        raise InputError(f"{name} must be comma-separated {form} in plain digits 0-9 like 6,1,3; got {text!r}")
    values = tuple(parse_int(p, name) for p in parts)
    if any(v < minimum for v in values):
        raise InputError(f"{name} entries must be {form}; got {text!r}")
    return values


def parse_time_config(text: str) -> tuple[int, ...]:
    """'6,1,3' -> (6, 1, 3); every entry a positive integer in plain digits."""
    return parse_int_list(text, "--config", minimum=1)


def time_config_arg(text: str) -> tuple[int, ...]:
    try:
        return parse_time_config(text)
    except InputError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1 in plain digits."""
    return _checked(text, 1, "a positive integer (>= 1)")


def nonnegative_int(text: str) -> int:
    """argparse type: an integer >= 0 in plain digits (counts where 0 means "off", seeds)."""
    return _checked(text, 0, "an integer >= 0")


def integer(text: str) -> int:
    """argparse type: an integer in plain digits, optionally negative."""
    return _checked(text, None, "an integer")


def _checked(text: str, minimum: int | None, form: str) -> int:
    try:
        return parse_int(text, "value", minimum)
    except InputError:
        raise argparse.ArgumentTypeError(f"expected {form} in plain digits 0-9, got {text!r}") from None
