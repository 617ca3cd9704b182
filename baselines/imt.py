"""IMT: Implicit Motion Transformation for generative human video coding (Chen, Liao, Chen, Ye; PCS 2025).

"Rethinking Generative Human Video Coding with Implicit Motion
Transformation", arXiv 2506.10453. There is no public code; what the
paper's abstract and a public summary of it state, and what the suite
builds from it:

* stated: the human body signal is characterised into *compact visual
  features* and these are *transformed into implicit motion guidance* for
  reconstruction, instead of the explicit motion fields (flows, keypoint
  warps) of face codecs, which distort complex body motion;
* stated (summary of the paper): the compact feature of frame I_t is
  theta_t = rho_(conv,GDN)(f_U-Net(phi(I_t, s))) — downsampling phi by s, a
  U-Net, then a convolution/GDN stack — about 6x6x1 at 384 px.

The suite's implementation (every other choice is a named option below and
in docs/baselines.md):

* ``encoder``: exactly the CFTE analysis net (:class:`baselines.cfte.KPDetector`:
  anti-aliased downsampling by s, hourglass U-Net, four 5x5 stride-2
  conv + GDN stages) with one output channel: 6x6 = 36 values at 384 px
  (s = 1/4), 4x4 = 16 at the 128-px demo (s = 1/2).
* ``generator`` (:class:`IMTGenerator`): the key frame is encoded to
  appearance tokens at 1/2^num_down_blocks resolution; the compact features
  of the key frame and of the current frame are upsampled by learned
  ``guidance_up`` blocks to the same grid and turned into *motion query*
  tokens (current feature, its difference to the key's) and *key* tokens
  (key feature + key appearance); ``depth`` pre-norm transformer layers of
  multi-head cross-attention (motion queries attend over key-frame tokens)
  and MLPs carry key-frame appearance to where the current frame needs it —
  the implicit motion: no flow field is ever formed. A ResBlock/up-sampling
  decoder renders the frame; at each of its levels the key frame's own
  (unaligned) encoder features are concatenated and fused (``key_skips``), so
  static content can be copied sharply. Positions enter through fixed 2D
  sine-cosine encodings (any resolution).

Codec ``imt`` sends the compact feature per inter frame (36 values at 384),
DPCM-coded at scale 4, chosen by a measured sweep (docs/baselines.md).
"""
from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from baselines import blocks as B
from baselines import losses as L
from baselines.base import BaselineCodec, BaselineConfig, build_from_table
from baselines.cfte import ANALYSIS_STRIDE, KPDetector
from baselines.losses import PyramidGanRecipe
from gfvc.codec import CODECS
from gfvc.errors import ModelMismatch
from model_parts.checkpoint import has_keys, register_signature
from model_parts.training import RECIPES

NAME = "imt"


def sincos_2d(dim: int, h: int, w: int, device: Any = None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(h*w, dim) fixed 2D sine-cosine position encoding (dim divisible by 4)."""
    if dim % 4:
        raise ModelMismatch(f"IMT: token dimension {dim} must be divisible by 4 (2D sine-cosine positions)")
    q = dim // 4
    freq = 1.0 / (10000 ** (torch.arange(q, device=device, dtype=torch.float32) / q))
    ys, xs = torch.meshgrid(torch.arange(h, device=device, dtype=torch.float32),
                            torch.arange(w, device=device, dtype=torch.float32), indexing="ij")
    parts = []
    for coord in (ys.reshape(-1, 1) * freq, xs.reshape(-1, 1) * freq):
        parts += [torch.sin(coord), torch.cos(coord)]
    return torch.cat(parts, dim=1).to(dtype)


class CrossAttentionLayer(nn.Module):
    """Pre-norm transformer layer: x + MHA(LN(x), LN(k), v); then x + MLP(LN(x))."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float) -> None:
        super().__init__()
        if dim % heads:
            raise ModelMismatch(f"IMT: token dimension {dim} is not divisible by {heads} heads")
        self.heads = heads
        self.norm_q = nn.LayerNorm(dim)
        self.norm_k = nn.LayerNorm(dim)
        self.to_q = nn.Linear(dim, dim)
        self.to_k = nn.Linear(dim, dim)
        self.to_v = nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)
        self.norm_mlp = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor, keys: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        h = self.heads

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.view(b, -1, h, d // h).transpose(1, 2)

        q, k, v = split(self.to_q(self.norm_q(x))), split(self.to_k(self.norm_k(keys))), split(self.to_v(values))
        att = F.scaled_dot_product_attention(q, k, v)
        x = x + self.proj(att.transpose(1, 2).reshape(b, n, d))
        return x + self.mlp(self.norm_mlp(x))


class IMTGenerator(nn.Module):
    """Key frame + compact features of key and current frame -> current frame, without a flow field."""

    def __init__(self, num_channels: int = 3, block_expansion: int = 64, max_features: int = 512,
                 num_down_blocks: int = 3, num_guidance_up_blocks: int = 3, guidance_channels: int = 32,
                 dim: int = 256, heads: int = 4, depth: int = 2, mlp_ratio: float = 2.0,
                 num_bottleneck_blocks: int = 3, feature_channels: int = 1, key_skips: bool = False) -> None:
        super().__init__()
        width = partial(B.channel_width, block_expansion, max_features)
        self.first = B.SameBlock2d(num_channels, block_expansion, kernel_size=7, padding=3)
        self.down_blocks = nn.ModuleList(B.DownBlock2d(width(i), width(i + 1), kernel_size=3, padding=1)
                                         for i in range(num_down_blocks))
        self.guidance_in = nn.Conv2d(feature_channels, guidance_channels, kernel_size=3, padding=1)
        self.guidance_up = nn.ModuleList(B.UpBlock2d(guidance_channels, guidance_channels, kernel_size=3,
                                                     padding=1) for _ in range(num_guidance_up_blocks))
        c_app = width(num_down_blocks)
        # motion queries: current guidance and its difference to the key's; keys: key guidance + appearance
        self.query_embed = nn.Conv2d(2 * guidance_channels, dim, kernel_size=1)
        self.key_embed = nn.Conv2d(guidance_channels + c_app, dim, kernel_size=1)
        self.value_embed = nn.Conv2d(c_app, dim, kernel_size=1)
        self.layers = nn.ModuleList(CrossAttentionLayer(dim, heads, mlp_ratio) for _ in range(depth))
        self.norm_out = nn.LayerNorm(dim)
        self.out_proj = nn.Conv2d(dim, c_app, kernel_size=1)
        self.bottleneck = nn.Sequential()
        for i in range(num_bottleneck_blocks):
            self.bottleneck.add_module(f"r{i}", B.ResBlock2d(c_app, kernel_size=3, padding=1))
        self.up_blocks = nn.ModuleList(
            B.UpBlock2d(width(num_down_blocks - i), width(num_down_blocks - i - 1), kernel_size=3,
                        padding=1) for i in range(num_down_blocks))
        # key-frame skips: at each decoder level the key frame's own (unaligned) encoder features are
        # concatenated and fused, so static content can be copied sharply while the attention-aligned
        # coarse features carry what moved (a suite choice; the paper's decoder is not described)
        self.skip_fuse = (nn.ModuleList(B.SameBlock2d(2 * width(num_down_blocks - i - 1),
                                                      width(num_down_blocks - i - 1), kernel_size=3, padding=1)
                                        for i in range(num_down_blocks)) if key_skips else None)
        self.final = nn.Conv2d(block_expansion, num_channels, kernel_size=7, padding=3)
        self.dim = dim

    def guidance(self, value: torch.Tensor) -> torch.Tensor:
        g = self.guidance_in(value)
        for block in self.guidance_up:
            g = block(g)
        return g

    def forward(self, source_image: torch.Tensor, feature_source: torch.Tensor, feature_driving: torch.Tensor
                ) -> dict[str, torch.Tensor]:
        app = self.first(source_image)
        skips = [app]
        for block in self.down_blocks:
            app = block(app)
            skips.append(app)
        g_s, g_d = self.guidance(feature_source), self.guidance(feature_driving)
        if g_s.shape[2:] != app.shape[2:]:
            raise ModelMismatch(f"IMT: motion guidance {tuple(g_s.shape[2:])} and appearance grid "
                                f"{tuple(app.shape[2:])} differ: image size, encoder scale and "
                                "num_down_blocks / num_guidance_up_blocks do not fit together")
        b, _, h, w = app.shape
        pos = sincos_2d(self.dim, h, w, app.device, app.dtype)[None]

        def tokens(t: torch.Tensor) -> torch.Tensor:
            return t.flatten(2).transpose(1, 2)

        x = tokens(self.query_embed(torch.cat([g_d, g_d - g_s], dim=1))) + pos
        keys = tokens(self.key_embed(torch.cat([g_s, app], dim=1))) + pos
        values = tokens(self.value_embed(app))
        for layer in self.layers:
            x = layer(x, keys, values)
        out = self.out_proj(self.norm_out(x).transpose(1, 2).reshape(b, self.dim, h, w))
        out = self.bottleneck(out)
        for i, block in enumerate(self.up_blocks):
            out = block(out)
            if self.skip_fuse is not None:
                out = self.skip_fuse[i](torch.cat([out, skips[-(i + 2)]], dim=1))
        return {"prediction": torch.sigmoid(self.final(out))}


# --------------------------------------------------------------------------- configurations
OFFICIAL_LIKE_MODULES: dict[str, dict[str, Any]] = {
    # the compact feature of the paper: CFTE's analysis net, 1 channel, s = 1/4 -> 6x6 at 384
    "encoder": {"block_expansion": 32, "num_kp": 1, "num_channels": 3, "max_features": 1024, "num_blocks": 5,
                "temperature": 0.1, "scale_factor": 0.25},
    # attention on the 48x48 grid at 384 (1/8): 6x6 guidance up 3 times; key frame down 3 times
    "generator": {"num_channels": 3, "block_expansion": 64, "max_features": 512, "num_down_blocks": 3,
                  "num_guidance_up_blocks": 3, "guidance_channels": 32, "dim": 256, "heads": 4, "depth": 2,
                  "mlp_ratio": 2.0, "num_bottleneck_blocks": 3, "feature_channels": 1, "key_skips": True},
    "discriminator": {"scales": [1], "block_expansion": 32, "max_features": 512, "num_blocks": 4, "sn": True},
}
DEMO_MODULES: dict[str, dict[str, Any]] = {
    # 128 px: s = 1/2 -> 4x4 = 16 values; attention on the 16x16 grid (1/8)
    "encoder": {"block_expansion": 16, "num_kp": 1, "num_channels": 3, "max_features": 128, "num_blocks": 4,
                "temperature": 0.1, "scale_factor": 0.5},
    "generator": {"num_channels": 3, "block_expansion": 16, "max_features": 128, "num_down_blocks": 3,
                  "num_guidance_up_blocks": 2, "guidance_channels": 16, "dim": 64, "heads": 4, "depth": 2,
                  "mlp_ratio": 2.0, "num_bottleneck_blocks": 2, "feature_channels": 1, "key_skips": True},
    "discriminator": {"scales": [1], "block_expansion": 16, "max_features": 128, "num_blocks": 4, "sn": True},
}
OPTIONS: dict[str, Any] = {
    "compact_feature": "CFTE analysis net (hourglass U-Net + 4 x (conv 5x5 s2 + GDN)), 1 channel",
    "motion_transformation": "cross-attention: motion queries from the current compact feature and its difference "
                             "to the key frame's; keys from the key frame's compact feature and appearance; values "
                             "= key-frame appearance tokens; fixed 2D sine-cosine positions",
    "losses": "CFTE's (same group): perceptual pyramid [10]x5 at [1, .5, .25, .125], LS-GAN 1, feature matching "
              "[10]x4; the paper's loss weights are not available here",
}


def feature_side(cfg: BaselineConfig) -> int:
    side = cfg.image_size * float(cfg.modules["encoder"].get("scale_factor", 1))
    if side % ANALYSIS_STRIDE:
        raise ModelMismatch(f"IMT configuration {cfg.name!r}: image size {cfg.image_size} x scale_factor "
                            f"{cfg.modules['encoder'].get('scale_factor', 1)} is not a multiple of 16")
    return int(side // ANALYSIS_STRIDE)


def _check_config(cfg: BaselineConfig) -> None:
    side = feature_side(cfg)
    g = cfg.modules["generator"]
    grid = cfg.image_size // 2 ** int(g["num_down_blocks"])
    if side * 2 ** int(g["num_guidance_up_blocks"]) != grid:
        raise ModelMismatch(f"IMT configuration {cfg.name!r}: the {side}x{side} compact feature upsampled "
                            f"{g['num_guidance_up_blocks']} times does not reach the {grid}x{grid} attention grid")
    if int(cfg.modules["encoder"].get("num_kp", 1)) != int(g.get("feature_channels", 1)):
        raise ModelMismatch("IMT: encoder num_kp and generator feature_channels differ")


MODULES: dict[str, Callable[..., nn.Module]] = {
    "encoder": KPDetector, "generator": IMTGenerator, "discriminator": B.MultiScaleDiscriminator}


def build_module(name: str, kwargs: Mapping[str, Any]) -> nn.Module:
    return build_from_table("IMT", MODULES, name, kwargs)


# --------------------------------------------------------------------------- codec
@CODECS.register()
class IMTCodec(BaselineCodec):
    name = NAME
    description = ("IMT (Chen et al., PCS 2025; no public code, suite implementation): VVC key frame + a 1-channel "
                   "compact feature (6x6 = 36 values at 384) turned into implicit motion by cross-attention")
    quant_scale = 4.0  # measured sweep on the demo model (docs/baselines.md); CFTE's GFVC scale too
    inference_modules = ("encoder", "generator")

    @property
    def feature_dim(self) -> int:  # type: ignore[override]
        return self.values_per_frame(self.config())

    @classmethod
    def values_per_frame(cls, cfg: BaselineConfig) -> int:
        return feature_side(cfg) ** 2 * int(cfg.modules["encoder"].get("num_kp", 1))

    @classmethod
    def official_config(cls) -> BaselineConfig:
        """The paper's setting as the suite reads it (384 px, 6x6x1); the widths are the suite's."""
        return BaselineConfig(model=NAME, image_size=384, modules=copy.deepcopy(OFFICIAL_LIKE_MODULES),
                              options=copy.deepcopy(OPTIONS), name="official")

    @classmethod
    def named_configs(cls) -> dict[str, BaselineConfig]:
        return {"official": cls.official_config(),
                "demo": BaselineConfig(model=NAME, image_size=128, modules=copy.deepcopy(DEMO_MODULES),
                                       # CPU demo: no GAN phase (half the time per step)
                                       options={**copy.deepcopy(OPTIONS), "feature_noise_halfwidth": 0.0,
                                                "loss_weights": {"generator_gan": 0}},
                                       name="demo")}

    @classmethod
    def build_modules(cls, cfg: BaselineConfig) -> dict[str, nn.Module]:
        _check_config(cfg)
        return {name: build_module(name, kw) for name, kw in cfg.modules.items()}

    def features(self, frames: torch.Tensor, key: torch.Tensor) -> torch.Tensor:
        assert self.nets is not None
        return self.nets["encoder"](frames)["value"].reshape(frames.shape[0], -1)

    def render(self, key: torch.Tensor, key_features: torch.Tensor, features: torch.Tensor
               ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        assert self.nets is not None
        s = feature_side(self.config())
        n = features.shape[0]
        out = self.nets["generator"](key.expand(n, -1, -1, -1), key_features.reshape(1, -1, s, s).expand(n, -1, -1, -1),
                                     features.reshape(n, -1, s, s))
        return out["prediction"], {}


def _looks_like_imt(obj: Mapping[str, Any]) -> bool:
    return (has_keys(obj.get("encoder"), "conv1.weight", "gdn1.beta")
            and has_keys(obj.get("generator"), "guidance_in.weight", "layers.0.to_q.weight"))


register_signature(NAME, _looks_like_imt)


# --------------------------------------------------------------------------- training
IMT_LOSS_WEIGHTS: dict[str, Any] = {"generator_gan": 1, "discriminator_gan": 1, "feature_matching": [10, 10, 10, 10],
                                    "perceptual": [10, 10, 10, 10, 10]}
IMT_TRAIN_PARAMS: dict[str, Any] = {"num_epochs": 100, "epoch_milestones": [60, 90], "lr": 2e-4,
                                    "scales": [1, 0.5, 0.25, 0.125], "transform_params": {}}


@RECIPES.register()
class IMTRecipe(PyramidGanRecipe):
    """IMT training as the suite chooses it (paper losses unavailable): CFTE's perceptual pyramid,
    LS-GAN and feature matching; optional uniform noise on the transmitted feature
    (``options["feature_noise_halfwidth"]``, default 0)."""

    name = NAME
    model = NAME
    lr_milestones = (0.6, 0.9)
    default_weights = IMT_LOSS_WEIGHTS
    train_params = IMT_TRAIN_PARAMS

    def __init__(self, config: Any, device: str = "cpu", weights_dir: Any = None) -> None:
        super().__init__(config, device, weights_dir)
        self.noise = float(config.options.get("feature_noise_halfwidth", 0.0))

    def build(self) -> dict[str, nn.Module]:
        mods = IMTCodec.build_modules(self.config)
        if "discriminator" not in mods:
            mods["discriminator"] = build_module("discriminator", OFFICIAL_LIKE_MODULES["discriminator"])
        return mods

    def optimizers(self) -> dict[str, list[str]]:
        return {"optimizer_generator": ["generator"], "optimizer_discriminator": ["discriminator"],
                "optimizer_encoder": ["encoder"]}

    def generator_losses(self, modules: dict[str, Any], batch: dict[str, torch.Tensor], step: int
                         ) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        enc, gen = modules["encoder"], modules["generator"]
        src, drv = batch["source"], batch["driving"]
        f_s, f_d = enc(src)["value"], enc(drv)["value"]
        if self.noise > 0:
            f_d = f_d + torch.empty_like(f_d).uniform_(-self.noise, self.noise)
        pred = gen(src, f_s, f_d)["prediction"]
        w = self.weights
        terms: dict[str, torch.Tensor] = {"perceptual": self.perceptual()(pred, drv)}
        cache = {"prediction": pred}
        if self._gan():
            disc = modules["discriminator"]
            pyr = self.perceptual().pyramid
            real, fake = disc(pyr(drv)), disc(pyr(pred))
            terms.update(L.pyramid_gan_generator(real, fake, w))
        return terms, cache

    def losses_info(self) -> dict[str, Any]:
        return {"perceptual": self.perceptual().info(), "loss_weights": self.weights,
                "feature_noise_halfwidth": self.noise,
                "source": "suite choice (IMT paper's losses not available): CFTE/FOMM-lineage losses",
                "lr_milestones_fraction": list(self.lr_milestones)}
