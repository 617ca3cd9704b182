"""Video files for people to look at: the viewer's web clips and the subjective test's clip files.

Both start from the same sources: a run's decoded viewing copy (``decoded.mp4``,
H.264 CRF 12, gfvc/video.py ``write_container``) or the original frames (RGB
arrays, given by the command layer). Frames travel as yuv420p ``av.VideoFrame``s
so a decoded viewing copy is re-encoded from its own planes, without an extra
RGB round trip.

- :func:`web_chunks` encodes VP9 (profile 0, 8-bit 4:2:0; libvpx CRF mode) for
  the browser's WebCodecs ``VideoDecoder`` (reports/viewer.py says why).
- :func:`write_lossless` writes FFV1 in Matroska: lossless for the yuv420p
  planes it is given, playable by ffplay/mpv/VLC, what a viewing session plays.

Every file written here is tagged in its metadata as a gfvc viewing copy
(``gfvc.video.VIEWING_COPY_MARK``), so measurement refuses it like decoded.mp4.
"""
from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from gfvc.errors import InputError, NotAvailable, OutputError
from gfvc.records import current_records_filter, iter_records
from gfvc.video import VIEWING_COPY_MARK, iter_container

# VP9 settings of the viewer: CRF 10 is visually transparent on the CTC's talking-head content
# (the source is already a CRF-12 H.264 viewing copy); one key frame, no alt-ref/lag so each
# packet is exactly one shown frame (what the page's decoder expects).
WEB_CODEC = "libvpx-vp9"
WEB_CODEC_STRING = "vp09.00.41.08"  # WebCodecs name: profile 0, level 4.1, 8-bit
WEB_CRF = 10
GREY_LEVEL = 128  # mid-grey (R = G = B = 128) between presentations


def _av():  # PyAV is a dependency of the suite (gfvc/video.py); imported here for its error types too
    try:
        import av
    except ImportError as e:  # pragma: no cover
        raise NotAvailable("PyAV is needed to write viewer and subjective-test clips: pip install av") from e
    return av


@dataclass(frozen=True)
class Chunk:
    """One coded frame of a web clip."""

    data: bytes
    key: bool


def container_info(path: Path) -> tuple[int, int, int, float]:
    """(width, height, frames, fps) of a video container, frames counted by decoding."""
    n, w, h, fps = 0, 0, 0, 25.0
    for f, rate in iter_container(path):
        n, w, h, fps = n + 1, f.width, f.height, rate
    if n == 0:
        raise InputError(f"{path}: no video frames")
    return w, h, n, fps


def container_frames(path: Path) -> Iterator[Any]:
    """yuv420p frames of a video container (its own planes when it is yuv420p already)."""
    for fr, _ in iter_container(path):
        yield fr if fr.format.name == "yuv420p" else fr.reformat(format="yuv420p")


def rgb_frames(frames: np.ndarray) -> Iterator[Any]:
    """yuv420p frames from uint8 RGB (T, H, W, 3), converted as ``write_container`` converts (swscale)."""
    av = _av()
    for f in frames:
        yield av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24").reformat(format="yuv420p")


def grey_frames(width: int, height: int, count: int, level: int = GREY_LEVEL) -> Iterator[Any]:
    """``count`` mid-grey frames (R = G = B = ``level``)."""
    return rgb_frames(np.full((count, height, width, 3), level, np.uint8))


def web_chunks(frames: Iterable[Any], width: int, height: int, fps: float, crf: int = WEB_CRF) -> list[Chunk]:
    """VP9-encode frames for the viewer: one chunk per frame, the first a key frame."""
    av = _av()
    cc = av.CodecContext.create(WEB_CODEC, "w")
    cc.width, cc.height, cc.pix_fmt = width, height, "yuv420p"
    rate = Fraction(fps).limit_denominator(1001)
    cc.time_base, cc.framerate = 1 / rate, rate
    cc.gop_size = 100000
    # BT.601 limited range, as swscale converted the frames (gfvc/video.py write_container does the
    # same); tagged so the browser converts back with the same matrix (untagged, it guesses BT.709).
    cc.colorspace, cc.color_primaries, cc.color_trc, cc.color_range = 6, 6, 6, 1  # smpte170m, tv range
    cc.options = {"crf": str(crf), "b": "0", "deadline": "good", "cpu-used": "4", "lag-in-frames": "0",
                  "auto-alt-ref": "0", "row-mt": "1", "threads": "1"}
    out: list[Chunk] = []
    try:
        n = 0
        for f in frames:
            f.pts = n
            n += 1
            out += [Chunk(bytes(p), bool(p.is_keyframe)) for p in cc.encode(f)]
        out += [Chunk(bytes(p), bool(p.is_keyframe)) for p in cc.encode(None)]
    except av.error.FFmpegError as e:
        raise OutputError(f"VP9 encoding of a viewer clip failed: {e}") from None
    if len(out) != n or (out and not out[0].key):
        raise OutputError(f"VP9 encoder returned {len(out)} packets for {n} frames (expected one per frame)")
    return out


def write_lossless(path: Path, frames: Iterable[Any], width: int, height: int, fps: float, what: str) -> int:
    """Write FFV1 (lossless for the given yuv420p planes) in Matroska; returns the frame count.

    ``what`` says where the frames came from; it goes into the file's comment
    after the viewing-copy mark, so measurement refuses the file.
    """
    av = _av()
    path = Path(path)
    if path.suffix.lower() != ".mkv":
        raise OutputError(f"{path}: lossless clips are written as .mkv (FFV1)")
    n = 0
    try:
        with av.open(str(path), "w") as c:
            c.metadata["comment"] = f"{VIEWING_COPY_MARK}: FFV1 lossless copy of {what}; not for measurement"
            rate = Fraction(fps).limit_denominator(1001)
            st = c.add_stream("ffv1", rate=rate)
            st.width, st.height, st.pix_fmt = width, height, "yuv420p"
            for f in frames:
                f.pts, f.time_base = n, 1 / rate
                for pkt in st.encode(f):
                    c.mux(pkt)
                n += 1
            for pkt in st.encode():
                c.mux(pkt)
    except (av.error.FFmpegError, OSError) as e:
        raise OutputError(f"{path}: cannot write clip: {e}") from None
    return n


def digest(*parts: object) -> str:
    """Short stable digest of what an output depends on (its cache key)."""
    return hashlib.sha256("\n".join(str(p) for p in parts).encode()).hexdigest()[:24]


@dataclass(frozen=True)
class ClipSource:
    """A decoded viewing copy of a run: one sequence, codec and rate point."""

    sequence: str
    codec: str
    family: str
    rate_point: str  # the rate point's label, e.g. "qp32"
    qp: int | None
    kbps: float
    path: Path  # decoded.mp4 (lossy H.264 viewing copy)
    frames: int
    fps: float
    width: int
    height: int
    sequence_sha256: str


def run_clips(run_dir: Path) -> list[ClipSource]:
    """The decoded viewing copies of a run's current successful records (sorted by sequence, codec, rate).

    Records superseded by a rerun are left out (``gfvc.records.current_records_filter``), as in reports.
    """

    run_dir = Path(run_dir)
    current = current_records_filter(run_dir)
    out = []
    for r in iter_records(run_dir):
        art = (r.get("artifacts") or {}).get("decoded_mp4")
        if r.get("status") != "ok" or not current(r) or not art or not (run_dir / art).is_file():
            continue
        s, rp = r["sequence"], r.get("rate_point") or {}
        qp = rp.get("qp")
        out.append(ClipSource(sequence=s["name"], codec=r["codec"], family=str(r.get("family", "")),
                              rate_point=str(rp.get("label") or f"qp{qp}"), qp=int(qp) if qp is not None else None,
                              kbps=float(r.get("kbps") or 0.0), path=run_dir / art, frames=int(s["frames"]),
                              fps=float(s["fps"]), width=int(s["width"]), height=int(s["height"]),
                              sequence_sha256=str(s.get("sha256", ""))))
    return sorted(out, key=lambda c: (c.sequence, c.codec, -(c.qp if c.qp is not None else 0), c.kbps))
