"""The ``gfvc`` command line.

Each area contributes its sub-commands through a module with a
``register(subparsers)`` function; a sub-command handler takes the parsed
arguments and returns an exit code. Library code raises typed errors
(:mod:`gfvc.errors`); only this module turns them into one-line messages.
"""
from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from typing import Any

from gfvc import __version__
from gfvc.argtypes import Parser, add_offline_arg, apply_offline
from gfvc.errors import GfvcError
from metrics import cli as metrics_cli
from reports import cli as reports_cli
from reports import subjective_cli
from s2d_model import cli as s2d_cli
from suite.cli import coding, importing, info, models, run, sequences, status
from suite.runner.control import sigterm_as_interrupt

# The areas that add sub-commands, in help order (each defines register(subparsers)).
COMMAND_MODULES = (run, sequences, coding, info, status, importing, metrics_cli, reports_cli, subjective_cli, s2d_cli,
                   models)


# Sub-commands that may download weight files on first use (metric networks; VGG19 of the training losses):
# every command under them takes --offline (= GFVC_OFFLINE=1), added here so a new one cannot lack it.
MAY_DOWNLOAD: tuple[str, ...] = ("run", "metrics", "train")


def leaf_commands(p: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> dict[tuple[str, ...], Any]:
    """{("train", "fomm"): parser, ...}: every sub-command that has no sub-commands of its own."""
    subs = [a for a in p._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        return {path: p}
    out: dict[tuple[str, ...], Any] = {}
    for a in subs:
        for name, sp in a.choices.items():
            out.update(leaf_commands(sp, path + (name,)))
    return out


def build_parser() -> argparse.ArgumentParser:
    p = Parser(
        prog="gfvc",
        description="JVET GFVC common-test-condition suite: anchors, generative codecs, metrics, BD-rate reports.",
    )
    p.add_argument("--version", action="version", version=f"gfvc {__version__}")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    for mod in COMMAND_MODULES:
        mod.register(sub)
    for path, leaf in leaf_commands(p).items():
        if path[:1] and path[0] in MAY_DOWNLOAD and "--offline" not in leaf._option_string_actions:
            add_offline_arg(leaf)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help, --version, or a one-line usage error (exit 2)
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 2)
    args.argv = argv  # the command line as given (recorded in run.json)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    apply_offline(args)
    try:
        with sigterm_as_interrupt():  # kill, scancel, a script's `kill $!`: exactly what Ctrl-C does, every command
            return int(args.func(args) or 0)
    except GfvcError as e:
        print(f"gfvc: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("gfvc: interrupted; finished records are kept, rerun to resume", file=sys.stderr)
        return 130
    except BrokenPipeError:  # pragma: no cover - e.g. `gfvc list | head`
        return 0
