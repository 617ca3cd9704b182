"""MRAA: Motion Representations for Articulated Animation (Siarohin et al., CVPR 2021).

Networks with the official module and parameter names of
snap-research/articulated-animation (config/ted384.yaml), so the released
``ted384.pth`` (``*-cpk-reconstruction.pth``) loads strictly:

* ``region_predictor`` (:class:`RegionPredictor`): hourglass heatmaps of 10
  regions; each region's shift is its heatmap mean and, in PCA mode (ted384),
  its affine is U·diag(√s) from the SVD of the heatmap covariance (so
  covar = A·Aᵀ);
* ``bg_predictor`` (:class:`BGMotionPredictor`): an encoder on (source,
  driving) regressing the background's 2x3 affine;
* ``generator`` (:class:`Generator`): FOMM's generator with
  ``pixelwise_flow_predictor`` (covariance heatmaps, background affine as the
  first sparse motion) and warped encoder skips.

Codec ``mraa`` sends per inter frame 66 values: per region the shift (2) and
the affine (4) of the current frame (60), then the top two rows of the 3x3
background affine ``bg_predictor(key, current)`` computed at the encoder from
the decoded key frame and the original current frame (6). The decoder takes
the key frame's regions from the decoded key frame, rebuilds every covariance
as A·Aᵀ (exact for the PCA affine) and drives the generator as the official
reconstruction does. quant_scale 256 was chosen by a measured sweep
(docs/baselines.md): the region affines need a finer step than FOMM's
keypoints for the quantisation to change the frames by < 1 grey level.
"""
from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from baselines import blocks as B
from baselines import losses as L
from baselines.base import BaselineCodec, BaselineConfig, build_from_table, config_from_yaml_sections
from baselines.blocks import official_yaml_size
from baselines.conformance import VectorModel, register_vector_model
from baselines.losses import OfficialLossRecipe
from gfvc.codec import CODECS
from gfvc.errors import ModelMismatch
from model_parts.checkpoint import has_keys, register_signature
from model_parts.training import RECIPES

NAME = "mraa"


# --------------------------------------------------------------------------- networks
def covariance_sqrt(covar: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """U, diag(√s) and U·diag(√s) of 2x2 covariances (..., 2, 2) via the SVD.

    Computed on the CPU in float32 like the official code (torch.svd on CPU),
    so the singular-vector signs (a LAPACK convention) are the official ones
    whatever the run's device.
    """
    shape = covar.shape
    flat = covar.reshape(-1, 2, 2)
    u, s, _ = torch.linalg.svd(flat.cpu(), full_matrices=False)
    u, s = u.to(covar.device), s.to(covar.device)
    d = torch.diag_embed(s ** 0.5)
    return u, d, torch.matmul(u, d).view(shape)


class RegionPredictor(nn.Module):
    """Region heatmaps -> shift (mean), covariance and affine (PCA, or FOMM-style regression)."""

    def __init__(self, block_expansion: int, num_regions: int, num_channels: int, max_features: int,
                 num_blocks: int, temperature: float, estimate_affine: bool = False, scale_factor: float = 1,
                 pca_based: bool = False, fast_svd: bool = False, pad: int = 3) -> None:
        super().__init__()
        self.predictor = B.Hourglass(block_expansion, in_features=num_channels, max_features=max_features,
                                     num_blocks=num_blocks)
        self.regions = nn.Conv2d(self.predictor.out_filters, num_regions, kernel_size=(7, 7), padding=pad)
        if estimate_affine and not pca_based:
            jac = nn.Conv2d(self.predictor.out_filters, 4, kernel_size=(7, 7), padding=pad)
            with torch.no_grad():
                if jac.weight.device.type != "meta" and jac.bias is not None:
                    jac.weight.zero_()
                    jac.bias.copy_(torch.tensor([1.0, 0.0, 0.0, 1.0]))
        self.jacobian: nn.Conv2d | None = jac if estimate_affine and not pca_based else None
        self.temperature = temperature
        self.scale_factor = scale_factor
        self.pca_based = pca_based
        self.fast_svd = fast_svd  # the official CUDA batch SVD; the CPU SVD gives the same decomposition
        if scale_factor != 1:
            self.down = B.AntiAliasInterpolation2d(num_channels, scale_factor)

    def region_moments(self, region: torch.Tensor) -> dict[str, torch.Tensor]:
        grid = B.make_coordinate_grid(region.shape[2:], region.dtype, region.device)[None, None]
        r = region.unsqueeze(-1)
        mean = (r * grid).sum(dim=(2, 3))
        out = {"shift": mean}
        if self.pca_based:
            diff = grid - mean.unsqueeze(-2).unsqueeze(-2)
            covar = torch.matmul(diff.unsqueeze(-1), diff.unsqueeze(-2)) * r.unsqueeze(-1)
            out["covar"] = covar.sum(dim=(2, 3))
        return out

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.scale_factor != 1:
            x = self.down(x)
        feature_map = self.predictor(x)
        region = B.softmax_heatmap(self.regions(feature_map), self.temperature)
        params = self.region_moments(region)
        params["heatmap"] = region
        if self.jacobian is not None:
            b, k, h, w = region.shape
            jmap = self.jacobian(feature_map).reshape(b, 1, 4, h, w)
            jac = (region.unsqueeze(2) * jmap).view(b, k, 4, -1).sum(dim=-1).view(b, k, 2, 2)
            params["affine"] = jac
            params["covar"] = torch.matmul(jac, jac.permute(0, 1, 3, 2))
        elif self.pca_based:
            u, d, sqrt = covariance_sqrt(params["covar"])
            params["affine"] = sqrt
            params["u"] = u
            params["d"] = d
        return params


BG_TYPES = ("zero", "shift", "affine", "perspective")
_BG_OUT = {"shift": [0.0, 0.0], "affine": [1.0, 0.0, 0.0, 0.0, 1.0, 0.0],
           "perspective": [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0]}


class BGMotionPredictor(nn.Module):
    """Background motion as one 3x3 matrix from an encoder on the concatenated (source, driving)."""

    def __init__(self, block_expansion: int, num_channels: int, max_features: int, num_blocks: int,
                 bg_type: str = "zero") -> None:
        super().__init__()
        if bg_type not in BG_TYPES:
            raise ModelMismatch(f"bg_type must be one of {BG_TYPES}, not {bg_type!r}")
        self.bg_type = bg_type
        if bg_type != "zero":
            self.encoder = B.Encoder(block_expansion, in_features=num_channels * 2, max_features=max_features,
                                     num_blocks=num_blocks)
            init = _BG_OUT[bg_type]
            self.fc = nn.Linear(min(max_features, block_expansion * (2 ** num_blocks)), len(init))
            with torch.no_grad():
                if self.fc.weight.device.type != "meta":
                    self.fc.weight.zero_()
                    self.fc.bias.copy_(torch.tensor(init))

    def forward(self, source_image: torch.Tensor, driving_image: torch.Tensor) -> torch.Tensor:
        bs = source_image.shape[0]
        out = torch.eye(3, dtype=source_image.dtype, device=source_image.device).unsqueeze(0).repeat(bs, 1, 1)
        if self.bg_type == "zero":
            return out
        p = self.fc(self.encoder(torch.cat([source_image, driving_image], dim=1))[-1].mean(dim=(2, 3)))
        if self.bg_type == "shift":
            out[:, :2, 2] = p
        elif self.bg_type == "affine":
            out[:, :2, :] = p.view(bs, 2, 3)
        else:
            out[:, :2, :] = p[:, :6].view(bs, 2, 3)
            out[:, 2, :2] = p[:, 6:].view(bs, 2)
        return out


class PixelwiseFlowPredictor(nn.Module):
    """Dense flow + occlusion from region motions (covariance heatmaps, background affine first)."""

    def __init__(self, block_expansion: int, num_blocks: int, max_features: int, num_regions: int,
                 num_channels: int, estimate_occlusion_map: bool = False, scale_factor: float = 1,
                 region_var: float = 0.01, use_covar_heatmap: bool = False, use_deformed_source: bool = True,
                 revert_axis_swap: bool = False) -> None:
        super().__init__()
        self.hourglass = B.Hourglass(block_expansion,
                                     in_features=(num_regions + 1) * (num_channels * int(use_deformed_source) + 1),
                                     max_features=max_features, num_blocks=num_blocks)
        self.mask = nn.Conv2d(self.hourglass.out_filters, num_regions + 1, kernel_size=(7, 7), padding=(3, 3))
        self.occlusion = (nn.Conv2d(self.hourglass.out_filters, 1, kernel_size=(7, 7), padding=(3, 3))
                          if estimate_occlusion_map else None)
        self.num_regions = num_regions
        self.scale_factor = scale_factor
        self.region_var = region_var
        self.use_covar_heatmap = use_covar_heatmap
        self.use_deformed_source = use_deformed_source
        self.revert_axis_swap = revert_axis_swap
        if scale_factor != 1:
            self.down = B.AntiAliasInterpolation2d(num_channels, scale_factor)

    def heatmap_representation(self, size: tuple[int, int], drv: Mapping[str, torch.Tensor],
                               src: Mapping[str, torch.Tensor]) -> torch.Tensor:
        var_d = drv["covar"] if self.use_covar_heatmap else self.region_var
        var_s = src["covar"] if self.use_covar_heatmap else self.region_var
        heat = B.kp2gaussian(drv["shift"], size, var_d) - B.kp2gaussian(src["shift"], size, var_s)
        zeros = heat.new_zeros(heat.shape[0], 1, *size)
        return torch.cat([zeros, heat], dim=1).unsqueeze(2)

    def sparse_motions(self, size: tuple[int, int], drv: Mapping[str, torch.Tensor], src: Mapping[str, torch.Tensor],
                       bg_params: torch.Tensor | None = None) -> torch.Tensor:
        h, w = size
        shift_s = src["shift"]
        bs, r = shift_s.shape[:2]
        ident = B.make_coordinate_grid((h, w), shift_s.dtype, shift_s.device).view(1, 1, h, w, 2)
        grid = ident - drv["shift"].view(bs, r, 1, 1, 2)
        if "affine" in drv:
            affine = torch.matmul(src["affine"], torch.inverse(drv["affine"]))
            if self.revert_axis_swap:
                affine = affine * torch.sign(affine[:, :, 0:1, 0:1])
            affine = affine.unsqueeze(-3).unsqueeze(-3).expand(bs, r, h, w, 2, 2)
            grid = torch.matmul(affine, grid.unsqueeze(-1)).squeeze(-1)
        to_source = grid + shift_s.view(bs, r, 1, 1, 2)
        bg = ident.expand(bs, 1, h, w, 2)
        if bg_params is not None:
            bg = torch.matmul(bg_params.view(bs, 1, 1, 1, 3, 3), B.to_homogeneous(bg).unsqueeze(-1)).squeeze(-1)
            bg = B.from_homogeneous(bg)
        return torch.cat([bg, to_source], dim=1)

    def deformed_sources(self, image: torch.Tensor, motions: torch.Tensor) -> torch.Tensor:
        bs, c, h, w = image.shape
        k1 = self.num_regions + 1
        rep = image.unsqueeze(1).expand(bs, k1, c, h, w).reshape(bs * k1, c, h, w)
        return F.grid_sample(rep, motions.reshape(bs * k1, h, w, 2), align_corners=False).view(bs, k1, c, h, w)

    def forward(self, source_image: torch.Tensor, driving_region_params: Mapping[str, torch.Tensor],
                source_region_params: Mapping[str, torch.Tensor], bg_params: torch.Tensor | None = None
                ) -> dict[str, torch.Tensor]:
        if self.scale_factor != 1:
            source_image = self.down(source_image)
        bs, _, h, w = source_image.shape
        heat = self.heatmap_representation((h, w), driving_region_params, source_region_params)
        motions = self.sparse_motions((h, w), driving_region_params, source_region_params, bg_params)
        deformed = self.deformed_sources(source_image, motions)
        inp = torch.cat([heat, deformed], dim=2) if self.use_deformed_source else heat
        prediction = self.hourglass(inp.view(bs, -1, h, w))
        mask = F.softmax(self.mask(prediction), dim=1).unsqueeze(2)
        flow = (motions.permute(0, 1, 4, 2, 3) * mask).sum(dim=1).permute(0, 2, 3, 1)
        out = {"optical_flow": flow}
        if self.occlusion is not None:
            out["occlusion_map"] = torch.sigmoid(self.occlusion(prediction))
        return out


class Generator(nn.Module):
    """FOMM's generator with region motion and (``skips``) warped, occlusion-blended encoder skips."""

    def __init__(self, num_channels: int, num_regions: int, block_expansion: int, max_features: int,
                 num_down_blocks: int, num_bottleneck_blocks: int,
                 pixelwise_flow_predictor_params: dict[str, Any] | None = None, skips: bool = False,
                 revert_axis_swap: bool = True) -> None:
        super().__init__()
        self.pixelwise_flow_predictor = (
            PixelwiseFlowPredictor(num_regions=num_regions, num_channels=num_channels,
                                   revert_axis_swap=revert_axis_swap, **pixelwise_flow_predictor_params)
            if pixelwise_flow_predictor_params is not None else None)
        self.first, self.down_blocks, self.up_blocks, self.bottleneck, self.final = B.johnson_autoencoder(
            num_channels, block_expansion, max_features, num_down_blocks, num_bottleneck_blocks)
        self.num_channels = num_channels
        self.skips = skips

    @staticmethod
    def apply_optical(previous: torch.Tensor | None, skip: torch.Tensor,
                      motion: Mapping[str, torch.Tensor] | None) -> torch.Tensor:
        """Warp ``skip`` by the flow; blend with ``previous`` by the occlusion map (1 = visible)."""
        if motion is None:
            return previous if previous is not None else skip
        skip = B.deform_input(skip, motion["optical_flow"])
        occ = motion.get("occlusion_map")
        if occ is None:
            return skip
        if occ.shape[2:] != skip.shape[2:]:
            occ = F.interpolate(occ, size=skip.shape[2:], mode="bilinear", align_corners=False)
        return skip * occ + previous * (1 - occ) if previous is not None else skip * occ

    def forward(self, source_image: torch.Tensor, driving_region_params: Mapping[str, torch.Tensor],
                source_region_params: Mapping[str, torch.Tensor], bg_params: torch.Tensor | None = None
                ) -> dict[str, torch.Tensor]:
        out = self.first(source_image)
        skips = [out]
        for block in self.down_blocks:
            out = block(out)
            skips.append(out)
        res: dict[str, torch.Tensor] = {}
        motion = None
        if self.pixelwise_flow_predictor is not None:
            motion = self.pixelwise_flow_predictor(source_image=source_image,
                                                   driving_region_params=driving_region_params,
                                                   source_region_params=source_region_params, bg_params=bg_params)
            res["deformed"] = B.deform_input(source_image, motion["optical_flow"])
            if "occlusion_map" in motion:
                res["occlusion_map"] = motion["occlusion_map"]
        out = self.apply_optical(None, out, motion)
        out = self.bottleneck(out)
        for i, block in enumerate(self.up_blocks):
            if self.skips:
                out = self.apply_optical(out, skips[-(i + 1)], motion)
            out = block(out)
        if self.skips:
            out = self.apply_optical(out, skips[0], motion)
        out = torch.sigmoid(self.final(out))
        if self.skips:
            out = self.apply_optical(out, source_image, motion)
        res["prediction"] = out
        return res


MODULES: dict[str, Callable[..., nn.Module]] = {
    "region_predictor": RegionPredictor, "bg_predictor": BGMotionPredictor, "generator": Generator}


def build_module(name: str, kwargs: Mapping[str, Any]) -> nn.Module:
    return build_from_table("MRAA", MODULES, name, kwargs)


def modules_from_model_params(mp: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Official ``model_params`` (ted384.yaml) -> constructor kwargs as in the official run.py."""
    return copy.deepcopy({
        "region_predictor": {"num_regions": mp["num_regions"], "num_channels": mp["num_channels"],
                             "estimate_affine": mp["estimate_affine"], **mp["region_predictor_params"]},
        "bg_predictor": {"num_channels": mp["num_channels"], **mp["bg_predictor_params"]},
        "generator": {"num_regions": mp["num_regions"], "num_channels": mp["num_channels"],
                      "revert_axis_swap": mp["revert_axis_swap"], **mp["generator_params"]},
    })


OFFICIAL_MODEL_PARAMS: dict[str, Any] = {
    "num_regions": 10, "num_channels": 3, "estimate_affine": True, "revert_axis_swap": True,
    "bg_predictor_params": {"block_expansion": 32, "max_features": 1024, "num_blocks": 5, "bg_type": "affine"},
    "region_predictor_params": {"temperature": 0.1, "block_expansion": 32, "max_features": 1024,
                                "scale_factor": 0.25, "num_blocks": 5, "pca_based": True, "pad": 0,
                                "fast_svd": False},
    "generator_params": {"block_expansion": 64, "max_features": 512, "num_down_blocks": 2,
                         "num_bottleneck_blocks": 6, "skips": True,
                         "pixelwise_flow_predictor_params": {"block_expansion": 64, "max_features": 1024,
                                                             "num_blocks": 5, "scale_factor": 0.25,
                                                             "use_deformed_source": True, "use_covar_heatmap": True,
                                                             "estimate_occlusion_map": True}},
}

DEMO_MODEL_PARAMS: dict[str, Any] = {
    "num_regions": 10, "num_channels": 3, "estimate_affine": True, "revert_axis_swap": True,
    "bg_predictor_params": {"block_expansion": 8, "max_features": 64, "num_blocks": 5, "bg_type": "affine"},
    "region_predictor_params": {"temperature": 0.1, "block_expansion": 16, "max_features": 128,
                                "scale_factor": 0.25, "num_blocks": 4, "pca_based": True, "pad": 0,
                                "fast_svd": False},
    "generator_params": {"block_expansion": 16, "max_features": 128, "num_down_blocks": 2,
                         "num_bottleneck_blocks": 3, "skips": True,
                         "pixelwise_flow_predictor_params": {"block_expansion": 16, "max_features": 128,
                                                             "num_blocks": 4, "scale_factor": 0.25,
                                                             "use_deformed_source": True, "use_covar_heatmap": True,
                                                             "estimate_occlusion_map": True}},
}


# --------------------------------------------------------------------------- features <-> region params
def params_to_features(regions: Mapping[str, torch.Tensor], bg: torch.Tensor) -> torch.Tensor:
    """(N, 6R + 6): shifts (R x 2), affines (R x 2 x 2), background affine top rows (2 x 3)."""
    n = regions["shift"].shape[0]
    return torch.cat([regions["shift"].reshape(n, -1), regions["affine"].reshape(n, -1),
                      bg[:, :2, :].reshape(n, 6)], dim=1)


def features_to_params(f: torch.Tensor, num_regions: int) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Inverse of :func:`params_to_features`; covar = A·Aᵀ, bg = [[6 values], [0, 0, 1]]."""
    n, r = f.shape[0], num_regions
    shift = f[:, :2 * r].reshape(n, r, 2)
    affine = f[:, 2 * r:6 * r].reshape(n, r, 2, 2)
    bg = torch.cat([f[:, 6 * r:6 * r + 6].reshape(n, 2, 3),
                    torch.tensor([0.0, 0.0, 1.0], dtype=f.dtype, device=f.device).expand(n, 1, 3)], dim=1)
    return {"shift": shift, "affine": affine, "covar": torch.matmul(affine, affine.transpose(-1, -2))}, bg


# --------------------------------------------------------------------------- codec
@CODECS.register()
class MRAACodec(BaselineCodec):
    name = NAME
    description = ("MRAA (Siarohin et al. 2021): VVC key frame + 10 regions (shift + affine, 60 values) and the "
                   "background affine (6) per inter frame")
    feature_dim = 66
    quant_scale = 256.0  # measured sweep (docs/baselines.md): quantisation error < 1 grey level
    inference_modules = ("region_predictor", "bg_predictor", "generator")

    @classmethod
    def official_config(cls) -> BaselineConfig:
        return BaselineConfig(model=NAME, image_size=384, modules=modules_from_model_params(OFFICIAL_MODEL_PARAMS),
                              name="official")

    @classmethod
    def named_configs(cls) -> dict[str, BaselineConfig]:
        """official (ted384.yaml), vox256 (config/vox256.yaml: 256 px, region ``pad`` left at its default 3),
        demo (small widths, 128 px)."""
        vox = copy.deepcopy(OFFICIAL_MODEL_PARAMS)
        del vox["region_predictor_params"]["pad"]
        return {"official": cls.official_config(),
                "vox256": BaselineConfig(model=NAME, image_size=256, modules=modules_from_model_params(vox),
                                         name="vox256"),
                "demo": BaselineConfig(model=NAME, image_size=128,
                                       modules=modules_from_model_params(DEMO_MODEL_PARAMS), name="demo")}

    @classmethod
    def config_from_official_yaml(cls, data: dict[str, Any]) -> BaselineConfig:
        return config_from_yaml_sections(
            NAME, data, modules_from_model_params,
            lambda d: ((d.get("dataset_params") or {}).get("frame_shape") or [official_yaml_size(d)])[0],
            "articulated-animation config (model_params.num_regions/region_predictor_params/... expected)")

    @classmethod
    def build_modules(cls, cfg: BaselineConfig) -> dict[str, nn.Module]:
        rp, bg = cfg.modules.get("region_predictor", {}), cfg.modules.get("bg_predictor", {})
        if int(rp.get("num_regions", 10)) != 10 or not rp.get("estimate_affine") or bg.get("bg_type") != "affine":
            raise ModelMismatch(f"codec mraa sends 10 regions with affines and a background affine (66 values); "
                                f"configuration {cfg.name!r} has num_regions={rp.get('num_regions')} "
                                f"estimate_affine={rp.get('estimate_affine')} bg_type={bg.get('bg_type')!r}")
        return {name: build_module(name, kw) for name, kw in cfg.modules.items()}

    def features(self, frames: torch.Tensor, key: torch.Tensor) -> torch.Tensor:
        assert self.nets is not None
        regions = self.nets["region_predictor"](frames)
        bg = self.nets["bg_predictor"](key.expand(frames.shape[0], -1, -1, -1), frames)
        return params_to_features(regions, bg)

    def render(self, key: torch.Tensor, key_features: torch.Tensor, features: torch.Tensor
               ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        assert self.nets is not None
        n = features.shape[0]
        src, _ = features_to_params(key_features[None], 10)
        src = {k: v.expand(n, *v.shape[1:]) for k, v in src.items()}
        drv, bg = features_to_params(features, 10)
        out = self.nets["generator"](key.expand(n, -1, -1, -1), driving_region_params=drv,
                                     source_region_params=src, bg_params=bg)
        return out["prediction"], {}


def _looks_like_mraa(obj: Mapping[str, Any]) -> bool:
    # MTTF (a descendant) also has region_predictor.regions and pixelwise_flow_predictor.mask, but
    # no bg_predictor and extra region coefficient heads
    rp = obj.get("region_predictor")
    return (has_keys(rp, "regions.weight") and isinstance(obj.get("bg_predictor"), Mapping)
            and not any(str(k).startswith(("coefficients.", "bias.")) for k in rp)  # type: ignore[union-attr]
            and has_keys(obj.get("generator"), "pixelwise_flow_predictor.mask.weight"))


register_signature(NAME, _looks_like_mraa)


# --------------------------------------------------------------------------- conformance
@register_vector_model(NAME)
class MRAAVectors(VectorModel):
    """Official reconstruction path: regions of source and driving, bg affine, generator, its flow dict."""

    module_builder = staticmethod(build_module)

    def run(self, modules: dict[str, Any], inputs: dict[str, Any], meta: dict[str, Any]) -> dict[str, Any]:
        rp, bgp, gen = modules["region_predictor"], modules["bg_predictor"], modules["generator"]
        src, drv = inputs["source"], inputs["driving"]
        p_s, p_d = rp(src), rp(drv)
        bg = bgp(src, drv)
        captured: dict[str, Any] = {}
        hook = gen.pixelwise_flow_predictor.register_forward_hook(lambda m, a, o: captured.update(o))
        try:
            out = gen(src, driving_region_params=p_d, source_region_params=p_s, bg_params=bg)
        finally:
            hook.remove()
        res: dict[str, Any] = {"bg_params": bg}
        for prefix, d in (("source_region_params", p_s), ("driving_region_params", p_d),
                          ("pixelwise_flow", captured), ("generator", out)):
            res.update({f"{prefix}.{k}": v for k, v in d.items()})
        return res


# --------------------------------------------------------------------------- training
MRAA_LOSS_WEIGHTS: dict[str, Any] = {"perceptual": [10, 10, 10, 10, 10], "equivariance_shift": 10,
                                     "equivariance_affine": 10}
MRAA_TRAIN_PARAMS: dict[str, Any] = {"num_epochs": 100, "epoch_milestones": [60, 90], "lr": 2e-4,
                                     "scales": [1, 0.5, 0.25, 0.125],
                                     "transform_params": {"sigma_affine": 0.05, "sigma_tps": 0.005, "points_tps": 5}}


@RECIPES.register()
class MRAARecipe(OfficialLossRecipe):
    """MRAA reconstruction training (modules/model.py ReconstructionModel): perceptual pyramid,
    equivariance of region shifts and affines under a random TPS (axis swaps reverted); no GAN.
    One optimiser (``optimizer_reconstruction``) over generator, region and background predictors."""

    name = NAME
    model = NAME
    lr_milestones = (0.6, 0.9)
    default_weights = MRAA_LOSS_WEIGHTS
    train_params = MRAA_TRAIN_PARAMS

    def build(self) -> dict[str, nn.Module]:
        return MRAACodec.build_modules(self.config)

    def optimizers(self) -> dict[str, list[str]]:
        return {"optimizer_reconstruction": ["generator", "region_predictor", "bg_predictor"]}

    def generator_losses(self, modules: dict[str, Any], batch: dict[str, torch.Tensor], step: int
                         ) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        rp, gen = modules["region_predictor"], modules["generator"]
        src, drv = batch["source"], batch["driving"]
        p_s, p_d = rp(src), rp(drv)
        bg = modules["bg_predictor"](src, drv)
        out = gen(src, driving_region_params=p_d, source_region_params=p_s, bg_params=bg)
        w = self.weights
        terms: dict[str, torch.Tensor] = {}
        if sum(w["perceptual"]):
            terms["perceptual"] = self.perceptual()(out["prediction"], drv)
        if w["equivariance_shift"] or w["equivariance_affine"]:
            t = self.transform(drv.shape[0], "fomm")
            p_t = rp(t.transform_frame(drv))
            if w["equivariance_shift"]:
                terms["equivariance_shift"] = w["equivariance_shift"] * L.equivariance_value(p_d["shift"], t,
                                                                                            p_t["shift"])
            if w["equivariance_affine"]:
                revert = bool(gen.pixelwise_flow_predictor is not None
                              and gen.pixelwise_flow_predictor.revert_axis_swap)
                terms["equivariance_affine"] = w["equivariance_affine"] * L.equivariance_jacobian(
                    p_d["affine"], t, p_t["shift"], p_t["affine"], revert_axis_swap=revert)
        return terms, {}
