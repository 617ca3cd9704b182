"""Contribution documents (Markdown and self-contained HTML) and ``build_report``.

The HTML embeds its figures (inline SVG for the Figure-4 panels, base64 PNG
for the per-sequence appendix), so the one file opens offline and can be
attached to a JVET contribution. Metrics that were not computed are stated
with their reason in the results section, never hidden.
"""
from __future__ import annotations

import base64
import hashlib
import json
import shlex
from pathlib import Path
from typing import Any, Sequence

import jinja2

from reports import plots, tables
from reports.model import PLOT_AXIS, ReportModel, build_model, load_run, metric_label

TEMPLATES = Path(__file__).resolve().parent / "templates"
ALL_FORMATS: tuple[str, ...] = ("md", "html", "csv", "xlsx", "tex", "json", "png", "svg")

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
    return jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES)), autoescape=jinja2.select_autoescape(
        enabled_extensions=("html.j2",), default_for_string=False), keep_trailing_newline=True,
        trim_blocks=True, lstrip_blocks=True, undefined=jinja2.StrictUndefined)


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
    for s in model.sequences:
        sub = df[df["sequence"] == s]
        first = sub.iloc[0]
        rows.append({"name": s, "sha256": str(first.get("sequence_sha256", "")),
                     "frames": str(first.get("frames", "")), "fps": _fmt(first.get("fps"))})
    return rows


def _records_digest(model: ReportModel) -> str:
    keys = sorted(str(k) for k in model.df.get("key", []))
    return hashlib.sha256("\n".join(keys).encode()).hexdigest()


def context(model: ReportModel, *, figures: dict[str, Any] | None = None) -> dict[str, Any]:
    """Everything the templates show (plain data; the HTML template escapes it)."""
    from gfvc import __version__

    prim, ref = plots.primary_and_reference(model)
    other = "average-curve" if model.aggregation == "mean-of-sequences" else "mean-of-sequences"
    t1 = tables.table1(model, [m for m in prim if m in model.bd_metrics] or prim)
    t1_other = tables.table1(model, [m for m in prim if m in model.bd_metrics] or prim, aggregation=other)
    t_ref = tables.table1(model, [m for m in ref if m in model.bd_metrics]) if ref else None
    notes = [_note_text(n) for n in model.notes.values()]
    codecs = []
    for c in model.codecs:
        fam = model.df.loc[model.df["codec"] == c, "family"]
        codecs.append({"name": c, "role": "anchor" if c == model.anchor else "test",
                       "family": str(fam.iloc[0]) if len(fam) else "",
                       "provenance": flatten((model.run.get("codecs") or {}).get(c) or {})})
    run_dir_arg = str(model.run_dir) if model.run_dir else "RUN_DIR"
    seq_tables = [{"metric": m, "label": metric_label(m), "table": tables.sequence_table(model, m)}
                  for m in model.computed_bd_metrics]
    rd_tables = [{"codec": c, "table": tables.rd_text_table(model, c)} for c in model.codecs]
    argv = model.run.get("argv") or []
    return {
        "title": f"GFVC CTC results: {model.condition_name} v{model.condition.get('version', '?')}",
        "condition_name": model.condition_name,
        "condition_version": model.condition.get("version", "?"),
        "fingerprint": model.fingerprint,
        "created": model.run.get("created", "(unknown)"),
        "suite_version": model.run.get("suite_version", "(unknown)"),
        "generated_by": f"gfvc {__version__}",
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
        "other_aggregation": other,
        "other_aggregation_text": AGG_TEXT[other],
        "table1": t1, "table1_other": t1_other, "table_ref": t_ref,
        "notes": notes,
        "flagged": tables.flagged(model),
        "seq_tables": seq_tables,
        "rd_tables": rd_tables,
        "figures": figures or {},
        "run_argv": " ".join(shlex.quote(str(a)) for a in argv) if argv else "(not recorded)",
        "report_cmd": f"gfvc report {shlex.quote(run_dir_arg)} --anchor {shlex.quote(model.anchor)}",
        "sequences": _sequences(model),
        "sequence_rows": [[r["name"], r["sha256"], r["frames"], r["fps"]] for r in _sequences(model)],
        "records_digest": _records_digest(model),
        "n_records": int(len(model.df)),
        "axis_labels": {m: PLOT_AXIS.get(m, (metric_label(m),))[0] for m in model.metrics},
        "md_table": tables.md_table,
    }


def _note_text(n: Any) -> str:
    if n.status == "not_computed":
        return f"{metric_label(n.metric)}: not computed ({n.reason})"
    return f"{metric_label(n.metric)}: missing for {n.missing} of {n.total} rate points ({n.reason})"


def render(template: str, ctx: dict[str, Any]) -> str:
    return _env().get_template(template).render(**ctx)


def build_report(run_dir: Path, *, anchor: str | None = None, formats: tuple[str, ...] = ALL_FORMATS,
                 out_dir: Path | None = None, method: str | None = None, aggregation: str | None = None,
                 bootstrap: int = 0, seed: int = 0, allow_mixed_devices: bool = False) -> dict[str, Path]:
    """Write the report of a run; returns {format or "format:name": path}.

    Primary keys: ``md`` report.md, ``html`` report.html, ``tex`` tables.tex,
    ``json`` summary.json, ``xlsx`` report.xlsx, ``csv`` summary.csv (plus
    ``csv:rd`` rd_data.csv and ``csv:bdrate`` bdrate_per_sequence.csv),
    ``png``/``svg`` the Figure-4 plot (plus ``png:<name>``/``svg:<name>``
    per-sequence plots).
    """
    from gfvc.errors import ConfigError
    from gfvc.records import results_table

    unknown = sorted(set(formats) - set(ALL_FORMATS))
    if unknown:
        raise ConfigError(f"unknown report format(s) {', '.join(unknown)} (known: {', '.join(ALL_FORMATS)})")
    from gfvc.devices import check_uniform_devices
    from gfvc.records import iter_records

    run_dir = Path(run_dir)
    run = load_run(run_dir)
    check_uniform_devices((r for r in iter_records(run_dir) if r.get("status") == "ok"),
                          allow=allow_mixed_devices, what=f"the records of {run_dir}")
    df = results_table(run_dir)
    model = build_model(df, run, run_dir=run_dir, anchor=anchor, method=method, aggregation=aggregation,
                        bootstrap=bootstrap, seed=seed)
    out = Path(out_dir) if out_dir else run_dir / "report"
    paths = write_report(model, out, formats)
    from reports import pooled_fvd  # self-contained section: pooled FVD table and its BD-rate

    paths.update(pooled_fvd.add_to_report(run_dir, model.anchor, model.method, out, paths))
    return paths


def write_report(model: ReportModel, out: Path, formats: Sequence[str] = ALL_FORMATS) -> dict[str, Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    fmts = set(formats)
    if "csv" in fmts:
        tables.summary_frame(model).to_csv(out / "summary.csv", index=False, float_format="%.10g")
        tables.rd_frame(model).to_csv(out / "rd_data.csv", index=False, float_format="%.10g")
        tables.bd_sequence_frame(model).to_csv(out / "bdrate_per_sequence.csv", index=False, float_format="%.10g")
        paths.update({"csv": out / "summary.csv", "csv:rd": out / "rd_data.csv",
                      "csv:bdrate": out / "bdrate_per_sequence.csv"})
    if "xlsx" in fmts:
        tables.write_xlsx(model, out / "report.xlsx")
        paths["xlsx"] = out / "report.xlsx"
    if "json" in fmts:
        (out / "summary.json").write_text(json.dumps(tables.summary_json(model), indent=1, sort_keys=True) + "\n")
        paths["json"] = out / "summary.json"
    if "tex" in fmts:
        paths["tex"] = _write_tex(model, out / "tables.tex")

    prim, ref = plots.primary_and_reference(model)
    keep, plot_notes = plots.plottable(model, prim)
    keep_ref, _ = plots.plottable(model, ref)
    img_fmts = [f for f in ("png", "svg") if f in fmts]
    # Markdown links PNG files, so it needs them even when png is not requested.
    file_fmts = img_fmts or (["png"] if "md" in fmts else [])
    specs = []
    if keep:
        specs.append(("rd_average", "RD curves averaged over sequences (Figure 4 layout)", True,
                      lambda: plots.figure_average(model, keep)))
    if keep_ref:
        specs.append(("rd_average_reference", "RD curves of the reference metrics (PSNR/SSIM)", True,
                      lambda: plots.figure_average(model, keep_ref)))
    for m in keep + keep_ref:
        specs.append((f"rd_sequences_{m}", f"Per-sequence RD curves, {PLOT_AXIS.get(m, (m,))[0]}", False,
                      lambda m=m: plots.figure_sequences(model, m)))
    figs_md: list[dict[str, str]] = []
    html_figs: list[dict[str, str]] = []
    seq_figs: list[dict[str, str]] = []
    if file_fmts or "html" in fmts:
        for name, title, is_average, make in specs:
            fig = make()  # built once, written to every output that wants it
            if "html" in fmts:
                if is_average:  # inline SVG: sharp, searchable text
                    html_figs.append({"title": title, "svg": plots.svg_text(fig)})
                else:  # per-sequence grids as PNG keep the HTML small
                    uri = "data:image/png;base64," + base64.b64encode(plots.png_bytes(fig)).decode()
                    seq_figs.append({"title": title, "uri": uri})
            saved = plots.save(fig, out / name, file_fmts)  # closes the figure
            for f, p in saved.items():
                paths[f if name == "rd_average" else f"{f}:{name}"] = p
            if saved:
                figs_md.append({"name": name, "title": title, "png": f"{name}.png" if "png" in saved else "",
                                "svg": f"{name}.svg" if "svg" in saved else ""})
    if "md" in fmts:
        ctx = context(model, figures={"list": figs_md, "notes": plot_notes})
        (out / "report.md").write_text(render("report.md.j2", ctx))
        paths["md"] = out / "report.md"
    if "html" in fmts:
        ctx = context(model, figures={"inline": html_figs, "sequences": seq_figs, "notes": plot_notes})
        (out / "report.html").write_text(render("report.html.j2", ctx))
        paths["html"] = out / "report.html"
    return paths


def _write_tex(model: ReportModel, path: Path) -> Path:
    prim, ref = plots.primary_and_reference(model)
    parts = [f"% GFVC CTC tables: {model.condition_name}, anchor {model.anchor}, method {model.method}, "
             f"{model.aggregation}", "% requires \\usepackage{booktabs}"]
    h, rows = tables.table1(model, [m for m in prim if m in model.bd_metrics] or prim)
    parts.append(tables.tex_table(h, rows, f"BD-rate (%) vs {model.anchor}, {AGG_TEXT[model.aggregation]}",
                                  "tab:gfvc-bdrate"))
    for m in model.computed_bd_metrics:
        h, rows = tables.sequence_table(model, m)
        parts.append(tables.tex_table(h, rows, f"Per-sequence BD-rate (%), Rate-{metric_label(m)}, vs {model.anchor}",
                                      f"tab:gfvc-bdrate-{m}"))
    notes = [f"% Metrics not computed: {metric_label(n.metric)}: {n.status}: {n.reason}" for n in model.notes.values()]
    path.write_text("\n\n".join(parts + notes) + "\n")
    return path
