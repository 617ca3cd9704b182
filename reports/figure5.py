"""Visual comparison in the layout of the Sparse2Dense paper's Figure 5.

The paper's Figure 5 shows one frame of a sequence decoded by every method at
a similar bitrate. Here, per sequence: the original and every codec's
decoded frame at the codec's rate point closest to a target rate (default:
the anchor's lowest rate point for that sequence; ``--figure-rate KBPS``), or
closest to a target quality (``--figure-quality METRIC=VALUE``: each codec's
rate point whose sequence value of METRIC is closest), with an optional
zoomed crop; every tile is labelled with codec, QP, kbps and the metric
values of that frame.

The pictures are the decoder's exact frames, kept losslessly by the jobs
(gfvc/stills.py), never the lossy viewing copy. The frame is one of the
frames every job kept (chosen from the original sequence alone), named by
the user or chosen where the decoded frames of the codecs differ most.

Ties: two rate points equally close to the target -> the lower rate; two
frames (or crop windows) of equal disagreement -> the first.
"""
from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from gfvc.errors import ConfigError
from gfvc.stills import JobStills, Still, read_png, stills_of
from reports.model import ReportModel, finite, load_records, metric_label

COLUMNS = 7  # tiles per row (original + 12 codecs of the demo: two rows)
LEARNED = ("dists", "lpips")
AUTO = "auto"


# ------------------------------------------------------------------------ options
@dataclass(frozen=True)
class Options:
    """Report-time choices (none of them changes a record or the condition fingerprint)."""

    sequences: tuple[str, ...] = ()           # () = every sequence
    frames: tuple[int, ...] = ()              # () = chosen where the codecs differ most
    frame_count: int = 1                      # frames chosen per sequence when none are named
    rate_kbps: float | None = None            # target rate (default: the anchor's lowest rate point)
    quality: tuple[str, float] | None = None  # (metric, value): match quality instead of rate
    crop: str | tuple[int, int, int, int] | None = AUTO  # "auto", None (no zoom row) or (x, y, w, h)
    columns: int = COLUMNS


def parse_quality(text: str) -> tuple[str, float]:
    """``"dists=0.2"`` -> ("dists", 0.2)."""
    m = re.fullmatch(r"\s*([A-Za-z][A-Za-z0-9_.]*)\s*=\s*([-+0-9.eE]+)\s*", text or "")
    try:
        if m is None:
            raise ValueError
        value = float(m.group(2))
        if not math.isfinite(value):
            raise ValueError
    except ValueError:
        raise ConfigError(f"--figure-quality {text!r}: expected METRIC=VALUE, e.g. dists=0.2 or psnr=30") from None
    return m.group(1).lower(), value


def parse_crop(text: str) -> str | tuple[int, int, int, int] | None:
    """``auto`` | ``none`` | ``x,y,w,h`` (pixels, top-left origin)."""
    t = (text or "").strip().lower()
    if t == AUTO:
        return AUTO
    if t in ("none", "off", ""):
        return None
    parts = [p.strip() for p in t.split(",")]
    if len(parts) != 4 or not all(p.isdigit() for p in parts) or int(parts[2]) < 1 or int(parts[3]) < 1:
        raise ConfigError(f"--figure-crop {text!r}: expected x,y,w,h in pixels (w, h >= 1), auto or none")
    x, y, w, h = (int(p) for p in parts)
    return (x, y, w, h)


# ------------------------------------------------------------------------ selection (pure)
@dataclass(frozen=True)
class Point:
    """One rate point of one codec and sequence (from the results table)."""

    codec: str
    qp: int | None
    kbps: float
    key: str
    quality: float | None = None  # the sequence value of the target metric (quality matching)


def closest_by_rate(points: Sequence[Point], target_kbps: float) -> Point:
    """The point whose kbps is closest to the target; a tie goes to the lower rate."""
    if not points:
        raise ValueError("no rate points")
    return min(points, key=lambda p: (abs(p.kbps - target_kbps), p.kbps))


def closest_by_quality(points: Sequence[Point], target: float) -> Point | None:
    """The point whose quality is closest to the target (None: no point has a value); tie: lower rate."""
    have = [p for p in points if p.quality is not None and math.isfinite(p.quality)]
    if not have:
        return None
    return min(have, key=lambda p: (abs(float(p.quality) - target), p.kbps))  # type: ignore[arg-type]


def disagreement(frames: Sequence[np.ndarray]) -> np.ndarray:
    """Per-pixel variance across codecs of their decoded frames (H, W), summed over R, G, B."""
    stack = np.stack([f.astype(np.float64) for f in frames])
    return stack.var(axis=0).sum(axis=-1)


def most_different(scores: dict[int, float], count: int) -> list[int]:
    """The ``count`` frames of largest disagreement (ties: the earlier frame), in frame order."""
    ranked = sorted(scores, key=lambda f: (-scores[f], f))
    return sorted(ranked[:max(1, count)])


def auto_crop(var_map: np.ndarray, size: int) -> tuple[int, int, int, int]:
    """The size x size window (x, y, w, h) with the largest summed disagreement; ties: top-most, left-most."""
    h, w = var_map.shape
    s = max(1, min(size, h, w))
    ii = np.zeros((h + 1, w + 1))
    ii[1:, 1:] = var_map.cumsum(0).cumsum(1)
    sums = ii[s:, s:] - ii[:-s, s:] - ii[s:, :-s] + ii[:-s, :-s]  # (h-s+1, w-s+1): window at (y, x)
    y, x = np.unravel_index(int(np.argmax(sums)), sums.shape)  # first maximum in row-major order
    return int(x), int(y), s, s


def crop_size(h: int, w: int) -> int:
    """Side of the automatic zoom window: a quarter of the shorter side, at least 16 px."""
    return min(h, w, max(16, min(h, w) // 4))


# ------------------------------------------------------------------------ the figure's data
@dataclass
class Tile:
    codec: str
    qp: int | None
    kbps: float
    key: str
    stills: JobStills
    quality: float | None = None

    def still(self, frame: int) -> Still:
        return self.stills.stills[frame]


@dataclass
class Panel:
    """Figure 5 of one sequence: chosen rate points, frames, crop and the caption."""

    sequence: str
    name: str  # file stem, e.g. figure5_carphone
    tiles: list[Tile]
    frames: list[int]
    frame_text: str
    target_text: str
    crop: tuple[int, int, int, int] | None
    crop_text: str
    anchor: str
    learned: list[str]  # DISTS/LPIPS names the condition lists
    learned_text: str   # how their per-frame values are stated (e.g. n/a (weights missing))
    scores: dict[int, float] = field(default_factory=dict)

    @property
    def kbps_range(self) -> tuple[float, float]:
        ks = [t.kbps for t in self.tiles]
        return min(ks), max(ks)

    def short_caption(self) -> str:
        """What the figure shows and how the rate was matched (one sentence)."""
        lo, hi = self.kbps_range
        spread = f"{lo:.2f}-{hi:.2f} kbps" + (f" (x{hi / lo:.1f} from lowest to highest)" if lo > 0 else "")
        fr = ", ".join(str(f) for f in self.frames)
        return (f"{self.sequence}, frame{'s' if len(self.frames) > 1 else ''} {fr}: the original and every codec's "
                f"decoded frame (the decoder's exact output, kept losslessly by the job; not the lossy viewing "
                f"copy) {self.target_text}; chosen rates {spread}.")

    def details(self) -> str:
        """How the frame and the zoom window were chosen and what the tile labels say."""
        crop = f" {self.crop_text}" if self.crop_text else ""
        return (f"{self.frame_text}{crop} Tile labels: codec, QP (key-frame QP for generative codecs), kbps of "
                "that rate point (whole sequence), and the values of this frame: PSNR (RGB), SSIM "
                f"(luma){self.learned_text}.")

    def caption(self) -> str:
        return f"{self.short_caption()} {self.details()}"

    def to_dict(self) -> dict[str, Any]:
        return {"sequence": self.sequence, "frames": self.frames, "target": self.target_text,
                "frame_choice": self.frame_text, "crop": list(self.crop) if self.crop else None,
                "disagreement": {str(k): v for k, v in self.scores.items()},
                "codecs": [{"codec": t.codec, "qp": t.qp, "kbps": t.kbps, "key": t.key, "quality": t.quality,
                            "frames": {str(f): {m: t.still(f).value(m) for m in ("psnr", "psnr_y", "ssim",
                                                                                 *self.learned)}
                                       for f in self.frames}} for t in self.tiles],
                "caption": self.caption(), "short_caption": self.short_caption(), "details": self.details()}


@dataclass
class Figure5:
    panels: list[Panel]
    notes: list[str]      # one line each: what could not be shown and the fix
    missing: str = ""     # one line when no panel at all could be drawn

    def to_dict(self) -> dict[str, Any]:
        return {"panels": [p.to_dict() for p in self.panels], "notes": self.notes, "missing": self.missing}


def safe_name(name: str) -> str:
    """A file-name-safe form of a sequence name."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)


def _points(model: ReportModel, codec: str, sequence: str, quality: str | None) -> list[Point]:
    df = model.df
    sub = df[(df["codec"] == codec) & (df["sequence"] == sequence)]
    out = []
    for _, r in sub.iterrows():
        q = None
        if quality is not None and quality in sub.columns and finite(r[quality]):
            q = float(r[quality])
        qp = int(r["qp"]) if finite(r.get("qp")) else None
        out.append(Point(codec, qp, float(r["kbps"]), str(r["key"]), q))
    return out


def _learned_text(stills: Sequence[Still], learned: list[str]) -> str:
    """How the per-frame DISTS/LPIPS of these stills are stated: values, or n/a and why (once, in the caption)."""
    parts = []
    for m in learned:
        entries = [s.metrics.get(m) or {} for s in stills]
        if entries and all(e.get("value") is not None for e in entries):
            parts.append(metric_label(m))
            continue
        reasons = " ".join(str(e.get("reason") or "") for e in entries)
        why = "weights missing" if "weight" in reasons.lower() else "not computed"
        parts.append(f"{metric_label(m)} n/a ({why})")
    return (", " + ", ".join(parts)) if parts else ""


def rerun_hint(model: ReportModel, frames: Sequence[int] = ()) -> str:
    """The command that keeps the stills: the run's own command with --force, and with --keep-frames
    naming ``frames`` plus any frames the run already asked for."""
    argv = [str(a) for a in (model.run.get("argv") or ["gfvc", "run"])]
    out: list[str] = []
    keep = {int(f) for f in frames}
    i = 0
    while i < len(argv):
        a = argv[i]
        if a == "--keep-frames" and i + 1 < len(argv):
            keep.update(int(x) for x in argv[i + 1].split(",") if x.strip().isdigit())
            i += 2
            continue
        if a.startswith("--keep-frames="):
            keep.update(int(x) for x in a.split("=", 1)[1].split(",") if x.strip().isdigit())
        elif a != "--force":
            out.append(a)
        i += 1
    if keep:
        out += ["--keep-frames", ",".join(str(f) for f in sorted(keep))]
    return " ".join(out + ["--force"])


def build(model: ReportModel, opts: Options | None = None, records: list[dict[str, Any]] | None = None) -> Figure5:
    """Choose, per sequence, the rate points, frames and crop of Figure 5 (nothing is drawn here)."""
    opts = opts or Options()
    if opts.rate_kbps is not None and opts.quality is not None:
        raise ConfigError("--figure-rate and --figure-quality exclude each other: give one target")
    if opts.rate_kbps is not None and not (math.isfinite(opts.rate_kbps) and opts.rate_kbps > 0):
        raise ConfigError(f"--figure-rate {opts.rate_kbps}: expected a positive rate in kbps")
    unknown = [s for s in opts.sequences if s not in model.sequences]
    if unknown:
        raise ConfigError(f"--figure-sequences: no sequence {unknown[0]!r} in this run "
                          f"(sequences: {', '.join(model.sequences)})")
    qmetric = None
    if opts.quality is not None:
        qmetric = opts.quality[0]
        if qmetric not in model.metrics or not model.df[qmetric].astype(float).notna().any():
            have = [m for m in model.metrics if model.df[m].astype(float).notna().any()]
            raise ConfigError(f"--figure-quality: {qmetric!r} has no values in this run (metrics with values: "
                              f"{', '.join(have) or 'none'}); use another metric or --figure-rate")
    if model.run_dir is None:
        return Figure5([], [], "Figure 5 not drawn: the report was built without its run folder (no stills to read)")
    if records is None:
        records = load_records(Path(model.run_dir))
    used = set(str(k) for k in model.df["key"])
    kept = stills_of([r for r in records if str(r.get("key")) in used], Path(model.run_dir))
    if not kept:
        return Figure5([], [], "Figure 5 not drawn: the records of this run keep no exact decoded frames (a run "
                               "made before gfvc kept stills, or with stills failing); to keep them, rerun: "
                               f"`{rerun_hint(model)}`")
    learned = [m for m in LEARNED if m in model.condition.get("metrics", {}).get("names", [])]
    panels: list[Panel] = []
    notes: list[str] = []
    for seq in (list(opts.sequences) or model.sequences):
        panel = _panel(model, seq, opts, qmetric, kept, learned, notes)
        if panel is not None:
            panels.append(panel)
    missing = "" if panels else "Figure 5 not drawn: " + ("; ".join(notes) if notes else "no sequence to show")
    return Figure5(panels, notes if panels else [], missing)


def _target(model: ReportModel, seq: str, opts: Options) -> tuple[float, str]:
    if opts.rate_kbps is not None:
        return float(opts.rate_kbps), f"at each codec's rate point closest to {opts.rate_kbps:g} kbps (--figure-rate)"
    anchor = _points(model, model.anchor, seq, None)
    if anchor:
        low = min(anchor, key=lambda p: (p.kbps, -(p.qp or 0)))
        qp = f"QP {low.qp}, " if low.qp is not None else ""
        return low.kbps, (f"at each codec's rate point closest to {low.kbps:.2f} kbps, the anchor {model.anchor}'s "
                          f"lowest rate point ({qp}default target)")
    lows = sorted(min(p.kbps for p in _points(model, c, seq, None)) for c in model.codecs
                  if _points(model, c, seq, None))
    med = float(np.median(lows))
    return med, (f"at each codec's rate point closest to {med:.2f} kbps, the median of the codecs' lowest rate "
                 f"points (the anchor {model.anchor} has no records of this sequence)")


def _panel(model: ReportModel, seq: str, opts: Options, qmetric: str | None, kept: dict[str, JobStills],
           learned: list[str], notes: list[str]) -> Panel | None:
    tiles: list[Tile] = []
    without: list[str] = []
    no_quality: list[str] = []
    if opts.quality is not None:
        target_text = (f"at each codec's rate point whose {metric_label(opts.quality[0])} (sequence value) is "
                       f"closest to {opts.quality[1]:g} (--figure-quality: matched quality, not rate)")
    else:
        target_kbps, target_text = _target(model, seq, opts)
    for c in model.codecs:
        pts = _points(model, c, seq, qmetric)
        if not pts:
            continue
        if opts.quality is not None:
            chosen = closest_by_quality(pts, opts.quality[1])
            if chosen is None:
                no_quality.append(c)
                continue
        else:
            chosen = closest_by_rate(pts, target_kbps)
        js = kept.get(chosen.key)
        if js is None:
            without.append(f"{c} (QP {chosen.qp})")
            continue
        tiles.append(Tile(c, chosen.qp, chosen.kbps, chosen.key, js, chosen.quality))
    if no_quality:
        notes.append(f"{seq}: {', '.join(no_quality)} not shown: no {metric_label(str(qmetric))} value to match")
    if without:
        notes.append(f"{seq}: {', '.join(without)} not shown: no exact stills kept for that rate point (records "
                     f"from before stills were kept); rerun: `{rerun_hint(model)}`")
    if not tiles:
        if not without and not no_quality:
            notes.append(f"{seq}: no records")
        return None
    common = sorted(set.intersection(*(set(t.stills.frames) for t in tiles)))
    if opts.frames:
        frames = [f for f in opts.frames if f in common]
        lost = [f for f in opts.frames if f not in common]
        if lost:
            notes.append(f"{seq}: frame{'s' if len(lost) > 1 else ''} {', '.join(map(str, lost))} not kept by the "
                         f"jobs (kept: {', '.join(map(str, common)) or 'none'}); to keep "
                         f"{'them' if len(lost) > 1 else 'it'}, rerun: `{rerun_hint(model, lost)}`")
        if not frames:
            return None
        frame_text = f"Frame{'s' if len(frames) > 1 else ''} named by --figure-frames."
        scores = {}
    else:
        if not common:
            notes.append(f"{seq}: the codecs kept no frame in common")
            return None
        scores = {f: float(disagreement([read_png(t.still(f).decoded) for t in tiles]).mean()) for f in common}
        frames = most_different(scores, opts.frame_count)
        frame_text = (f"Frame chosen among the frames every job kept ({', '.join(map(str, common))}; "
                      f"{tiles[0].stills.selection or 'chosen from the original sequence'}) as the one where the "
                      f"codecs' decoded frames differ most (mean per-pixel variance across codecs, summed over R, G, "
                      f"B: {', '.join(f'frame {f}: {scores[f]:.1f}' for f in common)}).")
        if len(frames) > 1:
            frame_text = frame_text.replace("Frame chosen", f"The {len(frames)} frames chosen").replace(
                "as the one where", "as those where")
    h, w = read_png(tiles[0].still(frames[0]).original).shape[:2]
    crop, crop_text = None, ""
    if opts.crop == AUTO:
        var = disagreement([read_png(t.still(frames[0]).decoded) for t in tiles])
        crop = auto_crop(var, crop_size(h, w))
        crop_text = (f"Zoom row: the {crop[2]}x{crop[3]} px window (x={crop[0]}, y={crop[1]}) where the codecs "
                     f"differ most in frame {frames[0]} (yellow box), enlarged.")
    elif isinstance(opts.crop, tuple):
        x, y, cw, ch = opts.crop
        if x + cw > w or y + ch > h:
            raise ConfigError(f"--figure-crop {x},{y},{cw},{ch}: outside the {w}x{h} frames of {seq}")
        crop = opts.crop
        crop_text = f"Zoom row: the {cw}x{ch} px window at x={x}, y={y} (--figure-crop, yellow box), enlarged."
    still_list = [t.still(f) for t in tiles for f in frames]
    return Panel(sequence=seq, name=f"figure5_{safe_name(seq)}", tiles=tiles, frames=frames, frame_text=frame_text,
                 target_text=target_text, crop=crop, crop_text=crop_text, anchor=model.anchor, learned=learned,
                 learned_text=_learned_text(still_list, learned), scores=scores)


# ------------------------------------------------------------------------ drawing
def _value_line(still: Still, learned: list[str]) -> tuple[str, str]:
    psnr, ssim = still.value("psnr"), still.value("ssim")
    first = " · ".join([f"PSNR {psnr:.2f} dB" if psnr is not None else "PSNR n/a",
                        f"SSIM {ssim:.3f}" if ssim is not None else "SSIM n/a"])
    parts, na = [], []
    for m in learned:
        v = still.value(m)
        if v is not None:
            parts.append(f"{metric_label(m)} {v:.3f}")
        else:
            na.append(metric_label(m))
    if na:
        reason = " ".join(str((still.metrics.get(m) or {}).get("reason") or "") for m in learned).lower()
        parts.append(f"{'/'.join(na)} n/a ({'weights missing' if 'weight' in reason else 'not computed'})")
    return first, " · ".join(parts)


# Layout in inches: tile width, title block above a tile, zoom tile width, gaps, top band for the heading.
TILE_IN, TITLE_IN, ZOOM_IN, GAP_IN, TOP_IN, MARGIN_IN = 1.9, 0.62, 1.3, 0.14, 0.4, 0.08


def draw(panel: Panel):  # -> matplotlib Figure
    """One figure: per frame, the original and every codec (tiles in rows of ``COLUMNS``, each with its
    labels above and, with a crop, the enlarged window below). Axes are placed in inches, so labels never
    overlap a picture whatever the number of codecs or the frame's aspect ratio."""
    import matplotlib.pyplot as plt  # lazy: matplotlib loads only when a figure is drawn
    from matplotlib.patches import Rectangle

    from reports import plots  # lazy: loads matplotlib; this module stays light for the CLI

    plots._style()
    n = 1 + len(panel.tiles)
    cols = min(n, COLUMNS)
    trow = math.ceil(n / cols)
    h0, w0 = read_png(panel.tiles[0].still(panel.frames[0]).original).shape[:2]
    tile_h = TILE_IN * h0 / w0
    zoom_h = ZOOM_IN * panel.crop[3] / panel.crop[2] if panel.crop else 0.0
    row_h = TITLE_IN + tile_h + (GAP_IN + zoom_h if panel.crop else 0.0) + GAP_IN
    width = 2 * MARGIN_IN + cols * TILE_IN + (cols - 1) * GAP_IN
    height = TOP_IN + row_h * trow * len(panel.frames) + MARGIN_IN
    fig = plt.figure(figsize=(width, height))

    def axes_at(x_in: float, top_in: float, w_in: float, h_in: float) -> Any:
        """Axes whose top-left corner is (x_in, top_in) inches from the figure's top-left."""
        ax = fig.add_axes((x_in / width, 1.0 - (top_in + h_in) / height, w_in / width, h_in / height))
        ax.set_xticks([])
        ax.set_yticks([])
        return ax

    for fi, f in enumerate(panel.frames):
        orig = read_png(panel.tiles[0].still(f).original)
        items: list[tuple[np.ndarray, list[str], bool]] = [
            (orig, ["original", f"frame {f}" + (" (key frame)" if f == 0 else ""), "", ""], True)]
        for t in panel.tiles:
            s = t.still(f)
            first, second = _value_line(s, panel.learned)
            head = t.codec + (" (anchor)" if t.codec == panel.anchor else "")
            qp = f"QP {t.qp} · " if t.qp is not None else ""
            items.append((read_png(s.decoded), [head, f"{qp}{t.kbps:.2f} kbps", first, second], False))
        for i, (img, lines, is_orig) in enumerate(items):
            r, c = divmod(i, cols)
            x0 = MARGIN_IN + c * (TILE_IN + GAP_IN)
            top = TOP_IN + (fi * trow + r) * row_h
            ax = axes_at(x0, top + TITLE_IN, TILE_IN, tile_h)
            ax.imshow(img, interpolation="nearest", aspect="auto")
            for side in ax.spines.values():
                side.set_visible(False)
            ax.set_title("\n".join(lines), fontsize=7.0, fontweight="bold" if is_orig else "normal",
                         linespacing=1.25, pad=3)
            if panel.crop:
                x, y, w, h = panel.crop
                ax.add_patch(Rectangle((x - 0.5, y - 0.5), w, h, fill=False, edgecolor="#ffd400", linewidth=1.0))
                zax = axes_at(x0 + (TILE_IN - ZOOM_IN) / 2, top + TITLE_IN + tile_h + GAP_IN, ZOOM_IN, zoom_h)
                zax.imshow(img[y:y + h, x:x + w], interpolation="nearest", aspect="auto")
                for side in zax.spines.values():  # a yellow frame: "the boxed window, enlarged"
                    side.set_edgecolor("#ffd400")
                    side.set_linewidth(1.2)
    lo, hi = panel.kbps_range
    fig.text(0.5, 1.0 - 0.2 / height, f"{panel.sequence}: decoded frames {panel.target_text.split(' (')[0]} "
             f"(chosen rates {lo:.2f}-{hi:.2f} kbps)", ha="center", va="center", fontsize=8.5)
    return fig


def png(panel: Panel, dpi: int = 150) -> bytes:
    """The panel drawn as PNG bytes (the figure is closed)."""
    from reports import plots  # lazy: loads matplotlib; this module stays light for the CLI

    fig = draw(panel)
    try:
        return plots.png_bytes(fig, dpi=dpi)
    finally:
        plots.close(fig)
