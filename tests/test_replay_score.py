"""Replay scoring (used by make demo) and the conveyor recording it scores."""

from __future__ import annotations

import json
import time

from edge_trash.edge_runtime.eventlog import EventLog
from edge_trash.edge_runtime.replay_score import score_replay


def _row(seq, label, bin_name, reason="class"):
    t = time.time()
    return {"track_id": seq, "seq": seq, "t_first": t, "t_decided": t, "class_id": 0, "label": label, "score": 0.9,
            "agreement": 1.0, "votes": {}, "bin": bin_name, "reason": reason, "bbox": [0, 0, 1, 1], "due": t}


def test_score_matches_nearest_decision_and_counts_misses_and_extras(tmp_path):
    truth = {"items": [{"item": 0, "class": "can", "crossing_frame": 10},
                       {"item": 1, "class": "bottle", "crossing_frame": 20},
                       {"item": 2, "class": "cup", "crossing_frame": 30},
                       {"item": 3, "class": "carton", "crossing_frame": 60}]}
    (tmp_path / "truth.json").write_text(json.dumps(truth))
    log = EventLog(str(tmp_path / "e.sqlite"))
    log.start_run("dir:x", "cpu", 0)
    log.record_decisions([_row(12, "can", "metal"), _row(19, "cup", "paper"), _row(31, "cup", "paper"),
                          _row(45, "can", "metal")])
    log.close()
    s = score_replay(str(tmp_path / "e.sqlite"), str(tmp_path / "truth.json"), tolerance=5)
    assert [m["decided"] for m in s["matches"]] == ["can", "cup", "cup", None]
    assert s["correct"] == 2 and s["accuracy"] == 0.5
    assert s["missed"] == [3] and s["extra_decisions"] == 1
    assert s["per_bin"] == {"metal": 2, "paper": 2}


def test_conveyor_recording_truth_matches_the_frames(tmp_path):
    import numpy as np
    from PIL import Image

    from edge_trash.tfrecords.sample_data import write_conveyor_frames

    rec = write_conveyor_frames(tmp_path, num_items=3, speed_px=20, spacing_px=200)
    assert len(list(rec.frames_dir.glob("*.jpg"))) == rec.num_frames
    truth = json.loads(rec.truth.read_text())
    assert {it["class"] for it in truth["items"]} <= {"bottle", "can", "cup", "carton", "wrapper", "cigarette"}
    # at an item's crossing frame something non-belt sits on the trigger column
    for it in truth["items"]:
        img = np.asarray(Image.open(rec.frames_dir / ("%06d.jpg" % it["crossing_frame"])).convert("RGB")).astype(int)
        column = img[40:-40, truth["width"] // 2 - 3: truth["width"] // 2 + 3]  # below the rails
        assert (np.abs(column - np.median(img[40:-40], axis=(0, 1))).sum(axis=2) > 120).any()
        before = np.asarray(Image.open(rec.frames_dir / "000000.jpg").convert("RGB")).astype(int)
        assert not (np.abs(before[40:-40, truth["width"] // 2 - 3: truth["width"] // 2 + 3]
                           - np.median(before[40:-40], axis=(0, 1))).sum(axis=2) > 120).any()


def test_with_the_configs_bins_right_classes_sent_elsewhere_are_counted_by_reason(tmp_path):
    # a weak model names the class right yet below min_confidence: "15 of 24 sorted into the right class" was
    # printed while 6 reached their bins
    truth = {"items": [{"item": i, "class": c, "crossing_frame": 10 * (i + 1)}
                       for i, c in enumerate(["can", "can", "cup", "cup"])]}
    (tmp_path / "truth.json").write_text(json.dumps(truth))
    log = EventLog(str(tmp_path / "e.sqlite"))
    log.start_run("dir:x", "cpu", 0)
    log.record_decisions([_row(10, "can", "metal"), _row(20, "can", "reject", "low_confidence"),
                          _row(30, "cup", "reject", "low_confidence"), _row(40, "can", "metal")])
    log.close()
    s = score_replay(str(tmp_path / "e.sqlite"), str(tmp_path / "truth.json"),
                     class_bins={"can": "metal", "cup": "paper"})
    assert s["correct"] == 3 and s["in_class_bin"] == 1 and s["right_class_other_bin"] == {"low_confidence": 2}
    assert [m["reason"] for m in s["matches"]] == ["class", "low_confidence", "low_confidence", "class"]
    assert "in_class_bin" not in score_replay(str(tmp_path / "e.sqlite"), str(tmp_path / "truth.json"))
