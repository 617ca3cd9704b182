"""Key/shape listings of the official checkpoints (baselines/reference_state_dicts/*.txt).

Each listing has, per official module, a ``### <module>: N tensors, P params``
header followed (in its full section) by one ``key (shape)`` line per
state_dict entry. :func:`read_listing` parses the full sections;
:func:`compare_to_listing` checks a module built by the suite against them
(keys, order-independent, and shapes), which the tests run on the ``meta``
device so full-width networks cost no memory.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

LISTING_DIR = Path(__file__).resolve().parent / "reference_state_dicts"
_HEADER = re.compile(r"^### (.+?): (\d+) tensors")
_ENTRY = re.compile(r"^(\S+) \(([\d, ]*)\)$")


def read_listing(name: str) -> dict[str, dict[str, tuple[int, ...]]]:
    """{module: {key: shape}} from ``<name>.txt`` (e.g. ``fomm_vox256``), full sections only."""
    path = LISTING_DIR / f"{name}.txt"
    out: dict[str, dict[str, tuple[int, ...]]] = {}
    current: dict[str, tuple[int, ...]] | None = None
    for line in path.read_text().splitlines():
        h = _HEADER.match(line)
        if h:
            current = {}
            mod = h.group(1)
            # a module may appear twice (summary, then full): keep the section with entries
            if mod not in out or not out[mod]:
                out[mod] = current
            else:
                current = {}
            continue
        m = _ENTRY.match(line.strip())
        if m and current is not None:
            dims = tuple(int(s) for s in m.group(2).replace(" ", "").split(",") if s)
            current[m.group(1)] = dims
    return {k: v for k, v in out.items() if v}


def compare_to_listing(module: Any, listing: dict[str, tuple[int, ...]]) -> list[str]:
    """Differences between ``module.state_dict()`` and a listing (empty list: identical)."""
    own = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    problems = [f"missing {k} {s}" for k, s in listing.items() if k not in own]
    problems += [f"unexpected {k} {s}" for k, s in own.items() if k not in listing]
    problems += [f"shape {k}: {own[k]} vs official {s}" for k, s in listing.items() if k in own and own[k] != s]
    return problems
