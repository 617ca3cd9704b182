"""Executors: in-process (-j 1), job processes (-j N), Dask (LocalCluster or a running cluster).

All three run the same stage functions of suite.runner.jobs and give identical
records. What they add is control (suite.runner.control): a per-job wall-clock
timeout recorded as reason ``timeout``; ``retries`` for transient failures;
Ctrl-C (KeyboardInterrupt in the main thread) that cancels pending jobs and
kills running ones with their encoders before it propagates.

Dask specifics:

* every task runs its job in a job process owned by the worker thread, so a
  timeout or a cancellation (Ctrl-C of the client, the client gone) stops the
  job and its encoders; the task polls its own state on the worker
  (``cancelled`` once the client releases it);
* GPU jobs carry the Dask resource ``GPU=1`` (suite.runner.jobs.job_resources) so
  the scheduler sends them only to workers started with ``--resources GPU=1``;
  an anchor's job with learned metrics on CUDA is split: coding (VTM/VVenC,
  CPU) on any worker, scoring on a GPU worker;
* a worker that dies mid-job is handled by Dask (the task is rerun on another
  worker; the record is content-keyed, so a rerun writes the same file and
  nothing is duplicated); after Dask gives up (KilledWorker) the job is
  recorded as ``worker_lost`` and ``retries`` applies.
"""
from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from multiprocessing.connection import wait
from typing import Any

from gfvc.devices import device_type
from gfvc.errors import ConfigError, NotAvailable
from gfvc.process import set_pdeathsig
from suite.runner.control import JobProcess, JobTimeout, WorkerLost, time_limit
from suite.runner.jobs import Job, code_job, failure_record, job_resources, run_job, score_job, split_job

log = logging.getLogger(__name__)

Finish = Callable[[dict[str, Any]], None]
POLL_S = 0.25


def _retry(rec: dict[str, Any], attempt: int, retries: int, job: Job) -> bool:
    err = rec.get("error") or {}
    if rec.get("status") != "ok" and err.get("transient") and attempt < retries:
        log.warning("job %s failed (%s: %s); retrying (attempt %d of %d)", job.label, err.get("reason"),
                    str(err.get("message", "")).splitlines()[0][:200], attempt + 2, retries + 1)
        return True
    return False


# --- in process ---------------------------------------------------------------------------------

def run_in_process(jobs: list[Job], finish: Finish, *, timeout_s: float = 0.0, retries: int = 0) -> None:
    """-j 1: jobs one after the other in this process (timeout by SIGALRM)."""
    for job in jobs:
        attempt = 0
        while True:
            t0 = time.perf_counter()
            try:
                with time_limit(timeout_s):
                    rec = run_job(job)
            except JobTimeout as e:  # fired outside the job's own handler (e.g. while writing)
                rec = failure_record(job, "timeout", str(e), timings={"total_s": time.perf_counter() - t0})
            if _retry(rec, attempt, retries, job):
                attempt += 1
                continue
            finish(rec)
            break


# --- local job processes --------------------------------------------------------------------------

def _timeout_message(timeout_s: float) -> str:
    return (f"job exceeded its wall-clock limit of {timeout_s:g} s (condition execution.job_timeout_s or "
            "--job-timeout); it was stopped with its encoders")


def run_pool(jobs: list[Job], finish: Finish, *, workers: int, timeout_s: float = 0.0, retries: int = 0) -> None:
    """-j N: N job processes; a supervisor loop here dispatches, times out, retries and stops them."""
    pending: deque[tuple[Job, int]] = deque((j, 0) for j in jobs)
    slots: list[JobProcess | None] = [None] * workers
    env = {"GFVC_CONCURRENT_JOBS": str(workers)}
    try:
        while pending or any(s is not None and s.busy for s in slots):
            for i in range(workers):
                s = slots[i]
                if pending and (s is None or not s.busy):
                    if s is None or not s.alive():
                        s = slots[i] = JobProcess(f"local-{i}", env)
                    job, attempt = pending.popleft()
                    s.submit(run_job, (job,), (job, attempt))
            busy = [s for s in slots if s is not None and s.busy]
            wait([s.conn for s in busy], timeout=POLL_S)
            for i, s in enumerate(slots):
                if s is None or not s.busy:
                    continue
                job, attempt = s.task
                if s.ready() or not s.alive():
                    elapsed = s.elapsed()
                    try:
                        rec = s.result()
                    except WorkerLost as e:
                        rec = failure_record(job, "worker_lost", str(e), timings={"total_s": elapsed})
                        s.kill()
                        slots[i] = None
                    except RuntimeError as e:  # the job function itself raised (not a job-level failure)
                        rec = failure_record(job, "bug", str(e).splitlines()[0], traceback_=str(e),
                                             timings={"total_s": elapsed})
                elif timeout_s and s.elapsed() > timeout_s:
                    elapsed = s.elapsed()
                    s.kill()
                    slots[i] = None
                    rec = failure_record(job, "timeout", _timeout_message(timeout_s), timings={"total_s": elapsed})
                else:
                    continue
                if _retry(rec, attempt, retries, job):
                    pending.appendleft((job, attempt + 1))
                else:
                    finish(rec)
    except BaseException:
        for s in slots:  # Ctrl-C or an error here: stop every running job with its encoders
            if s is not None:
                s.kill()
        raise
    for s in slots:
        if s is not None:
            s.close()


# --- Dask -----------------------------------------------------------------------------------------

CONNECT_TIMEOUT_S = float(os.environ.get("GFVC_DASK_CONNECT_TIMEOUT", "20"))


@dataclass
class DaskSession:
    """An open Dask client (and the LocalCluster it owns, if any)."""

    client: Any
    cluster: Any = None
    address: str = ""

    def gpu_workers(self) -> list[str]:
        info = self.client.scheduler_info(n_workers=-1) if _accepts_n_workers(self.client) \
            else self.client.scheduler_info()
        return [a for a, w in (info.get("workers") or {}).items() if (w.get("resources") or {}).get("GPU", 0) >= 1]

    def n_threads(self) -> int:
        try:
            return max(1, sum(self.client.nthreads().values()))
        except Exception:  # noqa: BLE001
            return 1

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.client.close()
        if self.cluster is not None:
            with contextlib.suppress(Exception):
                self.cluster.close()


def _accepts_n_workers(client: Any) -> bool:
    import inspect

    try:
        return "n_workers" in inspect.signature(client.scheduler_info).parameters
    except (TypeError, ValueError):  # pragma: no cover
        return False


class _ParentDeathPlugin:
    """Worker plugin for the LocalCluster we own: its workers die with this process (kill -9 included)."""

    name = "gfvc-parent-death"

    def setup(self, worker: Any) -> None:
        set_pdeathsig()

    def teardown(self, worker: Any) -> None:  # pragma: no cover
        pass


def _import_distributed() -> Any:
    try:
        import distributed
    except ImportError:
        raise NotAvailable("--executor dask needs dask.distributed: pip install 'gfvc-ctc[dask]'") from None
    return distributed


def open_session(workers: int = 1, scheduler: str | None = None, gpu: bool = False) -> DaskSession:
    """Connect to ``scheduler`` (one line + exit 2 if it does not answer) or start a LocalCluster."""
    distributed = _import_distributed()
    if scheduler:

        return DaskSession(client=connect_dask(scheduler, CONNECT_TIMEOUT_S), address=scheduler)
    cluster = distributed.LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                       dashboard_address=None, silence_logs=logging.ERROR,
                                       resources={"GPU": 1} if gpu else None)
    client = distributed.Client(cluster)
    with contextlib.suppress(Exception):
        plugin = _ParentDeathPlugin()
        client.register_plugin(_as_worker_plugin(distributed, plugin), name=plugin.name)
    return DaskSession(client=client, cluster=cluster, address=cluster.scheduler_address)


def _as_worker_plugin(distributed: Any, plugin: _ParentDeathPlugin) -> Any:
    class P(distributed.WorkerPlugin):
        name = plugin.name

        def setup(self, worker: Any) -> None:
            plugin.setup(worker)

    return P()


@contextlib.contextmanager
def dask_session(workers: int = 1, scheduler: str | None = None, gpu: bool = False) -> Iterator[DaskSession]:
    s = open_session(workers, scheduler, gpu)
    try:
        yield s
    finally:
        s.close()


def run_dask(jobs: list[Job], finish: Finish, *, workers: int = 1, scheduler: str | None = None,
             session: DaskSession | None = None, timeout_s: float = 0.0, retries: int = 0) -> None:
    distributed = _import_distributed()
    own = session is None
    if session is None:
        session = open_session(workers, scheduler, gpu=any(device_type(j.env.device) == "cuda" for j in jobs))
    client = session.client
    meta: dict[str, tuple[Job, int]] = {}
    futures: list[Any] = []

    def submit(job: Job, attempt: int) -> Any:
        tag = f"{job.key}-a{attempt}"
        if split_job(job):
            coded = client.submit(dask_stage, job, "code", None, timeout_s, key=f"gfvc-code-{tag}", pure=False,
                                  resources=job_resources(job, "code") or None)
            fut = client.submit(dask_stage, job, "score", coded, timeout_s, key=f"gfvc-score-{tag}", pure=False,
                                resources=job_resources(job, "score") or None)
            futures.append(coded)
        else:
            fut = client.submit(dask_stage, job, "all", None, timeout_s, key=f"gfvc-{tag}", pure=False,
                                resources=job_resources(job, "all") or None)
        meta[fut.key] = (job, attempt)
        futures.append(fut)
        return fut

    try:
        ac = distributed.as_completed([submit(j, 0) for j in jobs])
        for fut in ac:
            job, attempt = meta.pop(fut.key)
            try:
                rec = fut.result()
            except Exception as e:  # KilledWorker after Dask's own reruns, a cancelled or lost task...
                name = type(e).__name__
                reason = "worker_lost" if ("KilledWorker" in name or "Cancelled" in name) else "bug"
                rec = failure_record(job, reason, f"Dask task ended without a result: {name}: {e}")
            if rec is None:  # the task saw itself cancelled
                rec = failure_record(job, "worker_lost", "Dask task was cancelled on its worker")
            fut.release()
            if _retry(rec, attempt, retries, job):
                ac.add(submit(job, attempt + 1))
            else:
                finish(rec)
    except BaseException:
        # Ctrl-C: cancel everything; each running task sees its cancellation and kills its job process
        with contextlib.suppress(Exception):
            client.cancel(futures, force=True)
        if own:
            _stop_soon(session)
        raise
    if own:
        session.close()


def _stop_soon(session: DaskSession) -> None:
    """Close a session without hanging on a cluster that is shutting down (bounded wait)."""
    t = threading.Thread(target=session.close, daemon=True)
    t.start()
    t.join(10)


# --- on the Dask worker ---------------------------------------------------------------------------

_TLS = threading.local()


def _job_process() -> JobProcess:
    """This worker thread's job process (started on first use, restarted when it died)."""
    jp = getattr(_TLS, "jp", None)
    if jp is None or not jp.alive():
        try:
            from distributed import get_worker

            w = get_worker()
            name = str(w.name)
            nthreads = int(getattr(w.state, "nthreads", 1) or 1)
        except (ImportError, ValueError):
            name, nthreads = "dask", 1
        jp = _TLS.jp = JobProcess(name, {"GFVC_CONCURRENT_JOBS": str(nthreads)})
    return jp


def _task_cancelled() -> bool:
    """True once the scheduler released this task (client cancelled it or went away)."""
    try:
        from distributed import get_worker

        w = get_worker()
        key = w.get_current_task()
        ts = w.state.tasks.get(key)
    except Exception:  # noqa: BLE001 - not on a worker
        return False
    return ts is None or ts.state in ("cancelled", "released", "forgotten")


def dask_stage(job: Job, stage: str, coded: Any, timeout_s: float) -> Any:
    """A Dask task: run one stage of ``job`` in this thread's job process, supervised.

    stage "all" and "score" return the record; "code" returns what score_job
    needs (decoded frames + the record so far). Timeouts and worker loss give
    failure records; a cancelled task kills its job process and returns None.
    """
    if stage == "score":
        if coded is None:  # the coding stage was cancelled
            return None
        if coded.get("frames") is None:
            return score_job(job, coded)  # coding failed: write its record, nothing to score
    jp = _job_process()
    calls: dict[str, tuple[Callable[..., Any], tuple]] = {
        "all": (run_job, (job,)), "code": (code_job, (job,)), "score": (score_job, (job, coded))}
    fn, args = calls[stage]
    jp.submit(fn, args, (job, stage))
    while True:
        if jp.ready() or not jp.alive():
            elapsed = jp.elapsed()
            try:
                return jp.result()
            except WorkerLost as e:
                jp.kill()
                rec = failure_record(job, "worker_lost", str(e), timings={"total_s": elapsed})
                return {"rec": rec, "frames": None} if stage == "code" else rec
        if timeout_s and jp.elapsed() > timeout_s:
            elapsed = jp.elapsed()
            jp.kill()
            rec = failure_record(job, "timeout", _timeout_message(timeout_s), timings={"total_s": elapsed},
                                 write=stage != "code")
            return {"rec": rec, "frames": None} if stage == "code" else rec
        if _task_cancelled():
            jp.kill()
            return None
        wait([jp.conn], timeout=POLL_S)


def check_cluster_device(session: DaskSession, device: str) -> str:
    """The device type a Dask run uses: "cuda" needs at least one worker with the GPU resource.

    ``auto`` becomes "cuda" when some worker declares GPU, else "cpu"; the
    decision is made once for the whole run so its records never mix devices.
    """
    gpus = session.gpu_workers()
    if device == "auto":
        return "cuda" if gpus else "cpu"
    if device.startswith("cuda") and not gpus:
        where = session.address or "the Dask cluster"
        raise NotAvailable(f"--device {device}: no worker of {where} declares a GPU; start GPU workers with "
                           "`dask worker ADDRESS --resources GPU=1` or use --device cpu")
    if device.startswith("cuda:"):
        raise ConfigError(f"--device {device}: on a Dask cluster each worker uses its own GPU; pass --device cuda "
                          "(pin GPUs per worker with CUDA_VISIBLE_DEVICES)")
    return device


def connect_dask(address: str, timeout_s: float | None = None) -> Any:
    """A distributed.Client for a running scheduler; one-line ConfigError when it does not answer."""
    try:
        from distributed import Client
    except ImportError:
        raise NotAvailable("--scheduler needs dask.distributed: pip install 'gfvc-ctc[dask]'") from None
    t = float(timeout_s if timeout_s is not None else CONNECT_TIMEOUT_S)
    try:
        return Client(address, timeout=f"{t}s")
    except (OSError, TimeoutError, ValueError, TypeError) as e:
        why = " ".join(str(e).split()) or type(e).__name__
        raise ConfigError(f"Dask scheduler {address} did not answer within {t:g} s ({why[:200]}); start it "
                          "(`dask scheduler`) or fix --scheduler (e.g. tcp://HOST:8786)") from None
