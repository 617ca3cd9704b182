"""VVenC anchor through the ffmpeg bundled in the imageio-ffmpeg wheel.

An approximation of the CTC's VTM-22.2 low-delay B anchor that runs with no
external build (CTC_FACTS section 7): ``-c:v libvvenc -qp N -qpa 0`` with
vvenc-params GOPSize/PicReordering=0/DecodingRefreshType=none/
IntraPeriod=-1/AccessUnitDelimiter=0, plus three settings found necessary
by inspecting the produced headers (docs/vtm.md):

* ``MCTF=0``: VVenC's temporal pre-filter also filters the intra picture and
  then moves its QP by +-1 depending on content (measured: QP 37 coded as 36
  or 38). VTM's LDB cfg filters only every 8th picture from past references,
  so its intra picture is unfiltered. Off, the intra picture is coded at
  exactly QP + IntraQPOffset.
* ``BIM=0``: VVenC's block importance mapping is on by default even with
  ``-qpa 0``; it enables cu_qp_delta and changes QPs per CTU. Off, every
  picture is coded at one QP (base QP + the fixed GOP offsets).
* ``InternalBitDepth`` from ``condition.anchor.internal_bit_depth`` (8 in the
  GFVC software's cfg edit; VVenC's ffmpeg wrapper defaults to 10).
* ``IntraQPOffset`` from ``condition.anchor.intra_qp_offset`` (VVenC has the
  same option as VTM).

libvvenc in this ffmpeg accepts only yuv420p10le; the 8-bit yuv420p input is
converted by swscale with an exact left shift by 2 (verified), and VVenC
shifts back with rounding when coding at 8 bits, so the 8-bit samples reach
the encoder unchanged.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from anchors.common import (
    Y4M,
    AnchorCodec,
    FfmpegInfo,
    VvcStreamInfo,
    check_decoded,
    check_qp,
    check_size,
    failure_cause,
    ffmpeg_exe,
    ffmpeg_info,
    fps_arg,
    read_y4m,
    run_tool,
    templated,
    to_8bit,
    vvc_stream_info,
    write_planes,
)
from gfvc.codec import CODECS, Decoded, EncodeResult, Environment, RatePoint, Sequence, YuvPlanes, check_frames
from gfvc.errors import ExternalToolError, NotAvailable
from gfvc.video import rgb_to_yuv420, yuv420_to_rgb, yuv444_to_rgb

LOG_NAME = "vvenc.log"


@dataclass(frozen=True)
class VvencSettings:
    """Everything that defines a VVenC encode besides the pictures."""

    qp: int
    preset: str = "medium"
    gop_size: int = 8
    intra_period: int = -1
    internal_bit_depth: int = 8
    intra_qp_offset: int = 0
    threads: int = 1
    extra_params: tuple[str, ...] = ()

    def params(self) -> str:
        """The ``-vvenc-params`` string (key=value pairs joined by ':')."""
        kv = [f"GOPSize={self.gop_size}", "PicReordering=0", "DecodingRefreshType=none",
              f"IntraPeriod={self.intra_period}", "AccessUnitDelimiter=0", "BIM=0", "MCTF=0",
              f"InternalBitDepth={self.internal_bit_depth}", f"IntraQPOffset={self.intra_qp_offset}"]
        return ":".join(kv + list(self.extra_params))


def settings_for(condition: Any, env: Environment | None, qp: int) -> VvencSettings:
    """Settings from the condition (what defines results) and env (threads, extra params)."""
    a = condition.anchor
    extra = dict(getattr(env, "extra", None) or {})
    ex = extra.get("vvenc_params", ())
    if isinstance(ex, str):
        ex = tuple(p for p in ex.split(":") if p)
    return VvencSettings(qp=check_qp(qp, "vvenc"), preset=a.vvenc_preset, gop_size=int(a.gop_size),
                         intra_period=int(a.intra_period), internal_bit_depth=int(a.internal_bit_depth),
                         intra_qp_offset=int(a.intra_qp_offset), threads=int(extra.get("vvenc_threads", 1)),
                         extra_params=tuple(ex))


def encode_command(ffmpeg: Path | str, yuv: Path, out: Path, *, width: int, height: int, fps: float,
                   frames: int, settings: VvencSettings) -> list[str]:
    """argv of one VVenC encode of a raw yuv420p file into a raw VVC elementary stream."""
    return [str(ffmpeg), "-hide_banner", "-nostdin", "-y", "-loglevel", "info",
            "-f", "rawvideo", "-pix_fmt", "yuv420p", "-s", f"{width}x{height}", "-r", fps_arg(fps),
            "-i", str(yuv), "-frames:v", str(frames), "-an",
            "-c:v", "libvvenc", "-preset", settings.preset, "-qp", str(settings.qp), "-qpa", "0",
            "-threads", str(settings.threads), "-vvenc-params", settings.params(),
            "-f", "vvc", str(out)]


def decode_command(ffmpeg: Path | str, bitstream: Path, out_y4m: Path) -> list[str]:
    """argv of a decode with ffmpeg's native VVC decoder to YUV4MPEG2 at the stream's bit depth.

    No -pix_fmt: the decoder's own format is written, so no conversion (and no
    dithering) happens inside ffmpeg; bit-depth reduction is done by
    :func:`anchors.common.to_8bit` like VTM's ``-d 8``.
    """
    return [str(ffmpeg), "-hide_banner", "-nostdin", "-y", "-loglevel", "info", "-threads", "1",
            "-f", "vvc", "-i", str(bitstream), "-f", "yuv4mpegpipe", "-strict", "-1", str(out_y4m)]


def require_vvenc(info: FfmpegInfo | None = None) -> FfmpegInfo:
    """Raise NotAvailable (with the fix) unless ffmpeg has libvvenc and a VVC decoder."""
    info = info or ffmpeg_info()
    fix = ("fix: pip install --force-reinstall imageio-ffmpeg==0.8.1 (its static ffmpeg 9.0.2 has libvvenc "
           "and the native VVC decoder), or use the 'vtm' anchor with --vtm-dir")
    if not info.has_libvvenc:
        raise NotAvailable(f"ffmpeg {info.path} has no libvvenc encoder; {fix}")
    if not info.has_vvc_decoder:
        raise NotAvailable(f"ffmpeg {info.path} has no VVC decoder; {fix}")
    return info


def encode_planes(y: np.ndarray, u: np.ndarray, v: np.ndarray, out: Path, *, fps: float,
                  settings: VvencSettings, workdir: Path, timeout: float,
                  log: Path) -> tuple[list[list[str]], VvcStreamInfo]:
    """Encode 8-bit 4:2:0 planes; verify the stream's picture count, intra count and QPs."""
    t, h, w = y.shape
    check_size(w, h, "vvenc")
    info = require_vvenc()
    yuv = workdir / (out.stem + ".input.yuv")
    write_planes(yuv, y, u, v)
    cmd = encode_command(info.path, yuv, out, width=w, height=h, fps=fps, frames=t, settings=settings)
    try:
        run_tool(cmd, timeout=timeout, log=log, what="ffmpeg/libvvenc")
    finally:
        yuv.unlink(missing_ok=True)
    if not out.is_file() or out.stat().st_size == 0:
        raise ExternalToolError(f"ffmpeg/libvvenc wrote no bitstream to {out}; log {log}")
    sinfo = vvc_stream_info(out, ffmpeg=Path(info.path), timeout=timeout, log=log)
    if len(sinfo.pictures) != t:
        raise ExternalToolError(f"vvenc coded {len(sinfo.pictures)} pictures, {t} were given; log {log}")
    if (sinfo.width, sinfo.height) != (w, h):
        raise ExternalToolError(f"vvenc stream is {sinfo.width}x{sinfo.height}, input was {w}x{h}")
    if settings.intra_period == -1 and sinfo.intra_pictures != 1:
        raise ExternalToolError(f"vvenc stream has {sinfo.intra_pictures} intra pictures, expected 1 "
                                f"(IntraPeriod=-1); check the vvenc-params; log {log}")
    if settings.intra_period == -1 and not settings.extra_params and sinfo.pictures[0].qp != min(
            63, max(0, settings.qp + settings.intra_qp_offset)):
        raise ExternalToolError(f"vvenc coded the intra picture at QP {sinfo.pictures[0].qp}, expected "
                                f"{settings.qp + settings.intra_qp_offset}; log {log}")
    if sinfo.cu_qp_delta_enabled and not settings.extra_params:
        raise ExternalToolError("vvenc enabled CU-level QP changes although QPA and BIM are off; "
                                f"the anchor would not be constant-QP; log {log}")
    return [cmd], sinfo


def decode_planes(bitstream: Path, workdir: Path, *, timeout: float, log: Path) -> tuple[list[list[str]], Y4M]:
    """Decode a VVC elementary stream with the bundled ffmpeg (stream alone defines size/depth).

    ffmpeg's decoder exits 0 on a damaged stream, skipping what it cannot decode;
    so its messages are checked and the pictures it wrote are counted against the
    stream's own headers (:func:`anchors.common.check_decoded`).
    """
    info = require_vvenc()
    sinfo = vvc_stream_info(Path(bitstream), ffmpeg=Path(info.path), timeout=timeout, log=log)
    out = workdir / (Path(bitstream).stem + ".decoded.y4m")
    cmd = decode_command(info.path, Path(bitstream), out)
    what = "ffmpeg's VVC decoder"
    try:
        proc = run_tool(cmd, timeout=timeout, log=log, what="ffmpeg VVC decoder", check=False)
        output = (proc.stderr or "") + (proc.stdout or "")
        check_decoded(Path(bitstream), output, None, len(sinfo.pictures), what=what, log=log)
        if proc.returncode != 0:
            raise ExternalToolError(f"ffmpeg VVC decoder failed (exit code {proc.returncode}): "
                                    f"{failure_cause(proc.stderr or '', proc.stdout or '')}; full log: {log}")
        y4m = read_y4m(out)
    finally:
        out.unlink(missing_ok=True)
    check_decoded(Path(bitstream), "", y4m.frames, len(sinfo.pictures), what=what, log=log)
    return [cmd], y4m


def y4m_planes(d: Y4M) -> YuvPlanes:
    """The decoder's planes at 8 bits (reduced by rounding like VTM's DecoderApp -d 8)."""
    return YuvPlanes(*(to_8bit(p, d.bit_depth) for p in (d.y, d.u, d.v)))


def planes_to_rgb(planes: YuvPlanes, condition: Any) -> np.ndarray:
    """8-bit decoder planes -> uint8 RGB per condition.colour."""
    c = condition.colour
    if planes.chroma == "444":
        return yuv444_to_rgb(planes.y, planes.u, planes.v, c.matrix, c.range)
    return yuv420_to_rgb(planes.y, planes.u, planes.v, c.matrix, c.range)


def y4m_to_rgb(d: Y4M, condition: Any) -> np.ndarray:
    """Decoded planes -> uint8 RGB per condition.colour (bit depth reduced like VTM -d 8)."""
    return planes_to_rgb(y4m_planes(d), condition)


@CODECS.register()
class VvencCodec(AnchorCodec):
    """VVC anchor by VVenC (bundled ffmpeg), low delay, constant QP; an approximation of VTM LDB."""

    name = "vvenc"
    family = "anchor"
    description = ("VVenC via the bundled ffmpeg (libvvenc), low delay, one intra picture, constant QP; "
                   "approximates the VTM-22.2 LDB anchor (see docs/vtm.md)")

    def check(self) -> None:
        require_vvenc(ffmpeg_info(ffmpeg_exe()))

    def plan(self, sequence_name: str, width: int, height: int, frames: int, fps: float, qp: int,
             workdir: Path, stem: str | None = None) -> list[list[str]]:
        """The commands encode/decode would run (for --dry-run); nothing is executed."""
        try:
            exe: Path | str = ffmpeg_exe()
        except NotAvailable:
            exe = "ffmpeg"
        workdir = Path(workdir)
        stem = stem or f"{sequence_name}_qp{qp}"
        s = settings_for(self.condition, self.env, qp)
        return [encode_command(exe, workdir / f"{stem}.input.yuv", workdir / f"{stem}.266", width=width,
                               height=height, fps=fps, frames=frames, settings=s),
                decode_command(exe, workdir / f"{stem}.266", workdir / f"{stem}.decoded.y4m")]

    def encode(self, sequence: Sequence, rate_point: RatePoint, workdir: Path) -> EncodeResult:
        check_frames(sequence.frames, what=f"sequence {sequence.name!r}")
        check_size(sequence.width, sequence.height, f"vvenc, sequence {sequence.name!r}")
        if self.condition.colour.chroma != "420":
            raise NotAvailable("vvenc anchor: libvvenc in the bundled ffmpeg accepts only 4:2:0 "
                               "(yuv420p10le); set colour.chroma: '420' or use the 'vtm' anchor")
        workdir = Path(workdir).resolve()
        workdir.mkdir(parents=True, exist_ok=True)
        log = workdir / LOG_NAME
        s = settings_for(self.condition, self.env, rate_point.qp)
        c = self.condition.colour
        y, u, v = rgb_to_yuv420(sequence.frames, c.matrix, c.range, c.chroma_downsampling)
        out = workdir / f"{sequence.name}_{rate_point.key}.266"
        t0 = time.monotonic()
        cmds, sinfo = encode_planes(y, u, v, out, fps=sequence.fps, settings=s, workdir=workdir,
                                    timeout=self._timeout(), log=log)
        self._expected_frames[str(out.resolve())] = sequence.num_frames
        bits = out.stat().st_size * 8
        return EncodeResult(bitstream=out, bits_breakdown={"vvc": bits}, commands=cmds,
                            info={"encoder": "vvenc", "settings": asdict(s), "vvenc_params": s.params(),
                                  "picture_qps": sinfo.picture_qps, "intra_pictures": sinfo.intra_pictures,
                                  "coded_bit_depth": sinfo.bit_depth, "log": str(log),
                                  "encode_seconds": round(time.monotonic() - t0, 3)})

    def decode(self, bitstream: Path, workdir: Path) -> Decoded:
        workdir = Path(workdir).resolve()
        workdir.mkdir(parents=True, exist_ok=True)
        log = workdir / LOG_NAME
        _, d = decode_planes(Path(bitstream), workdir, timeout=self._timeout(), log=log)
        want = self._expected_frames.get(str(Path(bitstream).resolve()))
        if want is not None and d.frames != want:
            raise ExternalToolError(f"decoded {d.frames} frames from {bitstream}, {want} were coded; log {log}")
        planes = y4m_planes(d)
        return Decoded(frames=planes_to_rgb(planes, self.condition), planes=planes)

    def decoder_description(self) -> str:
        """Which program decodes (named by `gfvc decode`)."""
        return f"ffmpeg native VVC decoder ({ffmpeg_exe()})"

    def provenance(self) -> dict[str, Any]:
        info = ffmpeg_info(ffmpeg_exe())
        s = settings_for(self.condition, self.env, int(self.condition.anchor.qps[0]))
        settings = asdict(s)
        settings.pop("qp")
        return {"codec": self.name, "family": self.family, "tool": "ffmpeg+libvvenc",
                "ffmpeg_path": info.path, "ffmpeg_version": info.version, "ffmpeg_sha256": info.sha256,
                "libvvenc_version": info.libvvenc_version, "libvvenc_pix_fmts": info.libvvenc_pix_fmts,
                "settings": settings, "vvenc_params": s.params(), "qpa": 0,
                "input": "yuv420p 8-bit raw (swscale -> yuv420p10le, exact <<2)",
                "decoder": "ffmpeg native vvc -> yuv4mpegpipe; >8-bit reduced by rounding (like VTM -d 8)",
                "colour": asdict(self.condition.colour),
                "approximates": "VTM-22.2 encoder_lowdelay_vtm.cfg (see docs/vtm.md)",
                "command_templates": templated(self.plan(
                    "{sequence}", self.condition.width, self.condition.height, self.condition.frames,
                    self.condition.fps, int(self.condition.anchor.qps[0]), Path("{workdir}"),
                    stem="{sequence}_{rate_point}"))}
