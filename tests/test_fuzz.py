"""Fuzzing: mutated/truncated bitstreams give BitstreamError, never a crash or a hang.

Two attack models, seeded:
* random corruption of the file (the CRC32 must catch it before any decoding);
* corruption with the CRC recomputed (a buggy writer), which reaches the header
  parser, the feature decoders and the key-frame decoder: they must raise
  BitstreamError (or a subclass) or decode to arrays of the declared shape.
pytest-timeout bounds the whole test, so an endless loop fails it.
"""
from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from test_generative import FakeIntra, ToyColour, demo_condition  # noqa: F401

from gfvc.codec import RatePoint, Sequence
from gfvc.codecs.keyframe_repeat import KeyframeRepeat
from gfvc.errors import BitstreamError

CASES = 200


def _streams(tmp_path: Path) -> list[tuple[object, bytes]]:
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (16, 16, 3)).astype(np.float32)
    frames = np.stack([np.clip(base * (0.7 + 0.05 * i) + 3 * i, 0, 255) for i in range(12)]).astype(np.uint8)
    seq = Sequence("f", frames, fps=25.0)
    out = []
    for codec in (ToyColour(demo_condition("cabac")), ToyColour(demo_condition("gfvc-reference")),
                  KeyframeRepeat(demo_condition())):
        res = codec.encode(seq, RatePoint(32), tmp_path / f"enc-{len(out)}")
        out.append((codec, res.bitstream.read_bytes()))
    return out


def _mutate(rng: np.random.Generator, data: bytes) -> bytes:
    b = bytearray(data)
    kind = rng.integers(0, 5)
    if kind == 0:  # flip bits
        for _ in range(int(rng.integers(1, 5))):
            b[int(rng.integers(0, len(b)))] ^= 1 << int(rng.integers(0, 8))
    elif kind == 1:  # random bytes
        for _ in range(int(rng.integers(1, 5))):
            b[int(rng.integers(0, len(b)))] = int(rng.integers(0, 256))
    elif kind == 2:  # truncate
        del b[int(rng.integers(0, len(b))):]
    elif kind == 3:  # insert
        pos = int(rng.integers(0, len(b) + 1))
        b[pos:pos] = rng.integers(0, 256, int(rng.integers(1, 9)), dtype=np.uint8).tobytes()
    else:  # delete a run
        pos = int(rng.integers(0, len(b)))
        del b[pos:pos + int(rng.integers(1, 9))]
    return bytes(b)


def _fix_crc(data: bytes) -> bytes:
    if len(data) < 9:
        return data
    body = data[:-4]
    return body + struct.pack("<I", zlib.crc32(body))


def _decode(codec, data: bytes, path: Path) -> None:
    path.write_bytes(data)
    try:
        dec = codec.decode(path, path.parent / "dec")
    except BitstreamError:
        return
    assert dec.frames.dtype == np.uint8 and dec.frames.ndim == 4


@pytest.mark.timeout(120)
def test_fuzz_corrupted_files_are_rejected(tmp_path: Path, fake_intra: FakeIntra) -> None:
    rng = np.random.default_rng(1234)
    streams = _streams(tmp_path)
    rejected = 0
    for i in range(CASES):
        codec, data = streams[i % len(streams)]
        bad = _mutate(rng, data)
        if bad == data:
            continue
        path = tmp_path / f"case{i}.gfvc"
        path.write_bytes(bad)
        with pytest.raises(BitstreamError):
            codec.decode(path, tmp_path / "dec")
        rejected += 1
    assert rejected > CASES * 0.9


@pytest.mark.timeout(120)
def test_fuzz_with_valid_crc_reaches_decoders_safely(tmp_path: Path, fake_intra: FakeIntra) -> None:
    rng = np.random.default_rng(99)
    streams = _streams(tmp_path)
    for i in range(CASES):
        codec, data = streams[i % len(streams)]
        bad = _fix_crc(_mutate(rng, data[:-4]) + data[-4:])
        _decode(codec, bad, tmp_path / f"case{i}.gfvc")


@pytest.mark.timeout(60)
def test_fuzz_random_garbage(tmp_path: Path, fake_intra: FakeIntra) -> None:
    rng = np.random.default_rng(7)
    codec = ToyColour(demo_condition())
    for i in range(100):
        junk = rng.integers(0, 256, int(rng.integers(0, 300)), dtype=np.uint8).tobytes()
        if i % 2:
            junk = b"GFVC\x01" + junk
        if i % 3 == 0:
            junk = _fix_crc(junk)
        _decode(codec, junk, tmp_path / f"junk{i}.gfvc")


@pytest.mark.timeout(120)
def test_fuzz_feature_payloads_through_codec(tmp_path: Path, fake_intra: FakeIntra) -> None:
    """Mutate only the feature payload and repack a valid container: the entropy
    decoders themselves see garbage (bounded prefixes, counts from the header)."""
    from gfvc import container

    rng = np.random.default_rng(5)
    streams = _streams(tmp_path)[:2]  # the two feature coders
    outcomes = {"error": 0, "decoded": 0}
    for i in range(2 * CASES):
        codec, data = streams[i % 2]
        c = container.unpack(data)
        bad_feat = _mutate(rng, c.feature_payload) if c.feature_payload else b""
        path = tmp_path / f"feat{i}.gfvc"
        path.write_bytes(container.pack(c.header, c.key_payload, bad_feat))
        try:
            dec = codec.decode(path, tmp_path / "dec")
        except BitstreamError:
            outcomes["error"] += 1
            continue
        assert dec.frames.shape == (12, 16, 16, 3) and dec.frames.dtype == np.uint8
        outcomes["decoded"] += 1
    assert outcomes["error"] > 0  # the decoders do detect some garbage themselves
