"""Sparse2Dense training losses with the paper's weights (CTC_FACTS section 6).

total = 10 * equivariance + 10 * keypoint prior + 10 * perceptual
        + 1 * adversarial (hinge) + 10 * feature matching + 100 * vertex

* perceptual: VGG19 pyramid (FOMM/FV2V): L1 between relu1_1..relu5_1 features
  of prediction and target at the image scales 1, 1/2, 1/4, 1/8. VGG19 needs
  ImageNet weights (torchvision ``vgg19-dcbb9e9d.pth``, sha256 verified); when
  they are absent the loss is an explicitly named fallback
  (``pixel-pyramid-l1``: L1 over the same image pyramid in pixel space), a
  warning is logged and the name is stored in every checkpoint.
* equivariance (FOMM): keypoints of a randomly affine-warped frame, mapped
  back through the warp, must equal the keypoints of the frame (x, y only; z
  is not affected by a 2D warp).
* keypoint prior (FV2V): keypoints keep a minimum squared distance 0.1 from
  each other and a mean depth of 0.33.
* vertex: L1 between predicted and target vertices (normalised coordinates).
"""
from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from gfvc.errors import WeightsError
from s2d_model.config import LossConfig

log = logging.getLogger(__name__)

VGG19_FILE = "vgg19-dcbb9e9d.pth"
FALLBACK_NAME = "pixel-pyramid-l1"
# relu1_1, relu2_1, relu3_1, relu4_1, relu5_1 are after these indices of torchvision's vgg19.features
_VGG_SLICES = (2, 7, 12, 21, 30)


def find_vgg19_weights(weights_dir: Path | None = None) -> Path:
    """Locate and sha256-verify VGG19 weights through the suite's weight registry.

    Raises WeightsError naming the file, its hash and how to install it.
    """
    from metrics import weights as registry

    return Path(registry.locate(VGG19_FILE, weights_dir))


class VGG19Features(nn.Module):
    """Frozen VGG19 giving relu1_1..relu5_1 on ImageNet-normalised input."""

    mean: torch.Tensor  # buffers
    std: torch.Tensor

    def __init__(self, weights: Path) -> None:
        super().__init__()
        from torchvision.models import vgg19

        net = vgg19()
        net.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
        feats = net.features
        self.slices = nn.ModuleList()
        prev = 0
        for end in _VGG_SLICES:
            self.slices.append(nn.Sequential(*[feats[i] for i in range(prev, end)]))
            prev = end
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1), persistent=False)
        for p in self.parameters():
            p.requires_grad_(False)
        self.eval()

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        h = (x - self.mean) / self.std
        out = []
        for s in self.slices:
            h = s(h)
            out.append(h)
        return out


def _pyramid(x: torch.Tensor, scales: list[float]) -> list[torch.Tensor]:
    return [x if s == 1.0 else F.interpolate(x, scale_factor=s, mode="bilinear", align_corners=False, antialias=True)
            for s in scales]


class PerceptualLoss(nn.Module):
    """VGG19 pyramid L1, or the named pixel-space fallback when VGG19 weights are unavailable."""

    def __init__(self, scales: list[float], weights_dir: Path | None = None, allow_fallback: bool = True) -> None:
        super().__init__()
        self.scales = list(scales)
        try:
            self.vgg: VGG19Features | None = VGG19Features(find_vgg19_weights(weights_dir))
            self.name = "vgg19-pyramid"
        except WeightsError as e:
            if not allow_fallback:
                raise
            log.warning("perceptual loss: %s -- training with the FALLBACK %r (pixel-space L1 over the "
                        "image pyramid); recorded in the checkpoint metadata", e, FALLBACK_NAME)
            self.vgg = None
            self.name = FALLBACK_NAME

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        total = pred.new_zeros(())
        for p, t in zip(_pyramid(pred, self.scales), _pyramid(target, self.scales), strict=True):
            if self.vgg is None:
                total = total + (p - t).abs().mean()
            else:
                with torch.no_grad():
                    ft = self.vgg(t)
                for a, b in zip(self.vgg(p), ft, strict=True):
                    total = total + (a - b).abs().mean()
        return total


def random_affine(n: int, sigma: float, device=None, generator: torch.Generator | None = None) -> torch.Tensor:
    """(N, 2, 3) affine maps close to identity: A = I + N(0, sigma), t ~ N(0, sigma)."""
    noise = torch.randn(n, 2, 3, generator=generator) * sigma
    eye = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    return (eye + noise).to(device)


def warp_affine(images: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Warped image W(p) = image(theta p) for p in normalised coordinates (align_corners=True)."""
    grid = F.affine_grid(theta, list(images.shape), align_corners=True)
    return F.grid_sample(images, grid, padding_mode="reflection", align_corners=True)


def equivariance_loss(kp: torch.Tensor, kp_of_warped: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """A keypoint at p in the warped image sits at theta p in the original (x, y only)."""
    xy = kp_of_warped[..., :2]
    mapped = xy @ theta[:, :, :2].transpose(1, 2) + theta[:, None, :, 2]
    return (kp[..., :2] - mapped).abs().mean()


def keypoint_prior_loss(kp: torch.Tensor, min_dist: float = 0.1, depth: float = 0.33) -> torch.Tensor:
    """FV2V prior: sum over pairs of max(0, Dt - |ki - kj|^2) plus |mean z - zt|."""
    d2 = ((kp.unsqueeze(2) - kp.unsqueeze(1)) ** 2).sum(-1)
    k = kp.shape[1]
    off = ~torch.eye(k, dtype=torch.bool, device=kp.device)
    sep = F.relu(min_dist - d2)[:, off].sum(-1).mean()
    dep = (kp[..., 2].mean(-1) - depth).abs().mean()
    return sep + dep


def _tsum(values: Iterable[torch.Tensor]) -> torch.Tensor:
    """sum() of tensors, typed as a tensor (it starts from int 0, so the value is unchanged)."""
    return cast(torch.Tensor, sum(values))


def hinge_d_loss(real_logits: list[torch.Tensor], fake_logits: list[torch.Tensor]) -> torch.Tensor:
    return _tsum(F.relu(1 - r).mean() + F.relu(1 + f).mean() for r, f in zip(real_logits, fake_logits, strict=True))


def hinge_g_loss(fake_logits: list[torch.Tensor]) -> torch.Tensor:
    return _tsum(-f.mean() for f in fake_logits)


def feature_matching_loss(real_feats: list[list[torch.Tensor]], fake_feats: list[list[torch.Tensor]]) -> torch.Tensor:
    return _tsum((r.detach() - f).abs().mean()
                 for rs, fs in zip(real_feats, fake_feats, strict=True) for r, f in zip(rs, fs, strict=True))


def vertex_loss(pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    """L1 over vertices; ``valid`` (N,) masks samples without a target."""
    err = (pred - target).abs().mean(dim=(1, 2))
    if valid is None:
        return err.mean()
    v = valid.to(err.dtype)
    return (err * v).sum() / v.sum().clamp_min(1.0)


def weighted_total(terms: dict[str, torch.Tensor], cfg: LossConfig) -> torch.Tensor:
    """Weighted sum of the generator-side terms present in ``terms``."""
    w = {"equivariance": cfg.equivariance, "keypoint_prior": cfg.keypoint_prior, "perceptual": cfg.perceptual,
         "adversarial": cfg.adversarial, "feature_matching": cfg.feature_matching, "vertex": cfg.vertex}
    return _tsum(w[k] * v for k, v in terms.items() if k in w)
