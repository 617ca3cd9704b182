"""Video I/O and colour conversion.

Frames are always uint8 RGB arrays of shape (T, H, W, 3) in memory.
Files: planar RGB ``.rgb`` (R, G, B planes per frame, the GFVC convention),
``.yuv`` (yuv420p, 8-bit), PNG folders, and containers (.mp4/.mkv/...) via
PyAV. RGB <-> YUV 4:2:0 follows OpenCV's COLOR_RGB2YUV_I420 /
COLOR_YUV2RGB_I420 integer arithmetic bit-exactly for BT.601 limited range
(what the GFVC software uses, CTC_FACTS section 2); BT.709 and full range are
options computed in float with rounding (never truncation).
"""
from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import numpy as np

from gfvc import frame_folder
from gfvc.errors import InputError, NotAvailable, OutputError
from gfvc.fileio import check_output_dir, check_output_file

Matrix = Literal["bt601", "bt709"]
Range = Literal["limited", "full"]

# --- OpenCV's fixed-point BT.601 constants (2^20 scale) ---------------------
_SHIFT = 20
_HALF = 1 << (_SHIFT - 1)
# RGB -> YUV (limited range): 0.257, 0.504, 0.098 / -0.148, -0.291, 0.439 / 0.439, -0.368, -0.071
_CRY, _CGY, _CBY = 269484, 528482, 102760
_CRU, _CGU, _CBU = -155188, -305135, 460324
_CGV, _CBV = -385875, -74448
# YUV -> RGB: 1.164, 2.018, -0.391, -0.813, 1.596
_CY, _CUB, _CUG, _CVG, _CVR = 1220542, 2116026, -409993, -852492, 1673527

_KR_KB = {"bt601": (0.299, 0.114), "bt709": (0.2126, 0.0722)}


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(chunk)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


def sha256_frames(frames: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(frames).tobytes()).hexdigest()


def _check_rgb(frames: np.ndarray) -> None:
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise InputError(f"expected uint8 RGB frames (T, H, W, 3), got {frames.dtype} {frames.shape}")


def rgb_to_yuv420(
    frames: np.ndarray, matrix: Matrix = "bt601", range_: Range = "limited",
    chroma_downsampling: Literal["topleft", "average"] = "topleft",
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """RGB (T,H,W,3) uint8 -> planes Y (T,H,W), U, V (T,H/2,W/2) uint8.

    BT.601 limited range with top-left chroma siting equals OpenCV's
    COLOR_RGB2YUV_I420 bit for bit (the GFVC software's conversion).
    """
    _check_rgb(frames)
    t, h, w, _ = frames.shape
    if h % 2 or w % 2:
        raise InputError(f"4:2:0 needs even width and height, got {w}x{h}")
    if matrix == "bt601" and range_ == "limited":
        rgb = frames.astype(np.int64)
        r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
        y = (_CRY * r + _CGY * g + _CBY * b + _HALF + (16 << _SHIFT)) >> _SHIFT
        if chroma_downsampling == "topleft":
            rs, gs, bs = r[:, ::2, ::2], g[:, ::2, ::2], b[:, ::2, ::2]
        else:  # average of the 2x2 block, rounded
            def avg(c: np.ndarray) -> np.ndarray:
                return (c[:, ::2, ::2] + c[:, 1::2, ::2] + c[:, ::2, 1::2] + c[:, 1::2, 1::2] + 2) >> 2
            rs, gs, bs = avg(r), avg(g), avg(b)
        u = (_CRU * rs + _CGU * gs + _CBU * bs + _HALF + (128 << _SHIFT)) >> _SHIFT
        v = (_CBU * rs + _CGV * gs + _CBV * bs + _HALF + (128 << _SHIFT)) >> _SHIFT
        return (np.clip(y, 0, 255).astype(np.uint8), np.clip(u, 0, 255).astype(np.uint8),
                np.clip(v, 0, 255).astype(np.uint8))
    y, u, v = _rgb_to_yuv_float(frames.astype(np.float64), matrix, range_)
    if chroma_downsampling == "topleft":
        u, v = u[:, ::2, ::2], v[:, ::2, ::2]
    else:
        u = (u[:, ::2, ::2] + u[:, 1::2, ::2] + u[:, ::2, 1::2] + u[:, 1::2, 1::2]) / 4
        v = (v[:, ::2, ::2] + v[:, 1::2, ::2] + v[:, ::2, 1::2] + v[:, 1::2, 1::2]) / 4
    rnd = lambda a: np.clip(np.floor(a + 0.5), 0, 255).astype(np.uint8)  # noqa: E731
    return rnd(y), rnd(u), rnd(v)


def _rgb_to_yuv_float(rgb: np.ndarray, matrix: Matrix, range_: Range) -> tuple[np.ndarray, ...]:
    kr, kb = _KR_KB[matrix]
    kg = 1 - kr - kb
    r, g, b = rgb[..., 0] / 255, rgb[..., 1] / 255, rgb[..., 2] / 255
    e_y = kr * r + kg * g + kb * b
    e_u = (b - e_y) / (2 * (1 - kb))
    e_v = (r - e_y) / (2 * (1 - kr))
    if range_ == "limited":
        return 16 + 219 * e_y, 128 + 224 * e_u, 128 + 224 * e_v
    return 255 * e_y, 128 + 255 * e_u, 128 + 255 * e_v


def yuv420_to_rgb(
    y: np.ndarray, u: np.ndarray, v: np.ndarray, matrix: Matrix = "bt601", range_: Range = "limited"
) -> np.ndarray:
    """Planes -> RGB (T,H,W,3) uint8 with nearest chroma upsampling.

    BT.601 limited range equals OpenCV's COLOR_YUV2RGB_I420 bit for bit.
    """
    if y.ndim == 2:
        y, u, v = y[None], u[None], v[None]
    t, h, w = y.shape
    if u.shape != (t, h // 2, w // 2) or v.shape != u.shape:
        raise InputError(f"chroma planes {u.shape}/{v.shape} do not match luma {y.shape} for 4:2:0")
    uu = np.repeat(np.repeat(u, 2, axis=1), 2, axis=2)
    vv = np.repeat(np.repeat(v, 2, axis=1), 2, axis=2)
    if matrix == "bt601" and range_ == "limited":
        yy = np.maximum(y.astype(np.int64) - 16, 0) * _CY
        uu = uu.astype(np.int64) - 128
        vv = vv.astype(np.int64) - 128
        r = (yy + _CVR * vv + _HALF) >> _SHIFT
        g = (yy + _CVG * vv + _CUG * uu + _HALF) >> _SHIFT
        b = (yy + _CUB * uu + _HALF) >> _SHIFT
        return np.clip(np.stack([r, g, b], axis=-1), 0, 255).astype(np.uint8)
    return _yuv_float_to_rgb(y.astype(np.float64), uu.astype(np.float64), vv.astype(np.float64), matrix, range_)


def _yuv_float_to_rgb(y: np.ndarray, u: np.ndarray, v: np.ndarray, matrix: Matrix, range_: Range) -> np.ndarray:
    kr, kb = _KR_KB[matrix]
    kg = 1 - kr - kb
    if range_ == "limited":
        e_y, e_u, e_v = (y - 16) / 219, (u - 128) / 224, (v - 128) / 224
    else:
        e_y, e_u, e_v = y / 255, (u - 128) / 255, (v - 128) / 255
    r = e_y + 2 * (1 - kr) * e_v
    b = e_y + 2 * (1 - kb) * e_u
    g = (e_y - kr * r - kb * b) / kg
    rgb = np.stack([r, g, b], axis=-1) * 255
    return np.clip(np.floor(rgb + 0.5), 0, 255).astype(np.uint8)


def rgb_to_yuv444(frames: np.ndarray, matrix: Matrix = "bt601", range_: Range = "limited") -> tuple[np.ndarray, ...]:
    """RGB -> full-resolution Y, U, V planes (rounded)."""
    _check_rgb(frames)
    y, u, v = _rgb_to_yuv_float(frames.astype(np.float64), matrix, range_)
    rnd = lambda a: np.clip(np.floor(a + 0.5), 0, 255).astype(np.uint8)  # noqa: E731
    return rnd(y), rnd(u), rnd(v)


def yuv444_to_rgb(y: np.ndarray, u: np.ndarray, v: np.ndarray, matrix: Matrix = "bt601",
                  range_: Range = "limited") -> np.ndarray:
    return _yuv_float_to_rgb(y.astype(np.float64), u.astype(np.float64), v.astype(np.float64), matrix, range_)


# --- raw files -----------------------------------------------------------------

def _frame_count(path: Path, frame_bytes: int, width: int, height: int, kind: str) -> int:
    size = path.stat().st_size
    if size == 0 or size % frame_bytes:
        raise InputError(
            f"{path}: size {size} bytes is not a whole number of {width}x{height} {kind} frames "
            f"({frame_bytes} bytes each); check --size / the manifest's width and height"
        )
    return size // frame_bytes


def _want(path: Path, available: int, frames: int | None) -> int:
    if frames is None:
        return available
    if frames < 1:
        raise InputError(f"{path}: frame count must be >= 1, got {frames}")
    if frames > available:
        raise InputError(f"{path}: holds {available} frames, {frames} requested "
                         f"(use --frames {available} or fewer)")
    return frames


def read_yuv420(path: str | Path, width: int, height: int, frames: int | None = None,
                matrix: Matrix = "bt601", range_: Range = "limited") -> np.ndarray:
    """Read an 8-bit yuv420p file and convert it to RGB."""
    y, u, v = read_yuv420_planes(path, width, height, frames)
    return yuv420_to_rgb(y, u, v, matrix, range_)


def read_yuv420_planes(path: str | Path, width: int, height: int, frames: int | None = None,
                       bit_depth: int = 8) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Read raw yuv420p planes; ``bit_depth`` > 8 means 16-bit little-endian samples."""
    path = Path(path)
    if width <= 0 or height <= 0 or width % 2 or height % 2:
        raise InputError(f"{path}: 4:2:0 needs positive even width and height, got {width}x{height}")
    bps = 1 if bit_depth == 8 else 2
    fb = width * height * 3 // 2 * bps
    n = _want(path, _frame_count(path, fb, width, height, "yuv420p"), frames)
    dtype = np.uint8 if bps == 1 else np.dtype("<u2")
    data = np.fromfile(path, dtype=dtype, count=n * fb // bps).reshape(n, -1)
    ys = width * height
    cs = ys // 4
    y = data[:, :ys].reshape(n, height, width)
    u = data[:, ys:ys + cs].reshape(n, height // 2, width // 2)
    v = data[:, ys + cs:].reshape(n, height // 2, width // 2)
    return y, u, v


def write_yuv420_planes(path: str | Path, y: np.ndarray, u: np.ndarray, v: np.ndarray) -> None:
    path = Path(path)
    with open(path, "wb") as f:
        for i in range(y.shape[0]):
            f.write(np.ascontiguousarray(y[i]).tobytes())
            f.write(np.ascontiguousarray(u[i]).tobytes())
            f.write(np.ascontiguousarray(v[i]).tobytes())


def write_yuv420(path: str | Path, frames: np.ndarray, matrix: Matrix = "bt601", range_: Range = "limited") -> None:
    write_yuv420_planes(path, *rgb_to_yuv420(frames, matrix, range_))


def read_rgb_planar(path: str | Path, width: int, height: int, frames: int | None = None) -> np.ndarray:
    """Read planar RGB (per frame: R plane, G plane, B plane), the GFVC .rgb format."""
    path = Path(path)
    if width <= 0 or height <= 0:
        raise InputError(f"{path}: width and height must be positive, got {width}x{height}")
    fb = width * height * 3
    n = _want(path, _frame_count(path, fb, width, height, "planar RGB"), frames)
    data = np.fromfile(path, dtype=np.uint8, count=n * fb).reshape(n, 3, height, width)
    return np.ascontiguousarray(data.transpose(0, 2, 3, 1))


def write_rgb_planar(path: str | Path, frames: np.ndarray) -> None:
    _check_rgb(frames)
    np.ascontiguousarray(frames.transpose(0, 3, 1, 2)).tofile(str(path))


def read_png_folder(path: str | Path, frames: int | None = None) -> np.ndarray:
    """Read a folder of PNG frames in natural order (the rules of :mod:`gfvc.frame_folder`)."""
    return frame_folder.read_png_folder(path, frames)


def write_png_folder(path: str | Path, frames: np.ndarray) -> None:
    from PIL import Image

    _check_rgb(frames)
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    for i, f in enumerate(frames):
        Image.fromarray(f).save(path / f"{i:05d}.png")


def _av():
    try:
        import av  # noqa: F401
    except ImportError as e:  # pragma: no cover
        raise NotAvailable("PyAV is needed to read/write mp4/mkv: pip install av") from e
    import av

    return av


VIEWING_COPY_COMMENT = ("gfvc viewing copy: lossy H.264 (CRF {crf}); not the decoder's output, never measure it "
                        "(decode to .yuv/.rgb/PNG for the exact frames)")
VIEWING_COPY_MARK = "gfvc viewing copy"


def is_viewing_copy(path: str | Path) -> bool:
    """True for a video the suite wrote as a lossy viewing copy (tagged in its metadata)."""
    path = Path(path)
    if not path.is_file() or path.suffix.lower() not in CONTAINER_SUFFIXES:
        return False
    av = _av()
    try:
        with av.open(str(path)) as c:
            meta = {str(k).lower(): str(v) for k, v in (c.metadata or {}).items()}
    except av.error.FFmpegError:
        return False
    return meta.get("comment", "").startswith(VIEWING_COPY_MARK)


def refuse_viewing_copy(path: str | Path, what: str) -> None:
    """Measurement and conformance never read a lossy viewing copy silently."""
    if is_viewing_copy(path):
        raise InputError(f"{path} is a lossy viewing copy written by the suite, not decoded frames; {what} "
                         f"would measure H.264 artefacts: decode the bitstream to .yuv/.rgb/PNG "
                         f"(gfvc decode BITSTREAM -o out.yuv) and use that")


def iter_container(path: str | Path) -> Iterator[tuple[Any, float]]:
    """Yield (PyAV frame, fps) of a container's first video stream; decoder errors become InputError."""
    av = _av()
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such video file")
    try:
        with av.open(str(path)) as c:
            if not c.streams.video:
                raise InputError(f"{path}: no video stream")
            st = c.streams.video[0]
            fps = float(st.average_rate or st.guessed_rate or 25)
            for fr in c.decode(st):
                yield fr, fps
    except av.error.FFmpegError as e:
        raise InputError(f"{path}: cannot decode video: {e}") from None


def read_container(path: str | Path, frames: int | None = None) -> tuple[np.ndarray, float]:
    """Decode a video container (mp4, mkv, ...) to RGB with PyAV; returns (frames, fps)."""
    path = Path(path)
    out = []
    fps = 25.0
    for fr, rate in iter_container(path):
        out.append(fr.to_ndarray(format="rgb24"))
        fps = rate
        if frames is not None and len(out) >= frames:
            break
    if not out:
        raise InputError(f"{path}: no video frames")
    if frames is not None and len(out) < frames:
        raise InputError(f"{path}: holds {len(out)} frames, {frames} requested (use --frames {len(out)} or fewer)")
    return np.stack(out), fps


def write_container(path: str | Path, frames: np.ndarray, fps: float, crf: int = 12) -> None:
    """Write an H.264 viewing copy (lossy; tagged as such in its metadata, refused by measurement)."""
    from fractions import Fraction

    av = _av()
    _check_rgb(frames)
    if not fps > 0:
        raise InputError(f"{path}: frame rate must be > 0, got {fps!r}")
    path = Path(path)
    if path.suffix.lower() not in WRITE_CONTAINER_SUFFIXES:
        raise OutputError(f"{path}: cannot write {path.suffix or 'this'} video (H.264 viewing copies: "
                          f"{', '.join(sorted(WRITE_CONTAINER_SUFFIXES))})")
    try:
        with av.open(str(path), "w") as c:
            c.metadata["comment"] = VIEWING_COPY_COMMENT.format(crf=crf)
            st = c.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
            st.width, st.height = frames.shape[2], frames.shape[1]
            st.pix_fmt = "yuv420p"
            st.options = {"crf": str(crf)}
            for f in frames:
                for pkt in st.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                    c.mux(pkt)
            for pkt in st.encode():
                c.mux(pkt)
    except (av.error.FFmpegError, OSError) as e:
        raise OutputError(f"{path}: cannot write video: {e}") from None


CONTAINER_SUFFIXES = {".mp4", ".mkv", ".avi", ".mov", ".webm"}
# Containers the suite writes (libx264 viewing copies); .webm cannot hold H.264.
WRITE_CONTAINER_SUFFIXES = {".mp4", ".mkv", ".mov"}
# Every video output: raw files, containers, or a folder of PNGs (no extension).
WRITE_VIDEO_SUFFIXES = {".rgb", ".yuv"} | WRITE_CONTAINER_SUFFIXES


def read_video(path: str | Path, size: tuple[int, int] | None = None, frames: int | None = None,
               fmt: str | None = None) -> np.ndarray:
    """Read any supported video into uint8 RGB frames; raw formats need ``size`` (W, H)."""
    path = Path(path)
    fmt = fmt or video_format(path)
    if fmt in ("rgb", "yuv420p"):
        if size is None:
            raise InputError(f"{path}: raw {fmt} needs the frame size (--size WxH)")
        if not path.is_file():
            raise InputError(f"{path}: no such file")
        w, h = size
        return read_rgb_planar(path, w, h, frames) if fmt == "rgb" else read_yuv420(path, w, h, frames)
    if fmt == "png":
        return read_png_folder(path, frames)
    return read_container(path, frames)[0]


def check_video_output(path: str | Path, what: str = "output") -> Path:
    """Check a video output before the work (see gfvc.fileio); a path without extension is a PNG folder."""
    path = Path(path)
    if path.is_dir() or (path.suffix == "" and not path.exists()):
        return check_output_dir(path, what=f"{what} (PNG folder)")
    if path.suffix == "" and path.is_file():
        raise OutputError(f"{what} {path}: is a file; give a folder for PNG frames or a "
                          f"{'/'.join(sorted(WRITE_VIDEO_SUFFIXES))} file")
    return check_output_file(path, what=what, suffixes=WRITE_VIDEO_SUFFIXES)


def write_video(path: str | Path, frames: np.ndarray, fps: float = 25.0, matrix: Matrix = "bt601",
                range_: Range = "limited") -> None:
    """Write frames in the format given by the suffix (.yuv, .rgb, container, or folder).

    ``.yuv`` is converted from RGB with ``matrix``/``range_`` (pass the
    condition's colour spec); containers are lossy viewing copies.
    """
    path = Path(path)
    fmt = video_format(path, must_exist=False)
    if fmt == "rgb":
        write_rgb_planar(path, frames)
    elif fmt == "yuv420p":
        write_yuv420(path, frames, matrix, range_)
    elif fmt == "png":
        write_png_folder(path, frames)
    else:
        write_container(path, frames, fps)


def video_format(path: Path, must_exist: bool = True) -> str:
    s = path.suffix.lower()
    if s == ".rgb":
        return "rgb"
    if s == ".yuv":
        return "yuv420p"
    if s in CONTAINER_SUFFIXES:
        return "container"
    if path.is_dir() or (not must_exist and s == ""):
        return "png"
    raise InputError(f"{path}: unknown video format {s!r} (use .rgb, .yuv, .mp4/.mkv or a PNG folder)")


def parse_size(text: str) -> tuple[int, int]:
    """'384x384' -> (384, 384)."""
    try:
        w, h = (int(x) for x in text.lower().split("x"))
    except ValueError:
        raise InputError(f"bad size {text!r}: expected WxH, e.g. 384x384") from None
    if w <= 0 or h <= 0:
        raise InputError(f"bad size {text!r}: width and height must be positive")
    return w, h
