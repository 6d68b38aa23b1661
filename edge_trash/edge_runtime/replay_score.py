"""Score a replayed recording: the service's decisions (event log) against the recording's truth.

``truth.json`` (from ``edge_trash.tfrecords.sample_data.write_conveyor_frames`` or written by hand
for a real test run) lists each item's class and the frame where it crosses the trigger line.
Each item is matched to the unmatched decision nearest its crossing frame (within
``tolerance`` frames). Stdlib only, so it runs on the board too.
"""

import json
import sqlite3
from typing import Dict


def score_replay(log_path: str, truth_path: str, tolerance: int = 6, first_seq: int = 0) -> Dict:
    """Decision accuracy, misses, extra decisions and per-bin counts of one replay."""
    with open(truth_path) as f:
        truth = json.load(f)
    conn = sqlite3.connect("file:%s?mode=ro" % log_path, uri=True)
    try:
        rows = conn.execute("SELECT id, seq, label, bin, COALESCE(actuated_bin, bin), status FROM decisions "
                            "ORDER BY seq, id").fetchall()
    finally:
        conn.close()
    decisions = [{"id": r[0], "seq": r[1] - first_seq, "label": r[2], "bin": r[3], "actuated_bin": r[4],
                  "status": r[5]} for r in rows]
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
                        "decided": best["label"] if best else None, "bin": best["actuated_bin"] if best else None})
    correct = sum(1 for m in matches if m["decided"] == m["class"])
    per_bin = {}  # type: Dict[str, int]
    for d in decisions:
        per_bin[d["actuated_bin"]] = per_bin.get(d["actuated_bin"], 0) + 1
    n = len(matches)
    return {"items": n, "decided": sum(1 for m in matches if m["decided"] is not None), "correct": correct,
            "accuracy": round(correct / float(n), 4) if n else 0.0,
            "missed": [m["item"] for m in matches if m["decided"] is None],
            "extra_decisions": len(decisions) - len(used), "per_bin": per_bin, "matches": matches}
