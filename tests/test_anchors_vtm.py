"""VTM anchor against a fake VTM (tests/fake_vtm): discovery, commands, traps, errors."""
from __future__ import annotations

import dataclasses
import importlib.util
import shutil
from pathlib import Path

import numpy as np
import pytest

import anchors.vtm as vtm
from anchors.common import vvc_stream_info
from anchors.vtm import VtmCodec, find_vtm
from gfvc.codec import CODECS, Environment, RatePoint, Sequence
from gfvc.errors import ConfigError, ExternalToolError, InputError, NotAvailable
from gfvc.video import rgb_to_yuv420, sha256_file, yuv420_to_rgb
from test_conditions import Condition

HERE = Path(__file__).resolve().parent


def _fakevtm():
    spec = importlib.util.spec_from_file_location("fakevtm", HERE / "fake_vtm" / "fakevtm.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


fakevtm = _fakevtm()


def clip(t: int = 4, h: int = 64, w: int = 64) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    out = []
    for k in range(t):
        disc = ((xx - 20 - 4 * k) ** 2 + (yy - 30 - k) ** 2) < 120
        out.append(np.stack([60 + 2.0 * xx + 40 * disc, 90 + 1.5 * yy, 140 - xx + 0.5 * yy - 50 * disc], -1))
    return np.clip(np.round(np.array(out)), 0, 255).astype(np.uint8)


def condition(**anchor: object) -> Condition:
    c = Condition(name="t", version="1", description="", manifest="", width=64, height=64, frames=4, fps=25.0,
                  codecs=("vtm",))
    return dataclasses.replace(c, anchor=dataclasses.replace(c.anchor, encoder="vtm", timeout_s=120.0, **anchor))


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(255 ** 2 / max(((a.astype(np.float64) - b) ** 2).mean(), 1e-12)))


@pytest.fixture(scope="module")
def vtm_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return fakevtm.install(tmp_path_factory.mktemp("VVCSoftware_VTM"), layout="bin")


@pytest.fixture(autouse=True)
def _no_env_var(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(vtm.ENV_VAR, raising=False)


@pytest.fixture(scope="module")
def coded(vtm_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    wd = tmp_path_factory.mktemp("vtmjob")
    codec = VtmCodec(condition(), Environment(vtm_dir=vtm_dir))
    seq = Sequence("clip", clip(), 25.0)
    enc = codec.encode(seq, RatePoint(37), wd)
    dec = codec.decode(enc.bitstream, wd)
    return {"codec": codec, "seq": seq, "enc": enc, "dec": dec, "wd": wd}


def test_registered() -> None:
    assert CODECS.get("vtm") is VtmCodec and VtmCodec.family == "anchor"


def test_end_to_end(coded: dict, vtm_dir: Path) -> None:
    enc, dec, seq = coded["enc"], coded["dec"], coded["seq"]
    assert dec.frames.shape == seq.frames.shape and dec.frames.dtype == np.uint8
    assert enc.bits_breakdown == {"vvc": enc.bitstream.stat().st_size * 8}
    assert psnr(dec.frames, yuv420_to_rgb(*rgb_to_yuv420(seq.frames))) > 28
    info = vvc_stream_info(enc.bitstream)
    assert len(info.pictures) == 4 and info.intra_pictures == 1 and info.bit_depth == 8
    (cmd,) = enc.commands
    val = lambda flag: cmd[cmd.index(flag) + 1]  # noqa: E731
    assert cmd[0] == str(vtm_dir / "bin" / "EncoderApp")
    assert val("-c") == str(vtm_dir / "cfg" / "encoder_lowdelay_vtm.cfg")
    assert (val("-q"), val("-f"), val("-wdt"), val("-hgt"), val("-fr")) == ("37", "4", "64", "64", "25")
    for opt in ("--InputBitDepth=8", "--InternalBitDepth=8", "--OutputBitDepth=8", "--IntraQPOffset=0",
                "--IntraPeriod=-1"):
        assert opt in cmd
    assert "EncoderApp" in (coded["wd"] / "vtm.log").read_text()


def test_condition_values_reach_command_line(vtm_dir: Path, tmp_path: Path) -> None:
    """InternalBitDepth 10 (VTM default) + IntraQPOffset -1: 10-bit stream, decoded through -d 8."""
    codec = VtmCodec(condition(internal_bit_depth=10, intra_qp_offset=-1), Environment(vtm_dir=vtm_dir))
    seq = Sequence("clip", clip(), 25.0)
    enc = codec.encode(seq, RatePoint(32), tmp_path)
    assert "--InternalBitDepth=10" in enc.commands[0] and "--IntraQPOffset=-1" in enc.commands[0]
    info = vvc_stream_info(enc.bitstream)
    assert info.bit_depth == 10 and info.picture_qps[0] == 31
    dec = codec.decode(enc.bitstream, tmp_path)
    assert dec.frames.shape == seq.frames.shape
    assert psnr(dec.frames, yuv420_to_rgb(*rgb_to_yuv420(seq.frames))) > 28


def test_sixteen_bit_output_trap(vtm_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without -d 8 DecoderApp writes 16-bit samples for a 10-bit stream: refused, never misread."""
    codec = VtmCodec(condition(internal_bit_depth=10), Environment(vtm_dir=vtm_dir))
    enc = codec.encode(Sequence("clip", clip(2), 25.0), RatePoint(37), tmp_path)
    monkeypatch.setattr(vtm, "decoder_command", lambda dec, bs, out: [str(dec), "-b", str(bs), "-o", str(out)])
    with pytest.raises(ExternalToolError, match="16-bit"):
        codec.decode(enc.bitstream, tmp_path)


def test_frame_shortfall_detected(vtm_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A short input file makes VTM code fewer frames silently; the suite must notice."""
    real = vtm.write_input_yuv

    def short(path: Path, y: np.ndarray, u: np.ndarray, v: np.ndarray) -> None:
        real(path, y[:-1], u[:-1], v[:-1])

    monkeypatch.setattr(vtm, "write_input_yuv", short)
    codec = VtmCodec(condition(), Environment(vtm_dir=vtm_dir))
    with pytest.raises(ExternalToolError, match="coded 3 frames, 4 were asked"):
        codec.encode(Sequence("clip", clip(), 25.0), RatePoint(42), tmp_path)


def test_decode_count_checked_against_encode(coded: dict, tmp_path: Path) -> None:
    codec, enc = coded["codec"], coded["enc"]
    key = str(enc.bitstream.resolve())
    codec._expected_frames[key] = 6
    try:
        with pytest.raises(ExternalToolError, match="decoded 4 frames"):
            codec.decode(enc.bitstream, tmp_path)
    finally:
        codec._expected_frames[key] = 4


def test_missing_binaries(tmp_path: Path) -> None:
    with pytest.raises(NotAvailable, match="--vtm-dir.*GFVC_VTM_DIR"):
        VtmCodec(condition(), Environment()).check()
    empty = tmp_path / "vtm"
    (empty / "bin").mkdir(parents=True)
    with pytest.raises(NotAvailable) as e:
        VtmCodec(condition(), Environment(vtm_dir=empty)).check()
    msg = str(e.value)
    assert "EncoderApp and DecoderApp not found" in msg and str(empty / "bin") in msg
    assert "VTM-22.2" in msg and "cmake" in msg
    with pytest.raises(NotAvailable, match="not a directory"):
        VtmCodec(condition(), Environment(vtm_dir=tmp_path / "nope")).check()


def test_missing_decoder_only(vtm_dir: Path, tmp_path: Path) -> None:
    d = tmp_path / "half"
    shutil.copytree(vtm_dir, d)
    (d / "bin" / "DecoderApp").unlink()
    with pytest.raises(NotAvailable, match="DecoderApp not found"):
        find_vtm(Environment(vtm_dir=d))


def test_env_var_and_umake_layout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = fakevtm.install(tmp_path / "VTM", layout="umake", static=True)
    monkeypatch.setenv(vtm.ENV_VAR, str(root))
    tools = find_vtm(Environment())
    assert tools.encoder.name == "EncoderAppStatic" and "umake" in str(tools.encoder)
    assert tools.cfg == root / "cfg" / "encoder_lowdelay_vtm.cfg"
    # --vtm-dir wins over the environment variable
    other = fakevtm.install(tmp_path / "other", layout="root")
    assert find_vtm(Environment(vtm_dir=other)).encoder == other / "EncoderApp"


def test_cfg_override_and_provenance(vtm_dir: Path, tmp_path: Path) -> None:
    cfg = tmp_path / "my_ldb.cfg"
    cfg.write_text((vtm_dir / "cfg" / "encoder_lowdelay_vtm.cfg").read_text() + "\n# edited\n")
    codec = VtmCodec(condition(), Environment(vtm_dir=vtm_dir, vtm_cfg=cfg))
    prov = codec.provenance()
    assert prov["cfg"] == str(cfg) and prov["cfg_sha256"] == sha256_file(cfg)
    assert prov["encoder_sha256"] == sha256_file(vtm_dir / "bin" / "EncoderApp")
    assert prov["decoder_sha256"] == sha256_file(vtm_dir / "bin" / "DecoderApp")
    assert prov["vtm_version"] == "22.2"
    assert prov["settings"]["internal_bit_depth"] == 8 and prov["settings"]["intra_qp_offset"] == 0
    enc_cmd, dec_cmd = codec.plan("s", 64, 64, 4, 25.0, 47, tmp_path)
    assert enc_cmd[enc_cmd.index("-c") + 1] == str(cfg)
    assert dec_cmd[-2:] == ["-d", "8"]
    with pytest.raises(NotAvailable, match="--vtm-cfg"):
        find_vtm(Environment(vtm_dir=vtm_dir, vtm_cfg=tmp_path / "missing.cfg"))


def test_cfg_gop_mismatch(vtm_dir: Path, tmp_path: Path) -> None:
    codec = VtmCodec(condition(gop_size=4), Environment(vtm_dir=vtm_dir))
    with pytest.raises(ConfigError, match="GOPSize"):
        codec.encode(Sequence("clip", clip(1), 25.0), RatePoint(37), tmp_path)


def test_plan_without_vtm(tmp_path: Path) -> None:
    enc_cmd, dec_cmd = VtmCodec(condition(), Environment()).plan("s", 64, 48, 8, 25.0, 52, tmp_path)
    assert "-q" in enc_cmd and enc_cmd[enc_cmd.index("-q") + 1] == "52" and "EncoderApp" in enc_cmd[0]
    assert enc_cmd[enc_cmd.index("-hgt") + 1] == "48" and "DecoderApp" in dec_cmd[0]
    prov = VtmCodec(condition(), Environment()).provenance()  # never raises: --dry-run must work
    assert prov["status"] == "not_available" and "--vtm-dir" in prov["reason"]
    tmpl = prov["command_templates"][0]
    assert tmpl[tmpl.index("-q") + 1] == "{qp}" and "{workdir}/{sequence}_{rate_point}.266" in tmpl


def test_odd_size_and_bad_qp(vtm_dir: Path, tmp_path: Path) -> None:
    codec = VtmCodec(condition(), Environment(vtm_dir=vtm_dir))
    with pytest.raises(InputError, match="even"):
        codec.encode(Sequence("odd", clip(1)[:, :, :63], 25.0), RatePoint(37), tmp_path)


def test_fake_behaves_like_vtm(vtm_dir: Path, tmp_path: Path) -> None:
    """The fake itself: odd size and a missing input file give a non-zero exit (as VTM does)."""
    from anchors.common import run_tool

    yuv = tmp_path / "in.yuv"
    yuv.write_bytes(bytes(64 * 63 * 3 // 2))
    base = [str(vtm_dir / "bin" / "EncoderApp"), "-c", str(vtm_dir / "cfg" / "encoder_lowdelay_vtm.cfg"),
            "-b", str(tmp_path / "o.266"), "-fr", "25", "-f", "1", "-q", "37"]
    with pytest.raises(ExternalToolError, match="multiple of 2"):
        run_tool(base + ["-i", str(yuv), "-wdt", "63", "-hgt", "64"], timeout=60, log=tmp_path / "l.log")
    with pytest.raises(ExternalToolError, match="Failed to open input file"):
        run_tool(base + ["-i", str(tmp_path / "nope.yuv"), "-wdt", "64", "-hgt", "64"], timeout=60,
                 log=tmp_path / "l.log")
    with pytest.raises(ExternalToolError, match="Unknown option"):
        run_tool(base + ["-i", str(yuv), "-wdt", "64", "-hgt", "64", "--NoSuchOption=1"], timeout=60,
                 log=tmp_path / "l.log")
