"""GDN (Ballé et al. 2016) in the two official layouts: CFTE's and compressai's (MTTF)."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from model_parts.gdn import GDN, PEDESTAL, REPARAM_OFFSET, CompressAIGDN, lower_bound


def _reference(x: torch.Tensor, beta_p: torch.Tensor, gamma_p: torch.Tensor, inverse: bool = False) -> torch.Tensor:
    """Textbook GDN from the stored (reparameterised) values, in float64."""
    beta = torch.clamp(beta_p.double(), min=(1e-6 + PEDESTAL) ** 0.5) ** 2 - PEDESTAL
    gamma = torch.clamp(gamma_p.double(), min=REPARAM_OFFSET) ** 2 - PEDESTAL
    x = x.double()
    norm = beta.view(1, -1, 1, 1) + torch.einsum("ij,bjhw->bihw", gamma, x ** 2)
    return x * norm.sqrt() if inverse else x / norm.sqrt()


def _randomise(layer: torch.nn.Module, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        layer.beta.copy_(0.5 + torch.rand(layer.beta.shape, generator=g))
        layer.gamma.copy_(torch.rand(layer.gamma.shape, generator=g) * 0.6)
        layer.gamma[0, 1] = 1e-7  # below the bound: clamped to 2^-18 before squaring


def test_state_dict_layouts():
    assert {k: tuple(v.shape) for k, v in GDN(3).state_dict().items()} == {"beta": (3,), "gamma": (3, 3)}
    assert {k: tuple(v.shape) for k, v in CompressAIGDN(3).state_dict().items()} == {
        "beta": (3,), "gamma": (3, 3), "beta_reparam.pedestal": (1,), "beta_reparam.lower_bound.bound": (1,),
        "gamma_reparam.pedestal": (1,), "gamma_reparam.lower_bound.bound": (1,)}
    sd = CompressAIGDN(2).state_dict()
    assert float(sd["beta_reparam.pedestal"]) == PEDESTAL
    assert float(sd["beta_reparam.lower_bound.bound"]) == pytest.approx((1e-6 + PEDESTAL) ** 0.5)
    assert float(sd["gamma_reparam.lower_bound.bound"]) == pytest.approx(REPARAM_OFFSET)


@pytest.mark.parametrize("cls", [GDN, CompressAIGDN])
def test_official_initialisation_is_beta_one_gamma_tenth(cls):
    beta, gamma = cls(4).effective()
    assert torch.allclose(beta, torch.ones(4), atol=1e-6)
    assert torch.allclose(gamma, 0.1 * torch.eye(4), atol=1e-6)


@pytest.mark.parametrize("cls", [GDN, CompressAIGDN])
@pytest.mark.parametrize("inverse", [False, True])
def test_forward_is_the_gdn_formula(cls, inverse):
    layer = cls(4, inverse=inverse)
    _randomise(layer)
    x = torch.randn(2, 4, 5, 6) * 2
    ref = _reference(x, layer.beta.detach(), layer.gamma.detach(), inverse)
    assert torch.allclose(layer(x).double(), ref, atol=1e-5, rtol=1e-5)


def test_layouts_agree_and_cfte_divides_while_compressai_multiplies_by_rsqrt():
    a, b = GDN(3), CompressAIGDN(3)
    _randomise(a)
    b.load_state_dict({**b.state_dict(), "beta": a.beta.detach(), "gamma": a.gamma.detach()})
    x = torch.randn(1, 3, 8, 8)
    beta, gamma = a.effective()
    norm = F.conv2d(x ** 2, gamma.view(3, 3, 1, 1), beta)
    assert torch.equal(a(x), x / torch.sqrt(norm))          # CFTE modules/GDN.py order of operations
    assert torch.equal(b(x), x * torch.rsqrt(norm))          # compressai layers/gdn.py order of operations
    assert torch.allclose(a(x), b(x), atol=1e-6)


def test_five_dimensional_input_normalises_over_channels():
    layer = GDN(2)
    _randomise(layer, 3)
    x = torch.randn(1, 2, 3, 4, 5)
    folded = layer(x.reshape(1, 2, 12, 5)).reshape(x.shape)
    assert torch.equal(layer(x), folded)


def test_lower_bound_gradient_passes_only_towards_the_bound_or_above():
    x = torch.tensor([0.5, 2.0, 0.5, 2.0], requires_grad=True)
    y = lower_bound(x, 1.0)
    assert y.tolist() == [1.0, 2.0, 1.0, 2.0]
    y.backward(torch.tensor([1.0, 1.0, -1.0, -1.0]))
    # below the bound a positive gradient (descent would push x further down) is blocked
    assert x.grad.tolist() == [0.0, 1.0, -1.0, -1.0]


def test_meta_device_build():
    with torch.device("meta"):
        for layer in (GDN(20), CompressAIGDN(20)):
            assert layer.gamma.shape == (20, 20) and layer.beta.device.type == "meta"
