#!/usr/bin/env python3
"""A tiny external codec for the tests: pixel quantisation + zlib, as a program of its own.

    tinycodec.py encode IN OUT --qp N [--folder] [--fail] [--frames N --width W --height H --format F]
    tinycodec.py decode IN OUT [--short]

--folder writes the stream as two files in the OUT folder (every file counts as rate); --fail exits 3
with a message on stderr; decode --short writes one frame too few (the suite must refuse it).
"""
import argparse
import pathlib
import sys
import zlib

p = argparse.ArgumentParser()
p.add_argument("cmd")
p.add_argument("src")
p.add_argument("dst")
p.add_argument("--qp", type=int, default=0)
p.add_argument("--folder", action="store_true")
p.add_argument("--fail", action="store_true")
p.add_argument("--short", action="store_true")
p.add_argument("--frame-bytes", type=int, default=0)
a = p.parse_args()
if a.fail:
    print("tinycodec: cannot code this: unsupported qp", a.qp, file=sys.stderr)
    sys.exit(3)
if a.cmd == "encode":
    data = pathlib.Path(a.src).read_bytes()
    step = max(1, a.qp // 4)
    q = bytes(b // step for b in data)
    blob = bytes([step]) + zlib.compress(q, 6)
    if a.folder:
        out = pathlib.Path(a.dst)
        half = len(blob) // 2
        (out / "part0.bin").write_bytes(blob[:half])
        (out / "sub").mkdir(exist_ok=True)
        (out / "sub" / "part1.bin").write_bytes(blob[half:])
    else:
        pathlib.Path(a.dst).write_bytes(blob)
else:
    src = pathlib.Path(a.src)
    blob = b"".join(f.read_bytes() for f in sorted(src.rglob("*.bin"))) if src.is_dir() else src.read_bytes()
    step, q = blob[0], zlib.decompress(blob[1:])
    out = bytes(min(255, b * step + step // 2) for b in q)
    if a.short:
        out = out[: len(out) - a.frame_bytes]
    pathlib.Path(a.dst).write_bytes(out)
