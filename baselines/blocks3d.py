"""3D building blocks of FV2V (Wang et al., "One-Shot Free-View Neural Talking-Head
Synthesis for Video Conferencing", CVPR 2021), as in the public re-implementation
zhanglonghao1992/One-Shot_Free-View_Neural_Talking_Head_Synthesis.

FV2V lifts 2D features to a volume (C, D, H, W) whose depth axis D is never
resampled: its down blocks pool and its up blocks upsample only H and W
(factor (1, 2, 2)). Module and parameter names equal the official ones
(``conv``, ``norm``, ``encoder.down_blocks.i``, ``decoder.up_blocks.i``,
``decoder.conv``/``decoder.norm``), so official state_dicts load strictly.

Two code generations exist with identical parameters but different arithmetic
(``variant``):

* ``"9511d25a"`` (the repository head, "new version", config vox-256.yaml):
  up blocks use nearest upsampling, down blocks conv -> norm -> ReLU -> 3D
  average pool (1, 2, 2);
* ``"beta"`` (commit 20157f9 and earlier, "Vox-256-Beta"; copied verbatim
  into the GFVC software, Berlin0610/GFVC_Software and xyzysz/GFVC_Software_v2,
  whose FV2V checkpoint was trained with it): trilinear upsampling, and down
  blocks with a (1, 2, 2)-strided convolution and no pooling.

The 2D blocks are shared with the rest of the FOMM lineage (baselines.blocks).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

VARIANTS = ("9511d25a", "beta")


def check_variant(variant: str) -> str:
    if variant not in VARIANTS:
        raise ValueError(f"unknown FV2V code variant {variant!r}; expected one of {VARIANTS}")
    return variant


def _width(block_expansion: int, max_features: int, i: int) -> int:
    return min(max_features, block_expansion * (2 ** i))


def make_coordinate_grid_3d(spatial_size: Sequence[int], dtype: torch.dtype = torch.float32,
                            device: torch.device | str | None = None) -> torch.Tensor:
    """(D, H, W, 3) grid of (x, y, z) in [-1, 1]: x along W, y along H, z along D (grid_sample order)."""
    d, h, w = (int(s) for s in spatial_size)
    x = 2 * (torch.arange(w, dtype=dtype, device=device) / (w - 1)) - 1
    y = 2 * (torch.arange(h, dtype=dtype, device=device) / (h - 1)) - 1
    z = 2 * (torch.arange(d, dtype=dtype, device=device) / (d - 1)) - 1
    return torch.stack([x.view(1, 1, w).expand(d, h, w), y.view(1, h, 1).expand(d, h, w),
                        z.view(d, 1, 1).expand(d, h, w)], dim=3)


def kp2gaussian_3d(mean: torch.Tensor, spatial_size: Sequence[int], variance: float) -> torch.Tensor:
    """Isotropic Gaussian volumes (..., D, H, W) centred on keypoints ``mean`` (..., 3)."""
    lead = mean.shape[:-1]
    grid = make_coordinate_grid_3d(spatial_size, mean.dtype, mean.device)
    diff = grid.view((1,) * len(lead) + grid.shape) - mean.reshape(*lead, 1, 1, 1, 3)
    return torch.exp(-0.5 * (diff ** 2).sum(-1) / variance)


class ResBlock3d(nn.Module):
    """Pre-activation 3D residual block (keys conv1, conv2, norm1, norm2)."""

    def __init__(self, in_features: int, kernel_size: int = 3, padding: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv3d(in_features, in_features, kernel_size=kernel_size, padding=padding)
        self.conv2 = nn.Conv3d(in_features, in_features, kernel_size=kernel_size, padding=padding)
        self.norm1 = nn.BatchNorm3d(in_features, affine=True)
        self.norm2 = nn.BatchNorm3d(in_features, affine=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(F.relu(self.norm1(x)))
        out = self.conv2(F.relu(self.norm2(out)))
        return out + x


class UpBlock3d(nn.Module):
    """Upsample H and W by 2 (nearest, or trilinear in the beta code) -> conv -> norm -> ReLU."""

    def __init__(self, in_features: int, out_features: int, kernel_size: int = 3, padding: int = 1,
                 groups: int = 1, variant: str = "9511d25a") -> None:
        super().__init__()
        self.conv = nn.Conv3d(in_features, out_features, kernel_size=kernel_size, padding=padding, groups=groups)
        self.norm = nn.BatchNorm3d(out_features, affine=True)
        self.mode = "trilinear" if check_variant(variant) == "beta" else "nearest"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.interpolate(x, scale_factor=(1, 2, 2), mode=self.mode)
        return F.relu(self.norm(self.conv(out)))


class DownBlock3d(nn.Module):
    """Halve H and W: conv -> norm -> ReLU -> avg pool (1, 2, 2), or a (1, 2, 2)-strided conv (beta)."""

    def __init__(self, in_features: int, out_features: int, kernel_size: int = 3, padding: int = 1,
                 groups: int = 1, variant: str = "9511d25a") -> None:
        super().__init__()
        self.strided = check_variant(variant) == "beta"
        self.conv = nn.Conv3d(in_features, out_features, kernel_size=kernel_size, padding=padding, groups=groups,
                              stride=(1, 2, 2) if self.strided else 1)
        self.norm = nn.BatchNorm3d(out_features, affine=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.norm(self.conv(x)))
        return out if self.strided else F.avg_pool3d(out, kernel_size=(1, 2, 2))


class Encoder3d(nn.Module):
    """3D hourglass encoder: returns the input and every down block's output (skips)."""

    def __init__(self, block_expansion: int, in_features: int, num_blocks: int = 3, max_features: int = 256,
                 variant: str = "9511d25a") -> None:
        super().__init__()
        self.down_blocks = nn.ModuleList(
            DownBlock3d(in_features if i == 0 else _width(block_expansion, max_features, i),
                        _width(block_expansion, max_features, i + 1), variant=variant)
            for i in range(num_blocks))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outs = [x]
        for block in self.down_blocks:
            outs.append(block(outs[-1]))
        return outs


class Decoder3d(nn.Module):
    """3D hourglass decoder: up block, concatenate the skip, repeat; then a 3x3x3 conv -> norm -> ReLU.

    The final ``conv``/``norm`` pair (out_filters -> out_filters) is FV2V's
    addition to the FOMM hourglass; ``out_filters`` = block_expansion + in_features.
    """

    def __init__(self, block_expansion: int, in_features: int, num_blocks: int = 3, max_features: int = 256,
                 variant: str = "9511d25a") -> None:
        super().__init__()
        blocks = []
        for i in reversed(range(num_blocks)):
            cin = (1 if i == num_blocks - 1 else 2) * _width(block_expansion, max_features, i + 1)
            blocks.append(UpBlock3d(cin, _width(block_expansion, max_features, i), variant=variant))
        self.up_blocks = nn.ModuleList(blocks)
        self.out_filters = block_expansion + in_features
        self.conv = nn.Conv3d(self.out_filters, self.out_filters, kernel_size=3, padding=1)
        self.norm = nn.BatchNorm3d(self.out_filters, affine=True)

    def forward(self, skips: list[torch.Tensor]) -> torch.Tensor:
        skips = list(skips)
        out = skips.pop()
        for block in self.up_blocks:
            out = torch.cat([block(out), skips.pop()], dim=1)
        return F.relu(self.norm(self.conv(out)))


class Hourglass3d(nn.Module):
    """3D U-Net (keys ``encoder.down_blocks.i``, ``decoder.up_blocks.i``, ``decoder.conv``, ``decoder.norm``)."""

    def __init__(self, block_expansion: int, in_features: int, num_blocks: int = 3, max_features: int = 256,
                 variant: str = "9511d25a") -> None:
        super().__init__()
        self.encoder = Encoder3d(block_expansion, in_features, num_blocks, max_features, variant)
        self.decoder = Decoder3d(block_expansion, in_features, num_blocks, max_features, variant)
        self.out_filters = self.decoder.out_filters

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))


class ResBottleneck(nn.Module):
    """ResNet bottleneck (1x1 -> 3x3 (stride) -> 1x1, in/4 wide) of FV2V's head-pose estimator.

    With ``stride`` != 1 the identity path is a strided 1x1 conv ``skip`` with ``norm4``.
    """

    def __init__(self, in_features: int, stride: int) -> None:
        super().__init__()
        mid = in_features // 4
        self.conv1 = nn.Conv2d(in_features, mid, kernel_size=1)
        self.conv2 = nn.Conv2d(mid, mid, kernel_size=3, padding=1, stride=stride)
        self.conv3 = nn.Conv2d(mid, in_features, kernel_size=1)
        self.norm1 = nn.BatchNorm2d(mid, affine=True)
        self.norm2 = nn.BatchNorm2d(mid, affine=True)
        self.norm3 = nn.BatchNorm2d(in_features, affine=True)
        self.stride = stride
        if stride != 1:
            self.skip = nn.Conv2d(in_features, in_features, kernel_size=1, stride=stride)
            self.norm4 = nn.BatchNorm2d(in_features, affine=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.norm1(self.conv1(x)))
        out = F.relu(self.norm2(self.conv2(out)))
        out = self.norm3(self.conv3(out))
        if self.stride != 1:
            x = self.norm4(self.skip(x))
        return F.relu(out + x)
