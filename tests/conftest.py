"""Shared fixtures. Tests run single-threaded torch to keep 2-core CI predictable."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

os.environ.setdefault("OMP_NUM_THREADS", "1")
# Tests never download weight files (CI has no internet; a download would make a test slow and its
# result depend on the network). tests/test_weights_fetch.py turns this off against a loopback server.
os.environ.setdefault("GFVC_OFFLINE", "1")

try:
    import torch

    torch.set_num_threads(1)
except ImportError:  # pragma: no cover
    pass

TESTS = Path(__file__).resolve().parent
pytest_plugins = ["isolation"]  # @pytest.mark.isolated: the test runs in a child process (tests/isolation.py)


@pytest.fixture
def small_condition(tmp_path: Path):
    """The demo condition cut to 4 frames, PSNR/SSIM only, two QPs, test codecs."""
    from test_conditions import load_condition

    demo = load_condition("demo")
    d = demo.to_dict()
    d.update(frames=4, codecs=["test-lossy"], manifest=str(demo.manifest_path))
    d["anchor"]["qps"] = [37, 42]
    d["generative"]["key_frame_qps"] = [32, 42]
    d["metrics"]["names"] = ["psnr", "ssim"]
    d["name"] = "small"
    p = tmp_path / "small.yaml"
    p.write_text(yaml.safe_dump(d))
    return load_condition(p)


@pytest.fixture
def plugin_env(monkeypatch):
    """Make the test-only codecs visible to the CLI and to worker processes."""
    monkeypatch.setenv("GFVC_PLUGINS", "codecs_for_tests")
    monkeypatch.setenv("PYTHONPATH", str(TESTS) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    import codecs_for_tests  # noqa: F401


@pytest.fixture
def fake_intra(monkeypatch: pytest.MonkeyPatch):
    """Replace anchors.intra by test_generative.FakeIntra (fast, no ffmpeg) for generative-codec tests."""
    from test_generative import FakeIntra

    import anchors.intra

    fake = FakeIntra()
    for fn in ("encode_intra", "decode_intra", "intra_provenance"):
        monkeypatch.setattr(anchors.intra, fn, getattr(fake, fn))
    return fake
