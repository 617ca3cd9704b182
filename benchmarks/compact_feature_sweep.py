"""Quantisation sweep and keyframe-repeat check of CFTE, MTTF and IMT on the demo clip.

The same measurements as benchmarks/keypoint_baselines_sweep.py (whose
functions this script reuses): carphone frames 0..31 at 128x128, key frame =
the ORIGINAL frame 0 (no VVC: only the feature quantisation is measured),
with a checkpoint (default: the codec's committed demo checkpoint):

* ``demo``: PSNR of frames 1..31 synthesised from unquantised features vs
  PSNR of repeating frame 0;
* ``sweep``: per quant_scale, closed-loop DPCM as the codec does, bits per
  inter frame with the suite's coder (cabac) and the GFVC software's
  (gfvc-reference), mean absolute feature error, PSNR / L1 of the synthesis
  against the unquantised synthesis, PSNR against the original.

    python benchmarks/compact_feature_sweep.py --codec mttf [--checkpoint PATH] [--scales 8,16,...] [--json OUT]

MTTF's own coder scales by 127 (int8 truncation); CFTE's GFVC scale is 4.
No timings (numbers from a loaded 2-core machine).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import keypoint_baselines_sweep as kbs

DEFAULT_SCALES = {"cfte": (1, 2, 4, 8, 16, 32, 64), "imt": (1, 2, 4, 8, 16, 32, 64),
                  "mttf": (8, 16, 32, 64, 127, 256, 512)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--codec", required=True, choices=sorted(DEFAULT_SCALES))
    ap.add_argument("--checkpoint", type=Path, default=None, help="default: the committed demo checkpoint")
    ap.add_argument("--sections", default="demo,sweep")
    ap.add_argument("--scales", default=None, help="comma-separated; default per codec")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", type=Path, default=None)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    codec = kbs.make_codec(a.codec, a.checkpoint)
    scales = tuple(int(s) for s in a.scales.split(",")) if a.scales else DEFAULT_SCALES[a.codec]
    res: dict[str, Any] = {"codec": a.codec, "torch": torch.__version__}
    if "demo" in a.sections:
        res["demo"] = kbs.demo_check(codec)
        print(json.dumps({k: v for k, v in res["demo"].items() if not k.startswith("per_frame")}), flush=True)
    if "sweep" in a.sections:
        res["sweep"] = kbs.quant_sweep(codec, scales)
    if a.json:
        a.json.write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
