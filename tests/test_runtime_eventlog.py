"""The SQLite event log: batching, crash recovery without double actuation, retention."""

import os
import re
import sqlite3
import subprocess
import sys
import time

import pytest

from edge_trash.edge_runtime import eventlog
from edge_trash.edge_runtime.actuators import ActuationScheduler, SimulatedActuator
from edge_trash.edge_runtime.eventlog import EventLog, LogInUseError, is_corrupt, write_error_fix

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
needs_flock = pytest.mark.skipif(eventlog.fcntl is None, reason="no fcntl (Windows): the log is not locked there")


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


def killed(log):
    """What SIGKILL leaves of ``log`` for the next process: its file (not closed, nothing flushed), and no
    lock (the kernel drops a dead process's flock)."""
    log._unlock()


def in_use(path, pid):
    return ("another edge-trash service (pid %d) is using the event log %s: stop it first (sudo systemctl stop "
            "edge-trash), or give this one another --log" % (pid, path))


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
    log.mark_done(done, "can", 1, "actuated", 250.0)
    killed(log)  # no close(); a new process opens the same file
    log2 = EventLog(path)
    log2.start_run("dir:x", "cpu", log2.next_seq())
    resumable = log2.recover()
    assert [r[0] for r in resumable] == [future]
    status = dict(rows(path, "SELECT id, status FROM decisions"))
    assert status == {attempted: "unknown", overdue: "missed", future: "pending", done: "actuated"}
    faults = rows(path, "SELECT kind, decision_id FROM faults ORDER BY id")
    assert faults == [("restart", attempted), ("restart", overdue)]


def test_recover_does_not_fire_a_decision_due_further_ahead_than_any_can_be(tmp_path):
    # the board restarted with its clock an hour behind (no clock battery, NTP not yet through): a decision
    # due 1 s after it was made now looks due in an hour; its real time is unknown, so it is not fired
    path = str(tmp_path / "ev.sqlite")
    log = EventLog(path)
    log.start_run("dir:x", "cpu", 0)
    now = time.time()
    behind, soon = log.record_decisions([decision_row(1, now + 3600), decision_row(2, now + 0.5)])
    killed(log)
    log2 = EventLog(path)
    log2.start_run("dir:x", "cpu", log2.next_seq())
    assert [r[0] for r in log2.recover(max_ahead_s=1.3)] == [soon]
    assert dict(rows(path, "SELECT id, status FROM decisions")) == {behind: "missed", soon: "pending"}
    (message,), = rows(path, "SELECT message FROM faults")
    assert re.match(r"decision 1 \(bin 'can'\) is due 3600 s after the restart, later than any decision can be: the "
                    r"clock went back since it was decided, so when it was due is unknown; not fired$", message)


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


def test_retention_holds_while_decisions_write_the_frames(tmp_path):
    """An item a second or more often writes the buffered frames with each decision, so neither the row count
    nor the interval ever asked for a commit, the only place the log pruned: on a busy belt it grew until the
    disk was full (72000 frame rows of 5000 in an hour at 20 fps)."""
    path = str(tmp_path / "ev.sqlite")
    log = EventLog(path, commit_every=100, commit_interval_s=3600.0, max_frame_rows=1500, max_event_rows=40)
    log.start_run("camera:0", "cpu", 0)
    for seq in range(6000):
        log.frame(seq, "processed")
        if seq % 15 == 0:  # an item every 0.75 s at 20 fps: its decision, attempted and done
            (ref,) = log.record_decisions([decision_row(seq, time.time())])
            log.mark_attempt(ref)
            log.mark_done(ref, "can", 1, "actuated", 250.0)
        log.maybe_commit()
        if seq == 5999:  # before close(), which prunes too
            ((frames,),), ((decisions,),) = rows(path, "SELECT COUNT(*) FROM frames"), \
                rows(path, "SELECT COUNT(*) FROM decisions")
            assert frames <= 1500 and decisions <= 40 + 15  # the decisions pruned with the frames
    log.close()


# -- a failing disk (full, I/O error, locked), simulated: no root or tmpfs needed ------------------

class FlakyDisk:
    """Stands in for the log's sqlite3 connection: while ``failing`` (a count, or True for ever) every
    INSERT/UPDATE/DELETE raises ``database or disk is full`` before it runs, leaving the transaction
    open the way SQLite does after a failed statement. Everything else passes through."""

    def __init__(self, db):
        self.db = db
        self.failing = 0
        self.refused = 0
        self.calls = 0

    def _check(self, sql):
        self.calls += 1
        if self.failing and sql.split(None, 1)[0].upper() in ("INSERT", "UPDATE", "DELETE"):
            if self.failing is not True:
                self.failing -= 1
            self.refused += 1
            raise sqlite3.OperationalError("database or disk is full")

    def execute(self, sql, params=()):
        self._check(sql)
        return self.db.execute(sql, params)

    def executemany(self, sql, seq_of_params):
        self._check(sql)
        return self.db.executemany(sql, seq_of_params)

    def __getattr__(self, name):  # in_transaction, close, ...
        return getattr(self.db, name)


def flaky_log(path, **kwargs):
    log = EventLog(path, **kwargs)
    log._db = disk = FlakyDisk(log._db)
    log.start_run("dir:x", "cpu", 0)
    return log, disk


def wait_for(condition, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_write_methods_roll_back_on_a_full_disk_and_work_once_space_returns(tmp_path):
    path = str(tmp_path / "ev.sqlite")
    log, disk = flaky_log(path, commit_every=1000, commit_interval_s=1000)
    for seq in range(5):
        log.frame(seq, "processed")
    disk.failing = 1  # the decision INSERT fails after the 5 frame rows went in: the transaction stays open
    disk_full = "database or disk is full"
    with pytest.raises(sqlite3.OperationalError, match=disk_full):
        log.record_decisions([decision_row(4, time.time() + 10)])
    assert not log._db.in_transaction
    assert len(log._frames) == 5  # back in the buffer, not lost
    disk.failing = 2
    with pytest.raises(sqlite3.OperationalError, match=disk_full):
        log.fault("read_error", "frame 5 unreadable", 5)
    with pytest.raises(sqlite3.OperationalError, match=disk_full):
        log.undecided_track(7, 1, 4, 3, "lost", {})
    assert not log._db.in_transaction and len(log._frames) == 5
    (ref,) = log.record_decisions([decision_row(4, time.time() + 10)])  # space is back
    assert rows(path, "SELECT COUNT(*), MIN(seq), MAX(seq) FROM frames") == [(5, 0, 4)]
    disk.failing = 2
    with pytest.raises(sqlite3.OperationalError, match=disk_full):
        log.mark_attempt(ref)
    with pytest.raises(sqlite3.OperationalError, match=disk_full):
        log.mark_done(ref, "can", 1, "actuated", 250.0)
    assert not log._db.in_transaction
    log.mark_attempt(ref)
    log.mark_done(ref, "can", 1, "actuated", 250.0)
    log.fault("read_error", "frame 5 unreadable", 5)
    log.undecided_track(7, 1, 4, 3, "lost", {})
    log.close()
    assert rows(path, "SELECT id, status, actuated_bin FROM decisions") == [(ref, "actuated", "can")]
    assert rows(path, "SELECT kind, seq FROM faults") == [("event_log", None), ("event_log", None), ("read_error", 5)]
    assert rows(path, "SELECT track_id, reason FROM tracks") == [(7, "lost")]
    # what the log lacks, said once by the first record written when the disk takes them again (it said nothing)
    gaps = [m for (m,) in rows(path, "SELECT message FROM faults WHERE kind = 'event_log' ORDER BY id")]
    for gap, count in zip(gaps, (3, 2)):
        assert re.match(r"%d records \(decisions, their attempts and outcomes, faults, track ends\) could not be "
                        r"written from \d{4}-\d\d-\d\d \d\d:\d\d:\d\d until now \(disk full or failing\); the "
                        r"sorting went on, so the log lacks them$" % count, gap), gap


def test_the_flusher_survives_a_full_disk_and_writes_the_rows_when_space_returns(tmp_path, caplog):
    path = str(tmp_path / "ev.sqlite")
    log, disk = flaky_log(path, commit_every=10, commit_interval_s=0.05)
    disk.failing = True
    log.start_flusher()
    for seq in range(50):
        log.frame(seq, "processed")
    calls = disk.calls
    log.maybe_commit()  # 50 >= 4 * commit_every, but the flusher runs: the main loop never touches SQLite
    assert disk.calls == calls
    wait_for(lambda: disk.refused >= 3)  # it retried (every commit_interval_s) instead of dying
    assert log._flusher.is_alive()
    assert len(log._frames) == 50 and rows(path, "SELECT COUNT(*) FROM frames") == [(0,)]
    disk.failing = 0  # space is back
    wait_for(lambda: rows(path, "SELECT COUNT(*) FROM frames") == [(50,)])
    assert log._flusher.is_alive() and log._frames == [] and log.frames_lost == 0
    for seq in range(50, 60):
        log.frame(seq, "processed")
    wait_for(lambda: rows(path, "SELECT COUNT(*), MAX(seq) FROM frames") == [(60, 59)])
    log.close()
    messages = [r.getMessage() for r in caplog.records if r.name == "edge_trash.edge_runtime.eventlog"]
    assert len(messages) == 2, messages  # once when the streak began, once when it ended: not per retry
    assert messages[0].startswith("event log %s: writing frame rows failed (OperationalError: database or disk "
                                  "is full); " % path)
    assert "free space on the disk holding %s" % path in messages[0]
    assert messages[1].startswith("event log %s: writing works again after " % path)


def test_rows_the_disk_refuses_are_bounded_the_oldest_dropped_counted_and_reported(tmp_path):
    path = str(tmp_path / "ev.sqlite")
    log, disk = flaky_log(path, commit_every=10, commit_interval_s=1000, max_buffered_rows=100)
    disk.failing = True
    for seq in range(250):
        log.frame(seq, "processed")
        if seq % 10 == 9:
            with pytest.raises(sqlite3.OperationalError):
                log.commit()
    assert len(log._frames) == 100 and log.frames_lost == 150
    assert [r[0] for r in log._frames] == list(range(150, 250))  # the newest kept, in order
    disk.failing = 0
    log.commit()
    assert rows(path, "SELECT COUNT(*), MIN(seq), MAX(seq) FROM frames") == [(100, 150, 249)]
    assert rows(path, "SELECT kind, message FROM faults") == [(
        "event_log", "150 frame rows (seq 0..149) were dropped while %s could not be written (disk full or "
                     "failing); the frames themselves were processed" % path)]
    log.commit()  # reported once
    assert rows(path, "SELECT COUNT(*) FROM faults") == [(1,)]
    disk.failing = True
    log.frame(250, "processed")
    log.close()  # logs the loss instead of raising, and closes the connection
    with pytest.raises(sqlite3.ProgrammingError):
        log._db.execute("SELECT 1")


def test_a_large_backlog_is_written_in_chunks_so_what_fits_is_kept(tmp_path):
    path = str(tmp_path / "ev.sqlite")
    log, disk = flaky_log(path, commit_every=10, commit_interval_s=1000, max_buffered_rows=1000)
    for seq in range(35):
        log.frame(seq, "processed")
    real = disk._check
    refuse_after = [2]  # the disk takes two 10-row transactions, then is full again

    def check(sql):
        if sql.startswith("INSERT INTO frames"):
            if refuse_after[0] == 0:
                raise sqlite3.OperationalError("database or disk is full")
            refuse_after[0] -= 1
        real(sql)
    disk._check = check
    with pytest.raises(sqlite3.OperationalError):
        log.commit()
    assert rows(path, "SELECT COUNT(*), MAX(seq) FROM frames") == [(20, 19)]
    assert [r[0] for r in log._frames] == list(range(20, 35))
    refuse_after[0] = 100
    log.commit()
    assert rows(path, "SELECT COUNT(*), MAX(seq) FROM frames") == [(35, 34)]


def test_a_corrupt_log_is_moved_aside_and_a_new_one_started(tmp_path, monkeypatch, caplog):
    path = str(tmp_path / "events.sqlite")
    junk = b"this is not an SQLite file " * 400
    for suffix in ("", "-wal", "-shm"):
        with open(path + suffix, "wb") as f:
            f.write(junk + suffix.encode())
    monkeypatch.setattr(time, "strftime", lambda fmt, *a: "20240102-030405")
    log = EventLog(path)
    aside = path + ".corrupt-20240102-030405"
    assert log.moved_aside == aside
    for suffix in ("", "-wal"):  # kept byte for byte (the -shm is SQLite's scratch index: moved, rewritten)
        with open(aside + suffix, "rb") as f:
            assert f.read() == junk + suffix.encode()
    log.start_run("dir:x", "cpu", log.next_seq())
    log.fault("event_log", "moved aside")
    log.close()
    assert rows(path, "SELECT kind FROM faults") == [("event_log",)]
    warnings = [r.getMessage() for r in caplog.records if r.name == "edge_trash.edge_runtime.eventlog"]
    assert warnings == ["event log %s is corrupt (file is not a database): moved it to %s (kept for inspection) and "
                        "started a new log at %s; delete the old one once it is no longer needed" % (path, aside, path)]
    # corrupt again in the same second (a damaged header this time): a second name, nothing overwritten
    with open(path, "r+b") as f:
        f.write(b"\0" * 100)
    log = EventLog(path)
    assert log.moved_aside == aside + "-2"
    assert log.next_seq() == 0 and EventLog(str(tmp_path / "fresh.sqlite")).moved_aside is None
    log.close()
    assert sorted(n for n in os.listdir(str(tmp_path)) if "corrupt" in n) == [
        "events.sqlite.corrupt-20240102-030405", "events.sqlite.corrupt-20240102-030405-2",
        "events.sqlite.corrupt-20240102-030405-shm", "events.sqlite.corrupt-20240102-030405-wal"]


def test_permission_and_disk_errors_at_start_still_raise_and_move_nothing(tmp_path, monkeypatch):
    folder = tmp_path / "is-a-folder.sqlite"  # cannot be opened (as a file without permission cannot)
    folder.mkdir()
    with pytest.raises(sqlite3.OperationalError, match="unable to open database file"):
        EventLog(str(folder))
    path = str(tmp_path / "ev.sqlite")
    EventLog(path).close()

    from edge_trash.edge_runtime import eventlog

    def disk_error(db):  # the file opens, then reading it fails: not damage, so it must stay where it is
        raise sqlite3.OperationalError("disk I/O error")
    monkeypatch.setattr(eventlog, "_prepare", disk_error)
    before = sorted(os.listdir(str(tmp_path)))
    with pytest.raises(sqlite3.OperationalError, match="disk I/O error"):
        EventLog(path)
    assert sorted(os.listdir(str(tmp_path))) == before and "ev.sqlite" in before


def test_is_corrupt_tells_damage_from_other_errors_on_every_python():
    # Python < 3.11 (the board's 3.7) has no sqlite_errorcode: the exception class decides
    assert is_corrupt(sqlite3.DatabaseError("file is not a database"))
    assert not is_corrupt(sqlite3.OperationalError("database or disk is full"))
    assert not is_corrupt(sqlite3.OperationalError("unable to open database file"))
    full = sqlite3.OperationalError("database or disk is full")
    full.sqlite_errorcode = 13  # SQLITE_FULL
    assert not is_corrupt(full)
    notadb = sqlite3.DatabaseError("file is not a database")
    notadb.sqlite_errorcode = 26
    assert is_corrupt(notadb)


# -- one service per log: the lock -----------------------------------------------------------------

@needs_flock
def test_a_second_log_on_the_same_file_is_refused_while_the_first_is_open(tmp_path, monkeypatch):
    monkeypatch.delenv("INVOCATION_ID", raising=False)  # by hand, not under systemd
    path = str(tmp_path / "events.sqlite")
    first = EventLog(path)
    first.start_run("camera:0", "cpu", 0)
    with open(path + ".lock") as f:
        assert f.read() == "%d\n" % os.getpid()
    before = sorted(os.listdir(str(tmp_path)))
    with pytest.raises(LogInUseError) as refused:
        EventLog(path)
    assert str(refused.value) == in_use(path, os.getpid())
    assert sorted(os.listdir(str(tmp_path))) == before  # the refused one touched nothing (nor moved it aside)
    # refused under systemd (the unit), the one holding the log was started by hand: systemctl stop would not stop it
    monkeypatch.setenv("INVOCATION_ID", "0123abcd")
    with pytest.raises(LogInUseError) as refused:
        EventLog(path)
    monkeypatch.delenv("INVOCATION_ID")
    assert str(refused.value) == (
        "another edge-trash service (pid %d) is using the event log %s: stop it first (sudo kill %d, the one "
        "started by hand), or give this one another --log" % (os.getpid(), path, os.getpid()))
    first.frame(0, "processed")
    first.close()
    assert os.path.exists(path + ".lock")  # kept: the kernel's lock went with close()
    second = EventLog(path)  # the same process, after the first closed (as a restart in-process does)
    assert second.next_seq() == 1 and rows(path, "SELECT COUNT(*) FROM runs") == [(1,)]
    second.close()
    EventLog(path).close()  # and again: a closed log leaves nothing that blocks


@needs_flock
def test_a_lock_file_made_under_a_strict_umask_stays_open_to_the_units_user(tmp_path):
    """root by hand with umask 077 made it 0600: the unit's user could open it no more, and exited 1 forever."""
    path = str(tmp_path / "events.sqlite")
    before = os.umask(0o077)
    try:
        EventLog(path).close()
    finally:
        os.umask(before)
    assert os.stat(path + ".lock").st_mode & 0o777 == 0o644


@needs_flock
def test_a_lock_file_left_by_a_dead_process_does_not_block_a_restart(tmp_path):
    path = str(tmp_path / "events.sqlite")
    with open(path + ".lock", "w") as f:
        f.write("999999999\n")  # a killed service's pid; no process holds the flock
    log = EventLog(path)
    with open(path + ".lock") as f:
        assert f.read() == "%d\n" % os.getpid()  # the holder's pid replaces the dead one's
    log.close()
    # a real process killed while it holds the log: refused while it lives (named by its pid), free once killed
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from edge_trash.edge_runtime.eventlog import EventLog; "
                               "log = EventLog(sys.argv[1]); print('open', flush=True); time.sleep(60)", path],
        cwd=REPO, stdout=subprocess.PIPE, universal_newlines=True)
    try:
        assert holder.stdout.readline() == "open\n"
        with pytest.raises(LogInUseError) as refused:
            EventLog(path)
        assert str(refused.value) == in_use(path, holder.pid)
    finally:
        holder.kill()
        holder.wait(10)
        holder.stdout.close()
    EventLog(path).close()


@needs_flock
def test_a_holder_that_could_not_write_its_pid_is_not_named_by_a_dead_ones(tmp_path, monkeypatch):
    """A service that could open the lock file only read-only (made by another user) holds the lock without
    writing its pid: the pid in the file is an earlier holder's, which the refusal must not name."""
    monkeypatch.delenv("INVOCATION_ID", raising=False)
    path = str(tmp_path / "events.sqlite")
    with open(path + ".lock", "w") as f:
        f.write("999999999\n")  # the earlier holder, gone
    fd = os.open(path + ".lock", os.O_RDONLY)
    try:
        eventlog.fcntl.flock(fd, eventlog.fcntl.LOCK_EX | eventlog.fcntl.LOCK_NB)  # the read-only holder
        with pytest.raises(LogInUseError) as refused:
            EventLog(path)
        assert str(refused.value) == (
            "another edge-trash service is using the event log %s: stop it first (sudo systemctl stop "
            "edge-trash), or give this one another --log" % path)
        with open(path + ".lock", "w") as f:
            f.write("%d\n" % os.getpid())  # a live pid is named
        with pytest.raises(LogInUseError) as refused:
            EventLog(path)
        assert str(refused.value) == in_use(path, os.getpid())
    finally:
        os.close(fd)


@needs_flock
def test_a_corrupt_log_of_a_running_service_is_not_moved_aside_by_a_second_one(tmp_path, monkeypatch):
    path = str(tmp_path / "events.sqlite")
    monkeypatch.setattr(time, "strftime", lambda fmt, *a: "20240102-030405")
    with open(path, "wb") as f:
        f.write(b"this is not an SQLite file " * 400)
    first = EventLog(path)  # moved aside; the lock file is not (it belongs to the log's path, not to its file)
    assert first.moved_aside == path + ".corrupt-20240102-030405" and os.path.exists(path + ".lock")
    with open(path, "r+b") as f:  # damaged under the running service
        f.write(b"\0" * 100)
    with pytest.raises(LogInUseError):
        EventLog(path)
    assert sorted(n for n in os.listdir(str(tmp_path)) if "corrupt" in n) == ["events.sqlite.corrupt-20240102-030405"]
    first.close()


def test_without_fcntl_the_log_opens_unlocked(tmp_path, monkeypatch):
    monkeypatch.setattr(eventlog, "fcntl", None)  # as on Windows
    path = str(tmp_path / "events.sqlite")
    first = EventLog(path)
    second = EventLog(path)
    assert not os.path.exists(path + ".lock")
    second.close()
    first.close()


@needs_flock
def test_a_log_that_fails_to_open_releases_its_lock(tmp_path, monkeypatch):
    path = str(tmp_path / "ev.sqlite")

    def disk_error(db):
        raise sqlite3.OperationalError("disk I/O error")
    monkeypatch.setattr(eventlog, "_prepare", disk_error)
    with pytest.raises(sqlite3.OperationalError, match="disk I/O error"):
        EventLog(path)
    monkeypatch.undo()
    EventLog(path).close()  # not refused by the failed one


def test_write_errors_say_free_space_only_for_a_full_or_failing_disk():
    full, io = sqlite3.OperationalError("database or disk is full"), sqlite3.OperationalError("disk I/O error")
    clash = sqlite3.IntegrityError("UNIQUE constraint failed: frames.seq")
    locked = sqlite3.OperationalError("database is locked")
    assert write_error_fix(full, "ev.sqlite") == write_error_fix(io, "ev.sqlite") == (
        "free space on the disk holding ev.sqlite")
    assert write_error_fix(clash, "ev.sqlite") == (
        "ev.sqlite already holds these rows: another process writes the same log; stop it, or give this service "
        "another --log")
    assert write_error_fix(locked, "ev.sqlite") == "another process holds ev.sqlite locked (an open query?): close it"
    coded = sqlite3.OperationalError("something else")
    coded.sqlite_errorcode = 13 | (3 << 8)  # an extended SQLITE_FULL code (Python >= 3.11)
    assert write_error_fix(coded, "ev.sqlite").startswith("free space")


def test_frame_rows_another_writer_already_put_in_the_log_are_not_called_a_full_disk(tmp_path, caplog):
    path = str(tmp_path / "ev.sqlite")
    log = EventLog(path, commit_every=1000, commit_interval_s=1000)
    log.start_run("dir:x", "cpu", 0)
    db = sqlite3.connect(path)  # another writer, past the lock (as a second service was before it)
    db.execute("INSERT INTO frames (seq, status) VALUES (0, 'processed')")
    db.commit()
    db.close()
    log.frame(0, "processed")
    log.close()
    (message,) = [r.getMessage() for r in caplog.records if r.name == "edge_trash.edge_runtime.eventlog"]
    assert message == ("event log %s: 1 buffered frame rows could not be written at shutdown (UNIQUE constraint "
                       "failed: frames.seq) and are lost: %s already holds these rows: another process writes the "
                       "same log; stop it, or give this service another --log" % (path, path))


def test_the_logged_latency_is_timed_on_the_monotonic_clock_across_a_wall_clock_step(tmp_path):
    # an item seen, then NTP stepped the wall clock back an hour (a board without a battery clock), then it moved
    path = str(tmp_path / "ev.sqlite")
    log = EventLog(path)
    log.start_run("dir:x", "cpu", 0)
    row = dict(decision_row(1, time.time()), t_first=time.time() + 3600)
    (ref,) = log.record_decisions([row])
    scheduler = ActuationScheduler(SimulatedActuator(), log, "reject", retry_delay_s=0.0)
    scheduler.start()
    now = time.monotonic()
    scheduler.schedule(ref, "can", now, now - 0.4)  # first seen 0.4 s ago on the monotonic clock
    scheduler.stop()
    log.close()
    ((status, latency),) = rows(path, "SELECT status, latency_ms FROM decisions")
    assert status == "actuated" and 400 <= latency < 1400  # the wall-clock times in the row say -3599600 ms
