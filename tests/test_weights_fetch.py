"""Weights that fetch themselves, tested against a local HTTP server on 127.0.0.1.

The server (started by the test) serves small files under the registry's
file names; the registry's sha256 and size are monkeypatched to those of the
served bytes (stated per test), so nothing leaves the machine. conftest sets
GFVC_OFFLINE=1 for every other test; these tests turn it off explicitly.
"""
from __future__ import annotations

import dataclasses
import hashlib
import http.server
import os
import stat
import threading
import time
from pathlib import Path

import pytest

from gfvc import download
from gfvc.errors import WeightsError
from metrics import weights
from suite.cli.main import main

NAME = "vgg16-397923af.pth"  # a hub file: downloaded on first use
GOOD = b"pretend VGG16 trunk bytes " * 40


class _Server:
    """Serves files from a folder; counts requests per path."""

    def __init__(self, root: Path) -> None:
        self.hits: dict[str, int] = {}
        hits = self.hits

        class Handler(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *a, **k):
                super().__init__(*a, directory=str(root), **k)

            def do_GET(self):  # noqa: N802 - http.server's name
                hits[self.path] = hits.get(self.path, 0) + 1
                super().do_GET()

            def log_message(self, *a):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def served(tmp_path: Path):
    root = tmp_path / "srv"
    root.mkdir()
    (root / NAME).write_bytes(GOOD)
    srv = _Server(root)
    yield srv, root
    srv.close()


@pytest.fixture
def online(monkeypatch, tmp_path):
    """Downloads allowed, an empty hub cache, a clean per-process failure memory."""
    monkeypatch.delenv(weights.OFFLINE_ENV, raising=False)
    monkeypatch.delenv(weights.FAILED_ENV, raising=False)
    monkeypatch.delenv(weights.MIRROR_ENV, raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(weights, "_FAILED", {})
    monkeypatch.setattr(download, "_HOSTS", {})
    return tmp_path / "torch" / "hub" / "checkpoints"


def _register(monkeypatch, data: bytes, urls: tuple[str, ...] | None = None) -> None:
    """The registry entry of NAME with the sha256 and size of ``data`` (the served file's)."""
    w = weights.get(NAME)
    monkeypatch.setitem(weights.REGISTRY, NAME, dataclasses.replace(
        w, sha256=hashlib.sha256(data).hexdigest(), size=len(data), urls=urls or w.urls))


def test_first_use_downloads_verifies_and_places_in_hub(served, online, monkeypatch, capsys):
    srv, _ = served
    _register(monkeypatch, GOOD, urls=(f"{srv.url}/{NAME}",))  # sha256 of GOOD, the served bytes
    old = os.umask(0o022)
    try:
        path = weights.locate(NAME)
    finally:
        os.umask(old)
    assert path == online / NAME and path.read_bytes() == GOOD
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert "downloading vgg16-397923af.pth" in capsys.readouterr().err
    assert weights.locate(NAME) == path and srv.hits == {f"/{NAME}": 1}  # verified cache, no second download
    assert not [p for p in online.iterdir() if p.name != NAME]  # no temporary files left


def test_mirror_replaces_the_source_hosts(served, online, monkeypatch):
    srv, _ = served
    _register(monkeypatch, GOOD, urls=("https://unreachable.invalid/models/" + NAME,))
    monkeypatch.setenv(weights.MIRROR_ENV, srv.url + "/")
    assert weights.source_urls(weights.get(NAME)) == [f"{srv.url}/{NAME}"]
    assert weights.locate(NAME).read_bytes() == GOOD
    assert srv.hits == {f"/{NAME}": 1}


def test_wrong_file_is_refused_and_deleted(served, online, monkeypatch):
    srv, root = served
    expected = GOOD[:-1] + b"X"  # the registry expects other bytes of the same size
    _register(monkeypatch, expected, urls=(f"{srv.url}/{NAME}",))
    with pytest.raises(WeightsError, match="refused and deleted") as e:
        weights.locate(NAME)
    assert hashlib.sha256(GOOD).hexdigest() in str(e.value) and "(offline?)" in str(e.value)
    assert not online.exists() or not list(online.iterdir())


def test_offline_never_touches_the_network(served, online, monkeypatch):
    srv, _ = served
    _register(monkeypatch, GOOD, urls=(f"{srv.url}/{NAME}",))
    monkeypatch.setenv(weights.OFFLINE_ENV, "1")
    with pytest.raises(WeightsError, match="download disabled"):
        weights.locate(NAME)
    assert srv.hits == {}


def test_offline_flag_of_the_cli(served, online, monkeypatch, tmp_path, capsys):
    srv, _ = served
    _register(monkeypatch, GOOD, urls=(f"{srv.url}/{NAME}",))
    from gfvc.video import write_video
    from test_conditions.demo import demo_frames

    clip = tmp_path / "c.yuv"
    write_video(clip, demo_frames(0, 2))
    assert main(["metrics", str(clip), str(clip), "--size", "128x128", "--metrics", "dists", "--offline"]) == 0
    assert srv.hits == {} and "download disabled" in capsys.readouterr().out


def test_unreachable_host_fails_fast_once_with_one_reason(online, monkeypatch):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed: connection refused
    _register(monkeypatch, GOOD, urls=(f"http://127.0.0.1:{port}/{NAME}",))
    t0 = time.monotonic()
    with pytest.raises(WeightsError, match=r"could not download vgg16-397923af.pth \(offline\?\)"):
        weights.locate(NAME)
    with pytest.raises(WeightsError, match="could not download"):
        weights.locate(NAME)  # remembered: no second attempt
    assert time.monotonic() - t0 < 5
    assert NAME in weights.failed_downloads()


def test_dns_that_never_answers_does_not_hang(online, monkeypatch):
    gate = threading.Event()

    def slow_dns(*a, **k):
        gate.wait(30)
        raise OSError("never")

    monkeypatch.setattr("socket.getaddrinfo", slow_dns)
    _register(monkeypatch, GOOD, urls=(f"http://example.invalid/{NAME}",))
    t0 = time.monotonic()
    with pytest.raises(WeightsError, match="no DNS answer"):
        weights.download(weights.get(NAME), online, timeout=0.5)
    assert time.monotonic() - t0 < 5
    gate.set()


def test_weights_fetch_command_uses_the_mirror(served, online, monkeypatch, tmp_path, capsys):
    srv, _ = served
    _register(monkeypatch, GOOD)
    dest = tmp_path / "dest"
    assert main(["weights", "fetch", NAME, "--dest", str(dest), "--mirror", srv.url]) == 0
    assert (dest / NAME).read_bytes() == GOOD and "downloaded and verified" in capsys.readouterr().out
    assert main(["weights", "fetch", NAME, "--dest", str(dest), "--mirror", srv.url]) == 0
    assert srv.hits == {f"/{NAME}": 1}


def test_a_run_says_a_failed_download_once(small_condition, plugin_env, online, monkeypatch, tmp_path, capsys):
    """DISTS and LPIPS both need VGG16: one attempt, one line before the jobs, the reason in every record."""
    import socket

    import yaml

    from gfvc.records import iter_records

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    _register(monkeypatch, GOOD, urls=(f"http://127.0.0.1:{port}/{NAME}",))
    d = small_condition.to_dict()
    d["metrics"]["names"] = ["psnr", "dists", "lpips"]
    cond = tmp_path / "c.yaml"
    cond.write_text(yaml.safe_dump(d))
    assert main(["run", "--condition", str(cond), "--workdir", str(tmp_path / "r"), "-j", "1", "--no-report"]) == 0
    cap = capsys.readouterr()
    assert (cap.out + cap.err).count("could not download") == 1, cap.out + cap.err
    recs = list(iter_records(tmp_path / "r"))
    assert recs and all("could not download vgg16" in r["metrics"]["dists"]["reason"] for r in recs)
    import json

    run = json.loads((tmp_path / "r" / "run.json").read_text())
    assert run["metric_weights"]["dists"]["status"] == "not_computed"
    assert weights.FAILED_ENV not in os.environ  # restored after the run
