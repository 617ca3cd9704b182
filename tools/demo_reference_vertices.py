"""Make the demo's PROXY reference vertices (carphone test frames 0..31, 128x128).

The demo has no OSX/SMPL-X output (no OSX weights here), so its reference
vertices are made by exactly the PROXY procedure of the demo's training
targets (model_parts/proxy_vertices.py, s2d_model/demo_data.py): the seeded
10475-point template (head ellipse + torso) placed on the first frame of the
clip and moved to every frame by coarse-to-fine Horn-Schunck optical flow.
They follow the real image motion of the test frames but carry no body-model
meaning: vertex errors against them say how well a codec's vertices follow
this proxy, not how accurate a body mesh is. They are labelled PROXY in the
manifest (``proxy: true``) and wherever their numbers appear.

    python -m tools.demo_reference_vertices [OUT.npy]

writes the file (default: the packaged test_conditions/data/carphone_128x128_32.proxy-vertices.npy)
and prints its sha256 for the demo manifest.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from gfvc.vertices import builtin_path
from gfvc.video import sha256_file
from model_parts.proxy_vertices import proxy_vertices
from test_conditions.demo import demo_frames

TEST_FIRST, TEST_COUNT = 0, 32  # the demo condition's frames (carphone 0..31)
SOURCE = ("PROXY (proxy-template-hornschunck-v1): seeded 10475-point template on carphone frame 0 moved by "
          "Horn-Schunck optical flow (model_parts/proxy_vertices.py), the procedure of the demo's training targets; "
          "not OSX/SMPL-X")


def make(out: Path) -> str:
    verts = proxy_vertices(demo_frames(TEST_FIRST, TEST_COUNT), reference=0).astype(np.float32)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.save(out, verts)
    return sha256_file(out)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    out = Path(argv[0]) if argv else builtin_path("carphone-proxy-vertices")
    sha = make(out)
    print(f"{out}\nsha256 {sha}\nsource: {SOURCE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
