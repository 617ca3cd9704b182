"""Torch device selection shared by codecs, metrics and training.

``auto`` means CUDA when torch sees a device, else CPU. Asking for CUDA on a
machine without it is a user error (NotAvailable, exit 2), never a silent
fallback: a result computed on another device than the one asked for would
not be what the user meant to compare.

Also here, because every torch user needs them in the same form:

* :func:`configure_torch` -- numerics settings applied before any model runs
  (TF32 off on CUDA, so CUDA convolutions keep float32 precision and stay
  within float32 rounding of the CPU result; optional deterministic algorithms);
* :func:`device_provenance` -- what a record states about where torch work ran;
* :func:`batch_size` -- how many frames/clips fit in the memory that is free
  now (``torch.cuda.mem_get_info`` on CUDA, ``MemAvailable`` on CPU);
* :func:`device_types` / :func:`check_uniform_devices` -- the rule that one
  comparison never mixes results computed on different device types.
"""
from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from typing import Any

from gfvc import cpu_guard
from gfvc.errors import ConfigError, NotAvailable

_DEVICE_RE = re.compile(r"^(auto|cpu|cuda|cuda:\d+)$")

# Fraction of the free memory one job's metric/model batches may plan to use.
CUDA_MEMORY_FRACTION = 0.7
CPU_MEMORY_FRACTION = 0.25


def validate_device(name: str) -> str:
    """Return ``name`` if it is a device string the suite accepts, else ConfigError."""
    if not isinstance(name, str) or not _DEVICE_RE.match(name):
        raise ConfigError(f"device {name!r} not understood: use auto, cpu, cuda or cuda:N")
    return name


def resolve_device(name: str = "auto") -> str:
    """Map ``auto|cpu|cuda|cuda:N`` to a concrete torch device string ("cpu", "cuda:0", ...)."""
    validate_device(name)
    if name == "cpu":
        return "cpu"
    import torch

    has_cuda = torch.cuda.is_available()
    if name == "auto":
        return f"cuda:{torch.cuda.current_device()}" if has_cuda else "cpu"
    if not has_cuda:
        raise NotAvailable(f"--device {name}: torch {torch.__version__} sees no CUDA device on this machine; "
                           "use --device cpu (or auto)")
    idx = int(name.split(":")[1]) if ":" in name else torch.cuda.current_device()
    if idx >= torch.cuda.device_count():
        raise NotAvailable(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s) visible")
    return f"cuda:{idx}"


def device_type(name: str | None) -> str | None:
    """"cpu" / "cuda" of a device string (None stays None: no torch work)."""
    if not name:
        return None
    return "cuda" if str(name).startswith("cuda") else str(name).split(":")[0]


def configure_torch(device: str, deterministic: bool = False) -> None:
    """Numerics settings for every torch computation of a job (idempotent).

    On CUDA, TF32 is switched off for matmuls and cuDNN convolutions: with it
    (PyTorch's default for cuDNN) convolutions round inputs to 10-bit
    mantissas and differ from the CPU result by ~1e-3 relative instead of
    float32 rounding (~1e-6). ``deterministic`` turns on
    ``torch.use_deterministic_algorithms`` (and cuBLAS's fixed workspace).
    """
    import torch

    if device_type(device) == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cudnn.benchmark = False  # algorithm choice by timing is not reproducible
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)


def device_provenance(device: str) -> dict[str, Any]:
    """What a record states about where torch work ran (device, versions, determinism)."""
    import torch

    info: dict[str, Any] = {"device": device, "torch": torch.__version__,
                            "deterministic_algorithms": bool(torch.are_deterministic_algorithms_enabled())}
    if device_type(device) == "cpu":
        info["cpu_guard"] = cpu_guard.provenance()  # issue 16: which oneDNN convolutions avoid mkldnn, and why
    if device.startswith("cuda"):
        idx = int(device.split(":")[1]) if ":" in device else 0
        info.update(cuda=torch.version.cuda, cudnn=torch.backends.cudnn.version(),
                    gpu=torch.cuda.get_device_name(idx),
                    tf32=bool(torch.backends.cudnn.allow_tf32 or torch.backends.cuda.matmul.allow_tf32))
    return info


# --- memory-bounded batches -------------------------------------------------------------------

def _mem_available_cpu() -> int:
    """Bytes of RAM available to new allocations (Linux MemAvailable; psutil elsewhere)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except ImportError:  # pragma: no cover
        return 2 << 30


def free_memory(device: str) -> int:
    """Bytes free on ``device`` now (CUDA: torch.cuda.mem_get_info; CPU: MemAvailable)."""
    if device_type(device) == "cuda":
        import torch

        idx = int(device.split(":")[1]) if ":" in device else torch.cuda.current_device()
        free, _total = torch.cuda.mem_get_info(idx)
        # memory held by torch's caching allocator but unused is free for this process too
        return int(free + torch.cuda.memory_reserved(idx) - torch.cuda.memory_allocated(idx))
    return _mem_available_cpu()


def concurrent_jobs() -> int:
    """Jobs sharing this machine's RAM (set by the local pool for its workers), for the CPU bound."""
    try:
        return max(1, int(os.environ.get("GFVC_CONCURRENT_JOBS", "1")))
    except ValueError:
        return 1


def batch_size(device: str, bytes_per_item: float, cap: int, *, free: int | None = None) -> int:
    """Items (frames, clips) per forward pass: as many as the free memory allows, 1..cap.

    CUDA: CUDA_MEMORY_FRACTION of the free device memory. CPU: CPU_MEMORY_FRACTION
    of MemAvailable, shared among the jobs running at once. ``cap`` bounds it
    where a larger batch no longer speeds things up (CPU) or to keep latency low.
    """
    if bytes_per_item <= 0:
        return max(1, cap)
    free = free_memory(device) if free is None else free
    if device_type(device) == "cuda":
        budget = free * CUDA_MEMORY_FRACTION
    else:
        budget = free * CPU_MEMORY_FRACTION / concurrent_jobs()
    return int(max(1, min(cap, budget // bytes_per_item)))


# --- one comparison, one device type ---------------------------------------------------------

def record_device_types(record: Mapping[str, Any]) -> set[str]:
    """Device types on which a record's torch work ran (codec synthesis, learned metrics)."""
    dev = record.get("device") or {}
    out = set()
    for role in ("codec", "metrics"):
        t = device_type(dev.get(role))
        if t:
            out.add(t)
    return out


def device_types(records: Iterable[Mapping[str, Any]]) -> dict[str, list[str]]:
    """{device type: [record labels]} over records (records without torch work are left out)."""
    out: dict[str, list[str]] = {}
    for r in records:
        label = (f"{r.get('codec')}/{(r.get('sequence') or {}).get('name')}/"
                 f"{(r.get('rate_point') or {}).get('label')}")
        for t in record_device_types(r):
            out.setdefault(t, []).append(label)
    return out


class MixedDevices(ConfigError):
    """Results computed on different device types would be compared."""


def check_uniform_devices(records: Iterable[Mapping[str, Any]], *, allow: bool = False,
                          what: str = "") -> dict[str, list[str]]:
    """Raise MixedDevices if the records were computed on more than one device type.

    GPU and CPU results of the same job differ in the last bits of the
    synthesised frames and of the metric values (docs/running.md, "Devices"),
    so one comparison uses one device type unless ``allow`` is set.
    """
    types = device_types(records)
    if len(types) > 1 and not allow:
        parts = ", ".join(f"{t}: {len(v)} record(s), e.g. {v[0]}" for t, v in sorted(types.items()))
        raise MixedDevices(f"{what or 'these records'} mix device types ({parts}); CPU and GPU results differ in "
                           "the last bits: recompute on one device (--device, --force) or pass "
                           "--allow-mixed-devices")
    return types
