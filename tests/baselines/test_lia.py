"""LIA: official key/shape listing, conformance with the official code, StyleGAN2 primitives, the motion basis,
generalised sizes and the resample adaptation (384), codec round trip, bad files, recipe."""
from __future__ import annotations

from pathlib import Path

import kp_family as K
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from baselines import lia
from baselines.base import BaselineConfig
from baselines.listings import compare_to_listing, read_listing
from gfvc.codec import Environment, get_codec
from gfvc.errors import ConfigError, ModelMismatch

TINY_CHANNELS = {"4": 16, "8": 16, "16": 16, "32": 8, "64": 8, "128": 4}


def tiny(size: int = 128, adaptation: str = "resample") -> BaselineConfig:
    return BaselineConfig(model="lia", image_size=size,
                          modules={"gen": {"size": size, "style_dim": 32, "motion_dim": 20, "channel_multiplier": 1,
                                           "blur_kernel": [1, 3, 3, 1]}},
                          options={"size_adaptation": adaptation, "channels": dict(TINY_CHANNELS)}, name="tiny")


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    return K.write_suite_checkpoint(tmp_path_factory.mktemp("lia") / "tiny.pt", "lia", tiny())


def test_official_network_matches_listing():
    ref = read_listing("lia_256")
    with torch.device("meta"):
        gen = get_codec("lia").build_modules(get_codec("lia").official_config())["gen"]
    assert compare_to_listing(gen, ref["gen"]) == []
    assert sum(p.numel() for p in gen.parameters()) == 45116317


def test_conformance_vector():
    K.conformance_passes("lia")


def test_codec_declares_values_and_configs():
    c = get_codec("lia")
    assert c.feature_dim == 20 and c.inference_modules == ("gen",) and c.quant_scale > 0
    cfgs = c.named_configs()
    assert set(cfgs) >= {"official", "demo", "ted384-resample", "ted384-generalised"}
    assert cfgs["official"].image_size == 256 and cfgs["official"].modules["gen"]["size"] == 256
    r = cfgs["ted384-resample"]
    assert r.image_size == 384 and r.modules["gen"]["size"] == 256 and r.options["resample"]["network_size"] == 256
    assert cfgs["ted384-generalised"].modules["gen"]["size"] == 384


def _upfirdn_reference(x, kernel, up, down, pad):
    """The official algorithm literally: one single-channel conv over B*C images, then subsampling."""
    b, c, h, w = x.shape
    out = x.reshape(-1, 1, h, w)
    if up > 1:
        out = F.pad(out.view(-1, 1, h, 1, w, 1), [0, up - 1, 0, 0, 0, up - 1]).view(-1, 1, h * up, w * up)
    out = F.pad(out, [max(pad[0], 0), max(pad[1], 0), max(pad[0], 0), max(pad[1], 0)])
    out = F.conv2d(out, torch.flip(kernel, [0, 1]).view(1, 1, *kernel.shape))
    return out.view(b, c, out.shape[2], out.shape[3])[:, :, ::down, ::down]


@pytest.mark.parametrize("up,down,pad", [(1, 1, (2, 1)), (2, 1, (2, 1)), (1, 2, (1, 1)), (1, 2, (2, 2))])
def test_depthwise_fir_equals_official_algorithm(up, down, pad):
    torch.manual_seed(0)
    x = torch.rand(2, 3, 9, 9)
    k = lia.make_kernel([1, 3, 3, 1]) * (4 if up > 1 else 1)
    assert torch.allclose(lia.upfirdn2d(x, k, up=up, down=down, pad=pad), _upfirdn_reference(x, k, up, down, pad),
                          atol=1e-6)


def test_motion_basis_is_orthonormal_and_linear():
    d = lia.Direction(20, 64)
    q = d(None)
    assert torch.allclose(q.T @ q, torch.eye(20), atol=1e-5)
    a = torch.randn(3, 20)
    assert torch.allclose(d(a), a @ q.T, atol=1e-5)
    # the official vox mode (target - start + source) equals the plain mode when source = start
    s = lia.Synthesis(64, 64, 20, channels={4: 8, 8: 8, 16: 8, 32: 8, 64: 8})
    wa = torch.randn(3, 64)
    assert torch.allclose(s.latent(wa, [a, a[:1].expand(3, -1), a[:1].expand(3, -1)]), s.latent(wa, [a]), atol=1e-5)


def test_generalised_sizes():
    assert [lia.base_resolution(s) for s in (64, 128, 256, 384, 320)] == [4, 4, 4, 3, 5]
    with pytest.raises(ConfigError):
        lia.base_resolution(100)
    with pytest.raises(ConfigError):
        lia.Generator(256, channel_multiplier=2)
    g = lia.Generator(96, 32, 20, channels={4: 8, 8: 8, 16: 8, 32: 8, 64: 4}).eval()
    assert g.dec.input.input.shape == (1, 8, 3, 3) and g.enc.net_app.convs[-1].weight.shape[-1] == 3
    assert len(g.dec.to_flows) == 5   # 6, 12, 24, 48, 96
    x = torch.rand(2, 3, 96, 96) * 2 - 1
    assert g(x, x).shape == (2, 3, 96, 96)


def test_round_trip_and_analysis(ckpt, fake_intra, tmp_path):
    K.analysis_shapes("lia", ckpt)
    c, _, _ = K.round_trip("lia", ckpt, tmp_path)
    assert "resample" not in c.provenance()["config"]["options"]


def test_resample_adaptation_records_and_codes_other_size(fake_intra, tmp_path):
    """A 64-px network under a 128-px condition codes by resampling (the default, as gfvc-human at 384 with the
    official 256-px checkpoints); with size_adaptation 'none' the size mismatch is refused in one line."""
    p = K.write_suite_checkpoint(tmp_path / "lia64.pt", "lia", tiny(64))
    c, _, _ = K.round_trip("lia", p, tmp_path)
    cfg = c.provenance()["config"]
    assert cfg["image_size"] == 128 and cfg["options"]["resample"] == {
        "network_size": 64, "coded_size": 128, "down": lia.RESAMPLE_DOWN, "up": lia.RESAMPLE_UP}
    strict = K.write_suite_checkpoint(tmp_path / "lia64-none.pt", "lia", tiny(64, "none"))
    with pytest.raises(ModelMismatch) as e:
        K.codec_for("lia", strict).check()
    assert "\n" not in str(e.value) and "64x64" in str(e.value)


def test_bad_files(ckpt, tmp_path):
    other = K.write_suite_checkpoint(tmp_path / "fomm.pt", "fomm", K.tiny_config("fomm"))
    with pytest.raises(ModelMismatch) as e:
        K.codec_for("lia", other).check()
    assert "\n" not in str(e.value) and "fomm" in str(e.value)
    cut = tmp_path / "truncated.pt"
    cut.write_bytes(ckpt.read_bytes()[: ckpt.stat().st_size // 2])
    with pytest.raises(ModelMismatch) as e:
        K.codec_for("lia", cut).check()
    assert "\n" not in str(e.value) and "truncated" in str(e.value)
    K.official_missing_key_refused("lia", tiny(), tmp_path)


def test_official_layout_gen_dict_is_read_strictly(tmp_path):
    """``{'gen': state_dict}`` without suite metadata is read with the official configuration: a tiny one is
    refused naming mis-shaped tensors; looks_like names it lia."""
    from model_parts import checkpoint as ck
    mods = K.random_modules("lia", tiny())
    p = tmp_path / "vox.pt"
    torch.save({"gen": mods["gen"].state_dict()}, p)
    assert ck.looks_like(torch.load(p, weights_only=True)) == ["lia"]
    with pytest.raises(ModelMismatch) as e:
        get_codec("lia")(K.codec_for("lia", p).condition.with_overrides(width=256, height=256),
                         Environment(models={"lia": str(p)})).check()
    assert "\n" not in str(e.value) and "other shapes" in str(e.value)


def test_stream_not_decodable_by_other_baseline(ckpt, fake_intra, tmp_path):
    _, res, _ = K.round_trip("lia", ckpt, tmp_path, frames=2)
    other = K.write_suite_checkpoint(tmp_path / "fomm.pt", "fomm", K.tiny_config("fomm"))
    K.stream_refused_by("lia", "fomm", other, res.bitstream, tmp_path)


@pytest.mark.isolated
def test_recipe_trains(tmp_path):
    from test_s2d_networks import write_tiny_data

    data = write_tiny_data(tmp_path / "data", size=64, videos=1, frames=4, vertices=False)
    s = K.train_steps("lia", tiny(64), data, tmp_path / "run")
    assert {"reconstruction", "perceptual", "adversarial", "d.logistic"} <= set(s["final_losses"])
    assert s["losses"]["optimizer"] == {"lr": 2e-3, "betas": [0.0, 0.99]} and "choices" in s["losses"]


def test_discriminator_minibatch_stddev():
    d = lia.Discriminator(64, channels={4: 8, 8: 8, 16: 8, 32: 8, 64: 8})
    assert d(torch.rand(6, 3, 64, 64)).shape == (6, 1)   # group shrinks to a divisor of the batch


@pytest.mark.slow
def test_official_width_random_file_codes_256_and_384(fake_intra, tmp_path):
    """Random state_dict with the official key set as {'gen': ...} (no suite meta): 256 px, and 384 px by
    resampling (the gfvc-human default)."""
    mods = K.random_modules("lia", get_codec("lia").official_config())
    p = tmp_path / "ted.pt"
    torch.save({"gen": mods["gen"].state_dict()}, p)
    K.round_trip("lia", p, tmp_path / "256", size=256, frames=2)
    c, _, frames = K.round_trip("lia", p, tmp_path / "384", size=384, frames=2)
    assert c.provenance()["config"]["options"]["resample"]["coded_size"] == 384
    assert np.isfinite(frames).all()


def test_recipe_flow_init_option():
    from model_parts.training import RECIPES

    zero = RECIPES.get("lia")(tiny(64)).build()["gen"]
    assert all(float(tf.conv.weight.detach().abs().sum()) == 0 for tf in zero.dec.to_flows)
    d = tiny(64).to_dict()
    d["options"]["train_flow_init"] = "official"
    off = RECIPES.get("lia")(BaselineConfig.from_dict(d)).build()["gen"]
    assert all(float(tf.conv.weight.detach().abs().sum()) > 0 for tf in off.dec.to_flows)
    d["options"]["train_flow_init"] = "bogus"
    with pytest.raises(ConfigError):
        RECIPES.get("lia")(BaselineConfig.from_dict(d)).build()
