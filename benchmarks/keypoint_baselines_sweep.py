"""Quantisation sweep and keyframe-repeat check of the FOMM-lineage keypoint codecs (fomm, mraa, tpsm).

On the demo clip (carphone frames 0..31, 128x128) with a checkpoint (default:
the codec's committed demo checkpoint), key frame = the ORIGINAL frame 0 (no
VVC, so only the feature quantisation is measured):

* ``--sections demo``: PSNR of the synthesis of frames 1..31 from unquantised
  features vs PSNR of repeating frame 0 (does the model beat keyframe-repeat?);
* ``--sections sweep``: for each quant_scale, closed-loop DPCM as the codec
  does (gfvc.entropy.dpcm_encode), bits per inter frame with the suite's
  coder (cabac) and the GFVC software's (gfvc-reference), mean absolute
  feature error, PSNR / L1 of the synthesis against the unquantised
  synthesis, PSNR against the original.

    python benchmarks/keypoint_baselines_sweep.py --codec mraa [--checkpoint PATH] [--json OUT]

Timings are not measured here (see benchmarks/baselines_bench.py).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

SCALES = (8, 16, 32, 64, 128, 256, 512)


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    """Mean over frames of the per-frame PSNR (RGB, 8 bit)."""
    out = []
    for x, y in zip(a.astype(np.float64), b.astype(np.float64), strict=True):
        mse = float(np.mean((x - y) ** 2))
        out.append(99.0 if mse == 0 else 10 * np.log10(255.0 ** 2 / mse))
    return float(np.mean(out))


def make_codec(name: str, checkpoint: Path | None) -> Any:
    import baselines.registry  # noqa: F401
    from gfvc.codec import Environment, get_codec
    from test_conditions import load_condition

    env = Environment(models={name: str(checkpoint)}) if checkpoint else Environment()
    codec = get_codec(name)(load_condition("demo"), env)
    codec.check()
    return codec


def demo_check(codec: Any) -> dict[str, Any]:
    from test_conditions.demo import demo_frames

    frames = demo_frames(0, 32)
    kf = codec._key_features(frames[0])
    feats = codec.analyse(frames[1:])
    syn, _ = codec.synthesise(frames[0], kf, feats)
    repeat = np.repeat(frames[:1], 31, axis=0)
    return {"codec": codec.name, "checkpoint_sha256": codec.model_checksum(),
            "psnr_synthesis_unquantised": _psnr(syn, frames[1:]), "psnr_keyframe_repeat": _psnr(repeat, frames[1:]),
            "per_frame_synthesis": [round(_psnr(s[None], f[None]), 2) for s, f in zip(syn, frames[1:], strict=True)],
            "per_frame_repeat": [round(_psnr(frames[:1], f[None]), 2) for f in frames[1:]]}


def quant_sweep(codec: Any, scales: tuple[int, ...] = SCALES) -> dict[str, Any]:
    from gfvc import entropy
    from test_conditions.demo import demo_frames

    frames = demo_frames(0, 32)
    key = frames[0]
    kf = codec._key_features(key)
    feats = codec.analyse(frames[1:])
    ref, _ = codec.synthesise(key, kf, feats)
    cabac, gref = entropy.get_feature_coder("cabac"), entropy.get_feature_coder("gfvc-reference")
    rows = []
    for s in scales:
        q, recon = entropy.dpcm_encode(feats, kf, s)
        syn, _ = codec.synthesise(key, kf, recon)
        rows.append({"quant_scale": s,
                     "cabac_bits_per_frame": len(cabac.encode(q)) * 8 / q.shape[0],
                     "gfvc_reference_bits_per_frame": len(gref.encode(q)) * 8 / q.shape[0],
                     "feature_mean_abs_error": float(np.abs(recon - feats).mean()),
                     "psnr_vs_unquantised_synthesis": _psnr(syn, ref),
                     "l1_vs_unquantised_synthesis": float(np.abs(syn.astype(np.float64) - ref).mean()),
                     "psnr_vs_original": _psnr(syn, frames[1:])})
        print(json.dumps(rows[-1]), flush=True)
    return {"codec": codec.name, "feature_dim": codec.feature_dim,
            "psnr_unquantised_vs_original": _psnr(ref, frames[1:]), "rows": rows}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--codec", required=True, choices=["fomm", "mraa", "tpsm"])
    ap.add_argument("--checkpoint", type=Path, default=None, help="default: the committed demo checkpoint")
    ap.add_argument("--sections", default="demo,sweep")
    ap.add_argument("--scales", default=",".join(map(str, SCALES)))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", type=Path, default=None)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    codec = make_codec(a.codec, a.checkpoint)
    res: dict[str, Any] = {"codec": a.codec, "torch": torch.__version__}
    if "demo" in a.sections:
        res["demo"] = demo_check(codec)
        print(json.dumps({k: v for k, v in res["demo"].items() if not k.startswith("per_frame")}), flush=True)
    if "sweep" in a.sections:
        res["sweep"] = quant_sweep(codec, tuple(int(s) for s in a.scales.split(",")))
    if a.json:
        a.json.write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
