"""IHVC: human body video coding with interactive semantics (Chen, Yin et al., ICIP 2025, arXiv 2505.16152).

Chen, Yin, Zhu, Zhu, Zhang, Chen, Liao, Wang, Ye, "Compressing Human Body
Video with Interactive Semantics: A Generative Approach". No code is public;
what the available text says is followed, everything it leaves open is a
named option of the configuration (docs/baselines.md, IHVC):

* encoder: a 3D human model estimate (OSX -> SMPL-X) turned into a
  31-dimensional, editable semantic vector per frame
  (:mod:`baselines.body_model`: the layout, the user-supplied parameter
  files, or the suite's learned estimator, an APPROXIMATION);
* decoder: a template-based 3D mesh posed by the decoded vector, a
  mesh-based motion field, SPADE-based estimation of dense flow and
  occlusion, a GAN generator; trained with perceptual + distortion (+ GAN)
  losses.

The suite's design (its choices in brackets):

1. mesh: ``BodyMesh`` (SMPL-X file or PROXY template) posed by the key
   frame's and the current frame's vectors -> 10475 projected vertices each;
2. sparse motion field: every vertex's key-frame position splatted at its
   current-frame position (bilinear splatting, average per cell) on the
   feature grid (1/4 of the frame) -> a backward offset field + coverage;
3. :class:`SpadeDenseMotion`: key frame and key frame warped by the sparse
   field (1/4 size) through conv blocks whose normalisations are SPADE
   (Park et al., CVPR 2019) conditioned on the sparse field and coverage ->
   residual flow (added to the coverage-weighted sparse field) and a sigmoid
   occlusion map;
4. :class:`IhvcGenerator`: FOMM-style encoder of the key frame
   (baselines.blocks), warped by the dense flow, masked by the occlusion,
   residual bottleneck, decoder, sigmoid;
5. discriminator: FOMM's multi-scale patch discriminator (LS-GAN + feature
   matching).

Codec ``ihvc``: 31 values per frame. The decoder has no analysis network
(the body-model estimator runs at the encoder only), so the key frame's
vector is coded too (``sends_key_features``: one more DPCM row, predicted
from zeros); the decoder outputs the frames and ``vertices`` (T, 10475, 2),
the posed mesh's projected vertices in s2d's normalised coordinates.
"""
from __future__ import annotations

import functools
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from baselines import blocks as B
from baselines import body_model as bm
from baselines import losses as L
from baselines.base import BaselineCodec, BaselineConfig, build_from_table
from baselines.losses import PyramidGanRecipe
from gfvc.codec import CODECS
from gfvc.errors import ConfigError, InputError, ModelMismatch
from gfvc.video import sha256_file
from model_parts.checkpoint import has_keys, register_signature
from model_parts.data import PairDataset
from model_parts.overlay import draw_vertices
from model_parts.training import RECIPES

NAME = "ihvc"
PARAMS_ENV = "GFVC_IHVC_PARAMS"          # folder of <sequence>.npz body parameter files (params-file estimator)


# =========================================================================== mesh-based motion field
def splat_motion(v_source: torch.Tensor, v_driving: torch.Tensor, size: tuple[int, int]
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Sparse backward motion field from two projections of the same vertices.

    ``v_source``, ``v_driving``: (B, V, 2) normalised coordinates. Each vertex
    deposits its offset (source - driving) at its driving position with
    bilinear weights; a cell's value is the weighted average. Returns the
    offset field (B, 2, h, w) and the coverage min(sum of weights, 1) (B, 1, h, w).
    """
    b, v, _ = v_driving.shape
    h, w = size
    x = (v_driving[..., 0] + 1) * (w - 1) / 2
    y = (v_driving[..., 1] + 1) * (h - 1) / 2
    x0, y0 = torch.floor(x), torch.floor(y)
    off = (v_source - v_driving)
    acc_w = v_driving.new_zeros(b, h * w)
    acc_v = v_driving.new_zeros(b, 2, h * w)
    for dx in (0, 1):
        for dy in (0, 1):
            xi, yi = x0 + dx, y0 + dy
            wt = (1 - (x - xi).abs()) * (1 - (y - yi).abs())
            ok = (xi >= 0) & (xi <= w - 1) & (yi >= 0) & (yi <= h - 1)
            wt = wt * ok
            idx = (yi.clamp(0, h - 1) * w + xi.clamp(0, w - 1)).long()
            acc_w = acc_w.scatter_add(1, idx, wt)
            acc_v = acc_v.scatter_add(2, idx[:, None].expand(b, 2, v), off.permute(0, 2, 1) * wt[:, None])
    flow = (acc_v / acc_w.clamp_min(1e-6)[:, None]).view(b, 2, h, w)
    cover = acc_w.clamp(max=1.0).view(b, 1, h, w)
    return flow, cover


# =========================================================================== SPADE
def _plain_norm(kind: str, channels: int) -> nn.Module:
    if kind == "instance":
        return nn.InstanceNorm2d(channels, affine=False)
    if kind == "batch":
        return nn.BatchNorm2d(channels, affine=False)
    raise ValueError(f"SPADE norm must be 'instance' or 'batch', not {kind!r}")


class SPADE(nn.Module):
    """Spatially-adaptive normalisation (Park et al., CVPR 2019): norm(x) * (1 + gamma(c)) + beta(c)."""

    def __init__(self, channels: int, cond_channels: int, hidden: int = 64, kernel_size: int = 3,
                 norm: str = "instance") -> None:
        super().__init__()
        pad = kernel_size // 2
        self.param_free_norm = _plain_norm(norm, channels)
        self.mlp_shared = nn.Sequential(nn.Conv2d(cond_channels, hidden, kernel_size, padding=pad), nn.ReLU())
        self.mlp_gamma = nn.Conv2d(hidden, channels, kernel_size, padding=pad)
        self.mlp_beta = nn.Conv2d(hidden, channels, kernel_size, padding=pad)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        if cond.shape[2:] != x.shape[2:]:
            cond = F.interpolate(cond, size=x.shape[2:], mode="bilinear", align_corners=False)
        a = self.mlp_shared(cond)
        return self.param_free_norm(x) * (1 + self.mlp_gamma(a)) + self.mlp_beta(a)


class SPADEResBlock(nn.Module):
    """SPADE residual block (SPADE -> LeakyReLU(0.2) -> conv, twice; learned shortcut on a width change)."""

    def __init__(self, fin: int, fout: int, cond_channels: int, hidden: int = 64, norm: str = "instance") -> None:
        super().__init__()
        mid = min(fin, fout)
        self.learned_shortcut = fin != fout
        self.conv_0 = nn.Conv2d(fin, mid, 3, padding=1)
        self.conv_1 = nn.Conv2d(mid, fout, 3, padding=1)
        self.norm_0 = SPADE(fin, cond_channels, hidden, norm=norm)
        self.norm_1 = SPADE(mid, cond_channels, hidden, norm=norm)
        if self.learned_shortcut:
            self.conv_s = nn.Conv2d(fin, fout, 1, bias=False)
            self.norm_s = SPADE(fin, cond_channels, hidden, norm=norm)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        xs = self.conv_s(self.norm_s(x, cond)) if self.learned_shortcut else x
        dx = self.conv_0(F.leaky_relu(self.norm_0(x, cond), 0.2))
        dx = self.conv_1(F.leaky_relu(self.norm_1(dx, cond), 0.2))
        return xs + dx


class SpadeDenseMotion(nn.Module):
    """Dense flow + occlusion from the key frame and the mesh motion field (suite design, see module doc).

    Input (at the motion grid, 1/4 of the frame): the key frame and the key
    frame warped by the coverage-weighted sparse field (6 channels); the
    SPADE condition is (sparse offset x, y, coverage). One down block widens
    the receptive field; ``num_blocks`` SPADE residual blocks; one up block;
    3x3 heads: residual flow (2) and occlusion (1, sigmoid).
    """

    def __init__(self, num_channels: int = 3, block_expansion: int = 64, num_blocks: int = 3,
                 spade_hidden: int = 64, norm: str = "instance", estimate_occlusion_map: bool = True) -> None:
        super().__init__()
        cond = 3
        be = block_expansion
        self.first = B.SameBlock2d(2 * num_channels, be, kernel_size=3, padding=1)
        self.down = B.DownBlock2d(be, 2 * be)
        self.spade_blocks = nn.ModuleList(SPADEResBlock(2 * be, 2 * be, cond, spade_hidden, norm)
                                          for _ in range(num_blocks))
        self.up = B.UpBlock2d(2 * be, be)
        self.flow = nn.Conv2d(2 * be, 2, 3, padding=1)
        self.occlusion = nn.Conv2d(2 * be, 1, 3, padding=1) if estimate_occlusion_map else None
        with torch.no_grad():  # start from the mesh field: zero residual
            if self.flow.weight.device.type != "meta" and self.flow.bias is not None:
                self.flow.weight.zero_()
                self.flow.bias.zero_()

    def forward(self, source: torch.Tensor, sparse: torch.Tensor, cover: torch.Tensor) -> dict[str, torch.Tensor]:
        h, w = sparse.shape[2:]
        grid = B.make_coordinate_grid((h, w), sparse.dtype, sparse.device)[None]
        base = sparse * cover
        src = F.interpolate(source, size=(h, w), mode="bilinear", align_corners=False, antialias=True) \
            if source.shape[2:] != (h, w) else source
        warped = F.grid_sample(src, grid + base.permute(0, 2, 3, 1), align_corners=True)
        cond = torch.cat([sparse, cover], 1)
        x0 = self.first(torch.cat([src, warped], 1))
        x = self.down(x0)
        for blk in self.spade_blocks:
            x = blk(x, cond)
        x = torch.cat([self.up(x), x0], 1)
        flow = base + self.flow(x)
        out = {"deformation": grid + flow.permute(0, 2, 3, 1), "sparse_deformed": warped}
        if self.occlusion is not None:
            out["occlusion_map"] = torch.sigmoid(self.occlusion(x))
        return out


# =========================================================================== generator
class IhvcGenerator(nn.Module):
    """Key frame + key/current semantic vectors -> current frame (and the posed mesh's vertices).

    The mesh (:class:`baselines.body_model.BodyMesh`) is attached with
    :meth:`attach_mesh` (it holds no trained weights and is not saved).
    """

    def __init__(self, num_channels: int = 3, block_expansion: int = 64, max_features: int = 512,
                 num_down_blocks: int = 2, num_bottleneck_blocks: int = 6, dense_motion_params: Mapping | None = None,
                 norm: str = "batch") -> None:
        super().__init__()
        self.first = B.SameBlock2d(num_channels, block_expansion, kernel_size=7, padding=3, norm=norm)
        down, c = [], block_expansion
        for i in range(num_down_blocks):
            out = min(max_features, block_expansion * 2 ** (i + 1))
            down.append(B.DownBlock2d(c, out, norm=norm))
            c = out
        self.down_blocks = nn.ModuleList(down)
        self.bottleneck = nn.Sequential(*[B.ResBlock2d(c, norm=norm) for _ in range(num_bottleneck_blocks)])
        up = []
        for i in reversed(range(num_down_blocks)):
            out = min(max_features, block_expansion * 2 ** i)
            up.append(B.UpBlock2d(c, out, norm=norm))
            c = out
        self.up_blocks = nn.ModuleList(up)
        self.final = nn.Conv2d(block_expansion, num_channels, kernel_size=7, padding=3)
        self.dense_motion_network = SpadeDenseMotion(num_channels=num_channels, **dict(dense_motion_params or {}))
        self.num_down_blocks = num_down_blocks
        self.mesh: bm.BodyMesh | None = None

    def attach_mesh(self, mesh: bm.BodyMesh) -> IhvcGenerator:
        p = next(self.parameters(), None)
        self.mesh = mesh.to(p.device) if p is not None else mesh
        return self

    def vertices(self, vec: torch.Tensor) -> torch.Tensor:
        if self.mesh is None:
            raise ModelMismatch("IHVC generator has no body mesh attached (attach_mesh)")
        return self.mesh(vec)

    def forward(self, source: torch.Tensor, vec_source: torch.Tensor, vec_driving: torch.Tensor
                ) -> dict[str, torch.Tensor]:
        n = vec_driving.shape[0]
        both = self.vertices(torch.cat([vec_source, vec_driving], 0))
        v_src, v_drv = both[:n], both[n:]
        feat = self.first(source)
        for blk in self.down_blocks:
            feat = blk(feat)
        h, w = feat.shape[2:]
        sparse, cover = splat_motion(v_src, v_drv, (h, w))
        motion = self.dense_motion_network(source, sparse, cover)
        feat = F.grid_sample(feat, motion["deformation"], align_corners=True)
        out = {"vertices_source": v_src, "vertices_driving": v_drv, "sparse_motion": sparse, "coverage": cover,
               "sparse_deformed": motion["sparse_deformed"]}
        if "occlusion_map" in motion:
            feat = feat * motion["occlusion_map"]
            out["occlusion_map"] = motion["occlusion_map"]
        feat = self.bottleneck(feat)
        for blk in self.up_blocks:
            feat = blk(feat)
        out["prediction"] = torch.sigmoid(self.final(feat))
        out["deformation"] = motion["deformation"]
        return out


# =========================================================================== configurations
DEFAULT_OPTIONS: dict[str, Any] = {
    "layout": bm.DEFAULT_LAYOUT,        # which 31 SMPL-X quantities are sent (body_model.LAYOUTS)
    "mesh": "proxy",                    # "proxy" (suite PROXY template) | "smplx" (user's SMPL-X file)
    "mesh_seed": 0,                     # PROXY template sampling seed
    "mesh_fingerprint": None,           # pinned at training: the template the decoder was trained with
    "splat": "bilinear-average",        # how vertex offsets become the sparse motion field
    "generator_input": "targets",       # decoder trained on the target vectors (as on OSX output in the paper)
    "key_features": "coded",            # key frame's vector coded as one more DPCM row (decoder has no estimator)
}
LOSS_WEIGHTS: dict[str, Any] = {
    "perceptual": [10.0, 10.0, 10.0, 10.0, 10.0],   # FOMM's VGG19 pyramid weights (paper: "perceptual")
    "distortion": 10.0,                             # L1 in pixels (paper: "distortion"; weight: suite choice)
    "generator_gan": 1.0, "discriminator_gan": 1.0,  # LS-GAN as FOMM (paper: GAN generator)
    "feature_matching": [10.0, 10.0, 10.0, 10.0],
    "estimator": 1.0,                               # L1 to the target vectors (learned estimator)
}
TRAIN_PARAMS: dict[str, Any] = {"scales": [1, 0.5, 0.25, 0.125], "num_epochs": 100, "epoch_milestones": [60, 90],
                                "lr": 2e-4, "transform_params": {}}


@functools.lru_cache(maxsize=8)
def _proxy_fingerprint(layout: str, seed: int) -> str:
    return bm.proxy_mesh(bm.get_layout(layout), seed).fingerprint


def _config(name: str, size: int, gen: dict[str, Any], motion: dict[str, Any], est: dict[str, Any],
            disc: dict[str, Any], **options: Any) -> BaselineConfig:
    opts = {**DEFAULT_OPTIONS, **options}
    layout = bm.get_layout(opts["layout"])
    if opts["mesh"] == "proxy" and not opts["mesh_fingerprint"]:
        opts["mesh_fingerprint"] = _proxy_fingerprint(layout.name, int(opts["mesh_seed"]))
    return BaselineConfig(model=NAME, image_size=size, name=name, options=opts, modules={
        "estimator": {"dim": layout.dim, **est},
        "generator": {"num_channels": 3, **gen, "dense_motion_params": motion},
        "discriminator": {"scales": [1], "num_channels": 3, **disc},
    })


def reference_config(mesh: str = "proxy") -> BaselineConfig:
    """The suite's full-size configuration at 384 px (FOMM-like widths; the paper gives none)."""
    return _config("official" if mesh == "proxy" else "smplx", 384,
                   {"block_expansion": 64, "max_features": 512, "num_down_blocks": 2, "num_bottleneck_blocks": 6},
                   {"block_expansion": 64, "num_blocks": 3, "spade_hidden": 64},
                   {"block_expansion": 32, "num_blocks": 5, "max_features": 256, "hidden": 256},
                   {"block_expansion": 32, "max_features": 512, "num_blocks": 4, "sn": True}, mesh=mesh)


def demo_config() -> BaselineConfig:
    """Small widths at 128x128 for the CPU demo checkpoint; the GAN term is off (loss_weights) because a
    ~25-minute CPU run cannot afford the discriminator passes (the recipe and the official config keep it)."""
    return _config("demo", 128,
                   {"block_expansion": 16, "max_features": 128, "num_down_blocks": 2, "num_bottleneck_blocks": 3},
                   {"block_expansion": 16, "num_blocks": 2, "spade_hidden": 16},
                   {"block_expansion": 8, "num_blocks": 4, "max_features": 64, "hidden": 64},
                   {"block_expansion": 16, "max_features": 64, "num_blocks": 3, "sn": True},
                   loss_weights={"generator_gan": 0.0, "discriminator_gan": 0.0})


MODULES: dict[str, Callable[..., nn.Module]] = {
    "estimator": bm.SemanticEstimator, "generator": IhvcGenerator, "discriminator": B.MultiScaleDiscriminator}


def build_module(name: str, kwargs: Mapping[str, Any]) -> nn.Module:
    return build_from_table("IHVC", MODULES, name, kwargs)


def _check_config(cfg: BaselineConfig) -> bm.SemanticLayout:
    unknown = set(cfg.options) - set(DEFAULT_OPTIONS) - {"loss_weights"}
    if unknown:
        raise ModelMismatch(f"IHVC configuration {cfg.name!r}: unknown options {sorted(unknown)}")
    layout = bm.get_layout(cfg.options.get("layout", bm.DEFAULT_LAYOUT))
    if int(cfg.modules["estimator"]["dim"]) != layout.dim:
        raise ModelMismatch(f"IHVC configuration {cfg.name!r}: estimator dim {cfg.modules['estimator']['dim']} "
                            f"!= layout {layout.name} ({layout.dim})")
    for k, v in (("splat", "bilinear-average"), ("key_features", "coded")):
        if cfg.options.get(k, v) != v:
            raise ModelMismatch(f"IHVC option {k}={cfg.options.get(k)!r} is not implemented (only {v!r})")
    if cfg.options.get("generator_input", "targets") not in ("targets", "estimator"):
        raise ModelMismatch("IHVC option generator_input must be 'targets' or 'estimator'")
    return layout


def mesh_for(cfg: BaselineConfig, env: Any = None) -> bm.BodyMesh:
    """The configuration's body mesh, checked against the pinned fingerprint."""
    layout = _check_config(cfg)
    o = cfg.options
    return bm.build_mesh(o.get("mesh", "proxy"), layout, int(o.get("mesh_seed", 0)), env, o.get("mesh_fingerprint"))


# =========================================================================== codec
def _params_dir(env: Any) -> Path | None:
    extra = getattr(env, "extra", None) or {}
    p = extra.get("ihvc_params") or os.environ.get(PARAMS_ENV)
    return Path(p).expanduser() if p else None


@CODECS.register()
class IhvcCodec(BaselineCodec):
    """IHVC on the generative template (see module docstring)."""

    name = NAME
    description = ("IHVC (Chen, Yin et al., ICIP 2025): VVC key frame + a 31-value SMPL-X semantic vector per frame "
                   "(the key frame's too) from a pluggable body-model estimator (OSX/SMPL-X parameter files, or the "
                   "suite's learned APPROXIMATION); decoder: posed body mesh -> mesh motion field -> SPADE dense "
                   "flow/occlusion -> GAN generator; decodes 10475x2 vertices")
    feature_dim = 31
    quant_scale = 256.0   # measured sweep, docs/baselines.md (IHVC): < 1 grey level vs unquantised vectors
    inference_modules = ("estimator", "generator")
    sends_key_features = True
    # the decoded mesh's projected vertices, measured like S2D's (metrics/vertices.py) when they are in the
    # reference's vertex order (SMPL-X mesh against OSX/SMPL-X references): see vertex_mismatch
    vertex_extra = "vertices"

    def __init__(self, condition: Any, env: Any = None) -> None:
        super().__init__(condition, env)
        self._file_vectors: np.ndarray | None = None
        self._cursor = 0
        self._encode_info: dict[str, Any] = {}

    # ------------------------------------------------------------ configurations
    @classmethod
    def official_config(cls) -> BaselineConfig:
        return reference_config()

    @classmethod
    def named_configs(cls) -> dict[str, BaselineConfig]:
        return {"official": reference_config(), "smplx": reference_config("smplx"), "demo": demo_config()}

    @classmethod
    def build_modules(cls, cfg: BaselineConfig) -> dict[str, nn.Module]:
        _check_config(cfg)
        return {name: build_module(name, kw) for name, kw in cfg.modules.items() if name != "discriminator"}

    # ------------------------------------------------------------ model
    def layout(self) -> bm.SemanticLayout:
        return bm.get_layout(self.config().options.get("layout", bm.DEFAULT_LAYOUT))

    def load(self) -> None:
        if self.nets is not None:
            return
        super().load()
        assert self.nets is not None
        if self.layout().dim != self.feature_dim:
            raise ModelMismatch(f"{self.choice.path}: layout {self.layout().name} has {self.layout().dim} values, "
                                f"codec {NAME} sends {self.feature_dim}")
        self.nets["generator"].attach_mesh(mesh_for(self.config(), self.env))

    def features(self, frames: torch.Tensor, key: torch.Tensor) -> torch.Tensor:
        assert self.nets is not None
        return self.nets["estimator"](frames)

    def render(self, key: torch.Tensor, key_features: torch.Tensor, features: torch.Tensor
               ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        assert self.nets is not None
        n = features.shape[0]
        out = self.nets["generator"](key.expand(n, -1, -1, -1), key_features[None].expand(n, -1), features)
        return out["prediction"], {"vertices": out["vertices_driving"]}

    def vertex_mismatch(self, reference_is_proxy: bool) -> str | None:
        """Why this model's vertices cannot be compared with the sequence's reference vertices, or None.

        Vertex i of the decoded mesh is vertex i of SMPL-X only with the user's SMPL-X file; the PROXY
        mesh's points have no correspondence with any reference (OSX/SMPL-X or the demo's PROXY tracks).
        """
        mesh = str(self.config().options.get("mesh", "proxy"))
        if mesh != "smplx":
            return ("IHVC decodes the vertices of the suite's PROXY body mesh (no SMPL-X model file given), which "
                    "have no vertex-to-vertex correspondence with the reference vertices; configure mesh: smplx "
                    "with your SMPL-X file to measure them (docs/baselines.md, IHVC)")
        if reference_is_proxy:
            return ("the reference vertices are PROXY tracks, not in SMPL-X vertex order: IHVC's SMPL-X vertices "
                    "cannot be compared with them")
        return None

    def key_extras(self, key_frame: np.ndarray, key_features: np.ndarray) -> dict[str, np.ndarray]:
        self.load()
        assert self.nets is not None
        with torch.inference_mode():
            v = self.nets["generator"].vertices(torch.from_numpy(np.asarray(key_features, np.float32)[None])
                                                .to(self.device))
        return {"vertices": v.float().cpu().numpy()}

    def views(self, decoded: Any) -> dict[str, np.ndarray]:
        """The decoded frames with the decoded mesh's vertices drawn over them (for inspection)."""
        if "vertices" not in decoded.extras:
            return {}
        return {"vertices_overlay": draw_vertices(decoded.frames, decoded.extras["vertices"])}

    # ------------------------------------------------------------ encoder-side estimate
    def estimator_kind(self) -> str:
        return "params-file" if _params_dir(self.env) is not None else "learned"

    def _prepare_estimate(self, sequence: Any) -> None:
        """Per-frame vectors of a parameter file (params-file estimator), or nothing (learned)."""
        self._file_vectors, self._cursor = None, 0
        d = _params_dir(self.env)
        if d is None:
            self._encode_info = {"estimator": "learned", "estimator_label": self._learned_label()}
            return
        path = d / f"{sequence.name}.npz"
        params = bm.read_params(path, frames=int(sequence.frames.shape[0]))
        self._file_vectors = bm.params_to_vectors(params, self.layout())
        self._encode_info = {"estimator": "params-file", "params_sha256": params.sha256,
                             "params_declared_source": params.source, "osx": params.is_osx}

    def encode(self, sequence: Any, rate_point: Any, workdir: Path) -> Any:
        self._prepare_estimate(sequence)
        try:
            res = super().encode(sequence, rate_point, workdir)
        finally:
            used, self._file_vectors = self._file_vectors, None
        if used is not None and self._cursor != used.shape[0]:
            raise InputError(f"IHVC: {self._cursor} frames analysed but the parameter file has {used.shape[0]}")
        res.info.update(self._encode_info)
        return res

    def analyse(self, frames: np.ndarray) -> np.ndarray:
        if self._file_vectors is None:
            self.load()
            with torch.inference_mode():
                f = self.features(self._tensor(frames), None)  # type: ignore[arg-type]
            return f.reshape(frames.shape[0], -1).float().cpu().numpy()
        n = frames.shape[0]
        rows = self._file_vectors[self._cursor:self._cursor + n]
        if rows.shape[0] != n:
            raise InputError(f"IHVC: the parameter file covers {self._file_vectors.shape[0]} frames, more were asked")
        self._cursor += n
        return rows

    def _learned_label(self) -> str:
        tr = self._checkpoint().meta.get("training") or {}
        data = tr.get("data") if isinstance(tr, dict) else None
        targets = (data or {}).get("ihvc_targets") if isinstance(data, dict) else None
        src = ", ".join(sorted({str(t.get("source")) for t in (targets or {}).values() if isinstance(t, dict)}))
        return (f"suite-learned estimator: an APPROXIMATION (not OSX) trained on targets declared as "
                f"[{src or 'unknown'}]")

    # ------------------------------------------------------------ provenance
    def provenance(self) -> dict[str, Any]:
        p = super().provenance()
        cfg = self.config()
        d = _params_dir(self.env)
        if d is None:
            est: dict[str, Any] = {"kind": "learned", "label": self._learned_label()}
        else:
            files = sorted(d.glob("*.npz")) if d.is_dir() else []

            est = {"kind": "params-file", "params_dir": str(d),
                   "files_sha256": {f.stem: sha256_file(f) for f in files},
                   "label": "user-supplied body parameters; their declared source is recorded per job "
                            "(encoder_info.params_declared_source); only source 'osx' is OSX"}
        mesh = cfg.options.get("mesh", "proxy")
        p["ihvc"] = {
            "estimator": est, "layout": cfg.options.get("layout"), "mesh": mesh,
            "mesh_fingerprint": cfg.options.get("mesh_fingerprint"),
            "vertices": ("PROXY template vertices (suite's articulated proxy, not SMPL-X)" if mesh == "proxy" else
                         "SMPL-X vertices (user's model file, betas 0) posed by the decoded semantics"),
            "key_features": "coded (one more DPCM row, predicted from zeros)"}
        return p


def _looks_like_ihvc(obj: Mapping[str, Any]) -> bool:
    g = obj.get("generator")
    return has_keys(g, "dense_motion_network.flow.weight", "dense_motion_network.spade_blocks.0.conv_0.weight") \
        and has_keys(obj.get("estimator"), "fc2.weight")


register_signature(NAME, _looks_like_ihvc)


# =========================================================================== training
class IhvcPairDataset(PairDataset):
    """PairDataset whose batches also carry the semantic vectors of both frames ("source_vec", "driving_vec").

    Targets: ``DATA/ihvc_params/<video>.npz`` in the body parameter file format
    (OSX/SMPL-X output, or PROXY files from ``python -m baselines.body_model
    proxy-targets DATA``); a horizontally flipped pair gets mirrored vectors.
    """

    def __init__(self, root: Path, image_size: int, layout: bm.SemanticLayout) -> None:
        super().__init__(root, image_size, None)
        self.layout = layout
        self.params_root = self.root / bm.PARAMS_DIR
        self._vec: dict[str, np.ndarray] = {}
        self._info: dict[str, dict[str, Any]] = {}
        for v in self.videos:  # validate every target file up front (one-line errors before training starts)
            path = self.params_root / f"{v.name}.npz"
            if not path.is_file():
                raise InputError(f"{path}: no body parameter file for training video {v.name!r}; write OSX/SMPL-X "
                                 f"parameters there, or PROXY targets with `python -m baselines.body_model "
                                 f"proxy-targets {self.root}`")
            params = bm.read_params(path)
            self._vec[v.name] = bm.params_to_vectors(params, layout)
            self._info[v.name] = {"source": params.source, "sha256": params.sha256, "frames": params.frames,
                                  "osx": params.is_osx}

    def sample(self, rng: Any, hflip: bool = False) -> dict[str, Any]:
        v = self.videos[rng.randrange(len(self.videos))]
        frames, _ = self._load(v)
        n = frames.shape[0]
        vec = self._vec[v.name]
        if vec.shape[0] < n:
            raise InputError(f"{self.params_root / (v.name + '.npz')}: parameters for {vec.shape[0]} frames, "
                             f"the video has {n}")
        if n < 2:
            raise InputError(f"{v.path}: a training video needs at least 2 frames")
        i, j = rng.sample(range(n), 2)
        src, drv, vs, vd = frames[i], frames[j], vec[i], vec[j]
        if hflip and rng.random() < 0.5:
            src, drv = src[:, ::-1], drv[:, ::-1]
            vs, vd = bm.mirror_vectors(vs, self.layout), bm.mirror_vectors(vd, self.layout)
        return {"source": np.ascontiguousarray(src), "driving": np.ascontiguousarray(drv),
                "source_vec": np.asarray(vs, np.float32), "driving_vec": np.asarray(vd, np.float32)}

    def batch(self, rng: Any, size: int, hflip: bool = False) -> dict[str, Any]:
        items = [self.sample(rng, hflip) for _ in range(size)]

        def img(key: str) -> torch.Tensor:
            return torch.from_numpy(np.stack([it[key] for it in items])).permute(0, 3, 1, 2).float() / 255.0

        return {"source": img("source"), "driving": img("driving"),
                "source_vec": torch.from_numpy(np.stack([it["source_vec"] for it in items])),
                "driving_vec": torch.from_numpy(np.stack([it["driving_vec"] for it in items]))}

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "ihvc_layout": self.layout.name, "ihvc_targets": self._info}


@RECIPES.register()
class IhvcRecipe(PyramidGanRecipe):
    """IHVC training: perceptual (VGG19 pyramid or its labelled fallback) + L1 distortion + LS-GAN with
    feature matching on the generator, L1 of the learned estimator to the target vectors."""

    name = NAME
    model = NAME
    lr_milestones = (0.6, 0.9)
    lr = 2e-4
    betas = (0.5, 0.999)
    default_weights = LOSS_WEIGHTS
    train_params = TRAIN_PARAMS

    def __init__(self, config: BaselineConfig, device: str = "cpu", weights_dir: Any = None) -> None:
        layout = _check_config(config)
        if config.options.get("mesh") == "smplx" and not config.options.get("mesh_fingerprint"):
            mesh = mesh_for(config)  # pin the user's SMPL-X file into the configuration
            d = config.to_dict()
            d["options"]["mesh_fingerprint"] = mesh.fingerprint
            config = BaselineConfig.from_dict(d)
        super().__init__(config, device, weights_dir)
        self.layout = layout

    def dataset(self, root: Path) -> Any:
        return IhvcPairDataset(root, self.config.image_size, self.layout)

    def build(self) -> dict[str, nn.Module]:
        mods = {name: build_module(name, kw) for name, kw in self.config.modules.items()}
        mods["generator"].attach_mesh(mesh_for(self.config))  # type: ignore[operator]
        return mods

    def optimizers(self) -> dict[str, list[str]]:
        return {"optimizer_generator": ["generator"], "optimizer_estimator": ["estimator"],
                "optimizer_discriminator": ["discriminator"]}

    def inference_modules(self) -> tuple[str, ...]:
        return IhvcCodec.inference_modules

    def generator_losses(self, modules: dict[str, Any], batch: dict[str, torch.Tensor], step: int
                         ) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        gen, est = modules["generator"], modules["estimator"]
        src, drv = batch["source"], batch["driving"]
        vs, vd = batch["source_vec"], batch["driving_vec"]
        w = self.weights
        terms: dict[str, torch.Tensor] = {}
        pred_vd = est(drv)
        terms["estimator"] = w["estimator"] * (pred_vd - vd).abs().mean()
        if self.config.options.get("generator_input") == "estimator":
            vs, vd = est(src).detach(), pred_vd.detach()
        out = gen(src, vs, vd)
        pred = out["prediction"]
        if sum(w["perceptual"]):
            terms["perceptual"] = self.perceptual()(pred, drv)
        if w["distortion"]:
            terms["distortion"] = w["distortion"] * (pred - drv).abs().mean()
        cache = {"prediction": pred}
        if self._gan():
            disc = modules["discriminator"]
            pyr = self.perceptual().pyramid
            real, fake = disc(pyr(drv)), disc(pyr(pred))
            terms.update(L.pyramid_gan_generator(real, fake, w, detach_real=True))
        return terms, cache

    def losses_info(self) -> dict[str, Any]:
        return {"perceptual": self.perceptual().info(), "loss_weights": self.weights,
                "distortion": "L1 in pixel space (weight: suite choice; the paper names the term only)",
                "gan": "LS-GAN + feature matching, FOMM's multi-scale patch discriminator (suite choice)",
                "estimator": "L1 to the target vectors (learned estimator: an APPROXIMATION of its targets)",
                "generator_input": self.config.options.get("generator_input"),
                "mesh": mesh_for(self.config).describe(), "layout": self.layout.name,
                "official_schedule": {k: TRAIN_PARAMS[k] for k in ("num_epochs", "epoch_milestones", "lr")},
                "lr_milestones_fraction": list(self.lr_milestones)}


def info(config: str = "demo") -> dict[str, Any]:
    """A friendly summary for `gfvc info ihvc` / docs: what is sent, the layout, the mesh, parameter counts."""
    cfg = IhvcCodec.named_configs().get(config)
    if cfg is None:
        raise ConfigError(f"IHVC has no configuration {config!r} ({', '.join(IhvcCodec.named_configs())})")
    layout = bm.get_layout(cfg.options["layout"])
    return {"codec": NAME, "values_per_frame": layout.dim, "key_frame_vector": "coded (DPCM row 0)",
            "layout": layout.name, "components": layout.names(), "mesh": cfg.options["mesh"],
            "estimators": {"params-file": f"${PARAMS_ENV}/<sequence>.npz (or Environment.extra['ihvc_params'])",
                           "learned": "module 'estimator' of the checkpoint (APPROXIMATION, not OSX)"},
            "parameters": IhvcCodec.parameter_counts(cfg), "image_size": cfg.image_size}


__all__ = [
    "SPADE",
    "IhvcCodec",
    "IhvcGenerator",
    "IhvcPairDataset",
    "IhvcRecipe",
    "SpadeDenseMotion",
    "demo_config",
    "info",
    "mesh_for",
    "reference_config",
    "splat_motion",
]
