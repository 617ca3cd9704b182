"""Argument types and the parser class shared by every sub-command.

Numbers that must be positive are refused by the parser (``--fps 0`` is an
error, never a silent default), and a parser error is one line and exit code
2 like every other user error of the suite.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
from typing import NoReturn


class Parser(argparse.ArgumentParser):
    """ArgumentParser whose errors are one line (the usage is one ``--help`` away)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def _number(text: str, kind: type) -> float:
    try:
        v = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {'an integer' if kind is int else 'a number'}, "
                                         f"got {text!r}") from None
    if kind is float and not math.isfinite(v):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return v


def positive_int(text: str) -> int:
    """An integer >= 1 (frames, jobs, threads, steps, counts)."""
    v = int(_number(text, int))
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {text}")
    return v


def nonnegative_int(text: str) -> int:
    v = int(_number(text, int))
    if v < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return v


def positive_float(text: str) -> float:
    """A finite number > 0 (frame rates, timeouts, minutes)."""
    v = float(_number(text, float))
    if v <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return v


def nonnegative_float(text: str) -> float:
    v = float(_number(text, float))
    if v < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return v


OFFLINE_ENV = "GFVC_OFFLINE"


def add_offline_arg(p: argparse.ArgumentParser) -> None:
    """``--offline``: never download missing weight files (same as GFVC_OFFLINE=1)."""
    p.add_argument("--offline", action="store_true",
                   help=f"never download missing weight files (same as {OFFLINE_ENV}=1)")


def apply_offline(args: argparse.Namespace) -> None:
    """Make --offline visible to library code and to worker processes (through the environment)."""
    if getattr(args, "offline", False):
        os.environ[OFFLINE_ENV] = "1"


def warn(message: str) -> None:
    """One warning line on stderr, in the suite's format."""
    print(f"gfvc: warning: {message}", file=sys.stderr)
