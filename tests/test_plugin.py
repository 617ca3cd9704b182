"""A codec in another package plugs in through the ``gfvc.codecs`` entry-point group.

The plug-in package is written to tmp_path with a hand-made ``*.dist-info``
(METADATA + entry_points.txt): exactly what pip installs, and what
importlib.metadata reads, without touching the venv. A slow test does the same
with a real ``pip install`` of a pyproject-based package.
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest
from test_generative import FakeIntra, demo_condition  # noqa: F401

from gfvc import container
from gfvc.codec import CODECS, RatePoint, Sequence

PLUGIN_MODULE = "gfvc_plugin_brightness"
PLUGIN_NAME = "plugin-brightness"

PLUGIN_SOURCE = textwrap.dedent(f'''
    """A third-party generative codec: one feature per frame (mean brightness)."""
    import hashlib

    import numpy as np

    from gfvc.generative import GenerativeCodec


    class BrightnessCodec(GenerativeCodec):
        name = "{PLUGIN_NAME}"
        description = "plug-in example: key frame + per-frame brightness"
        feature_dim = 1
        quant_scale = 4.0

        def model_id(self):
            return "brightness-v1"

        def model_checksum(self):
            return hashlib.sha256(b"brightness-v1").hexdigest()

        def load(self):
            pass

        def analyse(self, frames):
            return frames.reshape(frames.shape[0], -1).mean(axis=1, keepdims=True).astype(np.float32)

        def synthesise(self, key_frame, key_features, features):
            delta = features[:, 0] - key_features[0]
            out = key_frame[None].astype(np.float32) + delta[:, None, None, None]
            return np.clip(np.rint(out), 0, 255).astype(np.uint8), {{}}
''')


def _write_plugin(root: Path) -> None:
    (root / f"{PLUGIN_MODULE}.py").write_text(PLUGIN_SOURCE)
    info = root / f"{PLUGIN_MODULE}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {PLUGIN_MODULE}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[gfvc.codecs]\n{PLUGIN_NAME} = {PLUGIN_MODULE}:BrightnessCodec\n")
    (info / "top_level.txt").write_text(PLUGIN_MODULE + "\n")


@pytest.fixture
def plugin_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "site"
    root.mkdir()
    _write_plugin(root)
    monkeypatch.syspath_prepend(str(root))
    # let the registry scan entry points again; restore its state afterwards
    monkeypatch.setattr(CODECS, "_entry_points_loaded", False)
    monkeypatch.setattr(CODECS, "_items", dict(CODECS._items))
    monkeypatch.setattr(CODECS, "_origins", dict(CODECS._origins))
    yield root
    sys.modules.pop(PLUGIN_MODULE, None)


def test_entry_point_codec_encodes_and_decodes(plugin_path: Path, tmp_path: Path, fake_intra: FakeIntra) -> None:
    eps = [ep.name for ep in metadata.entry_points(group="gfvc.codecs")]
    assert PLUGIN_NAME in eps
    assert PLUGIN_NAME in CODECS.names()
    assert "entry point" in CODECS.origin(PLUGIN_NAME)
    cls = CODECS.get(PLUGIN_NAME)
    codec = cls(demo_condition())
    rng = np.random.default_rng(0)
    base = rng.integers(40, 200, (16, 24, 3))
    frames = np.stack([np.clip(base + 6 * i, 0, 255) for i in range(6)]).astype(np.uint8)
    res = codec.encode(Sequence("s", frames, fps=25.0), RatePoint(37), tmp_path / "enc")
    assert container.peek(res.bitstream).codec == PLUGIN_NAME
    dec = codec.decode(res.bitstream, tmp_path / "dec")
    assert dec.frames.shape == frames.shape
    # brightness follows the sequence: frame 5 is ~30 levels brighter than frame 0
    diff = dec.frames[5].astype(float).mean() - dec.frames[0].astype(float).mean()
    assert 25 < diff < 35


def _gfvc_list(extra_path: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(extra_path), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return subprocess.run([sys.executable, "-m", "gfvc", "list"], capture_output=True, text=True,
                          env=env, timeout=120)


def test_gfvc_list_shows_plugin(tmp_path: Path) -> None:
    root = tmp_path / "site"
    root.mkdir()
    _write_plugin(root)
    out = _gfvc_list(root)
    assert out.returncode == 0, out.stderr[-2000:]
    assert PLUGIN_NAME in out.stdout
    assert "keyframe-repeat" in out.stdout


@pytest.mark.slow
def test_pip_installed_plugin(tmp_path: Path) -> None:
    """The same with a real package built and installed by pip (into a --target dir)."""
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / f"{PLUGIN_MODULE}.py").write_text(PLUGIN_SOURCE)
    (pkg / "pyproject.toml").write_text(textwrap.dedent(f'''
        [build-system]
        requires = ["setuptools>=61"]
        build-backend = "setuptools.build_meta"
        [project]
        name = "{PLUGIN_MODULE}"
        version = "0.1"
        [project.entry-points."gfvc.codecs"]
        {PLUGIN_NAME} = "{PLUGIN_MODULE}:BrightnessCodec"
        [tool.setuptools]
        py-modules = ["{PLUGIN_MODULE}"]
    '''))
    target = tmp_path / "target"
    pip = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation",
                          "--no-index", "--target", str(target), str(pkg)],
                         capture_output=True, text=True, timeout=300)
    assert pip.returncode == 0, pip.stderr[-2000:]
    out = _gfvc_list(target)
    assert out.returncode == 0, out.stderr[-2000:]
    assert PLUGIN_NAME in out.stdout
