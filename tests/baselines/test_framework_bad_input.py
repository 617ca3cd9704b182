"""Bad input for every baseline, generically (parametrised over the registered BaselineCodec classes,
so models added later are covered): a checkpoint of another model, mis-shaped tensors, missing or
unexpected keys, a truncated or non-torch file, a checkpoint of another size, a stream of one
baseline decoded as another. Each is one typed error (one line, exit code 2 from the CLI) and
`gfvc encode`/`decode` leave no output file behind. Models use their small "demo" configuration."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import framework_codecs  # noqa: F401  (the tiny framework model, always present)
import numpy as np
import pytest
import torch
from test_generative import demo_condition

import baselines.registry  # noqa: F401  (registers every model module that exists)
from baselines.base import BaselineCodec
from gfvc.codec import CODECS, Environment, RatePoint, Sequence, load_builtin_codecs
from gfvc.errors import ModelMismatch
from gfvc.video import write_png_folder
from model_parts import checkpoint as ck
from suite.cli.main import main

load_builtin_codecs()
BASELINES = sorted(n for n in CODECS.names()
                   if isinstance(CODECS.get(n), type) and issubclass(CODECS.get(n), BaselineCodec))


def _other(name: str) -> str:
    return BASELINES[(BASELINES.index(name) + 1) % len(BASELINES)]


_CACHE: dict[tuple[str, int], Path] = {}


@pytest.fixture(scope="module")
def ckdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("badinput")


def _ckpt(ckdir: Path, name: str, seed: int = 0) -> Path:
    """An inference checkpoint of ``name`` at its demo configuration (random weights, suite layout)."""
    if (name, seed) not in _CACHE:
        cls = CODECS.get(name)
        cfg = cls.named_configs()["demo"]
        torch.manual_seed(seed)
        mods = cls.build_modules(cfg)
        _CACHE[(name, seed)] = ck.save_checkpoint(ckdir / f"{name}-{seed}.pt",
                                                  {m: mods[m] for m in cls.inference_modules},
                                                  {"model": name, "config": cfg.to_dict()})
    return _CACHE[(name, seed)]


def _codec(name: str, path: Path, size: int | None = None) -> Any:
    cls = CODECS.get(name)
    s = size or cls.named_configs()["demo"].image_size
    return cls(demo_condition().with_overrides(width=s, height=s), Environment(models={name: str(path)}))


def _raw(path: Path) -> dict[str, Any]:
    return torch.load(path, map_location="cpu", weights_only=True)


def _clip(tmp_path: Path, size: int, n: int = 3, height: int | None = None) -> Path:
    from test_s2d_networks import moving_square_video

    d = tmp_path / f"clip{size}x{height or size}"
    if not d.exists():
        write_png_folder(d, moving_square_video(n, size)[:, : height or size])
    return d


def _cli(capsys, *args: str) -> tuple[int, str]:
    rc = main(list(args))
    return rc, capsys.readouterr().err


def test_every_baseline_is_covered():
    assert "tiny-kp" in BASELINES and len(BASELINES) >= 2
    for n in BASELINES:
        assert "demo" in CODECS.get(n).named_configs(), f"{n}: needs a 'demo' named configuration"


@pytest.mark.parametrize("name", BASELINES)
def test_checkpoint_of_another_model(name, ckdir, tmp_path, fake_intra, capsys):
    other = _other(name)
    size = CODECS.get(name).named_configs()["demo"].image_size
    out = tmp_path / "o.gfvc"
    rc, err = _cli(capsys, "encode", str(_clip(tmp_path, size)), "--codec", name, "--qp", "32", "-o", str(out),
                   "--model", f"{name}={_ckpt(ckdir, other)}")
    assert rc == 2 and other in err and err.count("\n") == 1, err
    assert not out.exists()


@pytest.mark.parametrize("name", BASELINES)
def test_official_layout_is_recognised(name, ckdir):
    """Without the suite's metadata, the file's layout alone says which model it is (registered signature)."""
    obj = _raw(_ckpt(ckdir, name))
    del obj[ck.META_KEY]
    assert ck.looks_like(obj) == [name], f"{name}: signature matches {ck.looks_like(obj)}"


@pytest.mark.parametrize("name", BASELINES)
def test_mis_shaped_missing_and_unexpected_keys(name, ckdir, tmp_path):
    cls = CODECS.get(name)
    first = cls.inference_modules[0]
    obj = _raw(_ckpt(ckdir, name))
    sd = obj[first]
    key = next(k for k, v in sd.items() if v.is_floating_point() and v.ndim >= 1)
    sd[key] = torch.cat([sd[key], sd[key]], 0)  # another width
    torch.save(obj, tmp_path / "shape.pt")
    with pytest.raises(ModelMismatch) as e:
        _codec(name, tmp_path / "shape.pt").check()
    msg = str(e.value)
    assert "other shapes" in msg and key in msg and "\n" not in msg
    obj = _raw(_ckpt(ckdir, name))
    gone = list(obj[first])[:3]
    for k in gone:
        del obj[first][k]
    obj[first]["bogus_layer.weight"] = torch.zeros(2)
    torch.save(obj, tmp_path / "keys.pt")
    with pytest.raises(ModelMismatch) as e:
        _codec(name, tmp_path / "keys.pt").check()
    msg = str(e.value)
    assert f"{len(gone)} missing keys ({gone[0]}" in msg and "unexpected keys (bogus_layer.weight)" in msg
    assert f"looks like a {name} checkpoint" in msg and "\n" not in msg


@pytest.mark.parametrize("name", BASELINES)
def test_truncated_and_non_torch_files(name, ckdir, tmp_path, fake_intra, capsys):
    data = _ckpt(ckdir, name).read_bytes()
    (tmp_path / "half.pt").write_bytes(data[: len(data) // 2])
    (tmp_path / "text.pt").write_text("<html>Google Drive - quota exceeded</html>")
    for f in ("half.pt", "text.pt"):
        with pytest.raises(ModelMismatch, match="cannot be read as a torch checkpoint"):
            _codec(name, tmp_path / f).check()
    size = CODECS.get(name).named_configs()["demo"].image_size
    out = tmp_path / "o.gfvc"
    rc, err = _cli(capsys, "encode", str(_clip(tmp_path, size)), "--codec", name, "--qp", "32", "-o", str(out),
                   "--model", f"{name}={tmp_path / 'half.pt'}")
    assert rc == 2 and "truncated download" in err and err.count("\n") == 1 and not out.exists()


@pytest.mark.parametrize("name", BASELINES)
def test_checkpoint_of_another_size(name, ckdir, tmp_path, fake_intra, capsys):
    """A video the model cannot code (every baseline is square; LIA's documented resampling option
    adapts square sizes, so the video here is not square)."""
    size = CODECS.get(name).named_configs()["demo"].image_size
    out = tmp_path / "o.gfvc"
    rc, err = _cli(capsys, "encode", str(_clip(tmp_path, size, height=size // 2)), "--codec", name, "--qp", "32",
                   "-o", str(out), "--model", f"{name}={_ckpt(ckdir, name)}")
    assert rc == 2 and f"{size}x{size}" in err and err.count("\n") == 1 and not out.exists()


@pytest.mark.parametrize("name", BASELINES)
def test_stream_of_one_baseline_decoded_as_another(name, ckdir, tmp_path, fake_intra, capsys):
    other = _other(name)
    size = CODECS.get(other).named_configs()["demo"].image_size
    from test_s2d_networks import moving_square_video

    enc = _codec(other, _ckpt(ckdir, other), size)
    res = enc.encode(Sequence("clip", moving_square_video(3, size), 25.0), RatePoint(32), tmp_path / "enc")
    dec_size = CODECS.get(name).named_configs()["demo"].image_size
    with pytest.raises(ModelMismatch, match=f"written by codec {other!r}, not {name!r}"):
        _codec(name, _ckpt(ckdir, name), dec_size).decode(res.bitstream, tmp_path / "dec")
    # the same baseline with another checkpoint (same architecture, other weights): the model checksum
    with pytest.raises(ModelMismatch, match="needs model"):
        _codec(other, _ckpt(ckdir, other, seed=1), size).decode(res.bitstream, tmp_path / "dec2")
    # a damaged stream through the CLI: one line, exit 2, no output
    bad = tmp_path / "bad.gfvc"
    raw = res.bitstream.read_bytes()
    bad.write_bytes(raw[:-7])
    out = tmp_path / "dec.mp4"
    rc, err = _cli(capsys, "decode", str(bad), "-o", str(out), "--model", f"{other}={_ckpt(ckdir, other)}")
    assert rc == 2 and err.count("\n") == 1 and not out.exists()
    assert np.frombuffer(raw, np.uint8).size > 7
