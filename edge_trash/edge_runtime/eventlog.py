"""The event log: SQLite in WAL mode, durable across SIGKILL, size-bounded (stdlib only).

Every frame sequence number gets exactly one row in ``frames`` (status ``processed``,
``dropped``, ``read_error`` or ``inference_error``), except rows dropped while the disk refused them
(counted in ``frames_lost``, see below). Frame rows are buffered and committed in
batches; a decision or fault commits the buffer in the same transaction, so after a crash the
committed frames are always a contiguous prefix and ``next_seq()`` says where to resume.
Decisions are written ``pending`` before they are scheduled, ``attempting`` (durably) before
the actuator moves and ``actuated``/``failsafe``/``failed`` after; ``recover()`` at start-up
turns ``attempting`` into ``unknown`` + a fault (never re-fired) and returns the ``pending``
ones that may still be fired.

A failing disk (full, I/O error) or a locked database never leaves the connection stuck in a
transaction: every write rolls back and re-raises ``sqlite3.Error`` (the caller decides), and frame
rows that could not be written go back to the front of the buffer, to be written once the disk has
space again. The buffer is bounded (``max_buffered_rows``): beyond it the oldest rows are dropped,
counted in ``frames_lost`` and reported as an ``event_log`` fault when writing works again. A log
SQLite reports as corrupt at start-up is moved aside (``moved_aside``) and a fresh one started.

One process writes a log at a time: ``EventLog`` holds an exclusive ``flock`` on ``<log>.lock`` (with
its pid) while it is open, so a second service on the same log (one started by hand while systemd's
runs) refuses to start (``LogInUseError``) instead of clashing on frame numbers and driving the same
actuator. The kernel drops the lock when the process dies, so a lock file left by a crash never blocks
a restart. Without ``fcntl`` (Windows) the log is not locked.
"""

import errno
import json
import logging
import os
import sqlite3
import threading
import time
from typing import Callable, Dict, List, Optional, Tuple

try:
    import fcntl
except ImportError:  # Windows: no flock, the log is not locked
    fcntl = None

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (run_id INTEGER PRIMARY KEY AUTOINCREMENT, started REAL, pid INTEGER,
    source TEXT, accelerator TEXT, first_seq INTEGER);
CREATE TABLE IF NOT EXISTS frames (seq INTEGER PRIMARY KEY, run_id INTEGER, t REAL, status TEXT NOT NULL,
    detections INTEGER, infer_ms REAL, e2e_ms REAL, note TEXT);
CREATE TABLE IF NOT EXISTS decisions (id INTEGER PRIMARY KEY AUTOINCREMENT, run_id INTEGER, track_id INTEGER,
    seq INTEGER, t_first REAL, t_decided REAL, class_id INTEGER, label TEXT, score REAL, agreement REAL,
    votes TEXT, bin TEXT, reason TEXT, bbox TEXT, due REAL, status TEXT NOT NULL, actuated_bin TEXT,
    attempts INTEGER, t_actuated REAL, latency_ms REAL);
CREATE TABLE IF NOT EXISTS faults (id INTEGER PRIMARY KEY AUTOINCREMENT, run_id INTEGER, t REAL, kind TEXT,
    message TEXT, seq INTEGER, decision_id INTEGER);
CREATE TABLE IF NOT EXISTS tracks (id INTEGER PRIMARY KEY AUTOINCREMENT, run_id INTEGER, track_id INTEGER,
    first_seq INTEGER, last_seq INTEGER, hits INTEGER, reason TEXT, votes TEXT);
CREATE INDEX IF NOT EXISTS decisions_status ON decisions(status);
CREATE INDEX IF NOT EXISTS decisions_t ON decisions(t_decided);  -- the operator page counts by time
"""
FRAME_STATUSES = ("processed", "dropped", "read_error", "inference_error")
INSERT_FRAMES = ("INSERT INTO frames (seq, run_id, t, status, detections, infer_ms, e2e_ms, note) "
                 "VALUES (?,?,?,?,?,?,?,?)")
SQLITE_CORRUPT, SQLITE_NOTADB = 11, 26  # primary result codes of a damaged file / not a database at all
SQLITE_IOERR, SQLITE_FULL = 10, 13
LOG = logging.getLogger(__name__)


class LogInUseError(Exception):
    """Another process (another service) holds the event log: a restart may find it stopped."""


def lock_log(path: str) -> Optional[int]:
    """Take the lock of the event log at ``path``: an exclusive non-blocking ``flock`` on ``path + ".lock"``,
    which then holds this process's pid. Returns the descriptor to keep open while the log is (closing it
    releases the lock), or None without ``fcntl`` (Windows) or on a file system that cannot lock. The lock
    file is never deleted: the lock is the kernel's, which drops it when the process dies, so a file left by
    a crash blocks nothing. Raises ``LogInUseError`` while another process holds it, ``OSError`` when the
    lock file cannot be created (the folder's permissions: the log could not be either)."""
    if fcntl is None:
        return None
    name = path + ".lock"
    writable = True
    try:
        fd = os.open(name, os.O_RDWR | os.O_CREAT, 0o644)
    except PermissionError as exc:
        try:  # left by a service run as another user (root, by hand): a read-only descriptor locks as well
            fd = os.open(name, os.O_RDONLY)
        except OSError:
            raise exc from None
        writable = False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        try:
            held = exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN)
            holder = _read_pid(fd) if held else None
        finally:
            os.close(fd)
        if held:
            # under systemd the other one was started by hand: `systemctl stop` would stop only this unit
            stop = ("sudo kill %d, the one started by hand" % holder if holder is not None else
                    "the one started by hand") if os.environ.get("INVOCATION_ID") else "sudo systemctl stop edge-trash"
            raise LogInUseError("another edge-trash service %sis using the event log %s: stop it first (%s), or "
                                "give this one another --log"
                                % ("" if holder is None else "(pid %d) " % holder, path, stop)) from None
        LOG.warning("event log %s: cannot lock %s (%s); a second service on this log would not be refused",
                    path, name, exc)
        return None
    if writable:
        try:
            os.fchmod(fd, 0o644)  # whatever the umask of whoever made it (root by hand, 077): the unit's user opens it
            os.ftruncate(fd, 0)
            os.write(fd, ("%d\n" % os.getpid()).encode("ascii"))
        except OSError:  # a full disk: the lock holds all the same, only its message lacks the pid
            pass
    return fd


def _read_pid(fd: int) -> Optional[int]:
    """The pid written in a lock file: None when it is empty or unreadable, or when no process has that pid
    (a holder that could open the file only read-only leaves the pid of an earlier, dead holder there)."""
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        pid = int(os.read(fd, 32).decode("ascii").strip())
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    if pid <= 0:  # kill(0 or -N) would ask about a process group, not a process
        return None
    try:
        os.kill(pid, 0)  # signal 0: no signal is sent, only whether the process exists is checked
    except PermissionError:  # it exists, as another user (root, by hand)
        pass
    except (OSError, OverflowError):  # ProcessLookupError: gone
        return None
    return pid


def is_disk_error(exc: BaseException) -> bool:
    """Whether a failed write is the disk's fault (full or failing), where freeing space may help."""
    code = getattr(exc, "sqlite_errorcode", None)  # Python >= 3.11
    if code is not None:
        return code & 0xFF in (SQLITE_FULL, SQLITE_IOERR)
    if getattr(exc, "errno", None) in (errno.ENOSPC, errno.EIO, getattr(errno, "EDQUOT", errno.ENOSPC)):
        return True
    text = str(exc)
    return "disk is full" in text or "disk I/O error" in text


def write_error_fix(exc: BaseException, path: str) -> str:
    """What to do about a failed write to the log at ``path``: free space only for a full or failing disk
    (a clash with rows already in the log or a lock is no full disk)."""
    if is_disk_error(exc):
        return "free space on the disk holding %s" % path
    if isinstance(exc, sqlite3.IntegrityError):
        return ("%s already holds these rows: another process writes the same log; stop it, or give this service "
                "another --log" % path)
    if "locked" in str(exc) or "busy" in str(exc):
        return "another process holds %s locked (an open query?): close it" % path
    return "check %s and the disk holding it" % path


def is_corrupt(exc: BaseException) -> bool:
    """Whether ``exc`` says the database file is damaged or not a database (not a permission, locking,
    disk-full or I/O error, which Python raises as ``sqlite3.OperationalError``)."""
    code = getattr(exc, "sqlite_errorcode", None)  # Python >= 3.11
    if code is not None:
        return code & 0xFF in (SQLITE_CORRUPT, SQLITE_NOTADB)
    # Python < 3.11 (the board's 3.7): SQLITE_CORRUPT and SQLITE_NOTADB are the codes raised as the
    # plain DatabaseError class; every permission / busy / full / I/O code is an OperationalError
    return type(exc) is sqlite3.DatabaseError


def _prepare(db: sqlite3.Connection) -> None:
    """Set WAL mode, create the schema and read the frame index once (so a damaged file fails here,
    at start-up)."""
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: committed data survives a process kill
    db.executescript(SCHEMA)
    db.execute("SELECT MAX(seq) FROM frames").fetchone()


def open_database(path: str) -> Tuple[sqlite3.Connection, Optional[str]]:
    """Open (or create) the log database at ``path``: (connection, None). When SQLite reports the file
    as corrupt, it is moved aside with ``move_aside`` and a fresh database created: (connection, the
    path it was moved to). Any other error (permissions, disk full, I/O) is raised unchanged."""
    db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    try:
        _prepare(db)
        return db, None
    except sqlite3.DatabaseError as exc:
        if not is_corrupt(exc) or not os.path.isfile(path):
            db.close()
            raise  # the caller says how to fix it
        try:
            # moved BEFORE closing: SQLite deletes a -wal/-shm it finds unusable when the connection closes
            aside = move_aside(path)
        except OSError as move_exc:
            db.close()
            LOG.error("event log %s is corrupt (%s) and cannot be moved aside (%s): move or delete it (and its "
                      "-wal/-shm files) by hand", path, exc, move_exc)
            raise exc from None
        db.close()
        LOG.warning("event log %s is corrupt (%s): moved it to %s (kept for inspection) and started a new log "
                    "at %s; delete the old one once it is no longer needed", path, exc, aside, path)
    except BaseException:
        db.close()
        raise
    db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    try:
        _prepare(db)
    except BaseException:
        db.close()
        raise
    return db, aside


def move_aside(path: str) -> str:
    """Rename the database ``path`` (and its ``-wal``/``-shm``/``-journal`` files) to
    ``path.corrupt-YYYYMMDD-HHMMSS`` (``-N`` appended when taken) in the same folder; returns the new path."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    aside, n = "%s.corrupt-%s" % (path, stamp), 1
    while any(os.path.lexists(aside + suffix) for suffix in ("", "-wal", "-shm", "-journal")):
        n += 1
        aside = "%s.corrupt-%s-%d" % (path, stamp, n)
    for suffix in ("", "-wal", "-shm", "-journal"):  # the main file first: a left-over -wal is never replayed
        if os.path.lexists(path + suffix):
            os.rename(path + suffix, aside + suffix)
    return aside


class EventLog:
    """Thread-safe (one connection behind a lock) event log at ``path``.

    ``max_buffered_rows`` bounds the frame rows kept in memory while the disk cannot take them
    (default ``min(max_frame_rows, 50 * commit_every)``). ``moved_aside`` is the path a corrupt log
    was renamed to at start-up (None when the log opened normally); ``frames_lost`` counts frame
    rows dropped from a full buffer."""

    def __init__(self, path: str, commit_every: int = 200, commit_interval_s: float = 1.0,
                 max_frame_rows: int = 1000000, max_event_rows: int = 100000,
                 max_buffered_rows: Optional[int] = None):
        directory = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(directory):
            os.makedirs(directory)
        self.path = path
        self.commit_every = commit_every
        self.commit_interval_s = commit_interval_s
        self.max_frame_rows = max_frame_rows
        self.max_event_rows = max_event_rows
        if max_buffered_rows is None:
            max_buffered_rows = min(max_frame_rows, 50 * commit_every)
        self.max_buffered_rows = max(1, commit_every, max_buffered_rows)
        self._lock = threading.RLock()  # the connection
        self._buf_lock = threading.Lock()  # the frame buffer only: the main loop never waits on SQLite
        self._flusher = None  # type: Optional[threading.Thread]
        self._closing = threading.Event()
        # before SQLite opens it: a second service never touches (nor moves aside) the log of a running one
        self._lock_fd = lock_log(path)  # type: Optional[int]
        try:
            # a corrupt file is moved aside (``moved_aside`` says where: the service records a fault)
            self._db, self.moved_aside = open_database(path)  # type: sqlite3.Connection, Optional[str]
        except BaseException:
            self._unlock()
            raise
        self._write_error = None  # type: Optional[BaseException]  # the last write that failed
        self._lost_cause = None  # type: Optional[BaseException]  # the failure that made the buffer drop rows
        self.frames_lost = 0  # frame rows dropped because the buffer was full while writing failed
        self._lost = None  # type: Optional[List[int]]  # [count, first seq, last seq] not yet reported
        # records (decisions, their attempts and outcomes, faults, track ends) the disk refused, not yet reported,
        # and when the first of them was refused (the callers go on without them: the items still move)
        self._records_lost = 0
        self._records_lost_since = 0.0
        self._records_lost_cause = None  # type: Optional[BaseException]  the first refusal's
        self._frames = []  # type: List[tuple]
        self._last_commit = time.monotonic()
        self._frames_since_prune = 0
        # prune every `_prune_every` rows down to max - _prune_every, so the table never exceeds max
        self._prune_every = max(1, min(1000, max_frame_rows // 10))
        self.run_id = None  # type: Optional[int]

    @property
    def records_lost(self) -> int:
        """Records the disk refused since the last one it took (reported in a fault once it takes one)."""
        return self._records_lost

    # -- runs and recovery ------------------------------------------------------------------
    def next_seq(self) -> int:
        """The first frame sequence number not yet in the log (where a replay resumes)."""
        with self._lock:
            row = self._db.execute("SELECT MAX(seq) FROM frames").fetchone()
        return 0 if row[0] is None else int(row[0]) + 1

    def start_run(self, source: str, accelerator: str, first_seq: int) -> int:
        """Record a service start; returns the run id used on every later row."""
        def work():
            return self._db.execute("INSERT INTO runs (started, pid, source, accelerator, first_seq) "
                                    "VALUES (?,?,?,?,?)", (time.time(), os.getpid(), source, accelerator,
                                                           first_seq)).lastrowid
        self.run_id = self._write(work, frames=False)
        return self.run_id

    def recover(self, late_tolerance_s: float = 0.5,
                max_ahead_s: Optional[float] = None) -> List[Tuple[int, str, float, float]]:
        """After a crash: ``attempting`` -> ``unknown`` + fault (never fired twice); ``pending``
        whose due time + tolerance has passed -> ``missed`` + fault; with ``max_ahead_s`` (the travel
        delay plus the tolerance), a ``pending`` one due further ahead than any decision can be -> ``missed``
        + fault too (the wall clock went back since: a board without a clock battery before NTP, and firing
        it then would move the gate under another item); returns the rest as (id, bin, due, t_first) to
        reschedule."""
        now = time.time()

        def work():
            rows = self._db.execute("SELECT id, status, bin, due, t_first FROM decisions "
                                    "WHERE status IN ('attempting', 'pending')").fetchall()
            resume = []
            for ref, status, bin_name, due, t_first in rows:
                if status == "attempting":
                    self._db.execute("UPDATE decisions SET status='unknown' WHERE id=?", (ref,))
                    self._fault_locked("restart", "the service stopped while actuating bin %r for decision %d; "
                                       "not repeated (it may or may not have moved)" % (bin_name, ref), None, ref)
                elif due + late_tolerance_s < now:
                    self._db.execute("UPDATE decisions SET status='missed' WHERE id=?", (ref,))
                    self._fault_locked("restart", "decision %d (bin %r) was due %.2f s before the restart; the item "
                                       "has passed the actuator" % (ref, bin_name, now - due), None, ref)
                elif max_ahead_s is not None and due - now > max_ahead_s:
                    self._db.execute("UPDATE decisions SET status='missed' WHERE id=?", (ref,))
                    self._fault_locked("restart", "decision %d (bin %r) is due %.0f s after the restart, later than any "
                                       "decision can be: the clock went back since it was decided, so when it was "
                                       "due is unknown; not fired" % (ref, bin_name, due - now), None, ref)
                else:
                    resume.append((ref, bin_name, due, t_first))
            return resume
        return self._write(work, frames=False)

    # -- frames ------------------------------------------------------------------------------
    def frame(self, seq: int, status: str, t: Optional[float] = None, detections: int = 0,
              infer_ms: Optional[float] = None, e2e_ms: Optional[float] = None, note: Optional[str] = None) -> None:
        """Buffer one frame row (committed by ``maybe_commit``/``commit`` or the next decision). Never
        touches SQLite; a buffer full of rows the disk would not take drops its oldest row (counted)."""
        if status not in FRAME_STATUSES:
            raise ValueError("frame status %r is not one of %s" % (status, FRAME_STATUSES))
        row = (seq, self.run_id, time.time() if t is None else t, status, detections, infer_ms, e2e_ms, note)
        with self._buf_lock:
            self._frames.append(row)
            if len(self._frames) > self.max_buffered_rows:
                self._drop_oldest_locked(len(self._frames) - self.max_buffered_rows)

    def _drop_oldest_locked(self, n: int) -> None:
        """Drop the ``n`` oldest buffered rows, counted (caller holds ``_buf_lock``)."""
        dropped = self._frames[:n]
        del self._frames[:n]  # in place: called per frame while the disk refuses rows
        first, last = dropped[0][0], dropped[-1][0]
        if self._lost is None:
            self._lost = [0, first, last]
            cause = self._lost_cause = self._write_error
            LOG.error("event log %s: frame rows have not been written for a while%s and %d are buffered; dropping "
                      "the oldest (from seq %d) until writing works again: %s", self.path,
                      "" if cause is None else " (%s: %s)" % (type(cause).__name__, cause), self.max_buffered_rows,
                      first, "check the disk holding it" if cause is None else write_error_fix(cause, self.path))
        self._lost = [self._lost[0] + len(dropped), min(self._lost[1], first), max(self._lost[2], last)]
        self.frames_lost += len(dropped)

    def _take_frames(self, limit: Optional[int] = None) -> Tuple[List[tuple], Optional[List[int]]]:
        """Take the oldest ``limit`` buffered rows (all when None) and the unreported loss (if any)."""
        with self._buf_lock:
            if limit is None or len(self._frames) <= limit:
                rows, self._frames = self._frames, []
            else:
                rows, self._frames = self._frames[:limit], self._frames[limit:]
            lost, self._lost = self._lost, None
        return rows, lost

    def _put_back_frames(self, rows: List[tuple], lost: Optional[List[int]]) -> None:
        """Put rows that could not be written back in front of the buffer (bounded: the oldest go first)."""
        with self._buf_lock:
            if lost is not None:
                self._lost = lost if self._lost is None else [
                    lost[0] + self._lost[0], min(lost[1], self._lost[1]), max(lost[2], self._lost[2])]
            if rows:
                self._frames = rows + self._frames
                if len(self._frames) > self.max_buffered_rows:
                    self._drop_oldest_locked(len(self._frames) - self.max_buffered_rows)

    def _rollback_locked(self) -> None:
        """End a failed transaction so the connection takes the next write (caller holds ``_lock``)."""
        if self._db.in_transaction:
            try:
                self._db.execute("ROLLBACK")
            except sqlite3.Error:  # SQLite already rolled it back (e.g. after SQLITE_FULL)
                pass

    def _write(self, work: Optional[Callable[[], object]] = None, frames: bool = True,
               limit: Optional[int] = None, record: bool = True):
        """Run ``work()`` in one transaction, with the buffered frame rows when ``frames`` (the oldest
        ``limit`` of them, all when None); returns what ``work`` returns. On any error the transaction is
        rolled back, the frame rows go back to the buffer and the error is re-raised (the connection
        stays usable). ``record``: ``work`` writes a record (a decision, an outcome, a fault...; not a prune),
        so a refused one is counted in the fault that reports them once writing works again."""
        record = record and work is not None
        with self._lock:
            rows, lost = self._take_frames(limit) if frames else ([], None)
            try:
                self._rollback_locked()  # never BEGIN inside a transaction an earlier failure left open
                self._db.execute("BEGIN")
                if rows:
                    self._db.executemany(INSERT_FRAMES, rows)
                if lost is not None:
                    cause = self._lost_cause
                    self._fault_locked("event_log", "%d frame rows (seq %d..%d) were dropped while %s could not be "
                                       "written (%s); the frames themselves were processed"
                                       % (lost[0], lost[1], lost[2], self.path, "disk full or failing"
                                          if cause is None or is_disk_error(cause) else
                                          "%s: %s" % (type(cause).__name__, cause)), None, None)
                if record and self._records_lost:  # writing works again: the log says what it lacks, once
                    self._fault_locked("event_log", "%d records (decisions, their attempts and outcomes, faults, "
                                       "track ends) could not be written from %s until now (%s); the sorting went "
                                       "on, so the log lacks them" % (
                                           self._records_lost, time.strftime(
                                               "%Y-%m-%d %H:%M:%S", time.localtime(self._records_lost_since)),
                                           "disk full or failing" if is_disk_error(self._records_lost_cause)
                                           else "%s: %s" % (type(self._records_lost_cause).__name__,
                                                            self._records_lost_cause)),
                                       None, None)
                result = work() if work is not None else None
                self._db.execute("COMMIT")
            except BaseException as exc:
                if record:
                    if not self._records_lost:
                        self._records_lost_since, self._records_lost_cause = time.time(), exc
                    self._records_lost += 1
                self._write_error = exc
                self._rollback_locked()
                self._put_back_frames(rows, lost)
                raise
            if record:
                self._records_lost = 0
            self._frames_since_prune += len(rows)
            if frames:
                self._last_commit = time.monotonic()
        return result

    def commit(self) -> None:
        """Write buffered frame rows now (and prune old rows when due). Raises ``sqlite3.Error`` when
        the disk refuses them; the rows stay buffered for the next try. A large backlog (after the disk
        refused rows for a while) is written in transactions of ``commit_every`` rows, oldest first, so
        what fits on the disk is written even when the whole backlog does not fit."""
        chunk = max(1, self.commit_every)
        with self._lock:
            for _ in range(-(-len(self._frames) // chunk) or 1):
                if not self._frames and self._lost is None:
                    break
                self._write(limit=chunk)
                self._maybe_prune_locked()
            self._last_commit = time.monotonic()
            self._maybe_prune_locked()

    def _maybe_prune_locked(self) -> None:
        """Prune when ``_prune_every`` rows were written since the last prune; a failure is logged and
        retried after the next ``_prune_every`` rows (the frames themselves are committed)."""
        if self._frames_since_prune < self._prune_every:
            return
        try:
            self._write(self._prune_locked, frames=False, record=False)
        except sqlite3.Error as exc:
            self._frames_since_prune = 0
            LOG.warning("event log %s: pruning old rows failed (%s); retried after the next %d rows: %s",
                        self.path, exc, self._prune_every, write_error_fix(exc, self.path))
        else:
            self._frames_since_prune = 0

    def maybe_commit(self) -> None:
        """Commit when enough rows or time have accumulated; a no-op while the background flusher
        runs (so the main loop never waits on SQLite)."""
        flusher = self._flusher
        if flusher is not None and flusher.is_alive():
            return
        if self._commit_due(time.monotonic()):
            self.commit()

    def _commit_due(self, now: float) -> bool:
        """Enough frame rows buffered, the interval passed, or a prune due: frames written with decisions (an
        item a second or more often keeps ``_last_commit`` fresh) count towards the prune, which only
        ``commit()`` runs, so without the last test the log would grow past its limits on a busy belt."""
        return (len(self._frames) >= self.commit_every or now - self._last_commit >= self.commit_interval_s
                or self._frames_since_prune >= self._prune_every)

    def start_flusher(self) -> None:
        """Commit buffered frame rows from a background thread every ``commit_interval_s`` (or
        sooner when ``commit_every`` rows are waiting), so the main loop never waits on SQLite.
        A failing write is logged once per streak of failures and retried every
        ``commit_interval_s``; the thread keeps running until ``close()``."""
        def run():
            failures = 0
            retry_at = 0.0
            while not self._closing.wait(min(0.05, self.commit_interval_s)):
                now = time.monotonic()
                if failures and now < retry_at:
                    continue
                if self._commit_due(now):
                    try:
                        self.commit()
                    except Exception as exc:  # disk full, I/O error, locked (or closed under us at shutdown)
                        if self._closing.is_set():
                            return
                        if not failures:
                            LOG.error("event log %s: writing frame rows failed (%s: %s); %d rows are kept in memory "
                                      "(at most %d) and written when it works again: %s", self.path,
                                      type(exc).__name__, exc, len(self._frames), self.max_buffered_rows,
                                      write_error_fix(exc, self.path))
                        failures += 1
                        retry_at = now + self.commit_interval_s
                        continue
                    if failures:
                        LOG.warning("event log %s: writing works again after %d failed tries (%d frame rows "
                                    "dropped in all)", self.path, failures, self.frames_lost)
                        failures = 0
        self._flusher = threading.Thread(target=run, name="eventlog-flush", daemon=True)
        self._flusher.start()

    def _prune_locked(self) -> None:
        keep = self.max_frame_rows - self._prune_every
        self._db.execute("DELETE FROM frames WHERE seq < (SELECT MAX(seq) FROM frames) - ?", (keep - 1,))
        for table in ("faults", "tracks"):
            self._db.execute("DELETE FROM %s WHERE id <= (SELECT MAX(id) FROM %s) - ?" % (table, table),
                             (self.max_event_rows,))
        self._db.execute("DELETE FROM decisions WHERE status NOT IN ('pending', 'attempting') AND "
                         "id <= (SELECT MAX(id) FROM decisions) - ?", (self.max_event_rows,))

    # -- decisions ----------------------------------------------------------------------------
    def record_decisions(self, rows: List[Dict]) -> List[int]:
        """Insert decisions as ``pending`` together with the buffered frames (the oldest ``commit_every``), durably. Each row:
        track_id, seq, t_first, t_decided, class_id, label, score, agreement, votes, bin, reason,
        bbox, due. Returns their ids."""
        def work():
            ids = []
            for r in rows:
                cur = self._db.execute(
                    "INSERT INTO decisions (run_id, track_id, seq, t_first, t_decided, class_id, label, score, "
                    "agreement, votes, bin, reason, bbox, due, status) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,'pending')",
                    (self.run_id, r["track_id"], r["seq"], r["t_first"], r["t_decided"], r["class_id"], r["label"],
                     r["score"], r["agreement"], json.dumps(r["votes"], sort_keys=True), r["bin"], r["reason"],
                     json.dumps(r["bbox"]), r["due"]))
                ids.append(cur.lastrowid)
            return ids
        return self._write(work, limit=self.commit_every)  # a backlog after an outage is the flusher's to write

    def mark_attempt(self, ref: int) -> None:
        """Durably mark decision ``ref`` as being actuated (before the actuator moves). Raises
        ``sqlite3.Error`` when the disk refuses it (the connection stays usable)."""
        self._write(lambda: self._db.execute("UPDATE decisions SET status='attempting' WHERE id=?", (ref,)),
                    frames=False)

    def mark_done(self, ref: int, actuated_bin: Optional[str], attempts: int, status: str,
                  latency_ms: float) -> None:
        """Record the actuation outcome of decision ``ref``, ``latency_ms`` after the item was first seen (measured
        on the monotonic clock by the caller: the wall-clock times in the row may straddle an NTP step). Raises
        ``sqlite3.Error`` when the disk refuses it (the connection stays usable)."""
        self._write(lambda: self._db.execute("UPDATE decisions SET status=?, actuated_bin=?, attempts=?, "
                                             "t_actuated=?, latency_ms=? WHERE id=?",
                                             (status, actuated_bin, attempts, time.time(), round(latency_ms, 3),
                                              ref)), frames=False)

    # -- faults and undecided tracks ------------------------------------------------------------
    def _fault_locked(self, kind: str, message: str, seq: Optional[int], ref: Optional[int]) -> None:
        self._db.execute("INSERT INTO faults (run_id, t, kind, message, seq, decision_id) VALUES (?,?,?,?,?,?)",
                         (self.run_id, time.time(), kind, message, seq, ref))

    def fault(self, kind: str, message: str, seq: Optional[int] = None, ref: Optional[int] = None) -> None:
        """Record a fault durably (with the oldest ``commit_every`` buffered frames). Raises ``sqlite3.Error`` when the disk
        refuses it; the frame rows stay buffered and the connection usable."""
        self._write(lambda: self._fault_locked(kind, message, seq, ref), limit=self.commit_every)

    def undecided_track(self, track_id: int, first_seq: int, last_seq: int, hits: int, reason: str,
                        votes: Dict) -> None:
        """Record a track that ended without a decision (its own small transaction). Raises
        ``sqlite3.Error`` when the disk refuses it (the connection stays usable)."""
        self._write(lambda: self._db.execute(
            "INSERT INTO tracks (run_id, track_id, first_seq, last_seq, hits, reason, votes) VALUES (?,?,?,?,?,?,?)",
            (self.run_id, track_id, first_seq, last_seq, hits, reason, json.dumps(votes, sort_keys=True))),
            frames=False)

    def recent_faults(self, limit: int = 10) -> List[Dict]:
        """The last ``limit`` faults, newest first."""
        with self._lock:
            rows = self._db.execute("SELECT t, kind, message, seq, decision_id FROM faults ORDER BY id DESC LIMIT ?",
                                    (limit,)).fetchall()
        return [{"t": r[0], "kind": r[1], "message": r[2], "seq": r[3], "decision_id": r[4]} for r in rows]

    def _unlock(self) -> None:
        """Release the log's lock (once): another process may open the log from now on."""
        fd, self._lock_fd = self._lock_fd, None
        if fd is not None:
            os.close(fd)  # closing the descriptor releases the flock; the file stays (see ``lock_log``)

    def close(self) -> None:
        """Stop the flusher, flush buffered rows, checkpoint the WAL, close and release the lock. A disk
        that still refuses the rows is logged (with how many rows are lost), never raised: the connection
        is closed either way."""
        self._closing.set()
        if self._flusher is not None:
            self._flusher.join(5.0)
        with self._lock:
            try:
                self.commit()
            except sqlite3.Error as exc:
                LOG.error("event log %s: %d buffered frame rows could not be written at shutdown (%s) and are lost: "
                          "%s", self.path, len(self._frames), exc, write_error_fix(exc, self.path))
            try:
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.Error:  # a reader holds the WAL (or the disk is full); it is checkpointed later
                pass
            try:
                self._db.close()
            finally:
                self._unlock()
