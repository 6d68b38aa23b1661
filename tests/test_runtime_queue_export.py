"""Hard-example queue on the device -> `edge-trash queue export` -> COCO -> `edge-trash build-tfrecords`."""

import json
import os

import numpy as np
import pytest
from click.testing import CliRunner

from edge_trash.cli import cli
from edge_trash.edge_runtime.geometry import BBox, Detection
from edge_trash.edge_runtime.hard_examples import HardExampleQueue
from edge_trash.edge_runtime.queue_export import QueueError, export_queue_as_coco

LABELS = ["bottle", "can", "carton"]


def frame_with_boxes(boxes, h=120, w=160):
    frame = np.full((h, w, 3), 40, np.uint8)
    for class_id, (x0, y0, x1, y1) in boxes:
        frame[y0:y1, x0:x1] = 0
        frame[y0:y1, x0:x1, class_id] = 220
    return frame


def fill_queue(directory, use_pillow=True):
    queue = HardExampleQueue(directory, LABELS, band=(0.3, 0.6), min_interval_s=0.0, use_pillow=use_pillow)
    cases = [  # (seq, detections)
        (10, [Detection(0, "bottle", 0.55, BBox(10, 20, 50, 60))]),
        (11, [Detection(1, "can", 0.35, BBox(60, 30, 100, 90)), Detection(2, "carton", 0.5, BBox(0, 0, 20, 20))]),
        (12, [Detection(2, "carton", 0.45, BBox(100, 50, 150, 110))]),
        (13, [Detection(0, "bottle", 0.95, BBox(5, 5, 45, 45))]),  # confident: not hard
        (14, [Detection(0, "bottle", 0.4, BBox(5, 5, 45, 45)), Detection(1, "can", 0.9, BBox(60, 5, 90, 45))]),
    ]
    for seq, dets in cases:
        boxes = [(d.class_id, [int(v) for v in d.bbox]) for d in dets]
        queue.maybe_save(frame_with_boxes(boxes), seq, dets)
    return queue


def test_queue_keeps_only_hard_frames_and_respects_the_quota(tmp_path):
    queue = fill_queue(str(tmp_path / "q"))
    assert queue.saved == 3
    assert sorted(n for n in os.listdir(str(tmp_path / "q"))) == [
        "000000000010.jpg", "000000000010.json", "000000000011.jpg", "000000000011.json",
        "000000000012.jpg", "000000000012.json", "labels.json"]
    record = json.load(open(str(tmp_path / "q" / "000000000011.json")))
    assert (record["reason"], record["best_score"], record["width"], record["height"]) == ("uncertain", 0.5, 160, 120)
    assert [d["label"] for d in record["detections"]] == ["can", "carton"]
    small = HardExampleQueue(str(tmp_path / "small"), LABELS, min_interval_s=0.0, quota_bytes=1,
                             use_pillow=False)
    small.maybe_save(frame_with_boxes([]), 1, [Detection(0, "bottle", 0.5, BBox(0, 0, 5, 5))])
    small.maybe_save(frame_with_boxes([]), 2, [Detection(0, "bottle", 0.5, BBox(0, 0, 5, 5))])
    assert small.evicted == 2 and small.bytes_used == 0
    assert os.listdir(str(tmp_path / "small")) == ["labels.json"]


def test_votes_that_disagree_are_hard_even_when_confident(tmp_path):
    queue = HardExampleQueue(str(tmp_path / "q"), LABELS, min_agreement=0.8, min_interval_s=0.0, use_pillow=False)
    det = [Detection(0, "bottle", 0.95, BBox(0, 0, 10, 10))]
    assert queue.reason_for(det, agreement=0.6) == "votes_disagree"
    assert queue.reason_for(det, agreement=0.9) is None
    assert queue.maybe_save(frame_with_boxes([]), 5, det, agreement=0.6).endswith("000000000005.json")
    assert os.path.exists(str(tmp_path / "q" / "000000000005.ppm"))  # no Pillow: binary PPM


@pytest.mark.parametrize("use_pillow", [True, False])
def test_export_orders_least_confident_first_with_pre_annotations(tmp_path, use_pillow):
    fill_queue(str(tmp_path / "q"), use_pillow)
    result = CliRunner().invoke(cli, ["queue", "export", str(tmp_path / "q"), "--out", str(tmp_path / "relabel.json")])
    assert result.exit_code == 0, result.output
    said = result.output.splitlines()
    assert said[0].startswith("queue export: wrote 3 images and 4 pre-annotations to %s (images in %s) in "
                              % (tmp_path / "relabel.json", tmp_path / "relabel_images"))
    assert said[1] == ("next: correct the boxes, then build them with the data the model was trained on (on their own "
                       "they lack classes): edge-trash build-tfrecords --annotations TRAINED_ON.json --annotations "
                       "%s --images TRAINED_ON_IMAGES --images %s --out DATA_DIR"
                       % (tmp_path / "relabel.json", tmp_path / "relabel_images"))
    coco = json.load(open(str(tmp_path / "relabel.json")))
    assert [(im["id"], im["device_seq"]) for im in coco["images"]] == [(1, 12), (2, 11), (3, 10)]  # 0.45, 0.5, 0.55
    assert [c["name"] for c in coco["categories"]] == LABELS and coco["categories"][0]["id"] == 1
    first = [a for a in coco["annotations"] if a["image_id"] == 1]
    assert first == [{"id": 1, "image_id": 1, "category_id": 3, "bbox": [100.0, 50.0, 50.0, 60.0], "area": 3000.0,
                      "iscrowd": 0, "score": 0.45, "pre_annotation": True}]
    assert sorted(os.listdir(str(tmp_path / "relabel_images"))) == [
        "000000000010.jpg", "000000000011.jpg", "000000000012.jpg"]
    # files others can read: the queue is copied off the board as another user, relabel.json handed on
    modes = {name: os.stat(str(tmp_path / "q" / name)).st_mode & 0o777 for name in os.listdir(str(tmp_path / "q"))}
    assert set(modes.values()) == {0o644}, modes
    assert os.stat(str(tmp_path / "relabel.json")).st_mode & 0o777 == 0o644


def test_export_errors_name_the_queue(tmp_path):
    with pytest.raises(QueueError, match="is not a hard-example queue"):
        export_queue_as_coco(str(tmp_path), str(tmp_path / "o.json"), str(tmp_path / "i"))
    result = CliRunner().invoke(cli, ["queue", "export", str(tmp_path / "nope"), "--out", str(tmp_path / "o.json")])
    assert result.exit_code == 2 and "QUEUE_DIR" in result.output


@pytest.mark.slow
def test_exported_queue_round_trips_through_build_tfrecords(tmp_path):
    fill_queue(str(tmp_path / "q"))
    runner = CliRunner()
    result = runner.invoke(cli, ["queue", "export", str(tmp_path / "q"), "--out", str(tmp_path / "relabel.json")])
    assert result.exit_code == 0, result.output
    coco = json.load(open(str(tmp_path / "relabel.json")))
    result = runner.invoke(cli, ["build-tfrecords", "--annotations", str(tmp_path / "relabel.json"), "--images",
                                 str(tmp_path / "relabel_images"), "--out", str(tmp_path / "data")])
    assert result.exit_code == 0, result.output
    report = json.load(open(str(tmp_path / "data" / "report.json")))
    assert report["images_written"] == 3 and report["boxes_written"] == 4
    import tensorflow as tf
    from edge_trash.tfrecords import feature_keys as keys
    shards = sorted(str(p) for p in (tmp_path / "data").glob("*.tfrecord"))
    got = {}
    for raw in tf.data.TFRecordDataset(shards):
        ex = tf.train.Example.FromString(raw.numpy()).features.feature
        source = ex[keys.SOURCE_ID if hasattr(keys, "SOURCE_ID") else "image/source_id"].bytes_list.value[0].decode()
        ymin = ex["image/object/bbox/ymin"].float_list.value
        xmin = ex["image/object/bbox/xmin"].float_list.value
        labels = ex["image/object/class/label"].int64_list.value
        got[int(source)] = sorted((int(c), round(x, 3), round(y, 3)) for c, x, y in zip(labels, xmin, ymin))
    names = open(str(tmp_path / "data" / "labels.txt")).read().split()
    want = {}
    for ann in coco["annotations"]:
        image = coco["images"][ann["image_id"] - 1]
        label = names.index(LABELS[ann["category_id"] - 1]) + 1
        want.setdefault(ann["image_id"], []).append(
            (label, round(ann["bbox"][0] / image["width"], 3), round(ann["bbox"][1] / image["height"], 3)))
    assert got == {k: sorted(v) for k, v in want.items()}


def test_export_refuses_an_output_inside_the_queue_and_says_when_the_queue_is_empty(tmp_path):
    queue_dir = str(tmp_path / "q")
    HardExampleQueue(queue_dir, LABELS)  # a fresh queue: labels.json only
    result = CliRunner().invoke(cli, ["queue", "export", queue_dir, "--out", str(tmp_path / "relabel.json")])
    assert result.exit_code == 0 and not os.path.exists(str(tmp_path / "relabel.json"))
    assert result.output == ("queue export: %s holds no hard examples yet: nothing to relabel, nothing written (the "
                             "device saves uncertain frames there while it sorts)\n" % queue_dir)
    fill_queue(queue_dir, True)
    inside = os.path.join(queue_dir, "relabel.json")
    result = CliRunner().invoke(cli, ["queue", "export", queue_dir, "--out", inside])
    assert result.exit_code == 2 and not os.path.exists(inside)
    assert ("%s is inside the queue %s, where the next export would read it as a hard example; write it outside, "
            "e.g. --out %s" % (inside, queue_dir, tmp_path / "relabel.json")) in " ".join(result.output.split())
    result = CliRunner().invoke(cli, ["queue", "export", queue_dir, "--out", str(tmp_path / "r.json"),
                                      "--images-out", os.path.join(queue_dir, "img")])
    assert result.exit_code == 2 and "Invalid value for --images-out" in result.output
    assert "e.g. --images-out %s" % (tmp_path / "relabel_images") in " ".join(result.output.split())
