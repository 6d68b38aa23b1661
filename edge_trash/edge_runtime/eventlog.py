"""The event log: SQLite in WAL mode, durable across SIGKILL, size-bounded (stdlib only).

Every frame sequence number gets exactly one row in ``frames`` (status ``processed``,
``dropped``, ``read_error`` or ``inference_error``). Frame rows are buffered and committed in
batches; a decision or fault commits the buffer in the same transaction, so after a crash the
committed frames are always a contiguous prefix and ``next_seq()`` says where to resume.
Decisions are written ``pending`` before they are scheduled, ``attempting`` (durably) before
the actuator moves and ``actuated``/``failsafe``/``failed`` after; ``recover()`` at start-up
turns ``attempting`` into ``unknown`` + a fault (never re-fired) and returns the ``pending``
ones that may still be fired.
"""

import json
import os
import sqlite3
import threading
import time
from typing import Dict, List, Optional, Tuple

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


class EventLog:
    """Thread-safe (one connection behind a lock) event log at ``path``."""

    def __init__(self, path: str, commit_every: int = 200, commit_interval_s: float = 1.0,
                 max_frame_rows: int = 1000000, max_event_rows: int = 100000):
        directory = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(directory):
            os.makedirs(directory)
        self.path = path
        self.commit_every = commit_every
        self.commit_interval_s = commit_interval_s
        self.max_frame_rows = max_frame_rows
        self.max_event_rows = max_event_rows
        self._lock = threading.RLock()  # the connection
        self._buf_lock = threading.Lock()  # the frame buffer only: the main loop never waits on SQLite
        self._flusher = None  # type: Optional[threading.Thread]
        self._closing = threading.Event()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: committed data survives a process kill
        self._db.executescript(SCHEMA)
        self._frames = []  # type: List[tuple]
        self._last_commit = time.monotonic()
        self._frames_since_prune = 0
        # prune every `_prune_every` rows down to max - _prune_every, so the table never exceeds max
        self._prune_every = max(1, min(1000, max_frame_rows // 10))
        self.run_id = None  # type: Optional[int]

    # -- runs and recovery ------------------------------------------------------------------
    def next_seq(self) -> int:
        """The first frame sequence number not yet in the log (where a replay resumes)."""
        with self._lock:
            row = self._db.execute("SELECT MAX(seq) FROM frames").fetchone()
        return 0 if row[0] is None else int(row[0]) + 1

    def start_run(self, source: str, accelerator: str, first_seq: int) -> int:
        """Record a service start; returns the run id used on every later row."""
        with self._lock:
            cur = self._db.execute("INSERT INTO runs (started, pid, source, accelerator, first_seq) VALUES (?,?,?,?,?)",
                                   (time.time(), os.getpid(), source, accelerator, first_seq))
            self.run_id = cur.lastrowid
        return self.run_id

    def recover(self, late_tolerance_s: float = 0.5) -> List[Tuple[int, str, float, float]]:
        """After a crash: ``attempting`` -> ``unknown`` + fault (never fired twice); ``pending``
        whose due time + tolerance has passed -> ``missed`` + fault; returns the rest as
        (id, bin, due, t_first) to reschedule."""
        now = time.time()
        with self._lock:
            self._db.execute("BEGIN")
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
                else:
                    resume.append((ref, bin_name, due, t_first))
            self._db.execute("COMMIT")
        return resume

    # -- frames ------------------------------------------------------------------------------
    def frame(self, seq: int, status: str, t: Optional[float] = None, detections: int = 0,
              infer_ms: Optional[float] = None, e2e_ms: Optional[float] = None, note: Optional[str] = None) -> None:
        """Buffer one frame row (committed by ``maybe_commit``/``commit`` or the next decision)."""
        if status not in FRAME_STATUSES:
            raise ValueError("frame status %r is not one of %s" % (status, FRAME_STATUSES))
        row = (seq, self.run_id, time.time() if t is None else t, status, detections, infer_ms, e2e_ms, note)
        with self._buf_lock:
            self._frames.append(row)

    def _flush_frames_locked(self) -> None:
        """Insert the buffered rows (caller holds ``_lock``; rows are taken in order, so the
        committed frames stay a contiguous prefix)."""
        with self._buf_lock:
            rows, self._frames = self._frames, []
        if rows:
            self._db.executemany("INSERT INTO frames (seq, run_id, t, status, detections, infer_ms, e2e_ms, note) "
                                 "VALUES (?,?,?,?,?,?,?,?)", rows)
            self._frames_since_prune += len(rows)

    def commit(self) -> None:
        """Write buffered frame rows now (and prune old rows when due)."""
        with self._lock:
            if self._frames:
                self._db.execute("BEGIN")
                self._flush_frames_locked()
                self._db.execute("COMMIT")
            self._last_commit = time.monotonic()
            if self._frames_since_prune >= self._prune_every:
                self._prune_locked()

    def maybe_commit(self) -> None:
        """Commit when enough rows or time have accumulated (a no-op while the background flusher
        runs, unless the buffer is 4x over ``commit_every``)."""
        pending = len(self._frames)
        if self._flusher is not None and pending < 4 * self.commit_every:
            return
        if pending >= self.commit_every or time.monotonic() - self._last_commit >= self.commit_interval_s:
            self.commit()

    def start_flusher(self) -> None:
        """Commit buffered frame rows from a background thread every ``commit_interval_s`` (or
        sooner when ``commit_every`` rows are waiting), so the main loop never waits on SQLite."""
        def run():
            while not self._closing.wait(min(0.05, self.commit_interval_s)):
                if len(self._frames) >= self.commit_every or \
                        time.monotonic() - self._last_commit >= self.commit_interval_s:
                    try:
                        self.commit()
                    except sqlite3.Error:  # closed under us at shutdown
                        return
        self._flusher = threading.Thread(target=run, name="eventlog-flush", daemon=True)
        self._flusher.start()

    def _prune_locked(self) -> None:
        self._frames_since_prune = 0
        keep = self.max_frame_rows - self._prune_every
        self._db.execute("DELETE FROM frames WHERE seq < (SELECT MAX(seq) FROM frames) - ?", (keep - 1,))
        for table in ("faults", "tracks"):
            self._db.execute("DELETE FROM %s WHERE id <= (SELECT MAX(id) FROM %s) - ?" % (table, table),
                             (self.max_event_rows,))
        self._db.execute("DELETE FROM decisions WHERE status NOT IN ('pending', 'attempting') AND "
                         "id <= (SELECT MAX(id) FROM decisions) - ?", (self.max_event_rows,))

    # -- decisions ----------------------------------------------------------------------------
    def record_decisions(self, rows: List[Dict]) -> List[int]:
        """Insert decisions as ``pending`` together with all buffered frames, durably. Each row:
        track_id, seq, t_first, t_decided, class_id, label, score, agreement, votes, bin, reason,
        bbox, due. Returns their ids."""
        ids = []
        with self._lock:
            self._db.execute("BEGIN")
            self._flush_frames_locked()
            for r in rows:
                cur = self._db.execute(
                    "INSERT INTO decisions (run_id, track_id, seq, t_first, t_decided, class_id, label, score, "
                    "agreement, votes, bin, reason, bbox, due, status) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,'pending')",
                    (self.run_id, r["track_id"], r["seq"], r["t_first"], r["t_decided"], r["class_id"], r["label"],
                     r["score"], r["agreement"], json.dumps(r["votes"], sort_keys=True), r["bin"], r["reason"],
                     json.dumps(r["bbox"]), r["due"]))
                ids.append(cur.lastrowid)
            self._db.execute("COMMIT")
            self._last_commit = time.monotonic()
        return ids

    def mark_attempt(self, ref: int) -> None:
        """Durably mark decision ``ref`` as being actuated (before the actuator moves)."""
        with self._lock:
            self._db.execute("UPDATE decisions SET status='attempting' WHERE id=?", (ref,))

    def mark_done(self, ref: int, actuated_bin: Optional[str], attempts: int, status: str) -> None:
        """Record the actuation outcome of decision ``ref``."""
        now = time.time()
        with self._lock:
            self._db.execute("UPDATE decisions SET status=?, actuated_bin=?, attempts=?, t_actuated=?, "
                             "latency_ms=(? - t_first) * 1000.0 WHERE id=?",
                             (status, actuated_bin, attempts, now, now, ref))

    # -- faults and undecided tracks ------------------------------------------------------------
    def _fault_locked(self, kind: str, message: str, seq: Optional[int], ref: Optional[int]) -> None:
        self._db.execute("INSERT INTO faults (run_id, t, kind, message, seq, decision_id) VALUES (?,?,?,?,?,?)",
                         (self.run_id, time.time(), kind, message, seq, ref))

    def fault(self, kind: str, message: str, seq: Optional[int] = None, ref: Optional[int] = None) -> None:
        """Record a fault durably (with all buffered frames)."""
        with self._lock:
            self._db.execute("BEGIN")
            self._flush_frames_locked()
            self._fault_locked(kind, message, seq, ref)
            self._db.execute("COMMIT")
            self._last_commit = time.monotonic()

    def undecided_track(self, track_id: int, first_seq: int, last_seq: int, hits: int, reason: str,
                        votes: Dict) -> None:
        """Record a track that ended without a decision (committed with the next batch)."""
        with self._lock:
            self._db.execute("INSERT INTO tracks (run_id, track_id, first_seq, last_seq, hits, reason, votes) "
                             "VALUES (?,?,?,?,?,?,?)", (self.run_id, track_id, first_seq, last_seq, hits, reason,
                                                        json.dumps(votes, sort_keys=True)))

    def recent_faults(self, limit: int = 10) -> List[Dict]:
        """The last ``limit`` faults, newest first."""
        with self._lock:
            rows = self._db.execute("SELECT t, kind, message, seq, decision_id FROM faults ORDER BY id DESC LIMIT ?",
                                    (limit,)).fetchall()
        return [{"t": r[0], "kind": r[1], "message": r[2], "seq": r[3], "decision_id": r[4]} for r in rows]

    def close(self) -> None:
        """Stop the flusher, flush buffered rows, checkpoint the WAL and close."""
        self._closing.set()
        if self._flusher is not None:
            self._flusher.join(5.0)
        with self._lock:
            self.commit()
            try:
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.OperationalError:  # a reader holds the WAL; it is checkpointed later
                pass
            self._db.close()
