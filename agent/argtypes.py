"""argparse ``type=`` helpers shared by the subcommands: a bad value is a usage error (exit 2)
that names the option, with what it expects."""

from __future__ import annotations

import argparse
from collections.abc import Callable

__all__ = ["float_arg"]


def float_arg(ok: Callable[[float], bool], expected: str) -> Callable[[str], float]:
    """A parser of a float for which ``ok(value)`` holds; otherwise ``"<expected>, got '<text>'"``.

    >>> seconds = float_arg(lambda v: v > 0, "expected more than 0 seconds")
    >>> seconds("2.5")
    2.5
    >>> seconds("-1")
    Traceback (most recent call last):
    ...
    argparse.ArgumentTypeError: expected more than 0 seconds, got '-1'
    """

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = float("nan")  # fails every ok() written as a comparison
        if not ok(value):
            raise argparse.ArgumentTypeError(f"{expected}, got {text!r}")
        return value

    return parse
