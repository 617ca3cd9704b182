"""Decoded files are the decoder's output (defect class 2 of issue 12).

* ``gfvc decode X.266 -o out.yuv`` writes the decoder's planes bit for bit:
  md5 equal to ffmpeg's native VVC decoder (8-bit streams) and to VTM's
  DecoderApp ``-d 8`` (the fake VTM rounds 10-bit streams like VTM does).
* ``--vtm-dir`` makes decode use DecoderApp, and decode names its decoder.
* ``.mp4`` is a lossy viewing copy: tagged in its metadata, refused by
  ``gfvc metrics`` and by sequence loading unless explicitly allowed.
* Records of conventional anchors carry PSNR computed on the decoder's planes
  the way VTM's log does.
"""
from __future__ import annotations

import hashlib
import importlib.util
import subprocess
from pathlib import Path

import numpy as np
import pytest
import yaml

from anchors.common import ffmpeg_exe
from gfvc.video import is_viewing_copy, read_yuv420_planes, rgb_to_yuv420, write_video
from metrics.classic import VTM_PSNR_CAP_DB, yuv_psnr
from suite.cli.main import main
from test_conditions.demo import demo_frames

HERE = Path(__file__).resolve().parent


def _md5(p: Path) -> str:
    return hashlib.md5(p.read_bytes()).hexdigest()


def _fakevtm():
    spec = importlib.util.spec_from_file_location("fakevtm", HERE / "fake_vtm" / "fakevtm.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def vtm_dir(tmp_path_factory) -> Path:
    return _fakevtm().install(tmp_path_factory.mktemp("VTM"), layout="bin")


@pytest.fixture(autouse=True)
def _no_vtm_env(monkeypatch):
    monkeypatch.delenv("GFVC_VTM_DIR", raising=False)


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("clip") / "clip.yuv"
    write_video(p, demo_frames(0, 3))
    return p


def _cond10(tmp: Path) -> Path:
    """The demo condition with 10-bit internal coding (the decoder then rounds to 8 bits)."""
    from test_conditions import load_condition

    d = load_condition("demo").to_dict()
    d["anchor"]["internal_bit_depth"] = 10
    d["manifest"] = str(load_condition("demo").manifest_path)
    p = tmp / "cond10.yaml"
    p.write_text(yaml.safe_dump(d))
    return p


def _encode(clip: Path, out: Path, *extra: str) -> Path:
    assert main(["encode", "--codec", "vvenc", "--qp", "37", str(clip), "-o", str(out), "--size", "128x128",
                 *extra]) == 0
    return out


def test_yuv_output_is_ffmpegs_native_decode_bit_exact(clip, tmp_path, capsys):
    bs = _encode(clip, tmp_path / "a.266")
    out = tmp_path / "dec.yuv"
    assert main(["decode", str(bs), "-o", str(out)]) == 0
    said = capsys.readouterr().out
    assert "ffmpeg native VVC decoder" in said and "bit-exact" in said
    ref = tmp_path / "ffmpeg.yuv"
    subprocess.run([str(ffmpeg_exe()), "-loglevel", "error", "-y", "-i", str(bs), "-f", "rawvideo", str(ref)],
                   check=True, timeout=120)
    assert _md5(out) == _md5(ref)


def test_ten_bit_stream_matches_vtm_decoderapp_d8(clip, tmp_path, vtm_dir, capsys):
    bs = _encode(clip, tmp_path / "b.266", "--condition", str(_cond10(tmp_path)))
    ours = tmp_path / "ours.yuv"
    assert main(["decode", str(bs), "-o", str(ours)]) == 0
    vtm_out = tmp_path / "vtm.yuv"
    subprocess.run([str(vtm_dir / "bin" / "DecoderApp"), "-b", str(bs), "-o", str(vtm_out), "-d", "8"],
                   check=True, timeout=300, capture_output=True)
    assert _md5(ours) == _md5(vtm_out)
    # the same planes are not what going through RGB and back gives (the old behaviour)
    y, u, v = read_yuv420_planes(ours, 128, 128)
    from gfvc.video import yuv420_to_rgb

    assert not np.array_equal(np.concatenate([p.ravel() for p in rgb_to_yuv420(yuv420_to_rgb(y, u, v))]),
                              np.concatenate([y.ravel(), u.ravel(), v.ravel()]))
    capsys.readouterr()
    via_vtm = tmp_path / "via_vtm.yuv"
    assert main(["decode", str(bs), "-o", str(via_vtm), "--vtm-dir", str(vtm_dir)]) == 0
    assert "VTM DecoderApp" in capsys.readouterr().out
    assert _md5(via_vtm) == _md5(vtm_out)


def test_decode_with_a_vtm_dir_without_decoder_is_one_line(clip, tmp_path, capsys):
    bs = _encode(clip, tmp_path / "c.266")
    (tmp_path / "empty").mkdir()
    capsys.readouterr()
    rc = main(["decode", str(bs), "-o", str(tmp_path / "x.yuv"), "--vtm-dir", str(tmp_path / "empty")])
    err = capsys.readouterr().err
    assert rc == 2 and "DecoderApp" in err and err.count("\n") == 1


def test_mp4_is_a_labelled_viewing_copy_that_metrics_refuse(clip, tmp_path, capsys):
    bs = _encode(clip, tmp_path / "d.266")
    mp4 = tmp_path / "view.mp4"
    capsys.readouterr()
    assert main(["decode", str(bs), "-o", str(mp4), "--fps", "30"]) == 0
    said = capsys.readouterr().out
    assert "LOSSY viewing copy" in said and "30 fps from --fps" in said
    assert is_viewing_copy(mp4) and not is_viewing_copy(clip)
    rc = main(["metrics", str(clip), str(mp4), "--size", "128x128", "--metrics", "psnr"])
    err = capsys.readouterr().err
    assert rc == 2 and "lossy viewing copy" in err and err.count("\n") == 1
    assert main(["metrics", str(clip), str(mp4), "--size", "128x128", "--metrics", "psnr",
                 "--allow-viewing-copy"]) == 0
    cap = capsys.readouterr()
    assert "LOSSY" in cap.err and "LOSSY VIEWING COPY" in cap.out


def test_sequences_refuse_a_viewing_copy(tmp_path):
    from gfvc.errors import InputError
    from test_conditions.manifest import SequenceEntry, load_sequence, planar_sha256

    frames = demo_frames(0, 2)
    mp4 = tmp_path / "seq.mp4"
    write_video(mp4, frames, 25)
    e = SequenceEntry("s", str(mp4), planar_sha256(frames), 2, 128, 128, 25.0, "container", str(tmp_path))
    with pytest.raises(InputError, match="lossy viewing copy"):
        load_sequence(e, 2)


# --- PSNR as VTM's log computes it -------------------------------------------------------------

def test_yuv_psnr_formula():
    y = np.full((2, 4, 4), 100, np.uint8)
    u = np.full((2, 2, 2), 100, np.uint8)
    v = u.copy()
    dy = y.copy()
    dy[0, 0, 0] = 110  # frame 0: SSD 100 over 16 samples; frame 1: identical
    r = yuv_psnr((y, u, v), (dy, u, v))
    p0 = 10 * np.log10(255.0 ** 2 * 16 / 100)
    assert r["y"] == pytest.approx((p0 + VTM_PSNR_CAP_DB) / 2)
    assert r["u"] == r["v"] == VTM_PSNR_CAP_DB
    assert r["yuv_611"] == pytest.approx((6 * r["y"] + r["u"] + r["v"]) / 8)
    mse_y = (100 / 16 + 0) / 2
    assert r["yuv_vtm"] == pytest.approx(10 * np.log10(255.0 ** 2 / (4 * mse_y / 6)))


def test_anchor_records_carry_vtm_style_psnr_on_the_decoder_planes(tmp_path):
    from gfvc.codec import Environment
    from suite.runner.jobs import run_job
    from suite.runner.plan import plan_run
    from test_conditions import load_condition

    d = load_condition("demo").to_dict()
    d.update(frames=3, codecs=["vvenc"], manifest=str(load_condition("demo").manifest_path))
    d["anchor"]["qps"] = [42]
    d["metrics"]["names"] = ["psnr"]
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump(d))
    cond = load_condition(p)
    plan = plan_run(cond, tmp_path / "run", Environment())
    rec = run_job(plan.jobs[0])
    assert rec["status"] == "ok", rec["error"]
    got = rec["yuv_psnr"]
    bs = tmp_path / "run" / rec["artifacts"]["bitstream"]
    raw = tmp_path / "ff.yuv"
    subprocess.run([str(ffmpeg_exe()), "-loglevel", "error", "-y", "-i", str(bs), "-f", "rawvideo", str(raw)],
                   check=True, timeout=120)
    dec = read_yuv420_planes(raw, 128, 128)
    ref = rgb_to_yuv420(demo_frames(0, 3))
    for i, c in enumerate("yuv"):
        mse = ((ref[i].astype(float) - dec[i]) ** 2).reshape(3, -1).mean(1)
        assert got[c] == pytest.approx(float(np.mean(10 * np.log10(255 ** 2 / mse))), abs=1e-9)
    assert got["frames"] == 3 and got["chroma"] == "420"
    # the RGB-based PSNR-Y of the suite differs: it reads the planes after a round trip through RGB
    assert got["y"] != pytest.approx(rec["metrics"]["psnr_y"]["value"], abs=1e-6)
    assert is_viewing_copy(tmp_path / "run" / rec["artifacts"]["decoded_mp4"])
    from gfvc.records import results_table

    df = results_table(tmp_path / "run")  # the report reads them from here
    assert df["yuv_psnr_y"].iloc[0] == got["y"] and df["yuv_psnr_yuv_611"].iloc[0] == got["yuv_611"]
