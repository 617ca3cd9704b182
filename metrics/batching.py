"""How much memory one frame (or clip) costs in a metric network, for memory-bounded batches.

The learned metrics batch frames on their device; the batch size is the free
memory (gfvc.devices.batch_size) divided by the cost of one item. The cost is
measured, not guessed: one forward pass at a small probe size with hooks that
add up every module's output, scaled by the pixel count (convolutions and
pooling keep the output-to-input area ratio). Summing every intermediate
output over-estimates the peak (most are freed as the pass goes on), which is
the safe side.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

# Safety factor over the summed activations (allocator rounding, workspace buffers).
OVERHEAD = 1.5


def _tensors(x: Any):
    if isinstance(x, torch.Tensor):
        yield x
    elif isinstance(x, (list, tuple)):
        for y in x:
            yield from _tensors(y)
    elif isinstance(x, dict):
        for y in x.values():
            yield from _tensors(y)


def activation_bytes(module: torch.nn.Module, run: Callable[[torch.Tensor], Any], probe: torch.Tensor) -> int:
    """Bytes of every leaf module's output plus the returned tensors, for one pass on ``probe``."""
    total = 0

    def hook(_m: torch.nn.Module, _inp: Any, out: Any) -> None:
        nonlocal total
        total += sum(t.numel() * t.element_size() for t in _tensors(out))

    leaves = [m for m in module.modules() if not list(m.children())]
    handles = [m.register_forward_hook(hook) for m in leaves]
    try:
        with torch.inference_mode():
            out = run(probe)
    finally:
        for h in handles:
            h.remove()
    return total + sum(t.numel() * t.element_size() for t in _tensors(out))


_PER_PIXEL: dict[tuple, float] = {}


def image_bytes(model: Any, kind: str, height: int, width: int) -> float:
    """Estimated bytes to extract features of one (height x width) frame with ``model.features``."""
    key = (kind, id(model))
    if key not in _PER_PIXEL:
        side = 64
        probe = torch.zeros(1, 3, side, side, device=device_of(model))
        _PER_PIXEL[key] = activation_bytes(model, model.features, probe) / float(side * side)
    return _PER_PIXEL[key] * height * width * OVERHEAD


def device_of(m: Any) -> torch.device:
    try:
        return next(iter(m.parameters())).device
    except (StopIteration, AttributeError, TypeError):
        try:
            return next(iter(m.buffers())).device
        except (StopIteration, AttributeError, TypeError):
            return torch.device("cpu")
