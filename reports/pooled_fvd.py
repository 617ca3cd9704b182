"""Pooled FVD: one FVD per codec and rate point over the clips of all sequences.

Why: a per-sequence FVD on a 150-frame CTC sequence fits a 400-d Gaussian to
9 clips (covariance rank <= 8 of 400); over the 30 sequences of a codec's
rate point there are 270 clips per side, which is the form a CTC table needs
(Unterthiner et al. 2018 compute FVD over sets of videos). Every job keeps the
I3D clip features of its decoded video and of the reference
(``fvd_clip_features.npy`` / ``fvd_ref_clip_features.npy`` in its job folder,
listed in the record's artifacts), so the pooled values are computed here, at
report time, without decoding anything again.

Protocol: for codec c and rate point r, the decoded clips of every sequence of
(c, r) against the reference clips of the same sequences, Fréchet distance as
in metrics.fvd.frechet_distance (ddof=1, sqrtm real part); clip length, stride
and detector must be the same in every pooled record. Only sequences present
for every codec and rate point are pooled (the same content on every point).
The rate of a point is the mean kbps over those sequences, so the BD-rate on
pooled FVD is a BD-rate of averaged curves (the "average-curve" aggregation),
never a mean of per-sequence BD-rates.
"""
from __future__ import annotations

import html
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from gfvc.fileio import read_npy
from gfvc.records import iter_records
from reports import bdrate as bd

AGGREGATION = "average-curve"
FEATURES_WHAT = "kept FVD clip features"
FEATURES_FIX = "the run folder was damaged: rerun that job with --force (or remove the record) and report again"


@dataclass
class PooledPoint:
    codec: str
    qp: int
    rate_point: str
    kbps: float | None
    fvd: float | None
    sequences: int
    clips: int
    reason: str = ""


@dataclass
class PooledFvd:
    protocol: dict[str, Any]
    sequences: list[str]
    excluded: dict[str, str]
    points: list[PooledPoint]
    bdrate: dict[str, bd.BdResult] = field(default_factory=dict)
    anchor: str = ""
    method: str = "jvet"
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"protocol": self.protocol, "aggregation": AGGREGATION, "anchor": self.anchor, "method": self.method,
                "sequences": self.sequences, "excluded_sequences": self.excluded, "notes": self.notes,
                "points": [p.__dict__ for p in self.points],
                "bdrate": {t: r.to_dict() for t, r in self.bdrate.items()}}


def _protocol_of(rec: dict[str, Any]) -> tuple:
    p = (rec.get("metric_protocol") or {}).get("fvd") or {}
    return (p.get("clip_length"), p.get("stride"), p.get("resolution"), p.get("detector"), p.get("detector_sha256"))


def compute(run_dir: Path, records: Iterable[dict[str, Any]], *, anchor: str, method: str = "jvet") -> PooledFvd | None:
    """Pooled FVD of every codec and rate point with kept clip features; None when no record has them."""
    # lazy: loads torch (start-up time of the modules that import this one)
    from metrics.fvd import frechet_distance

    run_dir = Path(run_dir)
    usable = [r for r in records if r.get("status") == "ok"
              and "fvd_clip_features" in (r.get("artifacts") or {})
              and "fvd_ref_clip_features" in (r.get("artifacts") or {})]
    if not usable:
        return None
    protos = {_protocol_of(r) for r in usable}
    notes: list[str] = []
    if len(protos) > 1:  # never pool clips of different protocols: keep the most common one, say so
        counts: dict[tuple, int] = {}
        for r in usable:
            counts[_protocol_of(r)] = counts.get(_protocol_of(r), 0) + 1
        keep = max(counts, key=lambda k: counts[k])
        notes.append(f"records with another FVD protocol left out: {sorted(set(protos) - {keep})}")
        usable = [r for r in usable if _protocol_of(r) == keep]
    clip_length, stride, resolution, detector, _ = _protocol_of(usable[0])
    groups: dict[tuple[str, int, str], dict[str, dict[str, Any]]] = {}
    for r in usable:
        groups.setdefault((r["codec"], r["rate_point"]["qp"], r["rate_point"]["label"]), {})[r["sequence"]["name"]] = r
    all_seqs = sorted({s for g in groups.values() for s in g})
    common = [s for s in all_seqs if all(s in g for g in groups.values())]
    excluded = {s: "not coded (with kept FVD features) by every codec at every rate point"
                for s in all_seqs if s not in common}
    points: list[PooledPoint] = []
    for (codec, qp, label), g in sorted(groups.items(), key=lambda kv: (kv[0][0], -kv[0][1])):
        recs = [g[s] for s in common]
        if not recs:
            points.append(PooledPoint(codec, qp, label, None, None, 0, 0, "no sequence common to all points"))
            continue
        dist = np.concatenate([read_npy(run_dir / r["artifacts"]["fvd_clip_features"], FEATURES_WHAT, FEATURES_FIX)
                               for r in recs])
        ref = np.concatenate([read_npy(run_dir / r["artifacts"]["fvd_ref_clip_features"], FEATURES_WHAT,
                                       FEATURES_FIX) for r in recs])
        kbps = float(np.mean([r["kbps"] for r in recs]))
        if min(len(dist), len(ref)) < 2:
            points.append(PooledPoint(codec, qp, label, kbps, None, len(recs), len(dist),
                                      "fewer than 2 clips in the pool (covariance ddof=1)"))
            continue
        v = frechet_distance(ref, dist)
        points.append(PooledPoint(codec, qp, label, kbps, float(v) if np.isfinite(v) else None, len(recs), len(dist),
                                  f"covariance rank <= {len(dist) - 1} of {dist.shape[1]}"))
    protocol = {"clip_length": clip_length, "stride": stride, "resolution": resolution, "detector": detector,
                "pooling": "all clips of the common sequences per codec and rate point",
                "rate": "mean kbps over the pooled sequences", "bdrate_aggregation": AGGREGATION}
    out = PooledFvd(protocol=protocol, sequences=common, excluded=excluded, points=points, anchor=anchor,
                    method=method, notes=notes)
    by_codec: dict[str, list[PooledPoint]] = {}
    for p in points:
        by_codec.setdefault(p.codec, []).append(p)
    if anchor in by_codec:
        a = [p for p in by_codec[anchor] if p.fvd is not None and p.kbps is not None]
        for codec, pts in by_codec.items():
            if codec == anchor:
                continue
            t = [p for p in pts if p.fvd is not None and p.kbps is not None]
            out.bdrate[codec] = bd.bd_rate([float(p.kbps or 0) for p in a], [float(p.fvd or 0) for p in a],
                                           [float(p.kbps or 0) for p in t], [float(p.fvd or 0) for p in t],
                                           method=method, lower_is_better=True)  # None filtered above
    else:
        notes.append(f"anchor {anchor!r} has no pooled FVD points; no BD-rate")
    return out


def _fmt(v: float | None, digits: int = 2) -> str:
    return "n/a" if v is None or not np.isfinite(v) else f"{v:.{digits}f}"


def markdown(p: PooledFvd) -> str:
    lines = ["", "## Pooled FVD (all sequences' clips per codec and rate point)", "",
             f"Protocol: clip length {p.protocol['clip_length']}, stride {p.protocol['stride']}, "
             f"{p.protocol['resolution']}px, detector {p.protocol['detector']}; {len(p.sequences)} sequence(s) "
             f"pooled; rate = mean kbps over them. BD-rate on pooled FVD uses the **averaged-curve** aggregation "
             f"(method {p.method}), not the mean of per-sequence BD-rates.", "",
             "| codec | rate point | kbps (mean) | pooled FVD | sequences | clips | note |",
             "|---|---|---:|---:|---:|---:|---|"]
    for q in p.points:
        lines.append(f"| {q.codec} | {q.rate_point} | {_fmt(q.kbps)} | {_fmt(q.fvd)} | {q.sequences} | {q.clips} "
                     f"| {q.reason} |")
    if p.bdrate:
        lines += ["", f"| BD-rate (%) vs {p.anchor}, Rate-pooled-FVD, averaged curve | value |", "|---|---:|"]
        for codec, r in p.bdrate.items():
            lines.append(f"| {codec} | {r.cell(2)} |")
    for s, why in p.excluded.items():
        lines.append(f"\nSequence {s} not pooled: {why}.")
    for n in p.notes:
        lines.append(f"\nNote: {n}.")
    return "\n".join(lines) + "\n"


def html_section(p: PooledFvd) -> str:
    esc = html.escape
    rows = "".join(f"<tr><td>{esc(q.codec)}</td><td>{esc(q.rate_point)}</td><td>{_fmt(q.kbps)}</td>"
                   f"<td>{_fmt(q.fvd)}</td><td>{q.sequences}</td><td>{q.clips}</td><td>{esc(q.reason)}</td></tr>"
                   for q in p.points)
    bdrows = "".join(f"<tr><td>{esc(c)}</td><td>{esc(r.cell(2))}</td></tr>" for c, r in p.bdrate.items())
    notes = "".join(f"<p>Sequence {esc(s)} not pooled: {esc(w)}.</p>" for s, w in p.excluded.items())
    notes += "".join(f"<p>Note: {esc(n)}.</p>" for n in p.notes)
    return (f'<section id="pooled-fvd"><h2>Pooled FVD (all sequences\' clips per codec and rate point)</h2>'
            f"<p>Protocol: clip length {p.protocol['clip_length']}, stride {p.protocol['stride']}, "
            f"{p.protocol['resolution']}px, detector {esc(str(p.protocol['detector']))}; {len(p.sequences)} "
            f"sequence(s) pooled; rate = mean kbps over them. BD-rate on pooled FVD uses the <b>averaged-curve</b> "
            f"aggregation (method {esc(p.method)}), not the mean of per-sequence BD-rates.</p>"
            f"<table><thead><tr><th>codec</th><th>rate point</th><th>kbps (mean)</th><th>pooled FVD</th>"
            f"<th>sequences</th><th>clips</th><th>note</th></tr></thead><tbody>{rows}</tbody></table>"
            + (f"<table><thead><tr><th>BD-rate (%) vs {esc(p.anchor)}, Rate-pooled-FVD, averaged curve</th>"
               f"<th>value</th></tr></thead><tbody>{bdrows}</tbody></table>" if bdrows else "")
            + notes + "</section>")


def csv_frame(p: PooledFvd):
    import pandas as pd

    return pd.DataFrame([{**q.__dict__, "bdrate_vs_anchor": (p.bdrate[q.codec].value if q.codec in p.bdrate else None)}
                         for q in p.points])


def add_to_report(run_dir: Path, anchor: str, method: str, out: Path, paths: dict[str, Path]) -> dict[str, Path]:
    """Append the pooled-FVD section to the report files already written (self-contained hook)."""
    import json

    p = compute(run_dir, iter_records(run_dir), anchor=anchor, method=method)
    if p is None:
        return {}
    new: dict[str, Path] = {}
    if "csv" in paths:
        csv_frame(p).to_csv(out / "pooled_fvd.csv", index=False, float_format="%.10g")
        new["csv:pooled_fvd"] = out / "pooled_fvd.csv"
    if "md" in paths:
        with open(paths["md"], "a") as f:
            f.write(markdown(p))
    if "html" in paths:
        text = paths["html"].read_text()
        sec = html_section(p)
        paths["html"].write_text(text.replace("</body>", sec + "\n</body>", 1) if "</body>" in text else text + sec)
    if "json" in paths:
        data = json.loads(paths["json"].read_text())
        data["pooled_fvd"] = p.to_dict()
        paths["json"].write_text(json.dumps(data, indent=1, sort_keys=True, allow_nan=False, default=_nan_none) + "\n")
    return new


def _nan_none(o: Any) -> Any:  # pragma: no cover - json default for numpy scalars
    return float(o) if isinstance(o, np.floating) else None
