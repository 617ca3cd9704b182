"""Does the rate depend on the device? What if encoder and decoder run on different devices?

No GPU is available where this was written, so a *second device* is
simulated: the same Sparse2Dense model evaluated in float64 and rounded back
to float32 at its outputs. Its outputs differ from the float32 CPU pass by
float32 accumulation error -- the same kind (and order) of difference as
between a CPU and a GPU float32 pass with TF32 off (gfvc.devices.configure_torch).
LABEL: simulated, not a GPU measurement. On a GPU machine, ``--device cuda``
compares the real CUDA pass with the CPU pass instead.

Measured on the demo clip (128x128, 32 frames) with the committed demo
checkpoint, key frame coded by VVenC at each QP:

1. encoder side: max |feature difference| between the two devices' analysis;
   quantised symbols that differ (q = round((f - prediction) * 64)); the
   feature payload size with each (the rate);
2. decoder side: the float32 bitstream decoded on "device B": pixels that
   differ from the device-A decode, PSNR between the two decodes and each
   decode's PSNR against the original;
3. threads: float32 analysis with 1 and 2 torch threads (bitwise equal?).

    python benchmarks/device_consistency.py [--device-b float64|cuda] [--qps 22,32,42,52]
"""
from __future__ import annotations

import argparse
import copy
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


class AsDouble:
    """The model evaluated in float64, outputs rounded to float32: a simulated second device."""

    def __init__(self, model) -> None:  # type: ignore[no-untyped-def]
        self.m = copy.deepcopy(model).double().eval()

    def detect(self, x):  # type: ignore[no-untyped-def]
        return self.m.detect(x.double()).float()

    def texture(self, x):  # type: ignore[no-untyped-def]
        return self.m.texture(x.double())

    def synthesise(self, tex, kp_s, drv, **kw):  # type: ignore[no-untyped-def]
        out = self.m.synthesise(tex, kp_s.double(), drv.double(), **kw)
        return {k: v.float() for k, v in out.items()}


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0 ** 2 / mse)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device-b", default="float64", help="float64 (simulated) or cuda / cuda:N (real)")
    ap.add_argument("--qps", default="22,32,42,52")
    args = ap.parse_args(argv)

    import torch

    from gfvc import entropy
    from gfvc.codec import Environment, RatePoint
    from s2d_model.codec import S2DCodec
    from test_conditions import load_condition
    from test_conditions.manifest import load_manifest, load_sequence

    torch.set_num_threads(1)
    cond = load_condition("demo")
    seq_entry = load_manifest(cond.manifest_path)[0]
    seq = load_sequence(seq_entry, cond.frames)
    a = S2DCodec(cond, Environment(device="cpu"))
    a.load()
    b = S2DCodec(cond, Environment(device="cpu" if args.device_b == "float64" else args.device_b))
    b.load()
    if args.device_b == "float64":
        b._model = AsDouble(a._model)
    label = "SIMULATED (float64 pass rounded to float32)" if args.device_b == "float64" else f"REAL {b.device}"
    print(f"device A: cpu float32, 1 thread; device B: {label}; torch {torch.__version__}; demo clip "
          f"{seq.frames.shape}; s2d quant_scale {a.quant_scale}")
    print("| key QP | max abs feature diff | symbols differing | feature bits A | feature bits B | "
          "bitstream identical | decoded pixels differing | max pixel diff | PSNR(A dec, B dec) | "
          "PSNR A vs orig | PSNR B vs orig |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for qp in (int(q) for q in args.qps.split(",")):
            wd = Path(tmp) / f"qp{qp}"
            enc = a.encode(seq, RatePoint(qp), wd / "a")
            from gfvc import container

            c = container.read(enc.bitstream)
            key = a._key_coder().decode(c.key_payload, 128, 128, wd / "k")
            fa, fb = a._features(seq.frames[1:]), b._features(seq.frames[1:])
            ka, kb = a._key_features(key), b._key_features(key)
            qa, _ = entropy.dpcm_encode(fa, ka, a.quant_scale)
            qb, _ = entropy.dpcm_encode(fb, kb, b.quant_scale)
            coder = a._coder()
            bits_a, bits_b = len(coder.encode(qa)) * 8, len(coder.encode(qb)) * 8
            diff = max(float(np.abs(fa - fb).max()), float(np.abs(ka - kb).max()))
            dec_a = a.decode(enc.bitstream, wd / "da").frames
            dec_b = b.decode(enc.bitstream, wd / "db").frames
            npx = int(np.count_nonzero(dec_a != dec_b))
            print(f"| {qp} | {diff:.2e} | {int(np.count_nonzero(qa != qb))} of {qa.size} | {bits_a} | {bits_b} | "
                  f"{'yes' if np.array_equal(qa, qb) else 'no'} | "
                  f"{npx} of {dec_a.size} ({100 * npx / dec_a.size:.3f}%) | "
                  f"{int(np.abs(dec_a.astype(int) - dec_b.astype(int)).max())} | {_psnr(dec_a, dec_b):.2f} dB | "
                  f"{_psnr(seq.frames, dec_a):.3f} | {_psnr(seq.frames, dec_b):.3f} |", flush=True)
    f1 = a._features(seq.frames[1:])
    torch.set_num_threads(2)
    f2 = a._features(seq.frames[1:])
    torch.set_num_threads(1)
    print(f"threads: float32 analysis with 1 vs 2 torch threads: bitwise equal = {np.array_equal(f1, f2)}, "
          f"max diff {float(np.abs(f1 - f2).max()):.1e}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "2")
    raise SystemExit(main())
