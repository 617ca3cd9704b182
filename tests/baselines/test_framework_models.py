"""Checkpoint choice for every generative codec: --model, the condition's models: section, s2d's
variables, installed registry checkpoints; sha256 pins; job keys that ignore how a file was chosen;
the registry and `gfvc models status|install|fetch` (fetch against a local HTTP server)."""
from __future__ import annotations

import hashlib
import http.server
import json
import shutil
import threading
from pathlib import Path

import framework_codecs as fc
import numpy as np
import pytest
import yaml

from gfvc import models
from gfvc.codec import Environment
from gfvc.errors import ChecksumError, ConfigError, NotAvailable, WeightsError
from gfvc.provenance import identity_provenance
from gfvc.records import stable_hash
from gfvc.video import write_png_folder
from suite.cli.main import main
from suite.runner.plan import plan_run
from test_conditions import load_condition


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("tinyck")
    return {"a": fc.make_checkpoint(d / "a.pt", seed=0), "b": fc.make_checkpoint(d / "b.pt", seed=1)}


def _condition(tmp_path: Path, models_section: dict | None = None, name: str = "c.yaml") -> Path:
    demo = load_condition("demo")
    d = demo.to_dict()
    d["manifest"] = str(demo.manifest_path)
    d["codecs"] = [fc.NAME]
    d.pop("models", None)
    if models_section is not None:
        d["models"] = models_section
    p = tmp_path / name
    p.write_text(yaml.safe_dump(d))
    return p


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


# ----------------------------------------------------------------------------- choice

def test_parse_model_args():
    assert models.parse_model_args(["mraa=/x/a.pth", " fomm = b.tar "]) == {"mraa": "/x/a.pth", "fomm": "b.tar"}
    for bad in (["mraa"], ["=x"], ["mraa="]):
        with pytest.raises(ConfigError, match="CODEC=PATH"):
            models.parse_model_args(bad)
    with pytest.raises(ConfigError, match="twice"):
        models.parse_model_args(["a=1", "a=2"])


def test_precedence_of_the_choice(ckpts, tmp_path, monkeypatch):
    cond = load_condition(_condition(tmp_path, {fc.NAME: {"path": "rel/a.pt"}}))
    (tmp_path / "rel").mkdir()
    shutil.copy(ckpts["a"], tmp_path / "rel" / "a.pt")
    monkeypatch.setenv("GFVC_TINY", str(ckpts["b"]))
    ch = models.choose(fc.NAME, cond, Environment(models={fc.NAME: str(ckpts["b"])}), None, "GFVC_TINY")
    assert (ch.source, ch.path) == ("--model", ckpts["b"])
    ch = models.choose(fc.NAME, cond, Environment(extra={"tiny": str(ckpts["b"])}), None, "GFVC_TINY", extra_key="tiny")
    assert ch.source == "Environment.extra['tiny']"
    ch = models.choose(fc.NAME, cond, Environment(), None, "GFVC_TINY")
    assert (ch.source, ch.path) == ("condition", tmp_path / "rel" / "a.pt")  # relative to the YAML
    ch = models.choose(fc.NAME, load_condition("demo"), Environment(), None, "GFVC_TINY")
    assert ch.source == "$GFVC_TINY"
    monkeypatch.delenv("GFVC_TINY")
    ch = models.choose(fc.NAME, load_condition("demo"), Environment(), ckpts["a"], "GFVC_TINY")
    assert ch.source == "default"
    with pytest.raises(NotAvailable, match=f"--model {fc.NAME}=PATH"):
        models.choose(fc.NAME, load_condition("demo"), Environment(), None)


def test_pinned_sha256_is_enforced_whichever_way_the_file_is_chosen(ckpts, tmp_path, capsys):
    pin = _sha(ckpts["a"])
    cond = load_condition(_condition(tmp_path, {fc.NAME: {"path": str(ckpts["a"]), "sha256": pin}}))
    codec = fc.TinyKPCodec(cond, Environment())
    assert codec.model_checksum() == pin
    with pytest.raises(ChecksumError, match="pins"):  # --model names another file: refused
        fc.TinyKPCodec(cond, Environment(models={fc.NAME: str(ckpts["b"])})).model_checksum()
    copy = tmp_path / "elsewhere.pt"  # the same file somewhere else: accepted
    shutil.copy(ckpts["a"], copy)
    assert fc.TinyKPCodec(cond, Environment(models={fc.NAME: str(copy)})).model_checksum() == pin
    # a pin alone (no path): --model must bring the pinned file
    only_pin = load_condition(_condition(tmp_path, {fc.NAME: {"sha256": _sha(ckpts["b"])}}, "p.yaml"))
    with pytest.raises(ChecksumError):
        fc.TinyKPCodec(only_pin, Environment(models={fc.NAME: str(ckpts["a"])})).check()
    # through the CLI: one line, exit 2, no output file
    frames = tmp_path / "in"
    write_png_folder(frames, np.full((3, 128, 128, 3), 90, np.uint8))
    out = tmp_path / "x.gfvc"
    rc = main(["encode", str(frames), "--codec", fc.NAME, "--qp", "32", "-o", str(out),
               "--condition", str(tmp_path / "c.yaml"), "--model", f"{fc.NAME}={ckpts['b']}"])
    err = capsys.readouterr().err
    assert rc == 2 and "pins" in err and err.count("\n") == 1 and not out.exists()


def test_condition_models_section_is_validated_and_not_in_the_fingerprint(ckpts, tmp_path):
    plain = load_condition(_condition(tmp_path))
    with_models = load_condition(_condition(tmp_path, {fc.NAME: {"path": "/somewhere/a.pt",
                                                                 "sha256": "ab" * 32}}, "m.yaml"))
    assert plain.fingerprint == with_models.fingerprint
    assert with_models.with_overrides(frames=3).models == with_models.models
    for bad, msg in (({fc.NAME: {"path": "a", "sha256": "xyz"}}, "64 hex"), ({fc.NAME: {"file": "a"}}, "unknown key"),
                     ({fc.NAME: {}}, "give a path"), ({fc.NAME: "a.pt"}, "expected a mapping")):
        with pytest.raises(ConfigError, match=msg):
            load_condition(_condition(tmp_path, bad, "bad.yaml"))


def test_model_names_are_checked(ckpts, tmp_path, capsys):
    frames = tmp_path / "in"
    write_png_folder(frames, np.full((2, 128, 128, 3), 90, np.uint8))
    for arg, msg in (("vvenc=x.pt", "takes no checkpoint"), ("nosuch=x.pt", "unknown codec")):
        rc = main(["encode", str(frames), "--codec", fc.NAME, "--qp", "32", "-o", str(tmp_path / "o.gfvc"),
                   "--model", arg])
        assert rc == 2 and msg in capsys.readouterr().err
    bad = _condition(tmp_path, {"vvenc": {"path": "x.pt"}}, "v.yaml")
    assert main(["run", "--condition", str(bad), "--dry-run", "--workdir", str(tmp_path / "w")]) == 2
    assert "takes no checkpoint" in capsys.readouterr().err


def test_same_file_chosen_two_ways_gives_the_same_job_keys(ckpts, tmp_path):
    via_condition = load_condition(_condition(tmp_path, {fc.NAME: {"path": str(ckpts["a"])}}))
    copy = tmp_path / "copy" / "renamed.pt"
    copy.parent.mkdir()
    shutil.copy(ckpts["a"], copy)
    a = plan_run(via_condition, tmp_path / "r1", Environment(), check=False)
    b = plan_run(load_condition(_condition(tmp_path, name="plain.yaml")), tmp_path / "r2",
                 Environment(models={fc.NAME: str(copy)}), check=False)
    assert a.jobs and [j.key for j in a.jobs] == [j.key for j in b.jobs]
    pa, pb = a.codecs[fc.NAME], b.codecs[fc.NAME]
    assert pa["checkpoint_source"] == "condition" and pb["checkpoint_source"] == "--model"
    assert pa["checkpoint_sha256"] == pb["checkpoint_sha256"] == _sha(ckpts["a"])
    c = plan_run(via_condition, tmp_path / "r3", Environment(models={fc.NAME: str(ckpts["b"])}), check=False)
    assert {j.key for j in c.jobs}.isdisjoint({j.key for j in a.jobs})  # another checkpoint: other results


# ----------------------------------------------------------------------------- s2d

@pytest.fixture(scope="module")
def s2d_ckpts(tmp_path_factory) -> dict[str, Path]:
    from test_s2d_codec import _ckpt

    d = tmp_path_factory.mktemp("s2dck")
    return {"a": _ckpt(d / "a.pt", seed=0), "b": _ckpt(d / "b.pt", seed=1)}


def test_s2d_uses_the_shared_choice(s2d_ckpts, tmp_path, monkeypatch):
    from s2d_model import DEMO_CHECKPOINT
    from s2d_model.codec import S2DCodec

    demo = load_condition("demo")
    a = str(s2d_ckpts["a"])
    assert S2DCodec(demo, Environment(models={"s2d": a})).choice.source == "--model"
    assert S2DCodec(demo, Environment(extra={"s2d_checkpoint": a})).checkpoint == s2d_ckpts["a"]
    monkeypatch.setenv("GFVC_S2D_CHECKPOINT", a)
    assert S2DCodec(demo, Environment()).choice.source == "$GFVC_S2D_CHECKPOINT"
    monkeypatch.delenv("GFVC_S2D_CHECKPOINT")
    assert S2DCodec(demo, Environment()).checkpoint == DEMO_CHECKPOINT
    cond = load_condition(_condition(tmp_path, {"s2d": {"path": a, "sha256": _sha(s2d_ckpts["b"])}}))
    with pytest.raises(ChecksumError, match="pins"):
        S2DCodec(cond, Environment()).check()
    p1 = S2DCodec(demo, Environment(models={"s2d": a})).provenance()
    p2 = S2DCodec(demo, Environment(extra={"s2d_checkpoint": a})).provenance()
    assert p1["checkpoint_sha256"] == p2["checkpoint_sha256"] == p1["model_checksum"] == _sha(s2d_ckpts["a"])
    assert p1["checkpoint_source"] != p2["checkpoint_source"]
    assert stable_hash(identity_provenance(p1)) == stable_hash(identity_provenance(p2))


def _clip(tmp_path: Path) -> Path:
    from test_s2d_networks import moving_square_video

    d = tmp_path / "clip"
    write_png_folder(d, moving_square_video(3, 128))
    return d


@pytest.mark.parametrize("codec", ["s2d", fc.NAME])
def test_stream_decoded_with_another_checkpoint_is_refused(codec, s2d_ckpts, ckpts, fake_intra, tmp_path, capsys):
    files = s2d_ckpts if codec == "s2d" else ckpts
    bs, dec = tmp_path / "s.gfvc", tmp_path / "dec.mp4"
    assert main(["encode", str(_clip(tmp_path)), "--codec", codec, "--qp", "32", "-o", str(bs),
                 "--model", f"{codec}={files['a']}"]) == 0
    capsys.readouterr()
    assert main(["decode", str(bs), "-o", str(dec), "--model", f"{codec}={files['b']}"]) == 2
    err = capsys.readouterr().err
    assert "needs model" in err and err.count("\n") == 1
    assert not dec.exists() and not list(tmp_path.glob(".dec*"))  # nothing written, no temporaries left
    out = tmp_path / "dec_png"
    assert main(["decode", str(bs), "-o", str(out), "--model", f"{codec}={files['a']}"]) == 0
    assert len(list(out.glob("*.png"))) == 3


# ----------------------------------------------------------------------------- registry

def test_shipped_registry_is_consistent():
    from suite.cli.models import TRAINABLE

    reg = models.load_registry()
    known = set(TRAINABLE) | {"s2d"}
    assert reg.entries and {e.codec for e in reg.entries} <= known
    assert set(reg.without_public_checkpoint) <= known
    covered = {e.codec for e in reg.entries} | set(reg.without_public_checkpoint)
    assert covered == known  # every generative codec of the paper is either listed or said to have none
    for e in reg.entries:
        assert e.urls or e.pages, e.name
        assert e.hash_source and e.licence, e.name
        if e.sha256 is None and e.md5 is None:
            assert e.hash_source.startswith("unknown"), e.name  # unknown hashes are said plainly
        else:
            assert e.hash_source.split(":")[0] in ("official", "third-party copy") or "third party" in e.hash_source


def _registry_file(tmp_path: Path, entries: list[dict]) -> models.Registry:
    base = {"codec": fc.NAME, "image_size": 128, "config": "demo", "description": "t", "pages": ["https://example"],
            "urls": [], "size": None, "sha256": None, "md5": None, "hash_source": "unknown: test", "licence": "test"}
    p = tmp_path / "reg.json"
    p.write_text(json.dumps({"schema": 1, "checkpoints": [{**base, **e} for e in entries]}))
    return models.load_registry(p)


def test_registry_validation(tmp_path):
    with pytest.raises(ConfigError, match="64 hex"):
        _registry_file(tmp_path, [{"name": "x", "filename": "x.pt", "sha256": "abc"}])
    with pytest.raises(ConfigError, match="duplicate"):
        _registry_file(tmp_path, [{"name": "x", "filename": "x.pt"}, {"name": "x", "filename": "y.pt"}])


def test_status_install_and_automatic_choice(ckpts, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("GFVC_MODELS_DIR", str(tmp_path / "cache"))
    good, other = ckpts["a"], ckpts["b"]
    md5 = hashlib.md5(other.read_bytes()).hexdigest()  # noqa: S324
    reg = _registry_file(tmp_path, [
        {"name": "tiny-good", "filename": "good.pt", "sha256": _sha(good), "size": good.stat().st_size,
         "hash_source": "official: test"},
        {"name": "tiny-md5", "filename": "md5.pt", "md5": md5, "image_size": 64, "hash_source": "third party: test"},
        {"name": "tiny-unknown", "filename": "unknown.pt", "image_size": 32},
        {"name": "tiny-bad", "filename": "bad.pt", "sha256": "0" * 64, "image_size": 16, "hash_source": "official: t"},
    ])
    monkeypatch.setattr(models, "registry", lambda: reg)
    src = tmp_path / "downloads"
    src.mkdir()
    for name, f in (("good.pt", good), ("md5.pt", other), ("unknown.pt", other), ("bad.pt", other)):
        shutil.copy(f, src / name)
    rows = {r.entry.name: r for r in models.install(src)}
    assert rows["tiny-good"].state == "verified" and rows["tiny-md5"].state == "md5-verified"
    assert rows["tiny-unknown"].state == "unverified" and _sha(other) in rows["tiny-unknown"].reason
    assert rows["tiny-bad"].state == "mismatch" and not (tmp_path / "cache" / fc.NAME / "bad.pt").exists()
    assert (tmp_path / "cache" / fc.NAME / "good.pt").read_bytes() == good.read_bytes()
    assert main(["models", "install", str(src)]) == 1  # one refused file -> exit 1
    assert "REFUSED" in capsys.readouterr().out
    st = {r.entry.name: r.state for r in models.status()}
    assert st == {"tiny-good": "verified", "tiny-md5": "md5-verified", "tiny-unknown": "unverified",
                  "tiny-bad": "missing"}
    assert main(["models", "status", "--json"]) == 0
    js = json.loads(capsys.readouterr().out)
    assert {c["name"]: c["usable"] for c in js["checkpoints"]}["tiny-good"] is True
    # the installed checkpoint at the condition's size is found without --model, and identified
    codec = fc.TinyKPCodec(load_condition("demo"), Environment())
    assert codec.choice.source == "installed:tiny-good"
    assert codec.model_id() == "tiny-good" and codec.provenance()["checkpoint_registry"] == "tiny-good"
    (tmp_path / "cache" / fc.NAME / "good.pt").write_bytes(other.read_bytes())  # modified after install
    with pytest.raises(ChecksumError, match="model registry"):
        fc.TinyKPCodec(load_condition("demo"), Environment()).check()


class _Server:
    """A local HTTP server on 127.0.0.1 serving one folder (the only network the tests use)."""

    def __init__(self, root: Path) -> None:
        handler = lambda *a, **k: http.server.SimpleHTTPRequestHandler(*a, directory=str(root), **k)  # noqa: E731
        http.server.SimpleHTTPRequestHandler.log_message = lambda *a: None  # type: ignore[method-assign]
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> _Server:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def test_fetch_from_a_local_server(ckpts, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("GFVC_MODELS_DIR", str(tmp_path / "cache"))
    served = tmp_path / "www"
    served.mkdir()
    shutil.copy(ckpts["a"], served / "a.pt")
    shutil.copy(ckpts["b"], served / "wrong.pt")
    with _Server(served) as srv:
        reg = _registry_file(tmp_path, [
            {"name": "tiny-a", "filename": "a.pt", "sha256": _sha(ckpts["a"]), "hash_source": "official: t",
             "urls": [f"{srv.url}/missing.pt", f"{srv.url}/a.pt"]},
            {"name": "tiny-wrong", "filename": "w.pt", "sha256": _sha(ckpts["a"]), "hash_source": "official: t",
             "urls": [f"{srv.url}/wrong.pt"], "image_size": 64},
            {"name": "tiny-free", "filename": "f.pt", "urls": [f"{srv.url}/wrong.pt"]},
            {"name": "tiny-manual", "filename": "m.pt", "image_size": 16},
        ])
        monkeypatch.setattr(models, "registry", lambda: reg)
        rows = models.fetch(["tiny-a", "tiny-free"])
        assert [r.state for r in rows] == ["verified", "unverified"]
        assert (tmp_path / "cache" / fc.NAME / "a.pt").read_bytes() == ckpts["a"].read_bytes()
        assert "already there" in models.fetch(["tiny-a"])[0].reason
        with pytest.raises(WeightsError, match="could not download w.pt.*sha256"):
            models.fetch(["tiny-wrong"])
        assert not list((tmp_path / "cache" / fc.NAME).glob("w.pt*"))  # no partial or wrong file
        with pytest.raises(NotAvailable, match="no direct download URL.*https://example"):
            models.fetch(["tiny-manual"])
        assert main(["models", "fetch", "tiny-free", "--dest", str(tmp_path / "d2")]) == 0
        assert (tmp_path / "d2" / fc.NAME / "f.pt").is_file()
        capsys.readouterr()
        assert main(["models", "fetch", "tiny-wrong", "--dest", str(tmp_path / "d3")]) == 2
        err = capsys.readouterr().err
        # the "downloading ..." progress line, then one error line
        assert "could not download" in err and [ln for ln in err.splitlines() if ln.startswith("gfvc: error")] == [
            err.splitlines()[-1]] and not [ln for ln in err.splitlines() if not ln.startswith("gfvc: ")]
    reg2 = _registry_file(tmp_path, [{"name": "tiny-off", "filename": "o.pt", "urls": ["http://127.0.0.1:9/o.pt"]}])
    monkeypatch.setattr(models, "registry", lambda: reg2)
    with pytest.raises(WeightsError, match="install DIR"):
        models.fetch(["tiny-off"], timeout=5)


def test_every_record_carries_the_checkpoint_sha256(ckpts, small_condition, fake_intra, tmp_path, capsys):
    """`gfvc run --model CODEC=PATH`: each job record names the checkpoint by its sha256 (not its path)."""
    work = tmp_path / "run"
    rc = main(["run", "--condition", str(small_condition.source), "--codec", fc.NAME, "--frames", "2", "-j", "1",
               "--workdir", str(work), "--no-report", "--no-save-decoded", "--model", f"{fc.NAME}={ckpts['a']}"])
    assert rc == 0, capsys.readouterr().err
    recs = [json.loads(p.read_text()) for p in (work / "records").glob("*.json")]
    assert len(recs) == 2 and all(r["status"] == "ok" for r in recs)
    for r in recs:
        prov = r["provenance"]["codec"]
        assert prov["checkpoint_sha256"] == prov["model_checksum"] == _sha(ckpts["a"])
        assert prov["checkpoint_source"] == "--model" and prov["config"]["name"] == "demo"


def test_docs_list_every_registry_checkpoint():
    text = (Path(__file__).resolve().parents[2] / "docs" / "baselines.md").read_text()
    for e in models.load_registry().entries:
        assert f"`{e.name}`" in text, f"docs/baselines.md does not list registry checkpoint {e.name}"


def test_identity_drops_only_machine_local_keys():
    prov = {"checkpoint_source": "--model", "checkpoint_path": "/x/a.pt", "checkpoint_sha256": "ab",
            "config": {"modules": {"generator": {"use_deformed_source": True}}}}
    assert identity_provenance(prov) == {"checkpoint_sha256": "ab",
                                         "config": {"modules": {"generator": {"use_deformed_source": True}}}}
