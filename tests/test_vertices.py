"""Vertex prediction as a measured CTC output (issue 13).

Reference vertices in manifests (sha256-verified), the vertex metrics (hand-checked), "not
applicable" for codecs without vertices, the protocol in every record, the vertex-head timing,
`gfvc sequences prepare --vertices`, the OSX conversion tool, and a 384x384 run end to end with the
test codec ``test-vertices`` (tests/codecs_for_tests.py), whose vertex error is known exactly.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import yaml

from gfvc.errors import ChecksumError, ConfigError, InputError
from gfvc.records import iter_records
from gfvc.vertices import NUM_VERTICES, builtin_path, from_pixels, read_reference, to_pixels
from metrics import vertices as vm
from suite.cli.main import main
from test_conditions import load_condition
from test_conditions.manifest import load_manifest, verify_entry


# ---------------------------------------------------------------------------- metrics
class _Spec:
    pck_thresholds_px = (1.0, 2.0, 5.0)
    pixel_scale = "sequence"


def test_errors_and_statistics_by_hand():
    # 5x3 frame: x_px = (x + 1) * 2, y_px = (y + 1) * 1. Three vertices, two frames.
    ref = np.zeros((2, 3, 2), np.float32)
    pred = ref.copy()
    pred[1, 0] = [0.5, 0.0]    # dx = 1 px
    pred[1, 1] = [0.0, 3.0]    # dy = 3 px
    pred[1, 2] = [1.5, 4.0]    # dx = 3, dy = 4 -> 5 px
    err = vm.frame_errors(pred, ref, 5, 3)
    np.testing.assert_allclose(err, [[0, 0, 0], [1, 3, 5]], atol=1e-6)
    out = vm.evaluate(pred, ref, 5, 3, _Spec())
    assert out["key_frame"]["mean_px"] == 0 and out["key_frame"]["pck"]["pck@1px"] == 1.0
    inter = out["inter_frames"]
    assert inter["mean_px"] == pytest.approx(3.0) and inter["median_px"] == pytest.approx(3.0)
    assert inter["p90_px"] == pytest.approx(4.6)  # numpy's linear percentile of (1, 3, 5)
    assert inter["pck"] == pytest.approx({"pck@1px": 1 / 3, "pck@2px": 1 / 3, "pck@5px": 1.0})
    assert out["all_frames"]["mean_px"] == pytest.approx(1.5) and out["all_frames"]["frames"] == 2
    assert out["per_frame"]["mean_px"] == [0.0, 3.0]


def test_frames_without_reference_are_left_out_and_counted():
    ref = np.zeros((3, 4, 2), np.float32)
    ref[1] = np.nan  # no person found in frame 1
    pred = np.full((3, 4, 2), 0.5, np.float32)
    out = vm.evaluate(pred, ref, 3, 3, _Spec())  # 0.5 normalised = 0.5 px in x and y: 0.707 px
    assert out["inter_frames"]["frames"] == 1 and out["inter_frames"]["frames_without_reference"] == 1
    assert out["inter_frames"]["mean_px"] == pytest.approx(math.sqrt(0.5))
    assert out["per_frame"]["mean_px"][1] is None


def test_bad_vertex_arrays_are_refused():
    with pytest.raises(InputError, match="mixes finite and non-finite"):
        bad = np.zeros((2, 4, 2), np.float32)
        bad[1, 0, 0] = np.nan
        vm.frame_errors(np.zeros((2, 4, 2), np.float32), bad, 8, 8)
    with pytest.raises(InputError, match="differ in shape"):
        vm.frame_errors(np.zeros((2, 4, 2), np.float32), np.zeros((2, 5, 2), np.float32), 8, 8)


def test_convention_round_trip_and_figure_frames():
    px = np.array([[0.0, 0.0], [383.0, 383.0], [191.5, 10.0]])
    n = from_pixels(px, 384, 384)
    np.testing.assert_allclose(n[:2], [[-1, -1], [1, 1]], atol=1e-7)
    np.testing.assert_allclose(to_pixels(n, 384, 384), px, atol=1e-4)
    assert vm.figure_frames(32) == [0, 1, 16, 31] and vm.figure_frames(3) == [0, 1, 2]


def test_protocol_is_part_of_the_condition():
    demo = load_condition("demo")
    assert demo.metrics.vertices.pck_thresholds_px == (1.0, 2.0, 5.0)
    d = demo.to_dict()
    d["metrics"]["vertices"]["pck_thresholds_px"] = [1.0, 3.0]
    assert demo.with_overrides(metrics=d["metrics"]).fingerprint != demo.fingerprint
    d["metrics"]["vertices"]["pck_thresholds_px"] = [5.0, 2.0]
    with pytest.raises(ConfigError, match="pck_thresholds_px"):
        demo.with_overrides(metrics=d["metrics"]).validate()


# --------------------------------------------------------------------------- manifests
def test_demo_reference_is_proxy_and_verified():
    e = load_manifest(load_condition("demo").manifest_path)[0]
    assert e.vertices is not None and e.vertices.proxy and e.vertices.source.startswith("PROXY")
    arr = read_reference(builtin_path("carphone-proxy-vertices"), e.vertices.sha256, 32)
    assert arr.shape == (32, NUM_VERTICES, 2) and arr.dtype == np.float32
    # PROXY procedure: the seeded template on frame 0, moved by optical flow afterwards.
    from model_parts.proxy_vertices import template_points

    np.testing.assert_array_equal(arr[0], template_points())
    assert np.abs(arr[31] - arr[0]).max() > 0.01


def _manifest_with_vertices(tmp_path: Path, sha: str | None = None, extra: dict | None = None) -> Path:
    tmp_path.mkdir(parents=True, exist_ok=True)
    rgb = tmp_path / "s.rgb"
    frames = np.random.default_rng(1).integers(0, 255, (2, 3, 16, 16), dtype=np.uint8)
    rgb.write_bytes(frames.tobytes())
    v = tmp_path / "s.vertices.npy"
    np.save(v, np.zeros((2, NUM_VERTICES, 2), np.float32))
    from gfvc.video import sha256_file

    entry = {"name": "s", "file": "s.rgb", "sha256": sha256_file(rgb), "frames": 2, "width": 16, "height": 16,
             "fps": 25, "format": "rgb",
             "vertices": {"file": "s.vertices.npy", "sha256": sha or sha256_file(v), "source": "test", **(extra or {})}}
    m = tmp_path / "m.yaml"
    m.write_text(yaml.safe_dump({"schema": 1, "sequences": [entry]}))
    return m


def test_manifest_vertices_verified_like_the_sequence(tmp_path):
    e = load_manifest(_manifest_with_vertices(tmp_path))[0]
    verify_entry(e)
    assert e.identity.endswith("+vertices:" + e.vertices.sha256) and e.to_dict()["vertices"]["file"] == "s.vertices.npy"
    bad = load_manifest(_manifest_with_vertices(tmp_path / "b", sha="0" * 64))[0]
    with pytest.raises(ChecksumError, match="reference vertices"):
        verify_entry(bad)
    with pytest.raises(ConfigError, match="unknown key 'typo'"):
        load_manifest(_manifest_with_vertices(tmp_path / "c", extra={"typo": 1}))


# ------------------------------------------------------------------------ end to end
@pytest.fixture
def ted384(tmp_path: Path, plugin_env) -> tuple[Path, Path]:
    """Two 384x384 'videos' prepared by `gfvc sequences prepare --vertices` and a condition at 384."""
    from codecs_for_tests import vertex_template

    from gfvc.video import write_png_folder

    rng = np.random.default_rng(0)
    for name in ("talk_a", "talk_b"):
        write_png_folder(tmp_path / "videos" / name, rng.integers(0, 255, (3, 384, 384, 3), dtype=np.uint8))
    vdir = tmp_path / "verts"
    vdir.mkdir()
    np.save(vdir / "talk_a.npy", np.repeat(vertex_template()[None], 5, 0))   # one array per video
    (vdir / "talk_b").mkdir()                                               # or one file per frame
    for i in range(3):
        np.save(vdir / "talk_b" / f"{i:05d}.npy", vertex_template())
    assert main(["sequences", "prepare", str(tmp_path / "videos"), "--out", str(tmp_path / "ctc"), "--frames", "3",
                 "--vertices", str(vdir), "--vertices-source", "test template (not OSX)"]) == 0
    d = load_condition("gfvc-human").to_dict()
    d.update(name="v384", frames=3, codecs=["test-lossy", "test-vertices"],
             manifest=str(tmp_path / "ctc" / "manifest.yaml"))
    d["anchor"]["qps"] = [32, 56]
    d["generative"]["key_frame_qps"] = [32, 56]
    d["metrics"]["names"] = ["psnr"]
    d["bdrate"].update(anchor="test-lossy", metrics=["psnr"])
    cond = tmp_path / "v384.yaml"
    cond.write_text(yaml.safe_dump(d))
    return cond, tmp_path / "ctc" / "manifest.yaml"


def test_384_run_end_to_end_with_reference_vertices(ted384, tmp_path, capsys):
    cond, manifest = ted384
    entries = load_manifest(manifest)
    assert [e.vertices.source for e in entries] == ["test template (not OSX)"] * 2
    run = tmp_path / "run"
    assert main(["run", "--condition", str(cond), "--workdir", str(run), "-j", "1"]) == 0
    out = capsys.readouterr().out
    assert "Vertex prediction against reference vertices" in out
    assert "not applicable (no vertex output): test-lossy" in out
    recs = list(iter_records(run))
    assert len(recs) == 8
    for r in recs:
        v = r["vertex_metrics"]
        if r["codec"] == "test-lossy":
            assert v["status"] == "not_applicable" and "mean_px" not in json.dumps(v)
            continue
        # test-vertices: exact on the key frame, shifted by step/250 (normalised) on inter frames.
        step = r["rate_point"]["qp"] // 4
        want = step / 250 * 383 / 2
        assert v["status"] == "ok" and v["key_frame"]["mean_px"] == pytest.approx(0, abs=1e-4)
        assert v["inter_frames"]["mean_px"] == pytest.approx(want, rel=1e-4)
        assert v["inter_frames"]["p90_px"] == pytest.approx(want, rel=1e-4)
        assert v["inter_frames"]["pck"]["pck@10px"] == (1.0 if want <= 10 else 0.0)
        assert v["protocol"]["pck_thresholds_px"] == [2.0, 5.0, 10.0] and v["protocol"]["resolution"] == [384, 384]
        assert v["reference"]["sha256"] == next(e.vertices.sha256 for e in entries if e.name == r["sequence"]["name"])
        assert r["timings"]["decoder.vertex_head_s"] == pytest.approx(0.003)
        assert r["decoder_info"]["vertex_head_frames"] == 3 and r["decoder_info"]["vertex_head_device"] == "cpu"
        sample = np.load(run / r["artifacts"]["vertex_sample"])
        assert sample["frames"].shape == (3, 384, 384, 3) and list(sample["index"]) == [0, 1, 2]
        assert sample["pred"].shape == sample["ref"].shape == (3, 1746, 2)  # every 6th vertex
        np.testing.assert_array_equal(sample["pred"], np.load(run / r["artifacts"]["vertices"])[:, ::6])
    html = (run / "report" / "report.html").read_text()
    sec = html[html.index("2. Vertex prediction"):html.index("Appendix A")]
    assert sec.count("data:image/png;base64,") == 2  # one Figure-6 picture per sequence
    assert "not applicable (no vertex output)" in sec and "PROXY" not in sec
    s = json.loads((run / "report" / "summary.json").read_text())["vertices"]
    pts = {p["qp"]: p for p in s["codecs"]["test-vertices"]}
    assert pts[56]["inter_mean_px"] == pytest.approx(14 / 250 * 383 / 2, rel=1e-4)  # 10.72 px: PCK@10px = 0
    assert pts[56]["inter_pck@10px"] == 0.0 and pts[32]["inter_pck@10px"] == 1.0


def test_changed_reference_is_refused_before_any_job(ted384, tmp_path, capsys):
    cond, manifest = ted384
    e = load_manifest(manifest)[0]
    arr = np.load(e.vertices_path())
    np.save(e.vertices_path(), arr + 0.01)
    assert main(["run", "--condition", str(cond), "--workdir", str(tmp_path / "run"), "-j", "1"]) == 2
    assert "sha256 mismatch for reference vertices" in capsys.readouterr().err
    assert not (tmp_path / "run" / "records").exists()


def test_vertex_codec_without_reference_is_not_computed(small_condition, plugin_env, tmp_path):
    from gfvc.codec import Environment
    from suite.runner.plan import execute, plan_run

    entry = yaml.safe_load(small_condition.manifest_path.read_text())["sequences"][0]
    entry.pop("vertices")
    manifest = tmp_path / "m.yaml"
    manifest.write_text(yaml.safe_dump({"schema": 1, "sequences": [entry]}))
    plan = plan_run(small_condition, tmp_path / "run", Environment(), codecs=["test-vertices"], manifest=manifest)
    recs = execute(plan.jobs[:1])
    v = recs[0]["vertex_metrics"]
    assert v["status"] == "not_computed" and "has no reference vertices" in v["reason"]
    assert v["protocol"]["pck_thresholds_px"] == [1.0, 2.0, 5.0]


def test_prepare_refuses_missing_vertices(tmp_path, capsys):
    from gfvc.video import write_png_folder

    write_png_folder(tmp_path / "v" / "x", np.zeros((2, 8, 8, 3), np.uint8))
    (tmp_path / "verts").mkdir()
    assert main(["sequences", "prepare", str(tmp_path / "v"), "--out", str(tmp_path / "o"), "--size", "8",
                 "--frames", "2", "--vertices", str(tmp_path / "verts")]) == 2
    assert "no reference vertices for 'x'" in capsys.readouterr().err


# --------------------------------------------------------------------------- OSX tool
def _mesh(rng: np.random.Generator) -> np.ndarray:
    m = rng.normal(0, 0.3, (NUM_VERTICES, 3))
    m[:, 2] += 10.0  # in front of the camera
    return m


def test_osx_obj_with_bbox_projects_like_osx(tmp_path):
    from tools import osx_vertices as ox

    rng = np.random.default_rng(3)
    folder = tmp_path / "osx"
    bbox = [100.0, 50.0, 150.0, 200.0]  # processed box (x, y, w, h)
    meshes = []
    for i in range(2):
        d = folder / f"{i:05d}"
        d.mkdir(parents=True)
        m = _mesh(rng)
        meshes.append(m)
        (d / "person_0.obj").write_text("".join(f"v {a} {b} {c}\n" for a, b, c in m) + "f 1/1 2/2 3/3\n")
        (d / "person_0.json").write_text(json.dumps({"bbox": bbox}))
    arr, desc = ox.convert(folder, (384, 384))
    # OSX: fx = 5000/192*w, cx = 96/192*w + x; fy = 5000/256*h, cy = 128/256*h + y; corner origin -> -0.5.
    m = meshes[1]
    u = m[:, 0] / m[:, 2] * (5000 / 192 * 150) + 75 + 100 - 0.5
    v = m[:, 1] / m[:, 2] * (5000 / 256 * 200) + 100 + 50 - 0.5
    np.testing.assert_allclose(to_pixels(arr[1], 384, 384), np.stack([u, v], -1), atol=2e-3)
    assert desc["pixel_origin"] == "corner" and desc["frames_without_person"] == []


def test_osx_npz_npy_and_missing_person(tmp_path):
    from tools import osx_vertices as ox

    rng = np.random.default_rng(4)
    folder = tmp_path / "osx"
    folder.mkdir()
    m = _mesh(rng)
    np.savez(folder / "00000.npz", smplx_mesh_cam=m, focal=[5000.0, 5000.0], princpt=[192.0, 192.0])
    px = rng.uniform(0, 383, (NUM_VERTICES, 2))
    np.save(folder / "00001.npy", px)
    (folder / "00002").mkdir()  # OSX found nobody in this frame
    with pytest.raises(InputError, match="allow-missing"):
        ox.convert(folder, (384, 384), pixel_origin="center")
    arr, desc = ox.convert(folder, (384, 384), pixel_origin="center", allow_missing=True, size=(192, 192))
    assert desc["frames_without_person"] == [2] and np.isnan(arr[2]).all()
    want0 = np.stack([m[:, 0] / m[:, 2] * 5000 + 192, m[:, 1] / m[:, 2] * 5000 + 192], -1)
    # scaled from 384 to 192 px about pixel centres
    np.testing.assert_allclose(to_pixels(arr[0], 192, 192), (want0 + 0.5) / 2 - 0.5, atol=2e-3)
    np.testing.assert_allclose(to_pixels(arr[1], 192, 192), (px + 0.5) / 2 - 0.5, atol=2e-3)
    # The CLI writes the .npy and its description; prepare takes the result as VDIR/NAME.npy.
    out = tmp_path / "v" / "talk.npy"
    assert ox.main([str(folder), "--image-size", "384x384", "-o", str(out), "--allow-missing"]) == 0
    assert np.load(out).shape == (3, NUM_VERTICES, 2)
    assert json.loads(out.with_suffix(".json").read_text())["frames"] == 3
    assert ox.main([str(folder), "--image-size", "384x384", "-o", str(tmp_path / "x.txt")]) == 2


# ------------------------------------------------------------------- comparability
class _VertexCodec:
    name = "fake-vertices"
    vertex_extra = "vertices"

    def __init__(self, reason_for_proxy: str | None = None) -> None:
        self.reason_for_proxy, self.asked = reason_for_proxy, []

    def vertex_mismatch(self, reference_is_proxy: bool) -> str | None:
        self.asked.append(reference_is_proxy)
        return self.reason_for_proxy if reference_is_proxy else None


def test_vertices_in_another_vertex_order_are_not_scored():
    """A codec whose vertices do not follow the reference's vertex order gets its reason, never a number."""
    demo = load_condition("demo")
    entry = load_manifest(demo.manifest_path)[0]  # PROXY reference vertices
    ref = read_reference(builtin_path("carphone-proxy-vertices"), entry.vertices.sha256, 32)
    refuses = _VertexCodec("another template")
    block, sample = vm.evaluate_decoded(refuses, {"vertices": ref}, entry, demo)
    assert refuses.asked == [True]
    assert block["status"] == "not_computed" and block["reason"] == "another template" and sample is None
    assert "inter_frames" not in block and "per_frame" not in block
    accepts = _VertexCodec(None)  # no objection: scored (here the reference itself: zero error)
    block, sample = vm.evaluate_decoded(accepts, {"vertices": ref.copy()}, entry, demo)
    assert block["status"] == "ok" and "inter_frames" in block and sample is not None


def test_ihvc_proxy_mesh_vertices_are_not_compared_with_any_reference():
    from baselines.ihvc import IhvcCodec

    codec = IhvcCodec(load_condition("demo"))
    assert codec.config().options.get("mesh", "proxy") == "proxy"  # the demo checkpoint: no SMPL-X file here
    for proxy_reference in (True, False):
        reason = codec.vertex_mismatch(proxy_reference)
        assert reason and "PROXY body mesh" in reason
