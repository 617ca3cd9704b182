"""Learned metrics on the device: memory-bounded batches vs the per-frame loop (same device, same run).

For DISTS, LPIPS-VGG (frames) and FVD (I3D clips) at each size: frames/s of
metrics.evaluate with batch 1 (the per-frame loop; clip batch 1 for FVD) and
with the memory-bounded batch the suite picks on this device
(gfvc.devices.batch_size: free memory / measured per-item cost, capped by
metrics.MAX_BATCH / MAX_CLIPS), reference features recomputed on both sides
(cache cleared), one sequence. Also printed: the batch chosen, the free memory
it was derived from, and the relative difference of the values (the batch
size changes the last bits: convolution kernels are chosen by shape).

Weights: SEEDED RANDOM VGG16 and I3D (real weights are not available offline;
speed does not depend on weight values). Run on a GPU machine with
``--device cuda`` for the GPU figures; here only CPU was available.

    python benchmarks/metrics_device_bench.py [--device auto] [--sizes 256,384] [--frames 8] [--fvd-frames 48]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))


def _run(spec, ref, dist, device: str, cap: int | None, repeat: int) -> tuple[float, dict, dict]:
    import metrics
    from metrics import cache

    saved = dict(metrics.MAX_BATCH), dict(metrics.MAX_CLIPS)
    if cap is not None:
        for d in ("cpu", "cuda"):
            metrics.MAX_BATCH[d] = cap
            metrics.MAX_CLIPS[d] = cap
    try:
        best, res, used = float("inf"), {}, {}
        for _ in range(repeat):
            cache.MEMORY.clear()
            out: dict = {}
            t0 = time.perf_counter()
            res = metrics.evaluate(spec, ref, dist, fps=25, ref_key="bench", device=device, features_out=out)
            if device.startswith("cuda"):
                import torch

                torch.cuda.synchronize()
            best = min(best, time.perf_counter() - t0)
            used = out.get("batch", {})
        return best, res, used
    finally:
        metrics.MAX_BATCH.update(saved[0])
        metrics.MAX_CLIPS.update(saved[1])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--sizes", default="256,384")
    ap.add_argument("--frames", type=int, default=8, help="frames for DISTS/LPIPS")
    ap.add_argument("--fvd-frames", type=int, default=48, help="frames for FVD (clips of 16, stride 16)")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (jobs run with 1)")
    ap.add_argument("--repeat", type=int, default=2, help="alternating repeats, best kept")
    ap.add_argument("--metrics", default="dists,lpips,fvd")
    args = ap.parse_args(argv)

    home = Path(tempfile.mkdtemp(prefix="gfvc-metrics-bench-"))
    os.environ["TORCH_HOME"] = str(home)
    import torch
    from metrics_bench import _sequence, _setup_random_weights

    from gfvc.devices import free_memory, resolve_device
    from test_conditions import FvdProtocol, MetricsSpec

    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    _setup_random_weights(home)
    load = os.getloadavg()
    print(f"metrics_device_bench: device {device}, torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"cpus {os.cpu_count()}, load average {load[0]:.1f}/{load[1]:.1f}/{load[2]:.1f}, free memory "
          f"{free_memory(device) / 2**30:.1f} GiB. SEEDED RANDOM VGG16/I3D weights.", flush=True)
    print("| metric | size | items | per-frame loop (frames/s) | device batch (frames/s) | batch | speed-up | "
          "max rel. diff |")
    print("|---|---|---|---|---|---|---|---|")
    for size in (int(s) for s in args.sizes.split(",")):
        for name in args.metrics.split(","):
            if name == "fvd":
                spec = MetricsSpec(names=("fvd",), fvd=FvdProtocol(clip_length=16, stride=16,
                                                                   detector="i3d_pretrained_400"))
                n = args.fvd_frames
            else:
                spec = MetricsSpec(names=(name,))
                n = args.frames
            ref, (dist,) = _sequence(n, size, 1, seed=size)
            _run(spec, ref[:16] if name == "fvd" else ref[:1], dist[:16] if name == "fvd" else dist[:1], device,
                 None, 1)  # warm-up: model loading and first-call costs stay out of both timings
            t1 = tb = float("inf")
            for _ in range(args.repeat):  # alternate the two sides: load changes hit both alike
                t, r1, _ = _run(spec, ref, dist, device, 1, 1)
                t1 = min(t1, t)
                t, rb, used = _run(spec, ref, dist, device, None, 1)
                tb = min(tb, t)
            v1, vb = r1[name]["value"], rb[name]["value"]
            rel = abs(v1 - vb) / max(abs(v1), 1e-30) if v1 is not None and vb is not None else float("nan")
            unit = "clips" if name == "fvd" else "frames"
            items = n // 16 if name == "fvd" else n
            print(f"| {name} | {size} | {items} {unit} | {n / t1:.2f} | {n / tb:.2f} | {used.get(name)} | "
                  f"x{t1 / tb:.2f} | {rel:.1e} |", flush=True)
    return 0


if __name__ == "__main__":
    try:
        raise SystemExit(main())
    finally:  # the random trunks are ~600 MB
        import shutil

        if os.environ.get("TORCH_HOME", "").startswith(tempfile.gettempdir() + "/gfvc-metrics-bench-"):
            shutil.rmtree(os.environ["TORCH_HOME"], ignore_errors=True)
