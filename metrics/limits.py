"""Batch limits of the learned metrics (kept apart from the torch code so the CLI starts fast)."""
from __future__ import annotations

import os

from gfvc.errors import InputError

# Upper bounds of the memory-bounded batch (frames for DISTS/LPIPS, clips for FVD): on CPU a
# larger batch no longer speeds things up (benchmarks/metrics_device_bench.py); on CUDA it keeps
# a single job from taking the whole device.
MAX_BATCH = {"cpu": 8, "cuda": 64}
MAX_CLIPS = {"cpu": 2, "cuda": 16}
# The batch size changes the last bits of DISTS/LPIPS/FVD (convolution kernels are chosen by shape:
# measured ~1e-6 relative on CPU, benchmarks/metrics_device_bench.py); it is recorded with every
# result, and GFVC_METRICS_BATCH=N fixes it (frames; FVD clips: min(N, MAX_CLIPS)) for bit-reproducibility.
FIXED_BATCH_ENV = "GFVC_METRICS_BATCH"


def fixed_batch() -> int | None:
    """$GFVC_METRICS_BATCH as a positive int, or None when unset (InputError when malformed)."""
    v = os.environ.get(FIXED_BATCH_ENV, "").strip()
    if not v:
        return None
    try:
        n = int(v)
    except ValueError:
        raise InputError(f"${FIXED_BATCH_ENV}={v!r}: expected a positive integer") from None
    if n < 1:
        raise InputError(f"${FIXED_BATCH_ENV}={v!r}: expected a positive integer")
    return n
