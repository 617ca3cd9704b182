"""Issue 16, class 4: an official checkpoint without configuration is recognised by its keys and shapes.

One matcher (baselines.matching) over every named configuration of every baseline codec: a file whose
layout fits exactly one is used with it (provenance and `gfvc info` say which and why); several that the
condition's size cannot tell apart are named with how to choose; another codec's file is named as such.
"""
from __future__ import annotations

import framework_codecs as fc
import pytest
import torch

import baselines.registry  # noqa: F401  (registers the codecs)
from baselines import matching
from baselines.base import BaselineConfig
from baselines.listings import read_listing
from gfvc.codec import Environment
from gfvc.errors import ConfigError, ModelMismatch
from suite.cli.main import main
from test_conditions import load_condition

# (official listing, codec, condition size, configuration the file must be detected as)
LISTINGS = [
    ("fomm_vox256", "fomm", 256, "official"),
    ("fv2v_vox256", "fv2v", 256, "vox256"),
    ("cfte_vox256", "cfte", 256, "official"),
    ("cfte_vox256", "cfte", 384, "official-384"),
    ("lia_256", "lia", 256, "official"),
    ("lia_256", "lia", 384, "ted384-resample"),
    ("mraa_ted384", "mraa", 384, "official"),
    ("mraa_ted384", "mraa", 256, "vox256"),
    ("tpsm_ted384", "tpsm", 384, "official"),
    ("tpsm_ted384", "tpsm", 256, "vox256"),
    ("mttf_ted384", "mttf", 384, "official"),
]


def listing_shapes(name: str) -> dict[str, dict[str, tuple[int, ...]]]:
    """The {module: {key: shape}} of an official checkpoint, from its listing (what a random file in the
    official layout holds; the matcher reads nothing else)."""
    return {m: dict(keys) for m, keys in read_listing(name).items()}


def test_every_listing_is_covered():
    from baselines.listings import LISTING_DIR

    assert {p.stem for p in LISTING_DIR.glob("*.txt")} == {name for name, *_ in LISTINGS}


@pytest.mark.parametrize("listing, codec, size, expected", LISTINGS)
def test_official_layout_detects_its_configuration(listing, codec, size, expected):
    cfg, how = matching.choose_config(codec, listing_shapes(listing), size, f"{listing}.pth")
    assert cfg is not None and cfg.name == expected and cfg.image_size == size
    assert how.startswith("detected: keys and shapes match") and expected in how


def test_gfvc_software_fv2v_layout_is_the_official_gfvc_configuration():
    """The GFVC software's FV2V file (kp_detector scale 1: no anti-alias buffer) is `official` (= `gfvc`)."""
    shapes = listing_shapes("fv2v_vox256")
    del shapes["kp_detector"]["down.weight"]
    cfg, how = matching.choose_config("fv2v", shapes, 256, "FV2V-checkpoint.pth.tar")
    assert cfg.name == "official" and "official = gfvc" in how


def test_every_named_configuration_of_every_codec_is_recognised():
    """The class: for each distinct architecture of each baseline (plug-ins included), a file with its
    layout is detected as it at its own size, or refused naming it among the candidates."""
    seen = 0
    for codec, names, cfg in matching.known_configs():
        shapes = matching._layout(codec, cfg.fingerprint())
        try:
            got, how = matching.choose_config(codec, shapes, cfg.image_size, "f")
        except ModelMismatch as e:  # several at the same size: each named, with the way to choose
            assert names[0] in str(e) and "--model-config" in str(e)
            continue
        assert got is not None and got.fingerprint() == cfg.fingerprint(), (codec, names, how)
        seen += 1
    assert seen >= 25


def test_a_file_of_another_codec_says_which_codec_it_is():
    with pytest.raises(ModelMismatch) as e:
        matching.choose_config("cfte", listing_shapes("fomm_vox256"), 256, "vox-cpk.pth.tar")
    msg = str(e.value)
    assert "not a cfte checkpoint" in msg and "fomm official (256 px)" in msg and "--model fomm=FILE" in msg
    assert "\n" not in msg


def test_a_file_that_fits_nothing_falls_back_to_the_strict_load_message():
    shapes = listing_shapes("fomm_vox256")
    shapes["kp_detector"]["kp.weight"] = (11, 32, 7, 7)  # another keypoint count
    assert matching.choose_config("fomm", shapes, 256, "f") == (None, "")


# ------------------------------------------------------------------ through the codec (tiny plug-in codec)

def _cond(size: int):
    return load_condition("demo").with_overrides(width=size, height=size)


def test_codec_uses_the_detected_configuration(tmp_path):
    p = fc.make_checkpoint(tmp_path / "small.pt", config="small64", meta=False)  # official layout, no config
    c = fc.TinyKPCodec(_cond(64), Environment(models={fc.NAME: str(p)}))
    c.check()
    assert c.config().name == "small64" and c.resolution == (64, 64)
    prov = c.provenance()
    assert prov["config_from"].startswith("detected") and "small64" in prov["config_from"]
    # the same layout at 128 px is the demo configuration (same widths, the condition's size decides)
    assert fc.TinyKPCodec(_cond(128), Environment(models={fc.NAME: str(p)})).config().name == "demo"
    # the explanation is machine-local: the same file chosen another way gives the same job key
    from gfvc.provenance import identity_provenance

    assert "config_from" not in identity_provenance(prov)


def test_several_candidates_are_named_with_how_to_choose(tmp_path, monkeypatch):
    p = fc.make_checkpoint(tmp_path / "d.pt", config="demo", meta=False)
    real = fc.TinyKPCodec.named_configs

    def more(cls=fc.TinyKPCodec):
        d = real()
        twin = d["demo"].to_dict()
        twin.update(name="demo-b", options={"other": True})  # same layout and size, another architecture
        return {**d, "demo-b": BaselineConfig.from_dict(twin)}

    monkeypatch.setattr(fc.TinyKPCodec, "named_configs", classmethod(lambda cls: more()))
    with pytest.raises(ModelMismatch) as e:
        fc.TinyKPCodec(_cond(128), Environment(models={fc.NAME: str(p)})).config()
    msg = str(e.value)
    assert "demo (128 px)" in msg and "demo-b (128 px)" in msg and f"--model-config {fc.NAME}=demo" in msg
    env = Environment(models={fc.NAME: str(p)}, extra={"model_configs": {fc.NAME: "demo-b"}})
    c = fc.TinyKPCodec(_cond(128), env)
    assert c.config().name == "demo-b" and c._cfg_how == "named:demo-b"
    # the condition's models: config names a configuration too
    cond = _cond(128)
    cond = cond.with_overrides(models={fc.NAME: {"path": str(p), "config": "demo-b"}})
    assert fc.TinyKPCodec(cond, Environment()).config().name == "demo-b"


def test_info_shows_the_detected_configuration_and_refuses_unknown_names(tmp_path, capsys):
    p = fc.make_checkpoint(tmp_path / "o.pt", config="official", meta=False)
    assert main(["info", fc.NAME, "--model", f"{fc.NAME}={p}"]) == 0
    out = capsys.readouterr().out
    assert "config from:    detected: keys and shapes match only" in out and "official" in out
    assert main(["info", fc.NAME, "--model", f"{fc.NAME}={p}", "--model-config", f"{fc.NAME}=nosuch"]) == 2
    err = capsys.readouterr().err
    assert "has no configuration 'nosuch'" in err and err.count("\n") == 1


def test_model_config_names_are_validated_like_model_names():
    from suite.cli.common import check_model_choices

    with pytest.raises(ConfigError, match="--model-config: codec 'fomm' has no configuration 'vox256'"):
        check_model_choices(Environment(extra={"model_configs": {"fomm": "vox256"}}), load_condition("demo"))
    check_model_choices(Environment(extra={"model_configs": {"mraa": "vox256"}}), load_condition("demo"))


def test_suite_checkpoints_still_use_their_embedded_configuration(tmp_path):
    p = fc.make_checkpoint(tmp_path / "s.pt", config="small64", meta=True)
    c = fc.TinyKPCodec(_cond(64), Environment(models={fc.NAME: str(p)}))
    assert c.config().name == "small64" and c._cfg_how == "embedded"
    assert torch.load(p, weights_only=True)["gfvc"]["config"]["name"] == "small64"


def test_a_file_of_an_unknown_width_names_the_known_configurations(tmp_path):
    mods = fc.TinyKPCodec.build_modules(fc._cfg(6, 128, "w6"))
    p = tmp_path / "w6.pt"
    torch.save({k: m.state_dict() for k, m in mods.items()}, p)
    with pytest.raises(ModelMismatch) as e:
        fc.TinyKPCodec(_cond(128), Environment(models={fc.NAME: str(p)})).check()
    msg = str(e.value)
    assert "fit none of the known tiny-kp configurations (official, demo, small64)" in msg
    assert f"--model-config {fc.NAME}=FILE.yaml" in msg and "another configuration" not in msg and "\n" not in msg


@pytest.mark.slow
def test_official_mraa_vox256_file_under_the_face_condition(tmp_path, capsys):
    """A random file in the official MRAA layout (280 MB, tensors from the listing) is vox256 at 256 px."""
    obj = {m: {k: (torch.zeros(s, dtype=torch.long) if k.endswith("num_batches_tracked") else torch.randn(s) * 0.01)
               for k, s in keys.items()} for m, keys in read_listing("mraa_ted384").items()}
    obj["epoch"] = 0
    p = tmp_path / "vox256.pth"
    torch.save(obj, p)
    del obj
    assert main(["info", "mraa", "--model", f"mraa={p}", "--condition", "gfvc-face"]) == 0
    out = capsys.readouterr().out
    assert "resolution:       256x256" in out and "vox256 is the one at the condition's 256x256" in out
