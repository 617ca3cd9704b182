"""FV2V: official key/shape listing, conformance with the official code, both code generations (the GFVC
software's beta copy and the repository head), the GFVC 57-value feature layout, codec round trip, bad files,
official YAML configs, recipe."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import kp_family as K
import numpy as np
import pytest
import torch

from baselines import blocks3d, fv2v
from baselines.base import BaselineConfig
from baselines.listings import compare_to_listing, read_listing
from gfvc.codec import Environment, get_codec

TINY_PARAMS: dict[str, Any] = {
    "common_params": {"num_kp": 15, "image_channel": 3, "feature_channel": 4, "estimate_jacobian": False},
    "kp_detector_params": {"temperature": 0.1, "block_expansion": 4, "max_features": 16, "scale_factor": 0.25,
                           "num_blocks": 3, "reshape_channel": 64, "reshape_depth": 4},
    "he_estimator_params": {"block_expansion": 8, "max_features": 64, "num_bins": 66},
    "generator_params": {"block_expansion": 4, "max_features": 16, "num_down_blocks": 2, "reshape_channel": 4,
                         "reshape_depth": 4, "num_resblocks": 1, "estimate_occlusion_map": True,
                         "dense_motion_params": {"block_expansion": 4, "max_features": 16, "num_blocks": 2,
                                                 "reshape_depth": 4, "compress": 2}},
    "discriminator_params": {"scales": [1], "block_expansion": 4, "max_features": 16, "num_blocks": 4, "sn": True},
}
TINY_HE = [8, 16, 32, 64]


def tiny(size: int = 128, variant: str = "beta") -> BaselineConfig:
    return fv2v.config_from_model_params(TINY_PARAMS, size, {"variant": variant, "he_estimator_widths": TINY_HE},
                                         "tiny")


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    return K.write_suite_checkpoint(tmp_path_factory.mktemp("fv2v") / "tiny.pt", "fv2v", tiny())


def test_official_networks_match_listing():
    """Repository-head config: every module equals the official listing; the GFVC config (kp scale 1) only
    lacks the detector's anti-alias buffer."""
    ref = read_listing("fv2v_vox256")
    cls = get_codec("fv2v")
    with torch.device("meta"):
        head = cls.build_modules(cls.named_configs()["vox256"])
        vox = cls.named_configs()["vox256"]
        head["discriminator"] = fv2v.build_network("discriminator", vox.modules["discriminator"])
        gfvc = cls.build_modules(cls.official_config())
    for name, m in head.items():
        assert compare_to_listing(m, ref[name]) == [], name
    assert compare_to_listing(gfvc["kp_detector"], ref["kp_detector"]) == ["missing down.weight (3, 1, 13, 13)"]
    assert compare_to_listing(gfvc["he_estimator"], ref["he_estimator"]) == []
    assert compare_to_listing(gfvc["generator"], ref["generator"]) == []
    assert sum(p.numel() for p in head["generator"].parameters()) == 53101392


def test_conformance_vector():
    K.conformance_passes("fv2v")


def test_codec_declares_gfvc_values():
    c = get_codec("fv2v")
    assert c.values_per_frame(c.official_config()) == 57 and c.quant_scale == 256
    assert c.inference_modules == ("kp_detector", "he_estimator", "generator")
    assert set(c.named_configs()) >= {"official", "gfvc", "vox256", "demo"}
    assert c.named_configs()["gfvc"].fingerprint() == c.official_config().fingerprint()
    off = c.official_config()
    assert off.image_size == 256 and off.options["variant"] == "beta"
    assert off.modules["kp_detector"]["scale_factor"] == 1 and off.modules["kp_detector"]["num_kp"] == 15
    assert off.modules["generator"]["estimate_jacobian"] is False
    assert c.named_configs()["vox256"].options["variant"] == "9511d25a"


def test_rotation_conventions_of_both_generations():
    """Head: R = Rx(pitch) Ry(yaw) Rz(roll); beta/GFVC: R = Rx(roll) Ry(pitch) Rz(yaw); degrees with pi = 3.14."""
    a = 30 / 180 * 3.14
    c, s = math.cos(a), math.sin(a)
    z = torch.zeros(1)
    yaw = torch.full((1,), 30.0)
    head = fv2v.get_rotation_matrix(yaw, z, z, "9511d25a")[0]
    beta = fv2v.get_rotation_matrix(yaw, z, z, "beta")[0]
    assert torch.allclose(head, torch.tensor([[c, 0, s], [0, 1, 0], [-s, 0, c]]), atol=1e-6)
    assert torch.allclose(beta, torch.tensor([[c, -s, 0], [s, c, 0], [0, 0, 1]]), atol=1e-6)
    r = fv2v.get_rotation_matrix(torch.tensor([10.0]), torch.tensor([-20.0]), torch.tensor([5.0]), "beta")[0]
    assert torch.allclose(r @ r.T, torch.eye(3), atol=1e-6)
    onehot = torch.full((2, 66), -1e4)
    onehot[0, 33], onehot[1, 0] = 0, 0
    assert fv2v.headpose_pred_to_degree(onehot).tolist() == [0.0, -99.0]


def test_yaw_roll_head_quirk():
    """Official quirk kept: the yaw logits come from fc_roll, the roll logits from fc_yaw."""
    he = fv2v.HEEstimator(8, 4, 15, 3, 64, widths=TINY_HE).eval()
    x = torch.full((1, 3, 64, 64), 0.5)
    base = he(x)
    with torch.no_grad():
        he.fc_roll.bias.add_(5.0)
    out = he(x)
    assert torch.allclose(out["yaw"] - base["yaw"], torch.full((1, 66), 5.0), atol=1e-5)
    assert torch.equal(out["roll"], base["roll"]) and torch.equal(out["pitch"], base["pitch"])
    assert out["exp"].shape == (1, 45) and out["t"].shape == (1, 3)


def test_code_generations_share_keys_not_arithmetic():
    torch.manual_seed(0)
    x = torch.rand(1, 8, 4, 8, 8)
    for cls in (blocks3d.UpBlock3d, blocks3d.DownBlock3d):
        a, b = cls(8, 8, variant="9511d25a").eval(), cls(8, 8, variant="beta").eval()
        b.load_state_dict(a.state_dict(), strict=True)
        ya, yb = a(x), b(x)
        assert ya.shape == yb.shape and not torch.allclose(ya, yb)
    with pytest.raises(ValueError):
        blocks3d.UpBlock3d(8, 8, variant="gamma")


def test_features_are_rotation_translation_expression(ckpt):
    c = K.codec_for("fv2v", ckpt)
    f = (np.random.RandomState(0).rand(3, 128, 128, 3) * 255).astype(np.uint8)
    c._key_features(f[0])
    feats = torch.from_numpy(c.analyse(f))
    assert feats.shape == (3, 57)
    rot, t, exp = fv2v.unpack_features(feats)
    assert torch.allclose(rot @ rot.transpose(1, 2), torch.eye(3).expand(3, 3, 3), atol=1e-5)
    he = c.nets["he_estimator"](torch.from_numpy(f).permute(0, 3, 1, 2).float() / 255)
    assert torch.allclose(t, he["t"], atol=1e-5) and torch.allclose(exp, he["exp"], atol=1e-5)
    kc = {"value": torch.rand(3, 15, 3) * 2 - 1}
    assert torch.allclose(fv2v.transform_keypoints(kc, rot, t, exp)["value"],
                          fv2v.keypoint_transformation(kc, he, "beta")["value"], atol=1e-5)


def test_official_yaml_configs():
    cls = get_codec("fv2v")
    gfvc = {"dataset_params": {"frame_shape": [256, 256, 3]}, "model_params": fv2v._official_model_params(1)}
    assert cls.config_from_official_yaml(gfvc).options["variant"] == "beta"
    assert cls.config_from_official_yaml(gfvc).modules == cls.official_config().modules
    head = {"model_params": fv2v._official_model_params(0.25)}
    assert cls.config_from_official_yaml(head).options["variant"] == "9511d25a"
    forced = {"model_params": fv2v._official_model_params(1), "gfvc": {"variant": "9511d25a"}}
    assert cls.config_from_official_yaml(forced).options["variant"] == "9511d25a"
    from gfvc.errors import ModelMismatch

    with pytest.raises(ModelMismatch):
        cls.config_from_official_yaml({"train_params": {}})


def test_round_trip_and_analysis(ckpt, fake_intra, tmp_path):
    K.analysis_shapes("fv2v", ckpt)
    c, _, _ = K.round_trip("fv2v", ckpt, tmp_path)
    assert c.provenance()["config"]["options"]["variant"] == "beta"


def test_render_uses_cached_key_state(ckpt):
    """Rendering in batches of 4 equals rendering one frame at a time (the key volume is computed once)."""
    c = K.codec_for("fv2v", ckpt)
    f = (np.random.RandomState(1).rand(6, 128, 128, 3) * 255).astype(np.uint8)
    kf = c._key_features(f[0])
    feats = c.analyse(f[1:])
    all_at_once, _ = c.synthesise(f[0], kf, feats)
    one_by_one = np.concatenate([c.synthesise(f[0], kf, feats[i:i + 1])[0] for i in range(5)])
    assert np.abs(all_at_once.astype(int) - one_by_one.astype(int)).max() <= 1


def test_bad_files(ckpt, tmp_path):
    other = K.write_suite_checkpoint(tmp_path / "fomm.pt", "fomm", K.tiny_config("fomm"))
    K.wrong_files_refused("fv2v", ckpt, "fomm", other, tmp_path)
    K.official_missing_key_refused("fv2v", tiny(), tmp_path)


def test_official_layout_with_yaml_from_condition(fake_intra, tmp_path):
    """A file shaped like the official/GFVC checkpoints (modules + optimisers + epoch, no suite meta) with its
    YAML named by the condition's models: entry; looks_like names it fv2v."""
    import yaml
    from test_generative import demo_condition

    from model_parts import checkpoint as ck
    p = K.write_official_layout(tmp_path / "FV2V-checkpoint.pth.tar", "fv2v", tiny(),
                                extra_modules={"optimizer_he_estimator": {"state": {}, "param_groups": []}})
    assert ck.looks_like(torch.load(p, weights_only=True)) == ["fv2v"]
    y = tmp_path / "FV2V-tiny.yaml"
    y.write_text(yaml.safe_dump({"dataset_params": {"frame_shape": [128, 128, 3]}, "model_params": TINY_PARAMS,
                                 "gfvc": {"variant": "beta", "he_estimator_widths": TINY_HE}}))
    cls = get_codec("fv2v")
    cfg = cls.config_from_official_yaml(yaml.safe_load(y.read_text()))
    assert cfg.options["he_estimator_widths"] == TINY_HE
    cond = demo_condition().with_overrides(models={"fv2v": {"path": str(p), "config": str(y)}})
    c = cls(cond, Environment())
    c.check()
    assert c.config().name == "official-yaml" and c.choice.source == "condition"


def test_stream_not_decodable_by_other_baseline(ckpt, fake_intra, tmp_path):
    _, res, _ = K.round_trip("fv2v", ckpt, tmp_path, frames=2)
    other = K.write_suite_checkpoint(tmp_path / "fomm.pt", "fomm", K.tiny_config("fomm"))
    K.stream_refused_by("fv2v", "fomm", other, res.bitstream, tmp_path)


def test_keypoint_prior_matches_official_definition():
    kp = torch.rand(2, 15, 3) * 2 - 1
    total = 0.0
    for i in range(15):
        for j in range(15):
            d = torch.nn.functional.pairwise_distance(kp[:, i], kp[:, j], p=2, keepdim=True) ** 2
            total += ((0.1 - d) * (0.1 - d > 0)).mean()
    total += (kp[:, :, -1].mean(-1) - 0.33).abs().mean()
    assert torch.allclose(fv2v.keypoint_prior(kp), torch.as_tensor(total), atol=1e-5)


@pytest.mark.isolated
def test_recipe_trains_with_labelled_headpose_fallback(tmp_path):
    from test_s2d_networks import write_tiny_data

    data = write_tiny_data(tmp_path / "data", size=64, videos=1, frames=4, vertices=False)
    s = K.train_steps("fv2v", tiny(64), data, tmp_path / "run")
    assert {"perceptual", "gen_gan", "feature_matching", "equivariance_value", "keypoint",
            "expression", "d.disc_gan"} <= set(s["final_losses"])
    assert "headpose" not in s["final_losses"]
    info = s["losses"]
    assert info["headpose"]["used"] is False and "HopeNet" in info["headpose"]["fallback"]
    assert info["loss_weights"]["headpose"] == 20 and info["lr_milestones_fraction"] == [0.6]


@pytest.mark.slow
def test_official_width_random_file_codes_256(fake_intra, tmp_path):
    """Random state_dict with the official (GFVC) key set in the official layout (no suite meta), coded at 256."""
    p = K.write_official_layout(tmp_path / "FV2V-random.pth.tar", "fv2v", get_codec("fv2v").official_config())
    K.round_trip("fv2v", p, tmp_path, size=256, frames=2)


def test_recipe_head_init_option():
    from gfvc.errors import ConfigError
    from model_parts.training import RECIPES

    d = tiny(64).to_dict()
    d["options"]["train_head_init"] = "zero"
    mods = RECIPES.get("fv2v")(BaselineConfig.from_dict(d)).build()
    he = mods["he_estimator"]
    heads = ("fc_roll", "fc_pitch", "fc_yaw", "fc_t", "fc_exp")
    assert all(float(getattr(he, n).weight.detach().abs().sum()) == 0 for n in heads)
    with torch.no_grad():
        out = he.eval()(torch.rand(1, 3, 64, 64))
    assert float(out["exp"].abs().max()) == 0 and float(out["t"].abs().max()) == 0
    assert float(RECIPES.get("fv2v")(tiny(64)).build()["he_estimator"].fc_exp.weight.detach().abs().sum()) > 0
    d["options"]["train_head_init"] = "bogus"
    with pytest.raises(ConfigError):
        RECIPES.get("fv2v")(BaselineConfig.from_dict(d)).build()


def test_other_keypoint_count_with_jacobians(fake_intra, tmp_path):
    """Any keypoint count the official code accepts: 10 keypoints with jacobians (GFVC's vox-256.yaml) send
    9 + 3 + 30 = 42 values; the jacobians are derived at the decoder (R J_canonical), never sent."""
    params = {**TINY_PARAMS, "common_params": {**TINY_PARAMS["common_params"], "num_kp": 10, "estimate_jacobian": True}}
    cfg = fv2v.config_from_model_params(params, 128, {"variant": "beta", "he_estimator_widths": TINY_HE}, "kp10")
    p = K.write_suite_checkpoint(tmp_path / "kp10.pt", "fv2v", cfg)
    c, _, _ = K.round_trip("fv2v", p, tmp_path, frames=2)
    assert c.feature_dim == 42 and get_codec("fv2v").values_per_frame(cfg) == 42
