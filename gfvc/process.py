"""Child processes that die with their parent: the parent-death signal for external tools and job processes.

Every external program the suite starts (ffmpeg, VTM, a contributor's codec) and every job process
asks the kernel to SIGKILL it when its parent dies (``prctl(PR_SET_PDEATHSIG)``, Linux), so a killed
``gfvc run`` leaves no orphan encoder behind. Codecs use :func:`prepare_preexec` when they start a
program; the application's job processes use :func:`set_pdeathsig` and :func:`watch_parent`.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

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


