"""The service loop with fakes: accounting, decisions, health endpoint, sd_notify, SIGTERM, CLI errors."""

import json
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.request

import numpy as np
import pytest

from edge_trash.edge_runtime.__main__ import EXIT_CONFIG, main
from edge_trash.edge_runtime.health import SystemdNotifier, percentile
from edge_trash.edge_runtime.service import build_service
from edge_trash.edge_runtime.sources import FrameCapture, FrameSource
from runtime_fixtures import (q, FakeInterpreter, conveyor_frame, conveyor_items, make_bundle, make_fake_loader,
                              write_conveyor_frames)

TESTS = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(TESTS)


def wait_for(db, sql, minimum, timeout=30.0):
    """Poll ``sql`` (a COUNT) on a database another process is writing until it reaches ``minimum``."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if os.path.exists(db) and q(db, sql)[0][0] >= minimum:
                return
        except sqlite3.OperationalError:  # schema not created yet
            pass
        time.sleep(0.05)
    raise AssertionError("timed out waiting for %s >= %d" % (sql, minimum))


def test_percentile_nearest_rank():
    assert percentile([], 50) is None
    assert percentile(range(1, 101), 50) == 50 and percentile(range(1, 101), 99) == 99
    assert percentile([3.0], 99) == 3.0


def test_a_compiled_model_the_manifest_does_not_list_runs_with_a_fault(tmp_path, caplog):
    """A model_int8_edgetpu.tflite compiled by hand after the export ran with no check and no word of it."""
    from edge_trash.edge_runtime.interpreter import LoadedInterpreter

    bundle = make_bundle(str(tmp_path / "bundle"), sort_overrides={"health": {"enabled": False},
                                                                    "log": {"path": str(tmp_path / "ev.sqlite")}})
    compiled = os.path.join(bundle, "model_int8_edgetpu.tflite")
    with open(compiled, "wb") as f:
        f.write(b"compiled later")
    write_conveyor_frames(str(tmp_path / "frames"), 2)

    def on_the_tpu(cpu, tpu, device):
        return LoadedInterpreter(FakeInterpreter(), "edgetpu", tpu, "fake")

    loop, cleanup = build_service(bundle, None, "dir:%s" % (tmp_path / "frames"), interpreter_loader=on_the_tpu)
    cleanup()
    message = ("%s is not in the bundle's manifest (compiled after the export?), so nothing checked it: rerun "
               "`edge-trash export --edgetpu --compiler PATH` so the manifest covers it" % compiled)
    assert q(str(tmp_path / "ev.sqlite"), "SELECT kind, message FROM faults") == [("bundle", message)]
    assert message in [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert loop.stats.snapshot()["counters"]["faults"] == 1  # the summary's count has the start's faults too
    loop, cleanup = build_service(bundle, None, "dir:%s" % (tmp_path / "frames"), interpreter_loader=make_fake_loader())
    cleanup()  # the CPU model, in the manifest: no second fault
    assert len(q(str(tmp_path / "ev.sqlite"), "SELECT kind FROM faults")) == 1


def test_dir_replay_decides_each_crossing_item_once_and_serves_health(tmp_path):
    bundle = make_bundle(str(tmp_path / "bundle"), sort_overrides={
        "travel_delay_s": 0.0, "health": {"port": 0}, "log": {"path": str(tmp_path / "ev.sqlite")},
        "hard_examples": {"dir": str(tmp_path / "hard"), "min_interval_s": 0.0}})
    items = write_conveyor_frames(str(tmp_path / "frames"), 300, corrupt=[40])
    loop, cleanup = build_service(bundle, None, "dir:%s" % (tmp_path / "frames"),
                                  interpreter_loader=make_fake_loader(fail_on=[100]))
    try:
        summary = loop.run(threading.Event())
    finally:
        cleanup()
    db = str(tmp_path / "ev.sqlite")
    assert q(db, "SELECT status, COUNT(*) FROM frames GROUP BY status") == [
        ("inference_error", 1), ("processed", 298), ("read_error", 1)]
    assert q(db, "SELECT MIN(seq), MAX(seq), COUNT(DISTINCT seq) FROM frames") == [(0, 299, 300)]
    crossing = [i for i in items if i.crossing < 300]
    decided = q(db, "SELECT seq, label, status FROM decisions ORDER BY seq")
    assert len(decided) == len(crossing) == summary["decisions"]
    assert all(status == "actuated" for _, _, status in decided)
    for item, (seq, label, _) in zip(crossing, decided):
        assert seq == item.crossing
    kinds = sorted(k for (k,) in q(db, "SELECT kind FROM faults"))
    assert kinds == ["inference", "read_error"]
    assert summary["counters"]["processed"] == 298 and summary["per_bin"]
    saved = [n for n in os.listdir(str(tmp_path / "hard")) if n.endswith(".json") and n != "labels.json"]
    dim_or_flipped = [i for i in crossing if i.value < 255 or i.flip_class is not None]
    assert len(saved) >= len(dim_or_flipped) > 0


def test_health_endpoint_serves_status_json(tmp_path):
    bundle = make_bundle(str(tmp_path / "bundle"), sort_overrides={
        "health": {"port": 0}, "log": {"path": str(tmp_path / "ev.sqlite")}})
    write_conveyor_frames(str(tmp_path / "frames"), 60)
    loop, cleanup = build_service(bundle, None, "dir:%s" % (tmp_path / "frames"), interpreter_loader=make_fake_loader())
    try:
        loop.run(threading.Event())
        host, port = loop.health_address
        body = json.loads(urllib.request.urlopen("http://%s:%d/health" % (host, port), timeout=5).read())
        con = sqlite3.connect(str(tmp_path / "ev.sqlite"))  # as the log's pruning of old rows would
        con.execute("DELETE FROM decisions")
        con.commit()
        con.close()
        counts = json.loads(urllib.request.urlopen("http://%s:%d/api/counts" % (host, port), timeout=5).read())
    finally:
        cleanup()
    assert host == "127.0.0.1"
    # the page's since-start counts are the service's own count of items moved, not rows of the pruned log
    assert counts["per_bin"] == body["per_bin"] == loop.stats.per_bin() and sum(body["per_bin"].values()) > 0
    assert body["accelerator"] == "cpu" and body["counters"]["processed"] == 60
    assert set(body["inference_ms"]) == {"p50", "p99"} and body["dropped_frames"] == 0
    assert body["pending_actuations"] == 0 and body["recent_faults"] == []
    assert body["ok"] is True and body["problems"] == []


def test_health_answers_503_naming_what_keeps_items_from_their_bins(tmp_path):
    """Every actuation failing (a serial controller that times out: each item logged failed, the service running
    on) answered 200 like a healthy sorter, so `curl -f` could not tell; the page's own status stays 200."""
    import urllib.error

    bundle = make_bundle(str(tmp_path / "bundle"), sort_overrides={
        "health": {"port": 0}, "log": {"path": str(tmp_path / "ev.sqlite")},
        "actuator": {"type": "simulated", "fail_every": 1, "retries": 0}})
    write_conveyor_frames(str(tmp_path / "frames"), 60)
    loop, cleanup = build_service(bundle, None, "dir:%s" % (tmp_path / "frames"), interpreter_loader=make_fake_loader())
    try:
        summary = loop.run(threading.Event())
        host, port = loop.health_address
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen("http://%s:%d/health" % (host, port), timeout=5)
        body = json.loads(refused.value.read())
        status = json.loads(urllib.request.urlopen("http://%s:%d/api/status" % (host, port), timeout=5).read())
    finally:
        cleanup()
    moves = summary["decisions"]
    assert refused.value.code == 503 and moves >= 3
    assert body["ok"] is False and body["problems"] == status["problems"] and len(body["problems"]) == 1
    # each item: its bin's try, then the fail-safe bin's (call 2 * moves); the message names the item's own bin
    assert re.match(r"the last %d actuations failed \(the last: bin '(\w+)': simulated failure for bin '\1' "
                    r"\(call %d\)\)$" % (moves, 2 * moves - 1), body["problems"][0]), body["problems"]


def test_health_problems_and_an_uptime_no_clock_step_moves(monkeypatch):
    from edge_trash.edge_runtime import health
    from edge_trash.edge_runtime.health import Stats, health_problems

    stats = Stats()
    monkeypatch.setattr(health.time, "time", lambda: 0.0)  # NTP set the clock back 56 years: uptime is unmoved
    snap = stats.snapshot()
    assert 0 <= snap["uptime_s"] < 60 and snap["last_frame_age_s"] is None
    assert health_problems(snap) == []
    assert health_problems(dict(snap, uptime_s=12.0)) == [
        "no frame has gone through inference since the start, 12 s ago"]
    assert health_problems(dict(snap, last_frame_age_s=11.5), "one actuation has run for 16 s", "the last 3 failed") == [
        "actuations stopped: one actuation has run for 16 s", "the last 3 failed",
        "no frame has gone through inference for 12 s: items passing now are not seen"]
    assert health_problems(dict(snap, last_frame_age_s=9.9)) == []


def test_start_warns_about_classes_sort_yaml_leaves_unmapped_and_records_a_fault(tmp_path, caplog):
    log_path = str(tmp_path / "ev.sqlite")
    bundle = make_bundle(str(tmp_path / "bundle"), sort_overrides={"health": {"enabled": False},
                                                                    "log": {"path": log_path}})
    sort_yaml = os.path.join(bundle, "sort.yaml")
    with open(sort_yaml) as f:
        edited = dict(json.load(f), classes={"bottle": "bottle"})  # the operator mapped one class of three
    with open(sort_yaml, "w") as f:
        json.dump(edited, f)
    write_conveyor_frames(str(tmp_path / "frames"), 5)
    with caplog.at_level("WARNING", logger="edge_trash.edge_runtime.service"):
        loop, cleanup = build_service(bundle, None, "dir:%s" % (tmp_path / "frames"),
                                      interpreter_loader=make_fake_loader())
        cleanup()
    message = ("%s: classes has no bin for classes can, carton: items of them go to reject_bin \"reject\" until "
               "they are added to classes in sort.yaml (e.g. \"can\": \"BIN\", BIN one of bins ['bottle', 'can', "
               "'carton', 'reject']), then restart the service" % sort_yaml)
    assert [r.getMessage() for r in caplog.records if r.levelname == "WARNING"] == [message]
    assert q(log_path, "SELECT kind, message FROM faults") == [("sort_config", message)]


class BurstSource(FrameSource):
    """A live source that produces frames as fast as it can."""

    live = True
    description = "burst"

    def __init__(self, n):
        self.n, self.i, self.items = n, 0, conveyor_items(n)

    def read(self):
        if self.i >= self.n:
            return None
        self.i += 1
        return conveyor_frame(self.i - 1, self.items)


def test_live_source_drops_oldest_frames_and_accounts_for_all():
    capture = FrameCapture(BurstSource(500), start_seq=0, queue_size=2)
    capture.start()
    seen, dropped = [], []
    while True:
        frame, lost = capture.get(0.5)
        dropped += lost
        if frame is None and capture.done:
            break
        if frame is not None:
            seen.append(frame.seq)
            time.sleep(0.002)  # slower consumer
    dropped += capture.stop()
    assert dropped, "a slow consumer of a live source must drop frames"
    assert sorted(seen + dropped) == list(range(500))
    assert seen == sorted(seen) and 499 in seen  # the newest frame survives, oldest are dropped


def test_a_camera_stuck_in_a_read_is_not_released_under_it_at_stop(caplog):
    """Releasing an OpenCV capture from another thread while its read() blocks may crash the process, before the
    pending actuations fire and the log is flushed: a stuck source is left open (the process's exit closes it)."""
    class Stuck:
        live, description = True, "camera:0"

        def __init__(self):
            self.reading, self.go_on, self.closed = threading.Event(), threading.Event(), 0

        def open(self, start_index=0):
            pass

        def read(self):
            self.reading.set()
            self.go_on.wait(10)
            return None

        def close(self):
            self.closed += 1
    source = Stuck()
    capture = FrameCapture(source, queue_size=2)
    capture.start()
    assert source.reading.wait(5)
    assert capture.stop(wait_s=0.2) == [] and source.closed == 0
    assert [r.getMessage() for r in caplog.records if r.levelname == "WARNING"] == [
        "camera:0: a read has not returned for 0.2 s; the source is left open until the service exits"]
    source.go_on.set()  # the read returns: stopped, it is closed as always
    capture = FrameCapture(source, queue_size=2)
    capture.start()
    capture.stop()
    assert source.closed == 1


def test_a_replay_into_the_log_of_an_earlier_one_says_it_has_nothing_left(tmp_path, caplog):
    """A file source resumes after the log's last frame (a restart goes on with a replay): run again on the same
    log, it processed nothing without a word."""
    write_conveyor_frames(str(tmp_path / "frames"), 3)
    bundle = make_bundle(str(tmp_path / "bundle"), sort_overrides={"health": {"enabled": False},
                                                                    "log": {"path": str(tmp_path / "ev.sqlite")}})
    argv = ["run", "--bundle", bundle, "--source", "dir:%s" % (tmp_path / "frames")]
    assert main(argv, interpreter_loader=make_fake_loader()) == 0 and not [
        r for r in caplog.records if "nothing left to replay" in r.getMessage()]
    assert main(argv, interpreter_loader=make_fake_loader()) == 0
    assert ("dir source %s: nothing left to replay: a file source resumes after the event log's last frame (2), "
            "and it holds 3; to replay it again, give another --log" % (tmp_path / "frames")) in [
        r.getMessage() for r in caplog.records if r.levelname == "WARNING"]


def test_a_bundle_without_its_sort_yaml_runs_with_a_config_given_elsewhere(tmp_path):
    import shutil

    bundle = make_bundle(str(tmp_path / "bundle"), sort_overrides={"health": {"enabled": False},
                                                                    "log": {"path": str(tmp_path / "ev.sqlite")}})
    shutil.move(os.path.join(bundle, "sort.yaml"), str(tmp_path / "sort.yaml"))  # as install.sh keeps it in /etc
    write_conveyor_frames(str(tmp_path / "frames"), 2)
    assert main(["run", "--bundle", bundle, "--config", str(tmp_path / "sort.yaml"), "--source",
                 "dir:%s" % (tmp_path / "frames")], interpreter_loader=make_fake_loader()) == 0


def test_a_camera_without_opencv_installed_stays_stopped(tmp_path, capsys, monkeypatch):
    """No restart installs OpenCV: exit 78 (the unit stays stopped with the fix), not 1 every 5 s."""
    monkeypatch.setitem(sys.modules, "cv2", None)
    monkeypatch.delenv("INVOCATION_ID", raising=False)
    bundle = make_bundle(str(tmp_path / "bundle"), sort_overrides={"health": {"enabled": False},
                                                                    "log": {"path": str(tmp_path / "ev.sqlite")}})
    assert main(["run", "--bundle", bundle, "--source", "camera:0"], interpreter_loader=make_fake_loader()) == 78
    assert "camera:0 needs OpenCV: `sudo apt-get install python3-opencv`" in capsys.readouterr().err


def test_a_frame_is_timed_when_it_comes_not_before_the_read_waits_for_it():
    """read() waits a frame period for the camera (or the replay's pace); timed before it, every frame was early by
    that much and an item at 1 fps was declared 0.7 s late and not fired."""
    now = [100.0]

    class PacedSource(FrameSource):
        live, description = True, "paced"

        def __init__(self):
            self.i = 0

        def read(self):
            if self.i == 3:
                return None
            self.i += 1
            now[0] += 1.0  # one frame period passes inside read()
            return np.zeros((4, 4, 3), np.uint8)
    capture = FrameCapture(PacedSource(), clock=lambda: now[0], queue_size=5)
    capture.start()
    times = []
    while not capture.done:
        frame, _ = capture.get(0.5)
        if frame is not None:
            times.append(frame.t)
    capture.stop()
    assert times == [101.0, 102.0, 103.0]


def test_sd_notify_ready_and_watchdog(tmp_path):
    path = str(tmp_path / "notify.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(path)
    server.settimeout(2)
    try:
        notifier = SystemdNotifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "2000000"})
        assert notifier.watchdog_interval == 1.0
        assert notifier.notify("READY=1")
        notifier.watchdog()
        notifier.watchdog()  # within the interval: no second ping
        assert server.recv(100) == b"READY=1" and server.recv(100) == b"WATCHDOG=1"
        server.settimeout(0.1)
        with pytest.raises(socket.timeout):
            server.recv(100)
    finally:
        server.close()
    assert SystemdNotifier({}).notify("READY=1") is False


def _subprocess_env():
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([REPO, TESTS])
    return env


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_sigterm_fires_pending_actuations_and_flushes_the_log(tmp_path, signum):
    db, journal = str(tmp_path / "ev.sqlite"), str(tmp_path / "journal.txt")
    bundle = make_bundle(str(tmp_path / "bundle"), sort_overrides={
        "travel_delay_s": 1.5, "health": {"enabled": False}, "log": {"path": db},
        "actuator": {"journal": journal}})
    write_conveyor_frames(str(tmp_path / "frames"), 400)
    code = ("import runtime_fixtures, sys; sys.exit(runtime_fixtures.run_fake_service(sys.argv[1:], delay_s=0.01))")
    proc = subprocess.Popen([sys.executable, "-c", code, "run", "--bundle", bundle,
                             "--source", "dir:%s" % (tmp_path / "frames")], env=_subprocess_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,  # as from a terminal, even under nohup
                            preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_DFL))
    wait_for(db, "SELECT COUNT(*) FROM decisions", 2)
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err.decode()
    statuses = q(db, "SELECT status, COUNT(*) FROM decisions GROUP BY status")
    assert statuses and all(s == "actuated" for s, _ in statuses), statuses
    fired = [line.split()[0] for line in open(journal)]
    assert sorted(int(r) for r in fired) == [r for (r,) in q(db, "SELECT id FROM decisions ORDER BY id")]
    last = q(db, "SELECT MAX(seq), COUNT(*) FROM frames")[0]
    assert last[1] == last[0] + 1 and last[0] < 399  # every frame up to the stop is in the log; it stopped early
    assert json.loads(out.decode().strip().splitlines()[-1])["decisions"] == len(fired)


def test_a_service_under_nohup_keeps_running_through_sighup(tmp_path):
    db = str(tmp_path / "ev.sqlite")
    bundle = make_bundle(str(tmp_path / "bundle"), sort_overrides={
        "travel_delay_s": 0.0, "health": {"enabled": False}, "log": {"path": db}})
    write_conveyor_frames(str(tmp_path / "frames"), 150)
    code = ("import runtime_fixtures, sys; sys.exit(runtime_fixtures.run_fake_service(sys.argv[1:], delay_s=0.01))")
    proc = subprocess.Popen([sys.executable, "-c", code, "run", "--bundle", bundle,
                             "--source", "dir:%s" % (tmp_path / "frames")], env=_subprocess_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_IGN))  # what nohup does
    wait_for(db, "SELECT COUNT(*) FROM frames", 10)
    proc.send_signal(signal.SIGHUP)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err.decode()
    assert q(db, "SELECT COUNT(*) FROM frames") == [(150,)]  # it went on to the end of the recording


class Int8InputFake(FakeInterpreter):
    def get_input_details(self):
        details = super().get_input_details()
        details[0]["dtype"] = np.int8
        return details


class ModelGardenNamesFake(FakeInterpreter):
    def _get_full_signature_list(self):
        return {"serving_default": {"outputs": {"detection_boxes": 10, "detection_classes": 11,
                                                "detection_scores": 12, "num_detections": 13}}}


@pytest.mark.parametrize("fake, message", [
    (Int8InputFake(), "takes a int8 [1, 64, 64, 3] input; the service feeds [1, H, W, 3] uint8"),
    (ModelGardenNamesFake(), "the detector contract (and pycoral's detect.get_objects) needs"),
])
def test_models_breaking_the_contract_are_refused_at_start(tmp_path, capsys, fake, message):
    bundle = make_bundle(str(tmp_path / "bundle"), sort_overrides={"health": {"enabled": False},
                                                                    "log": {"path": str(tmp_path / "ev.sqlite")}})
    write_conveyor_frames(str(tmp_path / "frames"), 3)
    code = main(["run", "--bundle", bundle, "--source", "dir:%s" % (tmp_path / "frames")],
                interpreter_loader=make_fake_loader(fake))
    assert code == EXIT_CONFIG == 78 and message in capsys.readouterr().err


def test_health_port_in_use_names_the_key(tmp_path, capsys):
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", 0))
    blocker.listen(1)
    try:
        port = blocker.getsockname()[1]
        bundle = make_bundle(str(tmp_path / "bundle"), sort_overrides={
            "health": {"port": port}, "log": {"path": str(tmp_path / "ev.sqlite")}})
        code = main(["run", "--bundle", bundle, "--source", "dir:%s" % tmp_path], interpreter_loader=make_fake_loader())
    finally:
        blocker.close()
    assert code == 1 and "health: cannot listen on 127.0.0.1:%d" % port in capsys.readouterr().err


@pytest.mark.parametrize("setup, message, status", [
    # configuration: a restart cannot mend it (78, and systemd leaves the unit stopped)
    ("no_manifest", "manifest.json is missing", 78),
    ("no_bundle", "manifest.json is missing", 78),
    ("model_cut_short", "model_int8.tflite does not match the manifest", 78),  # a copy that stopped half-way
    ("model_gone", "model_int8.tflite is listed in the manifest but missing from the bundle", 78),
    ("bad_config", "classes.bottel: not a class of this model", 78),
    ("bad_source", "expected camera:N, gst:PIPELINE, dir:PATH or video:PATH", 78),
    ("bad_fps", "fps=ten is not a frame rate", 78),
    # what may come back: retried (1)
    ("no_frames_folder", "is not a directory: check --source dir:PATH (a folder of frames; a disk not mounted yet "
                         "is retried under systemd)", 1),
])
def test_cli_errors_exit_with_the_reason(tmp_path, capsys, monkeypatch, setup, message, status):
    monkeypatch.delenv("INVOCATION_ID", raising=False)
    bundle = make_bundle(str(tmp_path / "bundle"), sort_overrides={"health": {"enabled": False},
                                                                    "log": {"path": str(tmp_path / "ev.sqlite")}})
    source = "dir:%s" % tmp_path
    model = os.path.join(bundle, "model_int8.tflite")
    if setup == "no_manifest":
        os.unlink(os.path.join(bundle, "manifest.json"))
    elif setup == "no_bundle":
        bundle = str(tmp_path / "not-there")
    elif setup == "model_cut_short":
        with open(model, "r+b") as f:
            f.truncate(os.path.getsize(model) // 2)
    elif setup == "model_gone":
        os.unlink(model)
    elif setup == "bad_config":
        with open(os.path.join(bundle, "sort.yaml"), "w") as f:
            json.dump({"classes": {"bottel": "x"}}, f)
    elif setup == "bad_source":
        source = "webcam"
    elif setup == "bad_fps":
        source = "dir:%s?fps=ten" % tmp_path
    else:
        source = "dir:%s" % (tmp_path / "frames-not-mounted-yet")
    def verified_first(cpu, tpu, device):  # a real loader fails on a file cut short: exit 1, retried forever
        raise AssertionError("the model was loaded before the bundle was verified")

    loader = verified_first if setup in ("no_manifest", "no_bundle", "model_cut_short", "model_gone") else \
        make_fake_loader()
    code = main(["run", "--bundle", bundle, "--source", source], interpreter_loader=loader)
    assert code == status
    err = capsys.readouterr().err
    assert message in err and "systemctl" not in err  # run by hand: no word of systemd


def test_a_broken_sort_config_under_systemd_says_the_unit_stays_stopped(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("INVOCATION_ID", "0123abcd")  # systemd sets it for the units it runs
    bundle = make_bundle(str(tmp_path / "bundle"), sort_overrides={"health": {"enabled": False},
                                                                    "log": {"path": str(tmp_path / "ev.sqlite")}})
    with open(os.path.join(bundle, "sort.yaml"), "w") as f:
        json.dump({"classes": {"bottel": "x"}}, f)
    code = main(["run", "--bundle", bundle, "--source", "dir:%s" % tmp_path], interpreter_loader=make_fake_loader())
    lines = capsys.readouterr().err.splitlines()
    assert code == 78 and "classes.bottel: not a class of this model" in lines[0]
    assert lines[1] == ("edge-trash-device: the service stays stopped until this is fixed (a restart cannot mend "
                        "it); then: sudo systemctl restart edge-trash")


def test_cli_rejects_nonpositive_max_frames(capsys):
    assert main(["run", "--bundle", "x", "--max-frames", "0"]) == 2
    assert "--max-frames must be >= 1, got 0" in capsys.readouterr().err


@pytest.mark.parametrize("error, code", [("mismatch", EXIT_CONFIG), ("no package", EXIT_CONFIG), ("plain", 1)])
def test_a_runtime_too_old_for_the_model_stays_stopped_another_load_failure_is_retried(tmp_path, capsys,
                                                                                      monkeypatch, error, code):
    """A runtime too old for the model or no interpreter package at all (removed by an upgrade after install.sh
    checked it: it was exit 1, started again every 5 s for ever) stays stopped; a failed load is retried."""
    from edge_trash.edge_runtime.interpreter import (INSTALL_INTERPRETER, InterpreterError, RuntimeMismatchError,
                                                     load_interpreter)

    monkeypatch.setenv("INVOCATION_ID", "0123abcd")

    def no_module(name):
        raise ImportError("No module named %r" % name)

    def loader(cpu_model, edgetpu_model=None, device=None):
        if error == "no package":
            return load_interpreter(cpu_model, edgetpu_model, device, import_module=no_module)
        raise raised
    raised = (InterpreterError(INSTALL_INTERPRETER) if error == "no package" else
              RuntimeMismatchError("needs a newer runtime") if error == "mismatch" else
              InterpreterError("failed to load on the TPU"))
    bundle = make_bundle(str(tmp_path / "bundle"), sort_overrides={"health": {"enabled": False},
                                                                    "log": {"path": str(tmp_path / "ev.sqlite")}})
    assert main(["run", "--bundle", bundle, "--source", "dir:%s" % tmp_path], interpreter_loader=loader) == code
    err = capsys.readouterr().err
    assert err.startswith("edge-trash-device: %s\n" % raised)
    assert ("the service stays stopped until this is fixed" in err) == (code == EXIT_CONFIG)


@pytest.mark.parametrize("key", ["log", "hard_examples"])
def test_a_log_or_queue_folder_it_cannot_create_is_named_with_the_fix(tmp_path, capsys, key):
    blocker = tmp_path / "blocker"  # a file where the folder should be (as a folder root owns would refuse)
    blocker.write_text("")
    log_path, hard_dir = str(tmp_path / "ev.sqlite"), str(tmp_path / "hard")
    if key == "log":
        log_path = str(blocker / "events.sqlite")
    else:
        hard_dir = str(blocker / "hard-examples")
    bundle = make_bundle(str(tmp_path / "bundle"), sort_overrides={
        "health": {"enabled": False}, "log": {"path": log_path}, "hard_examples": {"dir": hard_dir}})
    code = main(["run", "--bundle", bundle, "--source", "dir:%s" % tmp_path], interpreter_loader=make_fake_loader())
    what, path, setting, why = (
        ("the event log", log_path, "--log, or log.path in sort.yaml", "File exists") if key == "log" else
        ("the hard-example queue", hard_dir, "hard_examples.dir in sort.yaml", "Not a directory"))
    assert code == 1
    assert capsys.readouterr().err == (  # it said to run as a user that can write there: no user could
        "edge-trash-device: cannot open %s at %s (%s): a file stands where a folder of that path should be; set %s "
        "to a path whose folders are folders\n" % (what, path, why, setting))


def test_a_queue_folder_this_user_may_not_make_says_to_run_as_one_that_can(tmp_path, capsys, monkeypatch):
    import errno as errno_module

    from edge_trash.edge_runtime import hard_examples

    def refused(path, *args, **kwargs):
        raise PermissionError(errno_module.EACCES, "Permission denied", path)
    hard_dir = str(tmp_path / "hard")
    bundle = make_bundle(str(tmp_path / "bundle"), sort_overrides={
        "health": {"enabled": False}, "log": {"path": str(tmp_path / "ev.sqlite")}, "hard_examples": {"dir": hard_dir}})
    monkeypatch.setattr(hard_examples.os, "makedirs", refused)  # as for a folder root owns (tests run as root)
    argv = ["run", "--bundle", bundle, "--source", "dir:%s" % tmp_path]
    assert main(argv, interpreter_loader=make_fake_loader()) == 1
    assert capsys.readouterr().err == (
        "edge-trash-device: cannot open the hard-example queue at %s (Permission denied): run the service as a user "
        "that can write there (install.sh makes /var/lib/edge-trash for its edge-trash user), or set "
        "hard_examples.dir in sort.yaml to a folder this user can write\n" % hard_dir)


@pytest.mark.parametrize("error, fix", [
    ("database or disk is full", "free space on the disk holding {log}"),
    ("database is locked", "another process holds {log} locked (an open query?): close it")])
def test_decisions_the_log_cannot_record_still_move_their_items(tmp_path, caplog, error, fix):
    journal = str(tmp_path / "actuator.txt")
    bundle = make_bundle(str(tmp_path / "bundle"), sort_overrides={
        "travel_delay_s": 0.0, "health": {"enabled": False}, "log": {"path": str(tmp_path / "ev.sqlite")},
        "actuator": {"type": "simulated", "journal": journal}})
    items = write_conveyor_frames(str(tmp_path / "frames"), 120)
    loop, cleanup = build_service(bundle, None, "dir:%s" % (tmp_path / "frames"), interpreter_loader=make_fake_loader())

    def disk_full(rows):
        raise sqlite3.OperationalError(error)

    loop.log.record_decisions = disk_full
    t0 = time.time()
    try:
        summary = loop.run(threading.Event())
    finally:
        cleanup()
    crossing = [i for i in items if i.crossing < 120]
    with open(journal) as f:
        moved = [line.split()[:2] for line in f]
    assert len(crossing) > 2 and summary["decisions"] == len(crossing)
    assert [int(ref) for ref, _ in moved] == [-(k + 1) for k in range(len(crossing))]
    assert loop.log_errors == len(crossing) and summary["counters"]["log_errors"] == len(crossing)
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    log = str(tmp_path / "ev.sqlite")
    assert errors == ["event log %s: disk_full failed: %s (1 failed writes so far); sorting goes on without the "
                      "record: %s" % (log, error, fix.format(log=log))]
    # the frames still reached the log, with wall-clock times although the loop runs on the monotonic clock
    times = q(str(tmp_path / "ev.sqlite"), "SELECT MIN(t), MAX(t), COUNT(*) FROM frames")[0]
    assert t0 - 1 <= times[0] <= times[1] <= time.time() and times[2] == 120


def test_decision_times_in_the_log_are_wall_clock_times(tmp_path):
    db = str(tmp_path / "ev.sqlite")
    bundle = make_bundle(str(tmp_path / "bundle"), sort_overrides={
        "travel_delay_s": 0.25, "health": {"enabled": False}, "log": {"path": db}})
    write_conveyor_frames(str(tmp_path / "frames"), 60)
    t0 = time.time()
    loop, cleanup = build_service(bundle, None, "dir:%s" % (tmp_path / "frames"), interpreter_loader=make_fake_loader())
    try:
        loop.run(threading.Event())
    finally:
        cleanup()
    rows = q(db, "SELECT t_first, t_decided, due, t_actuated, status FROM decisions")
    assert rows and all(status == "actuated" for *_, status in rows)
    for t_first, t_decided, due, t_actuated, _ in rows:
        assert t0 - 1 <= t_first <= t_decided <= due <= t_actuated <= time.time()
        assert due - t_decided <= 0.25 + 1e-6 and t_actuated - due < 0.2


def test_stalled_actuations_stop_feeding_the_watchdog_and_are_a_fault(tmp_path):
    from edge_trash.edge_runtime.health import Stats
    from edge_trash.edge_runtime.service import SortLoop

    class Scheduler:
        problem = None

        def stalled(self):
            return self.problem

    class Notifier:
        pings = 0

        def watchdog(self):
            self.pings += 1

    class Log:
        path = "ev.sqlite"
        faults = []

        def fault(self, kind, message, seq=None, ref=None):
            self.faults.append((kind, message))

    scheduler, notifier, log = Scheduler(), Notifier(), Log()
    loop = SortLoop(None, None, None, None, scheduler, log, Stats(), notifier=notifier)
    loop._watchdog()
    scheduler.problem = "the actuation thread has stopped"
    loop._watchdog()
    loop._watchdog()
    assert notifier.pings == 1 and log.faults == [(
        "actuator", "actuations stopped: the actuation thread has stopped; the watchdog is no longer fed, so "
                    "systemd restarts the service (run by hand: restart it)")]
    scheduler.problem = None
    loop._watchdog()
    assert notifier.pings == 2


class FakeCapture:
    def __init__(self, frames):
        self.frames = list(frames)

    def read(self):
        return (True, self.frames.pop(0)) if self.frames else (False, None)


def test_camera_frames_in_grey_or_bgra_become_rgb_and_other_shapes_a_read_error():
    from edge_trash.edge_runtime.sources import FrameReadError, OpenCVSource
    source = OpenCVSource(0, live=True)
    bgr = np.zeros((2, 3, 3), np.uint8)
    bgr[..., 0] = 10  # blue
    bgra = np.concatenate([bgr, np.full((2, 3, 1), 255, np.uint8)], axis=2)
    grey = np.full((2, 3), 7, np.uint8)
    source.cap = FakeCapture([bgr, bgra, grey, np.zeros((2, 3, 2), np.uint8), np.zeros((2, 3, 3), np.float32)])
    assert source.read()[..., 2].tolist() == [[10] * 3] * 2 and source.read().shape == (2, 3, 3)
    assert source.read().tolist() == [[[7, 7, 7]] * 3] * 2
    with pytest.raises(FrameReadError, match=r"camera:0: a frame of shape \(2, 3, 2\) and type uint8; the service "
                                             r"takes height x width x 3 uint8 \(BGR, or BGRA\)"):
        source.read()
    with pytest.raises(FrameReadError, match=r"shape \(2, 3, 3\) and type float32"):
        source.read()


def test_a_second_service_on_the_log_of_a_running_one_exits_1_and_says_which(tmp_path, capsys, monkeypatch):
    """Two services on one log (one started by hand while systemd's runs) would clash on frame numbers and drive
    the same actuator: the second refuses to start, exit 1 (systemd retries: the other may stop)."""
    from edge_trash.edge_runtime import eventlog

    if eventlog.fcntl is None:
        pytest.skip("no fcntl (Windows): the log is not locked there")
    monkeypatch.delenv("INVOCATION_ID", raising=False)  # by hand: the message says systemctl stop
    log_path = str(tmp_path / "ev.sqlite")
    bundle = make_bundle(str(tmp_path / "bundle"), sort_overrides={"health": {"enabled": False},
                                                                    "log": {"path": log_path}})
    write_conveyor_frames(str(tmp_path / "frames"), 3)
    argv = ["run", "--bundle", bundle, "--source", "dir:%s" % (tmp_path / "frames")]
    _, cleanup = build_service(bundle, None, "dir:%s" % (tmp_path / "frames"), interpreter_loader=make_fake_loader())
    touched = []  # the refused one touches neither the model (the TPU) nor the actuator the first one drives

    def loader(*args):
        touched.append("model")
        return make_fake_loader()(*args)
    monkeypatch.setattr("edge_trash.edge_runtime.service.build_actuator", lambda spec: touched.append("actuator"))
    try:
        assert main(argv, interpreter_loader=loader) == 1 and touched == []
        monkeypatch.undo()
        assert capsys.readouterr().err == (
            "edge-trash-device: another edge-trash service (pid %d) is using the event log %s: stop it first (sudo "
            "systemctl stop edge-trash), or give this one another --log\n" % (os.getpid(), log_path))
    finally:
        cleanup()
    assert q(log_path, "SELECT COUNT(*) FROM runs") == [(1,)]  # the refused one wrote nothing
    assert main(argv, interpreter_loader=make_fake_loader()) == 0  # the first stopped: it starts
    assert q(log_path, "SELECT COUNT(*) FROM runs") == [(2,)]


class _PacedConveyor(FrameSource):
    """A 30 fps camera over a belt: 10 px squares of class 0 moving 2 px per frame, one every 20 frames."""

    live, description = True, "paced conveyor"

    def __init__(self, frames: int, items: int):
        self.frames, self.items, self.i = frames, items, 0

    def read(self):
        if self.i >= self.frames:
            return None
        frame = np.zeros((64, 128, 3), np.uint8)
        for k in range(self.items):
            x = -10 + 2 * (self.i - 20 * k)
            if self.i >= 20 * k and -10 < x < 128:
                frame[27:37, max(x, 0):x + 10, 0] = 255
        self.i += 1
        time.sleep(1 / 30.0)
        return frame


@pytest.mark.parametrize("max_distance", [1.0, 3.0])
def test_inference_slower_than_the_camera_still_sorts_or_the_fault_names_the_setting(tmp_path, max_distance):
    """Inference on ~1 in 8 camera frames: tracks age by processed frames, so no item is lost to max_age (5); an item
    moving 1.6 of its size between processed frames needs tracker.max_distance raised, and the fault says so."""
    db = str(tmp_path / "ev.sqlite")
    bundle = make_bundle(str(tmp_path / "bundle"), sort_overrides={
        "travel_delay_s": 0.0, "health": {"enabled": False}, "log": {"path": db},
        "tracker": {"max_distance": max_distance}})
    loop, cleanup = build_service(bundle, None, "dir:/nonexistent", source=_PacedConveyor(150, 4),
                                  interpreter_loader=make_fake_loader(FakeInterpreter(delay_s=0.26)), health=False)
    try:
        summary = loop.run(threading.Event())
    finally:
        cleanup()
    assert summary["dropped_frames"] > summary["counters"]["processed"] * 4
    faults = [m for (m,) in q(db, "SELECT message FROM faults WHERE kind = 'unsorted_item'")]
    if max_distance == 3.0:
        assert summary["decisions"] == 4 and faults == []
    else:
        assert summary["decisions"] < 4 and faults
        assert all("camera frames, so an item that moves more than tracker.max_distance (1) of its size between two "
                   "of them starts a new track: raise tracker.max_distance" in m for m in faults)


class _StallingCamera(FrameSource):
    """A live camera that gives ``good`` frames, then blocks in read() (unplugged, a hung driver)."""

    live, description = True, "camera:9"

    def __init__(self, good: int):
        self.good, self.i, self.released = good, 0, threading.Event()

    def read(self):
        self.i += 1
        if self.i > self.good:
            self.released.wait(10.0)
            return None
        time.sleep(0.01)
        return np.zeros((32, 32, 3), np.uint8)

    def close(self):
        self.released.set()


@pytest.mark.parametrize("failure", ["camera", "edgetpu", "camera after an inference error"])
def test_a_stalled_camera_or_a_failed_edgetpu_ends_the_run_with_a_fault_instead_of_running_blind(
        tmp_path, monkeypatch, capsys, failure):
    """Every inference failing (a failed Edge TPU), or no frame at all (a hung camera), used to leave the service
    "running", feeding the watchdog, sorting nothing. Now the run ends with exit 1 (systemd restarts it)."""
    import edge_trash.edge_runtime.service as service_module

    monkeypatch.setattr(service_module, "SENSE_STALL_S", 0.6)
    db = str(tmp_path / "ev.sqlite")
    bundle = make_bundle(str(tmp_path / "bundle"), sort_overrides={
        "travel_delay_s": 0.0, "health": {"enabled": False}, "log": {"path": db}})
    if failure == "camera":
        source, loader = _StallingCamera(good=5), make_fake_loader()
    elif failure == "camera after an inference error":  # the old error is not why frames stopped now
        source, loader = _StallingCamera(good=6), make_fake_loader(fail_on=[2])
    else:
        source, loader = _StallingCamera(good=10 ** 6), make_fake_loader(fail_on=range(3, 10 ** 6))
    monkeypatch.setattr(service_module, "open_source", lambda spec, **kwargs: source)
    started = time.monotonic()
    code = main(["run", "--bundle", bundle, "--source", "camera:9"], interpreter_loader=loader)
    assert code == 1 and time.monotonic() - started < 30.0  # (stop() waits 5 s for a hung camera's thread)
    (message,) = [m for (m,) in q(db, "SELECT message FROM faults WHERE kind = 'stalled'")]
    why = ("no frame has come from camera:9" if failure.startswith("camera") else
           "inference failed on frame %d: RuntimeError: " % q(db, "SELECT MAX(seq) FROM frames "
                                                              "WHERE status = 'inference_error'")[0][0])
    assert message.startswith("no frame went through inference for 1 s (" + why)
    assert message.endswith("so the service stops (exit 1) and systemd restarts it; if it keeps stopping, check the "
                            "camera's cable and the Edge TPU (`ls /dev/apex_0`), and `journalctl -u edge-trash`")
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["stalled"] == message and summary["counters"]["processed"] == (5 if failure != "edgetpu" else 3)
    assert summary["last_frame_age_s"] >= 0.6  # the page says how long no frame came


def test_the_frame_rate_falls_once_frames_stop_and_the_age_of_the_last_frame_is_served(monkeypatch):
    from edge_trash.edge_runtime import health

    now = [1000.0]
    monkeypatch.setattr(health.time, "monotonic", lambda: now[0])
    stats = health.Stats()
    assert stats.snapshot()["fps"] == 0.0 and stats.snapshot()["last_frame_age_s"] is None
    for _ in range(11):  # 10 fps for 1 s
        stats.frame(10.0, 20.0, 1.0)
        now[0] += 0.1
    assert (stats.snapshot()["fps"], stats.snapshot()["last_frame_age_s"]) == (10.0, 0.1)
    now[0] += 1.9  # 2 s without a frame: jitter, not a stall yet
    assert (stats.snapshot()["fps"], stats.snapshot()["last_frame_age_s"]) == (10.0, 2.0)
    now[0] += 8.0  # 10 s without a frame: 10 frame intervals in 11 s
    assert (stats.snapshot()["fps"], stats.snapshot()["last_frame_age_s"]) == (round(10 / 11.0, 2), 10.0)


@pytest.mark.parametrize("where", ["--log", "log.path"])
def test_an_event_log_path_that_is_a_folder_exits_78_naming_the_setting(tmp_path, capsys, where):
    """It was exit 1 (sqlite cannot open a folder), which systemd retried every 5 s for ever."""
    folder = tmp_path / "logs"
    folder.mkdir()
    bundle = make_bundle(str(tmp_path / "bundle"), sort_overrides={
        "travel_delay_s": 0.0, "health": {"enabled": False}, "log": {"path": str(folder)}})
    args = ["run", "--bundle", bundle, "--source", "dir:%s" % tmp_path] + (
        ["--log", str(folder)] if where == "--log" else [])
    assert main(args, interpreter_loader=make_fake_loader()) == EXIT_CONFIG
    assert ("the event log %s is a folder (%s): give a file in it, e.g. %s"
            % (folder, "--log" if where == "--log" else "log.path in sort.yaml", folder / "events.sqlite")
            in capsys.readouterr().err)


def test_an_item_that_crossed_seen_in_fewer_than_min_hits_frames_names_the_setting(tmp_path):
    from edge_trash.edge_runtime.geometry import BBox, Detection
    from edge_trash.edge_runtime.tracker import Track

    db = str(tmp_path / "ev.sqlite")
    bundle = make_bundle(str(tmp_path / "bundle"), sort_overrides={
        "travel_delay_s": 0.0, "health": {"enabled": False}, "log": {"path": db}})
    (tmp_path / "frames").mkdir()
    loop, cleanup = build_service(bundle, None, "dir:%s" % (tmp_path / "frames"), interpreter_loader=make_fake_loader(),
                                  health=False)
    try:
        track = Track(4, Detection(1, "can", 0.9, BBox(50, 10, 60, 20)), 7, 1.0)
        track.add(Detection(1, "can", 0.9, BBox(52, 10, 62, 20)), 8, 1.1)
        track.crossed_t, track.side = 1.05, 0.1
        loop._log_undecided(track, "passed_unsorted")
        loop.log.commit()
    finally:
        cleanup()
    assert q(db, "SELECT kind, message FROM faults") == [("unsorted_item", (
        "track 4 (can, 2 frames, seq 7..8, last box [52, 10, 62, 20]) passed the trigger line without a "
        "decision; it crossed the line but was seen in 2 frames, fewer than tracker.min_hits (3) needs for a "
        "decision: lower tracker.min_hits if this was a real item (it is there to ignore a glint seen once or "
        "twice)"))]
