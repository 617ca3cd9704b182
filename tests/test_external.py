"""External codecs: a proposal run as programs, through the same CTC rules as the suite's codecs."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from gfvc.codec import Environment
from gfvc.errors import ConfigError, ExternalToolError
from gfvc.external import bitstream_bits
from gfvc.factory import build_codec
from gfvc.records import comparable, iter_records
from suite.cli.main import main
from suite.runner.plan import execute, plan_run
from test_conditions import load_condition

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
TINY = TESTS / "data" / "external" / "tinycodec.py"


def _condition(tmp_path: Path, **ext) -> object:
    demo = load_condition("demo")
    d = demo.to_dict()
    shutil.copy(TINY, tmp_path / "tinycodec.py")
    spec = {"encode": [sys.executable, "{config_dir}/tinycodec.py", "encode", "{input}", "{bitstream}", "--qp", "{qp}"],
            "decode": [sys.executable, "{config_dir}/tinycodec.py", "decode", "{bitstream}", "{output}"],
            "rate_points": [8, 24], "input_format": "rgb24", "family": "generative"}
    spec.update(ext)
    d.update(frames=4, codecs=["tiny"], manifest=str(demo.manifest_path), external={"tiny": spec}, name="ext")
    d["metrics"]["names"] = ["psnr", "ssim"]
    p = tmp_path / "ext.yaml"
    p.write_text(yaml.safe_dump(d))
    return load_condition(p)


def _records(run_dir: Path) -> dict[str, dict]:
    out = {}
    for r in iter_records(run_dir):
        c = comparable(r)
        c.pop("artifacts", None)
        out[r["key"]] = c
    return out


@pytest.mark.parametrize("fmt", ["rgb24", "yuv420p"])
def test_external_codec_runs_and_counts_every_byte(tmp_path: Path, fmt: str) -> None:
    cond = _condition(tmp_path, input_format=fmt)
    plan = plan_run(cond, tmp_path / "run", Environment(), codecs=["tiny"])
    recs = execute(plan.jobs)
    assert [r["status"] for r in recs] == ["ok", "ok"], [r.get("error") for r in recs]
    for r in recs:
        bs = tmp_path / "run" / r["artifacts"]["bitstream"]
        assert r["bits"] == 8 * bs.stat().st_size and r["codec"] == "tiny"
        prov = r["provenance"]["codec"]
        assert prov["kind"] == "external" and {p["file"] for p in prov["programs"]} >= {"tinycodec.py"}
        assert r["commands"][0][2] == "encode" and r["encoder_info"]["files"][0]["bytes"] == bs.stat().st_size
        assert r["metrics"]["psnr"]["value"] > 20
    # a lower qp gives more bits and a better picture
    lo, hi = sorted(recs, key=lambda r: r["rate_point"]["qp"])
    assert lo["bits"] > hi["bits"] and lo["metrics"]["psnr"]["value"] > hi["metrics"]["psnr"]["value"]


def test_folder_bitstream_counts_every_file(tmp_path: Path) -> None:
    enc = [sys.executable, "{config_dir}/tinycodec.py", "encode", "{input}", "{bitstream}", "--qp", "{qp}", "--folder"]
    cond = _condition(tmp_path, bitstream="folder", encode=enc)
    plan = plan_run(cond, tmp_path / "run", Environment(), codecs=["tiny"])
    recs = execute(plan.jobs)
    r = recs[0]
    assert r["status"] == "ok", r.get("error")
    folder = tmp_path / "run" / r["artifacts"]["bitstream"]
    files = [f for f in folder.rglob("*") if f.is_file()]
    assert len(files) == 2 and r["bits"] == 8 * sum(f.stat().st_size for f in files) == bitstream_bits(folder)


def test_the_key_follows_the_programs_and_commands(tmp_path: Path) -> None:
    cond = _condition(tmp_path)
    k1 = plan_run(cond, tmp_path / "r", Environment(), codecs=["tiny"]).jobs[0].key
    (tmp_path / "tinycodec.py").write_text((tmp_path / "tinycodec.py").read_text() + "\n# changed\n")
    k2 = plan_run(cond, tmp_path / "r", Environment(), codecs=["tiny"]).jobs[0].key
    enc = [sys.executable, "{config_dir}/tinycodec.py", "encode", "{input}", "{bitstream}", "--qp", "{qp}", "--x"]
    k3 = plan_run(_condition(tmp_path, encode=enc),
                  tmp_path / "r", Environment(), codecs=["tiny"]).jobs[0].key
    assert len({k1, k2, k3}) == 3
    # the external section is not in the condition's fingerprint: other codecs' results stay valid
    assert cond.fingerprint == cond.with_overrides(external={}, codecs=["tiny"]).fingerprint


def test_failing_command_is_one_line_with_its_stderr(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    enc = [sys.executable, "{config_dir}/tinycodec.py", "encode", "{input}", "{bitstream}", "--fail"]
    cond = _condition(tmp_path, encode=enc)
    codec = build_codec("tiny", cond, Environment())
    seq_frames = __import__("numpy").zeros((2, 128, 128, 3), "uint8")
    from gfvc.codec import RatePoint, Sequence

    with pytest.raises(ExternalToolError) as e:
        codec.encode(Sequence("s", seq_frames, 25.0), RatePoint(8), tmp_path / "job")
    msg = str(e.value)
    assert "\n" not in msg and "cannot code this: unsupported qp" in msg and "exit code 3" in msg
    # through the CLI: the run records the failure, names it in one line and exits 1
    rc = main(["run", "--condition", cond.source, "--workdir", str(tmp_path / "cli"), "--no-report", "-j", "1"])
    err = capsys.readouterr().err
    assert rc == 1 and "cannot code this" in err and "Traceback" not in err


def test_wrong_decoded_size_is_refused(tmp_path: Path) -> None:
    dec = [sys.executable, "{config_dir}/tinycodec.py", "decode", "{bitstream}", "{output}", "--short",
           "--frame-bytes", "100"]
    cond = _condition(tmp_path, decode=dec)
    recs = execute(plan_run(cond, tmp_path / "run", Environment(), codecs=["tiny"]).jobs)
    assert recs[0]["status"] != "ok" and "is not rgb24 128x128" in recs[0]["error"]["message"]


@pytest.mark.parametrize(("ext", "msg"), [
    ({"encode": ["x", "{inptu}", "{bitstream}"]}, "unknown placeholder {inptu}"),
    ({"encode": ["x", "{bitstream}"]}, "must use {input}"),
    ({"decode": ["x", "{bitstream}"]}, "must use {output}"),
    ({"rate_points": []}, "rate_points is empty"),
    ({"encode": "python enc.py"}, "expected a list"),
])
def test_bad_external_definitions_are_refused(tmp_path: Path, ext, msg) -> None:
    with pytest.raises(ConfigError, match=msg.replace("{", r"\{").replace("}", r"\}")):
        _condition(tmp_path, **ext)


def test_missing_program_refused_before_any_job(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    cond = _condition(tmp_path, encode=["no-such-codec-binary", "{input}", "{bitstream}"])
    rc = main(["run", "--condition", cond.source, "--workdir", str(tmp_path / "r"), "--no-report"])
    err = capsys.readouterr().err
    assert rc == 2 and "no-such-codec-binary" in err and err.count("\n") == 1


def test_process_pool_and_dask_give_the_same_records(tmp_path: Path) -> None:
    cond = _condition(tmp_path)
    ref = None
    for name, kw in [("inproc", {}), ("pool", {"workers": 2}), ("dask", {"executor": "dask", "workers": 2})]:
        plan = plan_run(cond, tmp_path / name, Environment(), codecs=["tiny"])
        recs = execute(plan.jobs, **kw)
        assert all(r["status"] == "ok" for r in recs), [r.get("error") for r in recs]
        got = _records(tmp_path / name)
        if ref is None:
            ref = got
        else:
            assert got == ref, name


def test_the_docs_example_runs_as_written(tmp_path: Path) -> None:
    """docs/adding-a-codec.md: `gfvc run --condition docs/examples/external-demo.yaml` from a checkout."""
    shutil.copytree(ROOT / "docs" / "examples", tmp_path / "docs" / "examples")
    (tmp_path / "test_conditions").mkdir()
    shutil.copy(ROOT / "test_conditions" / "demo.manifest.yaml", tmp_path / "test_conditions")
    doc = (ROOT / "docs" / "adding-a-codec.md").read_text()
    cmd = "gfvc run --condition docs/examples/external-demo.yaml --codec blockcodec --frames 8"
    assert cmd in doc
    exe = Path(sys.executable).parent / "gfvc"
    r = subprocess.run([str(exe), *cmd.split()[1:]], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    recs = [json.loads(p.read_text()) for p in (tmp_path / "gfvc-runs" / "external-demo" / "records").glob("*.json")]
    assert len(recs) == 4 and all(x["status"] == "ok" and x["codec"] == "blockcodec" for x in recs)
