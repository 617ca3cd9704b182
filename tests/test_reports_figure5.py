"""Figure 5 (decoded frames of every codec at a matched rate): stills kept by jobs, selection, documents."""
from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from gfvc.codec import Environment
from gfvc.errors import ConfigError
from gfvc.records import iter_records
from gfvc.stills import Still, candidate_frames, png_bytes, read_png
from reports import figure5 as f5
from reports.document import report_model
from reports.synthetic import CONDITION, make_run, synthetic_decoded, synthetic_frames
from suite.cli.main import main
from suite.runner.jobs import make_codec
from suite.runner.plan import plan_run

DATA = Path(__file__).parent / "data" / "reports"
SMALL = {**copy.deepcopy(CONDITION), "width": 48, "height": 48, "frames": 12}
SMALL["metrics"]["names"] = ["psnr", "ssim", "dists", "lpips", "fvd"]


@pytest.fixture(scope="module")
def stills_run(tmp_path_factory):
    """A synthetic run (3 codecs, 2 sequences, 4 rate points) whose jobs kept stills."""
    return make_run(tmp_path_factory.mktemp("f5") / "run", sequences=("seq_a", "seq_b"), condition=SMALL, stills=True,
                    not_computed={"fvd": "weight file i3d_torchscript.pt missing"})


def _copy(run: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "run"
    shutil.copytree(run, dst)
    return dst


# ------------------------------------------------------------------------ pure selection rules
def test_closest_rate_point_and_tie_goes_to_the_lower_rate():
    pts = [f5.Point("c", 52, 10.0, "k52"), f5.Point("c", 42, 20.0, "k42"), f5.Point("c", 32, 40.0, "k32")]
    assert f5.closest_by_rate(pts, 16.0).qp == 42          # |20-16| = 4 < |10-16| = 6
    assert f5.closest_by_rate(pts, 15.0).qp == 52          # tie 5 / 5: the lower rate
    assert f5.closest_by_rate(pts, 1000.0).qp == 32
    assert f5.closest_by_rate(list(reversed(pts)), 15.0).qp == 52  # order of the points does not matter


def test_target_by_quality():
    pts = [f5.Point("c", 52, 10.0, "a", 0.30), f5.Point("c", 42, 20.0, "b", 0.20),
           f5.Point("c", 32, 40.0, "c", 0.12), f5.Point("c", 22, 80.0, "d", None)]
    assert f5.closest_by_quality(pts, 0.18).qp == 42
    assert f5.closest_by_quality(pts, 0.25).qp == 52        # tie 0.05 / 0.05: the lower rate
    assert f5.closest_by_quality(pts, 0.0).qp == 32          # the point without a value is never chosen
    assert f5.closest_by_quality([f5.Point("c", 1, 1.0, "x", None)], 0.2) is None


def test_frame_choice_by_largest_disagreement_and_auto_crop():
    base = np.full((16, 16, 3), 100, np.uint8)
    loud = base.copy()
    loud[4:8, 10:14] = 250
    # frame 3: the codecs differ in a 4x4 block; frame 5: they agree; frame 7: they differ less
    frames = {3: [base, loud], 5: [base, base], 7: [base, np.clip(base.astype(int) + 10, 0, 255).astype(np.uint8)]}
    scores = {f: float(f5.disagreement(fs).mean()) for f, fs in frames.items()}
    assert scores[5] == 0.0 and scores[3] > scores[7] > 0
    assert f5.most_different(scores, 1) == [3]
    assert f5.most_different(scores, 2) == [3, 7]              # shown in frame order
    assert f5.most_different({2: 1.0, 9: 1.0, 4: 0.5}, 1) == [2]  # tie: the earlier frame
    x, y, w, h = f5.auto_crop(f5.disagreement(frames[3]), 4)
    assert (x, y, w, h) == (10, 4, 4, 4)
    assert f5.crop_size(128, 128) == 32 and f5.crop_size(48, 64) == 16 and f5.crop_size(12, 12) == 12


def test_candidate_frames_come_from_the_original_alone():
    orig = np.zeros((32, 8, 8, 3), np.uint8)
    orig[5] = 200  # the largest change from key frame 0
    assert candidate_frames(orig) == [5, 11, 21, 31]
    assert candidate_frames(orig, extra=[7, 99]) == [5, 7, 11, 21, 31]  # a frame past the end is ignored
    assert candidate_frames(orig[:1]) == [0]
    assert candidate_frames(orig[:3]) == [1, 2]


def test_option_parsing():
    assert f5.parse_quality("DISTS = 0.25") == ("dists", 0.25)
    assert f5.parse_crop("8,4,16,12") == (8, 4, 16, 12) and f5.parse_crop("none") is None
    assert f5.parse_crop("AUTO") == "auto"
    for bad in ("dists", "=3", "psnr=nan", "psnr=abc"):
        with pytest.raises(ConfigError):
            f5.parse_quality(bad)
    for bad in ("1,2,3", "1,2,0,4", "a,b,c,d", "-1,2,3,4"):
        with pytest.raises(ConfigError):
            f5.parse_crop(bad)


# ------------------------------------------------------------------------ on a run with stills
def test_default_target_is_the_anchors_lowest_rate_point(stills_run):
    model = report_model(stills_run)
    fig = f5.build(model)
    assert not fig.missing and not fig.notes and [p.sequence for p in fig.panels] == ["seq_a", "seq_b"]
    df = model.df
    for p in fig.panels:
        anchor = df[(df["codec"] == "vvenc") & (df["sequence"] == p.sequence)]
        target = float(anchor["kbps"].min())
        assert f"closest to {target:.2f} kbps" in p.caption() and "anchor vvenc's lowest rate point" in p.caption()
        assert [t.codec for t in p.tiles] == ["vvenc", "keyframe-repeat", "s2d"]
        for t in p.tiles:  # each codec's choice is its point nearest to the target
            sub = df[(df["codec"] == t.codec) & (df["sequence"] == p.sequence)]
            best = sub.iloc[int(np.argmin(np.abs(sub["kbps"].to_numpy() - target)))]
            assert (t.qp, t.kbps) == (int(best["qp"]), float(best["kbps"]))
        lo, hi = p.kbps_range
        assert f"chosen rates {lo:.2f}-{hi:.2f} kbps" in p.caption()


def test_stills_are_exact_and_metric_values_are_of_that_frame(stills_run):
    model = report_model(stills_run)
    p = f5.build(model).panels[0]
    seq, frame = p.sequence, p.frames[0]
    orig = synthetic_frames(seq, SMALL["frames"], SMALL["height"], SMALL["width"])
    for t in p.tiles:
        s = t.still(frame)
        dec = synthetic_decoded(orig, t.codec, int(t.qp))[frame]
        np.testing.assert_array_equal(read_png(s.decoded), dec)
        np.testing.assert_array_equal(read_png(s.original), orig[frame])
        mse = np.mean((orig[frame].astype(float) - dec.astype(float)) ** 2)
        assert s.value("psnr") == pytest.approx(10 * np.log10(255 ** 2 / mse), rel=1e-9)
        assert s.metrics["dists"]["status"] == "not_computed" and "weight" in s.metrics["dists"]["reason"]
    assert "DISTS n/a (weights missing), LPIPS n/a (weights missing)" in p.caption()
    first, second = f5._value_line(p.tiles[0].still(frame), p.learned)
    assert first.startswith("PSNR ") and " dB · SSIM 0." in first
    assert second == "DISTS/LPIPS n/a (weights missing)"


def test_frame_where_the_codecs_differ_most_is_chosen(stills_run, tmp_path):
    run = _copy(stills_run, tmp_path)
    model = report_model(run)
    p = f5.build(model).panels[0]
    kept = p.tiles[0].stills.frames
    assert kept == candidate_frames(synthetic_frames("seq_a", SMALL["frames"], SMALL["height"], SMALL["width"]))
    other = next(f for f in kept if f not in p.frames)
    # make the codecs disagree strongly in another kept frame: that frame must be chosen now
    s2d = next(t for t in p.tiles if t.codec == "s2d").still(other).decoded
    s2d.write_bytes(png_bytes(255 - read_png(s2d)))
    q = f5.build(report_model(run)).panels[0]
    assert q.frames == [other] and q.scores[other] == max(q.scores.values())
    assert f"frame {other}: {q.scores[other]:.1f}" in q.caption()
    assert f5.build(report_model(run), f5.Options(frame_count=2)).panels[0].frames == sorted([other, p.frames[0]])


def test_target_by_rate_and_by_quality(stills_run):
    model = report_model(stills_run)
    hi = f5.build(model, f5.Options(rate_kbps=1e6)).panels[0]
    df = model.df
    for t in hi.tiles:  # far above every rate: each codec's highest rate point
        assert t.kbps == float(df[(df["codec"] == t.codec) & (df["sequence"] == "seq_a")]["kbps"].max())
    assert "closest to 1e+06 kbps (--figure-rate)" in hi.caption()
    q = f5.build(model, f5.Options(quality=("ssim", 0.8))).panels[0]
    for t in q.tiles:
        sub = df[(df["codec"] == t.codec) & (df["sequence"] == "seq_a")]
        assert t.quality == pytest.approx(float(sub.iloc[int(np.argmin(np.abs(sub["ssim"] - 0.8)))]["ssim"]))
    assert "SSIM (sequence value) is closest to 0.8" in q.caption()
    with pytest.raises(ConfigError, match="no values"):
        f5.build(model, f5.Options(quality=("fvd", 100.0)))


def test_named_frames_that_were_not_kept_say_so_with_the_fix(stills_run, tmp_path, capsys):
    run = _copy(stills_run, tmp_path)
    model = report_model(run)
    kept = f5.build(model).panels[0].tiles[0].stills.frames
    fig = f5.build(model, f5.Options(frames=(1, kept[0])))
    assert [p.frames for p in fig.panels] == [[kept[0]], [kept[0]]]
    assert any("frame 1 not kept by the jobs" in n and "--keep-frames 1 --force" in n for n in fig.notes)
    assert main(["report", str(run), "--figure-frames", "1", "--format", "md"]) == 0
    md = (run / "report" / "report.md").read_text()
    line = next(ln for ln in md.splitlines() if ln.startswith("Figure 5 not drawn"))
    assert "frame 1 not kept" in line and "--keep-frames 1 --force" in line


def test_documents_show_figure5(stills_run, tmp_path):
    run = _copy(stills_run, tmp_path)
    assert main(["report", str(run), "--format", "md", "--format", "html", "--format", "tex", "--format", "json",
                 "--figure-sequences", "seq_b", "--figure-crop", "4,4,16,16"]) == 0
    out = run / "report"
    data = json.loads((out / "figure5.json").read_text())
    assert [p["sequence"] for p in data["panels"]] == ["seq_b"] and data["panels"][0]["crop"] == [4, 4, 16, 16]
    png = out / "figure5_seq_b.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = (out / "report.md").read_text()
    assert "![Figure 5 layout: figure5_seq_b](figure5_seq_b.png)" in md and "(--figure-crop, yellow box)" in md
    html = (out / "report.html").read_text()
    sec = html[html.index("Visual comparison (Figure 5 layout)"):]
    assert sec.count('src="data:image/png;base64,') >= 1 and "figure5" not in html.split("<body>")[0]
    tex = (out / "tables.tex").read_text()
    assert r"\includegraphics[width=\linewidth]{figure5_seq_b.png}" in tex and r"\usepackage{graphicx}" in tex
    assert r"\begin{figure}" in tex and "chosen rates" in tex


def test_old_run_without_stills_reports_why(tmp_path):
    run = _copy(DATA / "run", tmp_path)
    assert main(["report", str(run), "--format", "md", "--format", "html", "--format", "tex"]) == 0
    md = (run / "report" / "report.md").read_text()
    lines = [ln for ln in md.splitlines() if "Figure 5 not drawn" in ln]
    assert len(lines) == 1 and "keep no exact decoded frames" in lines[0] and "--force" in lines[0]
    assert "Figure 5 not drawn" in (run / "report" / "report.html").read_text()
    assert "% Figure 5 not drawn" in (run / "report" / "tables.tex").read_text()


@pytest.mark.parametrize("args, what", [
    (["--figure-sequences", "nope"], "no sequence 'nope'"),
    (["--figure-quality", "fvd=100"], "has no values"),
    (["--figure-quality", "psnr"], "expected METRIC=VALUE"),
    (["--figure-crop", "1,2,3"], "expected x,y,w,h"),
    (["--figure-crop", "40,40,16,16"], "outside the 48x48 frames"),
    (["--figure-frames", "a,b"], "expected comma-separated frame numbers"),
    (["--figure-rate", "1", "--figure-quality", "psnr=30"], "not allowed with"),
])
def test_bad_figure_options_are_one_line_exit_2(stills_run, tmp_path, capsys, args, what):
    run = _copy(stills_run, tmp_path)
    with pytest.raises(SystemExit) as e:  # argparse errors exit 2 themselves
        raise SystemExit(main(["report", str(run), "--format", "md", *args]))
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert what in err and len(err.splitlines()) == 1
    assert not (run / "report" / "report.md").exists()  # nothing written


# ------------------------------------------------------------------------ a real run
def test_run_keeps_exact_stills_and_report_draws_figure5(small_condition, plugin_env, tmp_path, monkeypatch):
    """Two test codecs, 4 frames: stills are the decoder's frames; --keep-frames adds one and keeps the keys."""
    monkeypatch.setenv("GFVC_TEST_SLOW_S", "0")
    run = tmp_path / "run"
    assert main(["run", "--condition", small_condition.source, "--codec", "test-lossy", "--codec", "test-slow",
                 "--workdir", str(run), "-j", "1", "--no-report", "--keep-frames", "1"]) == 0
    recs = list(iter_records(run))
    assert len(recs) == 4
    plan = plan_run(small_condition, run, Environment(), codecs=["test-lossy", "test-slow"])
    assert {j.key for j in plan.jobs} == {r["key"] for r in recs}  # keeping frames changes no key
    for r in recs:
        info = json.loads((run / r["artifacts"]["stills"]).read_text())
        assert info["frames"] == [1, 2, 3] and info["extra_frames"] == [1]  # 4 frames: 2, 3 and the named 1
        codec = make_codec(r["codec"], small_condition, Environment())
        dec = codec.decode(run / r["artifacts"]["bitstream"], tmp_path).frames
        for k, e in info["stills"].items():
            np.testing.assert_array_equal(read_png(run / e["decoded"]), dec[int(k)])
            assert e["metrics"]["psnr"]["status"] == "ok" and "dists" not in e["metrics"]
    assert main(["report", str(run), "--anchor", "test-lossy", "--format", "md", "--format", "json",
                 "--format", "docx", "--figure-frames", "1"]) == 0
    data = json.loads((run / "report" / "figure5.json").read_text())
    (panel,) = data["panels"]
    assert panel["frames"] == [1] and [c["codec"] for c in panel["codecs"]] == ["test-lossy", "test-slow"]
    assert (run / "report" / f"figure5_{panel['sequence']}.png").is_file()


def test_learned_values_are_shown_when_computed(tmp_path):
    ok = {"psnr": {"value": 30.0, "status": "ok"}, "ssim": {"value": 0.9, "status": "ok"},
          "dists": {"value": 0.125, "status": "ok"}, "lpips": {"value": None, "status": "not_computed",
                                                               "reason": "non-finite result (nan)"}}
    s = Still(3, tmp_path / "d.png", tmp_path / "o.png", ok)
    assert f5._value_line(s, ["dists", "lpips"]) == ("PSNR 30.00 dB · SSIM 0.900",
                                                     "DISTS 0.125 · LPIPS n/a (not computed)")
    assert f5._learned_text([s], ["dists", "lpips"]) == ", DISTS, LPIPS n/a (not computed)"
    assert f5._value_line(s, []) == ("PSNR 30.00 dB · SSIM 0.900", "")


def test_rerun_hint_merges_keep_frames(stills_run):
    model = report_model(stills_run)
    model.run["argv"] = ["gfvc", "run", "demo", "--keep-frames", "3,9", "-j", "2"]
    assert f5.rerun_hint(model, [7]) == "gfvc run demo -j 2 --keep-frames 3,7,9 --force"
    model.run["argv"] = ["gfvc", "run", "--keep-frames=4", "--force"]
    assert f5.rerun_hint(model) == "gfvc run --keep-frames 4 --force"
    assert f5.rerun_hint(model, [1]) == "gfvc run --keep-frames 1,4 --force"
