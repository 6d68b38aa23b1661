"""What the operator page shows live: the latest frame with its tracks, and decision thumbnails.

The sort loop calls :meth:`LiveView.update` once per frame and :meth:`LiveView.decided` once per
decision. Both only keep references or a small crop, so they cost the loop microseconds;
JPEG encoding happens later, in the web server's thread, and only when a page asks for it.
"""

import collections
import threading
from typing import Dict, Optional, Sequence, Tuple

import numpy as np

THUMB_MAX = 96  # pixels, long side of a decision thumbnail


class LiveView:
    """Thread-safe holder of the latest frame, its overlay, and recent decision crops."""

    def __init__(self, trigger: Optional[Dict] = None, accelerator: str = "unknown", max_thumbs: int = 64):
        self._lock = threading.Lock()
        self.trigger = dict(trigger or {})
        self.accelerator = accelerator
        self.seq = -1
        self.frame = None  # type: Optional[np.ndarray]
        self.overlay = []  # type: List[tuple]  (track id, Detection, decided)
        self._thumbs = collections.OrderedDict()  # type: collections.OrderedDict
        self._max_thumbs = max_thumbs
        self._jpeg_cache = (-1, 0, b"")  # (seq, max_width, bytes)

    def update(self, seq: int, frame: np.ndarray, matched: Sequence) -> None:
        """Record the frame just processed and its ``(Track, Detection)`` pairs (tracker's ``matched``).

        Only references are kept here (the loop's hot path); JSON is built when the page asks."""
        overlay = [(track.id, det, track.decided) for track, det in matched]
        with self._lock:
            self.seq, self.frame, self.overlay = seq, frame, overlay

    def decided(self, decision_id: int, frame: np.ndarray, box: Sequence[float]) -> None:
        """Keep a small crop of a decided item for the decision strip."""
        h, w = frame.shape[:2]
        x0, y0 = max(0, int(box[0])), max(0, int(box[1]))
        x1, y1 = min(w, int(np.ceil(box[2]))), min(h, int(np.ceil(box[3])))
        if x1 <= x0 or y1 <= y0:
            return
        crop = frame[y0:y1, x0:x1]
        step = max(1, int(np.ceil(max(crop.shape[:2]) / float(THUMB_MAX))))
        crop = np.ascontiguousarray(crop[::step, ::step])
        with self._lock:
            self._thumbs[int(decision_id)] = crop
            while len(self._thumbs) > self._max_thumbs:
                self._thumbs.popitem(last=False)

    def snapshot(self) -> Dict:
        """The overlay of the latest frame as JSON-ready data."""
        with self._lock:
            frame = self.frame
            overlay = list(self.overlay)
            tracks = [{"track_id": int(tid), "box": [round(float(v), 1) for v in det.bbox], "label": det.label,
                       "score": round(float(det.score), 3), "decided": bool(decided)}
                      for tid, det, decided in overlay]
            return {"seq": self.seq, "width": int(frame.shape[1]) if frame is not None else 0,
                    "height": int(frame.shape[0]) if frame is not None else 0, "tracks": tracks,
                    "trigger": self.trigger, "accelerator": self.accelerator}

    def frame_jpeg(self, encode, max_width: int = 640) -> Tuple[int, Optional[bytes]]:
        """``(seq, JPEG bytes)`` of the latest frame, encoded at most once per frame."""
        with self._lock:
            seq, frame = self.seq, self.frame
            cached = self._jpeg_cache
        if frame is None:
            return seq, None
        if cached[0] == seq and cached[1] == max_width:
            return seq, cached[2]
        step = max(1, int(np.ceil(frame.shape[1] / float(max_width))))
        data = encode(np.ascontiguousarray(frame[::step, ::step]))
        with self._lock:
            self._jpeg_cache = (seq, max_width, data)
        return seq, data

    def thumb(self, decision_id: int) -> Optional[np.ndarray]:
        """The crop kept for a decision, or None when it has aged out."""
        with self._lock:
            return self._thumbs.get(int(decision_id))
