"""pytest plugin: ``@pytest.mark.isolated`` runs tests in a child Python process, so a native crash fails
one test instead of ending the run.

Why: a native crash (a segfault in a C++ kernel, e.g. oneDNN's heap corruption of issue 16) kills the
process it happens in. In the pytest process that is the whole run: every later test is lost and the
report names none of them. Marked tests run in a child ``python -m pytest NODEID ...``; the parent
turns the child's reports back into the tests' own reports, so pass, fail and skip look as if the tests
had run here, and a child killed by a signal becomes ONE failed test whose message names the signal
(``crashed with SIGSEGV (signal 11)``) and shows the tail of the child's output (faulthandler's Python
traceback included). A test with no result within its pytest-timeout limit (+60 s) fails as timed out.

One child runs the session's marked tests in order (in one process, as they would run without the
marker; a child per test would cost a Python + torch start each); when it dies, the test it was running
fails and a new child runs the remaining marked tests. Fixtures of marked tests run only in children.

Registered from tests/conftest.py (``pytest_plugins``); the marker is declared in pytest.ini. The child
gets ``GFVC_ISOLATED_CHILD=1`` and runs marked tests in place; ``--no-isolation`` runs them in-process
(for a debugger).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest
from _pytest.reports import TestReport
from _pytest.runner import CallInfo

CHILD_ENV = "GFVC_ISOLATED_CHILD"
REPORT_ENV = "GFVC_ISOLATION_REPORT"
TAIL_LINES = 40
DEFAULT_TIMEOUT = 900.0
# seconds on top of a test's own timeout before the parent kills the child (env: for the plugin's own tests)
GRACE = float(os.environ.get("GFVC_ISOLATION_GRACE", "60"))
_results = pytest.StashKey[dict]()


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--no-isolation", action="store_true", default=False,
                     help="run @pytest.mark.isolated tests in this process (debugging)")


def signal_message(returncode: int) -> str:
    """``crashed with SIGSEGV (signal 11)`` for a child killed by a signal; ``exited with code N`` else."""
    if returncode < 0:
        sig = -returncode
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = "unknown signal"
        return f"crashed with {name} (signal {sig})"
    return f"exited with code {returncode} before the test finished"


def _tail(text: str, lines: int = TAIL_LINES) -> str:
    """The last ``lines`` lines; faulthandler's header and innermost frames first when they fall before
    them (its dump lists the most recent call first, so the crashing test's frame is near the top)."""
    rows = text.rstrip().splitlines()
    cut = rows[-lines:]
    head: list[str] = []
    fatal = next((i for i, r in enumerate(rows) if r.startswith("Fatal Python error")), None)
    if fatal is not None and fatal < len(rows) - len(cut):
        head = [*rows[fatal:fatal + 15], "[...]"]
    elif len(rows) > len(cut):
        head = [f"[... {len(rows) - len(cut)} earlier lines]"]
    return "\n".join(head + cut)


def _timeout(item: pytest.Item) -> float:
    """The test's pytest-timeout limit (marker, then ini), else DEFAULT_TIMEOUT."""
    m = item.get_closest_marker("timeout")
    if m and m.args:
        return float(m.args[0])
    try:
        ini = item.config.getini("timeout")
        return float(ini) if ini else DEFAULT_TIMEOUT
    except (ValueError, KeyError):
        return DEFAULT_TIMEOUT


def _isolated(item: pytest.Item) -> bool:
    return item.get_closest_marker("isolated") is not None


# --- child side: one JSON line per test start and per report -------------------------------------

def _child_write(row: dict[str, Any]) -> None:
    path = os.environ.get(REPORT_ENV)
    if path and os.environ.get(CHILD_ENV) == "1":
        with open(path, "a") as fh:
            fh.write(json.dumps(row) + "\n")


def pytest_runtest_logstart(nodeid: str, location: tuple[str, int | None, str]) -> None:
    _child_write({"nodeid": nodeid, "when": "start"})


def pytest_runtest_logreport(report: TestReport) -> None:
    if not os.environ.get(REPORT_ENV):
        return
    longrepr: Any = None
    if report.skipped and isinstance(report.longrepr, tuple):
        longrepr = [str(report.longrepr[0]), report.longrepr[1], str(report.longrepr[2])]
    elif report.longrepr is not None:
        longrepr = report.longreprtext
    _child_write({"nodeid": report.nodeid, "when": report.when, "outcome": report.outcome, "longrepr": longrepr,
                  "duration": report.duration, "sections": [list(s) for s in report.sections],
                  "wasxfail": getattr(report, "wasxfail", None)})


# --- parent side --------------------------------------------------------------------------------

def _report(item: pytest.Item, r: dict[str, Any]) -> TestReport:
    longrepr = tuple(r["longrepr"]) if r["outcome"] == "skipped" and isinstance(r["longrepr"], list) \
        else r["longrepr"]
    rep = TestReport(item.nodeid, item.location, {k: 1 for k in item.keywords}, r["outcome"], longrepr, r["when"],
                     sections=[tuple(s) for s in r["sections"]], duration=r["duration"])
    if r.get("wasxfail") is not None:
        rep.wasxfail = r["wasxfail"]  # type: ignore[attr-defined]
    return rep


def _run_child(items: list[pytest.Item]) -> tuple[list[dict[str, Any]], int | None, str, float]:
    """Run ``items`` in one child pytest: (its JSON rows, returncode or None if killed for time, output,
    seconds). The deadline restarts with each test the child starts."""
    config = items[0].config
    root = Path(str(config.rootpath))
    limits = {i.nodeid: _timeout(i) + GRACE for i in items}
    with tempfile.TemporaryDirectory(prefix="gfvc-isolated-") as tmp:
        report_file = Path(tmp) / "reports.jsonl"
        env = {**os.environ, CHILD_ENV: "1", REPORT_ENV: str(report_file)}
        # -o addopts= : the ini's "-m 'not slow'" must not deselect the very tests asked for
        argv = [sys.executable, "-m", "pytest", *[i.nodeid for i in items], "-q", "-p", "no:cacheprovider",
                "-o", "addopts=", "--rootdir", str(root), "-c", str(config.inipath or root / "pytest.ini")]
        t0 = time.monotonic()
        with tempfile.TemporaryFile("w+") as out:
            p = subprocess.Popen(argv, cwd=root, env=env, stdout=out, stderr=subprocess.STDOUT, text=True)
            deadline, seen, rc = t0 + limits[items[0].nodeid] + 30, 0, None
            while rc is None:
                try:
                    rc = p.wait(timeout=0.2)
                except subprocess.TimeoutExpired:
                    pass
                rows = report_file.read_text().splitlines() if report_file.is_file() else []
                for line in rows[seen:]:
                    r = json.loads(line)
                    if r["when"] == "start":
                        deadline = time.monotonic() + limits.get(r["nodeid"], DEFAULT_TIMEOUT + GRACE)
                seen = len(rows)
                if rc is None and time.monotonic() > deadline:
                    p.kill()
                    p.wait()
                    break
            out.seek(0)
            output = out.read()
        rows_json = [json.loads(line) for line in report_file.read_text().splitlines()] \
            if report_file.is_file() else []
    return rows_json, rc, output, time.monotonic() - t0


def _run_isolated(items: list[pytest.Item]) -> dict[str, list[TestReport]]:
    """Reports of every item, run in as few children as crashes allow."""
    by_id = {i.nodeid: i for i in items}
    results: dict[str, list[TestReport]] = {}
    todo = list(items)
    while todo:
        rows, rc, output, seconds = _run_child(todo)
        running: str | None = None
        for r in rows:
            if r["nodeid"] not in by_id:
                continue
            if r["when"] == "start":
                running = r["nodeid"]
                results[running] = []
            else:
                results[r["nodeid"]].append(_report(by_id[r["nodeid"]], r))
                if r["when"] == "teardown":
                    running = None
        if rc == 0 or (rc is not None and rc > 0 and running is None and all(i.nodeid in results for i in todo)):
            break
        # the child died (signal, timeout, exit without finishing): the running test fails, the rest rerun
        dead = running or todo[0].nodeid
        why = (f"timed out (no result within {_timeout(by_id[dead]) + GRACE:.0f} s; killed)" if rc is None
               else signal_message(rc))
        msg = f"isolated test {why}\n--- last {TAIL_LINES} lines of the child's output ---\n{_tail(output)}"
        phases = [rep.when for rep in results.get(dead, [])]
        died_in = "setup" if "setup" not in phases else "call" if "call" not in phases else "teardown"
        item = by_id[dead]
        results[dead] = [*results.get(dead, []), TestReport(item.nodeid, item.location,
                                                            {k: 1 for k in item.keywords}, "failed", msg,
                                                            died_in, duration=seconds)]
        todo = [i for i in todo if i.nodeid not in results]
    for i in items:   # a child that ended normally without running a test (e.g. not collected there)
        if not results.get(i.nodeid):
            results[i.nodeid] = [TestReport(i.nodeid, i.location, {k: 1 for k in i.keywords}, "failed",
                                            "isolated test: the child pytest reported nothing for it", "call")]
    return results


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> bool | None:
    if not _isolated(item) or os.environ.get(CHILD_ENV) == "1" or item.config.getoption("--no-isolation"):
        return None
    cancel = getattr(item, "cancel_timeout", None)   # pytest-timeout's alarm: the child enforces the limit
    if cancel is not None:
        cancel()
    cache = item.config.stash.setdefault(_results, {})
    if item.nodeid not in cache:
        # this and the session's later marked tests, in one child
        items = item.session.items
        group = [i for i in items[items.index(item):] if _isolated(i) and i.nodeid not in cache]
        cache.update(_run_isolated(group))
    ihook = item.ihook
    ihook.pytest_runtest_logstart(nodeid=item.nodeid, location=item.location)
    for rep in cache.pop(item.nodeid):
        ihook.pytest_runtest_logreport(report=rep)
    # what this process set up for earlier tests (module/session fixtures) and nextitem does not need
    # is torn down here, as pytest's own protocol would; an error there is reported against this test
    # (only the setup stack: the other plugins' teardown hooks expect this test's own setup, which ran
    # in the child)
    call = CallInfo.from_call(lambda: item.session._setupstate.teardown_exact(nextitem), when="teardown")
    if call.excinfo is not None:
        ihook.pytest_runtest_logreport(report=TestReport.from_item_and_call(item, call))
    ihook.pytest_runtest_logfinish(nodeid=item.nodeid, location=item.location)
    return True
