"""Video I/O and colour conversion (bit-exact with OpenCV's I420 conversions)."""
from __future__ import annotations

import numpy as np
import pytest

from gfvc import video
from gfvc.errors import InputError

cv2 = pytest.importorskip("cv2", reason="opencv-python-headless is a test dependency (pip install -e .[test])")


@pytest.fixture
def frames():
    return np.random.default_rng(1).integers(0, 256, (3, 34, 50, 3), dtype=np.uint8)


def test_rgb_to_i420_matches_opencv(frames):
    y, u, v = video.rgb_to_yuv420(frames)
    for i in range(len(frames)):
        ref = cv2.cvtColor(frames[i], cv2.COLOR_RGB2YUV_I420).ravel()
        ours = np.concatenate([y[i].ravel(), u[i].ravel(), v[i].ravel()])
        np.testing.assert_array_equal(ours, ref)


def test_i420_to_rgb_matches_opencv():
    rng = np.random.default_rng(2)
    y = rng.integers(0, 256, (1, 34, 50), dtype=np.uint8)
    u = rng.integers(0, 256, (1, 17, 25), dtype=np.uint8)
    v = rng.integers(0, 256, (1, 17, 25), dtype=np.uint8)
    buf = np.concatenate([y.ravel(), u.ravel(), v.ravel()]).reshape(51, 50)
    np.testing.assert_array_equal(video.yuv420_to_rgb(y, u, v)[0], cv2.cvtColor(buf, cv2.COLOR_YUV2RGB_I420))


def test_bt709_round_trip_is_close(frames):
    smooth = np.repeat(np.repeat(frames[:, ::2, ::2], 2, 1), 2, 2)  # constant 2x2 blocks: chroma exact
    back = video.yuv420_to_rgb(*video.rgb_to_yuv420(smooth, "bt709", "limited"), "bt709", "limited")
    assert np.abs(back.astype(int) - smooth).max() <= 3  # limited-range quantisation only


def test_float_path_rounds_not_truncates():
    # mid-grey through full-range BT.601: Y = 128 exactly; truncation of 127.99.. would give 127
    f = np.full((1, 2, 2, 3), 128, np.uint8)
    y, u, v = video.rgb_to_yuv420(f, "bt601", "full")
    assert y.max() == 128 and u.max() == 128 and v.max() == 128


@pytest.mark.parametrize("suffix", [".rgb", ".yuv", ".mp4", ""])
def test_write_read_round_trip(tmp_path, frames, suffix):
    f = frames[:, :32, :48]
    p = tmp_path / f"v{suffix}"
    video.write_video(p, f, fps=25)
    got = video.read_video(p, size=(48, 32))
    assert got.shape == f.shape
    if suffix in (".rgb", ""):
        np.testing.assert_array_equal(got, f)
    elif suffix == ".yuv":
        np.testing.assert_array_equal(got, video.yuv420_to_rgb(*video.rgb_to_yuv420(f)))


def test_yuv_size_mismatch_is_one_clear_error(tmp_path, frames):
    p = tmp_path / "v.yuv"
    video.write_video(p, frames[:, :32, :48])
    with pytest.raises(InputError, match="not a whole number of 40x32"):
        video.read_video(p, size=(40, 32))
    with pytest.raises(InputError, match="holds 3 frames, 5 requested"):
        video.read_video(p, size=(48, 32), frames=5)
    with pytest.raises(InputError, match="needs the frame size"):
        video.read_video(p)


def test_parse_size():
    assert video.parse_size("384x256") == (384, 256)
    for bad in ("384", "ax3", "0x4"):
        with pytest.raises(InputError):
            video.parse_size(bad)
