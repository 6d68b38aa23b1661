"""The SQLite event log: batching, crash recovery without double actuation, retention."""

import sqlite3
import time

import pytest

from edge_trash.edge_runtime.eventlog import EventLog


def decision_row(seq, due, bin_name="can"):
    return {"track_id": seq, "seq": seq, "t_first": time.time() - 1, "t_decided": time.time(), "class_id": 1,
            "label": "can", "score": 0.9, "agreement": 1.0, "votes": {"can": {"score_sum": 0.9, "frames": 1}},
            "bin": bin_name, "reason": "class", "bbox": [0, 0, 1, 1], "due": due}


def rows(path, sql):
    db = sqlite3.connect(path)
    try:
        return db.execute(sql).fetchall()
    finally:
        db.close()


def test_wal_mode_and_frames_committed_with_decisions(tmp_path):
    path = str(tmp_path / "ev.sqlite")
    log = EventLog(path, commit_every=1000, commit_interval_s=1000)
    log.start_run("dir:x", "cpu", 0)
    for seq in range(5):
        log.frame(seq, "processed")
    assert rows(path, "SELECT COUNT(*) FROM frames") == [(0,)]  # buffered
    log.record_decisions([decision_row(4, time.time() + 10)])
    assert rows(path, "SELECT COUNT(*) FROM frames") == [(5,)]  # same transaction as the decision
    assert rows(path, "PRAGMA journal_mode") == [("wal",)]
    assert log.next_seq() == 5
    with pytest.raises(ValueError, match="frame status 'lost' is not one of"):
        log.frame(6, "lost")


def test_recover_never_refires_an_attempted_actuation(tmp_path):
    path = str(tmp_path / "ev.sqlite")
    log = EventLog(path)
    log.start_run("dir:x", "cpu", 0)
    now = time.time()
    attempted, overdue, future, done = log.record_decisions(
        [decision_row(1, now - 5), decision_row(2, now - 5), decision_row(3, now + 30), decision_row(4, now - 5)])
    log.mark_attempt(attempted)
    log.mark_attempt(done)
    log.mark_done(done, "can", 1, "actuated")
    # simulate SIGKILL: no close(); a new process opens the same file
    log2 = EventLog(path)
    log2.start_run("dir:x", "cpu", log2.next_seq())
    resumable = log2.recover()
    assert [r[0] for r in resumable] == [future]
    status = dict(rows(path, "SELECT id, status FROM decisions"))
    assert status == {attempted: "unknown", overdue: "missed", future: "pending", done: "actuated"}
    faults = rows(path, "SELECT kind, decision_id FROM faults ORDER BY id")
    assert faults == [("restart", attempted), ("restart", overdue)]


def test_retention_bounds_the_frame_table(tmp_path):
    path = str(tmp_path / "ev.sqlite")
    log = EventLog(path, commit_every=100, max_frame_rows=1500)
    log.start_run("camera:0", "cpu", 0)
    for seq in range(3200):
        log.frame(seq, "processed")
        log.maybe_commit()
    log.close()
    count, lo, hi = rows(path, "SELECT COUNT(*), MIN(seq), MAX(seq) FROM frames")[0]
    assert hi == 3199 and count <= 1500 and lo == hi - count + 1
