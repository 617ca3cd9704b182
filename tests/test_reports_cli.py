"""CLI of the reports area: report, compare, regress (exit codes, JUnit), bdrate."""
from __future__ import annotations

import json
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from reports.synthetic import CONDITION, make_run
from suite.cli.main import main

DATA = Path(__file__).parent / "data" / "reports"
S2D_NEW = ("generative", (22, 32, 42, 52), 1.25, 0.025, 1.5, 0.6, 0.15)
VVENC = ("anchor", (37, 42, 47, 52), 2.2, 0.05, 1.2, 0.0, 0.3)


@pytest.fixture()
def run(tmp_path):
    dst = tmp_path / "run"
    shutil.copytree(DATA / "run", dst)
    return dst


def test_report_command(run, tmp_path, capsys):
    assert main(["report", str(run), "--format", "json", "--format", "csv", "--out", str(tmp_path / "o"),
                 "--method", "pchip", "--bootstrap", "200"]) == 0
    out = capsys.readouterr().out
    assert "json\t" in out and (tmp_path / "o" / "summary.json").exists()
    s = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert s["method"] == "pchip"
    ci = s["summary"]["s2d"]["lpips"]["mean_of_sequences"]["ci"]
    assert ci[0] < s["summary"]["s2d"]["lpips"]["value"] < ci[1]


def test_regress_exit_codes_and_junit(run, tmp_path, capsys):
    base = tmp_path / "baseline.json"
    assert main(["regress", str(run), "--baseline", str(base), "--update-baseline"]) == 0
    data = json.loads(base.read_text())
    assert data["kind"] == "gfvc-bdrate-baseline" and data["anchor"] == "vvenc"
    assert data["entries"]["s2d"]["fvd"] is None and data["entries"]["keyframe-repeat"]["dists"] is None
    assert main(["regress", str(run), "--baseline", str(base), "--junit", str(tmp_path / "ok.xml")]) == 0
    root = ET.parse(tmp_path / "ok.xml").getroot()
    assert root.get("failures") == "0" and int(root.get("tests")) == 12

    # A baseline that promised 1 point more saving than the run delivers: beyond 0.5 -> exit 1.
    data["entries"]["s2d"]["lpips"] -= 1.0
    worse = tmp_path / "worse.json"
    worse.write_text(json.dumps(data))
    capsys.readouterr()
    assert main(["regress", str(run), "--baseline", str(worse), "--junit", str(tmp_path / "bad.xml")]) == 1
    err = capsys.readouterr().err
    assert "regressed" in err and "s2d lpips" in err
    root = ET.parse(tmp_path / "bad.xml").getroot()
    fails = root.findall(".//failure")
    assert root.get("failures") == "1" and len(fails) == 1 and "worse by 1.000" in fails[0].get("message")
    # Within a wider tolerance it passes.
    assert main(["regress", str(run), "--baseline", str(worse), "--tolerance", "1.5"]) == 0
    # A value that had a result before but is now partial (non-monotonic sequence) fails.
    data["entries"]["s2d"]["lpips"] += 1.0
    data["entries"]["keyframe-repeat"]["dists"] = -60.0
    (tmp_path / "partial.json").write_text(json.dumps(data))
    assert main(["regress", str(run), "--baseline", str(tmp_path / "partial.json")]) == 1
    # A baseline of another condition is an input error (2), not a regression.
    data["condition_fingerprint"] = "f" * 64
    (tmp_path / "other.json").write_text(json.dumps(data))
    assert main(["regress", str(run), "--baseline", str(tmp_path / "other.json")]) == 2
    assert main(["regress", str(run), "--baseline", str(tmp_path / "missing.json")]) == 2


def test_compare_across_runs(run, tmp_path, capsys):
    other = make_run(tmp_path / "b", codecs={"vvenc": VVENC, "s2d-new": S2D_NEW})
    assert main(["compare", str(run), str(other), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["test"] == "s2d-new" and out["anchor"] == "vvenc"
    assert out["metrics"]["dists"]["mean_of_sequences"]["status"] == "ok"
    assert out["metrics"]["dists"]["mean_of_sequences"]["value"] < -70
    assert "fvd" not in out["metrics"] and out["not_computed"]["fvd"].startswith("not computed in")
    # Any codec vs any other: s2d-new (run B) as the anchor of s2d (run A).
    assert main(["compare", str(run), str(other), "--anchor-run", "B", "--anchor", "s2d-new", "--test", "s2d",
                 "--json"]) == 0
    v = json.loads(capsys.readouterr().out)["metrics"]["lpips"]["mean_of_sequences"]["value"]
    # s2d-new samples the same RD function as s2d at other rate points: BD-rate ~ 0, not exactly 0.
    assert v is not None and 0 < abs(v) < 0.1


def test_compare_refuses_mismatched_condition_and_anchor(run, tmp_path, capsys):
    cond = json.loads(json.dumps(CONDITION))
    cond["fps"] = 30.0
    other = make_run(tmp_path / "c", codecs={"vvenc": VVENC, "s2d-new": S2D_NEW}, condition=cond)
    capsys.readouterr()
    assert main(["compare", str(run), str(other)]) == 2
    assert "different test conditions" in capsys.readouterr().err
    prov = {"vvenc": {"name": "vvenc", "version": "other-build", "binary_sha256": "1" * 64},
            "s2d-new": {"name": "s2d-new"}}
    other2 = make_run(tmp_path / "d", codecs={"vvenc": VVENC, "s2d-new": S2D_NEW}, provenance=prov)
    assert main(["compare", str(run), str(other2)]) == 2
    err = capsys.readouterr().err
    assert "anchor 'vvenc' differs" in err and "version" in err

    from reports.compare import IncompatibleRuns, compare_runs

    with pytest.raises(IncompatibleRuns):
        compare_runs(run, other)


def test_bdrate_csv(tmp_path, capsys):
    rows = ["codec,sequence,rate_kbps,psnr,dists"]
    pts = {"A": [(9487.76, 40.037), (4593.60, 38.615), (2486.44, 36.845), (1358.24, 34.851)],
           "B": [(9787.80, 40.121), (4469.00, 38.651), (2451.52, 36.970), (1356.24, 34.987)]}
    for codec, p in pts.items():
        for r, q in p:
            rows.append(f"{codec},fau,{r},{q},{(50 - q) / 100}")
    rows.append("A,flat,10,30,0.2")
    rows += ["A,flat,20,30,0.2", "A,flat,40,30,0.2", "B,flat,10,30,0.2", "B,flat,20,31,0.2", "B,flat,40,32,0.2"]
    csv = tmp_path / "rd.csv"
    csv.write_text("\n".join(rows) + "\n")
    assert main(["bdrate", str(csv), "--anchor", "A", "--test", "B", "--metric", "psnr", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["per_sequence"]["fau"]["value"] == pytest.approx(-4.417485350589, abs=1e-9)
    assert out["per_sequence"]["flat"]["status"] == "non_monotonic"
    assert out["mean"]["status"] == "partial" and out["flagged"][0].startswith("flat: non_monotonic")
    # 1-dists style data given as lower-is-better DISTS: same BD-rate as PSNR (affine map).
    assert main(["bdrate", str(csv), "--anchor", "A", "--test", "B", "--metric", "dists", "--json",
                 "--method", "cubic"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["lower_is_better"] is True
    assert out["per_sequence"]["fau"]["value"] == pytest.approx(-4.420462706090111, abs=1e-8)
    # Explicit polarity, wrong way round: flagged, and no mean -> exit 1.
    csv2 = tmp_path / "fau.csv"
    csv2.write_text("\n".join(rows[:9]) + "\n")
    assert main(["bdrate", str(csv2), "--anchor", "A", "--test", "B", "--metric", "psnr",
                 "--lower-is-better"]) == 1
    assert main(["bdrate", str(csv2), "--anchor", "A", "--test", "X", "--metric", "psnr"]) == 2
    assert main(["bdrate", str(csv2), "--anchor", "A", "--test", "B", "--metric", "vmaf"]) == 2
