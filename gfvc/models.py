"""Which checkpoint a generative codec uses in a run.

Order of precedence (first found wins), the same for every generative codec:
1. ``--model CODEC=PATH`` on the command line (``Environment.models``),
2. the condition file's ``models:`` section (path, optional pinned sha256),
3. the codec's own environment variable where it has one (``$GFVC_S2D_CHECKPOINT``),
4. the codec's committed demo checkpoint.

A pinned sha256 that does not match the file is refused. The chosen file's
sha256 (not its path) goes into every record's provenance and, through the
container's model checksum, into every bitstream, so a stream decoded with
another checkpoint is refused.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gfvc.errors import ChecksumError, NotAvailable


@dataclass(frozen=True)
class ModelChoice:
    """A checkpoint chosen for a codec, with where the choice came from."""

    codec: str
    path: Path
    source: str                     # "--model" | "condition" | "$ENVVAR" | "default"
    sha256: str | None = None       # pinned hash (condition), verified by verify()
    config: Path | None = None      # optional official-config YAML for files without embedded config

    def verify(self) -> str:
        """sha256 of the file; ChecksumError if a pinned hash differs, NotAvailable if missing."""
        from gfvc.video import sha256_file

        if not self.path.is_file():
            raise NotAvailable(f"{self.codec} checkpoint {self.path} (from {self.source}) not found")
        digest = sha256_file(self.path)
        if self.sha256 and digest.lower() != self.sha256.lower():
            raise ChecksumError(f"{self.codec} checkpoint {self.path} has sha256 {digest}, but {self.source} pins "
                                f"{self.sha256}: wrong or modified file; use the pinned file or update the pin")
        return digest


def parse_model_args(values: list[str] | None) -> dict[str, str]:
    """``["mraa=/x/cpk.pth", ...]`` -> {"mraa": "/x/cpk.pth"}; ConfigError on bad syntax or repeats."""
    from gfvc.errors import ConfigError

    out: dict[str, str] = {}
    for v in values or []:
        name, sep, path = v.partition("=")
        if not sep or not name.strip() or not path.strip():
            raise ConfigError(f"--model {v!r}: expected CODEC=PATH, e.g. --model mraa=ted384-cpk.pth")
        name = name.strip()
        if name in out:
            raise ConfigError(f"--model {name}=... given twice")
        out[name] = path.strip()
    return out


def choose(codec: str, condition: Any, env: Any, default: Path | None, env_var: str | None = None) -> ModelChoice:
    """The checkpoint ``codec`` uses under ``condition`` and ``env`` (see module docstring)."""
    models = getattr(env, "models", None) or {}
    if codec in models:
        return ModelChoice(codec, Path(models[codec]).expanduser(), "--model")
    section: Any = getattr(condition, "models", None) or {}
    spec = section.get(codec) if hasattr(section, "get") else None
    if spec is not None:
        path = Path(getattr(spec, "path", None) or spec["path"]).expanduser()
        source: str = getattr(condition, "source", "") or ""
        if not path.is_absolute() and source:
            path = Path(source).parent / path
        sha = getattr(spec, "sha256", None) if not isinstance(spec, dict) else spec.get("sha256")
        cfg = getattr(spec, "config", None) if not isinstance(spec, dict) else spec.get("config")
        return ModelChoice(codec, path, "condition", sha or None, Path(cfg) if cfg else None)
    if env_var and os.environ.get(env_var):
        return ModelChoice(codec, Path(os.environ[env_var]).expanduser(), f"${env_var}")
    if default is None:
        raise NotAvailable(f"codec {codec!r} has no checkpoint: pass --model {codec}=PATH (see `gfvc models status`)")
    return ModelChoice(codec, Path(default), "default")
