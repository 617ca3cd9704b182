"""Outputs are checked before the work, in every command that writes; files follow the umask.

Defect classes 1 and 5 of issue 12: an output under a file, in a read-only
place, /dev/null, or with an extension the writer cannot produce is one line
and exit code 2 *before* any encoding; missing parent folders are created;
everything the suite writes atomically gets 0666 minus the umask (mkstemp
alone would leave 0600).
"""
from __future__ import annotations

import os
import shutil
import socket
import stat
from pathlib import Path

import numpy as np
import pytest
from cli_errors import one_line_error

from gfvc.errors import ConfigError, OutputError
from gfvc.fileio import atomic_write_json, atomic_write_text, check_output_dir, check_output_file
from gfvc.video import write_video
from suite.cli.main import main
from test_conditions.demo import demo_frames

TESTS = Path(__file__).resolve().parent
GOLDEN_RUN = TESTS / "data" / "reports" / "run"
READ_ONLY = Path("/sys/gfvc-test")  # not writable even for root (sysfs)


@pytest.fixture
def clip(tmp_path: Path) -> Path:
    p = tmp_path / "clip.yuv"
    write_video(p, demo_frames(0, 2))
    return p


@pytest.fixture
def afile(tmp_path: Path) -> Path:
    p = tmp_path / "plain.txt"
    p.write_text("x")
    return p


@pytest.fixture
def bitstream(tmp_path: Path, clip: Path) -> Path:
    bs = tmp_path / "clip.gfvc"
    assert main(["encode", "--codec", "keyframe-repeat", "--qp", "42", str(clip), "-o", str(bs),
                 "--size", "128x128"]) == 0
    return bs


def _bad_outputs(afile: Path) -> dict[str, tuple[str, str]]:
    """name -> (output path, words the error must contain)."""
    return {
        "under-a-file": (str(afile / "sub" / "out.yuv"), "is a file, not a folder"),
        "read-only": (str(READ_ONLY / "out.yuv"), "cannot"),
        "dev-null": ("/dev/null", "/dev/null"),
    }


@pytest.mark.parametrize("case", ["under-a-file", "read-only", "dev-null"])
def test_encode_checks_its_output_before_encoding(case, clip, afile, capsys, monkeypatch):
    import suite.runner.jobs

    def no_work(*a, **k):  # the codec must never be built when the output is unusable
        raise AssertionError("encoding started")

    monkeypatch.setattr(suite.runner.jobs, "make_codec", no_work)
    out, words = _bad_outputs(afile)[case]
    rc = main(["encode", "--codec", "vvenc", "--qp", "37", str(clip), "-o", out, "--size", "128x128"])
    one_line_error(capsys, rc, words)


@pytest.mark.parametrize("case", ["under-a-file", "read-only", "dev-null", "webm"])
def test_decode_checks_its_output_before_decoding(case, bitstream, afile, tmp_path, capsys):
    out, words = {**_bad_outputs(afile), "webm": (str(tmp_path / "x.webm"), "unsupported extension '.webm'")}[case]
    one_line_error(capsys, main(["decode", str(bitstream), "-o", out]), words)


def test_decode_creates_missing_parent_folders(bitstream, tmp_path, capsys):
    out = tmp_path / "new" / "deeper" / "dec.rgb"
    assert main(["decode", str(bitstream), "-o", str(out)]) == 0
    assert out.stat().st_size == 2 * 128 * 128 * 3
    png = tmp_path / "pngs" / "here"
    assert main(["decode", str(bitstream), "-o", str(png)]) == 0
    assert len(list(png.glob("*.png"))) == 2


@pytest.mark.parametrize("case", ["under-a-file", "read-only", "dev-null"])
def test_run_checks_its_workdir_before_any_job(case, small_condition, plugin_env, afile, capsys):
    out = {"under-a-file": str(afile / "run"), "read-only": str(READ_ONLY / "run"), "dev-null": "/dev/null"}[case]
    rc = main(["run", "--condition", small_condition.source, "--workdir", out, "-j", "1"])
    one_line_error(capsys, rc, "run folder")


@pytest.mark.parametrize("case", ["under-a-file", "read-only", "dev-null"])
def test_report_checks_out_before_building(case, afile, capsys):
    out = {"under-a-file": str(afile / "rep"), "read-only": str(READ_ONLY / "rep"), "dev-null": "/dev/null"}[case]
    one_line_error(capsys, main(["report", str(GOLDEN_RUN), "--out", out]), "--out")


def test_regress_checks_junit_and_baseline_paths(afile, tmp_path, capsys):
    base = tmp_path / "b.json"
    assert main(["regress", str(GOLDEN_RUN), "--baseline", str(base), "--update-baseline"]) == 0
    capsys.readouterr()
    one_line_error(capsys, main(["regress", str(GOLDEN_RUN), "--baseline", str(base), "--junit", str(afile / "j.xml")]),
              "--junit", "is a file, not a folder")
    one_line_error(capsys, main(["regress", str(GOLDEN_RUN), "--baseline", "/dev/null", "--update-baseline"]),
              "not a regular file")
    deep = tmp_path / "ci" / "out" / "junit.xml"  # parents are created
    assert main(["regress", str(GOLDEN_RUN), "--baseline", str(base), "--junit", str(deep)]) == 0
    assert deep.read_text().startswith("<?xml")


def test_sequences_prepare_checks_out_and_manifest(afile, tmp_path, capsys):
    src = tmp_path / "vid"
    src.mkdir()
    one_line_error(capsys, main(["sequences", "prepare", str(src), "--out", str(afile / "o")]), "--out")
    one_line_error(capsys, main(["sequences", "prepare", str(src), "--out", str(tmp_path / "o"),
                            "--manifest", str(tmp_path / "m.txt")]), "unsupported extension '.txt'")


def test_metrics_cache_weights_train_and_overlay_outputs(afile, clip, tmp_path, capsys):
    one_line_error(capsys, main(["metrics", str(clip), str(clip), "--size", "128x128", "--cache-dir",
                            str(afile / "c")]), "--cache-dir")
    one_line_error(capsys, main(["weights", "install", str(tmp_path), "--dest", "/dev/null"]), "--dest")
    one_line_error(capsys, main(["weights", "fetch", "--dest", str(afile / "w")]), "--dest")
    one_line_error(capsys, main(["train", "s2d", "--data", str(tmp_path), "--out", str(afile / "t")]), "--out")
    np.save(tmp_path / "v.npy", np.zeros((2, 10475, 2), np.float32))
    one_line_error(capsys, main(["s2d-overlay", "--video", str(clip), "--size", "128x128", "--vertices",
                            str(tmp_path / "v.npy"), "-o", str(tmp_path / "o.webm")]), "'.webm'")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders; /sys covers root")
def test_read_only_folder_for_a_normal_user(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        with pytest.raises(OutputError, match="cannot write"):
            check_output_file(ro / "x.yuv")
        with pytest.raises(OutputError):
            check_output_dir(ro / "run")
    finally:
        ro.chmod(0o755)


def test_output_helpers(tmp_path, afile):
    assert check_output_file(tmp_path / "a" / "b.yuv", suffixes={".yuv"}) == tmp_path / "a" / "b.yuv"
    assert (tmp_path / "a").is_dir() and not list((tmp_path / "a").iterdir())  # the probe leaves nothing
    with pytest.raises(OutputError, match="is a folder"):
        check_output_file(tmp_path / "a")
    with pytest.raises(OutputError, match="exists and is not a folder"):
        check_output_dir(afile)
    d = check_output_dir(tmp_path / "dry" / "run", create=False)  # --dry-run creates nothing
    assert not d.exists() and not (tmp_path / "dry").exists()


def test_unreachable_dask_scheduler_is_one_line(small_condition, plugin_env, tmp_path, capsys, monkeypatch):
    pytest.importorskip("distributed")
    with socket.socket() as s:  # a port that nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("GFVC_DASK_CONNECT_TIMEOUT", "2")
    rc = main(["run", "--condition", small_condition.source, "--workdir", str(tmp_path / "r"),
               "--scheduler", f"tcp://127.0.0.1:{port}", "--no-report"])
    one_line_error(capsys, rc, f"tcp://127.0.0.1:{port}", "did not answer")
    from suite.runner.executors import connect_dask

    with pytest.raises(ConfigError, match="did not answer"):
        connect_dask("tcp://127.0.0.1:1", timeout_s=1)


# --- umask -------------------------------------------------------------------------------------

@pytest.fixture
def umask_002():
    old = os.umask(0o002)
    try:
        yield 0o664
    finally:
        os.umask(old)


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def test_atomic_writes_follow_the_umask(tmp_path, umask_002):
    atomic_write_text(tmp_path / "a.txt", "x")
    atomic_write_json(tmp_path / "b.json", {"a": 1})
    assert _mode(tmp_path / "a.txt") == umask_002 and _mode(tmp_path / "b.json") == umask_002
    os.umask(0o077)
    atomic_write_text(tmp_path / "c.txt", "x")
    assert _mode(tmp_path / "c.txt") == 0o600


def test_run_records_manifest_report_checkpoint_follow_the_umask(small_condition, plugin_env, tmp_path, umask_002):
    import torch

    from reports.document import build_report
    from s2d_model.train import atomic_torch_save
    from test_conditions.manifest import load_manifest, write_manifest

    run = tmp_path / "r"
    assert main(["run", "--condition", small_condition.source, "--workdir", str(run), "-j", "1", "--no-report"]) == 0
    build_report(run, formats=("json", "tex"))  # the text outputs are written like report.html/.md
    files = [run / "run.json", *(run / "records").glob("*.json"), run / "report" / "summary.json",
             run / "report" / "tables.tex"]
    assert len(files) == 5 and all(p.is_file() for p in files)
    for p in files:
        assert _mode(p) == umask_002, (p, oct(_mode(p)))
    write_manifest(tmp_path / "m.yaml", load_manifest(small_condition.manifest_path))
    atomic_torch_save({"w": torch.zeros(1)}, tmp_path / "ck.pt")
    assert _mode(tmp_path / "m.yaml") == umask_002 and _mode(tmp_path / "ck.pt") == umask_002
    shutil.rmtree(run)
