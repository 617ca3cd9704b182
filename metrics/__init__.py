"""Quality metrics of the GFVC CTC: DISTS, LPIPS, FVD (the CTC metrics) and PSNR, SSIM (reference only).

Public API (docs/metrics.md, INTERFACES.md):

    evaluate(spec, ref, dist, *, fps, ref_key=None, cache_dir=None, weights_dir=None,
             device="cpu", progress=None, features_out=None) -> dict
    protocol(spec) -> dict
    missing_weights(spec, weights_dir=None) -> list[str]
    ensure_weights(spec, weights_dir=None) -> dict[str, str]
    weights.status(weights_dir=None) -> list[WeightStatus]
    LOWER_IS_BETTER: dict[str, bool]

A metric whose weights are missing or fail verification is returned as
status "not_computed" with the reason (file, sha256, how to install); it never
yields a number from random or unverified weights.

Devices: the learned metrics run on ``device`` (``auto|cpu|cuda|cuda:N``,
resolved by :func:`gfvc.devices.resolve_device`) and batch frames (clips for
FVD) with a batch size bounded by the memory free on that device
(:func:`gfvc.devices.batch_size`, costs from :mod:`metrics.batching`). The
per-frame values do not depend on the batch size on CPU (bit-identical,
tests/test_metrics_device.py); on CUDA, TF32 is off (gfvc.devices.configure_torch).
"""
from __future__ import annotations

import difflib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from gfvc.devices import batch_size, configure_torch, device_type, resolve_device
from gfvc.errors import InputError, UnknownName, WeightsError
from gfvc.video import sha256_frames
from metrics import classic, weights
from metrics.classic import PSNR_CAP_DB, SSIM_K1, SSIM_K2, SSIM_SIGMA, SSIM_WINDOW
from metrics.limits import FIXED_BATCH_ENV, MAX_BATCH, MAX_CLIPS, fixed_batch  # noqa: F401  (public names)

__all__ = ["evaluate", "protocol", "missing_weights", "ensure_weights", "weights", "LOWER_IS_BETTER",
           "METRIC_VALUES"]

LOWER_IS_BETTER: dict[str, bool] = {
    "psnr": False, "psnr_y": False, "ssim": False, "dists": True, "lpips": True, "fvd": True,
}
# metrics that run a network (on the job's device)
LEARNED = ("dists", "lpips", "fvd")
# metric name in MetricsSpec.names -> value names it produces
METRIC_VALUES: dict[str, tuple[str, ...]] = {
    "psnr": ("psnr", "psnr_y"), "ssim": ("ssim",), "dists": ("dists",), "lpips": ("lpips",), "fvd": ("fvd",),
}
# Progress callback: (metric name, items done, items total).
ProgressFn = Callable[[str, int, int], None]


def _check_names(spec: Any) -> None:
    dup = next((n for i, n in enumerate(spec.names) if n in spec.names[:i]), None)
    if dup is not None:
        raise InputError(f"metric {dup!r} is listed twice in {list(spec.names)}")
    for n in spec.names:
        if n not in METRIC_VALUES:
            close = difflib.get_close_matches(n, list(METRIC_VALUES), n=2)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise UnknownName(f"unknown metric {n!r}{hint} (known: {', '.join(METRIC_VALUES)})")


def protocol(spec: Any) -> dict[str, Any]:
    """Everything that defines the metric values, as recorded with every result."""
    _check_names(spec)
    p: dict[str, Any] = {"names": list(spec.names), "frame_aggregation": spec.frame_aggregation}
    agg = "arithmetic mean over frames of the per-frame value"
    if "psnr" in spec.names:
        p["psnr"] = {"psnr": "RGB: per-frame PSNR with MSE over R, G, B jointly, peak 255",
                     "psnr_y": "BT.601 limited-range luma (gfvc.video.rgb_to_yuv420), peak 255",
                     "aggregation": agg, "identical_frame_cap_db": PSNR_CAP_DB}
    if "ssim" in spec.names:
        p["ssim"] = {"channel": "BT.601 limited-range luma", "window": f"gaussian {SSIM_WINDOW}x{SSIM_WINDOW}",
                     "sigma": SSIM_SIGMA, "k1": SSIM_K1, "k2": SSIM_K2, "data_range": 255,
                     "borders": "valid (no padding)", "downsampling": "none", "aggregation": agg}
    if "dists" in spec.names:
        p["dists"] = {"implementation": "DISTS_pytorch 0.1 network and weights", "input": "RGB [0,1]",
                      "resize": spec.dists.resize, "aggregation": agg,
                      "weights": {n: weights.get(n).sha256 for n in weights.PERCEPTUAL_FILES["dists"]}}
    if "lpips" in spec.names:
        key = f"lpips:{spec.lpips.net}"
        p["lpips"] = {"implementation": "lpips 0.1.4 network and weights", "net": spec.lpips.net,
                      "version": spec.lpips.version, "input": "RGB [-1,1] (from [0,1])", "resize": "none",
                      "aggregation": agg,
                      "weights": {n: weights.get(n).sha256 for n in weights.PERCEPTUAL_FILES.get(key, ())}}
    if "fvd" in spec.names:
        f = spec.fvd
        p["fvd"] = {"clip_length": f.clip_length, "stride": f.stride, "pooling": f.pooling,
                    "pooled": POOLED_FVD_PROTOCOL,
                    "resolution": f.resolution, "resize": "short side bilinear + centre crop", "range": "[-1,1]",
                    "features": "I3D Kinetics-400 logits, mean over time", "covariance_ddof": 1,
                    "sqrtm": "scipy.linalg.sqrtm, real part",
                    "detector": spec.fvd.detector,
                    "detector_sha256": weights.get(_detector_file(spec)).sha256}
    return p


POOLED_FVD_PROTOCOL = ("one FVD per codec and rate point: the clip features of all sequences (kept per job as "
                       "fvd_clip_features.npy) against the reference clips of the same sequences; rate = mean "
                       "kbps over the sequences; BD-rate on the averaged curve (reports/pooled_fvd.py)")


def _needed_files(spec: Any) -> list[tuple[str, tuple[str, ...]]]:
    """(metric, files) where every file is needed; FVD handled separately (any one detector)."""
    out = []
    if "dists" in spec.names:
        out.append(("dists", weights.PERCEPTUAL_FILES["dists"]))
    if "lpips" in spec.names:
        out.append(("lpips", weights.PERCEPTUAL_FILES.get(f"lpips:{spec.lpips.net}", ())))
    return out


def missing_weights(spec: Any, weights_dir: Path | None = None) -> list[str]:
    """Lines naming each missing or mismatched weight file, its sha256 and how to install it."""
    _check_names(spec)
    users: dict[str, list[str]] = {}
    for metric, files in _needed_files(spec):
        for f in files:
            users.setdefault(f, []).append(metric)
    lines = []
    for f, ms in users.items():
        st = weights.check(f, weights_dir)
        if not st.verified:
            w = weights.get(f)
            lines.append(f"{'/'.join(ms)}: {f} (sha256 {w.sha256}) {st.reason}; {weights.how_to_get(w)}")
    if "fvd" in spec.names:
        f = _detector_file(spec)
        st = weights.check(f, weights_dir)
        if not st.verified:
            lines.append(f"fvd: {f} (sha256 {st.sha256_expected}) {st.reason}; {weights.how_to_get(weights.get(f))}")
    return lines


def ensure_weights(spec: Any, weights_dir: Path | None = None) -> dict[str, str]:
    """Make the learned metrics' weight files available here; {metric: reason} for those that are not.

    Missing hub files are downloaded (verified) unless GFVC_OFFLINE is set; a
    failure is remembered by :mod:`metrics.weights`, so calling this once before
    a run means every job gets the same one-line reason without retrying.
    """
    _check_names(spec)
    reasons: dict[str, str] = {}
    needed = list(_needed_files(spec))
    if "fvd" in spec.names:
        needed.append(("fvd", (_detector_file(spec),)))
    for metric, files in needed:
        for f in files:
            try:
                weights.locate(f, weights_dir)
            except WeightsError as e:
                reasons.setdefault(metric, str(e))
    return reasons


def _entry(value: float | None, name: str, status: str = "ok", reason: str = "") -> dict[str, Any]:
    if value is not None and not np.isfinite(value):
        return {"value": None, "status": "not_computed", "reason": f"non-finite result ({value})",
                "lower_is_better": LOWER_IS_BETTER[name]}
    return {"value": None if value is None else float(value), "status": status, "reason": reason,
            "lower_is_better": LOWER_IS_BETTER[name]}


def _not_computed(name: str, reason: str) -> dict[str, Any]:
    return _entry(None, name, "not_computed", reason)


# --- models (loaded once per process per verified weight set) ---------------------------------

_MODELS: dict[tuple, Any] = {}


def _weights_tag(files: tuple[str, ...], weights_dir: Path | None) -> str:
    paths = [weights.locate(f, weights_dir) for f in files]  # raises WeightsError
    return "+".join(weights.sha256_of(p)[:16] for p in paths)


def _model(kind: str, weights_dir: Path | None, net: str = "vgg", device: str = "cpu") -> tuple[Any, str]:
    if kind == "dists":
        tag = _weights_tag(weights.PERCEPTUAL_FILES["dists"], weights_dir)
    else:
        tag = _weights_tag(weights.PERCEPTUAL_FILES[f"lpips:{net}"], weights_dir)
    key = (kind, net, tag, device)
    if key not in _MODELS:
        m: Any
        if kind == "dists":
            # lazy: loads torch (start-up time of the modules that import this one)
            from metrics import dists
            m = dists.load(weights_dir)
        else:
            # lazy: loads torch (start-up time of the modules that import this one)
            from metrics import lpips_metric
            m = lpips_metric.load(net, weights_dir)
        _MODELS[key] = m.to(device)
    return _MODELS[key], tag


def _detector_file(spec: Any) -> str:
    """The I3D file the condition's FVD protocol names (metrics.fvd.detector)."""
    return f"{spec.fvd.detector}.pt"


def _detector(weights_dir: Path | None, name: str, device: str = "cpu") -> tuple[str, Any, str]:
    # lazy: loads torch (start-up time of the modules that import this one)
    from metrics import fvd

    path = weights.locate(name, weights_dir)  # WeightsError if missing or wrong, naming the file
    tag = weights.sha256_of(path)[:16]
    key = ("fvd", name, tag, device)
    if key not in _MODELS:
        _MODELS[key] = fvd.load_detector(weights_dir, names=(name,), device=device)
    return _MODELS[key][0], _MODELS[key][1], tag


# --- per-metric evaluation --------------------------------------------------------------------

def _to_tensor(frames: np.ndarray, device: str = "cpu"):
    """uint8 (N, H, W, 3) -> float (N, 3, H, W) in [0, 1] on ``device`` (copied as uint8, converted there)."""
    import torch

    return torch.from_numpy(np.ascontiguousarray(frames)).to(device).permute(0, 3, 1, 2).float().div_(255.0)


def _perceptual(model: Any, ref: np.ndarray, dist: np.ndarray, key: str, prep: Callable,
                cache_dir: Path | None, device: str = "cpu", name: str = "",
                progress: ProgressFn | None = None, batch_out: dict[str, int] | None = None) -> float:
    """Mean per-frame score, frames batched on ``device`` with a memory-bounded batch size.

    Reference features are cached per frame (memory, optionally disk), so a
    cached reference is reused whatever batch size a later job can afford.
    """
    import torch

    # lazy: loads torch (start-up time of the modules that import this one)
    from metrics import batching

    t = ref.shape[0]
    h, w = prep(_to_tensor(ref[:1], device)).shape[-2:]
    per_frame = 2 * batching.image_bytes(model, key.split("|")[0], int(h), int(w))  # ref + dist features
    bs = fixed_batch() or batch_size(device, per_frame, MAX_BATCH[device_type(device) or "cpu"])
    if batch_out is not None:
        batch_out[name] = min(bs, t)  # the effective batch (what the kernels saw)
    scores = []
    with torch.inference_mode():
        for s in range(0, t, bs):
            e = min(s + bs, t)
            fr = _ref_features(model, ref, s, e, key, prep, cache_dir, device)
            fd = model.features(prep(_to_tensor(dist[s:e], device)))
            scores.append(model.score(fr, fd).double().cpu())
            if progress:
                progress(name, e, t)
    return float(torch.cat(scores).mean())


def _ref_features(model: Any, ref: np.ndarray, s: int, e: int, key: str, prep: Callable,
                  cache_dir: Path | None, device: str) -> list:
    """Reference features of frames s..e-1: cached frames reused, missing ones computed in one batch."""
    import torch

    # lazy: loads torch (start-up time of the modules that import this one)
    from metrics import cache

    disk = cache.DISK_PERCEPTUAL
    frames: list[Any] = [cache.lookup(f"{key}|f{i}", cache_dir, disk) for i in range(s, e)]
    missing = [i for i, f in enumerate(frames) if f is None]
    if missing:
        lo, hi = s + missing[0], s + missing[-1] + 1
        feats = model.features(prep(_to_tensor(ref[lo:hi], device)))
        for i in missing:
            j = s + i - lo
            one = [f[j:j + 1].clone() for f in feats]
            cache.store(f"{key}|f{s + i}", key, one, cache_dir, disk)
            frames[i] = one
    n = len(frames[0])
    return [torch.cat([f[k].to(device) for f in frames]) for k in range(n)]


def _ref_identity(ref: np.ndarray, ref_key: str | None) -> str:
    return (ref_key or sha256_frames(ref)) + f"|{ref.shape}"


def _eval_dists(spec: Any, ref, dist, ident, cache_dir, weights_dir, device="cpu", progress=None,
                batch_out=None) -> float:
    # lazy: loads torch (start-up time of the modules that import this one)
    from metrics import dists

    model, tag = _model("dists", weights_dir, device=device)
    rule = spec.dists.resize
    key = f"dists|{rule}|{tag}|{ident}"
    return _perceptual(model, ref, dist, key, lambda x: dists.resize(x, rule), cache_dir, device, "dists", progress,
                       batch_out)


def _eval_lpips(spec: Any, ref, dist, ident, cache_dir, weights_dir, device="cpu", progress=None,
                batch_out=None) -> float:
    if spec.lpips.version != "0.1":
        raise _NotComputable(f"LPIPS version {spec.lpips.version!r} not supported (only 0.1 weights are registered)")
    model, tag = _model("lpips", weights_dir, spec.lpips.net, device=device)
    key = f"lpips|{spec.lpips.net}|{spec.lpips.version}|{tag}|{ident}"
    return _perceptual(model, ref, dist, key, lambda x: x, cache_dir, device, "lpips", progress, batch_out)


class _NotComputable(Exception):
    """A metric cannot be computed for this input/protocol (reason in the message)."""


def _eval_fvd(spec: Any, ref, dist, ident, cache_dir, weights_dir, device="cpu", progress=None,
              features_out: dict | None = None, batch_out: dict | None = None) -> tuple[float | None, str]:
    """Per-sequence FVD; the clip features of both sides go to ``features_out`` (for pooled FVD).

    The features are kept even when this sequence alone has too few clips for a
    per-sequence value (then the value is None and the reason says why): pooled
    FVD over all sequences still uses them.
    """
    import torch

    # lazy: loads torch (start-up time of the modules that import this one)
    from metrics import cache, fvd

    f = spec.fvd
    n = len(fvd.clip_starts(ref.shape[0], f.clip_length, f.stride))
    few = (f"{ref.shape[0]} frames give {n} clip(s) of {f.clip_length} frames at stride {f.stride}; per-sequence "
           "FVD needs >= 2 clips per side (covariance ddof=1)")
    if n < 1 or (n < 2 and features_out is None):
        raise _NotComputable(few)
    name, det, tag = _detector(weights_dir, _detector_file(spec), device)
    fixed = fixed_batch()
    clips = min(fixed, MAX_CLIPS[device_type(device) or "cpu"]) if fixed else batch_size(
        device, fvd.clip_bytes(det, f.clip_length, f.resolution), MAX_CLIPS[device_type(device) or "cpu"])
    if batch_out is not None:
        batch_out["fvd"] = min(clips, n)
    key = f"fvd|{f.clip_length}|{f.stride}|{f.resolution}|{name}|{tag}|{ident}"
    fr = cache.cached(key, key, lambda: torch.from_numpy(
        fvd.clip_features(det, ref, f.clip_length, f.stride, f.resolution, batch=clips, device=device)),
        cache_dir, to_disk=True)
    fr_np = fr.numpy() if isinstance(fr, torch.Tensor) else np.asarray(fr)

    def prog(done: int, total: int) -> None:
        if progress:
            progress("fvd", done, total)

    fd = fvd.clip_features(det, dist, f.clip_length, f.stride, f.resolution, batch=clips, device=device,
                           progress=prog)
    if features_out is not None:
        features_out["fvd"] = {"ref": fr_np.astype(np.float64), "dist": np.asarray(fd, np.float64),
                               "detector": name, "clip_length": f.clip_length, "stride": f.stride,
                               "resolution": f.resolution}
    if n < 2:
        return None, few + "; the clip features are kept for pooled FVD"
    value = fvd.frechet_distance(fr_np, fd)
    note = (f"per-sequence FVD, detector {name}, {n} clips per side (clip {f.clip_length}, stride {f.stride}); "
            f"covariance rank <= {n - 1} of 400 (see docs/metrics.md)")
    return value, note


def evaluate(spec: Any, ref: np.ndarray, dist: np.ndarray, *, fps: float, ref_key: str | None = None,
             cache_dir: Path | None = None, weights_dir: Path | None = None, device: str = "cpu",
             progress: ProgressFn | None = None, features_out: dict | None = None) -> dict[str, dict]:
    """Score a decoded sequence against its original.

    ref/dist: uint8 RGB (T, H, W, 3) of equal shape. Returns
    {value_name: {"value", "status", "reason", "lower_is_better"}} for the value
    names of ``spec.names`` (psnr -> psnr and psnr_y). ``ref_key`` (sequence
    sha256 + protocol) identifies the reference for the feature cache; without
    it the frames are hashed. ``fps`` is accepted for the record and for
    future frame-rate-aware protocols; the current protocols do not use it.
    ``device`` runs DISTS/LPIPS/FVD there (resolved only when one of them is
    asked for); ``progress(metric, done, total)`` is called after each batch;
    ``features_out`` (a dict) receives FVD's clip features of both sides
    (``"fvd"``) and the batch sizes used (``"batch"``: {metric: frames or clips}).
    """
    _check_names(spec)
    for nm, a in (("ref", ref), ("dist", dist)):
        if not isinstance(a, np.ndarray) or a.dtype != np.uint8 or a.ndim != 4 or a.shape[-1] != 3:
            raise InputError(f"metrics.evaluate: {nm} must be uint8 RGB (T, H, W, 3), got "
                             f"{getattr(a, 'dtype', type(a))} {getattr(a, 'shape', '')}")
    if ref.shape != dist.shape:
        raise InputError(f"metrics.evaluate: ref {ref.shape} and dist {dist.shape} differ in shape")
    if ref.shape[0] == 0:
        raise InputError("metrics.evaluate: no frames")
    ident = _ref_identity(ref, ref_key)
    weights_dir = Path(weights_dir) if weights_dir is not None else None
    if any(n in LEARNED for n in spec.names):
        device = resolve_device(device)
        configure_torch(device)
    even = ref.shape[1] % 2 == 0 and ref.shape[2] % 2 == 0
    out: dict[str, dict] = {}
    batch_out: dict[str, int] | None = None
    if features_out is not None:
        batch_out = features_out.setdefault("batch", {})
    for name in spec.names:
        try:
            if name == "psnr":
                out["psnr"] = _entry(float(np.mean(classic.psnr_rgb_frames(ref, dist))), "psnr")
                out["psnr_y"] = (_entry(float(np.mean(classic.psnr_y_frames(ref, dist))), "psnr_y") if even else
                                 _not_computed("psnr_y", "BT.601 4:2:0 luma needs even width and height"))
            elif name == "ssim":
                if not even:
                    raise _NotComputable("luma via gfvc.video.rgb_to_yuv420 needs even width and height")
                if min(ref.shape[1:3]) < classic.SSIM_WINDOW:
                    raise _NotComputable(f"frames smaller than the {classic.SSIM_WINDOW}x{classic.SSIM_WINDOW} window")
                out["ssim"] = _entry(float(np.mean(classic.ssim_frames(classic.luma(ref), classic.luma(dist)))), "ssim")
            elif name == "dists":
                out["dists"] = _entry(_eval_dists(spec, ref, dist, ident, cache_dir, weights_dir, device, progress,
                                                  batch_out),
                                      "dists")
            elif name == "lpips":
                out["lpips"] = _entry(_eval_lpips(spec, ref, dist, ident, cache_dir, weights_dir, device, progress,
                                                  batch_out),
                                      "lpips")
            elif name == "fvd":
                v, note = _eval_fvd(spec, ref, dist, ident, cache_dir, weights_dir, device, progress, features_out,
                                    batch_out)
                out["fvd"] = _entry(v, "fvd", reason=note) if v is not None else _not_computed("fvd", note)
        except (WeightsError, _NotComputable) as e:
            for vn in METRIC_VALUES[name]:
                out[vn] = _not_computed(vn, str(e))
    return out


def to_json(results: dict[str, dict]) -> str:
    """Strict JSON (no NaN/inf: values are finite or null)."""
    return json.dumps(results, indent=2, allow_nan=False)
