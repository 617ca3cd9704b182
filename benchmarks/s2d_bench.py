"""Sparse2Dense benchmarks: speed, vertex-head cost, keypoint rate, quant_scale sweep.

    python benchmarks/s2d_bench.py [--sections speed,vertex,rate,sweep] [--threads 2] [--json out.json]

* speed: encoder (keypoint detector) and decoder (texture + motion + generator +
  vertex head) frames/s on CPU at 256 and 384 px for the ``reference`` and
  ``small`` architectures. Weights are RANDOM (speed does not depend on them).
* vertex: vertex head alone, ms/frame, vs the whole decoder in the same run.
* rate: keypoint bits per inter frame on the demo clip (frames 0..31) with the
  committed demo checkpoint, coded by "cabac" (ours) and "gfvc-reference"
  (the GFVC software's coder), at the codec's quant_scale.
* sweep: quant_scale sweep on the demo clip: keypoint-stream rate vs the
  synthesis error of quantised against unquantised keypoints (PSNR, L1) and vs
  the original frames. The key frame is the original frame 0 (no VVC), so the
  numbers isolate keypoint quantisation.
Timings are wall-clock on a shared machine: compare ratios within one run.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch


def _cfg(name: str, size: int):
    from s2d_model.config import config_from_dict, load_config

    d = load_config(name).to_dict()
    d["image_size"] = size
    return config_from_dict(d, name=f"{name}@{size}")


def _time(fn, reps: int) -> float:
    fn()  # warm-up
    t = time.perf_counter()
    for _ in range(reps):
        fn()
    return (time.perf_counter() - t) / reps


def bench_speed(sizes=(256, 384), configs=("small", "reference"), batch: int = 1, reps: int = 1) -> list[dict]:
    from s2d_model.networks import Sparse2Dense

    rows = []
    for name in configs:
        for size in sizes:
            cfg = _cfg(name, size)
            torch.manual_seed(0)
            m = Sparse2Dense(cfg).eval()
            x = torch.rand(batch, 3, size, size)
            with torch.inference_mode():
                enc = _time(lambda m=m, x=x: m.detect(x), reps)
                tex = m.texture(x[:1])
                kp = m.detect(x)
                dec = _time(lambda m=m, tex=tex, kp=kp: m.synthesise(tex, kp[:1], kp), reps)
                noverts = _time(lambda m=m, tex=tex, kp=kp: m.synthesise(tex, kp[:1], kp, vertices=False), reps)
            rows.append({"config": name, "size": size, "weights": "random", "batch": batch,
                         "encode_fps": batch / enc, "decode_fps": batch / dec,
                         "decode_fps_without_vertex_head": batch / noverts})
            print(json.dumps(rows[-1]))
    return rows


def bench_vertex(configs=("small", "reference"), size: int = 384, batch: int = 4, reps: int = 3) -> list[dict]:
    from s2d_model.networks import Sparse2Dense

    rows = []
    for name in configs:
        cfg = _cfg(name, size)
        m = Sparse2Dense(cfg).eval()
        t = cfg.texture
        feat = torch.rand(batch, t.block_expansion * 2 ** t.num_down_blocks, size // 2 ** t.num_down_blocks,
                          size // 2 ** t.num_down_blocks)
        with torch.inference_mode():
            s = _time(lambda m=m, feat=feat: m.vertex_head(feat), reps)
        rows.append({"config": name, "size": size, "vertex_head_ms_per_frame": 1000 * s / batch,
                     "paper_ms_per_frame_gpu": 2.0, "paper_osx_ms_per_frame": 724.0})
        print(json.dumps(rows[-1]))
    return rows


def _demo_codec(checkpoint: Path | None):
    from gfvc.codec import Environment
    from s2d_model.codec import S2DCodec
    from test_conditions import load_condition

    extra = {"s2d_checkpoint": str(checkpoint)} if checkpoint else {}
    c = S2DCodec(load_condition("demo"), Environment(extra=extra))
    c.load()
    return c


def bench_rate(checkpoint: Path | None = None, scale: float | None = None) -> dict:
    from gfvc import entropy
    from test_conditions.demo import demo_frames

    codec = _demo_codec(checkpoint)
    frames = demo_frames(0, 32)
    key_feat = codec.analyse(frames[:1])[0]
    feats = codec.analyse(frames[1:])
    scale = scale or codec.quant_scale
    q, _ = entropy.dpcm_encode(feats, key_feat, scale)
    out = {"quant_scale": scale, "inter_frames": int(q.shape[0]), "checkpoint_sha256": codec.model_checksum()}
    for name in ("cabac", "gfvc-reference"):
        coder = entropy.get_feature_coder(name)
        data = coder.encode(q)
        assert np.array_equal(coder.decode(data, q.shape[0], q.shape[1]), q)
        out[f"{name}_bits_per_frame"] = len(data) * 8 / q.shape[0]
    print(json.dumps(out))
    return out


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0 ** 2 / mse)


def quant_sweep(checkpoint: Path | None = None, scales=(8, 16, 32, 64, 128, 256, 512)) -> list[dict]:
    from gfvc import entropy
    from test_conditions.demo import demo_frames

    codec = _demo_codec(checkpoint)
    frames = demo_frames(0, 32)
    key = frames[0]
    key_feat = codec.analyse(key[None])[0]
    feats = codec.analyse(frames[1:])
    ref_frames, _ = codec.synthesise(key, key_feat, feats)
    base = {"psnr_unquantised_vs_original": _psnr(ref_frames, frames[1:])}
    cabac, gref = entropy.get_feature_coder("cabac"), entropy.get_feature_coder("gfvc-reference")
    rows = []
    for s in scales:
        q, recon = entropy.dpcm_encode(feats, key_feat, s)
        syn, _ = codec.synthesise(key, key_feat, recon)
        rows.append({
            "quant_scale": s,
            "cabac_bits_per_frame": len(cabac.encode(q)) * 8 / q.shape[0],
            "gfvc_reference_bits_per_frame": len(gref.encode(q)) * 8 / q.shape[0],
            "kp_mean_abs_error": float(np.abs(recon - feats).mean()),
            "psnr_vs_unquantised_synthesis": _psnr(syn, ref_frames),
            "l1_vs_unquantised_synthesis": float(np.abs(syn.astype(np.float64) - ref_frames).mean()),
            "psnr_vs_original": _psnr(syn, frames[1:]),
            **base,
        })
        print(json.dumps(rows[-1]))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sections", default="speed,vertex,rate,sweep")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--checkpoint", type=Path, default=None, help="default: the committed demo checkpoint")
    ap.add_argument("--reps", type=int, default=1)
    ap.add_argument("--json", type=Path, default=None)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    secs = a.sections.split(",")
    res: dict = {"threads": a.threads, "torch": torch.__version__}
    if "speed" in secs:
        res["speed"] = bench_speed(reps=a.reps)
    if "vertex" in secs:
        res["vertex"] = bench_vertex()
    if "rate" in secs:
        res["rate"] = bench_rate(a.checkpoint)
    if "sweep" in secs:
        res["sweep"] = quant_sweep(a.checkpoint)
    if a.json:
        a.json.write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
