"""LIA: Latent Image Animator (Wang, Yang, Bremond, Dantcheva, "Latent Image Animator:
Learning to Animate Images via Latent Space Navigation", ICLR 2022).

An autoencoder without keypoints: the encoder maps a frame to an appearance
code ``wa`` (512) plus a feature pyramid, and (through ``fc``) to 20 motion
magnitudes ``alpha``; the decoder navigates ``wa`` along an orthogonal motion
basis (QR of the learned ``direction`` matrix): latent = wa + Q alpha, and a
StyleGAN2-like synthesis network turns the latent into a flow + mask per
pyramid level that warps the encoder features of the source frame.

Networks have the official module and parameter names of wyhsirius/LIA @b9f15fb7
(``enc.net_app.*``, ``enc.fc.*``, ``dec.direction.weight``, ``dec.convs.*``,
``dec.to_rgbs.*``, ``dec.to_flows.*``, blur kernels as buffers), so the
official ``{'gen': state_dict}`` checkpoints load strictly.

Suite extensions (keyword-only, recorded in the configuration options):

* ``channels``: the width table {resolution: channels} that the official code
  hard-codes (4..32 px: 512, 64: 256, 128: 128, 256: 64); smaller tables give
  the CPU demo model;
* sizes that are not powers of two ("generalised" networks): the official
  encoder indexes the table by powers of two and ends with a 4x4 conv. Here the
  base resolution is ``size`` halved while even and > 4 (4 for powers of two,
  3 for 384), the encoder's last conv has that kernel, the decoder starts from
  a base x base constant, and the width of a level of resolution r is the
  table's entry at 2^floor(log2 r) (512 below 4). For powers of two this is
  exactly the official network.

Codec (``lia``): 20 motion magnitudes per inter frame. At the decoder
latent = wa(key) + Q alpha(frame): the official vox mode adds
Q alpha(source) - Q alpha(start), which cancels because source and start are
both the decoded key frame. Sizes other than the network's are handled by the
option ``size_adaptation`` (see :class:`LIACodec`).
"""
from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from baselines.base import BaselineCodec, BaselineConfig
from baselines.conformance import VectorModel, register_vector_model
from baselines.losses import PyramidPerceptual
from gfvc.codec import CODECS
from gfvc.errors import ConfigError, ModelMismatch
from model_parts.checkpoint import has_keys, register_signature
from model_parts.training import RECIPES, TrainRecipe

OFFICIAL_REPO = "wyhsirius/LIA"
OFFICIAL_COMMIT = "b9f15fb7"
# Official width table (EncoderApp; Synthesis multiplies the >= 64 px entries by channel_multiplier).
OFFICIAL_CHANNELS = {4: 512, 8: 512, 16: 512, 32: 512, 64: 256, 128: 128, 256: 64, 512: 32, 1024: 16}
ADAPTATIONS = ("resample", "generalised", "none")


# =============================================================================== StyleGAN2 primitives
def make_kernel(k: Sequence[float]) -> torch.Tensor:
    """Normalised 2D FIR kernel (outer product of a 1D kernel)."""
    t = torch.tensor(k, dtype=torch.float32)
    if t.ndim == 1:
        t = t[None, :] * t[:, None]
    return t / t.sum()


def upfirdn2d(x: torch.Tensor, kernel: torch.Tensor, up: int = 1, down: int = 1,
              pad: tuple[int, int] = (0, 0)) -> torch.Tensor:
    """Upsample by zero insertion, pad (negative = crop), FIR filter (true convolution), downsample.

    The filter runs as one depthwise convolution (same products and sums as the
    official single-channel conv over B*C images, about 9x faster on CPU).
    """
    b, c, h, w = x.shape
    kh, kw = kernel.shape
    p0, p1 = pad
    out = x
    if up > 1:
        out = F.pad(x.reshape(b, c, h, 1, w, 1), [0, up - 1, 0, 0, 0, up - 1]).view(b, c, h * up, w * up)
    out = F.pad(out, [max(p0, 0), max(p1, 0), max(p0, 0), max(p1, 0)])
    out = out[:, :, max(-p0, 0): out.shape[2] - max(-p1, 0), max(-p0, 0): out.shape[3] - max(-p1, 0)]
    weight = torch.flip(kernel, [0, 1]).to(out.dtype).view(1, 1, kh, kw).expand(c, 1, kh, kw)
    return F.conv2d(out, weight, stride=down, groups=c)


def fused_leaky_relu(x: torch.Tensor, bias: torch.Tensor, negative_slope: float = 0.2,
                     scale: float = 2 ** 0.5) -> torch.Tensor:
    return F.leaky_relu(x + bias, negative_slope) * scale


class FusedLeakyReLU(nn.Module):
    """Bias + LeakyReLU(0.2) * sqrt(2) (key ``bias``, shape (1, C, 1, 1))."""

    def __init__(self, channel: int) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(1, channel, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return fused_leaky_relu(x, self.bias)


class ScaledLeakyReLU(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.leaky_relu(x, 0.2)


class Blur(nn.Module):
    """FIR blur with padding (buffer ``kernel``)."""

    def __init__(self, kernel: Sequence[float], pad: tuple[int, int], upsample_factor: int = 1) -> None:
        super().__init__()
        k = make_kernel(kernel)
        if upsample_factor > 1:
            k = k * (upsample_factor ** 2)
        self.kernel: torch.Tensor
        self.register_buffer("kernel", k)
        self.pad = pad

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return upfirdn2d(x, self.kernel, pad=self.pad)


class Upsample(nn.Module):
    """x2 FIR upsampling (buffer ``kernel``)."""

    def __init__(self, kernel: Sequence[float], factor: int = 2) -> None:
        super().__init__()
        self.factor = factor
        k = make_kernel(kernel) * (factor ** 2)
        self.kernel: torch.Tensor
        self.register_buffer("kernel", k)
        p = k.shape[0] - factor
        self.pad = ((p + 1) // 2 + factor - 1, p // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return upfirdn2d(x, self.kernel, up=self.factor, pad=self.pad)


class EqualConv2d(nn.Module):
    """Conv with N(0,1) weights scaled by 1/sqrt(fan_in) at run time (equalised learning rate)."""

    def __init__(self, in_channel: int, out_channel: int, kernel_size: int, stride: int = 1, padding: int = 0,
                 bias: bool = True) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_channel, in_channel, kernel_size, kernel_size))
        self.scale = 1 / math.sqrt(in_channel * kernel_size ** 2)
        self.stride, self.padding = stride, padding
        self.bias = nn.Parameter(torch.zeros(out_channel)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight * self.scale, bias=self.bias, stride=self.stride, padding=self.padding)


class EqualLinear(nn.Module):
    """Linear with equalised learning rate (optionally fused LeakyReLU)."""

    def __init__(self, in_dim: int, out_dim: int, bias: bool = True, bias_init: float = 0, lr_mul: float = 1,
                 activation: str | None = None) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_dim, in_dim).div_(lr_mul))
        self.bias = nn.Parameter(torch.zeros(out_dim).fill_(bias_init)) if bias else None
        self.activation = activation
        self.scale = (1 / math.sqrt(in_dim)) * lr_mul
        self.lr_mul = lr_mul

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.activation:
            out = F.linear(x, self.weight * self.scale)
            assert self.bias is not None, "EqualLinear with an activation needs its bias (official layout)"
            return fused_leaky_relu(out, self.bias * self.lr_mul)
        return F.linear(x, self.weight * self.scale,
                        bias=self.bias * self.lr_mul if self.bias is not None else None)


class ConvLayer(nn.Sequential):
    """[Blur] -> EqualConv2d -> [FusedLeakyReLU | ScaledLeakyReLU] (keys 0, 1, 2 as in the official code)."""

    def __init__(self, in_channel: int, out_channel: int, kernel_size: int, downsample: bool = False,
                 blur_kernel: Sequence[float] = (1, 3, 3, 1), bias: bool = True, activate: bool = True) -> None:
        layers: list[nn.Module] = []
        if downsample:
            p = (len(blur_kernel) - 2) + (kernel_size - 1)
            layers.append(Blur(blur_kernel, pad=((p + 1) // 2, p // 2)))
            stride, padding = 2, 0
        else:
            stride, padding = 1, kernel_size // 2
        layers.append(EqualConv2d(in_channel, out_channel, kernel_size, padding=padding, stride=stride,
                                  bias=bias and not activate))
        if activate:
            layers.append(FusedLeakyReLU(out_channel) if bias else ScaledLeakyReLU())
        super().__init__(*layers)


class ResBlock(nn.Module):
    """Downsampling residual block (conv1 3x3, conv2 3x3/2, 1x1/2 skip), output / sqrt(2)."""

    def __init__(self, in_channel: int, out_channel: int, blur_kernel: Sequence[float] = (1, 3, 3, 1)) -> None:
        super().__init__()
        self.conv1 = ConvLayer(in_channel, in_channel, 3, blur_kernel=blur_kernel)
        self.conv2 = ConvLayer(in_channel, out_channel, 3, downsample=True, blur_kernel=blur_kernel)
        self.skip = ConvLayer(in_channel, out_channel, 1, downsample=True, activate=False, bias=False,
                              blur_kernel=blur_kernel)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.conv2(self.conv1(x)) + self.skip(x)) / math.sqrt(2)


class ModulatedConv2d(nn.Module):
    """StyleGAN2 modulated (and demodulated) conv; weight (1, out, in, k, k), ``modulation`` EqualLinear."""

    def __init__(self, in_channel: int, out_channel: int, kernel_size: int, style_dim: int, demodulate: bool = True,
                 upsample: bool = False, downsample: bool = False,
                 blur_kernel: Sequence[float] = (1, 3, 3, 1)) -> None:
        super().__init__()
        self.kernel_size, self.in_channel, self.out_channel = kernel_size, in_channel, out_channel
        self.upsample, self.downsample = upsample, downsample
        if upsample:
            p = (len(blur_kernel) - 2) - (kernel_size - 1)
            self.blur = Blur(blur_kernel, pad=((p + 1) // 2 + 1, p // 2 + 1), upsample_factor=2)
        if downsample:
            p = (len(blur_kernel) - 2) + (kernel_size - 1)
            self.blur = Blur(blur_kernel, pad=((p + 1) // 2, p // 2))
        self.scale = 1 / math.sqrt(in_channel * kernel_size ** 2)
        self.padding = kernel_size // 2
        self.weight = nn.Parameter(torch.randn(1, out_channel, in_channel, kernel_size, kernel_size))
        self.modulation = EqualLinear(style_dim, in_channel, bias_init=1)
        self.demodulate = demodulate

    def forward(self, x: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        b, cin, h, w = x.shape
        k, cout = self.kernel_size, self.out_channel
        weight = self.scale * self.weight * self.modulation(style).view(b, 1, cin, 1, 1)
        if self.demodulate:
            weight = weight * torch.rsqrt(weight.pow(2).sum([2, 3, 4]) + 1e-8).view(b, cout, 1, 1, 1)
        if self.upsample:
            wt = weight.transpose(1, 2).reshape(b * cin, cout, k, k)
            out = F.conv_transpose2d(x.reshape(1, b * cin, h, w), wt, padding=0, stride=2, groups=b)
            return self.blur(out.view(b, cout, out.shape[2], out.shape[3]))
        weight = weight.view(b * cout, cin, k, k)
        if self.downsample:
            x = self.blur(x)
            out = F.conv2d(x.reshape(1, b * cin, x.shape[2], x.shape[3]), weight, padding=0, stride=2, groups=b)
        else:
            out = F.conv2d(x.reshape(1, b * cin, h, w), weight, padding=self.padding, groups=b)
        return out.view(b, cout, out.shape[2], out.shape[3])


class NoiseInjection(nn.Module):
    """Learned noise strength (key ``weight``); LIA never injects noise (noise=None)."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))

    def forward(self, image: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        return image if noise is None else image + self.weight * noise


class ConstantInput(nn.Module):
    def __init__(self, channel: int, size: int = 4) -> None:
        super().__init__()
        self.input = nn.Parameter(torch.randn(1, channel, size, size))

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        return self.input.repeat(latent.shape[0], 1, 1, 1)


class StyledConv(nn.Module):
    def __init__(self, in_channel: int, out_channel: int, kernel_size: int, style_dim: int, upsample: bool = False,
                 blur_kernel: Sequence[float] = (1, 3, 3, 1), demodulate: bool = True) -> None:
        super().__init__()
        self.conv = ModulatedConv2d(in_channel, out_channel, kernel_size, style_dim, upsample=upsample,
                                    blur_kernel=blur_kernel, demodulate=demodulate)
        self.noise = NoiseInjection()
        self.activate = FusedLeakyReLU(out_channel)

    def forward(self, x: torch.Tensor, style: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        return self.activate(self.noise(self.conv(x, style), noise=noise))


class ToRGB(nn.Module):
    """1x1 ConvLayer (with its activation, as in the official code) + bias, plus the upsampled skip."""

    def __init__(self, in_channel: int, style_dim: int, upsample: bool = True,
                 blur_kernel: Sequence[float] = (1, 3, 3, 1)) -> None:
        super().__init__()
        if upsample:
            self.upsample = Upsample(blur_kernel)
        self.conv = ConvLayer(in_channel, 3, 1)
        self.bias = nn.Parameter(torch.zeros(1, 3, 1, 1))

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        out = self.conv(x) + self.bias
        return out if skip is None else out + self.upsample(skip)


def _flow_grid(n: int, device: torch.device) -> torch.Tensor:
    """(1, n, n, 2) identity grid of np.linspace(-1, 1, n) in float64, cast to float32 (official ToFlow)."""
    xs = torch.linspace(-1, 1, n, dtype=torch.float64, device=device)
    gy, gx = torch.meshgrid(xs, xs, indexing="ij")
    return torch.stack([gx, gy], dim=2).float().unsqueeze(0)


class ToFlow(nn.Module):
    """Modulated 1x1 conv to 3 channels (flow x, y; mask), plus the upsampled skip; warps ``feat``.

    Returns (warped feature * mask, warped * mask + input * (1 - mask), raw 3-channel output).
    """

    def __init__(self, in_channel: int, style_dim: int, upsample: bool = True,
                 blur_kernel: Sequence[float] = (1, 3, 3, 1)) -> None:
        super().__init__()
        if upsample:
            self.upsample = Upsample(blur_kernel)
        self.conv = ModulatedConv2d(in_channel, 3, 1, style_dim, demodulate=False)
        self.bias = nn.Parameter(torch.zeros(1, 3, 1, 1))

    def forward(self, x: torch.Tensor, style: torch.Tensor, feat: torch.Tensor,
                skip: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        out = self.conv(x, style) + self.bias
        if skip is not None:
            out = out + self.upsample(skip)
        grid = _flow_grid(x.shape[2], x.device).to(x.dtype)
        flow = torch.tanh(out[:, 0:2]).permute(0, 2, 3, 1) + grid
        mask = torch.sigmoid(out[:, 2:3])
        warped = F.grid_sample(feat, flow, align_corners=False) * mask
        return warped, warped + x * (1.0 - mask), out


class Direction(nn.Module):
    """Learned motion directions (key ``weight``, (style_dim, motion_dim)); Q of their QR is the basis."""

    def __init__(self, motion_dim: int, style_dim: int = 512) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(style_dim, motion_dim))

    def basis(self) -> torch.Tensor:
        q, _ = torch.linalg.qr(self.weight + 1e-8)
        return q

    def forward(self, alpha: torch.Tensor | None) -> torch.Tensor:
        q = self.basis()
        if alpha is None:
            return q
        return torch.sum(torch.matmul(torch.diag_embed(alpha), q.T), dim=1)


# =============================================================================== geometry of the generalised nets
def base_resolution(size: int) -> int:
    """``size`` halved while even and > 4: 4 for powers of two >= 8, 3 for 384."""
    b = int(size)
    while b % 2 == 0 and b > 4:
        b //= 2
    if b < 3 or b > 7 or b == size:
        raise ConfigError(f"LIA: image size {size} is not base * 2^n with a base of 3..7 and n >= 1 "
                          "(e.g. 128, 256, 384)")
    return b


def _table(channels: Mapping[Any, int] | None) -> dict[int, int]:
    src = OFFICIAL_CHANNELS if channels is None else channels
    return {int(k): int(v) for k, v in src.items()}


def width_at(res: int, table: Mapping[int, int], multiplier: int = 1) -> int:
    """Channels of a level of resolution ``res``: table entry at 2^floor(log2 res) (512 below 4)."""
    p = 2 ** math.floor(math.log2(res))
    if p not in table:
        if p < min(table):
            return table[min(table)]
        raise ConfigError(f"LIA: no width for resolution {res} (table has {sorted(table)})")
    return table[p] * (multiplier if p >= 64 else 1)


# =============================================================================== encoder / decoder
class EncoderApp(nn.Module):
    """Appearance encoder: ``convs`` = [1x1 ConvLayer, ResBlocks down to base, base x base EqualConv2d]."""

    def __init__(self, size: int, w_dim: int = 512, *, channels: Mapping[Any, int] | None = None) -> None:
        super().__init__()
        table = _table(channels)
        base = base_resolution(size)
        self.w_dim = w_dim
        self.convs = nn.ModuleList([ConvLayer(3, width_at(size, table), 1)])
        res = size
        while res > base:
            self.convs.append(ResBlock(width_at(res, table), width_at(res // 2, table)))
            res //= 2
        self.convs.append(EqualConv2d(width_at(base, table), w_dim, base, padding=0, bias=False))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        res = []
        h = x
        for conv in self.convs:
            h = conv(h)
            res.append(h)
        return res[-1].squeeze(-1).squeeze(-1), res[::-1][2:]


class Encoder(nn.Module):
    """``net_app`` (appearance code wa + feature pyramid) and ``fc`` (5 EqualLinear: wa -> alpha)."""

    def __init__(self, size: int, dim: int = 512, dim_motion: int = 20, *,
                 channels: Mapping[Any, int] | None = None) -> None:
        super().__init__()
        self.net_app = EncoderApp(size, dim, channels=channels)
        self.fc = nn.Sequential(*[EqualLinear(dim, dim) for _ in range(4)], EqualLinear(dim, dim_motion))

    def enc_app(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        return self.net_app(x)

    def enc_motion(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.net_app(x)[0])

    def forward(self, input_source: torch.Tensor, input_target: torch.Tensor | None,
                h_start: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, list[torch.Tensor] | None, list[torch.Tensor]]:
        h_source, feats = self.net_app(input_source)
        if input_target is None:
            return h_source, None, feats
        h_motion_target = self.fc(self.net_app(input_target)[0])
        if h_start is not None:
            return h_source, [h_motion_target, self.fc(h_source), h_start], feats
        return h_source, [h_motion_target], feats


class Synthesis(nn.Module):
    """Flow-based StyleGAN2-like decoder (keys direction, input, conv1, to_rgb1, convs, to_rgbs, to_flows)."""

    def __init__(self, size: int, style_dim: int, motion_dim: int, blur_kernel: Sequence[float] = (1, 3, 3, 1),
                 channel_multiplier: int = 1, *, channels: Mapping[Any, int] | None = None) -> None:
        super().__init__()
        table = _table(channels)
        base = base_resolution(size)
        self.size, self.style_dim, self.motion_dim = size, style_dim, motion_dim
        self.direction = Direction(motion_dim, style_dim)
        c0 = width_at(base, table, channel_multiplier)
        self.input = ConstantInput(c0, size=base)
        self.conv1 = StyledConv(c0, c0, 3, style_dim, blur_kernel=blur_kernel)
        self.to_rgb1 = ToRGB(c0, style_dim, upsample=False)   # built but unused (as in the official code)
        self.convs, self.to_rgbs, self.to_flows = nn.ModuleList(), nn.ModuleList(), nn.ModuleList()
        in_ch, res = c0, base
        while res < size:
            res *= 2
            out_ch = width_at(res, table, channel_multiplier)
            self.convs.append(StyledConv(in_ch, out_ch, 3, style_dim, upsample=True, blur_kernel=blur_kernel))
            self.convs.append(StyledConv(out_ch, out_ch, 3, style_dim, blur_kernel=blur_kernel))
            self.to_rgbs.append(ToRGB(out_ch, style_dim))
            self.to_flows.append(ToFlow(out_ch, style_dim))
            in_ch = out_ch

    def latent(self, wa: torch.Tensor, alpha: Sequence[torch.Tensor] | None) -> torch.Tensor:
        """wa + direction(alpha_target) [- direction(alpha_start) + direction(alpha_source)]."""
        if alpha is None:
            return wa
        if len(alpha) > 1:
            return wa + (self.direction(alpha[0]) - self.direction(alpha[2])) + self.direction(alpha[1])
        return wa + self.direction(alpha[0])

    def render(self, latent: torch.Tensor, feats: Sequence[torch.Tensor],
               record: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        """Image (B, 3, S, S), unbounded (~[-1, 1]) from the target latent and the source feature pyramid."""
        out = self.conv1(self.input(latent), latent)
        skip = skip_flow = None
        levels = zip(self.convs[::2], self.convs[1::2], self.to_rgbs, self.to_flows, feats, strict=True)
        for j, (conv_up, conv, to_rgb, to_flow, feat) in enumerate(levels):
            out = conv(conv_up(out, latent), latent)
            out_warp, out, skip_flow = to_flow(out, latent, feat, skip_flow)
            skip = to_rgb(out_warp, skip)
            if record is not None:
                record[f"dec.to_flows.{j}.out"] = skip_flow
                record[f"dec.to_rgbs.{j}"] = skip
        assert skip is not None
        return skip

    def forward(self, wa: torch.Tensor, alpha: Sequence[torch.Tensor] | None,
                feats: Sequence[torch.Tensor]) -> torch.Tensor:
        return self.render(self.latent(wa, alpha), feats)


class Generator(nn.Module):
    """LIA generator (official kwargs; ``channels`` is the suite's width-table option)."""

    def __init__(self, size: int, style_dim: int = 512, motion_dim: int = 20, channel_multiplier: int = 1,
                 blur_kernel: Sequence[float] = (1, 3, 3, 1), *, channels: Mapping[Any, int] | None = None) -> None:
        super().__init__()
        if channel_multiplier != 1:
            # The decoder warps encoder features of the same level: widths must agree (official code fails too).
            raise ConfigError("LIA: channel_multiplier must be 1 (the decoder warps encoder features of equal width)")
        self.size = size
        self.enc = Encoder(size, style_dim, motion_dim, channels=channels)
        self.dec = Synthesis(size, style_dim, motion_dim, list(blur_kernel), channel_multiplier, channels=channels)

    def get_direction(self) -> torch.Tensor:
        return self.dec.direction(None)

    def synthesis(self, wa: torch.Tensor, alpha: Sequence[torch.Tensor] | None,
                  feat: Sequence[torch.Tensor]) -> torch.Tensor:
        return self.dec(wa, alpha, feat)

    def forward(self, img_source: torch.Tensor, img_drive: torch.Tensor,
                h_start: torch.Tensor | None = None) -> torch.Tensor:
        wa, alpha, feats = self.enc(img_source, img_drive, h_start)
        return self.dec(wa, alpha, feats)


def build_generator(kwargs: Mapping[str, Any], options: Mapping[str, Any] | None = None) -> Generator:
    kw = copy.deepcopy(dict(kwargs))
    try:
        return Generator(**kw, channels=(options or {}).get("channels"))
    except TypeError as e:
        raise ConfigError(f"LIA gen: constructor arguments do not match the official ones ({e})") from None


# =============================================================================== conformance
@register_vector_model("lia")
class LIAVectors(VectorModel):
    """Runs the official LIA vectors (run_demo: vox mode with h_start, ted mode without)."""

    def build(self, module: str, cls: str, kwargs: dict[str, Any]) -> nn.Module:
        if cls.rsplit(".", 1)[-1] != "Generator":
            raise ConfigError(f"LIA conformance: no port of official class {cls!r}")
        return build_generator(kwargs)

    def run(self, modules: dict[str, Any], inputs: dict[str, Any], meta: dict[str, Any]) -> dict[str, Any]:
        gen: Generator = modules["gen"]
        source, driving, start = inputs["source"], inputs["driving"], inputs["driving_start"]
        out: dict[str, Any] = {"direction_Q": gen.get_direction()}
        h_start = gen.enc.enc_motion(start)
        out["h_start"] = h_start
        wa, alpha, feats = gen.enc(source, driving, h_start)
        assert alpha is not None
        out["enc.wa"] = wa
        for i, a in enumerate(alpha):
            out[f"enc.alpha.{i}"] = a
        out["enc.feats_8x8"] = feats[0]
        record: dict[str, torch.Tensor] = {}
        out["img_recon"] = gen.dec.render(gen.dec.latent(wa, alpha), feats, record)
        out.update(record)
        out["img_recon_no_h_start"] = gen(source, driving, None)
        return out


def _looks_like_lia(obj: Mapping[str, Any]) -> bool:
    return has_keys(obj, "gen") and has_keys(obj["gen"], "dec.direction.weight", "enc.fc.0.weight")


register_signature("lia", _looks_like_lia)


# =============================================================================== codec
def _official_gen_kwargs(size: int = 256) -> dict[str, Any]:
    return {"size": size, "style_dim": 512, "motion_dim": 20, "channel_multiplier": 1, "blur_kernel": [1, 3, 3, 1]}


DEMO_CHANNELS = {"4": 96, "8": 96, "16": 96, "32": 64, "64": 32, "128": 16}
RESAMPLE_DOWN = "bilinear, antialias=True"
RESAMPLE_UP = "bicubic, align_corners=False, clamped to [0, 1]"


@CODECS.register()
class LIACodec(BaselineCodec):
    """LIA: 20 motion magnitudes per inter frame.

    ``options.size_adaptation`` says what happens when the condition's
    resolution differs from the network's ``size`` (official LIA networks
    only exist at powers of two; the released checkpoints are 256 px):

    * ``"resample"`` (default; used by ``gfvc-human`` at 384 with the
      official 256 px checkpoints): frames are resampled to the network size
      before the encoder (bilinear, antialiased) and the synthesised frames
      back to the condition size (bicubic); recorded in the configuration;
    * ``"generalised"``: the network itself is built at the condition size
      (non-power-of-two sizes via the generalised encoder/decoder, see the
      module docstring); needs a checkpoint trained at that size;
    * ``"none"``: refuse other sizes.
    """

    name = "lia"
    description = ("LIA (Latent Image Animator, ICLR 2022): VVC key frame + 20 motion magnitudes on the learned "
                   "orthogonal motion basis per inter frame")
    feature_dim = 20
    quant_scale = 16.0       # chosen by the measured sweep in docs/baselines.md (LIA section)
    inference_modules = ("gen",)
    synth_batch = 4

    @classmethod
    def official_config(cls) -> BaselineConfig:
        return BaselineConfig(model="lia", image_size=256, modules={"gen": _official_gen_kwargs(256)},
                              options={"size_adaptation": "resample"},   # run_demo.py defaults
                              name="official")

    @classmethod
    def named_configs(cls) -> dict[str, BaselineConfig]:
        off = cls.official_config()
        return {
            "official": off,
            "ted384-resample": BaselineConfig.from_dict({**cls.adapted(off, 384).to_dict(), "name": "ted384-resample"}),
            "ted384-generalised": BaselineConfig(
                model="lia", image_size=384, modules={"gen": _official_gen_kwargs(384)},
                options={"size_adaptation": "generalised"},   # 384 = 3 x 2^7: base 3x3 (module docstring)
                name="ted384-generalised"),
            "demo": BaselineConfig(
                model="lia", image_size=128,
                modules={"gen": {"size": 128, "style_dim": 128, "motion_dim": 20, "channel_multiplier": 1,
                                 "blur_kernel": [1, 3, 3, 1]}},
                # suite demo configuration: width table 96 (<= 16 px)/64/32/16 and style_dim 128 instead of the
                # hard-coded 512/256/128/64 and 512
                # (no resampling: a 128-px demo model is refused by the 256/384 conditions, like the others)
                options={"size_adaptation": "none", "channels": dict(DEMO_CHANNELS)},
                name="demo"),
        }

    @staticmethod
    def adapted(cfg: BaselineConfig, size: int) -> BaselineConfig:
        """``cfg`` coding at ``size`` by resampling to/from its network size (option ``resample``)."""
        d = cfg.to_dict()
        net = int(cfg.modules["gen"]["size"])
        d["image_size"] = int(size)
        d["options"]["resample"] = {"network_size": net, "coded_size": int(size), "down": RESAMPLE_DOWN,
                                    "up": RESAMPLE_UP}
        if d["name"] == "official":
            d["name"] = f"official-resample{size}"
        return BaselineConfig.from_dict(d)

    def config(self) -> BaselineConfig:
        if self._cfg is None:
            cfg = super().config()
            w, h = self.condition.width, self.condition.height
            adapt = str(cfg.options.get("size_adaptation", "resample"))
            if adapt not in ADAPTATIONS:
                raise ModelMismatch(f"LIA option size_adaptation {adapt!r} unknown; expected one of {ADAPTATIONS}")
            if w == h and w != cfg.image_size and adapt == "resample":
                cfg = self.adapted(cfg, w)
            self._cfg = cfg
        return self._cfg

    @classmethod
    def build_modules(cls, cfg: BaselineConfig) -> dict[str, Any]:
        return {"gen": build_generator(cfg.modules["gen"], cfg.options)}

    # ------------------------------------------------------------ resampling
    def _net_size(self) -> int:
        return int(self.config().modules["gen"]["size"])

    def _to_net(self, x: torch.Tensor) -> torch.Tensor:
        """[0, 1] frames at the coded size -> [-1, 1] at the network size."""
        n = self._net_size()
        if x.shape[-1] != n or x.shape[-2] != n:
            x = F.interpolate(x, size=(n, n), mode="bilinear", align_corners=False, antialias=True)
        return x * 2 - 1

    def _from_net(self, y: torch.Tensor) -> torch.Tensor:
        """Network output (~[-1, 1]) -> [0, 1] at the coded size."""
        y = ((y.clamp(-1, 1) + 1) / 2)
        s = self.config().image_size
        if y.shape[-1] != s:
            y = F.interpolate(y, size=(s, s), mode="bicubic", align_corners=False).clamp(0, 1)
        return y

    # ------------------------------------------------------------ model
    def features(self, frames: torch.Tensor, key: torch.Tensor) -> torch.Tensor:
        assert self.nets is not None
        return self.nets["gen"].enc.enc_motion(self._to_net(frames))

    def _key_state(self, key: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        cache = getattr(self, "_key_cache", None)
        if cache is not None and cache[0].shape == key.shape and torch.equal(cache[0], key):
            return cache[1], cache[2]
        assert self.nets is not None
        wa, feats = self.nets["gen"].enc.net_app(self._to_net(key))
        self._key_cache = (key.clone(), wa, feats)
        return wa, feats

    def render(self, key: torch.Tensor, key_features: torch.Tensor, features: torch.Tensor
               ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        assert self.nets is not None
        gen: Generator = self.nets["gen"]
        wa, feats = self._key_state(key)
        n = features.shape[0]
        latent = wa + gen.dec.direction(features)                 # (n, style_dim)
        img = gen.dec.render(latent, [f.expand(n, *f.shape[1:]) for f in feats])
        return self._from_net(img), {}


# =============================================================================== training


class Discriminator(nn.Module):
    """StyleGAN2 discriminator (Karras et al., CVPR 2020) from LIA's own blocks, for the adversarial loss.

    LIA's paper trains with "a StyleGAN2 adversarial loss"; its code has no
    training part, so this network and its key names (``convs``,
    ``final_conv``, ``final_linear``, as in the StyleGAN2 code LIA builds on)
    are the suite's: 1x1 ConvLayer, downsampling ResBlocks to the base
    resolution, minibatch standard deviation (group 4, 1 channel), 3x3
    ConvLayer, two EqualLinear. Widths follow the generator's table.
    """

    def __init__(self, size: int, channels: Mapping[Any, int] | None = None, stddev_group: int = 4) -> None:
        super().__init__()
        table = _table(channels)
        base = base_resolution(size)
        convs: list[nn.Module] = [ConvLayer(3, width_at(size, table), 1)]
        res = size
        while res > base:
            convs.append(ResBlock(width_at(res, table), width_at(res // 2, table)))
            res //= 2
        self.convs = nn.Sequential(*convs)
        c = width_at(base, table)
        self.stddev_group = stddev_group
        self.final_conv = ConvLayer(c + 1, c, 3)
        self.final_linear = nn.Sequential(EqualLinear(c * base * base, c, activation="fused_lrelu"),
                                          EqualLinear(c, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.convs(x)
        b, c, h, w = out.shape
        group = min(b, self.stddev_group)
        while b % group:
            group -= 1
        std = out.view(group, -1, 1, c, h, w)
        std = torch.sqrt(std.var(0, unbiased=False) + 1e-8).mean([2, 3, 4], keepdim=True).squeeze(2)
        out = torch.cat([out, std.repeat(group, 1, h, w)], 1)
        return self.final_linear(self.final_conv(out).view(b, -1))


LIA_LOSS_WEIGHTS: dict[str, Any] = {"reconstruction": 1.0, "perceptual": [10.0] * 5, "adversarial": 1.0,
                                    "r1_gamma": 10.0, "r1_every": 16}
LIA_CHOICES = ("LIA's repository has no training code; the paper's objective is L_recon (L1) + lambda L_vgg + "
               "L_adv (StyleGAN2). The suite's choices: L1 on [-1, 1] images, weight 1; VGG19 relu1_1..relu5_1 "
               "L1 at one scale, 10 per layer (the FOMM lineage's per-layer weight; lambda is not in the code); "
               "non-saturating logistic GAN, weight 1, with the StyleGAN2 discriminator and lazy R1 (gamma 10 "
               "every 16 steps); Adam lr 2e-3, betas (0, 0.99) (the StyleGAN2 settings of the equalised-lr "
               "layers LIA uses); no noise injection (LIA never injects noise at inference); to_flows weights start at "
               "zero (identity flows; option train_flow_init: 'zero' | 'official')")


@RECIPES.register()
class LIARecipe(TrainRecipe[BaselineConfig]):
    """LIA self-reconstruction training: decode the driving frame from the source frame's appearance and
    the driving frame's motion magnitudes (latent = wa(source) + Q alpha(driving)); see ``LIA_CHOICES``."""

    name = "lia"
    model = "lia"
    lr = 2e-3
    betas = (0.0, 0.99)
    lr_milestones = ()

    def __init__(self, config: BaselineConfig, device: str = "cpu", weights_dir: Any = None) -> None:
        super().__init__(config, device, weights_dir)
        self.weights = {**LIA_LOSS_WEIGHTS, **dict(config.options.get("loss_weights") or {})}
        self._perc: Any = None

    def perceptual(self) -> Any:
        if self._perc is None:
            self._perc = PyramidPerceptual([1], self.weights["perceptual"], weights_dir=self.weights_dir)
        return self._perc.to(self.device)

    @property
    def flow_init(self) -> str:
        return str(self.config.options.get("train_flow_init", "zero"))

    def build(self) -> dict[str, nn.Module]:
        cfg = self.config
        size = int(cfg.modules["gen"]["size"])
        gen = build_generator(cfg.modules["gen"], cfg.options)
        if self.flow_init == "zero":
            # Suite choice: start from identity flows and half masks. With the constructor's N(0, 1) weights the
            # flow logits of the pyramid levels add up and saturate tanh (random warps of up to half the image),
            # which a short run does not recover from (measured: L1 0.34 vs 0.19 after 40 CPU steps, no GAN).
            with torch.no_grad():
                for tf in gen.dec.to_flows:
                    tf.conv.weight.zero_()  # type: ignore[union-attr,operator]
        elif self.flow_init != "official":
            raise ConfigError(f"LIA option train_flow_init {self.flow_init!r}: expected 'zero' or 'official'")
        return {"gen": gen, "discriminator": Discriminator(size, channels=cfg.options.get("channels"))}

    def optimizers(self) -> dict[str, list[str]]:
        return {"optimizer_gen": ["gen"], "optimizer_discriminator": ["discriminator"]}

    def discriminator_optimizers(self) -> tuple[str, ...]:
        return ("optimizer_discriminator",) if float(self.weights["adversarial"]) else ()

    def _net(self, x: torch.Tensor) -> torch.Tensor:
        n = int(self.config.modules["gen"]["size"])
        if x.shape[-1] != n:
            x = F.interpolate(x, size=(n, n), mode="bilinear", align_corners=False, antialias=True)
        return x * 2 - 1

    def generator_losses(self, modules: dict[str, Any], batch: dict[str, torch.Tensor], step: int
                         ) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        gen = modules["gen"]
        src, drv = self._net(batch["source"]), self._net(batch["driving"])
        pred = gen(src, drv)
        w = self.weights
        terms = {"reconstruction": w["reconstruction"] * (pred - drv).abs().mean()}
        if sum(w["perceptual"]):
            terms["perceptual"] = self.perceptual()((pred.clamp(-1, 1) + 1) / 2, (drv + 1) / 2)
        if float(w["adversarial"]):
            terms["adversarial"] = w["adversarial"] * F.softplus(-modules["discriminator"](pred)).mean()
        return terms, {"prediction": pred, "driving": drv}

    def discriminator_losses(self, modules: dict[str, Any], batch: dict[str, torch.Tensor], cache: dict[str, Any],
                             step: int) -> dict[str, torch.Tensor]:
        disc = modules["discriminator"]
        real = cache["driving"].detach()
        out = {"logistic": F.softplus(disc(cache["prediction"].detach())).mean() + F.softplus(-disc(real)).mean()}
        every = int(self.weights["r1_every"])
        if float(self.weights["r1_gamma"]) and every > 0 and step % every == 0:
            real = real.clone().requires_grad_(True)
            (g,) = torch.autograd.grad(disc(real).sum(), real, create_graph=True)
            out["r1"] = self.weights["r1_gamma"] / 2 * g.pow(2).sum([1, 2, 3]).mean() * every
        return out

    def losses_info(self) -> dict[str, Any]:
        return {"weights": self.weights, "perceptual": self.perceptual().info(), "gan": "non-saturating logistic + "
                "lazy R1", "optimizer": {"lr": self.lr, "betas": list(self.betas)}, "flow_init": self.flow_init,
                "choices": LIA_CHOICES}
