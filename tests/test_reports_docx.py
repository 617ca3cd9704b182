"""report.docx: the Word contribution document, read back with python-docx."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import docx
import pytest

from reports.synthetic import CODECS, CONDITION, make_run
from suite.cli.main import main

DATA = Path(__file__).parent / "data" / "reports"
META = """\
document: JVET-AN0999
meeting: 40th Meeting, by teleconference
title: "AhG16: GFVC CTC results of a synthetic run"
contact: [A. Author (a@example.org), B. Author]
source: Example Lab
abstract: This contribution reports synthetic numbers.
"""


@pytest.fixture(scope="module")
def golden_docx(tmp_path_factory):
    """The committed synthetic run (vertex metrics, FVD not computed, no stills) with a title-block file."""
    tmp = tmp_path_factory.mktemp("docx")
    run = tmp / "run"
    shutil.copytree(DATA / "run", run)
    meta = tmp / "meta.yaml"
    meta.write_text(META)
    assert main(["report", str(run), "--format", "docx", "--format", "json", "--docx-meta", str(meta)]) == 0
    return run, docx.Document(str(run / "report" / "report.docx"))


def _texts(table) -> list[list[str]]:
    return [[c.text for c in row.cells] for row in table.rows]


def _cell(entry: dict) -> str:
    """A BD-rate cell as every emitter writes it (two decimals, * when partial, n/a (status) without value)."""
    if entry.get("value") is not None:
        return f"{entry['value']:.2f}" + ("" if entry["status"] == "ok" else "*")
    return f"n/a ({str(entry['status']).replace('_', '-')})"


def test_title_block_from_the_yaml(golden_docx):
    _, d = golden_docx
    head = _texts(d.tables[0])
    assert head[0][1] == "Document: JVET-AN0999" and head[1][0] == "40th Meeting, by teleconference"
    block = {r[0]: r[1] for r in _texts(d.tables[1])}
    assert block["Title:"] == "AhG16: GFVC CTC results of a synthetic run"
    assert block["Source:"] == "Example Lab" and block["Status:"] == "Input document to JVET"
    assert block["Author(s) or\nContact(s):"] == "A. Author (a@example.org); B. Author"
    paras = [p.text for p in d.paragraphs]
    assert "This contribution reports synthetic numbers." in paras
    assert d.core_properties.title == "AhG16: GFVC CTC results of a synthetic run"


def test_table1_cells_equal_the_json_summary(golden_docx):
    run, d = golden_docx
    summary = json.loads((run / "report" / "summary.json").read_text())
    t1 = next(t for t in d.tables if t.cell(0, 1).text == "Rate-DISTS")
    rows = _texts(t1)
    assert rows[1][1:3] == ["mean of seq.", "avg. curve"]
    groups = [rows[0][j] for j in range(1, len(rows[0]))]
    assert groups[:2] == ["Rate-DISTS", "Rate-DISTS"] and "Rate-FVD" in groups  # merged group header
    assert [r[0] for r in rows[2:]] == summary["tests"]
    checked = 0
    for r in rows[2:]:
        codec = r[0]
        for j in range(1, len(r), 2):
            metric = rows[0][j].removeprefix("Rate-").lower()
            e = summary["summary"][codec][metric]
            if e.get("status") == "not_computed" and "mean_of_sequences" not in e:
                assert r[j] == r[j + 1] == "n/c", (codec, metric)
                continue
            assert r[j] == _cell(e["mean_of_sequences"]), (codec, metric)
            assert r[j + 1] == _cell(e["average_curve"]), (codec, metric)
            checked += 2
    assert checked == 8  # 2 test codecs x DISTS, LPIPS x 2 aggregations; FVD is n/c
    assert any("negative values are bit-rate savings" in p.text for p in d.paragraphs)
    # right-aligned numbers, like the HTML table
    assert t1.cell(2, 1).paragraphs[0].alignment == docx.enum.text.WD_ALIGN_PARAGRAPH.RIGHT


def test_per_sequence_tables(golden_docx):
    run, d = golden_docx
    summary = json.loads((run / "report" / "summary.json").read_text())
    seq_tables = [t for t in d.tables if t.cell(0, 0).text == "Sequence" and t.cell(0, 1).text == "keyframe-repeat"]
    metrics = [m for m in summary["metrics"] if m not in summary["not_computed"]
               or summary["not_computed"][m]["status"] != "not_computed"]
    assert len(seq_tables) == len(metrics) >= 2
    caps = [p.text for p in d.paragraphs if p.text.startswith("Rate-") and "per sequence" in p.text]
    for cap, t in zip(caps, seq_tables, strict=True):
        metric = next(m for m in metrics if cap.startswith(f"Rate-{m.upper()},") or
                      cap.lower().startswith(f"rate-{m.replace('_', '-')},"))
        rows = _texts(t)
        for r in rows[1:]:
            for j, codec in enumerate(rows[0][1:], start=1):
                e = summary["summary"][codec][metric]
                want = (_cell(e["mean_of_sequences"]) if r[0] == "Mean of sequences" else
                        _cell(e["average_curve"]) if r[0] == "Average RD curve" else _cell(e["per_sequence"][r[0]]))
                assert r[j] == want, (metric, r[0], codec)


def test_figures_embedded_and_annex(golden_docx):
    run, d = golden_docx
    out = run / "report"
    # RD average (primary + reference), vertex curves, one Figure-6 picture per sequence with vertices
    pngs = ["rd_average.png", "rd_average_reference.png", "vertex_rd.png"] + \
        sorted(p.name for p in out.glob("vertices_*.png"))
    assert all((out / p).is_file() for p in pngs)
    assert len(d.inline_shapes) == len(pngs)
    paras = [p.text for p in d.paragraphs]
    line = next(p for p in paras if p.startswith("Figure 5 not drawn"))
    assert "keep no exact decoded frames" in line
    kv = {r[0]: r[1] for t in d.tables if t.cell(0, 0).text == "Field" for r in _texts(t)[1:]}
    run_json = json.loads((run / "run.json").read_text())
    assert kv["Condition fingerprint"] == run_json["condition_fingerprint"]
    assert kv["Git revision"] == run_json["provenance"]["git_revision"]
    sums = next(t for t in d.tables if t.cell(0, 2).text == "sha256")
    assert {r[0] for r in _texts(sums)[1:]} == {"vvenc", "keyframe-repeat", "s2d"}
    # the vertex section exists (the run has vertex metrics) and cross-references fit this layout
    assert "3 Vertex prediction" in paras and not any("Appendix D" in p for p in paras)


def test_placeholders_without_meta_and_figure5_pictures(tmp_path):
    cond = {**CONDITION, "width": 32, "height": 32, "frames": 6}
    run = make_run(tmp_path / "run", sequences=("seq_a", "seq_b"), condition=cond, stills=True,
                   codecs={k: v for k, v in CODECS.items() if k != "s2d"})
    assert main(["report", str(run), "--format", "docx"]) == 0
    d = docx.Document(str(run / "report" / "report.docx"))
    head = d.tables[0]
    ph = next(r for r in head.cell(0, 1).paragraphs[0].runs if r.text.startswith("[Document number"))
    assert ph.font.highlight_color is not None  # a highlighted placeholder the author must fill
    block = {r[0]: r[1] for r in _texts(d.tables[1])}
    assert block["Title:"].startswith("GFVC CTC results: synthetic") and block["Source:"].startswith("[Source")
    figs = [p.text for p in d.paragraphs if p.text.startswith("Figure 5 layout.")]
    assert [f.split(",")[0] for f in figs] == ["Figure 5 layout. seq_a", "Figure 5 layout. seq_b"]
    assert len(d.inline_shapes) == 2 + 2  # RD average (primary, reference) + one Figure 5 per sequence
    assert any(s.orientation == docx.enum.section.WD_ORIENT.LANDSCAPE for s in d.sections)


@pytest.mark.parametrize("text, what", [
    ("title: [1, 2\n", "not valid YAML"),
    ("- a\n- b\n", "expected a mapping"),
    ("titel: x\n", "unknown key titel"),
    ("abstract: {a: 1}\n", "expected text"),
])
def test_bad_docx_meta_is_one_line_exit_2(tmp_path, capsys, text, what):
    run = tmp_path / "run"
    shutil.copytree(DATA / "run", run)
    meta = tmp_path / "meta.yaml"
    meta.write_text(text)
    assert main(["report", str(run), "--docx-meta", str(meta)]) == 2
    err = capsys.readouterr().err.strip()
    assert what in err and len(err.splitlines()) == 1
    assert not (run / "report").exists()
    assert main(["report", str(run), "--docx-meta", str(tmp_path / "missing.yaml")]) == 2
    assert "not found" in capsys.readouterr().err
