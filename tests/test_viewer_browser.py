"""The side-by-side viewer in a real browser: Playwright driving the system Chromium (headless).

The synthetic run (tests/synthetic_media_run.py) writes the frame index as the
grey level of a block and the clip as the background colour, so every check
reads the canvas pixels back and decodes what is on screen, independently of
the page's own state. A missing /usr/bin/chromium or Playwright FAILS (CI
installs both: .ci/run, pyproject's test extra); it is never skipped.
"""
from __future__ import annotations

import http.server
import shutil
import threading
from functools import partial
from pathlib import Path

import numpy as np
import pytest
from synthetic_media_run import BLOCK, COLOURS, H, N, W, index_of, make_run, originals_for_test

from reports.viewer import write_viewer

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def viewer(tmp_path_factory) -> Path:
    run = make_run(tmp_path_factory.mktemp("viewer") / "run")
    return write_viewer(run, run / "report", originals=originals_for_test)["viewer"]


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).is_file():
        pytest.fail(f"{CHROMIUM} missing: install it (apt-get install -y chromium); the viewer test needs it")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("playwright missing: pip install -e '.[test]' (the viewer test needs it)")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


class Page:
    """A loaded viewer page that records console errors, page errors and requests."""

    def __init__(self, browser, url: str) -> None:
        self.errors: list[str] = []
        self.requests: list[str] = []
        self.page = browser.new_page(viewport={"width": 1100, "height": 800})
        self.page.on("console", lambda m: self.errors.append(f"console {m.type}: {m.text}")
                     if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(f"pageerror: {e}"))
        self.page.on("request", lambda r: self.requests.append(r.url))
        self.page.goto(url)
        self.page.wait_for_function("window.gfvcViewer && window.gfvcViewer.ready !== null")
        self.page.evaluate("window.gfvcViewer.ready")
        self.page.wait_for_function("document.getElementById('status').textContent.startsWith('ready')",
                                    timeout=30000)

    def state(self) -> dict:
        return self.page.evaluate("window.gfvcViewer.state()")

    def pixels(self) -> np.ndarray:
        """The canvas as an (h, w, 4) array, read in the page."""
        data = self.page.evaluate("""() => { const c = document.getElementById('view');
            const d = c.getContext('2d').getImageData(0, 0, c.width, c.height);
            return [c.width, c.height, Array.from(d.data)]; }""")
        w, h, flat = data
        return np.asarray(flat, np.uint8).reshape(h, w, 4)

    def shown(self, x0: int = 0, px: np.ndarray | None = None) -> tuple[int, str]:
        """(frame index, clip colour name) of the picture whose left edge is at column x0 (colour read
        just right of the index block, left of any wipe position used here), from ``px`` or a new read."""
        px = (self.pixels() if px is None else px)[:, x0:x0 + W, :3].astype(float)
        idx = index_of(px[2:BLOCK - 2, 2:BLOCK - 2].mean())
        return idx, _colour(px[BLOCK + 4:H - 4, BLOCK + 4:BLOCK + 16].reshape(-1, 3).mean(0))

    def region_colour(self, x: int) -> str:
        """Clip colour of the column x (rows below the index block)."""
        return _colour(self.pixels()[BLOCK + 4:H - 4, x, :3].astype(float).mean(0))


def _colour(rgb: np.ndarray) -> str:
    name, dist = min(((k, float(np.abs(rgb - np.array(v)).max())) for k, v in COLOURS.items()), key=lambda t: t[1])
    assert dist < 20, f"colour {rgb} is none of the clips' colours"
    return name


def _check_clean(p: Page) -> None:
    assert p.errors == [], p.errors
    remote = [u for u in p.requests if not u.startswith(("file://", "http://127.0.0.1", "data:", "blob:"))]
    assert remote == [], f"the viewer asked the network for {remote}"


def test_viewer_plays_in_step_steps_wipes_and_offers_the_original(viewer, browser, tmp_path):
    p = Page(browser, viewer.resolve().as_uri())
    s = p.state()
    # defaults: A = the original, B = the highest rate of the last codec; counter at frame 1 of N
    assert (s["left"], s["right"], s["counter"]) == ("original", "beta@qp32", f"frame 1 / {N}")
    assert p.shown() == (0, "original")
    assert p.region_colour(int(W * 0.75)) == "beta"  # right of the wipe (at 50 %): B

    # frame stepping: the counter and the picture move by exactly one frame
    p.page.click("#next")
    p.page.click("#next")
    assert p.state()["counter"] == f"frame 3 / {N}" and p.shown()[0] == 2
    p.page.click("#prev")
    assert p.state()["counter"] == f"frame 2 / {N}" and p.shown()[0] == 1
    p.page.click("#prev")
    p.page.click("#prev")  # wraps to the last frame
    assert p.state()["counter"] == f"frame {N} / {N}" and p.shown()[0] == N - 1
    p.page.keyboard.press("Home")
    assert p.state()["counter"] == f"frame 1 / {N}" and p.shown()[0] == 0

    # the wipe: drag it to 90 %, then the column at 75 % shows A (the original), then keyboard back
    box = p.page.locator("#view").bounding_box()
    p.page.mouse.move(box["x"] + box["width"] * 0.5, box["y"] + box["height"] / 2)
    p.page.mouse.down()
    p.page.mouse.move(box["x"] + box["width"] * 0.9, box["y"] + box["height"] / 2, steps=5)
    p.page.mouse.up()
    assert abs(p.state()["wipe"] - 0.9) < 0.02
    assert p.region_colour(int(W * 0.75)) == "original"
    assert p.region_colour(int(W * 0.95)) == "beta"
    for _ in range(6):
        p.page.keyboard.press("[")  # 6 x 5 % to the left: 60 %
    assert abs(p.state()["wipe"] - 0.6) < 0.02 and p.region_colour(int(W * 0.75)) == "beta"

    # side by side, two coded clips: play, then both halves show the same frame at every sample
    p.page.select_option("#mode", "sbs")
    p.page.select_option("#left", "alpha@qp42")
    p.page.wait_for_function("document.getElementById('status').textContent.startsWith('ready')")
    p.page.select_option("#speed", "0.5")
    p.page.click("#play")
    seen = []
    for _ in range(8):
        p.page.wait_for_timeout(120)
        px = p.pixels()  # one read of the canvas while it plays: both halves at one instant
        (fa, ca), (fb, cb) = p.shown(0, px), p.shown(W + 8, px)
        assert (ca, cb) == ("alpha", "beta")
        assert fa == fb, f"left shows frame {fa}, right frame {fb}"
        seen.append(fa)
    p.page.click("#play")  # pause
    s = p.state()
    assert not s["playing"] and len(set(seen)) >= 3, f"playback did not advance: {seen}"
    assert s["counter"] == f"frame {s['frame'] + 1} / {N}" and p.shown(0)[0] == s["frame"] == p.shown(W + 8)[0]

    # choosing the original on the right works too
    p.page.select_option("#right", "original")
    p.page.wait_for_function("document.getElementById('status').textContent.startsWith('ready')")
    assert p.shown(W + 8)[1] == "original"
    shot = tmp_path / "viewer.png"
    p.page.screenshot(path=str(shot))
    assert shot.stat().st_size > 1000
    _check_clean(p)


def test_viewer_works_from_a_local_http_server(viewer, browser):
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *a: object) -> None:
            pass

    handler = partial(Quiet, directory=str(viewer.parent))
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        p = Page(browser, f"http://127.0.0.1:{srv.server_address[1]}/viewer.html")
        p.page.keyboard.press("ArrowRight")
        assert p.state()["counter"] == f"frame 2 / {N}" and p.shown() == (1, "original")
        # every clip on the left, twice round (more clips than the page keeps decoded: evicted ones reload)
        for _ in range(2):
            for cid in ("alpha@qp42", "alpha@qp32", "beta@qp42", "beta@qp32", "original"):
                p.page.select_option("#left", cid)
                p.page.wait_for_function(f"document.getElementById('status').textContent.startsWith('ready') && "
                                         f"window.gfvcViewer.state().left === '{cid}'")
                assert p.shown() == (1, cid.split("@")[0])
        _check_clean(p)
    finally:
        srv.shutdown()
        srv.server_close()


def test_missing_asset_is_one_clear_message(viewer, browser, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(viewer.parent, broken)
    (broken / "viewer_assets" / "seqA" / "alpha_qp42.js").unlink()
    p = Page(browser, (broken / "viewer.html").as_uri())
    p.page.select_option("#left", "alpha@qp42")
    p.page.wait_for_function("document.getElementById('status').className === 'error'")
    assert "alpha_qp42.js could not be loaded" in p.page.text_content("#status")
