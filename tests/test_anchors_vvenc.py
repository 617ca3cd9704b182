"""VVenC anchor through the bundled ffmpeg: real encodes of tiny clips (4 frames, 64x64)."""
from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import numpy as np
import pytest

from anchors import common
from anchors.common import FfmpegInfo, fps_arg, read_y4m, run_tool, to_8bit, vvc_stream_info
from anchors.vvenc import VvencCodec, VvencSettings, require_vvenc, settings_for
from gfvc.codec import CODECS, Environment, RatePoint, Sequence
from gfvc.errors import ExternalToolError, InputError, NotAvailable
from gfvc.video import rgb_to_yuv420, sha256_file, yuv420_to_rgb
from test_conditions import Condition

QPS = (27, 37, 47)


def clip(t: int = 4, h: int = 64, w: int = 64) -> np.ndarray:
    """Smooth gradients, a moving disc and mild texture: codable, with real motion."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    out = []
    for k in range(t):
        disc = ((xx - 20 - 4 * k) ** 2 + (yy - 30 - k) ** 2) < 120
        r = 60 + 2.0 * xx + 40 * disc
        g = 90 + 1.5 * yy + 20 * np.sin((xx + yy + 3 * k) / 5)
        b = 140 - xx + yy * 0.5 - 50 * disc
        out.append(np.stack([r, g, b], -1))
    return np.clip(np.round(np.array(out)), 0, 255).astype(np.uint8)


def condition(**anchor: object) -> Condition:
    c = Condition(name="t", version="1", description="", manifest="", width=64, height=64, frames=4, fps=25.0)
    return dataclasses.replace(c, anchor=dataclasses.replace(c.anchor, timeout_s=120.0, **anchor))


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(((a.astype(np.float64) - b) ** 2).mean())
    return 10 * np.log10(255 ** 2 / max(mse, 1e-12))


@pytest.fixture(scope="module")
def coded(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One codec instance, the clip coded at three QPs (shared by several tests)."""
    wd = tmp_path_factory.mktemp("vvenc")
    codec = VvencCodec(condition(), Environment())
    seq = Sequence("clip", clip(), 25.0)
    res = {}
    for qp in QPS:
        enc = codec.encode(seq, RatePoint(qp), wd)
        dec = codec.decode(enc.bitstream, wd)
        res[qp] = (enc, dec)
    return {"codec": codec, "seq": seq, "res": res, "wd": wd}


def test_registered() -> None:
    assert CODECS.get("vvenc") is VvencCodec
    assert VvencCodec.family == "anchor" and CODECS.origin("vvenc") == "anchors.vvenc"


def test_round_trip_counts_bits_and_quality(coded: dict) -> None:
    seq = coded["seq"]
    ref = yuv420_to_rgb(*rgb_to_yuv420(seq.frames))  # the best any 4:2:0 codec can do
    prev_psnr, prev_bits = None, None
    for qp in QPS:  # ascending QP: PSNR and bits must fall
        enc, dec = coded["res"][qp]
        assert dec.frames.shape == seq.frames.shape and dec.frames.dtype == np.uint8
        assert enc.bits_breakdown == {"vvc": enc.bitstream.stat().st_size * 8}
        assert enc.bitstream.read_bytes()[:4] == b"\x00\x00\x00\x01"  # raw Annex-B stream, no container
        p = psnr(dec.frames, ref)
        if prev_psnr is not None:
            assert p < prev_psnr - 1.0
            assert enc.bits_breakdown["vvc"] < prev_bits
        prev_psnr, prev_bits = p, enc.bits_breakdown["vvc"]
    assert psnr(coded["res"][27][1].frames, ref) > 30


def test_commands_and_log_recorded(coded: dict) -> None:
    enc, _ = coded["res"][37]
    (cmd,) = enc.commands
    assert cmd[cmd.index("-qp") + 1] == "37" and cmd[cmd.index("-qpa") + 1] == "0"
    assert cmd[cmd.index("-c:v") + 1] == "libvvenc" and cmd[cmd.index("-preset") + 1] == "medium"
    params = cmd[cmd.index("-vvenc-params") + 1].split(":")
    for p in ("GOPSize=8", "PicReordering=0", "DecodingRefreshType=none", "IntraPeriod=-1",
              "AccessUnitDelimiter=0", "BIM=0", "MCTF=0", "InternalBitDepth=8", "IntraQPOffset=0"):
        assert p in params
    assert cmd[cmd.index("-s") + 1] == "64x64" and cmd[cmd.index("-frames:v") + 1] == "4"
    log = Path(enc.info["log"]).read_text()
    assert "libvvenc" in log and "[exit 0" in log


def test_one_intra_picture_constant_qp(coded: dict) -> None:
    import av

    enc, _ = coded["res"][37]
    with av.open(str(enc.bitstream), format="vvc") as c:
        types = [int(f.pict_type) for f in c.decode(video=0)]
    assert len(types) == 4 and types[0] == 1 and 1 not in types[1:]  # AV_PICTURE_TYPE_I == 1
    info = vvc_stream_info(enc.bitstream)
    assert info.intra_pictures == 1 and info.pictures[0].intra
    assert not info.cu_qp_delta_enabled  # no CU-level QP changes (QPA and BIM off)
    assert info.bit_depth == 8 and (info.width, info.height) == (64, 64)
    qps = info.picture_qps
    assert qps[0] == 37  # QP + IntraQPOffset (0)
    assert all(q > 37 for q in qps[1:]) and qps[1] == qps[3]  # fixed GOP offsets for B pictures
    assert enc.info["picture_qps"] == info.picture_qps


def test_deterministic(coded: dict, tmp_path: Path) -> None:
    enc, _ = coded["res"][47]
    again = coded["codec"].encode(coded["seq"], RatePoint(47), tmp_path)
    assert again.bitstream.read_bytes() == enc.bitstream.read_bytes()


def test_decode_needs_only_the_stream(coded: dict, tmp_path: Path) -> None:
    enc, dec = coded["res"][37]
    fresh = VvencCodec(condition(), Environment())  # knows nothing about the encode
    out = fresh.decode(enc.bitstream, tmp_path)
    assert np.array_equal(out.frames, dec.frames)


def test_decoded_frame_count_checked(coded: dict, tmp_path: Path) -> None:
    enc, _ = coded["res"][37]
    codec = coded["codec"]
    key = str(enc.bitstream.resolve())
    codec._expected_frames[key] = 5
    try:
        with pytest.raises(ExternalToolError, match="decoded 4 frames"):
            codec.decode(enc.bitstream, tmp_path)
    finally:
        codec._expected_frames[key] = 4


def test_internal_10_bit(tmp_path: Path) -> None:
    seq = Sequence("clip", clip(), 25.0)
    c10 = VvencCodec(condition(internal_bit_depth=10, intra_qp_offset=-1), Environment())
    enc = c10.encode(seq, RatePoint(27), tmp_path)
    assert enc.info["coded_bit_depth"] == 10 and enc.info["picture_qps"][0] == 26
    assert "InternalBitDepth=10" in enc.commands[0][enc.commands[0].index("-vvenc-params") + 1]
    dec = c10.decode(enc.bitstream, tmp_path)
    assert dec.frames.dtype == np.uint8 and psnr(dec.frames, yuv420_to_rgb(*rgb_to_yuv420(seq.frames))) > 30


def test_odd_size_refused(tmp_path: Path) -> None:
    frames = clip(2, 64, 64)[:, :63]
    with pytest.raises(InputError, match="even"):
        VvencCodec(condition(), Environment()).encode(Sequence("odd", frames, 25.0), RatePoint(37), tmp_path)
    assert not list(tmp_path.glob("*.266"))


def test_bad_qp_refused() -> None:
    with pytest.raises(InputError):
        RatePoint(-1)
    with pytest.raises(InputError):
        settings_for(condition(), Environment(), -4)
    with pytest.raises(InputError):
        settings_for(condition(), Environment(), 64)


def test_check_and_missing_ffmpeg(monkeypatch: pytest.MonkeyPatch) -> None:
    VvencCodec(condition(), Environment()).check()
    import imageio_ffmpeg

    def boom() -> str:
        raise RuntimeError("No ffmpeg exe could be found")

    monkeypatch.setattr(imageio_ffmpeg, "get_ffmpeg_exe", boom)
    with pytest.raises(NotAvailable, match="imageio-ffmpeg"):
        VvencCodec(condition(), Environment()).check()


def test_ffmpeg_without_libvvenc_is_not_available() -> None:
    info = FfmpegInfo(path="/x/ffmpeg", version="ffmpeg 6", sha256="0" * 64, has_libvvenc=False,
                      has_vvc_decoder=True)
    with pytest.raises(NotAvailable, match="libvvenc.*pip install"):
        require_vvenc(info)
    with pytest.raises(NotAvailable, match="VVC decoder"):
        require_vvenc(dataclasses.replace(info, has_libvvenc=True, has_vvc_decoder=False))


def test_provenance() -> None:
    prov = VvencCodec(condition(), Environment()).provenance()
    assert prov["ffmpeg_sha256"] == sha256_file(prov["ffmpeg_path"])
    assert prov["ffmpeg_version"].startswith("ffmpeg version")
    assert prov["libvvenc_version"]
    assert prov["settings"]["preset"] == "medium" and prov["settings"]["internal_bit_depth"] == 8
    assert "BIM=0" in prov["vvenc_params"]


def test_plan_is_pure(tmp_path: Path) -> None:
    codec = VvencCodec(condition(vvenc_preset="fast"), Environment())
    enc, dec = codec.plan("seq", 128, 96, 32, 30000 / 1001, 42, tmp_path)
    assert enc[enc.index("-qp") + 1] == "42" and enc[enc.index("-preset") + 1] == "fast"
    assert enc[enc.index("-r") + 1] == "30000/1001" and enc[enc.index("-s") + 1] == "128x96"
    assert "-f" in dec and "yuv4mpegpipe" in dec
    assert not list(tmp_path.iterdir())


def test_settings_extra_params_from_env() -> None:
    s = settings_for(condition(), Environment(extra={"vvenc_params": "MCTF=0", "vvenc_threads": 2}), 30)
    assert s.params().endswith(":MCTF=0") and s.threads == 2 and isinstance(s, VvencSettings)


def test_helpers(tmp_path: Path) -> None:
    assert to_8bit(np.array([0, 1, 2, 3, 4, 6, 1023], np.uint16), 10).tolist() == [0, 0, 1, 1, 1, 2, 255]
    assert fps_arg(25.0) == "25" and fps_arg(30000 / 1001) == "30000/1001" and fps_arg(12.5) == "25/2"
    with pytest.raises(ExternalToolError, match="timed out"):
        run_tool([sys.executable, "-c", "import time; time.sleep(5)"], timeout=0.5, log=tmp_path / "l.log")
    with pytest.raises(ExternalToolError, match="exit code 3"):
        run_tool([sys.executable, "-c", "import sys; print('bad thing'); sys.exit(3)"], timeout=30,
                 log=tmp_path / "l.log")
    assert "bad thing" in (tmp_path / "l.log").read_text()
    (tmp_path / "x.y4m").write_bytes(b"YUV4MPEG2 W4 H2 F25:1 C420jpeg\nFRAME\n" + bytes(range(12)))
    y = read_y4m(tmp_path / "x.y4m")
    assert y.frames == 1 and y.y.shape == (1, 2, 4) and y.u.tolist() == [[[8, 9]]] and y.bit_depth == 8
    (tmp_path / "t.y4m").write_bytes(b"YUV4MPEG2 W4 H2 F25:1 C420jpeg\nFRAME\n" + bytes(5))
    with pytest.raises(ExternalToolError, match="truncated"):
        read_y4m(tmp_path / "t.y4m")
    assert common.job_timeout(condition(), Environment(timeout_s=50.0)) == 50.0
