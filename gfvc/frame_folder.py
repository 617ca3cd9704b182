"""Folders of frames: the one way the suite lists a folder of per-frame files and reads a PNG frame.

Every reader of a frame folder (``gfvc encode``/``metrics``, sequences, training
data, source variants, vertex and OSX per-frame folders) lists it here, so the
order and the refusals are the same everywhere (docs/conditions.md, "Frame
folders"):

* **Order** is natural: the numbers in names compare as numbers (``2.png``
  before ``10.png``; ``0.png..11.png`` and ``000.png..011.png`` are the same
  sequence). Names that differ only in zero padding or letter case
  (``1.png`` and ``01.png``) are ambiguous and refused.
* Hidden files (``.DS_Store``) and sub-folders are ignored, and so are files
  that are not pictures (``vertices.npy`` next to decoded frames). Pictures in
  another format (``.jpg``, ``.bmp``, ...) next to PNG frames are refused:
  skipping them would silently drop frames.
* **Pixels** become 8-bit RGB by one rule (:func:`read_png_frame`): 8-bit RGB
  as stored; grey of 1, 2, 4 or 8 bits scaled to 0..255 and copied to R, G, B;
  palette images through their palette; 16-bit samples as
  ``round(v * 255 / 65535)``; an alpha channel or tRNS transparency only when
  every pixel is opaque (then dropped) -- a transparent pixel has no colour
  to code, so such a frame is refused. A file that is not a PNG (corrupt,
  truncated, another format under a .png name, an animated PNG) is refused
  naming the file.
* All frames of a folder have one size; an empty folder is refused.
"""
from __future__ import annotations

import re
import struct
import zlib
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from gfvc.errors import InputError

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Picture formats that are not frames of a PNG folder (refused there, never skipped).
OTHER_PICTURE_SUFFIXES = frozenset({".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".ppm", ".pgm",
                                    ".exr", ".dpx", ".jp2", ".heic", ".avif"})
# PNG colour types (ISO/IEC 15948, IHDR): 0 grey, 2 RGB, 3 palette, 4 grey+alpha, 6 RGBA.
_COLOUR_TYPES = {0: "grey", 2: "RGB", 3: "palette", 4: "grey+alpha", 6: "RGBA"}
_DIGITS = re.compile(r"(\d+)")


def natural_key(name: str) -> tuple[str | int, ...]:
    """Sort key that compares digit runs as numbers (``frame2`` < ``frame10``), letters case-blind.

    ``re.split`` with a capturing group alternates text and digits, so two keys
    always compare text with text and numbers with numbers.
    """
    return tuple(int(t) if i % 2 else t.lower() for i, t in enumerate(_DIGITS.split(name)))


def _names(paths: Iterable[Path], limit: int = 3) -> str:
    names = sorted(p.name for p in paths)
    return ", ".join(names[:limit]) + (f" and {len(names) - limit} more" if len(names) > limit else "")


def sort_frames(paths: Iterable[Path], folder: Path) -> list[Path]:
    """``paths`` in natural order; two names with one key (``1.png``, ``01.png``) are refused."""
    seen: dict[tuple[str | int, ...], Path] = {}
    for p in paths:
        k = natural_key(p.name)
        if k in seen:
            a, b = sorted((seen[k].name, p.name))
            raise InputError(f"{folder}: frame names {a} and {b} give the same frame number, so the frame order is "
                             "ambiguous; rename the frames with one numbering (e.g. 00000.png, 00001.png, ...)")
        seen[k] = p
    return [seen[k] for k in sorted(seen)]


def list_frame_files(folder: str | Path, suffixes: Iterable[str] = (".png",), *, what: str = "frame folder",
                     dirs: bool = False) -> list[Path]:
    """The per-frame entries of ``folder`` in natural order (see the module docstring).

    ``suffixes``: what a frame file ends with (lower case); ``dirs``: sub-folders
    are frames too (OSX writes one folder per frame). Pictures of another format
    among PNG frames are refused; an empty folder is refused.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder}: no such {what}")
    suffixes = tuple(s.lower() for s in suffixes)
    frames, foreign = [], []
    for p in folder.iterdir():
        if p.name.startswith("."):
            continue
        if p.is_dir():
            if dirs:
                frames.append(p)
        elif p.suffix.lower() in suffixes:
            frames.append(p)
        elif ".png" in suffixes and p.suffix.lower() in OTHER_PICTURE_SUFFIXES:
            foreign.append(p)
    if foreign:
        raise InputError(f"{folder}: holds pictures that are not PNG ({_names(foreign)}); a frame folder is read "
                         f"from its .png files only: convert them to PNG or move them out")
    if not frames:
        kinds = "/".join(suffixes) + (" files or per-frame folders" if dirs else " files")
        raise InputError(f"{folder}: empty {what}: no {kinds}")
    return sort_frames(frames, folder)


def is_frame_folder(path: Path) -> bool:
    """Whether ``path`` is a folder of PNG frames (how video lists recognise one).

    A folder of pictures in another format (``.jpg`` frames) is refused rather
    than passed over: a video list must not lose a video silently.
    """
    if not path.is_dir():
        return False
    names = [q for q in path.iterdir() if not q.name.startswith(".") and q.is_file()]
    if any(q.suffix.lower() == ".png" for q in names):
        return True
    foreign = [q for q in names if q.suffix.lower() in OTHER_PICTURE_SUFFIXES]
    if foreign:
        raise InputError(f"{path}: a folder of {foreign[0].suffix.lower()} pictures ({_names(foreign)}); frame "
                         "folders are read from PNG files only: convert them to PNG or move the folder out")
    return False


def png_header(path: Path) -> tuple[int, int, int, int]:
    """(width, height, bit depth, colour type) from the IHDR chunk; InputError if ``path`` is not a PNG."""
    try:
        with open(path, "rb") as f:
            head = f.read(33)
    except OSError as e:
        raise InputError(f"{path}: cannot read frame: {e.strerror or e}") from None
    if not head.startswith(PNG_SIGNATURE):
        kind = "an empty file" if not head else "not a PNG file (no PNG signature)"
        raise InputError(f"{path}: {kind}; a frame folder holds PNG pictures only: replace or remove the file")
    if len(head) < 33 or head[12:16] != b"IHDR":
        raise InputError(f"{path}: truncated or corrupt PNG (no IHDR header); replace the file")
    w, h, depth, ctype = struct.unpack(">IIBB", head[16:26])
    if w == 0 or h == 0 or ctype not in _COLOUR_TYPES or depth not in (1, 2, 4, 8, 16):
        raise InputError(f"{path}: corrupt PNG header ({w}x{h}, bit depth {depth}, colour type {ctype}); "
                         "replace the file")
    return w, h, depth, ctype


def check_frame_folder(folder: str | Path, frames: int | None = None) -> list[Path]:
    """List a PNG frame folder (the first ``frames``) and check each frame's header: cheap, no decoding.

    Checks the PNG signature and that all frames have one size; used before
    long work (training) so a foreign or mis-sized file is found before the
    first step rather than hours into it.
    """
    folder = Path(folder)
    files = list_frame_files(folder)
    if frames is not None:
        if frames < 1:
            raise InputError(f"{folder}: frame count must be >= 1, got {frames}")
        if len(files) < frames:
            raise InputError(f"{folder}: holds {len(files)} frames, {frames} requested "
                             f"(use --frames {len(files)} or fewer)")
        files = files[:frames]
    first = png_header(files[0])[:2]
    for f in files[1:]:
        size = png_header(f)[:2]
        if size != first:
            raise InputError(f"{folder}: frame {f.name} is {size[0]}x{size[1]}, frame {files[0].name} is "
                             f"{first[0]}x{first[1]}; all frames of a folder must have one size")
    return files


def _opaque_or_refuse(alpha: np.ndarray, full: int, path: Path) -> None:
    if (alpha != full).any():
        n = int((alpha != full).sum())
        raise InputError(f"{path}: {n} of {alpha.size} pixels are transparent (alpha below {full}); frames must be "
                         "opaque: flatten the picture onto a background first")


def _scale16(a: np.ndarray) -> np.ndarray:
    """16-bit samples to 8 bits: round(v * 255 / 65535) = round(v / 257), exact in integers (no ties)."""
    return ((a.astype(np.uint32) + 128) // 257).astype(np.uint8)


def _read16(path: Path, ctype: int, transparency: object) -> np.ndarray:
    """A 16-bit PNG with its full precision (Pillow keeps only the high byte of 16-bit colour)."""
    import cv2  # lazy: OpenCV costs ~0.2 s to import and is needed for 16-bit frames only

    a = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if a is None or a.dtype != np.uint16:
        raise InputError(f"{path}: corrupt 16-bit PNG; replace the file")
    if a.ndim == 2:
        a = a[..., None]
    if a.shape[2] in (3, 4):  # OpenCV's channel order is BGR(A)
        a = a[..., [2, 1, 0, *([3] if a.shape[2] == 4 else [])]]
    if a.shape[2] in (2, 4):
        _opaque_or_refuse(a[..., -1], 65535, path)
        a = a[..., :-1]
    if transparency is not None:  # tRNS: one grey value or one RGB triple is transparent
        key = np.asarray(transparency, np.uint16).reshape(-1)
        hit = (a == key[: a.shape[2]]).all(axis=-1) if key.size == a.shape[2] else np.zeros(a.shape[:2], bool)
        _opaque_or_refuse(np.where(hit, 0, 65535), 65535, path)
    rgb = _scale16(a)
    return np.repeat(rgb, 3, axis=2) if rgb.shape[2] == 1 else rgb


def read_png_frame(path: str | Path) -> np.ndarray:
    """One PNG frame as uint8 RGB (H, W, 3) by the rule in the module docstring; InputError otherwise."""
    from PIL import Image  # lazy: Pillow's import is paid only by commands that read pictures

    path = Path(path)
    _, _, depth, ctype = png_header(path)
    try:
        with Image.open(path) as im:
            if im.format != "PNG":
                raise InputError(f"{path}: not a PNG picture ({im.format}); convert it to PNG")
            if getattr(im, "n_frames", 1) > 1:
                raise InputError(f"{path}: an animated PNG ({im.n_frames} pictures); a frame folder holds one "
                                 "picture per file")
            im.load()  # decodes everything: a truncated or corrupt file fails here
            transparency = im.info.get("transparency")
            if depth == 16:
                return _read16(path, ctype, transparency if ctype in (0, 2) else None)
            if "A" in im.mode or transparency is not None:
                rgba = np.asarray(im.convert("RGBA"))
                _opaque_or_refuse(rgba[..., 3], 255, path)
                return np.ascontiguousarray(rgba[..., :3])
            return np.asarray(im.convert("RGB"))
    except (OSError, SyntaxError, ValueError, EOFError, zlib.error, Image.DecompressionBombError) as e:
        why = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise InputError(f"{path}: corrupt or truncated PNG ({why}); replace the file") from None


def read_png_folder(folder: str | Path, frames: int | None = None) -> np.ndarray:
    """All frames of a PNG folder (or the first ``frames``) as uint8 RGB (T, H, W, 3)."""
    return np.stack([read_png_frame(f) for f in check_frame_folder(folder, frames)])
