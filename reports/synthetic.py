"""Synthetic run directories (run.json + records/*.json) for tests, demos and docs.

The RD points follow simple closed forms (log-rate linear in QP, quality
logistic in log-rate), so every number in a synthetic report can be checked
by hand. Nothing here is a measurement.
"""
from __future__ import annotations

import functools
import hashlib
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from gfvc.records import atomic_write_json, content_key
from gfvc.stills import save_job_stills
from metrics.frame_quality import frame_values
from metrics.vertices import pck_key
from test_conditions import MetricsSpec

DEFAULT_SEQUENCES: tuple[str, ...] = ("seq_a", "seq_b", "seq_c")
LOWER = {"psnr": False, "psnr_y": False, "ssim": False, "dists": True, "lpips": True, "fvd": True}

CONDITION: dict[str, Any] = {
    "name": "synthetic", "version": "1.0", "description": "synthetic RD data for report tests",
    "manifest": "synthetic.manifest.yaml", "width": 128, "height": 128, "frames": 32, "fps": 25.0,
    "bit_depth": 8, "codecs": ["vvenc", "keyframe-repeat", "s2d"],
    "colour": {"matrix": "bt601", "range": "limited", "chroma": "420", "chroma_downsampling": "topleft",
               "chroma_upsampling": "nearest"},
    "anchor": {"encoder": "vvenc", "qps": [37, 42, 47, 52], "gop_size": 8, "intra_period": -1,
               "internal_bit_depth": 8, "intra_qp_offset": 0, "vvenc_preset": "medium", "timeout_s": 7200.0},
    "generative": {"key_frame_qps": [22, 32, 42, 52], "key_frame_coder": "vvenc", "key_frame_chroma": "420",
                   "feature_coder": "cabac"},
    "metrics": {"names": ["psnr", "ssim", "dists", "lpips", "fvd"], "frame_aggregation": "mean",
                "dists": {"resize": "gfvc-avgpool"}, "lpips": {"net": "vgg", "version": "0.1"},
                "fvd": {"clip_length": 16, "stride": 16, "pooling": "per-sequence", "resolution": 224},
                "vertices": {"pck_thresholds_px": [1.0, 2.0, 5.0], "pixel_scale": "sequence"}},
    "bdrate": {"anchor": "vvenc", "method": "jvet", "aggregation": "mean-of-sequences",
               "metrics": ["dists", "lpips", "fvd"]},
    "schema": 1,
}

# codec -> (family, qps, log10 kbps at the lowest QP, log10-rate drop per QP step,
#           quality slope in log-rate, quality offset, per-sequence quality drop)
CODECS: dict[str, tuple[str, tuple[int, ...], float, float, float, float, float]] = {
    "vvenc": ("anchor", (37, 42, 47, 52), 2.2, 0.05, 1.2, 0.0, 0.3),
    "keyframe-repeat": ("generative", (22, 32, 42, 52), 1.5, 0.01, 0.8, 0.5, 0.1),
    "s2d": ("generative", (22, 32, 42, 52), 1.3, 0.025, 1.5, 0.6, 0.15),
}


# What the real codecs' provenance says that the report's caveats read (stand-in anchor, demo model).
_SYNTHETIC_PROVENANCE: dict[str, dict[str, Any]] = {
    "vvenc": {"approximates": "VTM-22.2 (synthetic stand-in)"},
    "s2d": {"model_id": "s2d-demo", "training": {"step": 100, "vertex_targets": "proxy-synthetic"}},
}


def _quality(metric: str, x: float) -> float:
    """Quality in the metric's own unit from a latent 'goodness' x (higher = better)."""
    g = 1.0 / (1.0 + math.exp(-x))  # 0..1
    return {"psnr": 22.0 + 18.0 * g, "psnr_y": 23.0 + 18.0 * g, "ssim": 0.5 + 0.49 * g,
            "dists": 0.45 - 0.40 * g, "lpips": 0.7 - 0.6 * g, "fvd": 2500.0 - 2300.0 * g}[metric]


def fingerprint(cond: dict[str, Any]) -> str:
    import json

    return hashlib.sha256(json.dumps(cond, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _vertex_block(steps: int, frames: int, thresholds: Sequence[float], gain: float, proxy: bool,
                  seq: str) -> dict[str, Any]:
    """Synthetic vertex metrics: inter-frame mean error = gain * (4 + 0.4 * QP steps above the lowest QP)
    px (so it falls with rate), key frame 0.8x, median 0.9x, p90 1.8x, PCK@t = 1 - exp(-t / mean)."""
    def stats(mean: float, n: int) -> dict[str, Any]:
        return {"frames": n, "frames_without_reference": 0, "mean_px": round(mean, 9),
                "median_px": round(0.9 * mean, 9), "p90_px": round(1.8 * mean, 9),
                "pck": {pck_key(t): round(1.0 - math.exp(-t / mean), 9) for t in thresholds}}

    inter = gain * (4.0 + 0.4 * steps)
    key = 0.8 * inter
    return {"schema": 1, "status": "ok", "reason": "", "extra": "vertices",
            "reference": {"file": f"{seq}.vertices.npy", "sha256": hashlib.sha256(seq.encode()).hexdigest(),
                          "source": "PROXY (synthetic)" if proxy else "synthetic", "proxy": proxy},
            "protocol": {"pixel_scale": "sequence", "pck_thresholds_px": list(thresholds)},
            "key_frame": stats(key, 1), "inter_frames": stats(inter, frames - 1),
            "all_frames": stats((key + inter * (frames - 1)) / frames, frames),
            "per_frame": {"mean_px": [round(key, 6)] + [round(inter, 6)] * (frames - 1)}}


def make_run(run_dir: Path, *, sequences: Sequence[str] = DEFAULT_SEQUENCES,
             codecs: dict[str, tuple[str, tuple[int, ...], float, float, float, float, float]] | None = None,
             metrics: Sequence[str] = ("psnr", "psnr_y", "ssim", "dists", "lpips", "fvd"),
             not_computed: dict[str, str] | None = None, condition: dict[str, Any] | None = None,
             provenance: dict[str, dict[str, Any]] | None = None,
             perturb: dict[tuple[str, str, int], dict[str, float]] | None = None,
             vertices: dict[str, float] | None = None, proxy_vertices: bool = True,
             planes: dict[str, str] | None = None, stills: bool = False) -> Path:
    """Write a synthetic run. ``not_computed`` {metric: reason} records the metric as not computed;
    ``perturb`` {(codec, sequence, qp): {field: value}} overrides kbps or a metric value (e.g. to make
    a curve non-monotonic). ``vertices`` {codec: gain} gives those codecs vertex metrics (others are
    "not_applicable"; None: no vertex block at all, like records from before vertex metrics);
    ``planes`` {codec: metric} adds a per-plane PSNR metric (value, y, u, v; 6:1:1 weighted) to
    that codec's records, like VTM's log; ``stills`` keeps exact stills per job (gfvc/stills.py) of
    synthetic frames (see :func:`synthetic_frames`), as a real run does for the report's Figure 5."""
    run_dir = Path(run_dir)
    codecs = codecs or CODECS
    cond = condition or CONDITION
    fp = fingerprint(cond)
    not_computed = not_computed or {}
    perturb = perturb or {}
    prov_all = provenance or {c: {"name": c, "family": f, "version": "synthetic-1", "binary_sha256": "0" * 64,
                                  **_SYNTHETIC_PROVENANCE.get(c, {})} for c, (f, *_r) in codecs.items()}
    frames, fps = int(cond["frames"]), float(cond["fps"])
    for si, seq in enumerate(sequences):
        sha = hashlib.sha256(seq.encode()).hexdigest()
        seq_off = 0.15 * si  # sequences differ in difficulty
        for codec, (family, qps, lr0, slope, qslope, gain, seq_drop) in codecs.items():
            for qp in qps:
                steps = qp - min(qps)
                log_kbps = lr0 + seq_off - slope * steps
                kbps = 10.0 ** log_kbps
                x = qslope * (log_kbps - 1.0) + gain - seq_drop * si
                over = perturb.get((codec, seq, qp), {})
                kbps = float(over.get("kbps", kbps))
                bits = int(round(kbps * 1000.0 * frames / fps))
                mets: dict[str, dict[str, Any]] = {}
                for m in metrics:
                    if m in not_computed:
                        mets[m] = {"value": None, "status": "not_computed", "reason": not_computed[m],
                                   "lower_is_better": LOWER[m]}
                    else:
                        mets[m] = {"value": round(float(over.get(m, _quality(m, x))), 9), "status": "ok",
                                   "reason": "", "lower_is_better": LOWER[m]}
                if planes and codec in planes:
                    y = 22.0 + 18.0 / (1.0 + math.exp(-x))
                    u, v = y + 6.0, y + 7.5
                    mets[planes[codec]] = {"value": round((6 * y + u + v) / 8, 9), "status": "ok", "reason": "",
                                           "lower_is_better": False, "y": round(y, 9), "u": round(u, 9),
                                           "v": round(v, 9)}
                label = f"qp{qp}"
                key = content_key(fp, sha, hashlib.sha256(codec.encode()).hexdigest(), label)
                rec: dict[str, Any] = {
                    "schema": 1, "key": key, "status": "ok",
                    "condition": {"name": cond["name"], "version": cond["version"], "fingerprint": fp},
                    "codec": codec, "family": family,
                    "sequence": {"name": seq, "sha256": sha, "frames": frames, "width": cond["width"],
                                 "height": cond["height"], "fps": fps},
                    "rate_point": {"qp": qp, "label": label}, "frames": frames, "bits": bits,
                    "bits_breakdown": {"total": bits}, "kbps": bits / 1000.0 / (frames / fps),
                    "metrics": mets, "provenance": {"suite_version": "0.1.0", "codec": prov_all.get(codec, {})},
                    "timings": {"encode_s": 0.0, "decode_s": 0.0, "metrics_s": 0.0},
                }
                if vertices is not None:
                    th = (cond.get("metrics") or {}).get("vertices", {}).get("pck_thresholds_px", [2.0, 5.0, 10.0])
                    if codec in vertices:
                        rec["vertex_metrics"] = _vertex_block(steps, frames, th, vertices[codec], proxy_vertices, seq)
                        rec["timings"]["decoder.vertex_head_s"] = 0.002 * frames
                        rec["decoder_info"] = {"vertex_head_frames": frames, "vertex_head_device": "cpu",
                                               "vertex_head_device_name": "synthetic", "vertex_head_torch_threads": 1}
                    else:
                        rec["vertex_metrics"] = {"schema": 1, "status": "not_applicable",
                                                 "reason": f"codec {codec!r} does not output vertices"}
                if stills:
                    rec["artifacts"] = _stills(run_dir, key, seq, sha, codec, qp, cond)
                atomic_write_json(run_dir / "records" / f"{key}.json", rec)
    run = {"suite_version": "0.1.0", "condition": cond, "condition_fingerprint": fp, "condition_name": cond["name"],
           "codecs": prov_all,
           "provenance": {"git_revision": "0000000", "packages": {"numpy": "x"}, "python": "3.x", "platform": "test"},
           "argv": ["gfvc", "run", "synthetic", "--out", "RUN"], "created": "2026-01-01T00:00:00+00:00"}
    atomic_write_json(run_dir / "run.json", run)
    return run_dir


def synthetic_frames(sequence: str, frames: int, height: int, width: int) -> np.ndarray:
    """Original frames of a synthetic sequence: a smooth gradient with a bright square that moves right
    by one pixel per frame (so the largest motion from frame 0 is at the last frame)."""
    t = np.arange(frames)[:, None, None]
    y, x = np.mgrid[0:height, 0:width]
    base = (40 + 120 * x / max(1, width - 1) + 40 * y / max(1, height - 1))[None] + 0 * t
    seed = sum(sequence.encode()) % 50
    out = np.repeat(base[..., None], 3, axis=-1) + np.array([0, seed, 2 * seed])
    for i in range(frames):
        x0 = (width // 8 + i) % max(1, width - width // 4)
        out[i, height // 4: height // 2, x0: x0 + width // 4] = 230.0
    return np.clip(out, 0, 255).astype(np.uint8)


def synthetic_decoded(original: np.ndarray, codec: str, qp: int) -> np.ndarray:
    """A deterministic 'decoded' version: noise whose strength grows with QP, different per codec."""
    seed = int(hashlib.sha256(f"{codec}:{qp}".encode()).hexdigest()[:8], 16)
    noise = np.random.default_rng(seed).normal(0.0, 0.25 * qp, original.shape)
    return np.clip(original.astype(np.float64) + noise, 0, 255).astype(np.uint8)


def _stills(run_dir: Path, key: str, seq: str, sha: str, codec: str, qp: int, cond: dict[str, Any]) -> dict[str, str]:
    orig = synthetic_frames(seq, int(cond["frames"]), int(cond["height"]), int(cond["width"]))
    names = tuple(n for n in (cond.get("metrics") or {}).get("names", ()) if n != "fvd")
    return save_job_stills(run_dir, run_dir / "jobs" / key, orig, synthetic_decoded(orig, codec, qp),
                           functools.partial(frame_values, MetricsSpec(names=names)), sha)


# ------------------------------------------------------------------ golden files
GOLDEN_SCENARIO: dict[str, Any] = {
    "not_computed": {"fvd": "missing weights: i3d_torchscript.pt (install with gfvc weights install)"},
    "perturb": {("keyframe-repeat", "seq_b", 42): {"dists": 0.5}},
    "vertices": {"s2d": 1.0},
    "planes": {"vvenc": "psnr_yuv"},
}
GOLDEN_FILES: tuple[str, ...] = ("report.md", "summary.csv", "rd_data.csv", "bdrate_per_sequence.csv",
                                 "summary.json", "vertices.csv", "summary.txt")


def golden_normalise(name: str, text: str, run_dir: Path) -> str:
    """Remove what legitimately varies between machines and versions (paths, suite version)."""
    import re

    text = text.replace(str(Path(run_dir)), "RUN_DIR")
    text = re.sub(r"report by gfvc [^;.\s]+(\.[0-9]+)*", "report by gfvc VERSION", text)
    if name.endswith(".json"):
        import json

        data = json.loads(text)
        data.pop("generated_by", None)
        text = json.dumps(data, indent=1, sort_keys=True) + "\n"
    return text
