"""2D building blocks of the FOMM lineage (FOMM, MRAA, TPSM, CFTE, MTTF, FV2V's 2D parts).

One module for every baseline that descends from the First Order Motion Model
(Siarohin et al., NeurIPS 2019): down/up/same/residual blocks, the encoder-
decoder hourglass, band-limited (anti-aliased) downsampling, the [-1, 1]
coordinate grid, Gaussian heatmaps of keypoints (isotropic, or with a full
covariance for MRAA's regions, Siarohin et al., CVPR 2021), and the
pix2pix-style multi-scale discriminator.

Module and parameter names equal those of the authors' checkpoints
(``encoder.down_blocks.i.conv``, ``decoder.up_blocks.i.norm``, ``down.weight``,
``discs.1.down_blocks.0.conv.weight_orig`` ...), so an official state_dict
loads strictly into a network assembled from these blocks. The normalisation
is a choice per network: ``"batch"`` (the official SynchronizedBatchNorm2d has
the same five state_dict entries as :class:`torch.nn.BatchNorm2d`: weight,
bias, running_mean, running_var, num_batches_tracked) or ``"instance"``
(TPSM: :class:`torch.nn.InstanceNorm2d` with affine weight and bias only).

The arithmetic follows the official code op for op, so the conformance
vectors (baselines/vectors) are reproduced within float32 rounding.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from functools import partial
from typing import Any, TypeAlias

import torch
import torch.nn.functional as F
from torch import nn

NORMS = ("batch", "instance")

# a convolution's kernel size or padding: one int for both axes, or (height, width) as the official
# code passes them (``kernel_size=(7, 7), padding=(3, 3)``); nn.Conv2d takes either
Size2d: TypeAlias = int | tuple[int, int]


def make_norm(kind: str, channels: int) -> nn.Module:
    """Affine 2D normalisation: ``batch`` (FOMM/MRAA/FV2V/CFTE) or ``instance`` (TPSM)."""
    if kind == "batch":
        return nn.BatchNorm2d(channels, affine=True)
    if kind == "instance":
        return nn.InstanceNorm2d(channels, affine=True)
    raise ValueError(f"unknown norm {kind!r}; expected one of {NORMS}")


# --------------------------------------------------------------------------- geometry
def make_coordinate_grid(spatial_size: Sequence[int], dtype: torch.dtype = torch.float32,
                         device: torch.device | str | None = None) -> torch.Tensor:
    """(H, W, 2) grid of (x, y) in [-1, 1] (x along width), the convention of grid_sample."""
    h, w = int(spatial_size[0]), int(spatial_size[1])
    x = torch.arange(w, dtype=dtype, device=device)
    y = torch.arange(h, dtype=dtype, device=device)
    x = 2 * (x / (w - 1)) - 1
    y = 2 * (y / (h - 1)) - 1
    xx = x.view(1, -1).expand(h, w)
    yy = y.view(-1, 1).expand(h, w)
    return torch.stack([xx, yy], dim=2)


def kp2gaussian(mean: torch.Tensor, spatial_size: Sequence[int], variance: float | torch.Tensor) -> torch.Tensor:
    """Gaussian heatmaps (..., H, W) centred on ``mean`` (..., 2) in grid coordinates.

    ``variance`` is a float (isotropic, FOMM/TPSM ``kp2gaussian``) or a tensor
    (..., 2, 2) of covariances (MRAA ``region2gaussian``: exp(-½ dᵀ Σ⁻¹ d)).
    """
    lead = mean.shape[:-1]
    grid = make_coordinate_grid(spatial_size, mean.dtype, mean.device)
    grid = grid.view((1,) * len(lead) + grid.shape)
    diff = grid - mean.reshape(*lead, 1, 1, 2)
    if isinstance(variance, torch.Tensor):
        inv = torch.inverse(variance).reshape(*lead, 1, 1, 2, 2)
        quad = torch.matmul(torch.matmul(diff.unsqueeze(-2), inv), diff.unsqueeze(-1))
        return torch.exp(-0.5 * quad.sum(dim=(-1, -2)))
    return torch.exp(-0.5 * (diff ** 2).sum(-1) / variance)


def heatmap_mean(heatmap: torch.Tensor) -> torch.Tensor:
    """Expected grid position (B, K, 2) of normalised heatmaps (B, K, H, W) (FOMM ``gaussian2kp``)."""
    grid = make_coordinate_grid(heatmap.shape[2:], heatmap.dtype, heatmap.device)
    return (heatmap.unsqueeze(-1) * grid[None, None]).sum(dim=(2, 3))


def softmax_heatmap(prediction: torch.Tensor, temperature: float) -> torch.Tensor:
    """Spatial softmax of (B, K, H, W) logits at ``temperature``."""
    b, k = prediction.shape[:2]
    flat = F.softmax(prediction.reshape(b, k, -1) / temperature, dim=2)
    return flat.view(prediction.shape)


def deform_input(inp: torch.Tensor, flow: torch.Tensor, align_corners: bool = False) -> torch.Tensor:
    """grid_sample ``inp`` (B,C,H,W) with a (B,h,w,2) flow, resized bilinearly to (H,W) first if needed.

    FOMM/MRAA call grid_sample and interpolate without ``align_corners`` (the
    torch>=1.3 default, False); TPSM passes True.
    """
    _, h_old, w_old, _ = flow.shape
    _, _, h, w = inp.shape
    if (h_old, w_old) != (h, w):
        flow = F.interpolate(flow.permute(0, 3, 1, 2), size=(h, w), mode="bilinear",
                             align_corners=align_corners).permute(0, 2, 3, 1)
    return F.grid_sample(inp, flow, align_corners=align_corners)


def to_homogeneous(coordinates: torch.Tensor) -> torch.Tensor:
    return torch.cat([coordinates, torch.ones_like(coordinates[..., :1])], dim=-1)


def from_homogeneous(coordinates: torch.Tensor) -> torch.Tensor:
    return coordinates[..., :2] / coordinates[..., 2:3]


# --------------------------------------------------------------------------- blocks
class DownBlock2d(nn.Module):
    """conv -> norm -> ReLU -> 2x2 average pool (hourglass encoder step)."""

    def __init__(self, in_features: int, out_features: int, kernel_size: Size2d = 3,
                 padding: Size2d = 1, groups: int = 1, norm: str = "batch") -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_features, out_features, kernel_size=kernel_size, padding=padding, groups=groups)
        self.norm = make_norm(norm, out_features)
        self.pool = nn.AvgPool2d(kernel_size=(2, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(F.relu(self.norm(self.conv(x))))


class UpBlock2d(nn.Module):
    """nearest x2 upsampling -> conv -> norm -> ReLU (hourglass decoder step)."""

    def __init__(self, in_features: int, out_features: int, kernel_size: Size2d = 3,
                 padding: Size2d = 1, groups: int = 1, norm: str = "batch") -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_features, out_features, kernel_size=kernel_size, padding=padding, groups=groups)
        self.norm = make_norm(norm, out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.norm(self.conv(F.interpolate(x, scale_factor=2))))


class SameBlock2d(nn.Module):
    """conv -> norm -> ReLU at constant resolution."""

    def __init__(self, in_features: int, out_features: int, groups: int = 1, kernel_size: Size2d = 3,
                 padding: Size2d = 1, norm: str = "batch") -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_features, out_features, kernel_size=kernel_size, padding=padding, groups=groups)
        self.norm = make_norm(norm, out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.norm(self.conv(x)))


class ResBlock2d(nn.Module):
    """Pre-activation residual block: x + conv2(relu(norm2(conv1(relu(norm1(x))))))."""

    def __init__(self, in_features: int, kernel_size: Size2d = 3, padding: Size2d = 1, norm: str = "batch") -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_features, in_features, kernel_size=kernel_size, padding=padding)
        self.conv2 = nn.Conv2d(in_features, in_features, kernel_size=kernel_size, padding=padding)
        self.norm1 = make_norm(norm, in_features)
        self.norm2 = make_norm(norm, in_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(F.relu(self.norm1(x)))
        out = self.conv2(F.relu(self.norm2(out)))
        return out + x


def channel_width(block_expansion: int, max_features: int, i: int) -> int:
    """Channels at hourglass level ``i``: block_expansion * 2**i, capped at max_features."""
    return min(max_features, block_expansion * (2 ** i))


def johnson_autoencoder(num_channels: int, block_expansion: int, max_features: int, num_down_blocks: int,
                        num_bottleneck_blocks: int
                        ) -> tuple[SameBlock2d, nn.ModuleList, nn.ModuleList, nn.Sequential, nn.Conv2d]:
    """The Johnson-style image autoencoder of FOMM's OcclusionAwareGenerator (also MRAA's and CFTE's).

    Returns, constructed in the official order (so seeded initial weights are
    unchanged): ``first`` (7x7 SameBlock2d), ``down_blocks`` (3x3 DownBlock2d,
    widths ``block_expansion * 2**i`` capped at ``max_features``), ``up_blocks``
    (the mirror UpBlock2d), ``bottleneck`` (``r0``.. 3x3 ResBlock2d at the
    deepest width) and ``final`` (7x7 conv back to ``num_channels``). The
    generators assign them to their official attribute names in this order,
    so their state_dict keys stay those of the official checkpoints.
    """
    width = partial(channel_width, block_expansion, max_features)
    first = SameBlock2d(num_channels, block_expansion, kernel_size=(7, 7), padding=(3, 3))
    down_blocks = nn.ModuleList(DownBlock2d(width(i), width(i + 1), kernel_size=(3, 3), padding=(1, 1))
                                for i in range(num_down_blocks))
    up_blocks = nn.ModuleList(UpBlock2d(width(num_down_blocks - i), width(num_down_blocks - i - 1),
                                        kernel_size=(3, 3), padding=(1, 1)) for i in range(num_down_blocks))
    bottleneck = nn.Sequential()
    for i in range(num_bottleneck_blocks):
        bottleneck.add_module(f"r{i}", ResBlock2d(width(num_down_blocks), kernel_size=(3, 3), padding=(1, 1)))
    final = nn.Conv2d(block_expansion, num_channels, kernel_size=(7, 7), padding=(3, 3))
    return first, down_blocks, up_blocks, bottleneck, final


class Encoder(nn.Module):
    """Hourglass encoder; returns the input and every down block's output (for the skips)."""

    def __init__(self, block_expansion: int, in_features: int, num_blocks: int = 3, max_features: int = 256,
                 norm: str = "batch") -> None:
        super().__init__()
        width = partial(channel_width, block_expansion, max_features)
        self.down_blocks = nn.ModuleList(
            DownBlock2d(in_features if i == 0 else width(i), width(i + 1), kernel_size=3, padding=1, norm=norm)
            for i in range(num_blocks))
        # channel count of each returned map (input first)
        self.out_channels = [in_features] + [width(i + 1) for i in range(num_blocks)]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outs = [x]
        for block in self.down_blocks:
            outs.append(block(outs[-1]))
        return outs


class Decoder(nn.Module):
    """Hourglass decoder: upsample, concatenate the encoder skip, repeat.

    ``out_filters`` = block_expansion + in_features (the last concatenation);
    ``out_channels`` lists the bottom input's channel count, then the count
    after each concatenation (TPSM uses every level: ``forward(...,
    all_levels=True)`` returns the concatenations).
    """

    def __init__(self, block_expansion: int, in_features: int, num_blocks: int = 3, max_features: int = 256,
                 norm: str = "batch") -> None:
        super().__init__()
        blocks, outs = [], []
        for i in reversed(range(num_blocks)):
            cin = (1 if i == num_blocks - 1 else 2) * channel_width(block_expansion, max_features, i + 1)
            cout = channel_width(block_expansion, max_features, i)
            blocks.append(UpBlock2d(cin, cout, kernel_size=3, padding=1, norm=norm))
            outs.append(cout + (in_features if i == 0 else cout))
        self.up_blocks = nn.ModuleList(blocks)
        self.out_filters = block_expansion + in_features
        # as the official TPSM Decoder: the bottom input's channels, then each concatenation's
        self.out_channels = [channel_width(block_expansion, max_features, num_blocks)] + outs

    def forward(self, skips: list[torch.Tensor], all_levels: bool = False) -> torch.Tensor | list[torch.Tensor]:
        skips = list(skips)
        out = skips.pop()
        levels = []
        for block in self.up_blocks:
            out = torch.cat([block(out), skips.pop()], dim=1)
            levels.append(out)
        return levels if all_levels else out


class Hourglass(nn.Module):
    """U-Net style hourglass (keys ``encoder.down_blocks.i``, ``decoder.up_blocks.i``)."""

    def __init__(self, block_expansion: int, in_features: int, num_blocks: int = 3, max_features: int = 256,
                 norm: str = "batch") -> None:
        super().__init__()
        self.encoder = Encoder(block_expansion, in_features, num_blocks, max_features, norm)
        self.decoder = Decoder(block_expansion, in_features, num_blocks, max_features, norm)
        self.out_filters = self.decoder.out_filters
        self.out_channels = self.decoder.out_channels

    def forward(self, x: torch.Tensor, all_levels: bool = False) -> torch.Tensor | list[torch.Tensor]:
        return self.decoder(self.encoder(x), all_levels)


class AntiAliasInterpolation2d(nn.Module):
    """Gaussian blur then subsample by ``scale`` (band-limited downsampling; buffer ``weight``).

    sigma = (1/scale - 1)/2, kernel 2*round(4 sigma)+1 (13x13 at 0.25).
    ``subsample="stride"`` keeps every (1/scale)-th pixel (FOMM, MRAA);
    ``"nearest"`` uses nearest interpolation by ``scale`` (TPSM); they agree
    when the size is a multiple of 1/scale.
    """

    weight: torch.Tensor

    def __init__(self, channels: int, scale: float, subsample: str = "stride") -> None:
        super().__init__()
        sigma = (1 / scale - 1) / 2
        k = 2 * round(sigma * 4) + 1
        self.ka = k // 2
        self.kb = self.ka - 1 if k % 2 == 0 else self.ka
        t = torch.arange(k, dtype=torch.float32)
        g = torch.exp(-(t - (k - 1) / 2) ** 2 / (2 * sigma ** 2)) if sigma > 0 else (t == (k - 1) / 2).float()
        kernel = g[:, None] * g[None, :]
        kernel = kernel / kernel.sum()
        self.register_buffer("weight", kernel.view(1, 1, k, k).repeat(channels, 1, 1, 1))
        self.groups = channels
        self.scale = scale
        self.int_inv_scale = int(1 / scale)
        if subsample not in ("stride", "nearest"):
            raise ValueError(f"subsample must be 'stride' or 'nearest', not {subsample!r}")
        self.subsample = subsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.scale == 1.0:
            return x
        out = F.conv2d(F.pad(x, (self.ka, self.kb, self.ka, self.kb)), weight=self.weight, groups=self.groups)
        if self.subsample == "stride":
            return out[:, :, ::self.int_inv_scale, ::self.int_inv_scale]
        return F.interpolate(out, scale_factor=(self.scale, self.scale))


class ImagePyramid(nn.Module):
    """Anti-aliased image pyramid (FOMM ``ImagePyramide``): {'prediction_<s>': image at scale s}."""

    def __init__(self, scales: Sequence[float], num_channels: int = 3) -> None:
        super().__init__()
        self.scales = list(scales)
        self.downs = nn.ModuleDict({str(s).replace(".", "-"): AntiAliasInterpolation2d(num_channels, s)
                                    for s in self.scales})

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"prediction_" + k.replace("-", "."): down(x) for k, down in self.downs.items()}


# --------------------------------------------------------------------------- discriminator
class DiscriminatorBlock(nn.Module):
    """4x4 conv (optionally spectral-normalised) -> InstanceNorm -> LeakyReLU(0.2) -> avg pool."""

    def __init__(self, in_features: int, out_features: int, norm: bool = False, kernel_size: int = 4,
                 pool: bool = False, sn: bool = False) -> None:
        super().__init__()
        conv = nn.Conv2d(in_features, out_features, kernel_size=kernel_size)
        self.conv = nn.utils.spectral_norm(conv) if sn else conv
        self.norm = nn.InstanceNorm2d(out_features, affine=True) if norm else None
        self.pool = pool

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv(x)
        if self.norm is not None:
            out = self.norm(out)
        out = F.leaky_relu(out, 0.2)
        return F.avg_pool2d(out, (2, 2)) if self.pool else out


class Discriminator(nn.Module):
    """Pix2pix patch discriminator (FOMM): feature maps of each block and a 1x1 prediction map."""

    def __init__(self, num_channels: int = 3, block_expansion: int = 64, num_blocks: int = 4,
                 max_features: int = 512, sn: bool = False, use_kp: bool = False, num_kp: int = 10,
                 kp_variance: float = 0.01, **_: Any) -> None:
        super().__init__()
        width = partial(channel_width, block_expansion, max_features)
        self.down_blocks = nn.ModuleList(
            DiscriminatorBlock(num_channels + num_kp * int(use_kp) if i == 0 else width(i), width(i + 1),
                               norm=(i != 0), kernel_size=4, pool=(i != num_blocks - 1), sn=sn)
            for i in range(num_blocks))
        last = width(num_blocks)
        conv = nn.Conv2d(last, 1, kernel_size=1)
        self.conv = nn.utils.spectral_norm(conv) if sn else conv
        self.use_kp = use_kp
        self.kp_variance = kp_variance

    def forward(self, x: torch.Tensor, kp: torch.Tensor | None = None) -> tuple[list[torch.Tensor], torch.Tensor]:
        out = x
        if self.use_kp:
            if kp is None:
                raise ValueError("this discriminator uses keypoint heatmaps: pass kp")
            out = torch.cat([out, kp2gaussian(kp, x.shape[2:], self.kp_variance)], dim=1)
        maps = []
        for block in self.down_blocks:
            out = block(out)
            maps.append(out)
        return maps, self.conv(out)


class MultiScaleDiscriminator(nn.Module):
    """One :class:`Discriminator` per pyramid scale (keys ``discs.<scale with - for .>.*``).

    ``forward`` takes the pyramid dict of :class:`ImagePyramid` and returns
    ``{'feature_maps_<s>': [...], 'prediction_map_<s>': tensor}``.
    """

    def __init__(self, scales: Sequence[float] = (1,), **kwargs: Any) -> None:
        super().__init__()
        self.scales = list(scales)
        self.discs = nn.ModuleDict({str(s).replace(".", "-"): Discriminator(**kwargs) for s in self.scales})

    def forward(self, pyramid: dict[str, torch.Tensor], kp: torch.Tensor | None = None) -> dict[str, object]:
        out: dict[str, object] = {}
        for key, disc in self.discs.items():
            s = key.replace("-", ".")
            maps, pred = disc(pyramid["prediction_" + s], kp)
            out["feature_maps_" + s] = maps
            out["prediction_map_" + s] = pred
        return out


# --------------------------------------------------------------------------- helpers
def conv_out_size(size: int, scale: float) -> int:
    """Spatial size after AntiAliasInterpolation2d(stride) at ``scale`` (ceil(size*scale))."""
    return int(math.ceil(size / int(1 / scale))) if scale != 1 else size


def official_yaml_size(data: Mapping[str, Any]) -> int:
    """Frame size of an official YAML config whose ``frame_shape`` is null (MRAA, TPSM): the
    official datasets are TED384 (``root_dir`` .../TED384-v2) at 384 and the others (vox, taichi,
    mgif) at 256."""
    root = str((data.get("dataset_params") or {}).get("root_dir") or "")
    return 384 if "384" in root else 256


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
