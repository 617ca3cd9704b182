"""Turn TED-Talk videos into CTC sequences and manifest entries.

Input: MRAA's TED384 layout — a video file (.mp4), a folder of PNG frames,
or a split folder holding many of either (e.g. TED384/test). Each selected
video gives NAME_{W}x{H}_{fps}_8bit_444.rgb (planar RGB, the GFVC format)
and NAME_{W}x{H}_{fps}_8bit_420.yuv (BT.601 limited range, OpenCV-exact),
of its first N frames, and a manifest entry with the .rgb file's sha256.
Sequence names of the paper's 30-sequence selection are not public: pass
``--list names.txt`` to pick yours, or ``--count 30`` for the first 30 in
name order (recorded in the manifest description).

``--vertices VDIR`` adds reference body vertices (docs/vertices.md): for each
video NAME, ``VDIR/NAME.npy`` (T, 10475, 2) or ``VDIR/NAME/*.npy`` (one
(10475, 2) file per frame, in name order; the layout of the S2D training
targets), normalised coordinates; the first N frames are written next to the
sequence as NAME_..._vertices.npy and named in its manifest entry with their
sha256 (``tools/osx_vertices.py`` converts OSX outputs to this layout).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from gfvc.argtypes import positive_float, positive_int, warn
from gfvc.errors import ConfigError, InputError
from gfvc.fileio import check_output_dir, check_output_file, read_npy
from gfvc.frame_folder import is_frame_folder, list_frame_files
from gfvc.vertices import check_array, check_plausible
from gfvc.video import (
    CONTAINER_SUFFIXES,
    is_viewing_copy,
    read_container,
    read_png_folder,
    sha256_file,
    write_rgb_planar,
    write_yuv420,
)
from test_conditions.manifest import SequenceEntry, VertexReference, load_manifest, write_manifest


def add_prepare_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("inputs", nargs="+", help="video file(s), PNG frame folder(s), or a split folder of them")
    p.add_argument("--out", required=True, help="output folder for .rgb/.yuv files")
    p.add_argument("--manifest", help="manifest to write/extend (default: OUT/manifest.yaml)")
    p.add_argument("--size", type=positive_int, default=384, help="square frame size (default 384)")
    p.add_argument("--frames", type=positive_int, default=150, help="first N frames (default 150)")
    p.add_argument("--fps", type=positive_float, default=25.0,
                   help="frame rate recorded for rate computation (default 25)")
    p.add_argument("--count", type=positive_int, help="take the first N videos (name order) of a split folder")
    p.add_argument("--list", dest="names_file", help="text file with one video name per line to select")
    p.add_argument("--resize", action="store_true", help="resize (PIL bicubic) inputs that are not SIZExSIZE")
    p.add_argument("--no-yuv", action="store_true", help="write only the planar RGB file")
    p.add_argument("--vertices", dest="vertices_dir", metavar="VDIR",
                   help="folder of reference vertices: VDIR/NAME.npy (T,10475,2) or VDIR/NAME/*.npy per frame "
                        "(docs/vertices.md)")
    p.add_argument("--vertices-source", default="",
                   help="how the reference vertices were made (recorded in the manifest and shown in reports)")
    p.add_argument("--vertices-proxy", action="store_true",
                   help="the reference vertices are a proxy, not a body-model estimate (labelled PROXY in reports)")
    p.set_defaults(func=cmd_prepare)


def _is_video(p: Path) -> bool:
    return p.is_file() and p.suffix.lower() in CONTAINER_SUFFIXES


def _is_frame_folder(p: Path) -> bool:
    return is_frame_folder(p)


def discover(inputs: list[Path], count: int | None, names: list[str] | None) -> list[Path]:
    """Expand split folders into their videos / frame folders, in name order."""
    found: list[Path] = []
    for p in inputs:
        if not p.exists():
            raise InputError(f"{p}: no such file or folder")
        if _is_video(p) or _is_frame_folder(p):
            found.append(p)
        elif p.is_dir():
            found.extend(sorted(q for q in p.iterdir() if _is_video(q) or _is_frame_folder(q)))
        else:
            raise InputError(f"{p}: not a video (.mp4/.mkv/...) or a folder of PNG frames")
    if names is not None:
        by_name = {q.stem if q.is_file() else q.name: q for q in found}
        missing = [n for n in names if n not in by_name]
        if missing:
            raise InputError(f"{len(missing)} listed video(s) not found, e.g. {missing[0]!r}")
        found = [by_name[n] for n in names]
    if count is not None:
        if count < 1:
            raise ConfigError(f"--count must be >= 1, got {count}")
        if len(found) < count:
            raise InputError(f"only {len(found)} videos found, --count {count} asked")
        found = found[:count]
    if not found:
        raise InputError("no videos or PNG frame folders found in the inputs")
    return found


def _resize(frames: np.ndarray, size: int) -> np.ndarray:
    from PIL import Image

    return np.stack([np.asarray(Image.fromarray(f).resize((size, size), Image.Resampling.BICUBIC)) for f in frames])


def read_vertex_folder(vdir: Path, name: str, frames: int) -> np.ndarray:
    """Reference vertices of video ``name`` from VDIR (NAME.npy or NAME/*.npy), first ``frames`` rows."""
    one, folder = vdir / f"{name}.npy", vdir / name
    if one.is_file():
        arr = read_npy(one, f"reference vertices of {name!r}")
    elif folder.is_dir() and any(folder.glob("*.npy")):
        files = list_frame_files(folder, (".npy",), what="folder of per-frame vertices")[:frames]
        rows = [read_npy(f, f"reference vertices of {name!r}") for f in files]
        if len({r.shape for r in rows}) != 1:
            raise InputError(f"{folder}: per-frame vertex files must all be (10475, 2) arrays, found shapes "
                             f"{sorted({r.shape for r in rows})}")
        arr = np.stack(rows)
    else:
        raise InputError(f"no reference vertices for {name!r} in {vdir} (expected {one.name} or {name}/*.npy); "
                         "convert OSX outputs with `python -m tools.osx_vertices`, or drop --vertices")
    src = one if one.is_file() else folder
    check_array(arr, f"reference vertices {src}", frames)
    check_plausible(arr[:frames], f"reference vertices {src}")
    return np.ascontiguousarray(arr[:frames], dtype=np.float32)


def prepare_one(src: Path, out_dir: Path, size: int, frames: int, fps: float, resize: bool,
                write_yuv: bool = True, vertices_dir: Path | None = None, vertices_source: str = "",
                vertices_proxy: bool = False) -> SequenceEntry:
    name = src.stem if src.is_file() else src.name
    if src.is_file() and is_viewing_copy(src):
        warn(f"{src} is a lossy viewing copy written by the suite (decoded output re-encoded with H.264), "
             "not an original video")
    arr = read_container(src, frames)[0] if src.is_file() else read_png_folder(src, frames)
    if arr.shape[0] < frames:
        raise InputError(f"{src}: has {arr.shape[0]} frames, {frames} needed")
    if arr.shape[1:3] != (size, size):
        if not resize:
            raise InputError(f"{src}: frames are {arr.shape[2]}x{arr.shape[1]}, not {size}x{size} (add --resize)")
        arr = _resize(arr, size)
    stem = f"{name}_{size}x{size}_{fps:g}_8bit"
    rgb = out_dir / f"{stem}_444.rgb"
    write_rgb_planar(rgb, arr)
    if write_yuv:
        write_yuv420(out_dir / f"{stem}_420.yuv", arr)
    vref = None
    if vertices_dir is not None:
        vfile = out_dir / f"{stem}_vertices.npy"
        np.save(vfile, read_vertex_folder(vertices_dir, name, frames))
        vref = VertexReference(file=vfile.name, sha256=sha256_file(vfile), source=vertices_source,
                               proxy=vertices_proxy)
    return SequenceEntry(name=name, file=rgb.name, sha256=sha256_file(rgb), frames=frames, width=size,
                         height=size, fps=fps, format="rgb", manifest_dir=str(out_dir), vertices=vref)


def cmd_prepare(args: argparse.Namespace) -> int:
    if args.size < 2 or args.size % 2:
        raise ConfigError(f"--size must be even and >= 2 (4:2:0), got {args.size}")
    out_dir = check_output_dir(args.out, what="--out")
    manifest = Path(args.manifest) if args.manifest else out_dir / "manifest.yaml"
    check_output_file(manifest, what="manifest", suffixes=(".yaml", ".yml"))
    names = None
    if args.names_file:
        try:
            names = [ln.strip() for ln in Path(args.names_file).read_text().splitlines() if ln.strip()]
        except OSError as e:
            raise InputError(f"--list {args.names_file}: {e.strerror or e}") from None
        except UnicodeDecodeError:
            raise InputError(f"--list {args.names_file}: not a text file (one video name per line)") from None
    sources = discover([Path(p) for p in args.inputs], args.count, names)
    entries = load_manifest(manifest) if manifest.exists() else []
    by_name = {e.name: e for e in entries}
    vdir = Path(args.vertices_dir) if args.vertices_dir else None
    if vdir is not None and not vdir.is_dir():
        raise InputError(f"--vertices {vdir}: no such folder")

    def rel(file: str) -> str:  # manifest paths are relative to the manifest's folder
        p = Path(out_dir.resolve() / file)
        try:
            return str(p.relative_to(manifest.resolve().parent))
        except ValueError:
            return str(p)

    for i, src in enumerate(sources, 1):
        entry = prepare_one(src, out_dir, args.size, args.frames, args.fps, args.resize, not args.no_yuv,
                            vdir, args.vertices_source, args.vertices_proxy)
        d = {**entry.to_dict(), "file": rel(entry.file)}
        if entry.vertices is not None:
            d["vertices"] = {**d["vertices"], "file": rel(entry.vertices.file)}
        by_name[entry.name] = SequenceEntry(**d, manifest_dir=str(manifest.parent))
        write_manifest(manifest, list(by_name.values()),
                       description=f"prepared by `gfvc sequences prepare` ({args.frames} frames, "
                                   f"{args.size}x{args.size}, {args.fps:g} fps)")
        print(f"[{i}/{len(sources)}] {entry.name}: {entry.sha256[:16]}…", file=sys.stderr)
    print(f"{manifest}: {len(by_name)} sequences")
    return 0
