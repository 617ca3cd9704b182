"""FVD: Frechet Video Distance with an Inflated 3D ConvNet (Kinetics-400).

T. Unterthiner, S. van Steenkiste, K. Kurach, R. Marinier, M. Michalski,
S. Gelly, "Towards Accurate Generative Models of Video: A New Metric &
Challenges", arXiv:1812.01717, 2018.
I3D: J. Carreira, A. Zisserman, "Quo Vadis, Action Recognition? A New Model
and the Kinetics Dataset", CVPR 2017.

Features: the 400-d Kinetics logits (before softmax) of each clip, averaged
over the remaining time steps; frames are resized (short side to 224,
bilinear, centre crop) and mapped to [-1, 1]. Two detectors are accepted:

* ``i3d_torchscript.pt`` (StyleGAN-V's TorchScript export, agrees with the TF
  original to 1e-6 in FVD), called with rescale=False, resize=False,
  return_features=True;
* ``i3d_pretrained_400.pt``, a state dict for the piergiaj/pytorch-i3d
  ``InceptionI3d`` key layout, loaded into :class:`InceptionI3d` below (our
  own implementation of that layout, strict key match).

The two files hold different conversions of the I3D weights, so their FVDs
are not interchangeable; the detector used is recorded with every value.

Per-sequence FVD: clips of ``clip_length`` frames every ``stride`` frames from
the reference and from the decoded video; Gaussians fitted with ddof=1. With
n clips per side the covariance has rank <= n - 1 (of 400), so the Frechet
distance is dominated by the mean term and the few directions the clips
span; it is an honest, protocol-bound number, not comparable to dataset-level
FVD. Fewer than 2 clips per side: not computed.
"""
from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import scipy.linalg
import torch
import torch.nn.functional as F
from torch import nn

from gfvc.devices import batch_size, device_type
from gfvc.errors import InputError, WeightsError
from metrics import batching
from metrics import weights as W
from metrics.limits import MAX_CLIPS


def frechet_distance(features_a: np.ndarray, features_b: np.ndarray) -> float:
    """Frechet distance between Gaussians fitted to two (N, d) feature sets.

    ||mu_a - mu_b||^2 + tr(S_a + S_b - 2 sqrtm(S_a S_b)), covariances with
    ddof=1, real part of scipy.linalg.sqrtm (its ``disp`` argument is
    deprecated; tiny imaginary parts from round-off are dropped).
    """
    a = np.asarray(features_a, dtype=np.float64)
    b = np.asarray(features_b, dtype=np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise InputError(f"frechet_distance needs two (N, d) arrays with equal d, got {a.shape} and {b.shape}")
    if a.shape[0] < 2 or b.shape[0] < 2:
        raise InputError(f"frechet_distance needs at least 2 samples per set (ddof=1), "
                         f"got {a.shape[0]} and {b.shape[0]}")
    mu_a, mu_b = a.mean(axis=0), b.mean(axis=0)
    s_a = np.atleast_2d(np.cov(a, rowvar=False, ddof=1))
    s_b = np.atleast_2d(np.cov(b, rowvar=False, ddof=1))
    with warnings.catch_warnings():
        # Per-sequence covariances are rank-deficient by construction (documented); scipy warns each time.
        warnings.simplefilter("ignore", scipy.linalg.LinAlgWarning)
        covmean = np.real(scipy.linalg.sqrtm(s_a @ s_b))
        if not np.all(np.isfinite(covmean)):
            # Singular products can defeat sqrtm; regularise minimally (as FID code does), documented.
            eps = 1e-6 * np.eye(a.shape[1])
            covmean = np.real(scipy.linalg.sqrtm((s_a + eps) @ (s_b + eps)))
    diff = mu_a - mu_b
    return float(diff @ diff + np.trace(s_a) + np.trace(s_b) - 2.0 * np.trace(covmean))


# --- I3D (Inception-v1 inflated), piergiaj/pytorch-i3d state-dict layout ------------------------

def _same_pad(size: int, k: int, s: int) -> tuple[int, int]:
    """TensorFlow 'SAME' padding (front, back) for one dimension."""
    total = max(k - s, 0) if size % s == 0 else max(k - size % s, 0)
    return total // 2, total - total // 2


def _pad3d(x: torch.Tensor, k: tuple[int, int, int], s: tuple[int, int, int]) -> torch.Tensor:
    t, h, w = x.shape[2:]
    pt, ph, pw = _same_pad(t, k[0], s[0]), _same_pad(h, k[1], s[1]), _same_pad(w, k[2], s[2])
    return F.pad(x, (pw[0], pw[1], ph[0], ph[1], pt[0], pt[1]))


class Unit3D(nn.Module):
    """Conv3d (+BatchNorm eps 1e-3) (+ReLU) with TF 'SAME' padding; attributes conv3d, bn."""

    def __init__(self, cin: int, cout: int, k: tuple[int, int, int] = (1, 1, 1),
                 s: tuple[int, int, int] = (1, 1, 1), bn: bool = True, relu: bool = True, bias: bool = False) -> None:
        super().__init__()
        self.k, self.s, self.relu = k, s, relu
        self.conv3d = nn.Conv3d(cin, cout, k, stride=s, padding=0, bias=bias)
        self.bn = nn.BatchNorm3d(cout, eps=0.001, momentum=0.01) if bn else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv3d(_pad3d(x, self.k, self.s))
        if self.bn is not None:
            x = self.bn(x)
        return F.relu(x) if self.relu else x


class MaxPoolSame(nn.Module):
    """Max pooling with TF 'SAME' padding (zero padded; inputs are post-ReLU, so equivalent)."""

    def __init__(self, k: tuple[int, int, int], s: tuple[int, int, int]) -> None:
        super().__init__()
        self.k, self.s = k, s

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.max_pool3d(_pad3d(x, self.k, self.s), self.k, self.s)


class Mixed(nn.Module):
    """Inception block: branches b0 | b1a->b1b | b2a->b2b | b3a(pool)->b3b, concatenated."""

    def __init__(self, cin: int, c: tuple[int, int, int, int, int, int]) -> None:
        super().__init__()
        self.b0 = Unit3D(cin, c[0])
        self.b1a = Unit3D(cin, c[1])
        self.b1b = Unit3D(c[1], c[2], (3, 3, 3))
        self.b2a = Unit3D(cin, c[3])
        self.b2b = Unit3D(c[3], c[4], (3, 3, 3))
        self.b3a = MaxPoolSame((3, 3, 3), (1, 1, 1))
        self.b3b = Unit3D(cin, c[5])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.b0(x), self.b1b(self.b1a(x)), self.b2b(self.b2a(x)), self.b3b(self.b3a(x))], dim=1)


_MIXED = {
    "Mixed_3b": (192, (64, 96, 128, 16, 32, 32)),
    "Mixed_3c": (256, (128, 128, 192, 32, 96, 64)),
    "Mixed_4b": (480, (192, 96, 208, 16, 48, 64)),
    "Mixed_4c": (512, (160, 112, 224, 24, 64, 64)),
    "Mixed_4d": (512, (128, 128, 256, 24, 64, 64)),
    "Mixed_4e": (512, (112, 144, 288, 32, 64, 64)),
    "Mixed_4f": (528, (256, 160, 320, 32, 128, 128)),
    "Mixed_5b": (832, (256, 160, 320, 32, 128, 128)),
    "Mixed_5c": (832, (384, 192, 384, 48, 128, 128)),
}


class InceptionI3d(nn.Module):
    """I3D (Carreira & Zisserman 2017) with the piergiaj/pytorch-i3d module names.

    forward(x) with x (N, 3, T, H, W) in [-1, 1] returns the 400 logits averaged
    over time (and over space when H, W != 224) -> (N, num_classes).
    """

    ORDER = ("Conv3d_1a_7x7", "MaxPool3d_2a_3x3", "Conv3d_2b_1x1", "Conv3d_2c_3x3", "MaxPool3d_3a_3x3",
             "Mixed_3b", "Mixed_3c", "MaxPool3d_4a_3x3", "Mixed_4b", "Mixed_4c", "Mixed_4d", "Mixed_4e",
             "Mixed_4f", "MaxPool3d_5a_2x2", "Mixed_5b", "Mixed_5c")

    def __init__(self, num_classes: int = 400) -> None:
        super().__init__()
        self.Conv3d_1a_7x7 = Unit3D(3, 64, (7, 7, 7), (2, 2, 2))
        self.MaxPool3d_2a_3x3 = MaxPoolSame((1, 3, 3), (1, 2, 2))
        self.Conv3d_2b_1x1 = Unit3D(64, 64)
        self.Conv3d_2c_3x3 = Unit3D(64, 192, (3, 3, 3))
        self.MaxPool3d_3a_3x3 = MaxPoolSame((1, 3, 3), (1, 2, 2))
        self.MaxPool3d_4a_3x3 = MaxPoolSame((3, 3, 3), (2, 2, 2))
        self.MaxPool3d_5a_2x2 = MaxPoolSame((2, 2, 2), (2, 2, 2))
        for name, (cin, c) in _MIXED.items():
            setattr(self, name, Mixed(cin, c))
        self.logits = Unit3D(1024, num_classes, bn=False, relu=False, bias=True)
        self.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for name in self.ORDER:
            x = getattr(self, name)(x)
        x = F.avg_pool3d(x, kernel_size=(2, 7, 7), stride=1) if min(x.shape[2:]) >= 2 and min(x.shape[3:]) >= 7 \
            else x.mean(dim=(2, 3, 4), keepdim=True)
        x = self.logits(x)  # dropout is identity at inference
        return x.mean(dim=(2, 3, 4))


# --- detector loading and clip features -------------------------------------------------------

Detector = Callable[[torch.Tensor], torch.Tensor]


def load_detector(weights_dir: Path | None = None,
                  names: tuple[str, ...] = W.FVD_DETECTORS, device: str = "cpu") -> tuple[str, Detector]:
    """The first verified detector of ``names`` -> (file name, callable), on ``device``.

    Raises WeightsError naming the files when none is present/valid.
    """
    errors = []
    for name in names:
        st = W.check(name, weights_dir)
        if st.path is None:  # absent: try the next detector; present but wrong: refused below
            errors.append(f"{name} (sha256 {st.sha256_expected}) {st.reason}")
            continue
        path = W.locate(name, weights_dir)
        if name == "i3d_torchscript.pt":
            det = torch.jit.load(str(path), map_location=device).eval()

            def run(x: torch.Tensor, _d=det) -> torch.Tensor:
                return _d(x, rescale=False, resize=False, return_features=True)

            return name, run
        model = InceptionI3d(400)
        sd = dict(torch.load(path, map_location="cpu", weights_only=True))
        # Checkpoints saved before PyTorch 0.4.1 lack BatchNorm's num_batches_tracked (unused at inference);
        # every other key must match exactly.
        for k, v in model.state_dict().items():
            if k.endswith("num_batches_tracked") and k not in sd:
                sd[k] = v
        model.load_state_dict(sd, strict=True)
        return name, model.to(device).eval()
    raise WeightsError("FVD needs one I3D detector: " + " | ".join(errors) + "; "
                       + W.how_to_get(W.get(names[0])))


def preprocess(frames: np.ndarray, resolution: int = 224, device: str = "cpu") -> torch.Tensor:
    """uint8 (T, H, W, 3) -> float (3, T, R, R) in [-1, 1]: short side to R (bilinear), centre crop."""
    x = torch.from_numpy(np.ascontiguousarray(frames)).to(device).permute(0, 3, 1, 2).float() / 255.0
    h, w = x.shape[-2:]
    scale = resolution / min(h, w)
    size = (resolution, math.ceil(w * scale)) if h < w else (math.ceil(h * scale), resolution)
    if size != (h, w):
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
    h, w = x.shape[-2:]
    top, left = (h - resolution) // 2, (w - resolution) // 2
    x = x[:, :, top:top + resolution, left:left + resolution]
    return ((x - 0.5) * 2).permute(1, 0, 2, 3).contiguous()


def clip_starts(frames: int, clip_length: int, stride: int) -> list[int]:
    return list(range(0, frames - clip_length + 1, stride)) if frames >= clip_length else []


def clip_features(detector: Detector, frames: np.ndarray, clip_length: int, stride: int,
                  resolution: int = 224, batch: int | None = None, device: str = "cpu",
                  progress: Callable[[int, int], None] | None = None) -> np.ndarray:
    """(n_clips, 400) float64 features of the clips of one video.

    Clips are batched on ``device``; without ``batch`` the batch size is what the
    free memory allows (gfvc.devices.batch_size; per-clip cost from
    metrics.batching), at most metrics.MAX_CLIPS for the device type.
    """
    starts = clip_starts(frames.shape[0], clip_length, stride)
    if not starts:
        return np.zeros((0, 400))
    if batch is None:
        batch = batch_size(device, clip_bytes(detector, clip_length, resolution),
                           MAX_CLIPS[device_type(device) or "cpu"])
    out = []
    with torch.inference_mode():
        # preprocess per span of clips: the whole sequence at 224x224 float would be large on long inputs
        for i in range(0, len(starts), batch):
            group = starts[i:i + batch]
            x = preprocess(frames[group[0]:group[-1] + clip_length], resolution, device)
            clips = torch.stack([x[:, s - group[0]:s - group[0] + clip_length] for s in group])
            out.append(detector(clips).double().cpu().numpy())
            if progress:
                progress(min(i + batch, len(starts)), len(starts))
    return np.concatenate(out)


# --- memory per clip (for the memory-bounded batch) ---------------------------------------------

def clip_bytes(detector: Any, clip_length: int, resolution: int) -> float:
    """Estimated bytes for one (3, clip_length, resolution, resolution) clip through an I3D detector."""
    if isinstance(detector, torch.nn.Module) and not isinstance(detector, torch.jit.ScriptModule):
        return _clip_bytes_module(id(detector), detector, clip_length) * resolution * resolution * batching.OVERHEAD
    # TorchScript detector: no hooks; our InceptionI3d (the same architecture) gives the estimate
    return _clip_bytes_reference(clip_length) * resolution * resolution * batching.OVERHEAD


_CLIP: dict[tuple, float] = {}


def _clip_bytes_module(ident: int, det: torch.nn.Module, clip_length: int) -> float:
    key = (ident, clip_length)
    if key not in _CLIP:
        side = 64
        probe = torch.zeros(1, 3, clip_length, side, side, device=batching.device_of(det))
        _CLIP[key] = batching.activation_bytes(det, det, probe) / float(side * side)
    return _CLIP[key]


@lru_cache(maxsize=8)
def _clip_bytes_reference(clip_length: int) -> float:
    det = InceptionI3d(400)
    return _clip_bytes_module(-1, det, clip_length)
