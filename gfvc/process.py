"""External programs: run as argv lists with a timeout and a log, and dying with their parent.

:func:`run_tool` is how every external program is run (VVenC/ffmpeg, VTM, a contributor's codec): never
through a shell, output appended to a log, a failure or timeout raised as one line with the part of
the program's output that says why.

Every external program the suite starts (ffmpeg, VTM, a contributor's codec) and every job process
asks the kernel to SIGKILL it when its parent dies (``prctl(PR_SET_PDEATHSIG)``, Linux), so a killed
``gfvc run`` leaves no orphan encoder behind. Codecs use :func:`prepare_preexec` when they start a
program; the application's job processes use :func:`set_pdeathsig` and :func:`watch_parent`.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gfvc.errors import ExternalToolCrash, ExternalToolError, NotAvailable

PR_SET_PDEATHSIG = 1

_libc: Any = None


def set_pdeathsig(sig: int = signal.SIGKILL) -> bool:
    """Ask the kernel to send ``sig`` to this process when its parent (thread) dies. Linux only."""
    global _libc
    if not sys.platform.startswith("linux"):
        return False
    try:
        if _libc is None:
            _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        return _libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) == 0
    except (OSError, AttributeError):  # pragma: no cover
        return False


def child_preexec() -> None:
    """``preexec_fn`` for external tools: die with the job that started them.

    Only async-signal-safe work happens here (one prctl call through a libc
    handle loaded beforehand in the parent by :func:`prepare_preexec`).
    """
    if _libc is not None:
        _libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)


def prepare_preexec() -> Callable[[], None] | None:
    """The preexec_fn to pass to subprocess for external tools (None where unsupported)."""
    global _libc
    if not sys.platform.startswith("linux"):
        return None
    if _libc is None:
        try:
            _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        except OSError:  # pragma: no cover
            return None
    return child_preexec


def watch_parent(parent_pid: int, interval: float = 0.5) -> threading.Thread:
    """Daemon thread: when ``parent_pid`` is no longer our parent, kill our whole process group."""
    def run() -> None:
        while True:
            time.sleep(interval)
            if os.getppid() != parent_pid:
                try:
                    os.killpg(os.getpgid(0), signal.SIGKILL)
                finally:
                    os._exit(137)

    t = threading.Thread(target=run, name="gfvc-parent-watch", daemon=True)
    t.start()
    return t


# Lines that identify a program, never why it failed (VTM/ffmpeg banners, build info, progress).
OUTPUT_NOISE = re.compile(r"^\s*(VVCSoftware:|VTM |HM software|ffmpeg version|built with|configuration:|lib\w+\s+\d|"
                    r"Input #|Output #|Stream #|Duration:|Metadata:|encoder\s*:|frame=|POC\s+\d|\[exit )", re.I)
_CAUSE = re.compile(r"error|fail|unknown|unhandled|cannot|can't|could not|couldn't|invalid|not supported|"
                    r"no such|missing|out of range|refus|abort|not found|denied|unable|illegal|wrong", re.I)
CAUSE_MAX_CHARS = 300


def failure_cause(stderr: str, stdout: str = "") -> str:
    """The line(s) of a failed program's output that say why it failed, as one line.

    Error-looking lines win (stderr first); banners and progress lines never
    count; otherwise the last meaningful line is used.
    """
    def lines(text: str) -> list[str]:
        return [" ".join(ln.split()) for ln in text.splitlines() if ln.strip() and not OUTPUT_NOISE.search(ln)]

    err, out = lines(stderr), lines(stdout)
    causes = [ln for ln in err if _CAUSE.search(ln)] or [ln for ln in out if _CAUSE.search(ln)]
    picked = causes[-2:] if causes else (err or out)[-1:]
    text = " / ".join(dict.fromkeys(picked)) or "no error message"
    return text if len(text) <= CAUSE_MAX_CHARS else text[:CAUSE_MAX_CHARS - 3] + "..."


def run_tool(argv: list[str], *, timeout: float, log: Path, cwd: Path | None = None,
             what: str = "", timeout_hint: str = "raise anchor.timeout_s / --timeout", check: bool = True
             ) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` (never through a shell) and append command + output to ``log``.

    A non-zero exit or a timeout raises ExternalToolError with the tail of the
    program's output, because that tail is what a user needs to fix the run.
    ``check=False`` returns a non-zero exit to the caller (a decoder whose own
    error lines say more than its exit code); timeouts and signals still raise.
    """
    argv = [str(a) for a in argv]
    log.parent.mkdir(parents=True, exist_ok=True)
    what = what or Path(argv[0]).name
    t0 = time.monotonic()
    with open(log, "a", encoding="utf-8") as lf:
        lf.write(f"$ {' '.join(_quote(a) for a in argv)}\n")
        lf.flush()
        try:
            # preexec: the tool dies with the job that started it (suite.runner.control, no orphans on kill -9)
            proc = subprocess.run(argv, cwd=cwd, capture_output=True,
                                  stdin=subprocess.DEVNULL, text=True, errors="replace", timeout=timeout,
                                  preexec_fn=prepare_preexec())
        except subprocess.TimeoutExpired as e:
            out = _as_text(e.stdout) + _as_text(e.stderr)
            lf.write(out + f"\n[timeout after {timeout:.0f} s]\n")
            raise ExternalToolError(
                f"{what} timed out after {timeout:.0f} s ({timeout_hint}); full log: {log}"
            ) from None
        except FileNotFoundError:
            lf.write("[program not found]\n")
            raise NotAvailable(f"{what}: program not found: {argv[0]}") from None
        except PermissionError:
            lf.write("[permission denied]\n")
            raise NotAvailable(f"{what}: {argv[0]} is not executable (chmod +x it)") from None
        out = (proc.stdout or "") + (proc.stderr or "")
        lf.write(out)
        lf.write(f"\n[exit {proc.returncode} after {time.monotonic() - t0:.2f} s]\n")
    if proc.returncode < 0:  # killed by a signal (crash, OOM killer): transient, --retries may rerun it
        raise ExternalToolCrash(f"{what} was killed by signal {-proc.returncode}: "
                                f"{failure_cause(proc.stderr or '', proc.stdout or '')}; full log: {log}")
    if proc.returncode != 0 and check:
        raise ExternalToolError(f"{what} failed (exit code {proc.returncode}): "
                                f"{failure_cause(proc.stderr or '', proc.stdout or '')}; full log: {log}")
    return proc


def _as_text(b: Any) -> str:
    if b is None:
        return ""
    return b.decode("utf-8", "replace") if isinstance(b, bytes) else str(b)


def _quote(a: str) -> str:
    return a if re.fullmatch(r"[\w@%+=:,./-]+", a) else "'" + a.replace("'", "'\"'\"'") + "'"


def format_command(argv: list[str]) -> str:
    """A copy-pasteable rendering of an argv list (for logs and --dry-run)."""
    return " ".join(_quote(str(a)) for a in argv)
