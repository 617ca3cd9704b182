"""TPSM: Thin-Plate Spline Motion Model (Zhao & Zhang, CVPR 2022).

Networks with the official module and parameter names of
yoyo-nb/Thin-Plate-Spline-Motion-Model (config/ted-384.yaml), so the released
``ted.pth.tar`` loads strictly:

* ``kp_detector`` (:class:`KPDetector`): a ResNet-18 (torchvision key names)
  regressing 10 TPS x 5 control points in [-1, 1] (``fg_kp`` (B, 50, 2));
* ``bg_predictor`` (:class:`BGMotionPredictor`): a ResNet-18 on the
  concatenated (source, driving) regressing the background 2x3 affine;
* ``dense_motion_network`` (:class:`DenseMotionNetwork`): K thin-plate-spline
  warps (each solved from 5 driving -> source control points) and the
  background affine, mixed by softmax contribution maps into one flow, plus
  occlusion masks at four resolutions;
* ``inpainting_network`` (:class:`InpaintingNetwork`): encoder, warp and
  occlusion of every encoder level, decoder with the warped skips.
  InstanceNorm2d(affine) throughout, align_corners=True in every warp.

Codec ``tpsm`` sends per inter frame 106 values: the 50 control points of the
current frame (100) and the top two rows of ``bg_predictor(key, current)``
computed at the encoder (6). The decoder takes the key frame's control points
from the decoded key frame and runs the official reconstruction path
(``dropout_flag=False``).

Suite option (``BaselineConfig.options["resnet_width"]``, default 64 =
torchvision's ResNet-18): the ResNet-18s have no width argument in the
official code; the CPU demo configuration narrows them to 16 so that the demo
checkpoint stays under 10 MB. Key names are unchanged, shapes differ.
"""
from __future__ import annotations

import copy
import math
from collections.abc import Mapping
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

NAME = "tpsm"
NORM = "instance"


# --------------------------------------------------------------------------- ResNet-18 (torchvision names)
class BasicBlock(nn.Module):
    """ResNet basic block: two 3x3 convs with BN, identity or 1x1-conv shortcut."""

    def __init__(self, inplanes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = (nn.Sequential(nn.Conv2d(inplanes, planes, 1, stride=stride, bias=False),
                                         nn.BatchNorm2d(planes))
                           if stride != 1 or inplanes != planes else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        identity = x if self.downsample is None else self.downsample(x)
        return F.relu(out + identity)


class ResNet18(nn.Module):
    """ResNet-18 (He et al., CVPR 2016) with torchvision's state_dict names and a base ``width``."""

    layer1: nn.Sequential
    layer2: nn.Sequential
    layer3: nn.Sequential
    layer4: nn.Sequential

    def __init__(self, in_channels: int = 3, num_outputs: int = 1000, width: int = 64) -> None:
        super().__init__()
        w = [width, width * 2, width * 4, width * 8]
        self.conv1 = nn.Conv2d(in_channels, w[0], kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(w[0])
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        cin = w[0]
        for i, planes in enumerate(w):
            stride = 1 if i == 0 else 2
            layer = nn.Sequential(BasicBlock(cin, planes, stride), BasicBlock(planes, planes, 1))
            setattr(self, f"layer{i + 1}", layer)
            cin = planes
        self.fc = nn.Linear(w[3], num_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(F.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, (1, 1)), 1))


# --------------------------------------------------------------------------- networks
class KPDetector(nn.Module):
    """num_tps x 5 control points in [-1, 1] from a ResNet-18: 2*sigmoid(fc) - 1."""

    def __init__(self, num_tps: int, resnet_width: int = 64, **_: Any) -> None:
        super().__init__()
        self.num_tps = num_tps
        self.fg_encoder = ResNet18(3, num_tps * 5 * 2, resnet_width)

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        kp = torch.sigmoid(self.fg_encoder(image)) * 2 - 1
        return {"fg_kp": kp.view(kp.shape[0], self.num_tps * 5, -1)}


class BGMotionPredictor(nn.Module):
    """Background affine (B, 3, 3), last row [0, 0, 1], from a 6-channel ResNet-18."""

    def __init__(self, resnet_width: int = 64, **_: Any) -> None:
        super().__init__()
        self.bg_encoder = ResNet18(6, 6, resnet_width)
        with torch.no_grad():
            if self.bg_encoder.fc.weight.device.type != "meta":
                self.bg_encoder.fc.weight.zero_()
                self.bg_encoder.fc.bias.copy_(torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0, 0.0]))

    def forward(self, source_image: torch.Tensor, driving_image: torch.Tensor) -> torch.Tensor:
        bs = source_image.shape[0]
        out = torch.eye(3, dtype=source_image.dtype, device=source_image.device).unsqueeze(0).repeat(bs, 1, 1)
        out[:, :2, :] = self.bg_encoder(torch.cat([source_image, driving_image], dim=1)).view(bs, 2, 3)
        return out


class TPSWarp:
    """Thin-plate splines mapping control points ``kp_from`` -> ``kp_to`` (B, G, n, 2), one per group.

    Solves [[K, P], [Pᵀ, 0]] + 0.01·I times the parameters = [kp_to; 0] with
    K_ij = r² log(r² + 1e-9) (TPSM Eq. 2, with the official regulariser).
    """

    def __init__(self, kp_from: torch.Tensor, kp_to: torch.Tensor) -> None:
        bs, gs, n, _ = kp_from.shape
        r2 = torch.norm(kp_from[:, :, :, None] - kp_from[:, :, None, :], dim=4, p=2) ** 2
        k = r2 * torch.log(r2 + 1e-9)
        p = torch.cat([kp_from, kp_from.new_ones(bs, gs, n, 1)], dim=3)
        top = torch.cat([k, p], dim=3)
        bottom = torch.cat([p.permute(0, 1, 3, 2), kp_from.new_zeros(bs, gs, 3, 3)], dim=3)
        lmat = torch.cat([top, bottom], dim=2)
        lmat = lmat + torch.eye(n + 3, dtype=lmat.dtype, device=lmat.device).expand(lmat.shape) * 0.01
        y = torch.cat([kp_to, kp_from.new_zeros(bs, gs, 3, 2)], dim=2)
        param = torch.matmul(torch.inverse(lmat), y)
        self.theta = param[:, :, n:, :].permute(0, 1, 3, 2)   # (B, G, 2, 3) affine part
        self.control_points = kp_from
        self.control_params = param[:, :, :n, :]               # (B, G, n, 2)
        self.bs, self.gs = bs, gs

    def warp_coordinates(self, coords: torch.Tensor) -> torch.Tensor:
        """coords (1 or B, N, 2) -> (B, G, N, 2)."""
        theta = self.theta
        out = torch.matmul(theta[:, :, :, :2], coords.permute(0, 2, 1)) + theta[:, :, :, 2:]
        d = coords.view(coords.shape[0], 1, 1, -1, 2) - self.control_points.view(self.bs, self.gs, -1, 1, 2)
        r2 = (d ** 2).sum(-1)
        u = r2 * torch.log(r2 + 1e-9)
        return out.permute(0, 1, 3, 2) + torch.matmul(u.permute(0, 1, 3, 2), self.control_params)

    def grid(self, h: int, w: int) -> torch.Tensor:
        """(B, G, h, w, 2) sampling grid of each spline over the [-1, 1] image grid."""
        g = B.make_coordinate_grid((h, w), self.theta.dtype, self.theta.device).reshape(1, h * w, 2)
        return self.warp_coordinates(g).view(self.bs, self.gs, h, w, 2)


def dropout_softmax(x: torch.Tensor, p: float) -> torch.Tensor:
    """Softmax over channels with each TPS channel (not the background, channel 0) dropped with
    probability ``p`` per sample (TPSM Eq. 7-8); dropped channels get weight 0, the rest renormalise."""
    keep = (torch.rand(x.shape[0], x.shape[1], device=x.device) < (1 - p)).to(x.dtype)
    keep[:, 0] = 1
    e = (x - x.max(1, keepdim=True).values).exp() * keep[:, :, None, None]
    return e / (e.sum(dim=1, keepdim=True) + 1e-6)


class DenseMotionNetwork(nn.Module):
    """Optical flow from K TPS warps + background affine, and multi-resolution occlusion masks."""

    def __init__(self, block_expansion: int, num_blocks: int, max_features: int, num_tps: int, num_channels: int,
                 scale_factor: float = 0.25, bg: bool = False, multi_mask: bool = True, kp_variance: float = 0.01
                 ) -> None:
        super().__init__()
        if scale_factor != 1:
            self.down = B.AntiAliasInterpolation2d(num_channels, scale_factor, subsample="nearest")
        self.scale_factor = scale_factor
        self.multi_mask = multi_mask
        self.hourglass = B.Hourglass(block_expansion, in_features=num_channels * (num_tps + 1) + num_tps * 5 + 1,
                                     max_features=max_features, num_blocks=num_blocks, norm=NORM)
        sizes = self.hourglass.out_channels
        self.maps = nn.Conv2d(sizes[-1], num_tps + 1, kernel_size=(7, 7), padding=(3, 3))
        if multi_mask:
            self.up_nums = int(math.log(1 / scale_factor, 2))
            self.occlusion_num = 4
            ch = [sizes[-1] // (2 ** i) for i in range(self.up_nums)]
            self.up = nn.ModuleList(B.UpBlock2d(c, c // 2, kernel_size=3, padding=1, norm=NORM) for c in ch)
            occ_in = [sizes[-i - 1] for i in reversed(range(self.occlusion_num - self.up_nums))]
            occ_in += [sizes[-1] // (2 ** (i + 1)) for i in range(self.up_nums)]
            self.occlusion = nn.ModuleList(nn.Conv2d(c, 1, kernel_size=(7, 7), padding=(3, 3)) for c in occ_in)
        else:
            self.occlusion = nn.ModuleList([nn.Conv2d(sizes[-1], 1, kernel_size=(7, 7), padding=(3, 3))])
        self.num_tps = num_tps
        self.bg = bg
        self.kp_variance = kp_variance

    def transformations(self, h: int, w: int, kp_driving: torch.Tensor, kp_source: torch.Tensor,
                        bg_param: torch.Tensor | None) -> torch.Tensor:
        """(B, K+1, h, w, 2): background (identity or bg affine), then the K TPS warps driving -> source."""
        bs = kp_driving.shape[0]
        tps = TPSWarp(kp_driving.view(bs, -1, 5, 2), kp_source.view(bs, -1, 5, 2))
        to_source = tps.grid(h, w)
        ident = B.make_coordinate_grid((h, w), kp_driving.dtype, kp_driving.device).view(1, 1, h, w, 2)
        ident = ident.repeat(bs, 1, 1, 1, 1)
        if bg_param is not None:
            ident = B.from_homogeneous(torch.matmul(bg_param.view(bs, 1, 1, 1, 3, 3),
                                                    B.to_homogeneous(ident).unsqueeze(-1)).squeeze(-1))
        return torch.cat([ident, to_source], dim=1)

    def forward(self, source_image: torch.Tensor, kp_driving: Mapping[str, torch.Tensor],
                kp_source: Mapping[str, torch.Tensor], bg_param: torch.Tensor | None = None,
                dropout_flag: bool = False, dropout_p: float = 0) -> dict[str, Any]:
        if self.scale_factor != 1:
            source_image = self.down(source_image)
        bs, c, h, w = source_image.shape
        heat = (B.kp2gaussian(kp_driving["fg_kp"], (h, w), self.kp_variance)
                - B.kp2gaussian(kp_source["fg_kp"], (h, w), self.kp_variance))
        heat = torch.cat([heat.new_zeros(bs, 1, h, w), heat], dim=1)
        trans = self.transformations(h, w, kp_driving["fg_kp"], kp_source["fg_kp"], bg_param)
        k1 = self.num_tps + 1
        rep = source_image.unsqueeze(1).expand(bs, k1, c, h, w).reshape(bs * k1, c, h, w)
        deformed = F.grid_sample(rep, trans.reshape(bs * k1, h, w, 2), align_corners=True).view(bs, k1, c, h, w)
        out: dict[str, Any] = {"deformed_source": deformed}
        levels = self.hourglass(torch.cat([heat, deformed.view(bs, -1, h, w)], dim=1), all_levels=True)
        logits = self.maps(levels[-1])
        maps = dropout_softmax(logits, dropout_p) if dropout_flag else F.softmax(logits, dim=1)
        out["contribution_maps"] = maps
        flow = (trans.permute(0, 1, 4, 2, 3) * maps.unsqueeze(2)).sum(dim=1)
        out["deformation"] = flow.permute(0, 2, 3, 1)
        occ = []
        if self.multi_mask:
            n_direct = self.occlusion_num - self.up_nums
            for i in range(n_direct):
                occ.append(torch.sigmoid(self.occlusion[i](levels[self.up_nums - self.occlusion_num + i])))
            pred = levels[-1]
            for i in range(self.up_nums):
                pred = self.up[i](pred)
                occ.append(torch.sigmoid(self.occlusion[i + n_direct](pred)))
        else:
            occ.append(torch.sigmoid(self.occlusion[0](levels[-1])))
        out["occlusion_map"] = occ
        return out


class InpaintingNetwork(nn.Module):
    """Encoder -> warp + occlude each level -> decoder with warped skips -> blend with the warped source."""

    def __init__(self, num_channels: int, block_expansion: int, max_features: int, num_down_blocks: int,
                 multi_mask: bool = True, **_: Any) -> None:
        super().__init__()
        self.num_down_blocks = num_down_blocks
        self.multi_mask = multi_mask
        self.first = B.SameBlock2d(num_channels, block_expansion, kernel_size=(7, 7), padding=(3, 3), norm=NORM)
        down, up, res = [], [], []
        for i in range(num_down_blocks):
            cin = min(max_features, block_expansion * (2 ** i))
            cout = min(max_features, block_expansion * (2 ** (i + 1)))
            down.append(B.DownBlock2d(cin, cout, kernel_size=(3, 3), padding=(1, 1), norm=NORM))
            dec_in = cout if i == num_down_blocks - 1 else cout * 2
            up.append(B.UpBlock2d(dec_in, cin, kernel_size=(3, 3), padding=(1, 1), norm=NORM))
            res += [B.ResBlock2d(dec_in, kernel_size=(3, 3), padding=(1, 1), norm=NORM) for _ in range(2)]
        self.down_blocks = nn.ModuleList(down)
        self.up_blocks = nn.ModuleList(up[::-1])
        self.resblock = nn.ModuleList(res[::-1])
        self.final = nn.Conv2d(block_expansion, num_channels, kernel_size=(7, 7), padding=(3, 3))
        self.num_channels = num_channels

    def _occlude(self, x: torch.Tensor, occ: torch.Tensor) -> torch.Tensor:
        if not self.multi_mask and occ.shape[2:] != x.shape[2:]:
            occ = F.interpolate(occ, size=x.shape[2:], mode="bilinear", align_corners=True)
        return x * occ

    def _warp(self, x: torch.Tensor, flow: torch.Tensor, occ: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Warped, occluded map, and the copy the warp loss compares (gradient only through the flow).

        Under no_grad both are the same tensor (equal values; no second warp at inference)."""
        main = self._occlude(B.deform_input(x, flow, align_corners=True), occ)
        if not torch.is_grad_enabled():
            return main, main
        return main, self._occlude(B.deform_input(x.detach(), flow, align_corners=True), occ.detach())

    def forward(self, source_image: torch.Tensor, dense_motion: Mapping[str, Any]) -> dict[str, Any]:
        out = self.first(source_image)
        enc = [out]
        for block in self.down_blocks:
            out = block(out)
            enc.append(out)
        occ = dense_motion["occlusion_map"]
        flow = dense_motion["deformation"]
        res: dict[str, Any] = {"contribution_maps": dense_motion["contribution_maps"],
                               "deformed_source": dense_motion["deformed_source"], "occlusion_map": occ}
        out, side = self._warp(out, flow, occ[0])
        warped = [side]
        skip = out
        for i in range(self.num_down_blocks):
            out = self.resblock[2 * i + 1](self.resblock[2 * i](out))
            out = self.up_blocks[i](out)
            skip, side = self._warp(enc[-(i + 2)], flow, occ[i + 1 if self.multi_mask else 0])
            warped.append(side)
            if i == self.num_down_blocks - 1:
                break
            out = torch.cat([out, skip], 1)
        deformed = B.deform_input(source_image, flow, align_corners=True)
        res["deformed"] = deformed
        res["warped_encoder_maps"] = warped
        last = occ[-1]
        if not self.multi_mask:
            last = F.interpolate(last, size=out.shape[2:], mode="bilinear", align_corners=True)
        out = out * (1 - last) + skip
        out = torch.sigmoid(self.final(out))
        res["prediction"] = out * (1 - last) + deformed * last
        return res

    def get_encode(self, driving: torch.Tensor, occlusion_map: list[torch.Tensor]) -> list[torch.Tensor]:
        """Occluded encoder maps of the driving frame (targets of the warp loss), finest first."""
        out = self.first(driving)
        maps = [self._occlude(out.detach(), occlusion_map[-1].detach())]
        for i, block in enumerate(self.down_blocks):
            out = block(out.detach())
            maps.append(self._occlude(out.detach(), occlusion_map[len(self.down_blocks) - 1 - i].detach()).detach())
        return maps


def build_module(name: str, kwargs: Mapping[str, Any], options: Mapping[str, Any] | None = None) -> nn.Module:
    width = int((options or {}).get("resnet_width", 64))
    return build_from_table("TPSM", {"kp_detector": lambda **kw: KPDetector(resnet_width=width, **kw),
                                     "bg_predictor": lambda **kw: BGMotionPredictor(resnet_width=width, **kw),
                                     "dense_motion_network": DenseMotionNetwork,
                                     "inpainting_network": InpaintingNetwork}, name, kwargs)


def modules_from_model_params(mp: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Official ``model_params`` (ted-384.yaml) -> constructor kwargs as in the official run.py."""
    common = dict(mp["common_params"])
    out = {"kp_detector": dict(common),
           "dense_motion_network": {**common, **mp["dense_motion_params"]},
           "inpainting_network": {**mp["generator_params"], **common}}
    if common.get("bg"):
        out["bg_predictor"] = {}
    return copy.deepcopy(out)


OFFICIAL_MODEL_PARAMS: dict[str, Any] = {
    "common_params": {"num_tps": 10, "num_channels": 3, "bg": True, "multi_mask": True},
    "generator_params": {"block_expansion": 64, "max_features": 512, "num_down_blocks": 3},
    "dense_motion_params": {"block_expansion": 64, "max_features": 1024, "num_blocks": 5, "scale_factor": 0.25},
}

DEMO_MODEL_PARAMS: dict[str, Any] = {
    "common_params": {"num_tps": 10, "num_channels": 3, "bg": True, "multi_mask": True},
    "generator_params": {"block_expansion": 8, "max_features": 64, "num_down_blocks": 3},
    "dense_motion_params": {"block_expansion": 8, "max_features": 64, "num_blocks": 4, "scale_factor": 0.25},
}
DEMO_OPTIONS: dict[str, Any] = {"resnet_width": 16}


def features_from(kp: Mapping[str, torch.Tensor], bg: torch.Tensor) -> torch.Tensor:
    """(N, 2P + 6): control points then the background affine's top two rows."""
    n = kp["fg_kp"].shape[0]
    return torch.cat([kp["fg_kp"].reshape(n, -1), bg[:, :2, :].reshape(n, 6)], dim=1)


def split_features(f: torch.Tensor, num_points: int) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    n = f.shape[0]
    kp = {"fg_kp": f[:, :2 * num_points].reshape(n, num_points, 2)}
    bg = torch.cat([f[:, 2 * num_points:2 * num_points + 6].reshape(n, 2, 3),
                    torch.tensor([0.0, 0.0, 1.0], dtype=f.dtype, device=f.device).expand(n, 1, 3)], dim=1)
    return kp, bg


# --------------------------------------------------------------------------- codec
@CODECS.register()
class TPSMCodec(BaselineCodec):
    name = NAME
    description = ("TPSM (Zhao & Zhang 2022): VVC key frame + 10 TPS x 5 control points (100 values) and the "
                   "background affine (6) per inter frame")
    feature_dim = 106
    quant_scale = 64.0  # measured sweep (docs/baselines.md): quantisation error < 1 grey level
    inference_modules = ("kp_detector", "bg_predictor", "dense_motion_network", "inpainting_network")

    @classmethod
    def official_config(cls) -> BaselineConfig:
        return BaselineConfig(model=NAME, image_size=384, modules=modules_from_model_params(OFFICIAL_MODEL_PARAMS),
                              name="official")

    @classmethod
    def named_configs(cls) -> dict[str, BaselineConfig]:
        """official (ted-384.yaml), vox256 (config/vox-256.yaml: the same networks at 256 px), demo."""
        return {"official": cls.official_config(),
                "vox256": BaselineConfig(model=NAME, image_size=256,
                                         modules=modules_from_model_params(OFFICIAL_MODEL_PARAMS), name="vox256"),
                "demo": BaselineConfig(model=NAME, image_size=128, modules=modules_from_model_params(DEMO_MODEL_PARAMS),
                                       options=dict(DEMO_OPTIONS), name="demo")}

    @classmethod
    def config_from_official_yaml(cls, data: dict[str, Any]) -> BaselineConfig:
        return config_from_yaml_sections(
            NAME, data, modules_from_model_params,
            lambda d: ((d.get("dataset_params") or {}).get("frame_shape") or [official_yaml_size(d)])[0],
            "Thin-Plate-Spline-Motion-Model config (model_params.common_params/generator_params/"
            "dense_motion_params expected)")

    @classmethod
    def build_modules(cls, cfg: BaselineConfig) -> dict[str, nn.Module]:
        kp = cfg.modules.get("kp_detector", {})
        if int(kp.get("num_tps", 10)) != 10 or "bg_predictor" not in cfg.modules:
            raise ModelMismatch(f"codec tpsm sends 10 TPS x 5 control points and a background affine (106 values); "
                                f"configuration {cfg.name!r} has num_tps={kp.get('num_tps')} "
                                f"bg={'bg_predictor' in cfg.modules}")
        return {name: build_module(name, kw, cfg.options) for name, kw in cfg.modules.items()}

    def features(self, frames: torch.Tensor, key: torch.Tensor) -> torch.Tensor:
        assert self.nets is not None
        kp = self.nets["kp_detector"](frames)
        bg = self.nets["bg_predictor"](key.expand(frames.shape[0], -1, -1, -1), frames)
        return features_from(kp, bg)

    def render(self, key: torch.Tensor, key_features: torch.Tensor, features: torch.Tensor
               ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        assert self.nets is not None
        n = features.shape[0]
        kp_src, _ = split_features(key_features[None], 50)
        kp_src = {k: v.expand(n, *v.shape[1:]) for k, v in kp_src.items()}
        kp_drv, bg = split_features(features, 50)
        src = key.expand(n, -1, -1, -1)
        motion = self.nets["dense_motion_network"](source_image=src, kp_driving=kp_drv, kp_source=kp_src,
                                                   bg_param=bg, dropout_flag=False)
        return self.nets["inpainting_network"](src, motion)["prediction"], {}


def _looks_like_tpsm(obj: Mapping[str, Any]) -> bool:
    return has_keys(obj.get("kp_detector"), "fg_encoder.fc.weight") and isinstance(obj.get("inpainting_network"),
                                                                                  Mapping)


register_signature(NAME, _looks_like_tpsm)


# --------------------------------------------------------------------------- conformance
@register_vector_model(NAME)
class TPSMVectors(VectorModel):
    """Official reconstruction path: control points, bg affine, dense motion (no dropout), inpainting."""

    module_builder = staticmethod(build_module)

    def run(self, modules: dict[str, Any], inputs: dict[str, Any], meta: dict[str, Any]) -> dict[str, Any]:
        src, drv = inputs["source"], inputs["driving"]
        kd = modules["kp_detector"]
        kp_s, kp_d = kd(src), kd(drv)
        bg = modules["bg_predictor"](src, drv)
        motion = modules["dense_motion_network"](source_image=src, kp_driving=kp_d, kp_source=kp_s, bg_param=bg,
                                                 dropout_flag=False)
        out = modules["inpainting_network"](src, motion)
        res: dict[str, Any] = {"kp_source.fg_kp": kp_s["fg_kp"], "kp_driving.fg_kp": kp_d["fg_kp"], "bg_param": bg}
        for prefix, d in (("dense_motion", motion), ("inpainting", out)):
            for k, v in d.items():
                if isinstance(v, list):
                    res.update({f"{prefix}.{k}.{i}": t for i, t in enumerate(v)})
                else:
                    res[f"{prefix}.{k}"] = v
        return res


# --------------------------------------------------------------------------- training
TPSM_LOSS_WEIGHTS: dict[str, Any] = {"perceptual": [10, 10, 10, 10, 10], "equivariance_value": 10,
                                     "warp_loss": 10, "bg": 10}
TPSM_TRAIN_PARAMS: dict[str, Any] = {"num_epochs": 100, "epoch_milestones": [70, 90], "lr": 2e-4,
                                     "scales": [1, 0.5, 0.25, 0.125], "dropout_epoch": 35, "dropout_maxp": 0.5,
                                     "dropout_startp": 0.0, "dropout_inc_epoch": 10, "bg_start": 0,
                                     "weight_decay": 1e-4, "clip_grad_inf_norm": 10,
                                     "transform_params": {"sigma_affine": 0.05, "sigma_tps": 0.005, "points_tps": 5}}


def tps_dropout(epoch: int, params: Mapping[str, Any] = TPSM_TRAIN_PARAMS) -> tuple[bool, float]:
    """(dropout on?, p) at an official epoch: p rises linearly by maxp per ``dropout_inc_epoch``
    epochs from ``dropout_startp`` up to ``dropout_maxp``, and stops at ``dropout_epoch``."""
    if epoch >= params["dropout_epoch"]:
        return False, 0.0
    p = epoch / params["dropout_inc_epoch"] * params["dropout_maxp"] + params["dropout_startp"]
    return True, float(min(p, params["dropout_maxp"]))


@RECIPES.register()
class TPSMRecipe(OfficialLossRecipe):
    """TPSM training (modules/model.py GeneratorFullModel, train.py): perceptual pyramid, equivariance of
    the control points under a random TPS, warp loss (warped encoder maps vs the driving frame's),
    background-affine cycle loss, TPS dropout in the first 35% of training; Adam's weight decay 1e-4
    as the equivalent L2 term (0.5 wd |p|^2, whose gradient is what Adam adds), inf-norm gradient
    clipping at 10 (kp_detector, dense motion, bg_predictor) in ``before_step``. The dropout schedule
    maps steps to official epochs through the run length the trainer sets (``total_steps``)."""

    name = NAME
    model = NAME
    lr_milestones = (0.7, 0.9)
    default_weights = TPSM_LOSS_WEIGHTS
    train_params = TPSM_TRAIN_PARAMS

    def build(self) -> dict[str, nn.Module]:
        return TPSMCodec.build_modules(self.config)

    def optimizers(self) -> dict[str, list[str]]:
        return {"optimizer": ["inpainting_network", "dense_motion_network", "kp_detector"],
                "optimizer_bg_predictor": ["bg_predictor"]}

    def before_step(self, modules: dict[str, Any]) -> None:
        """Official inf-norm gradient clipping (train.py), between backward and the optimiser step.

        model_parts.training.train calls it after the generator-phase backward."""
        lim = self.train_params["clip_grad_inf_norm"]
        for name in ("kp_detector", "dense_motion_network", "bg_predictor"):
            nn.utils.clip_grad_norm_(modules[name].parameters(), max_norm=lim, norm_type=math.inf)

    def epoch(self, step: int) -> int:
        """The official epoch this step corresponds to (steps spread evenly over num_epochs)."""
        total = int(self.total_steps or 0)
        if total <= 0:
            return self.train_params["num_epochs"]  # unknown length: no dropout phase
        return int(step * self.train_params["num_epochs"] // total)

    def generator_losses(self, modules: dict[str, Any], batch: dict[str, torch.Tensor], step: int
                         ) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        kd, dm, inp, bgp = (modules[k] for k in ("kp_detector", "dense_motion_network", "inpainting_network",
                                                 "bg_predictor"))
        src, drv = batch["source"], batch["driving"]
        kp_s, kp_d = kd(src), kd(drv)
        bg = bgp(src, drv)
        flag, p = tps_dropout(self.epoch(step), self.train_params)
        motion = dm(source_image=src, kp_driving=kp_d, kp_source=kp_s, bg_param=bg, dropout_flag=flag, dropout_p=p)
        out = inp(src, motion)
        w = self.weights
        terms: dict[str, torch.Tensor] = {}
        if sum(w["perceptual"]):
            terms["perceptual"] = self.perceptual()(out["prediction"], drv)
        if w["equivariance_value"]:
            t = self.transform(drv.shape[0], "tpsm")
            kp_t = kd(t.transform_frame(drv))
            terms["equivariance_value"] = w["equivariance_value"] * L.equivariance_value(kp_d["fg_kp"], t,
                                                                                        kp_t["fg_kp"])
        if w["warp_loss"]:
            enc = inp.get_encode(drv, out["occlusion_map"])
            dec = out["warped_encoder_maps"]
            terms["warp_loss"] = w["warp_loss"] * sum((enc[i] - dec[-i - 1]).abs().mean() for i in range(len(enc)))
        if w["bg"]:
            cyc = torch.matmul(bg, bgp(drv, src))
            eye = torch.eye(3, dtype=cyc.dtype, device=cyc.device).view(1, 3, 3)
            terms["bg"] = w["bg"] * (eye - cyc).abs().mean()
        wd = float(self.train_params["weight_decay"])
        if wd:
            # Adam(weight_decay=wd) adds wd * p to every gradient: the gradient of this term
            params = [q for m in modules.values() for q in m.parameters() if q.requires_grad]
            terms["weight_decay"] = 0.5 * wd * sum((q * q).sum() for q in params)
        return terms, {"dropout_p": p if flag else 0.0}

    def losses_info(self) -> dict[str, Any]:
        info = super().losses_info()
        info.update({k: self.train_params[k] for k in ("dropout_epoch", "dropout_maxp", "dropout_startp",
                                                      "dropout_inc_epoch", "weight_decay", "clip_grad_inf_norm")})
        return info
