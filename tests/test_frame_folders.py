"""Frame folders (issue 16, class 1): one lister and one PNG reader for every command.

* Order is natural (``0.png..11.png`` equals ``000.png..011.png``), names that
  give one frame number twice are refused; every reader of a frame folder
  (encode, metrics, sequences prepare, training data, source variants, vertex
  and OSX per-frame folders, the manifest's ``png`` format, s2d-overlay) goes
  through :mod:`gfvc.frame_folder`, and no other module lists frames itself.
* Pixels: one rule for every PNG colour type and bit depth (16-bit scaled by
  ``round(v * 255 / 65535)``, grey copied to RGB, palette through its palette,
  alpha only when opaque); everything else is one line.
* Frames of different sizes, pictures of another format, junk ``.png`` files
  and an empty folder are one line and exit code 2 in the commands.
"""
from __future__ import annotations

import json
import re
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from cli_errors import one_line_error
from PIL import Image

from gfvc.errors import InputError
from gfvc.frame_folder import list_frame_files, natural_key, read_png_folder, read_png_frame
from gfvc.video import read_video
from suite.cli.main import main
from test_conditions.demo import demo_frames

ROOT = Path(__file__).resolve().parents[1]


def write_named(folder: Path, frames: np.ndarray, names: list[str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for f, n in zip(frames, names, strict=True):
        Image.fromarray(f).save(folder / n)
    return folder


@pytest.fixture(scope="module")
def twelve() -> np.ndarray:
    return demo_frames(0, 12)[:, :64, :64].copy()


@pytest.fixture
def two_namings(tmp_path: Path, twelve: np.ndarray) -> tuple[Path, Path]:
    a = write_named(tmp_path / "plain", twelve, [f"{i}.png" for i in range(12)])
    b = write_named(tmp_path / "padded", twelve, [f"{i:03d}.png" for i in range(12)])
    return a, b


# --- order --------------------------------------------------------------------------------------

def test_natural_order_makes_both_namings_the_same_video(two_namings, twelve):
    a, b = two_namings
    assert [p.name for p in list_frame_files(a)][:4] == ["0.png", "1.png", "2.png", "3.png"]
    assert np.array_equal(read_video(a), twelve) and np.array_equal(read_video(b), twelve)


def test_metrics_of_two_namings_of_the_same_frames_is_identical(two_namings, capsys):
    a, b = two_namings
    assert main(["metrics", str(a), str(b), "--metrics", "psnr,ssim", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)["results"]  # text order gave 38.8 dB here
    assert res["psnr"]["value"] >= 100  # the identical-frame cap
    assert res["ssim"]["value"] == pytest.approx(1.0)


@pytest.mark.parametrize("names", [["1.png", "01.png"], ["f2.png", "F2.png"], ["a_7.png", "a_007.png"]])
def test_names_with_one_frame_number_are_refused(names, tmp_path, twelve, capsys):
    folder = write_named(tmp_path / "amb", twelve[:2], names)
    with pytest.raises(InputError, match="ambiguous"):
        list_frame_files(folder)
    one_line_error(capsys, main(["metrics", str(folder), str(folder), "--metrics", "psnr"]), "ambiguous",
              *sorted(names)[:1])


def test_natural_key_orders_mixed_names():
    names = ["frame10.png", "frame2.png", "Frame1.png", "frame2b.png", "a.png", "10.png", "9.png"]
    assert sorted(names, key=natural_key) == ["9.png", "10.png", "a.png", "Frame1.png", "frame2.png",
                                              "frame2b.png", "frame10.png"]


# Readers of frame folders, each fed a folder whose text order differs from its natural order.
def _read_video(folder: Path, tmp: Path) -> np.ndarray:  # encode, metrics and s2d-overlay read through it
    return read_video(folder)


def _read_prepare(folder: Path, tmp: Path) -> np.ndarray:
    from gfvc.video import read_rgb_planar
    from tools.prepare import prepare_one

    (tmp / "prep").mkdir()
    e = prepare_one(folder, tmp / "prep", 64, 12, 25.0, resize=False, write_yuv=False)
    return read_rgb_planar(tmp / "prep" / e.file, 64, 64)


def _read_training(folder: Path, tmp: Path) -> np.ndarray:
    from model_parts.data import PairDataset

    (tmp / "data" / "train").mkdir(parents=True)
    (tmp / "data" / "train" / "v").symlink_to(folder, target_is_directory=True)
    ds = PairDataset(tmp / "data", 64)
    return ds._load(ds.videos[0])[0]


def _read_manifest(folder: Path, tmp: Path) -> np.ndarray:
    from test_conditions.manifest import SequenceEntry, load_sequence

    e = SequenceEntry(name="v", file=str(folder), sha256="0" * 64, frames=12, width=64, height=64, fps=25.0,
                      format="png", manifest_dir=str(tmp))
    return load_sequence(e, 12, verify=False).frames


def _read_overlay(folder: Path, tmp: Path) -> np.ndarray:
    np.save(tmp / "v.npy", np.full((12, 10475, 2), 5.0, np.float32))  # outside the picture: nothing drawn
    assert main(["s2d-overlay", "--video", str(folder), "--vertices", str(tmp / "v.npy"), "-o",
                 str(tmp / "ov")]) == 0
    return read_png_folder(tmp / "ov")


@pytest.mark.parametrize("reader", [_read_video, _read_prepare, _read_training, _read_manifest, _read_overlay],
                         ids=["read_video", "sequences-prepare", "training-data", "manifest", "s2d-overlay"])
def test_every_frame_reader_uses_natural_order(reader, two_namings, twelve, tmp_path):
    got = reader(two_namings[0], tmp_path)
    assert np.array_equal(got, twelve)


def test_per_frame_vertex_and_osx_folders_use_natural_order(tmp_path):
    from tools.osx_vertices import frame_items
    from tools.prepare import read_vertex_folder

    vdir = tmp_path / "v" / "clip"
    vdir.mkdir(parents=True)
    for i in range(12):
        np.save(vdir / f"{i}.npy", np.full((10475, 2), i / 100, np.float32))
    arr = read_vertex_folder(tmp_path / "v", "clip", 12)
    assert [round(float(a[0, 0]) * 100) for a in arr] == list(range(12))
    assert [p.stem for p in frame_items(vdir)] == [str(i) for i in range(12)]


# The one place that lists frames: no other module globs for frames or opens pictures itself.
_LISTING = re.compile(r"""glob\(\s*["']\*\.(png|npy|obj)|suffix(\.lower\(\))?\s*==\s*["']\.png|Image\.open\(|"""
                      r"""cv2\.imread\(""")
# prepare: "is there any .npy" before listing; docx_report: the size of a figure it embeds (not a frame)
_ALLOWED = {Path("gfvc/frame_folder.py"), Path("tools/prepare.py"), Path("reports/docx_report.py")}


def test_no_module_lists_or_decodes_frames_by_itself():
    offenders = []
    for pkg in ("gfvc", "anchors", "metrics", "model_parts", "s2d_model", "baselines", "reports", "tools", "suite",
                "test_conditions"):
        for p in sorted((ROOT / pkg).rglob("*.py")):
            rel = p.relative_to(ROOT)
            if rel in _ALLOWED:
                continue
            for i, line in enumerate(p.read_text().splitlines(), 1):
                if _LISTING.search(line):
                    offenders.append(f"{rel}:{i}: {line.strip()}")
    assert not offenders, "list/read frames through gfvc.frame_folder:\n" + "\n".join(offenders)


# --- pixels -------------------------------------------------------------------------------------

def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def write_png(path: Path, rows: list[bytes], width: int, depth: int, ctype: int, extra: bytes = b"") -> Path:
    """A PNG written byte by byte (colour types and depths Pillow cannot write), filter 0 per row."""
    ihdr = struct.pack(">IIBBBBB", width, len(rows), depth, ctype, 0, 0, 0)
    raw = b"".join(b"\x00" + r for r in rows)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + extra + _chunk(b"IDAT", zlib.compress(raw))
                     + _chunk(b"IEND", b""))
    return path


def _rgb16(path: Path) -> np.ndarray:
    v = np.array([[[0, 128, 129], [257, 65535, 65534]], [[32767, 32768, 1000], [40000, 50000, 60000]]], np.uint16)
    write_png(path, [r.astype(">u2").tobytes() for r in v], 2, 16, 2)
    return v


def _scaled(v: np.ndarray) -> np.ndarray:
    return np.round(v.astype(np.float64) * 255 / 65535).astype(np.uint8)


def test_16_bit_rgb_and_grey_are_scaled_not_clipped(tmp_path):
    v = _rgb16(tmp_path / "rgb16.png")
    assert np.array_equal(read_png_frame(tmp_path / "rgb16.png"), _scaled(v))
    g = np.array([[0, 300, 65535], [1000, 40000, 65000]], np.uint16)
    Image.frombytes("I;16", (3, 2), g.astype("<u2").tobytes()).save(tmp_path / "g16.png")  # read all white before
    assert np.array_equal(read_png_frame(tmp_path / "g16.png"), np.repeat(_scaled(g)[..., None], 3, axis=2))
    ga = np.stack([g, np.full_like(g, 65535)], -1)  # 16-bit grey + opaque alpha
    write_png(tmp_path / "ga16.png", [r.astype(">u2").tobytes() for r in ga], 3, 16, 4)
    assert np.array_equal(read_png_frame(tmp_path / "ga16.png"), np.repeat(_scaled(g)[..., None], 3, axis=2))


def _grey(path: Path) -> np.ndarray:
    Image.fromarray(np.array([[0, 100], [200, 255]], np.uint8), "L").save(path)
    return np.repeat(np.array([[0, 100], [200, 255]], np.uint8)[..., None], 3, axis=2)


_RGB = np.array([[[10, 20, 30], [40, 50, 60]], [[70, 80, 90], [250, 251, 252]]], np.uint8)


def _make(kind: str, path: Path) -> np.ndarray | str:
    """Write one PNG of ``kind``; return the RGB it must read as, or the words its refusal must contain."""
    if kind == "rgb":
        Image.fromarray(_RGB).save(path)
        return _RGB
    if kind == "grey8":
        return _grey(path)
    if kind == "grey2":  # 2-bit grey 0..3 -> 0, 85, 170, 255
        write_png(path, [bytes([0b00011011])], 4, 2, 0)
        return np.repeat(np.array([[0, 85, 170, 255]], np.uint8)[..., None], 3, axis=2)
    if kind == "bilevel":
        Image.fromarray(np.array([[True, False], [False, True]])).save(path)
        return np.repeat(np.array([[255, 0], [0, 255]], np.uint8)[..., None], 3, axis=2)
    if kind == "palette":
        Image.fromarray(_RGB).quantize(4).save(path)
        return np.asarray(Image.fromarray(_RGB).quantize(4).convert("RGB"))
    if kind == "rgba-opaque":
        Image.fromarray(np.concatenate([_RGB, np.full((2, 2, 1), 255, np.uint8)], -1), "RGBA").save(path)
        return _RGB
    if kind == "la-opaque":
        Image.fromarray(np.array([[[5, 255], [9, 255]]], np.uint8), "LA").save(path)
        return np.repeat(np.array([[5, 9]], np.uint8)[..., None], 3, axis=2)
    if kind == "palette-unused-transparency":  # tRNS on a palette entry no pixel uses
        im = Image.fromarray(np.array([[0, 1], [1, 0]], np.uint8), "P")
        im.putpalette([10, 20, 30, 40, 50, 60, 70, 80, 90])
        im.save(path, transparency=2)
        return np.array([[[10, 20, 30], [40, 50, 60]], [[40, 50, 60], [10, 20, 30]]], np.uint8)
    if kind == "rgba-transparent":
        a = np.concatenate([_RGB, np.full((2, 2, 1), 255, np.uint8)], -1)
        a[0, 0, 3] = 0
        Image.fromarray(a, "RGBA").save(path)
        return "transparent"
    if kind == "la-transparent":
        Image.fromarray(np.array([[[5, 255], [9, 128]]], np.uint8), "LA").save(path)
        return "transparent"
    if kind == "palette-transparent":
        im = Image.fromarray(np.array([[0, 1], [1, 0]], np.uint8), "P")
        im.putpalette([10, 20, 30, 40, 50, 60])
        im.save(path, transparency=1)
        return "transparent"
    if kind == "rgb16-transparent":  # 16-bit RGB with a tRNS colour that a pixel has
        v = np.array([[[1, 2, 3], [4, 5, 6]]], np.uint16)
        write_png(path, [r.astype(">u2").tobytes() for r in v], 2, 16, 2, _chunk(b"tRNS", struct.pack(">HHH", 4, 5, 6)))
        return "transparent"
    if kind == "jpeg-named-png":
        Image.fromarray(_RGB).save(path, format="JPEG")
        return "not a PNG"
    if kind == "truncated":
        Image.fromarray(demo_frames(0, 1)[0]).save(path)
        path.write_bytes(path.read_bytes()[:400])
        return "corrupt or truncated PNG"
    if kind == "bit-flip-in-data":
        Image.fromarray(demo_frames(0, 1)[0]).save(path)
        b = bytearray(path.read_bytes())
        b[len(b) // 2] ^= 0x10
        path.write_bytes(bytes(b))
        return "corrupt or truncated PNG"
    if kind == "text":
        path.write_text("not a picture")
        return "not a PNG file"
    if kind == "empty":
        path.write_bytes(b"")
        return "an empty file"
    if kind == "animated":
        frames = [Image.fromarray(_RGB), Image.fromarray(255 - _RGB)]
        frames[0].save(path, save_all=True, append_images=frames[1:])
        return "animated PNG"
    raise AssertionError(kind)


KINDS = ["rgb", "grey8", "grey2", "bilevel", "palette", "rgba-opaque", "la-opaque", "palette-unused-transparency",
         "rgba-transparent", "la-transparent", "palette-transparent", "rgb16-transparent", "jpeg-named-png",
         "truncated", "bit-flip-in-data", "text", "empty", "animated"]


@pytest.mark.parametrize("kind", KINDS)
def test_every_png_kind_is_converted_by_the_rule_or_refused(kind, tmp_path):
    want = _make(kind, tmp_path / "f.png")
    if isinstance(want, str):
        with pytest.raises(InputError, match=want) as e:
            read_png_frame(tmp_path / "f.png")
        assert str(tmp_path / "f.png") in str(e.value) and "\n" not in str(e.value)
    else:
        got = read_png_frame(tmp_path / "f.png")
        assert got.dtype == np.uint8 and got.shape == want.shape + (() if want.ndim == 3 else (3,))
        assert np.array_equal(got, want)


# --- folders in the commands --------------------------------------------------------------------

def _folder_case(case: str, tmp: Path, frames: np.ndarray) -> tuple[Path, str]:
    d = tmp / case
    d.mkdir()
    if case == "empty":
        return d, "empty frame folder"
    write_named(d, frames[:3], ["0.png", "1.png", "2.png"])
    if case == "sizes":
        Image.fromarray(frames[3, :32]).save(d / "3.png")
        return d, "all frames of a folder must have one size"
    if case == "jpeg-among-pngs":
        Image.fromarray(frames[3]).save(d / "3.jpg")
        return d, "not PNG (3.jpg)"
    if case == "corrupt-png":
        (d / "3.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
        return d, "3.png"
    if case == "truncated-png":
        Image.fromarray(frames[3]).save(d / "3.png")
        (d / "3.png").write_bytes((d / "3.png").read_bytes()[:300])
        return d, "3.png: corrupt or truncated PNG"
    if case == "sixteen-bit-white":  # was read all white: now scaled, so not an error -- checked below
        raise AssertionError
    raise AssertionError(case)


CASES = ["empty", "sizes", "jpeg-among-pngs", "corrupt-png", "truncated-png"]


@pytest.mark.parametrize("case", CASES)
def test_bad_folders_are_one_line_in_encode_metrics_and_prepare(case, tmp_path, twelve, capsys):
    folder, words = _folder_case(case, tmp_path, twelve)
    one_line_error(capsys, main(["encode", "--codec", "keyframe-repeat", "--qp", "42", str(folder), "-o",
                            str(tmp_path / "o.gfvc")]), words)
    one_line_error(capsys, main(["metrics", str(folder), str(folder), "--metrics", "psnr"]), words)
    # an empty folder given to prepare is an empty split folder: no videos in it
    one_line_error(capsys, main(["sequences", "prepare", str(folder), "--out", str(tmp_path / "seq"), "--size", "64",
                            "--frames", "4"]), "no videos or PNG frame folders" if case == "empty" else words)


def test_other_files_next_to_frames_are_ignored(tmp_path, twelve):
    d = write_named(tmp_path / "f", twelve[:3], ["0.png", "1.png", "2.png"])
    np.save(d / "vertices.npy", np.zeros((3, 10475, 2), np.float32))  # what `gfvc decode -o DIR` puts there
    (d / "notes.txt").write_text("x")
    (d / ".DS_Store").write_bytes(b"\x00\x01")
    (d / "sub").mkdir()
    assert np.array_equal(read_png_folder(d), twelve[:3])


def test_a_video_folder_of_other_pictures_is_refused_not_skipped(tmp_path, twelve, capsys):
    from model_parts.data import list_videos

    write_named(tmp_path / "train" / "a", twelve[:2], ["0.png", "1.png"])
    (tmp_path / "train" / "b").mkdir()
    Image.fromarray(twelve[0]).save(tmp_path / "train" / "b" / "0.jpg")
    with pytest.raises(InputError, match="a folder of .jpg pictures"):
        list_videos(tmp_path)
    one_line_error(capsys, main(["sequences", "prepare", str(tmp_path / "train"), "--out", str(tmp_path / "seq"),
                            "--size", "64", "--frames", "2"]), "a folder of .jpg pictures")
