"""Training speed with gfvc.cpu_guard on, off, and with mkldnn switched off altogether (issue 16).

    python benchmarks/onednn_guard_bench.py [--models tpsm-w4,tpsm-demo,fomm-demo] [--isa DEFAULT --isa AVX2]
                                            [--steps 3] [--batch 2] [--threads 1] [--json out.json]

For every ISA (``ONEDNN_MAX_CPU_ISA``; DEFAULT = the machine's) and model, three modes each run in a
process of their own (the ISA variable must be set before torch loads, and mode ``off`` may crash):

* ``off``: ``GFVC_CPU_GUARD=off`` -- mkldnn everywhere, the faulty kernel included (may crash);
* ``guard``: the guard as shipped (``gfvc.cpu_guard.guard_model`` on the recipe's modules);
* ``nomkldnn``: ``torch.backends.mkldnn.enabled = False`` for the whole step (the issue's workaround).

Modes run interleaved ``--rounds`` times (off, guard, nomkldnn, off, ...) and the best round of each
is kept, so a load change on a shared machine does not land on one mode. A step is one generator phase
(losses, backward, the recipe's before_step, Adam) and, where the recipe has one, one discriminator
phase, on a fixed batch from the recipe's own dataset class over synthetic moving-square frames (frames
come channels-last from it, as in real training). Reported: steps/s (best of ``--repeat`` timings of
``--steps`` steps after one warm-up step), the ratios guard/off, nomkldnn/off and guard/nomkldnn, and
how many convolution nodes the guard routed per step. Weights are random.

Models: ``tpsm-w4`` = TPSM demo configuration with ResNet width 4 (the width of the issue's test
configuration: its 1x1 stride-2 shortcuts have 4 and 8 input channels, the faulty family);
``tpsm-demo``/``fomm-demo`` = the shipped demo configurations (no convolution in the family: the
guard's cost there is its hooks).
"""
from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
MODELS = ("tpsm-w4", "tpsm-demo", "fomm-demo")
MODES = ("off", "guard", "nomkldnn")


def _config(model: str) -> Any:
    import baselines.registry  # noqa: F401  (registers codecs and recipes)
    from gfvc.codec import get_codec

    codec, variant = model.split("-")
    cfg = get_codec(codec).named_configs()["demo"]
    if variant == "w4":
        cfg = type(cfg).from_dict({**cfg.to_dict(), "options": {**cfg.options, "resnet_width": 4},
                                   "name": "demo-w4"})
    return codec, cfg


def child(model: str, mode: str, steps: int, batch: int, repeat: int, threads: int) -> dict[str, Any]:
    import torch
    from baselines_bench import _frames as moving_pattern  # a sibling benchmark's synthetic clip

    from gfvc import cpu_guard
    from gfvc.video import write_png_folder
    from model_parts.losses import sum_terms
    from model_parts.training import RECIPES

    torch.set_num_threads(threads)
    codec, cfg = _config(model)
    recipe = RECIPES.get(codec)(cfg)
    with tempfile.TemporaryDirectory() as tmp:
        write_png_folder(Path(tmp) / "train" / "clip", moving_pattern(6, cfg.image_size))
        data = recipe.dataset(Path(tmp))
        fixed = data.batch(random.Random(0), batch, hflip=False)
    torch.manual_seed(0)
    modules = recipe.build()
    guard = cpu_guard.guard_model(modules) if mode == "guard" else cpu_guard.status()
    if mode == "nomkldnn":
        torch.backends.mkldnn.enabled = False
    opt_map = recipe.optimizers()
    optims = {k: torch.optim.Adam([p for n in names for p in modules[n].parameters()], lr=1e-5)
              for k, names in opt_map.items()}
    d_keys = set(recipe.discriminator_optimizers())
    for m in modules.values():
        m.train()

    def step(i: int) -> None:
        terms, cache = recipe.generator_losses(modules, fixed, i)
        for k, o in optims.items():
            if k not in d_keys:
                o.zero_grad(set_to_none=True)
        sum_terms(terms.values()).backward()
        recipe.before_step(modules)
        for k, o in optims.items():
            if k not in d_keys:
                o.step()
        if d_keys:
            d_terms = recipe.discriminator_losses(modules, fixed, cache, i)
            if d_terms:
                for k in d_keys:
                    optims[k].zero_grad(set_to_none=True)
                sum_terms(d_terms.values()).backward()
                for k in d_keys:
                    optims[k].step()

    recipe.total_steps = 1 + repeat * steps
    step(0)
    nodes0 = cpu_guard.status()["guarded_nodes"]
    best = float("inf")
    i = 1
    for _ in range(repeat):
        t = time.perf_counter()
        for _ in range(steps):
            step(i)
            i += 1
        best = min(best, time.perf_counter() - t)
    per_step = (cpu_guard.status()["guarded_nodes"] - nodes0) / (repeat * steps)
    return {"steps_per_s": steps / best, "guard_active": bool(guard["active"]) and mode == "guard",
            "guarded_nodes_per_step": per_step, "isa": guard["isa"], "reason": guard["reason"]}


def run(isa: str, model: str, mode: str, a: argparse.Namespace) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if k not in ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA")}
    if isa.upper() != "DEFAULT":
        env["ONEDNN_MAX_CPU_ISA"] = isa
    env["GFVC_CPU_GUARD"] = "off" if mode == "off" else "auto"
    env["OMP_NUM_THREADS"] = str(a.threads)
    env.setdefault("GFVC_OFFLINE", "1")   # no download attempt for the perceptual-loss weights
    argv = [sys.executable, str(Path(__file__).resolve()), "--child", model, mode, "--steps", str(a.steps),
            "--batch", str(a.batch), "--repeat", str(a.repeat), "--threads", str(a.threads)]
    try:
        p = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=a.timeout, cwd=ROOT)
    except subprocess.TimeoutExpired:
        return {"error": f"no result within {a.timeout} s (hang?)"}
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("{")]
    if p.returncode != 0 or not lines:
        if p.returncode < 0:
            return {"error": f"crashed ({signal.Signals(-p.returncode).name})"}
        return {"error": f"exit {p.returncode}: {' | '.join(p.stderr.strip().splitlines()[-1:])}"}
    return json.loads(lines[-1])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--child", nargs=2, metavar=("MODEL", "MODE"), help=argparse.SUPPRESS)
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--isa", action="append", help="ONEDNN_MAX_CPU_ISA values (repeatable; default DEFAULT, AVX2)")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=2, help="processes per mode, interleaved; the best is kept")
    ap.add_argument("--timeout", type=float, default=900.0)
    ap.add_argument("--json", type=Path)
    a = ap.parse_args(argv)
    if a.child:
        print(json.dumps(child(*a.child, a.steps, a.batch, a.repeat, a.threads)))
        return 0
    print(f"load average {os.getloadavg()[0]:.1f}; threads {a.threads}; batch {a.batch}; steps {a.steps} x best of "
          f"{a.repeat} x best of {a.rounds} processes", flush=True)
    rows = []
    for isa in a.isa or ["DEFAULT", "AVX2"]:
        for model in a.models.split(","):
            res: dict[str, dict[str, Any]] = {}
            for _ in range(a.rounds):   # modes interleaved, best round kept: load drifts on a shared machine
                for mode in MODES:
                    r = run(isa, model, mode, a)
                    if "steps_per_s" not in res.get(mode, {}) or r.get("steps_per_s", 0) > res[mode]["steps_per_s"]:
                        res[mode] = r
                    if "error" in r and mode == "off":
                        res[mode] = r   # a crash stands, whatever another round did
            rows.append({"isa": isa, "model": model, **res})
            sps = {m: r.get("steps_per_s") for m, r in res.items()}

            def ratio(m: str, base: str = "off", sps: dict[str, Any] = sps) -> str:
                return f"x{sps[m] / sps[base]:.2f}" if sps[m] and sps[base] else "-"

            cells = [f"{m} {r['steps_per_s']:.3f}/s" if "steps_per_s" in r else f"{m} {r['error']}"
                     for m, r in res.items()]
            g = res["guard"]
            state = "active" if g.get("guard_active") else "inactive"
            print(f"{isa:8s} {model:10s} " + "; ".join(cells) + f"; guard/off {ratio('guard')}, nomkldnn/off "
                  f"{ratio('nomkldnn')}, guard/nomkldnn {ratio('guard', 'nomkldnn')}; guard {state} at "
                  f"{g.get('isa')}, {g.get('guarded_nodes_per_step', 0):.0f} conv nodes/step routed", flush=True)
    if a.json:
        a.json.write_text(json.dumps(rows, indent=1))
    # "off" may crash (that is what is measured); the guard and mkldnn-off modes must not
    broken = [f"{r['isa']} {r['model']} {m}" for r in rows for m in ("guard", "nomkldnn") if "error" in r[m]]
    if broken:
        print("failed: " + ", ".join(broken), file=sys.stderr)
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
