"""IHVC: configurations, mesh motion field, SPADE motion, codec (learned and parameter-file estimators, key row,
vertices), the suite's checkpoint layout and its errors, foreign streams, the training recipe."""
from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch
from test_generative import demo_condition
from test_s2d_networks import moving_square_video

import baselines.registry  # noqa: F401  (registers the codecs)
from baselines import body_model as bm
from baselines import ihvc
from baselines.base import BaselineConfig
from gfvc import container, entropy
from gfvc.codec import Environment, RatePoint, Sequence, get_codec
from gfvc.errors import BitstreamError, InputError, ModelMismatch, NotAvailable
from model_parts import checkpoint as ck

SIZE = 64
LAYOUT = bm.get_layout(bm.DEFAULT_LAYOUT)


def tiny(size: int = SIZE, **options) -> BaselineConfig:
    return ihvc._config("tiny", size,
                        {"block_expansion": 4, "max_features": 8, "num_down_blocks": 2, "num_bottleneck_blocks": 1},
                        {"block_expansion": 4, "num_blocks": 1, "spade_hidden": 4},
                        {"block_expansion": 4, "num_blocks": 2, "max_features": 8, "hidden": 8},
                        {"block_expansion": 4, "max_features": 8, "num_blocks": 2, "sn": True}, **options)


def random_modules(cfg: BaselineConfig, seed: int = 0) -> dict[str, torch.nn.Module]:
    torch.manual_seed(seed)
    mods = ihvc.IhvcCodec.build_modules(cfg)
    with torch.no_grad():  # a trained file has no zero heads
        for m in mods.values():
            for p in m.parameters():
                if p.abs().max() == 0:
                    p.add_(torch.randn_like(p) * 0.01)
        # the estimator's output near the PROXY reference pose keeps the mesh in view
        mods["estimator"].fc2.bias.copy_(bm.reference_vector(bm.proxy_mesh(LAYOUT))[0])
    return mods


def write_ckpt(path: Path, cfg: BaselineConfig | None = None, seed: int = 0, fp16: bool = False) -> Path:
    cfg = cfg or tiny()
    mods = random_modules(cfg, seed)
    return ck.save_checkpoint(path, mods, {"model": "ihvc", "config": cfg.to_dict(), "model_id": "ihvc-test"},
                              fp16=fp16)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    return write_ckpt(tmp_path_factory.mktemp("ihvc") / "tiny.pt")


def codec_for(path: Path, size: int = SIZE, **extra) -> object:
    cond = demo_condition().with_overrides(width=size, height=size)
    return get_codec("ihvc")(cond, Environment(models={"ihvc": str(path)}, extra=dict(extra)))


def clip(frames: int = 4) -> Sequence:
    return Sequence("squares", moving_square_video(frames, SIZE), fps=25.0)


# ----------------------------------------------------------------------------- configurations
def test_codec_declaration_and_configs():
    c = get_codec("ihvc")
    assert c.feature_dim == 31 and c.sends_key_features and c.inference_modules == ("estimator", "generator")
    assert set(c.named_configs()) == {"official", "smplx", "demo"}
    off, demo = c.official_config(), c.named_configs()["demo"]
    assert off.image_size == 384 and demo.image_size == 128 and off.options["mesh"] == "proxy"
    assert off.options["mesh_fingerprint"] == bm.proxy_mesh(LAYOUT).fingerprint
    assert c.named_configs()["smplx"].options["mesh_fingerprint"] is None  # pinned by the recipe from the file
    counts = c.parameter_counts(off)  # meta device
    assert counts["generator"] > 5e6 and counts["estimator"] > 1e6
    assert ihvc.info("demo")["components"] == LAYOUT.names()


def test_unknown_or_unimplemented_options_are_refused():
    with pytest.raises(ModelMismatch, match="unknown options"):
        ihvc.IhvcCodec.build_modules(tiny(colour="blue"))
    with pytest.raises(ModelMismatch, match="not implemented"):
        ihvc.IhvcCodec.build_modules(tiny(splat="nearest"))
    bad = tiny().to_dict()
    bad["modules"]["estimator"]["dim"] = 30
    with pytest.raises(ModelMismatch, match="estimator dim 30"):
        ihvc.IhvcCodec.build_modules(BaselineConfig.from_dict(bad))


# ----------------------------------------------------------------------------- motion
def test_splat_of_a_uniform_shift_is_that_shift_where_covered():
    g = torch.Generator().manual_seed(0)
    drv = torch.rand(1, 4000, 2, generator=g) - 0.5          # vertices in the centre of the frame
    src = drv + torch.tensor([0.1, -0.05])
    flow, cover = ihvc.splat_motion(src, drv, (16, 16))
    inside = cover[0, 0] > 0.5
    assert inside.sum() > 40 and cover[0, 0, 0, 0] == 0 and cover.max() <= 1
    assert torch.allclose(flow[0, 0][inside], torch.tensor(0.1), atol=1e-5)
    assert torch.allclose(flow[0, 1][inside], torch.tensor(-0.05), atol=1e-5)
    src.requires_grad_(True)
    ihvc.splat_motion(src, drv, (16, 16))[0].sum().backward()
    assert src.grad.abs().sum() > 0


def test_same_vectors_give_the_identity_motion_at_initialisation():
    cfg = tiny()
    gen = ihvc.IhvcCodec.build_modules(cfg)["generator"].attach_mesh(ihvc.mesh_for(cfg)).eval()
    ref = bm.reference_vector(gen.mesh).expand(2, -1)
    with torch.no_grad():
        out = gen(torch.rand(2, 3, SIZE, SIZE), ref, ref)
    grid = ihvc.B.make_coordinate_grid((SIZE // 4, SIZE // 4))
    assert torch.allclose(out["sparse_motion"], torch.zeros(1)) and torch.allclose(out["deformation"][0], grid)
    assert out["prediction"].shape == (2, 3, SIZE, SIZE) and out["vertices_driving"].shape == (2, bm.NUM_VERTICES, 2)
    assert torch.equal(out["vertices_source"], out["vertices_driving"])


def test_spade_modulates_by_the_condition():
    s = ihvc.SPADE(4, 3, hidden=4)
    x = torch.randn(1, 4, 8, 8)
    a, b = s(x, torch.zeros(1, 3, 8, 8)), s(x, torch.ones(1, 3, 4, 4))  # condition resized to x
    assert a.shape == x.shape and not torch.allclose(a, b)


# ----------------------------------------------------------------------------- codec
def test_round_trip_learned_estimator_with_key_row_and_vertices(ckpt, fake_intra, tmp_path):
    c = codec_for(ckpt)
    c.check()
    seq = clip(4)
    res = c.encode(seq, RatePoint(32), tmp_path / "enc")
    assert res.info["estimator"] == "learned" and "APPROXIMATION (not OSX)" in res.info["estimator_label"]
    hd = container.read(res.bitstream)
    q = entropy.feature_coder_by_id(hd.header.feature_coder).decode(hd.feature_payload, 4, 31)  # T rows: key too
    recon = entropy.dpcm_decode(q, np.zeros(31, np.float32), c.quant_scale)
    exact = c.analyse(seq.frames)
    assert np.abs(recon - exact).max() <= 0.5 / c.quant_scale + 1e-6  # row 0 = the source frame 0's vector
    dec = codec_for(ckpt).decode(res.bitstream, tmp_path / "dec")
    assert dec.frames.shape == (4, SIZE, SIZE, 3) and dec.frames.dtype == np.uint8
    v = dec.extras["vertices"]
    assert v.shape == (4, bm.NUM_VERTICES, 2) and v.dtype == np.float32 and np.isfinite(v).all()
    with torch.no_grad():  # the key frame's vertices are the mesh at the decoded key vector
        expect = c.nets["generator"].vertices(torch.from_numpy(recon[:1]))
    assert np.allclose(v[0], expect.numpy(), atol=1e-5)
    assert np.array_equal(dec.frames, c.decode(res.bitstream, tmp_path / "dec2").frames)
    prov = c.provenance()
    assert prov["ihvc"]["estimator"]["kind"] == "learned" and "PROXY" in prov["ihvc"]["vertices"]


def test_parameter_file_estimator_sends_the_files_vectors(ckpt, fake_intra, tmp_path):
    seq = clip(4)
    vec = np.tile(bm.reference_vector(bm.proxy_mesh(LAYOUT)).numpy(), (4, 1))
    vec[:, 1] += np.linspace(0, 0.1, 4)  # the body moves right
    bm.write_params(tmp_path / "params" / "squares.npz", bm.vectors_to_params(vec, LAYOUT, "osx"))
    c = codec_for(ckpt, ihvc_params=str(tmp_path / "params"))
    res = c.encode(seq, RatePoint(32), tmp_path / "enc")
    assert res.info["estimator"] == "params-file" and res.info["osx"] is True
    assert res.info["params_declared_source"] == "osx" and len(res.info["params_sha256"]) == 64
    hd = container.read(res.bitstream)
    q = entropy.feature_coder_by_id(hd.header.feature_coder).decode(hd.feature_payload, 4, 31)
    recon = entropy.dpcm_decode(q, np.zeros(31, np.float32), c.quant_scale)
    assert np.abs(recon - vec).max() <= 0.5 / c.quant_scale + 1e-5
    dec = codec_for(ckpt).decode(res.bitstream, tmp_path / "dec")  # the decoder needs no parameter file
    xs = dec.extras["vertices"][:, :, 0].mean(1)
    assert np.allclose(np.diff(xs), 0.1 / 3, atol=2 / c.quant_scale)
    prov = c.provenance()["ihvc"]["estimator"]
    assert prov["kind"] == "params-file" and list(prov["files_sha256"]) == ["squares"]
    # a file that does not cover the sequence, or none at all: one-line errors before any coding
    bm.write_params(tmp_path / "short" / "squares.npz", bm.vectors_to_params(vec[:2], LAYOUT, "osx"))
    with pytest.raises(InputError, match="2 frames, the sequence has 4"):
        codec_for(ckpt, ihvc_params=str(tmp_path / "short")).encode(seq, RatePoint(32), tmp_path / "e2")
    with pytest.raises(NotAvailable, match="squares.npz"):
        codec_for(ckpt, ihvc_params=str(tmp_path / "none")).encode(seq, RatePoint(32), tmp_path / "e3")


def test_suite_checkpoint_layout_strict_round_trip(ckpt, tmp_path):
    st = ck.read_checkpoint(ckpt, "ihvc", ihvc.IhvcCodec.inference_modules)
    assert st.meta["model"] == "ihvc" and BaselineConfig.from_dict(st.meta["config"]).fingerprint() == \
        tiny().fingerprint()
    mods = ihvc.IhvcCodec.build_modules(tiny())
    for name in ihvc.IhvcCodec.inference_modules:
        ck.load_strict(mods[name], ck.as_float32(st.modules[name]), model="ihvc", name=name, source=str(ckpt))
        ref = random_modules(tiny())[name].state_dict()
        assert all(torch.equal(ref[k], v) for k, v in mods[name].state_dict().items())
    assert ck.looks_like(torch.load(ckpt, weights_only=True)) == ["ihvc"]
    half = write_ckpt(tmp_path / "half.pt", fp16=True)  # fp16 demo files load too
    codec_for(half).load()


def test_broken_wrong_and_foreign_files_are_refused(ckpt, tmp_path):
    obj = torch.load(ckpt, weights_only=True)
    gen = dict(obj["generator"])
    gone = "dense_motion_network.flow.weight"
    del gen[gone]
    gen["extra.weight"] = torch.zeros(1)
    torch.save({**obj, "generator": gen}, tmp_path / "edited.pt")
    with pytest.raises(ModelMismatch) as e:
        codec_for(tmp_path / "edited.pt").check()
    assert "\n" not in str(e.value) and gone in str(e.value) and "extra.weight" in str(e.value)
    wide = write_ckpt(tmp_path / "wide.pt", tiny())
    obj = torch.load(wide, weights_only=True)
    obj["gfvc"]["config"]["modules"]["generator"]["block_expansion"] = 8
    torch.save(obj, tmp_path / "wrongcfg.pt")
    with pytest.raises(ModelMismatch, match="tensors of other shapes"):
        codec_for(tmp_path / "wrongcfg.pt").check()
    cut = tmp_path / "cut.pt"
    cut.write_bytes(ckpt.read_bytes()[: ckpt.stat().st_size // 2])
    with pytest.raises(ModelMismatch, match="truncated"):
        codec_for(cut).check()
    with pytest.raises(ModelMismatch, match="works at 64x64"):
        codec_for(ckpt, size=128).check()
    pinned = tiny(mesh_fingerprint="0123456789abcdef")
    p = ck.save_checkpoint(tmp_path / "pinned.pt", random_modules(tiny()),
                           {"model": "ihvc", "config": pinned.to_dict()})
    with pytest.raises(ModelMismatch, match="not the one the model was trained with"):
        codec_for(p).check()
    # another model's checkpoint is named
    fomm_like = {"kp_detector": {"predictor.encoder.down_blocks.0.conv.weight": torch.zeros(1)},
                 "generator": {"first.conv.weight": torch.zeros(1)},
                 "gfvc": {"format": ck.META_FORMAT, "model": "fomm"}}
    torch.save(fomm_like, tmp_path / "fomm.pt")
    with pytest.raises(ModelMismatch) as e:
        codec_for(tmp_path / "fomm.pt").check()
    assert "fomm" in str(e.value) and "\n" not in str(e.value)


def test_stream_of_ihvc_is_refused_by_other_codecs(ckpt, fake_intra, tmp_path):
    res = codec_for(ckpt).encode(clip(3), RatePoint(32), tmp_path / "enc")
    other = write_ckpt(tmp_path / "other.pt", seed=1)  # another IHVC checkpoint: checksum differs
    with pytest.raises(ModelMismatch) as e:
        codec_for(other).decode(res.bitstream, tmp_path / "d1")
    assert "\n" not in str(e.value)
    cond = demo_condition().with_overrides(width=SIZE, height=SIZE)
    with pytest.raises((ModelMismatch, BitstreamError)) as e:
        get_codec("keyframe-repeat")(cond).decode(res.bitstream, tmp_path / "d2")
    assert "\n" not in str(e.value) and "ihvc" in str(e.value)


# ----------------------------------------------------------------------------- training
def write_data(root: Path, frames: int = 5, with_params: bool = True) -> Path:
    from gfvc.video import write_png_folder

    write_png_folder(root / "train" / "vid", moving_square_video(frames, SIZE))
    if with_params:
        vec = np.tile(bm.reference_vector(bm.proxy_mesh(LAYOUT)).numpy(), (frames, 1))
        vec[:, 1] += np.linspace(0, 0.05, frames)
        bm.write_params(root / bm.PARAMS_DIR / "vid.npz", bm.vectors_to_params(vec, LAYOUT, "PROXY:test"))
    return root


def test_dataset_carries_mirrored_vectors(tmp_path):
    data = ihvc.IhvcPairDataset(write_data(tmp_path), SIZE, LAYOUT)
    rng = random.Random(3)
    b = data.batch(rng, 6, hflip=True)
    assert b["source_vec"].shape == (6, 31) and b["driving_vec"].dtype == torch.float32
    tx = b["driving_vec"][:, 1]
    assert (tx < 0).any() and (tx > 0).any()  # flipped samples have mirrored camera tx
    d = data.describe()
    assert d["ihvc_targets"]["vid"]["source"] == "PROXY:test" and d["ihvc_targets"]["vid"]["osx"] is False
    with pytest.raises(InputError, match="proxy-targets"):
        ihvc.IhvcPairDataset(write_data(tmp_path / "nop", with_params=False), SIZE, LAYOUT)


@pytest.mark.isolated
def test_recipe_trains_estimator_and_generator(tmp_path):
    from model_parts.training import RECIPES, TrainOptions, train

    cfg = tiny()
    rec = RECIPES.get("ihvc")(cfg)
    torch.manual_seed(0)
    before = {k: {n: p.detach().clone() for n, p in m.named_parameters()} for k, m in rec.build().items()}
    s = train(rec, TrainOptions(data=write_data(tmp_path / "d"), out=tmp_path / "out", steps=2, batch=2, threads=1,
                                progress=False, checkpoint_every=100))
    assert s["steps"] == 2 and all(np.isfinite(v) for v in s["final_losses"].values())
    assert {"perceptual", "distortion", "estimator", "gen_gan", "feature_matching"} <= set(s["final_losses"])
    info = s["losses"]
    assert info["mesh"]["kind"] == "proxy" and "APPROXIMATION" in info["estimator"]
    assert info["perceptual"]["fallback"] == (info["perceptual"]["name"] == "pixel-pyramid-l1")
    assert s["data"]["ihvc_targets"]["vid"]["source"] == "PROXY:test"
    st = torch.load(tmp_path / "out" / "checkpoint.pth.tar", map_location="cpu", weights_only=False)
    for k in ("estimator", "generator", "discriminator"):
        assert any(not torch.equal(before[k][n], st[k][n]) for n in before[k]), k
    # the exported inference file works in the codec
    from model_parts.training import export

    p = export(tmp_path / "out" / "checkpoint.pth.tar", tmp_path / "ihvc.pt", "ihvc", rec.inference_modules())
    c = codec_for(p)
    c.check()
    assert "PROXY:test" in c.provenance()["ihvc"]["estimator"]["label"]


@pytest.mark.slow
def test_official_config_codes_a_short_clip_at_384(fake_intra, tmp_path):
    """The full-size configuration (random weights, suite layout) at the human CTC's 384x384."""
    p = write_ckpt(tmp_path / "official.pt", ihvc.reference_config())
    c = codec_for(p, size=384)
    c.check()
    seq = Sequence("squares", moving_square_video(2, 384), fps=25.0)
    res = c.encode(seq, RatePoint(32), tmp_path / "enc")
    dec = codec_for(p, size=384).decode(res.bitstream, tmp_path / "dec")
    assert dec.frames.shape == (2, 384, 384, 3) and dec.extras["vertices"].shape == (2, bm.NUM_VERTICES, 2)


def test_committed_demo_checkpoint_and_record():
    """The demo file is the default checkpoint, matches its record and says what its estimator approximates."""
    import json

    from baselines.base import CHECKPOINT_DIR
    from gfvc.video import sha256_file

    p = CHECKPOINT_DIR / "ihvc-demo.pt"
    rec = json.loads((CHECKPOINT_DIR / "ihvc-demo.json").read_text())
    assert rec["sha256"] == sha256_file(p) and rec["bytes"] == p.stat().st_size < 10_000_000
    c = get_codec("ihvc")(demo_condition())
    c.check()
    assert c.choice.source == "default" and c.model_id() == "ihvc-demo" and c.config().name == "demo"
    label = c.provenance()["ihvc"]["estimator"]["label"]
    assert "PROXY" in label and "not OSX" in label
    assert "PROXY" in rec["data"]["targets"] and rec["demo_check"]["psnr_keyframe_repeat"] > 0
