"""CFTE: official listing, official-code conformance vector, Farneback motion, codec, bad files, recipe."""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import kp_family as K
import numpy as np
import pytest
import torch

from baselines import cfte
from baselines.base import BaselineConfig
from gfvc.codec import get_codec

TINY: dict[str, Any] = {
    "common_params": {"num_kp": 1, "num_channels": 3, "estimate_jacobian": False},
    "kp_detector_params": {"temperature": 0.1, "block_expansion": 4, "max_features": 16, "scale_factor": 0.5,
                           "num_blocks": 3},
    "generator_params": {"block_expansion": 4, "max_features": 16, "num_down_blocks": 2, "num_bottleneck_blocks": 1,
                         "estimate_occlusion_map": True,
                         "dense_motion_params": {"block_expansion": 4, "max_features": 16, "num_down_blocks": 3,
                                                 "num_bottleneck_blocks": 1, "num_blocks": 3, "scale_factor": 0.25}},
    "discriminator_params": {"scales": [1], "block_expansion": 4, "max_features": 16, "num_blocks": 4, "sn": True},
}


def tiny(size: int = 128, options: dict | None = None) -> BaselineConfig:
    return BaselineConfig(model="cfte", image_size=size, modules=cfte.modules_from_model_params(TINY),
                          options=dict(options or {}), name="tiny")


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    return K.write_suite_checkpoint(tmp_path_factory.mktemp("cfte") / "tiny.pt", "cfte", tiny())


def test_official_networks_match_listing():
    assert K.official_modules_match_listing("cfte", "cfte_vox256") == ["kp_detector", "generator", "discriminator"]


def test_conformance_vector_from_the_official_code():
    K.conformance_passes("cfte")


def test_values_per_frame_follow_the_image_size():
    c = get_codec("cfte")
    cfgs = c.named_configs()
    assert c.quant_scale == 4 and c.inference_modules == ("kp_detector", "generator")
    assert c.values_per_frame(cfgs["official"]) == 16 and cfgs["official"].image_size == 256
    assert c.values_per_frame(cfgs["official-384"]) == 36
    assert c.values_per_frame(cfgs["demo"]) == 16 and cfgs["demo"].image_size == 128
    with torch.device("meta"):
        kd = c.build_modules(cfgs["official-384"])["kp_detector"]
    assert kd.scale_factor == 0.25


def test_inconsistent_sizes_are_refused():
    from gfvc.errors import ModelMismatch

    bad = copy.deepcopy(TINY)
    bad["generator_params"]["dense_motion_params"]["num_down_blocks"] = 2
    with pytest.raises(ModelMismatch, match="dense-motion size"):
        get_codec("cfte").build_modules(BaselineConfig(model="cfte", image_size=128,
                                                        modules=cfte.modules_from_model_params(bad)))
    with pytest.raises(ModelMismatch, match="multiple of 16"):
        cfte.feature_side(tiny(120))


def test_farneback_flow_points_from_driving_to_source():
    """Driving = source shifted right by one feature pixel: the backward flow is about -1 px in x."""
    x = np.linspace(0, 3, 12)
    xx, yy = np.meshgrid(x, x)
    src = np.sin(xx) * np.cos(0.7 * yy)
    drv = np.roll(src, 1, axis=1)
    def t(a: np.ndarray) -> torch.Tensor:
        return torch.tensor(a, dtype=torch.float32)[None, None]

    flow = cfte.farneback_flow(t(src), t(drv))
    assert flow.shape == (1, 12, 12, 2) and flow.dtype == torch.float32
    assert -1.2 < float(flow[0, 1:-1, 2:-1, 0].mean()) < -0.8
    assert float(flow[0, 1:-1, 2:-1, 1].abs().mean()) < 0.2


def test_uint8_normalisation_batch_and_per_sample():
    a = torch.tensor([[0.0, 1.0], [2.0, 3.0]]).view(1, 1, 2, 2)
    b = a * 2 + 10
    both = torch.cat([a, b])
    per = cfte.to_uint8(both, per_sample=True)
    assert per.dtype == np.uint8 and per[0].tolist() == per[1].tolist() == [[0, 85], [170, 255]]
    batch = cfte.to_uint8(both)  # official: one min/max over the whole batch
    assert batch[0].max() < 60 and batch[1].max() == 255
    assert cfte.to_uint8(torch.zeros(1, 1, 2, 2)).tolist() == [[[0, 0], [0, 0]]]


def test_round_trip_analysis_and_foreign_decoder_refused(ckpt, fake_intra, tmp_path):
    K.analysis_shapes("cfte", ckpt)
    c, res, _ = K.round_trip("cfte", ckpt, tmp_path)
    assert c.feature_dim == 16 and c.nets["generator"].dense_motion_network.farneback_normalisation == "sample"
    other = K.write_suite_checkpoint(tmp_path / "fomm.pt", "fomm", K.tiny_config("fomm"))
    K.stream_refused_by("cfte", "fomm", other, res.bitstream, tmp_path)


def test_batching_does_not_change_synthesis(ckpt):
    """The codec normalises each frame on its own (the official decoder codes one frame per call)."""
    from test_s2d_networks import moving_square_video

    c = K.codec_for("cfte", ckpt)
    f = moving_square_video(4, 128)
    kf = c._key_features(f[0])
    feats = c.analyse(f[1:])
    together, _ = c.synthesise(f[0], kf, feats)
    one = np.concatenate([c.synthesise(f[0], kf, feats[i:i + 1])[0] for i in range(3)])
    assert np.array_equal(together, one)


def test_feature_dim_is_36_at_384(tmp_path):
    cfg = copy.deepcopy(TINY)
    cfg["kp_detector_params"]["scale_factor"] = 0.25
    cfg["generator_params"]["dense_motion_params"]["num_down_blocks"] = 4
    c384 = BaselineConfig(model="cfte", image_size=384, modules=cfte.modules_from_model_params(cfg), name="t384")
    p = K.write_suite_checkpoint(tmp_path / "t384.pt", "cfte", c384)
    assert K.codec_for("cfte", p, 384).feature_dim == 36


def test_bad_files(ckpt, tmp_path):
    other = K.write_suite_checkpoint(tmp_path / "fomm.pt", "fomm", K.tiny_config("fomm"))
    K.wrong_files_refused("cfte", ckpt, "fomm", other, tmp_path)
    K.official_missing_key_refused("cfte", tiny(), tmp_path)


def test_official_layout_file_with_yaml_loads(tmp_path):
    """A file shaped like the authors' checkpoint (modules + optimisers + epoch, no suite meta) and its YAML."""
    import yaml

    p = K.write_official_layout(tmp_path / "00000099-checkpoint.pth.tar", "cfte", tiny(),
                                extra_modules={"optimizer_generator": {"state": {}, "param_groups": []}})
    cfg = {"dataset_params": {"frame_shape": [128, 128, 3]}, "model_params": copy.deepcopy(TINY)}
    assert get_codec("cfte").config_from_official_yaml(cfg).fingerprint() == tiny().fingerprint()
    from model_parts import checkpoint as ck
    st = ck.read_checkpoint(p, "cfte", get_codec("cfte").inference_modules)
    assert ck.looks_like(torch.load(p, weights_only=True)) == ["cfte"] and "discriminator" in st.other_keys
    (tmp_path / "vox-256.yaml").write_text(yaml.safe_dump(cfg))


@pytest.mark.isolated
def test_recipe_trains_and_exports(tmp_path):
    from test_s2d_networks import write_tiny_data

    data = write_tiny_data(tmp_path / "data", size=128, videos=1, frames=4, vertices=False)
    s = K.train_steps("cfte", tiny(128, {"feature_noise_halfwidth": 0.125}), data, tmp_path / "run")
    assert {"perceptual_initial", "perceptual_final", "gen_gan", "feature_matching", "d.disc_gan"} <= set(
        s["final_losses"])
    info = s["losses"]
    assert info["feature_noise_halfwidth"] == 0.125 and "rate" in info["omitted"]


def test_recipe_noise_is_the_entropy_bottleneck_training_noise():
    from model_parts.training import RECIPES

    rec = RECIPES.get("cfte")(tiny(128))
    assert rec.noise == 0.5 and rec.lr_milestones == (0.6, 0.9)
    assert set(rec.optimizers()) == {"optimizer_generator", "optimizer_discriminator", "optimizer_kp_detector"}


@pytest.mark.slow
def test_official_width_random_file_codes_256(fake_intra, tmp_path):
    """Random state_dict with the official key set, official layout (no suite meta): coded at 256x256."""
    p = K.write_official_layout(tmp_path / "cfte-random.pth.tar", "cfte", get_codec("cfte").official_config())
    c, _, _ = K.round_trip("cfte", p, tmp_path, size=256, frames=2)
    assert c.feature_dim == 16
