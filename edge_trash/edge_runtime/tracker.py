"""IoU tracker with a score-weighted class vote per track and the decision triggers (numpy only).

One decision per item: in ``conveyor`` mode when the track's centre crosses the trigger line in
the direction of travel (once the track has ``min_hits`` detections: a track seen fewer times is not
decided); in ``platform`` mode after ``stable_frames`` consecutive frames with the same leading class.
Tracks that end without a decision are returned in ``expired`` with a reason (``too_brief`` when seen
fewer than ``min_hits`` frames; ``past_line_at_start`` for an item already past the line in the first
frames, sorted before a restart) so the caller logs them.

In ``platform`` mode a decided track only takes detections of the class it was decided as: the
actuator empties the platform, so a detection of another class where a decided item was is the next
item, and it gets a track (and a decision) of its own instead of vanishing into the decided one. Such a
track is decided only once the decided track at its place has expired (``max_age`` frames without its
class there): until then it may be the decided item misread, which must not be sorted twice.

``max_age`` counts the frames the tracker was given (the frames inference ran on), not camera frames: when
inference is slower than the camera (the CPU fallback, a busy board) the capture drops frames in between,
and a track must not expire merely because its item was not looked at. Matching across those gaps uses the
camera's frame numbers (``seq``): a track's box is moved by its velocity per camera frame.
"""

from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from edge_trash.edge_runtime.geometry import BBox, Detection

MODES = ("conveyor", "platform")
# Platform mode: a decided track is preferred for a detection of its class overlapping it this much.
OWN_IOU = 0.5


class TriggerLine:
    """A line across the frame at ``position`` (fraction of width for ``axis='x'``, of height for
    ``'y'``); items travel towards increasing (``direction=+1``) or decreasing (-1) coordinates."""

    def __init__(self, axis: str = "x", position: float = 0.5, direction: int = 1):
        if axis not in ("x", "y"):
            raise ValueError("trigger_line.axis must be 'x' or 'y', got %r" % (axis,))
        if not 0.0 <= position <= 1.0:
            raise ValueError("trigger_line.position must be a fraction of the frame in [0, 1], got %r" % (position,))
        if direction not in (1, -1):
            raise ValueError("trigger_line.direction must be 1 or -1, got %r" % (direction,))
        self.axis, self.position, self.direction = axis, float(position), int(direction)

    def coordinate(self, box: BBox, frame_w: int, frame_h: int) -> float:
        """Signed distance of the box centre past the line (> 0: past it), in fractions."""
        cx, cy = box.center
        value = cx / float(frame_w) if self.axis == "x" else cy / float(frame_h)
        return (value - self.position) * self.direction


class Track:
    """One tracked item: its last box, hits, and the score-weighted class votes."""

    def __init__(self, track_id: int, det: Detection, seq: int, t: float):
        self.id = track_id
        self.bbox = det.bbox
        self.first_seq = self.last_seq = seq
        self.first_t = self.last_t = t
        self.hits = 0
        self.votes = {}  # type: Dict[int, float]  class_id -> sum of scores
        self.counts = {}  # type: Dict[int, int]
        self.labels = {}  # type: Dict[int, str]
        self.max_score = 0.0
        self.leader = None  # type: Optional[int]
        self.leader_streak = 0
        self.side = None  # type: Optional[float]  last signed position w.r.t. the trigger line
        self.velocity = (0.0, 0.0)  # pixels per frame sequence number
        self.prev_t = t
        self.crossed_t = None  # type: Optional[float]  interpolated time the centre crossed the line
        self.decided = False
        self.last_update = 0  # the tracker's count of processed frames when this track was last matched
        self.first_update = 0  # ... when it was first seen
        self.first_side = None  # type: Optional[float]  its side of the trigger line when first seen
        self.add(det, seq, t)

    def add(self, det: Detection, seq: int, t: float) -> None:
        """Record one matched detection (and update the per-frame velocity estimate)."""
        if self.hits and seq > self.last_seq:
            (px, py), (cx, cy) = self.bbox.center, det.bbox.center
            gap = float(seq - self.last_seq)
            vx, vy = (cx - px) / gap, (cy - py) / gap
            # exponential smoothing; the first measured step replaces the zero prior
            a = 1.0 if self.hits == 1 else 0.5
            self.velocity = (a * vx + (1 - a) * self.velocity[0], a * vy + (1 - a) * self.velocity[1])
        self.prev_t = self.last_t
        self.bbox = det.bbox
        self.last_seq, self.last_t = seq, t
        self.hits += 1
        self.votes[det.class_id] = self.votes.get(det.class_id, 0.0) + det.score
        self.counts[det.class_id] = self.counts.get(det.class_id, 0) + 1
        self.labels[det.class_id] = det.label
        self.max_score = max(self.max_score, det.score)
        leader = self.vote_winner()[0]
        self.leader_streak = self.leader_streak + 1 if leader == self.leader else 1
        self.leader = leader

    def predicted(self, seq: int) -> BBox:
        """The box moved by the velocity estimate to frame ``seq`` (dropped frames in between)."""
        gap = seq - self.last_seq
        return self.bbox.translate(self.velocity[0] * gap, self.velocity[1] * gap)

    def vote_winner(self) -> Tuple[int, float, float]:
        """(class_id, confidence, agreement): the class with the highest score sum (ties: lower
        class id); confidence = its score sum / hits (disagreeing frames count as 0);
        agreement = its share of all score mass."""
        class_id = sorted(self.votes.items(), key=lambda kv: (-kv[1], kv[0]))[0][0]
        total = sum(self.votes.values())
        return class_id, self.votes[class_id] / max(self.hits, 1), self.votes[class_id] / total if total else 0.0

    def votes_dict(self) -> Dict[str, Dict[str, float]]:
        """Votes for the log: {label: {'score_sum': s, 'frames': n}}."""
        return {self.labels[c]: {"score_sum": round(s, 4), "frames": self.counts[c]} for c, s in self.votes.items()}


class TrackerUpdate:
    """What one frame changed: tracks ready for a decision, tracks that ended undecided."""

    def __init__(self):
        self.ready = []  # type: List[Track]
        self.expired = []  # type: List[Tuple[Track, str]]
        self.matched = []  # type: List[Tuple[Track, Detection]]


class IoUTracker:
    """Greedy IoU matching (with a centre-distance fallback for fast or sparsely sampled items)."""

    def __init__(self, mode: str = "conveyor", trigger: Optional[TriggerLine] = None,
                 iou_threshold: float = 0.2, max_distance: float = 1.0, max_age: int = 5,
                 min_hits: int = 3, stable_frames: int = 5):
        if mode not in MODES:
            raise ValueError("mode must be one of %s, got %r" % (", ".join(MODES), mode))
        self.mode = mode
        self.trigger = trigger or TriggerLine()
        self.iou_threshold = float(iou_threshold)
        self.max_distance = float(max_distance)
        self.max_age = int(max_age)
        self.min_hits = int(min_hits)
        self.stable_frames = int(stable_frames)
        self.tracks = []  # type: List[Track]
        self._next_id = 1
        self._updates = 0  # frames processed: what max_age counts

    def _match(self, detections: Sequence[Detection], seq: int) -> List[Tuple[int, int]]:
        """Greedy assignment, best IoU first (then nearest centre), over vectorized pair scores."""
        if not self.tracks or not detections:
            return []
        # predicted boxes: a conveyor moves at constant speed, so dropped frames do not lose items
        t = np.array([tr.predicted(seq) for tr in self.tracks], dtype=np.float64)  # [T,4] xmin,ymin,xmax,ymax
        d = np.array([det.bbox for det in detections], dtype=np.float64)  # [D,4]
        iw = np.clip(np.minimum(t[:, None, 2], d[None, :, 2]) - np.maximum(t[:, None, 0], d[None, :, 0]), 0, None)
        ih = np.clip(np.minimum(t[:, None, 3], d[None, :, 3]) - np.maximum(t[:, None, 1], d[None, :, 1]), 0, None)
        inter = iw * ih
        area_t = (t[:, 2] - t[:, 0]) * (t[:, 3] - t[:, 1])
        area_d = (d[:, 2] - d[:, 0]) * (d[:, 3] - d[:, 1])
        union = area_t[:, None] + area_d[None, :] - inter
        iou = np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)
        size = np.maximum(np.maximum(t[:, 2] - t[:, 0], t[:, 3] - t[:, 1]), 1e-6)
        tc = (t[:, :2] + t[:, 2:]) / 2.0
        dc = (d[:, :2] + d[:, 2:]) / 2.0
        dist = np.sqrt(((tc[:, None, :] - dc[None, :, :]) ** 2).sum(-1)) / size[:, None]
        close = (iou >= self.iou_threshold) | (dist <= self.max_distance)
        if self.mode == "platform":
            # The actuator takes a decided item off the platform, so another class at its place is the next item:
            # a decided track keeps only detections of its class (its leader cannot change after the decision).
            decided = np.array([tr.decided for tr in self.tracks], dtype=bool)
            if decided.any():
                leaders = np.array([-1 if tr.leader is None else tr.leader for tr in self.tracks])
                close &= ~decided[:, None] | (leaders[:, None] == np.array([det.class_id for det in detections]))
            ti, di = np.nonzero(close)
            # ... and takes them first where the boxes mostly overlap, so a frame that misreads its class cannot
            # hand its detections to a new track (never a neighbouring item's: only at its place)
            own = decided[ti] & (iou[ti, di] >= OWN_IOU)
            order = np.lexsort((dist[ti, di], -iou[ti, di], ~own))
        else:
            ti, di = np.nonzero(close)
            order = np.lexsort((dist[ti, di], -iou[ti, di]))
        used_t, used_d, matches = set(), set(), []
        for k in order:
            a, b = int(ti[k]), int(di[k])
            if a not in used_t and b not in used_d:
                used_t.add(a)
                used_d.add(b)
                matches.append((a, b))
        return matches

    def update(self, detections: Sequence[Detection], seq: int, t: float, frame_w: int,
               frame_h: int) -> TrackerUpdate:
        """Match ``detections`` of frame ``seq`` to tracks and return what changed."""
        out = TrackerUpdate()
        self._updates += 1
        # Expire stale tracks BEFORE matching, so a new item can never continue a lost item's track.
        alive = []
        for track in self.tracks:
            if self._updates - track.last_update > self.max_age:
                if not track.decided:
                    out.expired.append((track, self._why_undecided(track)))
            else:
                alive.append(track)
        self.tracks = alive
        matches = self._match(detections, seq)
        matched_d = set()
        for ti, di in matches:
            track, det = self.tracks[ti], detections[di]
            track.add(det, seq, t)
            track.last_update = self._updates
            matched_d.add(di)
            out.matched.append((track, det))
            if track.decided:
                continue
            if self.mode == "conveyor":
                side = self.trigger.coordinate(track.bbox, frame_w, frame_h)
                if track.side is not None and track.side < 0 <= side:
                    # when did the centre cross? interpolate between the two observations
                    frac = -track.side / (side - track.side)
                    track.crossed_t = track.prev_t + frac * (track.last_t - track.prev_t)
                if track.crossed_t is not None and side >= 0 and track.hits >= self.min_hits:
                    # crossed, and seen in min_hits frames: a glint seen once or twice on the line moves nothing
                    # (its track ends as passed_unsorted, a fault the operator sees); a real item seen too few
                    # times before the line is decided on its next frames, timed from when it crossed
                    out.ready.append(track)
                track.side = side
            elif track.leader_streak >= self.stable_frames:
                out.ready.append(track)
        for di, det in enumerate(detections):
            if di not in matched_d:
                track = Track(self._next_id, det, seq, t)
                track.last_update = track.first_update = self._updates
                self._next_id += 1
                track.side = track.first_side = self.trigger.coordinate(det.bbox, frame_w, frame_h)
                self.tracks.append(track)
                out.matched.append((track, det))
                if self.mode == "platform" and self.stable_frames <= 1:
                    out.ready.append(track)
        if self.mode == "platform" and out.ready:
            # A track on top of a decided one that is still seen (its item not yet taken off) waits: it is the
            # same item misread in some frames, or the next item put down at once; either way it may be decided
            # only once the decided track has expired, so no item is decided twice.
            held = [d for d in self.tracks if d.decided]
            out.ready = [tr for tr in out.ready if not any(BBox.iou(d.bbox, tr.bbox) >= OWN_IOU for d in held)]
        for track in out.ready:
            track.decided = True
        return out

    def _why_undecided(self, track: Track) -> str:
        if self.mode == "conveyor" and track.crossed_t is None and track.first_update <= min(self.max_age, 3) \
                and (track.side or 0) >= 0 and track.first_side is not None and track.first_side >= 0:
            # in view past the line from the service's first frames: sorted before a restart (or passed while the
            # service was down, which the restart's own record tells): not an item lost by this run
            return "past_line_at_start"
        if self.mode == "conveyor" and (track.side or 0) >= 0:
            # Last seen past the trigger line without a decision: the item was not sorted (it was
            # first seen there, or its track was lost while it crossed). Brief tracks included.
            return "passed_unsorted"
        if track.hits < self.min_hits:
            return "too_brief"
        return "never_crossed" if self.mode == "conveyor" else "never_stable"

    def flush(self) -> List[Tuple[Track, str]]:
        """End of stream: every undecided live track with its reason; clears the tracker."""
        result = [(t, "stream_ended") for t in self.tracks if not t.decided]
        self.tracks = []
        return result
