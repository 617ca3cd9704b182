"""`gfvc status RUN_DIR`: done / failed / pending jobs of a run folder, by codec (runs nothing, takes no lock)."""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from suite.runner.status import run_status


def print_status(st: dict[str, Any]) -> None:
    holder = st["active_run"]
    active = (f"a run is active: pid {holder.get('pid')} on {holder.get('host')} since {holder.get('started')}"
              if holder else "no run is active")
    print(f"{st['run_dir']} ({', '.join(st['conditions']) or 'no condition'}): {active}")
    if not st["plan_known"]:
        print("  (no jobs.json: the run predates it or never started; pending jobs are unknown)")
    cols = ("done", "failed", "pending", "running", "interrupted")
    show = [c for c in cols if c in ("done", "failed", "pending") or any(v[c] for v in st["codecs"].values())]
    width = max([len("codec"), len("total"), *(len(c) for c in st["codecs"])])
    print("  " + "codec".ljust(width) + "".join(f"{c:>13s}" for c in show))
    tot = {c: 0 for c in show}
    for codec, row in st["codecs"].items():
        print("  " + codec.ljust(width) + "".join(f"{row[c]:>13d}" for c in show))
        for c in show:
            tot[c] += row[c]
    print("  " + "total".ljust(width) + "".join(f"{tot[c]:>13d}" for c in show))
    if st["failed"]:
        print("failed jobs (rerun `gfvc run` with the same options to retry them):")
        for f in st["failed"][:50]:
            print(f"  {f['job']}: {f['reason']}: {f['message']}")
        if len(st["failed"]) > 50:
            print(f"  ... and {len(st['failed']) - 50} more (--json lists all)")


def cmd_status(args: argparse.Namespace) -> int:
    st = run_status(args.run_dir)
    if args.json:
        print(json.dumps(st, indent=1, sort_keys=True))
    else:
        print_status(st)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("status", help="done / failed / pending jobs of a run directory, by codec",
                       description="Reads RUN_DIR/jobs.json and the records; runs nothing and takes no lock.")
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_status)
