"""Issue 16, class 7: messages that name the right thing, and commands that say what they did not do."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest
from cli_errors import one_line_error
from PIL import Image

from gfvc import container
from gfvc.errors import ConfigError, InputError, ModelMismatch
from suite.cli.main import MAY_DOWNLOAD, build_parser, leaf_commands, main

# ------------------------------------------------------------------ sizes: the side that differs is named

@pytest.mark.parametrize("codec", ["fomm", "s2d"])
def test_encode_names_the_input_size_not_the_condition(tmp_path, capsys, codec):
    png = tmp_path / "in64"
    png.mkdir()
    for i in range(2):
        Image.fromarray(np.full((64, 64, 3), 40 * i, np.uint8)).save(png / f"{i:03d}.png")
    rc = main(["encode", str(png), "-o", str(tmp_path / "o.bin"), "--codec", codec, "--qp", "32"])
    err = one_line_error(capsys, rc, f"input {png} is 64x64", "works at 128x128", "condition 'demo' is 128x128")
    assert "condition 'demo' is 64x64" not in err


# ------------------------------------------------------------------ model ids

def test_same_model_id_other_checkpoint_shows_what_differs():
    hdr = container.Header(codec="fomm", model_id="fomm-demo", model_checksum="a" * 16, width=128, height=128,
                           frames=2, fps_num=25, fps_den=1, feature_coder=1, feature_dim=60, quant_scale=64.0,
                           key_qp=32)
    with pytest.raises(ModelMismatch) as e:
        container.check_compatible(hdr, codec="fomm", model_id="fomm-demo", model_checksum="b" * 64,
                                   feature_dim=60, quant_scale=64.0)
    msg = str(e.value)
    assert "a" * 16 in msg and "b" * 16 in msg and "another checkpoint under the same id" in msg
    assert "but codec 'fomm' has model 'fomm-demo'" not in msg  # never "needs X ... but has X"


def test_derived_model_id_never_equals_a_shipped_id(tmp_path):
    from model_parts.checkpoint import derived_model_id

    src = tmp_path / "checkpoint.pth.tar"
    src.write_bytes(b"trained")
    a = derived_model_id("fomm", tmp_path / "fomm-demo.pt", src)
    assert a.startswith("fomm-demo-") and len(a) == len("fomm-demo-") + 8 and a != "fomm-demo"
    assert derived_model_id("fomm", tmp_path / "mine.pt", src).startswith("fomm-mine-")
    src.write_bytes(b"trained more")
    assert derived_model_id("fomm", tmp_path / "fomm-demo.pt", src) != a


def test_trained_file_without_id_gets_one_that_differs_from_the_shipped_one(tmp_path):
    """Files exported before ids were derived (no model_id, a training record) are told apart by sha256."""
    import torch

    from baselines.base import CHECKPOINT_DIR
    from gfvc.codec import Environment, get_codec
    from test_conditions import load_condition

    st = torch.load(CHECKPOINT_DIR / "fomm-demo.pt", map_location="cpu", weights_only=True)
    del st["gfvc"]["model_id"]
    p = tmp_path / "old-export.pt"
    torch.save(st, p)
    c = get_codec("fomm")(load_condition("demo"), Environment(models={"fomm": str(p)}))
    assert c.model_id().startswith("fomm-demo-") and c.model_id() != "fomm-demo"


def test_train_export_records_a_derived_id(tmp_path, monkeypatch):
    """`gfvc train CODEC --export` without --model-id stores the derived id (training itself stubbed)."""
    import suite.cli.models as cli_models

    ckpt = tmp_path / "out" / "checkpoint.pth.tar"
    ckpt.parent.mkdir()
    ckpt.write_bytes(b"state")
    seen = {}
    monkeypatch.setattr(cli_models, "train", lambda recipe, opts: {"checkpoint": str(ckpt)})
    monkeypatch.setattr(cli_models, "export", lambda *a, **k: seen.update(k))
    rc = main(["train", "fomm", "--data", str(tmp_path), "--out", str(tmp_path / "out"), "--steps", "1",
               "--config", "demo", "--export", str(tmp_path / "fomm-demo.pt"), "--no-progress"])
    assert rc == 0 and seen["meta"]["model_id"].startswith("fomm-demo-") and seen["meta"]["model_id"] != "fomm-demo"


# ------------------------------------------------------------------ conformance

def test_conformance_names_the_missing_file_itself(tmp_path, capsys):
    one_line_error(capsys, main(["conformance", str(tmp_path / "missing.pt")]), "missing.pt: no such file or folder")
    (tmp_path / "m.json").write_text("{}")
    err = one_line_error(capsys, main(["conformance", str(tmp_path / "m.json")]), "m.pt: no such file",
                         "m.json needs it")
    assert "m.json: no such" not in err


def test_conformance_json_errors_are_json(tmp_path, capsys):
    rc = main(["conformance", "--json", str(tmp_path / "missing.pt")])
    out = capsys.readouterr().out
    assert rc == 2
    data = json.loads(out)
    assert data["passed"] is False and data["error"]["type"] == "InputError"
    assert "missing.pt" in data["error"]["message"]


# ------------------------------------------------------------------ models status

def test_models_status_unknown_codec_is_exit_2_with_suggestions(capsys):
    one_line_error(capsys, main(["models", "status", "--codec", "fom"]), "--codec 'fom'", "did you mean fomm")
    assert main(["models", "status", "--codec", "fomm"]) == 0


# ------------------------------------------------------------------ resume below the checkpoint's step

def test_resume_with_steps_below_the_checkpoint_is_refused(capsys):
    from model_parts.training import check_resume_steps

    with pytest.raises(ConfigError, match="is at step 200 but --steps 100 is below it.*--steps above 200"):
        check_resume_steps("ck.pth.tar", 200, 100)
    check_resume_steps("ck.pth.tar", 200, 200)
    assert "already at step 200" in capsys.readouterr().err
    check_resume_steps("ck.pth.tar", 200, 300)
    assert capsys.readouterr().err == ""


def test_generic_trainer_refuses_before_loading_data(tmp_path):
    """The check runs on the resumed state, before the data folder is even read."""
    import torch

    from model_parts import checkpoint as ck
    from model_parts.training import TrainOptions, train

    class Recipe:
        model = "fomm"
        config = None

    state = {ck.META_KEY: {"model": "fomm", "config": {}}, "gfvc_train": {"step": 50}}
    p = tmp_path / "ck.pth.tar"
    torch.save(state, p)
    with pytest.raises(ConfigError, match="is at step 50 but --steps 10"):
        train(Recipe(), TrainOptions(data=tmp_path / "none", out=tmp_path / "o", steps=10, resume=p))  # type: ignore[arg-type]


# ------------------------------------------------------------------ reference vertices

@pytest.mark.parametrize("make, words", [
    (lambda a: np.full_like(a, np.nan), "frames have finite vertices"),
    (lambda a: a * 300.0, "inside the frame"),
])
def test_implausible_reference_vertices_are_refused_in_one_line(tmp_path, make, words):
    from gfvc.vertices import NUM_VERTICES
    from tools.prepare import read_vertex_folder

    rng = np.random.default_rng(0)
    good = rng.uniform(-0.8, 0.8, size=(4, NUM_VERTICES, 2)).astype(np.float32)
    np.save(tmp_path / "talk.npy", good)
    assert read_vertex_folder(tmp_path, "talk", 4).shape == (4, NUM_VERTICES, 2)
    np.save(tmp_path / "talk.npy", make(good))
    with pytest.raises(InputError) as e:
        read_vertex_folder(tmp_path, "talk", 4)
    assert words in str(e.value) and str(tmp_path / "talk.npy") in str(e.value) and "\n" not in str(e.value)


# ------------------------------------------------------------------ --offline on every downloading command

def test_every_command_that_may_download_takes_offline():
    leaves = leaf_commands(build_parser())
    downloading = [p for p in leaves if p[0] in MAY_DOWNLOAD]
    assert ("train", "fomm") in downloading and ("train", "s2d") in downloading and ("run",) in downloading
    for path in downloading:
        assert "--offline" in leaves[path]._option_string_actions, path


def test_train_codec_offline_turns_downloads_off(tmp_path, monkeypatch):
    import suite.cli.models as cli_models
    from gfvc.download import offline

    monkeypatch.delenv("GFVC_OFFLINE", raising=False)
    seen = {}

    def fake_train(recipe, opts):
        seen["offline"] = offline()
        return {"checkpoint": str(tmp_path / "c")}

    monkeypatch.setattr(cli_models, "train", fake_train)
    assert main(["train", "fomm", "--data", str(tmp_path), "--out", str(tmp_path / "o"), "--steps", "1",
                 "--config", "demo", "--offline", "--no-progress"]) == 0
    assert seen["offline"] is True
    assert isinstance(build_parser(), argparse.ArgumentParser)
    assert Path(tmp_path).is_dir()
