"""A tiny run directory with decoded viewing copies whose frames say what they are.

Every frame carries its index as the grey level of a block in the top-left
corner (``level(i)``) and its clip in the background colour, so a test can
read back from pixels which frame of which clip a page or a clip file shows,
independently of the code under test.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from gfvc.video import sha256_file, write_container, write_rgb_planar

W, H, N, FPS = 96, 64, 24, 25.0
BLOCK = 24  # the index block: rows/cols [0, BLOCK)
COLOURS = {"alpha": (200, 40, 40), "beta": (40, 40, 200), "original": (40, 200, 40)}
RATES = {"alpha": [(42, 3.0), (32, 9.0)], "beta": [(42, 4.0), (32, 12.0)]}


def level(i: int) -> int:
    return 16 + 9 * i


def index_of(v: float) -> int:
    """Frame index from the block's mean grey level (inverse of ``level``)."""
    return int(round((v - 16) / 9))


def frames(colour: tuple[int, int, int], n: int = N) -> np.ndarray:
    out = np.empty((n, H, W, 3), np.uint8)
    out[:] = np.array(colour, np.uint8)
    for i in range(n):
        out[i, :BLOCK, :BLOCK] = level(i)
    return out


def original() -> np.ndarray:
    return frames(COLOURS["original"])


def make_run(run_dir: Path, sequences: tuple[str, ...] = ("seqA",)) -> Path:
    """records/ + jobs/*/decoded.mp4 + run.json of a two-codec, two-rate-point run; the originals are
    planar RGB files in run_dir/data (pass it as --data-dir)."""
    (run_dir / "records").mkdir(parents=True)
    (run_dir / "data").mkdir()
    seq_entries = []
    for s in sequences:
        write_rgb_planar(run_dir / "data" / f"{s}.rgb", original())
        sha = sha256_file(run_dir / "data" / f"{s}.rgb")
        seq = {"name": s, "frames": N, "fps": FPS, "width": W, "height": H, "sha256": sha}
        seq_entries.append({**seq, "file": f"{s}.rgb", "format": "rgb"})
        for codec, rates in RATES.items():
            for qp, kbps in rates:
                key = f"{s}-{codec}-{qp}"
                jdir = run_dir / "jobs" / key
                jdir.mkdir(parents=True)
                write_container(jdir / "decoded.mp4", frames(COLOURS[codec]), FPS)
                rec = {"schema": 1, "key": key, "status": "ok", "codec": codec, "family": "generative",
                       "sequence": seq, "rate_point": {"label": f"qp{qp}", "qp": qp}, "kbps": kbps,
                       "artifacts": {"decoded_mp4": f"jobs/{key}/decoded.mp4"}}
                (run_dir / "records" / f"{key}.json").write_text(json.dumps(rec))
    (run_dir / "run.json").write_text(json.dumps({"condition_name": "synthetic", "sequences": seq_entries,
                                                  "condition": {"name": "synthetic", "frames": N}}))
    return run_dir


def originals_for_test(name: str) -> np.ndarray:
    """The OriginalSource of the synthetic run (every sequence has the same original)."""
    return original()
