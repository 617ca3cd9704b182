"""Headless-Chromium screenshot of a report's HTML (render check of the self-contained document).

Usage: python -m tools.screenshot_report REPORT.html OUT.png [--width 1200 --height 2000 --timeout 60]

The browser runs offline-friendly (no background networking, no component
updates, no QUIC) with a throw-away profile, so the check also proves that the
HTML needs nothing from the network.
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from gfvc.errors import ExternalToolError, GfvcError, NotAvailable
from gfvc.fileio import check_output_file

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")


def find_browser() -> str | None:
    """Path of a Chromium-family browser on PATH, or None."""
    for name in BROWSERS:
        p = shutil.which(name)
        if p:
            return p
    return None


def screenshot_argv(browser: str, html: Path, png: Path, profile: Path, width: int = 1200,
                    height: int = 2000) -> list[str]:
    """The browser command (pure: built here, run by ``screenshot``)."""
    return [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--hide-scrollbars", f"--user-data-dir={profile}", f"--screenshot={png}",
            f"--window-size={width},{height}", Path(html).resolve().as_uri()]


def screenshot(html: Path, png: Path, *, width: int = 1200, height: int = 2000, timeout: float = 60.0,
               browser: str | None = None) -> Path:
    """Render ``html`` and write ``png``; raise NotAvailable without a browser, ExternalToolError on failure."""
    browser = browser or find_browser()
    if not browser:
        raise NotAvailable("no Chromium-family browser on PATH (Debian: apt-get install chromium)")

    png = check_output_file(Path(png).resolve(), what="screenshot", suffixes={".png"})
    if png.exists():
        png.unlink()
    with tempfile.TemporaryDirectory(prefix="gfvc-chromium-") as prof:
        argv = screenshot_argv(browser, Path(html), png, Path(prof), width, height)
        try:
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
        except subprocess.TimeoutExpired:
            raise ExternalToolError(f"{browser} did not finish within {timeout} s: {' '.join(argv)}") from None
    if not png.exists() or png.stat().st_size == 0:
        tail = (proc.stderr or "").strip().splitlines()[-5:]
        raise ExternalToolError(f"{browser} exited {proc.returncode} without writing {png}: {' | '.join(tail)}")
    return png


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("html", type=Path)
    ap.add_argument("png", type=Path)
    ap.add_argument("--width", type=int, default=1200)
    ap.add_argument("--height", type=int, default=2000)
    ap.add_argument("--timeout", type=float, default=60.0)
    a = ap.parse_args(argv)
    try:
        out = screenshot(a.html, a.png, width=a.width, height=a.height, timeout=a.timeout)
    except GfvcError as e:
        print(f"screenshot_report: {e}", file=sys.stderr)
        return e.exit_code
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
