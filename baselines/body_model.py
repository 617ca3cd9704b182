"""Body-model side of IHVC: the 31-value semantic vector, where it comes from, and the mesh it drives.

IHVC (Chen, Yin, Zhu, Zhu, Zhang, Chen, Liao, Wang, Ye, "Compressing Human
Body Video with Interactive Semantics: A Generative Approach", ICIP 2025,
arXiv 2505.16152) sends, per frame, a 31-dimensional vector of SMPL-X
semantics estimated by OSX (Lin et al., "One-Stage 3D Whole-Body Mesh
Recovery with Component Aware Transformer", CVPR 2023), and its decoder
turns the vector into a template-based 3D mesh whose motion drives the
synthesis. The paper's text available here does not list the 31 components,
the mesh template or the projection; this module makes each a named,
documented choice (docs/baselines.md, IHVC section):

* **semantic layout** ``upper-body-31-v1`` (:data:`LAYOUTS`): camera (log
  scale, tx, ty), the global orientation relative to "upright, facing the
  camera", spine3 / neck / head / both shoulders / both elbows (axis-angle),
  jaw opening and the first three expression coefficients = 31 values.
* **estimators** (encoder side, pluggable):

  - ``params-file``: per-frame OSX / SMPL-X parameters supplied by the user
    in the documented ``.npz`` format (:func:`read_params`); the file's
    declared ``source`` is recorded, and only ``source="osx"`` is ever
    called OSX.
  - ``learned``: :class:`SemanticEstimator`, a small CNN trained by the suite
    from frames to the vector. It is an APPROXIMATION of whatever produced
    its training targets (for the demo: PROXY targets, see below), never OSX.

* **mesh** (decoder side): ``smplx`` = linear blend skinning of a
  user-supplied SMPL-X model file (licensed, never shipped; its sha256 is
  pinned in the checkpoint), or ``proxy`` = a suite-made articulated PROXY
  template with the same 55-joint skeleton and 10475 points sampled on
  capsules/ellipsoids (:func:`proxy_mesh`), NOT SMPL-X.
* **PROXY targets** for training the learned estimator without OSX
  (:func:`proxy_semantic_targets`): the proxy template placed by hand on a
  reference frame and fitted per frame to Horn-Schunck optical-flow tracks
  of its vertices. They follow real image motion; they carry no OSX meaning.

Coordinates: SMPL-X canonical space is metres, +y up, +z forward, +x the
person's left. Camera space is OpenCV's (x right, y down, z away from the
camera). Projected vertices are normalised image coordinates (x, y) in
[-1, 1] with -1/+1 at the centres of the first/last pixel (docs/s2d.md),
weak perspective: ``x = s * X + tx, y = s * Y + ty``.
"""
from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from baselines.blocks import DownBlock2d, SameBlock2d
from gfvc.errors import InputError, ModelMismatch, NotAvailable
from gfvc.video import read_container, read_png_folder, sha256_file
from model_parts.data import list_videos
from model_parts.proxy_vertices import horn_schunck

NUM_VERTICES = 10475          # SMPL-X vertex count (also the s2d vertex extra)
NUM_JOINTS = 55               # SMPL-X joints: body 22, jaw, 2 eyes, 2 x 15 hand joints
PARAMS_FORMAT = "gfvc-body-params-v1"
OSX_SOURCE = "osx"            # the only declared source the suite labels as OSX

SMPLX_JOINT_NAMES: tuple[str, ...] = (
    "pelvis", "left_hip", "right_hip", "spine1", "left_knee", "right_knee", "spine2", "left_ankle",
    "right_ankle", "spine3", "left_foot", "right_foot", "neck", "left_collar", "right_collar", "head",
    "left_shoulder", "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist",
    "jaw", "left_eye", "right_eye",
    *(f"left_{f}{i}" for f in ("index", "middle", "pinky", "ring", "thumb") for i in (1, 2, 3)),
    *(f"right_{f}{i}" for f in ("index", "middle", "pinky", "ring", "thumb") for i in (1, 2, 3)),
)
# Kinematic tree of SMPL-X (parent of each joint; parents precede children).
SMPLX_PARENTS: tuple[int, ...] = (
    -1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19, 15, 15, 15,
    20, 25, 26, 20, 28, 29, 20, 31, 32, 20, 34, 35, 20, 37, 38,
    21, 40, 41, 21, 43, 44, 21, 46, 47, 21, 49, 50, 21, 52, 53,
)
JOINT = {n: i for i, n in enumerate(SMPLX_JOINT_NAMES)}
# Rotation taking SMPL-X canonical space (y up, z forward) to a person upright and facing an
# OpenCV camera: 180 degrees about x. The vector's global orientation is relative to it, so
# "upright, facing the camera" is 0 (no axis-angle wrap-around near pi for ordinary video).
UPRIGHT = np.diag([1.0, -1.0, -1.0])


# =========================================================================== rotations
def axis_angle_to_matrix(aa: torch.Tensor) -> torch.Tensor:
    """Rodrigues: (..., 3) axis-angle -> (..., 3, 3), stable (and differentiable) near 0."""
    theta2 = (aa * aa).sum(-1, keepdim=True)
    theta = torch.sqrt(theta2 + 1e-12)
    small = theta2 < 1e-8
    # sin(t)/t and (1-cos t)/t^2 with their Taylor series for tiny angles
    a = torch.where(small, 1 - theta2 / 6, torch.sin(theta) / theta)
    b = torch.where(small, 0.5 - theta2 / 24, (1 - torch.cos(theta)) / (theta2 + 1e-12))
    x, y, z = aa.unbind(-1)
    zero = torch.zeros_like(x)
    k = torch.stack([zero, -z, y, z, zero, -x, -y, x, zero], -1).reshape(*aa.shape[:-1], 3, 3)
    eye = torch.eye(3, dtype=aa.dtype, device=aa.device).expand(k.shape)
    return eye + a[..., None] * k + b[..., None] * (k @ k)


def matrix_to_axis_angle(m: torch.Tensor) -> torch.Tensor:
    """(..., 3, 3) rotation -> (..., 3) axis-angle with angle in [0, pi], via a unit quaternion."""
    m00, m11, m22 = m[..., 0, 0], m[..., 1, 1], m[..., 2, 2]
    # Four candidate quaternions (w, x, y, z); the one with the largest pivot is well conditioned.
    cands = torch.stack([
        torch.stack([1 + m00 + m11 + m22, m[..., 2, 1] - m[..., 1, 2], m[..., 0, 2] - m[..., 2, 0],
                     m[..., 1, 0] - m[..., 0, 1]], -1),
        torch.stack([m[..., 2, 1] - m[..., 1, 2], 1 + m00 - m11 - m22, m[..., 1, 0] + m[..., 0, 1],
                     m[..., 0, 2] + m[..., 2, 0]], -1),
        torch.stack([m[..., 0, 2] - m[..., 2, 0], m[..., 1, 0] + m[..., 0, 1], 1 - m00 + m11 - m22,
                     m[..., 2, 1] + m[..., 1, 2]], -1),
        torch.stack([m[..., 1, 0] - m[..., 0, 1], m[..., 0, 2] + m[..., 2, 0], m[..., 2, 1] + m[..., 1, 2],
                     1 - m00 - m11 + m22], -1),
    ], -2)
    pivots = torch.stack([1 + m00 + m11 + m22, 1 + m00 - m11 - m22, 1 - m00 + m11 - m22, 1 - m00 - m11 + m22], -1)
    best = pivots.argmax(-1)
    q = torch.gather(cands, -2, best[..., None, None].expand(*best.shape, 1, 4)).squeeze(-2)
    q = q / q.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    q = torch.where(q[..., :1] < 0, -q, q)          # w >= 0: angle in [0, pi]
    v = q[..., 1:]
    s = v.norm(dim=-1, keepdim=True)
    angle = 2 * torch.atan2(s, q[..., :1])
    scale = torch.where(s < 1e-7, 2.0 / q[..., :1].clamp_min(1e-12), angle / s.clamp_min(1e-12))
    return v * scale


# =========================================================================== semantic layout
@dataclass(frozen=True)
class SemanticLayout:
    """Which SMPL-X quantities make up the transmitted vector, in order.

    ``joints``: body joints (SMPL-X names) sent as 3 axis-angle values each;
    ``jaw``: jaw components sent (0 = x = opening); ``expression``: how many
    leading expression coefficients. Camera (3) and global orientation (3)
    always come first.
    """

    name: str
    joints: tuple[str, ...]
    jaw: tuple[int, ...]
    expression: int
    description: str = ""

    @property
    def dim(self) -> int:
        return 6 + 3 * len(self.joints) + len(self.jaw) + self.expression

    def names(self) -> list[str]:
        out = ["camera.log_scale", "camera.tx", "camera.ty", "global.x", "global.y", "global.z"]
        out += [f"{j}.{a}" for j in self.joints for a in "xyz"]
        out += [f"jaw.{'xyz'[c]}" for c in self.jaw]
        out += [f"expression.{i}" for i in range(self.expression)]
        return out

    def slices(self) -> dict[str, slice]:
        j0 = 6 + 3 * len(self.joints)
        return {"camera": slice(0, 3), "global": slice(3, 6), "joints": slice(6, j0),
                "jaw": slice(j0, j0 + len(self.jaw)), "expression": slice(j0 + len(self.jaw), self.dim)}

    def mirror_permutation_and_signs(self) -> tuple[np.ndarray, np.ndarray]:
        """Index permutation and signs that mirror a vector left<->right (horizontal flip).

        Mirroring x -> -x swaps left/right joints and negates the y and z
        axis-angle components (also of the global orientation, because the
        upright reference diag(1,-1,-1) commutes with the mirror); tx -> -tx;
        the jaw's x component and the expression coefficients are kept (an
        approximation for asymmetric expression components).
        """
        names = self.names()
        index = {n: i for i, n in enumerate(names)}
        perm = np.arange(self.dim)
        signs = np.ones(self.dim, np.float32)
        for i, n in enumerate(names):
            part, comp = n.rsplit(".", 1)
            if part in self.joints:
                other = part.replace("left_", "§").replace("right_", "left_").replace("§", "right_")
                if other not in self.joints:
                    raise ValueError(f"layout {self.name}: {part} has no mirror joint {other}")
                perm[i] = index[f"{other}.{comp}"]
                signs[i] = -1.0 if comp in "yz" else 1.0
            elif part == "global" or part == "jaw":
                signs[i] = -1.0 if comp in "yz" else 1.0
            elif n == "camera.tx":
                signs[i] = -1.0
        return perm, signs


LAYOUTS: dict[str, SemanticLayout] = {
    "upper-body-31-v1": SemanticLayout(
        name="upper-body-31-v1",
        joints=("spine3", "neck", "head", "left_shoulder", "right_shoulder", "left_elbow", "right_elbow"),
        jaw=(0,), expression=3,
        description="camera (log s, tx, ty) + global orientation (upright-relative) + spine3, neck, head, "
                    "shoulders, elbows (axis-angle) + jaw opening + 3 expression coefficients = 31 "
                    "(suite choice; the paper's own list is not available)"),
}
DEFAULT_LAYOUT = "upper-body-31-v1"


def get_layout(name: str) -> SemanticLayout:
    if name not in LAYOUTS:
        raise ModelMismatch(f"unknown IHVC semantic layout {name!r}; known: {', '.join(sorted(LAYOUTS))}")
    return LAYOUTS[name]


def mirror_vectors(vec: torch.Tensor | np.ndarray, layout: SemanticLayout) -> Any:
    """Vectors of the horizontally flipped frames (see :meth:`SemanticLayout.mirror_permutation_and_signs`)."""
    perm, signs = layout.mirror_permutation_and_signs()
    if isinstance(vec, torch.Tensor):
        return vec[..., torch.as_tensor(perm, device=vec.device)] * torch.as_tensor(signs, dtype=vec.dtype,
                                                                                   device=vec.device)
    return np.asarray(vec)[..., perm] * signs


# =========================================================================== parameter files
@dataclass
class BodyParams:
    """Per-frame SMPL-X parameters of one video, normalised to one convention.

    ``camera`` is weak perspective (s, tx, ty) in the video's normalised image
    coordinates; rotations are axis-angle in OpenCV camera orientation (as
    OSX writes them).
    """

    global_orient: np.ndarray        # (T, 3)
    body_pose: np.ndarray            # (T, 21, 3)
    jaw_pose: np.ndarray             # (T, 3)
    expression: np.ndarray           # (T, E)
    camera: np.ndarray               # (T, 3) weak perspective s, tx, ty (normalised coordinates)
    betas: np.ndarray | None = None  # (T, B), read and validated, not transmitted
    source: str = "unspecified"
    path: str = ""
    sha256: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def frames(self) -> int:
        return int(self.global_orient.shape[0])

    @property
    def is_osx(self) -> bool:
        return self.source == OSX_SOURCE


_ALIASES = {
    "global_orient": ("global_orient", "smplx_root_pose", "root_pose"),
    "body_pose": ("body_pose", "smplx_body_pose"),
    "jaw_pose": ("jaw_pose", "smplx_jaw_pose"),
    "expression": ("expression", "smplx_expr", "expr"),
    "betas": ("betas", "smplx_shape", "shape"),
}


def _key(data: Mapping[str, np.ndarray], name: str) -> str:
    """The key under which ``name`` is stored (its first alias present), else ``name``."""
    return next((k for k in _ALIASES.get(name, (name,)) if k in data), name)


def _get(data: Mapping[str, np.ndarray], name: str, path: Path, required: bool = True) -> np.ndarray | None:
    k = _key(data, name)
    if k in data:
        try:
            arr = np.asarray(data[k], dtype=np.float64)
        except (TypeError, ValueError):
            raise InputError(f"{path}: '{k}' is not numeric") from None
        if not np.isfinite(arr).all():
            raise InputError(f"{path}: '{k}' contains NaN or inf")
        return arr
    if required:
        raise InputError(f"{path}: no {' / '.join(repr(a) for a in _ALIASES.get(name, (name,)))} array "
                         f"(see the body parameter file format in docs/baselines.md, IHVC)")
    return None


def _req(data: Mapping[str, np.ndarray], name: str, path: Path) -> np.ndarray:
    arr = _get(data, name, path, required=True)
    assert arr is not None
    return arr


def _shape(arr: np.ndarray, want: tuple[int | None, ...], key: str, path: Path) -> np.ndarray:
    """Check ``arr``'s shape; ``want[0]`` is the frame count T (None: any)."""
    if arr.ndim != len(want) or any(w is not None and s != w for s, w in zip(arr.shape, want, strict=True)):
        dims = ["T" if i == 0 else ("N" if w is None else str(w)) for i, w in enumerate(want)]
        frames = f" with T = {want[0]} frames" if want and want[0] is not None and len(want) > 1 else ""
        if len(want) == 1:
            dims = [str(want[0])]
        raise InputError(f"{path}: '{key}' has shape {arr.shape}, expected ({', '.join(dims)}){frames}")
    return arr


def _perspective_to_weak(cam_trans: np.ndarray, focal: np.ndarray, princpt: np.ndarray, image_size: np.ndarray,
                         crop: np.ndarray | None, path: Path) -> np.ndarray:
    """OSX's perspective camera (cam_trans, focal, princpt [+ crop->image affine]) -> weak perspective.

    x_px = f (X + t_x) / (Z + t_z) + c  ~  (f / t_z) X + f t_x / t_z + c for |Z| << t_z, then the
    affine to image pixels and the normalisation 2 x / (W - 1) - 1.
    """
    t = cam_trans
    if (t[:, 2] <= 0).any():
        raise InputError(f"{path}: 'cam_trans' z must be > 0 (camera in front of the body)")
    w, h = float(image_size[0]), float(image_size[1])
    if w < 2 or h < 2:
        raise InputError(f"{path}: 'image_size' must be (W, H) of the video in pixels, got {image_size.tolist()}")
    sx_px = focal[0] / t[:, 2]
    sy_px = focal[1] / t[:, 2]
    ox = focal[0] * t[:, 0] / t[:, 2] + princpt[0]
    oy = focal[1] * t[:, 1] / t[:, 2] + princpt[1]
    n = t.shape[0]
    if crop is not None:
        a = np.broadcast_to(crop, (n, 2, 3))
        if np.abs(a[:, 0, 1]).max() > 1e-3 * np.abs(a[:, 0, 0]).max() or \
                np.abs(a[:, 1, 0]).max() > 1e-3 * np.abs(a[:, 1, 1]).max():
            raise InputError(f"{path}: 'crop_to_image' must be a scale + translation (no rotation or shear)")
        sx_px, ox = a[:, 0, 0] * sx_px, a[:, 0, 0] * ox + a[:, 0, 2]
        sy_px, oy = a[:, 1, 1] * sy_px, a[:, 1, 1] * oy + a[:, 1, 2]
    sx, sy = sx_px * 2 / (w - 1), sy_px * 2 / (h - 1)
    if np.abs(sx - sy).max() > 0.02 * np.abs(sx).max():
        raise InputError(f"{path}: the camera scales x and y differently (focal/size ratio differs by more than "
                         "2 %); the weak-perspective camera needs square pixels of a square-coded video")
    return np.stack([(sx + sy) / 2, ox * 2 / (w - 1) - 1, oy * 2 / (h - 1) - 1], 1)


def read_params(path: Path, frames: int | None = None) -> BodyParams:
    """Read and validate a body parameter file (format: module docstring / docs/baselines.md).

    ``frames``: the sequence length it must cover (the first ``frames`` rows
    are used). Every problem is one InputError naming the file and key.
    """
    path = Path(path)
    if not path.is_file():
        raise NotAvailable(f"body parameter file {path} not found")
    import zipfile

    if not zipfile.is_zipfile(path):
        raise InputError(f"{path}: not a readable .npz body parameter file (no zip archive; write it with numpy.savez)")
    try:
        with np.load(path, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files if k not in ("left_hand_pose", "right_hand_pose",
                                                          "smplx_lhand_pose", "smplx_rhand_pose")}
    except ValueError as e:
        raise InputError(f"{path}: holds object arrays ({str(e).splitlines()[0][:80]}); store plain numeric arrays "
                         "and 'source' as a string") from None
    except (OSError, EOFError, KeyError, zipfile.BadZipFile) as e:  # truncated archive
        raise InputError(f"{path}: not a readable .npz body parameter file ({type(e).__name__})") from None
    fmt = str(data["format"]) if "format" in data else PARAMS_FORMAT
    if fmt != PARAMS_FORMAT:
        raise InputError(f"{path}: format {fmt!r} is not {PARAMS_FORMAT!r}")
    if "source" not in data or data["source"].dtype.kind not in "US" or data["source"].ndim != 0:
        raise InputError(f"{path}: needs a string 'source' naming what produced the parameters "
                         "(e.g. 'osx', 'smplx-fit', 'PROXY:...')")
    source = str(data["source"])
    go = _req(data, "global_orient", path)
    t = go.shape[0] if go.ndim >= 1 else 0
    go = _shape(go, (None, 3), _key(data, "global_orient"), path)
    bp = _req(data, "body_pose", path)
    if bp.ndim == 2 and bp.shape[1] == 63:
        bp = bp.reshape(-1, 21, 3)
    bp = _shape(bp, (t, 21, 3), _key(data, "body_pose"), path)
    jaw = _shape(_req(data, "jaw_pose", path), (t, 3), _key(data, "jaw_pose"), path)
    expr = _req(data, "expression", path)
    expr = _shape(expr, (t, None), _key(data, "expression"), path)
    betas = _get(data, "betas", path, required=False)
    if betas is not None:
        betas = np.broadcast_to(betas, (t, betas.shape[-1])) if betas.ndim == 1 else _shape(betas, (t, None),
                                                                                           _key(data, "betas"), path)
    has_weak = "camera" in data
    has_persp = "cam_trans" in data
    if has_weak == has_persp:
        raise InputError(f"{path}: give exactly one camera: 'camera' (T, 3) weak perspective (s, tx, ty), or "
                         "'cam_trans' (T, 3) with 'focal', 'princpt', 'image_size' (OSX's camera)")
    transl = _get(data, "transl", path, required=False)
    if transl is not None:
        transl = _shape(transl, (t, 3), "transl", path)
    if has_weak:
        cam = _shape(_req(data, "camera", path), (t, 3), "camera", path)
        if (cam[:, 0] <= 0).any():
            raise InputError(f"{path}: 'camera' scale s (column 0) must be > 0")
        if transl is not None:
            cam = cam + np.stack([np.zeros(t), cam[:, 0] * transl[:, 0], cam[:, 0] * transl[:, 1]], 1)
    else:
        ct = _shape(_req(data, "cam_trans", path), (t, 3), "cam_trans", path)
        if transl is not None:
            ct = ct + transl
        missing = [k for k in ("focal", "princpt", "image_size") if k not in data]
        if missing:
            raise InputError(f"{path}: 'cam_trans' needs {', '.join(repr(m) for m in missing)} too")
        focal = _shape(_req(data, "focal", path), (2,), "focal", path)
        princpt = _shape(_req(data, "princpt", path), (2,), "princpt", path)
        size = _shape(_req(data, "image_size", path), (2,), "image_size", path)
        crop = _get(data, "crop_to_image", path, required=False)
        if crop is not None and crop.shape not in ((2, 3), (t, 2, 3)):
            raise InputError(f"{path}: 'crop_to_image' has shape {crop.shape}, expected (2, 3) or (T, 2, 3)")
        cam = _perspective_to_weak(ct, focal, princpt, size, crop, path)
    if t < 1:
        raise InputError(f"{path}: no frames")
    if frames is not None:
        if t < frames:
            raise InputError(f"{path}: has parameters for {t} frames, the sequence has {frames}")
        sl = slice(0, frames)
        go, bp, jaw, expr, cam = go[sl], bp[sl], jaw[sl], expr[sl], cam[sl]
        betas = None if betas is None else betas[sl]

    f32 = np.float32
    return BodyParams(go.astype(f32), bp.astype(f32), jaw.astype(f32), expr.astype(f32), cam.astype(f32),
                      None if betas is None else np.ascontiguousarray(betas, dtype=f32), source, str(path),
                      sha256_file(path))


def write_params(path: Path, params: BodyParams) -> Path:
    """Write ``params`` in the documented format (weak-perspective camera)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays: dict[str, Any] = {"format": np.array(PARAMS_FORMAT), "source": np.array(params.source),
                              "global_orient": params.global_orient, "body_pose": params.body_pose,
                              "jaw_pose": params.jaw_pose, "expression": params.expression, "camera": params.camera}
    if params.betas is not None:
        arrays["betas"] = params.betas
    tmp = path.with_name(f".{path.name}.tmp.npz")
    np.savez(tmp, **arrays)
    tmp.replace(path)
    return path


def params_to_vectors(params: BodyParams, layout: SemanticLayout) -> np.ndarray:
    """(T, layout.dim) semantic vectors of ``params`` (the encoder side of IHVC)."""
    if params.expression.shape[1] < layout.expression:
        raise InputError(f"{params.path}: 'expression' has {params.expression.shape[1]} coefficients, "
                         f"layout {layout.name} needs {layout.expression}")
    with torch.no_grad():
        rg = axis_angle_to_matrix(torch.from_numpy(params.global_orient).double())
        rel = matrix_to_axis_angle(rg @ torch.from_numpy(UPRIGHT).T).float().numpy()
    cam = params.camera
    parts = [np.log(cam[:, :1]), cam[:, 1:3], rel]
    parts += [params.body_pose[:, JOINT[j] - 1] for j in layout.joints]
    parts += [params.jaw_pose[:, list(layout.jaw)], params.expression[:, :layout.expression]]
    return np.concatenate(parts, 1).astype(np.float32)


def vectors_to_params(vec: np.ndarray, layout: SemanticLayout, source: str, expression_dim: int = 10) -> BodyParams:
    """Full SMPL-X parameters (unsent joints 0) from semantic vectors (for the PROXY files and tests)."""
    vec = np.asarray(vec, np.float64)
    if vec.ndim != 2 or vec.shape[1] != layout.dim:
        raise InputError(f"semantic vectors have shape {vec.shape}, expected (T, {layout.dim})")
    t = vec.shape[0]
    sl = layout.slices()
    with torch.no_grad():
        rel = axis_angle_to_matrix(torch.from_numpy(vec[:, sl["global"]]))
        go = matrix_to_axis_angle(rel @ torch.from_numpy(UPRIGHT)).numpy()
    body = np.zeros((t, 21, 3))
    jv = vec[:, sl["joints"]].reshape(t, -1, 3)
    for k, j in enumerate(layout.joints):
        body[:, JOINT[j] - 1] = jv[:, k]
    jaw = np.zeros((t, 3))
    jaw[:, list(layout.jaw)] = vec[:, sl["jaw"]]
    expr = np.zeros((t, max(expression_dim, layout.expression)))
    expr[:, :layout.expression] = vec[:, sl["expression"]]
    cam = np.stack([np.exp(vec[:, 0]), vec[:, 1], vec[:, 2]], 1)
    f32 = np.float32
    return BodyParams(go.astype(f32), body.astype(f32), jaw.astype(f32), expr.astype(f32), cam.astype(f32),
                      None, source)


# =========================================================================== meshes
class BodyMesh(nn.Module):
    """Semantic vectors -> posed, projected mesh vertices by linear blend skinning.

    The same code serves the SMPL-X model (shape/expression blend shapes,
    pose correctives, joint regressor) and the suite's PROXY template (fixed
    joints, rigid skinning, no blend shapes). Nothing here is trained and
    nothing is saved in checkpoints (buffers are non-persistent: the SMPL-X
    file is licensed and must not be redistributed); ``fingerprint`` pins the
    template a checkpoint was trained with.
    """

    v_template: torch.Tensor
    weights: torch.Tensor
    joints_rest: torch.Tensor | None
    j_regressor: torch.Tensor | None
    expr_dirs: torch.Tensor | None
    posedirs: torch.Tensor | None
    upright: torch.Tensor
    _used_index: torch.Tensor

    def __init__(self, kind: str, layout: SemanticLayout, v_template: np.ndarray, weights: np.ndarray,
                 parents: tuple[int, ...], joints: np.ndarray | None = None, j_regressor: np.ndarray | None = None,
                 expr_dirs: np.ndarray | None = None, posedirs: np.ndarray | None = None,
                 fingerprint: str = "", label: str = "") -> None:
        super().__init__()
        self.kind, self.layout, self.fingerprint, self.label = kind, layout, fingerprint, label
        self.parents = tuple(int(p) for p in parents)
        f32 = torch.float32

        def buf(name: str, arr: np.ndarray | None) -> None:
            self.register_buffer(name, None if arr is None else torch.as_tensor(np.asarray(arr), dtype=f32),
                                 persistent=False)

        buf("v_template", v_template)
        buf("weights", weights)
        buf("joints_rest", joints)
        buf("j_regressor", j_regressor)
        buf("expr_dirs", expr_dirs)         # (V, 3, E)
        buf("posedirs", posedirs)           # (P, V*3)
        buf("upright", UPRIGHT)
        sl = layout.slices()
        self._sl = sl
        self._joint_ids = [JOINT[j] for j in layout.joints]
        self._jaw = list(layout.jaw)
        # joints that move any vertex, with their ancestors: forward kinematics skips the rest
        # (the proxy has no points on hands or eyes)
        used = {int(j) for j in np.flatnonzero(np.asarray(weights).max(0) > 0)}
        for j in list(used):
            while self.parents[j] >= 0:
                j = self.parents[j]
                used.add(j)
        self._used = sorted(used)
        self.register_buffer("_used_index", torch.tensor(self._used, dtype=torch.long), persistent=False)

    @property
    def num_vertices(self) -> int:
        return int(self.v_template.shape[0])

    def rotations(self, vec: torch.Tensor) -> torch.Tensor:
        """(N, D) vectors -> (N, 55, 3, 3) joint rotations (unsent joints: identity)."""
        n = vec.shape[0]
        eye = torch.eye(3, dtype=vec.dtype, device=vec.device)
        rots = [eye.expand(n, 3, 3)] * NUM_JOINTS
        rots[0] = axis_angle_to_matrix(vec[:, self._sl["global"]]) @ self.upright.to(vec.dtype)
        jv = vec[:, self._sl["joints"]].reshape(n, -1, 3)
        for k, j in enumerate(self._joint_ids):
            rots[j] = axis_angle_to_matrix(jv[:, k])
        jaw = torch.zeros(n, 3, dtype=vec.dtype, device=vec.device)
        if self._jaw:
            jaw = jaw.index_copy(1, torch.tensor(self._jaw, device=vec.device), vec[:, self._sl["jaw"]])
        rots[JOINT["jaw"]] = axis_angle_to_matrix(jaw)
        return torch.stack(rots, 1)

    def vertices3d(self, vec: torch.Tensor, subset: torch.Tensor | None = None) -> torch.Tensor:
        """(N, D) -> (N, V, 3) posed vertices in camera orientation (before the weak-perspective camera).

        ``subset``: vertex indices to pose (all if None); joints still come from the whole mesh.
        """
        n = vec.shape[0]
        v = self.v_template.expand(n, -1, -1)
        expr = vec[:, self._sl["expression"]]
        if self.expr_dirs is not None and expr.shape[1]:
            v = v + torch.einsum("vce,ne->nvc", self.expr_dirs[:, :, :expr.shape[1]], expr)
        if self.j_regressor is not None:
            joints = torch.einsum("jv,nvc->njc", self.j_regressor, v)
        else:
            assert self.joints_rest is not None, "a body model has either a joint regressor or rest joints"
            joints = self.joints_rest.expand(n, -1, -1)
        rots = self.rotations(vec)
        weights = self.weights
        if subset is not None:
            v, weights = v[:, subset], weights[subset]
        if self.posedirs is not None:
            feat = (rots[:, 1:] - torch.eye(3, dtype=vec.dtype, device=vec.device)).reshape(n, -1)
            pd = self.posedirs if subset is None else self.posedirs.view(-1, self.num_vertices, 3)[:, subset]
            v = v + (feat @ pd.reshape(pd.shape[0], -1)).reshape(n, -1, 3)
        # forward kinematics: world rotation / translation of each (used) joint
        g_rot: dict[int, torch.Tensor] = {}
        g_tr: dict[int, torch.Tensor] = {}
        for j in self._used:
            p = self.parents[j]
            if p < 0:
                g_rot[j], g_tr[j] = rots[:, j], joints[:, j]
            else:
                g_rot[j] = g_rot[p] @ rots[:, j]
                g_tr[j] = g_tr[p] + (g_rot[p] @ (joints[:, j] - joints[:, p])[..., None])[..., 0]
        gr = torch.stack([g_rot[j] for j in self._used], 1)                                  # (N, U, 3, 3)
        gt = torch.stack([g_tr[j] for j in self._used], 1) - (gr @ joints[:, self._used_index, :, None])[..., 0]
        a = torch.cat([gr.reshape(n, -1, 9), gt], -1)                                         # (N, U, 12)
        t = torch.einsum("vj,njk->nvk", weights[:, self._used_index], a)
        r = t[..., :9].reshape(n, -1, 3, 3)
        return (r @ v[..., None])[..., 0] + t[..., 9:]

    def forward(self, vec: torch.Tensor, subset: torch.Tensor | None = None) -> torch.Tensor:
        """(N, D) semantic vectors -> (N, V, 2) projected vertices, normalised image coordinates."""
        v = self.vertices3d(vec, subset)
        cam = vec[:, self._sl["camera"]]
        s = torch.exp(cam[:, :1])[:, None]
        return v[..., :2] * s + cam[:, None, 1:3]

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "label": self.label, "vertices": self.num_vertices,
                "fingerprint": self.fingerprint, "pose_correctives": self.posedirs is not None,
                "expression_blendshapes": self.expr_dirs is not None}


def _sha(*arrays: np.ndarray) -> str:
    h = hashlib.sha256()
    for a in arrays:
        h.update(np.ascontiguousarray(a, dtype=np.float32).tobytes())
    return h.hexdigest()


# Rest joints of the PROXY skeleton (metres, SMPL-X canonical axes), rough adult proportions.
_PROXY_JOINTS = {
    "pelvis": (0, 0, 0), "left_hip": (0.09, -0.09, 0), "right_hip": (-0.09, -0.09, 0),
    "spine1": (0, 0.11, 0), "left_knee": (0.10, -0.47, 0), "right_knee": (-0.10, -0.47, 0),
    "spine2": (0, 0.24, 0), "left_ankle": (0.10, -0.86, 0), "right_ankle": (-0.10, -0.86, 0),
    "spine3": (0, 0.32, 0), "left_foot": (0.10, -0.90, 0.08), "right_foot": (-0.10, -0.90, 0.08),
    "neck": (0, 0.50, 0), "left_collar": (0.08, 0.44, 0), "right_collar": (-0.08, 0.44, 0),
    "head": (0, 0.58, 0), "left_shoulder": (0.17, 0.44, 0), "right_shoulder": (-0.17, 0.44, 0),
    "left_elbow": (0.42, 0.44, 0), "right_elbow": (-0.42, 0.44, 0),
    "left_wrist": (0.66, 0.44, 0), "right_wrist": (-0.66, 0.44, 0),
    "jaw": (0, 0.62, 0.02), "left_eye": (0.03, 0.68, 0.09), "right_eye": (-0.03, 0.68, 0.09),
}
PROXY_NAME = "proxy-articulated-v1"


def _capsule(rng: np.random.Generator, n: int, a: tuple, b: tuple, r: float) -> np.ndarray:
    a_, b_ = np.asarray(a, float), np.asarray(b, float)
    d = b_ - a_
    d /= np.linalg.norm(d)
    u = np.cross(d, [0, 0, 1.0]) if abs(d[2]) < 0.9 else np.cross(d, [1.0, 0, 0])
    u /= np.linalg.norm(u)
    w = np.cross(d, u)
    t = rng.uniform(0, 1, n)[:, None]
    th = rng.uniform(0, 2 * np.pi, n)[:, None]
    return a_ + t * (b_ - a_) + r * (np.cos(th) * u + np.sin(th) * w)


def _ellipsoid(rng: np.random.Generator, n: int, c: tuple, radii: tuple) -> np.ndarray:
    g = rng.normal(size=(n, 3))
    g /= np.linalg.norm(g, axis=1, keepdims=True)
    return np.asarray(c, float) + g * np.asarray(radii, float)


def proxy_template(seed: int = 0, n: int = NUM_VERTICES) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """PROXY body: (n, 3) points, (n,) joint index of each point (rigid skinning), (55, 3) rest joints.

    Points are sampled (seeded) on capsules and ellipsoids around the proxy
    skeleton in T-pose: head (lower face on the jaw), neck, torso in four
    spine bands, upper arms, forearms, hands, thighs, shins, feet. A point
    cloud with SMPL-X's joint semantics and vertex count, not SMPL-X.
    """
    rng = np.random.default_rng(seed)
    # (joint, sampler, share of the points)
    parts: list[tuple[str, Any, float]] = [
        ("head", lambda k: _ellipsoid(rng, k, (0, 0.66, 0.02), (0.085, 0.115, 0.10)), 0.16),
        ("neck", lambda k: _capsule(rng, k, (0, 0.50, 0), (0, 0.58, 0), 0.05), 0.03),
    ]
    for side, sx in (("left", 1), ("right", -1)):
        parts += [
            (f"{side}_shoulder", lambda k, sx=sx: _capsule(rng, k, (0.17 * sx, 0.44, 0), (0.42 * sx, 0.44, 0), 0.045),
             0.045),
            (f"{side}_elbow", lambda k, sx=sx: _capsule(rng, k, (0.42 * sx, 0.44, 0), (0.66 * sx, 0.44, 0), 0.038),
             0.035),
            (f"{side}_wrist", lambda k, sx=sx: _ellipsoid(rng, k, (0.74 * sx, 0.44, 0), (0.07, 0.025, 0.045)), 0.015),
            (f"{side}_hip", lambda k, sx=sx: _capsule(rng, k, (0.09 * sx, -0.10, 0), (0.10 * sx, -0.47, 0), 0.07),
             0.05),
            (f"{side}_knee", lambda k, sx=sx: _capsule(rng, k, (0.10 * sx, -0.47, 0), (0.10 * sx, -0.86, 0), 0.05),
             0.03),
            (f"{side}_ankle", lambda k, sx=sx: _ellipsoid(rng, k, (0.10 * sx, -0.90, 0.06), (0.045, 0.03, 0.10)),
             0.01),
        ]
    counts = [round(share * n) for _, _, share in parts]
    n_torso = n - sum(counts)
    pts, idx = [], []
    for (jname, fn, _), k in zip(parts, counts, strict=True):
        p = fn(k)
        j = np.full(k, JOINT[jname])
        if jname == "head":  # lower front of the face follows the jaw
            j[(p[:, 1] < 0.62) & (p[:, 2] > 0.0)] = JOINT["jaw"]
        pts.append(p)
        idx.append(j)
    # torso: elliptic cylinder y in [-0.08, 0.48], half-axes 0.16 (x) x 0.10 (z), in spine bands
    y = rng.uniform(-0.08, 0.48, n_torso)
    th = rng.uniform(0, 2 * np.pi, n_torso)
    torso = np.stack([0.16 * np.cos(th), y, 0.10 * np.sin(th)], 1)
    j = np.where(y < 0.11, JOINT["pelvis"], np.where(y < 0.24, JOINT["spine1"],
                                                       np.where(y < 0.32, JOINT["spine2"], JOINT["spine3"])))
    j = np.where((y > 0.40) & (torso[:, 0] > 0.09), JOINT["left_collar"], j)
    j = np.where((y > 0.40) & (torso[:, 0] < -0.09), JOINT["right_collar"], j)
    pts.append(torso)
    idx.append(j)
    verts = np.concatenate(pts).astype(np.float32)
    joint_of = np.concatenate(idx).astype(np.int64)
    joints = np.zeros((NUM_JOINTS, 3), np.float32)
    for name, i in JOINT.items():
        if name in _PROXY_JOINTS:
            joints[i] = _PROXY_JOINTS[name]
        else:  # hand joints: at their wrist (no points are attached to them)
            joints[i] = _PROXY_JOINTS["left_wrist" if name.startswith("left_") else "right_wrist"]
    return verts, joint_of, joints


def proxy_mesh(layout: SemanticLayout, seed: int = 0) -> BodyMesh:
    """The suite's PROXY template as a :class:`BodyMesh` (labelled; not SMPL-X)."""
    verts, joint_of, joints = proxy_template(seed)
    weights = np.zeros((verts.shape[0], NUM_JOINTS), np.float32)
    weights[np.arange(verts.shape[0]), joint_of] = 1.0
    return BodyMesh("proxy", layout, verts, weights, SMPLX_PARENTS, joints=joints,
                    fingerprint=_sha(verts, weights, joints)[:16],
                    label=f"PROXY template {PROXY_NAME} (seed {seed}): capsules/ellipsoids on the SMPL-X "
                          "skeleton, rigid skinning; not SMPL-X")


SMPLX_REQUIRED = ("v_template", "weights", "J_regressor", "kintree_table", "shapedirs")


def smplx_mesh(path: Path, layout: SemanticLayout) -> BodyMesh:
    """LBS of a user-supplied SMPL-X model file (``SMPLX_NEUTRAL.npz`` from smpl-x.is.tue.mpg.de).

    Betas are 0 (the body shape is not transmitted); expression blend shapes
    are shapedirs[..., 300:] (400-column files) or [..., 10:] (20-column
    files); pose correctives when ``posedirs`` is present. The file's sha256
    is the fingerprint.
    """
    import zipfile

    path = Path(path).expanduser()
    if not path.is_file():
        raise NotAvailable(f"SMPL-X model file {path} not found (the suite cannot ship it: download SMPLX_NEUTRAL.npz "
                           "from https://smpl-x.is.tue.mpg.de and point $GFVC_SMPLX_MODEL at it)")
    if path.suffix != ".npz":
        raise ModelMismatch(f"{path}: the SMPL-X model must be the .npz release (not {path.suffix or 'no suffix'})")
    try:
        z = np.load(path, allow_pickle=False)
        missing = [k for k in SMPLX_REQUIRED if k not in z.files]
        if missing:
            raise ModelMismatch(f"{path} is not an SMPL-X model file: no {', '.join(missing)}")
        vt = np.asarray(z["v_template"], np.float32)
        weights = np.asarray(z["weights"], np.float32)
        jreg = np.asarray(z["J_regressor"], np.float32)
        kin = np.asarray(z["kintree_table"]).astype(np.int64)
        sd = np.asarray(z["shapedirs"], np.float32)
        pd = np.asarray(z["posedirs"], np.float32) if "posedirs" in z.files else None
    except ModelMismatch:
        raise
    except (OSError, EOFError, KeyError, ValueError, zipfile.BadZipFile) as e:
        raise ModelMismatch(f"{path}: cannot read the SMPL-X model file ({type(e).__name__}: "
                            f"{str(e).splitlines()[0][:100] if str(e) else ''})") from None
    v = vt.shape[0]
    if vt.shape != (NUM_VERTICES, 3) or weights.shape != (NUM_VERTICES, NUM_JOINTS) or \
            jreg.shape != (NUM_JOINTS, NUM_VERTICES) or kin.shape != (2, NUM_JOINTS):
        raise ModelMismatch(f"{path}: not an SMPL-X model (v_template {vt.shape}, weights {weights.shape}, "
                            f"J_regressor {jreg.shape}, kintree_table {kin.shape}; SMPL-X has {NUM_VERTICES} "
                            f"vertices and {NUM_JOINTS} joints)")
    parents = tuple(-1 if p < 0 or p >= NUM_JOINTS else int(p) for p in kin[0])
    if parents != SMPLX_PARENTS:
        raise ModelMismatch(f"{path}: kinematic tree differs from SMPL-X's")
    if sd.ndim != 3 or sd.shape[:2] != (v, 3):
        raise ModelMismatch(f"{path}: shapedirs has shape {sd.shape}, expected ({v}, 3, 400) or ({v}, 3, 20)")
    first = 300 if sd.shape[2] >= 300 + layout.expression else 10
    expr_dirs = sd[:, :, first:first + max(layout.expression, 0)] if sd.shape[2] > first else None
    posedirs = None
    if pd is not None:
        if pd.shape != (v, 3, 9 * (NUM_JOINTS - 1)):
            raise ModelMismatch(f"{path}: posedirs has shape {pd.shape}, expected ({v}, 3, {9 * (NUM_JOINTS - 1)})")
        posedirs = pd.reshape(v * 3, -1).T
    return BodyMesh("smplx", layout, vt, weights, parents, j_regressor=jreg, expr_dirs=expr_dirs, posedirs=posedirs,
                    fingerprint=sha256_file(path)[:16], label=f"SMPL-X model file {path.name}")


def smplx_model_path(env: Any = None) -> Path | None:
    """User's SMPL-X model: Environment.extra['smplx_model'] or $GFVC_SMPLX_MODEL (None if neither)."""
    import os

    extra = getattr(env, "extra", None) or {}
    p = extra.get("smplx_model") or os.environ.get("GFVC_SMPLX_MODEL")
    return Path(p).expanduser() if p else None


def build_mesh(kind: str, layout: SemanticLayout, seed: int = 0, env: Any = None,
               fingerprint: str | None = None) -> BodyMesh:
    """Mesh option of a configuration: ``proxy`` or ``smplx``; checks the pinned fingerprint."""
    if kind == "proxy":
        mesh = proxy_mesh(layout, seed)
    elif kind == "smplx":
        path = smplx_model_path(env)
        if path is None:
            raise NotAvailable("this IHVC model uses the SMPL-X mesh: set $GFVC_SMPLX_MODEL to your "
                               "SMPLX_NEUTRAL.npz (licensed; download from https://smpl-x.is.tue.mpg.de)")
        mesh = smplx_mesh(path, layout)
    else:
        raise ModelMismatch(f"unknown IHVC mesh option {kind!r}; expected 'proxy' or 'smplx'")
    if fingerprint and fingerprint != mesh.fingerprint:
        raise ModelMismatch(f"the {kind} mesh here ({mesh.label}, fingerprint {mesh.fingerprint}) is not the one the "
                            f"model was trained with (fingerprint {fingerprint}): use the same template file")
    return mesh


# =========================================================================== learned estimator
class SemanticEstimator(nn.Module):
    """Frames (N, 3, H, W) in [0, 1] -> (N, D) semantic vectors: the suite's learned APPROXIMATION.

    A plain CNN (7x7 stem, ``num_blocks`` down blocks, 4x4 adaptive pooling
    that keeps where things are, two linear layers). It reproduces whatever
    targets it was trained on; it is not OSX (a ViT encoder with hand and face
    decoders, Lin et al. 2023).
    """

    def __init__(self, dim: int = 31, block_expansion: int = 32, num_blocks: int = 4, max_features: int = 256,
                 hidden: int = 256) -> None:
        super().__init__()

        self.first = SameBlock2d(3, block_expansion, kernel_size=7, padding=3)
        blocks, c = [], block_expansion
        for i in range(num_blocks):
            out = min(max_features, block_expansion * 2 ** (i + 1))
            blocks.append(DownBlock2d(c, out))
            c = out
        self.down_blocks = nn.ModuleList(blocks)
        self.pool = nn.AdaptiveAvgPool2d(4)
        self.fc1 = nn.Linear(c * 16, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.first(x)
        for b in self.down_blocks:
            h = b(h)
        return self.fc2(F.relu(self.fc1(self.pool(h).flatten(1))))


# =========================================================================== PROXY targets
PROXY_TARGETS_NAME = "PROXY:proxy-articulated-v1-fit-to-hornschunck-tracks"
# Placement of the proxy on the reference frame (suite choice, the s2d PROXY template's head ellipse):
# head centre at normalised (0, -0.35), head height 0.76; arms hanging (shoulders +-1.2 rad about z).
REFERENCE_HEAD_CENTRE = (0.0, -0.35)
REFERENCE_HEAD_HEIGHT = 0.76
REFERENCE_ARM_DROP = 1.2


def reference_vector(mesh: BodyMesh, head_centre: tuple[float, float] = REFERENCE_HEAD_CENTRE,
                     head_height: float = REFERENCE_HEAD_HEIGHT) -> torch.Tensor:
    """(1, D) vector placing ``mesh`` upright, arms down, its head box centred at ``head_centre`` with
    height ``head_height`` (normalised units; default: the s2d PROXY template's head ellipse)."""
    layout = mesh.layout
    names = layout.names()
    v = torch.zeros(1, layout.dim)
    if "left_shoulder.z" in names:
        v[0, names.index("left_shoulder.z")] = -REFERENCE_ARM_DROP
        v[0, names.index("right_shoulder.z")] = REFERENCE_ARM_DROP
    with torch.no_grad():
        p3 = mesh.vertices3d(v)[0]
    owner = mesh.weights.argmax(1)
    head = torch.isin(owner, torch.tensor([JOINT["head"], JOINT["jaw"], JOINT["left_eye"], JOINT["right_eye"]]))
    top, bottom = float(p3[head, 1].min()), float(p3[head, 1].max())
    s = head_height / max(bottom - top, 1e-3)
    cx = float(p3[head, 0].mean())
    v[0, 0] = math.log(s)
    v[0, 1] = head_centre[0] - s * cx
    v[0, 2] = head_centre[1] - s * (top + bottom) / 2
    return v


def proxy_semantic_targets(frames: np.ndarray, mesh: BodyMesh, reference: int = 0, iters: int = 300,
                           stride: int = 3, prior: float = 1e-3, seed: int = 0,
                           head_centre: tuple[float, float] = REFERENCE_HEAD_CENTRE,
                           head_height: float = REFERENCE_HEAD_HEIGHT) -> tuple[np.ndarray, dict[str, Any]]:
    """PROXY semantic vectors (T, D) for uint8 frames (T, H, W, 3); see module docstring.

    1. the mesh at :func:`reference_vector` (``head_centre``, ``head_height``: a placement given by
       hand, not a detection) is the reference frame's pose;
    2. each visible reference vertex (every ``stride``-th) is moved by the
       Horn-Schunck flow (:func:`model_parts.proxy_vertices.horn_schunck`) from
       the reference frame to frame t;
    3. per frame, Adam fits the vector (expression fixed at 0: the proxy has
       no face blend shapes) to those tracks: L1 of projected vertices +
       ``prior`` x squared distance to the reference vector.
    """
    torch.manual_seed(seed)
    t, h, w, _ = frames.shape
    layout = mesh.layout
    v_ref = reference_vector(mesh, head_centre, head_height)
    with torch.no_grad():
        p_ref = mesh(v_ref)[0].numpy()[::stride]
    inside = (np.abs(p_ref) <= 1).all(1)
    px = (p_ref[:, 0] + 1) * (w - 1) / 2
    py = (p_ref[:, 1] + 1) * (h - 1) / 2
    from scipy import ndimage

    targets = np.repeat(p_ref[None], t, 0)
    for i in range(t):
        if i == reference:
            continue
        fl = horn_schunck(frames[reference], frames[i])
        dx = ndimage.map_coordinates(fl[..., 0], [py, px], order=1, mode="nearest")
        dy = ndimage.map_coordinates(fl[..., 1], [py, px], order=1, mode="nearest")
        targets[i, :, 0] = (px + dx) / ((w - 1) / 2) - 1
        targets[i, :, 1] = (py + dy) / ((h - 1) / 2) - 1
    tgt = torch.from_numpy(targets[:, inside]).float()
    free = torch.ones(layout.dim)
    free[layout.slices()["expression"]] = 0.0
    vec = v_ref.repeat(t, 1).clone().requires_grad_(True)
    opt = torch.optim.Adam([vec], lr=0.01)
    idx = torch.from_numpy(np.flatnonzero(inside) * stride)
    loss_first = loss_last = float("nan")
    for k in range(iters):
        opt.zero_grad()
        proj = mesh(vec * free + v_ref * (1 - free), idx)
        fit = (proj - tgt).abs().mean()
        loss = fit + prior * ((vec - v_ref) ** 2 * free).sum(1).mean()
        loss.backward()
        opt.step()
        if k == 0:
            loss_first = fit.item()
        loss_last = fit.item()
    out = (vec * free + v_ref * (1 - free)).detach().numpy().astype(np.float32)
    info = {"targets": PROXY_TARGETS_NAME, "mesh": mesh.describe(), "reference_frame": reference,
            "reference_placement": {"head_centre": list(head_centre), "head_height": head_height},
            "tracked_vertices": int(inside.sum()), "stride": stride, "iters": iters, "prior": prior,
            "fit_l1_first": round(loss_first, 5), "fit_l1_last": round(loss_last, 5),
            "note": "PROXY: proxy template placed by hand on the reference frame, fitted to optical-flow "
                    "tracks; not OSX, not SMPL-X"}
    return out, info


def prepare_proxy_params(data_dir: Path, layout_name: str = DEFAULT_LAYOUT, seed: int = 0, iters: int = 300,
                         head_centre: tuple[float, float] = REFERENCE_HEAD_CENTRE,
                         head_height: float = REFERENCE_HEAD_HEIGHT) -> dict[str, Any]:
    """Write DATA/ihvc_params/<video>.npz PROXY parameter files for every training video of DATA."""
    layout = get_layout(layout_name)
    mesh = proxy_mesh(layout, seed)
    out: dict[str, Any] = {"layout": layout.name, "videos": {}}
    for v in list_videos(Path(data_dir)):
        frames = read_png_folder(v.path) if v.kind == "png" else read_container(v.path)[0]
        vec, info = proxy_semantic_targets(frames, mesh, iters=iters, head_centre=head_centre,
                                           head_height=head_height)
        params = vectors_to_params(vec, layout, PROXY_TARGETS_NAME)
        path = write_params(Path(data_dir) / PARAMS_DIR / f"{v.name}.npz", params)
        out["videos"][v.name] = {"frames": int(frames.shape[0]), "file": str(path), **info}
    (Path(data_dir) / PARAMS_DIR / "README.json").write_text(json.dumps(out, indent=2))
    return out


PARAMS_DIR = "ihvc_params"   # training targets: DATA/ihvc_params/<video>.npz


def main(argv: list[str] | None = None) -> int:
    """``python -m baselines.body_model proxy-targets DATA [--head-centre X,Y] [--head-height H]``."""
    import argparse

    p = argparse.ArgumentParser(prog="python -m baselines.body_model",
                                description="Write PROXY IHVC parameter files DATA/ihvc_params/<video>.npz")
    p.add_argument("command", choices=["proxy-targets"])
    p.add_argument("data")
    p.add_argument("--head-centre", default=",".join(map(str, REFERENCE_HEAD_CENTRE)),
                   help="normalised x,y of the head on the first frame (hand-chosen placement)")
    p.add_argument("--head-height", type=float, default=REFERENCE_HEAD_HEIGHT)
    p.add_argument("--iters", type=int, default=300)
    a = p.parse_args(argv)
    cx, cy = (float(v) for v in a.head_centre.split(","))
    print(json.dumps(prepare_proxy_params(Path(a.data), iters=a.iters, head_centre=(cx, cy),
                                          head_height=a.head_height), indent=2))
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
