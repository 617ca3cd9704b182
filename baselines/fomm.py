"""FOMM: First Order Motion Model (Siarohin et al., NeurIPS 2019), the GFVC software's face codec.

Networks with the official module and parameter names of
AliaksandrSiarohin/first-order-model (config/vox-256.yaml), so the released
``vox-cpk.pth.tar`` loads strictly into them:

* ``kp_detector`` (:class:`KPDetector`): hourglass on the 1/4 anti-aliased
  image, spatial-softmax heatmaps -> 10 keypoints in [-1, 1] (their heatmap
  mean) and a 2x2 jacobian per keypoint (heatmap-weighted jacobian maps);
* ``generator`` (:class:`OcclusionAwareGenerator`): the dense motion network
  mixes per-keypoint first-order (affine) motions into one flow and an
  occlusion map; the encoded key frame is warped, masked and decoded;
* ``discriminator`` (:class:`baselines.blocks.MultiScaleDiscriminator`,
  trained only in the GAN configs).

Codec ``fomm`` sends per inter frame the keypoint values (10 x 2) then the
jacobians (10 x 2 x 2) of the current frame, 60 values, the GFVC software's
order (FOMM_Encoder.py: "20+40"), DPCM against the previous reconstruction and
quantised with the GFVC software's scale 64. The decoder detects the key
frame's keypoints from the decoded key frame and drives the generator with
(key frame, kp_source = key keypoints, kp_driving = decoded keypoints),
absolute motion as in the GFVC software's decoder.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from baselines import blocks as B
from baselines import losses as L
from baselines.base import (
    BaselineCodec,
    BaselineConfig,
    build_from_table,
    config_from_yaml_sections,
    modules_from_common_params,
)
from baselines.conformance import VectorModel, register_vector_model
from baselines.losses import PyramidGanRecipe
from gfvc.codec import CODECS
from gfvc.errors import ModelMismatch
from model_parts.checkpoint import has_keys, register_signature
from model_parts.training import RECIPES

NAME = "fomm"


# --------------------------------------------------------------------------- networks
class KPDetector(nn.Module):
    """Keypoints (value (B,K,2)) and optional jacobians (B,K,2,2) from heatmaps of an hourglass."""

    def __init__(self, block_expansion: int, num_kp: int, num_channels: int, max_features: int, num_blocks: int,
                 temperature: float, estimate_jacobian: bool = False, scale_factor: float = 1,
                 single_jacobian_map: bool = False, pad: int = 0) -> None:
        super().__init__()
        self.predictor = B.Hourglass(block_expansion, in_features=num_channels, max_features=max_features,
                                     num_blocks=num_blocks)
        self.kp = nn.Conv2d(self.predictor.out_filters, num_kp, kernel_size=(7, 7), padding=pad)
        if estimate_jacobian:
            self.num_jacobian_maps = 1 if single_jacobian_map else num_kp
            jac = nn.Conv2d(self.predictor.out_filters, 4 * self.num_jacobian_maps, kernel_size=(7, 7), padding=pad)
            # identity jacobians at initialisation (official init)
            with torch.no_grad():
                if jac.weight.device.type != "meta" and jac.bias is not None:
                    jac.weight.zero_()
                    jac.bias.copy_(torch.tensor([1.0, 0.0, 0.0, 1.0] * self.num_jacobian_maps))
        self.jacobian: nn.Conv2d | None = jac if estimate_jacobian else None
        self.temperature = temperature
        self.scale_factor = scale_factor
        if scale_factor != 1:
            self.down = B.AntiAliasInterpolation2d(num_channels, scale_factor)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.scale_factor != 1:
            x = self.down(x)
        feature_map = self.predictor(x)
        heatmap = B.softmax_heatmap(self.kp(feature_map), self.temperature)
        out = {"value": B.heatmap_mean(heatmap)}
        if self.jacobian is not None:
            b, k, h, w = heatmap.shape
            jmap = self.jacobian(feature_map).reshape(b, self.num_jacobian_maps, 4, h, w)
            jac = (heatmap.unsqueeze(2) * jmap).view(b, k, 4, -1).sum(dim=-1)
            out["jacobian"] = jac.view(b, k, 2, 2)
        return out


class DenseMotionNetwork(nn.Module):
    """Mixes the background identity and K first-order keypoint motions into one dense flow (Eq. 4-7)."""

    def __init__(self, block_expansion: int, num_blocks: int, max_features: int, num_kp: int, num_channels: int,
                 estimate_occlusion_map: bool = False, scale_factor: float = 1, kp_variance: float = 0.01) -> None:
        super().__init__()
        self.hourglass = B.Hourglass(block_expansion, in_features=(num_kp + 1) * (num_channels + 1),
                                     max_features=max_features, num_blocks=num_blocks)
        self.mask = nn.Conv2d(self.hourglass.out_filters, num_kp + 1, kernel_size=(7, 7), padding=(3, 3))
        self.occlusion = (nn.Conv2d(self.hourglass.out_filters, 1, kernel_size=(7, 7), padding=(3, 3))
                          if estimate_occlusion_map else None)
        self.num_kp = num_kp
        self.scale_factor = scale_factor
        self.kp_variance = kp_variance
        if scale_factor != 1:
            self.down = B.AntiAliasInterpolation2d(num_channels, scale_factor)

    def heatmap_representation(self, size: tuple[int, int], kp_driving: Mapping[str, torch.Tensor],
                               kp_source: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """(B, K+1, 1, h, w): driving minus source Gaussians, zero background channel first."""
        heat = (B.kp2gaussian(kp_driving["value"], size, self.kp_variance)
                - B.kp2gaussian(kp_source["value"], size, self.kp_variance))
        zeros = heat.new_zeros(heat.shape[0], 1, *size)
        return torch.cat([zeros, heat], dim=1).unsqueeze(2)

    def sparse_motions(self, size: tuple[int, int], kp_driving: Mapping[str, torch.Tensor],
                       kp_source: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """(B, K+1, h, w, 2): identity, then z -> kp_s + J_s J_d^-1 (z - kp_d) per keypoint."""
        h, w = size
        src = kp_source["value"]
        bs = src.shape[0]
        ident = B.make_coordinate_grid((h, w), src.dtype, src.device).view(1, 1, h, w, 2)
        grid = ident - kp_driving["value"].view(bs, self.num_kp, 1, 1, 2)
        if "jacobian" in kp_driving:
            jac = torch.matmul(kp_source["jacobian"], torch.inverse(kp_driving["jacobian"]))
            jac = jac.unsqueeze(-3).unsqueeze(-3).expand(bs, self.num_kp, h, w, 2, 2)
            grid = torch.matmul(jac, grid.unsqueeze(-1)).squeeze(-1)
        to_source = grid + src.view(bs, self.num_kp, 1, 1, 2)
        return torch.cat([ident.expand(bs, 1, h, w, 2), to_source], dim=1)

    def deformed_sources(self, image: torch.Tensor, motions: torch.Tensor) -> torch.Tensor:
        """(B, K+1, C, h, w): the image warped by each sparse motion."""
        bs, c, h, w = image.shape
        k1 = self.num_kp + 1
        rep = image.unsqueeze(1).expand(bs, k1, c, h, w).reshape(bs * k1, c, h, w)
        out = F.grid_sample(rep, motions.reshape(bs * k1, h, w, 2), align_corners=False)
        return out.view(bs, k1, c, h, w)

    def forward(self, source_image: torch.Tensor, kp_driving: Mapping[str, torch.Tensor],
                kp_source: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        if self.scale_factor != 1:
            source_image = self.down(source_image)
        bs, _, h, w = source_image.shape
        heat = self.heatmap_representation((h, w), kp_driving, kp_source)
        motions = self.sparse_motions((h, w), kp_driving, kp_source)
        deformed = self.deformed_sources(source_image, motions)
        out = {"sparse_deformed": deformed}
        prediction = self.hourglass(torch.cat([heat, deformed], dim=2).view(bs, -1, h, w))
        mask = F.softmax(self.mask(prediction), dim=1)
        out["mask"] = mask
        flow = (motions.permute(0, 1, 4, 2, 3) * mask.unsqueeze(2)).sum(dim=1)
        out["deformation"] = flow.permute(0, 2, 3, 1)
        if self.occlusion is not None:
            out["occlusion_map"] = torch.sigmoid(self.occlusion(prediction))
        return out


class OcclusionAwareGenerator(nn.Module):
    """Encoder -> warp by the dense motion -> occlusion mask -> residual bottleneck -> decoder (Johnson-style)."""

    def __init__(self, num_channels: int, num_kp: int, block_expansion: int, max_features: int,
                 num_down_blocks: int, num_bottleneck_blocks: int, estimate_occlusion_map: bool = False,
                 dense_motion_params: dict[str, Any] | None = None, estimate_jacobian: bool = False) -> None:
        super().__init__()
        self.dense_motion_network = (DenseMotionNetwork(num_kp=num_kp, num_channels=num_channels,
                                                        estimate_occlusion_map=estimate_occlusion_map,
                                                        **dense_motion_params)
                                     if dense_motion_params is not None else None)
        self.first, self.down_blocks, self.up_blocks, self.bottleneck, self.final = B.johnson_autoencoder(
            num_channels, block_expansion, max_features, num_down_blocks, num_bottleneck_blocks)
        self.estimate_occlusion_map = estimate_occlusion_map
        self.num_channels = num_channels

    def forward(self, source_image: torch.Tensor, kp_driving: Mapping[str, torch.Tensor],
                kp_source: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        out = self.first(source_image)
        for block in self.down_blocks:
            out = block(out)
        res: dict[str, torch.Tensor] = {}
        if self.dense_motion_network is not None:
            motion = self.dense_motion_network(source_image=source_image, kp_driving=kp_driving, kp_source=kp_source)
            res["mask"] = motion["mask"]
            res["sparse_deformed"] = motion["sparse_deformed"]
            out = B.deform_input(out, motion["deformation"])
            occ = motion.get("occlusion_map")
            if occ is not None:
                res["occlusion_map"] = occ
                if occ.shape[2:] != out.shape[2:]:
                    occ = F.interpolate(occ, size=out.shape[2:], mode="bilinear", align_corners=False)
                out = out * occ
            res["deformed"] = B.deform_input(source_image, motion["deformation"])
        out = self.bottleneck(out)
        for block in self.up_blocks:
            out = block(out)
        res["prediction"] = torch.sigmoid(self.final(out))
        return res


MODULES: dict[str, Callable[..., nn.Module]] = {
    "kp_detector": KPDetector, "generator": OcclusionAwareGenerator, "discriminator": B.MultiScaleDiscriminator}


def build_module(name: str, kwargs: Mapping[str, Any]) -> nn.Module:
    """One official FOMM module from its official constructor kwargs."""
    return build_from_table("FOMM", MODULES, name, kwargs)


# Official ``model_params`` (vox-256.yaml) -> {module: constructor kwargs} as in the official run.py.
modules_from_model_params = modules_from_common_params


OFFICIAL_MODEL_PARAMS: dict[str, Any] = {
    "common_params": {"num_kp": 10, "num_channels": 3, "estimate_jacobian": True},
    "kp_detector_params": {"temperature": 0.1, "block_expansion": 32, "max_features": 1024, "scale_factor": 0.25,
                           "num_blocks": 5},
    "generator_params": {"block_expansion": 64, "max_features": 512, "num_down_blocks": 2,
                         "num_bottleneck_blocks": 6, "estimate_occlusion_map": True,
                         "dense_motion_params": {"block_expansion": 64, "max_features": 1024, "num_blocks": 5,
                                                 "scale_factor": 0.25}},
    "discriminator_params": {"scales": [1], "block_expansion": 32, "max_features": 512, "num_blocks": 4, "sn": True},
}

# Small widths for the 128x128 CPU demo checkpoint (same architecture, same 60 values per frame).
DEMO_MODEL_PARAMS: dict[str, Any] = {
    "common_params": {"num_kp": 10, "num_channels": 3, "estimate_jacobian": True},
    "kp_detector_params": {"temperature": 0.1, "block_expansion": 16, "max_features": 128, "scale_factor": 0.25,
                           "num_blocks": 4},
    "generator_params": {"block_expansion": 16, "max_features": 128, "num_down_blocks": 2,
                         "num_bottleneck_blocks": 3, "estimate_occlusion_map": True,
                         "dense_motion_params": {"block_expansion": 16, "max_features": 128, "num_blocks": 4,
                                                 "scale_factor": 0.25}},
    "discriminator_params": {"scales": [1], "block_expansion": 16, "max_features": 128, "num_blocks": 4, "sn": True},
}


def kp_to_features(kp: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """{'value' (N,K,2), 'jacobian' (N,K,2,2)} -> (N, 6K): values then jacobians (GFVC order)."""
    n = kp["value"].shape[0]
    parts = [kp["value"].reshape(n, -1)]
    if "jacobian" in kp:
        parts.append(kp["jacobian"].reshape(n, -1))
    return torch.cat(parts, dim=1)


def features_to_kp(f: torch.Tensor, num_kp: int, jacobian: bool) -> dict[str, torch.Tensor]:
    n = f.shape[0]
    kp = {"value": f[:, :2 * num_kp].reshape(n, num_kp, 2)}
    if jacobian:
        kp["jacobian"] = f[:, 2 * num_kp:6 * num_kp].reshape(n, num_kp, 2, 2)
    return kp


# --------------------------------------------------------------------------- codec
@CODECS.register()
class FOMMCodec(BaselineCodec):
    name = NAME
    description = ("FOMM (Siarohin et al. 2019): VVC key frame + 10 keypoints and 10 jacobians (60 values) "
                   "per inter frame, GFVC software scale 64")
    feature_dim = 60
    quant_scale = 64.0
    inference_modules = ("kp_detector", "generator")

    @classmethod
    def official_config(cls) -> BaselineConfig:
        return BaselineConfig(model=NAME, image_size=256, modules=modules_from_model_params(OFFICIAL_MODEL_PARAMS),
                              name="official")

    @classmethod
    def named_configs(cls) -> dict[str, BaselineConfig]:
        return {"official": cls.official_config(),
                "demo": BaselineConfig(model=NAME, image_size=128,
                                       modules=modules_from_model_params(DEMO_MODEL_PARAMS), name="demo")}

    @classmethod
    def config_from_official_yaml(cls, data: dict[str, Any]) -> BaselineConfig:
        return config_from_yaml_sections(
            NAME, data, modules_from_model_params,
            lambda d: ((d.get("dataset_params") or {}).get("frame_shape") or [256])[0],
            "first-order-model config (model_params.common_params/kp_detector_params/generator_params expected)")

    @classmethod
    def build_modules(cls, cfg: BaselineConfig) -> dict[str, nn.Module]:
        _check_config(cfg)
        return {name: build_module(name, kw) for name, kw in cfg.modules.items()}

    def _kp_shape(self) -> tuple[int, bool]:
        kw = self.config().modules["kp_detector"]
        return int(kw["num_kp"]), bool(kw.get("estimate_jacobian", False))

    def features(self, frames: torch.Tensor, key: torch.Tensor) -> torch.Tensor:
        assert self.nets is not None
        return kp_to_features(self.nets["kp_detector"](frames))

    def render(self, key: torch.Tensor, key_features: torch.Tensor, features: torch.Tensor
               ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        assert self.nets is not None
        k, jac = self._kp_shape()
        n = features.shape[0]
        kp_src = {name: v.expand(n, *v.shape[1:]) for name, v in features_to_kp(key_features[None], k, jac).items()}
        kp_drv = features_to_kp(features, k, jac)
        out = self.nets["generator"](key.expand(n, -1, -1, -1), kp_driving=kp_drv, kp_source=kp_src)
        return out["prediction"], {}


def _check_config(cfg: BaselineConfig) -> None:
    kw = cfg.modules.get("kp_detector", {})
    if int(kw.get("num_kp", 10)) != 10 or not kw.get("estimate_jacobian", False):
        raise ModelMismatch(f"codec fomm sends 10 keypoints with jacobians (60 values); configuration "
                            f"{cfg.name!r} has num_kp={kw.get('num_kp')} "
                            f"estimate_jacobian={kw.get('estimate_jacobian')}")


def _looks_like_fomm(obj: Mapping[str, Any]) -> bool:
    return (has_keys(obj.get("kp_detector"), "predictor.encoder.down_blocks.0.conv.weight", "kp.weight")
            and has_keys(obj.get("generator"), "dense_motion_network.mask.weight"))


register_signature(NAME, _looks_like_fomm)


# --------------------------------------------------------------------------- conformance
@register_vector_model(NAME)
class FOMMVectors(VectorModel):
    """Official reconstruction path: kp of source and driving, generator, its dense-motion dict."""

    module_builder = staticmethod(build_module)

    def run(self, modules: dict[str, Any], inputs: dict[str, Any], meta: dict[str, Any]) -> dict[str, Any]:
        kd, gen = modules["kp_detector"], modules["generator"]
        src, drv = inputs["source"], inputs["driving"]
        kp_s, kp_d = kd(src), kd(drv)
        captured: dict[str, Any] = {}
        hook = gen.dense_motion_network.register_forward_hook(lambda m, a, o: captured.update(o))
        try:
            out = gen(src, kp_driving=kp_d, kp_source=kp_s)
        finally:
            hook.remove()
        res: dict[str, Any] = {}
        for prefix, d in (("kp_source", kp_s), ("kp_driving", kp_d), ("dense_motion", captured),
                          ("generator", out)):
            res.update({f"{prefix}.{k}": v for k, v in d.items()})
        return res


# --------------------------------------------------------------------------- training
FOMM_LOSS_WEIGHTS: dict[str, Any] = {
    # config/vox-256.yaml train_params.loss_weights (vox-adv-256 sets generator_gan 1)
    "generator_gan": 0, "discriminator_gan": 1, "feature_matching": [10, 10, 10, 10],
    "perceptual": [10, 10, 10, 10, 10], "equivariance_value": 10, "equivariance_jacobian": 10,
}
FOMM_TRAIN_PARAMS: dict[str, Any] = {"num_epochs": 100, "epoch_milestones": [60, 90], "lr": 2e-4,
                                     "scales": [1, 0.5, 0.25, 0.125],
                                     "transform_params": {"sigma_affine": 0.05, "sigma_tps": 0.005, "points_tps": 5}}


@RECIPES.register()
class FOMMRecipe(PyramidGanRecipe):
    """FOMM training (modules/model.py GeneratorFullModel): perceptual pyramid, equivariance of the
    keypoint values and jacobians under a random TPS; LS-GAN + feature matching when generator_gan > 0."""

    name = NAME
    model = NAME
    lr_milestones = (0.6, 0.9)
    default_weights = FOMM_LOSS_WEIGHTS
    train_params = FOMM_TRAIN_PARAMS

    def build(self) -> dict[str, nn.Module]:
        cfg = self.config
        mods = FOMMCodec.build_modules(cfg)
        if "discriminator" not in mods:  # the official checkpoint always has one
            common = {k: cfg.modules["kp_detector"][k] for k in ("num_kp", "num_channels", "estimate_jacobian")}
            mods["discriminator"] = build_module("discriminator",
                                                 {**OFFICIAL_MODEL_PARAMS["discriminator_params"], **common})
        return mods

    def optimizers(self) -> dict[str, list[str]]:
        return {"optimizer_generator": ["generator"], "optimizer_discriminator": ["discriminator"],
                "optimizer_kp_detector": ["kp_detector"]}

    def generator_losses(self, modules: dict[str, Any], batch: dict[str, torch.Tensor], step: int
                         ) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        kd, gen = modules["kp_detector"], modules["generator"]
        src, drv = batch["source"], batch["driving"]
        kp_s, kp_d = kd(src), kd(drv)
        out = gen(src, kp_driving=kp_d, kp_source=kp_s)
        w = self.weights
        terms: dict[str, torch.Tensor] = {}
        if sum(w["perceptual"]):
            terms["perceptual"] = self.perceptual()(out["prediction"], drv)
        cache = {"prediction": out["prediction"], "kp_driving": kp_d["value"].detach()}
        if self._gan():
            disc = modules["discriminator"]
            pyr = self.perceptual().pyramid
            real, fake = disc(pyr(drv), kp=cache["kp_driving"]), disc(pyr(out["prediction"]), kp=cache["kp_driving"])
            terms.update(L.pyramid_gan_generator(real, fake, w))
        if w["equivariance_value"] or w["equivariance_jacobian"]:
            t = self.transform(drv.shape[0], "fomm")
            kp_t = kd(t.transform_frame(drv))
            if w["equivariance_value"]:
                terms["equivariance_value"] = w["equivariance_value"] * L.equivariance_value(kp_d["value"], t,
                                                                                            kp_t["value"])
            if w["equivariance_jacobian"] and "jacobian" in kp_d:
                terms["equivariance_jacobian"] = w["equivariance_jacobian"] * L.equivariance_jacobian(
                    kp_d["jacobian"], t, kp_t["value"], kp_t["jacobian"])
        return terms, cache

    def discriminator_losses(self, modules: dict[str, Any], batch: dict[str, torch.Tensor], cache: dict[str, Any],
                             step: int) -> dict[str, torch.Tensor]:
        disc = modules["discriminator"]
        pyr = self.perceptual().pyramid
        real = disc(pyr(batch["driving"]), kp=cache["kp_driving"])
        fake = disc(pyr(cache["prediction"].detach()), kp=cache["kp_driving"])
        return L.pyramid_gan_discriminator(real, fake, self.weights["discriminator_gan"])
