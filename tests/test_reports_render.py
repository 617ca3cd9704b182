"""Render check: headless Chromium screenshot of the self-contained HTML report."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from reports import build_report
from tools.screenshot_report import find_browser, screenshot, screenshot_argv

DATA = Path(__file__).parent / "data" / "reports"


def test_screenshot_argv_is_a_list():
    argv = screenshot_argv("chromium", Path("/x/r.html"), Path("/x/o.png"), Path("/tmp/p"))
    assert argv[0] == "chromium" and "--headless" in argv and "--disable-background-networking" in argv
    assert argv[-1] == "file:///x/r.html" and "--screenshot=/x/o.png" in argv


@pytest.mark.skipif(find_browser() is None,
                    reason="no Chromium-family browser on PATH (Debian: apt-get install chromium); "
                           "render check of report.html skipped")
def test_html_report_renders(tmp_path):
    paths = build_report(DATA / "run", formats=("html",), out_dir=tmp_path)
    png = screenshot(paths["html"], tmp_path / "shot.png", width=1200, height=2000, timeout=120)
    img = np.asarray(Image.open(png).convert("L"))
    assert img.shape == (2000, 1200)
    # Something was drawn: dark text pixels and a white background, not a blank or error page.
    assert (img < 80).mean() > 0.005 and (img > 240).mean() > 0.5
