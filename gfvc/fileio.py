"""Small file helpers shared by the whole suite: atomic writes, output checks, YAML mappings, numpy files.

Atomic writes (records, run.json, manifests, reports, checkpoints, weight
files): a temporary file in the target folder, fsync, then ``os.replace``, so a
reader sees the old file or the new one, never half of it. The temporary file
is created private (``mkstemp`` uses 0600) and given the mode a plain
``open()`` would have given it (0666 minus the umask) before it is moved into
place: colleagues and Dask workers running under another user on shared
storage read results exactly as they read any other file there.

Output checks: every command that writes checks its outputs *before* the
work, so a path under a file, a read-only location, ``/dev/null`` or an
unsupported extension is one line and exit code 2, not a traceback after an
hour of encoding. Parent folders are created (that is what a user means by
``-o new/folder/out.yuv``).
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import stat
import tempfile
import zipfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

import numpy as np
import yaml

from gfvc.errors import ConfigError, InputError, OutputError

# --- permissions ---------------------------------------------------------------------------

def current_umask() -> int:
    """The process umask (read from /proc when possible: os.umask() is a set-and-restore)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    old = os.umask(0o022)
    os.umask(old)
    return old


def default_file_mode() -> int:
    """Mode of a new file created by open(): 0666 minus the umask."""
    return 0o666 & ~current_umask()


# --- atomic writes ---------------------------------------------------------------------------

@contextlib.contextmanager
def atomic_open(path: str | Path, mode: str = "w", *, encoding: str | None = None) -> Iterator[IO[Any]]:
    """Open a temporary file next to ``path``; on success it replaces ``path`` atomically.

    ``mode`` is "w" (text) or "wb" (binary). On an exception the temporary file
    is removed and ``path`` is untouched. The file ends with the umask's mode.
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open: mode must be 'w' or 'wb', got {mode!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode, encoding=encoding if mode == "w" else None) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, default_file_mode())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` so a reader sees the old file or the new one, never half."""
    with atomic_open(path, "w", encoding="utf-8") as f:
        f.write(text)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_open(path, "wb") as f:
        f.write(data)


def atomic_copy(src: str | Path, dst: str | Path) -> None:
    """Copy a file atomically (the destination gets the umask's mode, not the source's)."""
    with open(src, "rb") as fi, atomic_open(dst, "wb") as fo:
        shutil.copyfileobj(fi, fo, 1 << 20)


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def atomic_write_json(path: str | Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=1, sort_keys=True, default=_json_default))


# --- output checks ---------------------------------------------------------------------------

def _nearest_existing(path: Path) -> Path:
    p = path
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def _probe_dir(folder: Path, what: str, target: Path) -> None:
    """Create and remove a file in ``folder``: the only reliable test (root, read-only mounts, ACLs)."""
    try:
        fd, tmp = tempfile.mkstemp(prefix=".gfvc-write-test.", dir=folder)
    except OSError as e:
        raise OutputError(f"{what} {target}: cannot write in {folder}: {e.strerror or e}") from None
    os.close(fd)
    with contextlib.suppress(OSError):
        os.unlink(tmp)


def _check_ancestors(path: Path, what: str) -> Path:
    """The nearest existing ancestor of ``path``, which must be a folder."""
    anc = _nearest_existing(path.parent)
    if not anc.is_dir():
        raise OutputError(f"{what} {path}: {anc} is a file, not a folder")
    return anc


def check_output_file(path: str | Path, *, what: str = "output", suffixes: Iterable[str] | None = None,
                      create_parent: bool = True) -> Path:
    """Refuse an output file that cannot be written, before any work; returns the path.

    Checks: allowed extension (``suffixes``, lower case with the dot), not a
    folder, not a device or pipe (``/dev/null``), no file in the parent chain,
    the folder writable (probed). ``create_parent`` creates missing folders.
    """
    path = Path(os.path.expanduser(str(path)))
    if suffixes is not None:
        allowed = sorted({s.lower() for s in suffixes})
        if path.suffix.lower() not in allowed:
            shown = ", ".join(s or "(no extension)" for s in allowed)
            raise OutputError(f"{what} {path}: unsupported extension {path.suffix or '(none)'!r} (use {shown})")
    if path.exists() or path.is_symlink():
        if path.is_dir():
            raise OutputError(f"{what} {path}: is a folder, a file path is needed")
        try:
            mode = path.stat().st_mode
        except OSError as e:
            raise OutputError(f"{what} {path}: {e.strerror or e}") from None
        if not stat.S_ISREG(mode):
            raise OutputError(f"{what} {path}: not a regular file (a device, pipe or socket); give a file path")
    anc = _check_ancestors(path, what)
    parent = path.parent
    if not parent.exists():
        if not create_parent:
            raise OutputError(f"{what} {path}: folder {parent} does not exist")
        try:
            parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise OutputError(f"{what} {path}: cannot create folder {parent} (in {anc}): {e.strerror or e}") from None
    _probe_dir(parent, what, path)
    if path.exists() and not os.access(path, os.W_OK):
        raise OutputError(f"{what} {path}: the file exists and is not writable")
    return path


def check_output_dir(path: str | Path, *, what: str = "output folder", create: bool = True) -> Path:
    """Refuse an output folder that cannot be written, before any work; returns the path.

    With ``create=False`` (e.g. --dry-run) nothing is created: a missing folder
    is accepted when its nearest existing ancestor is a writable folder.
    """
    path = Path(os.path.expanduser(str(path)))
    if path.exists() and not path.is_dir():
        raise OutputError(f"{what} {path}: exists and is not a folder")
    if not path.exists():
        anc = _check_ancestors(path, what)
        if not create:
            _probe_dir(anc, what, path)
            return path
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise OutputError(f"{what} {path}: cannot create it (in {anc}): {e.strerror or e}") from None
    _probe_dir(path, what, path)
    return path


# --- work folders ------------------------------------------------------------------------------

@contextlib.contextmanager
def work_dir(prefix: str) -> Iterator[Path]:
    """A temporary folder removed on success and *kept* on failure.

    Error messages name log files inside it (e.g. ``vvenc.log``); deleting the
    folder would make those names point nowhere.
    """
    d = Path(tempfile.mkdtemp(prefix=prefix))
    ok = False
    try:
        yield d
        ok = True
    finally:
        if ok:
            shutil.rmtree(d, ignore_errors=True)


# --- YAML --------------------------------------------------------------------------------------

def read_yaml_mapping(path: Path, what: str) -> dict[str, Any]:
    """Parse a YAML file that must hold a mapping; ConfigError names the file."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{what} not found: {path}") from None
    except IsADirectoryError:
        raise ConfigError(f"{what} {path} is a folder, not a YAML file") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {' '.join(str(e).split())}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{what} {path} is not a text file (YAML expected)") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at top level")
    return data


# --- numpy files -------------------------------------------------------------------------------
# Every .npy/.npz the suite reads from a user or a run folder goes through these two readers, so a
# junk, truncated or pickled file is one line that says what the file is not and what to do
# (numpy's own text would advise loading pickles, which the suite never does).

NPY_MAGIC = b"\x93NUMPY"
NPZ_MAGIC = b"PK\x03\x04"


def _npy_error(path: Path, what: str, problem: str, hint: str) -> InputError:
    try:
        size = f" ({path.stat().st_size} bytes)"
    except OSError:
        size = ""
    return InputError(f"{what} {path}{size} {problem}" + (f"; {hint}" if hint else ""))


def _magic(path: Path, what: str, magic: bytes, kind: str, hint: str) -> None:
    if not path.is_file():
        raise InputError(f"{what} {path}: no such file" if not path.exists() else f"{what} {path} is not a file")
    with open(path, "rb") as f:
        head = f.read(len(magic))
    if head != magic:
        raise _npy_error(path, what, "is empty" if not head else f"is not a numpy {kind} file", hint)


def read_npy(path: str | Path, what: str = "array file", hint: str = "") -> np.ndarray:
    """A numeric numpy ``.npy`` array (pickled objects are refused, never loaded); InputError names the file."""
    path = Path(path)
    _magic(path, what, NPY_MAGIC, ".npy", hint)
    try:
        return np.load(path, allow_pickle=False)
    except ValueError as e:
        if "pickle" in str(e):
            raise _npy_error(path, what, "holds Python objects (a pickled object array), which the suite never "
                                         "loads; save a numeric array (numpy.save with a float or int dtype)",
                             hint) from None
        raise _npy_error(path, what, f"is a corrupt or truncated .npy file ({str(e).splitlines()[0]})", hint) from None
    except (OSError, EOFError) as e:
        raise _npy_error(path, what, f"is a corrupt or truncated .npy file ({e})", hint) from None


def read_npz(path: str | Path, what: str = "array archive", hint: str = "") -> dict[str, np.ndarray]:
    """All arrays of a numpy ``.npz`` archive, read eagerly (pickles refused); InputError names the file."""
    path = Path(path)
    _magic(path, what, NPZ_MAGIC, ".npz", hint)
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except ValueError as e:
        if "pickle" in str(e):
            raise _npy_error(path, what, "holds Python objects (pickled), which the suite never loads", hint) from None
        raise _npy_error(path, what, f"is a corrupt or truncated .npz file ({str(e).splitlines()[0]})", hint) from None
    except (OSError, EOFError, KeyError, zipfile.BadZipFile) as e:
        raise _npy_error(path, what, f"is a corrupt or truncated .npz file ({e})", hint) from None
