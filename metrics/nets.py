"""ImageNet trunks (VGG16, AlexNet) loaded only from verified weight files.

Why not ``torchvision.models.vgg16(pretrained=True)`` as the packages do: that
call downloads when the file is missing and never checks the hash of a cached
file, so a truncated or foreign file would be used silently. Here the layer
graph comes from torchvision (weights=None) and the state dict from the file
that :mod:`metrics.weights` located and verified.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from metrics import weights as W

TRUNK_FILES = {"vgg": "vgg16-397923af.pth", "alex": "alexnet-owt-7be5be79.pth"}


def load_trunk(net: str, weights_dir: Path | None = None) -> nn.Sequential:
    """The ``features`` part of torchvision's VGG16 / AlexNet with verified ImageNet weights."""
    from torchvision import models

    path = W.locate(TRUNK_FILES[net], weights_dir)
    model = models.vgg16(weights=None) if net == "vgg" else models.alexnet(weights=None)
    state = torch.load(path, map_location="cpu", weights_only=True)
    model.load_state_dict(state, strict=True)  # a foreign layout fails loudly
    feats = model.features
    feats.eval()
    for p in feats.parameters():
        p.requires_grad_(False)
    return feats


def load_package_tensors(name: str, weights_dir: Path | None = None) -> dict[str, torch.Tensor]:
    """A verified package-shipped state dict (LPIPS lin layers, DISTS alpha/beta)."""
    path = W.locate(name, weights_dir)
    return torch.load(path, map_location="cpu", weights_only=True)
