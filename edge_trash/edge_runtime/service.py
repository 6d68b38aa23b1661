"""The sort service: capture -> pre-process -> invoke -> decode -> track -> decide -> actuate -> log.

``SortLoop`` receives every collaborator and a stop event (Frigate style), so tests pass fakes.
``build_service`` wires the real ones from a bundle and sort.yaml; ``run_service`` runs it until
the source ends, ``max_frames`` or SIGTERM/SIGINT/SIGHUP, then finishes pending actuations and flushes the log.
"""

import errno
import logging
import os
import signal
import sqlite3
import threading
import time
from typing import Callable, Dict, List, Optional

from edge_trash.edge_runtime import manifest as manifest_lib
from edge_trash.edge_runtime.actuators import LATE_TOLERANCE_S, ActuationScheduler, build_actuator
from edge_trash.edge_runtime.decode import one_box_per_item, OutputReader, Preprocessor, decode_detections
from edge_trash.edge_runtime.eventlog import EventLog, LogInUseError, is_disk_error, write_error_fix
from edge_trash.edge_runtime.hard_examples import HardExampleQueue
from edge_trash.edge_runtime.health import HealthServer, Stats, SystemdNotifier, health_problems
from edge_trash.edge_runtime.interpreter import describe_input, load_interpreter
from edge_trash.edge_runtime.live_view import LiveView
from edge_trash.edge_runtime.operator_page import OperatorPage
from edge_trash.edge_runtime.policy import decide
from edge_trash.edge_runtime.queue_export import build_queue_coco
from edge_trash.edge_runtime.sort_config import ConfigError, SortConfig, load_sort_config, mapping_gaps_warning
from edge_trash.edge_runtime.sources import FrameCapture, FrameSource, open_source
from edge_trash.edge_runtime.tracker import IoUTracker, TriggerLine

LOG = logging.getLogger(__name__)
# No frame through inference for this long (the camera stalled or unplugged, every read or every inference failing:
# a failed Edge TPU) ends the run with exit 1, so systemd restarts the service and the operator sees why.
SENSE_STALL_S = 30.0


class ResourceError(Exception):
    """A folder, disk or port the service could not get at start: unlike a configuration error, a restart
    may find it there (space freed, the old process gone), so systemd keeps restarting on it."""


def _unwritable(what: str, path: str, setting: str, exc: BaseException) -> str:
    """The message for a log or queue the service cannot create: the path, why, and the two fixes."""
    reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
    if is_disk_error(exc):
        return ("cannot open %s at %s (%s): free space on its disk (`df -h %s`), or set %s to a folder on "
                "another disk" % (what, path, reason, os.path.dirname(os.path.abspath(path)), setting))
    if getattr(exc, "errno", None) in (errno.EEXIST, errno.ENOTDIR):  # a file where a folder of the path goes
        return ("cannot open %s at %s (%s): a file stands where a folder of that path should be; set %s to a "
                "path whose folders are folders" % (what, path, reason, setting))
    return ("cannot open %s at %s (%s): run the service as a user that can write there (install.sh makes "
            "/var/lib/edge-trash for its edge-trash user), or set %s to a folder this user can write"
            % (what, path, reason, setting))


class Detector:
    """Runs one frame through an allocated interpreter and returns ``Detection``s in frame pixels."""

    def __init__(self, interpreter, labels, score_threshold: float, resize: str = "stretch"):
        self.interpreter = interpreter
        self.labels = list(labels)
        self.score_threshold = score_threshold
        detail = interpreter.get_input_details()[0]
        _, height, width, _ = [int(v) for v in detail["shape"]]
        self.input_index = int(detail["index"])
        self.preprocessor = Preprocessor(height, width, resize)
        self.reader = OutputReader(interpreter)
        self.last_invoke_ms = 0.0
        self.last_invoke_cpu_ms = 0.0  # CPU time of the calling thread inside invoke()

    def detect(self, image, prepared=None):
        """Detections for one HxWx3 uint8 RGB frame; ``last_invoke_ms`` holds the invoke() time.
        ``prepared`` = ``preprocessor.make_input(image)`` when done ahead (in the capture thread)."""
        tensor, mapping = prepared if prepared is not None else (self.preprocessor(image), self.preprocessor)
        self.interpreter.set_tensor(self.input_index, tensor)
        t0, c0 = time.perf_counter(), time.thread_time()
        self.interpreter.invoke()
        self.last_invoke_ms = (time.perf_counter() - t0) * 1000.0
        self.last_invoke_cpu_ms = (time.thread_time() - c0) * 1000.0
        count, scores, classes, boxes = self.reader.read()
        return one_box_per_item(decode_detections(count, scores, classes, boxes, self.labels, mapping,
                                                  self.score_threshold))


class SortLoop:
    """The main loop. Collaborators are injected; ``run(stop_event)`` returns a summary dict."""

    def __init__(self, capture: FrameCapture, detector: Detector, tracker: IoUTracker, config: SortConfig,
                 scheduler: ActuationScheduler, log: EventLog, stats: Stats,
                 hard_examples: Optional[HardExampleQueue] = None, notifier: Optional[SystemdNotifier] = None,
                 clock: Callable[[], float] = time.monotonic, live: Optional[LiveView] = None,
                 sense_stall_s: Optional[float] = None):
        self.live = live  # the operator page's view: references and small crops only, never encoding
        self.capture = capture
        self.detector = detector
        self.tracker = tracker
        self.config = config
        self.scheduler = scheduler
        self.log = log
        self.stats = stats
        self.hard_examples = hard_examples
        self.notifier = notifier or SystemdNotifier({})
        self.clock = clock  # the frames' clock (monotonic): the log gets wall times
        self.decisions = 0
        self._stall_reported = False
        self.sense_stall_s = SENSE_STALL_S if sense_stall_s is None else sense_stall_s
        self._last_sensed = None  # type: Optional[float]  when inference last succeeded (the loop's clock)
        self._last_failure = ""  # why the last frame failed (a read or inference error), for the stall message
        self.stalled = None  # type: Optional[str]  why the run ended without frames, or None
        self.health_address = None  # (host, port) when build_service started the endpoint

    @property
    def log_errors(self) -> int:
        """Event-log writes that failed (disk full, database locked) while the sorting went on."""
        return self.stats.counters["log_errors"]

    def _logged(self, write: Callable, *args, **kwargs):
        """``write(*args, **kwargs)`` on the event log; a failed write (sqlite3.Error: disk full, database
        locked) is counted and logged, never raised: the sorting goes on without its record. (Frame rows need
        no guard: ``log.frame`` only buffers them.)"""
        try:
            return write(*args, **kwargs)
        except sqlite3.Error as exc:
            self.stats.count("log_errors")
            if self.log_errors == 1 or self.log_errors % 1000 == 0:
                LOG.error("event log %s: %s failed: %s (%d failed writes so far); sorting goes on without "
                          "the record: %s", self.log.path, getattr(write, "__name__", write),
                          exc, self.log_errors, write_error_fix(exc, self.log.path))
            return None

    def _log_dropped(self, seqs: List[int], note: str) -> None:
        for seq in seqs:
            self.log.frame(seq, "dropped", note=note)
        if seqs:
            self.stats.count("dropped", len(seqs))

    def _log_undecided(self, track, reason: str) -> None:
        self._logged(self.log.undecided_track, track.id, track.first_seq, track.last_seq, track.hits, reason,
                     track.votes_dict())
        self.stats.count("undecided_" + reason)
        if reason == "passed_unsorted":
            # An item went past the trigger without a decision (first seen there, its track lost while it
            # crossed, or seen in fewer than tracker.min_hits frames): the operator must know.
            self.stats.count("faults")
            message = "track %d (%s, %d frame%s, seq %d..%d, last box %s) passed the trigger line without a " \
                      "decision" % (track.id, track.labels.get(track.leader), track.hits,
                                    "" if track.hits == 1 else "s", track.first_seq, track.last_seq,
                                    [round(v, 1) for v in track.bbox])
            seen = self.stats.counters.get("processed", 0)
            dropped = self.stats.counters.get("dropped", 0)
            if track.crossed_t is not None and track.hits < self.tracker.min_hits:
                message += ("; it crossed the line but was seen in %d frame%s, fewer than tracker.min_hits (%d) "
                            "needs for a decision: lower tracker.min_hits if this was a real item (it is there to "
                            "ignore a glint seen once or twice)" % (track.hits, "" if track.hits == 1 else "s",
                                                                     self.tracker.min_hits))
            elif seen and dropped >= seen:  # inference keeps up with fewer than half the camera's frames
                message += ("; inference runs on about 1 in %d camera frames, so an item that moves more than "
                            "tracker.max_distance (%g) of its size between two of them starts a new track: raise "
                            "tracker.max_distance"
                            % (round((seen + dropped) / float(seen)), self.tracker.max_distance))
            self._logged(self.log.fault, "unsorted_item", message, track.first_seq)

    def _process(self, frame) -> None:
        start, cpu_start = time.perf_counter(), time.thread_time()
        to_wall = time.time() - self.clock()  # the loop's monotonic clock -> wall time, for the log rows
        if frame.error is not None:
            self.log.frame(frame.seq, "read_error", t=frame.t + to_wall, note=frame.error[:500])
            self.stats.count("read_error")
            self._logged(self.log.fault, "read_error", frame.error, frame.seq)
            self._last_failure = "the last frame could not be read: %s" % frame.error
            return
        try:
            detections = self.detector.detect(frame.image, frame.prepared)
        except Exception as exc:  # a failed inference costs one frame, not the service
            message = "inference failed on frame %d: %s: %s" % (frame.seq, type(exc).__name__, exc)
            self.log.frame(frame.seq, "inference_error", t=frame.t + to_wall, note=message[:500])
            self.stats.count("inference_error")
            self._logged(self.log.fault, "inference", message, frame.seq)
            self._last_failure = message
            return
        self._last_sensed = self.clock()
        self._last_failure = ""  # a frame went through: an earlier failure is no longer why frames stop
        infer_ms = self.detector.last_invoke_ms
        height, width = frame.image.shape[:2]
        update = self.tracker.update(detections, frame.seq, frame.t, width, height)
        if self.live is not None:
            self.live.update(frame.seq, frame.image, update.matched)
        for track, reason in update.expired:
            self._log_undecided(track, reason)
        now = self.clock()  # the decision's time (after inference and tracking)
        rows, decisions = [], []
        for track in update.ready:
            # the travel delay counts from when the item was ON the line (interpolated between frames,
            # so a late or dropped frame does not delay the actuator), never from before the decision
            base = min(track.crossed_t, now) if track.crossed_t is not None else now
            decision = decide(track, self.config)
            decisions.append(decision)
            rows.append({"track_id": track.id, "seq": frame.seq, "t_first": track.first_t + to_wall,
                         "t_decided": now + to_wall, "class_id": decision.class_id, "label": decision.label,
                         "score": round(decision.confidence, 4), "agreement": round(decision.agreement, 4),
                         "votes": track.votes_dict(), "bin": decision.bin, "reason": decision.reason,
                         "bbox": track.bbox.to_list(), "due": base + self.config.travel_delay_s + to_wall})
        e2e_ms = (self.clock() - frame.t) * 1000.0
        self.log.frame(frame.seq, "processed", t=frame.t + to_wall, detections=len(detections),
                       infer_ms=round(infer_ms, 3), e2e_ms=round(e2e_ms, 3))
        if rows:
            ids = self._logged(self.log.record_decisions, rows)  # durable before anything moves
            if ids is None:  # the log cannot take them: the items still move, under refs the log never had
                ids = [-(self.decisions + k + 1) for k in range(len(rows))]
            for ref, row in zip(ids, rows):  # the scheduler runs on the monotonic clock
                self.scheduler.schedule(ref, row["bin"], row["due"] - to_wall, row["t_first"] - to_wall)
                if self.live is not None:
                    self.live.decided(ref, frame.image, row["bbox"])
            self.decisions += len(rows)
            self.stats.count("decisions", len(rows))
        if self.hard_examples is not None:
            agreement = min([d.agreement for d in decisions] or [1.0])
            if self.hard_examples.maybe_save(frame.image, frame.seq, detections,
                                             agreement if decisions else None):
                self.stats.count("hard_examples")
        self._logged(self.log.maybe_commit)
        work_ms = (time.perf_counter() - start) * 1000.0 - infer_ms
        # CPU time of this thread outside invoke(): the work itself, without waiting for a busy CPU
        work_cpu_ms = (time.thread_time() - cpu_start) * 1000.0 - self.detector.last_invoke_cpu_ms
        self.stats.frame(infer_ms, e2e_ms, work_ms, work_cpu_ms, frame.prep_ms)

    def run(self, stop_event: threading.Event) -> Dict:
        """Start capturing, then process frames until the source ends or ``stop_event`` is set."""
        self.capture.start()
        self.notifier.notify("READY=1")
        self._last_sensed = self.clock()
        while not stop_event.is_set():
            frame, dropped = self.capture.get(0.2)
            self._log_dropped(dropped, "inference fell behind the camera")
            self._watchdog()
            if frame is None:
                if self.capture.done:
                    break
            else:
                self._process(frame)
            if self._sensing_stalled():
                break
        self.notifier.notify("STOPPING=1")
        self._log_dropped(self.capture.stop(), "queued when the service stopped")
        if self.capture.error:
            self._logged(self.log.fault, "source", self.capture.error)
        for track, reason in self.tracker.flush():
            self._log_undecided(track, reason)
        self._logged(self.log.commit)
        self.scheduler.stop()
        self._logged(self.log.commit)
        return {"decisions": self.decisions, "source_error": self.capture.error, "stalled": self.stalled,
                **self.stats.snapshot()}

    def _sensing_stalled(self) -> bool:
        """True (after logging the fault) when no frame has gone through inference for ``sense_stall_s``: the items
        passing meanwhile are not seen at all, so the run ends (exit 1) rather than run on blind; under systemd
        the service restarts, which reopens the camera and reloads the Edge TPU."""
        since = self.clock() - self._last_sensed  # set when run() starts
        if since <= self.sense_stall_s:
            return False
        why = self._last_failure or "no frame has come from %s" % self.capture.source.description
        self.stalled = ("no frame went through inference for %.0f s (%s); items passing now are not seen, so the "
                        "service stops (exit 1) and systemd restarts it; if it keeps stopping, check the camera's "
                        "cable and the Edge TPU (`ls /dev/apex_0`), and `journalctl -u edge-trash`"
                        % (since, why))
        LOG.error("%s", self.stalled)
        self.stats.count("faults")
        self._logged(self.log.fault, "stalled", self.stalled)
        return True

    def _watchdog(self) -> None:
        """Ping systemd's watchdog unless actuations have stopped: then systemd restarts the service (the
        log's pending decisions are recovered), and the fault says why."""
        problem = self.scheduler.stalled()
        if problem is None:
            self._stall_reported = False
            self.notifier.watchdog()
            return
        if not self._stall_reported:
            self._stall_reported = True
            self.stats.count("faults")
            message = ("actuations stopped: %s; the watchdog is no longer fed, so systemd restarts the service (run "
                       "by hand: restart it)" % problem)
            LOG.error("%s", message)
            self._logged(self.log.fault, "actuator", message)


def build_service(bundle: str, config_path: Optional[str], source_spec: str, log_path: Optional[str] = None,
                  max_frames: Optional[int] = None, interpreter_loader: Optional[Callable] = None,
                  device: Optional[str] = None, health: bool = True, queue_size: int = 2,
                  source: Optional[FrameSource] = None):
    """Wire a ``SortLoop`` from a bundle directory. Returns (loop, cleanup callable).

    ``interpreter_loader(cpu_model, edgetpu_model, device)`` -> ``LoadedInterpreter`` can be
    injected (tests); the default is ``interpreter.load_interpreter``. ``source`` (a
    ``FrameSource``) replaces ``source_spec`` when given (benchmarks, tests).
    """
    # the bundle first (every file against its manifest): a half-copied model or labels.txt is named as such, a
    # configuration error (exit 78), not met as a load failure
    verified = manifest_lib.verify_bundle(bundle)
    labels = verified["labels"]
    config = load_sort_config(config_path or os.path.join(bundle, manifest_lib.SORT_CONFIG), labels)
    # the log (and its lock) before the model, the camera and the actuator: a second service on the log of a
    # running one stops here, before it touches the TPU, the camera or the actuator the first one drives
    where = log_path or config.log_path or os.path.join(bundle, "events.sqlite")
    if os.path.isdir(where):  # no restart mends it: exit 78, naming the setting
        raise ConfigError("the event log %s is a folder (%s): give a file in it, e.g. %s"
                          % (where, "--log" if log_path else "log.path in sort.yaml" if config.log_path else "the bundle",
                             os.path.join(where, "events.sqlite")))
    try:
        log = EventLog(where, max_frame_rows=config.log_max_frame_rows, max_event_rows=config.log_max_event_rows)
    except LogInUseError as exc:  # another service runs on this log: exit 1, retried (it may stop)
        raise ResourceError(str(exc)) from None
    except (OSError, sqlite3.Error) as exc:  # the lock file beside the log named when it is the one refused
        lock = getattr(exc, "filename", None)
        raise ResourceError(_unwritable("the event log", lock if lock == where + ".lock" else where,
                                        "--log, or log.path in sort.yaml", exc)) from None
    closers = [log.close]  # undone in reverse order on failure or by cleanup()

    def cleanup():
        while closers:
            closers.pop()()

    try:
        loader = interpreter_loader or (lambda cpu, tpu, dev: load_interpreter(cpu, tpu, dev))
        loaded = loader(os.path.join(bundle, manifest_lib.CPU_MODEL),
                        os.path.join(bundle, manifest_lib.EDGETPU_MODEL), device)
        model_input = describe_input(loaded.interpreter)
        shape = model_input["shape"]
        if model_input["dtype"] != "uint8" or len(shape) != 4 or shape[0] != 1 or shape[3] != 3:
            raise manifest_lib.BundleError(
                "%s takes a %s %s input; the service feeds [1, H, W, 3] uint8 camera frames. Export the model "
                "with a uint8 input (`edge-trash export`, the default)" % (loaded.model_path, model_input["dtype"],
                                                                          shape))
        manifest_lib.check_model_input(verified, model_input)
        for name in verified["modified_config"]:
            LOG.info("%s was edited or removed after export (expected for sort.yaml)", name)
        stats = Stats()
        stats.accelerator, stats.warning = loaded.accelerator, loaded.warning
        source = source if source is not None else open_source(source_spec)
        actuator = build_actuator(config.actuator)
        actuator.open()
        closers.append(actuator.close)
        start_seq = log.next_seq()
        tracker = IoUTracker(config.mode, TriggerLine(config.trigger_axis, config.trigger_position,
                                                      config.trigger_direction),
                             config.tracker_iou, config.tracker_max_distance, config.tracker_max_age,
                             config.tracker_min_hits, config.stable_frames)
        detector = Detector(loaded.interpreter, labels, config.score_threshold, config.resize)
        # Replayed files resume at the next unlogged frame; a camera just continues the numbering. The
        # capture thread also resizes each frame, overlapping the previous frame's invoke().
        capture = FrameCapture(source, start_seq=start_seq, queue_size=queue_size, max_frames=max_frames,
                               prepare=detector.preprocessor.make_input)

        def on_fault(kind, message, ref):
            stats.count("faults")
            log.fault(kind, message, None, ref)

        scheduler = ActuationScheduler(actuator, log, config.fail_safe_bin, config.actuator_retries,
                                       config.actuator_retry_delay_s, on_fault, stats.actuated,
                                       # a live conveyor only: a replayed file's clock is not the belt's
                                       late_tolerance_s=LATE_TOLERANCE_S if config.mode == "conveyor" and
                                       source.live else None)
        hard = None
        if config.hard_dir:
            try:
                hard = HardExampleQueue(config.hard_dir, labels, config.hard_band, config.hard_min_agreement,
                                        int(config.hard_quota_mb * 1024 * 1024), config.hard_min_interval_s)
            except OSError as exc:
                raise ResourceError(_unwritable("the hard-example queue", config.hard_dir,
                                                "hard_examples.dir in sort.yaml", exc)) from None
            hard.start_writer()
            closers.append(hard.close)
        server = None
        live = None
        if health and config.health_enabled:
            def status():
                snap = stats.snapshot()
                snap["recent_faults"] = log.recent_faults(10)
                snap["pending_actuations"] = scheduler.pending()
                # what the service kept going through: late actuations not fired, records the disk refused
                snap["actuations_missed_late"] = scheduler.missed
                snap["actuation_log_errors"] = scheduler.journal_errors
                snap["log_frames_lost"] = log.frames_lost
                snap["log_records_lost"] = log.records_lost  # refused since the last record written
                if hard is not None:
                    snap["hard_examples_failed"] = hard.failed
                snap["problems"] = health_problems(snap, scheduler.stalled(), scheduler.failing())
                snap["ok"] = not snap["problems"]  # /health answers 503 while it is false
                return snap
            live = LiveView({"axis": config.trigger_axis, "position": config.trigger_position,
                             "direction": config.trigger_direction}, loaded.accelerator)
            page = OperatorPage(status, live, log.path, config.hard_dir, config.health_token,
                                moved_per_bin=stats.per_bin,
                                queue_to_coco=lambda d: build_queue_coco(d, names_in_queue=True)[0])
            try:
                server = HealthServer(status, config.health_host, config.health_port, router=page.handle)
            except OSError as exc:
                raise ResourceError("%s: health: cannot listen on %s:%d (%s); choose another health.port or set "
                                    "health.enabled to false" % (config.source, config.health_host,
                                                                 config.health_port, exc))
            server.start()
            closers.append(server.stop)
            LOG.info("operator page at http://%s:%d/ (JSON status at /health)", *server.address[:2])
        # Nothing can fail from here on: record the run and start the background threads.
        log.start_run(source.description, loaded.accelerator, start_seq)
        if log.moved_aside:  # a corrupt log was kept aside and a fresh one started
            on_fault("event_log", "%s could not be read (corrupt); it was moved to %s and a new log started"
                     % (log.path, log.moved_aside), None)
        # decisions the previous run left unfinished (after a crash); none due later than a decision can be
        resumable = log.recover(LATE_TOLERANCE_S, max_ahead_s=config.travel_delay_s + LATE_TOLERANCE_S)
        if loaded.warning:
            on_fault("accelerator", loaded.warning, None)
        if os.path.basename(loaded.model_path) not in verified["files"]:  # compiled by hand after the export
            unchecked = ("%s is not in the bundle's manifest (compiled after the export?), so nothing checked it: "
                         "rerun `edge-trash export --edgetpu --compiler PATH` so the manifest covers it"
                         % loaded.model_path)
            LOG.warning("%s", unchecked)
            on_fault("bundle", unchecked, None)
        gaps = mapping_gaps_warning(config)
        if gaps:  # a class sort.yaml leaves out (a retrained model's new class) is rejected item after item
            LOG.warning("%s", gaps)
            on_fault("sort_config", gaps, None)
        to_monotonic = time.monotonic() - time.time()  # the log keeps wall times
        for ref, bin_name, due, t_first in resumable:
            scheduler.schedule(ref, bin_name, due + to_monotonic, t_first + to_monotonic)
        scheduler.start()
        closers.insert(2, scheduler.stop)  # after log.close and actuator.close: it stops before either closes
        log.start_flusher()
    except BaseException:
        cleanup()
        raise
    loop = SortLoop(capture, detector, tracker, config, scheduler, log, stats, hard, SystemdNotifier(), live=live)
    loop.health_address = server.address[:2] if server is not None else None
    return loop, cleanup


def run_service(bundle: str, config_path: Optional[str] = None, source_spec: str = "camera:0",
                log_path: Optional[str] = None, max_frames: Optional[int] = None,
                interpreter_loader: Optional[Callable] = None, device: Optional[str] = None,
                health: bool = True) -> Dict:
    """Run until the source ends, ``max_frames`` frames, or SIGTERM/SIGINT/SIGHUP. Returns the summary."""
    stop = threading.Event()

    def on_signal(signum, _frame):
        LOG.info("signal %d: finishing pending actuations and flushing the log", signum)
        stop.set()

    # SIGHUP too: a service started by hand whose terminal closes still fires what is pending (unless it
    # is ignored, as `nohup` does: then it keeps running, as asked)
    hup = getattr(signal, "SIGHUP", None)
    handled = [signal.SIGTERM, signal.SIGINT] + ([hup] if hup is not None and signal.getsignal(hup) is not
                                                 signal.SIG_IGN else [])
    previous = {s: signal.signal(s, on_signal) for s in handled}
    try:
        loop, cleanup = build_service(bundle, config_path, source_spec, log_path, max_frames,
                                      interpreter_loader, device, health)
        try:
            return loop.run(stop)
        finally:
            cleanup()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
