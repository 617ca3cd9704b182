"""The CLI as a user meets it: one-line errors, encode/decode round trips, list, doctor."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from cli_errors import one_line_error

from gfvc.video import read_video, write_video
from suite.cli.main import main
from test_conditions.demo import demo_frames


def test_version_and_help():
    out = subprocess.run([sys.executable, "-m", "gfvc", "--version"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.startswith("gfvc ")


def test_list_shows_conditions_codecs_metrics(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for word in ("demo", "gfvc-human", "gfvc-face", "vvenc", "vtm", "keyframe-repeat", "dists", "fvd"):
        assert word in out


def test_doctor_reports_missing_vtm(capsys, monkeypatch, tmp_path):
    monkeypatch.delenv("GFVC_VTM_DIR", raising=False)
    assert main(["doctor", "--weights-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "codec vvenc" in out and "ok" in out
    assert "codec vtm" in out and "NOT AVAILABLE" in out and "--vtm-dir" in out


@pytest.fixture
def clip(tmp_path):
    p = tmp_path / "clip.yuv"
    write_video(p, demo_frames(0, 3))
    return p


def test_encode_decode_vvenc_round_trip(tmp_path, clip, capsys):
    bs = tmp_path / "clip.266"
    assert main(["encode", "--codec", "vvenc", "--qp", "32", str(clip), "-o", str(bs), "--size", "128x128"]) == 0
    assert bs.stat().st_size > 0 and "kbps" in capsys.readouterr().out
    for out in (tmp_path / "dec.yuv", tmp_path / "dec.rgb", tmp_path / "pngs"):
        assert main(["decode", str(bs), "-o", str(out)]) == 0
        dec = read_video(out, size=(128, 128))
        ref = read_video(clip, size=(128, 128))
        assert dec.shape == ref.shape
        mse = np.mean((dec.astype(float) - ref) ** 2)
        assert 10 * np.log10(255 ** 2 / mse) > 25


def test_encode_decode_keyframe_repeat(tmp_path, clip):
    bs = tmp_path / "clip.gfvc"
    assert main(["encode", "--codec", "keyframe-repeat", "--qp", "32", str(clip), "-o", str(bs),
                 "--size", "128x128"]) == 0
    assert main(["decode", str(bs), "-o", str(tmp_path / "d.rgb")]) == 0
    dec = read_video(tmp_path / "d.rgb", size=(128, 128))
    assert dec.shape == (3, 128, 128, 3)
    np.testing.assert_array_equal(dec[1], dec[0])


def test_yuv_size_mismatch(tmp_path, clip, capsys):
    rc = main(["encode", "--codec", "vvenc", "--qp", "32", str(clip), "-o", str(tmp_path / "x"), "--size", "100x128"])
    one_line_error(capsys, rc, "not a whole number of 100x128")


def test_negative_qp(tmp_path, clip, capsys):
    rc = main(["encode", "--codec", "vvenc", "--qp", "-3", str(clip), "-o", str(tmp_path / "x"), "--size", "128x128"])
    one_line_error(capsys, rc, "QP must be an integer in 0..63")


def test_missing_vtm_binary(tmp_path, clip, capsys, monkeypatch):
    monkeypatch.delenv("GFVC_VTM_DIR", raising=False)
    (tmp_path / "empty").mkdir()
    rc = main(["encode", "--codec", "vtm", "--qp", "37", str(clip), "-o", str(tmp_path / "x"), "--size", "128x128",
               "--vtm-dir", str(tmp_path / "empty")])
    one_line_error(capsys, rc, "EncoderApp")
    rc = main(["encode", "--codec", "vtm", "--qp", "37", str(clip), "-o", str(tmp_path / "x"), "--size", "128x128",
               "--vtm-dir", str(tmp_path / "nowhere")])
    one_line_error(capsys, rc, "--vtm-dir")


def test_decode_garbage(tmp_path, capsys):
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"hello world, not a bitstream")
    one_line_error(capsys, main(["decode", str(junk), "-o", str(tmp_path / "o.yuv")]), "junk.bin")


def test_unknown_condition(capsys):
    one_line_error(capsys, main(["run", "--condition", "gfvc-humna"]), "did you mean gfvc-human")
