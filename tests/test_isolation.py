"""tests/isolation.py: a marked test that crashes natively is one failure naming the signal; the rest run."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from isolation import CHILD_ENV, REPORT_ENV, signal_message

TESTS = Path(__file__).resolve().parent

CASES = '''
import ctypes
import os
import signal

import pytest


@pytest.mark.isolated
def test_segfaults():
    print("about to read address 0")
    ctypes.string_at(0)


@pytest.mark.isolated
def test_aborts():
    os.kill(os.getpid(), signal.SIGABRT)


@pytest.mark.isolated
def test_passes_isolated(tmp_path):
    assert os.environ["GFVC_ISOLATED_CHILD"] == "1"
    (tmp_path / "x").write_text("fixtures run in the child")


@pytest.mark.isolated
def test_fails_isolated():
    assert 1 + 1 == 3, "plain assertion failure"


@pytest.mark.isolated
def test_skips_isolated():
    pytest.skip("skipped in the child")


def test_neighbour_passes():
    assert "GFVC_ISOLATED_CHILD" not in os.environ
'''

HANG = '''
import signal
import time

import pytest


@pytest.mark.isolated
@pytest.mark.timeout(1)
def test_hangs():
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})   # pytest-timeout cannot stop it: the parent must
    time.sleep(60)


@pytest.mark.isolated
def test_after_the_hang():
    pass
'''


def run_cases(tmp_path: Path, *args: str, cases: str = CASES, **env_extra: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "test_cases.py").write_text(cases)
    (tmp_path / "conftest.py").write_text('pytest_plugins = ["isolation"]\n')
    (tmp_path / "pytest.ini").write_text(textwrap.dedent("""\
        [pytest]
        addopts = --strict-markers
        markers =
            isolated: run in a child process
        """))
    env = {k: v for k, v in os.environ.items() if k not in (CHILD_ENV, REPORT_ENV)}
    env["PYTHONPATH"] = str(TESTS) + os.pathsep + env.get("PYTHONPATH", "")
    env.update(env_extra)
    return subprocess.run([sys.executable, "-m", "pytest", "-rA", "-p", "no:cacheprovider", *args], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=300)


def test_signal_message():
    assert signal_message(-11) == "crashed with SIGSEGV (signal 11)"
    assert signal_message(-int(signal.SIGABRT)) == "crashed with SIGABRT (signal 6)"
    assert "code 3" in signal_message(3)


def test_crash_is_one_failure_and_neighbours_run(tmp_path):
    p = run_cases(tmp_path)
    out = p.stdout + p.stderr
    assert p.returncode == 1, out                     # tests failed; the run itself finished
    assert "3 failed, 2 passed, 1 skipped" in out, out
    assert "FAILED test_cases.py::test_segfaults" in out and "FAILED test_cases.py::test_aborts" in out
    assert "crashed with SIGSEGV (signal 11)" in out
    assert "crashed with SIGABRT (signal 6)" in out
    assert "Fatal Python error: Segmentation fault" in out      # the child's output tail is shown
    assert "PASSED test_cases.py::test_neighbour_passes" in out
    assert "PASSED test_cases.py::test_passes_isolated" in out
    assert "plain assertion failure" in out                   # a normal failure keeps its message
    assert "skipped in the child" in out


def test_no_isolation_option_runs_in_process(tmp_path):
    p = run_cases(tmp_path, "--no-isolation", "-k", "passes_isolated or neighbour")
    out = p.stdout + p.stderr
    # in-process, the child marker is absent: the isolated test's own assertion fails
    assert "1 failed, 1 passed" in out, out


MODULE_A = '''
import pytest

EVENTS = []


@pytest.fixture(scope="module")
def resource():
    EVENTS.append("set up")
    yield
    EVENTS.append("torn down")


def test_uses_module_fixture(resource):
    assert EVENTS == ["set up"]


@pytest.mark.isolated
def test_isolated_last_in_module():
    pass
'''

MODULE_B = '''
from test_cases import EVENTS


def test_next_module_sees_a_torn_down():
    assert EVENTS == ["set up", "torn down"]
'''


def test_fixtures_of_earlier_tests_are_torn_down_around_isolated_ones(tmp_path):
    (tmp_path / "test_z.py").write_text(MODULE_B)
    p = run_cases(tmp_path, cases=MODULE_A)
    out = p.stdout + p.stderr
    assert "3 passed" in out and "error" not in out.lower(), out


def test_a_hang_is_killed_and_the_module_goes_on(tmp_path):
    p = run_cases(tmp_path, cases=HANG, GFVC_ISOLATION_GRACE="2")
    out = p.stdout + p.stderr
    assert "1 failed, 1 passed" in out, out
    assert "FAILED test_cases.py::test_hangs - isolated test timed out" in out


@pytest.mark.isolated
def test_this_runs_in_a_child():
    assert os.environ.get(CHILD_ENV) == "1"
