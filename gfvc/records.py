"""Results store: one JSON record per job, content-keyed, written atomically.

A record's file name is its content key: a hash of the condition fingerprint,
the sequence sha256, the codec's provenance hash and the rate point. A rerun
finds valid records and skips their jobs; a killed run loses at most the
jobs in flight because each record is written to a temp file and moved into
place with os.replace (atomic on POSIX).
"""
from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from gfvc.errors import InputError
from gfvc.fileio import atomic_write_json, atomic_write_text  # noqa: F401  (re-exported)
from gfvc.provenance import identity_provenance

RECORD_SCHEMA = 1
RECORDS_DIR = "records"

# Fields that legitimately differ between two runs of the same job.
VOLATILE_FIELDS = ("timings", "host", "worker", "created", "run_id")


# A run's job matrix (key -> codec, sequence, rate point, condition), merged over the `gfvc run`
# invocations in one folder: what was asked for, so a report and `gfvc status` can say what is missing.
PLAN_FILE = "jobs.json"


def read_plan(run_dir: Path) -> dict[str, dict[str, Any]] | None:
    """RUN_DIR/jobs.json's jobs, or None when the folder has none (or it is unreadable)."""
    try:
        data = json.loads((Path(run_dir) / PLAN_FILE).read_text())
    except (OSError, ValueError):
        return None
    jobs = data.get("jobs") if isinstance(data, dict) else None
    return jobs if isinstance(jobs, dict) else None


def content_key(condition_fp: str, sequence_sha: str, codec_prov_hash: str, rate_point: str) -> str:
    blob = "\n".join([condition_fp, sequence_sha, codec_prov_hash, rate_point])
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def stable_hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def record_path(run_dir: Path, key: str) -> Path:
    return Path(run_dir) / RECORDS_DIR / f"{key}.json"


def read_record(path: Path) -> dict[str, Any] | None:
    """Return the record, or None if it is missing or not a valid record."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("schema") != RECORD_SCHEMA or "key" not in data:
        return None
    return data


def iter_records(run_dir: Path) -> Iterable[dict[str, Any]]:
    d = Path(run_dir) / RECORDS_DIR
    if not d.is_dir():
        raise InputError(f"{run_dir}: no records/ folder; is this a gfvc run directory?")
    for p in sorted(d.glob("*.json")):
        rec = read_record(p)
        if rec is not None:
            yield rec


def comparable(record: dict[str, Any]) -> dict[str, Any]:
    """The record without fields that vary between identical runs (timings, host)."""
    out = {k: v for k, v in record.items() if k not in VOLATILE_FIELDS}
    prov = dict(out.get("provenance", {}))
    for k in ("git_revision", "hostname", "python", "argv"):
        prov.pop(k, None)
    out["provenance"] = prov
    return out


def current_records_filter(run_dir: Path) -> Any:
    """A predicate: is a record's codec provenance the one RUN_DIR/run.json names for that codec?

    A rerun with another binary, checkpoint or setting writes new records (new
    content keys) and replaces the codec's provenance in run.json; the older
    records stay on disk (listed under ``superseded`` in run.json) but are not
    results of the recorded run command, so reports leave them out. Records
    without provenance, and runs without run.json, are all current.
    """
    try:
        run = json.loads((Path(run_dir) / "run.json").read_text())
    except (OSError, ValueError):
        run = None
    codecs = (run or {}).get("codecs") if isinstance(run, dict) else None
    if not isinstance(codecs, dict):
        return lambda record: True
    want = {c: stable_hash(identity_provenance(p)) for c, p in codecs.items() if isinstance(p, dict)}

    def current(record: dict[str, Any]) -> bool:
        prov = (record.get("provenance") or {}).get("codec")
        w = want.get(record.get("codec", ""))
        return w is None or not isinstance(prov, dict) or stable_hash(identity_provenance(prov)) == w

    return current


# yuv_psnr fields of a record (docs/metrics.md) that results_table exposes as yuv_psnr_<key> columns
YUV_PSNR_KEYS = ("y", "u", "v", "yuv_611", "yuv_vtm")


def results_table(run_dir: Path, include_failed: bool = False):
    """All records of a run as a pandas DataFrame, one row per job.

    Columns: condition, condition_version, condition_fingerprint, codec,
    family, sequence, sequence_sha256, qp, rate_point, frames, fps, bits,
    kbps, status, one float column per metric value (NaN when not computed)
    and ``<metric>_status`` / ``<metric>_reason`` columns; when some record has
    PSNR on the decoder's YUV planes (anchors), ``yuv_psnr_y/u/v/yuv_611/yuv_vtm``
    (NaN for the others).
    """
    import pandas as pd

    rows = []
    current = current_records_filter(run_dir)
    for r in iter_records(run_dir):
        if r.get("status") != "ok" and not include_failed:
            continue
        if not current(r):
            continue
        row = {
            "condition": r["condition"]["name"],
            "condition_version": r["condition"]["version"],
            "condition_fingerprint": r["condition"]["fingerprint"],
            "codec": r["codec"],
            "family": r.get("family", ""),
            "sequence": r["sequence"]["name"],
            "sequence_sha256": r["sequence"]["sha256"],
            "qp": r["rate_point"]["qp"],
            "rate_point": r["rate_point"]["label"],
            "frames": r.get("frames"),
            "fps": r["sequence"].get("fps"),
            "bits": r.get("bits"),
            "kbps": r.get("kbps"),
            "status": r.get("status"),
            "key": r["key"],
        }
        for name, m in (r.get("metrics") or {}).items():
            v = m.get("value")
            row[name] = float(v) if v is not None and not (isinstance(v, float) and math.isnan(v)) else float("nan")
            row[f"{name}_status"] = m.get("status", "ok")
            if m.get("reason"):
                row[f"{name}_reason"] = m["reason"]
        for k, v in (r.get("yuv_psnr") or {}).items():  # anchors: PSNR as VTM's log reports it
            if k in YUV_PSNR_KEYS:
                row[f"yuv_psnr_{k}"] = float(v)
        rows.append(row)
    df = pd.DataFrame(rows)
    if not df.empty:
        df = df.sort_values(["codec", "sequence", "qp"], kind="stable").reset_index(drop=True)
    return df

