"""A real Dask cluster: `dask scheduler` and `dask worker` processes on 127.0.0.1, started and stopped here.

Checks: records equal `-j 1`; a worker killed mid-run loses nothing (its job
is rerun on the other worker, no duplicate record, no orphan); GPU jobs
(declared with the Dask resource GPU=1) go only to workers that have it while
CPU-only jobs go anywhere (routing is tested without a GPU: the test codec
`test-gen` has no model, so nothing resolves "cuda" inside its jobs); Ctrl-C
of the client stops the running jobs on the workers; an address that does not
answer is one line and exit 2.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import yaml
from terminal_job import start_terminal_job
from test_control import ROOT, TESTS, kill_tagged, tagged_pids, tool_pids, wait_for

from gfvc.records import comparable, iter_records

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Cluster:
    """Scheduler + workers as separate processes (own sessions), all tagged for the process checks."""

    def __init__(self, tmp: Path, workers: dict[str, str], env: dict[str, str] | None = None) -> None:
        self.tag = uuid.uuid4().hex
        self.tmp = tmp
        self.env = {**os.environ, "GFVC_PLUGINS": "codecs_for_tests", "GFVC_TEST_TAG": self.tag,
                    "PYTHONPATH": os.pathsep.join([str(TESTS), str(ROOT), os.environ.get("PYTHONPATH", "")]),
                    **(env or {})}  # the jobs run on the workers: test settings go to their environment
        self.address = f"tcp://127.0.0.1:{free_port()}"
        self.procs: dict[str, subprocess.Popen] = {}
        self.procs["scheduler"] = self._start(["scheduler", "--host", "127.0.0.1", "--port",
                                               self.address.rsplit(":", 1)[1], "--no-dashboard"], "scheduler")
        for name, resources in workers.items():
            self.start_worker(name, resources)
        self.wait_workers(len(workers))

    def _start(self, args: list[str], name: str) -> subprocess.Popen:
        log = open(self.tmp / f"{name}.log", "w")
        return subprocess.Popen([sys.executable, "-m", "dask", *args], env=self.env, stdout=log, stderr=log,
                                start_new_session=True)

    def start_worker(self, name: str, resources: str = "") -> None:
        args = ["worker", self.address, "--name", name, "--nthreads", "1", "--no-nanny", "--no-dashboard",
                "--local-directory", str(self.tmp / f"dask-{name}"), "--death-timeout", "60"]
        if resources:
            args += ["--resources", resources]
        self.procs[name] = self._start(args, name)

    def wait_workers(self, n: int, timeout: float = 180) -> None:
        from distributed import Client

        with Client(self.address, timeout="120s") as c:
            c.wait_for_workers(n, timeout=timeout)

    def stop(self) -> None:
        for p in self.procs.values():
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for p in self.procs.values():
            p.wait(30)
        kill_tagged(self.tag)


@pytest.fixture
def cluster(tmp_path, plugin_env):
    clusters: list[Cluster] = []

    def make(workers: dict[str, str], env: dict[str, str] | None = None) -> Cluster:
        c = Cluster(tmp_path, workers, env)
        clusters.append(c)
        return c

    yield make
    for c in clusters:
        c.stop()


@pytest.fixture
def cond(small_condition, tmp_path):
    def make(codecs: list[str], qps: list[int] | None = None) -> Path:
        d = yaml.safe_load(Path(small_condition.source).read_text())
        d["codecs"] = codecs
        if qps:
            d["anchor"]["qps"] = qps
            d["generative"]["key_frame_qps"] = qps
        p = tmp_path / f"c{len(list(tmp_path.glob('c*.yaml')))}.yaml"
        p.write_text(yaml.safe_dump(d))
        return p
    return make


def _strip(run: Path) -> dict[str, dict]:
    out = {}
    for r in iter_records(run):
        c = comparable(r)
        c.pop("artifacts", None)  # paths under different run dirs
        out[r["key"]] = c
    return out


def run_cli(args: list[str], env: dict[str, str], timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gfvc", *args], env=env, capture_output=True, text=True,
                          timeout=timeout)


def test_cluster_records_equal_j1_and_gpu_jobs_go_to_gpu_workers(cluster, cond, tmp_path):
    c = cluster({"gpu": "GPU=1", "cpu": ""}, {"GFVC_TEST_GEN_S": "1.5"})
    # 1. the same jobs on the cluster and with -j 1 give identical records
    p = cond(["test-lossy"], [20, 28, 36, 44])
    ref = run_cli(["run", "--condition", str(p), "--workdir", str(tmp_path / "j1"), "-j", "1", "--no-report",
                   "--device", "cpu"], c.env)
    assert ref.returncode == 0, ref.stderr
    res = run_cli(["run", "--condition", str(p), "--workdir", str(tmp_path / "dask"), "--scheduler", c.address,
                   "--no-report", "--device", "cpu"], c.env)
    assert res.returncode == 0, res.stderr
    assert f"on Dask at {c.address}" in res.stderr
    a, b = _strip(tmp_path / "j1"), _strip(tmp_path / "dask")
    assert len(a) == 4 and a == b
    workers = {r["worker"] for r in iter_records(tmp_path / "dask")}
    assert workers <= {"gpu", "cpu"}
    # 2. --device cuda on the cluster: test-gen (generative) jobs need GPU=1, anchors go anywhere
    p2 = cond(["test-gen", "test-lossy"], [20, 28, 36, 44])
    res = run_cli(["run", "--condition", str(p2), "--workdir", str(tmp_path / "gpu"), "--scheduler", c.address,
                   "--no-report", "--device", "cuda"], c.env)
    assert res.returncode == 0, res.stderr
    recs = list(iter_records(tmp_path / "gpu"))
    gen = [r for r in recs if r["codec"] == "test-gen"]
    anchors = [r for r in recs if r["codec"] == "test-lossy"]
    assert len(gen) == 4 and {r["worker"] for r in gen} == {"gpu"}
    assert len(anchors) == 4 and "cpu" in {r["worker"] for r in anchors}  # the CPU worker took anchors
    assert all(r["device"]["requested"] == "cuda" for r in recs)


def test_cluster_without_gpu_workers_refuses_cuda_ctrl_c_and_kill_9_stop_remote_jobs(cluster, cond, tmp_path):
    c = cluster({"w1": "", "w2": ""}, {"GFVC_TEST_TOOL_S": "120"})
    p = cond(["test-tool"], [20, 28])
    res = run_cli(["run", "--condition", str(p), "--workdir", str(tmp_path / "x"), "--scheduler", c.address,
                   "--device", "cuda"], c.env)
    assert res.returncode == 2 and res.stderr.count("\n") == 1 and "declares a GPU" in res.stderr
    # Ctrl-C of the client: the jobs running on the workers are stopped with their encoders
    run = tmp_path / "r"
    client = start_terminal_job([sys.executable, "-m", "gfvc", "run", "--condition", str(p), "--workdir", str(run),
                               "--scheduler", c.address, "--no-report", "--device", "cpu"], env=c.env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: len(tool_pids(c.tag)) >= 2, 180, "an encoder running on each worker")
        t0 = time.monotonic()
        os.killpg(client.pid, signal.SIGINT)
        _, err = client.communicate(timeout=60)
        assert client.returncode == 130 and "resume with" in err, err
        wait_for(lambda: not tool_pids(c.tag), 15, "the remote encoders to be stopped")
        assert time.monotonic() - t0 < 20
        assert all(p.poll() is None for p in c.procs.values())  # the cluster itself keeps running
    finally:
        if client.poll() is None:
            os.killpg(client.pid, signal.SIGKILL)
    # kill -9 of the client: the scheduler releases its tasks, the workers stop their jobs and encoders
    client = start_terminal_job([sys.executable, "-m", "gfvc", "run", "--condition", str(p), "--workdir",
                               str(tmp_path / "r2"), "--scheduler", c.address, "--no-report", "--device", "cpu"],
                              env=c.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: len(tool_pids(c.tag)) >= 2, 180, "an encoder running on each worker")
        os.kill(client.pid, signal.SIGKILL)
        client.wait(30)
        wait_for(lambda: not tool_pids(c.tag), 30, "the remote encoders of the killed client to be stopped")
    finally:
        if client.poll() is None:
            os.killpg(client.pid, signal.SIGKILL)


def test_killing_a_worker_mid_run_loses_nothing(cluster, cond, tmp_path):
    c = cluster({"w1": "", "w2": ""}, {"GFVC_TEST_TOOL_S": "6"})
    p = cond(["test-tool"], [20, 28, 36, 44])
    run = tmp_path / "r"
    client = start_terminal_job([sys.executable, "-m", "gfvc", "run", "--condition", str(p), "--workdir", str(run),
                               "--scheduler", c.address, "--no-report", "--device", "cpu"], env=c.env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        def on_w2() -> list[int]:
            return [pid for pid in tool_pids(c.tag)
                    if b"GFVC_WORKER_NAME=w2" in Path(f"/proc/{pid}/environ").read_bytes()]

        wait_for(on_w2, 180, "an encoder of a job on worker w2 (its first job)")
        victim = c.procs["w2"]
        os.kill(victim.pid, signal.SIGKILL)  # the worker dies mid-job; its job process and encoder follow
        victim.wait(30)
        wait_for(lambda: not on_w2(), 10, "w2's job process and encoder to exit by themselves")
        _, err = client.communicate(timeout=600)
        assert client.returncode == 0, err
    finally:
        if client.poll() is None:
            os.killpg(client.pid, signal.SIGKILL)
    recs = list(iter_records(run))
    assert len(recs) == 4 and len({r["key"] for r in recs}) == 4 and all(r["status"] == "ok" for r in recs)
    assert {r["worker"] for r in recs} == {"w1"}  # nothing finished on w2; its job was rerun on w1
    assert len(list((run / "records").glob("*"))) == 4  # no duplicate, no leftover temp file


@pytest.mark.parametrize("how", ["ctrl-c", "kill-9"])
def test_local_dask_cluster_stops_and_leaves_no_orphan(cond, tmp_path, plugin_env, how):
    """--executor dask (a LocalCluster this run owns): Ctrl-C or kill -9 of `gfvc run` leaves no process."""
    tag = uuid.uuid4().hex
    p = cond(["test-tool"], [20, 28])
    env = {**os.environ, "GFVC_PLUGINS": "codecs_for_tests", "GFVC_TEST_TAG": tag, "GFVC_TEST_TOOL_S": "120",
           "PYTHONPATH": os.pathsep.join([str(TESTS), str(ROOT), os.environ.get("PYTHONPATH", "")])}
    main = start_terminal_job([sys.executable, "-m", "gfvc", "run", "--condition", str(p), "--workdir",
                             str(tmp_path / "r"), "--executor", "dask", "-j", "2", "--no-report", "--device", "cpu"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: len(tool_pids(tag)) >= 2, 180, "two encoders running on the local cluster")
        if how == "ctrl-c":
            os.killpg(main.pid, signal.SIGINT)
            _, err = main.communicate(timeout=60)
            assert main.returncode == 130, err
        else:
            os.kill(main.pid, signal.SIGKILL)
            main.communicate(timeout=60)
        wait_for(lambda: not tagged_pids(tag), 30, "every process of the run to be gone")
    finally:
        kill_tagged(tag)


def test_split_anchor_jobs_code_anywhere_and_score_on_gpu_workers(small_condition, plugin_env, tmp_path, monkeypatch):
    """The two-task path (coding task, then scoring task with GPU=1) gives the same records as -j 1.

    Without a GPU the split is forced from the client side (where the routing decision is made);
    the tasks themselves run on CPU.
    """
    from gfvc.codec import Environment
    from suite.runner import executors
    from suite.runner import jobs as runner
    from suite.runner.plan import execute, plan_run

    ref_plan = plan_run(small_condition, tmp_path / "j1", Environment(device="cpu"), codecs=["test-lossy"])
    execute(ref_plan.jobs)
    calls = []

    def fake_resources(job, stage="all"):
        calls.append(stage)
        return {"GPU": 1} if stage == "score" else {}

    monkeypatch.setattr(executors, "split_job", lambda job: True)
    monkeypatch.setattr(executors, "job_resources", fake_resources)
    plan = plan_run(small_condition, tmp_path / "split", Environment(device="cpu"), codecs=["test-lossy"])
    with executors.dask_session(workers=2, gpu=True) as s:
        recs = execute(plan.jobs, session=s)
    assert sorted(calls) == ["code", "code", "score", "score"]
    assert len(recs) == 2 and all(r["status"] == "ok" for r in recs)
    assert _strip(tmp_path / "split") == _strip(tmp_path / "j1")
    assert runner.split_job is not executors.split_job
