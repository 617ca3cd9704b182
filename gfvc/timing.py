"""Time one part of a torch model inside a codec, with the device it ran on.

Papers report the speed of single heads (Sparse2Dense: its vertex head takes
0.002 s per frame against 0.724 s for OSX), so a codec can time a submodule
without touching the network code: forward hooks around the module's calls,
synchronising CUDA before reading the clock so the time is the module's, not
the launch's. The result goes into ``Codec.decoder_report()`` and from there
into every record (``timings["decoder.<name>_s"]`` and ``decoder_info``).
"""
from __future__ import annotations

import platform
import time
from typing import Any


def device_name(device: Any) -> str:
    """Human-readable name of a torch device: the GPU's name, or the CPU model."""
    import torch

    dev = torch.device(device)
    if dev.type == "cuda":
        return torch.cuda.get_device_name(dev)
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "cpu"


class ModuleTimer:
    """Accumulates wall time and items (first dimension of the output) of a module's forward calls."""

    def __init__(self, module: Any, name: str) -> None:
        import torch

        self.name = name
        params = list(module.parameters())
        self.device = params[0].device if params else torch.device("cpu")
        self._sync = (lambda: torch.cuda.synchronize(self.device)) if self.device.type == "cuda" else (lambda: None)
        self.seconds = 0.0
        self.items = 0
        self.calls = 0
        self._t0 = 0.0
        module.register_forward_pre_hook(self._pre)
        module.register_forward_hook(self._post)

    def _pre(self, _module: Any, _inputs: Any) -> None:
        self._sync()
        self._t0 = time.perf_counter()

    def _post(self, _module: Any, _inputs: Any, output: Any) -> None:
        self._sync()
        self.seconds += time.perf_counter() - self._t0
        self.items += int(getattr(output, "shape", [1])[0])
        self.calls += 1

    def reset(self) -> None:
        self.seconds, self.items, self.calls = 0.0, 0, 0

    def report(self) -> dict[str, Any]:
        """``{<name>_s, <name>_frames, <name>_calls, <name>_device, <name>_device_name, <name>_torch_threads}``."""
        import torch

        n = self.name
        return {f"{n}_s": self.seconds, f"{n}_frames": self.items, f"{n}_calls": self.calls,
                f"{n}_device": str(self.device), f"{n}_device_name": device_name(self.device),
                f"{n}_torch_threads": torch.get_num_threads()}
