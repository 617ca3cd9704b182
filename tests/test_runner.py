"""Runner: job matrix, records, resume, executors, failures, kill -9.

Uses the test-only codecs of codecs_for_tests.py so the runner is tested on
its own; the real codecs have their own tests.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gfvc.codec import Environment
from gfvc.errors import ConfigError
from gfvc.records import comparable, iter_records, results_table
from suite.cli.main import main
from suite.runner.plan import execute, plan_run

TESTS = Path(__file__).resolve().parent


def _records(run_dir: Path) -> dict[str, dict]:
    return {r["key"]: comparable(r) for r in iter_records(run_dir)}


def test_plan_and_run_in_process(small_condition, plugin_env, tmp_path):
    plan = plan_run(small_condition, tmp_path / "run", Environment(), codecs=["test-lossy"])
    assert len(plan.jobs) == 2 and len({j.key for j in plan.jobs}) == 2
    recs = execute(plan.jobs)
    assert all(r["status"] == "ok" for r in recs)
    by_qp = {r["rate_point"]["qp"]: r for r in recs}
    for r in recs:
        assert r["bits"] == (tmp_path / "run" / r["artifacts"]["bitstream"]).stat().st_size * 8
        assert r["kbps"] == pytest.approx(r["bits"] / 1000 / (4 / small_condition.fps))
        assert r["provenance"]["suite_version"] and r["provenance"]["packages"]["numpy"]
        assert r["metrics"]["psnr"]["status"] == "ok"
    # coarser quantisation: fewer bits, lower PSNR
    assert by_qp[42]["bits"] < by_qp[37]["bits"]
    assert by_qp[42]["metrics"]["psnr"]["value"] < by_qp[37]["metrics"]["psnr"]["value"]
    df = results_table(tmp_path / "run")
    assert list(df["qp"]) == [37, 42] and "psnr" in df.columns


def test_keys_depend_on_condition_and_codec(small_condition, plugin_env, tmp_path):
    a = plan_run(small_condition, tmp_path, Environment(), codecs=["test-lossy"])
    b = plan_run(small_condition.with_overrides(frames=3), tmp_path, Environment(), codecs=["test-lossy"])
    c = plan_run(small_condition, tmp_path, Environment(), codecs=["test-slow"])
    ka, kb, kc = ({j.key for j in p.jobs} for p in (a, b, c))
    assert not (ka & kb) and not (ka & kc)


def test_failed_job_is_recorded_and_run_goes_on(small_condition, plugin_env, tmp_path, capsys):
    cond = small_condition.source
    rc = main(["run", "--condition", cond, "--codec", "test-fail", "--codec", "test-lossy",
               "--workdir", str(tmp_path / "r"), "-j", "1", "--no-report"])
    assert rc == 1
    recs = list(iter_records(tmp_path / "r"))
    assert len(recs) == 4
    bad = [r for r in recs if r["status"] == "failed"]
    assert len(bad) == 1 and bad[0]["rate_point"]["qp"] == 42
    assert bad[0]["error"]["type"] == "ExternalToolError" and "QP 42" in bad[0]["error"]["message"]
    err = capsys.readouterr().err
    assert "1 of 4 jobs failed" in err and "Traceback" not in err


def test_rerun_skips_valid_records_and_force_recomputes(small_condition, plugin_env, tmp_path, capsys):
    args = ["run", "--condition", small_condition.source, "--workdir", str(tmp_path / "r"), "-j", "1", "--no-report"]
    assert main(args) == 0
    first = _records(tmp_path / "r")
    mtimes = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "r" / "records").glob("*.json")}
    capsys.readouterr()
    assert main(args) == 0
    assert "2 already done, 0 to run" in capsys.readouterr().err
    assert {p.name: p.stat().st_mtime_ns for p in (tmp_path / "r" / "records").glob("*.json")} == mtimes
    assert main(args + ["--force"]) == 0
    assert "0 already done, 2 to run" in capsys.readouterr().err
    assert _records(tmp_path / "r") == first


def test_corrupt_record_is_recomputed(small_condition, plugin_env, tmp_path, capsys):
    args = ["run", "--condition", small_condition.source, "--workdir", str(tmp_path / "r"), "-j", "1", "--no-report"]
    assert main(args) == 0
    victim = sorted((tmp_path / "r" / "records").glob("*.json"))[0]
    victim.write_text(victim.read_text()[:50])  # a half-written file (not possible with atomic writes, but)
    capsys.readouterr()
    assert main(args) == 0
    assert "1 already done, 1 to run" in capsys.readouterr().err
    assert json.loads(victim.read_text())["status"] == "ok"


def test_process_pool_and_dask_give_identical_records(small_condition, plugin_env, tmp_path):
    env = Environment()
    ref = None
    for name, kw in [("inproc", {}), ("pool", {"workers": 2}), ("dask", {"executor": "dask", "workers": 2})]:
        plan = plan_run(small_condition, tmp_path / name, env, codecs=["test-lossy"])
        execute(plan.jobs, **kw)
        recs = _records(tmp_path / name)
        for r in recs.values():
            r.pop("artifacts", None)  # paths under different run dirs
        assert len(recs) == 2
        if ref is None:
            ref = recs
        else:
            assert recs == ref, name


def test_dry_run_runs_nothing(small_condition, plugin_env, tmp_path, capsys):
    rc = main(["run", "--condition", small_condition.source, "--workdir", str(tmp_path / "r"), "--dry-run"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "2 jobs" in out and "test-lossy" in out
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("argv, words", [
    (["--codec", "test-lossyy"], "did you mean test-lossy"),
    (["-j", "0"], "-j/--jobs: must be >= 1"),
    (["--frames", "0"], "--frames: must be >= 1"),
    (["--frames", "500"], "has 32 frames"),
])
def test_user_errors_are_one_line(small_condition, plugin_env, tmp_path, capsys, argv, words):
    rc = main(["run", "--condition", small_condition.source, "--workdir", str(tmp_path / "r"), *argv])
    err = capsys.readouterr().err
    assert rc == 2 and words in err and "Traceback" not in err and err.count("\n") == 1


def test_kill_minus_9_then_rerun_completes(small_condition, plugin_env, tmp_path):
    """SIGKILL mid-run loses only jobs in flight; the rerun completes the rest identically."""
    import yaml

    d = yaml.safe_load(Path(small_condition.source).read_text())
    d["anchor"]["qps"] = [20, 24, 28, 32, 36, 40]
    d["codecs"] = ["test-slow"]
    cond = tmp_path / "slow.yaml"
    cond.write_text(yaml.safe_dump(d))
    run = tmp_path / "r"
    env = {**os.environ, "GFVC_TEST_SLOW_S": "0.7"}
    def gfvc_run(workdir: Path) -> list[str]:
        return [sys.executable, "-m", "gfvc", "run", "--condition", str(cond), "--workdir", str(workdir),
                "-j", "1", "--no-report"]

    cmd = gfvc_run(run)
    p = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 120
    while time.time() < deadline:
        n = len(list((run / "records").glob("*.json"))) if (run / "records").exists() else 0
        if n >= 2:
            break
        time.sleep(0.05)
    os.killpg(p.pid, signal.SIGKILL)
    p.wait(timeout=30)
    partial = _records(run)
    assert 2 <= len(partial) < 6, "the run must have been killed mid-way"
    assert not list((run / "records").glob("*.tmp"))
    subprocess.run(cmd, env={**env, "GFVC_TEST_SLOW_S": "0"}, check=True, timeout=300,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    final = _records(run)
    assert len(final) == 6
    for k, r in partial.items():
        assert final[k] == r  # finished records untouched
    # identical to an uninterrupted run
    run2 = tmp_path / "r2"
    subprocess.run(gfvc_run(run2), env={**env, "GFVC_TEST_SLOW_S": "0"},
                   check=True, timeout=300, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    clean = _records(run2)
    strip = lambda rs: {k: {kk: vv for kk, vv in v.items() if kk != "artifacts"} for k, v in rs.items()}  # noqa: E731
    assert strip(clean) == strip(final)


def test_no_sequences_in_manifest(tmp_path):
    from test_conditions import load_condition

    with pytest.raises(ConfigError, match="lists no sequences"):
        plan_run(load_condition("gfvc-human"), tmp_path, Environment(), codecs=["vvenc"])


def test_content_key_ignores_machine_paths_but_not_hashes():
    from gfvc.provenance import identity_provenance
    from gfvc.records import stable_hash

    a = {"codec": "vtm", "encoder_path": "/opt/vtm/EncoderApp", "encoder_sha256": "aa", "command_templates": [["x"]]}
    b = {**a, "encoder_path": "/home/me/vtm/EncoderApp", "command_templates": [["y"]]}
    c = {**a, "encoder_sha256": "bb"}
    assert stable_hash(identity_provenance(a)) == stable_hash(identity_provenance(b))
    assert stable_hash(identity_provenance(a)) != stable_hash(identity_provenance(c))


def test_manifest_sha256_mismatch_stops_the_run_before_any_job(small_condition, plugin_env, tmp_path, capsys):
    import yaml

    m = yaml.safe_load(small_condition.manifest_path.read_text())
    m["sequences"][0]["sha256"] = "0" * 64
    bad = tmp_path / "bad.manifest.yaml"
    bad.write_text(yaml.safe_dump(m))
    rc = main(["run", "--condition", small_condition.source, "--manifest", str(bad),
               "--workdir", str(tmp_path / "r"), "-j", "1"])
    err = capsys.readouterr().err
    assert rc == 2 and "sha256 mismatch" in err and err.count("\n") == 1
    assert not (tmp_path / "r" / "records").exists()


def test_records_do_not_depend_on_run_dir_or_wall_clock(tmp_path):
    from suite.runner.jobs import relative_to_run, split_timings

    run = tmp_path / "run"
    cmds = [["ffmpeg", "-i", str(run / "jobs" / "k" / "in.yuv")], ("x", run / "a.log")]
    assert relative_to_run(cmds, run) == [["ffmpeg", "-i", "$RUN_DIR/jobs/k/in.yuv"], ["x", "$RUN_DIR/a.log"]]
    info, times = split_timings({"encode_seconds": 1.5, "key_frame_s": 0.2, "preset": "medium", "frames": 8})
    assert info == {"preset": "medium", "frames": 8} and times == {"encode_seconds": 1.5, "key_frame_s": 0.2}
