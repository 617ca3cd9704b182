"""Key-frame intra coding (anchors.intra): vvenc for real, vtm through the fake VTM."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from anchors.common import vvc_stream_info
from anchors.intra import IntraResult, decode_intra, encode_intra, intra_provenance
from gfvc.codec import Environment
from gfvc.errors import BitstreamError, InputError, NotAvailable
from gfvc.video import rgb_to_yuv420, yuv420_to_rgb
from test_conditions import Condition

HERE = Path(__file__).resolve().parent
COND = Condition(name="t", version="1", description="", manifest="", width=64, height=48, frames=1, fps=25.0)


def frame(h: int = 48, w: int = 64) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    disc = ((xx - 30) ** 2 + (yy - 20) ** 2) < 150
    f = np.stack([50 + 2.5 * xx + 60 * disc, 80 + 2 * yy + 10 * np.sin(xx / 3), 200 - 2 * xx - 80 * disc], -1)
    return np.clip(np.round(f), 0, 255).astype(np.uint8)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(255 ** 2 / max(((a.astype(np.float64) - b) ** 2).mean(), 1e-12)))


def ref420(f: np.ndarray) -> np.ndarray:
    return yuv420_to_rgb(*rgb_to_yuv420(f[None]))[0]


def test_vvenc_round_trip_420(tmp_path: Path) -> None:
    f = frame()
    env = Environment()
    results = {}
    for qp in (22, 42):
        r = encode_intra(f, qp, coder="vvenc", chroma="420", condition=COND, env=env, workdir=tmp_path)
        assert isinstance(r, IntraResult) and r.payload[:4] == b"\x00\x00\x00\x01"
        assert r.commands and "libvvenc" in r.commands[0]
        bs = tmp_path / f"k{qp}.266"
        bs.write_bytes(r.payload)
        info = vvc_stream_info(bs)
        assert len(info.pictures) == 1 and info.intra_pictures == 1 and info.picture_qps == [qp]
        d = decode_intra(r.payload, width=64, height=48, coder="vvenc", chroma="420", condition=COND, env=env,
                         workdir=tmp_path)
        assert d.shape == (48, 64, 3) and d.dtype == np.uint8
        results[qp] = (len(r.payload), psnr(d, ref420(f)))
    assert results[22][0] > results[42][0]
    assert results[22][1] > results[42][1] + 3 and results[22][1] > 35
    assert not list(tmp_path.glob("intra_*"))  # temporary files removed


def test_vvenc_444_not_available(tmp_path: Path) -> None:
    with pytest.raises(NotAvailable, match="4:2:0"):
        encode_intra(frame(), 32, coder="vvenc", chroma="444", condition=COND, env=Environment(), workdir=tmp_path)


def test_bad_arguments(tmp_path: Path) -> None:
    env = Environment()
    kw = dict(condition=COND, env=env, workdir=tmp_path)
    with pytest.raises(InputError):
        encode_intra(frame(), 32, coder="x265", chroma="420", **kw)
    with pytest.raises(InputError):
        encode_intra(frame(), 32, coder="vvenc", chroma="422", **kw)
    with pytest.raises(InputError):
        encode_intra(frame(), -1, coder="vvenc", chroma="420", **kw)
    with pytest.raises(InputError, match="even"):
        encode_intra(frame(47, 64), 32, coder="vvenc", chroma="420", **kw)
    with pytest.raises(InputError):
        encode_intra(frame()[None], 32, coder="vvenc", chroma="420", **kw)


def test_corrupt_payload_and_wrong_size(tmp_path: Path) -> None:
    env = Environment()
    with pytest.raises(BitstreamError):
        decode_intra(b"\x12\x34" * 50, width=64, height=48, coder="vvenc", chroma="420", condition=COND, env=env,
                     workdir=tmp_path)
    with pytest.raises(BitstreamError):
        decode_intra(b"", width=64, height=48, coder="vvenc", chroma="420", condition=COND, env=env,
                     workdir=tmp_path)
    r = encode_intra(frame(), 42, coder="vvenc", chroma="420", condition=COND, env=env, workdir=tmp_path)
    with pytest.raises(BitstreamError, match="expected 32x48"):
        decode_intra(r.payload, width=32, height=48, coder="vvenc", chroma="420", condition=COND, env=env,
                     workdir=tmp_path)


def test_provenance_vvenc() -> None:
    p = intra_provenance("vvenc", COND, Environment())
    assert p["coder"] == "vvenc" and len(p["ffmpeg_sha256"]) == 64 and p["frames"] == 1
    assert "IntraQPOffset=0" in p["vvenc_params"]


def test_vtm_round_trip_with_fake(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("fakevtm", HERE / "fake_vtm" / "fakevtm.py")
    fakevtm = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fakevtm)
    root = fakevtm.install(tmp_path / "VTM")
    env = Environment(vtm_dir=root)
    f = frame()
    r = encode_intra(f, 32, coder="vtm", chroma="420", condition=COND, env=env, workdir=tmp_path / "w")
    cmd = r.commands[0]
    assert cmd[cmd.index("-f") + 1] == "1" and cmd[cmd.index("-q") + 1] == "32"
    d = decode_intra(r.payload, width=64, height=48, coder="vtm", chroma="420", condition=COND, env=env,
                     workdir=tmp_path / "w")
    assert d.shape == (48, 64, 3) and psnr(d, ref420(f)) > 30
    p = intra_provenance("vtm", COND, env)
    assert p["coder"] == "vtm" and p["vtm_version"] == "22.2" and len(p["cfg_sha256"]) == 64
    with pytest.raises(NotAvailable, match="--vtm-dir"):
        intra_provenance("vtm", COND, Environment(vtm_dir=tmp_path / "none"))


def test_stream_headers_of_the_same_bytes_are_parsed_once(tmp_path: Path, monkeypatch) -> None:
    """Encoder check, closed-loop key-frame decode and job decode read one stream: one ffmpeg trace, not three."""
    import anchors.common as common

    calls: list[Path] = []
    real = common._trace_stream_info

    def counting(bitstream, exe, timeout, log):
        calls.append(Path(bitstream))
        return real(bitstream, exe, timeout, log)

    monkeypatch.setattr(common, "_trace_stream_info", counting)
    monkeypatch.setattr(common, "_STREAM_INFO", type(common._STREAM_INFO)())
    r = encode_intra(frame(), 37, coder="vvenc", chroma="420", condition=COND, env=Environment(),
                     workdir=tmp_path / "enc")
    assert len(calls) == 1                       # the encoder's own check
    decode_intra(r.payload, width=64, height=48, coder="vvenc", chroma="420", condition=COND, env=Environment(),
                 workdir=tmp_path / "dec")
    assert len(calls) == 1                       # same bytes at another path: reused
    copy_ = tmp_path / "copy.266"
    copy_.write_bytes(r.payload)
    info = vvc_stream_info(copy_, log=tmp_path / "log.txt")
    info.pictures.clear()                        # a caller changing its result changes nobody else's
    assert len(vvc_stream_info(copy_).pictures) == 1 and len(calls) == 1
    assert "reused" in (tmp_path / "log.txt").read_text()
    other = encode_intra(frame(), 47, coder="vvenc", chroma="420", condition=COND, env=Environment(),
                         workdir=tmp_path / "enc2")
    assert other.payload != r.payload and len(calls) == 2   # other bytes: parsed
    damaged = tmp_path / "cut.266"
    damaged.write_bytes(r.payload[:12])
    for _ in range(2):                            # a failed parse is not remembered: it fails each time
        with pytest.raises(BitstreamError):
            vvc_stream_info(damaged)
    assert len(calls) == 4
