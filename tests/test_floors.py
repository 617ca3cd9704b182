"""The floors of the code (docs/architecture.md): contracts hold, and break on an upward import."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tools import floors

ROOT = Path(__file__).resolve().parent.parent
LINT = Path(sys.executable).parent / "lint-imports"


def _lint(cwd: Path) -> subprocess.CompletedProcess:
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(cwd), "HOME": str(cwd)}
    return subprocess.run([str(LINT), "--no-cache"], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def _copy_tree(dst: Path) -> None:
    shutil.copy(ROOT / "pyproject.toml", dst / "pyproject.toml")
    for pkg in floors.packages():
        shutil.copytree(ROOT / pkg, dst / pkg, ignore=shutil.ignore_patterns("*.pt", "*.pth*", "__pycache__",
                                                                               "*.npz", "*.npy", "*.jsonl"))


def test_contracts_hold() -> None:
    r = _lint(ROOT)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    assert "0 broken" in r.stdout


@pytest.mark.parametrize(("module", "statement", "broken"), [
    # the codec library reaching up into the application
    ("gfvc/errors.py", "import suite.runner.plan", "gfvc is not allowed to import suite"),
    # a model package importing the other one (they share model_parts instead)
    ("baselines/listings.py", "import s2d_model.config", "baselines is not allowed to import s2d_model"),
    # reports knowing a codec
    ("reports/curves.py", "import anchors.vvenc", "reports is not allowed to import anchors"),
    # a hidden (function-level) upward import counts as well
    ("metrics/classic.py", "def _hidden():\n    import reports.model\n", "metrics is not allowed to import reports"),
])
def test_an_upward_import_breaks_the_contracts(tmp_path: Path, module: str, statement: str, broken: str) -> None:
    _copy_tree(tmp_path)
    target = tmp_path / module
    target.write_text(target.read_text() + "\n" + statement + "\n")
    r = _lint(tmp_path)
    assert r.returncode != 0
    assert broken in r.stdout, r.stdout[-3000:]


def test_a_circle_breaks_the_contracts(tmp_path: Path) -> None:
    _copy_tree(tmp_path)
    target = tmp_path / "reports" / "bdrate.py"  # bdrate is imported by curves: curves -> bdrate -> curves
    target.write_text(target.read_text() + "\nimport reports.curves\n")
    r = _lint(tmp_path)
    assert r.returncode != 0 and "No cycles are allowed in reports" in r.stdout, r.stdout[-3000:]


def test_no_module_circles_anywhere() -> None:
    assert floors.module_cycles() == []


def test_module_cycle_finder_finds_a_circle() -> None:
    assert floors._sccs(["a", "b", "c", "d"], {"a": ["b"], "b": ["c"], "c": ["a"], "d": ["a"]}) == [["a", "b", "c"]]


def test_no_hidden_imports() -> None:
    """An import inside a function that points at the suite's own packages says why it is lazy."""
    assert floors.hidden_imports() == []


def test_architecture_picture_is_generated_from_the_contracts() -> None:
    assert floors.documented_block() == floors.doc_block(), "run `python -m tools.floors --write`"
    pic = floors.picture()
    for row in floors.floors():
        for pkg in row:
            assert f"[ {pkg}/ ]" in pic
