"""DISTS, LPIPS and FVD networks against the packages, with seeded random weights.

The real ImageNet trunks and I3D files cannot be downloaded here. These tests
build seeded random VGG16 / AlexNet / I3D weights, save them under the real
file names into a temporary $TORCH_HOME hub cache, and *monkeypatch the
registry's expected sha256/size* to those files' hashes (so the verification
path is exercised exactly as with real weights). The package references
(DISTS_pytorch.DISTS, lpips.LPIPS) load the same random trunks from that hub
cache through torchvision (which reads an existing cached file without
network), so equality to 1e-6 shows our implementation is the packages'
computation. The numbers themselves are meaningless (random trunks).
"""
from __future__ import annotations

import dataclasses
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision

import metrics
from metrics import cache, dists, fvd, lpips_metric, weights
from test_conditions import FvdProtocol, LpipsProtocol, MetricsSpec

torch.set_num_threads(1)
TRUNKS = {"vgg16-397923af.pth": torchvision.models.vgg16, "alexnet-owt-7be5be79.pth": torchvision.models.alexnet}


@pytest.fixture(scope="module")
def fake_hub(tmp_path_factory):
    """Seeded random trunks + I3D state dict under their real names: {name: (sha256, size)}."""
    home = tmp_path_factory.mktemp("torch_home")
    hub = home / "hub" / "checkpoints"
    hub.mkdir(parents=True)
    out = {}
    for i, (name, ctor) in enumerate(TRUNKS.items()):
        torch.manual_seed(10 + i)
        torch.save(ctor(weights=None).state_dict(), hub / name)
    torch.manual_seed(20)
    i3d = fvd.InceptionI3d(400)
    with torch.no_grad():  # non-trivial BatchNorm statistics so the test sees them
        for m in i3d.modules():
            if isinstance(m, torch.nn.BatchNorm3d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    torch.save(i3d.state_dict(), hub / "i3d_pretrained_400.pt")
    for name in (*TRUNKS, "i3d_pretrained_400.pt"):
        p = hub / name
        out[name] = (weights.sha256_of(p), p.stat().st_size)
    return home, out


@pytest.fixture
def random_weights(fake_hub, monkeypatch):
    home, hashes = fake_hub
    monkeypatch.setenv("TORCH_HOME", str(home))
    for name, (sha, size) in hashes.items():
        monkeypatch.setitem(weights.REGISTRY, name, dataclasses.replace(weights.get(name), sha256=sha, size=size))
    cache.MEMORY.clear()
    return home


def _images(n=2, h=64, w=72, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, h, w, generator=g)
    y = (x + 0.15 * torch.randn(n, 3, h, w, generator=g)).clamp(0, 1)
    return x, y


def test_dists_equals_package(random_weights, monkeypatch):
    import DISTS_pytorch

    # The package reads weights.pt from sys.prefix (CTC_FACTS trap); point it at its own folder.
    monkeypatch.setattr(sys, "prefix", os.path.dirname(DISTS_pytorch.__file__))
    ref_model = DISTS_pytorch.DISTS()
    ours = dists.load()
    x, y = _images()
    with torch.no_grad():
        expected = ref_model(x, y)
        got = ours.score(ours.features(x), ours.features(y))
    assert torch.allclose(got, expected, atol=1e-6, rtol=0)
    assert float(got.abs().max()) > 0


@pytest.mark.parametrize("net", ["vgg", "alex"])
def test_lpips_equals_package(random_weights, net):
    import lpips

    ref_model = lpips.LPIPS(net=net, version="0.1", verbose=False)
    ours = lpips_metric.load(net)
    x, y = _images(seed=1)
    with torch.no_grad():
        expected = ref_model(x, y, normalize=True).reshape(-1)
        got = ours.score(ours.features(x), ours.features(y))
    assert torch.allclose(got, expected, atol=1e-6, rtol=0)
    assert float(got.min()) > 0
    # the learned linear layers really are the package's v0.1 ones (not random)
    assert torch.equal(ours.lin0, ref_model.lin0.model[1].weight)


def _frames(t=6, h=40, w=48, seed=3):
    rng = np.random.default_rng(seed)
    ref = rng.integers(0, 256, (t, h, w, 3), dtype=np.uint8)
    dist = np.clip(ref.astype(np.int64) + rng.integers(-30, 31, ref.shape), 0, 255).astype(np.uint8)
    return ref, dist


def test_evaluate_matches_per_frame_package_loop_and_reuses_reference(random_weights, monkeypatch):
    import DISTS_pytorch
    import lpips

    monkeypatch.setattr(sys, "prefix", os.path.dirname(DISTS_pytorch.__file__))
    d_pkg, l_pkg = DISTS_pytorch.DISTS(), lpips.LPIPS(net="vgg", verbose=False)
    ref, dist = _frames()
    spec = MetricsSpec(names=("dists", "lpips"))
    res = metrics.evaluate(spec, ref, dist, fps=25, ref_key="seq-a")
    per_d, per_l = [], []
    with torch.no_grad():
        for f in range(ref.shape[0]):
            a = torch.from_numpy(ref[f]).permute(2, 0, 1)[None].float() / 255
            b = torch.from_numpy(dist[f]).permute(2, 0, 1)[None].float() / 255
            per_d.append(float(d_pkg(a, b)))
            per_l.append(float(l_pkg(a, b, normalize=True)))
    assert res["dists"]["status"] == "ok" and res["lpips"]["status"] == "ok"
    assert res["dists"]["value"] == pytest.approx(np.mean(per_d), abs=1e-6)
    assert res["lpips"]["value"] == pytest.approx(np.mean(per_l), abs=1e-6)
    hits = cache.MEMORY.hits
    res2 = metrics.evaluate(spec, ref, dist, fps=25, ref_key="seq-a")
    assert cache.MEMORY.hits > hits  # reference features came from the cache
    assert res2["dists"]["value"] == res["dists"]["value"] and res2["lpips"]["value"] == res["lpips"]["value"]


def test_wrong_hash_trunk_is_refused_in_evaluate(random_weights, monkeypatch):
    name = "vgg16-397923af.pth"
    monkeypatch.setitem(weights.REGISTRY, name, dataclasses.replace(weights.get(name), sha256="0" * 64))
    ref, dist = _frames(t=2)
    res = metrics.evaluate(MetricsSpec(names=("dists", "lpips")), ref, dist, fps=25)
    for m in ("dists", "lpips"):
        assert res[m]["status"] == "not_computed" and res[m]["value"] is None
        assert "refused" in res[m]["reason"] and "0" * 64 in res[m]["reason"]


def test_alexnet_lpips_through_evaluate(random_weights):
    ref, dist = _frames(t=2)
    spec = MetricsSpec(names=("lpips",), lpips=LpipsProtocol(net="alex"))
    res = metrics.evaluate(spec, ref, dist, fps=25)
    assert res["lpips"]["status"] == "ok" and res["lpips"]["value"] > 0


def test_i3d_state_dict_layout_and_fvd(random_weights):
    sd = fvd.InceptionI3d(400).state_dict()
    # piergiaj/pytorch-i3d InceptionI3d key layout
    for k, shape in {"Conv3d_1a_7x7.conv3d.weight": (64, 3, 7, 7, 7), "Conv3d_2c_3x3.bn.running_var": (192,),
                     "Mixed_4f.b1b.conv3d.weight": (320, 160, 3, 3, 3), "Mixed_5c.b3b.bn.bias": (128,),
                     "logits.conv3d.weight": (400, 1024, 1, 1, 1), "logits.conv3d.bias": (400,)}.items():
        assert tuple(sd[k].shape) == shape
    name, det = fvd.load_detector()
    assert name == "i3d_pretrained_400.pt"
    rng = np.random.default_rng(5)
    ref = rng.integers(0, 256, (20, 32, 32, 3), dtype=np.uint8)
    dist = np.clip(ref.astype(np.int64) + rng.integers(-60, 61, ref.shape), 0, 255).astype(np.uint8)
    spec = MetricsSpec(names=("fvd",), fvd=FvdProtocol(clip_length=9, stride=9, resolution=224,
                                                     detector="i3d_pretrained_400"))
    res = metrics.evaluate(spec, ref, dist, fps=25)
    assert res["fvd"]["status"] == "ok", res["fvd"]["reason"]
    fr = fvd.clip_features(det, ref, 9, 9)
    fd = fvd.clip_features(det, dist, 9, 9)
    assert fr.shape == (2, 400)
    assert res["fvd"]["value"] == pytest.approx(fvd.frechet_distance(fr, fd), rel=1e-9, abs=1e-9)
    assert res["fvd"]["value"] > 0
    assert "rank <= 1 of 400" in res["fvd"]["reason"] and "i3d_pretrained_400.pt" in res["fvd"]["reason"]


class _TinyScripted(torch.nn.Module):
    """Stand-in with the StyleGAN-V detector's call signature (the real file is 51 MB, not available)."""

    def forward(self, x: torch.Tensor, rescale: bool = True, resize: bool = True,
                return_features: bool = False) -> torch.Tensor:
        assert not rescale and not resize and return_features
        return x.mean(dim=(2, 3, 4)).repeat(1, 134)[:, :400]


def test_torchscript_detector_is_preferred_and_called_with_feature_kwargs(random_weights, tmp_path, monkeypatch):
    hub = Path(os.environ["TORCH_HOME"]) / "hub" / "checkpoints"
    wd = tmp_path / "wd"
    wd.mkdir()
    path = wd / "i3d_torchscript.pt"
    torch.jit.script(_TinyScripted()).save(str(path))
    monkeypatch.setitem(weights.REGISTRY, "i3d_torchscript.pt", dataclasses.replace(
        weights.get("i3d_torchscript.pt"), sha256=weights.sha256_of(path), size=path.stat().st_size))
    assert (hub / "i3d_pretrained_400.pt").exists()
    name, det = fvd.load_detector(wd)
    assert name == "i3d_torchscript.pt"
    x = torch.rand(2, 3, 9, 224, 224) * 2 - 1
    assert torch.allclose(det(x)[:, 0], x[:, 0].mean(dim=(1, 2, 3)), atol=1e-6)
