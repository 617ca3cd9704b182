#!/usr/bin/env python3
"""A standalone video codec used as the example of an external codec (docs/adding-a-codec.md).

It knows nothing of the suite: it reads raw yuv420p frames, predicts every plane from the previous
decoded frame (closed loop), quantises the difference with a step that doubles every 6 QP and
compresses the result with zlib. One file per sequence; a toy, far below VVC.

    blockcodec.py encode IN.yuv OUT.bin --width W --height H --frames N --qp QP
    blockcodec.py decode IN.bin OUT.yuv
"""
from __future__ import annotations

import argparse
import struct
import sys
import zlib

import numpy as np

MAGIC = b"BLK1"


def planes(buf: np.ndarray, w: int, h: int) -> list[np.ndarray]:
    y = buf[: w * h].reshape(h, w)
    u = buf[w * h: w * h + w * h // 4].reshape(h // 2, w // 2)
    v = buf[w * h + w * h // 4:].reshape(h // 2, w // 2)
    return [y, u, v]


def step_of(qp: int) -> int:
    return max(1, round(2 ** ((qp - 22) / 6)))  # doubles every 6 QP, like H.26x


def encode(args: argparse.Namespace) -> None:
    w, h, n, step = args.width, args.height, args.frames, step_of(args.qp)
    raw = np.fromfile(args.input, dtype=np.uint8)
    fsize = w * h * 3 // 2
    if raw.size != n * fsize:
        sys.exit(f"blockcodec: {args.input} holds {raw.size} bytes, expected {n} frames of {w}x{h} yuv420p")
    prev = [np.zeros((h, w), np.int32), np.zeros((h // 2, w // 2), np.int32), np.zeros((h // 2, w // 2), np.int32)]
    out = []
    for t in range(n):
        for i, p in enumerate(planes(raw[t * fsize:(t + 1) * fsize], w, h)):
            q = np.rint((p.astype(np.int32) - prev[i]) / step).astype(np.int16)
            out.append(q.tobytes())
            prev[i] = np.clip(prev[i] + q.astype(np.int32) * step, 0, 255)
    with open(args.output, "wb") as f:
        f.write(MAGIC + struct.pack("<HHHB", w, h, n, args.qp) + zlib.compress(b"".join(out), 9))


def decode(args: argparse.Namespace) -> None:
    data = open(args.input, "rb").read()
    if data[:4] != MAGIC:
        sys.exit(f"blockcodec: {args.input} is not a blockcodec stream")
    w, h, n, qp = struct.unpack("<HHHB", data[4:11])
    step = step_of(qp)
    q = np.frombuffer(zlib.decompress(data[11:]), dtype=np.int16)
    prev = [np.zeros((h, w), np.int32), np.zeros((h // 2, w // 2), np.int32), np.zeros((h // 2, w // 2), np.int32)]
    pos, frames = 0, []
    for _ in range(n):
        for i in range(3):
            k = prev[i].size
            prev[i] = np.clip(prev[i] + q[pos:pos + k].reshape(prev[i].shape).astype(np.int32) * step, 0, 255)
            pos += k
            frames.append(prev[i].astype(np.uint8).tobytes())
    with open(args.output, "wb") as f:
        f.write(b"".join(frames))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("encode")
    e.add_argument("input")
    e.add_argument("output")
    for a in ("--width", "--height", "--frames", "--qp"):
        e.add_argument(a, type=int, required=True)
    d = sub.add_parser("decode")
    d.add_argument("input")
    d.add_argument("output")
    args = p.parse_args()
    encode(args) if args.cmd == "encode" else decode(args)


if __name__ == "__main__":
    main()
