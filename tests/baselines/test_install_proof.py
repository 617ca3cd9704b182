"""Issue 16, class 3: a registry checkpoint without a public hash is checked by its contents before it is
installed (loadable, right codec, keys and shapes of the entry's configuration, size), and wherever such a
file is used it is called UNVERIFIED (gfvc info, the run's summary, records' provenance, the report banner).
"""
from __future__ import annotations

import json
from pathlib import Path

import framework_codecs as fc
import pytest

import baselines.registry  # noqa: F401
from baselines import matching
from baselines.base import CHECKPOINT_DIR
from gfvc import models
from gfvc.codec import Environment
from gfvc.errors import ModelMismatch
from suite.cli.main import main
from test_conditions import load_condition


def _registry(tmp_path: Path, entries: list[dict]) -> models.Registry:
    base = {"codec": fc.NAME, "image_size": 128, "config": "demo", "description": "t", "pages": ["https://example"],
            "urls": [], "size": None, "sha256": None, "md5": None, "hash_source": "unknown: test", "licence": "test"}
    p = tmp_path / "reg.json"
    p.write_text(json.dumps({"schema": 1, "checkpoints": [{**base, **e} for e in entries]}))
    return models.load_registry(p)


def test_install_refuses_random_bytes_and_a_demo_file_under_a_registry_name(tmp_path, monkeypatch, capsys):
    """The issue's examples with the real registry: random bytes as `tpsm vox.pth.tar`, the 128-px
    lia-demo.pt as lia-ted; nothing is copied, exit 1, one line each."""
    monkeypatch.setenv("GFVC_MODELS_DIR", str(tmp_path / "cache"))
    src = tmp_path / "src"
    (src / "tpsm").mkdir(parents=True)
    (src / "lia").mkdir()
    (src / "tpsm" / "vox.pth.tar").write_bytes(bytes(range(256)) * 40)
    lia_demo = CHECKPOINT_DIR / "lia-demo.pt"
    (src / "lia" / "ted.pt").write_bytes(lia_demo.read_bytes())
    assert main(["models", "install", str(src)]) == 1
    out = capsys.readouterr().out.splitlines()
    tpsm = next(line for line in out if line.startswith("tpsm-vox"))
    lia = next(line for line in out if line.startswith("lia-ted"))
    assert "REFUSED" in tpsm and "cannot be read as a torch checkpoint" in tpsm
    assert "REFUSED" in lia and "embeds configuration 'demo' at 128 px" in lia
    assert not (tmp_path / "cache").exists() or not list((tmp_path / "cache").rglob("*.p*"))


def test_contents_checked_for_every_kind_of_wrong_file(tmp_path):
    reg = _registry(tmp_path, [{"name": "tiny-official", "filename": "o.pt", "config": "official"}])
    entry = reg.get("tiny-official")
    good = fc.make_checkpoint(tmp_path / "good.pt", config="official", meta=False)
    assert "keys and shapes of configuration official" in matching.inspect_entry(entry, good)
    narrow = fc.make_checkpoint(tmp_path / "narrow.pt", config="demo", meta=False)  # other widths
    with pytest.raises(ModelMismatch, match=r"is not registry checkpoint tiny-official.*tiny-kp demo \(128 px\)"):
        matching.inspect_entry(entry, narrow)
    small = fc.make_checkpoint(tmp_path / "small.pt", config="small64", meta=True)  # embeds another size
    with pytest.raises(ModelMismatch, match="embeds configuration 'small64' at 64 px"):
        matching.inspect_entry(entry, small)
    other = tmp_path / "fomm.pt"
    import torch

    torch.save({"kp_detector": {"w": torch.zeros(1)}, "generator": {"w": torch.zeros(1)}}, other)
    with pytest.raises(ModelMismatch, match="not a tiny-kp checkpoint"):
        matching.inspect_entry(entry, other)


def test_unverified_file_installs_and_is_called_unverified_where_used(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("GFVC_MODELS_DIR", str(tmp_path / "cache"))
    reg = _registry(tmp_path, [{"name": "tiny-free", "filename": "free.pt"}])
    monkeypatch.setattr(models, "registry", lambda: reg)
    src = tmp_path / "src"
    src.mkdir()
    fc.make_checkpoint(src / "free.pt", config="demo", meta=True)
    assert main(["models", "install", str(src)]) == 0
    out = capsys.readouterr().out
    assert "ok, UNVERIFIED" in out and "contents checked" in out
    # gfvc info
    assert main(["info", fc.NAME]) == 0
    out = capsys.readouterr().out
    assert "chosen by:      installed:tiny-free" in out and "verified:       unverified: UNVERIFIED" in out
    # records' provenance (machine-local: not part of the job key)
    codec = fc.TinyKPCodec(load_condition("demo"), Environment())
    prov = codec.provenance()
    assert prov["checkpoint_verification"] == "unverified" and "no public hash" in prov["checkpoint_verification_note"]
    from gfvc.provenance import identity_provenance

    assert "checkpoint_verification" not in identity_provenance(prov)
    # the run's printed summary and the report banner
    from reports.document import _model_caveats
    from suite.cli.run import _print_checkpoint_notes

    _print_checkpoint_notes({fc.NAME: prov})
    assert "is UNVERIFIED" in capsys.readouterr().out
    assert any("UNVERIFIED" in c for c in _model_caveats(fc.NAME, prov))


def test_a_file_named_like_a_registry_checkpoint_is_unverified_too(tmp_path, monkeypatch):
    reg = _registry(tmp_path, [{"name": "tiny-free", "filename": "free.pt"}])
    monkeypatch.setattr(models, "registry", lambda: reg)
    p = fc.make_checkpoint(tmp_path / "free.pt", config="demo", meta=True)
    c = fc.TinyKPCodec(load_condition("demo"), Environment(models={fc.NAME: str(p)}))
    assert c.provenance()["checkpoint_verification"] == "unverified"
    q = fc.make_checkpoint(tmp_path / "mine.pt", config="demo", meta=True)
    c = fc.TinyKPCodec(load_condition("demo"), Environment(models={fc.NAME: str(q)}))
    assert c.provenance()["checkpoint_verification"] == "own"


def test_a_file_placed_by_hand_under_a_registry_name_is_refused_at_use(tmp_path, monkeypatch):
    """Installed without `gfvc models install` (copied into the cache): its embedded size is checked."""
    monkeypatch.setenv("GFVC_MODELS_DIR", str(tmp_path / "cache"))
    reg = _registry(tmp_path, [{"name": "tiny-free", "filename": "free.pt"}])
    monkeypatch.setattr(models, "registry", lambda: reg)
    (tmp_path / "cache" / fc.NAME).mkdir(parents=True)
    fc.make_checkpoint(tmp_path / "cache" / fc.NAME / "free.pt", config="small64", meta=True)
    c = fc.TinyKPCodec(load_condition("demo"), Environment())
    assert c.choice.source == "installed:tiny-free"
    with pytest.raises(ModelMismatch, match="installed as registry checkpoint tiny-free .* holds configuration"):
        c.check()


def test_shipped_demo_checkpoints_say_so():
    from gfvc.codec import get_codec

    fomm = get_codec("fomm")(load_condition("demo"), Environment())
    assert fomm.provenance()["checkpoint_verification"] == "shipped"
