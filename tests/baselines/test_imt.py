"""IMT (no public code): compact feature of the paper's form, implicit (attention) motion, codec, recipe."""
from __future__ import annotations

import copy
from pathlib import Path

import kp_family as K
import pytest
import torch

from baselines import imt
from baselines.base import BaselineConfig
from gfvc.codec import get_codec
from gfvc.errors import ModelMismatch

TINY = {
    "encoder": {"block_expansion": 4, "num_kp": 1, "num_channels": 3, "max_features": 16, "num_blocks": 3,
                "temperature": 0.1, "scale_factor": 0.5},
    "generator": {"num_channels": 3, "block_expansion": 4, "max_features": 16, "num_down_blocks": 3,
                  "num_guidance_up_blocks": 2, "guidance_channels": 4, "dim": 16, "heads": 2, "depth": 1,
                  "mlp_ratio": 2.0, "num_bottleneck_blocks": 1, "feature_channels": 1, "key_skips": True},
    "discriminator": {"scales": [1], "block_expansion": 4, "max_features": 16, "num_blocks": 4, "sn": True},
}


def tiny(size: int = 128) -> BaselineConfig:
    return BaselineConfig(model="imt", image_size=size, modules=copy.deepcopy(TINY), name="tiny")


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    return K.write_suite_checkpoint(tmp_path_factory.mktemp("imt") / "tiny.pt", "imt", tiny())


def test_paper_setting_is_6x6x1_at_384():
    c = get_codec("imt")
    cfgs = c.named_configs()
    assert cfgs["official"].image_size == 384 and c.values_per_frame(cfgs["official"]) == 36
    assert c.values_per_frame(cfgs["demo"]) == 16 and c.quant_scale == 4
    assert "motion_transformation" in cfgs["official"].options  # the suite's choices travel with the config
    enc = imt.build_module("encoder", {**TINY["encoder"], "scale_factor": 0.25})
    assert {"conv1.weight", "gdn4.gamma", "down.weight"} <= set(enc.state_dict())  # rho_(conv,GDN)(U-Net(phi))
    assert enc.eval()(torch.rand(1, 3, 384, 384))["value"].shape == (1, 1, 6, 6)


def test_inconsistent_grid_is_refused():
    bad = tiny()
    bad.modules["generator"]["num_guidance_up_blocks"] = 3
    with pytest.raises(ModelMismatch, match="attention grid"):
        get_codec("imt").build_modules(bad)


def test_generator_is_flow_free_and_driven_by_the_feature():
    torch.manual_seed(0)
    mods = get_codec("imt").build_modules(tiny())
    gen = mods["generator"].eval()
    key = torch.rand(1, 3, 128, 128)
    f_k = torch.randn(1, 1, 4, 4)
    a = gen(key, f_k, f_k)["prediction"]
    b = gen(key, f_k, f_k + 1.0)["prediction"]
    assert a.shape == (1, 3, 128, 128) and (a - b).abs().max() > 1e-6
    assert not any("flow" in k or "occlusion" in k for k in gen.state_dict())


def test_sincos_positions_distinct():
    p = imt.sincos_2d(16, 3, 4)
    assert p.shape == (12, 16) and torch.cdist(p, p).fill_diagonal_(1).min() > 0.1
    with pytest.raises(ModelMismatch):
        imt.sincos_2d(6, 2, 2)


def test_round_trip_analysis_and_foreign_decoder_refused(ckpt, fake_intra, tmp_path):
    K.analysis_shapes("imt", ckpt)
    c, res, _ = K.round_trip("imt", ckpt, tmp_path)
    assert c.feature_dim == 16
    other = K.write_suite_checkpoint(tmp_path / "fomm.pt", "fomm", K.tiny_config("fomm"))
    K.stream_refused_by("imt", "fomm", other, res.bitstream, tmp_path)


def test_bad_files(ckpt, tmp_path):
    other = K.write_suite_checkpoint(tmp_path / "fomm.pt", "fomm", K.tiny_config("fomm"))
    K.wrong_files_refused("imt", ckpt, "fomm", other, tmp_path)
    K.official_missing_key_refused("imt", tiny(), tmp_path)


@pytest.mark.isolated
def test_recipe_trains_and_exports(tmp_path):
    from test_s2d_networks import write_tiny_data

    data = write_tiny_data(tmp_path / "data", size=128, videos=1, frames=4, vertices=False)
    s = K.train_steps("imt", tiny(), data, tmp_path / "run")
    assert {"perceptual", "gen_gan", "feature_matching", "d.disc_gan"} <= set(s["final_losses"])
    assert "suite choice" in s["losses"]["source"]
