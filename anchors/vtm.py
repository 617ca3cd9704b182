"""VTM-22.2 anchor: the CTC's reference encoder, run from the user's own build.

The suite does not ship VTM. It finds ``EncoderApp`` / ``DecoderApp`` in the
directory given by ``--vtm-dir`` (``Environment.vtm_dir``) or the
``GFVC_VTM_DIR`` environment variable, uses that tree's
``cfg/encoder_lowdelay_vtm.cfg`` (or ``--vtm-cfg``), and puts every value that
the condition defines on the command line so that the cfg only supplies the
coding tools. Traps handled here (docs/vtm.md):

* VTM's LDB cfg codes at 10 bits internally; without ``-d 8`` DecoderApp
  writes 16-bit samples. The decoder always gets ``-d 8`` and the reader
  refuses a file whose size says 16-bit.
* If ``-f`` asks for more frames than the input holds, VTM silently codes
  fewer: the reconstruction and the decoded output are counted.
* The GFVC software edits two cfg values (InternalBitDepth 8, IntraQPOffset
  0); both come from the condition (``anchor.internal_bit_depth``,
  ``anchor.intra_qp_offset``) and are passed explicitly.

Commands are built by pure functions (argv lists) so ``--dry-run`` can print
them without running anything.
"""
from __future__ import annotations

import functools
import os
import re
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from anchors.common import (
    AnchorCodec,
    check_decoded,
    check_qp,
    check_size,
    failure_cause,
    ffmpeg_exe,
    file_sha256,
    read_yuv_file,
    run_tool,
    templated,
    vvc_stream_info,
    write_planes,
)
from gfvc.codec import CODECS, Decoded, EncodeResult, Environment, RatePoint, Sequence, YuvPlanes, check_frames
from gfvc.errors import ConfigError, ExternalToolError, InputError, NotAvailable
from gfvc.video import rgb_to_yuv420, yuv420_to_rgb, yuv444_to_rgb

ENV_VAR = "GFVC_VTM_DIR"
ENCODER_NAMES = ("EncoderAppStatic", "EncoderApp", "EncoderAppStatic.exe", "EncoderApp.exe")
DECODER_NAMES = ("DecoderAppStatic", "DecoderApp", "DecoderAppStatic.exe", "DecoderApp.exe")
LDB_CFG = Path("cfg") / "encoder_lowdelay_vtm.cfg"
LOG_NAME = "vtm.log"

BUILD_HINT = (
    "build VTM-22.2: git clone --branch VTM-22.2 --depth 1 "
    "https://vcgit.hhi.fraunhofer.de/jvet/VVCSoftware_VTM.git && cd VVCSoftware_VTM && "
    "cmake -S . -B build -DCMAKE_BUILD_TYPE=Release && cmake --build build -j 4 --target EncoderApp DecoderApp; "
    f"then pass --vtm-dir /path/to/VVCSoftware_VTM (or export {ENV_VAR}=...); see docs/vtm.md"
)


@dataclass(frozen=True)
class VtmTools:
    """Located VTM binaries and the LDB configuration file."""

    encoder: Path
    decoder: Path
    cfg: Path
    root: Path


def vtm_root(env: Environment | None) -> tuple[Path | None, str]:
    """The VTM directory and where it came from (--vtm-dir wins over GFVC_VTM_DIR)."""
    if env is not None and env.vtm_dir:
        return Path(env.vtm_dir).expanduser(), "--vtm-dir"
    v = os.environ.get(ENV_VAR, "").strip()
    if v:
        return Path(v).expanduser(), ENV_VAR
    return None, ""


def search_dirs(root: Path) -> list[Path]:
    """Where a VTM build puts its binaries: DIR, DIR/bin, DIR/bin/umake/<compiler>/<arch>/release ..."""
    dirs = [root, root / "bin"]
    for sub in ("release", "relwithdebinfo", "debug"):
        dirs += sorted(root.glob(f"bin/umake/*/*/{sub}"))
        dirs += [root / "bin" / sub, root / "build" / "bin" / sub]
    dirs += [root / "build" / "bin"]
    seen: list[Path] = []
    for d in dirs:
        if d not in seen:
            seen.append(d)
    return seen


def _find(dirs: list[Path], names: tuple[str, ...]) -> Path | None:
    for d in dirs:
        for n in names:
            p = d / n
            if p.is_file() and os.access(p, os.X_OK):
                return p
    return None


def find_vtm(env: Environment | None) -> VtmTools:
    """Locate EncoderApp, DecoderApp and the LDB cfg; NotAvailable says what was searched and the fix."""
    root, origin = vtm_root(env)
    if root is None:
        raise NotAvailable(f"VTM anchor: no VTM directory given; pass --vtm-dir DIR or set {ENV_VAR}=DIR "
                           f"(a VTM-22.2 source tree with built binaries); {BUILD_HINT}")
    if not root.is_dir():
        raise NotAvailable(f"VTM anchor: {origin} {root} is not a directory; {BUILD_HINT}")
    dirs = search_dirs(root)
    enc, dec = _find(dirs, ENCODER_NAMES), _find(dirs, DECODER_NAMES)
    if enc is None or dec is None:
        missing = " and ".join(n for n, p in (("EncoderApp", enc), ("DecoderApp", dec)) if p is None)
        where = ", ".join(str(d) for d in dirs if d.exists()) or str(root)
        raise NotAvailable(f"VTM anchor: {missing} not found (looked for {'/'.join(ENCODER_NAMES[:2])} and "
                           f"{'/'.join(DECODER_NAMES[:2])} in {where}; {origin}={root}); {BUILD_HINT}")
    if env is not None and env.vtm_cfg:
        cfg = Path(env.vtm_cfg).expanduser()
        if not cfg.is_file():
            raise NotAvailable(f"VTM anchor: --vtm-cfg {cfg} does not exist")
    else:
        cfg = root / LDB_CFG
        if not cfg.is_file():
            raise NotAvailable(f"VTM anchor: {cfg} not found; pass --vtm-cfg /path/to/encoder_lowdelay_vtm.cfg "
                               f"or point --vtm-dir at the VTM source tree (which has cfg/)")
    return VtmTools(encoder=enc, decoder=dec, cfg=cfg, root=root)


# --- pure command builders --------------------------------------------------------------

def encoder_command(encoder: Path | str, cfg: Path | str, yuv: Path | str, bitstream: Path | str,
                    recon: Path | str, *, width: int, height: int, fps: float, frames: int, qp: int,
                    internal_bit_depth: int, intra_qp_offset: int, intra_period: int = -1,
                    chroma: str = "420", extra: tuple[str, ...] = ()) -> list[str]:
    """argv of one VTM encode; every condition value is explicit (the cfg supplies only tools).

    ``-fr`` is an integer in VTM; it only affects signalled timing and the
    printed bitrate (the suite computes kbps from the condition's fps).
    """
    argv = [str(encoder), "-c", str(cfg), "-i", str(yuv), "-b", str(bitstream), "-o", str(recon),
            "-wdt", str(width), "-hgt", str(height), "-fr", str(max(1, round(fps))), "-f", str(frames),
            "-q", str(qp), "--InputBitDepth=8", f"--InternalBitDepth={internal_bit_depth}",
            "--OutputBitDepth=8", f"--IntraQPOffset={intra_qp_offset}", f"--IntraPeriod={intra_period}"]
    if chroma == "444":
        argv += ["--InputChromaFormat=444", "--ChromaFormatIDC=444"]
    return argv + list(extra)


def decoder_command(decoder: Path | str, bitstream: Path | str, out_yuv: Path | str) -> list[str]:
    """argv of one VTM decode; ``-d 8`` makes DecoderApp write 8-bit samples (rounded)."""
    return [str(decoder), "-b", str(bitstream), "-o", str(out_yuv), "-d", "8"]


# --- running ---------------------------------------------------------------------------

def cfg_values(cfg: Path) -> dict[str, str]:
    """``Key : value`` pairs of a VTM cfg file (comments stripped)."""
    vals: dict[str, str] = {}
    for line in Path(cfg).read_text(errors="replace").splitlines():
        line = line.split("#", 1)[0]
        if ":" in line:
            k, v = line.split(":", 1)
            if k.strip() and v.strip():
                vals[k.strip()] = v.strip()
    return vals


def check_cfg(cfg: Path, condition: Any) -> None:
    """The GOP structure lives in the cfg (Frame1..N lines): it must match the condition's gop_size."""
    gop = cfg_values(cfg).get("GOPSize")
    if gop is not None and gop.split()[0] != str(condition.anchor.gop_size):
        raise ConfigError(f"VTM cfg {cfg} has GOPSize {gop} but the condition says anchor.gop_size "
                          f"{condition.anchor.gop_size}; use a matching cfg (--vtm-cfg)")


def write_input_yuv(path: Path, y: np.ndarray, u: np.ndarray, v: np.ndarray) -> None:
    """Write the encoder's raw 8-bit input (module level so tests can simulate short files)."""
    write_planes(path, y, u, v)


@functools.lru_cache(maxsize=8)
def _version(encoder: str, mtime: float) -> str:
    try:
        p = subprocess.run([encoder, "--help"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           stdin=subprocess.DEVNULL, text=True, errors="replace", timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    m = re.search(r"VTM\s+\w*\s*Version\s+([\w.\-]+)", p.stdout or "")
    return m.group(1) if m else ""


def vtm_version(encoder: Path) -> str:
    """Version printed by EncoderApp's banner (e.g. '22.2'); '' if not printed."""
    return _version(str(encoder), encoder.stat().st_mtime)


def encode_planes(tools: VtmTools, y: np.ndarray, u: np.ndarray, v: np.ndarray, out: Path, *,
                  fps: float, qp: int, internal_bit_depth: int, intra_qp_offset: int, chroma: str,
                  intra_period: int, workdir: Path, timeout: float, log: Path, cfg: Path | None = None,
                  extra: tuple[str, ...] = ()) -> list[list[str]]:
    """Run EncoderApp on 8-bit planes; refuse a silent frame shortfall (counted in the recon)."""
    t, h, w = y.shape
    check_size(w, h, "vtm")
    qp = check_qp(qp, "vtm")
    yuv = workdir / (out.stem + ".input.yuv")
    rec = workdir / (out.stem + ".recon.yuv")
    write_input_yuv(yuv, y, u, v)
    cmd = encoder_command(tools.encoder, cfg or tools.cfg, yuv, out, rec, width=w, height=h, fps=fps,
                          frames=t, qp=qp, internal_bit_depth=internal_bit_depth,
                          intra_qp_offset=intra_qp_offset, intra_period=intra_period, chroma=chroma,
                          extra=extra)
    try:
        run_tool(cmd, timeout=timeout, log=log, what="VTM EncoderApp", cwd=workdir)
        if not out.is_file() or out.stat().st_size == 0:
            raise ExternalToolError(f"VTM EncoderApp wrote no bitstream to {out}; log {log}")
        if not rec.is_file():
            raise ExternalToolError(f"VTM EncoderApp wrote no reconstruction {rec}; log {log}")
        ry, _, _ = read_yuv_file(rec, w, h, chroma=chroma)
        if ry.shape[0] != t:
            raise ExternalToolError(
                f"VTM coded {ry.shape[0]} frames, {t} were asked (-f {t}); VTM silently codes fewer frames "
                f"when the input file is short: check the input {yuv.name} ({yuv.stat().st_size} bytes); log {log}")
    finally:
        yuv.unlink(missing_ok=True)
        rec.unlink(missing_ok=True)
    return [cmd]


def decode_planes(tools: VtmTools, bitstream: Path, workdir: Path, *, timeout: float,
                  log: Path) -> tuple[list[list[str]], tuple[np.ndarray, np.ndarray, np.ndarray], str, int]:
    """Run DecoderApp -d 8; size, chroma format and picture count come from the stream's headers."""
    sinfo = vvc_stream_info(bitstream, timeout=timeout, log=log)
    chroma = {1: "420", 3: "444"}.get(sinfo.chroma_format_idc)
    if chroma is None:
        raise NotAvailable(f"{bitstream}: chroma_format_idc {sinfo.chroma_format_idc} is not supported")
    out = workdir / (Path(bitstream).stem + ".decoded.yuv")
    cmd = decoder_command(tools.decoder, bitstream, out)
    try:
        proc = run_tool(cmd, timeout=timeout, log=log, what="VTM DecoderApp", cwd=workdir, check=False)
        check_decoded(bitstream, (proc.stderr or "") + (proc.stdout or ""), None, len(sinfo.pictures),
                      what="VTM DecoderApp", log=log)
        if proc.returncode != 0:
            raise ExternalToolError(f"VTM DecoderApp failed (exit code {proc.returncode}): "
                                    f"{failure_cause(proc.stderr or '', proc.stdout or '')}; full log: {log}")
        if not out.is_file():
            raise ExternalToolError(f"VTM DecoderApp wrote no output {out}; log {log}")
        n = len(sinfo.pictures)
        cw = sinfo.width // 2 if chroma == "420" else sinfo.width
        chh = sinfo.height // 2 if chroma == "420" else sinfo.height
        fb8 = sinfo.width * sinfo.height + 2 * cw * chh
        size = out.stat().st_size
        if size == 2 * fb8 * n and size != fb8 * n:
            raise ExternalToolError(f"VTM DecoderApp wrote 16-bit samples ({size} bytes for {n} pictures); the "
                                    f"decoder must run with -d 8 (output bit depth 8); log {log}")
        planes = read_yuv_file(out, sinfo.width, sinfo.height, chroma=chroma)
    finally:
        out.unlink(missing_ok=True)
    check_decoded(bitstream, "", planes[0].shape[0], n, what="VTM DecoderApp", log=log)
    return [cmd], planes, chroma, n


def planes_to_rgb(planes: tuple[np.ndarray, np.ndarray, np.ndarray], chroma: str, condition: Any) -> np.ndarray:
    c = condition.colour
    if chroma == "444":
        return yuv444_to_rgb(*planes, c.matrix, c.range)
    return yuv420_to_rgb(*planes, c.matrix, c.range)


def to_planes(planes: tuple[np.ndarray, np.ndarray, np.ndarray]) -> YuvPlanes:
    return YuvPlanes(*(np.ascontiguousarray(p, dtype=np.uint8) for p in planes))


def _extra_args(env: Environment | None) -> tuple[str, ...]:
    ex = (getattr(env, "extra", None) or {}).get("vtm_args", ())
    return tuple(ex.split()) if isinstance(ex, str) else tuple(ex)


@CODECS.register()
class VtmCodec(AnchorCodec):
    """The CTC anchor: VTM-22.2 low-delay B, run from the user's build (docs/vtm.md)."""

    name = "vtm"
    family = "anchor"
    description = "VTM-22.2 low-delay B (encoder_lowdelay_vtm.cfg) from --vtm-dir / GFVC_VTM_DIR"

    def check(self) -> None:
        find_vtm(self.env)
        ffmpeg_exe()  # stream headers (size, picture count) are read with the bundled ffmpeg

    def plan(self, sequence_name: str, width: int, height: int, frames: int, fps: float, qp: int,
             workdir: Path, stem: str | None = None) -> list[list[str]]:
        """The commands encode/decode would run (for --dry-run); placeholders if VTM is not found."""
        try:
            t = find_vtm(self.env)
            enc, dec, cfg = t.encoder, t.decoder, t.cfg
        except NotAvailable:
            root, _ = vtm_root(self.env)
            base = root or Path(f"${ENV_VAR}")
            enc, dec, cfg = base / "bin" / "EncoderApp", base / "bin" / "DecoderApp", self.env.vtm_cfg or base / LDB_CFG
        workdir = Path(workdir)
        stem = stem or f"{sequence_name}_qp{qp}"
        a = self.condition.anchor
        return [encoder_command(enc, cfg, workdir / f"{stem}.input.yuv", workdir / f"{stem}.266",
                                workdir / f"{stem}.recon.yuv", width=width, height=height, fps=fps, frames=frames,
                                qp=qp, internal_bit_depth=a.internal_bit_depth, intra_qp_offset=a.intra_qp_offset,
                                intra_period=a.intra_period, extra=_extra_args(self.env)),
                decoder_command(dec, workdir / f"{stem}.266", workdir / f"{stem}.decoded.yuv")]

    def encode(self, sequence: Sequence, rate_point: RatePoint, workdir: Path) -> EncodeResult:
        check_frames(sequence.frames, what=f"sequence {sequence.name!r}")
        check_size(sequence.width, sequence.height, f"vtm, sequence {sequence.name!r}")
        if self.condition.colour.chroma != "420":
            raise InputError("vtm anchor: the CTC anchor codes YUV 4:2:0; colour.chroma must be '420'")
        tools = find_vtm(self.env)
        check_cfg(tools.cfg, self.condition)
        workdir = Path(workdir).resolve()
        workdir.mkdir(parents=True, exist_ok=True)
        log = workdir / LOG_NAME
        c = self.condition.colour
        y, u, v = rgb_to_yuv420(sequence.frames, c.matrix, c.range, c.chroma_downsampling)
        out = workdir / f"{sequence.name}_{rate_point.key}.266"
        a = self.condition.anchor
        t0 = time.monotonic()
        cmds = encode_planes(tools, y, u, v, out, fps=sequence.fps, qp=rate_point.qp,
                             internal_bit_depth=a.internal_bit_depth, intra_qp_offset=a.intra_qp_offset,
                             chroma="420", intra_period=a.intra_period, workdir=workdir,
                             timeout=self._timeout(), log=log, extra=_extra_args(self.env))
        self._expected_frames[str(out.resolve())] = sequence.num_frames
        return EncodeResult(bitstream=out, bits_breakdown={"vvc": out.stat().st_size * 8}, commands=cmds,
                            info={"encoder": "vtm", "log": str(log), "cfg": str(tools.cfg),
                                  "encode_seconds": round(time.monotonic() - t0, 3)})

    def decode(self, bitstream: Path, workdir: Path) -> Decoded:
        tools = find_vtm(self.env)
        workdir = Path(workdir).resolve()
        workdir.mkdir(parents=True, exist_ok=True)
        log = workdir / LOG_NAME
        _, planes, chroma, n = decode_planes(tools, Path(bitstream).resolve(), workdir,
                                             timeout=self._timeout(), log=log)
        want = self._expected_frames.get(str(Path(bitstream).resolve()))
        if want is not None and n != want:
            raise ExternalToolError(f"decoded {n} frames from {bitstream}, {want} were coded "
                                    f"(VTM codes fewer frames silently when its input is short); log {log}")
        return Decoded(frames=planes_to_rgb(planes, chroma, self.condition), planes=to_planes(planes))

    def decoder_description(self) -> str:
        """Which program decodes (named by `gfvc decode`)."""
        return f"VTM DecoderApp {find_vtm(self.env).decoder} (-d 8)"

    def provenance(self) -> dict[str, Any]:
        """Binary and cfg hashes; never raises (check() reports a missing VTM), so --dry-run works."""
        a = self.condition.anchor
        templates = templated(self.plan("{sequence}", self.condition.width, self.condition.height,
                                        self.condition.frames, self.condition.fps, int(a.qps[0]),
                                        Path("{workdir}"), stem="{sequence}_{rate_point}"))
        try:
            t = find_vtm(self.env)
        except NotAvailable as e:
            return {"codec": self.name, "family": self.family, "tool": "VTM", "status": "not_available",
                    "reason": str(e), "command_templates": templates}
        return {"codec": self.name, "family": self.family, "tool": "VTM", "command_templates": templates,
                "vtm_version": vtm_version(t.encoder), "vtm_root": str(t.root),
                "encoder": str(t.encoder), "encoder_sha256": file_sha256(t.encoder),
                "decoder": str(t.decoder), "decoder_sha256": file_sha256(t.decoder),
                "cfg": str(t.cfg), "cfg_sha256": file_sha256(t.cfg),
                "settings": {"internal_bit_depth": a.internal_bit_depth, "intra_qp_offset": a.intra_qp_offset,
                             "intra_period": a.intra_period, "gop_size": a.gop_size,
                             "input_bit_depth": 8, "output_bit_depth": 8, "decoder_output_bit_depth": 8,
                             "extra_args": list(_extra_args(self.env))},
                "colour": asdict(self.condition.colour),
                "note": "fps passed to -fr rounded to an integer (timing metadata only)"}
