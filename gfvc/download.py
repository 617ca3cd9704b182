"""Verified downloads: one downloader for every file the suite fetches (metric weights, codec checkpoints).

Hosts are probed first (a machine without network fails fast and never hangs), files stream into a
temporary file next to the target with a progress bar, are verified (size, sha256 or a caller's check)
and only then replace the target atomically. ``GFVC_OFFLINE=1`` forbids downloads; ``GFVC_WEIGHTS_MIRROR``
names a mirror that serves files by name.
"""
from __future__ import annotations

import hashlib
import os
import socket
import sys
import tempfile
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path

from gfvc.errors import WeightsError
from gfvc.fileio import default_file_mode

_VERIFIED: dict[tuple[str, int, int, str], str] = {}


def sha256_of(path: Path) -> str:
    """sha256 of a file, memoised by (path, size, mtime) so big trunks hash once per process."""
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns, "sha256")
    if key not in _VERIFIED:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 22), b""):
                h.update(chunk)
        _VERIFIED[key] = h.hexdigest()
    return _VERIFIED[key]


OFFLINE_ENV = "GFVC_OFFLINE"
MIRROR_ENV = "GFVC_WEIGHTS_MIRROR"
CONNECT_TIMEOUT_S = 10.0  # DNS + TCP connect, and each read; a host that does not answer fails fast


def offline() -> bool:
    """True when GFVC_OFFLINE is set to 1/true/yes/on: never download."""
    return os.environ.get(OFFLINE_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def mirror() -> str:
    return os.environ.get(MIRROR_ENV, "").strip()


_HOSTS: dict[tuple[str, int], str] = {}  # (host, port) -> '' reachable / why not (per process)


def _uses_proxy(url: str) -> bool:
    return bool(urllib.request.getproxies().get(urllib.parse.urlsplit(url).scheme))


def _probe(url: str, timeout: float) -> str:
    """'' when the URL's host resolves and accepts a TCP connection within ``timeout``, else why not.

    DNS runs in a daemon thread so a resolver that never answers cannot stall
    the run (socket timeouts do not cover getaddrinfo).
    """
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    key = (host, port)
    if key in _HOSTS:
        return _HOSTS[key]
    box: dict[str, object] = {}

    def resolve() -> None:
        try:
            box["addrs"] = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as e:
            box["error"] = e

    t = threading.Thread(target=resolve, daemon=True)
    t.start()
    t.join(timeout)
    why = ""
    if t.is_alive():
        why = f"{host}: no DNS answer within {timeout:g} s"
    elif "error" in box:
        why = f"{host}: {box['error']}"
    else:
        addrs = box.get("addrs") or []
        errors: list[str] = []
        for family, kind, proto, _, addr in addrs:  # type: ignore[attr-defined]
            try:
                with socket.socket(family, kind, proto) as sock:
                    sock.settimeout(timeout)
                    sock.connect(addr)
                errors = []
                break
            except OSError as e:
                errors.append(f"{addr[0]}: {e}")
        if errors:
            why = f"{host}:{port}: {errors[0]}"
    _HOSTS[key] = why
    return why


def _size_text(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 1e5 else f"{n} bytes"


def download_verified(urls: tuple[str, ...] | list[str], target: Path, verify: Callable[[Path], str], *,
                      timeout: float = CONNECT_TIMEOUT_S, size: int | None = None, what: str = "",
                      progress: bool = True) -> str:
    """Download ``target`` from the first URL whose content passes ``verify`` (returns '' or why not).

    One downloader for weight files (`gfvc weights`) and codec checkpoints
    (`gfvc models fetch`): hosts are probed first (a machine without network
    fails fast, never hangs), the file streams into a temporary file next to
    ``target`` with a progress bar, is verified, and only then replaces
    ``target`` atomically (umask mode); a refused file is deleted and the next
    URL is tried. Returns the URL used; WeightsError lists every URL's failure.
    """
    from tqdm import tqdm  # lazy: tqdm is only needed when something is downloaded

    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    errors: list[str] = []
    for url in urls:
        why = "" if _uses_proxy(url) else _probe(url, timeout)
        if why:
            errors.append(why)
            continue
        size_text = f" ({_size_text(size)}{', ' + what if what else ''})" if size else (f" ({what})" if what else "")
        print(f"gfvc: downloading {target.name}{size_text} from {url} into {target.parent}", file=sys.stderr)
        got = 0
        fd, tmpname = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
        tmp = Path(tmpname)
        try:
            req = urllib.request.Request(url, headers={"User-Agent": "gfvc-weights"})
            with urllib.request.urlopen(req, timeout=timeout) as r, os.fdopen(fd, "wb") as f, \
                    tqdm(total=size, unit="B", unit_scale=True, desc=target.name, file=sys.stderr,
                         disable=None if progress else True, leave=False) as bar:
                while True:
                    chunk = r.read(1 << 20)
                    if not chunk:
                        break
                    f.write(chunk)
                    got += len(chunk)
                    bar.update(len(chunk))
                    if size is not None and got > size:
                        break
                f.flush()
                os.fsync(f.fileno())
            bad = (f"size {got}{'+' if got > size else ''} bytes, expected {size}"
                   if size is not None and got != size else verify(tmp))
            if bad:
                raise _Mismatch(bad)
            os.chmod(tmp, default_file_mode())
            os.replace(tmp, target)
        except _Mismatch as e:
            errors.append(f"{url}: downloaded file refused and deleted ({e})")
            continue
        except (urllib.error.URLError, OSError, TimeoutError) as e:
            errors.append(f"{url}: {getattr(e, 'reason', None) or e}")
            continue
        finally:
            if tmp.exists():
                tmp.unlink()
        return url
    raise WeightsError(f"could not download {target.name} (offline?): {'; '.join(errors or ['no download URL'])}")


class _Mismatch(Exception):
    """A downloaded file is not the registered one."""
