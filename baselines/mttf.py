"""MTTF: Multi-granularity Temporal Trajectory Factorization (Yin, Chen, Wang, Ye; arXiv 2410.10171).

"Generative Human Video Compression with Multi-granularity Temporal
Trajectory Factorization". Networks with the module and parameter names of
the public code xyzysz/Extreme-Human-Video-Compression-with-MTTF (snapshot
f09525a, config/ted384.yaml; the repository is partial: no released
checkpoint, and its encode.py/decode.py disagree with run.py, see below):

* ``region_predictor`` (:class:`RegionPredictor`): the frame, resized
  bilinearly (align_corners=True) to ``feature_size`` (96), goes through an
  hourglass; ``regions`` (7x7 conv) gives a ``num_feature`` (20) channel
  feature map ``feat`` (B, 20, 96, 96), and two heads ``coefficients`` and
  ``bias`` — each five (5x5 stride-2 conv + GDN) stages and a stride-3 conv,
  96 -> 48 -> 24 -> 12 -> 6 -> 3 -> 1 — give ``coeff`` and ``bias`` (B, 20, 1, 1).
  GDN is compressai's (:class:`model_parts.gdn.CompressAIGDN`, its key layout).
* ``generator`` (:class:`Generator`): ``pixelwise_flow_predictor`` forms the
  source feature ``feat_key * coeff_key + bias_key`` and the driving feature
  ``feat_key * coeff_t + bias_t`` (the *key frame's* map with the current
  frame's 40 numbers), predicts 40 per-region pixel flows from them
  (``hourglass_flow``, ``flow``), mixes them with softmax masks (35
  foreground, 5 background regions) into a foreground flow and a background
  flow, plus an occlusion map and a background feature (``bg_hourglass``);
  a multi-resolution U-Net (``first_blocks``, ``down_blocksN``,
  ``bottleneck``, ``up_blocksN``, ``final_blocks``, one branch per input
  scale s, s/2, s/4) warps every skip with the flow and predicts RGB and a
  foreground mask; the background branch (``bg_first``, ``bg_blocksN``,
  ``bg_final``) renders the background. Output = pred * mask + bg * (1 - mask)
  (decode.py).

``num_down_blocks`` is log2(frame_shape / feature_size) as in run.py (3 for
the official 768-px training frames); a frame of size S uses the branch
log2(768 / S) (S = 384 -> branch 1), the generator's ``scale_factor``
argument, which the snapshot's decode.py forgets to pass (the suite passes
image_size / (feature_size * 2^num_down_blocks)).

Codec ``mttf`` sends 40 values per inter frame (20 coefficients then 20
biases, encode.py's order). MTTF's own coder scales residuals by 127 and
truncates to int8; the suite uses its common DPCM (rounding, unbounded) with
a scale chosen by a measured sweep, 64 (docs/baselines.md).
"""
from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from baselines import blocks as B
from baselines.base import BaselineCodec, BaselineConfig, build_from_table
from baselines.conformance import VectorModel, register_vector_model
from baselines.losses import OfficialLossRecipe
from gfvc.codec import CODECS
from gfvc.errors import ModelMismatch
from model_parts.checkpoint import has_keys, register_signature
from model_parts.gdn import CompressAIGDN
from model_parts.training import RECIPES

NAME = "mttf"


# --------------------------------------------------------------------------- encoder
def _head(cin: int, num_feature: int) -> nn.Sequential:
    """Five (conv 5x5 stride 2 + GDN) stages, then a 5x5 stride-3 conv: 96 -> 1 (indices 0..10)."""
    layers: list[nn.Module] = []
    for i in range(5):
        layers += [nn.Conv2d(cin if i == 0 else num_feature, num_feature, kernel_size=5, stride=2, padding=2),
                   CompressAIGDN(num_feature)]
    layers.append(nn.Conv2d(num_feature, num_feature, kernel_size=5, stride=3, padding=2))
    return nn.Sequential(*layers)


class RegionPredictor(nn.Module):
    """Frame -> {'feat' (B,F,fs,fs), 'coeff' (B,F,1,1), 'bias' (B,F,1,1)} (official constructor kwargs)."""

    def __init__(self, block_expansion: int, num_feature: int, num_channels: int, max_features: int,
                 num_blocks: int, feature_size: int, pad: int = 3) -> None:
        super().__init__()
        self.predictor = B.Hourglass(block_expansion, in_features=num_channels, max_features=max_features,
                                     num_blocks=num_blocks)
        self.regions = nn.Conv2d(self.predictor.out_filters, num_feature, kernel_size=(7, 7), padding=pad)
        self.coefficients = _head(self.predictor.out_filters, num_feature)
        self.bias = _head(self.predictor.out_filters, num_feature)
        self.feature_size = int(feature_size)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        # nn.UpsamplingBilinear2d(size=feature_size): bilinear with align_corners=True
        x = F.interpolate(x, size=(self.feature_size, self.feature_size), mode="bilinear", align_corners=True)
        fm = self.predictor(x)
        return {"feat": self.regions(fm), "coeff": self.coefficients(fm), "bias": self.bias(fm)}


# --------------------------------------------------------------------------- motion
class PixelwiseFlowPredictor(nn.Module):
    """Per-region pixel flows from the factorised features, mixed into foreground/background flows."""

    def __init__(self, block_expansion: int, num_blocks: int, max_features: int, num_regions: int, num_feature: int,
                 num_channels: int, num_background: int, feature_size: int, estimate_occlusion_map: bool = False,
                 use_deformed_source: bool = True) -> None:
        super().__init__()
        if 2 * num_feature != num_regions:
            raise ModelMismatch(f"MTTF needs num_regions = 2 x num_feature (the driving and source features are "
                                f"stacked per region); got {num_regions} and {num_feature}")
        self.hourglass_flow = B.Hourglass(block_expansion, in_features=num_feature * 2, max_features=max_features,
                                          num_blocks=num_blocks)
        self.flow = nn.Conv2d(self.hourglass_flow.out_filters, num_regions * 2, kernel_size=7, padding=3)
        self.hourglass = B.Hourglass(block_expansion,
                                     in_features=num_regions * (num_channels * int(use_deformed_source) + 1),
                                     max_features=max_features, num_blocks=num_blocks)
        self.bg_hourglass = B.Hourglass(block_expansion, in_features=6, max_features=max_features,
                                        num_blocks=num_blocks)
        self.mask = nn.Conv2d(self.hourglass.out_filters, num_regions, kernel_size=7, padding=3)
        self.occlusion = (nn.Conv2d(self.hourglass.out_filters, 1, kernel_size=7, padding=3)
                          if estimate_occlusion_map else None)
        self.num_regions = num_regions
        self.num_background = num_background
        self.feature_size = int(feature_size)
        self.use_deformed_source = use_deformed_source

    @staticmethod
    def sparse_motions(h: int, w: int, flo: torch.Tensor) -> torch.Tensor:
        """(B, R, 2, h, w) pixel flows -> (B, R, h, w, 2) sampling grids in [-1, 1] (normalised by (w-1))."""
        xx = torch.arange(0, w, device=flo.device).view(1, -1).repeat(h, 1).to(flo.dtype)
        yy = torch.arange(0, h, device=flo.device).view(-1, 1).repeat(1, w).to(flo.dtype)
        v = torch.stack([xx, yy], 0).view(1, 1, 2, h, w) + flo
        vx = 2.0 * v[:, :, 0] / max(w - 1, 1) - 1.0
        vy = 2.0 * v[:, :, 1] / max(h - 1, 1) - 1.0
        return torch.stack([vx, vy], dim=-1)

    def forward(self, source_image: torch.Tensor, driving_region_params: Mapping[str, torch.Tensor],
                source_region_params: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        feat = source_region_params["feat"]
        source_feature = feat * source_region_params["coeff"] + source_region_params["bias"]
        driving_feature = feat * driving_region_params["coeff"] + driving_region_params["bias"]
        fs = self.feature_size
        source_image = F.interpolate(source_image, size=(fs, fs), mode="bilinear", align_corners=True)
        bs, c, h, w = source_image.shape
        r = self.num_regions
        heat = torch.cat([driving_feature, source_feature], dim=1).unsqueeze(2)
        flo = self.flow(self.hourglass_flow(torch.cat([source_feature, driving_feature], dim=1)))
        flo = flo.reshape(bs, r, 2, h, w)
        motions = self.sparse_motions(h, w, flo)
        rep = source_image.unsqueeze(1).expand(bs, r, c, h, w).reshape(bs * r, c, h, w)
        deformed = F.grid_sample(rep, motions.reshape(bs * r, h, w, 2), align_corners=False).view(bs, r, c, h, w)
        inp = torch.cat([heat, deformed], dim=2) if self.use_deformed_source else heat
        prediction = self.hourglass(inp.reshape(bs, -1, h, w))
        nfg = r - self.num_background
        mask_fg, mask_bg = self.mask(prediction).split([nfg, self.num_background], dim=1)
        mask_fg, mask_bg = F.softmax(mask_fg, dim=1).unsqueeze(2), F.softmax(mask_bg, dim=1).unsqueeze(2)
        m_fg, m_bg = motions.split([nfg, self.num_background], dim=1)
        flow_fg = (m_fg.permute(0, 1, 4, 2, 3) * mask_fg).sum(dim=1).permute(0, 2, 3, 1)
        flow_bg = (m_bg.permute(0, 1, 4, 2, 3) * mask_bg).sum(dim=1).permute(0, 2, 3, 1)
        deformed_bg = F.grid_sample(source_image, flow_bg, align_corners=False)
        out = {"bg": self.bg_hourglass(torch.cat([deformed_bg, source_image], dim=1)),
               "optical_flow": flow_fg, "optical_flow_bg": flow_bg, "deformed_source": deformed}
        if self.occlusion is not None:
            out["occlusion_map"] = torch.sigmoid(self.occlusion(prediction))
        return out


# --------------------------------------------------------------------------- generator
class Generator(nn.Module):
    """Multi-resolution warping U-Net with a background branch (official constructor kwargs)."""

    def __init__(self, num_channels: int, num_regions: int, num_feature: int, feature_size: int, num_background: int,
                 block_expansion: int, max_features: int, num_down_blocks: int, num_bottleneck_blocks: int,
                 multiRes_mode: int, pixelwise_flow_predictor_params: dict[str, Any] | None = None,
                 skips: bool = False) -> None:
        super().__init__()
        if multiRes_mode > num_down_blocks:
            raise ModelMismatch(f"MTTF: multiRes_mode {multiRes_mode} > num_down_blocks {num_down_blocks} "
                                "(not compatible with the feature/input resolution setting)")
        if pixelwise_flow_predictor_params is None:
            raise ModelMismatch("MTTF's generator needs pixelwise_flow_predictor_params (its background branch "
                                "reads the flow predictor's background hourglass)")
        self.pixelwise_flow_predictor = PixelwiseFlowPredictor(
            num_regions=num_regions, num_feature=num_feature, num_channels=num_channels,
            num_background=num_background, feature_size=feature_size, **pixelwise_flow_predictor_params)
        width = partial(B.channel_width, block_expansion, max_features)
        self.first_blocks = nn.ModuleList(B.SameBlock2d(num_channels, block_expansion, kernel_size=7,
                                                        padding=3) for _ in range(multiRes_mode))
        for stage in range(num_down_blocks):
            cin, cout = width(stage), width(stage + 1)
            setattr(self, f"down_blocks{stage + 1}", nn.ModuleList(
                (B.DownBlock2d if i == 0 else B.SameBlock2d)(cin, cout, kernel_size=3, padding=1)
                for i in range(max(multiRes_mode - stage, 1))))
        self.bottleneck = nn.Sequential()
        for i in range(num_bottleneck_blocks):
            self.bottleneck.add_module(f"r{i}", B.ResBlock2d(width(num_down_blocks), kernel_size=3,
                                                             padding=1))
        for stage in range(num_down_blocks):
            cin, cout = width(num_down_blocks - stage), width(num_down_blocks - stage - 1)
            setattr(self, f"up_blocks{stage + 1}", nn.ModuleList(
                (B.UpBlock2d if i == 0 else B.SameBlock2d)(cin, cout, kernel_size=3, padding=1)
                for i in range(min(stage + 1, multiRes_mode))))
        self.final_blocks = nn.ModuleList(nn.Conv2d(block_expansion, num_channels + 1, kernel_size=7,
                                                    padding=3) for _ in range(multiRes_mode))
        self.bg_first = nn.Conv2d(self.pixelwise_flow_predictor.bg_hourglass.out_filters, block_expansion,
                                  kernel_size=7, padding=3)
        for stage in range(num_down_blocks):
            mods: list[nn.Module] = []
            for i in range(min(stage + 1, multiRes_mode)):
                if i == 0:
                    mods += [B.UpBlock2d(block_expansion, block_expansion, kernel_size=3, padding=1),
                             B.ResBlock2d(block_expansion, kernel_size=3, padding=1)]
                else:
                    mods += [B.ResBlock2d(block_expansion, kernel_size=3, padding=1),
                             B.ResBlock2d(block_expansion, kernel_size=3, padding=1)]
            setattr(self, f"bg_blocks{stage + 1}", nn.ModuleList(mods))
        self.bg_final = nn.Conv2d(block_expansion, num_channels, kernel_size=7, padding=3)
        self.num_channels = num_channels
        self.multiRes_mode = multiRes_mode
        self.num_down_blocks = num_down_blocks

    @staticmethod
    def apply_optical(input_previous: torch.Tensor | None, input_skip: torch.Tensor,
                      motion: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Warp the skip by the flow; blend with the previous decoder output through the occlusion map."""
        skip = B.deform_input(input_skip, motion["optical_flow"])
        occ = motion.get("occlusion_map")
        if occ is None:
            return skip
        if occ.shape[2:] != skip.shape[2:]:
            occ = F.interpolate(occ, size=skip.shape[2:], mode="bilinear", align_corners=False)
        return skip * occ if input_previous is None else skip * occ + input_previous * (1 - occ)

    def branch(self, scale_factor: float) -> int:
        idx = int(math.log2(int(1 / scale_factor)))
        if not 0 <= idx < self.multiRes_mode or 2 ** idx != int(1 / scale_factor):
            raise ModelMismatch(f"MTTF generator: scale factor {scale_factor} has no branch (multiRes_mode "
                                f"{self.multiRes_mode}: scales 1 .. 1/{2 ** (self.multiRes_mode - 1)})")
        return idx

    def forward(self, source_image: torch.Tensor, scale_factor: float,
                driving_region_params: Mapping[str, torch.Tensor],
                source_region_params: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        k = self.branch(scale_factor)
        nd = self.num_down_blocks
        out = self.first_blocks[k](source_image)
        skips = [out]
        for i in range(nd):
            out = getattr(self, f"down_blocks{i + 1}")[max(k - i, 0)](out)
            skips.append(out)
        motion = self.pixelwise_flow_predictor(source_image=source_image, driving_region_params=driving_region_params,
                                               source_region_params=source_region_params)
        res: dict[str, torch.Tensor] = {"deformed": B.deform_input(source_image, motion["optical_flow"])}
        if "occlusion_map" in motion:
            res["occlusion_map"] = motion["occlusion_map"]
        out = self.apply_optical(None, out, motion)
        out = self.bottleneck(out)
        for i in range(nd):
            out = self.apply_optical(out, skips[-(i + 1)], motion)
            out = getattr(self, f"up_blocks{i + 1}")[max(k - nd + 1 + i, 0)](out)
        out = self.apply_optical(out, skips[0], motion)
        out, mask_pred = self.final_blocks[k](out).split([self.num_channels, 1], dim=1)
        res["mask_pred"] = torch.sigmoid(mask_pred)
        out = self.apply_optical(torch.sigmoid(out), source_image, motion)
        bg = self.bg_first(motion["bg"])
        for i in range(nd):
            bg = getattr(self, f"bg_blocks{i + 1}")[max(k - nd + 1 + i, 0)](bg)
        res.update({"prediction": out, "deformed_source": motion["deformed_source"],
                    "optical_flow": motion["optical_flow"], "optical_flow_bg": motion["optical_flow_bg"],
                    "bg": torch.sigmoid(self.bg_final(bg))})
        return res


def composite(out: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Final frame: prediction * mask_pred + bg * (1 - mask_pred) (decode.py / ReconstructionModel)."""
    return out["prediction"] * out["mask_pred"] + out["bg"] * (1 - out["mask_pred"])


# --------------------------------------------------------------------------- configurations
def modules_from_config(model_params: Mapping[str, Any], frame_shape: int) -> dict[str, dict[str, Any]]:
    """Official ``model_params`` (config/ted384.yaml) -> constructor kwargs, as run.py builds them."""
    mp = dict(model_params)
    fs = int(mp["feature_size"])
    nd = int(math.log2(frame_shape / fs))
    if fs * 2 ** nd != frame_shape:
        raise ModelMismatch(f"MTTF: frame_shape {frame_shape} is not feature_size {fs} times a power of two")
    return copy.deepcopy({
        "region_predictor": {"num_feature": mp["num_feature"], "num_channels": mp["num_channels"],
                             "feature_size": fs, **mp["region_predictor_params"]},
        "generator": {"num_regions": mp["num_regions"], "num_feature": mp["num_feature"],
                      "num_channels": mp["num_channels"], "num_background": mp["num_background"],
                      "feature_size": fs, "num_down_blocks": nd, **mp["generator_params"]}})


OFFICIAL_MODEL_PARAMS: dict[str, Any] = {
    "num_feature": 20, "num_regions": 40, "num_background": 5, "feature_size": 96, "num_channels": 3,
    "region_predictor_params": {"block_expansion": 32, "max_features": 1024, "num_blocks": 5, "pad": 3},
    "generator_params": {"block_expansion": 64, "max_features": 512, "num_bottleneck_blocks": 6, "multiRes_mode": 3,
                         "pixelwise_flow_predictor_params": {"block_expansion": 64, "max_features": 1024,
                                                             "num_blocks": 5, "use_deformed_source": True,
                                                             "estimate_occlusion_map": True}},
}
OFFICIAL_FRAME_SHAPE = 768  # dataset_params.frame_shape; coded at 384 = branch 1

# 128x128 CPU demo: 40 values as the official model, 32x32 factorised features, one resolution
# branch (trained and coded at 128 = frame_shape), small widths.
DEMO_MODEL_PARAMS: dict[str, Any] = {
    "num_feature": 20, "num_regions": 40, "num_background": 5, "feature_size": 32, "num_channels": 3,
    "region_predictor_params": {"block_expansion": 16, "max_features": 128, "num_blocks": 4, "pad": 3},
    "generator_params": {"block_expansion": 16, "max_features": 128, "num_bottleneck_blocks": 2, "multiRes_mode": 1,
                         "pixelwise_flow_predictor_params": {"block_expansion": 16, "max_features": 128,
                                                             "num_blocks": 4, "use_deformed_source": True,
                                                             "estimate_occlusion_map": True}},
}
DEMO_FRAME_SHAPE = 128


def scale_factor_of(cfg: BaselineConfig) -> float:
    """Generator scale factor of the coded frame size: image_size / (feature_size * 2^num_down_blocks)."""
    g = cfg.modules["generator"]
    full = int(g["feature_size"]) * 2 ** int(g["num_down_blocks"])
    s = cfg.image_size / full
    inv = full / cfg.image_size
    if inv != int(inv) or int(inv) & (int(inv) - 1) or int(math.log2(inv)) >= int(g["multiRes_mode"]):
        raise ModelMismatch(f"MTTF configuration {cfg.name!r}: image size {cfg.image_size} is not one of the "
                            f"generator's resolutions ({full} / 2^k, k < multiRes_mode {g['multiRes_mode']})")
    return s


MODULES: dict[str, Callable[..., nn.Module]] = {"region_predictor": RegionPredictor, "generator": Generator}


def build_module(name: str, kwargs: Mapping[str, Any]) -> nn.Module:
    return build_from_table("MTTF", MODULES, name, kwargs)


def params_to_features(p: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """{'coeff' (N,20,1,1), 'bias' (N,20,1,1)} -> (N, 40): coefficients then biases (encode.py order)."""
    n = p["coeff"].shape[0]
    return torch.cat([p["coeff"], p["bias"]], dim=1).reshape(n, -1)


def features_to_params(f: torch.Tensor, num_feature: int) -> dict[str, torch.Tensor]:
    n = f.shape[0]
    coeff, bias = f.reshape(n, 2 * num_feature, 1, 1).split([num_feature, num_feature], dim=1)
    return {"coeff": coeff, "bias": bias}


# --------------------------------------------------------------------------- codec
@CODECS.register()
class MTTFCodec(BaselineCodec):
    name = NAME
    description = ("MTTF (Yin et al. 2024): VVC key frame + 20 trajectory coefficients and 20 biases (40 values) "
                   "per inter frame applied to the key frame's 20-channel feature map; scale 64 (measured sweep)")
    feature_dim = 40
    quant_scale = 64.0
    inference_modules = ("region_predictor", "generator")

    @classmethod
    def values_per_frame(cls, cfg: BaselineConfig) -> int:
        return 2 * int(cfg.modules["region_predictor"]["num_feature"])

    @classmethod
    def official_config(cls) -> BaselineConfig:
        return BaselineConfig(model=NAME, image_size=384,
                              modules=modules_from_config(OFFICIAL_MODEL_PARAMS, OFFICIAL_FRAME_SHAPE),
                              name="official")

    @classmethod
    def named_configs(cls) -> dict[str, BaselineConfig]:
        return {"official": cls.official_config(),
                "demo": BaselineConfig(model=NAME, image_size=128,
                                       modules=modules_from_config(DEMO_MODEL_PARAMS, DEMO_FRAME_SHAPE),
                                       name="demo")}

    @classmethod
    def config_from_official_yaml(cls, data: dict[str, Any]) -> BaselineConfig:
        """config/ted384.yaml: frame_shape 768 sets num_down_blocks (run.py); coded at 384 (encode.py's img_shape)."""
        try:
            frame = int(data["dataset_params"]["frame_shape"][-1])
            mods = modules_from_config(data["model_params"], frame)
        except (KeyError, TypeError, ValueError, IndexError) as e:
            raise ModelMismatch(f"not an MTTF config (dataset_params.frame_shape, model_params.num_feature/"
                                f"region_predictor_params/generator_params expected): {type(e).__name__} {e}") from None
        return BaselineConfig(model=NAME, image_size=frame // 2, modules=mods, name="official-yaml")

    @classmethod
    def build_modules(cls, cfg: BaselineConfig) -> dict[str, nn.Module]:
        if int(cfg.modules["region_predictor"]["num_feature"]) * 2 != cls.feature_dim:
            raise ModelMismatch(f"codec mttf sends 40 values (20 coefficients + 20 biases); configuration "
                                f"{cfg.name!r} has num_feature {cfg.modules['region_predictor']['num_feature']}")
        scale_factor_of(cfg)
        return {name: build_module(name, kw) for name, kw in cfg.modules.items()}

    def features(self, frames: torch.Tensor, key: torch.Tensor) -> torch.Tensor:
        assert self.nets is not None
        return params_to_features(self.nets["region_predictor"](frames))

    def _key_params(self, key: torch.Tensor) -> dict[str, torch.Tensor]:
        cache = getattr(self, "_key_cache", None)
        if cache is None or cache[0] is not key:
            assert self.nets is not None
            cache = (key, self.nets["region_predictor"](key))
            self._key_cache = cache
        return cache[1]

    def render(self, key: torch.Tensor, key_features: torch.Tensor, features: torch.Tensor
               ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        assert self.nets is not None
        cfg = self.config()
        nf = int(cfg.modules["region_predictor"]["num_feature"])
        n = features.shape[0]
        src = {"feat": self._key_params(key)["feat"].expand(n, -1, -1, -1),
               **{k: v.expand(n, -1, -1, -1) for k, v in features_to_params(key_features[None], nf).items()}}
        out = self.nets["generator"](key.expand(n, -1, -1, -1), scale_factor_of(cfg),
                                     driving_region_params=features_to_params(features, nf),
                                     source_region_params=src)
        return composite(out), {}


def _looks_like_mttf(obj: Mapping[str, Any]) -> bool:
    return (has_keys(obj.get("region_predictor"), "coefficients.0.weight", "coefficients.1.beta")
            and has_keys(obj.get("generator"),
                         "pixelwise_flow_predictor.hourglass_flow.encoder.down_blocks.0.conv.weight"))


register_signature(NAME, _looks_like_mttf)


# --------------------------------------------------------------------------- conformance
@register_vector_model(NAME)
class MTTFVectors(VectorModel):
    """Official path (baselines/vectors/mttf.json): region params, generator at branch 1 and 0, composite."""

    module_builder = staticmethod(build_module)

    def run(self, modules: dict[str, Any], inputs: dict[str, Any], meta: dict[str, Any]) -> dict[str, Any]:
        rp, gen = modules["region_predictor"], modules["generator"]
        ps, pd = rp(inputs["source"]), rp(inputs["driving"])
        res: dict[str, Any] = {}
        for prefix, p in (("source_region_params", ps), ("driving_region_params", pd)):
            res.update({f"{prefix}.{k}": v for k, v in p.items()})
        captured: dict[str, Any] = {}
        hook = gen.pixelwise_flow_predictor.register_forward_hook(lambda m, a, o: captured.update(o))
        try:
            out = gen(inputs["source"], 0.5, driving_region_params=pd, source_region_params=ps)
        finally:
            hook.remove()
        res.update({f"pixelwise_flow.{k}": v for k, v in captured.items()})
        res.update({f"generator.{k}": v for k, v in out.items()})
        res["decoded"] = composite(out)
        if "source_full" in inputs:
            psf, pdf = rp(inputs["source_full"]), rp(inputs["driving_full"])
            full = gen(inputs["source_full"], 1, driving_region_params=pdf, source_region_params=psf)
            res["full.driving_region_params.coeff"] = pdf["coeff"]
            res.update({f"full.generator.{k}": full[k] for k in ("mask_pred", "prediction", "bg")})
        return res


# --------------------------------------------------------------------------- training
MTTF_LOSS_WEIGHTS: dict[str, Any] = {"perceptual": [10, 10, 10, 10, 10], "pixel": 10, "bg": 10}  # ted384.yaml
MTTF_TRAIN_PARAMS: dict[str, Any] = {"num_epochs": 100, "epoch_milestones": [60, 90], "lr": 2e-4,
                                     "scales": [1, 0.5, 0.25, 0.125], "transform_params": {}}
BG_MASKS = ("frame-difference", "none")


def frame_difference_mask(source: torch.Tensor, driving: torch.Tensor, gain: float = 10.0) -> torch.Tensor:
    """FALLBACK foreground mask (B,1,H,W) in [0, 1]: where the driving frame differs from the source.

    Stands in for MTTF's SGHM-ResNet50 human matting (weights not available here): the largest channel
    difference, box-blurred over 1/16 of the frame width, times ``gain``, clipped to [0, 1]. It marks
    moving regions, not the person; it is labelled as a fallback in every checkpoint.
    """
    d = (driving - source).abs().amax(dim=1, keepdim=True)
    k = max(3, (driving.shape[-1] // 16) | 1)
    return (F.avg_pool2d(d, k, stride=1, padding=k // 2, count_include_pad=False) * gain).clamp(0, 1)


@RECIPES.register()
class MTTFRecipe(OfficialLossRecipe):
    """MTTF training (modules/model.py ReconstructionModel): perceptual pyramid on the composited frame,
    pixel L1, background term; one Adam over generator and region predictor; a random generator branch
    per step (train.py: scale 1, 1/2 or 1/4 of the full frame with equal probability, nearest resize).

    The background term needs a person mask: officially SGHM-ResNet50 matting of the driving frame
    (``|(pred - driving)(1 - m)| + |mask_pred - m|``). Its weights are not available here, so the mask is
    ``options["bg_mask"]``: ``frame-difference`` (labelled fallback, :func:`frame_difference_mask`) or
    ``none`` (term omitted).
    """

    name = NAME
    model = NAME
    lr_milestones = (0.6, 0.9)
    default_weights = MTTF_LOSS_WEIGHTS
    train_params = MTTF_TRAIN_PARAMS

    def __init__(self, config: Any, device: str = "cpu", weights_dir: Any = None) -> None:
        super().__init__(config, device, weights_dir)
        self.bg_mask = str(config.options.get("bg_mask", "frame-difference"))
        if self.bg_mask not in BG_MASKS:
            raise ModelMismatch(f"MTTF bg_mask must be one of {BG_MASKS}, not {self.bg_mask!r}")

    def build(self) -> dict[str, nn.Module]:
        return MTTFCodec.build_modules(self.config)

    def optimizers(self) -> dict[str, list[str]]:
        return {"optimizer_reconstruction": ["generator", "region_predictor"]}

    def _scales(self) -> list[float]:
        """Generator scale factors the training frames can be resized to (the coded size and smaller)."""
        g = self.config.modules["generator"]
        base = scale_factor_of(self.config)
        return [1 / 2 ** k for k in range(int(g["multiRes_mode"])) if 1 / 2 ** k <= base]

    def generator_losses(self, modules: dict[str, Any], batch: dict[str, torch.Tensor], step: int
                         ) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        rp, gen = modules["region_predictor"], modules["generator"]
        src, drv = batch["source"], batch["driving"]
        scales = self._scales()
        u = float(torch.rand(()))
        scale = scales[min(int(u * len(scales)), len(scales) - 1)]
        base = scale_factor_of(self.config)
        if scale != base:  # train.py: F.interpolate(x, scale_factor) (nearest)
            src = F.interpolate(src, scale_factor=scale / base)
            drv = F.interpolate(drv, scale_factor=scale / base)
        p_s, p_d = rp(src), rp(drv)
        out = gen(src, scale, driving_region_params=p_d, source_region_params=p_s)
        pred = composite(out)
        w = self.weights
        terms: dict[str, torch.Tensor] = {}
        if w["bg"] and self.bg_mask != "none":
            m = frame_difference_mask(src, drv).detach()
            terms["bg"] = w["bg"] * ((pred - drv).mul(1 - m).abs().mean() + (out["mask_pred"] - m).abs().mean())
        if sum(w["perceptual"]):
            terms["perceptual"] = self.perceptual()(pred, drv)
        if w["pixel"]:
            terms["pixel"] = w["pixel"] * F.l1_loss(drv, pred)
        return terms, {}

    def losses_info(self) -> dict[str, Any]:
        return {"perceptual": self.perceptual().info(), "loss_weights": self.weights,
                "bg_mask": ({"name": "frame-difference-mask", "fallback": True,
                             "note": "SGHM-ResNet50 human matting unavailable: moving-region mask instead"}
                            if self.bg_mask == "frame-difference" else
                            {"name": "none", "note": "bg term omitted (no SGHM-ResNet50 matting)"}),
                "generator_scales": self._scales(),
                "official_schedule": {k: self.train_params[k] for k in ("num_epochs", "epoch_milestones", "lr")},
                "lr_milestones_fraction": list(self.lr_milestones)}
