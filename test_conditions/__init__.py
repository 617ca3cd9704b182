"""Versioned CTC definitions (YAML) loaded into typed, validated objects.

A condition is data: it is validated when loaded (an unknown key or a bad
value is rejected naming the file, the key and the reason) and passed
explicitly to everything that needs it. Its ``fingerprint`` (sha256 of the
canonical JSON) is part of every result's identity.
"""
from __future__ import annotations

import difflib
from pathlib import Path

from gfvc.condition import (  # noqa: F401  (the typed model, re-exported: `from test_conditions import Condition`)
    NON_RESULT_FIELDS,
    SCHEMA_VERSION,
    AnchorSpec,
    BdRateSpec,
    ColourSpec,
    Condition,
    DistsProtocol,
    ExecutionSpec,
    FvdProtocol,
    GenerativeSpec,
    LpipsProtocol,
    MetricsSpec,
    ModelSpec,
    VertexSpec,
    build_dataclass,
)
from gfvc.errors import ConfigError, UnknownName
from gfvc.fileio import read_yaml_mapping

HERE = Path(__file__).resolve().parent


def load_condition_file(path: str | Path) -> Condition:
    path = Path(path)
    data = read_yaml_mapping(path, "condition file")
    schema = data.get("schema", SCHEMA_VERSION)
    if schema != SCHEMA_VERSION:
        raise ConfigError(f"{path}: schema {schema!r} not supported (this suite reads schema {SCHEMA_VERSION})")
    cond = build_dataclass(Condition, {**data, "source": str(path)}, str(path), "")
    cond.validate()
    return cond


def builtin_conditions() -> dict[str, Path]:
    return {p.stem: p for p in sorted(HERE.glob("*.yaml")) if not p.name.endswith(".manifest.yaml")}


def load_condition(name_or_path: str | Path) -> Condition:
    """Load a built-in condition by name or any YAML file by path."""
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") or p.exists():
        return load_condition_file(p)
    known = builtin_conditions()
    if str(name_or_path) not in known:
        close = difflib.get_close_matches(str(name_or_path), list(known), n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise UnknownName(f"unknown condition {str(name_or_path)!r}{hint} (built-in: {', '.join(known)})")
    return load_condition_file(known[str(name_or_path)])
