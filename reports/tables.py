"""Tables of a report: RD data, per-sequence BD-rates, the paper's Table 1 summary.

Tables are pandas DataFrames addressed by column name; emitters turn them
into CSV, xlsx, Markdown, LaTeX and JSON. A BD-rate cell that has no value
shows its status and reason, never 0 or NaN.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import pandas as pd

from gfvc import __version__
from reports import bdrate as bd
from reports.model import ReportModel, metric_label, recorded_by
from reports.vertex_model import frame as vertex_frame
from reports.vertex_model import summary_json as vertex_json

NOT_COMPUTED = "n/c"  # short mark in RD tables; the notes list the reason
# Table 1 cell of a metric without values; the reason (often a long weights hint) is stated once,
# at the top of every document and in the JSON/CSV outputs.
NOT_COMPUTED_CELL = "n/a (not computed: see Metrics not computed)"
AGG_SHORT = {"mean-of-sequences": "mean of seq.", "average-curve": "avg. curve"}


def _num(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


# ----------------------------------------------------------------------- frames
def rd_frame(model: ReportModel) -> pd.DataFrame:
    """One row per codec, sequence and rate point: kbps and every metric (+ its status)."""
    df = model.df
    base = [c for c in ("codec", "family", "sequence", "qp", "rate_point", "frames", "fps", "bits", "kbps")
            if c in df.columns]
    cols = list(base)
    for m in model.metrics:
        cols.append(m)
        if f"{m}_status" in df.columns:
            cols.append(f"{m}_status")
    out = df[cols].copy()
    order = {c: i for i, c in enumerate(model.codecs)}
    out["_o"] = out["codec"].map(order)
    out = out.sort_values(["_o", "sequence", "qp"], ascending=[True, True, False], kind="stable")
    return out.drop(columns="_o").reset_index(drop=True)


def bd_sequence_frame(model: ReportModel) -> pd.DataFrame:
    """One row per test codec, metric and sequence with the typed outcome."""
    rows = []
    for (test, m), pair in model.pairs.items():
        for seq, r in pair.per_sequence.items():
            rows.append({
                "anchor": model.anchor, "codec": test, "metric": m, "sequence": seq, "method": r.method,
                "status": r.status, "bd_rate_pct": r.value, "overlap": round(r.overlap, 6),
                "quality_low": r.interval[0] if r.interval else None,
                "quality_high": r.interval[1] if r.interval else None,
                "reason": r.reason,
            })
    return pd.DataFrame(rows, columns=["anchor", "codec", "metric", "sequence", "method", "status",
                                       "bd_rate_pct", "overlap", "quality_low", "quality_high", "reason"])


def summary_frame(model: ReportModel) -> pd.DataFrame:
    """Long-form summary: one row per test codec and metric, both aggregations."""
    rows = []
    for (test, m), pair in model.pairs.items():
        row: dict[str, Any] = {"anchor": model.anchor, "codec": test, "metric": m, "method": model.method,
                               "aggregation": model.aggregation}
        p = pair.primary(model.aggregation)
        row.update(bd_rate_pct=p.value, status=p.status, n_ok=p.n_ok, n_total=p.n_total, reason=p.reason)
        row.update(mean_of_sequences_pct=pair.mean.value, mean_of_sequences_status=pair.mean.status,
                   average_curve_pct=pair.curve.value, average_curve_status=pair.curve.status,
                   ci_low=pair.mean.ci[0] if pair.mean.ci else None,
                   ci_high=pair.mean.ci[1] if pair.mean.ci else None)
        rows.append(row)
    return pd.DataFrame(rows)


def table1(model: ReportModel, metrics: Sequence[str] | None = None, aggregation: str | None = None,
           digits: int = 2) -> tuple[list[str], list[list[str]]]:
    """The paper's Table 1 layout: rows Rate-<METRIC>, one column per test codec (text cells)."""
    aggregation = aggregation or model.aggregation
    metrics = [m for m in (metrics if metrics is not None else model.bd_metrics)]
    header = ["BD-rate vs " + model.anchor + " (%)"] + list(model.tests)
    rows = []
    for m in metrics:
        row = [f"Rate-{metric_label(m)}"]
        for t in model.tests:
            pair = model.pairs.get((t, m))
            if pair is None:
                note = model.notes.get(m)
                row.append(NOT_COMPUTED_CELL if note else "n/a")
                continue
            agg = pair.primary(aggregation)
            text = agg.cell(digits)
            if agg.ci and agg.value is not None and aggregation == "mean-of-sequences":
                text += f" [{agg.ci[0]:.{digits}f}, {agg.ci[1]:.{digits}f}]"
            if agg.value is None and m in model.notes and model.notes[m].status == "not_computed":
                text = NOT_COMPUTED_CELL
            row.append(text)
        rows.append(row)
    return header, rows


def short_cell(r: Any, digits: int = 2) -> str:
    """Compact BD-rate cell: the value (``*`` when partial) or ``n/a (status)``; reasons are listed once
    under "Flagged BD-rate outcomes", not in every cell."""
    if r is None:
        return "n/a"
    if getattr(r, "value", None) is not None:
        return f"{r.value:.{digits}f}" + ("" if r.ok else "*")
    return f"n/a ({str(r.status).replace('_', '-')})"


def table1_both(model: ReportModel, metrics: Sequence[str], digits: int = 2
                ) -> tuple[list[tuple[str, int]], list[str], list[list[str]]]:
    """Table 1 with both aggregations: one row per test codec; per metric a column pair (the
    condition's aggregation first, then the other: mean of the per-sequence BD-rates, BD-rate of
    the average curve). Returns (groups [(metric label, columns spanned)], flat header, rows); the
    groups give the HTML two-row header, the flat header suits Markdown, LaTeX and text."""
    aggs = [model.aggregation] + [a for a in ("mean-of-sequences", "average-curve") if a != model.aggregation]
    groups: list[tuple[str, int]] = []
    header = ["Codec"]
    for m in metrics:
        groups.append((f"Rate-{metric_label(m)}", len(aggs)))
        header += [f"Rate-{metric_label(m)} ({AGG_SHORT[a]})" for a in aggs]
    rows = []
    for t in model.tests:
        row = [t]
        for m in metrics:
            pair = model.pairs.get((t, m))
            for a in aggs:
                if pair is None:
                    note = model.notes.get(m)
                    row.append("n/c" if note and note.status == "not_computed" else
                               "n/r" if m in model.metrics and t not in recorded_by(model.df, m) else "n/a")
                else:
                    row.append(short_cell(pair.primary(a), digits))
        rows.append(row)
    for m in model.pooled:  # aggregate curves computed over all sequences at once (e.g. pooled FVD)
        if m not in metrics and m.split(":")[0] not in metrics:
            continue
        groups.append((f"Rate-{metric_label(m)}", 1))
        header.append(f"Rate-{metric_label(m)} (pooled over sequences)")
        for row, t in zip(rows, model.tests, strict=True):
            row.append(short_cell(model.pooled_pairs.get((t, m)), digits))
    return groups, header, rows


def sub_labels(header: Sequence[str]) -> list[str]:
    """The parenthesised part of each flat Table-1 column name (second header row in HTML)."""
    out = []
    for h in header[1:]:
        i = h.rfind(" (")
        out.append(h[i + 2:-1] if i >= 0 and h.endswith(")") else "")
    return out


def sequence_table(model: ReportModel, metric: str, digits: int = 2) -> tuple[list[str], list[list[str]]]:
    """Per-sequence BD-rates of every test codec for one metric, with the mean row."""
    header = ["Sequence"] + list(model.tests)
    rows = []
    for s in model.sequences:
        row = [s]
        for t in model.tests:
            r = model.pairs[(t, metric)].per_sequence.get(s) if (t, metric) in model.pairs else None
            row.append(short_cell(r, digits))
        rows.append(row)
    for label, attr in (("Mean of sequences", "mean"), ("Average RD curve", "curve")):
        row = [label]
        for t in model.tests:
            pair = model.pairs.get((t, metric))
            row.append(short_cell(getattr(pair, attr), digits) if pair else "n/a")
        rows.append(row)
    return header, rows


def rd_text_table(model: ReportModel, codec: str) -> tuple[list[str], list[list[str]]]:
    """RD points of one codec as text, not-computed values marked ``n/c``."""
    df = rd_frame(model)
    sub = df[df["codec"] == codec]
    header = ["Sequence", "QP", "kbps"] + [metric_label(m) for m in model.metrics]
    rows = []
    for _, r in sub.iterrows():
        cells = [str(r["sequence"]), str(int(r["qp"])) if _num(r.get("qp")) is not None else "",
                 f"{float(r['kbps']):.3f}"]
        for m in model.metrics:
            v = _num(r[m])
            cells.append(NOT_COMPUTED if v is None else f"{v:.4f}")
        rows.append(cells)
    return header, rows


# --------------------------------------------------------------------- emitters
def text_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """A plain-text table for the terminal: first column left-aligned, the others right-aligned."""
    widths = [max([len(str(h))] + [len(str(r[i])) for r in rows]) for i, h in enumerate(header)]

    def line(cells: Sequence[Any]) -> str:
        return "  ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w)
                         for i, (c, w) in enumerate(zip(cells, widths, strict=False))).rstrip()

    head = line(header)
    return [head, "-" * len(head)] + [line(r) for r in rows]


def md_table(header: Sequence[str], rows: Sequence[Sequence[str]], numeric: bool = True) -> str:
    """A GitHub-flavoured Markdown table (pipes in cells escaped); numeric columns right-aligned."""
    def esc(s: Any) -> str:
        return str(s).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(esc(h) for h in header) + " |",
             "|" + "|".join(["---"] + ["---:" if numeric else "---"] * (len(header) - 1)) + "|"]
    lines += ["| " + " | ".join(esc(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


_TEX_ESC = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
            "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def tex_escape(s: Any) -> str:
    return "".join(_TEX_ESC.get(ch, ch) for ch in str(s))


def tex_table(header: Sequence[str], rows: Sequence[Sequence[str]], caption: str, label: str) -> str:
    """A booktabs LaTeX table ready to paste into a contribution document."""
    spec = "l" + "r" * (len(header) - 1)
    out = [r"\begin{table}[htbp]", r"\centering", rf"\caption{{{tex_escape(caption)}}}",
           rf"\label{{{label}}}", rf"\begin{{tabular}}{{{spec}}}", r"\toprule",
           " & ".join(tex_escape(h) for h in header) + r" \\", r"\midrule"]
    out += [" & ".join(tex_escape(c) for c in row) + r" \\" for row in rows]
    out += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(out)


def ctc_sheet_rows(model: ReportModel) -> tuple[list[str], list[int | None], list[str], list[list[Any]]]:
    """JVET CTC anchor-spreadsheet layout: one row per sequence, codecs side by side, per codec and QP
    the kbps and each metric the codec records (with its per-plane values, e.g. Y/U/V PSNR, when the
    records carry them). Returns (codec per column, QP per column, field label per column, rows);
    the first column is the sequence."""
    df = model.df
    details = model.details
    codec_row: list[str] = ["Codec"]
    qp_row: list[int | None] = [None]
    field_row: list[str] = ["Sequence"]
    layout: list[tuple[str, Any, str]] = []
    for c in model.codecs:
        fields = ["kbps"]
        for m in model.metrics:
            if not model.computed(m) or c not in recorded_by(df, m):
                continue
            if details is not None:
                dc = details[details["codec"] == c]
                fields += [col for col in details.columns if col.startswith(m + ".") and dc[col].notna().any()]
            fields.append(m)
        qps = sorted({int(q) for q in df.loc[df["codec"] == c, "qp"].dropna()})
        for q in qps:
            for f in fields:
                codec_row.append(c)
                qp_row.append(q)
                field_row.append("kbps" if f == "kbps" else metric_label(f) if "." not in f
                                 else f"{f.split('.')[-1].upper()}-PSNR" if f.startswith("psnr") else metric_label(f))
                layout.append((c, q, f))
    rows = []
    for seq in model.sequences:
        row: list[Any] = [seq]
        sub = df[df["sequence"] == seq]
        dsub = details[details["sequence"] == seq] if details is not None else None
        for c, q, f in layout:
            src = dsub if "." in f else sub
            hit = src[(src["codec"] == c) & (src["qp"] == q)] if src is not None else None
            row.append(_num(hit[f].iloc[0]) if hit is not None and len(hit) else None)
        rows.append(row)
    return codec_row, qp_row, field_row, rows


# Number formats by column name (Excel format codes); first match wins.
_FORMATS: tuple[tuple[str, str], ...] = (
    ("kbps", "0.000"), ("bits", "0"), ("qp", "0"), ("frames", "0"), ("fps", "0.000"),
    ("pck", "0.0%"), ("_px", "0.00"), ("ms", "0.00"), ("psnr", "0.00"), ("ssim", "0.0000"),
    ("dists", "0.0000"), ("lpips", "0.0000"), ("fvd", "0.00"), ("bd_rate", "0.00"), ("pct", "0.00"),
    ("ci_", "0.00"), ("overlap", "0.000"), ("quality", "0.0000"), ("head_s", "0.00000"),
)


def _number_format(name: str) -> str | None:
    n = str(name).lower()
    for key, fmt in _FORMATS:
        if key in n:
            return fmt
    return None


def _format_sheet(ws: Any, header_rows: int = 1, freeze_col: int = 1) -> None:
    """Column widths from the content, frozen header rows (and first column), filters, number formats."""
    from openpyxl.utils import get_column_letter

    widths: dict[int, int] = {}
    for row in ws.iter_rows():
        for cell in row:
            if cell.value is None:
                continue
            text = f"{cell.value:.4f}" if isinstance(cell.value, float) else str(cell.value)
            widths[cell.column] = max(widths.get(cell.column, 0), min(len(text), 60))
    for col, wd in widths.items():
        ws.column_dimensions[get_column_letter(col)].width = max(8, wd + 2)
    last = ws.max_row
    names = [c.value for c in ws[header_rows]]
    for ci, name in enumerate(names, start=1):
        fmt = _number_format(name or "")
        if not fmt:
            continue
        for r in range(header_rows + 1, last + 1):
            cell = ws.cell(row=r, column=ci)
            if isinstance(cell.value, (int, float)) and not isinstance(cell.value, bool):
                cell.number_format = fmt
    ws.freeze_panes = ws.cell(row=header_rows + 1, column=freeze_col + 1)
    if ws.max_column >= 1 and last > header_rows:
        ws.auto_filter.ref = f"A{header_rows}:{get_column_letter(ws.max_column)}{last}"
    from openpyxl.styles import Font

    for cell in ws[header_rows]:
        cell.font = Font(bold=True)


def _write_ctc_sheet(model: ReportModel, wb: Any) -> None:
    from openpyxl.styles import Alignment, Font
    from openpyxl.utils import get_column_letter

    codec_row, qp_row, field_row, rows = ctc_sheet_rows(model)
    ws = wb.create_sheet("ctc", 0)
    ws.append(codec_row)
    ws.append(["QP"] + [q for q in qp_row[1:]])
    ws.append(field_row)
    for r in rows:
        ws.append(r)
    bold, centre = Font(bold=True), Alignment(horizontal="center")
    # merge the codec cells and the QP cells over their columns (the spreadsheet's block layout)
    for row_idx, keys in ((1, codec_row[1:]), (2, list(zip(codec_row[1:], qp_row[1:], strict=True)))):
        start = 0
        for i in range(1, len(keys) + 1):
            if i == len(keys) or keys[i] != keys[start]:
                if i - 1 > start:
                    ws.merge_cells(start_row=row_idx, start_column=start + 2, end_row=row_idx, end_column=i + 1)
                cell = ws.cell(row=row_idx, column=start + 2)
                cell.alignment, cell.font = centre, bold
                start = i
    for ci, f in enumerate(field_row[1:], start=2):
        fmt = _number_format("kbps" if f == "kbps" else f)
        for ri in range(4, 4 + len(rows)):
            cell = ws.cell(row=ri, column=ci)
            if isinstance(cell.value, (int, float)):
                cell.number_format = fmt or "0.0000"
        ws.column_dimensions[get_column_letter(ci)].width = max(9, len(str(f)) + 2)
    ws.column_dimensions["A"].width = max([10] + [len(str(r[0])) + 2 for r in rows])
    for cell in ws[3]:
        cell.font = bold
    ws.freeze_panes = "B4"
    if rows:
        ws.auto_filter.ref = f"A3:{get_column_letter(len(field_row))}{3 + len(rows)}"


def write_xlsx(model: ReportModel, path: Any) -> None:
    """Workbook: ``ctc`` (JVET anchor-spreadsheet layout), ``summary`` (Table 1, both aggregations),
    ``rd`` (one row per sequence and QP), ``bdrate`` (per sequence), ``vertices`` (when measured),
    ``notes``. Every sheet has number formats, column widths, a frozen header and filters."""
    from openpyxl import load_workbook

    notes = pd.DataFrame([{"metric": n.metric, "status": n.status, "reason": n.reason,
                           "missing": n.missing, "total": n.total} for n in model.notes.values()],
                         columns=["metric", "status", "reason", "missing", "total"])
    with pd.ExcelWriter(path, engine="openpyxl") as xw:
        summary_frame(model).to_excel(xw, sheet_name="summary", index=False)
        rd_frame(model).to_excel(xw, sheet_name="rd", index=False)
        bd_sequence_frame(model).to_excel(xw, sheet_name="bdrate", index=False)
        if model.vertex is not None and model.vertex.measured:
            vertex_frame(model.vertex).to_excel(xw, sheet_name="vertices", index=False)
        notes.to_excel(xw, sheet_name="notes", index=False)
    wb = load_workbook(path)
    for ws in wb.worksheets:
        _format_sheet(ws, 1, 1 if ws.title != "rd" else 3)
    _write_ctc_sheet(model, wb)
    wb.save(path)


def summary_json(model: ReportModel) -> dict[str, Any]:
    """Machine-readable summary for CI (the regression gate reads ``summary``)."""
    summary: dict[str, dict[str, Any]] = {}
    for (test, m), pair in model.pairs.items():
        summary.setdefault(test, {})[m] = {
            "lower_is_better": pair.lower_is_better,
            "mean_of_sequences": pair.mean.to_dict(with_sequences=False),
            "average_curve": pair.curve.to_dict(with_sequences=False),
            "value": pair.primary(model.aggregation).value,
            "status": pair.primary(model.aggregation).status,
            "per_sequence": {s: r.to_dict() for s, r in pair.per_sequence.items()},
        }
    for test in model.tests:  # metrics without values: explicit entries, never silently absent
        for m in model.bd_metrics:
            if (test, m) not in model.pairs:
                note = model.notes.get(m)
                summary.setdefault(test, {})[m] = {"value": None, "status": "not_computed",
                                                   "reason": note.reason if note else "not in the records"}
    return {
        "schema": 1,
        "generated_by": f"gfvc {__version__}",
        "condition": model.condition_name,
        "condition_version": model.condition.get("version"),
        "condition_fingerprint": model.fingerprint,
        "anchor": model.anchor,
        "anchor_provenance": (model.run.get("codecs") or {}).get(model.anchor),
        "anchor_note": model.anchor_note,
        "tests": model.tests,
        "sequences": model.sequences,
        "method": model.method,
        "aggregation": model.aggregation,
        "metrics": model.bd_metrics,
        "not_computed": {m: {"status": n.status, "reason": n.reason, "missing": n.missing, "total": n.total}
                         for m, n in model.notes.items()},
        "summary": summary,
        **_optional_json(model),
    }


def _optional_json(model: ReportModel) -> dict[str, Any]:
    """Sections present only when the run has them (vertex metrics, pooled curves, metrics without polarity)."""
    out: dict[str, Any] = {}
    if model.completeness is not None and not model.completeness.complete:
        out["incomplete"] = model.completeness.to_dict()
    if model.vertex is not None:
        out["vertices"] = vertex_json(model.vertex)
    if model.pooled_pairs:
        out["pooled"] = {f"{t}:{m}": r.to_dict() for (t, m), r in model.pooled_pairs.items()}
    if model.skipped_bd:
        out["bd_skipped"] = dict(model.skipped_bd)
    if model.variant_base:
        out["variants"] = variants_json(model)
    return out


def stage_text(model: ReportModel, codec: str) -> str:
    st = model.stages.get(codec) or {}
    parts = [str(st.get("key_frame_policy_text") or ""),
             f"key frames by {st['key_frame_coder']}" if st.get("key_frame_coder") else "",
             f"features by {st['feature_coder']}" if st.get("feature_coder") else ""]
    return "; ".join(p for p in parts if p)


def variant_table(model: ReportModel, metrics: Sequence[str], digits: int = 2) -> tuple[list[str], list[list[str]]]:
    """Stage variants against their base codec: one row per variant, per metric "mean of seq. / avg. curve"."""
    header = ["Variant", "Base", "Stages of the variant"] + [f"Rate-{metric_label(m)} (mean / curve)" for m in metrics]
    rows = []
    for v, base in model.variant_base.items():
        row = [v, base, stage_text(model, v)]
        for m in metrics:
            pair = model.variant_pairs.get((v, m))
            row.append("n/a" if pair is None else f"{short_cell(pair.mean, digits)} / {short_cell(pair.curve, digits)}")
        rows.append(row)
    return header, rows


def variants_json(model: ReportModel) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for v, base in model.variant_base.items():
        out[v] = {"base": base, "stages": model.stages.get(v), "base_stages": model.stages.get(base),
                  "bd_rate_vs_base": {m: {"mean_of_sequences": p.mean.to_dict(with_sequences=False),
                                          "average_curve": p.curve.to_dict(with_sequences=False)}
                                      for (vv, m), p in model.variant_pairs.items() if vv == v}}
    return out


def flagged(model: ReportModel) -> list[str]:
    """One line per BD-rate outcome that is not ok (for CLI output and documents)."""
    out = []
    for (test, m), pair in model.pairs.items():
        for s, r in pair.per_sequence.items():
            if not r.ok:
                out.append(f"{test} vs {model.anchor}, {m}, {s}: {r.status}: {r.reason}")
    return out


def bd_status_counts(model: ReportModel) -> dict[str, int]:
    counts = {s: 0 for s in bd.STATUSES}
    for pair in model.pairs.values():
        for r in pair.per_sequence.values():
            counts[r.status] = counts.get(r.status, 0) + 1
    return counts
