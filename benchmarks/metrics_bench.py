"""Metric throughput: our pipeline vs the GFVC-software-style per-frame loop.

Workload (the realistic CTC case): one sequence of T frames decoded at R rate
points; DISTS + LPIPS-VGG for every decode. Baseline = the GFVC software's
style with the packages themselves (DISTS_pytorch.DISTS, lpips.LPIPS): per
frame and per rate point, one call that recomputes both the reference's and
the decoded frame's features, no batching. Ours = metrics.evaluate() once per
rate point with the same ref_key (reference features computed once, frames
batched, inference_mode). Both run with the same torch thread count.

The real ImageNet trunks are not available offline, so both sides use the
SAME seeded random VGG16 trunk (saved under its real file name in a temporary
$TORCH_HOME; the registry hash is patched for this process only). Speed does
not depend on the weight values; the printed max |difference| shows both
sides compute the same numbers.

Usage: python benchmarks/metrics_bench.py [--frames 4] [--rates 4,12] [--repeat 2] [--threads 2] [--sizes 256,384]
The machine may be shared with other jobs: run it twice and compare.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def _setup_random_weights(home: Path) -> None:
    import torch
    import torchvision

    from metrics import fvd, weights

    hub = home / "hub" / "checkpoints"
    hub.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    torch.save(torchvision.models.vgg16(weights=None).state_dict(), hub / "vgg16-397923af.pth")
    torch.manual_seed(1)
    torch.save(fvd.InceptionI3d(400).state_dict(), hub / "i3d_pretrained_400.pt")
    for name in ("vgg16-397923af.pth", "i3d_pretrained_400.pt"):
        p = hub / name
        weights.REGISTRY[name] = dataclasses.replace(weights.get(name), sha256=weights.sha256_of(p),
                                                     size=p.stat().st_size)


def _sequence(t: int, size: int, rates: int, seed: int = 0) -> tuple[np.ndarray, list[np.ndarray]]:
    rng = np.random.default_rng(seed)
    # smooth-ish content so the DISTS/LPIPS values are not degenerate
    base = rng.integers(0, 256, (t, size // 8, size // 8, 3)).astype(np.float64)
    ref = np.clip(np.repeat(np.repeat(base, 8, axis=1), 8, axis=2) + rng.normal(0, 8, (t, size, size, 3)), 0, 255)
    ref = ref.astype(np.uint8)
    dists = [np.clip(ref.astype(np.int64) + rng.integers(-4 * (r + 1), 4 * (r + 1) + 1, ref.shape), 0, 255)
             .astype(np.uint8) for r in range(rates)]
    return ref, dists


def baseline(ref: np.ndarray, dists: list[np.ndarray]) -> tuple[float, list[float], list[float]]:
    """GFVC-software style: packages, per frame, recompute ref and dist features."""
    import DISTS_pytorch
    import lpips
    import torch
    import torch.nn.functional as F

    sys.prefix, old = os.path.dirname(DISTS_pytorch.__file__), sys.prefix  # package reads weights.pt here
    try:
        d_model = DISTS_pytorch.DISTS()
    finally:
        sys.prefix = old
    l_model = lpips.LPIPS(net="vgg", verbose=False)
    t0 = time.perf_counter()
    dv, lv = [], []
    for dist in dists:
        ds, ls = [], []
        for f in range(ref.shape[0]):
            a = torch.from_numpy(ref[f]).permute(2, 0, 1)[None].float() / 255
            b = torch.from_numpy(dist[f]).permute(2, 0, 1)[None].float() / 255
            k = round(min(a.shape[-2:]) / 256)
            a2, b2 = (F.avg_pool2d(a, k), F.avg_pool2d(b, k)) if k >= 2 else (a, b)
            with torch.no_grad():
                ds.append(float(d_model(a2, b2)))
                ls.append(float(l_model(a, b, normalize=True)))
        dv.append(float(np.mean(ds)))
        lv.append(float(np.mean(ls)))
    return time.perf_counter() - t0, dv, lv


def ours(ref: np.ndarray, dists: list[np.ndarray], names=("dists", "lpips")) -> tuple[float, dict]:
    import metrics
    from metrics import cache
    from test_conditions import MetricsSpec

    spec = MetricsSpec(names=names)
    metrics._model("dists", None)  # model construction is outside the timed region on both sides
    metrics._model("lpips", None, "vgg")
    cache.MEMORY.clear()
    t0 = time.perf_counter()
    vals = {n: [] for n in ("dists", "lpips")}
    for dist in dists:
        r = metrics.evaluate(spec, ref, dist, fps=25, ref_key="bench-seq")
        for n in vals:
            if n in r:
                vals[n].append(r[n]["value"])
    return time.perf_counter() - t0, vals


def per_metric_cost(size: int, frames: int) -> dict[str, float]:
    """ms per decoded frame for each metric alone (fresh cache: includes the reference's features)."""
    import metrics
    from metrics import cache
    from test_conditions import FvdProtocol, MetricsSpec

    out = {}
    ref, (dist,) = _sequence(frames, size, 1, seed=7)
    for name in ("psnr", "ssim", "dists", "lpips"):
        cache.MEMORY.clear()
        t0 = time.perf_counter()
        metrics.evaluate(MetricsSpec(names=(name,)), ref, dist, fps=25)
        out[name] = 1000 * (time.perf_counter() - t0) / frames
    # FVD needs >= 2 clips of 16 frames per side
    ref32, (dist32,) = _sequence(32, size, 1, seed=8)
    cache.MEMORY.clear()
    t0 = time.perf_counter()
    fvd_spec = MetricsSpec(names=("fvd",), fvd=FvdProtocol(clip_length=16, stride=16, detector="i3d_pretrained_400"))
    r = metrics.evaluate(fvd_spec, ref32, dist32,
                         fps=25)
    assert r["fvd"]["status"] == "ok", r["fvd"]["reason"]
    out["fvd"] = 1000 * (time.perf_counter() - t0) / 32
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=4)
    ap.add_argument("--rates", default="4", help="comma-separated numbers of decodes per sequence, e.g. 4,12")
    ap.add_argument("--repeat", type=int, default=1, help="alternate both sides N times, keep the fastest")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--sizes", default="256,384")
    ap.add_argument("--skip-per-metric", action="store_true")
    args = ap.parse_args(argv)

    home = Path(tempfile.mkdtemp(prefix="gfvc-metrics-bench-"))
    os.environ["TORCH_HOME"] = str(home)
    import torch

    torch.set_num_threads(args.threads)
    _setup_random_weights(home)
    print(f"metrics_bench: SEEDED RANDOM trunks (VGG16, I3D) in {home} (real weights are not available "
          f"offline; speed does not depend on weight values). torch {torch.__version__}, "
          f"threads={torch.get_num_threads()}, cpus={os.cpu_count()} (shared machine: numbers are noisy; "
          f"best of {args.repeat})", flush=True)
    for rates in (int(r) for r in args.rates.split(",")):
        print(f"workload: 1 sequence x {rates} decodes (codecs x rate points) x {args.frames} frames, "
              f"DISTS (gfvc-avgpool) + LPIPS-VGG", flush=True)
        for size in (int(s) for s in args.sizes.split(",")):
            ref, dists = _sequence(args.frames, size, rates)
            tb = to = float("inf")
            for _ in range(args.repeat):
                t, dv, lv = baseline(ref, dists)
                tb = min(tb, t)
                t, vals = ours(ref, dists)
                to = min(to, t)
            n = args.frames * rates
            dd = max(abs(a - b) for a, b in zip(dv, vals["dists"], strict=True))
            dl = max(abs(a - b) for a, b in zip(lv, vals["lpips"], strict=True))
            print(f"  {size}x{size}: baseline {n / tb:6.2f} frames/s ({tb:6.2f} s)  ours {n / to:6.2f} frames/s "
                  f"({to:6.2f} s)  speed-up x{tb / to:4.2f}   max|diff| dists {dd:.1e} lpips {dl:.1e}", flush=True)
    if not args.skip_per_metric:
        print("per-frame cost of each metric alone (ms per decoded frame, reference features included):")
        for size in (int(s) for s in args.sizes.split(",")):
            c = per_metric_cost(size, args.frames)
            print(f"  {size}x{size}: " + "  ".join(f"{k} {v:8.1f}" for k, v in c.items()), flush=True)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    try:
        raise SystemExit(main())
    finally:  # the random trunks are ~600 MB
        import shutil

        if os.environ.get("TORCH_HOME", "").startswith(tempfile.gettempdir() + "/gfvc-metrics-bench-"):
            shutil.rmtree(os.environ["TORCH_HOME"], ignore_errors=True)
