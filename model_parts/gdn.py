"""Generalized Divisive Normalization (Ballé, Laparra, Simoncelli, ICLR 2016, arXiv 1511.06281).

    y_i = x_i / sqrt(beta_i + sum_j gamma_ij x_j^2)      (inverse: y_i = x_i * sqrt(...))

GDN is the nonlinearity of the compact-feature analysis nets of CFTE, MTTF
and IMT. Both official codes store *reparameterised* values, not beta and
gamma themselves (Ballé's trick for keeping them positive during training):
the effective values are ``max(p, bound)^2 - pedestal`` with pedestal =
(2^-18)^2 and bound = sqrt(beta_min + pedestal) for beta, 2^-18 for gamma.
A checkpoint therefore only loads correctly into a layer that applies the
same reparameterisation, and the two official layouts differ in their keys:

* :class:`GDN` — CFTE (Berlin0610/CFTE_DCC2022 ``modules/GDN.py``, the same in
  GFVC_Software): parameters ``beta`` (C) and ``gamma`` (C, C) only; the
  pedestal and bounds are Python constants. Output ``x / sqrt(norm)``.
* :class:`CompressAIGDN` — MTTF (``from compressai.layers import GDN``,
  InterDigitalInc/CompressAI ``compressai/layers/gdn.py`` with
  ``ops/parametrizers.py``): the same parameters plus four buffers,
  ``beta_reparam.pedestal``, ``beta_reparam.lower_bound.bound``,
  ``gamma_reparam.pedestal``, ``gamma_reparam.lower_bound.bound`` (shape (1,)
  each). Output ``x * rsqrt(norm)`` — a different float rounding from CFTE's.

The suite implements both itself rather than depending on compressai: the
layer is a few lines, compressai is a compiled package with its own torch
pin that nothing else here needs, and CFTE's layer is not compressai's
anyway (other keys, sqrt-then-divide). Each class reproduces its official
forward op for op (bit-exact on CPU), including the official gradient of the
lower bound (pass the gradient through where ``p >= bound`` or where it
points away from the bound), so training from an official checkpoint behaves
as in the official code.

Note on the index convention: the official docstrings write gamma[j, i], but
both codes use ``gamma`` as a conv2d weight of shape (out C, in C), i.e.
``norm_i = beta_i + sum_j gamma[i, j] x_j^2``; so does this module.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

REPARAM_OFFSET = 2.0 ** -18
PEDESTAL = REPARAM_OFFSET ** 2


class _LowerBound(torch.autograd.Function):
    """max(x, bound) whose gradient passes where x >= bound or where descent moves x up (Ballé 2016)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, bound: torch.Tensor) -> torch.Tensor:
        b = bound if isinstance(bound, torch.Tensor) else torch.tensor(bound, dtype=x.dtype, device=x.device)
        b = b.to(dtype=x.dtype, device=x.device)
        ctx.save_for_backward(x, b)
        return torch.max(x, b)

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        x, b = ctx.saved_tensors
        passes = (x >= b) | (grad_output < 0)
        return passes.to(grad_output.dtype) * grad_output, None


def lower_bound(x: torch.Tensor, bound: float | torch.Tensor) -> torch.Tensor:
    """Differentiable ``max(x, bound)`` with the straight-through gradient of the official codes."""
    if not isinstance(bound, torch.Tensor):
        bound = torch.full_like(x, float(bound))
    return _LowerBound.apply(x, bound)


class GDN(nn.Module):
    """CFTE's GDN (state_dict: ``beta`` (C), ``gamma`` (C, C), both reparameterised).

    Effective ``beta = max(beta_p, sqrt(beta_min + pedestal))^2 - pedestal`` and
    ``gamma = max(gamma_p, 2^-18)^2 - pedestal``; initialised as the official
    layer (beta 1, gamma 0.1 I). 5-D inputs (B, C, D, H, W) are normalised over
    C as the official layer does (folded to 4-D).
    """

    def __init__(self, ch: int, inverse: bool = False, beta_min: float = 1e-6, gamma_init: float = 0.1,
                 reparam_offset: float = REPARAM_OFFSET) -> None:
        super().__init__()
        self.inverse = bool(inverse)
        self.beta_min = float(beta_min)
        self.gamma_init = float(gamma_init)
        self.reparam_offset = float(reparam_offset)
        self.pedestal = self.reparam_offset ** 2
        self.beta_bound = (self.beta_min + self.pedestal) ** 0.5
        self.gamma_bound = self.reparam_offset
        self.beta = nn.Parameter(torch.sqrt(torch.ones(ch) + self.pedestal))
        self.gamma = nn.Parameter(torch.sqrt(self.gamma_init * torch.eye(ch) + self.pedestal))

    def effective(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(beta (C,), gamma (C, C)) as used in the normalisation."""
        beta = lower_bound(self.beta, self.beta_bound) ** 2 - self.pedestal
        gamma = lower_bound(self.gamma, self.gamma_bound) ** 2 - self.pedestal
        return beta, gamma

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape5 = x.shape if x.dim() == 5 else None
        if shape5 is not None:
            b, c, d, h, w = shape5
            x = x.view(b, c, d * h, w)
        ch = x.shape[1]
        beta, gamma = self.effective()
        norm = torch.sqrt(F.conv2d(x ** 2, gamma.view(ch, ch, 1, 1), beta))
        out = x * norm if self.inverse else x / norm
        return out.view(shape5) if shape5 is not None else out

    def extra_repr(self) -> str:
        return f"{self.beta.shape[0]}, inverse={self.inverse}, layout=cfte"


class _NonNegative(nn.Module):
    """compressai's NonNegativeParametrizer layout: buffers ``pedestal`` (1,) and ``lower_bound.bound`` (1,)."""

    pedestal: torch.Tensor

    def __init__(self, minimum: float = 0.0, reparam_offset: float = REPARAM_OFFSET) -> None:
        super().__init__()
        pedestal = float(reparam_offset) ** 2
        self.register_buffer("pedestal", torch.tensor([pedestal]))
        self.lower_bound = BoundBuffer((float(minimum) + pedestal) ** 0.5)

    def init(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sqrt(torch.max(x + self.pedestal, self.pedestal))

    def forward(self, p: torch.Tensor) -> torch.Tensor:
        return self.lower_bound(p) ** 2 - self.pedestal


class BoundBuffer(nn.Module):
    """compressai's LowerBound module: one buffer ``bound`` (1,)."""

    bound: torch.Tensor

    def __init__(self, bound: float) -> None:
        super().__init__()
        self.register_buffer("bound", torch.tensor([float(bound)]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _LowerBound.apply(x, self.bound)


class CompressAIGDN(nn.Module):
    """compressai's GDN layout (MTTF): ``beta``, ``gamma`` and the reparametriser buffers.

    Same normalisation as :class:`GDN`, computed as ``x * rsqrt(norm)`` (the
    compressai order of operations); the pedestal and bounds are read from
    the buffers, so a checkpoint's stored values are used.
    """

    def __init__(self, in_channels: int, inverse: bool = False, beta_min: float = 1e-6,
                 gamma_init: float = 0.1) -> None:
        super().__init__()
        self.inverse = bool(inverse)
        self.beta_reparam = _NonNegative(minimum=float(beta_min))
        self.gamma_reparam = _NonNegative()
        self.beta = nn.Parameter(self.beta_reparam.init(torch.ones(in_channels)))
        self.gamma = nn.Parameter(self.gamma_reparam.init(float(gamma_init) * torch.eye(in_channels)))

    def effective(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.beta_reparam(self.beta), self.gamma_reparam(self.gamma)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ch = x.shape[1]
        beta, gamma = self.effective()
        norm = F.conv2d(x ** 2, gamma.reshape(ch, ch, 1, 1), beta)
        return x * (torch.sqrt(norm) if self.inverse else torch.rsqrt(norm))

    def extra_repr(self) -> str:
        return f"{self.beta.shape[0]}, inverse={self.inverse}, layout=compressai"
