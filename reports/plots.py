"""RD plots in the style of the Sparse2Dense paper's Figure 4.

Rate (kbps) on x, quality on y as 1-DISTS, 1-LPIPS and 5000-FVD (so higher
is better on every panel), one curve per codec averaged over sequences, plus
per-sequence grids. A metric with no computed value is skipped and the
caller gets a note (never plotted as zeros).
"""
from __future__ import annotations

import io
import math
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from reports.model import PLOT_AXIS, PRIMARY_METRICS, ReportModel, curve, metric_label  # noqa: E402

MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">")
_SAVE_META = {"svg": {"Date": None}, "png": {"Software": None}}


def _style() -> None:
    plt.rcParams["svg.hashsalt"] = "gfvc-report"  # deterministic SVG ids
    plt.rcParams["svg.fonttype"] = "none"          # text stays text: small, searchable


def plottable(model: ReportModel, metrics: Sequence[str]) -> tuple[list[str], list[str]]:
    """(metrics with at least one value, notes for the skipped ones)."""
    keep, notes = [], []
    for m in metrics:
        if m not in model.metrics:
            n = model.notes.get(m)
            notes.append(f"{metric_label(m)} not plotted: {n.reason if n else 'not in the records'}")
        elif model.df[m].astype(float).notna().any():
            keep.append(m)
        else:
            n = model.notes.get(m)
            notes.append(f"{metric_label(m)} not plotted: not computed ({n.reason if n else 'no values'})")
    return keep, notes


def _avg_curve(model: ReportModel, codec: str, metric: str) -> tuple[np.ndarray, np.ndarray] | None:
    """Mean kbps and mean metric per rate point over the sequences with finite values."""
    rates, quals = [], []
    for s in model.sequences:
        r, q = curve(model.df, codec, s, metric)
        if not r or not all(math.isfinite(v) for v in q):
            continue
        rates.append(r)
        quals.append(q)
    if not rates or len({len(r) for r in rates}) != 1:
        return None
    return np.mean(rates, axis=0), np.mean(quals, axis=0)


def _panel(ax: plt.Axes, model: ReportModel, metric: str, sequence: str | None) -> None:
    label, fn = PLOT_AXIS.get(metric, (metric_label(metric), lambda v: v))
    for i, codec in enumerate(model.codecs):
        if sequence is None:
            c = _avg_curve(model, codec, metric)
            if c is None:
                continue
            r, q = c
        else:
            rr, qq = curve(model.df, codec, sequence, metric)
            ok = [j for j, v in enumerate(qq) if math.isfinite(v)]
            if not ok:
                continue
            r, q = np.asarray(rr)[ok], np.asarray(qq)[ok]
        o = np.argsort(r)
        name = f"{codec} (anchor)" if codec == model.anchor else codec
        ax.plot(r[o], fn(np.asarray(q)[o]), marker=MARKERS[i % len(MARKERS)],
                linestyle="--" if codec == model.anchor else "-",
                label=name, linewidth=1.4, markersize=4)
    ax.set_xlabel("Rate (kbps)")
    ax.set_ylabel(label)
    ax.grid(True, alpha=0.3)


def figure_average(model: ReportModel, metrics: Sequence[str]) -> plt.Figure:
    """Figure 4 layout: one panel per metric, curves averaged over sequences."""
    _style()
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics), 3.6), squeeze=False)
    for ax, m in zip(axes[0], metrics, strict=False):
        _panel(ax, model, m, None)
        n = len(model.sequences)
        ax.set_title(f"{PLOT_AXIS.get(m, (metric_label(m),))[0]} (average of {n} sequence{'s' if n != 1 else ''})",
                     fontsize=9)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    return fig


def figure_sequences(model: ReportModel, metric: str) -> plt.Figure:
    """One panel per sequence for one metric."""
    _style()
    n = len(model.sequences)
    cols = min(3, n)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.0 * cols, 3.2 * rows), squeeze=False)
    for k, s in enumerate(model.sequences):
        ax = axes[k // cols][k % cols]
        _panel(ax, model, metric, s)
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
        fig.savefig(p, format=fmt, dpi=120 if fmt == "png" else None, metadata=_SAVE_META.get(fmt))
        out[fmt] = p
    plt.close(fig)
    return out


def svg_text(fig: plt.Figure) -> str:
    """Inline SVG markup of a figure (no XML prologue), for self-contained HTML."""
    buf = io.StringIO()
    fig.savefig(buf, format="svg", metadata=_SAVE_META["svg"])
    text = buf.getvalue()
    start = text.find("<svg")
    return text[start:] if start >= 0 else text


def png_bytes(fig: plt.Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, metadata=_SAVE_META["png"])
    return buf.getvalue()


def primary_and_reference(model: ReportModel) -> tuple[list[str], list[str]]:
    """Figure 4 metrics (DISTS, LPIPS, FVD) and the reference metrics (PSNR, SSIM)."""
    prim = [m for m in model.bd_metrics if m in PRIMARY_METRICS] or [m for m in PRIMARY_METRICS]
    ref = [m for m in model.metrics if m not in prim]
    return prim, ref
