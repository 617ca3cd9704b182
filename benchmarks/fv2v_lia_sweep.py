"""Quantisation sweep and keyframe-repeat check of the fv2v and lia codecs.

The same measurements as benchmarks/keypoint_baselines_sweep.py (whose
functions this script runs) on the demo clip (carphone frames 0..31,
128x128; key frame = the ORIGINAL frame 0, no VVC, so only the feature
quantisation is measured), with scales suited to each codec's features:
FV2V sends a rotation matrix, translation and expression deltas (the GFVC
software's scale is 256; the sweep shows what it costs), LIA 20 motion
magnitudes whose scale the suite chose with this sweep (docs/baselines.md).

    python benchmarks/fv2v_lia_sweep.py --codec lia [--checkpoint PATH] [--sections demo,sweep] [--json OUT]

Timings are not measured here (see benchmarks/baselines_bench.py).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from keypoint_baselines_sweep import demo_check, make_codec, quant_sweep  # noqa: E402

SCALES = {"fv2v": (16, 32, 64, 128, 256, 512), "lia": (1, 2, 4, 8, 16, 32, 64, 128)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--codec", required=True, choices=sorted(SCALES))
    ap.add_argument("--checkpoint", type=Path, default=None, help="default: the committed demo checkpoint")
    ap.add_argument("--sections", default="demo,sweep")
    ap.add_argument("--scales", default=None, help="comma-separated (default depends on the codec)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", type=Path, default=None)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    codec = make_codec(a.codec, a.checkpoint)
    res: dict[str, Any] = {"codec": a.codec, "torch": torch.__version__, "quant_scale_in_use": codec.quant_scale}
    if "demo" in a.sections:
        res["demo"] = demo_check(codec)
        print(json.dumps({k: v for k, v in res["demo"].items() if not k.startswith("per_frame")}), flush=True)
    if "sweep" in a.sections:
        scales = tuple(int(s) for s in a.scales.split(",")) if a.scales else SCALES[a.codec]
        res["sweep"] = quant_sweep(codec, scales)
    if a.json:
        a.json.write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
