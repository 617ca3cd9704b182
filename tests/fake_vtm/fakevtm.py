"""Fake VTM EncoderApp / DecoderApp for the suite's tests.

They accept VTM-style command lines (``-c cfg``, ``-i``, ``-b``, ``-o``,
``-wdt``, ``-hgt``, ``-fr``, ``-f``, ``-q``, ``--Key=Value``; decoder ``-b``,
``-o``, ``-d``) and mimic the VTM behaviours the suite must cope with:

* unknown option, missing input file, odd picture size -> non-zero exit;
* an input holding fewer frames than ``-f`` -> fewer frames coded, silently;
* InternalBitDepth defaults to the cfg's 10; recon/decoded files are written
  at the output bit depth, as 16-bit little-endian samples when > 8 bits
  (DecoderApp: output depth = ``-d`` if non-zero, else the coded depth).

The bitstream is genuine VVC made by the bundled ffmpeg's libvvenc at the
requested QP (preset "faster"), so the suite's header inspection and any VVC
decoder work on it. Only 8-bit 4:2:0 input is supported. This is a test
double, not an approximation of VTM's coding efficiency.
"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

BANNER = "VVCSoftware: VTM Encoder Version 22.2 [fake for tests] [Linux][GCC][64 bit]"
DEC_BANNER = "VVCSoftware: VTM Decoder Version 22.2 [fake for tests] [Linux][GCC][64 bit]"

ENC_SHORT = {"c": "ConfigFile", "i": "InputFile", "b": "BitstreamFile", "o": "ReconFile",
             "wdt": "SourceWidth", "hgt": "SourceHeight", "fr": "FrameRate", "f": "FramesToBeEncoded",
             "q": "QP", "fs": "FrameSkip"}
ENC_LONG = set(ENC_SHORT.values()) | {"InputBitDepth", "InternalBitDepth", "OutputBitDepth", "IntraQPOffset",
                                      "IntraPeriod", "GOPSize", "DecodingRefreshType", "InputChromaFormat",
                                      "ChromaFormatIDC", "EncoderConfig", "Level", "Profile"}
DEC_SHORT = {"b": "BitstreamFile", "o": "ReconFile", "d": "OutputBitDepth"}


class Usage(Exception):
    pass


def _ffmpeg() -> str:
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


def parse(argv: list[str], short: dict[str, str], known: set[str]) -> tuple[dict[str, str], list[str]]:
    """VTM-like parsing: -x value, --Key=value, --Key value; -c may repeat."""
    opts: dict[str, str] = {}
    cfgs: list[str] = []
    i = 0
    while i < len(argv):
        a = argv[i]
        if a in ("--help", "-h"):
            raise SystemExit(0)
        if a.startswith("--"):
            key, eq, val = a[2:].partition("=")
            if not eq:
                if i + 1 >= len(argv):
                    raise Usage(f"Missing value for option {key}")
                val = argv[i + 1]
                i += 1
        elif a.startswith("-") and a[1:] in short:
            key = short[a[1:]]
            if i + 1 >= len(argv):
                raise Usage(f"Missing value for option -{a[1:]}")
            val = argv[i + 1]
            i += 1
        else:
            raise Usage(f"Unhandled argument ignored: `{a}'")
        if key not in known:
            raise Usage(f"Unknown option `{key}' (value:`{val}')")
        if key == "ConfigFile":
            cfgs.append(val)
        else:
            opts[key] = val
        i += 1
    return opts, cfgs


def read_cfg(path: str) -> dict[str, str]:
    vals: dict[str, str] = {}
    try:
        text = Path(path).read_text()
    except OSError:
        raise Usage(f"Failed to open config file: `{path}'") from None
    for line in text.splitlines():
        line = line.split("#", 1)[0]
        if ":" in line:
            k, v = line.split(":", 1)
            if k.strip() and v.strip():
                vals[k.strip()] = v.strip()
    return vals


def read_y4m(path: Path) -> tuple[list[np.ndarray], int]:
    """Planar frames (flat arrays) and the bit depth of an ffmpeg YUV4MPEG2 file (4:2:0 only)."""
    data = path.read_bytes()
    nl = data.index(b"\n")
    toks = data[10:nl].decode().split()
    w = int(next(t[1:] for t in toks if t[0] == "W"))
    h = int(next(t[1:] for t in toks if t[0] == "H"))
    cs = next((t[1:] for t in toks if t[0] == "C"), "420")
    depth = 10 if cs.endswith("p10") else 8
    bps = 2 if depth > 8 else 1
    fb = w * h * 3 // 2 * bps
    frames = []
    pos = nl + 1
    while pos < len(data):
        start = data.index(b"\n", pos) + 1
        frames.append(np.frombuffer(data, dtype=np.uint8 if bps == 1 else "<u2", count=fb // bps, offset=start))
        pos = start + fb
    return frames, depth


def write_depth(path: Path, frames: list[np.ndarray], depth: int, out_depth: int) -> None:
    """Write at out_depth like VTM: left shift up, rounding right shift down; 16-bit LE if > 8 bits."""
    with open(path, "wb") as f:
        for fr in frames:
            a = fr.astype(np.int64)
            if out_depth > depth:
                a = a << (out_depth - depth)
            elif out_depth < depth:
                s = depth - out_depth
                a = np.minimum((a + (1 << (s - 1))) >> s, (1 << out_depth) - 1)
            f.write(a.astype(np.uint8 if out_depth <= 8 else "<u2").tobytes())


def decode_to_y4m(bitstream: Path, out: Path) -> None:
    p = subprocess.run([_ffmpeg(), "-hide_banner", "-loglevel", "error", "-nostdin", "-y", "-f", "vvc", "-i",
                        str(bitstream), "-f", "yuv4mpegpipe", "-strict", "-1", str(out)],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=600)
    if p.returncode != 0:
        raise Usage(f"decoding failed: {p.stdout}")


def encoder_main(argv: list[str]) -> int:
    print(BANNER)
    try:
        opts, cfgs = parse(argv, ENC_SHORT, ENC_LONG)
        if not cfgs:
            raise Usage("no configuration file given (-c)")
        cfg: dict[str, str] = {}
        for c in cfgs:
            cfg.update(read_cfg(c))
        cfg.update(opts)
        src = cfg.get("InputFile", "")
        if not src or not Path(src).is_file():
            raise Usage(f"Failed to open input file: `{src}'")
        if "BitstreamFile" not in cfg:
            raise Usage("No bitstream file specified (-b)")
        w, h = int(cfg.get("SourceWidth", 0)), int(cfg.get("SourceHeight", 0))
        if w <= 0 or h <= 0:
            raise Usage("Error: source width/height must be specified (-wdt/-hgt)")
        if w % 2 or h % 2:
            raise Usage("Error: picture width/height must be a multiple of 2 for 4:2:0 (SubWidthC/SubHeightC)")
        if cfg.get("InputChromaFormat", "420") != "420" or cfg.get("ChromaFormatIDC", "420") not in ("420", "0"):
            raise Usage("fake EncoderApp: only 4:2:0 is supported")
        if int(cfg.get("InputBitDepth", 8)) != 8:
            raise Usage("fake EncoderApp: only InputBitDepth 8 is supported")
        qp = int(cfg.get("QP", 32))
        if not -12 <= qp <= 63:
            raise Usage(f"Error: QP {qp} out of range")
        want = int(cfg.get("FramesToBeEncoded", 0))
        if want <= 0:
            raise Usage("Error: FramesToBeEncoded (-f) must be > 0")
        ibd = int(cfg.get("InternalBitDepth", 10))
        obd = int(cfg.get("OutputBitDepth", 0)) or ibd
        fb = w * h * 3 // 2
        avail = Path(src).stat().st_size // fb
        n = min(want, avail)  # VTM silently codes what the file holds
        if n == 0:
            raise Usage("Error: input file holds no complete frame")
        with tempfile.TemporaryDirectory() as td:
            cut = Path(td) / "in.yuv"
            with open(src, "rb") as fi, open(cut, "wb") as fo:
                fo.write(fi.read(n * fb))
            params = ":".join([f"GOPSize={cfg.get('GOPSize', 8)}", "PicReordering=0", "DecodingRefreshType=none",
                               f"IntraPeriod={cfg.get('IntraPeriod', -1)}", "AccessUnitDelimiter=0", "BIM=0", "MCTF=0",
                               f"InternalBitDepth={ibd}", f"IntraQPOffset={cfg.get('IntraQPOffset', -1)}"])
            p = subprocess.run([_ffmpeg(), "-hide_banner", "-loglevel", "error", "-nostdin", "-y", "-f", "rawvideo",
                                "-pix_fmt", "yuv420p", "-s", f"{w}x{h}", "-r", str(cfg.get("FrameRate", 25)),
                                "-i", str(cut), "-c:v", "libvvenc", "-preset", "faster", "-qp", str(max(qp, 0)),
                                "-qpa", "0", "-threads", "1", "-vvenc-params", params, "-f", "vvc",
                                cfg["BitstreamFile"]], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True, timeout=600)
            if p.returncode != 0:
                raise Usage(f"encoding failed: {p.stdout}")
            if cfg.get("ReconFile"):
                y4m = Path(td) / "rec.y4m"
                decode_to_y4m(Path(cfg["BitstreamFile"]), y4m)
                frames, depth = read_y4m(y4m)
                write_depth(Path(cfg["ReconFile"]), frames, depth, obd)
        size = Path(cfg["BitstreamFile"]).stat().st_size
        for k in range(n):
            print(f"POC {k:4d} LId:  0 TId: 0 ( {'I' if k == 0 else 'B'}-SLICE, nQP {qp} QP {qp} )")
        fr = float(cfg.get("FrameRate", 25))
        print(f"\tTotal Frames |   Bitrate\n\t{n:8d}    a   {size * 8 * fr / n / 1000:12.4f}")
        return 0
    except Usage as e:
        print(str(e), file=sys.stderr)
        return 1


def decoder_main(argv: list[str]) -> int:
    print(DEC_BANNER)
    try:
        opts, _ = parse(argv, DEC_SHORT, set(DEC_SHORT.values()))
        bs = opts.get("BitstreamFile", "")
        if not bs or not Path(bs).is_file():
            raise Usage(f"failed to open bitstream file {bs}")
        with tempfile.TemporaryDirectory() as td:
            y4m = Path(td) / "dec.y4m"
            decode_to_y4m(Path(bs), y4m)
            frames, depth = read_y4m(y4m)
            out_depth = int(opts.get("OutputBitDepth", 0)) or depth
            if opts.get("ReconFile"):
                write_depth(Path(opts["ReconFile"]), frames, depth, out_depth)
        print(f" Total Time: {0.001:12.3f} sec.")
        return 0
    except Usage as e:
        print(str(e), file=sys.stderr)
        return 1


def install(dest: Path, *, layout: str = "bin", static: bool = False) -> Path:
    """Write EncoderApp/DecoderApp (shebang = this interpreter) and the fake cfg under ``dest``.

    layout "bin" -> dest/bin/, "umake" -> dest/bin/umake/gcc-13.2/x86_64/release/, "root" -> dest/.
    Returns ``dest`` (what a user passes as --vtm-dir).
    """
    here = Path(__file__).resolve().parent
    sub = {"bin": Path("bin"), "umake": Path("bin/umake/gcc-13.2/x86_64/release"), "root": Path(".")}[layout]
    bindir = dest / sub
    bindir.mkdir(parents=True, exist_ok=True)
    suffix = "Static" if static else ""
    for prog, fn in (("EncoderApp", "encoder_main"), ("DecoderApp", "decoder_main")):
        p = bindir / f"{prog}{suffix}"
        p.write_text(f"#!{sys.executable}\nimport sys\nsys.path.insert(0, {str(here)!r})\n"
                     f"import fakevtm\nsys.exit(fakevtm.{fn}(sys.argv[1:]))\n")
        p.chmod(0o755)
    (dest / "cfg").mkdir(exist_ok=True)
    (dest / "cfg" / "encoder_lowdelay_vtm.cfg").write_bytes((here / "cfg" / "encoder_lowdelay_vtm.cfg").read_bytes())
    return dest


if __name__ == "__main__":  # pragma: no cover
    prog = os.path.basename(sys.argv[0])
    sys.exit((decoder_main if "Decoder" in prog else encoder_main)(sys.argv[1:]))
