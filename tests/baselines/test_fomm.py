"""FOMM: official key/shape listing, conformance with the official code, codec round trip, bad files, recipe."""
from __future__ import annotations

import copy
from pathlib import Path

import kp_family as K
import numpy as np
import pytest
import torch

from baselines import fomm
from baselines.base import BaselineConfig
from gfvc.codec import get_codec


def tiny(size: int = 128) -> BaselineConfig:
    return K.tiny_config("fomm", size)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    return K.write_suite_checkpoint(tmp_path_factory.mktemp("fomm") / "tiny.pt", "fomm", tiny())


def test_official_networks_match_listing():
    assert K.official_modules_match_listing("fomm", "fomm_vox256") == ["kp_detector", "generator", "discriminator"]


def test_conformance_vector():
    K.conformance_passes("fomm")


def test_codec_declares_gfvc_values():
    c = get_codec("fomm")
    assert c.feature_dim == 60 and c.quant_scale == 64 and c.inference_modules == ("kp_detector", "generator")
    assert set(c.named_configs()) >= {"official", "demo"} and c.official_config().image_size == 256


def test_features_layout_values_then_jacobians():
    kp = {"value": torch.arange(20.0).view(1, 10, 2), "jacobian": 100 + torch.arange(40.0).view(1, 10, 2, 2)}
    f = fomm.kp_to_features(kp)
    assert f.shape == (1, 60) and f[0, :20].tolist() == list(range(20)) and f[0, 20] == 100
    back = fomm.features_to_kp(f, 10, True)
    assert torch.equal(back["value"], kp["value"]) and torch.equal(back["jacobian"], kp["jacobian"])


def test_jacobian_identity_at_init_and_meta_safe():
    kd = fomm.KPDetector(4, 10, 3, 16, 3, 0.1, estimate_jacobian=True, scale_factor=0.25)
    out = kd.eval()(torch.rand(1, 3, 64, 64))
    assert torch.allclose(out["jacobian"], torch.eye(2).expand(1, 10, 2, 2), atol=1e-6)
    assert out["value"].abs().max() <= 1


def test_round_trip_and_analysis(ckpt, fake_intra, tmp_path):
    K.analysis_shapes("fomm", ckpt)
    K.round_trip("fomm", ckpt, tmp_path)


def test_identity_motion_reproduces_deformed_source():
    """Same keypoints on both sides: every sparse motion is the identity, so the flow is the identity grid."""
    dm = fomm.DenseMotionNetwork(4, 3, 16, 10, 3, estimate_occlusion_map=True, scale_factor=0.25).eval()
    kp = {"value": torch.rand(1, 10, 2) * 2 - 1, "jacobian": torch.eye(2).repeat(1, 10, 1, 1) * 1.3}
    out = dm(torch.rand(1, 3, 64, 64), kp, kp)
    from baselines.blocks import make_coordinate_grid

    assert torch.allclose(out["deformation"][0], make_coordinate_grid((16, 16)), atol=1e-5)


def test_bad_files(ckpt, tmp_path):
    other = K.write_suite_checkpoint(tmp_path / "mraa.pt", "mraa", K.tiny_config("mraa"))
    K.wrong_files_refused("fomm", ckpt, "mraa", other, tmp_path)
    K.official_missing_key_refused("fomm", tiny(), tmp_path)


def test_official_layout_file_without_suite_meta_loads(tmp_path):
    """A file shaped like the authors' vox-cpk.pth.tar (modules + optimisers + epoch) with its YAML config."""
    import yaml

    p = K.write_official_layout(tmp_path / "vox-cpk.pth.tar", "fomm", tiny(),
                                extra_modules={"optimizer_generator": {"state": {}, "param_groups": []}})
    cfg = {"dataset_params": {"frame_shape": [128, 128, 3]}, "model_params": copy.deepcopy(K.TINY["fomm"])}
    y = tmp_path / "vox-256.yaml"
    y.write_text(yaml.safe_dump(cfg))
    assert get_codec("fomm").config_from_official_yaml(cfg).fingerprint() == tiny().fingerprint()
    from model_parts import checkpoint as ck
    st = ck.read_checkpoint(p, "fomm", get_codec("fomm").inference_modules)
    assert ck.looks_like(torch.load(p, weights_only=True)) == ["fomm"] and "discriminator" in st.other_keys


def test_stream_not_decodable_by_other_baseline(ckpt, fake_intra, tmp_path):
    _, res, _ = K.round_trip("fomm", ckpt, tmp_path, frames=2)
    other = K.write_suite_checkpoint(tmp_path / "mraa.pt", "mraa", K.tiny_config("mraa"))
    K.stream_refused_by("fomm", "mraa", other, res.bitstream, tmp_path)


@pytest.mark.isolated
def test_recipe_trains(tmp_path):
    from test_s2d_networks import write_tiny_data

    data = write_tiny_data(tmp_path / "data", size=64, videos=1, frames=4, vertices=False)
    s = K.train_steps("fomm", tiny(64), data, tmp_path / "run")
    assert {"perceptual", "equivariance_value", "equivariance_jacobian"} <= set(s["final_losses"])
    assert s["losses"]["loss_weights"]["equivariance_jacobian"] == 10


def test_recipe_gan_option_updates_discriminator(tmp_path):
    from model_parts.training import RECIPES

    cfg = tiny(64)
    cfg = BaselineConfig(model="fomm", image_size=64, modules=cfg.modules,
                         options={"loss_weights": {"generator_gan": 1}}, name="tiny-adv")
    rec = RECIPES.get("fomm")(cfg)
    assert rec.discriminator_optimizers() == ("optimizer_discriminator",)
    mods = rec.build()
    batch = {"source": torch.rand(2, 3, 64, 64), "driving": torch.rand(2, 3, 64, 64)}
    terms, cache = rec.generator_losses(mods, batch, 0)
    d = rec.discriminator_losses(mods, batch, cache, 0)
    assert {"gen_gan", "feature_matching"} <= set(terms) and np.isfinite(float(d["disc_gan"].detach()))
    assert RECIPES.get("fomm")(tiny(64)).discriminator_optimizers() == ()


@pytest.mark.slow
def test_official_width_random_file_codes_256(fake_intra, tmp_path):
    """Random state_dict with the official key set, official layout (no suite meta): coded at 256x256."""
    p = K.write_official_layout(tmp_path / "vox-random.pth.tar", "fomm", get_codec("fomm").official_config())
    K.round_trip("fomm", p, tmp_path, size=256, frames=2)
