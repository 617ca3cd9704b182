"""DISTS: Deep Image Structure and Texture Similarity.

K. Ding, K. Ma, S. Wang, E. P. Simoncelli, "Image Quality Assessment: Unifying
Structure and Texture Similarity", IEEE TPAMI 44(5), 2020.

Numerically the same network and score as the DISTS_pytorch 0.1 package
(tests compare with ``DISTS_pytorch.DISTS`` to 1e-6), restructured so the
reference's feature maps can be computed once and reused for every decoded
version of the sequence. Weights: VGG16 ImageNet trunk plus the package's
``weights.pt`` (alpha/beta, 1x1475x1x1 each), both sha256-verified.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from metrics.nets import load_package_tensors, load_trunk

CHANNELS = (3, 64, 128, 256, 512, 512)
# VGG16 ``features`` indices of the 4 max-pools that DISTS replaces by L2 pooling.
_POOLS = (4, 9, 16, 23)


class L2Pool(nn.Module):
    """Hanning-window L2 pooling (stride 2) that DISTS uses instead of max pooling (anti-aliasing)."""

    filter: torch.Tensor  # buffer

    def __init__(self, channels: int) -> None:
        super().__init__()
        a = np.hanning(5)[1:-1]
        g = torch.tensor(a[:, None] * a[None, :], dtype=torch.float32)
        g = g / g.sum()
        self.register_buffer("filter", g[None, None].repeat(channels, 1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.conv2d(x * x, self.filter, stride=2, padding=1, groups=x.shape[1])
        return (out + 1e-12).sqrt()


class DistsNet(nn.Module):
    """VGG16 stages with L2 pooling; ``features`` and ``score`` are split for caching."""

    mean: torch.Tensor  # buffers
    std: torch.Tensor
    alpha: torch.Tensor
    beta: torch.Tensor

    def __init__(self, trunk: nn.Sequential, alpha: torch.Tensor, beta: torch.Tensor) -> None:
        super().__init__()
        bounds = [(0, 4), (5, 9), (10, 16), (17, 23), (24, 30)]
        stages = []
        for i, (a, b) in enumerate(bounds):
            mods: list[nn.Module] = []
            if i > 0:
                mods.append(L2Pool(CHANNELS[i]))
            mods.extend(trunk[j] for j in range(a, b))
            stages.append(nn.Sequential(*mods))
        self.stages = nn.ModuleList(stages)
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, -1, 1, 1))
        if alpha.shape != (1, sum(CHANNELS), 1, 1) or beta.shape != alpha.shape:
            raise ValueError(f"DISTS alpha/beta must be 1x{sum(CHANNELS)}x1x1, got {alpha.shape}/{beta.shape}")
        self.register_buffer("alpha", alpha.float().clone())
        self.register_buffer("beta", beta.float().clone())
        # channels-last lets oneDNN pick faster CPU convolution kernels (~1.3x measured on VGG16 at 384x384)
        self.to(memory_format=torch.channels_last)
        self.eval()

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """x: (N, 3, H, W) in [0, 1] -> the 6 maps DISTS compares (input + 5 stages)."""
        x = x.contiguous(memory_format=torch.channels_last)
        h = (x - self.mean) / self.std
        out = [x]
        for st in self.stages:
            h = st(h)
            out.append(h)
        return out

    def score(self, fx: list[torch.Tensor], fy: list[torch.Tensor]) -> torch.Tensor:
        """Per-image DISTS (N,), same arithmetic order as the package's forward."""
        c1 = c2 = 1e-6
        w_sum = self.alpha.sum() + self.beta.sum()
        alpha = torch.split(self.alpha / w_sum, list(CHANNELS), dim=1)
        beta = torch.split(self.beta / w_sum, list(CHANNELS), dim=1)
        d1: torch.Tensor | int = 0
        d2: torch.Tensor | int = 0
        for k in range(len(CHANNELS)):
            xm = fx[k].mean([2, 3], keepdim=True)
            ym = fy[k].mean([2, 3], keepdim=True)
            s1 = (2 * xm * ym + c1) / (xm ** 2 + ym ** 2 + c1)
            d1 = d1 + (alpha[k] * s1).sum(1, keepdim=True)
            xv = ((fx[k] - xm) ** 2).mean([2, 3], keepdim=True)
            yv = ((fy[k] - ym) ** 2).mean([2, 3], keepdim=True)
            cov = (fx[k] * fy[k]).mean([2, 3], keepdim=True) - xm * ym
            s2 = (2 * cov + c2) / (xv + yv + c2)
            d2 = d2 + (beta[k] * s2).sum(1, keepdim=True)
        assert isinstance(d1, torch.Tensor) and isinstance(d2, torch.Tensor)  # CHANNELS is not empty
        return (1 - (d1 + d2)).reshape(-1)


def load(weights_dir: Path | None = None) -> DistsNet:
    w = load_package_tensors("dists-weights.pt", weights_dir)
    return DistsNet(load_trunk("vgg", weights_dir), w["alpha"], w["beta"])


def resize(x: torch.Tensor, rule: str) -> torch.Tensor:
    """Apply the DISTS resize rule of the protocol (CTC_FACTS section 4, OPEN -> recorded).

    gfvc-avgpool: the GFVC software's rule, average-pool by f = round(min(H, W) / 256)
      (Python rounding) when f >= 2, so 384x384 is scored at 192x192, 256x256 natively.
    native: no resizing (the package's forward).
    short-side-256: the DISTS authors' demo: short side to 256 when larger (bilinear,
      antialiased, on the float tensor).
    """
    h, w = x.shape[-2:]
    if rule == "native":
        return x
    if rule == "gfvc-avgpool":
        f = round(min(h, w) / 256)
        return F.avg_pool2d(x, kernel_size=f) if f >= 2 else x
    if rule == "short-side-256":
        if min(h, w) <= 256:
            return x
        if h <= w:
            size = (256, int(256 * w / h))
        else:
            size = (int(256 * h / w), 256)
        return F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
    raise ValueError(f"unknown DISTS resize rule {rule!r}")
