"""Defect classes 3, 4, 6, 7 and 8 of issue 12 (a new user's audit), one test group per class.

3 duplicate list values refused at load; 4 a partial rerun merges run.json;
6 the CI gate fails when it compared nothing; 7 doctor and check(); 8 one
clear message each, said once.
"""
from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from cli_errors import one_line_error

from gfvc.errors import ConfigError, ExternalToolError, ModelMismatch
from gfvc.video import write_video
from suite.cli.main import main
from test_conditions import load_condition
from test_conditions.demo import demo_frames

HERE = Path(__file__).resolve().parent


def _write_condition(tmp_path: Path, base, edit) -> Path:
    d = base.to_dict()
    d["manifest"] = str(base.manifest_path)
    edit(d)
    p = tmp_path / "cond.yaml"
    p.write_text(yaml.safe_dump(d))
    return p


# --- 3: duplicates -------------------------------------------------------------------------------

@pytest.mark.parametrize("key, edit, value", [
    ("anchor.qps", lambda d: d["anchor"].update(qps=[37, 37, 42]), "37"),
    ("generative.key_frame_qps", lambda d: d["generative"].update(key_frame_qps=[22, 32, 22]), "22"),
    ("codecs", lambda d: d.update(codecs=["vvenc", "s2d", "vvenc"]), "'vvenc'"),
    ("metrics.names", lambda d: d["metrics"].update(names=["psnr", "ssim", "psnr"]), "'psnr'"),
    ("bdrate.metrics", lambda d: d["bdrate"].update(metrics=["dists", "dists"]), "'dists'"),
])
def test_duplicate_list_values_are_refused_at_load(key, edit, value, tmp_path, capsys):
    p = _write_condition(tmp_path, load_condition("demo"), edit)
    with pytest.raises(ConfigError) as e:
        load_condition(p)
    assert f"key '{key}'" in str(e.value) and f"{value} is listed twice" in str(e.value)
    one_line_error(capsys, main(["run", "--condition", str(p), "--dry-run"]), key, "listed twice")


def test_duplicate_metric_on_the_command_line(tmp_path, capsys):
    clip = tmp_path / "c.yuv"
    write_video(clip, demo_frames(0, 1))
    one_line_error(capsys, main(["metrics", str(clip), str(clip), "--size", "128x128", "--metrics", "psnr,psnr"]),
              "'psnr' is listed twice")


# --- 4: partial reruns keep every codec's provenance ---------------------------------------------

def test_partial_rerun_merges_run_json_and_its_command_reproduces_everything(
        small_condition, plugin_env, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("GFVC_TEST_SLOW_S", "0")
    run = tmp_path / "r"
    base = ["run", "--condition", small_condition.source, "--workdir", str(run), "-j", "1", "--no-report"]
    assert main(base) == 0  # the condition's codecs: test-lossy
    assert main(base + ["--codec", "test-slow"]) == 0  # a partial rerun with another codec
    data = json.loads((run / "run.json").read_text())
    assert list(data["codecs"]) == ["test-lossy", "test-slow"]
    assert data["codecs"]["test-lossy"]["version"] == 1
    assert [i["codecs"] for i in data["invocations"]] == [["test-lossy"], ["test-slow"]]
    argv = data["argv"]
    assert argv[:2] == ["gfvc", "run"] and argv.count("--codec") == 2
    capsys.readouterr()
    assert main(argv[1:]) == 0  # the recorded command reproduces all the data: nothing left to run
    assert "4 jobs (4 already done, 0 to run)" in capsys.readouterr().err
    # the report names both codecs' provenance and the merged command
    from reports.document import build_report

    md = build_report(run, formats=("md",))["md"].read_text()
    assert "No provenance recorded" not in md


def test_a_run_folder_of_another_condition_is_refused(small_condition, plugin_env, tmp_path, capsys):
    run = tmp_path / "r"
    base = ["run", "--condition", small_condition.source, "--workdir", str(run), "-j", "1", "--no-report"]
    assert main(base) == 0
    capsys.readouterr()
    one_line_error(capsys, main(base + ["--frames", "2"]), "holds results of condition", "another --workdir")


# --- 6: the gate must check something -------------------------------------------------------------

@pytest.fixture
def golden_run(tmp_path):
    dst = tmp_path / "run"
    shutil.copytree(HERE / "data" / "reports" / "run", dst)
    return dst


def test_gate_that_compares_nothing_fails(golden_run, tmp_path, capsys):
    base = tmp_path / "b.json"
    assert main(["regress", str(golden_run), "--baseline", str(base), "--update-baseline"]) == 0
    data = json.loads(base.read_text())
    for codec in data["entries"]:
        for m in data["entries"][codec]:
            data["entries"][codec][m] = None  # written where no metric was computed
    base.write_text(json.dumps(data))
    capsys.readouterr()
    rc = main(["regress", str(golden_run), "--baseline", str(base)])
    cap = capsys.readouterr()
    assert rc == 2 and "none of the" in cap.err and cap.err.count("\n") == 1
    assert "gate compared 0 of" in cap.out


def test_gate_at_tolerance_zero_passes_an_identical_run(golden_run, tmp_path, capsys):
    """A run identical to the baseline's passes with --tolerance 0, for exact and for 6-decimal baselines."""
    base = tmp_path / "b.json"
    assert main(["regress", str(golden_run), "--baseline", str(base), "--update-baseline"]) == 0
    data = json.loads(base.read_text())
    assert data["values"] == "exact"
    assert main(["regress", str(golden_run), "--baseline", str(base), "--tolerance", "0"]) == 0
    legacy = {k: v for k, v in data.items() if k != "values"}  # written before values were exact
    legacy["entries"] = {c: {m: (round(v, 6) if v is not None else None) for m, v in e.items()}
                         for c, e in data["entries"].items()}
    old = tmp_path / "old.json"
    old.write_text(json.dumps(legacy))
    assert main(["regress", str(golden_run), "--baseline", str(old), "--tolerance", "0"]) == 0
    # one millionth of a point worse than a legacy value is still a regression at tolerance 0
    codec = next(c for c, e in legacy["entries"].items() if any(v is not None for v in e.values()))
    metric = next(m for m, v in legacy["entries"][codec].items() if v is not None)
    legacy["entries"][codec][metric] -= 2e-6
    old.write_text(json.dumps(legacy))
    capsys.readouterr()
    assert main(["regress", str(golden_run), "--baseline", str(old), "--tolerance", "0"]) == 1


def test_gate_metrics_choose_what_is_gated_and_summary_says_what_was_compared(golden_run, tmp_path, capsys):
    base = tmp_path / "b.json"
    assert main(["regress", str(golden_run), "--baseline", str(base), "--update-baseline"]) == 0
    data = json.loads(base.read_text())
    assert data["entries"]["s2d"]["dists"] is not None and data["entries"]["s2d"]["fvd"] is None
    capsys.readouterr()
    assert main(["regress", str(golden_run), "--baseline", str(base), "--metrics", "dists"]) == 0
    out = capsys.readouterr().out
    assert "lpips" not in out and "gate compared" in out and "s2d dists" in out
    # only metrics without values: nothing compared, the gate fails
    one_line_error(capsys, main(["regress", str(golden_run), "--baseline", str(base), "--metrics", "fvd"]),
              "none of the 2 values")
    one_line_error(capsys, main(["regress", str(golden_run), "--baseline", str(base), "--metrics", "vmaf"]),
              "--metrics vmaf")
    # --update-baseline --metrics writes only those
    sub = tmp_path / "sub.json"
    assert main(["regress", str(golden_run), "--baseline", str(sub), "--update-baseline", "--metrics", "lpips"]) == 0
    assert {m for ms in json.loads(sub.read_text())["entries"].values() for m in ms} == {"lpips"}


# --- 7: doctor and check() -------------------------------------------------------------------------

def _fakevtm():
    spec = importlib.util.spec_from_file_location("fakevtm", HERE / "fake_vtm" / "fakevtm.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_doctor_refuses_a_missing_vtm_dir_and_shows_the_one_found(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("GFVC_VTM_DIR", raising=False)
    one_line_error(capsys, main(["doctor", "--vtm-dir", str(tmp_path / "nonexistent")]), "--vtm-dir", "no such folder")
    vtm = _fakevtm().install(tmp_path / "VTM", layout="bin")
    assert main(["doctor", "--vtm-dir", str(vtm), "--weights-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert f"VTM: {vtm} (from --vtm-dir): VTM 22.2" in out and "EncoderApp" in out and "cfg" in out
    assert out.count("weights fix: `gfvc weights fetch`") == 1  # the fix, once


def test_doctor_condition_exits_1_when_something_it_needs_is_missing(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("GFVC_VTM_DIR", raising=False)
    assert main(["doctor", "--condition", "gfvc-human"]) == 1
    out = capsys.readouterr().out
    assert "condition gfvc-human:" in out and "problem(s)" in out
    assert "codec vtm" in out and "codec s2d" in out and "works at 128x128" in out
    assert "lists no sequences" in out


def test_doctor_condition_passes_when_everything_is_there(small_condition, plugin_env, capsys):
    assert main(["doctor", "--condition", small_condition.source]) == 0
    assert "everything it needs is here" in capsys.readouterr().out


def test_s2d_check_refuses_a_condition_at_another_resolution():
    from gfvc.codec import Environment
    from s2d_model.codec import S2DCodec

    human = load_condition("gfvc-human")
    with pytest.raises(ModelMismatch, match="works at 128x128 but condition 'gfvc-human' is 384x384"):
        S2DCodec(human, Environment()).check()
    S2DCodec(load_condition("demo"), Environment()).check()  # the demo model fits the demo


def test_run_fails_in_check_before_any_job(tmp_path, capsys, monkeypatch):
    """s2d on a 384x384 condition: one line before any job, not one failure per job."""
    import suite.runner.jobs

    seen = []
    monkeypatch.setattr(suite.runner.jobs, "run_job", lambda j: seen.append(j))
    from gfvc.video import sha256_file, write_rgb_planar

    demo = load_condition("demo")
    big = tmp_path / "big.rgb"
    write_rgb_planar(big, np.repeat(np.repeat(demo_frames(0, 4), 2, axis=1), 2, axis=2))  # 256x256
    man = tmp_path / "m.yaml"
    man.write_text(yaml.safe_dump({"schema": 1, "sequences": [{
        "name": "big", "file": "big.rgb", "sha256": sha256_file(big), "frames": 4, "width": 256, "height": 256,
        "fps": 25, "format": "rgb"}]}))

    def edit(d):
        d.update(width=256, height=256, frames=4, codecs=["s2d"], manifest=str(man))

    p = _write_condition(tmp_path, demo, edit)
    rc = main(["run", "--condition", str(p), "--workdir", str(tmp_path / "r"), "--no-report"])
    err = capsys.readouterr().err
    assert rc == 2 and not seen and err.count("\n") == 1 and "works at 128x128" in err, err


# --- 8: messages ---------------------------------------------------------------------------------

@pytest.mark.parametrize("cmd", [
    ["encode", "--codec", "vvenc", "--qp", "37", "IN", "-o", "OUT", "--size", "128x128", "--fps"],
    ["decode", "IN", "-o", "OUT.mp4", "--fps"],
    ["sequences", "prepare", "IN", "--out", "OUT", "--fps"],
])
@pytest.mark.parametrize("fps", ["0", "-5", "nan"])
def test_fps_zero_or_negative_is_refused(cmd, fps, capsys):
    rc = main([*cmd, fps])
    one_line_error(capsys, rc, "--fps")


def test_failed_vtm_job_shows_the_cause_and_a_log_that_exists(tmp_path, monkeypatch):
    from anchors.vtm import VtmCodec
    from gfvc.codec import Environment, RatePoint, Sequence

    monkeypatch.delenv("GFVC_VTM_DIR", raising=False)
    vtm = _fakevtm().install(tmp_path / "VTM", layout="bin")
    demo = load_condition("demo")
    cond = demo.with_overrides(codecs=["vtm"], frames=2)
    env = Environment(vtm_dir=vtm, extra={"vtm_args": "--Bogus=1"})
    with pytest.raises(ExternalToolError) as e:
        VtmCodec(cond, env).encode(Sequence("s", demo_frames(0, 2), 25.0), RatePoint(37), tmp_path / "w")
    msg = str(e.value)
    assert "\n" not in msg and "Unknown option `Bogus'" in msg and "VVCSoftware" not in msg
    log = Path(msg.rsplit("full log: ", 1)[1])
    assert log.is_file() and "VVCSoftware" in log.read_text()  # the banner stays in the log


def test_cli_errors_never_point_to_deleted_folders(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("GFVC_VTM_DIR", raising=False)
    vtm = _fakevtm().install(tmp_path / "VTM", layout="bin")
    crash = vtm / "bin" / "EncoderApp"  # an encoder that prints its banner, then fails
    crash.write_text("#!/bin/sh\necho 'VVCSoftware: VTM Encoder Version 22.2 [fake]'\n"
                     "echo 'Error: cannot allocate picture buffers' >&2\nexit 3\n")
    clip = tmp_path / "c.yuv"
    write_video(clip, demo_frames(0, 2))
    rc = main(["encode", "--codec", "vtm", "--qp", "37", str(clip), "-o", str(tmp_path / "o.266"),
               "--size", "128x128", "--vtm-dir", str(vtm)])
    err = capsys.readouterr().err
    assert rc == 2 and "full log: " in err and err.count("\n") == 1, err
    assert "cannot allocate picture buffers" in err and "VVCSoftware" not in err
    assert Path(err.strip().rsplit("full log: ", 1)[1]).is_file()


def test_frame_count_mismatches_suggest_frames(tmp_path, capsys, small_condition, plugin_env):
    a, b = tmp_path / "a.yuv", tmp_path / "b.yuv"
    write_video(a, demo_frames(0, 3))
    write_video(b, demo_frames(0, 2))
    one_line_error(capsys, main(["metrics", str(a), str(b), "--size", "128x128", "--metrics", "psnr"]),
              "--frames 2")
    one_line_error(capsys, main(["metrics", str(a), str(a), "--size", "128x128", "--frames", "5"]), "--frames 3")
    one_line_error(capsys, main(["run", "--condition", small_condition.source, "--frames", "500", "--dry-run"]),
              "has 32 frames", "--frames 32")


def test_list_never_cuts_words_and_lists_only_accepted_metric_names(capsys):
    import metrics
    from gfvc.codec import CODECS, load_builtin_codecs

    assert main(["list"]) == 0
    out = capsys.readouterr().out
    words = set(out.split())
    load_builtin_codecs()
    for name in CODECS.names():
        for w in CODECS.get(name).description.split():
            assert w in words, (name, w)
    listed = [ln.split()[0] for ln in out.split("metrics", 1)[1].splitlines()[1:] if ln.startswith("  ")]
    assert listed == list(metrics.METRIC_VALUES)
    assert "psnr_y" not in listed


def test_missing_weights_are_said_once_per_run(small_condition, plugin_env, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("GFVC_OFFLINE", "1")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    p = _write_condition(tmp_path, small_condition, lambda d: d["metrics"].update(names=["psnr", "dists", "lpips"]))
    assert main(["run", "--condition", str(p), "--workdir", str(tmp_path / "r"), "-j", "1", "--no-report"]) == 0
    cap = capsys.readouterr()
    text = cap.out + cap.err
    assert text.count("vgg16-397923af.pth") == 1, text
    assert "see the note above" in cap.out
    assert np.all([r in json.loads((tmp_path / "r" / "run.json").read_text())["metric_weights"]
                   for r in ("dists", "lpips")])


# --- the docs, as a new user runs them ------------------------------------------------------------

def test_bdrate_reads_a_reports_own_rd_data_csv(golden_run, tmp_path, capsys):
    """docs/reports.md: `gfvc bdrate CSV` on the rd_data.csv a report writes (column `kbps`)."""
    assert main(["report", str(golden_run), "--format", "csv", "--out", str(tmp_path / "rep")]) == 0
    capsys.readouterr()
    assert main(["bdrate", str(tmp_path / "rep" / "rd_data.csv"), "--anchor", "vvenc", "--test", "s2d",
                 "--metric", "dists"]) == 0
    assert "mean of sequences" in capsys.readouterr().out


def test_rerun_with_another_provenance_supersedes_older_records(small_condition, plugin_env, tmp_path, capsys,
                                                                  monkeypatch):
    """The report shows only what the recorded command reproduces: not a mix of old and new checkpoints."""
    import codecs_for_tests

    from gfvc.records import iter_records, results_table

    run = tmp_path / "r"
    base = ["run", "--condition", small_condition.source, "--workdir", str(run), "-j", "1", "--no-report"]
    assert main(base) == 0
    monkeypatch.setattr(codecs_for_tests.TestLossy, "provenance",
                        lambda self: {"codec": self.name, "family": self.family, "version": 2})
    capsys.readouterr()
    assert main(base) == 0
    assert "older records stay in records/" in capsys.readouterr().err
    assert len(list(iter_records(run))) == 4
    df = results_table(run)
    assert len(df) == 2
    data = json.loads((run / "run.json").read_text())
    assert data["codecs"]["test-lossy"]["version"] == 2
    assert data["superseded"]["test-lossy"][0]["provenance"]["version"] == 1
