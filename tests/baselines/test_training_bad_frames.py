"""`gfvc train CODEC` with a frame that cannot be read (issue 16, class 5), on the tiny framework recipe.

A frame whose header is fine but whose data is cut passes the check before
training and fails when it is first sampled: one line naming the file and the
step, the last checkpoint untouched, and the same command resumes once the
file is fixed. A file that is not a PNG at all, frames of two sizes, or an
ambiguous numbering are refused before any model is built. Outputs
(`--out` an existing file, `--export /dev/null/x.pt`) are refused before
training, not after it.
"""
from __future__ import annotations

import json
from pathlib import Path

import framework_codecs as fc
import numpy as np
import pytest
from cli_errors import one_line_error
from PIL import Image

from gfvc.video import write_png_folder
from model_parts.training import TRAIN_CHECKPOINT
from suite.cli.main import main


def _data(root: Path) -> Path:
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 255, (5, 64, 64, 3), dtype=np.uint8)
    write_png_folder(root / "train" / "a", frames)
    return root


def _args(data: Path, out: Path, steps: int, *extra: str) -> list[str]:
    return ["train", fc.NAME, "--data", str(data), "--out", str(out), "--steps", str(steps), "--batch", "2",
            "--config", "small64", "--checkpoint-every", "1", "--no-progress", *extra]


def test_a_frame_cut_mid_training_is_one_line_and_the_checkpoint_resumes(tmp_path, capsys):
    data, out = _data(tmp_path / "d"), tmp_path / "t"
    assert main(_args(data, out, 1)) == 0
    ck = out / TRAIN_CHECKPOINT
    before = ck.read_bytes()
    frame = data / "train" / "a" / "00003.png"
    good = frame.read_bytes()
    frame.write_bytes(good[:-80])
    capsys.readouterr()
    line = one_line_error(capsys, main(_args(data, out, 3, "--resume", str(ck))), str(frame),
                          "corrupt or truncated PNG", "training stopped at step 1", f"--resume {ck}")
    assert "the last checkpoint" in line and ck.read_bytes() == before
    frame.write_bytes(good)
    capsys.readouterr()
    assert main(_args(data, out, 3, "--resume", str(ck))) == 0
    assert json.loads(capsys.readouterr().out)["steps"] == 3


@pytest.mark.parametrize("damage, words", [
    ("text", ("00004.png", "not a PNG file")),
    ("size", ("00004.png is 32x32", "one size")),
    ("ambiguous", ("4.png", "00004.png", "ambiguous")),
    ("jpeg", ("extra.jpg", "not PNG")),
])
def test_bad_frame_folders_are_refused_before_training(damage, words, tmp_path, capsys, monkeypatch):
    import suite.cli.models

    data = _data(tmp_path / "d")
    folder = data / "train" / "a"
    if damage == "text":
        (folder / "00004.png").write_text("not a picture")
    elif damage == "size":
        Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(folder / "00004.png")
    elif damage == "ambiguous":
        (folder / "4.png").write_bytes((folder / "00004.png").read_bytes())
    else:
        Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(folder / "extra.jpg")
    real = suite.cli.models.RECIPES.get(fc.NAME)

    class NoBuild(real):  # the models must not be built before the data are checked
        def build(self):
            raise AssertionError("models built before the data were checked")

    monkeypatch.setattr(suite.cli.models.RECIPES, "get", lambda name: NoBuild)
    one_line_error(capsys, main(_args(data, tmp_path / "t", 1)), *words)


@pytest.mark.parametrize("option, value, words", [
    ("--export", "/dev/null/x.pt", ("--export", "/dev/null is a file")),
    ("--out", "FILE", ("--out", "exists and is not a folder")),
])
def test_outputs_are_refused_before_training(option, value, words, tmp_path, capsys, monkeypatch):
    import suite.cli.models

    afile = tmp_path / "afile"
    afile.write_text("x")
    monkeypatch.setattr(suite.cli.models, "train", lambda *a, **k: pytest.fail("training started"))
    args = _args(_data(tmp_path / "d"), tmp_path / "t", 1)
    if option == "--out":
        args[args.index("--out") + 1] = str(afile)
    else:
        args += [option, value]
    one_line_error(capsys, main(args), *words)
