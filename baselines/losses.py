"""Training losses shared by the FOMM-lineage baselines (FOMM, MRAA, TPSM, FV2V, CFTE, ...).

* :class:`PyramidPerceptual`: the official perceptual loss — L1 between VGG19
  relu1_1..relu5_1 features of prediction and target, weights [10]x5, on an
  image pyramid at scales [1, .5, .25, .125] built with the official
  anti-aliased downsampling (:class:`baselines.blocks.ImagePyramid`). VGG19
  comes from :class:`s2d_model.losses.PerceptualLoss` (sha256-verified
  through the suite's weight registry); without the weights it is the
  labelled fallback ``pixel-pyramid-l1`` (L1 in pixel space over the same
  pyramid), whose name every checkpoint records.
* :class:`RandomTPS`: the random affine + thin-plate-spline warp of the
  equivariance losses (sigma_affine 0.05, sigma_tps 0.005, 5x5 control points).
  Two official variants differ in the radial basis: FOMM/MRAA use
  r = |dx| + |dy| and U = r² log(r + 1e-6); TPSM uses r² = dx² + dy² and
  U = r² log(r² + 1e-9). In both the spline term is added to x and y alike,
  as in the official code.
* :func:`equivariance_value`, :func:`equivariance_jacobian`: FOMM Sec. 3.3
  (keypoints / local affines of a randomly warped frame, mapped back, must
  equal those of the frame).
* :func:`lsgan_generator`, :func:`lsgan_discriminator`,
  :func:`feature_matching`: FOMM's LS-GAN terms for the configs with a GAN;
  :func:`pyramid_gan_generator`, :func:`pyramid_gan_discriminator`: those
  terms over a multi-scale discriminator's outputs, as every recipe adds them.
* :class:`OfficialLossRecipe`: base of the recipes (official loss weights,
  overridable through ``config.options["loss_weights"]``; perceptual loss and
  random TPS on the run's device; ``losses_info`` for the checkpoint record);
  :class:`PyramidGanRecipe`: the same with FOMM's GAN (discriminator phase).
"""
from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd import grad

from baselines.base import BaselineConfig
from baselines.blocks import ImagePyramid, make_coordinate_grid
from model_parts.losses import FALLBACK_NAME, PerceptualLoss, sum_terms
from model_parts.training import TrainRecipe

OFFICIAL_SCALES = (1, 0.5, 0.25, 0.125)
OFFICIAL_PERCEPTUAL_WEIGHTS = (10.0, 10.0, 10.0, 10.0, 10.0)
TRANSFORM_PARAMS = {"sigma_affine": 0.05, "sigma_tps": 0.005, "points_tps": 5}


class PyramidPerceptual(nn.Module):
    """sum_scales sum_layers w_l * |VGG_l(pyr_s(pred)) - VGG_l(pyr_s(target))|_1 (or the pixel fallback).

    With the fallback each scale contributes ``sum(weights) * |pyr_s(pred) - pyr_s(target)|_1``
    so that its magnitude stays comparable with the official weights.
    """

    def __init__(self, scales: Sequence[float] = OFFICIAL_SCALES,
                 weights: Sequence[float] = OFFICIAL_PERCEPTUAL_WEIGHTS, weights_dir: Any = None,
                 allow_fallback: bool = True) -> None:
        super().__init__()
        self.scales = list(scales)
        self.layer_weights = list(weights)
        self.pyramid = ImagePyramid(self.scales, 3)
        base = PerceptualLoss([1.0], weights_dir=weights_dir, allow_fallback=allow_fallback)
        self.vgg = base.vgg
        self.name = base.name

    @property
    def is_fallback(self) -> bool:
        return self.vgg is None

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        pp, pt = self.pyramid(pred), self.pyramid(target)
        total = pred.new_zeros(())
        for key in pp:
            if self.vgg is None:
                total = total + sum(self.layer_weights) * (pp[key] - pt[key].detach()).abs().mean()
                continue
            with torch.no_grad():
                ft = self.vgg(pt[key])
            # the configured weights may cover fewer VGG layers than it returns (the official loop runs
            # over the weights), so only the two layers' lists must match
            for w, (a, b) in zip(self.layer_weights, zip(self.vgg(pp[key]), ft, strict=True), strict=False):
                total = total + w * (a - b).abs().mean()
        return total

    def info(self) -> dict[str, Any]:
        return {"name": self.name, "scales": self.scales, "layer_weights": self.layer_weights,
                "fallback": self.is_fallback,
                **({"note": f"{FALLBACK_NAME}: VGG19 weights unavailable, pixel-space L1 over the pyramid"}
                   if self.is_fallback else {})}


class RandomTPS:
    """Random affine + TPS deformation of normalised coordinates (equivariance losses).

    ``variant`` "fomm" (FOMM, MRAA, FV2V: L1 radius, log(r + 1e-6),
    grid_sample without align_corners) or "tpsm" (squared L2 radius,
    log(r² + 1e-9), align_corners=True).
    """

    def __init__(self, bs: int, sigma_affine: float = 0.05, sigma_tps: float = 0.005, points_tps: int = 5,
                 variant: str = "fomm", device: torch.device | str | None = None,
                 generator: torch.Generator | None = None) -> None:
        if variant not in ("fomm", "tpsm"):
            raise ValueError(f"RandomTPS variant must be 'fomm' or 'tpsm', not {variant!r}")
        self.bs = bs
        self.variant = variant
        noise = torch.randn(bs, 2, 3, generator=generator) * sigma_affine
        self.theta = (noise + torch.eye(2, 3).view(1, 2, 3)).to(device)
        self.control_points = make_coordinate_grid((points_tps, points_tps), device=device).view(1, -1, 2)
        self.control_params = (torch.randn(bs, 1, points_tps ** 2, generator=generator) * sigma_tps).to(device)

    def warp_coordinates(self, coords: torch.Tensor) -> torch.Tensor:
        """(B or 1, N, 2) -> (B, N, 2): the point of the original frame seen at ``coords`` of the warped one."""
        theta = self.theta.to(coords.dtype).unsqueeze(1)
        out = (torch.matmul(theta[:, :, :, :2], coords.unsqueeze(-1)) + theta[:, :, :, 2:]).squeeze(-1)
        d = coords.view(coords.shape[0], -1, 1, 2) - self.control_points.to(coords.dtype).view(1, 1, -1, 2)
        if self.variant == "fomm":
            r = d.abs().sum(-1)
            u = r ** 2 * torch.log(r + 1e-6)
        else:
            r2 = (d ** 2).sum(-1)
            u = r2 * torch.log(r2 + 1e-9)
        spline = (u * self.control_params.to(coords.dtype)).sum(dim=2).view(self.bs, coords.shape[1], 1)
        return out + spline

    def transform_frame(self, frame: torch.Tensor) -> torch.Tensor:
        """The frame resampled through the warp (reflection padding)."""
        h, w = frame.shape[2:]
        grid = make_coordinate_grid((h, w), frame.dtype, frame.device).view(1, h * w, 2)
        grid = self.warp_coordinates(grid).view(self.bs, h, w, 2)
        return F.grid_sample(frame, grid, padding_mode="reflection", align_corners=self.variant == "tpsm")

    def jacobian(self, coords: torch.Tensor) -> torch.Tensor:
        """(B, N, 2, 2) derivative of :meth:`warp_coordinates` at ``coords`` (autograd, differentiable)."""
        if not coords.requires_grad:
            coords = coords.detach().requires_grad_(True)
        new = self.warp_coordinates(coords)
        gx = grad(new[..., 0].sum(), coords, create_graph=True)[0]
        gy = grad(new[..., 1].sum(), coords, create_graph=True)[0]
        return torch.cat([gx.unsqueeze(-2), gy.unsqueeze(-2)], dim=-2)


def equivariance_value(kp_driving: torch.Tensor, transform: RandomTPS, kp_transformed: torch.Tensor) -> torch.Tensor:
    """mean |kp(driving) - T(kp(T-warped driving))| (unweighted)."""
    return (kp_driving - transform.warp_coordinates(kp_transformed)).abs().mean()


def equivariance_jacobian(jac_driving: torch.Tensor, transform: RandomTPS, kp_transformed: torch.Tensor,
                          jac_transformed: torch.Tensor, revert_axis_swap: bool = False) -> torch.Tensor:
    """mean |I - J_d^-1 · (dT(kp_t) · J_t)| (FOMM jacobian / MRAA affine equivariance, unweighted).

    ``revert_axis_swap`` (MRAA) multiplies the product by the sign of its
    (0, 0) entry first, so a PCA axis flipped by the SVD is not penalised.
    """
    transformed = torch.matmul(transform.jacobian(kp_transformed), jac_transformed)
    value = torch.matmul(torch.inverse(jac_driving), transformed)
    if revert_axis_swap:
        value = value * torch.sign(value[:, :, 0:1, 0:1])
    eye = torch.eye(2, dtype=value.dtype, device=value.device).view(1, 1, 2, 2)
    return (eye - value).abs().mean()


def lsgan_generator(pred_maps: Sequence[torch.Tensor]) -> torch.Tensor:
    return sum_terms(((1 - p) ** 2).mean() for p in pred_maps)


def lsgan_discriminator(real_maps: Sequence[torch.Tensor], fake_maps: Sequence[torch.Tensor]) -> torch.Tensor:
    return sum_terms(((1 - r) ** 2 + f ** 2).mean() for r, f in zip(real_maps, fake_maps, strict=True))


def feature_matching(real_feats: Sequence[torch.Tensor], fake_feats: Sequence[torch.Tensor],
                     weights: Sequence[float]) -> torch.Tensor:
    # official: weights[i] for the i-th block's maps, so the weights may list more blocks than this
    # discriminator has; real and fake come from the same discriminator
    pairs = zip(real_feats, fake_feats, strict=True)
    return sum_terms(w * (a - b).abs().mean() for w, (a, b) in zip(weights, pairs, strict=False) if w)


PREDICTION_MAP = "prediction_map_"
FEATURE_MAPS = "feature_maps_"


def pyramid_gan_generator(real: Mapping[str, Any], fake: Mapping[str, Any], weights: Mapping[str, Any],
                          gan: Callable[[Sequence[torch.Tensor]], torch.Tensor] = lsgan_generator,
                          detach_real: bool = False) -> dict[str, torch.Tensor]:
    """Generator terms against :class:`baselines.blocks.MultiScaleDiscriminator` outputs on the image pyramid.

    ``real`` / ``fake`` are the discriminator's outputs for the target and the
    prediction pyramids (``prediction_map_<s>`` and ``feature_maps_<s>`` per
    scale). Returns ``gen_gan`` = weights["generator_gan"] x ``gan`` (LS-GAN by
    default; FV2V passes its hinge form) over the prediction maps, then, when
    any weights["feature_matching"] is non-zero, ``feature_matching`` summed
    over the scales, in the order of the official GeneratorFullModel (one
    helper so that every recipe adds the same terms in the same order).
    ``detach_real`` stops the discriminator gradient through the real maps.
    """
    scales = [k[len(PREDICTION_MAP):] for k in fake if k.startswith(PREDICTION_MAP)]
    terms = {"gen_gan": weights["generator_gan"] * gan([fake[f"{PREDICTION_MAP}{s}"] for s in scales])}
    if sum(weights["feature_matching"]):
        terms["feature_matching"] = sum_terms(
            feature_matching([x.detach() for x in real[f"{FEATURE_MAPS}{s}"]] if detach_real
                             else real[f"{FEATURE_MAPS}{s}"], fake[f"{FEATURE_MAPS}{s}"], weights["feature_matching"])
            for s in scales)
    return terms


def pyramid_gan_discriminator(real: Mapping[str, Any], fake: Mapping[str, Any], weight: float,
                              gan: Callable[[Sequence[torch.Tensor], Sequence[torch.Tensor]], torch.Tensor]
                              = lsgan_discriminator) -> dict[str, torch.Tensor]:
    """``disc_gan`` = ``weight`` x ``gan`` (LS-GAN by default) over the ``prediction_map_<s>`` of the
    discriminator's outputs for the target (``real``) and the detached prediction (``fake``);
    the counterpart of :func:`pyramid_gan_generator`, shared by the recipes for the same reason."""
    keys = [k for k in fake if k.startswith(PREDICTION_MAP)]
    return {"disc_gan": weight * gan([real[k] for k in keys], [fake[k] for k in keys])}


def milestones(epoch_milestones: Sequence[int], num_epochs: int) -> tuple[float, ...]:
    """Official epoch milestones as fractions of training (the suite's step-based schedule)."""
    return tuple(m / num_epochs for m in epoch_milestones)


class OfficialLossRecipe(TrainRecipe[BaselineConfig]):
    """Shared parts of the FOMM-lineage recipes: loss weights from the official config (overridable
    through ``config.options["loss_weights"]``), the perceptual pyramid built lazily on the device."""

    default_weights: dict[str, Any] = {}
    train_params: dict[str, Any] = {}

    def __init__(self, config: Any, device: str = "cpu", weights_dir: Any = None) -> None:
        super().__init__(config, device, weights_dir)
        self.weights = {**copy.deepcopy(self.default_weights), **dict(config.options.get("loss_weights") or {})}
        self._perc: Any = None

    def perceptual(self) -> Any:
        if self._perc is None:
            self._perc = PyramidPerceptual(self.train_params["scales"], self.weights["perceptual"],
                                           weights_dir=self.weights_dir)
        return self._perc.to(self.device)

    def transform(self, bs: int, variant: str) -> Any:
        return RandomTPS(bs, variant=variant, device=self.device, **self.train_params["transform_params"])

    def losses_info(self) -> dict[str, Any]:
        return {"perceptual": self.perceptual().info(), "loss_weights": self.weights,
                "transform_params": self.train_params["transform_params"],
                "official_schedule": {k: self.train_params[k] for k in ("num_epochs", "epoch_milestones", "lr")},
                "lr_milestones_fraction": list(self.lr_milestones)}


class PyramidGanRecipe(OfficialLossRecipe):
    """An :class:`OfficialLossRecipe` with FOMM's GAN: a multi-scale ``discriminator`` module fed the
    perceptual pyramid of the driving frame and of the prediction (``cache["prediction"]``).

    As the official train.py, the discriminator is updated only when
    ``generator_gan`` != 0; its term is :func:`pyramid_gan_discriminator`
    (LS-GAN). Shared so that the GAN recipes (FOMM, CFTE, IMT, IHVC, FV2V)
    switch and score their discriminator alike; a recipe whose discriminator
    takes more inputs or another GAN form overrides ``discriminator_losses``.
    """

    def _gan(self) -> bool:
        return float(self.weights["generator_gan"]) != 0

    def discriminator_optimizers(self) -> tuple[str, ...]:
        return ("optimizer_discriminator",) if self._gan() else ()

    def discriminator_losses(self, modules: dict[str, Any], batch: dict[str, torch.Tensor], cache: dict[str, Any],
                             step: int) -> dict[str, torch.Tensor]:
        disc = modules["discriminator"]
        pyr = self.perceptual().pyramid
        real, fake = disc(pyr(batch["driving"])), disc(pyr(cache["prediction"].detach()))
        return pyramid_gan_discriminator(real, fake, self.weights["discriminator_gan"])
