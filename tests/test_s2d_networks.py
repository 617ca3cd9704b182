"""Sparse2Dense networks and configs: shapes of every module, keypoint range, vertex shape,
parameter counts of the reference config, config validation. Other test_s2d_* modules
import the tiny-config/data helpers defined here."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import yaml


def tiny_config_dict(image_size: int = 64, name: str = "tiny") -> dict:
    return {
        "name": name, "image_size": image_size,
        "kp": {"num_kp": 15, "scale_factor": 0.25, "block_expansion": 8, "max_features": 32, "num_blocks": 2,
               "reshape_channels": 128, "reshape_depth": 4, "temperature": 0.1, "head_kernel": 3},
        "texture": {"block_expansion": 8, "num_down_blocks": 2, "max_features": 32, "feature_channels": 8,
                    "depth": 4, "num_resblocks": 1},
        "motion": {"block_expansion": 8, "max_features": 32, "num_blocks": 2, "compress": 4,
                   "mask_kernel": 3, "occlusion_kernel": 3},
        "generator": {"num_resblocks": 1},
        "vertex": {"num_vertices": 10475, "num_resblocks": 1, "channels": 16, "pool_size": 1},
        "discriminator": {"scales": [1.0], "block_expansion": 8, "max_features": 32, "num_blocks": 2},
        "train": {"batch": 2, "steps": 2, "log_every": 1, "checkpoint_every": 1},
    }


def write_tiny_config(tmp: Path, image_size: int = 64, name: str = "tiny", **changes) -> Path:
    d = tiny_config_dict(image_size, name)
    for sec, kv in changes.items():
        d[sec].update(kv)
    p = tmp / f"{name}.yaml"
    p.write_text(yaml.safe_dump(d))
    return p


def moving_square_video(n: int = 6, size: int = 64, seed: int = 0) -> np.ndarray:
    """A textured square moving over a gradient background: real motion, no external data."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    base = np.stack([xx * 255 // size, yy * 255 // size, np.full_like(xx, 90)], -1).astype(np.uint8)
    tex = rng.integers(0, 255, (size // 4, size // 4, 3), dtype=np.uint8)
    out = []
    for t in range(n):
        f = base.copy()
        y0, x0 = size // 4 + t, size // 4 + 2 * t
        f[y0:y0 + size // 4, x0:x0 + size // 4] = tex
        out.append(f)
    return np.stack(out)


def write_tiny_data(root: Path, size: int = 64, videos: int = 2, frames: int = 6, vertices: bool = True) -> Path:
    from gfvc.video import write_png_folder

    for v in range(videos):
        fr = moving_square_video(frames, size, seed=v)
        write_png_folder(root / "train" / f"vid{v}", fr)
        if vertices:
            (root / "vertices").mkdir(parents=True, exist_ok=True)
            rng = np.random.default_rng(v)
            np.save(root / "vertices" / f"vid{v}.npy", rng.uniform(-0.5, 0.5, (frames, 10475, 2)).astype(np.float32))
    return root


# ----------------------------------------------------------------------------- tests
import pytest  # noqa: E402
import torch  # noqa: E402

import s2d_model  # noqa: E402
from gfvc.errors import ConfigError, UnknownName  # noqa: E402
from s2d_model.config import config_from_dict, load_config  # noqa: E402
from s2d_model.networks import (  # noqa: E402
    KeypointDetector,
    MultiScaleDiscriminator,
    Sparse2Dense,
    SparseToDenseMotion,
    TextureEncoder,
    coordinate_grid,
    warp3d,
)


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    cfg = config_from_dict(tiny_config_dict())
    return cfg, Sparse2Dense(cfg).eval()


def test_module_shapes(tiny):
    cfg, m = tiny
    x = torch.rand(3, 3, 64, 64)
    with torch.no_grad():
        kp = m.kp_detector(x)
        assert kp.shape == (3, 15, 3)
        heat = m.kp_detector.heatmaps(x)
        assert heat.shape == (3, 15, 4, 16, 16)  # (N, K, D, H*s, W*s)
        feat = m.texture(x)
        assert feat.shape == (3, 8, 4, 16, 16)  # (N, C, D, H/4, W/4)
        mot = m.motion(feat, kp, kp.flip(0))
        assert mot["flow"].shape == (3, 4, 16, 16, 3)
        assert mot["mask"].shape == (3, 16, 4, 16, 16)
        assert torch.allclose(mot["mask"].sum(1), torch.ones(3, 4, 16, 16), atol=1e-5)
        assert mot["occlusion"].shape == (3, 1, 16, 16)
        assert 0 <= float(mot["occlusion"].min()) and float(mot["occlusion"].max()) <= 1
        out = m.synthesise(feat[:1], kp[:1], kp)
        assert out["prediction"].shape == (3, 3, 64, 64)
        assert out["vertices"].shape == (3, 10475, 2)
        d = MultiScaleDiscriminator(config_from_dict(dict(tiny_config_dict(), discriminator={
            "scales": [1.0, 0.5], "block_expansion": 8, "max_features": 32, "num_blocks": 2})))(out["prediction"])
        assert len(d) == 2 and d[0][1].shape[0] == 3 and len(d[0][0]) == 2


def test_keypoints_in_range_and_follow_content(tiny):
    _, m = tiny
    torch.manual_seed(1)
    x = torch.rand(4, 3, 64, 64)
    with torch.no_grad():
        kp = m.detect(x)
    assert torch.isfinite(kp).all()
    assert float(kp.abs().max()) <= 1.0
    # different images give different keypoints (the detector is not constant)
    assert float((kp[0] - kp[1]).abs().max()) > 1e-4


def test_identity_motion_is_identity_warp():
    """Equal source/driving keypoints make every sparse motion the identity: warping must not move content."""
    cfg = config_from_dict(tiny_config_dict())
    mot = SparseToDenseMotion(cfg).eval()
    feat = torch.rand(1, 8, 4, 16, 16)
    kp = torch.rand(1, 15, 3) * 1.6 - 0.8
    with torch.no_grad():
        flow = mot(feat, kp, kp)["flow"]
    grid = coordinate_grid(4, 16, 16)
    assert torch.allclose(flow[0], grid, atol=1e-5)
    assert torch.allclose(warp3d(feat, flow), feat, atol=1e-4)


def test_keypoint_shift_moves_flow():
    cfg = config_from_dict(tiny_config_dict())
    mot = SparseToDenseMotion(cfg).eval()
    feat = torch.rand(1, 8, 4, 16, 16)
    kp_s = torch.zeros(1, 15, 3)
    kp_d = kp_s + torch.tensor([0.2, 0.0, 0.0])
    with torch.no_grad():
        flow = mot(feat, kp_s, kp_d)["flow"]
    # all keypoint motions sample 0.2 to the left; the background motion does not: mean shift in (-0.2, 0)
    dx = float((flow[..., 0] - coordinate_grid(4, 16, 16)[..., 0]).mean())
    assert -0.2 - 1e-5 <= dx < -1e-4


def test_reference_config_parameter_counts():
    """CTC_FACTS 6: FV2V sizes at 384 px give ~42 M (keypoint detector) and ~53 M (generator)."""
    info = s2d_model.info("reference")
    p = info["parameters"]
    assert 38e6 < p["keypoint_detector"] < 46e6
    assert 48e6 < p["generator_total"] < 58e6
    assert info["values_per_inter_frame"] == 45
    assert info["vertex_shape"] == [10475, 2]
    assert info["image_size"] == [384, 384]
    small = s2d_model.info("small")
    assert small["image_size"] == [128, 128] and small["parameters"]["codec_total"] < 5e6


def test_config_errors(tmp_path):
    with pytest.raises(UnknownName, match="reference"):
        load_config("no-such-config")
    bad = tiny_config_dict()
    bad["kp"]["temprature"] = 0.1
    with pytest.raises(ConfigError, match="temprature"):
        config_from_dict(bad)
    bad = tiny_config_dict()
    bad["texture"]["feature_channels"] = 7
    with pytest.raises(ConfigError, match="feature_channels"):
        config_from_dict(bad)
    p = write_tiny_config(tmp_path)
    assert load_config(p).name == "tiny"
    a, b = config_from_dict(tiny_config_dict()), config_from_dict(tiny_config_dict(image_size=128))
    assert a.fingerprint() != b.fingerprint()
    lw = dict(tiny_config_dict(), loss={"vertex": 1.0})
    assert config_from_dict(lw).fingerprint() == a.fingerprint()  # loss weights do not change the architecture


def test_small_config_builds():
    cfg = load_config("small")
    m = Sparse2Dense(cfg).eval()
    with torch.no_grad():
        kp = KeypointDetector(cfg).eval()(torch.rand(1, 3, 128, 128))
        f = TextureEncoder(cfg).eval()(torch.rand(1, 3, 128, 128))
        out = m.synthesise(f, kp, kp)
    assert out["prediction"].shape == (1, 3, 128, 128) and out["vertices"].shape == (1, 10475, 2)
