"""The operator's page: a read-only web view of the sorter, served by the service's HTTP server.

Routes (all GET; nothing here changes the policy or drives an actuator):

- ``/`` the page, ``/static/app.js``, ``/static/style.css``
- ``/health`` and ``/api/status``: service status plus health (uptime, TPU, temperatures, disk)
- ``/api/live``: tracks on the latest frame, trigger line, accelerator; ``/api/frame.jpg`` that frame
- ``/api/decisions?limit=N``: the latest decisions from the event log; ``/api/thumb/<id>.jpg`` crops
- ``/api/counts``: items moved per bin since the service started, in the last 60 minutes and per hour (24 h),
  items per minute
- ``/api/queue?limit=N``: the hard-example queue, least confident first (the first N, and the ``total``);
  ``/api/queue/image/<file>`` an image;
  ``/api/queue.coco.json`` the queue's annotations as COCO, naming the queue's own image files (``edge-trash
  queue export`` writes the same, with the images as JPEGs beside it)

When a token is configured every request must carry it (``?token=``, header ``X-Edge-Trash-Token`` or
``Authorization: Bearer``). The service refuses to bind to a non-loopback address without one.
Files are served only from the package's ``web/`` folder and the queue folder, by exact name.
"""

import glob
import hmac
import io
import json
import os
import re
import sqlite3
import threading
import time
from typing import Callable, Dict, List, Mapping, NamedTuple, Optional
from urllib.parse import parse_qs, quote, urlsplit

from edge_trash.edge_runtime.hard_examples import LABELS_FILE, QUEUE_FILE_RE
from edge_trash.edge_runtime.health import http_status

WEB_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "web")
STATIC = {"/": ("index.html", "text/html; charset=utf-8"), "/index.html": ("index.html", "text/html; charset=utf-8"),
          "/static/app.js": ("app.js", "application/javascript; charset=utf-8"),
          "/static/style.css": ("style.css", "text/css; charset=utf-8")}
THUMB_RE = re.compile(r"^/api/thumb/(\d+)\.jpg$")
LOOPBACK = ("127.0.0.1", "localhost", "::1")


class Response(NamedTuple):
    """An HTTP response for the server to send."""

    status: int
    content_type: str
    body: bytes
    headers: Dict[str, str] = {}


def is_loopback(host: str) -> bool:
    """True for addresses only this machine can reach."""
    return host in LOOPBACK or host.startswith("127.")


def check_bind(host: str, token: Optional[str]) -> None:
    """Refuse a non-loopback bind without a token (raises ValueError with the fix)."""
    if not is_loopback(host) and not token:
        raise ValueError("health.host is %r, reachable from the network: set health.token in sort.yaml (or the "
                         "EDGE_TRASH_TOKEN environment variable) so every request needs it, or bind to 127.0.0.1"
                         % host)


def _json(obj, status: int = 200) -> Response:
    return Response(status, "application/json", json.dumps(obj, sort_keys=True).encode("utf-8"),
                    {"Cache-Control": "no-store"})


def _error(status: int, message: str) -> Response:
    return _json({"error": message}, status)


def default_jpeg_encoder():
    """A function ``uint8 HxWx3 RGB -> JPEG bytes`` from Pillow or OpenCV, or None when neither exists."""
    try:
        from PIL import Image

        def encode(arr):
            buf = io.BytesIO()
            Image.fromarray(arr).save(buf, format="JPEG", quality=80)
            return buf.getvalue()
        return encode
    except ImportError:
        pass
    try:
        import cv2

        def encode_cv(arr):
            ok, data = cv2.imencode(".jpg", arr[:, :, ::-1])
            return data.tobytes() if ok else b""
        return encode_cv
    except ImportError:
        return None


def _file_bytes(path: str) -> int:
    """The size of ``path``, 0 when it is missing (a WAL file checkpointed away, an evicted example)."""
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


def _dir_bytes(path: Optional[str]) -> int:
    total = 0
    if path and os.path.isdir(path):
        try:
            names = os.listdir(path)
        except OSError:
            return 0
        for name in names:
            full = os.path.join(path, name)
            if os.path.isfile(full):
                total += _file_bytes(full)
    return total


def _number_or_none(value) -> bool:
    """True for a JSON number (not a bool) or null: what a sidecar's ``best_score`` and ``seq`` may be."""
    return value is None or (isinstance(value, (int, float)) and not isinstance(value, bool))


def read_temperatures(root: str = "/sys/class") -> Dict[str, float]:
    """Board temperatures in degrees C from the thermal zones and the Edge TPU (``apex``) where present."""
    temps = {}
    for zone in sorted(glob.glob(os.path.join(root, "thermal", "thermal_zone*"))):
        try:
            with open(os.path.join(zone, "temp")) as f:
                value = float(f.read().strip()) / 1000.0
            name = os.path.basename(zone)
            type_path = os.path.join(zone, "type")
            if os.path.exists(type_path):
                with open(type_path) as f:
                    name = f.read().strip() or name
            temps[name] = round(value, 1)
        except (OSError, ValueError):
            continue
    for apex in sorted(glob.glob(os.path.join(root, "apex", "apex_*"))):
        try:
            with open(os.path.join(apex, "temp")) as f:
                temps["edgetpu_" + os.path.basename(apex)] = round(float(f.read().strip()) / 1000.0, 1)
        except (OSError, ValueError):
            continue
    return temps


# Decisions whose item moved: into its bin, or into the fail-safe bin after a failed actuation.
_MOVED = "status IN ('actuated', 'failsafe') AND actuated_bin IS NOT NULL"


class OperatorPage:
    """Answers the page's requests from the live view, the status callable, the event log and the queue."""

    def __init__(self, status: Callable[[], Dict], live, log_path: str, queue_dir: Optional[str] = None,
                 token: Optional[str] = None, jpeg_encoder=None, queue_to_coco: Optional[Callable] = None,
                 thermal_root: str = "/sys/class", clock: Callable[[], float] = time.time,
                 moved_per_bin: Optional[Callable[[], Dict[str, int]]] = None):
        self.status = status
        self.moved_per_bin = moved_per_bin  # the service's own count of items moved per bin (Stats.per_bin)
        self.live = live
        self.log_path = log_path
        self.queue_dir = queue_dir
        self.token = token or None
        self.encode = jpeg_encoder if jpeg_encoder is not None else default_jpeg_encoder()
        self.queue_to_coco = queue_to_coco
        self.thermal_root = thermal_root
        self.clock = clock
        self.started = time.monotonic()  # the page's uptime: on the monotonic clock, as NTP steps the board's
        self._queue_cache = {}  # type: Dict[str, tuple]  sidecar name -> ((mtime_ns, size), record or None)
        self._queue_lock = threading.Lock()

    # ------------------------------------------------------------------ plumbing
    def _authorized(self, query: Dict[str, List[str]], headers: Mapping[str, str]) -> bool:
        if not self.token:
            return True
        given = (query.get("token") or [""])[0] or headers.get("X-Edge-Trash-Token", "")
        auth = headers.get("Authorization", "")
        if not given and auth.startswith("Bearer "):
            given = auth[len("Bearer "):]
        return hmac.compare_digest(given.encode("utf-8"), self.token.encode("utf-8"))

    def _db(self) -> Optional[sqlite3.Connection]:
        if not self.log_path or not os.path.exists(self.log_path):
            return None
        # read-only, its own connection: WAL lets readers run beside the loop's writer without blocking it
        conn = sqlite3.connect("file:%s?mode=ro" % self.log_path, uri=True, timeout=1.0)
        conn.row_factory = sqlite3.Row
        return conn

    def handle(self, method: str, target: str, headers: Mapping[str, str]) -> Response:
        """Route one request."""
        parts = urlsplit(target)
        path, query = parts.path, parse_qs(parts.query)
        if method not in ("GET", "HEAD"):
            return _error(405, "the operator page is read-only")
        if not self._authorized(query, headers):
            return _error(401, "a valid token is required (?token=... or header X-Edge-Trash-Token)")
        try:
            if path in STATIC:
                name, ctype = STATIC[path]
                with open(os.path.join(WEB_DIR, name), "rb") as f:
                    body = f.read()
                if name == "index.html" and self.token:
                    # the page's own assets need the token too: every request carries it
                    suffix = ("?token=" + quote(self.token, safe="")).encode("utf-8")
                    for asset in (b"static/style.css", b"static/app.js"):
                        body = body.replace(asset + b'"', asset + suffix + b'"')
                return Response(200, ctype, body, {"Cache-Control": "no-cache"})
            if path in ("/health", "/api/status"):  # /health: 503 while something keeps items from their bins
                snap = self.status_json()
                return _json(snap, http_status(snap) if path == "/health" else 200)
            if path == "/api/live":
                return _json(self.live.snapshot())
            if path == "/api/frame.jpg":
                return self._frame()
            if path == "/api/decisions":
                limit = max(1, min(200, int((query.get("limit") or ["20"])[0])))
                return _json({"decisions": self.decisions(limit)})
            if path == "/api/counts":
                return _json(self.counts())
            match = THUMB_RE.match(path)
            if match:
                return self._thumb(int(match.group(1)))
            if path == "/api/queue":
                items = self.queue_items()
                if query.get("limit"):  # the page shows the first 30 of what may be thousands
                    shown = items[:max(1, min(1000, int(query["limit"][0])))]
                    return _json({"items": shown, "total": len(items)})
                return _json({"items": items, "total": len(items)})
            if path.startswith("/api/queue/image/"):
                return self._queue_file(path[len("/api/queue/image/"):])
            if path == "/api/queue.coco.json":
                return self._queue_coco()
        except (ValueError, sqlite3.Error) as exc:
            return _error(400 if isinstance(exc, ValueError) else 503, "%s: %s" % (type(exc).__name__, exc))
        return _error(404, "no such page: %s" % path)

    # ------------------------------------------------------------------ content
    def status_json(self) -> Dict:
        """Service status plus health facts for the page."""
        snap = dict(self.status())
        log_files = [self.log_path + suffix for suffix in ("", "-wal", "-shm")] if self.log_path else []
        disk = {"log_bytes": sum(_file_bytes(p) for p in log_files),
                "queue_bytes": _dir_bytes(self.queue_dir)}
        where = os.path.dirname(os.path.abspath(self.log_path)) if self.log_path else "/"
        try:
            st = os.statvfs(where)
            disk["free_bytes"] = st.f_bavail * st.f_frsize
            disk["total_bytes"] = st.f_blocks * st.f_frsize
        except OSError:
            pass
        snap["health"] = {"page_uptime_s": round(time.monotonic() - self.started, 1),
                          "tpu_present": snap.get("accelerator") == "edgetpu"
                          or bool(glob.glob("/dev/apex_*")),
                          "temperatures_c": read_temperatures(self.thermal_root), "disk": disk}
        return snap

    def _frame(self) -> Response:
        if self.encode is None:
            return _error(503, "no JPEG encoder on this device: install Pillow (sudo apt-get install python3-pil)")
        seq, data = self.live.frame_jpeg(self.encode)
        if data is None:
            return _error(404, "no frame processed yet")
        return Response(200, "image/jpeg", data, {"Cache-Control": "no-store", "X-Frame-Seq": str(seq)})

    def _thumb(self, decision_id: int) -> Response:
        crop = self.live.thumb(decision_id)
        if crop is None or self.encode is None:
            return _error(404, "no thumbnail for decision %d" % decision_id)
        return Response(200, "image/jpeg", self.encode(crop), {"Cache-Control": "max-age=3600"})

    def decisions(self, limit: int) -> List[Dict]:
        """The latest ``limit`` decisions, newest first."""
        conn = self._db()
        if conn is None:
            return []
        try:
            rows = conn.execute("SELECT id, track_id, seq, t_decided, label, score, agreement, votes, bin, reason, "
                                "status, actuated_bin, latency_ms FROM decisions ORDER BY id DESC LIMIT ?",
                                (limit,)).fetchall()
        finally:
            conn.close()
        out = []
        for r in rows:
            item = dict(r)
            item["votes"] = json.loads(item["votes"]) if item["votes"] else {}
            item["thumb"] = "/api/thumb/%d.jpg" % item["id"]
            out.append(item)
        return out

    def counts(self) -> Dict:
        """Items moved per bin since this service started, in the last 60 minutes by the board's clock, and per
        hour over the last day; items decided per minute (the last 5 minutes).

        An item counts in the bin it went to (the fail-safe bin after a failed actuation), and only once it has
        moved: a failed, missed or unknown actuation is in no bin. "Since start" is the service's own count of
        actuations (``moved_per_bin``), which the log's pruning of old rows (``log.max_event_rows``) never
        shrinks; without one (a page on a log alone) it is this run's rows in the log.
        """
        conn = self._db()
        now = self.clock()
        result = {"per_bin": {}, "last_hour": {}, "per_hour": [], "items_per_minute": 0.0, "total": 0}
        if self.moved_per_bin is not None:
            result["per_bin"] = dict(self.moved_per_bin())
        recent = 0
        if conn is not None:
            try:
                if self.moved_per_bin is None:
                    for r in conn.execute("SELECT actuated_bin AS b, COUNT(*) AS n FROM decisions WHERE " + _MOVED +
                                          " AND run_id = (SELECT MAX(run_id) FROM runs) GROUP BY b"):
                        result["per_bin"][r["b"]] = r["n"]
                for r in conn.execute("SELECT actuated_bin AS b, COUNT(*) AS n FROM decisions WHERE " + _MOVED +
                                      " AND t_decided >= ? GROUP BY b", (now - 3600,)):
                    result["last_hour"][r["b"]] = r["n"]
                for r in conn.execute("SELECT CAST(t_decided / 3600 AS INTEGER) AS h, actuated_bin AS b, COUNT(*) AS n "
                                      "FROM decisions WHERE " + _MOVED + " AND t_decided >= ? GROUP BY h, b ORDER BY h",
                                      (now - 24 * 3600,)):
                    result["per_hour"].append({"hour_start": r["h"] * 3600, "bin": r["b"], "items": r["n"]})
                recent = conn.execute("SELECT COUNT(*) FROM decisions WHERE t_decided >= ?",
                                      (now - 300,)).fetchone()[0]
            finally:
                conn.close()
        result["total"] = sum(result["per_bin"].values())
        result["items_per_minute"] = round(recent / 5.0, 2)
        return result

    def queue_items(self) -> List[Dict]:
        """Hard examples, least confident first."""
        if not self.queue_dir or not os.path.isdir(self.queue_dir):
            return []
        items = []
        with self._queue_lock:
            cache, self._queue_cache = self._queue_cache, {}
            for name in sorted(os.listdir(self.queue_dir)):
                if not name.endswith(".json") or name == LABELS_FILE or name.startswith("."):
                    continue
                try:
                    info = os.stat(os.path.join(self.queue_dir, name))
                except OSError:
                    continue
                stamp = (info.st_mtime_ns, info.st_size)
                known = cache.get(name)
                # read once per change: a full queue is thousands of sidecars, polled every 5 s per open page
                rec = known[1] if known is not None and known[0] == stamp else self._queue_record(name)
                self._queue_cache[name] = (stamp, rec)
                if rec is not None:
                    items.append(dict(rec))
        items.sort(key=lambda r: (float(r.get("best_score") or 0.0), r.get("seq") or 0))
        return items

    def _queue_record(self, name: str) -> Optional[Dict]:
        """The sidecar ``name`` of the queue with its image's URL, or None when it is not one of ours."""
        try:
            with open(os.path.join(self.queue_dir, name)) as f:
                rec = json.load(f)
        except (OSError, ValueError):
            return None
        # a sidecar that is not ours (hand-edited, another version) is skipped, not a failed page
        if (not isinstance(rec, dict) or not isinstance(rec.get("file"), str)
                or not QUEUE_FILE_RE.match(rec["file"]) or not _number_or_none(rec.get("best_score"))
                or not _number_or_none(rec.get("seq"))):
            return None
        rec["image_url"] = "/api/queue/image/" + rec["file"]
        return rec

    def _queue_file(self, name: str) -> Response:
        if not self.queue_dir or not QUEUE_FILE_RE.match(name):
            return _error(404, "no such queue file")
        path = os.path.join(self.queue_dir, name)
        real_dir = os.path.realpath(self.queue_dir)
        if os.path.dirname(os.path.realpath(path)) != real_dir or not os.path.isfile(path):
            return _error(404, "no such queue file")
        ctype = "image/jpeg" if name.endswith((".jpg", ".jpeg")) else (
            "image/png" if name.endswith(".png") else "image/x-portable-pixmap")
        try:
            with open(path, "rb") as f:
                body = f.read()
        except FileNotFoundError:  # evicted by the quota since the check above
            return _error(404, "no such queue file")
        except OSError as exc:
            return _error(503, "cannot read the queue file right now: %s" % exc)
        return Response(200, ctype, body, {"Cache-Control": "max-age=3600"})

    def _queue_coco(self) -> Response:
        if self.queue_to_coco is None or not self.queue_dir:
            return _error(404, "this service keeps no hard-example queue (hard_examples.dir in sort.yaml)")
        try:
            coco = self.queue_to_coco(self.queue_dir)
        except Exception as exc:  # e.g. an example evicted by the quota while listing: try again
            return _error(503, "cannot read the queue right now: %s" % exc)
        body = json.dumps(coco, sort_keys=True).encode("utf-8")
        return Response(200, "application/json", body,
                        {"Content-Disposition": 'attachment; filename="relabel.json"', "Cache-Control": "no-store"})
