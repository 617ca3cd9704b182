"""GenerativeCodec template: encode/decode, feature coders, checks, keyframe-repeat.

Most tests replace anchors.intra with a fast lossless-ish fake (FakeIntra) so they
test the framework, not VVC; test_real_intra_* run the real vvenc path.
Other test modules import FakeIntra / ToyColour / demo_condition from here.
"""
from __future__ import annotations

import hashlib
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest

import anchors.intra
from gfvc import container
from gfvc.codec import RatePoint, Sequence
from gfvc.codecs.keyframe_repeat import KeyframeRepeat
from gfvc.errors import BitstreamError, ModelMismatch
from gfvc.generative import GenerativeCodec
from test_conditions import Condition, load_condition


def demo_condition(feature_coder: str = "cabac") -> Condition:
    cond = load_condition("demo")
    g = cond.to_dict()["generative"]
    g["feature_coder"] = feature_coder
    return cond.with_overrides(generative=g)


class FakeIntra:
    """Stand-in for anchors.intra: 'codes' a frame by dropping 3 LSBs and zlib."""

    MAGIC = b"FAKEVVC"

    def __init__(self) -> None:
        self.calls: list[str] = []

    def encode_intra(self, frame, qp, *, coder, chroma, condition, env, workdir):
        self.calls.append("encode")
        h, w = frame.shape[:2]
        payload = self.MAGIC + struct.pack("<HHB", w, h, qp) + zlib.compress((frame // 8 * 8 + 4).tobytes())
        return anchors.intra.IntraResult(payload=payload, commands=[["fake-vvenc", "-qp", str(qp)]])

    def decode_intra(self, payload, *, width, height, coder, chroma, condition, env, workdir):
        self.calls.append("decode")
        if not payload.startswith(self.MAGIC):
            raise BitstreamError("fake intra: not a fake VVC payload")
        w, h, _ = struct.unpack("<HHB", payload[7:12])
        try:
            raw = zlib.decompress(payload[12:])
        except zlib.error as e:
            raise BitstreamError(f"fake intra: {e}") from None
        if len(raw) != w * h * 3:
            raise BitstreamError("fake intra: wrong size")
        return np.frombuffer(raw, np.uint8).reshape(h, w, 3).copy()

    def intra_provenance(self, coder, condition, env):
        return {"coder": "fake"}


class ToyColour(GenerativeCodec):
    """A tiny generative codec: features = per-frame mean and std of R, G, B (in [0, 1])."""

    name = "toy-colour"
    description = "test codec"
    feature_dim = 6
    quant_scale = 64.0
    checkpoint = b"toy-colour weights v1"

    def model_id(self) -> str:
        return "toy-colour-v1"

    def model_checksum(self) -> str:
        return hashlib.sha256(self.checkpoint).hexdigest()

    def load(self) -> None:
        self.loaded = True

    def analyse(self, frames: np.ndarray) -> np.ndarray:
        f = frames.astype(np.float32) / 255.0
        return np.concatenate([f.mean(axis=(1, 2)), f.std(axis=(1, 2))], axis=1).astype(np.float32)

    def synthesise(self, key_frame, key_features, features):
        k = key_frame.astype(np.float32) / 255.0
        z = (k - key_features[:3]) / np.maximum(key_features[3:], 1e-3)
        out = z[None] * features[:, None, None, 3:] + features[:, None, None, :3]
        frames = np.clip(np.rint(out * 255.0), 0, 255).astype(np.uint8)
        return frames, {"colour": features.copy()}

    def key_extras(self, key_frame, key_features):
        return {"colour": key_features[None].copy()}


def _sequence(t: int = 9, h: int = 32, w: int = 48, seed: int = 0) -> Sequence:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (h, w, 3)).astype(np.float32)
    frames = [np.clip(base * (0.8 + 0.03 * i) + 5 * i, 0, 255) for i in range(t)]
    return Sequence("toy", np.stack(frames).astype(np.uint8), fps=25.0)


@pytest.mark.parametrize("coder", ["cabac", "gfvc-reference"])
def test_toy_codec_roundtrip(tmp_path: Path, fake_intra: FakeIntra, coder: str) -> None:
    codec = ToyColour(demo_condition(coder))
    seq = _sequence()
    res = codec.encode(seq, RatePoint(32), tmp_path / "enc")
    size = res.bitstream.stat().st_size
    assert sum(res.bits_breakdown.values()) == 8 * size
    assert res.bits_breakdown["features"] > 0 and res.commands == [["fake-vvenc", "-qp", "32"]]
    hd = container.peek(res.bitstream)
    assert (hd.codec, hd.model_id, hd.frames, hd.width, hd.height) == ("toy-colour", "toy-colour-v1", 9, 48, 32)
    assert hd.feature_coder == (1 if coder == "cabac" else 2) and hd.key_qp == 32
    dec = codec.decode(res.bitstream, tmp_path / "dec")
    assert dec.frames.shape == seq.frames.shape and dec.frames.dtype == np.uint8
    key = fake_intra.decode_intra(container.read(res.bitstream).key_payload, width=48, height=32, coder="",
                                  chroma="", condition=None, env=None, workdir=None)
    assert np.array_equal(dec.frames[0], key)
    # decoder features = closed-loop reconstruction of the true features (error <= half a step)
    true = codec.analyse(seq.frames)
    assert dec.extras["colour"].shape == (9, 6)
    assert np.abs(dec.extras["colour"][1:] - true[1:]).max() <= 0.5 / 64 + 1e-6
    # the synthesised frames follow the colour changes (better than repeating the key frame)
    err_syn = np.abs(dec.frames[1:].astype(float) - seq.frames[1:]).mean()
    err_rep = np.abs(key[None].astype(float) - seq.frames[1:]).mean()
    assert err_syn < 0.5 * err_rep


def test_decoding_is_deterministic(tmp_path: Path, fake_intra: FakeIntra) -> None:
    codec = ToyColour(demo_condition())
    res = codec.encode(_sequence(), RatePoint(22), tmp_path)
    a = codec.decode(res.bitstream, tmp_path / "a")
    b = ToyColour(demo_condition()).decode(res.bitstream, tmp_path / "b")
    assert np.array_equal(a.frames, b.frames) and np.array_equal(a.extras["colour"], b.extras["colour"])


def test_keyframe_repeat(tmp_path: Path, fake_intra: FakeIntra) -> None:
    cond = demo_condition()
    codec = KeyframeRepeat(cond)
    assert [r.qp for r in codec.rate_points()] == list(cond.generative.key_frame_qps)
    seq = _sequence(t=5)
    res = codec.encode(seq, RatePoint(52), tmp_path)
    assert res.bits_breakdown["features"] == 0
    assert sum(res.bits_breakdown.values()) == 8 * res.bitstream.stat().st_size
    dec = codec.decode(res.bitstream, tmp_path / "d")
    assert dec.frames.shape == seq.frames.shape and dec.extras == {}
    assert all(np.array_equal(f, dec.frames[0]) for f in dec.frames)
    from gfvc.codec import CODECS

    assert CODECS.get("keyframe-repeat") is KeyframeRepeat  # registered by its decorator
    p = codec.provenance()
    assert p["model_id"] == "keyframe-repeat" and p["feature_dim"] == 0 and p["family"] == "generative"
    assert p["feature_coder"]["name"] == "cabac" and p["key_frame"]["intra"] == {"coder": "fake"}


def test_single_frame_sequence(tmp_path: Path, fake_intra: FakeIntra) -> None:
    codec = ToyColour(demo_condition())
    seq = _sequence(t=1)
    res = codec.encode(seq, RatePoint(42), tmp_path)
    assert res.bits_breakdown["features"] == 0
    dec = codec.decode(res.bitstream, tmp_path / "d")
    assert dec.frames.shape == (1, 32, 48, 3) and dec.extras["colour"].shape == (1, 6)


def test_other_model_or_codec_is_model_mismatch(tmp_path: Path, fake_intra: FakeIntra) -> None:
    res = ToyColour(demo_condition()).encode(_sequence(), RatePoint(42), tmp_path)

    class Retrained(ToyColour):
        checkpoint = b"toy-colour weights v2"

    with pytest.raises(ModelMismatch, match="checkpoint the stream was encoded with"):
        Retrained(demo_condition()).decode(res.bitstream, tmp_path / "d")
    with pytest.raises(ModelMismatch, match="written by codec 'toy-colour'"):
        KeyframeRepeat(demo_condition()).decode(res.bitstream, tmp_path / "d")


def test_resolution_checks(tmp_path: Path, fake_intra: FakeIntra) -> None:
    class Fixed(ToyColour):
        resolution = (64, 64)

    with pytest.raises(ModelMismatch, match="works at 64x64"):
        Fixed(demo_condition()).encode(_sequence(), RatePoint(42), tmp_path)
    res = ToyColour(demo_condition()).encode(_sequence(), RatePoint(42), tmp_path)
    with pytest.raises(ModelMismatch, match="48x32"):
        Fixed(demo_condition()).decode(res.bitstream, tmp_path / "d")

    class WrongSize(ToyColour):
        def synthesise(self, key_frame, key_features, features):
            frames, extras = super().synthesise(key_frame, key_features, features)
            return frames[:, :16], extras

    with pytest.raises(ModelMismatch, match="resolution"):
        WrongSize(demo_condition()).decode(res.bitstream, tmp_path / "d")


def test_corrupt_stream_fails_before_model_work(tmp_path: Path, fake_intra: FakeIntra) -> None:
    codec = ToyColour(demo_condition())
    res = codec.encode(_sequence(), RatePoint(42), tmp_path)
    data = bytearray(res.bitstream.read_bytes())
    data[len(data) // 2] ^= 0x40
    bad = tmp_path / "bad.gfvc"
    bad.write_bytes(bytes(data))
    fake_intra.calls.clear()
    with pytest.raises(BitstreamError, match="CRC32"):
        codec.decode(bad, tmp_path / "d")
    assert fake_intra.calls == []


def _real_intra_available() -> bool:
    try:
        from anchors.common import ffmpeg_exe

        ffmpeg_exe()
        return True
    except Exception:
        return False


@pytest.mark.skipif(not _real_intra_available(), reason="bundled ffmpeg with libvvenc not available")
def test_real_intra_keyframe_repeat_and_toy(tmp_path: Path) -> None:
    """Integration: the real VVC intra coder (vvenc through the bundled ffmpeg)."""
    from test_conditions.demo import demo_frames

    frames = demo_frames(0, 4)
    seq = Sequence("carphone", frames, fps=30000 / 1001)
    for codec in (KeyframeRepeat(demo_condition()), ToyColour(demo_condition()),
                  ToyColour(demo_condition("gfvc-reference"))):
        wd = tmp_path / f"{codec.name}-{codec.condition.generative.feature_coder}"
        res = codec.encode(seq, RatePoint(42), wd)
        assert sum(res.bits_breakdown.values()) == 8 * res.bitstream.stat().st_size
        assert res.bits_breakdown["key_frame"] > 8 * 50 and res.commands  # a real VVC picture
        assert container.peek(res.bitstream).fps == 30000 / 1001
        dec = codec.decode(res.bitstream, wd / "dec")
        assert dec.frames.shape == frames.shape
        psnr = 10 * np.log10(255**2 / np.mean((dec.frames[0].astype(float) - frames[0]) ** 2))
        assert 25 < psnr < 60


def test_check_validates_model_identity() -> None:
    from gfvc.errors import NotAvailable

    ToyColour(demo_condition()).check()
    KeyframeRepeat(demo_condition()).check()

    class NoChecksum(ToyColour):
        def model_checksum(self) -> str:
            return "unknown"

    with pytest.raises(NotAvailable, match="sha256"):
        NoChecksum(demo_condition()).check()
