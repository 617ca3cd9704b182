"""`gfvc import`: results produced elsewhere become records of a run folder (docs/importing.md).

An imported result is a job whose coding happened elsewhere. Its record is
started by :func:`suite.runner.jobs.base_record`, filled with the rate of the
imported bitstream files and the exact decoded frames, and finished by
:func:`suite.runner.jobs.score_job`, the one function that scores the suite's
own jobs: same metrics, same protocols, same record schema. Reports, `gfvc
compare` and `gfvc regress` therefore treat imported codecs like native ones;
the ``imported`` block of the codec's provenance (run.json) and of each
record says where the results come from, and the report's banner says that
the suite did not run the codec.

Identity: a record's content key is the condition fingerprint, the sequence
identity, the hash of the codec's provenance (which holds the stated
provenance and the sha256 over every imported file) and the rate point, so
importing the same files again finds every record and scores nothing, and
other files make other keys. An import describes all results of its codec:
importing other files under the same name replaces the earlier import
(its records stay on disk, listed under ``superseded`` in run.json, and
reports leave them out, as for a native codec rerun with another build).
"""
from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from gfvc.codec import CODECS, Environment, load_builtin_codecs
from gfvc.errors import GfvcError
from gfvc.provenance import identity_provenance
from gfvc.records import content_key, stable_hash
from metrics import vertices as vertex_metrics
from suite.runner.jobs import (
    Job,
    base_record,
    decoder_plane_psnr,
    failure_record,
    fresh_job_dir,
    score_job,
    valid_record,
)
from suite.runner.plan import RUN_JSON, RunPlan, write_run_json
from suite.runner.status import write_plan
from test_conditions.manifest import SequenceEntry, load_sequence, verify_entry
from tools.results_import import (
    AHG_SOURCES,
    ImportItem,
    ImportProblems,
    ImportSet,
    files_digest,
    item_digest,
    load_decoded,
)


@dataclass
class ImportPlan:
    imported: ImportSet
    run_dir: Path
    jobs: list[Job]
    items: dict[str, ImportItem]  # job key -> what it imports
    digests: dict[str, dict[str, Any]]  # job key -> sha256 of its decoded video and counted files
    provenance: dict[str, Any]


def import_provenance(s: ImportSet, digest: str) -> dict[str, Any]:
    """The imported codec's provenance (run.json and every record): what the user states, what was counted."""
    block: dict[str, Any] = {
        "stated": dict(s.statement),
        "source": s.source,
        "rate_rule": s.rate_rule,
        "results": len(s.items),
        "files_sha256": digest,
        "source_dir": str(s.root),  # machine-local: not part of the identity (gfvc.provenance)
    }
    if s.source == "ahg":
        block["layout"] = ("GFVC AhG software output (experiment/MODEL/Iframe_FORMAT: dec/, enc/, kp/), as written "
                           "by " + "; ".join(AHG_SOURCES))
    if s.manifest_path:
        block["manifest_path"] = s.manifest_path
    return {"codec": s.codec, "family": s.family, "imported": block}


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def plan_import(s: ImportSet, run_dir: Path, env: Environment, data_dir: Path | None = None) -> ImportPlan:
    """Check the import against the run folder and the sequences, hash every file, build the jobs.

    Writes nothing. Every problem is one line of :class:`ImportProblems`.
    """
    run_dir = Path(run_dir)
    problems: list[str] = []
    old = _read_json(run_dir / RUN_JSON)
    cond = s.condition
    fp = old.get("condition_fingerprint")
    if fp and fp != cond.fingerprint:
        problems.append(f"{run_dir} holds results of condition {old.get('condition_name')!r} with fingerprint "
                        f"{str(fp)[:12]}, this import is {cond.name!r} {cond.fingerprint[:12]} (another version, "
                        "--frames or settings): import into another folder, or give the run's condition")
    before = (old.get("codecs") or {}).get(s.codec)
    load_builtin_codecs()
    if isinstance(before, dict) and not before.get("imported"):
        problems.append(f"codec {s.codec!r} in {run_dir} was run by the suite: import under another name")
    elif s.codec in CODECS or s.codec in cond.variants or s.codec in cond.external:
        problems.append(f"{s.codec!r} is a codec of the suite or of condition {cond.name!r}: import under another "
                        f"name (e.g. {s.codec}-imported), so native and imported results never mix")
    used = {i.sequence.name: i.sequence for i in s.items}
    for e in used.values():
        try:
            verify_entry(e, data_dir)
        except GfvcError as err:
            problems.append(str(err))
    if problems:
        raise ImportProblems(problems)
    digests = [item_digest(i) for i in s.items]
    prov = import_provenance(s, files_digest(digests))
    phash = stable_hash(identity_provenance(prov))
    jobs: list[Job] = []
    items: dict[str, ImportItem] = {}
    by_key: dict[str, dict[str, Any]] = {}
    for item, dg in sorted(zip(s.items, digests, strict=True),
                           key=lambda t: (t[0].sequence.name, t[0].rate_point.qp, t[0].rate_point.key)):
        key = content_key(cond.fingerprint, item.sequence.identity, phash, item.rate_point.key)
        jobs.append(Job(key=key, condition=cond, sequence=item.sequence, codec=s.codec, rate_point=item.rate_point,
                        run_dir=str(run_dir), env=env, codec_provenance=prov,
                        data_dir=str(data_dir) if data_dir else None))
        items[key] = item
        by_key[key] = dg
    return ImportPlan(imported=s, run_dir=run_dir, jobs=jobs, items=items, digests=by_key, provenance=prov)


def write_import_run_json(plan: ImportPlan, argv: list[str], metric_weights: dict[str, Any] | None = None
                          ) -> dict[str, Any]:
    """Merge the imported codec into run.json (native codecs and the reproducing `gfvc run` command kept)."""
    used = {i.sequence.name: i.sequence for i in plan.items.values()}
    rp = RunPlan(condition=plan.imported.condition, run_dir=plan.run_dir, jobs=plan.jobs,
                 codecs={plan.imported.codec: plan.provenance}, sequences=list(used.values()))
    data = write_run_json(rp, argv, metric_weights=metric_weights, reproduce=False)
    write_plan(plan.run_dir, plan.jobs)
    return data


def _import_record(job: Job, item: ImportItem, digest: dict[str, Any], seq: Any) -> dict[str, Any]:
    """Load the decoded frames, fill the record's rate fields, score it with the runner's score_job."""
    t0 = time.perf_counter()
    fresh_job_dir(job)  # leftovers of an interrupted import
    try:
        frames, planes = load_decoded(item, job.condition)
    except GfvcError as e:
        return failure_record(job, "error", f"{item.where}: {e}", type_=type(e).__name__)
    rec = base_record(job)
    if frames.shape != seq.frames.shape or frames.dtype != np.uint8:
        return failure_record(job, "error", f"{item.where}: decoded {frames.dtype} {tuple(frames.shape)}, expected "
                                            f"uint8 {tuple(seq.frames.shape)}", type_="InputError")
    if planes is not None:  # a .yuv is the decoder's own output: PSNR on its planes, as for the anchors
        rec["yuv_psnr"] = decoder_plane_psnr(seq.frames, planes, job.condition)
    bits = item.bits
    rec["timings"]["load_s"] = time.perf_counter() - t0
    rec.update({
        "frames": seq.num_frames,
        "bits": bits,
        "bits_breakdown": item.breakdown(),
        "kbps": bits / 1000.0 / (seq.num_frames / seq.fps),
        "vertex_metrics": vertex_metrics.not_applicable(job.codec),
        "artifacts": {},
        "imported": {
            "stated": dict(job.codec_provenance["imported"]["stated"]),
            "source": item.where,
            "decoded": {"file": str(item.decoded), "format": item.decoded_format,
                        "sha256": digest["decoded_sha256"]},
            "counted_files": [[f.name, f.size] for f in item.files],
            "files_sha256": stable_hash(digest),
        },
        "device": {"requested": job.env.device, "codec": None, "metrics": None},
    })
    rec["timings"]["code_s"] = time.perf_counter() - t0
    return score_job(job, {"rec": rec, "frames": frames, "seq": seq})


def run_import(plan: ImportPlan, *, force: bool = False,
               on_start: Callable[[list[Job], list[dict[str, Any]]], None] | None = None,
               on_done: Callable[[dict[str, Any]], None] | None = None) -> list[dict[str, Any]]:
    """Score every imported result without a valid record (all with ``force``); returns all records.

    ``on_start(todo, kept)`` is called once before any scoring, ``on_done(record)`` after each scored job.
    """
    kept: list[dict[str, Any]] = []
    todo: list[Job] = []
    for j in plan.jobs:
        rec = None if force else valid_record(j)
        if rec:
            kept.append(rec)
        else:
            todo.append(j)
    if on_start:
        on_start(todo, kept)
    out = list(kept)
    seq_entry: SequenceEntry | None = None
    seq: Any = None
    for j in todo:  # sorted by sequence: each reference sequence is loaded (and verified) once
        if seq_entry is not j.sequence:
            seq_entry = j.sequence
            seq = load_sequence(j.sequence, j.condition.frames, Path(j.data_dir) if j.data_dir else None)
        rec = _import_record(j, plan.items[j.key], plan.digests[j.key], seq)
        out.append(rec)
        if on_done:
            on_done(rec)
    return out
