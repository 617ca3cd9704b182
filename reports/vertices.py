"""The vertex section of a report: vertex error and PCK per codec and rate point, rate-vs-vertex-error
curves, BD-rate where it means something, speed of the vertex head, and a Figure-6 style picture.

Reads the ``vertex_metrics`` block of each record (metrics/vertices.py) and,
for the picture, the job's ``vertex_sample.npz`` (exact decoded frames of a
few frames with predicted and reference vertices). Sparse2Dense's paper
compares its decoded vertices with OSX's (its Figure 6) and reports 0.002 s
per frame for the vertex head against 0.724 s for OSX; both are shown here
next to the suite's numbers.

A BD-rate on vertex error needs two codecs that both output vertices and are
measured against the same references; the anchor has no vertices, so there is
never a vertex BD-rate against the anchor. With one vertex codec the section
says so instead of printing a number.
"""
from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np

from gfvc.vertices import to_pixels
from reports import plots
from reports.tables import text_table
from reports.vertex_model import (  # noqa: F401  (the section's data, re-exported for the emitters)
    BD_METRIC,
    PAPER_SPEED,
    SETS,
    VertexModel,
    build_vertex_model,
    frame,
    load_sample,
    summary_json,
)

REFERENCE_COLOUR = "#ff00ff"   # magenta
PREDICTED_COLOUR = "#00e000"   # green
MAX_POINTS = 900               # vertices drawn per frame in the picture (every n-th vertex)

# ------------------------------------------------------------------------ tables
def _fmt(v: Any, digits: int = 2) -> str:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return "n/a"
    return f"{f:.{digits}f}" if math.isfinite(f) else "n/a"


def _pct(v: Any) -> str:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return "n/a"
    return f"{100 * f:.1f}" if math.isfinite(f) else "n/a"


def head_text(row: Any) -> str:
    """'1.23 ms (cpu, 1 thread)' from a row's head columns."""
    v = row.get("head_s_per_frame") if hasattr(row, "get") else None
    if v is None or not isinstance(v, (int, float)) or not math.isfinite(float(v)):
        return "n/a"
    dev = str(row.get("head_device", "?"))
    th = row.get("head_threads")
    extra = ""
    if isinstance(th, numbers.Real) and math.isfinite(float(th)) and dev.startswith("cpu"):
        n = int(float(th))
        extra = f", {n} thread{'s' if n != 1 else ''}"
    return f"{1000 * float(v):.2f} ms ({dev}{extra})"


def summary_table(vm: VertexModel, model: Any) -> tuple[list[str], list[list[str]]]:
    """Per codec and rate point, averaged over sequences; codecs without vertices: 'not applicable'.
    Errors in px, PCK in %, vertex-head time in ms per frame with its device."""
    pk = vm.pck_keys()
    header = (["Codec", "QP", "kbps", "Key frame mean", "Inter mean", "Inter median", "Inter p90"]
              + [f"PCK@{k.split('@')[1]}" for k in pk] + ["Vertex head per frame"])
    rows: list[list[str]] = []
    df = vm.df
    blank = [""] * (len(header) - 4)
    for c in model.codecs:
        if c in vm.codecs:
            sub = df[df["codec"] == c]
            for qp, g in sorted(sub.groupby("qp"), key=lambda kv: -kv[0]):
                head = g["head_s_per_frame"].mean() if "head_s_per_frame" in g else float("nan")
                first = g.iloc[0]
                hrow = {"head_s_per_frame": head, "head_device": first.get("head_device", "?"),
                        "head_threads": first.get("head_threads")}
                rows.append([c, str(int(qp)), _fmt(g["kbps"].mean(), 3), _fmt(g["key_mean_px"].mean()),
                             _fmt(g["inter_mean_px"].mean()), _fmt(g["inter_median_px"].mean()),
                             _fmt(g["inter_p90_px"].mean())]
                            + [_pct(g[f"inter_{k}"].mean()) for k in pk] + [head_text(hrow)])
        elif c in vm.not_applicable:
            rows.append([c, "", "", "not applicable (no vertex output)"] + blank)
        elif c in vm.not_computed:
            rows.append([c, "", "", "not computed (reason below)"] + blank)
        elif c in vm.not_recorded:
            rows.append([c, "", "", "not recorded (records predate vertex metrics)"] + blank)
    return header, rows


def sequence_table(vm: VertexModel) -> tuple[list[str], list[list[str]]]:
    """Per sequence, codec and rate point: key-frame and inter-frame error, PCK."""
    pk = vm.pck_keys()
    header = (["Sequence", "Codec", "QP", "kbps", "Key mean (px)", "Key PCK@" + pk[0].split("@")[1] + " (%)"
               if pk else "Key PCK (%)", "Inter mean (px)", "Inter median (px)", "Inter p90 (px)"]
              + [f"Inter PCK@{k.split('@')[1]} (%)" for k in pk])
    rows = []
    for _, r in vm.df.sort_values(["sequence"], kind="stable").iterrows():
        rows.append([str(r["sequence"]), str(r["codec"]), str(int(r["qp"])), _fmt(r["kbps"], 3),
                     _fmt(r["key_mean_px"]), _pct(r.get(f"key_{pk[0]}")) if pk else "n/a",
                     _fmt(r["inter_mean_px"]), _fmt(r["inter_median_px"]), _fmt(r["inter_p90_px"])]
                    + [_pct(r[f"inter_{k}"]) for k in pk])
    return header, rows


def bd_table(vm: VertexModel) -> tuple[list[str], list[list[str]]] | None:
    if not vm.pairs:
        return None
    header = ["Codec", f"BD-rate vs {vm.bd_reference} (%), mean of sequences", "average curve"]
    rows = [[t, p.mean.cell(2), p.curve.cell(2)] for t, p in vm.pairs.items()]
    return header, rows


def terminal_lines(vm: VertexModel, model: Any = None) -> list[str]:
    """Table 3 as text for the terminal (errors in px, PCK in %, vertex-head time per frame)."""
    if not vm.codecs:
        return []
    lab = "PROXY reference vertices" if vm.proxy else "reference vertices"
    header, rows = summary_table(vm, model) if model is not None else ([], [])
    rows = [r for r in rows if r[1]]  # measured rows; the others are named after the table
    lines = [f"Vertex prediction against {lab} (px; PCK in %; inter frames unless 'key'; mean over sequences):"]
    lines += text_table([h.replace("Inter ", "") for h in header], rows)
    if vm.not_applicable:
        lines.append(f"not applicable (no vertex output): {', '.join(vm.not_applicable)}")
    for c, why in vm.not_computed.items():
        lines.append(f"{c}: vertex metrics not computed: {why}")
    return lines


# ----------------------------------------------------------------------- figures
def figure_curves(vm: VertexModel, model: Any):  # -> matplotlib Figure
    """Rate vs mean inter-frame vertex error (lower is better) and vs PCK at the middle threshold."""
    pk = vm.pck_keys()
    mid = pk[len(pk) // 2] if pk else None
    metrics = ["inter_mean_px"] + ([f"inter_{mid}"] if mid else [])
    spec = {"inter_mean_px": ("Mean vertex error (px), lower is better", lambda v: v)}
    if mid:
        spec[f"inter_{mid}"] = (f"PCK@{mid.split('@')[1]} (%), higher is better", lambda v: 100 * v)
    return plots.figure_average(model, metrics, df=vm.df, codecs=vm.codecs, axes_spec=spec)


def figure_six(vm: VertexModel, sequence: str):  # -> matplotlib Figure | None
    """Figure-6 style: a few decoded frames per vertex codec, reference and predicted vertices in two colours."""
    import matplotlib.pyplot as plt

    rows: list[tuple[str, dict[str, np.ndarray]]] = []
    for c in vm.codecs:
        sample = load_sample(vm, c, sequence)
        if sample is not None:
            rows.append((c, sample))
    if not rows:
        return None
    plots._style()
    k = max(len(s["index"]) for _, s in rows)
    fig, axes = plt.subplots(len(rows), k, figsize=(3.3 * k, 3.5 * len(rows)), squeeze=False)
    ref_name = "reference (PROXY)" if vm.references.get(sequence, {}).get("proxy") else "reference"
    for i, (codec, s) in enumerate(rows):
        frames, pred, ref, idx = s["frames"], s["pred"], s["ref"], s["index"]
        h, w = frames.shape[1:3]
        stride = max(1, int(math.ceil(pred.shape[1] / MAX_POINTS)))
        qp = vm.samples[(codec, sequence)][0]
        for j in range(k):
            ax = axes[i][j]
            ax.axis("off")
            if j >= len(idx):
                continue
            ax.imshow(frames[j], interpolation="nearest")
            pairs = ((ref[j], REFERENCE_COLOUR, ref_name), (pred[j], PREDICTED_COLOUR, f"{codec} (decoded)"))
            for pts, col, lab in pairs:
                if not np.isfinite(pts).all():
                    continue
                px = to_pixels(pts[::stride], w, h)
                ax.scatter(px[:, 0], px[:, 1], s=2.2, c=col, linewidths=0, alpha=0.8, label=lab)
            ax.set_xlim(-0.5, w - 0.5)
            ax.set_ylim(h - 0.5, -0.5)
            ax.set_title(f"{codec} QP {qp}: frame {int(idx[j])}{' (key)' if int(idx[j]) == 0 else ''}", fontsize=8.5)
        handles = [plt.Line2D([], [], marker="o", linestyle="", color=REFERENCE_COLOUR, label=ref_name),
                   plt.Line2D([], [], marker="o", linestyle="", color=PREDICTED_COLOUR, label=f"{codec} (decoded)")]
        axes[i][0].legend(handles=handles, loc="lower left", fontsize=7, framealpha=0.8)
    step = stride * int(rows[0][1]["vertex_index"][1] - rows[0][1]["vertex_index"][0]) \
        if "vertex_index" in rows[0][1] and len(rows[0][1]["vertex_index"]) > 1 else stride
    fig.suptitle(f"{sequence}: every {step}th vertex drawn", fontsize=9)
    fig.tight_layout()
    return fig
