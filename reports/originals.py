"""Command layer: the original frames of a run's sequences, for the viewer and the subjective-test clips.

This is the one module of reports/ that reads test sequences (through
test_conditions.manifest and the run's condition); the library modules
(reports/viewer.py, reports/subjective.py) only receive an
:data:`OriginalSource` callable from the commands, so they stay free of the
application's sequence loading. The frames are verified against the sha256
that run.json records before they are used.
"""
from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np

from gfvc.errors import GfvcError, InputError, NotAvailable
from test_conditions import load_condition
from test_conditions.manifest import SequenceEntry, load_manifest, load_sequence

log = logging.getLogger(__name__)

# name of a sequence -> its original frames (uint8 RGB, T x H x W x 3); raises NotAvailable when
# they cannot be had (file not found, sha256 mismatch), with the reason and the fix.
OriginalSource = Callable[[str], np.ndarray]


def original_source(run_dir: Path, *, manifest: Path | None = None, data_dir: Path | None = None) -> OriginalSource:
    """Loader of the originals of RUN_DIR's sequences, the first ``frames`` frames the run coded.

    Entries come from run.json (``sequences``); files given relative to a
    manifest resolve against ``manifest``'s folder, else the condition's
    manifest folder, or ``data_dir`` / $GFVC_DATA_DIR (as in ``gfvc run``).
    """

    run_dir = Path(run_dir)
    try:
        run = json.loads((run_dir / "run.json").read_text())
    except (OSError, ValueError) as e:
        raise InputError(f"{run_dir}: cannot read run.json ({e}); is this a gfvc run directory?") from None
    cond = run.get("condition") or {}
    frames = int(cond.get("frames") or 0)
    if manifest:  # a manifest the user names must be one (read and checked, as `gfvc run --manifest`)
        load_manifest(manifest)
    mdir = Path(manifest).parent if manifest else _condition_manifest_dir(run)
    fields = {f.name for f in dataclasses.fields(SequenceEntry)}
    entries = {}
    for raw in run.get("sequences") or []:
        if isinstance(raw, dict) and "name" in raw:
            d = {k: v for k, v in raw.items() if k in fields and k != "manifest_dir"}
            entries[raw["name"]] = SequenceEntry(**d, manifest_dir=str(mdir or ""))
    cache: dict[str, np.ndarray] = {}

    def load(name: str) -> np.ndarray:
        if name in cache:
            return cache[name]
        e = entries.get(name)
        if e is None:
            raise NotAvailable(f"sequence {name!r} is not listed in {run_dir}/run.json")
        try:
            arr = load_sequence(e, frames or e.frames, data_dir).frames
        except GfvcError as err:
            raise NotAvailable(f"original of {name!r} not available ({err}); pass --manifest FILE and/or "
                               "--data-dir DIR as for `gfvc run`") from None
        cache.clear()  # one sequence at a time: originals are large
        cache[name] = arr
        return arr

    return load


def _condition_manifest_dir(run: dict) -> Path | None:
    """Folder of the condition's manifest, when the run's condition can be loaded here."""

    name = run.get("condition_name") or (run.get("condition") or {}).get("name")
    if not name:
        return None
    try:
        return load_condition(name).manifest_path.parent
    except GfvcError as e:
        log.info("condition %s not loadable here (%s); originals resolve against --manifest/--data-dir only", name, e)
        return None
