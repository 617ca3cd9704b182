"""Devices: --device on every command, memory-bounded metric batches, device in records, no mixing.

No GPU exists on the machines these tests were written on: the CUDA paths are
exercised through the same plumbing on CPU (resolution, routing, refusal), and
`--device cuda` is checked to fail in one line where torch sees no CUDA.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from gfvc import devices
from gfvc.codec import Environment
from gfvc.errors import ConfigError, NotAvailable
from suite.cli.main import main

no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")


def test_resolve_device():
    assert devices.resolve_device("cpu") == "cpu"
    assert devices.resolve_device("auto") == ("cuda:0" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ConfigError, match="not understood"):
        devices.resolve_device("gpu")
    assert devices.device_type("cuda:1") == "cuda" and devices.device_type("cpu") == "cpu"
    assert devices.device_type(None) is None


@no_cuda
@pytest.mark.parametrize("argv", [
    ["run", "--device", "cuda"],
    ["run", "--device", "cuda:1", "--executor", "dask"],
    ["metrics", "REF", "REF", "--device", "cuda"],
    ["encode", "REF", "-o", "OUT", "--codec", "vvenc", "--qp", "37", "--device", "cuda"],
    ["train", "s2d", "--data", "D", "--out", "OUT", "--device", "cuda"],
])
def test_device_cuda_without_cuda_is_one_line_exit_2(argv, tmp_path, capsys, small_condition):
    from gfvc.video import write_png_folder

    ref = tmp_path / "ref"  # PNG frames: an mp4 the suite writes is a (tagged) viewing copy and draws a warning
    write_png_folder(ref, np.zeros((2, 16, 16, 3), np.uint8))
    argv = [str(ref) if a == "REF" else str(tmp_path / "o.bin") if a == "OUT" else str(tmp_path) if a == "D" else a
            for a in argv]
    if argv[0] == "run":
        argv += ["--condition", small_condition.source, "--workdir", str(tmp_path / "r")]
    rc = main(argv)
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "no CUDA device" in err, err
    assert not (tmp_path / "r").exists()


def test_unknown_device_string(small_condition, tmp_path, capsys):
    rc = main(["run", "--condition", small_condition.source, "--workdir", str(tmp_path / "r"), "--device", "tpu"])
    assert rc == 2 and "not understood: use auto, cpu, cuda or cuda:N" in capsys.readouterr().err


def test_s2d_runs_on_the_environment_device():
    from s2d_model.codec import S2DCodec
    from test_conditions import load_condition

    cond = load_condition("demo")
    assert S2DCodec(cond, Environment(device="cpu")).device == "cpu"
    assert S2DCodec(cond, Environment()).device == devices.resolve_device("auto")  # default: auto
    if not torch.cuda.is_available():
        with pytest.raises(NotAvailable, match="no CUDA device"):
            _ = S2DCodec(cond, Environment(device="cuda")).device


def test_batch_size_is_bounded_by_free_memory(monkeypatch):
    gib = 1 << 30
    # CPU: a quarter of MemAvailable, shared by the jobs running at once, capped
    assert devices.batch_size("cpu", 0.1 * gib, cap=8, free=4 * gib) == 8
    assert devices.batch_size("cpu", 0.5 * gib, cap=8, free=4 * gib) == 2
    monkeypatch.setenv("GFVC_CONCURRENT_JOBS", "2")
    assert devices.batch_size("cpu", 0.5 * gib, cap=8, free=4 * gib) == 1
    assert devices.batch_size("cpu", 10 * gib, cap=8, free=4 * gib) == 1  # never below 1
    # CUDA: 70 % of the free device memory
    assert devices.batch_size("cuda:0", 1 * gib, cap=64, free=100 * gib) == 64
    assert devices.batch_size("cuda:0", 1 * gib, cap=64, free=20 * gib) == 14
    assert devices.free_memory("cpu") > 0


class _TinyMetric(torch.nn.Module):
    """A perceptual-metric-shaped model (features + score) small enough for the default test tier."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(3)
        self.a = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.b = torch.nn.Conv2d(8, 16, 3, stride=2, padding=1)

    def features(self, x):
        h1 = torch.relu(self.a(x))
        return [x, h1, torch.relu(self.b(h1))]

    def score(self, fx, fy):
        return sum(((a - b) ** 2).mean(dim=(1, 2, 3)) for a, b in zip(fx, fy, strict=True))


def test_device_batches_equal_the_per_frame_loop_bitwise(monkeypatch):
    import metrics
    from metrics import cache

    model = _TinyMetric().eval()
    rng = np.random.default_rng(1)
    ref = rng.integers(0, 256, (11, 40, 48, 3), dtype=np.uint8)
    dist = np.clip(ref.astype(int) + rng.integers(-30, 31, ref.shape), 0, 255).astype(np.uint8)
    with torch.inference_mode():
        loop = [float(model.score(model.features(metrics._to_tensor(ref[i:i + 1])),
                                  model.features(metrics._to_tensor(dist[i:i + 1]))).double()) for i in range(11)]
    calls: list[tuple[str, int, int]] = []
    out = {}
    for cap in (1, 4, 8):
        cache.MEMORY.clear()
        monkeypatch.setitem(metrics.MAX_BATCH, "cpu", cap)
        out[cap] = metrics._perceptual(model, ref, dist, f"tiny|{cap}", lambda x: x, None, "cpu", "tiny",
                                       lambda *a: calls.append(a))
    # equal up to float32 kernel choice (bitwise for this model here; not guaranteed in general, see the slow test)
    assert out[1] == pytest.approx(float(torch.tensor(loop, dtype=torch.float64).mean()), rel=1e-7)
    assert out[4] == pytest.approx(out[1], rel=1e-7) and out[8] == pytest.approx(out[1], rel=1e-7)
    assert calls[-1] == ("tiny", 11, 11) and len([c for c in calls if c[2] == 11]) == 11 + 3 + 2
    # free memory bounds the batch: with almost nothing free, one frame per pass
    monkeypatch.setattr(devices, "free_memory", lambda d: 1)
    calls.clear()
    cache.MEMORY.clear()
    monkeypatch.setitem(metrics.MAX_BATCH, "cpu", 8)
    assert metrics._perceptual(model, ref, dist, "tiny|low", lambda x: x, None, "cpu", "tiny",
                               lambda *a: calls.append(a)) == pytest.approx(out[1], rel=1e-7)
    assert len(calls) == 11


def test_reference_features_are_reused_across_batch_sizes(monkeypatch):
    import metrics
    from metrics import cache

    model = _TinyMetric().eval()
    ref = np.random.default_rng(2).integers(0, 256, (6, 24, 24, 3), dtype=np.uint8)
    cache.MEMORY.clear()
    monkeypatch.setitem(metrics.MAX_BATCH, "cpu", 4)
    a = metrics._perceptual(model, ref, ref[::-1].copy(), "tiny|reuse", lambda x: x, None)
    hits = cache.MEMORY.hits
    monkeypatch.setitem(metrics.MAX_BATCH, "cpu", 3)
    b = metrics._perceptual(model, ref, ref[::-1].copy(), "tiny|reuse", lambda x: x, None)
    assert a == b and cache.MEMORY.hits - hits == 6  # every reference frame came from the cache


def test_records_state_the_device(small_condition, plugin_env, tmp_path):
    from suite.runner.plan import execute, plan_run

    plan = plan_run(small_condition, tmp_path / "r", Environment(device="cpu"), codecs=["test-lossy", "test-gen"])
    for r in execute(plan.jobs):
        assert r["device"] == {"requested": "cpu", "codec": None, "metrics": None}  # no torch work here


def test_split_and_gpu_resources_of_jobs(small_condition, plugin_env, tmp_path):
    import dataclasses

    from suite.runner.jobs import job_resources, split_job
    from suite.runner.plan import plan_run

    learned = small_condition.with_overrides(metrics={**small_condition.to_dict()["metrics"],
                                                      "names": ["psnr", "lpips"]})
    for cond, dev, expect in [(small_condition, "cpu", {}), (small_condition, "cuda", {}), (learned, "cuda", "split")]:
        plan = plan_run(cond, tmp_path / "r", Environment(device=dev), codecs=["test-lossy", "test-gen"])
        anchor = next(j for j in plan.jobs if j.codec == "test-lossy")
        gen = next(j for j in plan.jobs if j.codec == "test-gen")
        assert job_resources(gen) == ({"GPU": 1} if dev == "cuda" else {})
        assert not split_job(gen)
        if expect == "split":  # anchor coding anywhere, its learned metrics on a GPU worker
            assert split_job(anchor) and job_resources(anchor, "code") == {} and \
                job_resources(anchor, "score") == {"GPU": 1}
        else:
            assert job_resources(anchor) == {} and not split_job(anchor)
    assert dataclasses.is_dataclass(anchor)


def _patch_device(run: Path, codec: str, device: str) -> None:
    for p in (run / "records").glob("*.json"):
        rec = json.loads(p.read_text())
        if rec["codec"] == codec:
            rec["device"] = {"requested": "cuda", "codec": None, "metrics": device}
            p.write_text(json.dumps(rec))


def test_mixed_devices_are_refused_unless_allowed(small_condition, plugin_env, tmp_path, capsys):
    run = tmp_path / "r"
    base = ["run", "--condition", small_condition.source, "--workdir", str(run), "-j", "1", "--device", "cpu"]
    assert main(base + ["--codec", "test-lossy", "--codec", "test-gen", "--no-report"]) == 0
    _patch_device(run, "test-lossy", "cuda:0")  # as if the anchor had been scored on a GPU
    assert main(["report", str(run), "--format", "json"]) == 0  # test-gen did no torch work: nothing mixed
    _patch_device(run, "test-gen", "cpu")  # now the generative records say CPU: two device types
    capsys.readouterr()
    assert main(["report", str(run), "--format", "json"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "mix device types" in err and "--allow-mixed-devices" in err
    assert main(["report", str(run), "--format", "json", "--allow-mixed-devices"]) == 0
    # a run adding device work on CPU to records computed on CUDA is refused before any job
    capsys.readouterr()
    assert main(base + ["--codec", "test-lossy", "--codec", "test-gen", "--force", "--no-report"]) == 0  # --force
    _patch_device(run, "test-lossy", "cuda:0")
    for p in (run / "records").glob("*.json"):
        if json.loads(p.read_text())["codec"] == "test-gen":
            p.unlink()
    capsys.readouterr()
    rc = main(base + ["--codec", "test-lossy", "--codec", "test-gen", "--no-report"])
    err = capsys.readouterr().err
    assert rc == 2 and "computed on cuda" in err and err.count("\n") == 1
    assert main(base + ["--codec", "test-lossy", "--codec", "test-gen", "--no-report",
                        "--allow-mixed-devices"]) == 0


def test_compare_refuses_runs_on_different_device_types(tmp_path):
    from gfvc.records import RECORD_SCHEMA
    from reports.compare import _check_devices

    def rec(codec, dev):
        return {"schema": RECORD_SCHEMA, "key": codec + dev, "status": "ok", "codec": codec,
                "sequence": {"name": "s"}, "rate_point": {"label": "qp1"},
                "device": {"codec": None, "metrics": dev}}

    for run, codec, dev in (("a", "vtm", "cpu"), ("b", "s2d", "cuda:0")):
        (tmp_path / run / "records").mkdir(parents=True)
        (tmp_path / run / "records" / "k.json").write_text(json.dumps(rec(codec, dev)))
    with pytest.raises(devices.MixedDevices, match="vtm .* and s2d"):
        _check_devices(tmp_path / "a", "vtm", tmp_path / "b", "s2d", False)
    _check_devices(tmp_path / "a", "vtm", tmp_path / "b", "s2d", True)


def test_check_uniform_devices_ignores_records_without_torch_work():
    recs = [{"codec": "vtm", "device": {"codec": None, "metrics": None}},
            {"codec": "s2d", "device": {"codec": "cuda:0", "metrics": "cuda:0"}}]
    assert set(devices.check_uniform_devices(recs)) == {"cuda"}
    recs.append({"codec": "vvenc", "device": {"codec": None, "metrics": "cpu"}})
    with pytest.raises(devices.MixedDevices):
        devices.check_uniform_devices(recs)


@pytest.mark.slow
def test_dists_lpips_fvd_batch_size_changes_only_the_last_bits(random_weights, monkeypatch):  # noqa: F811
    """Real network layouts (seeded random VGG16 / I3D): batch sizes change only the last bits (recorded).

    oneDNN picks convolution kernels by shape, so DISTS at batch 1 and 8 differ by ~1e-6 relative
    (measured); GFVC_METRICS_BATCH fixes the batch for bit-reproducible records.
    """
    import metrics
    from metrics import cache
    from test_conditions import FvdProtocol, MetricsSpec

    rng = np.random.default_rng(4)
    ref = rng.integers(0, 256, (18, 64, 64, 3), dtype=np.uint8)
    dist = np.clip(ref.astype(int) + rng.integers(-40, 41, ref.shape), 0, 255).astype(np.uint8)
    spec = MetricsSpec(names=("dists", "lpips", "fvd"), fvd=FvdProtocol(clip_length=9, stride=9, resolution=64,
                                                                       detector="i3d_pretrained_400"))
    res, used = {}, {}
    for cap, clips in ((1, 1), (8, 2)):
        cache.MEMORY.clear()
        monkeypatch.setitem(metrics.MAX_BATCH, "cpu", cap)
        monkeypatch.setitem(metrics.MAX_CLIPS, "cpu", clips)
        out: dict = {}
        res[cap] = metrics.evaluate(spec, ref, dist, fps=25, device="cpu", features_out=out)
        used[cap] = out["batch"]
    assert used == {1: {"dists": 1, "lpips": 1, "fvd": 1}, 8: {"dists": 8, "lpips": 8, "fvd": 2}}
    for m in ("dists", "lpips", "fvd"):
        assert res[1][m]["status"] == "ok" and res[1][m]["value"] == pytest.approx(res[8][m]["value"], rel=1e-5), m
    # a fixed batch gives the same bits whatever the memory
    monkeypatch.setenv(metrics.FIXED_BATCH_ENV, "8")
    monkeypatch.setattr(devices, "free_memory", lambda d: 1)
    cache.MEMORY.clear()
    again = metrics.evaluate(spec, ref, dist, fps=25, device="cpu")
    assert all(again[m]["value"] == res[8][m]["value"] for m in ("dists", "lpips", "fvd"))


from test_metrics_models import fake_hub, random_weights  # noqa: E402,F401  (fixtures for the slow test)
