"""The `s2d` codec: round trip with frames + vertices, typed errors for a missing or mismatched
checkpoint, a bitstream of another model and a video of the wrong size; the overlay helper and CLI.

The key frame goes through FakeIntra (test_generative) so these tests check the Sparse2Dense
adapter, not VVC; test_s2d_codec_real_vvenc runs the real key-frame coder once (4 frames).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from test_generative import demo_condition
from test_s2d_networks import moving_square_video, tiny_config_dict

from gfvc.codec import Environment, RatePoint, Sequence, get_codec
from gfvc.errors import InputError, ModelMismatch, NotAvailable
from model_parts.overlay import draw_vertices
from s2d_model.codec import S2DCodec
from s2d_model.config import config_from_dict
from s2d_model.networks import Sparse2Dense
from s2d_model.train import write_model_checkpoint


def _ckpt(path: Path, seed: int = 0, image_size: int = 128, name: str = "tiny128") -> Path:
    torch.manual_seed(seed)
    cfg = config_from_dict(tiny_config_dict(image_size, name))
    return write_model_checkpoint(Sparse2Dense(cfg).state_dict(), cfg, path, meta={"model_id": f"s2d-{name}"})


@pytest.fixture(scope="module")
def ckpt_a(tmp_path_factory) -> Path:
    return _ckpt(tmp_path_factory.mktemp("s2dck") / "a.pt", seed=0)


def _codec(ckpt: Path, **extra) -> S2DCodec:
    return S2DCodec(demo_condition(), Environment(extra={"s2d_checkpoint": str(ckpt), **extra}))


def _seq(n: int = 4, size: int = 128) -> Sequence:
    return Sequence("squares", moving_square_video(n, size), fps=25.0)


def test_registered_in_demo_condition():
    assert get_codec("s2d") is S2DCodec
    assert "s2d" in demo_condition().codecs
    assert S2DCodec.feature_dim == 45 and S2DCodec.quant_scale > 0


def test_round_trip_frames_and_vertices(fake_intra, ckpt_a, tmp_path):
    codec = _codec(ckpt_a)
    seq = _seq(4)
    res = codec.encode(seq, RatePoint(32), tmp_path / "enc")
    assert res.bitstream.stat().st_size * 8 == sum(res.bits_breakdown.values())
    assert res.bits_breakdown["features"] > 0
    dec = _codec(ckpt_a).decode(res.bitstream, tmp_path / "dec")  # a fresh codec instance decodes it
    assert dec.frames.shape == (4, 128, 128, 3) and dec.frames.dtype == np.uint8
    v = dec.extras["vertices"]
    assert v.shape == (4, 10475, 2) and v.dtype == np.float32 and np.isfinite(v).all()
    # frame 0 is the decoded key frame; inter frames come from the generator
    assert np.array_equal(dec.frames[0], seq.frames[0] // 8 * 8 + 4)
    # the decoder's features equal the encoder's: same bitstream decodes identically twice
    dec2 = codec.decode(res.bitstream, tmp_path / "dec2")
    assert np.array_equal(dec.frames, dec2.frames) and np.array_equal(v, dec2.extras["vertices"])
    prov = codec.provenance()
    assert prov["model_checksum"] == codec.model_checksum() and len(prov["model_checksum"]) == 64
    assert prov["config"] == "tiny128"
    # The vertex head is timed in every decode (key frame + 3 inter frames), with its device.
    rep = codec.decoder_report()
    assert rep["vertex_head_frames"] == 4 and rep["vertex_head_calls"] == 2 and rep["vertex_head_s"] > 0
    assert rep["vertex_head_device"] == "cpu" and rep["vertex_head_device_name"]
    assert S2DCodec.vertex_extra == "vertices"


def test_analyse_matches_detector(ckpt_a):
    codec = _codec(ckpt_a)
    f = moving_square_video(3, 128)
    feats = codec.analyse(f)
    assert feats.shape == (3, 45) and feats.dtype == np.float32
    assert np.abs(feats).max() <= 1.0
    frames, extras = codec.synthesise(f[0], feats[0], feats[1:])
    assert frames.shape == (2, 128, 128, 3) and extras["vertices"].shape == (2, 10475, 2)


def test_bitstream_of_another_model_is_refused(fake_intra, ckpt_a, tmp_path):
    res = _codec(ckpt_a).encode(_seq(3), RatePoint(42), tmp_path / "enc")
    other = _ckpt(tmp_path / "b.pt", seed=1)
    with pytest.raises(ModelMismatch):
        _codec(other).decode(res.bitstream, tmp_path / "dec")


def test_wrong_video_size_is_refused(fake_intra, ckpt_a, tmp_path):
    with pytest.raises(ModelMismatch, match="64x64.*128x128"):
        _codec(ckpt_a).encode(_seq(3, size=64), RatePoint(42), tmp_path / "enc")


def test_missing_and_mismatched_checkpoint(ckpt_a, tmp_path):
    with pytest.raises(NotAvailable, match="GFVC_S2D_CHECKPOINT"):
        _codec(tmp_path / "nope.pt").check()
    # a missing file named by --model is reported as coming from --model (not as the default's message)
    with pytest.raises(NotAvailable, match=r"nope2\.pt \(from --model\) not found"):
        S2DCodec(demo_condition(), Environment(models={"s2d": str(tmp_path / "nope2.pt")})).check()
    with pytest.raises(ModelMismatch, match="tiny128.*small|small.*tiny128"):
        _codec(ckpt_a, s2d_config="small").check()
    (tmp_path / "junk.pt").write_bytes(b"junk")
    with pytest.raises(ModelMismatch):
        _codec(tmp_path / "junk.pt").check()


def test_draw_vertices_and_overlay_cli(tmp_path):
    frames = np.zeros((2, 16, 20, 3), np.uint8)
    verts = np.array([[[-1.0, -1.0], [1.0, 1.0]], [[0.0, 0.0], [5.0, 5.0]]], np.float32)
    out = draw_vertices(frames, verts, alpha=1.0)
    assert tuple(out[0, 0, 0]) == (0, 255, 0) and tuple(out[0, 15, 19]) == (0, 255, 0)
    assert out[1].sum() == 255  # one in-frame vertex (centre); the other is outside and skipped
    assert frames.sum() == 0  # input untouched
    with pytest.raises(InputError, match="frames"):
        draw_vertices(frames, verts[:1])
    from gfvc.video import read_png_folder, write_png_folder
    from suite.cli.main import main

    write_png_folder(tmp_path / "in", np.full((2, 16, 20, 3), 40, np.uint8))
    np.save(tmp_path / "v.npy", verts)
    assert main(["s2d-overlay", "--video", str(tmp_path / "in"), "--vertices", str(tmp_path / "v.npy"),
                 "-o", str(tmp_path / "out")]) == 0
    got = read_png_folder(tmp_path / "out")
    assert got.shape == (2, 16, 20, 3) and (got[0] != 40).any()


def test_s2d_codec_real_vvenc(ckpt_a, tmp_path):
    """One real round trip through the VVenC key-frame coder (skips when ffmpeg/vvenc is unavailable)."""
    codec = _codec(ckpt_a)
    try:
        res = codec.encode(_seq(3), RatePoint(42), tmp_path / "enc")
    except NotAvailable as e:  # pragma: no cover
        pytest.skip(str(e))
    dec = codec.decode(res.bitstream, tmp_path / "dec")
    assert dec.frames.shape == (3, 128, 128, 3) and dec.extras["vertices"].shape == (3, 10475, 2)
    assert res.bits_breakdown["key_frame"] > 0


def test_demo_checkpoint_record_and_round_trip(fake_intra, tmp_path):
    """The committed CPU demo checkpoint: small, described by its record, decodes the demo clip."""
    import json

    from gfvc.video import sha256_file
    from s2d_model import DEMO_CHECKPOINT
    from test_conditions.demo import demo_frames

    assert DEMO_CHECKPOINT.is_file() and DEMO_CHECKPOINT.stat().st_size < 20e6
    rec = json.loads(DEMO_CHECKPOINT.with_suffix(".json").read_text())
    assert rec["sha256"] == sha256_file(DEMO_CHECKPOINT)
    assert "PROXY" in rec["data"]["vertex_note"] and "0..31" in rec["data"]["train_frames"]
    codec = S2DCodec(demo_condition(), Environment())
    assert codec.model_id() == "s2d-demo" and codec.resolution == (128, 128)
    assert codec.provenance()["training"]["perceptual"] == rec["perceptual_loss"]
    frames = demo_frames(0, 4)
    res = codec.encode(Sequence("carphone", frames, fps=30000 / 1001), RatePoint(22), tmp_path / "e")
    dec = codec.decode(res.bitstream, tmp_path / "d")
    assert dec.extras["vertices"].shape == (4, 10475, 2)
    mse = np.mean((dec.frames[1:].astype(float) - frames[1:]) ** 2)
    assert 10 * np.log10(255 ** 2 / mse) > 15.0  # a trained model, not noise


def test_runner_saves_vertices_overlay_for_inspection(tmp_path):
    """A demo s2d job keeps decoded.mp4, vertices.npy and vertices_overlay.mp4 (4 frames, one QP)."""
    import yaml

    from gfvc.codec import Environment
    from gfvc.video import read_container
    from suite.runner.plan import execute, plan_run
    from test_conditions import load_condition

    demo = load_condition("demo")
    d = demo.to_dict()
    d.update(frames=4, manifest=str(demo.manifest_path))
    d["generative"]["key_frame_qps"] = [32]
    d["metrics"]["names"] = ["psnr"]
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump(d))
    plan = plan_run(load_condition(p), tmp_path / "run", Environment(), codecs=["s2d"])
    (rec,) = execute(plan.jobs)
    assert rec["status"] == "ok", rec["error"]
    art = rec["artifacts"]
    verts = np.load(tmp_path / "run" / art["vertices"])
    assert verts.shape == (4, 10475, 2)
    frames, _ = read_container(tmp_path / "run" / art["vertices_overlay_mp4"])
    decoded, _ = read_container(tmp_path / "run" / art["decoded_mp4"])
    assert frames.shape == decoded.shape == (4, 128, 128, 3)
    assert np.abs(frames.astype(int) - decoded).mean() > 0.5  # the vertices are visible


def test_truncated_checkpoint_one_line_in_the_suites_words(tmp_path, capsys):
    """The s2d reader is the suite's torch-file reader: size, what the file is (not torch's text), the fix."""
    from s2d_model import DEMO_CHECKPOINT
    from suite.cli.main import main

    half = tmp_path / "half.pt"
    half.write_bytes(DEMO_CHECKPOINT.read_bytes()[:100_000])
    rc = main(["run", "--codec", "s2d", "--model", f"s2d={half}", "--workdir", str(tmp_path / "r"), "--no-report"])
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert rc == 2 and "(100000 bytes) cannot be read as a torch checkpoint" in err
    assert "export one with `gfvc train s2d" in err
    reason = err.split("cannot be read as a torch checkpoint: ", 1)[1].split(" (truncated copy", 1)[0]
    assert reason == "it is a damaged or truncated torch file (its zip archive is incomplete)", reason
    assert "weights_only" not in err and "PyTorch" not in err
