"""Run control: job processes that can be stopped with their encoders, parent-death, timeouts, the run lock.

Why a job runs in a *job process* (a long-lived child that runs jobs one at a
time) and not in a thread or a ProcessPoolExecutor: a running job must be
stoppable -- on Ctrl-C, on its wall-clock timeout, when the Dask client that
asked for it is gone -- together with the external encoders it started
(ffmpeg, VTM). A job process is the leader of its own process group
(``os.setsid``), so killing the group stops the job and its encoders and
nothing else. Orphans are prevented twice: every child (job process,
encoder) asks the kernel to SIGKILL it when its parent dies
(``prctl(PR_SET_PDEATHSIG)``, Linux), and a job process also polls its parent
and kills its own group when the parent is gone (other POSIX systems, or a
parent *thread* that ended).

Retry policy: only transient failures are retried (``error.transient``: the
job process or Dask worker died, an external tool was killed by a signal);
deterministic errors (bad input, a model mismatch, a bug, a timeout) never are.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import json
import logging
import os
import signal
import socket
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from gfvc.codec import load_builtin_codecs
from gfvc.errors import ConfigError
from gfvc.process import set_pdeathsig, watch_parent

log = logging.getLogger(__name__)

LOCK_NAME = ".gfvc-run.lock"


# --- timeouts -----------------------------------------------------------------------------------

class JobTimeout(BaseException):
    """A job ran past its wall-clock limit (BaseException: codec code must not swallow it)."""


@contextlib.contextmanager
def time_limit(seconds: float | None) -> Iterator[None]:
    """Raise JobTimeout in the main thread after ``seconds`` (in-process runs; 0/None = no limit).

    Job processes are not limited this way: their supervisor kills them (see
    :class:`JobProcess`), which also stops a job stuck inside C code.
    """
    if not seconds or seconds <= 0 or threading.current_thread() is not threading.main_thread():
        yield
        return

    def fire(_sig: int, _frm: Any) -> None:
        raise JobTimeout(f"job exceeded its wall-clock limit of {seconds:g} s")

    old = signal.signal(signal.SIGALRM, fire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


# --- job processes ----------------------------------------------------------------------------

class WorkerLost(Exception):
    """The job process died while running a job (crash, out-of-memory kill, killed from outside)."""


def worker_name() -> str:
    """Name of the worker running this code: the job process's, a Dask worker's, or "main"."""
    return os.environ.get("GFVC_WORKER_NAME", "main")


def job_process_main(argv: list[str]) -> None:
    """Entry of a job process (``python -m suite.runner.control FD_IN FD_OUT PARENT_PID NAME``)."""
    from multiprocessing.connection import Connection

    fd_in, fd_out, parent_pid, name = int(argv[0]), int(argv[1]), int(argv[2]), argv[3]
    os.environ["GFVC_WORKER_NAME"] = name
    set_pdeathsig(signal.SIGKILL)
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(137)
    watch_parent(parent_pid)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the supervisor's to handle
    rx, tx = Connection(fd_in, writable=False), Connection(fd_out, readable=False)
    try:
        sys.path[:] = rx.recv()  # the parent's import path first, so its job functions unpickle here
    except (EOFError, OSError):
        os._exit(0)
    _warm_up()
    while True:
        try:
            msg = rx.recv()
        except (EOFError, OSError):
            os._exit(0)
        if msg is None:
            os._exit(0)
        fn, args = msg  # unpickled: the job's modules are imported now, before its clock starts
        tx.send(("start",))
        out: tuple[Any, ...]
        try:
            out = ("ok", fn(*args))
        except BaseException as e:  # noqa: BLE001 - reported to the supervisor, never lost
            out = ("error", f"{type(e).__name__}: {e}", traceback.format_exc())
        try:
            tx.send(out)
        except Exception as e:  # noqa: BLE001 - e.g. an unpicklable result
            tx.send(("error", f"{type(e).__name__}: {e}", traceback.format_exc()))


def _warm_up() -> None:
    """Import what every job needs (torch, codecs, metrics) before the first job's clock starts.

    A job's wall-clock limit is about the job; a cold start on a loaded node
    (importing torch can take seconds) must not eat into it.
    """
    import importlib

    for mod in ("torch", "suite.runner.jobs", "metrics"):
        with contextlib.suppress(Exception):
            importlib.import_module(mod)
    with contextlib.suppress(Exception):
        load_builtin_codecs()


class JobProcess:
    """A child process that runs one job at a time and can be killed with everything it started.

    Started with subprocess (not multiprocessing), so it can be started from a
    Dask worker (a daemonic process) too; it leads its own session/process
    group (``start_new_session``), so a killpg stops the job and its encoders.
    """

    def __init__(self, name: str, env: dict[str, str] | None = None) -> None:
        import subprocess
        from multiprocessing.connection import Connection

        self.name = name
        r1, w1 = os.pipe()  # supervisor -> job process
        r2, w2 = os.pipe()  # job process -> supervisor
        child_env = {**os.environ, **(env or {})}
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "suite.runner.control", str(r1), str(w2), str(os.getpid()), name],
                pass_fds=(r1, w2), start_new_session=True, env=child_env, stdin=subprocess.DEVNULL)
        finally:
            os.close(r1)
            os.close(w2)
        self.tx = Connection(w1, readable=False)
        self.conn = Connection(r2, writable=False)  # what the supervisor waits on
        self.tx.send(list(sys.path))
        self.task: Any = None          # what the supervisor is waiting for (opaque)
        self.started: float = 0.0      # monotonic start of the current task
        self._pending: Any = None      # a result read by ready(), returned by result()
        self.running = False           # the child said the task started (after its imports)

    @property
    def busy(self) -> bool:
        return self.task is not None

    @property
    def pid(self) -> int:
        return self.proc.pid

    def submit(self, fn: Callable[..., Any], args: tuple, task: Any) -> None:
        self.tx.send((fn, args))
        self.task = task
        self.started = time.monotonic()
        self.running = False

    def elapsed(self) -> float:
        """Seconds the current task has been running (0 while the process still starts up)."""
        return time.monotonic() - self.started if (self.busy and self.running) else 0.0

    def ready(self) -> bool:
        """A result (or the child's death) is waiting.

        The child announces when the task starts running (after unpickling it,
        i.e. after importing the job's modules): the timeout clock restarts
        there, so a slow first import on a loaded node does not count.
        """
        try:
            while self.conn.poll():
                if self._pending is not None:
                    return True
                msg = self.conn.recv()
                if msg == ("start",):
                    self.started = time.monotonic()
                    self.running = True
                    continue
                self._pending = msg
                return True
            return self._pending is not None
        except (OSError, EOFError, ValueError):
            return True

    def result(self) -> Any:
        """The finished task's return value; WorkerLost if the child died, RuntimeError for its exception."""
        try:
            msg = self._pending
            while msg is None or msg == ("start",):
                msg = self.conn.recv()
        except (EOFError, OSError, ValueError):
            self.task = None
            self._pending = None
            raise WorkerLost(f"job process {self.name} (pid {self.proc.pid}) died "
                             f"(exit code {self.exitcode()})") from None
        self.task = None
        self._pending = None
        if msg[0] == "ok":
            return msg[1]
        raise RuntimeError(f"{msg[1]}\n{msg[2]}")

    def exitcode(self) -> int | None:
        with contextlib.suppress(Exception):
            self.proc.wait(0.2)
        return self.proc.returncode

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL the job process's group: the job and the encoders it started."""
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)  # pgid == pid (start_new_session)
        except (ProcessLookupError, PermissionError):
            pass
        with contextlib.suppress(Exception):
            self.proc.kill()
        with contextlib.suppress(Exception):
            self.proc.wait(10)
        self._close()

    def close(self) -> None:
        """Ask an idle job process to exit; kill it if it does not."""
        with contextlib.suppress(Exception):
            self.tx.send(None)
        try:
            self.proc.wait(5)
        except Exception:  # noqa: BLE001
            self.kill()
        self._close()

    def _close(self) -> None:
        self.task = None
        for c in (self.tx, self.conn):
            with contextlib.suppress(Exception):
                c.close()


# --- the run lock -------------------------------------------------------------------------------

class RunDirLocked(ConfigError):
    """Another `gfvc run` is using this run directory."""


class RunLock:
    """Exclusive lock of a run directory for the duration of one `gfvc run`.

    flock(2) on RUN_DIR/.gfvc-run.lock: the kernel releases it when the process
    ends in any way (kill -9 included), so a lock is never stale. The file
    holds who took it (pid, host, time, command) for the refusal message.
    On NFS, Linux maps flock to POSIX byte-range locks (NFSv4/lockd), which
    work across nodes.
    """

    def __init__(self, run_dir: Path) -> None:
        self.path = Path(run_dir) / LOCK_NAME
        self.fd: int | None = None

    def acquire(self, argv: list[str] | None = None) -> RunLock:
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if not isinstance(e, BlockingIOError):  # e.g. ENOLCK: a file system without locks
                os.close(fd)
                log.warning("cannot lock %s (%s): a second `gfvc run` on this folder would not be refused",
                            self.path, e)
                return self
            os.close(fd)
            h = lock_holder_info(self.path)
            who = (f"pid {h.get('pid')} on {h.get('host')} since {h.get('started')}: {h.get('command')}"
                   if h else "another process")
            raise RunDirLocked(f"run directory {self.path.parent} is in use by another gfvc run ({who}); wait for it "
                               "to finish (`gfvc status` shows its progress) or use another --workdir") from None
        info = {"pid": os.getpid(), "host": socket.gethostname(),
                "started": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                "command": " ".join(argv or sys.argv)}
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps(info).encode())
        self.fd = fd
        return self

    def release(self) -> None:
        if self.fd is not None:
            import fcntl

            with contextlib.suppress(OSError):
                fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None

    def __enter__(self) -> RunLock:
        return self if self.fd is not None else self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()


def lock_holder_info(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(Path(path).read_text() or "{}")
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def run_dir_holder(run_dir: Path) -> dict[str, Any] | None:
    """Who holds the run directory's lock now (None when no run is active). Never blocks."""
    import fcntl

    path = Path(run_dir) / LOCK_NAME
    if not path.is_file():
        return None
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return lock_holder_info(path) or {"pid": "?"}
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Treat SIGTERM (Slurm's scancel, a plain kill) like Ctrl-C in the main thread."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(_sig: int, _frm: Any) -> None:
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


if __name__ == "__main__":  # a job process (see JobProcess)
    job_process_main(sys.argv[1:])
