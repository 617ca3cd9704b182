"""Convert OSX mesh-recovery outputs into a reference-vertex file (docs/vertices.md).

OSX (Lin et al., "One-Stage 3D Whole-Body Mesh Recovery with Component Aware
Transformer", CVPR 2023; github.com/IDEA-Research/OSX) is the model the
Sparse2Dense paper takes as ground truth for its vertices. Its demo
(``demo/demo.py``) writes, per detected person, ``person_{k}.obj``: the
10475 SMPL-X vertices ``out['smplx_mesh_cam']`` in camera coordinates (the
camera translation already added), one ``v x y z`` line each, then faces.
The camera is not saved; it follows from the person's processed box
(``process_bbox``: aspect 192:256, enlarged 1.25x) ``(x, y, w, h)`` in the
original image, with OSX's config constants (focal 5000, body input 256x192):

    fx = 5000 / 192 * w      cx = 96 / 192 * w + x        (cfg.princpt = input_body_shape / 2)
    fy = 5000 / 256 * h      cy = 128 / 256 * h + y
    u  = X / Z * fx + cx     v  = Y / Z * fy + cy          (pinhole, as the demo renders the mesh)

so a user saves, per frame, the box or the camera next to the mesh. This
tool reads one video's frames in natural name order (gfvc.frame_folder) from FOLDER, each one of:

* ``FRAME.obj`` (or ``FRAME/person_K.obj``) with ``FRAME.json`` (or
  ``FRAME/person_K.json`` / ``FRAME/camera.json``) holding ``{"bbox": [x, y, w, h]}``
  or ``{"focal": [fx, fy], "princpt": [cx, cy]}``;
* ``FRAME.npz`` with ``smplx_mesh_cam`` (10475, 3) and ``bbox`` or ``focal`` +
  ``princpt`` (a saved copy of the model's output), or ``vertices_px`` (10475, 2);
* ``FRAME.npy``: (10475, 2) image-space vertices in pixels, or (10475, 3)
  camera-space with a camera JSON as above.

It projects to pixels, converts to the suite's convention (normalised,
align_corners, gfvc/vertices.py) at the sequence size, and writes
``OUT.npy`` (T, 10475, 2) float32 plus ``OUT.json`` (options, per-frame
sources, frames without a person as NaN rows). Options that are choices,
not facts, are explicit and recorded: ``--pixel-origin`` (OSX renders with
a pinhole/OpenGL camera whose pixel centres sit at +0.5, i.e. ``corner``;
the suite's integer coordinates are pixel centres), ``--image-size`` of the
frames OSX saw and ``--size`` of the sequence (scaled if they differ).

    python -m tools.osx_vertices FOLDER --image-size 384x384 -o NAME.npy [--size 384x384] [--person 0]

Then ``gfvc sequences prepare VIDEOS --vertices VDIR`` takes VDIR/NAME.npy.
"""
from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from gfvc.errors import ConfigError, GfvcError, InputError
from gfvc.fileio import read_npy, read_npz
from gfvc.frame_folder import list_frame_files
from gfvc.vertices import NUM_VERTICES, from_pixels

# OSX main/config.py (facts): virtual focal length and the body-crop input size (H, W).
OSX_FOCAL = (5000.0, 5000.0)
OSX_BODY_SHAPE = (256, 192)


def read_obj_vertices(path: Path) -> np.ndarray:
    """The ``v x y z`` lines of an OBJ file as (N, 3) float64."""
    rows = []
    with open(path) as f:
        for line in f:
            if line.startswith("v "):
                parts = line.split()
                if len(parts) < 4:
                    raise InputError(f"{path}: bad vertex line {line.strip()!r}")
                rows.append([float(parts[1]), float(parts[2]), float(parts[3])])
    if not rows:
        raise InputError(f"{path}: no 'v x y z' lines (not an OSX mesh OBJ)")
    return np.asarray(rows, np.float64)


def camera_from(meta: dict[str, Any], where: str, focal: Sequence[float] = OSX_FOCAL,
                body_shape: Sequence[int] = OSX_BODY_SHAPE) -> tuple[np.ndarray, np.ndarray]:
    """(focal (2,), princpt (2,)) from ``{"focal", "princpt"}`` or OSX's processed ``bbox`` [x, y, w, h]."""
    if "focal" in meta and "princpt" in meta:
        f, c = np.asarray(meta["focal"], np.float64), np.asarray(meta["princpt"], np.float64)
    elif "bbox" in meta:
        x, y, w, h = (float(v) for v in np.asarray(meta["bbox"], np.float64).ravel()[:4])
        bh, bw = body_shape
        f = np.array([focal[0] / bw * w, focal[1] / bh * h])
        c = np.array([bw / 2 / bw * w + x, bh / 2 / bh * h + y])
    else:
        raise InputError(f"{where}: no camera: give 'bbox' [x, y, w, h] (OSX's processed box) or 'focal' and "
                         "'princpt'")
    if f.shape != (2,) or c.shape != (2,) or not np.isfinite(np.concatenate([f, c])).all():
        raise InputError(f"{where}: camera focal {f.tolist()} / princpt {c.tolist()} must be two finite numbers each")
    return f, c


def project(mesh_cam: np.ndarray, focal: np.ndarray, princpt: np.ndarray) -> np.ndarray:
    """Pinhole projection of camera-space vertices (N, 3) -> pixels (N, 2)."""
    z = mesh_cam[:, 2]
    if (z <= 0).any():
        raise InputError("mesh has vertices at or behind the camera (Z <= 0): not camera-space OSX output")
    return np.stack([mesh_cam[:, 0] / z * focal[0] + princpt[0], mesh_cam[:, 1] / z * focal[1] + princpt[1]], -1)


def _json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise InputError(f"{path}: not a readable JSON camera file: {e}") from None
    if not isinstance(data, dict):
        raise InputError(f"{path}: expected a JSON object with 'bbox' or 'focal'/'princpt'")
    return data


def frame_pixels(item: Path, person: int, **cam: Any) -> tuple[np.ndarray | None, str]:
    """Pixel vertices (N, 2) of one frame item, or None when the frame has no such person; plus its source."""
    if item.is_dir():
        obj = item / f"person_{person}.obj"
        if not obj.is_file():
            return None, f"{item.name}: no person_{person}.obj"
        cams = [item / f"person_{person}.json", item / "camera.json"]
        cj = next((c for c in cams if c.is_file()), None)
        if cj is None:
            raise InputError(f"{item}: person_{person}.obj has no camera ({cams[0].name} or camera.json)")
        f, c = camera_from(_json(cj), str(cj), **cam)
        return project(read_obj_vertices(obj), f, c), str(obj.name)
    side = item.with_suffix(".json")
    if item.suffix == ".obj":
        if not side.is_file():
            raise InputError(f"{item}: no camera file {side.name} next to it")
        f, c = camera_from(_json(side), str(side), **cam)
        return project(read_obj_vertices(item), f, c), item.name
    if item.suffix == ".npz":
        d = read_npz(item, "OSX output")
        if "vertices_px" in d:
            return np.asarray(d["vertices_px"], np.float64), item.name
        if "smplx_mesh_cam" not in d:
            raise InputError(f"{item}: expected 'smplx_mesh_cam' (+ 'bbox' or 'focal'/'princpt') or 'vertices_px'")
        mesh = np.asarray(d["smplx_mesh_cam"], np.float64).reshape(-1, 3)
        f, c = camera_from(d, str(item), **cam)
        return project(mesh, f, c), item.name
    if item.suffix == ".npy":
        arr = np.asarray(read_npy(item, "OSX output"), np.float64)
        arr = arr.reshape(arr.shape[-2], arr.shape[-1]) if arr.ndim == 3 and arr.shape[0] == 1 else arr
        if arr.ndim == 2 and arr.shape[1] == 2:
            return arr, item.name
        if arr.ndim == 2 and arr.shape[1] == 3:
            if not side.is_file():
                raise InputError(f"{item}: camera-space vertices need a camera file {side.name}")
            f, c = camera_from(_json(side), str(side), **cam)
            return project(arr, f, c), item.name
        raise InputError(f"{item}: expected (10475, 2) pixels or (10475, 3) camera-space vertices, got {arr.shape}")
    raise InputError(f"{item}: not an OSX output (.obj, .npz, .npy or a per-frame folder)")


def frame_items(folder: Path) -> list[Path]:
    """Per-frame items of a folder in natural name order (camera JSON files are companions, not frames)."""
    return list_frame_files(folder, (".obj", ".npz", ".npy"), dirs=True, what="folder of per-frame OSX outputs")


def convert(folder: Path, image_size: tuple[int, int], *, size: tuple[int, int] | None = None, person: int = 0,
            pixel_origin: str = "corner", frames: int | None = None, allow_missing: bool = False,
            focal: Sequence[float] = OSX_FOCAL, body_shape: Sequence[int] = OSX_BODY_SHAPE
            ) -> tuple[np.ndarray, dict[str, Any]]:
    """(T, 10475, 2) normalised vertices of one video and a description of the conversion."""
    if pixel_origin not in ("corner", "center"):
        raise ConfigError(f"--pixel-origin must be 'corner' or 'center', got {pixel_origin!r}")
    iw, ih = image_size
    sw, sh = size or image_size
    items = frame_items(folder)[:frames] if frames else frame_items(folder)
    out = np.full((len(items), NUM_VERTICES, 2), np.nan, np.float32)
    sources, missing = [], []
    for i, item in enumerate(items):
        px, src = frame_pixels(item, person, focal=focal, body_shape=body_shape)
        sources.append(src)
        if px is None:
            if not allow_missing:
                raise InputError(f"frame {i} ({src}); pass --allow-missing to keep it as a NaN row")
            missing.append(i)
            continue
        if px.shape != (NUM_VERTICES, 2):
            raise InputError(f"{item}: {px.shape[0]} vertices, SMPL-X has {NUM_VERTICES}")
        if pixel_origin == "corner":
            px = px - 0.5  # continuous coordinates with pixel centres at +0.5 -> centres at integers
        # scale pixel centres from OSX's frame size to the sequence size
        px = np.stack([(px[:, 0] + 0.5) * sw / iw - 0.5, (px[:, 1] + 0.5) * sh / ih - 0.5], -1)
        out[i] = from_pixels(px, sw, sh)
    desc = {"tool": "tools/osx_vertices.py", "folder": str(folder), "frames": len(items), "person": person,
            "image_size": [iw, ih], "size": [sw, sh], "pixel_origin": pixel_origin,
            "osx_focal": list(focal), "osx_body_shape": list(body_shape), "frames_without_person": missing,
            "convention": "normalised align_corners (x, y), gfvc/vertices.py", "sources": sources}
    return out, desc


def _size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ConfigError(f"size {text!r} must look like 384x384") from None
    if w < 2 or h < 2:
        raise ConfigError(f"size {text!r} must be at least 2x2")
    return w, h


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tools.osx_vertices", description=__doc__.splitlines()[0])
    ap.add_argument("folder", type=Path, help="one video's per-frame OSX outputs, frames in natural name order")
    ap.add_argument("-o", "--out", type=Path, required=True, help="output .npy (a .json description is written too)")
    ap.add_argument("--image-size", required=True, help="WxH of the frames OSX was run on")
    ap.add_argument("--size", help="WxH of the test sequence (default: --image-size)")
    ap.add_argument("--person", type=int, default=0, help="which person_K.obj per frame (default 0)")
    ap.add_argument("--pixel-origin", choices=("corner", "center"), default="corner",
                    help="OSX's image coordinates: corner (pinhole/OpenGL, pixel centres at +0.5; default) or center")
    ap.add_argument("--frames", type=int, help="first N frames only")
    ap.add_argument("--allow-missing", action="store_true", help="frames without the person become NaN rows")
    a = ap.parse_args(argv)
    try:
        if a.out.suffix != ".npy":
            raise ConfigError(f"-o {a.out}: the output must be a .npy file")
        arr, desc = convert(a.folder, _size(a.image_size), size=_size(a.size) if a.size else None, person=a.person,
                            pixel_origin=a.pixel_origin, frames=a.frames, allow_missing=a.allow_missing)
        a.out.parent.mkdir(parents=True, exist_ok=True)
        np.save(a.out, arr)
        a.out.with_suffix(".json").write_text(json.dumps(desc, indent=1) + "\n")
    except (GfvcError, OSError) as e:
        print(f"osx_vertices: {e}", file=sys.stderr)
        return getattr(e, "exit_code", 2)
    print(f"{a.out}: {arr.shape[0]} frames x {arr.shape[1]} vertices ({len(desc['frames_without_person'])} without "
          f"a person)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
