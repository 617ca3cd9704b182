"""Vertex-prediction metrics: how far a codec's decoded body vertices are from reference vertices.

Sparse2Dense decodes 10475 SMPL-X vertices per frame and compares them with
the OSX mesh-recovery output, which its paper takes as ground truth
(Figure 6; 0.002 s/frame for its vertex head against 0.724 s for OSX). The
measurement here is the usual 2D keypoint protocol applied to every vertex:

* per-vertex error = Euclidean (L2) distance in **pixels at the sequence
  resolution** between predicted and reference positions (both in the
  normalised convention of gfvc/vertices.py, converted with the sequence's
  width and height);
* per frame and per set of frames: mean, median and 90th percentile of the
  per-vertex errors, and PCK@t = the fraction of vertices with error <= t
  pixels (percentage of correct keypoints, Yang & Ramanan, CVPR 2011;
  here with fixed pixel thresholds, no body-size normalisation);
* the key frame (frame 0, coded as a picture) is reported apart from the
  inter frames (synthesised from features): the set statistics pool all
  vertices of the set's frames. Frames whose reference is NaN are left out
  and counted.

The protocol (thresholds, pixel scale) comes from the condition
(``metrics.vertices``) and is written into every record.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from gfvc.errors import GfvcError, InputError
from gfvc.vertices import check_array, to_pixels
from test_conditions.manifest import load_reference_vertices

SCHEMA = 1
FIGURE_FRAMES = 4      # frames kept per job for the Figure-6 style picture
FIGURE_VERTICES = 2048  # at most this many vertices (every n-th) kept per frame for it


def pck_key(threshold: float) -> str:
    """Name of a PCK value, e.g. ``pck@2px`` or ``pck@2.5px``."""
    return f"pck@{threshold:g}px"


def protocol(spec: Any, width: int | None = None, height: int | None = None) -> dict[str, Any]:
    """The vertex protocol as recorded with every result (spec: test_conditions.VertexSpec)."""
    p: dict[str, Any] = {
        "error": "per-vertex Euclidean distance between predicted and reference (x, y)",
        "pixel_scale": spec.pixel_scale,
        "units": "pixels at the sequence resolution" if spec.pixel_scale == "sequence" else spec.pixel_scale,
        "pck_thresholds_px": [float(t) for t in spec.pck_thresholds_px],
        "statistics": "mean, median, 90th percentile over all vertices of the frames in a set; PCK@t = "
                      "fraction of vertices with error <= t px",
        "sets": {"key_frame": "frame 0", "inter_frames": "frames 1..T-1", "all_frames": "frames 0..T-1"},
        "missing_reference": "frames whose reference is all NaN are left out and counted",
        "convention": "normalised align_corners coordinates (gfvc/vertices.py)",
    }
    if width and height:
        p["resolution"] = [int(width), int(height)]
    return p


def frame_errors(pred: np.ndarray, ref: np.ndarray, width: int, height: int) -> np.ndarray:
    """(T, V) per-vertex L2 errors in pixels; rows are NaN where the reference is NaN."""
    check_array(pred, "predicted vertices", vertices=None)
    check_array(ref, "reference vertices", vertices=None)
    if pred.shape != ref.shape:
        raise InputError(f"predicted vertices {pred.shape} and reference vertices {ref.shape} differ in shape: "
                         "the codec's vertex model and the reference must use the same vertex set")
    d = to_pixels(pred, width, height) - to_pixels(ref, width, height)
    return np.sqrt((d ** 2).sum(-1))


def summarise(errors: np.ndarray, thresholds: tuple[float, ...] | list[float]) -> dict[str, Any]:
    """Statistics of a set of frames' per-vertex errors (T, V); NaN rows are skipped."""
    errors = np.asarray(errors, np.float64)
    ok = ~np.isnan(errors).any(axis=1)
    out: dict[str, Any] = {"frames": int(ok.sum()), "frames_without_reference": int((~ok).sum())}
    e = errors[ok].ravel()
    if e.size == 0:
        out.update({"mean_px": None, "median_px": None, "p90_px": None,
                    "pck": {pck_key(t): None for t in thresholds}})
        return out
    out.update({"mean_px": float(e.mean()), "median_px": float(np.median(e)),
                "p90_px": float(np.percentile(e, 90)),
                "pck": {pck_key(t): float((e <= t).mean()) for t in thresholds}})
    return out


def per_frame(errors: np.ndarray, thresholds: tuple[float, ...] | list[float]) -> dict[str, Any]:
    """Per-frame statistics as lists (None for frames without a reference)."""
    errors = np.asarray(errors, np.float64)

    def col(fn: Any) -> list[float | None]:
        return [None if np.isnan(r).any() else round(float(fn(r)), 6) for r in errors]

    return {"mean_px": col(np.mean), "median_px": col(np.median), "p90_px": col(lambda r: np.percentile(r, 90)),
            "pck": {pck_key(t): col(lambda r, t=t: (r <= t).mean()) for t in thresholds}}


def evaluate(pred: np.ndarray, ref: np.ndarray, width: int, height: int, spec: Any) -> dict[str, Any]:
    """Vertex statistics of one decoded sequence: key frame, inter frames, all frames, per frame."""
    if spec.pixel_scale != "sequence":  # pragma: no cover - the condition loader allows only "sequence"
        raise InputError(f"vertex pixel scale {spec.pixel_scale!r} not supported")
    t = pred.shape[0]
    err = frame_errors(pred, ref[:t], width, height)
    th = list(spec.pck_thresholds_px)
    return {"key_frame": summarise(err[:1], th), "inter_frames": summarise(err[1:], th),
            "all_frames": summarise(err, th), "per_frame": per_frame(err, th)}


def not_applicable(codec: str) -> dict[str, Any]:
    return {"schema": SCHEMA, "status": "not_applicable",
            "reason": f"codec {codec!r} does not output vertices"}


def not_computed(reason: str, **extra: Any) -> dict[str, Any]:
    return {"schema": SCHEMA, "status": "not_computed", "reason": reason, **extra}


def figure_frames(t: int, k: int = FIGURE_FRAMES) -> list[int]:
    """Frames shown in the Figure-6 style picture: the key frame and evenly spaced inter frames."""
    if t <= k:
        return list(range(t))
    return sorted({0, *(int(round(x)) for x in np.linspace(1, t - 1, k - 1))})


def evaluate_decoded(codec: Any, extras: dict[str, np.ndarray], entry: Any, condition: Any,
                     data_dir: Any = None) -> tuple[dict[str, Any], dict[str, np.ndarray] | None]:
    """The record's ``vertex_metrics`` block for one decoded job, and the Figure-6 sample arrays.

    ``codec`` declares its vertex output with the class attribute ``vertex_extra``;
    ``entry`` is the job's test_conditions.manifest.SequenceEntry; a codec may define
    ``vertex_mismatch(reference_is_proxy) -> str | None`` to refuse a reference
    whose vertex order its vertices do not follow. A codec without
    vertices gets status "not_applicable"; a codec with vertices on a sequence
    without reference vertices, or whose vertices cannot be compared, gets
    "not_computed" with the reason. Never raises for those cases.
    """
    name = getattr(codec, "vertex_extra", None)
    if not name:
        return not_applicable(getattr(codec, "name", "?")), None
    spec = condition.metrics.vertices
    w, h = int(entry.width), int(entry.height)
    proto = protocol(spec, w, h)
    if name not in extras:
        return not_computed(f"codec {codec.name!r} declares vertex output {name!r} but its decoder returned none",
                            protocol=proto), None
    pred = np.asarray(extras[name])
    if entry.vertices is None:
        return not_computed(f"sequence {entry.name!r} has no reference vertices (manifest key 'vertices', "
                            "see docs/vertices.md)", protocol=proto), None
    ref_info = {"file": entry.vertices.file, "sha256": entry.vertices.sha256, "source": entry.vertices.source,
                "proxy": bool(entry.vertices.proxy)}
    # a codec whose vertices are not in the reference's vertex order (e.g. another template) says why: an
    # index-by-index error between unrelated point sets would be a number without meaning
    mismatch = getattr(codec, "vertex_mismatch", None)
    reason = mismatch(bool(entry.vertices.proxy)) if callable(mismatch) else None
    if reason:
        return not_computed(reason, protocol=proto, reference=ref_info), None
    try:
        ref = load_reference_vertices(entry, pred.shape[0], data_dir)
        stats = evaluate(pred, ref, w, h, spec)
    except GfvcError as e:
        return not_computed(str(e), protocol=proto, reference=ref_info), None
    idx = figure_frames(pred.shape[0])
    vidx = np.arange(0, pred.shape[1], int(np.ceil(pred.shape[1] / FIGURE_VERTICES)))
    sample: dict[str, np.ndarray] = {"index": np.asarray(idx, np.int64), "vertex_index": vidx,
                                     "pred": pred[idx][:, vidx].astype(np.float32),
                                     "ref": np.asarray(ref[idx][:, vidx], np.float32)}
    return {"schema": SCHEMA, "status": "ok", "reason": "", "extra": name, "reference": ref_info,
            "protocol": proto, **stats}, sample
