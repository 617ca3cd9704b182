"""What a run folder asked for and has no result of: the report's ``incomplete`` section.

A run interrupted by Ctrl-C, a timeout or a failed job leaves codecs with
fewer results than planned; a report of that folder must say so at the top
(every format and the terminal), per codec, rate point and sequence, rather
than show the codecs as if complete. "Planned" is RUN_DIR/jobs.json (every
job any `gfvc run` in the folder asked for); without it, every codec of
run.json times every sequence times the codec's rate points (the anchor's
QPs for anchors, the key-frame QPs for generative codecs). A job counts as
done when a current record of it is ok (a codec rerun with another
checkpoint is judged by its new records).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gfvc.errors import InputError
from gfvc.records import current_records_filter, iter_records, read_plan


@dataclass(frozen=True)
class Missing:
    codec: str
    sequence: str
    rate_point: str
    state: str          # "failed" | "not run"
    reason: str = ""


@dataclass
class Completeness:
    planned: int = 0
    done: int = 0
    missing: list[Missing] = field(default_factory=list)
    source: str = ""    # "jobs.json" | "run.json"

    @property
    def complete(self) -> bool:
        return not self.missing

    def by_codec(self) -> dict[str, dict[str, Any]]:
        """{codec: {"missing": n, "rate_points": {rp: [sequences]}, "failed": n}} in plan order."""
        out: dict[str, dict[str, Any]] = {}
        for m in self.missing:
            c = out.setdefault(m.codec, {"missing": 0, "failed": 0, "rate_points": {}})
            c["missing"] += 1
            c["failed"] += m.state == "failed"
            c["rate_points"].setdefault(m.rate_point, []).append(m.sequence)
        return out

    def lines(self) -> list[str]:
        """One line per codec: which rate points lack which sequences (said at the top of the report)."""
        if self.complete:
            return []
        head = (f"INCOMPLETE RUN: {len(self.missing)} of {self.planned} planned jobs have no result "
                f"({self.done} done); the numbers below cover only what finished, and a codec's BD-rate "
                "uses only its sequences and rate points that have results. Resume with the same `gfvc run` "
                "command (`gfvc status RUN_DIR` lists the jobs).")
        out = [head]
        for codec, c in self.by_codec().items():
            parts = []
            for rp, seqs in c["rate_points"].items():
                shown = ", ".join(sorted(seqs)[:4]) + (f" and {len(seqs) - 4} more" if len(seqs) > 4 else "")
                parts.append(f"{rp}: {shown}")
            failed = f", {c['failed']} failed" if c["failed"] else ""
            out.append(f"{codec}: {c['missing']} missing{failed} ({'; '.join(parts)})")
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"complete": self.complete, "planned": self.planned, "done": self.done, "source": self.source,
                "missing": [{"codec": m.codec, "sequence": m.sequence, "rate_point": m.rate_point,
                             "state": m.state, "reason": m.reason} for m in self.missing],
                "by_codec": self.by_codec()}


def _rate_point(rp: dict[str, Any]) -> str:
    return str(rp.get("label") or f"qp{rp.get('qp')}")


def _expected_from_run(run: dict[str, Any], records: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    """(codec, sequence, rate point) for every codec of run.json, when no jobs.json exists: its sequences
    (run.json's, else those of the records) at the codec's rate points (by family: run.json, else a record)."""
    cond = run.get("condition") or {}
    anchor_qps = (cond.get("anchor") or {}).get("qps") or []
    key_qps = (cond.get("generative") or {}).get("key_frame_qps") or []
    seqs = [str(s.get("name")) for s in run.get("sequences") or [] if isinstance(s, dict)]
    seqs = seqs or sorted({str((r.get("sequence") or {}).get("name")) for r in records})
    family = {str(r.get("codec")): r.get("family") for r in records if r.get("family")}
    out = []
    for codec, prov in (run.get("codecs") or {}).items():
        fam = (prov or {}).get("family") or family.get(codec)
        qps = anchor_qps if fam == "anchor" else key_qps if fam == "generative" else []
        out += [(codec, s, f"qp{q}") for s in seqs for q in qps]
    return out


def completeness(run_dir: Path, run: dict[str, Any]) -> Completeness:
    """What RUN_DIR planned and has no current ok record of."""
    run_dir = Path(run_dir)
    fp = run.get("condition_fingerprint")
    try:
        records = list(iter_records(run_dir))
    except InputError:  # no records/ folder: nothing done
        records = []
    plan = read_plan(run_dir)
    if plan:
        wanted = [(str(j.get("codec")), str(j.get("sequence")), str(j.get("rate_point"))) for j in plan.values()
                  if not fp or not j.get("condition_fingerprint") or j.get("condition_fingerprint") == fp]
        source = "jobs.json"
    else:
        wanted, source = _expected_from_run(run, records), "run.json"
    expected = list(dict.fromkeys(wanted))
    current = current_records_filter(run_dir)
    done: set[tuple[str, str, str]] = set()
    failed: dict[tuple[str, str, str], str] = {}
    for r in records:
        t = (str(r.get("codec")), str((r.get("sequence") or {}).get("name")), _rate_point(r.get("rate_point") or {}))
        if r.get("status") == "ok" and current(r):
            done.add(t)
        elif r.get("status") != "ok":
            err = r.get("error") or {}
            failed[t] = str(err.get("reason") or err.get("message") or "error").splitlines()[0][:200]
    missing = [Missing(c, s, rp, "failed" if (c, s, rp) in failed else "not run", failed.get((c, s, rp), ""))
               for c, s, rp in expected if (c, s, rp) not in done]
    return Completeness(planned=len(expected), done=len(expected) - len(missing), missing=missing, source=source)
