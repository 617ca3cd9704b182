"""`gfvc info CODEC` for every generative codec: values per inter frame, quantisation scale,
resolution, checkpoint (path, how chosen, sha256), configuration and parameters per module;
`--config NAME` without any checkpoint; `--json`; one-line errors."""
from __future__ import annotations

import hashlib
import json

import framework_codecs as fc
import pytest

import baselines.registry  # noqa: F401
from baselines.base import BaselineCodec
from gfvc.codec import CODECS, load_builtin_codecs
from suite.cli.main import main

load_builtin_codecs()
BASELINES = sorted(n for n in CODECS.names()
                   if isinstance(CODECS.get(n), type) and issubclass(CODECS.get(n), BaselineCodec))


def _json(capsys, *args: str) -> dict:
    assert main(["info", *args, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_s2d_with_its_checkpoint_and_by_config(capsys):
    from s2d_model import DEMO_CHECKPOINT

    info = _json(capsys, "s2d")
    ck = info["checkpoint"]
    assert ck["sha256"] == hashlib.sha256(DEMO_CHECKPOINT.read_bytes()).hexdigest()
    assert ck["source"] == "default" and ck["path"] == str(DEMO_CHECKPOINT)
    assert info["values_per_inter_frame"] == 45 and info["quant_scale"] == 64.0 and info["resolution"] == [128, 128]
    assert info["parameters"]["keypoint_detector"] > 0
    assert main(["info", "s2d", "--config", "small"]) == 0
    text = capsys.readouterr().out
    assert "none (configuration only, --config)" in text and "values per frame: 45" in text
    assert "resolution:       128x128" in text and "keypoint_detector" in text


def test_baseline_with_a_chosen_checkpoint(tmp_path, capsys):
    path = fc.make_checkpoint(tmp_path / "t.pt")
    info = _json(capsys, fc.NAME, "--model", f"{fc.NAME}={path}")
    ck = info["checkpoint"]
    assert ck["source"] == "--model" and ck["path"] == str(path.resolve())
    assert ck["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest() and ck["config_from"] == "embedded"
    assert info["values_per_inter_frame"] == fc.DIM and info["resolution"] == [128, 128]
    assert info["config"]["name"] == "demo" and set(info["parameters"]) == {"analyser", "synth"}
    assert info["parameters"]["analyser"] == 3 * 4 * 25 + 4 + 2 * 4 + 4 * fc.DIM + fc.DIM


@pytest.mark.parametrize("name", BASELINES)
@pytest.mark.parametrize("config", ["demo", "official"])
def test_every_baseline_by_named_config(name, config, capsys):
    cls = CODECS.get(name)
    info = _json(capsys, name, "--config", config)
    cfg = cls.named_configs()[config]
    assert info["checkpoint"] is None and info["config"]["name"] == cfg.name
    assert info["values_per_inter_frame"] == cls.values_per_frame(cfg) > 0
    assert info["quant_scale"] == float(cls.quant_scale) > 0
    assert info["resolution"] == [cfg.image_size, cfg.image_size]
    assert set(cls.inference_modules) <= set(info["parameters"])
    assert all(v > 0 for v in info["parameters"].values())
    assert "demo" in info["named_configs"] and "official" in info["named_configs"]


def test_errors_are_one_line(capsys):
    for args, msg in ((["vvenc"], "is an anchor"), (["nosuch"], "unknown codec"),
                      ([fc.NAME, "--config", "nosuch"], "no configuration 'nosuch'"),
                      ([fc.NAME], "has no checkpoint")):
        assert main(["info", *args]) == 2
        err = capsys.readouterr().err
        assert msg in err and err.count("\n") == 1, err
