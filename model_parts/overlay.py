"""Draw decoded Sparse2Dense vertices over frames, for visual inspection.

Vertices are (T, V, 2) normalised image coordinates (x, y) in [-1, 1]
(align_corners convention: -1 is the centre of the first pixel, +1 the centre
of the last). Points outside the frame are skipped.
"""
from __future__ import annotations

import numpy as np

from gfvc.errors import InputError
from gfvc.vertices import to_pixels  # noqa: F401  (the convention lives in gfvc.vertices; re-exported)


def draw_vertices(frames: np.ndarray, vertices: np.ndarray, colour: tuple[int, int, int] = (0, 255, 0),
                  stride: int = 1, alpha: float = 0.8) -> np.ndarray:
    """Return a copy of ``frames`` (T, H, W, 3) uint8 with each vertex drawn as one blended pixel."""
    if not isinstance(frames, np.ndarray) or frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise InputError("draw_vertices: frames must be uint8 (T, H, W, 3)")
    vertices = np.asarray(vertices)
    if vertices.ndim != 3 or vertices.shape[-1] != 2:
        raise InputError(f"draw_vertices: vertices must be (T, V, 2), got {vertices.shape}")
    if vertices.shape[0] != frames.shape[0]:
        raise InputError(f"draw_vertices: {frames.shape[0]} frames but vertices for {vertices.shape[0]} frames; "
                         "decode the same bitstream that produced the vertices")
    if stride < 1:
        raise InputError("draw_vertices: stride must be >= 1")
    t, h, w, _ = frames.shape
    out = frames.copy()
    col = np.asarray(colour, np.float64)
    px = np.rint(to_pixels(vertices[:, ::stride], w, h)).astype(np.int64)
    for i in range(t):
        x, y = px[i, :, 0], px[i, :, 1]
        ok = (x >= 0) & (x < w) & (y >= 0) & (y < h) & np.isfinite(vertices[i, ::stride]).all(-1)
        x, y = x[ok], y[ok]
        out[i, y, x] = np.rint((1 - alpha) * out[i, y, x] + alpha * col).astype(np.uint8)
    return out
