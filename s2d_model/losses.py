"""Sparse2Dense training losses with the paper's weights (CTC_FACTS section 6).

total = 10 * equivariance + 10 * keypoint prior + 10 * perceptual
        + 1 * adversarial (hinge) + 10 * feature matching + 100 * vertex

* perceptual: VGG19 pyramid (FOMM/FV2V), :class:`model_parts.losses.PerceptualLoss`
  (shared with the baselines), with its named fallback when VGG19 weights are absent.
* equivariance (FOMM): keypoints of a randomly affine-warped frame, mapped
  back through the warp, must equal the keypoints of the frame (x, y only; z
  is not affected by a 2D warp).
* keypoint prior (FV2V): keypoints keep a minimum squared distance 0.1 from
  each other and a mean depth of 0.33.
* vertex: L1 between predicted and target vertices (normalised coordinates).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from model_parts.losses import (  # noqa: F401  (shared parts, re-exported for S2D's training)
    FALLBACK_NAME,
    PerceptualLoss,
    feature_matching_loss,
    hinge_d_loss,
    hinge_g_loss,
    sum_terms,
)
from s2d_model.config import LossConfig


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
    return sum_terms(w[k] * v for k, v in terms.items() if k in w)
