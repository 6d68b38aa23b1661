"""End to end: the sort service on recorded frames, its operator page in headless Chromium.

Chromium is Debian's package (``make test`` installs it when it can); Playwright only drives it, it
never downloads a browser. Screenshots land in ``test-artifacts/`` (or ``$EDGE_TRASH_ARTIFACTS``).
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO
from runtime_fixtures import make_bundle

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(os.environ.get("EDGE_TRASH_ARTIFACTS", REPO / "test-artifacts"))
TOKEN = "operator-test-token"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not os.path.exists(CHROMIUM),
                                 reason="Debian's chromium is not installed (apt-get install chromium; "
                                        "make test installs it when run as root)")]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _write_frames(folder: Path, num_frames: int = 96) -> None:
    """Coloured cells (one model cell = 32x64 px of a 256x512 frame) riding right one cell per frame."""
    folder.mkdir()
    for t in range(num_frames):
        frame = np.full((256, 512, 3), 30, np.uint8)
        for k, start in enumerate(range(0, num_frames, 12)):
            x = 64 * (t - start) - 64
            if x >= 512 or x + 64 <= 0 or t < start:
                continue
            y = 32 + 96 * (k % 2)
            frame[y:y + 32, max(x, 0):max(x + 64, 0)] = 0
            # every third item dim: a low-confidence (hard) example
            frame[y:y + 32, max(x, 0):max(x + 64, 0), k % 3] = 80 if k % 3 == 2 else 255
        np.save(str(folder / ("%04d.npy" % t)), frame)


def _start(bundle: str, source: str):
    from edge_trash.edge_runtime.service import build_service

    loop, cleanup = build_service(bundle, None, source)
    stop = threading.Event()
    result = {}
    thread = threading.Thread(target=lambda: result.update(loop.run(stop)), daemon=True)
    thread.start()
    return loop, cleanup, stop, thread, result


def _bundle(tmp_path: Path, color_model: str, name: str, health: dict) -> str:
    return make_bundle(str(tmp_path / name), model_path=color_model, sort_overrides={
        "travel_delay_s": 0.0, "health": health, "log": {"path": str(tmp_path / (name + ".sqlite"))},
        "classes": {"bottle": "plastic", "can": "metal", "carton": "paper"},
        "bins": ["plastic", "metal", "paper", "reject"], "tracker": {"max_distance": 1.5},
        "hard_examples": {"dir": str(tmp_path / (name + "-queue")), "band": [0.3, 0.75], "min_interval_s": 0.0}})


def test_operator_page_in_chromium(color_model, tmp_path, monkeypatch):
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    _write_frames(tmp_path / "frames")
    port = _free_port()
    bundle = _bundle(tmp_path, color_model, "bundle", {"host": "127.0.0.1", "port": port})
    loop, cleanup, stop, thread, result = _start(bundle, "dir:%s?fps=8" % (tmp_path / "frames"))
    base = "http://127.0.0.1:%d/" % port
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1280, "height": 900}, accept_downloads=True)
            page.goto(base)
            # the live image changes while the service runs
            page.wait_for_function("document.getElementById('frame').src.includes('seq=')", timeout=20000)
            first = page.evaluate("document.getElementById('frame').src")
            page.wait_for_function("(s) => document.getElementById('frame').src !== s", arg=first, timeout=20000)
            assert page.evaluate("document.getElementById('frame').src") != first
            assert "CPU FALLBACK" in page.inner_text("#accelerator")  # no Edge TPU here, and the page says so
            assert page.evaluate("document.getElementById('problems').hidden")  # every item moves: no red line
            page.wait_for_selector("#decisions .decision", timeout=30000)
            page.screenshot(path=str(ARTIFACTS / "operator-page-live.png"), full_page=True)

            thread.join(timeout=60)
            assert not thread.is_alive(), "the replay did not finish"
            time.sleep(2.5)  # two status refreshes after the last decision
            db = sqlite3.connect(str(tmp_path / "bundle.sqlite"))
            expected = dict(db.execute("SELECT COALESCE(actuated_bin, bin), COUNT(*) FROM decisions GROUP BY 1"))
            last = db.execute("SELECT id, label FROM decisions ORDER BY id DESC LIMIT 1").fetchone()
            db.close()
            assert sum(expected.values()) >= 4
            shown = {row.get_attribute("data-bin"): int(row.query_selector(".count").inner_text())
                     for row in page.query_selector_all("#bins tbody tr")}
            assert shown == expected
            newest = page.query_selector("#decisions .decision")
            assert newest.get_attribute("data-id") == str(last[0])
            assert last[1] in newest.inner_text()

            page.wait_for_selector("#queue .hard", timeout=10000)
            with page.expect_download() as info:
                page.click("#queue-download")
            saved = tmp_path / "relabel.json"
            info.value.save_as(str(saved))
            coco = json.loads(saved.read_text())
            queue_files = [n for n in os.listdir(tmp_path / "bundle-queue") if n.endswith(".json") and n != "labels.json"]
            assert len(coco["images"]) == len(queue_files) >= 1
            assert [c["name"] for c in coco["categories"]] == ["bottle", "can", "carton"]
            assert {a["image_id"] for a in coco["annotations"]} <= {im["id"] for im in coco["images"]}
            scores = [im["best_score"] for im in coco["images"]]
            assert scores == sorted(scores)  # least confident first
            page.screenshot(path=str(ARTIFACTS / "operator-page-final.png"), full_page=True)
            # the replay is over: no frame comes, which the page names in red once it is a problem (10 s, here 1 s)
            from edge_trash.edge_runtime import health
            monkeypatch.setattr(health, "NO_FRAME_S", 1.0)
            page.wait_for_function("!document.getElementById('problems').hidden", timeout=10000)
            assert page.inner_text("#problems").startswith(
                "Items are not being sorted as they should: no frame has gone through inference for ")
            browser.close()
    finally:
        stop.set()
        thread.join(timeout=30)
        cleanup()
    assert result["decisions"] == sum(expected.values())


def test_non_loopback_bind_requires_a_token(color_model, tmp_path):
    from playwright.sync_api import sync_playwright

    from edge_trash.edge_runtime.service import build_service
    from edge_trash.edge_runtime.sort_config import ConfigError

    _write_frames(tmp_path / "frames", num_frames=24)
    open_bundle = _bundle(tmp_path, color_model, "open", {"host": "0.0.0.0", "port": _free_port()})
    with pytest.raises(ConfigError, match="set health.token"):
        build_service(open_bundle, None, "dir:%s" % (tmp_path / "frames"))

    port = _free_port()
    bundle = _bundle(tmp_path, color_model, "guarded", {"host": "0.0.0.0", "port": port, "token": TOKEN})
    loop, cleanup, stop, thread, _ = _start(bundle, "dir:%s?fps=4" % (tmp_path / "frames"))
    base = "http://127.0.0.1:%d" % port
    try:
        for path in ("/", "/api/status", "/api/frame.jpg", "/api/queue.coco.json"):
            with pytest.raises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(base + path, timeout=5)
            assert refused.value.code == 401
        with urllib.request.urlopen(base + "/api/status?token=" + TOKEN, timeout=5) as ok:
            assert json.loads(ok.read())["accelerator"] == "cpu"
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
            page = browser.new_page()
            response = page.goto(base + "/")
            assert response.status == 401
            page.goto(base + "/?token=" + TOKEN)
            page.wait_for_function("document.getElementById('conn').textContent === 'live'", timeout=20000)
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "operator-page-token.png"))
            browser.close()
    finally:
        stop.set()
        thread.join(timeout=30)
        cleanup()
