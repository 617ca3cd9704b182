"""Training data for Sparse2Dense: TED-Talk style layouts (MRAA TED384).

Layout: ``DIR/train/<video>.mp4`` (any container PyAV reads) or
``DIR/train/<video>/`` folders of PNG frames (``DIR`` itself is used when it
has no ``train`` folder). A sample is a (source, driving) pair of frames of
the same video, as in FOMM/FV2V training.

Optional vertex targets (``--vertices VDIR``): ``VDIR/<video>.npy`` of shape
(T, 10475, 2), or ``VDIR/<video>/<frame index:05d>.npy`` of shape (10475, 2);
coordinates are normalised image coordinates (x, y) in [-1, 1]. Frames
without a target contribute nothing to the vertex loss.

Optional source variants (``--source-variants SDIR``): ``SDIR/<video>/<tag>/<frame
index:05d>.png`` (e.g. tag ``qp42``), the training frames as the decoder sees a
key frame after intra coding (``python -m s2d_model.demo_data --variants``).
With ``source_degradation`` p > 0 the source frame of a pair is replaced, with
probability p, by one of its variants chosen uniformly; the driving frame (the
target) stays pristine.

``affine_augment`` s > 0 applies one random similarity transform (shift up to
10 %, scale up to 10 %, rotation up to 5 degrees, each times s; border
replicated) to both frames of a pair and to the vertex target, so a short clip
yields more head positions than it holds.
"""
from __future__ import annotations

import hashlib
import random
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from gfvc.errors import InputError
from gfvc.fileio import read_npy
from gfvc.frame_folder import check_frame_folder, is_frame_folder
from gfvc.video import read_container, read_png_folder

VIDEO_SUFFIXES = {".mp4", ".mkv", ".avi", ".mov", ".webm"}


@dataclass
class VideoEntry:
    name: str
    path: Path
    kind: str  # "container" | "png"


def list_videos(root: Path) -> list[VideoEntry]:
    root = Path(root)
    base = root / "train" if (root / "train").is_dir() else root
    if not base.is_dir():
        raise InputError(f"{root}: no such training data folder "
                         f"(expected {root}/train/<video>.mp4 or {root}/train/<video>/*.png)")
    out = []
    for p in sorted(base.iterdir()):
        if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES:
            out.append(VideoEntry(p.stem, p, "container"))
        elif is_frame_folder(p):
            out.append(VideoEntry(p.name, p, "png"))
    if not out:
        raise InputError(f"{base}: no videos (.mp4/.mkv/... files or folders of .png frames)")
    return out


def stopped_by_data(e: InputError, step: int, checkpoint: Path) -> InputError:
    """A data file that fails mid-training (a frame is decoded when first sampled): one line naming the file,
    the step, and the checkpoint that is left as it was (the loop never saves on this path)."""
    kept = (f"the last checkpoint {checkpoint} is kept: fix or remove the file, then continue with "
            f"--resume {checkpoint}" if Path(checkpoint).is_file() else "no checkpoint was written yet")
    return InputError(f"{e} (training stopped at step {step}; {kept})")


class PairDataset:
    """Random (source, driving) frame pairs from the same video, uint8 -> float tensors in [0, 1]."""

    def __init__(self, root: Path, image_size: int, vertices: Path | None = None, num_vertices: int = 10475,
                 cache_videos: int = 8, source_variants: Path | None = None, source_degradation: float = 0.0,
                 affine_augment: float = 0.0) -> None:
        self.root = Path(root)
        self.variant_root = Path(source_variants) if source_variants else None
        if self.variant_root is not None and not self.variant_root.is_dir():
            raise InputError(f"{self.variant_root}: source-variant folder does not exist")
        if not 0.0 <= source_degradation <= 1.0:
            raise InputError(f"source_degradation must be a probability in [0, 1], got {source_degradation}")
        if source_degradation > 0 and self.variant_root is None:
            raise InputError(f"the config's train.source_degradation is {source_degradation}: it needs "
                             "--source-variants DIR (intra-coded training frames; `python -m s2d_model.demo_data DIR "
                             "--variants` writes them for the demo data), or set it to 0")
        if affine_augment < 0:
            raise InputError(f"affine_augment must be >= 0, got {affine_augment}")
        self.source_degradation = float(source_degradation)
        self.affine_augment = float(affine_augment)
        self._variants: dict[str, list[np.ndarray]] = {}
        self.videos = list_videos(self.root)
        for v in self.videos:  # names, PNG signatures and sizes of every frame, before the first step
            if v.kind == "png":
                check_frame_folder(v.path)
        self.image_size = image_size
        self.vertex_root = Path(vertices) if vertices else None
        if self.vertex_root is not None and not self.vertex_root.is_dir():
            raise InputError(f"{self.vertex_root}: vertex target folder does not exist")
        self.num_vertices = num_vertices
        self._cache: OrderedDict[str, tuple[np.ndarray, np.ndarray | None]] = OrderedDict()
        self._cache_size = cache_videos

    def _load(self, v: VideoEntry) -> tuple[np.ndarray, np.ndarray | None]:
        if v.name in self._cache:
            self._cache.move_to_end(v.name)
            return self._cache[v.name]

        frames = read_png_folder(v.path) if v.kind == "png" else read_container(v.path)[0]
        if frames.shape[1:3] != (self.image_size, self.image_size):
            raise InputError(
                f"{v.path}: frames are {frames.shape[2]}x{frames.shape[1]} but the config trains at "
                f"{self.image_size}x{self.image_size}; resize/crop the data (tools/) "
                "or pick a config with that image_size")
        verts = self._load_vertices(v, frames.shape[0])
        self._cache[v.name] = (frames, verts)
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return frames, verts

    def _load_vertices(self, v: VideoEntry, n: int) -> np.ndarray | None:
        if self.vertex_root is None:
            return None
        one = self.vertex_root / f"{v.name}.npy"
        if one.is_file():
            arr = read_npy(one, "vertex targets").astype(np.float32)
            if arr.shape != (n, self.num_vertices, 2):
                raise InputError(f"{one}: vertex targets have shape {arr.shape}, "
                                 f"expected ({n}, {self.num_vertices}, 2)")
            return arr
        folder = self.vertex_root / v.name
        if folder.is_dir():
            arr = np.full((n, self.num_vertices, 2), np.nan, np.float32)
            for i in range(n):
                f = folder / f"{i:05d}.npy"
                if f.is_file():
                    a = read_npy(f, "vertex target")
                    if a.shape != (self.num_vertices, 2):
                        raise InputError(f"{f}: shape {a.shape}, expected ({self.num_vertices}, 2)")
                    arr[i] = a
            return arr
        return None

    def _source_variants(self, v: VideoEntry, n: int) -> list[np.ndarray]:
        """All coded variants of a video's frames: list of (T, H, W, 3) arrays, one per tag folder."""
        if v.name not in self._variants:
            assert self.variant_root is not None
            base = self.variant_root / v.name
            tags = sorted(p for p in base.iterdir() if p.is_dir()) if base.is_dir() else []
            if not tags:
                raise InputError(f"{base}: no source variants (expected {base}/<tag>/00000.png ...)")
            arrs = []
            for t in tags:
                a = read_png_folder(t)
                if a.shape[0] != n or a.shape[1:3] != (self.image_size, self.image_size):
                    raise InputError(f"{t}: {a.shape[0]} frames of {a.shape[2]}x{a.shape[1]}, expected {n} of "
                                     f"{self.image_size}x{self.image_size} like {v.path}")
                arrs.append(a)
            self._variants[v.name] = arrs
        return self._variants[v.name]

    def sample(self, rng: random.Random, hflip: bool = False) -> dict[str, np.ndarray]:
        v = self.videos[rng.randrange(len(self.videos))]
        frames, verts = self._load(v)
        n = frames.shape[0]
        if n < 2:
            raise InputError(f"{v.path}: a training video needs at least 2 frames")
        i, j = rng.sample(range(n), 2)
        src, drv = frames[i], frames[j]
        if self.source_degradation > 0 and rng.random() < self.source_degradation:
            variants = self._source_variants(v, n)
            src = variants[rng.randrange(len(variants))][i]
        vt = np.zeros((self.num_vertices, 2), np.float32)
        valid = 0.0
        if verts is not None and np.isfinite(verts[j]).all():
            vt, valid = verts[j].copy(), 1.0
        if hflip and rng.random() < 0.5:
            src, drv = src[:, ::-1], drv[:, ::-1]
            vt = vt * np.array([-1.0, 1.0], np.float32)
        return {"source": np.ascontiguousarray(src), "driving": np.ascontiguousarray(drv), "vertices": vt,
                "valid": np.float32(valid)}

    def batch(self, rng: random.Random, size: int, hflip: bool = False) -> dict[str, Any]:
        import torch

        items = [self.sample(rng, hflip) for _ in range(size)]

        def img(key: str) -> torch.Tensor:
            return torch.from_numpy(np.stack([it[key] for it in items])).permute(0, 3, 1, 2).float() / 255.0

        out = {"source": img("source"), "driving": img("driving"),
               "vertices": torch.from_numpy(np.stack([it["vertices"] for it in items])),
               "valid": torch.from_numpy(np.array([it["valid"] for it in items], np.float32))}
        if self.affine_augment > 0:
            out = _affine_augment(out, rng, self.affine_augment)
        return out

    def describe(self) -> dict[str, Any]:
        d = self._describe()
        if self.variant_root is not None:
            d["source_variants"] = str(self.variant_root.resolve())
        d["source_degradation"] = self.source_degradation
        d["affine_augment"] = self.affine_augment
        return d

    def _describe(self) -> dict[str, Any]:
        """What the model was trained on (stored in checkpoints; no frame data)."""
        h = hashlib.sha256()
        for v in self.videos:
            h.update(v.name.encode())
        return {"root": str(self.root.resolve()), "videos": len(self.videos),
                "names_sha256": h.hexdigest(),
                "vertices": str(self.vertex_root.resolve()) if self.vertex_root else None,
                "image_size": self.image_size}


def _affine_augment(b: dict[str, Any], rng: random.Random, strength: float) -> dict[str, Any]:
    """One random similarity per pair, applied to source, driving and the driving frame's vertices."""
    import math

    import torch
    import torch.nn.functional as F

    n = b["source"].shape[0]
    theta = torch.zeros(n, 2, 3)
    for k in range(n):
        s = 1.0 + strength * 0.1 * (2 * rng.random() - 1)
        a = math.radians(strength * 5.0 * (2 * rng.random() - 1))
        tx, ty = (strength * 0.2 * (2 * rng.random() - 1) for _ in range(2))  # 10 % of the width = 0.2 in [-1, 1]
        c, si = math.cos(a) / s, math.sin(a) / s
        theta[k] = torch.tensor([[c, -si, tx], [si, c, ty]])
    out = dict(b)
    for key in ("source", "driving"):
        grid = F.affine_grid(theta, list(b[key].shape), align_corners=False)
        out[key] = F.grid_sample(b[key], grid, mode="bilinear", padding_mode="border", align_corners=False)
    # grid maps output p to input theta @ [p, 1]; a vertex at input x lands at p = L^-1 (x - t).
    lin, t = theta[:, :, :2], theta[:, :, 2]
    v = b["vertices"]
    out["vertices"] = torch.linalg.solve(lin, (v - t[:, None, :]).transpose(1, 2)).transpose(1, 2).contiguous()
    return out
