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
import functools
import importlib
import logging
import shutil
import socket
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

import metrics
from gfvc.codec import Codec, Environment, RatePoint
from gfvc.devices import configure_torch, device_provenance, device_type, resolve_device
from gfvc.errors import ExternalToolCrash, ExternalToolError, GfvcError
from gfvc.external import bitstream_bits
from gfvc.factory import build_codec
from gfvc.provenance import suite_provenance
from gfvc.records import RECORD_SCHEMA, atomic_write_json, read_record, record_path
from gfvc.stills import save_job_stills
from gfvc.video import rgb_to_yuv420, rgb_to_yuv444, write_container
from metrics import vertices as vertex_metrics
from metrics.classic import yuv_psnr
from metrics.frame_quality import frame_values
from suite.runner.control import JobTimeout, worker_name
from test_conditions import Condition
from test_conditions.manifest import SequenceEntry, load_sequence

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


def make_codec(name: str, condition: Condition, env: Environment, module: str = "") -> Codec:
    """The codec of a job; ``module`` (a decorator-registered codec's) is imported first in the worker."""
    if module:
        importlib.import_module(module)
    return build_codec(name, condition, env)


def fresh_job_dir(job: Job) -> Path:
    """The job's folder, emptied of what a killed or interrupted attempt left there."""
    jdir = Path(job.run_dir) / "jobs" / job.key
    if jdir.exists():
        shutil.rmtree(jdir)
    jdir.mkdir(parents=True)
    return jdir


def _set_threads(env: Environment) -> None:
    n = int(env.extra.get("threads_per_job", 1))
    try:
        import torch

        if torch.get_num_threads() != n:
            torch.set_num_threads(n)
    except ImportError:  # pragma: no cover
        pass


def base_record(job: Job) -> dict[str, Any]:
    """The fields every record of ``job`` has, ok or failed (status "failed" until the job succeeds)."""
    return {
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
        "worker": worker_name(),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


# Why a job failed (record error.reason); only transient reasons are retried by --retries.
FAILURE_REASONS = {"error": False, "bug": False, "timeout": False, "external_tool_crash": True,
                   "worker_lost": True}


def failure_record(job: Job, reason: str, message: str, *, type_: str = "", traceback_: str = "",
                   timings: dict[str, float] | None = None, write: bool = True) -> dict[str, Any]:
    """A failed record for ``job`` written by whoever saw the failure (job, supervisor or Dask client)."""
    rec = base_record(job)
    rec["error"] = _error(reason, message, type_ or {"timeout": "JobTimeout", "worker_lost": "WorkerLost"}.get(
        reason, "Error"), traceback_)
    rec["timings"] = dict(timings or {})
    if write:
        atomic_write_json(record_path(Path(job.run_dir), job.key), rec)
    return rec


def _error(reason: str, message: str, type_: str, tb: str = "") -> dict[str, Any]:
    err: dict[str, Any] = {"type": type_, "message": message, "reason": reason,
                           "transient": FAILURE_REASONS.get(reason, False)}
    if tb:
        err["traceback"] = tb
    return err


def job_uses_device(job: Job) -> tuple[bool, bool]:
    """(codec model on the device, learned metrics on the device) for this job."""
    codec = job.codec_provenance.get("family") == "generative"
    learned = any(n in metrics.LEARNED for n in job.condition.metrics.names)
    return codec, learned


def job_resources(job: Job, stage: str = "all") -> dict[str, float]:
    """Dask resources a job (or one stage of it) needs: {"GPU": 1} where it does torch work on CUDA.

    A generative codec's job runs its model and the learned metrics on the
    device: the whole job is a GPU job. An anchor's coding is CPU-only
    (VTM/VVenC): that stage goes to any worker, and only its scoring stage
    (learned metrics) needs the GPU (see suite.runner.executors, split jobs).
    """
    if device_type(job.env.device) != "cuda":
        return {}
    codec, learned = job_uses_device(job)
    need = {"all": codec or learned, "code": codec, "score": learned or codec}[stage]
    return {"GPU": 1} if need else {}


def split_job(job: Job) -> bool:
    """Whether a Dask run codes this job on any worker and scores it on a GPU worker."""
    return bool(job_resources(job, "score")) and not job_resources(job, "code")


def run_job(job: Job) -> dict[str, Any]:
    """Encode, decode, check and score one job; write and return its record.

    Never raises for job-level failures: the record carries status "failed"
    and the error (with ``reason`` and whether it is ``transient``), and the
    run goes on. A timeout raised by suite.runner.control.time_limit is recorded as
    reason "timeout".
    """
    coded = code_job(job, keep_sequence=True)
    return score_job(job, coded)


def code_job(job: Job, keep_sequence: bool = False) -> dict[str, Any]:
    """First stage: load, encode, decode, check; viewing copies. Returns the state score_job needs.

    ``{"rec": record so far, "frames": decoded frames or None, "seq": the sequence (when kept)}``;
    on failure ``frames`` is None and the record holds the error.
    """
    _set_threads(job.env)
    t0 = time.perf_counter()
    run_dir = Path(job.run_dir)
    jdir = fresh_job_dir(job)
    rec = base_record(job)
    timings = rec["timings"]
    out: dict[str, Any] = {"rec": rec, "frames": None, "seq": None, "t0": t0}
    try:
        ts = time.perf_counter()
        seq = load_sequence(job.sequence, job.condition.frames, Path(job.data_dir) if job.data_dir else None)
        timings["load_s"] = time.perf_counter() - ts
        codec = make_codec(job.codec, job.condition, job.env, job.codec_module)
        if getattr(type(codec), "device", None) is not None:  # a codec with a torch model (s2d, baselines)
            _configure_device(job)
        ts = time.perf_counter()
        enc = codec.encode(seq, job.rate_point, jdir)
        timings["encode_s"] = time.perf_counter() - ts
        bitstream = Path(enc.bitstream)
        if not bitstream.exists():
            raise ExternalToolError(f"{job.codec}: encoder reported {bitstream} but no such file exists")
        bits = bitstream_bits(bitstream)  # a file, or every file of an external codec's folder
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
        if dec.planes is not None:
            rec["yuv_psnr"] = decoder_plane_psnr(seq.frames, dec.planes, job.condition)

        ts = time.perf_counter()
        vblock, vsample = vertex_metrics.evaluate_decoded(
            codec, dec.extras, job.sequence, job.condition, Path(job.data_dir) if job.data_dir else None)
        timings["vertex_metrics_s"] = time.perf_counter() - ts
        dinfo, dtimes = split_timings(codec.decoder_report())
        timings.update({f"decoder.{k}": v for k, v in dtimes.items()})
        artifacts = {"bitstream": str(bitstream.relative_to(run_dir))}
        if job.save_decoded:
            artifacts.update(_save_decoded(jdir, run_dir, dec, seq.fps, codec.views(dec)))
            if vsample is not None:  # exact decoded frames + both vertex sets for the report's Figure-6 view
                arrays: dict[str, Any] = {"frames": dec.frames[vsample["index"]], **vsample}
                np.savez_compressed(jdir / "vertex_sample.npz", **arrays)
                artifacts["vertex_sample"] = str((jdir / "vertex_sample.npz").relative_to(run_dir))
        duration = seq.num_frames / seq.fps
        info, enc_timings = split_timings(enc.info)
        timings.update({f"encoder.{k}": v for k, v in enc_timings.items()})
        rec.update({
            "frames": seq.num_frames,
            "bits": bits,
            "bits_breakdown": breakdown or {"total": bits},
            "kbps": bits / 1000.0 / duration,
            "vertex_metrics": vblock,
            "decoder_info": relative_to_run(dinfo, run_dir),
            "commands": relative_to_run(enc.commands, run_dir),
            "encoder_info": relative_to_run(info, run_dir),
            "artifacts": artifacts,
        })
        stages = codec.stages()
        if stages:  # the pipeline's stage choices (not part of the key; the provenance holds what defines results)
            rec["stages"] = stages
        rec["device"] = {"requested": job.env.device, "codec": _codec_device(codec), "metrics": None}
        out["frames"] = dec.frames
        if keep_sequence:
            out["seq"] = seq
    except BaseException as e:  # noqa: BLE001 - classified, recorded; Ctrl-C re-raised
        _record_exception(rec, e)
    timings["code_s"] = time.perf_counter() - t0
    return out


def score_job(job: Job, coded: dict[str, Any]) -> dict[str, Any]:
    """Second stage: metrics on the device, FVD clip features kept, the record written."""
    rec = coded["rec"]
    run_dir = Path(job.run_dir)
    timings = rec["timings"]
    t0 = time.perf_counter()
    if coded.get("frames") is not None:
        try:
            _set_threads(job.env)
            seq = coded.get("seq") or load_sequence(job.sequence, job.condition.frames,
                                                    Path(job.data_dir) if job.data_dir else None)

            _, learned = job_uses_device(job)
            dev = _configure_device(job) if learned else None
            feats: dict[str, Any] = {}
            ts = time.perf_counter()
            scores = metrics.evaluate(
                job.condition.metrics, seq.frames, coded["frames"], fps=seq.fps,
                ref_key=f"{seq.sha256}:{job.condition.frames}",
                cache_dir=run_dir / "cache" / "metrics", weights_dir=job.env.weights_dir,
                device=dev or "cpu", features_out=feats,
            )
            timings["metrics_s"] = time.perf_counter() - ts
            rec["artifacts"].update(_save_features(run_dir / "jobs" / job.key, run_dir, feats))
            rec["artifacts"].update(save_job_stills(  # exact decoded frames for the report's Figure 5
                run_dir, run_dir / "jobs" / job.key, seq.frames, coded["frames"],
                functools.partial(frame_values, job.condition.metrics, weights_dir=job.env.weights_dir,
                                  device=dev or "cpu"),
                job.sequence.sha256, extra_frames=job.env.extra.get("keep_frames", ()), device=dev or "cpu"))
            rec.update({"status": "ok", "metrics": scores,
                        "metric_protocol": metrics.protocol(job.condition.metrics)})
            rec["device"] = _device_block(job, rec["device"].get("codec"), dev)
            if feats.get("batch"):
                rec["device"]["batch"] = feats["batch"]  # memory-bounded: changes the last bits (docs/running.md)
            # key order as before: status/metrics beside the rate fields
        except BaseException as e:  # noqa: BLE001
            rec["status"] = "failed"
            _record_exception(rec, e)
    timings["score_s"] = time.perf_counter() - t0
    timings["total_s"] = timings.get("code_s", 0.0) + timings["score_s"]
    atomic_write_json(record_path(run_dir, job.key), rec)
    return rec


def decoder_plane_psnr(original: np.ndarray, planes: Any, condition: Condition) -> dict[str, Any]:
    """PSNR of a conventional codec's own output planes against the original converted like its input.

    The original is converted with the condition's colour spec (the encoder's
    input), so the values are those of VTM's encoder log when VTM codes at
    8 bits internally; see metrics.classic.yuv_psnr.
    """
    c = condition.colour
    ref: tuple[np.ndarray, ...]
    if planes.chroma == "420":
        ref = rgb_to_yuv420(original, c.matrix, c.range, c.chroma_downsampling)
    else:
        ref = rgb_to_yuv444(original, c.matrix, c.range)
    out: dict[str, Any] = dict(yuv_psnr(ref, (planes.y, planes.u, planes.v)))
    out["chroma"] = planes.chroma
    out["method"] = ("decoder's 8-bit planes vs the original converted with the condition's colour spec "
                     f"({c.matrix}, {c.range}, {c.chroma_downsampling}); y/u/v: mean of per-frame PSNR "
                     "(peak 255, 999.99 dB for zero error); yuv_611: (6Y+U+V)/8; yuv_vtm: VTM log's YUV-PSNR "
                     "(4:1:1-weighted MSE)")
    return out


def _record_exception(rec: dict[str, Any], e: BaseException) -> None:
    """Classify an exception into the record's error; re-raise Ctrl-C (the run stops, the job is redone)."""
    if isinstance(e, (KeyboardInterrupt, SystemExit)):
        raise e
    if isinstance(e, JobTimeout):
        rec["error"] = _error("timeout", str(e), "JobTimeout")
    elif isinstance(e, ExternalToolCrash):
        rec["error"] = _error("external_tool_crash", str(e), type(e).__name__)
    elif isinstance(e, GfvcError):
        rec["error"] = _error("error", str(e), type(e).__name__)
    else:  # a bug: keep the traceback in the record, go on
        rec["error"] = _error("bug", str(e), type(e).__name__, traceback.format_exc())


def _configure_device(job: Job) -> str:
    dev = resolve_device(job.env.device)
    configure_torch(dev, bool(job.env.extra.get("deterministic", False)))
    return dev


def _codec_device(codec: Codec) -> str | None:
    """The torch device a generative codec's model ran on (None: no model, e.g. anchors)."""
    if codec.family != "generative":
        return None
    dev = getattr(codec, "device", None)
    return str(dev) if isinstance(dev, str) and dev else None


def _device_block(job: Job, codec_dev: str | None, metrics_dev: str | None) -> dict[str, Any]:
    """The record's ``device``: what was asked, where the codec model and the learned metrics ran."""
    block: dict[str, Any] = {"requested": job.env.device, "codec": codec_dev, "metrics": metrics_dev}
    used = [d for d in (codec_dev, metrics_dev) if d]
    if used:
        cuda = [d for d in used if device_type(d) == "cuda"]
        info = device_provenance(cuda[0] if cuda else used[0])
        info.pop("device", None)
        block.update(info)
    return block


def _save_features(jdir: Path, run_dir: Path, feats: dict[str, Any]) -> dict[str, str]:
    """FVD clip features of this job (decoded and reference) as small .npy files, for pooled FVD."""
    out: dict[str, str] = {}
    f = feats.get("fvd")
    if f is not None:
        for side, name in (("dist", "fvd_clip_features"), ("ref", "fvd_ref_clip_features")):
            p = jdir / f"{name}.npy"
            np.save(p, np.asarray(f[side], dtype=np.float64))
            out[name] = str(p.relative_to(run_dir))
    return out


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


