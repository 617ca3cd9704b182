"""Issue 16, class 6: gates that tell the truth.

A typo in a regress baseline is the baseline's error (exit 2), not a regression (exit 1); a report of a run
that did not finish says what is missing at the top of every format and in the terminal; one validation
of checkpoint choices is shared by run, info, encode, decode and doctor.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from gfvc.records import PLAN_FILE, RECORDS_DIR
from suite.cli.main import main
from test_conditions import load_condition

DATA = Path(__file__).parent / "data" / "reports"


@pytest.fixture()
def run(tmp_path):
    dst = tmp_path / "run"
    shutil.copytree(DATA / "run", dst)
    return dst


# ------------------------------------------------------------------ regress

@pytest.mark.parametrize("edit, words", [
    (lambda e: e["s2d"].update(psnrr=-10.0), ["unknown metric 'psnrr'", "did you mean psnr"]),
    (lambda e: e.update(zzz={"dists": -10.0}), ["codec 'zzz'", "the run's codecs"]),
])
def test_regress_typo_in_the_baseline_is_exit_2_naming_the_key(run, tmp_path, capsys, edit, words):
    base = tmp_path / "b.json"
    assert main(["regress", str(run), "--baseline", str(base), "--update-baseline"]) == 0
    data = json.loads(base.read_text())
    edit(data["entries"])
    base.write_text(json.dumps(data))
    capsys.readouterr()
    assert main(["regress", str(run), "--baseline", str(base)]) == 2
    err = capsys.readouterr().err
    assert all(w in err for w in words) and err.count("\n") == 1 and "regressed" not in err


def test_regress_keeps_exact_values(run, tmp_path):
    base = tmp_path / "b.json"
    assert main(["regress", str(run), "--baseline", str(base), "--update-baseline"]) == 0
    assert json.loads(base.read_text())["values"] == "exact"
    assert main(["regress", str(run), "--baseline", str(base), "--tolerance", "0"]) == 0


def test_regress_codec_of_the_run_without_results_is_still_a_regression(run, tmp_path, capsys):
    base = tmp_path / "b.json"
    assert main(["regress", str(run), "--baseline", str(base), "--update-baseline"]) == 0
    for p in (run / RECORDS_DIR).glob("*.json"):
        if json.loads(p.read_text())["codec"] == "s2d":
            p.unlink()
    assert main(["regress", str(run), "--baseline", str(base)]) == 1


# ------------------------------------------------------------------ incomplete runs

def _interrupt(run: Path, codec: str, qps: set[int]) -> list[str]:
    """Write the run's plan (jobs.json, as `gfvc run` does) and remove some records of ``codec``."""
    jobs, gone = {}, []
    for p in sorted((run / RECORDS_DIR).glob("*.json")):
        r = json.loads(p.read_text())
        jobs[r["key"]] = {"codec": r["codec"], "sequence": r["sequence"]["name"],
                          "rate_point": r["rate_point"]["label"], "condition": r["condition"]["name"],
                          "condition_fingerprint": r["condition"]["fingerprint"]}
        if r["codec"] == codec and r["rate_point"]["qp"] in qps:
            p.unlink()
            gone.append(f"{r['sequence']['name']}@{r['rate_point']['label']}")
    (run / PLAN_FILE).write_text(json.dumps({"schema": 1, "jobs": jobs}))
    return gone


def test_report_of_an_interrupted_run_says_what_is_missing_everywhere(run, tmp_path, capsys):
    gone = _interrupt(run, "s2d", {22, 32})
    assert gone
    out_dir = tmp_path / "o"
    assert main(["report", str(run), "--out", str(out_dir), "--format", "md", "--format", "html", "--format", "tex",
                 "--format", "txt", "--format", "json"]) == 0
    cap = capsys.readouterr()
    assert "INCOMPLETE run" in cap.err
    first = cap.out.splitlines()[2]  # the title, a blank line, then what is missing
    assert first.startswith(f"INCOMPLETE RUN: {len(gone)} of ")
    assert "s2d: " + str(len(gone)) + " missing (qp22: " in cap.out
    for name in ("report.md", "report.html", "tables.tex", "summary.txt"):
        text = (out_dir / name).read_text()
        i = text.find("INCOMPLETE RUN")
        assert 0 <= i < text.find("Table 1") if "Table 1" in text else i >= 0, name
        assert "s2d: " in text and "qp32" in text, name
    s = json.loads((out_dir / "summary.json").read_text())
    inc = s["incomplete"]
    assert inc["complete"] is False and len(inc["missing"]) == len(gone) and inc["source"] == PLAN_FILE
    assert set(inc["by_codec"]) == {"s2d"} and set(inc["by_codec"]["s2d"]["rate_points"]) == {"qp22", "qp32"}


def test_report_of_a_complete_run_has_no_incomplete_block(run, tmp_path, capsys):
    _interrupt(run, "s2d", set())
    assert main(["report", str(run), "--out", str(tmp_path / "o"), "--format", "json", "--format", "txt"]) == 0
    assert "incomplete" not in json.loads((tmp_path / "o" / "summary.json").read_text())
    assert "INCOMPLETE" not in (tmp_path / "o" / "summary.txt").read_text() + capsys.readouterr().err


def test_failed_jobs_are_named_with_their_reason(run, tmp_path):
    from reports.completeness import completeness

    _interrupt(run, "s2d", set())
    p = next(p for p in (run / RECORDS_DIR).glob("*.json") if json.loads(p.read_text())["codec"] == "s2d")
    rec = json.loads(p.read_text())
    rec.update(status="error", error={"reason": "timeout", "message": "job past 10 s"})
    p.write_text(json.dumps(rec))
    c = completeness(run, json.loads((run / "run.json").read_text()))
    assert [(m.codec, m.state, m.reason) for m in c.missing] == [("s2d", "failed", "timeout")]
    assert "1 failed" in c.lines()[1]


# ------------------------------------------------------------------ one validation of checkpoint choices

def _condition_with(tmp_path: Path, models: dict) -> Path:
    demo = load_condition("demo")
    d = demo.to_dict()
    d["manifest"] = str(demo.manifest_path)
    d["models"] = models
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump(d))
    return p


@pytest.mark.parametrize("models, words", [
    ({"vvenc": {"path": "x.pt"}}, "codec 'vvenc' takes no checkpoint"),
    ({"nosuch": {"path": "x.pt"}}, "unknown codec 'nosuch'"),
    ({"mraa": {"path": "x.pt", "config": "nosuch"}}, "has no configuration 'nosuch'"),
])
def test_every_command_that_runs_codecs_validates_the_models_section_alike(tmp_path, capsys, models, words):
    cond = str(_condition_with(tmp_path, models))
    png = tmp_path / "in"
    png.mkdir()
    commands = [
        ["run", "--condition", cond, "--dry-run", "--workdir", str(tmp_path / "w")],
        ["info", "fomm", "--condition", cond],
        ["encode", str(png), "-o", str(tmp_path / "o.bin"), "--codec", "vvenc", "--qp", "32", "--condition", cond],
        ["decode", str(tmp_path / "missing.bin"), "-o", str(tmp_path / "d.rgb"), "--condition", cond],
        ["doctor", "--condition", cond],
    ]
    (tmp_path / "missing.bin").write_bytes(b"\x00\x00\x00\x01" + bytes(16))  # a VVC start code: decode gets far
    import numpy as np
    from PIL import Image

    Image.fromarray(np.zeros((128, 128, 3), np.uint8)).save(png / "0000.png")
    for argv in commands:
        capsys.readouterr()
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert words in err and err.count("\n") == 1 and f"{cond}: models" in err, (argv, err)
