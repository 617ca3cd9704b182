"""Metrics without network weights: Frechet distance, PSNR, SSIM, weight registry, API contract."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math

import numpy as np
import pytest
import torch

import metrics
from gfvc.errors import InputError, UnknownName, WeightsError
from metrics import cache, classic, dists, weights
from metrics.fvd import frechet_distance
from test_conditions import FvdProtocol, MetricsSpec

torch.set_num_threads(1)


@pytest.fixture
def empty_hub(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    return tmp_path / "torch" / "hub" / "checkpoints"


def _pair(t=3, h=32, w=40, seed=0, noise=12):
    rng = np.random.default_rng(seed)
    ref = rng.integers(0, 256, (t, h, w, 3), dtype=np.uint8)
    dist = np.clip(ref.astype(np.int64) + rng.integers(-noise, noise + 1, ref.shape), 0, 255).astype(np.uint8)
    return ref, dist


# --- Frechet distance ---------------------------------------------------------------------------

def test_frechet_distance_ctc_test_vector():
    i = np.arange(10)[:, None]
    j = np.arange(4)[None, :]
    a = np.sin(0.7 * i * (j + 1)) + 0.1 * np.cos(1.3 * j)
    b = np.sin(0.7 * i * (j + 1) + 0.5) + 0.1 * np.cos(1.3 * j + 0.5 * i)
    assert frechet_distance(a, b) == pytest.approx(0.054496, abs=5e-7)


def test_frechet_distance_gaussians_closed_form():
    """Against the closed form for diagonal covariances: |mu|^2 + sum (s_a - s_b)^2 (std devs)."""
    rng = np.random.default_rng(1)
    a = rng.standard_normal((4000, 3)) * np.array([1.0, 2.0, 0.5])
    b = rng.standard_normal((4000, 3)) * np.array([1.0, 1.0, 1.0]) + np.array([1.0, 0.0, 0.0])
    sa, sb = a.std(axis=0, ddof=1), b.std(axis=0, ddof=1)
    expected = np.sum((a.mean(0) - b.mean(0)) ** 2) + np.sum((sa - sb) ** 2)
    assert frechet_distance(a, b) == pytest.approx(expected, rel=0.02)
    assert abs(frechet_distance(a, a)) < 1e-8


def test_frechet_distance_needs_two_samples():
    with pytest.raises(InputError, match="at least 2"):
        frechet_distance(np.zeros((1, 4)), np.zeros((5, 4)))


# --- PSNR / SSIM ---------------------------------------------------------------------------------

def test_psnr_rgb_matches_direct_formula_and_mean_over_frames():
    ref, dist = _pair(t=4)
    per = []
    for f in range(4):
        pairs = zip(ref[f].ravel().tolist(), dist[f].ravel().tolist(), strict=True)
        mse = sum((int(a) - int(b)) ** 2 for a, b in pairs) / ref[f].size
        per.append(10 * math.log10(255 ** 2 / mse))
    res = metrics.evaluate(MetricsSpec(names=("psnr",)), ref, dist, fps=25)
    assert res["psnr"]["value"] == pytest.approx(np.mean(per), abs=1e-9)
    assert res["psnr"]["lower_is_better"] is False


def test_psnr_y_uses_bt601_limited_luma():
    cv2 = pytest.importorskip("cv2")
    ref, dist = _pair(t=2)
    per = []
    for f in range(2):
        ya = cv2.cvtColor(ref[f], cv2.COLOR_RGB2YUV_I420)[: ref.shape[1]].astype(np.float64)
        yb = cv2.cvtColor(dist[f], cv2.COLOR_RGB2YUV_I420)[: ref.shape[1]].astype(np.float64)
        per.append(10 * np.log10(255 ** 2 / np.mean((ya - yb) ** 2)))
    res = metrics.evaluate(MetricsSpec(names=("psnr",)), ref, dist, fps=25)
    assert res["psnr_y"]["value"] == pytest.approx(np.mean(per), abs=1e-9)


def test_identical_frames_cap_psnr_and_json_is_strict():
    ref, _ = _pair(t=2)
    res = metrics.evaluate(MetricsSpec(names=("psnr", "ssim")), ref, ref.copy(), fps=25)
    assert res["psnr"]["value"] == classic.PSNR_CAP_DB
    assert res["psnr_y"]["value"] == classic.PSNR_CAP_DB
    assert res["ssim"]["value"] == pytest.approx(1.0, abs=1e-12)
    json.loads(metrics.to_json(res))  # allow_nan=False would raise on inf


def _ssim_reference(x: np.ndarray, y: np.ndarray) -> float:
    """Straightforward per-window SSIM (Wang et al. 2004, eq. 13 with Gaussian weights), valid windows."""
    g1 = np.exp(-((np.arange(11) - 5.0) ** 2) / (2 * 1.5 ** 2))
    w = np.outer(g1, g1)
    w /= w.sum()
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    vals = []
    for i in range(x.shape[0] - 10):
        for j in range(x.shape[1] - 10):
            a = x[i:i + 11, j:j + 11].astype(np.float64)
            b = y[i:i + 11, j:j + 11].astype(np.float64)
            ma, mb = (w * a).sum(), (w * b).sum()
            va, vb = (w * (a - ma) ** 2).sum(), (w * (b - mb) ** 2).sum()
            cov = (w * (a - ma) * (b - mb)).sum()
            vals.append(((2 * ma * mb + c1) * (2 * cov + c2)) / ((ma ** 2 + mb ** 2 + c1) * (va + vb + c2)))
    return float(np.mean(vals))


def test_ssim_matches_direct_window_computation():
    ref, dist = _pair(t=2, h=20, w=26, noise=40)
    ya, yb = classic.luma(ref), classic.luma(dist)
    ours = classic.ssim_frames(ya, yb)
    for f in range(2):
        assert ours[f] == pytest.approx(_ssim_reference(ya[f], yb[f]), abs=1e-10)
    res = metrics.evaluate(MetricsSpec(names=("ssim",)), ref, dist, fps=25)
    assert res["ssim"]["value"] == pytest.approx(float(np.mean(ours)), abs=1e-12)
    assert 0 < res["ssim"]["value"] < 1


def test_ssim_too_small_is_not_computed():
    ref, dist = _pair(t=1, h=8, w=8)
    res = metrics.evaluate(MetricsSpec(names=("ssim",)), ref, dist, fps=25)
    assert res["ssim"]["status"] == "not_computed" and res["ssim"]["value"] is None


# --- DISTS resize rule ---------------------------------------------------------------------------

@pytest.mark.parametrize("rule,size,expected", [
    ("gfvc-avgpool", 384, 192), ("gfvc-avgpool", 256, 256), ("gfvc-avgpool", 128, 128),
    ("gfvc-avgpool", 640, 320),  # round(2.5) == 2 (Python rounding, recorded in docs)
    ("native", 384, 384), ("short-side-256", 384, 256), ("short-side-256", 128, 128),
])
def test_dists_resize_rules(rule, size, expected):
    x = torch.rand(1, 3, size, size)
    assert dists.resize(x, rule).shape[-1] == expected


def test_gfvc_avgpool_is_block_mean():
    x = torch.rand(1, 3, 384, 384)
    y = dists.resize(x, "gfvc-avgpool")
    assert torch.allclose(y[0, :, 0, 0], x[0, :, :2, :2].mean(dim=(1, 2)))


# --- weight registry -----------------------------------------------------------------------------

def test_registry_entries_are_complete_and_consistent():
    for w in weights.REGISTRY.values():
        assert len(w.sha256) == 64 and int(w.sha256, 16) >= 0
        assert w.size > 0 and w.urls and all(u.startswith("https://") for u in w.urls)
    # torchvision file names carry the first 8 hex digits of the sha256
    assert weights.get("vgg16-397923af.pth").sha256.startswith("397923af")
    assert weights.get("alexnet-owt-7be5be79.pth").sha256.startswith("7be5be79")


def test_package_shipped_files_verify_in_installed_packages():
    for name in ("lpips-v0.1-vgg.pth", "lpips-v0.1-alex.pth", "dists-weights.pt"):
        st = weights.check(name)
        assert st.verified, st.reason
        assert st.where == "package"
        w = weights.get(name)
        assert hashlib.md5(st.path.read_bytes()).hexdigest() == w.md5  # the published md5


def test_weights_dir_comes_before_hub_and_wrong_hash_is_refused(tmp_path, empty_hub, monkeypatch):
    name = "vgg16-397923af.pth"
    good = b"pretend trunk"
    empty_hub.mkdir(parents=True)
    (empty_hub / name).write_bytes(good)
    monkeypatch.setitem(weights.REGISTRY, name, dataclasses.replace(
        weights.get(name), sha256=hashlib.sha256(good).hexdigest(), size=len(good)))
    assert weights.locate(name) == empty_hub / name
    wd = tmp_path / "wd"
    wd.mkdir()
    bad = b"pretend trunC"  # same size, different content
    assert len(bad) == len(good)
    (wd / name).write_bytes(bad)
    with pytest.raises(WeightsError) as e:
        weights.locate(name, wd)
    msg = str(e.value)
    assert name in msg and hashlib.sha256(good).hexdigest() in msg and hashlib.sha256(bad).hexdigest() in msg
    assert "download.pytorch.org" in msg
    st = weights.check(name, wd)
    assert st.where == "weights-dir" and not st.verified


def test_real_registry_refuses_a_foreign_file(empty_hub):
    empty_hub.mkdir(parents=True)
    (empty_hub / "vgg16-397923af.pth").write_bytes(b"not vgg")
    with pytest.raises(WeightsError, match="refused: size 7 bytes, expected 553433881"):
        weights.locate("vgg16-397923af.pth")


def test_install_copies_verified_and_refuses_wrong(tmp_path, empty_hub, monkeypatch):
    src = tmp_path / "src"
    src.mkdir()
    (src / "alexnet-owt-7be5be79.pth").write_bytes(b"alex")
    (src / "i3d_torchscript.pt").write_bytes(b"wrong")
    monkeypatch.setitem(weights.REGISTRY, "alexnet-owt-7be5be79.pth", dataclasses.replace(
        weights.get("alexnet-owt-7be5be79.pth"), sha256=hashlib.sha256(b"alex").hexdigest(), size=4))
    rows = {r.name: r for r in weights.install(src)}
    assert rows["alexnet-owt-7be5be79.pth"].verified
    assert (empty_hub / "alexnet-owt-7be5be79.pth").read_bytes() == b"alex"
    assert not rows["i3d_torchscript.pt"].verified
    assert not (empty_hub / "i3d_torchscript.pt").exists()


def test_fetch_fails_cleanly_without_network(tmp_path, empty_hub, monkeypatch):
    name = "i3d_pretrained_400.pt"
    monkeypatch.setitem(weights.REGISTRY, name, dataclasses.replace(weights.get(name), urls=("http://127.0.0.1:9/x.pt",)))
    with pytest.raises(WeightsError, match="could not download i3d_pretrained_400.pt"):
        weights.fetch([name], timeout=5)
    assert not list(empty_hub.glob("*")) if empty_hub.exists() else True


# --- API contract --------------------------------------------------------------------------------

def test_missing_weights_give_not_computed_naming_the_file(empty_hub):
    ref, dist = _pair(t=32, h=32, w=32)
    spec = MetricsSpec()
    res = metrics.evaluate(spec, ref, dist, fps=25)
    assert set(res) == {"psnr", "psnr_y", "ssim", "dists", "lpips", "fvd"}
    for name in ("dists", "lpips"):
        assert res[name]["status"] == "not_computed" and res[name]["value"] is None
        assert "vgg16-397923af.pth" in res[name]["reason"] and "397923af8e79" in res[name]["reason"]
    assert res["fvd"]["status"] == "not_computed"
    assert "i3d_torchscript.pt" in res["fvd"]["reason"]  # the detector the protocol names
    lines = metrics.missing_weights(spec)
    assert len(lines) == 2  # the VGG16 trunk once (for dists and lpips), and FVD's detector
    other = dataclasses.replace(spec, fvd=dataclasses.replace(spec.fvd, detector="i3d_pretrained_400"))
    assert "i3d_pretrained_400.pt" in metrics.missing_weights(other)[-1]
    assert metrics.protocol(other)["fvd"]["detector"] == "i3d_pretrained_400"
    assert lines[0].startswith("dists/lpips: vgg16-397923af.pth")
    alex = metrics.missing_weights(dataclasses.replace(spec, names=("lpips",),
                                                       lpips=dataclasses.replace(spec.lpips, net="alex")))
    assert alex and "alexnet-owt-7be5be79.pth" in alex[0]


def test_fvd_with_too_few_clips_is_not_computed(empty_hub):
    ref, dist = _pair(t=20, h=32, w=32)
    spec = MetricsSpec(names=("fvd",), fvd=FvdProtocol(clip_length=16, stride=16))
    res = metrics.evaluate(spec, ref, dist, fps=25)
    assert res["fvd"]["status"] == "not_computed"
    assert "1 clip(s)" in res["fvd"]["reason"] and "needs >= 2 clips" in res["fvd"]["reason"]


def test_protocol_is_json_and_records_choices():
    spec = MetricsSpec()
    p = metrics.protocol(spec)
    json.dumps(p, allow_nan=False)
    assert p["dists"]["resize"] == "gfvc-avgpool"
    assert p["lpips"]["net"] == "vgg" and p["lpips"]["version"] == "0.1"
    assert p["fvd"]["clip_length"] == 16 and p["fvd"]["covariance_ddof"] == 1
    assert p["psnr"]["identical_frame_cap_db"] == 100.0
    assert metrics.LOWER_IS_BETTER == {"psnr": False, "psnr_y": False, "ssim": False,
                                       "dists": True, "lpips": True, "fvd": True}


def test_bad_inputs_and_unknown_names():
    ref, dist = _pair()
    with pytest.raises(InputError):
        metrics.evaluate(MetricsSpec(names=("psnr",)), ref, dist[:, :-2], fps=25)
    with pytest.raises(InputError):
        metrics.evaluate(MetricsSpec(names=("psnr",)), ref.astype(np.float32), dist, fps=25)
    with pytest.raises(UnknownName, match="did you mean lpips"):
        metrics.evaluate(MetricsSpec(names=("lpip",)), ref, dist, fps=25)


def test_feature_cache_keeps_prefix_of_current_reference():
    c = cache.FeatureCache(budget_bytes=3 * 400)
    t = lambda: torch.zeros(100)  # noqa: E731  400 bytes
    assert c.put("other|0", "other", t())
    assert c.put("a|0", "a", t()) and c.put("a|1", "a", t())
    assert c.put("a|2", "a", t())  # evicts the other reference
    assert c.get("other|0") is None
    assert not c.put("a|3", "a", t())  # would evict a's own prefix: not inserted
    assert c.get("a|0") is not None and c.get("a|2") is not None


# --- CLI -----------------------------------------------------------------------------------------

def test_cli_metrics_reports_missing_weights_per_metric(tmp_path, empty_hub, capsys):
    from gfvc.video import write_video
    from suite.cli.main import main

    ref, dist = _pair(t=4, h=32, w=32)
    write_video(tmp_path / "ref.rgb", ref)
    write_video(tmp_path / "dist.rgb", dist)
    rc = main(["metrics", str(tmp_path / "ref.rgb"), str(tmp_path / "dist.rgb"), "--size", "32x32",
               "--metrics", "psnr,ssim,dists", "--json"])
    out = capsys.readouterr()
    assert rc == 0
    data = json.loads(out.out)
    assert data["results"]["psnr"]["status"] == "ok"
    assert data["results"]["dists"]["status"] == "not_computed"
    assert "missing weights" in out.err and "vgg16-397923af.pth" in out.err
    rc = main(["weights", "status"])
    out = capsys.readouterr().out
    assert rc == 0 and "dists-weights.pt" in out and "verified" in out and "vgg16-397923af.pth" in out
