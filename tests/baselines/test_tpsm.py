"""TPSM: official key/shape listing, conformance, TPS solve, 106-value codec, bad files, recipe."""
from __future__ import annotations

from pathlib import Path

import kp_family as K
import pytest
import torch

from baselines import tpsm
from baselines.base import BaselineConfig
from gfvc.codec import get_codec


def tiny(size: int = 128) -> BaselineConfig:
    return K.tiny_config("tpsm", size)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    return K.write_suite_checkpoint(tmp_path_factory.mktemp("tpsm") / "tiny.pt", "tpsm", tiny())


def test_official_networks_match_listing():
    assert K.official_modules_match_listing("tpsm", "tpsm_ted384", skip=("avd_network",)) == [
        "kp_detector", "dense_motion_network", "inpainting_network", "bg_predictor"]


def test_resnet18_equals_torchvision():
    """Our ResNet-18 has torchvision's keys and computes what torchvision's does."""
    from torchvision.models import resnet18

    ref = resnet18(num_classes=100).eval()
    ours = tpsm.ResNet18(3, 100).eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    x = torch.rand(1, 3, 64, 64)
    assert torch.allclose(ours(x), ref(x), atol=1e-5)


def test_conformance_vector():
    K.conformance_passes("tpsm")


def test_codec_declares_values():
    c = get_codec("tpsm")
    assert c.feature_dim == 106 and c.quant_scale > 0 and c.official_config().image_size == 384
    assert c.named_configs()["demo"].options["resnet_width"] == 16
    vox = c.named_configs()["vox256"]
    assert vox.image_size == 256 and vox.modules == c.official_config().modules


def test_tps_interpolates_control_points():
    """The TPS maps each driving control point near its source point. The official solve adds 0.01*I to the
    whole system, the affine block included, so even kp -> kp is only approximately the identity (a few %
    shrink; the conformance vector pins the exact arithmetic)."""
    torch.manual_seed(0)
    kp_d = torch.rand(1, 3, 5, 2) * 1.6 - 0.8
    kp_s = kp_d + 0.05 * torch.randn(1, 3, 5, 2)
    warp = tpsm.TPSWarp(kp_d, kp_s)
    got = torch.stack([warp.warp_coordinates(kp_d[:, g])[:, g] for g in range(3)], dim=1)
    assert (got - kp_s).abs().max() < 0.02
    far = tpsm.TPSWarp(kp_d, kp_s + 0.5)
    moved = torch.stack([far.warp_coordinates(kp_d[:, g])[:, g] for g in range(3)], dim=1)
    assert ((moved - kp_d).mean() - 0.5).abs() < 0.1
    ident = tpsm.TPSWarp(kp_d, kp_d).grid(8, 8)
    from baselines.blocks import make_coordinate_grid

    assert (ident[0] - make_coordinate_grid((8, 8))).abs().max() < 0.25  # largest far from the points


def test_dropout_schedule():
    assert tpsm.tps_dropout(0) == (True, 0.0)
    assert tpsm.tps_dropout(5) == (True, 0.25)
    assert tpsm.tps_dropout(20) == (True, 0.5)
    assert tpsm.tps_dropout(35) == (False, 0.0)
    x = torch.randn(4, 11, 3, 3)
    y = tpsm.dropout_softmax(x, 0.5)
    assert torch.allclose(y.sum(1), torch.ones(4, 3, 3), atol=1e-4) and (y[:, 0] > 0).all()


def test_round_trip_and_analysis(ckpt, fake_intra, tmp_path):
    K.analysis_shapes("tpsm", ckpt)
    K.round_trip("tpsm", ckpt, tmp_path)


def test_bad_files(ckpt, tmp_path):
    other = K.write_suite_checkpoint(tmp_path / "fomm.pt", "fomm", K.tiny_config("fomm"))
    K.wrong_files_refused("tpsm", ckpt, "fomm", other, tmp_path)
    K.official_missing_key_refused("tpsm", tiny(), tmp_path)


def test_stream_not_decodable_by_other_baseline(ckpt, fake_intra, tmp_path):
    _, res, _ = K.round_trip("tpsm", ckpt, tmp_path, frames=2)
    other = K.write_suite_checkpoint(tmp_path / "mraa.pt", "mraa", K.tiny_config("mraa"))
    K.stream_refused_by("tpsm", "mraa", other, res.bitstream, tmp_path)


@pytest.mark.isolated
def test_recipe_trains(tmp_path, monkeypatch):
    """Official terms; the trainer clips gradients before each step and gives the run length (dropout phase)."""
    from test_s2d_networks import write_tiny_data

    seen: list[tuple[int, bool]] = []
    orig_clip, orig_losses = tpsm.TPSMRecipe.before_step, tpsm.TPSMRecipe.generator_losses

    def clip(self, modules):
        seen.append((self.total_steps, True))
        return orig_clip(self, modules)

    def losses(self, modules, batch, step):
        terms, cache = orig_losses(self, modules, batch, step)
        seen.append((step, cache["dropout_p"] >= 0))
        return terms, cache

    monkeypatch.setattr(tpsm.TPSMRecipe, "before_step", clip)
    monkeypatch.setattr(tpsm.TPSMRecipe, "generator_losses", losses)
    data = write_tiny_data(tmp_path / "data", size=64, videos=1, frames=4, vertices=False)
    s = K.train_steps("tpsm", tiny(64), data, tmp_path / "run")
    assert {"perceptual", "equivariance_value", "warp_loss", "bg", "weight_decay"} <= set(s["final_losses"])
    assert seen == [(0, True), (2, True), (1, True), (2, True)]
    rec = tpsm.TPSMRecipe(tiny(64))
    rec.total_steps = 100
    assert rec.epoch(0) == 0 and rec.epoch(34) == 34 and rec.epoch(99) == 99


def test_recipe_clips_gradients():
    from model_parts.training import RECIPES

    rec = RECIPES.get("tpsm")(tiny(64))
    mods = rec.build()
    for p in mods["kp_detector"].parameters():
        p.grad = torch.full_like(p, 50.0)
    rec.before_step(mods)
    assert max(p.grad.abs().max() for p in mods["kp_detector"].parameters()) <= 10.0 + 1e-4


@pytest.mark.slow
def test_official_width_random_file_codes_384(fake_intra, tmp_path):
    p = K.write_official_layout(tmp_path / "ted.pth.tar", "tpsm", get_codec("tpsm").official_config())
    K.round_trip("tpsm", p, tmp_path, size=384, frames=2)
