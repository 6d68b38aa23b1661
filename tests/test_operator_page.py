"""The operator page's routes: content, counts against the event log, token, read-only, no path escape."""

from __future__ import annotations

import json
import os
import time

import numpy as np
import pytest

from edge_trash.edge_runtime.eventlog import EventLog
from edge_trash.edge_runtime.geometry import BBox, Detection
from edge_trash.edge_runtime.live_view import LiveView
from edge_trash.edge_runtime.operator_page import OperatorPage, check_bind, read_temperatures


class FakeTrack:
    def __init__(self, tid, decided=False):
        self.id, self.decided = tid, decided


def _decision(track_id, label, bin_name, t, score=0.9):
    return {"track_id": track_id, "seq": track_id * 10, "t_first": t - 0.5, "t_decided": t, "class_id": 0,
            "label": label, "score": score, "agreement": 1.0, "votes": {label: {"score_sum": 2.7, "frames": 3}},
            "bin": bin_name, "reason": "mapped", "bbox": [10, 10, 50, 50], "due": t + 0.2}


@pytest.fixture()
def page(tmp_path):
    log = EventLog(str(tmp_path / "events.sqlite"))
    log.start_run("dir:test", "cpu", 0)
    now = time.time()
    ids = log.record_decisions([_decision(1, "can", "metal", now - 30), _decision(2, "bottle", "plastic", now - 20),
                                _decision(3, "can", "metal", now - 10)])
    log.mark_done(ids[0], "metal", 1, "actuated", 250.0)
    log.mark_done(ids[1], "reject", 3, "failsafe", 250.0)  # actuator failed: went to the fail-safe bin
    queue = tmp_path / "queue"
    queue.mkdir()
    for seq, score in ((5, 0.55), (7, 0.31), (9, 0.42)):
        (queue / ("%012d.jpg" % seq)).write_bytes(b"\xff\xd8jpeg%d" % seq)
        (queue / ("%012d.json" % seq)).write_text(json.dumps({"seq": seq, "file": "%012d.jpg" % seq,
                                                             "best_score": score, "reason": "uncertain",
                                                             "detections": []}))
    (tmp_path / "secret.txt").write_text("not for the web")
    live = LiveView(trigger={"axis": "x", "position": 0.5}, accelerator="cpu")
    frame = np.zeros((48, 64, 3), np.uint8)
    frame[10:20, 10:30] = 200
    live.update(7, frame, [(FakeTrack(3), Detection(0, "can", 0.8, BBox(10, 10, 30, 20)))])
    live.decided(ids[2], frame, [10, 10, 30, 20])

    encoded = []

    def encoder(arr):
        encoded.append(arr.shape)
        return b"JPEG" + bytes(str(arr.shape), "ascii")

    status = {"accelerator": "cpu", "warning": "no Edge TPU", "per_bin": {}, "counters": {"faults": 1}}
    # the service's own count of actuations (Stats.per_bin): ids[0] into metal, ids[1] into the fail-safe bin
    p = OperatorPage(lambda: dict(status), live, str(tmp_path / "events.sqlite"), str(queue), jpeg_encoder=encoder,
                     moved_per_bin=lambda: {"metal": 1, "reject": 1},
                     queue_to_coco=lambda d: {"images": [], "annotations": [], "categories": [], "from": d})
    p.encoded = encoded
    p.ids = ids
    yield p
    log.close()


def _get(page, target, headers=None):
    return page.handle("GET", target, headers or {})


def test_page_and_static_assets_are_served(page):
    r = _get(page, "/")
    assert r.status == 200 and b"edge-trash sorter" in r.body and r.content_type.startswith("text/html")
    assert b"refreshLive" in _get(page, "/static/app.js").body
    assert _get(page, "/static/style.css").status == 200


def test_counts_match_the_event_log(page):
    c = json.loads(_get(page, "/api/counts").body)
    # the fail-safe actuation counts where the item really went; ids[2] has not moved yet: in no bin
    assert c["per_bin"] == {"metal": 1, "reject": 1} and c["last_hour"] == c["per_bin"]
    assert c["total"] == 2
    assert c["items_per_minute"] == pytest.approx(3 / 5.0)  # items decided
    assert sum(h["items"] for h in c["per_hour"]) == 2


def test_counts_hold_only_items_that_moved_and_since_start_outlives_the_logs_pruning(tmp_path):
    """The page counted rows of a table the log prunes (max_event_rows), so 'since start' stopped growing once the
    log was full, and counted failed or missed actuations in the bin they were meant for, where nothing went."""
    log = EventLog(str(tmp_path / "events.sqlite"))
    log.start_run("dir:test", "cpu", 0)
    now = time.time()
    ids = log.record_decisions([_decision(k, "can", "metal", now - 60 + k) for k in range(1, 6)])
    for ref, outcome in zip(ids, ["actuated", "failed", "missed", "unknown", "failsafe"]):
        log.mark_done(ref, {"actuated": "metal", "failsafe": "reject"}.get(outcome), 1, outcome, 250.0)
    log.close()
    live = LiveView(trigger={"axis": "x", "position": 0.5}, accelerator="cpu")
    from_log = OperatorPage(lambda: {}, live, str(tmp_path / "events.sqlite"), None)
    c = json.loads(_get(from_log, "/api/counts").body)
    assert c["per_bin"] == c["last_hour"] == {"metal": 1, "reject": 1} and c["total"] == 2
    assert [(h["bin"], h["items"]) for h in c["per_hour"]] in ([("metal", 1), ("reject", 1)],
                                                               [("reject", 1), ("metal", 1)])
    # the service's own count: 40000 items in a log pruned to its last rows
    own = OperatorPage(lambda: {}, live, str(tmp_path / "events.sqlite"), None,
                       moved_per_bin=lambda: {"metal": 30000, "reject": 10000})
    c = json.loads(_get(own, "/api/counts").body)
    assert c["per_bin"] == {"metal": 30000, "reject": 10000} and c["total"] == 40000
    assert c["last_hour"] == {"metal": 1, "reject": 1}


def test_since_start_is_this_run_and_the_last_hour_the_boards_60_minutes(tmp_path):
    """'Since start' counted every run the log kept; 'last hour' was the browser's clock hour (from hh:00)."""
    log = EventLog(str(tmp_path / "events.sqlite"))
    now = time.time()
    log.start_run("dir:test", "cpu", 0)
    first = log.record_decisions([_decision(1, "can", "metal", now - 7200), _decision(2, "can", "metal", now - 600)])
    for ref in first:
        log.mark_done(ref, "metal", 1, "actuated", 250.0)
    log.start_run("dir:test", "cpu", 10)  # the service restarted
    again = log.record_decisions([_decision(3, "bottle", "plastic", now - 5)])
    log.mark_done(again[0], "plastic", 1, "actuated", 250.0)
    log.close()
    page = OperatorPage(lambda: {}, LiveView(trigger={"axis": "x", "position": 0.5}, accelerator="cpu"),
                        str(tmp_path / "events.sqlite"), None)
    c = json.loads(_get(page, "/api/counts").body)
    assert c["per_bin"] == {"plastic": 1} and c["last_hour"] == {"metal": 1, "plastic": 1}


def test_decisions_newest_first_with_votes_and_thumbnails(page):
    d = json.loads(_get(page, "/api/decisions?limit=2").body)["decisions"]
    assert [x["id"] for x in d] == [page.ids[2], page.ids[1]]
    assert d[1]["actuated_bin"] == "reject" and d[1]["status"] == "failsafe"
    assert d[0]["votes"] == {"can": {"frames": 3, "score_sum": 2.7}}
    thumb = _get(page, d[0]["thumb"])
    assert thumb.status == 200 and thumb.content_type == "image/jpeg"
    assert thumb.body == b"JPEG(10, 20, 3)"  # the crop of the decided item's box
    assert _get(page, d[1]["thumb"]).status == 404  # no crop kept for it


def test_live_overlay_and_frame_encoded_once_per_frame(page):
    live = json.loads(_get(page, "/api/live").body)
    assert live["seq"] == 7 and live["accelerator"] == "cpu"
    assert live["tracks"] == [{"track_id": 3, "box": [10.0, 10.0, 30.0, 20.0], "label": "can", "score": 0.8,
                               "decided": False}]
    first = _get(page, "/api/frame.jpg")
    second = _get(page, "/api/frame.jpg")
    assert first.status == 200 and first.headers["X-Frame-Seq"] == "7" and first.body == second.body
    assert page.encoded.count((48, 64, 3)) == 1


def test_queue_least_confident_first_files_and_coco(page):
    items = json.loads(_get(page, "/api/queue").body)["items"]
    assert [i["seq"] for i in items] == [7, 9, 5]
    img = _get(page, items[0]["image_url"])
    assert img.status == 200 and img.body == b"\xff\xd8jpeg7"
    coco = _get(page, "/api/queue.coco.json")
    assert coco.status == 200 and "attachment" in coco.headers["Content-Disposition"]
    assert json.loads(coco.body)["images"] == []


def test_the_queue_is_read_once_per_change_and_the_page_asks_for_what_it_shows(page, monkeypatch):
    """Each 5 s poll re-read every sidecar of a full queue (3413: 142 ms here, ~1 s of a board's CPU) and sent
    them all (1.5 MB) for the 30 the page shows."""
    reads = []
    real = page._queue_record
    monkeypatch.setattr(page, "_queue_record", lambda name: reads.append(name) or real(name))
    assert [i["seq"] for i in json.loads(_get(page, "/api/queue").body)["items"]] == [7, 9, 5]
    assert len(reads) == 3
    answer = json.loads(_get(page, "/api/queue?limit=2").body)
    assert [i["seq"] for i in answer["items"]] == [7, 9] and answer["total"] == 3 and len(reads) == 3
    sidecar = os.path.join(page.queue_dir, "%012d.json" % 7)
    record = json.load(open(sidecar))
    record["best_score"] = 0.9
    with open(sidecar, "w") as f:
        json.dump(record, f, indent=1)  # another size: read again
    os.remove(os.path.join(page.queue_dir, "%012d.json" % 9))
    assert [i["seq"] for i in json.loads(_get(page, "/api/queue").body)["items"]] == [5, 7]
    assert reads[3:] == ["%012d.json" % 7]
    assert "api/queue?limit=30" in _get(page, "/static/app.js").body.decode()


@pytest.mark.parametrize("target", ["/api/queue/image/../secret.txt", "/api/queue/image/..%2Fsecret.txt",
                                    "/api/queue/image/%2e%2e/secret.txt", "/api/queue/image/labels.json",
                                    "/static/../operator_page.py", "/../secret.txt", "/api/queue/image/"])
def test_no_request_reaches_files_outside_the_queue(page, target):
    r = _get(page, target)
    assert r.status == 404
    assert b"not for the web" not in r.body and b"import" not in r.body


def test_read_only_and_token(page):
    assert page.handle("POST", "/api/status", {}).status == 405
    assert page.handle("PUT", "/api/decisions", {}).status == 405
    page.token = "s3cret"
    assert _get(page, "/api/status").status == 401
    assert _get(page, "/").status == 401
    assert _get(page, "/api/status?token=wrong").status == 401
    assert _get(page, "/api/status?token=s3cret").status == 200
    assert _get(page, "/api/status", {"X-Edge-Trash-Token": "s3cret"}).status == 200
    assert _get(page, "/api/status", {"Authorization": "Bearer s3cret"}).status == 200


def test_binding_beyond_loopback_needs_a_token():
    check_bind("127.0.0.1", None)
    check_bind("localhost", None)
    with pytest.raises(ValueError, match="set health.token"):
        check_bind("0.0.0.0", None)
    check_bind("0.0.0.0", "tok")


def test_health_reports_disk_and_temperatures(page, tmp_path):
    zone = tmp_path / "sys" / "thermal" / "thermal_zone0"
    zone.mkdir(parents=True)
    (zone / "temp").write_text("47300\n")
    (zone / "type").write_text("cpu-thermal\n")
    apex = tmp_path / "sys" / "apex" / "apex_0"
    apex.mkdir(parents=True)
    (apex / "temp").write_text("51000\n")
    assert read_temperatures(str(tmp_path / "sys")) == {"cpu-thermal": 47.3, "edgetpu_apex_0": 51.0}
    page.thermal_root = str(tmp_path / "sys")
    s = json.loads(_get(page, "/api/status").body)
    assert s["health"]["temperatures_c"]["cpu-thermal"] == 47.3
    assert s["health"]["disk"]["log_bytes"] > 0
    assert s["health"]["disk"]["queue_bytes"] == sum(p.stat().st_size for p in (tmp_path / "queue").iterdir())
    # the status says "cpu", so only an Edge TPU device node could make the page report one
    import glob
    assert s["health"]["tpu_present"] is bool(glob.glob("/dev/apex_*"))
    page.status = lambda: {"accelerator": "edgetpu"}
    assert json.loads(_get(page, "/api/status").body)["health"]["tpu_present"] is True


def test_page_assets_carry_the_token(page):
    page.token = "s3cret/+x"
    body = _get(page, "/?token=s3cret/%2Bx").body
    assert b'static/app.js?token=s3cret%2F%2Bx"' in body and b'static/style.css?token=s3cret%2F%2Bx"' in body
    assert _get(page, "/static/app.js?token=s3cret%2F%2Bx").status == 200


# ------------------------------------------------------------------ robustness (audit exp11)

def test_a_foreign_sidecar_is_skipped_not_a_failed_queue(page, tmp_path):
    queue = tmp_path / "queue"
    (queue / "zzz.json").write_text(json.dumps({"file": 12, "best_score": 0.5}))  # used to be a TypeError
    (queue / "zzy.json").write_text(json.dumps({"file": "a.jpg", "best_score": "high", "seq": 1}))
    (queue / "zzx.json").write_text(json.dumps({"file": "a.jpg", "best_score": 0.1, "seq": "one"}))
    (queue / "zzw.json").write_text(json.dumps({"file": "../secret.txt", "best_score": 0.1}))
    r = _get(page, "/api/queue")
    assert r.status == 200
    assert [i["seq"] for i in json.loads(r.body)["items"]] == [7, 9, 5]


def test_a_queue_image_evicted_after_the_check_is_404(page, monkeypatch):
    from edge_trash.edge_runtime import operator_page
    monkeypatch.setattr(operator_page.os.path, "isfile", lambda path: True)  # the quota evicts it right after
    r = _get(page, "/api/queue/image/000000000099.jpg")
    assert (r.status, json.loads(r.body)) == (404, {"error": "no such queue file"})


def test_status_survives_files_vanishing_while_it_sums_sizes(page, monkeypatch):
    from edge_trash.edge_runtime import operator_page
    real = operator_page.os.path.getsize

    def getsize(path):
        if path.endswith((".jpg", "-wal")):
            raise FileNotFoundError(2, "No such file or directory", path)
        return real(path)
    monkeypatch.setattr(operator_page.os.path, "getsize", getsize)
    r = _get(page, "/api/status")
    assert r.status == 200 and json.loads(r.body)["health"]["disk"]["log_bytes"] > 0


def _http(address, raw, timeout=5.0):
    import socket
    s = socket.create_connection(address, timeout=timeout)
    try:
        s.sendall(raw)
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                return data
            data += chunk
    finally:
        s.close()


def test_a_handler_exception_answers_500_json_and_logs_the_traceback_once(caplog, capfd):
    from edge_trash.edge_runtime.health import HealthServer
    from edge_trash.edge_runtime.operator_page import Response

    def router(method, target, headers):
        if target == "/boom":
            raise TypeError("can only concatenate str (not \"int\") to str")
        return Response(200, "application/json", b"{}", {})

    server = HealthServer(lambda: {}, "127.0.0.1", 0, router=router)
    server.start()
    try:
        with caplog.at_level("DEBUG", logger="edge_trash.edge_runtime.health"):
            answers = [_http(server.address[:2], b"GET /boom HTTP/1.0\r\n\r\n") for _ in range(3)]
            ok = _http(server.address[:2], b"GET /fine HTTP/1.0\r\n\r\n")
    finally:
        server.stop()
    for answer in answers:
        head, body = answer.split(b"\r\n\r\n", 1)
        assert head.split(b"\r\n")[0] == b"HTTP/1.0 500 Internal Server Error"
        assert json.loads(body) == {"error": "internal error; the traceback is in the service's log"}
    assert ok.split(b"\r\n")[0] == b"HTTP/1.0 200 OK"
    errors = [r for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and errors[0].exc_info is not None
    assert errors[0].getMessage().startswith("operator page: GET /boom failed (TypeError: can only concatenate")
    assert len([r for r in caplog.records if r.levelname == "DEBUG" and "failed again" in r.getMessage()]) == 2
    assert "Traceback" not in capfd.readouterr().err


def test_an_idle_connection_is_closed_by_the_server_within_the_timeout():
    import socket
    import threading
    from edge_trash.edge_runtime.health import HealthServer
    server = HealthServer(lambda: {"ok": True}, "127.0.0.1", 0, request_timeout_s=0.5)
    server.start()
    try:
        before = threading.active_count()
        started = time.monotonic()
        idle = [socket.create_connection(server.address[:2], timeout=5.0) for _ in range(4)]
        while threading.active_count() < before + 4 and time.monotonic() - started < 2.0:
            time.sleep(0.01)
        assert threading.active_count() == before + 4  # one thread per connection while it waits
        assert [s.recv(100) for s in idle] == [b""] * 4  # closed by the server, nothing sent
        assert time.monotonic() - started < 3.0  # (without a timeout: recv waits the client's 5 s, then fails)
        for s in idle:
            s.close()
        deadline = time.monotonic() + 3.0
        while threading.active_count() > before and time.monotonic() < deadline:
            time.sleep(0.05)
        assert threading.active_count() == before
        answer = _http(server.address[:2], b"GET /health HTTP/1.0\r\n\r\n")
        assert answer.split(b"\r\n")[0] == b"HTTP/1.0 200 OK" and answer.endswith(b'{"ok": true}')
    finally:
        server.stop()


def test_connections_past_the_cap_are_closed_and_their_threads_never_started():
    """Slow clients (a byte every few seconds outlasts the per-read timeout) held a thread each, without limit."""
    import socket
    import threading
    from edge_trash.edge_runtime.health import HealthServer
    server = HealthServer(lambda: {"ok": True}, "127.0.0.1", 0, request_timeout_s=30.0, max_connections=3)
    server.start()
    try:
        def serving():  # this server's connection threads (named after their target), not the suite's others
            return sum("process_request_thread" in t.name for t in threading.enumerate())

        held = [socket.create_connection(server.address[:2], timeout=5.0) for _ in range(3)]
        deadline = time.monotonic() + 3.0
        while serving() < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        refused = socket.create_connection(server.address[:2], timeout=5.0)
        assert refused.recv(100) == b""  # closed at once (the held ones wait up to 30 s)
        refused.close()
        assert serving() == 3
        held.pop().close()  # a slot comes free: the next request is answered
        deadline = time.monotonic() + 3.0
        while serving() > 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        answer = _http(server.address[:2], b"GET /health HTTP/1.0\r\n\r\n")
        assert answer.split(b"\r\n")[0] == b"HTTP/1.0 200 OK"
        for s in held:
            s.close()
    finally:
        server.stop()


def test_failure_log_logs_each_failure_once_even_past_its_limit(caplog):
    from edge_trash.edge_runtime.health import _FailureLog

    failures = _FailureLog(limit=2)

    def fail(kind):
        try:
            raise kind("boom")
        except Exception as exc:
            failures.log("GET /x", exc)

    with caplog.at_level("DEBUG", logger="edge_trash.edge_runtime.health"):
        for kind in (KeyError, ValueError, TypeError, TypeError, TypeError):
            fail(kind)
    errors = [r.getMessage().split("(")[1].split(":")[0] for r in caplog.records if r.levelname == "ERROR"]
    assert errors == ["KeyError", "ValueError", "TypeError"]  # the third kind, over the limit: once, not 3 times
