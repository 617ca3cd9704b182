"""The two entropy models of hyperprior image codecs, in CompressAI's state_dict layout.

* :class:`EntropyBottleneck` — the factorized ("fully factorized") density of
  the hyper-latent z: one small monotone network per channel models the CDF
  (Ballé, Minnen, Singh, Hwang, Johnston, "Variational image compression with a
  scale hyperprior", ICLR 2018, appendix 6.1). z is quantised around the
  learned per-channel median.
* :class:`GaussianConditional` — a Gaussian of predicted mean and scale
  convolved with a unit box for each element of y (the same paper, and Minnen,
  Ballé, Toderici, "Joint autoregressive and hierarchical priors for learned
  image compression", NeurIPS 2018). For coding, scales are mapped to the
  nearest-above entry of a table of 64 log-spaced scales (0.11 .. 256) whose
  quantized CDFs are precomputed.

Both reproduce CompressAI 1.2.4 (the version the GFVC AhG software pins;
InterDigitalInc/CompressAI ``compressai/entropy_models/entropy_models.py``)
operation for operation in evaluation mode: likelihoods, the ``update()``
tabulation, the table lookup. Parameter and buffer names equal CompressAI's,
so its checkpoints load strictly. Training-mode noise is not implemented (the
suite codes, it does not train these models).
"""
from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from model_parts.gdn import BoundBuffer
from model_parts.learned_image.tables import pmfs_to_cdf_table

TAIL_MASS = 1e-9
LIKELIHOOD_BOUND = 1e-9
SCALE_BOUND = 0.11
# CompressAI's default scale table (models/base.py get_scale_table, from Ballé's TF examples)
SCALES_MIN, SCALES_MAX, SCALES_LEVELS = 0.11, 256.0, 64
DYNAMIC_BUFFERS = ("_offset", "_quantized_cdf", "_cdf_length")


def tail_multiplier() -> float:
    """-Phi^-1(tail_mass / 2) = 6.1094...: a table spans this many scales on each side of the mean.

    CompressAI computes it with ``scipy.stats.norm.ppf``; the standard
    library's inverse normal CDF gives the same double (tested) without
    scipy.stats' two-second import.
    """
    return -NormalDist().inv_cdf(TAIL_MASS / 2)


def default_scale_table() -> torch.Tensor:
    """64 scales from 0.11 to 256, equally spaced in log (float32, as CompressAI computes them)."""
    return torch.exp(torch.linspace(math.log(SCALES_MIN), math.log(SCALES_MAX), SCALES_LEVELS))


class _TabulatedModel(nn.Module):
    """Buffers shared by both models: the tables filled by ``update()`` (empty until then)."""

    _offset: torch.Tensor
    _quantized_cdf: torch.Tensor
    _cdf_length: torch.Tensor

    def __init__(self) -> None:
        super().__init__()
        self.likelihood_lower_bound = BoundBuffer(LIKELIHOOD_BOUND)
        for name in DYNAMIC_BUFFERS:
            self.register_buffer(name, torch.zeros(0, dtype=torch.int32))

    @property
    def has_tables(self) -> bool:
        return all(getattr(self, n).numel() > 0 for n in DYNAMIC_BUFFERS)

    def set_tables(self, cdf: np.ndarray | torch.Tensor, lengths: np.ndarray | torch.Tensor,
                   offsets: np.ndarray | torch.Tensor) -> None:
        """Install tables (from a checkpoint or ``update()``): buffers take the given sizes."""
        dev = self._offset.device
        self._quantized_cdf = torch.as_tensor(np.asarray(cdf), dtype=torch.int32).to(dev)
        self._cdf_length = torch.as_tensor(np.asarray(lengths), dtype=torch.int32).reshape(-1).to(dev)
        self._offset = torch.as_tensor(np.asarray(offsets), dtype=torch.int32).reshape(-1).to(dev)

    def tables(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(quantized cdf, cdf lengths, offsets) as numpy arrays for the range coder."""
        return (self._quantized_cdf.cpu().numpy(), self._cdf_length.cpu().numpy(), self._offset.cpu().numpy())


class EntropyBottleneck(_TabulatedModel):
    """Factorized density of z (CompressAI ``EntropyBottleneck``, filters (3, 3, 3, 3), init scale 10)."""

    target: torch.Tensor

    def __init__(self, channels: int, filters: tuple[int, ...] = (3, 3, 3, 3), init_scale: float = 10.0) -> None:
        super().__init__()
        self.channels = int(channels)
        self.filters = tuple(int(f) for f in filters)
        dims = (1, *self.filters, 1)
        scale = init_scale ** (1 / (len(self.filters) + 1))
        for i in range(len(self.filters) + 1):
            init = float(np.log(np.expm1(1 / scale / dims[i + 1])))
            self.register_parameter(f"_matrix{i}", nn.Parameter(torch.full((channels, dims[i + 1], dims[i]), init)))
            self.register_parameter(f"_bias{i}", nn.Parameter(torch.rand(channels, dims[i + 1], 1) - 0.5))
            if i < len(self.filters):
                self.register_parameter(f"_factor{i}", nn.Parameter(torch.zeros(channels, dims[i + 1], 1)))
        self.quantiles = nn.Parameter(torch.tensor([-init_scale, 0.0, init_scale]).repeat(channels, 1, 1))
        t = float(np.log(2 / TAIL_MASS - 1))
        self.register_buffer("target", torch.tensor([-t, 0.0, t]))

    def medians(self) -> torch.Tensor:
        """Per-channel quantisation centres, shape (C, 1, 1)."""
        return self.quantiles[:, :, 1:2]

    def _logits_cumulative(self, x: torch.Tensor) -> torch.Tensor:
        """The monotone per-channel network: logit of the CDF at ``x`` (C, 1, n) -> (C, 1, n)."""
        for i in range(len(self.filters) + 1):
            x = torch.matmul(F.softplus(getattr(self, f"_matrix{i}")), x)
            x = x + getattr(self, f"_bias{i}")
            if i < len(self.filters):
                x = x + torch.tanh(getattr(self, f"_factor{i}")) * torch.tanh(x)
        return x

    def _interval_mass(self, centres: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """P(c - 1/2 < z < c + 1/2) per element, computed on the side of the median where sigmoids do not saturate."""
        lower = self._logits_cumulative(centres - 0.5)
        upper = self._logits_cumulative(centres + 0.5)
        sign = -torch.sign(lower + upper)
        return torch.abs(torch.sigmoid(sign * upper) - torch.sigmoid(sign * lower)), lower, upper

    def quantize(self, z: torch.Tensor) -> torch.Tensor:
        """round(z - median) + median, per channel of a (B, C, H, W) tensor."""
        med = self.medians().reshape(1, -1, 1, 1)
        return torch.round(z - med) + med

    def symbols(self, z: torch.Tensor) -> torch.Tensor:
        """Integer symbols round(z - median) (B, C, H, W) int64."""
        med = self.medians().reshape(1, -1, 1, 1)
        return torch.round(z - med).long()

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(z_hat, likelihoods) in evaluation mode, arranged as CompressAI does (channels first, flattened)."""
        b, c = z.shape[:2]
        values = z.transpose(0, 1).contiguous().reshape(c, 1, -1)
        med = self.medians()
        out = torch.round(values - med) + med
        lik, _, _ = self._interval_mass(out)
        lik = torch.max(lik, self.likelihood_lower_bound.bound)
        shape = (c, b, *z.shape[2:])
        return (out.reshape(shape).transpose(0, 1).contiguous(), lik.reshape(shape).transpose(0, 1).contiguous())

    @torch.no_grad()
    def update(self) -> None:
        """Tabulate each channel's pmf between its tail quantiles (CompressAI ``EntropyBottleneck.update``)."""
        med = self.quantiles[:, 0, 1]
        minima = torch.clamp(torch.ceil(med - self.quantiles[:, 0, 0]).int(), min=0)
        maxima = torch.clamp(torch.ceil(self.quantiles[:, 0, 2] - med).int(), min=0)
        start = med - minima
        length = maxima + minima + 1
        samples = torch.arange(int(length.max().item()), device=med.device)[None, :] + start[:, None, None]
        pmf, lower, upper = self._interval_mass(samples)
        pmf = pmf[:, 0, :]
        tail = torch.sigmoid(lower[:, 0, :1]) + torch.sigmoid(-upper[:, 0, -1:])
        lengths = length.cpu().numpy()
        pmf_np, tail_np = pmf.cpu().numpy(), tail.cpu().numpy().reshape(-1)
        cdf, cdf_len = pmfs_to_cdf_table([pmf_np[c, :lengths[c]] for c in range(self.channels)], tail_np)
        self.set_tables(cdf, cdf_len, (-minima).cpu().numpy())


class GaussianConditional(_TabulatedModel):
    """Gaussian of predicted mean/scale per element of y (CompressAI ``GaussianConditional``, tail mass 1e-9)."""

    scale_table: torch.Tensor
    scale_bound: torch.Tensor

    def __init__(self) -> None:
        super().__init__()
        self.lower_bound_scale = BoundBuffer(SCALE_BOUND)
        self.register_buffer("scale_table", torch.zeros(0))
        self.register_buffer("scale_bound", torch.tensor([SCALE_BOUND]))

    @staticmethod
    def _std_cumulative(x: torch.Tensor) -> torch.Tensor:
        """Standard normal CDF through erfc (precise in the lower tail)."""
        return 0.5 * torch.erfc(float(-(2 ** -0.5)) * x)

    def likelihood(self, y_hat: torch.Tensor, scales: torch.Tensor, means: torch.Tensor) -> torch.Tensor:
        """P(y_hat - 1/2 < Y < y_hat + 1/2) for Y ~ N(means, max(scales, 0.11)^2), bounded below by 1e-9."""
        values = torch.abs(y_hat - means)
        s = torch.max(scales, self.lower_bound_scale.bound)
        lik = self._std_cumulative((0.5 - values) / s) - self._std_cumulative((-0.5 - values) / s)
        return torch.max(lik, self.likelihood_lower_bound.bound)

    def table_indexes(self, scales: torch.Tensor) -> torch.Tensor:
        """Index of the table scale used for each element: the number of table entries (but the last) below it."""
        s = torch.max(scales, self.lower_bound_scale.bound).contiguous()
        return torch.searchsorted(self.scale_table[:-1].contiguous(), s, right=False)

    @torch.no_grad()
    def update(self, scale_table: torch.Tensor | None = None) -> None:
        """Tabulate the pmf of each table scale (CompressAI ``GaussianConditional.update``)."""
        table = default_scale_table() if scale_table is None else scale_table  # CompressAI: default unless given
        self.scale_table = table.to(self.scale_bound.device, torch.float32)
        multiplier = tail_multiplier()
        centre = torch.ceil(self.scale_table * multiplier).int()
        length = 2 * centre + 1
        samples = torch.abs(torch.arange(int(length.max().item()), device=centre.device).int() - centre[:, None])
        samples = samples.float()
        scale = self.scale_table.unsqueeze(1).float()
        upper = self._std_cumulative((0.5 - samples) / scale)
        lower = self._std_cumulative((-0.5 - samples) / scale)
        pmf = (upper - lower).cpu().numpy()
        tail = (2 * lower[:, :1]).cpu().numpy().reshape(-1)
        lengths = length.cpu().numpy()
        cdf, cdf_len = pmfs_to_cdf_table([pmf[t, :lengths[t]] for t in range(len(lengths))], tail)
        self.set_tables(cdf, cdf_len, (-centre).cpu().numpy())
