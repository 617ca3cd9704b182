"""Every command, every file it reads or writes: a bad file is one line on stderr, never a traceback
(issue 16, class 5).

* Inputs: a table over the commands feeds each file-reading option junk (random
  bytes), an empty file, text, a truncated copy of a valid file and a valid file
  of the wrong kind (a torch file where a .npy belongs, a pickled object array,
  a checkpoint holding a foreign class, a YAML list, ...). Each case is one line,
  exit 2, no "Traceback", and never torch's or numpy's own advice (load with
  weights_only=False / allow_pickle).
* Outputs: every output option of every command is checked before any work
  (the work entry points are replaced by a trap), also `train --export
  /dev/null/x.pt` and `--out EXISTING_FILE`.
* The tables are complete: every path option of the parser must be in one of
  them (or listed with the reason it reads no user file), so a new option
  cannot skip the check.
* A frame that cannot be read mid-training (`gfvc train s2d`) is one line naming
  the file and the step; the last checkpoint is kept and resumes.
"""
from __future__ import annotations

import argparse
import json
import random
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from cli_errors import one_line_error
from test_s2d_networks import write_tiny_config, write_tiny_data

from gfvc.video import write_container, write_png_folder, write_video
from suite.cli.main import build_parser, main
from test_conditions.demo import demo_frames

TESTS = Path(__file__).resolve().parent
GOLDEN_RUN = TESTS / "data" / "reports" / "run"
FOREIGN_ADVICE = ("weights_only", "allow_pickle", "PyTorch", "Unsupported operand", "pickle.load")


def one_line(capsys, rc, *words: str, code: int = 2) -> str:
    """One line in the suite's words, and none of the foreign libraries' advice."""
    line = one_line_error(capsys, rc, *words, code=code)
    assert not any(a in line for a in FOREIGN_ADVICE), line
    return line


class Foreign:
    """A class torch's weights_only loader refuses (a checkpoint pickled with custom objects)."""


# --- junk makers: (path, kind) -> write a bad file of that kind at path -----------------------------------

def _valid_torch(p: Path) -> None:
    torch.save({"generator": {"w": torch.zeros(20000)}}, p)


def _valid_npy(p: Path) -> None:
    with open(p, "wb") as f:
        np.save(f, np.zeros((2, 10475, 2), np.float32))


def _valid_mp4(p: Path) -> None:
    write_container(p.with_suffix(".mp4"), demo_frames(0, 4), 25.0)
    if p.suffix != ".mp4":
        p.with_suffix(".mp4").rename(p)


def _valid_container(p: Path) -> None:
    clip = p.with_name("clip-for-container.yuv")
    write_video(clip, demo_frames(0, 2))
    assert main(["encode", "--codec", "keyframe-repeat", "--qp", "42", str(clip), "-o", str(p),
                 "--size", "128x128"]) == 0


def make(kind: str, p: Path, valid: Callable[[Path], None] | None = None) -> Path:
    p.parent.mkdir(parents=True, exist_ok=True)
    if kind == "random":
        p.write_bytes(random.Random(p.name).randbytes(777))
    elif kind == "empty":
        p.write_bytes(b"")
    elif kind == "text":
        p.write_text("<html>quota exceeded</html>\n")
    elif kind == "folder":
        p.mkdir()
    elif kind == "truncated":
        assert valid is not None
        valid(p)
        p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])
    elif kind == "torch-foreign":
        torch.save({"generator": Foreign()}, p)
    elif kind == "torch-list":
        torch.save([1, 2, 3], p)
    elif kind == "npy-file":
        _valid_npy(p)
    elif kind == "npy-pickle":
        with open(p, "wb") as f:
            np.save(f, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    elif kind == "npy-shape":
        with open(p, "wb") as f:
            np.save(f, np.zeros((3, 7), np.float32))
    elif kind == "yaml-list":
        p.write_text("- 1\n- 2\n")
    elif kind == "json-list":
        p.write_text("[1, 2]")
    elif kind == "baseline-string":
        p.write_text(json.dumps({"schema": 1, "kind": "gfvc-bdrate-baseline", "entries": {"s2d": {"dists": "abc"}}}))
    elif kind == "baseline-list-entry":
        p.write_text(json.dumps({"schema": 1, "kind": "gfvc-bdrate-baseline", "entries": {"s2d": [1, 2]}}))
    elif kind == "baseline-tolerance":
        p.write_text(json.dumps({"schema": 1, "kind": "gfvc-bdrate-baseline", "tolerance_pct": "0.5",
                                 "entries": {"s2d": {"dists": -1.0}}}))
    else:
        raise AssertionError(kind)
    return p


TORCH = ["random", "empty", "text", "truncated", "torch-foreign", "torch-list", "npy-file"]
NPY = ["random", "empty", "text", "truncated", "npy-pickle", "npy-shape", "torch-list"]
YAML = ["random", "empty", "yaml-list", "folder"]
VIDEO = ["random", "empty", "text", "truncated"]


@dataclass(frozen=True)
class In:
    """One file-reading option: how to build the command around the bad file, and what to feed it."""

    option: tuple[str, ...]   # (command..., dest): matched against the parser (see test_tables_cover_...)
    name: str                 # the bad file's name (its suffix matters to some readers)
    kinds: tuple[str, ...]
    argv: Callable[[Path, Path], list[str]]
    valid: Callable[[Path], None] | None = None
    words: tuple[str, ...] = ()


def _clip(tmp: Path) -> str:
    p = tmp / "clip.yuv"
    if not p.exists():
        write_video(p, demo_frames(0, 2))
    return str(p)


def _data_with(tmp: Path, f: Path) -> str:
    """A training folder whose one video is the bad file."""
    d = tmp / "data"
    (d / "train").mkdir(parents=True, exist_ok=True)
    shutil.move(str(f), d / "train" / f.name)
    return str(d)


def _vdir_with(tmp: Path, f: Path) -> str:
    (tmp / "v").mkdir(exist_ok=True)
    shutil.move(str(f), tmp / "v" / "clip.npy")
    return str(tmp / "v")


def _run_with(tmp: Path, f: Path) -> str:
    run = tmp / "run"
    shutil.copytree(GOLDEN_RUN, run)
    (run / "run.json").unlink()
    shutil.move(str(f), run / "run.json")
    return str(run)


S2D_TRAIN = ["train", "s2d", "--out", "{tmp}/t", "--steps", "1", "--no-progress"]


def _fill(argv: list[str], tmp: Path) -> list[str]:
    return [a.replace("{tmp}", str(tmp)) for a in argv]


INPUTS: list[In] = [
    In(("encode", "input"), "in.mp4", VIDEO, lambda f, t: ["encode", "--codec", "keyframe-repeat", "--qp", "42",
                                                           str(f), "-o", f"{t}/o.gfvc"], _valid_mp4),
    In(("encode", "input"), "in.yuv", ("random", "empty"),
       lambda f, t: ["encode", "--codec", "keyframe-repeat", "--qp", "42", str(f), "-o", f"{t}/o.gfvc", "--size",
                     "128x128"]),
    In(("metrics", "dist"), "d.mp4", VIDEO, lambda f, t: ["metrics", str(f), str(f), "--metrics", "psnr"],
       _valid_mp4),
    In(("metrics", "ref"), "r.rgb", ("random", "empty"),
       lambda f, t: ["metrics", str(f), _clip(t), "--size", "128x128", "--metrics", "psnr"]),
    In(("decode", "bitstream"), "s.gfvc", ("random", "empty", "text", "truncated", "npy-file"),
       lambda f, t: ["decode", str(f), "-o", f"{t}/d.yuv"], _valid_container),
    In(("sequences", "prepare", "inputs"), "v.mp4", VIDEO,
       lambda f, t: ["sequences", "prepare", str(f), "--out", f"{t}/seq", "--size", "128", "--frames", "2"],
       _valid_mp4),
    In(("sequences", "prepare", "names_file"), "list.txt", ("random", "folder"),
       lambda f, t: ["sequences", "prepare", str(t), "--list", str(f), "--out", f"{t}/seq"]),
    In(("sequences", "prepare", "vertices_dir"), "clip.npy", NPY,
       lambda f, t: ["sequences", "prepare", (write_png_folder(t / "clip", demo_frames(0, 2)), str(t / "clip"))[1],
                     "--out", f"{t}/seq", "--size", "128", "--frames", "2", "--vertices", _vdir_with(t, f)],
       _valid_npy),
    In(("sequences", "verify", "manifest"), "m.yaml", YAML, lambda f, t: ["sequences", "verify", "--manifest", str(f)]),
    In(("run", "condition"), "c.yaml", YAML, lambda f, t: ["run", "--condition", str(f), "--dry-run", "--workdir",
                                                          f"{t}/r"]),
    In(("run", "manifest"), "m.yaml", YAML, lambda f, t: ["run", "--manifest", str(f), "--dry-run", "--workdir",
                                                         f"{t}/r"]),
    In(("run", "model"), "s2d.pt", TORCH, lambda f, t: ["run", "--codec", "s2d", "--model", f"s2d={f}", "--dry-run",
                                                       "--workdir", f"{t}/r"], _valid_torch),
    In(("encode", "model"), "fomm.pt", TORCH,
       lambda f, t: ["encode", "--codec", "fomm", "--qp", "42", _clip(t), "--size", "128x128", "-o", f"{t}/o.gfvc",
                     "--model", f"fomm={f}"], _valid_torch),
    In(("info", "model"), "fomm.pt", TORCH, lambda f, t: ["info", "fomm", "--model", f"fomm={f}"], _valid_torch),
    In(("info", "config"), "c.yaml", YAML, lambda f, t: ["info", "fomm", "--config", str(f)]),
    In(("train", "CODEC", "config"), "c.yaml", YAML,
       lambda f, t: ["train", "fomm", "--config", str(f), "--data", f"{t}/nodata", "--out", f"{t}/t", "--steps", "1"]),
    In(("train", "CODEC", "resume"), "ck.pth.tar", TORCH,
       lambda f, t: ["train", "fomm", "--resume", str(f), "--data", f"{t}/nodata", "--out", f"{t}/t", "--steps", "1"],
       _valid_torch),
    In(("train", "CODEC", "data"), "v.mp4", ("random", "empty", "truncated"),
       lambda f, t: ["train", "fomm", "--config", "demo", "--data", _data_with(t, f), "--out", f"{t}/t", "--steps",
                     "1", "--batch", "1", "--no-progress"], _valid_mp4),
    In(("train", "s2d", "config"), "c.yaml", YAML, lambda f, t: _fill(S2D_TRAIN, t) + ["--config", str(f), "--data",
                                                                                     f"{t}/nodata"]),
    In(("train", "s2d", "resume"), "ck.pt", TORCH,
       lambda f, t: _fill(S2D_TRAIN, t) + ["--resume", str(f), "--data", f"{t}/nodata"], _valid_torch),
    In(("train", "s2d", "init"), "init.pt", TORCH,
       lambda f, t: _fill(S2D_TRAIN, t) + ["--init", str(f), "--config", str(write_tiny_config(t)), "--data",
                                           str(write_tiny_data(t / "d", vertices=False))], _valid_torch),
    In(("train", "s2d", "vertices"), "vid0.npy", NPY,
       lambda f, t: _fill(S2D_TRAIN, t) + ["--config", str(write_tiny_config(t)), "--data",
                                           str(write_tiny_data(t / "d", videos=1, vertices=False)),
                                           "--vertices", _vdir_as(t, f, "vid0.npy")], _valid_npy),
    In(("train", "s2d", "data"), "vid0.mp4", ("random", "empty", "truncated"),
       lambda f, t: _fill(S2D_TRAIN, t) + ["--config", str(write_tiny_config(t)), "--data", _data_with(t, f)],
       _valid_mp4),
    In(("s2d-overlay", "vertices"), "v.npy", NPY,
       lambda f, t: ["s2d-overlay", "--video", _clip(t), "--size", "128x128", "--vertices", str(f), "-o", f"{t}/ov"],
       _valid_npy),
    In(("s2d-overlay", "video"), "v.mp4", VIDEO,
       lambda f, t: ["s2d-overlay", "--video", str(f), "--vertices", f"{t}/none.npy", "-o", f"{t}/ov"], _valid_mp4),
    In(("conformance", "paths"), "tiny.pt", TORCH, lambda f, t: ["conformance", _with_partner(f)], _valid_torch),
    In(("regress", "baseline"), "b.json", ("random", "empty", "json-list", "folder", "baseline-string",
                                           "baseline-list-entry", "baseline-tolerance"),
       lambda f, t: ["regress", str(GOLDEN_RUN), "--baseline", str(f)]),
    In(("regress", "run_dir"), "run.json", ("random", "empty", "json-list"),
       lambda f, t: ["regress", _run_with(t, f), "--baseline", f"{t}/b.json", "--update-baseline"]),
    In(("report", "run_dir"), "run.json", ("random", "empty", "json-list"),
       lambda f, t: ["report", _run_with(t, f), "--out", f"{t}/rep"]),
    In(("compare", "run_a"), "run.json", ("random", "empty", "json-list", "folder"),
       lambda f, t: ["compare", _run_with(t, f), str(GOLDEN_RUN)]),
    In(("compare", "run_b"), "afile", ("random",), lambda f, t: ["compare", str(GOLDEN_RUN), str(f)]),
    In(("status", "run_dir"), "afile", ("random", "empty"), lambda f, t: ["status", str(f)]),
    In(("bdrate", "csv"), "rd.csv", ("random", "empty", "text", "folder"),
       lambda f, t: ["bdrate", str(f), "--anchor", "a", "--test", "b", "--metric", "psnr"]),
    In(("report", "docx_meta"), "meta.yaml", YAML,
       lambda f, t: ["report", str(GOLDEN_RUN), "--out", f"{t}/rep", "--docx-meta", str(f)]),
    In(("report", "subjective"), "subjective_result.json", ("random", "empty", "json-list", "folder"),
       lambda f, t: ["report", str(GOLDEN_RUN), "--out", f"{t}/rep", "--subjective", str(f), "--format", "md"]),
    In(("report", "manifest"), "m.yaml", YAML,
       lambda f, t: ["report", str(GOLDEN_RUN), "--out", f"{t}/rep", "--manifest", str(f), "--format", "viewer"]),
    In(("subjective", "analyse", "scores"), "scores.csv", ("random", "empty", "text", "folder"),
       lambda f, t: ["subjective", "analyse", str(f), "--out", f"{t}/s"]),
    In(("subjective", "prepare", "run_dir"), "run.json", ("random", "empty", "json-list"),
       lambda f, t: ["subjective", "prepare", _run_with(t, f), "--method", "acr-hr", "--out", f"{t}/s"]),
    In(("subjective", "prepare", "manifest"), "m.yaml", YAML,
       lambda f, t: ["subjective", "prepare", str(GOLDEN_RUN), "--method", "acr-hr", "--out", f"{t}/s",
                     "--manifest", str(f)]),
    In(("import", "manifest"), "import.yaml", YAML, lambda f, t: ["import", f"{t}/r", "--manifest", str(f)]),
    In(("import", "condition"), "c.yaml", YAML,
       lambda f, t: ["import", f"{t}/r", "--ahg", str(t), "--codec", "x", "--condition", str(f),
                     "--description", "test"]),
    In(("import", "sequences"), "seqs.yaml", ("random", "empty", "yaml-list", "folder"),
       lambda f, t: ["import", f"{t}/r", "--ahg", str(t), "--codec", "x", "--condition", "demo",
                     "--description", "test", "--sequences", str(f)]),
]


def _vdir_as(tmp: Path, f: Path, name: str) -> str:
    (tmp / "verts").mkdir(exist_ok=True)
    shutil.move(str(f), tmp / "verts" / name)
    return str(tmp / "verts")


def _with_partner(pt: Path) -> str:
    """A conformance vector is a .pt and a .json of one stem; the .json here is well formed."""
    pt.with_suffix(".json").write_text(json.dumps({"model": "fomm", "modules": {}, "inputs": {}, "outputs": {}}))
    return str(pt)


# Folder options: a file where the folder belongs, and a missing folder.
FOLDERS: list[tuple[tuple[str, ...], Callable[[Path, Path], list[str]]]] = [
    (("run", "vtm_dir"), lambda d, t: ["run", "--vtm-dir", str(d), "--dry-run", "--workdir", f"{t}/r"]),
    (("doctor", "vtm_dir"), lambda d, t: ["doctor", "--vtm-dir", str(d)]),
    (("run", "weights_dir"), lambda d, t: ["run", "--weights-dir", str(d), "--dry-run", "--workdir", f"{t}/r"]),
    (("metrics", "weights_dir"), lambda d, t: ["metrics", _clip(t), _clip(t), "--size", "128x128", "--weights-dir",
                                               str(d)]),
    (("weights", "install", "dir"), lambda d, t: ["weights", "install", str(d), "--dest", f"{t}/w"]),
    (("models", "install", "dir"), lambda d, t: ["models", "install", str(d), "--dest", f"{t}/m"]),
    (("train", "CODEC", "data"), lambda d, t: ["train", "fomm", "--data", str(d), "--out", f"{t}/t", "--steps", "1"]),
    (("train", "s2d", "data"), lambda d, t: _fill(S2D_TRAIN, t) + ["--data", str(d)]),
    (("train", "s2d", "source_variants"), lambda d, t: _fill(S2D_TRAIN, t) + ["--data", f"{t}/nodata",
                                                                               "--source-variants", str(d)]),
    (("status", "run_dir"), lambda d, t: ["status", str(d)]),
    (("report", "run_dir"), lambda d, t: ["report", str(d), "--out", f"{t}/rep"]),
    (("import", "ahg"), lambda d, t: ["import", f"{t}/r", "--ahg", str(d), "--codec", "x", "--condition", "demo",
                                      "--description", "test"]),
    (("subjective", "prepare", "run_dir"), lambda d, t: ["subjective", "prepare", str(d), "--method", "acr-hr",
                                                         "--out", f"{t}/s"]),
]


def _input_cases() -> list:
    return [pytest.param(row, kind, id=f"{'-'.join(row.option)}[{row.name}]-{kind}")
            for row in INPUTS for kind in row.kinds]


@pytest.mark.parametrize("row, kind", _input_cases())
def test_bad_input_file_is_one_line(row: In, kind: str, tmp_path, capsys):
    bad = make(kind, tmp_path / "bad" / row.name, row.valid)
    argv = row.argv(bad, tmp_path)
    capsys.readouterr()
    one_line(capsys, main(argv), *row.words)


@pytest.mark.parametrize("option, argv", [pytest.param(o, a, id="-".join(o)) for o, a in FOLDERS])
@pytest.mark.parametrize("what", ["a-file", "missing"])
def test_bad_input_folder_is_one_line(option, argv, what, tmp_path, capsys):
    d = tmp_path / "in"
    if what == "a-file":
        d.write_bytes(b"\x00" * 10)
    one_line(capsys, main(argv(d, tmp_path)))


def test_install_of_junk_files_refuses_each_by_name(tmp_path, capsys):
    """`weights install` / `models install` of junk named like a known file: REFUSED per file, exit 1 (docs)."""
    from gfvc import models

    (tmp_path / "w").mkdir()
    (tmp_path / "w" / "vgg16-397923af.pth").write_bytes(b"junk" * 100)
    assert main(["weights", "install", str(tmp_path / "w"), "--dest", str(tmp_path / "wd")]) == 1
    assert "REFUSED" in capsys.readouterr().out and not (tmp_path / "wd" / "vgg16-397923af.pth").exists()
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / models.registry().entries[0].filename).write_bytes(b"junk" * 100)
    assert main(["models", "install", str(tmp_path / "m"), "--dest", str(tmp_path / "md")]) == 1
    assert "REFUSED" in capsys.readouterr().out


# --- outputs: checked before any work ---------------------------------------------------------------------

@dataclass(frozen=True)
class Out:
    option: tuple[str, ...]
    argv: Callable[[str, Path], list[str]]
    folder: bool   # the option names a folder (else a file)
    words: str


def _setup_data(t: Path) -> str:
    return str(write_tiny_data(t / "d", videos=1, frames=3, vertices=False))


OUTPUTS: list[Out] = [
    Out(("run", "workdir"), lambda o, t: ["run", "--workdir", o, "-j", "1"], True, "run folder"),
    Out(("sequences", "prepare", "out"), lambda o, t: ["sequences", "prepare", str(t), "--out", o], True, "--out"),
    Out(("sequences", "prepare", "manifest"),
        lambda o, t: ["sequences", "prepare", str(t), "--out", f"{t}/seq", "--manifest", o], False, "manifest"),
    Out(("encode", "output"), lambda o, t: ["encode", "--codec", "vvenc", "--qp", "37", _clip(t), "--size", "128x128",
                                            "-o", o], False, "-o"),
    Out(("decode", "output"), lambda o, t: ["decode", _clip(t), "-o", o], False, "-o"),
    Out(("metrics", "cache_dir"), lambda o, t: ["metrics", _clip(t), _clip(t), "--size", "128x128", "--cache-dir", o],
        True, "--cache-dir"),
    Out(("weights", "install", "dest"), lambda o, t: ["weights", "install", str(t), "--dest", o], True, "--dest"),
    Out(("weights", "fetch", "dest"), lambda o, t: ["weights", "fetch", "--dest", o], True, "--dest"),
    Out(("models", "install", "dest"), lambda o, t: ["models", "install", str(t), "--dest", o], True, "--dest"),
    Out(("models", "fetch", "dest"), lambda o, t: ["models", "fetch", "--dest", o], True, "--dest"),
    Out(("report", "out"), lambda o, t: ["report", str(GOLDEN_RUN), "--out", o], True, "--out"),
    Out(("regress", "junit"), lambda o, t: ["regress", str(GOLDEN_RUN), "--baseline", f"{t}/b.json", "--junit", o],
        False, "--junit"),
    Out(("regress", "baseline"), lambda o, t: ["regress", str(GOLDEN_RUN), "--baseline", o, "--update-baseline"],
        False, "baseline"),
    Out(("train", "CODEC", "out"), lambda o, t: ["train", "fomm", "--config", "demo", "--data", _setup_data(t),
                                                 "--out", o, "--steps", "1", "--no-progress"], True, "--out"),
    Out(("train", "CODEC", "export"), lambda o, t: ["train", "fomm", "--config", "demo", "--data", _setup_data(t),
                                                    "--out", f"{t}/t", "--steps", "1", "--no-progress", "--export", o],
        False, "--export"),
    Out(("train", "s2d", "out"), lambda o, t: _fill(["train", "s2d", "--steps", "1", "--no-progress"], t)
        + ["--config", str(write_tiny_config(t)), "--data", _setup_data(t), "--out", o], True, "--out"),
    Out(("train", "s2d", "export"), lambda o, t: _fill(S2D_TRAIN, t) + ["--config", str(write_tiny_config(t)),
                                                                        "--data", _setup_data(t), "--export", o],
        False, "--export"),
    Out(("subjective", "prepare", "out"), lambda o, t: ["subjective", "prepare", str(GOLDEN_RUN), "--method",
                                                         "acr-hr", "--out", o], True, "--out"),
    Out(("subjective", "analyse", "out"), lambda o, t: ["subjective", "analyse", f"{t}/scores.csv", "--out", o],
        True, "--out"),
    Out(("import", "run_dir"), lambda o, t: ["import", o, "--ahg", str(t), "--codec", "x", "--condition", "demo",
                                             "--description", "test"], True, "run folder"),
    Out(("s2d-overlay", "output"), lambda o, t: ["s2d-overlay", "--video", _clip(t), "--size", "128x128",
                                                 "--vertices", f"{t}/v.npy", "-o", o], False, "-o"),
]


@pytest.fixture
def no_work(monkeypatch):
    """Replace the entry points of every command's work: reaching one fails the test."""
    import metrics.weights
    import reports.document
    import s2d_model.train
    import suite.cli.coding
    import suite.cli.models
    import suite.cli.run
    import tools.prepare
    from gfvc import models
    from reports import cli as reports_cli

    def trap(*a, **k):
        raise AssertionError("work started before the output was checked")

    for mod, name in [(suite.cli.coding, "make_codec"), (suite.cli.models, "train"), (s2d_model.train, "train"),
                      (suite.cli.run, "plan_run"), (tools.prepare, "discover"), (metrics.weights, "install"),
                      (metrics.weights, "fetch"), (models, "install"), (models, "fetch"),
                      (reports.document, "report_model"), (reports_cli, "load_run"),
                      (suite.cli.coding, "identify_bitstream")]:
        monkeypatch.setattr(mod, name, trap)


def _bad_outputs(tmp: Path, folder: bool) -> dict[str, str]:
    afile = tmp / "afile"
    afile.write_text("x")
    cases = {"under-a-file": str(afile / "sub" / ("o" if folder else "o.yuv")),
             "under-dev-null": "/dev/null/x" + ("" if folder else ".pt")}
    if folder:
        cases["existing-file"] = str(afile)
    return cases


@pytest.mark.parametrize("row", [pytest.param(r, id="-".join(r.option)) for r in OUTPUTS])
def test_every_output_is_checked_before_any_work(row: Out, tmp_path, capsys, no_work, small_condition, plugin_env):
    for case, out in _bad_outputs(tmp_path, row.folder).items():
        argv = row.argv(out, tmp_path)
        if argv[0] == "run":
            argv += ["--condition", small_condition.source]
        capsys.readouterr()
        line = one_line(capsys, main(argv), row.words)
        assert "/dev/null" in line or "afile" in line, (case, line)


# --- the tables cover every path option of the parser -----------------------------------------------------

PATH_DESTS = {"condition", "manifest", "data_dir", "vtm_dir", "vtm_cfg", "weights_dir", "model", "names_file",
              "vertices_dir", "input", "bitstream", "config", "ref", "dist", "run_dir", "dir", "run_a", "run_b",
              "baseline", "csv", "data", "vertices", "resume", "init", "source_variants", "video", "paths", "inputs",
              "workdir", "out", "output", "export", "dest", "junit", "cache_dir"}
# Options that read no user file (or read one through an option tested above), with the reason.
EXEMPT = {
    ("run", "data_dir"): "a folder that relative manifest paths resolve against: files are read by the manifest tests",
    ("doctor", "data_dir"): "same as run --data-dir",
    ("sequences", "verify", "data_dir"): "same as run --data-dir",
    ("run", "vtm_cfg"): "passed to VTM's EncoderApp, which reads it (docs/vtm.md); --dry-run does not",
    ("doctor", "vtm_cfg"): "same as run --vtm-cfg",
    ("doctor", "weights_dir"): "doctor reports what it finds there (a missing file is its output, exit 1)",
    ("doctor", "model"): "the same --model reader as run/encode (check_model_choices)",
    ("doctor", "condition"): "the same condition loader as run --condition",
    ("sequences", "verify", "condition"): "the same condition loader as run --condition",
    ("encode", "condition"): "the same condition loader as run --condition",
    ("decode", "condition"): "the same condition loader as run --condition",
    ("info", "condition"): "the same condition loader as run --condition",
    ("metrics", "condition"): "the same condition loader as run --condition",
    ("decode", "model"): "the same --model reader as encode --model",
    ("decode", "weights_dir"): "the same weights-dir check as run --weights-dir",
    ("encode", "weights_dir"): "the same weights-dir check as run --weights-dir",
    ("info", "weights_dir"): "the same weights-dir check as run --weights-dir",
    ("weights", "status", "weights_dir"): "status lists what it finds (a bad file is a row)",
    ("models", "status", "weights_dir"): "status lists what it finds (a bad file is a row)",
    ("train", "CODEC", "weights_dir"): "the losses' VGG19 is sha256-verified through the weight registry",
    ("encode", "vtm_dir"): "the same --vtm-dir check as run",
    ("decode", "vtm_dir"): "the same --vtm-dir check as run",
    ("encode", "vtm_cfg"): "same as run --vtm-cfg",
    ("decode", "vtm_cfg"): "same as run --vtm-cfg",
    ("report", "data_dir"): "same as run --data-dir (the viewer's original sequences)",
    ("subjective", "prepare", "data_dir"): "same as run --data-dir",
    ("import", "data_dir"): "same as run --data-dir",
    ("import", "weights_dir"): "the same weights-dir check as run --weights-dir",
}


def _leaf_options() -> set[tuple[str, ...]]:
    out: set[tuple[str, ...]] = set()

    def walk(p: argparse.ArgumentParser, path: tuple[str, ...]) -> None:
        subs = [a for a in p._actions if isinstance(a, argparse._SubParsersAction)]
        if not subs:
            trained = path[:1] == ("train",) and path[1:] != ("s2d",)
            key = ("train", "CODEC") if trained else path
            for a in p._actions:
                if a.nargs != 0 and (a.dest in PATH_DESTS or a.type is Path):
                    out.add((*key, a.dest))
        for s in subs:
            for name, sp in s.choices.items():
                walk(sp, (*path, name))

    walk(build_parser(), ())
    return out


def test_tables_cover_every_path_option_of_every_command():
    tested = {r.option for r in INPUTS} | {o for o, _ in FOLDERS} | {r.option for r in OUTPUTS}
    assert not tested & set(EXEMPT), f"exempt but tested: {sorted(tested & set(EXEMPT))}"
    covered = tested | set(EXEMPT)
    missing = sorted(_leaf_options() - covered)
    assert not missing, f"options that read or write files without a bad-file test: {missing}"
    stale = sorted(covered - _leaf_options())
    assert not stale, f"table rows for options the parser no longer has: {stale}"


# --- a frame that fails mid-training ------------------------------------------------------------------------

def test_s2d_training_stops_in_one_line_at_a_bad_frame_and_keeps_its_checkpoint(tmp_path, capsys):
    cfg = write_tiny_config(tmp_path)
    data = write_tiny_data(tmp_path / "d", videos=1, frames=4, vertices=False)
    out = tmp_path / "t"
    base = ["train", "s2d", "--config", str(cfg), "--data", str(data), "--out", str(out), "--no-progress",
            "--checkpoint-every", "1"]
    assert main(base + ["--steps", "1"]) == 0
    ck = out / "checkpoint.pt"
    before = ck.read_bytes()
    frame = data / "train" / "vid0" / "00002.png"
    good = frame.read_bytes()
    frame.write_bytes(good[:-60])  # the header is intact (passes the check before training), the data is cut
    capsys.readouterr()
    line = one_line(capsys, main(base + ["--steps", "3", "--resume", str(ck)]), str(frame),
                    "corrupt or truncated PNG", "training stopped at step 1", f"--resume {ck}")
    assert "the last checkpoint" in line and ck.read_bytes() == before
    frame.write_bytes(good)  # fixed: the same command resumes from the kept checkpoint
    capsys.readouterr()
    assert main(base + ["--steps", "3", "--resume", str(ck)]) == 0
    assert json.loads(capsys.readouterr().out)["step"] == 3


def test_training_data_with_a_foreign_file_is_refused_before_training(tmp_path, capsys, monkeypatch):
    import s2d_model.train

    cfg = write_tiny_config(tmp_path)
    data = write_tiny_data(tmp_path / "d", videos=1, frames=4, vertices=False)
    (data / "train" / "vid0" / "00004.png").write_text("not a picture")
    monkeypatch.setattr(s2d_model.train, "Sparse2Dense", lambda *a, **k: pytest.fail("model built before the check"))
    one_line(capsys, main(["train", "s2d", "--config", str(cfg), "--data", str(data), "--out", str(tmp_path / "t"),
                           "--steps", "1", "--no-progress"]), "00004.png", "not a PNG file")
