"""LPIPS: Learned Perceptual Image Patch Similarity (v0.1).

R. Zhang, P. Isola, A. A. Efros, E. Shechtman, O. Wang, "The Unreasonable
Effectiveness of Deep Features as a Perceptual Metric", CVPR 2018.

Numerically the same as ``lpips.LPIPS(net=..., version='0.1')`` of the lpips
0.1.4 package on [0, 1] input with ``normalize=True`` (tests compare to 1e-6),
split into reference-feature extraction and comparison so reference features
are computed once per sequence. The linear layers are loaded from the
package's verified v0.1 file with an explicit key map (the package's own
``strict=False`` load leaves them random when ``use_dropout=False``).
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from metrics.nets import load_package_tensors, load_trunk

SLICES = {
    "vgg": ((0, 4), (4, 9), (9, 16), (16, 23), (23, 30)),
    "alex": ((0, 2), (2, 5), (5, 8), (8, 10), (10, 12)),
}
CHANNELS = {"vgg": (64, 128, 256, 512, 512), "alex": (64, 192, 384, 256, 256)}


class LpipsNet(nn.Module):
    shift: torch.Tensor  # buffers (plus lin0..lin4)
    scale: torch.Tensor

    def __init__(self, net: str, trunk: nn.Sequential, lins: list[torch.Tensor]) -> None:
        super().__init__()
        self.net = net
        self.slices = nn.ModuleList(nn.Sequential(*[trunk[j] for j in range(a, b)]) for a, b in SLICES[net])
        for k, (w, c) in enumerate(zip(lins, CHANNELS[net], strict=True)):
            if tuple(w.shape) != (1, c, 1, 1):
                raise ValueError(f"LPIPS {net} lin{k}: expected weight 1x{c}x1x1, got {tuple(w.shape)}")
            self.register_buffer(f"lin{k}", w.float().clone())
        self.register_buffer("shift", torch.tensor([-0.030, -0.088, -0.188])[None, :, None, None])
        self.register_buffer("scale", torch.tensor([0.458, 0.448, 0.450])[None, :, None, None])
        # channels-last lets oneDNN pick faster CPU convolution kernels (~1.3x measured on VGG16 at 384x384)
        self.to(memory_format=torch.channels_last)
        self.eval()

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """x: (N, 3, H, W) in [0, 1] -> unit-normalised maps of the 5 layers."""
        x = x.contiguous(memory_format=torch.channels_last)
        h = ((2 * x - 1) - self.shift) / self.scale
        out = []
        for s in self.slices:
            h = s(h)
            norm = torch.sqrt(torch.sum(h ** 2, dim=1, keepdim=True))
            out.append(h / (norm + 1e-10))
        return out

    def score(self, fa: list[torch.Tensor], fb: list[torch.Tensor]) -> torch.Tensor:
        """Per-image LPIPS (N,): sum over layers of the spatial mean of w . (a - b)^2."""
        val: torch.Tensor | int = 0
        for k in range(len(fa)):
            d = (fa[k] - fb[k]) ** 2
            val = val + F.conv2d(d, getattr(self, f"lin{k}")).mean([2, 3], keepdim=True)
        assert isinstance(val, torch.Tensor)  # at least one layer
        return val.reshape(-1)


def load(net: str = "vgg", weights_dir: Path | None = None) -> LpipsNet:
    if net not in SLICES:
        raise ValueError(f"unknown LPIPS net {net!r} (use vgg or alex)")
    sd = load_package_tensors(f"lpips-v0.1-{net}.pth", weights_dir)
    keys = [f"lin{k}.model.1.weight" for k in range(5)]
    missing = [k for k in keys if k not in sd]
    if missing:
        raise ValueError(f"LPIPS {net} v0.1 weights lack {missing}; found {sorted(sd)}")
    return LpipsNet(net, load_trunk(net, weights_dir), [sd[k] for k in keys])
