"""Issue 16, class 8: the built-in CTC conditions run what the CTC runs, say honestly what each codec lacks,
and the documented conformance numbers are the tool's."""
from __future__ import annotations

import pytest

import baselines.registry  # noqa: F401
from gfvc.codec import get_codec
from suite.cli.main import main
from test_conditions import load_condition

TABLE1 = {"s2d", "mraa", "fv2v", "tpsm", "cfte", "lia", "mttf", "imt", "ihvc"}  # Sparse2Dense paper, Table 1
GFVC_FACE = {"fomm", "fv2v", "cfte"}  # the GFVC AhG software's face codecs


def test_gfvc_human_runs_table_1_and_gfvc_face_the_ahg_face_codecs():
    human, face = load_condition("gfvc-human"), load_condition("gfvc-face")
    assert TABLE1 <= set(human.codecs) and "vtm" in human.codecs and human.bdrate.anchor == "vtm"
    assert GFVC_FACE <= set(face.codecs) and "vtm" in face.codecs


@pytest.mark.parametrize("name", ["gfvc-human", "gfvc-face"])
def test_every_generative_codec_of_a_ctc_condition_builds_at_its_size(name):
    """A baseline is listed only when its architecture fits the condition's size: a named configuration at
    that size, or its official configuration built at that size (on the meta device)."""
    import torch

    cond = load_condition(name)
    size = cond.width
    for codec in cond.codecs:
        cls = get_codec(codec)
        if codec == "s2d" or not getattr(cls, "named_configs", None):
            continue
        configs = [c for c in cls.named_configs().values() if c.image_size == size]
        cfg = configs[0] if configs else cls.official_config().with_image_size(size)
        with torch.device("meta"):
            mods = cls.build_modules(cfg)
        assert set(cls.inference_modules) <= set(mods), codec


def test_demo_checkpoints_are_refused_at_384_with_the_fix(capsys, monkeypatch):
    monkeypatch.delenv("GFVC_VTM_DIR", raising=False)
    monkeypatch.setenv("GFVC_MODELS_DIR", "/nonexistent-gfvc-models")
    rc = main(["run", "--condition", "gfvc-human", "--dry-run", "--workdir", "/tmp/gfvc-test-dry-human"])
    cap = capsys.readouterr()
    out = cap.out
    # no manifest yet: the codecs' problems are listed, then the manifest error (one line, exit 2)
    assert rc == 2 and "0 jobs" in out and "lists no sequences" in cap.err and cap.err.count("\n") == 1
    lines = {ln.split(":", 1)[0].strip(" -"): ln for ln in out.splitlines() if ln.startswith("  - ")}
    assert TABLE1 | {"vtm"} <= set(lines)
    assert "works at 128x128 but condition 'gfvc-human' is 384x384" in lines["mraa"]
    assert "gfvc models fetch mraa-ted384" in lines["mraa"]                     # a public checkpoint to get
    assert "gfvc models install DIR" in lines["tpsm"]                           # a manual download
    assert "lia-ted (256 px, coded at 384 px by resampling)" in lines["lia"]    # a checkpoint that adapts
    assert "gfvc train fv2v --image-size 384" in lines["fv2v"]                  # nothing public: train
    assert "--model imt=PATH" in lines["imt"] and "no public imt checkpoint" in lines["imt"]


def test_doctor_says_the_same(capsys, monkeypatch):
    monkeypatch.delenv("GFVC_VTM_DIR", raising=False)
    monkeypatch.setenv("GFVC_MODELS_DIR", "/nonexistent-gfvc-models")
    assert main(["doctor", "--condition", "gfvc-face"]) == 1
    out = capsys.readouterr().out
    for codec in ("fomm", "fv2v", "cfte", "mraa", "tpsm", "lia"):
        line = next(ln for ln in out.splitlines() if ln.startswith(f"codec {codec} "))
        assert "NOT AVAILABLE" in line and "256x256" in line and "gfvc models" in line, line


def test_the_demo_still_runs_all_its_codecs(capsys):
    rc = main(["run", "--dry-run", "--workdir", "/tmp/gfvc-test-dry-demo"])
    out = capsys.readouterr().out
    assert rc == 0 and "problem(s)" not in out and "48 jobs" in out


def test_conformance_tables_in_the_docs_are_the_tools_output():
    from tools import conformance_docs

    why = conformance_docs.stale(conformance_docs.current(), conformance_docs.generated())
    assert why is None, f"docs/baselines.md: {why}: run `python -m tools.conformance_docs --write`"


def test_conformance_docs_check_is_exact_on_the_pages_machine_and_structural_elsewhere():
    from tools.conformance_docs import stale

    made = ("Measured with torch 2.14.1, oneDNN 3.12.0 at ISA `avx2`, one torch thread.\n\n"
            "| model | official code | outputs | result | worst output (max \\|diff\\| / atol) "
            "| max \\|diff\\| | atol |\n"
            "|---|---|---:|---|---|---:|---:|\n"
            "| tpsm | yoyo-nb/TPSM@c6168788 | 22 | PASS | dense_motion.x | 3.5e-06 | 1e-05 |\n\n"
            "| output | shape | max \\|diff\\| | atol | result |\n|---|---|---:|---:|---|\n"
            "| dense_motion.x | (1,3) | 3.5e-06 | 1e-05 | PASS |")
    assert stale(made, made) is None
    other_isa = made.replace("`avx2`", "`avx512_core`")
    assert stale(made.replace("3.5e-06", "3.4e-06"), made) is not None       # same machine: every digit
    assert stale(made.replace("3.5e-06", "0").replace("dense_motion.x | 0", "(all outputs) | 0"), other_isa) is None
    assert "differ" in stale(made.replace("| 1e-05 | PASS", "| 1e-05 | FAIL"), other_isa)
    assert "differ" in stale(made.replace("(1,3)", "(1,4)"), other_isa)
    assert "differ" in stale(made.replace("| 22 |", "| 21 |"), other_isa)
    assert "where it was measured" in stale(made.split("\n", 2)[2], other_isa)


def test_dry_run_lists_the_jobs_that_can_run_and_exits_1_for_the_rest(tmp_path, capsys):
    rc = main(["run", "--dry-run", "--workdir", str(tmp_path / "w"), "--model", f"fomm={tmp_path / 'nope.pt'}"])
    out = capsys.readouterr().out
    assert rc == 1 and "44 jobs" in out and " fomm " not in out.split("problem(s)")[0]
    assert "  - fomm: fomm checkpoint" in out and "not found" in out
