"""Test conditions are data: loaded, validated, fingerprinted."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from gfvc.errors import ConfigError, UnknownName
from test_conditions import builtin_conditions, load_condition


def test_builtin_conditions_load():
    names = set(builtin_conditions())
    assert {"demo", "gfvc-human", "gfvc-face"} <= names
    human = load_condition("gfvc-human")
    assert (human.width, human.height, human.frames, human.fps) == (384, 384, 150, 25.0)
    assert human.anchor.qps == (37, 42, 47, 52)
    assert human.generative.key_frame_qps == (22, 32, 42, 52)
    assert human.anchor.encoder == "vtm" and human.anchor.internal_bit_depth == 8
    assert human.anchor.intra_qp_offset == 0
    demo = load_condition("demo")
    assert (demo.width, demo.height, demo.frames) == (128, 128, 32)
    assert demo.fps == pytest.approx(30000 / 1001)


def _write(tmp_path: Path, mutate) -> Path:
    d = yaml.safe_load(Path(builtin_conditions()["demo"]).read_text())
    mutate(d)
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump(d))
    return p


def test_unknown_key_names_file_and_key(tmp_path):
    p = _write(tmp_path, lambda d: d["anchor"].update(qp_list=[1]))
    with pytest.raises(ConfigError) as e:
        load_condition(p)
    assert str(p) in str(e.value) and "anchor.qp_list" in str(e.value)


@pytest.mark.parametrize("mutate, words", [
    (lambda d: d["anchor"].update(qps=[37, -1]), "QP -1"),
    (lambda d: d.update(width=127), "even"),
    (lambda d: d.update(frames="many"), "frames"),
    (lambda d: d["anchor"].update(internal_bit_depth=12), "internal_bit_depth"),
    (lambda d: d["metrics"]["fvd"].update(clip_length=4), "clip_length"),
    (lambda d: d.update(schema=9), "schema"),
    (lambda d: d.pop("width"), "width"),
])
def test_bad_values_rejected(tmp_path, mutate, words):
    with pytest.raises(ConfigError, match=words):
        load_condition(_write(tmp_path, mutate))


def test_fingerprint_changes_with_any_setting(tmp_path):
    base = load_condition("demo")
    other = load_condition(_write(tmp_path, lambda d: d["anchor"].update(intra_qp_offset=-1)))
    assert base.fingerprint != other.fingerprint
    same = load_condition(_write(tmp_path, lambda d: None))
    assert same.fingerprint == base.fingerprint  # the source path is not part of it


def test_unknown_condition_suggests():
    with pytest.raises(UnknownName, match="did you mean demo"):
        load_condition("dem")


def test_with_overrides_validates():
    c = load_condition("demo").with_overrides(frames=8)
    assert c.frames == 8
    with pytest.raises(ConfigError):
        load_condition("demo").with_overrides(frames="x")


def test_overrides_keep_relative_paths_relative_to_the_yaml(tmp_path):
    """`gfvc run --frames N` on a user's YAML must still find its manifest next to that YAML."""
    import yaml

    demo = load_condition("demo")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "m.yaml").write_text(demo.manifest_path.read_text())
    d = demo.to_dict()
    d["manifest"] = "m.yaml"
    (tmp_path / "sub" / "c.yaml").write_text(yaml.safe_dump(d))
    c = load_condition(tmp_path / "sub" / "c.yaml")
    assert c.with_overrides(frames=4).manifest_path == c.manifest_path == tmp_path / "sub" / "m.yaml"
