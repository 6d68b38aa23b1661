"""The hard-example queue: frames worth relabeling, saved with their detections under a disk quota.

A frame is saved when its best detection score lies in the uncertainty ``band`` or when a decided
track's votes disagree (agreement below ``min_agreement``). Images are JPEG when Pillow is
importable, else binary PPM (numpy only); each has a JSON sidecar with the detections in pixels.
When the quota is exceeded the oldest examples are deleted. ``edge-trash queue export`` (host)
turns the directory into COCO for relabeling.
"""

import collections
import importlib.util
import json
import os
import tempfile
import threading
import time
from typing import List, Optional, Sequence, Tuple

import numpy as np

from edge_trash.edge_runtime.geometry import Detection
from edge_trash.edge_runtime.sources import write_ppm

LABELS_FILE = "labels.json"


def _atomic_write(path: str, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=os.path.dirname(path))
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


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
        self.saved = 0
        self.evicted = 0
        self.skipped = 0
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
        _atomic_write(os.path.join(directory, LABELS_FILE), json.dumps(list(labels)).encode("utf-8"))
        self._entries = self._scan()  # [(name stem, bytes)] oldest first
        self._bytes = sum(size for _, size in self._entries)

    def _scan(self) -> List[Tuple[str, int]]:
        entries = []
        for name in sorted(os.listdir(self.directory)):
            if name.endswith(".json") and name != LABELS_FILE:
                stem = name[:-5]
                size = sum(os.path.getsize(os.path.join(self.directory, n)) for n in os.listdir(self.directory)
                           if n.startswith(stem + "."))
                entries.append((stem, size))
        return entries

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
        """Save the frame if it is hard and the rate limit allows; returns the sidecar path.

        With ``start_writer()`` running, the encoding and writing happen in that thread (the frame
        must not be modified afterwards) and the path is returned before the file exists."""
        reason = self.reason_for(detections, agreement)
        now = time.time() if now is None else now
        if reason is None or now - self._last < self.min_interval_s:
            return None
        self._last = now
        if self._writer is not None:
            with self._cond:
                if len(self._pending) >= 4:  # the disk is slower than the rate limit: skip, counted
                    self.skipped += 1
                    return None
                self._pending.append((image, seq, list(detections), agreement, now, reason))
                self._cond.notify()
            return os.path.join(self.directory, "%012d.json" % seq)
        return self._save(image, seq, detections, agreement, now, reason)

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
                self._save(*item)
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

    def _save(self, image: np.ndarray, seq: int, detections: Sequence[Detection], agreement: Optional[float],
              now: float, reason: str) -> str:
        stem = "%012d" % seq
        if self.use_pillow:
            import io
            from PIL import Image
            buf = io.BytesIO()
            Image.fromarray(image).save(buf, format="JPEG", quality=92)
            image_name, data = stem + ".jpg", buf.getvalue()
        else:
            image_name = stem + ".ppm"
            tmp = os.path.join(self.directory, ".tmp-" + image_name)
            write_ppm(tmp, image)
            with open(tmp, "rb") as f:
                data = f.read()
            os.unlink(tmp)
        _atomic_write(os.path.join(self.directory, image_name), data)
        record = {"seq": seq, "t": now, "file": image_name, "width": int(image.shape[1]),
                  "height": int(image.shape[0]), "reason": reason,
                  "agreement": agreement, "best_score": max([d.score for d in detections] or [0.0]),
                  "detections": [d.to_dict() for d in detections]}
        side = json.dumps(record, sort_keys=True).encode("utf-8")
        sidecar = os.path.join(self.directory, stem + ".json")
        _atomic_write(sidecar, side)
        self._entries.append((stem, len(data) + len(side)))
        self._bytes += len(data) + len(side)
        self.saved += 1
        self._enforce_quota()
        return sidecar

    def _enforce_quota(self) -> None:
        while self._bytes > self.quota_bytes and self._entries:
            stem, size = self._entries.pop(0)
            for name in os.listdir(self.directory):
                if name.startswith(stem + "."):
                    os.unlink(os.path.join(self.directory, name))
            self._bytes -= size
            self.evicted += 1

    @property
    def bytes_used(self) -> int:
        """Bytes of images + sidecars currently in the queue."""
        return self._bytes
