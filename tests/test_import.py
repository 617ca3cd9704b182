"""`gfvc import`: results produced elsewhere, scored like native ones (docs/importing.md).

The central check: a folder in the AhG software's layout, made from a native
run's own decoded frames and bitstream bytes, imported under another codec
name, gives exactly the native codec's Table-1 numbers (BD-rates, kbps,
metric values). The native run is the demo condition cut to 6 frames with
the VVenC anchor and keyframe-repeat (PSNR/SSIM only, so BD-rates exist
without learned-metric weights).
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from gfvc import container
from gfvc.codec import Environment
from gfvc.records import iter_records, results_table
from gfvc.video import write_png_folder, write_rgb_planar, write_yuv420
from reports.document import report_model
from suite.cli.main import main
from suite.runner.jobs import make_codec
from test_conditions import load_condition

NATIVE = "keyframe-repeat"
DESC = "keyframe-repeat of a native run, rewritten in the AhG layout by tests/test_import.py"


@pytest.fixture(scope="module")
def native(tmp_path_factory):
    """A native run (vvenc + keyframe-repeat, 6 frames, 4 rate points each) and its condition file."""
    base = tmp_path_factory.mktemp("native")
    demo = load_condition("demo")
    d = demo.to_dict()
    d.update(name="import-test", frames=6, codecs=["vvenc", NATIVE], manifest=str(demo.manifest_path))
    d["metrics"]["names"] = ["psnr", "ssim"]
    d["bdrate"]["metrics"] = ["psnr", "ssim"]
    cond_path = base / "cond.yaml"
    cond_path.write_text(yaml.safe_dump(d))
    run = base / "run"
    assert main(["run", "--condition", str(cond_path), "--workdir", str(run), "-j", "1", "--no-report"]) == 0
    cond = load_condition(cond_path)
    codec = make_codec(NATIVE, cond, Environment(device="cpu"))
    decoded, names = {}, set()
    for r in iter_records(run):
        if r["codec"] == NATIVE:
            bs = run / r["artifacts"]["bitstream"]
            decoded[r["rate_point"]["qp"]] = (bs, codec.decode(bs, base / "dec").frames)
            names.add(r["sequence"]["name"])
    (name,) = names
    return {"run": run, "cond": cond_path, "decoded": decoded, "sequence": name}


def write_ahg(native: dict, out: Path, *, tag: str = "qp", metadata: bytes = b"") -> Path:
    """The native keyframe-repeat results as the AhG software lays them out (experiment/MODEL/Iframe_YUV420).

    The key-frame payload goes to enc/SEQ_qpQP/frame0000.bin, the container's remaining bytes are split over
    one kp/SEQ_qpQP/frameNNNN.bin per inter frame (same total), plus the files the AhG software leaves that
    a decoder does not need (VTM reconstruction, log, feature dumps, mp4 viewing copy).
    """
    root = out / "experiment" / "KFR" / "Iframe_YUV420"
    seq = native["sequence"]
    for qp, (bs, frames) in native["decoded"].items():
        data = bs.read_bytes()
        key = container.unpack(data).key_payload
        rest = data.replace(key, b"", 1)
        folder = f"{seq}_{tag}{qp}"
        (root / "dec").mkdir(parents=True, exist_ok=True)
        write_rgb_planar(root / "dec" / f"{folder}.rgb", frames)
        (root / "dec" / f"{folder}.mp4").write_bytes(b"viewing copy")
        enc, kp = root / "enc" / folder, root / "kp" / folder
        enc.mkdir(parents=True)
        kp.mkdir(parents=True)
        (enc / "frame0000.bin").write_bytes(key)
        (enc / "frame0000_rec.yuv").write_bytes(bytes(1000))
        (enc / "frame0000.log").write_text("VTM log")
        n = frames.shape[0]
        for i in range(1, n):
            (kp / f"frame{i:04d}.bin").write_bytes(rest[(i - 1) * len(rest) // (n - 1): i * len(rest) // (n - 1)])
            (kp / f"frame{i}.txt").write_text("[0.1,0.2]")
        if metadata:
            (kp / "metadata.bin").write_bytes(metadata)
    return root.parent


def _import(run: Path, ahg: Path, native: dict, *extra: str, codec: str = "kfr-ahg") -> int:
    return main(["import", str(run), "--ahg", str(ahg), "--codec", codec, "--condition", str(native["cond"]),
                 "--description", DESC, "--commit", "0123abc", *extra])


def _copy(native: dict, dst: Path) -> Path:
    shutil.copytree(native["run"], dst)
    return dst


def _rows(run: Path, codec: str) -> dict[int, dict]:
    df = results_table(run)
    return {int(r["qp"]): r for r in df[df["codec"] == codec].to_dict("records")}


def test_ahg_import_reproduces_native_table1(native, tmp_path, capsys):
    run = _copy(native, tmp_path / "run")
    argv_before = json.loads((run / "run.json").read_text())["argv"]
    ahg = write_ahg(native, tmp_path / "ahg")
    assert _import(run, ahg, native) == 0  # experiment/KFR: its only Iframe_* folder is found
    out = capsys.readouterr()
    assert "4 results (0 already imported, 4 to score)" in out.err
    assert "kfr-ahg: imported results (provenance as stated: " + DESC in out.out  # the report's banner

    model = report_model(run)
    assert {"kfr-ahg", NATIVE} <= set(model.tests) and {"psnr", "ssim"} <= set(model.computed_bd_metrics)
    for m in model.computed_bd_metrics:
        a, b = model.pairs[(NATIVE, m)], model.pairs[("kfr-ahg", m)]
        assert a.mean.value is not None and a.curve.value is not None
        assert (b.mean.value, b.curve.value) == (a.mean.value, a.curve.value)
        assert {s: r.value for s, r in b.per_sequence.items()} == {s: r.value for s, r in a.per_sequence.items()}
    nat, imp = _rows(run, NATIVE), _rows(run, "kfr-ahg")
    assert sorted(imp) == sorted(nat) == [22, 32, 42, 52]
    for qp in nat:  # same counted bytes (the decoys are not counted), same decoded frames
        for col in ("bits", "kbps", "psnr", "ssim", "frames", "sequence_sha256"):
            assert imp[qp][col] == nat[qp][col], (qp, col)
    recs = {r["rate_point"]["qp"]: r for r in iter_records(run) if r["codec"] == "kfr-ahg"}
    native_recs = {r["rate_point"]["qp"]: r for r in iter_records(run) if r["codec"] == NATIVE}
    for qp, r in recs.items():
        assert r["status"] == "ok" and r["family"] == "generative"
        assert r["bits_breakdown"]["key_frame"] == native_recs[qp]["bits_breakdown"]["key_frame"]
        assert r["imported"]["stated"] == {"description": DESC, "commit": "0123abc"}
        assert len(r["imported"]["counted_files"]) == 6  # frame0000.bin + 5 feature files
        assert r["provenance"]["codec"]["imported"]["source"] == "ahg"
    run_json = json.loads((run / "run.json").read_text())
    assert run_json["argv"] == argv_before  # the reproducing `gfvc run` command does not name the import
    assert run_json["codecs"]["kfr-ahg"]["imported"]["stated"]["commit"] == "0123abc"
    assert run_json["invocations"][-1]["argv"][:2] == ["gfvc", "import"]


def test_ahg_v1_naming_and_metadata_are_counted(native, tmp_path, capsys):
    run = _copy(native, tmp_path / "run")
    ahg = write_ahg(native, tmp_path / "ahg", tag="QP", metadata=b"\x07\x01\x02") / "Iframe_YUV420"
    assert _import(run, ahg, native, "--no-report", "--qps", "22", "42") == 0
    nat, imp = _rows(run, NATIVE), _rows(run, "kfr-ahg")
    assert sorted(imp) == [22, 42]
    for qp in imp:
        assert imp[qp]["bits"] == nat[qp]["bits"] + 3 * 8 and imp[qp]["psnr"] == nat[qp]["psnr"]
    r = next(r for r in iter_records(run) if r["codec"] == "kfr-ahg")
    assert r["bits_breakdown"]["metadata"] == 24 and sum(r["bits_breakdown"].values()) == r["bits"]


def test_reimport_is_idempotent_and_other_files_replace_the_import(native, tmp_path, capsys):
    run = _copy(native, tmp_path / "run")
    ahg = write_ahg(native, tmp_path / "ahg")
    assert _import(run, ahg, native, "--no-report") == 0
    mtimes = {p.name: p.stat().st_mtime_ns for p in (run / "records").glob("*.json")}
    capsys.readouterr()
    assert _import(run, ahg, native, "--no-report") == 0
    assert "4 results (4 already imported, 0 to score)" in capsys.readouterr().err
    assert {p.name: p.stat().st_mtime_ns for p in (run / "records").glob("*.json")} == mtimes
    before = _rows(run, "kfr-ahg")
    feat = next((ahg / "Iframe_YUV420" / "kp").glob("*_qp32")) / "frame0001.bin"
    feat.write_bytes(feat.read_bytes() + b"\x00")  # other files: other keys, the earlier import superseded
    assert _import(run, ahg, native, "--no-report") == 0
    err = capsys.readouterr().err
    assert "4 results (0 already imported, 4 to score)" in err and "superseded" in err
    after = _rows(run, "kfr-ahg")
    assert sorted(after) == [22, 32, 42, 52]  # reports use the new import only
    assert after[32]["bits"] == before[32]["bits"] + 8 and after[22]["bits"] == before[22]["bits"]
    assert len([r for r in iter_records(run) if r["codec"] == "kfr-ahg"]) == 8  # the old ones stay on disk
    assert main(["import", str(run), "--ahg", str(ahg), "--codec", "kfr-ahg", "--condition", str(native["cond"]),
                 "--description", DESC, "--commit", "0123abc", "--no-report", "--force"]) == 0
    assert "(0 already imported, 4 to score)" in capsys.readouterr().err


def _one_error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("gfvc: error: ")
    return err[0]


@pytest.mark.parametrize("damage, words", [
    ("truncate", "size or frame count differs"),
    ("extra_frame", "frame count differs"),
    ("unknown_sequence", "unknown sequence 'nobody'"),
    ("no_features", "its feature folder kp/"),
])
def test_mismatches_are_refused_with_one_line_and_nothing_written(native, tmp_path, capsys, damage, words):
    ahg = write_ahg(native, tmp_path / "ahg") / "Iframe_YUV420"
    seq = native["sequence"]
    dec = ahg / "dec" / f"{seq}_qp22.rgb"
    if damage == "truncate":  # one frame short: the decoded video does not match the condition's sequence
        dec.write_bytes(dec.read_bytes()[: 128 * 128 * 3 * 5])
    elif damage == "extra_frame":
        (ahg / "kp" / f"{seq}_qp22" / "frame0006.bin").write_bytes(b"\x01")
    elif damage == "unknown_sequence":
        for sub in ("enc", "kp"):
            (ahg / sub / f"{seq}_qp22").rename(ahg / sub / "nobody_qp22")
        dec.rename(ahg / "dec" / "nobody_qp22.rgb")
    else:
        shutil.rmtree(ahg / "kp" / f"{seq}_qp22")
    run = tmp_path / "new-run"
    assert _import(run, ahg, native) == 2
    line = _one_error(capsys)
    assert words in line and "qp22" in line
    assert not run.exists()


def test_several_problems_one_line_each(native, tmp_path, capsys):
    ahg = write_ahg(native, tmp_path / "ahg") / "Iframe_YUV420"
    seq = native["sequence"]
    for qp in (22, 32):
        p = ahg / "dec" / f"{seq}_qp{qp}.rgb"
        p.write_bytes(p.read_bytes() + b"x")
    assert _import(tmp_path / "r", ahg, native) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(e.startswith("gfvc: error: dec/") and "size or frame count" in e for e in err)


def test_names_and_conditions_that_would_mix_results_are_refused(native, tmp_path, capsys):
    run = _copy(native, tmp_path / "run")
    ahg = write_ahg(native, tmp_path / "ahg")
    assert _import(run, ahg, native, codec=NATIVE) == 2
    assert "was run by the suite: import under another name" in _one_error(capsys)
    assert _import(tmp_path / "new", ahg, native, codec="fomm") == 2
    assert "is a codec of the suite" in _one_error(capsys)
    assert _import(run, ahg, native, "--frames", "5") == 2  # the files hold 6 frames: one line per result
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 4 and all("frame count differs" in e for e in err)
    other = yaml.safe_load(native["cond"].read_text())
    other["metrics"]["names"] = ["psnr"]  # another fingerprint than the run's condition
    (tmp_path / "other.yaml").write_text(yaml.safe_dump(other))
    assert main(["import", str(run), "--ahg", str(ahg), "--codec", "x", "--condition", str(tmp_path / "other.yaml"),
                 "--description", DESC]) == 2
    assert "holds results of condition" in _one_error(capsys)
    assert main(["import", str(run), "--ahg", str(ahg), "--codec", "x", "--condition", str(native["cond"])]) == 2
    assert "--ahg needs --description" in _one_error(capsys)
    assert _import(run, ahg, native, "--qps", "37", codec="x") == 2
    assert "no result to import at QP 37" in _one_error(capsys)


def _manifest(native: dict, tmp_path: Path, results: list[dict], **top) -> Path:
    data = {"schema": 1, "condition": str(native["cond"]), "codec": "kfr-manifest",
            "provenance": {"description": DESC, "software": "tests", "contact": "nobody@example.org"},
            "results": results, **top}
    p = tmp_path / "import.yaml"
    p.write_text(yaml.safe_dump(data))
    return p


def test_manifest_import_rgb_png_and_yuv(native, tmp_path, capsys):
    run = _copy(native, tmp_path / "run")
    seq = native["sequence"]
    results = []
    for qp, (bs, frames) in sorted(native["decoded"].items()):
        if qp == 22:
            write_png_folder(tmp_path / "png22", frames)
            dec = "png22"
        else:
            write_rgb_planar(tmp_path / f"d{qp}.rgb", frames)
            dec = f"d{qp}.rgb"
        shutil.copy(bs, tmp_path / f"s{qp}.gfvc")
        results.append({"sequence": seq, "qp": qp, "decoded": dec, "bitstreams": [f"s{qp}.gfvc"]})
    m = _manifest(native, tmp_path, results)
    assert main(["import", str(run), "--manifest", str(m), "--no-report"]) == 0
    nat, imp = _rows(run, NATIVE), _rows(run, "kfr-manifest")
    for qp in nat:  # the container file counted whole: the native rate; the exact frames: the native metrics
        assert [imp[qp][c] for c in ("bits", "kbps", "psnr")] == [nat[qp][c] for c in ("bits", "kbps", "psnr")]
    model = report_model(run)
    for mtr in ("psnr", "ssim"):
        assert model.pairs[("kfr-manifest", mtr)].mean.value == model.pairs[(NATIVE, mtr)].mean.value

    # a .yuv decoded video: read with the condition's colour conversion, PSNR on its planes recorded
    frames = native["decoded"][42][1]
    write_yuv420(tmp_path / "d42.yuv", frames)
    (tmp_path / "feat").mkdir()
    (tmp_path / "feat" / "a.bin").write_bytes(b"12345")
    (tmp_path / "feat" / "sub").mkdir()
    (tmp_path / "feat" / "sub" / "b.bin").write_bytes(b"678")
    m = _manifest(native, tmp_path, [{"sequence": seq, "qp": 42, "label": "q42", "decoded": "d42.yuv",
                                      "bitstreams": ["feat", "feat/a.bin"]}], codec="yuv-import")
    assert main(["import", str(run), "--manifest", str(m), "--no-report"]) == 0
    r = next(r for r in iter_records(run) if r["codec"] == "yuv-import")
    assert r["bits"] == 8 * 8 and r["rate_point"] == {"qp": 42, "label": "q42"}  # a file listed twice counts once
    assert r["yuv_psnr"]["chroma"] == "420" and r["metrics"]["psnr"]["status"] == "ok"


def test_manifest_problems(native, tmp_path, capsys):
    seq = native["sequence"]
    bs, frames = native["decoded"][22]
    write_rgb_planar(tmp_path / "ok.rgb", frames)
    write_rgb_planar(tmp_path / "short.rgb", frames[:4])
    results = [{"sequence": seq, "qp": 22, "decoded": "ok.rgb", "bitstreams": str(bs)},
               {"sequence": seq, "qp": 22, "decoded": "ok.rgb", "bitstreams": str(bs)},
               {"sequence": "ghost", "qp": 32, "decoded": "ok.rgb", "bitstreams": str(bs)},
               {"sequence": seq, "qp": 42, "decoded": "short.rgb", "bitstreams": str(bs)},
               {"sequence": seq, "qp": 52, "decoded": "ok.rgb", "bitstreams": "missing.bin"},
               {"sequence": seq, "qp": 37, "decoded": "view.mp4", "bitstreams": str(bs)}]
    (tmp_path / "view.mp4").write_bytes(b"x")
    m = _manifest(native, tmp_path, results)
    assert main(["import", str(tmp_path / "run"), "--manifest", str(m)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 5 and all(e.startswith("gfvc: error: import.yaml: results[") for e in err)
    text = "\n".join(err)
    for words in ("duplicate rate point qp22", "unknown sequence 'ghost'", "4 frames of 128x128 planar RGB",
                  "missing.bin not found", "lossy container"):
        assert words in text, words
    assert not (tmp_path / "run").exists()


def test_compare_and_regress_with_imported_records(native, tmp_path, capsys):
    run = _copy(native, tmp_path / "run")
    assert _import(run, write_ahg(native, tmp_path / "ahg"), native, "--no-report") == 0
    capsys.readouterr()
    assert main(["compare", str(native["run"]), str(run), "--test", "kfr-ahg", "--json"]) == 0
    imp = json.loads(capsys.readouterr().out)
    assert main(["compare", str(native["run"]), str(run), "--test", NATIVE, "--json"]) == 0
    nat = json.loads(capsys.readouterr().out)
    assert imp["metrics"]["psnr"]["mean_of_sequences"]["value"] == nat["metrics"]["psnr"]["mean_of_sequences"]["value"]
    assert "kfr-ahg" in imp["imported"] and "imported" not in nat
    assert main(["compare", str(native["run"]), str(run), "--test", "kfr-ahg"]) == 0
    assert "note: kfr-ahg: imported results" in capsys.readouterr().out

    base = tmp_path / "baseline.json"
    assert main(["regress", str(run), "--baseline", str(base), "--update-baseline"]) == 0
    entries = json.loads(base.read_text())["entries"]
    assert entries["kfr-ahg"] == entries[NATIVE] and entries["kfr-ahg"]["psnr"] is not None
    capsys.readouterr()
    assert main(["regress", str(run), "--baseline", str(base), "--tolerance", "0"]) == 0
    out = capsys.readouterr().out
    assert "PASS     kfr-ahg psnr" in out and "note: kfr-ahg: imported results" in out
