"""Cheng et al. 2020 learned image codec, attention variant, as released in CompressAI (``cheng2020-attn``).

Model: Z. Cheng, H. Sun, M. Takeuchi, J. Katto, "Learned Image Compression
with Discretized Gaussian Mixture Likelihoods and Attention Modules", CVPR
2020 (arXiv 2001.01568): residual-block analysis/synthesis transforms with
two simplified attention modules each, and the joint autoregressive +
hierarchical prior of Minnen, Ballé, Toderici (NeurIPS 2018). CompressAI's
variant (the one the GFVC AhG software uses, ``compressai.zoo.cheng2020_attn``)
replaces the paper's Gaussian mixture by a single Gaussian whose mean and
scale come from the hyperprior and a 5x5 masked-convolution context model;
z is coded with the factorized entropy bottleneck.

Facts taken from InterDigitalInc/CompressAI v1.2.4 (the version pinned by
the AhG software's requirements.txt): module tree and names
(``models/waseda.py`` Cheng2020Anchor/Cheng2020Attention, ``layers/layers.py``),
``N`` = M = 128 for qualities 1-3 and 192 for 4-6 (``zoo/image.py`` cfgs),
the evaluation forward and the coding loop of
``JointAutoregressiveHierarchicalPriors`` (``models/google.py``). The code is
the suite's own; its ``state_dict()`` has exactly CompressAI 1.2.4's keys and
shapes (312 entries), so official checkpoints load strictly (see
:func:`canonical_state_dict` for the other CompressAI key spellings).

Coding differs from CompressAI only in the entropy coder (constriction's range
coder on the same 16-bit tables instead of CompressAI's rANS, z and y in one
stream; :mod:`model_parts.learned_image.tables`); the latents, table indexes and
reconstruction are the same computations.
"""
from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from gfvc.errors import InputError, ModelMismatch
from model_parts.checkpoint import load_strict
from model_parts.gdn import PEDESTAL, CompressAIGDN
from model_parts.learned_image.entropy_models import DYNAMIC_BUFFERS, EntropyBottleneck, GaussianConditional
from model_parts.learned_image.spec import STRIDE, Y_PER_Z
from model_parts.learned_image.tables import TableCoder

CONTEXT_KERNEL = 5    # masked convolution of the context model
_PAD = (CONTEXT_KERNEL - 1) // 2


def _conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel_size=3, stride=stride, padding=1)


def _conv1x1(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel_size=1, stride=stride)


def _subpel3x3(cin: int, cout: int, r: int) -> nn.Sequential:
    """3x3 convolution to r*r*cout channels, then pixel shuffle (sub-pixel up-sampling by r)."""
    return nn.Sequential(nn.Conv2d(cin, cout * r * r, kernel_size=3, padding=1), nn.PixelShuffle(r))


class _StridedResBlock(nn.Module):
    """conv3x3/2 - LeakyReLU - conv3x3 - GDN, plus a strided 1x1 shortcut."""

    def __init__(self, cin: int, cout: int, stride: int = 2) -> None:
        super().__init__()
        self.conv1 = _conv3x3(cin, cout, stride)
        self.leaky_relu = nn.LeakyReLU()
        self.conv2 = _conv3x3(cout, cout)
        self.gdn = CompressAIGDN(cout)
        self.skip = _conv1x1(cin, cout, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.gdn(self.conv2(self.leaky_relu(self.conv1(x)))) + self.skip(x)


class _ResBlock(nn.Module):
    """Two 3x3 convolutions, each followed by LeakyReLU, plus the identity."""

    def __init__(self, ch: int) -> None:
        super().__init__()
        self.conv1 = _conv3x3(ch, ch)
        self.leaky_relu = nn.LeakyReLU()
        self.conv2 = _conv3x3(ch, ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.leaky_relu(self.conv2(self.leaky_relu(self.conv1(x)))) + x


class _UpResBlock(nn.Module):
    """Sub-pixel up-sampling - LeakyReLU - conv3x3 - inverse GDN, plus a sub-pixel shortcut."""

    def __init__(self, cin: int, cout: int, r: int = 2) -> None:
        super().__init__()
        self.subpel_conv = _subpel3x3(cin, cout, r)
        self.leaky_relu = nn.LeakyReLU()
        self.conv = _conv3x3(cout, cout)
        self.igdn = CompressAIGDN(cout, inverse=True)
        self.upsample = _subpel3x3(cin, cout, r)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.igdn(self.conv(self.leaky_relu(self.subpel_conv(x)))) + self.upsample(x)


class _AttentionUnit(nn.Module):
    """Bottleneck residual unit 1x1 (C/2) - 3x3 - 1x1 (C), ReLUs, ReLU after the sum."""

    def __init__(self, ch: int) -> None:
        super().__init__()
        half = ch // 2
        self.conv = nn.Sequential(_conv1x1(ch, half), nn.ReLU(), _conv3x3(half, half), nn.ReLU(),
                                  _conv1x1(half, ch))
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.conv(x) + x)


class _Attention(nn.Module):
    """Cheng et al.'s simplified attention: trunk(x) * sigmoid(mask(x)) + x (no non-local block)."""

    def __init__(self, ch: int) -> None:
        super().__init__()
        self.conv_a = nn.Sequential(*(_AttentionUnit(ch) for _ in range(3)))
        self.conv_b = nn.Sequential(*(_AttentionUnit(ch) for _ in range(3)), _conv1x1(ch, ch))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_a(x) * torch.sigmoid(self.conv_b(x)) + x


class _MaskedConv2d(nn.Conv2d):
    """Type-A masked convolution (PixelCNN): each output sees only positions before it in raster order.

    The mask is a buffer (CompressAI's layout); it is applied functionally, so
    loaded weights are never modified in place.
    """

    mask: torch.Tensor

    def __init__(self, cin: int, cout: int, kernel_size: int) -> None:
        super().__init__(cin, cout, kernel_size=kernel_size, padding=kernel_size // 2)
        mask = torch.ones_like(self.weight.data)
        c = kernel_size // 2
        mask[:, :, c, c:] = 0
        mask[:, :, c + 1:] = 0
        self.register_buffer("mask", mask)

    def masked_weight(self) -> torch.Tensor:
        return self.weight * self.mask

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.masked_weight(), self.bias, padding=self.padding)


@contextmanager
def one_thread() -> Iterator[None]:
    """Run the entropy-critical computations with one torch thread, whatever the caller set.

    The table index of every symbol must come out the same in encoder and
    decoder. CPU kernels may sum in another order with another thread count
    (measured: context-model means differ by ~5e-7 between 1 and 2 threads),
    so h_s and the context loop always run single-threaded: their tensors are
    tiny, threads would not speed them up anyway. Caveat: torch's thread
    count is process-wide, so another Python thread using torch meanwhile
    runs single-threaded too.
    """
    n = torch.get_num_threads()
    if n == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


@dataclass
class Latents:
    """What the encoder produced besides the code: for checks and conformance tests."""

    y: torch.Tensor
    z: torch.Tensor
    z_hat: torch.Tensor
    y_hat: torch.Tensor       # y quantised around the context-model means: exactly what the decoder rebuilds
    means: torch.Tensor
    scales: torch.Tensor
    escapes: int              # symbols outside their table's range (bypass-coded)


class Cheng2020Attention(nn.Module):
    """cheng2020-attn with N = M channels (128 or 192 in the official checkpoints)."""

    def __init__(self, N: int = 192) -> None:
        super().__init__()
        if N < 2 or N % 2:
            raise InputError(f"cheng2020-attn needs an even channel count N >= 2, got {N}")
        self.N = int(N)
        self.entropy_bottleneck = EntropyBottleneck(N)
        self.g_a = nn.Sequential(
            _StridedResBlock(3, N), _ResBlock(N), _StridedResBlock(N, N), _Attention(N), _ResBlock(N),
            _StridedResBlock(N, N), _ResBlock(N), _conv3x3(N, N, stride=2), _Attention(N))
        self.h_a = nn.Sequential(
            _conv3x3(N, N), nn.LeakyReLU(), _conv3x3(N, N), nn.LeakyReLU(), _conv3x3(N, N, stride=2),
            nn.LeakyReLU(), _conv3x3(N, N), nn.LeakyReLU(), _conv3x3(N, N, stride=2))
        wide = N * 3 // 2
        self.h_s = nn.Sequential(
            _conv3x3(N, N), nn.LeakyReLU(), _subpel3x3(N, N, 2), nn.LeakyReLU(), _conv3x3(N, wide),
            nn.LeakyReLU(), _subpel3x3(wide, wide, 2), nn.LeakyReLU(), _conv3x3(wide, 2 * N))
        self.g_s = nn.Sequential(
            _Attention(N), _ResBlock(N), _UpResBlock(N, N), _ResBlock(N), _UpResBlock(N, N), _Attention(N),
            _ResBlock(N), _UpResBlock(N, N), _ResBlock(N), _subpel3x3(N, 3, 2))
        self.entropy_parameters = nn.Sequential(
            nn.Conv2d(N * 12 // 3, N * 10 // 3, 1), nn.LeakyReLU(), nn.Conv2d(N * 10 // 3, N * 8 // 3, 1),
            nn.LeakyReLU(), nn.Conv2d(N * 8 // 3, N * 6 // 3, 1))
        self.context_prediction = _MaskedConv2d(N, 2 * N, CONTEXT_KERNEL)
        self.gaussian_conditional = GaussianConditional()

    # ------------------------------------------------------------------ tables and loading
    @property
    def has_tables(self) -> bool:
        return self.entropy_bottleneck.has_tables and self.gaussian_conditional.has_tables

    @torch.no_grad()
    def update(self, force: bool = False) -> bool:
        """Fill missing entropy tables as CompressAI's ``update()`` does (``force`` recomputes); True if any."""
        done = False
        for m in (self.entropy_bottleneck, self.gaussian_conditional):
            if force or not m.has_tables:
                m.update()
                done = True
        return done

    def load_compressai_state_dict(self, state_dict: Mapping[str, Any], source: str) -> str:
        """Load a CompressAI state_dict strictly; returns where the entropy tables came from.

        Table buffers (and the scale table) of any size are taken as stored,
        as CompressAI's ``load_state_dict`` resizes them; empty or absent
        tables (a file saved before ``update()``) are computed as ``update()``
        would, and the answer says so. Every other key must be present with
        its official shape (ModelMismatch naming the first differences).
        """
        sd = canonical_state_dict(state_dict)
        stored = True
        for prefix, m in (("entropy_bottleneck", self.entropy_bottleneck),
                          ("gaussian_conditional", self.gaussian_conditional)):
            cdf, lengths, offsets = (sd.get(f"{prefix}.{n}") for n in ("_quantized_cdf", "_cdf_length", "_offset"))
            usable = all(isinstance(t, torch.Tensor) and t.numel() > 0 for t in (cdf, lengths, offsets))
            if m is self.gaussian_conditional:
                table = sd.get(f"{prefix}.scale_table")
                if not isinstance(table, torch.Tensor) or table.numel() == 0:
                    table = torch.zeros(0)
                    usable = False  # tables without their scales are unusable: recompute them
                elif usable and isinstance(cdf, torch.Tensor) and cdf.shape[0] != table.numel():
                    usable = False
                self.gaussian_conditional.scale_table = table.detach().clone().float()
                sd[f"{prefix}.scale_table"] = self.gaussian_conditional.scale_table
            if usable and isinstance(cdf, torch.Tensor) and isinstance(lengths, torch.Tensor) \
                    and isinstance(offsets, torch.Tensor):
                m.set_tables(cdf.cpu().numpy(), lengths.cpu().numpy(), offsets.cpu().numpy())
            else:
                stored = False
                m.set_tables(np.zeros((0,), np.int32), np.zeros((0,), np.int32), np.zeros((0,), np.int32))
            for n in DYNAMIC_BUFFERS:
                sd[f"{prefix}.{n}"] = getattr(m, n)
        load_strict(self, sd, model="cheng2020-attn", name="cheng2020-attn", source=source)
        if not stored:
            self.update()
            return "computed by update() (not stored in the checkpoint)"
        return "stored in the checkpoint"

    # ------------------------------------------------------------------ CompressAI forward (evaluation)
    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """CompressAI's evaluation forward, every intermediate returned (for conformance checks).

        As in CompressAI, y_hat here is round(y) (not round(y - mean) + mean,
        which is what coding uses), the likelihoods of y are evaluated at
        round(y - mean) + mean, and x_hat is not clamped.
        """
        y = self.g_a(x)
        z = self.h_a(y)
        z_hat, z_lik = self.entropy_bottleneck(z)
        params = self.h_s(z_hat)
        y_hat = torch.round(y)
        ctx = self.context_prediction(y_hat)
        scales, means = self.entropy_parameters(torch.cat((params, ctx), dim=1)).chunk(2, 1)
        y_lik = self.gaussian_conditional.likelihood(torch.round(y - means) + means, scales, means)
        x_hat = self.g_s(y_hat)
        return {"y": y, "z": z, "z_hat": z_hat, "z_likelihoods": z_lik, "params": params, "y_hat": y_hat,
                "scales": scales, "means": means, "y_likelihoods": y_lik, "x_hat": x_hat}

    # ------------------------------------------------------------------ coding
    def _coders(self) -> tuple[TableCoder, TableCoder]:
        if not self.has_tables:
            raise InputError("cheng2020-attn has no entropy tables: call update() or load a checkpoint first")
        return (TableCoder(*self.entropy_bottleneck.tables(), what="cheng2020 entropy bottleneck"),
                TableCoder(*self.gaussian_conditional.tables(), what="cheng2020 gaussian conditional"))

    def _context_step(self, y_hat_pad: torch.Tensor, params: torch.Tensor, weight: torch.Tensor, h: int,
                      w: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(scales, means) of y at (h, w) from the decoded neighbourhood and the hyperprior (1-D, N each)."""
        crop = y_hat_pad[:, :, h:h + CONTEXT_KERNEL, w:w + CONTEXT_KERNEL]
        ctx = F.conv2d(crop, weight, bias=self.context_prediction.bias)
        gp = self.entropy_parameters(torch.cat((params[:, :, h:h + 1, w:w + 1], ctx), dim=1))
        scales, means = gp.chunk(2, 1)
        return scales.reshape(-1), means.reshape(-1)

    @torch.no_grad()
    def encode_latents(self, x: torch.Tensor, encoder: Any) -> Latents:
        """Code x (1, 3, H, W), H and W multiples of 64, into ``encoder`` (z first, then y in raster order)."""
        if x.dim() != 4 or x.shape[0] != 1 or x.shape[1] != 3 or x.shape[2] % STRIDE or x.shape[3] % STRIDE:
            raise InputError(f"cheng2020-attn codes one (1, 3, H, W) image with H, W multiples of {STRIDE}, "
                             f"got {tuple(x.shape)}")
        eb_coder, gc_coder = self._coders()
        y = self.g_a(x)
        z = self.h_a(y)
        if not (torch.isfinite(y).all() and torch.isfinite(z).all()):
            raise InputError("cheng2020-attn latents are not finite (broken weights or input)")
        zq = self.entropy_bottleneck.symbols(z)
        channel = torch.arange(self.N).reshape(1, -1, 1, 1).expand_as(zq)
        escapes = eb_coder.encode(encoder, zq.cpu().numpy().reshape(-1), channel.numpy().reshape(-1))
        z_hat = zq.to(z.dtype) + self.entropy_bottleneck.medians().reshape(1, -1, 1, 1)
        hy, wy = z.shape[2] * Y_PER_Z, z.shape[3] * Y_PER_Z
        y_hat_pad = torch.zeros((1, self.N, hy + 2 * _PAD, wy + 2 * _PAD), dtype=y.dtype, device=y.device)
        means = torch.zeros_like(y)
        scales = torch.zeros_like(y)
        with one_thread():
            params = self.h_s(z_hat)
            weight = self.context_prediction.masked_weight()
            for h in range(hy):
                for w in range(wy):
                    s, m = self._context_step(y_hat_pad, params, weight, h, w)
                    q = torch.round(y[0, :, h, w] - m)
                    y_hat_pad[0, :, h + _PAD, w + _PAD] = q + m
                    idx = self.gaussian_conditional.table_indexes(s)
                    escapes += gc_coder.encode(encoder, q.long().cpu().numpy(), idx.cpu().numpy())
                    means[0, :, h, w] = m
                    scales[0, :, h, w] = s
        y_hat = y_hat_pad[:, :, _PAD:_PAD + hy, _PAD:_PAD + wy].clone()
        return Latents(y=y, z=z, z_hat=z_hat, y_hat=y_hat, means=means, scales=scales, escapes=escapes)

    @torch.no_grad()
    def decode_latents(self, decoder: Any, z_height: int, z_width: int) -> torch.Tensor:
        """Read z then y from ``decoder`` (the order :meth:`encode_latents` wrote them); returns y_hat."""
        eb_coder, gc_coder = self._coders()
        dev = self.entropy_bottleneck.quantiles.device
        channel = np.broadcast_to(np.arange(self.N).reshape(-1, 1, 1), (self.N, z_height, z_width)).reshape(-1)
        zq = eb_coder.decode(decoder, channel).reshape(1, self.N, z_height, z_width)
        z_hat = torch.from_numpy(zq).to(dev, torch.float32) + self.entropy_bottleneck.medians().reshape(1, -1, 1, 1)
        hy, wy = z_height * Y_PER_Z, z_width * Y_PER_Z
        y_hat_pad = torch.zeros((1, self.N, hy + 2 * _PAD, wy + 2 * _PAD), dtype=torch.float32, device=dev)
        with one_thread():
            params = self.h_s(z_hat)
            weight = self.context_prediction.masked_weight()
            for h in range(hy):
                for w in range(wy):
                    s, m = self._context_step(y_hat_pad, params, weight, h, w)
                    idx = self.gaussian_conditional.table_indexes(s)
                    q = gc_coder.decode(decoder, idx.cpu().numpy())
                    y_hat_pad[0, :, h + _PAD, w + _PAD] = torch.from_numpy(q).to(dev, torch.float32) + m
        return y_hat_pad[:, :, _PAD:_PAD + hy, _PAD:_PAD + wy].clone()

    @torch.no_grad()
    def synthesis(self, y_hat: torch.Tensor) -> torch.Tensor:
        """g_s(y_hat) clamped to [0, 1] (CompressAI's decompress)."""
        return self.g_s(y_hat).clamp_(0, 1)


# ---------------------------------------------------------------------- state_dict layouts
# CompressAI spells the entropy bottleneck's parameters three ways over its releases:
# ``_biases.0`` (early releases, renamed by zoo/pretrained.py), ``_bias0`` (<= 1.2.6, canonical here),
# ``biases.0`` (>= 1.2.7, nn.ParameterList). Residual shortcuts were once called ``downsample``.
_EB_KEY = re.compile(r"^entropy_bottleneck\.(?:_?)(biases|matrices|factors)\.(\d+)$")
_EB_NAMES = {"biases": "_bias", "matrices": "_matrix", "factors": "_factor"}


def canonical_state_dict(state_dict: Mapping[str, Any]) -> dict[str, Any]:
    """A CompressAI state_dict with keys in the 1.2.4 spelling (``module.`` prefix and old names mapped)."""
    if not isinstance(state_dict, Mapping):
        raise ModelMismatch(f"a cheng2020-attn checkpoint holds a state_dict, not a {type(state_dict).__name__}")
    if "state_dict" in state_dict and isinstance(state_dict["state_dict"], Mapping):  # CompressAI training files
        state_dict = state_dict["state_dict"]
    out: dict[str, Any] = {}
    for key, value in state_dict.items():
        k = str(key)
        if k.startswith("module."):
            k = k[len("module."):]
        k = k.replace(".downsample.", ".skip.")
        m = _EB_KEY.match(k)
        if m:
            k = f"entropy_bottleneck.{_EB_NAMES[m.group(1)]}{m.group(2)}"
        out[k] = value
    return out


def state_dict_sha256(sd: Mapping[str, torch.Tensor]) -> str:
    """sha256 over sorted keys, shapes, dtypes and raw bytes: identifies in-memory weights (e.g. random ones)."""
    h = hashlib.sha256()
    for k in sorted(sd):
        t = sd[k].detach().cpu().contiguous()
        h.update(f"{k}|{tuple(t.shape)}|{t.dtype}|".encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()


def random_state_dict(N: int, seed: int, gain: float = 0.7, synthesis_gain: float = 0.5,
                      scale_bias: float = 3.0) -> dict[str, torch.Tensor]:
    """Seeded random weights in the official layout, for tests and vectors (NOT a trained model).

    Drawn key by key in sorted order from one ``torch.Generator`` (so the
    result does not depend on module construction order): convolution weights
    ~ N(0, gain^2 * 2 / fan_in) (He init scaled by ``gain``; ``synthesis_gain``
    for g_s), biases ~ N(0, 0.01^2) except ``scale_bias`` added to the scale
    half of the last entropy-parameters layer, GDN ``beta`` at
    its init and ``gamma`` at 0.1 I plus U(0, 0.01) couplings (in the
    reparameterised domain), entropy-bottleneck biases U(-0.5, 0.5), its
    other parameters at CompressAI's init plus N(0, 0.1^2) noise, medians
    shifted by U(-0.5, 0.5). The context
    model's weights are stored masked. Entropy tables are left empty. The
    defaults give latents of a few units, scales of a few units and few
    escapes, roughly like a trained model's statistics (measured: 64x64
    noise image, N=128: mean |y| ~1.4), so coding tests exercise the tables
    rather than only the escape path; the decoded image means nothing.
    """
    model = Cheng2020Attention(N)
    g = torch.Generator().manual_seed(int(seed))
    sd = model.state_dict()
    out: dict[str, torch.Tensor] = {}
    for key in sorted(sd):
        ref = sd[key]
        name = key.rsplit(".", 1)[-1]
        if name in DYNAMIC_BUFFERS or not ref.is_floating_point() or key.endswith(
                ("pedestal", ".bound", "target", "scale_table", "scale_bound", ".mask")):
            out[key] = ref.clone()
        elif key.endswith(".gdn.gamma") or key.endswith(".igdn.gamma"):
            eff = 0.1 * torch.eye(ref.shape[0]) + 0.01 * torch.rand(ref.shape, generator=g)
            out[key] = torch.sqrt(eff + PEDESTAL)
        elif key.endswith(".gdn.beta") or key.endswith(".igdn.beta"):
            out[key] = ref.clone()
        elif key == "entropy_bottleneck.quantiles":
            shift = torch.rand((ref.shape[0], 1, 1), generator=g) - 0.5
            out[key] = ref.clone() + shift
        elif key.startswith("entropy_bottleneck._bias"):  # CompressAI's init: U(-0.5, 0.5)
            out[key] = torch.rand(ref.shape, generator=g) - 0.5
        elif key.startswith("entropy_bottleneck."):  # constant / zero inits, perturbed
            out[key] = ref.clone() + 0.1 * torch.randn(ref.shape, generator=g)
        elif name == "weight":
            fan_in = int(np.prod(ref.shape[1:]))
            k = synthesis_gain if key.startswith("g_s.") else gain
            out[key] = torch.randn(ref.shape, generator=g) * (k * (2.0 / fan_in) ** 0.5)
        else:  # biases
            out[key] = 0.01 * torch.randn(ref.shape, generator=g)
    last = out["entropy_parameters.4.bias"]
    last[:N] += scale_bias  # chunk(2, 1): scales first, means second
    mask = out["context_prediction.mask"]
    out["context_prediction.weight"] = out["context_prediction.weight"] * mask
    return out
