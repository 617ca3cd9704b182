"""Make model_parts/learned_image/vectors/cheng2020.{pt,json}: CompressAI's cheng2020-attn on seeded random weights.

Run OUTSIDE the suite's environment, in a scratch venv that has CompressAI
(the AhG software pins 1.2.4; it builds from the sdist on Python 3.11)::

    python3 -m venv /tmp/cai-venv
    echo /path/to/main/.venv/lib/python3.11/site-packages > /tmp/cai-venv/lib/python3.11/site-packages/zz.pth
    /tmp/cai-venv/bin/pip install --no-deps compressai==1.2.4
    /tmp/cai-venv/bin/python tools/make_cheng2020_vectors.py model_parts/learned_image/vectors

The weights come from the suite's :func:`model_parts.learned_image.cheng2020.random_state_dict`
(so the tests can rebuild them without the file; their sha256 is recorded),
loaded strictly into CompressAI's model; everything else (forward, tables,
compress, decompress) is CompressAI's code. CompressAI is imported by name at
run time; it is not a dependency of the suite.
"""
from __future__ import annotations

import argparse
import hashlib
import importlib
import json
import platform
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from model_parts.learned_image.cheng2020 import random_state_dict, state_dict_sha256

# (case name, quality whose layout (N) is used, weight seed, input height, width, image seed)
CASES = (("q1_64x64", 1, 1, 64, 64, 11), ("q1_40x100", 1, 1, 40, 100, 12), ("q6_64x64", 6, 6, 64, 64, 13))
KEEP_X_HAT_DEC = ("q1_64x64", "q6_64x64")  # the 40x100 case pins y_hat_enc instead (x_hat_dec = g_s(y_hat_enc))


def table_sha256(t: torch.Tensor) -> str:
    return hashlib.sha256(t.to(torch.int32).cpu().contiguous().numpy().tobytes()).hexdigest()


def test_image(h: int, w: int, seed: int) -> np.ndarray:
    """Smooth gradients plus noise (uint8 RGB): deterministic, not random-flat."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    base = np.stack([128 + 100 * np.sin(xx / 9 + c) * np.cos(yy / 13 - c) for c in range(3)], axis=-1)
    return np.clip(base + rng.normal(0, 12, base.shape), 0, 255).round().astype(np.uint8)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out_dir", type=Path)
    args = ap.parse_args()
    compressai = importlib.import_module("compressai")
    zoo = importlib.import_module("compressai.zoo")
    ops = importlib.import_module("compressai.ops")
    torch.set_num_threads(1)

    layout: dict[str, dict[str, list[int]]] = {}
    for q in range(1, 7):
        sd = zoo.cheng2020_attn(quality=q).state_dict()
        layout[str(q)] = {k: list(v.shape) for k, v in sd.items()}

    tensors: dict[str, Any] = {}
    cases: dict[str, Any] = {}
    for name, quality, wseed, h, w, iseed in CASES:
        model = zoo.cheng2020_attn(quality=quality)
        n = int(model.N)
        sd = random_state_dict(n, wseed)
        model.load_state_dict(sd, strict=True)
        model.eval()
        model.update()
        frame = test_image(h, w, iseed)
        x = torch.from_numpy(np.ascontiguousarray(frame.transpose(2, 0, 1)).astype(np.float64) / 255.0).float()[None]
        pad, unpad = ops.compute_padding(h, w, min_div=64)
        xp = F.pad(x, pad, mode="constant", value=0)
        out: dict[str, torch.Tensor] = {}
        with torch.no_grad():
            fwd = model(xp)
            y = model.g_a(xp)
            z = model.h_a(y)
            z_hat, z_lik = model.entropy_bottleneck(z)
            params = model.h_s(z_hat)
            y_hat = model.gaussian_conditional.quantize(y, "dequantize")
            ctx = model.context_prediction(y_hat)
            scales, means = model.entropy_parameters(torch.cat((params, ctx), dim=1)).chunk(2, 1)
            out.update(y=y, z=z, z_hat=z_hat, z_likelihoods=z_lik, y_hat=y_hat, scales=scales, means=means,
                       y_likelihoods=fwd["likelihoods"]["y"], x_hat=fwd["x_hat"])
            assert torch.equal(fwd["likelihoods"]["z"], z_lik)
            enc = model.compress(xp)
            # the encoder's reconstruction of y: CompressAI's compress() steps, _compress_ar fills y_pad in place
            z_strings = model.entropy_bottleneck.compress(z)
            z_hat_c = model.entropy_bottleneck.decompress(z_strings, z.size()[-2:])
            params_c = model.h_s(z_hat_c)
            y_pad = F.pad(y, (2, 2, 2, 2))
            y_string = model._compress_ar(y_pad, params_c, z.size(2) * 4, z.size(3) * 4, 5, 2)
            assert y_string == enc["strings"][0][0] and z_strings[0] == enc["strings"][1][0]
            out["y_hat_enc"] = y_pad[:, :, 2:-2, 2:-2].clone()
            dec = model.decompress(enc["strings"], enc["shape"])["x_hat"]
            if name in KEEP_X_HAT_DEC:
                out["x_hat_dec"] = dec
            torch.set_num_threads(2)
            fwd2 = model(xp)
            torch.set_num_threads(1)
        tensors[name] = {"frame": torch.from_numpy(frame), **{k: v.detach().clone() for k, v in out.items()}}
        eb, gc = model.entropy_bottleneck, model.gaussian_conditional
        cases[name] = {
            "quality_layout": quality, "N": n, "weight_seed": wseed, "input_hw": [h, w], "image_seed": iseed,
            "random_state_dict_sha256": state_dict_sha256(sd),
            "compute_padding_min_div_64": {"pad_left_right_top_bottom": list(pad), "padded_hw": list(xp.shape[2:])},
            "compress": {"y_string_bytes": len(enc["strings"][0][0]), "z_string_bytes": len(enc["strings"][1][0]),
                         "shape": list(enc["shape"])},
            "x_hat_dec_stored": name in KEEP_X_HAT_DEC,
            "x_hat_dec_sha256": hashlib.sha256(dec.contiguous().numpy().tobytes()).hexdigest(),
            "tables": {
                "entropy_bottleneck": {"quantized_cdf_shape": list(eb._quantized_cdf.shape),
                                       "quantized_cdf_sha256": table_sha256(eb._quantized_cdf),
                                       "cdf_length": eb._cdf_length.tolist(), "offset": eb._offset.tolist()},
                "gaussian_conditional": {"quantized_cdf_shape": list(gc._quantized_cdf.shape),
                                         "quantized_cdf_sha256": table_sha256(gc._quantized_cdf),
                                         "cdf_length": gc._cdf_length.tolist(), "offset": gc._offset.tolist(),
                                         "scale_table": gc.scale_table.tolist()}},
            "official_1_thread_vs_2_threads_max_abs_diff": {
                "x_hat": float((fwd2["x_hat"] - fwd["x_hat"]).abs().max()),
                "y_likelihoods": float((fwd2["likelihoods"]["y"] - fwd["likelihoods"]["y"]).abs().max())},
        }

    args.out_dir.mkdir(parents=True, exist_ok=True)
    torch.save(tensors, args.out_dir / "cheng2020.pt")
    meta = {
        "what": "CompressAI cheng2020-attn run on seeded random weights (suite's random_state_dict), CPU, 1 thread",
        "official": {"package": "compressai", "version": compressai.__version__,
                     "repository": "InterDigitalInc/CompressAI", "tag": f"v{compressai.__version__}",
                     "built": "from the PyPI sdist (no cp311 wheel of 1.2.4), --no-deps"},
        "versions": {"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__,
                     "platform": platform.platform()},
        "call_sequence": [
            "model = compressai.zoo.cheng2020_attn(quality=Q); model.load_state_dict(random_state_dict(N, seed), "
            "strict=True); model.eval(); model.update()",
            "x = (frame.transpose(2, 0, 1) / 255.0 in float64).float()[None]; pad = compute_padding(h, w, "
            "min_div=64)[0]; x = F.pad(x, pad, value=0)",
            "fwd = model(x): x_hat = fwd['x_hat'], y_likelihoods = fwd['likelihoods']['y'], z_likelihoods = "
            "fwd['likelihoods']['z']",
            "y = g_a(x); z = h_a(y); z_hat, z_likelihoods = entropy_bottleneck(z); y_hat = round(y); "
            "scales, means = entropy_parameters(cat(h_s(z_hat), context_prediction(y_hat))).chunk(2, 1)",
            "enc = model.compress(x): compress.y_string_bytes = len(enc['strings'][0][0]), z_string_bytes = "
            "len(enc['strings'][1][0])",
            "y_hat_enc: the y_pad that model._compress_ar(F.pad(y, (2,2,2,2)), h_s(eb.decompress(eb.compress(z))), "
            "4 zh, 4 zw, 5, 2) fills in place, cropped (its string equals enc's)",
            "x_hat_dec = model.decompress(enc['strings'], enc['shape'])['x_hat'] (clamped to [0, 1])",
        ],
        "tolerances": {"forward": ("atol 1e-5 + rtol 1e-5 (a port with the same torch ops in the same order "
                                   "gives 0 on the same CPU; another oneDNN ISA sums in another order: "
                                   "1.05e-5 on y at AVX2)"),
                       "tables": "exact (sha256 of the int32 quantized CDFs, lengths and offsets)",
                       "y_hat_enc": ("atol 1e-5 + rtol 1e-5 (quantised values; a different rounding would "
                                     "differ by >= 1)"),
                       "bits": "the port's range-coded stream within a few % of y_string_bytes + z_string_bytes"},
        "layout": {"about": "state_dict keys and shapes of cheng2020_attn(quality=q) before update() (the table "
                            "buffers are empty here, sized on load)", "qualities": layout},
        "cases": cases,
        "argv": sys.argv,
    }
    (args.out_dir / "cheng2020.json").write_text(json.dumps(meta, indent=1) + "\n")
    print(f"wrote {args.out_dir / 'cheng2020.pt'} and .json")


if __name__ == "__main__":
    main()
