"""IHVC on the demo clip: keyframe-repeat check, quant_scale sweep, parameter-file (PROXY) encoding.

On carphone frames 0..31 (128x128, the demo test frames, never trained on)
with a checkpoint (default: the committed ``baselines/checkpoints/ihvc-demo.pt``),
key frame = the ORIGINAL frame 0 (no VVC: only the vector quantisation is
measured). As the codec does, all 32 vectors are coded, the key frame's first
(predicted from zeros), then the 31 inter frames:

* ``demo``: PSNR of frames 1..31 synthesised from the unquantised vectors of
  the learned estimator vs PSNR of repeating frame 0;
* ``sweep``: per quant_scale: closed-loop DPCM (gfvc.entropy.dpcm_encode),
  feature bits per inter frame (key row included, divided by 31) with the
  suite's coder (cabac) and the GFVC software's (gfvc-reference), mean
  absolute vector error, PSNR / L1 of the synthesis against the unquantised
  synthesis, PSNR against the original, mean vertex displacement against the
  unquantised vertices (normalised units);
* ``proxyfile``: the same test frames encoded through the parameter-file
  estimator with PROXY targets fitted on them
  (baselines.body_model.proxy_semantic_targets): how much the learned
  estimator loses against its own target procedure, and the PSNR of the key
  frame warped by the mesh motion field alone (no network).

    python benchmarks/ihvc_sweep.py [--checkpoint PATH] [--sections demo,sweep,proxyfile] [--json OUT]

Numbers are from a loaded 2-core machine; no timings are reported here.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

# the PSNR (mean of per-frame PSNR) and quant scales of the keypoint sweep, as compact_feature_sweep.py reuses it
sys.path.insert(0, str(Path(__file__).resolve().parent))
from keypoint_baselines_sweep import SCALES, _psnr


def make_codec(checkpoint: Path | None, extra: dict[str, Any] | None = None) -> Any:
    import baselines.registry  # noqa: F401
    from gfvc.codec import Environment, get_codec
    from test_conditions import load_condition

    env = Environment(models={"ihvc": str(checkpoint)} if checkpoint else {}, extra=dict(extra or {}))
    codec = get_codec("ihvc")(load_condition("demo"), env)
    codec.check()
    return codec


def _synth(codec: Any, key: np.ndarray, vecs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    frames, extras = codec.synthesise(key, vecs[0], vecs[1:])
    return frames, extras["vertices"]


def demo_check(codec: Any, frames: np.ndarray) -> dict[str, Any]:
    vecs = codec.analyse(frames)
    syn, _ = _synth(codec, frames[0], vecs)
    repeat = np.repeat(frames[:1], len(frames) - 1, axis=0)
    return {"checkpoint_sha256": codec.model_checksum(),
            "psnr_synthesis_unquantised": _psnr(syn, frames[1:]), "psnr_keyframe_repeat": _psnr(repeat, frames[1:]),
            "per_frame_synthesis": [round(_psnr(s[None], f[None]), 2) for s, f in zip(syn, frames[1:], strict=True)],
            "per_frame_repeat": [round(_psnr(frames[:1], f[None]), 2) for f in frames[1:]],
            "vector_std_over_time": [round(float(x), 4) for x in vecs.std(0)]}


def quant_sweep(codec: Any, frames: np.ndarray, scales: tuple[int, ...] = SCALES) -> dict[str, Any]:
    from gfvc import entropy

    vecs = codec.analyse(frames)
    ref, ref_v = _synth(codec, frames[0], vecs)
    cabac, gref = entropy.get_feature_coder("cabac"), entropy.get_feature_coder("gfvc-reference")
    n_inter = len(frames) - 1
    rows = []
    for s in scales:
        q, recon = entropy.dpcm_encode(vecs, np.zeros(vecs.shape[1], np.float32), s)
        syn, v = _synth(codec, frames[0], recon)
        rows.append({"quant_scale": s,
                     "cabac_bits_per_frame": len(cabac.encode(q)) * 8 / n_inter,
                     "gfvc_reference_bits_per_frame": len(gref.encode(q)) * 8 / n_inter,
                     "key_row_cabac_bits": len(cabac.encode(q[:1])) * 8,
                     "vector_mean_abs_error": float(np.abs(recon - vecs).mean()),
                     "psnr_vs_unquantised_synthesis": _psnr(syn, ref),
                     "l1_vs_unquantised_synthesis": float(np.abs(syn.astype(np.float64) - ref).mean()),
                     "psnr_vs_original": _psnr(syn, frames[1:]),
                     "vertex_mean_abs_vs_unquantised": float(np.abs(v - ref_v).mean())})
        print(json.dumps(rows[-1]), flush=True)
    return {"psnr_unquantised_vs_original": _psnr(ref, frames[1:]), "rows": rows}


def proxy_file_check(checkpoint: Path | None, frames: np.ndarray, head_centre: tuple[float, float],
                     head_height: float) -> dict[str, Any]:
    from baselines import body_model as bm

    codec = make_codec(checkpoint)
    layout = codec.layout()
    vec, info = bm.proxy_semantic_targets(frames, bm.proxy_mesh(layout), head_centre=head_centre,
                                          head_height=head_height)
    syn, _ = _synth(codec, frames[0], vec)
    learned = codec.analyse(frames)
    return {"targets": info["targets"], "fit_l1_last": info["fit_l1_last"],
            "psnr_synthesis_from_proxy_fit": _psnr(syn, frames[1:]),
            "psnr_key_warped_by_mesh_field_only": mesh_warp_psnr(codec, frames, vec),
            "learned_vs_proxy_fit_mean_abs": float(np.abs(learned - vec).mean()),
            "learned_vs_proxy_fit_per_dim": [round(float(x), 4) for x in np.abs(learned - vec).mean(0)]}


def mesh_warp_psnr(codec: Any, frames: np.ndarray, vecs: np.ndarray) -> float:
    """PSNR of the key frame warped by the mesh motion field alone (no network): is the motion right?

    The coverage-weighted sparse field of ``ihvc.splat_motion`` at the model's motion grid (1/4),
    upsampled to the frame, resamples the key frame (what SpadeDenseMotion starts from).
    """
    import torch.nn.functional as F

    from baselines import ihvc

    gen = codec.nets["generator"]
    h, w = frames.shape[1:3]
    with torch.no_grad():
        v = gen.vertices(torch.from_numpy(vecs).to(codec.device)).cpu()
        key = torch.from_numpy(frames[0]).permute(2, 0, 1)[None].float() / 255
        out = []
        for t in range(1, len(frames)):
            flow, cover = ihvc.splat_motion(v[:1], v[t:t + 1], (h // 4, w // 4))
            grid = ihvc.B.make_coordinate_grid((h // 4, w // 4))[None] + (flow * cover).permute(0, 2, 3, 1)
            grid = F.interpolate(grid.permute(0, 3, 1, 2), size=(h, w), mode="bilinear",
                                 align_corners=True).permute(0, 2, 3, 1)
            warped = F.grid_sample(key, grid, align_corners=True)
            out.append((warped[0].permute(1, 2, 0).clamp(0, 1) * 255).round().byte().numpy())
    return _psnr(np.stack(out), frames[1:])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", type=Path, default=None, help="default: the committed demo checkpoint")
    ap.add_argument("--sections", default="demo,sweep,proxyfile")
    ap.add_argument("--scales", default=",".join(map(str, SCALES)))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--head-centre", default="-0.2,-0.45", help="PROXY placement for proxyfile (as the demo data)")
    ap.add_argument("--head-height", type=float, default=0.85)
    ap.add_argument("--json", type=Path, default=None)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    from test_conditions.demo import demo_frames

    frames = demo_frames(0, 32)
    codec = make_codec(a.checkpoint)
    res: dict[str, Any] = {"codec": "ihvc", "torch": torch.__version__, "frames": "carphone 0..31 (demo test)"}
    if "demo" in a.sections:
        res["demo"] = demo_check(codec, frames)
        print(json.dumps({k: v for k, v in res["demo"].items() if not k.startswith("per_frame")}), flush=True)
    if "sweep" in a.sections:
        res["sweep"] = quant_sweep(codec, frames, tuple(int(s) for s in a.scales.split(",")))
    if "proxyfile" in a.sections:
        cx, cy = (float(v) for v in a.head_centre.split(","))
        res["proxyfile"] = proxy_file_check(a.checkpoint, frames, (cx, cy), a.head_height)
        print(json.dumps(res["proxyfile"]), flush=True)
    if a.json:
        a.json.write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
