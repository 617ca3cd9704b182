"""Regenerate the golden report inputs and outputs (review the diff before committing).

    PYTHONPATH=. python tests/data/reports/regenerate.py
"""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from reports.document import build_report
from reports.synthetic import GOLDEN_FILES, GOLDEN_SCENARIO, golden_normalise, make_run

HERE = Path(__file__).resolve().parent


def main() -> None:
    run = HERE / "run"
    shutil.rmtree(run, ignore_errors=True)
    make_run(run, **GOLDEN_SCENARIO)
    golden = HERE / "golden"
    golden.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        paths = build_report(run, formats=("md", "csv", "json", "txt", "png"), out_dir=Path(tmp))
        for name in GOLDEN_FILES:
            text = (Path(tmp) / name).read_text()
            (golden / name).write_text(golden_normalise(name, text, run))
    print(f"wrote {run} and {golden} ({len(paths)} report files built)")


if __name__ == "__main__":
    main()
