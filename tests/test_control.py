"""Run control with real processes: Ctrl-C, kill -9, per-job timeouts, retries, the run lock, gfvc status.

Every `gfvc run` here is a real subprocess (the CLI as a user starts it). The
processes of one run are found by a tag in their environment (inherited by
job processes and by the external "encoders" of the test-tool codec), so
"no process of the run remains" is checked on the whole process table.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import yaml
from terminal_job import start_terminal_job

from gfvc.records import iter_records

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent


def tagged_pids(tag: str) -> list[int]:
    """Live processes whose environment carries GFVC_TEST_TAG=tag (zombies have no environ)."""
    needle = f"GFVC_TEST_TAG={tag}".encode()
    out = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            if needle in (d / "environ").read_bytes():
                out.append(int(d.name))
        except OSError:
            continue
    return out


def tool_pids(tag: str) -> list[int]:
    """The test-tool "encoders" (python -c ... time.sleep) of the tagged run."""
    pids = []
    for pid in tagged_pids(tag):
        try:
            if b"time.sleep" in Path(f"/proc/{pid}/cmdline").read_bytes():
                pids.append(pid)
        except OSError:
            continue
    return pids


def wait_for(cond, timeout: float, what: str, step: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = cond()
        if v:
            return v
        time.sleep(step)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


@pytest.fixture
def cond_file(small_condition, tmp_path):
    """Write a variant of the small condition: codecs and anchor QPs."""
    def make(codecs: list[str], qps: list[int], name: str = "ctl") -> Path:
        d = yaml.safe_load(Path(small_condition.source).read_text())
        d["codecs"] = codecs
        d["anchor"]["qps"] = qps
        p = tmp_path / f"{name}.yaml"
        p.write_text(yaml.safe_dump(d))
        return p
    return make


def run_env(tag: str, **extra: str) -> dict[str, str]:
    env = {**os.environ, "GFVC_PLUGINS": "codecs_for_tests", "GFVC_TEST_TAG": tag,
           "PYTHONPATH": os.pathsep.join([str(TESTS), str(ROOT), os.environ.get("PYTHONPATH", "")])}
    env.update(extra)
    return env


def gfvc_cmd(cond: Path, run: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "gfvc", "run", "--condition", str(cond), "--workdir", str(run), "--no-report", *args]


def start(cmd: list[str], env: dict[str, str]) -> subprocess.Popen:
    return start_terminal_job(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def kill_tagged(tag: str) -> None:
    for pid in tagged_pids(tag):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@pytest.mark.slow
def test_ctrl_c_stops_a_pool_run_with_its_encoders_and_resumes(cond_file, tmp_path, plugin_env):
    """-j 2, two fast jobs then two hanging encoders: Ctrl-C ends the run in seconds, nothing survives."""
    tag = uuid.uuid4().hex
    cond = cond_file(["test-tool"], [20, 24, 28, 32])
    run = tmp_path / "r"
    env = run_env(tag, GFVC_TEST_TOOL_S="20:0,24:0,28:120,32:120")
    p = start(gfvc_cmd(cond, run, "-j", "2"), env)
    try:
        wait_for(lambda: len(tool_pids(tag)) >= 2 and len(list((run / "records").glob("*.json"))) >= 2, 120,
                 "two finished records and two running encoders")
        t0 = time.monotonic()
        os.killpg(p.pid, signal.SIGINT)
        out, err = p.communicate(timeout=30)
        took = time.monotonic() - t0
        assert p.returncode == 130, err
        assert took < 10, f"Ctrl-C took {took:.1f} s"
        assert "interrupted" in err and "resume with: gfvc run" in err
        wait_for(lambda: not tagged_pids(tag), 5, "every process of the run to be gone")
    finally:
        kill_tagged(tag)
    kept = {r["key"]: r for r in iter_records(run)}
    assert len(kept) == 2 and all(r["status"] == "ok" for r in kept.values())
    # resume: the two kept records are reused untouched, the other two are run
    res = subprocess.run(gfvc_cmd(cond, run, "-j", "2"), env=run_env(tag, GFVC_TEST_TOOL_S="0"),
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert "2 already done, 2 to run" in res.stderr
    final = {r["key"]: r for r in iter_records(run)}
    assert len(final) == 4 and all(final[k] == r for k, r in kept.items())


@pytest.mark.slow
def test_kill_9_of_the_main_process_leaves_no_orphan(cond_file, tmp_path, plugin_env):
    """SIGKILL to `gfvc run` only (not its group): job processes and their encoders exit by themselves."""
    tag = uuid.uuid4().hex
    cond = cond_file(["test-tool"], [20, 24])
    run = tmp_path / "r"
    p = start(gfvc_cmd(cond, run, "-j", "2"), run_env(tag, GFVC_TEST_TOOL_S="120"))
    try:
        wait_for(lambda: len(tool_pids(tag)) >= 2, 120, "two running encoders")
        assert len(tagged_pids(tag)) >= 5  # main, 2 job processes, 2 encoders
        os.kill(p.pid, signal.SIGKILL)
        p.communicate(timeout=30)
        wait_for(lambda: not tagged_pids(tag), 10, "job processes and encoders to exit by themselves")
    finally:
        kill_tagged(tag)
    assert not list((run / "records").glob("*.json"))


@pytest.mark.slow
@pytest.mark.parametrize("jobs", ["1", "2"])
def test_job_timeout_is_recorded_and_stops_the_encoder(cond_file, tmp_path, plugin_env, jobs):
    """A job past --job-timeout fails with reason timeout (in-process and in job processes); the rest go on."""
    tag = uuid.uuid4().hex
    cond = cond_file(["test-tool"], [20, 24])
    run = tmp_path / "r"
    try:
        res = subprocess.run(gfvc_cmd(cond, run, "-j", jobs, "--job-timeout", "4"),
                             env=run_env(tag, GFVC_TEST_TOOL_S="20:120,24:0"), capture_output=True, text=True,
                             timeout=120)
        assert res.returncode == 1, res.stderr
        recs = {r["rate_point"]["qp"]: r for r in iter_records(run)}
        assert recs[24]["status"] == "ok"
        err = recs[20]["error"]
        assert recs[20]["status"] == "failed" and err["reason"] == "timeout" and err["transient"] is False
        assert "wall-clock limit of 4 s" in err["message"]
        assert recs[20]["timings"]["total_s"] < 60
        assert "1 of 2 jobs failed" in res.stderr and "timeout" in res.stderr
        wait_for(lambda: not tool_pids(tag), 5, "the timed-out encoder to be gone")
    finally:
        kill_tagged(tag)


def test_condition_sets_the_job_timeout(cond_file, tmp_path, plugin_env):
    from test_conditions import load_condition

    p = cond_file(["test-tool"], [20])
    d = yaml.safe_load(p.read_text())
    d["execution"] = {"job_timeout_s": 30, "retries": 2}
    p.write_text(yaml.safe_dump(d))
    c = load_condition(p)
    assert c.execution.job_timeout_s == 30 and c.execution.retries == 2
    # execution settings never change a result: not part of the fingerprint
    d.pop("execution")
    p2 = cond_file(["test-tool"], [20], name="ctl2")
    assert load_condition(p2).fingerprint == c.fingerprint
    d["execution"] = {"job_timeout_s": -1}
    p.write_text(yaml.safe_dump(d))
    with pytest.raises(Exception, match="job_timeout_s must be >= 0"):
        load_condition(p)


@pytest.mark.slow
@pytest.mark.parametrize("mode, reason", [("worker", "worker_lost"), ("tool", "external_tool_crash")])
def test_retries_rerun_transient_failures_only(cond_file, tmp_path, plugin_env, mode, reason):
    tag = uuid.uuid4().hex
    cond = cond_file(["test-crash-once", "test-fail"], [42])
    env = run_env(tag, GFVC_TEST_CRASH_MODE=mode)
    # without retries: the transient failure is recorded as such
    env["GFVC_TEST_CRASH_DIR"] = str(tmp_path / "m1")
    (tmp_path / "m1").mkdir()
    res = subprocess.run(gfvc_cmd(cond, tmp_path / "r1", "-j", "2"), env=env, capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 1
    recs = {r["codec"]: r for r in iter_records(tmp_path / "r1")}
    assert recs["test-crash-once"]["error"]["reason"] == reason and recs["test-crash-once"]["error"]["transient"]
    # with --retries 1: rerun once and succeeds; the deterministic failure (test-fail) is not retried
    env["GFVC_TEST_CRASH_DIR"] = str(tmp_path / "m2")
    (tmp_path / "m2").mkdir()
    res = subprocess.run(gfvc_cmd(cond, tmp_path / "r2", "-j", "2", "--retries", "1"), env=env,
                         capture_output=True, text=True, timeout=120)
    recs = {r["codec"]: r for r in iter_records(tmp_path / "r2")}
    assert recs["test-crash-once"]["status"] == "ok", res.stderr
    assert recs["test-fail"]["error"]["reason"] == "error" and not recs["test-fail"]["error"]["transient"]
    assert res.stderr.count("retrying") == 1 and "test-crash-once" in res.stderr.split("retrying")[0]
    assert res.returncode == 1  # test-fail still failed


@pytest.mark.slow
def test_second_run_on_the_same_folder_refuses_and_lock_dies_with_its_holder(cond_file, tmp_path, plugin_env):
    tag = uuid.uuid4().hex
    cond = cond_file(["test-tool"], [20])
    run = tmp_path / "r"
    p = start(gfvc_cmd(cond, run, "-j", "1"), run_env(tag, GFVC_TEST_TOOL_S="120"))
    try:
        wait_for(lambda: tool_pids(tag), 120, "the first run's encoder")
        second = subprocess.run(gfvc_cmd(cond, run, "-j", "1"), env=run_env(tag, GFVC_TEST_TOOL_S="0"),
                                capture_output=True, text=True, timeout=120)
        assert second.returncode == 2
        assert second.stderr.count("\n") == 1 and "in use by another gfvc run" in second.stderr
        assert f"pid {p.pid}" in second.stderr
        st = subprocess.run([sys.executable, "-m", "gfvc", "status", str(run), "--json"],
                            env=run_env(tag), capture_output=True, text=True, timeout=60)
        data = json.loads(st.stdout)
        assert data["active_run"]["pid"] == p.pid and data["codecs"]["test-tool"]["running"] == 1
        os.kill(p.pid, signal.SIGKILL)  # kill -9: the kernel drops the flock, no stale lock
        p.communicate(timeout=30)
    finally:
        kill_tagged(tag)
    third = subprocess.run(gfvc_cmd(cond, run, "-j", "1"), env=run_env(tag, GFVC_TEST_TOOL_S="0"),
                           capture_output=True, text=True, timeout=120)
    assert third.returncode == 0, third.stderr


def test_run_lock_refuses_a_second_holder_and_names_the_first(tmp_path):
    from suite.runner.control import RunDirLocked, RunLock, run_dir_holder

    assert run_dir_holder(tmp_path) is None
    with RunLock(tmp_path).acquire(["gfvc", "run", "first"]):
        holder = run_dir_holder(tmp_path)
        assert holder["pid"] == os.getpid() and holder["command"] == "gfvc run first"
        with pytest.raises(RunDirLocked, match=r"in use by another gfvc run \(pid \d+ .*gfvc run first\)"):
            RunLock(tmp_path).acquire()
    assert run_dir_holder(tmp_path) is None
    RunLock(tmp_path).acquire().release()  # free again


def test_status_lists_done_failed_pending_by_codec(small_condition, plugin_env, tmp_path, capsys):
    from suite.cli.main import main

    run = tmp_path / "r"
    args = ["run", "--condition", small_condition.source, "--workdir", str(run), "-j", "1", "--no-report",
            "--codec", "test-fail", "--codec", "test-lossy"]
    assert main(args) == 1
    victim = next(r for r in iter_records(run) if r["codec"] == "test-lossy")
    (run / "records" / f"{victim['key']}.json").unlink()  # as if never run
    capsys.readouterr()
    assert main(["status", str(run)]) == 0
    out = capsys.readouterr().out
    assert "no run is active" in out
    lines = {ln.split()[0]: ln.split()[1:] for ln in out.splitlines() if ln.startswith("  test-")}
    # the deleted job's folder is still there and no run holds the lock: "interrupted" (redone next run)
    assert lines["test-fail"] == ["1", "1", "0", "0"] and lines["test-lossy"] == ["1", "0", "0", "1"]
    assert "test-fail/carphone_128x128_32/qp42: error: test-fail: simulated encoder crash" in out
    assert main(["status", str(run), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["codecs"]["test-lossy"] == {"done": 1, "failed": 0, "pending": 0, "running": 0, "interrupted": 1}
    import shutil

    shutil.rmtree(run / "jobs" / victim["key"])
    assert main(["status", str(run), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["codecs"]["test-lossy"]["pending"] == 1
    assert main(["status", str(tmp_path)]) == 2  # not a run directory: one line, exit 2


def test_progress_lines_outside_a_terminal(small_condition, plugin_env, tmp_path, capsys):
    """Not a tty (Slurm, CI, nohup): one line per finished job with label, seconds and ETA."""
    from suite.cli.main import main

    assert main(["run", "--condition", small_condition.source, "--workdir", str(tmp_path / "r"), "-j", "1",
                 "--no-report"]) == 0
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith("gfvc: [")]
    assert len(lines) == 2
    assert lines[0].startswith("gfvc: [1/2] test-lossy/carphone_128x128_32/qp37 ok in ")
    assert "| elapsed 0:00:" in lines[1] and lines[1].endswith("ETA 0:00:00")


def test_eta_weights_pending_jobs_by_codec_cost():
    from types import SimpleNamespace as NS

    from gfvc.progress import RunProgress

    jobs = [NS(codec="slow")] * 3 + [NS(codec="fast")] * 3
    import io

    pr = RunProgress(jobs, slots=1, stream=io.StringIO(), tty=False)
    rec = lambda c, s: {"codec": c, "status": "ok", "timings": {"total_s": s},  # noqa: E731
                        "sequence": {"name": "s"}, "rate_point": {"label": "q"}}
    pr.done(rec("slow", 100.0))
    pr.done(rec("fast", 1.0))
    assert pr.eta() == pytest.approx(2 * 100.0 + 2 * 1.0)
    pr2 = RunProgress(jobs, slots=2, stream=io.StringIO(), tty=False)
    pr2.done(rec("slow", 100.0))
    assert pr2.eta() == pytest.approx((2 * 100.0 + 3 * 100.0) / 2)  # unseen codec: overall mean


def test_unreachable_scheduler_is_one_line_exit_2(small_condition, plugin_env, tmp_path, capsys, monkeypatch):
    from suite.cli.main import main
    from suite.runner import executors

    monkeypatch.setattr(executors, "CONNECT_TIMEOUT_S", 2.0)
    rc = main(["run", "--condition", small_condition.source, "--workdir", str(tmp_path / "r"),
               "--scheduler", f"tcp://127.0.0.1:{_free_port()}"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "did not answer within 2 s" in err


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sigint_ignored(pid: int) -> bool:
    """Whether SIGINT is in the process's ignored-signal mask (/proc/PID/status SigIgn)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigIgn:"):
            return bool(int(line.split()[1], 16) & (1 << (signal.SIGINT - 1)))
    raise AssertionError(f"no SigIgn line for pid {pid}")


def start_in_script_background(cmd: list[str], env: dict[str, str], err: Path) -> tuple[subprocess.Popen, int]:
    """Start ``cmd &`` from a non-interactive sh, as a CI script does; return (the shell, the command's pid).

    The shell starts the background command with SIGINT (and SIGQUIT) ignored, which it inherits.
    """
    quoted = " ".join("'" + a.replace("'", "'\\''") + "'" for a in cmd)
    sh = subprocess.Popen(["sh", "-c", f"{quoted} 2>'{err}' & echo $!; wait $!; echo rc=$?"],
                          env=env, stdout=subprocess.PIPE, text=True, start_new_session=True)
    assert sh.stdout is not None
    return sh, int(sh.stdout.readline())


@pytest.mark.parametrize("executor", [["-j", "2"], ["--executor", "dask", "-j", "2"]], ids=["pool", "dask"])
def test_sigterm_stops_a_background_run_like_ctrl_c(cond_file, tmp_path, plugin_env, executor):
    """`gfvc run ... &` in a script: SIGINT is ignored there, SIGTERM stops it exactly as Ctrl-C does."""
    tag = uuid.uuid4().hex
    cond = cond_file(["test-tool"], [20, 24, 28, 32])
    run = tmp_path / "r"
    err = tmp_path / "stderr.txt"
    sh, pid = start_in_script_background(gfvc_cmd(cond, run, *executor),
                                         run_env(tag, GFVC_TEST_TOOL_S="20:0,24:0,28:120,32:120"), err)
    try:
        wait_for(lambda: len(tool_pids(tag)) >= 2 and len(list((run / "records").glob("*.json"))) >= 2, 180,
                 "two finished records and two running encoders")
        assert sigint_ignored(pid)  # the situation of a script: Ctrl-C's signal cannot reach it
        t0 = time.monotonic()
        os.kill(pid, signal.SIGTERM)  # what `kill $!` in a script sends
        out, _ = sh.communicate(timeout=60)
        took = time.monotonic() - t0
        text = err.read_text()
        assert out.strip().endswith("rc=130"), (out, text)  # the exit code of Ctrl-C
        assert took < 10, f"SIGTERM took {took:.1f} s"
        assert "interrupted" in text and "resume with: gfvc run" in text and "Traceback" not in text, text
        wait_for(lambda: not tagged_pids(tag), 10, "every process of the run (job processes, encoders) to be gone")
    finally:
        kill_tagged(tag)
    kept = {r["key"]: r for r in iter_records(run)}
    assert len(kept) == 2 and all(r["status"] == "ok" for r in kept.values())


def test_sigterm_is_ctrl_c_for_every_command(monkeypatch, tmp_path, capsys):
    """Not only the run loop: SIGTERM anywhere in a command gives Ctrl-C's message and exit code."""
    import suite.cli.status
    from suite.cli.main import main

    def slow_command(_args):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(30)
        raise AssertionError("SIGTERM did not interrupt the command")

    monkeypatch.setattr(suite.cli.status, "cmd_status", slow_command)
    before = signal.getsignal(signal.SIGTERM)
    t0 = time.monotonic()
    assert main(["status", str(tmp_path)]) == 130
    assert time.monotonic() - t0 < 10
    err = capsys.readouterr().err
    assert "interrupted" in err and err.strip().count("\n") == 0, err
    assert signal.getsignal(signal.SIGTERM) is before  # the handler is the command's only
