"""The Word contribution document (report.docx) of a run.

JVET contributions are Word documents: a title block (document number,
title, source, contact, abstract), the test conditions, the results (Table 1
and per-sequence BD-rate tables as real Word tables, the RD figures, the
Figure-5 visual comparison, the vertex section where it applies) and the
software and provenance as an annex. Everything shown comes from the same
context as the HTML and Markdown reports (reports.document.context), so the
cells are the same strings, rounded the same way.

The title block comes from a small YAML file (``gfvc report --docx-meta
FILE``, keys in ``META_KEYS``); what it does not give is a highlighted
placeholder, never an invented value.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gfvc.errors import ConfigError
from gfvc.fileio import atomic_open, read_yaml_mapping
from reports.tables import sub_labels

# --docx-meta keys: (meaning, placeholder when absent). "title" defaults to the report's title.
META_KEYS: dict[str, str] = {
    "document": "[Document number, e.g. JVET-AN0123]",
    "meeting": "[Meeting: number, place and dates]",
    "title": "",
    "status": "Input document to JVET",
    "purpose": "Information",
    "contact": "[Author(s) or contact(s): name, e-mail]",
    "source": "[Source: organisation(s)]",
    "abstract": "[Abstract: what is proposed or reported, in a few sentences]",
}
DEFAULTS = ("status", "purpose")  # sensible defaults, not placeholders
# Cross-references of the shared caveat texts (written for the HTML/Markdown layout) in this document's layout.
XREF = {"Appendix D": "Annex C", "(section 2)": "(section 3)"}
SIGN = ("BD-rate in percent against {anchor}; negative values are bit-rate savings (the test codec needs fewer bits "
        "for the same quality), positive values are losses.")


def load_meta(path: Path | None) -> dict[str, str]:
    """The title-block values of a --docx-meta YAML file (ConfigError, one line, when unusable)."""
    if path is None:
        return {}
    data = read_yaml_mapping(Path(path), "--docx-meta file")
    unknown = sorted(str(k) for k in data if k not in META_KEYS)
    if unknown:
        raise ConfigError(f"{path}: unknown key{'s' if len(unknown) > 1 else ''} {', '.join(unknown)} "
                          f"(known: {', '.join(META_KEYS)})")
    out: dict[str, str] = {}
    for k, v in data.items():
        if isinstance(v, list) and k == "contact" and all(isinstance(x, str) for x in v):
            v = "; ".join(v)
        if not isinstance(v, (str, int, float)) or isinstance(v, bool):
            raise ConfigError(f"{path}: key {k!r}: expected text, got {type(v).__name__}")
        if str(v).strip():
            out[str(k)] = str(v).strip()
    return out


# ------------------------------------------------------------------------ helpers
def _set_cell(cell: Any, text: str, *, bold: bool = False, size: float = 8.0, align: str = "left",
              mono: bool = False) -> None:
    from docx.enum.text import WD_ALIGN_PARAGRAPH  # lazy: python-docx only when a .docx is written
    from docx.shared import Pt

    cell.text = ""
    p = cell.paragraphs[0]
    p.alignment = {"left": WD_ALIGN_PARAGRAPH.LEFT, "right": WD_ALIGN_PARAGRAPH.RIGHT,
                   "center": WD_ALIGN_PARAGRAPH.CENTER}[align]
    p.paragraph_format.space_after = Pt(0)
    p.paragraph_format.space_before = Pt(0)
    run = p.add_run(str(text))
    run.bold = bold
    run.font.size = Pt(size)
    if mono:
        run.font.name = "Courier New"


def _repeat_header(row: Any) -> None:
    """Mark a table row as header row (repeated on each page)."""
    from docx.oxml import OxmlElement  # lazy: python-docx
    from docx.oxml.ns import qn

    tr_pr = row._tr.get_or_add_trPr()
    el = OxmlElement("w:tblHeader")
    el.set(qn("w:val"), "true")
    tr_pr.append(el)


def _shade(cell: Any, fill: str) -> None:
    from docx.oxml import OxmlElement  # lazy: python-docx
    from docx.oxml.ns import qn

    shd = OxmlElement("w:shd")
    shd.set(qn("w:val"), "clear")
    shd.set(qn("w:color"), "auto")
    shd.set(qn("w:fill"), fill)
    cell._tc.get_or_add_tcPr().append(shd)


def _caption(doc: Any, text: str, body: str = "") -> None:
    """A caption paragraph: ``text`` in the caption style, then ``body`` (long explanations) not bold."""
    p = doc.add_paragraph(style="Caption")
    p.add_run(text)
    if body:
        r = p.add_run(" " + body)
        r.bold = False


def _table(doc: Any, header: Sequence[str], rows: Sequence[Sequence[Any]], *, caption: str = "",
           numeric: bool = True, size: float = 8.0, groups: Sequence[tuple[str, int]] | None = None,
           mono_last: bool = False, widths_cm: Sequence[float] | None = None) -> Any:
    """A real Word table (grid style, bold shaded header rows repeated on every page).

    ``groups`` [(label, span)] adds a first header row with merged cells over
    the columns after the first (Table 1's metric groups; ``header`` then
    holds the second-row labels).
    """
    if caption:
        _caption(doc, caption)
    extra = 1 if groups else 0
    t = doc.add_table(rows=len(rows) + 1 + extra, cols=len(header))
    t.style = "Table Grid"
    if groups:
        _set_cell(t.cell(0, 0), header[0], bold=True, size=size)
        col = 1
        for label, span in groups:
            cell = t.cell(0, col)
            if span > 1:
                cell = cell.merge(t.cell(0, col + span - 1))
            _set_cell(cell, label, bold=True, size=size, align="center")
            col += span
        t.cell(0, 0).merge(t.cell(1, 0))
        _set_cell(t.cell(0, 0), header[0], bold=True, size=size)
    for j, h in enumerate(header):
        if groups and j == 0:
            continue
        _set_cell(t.cell(extra, j), h, bold=True, size=size, align="center" if j else "left")
    for r in range(extra + 1):
        _repeat_header(t.rows[r])
        for cell in t.rows[r].cells:
            _shade(cell, "E8EAF6")
    for i, row in enumerate(rows):
        if len(row) > 4 and row[1] == "" and str(row[3]).startswith("not "):  # a codec without values: one cell
            _set_cell(t.cell(i + 1 + extra, 0), str(row[0]), size=size)
            merged = t.cell(i + 1 + extra, 1).merge(t.cell(i + 1 + extra, len(row) - 1))
            _set_cell(merged, str(row[3]), size=size)
            continue
        for j, v in enumerate(row):
            last = mono_last and j == len(row) - 1
            _set_cell(t.cell(i + 1 + extra, j), "" if v is None else str(v), size=size,
                      align="right" if numeric and j else "left", mono=last)
    if widths_cm:  # Word reads cell widths, LibreOffice the grid: set both
        from docx.shared import Cm  # lazy: python-docx

        t.autofit = False
        for j, wd in enumerate(widths_cm):
            t.columns[j].width = Cm(wd)
            for cell in t.columns[j].cells:
                cell.width = Cm(wd)
    doc.add_paragraph()
    return t


def _kv(doc: Any, rows: Sequence[tuple[str, str]], caption: str = "", size: float = 7.5) -> None:
    _table(doc, ["Field", "Value"], [list(r) for r in rows], caption=caption, numeric=False, size=size,
           mono_last=True, widths_cm=(4.6, 12.4))


def _picture(doc: Any, path: Path, caption: str, width_cm: float = 17.0, body: str = "") -> None:
    from docx.enum.text import WD_ALIGN_PARAGRAPH  # lazy: python-docx
    from docx.shared import Cm

    doc.add_picture(str(path), width=Cm(width_cm))
    doc.paragraphs[-1].alignment = WD_ALIGN_PARAGRAPH.CENTER
    _caption(doc, caption, body)


def _fit_width(path: Path, max_w_cm: float, max_h_cm: float) -> float:
    """The widest picture width (cm) that keeps ``path`` within max_w x max_h (its aspect ratio kept)."""
    from PIL import Image  # lazy: Pillow only when a picture is placed

    with Image.open(path) as im:
        w, h = im.size
    return min(max_w_cm, max_h_cm * w / h)


def _new_section(doc: Any, landscape: bool) -> None:
    """Start a new page in the other orientation (A4, 2 cm margins)."""
    from docx.enum.section import WD_ORIENT, WD_SECTION  # lazy: python-docx
    from docx.shared import Cm

    sec = doc.add_section(WD_SECTION.NEW_PAGE)
    sec.orientation = WD_ORIENT.LANDSCAPE if landscape else WD_ORIENT.PORTRAIT
    sec.page_width, sec.page_height = (Cm(29.7), Cm(21.0)) if landscape else (Cm(21.0), Cm(29.7))
    for side in ("left_margin", "right_margin", "top_margin", "bottom_margin"):
        setattr(sec, side, Cm(2.0))


def _para(doc: Any, text: str, *, size: float | None = None, italic: bool = False, bold_prefix: str = "") -> Any:
    from docx.shared import Pt  # lazy: python-docx

    p = doc.add_paragraph()
    if bold_prefix:
        r = p.add_run(bold_prefix)
        r.bold = True
        if size:
            r.font.size = Pt(size)
    r = p.add_run(text.replace("`", ""))
    r.italic = italic
    if size:
        r.font.size = Pt(size)
    return p


def _title_block(doc: Any, meta: dict[str, str], title: str) -> None:
    """JVET title block: team, meeting and document number, then a label/value table."""
    from docx.enum.text import WD_COLOR_INDEX  # lazy: python-docx
    from docx.shared import Pt

    def value_run(p: Any, key: str, default: str = "") -> None:
        text = meta.get(key) or default or META_KEYS[key]
        r = p.add_run(text)
        if key not in meta and not default and key not in DEFAULTS:
            r.font.highlight_color = WD_COLOR_INDEX.YELLOW  # a placeholder the author must fill
        r.font.size = Pt(10)

    head = doc.add_table(rows=2, cols=2)
    _set_cell(head.cell(0, 0), "Joint Video Experts Team (JVET)\nof ITU-T SG 16 WP 3 and ISO/IEC JTC 1/SC 29",
              bold=True, size=10)
    head.cell(0, 1).text = ""
    p = head.cell(0, 1).paragraphs[0]
    p.add_run("Document: ").bold = True
    value_run(p, "document")
    head.cell(1, 0).text = ""
    value_run(head.cell(1, 0).paragraphs[0], "meeting")
    _set_cell(head.cell(1, 1), "", size=10)
    doc.add_paragraph()
    rows = (("Title:", "title", title), ("Status:", "status", ""), ("Purpose:", "purpose", ""),
            ("Author(s) or\nContact(s):", "contact", ""), ("Source:", "source", ""))
    t = doc.add_table(rows=len(rows), cols=2)
    for i, (label, key, default) in enumerate(rows):
        _set_cell(t.cell(i, 0), label, bold=True, size=10)
        t.cell(i, 1).text = ""
        value_run(t.cell(i, 1).paragraphs[0], key, default)
    doc.add_paragraph()
    doc.add_heading("Abstract", level=1)
    p = doc.add_paragraph()
    text = meta.get("abstract") or META_KEYS["abstract"]
    r = p.add_run(text)
    if "abstract" not in meta:
        r.font.highlight_color = WD_COLOR_INDEX.YELLOW


def _conditions_rows(ctx: dict[str, Any], model: Any) -> list[tuple[str, str]]:
    c = model.condition
    a, g, m = c.get("anchor") or {}, c.get("generative") or {}, c.get("metrics") or {}
    seqs = "; ".join(f"{s['name']} ({s['frames']} frames, {s['fps']} fps)" for s in ctx["sequences"])
    rows = [("Condition", f"{ctx['condition_name']} v{ctx['condition_version']}"),
            ("Description", " ".join(str(c.get("description") or "").split())),
            ("Fingerprint (sha256)", ctx["fingerprint"]),
            ("Picture", f"{c.get('width')}x{c.get('height')}, {c.get('bit_depth', 8)} bit, {c.get('frames')} frames "
                        f"at {float(c.get('fps') or 0):.3f} fps"),
            ("Sequences", f"{ctx['n_sequences']}: {seqs}"),
            ("Anchor", f"{ctx['anchor']} ({a.get('encoder', '?')}), QP {', '.join(map(str, a.get('qps') or []))}, "
                       f"GOP {a.get('gop_size', '?')}, intra period {a.get('intra_period', '?')}"),
            ("Generative codecs", f"key frame coded by {g.get('key_frame_coder', '?')} at key-frame QP "
                                  f"{', '.join(map(str, g.get('key_frame_qps') or []))}; features: "
                                  f"{g.get('feature_coder', '?')}"),
            ("Test codecs", ", ".join(ctx["tests"]) or "(none)"),
            ("Metrics", f"{', '.join(m.get('names') or [])}; per-frame values aggregated by "
                        f"{m.get('frame_aggregation', 'mean')}"),
            ("BD-rate", f"method {ctx['method']}: {ctx['method_text']}; summary over sequences: "
                        f"{ctx['aggregation']} ({ctx['aggregation_text']})")]
    return rows


def _checksums(ctx: dict[str, Any]) -> list[list[str]]:
    """(codec, field, sha256) for every sha256 a codec's provenance records (binaries, checkpoints, weights)."""
    rows = []
    for c in ctx["codecs"]:
        for k, v in c["provenance"]:
            if "sha256" in k.lower() and v and v != "(none)":
                rows.append([c["name"], k, v])
    return rows


# ------------------------------------------------------------------------ the document
def write(path: Path, ctx: dict[str, Any], model: Any, *, figures: Sequence[dict[str, str]], fig5: dict[str, Any],
          out_dir: Path, meta: dict[str, str] | None = None) -> Path:
    """Write report.docx. ``figures``: the report's PNG figures (name, title, kind, png file name);
    ``fig5``: {"items": [{"caption", "png"}], "notes", "missing"}."""
    import docx  # lazy: python-docx loads only when a Word document is written
    from docx.enum.section import WD_ORIENT
    from docx.shared import Cm, Pt


    meta = dict(meta or {})
    doc = docx.Document()
    sec = doc.sections[0]
    sec.orientation = WD_ORIENT.PORTRAIT
    sec.page_width, sec.page_height = Cm(21.0), Cm(29.7)
    for side in ("left_margin", "right_margin", "top_margin", "bottom_margin"):
        setattr(sec, side, Cm(2.0))
    normal = doc.styles["Normal"]
    normal.font.name = "Times New Roman"
    normal.font.size = Pt(11)
    props = doc.core_properties
    props.title = meta.get("title") or ctx["title"]
    props.subject = f"GFVC CTC results, condition {ctx['condition_name']} v{ctx['condition_version']}"
    props.author = meta.get("contact") or ""
    props.comments = f"written by {ctx['generated_by']} (gfvc report); fingerprint {ctx['fingerprint']}"

    _title_block(doc, meta, ctx["title"])
    anchor = ctx["anchor"]
    if ctx["banner"]:
        doc.add_heading("Read first: what these numbers are not", level=2)
        for b in ctx["banner"]:
            for old, new in XREF.items():
                b = b.replace(old, new)
            doc.add_paragraph(b.replace("`", ""), style="List Bullet")

    doc.add_heading("1 Test conditions", level=1)
    _para(doc, f"Results of the GFVC common test conditions as run by {ctx['generated_by']} "
               f"(run created {ctx['created']} with suite {ctx['suite_version']}); every parameter is listed in "
               "Annex B, software and provenance in Annex A. The CTC spreadsheet of the same run is report.xlsx.")
    _kv(doc, _conditions_rows(ctx, model), caption="Test conditions", size=8.5)

    doc.add_heading("2 Results", level=1)
    _para(doc, SIGN.format(anchor=anchor) + " Per metric two columns: mean of seq. = "
               f"{ctx['agg_texts']['mean-of-sequences']}; avg. curve = {ctx['agg_texts']['average-curve']}. The "
               f"condition's choice ({ctx['aggregation']}) comes first. n/c = metric not computed; * = over part of "
               "the sequences; n/a (status) = no valid BD-rate (see the flagged outcomes). Values rounded to two "
               "decimals, as in every other output of the report.")
    groups, flat, rows = ctx["table1"]
    _table(doc, ["Codec"] + sub_labels(flat), rows, groups=groups,
           caption=f"Table 1. BD-rate (%) vs {anchor}, perceptual metrics of the CTC")
    if ctx["table_ref"]:
        g2, f2, r2 = ctx["table_ref"]
        _table(doc, ["Codec"] + sub_labels(f2), r2, groups=g2,
               caption=f"Table 2. BD-rate (%) vs {anchor}, reference metrics")
    if ctx.get("variants"):
        vh, vrows = ctx["variants"]
        _table(doc, vh, vrows, caption="Stage variants: BD-rate (%) of each variant vs its base codec (mean of "
                                       "sequences / averaged curve; negative = the variant saves bits)")
    for f in figures:
        if f["kind"] == "inline" and f.get("png"):
            _picture(doc, out_dir / f["png"], f["title"])
    for n in ctx["figures"].get("notes") or []:
        _para(doc, f"{n}.", size=9)

    doc.add_heading("2.1 Per-sequence BD-rates", level=2)
    if not ctx["seq_tables"]:
        _para(doc, "No metric with values to compute per-sequence BD-rates from.")
    for t in ctx["seq_tables"]:
        h, r = t["table"]
        _table(doc, h, r, size=7.0 if len(h) > 8 else 8.0,
               caption=f"Rate-{t['label']}, BD-rate (%) per sequence vs {anchor} (negative = bit-rate saving)")
    doc.add_heading("2.2 Flagged BD-rate outcomes", level=2)
    if ctx["flagged"]:
        for f in ctx["flagged"]:
            p = doc.add_paragraph(f, style="List Bullet")
            for r in p.runs:
                r.font.size = Pt(9)
    else:
        _para(doc, "None: every per-sequence BD-rate is ok.")

    items = fig5.get("items") or []
    if items:  # wide pictures: a landscape page each, so the tile labels stay readable on paper
        _new_section(doc, landscape=True)
    doc.add_heading("2.3 Visual comparison (Figure 5 layout)", level=2)
    if fig5.get("missing"):
        _para(doc, fig5["missing"])
    for k, it in enumerate(items):
        if k:
            doc.add_page_break()
        _picture(doc, out_dir / it["png"], f"Figure 5 layout. {it['short_caption']}",
                 width_cm=_fit_width(out_dir / it["png"], 25.7, 12.3))  # room for caption + details below
        _para(doc, it["details"], size=9)
    for n in fig5.get("notes") or []:
        _para(doc, f"Not shown: {n}", size=9)
    if items:
        _new_section(doc, landscape=False)

    vx = ctx.get("vertex")
    if vx:
        doc.add_heading("3 Vertex prediction", level=1)
        if vx.get("reference_label"):
            _para(doc, vx["reference_label"], bold_prefix="PROXY references. " if vx.get("proxy") else "")
        if vx.get("protocol_text"):
            _para(doc, vx["protocol_text"], size=9)
        h, r = vx["summary"]
        _table(doc, h, r, size=7.0, caption="Vertex error (px) and PCK (%) per codec and rate point, mean over "
                                            "sequences" + (" (against PROXY reference vertices)" if vx["proxy"]
                                                           else ""))
        for c, why in (vx.get("not_computed") or {}).items():
            _para(doc, f"{c}: vertex metrics not computed: {why}.", size=9)
        for f in figures:
            if f["kind"] == "vertex" and f.get("png"):
                _picture(doc, out_dir / f["png"], f["title"])
        if vx.get("bd"):
            h, r = vx["bd"]
            _table(doc, h, r, caption="Rate-vertex-error BD-rate (%)")
        if vx.get("bd_note"):
            _para(doc, vx["bd_note"], size=9)
        for f in figures:
            if f["kind"] == "fig6" and f.get("png"):
                _picture(doc, out_dir / f["png"], f"Figure 6 layout. {f['title']}.", width_cm=15.0)

    doc.add_page_break()
    doc.add_heading("Annex A Software and provenance", level=1)
    _table(doc, ["Codec", "Role", "Family", "Software / model"],
           [[c["name"], c["role"], c["family"], c["summary"]] for c in ctx["codecs"]], numeric=False,
           caption="A.1 Codecs and their software")
    sums = _checksums(ctx)
    if sums:
        _table(doc, ["Codec", "Item", "sha256"], sums, numeric=False, size=7.0, mono_last=True,
               widths_cm=(2.3, 5.2, 9.5),
               caption="A.2 Binaries, checkpoints and weights (sha256 as recorded in each codec's provenance)")
    git = next((v for k, v in ctx["run_provenance"] if k.endswith("git_revision")), "(not recorded)")
    _kv(doc, [("Run command", ctx["run_argv"]), ("Report command", ctx["report_cmd"]),
              ("Suite version", str(ctx["suite_version"])), ("Git revision", git),
              ("Condition fingerprint", ctx["fingerprint"]),
              ("Records", f"{ctx['n_records']}, digest of record keys (sha256) {ctx['records_digest']}")],
        caption="A.3 Commands and identity")
    _table(doc, ctx["sequence_header"], ctx["sequence_rows"], numeric=False, size=7.0,
           caption="A.4 Sequences (sha256 of the content)")
    if ctx["run_provenance"]:
        _kv(doc, ctx["run_provenance"], caption="A.5 Run environment (software versions)")
    for c in ctx["codecs"]:
        if c["provenance"]:
            _kv(doc, c["provenance"], caption=f"A.6 Provenance of {c['name']} ({c['role']})", size=7.0)
    doc.add_heading("Annex B Test condition parameters", level=1)
    _kv(doc, ctx["condition_params"], caption=f"Every parameter of the condition (fingerprint {ctx['fingerprint']})")
    if ctx["notes_full"]:
        doc.add_heading("Annex C Metrics not computed", level=1)
        for n in ctx["notes_full"]:
            p = doc.add_paragraph(f"{n['metric']} ({n['status']}, {n['missing']} of {n['total']} rate points): "
                                  f"{n['reason']}", style="List Bullet")
            for r in p.runs:
                r.font.size = Pt(9)
    with atomic_open(path, "wb") as fh:
        doc.save(fh)
    return path
