"""Bitstream container: layout, verification, typed errors, peek."""
from __future__ import annotations

import hashlib
import struct
import zlib
from pathlib import Path

import pytest

from gfvc import container
from gfvc.container import Header
from gfvc.errors import BitstreamError, InputError, ModelMismatch

SHA = hashlib.sha256(b"model").hexdigest()


def _header(**kw) -> Header:
    d = dict(codec="toy", model_id="toy-v1", model_checksum=SHA, width=128, height=96, frames=32,
             fps_num=30000, fps_den=1001, feature_coder=1, feature_dim=45, quant_scale=64.0, key_qp=42)
    d.update(kw)
    return Header(**d)


def test_roundtrip_and_every_byte_counted(tmp_path: Path) -> None:
    h = _header()
    key, feat = bytes(range(200)), b"\x01\x02\x03\x04" * 10
    path = tmp_path / "s.gfvc"
    bits = container.write(path, h, key, feat)
    assert sum(bits.values()) == 8 * path.stat().st_size
    assert bits["key_frame"] == 8 * len(key) and bits["features"] == 8 * len(feat)
    c = container.read(path)
    assert c.key_payload == key and c.feature_payload == feat
    assert c.header == _header(model_checksum=SHA[:16])
    assert c.header.fps == 30000 / 1001
    assert container.peek(path).codec == "toy"
    assert container.is_container(path) and not container.is_container(tmp_path / "missing")
    # overhead is small: magic..CRC without the payloads
    assert bits["container"] <= 8 * 60


def test_layout_starts_with_magic_version_and_ends_with_crc() -> None:
    data = container.pack(_header(), b"K", b"")
    assert data[:5] == b"GFVC\x01"
    assert struct.unpack("<I", data[-4:])[0] == zlib.crc32(data[:-4])


def test_model_id_equal_to_codec_is_stored_empty() -> None:
    a = container.pack(_header(model_id="toy"), b"K", b"")
    b = container.pack(_header(model_id="toy2"), b"K", b"")
    assert len(b) - len(a) == 4
    assert container.unpack(a).header.model_id == "toy"


@pytest.mark.parametrize("fps,expected", [(30000 / 1001, (30000, 1001)), (25.0, (25, 1)),
                                          (29.97, (2997, 100)), (12.5, (25, 2))])
def test_fps_exact_rational(fps: float, expected: tuple[int, int]) -> None:
    num, den = container.fps_to_rational(fps)
    assert (num, den) == expected and num / den == fps


def test_fps_arbitrary_float_is_exact() -> None:
    fps = 23.976023976023978 + 1e-12
    num, den = container.fps_to_rational(fps)
    assert num / den == fps


def test_corruption_is_typed() -> None:
    data = container.pack(_header(), b"KEYFRAME", b"FEAT")
    with pytest.raises(BitstreamError, match="magic"):
        container.unpack(b"XXXX" + data[4:])
    with pytest.raises(BitstreamError, match="version"):
        container.unpack(data[:4] + b"\x09" + data[5:])
    with pytest.raises(BitstreamError, match="CRC32"):
        container.unpack(data[:20] + bytes([data[20] ^ 1]) + data[21:])
    with pytest.raises(BitstreamError, match="too short"):
        container.unpack(data[:6])
    for cut in range(7, len(data)):
        with pytest.raises(BitstreamError):
            container.unpack(data[:cut])
    # a consistent CRC over an inconsistent body: lengths are still checked
    body = bytearray(data[:-4])
    body[-13] = 0x7F  # feature-payload length byte made too large
    bad = bytes(body) + struct.pack("<I", zlib.crc32(bytes(body)))
    with pytest.raises(BitstreamError):
        container.unpack(bad)


def test_invalid_header_values_refused() -> None:
    with pytest.raises(InputError, match="float32"):
        container.pack(_header(quant_scale=0.1), b"K", b"")
    with pytest.raises(InputError):
        container.pack(_header(model_checksum="nothex"), b"K", b"")
    with pytest.raises(InputError):
        container.pack(_header(width=0), b"K", b"")
    with pytest.raises(BitstreamError, match="empty key-frame"):
        container.unpack(container.pack(_header(), b"", b""))


def test_missing_file_is_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not found"):
        container.read(tmp_path / "nope.gfvc")


def test_compatibility_checks() -> None:
    h = container.unpack(container.pack(_header(), b"K", b"")).header
    kw = dict(codec="toy", model_id="toy-v1", model_checksum=SHA, feature_dim=45, quant_scale=64.0)
    container.check_compatible(h, **kw)
    with pytest.raises(ModelMismatch, match="written by codec 'toy'"):
        container.check_compatible(h, **{**kw, "codec": "other"})
    with pytest.raises(ModelMismatch, match="checkpoint"):
        container.check_compatible(h, **{**kw, "model_checksum": hashlib.sha256(b"x").hexdigest()})
    with pytest.raises(ModelMismatch, match="needs model 'toy-v1'"):
        container.check_compatible(h, **{**kw, "model_id": "toy-v2"})
    with pytest.raises(ModelMismatch, match="45 features"):
        container.check_compatible(h, **{**kw, "feature_dim": 44})
