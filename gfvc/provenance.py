"""Provenance: what software produced a result (recorded in every record)."""
from __future__ import annotations

import platform
import subprocess
import sys
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any

from gfvc import __version__

PACKAGES = ("numpy", "scipy", "torch", "torchvision", "pandas", "lpips", "DISTS-pytorch", "av",
            "imageio-ffmpeg", "constriction", "PyYAML")


@lru_cache(maxsize=1)
def git_revision() -> str:
    """The suite's git revision (+ '-dirty'), or 'unknown' outside a checkout."""
    root = Path(__file__).resolve().parent.parent
    try:
        rev = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return rev + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


@lru_cache(maxsize=1)
def package_versions() -> dict[str, str]:
    out = {}
    for p in PACKAGES:
        try:
            out[p] = metadata.version(p)
        except metadata.PackageNotFoundError:
            out[p] = "not installed"
    return out


def suite_provenance() -> dict[str, Any]:
    return {
        "suite_version": __version__,
        "git_revision": git_revision(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "packages": package_versions(),
    }


# Provenance keys that describe this machine, not the result (besides keys ending in "path" / "_dir").
# How a checkpoint was chosen, vouched for and its configuration found: the configuration itself and
# the file's sha256 are in the key; these only explain them (the same file chosen another way = same key).
MACHINE_LOCAL_KEYS = frozenset({"command_templates", "checkpoint_source", "checkpoint_verification",
                                "checkpoint_verification_note", "config_from"})


def identity_provenance(prov: Any) -> Any:
    """Provenance without machine-local details (paths, how a file was found, command templates).

    The content key must change when a binary, checkpoint or setting changes
    (their sha256 and values are kept) but not when the same binary sits at
    another path on another machine, or when the same checkpoint was chosen
    another way (``--model`` vs a condition's ``models:`` entry:
    ``checkpoint_source``).
    """
    if isinstance(prov, dict):
        return {k: identity_provenance(v) for k, v in prov.items()
                if not (k.endswith("path") or k.endswith("_dir") or k in MACHINE_LOCAL_KEYS)}
    if isinstance(prov, list):
        return [identity_provenance(v) for v in prov]
    return prov
