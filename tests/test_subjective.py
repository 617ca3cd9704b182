"""Subjective-test material and analysis: playlists, clip files, MOS/DMOS with CIs, BT.500 screening.

Known answers: the synthetic score sheets are built here with a true quality
per clip and a fixed pattern of observer deviations; the expected MOS, DMOS and
confidence intervals are computed in the test with the textbook formulas
(statistics.mean / stdev and tabulated Student-t factors), not with the code
under test.
"""
from __future__ import annotations

import csv
import json
import math
import statistics
from pathlib import Path

import numpy as np
import pytest
from synthetic_media_run import BLOCK, N, index_of, make_run

from gfvc.errors import InputError
from gfvc.video import is_viewing_copy
from reports import media, subjective
from suite.cli.main import main

# two-sided 95 % Student t factors from the printed tables (degrees of freedom -> t)
T975 = {14: 2.1447866879, 15: 2.1314495456, 2: 4.3026527297, 3: 3.1824463053}

# each clip's 15 normal observers deviate from the truth by this multiset (rotated per clip):
# 3 x -1, 9 x 0, 3 x +1 (beta2 = 2.5, a "normal" distribution for BT.500's test)
PATTERN = [0, -1, 0, 0, 1, 0, 0, -1, 0, 1, 0, 0, -1, 0, 1]
OUTLIER = "O16"


def _acr_sheet(path: Path, *, outlier: bool = True) -> dict:
    """ACR-HR scores of 2 sequences x (reference + 2 codecs x 2 rates); returns the truth."""
    truth = {}
    clips = []
    for s in ("s1", "s2"):
        clips.append((f"{s}__reference", s, "reference", "", "", 1))
        truth[f"{s}__reference"] = 4
        for codec, q in (("a", {"qp42": 2, "qp32": 3}), ("b", {"qp42": 3, "qp32": 4})):
            for rp, v in q.items():
                cid = f"{s}__{codec}__{rp}"
                clips.append((cid, s, codec, rp, {"qp42": 3.0, "qp32": 9.0}[rp] + (codec == "b"), 0))
                truth[cid] = v
    rows = []
    for o in range(16 if outlier else 15):
        name = f"O{o + 1:02d}"
        for t, (cid, s, codec, rp, kbps, ref) in enumerate(clips, 1):
            if name == OUTLIER:  # 2 grades away: up where the truth is <= 3 (6 clips), else down (4 clips)
                v = truth[cid] + 2 if truth[cid] <= 3 else truth[cid] - 2
            else:
                v = truth[cid] + PATTERN[(o + t) % 15]
            rows.append(["acr-hr", name, t, cid, s, codec, rp, rp[2:] if rp else "", kbps, ref, v])
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(list(subjective.SHEET_COMMON) + ["score"])
        w.writerows(rows)
    return {"truth": truth, "rows": rows}


def _by_observer(rows, col=10):
    d = {}
    for r in rows:
        d.setdefault(r[1], {})[r[3]] = float(r[col])
    return d


def test_acr_hr_mos_dmos_ci_and_screening_known_answers(tmp_path):
    sheet = tmp_path / "scores.csv"
    data = _acr_sheet(sheet)
    res = subjective.analyse(subjective.read_scores(sheet))
    # the planted outlier is flagged (P and Q both non-zero), the 15 others are kept
    assert res["rejected"] == [OUTLIER]
    flags = {o["observer"]: o for o in res["observers"]}
    assert flags[OUTLIER]["p"] > 0 and flags[OUTLIER]["q"] > 0 and "0.05" in flags[OUTLIER]["reason"]
    assert not flags["O01"]["rejected"] and flags["O01"]["p"] == flags["O01"]["q"] == 0
    # hand formulas on the 15 kept observers
    per = _by_observer(data["rows"])
    kept = [f"O{i:02d}" for i in range(1, 16)]
    rows = {r["clip_id"]: r for r in res["clips"]}
    for cid, true in data["truth"].items():
        xs = [per[o][cid] for o in kept]
        assert rows[cid]["mos"] == pytest.approx(statistics.mean(xs)) == pytest.approx(true)
        assert rows[cid]["mos_ci95"] == pytest.approx(T975[14] * statistics.stdev(xs) / math.sqrt(15), rel=1e-9)
        ref = cid.split("__")[0] + "__reference"
        dv = [per[o][cid] - per[o][ref] + 5 for o in kept]  # P.910 6.2
        assert rows[cid]["dmos"] == pytest.approx(statistics.mean(dv))
        assert rows[cid]["dmos"] == pytest.approx(true - 4 + 5)
        if statistics.stdev(dv) > 0:
            assert rows[cid]["dmos_ci95"] == pytest.approx(T975[14] * statistics.stdev(dv) / math.sqrt(15), rel=1e-9)
    # per codec x rate point: each observer's mean over the two sequences, then over observers
    cond = {(r["codec"], r["rate_point"]): r for r in res["conditions"]}
    xs = [(per[o]["s1__b__qp32"] - per[o]["s1__reference"] + per[o]["s2__b__qp32"] - per[o]["s2__reference"]) / 2 + 5
          for o in kept]
    c = cond[("b", "qp32")]
    assert c["dmos"] == pytest.approx(statistics.mean(xs)) and c["kbps"] == pytest.approx(10.0)
    assert c["dmos_ci95"] == pytest.approx(T975[14] * statistics.stdev(xs) / math.sqrt(15), rel=1e-9)
    # without screening the outlier stays in (16 observers)
    res2 = subjective.analyse(subjective.read_scores(sheet), screening=False)
    r2 = {r["clip_id"]: r for r in res2["clips"]}
    xs16 = [per[o]["s1__a__qp42"] for o in kept + [OUTLIER]]
    assert r2["s1__a__qp42"]["mos_n"] == 16
    assert r2["s1__a__qp42"]["mos_ci95"] == pytest.approx(T975[15] * statistics.stdev(xs16) / 4, rel=1e-9)


def test_no_outlier_no_rejection(tmp_path):
    _acr_sheet(tmp_path / "s.csv", outlier=False)
    assert subjective.analyse(subjective.read_scores(tmp_path / "s.csv"))["rejected"] == []


def test_repetitions_are_averaged_per_observer_first(tmp_path):
    # 3 observers, one clip pair (DCR), two repetitions each
    scores = {"O1": (5, 4), "O2": (3, 3), "O3": (4, 2)}
    p = tmp_path / "dcr.csv"
    with open(p, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(list(subjective.SHEET_COMMON) + ["score"])
        for o, (a, b) in scores.items():
            w.writerow(["dcr", o, 1, "s__c__qp32", "s", "c", "qp32", 32, 5.0, 0, a])
            w.writerow(["dcr", o, 2, "s__c__qp32", "s", "c", "qp32", 32, 5.0, 0, b])
    res = subjective.analyse(subjective.read_scores(p), screening=False)
    means = [4.5, 3.0, 3.0]
    r = res["clips"][0]
    assert r["mos"] == pytest.approx(statistics.mean(means)) and r["mos_n"] == 3
    assert r["mos_ci95"] == pytest.approx(T975[2] * statistics.stdev(means) / math.sqrt(3))


def test_dscqs_difference_scores_follow_the_a_b_order(tmp_path):
    p = tmp_path / "dscqs.csv"
    rows = [("O1", "reference", 80, 50), ("O2", "impaired", 40, 90), ("O3", "reference", 70, 60),
            ("O4", "impaired", 55, 75)]
    with open(p, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(list(subjective.SHEET_COMMON) + ["a_is", "score_a", "score_b"])
        for o, a_is, a, b in rows:
            w.writerow(["dscqs", o, 1, "s__c__qp32", "s", "c", "qp32", 32, 5.0, 0, a_is, a, b])
    res = subjective.analyse(subjective.read_scores(p), screening=False)
    diffs = [30, 50, 10, 20]  # reference - impaired
    tests = [50, 40, 60, 55]
    r = res["clips"][0]
    assert r["dmos"] == pytest.approx(statistics.mean(diffs))
    assert r["dmos_ci95"] == pytest.approx(T975[3] * statistics.stdev(diffs) / 2)
    assert r["mos"] == pytest.approx(statistics.mean(tests))
    assert res["primary"] == {"value": "dmos", "label": "DSCQS difference (reference - impaired)",
                              "higher_is_better": False}


@pytest.mark.parametrize("edit, message", [
    (lambda h, r: (h[:-1], [x[:-1] for x in r]), "missing column(s) score"),
    (lambda h, r: (h, [r[0][:-1] + ["6"]] + r[1:]), "score 6 is outside the acr-hr scale"),
    (lambda h, r: (h, [r[0][:-1] + ["3.5"]] + r[1:]), "outside the acr-hr scale (integers 1..5)"),
    (lambda h, r: (h, [r[0][:-1] + [""]] + r[1:]), "not filled in"),
])
def test_bad_score_sheet_is_one_line_exit_2(tmp_path, capsys, edit, message):
    good = tmp_path / "good.csv"
    _acr_sheet(good)
    with open(good) as f:
        rows = list(csv.reader(f))
    h, r = edit(rows[0], rows[1:])
    bad = tmp_path / "bad.csv"
    with open(bad, "w", newline="") as f:
        csv.writer(f).writerows([h] + r)
    assert main(["subjective", "analyse", str(bad), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err


def test_analyse_cli_writes_json_and_csv(tmp_path, capsys):
    _acr_sheet(tmp_path / "scores.csv")
    assert main(["subjective", "analyse", str(tmp_path / "scores.csv")]) == 0
    out = capsys.readouterr().out
    assert f"rejected {OUTLIER}" in out and "15 of 16 observers kept" in out
    res = json.loads((tmp_path / "subjective_result.json").read_text())
    assert res["rejected"] == [OUTLIER] and res["method"] == "acr-hr"
    with open(tmp_path / "subjective_observers.csv") as f:
        obs = list(csv.DictReader(f))
    assert [o["observer"] for o in obs if o["rejected"] == "True"] == [OUTLIER]
    assert (tmp_path / "subjective_conditions.csv").read_text().startswith("codec,rate_point")


# ------------------------------------------------------------------------------------------- prepare
@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    return make_run(tmp_path_factory.mktemp("subj") / "run", ("seqA", "seqB"))


def _prepare(run: Path, out: Path, method: str, seed: int = 3, reps: int = 2, observers: int = 3) -> dict:
    assert main(["subjective", "prepare", str(run), "--method", method, "--observers", str(observers),
                 "--repetitions", str(reps), "--seed", str(seed), "--out", str(out),
                 "--data-dir", str(run / "data")]) == 0
    return json.loads((out / "playlist.json").read_text())


def test_prepare_acr_hr_playlist(run, tmp_path):
    plan = _prepare(run, tmp_path / "acr", "acr-hr")
    clips = plan["clips"]
    refs = [c for c, v in clips.items() if v["reference"]]
    assert sorted(refs) == ["seqA__reference", "seqB__reference"] and len(clips) == 10
    orders = []
    for obs in plan["observers"]:
        ids = [t["clip_id"] for t in obs["trials"]]
        # every clip, hidden references included, exactly `repetitions` times
        assert sorted(ids) == sorted(list(clips) * 2)
        # a grey voting period (10 s) after every clip; no two neighbours of the same sequence
        for t in obs["trials"]:
            assert [i["kind"] for i in t["items"]] == ["clip", "grey"] and t["items"][1]["duration_s"] == 10.0
        seqs = [clips[i]["sequence"] for i in ids]
        assert all(a != b for a, b in zip(seqs, seqs[1:], strict=False))
        orders.append(ids)
    assert len({tuple(o) for o in orders}) == 3  # each observer their own order
    again = _prepare(run, tmp_path / "acr2", "acr-hr")
    assert [[t["clip_id"] for t in o["trials"]] for o in again["observers"]] == orders  # same seed, same order
    other = _prepare(run, tmp_path / "acr3", "acr-hr", seed=4)
    assert [[t["clip_id"] for t in o["trials"]] for o in other["observers"]] != orders
    # score sheet: one empty row per observer and trial
    with open(tmp_path / "acr" / "scores_template.csv") as f:
        sheet = list(csv.DictReader(f))
    assert len(sheet) == 3 * 20 and all(r["score"] == "" for r in sheet)
    assert (tmp_path / "acr" / "playlists" / "O02.m3u").read_text().startswith("#EXTM3U")


def test_prepare_dcr_and_dscqs_pair_each_clip_with_its_reference(run, tmp_path):
    dcr = _prepare(run, tmp_path / "dcr", "dcr", reps=1)
    for obs in dcr["observers"]:
        assert len(obs["trials"]) == 8  # the reference is never a trial of its own
        for t in obs["trials"]:
            kinds = [(i["kind"], i.get("role")) for i in t["items"]]
            assert kinds == [("clip", "reference"), ("grey", None), ("clip", "impaired"), ("grey", None)]
            seq = dcr["clips"][t["clip_id"]]["sequence"]
            assert t["items"][0]["clip_id"] == f"{seq}__reference" and t["items"][1]["duration_s"] == 2.0
    dscqs = _prepare(run, tmp_path / "dscqs", "dscqs", reps=1, observers=4)
    a_is = []
    for obs in dscqs["observers"]:
        for t in obs["trials"]:
            it = t["items"]
            assert [i["kind"] for i in it] == ["clip", "grey"] * 4 and it[1]["duration_s"] == 3.0
            assert it[0]["clip_id"] == it[4]["clip_id"] and it[2]["clip_id"] == it[6]["clip_id"]
            ref_first = it[0]["clip_id"].endswith("__reference")
            assert t["a_is"] == ("reference" if ref_first else "impaired")
            a_is.append(t["a_is"])
    assert {"reference", "impaired"} <= set(a_is)  # the A/B order is randomised


def test_clip_files_are_lossless_copies_and_marked_as_viewing_copies(run, tmp_path):
    out = tmp_path / "acr"
    plan = _prepare(run, out, "acr-hr", reps=1, observers=1)
    for c in plan["clips"].values():
        f = out / c["file"]
        assert is_viewing_copy(f), f
        got = [np.asarray(fr.to_ndarray()) for fr in media.container_frames(f)]
        assert len(got) == N
        if c["reference"]:  # the source frames: index block readable, green background
            rgb = [fr.to_ndarray(format="rgb24") for fr in media.container_frames(f)]
            assert [index_of(x[2:BLOCK - 2, 2:BLOCK - 2].mean()) for x in rgb] == list(range(N))
        else:  # the decoded viewing copy's own yuv420p planes, bit for bit
            src = run / json.loads((run / "records" / f"{c['sequence']}-{c['codec']}-{c['qp']}.json").read_text())[
                "artifacts"]["decoded_mp4"]
            want = [np.asarray(fr.to_ndarray()) for fr in media.container_frames(src)]
            assert all(np.array_equal(a, b) for a, b in zip(got, want, strict=True))
    grey = [np.asarray(fr.to_ndarray(format="rgb24"))
            for fr in media.container_frames(out / "grey" / "grey_10000ms.mkv")]
    assert len(grey) == 250 and abs(float(grey[0].mean()) - subjective.GREY_LEVEL) <= 1


def test_prepare_without_originals_says_how_to_fix(run, tmp_path, capsys):
    assert main(["subjective", "prepare", str(run), "--method", "acr-hr", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--data-dir" in err


def test_unknown_codec_filter_is_refused(run, tmp_path, capsys):
    assert main(["subjective", "prepare", str(run), "--method", "dcr", "--codecs", "gamma",
                 "--out", str(tmp_path / "x"), "--data-dir", str(run / "data")]) == 2
    assert "gamma" in capsys.readouterr().err


def test_report_shows_mos_vs_rate_next_to_the_objective_curves(tmp_path):
    """`gfvc report --subjective RESULT.json`: a figure, a section in report.md/html, an entry in summary.json."""
    from reports import build_report

    data = Path(__file__).parent / "data" / "reports" / "run"
    sheet = tmp_path / "scores.csv"
    _acr_sheet(sheet)
    text = sheet.read_text().replace(",a,", ",s2d,").replace(",b,", ",vvenc,")
    sheet.write_text(text)
    assert main(["subjective", "analyse", str(sheet), "--out", str(tmp_path / "res")]) == 0
    result = tmp_path / "res" / "subjective_result.json"
    paths = build_report(data, formats=("md", "html", "json", "png"), out_dir=tmp_path / "rep", subjective=[result])
    png = paths["png:subjective_rd_acr-hr"]
    assert png.stat().st_size > 10_000
    md = paths["md"].read_text()
    assert "## Subjective test: Absolute category rating with hidden reference" in md and png.name in md
    assert "rejected O16" in md and "P.910" in md
    html = paths["html"].read_text()
    assert html.count("<svg") >= 2 and "Subjective test" in html
    entry = json.loads(paths["json"].read_text())["subjective"][0]
    assert entry["method"] == "acr-hr" and entry["rejected"] == [OUTLIER]
    assert {c["codec"] for c in entry["conditions"]} == {"s2d", "vvenc", "reference"}
    # a file that is not a result: one clear error
    other = tmp_path / "other.json"
    other.write_text("{}")
    with pytest.raises(InputError, match="not a subjective result"):
        build_report(data, formats=("md",), out_dir=tmp_path / "rep2", subjective=[other])
