"""Reports: BD-rate engine, tables, RD plots, contribution documents, regression gate.

Public API:
    build_report(run_dir, *, anchor=None, formats=..., out_dir=None) -> dict[str, Path]
    bdrate.bd_rate(...) -> BdResult   (see reports.bdrate)
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from reports.formats import ALL_FORMATS


def build_report(run_dir: Path, *, anchor: str | None = None, formats: tuple[str, ...] = ALL_FORMATS,
                 out_dir: Path | None = None, **kw: Any) -> dict[str, Path]:
    """Write the report of a run directory (default out_dir = run_dir / "report").

    Imported lazily so ``import reports`` stays cheap (matplotlib loads only here).
    """
    # lazy: loads matplotlib; loads pandas (start-up time of the modules that import this one)
    from reports.document import build_report as _build

    return _build(run_dir, anchor=anchor, formats=formats, out_dir=out_dir, **kw)


__all__ = ["ALL_FORMATS", "build_report"]
