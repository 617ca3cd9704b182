"""Manifests, verification, and `gfvc sequences prepare` on TED-like inputs."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from gfvc.errors import ChecksumError, ConfigError, InputError
from gfvc.video import read_rgb_planar, read_yuv420, sha256_file, write_container, write_png_folder, write_rgb_planar
from suite.cli.main import main
from test_conditions import load_condition
from test_conditions.manifest import load_manifest, load_sequence, verify_entry


def test_demo_sequence_verifies():
    (e,) = load_manifest(load_condition("demo").manifest_path)
    verify_entry(e)
    seq = load_sequence(e, 4)
    assert seq.frames.shape == (4, 128, 128, 3) and seq.fps == pytest.approx(29.97, abs=1e-2)


def _manifest(tmp_path: Path, entry: dict) -> Path:
    p = tmp_path / "m.yaml"
    p.write_text(yaml.safe_dump({"schema": 1, "sequences": [entry]}))
    return p


def _rgb_entry(tmp_path: Path, frames: np.ndarray) -> dict:
    f = tmp_path / "s.rgb"
    write_rgb_planar(f, frames)
    return {"name": "s", "file": "s.rgb", "format": "rgb", "sha256": sha256_file(f), "frames": len(frames),
            "width": frames.shape[2], "height": frames.shape[1], "fps": 25}


def test_sha256_mismatch_is_refused(tmp_path):
    frames = np.zeros((2, 8, 8, 3), np.uint8)
    entry = _rgb_entry(tmp_path, frames)
    (e,) = load_manifest(_manifest(tmp_path, entry))
    verify_entry(e)
    (tmp_path / "s.rgb").write_bytes(b"\x01" + (tmp_path / "s.rgb").read_bytes()[1:])
    with pytest.raises(ChecksumError, match="sha256 mismatch"):
        load_sequence(e, 2)


def test_manifest_validation(tmp_path):
    good = _rgb_entry(tmp_path, np.zeros((2, 8, 8, 3), np.uint8))
    for bad, words in [({**good, "color": 1}, "unknown key 'color'"), ({**good, "frames": 0}, "frames"),
                       ({**good, "sha256": "abc"}, "64 hex"), ({**good, "format": "avi"}, "format")]:
        with pytest.raises(ConfigError, match=words):
            load_manifest(_manifest(tmp_path, bad))
    short = {**good, "frames": 5}
    (e,) = load_manifest(_manifest(tmp_path, short))
    with pytest.raises(InputError, match="manifest says 5"):
        verify_entry(e)


def test_sequences_verify_cli(tmp_path, capsys):
    entry = _rgb_entry(tmp_path, np.zeros((2, 8, 8, 3), np.uint8))
    m = _manifest(tmp_path, entry)
    assert main(["sequences", "verify", "--manifest", str(m)]) == 0
    (tmp_path / "s.rgb").write_bytes(b"\x07" * (2 * 8 * 8 * 3))
    assert main(["sequences", "verify", "--manifest", str(m)]) == 2
    out = capsys.readouterr()
    assert "MISMATCH" in out.out and "sha256" in out.out
    assert out.err.count("\n") == 1 and "Traceback" not in out.err


def test_prepare_split_folder(tmp_path):
    """A TED384-like split: one mp4 and one PNG folder, 384 -> small size for speed."""
    rng = np.random.default_rng(0)
    split = tmp_path / "test"
    split.mkdir()
    clip = rng.integers(0, 256, (6, 32, 32, 3), dtype=np.uint8)
    write_png_folder(split / "talkB", clip)
    write_container(split / "talkA.mp4", clip, fps=25)
    out = tmp_path / "ctc"
    rc = main(["sequences", "prepare", str(split), "--out", str(out), "--size", "32", "--frames", "5"])
    assert rc == 0
    entries = load_manifest(out / "manifest.yaml")
    assert [e.name for e in entries] == ["talkA", "talkB"]
    for e in entries:
        verify_entry(e)
        assert (e.frames, e.width, e.height, e.fps) == (5, 32, 32, 25.0)
    b = next(e for e in entries if e.name == "talkB")
    np.testing.assert_array_equal(read_rgb_planar(b.path(), 32, 32), clip[:5])
    yuv = out / "talkB_32x32_25_8bit_420.yuv"
    assert read_yuv420(yuv, 32, 32).shape == (5, 32, 32, 3)
    # a run can use the prepared manifest directly
    assert main(["sequences", "verify", "--manifest", str(out / "manifest.yaml")]) == 0


def test_prepare_refuses_wrong_size_and_short_video(tmp_path):
    clip = np.zeros((3, 16, 16, 3), np.uint8)
    write_png_folder(tmp_path / "v", clip)
    assert main(["sequences", "prepare", str(tmp_path / "v"), "--out", str(tmp_path / "o"), "--size", "32",
                 "--frames", "3"]) == 2
    assert main(["sequences", "prepare", str(tmp_path / "v"), "--out", str(tmp_path / "o"), "--size", "16",
                 "--frames", "9"]) == 2
    assert main(["sequences", "prepare", str(tmp_path / "v"), "--out", str(tmp_path / "o"), "--size", "32",
                 "--frames", "3", "--resize"]) == 0
