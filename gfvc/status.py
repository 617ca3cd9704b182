"""`gfvc status RUN_DIR`: done / failed / pending jobs by codec, without running anything.

A run writes its job matrix to RUN_DIR/jobs.json (merged over successive
`gfvc run` invocations in the same folder, e.g. one per codec), so the jobs
that have no record yet can be listed. A pending job whose folder exists is
"running" while a `gfvc run` holds the folder's lock, else "interrupted"
(its leftovers are wiped and it is redone by the next run).
"""
from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path
from typing import Any

from gfvc.errors import InputError
from gfvc.fileio import atomic_write_json

PLAN_FILE = "jobs.json"


def write_plan(run_dir: Path, jobs: list[Any]) -> None:
    """Merge this run's job matrix into RUN_DIR/jobs.json (key -> codec, sequence, rate point)."""
    path = Path(run_dir) / PLAN_FILE
    data = read_plan(run_dir) or {}
    for j in jobs:
        data[j.key] = {"codec": j.codec, "sequence": j.sequence.name, "rate_point": j.rate_point.key,
                       "condition": j.condition.name, "condition_fingerprint": j.condition.fingerprint}
    atomic_write_json(path, {"schema": 1, "jobs": data})


def read_plan(run_dir: Path) -> dict[str, dict[str, Any]] | None:
    try:
        data = json.loads((Path(run_dir) / PLAN_FILE).read_text())
    except (OSError, ValueError):
        return None
    jobs = data.get("jobs") if isinstance(data, dict) else None
    return jobs if isinstance(jobs, dict) else None


def run_status(run_dir: Path) -> dict[str, Any]:
    """Counts per codec and the lists behind them (JSON-ready)."""
    from gfvc.control import run_dir_holder
    from gfvc.records import RECORDS_DIR, read_record

    run_dir = Path(run_dir)
    if not (run_dir / RECORDS_DIR).is_dir() and not (run_dir / PLAN_FILE).is_file():
        raise InputError(f"{run_dir}: no records/ and no {PLAN_FILE}; is this a gfvc run directory?")
    plan = read_plan(run_dir) or {}
    holder = run_dir_holder(run_dir)
    records: dict[str, dict[str, Any]] = {}
    for p in sorted((run_dir / RECORDS_DIR).glob("*.json")) if (run_dir / RECORDS_DIR).is_dir() else []:
        rec = read_record(p)
        if rec is not None:
            records[rec["key"]] = rec
    rows: dict[str, dict[str, int]] = defaultdict(lambda: {"done": 0, "failed": 0, "pending": 0, "running": 0,
                                                           "interrupted": 0})
    failed, pending = [], []
    for key in sorted(set(plan) | set(records)):
        rec = records.get(key)
        info = plan.get(key) or {}
        codec = (rec or {}).get("codec") or info.get("codec", "?")
        label = (f"{codec}/{(rec or {}).get('sequence', {}).get('name') or info.get('sequence')}/"
                 f"{(rec or {}).get('rate_point', {}).get('label') or info.get('rate_point')}")
        if rec is not None and rec.get("status") == "ok":
            rows[codec]["done"] += 1
        elif rec is not None:
            rows[codec]["failed"] += 1
            err = rec.get("error") or {}
            failed.append({"job": label, "key": key, "reason": err.get("reason") or "error",
                           "type": err.get("type"), "message": str(err.get("message", "")).splitlines()[0][:300]})
        elif (run_dir / "jobs" / key).is_dir():
            state = "running" if holder else "interrupted"
            rows[codec][state] += 1
            pending.append({"job": label, "key": key, "state": state})
        else:
            rows[codec]["pending"] += 1
            pending.append({"job": label, "key": key, "state": "pending"})
    cond = {v.get("condition") for v in plan.values()} | {r["condition"]["name"] for r in records.values()}
    return {"run_dir": str(run_dir), "conditions": sorted(c for c in cond if c), "active_run": holder,
            "plan_known": bool(plan), "codecs": {k: dict(v) for k, v in rows.items()},
            "failed": failed, "not_done": pending}


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
