"""Losses shared by the generative models (Sparse2Dense and the baselines).

* perceptual: VGG19 pyramid (FOMM/FV2V; Johnson et al., "Perceptual Losses for Real-Time Style Transfer",
  ECCV 2016): L1 between relu1_1..relu5_1 features of prediction and target at several image scales.
  VGG19 needs ImageNet weights (torchvision ``vgg19-dcbb9e9d.pth``, sha256 verified through the metric
  weight registry); when they are absent the loss is an explicitly named fallback (``pixel-pyramid-l1``:
  L1 over the same image pyramid in pixel space), a warning is logged and every checkpoint stores the name.
* hinge GAN losses (Lim & Ye, "Geometric GAN", 2017) and discriminator feature matching (pix2pixHD).
"""
from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from gfvc.errors import ConfigError, WeightsError
from metrics import weights as weight_registry

log = logging.getLogger(__name__)

VGG19_FILE = "vgg19-dcbb9e9d.pth"
FALLBACK_NAME = "pixel-pyramid-l1"
# relu1_1, relu2_1, relu3_1, relu4_1, relu5_1 are after these indices of torchvision's vgg19.features
_VGG_SLICES = (2, 7, 12, 21, 30)


def find_vgg19_weights(weights_dir: Path | None = None) -> Path:
    """Locate and sha256-verify VGG19 weights through the suite's weight registry.

    Raises WeightsError naming the file, its hash and how to install it.
    """
    return Path(weight_registry.locate(VGG19_FILE, weights_dir))


class VGG19Features(nn.Module):
    """Frozen VGG19 giving relu1_1..relu5_1 on ImageNet-normalised input."""

    mean: torch.Tensor  # buffers
    std: torch.Tensor

    def __init__(self, weights: Path) -> None:
        super().__init__()
        from torchvision.models import vgg19  # lazy: torchvision costs ~0.7 s to import

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


def image_pyramid(x: torch.Tensor, scales: list[float]) -> list[torch.Tensor]:
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
        for p, t in zip(image_pyramid(pred, self.scales), image_pyramid(target, self.scales), strict=True):
            if self.vgg is None:
                total = total + (p - t).abs().mean()
            else:
                with torch.no_grad():
                    ft = self.vgg(t)
                for a, b in zip(self.vgg(p), ft, strict=True):
                    total = total + (a - b).abs().mean()
        return total


def sum_terms(terms: Iterable[torch.Tensor]) -> torch.Tensor:
    """Sum of loss tensors, added left to right as builtin ``sum()`` adds them, typed as a tensor.

    ``sum()`` of tensors is typed ``Tensor | Literal[0]`` because an empty sum is the int 0; a loss
    made of no terms is a recipe error instead (ConfigError), so the result is always a tensor.
    """
    it = iter(terms)
    try:
        total = next(it)
    except StopIteration:
        raise ConfigError("a loss was summed over no terms (check the recipe's loss weights and scales)") from None
    for t in it:
        total = total + t
    return total


def hinge_d_loss(real_logits: list[torch.Tensor], fake_logits: list[torch.Tensor]) -> torch.Tensor:
    return sum_terms(F.relu(1 - r).mean() + F.relu(1 + f).mean() for r, f in zip(real_logits, fake_logits, strict=True))


def hinge_g_loss(fake_logits: list[torch.Tensor]) -> torch.Tensor:
    return sum_terms(-f.mean() for f in fake_logits)


def feature_matching_loss(real_feats: list[list[torch.Tensor]], fake_feats: list[list[torch.Tensor]]) -> torch.Tensor:
    return sum_terms((r.detach() - f).abs().mean()
                 for rs, fs in zip(real_feats, fake_feats, strict=True) for r, f in zip(rs, fs, strict=True))
