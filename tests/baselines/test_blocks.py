"""Shared FOMM-lineage blocks (baselines/blocks.py), training losses (baselines/losses.py), listings."""
from __future__ import annotations

import pytest
import torch

from baselines import blocks as B
from baselines import losses as L
from baselines.listings import compare_to_listing, read_listing


def test_coordinate_grid_corners():
    g = B.make_coordinate_grid((3, 5))
    assert g.shape == (3, 5, 2)
    assert g[0, 0].tolist() == [-1, -1] and g[-1, -1].tolist() == [1, 1] and g[0, -1].tolist() == [1, -1]


def test_gaussian_heatmaps_isotropic_and_covariance():
    mean = torch.tensor([[[0.25, -0.5]]])
    h = B.kp2gaussian(mean, (9, 9), 0.01)
    assert h.shape == (1, 1, 9, 9)
    assert torch.isclose(h.max(), torch.tensor(1.0), atol=1e-6) and h[0, 0, 2, 5] == h.max()  # x=.25, y=-.5
    cov = torch.eye(2).mul(0.01).expand(1, 1, 2, 2)
    assert torch.allclose(B.kp2gaussian(mean, (9, 9), cov), h, atol=1e-6)
    wide = B.kp2gaussian(mean, (9, 9), torch.tensor([[[[0.2, 0.0], [0.0, 0.01]]]]))
    assert wide[0, 0, 2].sum() > h[0, 0, 2].sum()  # wider along x


def test_heatmap_mean_of_softmax():
    logits = torch.full((1, 1, 5, 5), -1e4)
    logits[0, 0, 4, 0] = 0
    assert B.heatmap_mean(B.softmax_heatmap(logits, 0.1)).tolist() == [[[-1.0, 1.0]]]


def test_anti_alias_kernel_and_subsampling():
    aa = B.AntiAliasInterpolation2d(3, 0.25)
    assert aa.weight.shape == (3, 1, 13, 13) and torch.isclose(aa.weight[0].sum(), torch.tensor(1.0))
    assert "weight" in dict(aa.named_buffers())
    x = torch.rand(2, 3, 32, 32)
    y = aa(x)
    assert y.shape == (2, 3, 8, 8)
    assert torch.equal(y, B.AntiAliasInterpolation2d(3, 0.25, subsample="nearest")(x))
    const = torch.ones(1, 3, 32, 32)
    assert torch.allclose(aa(const)[..., 2:-2, 2:-2], torch.ones(1, 3, 4, 4))
    assert B.AntiAliasInterpolation2d(3, 1)(x) is x


@pytest.mark.parametrize("norm,keys", [("batch", 5), ("instance", 2)])
def test_hourglass_names_widths_and_norms(norm, keys):
    hg = B.Hourglass(8, 3, num_blocks=3, max_features=32, norm=norm)
    sd = hg.state_dict()
    assert sd["encoder.down_blocks.0.conv.weight"].shape == (16, 3, 3, 3)
    assert sd["encoder.down_blocks.2.conv.weight"].shape == (32, 32, 3, 3)  # capped by max_features
    assert sd["decoder.up_blocks.0.conv.weight"].shape == (32, 32, 3, 3)
    assert sd["decoder.up_blocks.2.conv.weight"].shape == (8, 32, 3, 3)
    assert len([k for k in sd if k.startswith("decoder.up_blocks.0.norm.")]) == keys
    assert hg.out_filters == 11 and hg.out_channels == [32, 64, 32, 11]
    x = torch.rand(1, 3, 16, 16)
    out = hg(x)
    levels = hg(x, all_levels=True)
    assert out.shape == (1, 11, 16, 16) and torch.equal(levels[-1], out)
    assert [t.shape[1] for t in levels] == hg.out_channels[1:]


def test_resblock_and_blocks_shapes():
    assert B.ResBlock2d(8)(torch.rand(1, 8, 6, 6)).shape == (1, 8, 6, 6)
    assert B.DownBlock2d(3, 8)(torch.rand(1, 3, 6, 6)).shape == (1, 8, 3, 3)
    assert B.UpBlock2d(8, 4, norm="instance")(torch.rand(1, 8, 3, 3)).shape == (1, 4, 6, 6)
    assert B.SameBlock2d(3, 4, kernel_size=7, padding=3)(torch.rand(1, 3, 5, 5)).shape == (1, 4, 5, 5)
    with pytest.raises(ValueError):
        B.make_norm("group", 4)


def test_deform_input_identity_flow():
    x = torch.rand(1, 3, 8, 8)
    flow = B.make_coordinate_grid((4, 4)).unsqueeze(0)
    for ac in (False, True):
        y = B.deform_input(x, flow, align_corners=ac)
        assert y.shape == x.shape
    assert torch.allclose(B.deform_input(x, B.make_coordinate_grid((8, 8))[None], align_corners=True), x, atol=1e-5)


def test_official_discriminator_keys():
    with torch.device("meta"):
        d = B.MultiScaleDiscriminator(scales=[1], block_expansion=32, max_features=512, num_blocks=4, sn=True)
    assert compare_to_listing(d, read_listing("fomm_vox256")["discriminator"]) == []
    small = B.MultiScaleDiscriminator(scales=[1], block_expansion=4, max_features=16, num_blocks=4, sn=True)
    pyr = B.ImagePyramid([1, 0.5], 3)(torch.rand(2, 3, 64, 64))
    assert set(pyr) == {"prediction_1", "prediction_0.5"} and pyr["prediction_0.5"].shape[-1] == 32
    out = small(pyr)
    assert len(out["feature_maps_1"]) == 4 and out["prediction_map_1"].shape[1] == 1


def test_listings_parse_full_sections():
    ref = read_listing("fomm_vox256")
    assert {k: len(v) for k, v in ref.items()} == {"kp_detector": 75, "generator": 196, "discriminator": 26}
    assert ref["kp_detector"]["down.weight"] == (3, 1, 13, 13)


@pytest.mark.parametrize("variant", ["fomm", "tpsm"])
def test_random_tps_identity_and_jacobian(variant):
    t = L.RandomTPS(2, sigma_affine=0.0, sigma_tps=0.0, variant=variant)
    pts = torch.rand(2, 7, 2) * 2 - 1
    assert torch.allclose(t.warp_coordinates(pts), pts, atol=1e-6)
    assert torch.allclose(t.jacobian(pts), torch.eye(2).expand(2, 7, 2, 2), atol=1e-5)
    frame = torch.rand(2, 3, 16, 16)
    if variant == "tpsm":
        assert torch.allclose(t.transform_frame(frame), frame, atol=1e-5)
    kp = torch.rand(2, 10, 2)
    assert L.equivariance_value(kp, t, kp) < 1e-6


def test_random_tps_affine_jacobian_and_equivariance():
    torch.manual_seed(0)
    t = L.RandomTPS(1, sigma_affine=0.05, sigma_tps=0.0)
    pts = torch.rand(1, 4, 2)
    jac = t.jacobian(pts)
    assert torch.allclose(jac, t.theta[:, None, :, :2].expand(1, 4, 2, 2), atol=1e-5)
    jd = torch.eye(2).expand(1, 4, 2, 2)
    # a driving jacobian equal to dT * J_t gives zero jacobian-equivariance loss
    jt = torch.inverse(jac).detach()
    assert L.equivariance_jacobian(jd, t, pts, jt) < 1e-5


def test_pyramid_perceptual_zero_on_equal_and_records_name():
    p = L.PyramidPerceptual()
    x = torch.rand(1, 3, 32, 32)
    assert float(p(x, x)) == 0.0 and float(p(x, x.flip(-1))) > 0
    info = p.info()
    assert info["scales"] == [1, 0.5, 0.25, 0.125] and info["name"] in ("vgg19-pyramid", "pixel-pyramid-l1")
    assert info["fallback"] == (info["name"] == "pixel-pyramid-l1")


def test_milestone_fractions():
    assert L.milestones([60, 90], 100) == (0.6, 0.9) and L.milestones([70, 90], 100) == (0.7, 0.9)
