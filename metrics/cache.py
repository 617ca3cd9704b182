"""Reference-feature cache: compute the original's features once, reuse them for every decode.

Why: in a CTC run every sequence is decoded by several codecs at several rate
points, and the straightforward per-frame loop recomputes the reference's
network features for each of them. Entries are keyed by (metric, protocol,
weight hashes, reference identity, frame range), so a change of any of those
can never hit a stale entry.

Memory policy: an LRU with a byte budget (env GFVC_METRICS_CACHE_MB, default
4096). When full, entries of *other* references are evicted first; chunks of
the reference being scored are never evicted to make room for later chunks of
the same reference (plain LRU would thrash on the cyclic access pattern and
keep nothing useful), so a long sequence keeps a cached prefix.
"""
from __future__ import annotations

import hashlib
import os
import threading
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch


def _nbytes(obj: Any) -> int:
    if isinstance(obj, torch.Tensor):
        return obj.element_size() * obj.nelement()
    if isinstance(obj, (list, tuple)):
        return sum(_nbytes(o) for o in obj)
    if hasattr(obj, "nbytes"):
        return int(obj.nbytes)
    return 64


class FeatureCache:
    def __init__(self, budget_bytes: int) -> None:
        self.budget = budget_bytes
        self._d: OrderedDict[str, tuple[str, Any, int]] = OrderedDict()
        self._total = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, key: str) -> Any | None:
        with self._lock:
            item = self._d.get(key)
            if item is None:
                self.misses += 1
                return None
            self._d.move_to_end(key)
            self.hits += 1
            return item[1]

    def put(self, key: str, group: str, obj: Any) -> bool:
        """Insert unless that would evict entries of the same ``group``; returns whether it was kept."""
        n = _nbytes(obj)
        with self._lock:
            if n > self.budget:
                return False
            if key in self._d:
                self._total -= self._d.pop(key)[2]
            while self._total + n > self.budget:
                victim = next((k for k, (g, _, _) in self._d.items() if g != group), None)
                if victim is None:
                    return False
                self._total -= self._d.pop(victim)[2]
            self._d[key] = (group, obj, n)
            self._total += n
            return True

    def clear(self) -> None:
        with self._lock:
            self._d.clear()
            self._total = 0
            self.hits = self.misses = 0

    @property
    def nbytes(self) -> int:
        return self._total


# Perceptual reference features are large (LPIPS-VGG at 256x256: ~32 MB per frame), so they go to
# disk only on request; FVD clip features (400 floats per clip) always go to cache_dir when given.
DISK_PERCEPTUAL = os.environ.get("GFVC_METRICS_DISK_CACHE_PERCEPTUAL", "") == "1"

MEMORY = FeatureCache(int(float(os.environ.get("GFVC_METRICS_CACHE_MB", "4096")) * (1 << 20)))


def disk_path(cache_dir: Path, key: str) -> Path:
    return Path(cache_dir) / "metrics-cache" / (hashlib.sha256(key.encode()).hexdigest() + ".pt")


def lookup(key: str, cache_dir: Path | None = None, to_disk: bool = False) -> Any | None:
    """The cached object for ``key`` (memory, then disk when ``to_disk``), or None."""
    obj = MEMORY.get(key)
    if obj is not None:
        return obj
    path = disk_path(cache_dir, key) if (cache_dir is not None and to_disk) else None
    if path is not None and path.is_file():
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except Exception:  # noqa: BLE001 - a corrupt cache file is recomputed, never trusted
            return None
    return None


def store(key: str, group: str, obj: Any, cache_dir: Path | None = None, to_disk: bool = False) -> None:
    """Keep ``obj`` in memory (LRU budget) and, when ``to_disk``, under cache_dir (atomic write)."""
    path = disk_path(cache_dir, key) if (cache_dir is not None and to_disk) else None
    if path is not None and not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.{threading.get_ident()}.part")
        torch.save(_to_cpu(obj), tmp)
        os.replace(tmp, path)
    MEMORY.put(key, group, obj)


def _to_cpu(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.cpu()
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_cpu(o) for o in obj)
    return obj


def cached(key: str, group: str, compute: Callable[[], Any], cache_dir: Path | None = None,
           to_disk: bool = False) -> Any:
    """Memory cache, then (optionally) disk cache under cache_dir, then ``compute()``."""
    obj = lookup(key, cache_dir, to_disk)
    if obj is None:
        obj = compute()
        store(key, group, obj, cache_dir, to_disk)
    else:
        MEMORY.put(key, group, obj)
    return obj
