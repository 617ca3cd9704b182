"""Pooled FVD: clip features kept per job, one FVD per codec and rate point at report time.

Seeded random I3D weights (tests/test_metrics_models.py's fixtures: the
registry's sha256 is patched to the random file's, so the verification path
runs as with real weights); the numbers are meaningless, the plumbing is
checked: features on disk are the detector's features of the decoded video,
the pooled value is the Fréchet distance of the concatenated clips, a single
sequence pools to its per-sequence FVD, and the report shows the table and the
averaged-curve BD-rate with its protocol.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from gfvc.codec import Environment
from gfvc.records import iter_records
from metrics import fvd
from suite.runner.plan import execute, plan_run, write_run_json


@pytest.fixture(scope="module")
def i3d_hub(tmp_path_factory):
    """Seeded random I3D state dict under its real name in a temporary hub cache (as test_metrics_models)."""
    import torch

    from metrics import weights

    home = tmp_path_factory.mktemp("torch_home")
    hub = home / "hub" / "checkpoints"
    hub.mkdir(parents=True)
    torch.manual_seed(20)
    torch.save(fvd.InceptionI3d(400).state_dict(), hub / "i3d_pretrained_400.pt")
    p = hub / "i3d_pretrained_400.pt"
    return home, weights.sha256_of(p), p.stat().st_size


@pytest.fixture
def random_i3d(i3d_hub, monkeypatch):
    import dataclasses

    from metrics import cache, weights

    home, sha, size = i3d_hub
    monkeypatch.setenv("TORCH_HOME", str(home))
    monkeypatch.setitem(weights.REGISTRY, "i3d_pretrained_400.pt",
                        dataclasses.replace(weights.get("i3d_pretrained_400.pt"), sha256=sha, size=size))
    cache.MEMORY.clear()
    return home


@pytest.fixture
def two_sequence_condition(small_condition, tmp_path):
    """The demo clip plus a mirrored copy as a second sequence (.rgb), FVD on 18 frames (2 clips of 9)."""
    from gfvc.video import sha256_file, write_rgb_planar
    from test_conditions.manifest import load_manifest, load_sequence

    demo = load_manifest(small_condition.manifest_path)[0]
    frames = load_sequence(demo, 18).frames[:, :, ::-1].copy()
    rgb = tmp_path / "mirror.rgb"
    write_rgb_planar(rgb, frames)
    man = yaml.safe_load(small_condition.manifest_path.read_text())
    man["sequences"].append({"name": "mirror_128x128_18", "file": str(rgb), "format": "rgb",
                             "sha256": sha256_file(rgb), "frames": 18, "width": 128, "height": 128,
                             "fps": demo.fps})
    (tmp_path / "two.manifest.yaml").write_text(yaml.safe_dump(man))
    d = yaml.safe_load(Path(small_condition.source).read_text())
    d.update(frames=18, manifest=str(tmp_path / "two.manifest.yaml"), codecs=["test-lossy", "test-gen"])
    d["anchor"]["qps"] = [8, 16, 24, 40]
    d["generative"]["key_frame_qps"] = [12, 20, 28, 44]
    d["metrics"]["names"] = ["psnr", "fvd"]
    d["metrics"]["fvd"] = {"clip_length": 9, "stride": 9, "pooling": "per-sequence", "resolution": 64,
                           "detector": "i3d_pretrained_400"}
    d["bdrate"]["anchor"] = "test-lossy"
    d["bdrate"]["metrics"] = ["fvd"]
    p = tmp_path / "two.yaml"
    p.write_text(yaml.safe_dump(d))
    from test_conditions import load_condition

    return load_condition(p)


@pytest.mark.slow
def test_jobs_keep_clip_features_and_report_pools_them(two_sequence_condition, random_i3d, plugin_env, tmp_path):
    from reports import pooled_fvd
    from reports.document import build_report

    cond = two_sequence_condition
    run = tmp_path / "run"
    plan = plan_run(cond, run, Environment(device="cpu"), codecs=["test-lossy", "test-gen"])
    run.mkdir()
    write_run_json(plan, ["test"])
    recs = execute(plan.jobs)
    assert len(recs) == 16 and all(r["status"] == "ok" for r in recs), [r["error"] for r in recs if r["error"]]
    r0 = recs[0]
    assert r0["metric_protocol"]["fvd"]["clip_length"] == 9 and "pooled" in r0["metric_protocol"]["fvd"]
    assert r0["device"]["metrics"] == "cpu" and r0["device"]["codec"] is None
    # kept features are the detector's features of the decoded frames and of the reference
    dec_feats = np.load(run / r0["artifacts"]["fvd_clip_features"])
    ref_feats = np.load(run / r0["artifacts"]["fvd_ref_clip_features"])
    assert dec_feats.shape == (2, 400) and ref_feats.shape == (2, 400)
    from test_conditions.manifest import load_sequence

    seq = next(e for e in plan.sequences if e.name == r0["sequence"]["name"])
    _, det = fvd.load_detector(names=("i3d_pretrained_400.pt",))
    np.testing.assert_allclose(fvd.clip_features(det, load_sequence(seq, 18).frames, 9, 9, 64), ref_feats,
                               rtol=1e-6, atol=1e-8)
    assert r0["metrics"]["fvd"]["value"] == pytest.approx(fvd.frechet_distance(ref_feats, dec_feats), rel=1e-9)

    p = pooled_fvd.compute(run, iter_records(run), anchor="test-lossy", method="pchip")
    assert p.sequences == ["carphone_128x128_32", "mirror_128x128_18"] and not p.excluded
    pt = next(q for q in p.points if q.codec == "test-gen" and q.qp == 28)
    group = sorted((r for r in iter_records(run) if r["codec"] == "test-gen" and r["rate_point"]["qp"] == 28),
                   key=lambda r: r["sequence"]["name"])
    d = np.concatenate([np.load(run / r["artifacts"]["fvd_clip_features"]) for r in group])
    f = np.concatenate([np.load(run / r["artifacts"]["fvd_ref_clip_features"]) for r in group])
    assert pt.clips == 4 and pt.sequences == 2
    assert pt.fvd == pytest.approx(fvd.frechet_distance(f, d), rel=1e-9)
    assert pt.kbps == pytest.approx(np.mean([r["kbps"] for r in group]))
    assert set(p.bdrate) == {"test-gen"} and p.bdrate["test-gen"].method == "pchip"

    paths = build_report(run, formats=("md", "html", "json", "csv"))
    md = paths["md"].read_text()
    assert "## Pooled FVD" in md and "averaged-curve" in md and "clip length 9, stride 9" in md
    assert "Rate-pooled-FVD" in md and "| test-gen | qp28 |" in md
    assert 'id="pooled-fvd"' in paths["html"].read_text()
    summary = json.loads(paths["json"].read_text())
    assert summary["pooled_fvd"]["aggregation"] == "average-curve"
    assert summary["pooled_fvd"]["protocol"]["clip_length"] == 9
    assert paths["csv:pooled_fvd"].is_file()


def test_single_sequence_pools_to_its_per_sequence_fvd(tmp_path):
    """Pooling one sequence's clips is the per-sequence FVD (same clips, same estimator; 24-d features here)."""
    from reports import pooled_fvd

    rng = np.random.default_rng(0)
    recs = []
    for codec in ("a", "b"):
        for qp in (22, 32, 42, 52):
            jd = tmp_path / "jobs" / f"{codec}{qp}"
            jd.mkdir(parents=True)
            ref = rng.normal(size=(5, 24))
            dist = ref + rng.normal(scale=qp / 50, size=ref.shape)
            np.save(jd / "d.npy", dist)
            np.save(jd / "r.npy", ref)
            recs.append({"status": "ok", "codec": codec, "rate_point": {"qp": qp, "label": f"qp{qp}"},
                         "sequence": {"name": "s"}, "kbps": 1000.0 / qp * (1.5 if codec == "b" else 1.0),
                         "metric_protocol": {"fvd": {"clip_length": 16, "stride": 16, "resolution": 224,
                                                     "detector": "x", "detector_sha256": "y"}},
                         "artifacts": {"fvd_clip_features": f"jobs/{codec}{qp}/d.npy",
                                       "fvd_ref_clip_features": f"jobs/{codec}{qp}/r.npy"}})
    p = pooled_fvd.compute(tmp_path, recs, anchor="a")
    for q in p.points:
        jd = tmp_path / "jobs" / f"{q.codec}{q.qp}"
        assert q.fvd == pytest.approx(fvd.frechet_distance(np.load(jd / "r.npy"), np.load(jd / "d.npy")))
    assert p.bdrate["b"].ok
    # a record with another protocol is never pooled with these
    odd = dict(recs[0], metric_protocol={"fvd": {"clip_length": 9}}, codec="a")
    p2 = pooled_fvd.compute(tmp_path, recs + [odd], anchor="a")
    assert any("another FVD protocol" in n for n in p2.notes)


def test_frechet_distance_test_vector():
    """CTC_FACTS section 4: FD of the sin/cos feature sets, N=10, d=4, ddof=1 = 0.054496."""
    i = np.arange(10)[:, None]
    j = np.arange(4)[None, :]
    a = np.sin(0.7 * i * (j + 1)) + 0.1 * np.cos(1.3 * j)
    b = np.sin(0.7 * i * (j + 1) + 0.5) + 0.1 * np.cos(1.3 * j + 0.5 * i)
    assert fvd.frechet_distance(a, b) == pytest.approx(0.054496, abs=5e-7)
