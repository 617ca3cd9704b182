"""Shared plumbing of the conventional anchors.

Everything an anchor needs around an external program: locating the bundled
ffmpeg, running argv lists with a timeout and a per-job log, reading the
decoder's output (YUV4MPEG2 carries size, chroma format and bit depth, so a
decode never needs side information), bit-depth reduction that matches VTM's
``DecoderApp -d 8``, and a VVC header inspection (ffmpeg's ``trace_headers``
bitstream filter) that lets the suite *verify* what an encoder produced: one
intra picture, picture QPs, no CU-level QP changes.
"""
from __future__ import annotations

import copy
import functools
import hashlib
import re
import subprocess
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from gfvc.codec import Codec, Environment
from gfvc.errors import BitstreamError, ExternalToolError, InputError, NotAvailable
from gfvc.process import (  # noqa: F401  (re-exported: the anchors' names for the shared runner)
    CAUSE_MAX_CHARS,
    OUTPUT_NOISE,
    failure_cause,
    format_command,
    run_tool,
)
from gfvc.video import sha256_file

# --- timeouts -------------------------------------------------------------------

def job_timeout(condition: Any, env: Any) -> float:
    """The stricter of the condition's anchor timeout and the environment's."""
    vals = [float(getattr(getattr(condition, "anchor", None), "timeout_s", 0) or 0),
            float(getattr(env, "timeout_s", 0) or 0)]
    vals = [v for v in vals if v > 0]
    return min(vals) if vals else 3600.0


# How a decoder says it met bad data and went on: ffmpeg's native VVC decoder exits 0 after "Invalid data
# found when processing input" / "Error submitting packet" and writes fewer (or concealed) pictures; VTM's
# DecoderApp marks a failed picture-hash check with ***ERROR***.
_DECODER_ERROR = re.compile(r"invalid data|error while decoding|decoding error|error submitting packet|error parsing|"
                            r"conceal|corrupt|task finished with error|missing reference|\*\*\*\s*error", re.I)
_LOG_PREFIX = re.compile(r"\[[^\]]*@ 0x[0-9a-f]+\]\s*")  # ffmpeg's "[vist#0:0/vvc @ 0x55...]" context tags


def decoder_errors(output: str) -> list[str]:
    """The lines of a decoder's output that report bad data (each once, ffmpeg's context tags removed)."""
    found = [" ".join(_LOG_PREFIX.sub("", ln).split()) for ln in output.splitlines()
             if _DECODER_ERROR.search(ln) and not OUTPUT_NOISE.search(ln)]
    return list(dict.fromkeys(found))


def check_decoded(bitstream: Path, output: str, decoded: int | None, expected: int, *, what: str,
                  log: Path) -> None:
    """A VVC decode counts only when the decoder reported no bad data and output every picture of the stream.

    ``output``: the decoder's stdout + stderr; ``decoded``: pictures it wrote
    (None: not read yet, only the messages are checked); ``expected``: pictures
    the stream's own headers hold (:func:`vvc_stream_info`).
    """
    errs = decoder_errors(output)
    if errs:
        tail = " / ".join(errs[-2:])
        tail = tail if len(tail) <= CAUSE_MAX_CHARS else tail[:CAUSE_MAX_CHARS - 3] + "..."
        raise BitstreamError(f"{bitstream}: corrupt or truncated VVC stream: {what} reported {len(errs)} error(s), "
                             f"last: {tail}; full log: {log}")
    if decoded is not None and decoded != expected:
        raise BitstreamError(f"{bitstream}: corrupt or truncated VVC stream: {what} output {decoded} pictures, the "
                             f"stream's headers hold {expected}; full log: {log}")


def fps_arg(fps: float) -> str:
    """Frame rate as ffmpeg/VTM text; NTSC rates become exact N/1001 fractions."""
    n1001 = fps * 1001
    if abs(n1001 - round(n1001)) < 1e-3 and round(n1001) % 1000 == 0:
        return f"{round(n1001)}/1001"
    f = Fraction(fps).limit_denominator(1000)
    return str(f.numerator) if f.denominator == 1 else f"{f.numerator}/{f.denominator}"


def check_size(width: int, height: int, what: str) -> None:
    """VTM, VVenC and x265 refuse odd sizes for 4:2:0; refuse early with the reason."""
    if width <= 0 or height <= 0 or width % 2 or height % 2:
        raise InputError(f"{what}: width and height must be positive and even for 4:2:0 coding, got "
                         f"{width}x{height}; crop or pad the sequence (VTM and VVenC refuse odd sizes)")


def check_qp(qp: Any, what: str) -> int:
    if not isinstance(qp, (int, np.integer)) or isinstance(qp, bool) or not 0 <= int(qp) <= 63:
        raise InputError(f"{what}: QP must be an integer in 0..63, got {qp!r}")
    return int(qp)


# --- ffmpeg ------------------------------------------------------------------------

def ffmpeg_exe() -> Path:
    """The ffmpeg bundled in the imageio-ffmpeg wheel (has libvvenc and a VVC decoder)."""
    try:
        import imageio_ffmpeg
    except ImportError:
        raise NotAvailable("imageio-ffmpeg is not installed; fix: pip install imageio-ffmpeg==0.8.1 "
                           "(its wheel bundles an ffmpeg with libvvenc and a VVC decoder)") from None
    try:
        exe = Path(imageio_ffmpeg.get_ffmpeg_exe())
    except Exception as e:  # imageio-ffmpeg raises RuntimeError when no binary is found
        raise NotAvailable(f"imageio-ffmpeg found no ffmpeg binary ({e}); fix: reinstall the "
                           "imageio-ffmpeg wheel for this platform (pip install --force-reinstall "
                           "imageio-ffmpeg==0.8.1)") from None
    if not exe.is_file():
        raise NotAvailable(f"ffmpeg binary {exe} does not exist; fix: pip install --force-reinstall imageio-ffmpeg")
    return exe


@dataclass
class FfmpegInfo:
    path: str
    version: str
    sha256: str
    has_libvvenc: bool
    libvvenc_pix_fmts: list[str] = field(default_factory=list)
    has_vvc_decoder: bool = False
    libvvenc_version: str = ""


def _quick(argv: list[str], timeout: float = 60) -> str:
    try:
        p = subprocess.run([str(a) for a in argv], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           stdin=subprocess.DEVNULL, text=True, errors="replace", timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise NotAvailable(f"cannot run {argv[0]}: {e}") from None
    return p.stdout or ""


@functools.lru_cache(maxsize=8)
def _ffmpeg_info_cached(path: str, mtime: float, size: int) -> FfmpegInfo:
    version = _quick([path, "-hide_banner", "-version"]).splitlines()
    enc = _quick([path, "-hide_banner", "-h", "encoder=libvvenc"])
    has_vvenc = "Encoder libvvenc" in enc
    fmts: list[str] = []
    m = re.search(r"Supported pixel formats:\s*(.+)", enc)
    if m:
        fmts = m.group(1).split()
    decs = _quick([path, "-hide_banner", "-decoders"])
    has_dec = re.search(r"^\s*V\S*\s+vvc\s", decs, re.M) is not None
    vv_version = ""
    if has_vvenc:
        # libvvenc prints its version when an encoder is opened: code one tiny grey picture.
        out = _quick([path, "-hide_banner", "-nostdin", "-f", "lavfi", "-i", "color=gray:s=16x16:d=0.04",
                      "-frames:v", "1", "-c:v", "libvvenc", "-preset", "faster", "-f", "null", "-"])
        m = re.search(r"libvvenc version:\s*(\S+)", out)
        vv_version = m.group(1) if m else ""
    return FfmpegInfo(path=path, version=version[0] if version else "", sha256=sha256_file(path),
                      has_libvvenc=has_vvenc, libvvenc_pix_fmts=fmts, has_vvc_decoder=has_dec,
                      libvvenc_version=vv_version)


def ffmpeg_info(exe: Path | None = None) -> FfmpegInfo:
    """Version, sha256 and capabilities of ffmpeg (cached per binary path+mtime+size)."""
    exe = exe or ffmpeg_exe()
    st = exe.stat()
    return _ffmpeg_info_cached(str(exe), st.st_mtime, st.st_size)


# --- YUV4MPEG2 ---------------------------------------------------------------------

@dataclass
class Y4M:
    """Decoded planes: y (T, H, W), u/v (T, Hc, Wc); uint8 or uint16 per bit_depth."""

    y: np.ndarray
    u: np.ndarray
    v: np.ndarray
    width: int
    height: int
    chroma: str          # "420" | "444"
    bit_depth: int

    @property
    def frames(self) -> int:
        return int(self.y.shape[0])


_Y4M_CS = {"420": ("420", 8), "420jpeg": ("420", 8), "420mpeg2": ("420", 8), "420paldv": ("420", 8),
           "420p10": ("420", 10), "420p12": ("420", 12), "444": ("444", 8), "444p10": ("444", 10),
           "444p12": ("444", 12)}


def read_y4m(path: Path) -> Y4M:
    """Parse a YUV4MPEG2 file written by ffmpeg (-strict -1 for >8-bit formats)."""
    if not Path(path).is_file():
        raise ExternalToolError(f"the decoder produced no output ({path}); the stream may be empty or corrupt")
    data = Path(path).read_bytes()
    nl = data.find(b"\n")
    if not data.startswith(b"YUV4MPEG2 ") or nl < 0:
        raise ExternalToolError(f"{path}: decoder output is not a YUV4MPEG2 file")
    w = h = 0
    cs = "420"
    for tok in data[10:nl].decode("ascii", "replace").split():
        if tok[0] == "W":
            w = int(tok[1:])
        elif tok[0] == "H":
            h = int(tok[1:])
        elif tok[0] == "C":
            cs = tok[1:]
    if cs not in _Y4M_CS or w <= 0 or h <= 0:
        raise ExternalToolError(f"{path}: unsupported YUV4MPEG2 stream (W{w} H{h} C{cs})")
    chroma, depth = _Y4M_CS[cs]
    bps = 1 if depth == 8 else 2
    cw, ch = (w // 2, h // 2) if chroma == "420" else (w, h)
    fb = (w * h + 2 * cw * ch) * bps
    ys, us, vs = [], [], []
    pos = nl + 1
    dtype = np.uint8 if bps == 1 else np.dtype("<u2")
    while pos < len(data):
        fnl = data.find(b"\n", pos)
        if fnl < 0 or not data.startswith(b"FRAME", pos):
            raise ExternalToolError(f"{path}: corrupt YUV4MPEG2 frame header at byte {pos}")
        start = fnl + 1
        if start + fb > len(data):
            raise ExternalToolError(f"{path}: truncated YUV4MPEG2 frame at byte {start}")
        a = np.frombuffer(data, dtype=dtype, count=fb // bps, offset=start)
        ys.append(a[: w * h].reshape(h, w))
        us.append(a[w * h: w * h + cw * ch].reshape(ch, cw))
        vs.append(a[w * h + cw * ch:].reshape(ch, cw))
        pos = start + fb
    if not ys:
        raise ExternalToolError(f"{path}: the decoder produced no frames")
    return Y4M(np.stack(ys), np.stack(us), np.stack(vs), w, h, chroma, depth)


def to_8bit(plane: np.ndarray, bit_depth: int) -> np.ndarray:
    """Reduce to 8 bits by rounding, as VTM's DecoderApp ``-d 8`` does ((x + 2^(s-1)) >> s).

    ffmpeg/PyAV dither by default when converting 10-bit to 8-bit; dithering
    would make the anchor's quality depend on the tool, so it is never used.
    """
    if bit_depth == 8:
        return plane.astype(np.uint8, copy=False)
    s = bit_depth - 8
    return np.minimum((plane.astype(np.int32) + (1 << (s - 1))) >> s, 255).astype(np.uint8)


def read_yuv_file(path: Path, width: int, height: int, *, chroma: str = "420",
                  sixteen_bit: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Raw planar YUV (8-bit or 16-bit LE samples); the frame count comes from the file size."""
    bps = 2 if sixteen_bit else 1
    cw, ch = (width // 2, height // 2) if chroma == "420" else (width, height)
    fb = (width * height + 2 * cw * ch) * bps
    size = Path(path).stat().st_size
    if size == 0 or size % fb:
        raise ExternalToolError(f"{path}: {size} bytes is not a whole number of {width}x{height} "
                                f"{chroma} {'16' if sixteen_bit else '8'}-bit frames ({fb} bytes each)")
    n = size // fb
    a = np.fromfile(path, dtype=np.uint8 if bps == 1 else np.dtype("<u2")).reshape(n, -1)
    y = a[:, : width * height].reshape(n, height, width)
    u = a[:, width * height: width * height + cw * ch].reshape(n, ch, cw)
    v = a[:, width * height + cw * ch:].reshape(n, ch, cw)
    return y, u, v


def write_planes(path: Path, y: np.ndarray, u: np.ndarray, v: np.ndarray) -> None:
    """Write planar frames (Y, U, V per frame), 8-bit."""
    with open(path, "wb") as f:
        for i in range(y.shape[0]):
            f.write(np.ascontiguousarray(y[i], dtype=np.uint8).tobytes())
            f.write(np.ascontiguousarray(u[i], dtype=np.uint8).tobytes())
            f.write(np.ascontiguousarray(v[i], dtype=np.uint8).tobytes())


# --- VVC header inspection ---------------------------------------------------------------

@dataclass
class VvcPicture:
    """What the headers say about one coded picture (access unit)."""

    nal_types: list[int]
    intra: bool
    qp: int | None
    poc_lsb: int | None


@dataclass
class VvcStreamInfo:
    width: int
    height: int
    bit_depth: int
    chroma_format_idc: int
    cu_qp_delta_enabled: bool
    pictures: list[VvcPicture]

    @property
    def intra_pictures(self) -> int:
        return sum(p.intra for p in self.pictures)

    @property
    def picture_qps(self) -> list[int | None]:
        return [p.qp for p in self.pictures]


_TRACE_RE = re.compile(r"\]\s+\d+\s+(\w+)(?:\[[^\]]*\])?\s+[01]+\s+=\s+(-?\d+)\s*$")


# Header traces by (sha256 of the stream's bytes, ffmpeg): a job parses the same bytes up to three times
# (the encoder's check, its closed-loop decode of the key frame, the job's decode), one ffmpeg run each.
_STREAM_INFO: OrderedDict[tuple[str, str], VvcStreamInfo] = OrderedDict()
_STREAM_INFO_MAX = 64
_STREAM_INFO_LOCK = threading.Lock()


def vvc_stream_info(bitstream: Path, *, ffmpeg: Path | None = None, timeout: float = 600,
                    log: Path | None = None) -> VvcStreamInfo:
    """Read SPS/PPS/picture/slice headers with ffmpeg's trace_headers filter.

    Slice QP = 26 + pps_init_qp_minus26 + ph_qp_delta/sh_qp_delta (first
    slice of each picture; one PPS assumed, which holds for VTM and VVenC
    with default settings). Display size applies the conformance window.
    The same bytes read by the same ffmpeg are parsed once per process (the
    result depends on nothing else); a failed parse is not remembered.
    """
    exe = ffmpeg or ffmpeg_exe()
    try:
        digest = hashlib.sha256(Path(bitstream).read_bytes()).hexdigest()
    except OSError:
        return _trace_stream_info(bitstream, exe, timeout, log)  # ffmpeg says what is wrong with the path
    key = (digest, str(exe))
    with _STREAM_INFO_LOCK:
        hit = _STREAM_INFO.get(key)
        if hit is not None:
            _STREAM_INFO.move_to_end(key)
    if hit is not None:
        if log is not None:
            with open(log, "a", encoding="utf-8") as lf:
                lf.write(f"[header trace of {bitstream}: the same bytes (sha256 {digest[:16]}...) were parsed "
                         f"before in this process; reused]\n")
        return copy.deepcopy(hit)
    info = _trace_stream_info(bitstream, exe, timeout, log)
    with _STREAM_INFO_LOCK:
        _STREAM_INFO[key] = copy.deepcopy(info)
        while len(_STREAM_INFO) > _STREAM_INFO_MAX:
            _STREAM_INFO.popitem(last=False)
    return info


def _trace_stream_info(bitstream: Path, exe: Path | str, timeout: float, log: Path | None) -> VvcStreamInfo:
    argv = [str(exe), "-hide_banner", "-nostdin", "-loglevel", "trace", "-f", "vvc", "-i", str(bitstream),
            "-c", "copy", "-bsf:v", "trace_headers", "-f", "null", "-"]
    try:
        p = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                           text=True, errors="replace", timeout=timeout)
    except subprocess.TimeoutExpired:
        raise ExternalToolError(f"ffmpeg trace_headers timed out on {bitstream}") from None
    if log is not None:
        with open(log, "a", encoding="utf-8") as lf:
            lf.write(f"$ {format_command(argv)}\n[header trace: {len(p.stdout or '')} chars, not logged]\n")
    if p.returncode != 0:  # the parser's own complaints say why (e.g. "Failed to read unit 0 (type 15)": the SPS)
        errs = [ln for ln in decoder_errors(p.stdout or "") if "trace_headers" not in ln]
        why = " / ".join(errs[:2]) if errs else failure_cause(p.stdout or "")
        raise BitstreamError(f"{bitstream}: corrupt or truncated VVC stream: ffmpeg cannot parse its headers: "
                             f"{why[:CAUSE_MAX_CHARS]}")
    sps: dict[str, int] = {}
    init_qp = 0
    cu_dqp = False
    pics: list[VvcPicture] = []
    cur: dict[str, Any] | None = None
    in_extradata = False

    def close() -> None:
        if cur is not None and cur["nals"]:
            vcl = [t for t in cur["nals"] if t <= 12]
            if vcl:
                pics.append(VvcPicture(cur["nals"], bool(cur["intra"]), cur["qp"], cur["poc"]))

    for line in (p.stdout or "").splitlines():
        if "trace_headers" not in line:
            continue
        if line.rstrip().endswith("Extradata"):
            in_extradata = True
            continue
        if "] Packet:" in line:
            in_extradata = False
            close()
            cur = {"nals": [], "intra": None, "qp": None, "poc": None, "ph_qp": 0, "in_ph": None}
            continue
        m = _TRACE_RE.search(line)
        if not m:
            continue
        name, val = m.group(1), int(m.group(2))
        if name.startswith("sps_"):
            sps[name] = val
        elif name == "pps_init_qp_minus26":
            init_qp = val
        elif name == "pps_cu_qp_delta_enabled_flag":
            cu_dqp = cu_dqp or bool(val)
        if in_extradata or cur is None:
            continue
        if name == "nal_unit_type":
            cur["nals"].append(val)
        elif name == "ph_inter_slice_allowed_flag" and cur["intra"] is None:
            cur["intra"] = val == 0
        elif name == "ph_pic_order_cnt_lsb" and cur["poc"] is None:
            cur["poc"] = val
        elif name == "ph_qp_delta" and cur["qp"] is None:
            cur["qp"] = 26 + init_qp + val
        elif name == "sh_slice_type" and cur.get("slice_type") is None:
            cur["slice_type"] = val
            if val != 2:
                cur["intra"] = False
        elif name == "sh_qp_delta" and cur["qp"] is None:
            cur["qp"] = 26 + init_qp + val
    close()
    for pic in pics:  # a picture with PPS-level QP only (no deltas coded)
        if pic.qp is None:
            pic.qp = 26 + init_qp
    w = sps.get("sps_pic_width_max_in_luma_samples", 0)
    h = sps.get("sps_pic_height_max_in_luma_samples", 0)
    cf = sps.get("sps_chroma_format_idc", 1)
    sw = 2 if cf in (1, 2) else 1
    sh = 2 if cf == 1 else 1
    w -= sw * (sps.get("sps_conf_win_left_offset", 0) + sps.get("sps_conf_win_right_offset", 0))
    h -= sh * (sps.get("sps_conf_win_top_offset", 0) + sps.get("sps_conf_win_bottom_offset", 0))
    if not pics or w <= 0 or h <= 0:
        raise BitstreamError(f"{bitstream}: no VVC pictures or no SPS found")
    return VvcStreamInfo(width=w, height=h, bit_depth=8 + sps.get("sps_bitdepth_minus8", 0),
                         chroma_format_idc=cf, cu_qp_delta_enabled=cu_dqp, pictures=pics)


def templated(commands: list[list[str]], qp_flags: tuple[str, ...] = ("-qp", "-q")) -> list[list[str]]:
    """Commands with the QP value replaced by ``{qp}`` (for provenance / --dry-run listings)."""
    out = []
    for cmd in commands:
        c = [str(a) for a in cmd]
        for i, a in enumerate(c[:-1]):
            if a in qp_flags:
                c[i + 1] = "{qp}"
        out.append(c)
    return out


def file_sha256(path: Path | str | None) -> str:
    return sha256_file(path) if path and Path(path).is_file() else ""


class AnchorCodec(Codec):
    """Shared plumbing of the conventional anchors: timeouts and the frame-count check.

    The encoder remembers how many frames each bitstream it wrote should hold,
    so the decoder of the same instance can catch a silent frame shortfall
    (VTM codes fewer frames than asked when the input is short).
    """

    family = "anchor"

    def __init__(self, condition: Any, env: Environment | None = None) -> None:
        super().__init__(condition, env)
        self._expected_frames: dict[str, int] = {}

    def _timeout(self) -> float:
        return job_timeout(self.condition, self.env)
