"""Exact decoded stills of a job, for the report's visual comparison (Figure 5 layout).

The report's Figure 5 (the Sparse2Dense paper's Figure 5: decoded frames of
every method at a similar bitrate) must show the decoder's exact pixels, not
the lossy H.264 viewing copy (``decoded.mp4``). A job therefore keeps a few
decoded frames as lossless PNG, with the per-frame metric values of those
frames, in ``jobs/KEY/stills/``; the original frames are kept once per
sequence in ``RUN_DIR/stills/<sequence sha256[:16]>/``.

Which frames: chosen from the *original* sequence alone, so every codec and
rate point keeps the same frames and the report can compare them: a few
evenly spaced inter frames plus the inter frame that moved most from the key
frame (frame 0, coded as a picture by the generative codecs), plus any frame
the run asks for (``gfvc run --keep-frames``). Keeping stills never changes a
result: nothing here enters a record's key or its metric values.
"""
from __future__ import annotations

import io
import json
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from gfvc.errors import ConfigError, GfvcError
from gfvc.fileio import atomic_write_bytes, atomic_write_json
from gfvc.frame_folder import read_png_frame

log = logging.getLogger(__name__)

SCHEMA = 1
EVEN_FRAMES = 3  # evenly spaced inter frames kept per job (plus the largest-motion frame)
STILLS_DIR = "stills"
STILLS_JSON = "stills.json"
# Always computed per kept frame (cheap, no weights); the learned ones only where the condition lists them.
ALWAYS = ("psnr", "ssim")
PER_FRAME = ("psnr", "ssim", "dists", "lpips")  # FVD is a clip statistic: no per-frame value
SELECTION_TEXT = (f"{EVEN_FRAMES} evenly spaced inter frames + the inter frame that moved most from key frame 0, "
                  "chosen from the original sequence")


def parse_frame_list(text: str | None, what: str = "--keep-frames") -> tuple[int, ...]:
    """``"7,12"`` -> (7, 12); ConfigError (one line) for anything but non-negative integers."""
    if text is None or not str(text).strip():
        return ()
    out: list[int] = []
    for part in str(text).split(","):
        p = part.strip()
        if not p.isdigit():
            raise ConfigError(f"{what} {text!r}: expected comma-separated frame numbers (0-based), e.g. 7,12")
        out.append(int(p))
    return tuple(sorted(set(out)))


def candidate_frames(original: np.ndarray, extra: Iterable[int] = (), even: int = EVEN_FRAMES) -> list[int]:
    """Frames a job keeps: from the original sequence alone (the same for every codec), sorted.

    ``even`` inter frames evenly spaced over 1..T-1 (the last one included),
    the inter frame with the largest mean absolute difference from frame 0
    (the key frame), and ``extra`` frames that exist. A one-frame sequence
    keeps frame 0.
    """
    t = int(original.shape[0])
    if t <= 1:
        return [0]
    picks = {int(round(1 + (t - 2) * (i + 1) / even)) for i in range(even)} if even > 0 else set()
    key = original[0].astype(np.int16)
    motion = [float(np.mean(np.abs(original[i].astype(np.int16) - key))) for i in range(1, t)]
    picks.add(1 + int(np.argmax(motion)))  # first of equal maxima
    picks.update(int(i) for i in extra if 0 <= int(i) < t)
    return sorted(picks)


def png_bytes(frame: np.ndarray) -> bytes:
    """Lossless PNG of one uint8 RGB frame (deterministic bytes: no metadata)."""
    from PIL import Image  # lazy: Pillow only where stills are written (suite.runner.jobs imports this module)

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(frame)).save(buf, format="PNG", optimize=False, compress_level=6)
    return buf.getvalue()


def read_png(path: Path) -> np.ndarray:
    """A PNG still as uint8 RGB (H, W, 3), read by the one PNG reader of the suite."""
    return read_png_frame(path)


def original_dir(run_dir: Path, sequence_sha256: str) -> Path:
    return Path(run_dir) / STILLS_DIR / str(sequence_sha256)[:16]


FrameMeasure = Callable[[np.ndarray, np.ndarray], dict[str, dict[str, Any]]]


def save_job_stills(run_dir: Path, job_dir: Path, original: np.ndarray, decoded: np.ndarray,
                    measure: FrameMeasure, sequence_sha256: str, *, extra_frames: Iterable[int] = (),
                    device: str = "cpu") -> dict[str, str]:
    """Keep the candidate frames of one job (decoded, exact) and their per-frame metric values.

    ``measure(original_frame, decoded_frame)`` gives the frame's metric entries as records hold them
    (the caller's metric code: :func:`metrics.frame_quality.frame_values` in jobs).

    Writes ``job_dir/stills/frame_NNNNN.png``, the original frames once per
    sequence under ``RUN_DIR/stills/``, and ``job_dir/stills/stills.json``;
    returns ``{"stills": path of stills.json relative to run_dir}`` for the
    record's artifacts. Report material only: a failure is logged and returns
    {} (the job's result stands; the report says the stills are missing).
    """
    run_dir, job_dir = Path(run_dir), Path(job_dir)
    try:
        frames = candidate_frames(original, extra_frames)
        sdir = job_dir / STILLS_DIR
        odir = original_dir(run_dir, sequence_sha256)
        sdir.mkdir(parents=True, exist_ok=True)
        odir.mkdir(parents=True, exist_ok=True)
        entries: dict[str, Any] = {}
        for i in frames:
            dpath = sdir / f"frame_{i:05d}.png"
            atomic_write_bytes(dpath, png_bytes(decoded[i]))
            opath = odir / f"frame_{i:05d}.png"
            if not opath.is_file():  # the same bytes whichever job writes it first (atomic rename)
                atomic_write_bytes(opath, png_bytes(original[i]))
            vals = measure(original[i], decoded[i])
            entries[str(i)] = {"decoded": str(dpath.relative_to(run_dir)), "original": str(opath.relative_to(run_dir)),
                               "metrics": vals}
        data = {"schema": SCHEMA, "frames": frames, "selection": SELECTION_TEXT,
                "extra_frames": sorted({int(i) for i in extra_frames}), "frame_count": int(original.shape[0]),
                "sequence_sha256": sequence_sha256, "device": device, "stills": entries}
        atomic_write_json(sdir / STILLS_JSON, data)
        return {"stills": str((sdir / STILLS_JSON).relative_to(run_dir))}
    except (GfvcError, OSError, ValueError) as e:  # report material only; never fail the job
        log.warning("could not keep decoded stills in %s: %s", job_dir, e)
        return {}


# ------------------------------------------------------------------------ reading (reports)
@dataclass
class Still:
    """One kept frame of one job: the paths of the exact decoded and original PNGs, per-frame metrics."""

    frame: int
    decoded: Path
    original: Path
    metrics: dict[str, dict[str, Any]] = field(default_factory=dict)

    def value(self, name: str) -> float | None:
        v = (self.metrics.get(name) or {}).get("value")
        return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


@dataclass
class JobStills:
    frames: list[int]
    stills: dict[int, Still]
    selection: str = ""


def load_job_stills(run_dir: Path, record: dict[str, Any]) -> JobStills | None:
    """The stills a record lists (None: the record keeps none, e.g. a run made before stills existed)."""
    rel = (record.get("artifacts") or {}).get("stills")
    if not rel:
        return None
    run_dir = Path(run_dir)
    try:
        data = json.loads((run_dir / rel).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        return None
    stills: dict[int, Still] = {}
    for k, e in (data.get("stills") or {}).items():
        d, o = run_dir / str(e.get("decoded", "")), run_dir / str(e.get("original", ""))
        if d.is_file() and o.is_file():
            stills[int(k)] = Still(int(k), d, o, dict(e.get("metrics") or {}))
    return JobStills(sorted(stills), stills, str(data.get("selection") or ""))


def stills_of(records: Sequence[dict[str, Any]], run_dir: Path) -> dict[str, JobStills]:
    """{record key: its stills} for the records that keep any."""
    out: dict[str, JobStills] = {}
    for r in records:
        s = load_job_stills(run_dir, r)
        if s is not None and s.stills:
            out[str(r.get("key"))] = s
    return out
