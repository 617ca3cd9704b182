"""Report model, tables, plots and documents; golden test of the whole report."""
from __future__ import annotations

import json
import math
import re
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
    paths = build_report(run, formats=("md", "csv", "json", "txt", "png"), out_dir=run / "report")
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
    # Results first: the banner, then Table 1, long before the appendices of parameters and provenance.
    order = [md.index(x) for x in ("Read first: what these numbers are not", "Table 1.", "## 2. Vertex prediction",
                                   "## Appendix A. Test conditions", "## Appendix B.", "## Appendix E.")]
    assert order == sorted(order)
    # Table 1: one row per test codec, both aggregations per metric, anchor named.
    assert ("| Codec | Rate-DISTS (mean of seq.) | Rate-DISTS (avg. curve) | Rate-LPIPS (mean of seq.) | "
            "Rate-LPIPS (avg. curve) | Rate-FVD (mean of seq.) | Rate-FVD (avg. curve) |") in md
    assert "| s2d | -78.10 | -78.94 | -78.10 | -78.94 | n/c | n/c |" in md
    # FVD not computed: its reason is said exactly once in the body (banner) and once in Appendix D.
    reason = GOLDEN_SCENARIO["not_computed"]["fvd"]
    banner = md[:md.index("## 1. Results")]
    assert f"FVD not computed: {reason}" in banner
    assert md.count(reason) == 2 and md.index("## Appendix D") < md.rindex(reason)
    assert "FVD not plotted" in md
    # The stand-in anchor and the demo model are in the banner.
    assert "The anchor vvenc stands in for VTM-22.2 (synthetic stand-in)" in banner
    assert "s2d: demo checkpoint s2d-demo" in banner and "PROXY reference vertices" in banner
    # The non-monotonic sequence is flagged, and the mean is marked partial.
    assert "keyframe-repeat vs vvenc, dists, seq_b: non_monotonic" in md
    assert "| keyframe-repeat | -60.34* | n/a (non-monotonic) |" in md
    # Every condition parameter is listed (appendix).
    for key in ("anchor.qps", "generative.key_frame_qps", "metrics.fvd.clip_length", "colour.matrix", "fps",
                "metrics.vertices.pck_thresholds_px"):
        assert f"| {key} |" in md
    assert not re.search(r"\bnan\b", md.lower())
    # Per-plane PSNR of the anchor, as VTM's log prints it; it is not a BD-rate column (anchor only).
    assert "| Codec | Sequence | QP | kbps | Y-PSNR | U-PSNR | V-PSNR | PSNR-YUV |" in md
    assert "Rate-PSNR-YUV" not in md
    summary = json.loads(paths["json"].read_text())
    assert summary["summary"]["s2d"]["fvd"] == {"value": None, "status": "not_computed",
                                                "reason": GOLDEN_SCENARIO["not_computed"]["fvd"]}
    assert summary["summary"]["s2d"]["dists"]["status"] == "ok"
    per_seq = pd.read_csv(paths["csv:bdrate"])
    bad = per_seq[per_seq["status"] != "ok"]
    assert len(bad) == 1 and bad["reason"].iloc[0] and math.isnan(bad["bd_rate_pct"].iloc[0])


def test_vertex_section(golden_report):
    run, paths = golden_report
    md = paths["md"].read_text()
    sec = md[md.index("## 2. Vertex prediction"):md.index("## Appendix A")]
    assert "PROXY" in sec and "Table 3. Vertex error (px) and PCK (%)" in sec
    assert "| vvenc |  |  | not applicable (no vertex output) |" in sec
    assert "| keyframe-repeat |  |  | not applicable (no vertex output) |" in sec
    # Synthetic inter error = 4 + 0.4 * (QP - 22) px in every sequence, key frame 0.8x, p90 1.8x,
    # PCK@t = 1 - exp(-t / mean): at QP 32, 8.00 px, key 6.40, median 7.20, p90 14.40, PCK@5 = 46.5 %.
    vx = pd.read_csv(paths["csv:vertices"])
    q32 = vx[(vx["codec"] == "s2d") & (vx["qp"] == 32)]
    assert f"| s2d | 32 | {q32['kbps'].mean():.3f} | 6.40 | 8.00 | 7.20 | 14.40 | 11.8 | 22.1 | 46.5 |" in sec
    assert "0.002 s/frame vs 0.724 s/frame for OSX" in sec and "2.00 ms (cpu, 1 thread)" in sec
    # One vertex codec: no vertex BD-rate, and the report says why instead of printing a number.
    assert "no vertex BD-rate: only s2d outputs vertices" in sec
    s = json.loads(paths["json"].read_text())["vertices"]
    assert s["proxy"] is True and s["not_applicable"] == ["vvenc", "keyframe-repeat"]
    assert s["bd_rate"]["status"] == "not_computed"
    assert [p["qp"] for p in s["codecs"]["s2d"]] == [52, 42, 32, 22]
    txt = paths["txt"].read_text()
    assert "Vertex prediction against PROXY reference vertices" in txt
    assert "not applicable (no vertex output): vvenc" in txt


def test_vertex_bd_rate_between_two_vertex_codecs(tmp_path):
    codecs = {"vvenc": ("anchor", (37, 42, 47, 52), 2.2, 0.05, 1.2, 0.0, 0.3),
              "s2d": ("generative", (22, 32, 42, 52), 1.3, 0.025, 1.5, 0.6, 0.15),
              "ihvc": ("generative", (22, 32, 42, 52), 1.3 + math.log10(0.64), 0.025, 1.5, 0.6, 0.15)}
    run = make_run(tmp_path / "run", codecs=codecs, vertices={"s2d": 1.0, "ihvc": 1.0}, proxy_vertices=False)
    model = build_model(results_table(run), load_run(run), run_dir=run)
    vm = model.vertex
    assert vm.codecs == ["s2d", "ihvc"] and vm.bd_reference == "s2d" and not vm.proxy
    # Same vertex error per QP, ihvc at 0.64 x s2d's rate everywhere: BD-rate on vertex error = -36 %.
    pair = vm.pairs["ihvc"]
    # (to 0.01: kbps come from whole bits)
    assert pair.mean.value == pytest.approx(-36.0, abs=0.01) and pair.curve.value == pytest.approx(-36.0, abs=0.01)
    from reports import vertices as vx

    head, rows = vx.bd_table(vm)
    assert head[1].startswith("BD-rate vs s2d") and rows == [["ihvc", "-36.00", "-36.00"]]
    assert "PROXY" not in vx.terminal_lines(vm)[0] and "PROXY" not in vm.reference_label()


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
    groups, head, rows = tables.table1_both(model, ["dists", "lpips", "fvd"])
    assert groups == [("Rate-DISTS", 2), ("Rate-LPIPS", 2), ("Rate-FVD", 2)]
    assert head[0] == "Codec" and [r[0] for r in rows] == ["keyframe-repeat", "s2d"]
    assert rows[1][3] == f"{pair.mean.value:.2f}" and rows[1][4] == f"{pair.curve.value:.2f}"
    assert rows[0][5] == "n/c"


def test_xlsx_sheets_formats_and_ctc_layout(tmp_path):
    from openpyxl import load_workbook

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
    wb = load_workbook(paths["xlsx"])
    assert wb.sheetnames[0] == "ctc" and "vertices" in wb.sheetnames
    ws = wb["rd"]
    head = [c.value for c in ws[1]]
    assert ws.freeze_panes == "D2" and ws.auto_filter.ref.startswith("A1:")
    kbps = ws.cell(row=2, column=head.index("kbps") + 1)
    assert kbps.number_format == "0.000" and ws.column_dimensions["A"].width >= len("keyframe-repeat")
    assert ws.cell(row=2, column=head.index("dists") + 1).number_format == "0.0000"
    # JVET CTC anchor-spreadsheet layout: one row per sequence, per codec and QP kbps + metrics side by side.
    ws = wb["ctc"]
    assert ws.freeze_panes == "B4" and ws.auto_filter.ref.startswith("A3:")
    assert [ws.cell(row=r, column=1).value for r in range(4, 7)] == ["seq_a", "seq_b", "seq_c"]
    # The anchor's per-plane PSNR (as VTM logs it) sits next to its other metrics; FVD (not computed)
    # and metrics a codec does not record get no columns.
    fields = ["kbps", "PSNR", "PSNR-Y", "Y-PSNR", "U-PSNR", "V-PSNR", "PSNR-YUV", "SSIM", "DISTS", "LPIPS"]
    assert [ws.cell(row=3, column=c).value for c in range(2, 2 + len(fields))] == fields
    start = next(c for c in range(2, ws.max_column + 1) if ws.cell(row=1, column=c).value == "s2d")
    s2d_cols = range(start, ws.max_column + 1)  # the last codec block (merged header cell over it)
    assert {ws.cell(row=3, column=c).value for c in s2d_cols} == {"kbps", "PSNR", "PSNR-Y", "SSIM", "DISTS", "LPIPS"}
    assert ws.cell(row=1, column=2).value == "vvenc" and ws.cell(row=2, column=2).value == 37
    assert any(str(r) .startswith("B1:") for r in ws.merged_cells.ranges)
    df = pd.read_csv(DATA / "golden" / "rd_data.csv")
    want = df[(df["codec"] == "vvenc") & (df["sequence"] == "seq_b") & (df["qp"] == 37)]["kbps"].iloc[0]
    assert ws.cell(row=5, column=2).value == pytest.approx(want)
    assert ws.cell(row=5, column=2).number_format == "0.000"


def test_all_metrics_missing_and_anchor_missing(tmp_path):
    run = make_run(tmp_path / "run", sequences=["only"],
                   codecs={"s2d": ("generative", (22, 32, 42, 52), 1.3, 0.025, 1.5, 0.6, 0.15)},
                   metrics=("dists", "lpips"), not_computed={"dists": "no weights", "lpips": "no weights"})
    paths = build_report(run, formats=("md", "json", "png"), out_dir=tmp_path / "rep")
    md = paths["md"].read_text()
    assert "anchor 'vvenc' has no successful records" in md
    assert "DISTS, LPIPS not plotted: not computed" in md and "DISTS, LPIPS not computed: no weights." in md
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


def test_pooled_curves_get_their_own_table1_column():
    """Aggregate RD points over all sequences (e.g. pooled FVD) get a BD-rate on the curves only."""
    run = DATA / "run"
    pooled = {"fvd": {"vvenc": ([10.0, 20.0, 40.0, 80.0], [900.0, 700.0, 500.0, 300.0]),
                      "s2d": ([5.0, 10.0, 20.0, 40.0], [900.0, 700.0, 500.0, 300.0])}}
    model = build_model(results_table(run), load_run(run), run_dir=run, pooled=pooled)
    groups, head, rows = tables.table1_both(model, ["dists", "lpips", "fvd"])
    assert groups[-1] == ("Rate-FVD", 1) and head[-1] == "Rate-FVD (pooled over sequences)"
    by_codec = {r[0]: r for r in rows}
    assert by_codec["s2d"][-1] == "-50.00"        # same quality at half the rate
    assert by_codec["keyframe-repeat"][-1] == "n/a"  # no pooled curve for it
    assert tables.summary_json(model)["pooled"]["s2d:fvd"]["value"] == pytest.approx(-50.0)


def test_demo_caveat_counts_the_training_a_fine_tuned_checkpoint_started_from():
    from reports.document import _model_caveats

    prov = {"model_id": "s2d-demo", "image_size": 128,
            "training": {"step": 3000, "wall_seconds": 3600.0, "perceptual": "pixel-pyramid-l1",
                         "init": {"path": "old.pt", "sha256": "ab", "step": 5000, "wall_seconds": 7200.0}}}
    (line,) = _model_caveats("s2d", prov)
    assert "3000 fine-tuning steps from a checkpoint of 5000 steps" in line and "3.0 h of training" in line
    del prov["training"]["init"]
    (line,) = _model_caveats("s2d", prov)
    assert "3000 training steps" in line and "1.0 h of training" in line
