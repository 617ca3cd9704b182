"""Benchmarks are run by hand, so nothing else notices when a refactor breaks one: run the cheapest of them.

The oneDNN guard benchmark starts a child process per mode; one training step of
the narrowest TPSM shows the child still imports and trains, and the parent exits
non-zero when the guarded or mkldnn-off mode fails.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_onednn_guard_benchmark_runs_one_step():
    p = subprocess.run([sys.executable, "benchmarks/onednn_guard_bench.py", "--models", "tpsm-w4", "--steps", "1",
                        "--repeat", "1", "--rounds", "1", "--isa", "DEFAULT", "--timeout", "300"],
                       cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stdout + p.stderr
    row = p.stdout.strip().splitlines()[-1]
    assert "guard " in row and "/s" in row and "exit" not in row, row
