"""The subjective results in the report: MOS/DMOS-vs-rate curves next to the objective RD curves.

A self-contained hook like reports/pooled_fvd.py: after the report is
written, each analysis result (``gfvc subjective analyse``'s
subjective_result.json: given with ``gfvc report --subjective FILE`` or found
under RUN_DIR/subjective/) adds a figure (left: the subjective score per codec
and rate point with its 95 % CI, averaged over the tested sequences; right:
the first computed Figure-4 metric of the same codecs over all sequences of
the run), a section in report.md / report.html and an entry in summary.json.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from markupsafe import escape

from gfvc.errors import InputError
from reports import plots
from reports.model import PLOT_AXIS, ReportModel, metric_label

RESULT_NAME = "subjective_result.json"


def find_results(run_dir: Path | None, given: list[Path] | None) -> list[Path]:
    """The results to show: those given, else every RUN_DIR/subjective/**/subjective_result.json."""
    if given:
        return [Path(p) for p in given]
    if run_dir is None or not (Path(run_dir) / "subjective").is_dir():
        return []
    return sorted((Path(run_dir) / "subjective").rglob(RESULT_NAME))


def load_result(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise InputError(f"{path}: cannot read a subjective result ({e}); write one with `gfvc subjective "
                         "analyse SCORES.csv`") from None
    if not isinstance(data, dict) or data.get("kind") != "gfvc-subjective-result":
        raise InputError(f"{path}: not a subjective result of `gfvc subjective analyse`")
    return data


def figure(res: dict[str, Any], model: ReportModel) -> Any:
    """Subjective score vs rate (with 95 % CI bars) beside the first computed objective metric."""
    plt = plots.plt
    plots._style()
    prim = res["primary"]
    prim_m, ref_m = plots.primary_and_reference(model)
    objective = next((m for m in prim_m + ref_m  # DISTS/LPIPS/FVD first; PSNR/SSIM when those were not computed
                      if m in model.metrics and model.computed(m) and model.df[m].astype(float).notna().any()), None)
    cols = 2 if objective else 1
    fig, axes = plt.subplots(1, cols, figsize=(6.4 * cols, 4.6), squeeze=False)
    ax = axes[0][0]
    codecs = [c for c in dict.fromkeys(r["codec"] for r in res["conditions"]) if c != "reference"]
    order = list(model.codecs)
    for codec in codecs:
        rows = sorted((r for r in res["conditions"] if r["codec"] == codec and r[prim["value"]] is not None
                       and r["kbps"] is not None), key=lambda r: r["kbps"])
        if not rows:
            continue
        i = order.index(codec) if codec in order else len(order) + codecs.index(codec)
        colour = plots.COLOURS[i % len(plots.COLOURS)]
        ax.errorbar([r["kbps"] for r in rows], [r[prim["value"]] for r in rows],
                    yerr=[r[f"{prim['value']}_ci95"] or 0.0 for r in rows],
                    marker=plots.MARKERS[i % len(plots.MARKERS)],
                    capsize=3, label=f"{codec} (anchor)" if codec == model.anchor else codec, color=colour,
                    linestyle="--" if codec == model.anchor else "-", linewidth=1.6, markersize=5)
        for r in rows:
            if r["qp"] is not None:
                ax.annotate(str(r["qp"]), (r["kbps"], r[prim["value"]]), textcoords="offset points", xytext=(4, 4),
                            fontsize=7.5, color=colour)
    ref = [r for r in res["conditions"] if r["codec"] == "reference" and r[prim["value"]] is not None]
    if ref:
        ax.axhline(ref[0][prim["value"]], color="#444", linestyle=":", linewidth=1, label="hidden reference")
    if not prim["higher_is_better"]:
        ax.invert_yaxis()
    ax.set_xlabel("Rate (kbps)")
    ax.set_ylabel(prim["label"] + ("" if prim["higher_is_better"] else " (axis inverted: up = better)"))
    seqs = sorted({s for r in res["conditions"] for s in r.get("sequences", [])})
    ax.set_title(f"{prim['label']}, 95 % CI, {len(res['observers_kept'])} observers, {len(seqs)} sequence(s)",
                 fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8.5)
    if objective:
        plots._panel(axes[0][1], model, objective, None, codecs=[c for c in model.codecs if c in codecs])
        axes[0][1].set_title(f"{PLOT_AXIS.get(objective, (metric_label(objective),))[0]} (objective, average of "
                             f"{len(model.sequences)} sequence(s))", fontsize=10)
        axes[0][1].legend(fontsize=8.5)
    fig.tight_layout()
    return fig


def _summary(res: dict[str, Any]) -> list[str]:
    rej = [o for o in res["observers"] if o["rejected"]]
    return [f"{res['title']}: {res['standard']}.",
            f"Observers: {len(res['observers_kept'])} kept of {len(res['observers'])}"
            + (f"; rejected {', '.join(o['observer'] + ' (' + o['reason'] + ')' for o in rej)}" if rej else "")
            + f". Screening: {res['screening']}.", f"Confidence intervals: {res['ci']}."]


def add_to_report(model: ReportModel, out: Path, paths: dict[str, Path], given: list[Path] | None = None
                  ) -> dict[str, Path]:
    """Append one section per subjective result to the report files already written."""
    found = find_results(Path(model.run_dir) if model.run_dir else None, given)
    new: dict[str, Path] = {}
    md, html, entries = [], [], []
    for k, p in enumerate(found):
        res = load_result(p)
        fig = figure(res, model)
        stem = f"subjective_rd_{res['method']}" + (f"_{k + 1}" if len(found) > 1 else "")
        png = plots.png_bytes(fig, dpi=120)
        svg = plots.svg_text(fig) if "html" in paths else ""
        plots.close(fig)
        (out / f"{stem}.png").write_bytes(png)
        new[f"png:{stem}"] = out / f"{stem}.png"
        title = f"{res['primary']['label']} vs rate ({p})"
        lines = _summary(res)
        md.append(f"\n## Subjective test: {res['title']}\n\n" + "\n".join(f"- {x}" for x in lines)
                  + f"\n\n![{title}]({stem}.png)\n")
        html.append(f"<section><h2>Subjective test: {escape(res['title'])}</h2><ul>"
                    + "".join(f"<li>{escape(x)}</li>" for x in lines) + f"</ul><figure>{svg}<figcaption>"
                    f"{escape(title)}</figcaption></figure></section>")
        entries.append({"file": str(p), "method": res["method"], "primary": res["primary"],
                        "observers_kept": res["observers_kept"], "rejected": res["rejected"],
                        "conditions": res["conditions"]})
    viewer = paths.get("viewer")
    if viewer is not None and "html" in paths:
        html.insert(0, f'<p>Side-by-side viewer of the decoded sequences: <a href="{viewer.name}">{viewer.name}</a> '
                       "(lossy viewing copies; open next to its viewer_assets folder).</p>")
    if viewer is not None and "md" in paths:
        md.insert(0, f"\nSide-by-side viewer of the decoded sequences: [{viewer.name}]({viewer.name}) "
                     "(lossy viewing copies).\n")
    if md and "md" in paths:
        with open(paths["md"], "a") as f:
            f.write("".join(md))
    if html and "html" in paths:
        text = paths["html"].read_text()
        sec = "\n".join(html)
        paths["html"].write_text(text.replace("</body>", sec + "\n</body>", 1) if "</body>" in text else text + sec)
    if entries and "json" in paths:
        data = json.loads(paths["json"].read_text())
        data["subjective"] = entries
        paths["json"].write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    return new
