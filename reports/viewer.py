"""Side-by-side viewer of a run's decoded sequences: ``report/viewer.html`` plus ``viewer_assets/``.

Design (docs/reports.md, "Side-by-side viewer"): every clip (a sequence at one
codec and rate point, or the original) is a VP9 stream in a small JavaScript
file that the page loads on demand with a ``<script>`` element (the only way to
read a file next to the page that works from ``file://`` as well as from a
local http server: ``fetch`` is blocked on ``file://``). The page decodes the
stream once with WebCodecs' ``VideoDecoder`` into one bitmap per frame and
draws both sides onto one canvas from one clock. So the two sides always show
the same frame index, frame stepping is exact, and the wipe is a clip rectangle
on that canvas. Two ``<video>`` elements could not promise either: each has
its own clock and seeks to a time, not a frame. VP9 (not H.264) because every
Chromium and Firefox build decodes it, including builds without proprietary
codecs.

What is shown is lossy and says so: a decoded clip is the run's H.264 CRF-12
viewing copy (decoded.mp4) re-encoded to VP9 CRF ``media.WEB_CRF``; the original
is the source frames in VP9 CRF ``media.WEB_CRF``. Never measure them.

Assets are reused when their source and settings are unchanged (a digest in
the asset's first line), so re-running ``gfvc report`` re-encodes only new clips.
"""
from __future__ import annotations

import base64
import json
import logging
import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import jinja2
from markupsafe import Markup

from gfvc.errors import GfvcError
from gfvc.fileio import atomic_write_text
from gfvc.video import sha256_file
from reports import media

log = logging.getLogger(__name__)

ASSET_DIR = "viewer_assets"
ASSET_VERSION = 1
ORIGINAL = "original"
_TEMPLATE = Path(__file__).resolve().parent / "templates" / "viewer.html.j2"


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)


def _asset_text(meta: dict[str, Any], chunks: list[media.Chunk], key: str) -> str:
    """The JavaScript asset: a header line with the cache key, then one call that hands the clip to the page."""
    blob = b"".join(c.data for c in chunks)
    table, off = [], 0
    for c in chunks:
        table.append([off, len(c.data), 1 if c.key else 0])
        off += len(c.data)
    meta = {**meta, "chunks": table}
    return (f"// gfvc viewer asset v{ASSET_VERSION} key={key}\n"
            f"gfvcClip({json.dumps(meta, sort_keys=True)},\n\"{base64.b64encode(blob).decode()}\");\n")


def _cached(path: Path, key: str) -> bool:
    try:
        with open(path) as f:
            return f.readline().strip() == f"// gfvc viewer asset v{ASSET_VERSION} key={key}"
    except OSError:
        return False


def _write_asset(path: Path, key: str, meta: dict[str, Any], frames: Iterable[Any], crf: int) -> None:
    chunks = media.web_chunks(frames, meta["width"], meta["height"], meta["fps"], crf=crf)
    if len(chunks) != meta["frames"]:
        raise media.OutputError(f"{path}: {len(chunks)} frames encoded, {meta['frames']} expected")
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, _asset_text(meta, chunks, key))


def write_viewer(run_dir: Path, out: Path, *, originals: Callable[[str], Any] | None = None,
                 crf: int = media.WEB_CRF, title: str = "") -> dict[str, Path]:
    """Write ``out/viewer.html`` and ``out/viewer_assets/``; returns {"viewer": path} (empty without clips).

    ``originals`` (from the command layer, reports/originals.py) gives a
    sequence's original frames; without it, or when it raises, the original
    is not offered for that sequence and the page says why.
    """
    clips = media.run_clips(Path(run_dir))
    if not clips:
        log.info("%s: no decoded viewing copies (decoded.mp4); no viewer written", run_dir)
        return {}
    out = Path(out)
    index: dict[str, Any] = {"sequences": {}, "web_crf": crf, "codec": media.WEB_CODEC_STRING}
    for c in clips:
        seq = index["sequences"].setdefault(c.sequence, {
            "frames": c.frames, "fps": c.fps, "width": c.width, "height": c.height, "clips": {},
            "original_note": "", "sha256": c.sequence_sha256})
        cid = f"{c.codec}@{c.rate_point}"
        rel = f"{ASSET_DIR}/{_safe(c.sequence)}/{_safe(c.codec)}_{_safe(c.rate_point)}.js"
        key = media.digest(sha256_file(c.path), crf, media.WEB_CODEC)
        meta = {"id": cid, "sequence": c.sequence, "frames": c.frames, "fps": c.fps, "width": c.width,
                "height": c.height, "codec": media.WEB_CODEC_STRING}
        if not _cached(out / rel, key):
            _write_asset(out / rel, key, meta, media.container_frames(c.path), crf)
        seq["clips"][cid] = {"codec": c.codec, "family": c.family, "rate_point": c.rate_point, "qp": c.qp,
                             "kbps": c.kbps, "file": rel,
                             "label": f"{c.codec} {c.rate_point} ({c.kbps:.2f} kbps)",
                             "source": f"H.264 CRF 12 viewing copy (decoded.mp4) re-encoded to VP9 CRF {crf}"}
    for name, seq in index["sequences"].items():
        rel = f"{ASSET_DIR}/{_safe(name)}/{ORIGINAL}.js"
        key = media.digest(seq["sha256"], seq["frames"], crf, media.WEB_CODEC, ORIGINAL)
        meta = {"id": ORIGINAL, "sequence": name, "frames": seq["frames"], "fps": seq["fps"],
                "width": seq["width"], "height": seq["height"], "codec": media.WEB_CODEC_STRING}
        if not _cached(out / rel, key):
            if originals is None:
                seq["original_note"] = "original not offered: the report was built without access to the sequences"
                continue
            try:
                frames = originals(name)
            except GfvcError as e:
                seq["original_note"] = f"original not offered: {e}"
                log.warning("viewer: %s", seq["original_note"])
                continue
            _write_asset(out / rel, key, meta, media.rgb_frames(frames[: seq["frames"]]), crf)
        seq["clips"] = {ORIGINAL: {"codec": ORIGINAL, "family": "original", "rate_point": "", "qp": None,
                                   "kbps": None, "file": rel, "label": "original (source)",
                                   "source": f"source frames encoded to VP9 CRF {crf}"}, **seq["clips"]}
    return {"viewer": write_page(out / "viewer.html", index, title=title)}


def write_page(path: Path, index: dict[str, Any], title: str = "") -> Path:
    """The page itself: static HTML, CSS and script with the clip index inlined (no network).

    The index keeps its insertion order (the original first, then codecs from the lowest rate): the
    page lists clips in that order.
    """
    data = json.dumps(index).replace("</", "<\\/")
    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    html = env.from_string(_TEMPLATE.read_text()).render(index_json=Markup(data),
                                                          title=title or "GFVC side-by-side viewer")
    atomic_write_text(path, html)
    return path
