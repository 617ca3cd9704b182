"""Torch device selection shared by codecs, metrics and training.

``auto`` means CUDA when torch sees a device, else CPU. Asking for CUDA on a
machine without it is a user error (NotAvailable, exit 2), never a silent
fallback: a result computed on another device than the one asked for would
not be what the user meant to compare.
"""
from __future__ import annotations

import re
from typing import Any

from gfvc.errors import ConfigError, NotAvailable

_DEVICE_RE = re.compile(r"^(auto|cpu|cuda|cuda:\d+)$")


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


def device_provenance(device: str) -> dict[str, Any]:
    """What a record states about where torch work ran (device, versions, determinism)."""
    import torch

    info: dict[str, Any] = {"device": device, "torch": torch.__version__,
                            "deterministic_algorithms": bool(torch.are_deterministic_algorithms_enabled())}
    if device.startswith("cuda"):
        idx = int(device.split(":")[1]) if ":" in device else 0
        info.update(cuda=torch.version.cuda, cudnn=torch.backends.cudnn.version(),
                    gpu=torch.cuda.get_device_name(idx))
    return info
