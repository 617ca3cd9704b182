"""`gfvc conformance`: per model and per output the max |diff| against the tolerance, PASS/FAIL, exit
0 only when everything passes; a malformed vector (unknown model, missing tensor, file without its
partner, shape mismatch) is one line and exit 2. Tested on a vector of the tiny framework model made
here and doctored copies of it, and on one shipped official-code vector."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import framework_codecs as fc
import pytest
import torch

import baselines.registry  # noqa: F401  (registers the suite's runners)
from baselines.conformance import VECTOR_MODELS, shipped_vectors_dir
from suite.cli.main import main


def _make_vector(folder: Path, name: str = "tiny") -> tuple[Path, Path]:
    """A vector in the shared format, produced by the tiny model itself (so it passes)."""
    torch.manual_seed(0)
    kwargs = {"analyser": {"width": 4}, "synth": {"width": 4}}
    mods = {"analyser": fc.Analyser(**kwargs["analyser"]).eval(), "synth": fc.Synth(**kwargs["synth"]).eval()}
    inputs = {"source": torch.rand(1, 3, 32, 32), "driving": torch.rand(1, 3, 32, 32)}
    with torch.no_grad():
        outs = fc.TinyKPVectors().run(mods, inputs, {})
    folder.mkdir(parents=True, exist_ok=True)
    pt, js = folder / f"{name}.pt", folder / f"{name}.json"
    torch.save({"state_dicts": {k: m.state_dict() for k, m in mods.items()}, "inputs": inputs, "outputs": outs}, pt)
    meta = {"model": fc.NAME, "official_repository": "test/tiny", "official_commit": "0" * 40,
            "modules": {k: {"class": f"tiny.{k}", "kwargs": v} for k, v in kwargs.items()},
            "outputs": {k: {"shape": list(v.shape), "suggested_atol_end_to_end": 1e-5} for k, v in outs.items()}}
    js.write_text(json.dumps(meta))
    return pt, js


def _run(capsys, *args: str) -> tuple[int, str, str]:
    rc = main(["conformance", *args])
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def test_passing_vector_text_and_json(tmp_path, capsys):
    pt, _ = _make_vector(tmp_path / "v")
    rc, out, _ = _run(capsys, str(tmp_path / "v"))
    assert rc == 0
    assert f"{fc.NAME}: PASS" in out and "features.driving" in out and "max|diff|" in out and "atol 1e-05" in out
    rc, out, _ = _run(capsys, str(pt), "--json")
    res = json.loads(out)
    assert rc == 0 and res["passed"] and res["vectors"][0]["model"] == fc.NAME
    assert {o["name"] for o in res["vectors"][0]["outputs"]} == {"features.source", "features.driving", "prediction"}
    assert all(o["max_abs_diff"] == 0.0 for o in res["vectors"][0]["outputs"])


def test_doctored_output_fails_with_exit_1(tmp_path, capsys):
    pt, js = _make_vector(tmp_path)
    data = torch.load(pt, weights_only=True)
    data["outputs"]["prediction"] = data["outputs"]["prediction"] + 1e-3
    torch.save(data, pt)
    rc, out, _ = _run(capsys, str(pt))
    assert rc == 1
    line = next(ln for ln in out.splitlines() if ln.strip().startswith("prediction"))
    assert "FAIL" in line and "0.001" in line and f"{fc.NAME}: FAIL" in out
    rc, out, _ = _run(capsys, str(js), "--json")
    assert rc == 1 and json.loads(out)["passed"] is False


@pytest.mark.parametrize("damage, message", [
    ("unknown_model", "unknown conformance model 'nosuch'"),
    ("missing_output", "output 'prediction' listed in tiny.json is missing"),
    ("missing_input", "'driving' needed by the tiny-kp call sequence is missing"),
    ("missing_state_dict", "no state_dict for module 'synth'"),
    ("output_shape", "output 'prediction' has shape (1, 3, 32, 32), tiny.json says (1, 3, 16, 16)"),
    ("weight_shape", "tensors of other shapes"),
    ("no_partner", "no such file"),
    ("not_torch", "cannot be read as a torch file"),
])
def test_malformed_vector_is_one_line_exit_2(damage, message, tmp_path, capsys):
    pt, js = _make_vector(tmp_path)
    data = torch.load(pt, weights_only=True)
    meta = json.loads(js.read_text())
    if damage == "unknown_model":
        meta["model"] = "nosuch"
    elif damage == "missing_output":
        del data["outputs"]["prediction"]
    elif damage == "missing_input":
        del data["inputs"]["driving"]
    elif damage == "missing_state_dict":
        del data["state_dicts"]["synth"]
    elif damage == "output_shape":
        meta["outputs"]["prediction"]["shape"] = [1, 3, 16, 16]
    elif damage == "weight_shape":
        meta["modules"]["analyser"]["kwargs"]["width"] = 5
    elif damage == "no_partner":
        pt.unlink()
    elif damage == "not_torch":
        pt.write_text("not a torch file")
    if pt.exists() and damage != "not_torch":
        torch.save(data, pt)
    js.write_text(json.dumps(meta))
    rc, _, err = _run(capsys, str(js if damage == "no_partner" else pt))
    assert rc == 2 and message in err and err.count("\n") == 1, err


def test_paths_that_are_not_vectors(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    rc, _, err = _run(capsys, str(tmp_path / "empty"))
    assert rc == 2 and "no conformance vectors" in err
    (tmp_path / "x.txt").write_text("x")
    rc, _, err = _run(capsys, str(tmp_path / "x.txt"))
    assert rc == 2 and "not a conformance vector" in err


def test_shipped_vector_through_the_cli(tmp_path, capsys):
    """One shipped official-code vector end to end (each model's own test file checks its vector)."""
    if "fomm" not in VECTOR_MODELS:  # pragma: no cover - the FOMM port is part of the suite
        pytest.fail("the fomm conformance runner is not registered")
    for ext in ("pt", "json"):
        shutil.copy(shipped_vectors_dir() / f"fomm.{ext}", tmp_path / f"fomm.{ext}")
    rc, out, _ = _run(capsys, str(tmp_path))
    assert rc == 0 and "fomm: PASS" in out and "generator.prediction" in out
