"""Job matrix, the pure job function, and executors.

condition -> jobs (sequence x codec x rate point) -> executor -> run_job ->
one JSON record per job. ``run_job`` depends only on its argument, so it runs
the same in-process, in a local process pool or on a Dask worker. Each job
writes its own record atomically, so a killed run loses at most the jobs in
flight, and a rerun skips every job whose valid record exists.

Every job runs with a fixed number of torch threads (``Environment.extra
["threads_per_job"]``, default 1): parallelism is across jobs, and results do
not depend on the executor or on -j.
"""
from __future__ import annotations

import datetime as _dt
import logging
import shutil
import socket
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Literal

import numpy as np

from gfvc import __version__
from gfvc.codec import Codec, Environment, RatePoint, get_codec
from gfvc.errors import ConfigError, ExternalToolError, GfvcError, InputError, JobFailed
from gfvc.provenance import suite_provenance
from gfvc.records import RECORD_SCHEMA, atomic_write_json, content_key, read_record, record_path, stable_hash
from gfvc.sequences import SequenceEntry, load_manifest, load_sequence
from test_conditions import Condition

log = logging.getLogger(__name__)

ExecutorName = Literal["local", "dask"]


@dataclass(frozen=True)
class Job:
    """Everything a job needs; picklable and independent of where it runs."""

    key: str
    condition: Condition
    sequence: SequenceEntry
    codec: str
    rate_point: RatePoint
    run_dir: str
    env: Environment
    codec_provenance: dict[str, Any] = field(default_factory=dict)
    data_dir: str | None = None
    save_decoded: bool = True
    codec_module: str = ""  # imported first in the worker, so decorator-registered codecs exist there

    @property
    def label(self) -> str:
        return f"{self.codec}/{self.sequence.name}/{self.rate_point.key}"


@dataclass
class RunPlan:
    condition: Condition
    run_dir: Path
    jobs: list[Job]
    codecs: dict[str, dict[str, Any]]
    sequences: list[SequenceEntry]


def make_codec(name: str, condition: Condition, env: Environment, module: str = "") -> Codec:
    if module:
        import importlib

        importlib.import_module(module)
    cls = get_codec(name)
    return cls(condition, env)


def plan_run(condition: Condition, run_dir: Path, env: Environment, codecs: Iterable[str] | None = None,
             manifest: Path | None = None, data_dir: Path | None = None, check: bool = True,
             save_decoded: bool = True) -> RunPlan:
    """Build the job matrix; checks that every codec can run here (NotAvailable otherwise)."""
    names = list(codecs or condition.codecs)
    if not names:
        raise ConfigError("no codecs to run: the condition lists none and no --codec was given")
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ConfigError(f"codec {dup[0]!r} given twice")
    entries = load_manifest(manifest or condition.manifest_path)
    if not entries:
        raise ConfigError(
            f"manifest {manifest or condition.manifest_path} lists no sequences: build it with "
            f"`gfvc sequences prepare` or pass --manifest FILE"
        )
    for e in entries:
        if (e.width, e.height) != (condition.width, condition.height):
            raise InputError(
                f"sequence {e.name!r} is {e.width}x{e.height} but condition {condition.name!r} "
                f"is {condition.width}x{condition.height}"
            )
        if e.frames < condition.frames:
            raise InputError(f"sequence {e.name!r} has {e.frames} frames; condition {condition.name!r} needs {condition.frames}")
    if check:  # fail fast, once, before any job: a wrong file would fail every job
        from gfvc.sequences import verify_entry

        for e in entries:
            verify_entry(e, data_dir)
    provs: dict[str, dict[str, Any]] = {}
    jobs: list[Job] = []
    for name in names:
        codec = make_codec(name, condition, env)
        if check:
            codec.check()
        prov = codec.provenance()
        provs[name] = prov
        phash = stable_hash(identity_provenance(prov))
        for rp in codec.rate_points():
            for e in entries:
                key = content_key(condition.fingerprint, e.sha256, phash, rp.key)
                jobs.append(Job(key=key, condition=condition, sequence=e, codec=name, rate_point=rp,
                                run_dir=str(run_dir), env=env, codec_provenance=prov,
                                data_dir=str(data_dir) if data_dir else None, save_decoded=save_decoded,
                                codec_module=type(codec).__module__))
    return RunPlan(condition=condition, run_dir=Path(run_dir), jobs=jobs, codecs=provs, sequences=entries)


# Provenance keys that describe this machine, not the result (besides keys ending in "path" / "_dir").
MACHINE_LOCAL_KEYS = frozenset({"command_templates", "checkpoint_source"})


def identity_provenance(prov: Any) -> Any:
    """Provenance without machine-local details (paths, how a file was found, command templates).

    The content key must change when a binary, checkpoint or setting changes
    (their sha256 and values are kept) but not when the same binary sits at
    another path on another machine, or when the same checkpoint was chosen
    another way (``--model`` vs a condition's ``models:`` entry:
    ``checkpoint_source``).
    """
    if isinstance(prov, dict):
        return {k: identity_provenance(v) for k, v in prov.items()
                if not (k.endswith("path") or k.endswith("_dir") or k in MACHINE_LOCAL_KEYS)}
    if isinstance(prov, list):
        return [identity_provenance(v) for v in prov]
    return prov


def _set_threads(env: Environment) -> None:
    n = int(env.extra.get("threads_per_job", 1))
    try:
        import torch

        if torch.get_num_threads() != n:
            torch.set_num_threads(n)
    except ImportError:  # pragma: no cover
        pass


def run_job(job: Job) -> dict[str, Any]:
    """Encode, decode, check and score one job; write and return its record.

    Never raises for job-level failures: the record carries status "failed"
    and the error, and the run goes on.
    """
    _set_threads(job.env)
    t0 = time.perf_counter()
    run_dir = Path(job.run_dir)
    jdir = run_dir / "jobs" / job.key
    if jdir.exists():
        shutil.rmtree(jdir)  # leftovers of a killed attempt
    jdir.mkdir(parents=True)
    rec: dict[str, Any] = {
        "schema": RECORD_SCHEMA,
        "key": job.key,
        "status": "failed",
        "error": None,
        "condition": {"name": job.condition.name, "version": job.condition.version,
                      "fingerprint": job.condition.fingerprint},
        "codec": job.codec,
        "family": job.codec_provenance.get("family", ""),
        "sequence": {"name": job.sequence.name, "sha256": job.sequence.sha256,
                     "frames": job.condition.frames, "width": job.sequence.width,
                     "height": job.sequence.height, "fps": job.sequence.fps},
        "rate_point": {"qp": job.rate_point.qp, "label": job.rate_point.key},
        "provenance": {**suite_provenance(), "codec": job.codec_provenance},
        "timings": {},
        "host": socket.gethostname(),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    timings = rec["timings"]
    try:
        ts = time.perf_counter()
        seq = load_sequence(job.sequence, job.condition.frames, Path(job.data_dir) if job.data_dir else None)
        timings["load_s"] = time.perf_counter() - ts
        codec = make_codec(job.codec, job.condition, job.env, job.codec_module)
        ts = time.perf_counter()
        enc = codec.encode(seq, job.rate_point, jdir)
        timings["encode_s"] = time.perf_counter() - ts
        bitstream = Path(enc.bitstream)
        if not bitstream.is_file():
            raise ExternalToolError(f"{job.codec}: encoder reported {bitstream} but no such file exists")
        bits = bitstream.stat().st_size * 8
        breakdown = dict(enc.bits_breakdown)
        if breakdown and sum(breakdown.values()) != bits:
            raise ExternalToolError(
                f"{job.codec}: bit breakdown {breakdown} sums to {sum(breakdown.values())}, file has {bits} bits"
            )
        ts = time.perf_counter()
        dec = codec.decode(bitstream, jdir)
        timings["decode_s"] = time.perf_counter() - ts
        if dec.frames.shape != seq.frames.shape or dec.frames.dtype != np.uint8:
            raise ExternalToolError(
                f"{job.codec}: decoded {dec.frames.dtype} {tuple(dec.frames.shape)}, "
                f"expected uint8 {tuple(seq.frames.shape)}"
            )
        ts = time.perf_counter()
        import metrics

        scores = metrics.evaluate(
            job.condition.metrics, seq.frames, dec.frames, fps=seq.fps,
            ref_key=f"{seq.sha256}:{job.condition.frames}",
            cache_dir=run_dir / "cache" / "metrics", weights_dir=job.env.weights_dir,
        )
        timings["metrics_s"] = time.perf_counter() - ts
        artifacts = {"bitstream": str(bitstream.relative_to(run_dir))}
        if job.save_decoded:
            artifacts.update(_save_decoded(jdir, run_dir, dec, seq.fps, codec.views(dec)))
        duration = seq.num_frames / seq.fps
        info, enc_timings = split_timings(enc.info)
        timings.update({f"encoder.{k}": v for k, v in enc_timings.items()})
        rec.update({
            "status": "ok",
            "frames": seq.num_frames,
            "bits": bits,
            "bits_breakdown": breakdown or {"total": bits},
            "kbps": bits / 1000.0 / duration,
            "metrics": scores,
            "metric_protocol": metrics.protocol(job.condition.metrics),
            "commands": relative_to_run(enc.commands, run_dir),
            "encoder_info": relative_to_run(info, run_dir),
            "artifacts": artifacts,
        })
    except GfvcError as e:
        rec["error"] = {"type": type(e).__name__, "message": str(e)}
    except Exception as e:  # a bug: keep the traceback in the record, go on
        rec["error"] = {"type": type(e).__name__, "message": str(e), "traceback": traceback.format_exc()}
    timings["total_s"] = time.perf_counter() - t0
    atomic_write_json(record_path(run_dir, job.key), rec)
    return rec


RUN_DIR_TOKEN = "$RUN_DIR"


def relative_to_run(obj: Any, run_dir: Path) -> Any:
    """Replace the run directory in strings by $RUN_DIR, so records do not depend on where the run is."""
    prefix = str(run_dir)
    if isinstance(obj, dict):
        return {k: relative_to_run(v, run_dir) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [relative_to_run(v, run_dir) for v in obj]
    if isinstance(obj, Path):
        obj = str(obj)
    if isinstance(obj, str):
        return obj.replace(prefix, RUN_DIR_TOKEN)
    return obj


def split_timings(info: dict[str, Any]) -> tuple[dict[str, Any], dict[str, float]]:
    """Separate wall-clock fields (``*_s``, ``*_seconds``) from an encoder's info dict."""
    keep, times = {}, {}
    for k, v in info.items():
        if isinstance(v, (int, float)) and (k.endswith("_s") or k.endswith("_seconds")):
            times[k] = float(v)
        else:
            keep[k] = v
    return keep, times


def _save_decoded(jdir: Path, run_dir: Path, dec: Any, fps: float,
                  views: dict[str, np.ndarray]) -> dict[str, str]:
    """Viewing copies (lossy mp4: decoded video and the codec's views) and extras as .npy."""
    from gfvc.video import write_container

    out: dict[str, str] = {}
    for name, frames in {"decoded": dec.frames, **views}.items():
        mp4 = jdir / f"{name}.mp4"
        try:
            write_container(mp4, frames, fps)
            out[f"{name}_mp4"] = str(mp4.relative_to(run_dir))
        except GfvcError as e:  # viewing copies only; never fail the job
            log.warning("could not write viewing copy %s: %s", mp4, e)
    for name, arr in dec.extras.items():
        p = jdir / f"{name}.npy"
        np.save(p, arr)
        out[name] = str(p.relative_to(run_dir))
    return out


def valid_record(job: Job) -> dict[str, Any] | None:
    """The job's existing record if it is complete and successful."""
    rec = read_record(record_path(Path(job.run_dir), job.key))
    if rec and rec.get("status") == "ok" and rec.get("key") == job.key:
        return rec
    return None


ProgressFn = Callable[[dict[str, Any]], None]


def execute(jobs: list[Job], executor: ExecutorName = "local", workers: int = 1,
            scheduler: str | None = None, on_done: ProgressFn | None = None) -> list[dict[str, Any]]:
    """Run jobs with the chosen executor; returns their records (completion order)."""
    if not jobs:
        return []
    if workers < 1:
        raise ConfigError(f"-j must be >= 1, got {workers}")
    done: list[dict[str, Any]] = []

    def finish(rec: dict[str, Any]) -> None:
        done.append(rec)
        if on_done:
            on_done(rec)

    if executor == "dask" or scheduler:
        _execute_dask(jobs, workers, scheduler, finish)
    elif workers == 1:
        for j in jobs:
            finish(run_job(j))
    else:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor, as_completed

        ctx = mp.get_context("spawn")  # no fork after torch threads exist
        with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
            futs = [pool.submit(run_job, j) for j in jobs]
            for f in as_completed(futs):
                finish(f.result())
    return done


def _execute_dask(jobs: list[Job], workers: int, scheduler: str | None, finish: Callable[[dict[str, Any]], None]) -> None:
    try:
        from distributed import Client, LocalCluster, as_completed
    except ImportError:
        from gfvc.errors import NotAvailable

        raise NotAvailable("--executor dask needs dask.distributed: pip install 'gfvc-ctc[dask]'") from None
    cluster = None
    if scheduler:
        client = Client(scheduler, timeout="30s")
    else:
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                               dashboard_address=None, silence_logs=logging.ERROR)
        client = Client(cluster)
    try:
        futs = client.map(run_job, jobs, pure=False, key=[f"gfvc-{j.key}" for j in jobs])
        for f in as_completed(futs):
            finish(f.result())
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def write_run_json(plan: RunPlan, argv: list[str]) -> None:
    data = {
        "suite_version": __version__,
        "condition_name": plan.condition.name,
        "condition": plan.condition.to_dict(),
        "condition_fingerprint": plan.condition.fingerprint,
        "codecs": plan.codecs,
        "sequences": [e.to_dict() for e in plan.sequences],
        "provenance": suite_provenance(),
        "argv": argv,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    atomic_write_json(plan.run_dir / "run.json", data)


def failed(records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in records if r.get("status") != "ok"]


def raise_if_failed(records: list[dict[str, Any]]) -> None:
    bad = failed(records)
    if bad:
        first = bad[0]
        raise JobFailed(
            f"{len(bad)} of {len(records)} jobs failed; first: {first['codec']}/{first['sequence']['name']}/"
            f"{first['rate_point']['label']}: {first['error']['type']}: {first['error']['message']}"
        )
