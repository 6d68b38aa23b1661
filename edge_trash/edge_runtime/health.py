"""Service health: rolling statistics, a JSON HTTP endpoint, and systemd sd_notify (stdlib only)."""

import collections
import json
import logging
import math
import os
import socket
import sys
import threading
import time
import traceback
from typing import Callable, Dict, List, Optional

from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LOG = logging.getLogger(__name__)

# Seconds a connection may sit idle (no request line, no headers, a client not reading the answer)
# before the server closes it: each connection holds a thread, so idle ones must not pile up.
REQUEST_TIMEOUT_S = 10.0
# Connections served at once; one more is closed unanswered. A client sending a byte every few seconds keeps its
# thread past the timeout (it applies to each read), so without a cap slow clients could pile up threads (and
# memory: 300 held 2.4 GB of address space) before any token is checked.
MAX_CONNECTIONS = 32
# Seconds without a frame through inference before /health reports it as a problem (the run itself ends at 30 s)
NO_FRAME_S = 10.0
INTERNAL_ERROR = json.dumps({"error": "internal error; the traceback is in the service's log"}).encode("utf-8")


class _FailureLog:
    """Logs the traceback of each distinct request failure (type and where it was raised) once, so a
    page polling a broken route every second does not flood the journal; repeats go to debug."""

    def __init__(self, limit: int = 64):
        self._lock = threading.Lock()
        self._seen = set()  # type: set
        self._limit = limit

    def log(self, what: str, exc: BaseException) -> None:
        """Log ``exc`` (the exception being handled) for ``what`` (the request)."""
        frames = traceback.extract_tb(exc.__traceback__)
        where = (frames[-1].filename, frames[-1].lineno) if frames else ("", 0)
        key = (type(exc).__name__,) + where
        with self._lock:
            first = key not in self._seen
            if first:
                if len(self._seen) >= self._limit:  # bounded: start over rather than log every repeat in full
                    self._seen.clear()
                self._seen.add(key)
        if first:
            LOG.error("operator page: %s failed (%s: %s); answered 500. Traceback (logged once):", what,
                      type(exc).__name__, exc, exc_info=(type(exc), exc, exc.__traceback__))
        else:
            LOG.debug("operator page: %s failed again (%s: %s)", what, type(exc).__name__, exc)


def percentile(values, q: float) -> Optional[float]:
    """The ``q`` (0..100) percentile by nearest rank, None when empty."""
    data = sorted(values)
    if not data:
        return None
    k = max(0, min(len(data) - 1, int(math.ceil(q / 100.0 * len(data))) - 1))
    return data[k]


class Stats:
    """Thread-safe counters and rolling latency windows for the health endpoint and the benchmark."""

    def __init__(self, window: int = 1000):
        self._lock = threading.Lock()
        self.started = time.monotonic()  # uptime on the monotonic clock: NTP steps a board without an RTC at boot
        self.counters = collections.Counter()  # type: collections.Counter
        self.bins = collections.Counter()  # type: collections.Counter
        self.infer_ms = collections.deque(maxlen=window)
        self.e2e_ms = collections.deque(maxlen=window)
        self.work_ms = collections.deque(maxlen=window)
        self.work_cpu_ms = collections.deque(maxlen=window)
        self.prep_ms = collections.deque(maxlen=window)
        self.actuation_latency_ms = collections.deque(maxlen=window)
        self.frame_times = collections.deque(maxlen=window)
        self.accelerator = "unknown"
        self.warning = None  # type: Optional[str]

    def count(self, name: str, n: int = 1) -> None:
        """Add ``n`` to counter ``name``."""
        with self._lock:
            self.counters[name] += n

    def frame(self, infer_ms: float, e2e_ms: float, work_ms: float, work_cpu_ms: Optional[float] = None,
              prep_ms: Optional[float] = None) -> None:
        """Record one processed frame (times in ms; ``work`` = the loop's time outside invoke(), wall and
        CPU; ``prep`` = pre-processing done in the capture thread)."""
        with self._lock:
            self.counters["processed"] += 1
            self.infer_ms.append(infer_ms)
            self.e2e_ms.append(e2e_ms)
            self.work_ms.append(work_ms)
            if work_cpu_ms is not None:
                self.work_cpu_ms.append(work_cpu_ms)
            if prep_ms is not None:
                self.prep_ms.append(prep_ms)
            self.frame_times.append(time.monotonic())

    def per_bin(self) -> Dict[str, int]:
        """Items moved into each bin so far (the fail-safe bin's after a failed actuation)."""
        with self._lock:
            return dict(self.bins)

    def actuated(self, bin_name: str, latency_ms: float) -> None:
        """Record one actuation."""
        with self._lock:
            self.bins[bin_name] += 1
            self.actuation_latency_ms.append(latency_ms)

    def snapshot(self) -> Dict:
        """The JSON-ready status."""
        with self._lock:
            times = list(self.frame_times)
            fps = (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 and times[-1] > times[0] else 0.0
            now = time.monotonic()
            age = now - times[-1] if times else None  # since the last processed frame
            if fps and age is not None and age > max(2.0, 3.0 / fps):  # frames stopped: the rate falls with time
                fps = (len(times) - 1) / (now - times[0])

            def pair(values):
                return {"p50": percentile(values, 50), "p99": percentile(values, 99)}

            return {"uptime_s": round(now - self.started, 1), "accelerator": self.accelerator,
                    "warning": self.warning, "fps": round(fps, 2),
                    "last_frame_age_s": None if age is None else round(age, 1), "counters": dict(self.counters),
                    "dropped_frames": self.counters.get("dropped", 0), "per_bin": dict(self.bins),
                    "inference_ms": pair(self.infer_ms), "end_to_end_ms": pair(self.e2e_ms),
                    "work_outside_invoke_ms": pair(self.work_ms),
                    "work_outside_invoke_cpu_ms": pair(self.work_cpu_ms),
                    "preprocess_ms": pair(self.prep_ms),
                    "first_sight_to_actuation_ms": pair(self.actuation_latency_ms)}


def http_status(snapshot: Dict) -> int:
    """``/health``'s status code: 503 while the snapshot's ``ok`` is false (it has ``problems``), else 200."""
    return 503 if snapshot.get("ok") is False else 200


def health_problems(snapshot: Dict, actuations_stalled: Optional[str] = None,
                    actuations_failing: Optional[str] = None) -> List[str]:
    """What keeps items from their bins now, from a ``Stats.snapshot()`` and the scheduler's ``stalled()`` and
    ``failing()``: the ``problems`` of ``/health`` (which answers 503 while there are any); empty when none."""
    problems = []
    if actuations_stalled:
        problems.append("actuations stopped: %s" % actuations_stalled)
    if actuations_failing:
        problems.append(actuations_failing)
    age = snapshot.get("last_frame_age_s")
    if age is None and snapshot.get("uptime_s", 0) > NO_FRAME_S:
        problems.append("no frame has gone through inference since the start, %.0f s ago" % snapshot["uptime_s"])
    elif age is not None and age > NO_FRAME_S:
        problems.append("no frame has gone through inference for %.0f s: items passing now are not seen" % age)
    return problems


class HealthServer:
    """An HTTP server in a daemon thread.

    Without ``router`` it serves ``GET /health`` (and ``/``) as JSON from ``status()``. With
    ``router(method, target, headers) -> Response`` (the operator page) every request goes there.
    """

    def __init__(self, status: Callable[[], Dict], host: str = "127.0.0.1", port: int = 8321,
                 router: Optional[Callable] = None, request_timeout_s: float = REQUEST_TIMEOUT_S,
                 max_connections: int = MAX_CONNECTIONS):
        failures = _FailureLog()
        slots = threading.BoundedSemaphore(max_connections)

        def health_only(method, target, headers):
            from edge_trash.edge_runtime.operator_page import Response
            if method != "GET" or target.split("?")[0] not in ("/", "/health"):
                return Response(404, "application/json", b'{"error": "only GET /health"}', {})
            snap = status()
            return Response(http_status(snap), "application/json", json.dumps(snap, sort_keys=True).encode("utf-8"),
                            {})

        route = router or health_only

        class Handler(BaseHTTPRequestHandler):
            timeout = request_timeout_s  # StreamRequestHandler's socket timeout: an idle connection is closed

            def _answer(self, method):
                try:
                    response = route(method, self.path, self.headers)
                except Exception as exc:  # one broken request must not kill the connection unanswered
                    failures.log("%s %s" % (method, self.path), exc)
                    from edge_trash.edge_runtime.operator_page import Response
                    response = Response(500, "application/json", INTERNAL_ERROR, {"Cache-Control": "no-store"})
                self.send_response(response.status)
                self.send_header("Content-Type", response.content_type)
                self.send_header("Content-Length", str(len(response.body)))
                for key, value in response.headers.items():
                    self.send_header(key, value)
                self.end_headers()
                if method != "HEAD":
                    self.wfile.write(response.body)

            def do_GET(self):  # noqa: N802 - http.server API
                self._answer("GET")

            def do_HEAD(self):  # noqa: N802
                self._answer("HEAD")

            def do_POST(self):  # noqa: N802 - read-only: the router answers 405
                self._answer("POST")

            do_PUT = do_DELETE = do_PATCH = do_POST

            def log_message(self, fmt, *args):  # keep the journal quiet
                pass

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            request_queue_size = 32  # listen backlog: a burst of page requests is not dropped at 5

            def process_request(self, request, client_address):
                if not slots.acquire(False):  # max_connections served already: this one is closed unanswered
                    LOG.debug("operator page: %d connections served already; %s closed", max_connections,
                              client_address)
                    self.shutdown_request(request)
                    return
                try:
                    ThreadingHTTPServer.process_request(self, request, client_address)
                except BaseException:  # no thread started: its slot is free again
                    slots.release()
                    raise

            def process_request_thread(self, request, client_address):
                try:
                    ThreadingHTTPServer.process_request_thread(self, request, client_address)
                finally:
                    slots.release()

            def handle_error(self, request, client_address):
                """An error outside the route (a client gone or too slow while answered): to the log, not
                stderr; a vanished client is normal and only debug."""
                exc = sys.exc_info()[1]
                if isinstance(exc, (ConnectionError, socket.timeout)):
                    LOG.debug("operator page: client %s: %s", client_address, exc)
                elif exc is not None:
                    failures.log("a request from %s" % (client_address[0],), exc)

        self.server = Server((host, port), Handler)
        self.address = self.server.server_address
        self._thread = threading.Thread(target=self.server.serve_forever, name="health", daemon=True)

    def start(self) -> None:
        """Start serving."""
        self._thread.start()

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self.server.shutdown()
        self.server.server_close()


class SystemdNotifier:
    """sd_notify over the ``NOTIFY_SOCKET`` datagram socket; a no-op outside systemd."""

    def __init__(self, environ=None):
        env = os.environ if environ is None else environ
        address = env.get("NOTIFY_SOCKET")
        self.address = ("\0" + address[1:]) if address and address.startswith("@") else address
        usec = env.get("WATCHDOG_USEC")
        self.watchdog_interval = int(usec) / 2e6 if usec and usec.isdigit() else None
        self._last_ping = 0.0

    def notify(self, message: str) -> bool:
        """Send ``message`` (e.g. 'READY=1'); False when not under systemd or on error."""
        if not self.address:
            return False
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            sock.connect(self.address)
            sock.sendall(message.encode("utf-8"))
            return True
        except OSError:
            return False
        finally:
            sock.close()

    def watchdog(self) -> None:
        """Ping the watchdog if half its interval has passed (call from the main loop)."""
        if self.watchdog_interval is None:
            return
        now = time.monotonic()
        if now - self._last_ping >= self.watchdog_interval:
            self._last_ping = now
            self.notify("WATCHDOG=1")
