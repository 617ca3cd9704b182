"""Issue 16: every codec's trainer survives oneDNN's faulty 1x1 weight-gradient kernel.

Each of the ten trainers (s2d and the nine baselines) trains its tiny test configuration for one step
in a child process (tests/train_tiny.py), once with oneDNN capped at AVX2 (``ONEDNN_MAX_CPU_ISA``, read
when oneDNN first runs, hence the process) and once at the machine's own ISA. Without gfvc.cpu_guard the
TPSM run dies of heap corruption (SIGABRT/SIGSEGV) at AVX2; a crash here fails one parameter, naming the
signal.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from train_tiny import BASELINES

from gfvc import cpu_guard as G
from gfvc.cpu_guard import AFFECTED_ISAS, ISA_ORDER

TESTS = Path(__file__).resolve().parent
CODECS = ("s2d", *BASELINES)
ISAS = ("AVX2", "DEFAULT")

pytestmark = pytest.mark.slow   # two processes training ten tiny models each, ~1 min in all


def run_trainers(codecs: list[str], isa: str, tmp: Path, timeout: float = 600,
                 **env_changes: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA")}
    if isa != "DEFAULT":
        env["ONEDNN_MAX_CPU_ISA"] = isa
    env.update(OMP_NUM_THREADS="1", GFVC_OFFLINE="1", **env_changes)
    return subprocess.run([sys.executable, str(TESTS / "train_tiny.py"), str(tmp), *codecs], env=env,
                          capture_output=True, text=True, timeout=timeout)


def train_all(isa: str, tmp: Path) -> dict[str, dict | str]:
    """{codec: its JSON result, or why it has none}. A child that dies is restarted after the codec it
    died in, so one crash does not hide the codecs after it."""
    results: dict[str, dict | str] = {}
    todo = list(CODECS)
    while todo:
        p = run_trainers(todo, isa, tmp / f"{isa}-{len(results)}")
        current = None
        for line in p.stdout.splitlines():
            if line.startswith("START "):
                current = line.split()[1]
            elif line.startswith("{") and current:
                results[current], current = json.loads(line), None
        if p.returncode == 0 and current is None:
            break
        how = f"crashed with {signal.Signals(-p.returncode).name}" if p.returncode < 0 else f"exit {p.returncode}"
        dead = current or todo[0]
        results[dead] = f"{how} in {dead}:\n" + "\n".join((p.stdout + p.stderr).strip().splitlines()[-15:])
        todo = [c for c in todo if c not in results]
    return results


@pytest.fixture(scope="module", params=ISAS)
def trained(request, tmp_path_factory):
    return request.param, train_all(request.param, tmp_path_factory.mktemp("guard"))


@pytest.mark.parametrize("codec", CODECS)
def test_trainer_survives(codec, trained):
    isa, results = trained
    out = results.get(codec, "not run")
    assert isinstance(out, dict), out
    assert out["codec"] == codec and out["steps"] == 1
    st = out["cpu_guard"]
    if isa == "AVX2":
        assert st["isa_cap"] == "avx2" and st["isa"] in ISA_ORDER[:ISA_ORDER.index("avx2") + 1]
    assert st["active"] == (st["isa"] in AFFECTED_ISAS), st
    assert (st["guarded_modules"] > 0) == st["active"]      # every trainer has convolutions to watch


def test_tpsm_dies_without_the_guard(tmp_path):
    """The reason for the guard: the issue's crash, reproduced (fails once a torch no longer has the bug)."""
    if G.machine_isa() not in AFFECTED_ISAS:
        pytest.skip(f"this CPU ({G.machine_isa()}) has no AVX2: oneDNN never runs the faulty kernel")
    try:
        p = run_trainers(["tpsm"], "AVX2", tmp_path, timeout=120, GFVC_CPU_GUARD="off")
    except subprocess.TimeoutExpired:
        return   # a corrupted heap can also leave the process spinning
    assert p.returncode < 0, ("TPSM trained at AVX2 without the guard: oneDNN " + G.status()["onednn"] + " may "
                              "have fixed the kernel; rerun tools/onednn_probe.py and narrow gfvc/cpu_guard.py")
