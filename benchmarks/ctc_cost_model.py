"""Cost model of the full gfvc-human CTC: per-frame cost of each stage, projected to 30 x 150 x 4 x 10.

Measured here, at 384x384, one torch thread per job (as jobs run), on the
demo clip upscaled to 384 (real content for the encoders):

* anchor encode + decode per frame: VTM-22.2 when --vtm-dir / $GFVC_VTM_DIR is
  given, else VVenC (bundled ffmpeg, the condition's preset) as a STAND-IN,
  labelled so (VTM is the CTC anchor and is much slower than VVenC);
* key frame: one intra picture (encode + decode) per generative job;
* analysis and synthesis per frame of EVERY registered generative codec, with
  reference-width RANDOM weights (a codec's ``benchmark_instance`` classmethod
  if it has one -- s2d has; baselines built from ``official_config`` /
  ``build_modules``; codecs without a model, e.g. keyframe-repeat, as they are);
  speed does not depend on weight values;
* each metric per decoded frame (PSNR, SSIM, DISTS, LPIPS with the
  memory-bounded device batch; FVD per clip / stride for the decoded side,
  the reference side once per sequence), seeded random VGG16/I3D.

Projection: 30 sequences x 150 frames x 4 rate points x 10 codecs (1 anchor +
9 generative). Generative codecs not registered here (the baselines before
they are merged) are counted at the mean cost of the measured model-based
generative codecs, and the table says so. Columns: total core-hours; wall time
on 1 CPU node (--node-cores, ideal scaling across jobs); on N single-core Dask
workers (--workers); on 1 GPU (+ the node's cores for the CPU-only anchors),
measured only when run with --device cuda, else "not measured".
keyframe-repeat (no model) is shown but is not one of the CTC's 10 codecs.

    python benchmarks/ctc_cost_model.py [--size 384] [--frames 4] [--node-cores 32] [--workers 64,256]
                                        [--save costs.json | --load costs.json]
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

SEQ, T, R, CODECS = 30, 150, 4, 10
# the generative codecs of the CTC (the Sparse2Dense paper's Table 1); others registered (fomm, test
# codecs) are measured and shown but not counted in the projection
CTC_GENERATIVE = ("s2d", "mraa", "fv2v", "tpsm", "cfte", "lia", "mttf", "imt", "ihvc")


def _clip(size: int, frames: int) -> np.ndarray:
    """The demo clip (128x128) resized to size x size (bilinear), first ``frames`` frames."""
    import torch
    import torch.nn.functional as F

    from test_conditions import load_condition
    from test_conditions.manifest import load_manifest, load_sequence

    c = load_condition("demo")
    x = load_sequence(load_manifest(c.manifest_path)[0], max(frames, 2)).frames
    t = torch.from_numpy(x).permute(0, 3, 1, 2).float()
    t = F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False)
    return t.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()


def _timed(fn, reps: int = 1) -> float:
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def _condition(size: int, frames: int):
    from test_conditions import load_condition

    return load_condition("gfvc-human").with_overrides(width=size, height=size, frames=frames)


def measure_anchor(size: int, frames: int, env, tmp: Path) -> tuple[float, str]:
    from gfvc.codec import RatePoint, Sequence, get_codec

    cond = _condition(size, frames)
    name = "vtm" if env.vtm_dir else "vvenc"
    if name == "vvenc":
        cond = cond.with_overrides(anchor={**cond.to_dict()["anchor"], "encoder": "vvenc"})
    codec = get_codec(name)(cond, env)
    codec.check()
    seq = Sequence("bench", _clip(size, frames), 25.0)
    t = _timed(lambda: codec.decode(codec.encode(seq, RatePoint(42), tmp / "anchor").bitstream, tmp / "anchor-d"))
    label = "VTM-22.2" if name == "vtm" else "VVenC (stand-in: VTM not installed; VTM is slower)"
    return t / frames, label


def measure_key_frame(size: int, env, tmp: Path) -> tuple[float, str]:
    from anchors import intra

    cond = _condition(size, 1)
    coder = "vtm" if env.vtm_dir else "vvenc"
    frame = _clip(size, 1)[0]
    kw = {"coder": coder, "chroma": "420", "condition": cond, "env": env}

    def run() -> None:
        res = intra.encode_intra(frame, 32, workdir=tmp / "key", **kw)
        intra.decode_intra(res.payload, width=size, height=size, workdir=tmp / "key", **kw)

    return _timed(run), f"{coder} intra" + ("" if coder == "vtm" else " (stand-in for VTM intra)")


def _instance(cls, cond, env, size: int):
    """A generative codec of reference width with random weights, or (None, reason)."""
    if hasattr(cls, "benchmark_instance"):
        return cls.benchmark_instance(cond, env, size), "benchmark_instance (random weights)"
    if hasattr(cls, "official_config") and hasattr(cls, "build_modules"):  # baselines.base.BaselineCodec
        # the same instance as baselines_bench.py: official architecture at this size, the codec's own
        # load path (strict load, model set-up such as IHVC's mesh) on in-memory random weights
        from baselines_bench import _random_codec

        codec, how, _ = _random_codec(cls.name, size)
        return codec, f"{how} (random weights)"
    if getattr(cls, "resolution", None) is None and not getattr(cls, "feature_dim", 1):
        return cls(cond, env), "no model"
    return None, "no way to build it with random weights (add a benchmark_instance classmethod)"


def measure_generative(size: int, frames: int, env) -> list[dict]:
    import torch

    from gfvc.codec import CODECS, load_builtin_codecs

    load_builtin_codecs()
    cond = _condition(size, frames + 1)
    clip = _clip(size, frames + 1)
    rows = []
    for name in CODECS.names():
        cls = CODECS.get(name)
        if getattr(cls, "family", "") != "generative" or name.startswith("test-"):
            continue
        try:
            codec, how = _instance(cls, cond, env, size)
            if codec is None:
                rows.append({"codec": name, "status": "not measured", "how": how})
                continue
            key = clip[0]
            with torch.inference_mode():
                kf = codec._key_features(key)
                codec._features(clip[1:2])  # warm-up
                ta = _timed(functools.partial(codec._features, clip[1:]))
                feats = codec._features(clip[1:])
                codec.synthesise(key, kf, feats[:1])  # warm-up
                ts = _timed(functools.partial(codec.synthesise, key, kf, feats))
            rows.append({"codec": name, "status": "ok", "how": how, "analysis_s": ta / frames,
                         "synthesis_s": ts / frames, "model": int(getattr(codec, "feature_dim", 0)) > 0})
        except Exception as e:  # noqa: BLE001 - a codec that cannot be measured is reported, not fatal
            rows.append({"codec": name, "status": "not measured", "how": f"{type(e).__name__}: {e}"[:200]})
    return rows


def measure_metrics(size: int, frames: int, device: str) -> dict[str, float]:
    from metrics_bench import _sequence, _setup_random_weights

    import metrics
    from metrics import cache
    from test_conditions import FvdProtocol, MetricsSpec

    home = Path(tempfile.mkdtemp(prefix="gfvc-metrics-bench-"))
    os.environ["TORCH_HOME"] = str(home)
    _setup_random_weights(home)
    out = {}
    ref, (dist,) = _sequence(frames, size, 1, seed=7)
    for name in ("psnr", "ssim", "dists", "lpips"):
        spec = MetricsSpec(names=(name,))
        metrics.evaluate(spec, ref[:1], dist[:1], fps=25, device=device)  # warm-up, model load
        cache.MEMORY.clear()
        # per decoded frame: the reference side is cached across a sequence's 40 decodes, so count
        # (ref + dist) / 40 + dist ~ dist-only; measured with a warm cache (second decode of the same ref)
        metrics.evaluate(spec, ref, dist, fps=25, ref_key="r", device=device)
        t = _timed(functools.partial(metrics.evaluate, spec, ref, dist[::-1].copy(), fps=25, ref_key="r",
                                     device=device))
        out[name] = t / frames
    spec = MetricsSpec(names=("fvd",), fvd=FvdProtocol(clip_length=16, stride=16, detector="i3d_pretrained_400"))
    ref32, (dist32,) = _sequence(32, size, 1, seed=8)
    metrics.evaluate(spec, ref32, dist32, fps=25, ref_key="f", device=device)  # warm-up + cached reference
    t = _timed(lambda: metrics.evaluate(spec, ref32, dist32[::-1].copy(), fps=25, ref_key="f", device=device))
    out["fvd"] = t / 32
    import shutil

    shutil.rmtree(home, ignore_errors=True)
    return out


def _h(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds / 60:.1f} min"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=384)
    ap.add_argument("--frames", type=int, default=4, help="frames per measurement (anchor: 2x)")
    ap.add_argument("--device", default="cpu", help="cpu (here) or cuda for the GPU column")
    ap.add_argument("--node-cores", type=int, default=32)
    ap.add_argument("--workers", default="64,256")
    ap.add_argument("--vtm-dir", default=os.environ.get("GFVC_VTM_DIR"))
    ap.add_argument("--save", help="write the measured per-frame costs to this JSON file")
    ap.add_argument("--load", help="project from per-frame costs saved with --save (no measuring)")
    args = ap.parse_args(argv)

    import torch

    from gfvc.codec import Environment
    from gfvc.devices import resolve_device

    torch.set_num_threads(1)
    device = resolve_device(args.device)
    env = Environment(vtm_dir=Path(args.vtm_dir) if args.vtm_dir else None, device=device)
    load = os.getloadavg()
    print(f"ctc_cost_model: {args.size}x{args.size}, device {device}, 1 torch thread, cpus {os.cpu_count()}, "
          f"load average {load[0]:.1f}/{load[1]:.1f}/{load[2]:.1f} (shared machine: per-frame costs are "
          "inflated by the load; the projection scales them linearly)", flush=True)
    if args.load:
        m = json.loads(Path(args.load).read_text())
        anchor_s, anchor_label, key_s, key_label, gen, met = (m["anchor_s"], m["anchor_label"], m["key_s"],
                                                              m["key_label"], m["generative"], m["metrics"])
        print(f"  (measurements loaded from {args.load}, measured {m.get('when')} at load {m.get('load')})")
    else:
        with tempfile.TemporaryDirectory() as tmp:
            anchor_s, anchor_label = measure_anchor(args.size, 2 * args.frames, env, Path(tmp))
            key_s, key_label = measure_key_frame(args.size, env, Path(tmp))
        gen = measure_generative(args.size, args.frames, env)
        met = measure_metrics(args.size, args.frames, device)
    if args.save:
        Path(args.save).write_text(json.dumps({
            "anchor_s": anchor_s, "anchor_label": anchor_label, "key_s": key_s, "key_label": key_label,
            "generative": gen, "metrics": met, "size": args.size, "device": device,
            "when": time.strftime("%Y-%m-%d %H:%M"), "load": list(load)}, indent=1))
    print(f"  anchor encode+decode: {anchor_s:.2f} s/frame [{anchor_label}]", flush=True)
    print(f"  key frame (intra encode+decode): {key_s:.2f} s/picture [{key_label}]", flush=True)
    for g in gen:
        if g["status"] == "ok":
            print(f"  {g['codec']}: analysis {g['analysis_s']:.3f} s/frame, synthesis {g['synthesis_s']:.3f} s/frame "
                  f"[{g['how']}]", flush=True)
        else:
            print(f"  {g['codec']}: NOT MEASURED ({g['how']})", flush=True)
    print("  metrics per decoded frame: " + ", ".join(f"{k} {v:.3f} s" for k, v in met.items()), flush=True)

    measured = [g for g in gen if g["status"] == "ok"]
    model_based = [g for g in measured if g.get("model") and g["codec"] in CTC_GENERATIVE]
    others = [g for g in measured if g not in model_based]
    n_gen = CODECS - 1
    rows: list[tuple[str, float, bool]] = []  # (stage, core-seconds, runs on the device)
    jobs_frames = SEQ * T * R
    rows.append((f"anchor encode+decode ({anchor_label.split(' (')[0]})", anchor_s * jobs_frames, False))
    gen_rows = model_based[:n_gen]
    missing = max(0, n_gen - len(gen_rows))
    for g in gen_rows:
        rows.append((f"{g['codec']}: key frame", key_s * SEQ * R, False))
        rows.append((f"{g['codec']}: analysis", g["analysis_s"] * SEQ * R * (T - 1), True))
        rows.append((f"{g['codec']}: synthesis", g["synthesis_s"] * SEQ * R * (T - 1), True))
    if missing and model_based:
        ma = float(np.mean([g["analysis_s"] for g in model_based]))
        ms = float(np.mean([g["synthesis_s"] for g in model_based]))
        rows.append((f"{missing} more generative codecs (not registered here: counted at the mean of "
                     f"{', '.join(g['codec'] for g in model_based)})",
                     missing * (key_s * SEQ * R + (ma + ms) * SEQ * R * (T - 1)), True))
    decoded = SEQ * T * R * CODECS
    for m, v in met.items():
        rows.append((f"metric {m}", v * decoded, m in ("dists", "lpips", "fvd")))
    total = sum(r[1] for r in rows)
    workers = [int(w) for w in args.workers.split(",")]
    print(f"\nProjection: {SEQ} sequences x {T} frames x {R} rate points x {CODECS} codecs "
          f"({decoded:,} decoded frames)\n")
    hdr = ["stage", "core-hours", f"1 CPU node ({args.node_cores} cores)"] + [f"{w} Dask workers" for w in workers] \
        + ["1 GPU"]
    print("| " + " | ".join(hdr) + " |")
    print("|" + "---|" * len(hdr))
    gpu = device.startswith("cuda")
    for name, secs, on_dev in rows:
        cells = [name, f"{secs / 3600:.1f}", _h(secs / args.node_cores)] + [_h(secs / w) for w in workers]
        cells.append((_h(secs) + " (GPU)" if on_dev else _h(secs / args.node_cores) + " (node CPUs)") if gpu
                     else "not measured (no GPU here)")
        print("| " + " | ".join(cells) + " |")
    dev_total = sum(s for _, s, d in rows if d)
    cpu_total = total - dev_total
    gpu_cell = _h(max(dev_total, cpu_total / args.node_cores)) if gpu else "not measured (no GPU here)"
    print("| **total** | **" + f"{total / 3600:.1f}" + "** | **" + _h(total / args.node_cores) + "** | "
          + " | ".join(f"**{_h(total / w)}**" for w in workers) + f" | {gpu_cell} |")
    print(f"\nof which torch work on the device (analysis, synthesis, DISTS/LPIPS/FVD): {dev_total / 3600:.1f} "
          f"core-hours; CPU-only (anchor, key frames, PSNR/SSIM): {cpu_total / 3600:.1f} core-hours.")
    if others:
        print("Not in the 10-codec CTC, not counted: " + ", ".join(
            f"{g['codec']} ({'model' if g.get('model') else 'no model'}: analysis {g['analysis_s']:.4f} s/frame, "
            f"synthesis {g['synthesis_s']:.4f} s/frame)" for g in others) + ".")
    print("Assumptions: ideal scaling across jobs (no per-job start-up, I/O or scheduling overhead), one thread "
          "per job; VVenC stands in for VTM unless --vtm-dir is given.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
