"""Single intra-picture coding of a key frame (used by generative codecs).

Generative codecs code frame 0 as one VVC intra picture at the key-frame QP
(CTC_FACTS section 1: VTM, YUV 4:2:0; RGB 4:4:4 is an option in the GFVC
software). This module is the one place that does it, with either the
embedded VVenC (bundled ffmpeg) or the user's VTM build, so every generative
codec's key frame is coded the same way and its bits are the raw VVC
elementary stream (parameter sets included).

Chroma "444" codes YUV 4:4:4 (converted per ``condition.colour``). The
libvvenc encoder in the bundled ffmpeg accepts only 4:2:0 input
(yuv420p10le), so ``coder="vvenc", chroma="444"`` raises NotAvailable; VTM
supports 4:4:4 (``--InputChromaFormat=444 --ChromaFormatIDC=444``).

A VTM intra picture is coded with the anchor's LDB cfg and ``-f 1`` (one
frame of an LDB sequence is an intra picture); ``env.extra["vtm_intra_cfg"]``
selects another cfg (e.g. encoder_intra_vtm.cfg). The choice is recorded by
:func:`intra_provenance`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from anchors import vtm as _vtm
from anchors import vvenc as _vvenc
from anchors.common import check_qp, check_size, ffmpeg_exe, ffmpeg_info, file_sha256, job_timeout
from gfvc.codec import Environment
from gfvc.condition import Condition
from gfvc.errors import BitstreamError, ExternalToolError, InputError, NotAvailable
from gfvc.stages import KEY_FRAME_CODERS, KeyFrameCoder, KeyFramePayload
from gfvc.video import rgb_to_yuv420, rgb_to_yuv444, yuv420_to_rgb, yuv444_to_rgb

CODERS = ("vvenc", "vtm")
CHROMAS = ("420", "444")
LOG_NAME = "intra.log"
_FPS = 25.0  # a single picture: the frame rate only reaches timing metadata


@dataclass
class IntraResult:
    """Raw VVC bitstream of one intra picture and the commands that made it."""

    payload: bytes
    commands: list[list[str]] = field(default_factory=list)


def _check_args(coder: str, chroma: str) -> None:
    if coder not in CODERS:
        raise InputError(f"intra coder must be one of {list(CODERS)}, got {coder!r}")
    if chroma not in CHROMAS:
        raise InputError(f"intra chroma must be one of {list(CHROMAS)}, got {chroma!r}")


def _vvenc_444_check() -> None:
    fmts = ffmpeg_info(ffmpeg_exe()).libvvenc_pix_fmts
    if not any(f.startswith("yuv444") for f in fmts):
        raise NotAvailable(f"intra coding at 4:4:4 with vvenc: the bundled ffmpeg's libvvenc accepts only "
                           f"{', '.join(fmts) or 'unknown formats'} (VVenC codes 4:2:0 only); use chroma '420' "
                           f"or coder 'vtm' (generative.key_frame_coder: vtm, with --vtm-dir)")
    raise NotAvailable("intra coding at 4:4:4 with vvenc is not implemented for this ffmpeg build")


def _planes(frame: np.ndarray, chroma: str, condition: Condition) -> tuple[np.ndarray, ...]:
    c = condition.colour
    f = frame[None]
    if chroma == "420":
        return rgb_to_yuv420(f, c.matrix, c.range, c.chroma_downsampling)
    return rgb_to_yuv444(f, c.matrix, c.range)


def _vtm_intra_cfg(env: Environment, tools: _vtm.VtmTools) -> Path:
    p = (env.extra or {}).get("vtm_intra_cfg")
    if p:
        p = Path(p).expanduser()
        if not p.is_file():
            raise NotAvailable(f"vtm_intra_cfg {p} does not exist")
        return p
    return tools.cfg


def encode_intra(frame: np.ndarray, qp: int, *, coder: str, chroma: str, condition: Condition,
                 env: Environment, workdir: Path) -> IntraResult:
    """Code one RGB frame (H, W, 3) uint8 as a single VVC intra picture."""
    _check_args(coder, chroma)
    if not isinstance(frame, np.ndarray) or frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
        raise InputError(f"encode_intra: expected one uint8 RGB frame (H, W, 3), got "
                         f"{getattr(frame, 'dtype', type(frame).__name__)} {getattr(frame, 'shape', '')}")
    h, w = frame.shape[:2]
    check_size(w, h, f"intra ({coder})")
    qp = check_qp(qp, f"intra ({coder})")
    workdir = Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    log = workdir / LOG_NAME
    timeout = job_timeout(condition, env)
    out = workdir / f"intra_qp{qp}.266"
    y, u, v = _planes(frame, chroma, condition)
    if coder == "vvenc":
        if chroma == "444":
            _vvenc_444_check()
        s = _vvenc.settings_for(condition, env, qp)
        cmds, sinfo = _vvenc.encode_planes(y, u, v, out, fps=_FPS, settings=s, workdir=workdir,
                                           timeout=timeout, log=log)
        if sinfo.intra_pictures != 1 or len(sinfo.pictures) != 1:
            raise ExternalToolError(f"vvenc intra: expected one intra picture, stream has "
                                    f"{len(sinfo.pictures)} pictures ({sinfo.intra_pictures} intra); log {log}")
    else:
        tools = _vtm.find_vtm(env)
        a = condition.anchor
        cmds = _vtm.encode_planes(tools, y, u, v, out, fps=_FPS, qp=qp, internal_bit_depth=a.internal_bit_depth,
                                  intra_qp_offset=a.intra_qp_offset, chroma=chroma, intra_period=-1,
                                  workdir=workdir, timeout=timeout, log=log, cfg=_vtm_intra_cfg(env, tools),
                                  extra=_vtm._extra_args(env))
    try:
        payload = out.read_bytes()
    finally:
        out.unlink(missing_ok=True)
    return IntraResult(payload=payload, commands=cmds)


def decode_intra(payload: bytes, *, width: int, height: int, coder: str, chroma: str,
                 condition: Condition, env: Environment, workdir: Path) -> np.ndarray:
    """Decode a payload from :func:`encode_intra` to an (H, W, 3) uint8 RGB frame."""
    _check_args(coder, chroma)
    if not payload:
        raise BitstreamError("key-frame payload is empty")
    workdir = Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    log = workdir / LOG_NAME
    timeout = job_timeout(condition, env)
    bs = workdir / "intra_payload.266"
    bs.write_bytes(payload)
    try:
        if coder == "vvenc":
            try:
                _, d = _vvenc.decode_planes(bs, workdir, timeout=timeout, log=log)
            except (ExternalToolError, BitstreamError) as e:
                raise BitstreamError(f"key-frame payload does not decode as VVC: {e}") from None
            if d.chroma != chroma:
                raise BitstreamError(f"key-frame payload is {d.chroma}, expected {chroma}")
            rgb = _vvenc.y4m_to_rgb(d, condition)
        else:
            tools = _vtm.find_vtm(env)
            try:
                _, planes, got_chroma, _ = _vtm.decode_planes(tools, bs, workdir, timeout=timeout, log=log)
            except (ExternalToolError, BitstreamError) as e:
                raise BitstreamError(f"key-frame payload does not decode as VVC: {e}") from None
            if got_chroma != chroma:
                raise BitstreamError(f"key-frame payload is {got_chroma}, expected {chroma}")
            c = condition.colour
            rgb = (yuv420_to_rgb if chroma == "420" else yuv444_to_rgb)(*planes, c.matrix, c.range)
    finally:
        bs.unlink(missing_ok=True)
    if rgb.shape[0] != 1:
        raise BitstreamError(f"key-frame payload holds {rgb.shape[0]} pictures, expected 1")
    if rgb.shape[1:3] != (height, width):
        raise BitstreamError(f"key-frame payload is {rgb.shape[2]}x{rgb.shape[1]}, expected {width}x{height}")
    return rgb[0]


def intra_provenance(coder: str, condition: Condition, env: Environment) -> dict[str, Any]:
    """Tool versions, binary hashes and settings of the intra coder."""
    if coder not in CODERS:
        raise InputError(f"intra coder must be one of {list(CODERS)}, got {coder!r}")
    if coder == "vvenc":
        info = _vvenc.require_vvenc(ffmpeg_info(ffmpeg_exe()))
        s = _vvenc.settings_for(condition, env, 0)
        settings = {k: v for k, v in s.__dict__.items() if k != "qp"}
        return {"coder": "vvenc", "ffmpeg_path": info.path, "ffmpeg_version": info.version,
                "ffmpeg_sha256": info.sha256, "libvvenc_version": info.libvvenc_version,
                "settings": settings, "vvenc_params": s.params(), "frames": 1,
                "chroma_supported": ["420"], "colour": dict(condition.colour.__dict__)}
    tools = _vtm.find_vtm(env)
    cfg = _vtm_intra_cfg(env, tools)
    a = condition.anchor
    return {"coder": "vtm", "vtm_version": _vtm.vtm_version(tools.encoder),
            "encoder": str(tools.encoder), "encoder_sha256": file_sha256(tools.encoder),
            "decoder": str(tools.decoder), "decoder_sha256": file_sha256(tools.decoder),
            "cfg": str(cfg), "cfg_sha256": file_sha256(cfg), "frames": 1,
            "settings": {"internal_bit_depth": a.internal_bit_depth, "intra_qp_offset": a.intra_qp_offset,
                         "extra_args": list(_vtm._extra_args(env))},
            "chroma_supported": ["420", "444"], "colour": dict(condition.colour.__dict__)}


class _VvcIntraCoder(KeyFrameCoder):
    """A key frame as one VVC intra picture (the CTC's key-frame coder), through :func:`encode_intra`."""

    format_name = "vvc"

    def encode(self, frame: np.ndarray, level: int, workdir: Path) -> KeyFramePayload:
        res = encode_intra(frame, level, coder=self.name, chroma=self.chroma, condition=self.condition,
                           env=self.env, workdir=workdir)
        return KeyFramePayload(payload=res.payload, commands=list(res.commands))

    def decode(self, payload: bytes, width: int, height: int, workdir: Path) -> np.ndarray:
        return decode_intra(payload, width=width, height=height, coder=self.name, chroma=self.chroma,
                            condition=self.condition, env=self.env, workdir=workdir)

    def provenance(self) -> dict[str, Any]:
        return intra_provenance(self.name, self.condition, self.env)


@KEY_FRAME_CODERS.register()
class VvencIntraCoder(_VvcIntraCoder):
    name = "vvenc"
    description = "VVC intra picture by VVenC (bundled ffmpeg; approximates VTM)"


@KEY_FRAME_CODERS.register()
class VtmIntraCoder(_VvcIntraCoder):
    name = "vtm"
    description = "VVC intra picture by the user's VTM-22.2 EncoderApp/DecoderApp"

