"""Score a replayed recording: the service's decisions (event log) against the recording's truth.

``truth.json`` (from ``edge_trash.tfrecords.sample_data.write_conveyor_frames`` or written by hand
for a real test run) lists each item's class and the frame where it crosses the trigger line.
Each item is matched to the unmatched decision nearest its crossing frame (within
``tolerance`` frames). Stdlib only, so it runs on the board too.
"""

import json
import sqlite3
from typing import Dict, Mapping, Optional


def score_replay(log_path: str, truth_path: str, tolerance: int = 6, first_seq: int = 0,
                 class_bins: Optional[Mapping[str, str]] = None) -> Dict:
    """Decision accuracy, misses, extra decisions and per-bin counts of one replay.

    ``correct`` counts items whose decided class is their true class; with ``class_bins`` (the sort config's
    ``classes``: class -> bin) ``in_class_bin`` counts those that also landed in their class's bin, and
    ``right_class_other_bin`` lists the reasons the rest of the right ones did not (``low_confidence``: sent to
    the reject bin below ``min_confidence``), as a weak model classifies right yet sorts little.
    """
    with open(truth_path) as f:
        truth = json.load(f)
    conn = sqlite3.connect("file:%s?mode=ro" % log_path, uri=True)
    try:
        rows = conn.execute("SELECT id, seq, label, bin, COALESCE(actuated_bin, bin), status, reason FROM decisions "
                            "ORDER BY seq, id").fetchall()
    finally:
        conn.close()
    decisions = [{"id": r[0], "seq": r[1] - first_seq, "label": r[2], "bin": r[3], "actuated_bin": r[4],
                  "status": r[5], "reason": r[6]} for r in rows]
    used = set()  # type: set
    matches = []  # type: List[Dict]
    for item in sorted(truth["items"], key=lambda it: it["crossing_frame"]):
        best = None
        for d in decisions:
            if d["id"] in used:
                continue
            gap = abs(d["seq"] - item["crossing_frame"])
            if gap <= tolerance and (best is None or gap < abs(best["seq"] - item["crossing_frame"])):
                best = d
        if best is not None:
            used.add(best["id"])
        matches.append({"item": item["item"], "class": item["class"], "crossing_frame": item["crossing_frame"],
                        "decided": best["label"] if best else None, "bin": best["actuated_bin"] if best else None,
                        "reason": best["reason"] if best else None})
    correct = sum(1 for m in matches if m["decided"] == m["class"])
    per_bin = {}  # type: Dict[str, int]
    for d in decisions:
        per_bin[d["actuated_bin"]] = per_bin.get(d["actuated_bin"], 0) + 1
    n = len(matches)
    result = {"items": n, "decided": sum(1 for m in matches if m["decided"] is not None), "correct": correct,
              "accuracy": round(correct / float(n), 4) if n else 0.0,
              "missed": [m["item"] for m in matches if m["decided"] is None],
              "extra_decisions": len(decisions) - len(used), "per_bin": per_bin,
              "matches": matches}  # type: Dict
    if class_bins is not None:
        right = [m for m in matches if m["decided"] == m["class"]]
        other = {}  # type: Dict[str, int]
        for m in right:
            if m["bin"] != class_bins.get(m["class"]):
                reason = m["reason"] or "unknown"
                other[reason] = other.get(reason, 0) + 1
        result["in_class_bin"] = len(right) - sum(other.values())
        result["right_class_other_bin"] = other
    return result
