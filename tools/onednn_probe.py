"""Sweep convolution configurations through torch's oneDNN (mkldnn) CPU path and report which crash.

Why: oneDNN 3.12 (torch 2.14.1) corrupts the heap in the backward pass of some convolutions when it runs
its AVX2 kernels (issue 16: ``free(): invalid next size`` in ``ideep::tensor::~tensor()`` under
``mkldnn_convolution_backward_weights``). A heap overflow kills the process, so every configuration runs
in a child process and a crash is observed as the child's signal. oneDNN's ``ONEDNN_MAX_CPU_ISA``
(``DNNL_MAX_CPU_ISA``) caps the instruction set it dispatches to, which lets an AVX-512 machine take
the AVX2 code paths; the variable is read when oneDNN first runs, so each child gets it in its
environment.

For every configuration the child first computes a float64 reference with mkldnn switched off, then
runs the mkldnn path ``--iterations`` times (forward only for ``mode=infer``; forward and backward for
``mode=train``) and compares. Outcomes: ``ok``, ``mismatch`` (wrong numbers), ``crash`` (signal),
``error`` (a Python exception, e.g. a layout oneDNN refuses). Each row also says which backend torch
picked (``torch._C._select_conv_backend``: only ``Mkldnn`` rows exercise oneDNN) and whether
:mod:`gfvc.cpu_guard` would route the configuration away from mkldnn under that ISA, so a rerun on a new
torch shows at once whether the guard's predicate still covers every crash (``unguarded crashes``) and
what it routes away needlessly.

Several configurations share one child (torch import costs ~1 s); when a child dies, the configuration
it was running is rerun alone, and if that one survives (heap corruption is often detected later, at a
free), every configuration the dead child ran is rerun alone, so each crash is pinned to one
configuration that crashes in a process of its own.

Usage::

    python tools/onednn_probe.py --isa AVX2 --isa DEFAULT --sweep grid --json probe.json
    python tools/onednn_probe.py --isa AVX2 --sweep axes          # one factor at a time around the trigger
    python tools/onednn_probe.py --isa AVX2 --sweep log --log verbose.txt   # replay an ONEDNN_VERBOSE log
"""
from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import os
import re
import selectors
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


@dataclasses.dataclass(frozen=True)
class Conv:
    """One convolution configuration (``dim`` 2 = Conv2d, 3 = Conv3d; ``transposed`` = ConvTranspose)."""

    dim: int = 2
    transposed: bool = False
    ic: int = 4
    oc: int = 8
    k: int = 1
    stride: int = 2
    padding: int = 0
    dilation: int = 1
    groups: int = 1
    bias: bool = False
    dtype: str = "float32"
    batch: int = 2
    size: int = 16
    channels_last: bool = True
    mode: str = "train"          # "train": forward + backward; "infer": forward under no_grad
    threads: int = 1

    def label(self) -> str:
        kind = ("convT" if self.transposed else "conv") + f"{self.dim}d"
        fmt = "cl" if self.channels_last else "contig"
        extra = "".join([f" d{self.dilation}" if self.dilation != 1 else "", f" g{self.groups}" if self.groups != 1
                         else "", " bias" if self.bias else "", f" t{self.threads}" if self.threads != 1 else ""])
        return (f"{kind} {self.mode} {self.dtype} {fmt} n{self.batch} {self.ic}->{self.oc} k{self.k} s{self.stride} "
                f"p{self.padding} {self.size}^{self.dim}{extra}")


FAULTS = ("crash", "hang")   # outcomes that end the process (a corrupted heap can also leave it spinning)
TRIGGER = Conv()   # the TPSM ResNet-18 downsample shortcut of the issue, at the test's tiny width


# --- child: run configurations --------------------------------------------------------------------

def _module(torch: Any, c: Conv) -> Any:
    nn = torch.nn
    cls = {(2, False): nn.Conv2d, (3, False): nn.Conv3d, (2, True): nn.ConvTranspose2d,
           (3, True): nn.ConvTranspose3d}[(c.dim, c.transposed)]
    return cls(c.ic, c.oc, c.k, stride=c.stride, padding=c.padding, dilation=c.dilation, groups=c.groups,
               bias=c.bias)


def _run_one(torch: Any, c: Conv, iterations: int) -> dict[str, Any]:
    """mkldnn path first (so a corruption it causes is met by the reference's allocations right after),
    then the float64 reference with mkldnn off; returns the outcome row (no crash)."""
    torch.set_num_threads(c.threads)
    torch.manual_seed(0)
    dtype = getattr(torch, c.dtype)
    fmt = (torch.channels_last if c.dim == 2 else torch.channels_last_3d) if c.channels_last else \
        torch.contiguous_format
    ref_mod = _module(torch, c).double()
    x64 = torch.randn(c.batch, c.ic, *([c.size] * c.dim), dtype=torch.float64)
    mod = _module(torch, c).to(dtype=dtype, memory_format=fmt)
    mod.load_state_dict(ref_mod.state_dict())
    xin = x64.to(dtype=dtype).contiguous(memory_format=fmt)
    chosen = torch._C._select_conv_backend(
        xin, mod.weight, mod.bias, [c.stride] * c.dim, [c.padding] * c.dim, [c.dilation] * c.dim, c.transposed,
        [0] * c.dim, c.groups, None)
    backend = str(chosen).split(".")[-1]
    if backend == "???":   # an enum value pybind leaves unnamed (9: MkldnnTranspose in torch 2.14)
        backend = f"enum{int(chosen)}"
    with torch.no_grad():
        g64 = torch.randn_like(ref_mod(x64))
    got: list[Any] = []
    for _ in range(iterations):
        mod.zero_grad(set_to_none=True)
        if c.mode == "infer":
            with torch.no_grad():
                got = [mod(xin)]
        else:
            xg = xin.detach().clone(memory_format=fmt).requires_grad_()
            y = mod(xg)
            y.backward(g64.to(dtype=dtype).contiguous(memory_format=fmt))
            got = [y.detach(), xg.grad, mod.weight.grad]
    with torch.backends.mkldnn.flags(enabled=False):
        x = x64.clone().requires_grad_(c.mode == "train")
        y_ref = ref_mod(x)
        refs = [y_ref]
        if c.mode == "train":
            y_ref.backward(g64)
            refs += [x.grad, ref_mod.weight.grad]
    tol = 1e-3 if c.dtype == "float32" else 5e-2
    worst = max(float((g.double() - r).abs().max()) / (float(r.abs().max()) or 1.0)
                for g, r in zip(got, refs, strict=True))
    return {"outcome": "ok" if worst <= tol else "mismatch", "backend": backend, "rel_err": worst}


def child_main(iterations: int) -> None:
    """Read configurations (JSON list) on stdin; print ``START i`` and ``RESULT i {...}`` lines."""
    import torch  # lazy: the parent never loads torch (the ISA variable must be set before it loads)

    configs = [Conv(**d) for d in json.load(sys.stdin)]
    for i, c in enumerate(configs):
        print(f"START {i}", flush=True)
        try:
            row = _run_one(torch, c, iterations)
        except Exception as e:  # noqa: BLE001 - a refused layout is a result, not a probe failure
            row = {"outcome": "error", "backend": "?", "error": f"{type(e).__name__}: {str(e)[:200]}"}
        print(f"RESULT {i} {json.dumps(row)}", flush=True)


# --- parent: batches, crash attribution -----------------------------------------------------------

def _signal_name(rc: int) -> str:
    sig = -rc if rc < 0 else rc - 128 if rc > 128 else 0
    try:
        return f"{signal.Signals(sig).name} ({sig})" if sig else f"exit {rc}"
    except ValueError:
        return f"signal {sig}"


def _spawn(configs: list[Conv], isa: str, iterations: int, timeout: float) -> tuple[dict[int, dict], int | None,
                                                                                        int, str]:
    """Run configs in one child: ({index: row}, index running when it died or None, rc, stderr tail).

    Each configuration gets ``timeout`` seconds from its START line; a child past it is killed (a
    corrupted heap can leave a process spinning instead of crashing) and its stderr tail reads
    ``timeout``. Row -1 holds the oneDNN implementations the dying configuration had run."""
    env = {**os.environ, "OMP_NUM_THREADS": str(max(c.threads for c in configs))}
    env.pop("DNNL_MAX_CPU_ISA", None)
    env.pop("ONEDNN_MAX_CPU_ISA", None)
    if isa.upper() != "DEFAULT":
        env["ONEDNN_MAX_CPU_ISA"] = isa
    env["ONEDNN_VERBOSE"] = "profile_exec"   # names the oneDNN implementation each configuration ran
    payload = json.dumps([dataclasses.asdict(c) for c in configs])
    rows: dict[int, dict] = {}
    started: int | None = None
    impls: set[str] = set()
    timed_out = False
    with tempfile.TemporaryFile("w+") as err_f:
        p = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--child", "--iterations",
                              str(iterations)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err_f,
                             text=True, env=env, cwd=ROOT)
        assert p.stdin is not None and p.stdout is not None
        p.stdin.write(payload)
        p.stdin.close()
        sel = selectors.DefaultSelector()
        sel.register(p.stdout, selectors.EVENT_READ)
        deadline = time.monotonic() + timeout + 30.0   # + torch import
        while True:
            if not sel.select(timeout=max(0.0, deadline - time.monotonic())):
                timed_out = True
                p.kill()
                break
            line = p.stdout.readline()
            if not line:
                break
            if line.startswith("START "):
                started, impls = int(line.split()[1]), set()
                deadline = time.monotonic() + timeout
            elif line.startswith("onednn_verbose") and ",exec," in line:
                f = line.split(",")
                if len(f) > 7 and f[5] in ("convolution", "deconvolution"):
                    impls.add(f"{f[6]} {f[7]}")     # implementation, propagation kind
            elif line.startswith("RESULT "):
                _, i, js = line.rstrip("\n").split(" ", 2)
                rows[int(i)] = {**json.loads(js), "impls": sorted(impls)}
                started = None
        sel.close()
        rc = p.wait()
        err_f.seek(0)
        err = err_f.read()
    tail = "timeout" if timed_out else " | ".join(err.strip().splitlines()[-2:])
    if started is not None:   # the configuration it died in: the implementations it reached
        rows[-1] = {"impls": sorted(impls)}
    return rows, started, rc, tail


def run_configs(configs: list[Conv], isa: str, *, batch: int = 24, iterations: int = 3,
                timeout: float = 30.0, progress: bool = True) -> list[dict[str, Any]]:
    """Every config's row under ``isa``; crashes are pinned to configurations that crash alone.

    ``timeout`` bounds one configuration: a child that outlives it is killed and the configuration is
    reported as ``hang``."""
    results: dict[int, dict] = {}
    pending = list(range(len(configs)))
    while pending:
        chunk = pending[:batch]
        rows, died_at, rc, tail = _spawn([configs[i] for i in chunk], isa, iterations, timeout)
        rows.pop(-1, None)
        for j, row in rows.items():
            results[chunk[j]] = row
        if died_at is None and len(rows) == len(chunk):
            pending = pending[len(chunk):]
            continue
        died_at = died_at if died_at is not None else len(rows)
        first = _alone(configs[chunk[died_at]], isa, iterations, timeout)
        results[chunk[died_at]] = first
        if first["outcome"] not in FAULTS:
            # detected late (at a later free): rerun every configuration this child ran, one per process
            for i in chunk[:died_at]:
                results[i] = _alone(configs[i], isa, iterations, timeout)
            if not any(results[i]["outcome"] in FAULTS for i in chunk[:died_at]):
                results[chunk[died_at]] = {**first, "outcome": "crash-unattributed", "signal": _signal_name(rc),
                                           "stderr": tail}
        if progress:
            for i in chunk[:died_at + 1]:
                if results[i]["outcome"] in FAULTS + ("crash-unattributed",):
                    print(f"  [{isa}] {results[i]['outcome'].upper()} {configs[i].label()}: {results[i]['signal']}"
                          f" -- {results[i]['stderr']}", flush=True)
        pending = pending[died_at + 1:]
    return [{"isa": isa, **dataclasses.asdict(configs[i]), **results[i]} for i in range(len(configs))]


def _alone(c: Conv, isa: str, iterations: int, timeout: float) -> dict[str, Any]:
    rows, died_at, rc, tail = _spawn([c], isa, iterations, timeout)
    if 0 in rows:
        return rows[0]
    return {"outcome": "hang" if tail == "timeout" else "crash", "backend": "Mkldnn",
            "signal": f"no result within {timeout:.0f} s" if tail == "timeout" else _signal_name(rc), "stderr": tail,
            "impls": rows.get(-1, {}).get("impls", [])}


# --- sweeps ---------------------------------------------------------------------------------------

def sweep_axes(base: Conv = TRIGGER) -> Iterator[Conv]:
    """One factor at a time around the trigger, in both modes and both memory formats."""
    axes: dict[str, Iterable[Any]] = {
        "ic": [1, 2, 3, 4, 5, 7, 8, 9, 16, 17, 32, 64], "oc": [1, 4, 7, 8, 9, 16, 24, 32, 64],
        "k": [1, 2, 3], "stride": [1, 2, 3, 4], "padding": [0, 1], "dilation": [1, 2], "groups": [1, 2, 4],
        "batch": [1, 2, 3, 4, 8, 16], "size": [4, 5, 8, 15, 16, 17, 32, 64], "bias": [False, True],
        "dtype": ["float32", "bfloat16"], "dim": [2, 3], "transposed": [False, True], "threads": [1, 2, 4]}
    seen = set()
    for mode, cl in itertools.product(("train", "infer"), (True, False)):
        for name, values in axes.items():
            for v in values:
                c = dataclasses.replace(base, mode=mode, channels_last=cl, **{name: v})
                if name == "groups" and (c.ic % v or c.oc % v):
                    continue
                if c not in seen:
                    seen.add(c)
                    yield c


def sweep_grid() -> Iterator[Conv]:
    """Cross product of the axes that decide oneDNN's kernel choice (layout, kernel, stride, channels)."""
    for dim, transposed, mode, cl, k, s, ic, oc in itertools.product(
            (2, 3), (False, True), ("train", "infer"), (True, False), (1, 3), (1, 2), (3, 4, 16), (4, 16)):
        size = 16 if dim == 2 else 8
        yield Conv(dim=dim, transposed=transposed, mode=mode, channels_last=cl, k=k, stride=s, ic=ic, oc=oc,
                   padding=k // 2, size=size)


def sweep_family() -> Iterator[Conv]:
    """Dense sweep of the 1x1 strided family (training, channels_last, one thread): input-channel counts
    around one AVX2 (8 floats) and one AVX-512 register (16), strides 2-4, input sizes divisible by the
    stride or not and up to 128; 3-D and batch/output-channel variations at a few sizes."""
    for s, ic, size in itertools.product((2, 3, 4), (*range(1, 18), 20, 24, 31, 32, 33),
                                         (6, 12, 16, 24, 32, 48, 64, 96, 128)):
        yield Conv(stride=s, ic=ic, oc=8, size=size, batch=2)
    for ic, size in itertools.product((2, 4, 8, 12, 16), (8, 16, 32)):
        yield Conv(dim=3, ic=ic, oc=8, size=size, batch=2)
    for n, oc, size in itertools.product((1, 2, 4, 16), (1, 8, 64), (4, 16, 64)):
        yield Conv(ic=4, oc=oc, size=size, batch=n)


_DESC = re.compile(r"(?:g(?P<g>\d+))?mb(?P<mb>\d+)_ic(?P<ic>\d+)oc(?P<oc>\d+)_(?:id(?P<id>\d+)od\d+kd\d+sd\d+dd\d+"
                   r"pd\d+_)?ih(?P<ih>\d+)oh\d+kh(?P<k>\d+)sh(?P<s>\d+)dh(?P<d>\d+)ph(?P<p>\d+)_iw")


def sweep_log(path: Path) -> Iterator[Conv]:
    """Every convolution problem in an ONEDNN_VERBOSE log, in both memory formats and both modes."""
    seen = set()
    for line in path.read_text(errors="replace").splitlines():
        if ",exec," not in line or ",convolution," not in line:
            continue
        m = _DESC.search(line.rsplit(",", 2)[-2])
        if not m:
            continue
        g = int(m["g"] or 1)
        base = Conv(dim=3 if m["id"] else 2, ic=int(m["ic"]), oc=int(m["oc"]), k=int(m["k"]), stride=int(m["s"]),
                    padding=int(m["p"]), dilation=int(m["d"]) + 1, groups=g, batch=int(m["mb"]), size=int(m["ih"]))
        for mode, cl in itertools.product(("train", "infer"), (True, False)):
            c = dataclasses.replace(base, mode=mode, channels_last=cl)
            if c not in seen:
                seen.add(c)
                yield c


# --- report ---------------------------------------------------------------------------------------

def guard_verdict(rows: list[dict[str, Any]]) -> None:
    """Add ``guarded``: whether gfvc.cpu_guard routes the configuration away from mkldnn under its ISA."""
    sys.path.insert(0, str(ROOT))
    from gfvc import cpu_guard  # lazy: the parent process stays torch-free until the sweep is over

    for r in rows:
        c = Conv(**{f.name: r[f.name] for f in dataclasses.fields(Conv)})
        r["guarded"] = cpu_guard.config_is_faulty(
            isa=cpu_guard.effective_isa(r["isa"]), dim=c.dim, transposed=c.transposed, kernel=(c.k,) * c.dim,
            stride=(c.stride,) * c.dim, padding=(c.padding,) * c.dim, dilation=(c.dilation,) * c.dim,
            groups=c.groups, in_channels=c.ic, out_channels=c.oc, dtype=c.dtype, channels_last=c.channels_last,
            training=c.mode == "train")


def summarize(rows: list[dict[str, Any]]) -> str:
    out = []
    for isa in sorted({r["isa"] for r in rows}):
        sub = [r for r in rows if r["isa"] == isa]
        counts = Counter(r["outcome"] for r in sub)
        backends = Counter(r["backend"] for r in sub)
        out.append(f"== ISA {isa}: {len(sub)} configs, " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
                   + "; backends " + ", ".join(f"{k} {v}" for k, v in sorted(backends.items())))
        bad = [r for r in sub if r["outcome"] not in ("ok", "error")]
        for r in bad:
            c = Conv(**{f.name: r[f.name] for f in dataclasses.fields(Conv)})
            extra = r.get("signal") or f"rel_err {r.get('rel_err', 0):.2e}"
            g = "" if "guarded" not in r else ("  [guarded]" if r["guarded"] else "  [NOT GUARDED]")
            out.append(f"  {r['outcome']:9s} {c.label()}  ({extra}){g}")
        if sub and "guarded" in sub[0]:
            unguarded = [r for r in bad if not r["guarded"]]
            needless = [r for r in sub if r["guarded"] and r["outcome"] == "ok"]
            out.append(f"  guard: {len(unguarded)} unguarded crash/mismatch, {len(needless)} of "
                       f"{sum(r['guarded'] for r in sub)} guarded configs ran fine here")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--isa", action="append", help="ONEDNN_MAX_CPU_ISA value(s) (repeatable; DEFAULT = unset); "
                    "default: AVX2 and DEFAULT")
    ap.add_argument("--sweep", choices=("trigger", "axes", "grid", "family", "log"), default="axes")
    ap.add_argument("--log", type=Path, help="ONEDNN_VERBOSE=all output to replay (--sweep log)")
    ap.add_argument("--iterations", type=int, default=3, help="forward/backward repetitions per configuration")
    ap.add_argument("--batch", type=int, default=24, help="configurations per child process")
    ap.add_argument("--timeout", type=float, default=30.0, help="seconds one configuration may take before it "
                    "counts as a hang")
    ap.add_argument("--limit", type=int, default=0, help="run only the first N configurations")
    ap.add_argument("--no-guard", action="store_true", help="do not evaluate gfvc.cpu_guard's predicate")
    ap.add_argument("--json", type=Path, help="write every row here")
    ap.add_argument("--from-json", type=Path, action="append",
                    help="re-score rows a former run wrote (--json) against today's guard; runs nothing")
    a = ap.parse_args(argv)
    if a.child:
        child_main(a.iterations)
        return 0
    if a.from_json:
        old = [r for f in a.from_json for r in json.loads(f.read_text())]
        guard_verdict(old)
        print(summarize(old))
        return 1 if any(r["outcome"] in FAULTS + ("crash-unattributed", "mismatch") and not r["guarded"]
                        for r in old) else 0
    if a.sweep == "log" and not a.log:
        ap.error("--sweep log needs --log FILE")
    gen = {"trigger": lambda: iter([TRIGGER, dataclasses.replace(TRIGGER, mode="infer")]), "axes": sweep_axes,
           "grid": sweep_grid, "family": sweep_family, "log": lambda: sweep_log(a.log)}[a.sweep]
    configs = list(gen())
    if a.limit:
        configs = configs[:a.limit]
    rows: list[dict[str, Any]] = []
    for isa in a.isa or ["AVX2", "DEFAULT"]:
        t0 = time.time()
        print(f"[{isa}] {len(configs)} configurations ...", flush=True)
        rows += run_configs(configs, isa, batch=a.batch, iterations=a.iterations, timeout=a.timeout)
        print(f"[{isa}] done in {time.time() - t0:.0f} s", flush=True)
    if not a.no_guard:
        guard_verdict(rows)
    print(summarize(rows))
    if a.json:
        a.json.write_text(json.dumps(rows, indent=1))
    bad = [r for r in rows if r["outcome"] in FAULTS + ("crash-unattributed", "mismatch") and not r.get("guarded")]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
