"""MTTF: official names/shapes (read from the public code), branches, codec (40 values), bad files, recipe."""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import kp_family as K
import numpy as np
import pytest
import torch

from baselines import mttf
from baselines.base import BaselineConfig
from gfvc.codec import get_codec
from gfvc.errors import ModelMismatch

TINY: dict[str, Any] = {
    "num_feature": 20, "num_regions": 40, "num_background": 5, "feature_size": 32, "num_channels": 3,
    "region_predictor_params": {"block_expansion": 4, "max_features": 16, "num_blocks": 3, "pad": 3},
    "generator_params": {"block_expansion": 4, "max_features": 16, "num_bottleneck_blocks": 1, "multiRes_mode": 2,
                         "pixelwise_flow_predictor_params": {"block_expansion": 4, "max_features": 16,
                                                             "num_blocks": 3, "use_deformed_source": True,
                                                             "estimate_occlusion_map": True}},
}


def tiny(size: int = 128, frame_shape: int = 256, options: dict | None = None) -> BaselineConfig:
    """Frames of 256 -> 3 down blocks; coded at 128 = branch 1 (as the official 384 of 768)."""
    return BaselineConfig(model="mttf", image_size=size, modules=mttf.modules_from_config(TINY, frame_shape),
                          options=dict(options or {}), name="tiny")


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    return K.write_suite_checkpoint(tmp_path_factory.mktemp("mttf") / "tiny.pt", "mttf", tiny())


# Keys and shapes of the official ted384 configuration, read off the public code (f09525a)
# (the full listing, made by building the official modules, is reference_state_dicts/mttf_ted384.txt):
# region_predictor.py, generator.py, pixelwise_flow_predictor.py, util.py; compressai's GDN buffers.
OFFICIAL_KEYS = {
    "region_predictor": {
        "predictor.encoder.down_blocks.0.conv.weight": (64, 3, 3, 3),
        "predictor.decoder.up_blocks.4.conv.weight": (32, 128, 3, 3),
        "regions.weight": (20, 35, 7, 7),
        "coefficients.0.weight": (20, 35, 5, 5), "coefficients.1.beta": (20,), "coefficients.1.gamma": (20, 20),
        "coefficients.1.beta_reparam.pedestal": (1,), "coefficients.1.gamma_reparam.lower_bound.bound": (1,),
        "coefficients.8.weight": (20, 20, 5, 5), "coefficients.9.beta": (20,), "coefficients.10.weight": (20, 20, 5, 5),
        "bias.0.weight": (20, 35, 5, 5), "bias.10.bias": (20,),
    },
    "generator": {
        "pixelwise_flow_predictor.hourglass_flow.encoder.down_blocks.0.conv.weight": (128, 40, 3, 3),
        "pixelwise_flow_predictor.flow.weight": (80, 104, 7, 7),
        "pixelwise_flow_predictor.hourglass.encoder.down_blocks.0.conv.weight": (128, 160, 3, 3),
        "pixelwise_flow_predictor.hourglass.encoder.down_blocks.4.conv.weight": (1024, 1024, 3, 3),
        "pixelwise_flow_predictor.bg_hourglass.encoder.down_blocks.0.conv.weight": (128, 6, 3, 3),
        "pixelwise_flow_predictor.mask.weight": (40, 224, 7, 7),
        "pixelwise_flow_predictor.occlusion.weight": (1, 224, 7, 7),
        "first_blocks.2.conv.weight": (64, 3, 7, 7),
        "down_blocks1.0.conv.weight": (128, 64, 3, 3), "down_blocks1.2.conv.weight": (128, 64, 3, 3),
        "down_blocks2.1.conv.weight": (256, 128, 3, 3), "down_blocks3.0.conv.weight": (512, 256, 3, 3),
        "bottleneck.r5.conv2.weight": (512, 512, 3, 3),
        "up_blocks1.0.conv.weight": (256, 512, 3, 3), "up_blocks2.1.conv.weight": (128, 256, 3, 3),
        "up_blocks3.2.conv.weight": (64, 128, 3, 3), "final_blocks.2.weight": (4, 64, 7, 7),
        "bg_first.weight": (64, 70, 7, 7), "bg_blocks1.1.conv2.weight": (64, 64, 3, 3),
        "bg_blocks3.5.norm1.running_var": (64,), "bg_final.weight": (3, 64, 7, 7),
    },
}
# module lists per stage (official loops): downs max(3 - s, 1), ups min(s + 1, 3), bg 2 x min(s + 1, 3)
OFFICIAL_LIST_LENGTHS = {"first_blocks": 3, "down_blocks1": 3, "down_blocks2": 2, "down_blocks3": 1,
                         "up_blocks1": 1, "up_blocks2": 2, "up_blocks3": 3, "final_blocks": 3,
                         "bg_blocks1": 2, "bg_blocks2": 4, "bg_blocks3": 6}


def test_official_networks_match_the_listing_made_from_the_official_code():
    assert K.official_modules_match_listing("mttf", "mttf_ted384") == ["region_predictor", "generator"]


def test_conformance_vector_from_the_official_code():
    K.conformance_passes("mttf")


def test_official_configuration_names_and_shapes():
    c = get_codec("mttf")
    cfg = c.official_config()
    assert cfg.image_size == 384 and cfg.modules["generator"]["num_down_blocks"] == 3
    with torch.device("meta"):
        mods = c.build_modules(cfg)
    for name, keys in OFFICIAL_KEYS.items():
        sd = {k: tuple(v.shape) for k, v in mods[name].state_dict().items()}
        for k, shape in keys.items():
            assert sd.get(k) == shape, (name, k, sd.get(k))
    gen = mods["generator"]
    for attr, n in OFFICIAL_LIST_LENGTHS.items():
        assert len(getattr(gen, attr)) == n, attr
    assert not any(k.startswith(("coefficients.11", "coefficients.10.beta"))
                   for k in mods["region_predictor"].state_dict())
    # only GDN layers carry the compressai buffers: five per head
    gdn = [k for k in mods["region_predictor"].state_dict() if k.endswith("beta_reparam.pedestal")]
    assert len(gdn) == 10


def test_region_predictor_outputs():
    rp = mttf.RegionPredictor(4, 20, 3, 16, 3, feature_size=32).eval()
    out = rp(torch.rand(2, 3, 96, 96))
    assert out["feat"].shape == (2, 20, 32, 32)
    assert out["coeff"].shape == out["bias"].shape == (2, 20, 1, 1)


def test_official_yaml_and_branches():
    c = get_codec("mttf")
    y = {"dataset_params": {"frame_shape": [768, 768]}, "model_params": copy.deepcopy(mttf.OFFICIAL_MODEL_PARAMS)}
    cfg = c.config_from_official_yaml(y)
    assert cfg.fingerprint() == c.official_config().fingerprint()
    assert mttf.scale_factor_of(cfg) == 0.5
    assert mttf.scale_factor_of(c.named_configs()["demo"]) == 1.0
    with pytest.raises(ModelMismatch, match="resolutions"):
        mttf.scale_factor_of(BaselineConfig(model="mttf", image_size=96, modules=cfg.modules))


def test_sparse_motion_grid_and_driving_feature_uses_key_map():
    g = mttf.PixelwiseFlowPredictor.sparse_motions(4, 6, torch.zeros(1, 2, 2, 4, 6))
    from baselines.blocks import make_coordinate_grid

    assert torch.allclose(g[0, 0], make_coordinate_grid((4, 6)), atol=1e-6)
    # the driving feature is the KEY frame's map scaled and shifted by the current frame's numbers
    pf = mttf.PixelwiseFlowPredictor(4, 3, 16, 40, 20, 3, 5, 32, True).eval()
    feat = torch.randn(1, 20, 32, 32)
    src = {"feat": feat, "coeff": torch.ones(1, 20, 1, 1), "bias": torch.zeros(1, 20, 1, 1)}
    drv = {"feat": torch.randn(1, 20, 32, 32), **{k: src[k].clone() for k in ("coeff", "bias")}}
    img = torch.rand(1, 3, 64, 64)
    a, b = pf(img, drv, src), pf(img, {**drv, "feat": torch.zeros(1, 20, 32, 32)}, src)
    assert torch.equal(a["optical_flow"], b["optical_flow"])  # the driving frame's own map is never used


def test_features_layout_coefficients_then_biases():
    p = {"coeff": torch.arange(20.0).view(1, 20, 1, 1), "bias": 100 + torch.arange(20.0).view(1, 20, 1, 1)}
    f = mttf.params_to_features(p)
    assert f.shape == (1, 40) and f[0, 0] == 0 and f[0, 20] == 100
    back = mttf.features_to_params(f, 20)
    assert torch.equal(back["coeff"], p["coeff"]) and torch.equal(back["bias"], p["bias"])


def test_codec_declares_40_values():
    c = get_codec("mttf")
    assert c.feature_dim == 40 and c.quant_scale == 64 and c.inference_modules == ("region_predictor", "generator")
    assert c.values_per_frame(c.named_configs()["demo"]) == 40


def test_round_trip_analysis_and_foreign_decoder_refused_on_branch_1(ckpt, fake_intra, tmp_path):
    K.analysis_shapes("mttf", ckpt)
    c, res, _ = K.round_trip("mttf", ckpt, tmp_path)
    assert c.nets["generator"].branch(mttf.scale_factor_of(c.config())) == 1
    other = K.write_suite_checkpoint(tmp_path / "fomm.pt", "fomm", K.tiny_config("fomm"))
    K.stream_refused_by("mttf", "fomm", other, res.bitstream, tmp_path)


def test_bad_files(ckpt, tmp_path):
    other = K.write_suite_checkpoint(tmp_path / "fomm.pt", "fomm", K.tiny_config("fomm"))
    K.wrong_files_refused("mttf", ckpt, "fomm", other, tmp_path)
    K.official_missing_key_refused("mttf", tiny(), tmp_path)


def test_fallback_mask_marks_moving_regions():
    src = torch.zeros(1, 3, 64, 64)
    drv = src.clone()
    drv[..., 20:40, 20:40] = 1
    m = mttf.frame_difference_mask(src, drv)
    assert m.shape == (1, 1, 64, 64) and float(m[0, 0, 30, 30]) == 1 and float(m[0, 0, 2, 2]) == 0


@pytest.mark.isolated
def test_recipe_trains_and_exports(tmp_path):
    from test_s2d_networks import write_tiny_data

    data = write_tiny_data(tmp_path / "data", size=128, videos=1, frames=4, vertices=False)
    s = K.train_steps("mttf", tiny(), data, tmp_path / "run")
    assert {"perceptual", "pixel", "bg"} <= set(s["final_losses"])
    assert s["losses"]["bg_mask"]["fallback"] is True and s["losses"]["generator_scales"] == [0.5]
    from model_parts.training import RECIPES

    assert set(RECIPES.get("mttf")(tiny()).optimizers()) == {"optimizer_reconstruction"}
    assert "bg" not in RECIPES.get("mttf")(tiny(options={"bg_mask": "none"})).generator_losses(
        RECIPES.get("mttf")(tiny()).build(), {"source": torch.rand(1, 3, 128, 128),
                                              "driving": torch.rand(1, 3, 128, 128)}, 0)[0]


@pytest.mark.slow
def test_official_width_codes_384(fake_intra, tmp_path):
    p = K.write_suite_checkpoint(tmp_path / "mttf-official.pt", "mttf", get_codec("mttf").official_config())
    _, _, frames = K.round_trip("mttf", p, tmp_path, size=384, frames=2)
    assert np.isfinite(frames).all()
