"""One result model for every report emitter.

The model is built once from a run directory (``run.json`` + the results
table) and holds the RD data, the BD-rates (per sequence, mean of sequences
and averaged curve) and the notes on metrics that were not computed. Every
emitter (CSV, xlsx, Markdown, LaTeX, HTML, JSON, plots) reads this model, so
all outputs agree by construction.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from gfvc.errors import ConfigError, InputError
from gfvc.records import iter_records
from reports import bdrate as bd
from reports.completeness import Completeness, completeness
from reports.curves import Pair, compare_pair, curve  # noqa: F401  (public names of the result model)
from reports.vertex_model import build_vertex_model

# Value names the suite's metrics produce, in report order (others follow in name order).
KNOWN_METRICS: tuple[str, ...] = ("psnr", "psnr_y", "psnr_yuv", "psnr_u", "psnr_v", "ssim", "dists", "lpips", "fvd")
# The paper's Table 1 / Figure 4 metrics (rows Rate-DISTS, Rate-LPIPS, Rate-FVD).
PRIMARY_METRICS: tuple[str, ...] = ("dists", "lpips", "fvd")
LABELS: dict[str, str] = {"psnr": "PSNR", "psnr_y": "PSNR-Y", "ssim": "SSIM", "dists": "DISTS",
                          "lpips": "LPIPS", "fvd": "FVD", "psnr_yuv": "PSNR-YUV", "psnr_u": "PSNR-U",
                          "psnr_v": "PSNR-V"}
# Labels of per-plane sub-values recorded inside a metric entry (e.g. VTM-log PSNR per plane).
SUB_LABELS: dict[str, str] = {"y": "Y", "u": "U", "v": "V", "yuv": "YUV", "cb": "Cb", "cr": "Cr",
                              "r": "R", "g": "G", "b": "B"}
# Quality axis of the paper's plots: (label, transform of the raw value).
PLOT_AXIS: dict[str, tuple[str, Any]] = {
    "dists": ("1-DISTS", lambda v: 1.0 - v),
    "lpips": ("1-LPIPS", lambda v: 1.0 - v),
    "fvd": ("5000-FVD", lambda v: 5000.0 - v),
    "psnr": ("PSNR (dB)", lambda v: v),
    "psnr_y": ("PSNR-Y (dB)", lambda v: v),
    "ssim": ("SSIM", lambda v: v),
}
AGGREGATIONS = ("mean-of-sequences", "average-curve")


def metric_label(name: str) -> str:
    if "." in name:  # a sub-value "metric.sub[.sub]"
        head, *rest = name.split(".")
        return f"{metric_label(head)} {'-'.join(SUB_LABELS.get(r.lower(), r) for r in rest)}"
    return LABELS.get(name, name.upper().replace("_", "-"))


@dataclass
class MetricNote:
    """Why a metric has no (or only some) values: shown in every report."""

    metric: str
    status: str  # "not_computed" (no value at all) or "partial"
    reason: str
    missing: int
    total: int


@dataclass
class ReportModel:
    run_dir: Path | None
    run: dict[str, Any]
    df: Any  # pandas.DataFrame
    anchor: str
    tests: list[str]
    codecs: list[str]
    sequences: list[str]
    metrics: list[str]
    bd_metrics: list[str]
    method: str
    aggregation: str
    pairs: dict[tuple[str, str], Pair] = field(default_factory=dict)
    notes: dict[str, MetricNote] = field(default_factory=dict)
    anchor_note: str = ""
    # From the records themselves (when the run directory is known):
    details: Any = None  # pandas.DataFrame of per-plane sub-values, or None
    protocols: dict[str, Any] = field(default_factory=dict)  # metric -> its recorded protocol
    vertex: Any = None  # reports.vertices.VertexModel, or None when no record has vertex metrics
    skipped_bd: dict[str, str] = field(default_factory=dict)  # metric -> why no BD-rate
    # Aggregate RD points a run computes over all sequences at once (e.g. pooled FVD):
    # metric -> codec -> (kbps per rate point, value per rate point); BD-rate on the curves only.
    pooled: dict[str, dict[str, tuple[list[float], list[float]]]] = field(default_factory=dict)
    pooled_pairs: dict[tuple[str, str], bd.BdResult] = field(default_factory=dict)
    # Stage variants (condition ``variants:``) against their base codec: (variant, metric) -> Pair whose
    # anchor is ``variant_base[variant]``; ``stages`` = each codec's stage choices from its records.
    variant_base: dict[str, str] = field(default_factory=dict)
    variant_pairs: dict[tuple[str, str], Pair] = field(default_factory=dict)
    stages: dict[str, dict[str, Any]] = field(default_factory=dict)
    # planned jobs without a result (reports.completeness), when the run directory is known
    completeness: Completeness | None = None

    @property
    def condition(self) -> dict[str, Any]:
        return self.run.get("condition") or {}

    @property
    def condition_name(self) -> str:
        return str(self.run.get("condition_name") or self.condition.get("name") or "?")

    @property
    def fingerprint(self) -> str:
        return str(self.run.get("condition_fingerprint") or "")

    @property
    def computed_bd_metrics(self) -> list[str]:
        return [m for m in self.bd_metrics if self.computed(m)]

    def computed(self, metric: str) -> bool:
        n = self.notes.get(metric)
        return not (n and n.status == "not_computed")


def load_run(run_dir: Path) -> dict[str, Any]:
    """run.json of a run directory (typed error if missing or unreadable)."""
    p = Path(run_dir) / "run.json"
    try:
        data = json.loads(p.read_text())
    except (FileNotFoundError, NotADirectoryError):
        raise InputError(f"{run_dir}: no run.json; is this a gfvc run directory?") from None
    except ValueError as e:
        raise InputError(f"{p}: not valid JSON: {e}") from None
    except OSError as e:  # a folder named run.json, no permission
        raise InputError(f"{p}: cannot be read: {e.strerror or e}") from None
    if not isinstance(data, dict):
        raise InputError(f"{p}: expected a JSON object")
    return data


def metric_columns(df: Any) -> list[str]:
    """Metric value columns of a results table, known names first."""
    cols = [m for m in KNOWN_METRICS if m in df.columns]
    extra = sorted(c for c in df.columns if c.endswith("_status") and c not in ("status",)
                   and c[: -len("_status")] in df.columns and c[: -len("_status")] not in cols)
    return cols + [c[: -len("_status")] for c in extra]


def recorded_by(df: Any, metric: str) -> set[str]:
    """Codecs whose records list ``metric`` (with a value or a not-computed status)."""
    scol = f"{metric}_status"
    if scol not in df.columns:
        return set(df.loc[df[metric].notna(), "codec"]) if metric in df.columns else set()
    return set(df.loc[df[scol].notna() | df[metric].notna(), "codec"])


def _notes(df: Any, metrics: list[str]) -> dict[str, MetricNote]:
    """Metrics without a value where a record lists them. A metric that some codecs do not produce
    at all (e.g. a PSNR only anchors record) is not a missing value for those codecs."""
    out: dict[str, MetricNote] = {}
    for m in metrics:
        listed = df["codec"].isin(recorded_by(df, m))
        vals = df.loc[listed, m].astype(float)
        missing = int(vals.isna().sum())
        if missing == 0:
            continue
        rcol = f"{m}_reason"
        reasons = (sorted({str(r) for r in df.loc[listed & df[m].isna(), rcol].dropna()})
                   if rcol in df.columns else [])
        reason = "; ".join(reasons) if reasons else "no value recorded (no reason given)"
        status = "not_computed" if missing == len(vals) else "partial"
        out[m] = MetricNote(m, status, reason, missing, int(len(vals)))
    return out


def load_records(run_dir: Path) -> list[dict[str, Any]]:
    """The successful records of a run (for what the results table does not carry)."""
    return [r for r in iter_records(run_dir) if r.get("status") == "ok"]


def _sub_values(entry: dict[str, Any], prefix: str) -> dict[str, float]:
    """Per-plane sub-values of a metric entry (keys named like planes: y, u, v, yuv, cb, cr, r, g, b),
    found at the top level or one mapping down (e.g. ``{"planes": {"y": ...}}``), as ``prefix.key``."""
    out: dict[str, float] = {}
    for k, v in entry.items():
        if isinstance(v, dict):
            for k2, v2 in v.items():
                if str(k2).lower() in SUB_LABELS and _finite_number(v2):
                    out[f"{prefix}.{str(k2).lower()}"] = float(v2)
        elif str(k).lower() in SUB_LABELS and _finite_number(v):
            out[f"{prefix}.{str(k).lower()}"] = float(v)
    return out


def _finite_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v))


def record_details(records: list[dict[str, Any]]) -> tuple[Any, dict[str, bool], dict[str, Any]]:
    """(per-plane sub-values table or None, metric polarity from the records, metric protocols)."""
    import pandas as pd

    rows: list[dict[str, Any]] = []
    polarity: dict[str, bool] = {}
    protocols: dict[str, Any] = {}
    for r in records:
        row: dict[str, Any] = {"codec": r["codec"], "sequence": r["sequence"]["name"],
                               "qp": r["rate_point"]["qp"], "kbps": r.get("kbps")}
        for name, m in (r.get("metrics") or {}).items():
            if not isinstance(m, dict):
                continue
            if isinstance(m.get("lower_is_better"), bool):
                polarity.setdefault(name, m["lower_is_better"])
            row.update(_sub_values(m, name))
        for name, p in (r.get("metric_protocol") or {}).items():
            protocols.setdefault(name, p)
        if len(row) > 4:
            rows.append(row)
    df = pd.DataFrame(rows) if rows else None
    if df is not None:  # plane columns in a fixed order (Y, U, V, YUV, ...), whatever the records' key order
        planes = list(SUB_LABELS)
        subs = sorted((c for c in df.columns if "." in c),
                      key=lambda c: (c.split(".")[0], planes.index(c.split(".")[-1])))
        df = df[["codec", "sequence", "qp", "kbps"] + subs]
    return df, polarity, protocols


def build_model(df: Any, run: dict[str, Any], *, run_dir: Path | None = None, anchor: str | None = None,
                method: str | None = None, aggregation: str | None = None, bootstrap: int = 0,
                seed: int = 0, records: list[dict[str, Any]] | None = None,
                pooled: dict[str, dict[str, tuple[list[float], list[float]]]] | None = None) -> ReportModel:
    """Compute every BD-rate of a results table (the one place where they are computed).

    ``records`` (default: read from ``run_dir`` when given) add what the table
    does not carry: per-plane sub-values of metrics, metric polarity and
    protocols, and the vertex metrics (reports/vertices.py). ``pooled`` adds
    aggregate RD points computed over all sequences at once (see ReportModel).
    """
    cond = run.get("condition") or {}
    bds = cond.get("bdrate") or {}
    anchor = anchor or bds.get("anchor") or "vvenc"
    method = method or bds.get("method") or "jvet"
    aggregation = aggregation or bds.get("aggregation") or "mean-of-sequences"
    if method not in bd.METHODS:
        raise ConfigError(f"unknown BD-rate method {method!r} (known: {', '.join(bd.METHODS)})")
    if aggregation not in AGGREGATIONS:
        raise ConfigError(f"unknown BD-rate aggregation {aggregation!r} (known: {', '.join(AGGREGATIONS)})")
    if df is None or df.empty:
        raise InputError(f"{run_dir or 'run'}: no successful records to report")
    order = list(cond.get("codecs") or [])
    present = list(dict.fromkeys(df["codec"]))
    codecs = [c for c in order if c in present] + sorted(c for c in present if c not in order)
    tests = [c for c in codecs if c != anchor]
    sequences = sorted(dict.fromkeys(df["sequence"]))
    metrics = metric_columns(df)
    wanted = list(bds.get("metrics") or PRIMARY_METRICS)
    bd_metrics = [m for m in wanted if m in metrics] + [m for m in metrics if m not in wanted]
    model = ReportModel(run_dir=run_dir, run=run, df=df, anchor=anchor, tests=tests, codecs=codecs,
                        sequences=sequences, metrics=metrics, bd_metrics=bd_metrics, method=method,
                        aggregation=aggregation, notes=_notes(df, metrics))
    for m in wanted:
        if m not in metrics:
            model.notes[m] = MetricNote(m, "not_computed", "metric not in the run's records", 0, 0)
    if anchor not in present:
        model.anchor_note = (f"anchor {anchor!r} has no successful records in this run "
                             f"(codecs: {', '.join(present)}); BD-rates are not computed")
    if run_dir is not None:
        model.completeness = completeness(Path(run_dir), run)
    if records is None and run_dir is not None:
        records = load_records(run_dir)
    polarity: dict[str, bool] = {}
    if records:
        model.details, polarity, model.protocols = record_details(records)
        model.vertex = build_vertex_model(records, model, method=method)
    for test in tests:
        for m in bd_metrics:
            if not model.computed(m):  # stated once in the notes, not as N flagged cells
                continue
            if not {anchor, test} <= recorded_by(df, m):  # a metric this codec does not produce
                continue
            try:
                lower = polarity[m] if m in polarity else bd.lower_is_better(m)
            except ConfigError as e:
                model.skipped_bd[m] = str(e)
                continue
            model.pairs[(test, m)] = compare_pair(df, df, anchor, test, m, method=method, lower=lower,
                                                  bootstrap=bootstrap, seed=seed, anchor_note=model.anchor_note)
    model.bd_metrics = [m for m in model.bd_metrics if m not in model.skipped_bd
                        and (anchor not in present or (anchor in recorded_by(df, m) and len(recorded_by(df, m)) > 1))]
    current = set(df["key"]) if "key" in df.columns else None  # the records the table holds (not superseded ones)
    for rec in records or []:
        if rec.get("stages") and rec.get("status") == "ok" and (current is None or rec.get("key") in current):
            model.stages.setdefault(rec["codec"], rec["stages"])
    _variant_pairs(model, cond, present, polarity, bootstrap, seed)
    for m, curves in (pooled or {}).items():
        model.pooled[m] = curves
        if anchor not in curves:
            continue
        lower = polarity.get(m, bd.lower_is_better(m) if m in KNOWN_METRICS else True)
        for test in tests:
            if test in curves:
                (ra, qa), (rt, qt) = curves[anchor], curves[test]
                model.pooled_pairs[(test, m)] = bd.bd_rate(ra, qa, rt, qt, method=method, lower_is_better=lower)
    return model


def _variant_pairs(model: ReportModel, cond: dict[str, Any], present: list[str], polarity: dict[str, bool],
                   bootstrap: int, seed: int) -> None:
    """BD-rate of every variant that ran against its base codec (when that ran too), per BD metric."""
    for name, spec in (cond.get("variants") or {}).items():
        base = (spec or {}).get("codec")
        if name not in present or base not in present:
            continue
        model.variant_base[name] = base
        for m in model.bd_metrics:
            if not model.computed(m) or not {name, base} <= recorded_by(model.df, m):
                continue
            lower = polarity[m] if m in polarity else bd.lower_is_better(m)
            model.variant_pairs[(name, m)] = compare_pair(model.df, model.df, base, name, m, method=model.method,
                                                          lower=lower, bootstrap=bootstrap, seed=seed)


def finite(v: Any) -> bool:
    return isinstance(v, (int, float, np.floating)) and math.isfinite(float(v))
