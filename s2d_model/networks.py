"""Sparse2Dense networks (built from an :class:`~s2d_model.config.S2DConfig`).

Sparse2Dense (CTC_FACTS section 6): the encoder sends 15 3D keypoints per
inter frame; the decoder turns the sparse keypoint motion into a dense 3D flow
over a texture feature volume of the key frame, generates the frame and
regresses 10475 x 2 body-mesh vertices. The paper has no public code; the
module structure follows the paper, the layer layout follows FV2V (Wang et
al., CVPR 2021), whose sizes fill in what the paper leaves open.

Conventions: images are float (N, 3, H, W) in [0, 1]; keypoints are
(N, K, 3) with (x, y, z) in [-1, 1] matching ``grid_sample`` order
(x along W, y along H, z along the depth D); all grids use align_corners=True.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from s2d_model.config import S2DConfig


# ----------------------------------------------------------------- building blocks
class ResBlock2d(nn.Module):
    """Pre-activation residual block (BN-ReLU-conv twice), keeps resolution and width."""

    def __init__(self, ch: int) -> None:
        super().__init__()
        self.n1, self.c1 = nn.BatchNorm2d(ch), nn.Conv2d(ch, ch, 3, padding=1)
        self.n2, self.c2 = nn.BatchNorm2d(ch), nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.c1(F.relu(self.n1(x)))
        return x + self.c2(F.relu(self.n2(y)))


class ResBlock3d(nn.Module):
    def __init__(self, ch: int) -> None:
        super().__init__()
        self.n1, self.c1 = nn.BatchNorm3d(ch), nn.Conv3d(ch, ch, 3, padding=1)
        self.n2, self.c2 = nn.BatchNorm3d(ch), nn.Conv3d(ch, ch, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.c1(F.relu(self.n1(x)))
        return x + self.c2(F.relu(self.n2(y)))


def _conv_bn_relu(dim: int, cin: int, cout: int, k: int = 3) -> nn.Sequential:
    conv = nn.Conv2d if dim == 2 else nn.Conv3d
    bn = nn.BatchNorm2d if dim == 2 else nn.BatchNorm3d
    return nn.Sequential(conv(cin, cout, k, padding=k // 2), bn(cout), nn.ReLU(inplace=True))


class Down2d(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.body = _conv_bn_relu(2, cin, cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(self.body(x), 2)


class Up2d(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.body = _conv_bn_relu(2, cin, cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class Down3d(nn.Module):
    """3D down block pooling H and W only: the depth axis keeps its D bins (as in FV2V)."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.body = _conv_bn_relu(3, cin, cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool3d(self.body(x), (1, 2, 2))


class Up3d(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.body = _conv_bn_relu(3, cin, cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(F.interpolate(x, scale_factor=(1.0, 2.0, 2.0), mode="nearest"))


class Hourglass3d(nn.Module):
    """3D U-Net with skip connections; output = last decoder features concatenated with the input."""

    def __init__(self, in_features: int, block_expansion: int, max_features: int, num_blocks: int) -> None:
        super().__init__()

        def width(i: int) -> int:
            return min(max_features, block_expansion * 2 ** i)

        self.down = nn.ModuleList(
            Down3d(in_features if i == 0 else width(i), width(i + 1)) for i in range(num_blocks))
        up = []
        for i in reversed(range(num_blocks)):
            cin = (1 if i == num_blocks - 1 else 2) * width(i + 1)
            up.append(Up3d(cin, width(i)))
        self.up = nn.ModuleList(up)
        self.out_filters = block_expansion + in_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = [x]
        for d in self.down:
            skips.append(d(skips[-1]))
        out = skips.pop()
        for u in self.up:
            out = torch.cat([u(out), skips.pop()], dim=1)
        return out


class AntiAliasDownsample(nn.Module):
    """Gaussian blur then subsample (as FOMM/FV2V do before the keypoint U-Net)."""

    weight: torch.Tensor  # buffer

    def __init__(self, channels: int, scale: float) -> None:
        super().__init__()
        self.scale = scale
        sigma = (1 / scale - 1) / 2
        ks = 2 * round(sigma * 4) + 1
        ax = torch.arange(ks, dtype=torch.float32) - ks // 2
        g = torch.exp(-(ax ** 2) / (2 * max(sigma, 1e-3) ** 2))
        k2 = torch.outer(g, g)
        k2 = k2 / k2.sum()
        self.register_buffer("weight", k2.expand(channels, 1, ks, ks).contiguous(), persistent=False)
        self.pad = ks // 2
        self.groups = channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.scale == 1.0:
            return x
        x = F.conv2d(F.pad(x, [self.pad] * 4, mode="reflect"), self.weight, groups=self.groups)
        step = int(round(1 / self.scale))
        return x[:, :, ::step, ::step]


def coordinate_grid(d: int, h: int, w: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """Identity grid (D, H, W, 3) with (x, y, z) in [-1, 1] (align_corners=True)."""
    z = torch.linspace(-1, 1, d, device=device, dtype=dtype) if d > 1 else torch.zeros(1, device=device, dtype=dtype)
    y = torch.linspace(-1, 1, h, device=device, dtype=dtype)
    x = torch.linspace(-1, 1, w, device=device, dtype=dtype)
    zz, yy, xx = torch.meshgrid(z, y, x, indexing="ij")
    return torch.stack([xx, yy, zz], dim=-1)


# ----------------------------------------------------------------- modules
class KeypointDetector(nn.Module):
    """Image -> 15 3D keypoints: downsample by s, 2D encoder, reshape to 3D, 3D decoder,
    softmax heatmap over the D x H x W grid (with temperature), expected coordinates."""

    def __init__(self, cfg: S2DConfig) -> None:
        super().__init__()
        k = cfg.kp
        self.cfg = k
        self.down = AntiAliasDownsample(3, k.scale_factor)

        def width(i: int) -> int:
            return min(k.max_features, k.block_expansion * 2 ** i)

        self.enc = nn.ModuleList(Down2d(3 if i == 0 else width(i), width(i + 1)) for i in range(k.num_blocks))
        self.to3d = nn.Conv2d(width(k.num_blocks), k.reshape_channels, 1)
        c3 = k.reshape_channels // k.reshape_depth
        dec = []
        for i in range(k.num_blocks):
            cin = c3 if i == 0 else width(k.num_blocks - i)
            dec.append(Up3d(cin, width(k.num_blocks - i - 1)))
        self.dec = nn.ModuleList(dec)
        self.head = nn.Conv3d(k.block_expansion, k.num_kp, k.head_kernel, padding=k.head_kernel // 2)

    def heatmaps(self, x: torch.Tensor) -> torch.Tensor:
        h = self.down(x)
        for e in self.enc:
            h = e(h)
        h = self.to3d(h)
        n, c, hh, ww = h.shape
        h = h.view(n, c // self.cfg.reshape_depth, self.cfg.reshape_depth, hh, ww)
        for d in self.dec:
            h = d(h)
        return self.head(h)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.heatmaps(x)
        n, k, d, h, w = logits.shape
        prob = F.softmax(logits.view(n, k, -1) / self.cfg.temperature, dim=-1)
        grid = coordinate_grid(d, h, w, device=x.device, dtype=prob.dtype).view(-1, 3)
        return prob @ grid  # (N, K, 3)


class TextureEncoder(nn.Module):
    """Key frame -> 3D texture feature volume (N, C, D, H/2^n, W/2^n) (FV2V's appearance extractor)."""

    def __init__(self, cfg: S2DConfig) -> None:
        super().__init__()
        t = cfg.texture
        self.cfg = t
        self.first = _conv_bn_relu(2, 3, t.block_expansion, 7)

        def width(i: int) -> int:
            return min(t.max_features, t.block_expansion * 2 ** i)

        self.down = nn.ModuleList(Down2d(width(i), width(i + 1)) for i in range(t.num_down_blocks))
        self.to3d = nn.Conv2d(width(t.num_down_blocks), t.max_features, 1)
        self.res = nn.Sequential(*[ResBlock3d(t.feature_channels) for _ in range(t.num_resblocks)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.first(x)
        for d in self.down:
            h = d(h)
        h = self.to3d(h)
        n, _, hh, ww = h.shape
        return self.res(h.view(n, self.cfg.feature_channels, self.cfg.depth, hh, ww))


class SparseToDenseMotion(nn.Module):
    """Sparse keypoint motions -> dense 3D flow + occlusion map.

    K+1 sparse motions: the identity grid (background) and, per keypoint, the
    identity grid shifted by (source kp - driving kp). The compressed texture
    volume is coarsely warped by each; with the Gaussian heatmap difference of
    driving vs source keypoints it feeds a 3D U-Net predicting a softmax mask
    over the K+1 motions (their weighted sum is the dense flow) and a 2D
    occlusion map.
    """

    def __init__(self, cfg: S2DConfig) -> None:
        super().__init__()
        m, t, k = cfg.motion, cfg.texture, cfg.kp
        self.num_kp, self.variance, self.compress_ch = k.num_kp, m.kp_variance, m.compress
        self.compress = nn.Sequential(nn.Conv3d(t.feature_channels, m.compress, 1), nn.BatchNorm3d(m.compress),
                                      nn.ReLU(inplace=True))
        self.hourglass = Hourglass3d((k.num_kp + 1) * (m.compress + 1), m.block_expansion, m.max_features, m.num_blocks)
        self.mask = nn.Conv3d(self.hourglass.out_filters, k.num_kp + 1, m.mask_kernel, padding=m.mask_kernel // 2)
        self.occlusion = nn.Conv2d(self.hourglass.out_filters * t.depth, 1, m.occlusion_kernel,
                                   padding=m.occlusion_kernel // 2)

    def forward(self, feature: torch.Tensor, kp_source: torch.Tensor,
                kp_driving: torch.Tensor) -> dict[str, torch.Tensor]:
        n, _, d, h, w = feature.shape
        k1 = self.num_kp + 1
        grid = coordinate_grid(d, h, w, device=feature.device, dtype=feature.dtype)  # (D,H,W,3)
        shift = (kp_source - kp_driving).view(n, self.num_kp, 1, 1, 1, 3)
        motions = torch.cat([grid.expand(n, 1, d, h, w, 3), grid.unsqueeze(0) + shift], dim=1)  # (N,K+1,D,H,W,3)

        def gauss(kp: torch.Tensor) -> torch.Tensor:
            diff = grid.unsqueeze(0) - kp.view(n, self.num_kp, 1, 1, 1, 3)
            return torch.exp(-0.5 * (diff ** 2).sum(-1) / self.variance)

        heat = gauss(kp_driving) - gauss(kp_source)  # (N,K,D,H,W)
        heat = torch.cat([torch.zeros_like(heat[:, :1]), heat], dim=1).unsqueeze(2)
        comp = self.compress(feature)
        rep = comp.unsqueeze(1).expand(n, k1, self.compress_ch, d, h, w).reshape(n * k1, self.compress_ch, d, h, w)
        deformed = F.grid_sample(rep, motions.reshape(n * k1, d, h, w, 3), align_corners=True)
        deformed = deformed.view(n, k1, self.compress_ch, d, h, w)
        x = torch.cat([heat, deformed], dim=2).view(n, -1, d, h, w)
        pred = self.hourglass(x)
        mask = F.softmax(self.mask(pred), dim=1)  # (N,K+1,D,H,W)
        flow = (mask.unsqueeze(-1) * motions).sum(1)  # (N,D,H,W,3)
        occ = torch.sigmoid(self.occlusion(pred.reshape(n, -1, h, w)))
        return {"flow": flow, "mask": mask, "occlusion": occ}


def warp3d(feature: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """Backward-warp a (N, C, D, H, W) volume by a (N, D, H, W, 3) sampling grid."""
    return F.grid_sample(feature, flow, align_corners=True)


class FrameGenerator(nn.Module):
    """Refined feature (occlusion x warped texture) -> 2D ResBlocks -> upsampling -> RGB in [0, 1]."""

    def __init__(self, cfg: S2DConfig) -> None:
        super().__init__()
        t, g = cfg.texture, cfg.generator
        self.bottleneck = t.block_expansion * 2 ** t.num_down_blocks
        self.third = nn.Sequential(nn.Conv2d(t.max_features, self.bottleneck, 3, padding=1),
                                   nn.BatchNorm2d(self.bottleneck), nn.LeakyReLU(0.2, inplace=True))
        self.fourth = nn.Conv2d(self.bottleneck, self.bottleneck, 1)
        self.res = nn.Sequential(*[ResBlock2d(self.bottleneck) for _ in range(g.num_resblocks)])
        ups = []
        for i in range(t.num_down_blocks):
            cin = t.block_expansion * 2 ** (t.num_down_blocks - i)
            ups.append(Up2d(cin, cin // 2))
        self.up = nn.ModuleList(ups)
        self.final = nn.Conv2d(t.block_expansion, 3, 7, padding=3)

    def forward(self, refined: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n, c, d, h, w = refined.shape
        x = self.fourth(self.third(refined.reshape(n, c * d, h, w)))
        feat = self.res(x)
        y = feat
        for u in self.up:
            y = u(y)
        return torch.sigmoid(self.final(y)), feat


class VertexHead(nn.Module):
    """Generator bottleneck -> ResBlocks -> adaptive average pool -> FC -> (N, V, 2) vertices."""

    def __init__(self, cfg: S2DConfig, in_channels: int) -> None:
        super().__init__()
        v = cfg.vertex
        ch = v.channels or in_channels
        self.num_vertices = v.num_vertices
        self.proj = nn.Identity() if ch == in_channels else nn.Conv2d(in_channels, ch, 1)
        self.res = nn.Sequential(*[ResBlock2d(ch) for _ in range(v.num_resblocks)])
        self.pool = nn.AdaptiveAvgPool2d(v.pool_size)
        self.fc = nn.Linear(ch * v.pool_size ** 2, 2 * v.num_vertices)

    def forward(self, feat: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.res(self.proj(feat))).flatten(1)
        return self.fc(x).view(-1, self.num_vertices, 2)


class Sparse2Dense(nn.Module):
    """The whole codec-side model (keypoint detector + decoder); the discriminator is separate."""

    def __init__(self, cfg: S2DConfig) -> None:
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        self.kp_detector = KeypointDetector(cfg)
        self.texture = TextureEncoder(cfg)
        self.motion = SparseToDenseMotion(cfg)
        self.generator = FrameGenerator(cfg)
        self.vertex_head = VertexHead(cfg, self.generator.bottleneck)

    def detect(self, images: torch.Tensor) -> torch.Tensor:
        return self.kp_detector(images)

    def synthesise(self, feature: torch.Tensor, kp_source: torch.Tensor, kp_driving: torch.Tensor,
                   vertices: bool = True) -> dict[str, torch.Tensor]:
        """Decode driving frames from a texture volume (expanded to the batch) and two keypoint sets."""
        n = kp_driving.shape[0]
        if feature.shape[0] != n:
            feature = feature.expand(n, *feature.shape[1:])
        if kp_source.shape[0] != n:
            kp_source = kp_source.expand(n, *kp_source.shape[1:])
        mot = self.motion(feature, kp_source, kp_driving)
        refined = warp3d(feature, mot["flow"]) * mot["occlusion"].unsqueeze(2)
        img, feat = self.generator(refined)
        out = {"prediction": img, "occlusion": mot["occlusion"], "mask": mot["mask"], "flow": mot["flow"]}
        if vertices:
            out["vertices"] = self.vertex_head(feat)
        return out

    def forward(self, source: torch.Tensor, driving: torch.Tensor) -> dict[str, torch.Tensor]:
        kp_s, kp_d = self.detect(source), self.detect(driving)
        out = self.synthesise(self.texture(source), kp_s, kp_d)
        out.update(kp_source=kp_s, kp_driving=kp_d)
        return out


class _DiscDown(nn.Module):
    def __init__(self, cin: int, cout: int, norm: bool, pool: bool, sn: bool) -> None:
        super().__init__()
        conv = nn.Conv2d(cin, cout, 4)
        self.conv = nn.utils.parametrizations.spectral_norm(conv) if sn else conv
        self.norm = nn.InstanceNorm2d(cout, affine=True) if norm else nn.Identity()
        self.pool = pool

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.leaky_relu(self.norm(self.conv(x)), 0.2)
        return F.avg_pool2d(x, 2) if self.pool else x


class PatchDiscriminator(nn.Module):
    def __init__(self, block_expansion: int, max_features: int, num_blocks: int, sn: bool) -> None:
        super().__init__()
        blocks = []
        for i in range(num_blocks):
            cin = 3 if i == 0 else min(max_features, block_expansion * 2 ** i)
            cout = min(max_features, block_expansion * 2 ** (i + 1))
            blocks.append(_DiscDown(cin, cout, norm=i != 0, pool=i != num_blocks - 1, sn=sn))
        self.blocks = nn.ModuleList(blocks)
        conv = nn.Conv2d(cout, 1, 1)
        self.out = nn.utils.parametrizations.spectral_norm(conv) if sn else conv

    def forward(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        feats = []
        for b in self.blocks:
            x = b(x)
            feats.append(x)
        return feats, self.out(x)


class MultiScaleDiscriminator(nn.Module):
    """One patch discriminator per image scale (hinge GAN + feature matching, as FOMM/FV2V)."""

    def __init__(self, cfg: S2DConfig) -> None:
        super().__init__()
        d = cfg.discriminator
        self.scales = list(d.scales)
        self.discs = nn.ModuleList(PatchDiscriminator(d.block_expansion, d.max_features, d.num_blocks, d.spectral_norm)
                                   for _ in self.scales)

    def forward(self, x: torch.Tensor) -> list[tuple[list[torch.Tensor], torch.Tensor]]:
        out = []
        for s, disc in zip(self.scales, self.discs, strict=True):
            xs = x if s == 1.0 else F.interpolate(x, scale_factor=s, mode="bilinear", align_corners=False,
                                                  antialias=True)
            out.append(disc(xs))
        return out


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def module_parameters(model: Sparse2Dense, disc: nn.Module | None = None) -> dict[str, int]:
    out = {
        "keypoint_detector": count_parameters(model.kp_detector),
        "texture_encoder": count_parameters(model.texture),
        "dense_motion": count_parameters(model.motion),
        "frame_generator": count_parameters(model.generator),
        "vertex_head": count_parameters(model.vertex_head),
    }
    out["generator_total"] = out["texture_encoder"] + out["dense_motion"] + out["frame_generator"]
    if disc is not None:
        out["discriminator"] = count_parameters(disc)
    out["codec_total"] = count_parameters(model)
    return out

