"""Per-job cost of the generative pipeline's stage machinery: this checkout vs a checkout before the stages.

Times what one generative job does outside the models, on the demo sequence (carphone, 128x128, 32
frames, key QP 32): building the codec for the condition (factory, stage lookups), its provenance
(which a run computes once per codec), and encode + decode of ``keyframe-repeat`` (no model: the key
frame by VVenC intra, the container, the feature coder, the key-frame policy). Each side runs in its own
interpreter (``--python`` of each checkout's venv); the ratio is new / old in the same run.

    python benchmarks/stage_overhead.py --old /work/old/.venv/bin/python --new .venv/bin/python [--repeat 7]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys

PROBE = r'''
import json, sys, tempfile, time
from pathlib import Path
from test_conditions import load_condition
try:
    from test_conditions.manifest import load_manifest, load_sequence
except ImportError:  # before the floors: gfvc.sequences
    from gfvc.sequences import load_manifest, load_sequence
from gfvc.codec import RatePoint, get_codec
try:
    from gfvc.factory import build_codec
except ImportError:
    def build_codec(name, cond, env):
        return get_codec(name)(cond, env)
repeat = int(sys.argv[1])
cond = load_condition("demo")
seq = load_sequence(load_manifest(cond.manifest_path)[0], cond.frames)
t_build, t_prov, t_enc, t_dec = [], [], [], []
for i in range(repeat):
    t0 = time.perf_counter(); codec = build_codec("keyframe-repeat", cond, None); t1 = time.perf_counter()
    codec.provenance(); t2 = time.perf_counter()
    with tempfile.TemporaryDirectory() as d:
        res = codec.encode(seq, RatePoint(32), Path(d) / "e"); t3 = time.perf_counter()
        codec.decode(res.bitstream, Path(d) / "d"); t4 = time.perf_counter()
        size = res.bitstream.stat().st_size
    t_build.append(t1 - t0); t_prov.append(t2 - t1); t_enc.append(t3 - t2); t_dec.append(t4 - t3)
best = min  # load on a shared machine only ever adds time (a VVenC run: 360-670 ms): the minimum is the cost
print(json.dumps({"build_s": best(t_build[1:] or t_build), "provenance_s": best(t_prov[1:] or t_prov),
                  "encode_s": best(t_enc), "decode_s": best(t_dec), "bytes": size}))
'''


def measure(python: str, repeat: int) -> dict[str, float]:
    out = subprocess.run([python, "-c", PROBE, str(repeat)], capture_output=True, text=True, timeout=3600,
                         env={"GFVC_OFFLINE": "1", "PATH": "/usr/bin:/bin"})
    if out.returncode:
        raise SystemExit(f"{python}: {out.stderr.strip().splitlines()[-1]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--old", required=True, help="python of a checkout before the stages (e.g. commit 615398f)")
    p.add_argument("--new", default=sys.executable, help="python of this checkout")
    p.add_argument("--repeat", type=int, default=7)
    p.add_argument("--rounds", type=int, default=6,
                   help="processes per side, interleaved (a process's VVenC runs take about 420 or about 600 ms, "
                        "depending on the process: several are needed to see both sides' best)")
    a = p.parse_args()
    rows = []
    for _ in range(a.rounds):  # interleaved, so load on the machine hits both sides alike
        rows.append((measure(a.old, a.repeat), measure(a.new, a.repeat)))
    old = {k: min(r[0][k] for r in rows) for k in rows[0][0]}
    new = {k: min(r[1][k] for r in rows) for k in rows[0][1]}
    print(f"{'step':<14}{'old (ms)':>10}{'new (ms)':>10}{'new/old':>9}")
    for k in ("build_s", "provenance_s", "encode_s", "decode_s"):
        print(f"{k[:-2]:<14}{1000 * old[k]:>10.2f}{1000 * new[k]:>10.2f}{new[k] / old[k]:>9.3f}")
    total_old = sum(old[k] for k in ("build_s", "encode_s", "decode_s"))
    total_new = sum(new[k] for k in ("build_s", "encode_s", "decode_s"))
    print(f"per job (build + encode + decode): {1000 * total_old:.1f} ms -> {1000 * total_new:.1f} ms "
          f"({1000 * (total_new - total_old):+.1f} ms, x{total_new / total_old:.3f}); stream bytes "
          f"{old['bytes']:.0f} -> {new['bytes']:.0f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
