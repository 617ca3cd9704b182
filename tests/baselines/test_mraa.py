"""MRAA: official key/shape listing, conformance, PCA region conventions, 66-value codec, bad files, recipe."""
from __future__ import annotations

from pathlib import Path

import kp_family as K
import pytest
import torch

from baselines import mraa
from baselines.base import BaselineConfig
from gfvc.codec import get_codec


def tiny(size: int = 128) -> BaselineConfig:
    return K.tiny_config("mraa", size)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    return K.write_suite_checkpoint(tmp_path_factory.mktemp("mraa") / "tiny.pt", "mraa", tiny())


def test_official_networks_match_listing():
    # avd_network (animation via disentanglement) is not on the reconstruction/coding path
    assert K.official_modules_match_listing("mraa", "mraa_ted384", skip=("avd_network",)) == [
        "region_predictor", "bg_predictor", "generator"]


def test_conformance_vector():
    K.conformance_passes("mraa")


def test_codec_declares_values():
    c = get_codec("mraa")
    assert c.feature_dim == 66 and c.quant_scale > 0 and c.official_config().image_size == 384
    assert c.inference_modules == ("region_predictor", "bg_predictor", "generator")
    vox = c.named_configs()["vox256"]  # config/vox256.yaml: 256 px, region pad left at the default 3
    assert vox.image_size == 256 and "pad" not in vox.modules["region_predictor"]
    assert mraa.build_module("region_predictor", vox.modules["region_predictor"]).regions.padding == (3, 3)


def test_pca_affine_rebuilds_covariance():
    """affine = U diag(sqrt s): A A^T is the heatmap covariance, so 6 values per region suffice."""
    rp = mraa.RegionPredictor(4, 10, 3, 16, 3, 0.1, estimate_affine=True, scale_factor=0.25, pca_based=True,
                              pad=0).eval()
    p = rp(torch.rand(2, 3, 64, 64))
    cov = torch.matmul(p["affine"], p["affine"].transpose(-1, -2))
    assert torch.allclose(cov, p["covar"], atol=1e-6)
    assert p["shift"].shape == (2, 10, 2) and p["heatmap"].shape == (2, 10, 10, 10)


def test_features_round_trip_with_background():
    regions = {"shift": torch.rand(1, 10, 2), "affine": torch.rand(1, 10, 2, 2)}
    bg = torch.eye(3)[None].clone()
    bg[0, :2] = torch.rand(2, 3)
    f = mraa.params_to_features(regions, bg)
    assert f.shape == (1, 66)
    back, bg2 = mraa.features_to_params(f, 10)
    assert torch.equal(back["shift"], regions["shift"]) and torch.equal(back["affine"], regions["affine"])
    assert torch.equal(bg2, bg)
    assert torch.allclose(back["covar"], regions["affine"] @ regions["affine"].transpose(-1, -2))


def test_bg_affine_is_identity_at_official_init():
    bgp = mraa.BGMotionPredictor(4, 3, 16, 5, "affine").eval()
    out = bgp(torch.rand(2, 3, 64, 64), torch.rand(2, 3, 64, 64))
    assert torch.allclose(out, torch.eye(3).expand(2, 3, 3))


def test_encoder_background_uses_key_frame(ckpt):
    """The 6 background values depend on the (decoded) key frame given to the analysis."""
    c = K.codec_for("mraa", ckpt)
    clip = K.moving_square_video(3, 128)
    c._key_features(clip[0])
    a = c.analyse(clip[1:])
    c._key_features(clip[2])
    b = c.analyse(clip[1:])
    assert (a[:, :60] == b[:, :60]).all() and not (a[:, 60:] == b[:, 60:]).all()


def test_round_trip_and_analysis(ckpt, fake_intra, tmp_path):
    K.analysis_shapes("mraa", ckpt)
    K.round_trip("mraa", ckpt, tmp_path)


def test_bad_files(ckpt, tmp_path):
    other = K.write_suite_checkpoint(tmp_path / "tpsm.pt", "tpsm", K.tiny_config("tpsm"))
    K.wrong_files_refused("mraa", ckpt, "tpsm", other, tmp_path)
    K.official_missing_key_refused("mraa", tiny(), tmp_path)


def test_official_yaml_and_layout(tmp_path):
    import copy

    cfg = {"dataset_params": {"root_dir": "data/TED384-v2", "frame_shape": None},
           "model_params": copy.deepcopy(K.TINY["mraa"])}
    got = get_codec("mraa").config_from_official_yaml(cfg)
    assert got.image_size == 384 and got.modules == tiny().modules
    cfg["dataset_params"]["root_dir"] = "../vox"  # frame_shape null: vox/taichi/mgif are 256
    assert get_codec("mraa").config_from_official_yaml(cfg).image_size == 256
    p = K.write_official_layout(tmp_path / "00000099-cpk-reconstruction.pth", "mraa", tiny(),
                                extra_modules={"optimizer_reconstruction": {"state": {}, "param_groups": []}})
    from model_parts import checkpoint as ck
    assert ck.looks_like(torch.load(p, weights_only=True)) == ["mraa"]


def test_stream_not_decodable_by_other_baseline(ckpt, fake_intra, tmp_path):
    _, res, _ = K.round_trip("mraa", ckpt, tmp_path, frames=2)
    other = K.write_suite_checkpoint(tmp_path / "fomm.pt", "fomm", K.tiny_config("fomm"))
    K.stream_refused_by("mraa", "fomm", other, res.bitstream, tmp_path)


@pytest.mark.isolated
def test_recipe_trains(tmp_path):
    from test_s2d_networks import write_tiny_data

    data = write_tiny_data(tmp_path / "data", size=64, videos=1, frames=4, vertices=False)
    s = K.train_steps("mraa", tiny(64), data, tmp_path / "run")
    assert {"perceptual", "equivariance_shift", "equivariance_affine"} <= set(s["final_losses"])


@pytest.mark.slow
def test_official_width_random_file_codes_384(fake_intra, tmp_path):
    p = K.write_official_layout(tmp_path / "ted384.pth", "mraa", get_codec("mraa").official_config())
    K.round_trip("mraa", p, tmp_path, size=384, frames=2)
