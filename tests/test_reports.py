"""Report model, tables, plots and documents; golden test of the whole report."""
from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pandas as pd
import pytest

from gfvc.errors import ConfigError, InputError
from gfvc.records import results_table
from reports import build_report, tables
from reports.model import build_model, load_run
from reports.synthetic import GOLDEN_FILES, GOLDEN_SCENARIO, golden_normalise, make_run

DATA = Path(__file__).parent / "data" / "reports"


@pytest.fixture(scope="module")
def golden_report(tmp_path_factory):
    run = tmp_path_factory.mktemp("golden") / "run"
    shutil.copytree(DATA / "run", run)
    paths = build_report(run, formats=("md", "csv", "json", "png"), out_dir=run / "report")
    return run, paths


def _close(a, b, path=""):
    """Recursive equality with a float tolerance (numbers from other numpy/scipy builds)."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and set(a) == set(b), f"{path}: keys {sorted(set(a) ^ set(b))}"
        for k in a:
            _close(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, list):
        assert isinstance(b, list) and len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _close(x, y, f"{path}[{i}]")
    elif isinstance(a, float) and isinstance(b, (int, float)):
        assert b == pytest.approx(a, rel=1e-9, abs=1e-9), path
    else:
        assert a == b, path


@pytest.mark.golden
def test_golden_report_outputs(golden_report):
    run, paths = golden_report
    out = run / "report"
    for name in GOLDEN_FILES:
        got = golden_normalise(name, (out / name).read_text(), run)
        want = (DATA / "golden" / name).read_text()
        if name.endswith(".json"):
            _close(json.loads(want), json.loads(got), name)
        elif name.endswith(".csv"):
            a, b = pd.read_csv(DATA / "golden" / name), pd.read_csv(out / name)
            assert list(a.columns) == list(b.columns), name
            for c in a.columns:
                if pd.api.types.is_numeric_dtype(a[c]):
                    pd.testing.assert_series_equal(a[c], b[c], rtol=1e-9, check_names=False)
                else:
                    assert a[c].fillna("").tolist() == b[c].fillna("").tolist(), (name, c)
        else:
            assert got == want, f"{name} differs from the golden file; run tests/data/reports/regenerate.py " \
                                f"and review the diff if the change is intended"


def test_report_content(golden_report):
    run, paths = golden_report
    md = paths["md"].read_text()
    # Table 1 layout: rows Rate-DISTS / Rate-LPIPS / Rate-FVD, one column per test codec, anchor named.
    assert "| BD-rate vs vvenc (%) | keyframe-repeat | s2d |" in md
    for row in ("| Rate-DISTS |", "| Rate-LPIPS |", "| Rate-FVD |"):
        assert row in md
    # FVD not computed: stated with its reason, not hidden, not a number.
    assert "FVD: not computed (missing weights: i3d_torchscript.pt" in md
    assert "FVD not plotted" in md
    # The non-monotonic sequence is flagged, and the mean is marked partial.
    assert "keyframe-repeat vs vvenc, dists, seq_b: non_monotonic" in md
    assert "-60.34* (2/3 sequences: seq_b: non_monotonic)" in md
    # Every condition parameter is listed.
    for key in ("anchor.qps", "generative.key_frame_qps", "metrics.fvd.clip_length", "colour.matrix", "fps"):
        assert f"| {key} |" in md
    assert "nan" not in md.lower().replace("nan_input", "")
    summary = json.loads(paths["json"].read_text())
    assert summary["summary"]["s2d"]["fvd"] == {"value": None, "status": "not_computed",
                                                "reason": GOLDEN_SCENARIO["not_computed"]["fvd"]}
    assert summary["summary"]["s2d"]["dists"]["status"] == "ok"
    per_seq = pd.read_csv(paths["csv:bdrate"])
    bad = per_seq[per_seq["status"] != "ok"]
    assert len(bad) == 1 and bad["reason"].iloc[0] and math.isnan(bad["bd_rate_pct"].iloc[0])


def test_tables_agree_with_engine():
    run = DATA / "run"
    model = build_model(results_table(run), load_run(run), run_dir=run)
    from reports import bdrate as bd
    from reports.model import curve

    ra, qa = curve(model.df, "vvenc", "seq_a", "lpips")
    rt, qt = curve(model.df, "s2d", "seq_a", "lpips")
    direct = bd.bd_rate(ra, qa, rt, qt, lower_is_better=True)
    assert model.pairs[("s2d", "lpips")].per_sequence["seq_a"].value == direct.value
    pair = model.pairs[("s2d", "lpips")]
    assert pair.mean.value != pytest.approx(pair.curve.value, abs=0.1)  # the two aggregations differ
    head, rows = tables.table1(model, ["dists", "lpips", "fvd"])
    assert head == ["BD-rate vs vvenc (%)", "keyframe-repeat", "s2d"]
    assert rows[1][2] == f"{pair.mean.value:.2f}"
    assert rows[2][1].startswith("n/a (not computed:")


def test_xlsx_rows_by_sequence_and_qp(tmp_path):
    run = DATA / "run"
    paths = build_report(run, formats=("xlsx",), out_dir=tmp_path)
    rd = pd.read_excel(paths["xlsx"], sheet_name="rd")
    assert len(rd) == 3 * 3 * 4  # sequences x codecs x QPs
    assert {"codec", "sequence", "qp", "kbps", "dists", "lpips", "fvd", "fvd_status"} <= set(rd.columns)
    row = rd[(rd["codec"] == "vvenc") & (rd["sequence"] == "seq_a") & (rd["qp"] == 37)]
    assert len(row) == 1 and row["fvd_status"].iloc[0] == "not_computed" and pd.isna(row["fvd"].iloc[0])
    summary = pd.read_excel(paths["xlsx"], sheet_name="summary")
    assert set(summary["codec"]) == {"keyframe-repeat", "s2d"}
    notes = pd.read_excel(paths["xlsx"], sheet_name="notes")
    assert notes["metric"].tolist() == ["fvd"]


def test_html_is_self_contained_and_tex(tmp_path):
    paths = build_report(DATA / "run", formats=("html", "tex", "svg"), out_dir=tmp_path)
    html = paths["html"].read_text()
    assert "<svg" in html and "data:image/png;base64," in html
    assert "src=\"http" not in html and "href=\"http" not in html and "<link" not in html
    assert "not computed (missing weights" in html
    tex = paths["tex"].read_text()
    assert r"\begin{tabular}" in tex and "Rate-DISTS" in tex and r"keyframe-repeat" in tex
    assert "n/a (not computed" in tex and r"\%" in tex
    svg = paths["svg"].read_text()
    assert "1-DISTS" in svg and "1-LPIPS" in svg and "5000-FVD" not in svg  # FVD skipped, not zeros


def test_all_metrics_missing_and_anchor_missing(tmp_path):
    run = make_run(tmp_path / "run", sequences=["only"],
                   codecs={"s2d": ("generative", (22, 32, 42, 52), 1.3, 0.025, 1.5, 0.6, 0.15)},
                   metrics=("dists", "lpips"), not_computed={"dists": "no weights", "lpips": "no weights"})
    paths = build_report(run, formats=("md", "json", "png"), out_dir=tmp_path / "rep")
    md = paths["md"].read_text()
    assert "anchor 'vvenc' has no successful records" in md
    assert "DISTS not plotted: not computed (no weights)" in md
    assert not (tmp_path / "rep" / "rd_average.png").exists()


def test_errors(tmp_path):
    with pytest.raises(InputError):
        build_report(tmp_path, formats=("json",))
    with pytest.raises(ConfigError):
        build_report(DATA / "run", formats=("pdf",), out_dir=tmp_path)
    with pytest.raises(ConfigError):
        build_report(DATA / "run", formats=("json",), out_dir=tmp_path, method="spline")


def test_md_and_tex_escaping():
    md = tables.md_table(["a", "b"], [["x|y", "1"]])
    assert "x\\|y" in md
    assert tables.tex_escape("a_b & 5%") == r"a\_b \& 5\%"
