"""PROXY vertex targets for the CPU demo (not SMPL-X, not OSX).

The paper supervises the vertex head with SMPL-X vertices (10475 x 2)
recovered by the OSX mesh estimator; OSX and its weights are not available
here. To still train the vertex head for real on the demo clip, this module
makes an honest, documented stand-in:

* template: 10475 points placed deterministically (seeded) inside a head
  ellipse and a torso region of a reference frame, in normalised image
  coordinates (x, y) in [-1, 1] -- a point cloud, not a body mesh;
* motion: dense optical flow from the reference frame to every frame by a
  classical coarse-to-fine Horn-Schunck method (Horn & Schunck 1981) with
  image warping; each point moves by the flow at its template position.

The targets therefore follow the real image motion of the clip, but their
positions carry no body-model semantics. Anything learned from them is a
demonstration that the vertex pathway trains, nothing more.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage

NUM_VERTICES = 10475
PROXY_NAME = "proxy-template-hornschunck-v1"


def template_points(n: int = NUM_VERTICES, seed: int = 0) -> np.ndarray:
    """(n, 2) points: 30% in a head ellipse, 70% in a torso trapezoid (normalised x, y)."""
    rng = np.random.default_rng(seed)
    n_head = int(round(0.3 * n))
    pts: list[np.ndarray] = []
    while sum(len(p) for p in pts) < n_head:  # head: ellipse centre (0, -0.35), radii 0.28 x 0.38
        c = rng.uniform(-1, 1, (4 * n_head, 2))
        keep = (c[:, 0] ** 2 + c[:, 1] ** 2) <= 1
        pts.append(c[keep] * [0.28, 0.38] + [0.0, -0.35])
    head = np.concatenate(pts)[:n_head]
    n_body = n - n_head
    pts = []
    while sum(len(p) for p in pts) < n_body:  # torso: y in [0.05, 0.98], half-width growing 0.35 -> 0.9
        y = rng.uniform(0.05, 0.98, 4 * n_body)
        x = rng.uniform(-1, 1, 4 * n_body)
        hw = 0.35 + (y - 0.05) / 0.93 * 0.55
        keep = np.abs(x) <= hw
        pts.append(np.stack([x[keep], y[keep]], 1))
    body = np.concatenate(pts)[:n_body]
    return np.concatenate([head, body]).astype(np.float32)


def _gray(frame: np.ndarray) -> np.ndarray:
    f = frame.astype(np.float64) / 255.0
    return 0.299 * f[..., 0] + 0.587 * f[..., 1] + 0.114 * f[..., 2]


def _hs_level(i0: np.ndarray, i1: np.ndarray, u: np.ndarray, v: np.ndarray, alpha: float, iters: int,
              warps: int) -> tuple[np.ndarray, np.ndarray]:
    h, w = i0.shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    avg_k = np.array([[1, 2, 1], [2, 0, 2], [1, 2, 1]], np.float64) / 12.0
    for _ in range(warps):
        i1w = ndimage.map_coordinates(i1, [yy + v, xx + u], order=1, mode="nearest")
        ix = (ndimage.sobel(i0, axis=1) + ndimage.sobel(i1w, axis=1)) / 16.0
        iy = (ndimage.sobel(i0, axis=0) + ndimage.sobel(i1w, axis=0)) / 16.0
        it = i1w - i0
        du = np.zeros_like(u)
        dv = np.zeros_like(v)
        denom = alpha ** 2 + ix ** 2 + iy ** 2
        for _ in range(iters):
            ua = ndimage.convolve(u + du, avg_k, mode="nearest") - u
            va = ndimage.convolve(v + dv, avg_k, mode="nearest") - v
            t = (ix * ua + iy * va + it) / denom
            du, dv = ua - ix * t, va - iy * t
        u, v = u + du, v + dv
    return u, v


def horn_schunck(frame0: np.ndarray, frame1: np.ndarray, alpha: float = 0.1, levels: int = 3,
                 iters: int = 100, warps: int = 3) -> np.ndarray:
    """Dense flow (H, W, 2) in pixels (dx, dy) such that frame1(p + flow(p)) ~ frame0(p)."""
    g0, g1 = ndimage.gaussian_filter(_gray(frame0), 1.0), ndimage.gaussian_filter(_gray(frame1), 1.0)
    pyr = [(g0, g1)]
    for _ in range(levels - 1):
        a, b = pyr[-1]
        pyr.append((ndimage.zoom(a, 0.5, order=1), ndimage.zoom(b, 0.5, order=1)))
    u = np.zeros_like(pyr[-1][0])
    v = np.zeros_like(u)
    for li, (a, b) in enumerate(reversed(pyr)):
        if li > 0:
            zy, zx = a.shape[0] / u.shape[0], a.shape[1] / u.shape[1]
            u = ndimage.zoom(u, (zy, zx), order=1) * zx
            v = ndimage.zoom(v, (zy, zx), order=1) * zy
        u, v = _hs_level(a, b, u, v, alpha, iters, warps)
    return np.stack([u, v], -1)


def proxy_vertices(frames: np.ndarray, reference: int = 0, n: int = NUM_VERTICES, seed: int = 0) -> np.ndarray:
    """(T, n, 2) proxy vertex targets in normalised coordinates for uint8 frames (T, H, W, 3)."""
    t, h, w, _ = frames.shape
    tpl = template_points(n, seed)
    px = (tpl[:, 0] + 1) * (w - 1) / 2
    py = (tpl[:, 1] + 1) * (h - 1) / 2
    out = np.empty((t, n, 2), np.float32)
    for i in range(t):
        if i == reference:
            out[i] = tpl
            continue
        fl = horn_schunck(frames[reference], frames[i])
        dx = ndimage.map_coordinates(fl[..., 0], [py, px], order=1, mode="nearest")
        dy = ndimage.map_coordinates(fl[..., 1], [py, px], order=1, mode="nearest")
        out[i, :, 0] = (px + dx) / ((w - 1) / 2) - 1
        out[i, :, 1] = (py + dy) / ((h - 1) / 2) - 1
    return out
