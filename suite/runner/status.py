"""`gfvc status RUN_DIR`: done / failed / pending jobs by codec, without running anything.

A run writes its job matrix to RUN_DIR/jobs.json (merged over successive
`gfvc run` invocations in the same folder, e.g. one per codec), so the jobs
that have no record yet can be listed. A pending job whose folder exists is
"running" while a `gfvc run` holds the folder's lock, else "interrupted"
(its leftovers are wiped and it is redone by the next run).
"""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

from gfvc.errors import InputError
from gfvc.fileio import atomic_write_json
from gfvc.records import PLAN_FILE, RECORDS_DIR, read_plan, read_record
from suite.runner.control import run_dir_holder


def write_plan(run_dir: Path, jobs: list[Any]) -> None:
    """Merge this run's job matrix into RUN_DIR/jobs.json (key -> codec, sequence, rate point)."""
    path = Path(run_dir) / PLAN_FILE
    data = read_plan(run_dir) or {}
    for j in jobs:
        data[j.key] = {"codec": j.codec, "sequence": j.sequence.name, "rate_point": j.rate_point.key,
                       "condition": j.condition.name, "condition_fingerprint": j.condition.fingerprint}
    atomic_write_json(path, {"schema": 1, "jobs": data})


def run_status(run_dir: Path) -> dict[str, Any]:
    """Counts per codec and the lists behind them (JSON-ready)."""
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
