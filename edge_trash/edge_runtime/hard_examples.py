"""The hard-example queue: frames worth relabeling, saved with their detections under a disk quota.

A frame is saved when its best detection score lies in the uncertainty ``band`` or when a decided
track's votes disagree (agreement below ``min_agreement``). Images are JPEG when Pillow is
importable, else binary PPM (numpy only); each has a JSON sidecar with the detections in pixels.
When the quota is exceeded the oldest examples are deleted. ``edge-trash queue export`` (host)
turns the directory into COCO for relabeling.

Examples are named after the frame sequence number (``000000000042.jpg`` + ``.json``); a name
already taken (a run on a fresh event log numbers frames from 0 again) gets a ``-1``, ``-2``...
suffix, so nothing is ever overwritten. A failed save (disk full, the folder removed after an
export) costs that one example: it is counted in ``failed``, logged (rate-limited), its
half-written files are removed, the folder and ``labels.json`` are re-created when gone, and the
writer thread goes on.
"""

import collections
import importlib.util
import json
import logging
import os
import re
import threading
import time
from typing import Optional, Sequence, Tuple

import numpy as np

from edge_trash.edge_runtime.geometry import Detection
from edge_trash.edge_runtime.files import write_atomically
from edge_trash.edge_runtime.sources import ppm_bytes

LABELS_FILE = "labels.json"
_EXAMPLE_STEM = re.compile(r"^\d{12}(-\d+)?$")  # the names this queue gives its examples
# the image names the queue's readers take from a sidecar (the page serves them, the export converts them)
QUEUE_FILE_RE = re.compile(r"^[A-Za-z0-9_-]+\.(jpg|jpeg|png|ppm)$")
IMAGE_EXTENSIONS = (".jpg", ".ppm")  # what this queue writes
FAILURE_LOG_INTERVAL_S = 60.0  # at most one warning a minute while saves keep failing
LOG = logging.getLogger(__name__)


def _remove(path: str) -> None:
    """Delete ``path`` if it is still there (a file that cannot be deleted is left)."""
    try:
        os.unlink(path)
    except OSError:
        pass


def _stem(name: str) -> str:
    """``000000000042-1`` for ``000000000042-1.jpg`` (stems never contain a dot)."""
    return name.split(".", 1)[0]


class HardExampleQueue:
    """Saves hard examples into ``directory`` (created), at most one per ``min_interval_s``."""

    def __init__(self, directory: str, labels: Sequence[str], band: Tuple[float, float] = (0.3, 0.6),
                 min_agreement: float = 0.8, quota_bytes: int = 200 * 1024 * 1024, min_interval_s: float = 1.0,
                 use_pillow: Optional[bool] = None):
        self.directory = directory
        self.band = band
        self.min_agreement = min_agreement
        self.quota_bytes = int(quota_bytes)
        self.min_interval_s = min_interval_s
        self.labels = list(labels)
        self.saved = 0
        self.evicted = 0
        self.skipped = 0
        self.failed = 0  # saves that raised (disk full, folder removed): each cost one example, not the queue
        self._failures_unlogged = 0
        self._last_failure_log = -1e18
        self._last = -1e18
        self._writer = None  # type: Optional[threading.Thread]
        self._pending = collections.deque()
        self._cond = threading.Condition()
        self._stopping = False
        if not os.path.isdir(directory):
            os.makedirs(directory)
        if use_pillow is None:
            use_pillow = importlib.util.find_spec("PIL") is not None  # optional: PNG crops when present
        self.use_pillow = use_pillow
        self._write_labels()
        self._entries = collections.OrderedDict()  # type: Dict[str, int]  # name stem -> bytes, oldest first
        self._bytes = 0
        self._rescan()

    def _write_labels(self) -> None:
        write_atomically(os.path.join(self.directory, LABELS_FILE), json.dumps(self.labels).encode("utf-8"))

    def _rescan(self) -> None:
        """Rebuild the bookkeeping from the folder: one entry per sidecar (with the bytes of every file
        of its stem), oldest first by the sidecar's modification time; files already gone are not counted.
        An image whose sidecar is gone (a power cut as the quota removed the two) is an entry too, the oldest:
        the quota counts it and removes it first."""
        try:
            names = os.listdir(self.directory)
        except FileNotFoundError:
            names = []
        sizes = collections.defaultdict(int)  # type: Dict[str, int]
        ages = {}  # type: Dict[str, float]
        for name in names:
            if name.startswith(".") or name == LABELS_FILE:
                continue
            try:
                st = os.stat(os.path.join(self.directory, name))
            except OSError:  # removed while listing
                continue
            sizes[_stem(name)] += st.st_size
            if name.endswith(".json"):
                ages[_stem(name)] = st.st_mtime
        for name in names:  # an image of ours without its sidecar: nothing names it, so it goes first
            stem = _stem(name)
            if stem not in ages and name.endswith(IMAGE_EXTENSIONS) and _EXAMPLE_STEM.match(stem):
                ages[stem] = -1.0
        order = sorted(ages, key=lambda stem: (ages[stem], stem))
        self._entries = collections.OrderedDict((stem, sizes[stem]) for stem in order)
        self._bytes = sum(self._entries.values())

    def _ensure_folder(self) -> None:
        """Re-create the folder and ``labels.json`` when they were removed (an operator clearing the queue
        after an export) and forget the examples that went with them."""
        if os.path.isfile(os.path.join(self.directory, LABELS_FILE)):
            return
        gone = not os.path.isdir(self.directory)
        if gone:
            os.makedirs(self.directory, exist_ok=True)
        self._write_labels()
        self._rescan()
        LOG.warning("hard-example queue %s: %s was removed; re-created it (%d examples left on disk)",
                    self.directory, "the folder" if gone else LABELS_FILE, len(self._entries))

    def _free_stem(self, seq: int) -> str:
        """``%012d`` of ``seq``, or with the first ``-N`` suffix no example uses yet (never overwrite)."""
        base = stem = "%012d" % seq
        n = 0
        while stem in self._entries or any(os.path.lexists(os.path.join(self.directory, stem + ext))
                                           for ext in (".json",) + IMAGE_EXTENSIONS):
            n += 1
            stem = "%s-%d" % (base, n)
        return stem

    def reason_for(self, detections: Sequence[Detection], agreement: Optional[float] = None) -> Optional[str]:
        """Why this frame is hard ('uncertain' / 'votes_disagree'), or None."""
        if agreement is not None and agreement < self.min_agreement:
            return "votes_disagree"
        if detections:
            best = max(d.score for d in detections)
            if self.band[0] <= best <= self.band[1]:
                return "uncertain"
        return None

    def maybe_save(self, image: np.ndarray, seq: int, detections: Sequence[Detection],
                   agreement: Optional[float] = None, now: Optional[float] = None) -> Optional[str]:
        """Save the frame if it is hard and the rate limit allows; returns the sidecar path (None when
        not saved; a failed save is counted in ``failed`` and logged, never raised).

        With ``start_writer()`` running, the encoding and writing happen in that thread (the frame
        must not be modified afterwards) and the intended path is returned before the file exists
        (the file gets a ``-N`` suffix when an earlier example has that name)."""
        reason = self.reason_for(detections, agreement)
        tick = time.monotonic() if now is None else now  # the rate limit: a wall-clock step must not stop it
        if reason is None or tick - self._last < self.min_interval_s:
            return None
        self._last = tick
        now = time.time() if now is None else now  # the record's time, for people
        if self._writer is not None:
            with self._cond:
                if len(self._pending) >= 4:  # the disk is slower than the rate limit: skip, counted
                    self.skipped += 1
                    return None
                self._pending.append((image, seq, list(detections), agreement, now, reason))
                self._cond.notify()
            return os.path.join(self.directory, "%012d.json" % seq)
        return self._save_or_count(image, seq, detections, agreement, now, reason)

    def start_writer(self) -> None:
        """Encode and write hard examples in a background thread (keeps JPEG encoding off the loop)."""
        def run():
            while True:
                with self._cond:
                    while not self._pending and not self._stopping:
                        self._cond.wait(0.5)
                    if not self._pending and self._stopping:
                        return
                    item = self._pending.popleft()
                self._save_or_count(*item)  # never raises: one failed example does not end the queue
        self._writer = threading.Thread(target=run, name="hard-examples", daemon=True)
        self._writer.start()

    def close(self) -> None:
        """Write what is pending and stop the writer thread."""
        if self._writer is not None:
            with self._cond:
                self._stopping = True
                self._cond.notify()
            self._writer.join(10.0)
            self._writer = None

    def _save_or_count(self, image: np.ndarray, seq: int, detections: Sequence[Detection],
                       agreement: Optional[float], now: float, reason: str) -> Optional[str]:
        """``_save``; a failure is counted, logged (at most once a minute) and returns None."""
        try:
            path = self._save(image, seq, detections, agreement, now, reason)
        except Exception as exc:  # OSError mostly (disk full, folder removed); also an encoder error
            self.failed += 1
            self._failures_unlogged += 1
            clock = time.monotonic()
            if clock - self._last_failure_log >= FAILURE_LOG_INTERVAL_S:
                LOG.warning("hard-example queue %s: could not save frame %d (%s: %s); %d example(s) lost since the "
                            "last report, %d in all; the service goes on: free space on that disk or lower "
                            "hard_examples.quota_mb in sort.yaml", self.directory, seq, type(exc).__name__, exc,
                            self._failures_unlogged, self.failed)
                self._last_failure_log = clock
                self._failures_unlogged = 0
            try:  # files may have vanished under us: make the bookkeeping match the disk again
                self._rescan()
            except OSError:
                pass
            return None
        if self._failures_unlogged:
            LOG.warning("hard-example queue %s: saving works again (%d more example(s) lost, %d in all)",
                        self.directory, self._failures_unlogged, self.failed)
            self._failures_unlogged = 0
            self._last_failure_log = -1e18
        return path

    def _save(self, image: np.ndarray, seq: int, detections: Sequence[Detection], agreement: Optional[float],
              now: float, reason: str) -> str:
        self._ensure_folder()
        stem = self._free_stem(seq)
        if self.use_pillow:
            import io
            from PIL import Image
            buf = io.BytesIO()
            Image.fromarray(image).save(buf, format="JPEG", quality=92)
            image_name, data = stem + ".jpg", buf.getvalue()
        else:  # binary PPM
            image_name, data = stem + ".ppm", ppm_bytes(image)
        record = {"seq": seq, "t": now, "file": image_name, "width": int(image.shape[1]),
                  "height": int(image.shape[0]), "reason": reason,
                  "agreement": agreement, "best_score": max([d.score for d in detections] or [0.0]),
                  "detections": [d.to_dict() for d in detections]}
        side = json.dumps(record, sort_keys=True).encode("utf-8")
        image_path = os.path.join(self.directory, image_name)
        sidecar = os.path.join(self.directory, stem + ".json")
        write_atomically(image_path, data)
        try:
            write_atomically(sidecar, side)  # last: a sidecar always names a complete image
        except BaseException:
            _remove(image_path)
            raise
        self._entries[stem] = len(data) + len(side)
        self._bytes += len(data) + len(side)
        self.saved += 1
        self._enforce_quota()
        return sidecar

    def _enforce_quota(self) -> None:
        """Delete the oldest examples until the queue fits ``quota_bytes``. An entry whose files are
        already gone (removed by hand) is not counted as evicted; the folder is re-read then, so the
        byte count matches the disk again."""
        names = None  # type: Optional[Dict[str, List[str]]]
        rescanned = False
        while self._bytes > self.quota_bytes and self._entries:
            if names is None:
                names = collections.defaultdict(list)
                for name in os.listdir(self.directory):
                    if not name.startswith(".") and name != LABELS_FILE:
                        names[_stem(name)].append(name)
            stem, size = self._entries.popitem(last=False)
            self._bytes -= size
            files = names.pop(stem, [])
            for name in sorted(files, key=lambda n: not n.endswith(".json")):  # the sidecar first: it names the image
                # (a copy taken meanwhile finds an image without its sidecar, which an export skips and lists)
                _remove(os.path.join(self.directory, name))
            if files:
                self.evicted += 1
            elif not rescanned:  # its files vanished under us (so may others'): count what is really there
                self._rescan()
                names, rescanned = None, True

    @property
    def bytes_used(self) -> int:
        """Bytes of images + sidecars currently in the queue."""
        return self._bytes
