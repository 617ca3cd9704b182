"""Body vertices as data: the coordinate convention and reference-vertex files.

Sparse2Dense decodes 10475 SMPL-X vertices per frame as (x, y) image
coordinates (docs/s2d.md); a sequence may carry *reference* vertices (what a
mesh-recovery model such as OSX gives for the original frames) so that a
codec's vertices can be measured (metrics/vertices.py, docs/vertices.md).

Convention (shared by decoders, reference files, overlays and metrics):
normalised coordinates ``(x, y)`` in [-1, 1], ``align_corners`` style: -1 is
the centre of the first pixel, +1 the centre of the last, so for a W x H
frame ``x_px = (x + 1) * (W - 1) / 2`` with integer ``x_px`` at pixel
centres (the OpenCV convention).

Reference file: one ``.npy`` array ``(T, 10475, 2)`` float32/float64 in that
convention, one row per frame of the sequence (T >= the sequence's frames);
a frame without a reference (no person found) is a row of NaN and is left
out of the statistics. Its sha256 is that of the file's bytes.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from gfvc.errors import ChecksumError, InputError
from gfvc.fileio import read_npy
from gfvc.video import sha256_file

NUM_VERTICES = 10475  # SMPL-X vertex count
# Built-in reference files (name after ``builtin:``) -> file inside the package.
BUILTIN_VERTICES: dict[str, str] = {
    "carphone-proxy-vertices": "test_conditions/data/carphone_128x128_32.proxy-vertices.npy",
}


def to_pixels(vertices: np.ndarray, width: int, height: int) -> np.ndarray:
    """Normalised (..., 2) -> pixel (x, y) float coordinates (pixel centres at integers)."""
    v = np.asarray(vertices, np.float64)
    return np.stack([(v[..., 0] + 1) * (width - 1) / 2, (v[..., 1] + 1) * (height - 1) / 2], -1)


def from_pixels(pixels: np.ndarray, width: int, height: int) -> np.ndarray:
    """Pixel (x, y) (pixel centres at integers) -> normalised (..., 2) float32."""
    p = np.asarray(pixels, np.float64)
    return np.stack([p[..., 0] * 2 / (width - 1) - 1, p[..., 1] * 2 / (height - 1) - 1], -1).astype(np.float32)


def builtin_path(name: str) -> Path:
    """The packaged file of a built-in reference (``builtin:NAME``)."""
    if name not in BUILTIN_VERTICES:
        raise InputError(f"unknown built-in reference vertices {name!r} (known: {', '.join(BUILTIN_VERTICES)})")
    return Path(__file__).resolve().parent.parent / BUILTIN_VERTICES[name]


def check_array(arr: np.ndarray, what: str, frames: int | None = None, vertices: int | None = NUM_VERTICES) -> None:
    """Raise InputError unless ``arr`` is float (T, V, 2) with finite rows or all-NaN rows."""
    if not isinstance(arr, np.ndarray) or arr.dtype.kind != "f" or arr.ndim != 3 or arr.shape[-1] != 2:
        raise InputError(f"{what}: expected float vertices of shape (T, {vertices or 'V'}, 2), "
                         f"got {getattr(arr, 'dtype', type(arr).__name__)} {getattr(arr, 'shape', '')}")
    if vertices is not None and arr.shape[1] != vertices:
        raise InputError(f"{what}: {arr.shape[1]} vertices per frame, expected {vertices} (SMPL-X)")
    if frames is not None and arr.shape[0] < frames:
        raise InputError(f"{what}: vertices for {arr.shape[0]} frames, the sequence has {frames}")
    fin = np.isfinite(arr).all(axis=(1, 2))
    nan = np.isnan(arr).all(axis=(1, 2))
    bad = np.flatnonzero(~(fin | nan))
    if bad.size:
        raise InputError(f"{what}: frame {int(bad[0])} mixes finite and non-finite values; a frame without a "
                         "reference must be all NaN")


# Plausibility of reference vertices (normalised coordinates, [-1, 1] = the frame): a file where fewer
# than half the frames have a reference, or where under a quarter of the vertices fall inside the frame
# (a body partly out of shot keeps far more), is a conversion error (pixels, another size, NaN output).
MIN_REFERENCED_FRAMES = 0.5
MIN_IN_FRAME = 0.25


def check_plausible(arr: np.ndarray, what: str) -> None:
    """InputError (one line naming ``what``) unless the vertices could be a body in these frames."""
    fin = np.isfinite(arr).all(axis=(1, 2))
    if arr.shape[0] == 0 or fin.mean() < MIN_REFERENCED_FRAMES:
        raise InputError(f"{what}: only {int(fin.sum())} of {arr.shape[0]} frames have finite vertices (at least "
                         f"{MIN_REFERENCED_FRAMES:.0%} must): an OSX run that failed, or the wrong file")
    pts = arr[fin].reshape(-1, 2)
    inside = float((np.abs(pts) <= 1.0).all(axis=1).mean())
    if inside < MIN_IN_FRAME:
        peak = float(np.abs(pts).max())
        hint = (f" (values up to {peak:.0f}: pixel coordinates? convert them with `python -m tools.osx_vertices`)"
                if peak > 4 else "")
        raise InputError(f"{what}: only {inside:.1%} of the vertices lie inside the frame (at least "
                         f"{MIN_IN_FRAME:.0%} must; coordinates are normalised to [-1, 1]){hint}")


def read_reference(path: Path, sha256: str | None = None, frames: int | None = None, what: str = "") -> np.ndarray:
    """Load a reference-vertex file, verifying its sha256 (file bytes) and layout."""
    what = what or str(path)
    if not Path(path).is_file():
        raise InputError(f"{what}: reference-vertex file {path} not found (set --data-dir or GFVC_DATA_DIR, "
                         "or fix 'vertices.file' in the manifest)")
    if sha256 is not None:
        got = sha256_file(path)
        if got != sha256:
            raise ChecksumError(f"{what}: sha256 mismatch for reference vertices {path}: manifest says {sha256}, "
                                f"file has {got}; the file is not the one the manifest describes")
    arr = read_npy(path, f"{what}: reference-vertex file")
    check_array(arr, what, frames)
    return arr
