"""RD plots in the style of the Sparse2Dense paper's Figure 4.

Rate (kbps) on x, quality on y as 1-DISTS, 1-LPIPS and 5000-FVD (so higher
is better on every panel), one curve per codec averaged over sequences, every
point labelled with its QP (the key-frame QP for generative codecs), two
panels per row so the figure stays readable when pasted, plus per-sequence
grids. A metric with no computed value is skipped and the
caller gets a note (never plotted as zeros).
"""
from __future__ import annotations

import io
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from reports.model import PLOT_AXIS, PRIMARY_METRICS, ReportModel, curve, metric_label  # noqa: E402

MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">")
# One colour per codec, stable across every figure of a report (matplotlib's tab10 order).
COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
           "#17becf", "#393b79", "#637939")
_SAVE_META = {"svg": {"Date": None}, "png": {"Software": None}}


def _style() -> None:
    plt.rcParams["svg.hashsalt"] = "gfvc-report"  # deterministic SVG ids
    plt.rcParams["svg.fonttype"] = "none"          # text stays text: small, searchable


def plottable(model: ReportModel, metrics: Sequence[str]) -> tuple[list[str], list[str]]:
    """(metrics with at least one value, one short note for the skipped ones).

    The reason a metric was not computed is stated once, at the top of the
    report; plot notes only name what is missing.
    """
    keep, skipped = [], []
    for m in metrics:
        if m in model.metrics and model.df[m].astype(float).notna().any():
            keep.append(m)
        else:
            skipped.append(metric_label(m))
    notes = []
    if skipped:
        notes.append(f"{', '.join(skipped)} not plotted: not computed (why: see the note at the top of the report)")
    return keep, notes


def _qps(df: Any, codec: str, sequence: str) -> list[int | None]:
    """QPs of one codec's curve in the order of :func:`reports.model.curve` (lowest rate first)."""
    sub = df[(df["codec"] == codec) & (df["sequence"] == sequence)]
    if "qp" not in sub.columns or not sub["qp"].notna().all():
        return [None] * len(sub)
    return [int(q) for q in sub.sort_values("qp", ascending=False, kind="stable")["qp"]]


def _avg_curve(model: ReportModel, codec: str, metric: str, df: Any = None
               ) -> tuple[np.ndarray, np.ndarray, list[int | None]] | None:
    """Mean kbps and mean metric per rate point over the sequences with finite values (+ the QPs)."""
    df = model.df if df is None else df
    rates, quals, qps = [], [], None
    for s in model.sequences:
        r, q = curve(df, codec, s, metric)
        if not r or not all(math.isfinite(v) for v in q):
            continue
        rates.append(r)
        quals.append(q)
        qps = qps or _qps(df, codec, s)
    if not rates or len({len(r) for r in rates}) != 1:
        return None
    return np.mean(rates, axis=0), np.mean(quals, axis=0), qps or [None] * len(rates[0])


def _panel(ax: plt.Axes, model: ReportModel, metric: str, sequence: str | None, *, df: Any = None,
           codecs: Sequence[str] | None = None, axis: tuple[str, Any] | None = None, qp_labels: bool = True) -> None:
    """One RD panel: a curve per codec (averaged over sequences when ``sequence`` is None), QP-labelled points."""
    df = model.df if df is None else df
    label, fn = axis or PLOT_AXIS.get(metric, (metric_label(metric), lambda v: v))
    all_codecs = list(model.codecs)
    for codec in (codecs if codecs is not None else model.codecs):
        i = all_codecs.index(codec) if codec in all_codecs else len(all_codecs)
        if sequence is None:
            c = _avg_curve(model, codec, metric, df)
            if c is None:
                continue
            r, q, qps = c
        else:
            rr, qq = curve(df, codec, sequence, metric)
            ok = [j for j, v in enumerate(qq) if math.isfinite(v)]
            if not ok:
                continue
            all_qps = _qps(df, codec, sequence)
            r, q, qps = np.asarray(rr)[ok], np.asarray(qq)[ok], [all_qps[j] for j in ok]
        o = np.argsort(r)
        name = f"{codec} (anchor)" if codec == model.anchor else codec
        colour = COLOURS[i % len(COLOURS)]
        ys = fn(np.asarray(q)[o])
        ax.plot(np.asarray(r)[o], ys, marker=MARKERS[i % len(MARKERS)],
                linestyle="--" if codec == model.anchor else "-", label=name, linewidth=1.6, markersize=5,
                color=colour)
        if qp_labels:
            for x, y, qp in zip(np.asarray(r)[o], ys, [qps[j] for j in o], strict=True):
                if qp is not None:
                    ax.annotate(str(qp), (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7.5,
                                color=colour)
    ax.set_xlabel("Rate (kbps)")
    ax.set_ylabel(label)
    ax.grid(True, alpha=0.3)


LEGEND_INSIDE_MAX = 5  # curves per panel up to which each panel carries its own legend


def figure_average(model: ReportModel, metrics: Sequence[str], *, df: Any = None, codecs: Sequence[str] | None = None,
                   axes_spec: dict[str, tuple[str, Any]] | None = None, what: str = "") -> plt.Figure:
    """Figure 4 layout: one panel per metric (two per row, readable when pasted), averaged over sequences."""
    _style()
    n = len(metrics)
    cols = 1 if n == 1 else 2
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(6.4 * cols, 4.6 * rows), squeeze=False)
    for k, m in enumerate(metrics):
        ax = axes[k // cols][k % cols]
        spec = (axes_spec or {}).get(m)
        _panel(ax, model, m, None, df=df, codecs=codecs, axis=spec)
        ns = len(model.sequences)
        label = spec[0] if spec else PLOT_AXIS.get(m, (metric_label(m),))[0]
        ax.set_title(f"{label}{what} (average of {ns} sequence{'s' if ns != 1 else ''})", fontsize=10)
    for k in range(n, rows * cols):
        axes[k // cols][k % cols].set_visible(False)
    handles, labels = axes[0][0].get_legend_handles_labels()
    if len(handles) > LEGEND_INSIDE_MAX:
        # many codecs: one legend beside the panels, so it never covers the curves
        fig.legend(handles, labels, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8.5, frameon=False)
    else:
        for k in range(n):
            axes[k // cols][k % cols].legend(fontsize=8.5)
    fig.tight_layout()
    return fig


def figure_sequences(model: ReportModel, metric: str, *, df: Any = None, codecs: Sequence[str] | None = None,
                     axis: tuple[str, Any] | None = None) -> plt.Figure:
    """One panel per sequence for one metric."""
    _style()
    n = len(model.sequences)
    cols = min(3, n)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.4 * cols, 3.5 * rows), squeeze=False)
    for k, s in enumerate(model.sequences):
        ax = axes[k // cols][k % cols]
        _panel(ax, model, metric, s, df=df, codecs=codecs, axis=axis)
        ax.set_title(s, fontsize=9)
    for k in range(n, rows * cols):
        axes[k // cols][k % cols].set_visible(False)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    return fig


def save(fig: plt.Figure, stem: Path, formats: Sequence[str]) -> dict[str, Path]:
    """Write the figure as PNG and/or SVG and close it."""
    out = {}
    for fmt in formats:
        p = stem.with_suffix("." + fmt)
        fig.savefig(p, format=fmt, dpi=120 if fmt == "png" else None, metadata=_SAVE_META.get(fmt), bbox_inches="tight")
        out[fmt] = p
    plt.close(fig)
    return out


def close(fig: plt.Figure) -> None:
    plt.close(fig)


def svg_text(fig: plt.Figure) -> str:
    """Inline SVG markup of a figure (no XML prologue), for self-contained HTML."""
    buf = io.StringIO()
    fig.savefig(buf, format="svg", metadata=_SAVE_META["svg"], bbox_inches="tight")
    text = buf.getvalue()
    start = text.find("<svg")
    return text[start:] if start >= 0 else text


def png_bytes(fig: plt.Figure, dpi: int = 100) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, metadata=_SAVE_META["png"], bbox_inches="tight")
    return buf.getvalue()


def primary_and_reference(model: ReportModel) -> tuple[list[str], list[str]]:
    """Figure 4 metrics (DISTS, LPIPS, FVD) and the reference metrics (PSNR, SSIM)."""
    prim = [m for m in model.bd_metrics if m in PRIMARY_METRICS] or [m for m in PRIMARY_METRICS]
    ref = [m for m in model.metrics if m not in prim]
    return prim, ref
