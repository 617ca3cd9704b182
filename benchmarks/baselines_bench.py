"""Generative baselines next to Sparse2Dense: codec speed at the official widths, feature rate on the demo clip.

    python benchmarks/baselines_bench.py [--codecs s2d,fomm,mraa,...] [--sizes 256,384] [--frames 2]
                                         [--sections speed,rate] [--threads 1] [--json out.json]

* speed: encoder (``analyse``: the analysis network on N frames, after the key
  frame) and decoder (``synthesise``: N frames from the key frame) frames/s and
  ms/frame of each codec through its codec adapter, on CPU, at 256 and 384 px,
  with RANDOM weights of the official architecture (``official_config()``, or
  the codec's own named configuration at that size, e.g. CFTE ``official-384``,
  LIA ``ted384-resample``; else the official kwargs at the other size). S2D
  runs its ``reference`` config. Speed does not depend on the weights. Every
  row also gives the ratio to S2D measured in the same run (``x_s2d``: S2D
  time / codec time, > 1 = faster than S2D).
* rate: feature bits per inter frame on the demo clip (frames 0..31, key =
  the original frame 0, no VVC) with our coder (``cabac``) and the GFVC
  software's (``gfvc-reference``), at each codec's ``quant_scale``, for every
  codec that has a demo checkpoint (baselines/checkpoints/<codec>-demo.pt;
  s2d's committed one). These demo models are tiny and trained for minutes on
  CPU: the numbers exercise the pipeline, they are not the paper's models.

Wall-clock timings on a shared machine: compare ratios within one run.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch


def _generative_codecs() -> list[str]:
    import baselines.registry  # noqa: F401
    from baselines.base import BaselineCodec
    from gfvc.codec import CODECS, load_builtin_codecs

    load_builtin_codecs()
    return ["s2d"] + sorted(n for n in CODECS.names()
                            if isinstance(CODECS.get(n), type) and issubclass(CODECS.get(n), BaselineCodec))


def official_config_at(cls: Any, size: int) -> tuple[Any, str]:
    """The official architecture at ``size`` (see module docstring) and how it was obtained."""
    off = cls.official_config()
    if off.image_size == size:
        return off, "official"
    for name, cfg in cls.named_configs().items():  # the codec's own order = its preference
        if cfg.image_size == size and name != "demo":
            return cfg, name
    return off.with_image_size(size), f"official kwargs at {size}"


def _condition(size: int) -> Any:
    from test_conditions import load_condition

    return load_condition("demo").with_overrides(width=size, height=size)


def _frames(n: int, size: int, seed: int = 0) -> np.ndarray:
    """A smooth moving pattern (uint8), so analysis networks see image-like input."""
    y, x = np.mgrid[0:size, 0:size] / size
    out = []
    for t in range(n + 1):
        r = 0.5 + 0.5 * np.sin(6 * x + 0.3 * t)
        g = 0.5 + 0.5 * np.cos(5 * y - 0.2 * t)
        b = 0.5 + 0.5 * np.sin(4 * (x + y) + 0.1 * t + seed)
        out.append(np.stack([r, g, b], -1))
    return (np.stack(out) * 255).astype(np.uint8)


def _random_codec(name: str, size: int) -> tuple[Any, str, dict[str, int]]:
    """A codec instance of ``name`` at ``size`` with random official-width weights (no checkpoint file)."""
    from gfvc.codec import Environment, get_codec

    cls = get_codec(name)
    env = Environment(models={name: "/random-weights-no-file"})
    codec = cls(_condition(size), env)
    torch.manual_seed(0)
    if name == "s2d":
        from s2d_model.config import config_from_dict, load_config
        from s2d_model.networks import Sparse2Dense, module_parameters

        d = load_config("reference").to_dict()
        d["image_size"] = size
        cfg = config_from_dict(d, name=f"reference@{size}")
        codec._cfg, codec._model = cfg, Sparse2Dense(cfg).eval()
        params = module_parameters(codec._model)
        parts = ("keypoint_detector", "texture_encoder", "dense_motion", "frame_generator", "vertex_head")
        return codec, "reference", {k: params[k] for k in parts}
    from model_parts import checkpoint as ck
    cfg, how = official_config_at(cls, size)
    nets = cls.build_modules(cfg)
    params = {k: int(sum(p.numel() for p in nets[k].parameters())) for k in cls.inference_modules}
    # the codec's own load path (strict load, model-specific set-up such as IHVC's mesh) on in-memory weights
    codec._sha = "0" * 64
    codec._ckpt = ck.CheckpointFile(path=Path("random-weights"), modules={k: nets[k].state_dict() for k in params},
                                    meta={"config": cfg.to_dict(), "model_id": f"{name}-random"})
    del nets
    codec.load()
    return codec, how, params


def _time(fn: Any, reps: int) -> float:
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def bench_speed(codecs: list[str], sizes: list[int], frames: int, reps: int) -> list[dict]:
    rows: list[dict] = []
    for size in sizes:
        clip = _frames(frames, size)
        key, inter = clip[0], clip[1:]
        s2d_times: dict[str, float] = {}
        for name in codecs:
            try:
                codec, how, params = _random_codec(name, size)
                with torch.inference_mode():
                    kf = codec._key_features(key)        # key frame analysis (both ends), not timed
                    codec.analyse(inter[:1])              # warm-up
                    enc = _time(lambda c=codec, x=inter: c.analyse(x), reps)
                    feats = codec.analyse(inter)
                    codec.synthesise(key, kf, feats[:1])  # warm-up (key-frame caches)
                    dec = _time(lambda c=codec, k=key, f=kf, z=feats: c.synthesise(k, f, z), reps)
            except Exception as e:  # one model failing must not hide the others; say why
                rows.append({"codec": name, "size": size, "error": f"{type(e).__name__}: {str(e)[:200]}"})
                print(json.dumps(rows[-1]), flush=True)
                continue
            row = {"codec": name, "size": size, "config": how, "weights": "random", "frames": frames,
                   "values_per_frame": int(feats.shape[1]),
                   "params_M": round(sum(params.values()) / 1e6, 3),
                   "encode_fps": frames / enc, "decode_fps": frames / dec,
                   "encode_ms_per_frame": 1000 * enc / frames, "decode_ms_per_frame": 1000 * dec / frames}
            if name == "s2d":
                s2d_times = {"enc": enc, "dec": dec}
            if s2d_times:
                row["encode_x_s2d"] = s2d_times["enc"] / enc
                row["decode_x_s2d"] = s2d_times["dec"] / dec
            rows.append(row)
            print(json.dumps(row), flush=True)
    return rows


def bench_rate(codecs: list[str]) -> list[dict]:
    from gfvc import entropy
    from gfvc.codec import Environment, get_codec
    from test_conditions import load_condition
    from test_conditions.demo import demo_frames

    frames = demo_frames(0, 32)
    rows = []
    for name in codecs:
        cls = get_codec(name)
        default = cls.default_checkpoint() if hasattr(cls, "default_checkpoint") else None
        if name != "s2d" and default is None:
            rows.append({"codec": name, "note": "no demo checkpoint"})
            print(json.dumps(rows[-1]), flush=True)
            continue
        codec = cls(load_condition("demo"), Environment())
        codec.load()
        if getattr(codec, "sends_key_features", False):
            start, feats = np.zeros(int(codec.feature_dim), np.float32), codec._features(frames)
        else:
            start, feats = codec._key_features(frames[0]), codec._features(frames[1:])
        q, _ = entropy.dpcm_encode(feats, start, codec.quant_scale)
        row = {"codec": name, "quant_scale": float(codec.quant_scale), "values_per_frame": int(q.shape[1]),
               "rows": int(q.shape[0]), "checkpoint_sha256": codec.model_checksum()[:16],
               "nonzero_residuals_per_frame": float(np.count_nonzero(q)) / q.shape[0]}
        for coder_name in ("cabac", "gfvc-reference"):
            coder = entropy.get_feature_coder(coder_name)
            data = coder.encode(q)
            assert np.array_equal(coder.decode(data, q.shape[0], q.shape[1]), q)
            row[f"{coder_name}_bits_per_frame"] = len(data) * 8 / (frames.shape[0] - 1)
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--codecs", default="", help="comma-separated subset (default: s2d and every baseline)")
    ap.add_argument("--sizes", default="256,384")
    ap.add_argument("--frames", type=int, default=2, help="inter frames per timing (full widths are slow on CPU)")
    ap.add_argument("--reps", type=int, default=1, help="repetitions per timing (the best is kept)")
    ap.add_argument("--sections", default="speed,rate")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", type=Path, default=None)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    known = _generative_codecs()
    codecs = [c.strip() for c in a.codecs.split(",") if c.strip()] or known
    unknown = [c for c in codecs if c not in known]
    if unknown:
        ap.error(f"unknown generative codec(s) {unknown}; known: {', '.join(known)}")
    if "s2d" in codecs:  # the reference of the ratios runs first at each size
        codecs = ["s2d"] + [c for c in codecs if c != "s2d"]
    secs = a.sections.split(",")
    res: dict[str, Any] = {"threads": a.threads, "torch": torch.__version__, "frames": a.frames}
    if "speed" in secs:
        res["speed"] = bench_speed(codecs, [int(s) for s in a.sizes.split(",")], a.frames, a.reps)
    if "rate" in secs:
        res["rate"] = bench_rate(codecs)
    if a.json:
        a.json.write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
