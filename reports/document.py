"""Contribution documents (Markdown, self-contained HTML, Word) and ``build_report``.

The HTML embeds its figures (inline SVG for the Figure-4 panels, base64 PNG
for the per-sequence appendix and the Figure-5 pictures), so the one file
opens offline and can be attached to a JVET contribution; report.docx
(reports/docx_report.py) is the Word contribution layout of the same
context. Metrics that were not computed are stated with their reason in the
results section, never hidden.
"""
from __future__ import annotations

import base64
import functools
import hashlib
import json
import math
import re
import shlex
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jinja2
from markupsafe import Markup, escape

from gfvc import __version__
from gfvc.devices import check_uniform_devices
from gfvc.errors import ConfigError
from gfvc.fileio import atomic_write_text
from gfvc.records import iter_records, results_table
from reports import figure5 as fig5
from reports import imported as imp
from reports import plots, pooled_fvd, subjective_report, tables
from reports import vertices as vx
from reports.formats import ALL_FORMATS
from reports.model import KNOWN_METRICS, PLOT_AXIS, SUB_LABELS, ReportModel, build_model, load_run, metric_label
from reports.vertices import frame as vertex_frame
from reports.vertices import summary_table, terminal_lines
from reports.viewer import write_viewer

TEMPLATES = Path(__file__).resolve().parent / "templates"

METHOD_TEXT = {
    "jvet": "piecewise cubic Hermite interpolation with the slope rules of the JVET/JCT-VC CTC spreadsheet "
            "(weighted-harmonic interior slopes, clamped 3-point end slopes), integrated exactly over the "
            "overlapping quality interval",
    "pchip": "scipy PchipInterpolator (monotone piecewise cubic Hermite), integrated exactly over the overlap",
    "cubic": "VCEG-M33 cubic polynomial fit of log-rate in quality, integrated exactly over the overlap",
    "akima": "Akima interpolation (scipy Akima1DInterpolator), integrated exactly over the overlap",
}
AGG_TEXT = {
    "mean-of-sequences": "arithmetic mean of the per-sequence BD-rates (JVET practice)",
    "average-curve": "BD-rate of the RD curves averaged over sequences (mean kbps and mean quality per rate point)",
}


def _env() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES)), autoescape=jinja2.select_autoescape(
        enabled_extensions=("html.j2",), default_for_string=False), keep_trailing_newline=True,
        trim_blocks=True, lstrip_blocks=True, undefined=jinja2.StrictUndefined)
    env.filters["code"] = _code_html
    return env


def _code_html(text: Any) -> Markup:
    """Escape ``text`` for HTML and turn `backticked` spans into <code> elements."""
    parts = str(escape(str(text))).split("`")
    return Markup("".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts)))


def _fmt(v: Any) -> str:
    if isinstance(v, (list, tuple)):
        return ", ".join(_fmt(x) for x in v) if v else "(none)"
    if isinstance(v, dict):
        return json.dumps(v, sort_keys=True)
    if v is None:
        return "(none)"
    if isinstance(v, float):  # includes numpy float64; repr(float) avoids "np.float64(...)"
        return repr(float(v))
    return str(v)


def flatten(d: Any, prefix: str = "") -> list[tuple[str, str]]:
    """Nested dict -> [(dotted.key, text)], in insertion order (so every parameter is listed)."""
    out: list[tuple[str, str]] = []
    if isinstance(d, dict):
        for k, v in d.items():
            key = f"{prefix}.{k}" if prefix else str(k)
            if isinstance(v, dict) and v:
                out += flatten(v, key)
            else:
                out.append((key, _fmt(v)))
    return out


def _sequences(model: ReportModel) -> list[dict[str, str]]:
    df = model.df
    rows = []
    refs = (model.vertex.references if model.vertex is not None else {})
    for s in model.sequences:
        sub = df[df["sequence"] == s]
        first = sub.iloc[0]
        ref = refs.get(s) or {}
        rows.append({"name": s, "sha256": str(first.get("sequence_sha256", "")),
                     "frames": str(first.get("frames", "")), "fps": _fmt(first.get("fps")),
                     "vertices": (("PROXY " if ref.get("proxy") else "") + str(ref.get("sha256", ""))) if ref else ""})
    return rows


def _records_digest(model: ReportModel) -> str:
    keys = sorted(str(k) for k in model.df.get("key", []))
    return hashlib.sha256("\n".join(keys).encode()).hexdigest()


# ------------------------------------------------------------------------ banner
_WEIGHT_RE = re.compile(r"weight file (\S+)")


def _short_reason(reason: str) -> str:
    """A missing-weights message reduced to the file names (the fix is stated once, after the list)."""
    files = sorted(set(_WEIGHT_RE.findall(reason)))
    if files:
        return f"weight file{'s' if len(files) > 1 else ''} {', '.join(files)} missing or not verified"
    return reason


def _model_caveats(codec: str, prov: dict[str, Any]) -> list[str]:
    """What a codec's results are not, from its provenance: declared ``caveats`` plus what the
    checkpoint says (a demo checkpoint, untrained weights, proxy vertex targets, a fallback loss)."""
    out = [str(c) for c in (prov.get("caveats") or []) if str(c).strip()]
    model_id = str(prov.get("model_id") or "")
    if prov.get("checkpoint_verification") == "unverified":
        out.append(f"{codec}: checkpoint {model_id or '?'} is UNVERIFIED: "
                   f"{str(prov.get('checkpoint_verification_note') or 'no public hash vouches for it')}.")
    ck = str(prov.get("checkpoint") or prov.get("checkpoint_path") or "")
    t = prov.get("training")
    training: dict[str, Any] = t if isinstance(t, dict) else {}
    ident = f"{model_id} {Path(ck).name}".lower()
    details = []
    step = training.get("step", training.get("steps"))
    wall = training.get("wall_seconds")
    i = training.get("init")
    init: dict[str, Any] = i if isinstance(i, dict) else {}
    init_step, init_wall = init.get("step"), init.get("wall_seconds")
    if isinstance(step, (int, float)) and isinstance(init_step, (int, float)):
        # fine-tuned from another checkpoint: say both, so the training budget is not understated
        details.append(f"{int(step)} fine-tuning steps from a checkpoint of {int(init_step)} steps")
        if isinstance(wall, (int, float)) and isinstance(init_wall, (int, float)):
            wall = wall + init_wall
    elif isinstance(step, (int, float)):
        details.append(f"{int(step)} training steps")
    if isinstance(wall, (int, float)):
        details.append(f"{wall / 3600:.1f} h of training")
    perceptual = str(training.get("perceptual") or "")
    if "fallback" in perceptual or perceptual.startswith("pixel"):
        details.append(f"perceptual loss: {perceptual} (fallback, no VGG19 weights)")
    vt = str(training.get("vertex_targets") or "")
    if "proxy" in vt.lower():
        details.append(f"vertex head trained on PROXY targets ({vt})")
    if "random" in ident or "untrained" in ident or step == 0:
        out.append(f"{codec}: untrained model (random weights): its numbers test the pipeline only")
    elif "demo" in ident:
        size = prov.get("image_size")
        where = f", {size} px" if size else ""
        out.append(f"{codec}: demo checkpoint {model_id or Path(ck).name}{where}"
                   + (f" ({'; '.join(details)})" if details else "") + ": far from the published model.")
    elif details and any("PROXY" in d or "fallback" in d for d in details):
        out.append(f"{codec}: " + "; ".join(d for d in details if "PROXY" in d or "fallback" in d))
    return out


def incomplete_lines(model: ReportModel) -> list[str]:
    """What the run planned and has no result of, per codec and rate point (first in every format)."""
    c = model.completeness
    return c.lines() if c is not None else []


def banner(model: ReportModel) -> list[str]:
    """What the numbers of this report are not, each said once (shown at the top of every document)."""
    items: list[str] = incomplete_lines(model)
    codecs = model.run.get("codecs") or {}
    aprov = codecs.get(model.anchor) or {}
    if aprov.get("approximates"):
        items.append(f"The anchor {model.anchor} stands in for {aprov['approximates']}: every BD-rate here is "
                     f"against {model.anchor}, not against the CTC's VTM anchor.")
    gen = model.condition.get("generative") or {}
    native = ~model.df["codec"].isin(imp.imported_codecs(model.run))  # imported codecs coded their own key frames
    fams = set(model.df.loc[native, "family"]) if "family" in model.df.columns else set()
    if gen.get("key_frame_coder") == "vvenc" and "generative" in fams:
        items.append("Key frames of the generative codecs are coded by VVenC intra, not VTM intra.")
    if model.anchor_note:
        items.append(f"Anchor missing: {model.anchor_note}.")
    for c in model.codecs:
        items += _model_caveats(c, codecs.get(c) or {})
        note = imp.imported_note(c, codecs.get(c))  # results produced elsewhere (`gfvc import`)
        if note:
            items.append(note)
    groups: dict[str, list[str]] = {}
    partial = []
    for n in model.notes.values():
        if n.status == "not_computed":
            groups.setdefault(_short_reason(n.reason), []).append(metric_label(n.metric))
        else:
            partial.append(f"{metric_label(n.metric)} is missing for {n.missing} of {n.total} rate points "
                           f"({_short_reason(n.reason)}).")
    weights = False
    for reason, names in groups.items():
        weights = weights or "weight file" in reason
        items.append(f"{', '.join(names)} not computed: {reason}.")
    if weights:
        items.append("To compute them: `gfvc weights fetch` (or `gfvc weights install DIR`; `gfvc weights status` "
                     "lists the files), then rerun; the full messages are in Appendix D.")
    items += partial
    for m, why in model.skipped_bd.items():
        items.append(f"No BD-rate for {metric_label(m)}: {why}.")
    vm = model.vertex
    if vm is not None and vm.measured and vm.proxy:
        items.append("Vertex errors are measured against PROXY reference vertices, not OSX/SMPL-X: they say how "
                     "well a codec's vertices follow the proxy, not how accurate a body mesh is (section 2).")
    return items


# ------------------------------------------------------------------------ context
def _per_plane(model: ReportModel) -> list[dict[str, Any]]:
    """Tables of per-plane sub-values (e.g. VTM-log PSNR Y/U/V/YUV) per metric that records them."""
    d = model.details
    if d is None or d.empty:
        return []
    out = []
    metrics = sorted({c.split(".")[0] for c in d.columns if "." in c},
                     key=lambda m: (KNOWN_METRICS.index(m) if m in KNOWN_METRICS else 99, m))
    for m in metrics:
        order = list(SUB_LABELS)
        cols = sorted((c for c in d.columns if c.startswith(m + ".")),
                      key=lambda c: order.index(c.split(".")[-1]) if c.split(".")[-1] in order else 99)
        sub = d.dropna(subset=cols, how="all")
        if sub.empty:
            continue
        corder = {c: i for i, c in enumerate(model.codecs)}
        sub = sub.assign(_o=sub["codec"].map(corder)).sort_values(["_o", "sequence", "qp"],
                                                                  ascending=[True, True, False], kind="stable")
        vals = model.df.set_index(["codec", "sequence", "qp"])[m] if m in model.df.columns else None
        sub_label = (lambda c: f"{SUB_LABELS[c.split('.')[-1]]}-PSNR") if m.startswith("psnr") else metric_label
        header = ["Codec", "Sequence", "QP", "kbps"] + [sub_label(c) for c in cols] + (
            [metric_label(m)] if vals is not None else [])
        rows = []
        for _, r in sub.iterrows():
            row = [str(r["codec"]), str(r["sequence"]), str(int(r["qp"])), f"{float(r['kbps']):.3f}"]
            row += [f"{float(r[c]):.2f}" if math.isfinite(float(r[c])) else "n/c" for c in cols]
            if vals is not None:
                try:
                    v = float(vals.loc[(r["codec"], r["sequence"], r["qp"])])
                    row.append(f"{v:.2f}" if math.isfinite(v) else "n/c")
                except (KeyError, TypeError):
                    row.append("n/c")
            rows.append(row)
        proto = model.protocols.get(m)
        desc = ""
        if isinstance(proto, dict):
            desc = str(proto.get("description") or proto.get(m) or "")
        elif proto:
            desc = str(proto)
        yuv = m.startswith("psnr") and any(c.endswith((".u", ".v")) for c in cols)
        title = (f"{metric_label(m)} per plane, as VTM's log prints it (Y, U, V and the 6:1:1 weighted YUV PSNR "
                 "on the decoded 4:2:0 planes)") if yuv else f"{metric_label(m)} per plane"
        out.append({"metric": m, "title": title, "description": desc, "table": (header, rows)})
    return out


def _vertex_context(model: ReportModel, figures: dict[str, Any]) -> dict[str, Any] | None:
    vm = model.vertex
    if vm is None:
        return None
    ths = ", ".join(f"{t:g}" for t in vm.thresholds)
    proto = (f"Per-vertex L2 error in pixels at the sequence resolution; mean, median and 90th percentile over "
             f"all vertices of a set of frames; PCK@t = share of vertices within t px (t = {ths} px). Key frame "
             "(frame 0, coded as a picture) apart from the inter frames (synthesised from features).") \
        if vm.thresholds else ""
    return {
        "measured": vm.measured, "proxy": vm.proxy, "reference_label": vm.reference_label(),
        "protocol_text": proto, "summary": vx.summary_table(vm, model),
        "sequences": vx.sequence_table(vm) if vm.measured else None,
        "bd": vx.bd_table(vm), "bd_note": vm.bd_note, "not_computed": vm.not_computed,
        "not_applicable": vm.not_applicable, "paper_speed": vx.PAPER_SPEED,
        "curves": figures.get("vertex_curves"), "fig6": figures.get("fig6", []),
    }


def context(model: ReportModel, *, figures: dict[str, Any] | None = None) -> dict[str, Any]:
    """Everything the templates show (plain data; the HTML template escapes it)."""
    figures = figures or {}
    prim, ref = plots.primary_and_reference(model)
    prim_t = [m for m in prim if m in model.bd_metrics] or prim
    ref_t = [m for m in ref if m in model.bd_metrics and model.computed(m)]
    codecs = []
    for c in model.codecs:
        fam = model.df.loc[model.df["codec"] == c, "family"]
        prov = (model.run.get("codecs") or {}).get(c) or {}
        bits = [str(prov[k]) for k in ("model_id", "version", "tool", "libvvenc_version") if prov.get(k)]
        if imp.is_imported(prov):
            bits.insert(0, "imported (not run by the suite)")
        codecs.append({"name": c, "role": "anchor" if c == model.anchor else "test",
                       "family": str(fam.iloc[0]) if len(fam) else "", "summary": ", ".join(bits),
                       "stages": tables.stage_text(model, c), "provenance": flatten(prov)})
    run_dir_arg = str(model.run_dir) if model.run_dir else "RUN_DIR"
    seq_tables = [{"metric": m, "label": metric_label(m), "table": tables.sequence_table(model, m)}
                  for m in model.computed_bd_metrics]
    rd_tables = [{"codec": c, "table": tables.rd_text_table(model, c)} for c in model.codecs]
    argv = model.run.get("argv") or []
    notes_full = [{"metric": metric_label(n.metric), "status": n.status, "reason": n.reason,
                   "missing": n.missing, "total": n.total} for n in model.notes.values()]
    return {
        "title": f"GFVC CTC results: {model.condition_name} v{model.condition.get('version', '?')}",
        "condition_name": model.condition_name,
        "condition_version": model.condition.get("version", "?"),
        "fingerprint": model.fingerprint,
        "created": model.run.get("created", "(unknown)"),
        "suite_version": model.run.get("suite_version", "(unknown)"),
        "generated_by": f"gfvc {__version__}",
        "banner": banner(model),
        "condition_params": flatten(model.condition),
        "codecs": codecs,
        "anchor": model.anchor,
        "anchor_note": model.anchor_note,
        "tests": model.tests,
        "n_sequences": len(model.sequences),
        "run_provenance": flatten(model.run.get("provenance") or {}),
        "method": model.method,
        "method_text": METHOD_TEXT[model.method],
        "aggregation": model.aggregation,
        "aggregation_text": AGG_TEXT[model.aggregation],
        "agg_texts": AGG_TEXT,
        "table1": tables.table1_both(model, prim_t),
        "table_ref": tables.table1_both(model, ref_t) if ref_t else None,
        "variants": tables.variant_table(model, [m for m in model.bd_metrics if model.computed(m)])
        if model.variant_base else None,
        "notes_full": notes_full,
        "flagged": tables.flagged(model),
        "seq_tables": seq_tables,
        "rd_tables": rd_tables,
        "per_plane": _per_plane(model),
        "vertex": _vertex_context(model, figures),
        "figures": figures,
        "run_argv": " ".join(shlex.quote(str(a)) for a in argv) if argv else "(not recorded)",
        "report_cmd": f"gfvc report {shlex.quote(run_dir_arg)} --anchor {shlex.quote(model.anchor)}",
        "sequences": _sequences(model),
        "sequence_rows": [[r["name"], r["sha256"], r["frames"], r["fps"]]
                          + ([r["vertices"]] if model.vertex is not None else []) for r in _sequences(model)],
        "sequence_header": ["Sequence", "sha256", "Frames", "fps"]
                           + (["Reference vertices sha256"] if model.vertex is not None else []),
        "records_digest": _records_digest(model),
        "n_records": int(len(model.df)),
        "axis_labels": {m: PLOT_AXIS.get(m, (metric_label(m),))[0] for m in model.metrics},
        "md_table": tables.md_table,
        "sub_labels": tables.sub_labels,
    }


def render(template: str, ctx: dict[str, Any]) -> str:
    return _env().get_template(template).render(**ctx)


def build_report(run_dir: Path, *, anchor: str | None = None, formats: tuple[str, ...] = ALL_FORMATS,
                 out_dir: Path | None = None, method: str | None = None, aggregation: str | None = None,
                 bootstrap: int = 0, seed: int = 0, allow_mixed_devices: bool = False,
                 figure5: fig5.Options | None = None, docx_meta: dict[str, str] | None = None,
                 originals: Callable[[str], Any] | None = None, subjective: list[Path] | None = None
                 ) -> dict[str, Path]:
    """Write the report of a run; returns {format or "format:name": path}.

    Primary keys: ``md`` report.md, ``html`` report.html, ``tex`` tables.tex,
    ``json`` summary.json, ``txt`` summary.txt (what ``gfvc report`` prints),
    ``xlsx`` report.xlsx, ``docx`` report.docx (Word contribution layout; title block
    from ``docx_meta``, see reports.docx_report.load_meta), ``csv`` summary.csv (plus ``csv:rd`` rd_data.csv,
    ``csv:bdrate`` bdrate_per_sequence.csv and ``csv:vertices`` vertices.csv),
    ``png``/``svg`` the Figure-4 plot (plus ``png:<name>``/``svg:<name>``:
    reference metrics, per-sequence plots, vertex curves, Figure-6 pictures,
    ``figure5_<sequence>``: the Figure-5 visual comparison chosen by ``figure5``)
    and ``json:figure5`` figure5.json (what Figure 5 shows and why),
    ``viewer`` viewer.html (reports/viewer.py; ``originals`` offers the source
    frames there), ``png:subjective_rd_<method>`` for each subjective result
    (``subjective``, else found under RUN_DIR/subjective/).
    """
    unknown = sorted(set(formats) - set(ALL_FORMATS))
    if unknown:
        raise ConfigError(f"unknown report format(s) {', '.join(unknown)} (known: {', '.join(ALL_FORMATS)})")

    run_dir = Path(run_dir)
    run = load_run(run_dir)
    check_uniform_devices((r for r in iter_records(run_dir) if r.get("status") == "ok"),
                          allow=allow_mixed_devices, what=f"the records of {run_dir}")
    df = results_table(run_dir)
    model = build_model(df, run, run_dir=run_dir, anchor=anchor, method=method, aggregation=aggregation,
                        bootstrap=bootstrap, seed=seed, pooled=pooled_curves(run_dir))
    out = Path(out_dir) if out_dir else run_dir / "report"
    return write_report(model, out, formats, figure5=figure5, docx_meta=docx_meta, originals=originals,
                        subjective=subjective)


def pooled_curves(run_dir: Path) -> dict[str, dict[str, tuple[list[float], list[float]]]]:
    """Pooled FVD as Table-1 curves: {"fvd": {codec: (mean kbps, pooled FVD) per rate point}} (or empty).

    The values come from reports.pooled_fvd (clip features kept by each job);
    Table 1's pooled column is a BD-rate of these averaged curves.
    """
    p = pooled_fvd.compute(Path(run_dir), iter_records(Path(run_dir)), anchor="")
    if p is None:
        return {}
    curves: dict[str, tuple[list[float], list[float]]] = {}
    for pt in sorted(p.points, key=lambda q: (q.codec, q.qp)):
        if pt.kbps is not None and pt.fvd is not None:
            r, q = curves.setdefault(pt.codec, ([], []))
            r.append(pt.kbps)
            q.append(pt.fvd)
    return {"fvd": curves} if curves else {}


def report_model(run_dir: Path, *, allow_mixed_devices: bool = False, **kw: Any) -> ReportModel:
    """The report model of a run directory (what every emitter reads); refuses mixed device types."""
    run_dir = Path(run_dir)
    check_uniform_devices((r for r in iter_records(run_dir) if r.get("status") == "ok"),
                          allow=allow_mixed_devices, what=f"the records of {run_dir}")
    kw.setdefault("pooled", pooled_curves(run_dir))
    return build_model(results_table(run_dir), load_run(run_dir), run_dir=run_dir, **kw)


def write_report(model: ReportModel, out: Path, formats: Sequence[str] = ALL_FORMATS, *,
                 figure5: fig5.Options | None = None, docx_meta: dict[str, str] | None = None,
                 originals: Callable[[str], Any] | None = None, subjective: list[Path] | None = None
                 ) -> dict[str, Path]:
    """Write every output of ``formats`` into ``out``; ``figure5`` chooses the Figure-5 comparison,
    ``docx_meta`` fills the Word title block (see build_report for the keys of the result)."""
    fmts = set(formats)
    f5 = fig5.build(model, figure5)  # option errors (unknown sequence, bad target) before any file is written
    out.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    vm = model.vertex
    if "csv" in fmts:
        tables.summary_frame(model).to_csv(out / "summary.csv", index=False, float_format="%.10g")
        tables.rd_frame(model).to_csv(out / "rd_data.csv", index=False, float_format="%.10g")
        tables.bd_sequence_frame(model).to_csv(out / "bdrate_per_sequence.csv", index=False, float_format="%.10g")
        paths.update({"csv": out / "summary.csv", "csv:rd": out / "rd_data.csv",
                      "csv:bdrate": out / "bdrate_per_sequence.csv"})
        if vm is not None and vm.measured:
            vertex_frame(vm).to_csv(out / "vertices.csv", index=False, float_format="%.10g")
            paths["csv:vertices"] = out / "vertices.csv"
    if "xlsx" in fmts:
        tables.write_xlsx(model, out / "report.xlsx")
        paths["xlsx"] = out / "report.xlsx"
    if "json" in fmts:
        atomic_write_text(out / "summary.json", json.dumps(tables.summary_json(model), indent=1, sort_keys=True) + "\n")
        paths["json"] = out / "summary.json"
    if "txt" in fmts:
        atomic_write_text(out / "summary.txt", terminal_summary(model) + "\n")
        paths["txt"] = out / "summary.txt"

    prim, ref = plots.primary_and_reference(model)
    keep, plot_notes = plots.plottable(model, prim)
    keep_ref, _ = plots.plottable(model, [m for m in ref if model.computed(m)])
    img_fmts = [f for f in ("png", "svg") if f in fmts]
    # Markdown links PNG files and the Word document embeds them, so both need them even when png is not requested.
    file_fmts = img_fmts or (["png"] if fmts & {"md", "docx"} else [])
    # (file name, title, kind: "inline" | "sequence" | "vertex" | "fig6", maker)
    specs: list[tuple[str, str, str, Callable[[], Any]]] = []
    if keep:
        specs.append(("rd_average", "RD curves averaged over sequences (Figure 4 layout of the "
                      "Sparse2Dense paper); point labels: QP (key-frame QP for generative codecs)", "inline",
                      functools.partial(plots.figure_average, model, keep)))
    if keep_ref:
        specs.append(("rd_average_reference", "RD curves of the reference metrics, averaged over "
                      "sequences; point labels: QP", "inline",
                      functools.partial(plots.figure_average, model, keep_ref)))
    for m in keep + keep_ref:
        specs.append((f"rd_sequences_{m}", f"Per-sequence RD curves, {PLOT_AXIS.get(m, (metric_label(m),))[0]}",
                      "sequence", functools.partial(plots.figure_sequences, model, m)))
    if vm is not None and vm.measured:
        lab = " against PROXY references" if vm.proxy else ""
        specs.append(("vertex_rd", f"Rate vs vertex error and PCK (inter frames{lab}), averaged over "
                      "sequences; point labels: QP", "vertex", functools.partial(vx.figure_curves, vm, model)))
        for s in model.sequences:
            if any((c, s) in vm.samples for c in vm.codecs):
                specs.append((f"vertices_{_safe(s)}", f"{s}: decoded frames with reference "
                              f"({'PROXY, ' if vm.references.get(s, {}).get('proxy') else ''}magenta) and decoded "
                              "(green) vertices, highest rate point", "fig6", functools.partial(vx.figure_six, vm, s)))
    figs_md: list[dict[str, str]] = []
    html: dict[str, Any] = {"inline": [], "sequences": [], "vertex_curves": None, "fig6": []}
    numbered = 0
    for i, (name, title, kind, make) in enumerate(specs):  # Figure N in reading order
        if kind in ("inline", "vertex"):
            numbered += 1
            specs[i] = (name, f"Figure {numbered}. {title}", kind, make)
    if file_fmts or "html" in fmts:
        for name, title, kind, make in specs:
            fig = make()  # built once, written to every output that wants it
            if fig is None:
                continue
            raster = kind in ("sequence", "fig6")  # grids and pictures as PNG keep the HTML small
            png = None
            if (raster and "html" in fmts) or "png" in file_fmts:  # rendered once for the file and the HTML
                png = plots.png_bytes(fig, dpi=130 if kind == "fig6" else 100 if raster else 120)
            if "html" in fmts:
                if raster:
                    uri = "data:image/png;base64," + base64.b64encode(png or b"").decode()
                    html["sequences" if kind == "sequence" else "fig6"].append({"title": title, "uri": uri})
                else:  # inline SVG: sharp, searchable text
                    item = {"title": title, "svg": plots.svg_text(fig)}
                    if kind == "inline":
                        html["inline"].append(item)
                    else:
                        html["vertex_curves"] = item
            saved: dict[str, Path] = {}
            if "png" in file_fmts and png is not None:
                (out / f"{name}.png").write_bytes(png)
                saved["png"] = out / f"{name}.png"
            if "svg" in file_fmts and kind != "fig6":  # a picture gains nothing from SVG
                saved.update(plots.save(fig, out / name, ["svg"]))
            plots.close(fig)
            for f, p in saved.items():
                paths[f if name == "rd_average" else f"{f}:{name}"] = p
            if saved:
                figs_md.append({"name": name, "title": title, "kind": kind,
                                "png": f"{name}.png" if "png" in saved else "",
                                "svg": f"{name}.svg" if "svg" in saved else ""})
    f5_files, f5_html = _figure5_outputs(f5, out, fmts, paths)
    if "md" in fmts:
        md_figs = {"list": figs_md, "notes": plot_notes, "fig5": f5_files,
                   "vertex_curves": next((f for f in figs_md if f["kind"] == "vertex"), None),
                   "fig6": [f for f in figs_md if f["kind"] == "fig6"]}
        ctx = context(model, figures=md_figs)
        atomic_write_text(out / "report.md", render("report.md.j2", ctx))
        paths["md"] = out / "report.md"
    if "html" in fmts:
        ctx = context(model, figures={**html, "notes": plot_notes, "fig5": f5_html})
        atomic_write_text(out / "report.html", render("report.html.j2", ctx))
        paths["html"] = out / "report.html"
    if "tex" in fmts:
        paths["tex"] = _write_tex(model, out / "tables.tex", f5_files)
    if "docx" in fmts:
        from reports import docx_report  # lazy: python-docx loads only when a .docx is written

        ctx = context(model, figures={"notes": plot_notes, "list": figs_md})
        paths["docx"] = docx_report.write(out / "report.docx", ctx, model, figures=figs_md, fig5=f5_files,
                                          out_dir=out, meta=docx_meta)
    if model.run_dir is not None:  # pooled FVD: its own section (protocol, clips, BD-rate of averaged curves)
        paths.update(pooled_fvd.add_to_report(Path(model.run_dir), model.anchor, model.method, out, paths))
    if "viewer" in fmts and model.run_dir is not None:  # side-by-side viewer (reports/viewer.py)

        paths.update(write_viewer(Path(model.run_dir), out, originals=originals,
                                  title=f"GFVC side-by-side viewer: {model.condition_name}"))

    paths.update(subjective_report.add_to_report(model, out, paths, subjective))
    return paths


def _figure5_outputs(f5: fig5.Figure5, out: Path, fmts: set[str], paths: dict[str, Path]
                     ) -> tuple[dict[str, Any], dict[str, Any]]:
    """Draw each Figure-5 panel once: PNG files (png, md, tex, docx) and data URIs (html), figure5.json.

    Returns the template data {"items": [{"caption", "png" | "uri"}], "notes", "missing"} for files and HTML.
    """
    files: dict[str, Any] = {"items": [], "notes": f5.notes, "missing": f5.missing}
    html: dict[str, Any] = {"items": [], "notes": f5.notes, "missing": f5.missing}
    want_file = bool(fmts & {"png", "md", "tex", "docx"})
    if want_file or "html" in fmts:
        for p in f5.panels:
            data = fig5.png(p)
            if want_file:
                (out / f"{p.name}.png").write_bytes(data)
                paths[f"png:{p.name}"] = out / f"{p.name}.png"
                files["items"].append({"caption": p.caption(), "short_caption": p.short_caption(),
                                       "details": p.details(), "png": f"{p.name}.png", "name": p.name})
            if "html" in fmts:
                html["items"].append({"caption": p.caption(),
                                      "uri": "data:image/png;base64," + base64.b64encode(data).decode()})
    if "json" in fmts:
        atomic_write_text(out / "figure5.json", json.dumps(f5.to_dict(), indent=1, sort_keys=True) + "\n")
        paths["json:figure5"] = out / "figure5.json"
    return files, html


_safe = fig5.safe_name


def terminal_summary(model: ReportModel) -> str:
    """Table 1 (both aggregations), the reference metrics, the vertex numbers and the caveats, as text."""
    prim, ref = plots.primary_and_reference(model)
    prim_t = [m for m in prim if m in model.bd_metrics] or prim
    ref_t = [m for m in ref if m in model.bd_metrics and model.computed(m)]
    missing = incomplete_lines(model)
    lines = [f"GFVC CTC {model.condition_name} v{model.condition.get('version', '?')}: BD-rate (%) vs "
             f"{model.anchor}, method {model.method}, {len(model.sequences)} sequence(s); negative = bit savings"]
    if missing:
        lines += [""] + [missing[0]] + [f"  - {m}" for m in missing[1:]]
    for title, ms in (("Table 1", prim_t), ("Reference metrics", ref_t)):
        if not ms or not model.tests:
            continue
        groups, _, rows = tables.table1_both(model, ms)
        header, trows = ["Codec"], [[r[0]] for r in rows]
        col = 1
        for label, span in groups:  # one column per metric: "mean of seq. / avg. curve"
            header.append(label + (" (mean / curve)" if span == 2 else " (pooled)"))
            for tr, r in zip(trows, rows, strict=True):
                tr.append(" / ".join(r[col:col + span]))
            col += span
        lines += ["", f"{title}: BD-rate (%) vs {model.anchor}, {AGG_TEXT['mean-of-sequences']} / "
                  f"{AGG_TEXT['average-curve'].split(' (')[0]}"] + tables.text_table(header, trows)
    if model.variant_base:
        vh, vrows = tables.variant_table(model, [m for m in model.bd_metrics if model.computed(m)])
        lines += ["", "Stage variants: BD-rate (%) of each variant vs its base codec (mean of sequences / "
                  "averaged curve)"] + tables.text_table(vh, vrows)
    vm = model.vertex
    if vm is not None:
        tl = terminal_lines(vm, model)
        if tl:
            lines += [""] + tl
    notes = [n for n in banner(model) if n not in missing]
    if notes:
        lines += ["", "Read with care:"] + [f"  - {n}" for n in notes]
    return "\n".join(lines)


def _write_tex(model: ReportModel, path: Path, f5: dict[str, Any] | None = None) -> Path:
    prim, _ = plots.primary_and_reference(model)
    parts = [f"% GFVC CTC tables: {model.condition_name}, anchor {model.anchor}, method {model.method}, "
             f"{model.aggregation}", "% requires \\usepackage{booktabs}"]
    missing = incomplete_lines(model)
    if missing:
        parts.append("\n".join(f"% {m}" for m in missing))
    prim_t = [m for m in prim if m in model.bd_metrics] or prim
    _, h, rows = tables.table1_both(model, prim_t)
    parts.append(tables.tex_table(h, rows, f"BD-rate (%) vs {model.anchor}: {AGG_TEXT['mean-of-sequences']} "
                                  f"and {AGG_TEXT['average-curve']}", "tab:gfvc-bdrate"))
    for m in model.computed_bd_metrics:
        h, rows = tables.sequence_table(model, m)
        parts.append(tables.tex_table(h, rows, f"Per-sequence BD-rate (%), Rate-{metric_label(m)}, vs {model.anchor}",
                                      f"tab:gfvc-bdrate-{m}"))
    if model.variant_base:
        h, rows = tables.variant_table(model, [m for m in model.bd_metrics if model.computed(m)])
        parts.append(tables.tex_table(h, rows, "Stage variants: BD-rate (%) of each variant vs its base codec "
                                      "(mean of sequences / averaged curve)", "tab:gfvc-variants"))
    vm = model.vertex
    if vm is not None and vm.measured:
        h, rows = summary_table(vm, model)
        lab = " (against PROXY reference vertices)" if vm.proxy else ""
        parts.append(tables.tex_table(h, rows, f"Vertex error and PCK per codec and rate point{lab}",
                                      "tab:gfvc-vertices"))
    f5 = f5 or {}
    if f5.get("items"):
        parts[1] += ", \\usepackage{graphicx} (Figure 5)"
    for it in f5.get("items") or []:  # the PNG lies next to tables.tex
        parts.append("\n".join([r"\begin{figure}[htbp]", r"\centering",
                                rf"\includegraphics[width=\linewidth]{{{it['png']}}}",
                                rf"\caption{{Figure 5 layout. {tables.tex_escape(it['caption'])}}}",
                                rf"\label{{fig:gfvc-{it['name'].replace('_', '-')}}}", r"\end{figure}"]))
    if f5.get("missing"):
        parts.append(f"% {f5['missing']}")
    parts += [f"% Figure 5: {n}" for n in f5.get("notes") or []]
    notes = [f"% Read with care: {n}" for n in banner(model) if n not in missing]
    atomic_write_text(path, "\n\n".join(parts + notes) + "\n")
    return path
