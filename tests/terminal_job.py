"""Start a command as a terminal would start a foreground job, for the Ctrl-C tests.

A session of its own, so SIGINT to its process group is what a terminal's Ctrl-C sends, and SIGINT at
its default disposition: a shell starts background commands (``cmd &``, nohup'd CI wrappers) with SIGINT
ignored, the child inherits that, and Python then never raises KeyboardInterrupt -- the run under test
would be right to ignore Ctrl-C, and the test would measure the harness, not the suite.
"""
from __future__ import annotations

import signal
import subprocess
from typing import Any


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start_terminal_job(cmd: list[str], **popen_kwargs: Any) -> subprocess.Popen:
    return subprocess.Popen(cmd, start_new_session=True, preexec_fn=_default_sigint, **popen_kwargs)
