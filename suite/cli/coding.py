"""`gfvc encode` / `gfvc decode`: one codec on one video."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from anchors.vtm import vtm_root
from gfvc import container
from gfvc.argtypes import positive_float, positive_int, warn
from gfvc.codec import Environment, RatePoint, Sequence
from gfvc.errors import InputError, ModelMismatch
from gfvc.fileio import atomic_copy, check_output_file, work_dir
from gfvc.video import (
    WRITE_CONTAINER_SUFFIXES,
    check_video_output,
    is_viewing_copy,
    parse_size,
    read_container,
    read_video,
    video_format,
    write_video,
    write_yuv420_planes,
)
from suite.cli.common import add_env_args, check_model_choices, env_from_args, local_device
from suite.runner.jobs import make_codec
from test_conditions import load_condition


def register(sub: argparse._SubParsersAction) -> None:
    """Sub-commands encode and decode."""
    p = sub.add_parser("encode", help="encode one video with one codec")
    p.add_argument("input", help="video (.yuv/.rgb need --size; .mp4/.mkv; PNG folder)")
    p.add_argument("-o", "--output", required=True, help="bitstream file")
    p.add_argument("--codec", required=True)
    p.add_argument("--qp", type=int, required=True, help="anchor QP or key-frame QP")
    p.add_argument("--size", help="WxH for raw input")
    p.add_argument("--fps", type=positive_float, help="frame rate (default: from the file, else 25)")
    p.add_argument("--frames", type=positive_int, help="first N frames only")
    p.add_argument("--condition", default="demo", help="settings (anchor, colour, key frames) taken from it")
    add_env_args(p)
    p.set_defaults(func=cmd_encode)

    p = sub.add_parser("decode", help="decode a bitstream written by the suite",
                       description="Decode a bitstream. For a VVC stream, .yuv output is the decoder's own planes "
                                   "bit for bit (VTM DecoderApp -d 8 with --vtm-dir / $GFVC_VTM_DIR, else ffmpeg's "
                                   "native VVC decoder); .rgb and PNG are converted with the condition's colour "
                                   "spec; .mp4/.mkv/.mov are LOSSY viewing copies (never measure them).")
    p.add_argument("bitstream")
    p.add_argument("-o", "--output", required=True,
                   help=".yuv, .rgb, a folder for PNGs (exact), or .mp4/.mkv/.mov (lossy viewing copy)")
    p.add_argument("--condition", default="demo", help="colour spec and key-frame coder taken from it")
    p.add_argument("--fps", type=positive_float,
                   help="frame rate of a viewing copy (default: the stream's, else the condition's)")
    add_env_args(p)
    p.set_defaults(func=cmd_decode)


# --- encode / decode ------------------------------------------------------------------------

def cmd_encode(args: argparse.Namespace) -> int:
    inp = Path(args.input)
    if not inp.exists():
        raise InputError(f"{inp}: no such file or folder")
    out = check_output_file(args.output, what="bitstream (-o)")
    size = parse_size(args.size) if args.size else None
    fmt = video_format(inp)
    fps, fps_from = args.fps, "--fps"
    if fmt == "container":
        if is_viewing_copy(inp):
            warn(f"{inp} is a lossy viewing copy written by the suite; you are encoding its H.264 artefacts")
        frames, file_fps = read_container(inp, args.frames)
        if fps is None:
            fps, fps_from = file_fps, "the file"
    else:
        frames = read_video(inp, size=size, frames=args.frames)
    if fps is None:
        fps, fps_from = 25.0, "default; pass --fps"
    base = load_condition(args.condition)
    cond = base.with_overrides(
        width=int(frames.shape[2]), height=int(frames.shape[1]), frames=int(frames.shape[0]), fps=float(fps))
    rp = RatePoint(args.qp)
    env = local_device(env_from_args(args))
    check_model_choices(env, cond)
    codec = make_codec(args.codec, cond, env)
    _check_input_size(codec, inp, frames.shape[2], frames.shape[1], base)
    codec.check()
    seq = Sequence(name=inp.stem, frames=frames, fps=fps)
    with work_dir("gfvc-encode-") as tmp:  # kept on failure: error messages name its logs
        res = codec.encode(seq, rp, tmp)
        atomic_copy(res.bitstream, out)
    bits = out.stat().st_size * 8
    print(f"{out}: {args.codec} QP {args.qp}, {frames.shape[0]} frames {frames.shape[2]}x{frames.shape[1]}, "
          f"{bits} bits, {bits / 1000 / (frames.shape[0] / fps):.2f} kbps at {fps:g} fps ({fps_from})")
    return 0


def _check_input_size(codec: Any, inp: Path, width: int, height: int, cond: Any) -> None:
    """The input's size against the model's, said about the input (encode codes at the input's size, so
    the codec's own check would call the input's size the condition's)."""
    res = codec.resolution if getattr(codec, "takes_checkpoint", False) else None
    if res is None or tuple(res) == (width, height):
        return
    w, h = res
    model = codec.model_id() if hasattr(codec, "model_id") else "?"
    note = (f"condition {cond.name!r} is {cond.width}x{cond.height}" if (cond.width, cond.height) != (width, height)
            else f"as is condition {cond.name!r}")
    raise ModelMismatch(f"input {inp} is {width}x{height} but the {codec.name} model {model!r} works at "
                        f"{w}x{h} ({note}): resize the input to {w}x{h} (e.g. `gfvc sequences prepare`), or pass "
                        f"--model {codec.name}=CHECKPOINT trained at {width}x{height}")


def identify_bitstream(path: Path) -> tuple[str, float | None]:
    """Which codec wrote a bitstream, and its frame rate if stored.

    The suite's container names its codec; a raw VVC elementary stream (anchor
    output, VTM or VVenC) starts with a start code and is reported as "vvc".
    """
    if container.is_container(path):
        hdr = container.peek(path)  # verifies the whole file (BitstreamError if damaged)
        return hdr.codec, hdr.fps
    with open(path, "rb") as f:
        head = f.read(4)
    if head.startswith(b"\x00\x00\x00\x01") or head.startswith(b"\x00\x00\x01"):
        return "vvc", None
    raise InputError(f"{path}: not a bitstream written by this suite (neither a gfvc container nor a VVC stream)")


def vvc_decoder_codec(env: Environment) -> str:
    """The codec whose decoder decodes a raw VVC stream: VTM when a VTM folder is given, else ffmpeg's."""
    root, _ = vtm_root(env)
    return "vtm" if root is not None else "vvenc"


def cmd_decode(args: argparse.Namespace) -> int:
    import numpy as np

    bs = Path(args.bitstream)
    if not bs.is_file():
        raise InputError(f"{bs}: no such bitstream file")
    out = check_video_output(args.output, what="decoded output (-o)")
    kind = video_format(out, must_exist=False)
    name, stream_fps = identify_bitstream(bs)
    env = local_device(env_from_args(args))
    cond = load_condition(args.condition)
    check_model_choices(env, cond)
    codec = make_codec(vvc_decoder_codec(env) if name == "vvc" else name, cond, env)
    if name == "vvc":
        codec.check()  # e.g. --vtm-dir without DecoderApp: say so before decoding
    decoder = codec.decoder_description()
    with work_dir("gfvc-decode-") as tmp:  # kept on failure: error messages name its logs
        dec = codec.decode(bs, tmp)
    extras_paths = {k: (out.with_name(out.stem + f".{k}.npy") if kind != "png" else out / f"{k}.npy")
                    for k in dec.extras}
    for p in extras_paths.values():
        check_output_file(p, what="decoded extra")
    t, h, w = dec.frames.shape[:3]
    c = cond.colour
    if kind == "yuv420p" and dec.planes is not None:
        write_yuv420_planes(out, dec.planes.y, dec.planes.u, dec.planes.v)
        what = f"{dec.planes.pix_fmt}, the decoder's own planes (bit-exact)"
    elif kind == "container":
        fps, fps_from = (args.fps, "--fps") if args.fps else (
            (stream_fps, "the stream") if stream_fps else (cond.fps, f"condition {cond.name}"))
        write_video(out, dec.frames, fps)
        what = (f"LOSSY viewing copy (H.264, {fps:g} fps from {fps_from}); never measure it: decode to .yuv/.rgb/"
                f"PNG for the exact frames (allowed: {', '.join(sorted(WRITE_CONTAINER_SUFFIXES))})")
    else:
        write_video(out, dec.frames, matrix=c.matrix, range_=c.range)
        what = {"rgb": "planar RGB", "png": "PNG frames",
                "yuv420p": f"yuv420p converted from the decoder's RGB with {c.matrix} {c.range} (condition "
                           f"{cond.name})"}[kind]
        if kind == "rgb" and dec.planes is not None:
            what += f", converted from the decoder's YUV with {c.matrix} {c.range} (condition {cond.name})"
    for k, arr in dec.extras.items():
        np.save(extras_paths[k], arr)
        print(f"{extras_paths[k]}: {k} {tuple(arr.shape)}")
    print(f"{out}: {t} frames {w}x{h}, {what}; decoded by {decoder}")
    return 0
