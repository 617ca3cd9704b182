"""`gfvc sequences verify|prepare`: check a manifest's sequences, or build CTC sequences from source videos."""
from __future__ import annotations

import argparse
from pathlib import Path

from gfvc.errors import ConfigError, InputError
from test_conditions import load_condition
from test_conditions.manifest import load_manifest, verify_entry
from tools.prepare import add_prepare_args


def register(sub: argparse._SubParsersAction) -> None:
    """Sub-command sequences (verify, prepare)."""
    p = sub.add_parser("sequences", help="verify or prepare test sequences")
    ss = p.add_subparsers(dest="seq_command", metavar="ACTION")
    v = ss.add_parser("verify", help="check every sequence of a manifest (sha256, size, frames)")
    v.add_argument("--condition", default="demo")
    v.add_argument("--manifest")
    v.add_argument("--data-dir")
    v.set_defaults(func=cmd_sequences_verify)
    pr = ss.add_parser("prepare", help="turn TED-Talk videos into CTC sequences + manifest entries")

    add_prepare_args(pr)
    p.set_defaults(func=lambda a: (p.print_help(), 2)[1])


# --- sequences -------------------------------------------------------------------------

def cmd_sequences_verify(args: argparse.Namespace) -> int:
    manifest = Path(args.manifest) if args.manifest else load_condition(args.condition).manifest_path
    entries = load_manifest(manifest)
    if not entries:
        raise ConfigError(f"{manifest}: no sequences listed")
    data_dir = Path(args.data_dir) if args.data_dir else None
    bad = 0
    for e in entries:
        try:
            verify_entry(e, data_dir)
            print(f"ok        {e.name}")
        except InputError as err:
            bad += 1
            print(f"MISMATCH  {e.name}: {err}")
    print(f"{len(entries) - bad} of {len(entries)} sequences verified ({manifest})")
    if bad:
        raise InputError(f"{bad} sequence(s) failed verification")
    return 0
