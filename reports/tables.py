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

from reports import bdrate as bd
from reports.model import ReportModel, metric_label

NOT_COMPUTED = "n/c"  # short mark in RD tables; the notes list the reason
# Table 1 cell of a metric without values; the reason (often a long weights hint) is stated once,
# in the "Metrics not computed" list of every document and in the JSON/CSV outputs.
NOT_COMPUTED_CELL = "n/a (not computed: see Metrics not computed)"


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


def sequence_table(model: ReportModel, metric: str, digits: int = 2) -> tuple[list[str], list[list[str]]]:
    """Per-sequence BD-rates of every test codec for one metric, with the mean row."""
    header = ["Sequence"] + list(model.tests)
    rows = []
    for s in model.sequences:
        row = [s]
        for t in model.tests:
            r = model.pairs[(t, metric)].per_sequence.get(s) if (t, metric) in model.pairs else None
            row.append(r.cell(digits) if r else "n/a")
        rows.append(row)
    for label, attr in (("Mean of sequences", "mean"), ("Average RD curve", "curve")):
        row = [label]
        for t in model.tests:
            pair = model.pairs.get((t, metric))
            row.append(getattr(pair, attr).cell(digits) if pair else "n/a")
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


def write_xlsx(model: ReportModel, path: Any) -> None:
    """Workbook with sheets rd (one row per sequence and QP), bdrate, summary, notes."""
    notes = pd.DataFrame([{"metric": n.metric, "status": n.status, "reason": n.reason,
                           "missing": n.missing, "total": n.total} for n in model.notes.values()],
                         columns=["metric", "status", "reason", "missing", "total"])
    with pd.ExcelWriter(path, engine="openpyxl") as xw:
        rd_frame(model).to_excel(xw, sheet_name="rd", index=False)
        bd_sequence_frame(model).to_excel(xw, sheet_name="bdrate", index=False)
        summary_frame(model).to_excel(xw, sheet_name="summary", index=False)
        notes.to_excel(xw, sheet_name="notes", index=False)


def summary_json(model: ReportModel) -> dict[str, Any]:
    """Machine-readable summary for CI (the regression gate reads ``summary``)."""
    from gfvc import __version__

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
    }


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
