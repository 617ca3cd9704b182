"""Checks shared by the FOMM / MRAA / TPSM test files (test_fomm.py, test_mraa.py, test_tpsm.py).

Each check takes the codec name and, where needed, a tiny configuration, so a
test file is a list of one-line calls; tiny widths keep the default run fast,
full-width networks are built on the ``meta`` device only.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from test_generative import demo_condition
from test_s2d_networks import moving_square_video

import baselines.registry  # noqa: F401  (registers the codecs, runners, recipes)
from baselines.base import BaselineConfig
from baselines.conformance import check_vector, shipped_vectors_dir
from baselines.listings import compare_to_listing, read_listing
from gfvc.codec import Environment, RatePoint, Sequence, get_codec
from model_parts import checkpoint as ck

TINY: dict[str, dict[str, Any]] = {
    "fomm": {
        "common_params": {"num_kp": 10, "num_channels": 3, "estimate_jacobian": True},
        "kp_detector_params": {"temperature": 0.1, "block_expansion": 4, "max_features": 16, "scale_factor": 0.25,
                               "num_blocks": 3},
        "generator_params": {"block_expansion": 4, "max_features": 16, "num_down_blocks": 2,
                             "num_bottleneck_blocks": 1, "estimate_occlusion_map": True,
                             "dense_motion_params": {"block_expansion": 4, "max_features": 16, "num_blocks": 3,
                                                     "scale_factor": 0.25}},
        "discriminator_params": {"scales": [1], "block_expansion": 4, "max_features": 16, "num_blocks": 4,
                                 "sn": True}},
    "mraa": {
        "num_regions": 10, "num_channels": 3, "estimate_affine": True, "revert_axis_swap": True,
        "bg_predictor_params": {"block_expansion": 4, "max_features": 16, "num_blocks": 5, "bg_type": "affine"},
        "region_predictor_params": {"temperature": 0.1, "block_expansion": 4, "max_features": 16,
                                    "scale_factor": 0.25, "num_blocks": 3, "pca_based": True, "pad": 0,
                                    "fast_svd": False},
        "generator_params": {"block_expansion": 4, "max_features": 16, "num_down_blocks": 2,
                             "num_bottleneck_blocks": 1, "skips": True,
                             "pixelwise_flow_predictor_params": {"block_expansion": 4, "max_features": 16,
                                                                 "num_blocks": 3, "scale_factor": 0.25,
                                                                 "use_deformed_source": True,
                                                                 "use_covar_heatmap": True,
                                                                 "estimate_occlusion_map": True}}},
    "tpsm": {
        "common_params": {"num_tps": 10, "num_channels": 3, "bg": True, "multi_mask": True},
        "generator_params": {"block_expansion": 4, "max_features": 16, "num_down_blocks": 3},
        "dense_motion_params": {"block_expansion": 4, "max_features": 16, "num_blocks": 3, "scale_factor": 0.25}},
}
TINY_OPTIONS: dict[str, dict[str, Any]] = {"tpsm": {"resnet_width": 4}}


def tiny_config(codec: str, size: int = 128) -> BaselineConfig:
    """Tiny widths of ``codec``'s architecture (official constructor kwargs, official YAML layout)."""
    import importlib

    mod = importlib.import_module(f"baselines.{codec}")
    return BaselineConfig(model=codec, image_size=size, modules=mod.modules_from_model_params(TINY[codec]),
                          options=dict(TINY_OPTIONS.get(codec, {})), name="tiny")


def official_modules_match_listing(codec: str, listing: str, skip: tuple[str, ...] = ()) -> list[str]:
    """Build every module of the official configuration on meta; compare with the official listing."""
    cls = get_codec(codec)
    ref = read_listing(listing)
    seen = []
    with torch.device("meta"):
        mods = cls.build_modules(cls.official_config())
    for name, m in mods.items():
        assert name in ref, f"{name} not in {listing}"
        assert compare_to_listing(m, ref[name]) == [], name
        seen.append(name)
    missing = [m for m in ref if m not in mods and m not in skip]
    assert not missing, f"official modules not built: {missing}"
    return seen


def conformance_passes(model: str) -> None:
    d = shipped_vectors_dir()
    res = check_vector(d / f"{model}.pt", d / f"{model}.json")
    bad = [(o.name, o.max_abs_diff, o.atol, o.note) for o in res.outputs if not o.passed]
    assert res.passed and not bad, bad
    assert len(res.outputs) >= 10


def random_modules(codec: str, cfg: BaselineConfig, seed: int = 0) -> dict[str, Any]:
    torch.manual_seed(seed)
    mods = get_codec(codec).build_modules(cfg)
    # make BN statistics and zero-initialised heads non-trivial, as a trained file would be
    with torch.no_grad():
        for m in mods.values():
            for name, p in m.named_parameters():
                if name.endswith("bias") or p.abs().max() == 0:
                    p.add_(torch.randn_like(p) * 0.01)
    return mods


def write_suite_checkpoint(path: Path, codec: str, cfg: BaselineConfig, seed: int = 0, fp16: bool = False) -> Path:
    cls = get_codec(codec)
    mods = random_modules(codec, cfg, seed)
    return ck.save_checkpoint(path, {k: mods[k] for k in cls.inference_modules},
                              {"model": codec, "config": cfg.to_dict(), "model_id": f"{codec}-test"}, fp16=fp16)


def write_official_layout(path: Path, codec: str, cfg: BaselineConfig, extra_modules: dict[str, Any] | None = None,
                          seed: int = 0) -> Path:
    """``{module: state_dict, ..., "epoch": 0}`` exactly as the official Logger.save_cpk writes (no suite meta)."""
    mods = random_modules(codec, cfg, seed)
    obj: dict[str, Any] = {k: m.state_dict() for k, m in mods.items()}
    obj.update(extra_modules or {})
    obj["epoch"] = 0
    torch.save(obj, path)
    return path


def codec_for(codec: str, ckpt: Path, size: int = 128) -> Any:
    cond = demo_condition()
    if size != cond.width:
        cond = cond.with_overrides(width=size, height=size)
    return get_codec(codec)(cond, Environment(models={codec: str(ckpt)}))


def round_trip(codec: str, ckpt: Path, tmp: Path, size: int = 128, frames: int = 3) -> tuple[Any, Any, np.ndarray]:
    """Encode a moving-square clip and decode it with a fresh codec instance; basic invariants."""
    c = codec_for(codec, ckpt, size)
    c.check()
    seq = Sequence("squares", moving_square_video(frames, size), fps=25.0)
    res = c.encode(seq, RatePoint(32), tmp / "enc")
    assert res.bits_breakdown["features"] > 0
    dec = codec_for(codec, ckpt, size).decode(res.bitstream, tmp / "dec")
    assert dec.frames.shape == (frames, size, size, 3) and dec.frames.dtype == np.uint8
    again = c.decode(res.bitstream, tmp / "dec2")
    assert np.array_equal(dec.frames, again.frames)
    assert c.provenance()["checkpoint_sha256"] == ck_sha(ckpt)
    return c, res, dec.frames


def ck_sha(path: Path) -> str:
    from gfvc.video import sha256_file

    return sha256_file(path)


def analysis_shapes(codec: str, ckpt: Path) -> None:
    """features() gives feature_dim values per frame; render() reproduces the key frame's own motion."""
    c = codec_for(codec, ckpt)
    f = moving_square_video(3, 128)
    kf = c._key_features(f[0])
    feats = c.analyse(f[1:])
    assert kf.shape == (c.feature_dim,) and feats.shape == (2, c.feature_dim) and feats.dtype == np.float32
    assert np.isfinite(feats).all()
    frames, _ = c.synthesise(f[0], kf, feats)
    assert frames.shape == (2, 128, 128, 3)


def wrong_files_refused(codec: str, good: Path, other_codec: str, other: Path, tmp: Path) -> None:
    """A checkpoint of another model, a truncated file, a file of another image size: one line each."""
    from gfvc.errors import ModelMismatch

    with pytest.raises(ModelMismatch) as e:
        codec_for(codec, other).check()
    msg = str(e.value)
    assert "\n" not in msg and other_codec in msg
    cut = tmp / "truncated.pt"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(ModelMismatch) as e:
        codec_for(codec, cut).check()
    assert "\n" not in str(e.value) and "truncated" in str(e.value)
    with pytest.raises(ModelMismatch) as e:
        codec_for(codec, good, size=64).check()
    assert "\n" not in str(e.value) and "128x128" in str(e.value)


def official_missing_key_refused(codec: str, cfg: BaselineConfig, tmp: Path) -> None:
    """An official-layout file with one key removed and one added names both."""
    from gfvc.errors import ModelMismatch

    cls = get_codec(codec)
    mods = random_modules(codec, cfg)
    obj: dict[str, Any] = {k: dict(m.state_dict()) for k, m in mods.items()}
    first = cls.inference_modules[0]
    dropped = sorted(obj[first])[0]
    del obj[first][dropped]
    obj[first]["extra.weight"] = torch.zeros(1)
    obj[ck.META_KEY] = {"format": ck.META_FORMAT, "model": codec, "config": cfg.to_dict()}
    p = tmp / "broken.pt"
    torch.save(obj, p)
    with pytest.raises(ModelMismatch) as e:
        codec_for(codec, p).check()
    msg = str(e.value)
    assert "\n" not in msg and dropped in msg and "extra.weight" in msg


def stream_refused_by(codec: str, other: str, other_ckpt: Path, bitstream: Path, tmp: Path) -> None:
    from gfvc.errors import BitstreamError, InputError, ModelMismatch

    with pytest.raises((ModelMismatch, BitstreamError, InputError)) as e:
        codec_for(other, other_ckpt).decode(bitstream, tmp / f"dec_{other}")
    assert "\n" not in str(e.value)


def train_steps(codec: str, cfg: BaselineConfig, data: Path, out: Path, steps: int = 2) -> dict[str, Any]:
    """A few optimiser steps of the codec's recipe: finite official loss terms that move the weights,
    and an exported inference file that the codec loads."""
    from model_parts.training import RECIPES, TrainOptions, export, train

    rec = RECIPES.get(codec)(cfg)
    torch.manual_seed(0)
    before = {k: {n: p.detach().clone() for n, p in m.named_parameters()} for k, m in rec.build().items()}
    s = train(rec, TrainOptions(data=data, out=out, steps=steps, batch=2, threads=1, progress=False,
                                checkpoint_every=100))
    assert s["steps"] == steps and all(np.isfinite(v) for v in s["final_losses"].values())
    st = torch.load(out / "checkpoint.pth.tar", map_location="cpu", weights_only=False)
    moved = [k for k in get_codec(codec).inference_modules
             if any(not torch.equal(before[k][n], st[k][n]) for n in before[k])]
    assert moved == list(get_codec(codec).inference_modules)
    # the exported inference file (fp16) codes through the codec
    path = export(out / "checkpoint.pth.tar", out / "export.pt", codec, get_codec(codec).inference_modules, fp16=True)
    c = codec_for(codec, path, cfg.image_size)
    clip = moving_square_video(2, cfg.image_size)
    kf = c._key_features(clip[0])
    frames, _ = c.synthesise(clip[0], kf, c.analyse(clip[1:]))
    assert frames.shape == (1, cfg.image_size, cfg.image_size, 3)
    return s
