"""cheng2020-attn key-frame coder: encode/decode time per frame, with same-run baselines.

Run:  python benchmarks/cheng2020_bench.py [--size 384] [--qualities 1,6] [--repeat 2] [--threads 1]

Per quality (random weights at the official width N: 128 for q 1-3, 192 for
q 4-6; speed does not depend on the weights' values): encode and decode ms
per frame of :class:`model_parts.learned_image.keyframe.Cheng2020KeyFrameCoder`, split
into analysis (g_a, h_a), the entropy-coding loop and synthesis (g_s).
Baselines in the same run: the key frame as one VVenC intra picture at QP 32
(encode + decode, bundled ffmpeg; skipped if unavailable), and CompressAI's
own ``compress``/``decompress`` on the same weights when ``compressai`` is
importable (run it from a scratch venv that has it, with PYTHONPATH pointing
at the suite, see tools/make_cheng2020_vectors.py).

Bits per frame are printed for completeness but MEAN NOTHING: the weights are
random, not trained. Nothing is asserted.
"""
from __future__ import annotations

import argparse
import importlib
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from model_parts.learned_image.keyframe import Cheng2020KeyFrameCoder, padding


def _best(fn: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    best, out = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def _frame(size: int) -> np.ndarray:
    """The demo clip's first frame resized to size x size if available, else smooth synthetic content."""
    try:
        from ctc_cost_model import _clip

        return _clip(size, 1)[0]
    except Exception:  # no demo data: any natural-looking picture will do for timing
        yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
        rgb = np.stack([128 + 100 * np.sin(xx / 17 + c) * np.cos(yy / 23 - c) for c in range(3)], axis=-1)
        return rgb.round().astype(np.uint8)


def _vvenc_intra(frame: np.ndarray, repeat: int) -> str:
    try:
        from anchors import intra
        from gfvc.codec import Environment
        from test_conditions import load_condition

        size = frame.shape[0]
        cond = load_condition("gfvc-human").with_overrides(width=size, height=size, frames=1)
        kw: dict[str, Any] = {"coder": "vvenc", "chroma": "420", "condition": cond, "env": Environment()}
        with tempfile.TemporaryDirectory() as tmp:
            te, res = _best(lambda: intra.encode_intra(frame, 32, workdir=Path(tmp) / "e", **kw), repeat)
            td, _ = _best(lambda: intra.decode_intra(res.payload, width=size, height=size,
                                                     workdir=Path(tmp) / "d", **kw), repeat)
        return f"VVenC intra QP32: enc {te * 1e3:.0f} ms, dec {td * 1e3:.0f} ms, {8 * len(res.payload)} bits"
    except Exception as e:  # the baseline is optional: report why it is missing
        return f"VVenC intra baseline skipped: {type(e).__name__}: {str(e).splitlines()[0][:120]}"


def _compressai(net: Any, x: torch.Tensor, repeat: int) -> str:
    try:
        zoo = importlib.import_module("compressai.zoo")
    except ImportError:
        return "CompressAI baseline skipped: compressai not importable (see module docstring)"
    q = 1 if net.N == 128 else 6
    ref = zoo.cheng2020_attn(quality=q)
    ref.load_state_dict(net.state_dict())
    ref.eval()
    with torch.no_grad():
        te, enc = _best(lambda: ref.compress(x), repeat)
        td, _ = _best(lambda: ref.decompress(enc["strings"], enc["shape"]), repeat)
    nbytes = len(enc["strings"][0][0]) + len(enc["strings"][1][0])
    return f"CompressAI: enc {te * 1e3:.0f} ms, dec {td * 1e3:.0f} ms, {8 * nbytes} bits"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=384)
    ap.add_argument("--qualities", default="1,6")
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    frame = _frame(args.size)
    h, w = frame.shape[:2]
    print(f"cheng2020-attn, {w}x{h}, CPU, {torch.get_num_threads()} torch thread(s), load {os.getloadavg()[0]:.1f}; "
          "RANDOM weights: bits mean nothing")
    print(_vvenc_intra(frame, args.repeat))
    coder = Cheng2020KeyFrameCoder.random_weights(0)
    for q in [int(s) for s in args.qualities.split(",")]:
        _bench_quality(coder, q, frame, args.repeat)


def _bench_quality(coder: Cheng2020KeyFrameCoder, q: int, frame: np.ndarray, repeat: int) -> None:
    h, w = frame.shape[:2]
    coder.compress(frame[:64, :64].copy(), q)  # load the model (and its tables) outside the timing
    net = coder._load(q).net
    te, (payload, _, info) = _best(lambda: coder.compress_frame(frame, q, reconstruct=False), repeat)
    td, _ = _best(lambda: coder.decompress(payload, w, h), repeat)
    x = torch.from_numpy(frame.transpose(2, 0, 1).astype(np.float64) / 255.0).float()[None]
    x = F.pad(x, padding(h, w))
    with torch.no_grad():
        ta, y = _best(lambda: net.g_a(x), repeat)
        th, _ = _best(lambda: net.h_a(y), repeat)
        ts, _ = _best(lambda: net.g_s(torch.round(y)), repeat)
    print(f"q{q} (N={net.N}): enc {te * 1e3:.0f} ms (analysis {(ta + th) * 1e3:.0f}, entropy loop "
          f"~{(te - ta - th) * 1e3:.0f}), dec {td * 1e3:.0f} ms (entropy loop ~{(td - ts) * 1e3:.0f}, "
          f"synthesis {ts * 1e3:.0f}); {info['bits']} bits (meaningless), {info['escaped_symbols']} escapes")
    print("   " + _compressai(net, x, repeat))

if __name__ == "__main__":
    main()
