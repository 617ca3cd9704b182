"""The vertex part of the report model: vertex error and PCK per codec and rate point, and the BD-rate
on rate vs vertex error between codecs that output vertices (presentation: :mod:`reports.vertices`).

Reads the ``vertex_metrics`` block of each record (metrics/vertices.py) and, for the picture, the job's
``vertex_sample.npz``. A BD-rate on vertex error needs two codecs that both output vertices and are
measured against the same references; the anchor has no vertices, so there is never a vertex BD-rate
against the anchor.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from gfvc.fileio import read_npz
from metrics.vertices import pck_key
from reports.curves import compare_pair

PAPER_SPEED = ("Sparse2Dense paper: vertex head 0.002 s/frame vs 0.724 s/frame for OSX "
               "(GPU; the paper's model at 384x384)")
SETS = (("key", "key_frame"), ("inter", "inter_frames"), ("all", "all_frames"))
BD_METRIC = "inter_mean_px"


@dataclass
class VertexModel:
    df: Any                                   # one row per record with vertex metrics "ok"
    codecs: list[str]                         # codecs with measured vertices, in report order
    not_applicable: list[str]                 # codecs that do not output vertices
    not_computed: dict[str, str]              # codec -> why it has no vertex numbers
    not_recorded: list[str]                   # codecs whose records predate vertex metrics
    references: dict[str, dict[str, Any]]     # sequence -> reference file info
    thresholds: list[float]
    protocol: dict[str, Any]
    samples: dict[tuple[str, str], tuple[int, str]] = field(default_factory=dict)  # (codec, seq) -> (qp, path)
    pairs: dict[str, Any] = field(default_factory=dict)  # test codec -> reports.model.Pair vs bd_reference
    bd_reference: str | None = None
    bd_note: str = ""
    run_dir: Path | None = None

    @property
    def proxy(self) -> bool:
        return any(r.get("proxy") for r in self.references.values())

    @property
    def measured(self) -> bool:
        return bool(self.codecs)

    def reference_label(self) -> str:
        """How the references were made, once per distinct source; PROXY first when it is one."""
        srcs = sorted({(bool(r.get("proxy")), str(r.get("source") or "source not stated"))
                       for r in self.references.values()}, reverse=True)
        return "; ".join(("" if s.upper().startswith("PROXY") else "PROXY: " if p else "Reference vertices: ") + s
                         for p, s in srcs)

    def pck_keys(self) -> list[str]:
        return [pck_key(t) for t in self.thresholds]


def _head(rec: dict[str, Any]) -> dict[str, Any]:
    """Vertex-head time per frame and device of one record (empty when the codec did not report it)."""
    t = (rec.get("timings") or {}).get("decoder.vertex_head_s")
    info = rec.get("decoder_info") or {}
    n = info.get("vertex_head_frames")
    if t is None or not n:
        return {}
    return {"head_s_per_frame": float(t) / float(n), "head_device": str(info.get("vertex_head_device", "?")),
            "head_device_name": str(info.get("vertex_head_device_name", "")),
            "head_threads": info.get("vertex_head_torch_threads")}


def build_vertex_model(records: list[dict[str, Any]], model: Any, *, method: str) -> VertexModel | None:
    """The vertex part of a report model, or None when no record carries vertex metrics."""
    import pandas as pd

    rows: list[dict[str, Any]] = []
    na: set[str] = set()
    nc: dict[str, set[str]] = {}
    nr: set[str] = set()
    refs: dict[str, dict[str, Any]] = {}
    thresholds: list[float] = []
    proto: dict[str, Any] = {}
    samples: dict[tuple[str, str], tuple[int, str, float]] = {}
    for r in records:
        vm = r.get("vertex_metrics")
        codec = r["codec"]
        if vm is None:
            nr.add(codec)
            continue
        status = vm.get("status")
        if status == "not_applicable":
            na.add(codec)
            continue
        if status != "ok":
            nc.setdefault(codec, set()).add(str(vm.get("reason") or "no reason recorded"))
            continue
        seq = r["sequence"]["name"]
        refs.setdefault(seq, dict(vm.get("reference") or {}))
        proto = proto or dict(vm.get("protocol") or {})
        thresholds = thresholds or [float(t) for t in (vm.get("protocol") or {}).get("pck_thresholds_px", [])]
        row: dict[str, Any] = {"codec": codec, "sequence": seq, "qp": r["rate_point"]["qp"],
                               "kbps": float(r.get("kbps") or float("nan"))}
        for short, key in SETS:
            st = vm.get(key) or {}
            for k in ("mean_px", "median_px", "p90_px"):
                v = st.get(k)
                row[f"{short}_{k}"] = float(v) if v is not None else float("nan")
            for k, v in (st.get("pck") or {}).items():
                row[f"{short}_{k}"] = float(v) if v is not None else float("nan")
            row[f"{short}_frames"] = st.get("frames")
        row.update(_head(r))
        rows.append(row)
        sample = (r.get("artifacts") or {}).get("vertex_sample")
        if sample:
            best = samples.get((codec, seq))
            if best is None or row["kbps"] > best[2]:  # highest rate point: the codec at its best
                samples[(codec, seq)] = (int(r["rate_point"]["qp"]), sample, row["kbps"])
    if not rows and not nc and not na:
        return None
    order = {c: i for i, c in enumerate(model.codecs)}
    df = pd.DataFrame(rows)
    if not df.empty:
        df["_o"] = df["codec"].map(order)
        df = df.sort_values(["_o", "sequence", "qp"], ascending=[True, True, False], kind="stable")
        df = df.drop(columns="_o").reset_index(drop=True)
    measured = [c for c in model.codecs if not df.empty and c in set(df["codec"])]
    vm_ = VertexModel(df=df, codecs=measured, not_applicable=[c for c in model.codecs if c in na],
                      not_computed={c: "; ".join(sorted(v)) for c, v in nc.items()},
                      not_recorded=[c for c in model.codecs if c in nr], references=refs,
                      thresholds=thresholds, protocol=proto,
                      samples={k: (q, p) for k, (q, p, _) in samples.items()}, run_dir=model.run_dir)
    _bd(vm_, method)
    return vm_


def _bd(vm: VertexModel, method: str) -> None:
    """BD-rate on inter-frame vertex error between vertex codecs (the first one is the reference)."""
    if len(vm.codecs) < 2:
        who = vm.codecs[0] if vm.codecs else "no codec"
        vm.bd_note = (f"no vertex BD-rate: only {who} outputs vertices here. A BD-rate on vertex error needs two "
                      "codecs that both output vertices, measured against the same reference vertices; the "
                      "anchor outputs none.")
        return
    vm.bd_reference = vm.codecs[0]
    for test in vm.codecs[1:]:
        vm.pairs[test] = compare_pair(vm.df, vm.df, vm.bd_reference, test, BD_METRIC, method=method, lower=True)
    vm.bd_note = (f"BD-rate on rate vs mean inter-frame vertex error (px, lower is better) against "
                  f"{vm.bd_reference}, the first codec with vertices; both measured against the same reference "
                  "vertices. Not comparable with the image-metric BD-rates (other reference codec).")


def summary_json(vm: VertexModel) -> dict[str, Any]:
    out: dict[str, Any] = {"protocol": vm.protocol, "references": vm.references, "proxy": vm.proxy,
                           "not_applicable": vm.not_applicable, "not_computed": vm.not_computed,
                           "paper_speed": PAPER_SPEED, "codecs": {}}
    for c in vm.codecs:
        sub = vm.df[vm.df["codec"] == c]
        pts = []
        for qp, g in sorted(sub.groupby("qp"), key=lambda kv: -kv[0]):
            pt: dict[str, Any] = {"qp": int(qp), "kbps": float(g["kbps"].mean())}
            for col in g.columns:
                if col.startswith(("key_", "inter_", "all_")) and not col.endswith("_frames"):
                    v = float(g[col].mean())
                    pt[col] = v if math.isfinite(v) else None
            if "head_s_per_frame" in g:
                pt["vertex_head_s_per_frame"] = float(g["head_s_per_frame"].mean())
                pt["vertex_head_device"] = str(g["head_device"].iloc[0])
            pts.append(pt)
        out["codecs"][c] = pts
    if vm.pairs:
        out["bd_rate"] = {"reference": vm.bd_reference, "metric": BD_METRIC,
                          "tests": {t: {"mean_of_sequences": p.mean.to_dict(False),
                                        "average_curve": p.curve.to_dict(False)} for t, p in vm.pairs.items()}}
    else:
        out["bd_rate"] = {"status": "not_computed", "reason": vm.bd_note}
    return out


def frame(vm: VertexModel) -> Any:
    """The vertex rows as a DataFrame for CSV/xlsx (numbers, not text)."""
    return vm.df.copy()


def load_sample(vm: VertexModel, codec: str, sequence: str) -> dict[str, np.ndarray] | None:
    if (codec, sequence) not in vm.samples or vm.run_dir is None:
        return None
    p = Path(vm.run_dir) / vm.samples[(codec, sequence)][1]
    if not p.is_file():
        return None
    return read_npz(p, "vertex sample of the report",
                    hint=f"rerun the job with --force (gfvc run --codec {codec}) to write it again")
