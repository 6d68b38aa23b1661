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
                       "they lack classes), with the options that build had (its --class-map or --supercategories): "
                       "edge-trash build-tfrecords --annotations TRAINED_ON.json --annotations "
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


def _export(queue_dir, out, *extra):
    return CliRunner().invoke(cli, ["queue", "export", str(queue_dir), "--out", str(out)] + list(extra))


def test_two_devices_queues_never_overwrite_each_others_pictures(tmp_path):
    """Both devices number their frames from 0: the second export into the first's folder once replaced its
    pictures, and the first relabel.json then trained its boxes on the other device's frames."""
    fill_queue(str(tmp_path / "devA"))
    queue = HardExampleQueue(str(tmp_path / "devB"), LABELS, band=(0.3, 0.6), min_interval_s=0.0)
    for seq in (10, 11):  # the same frame numbers, other pictures
        queue.maybe_save(frame_with_boxes([(1, [0, 0, 30, 30])]), seq,
                         [Detection(1, "can", 0.4, BBox(0, 0, 30, 30))])
    assert _export(tmp_path / "devA", tmp_path / "relabel" / "devA.json").exit_code == 0
    result = _export(tmp_path / "devB", tmp_path / "relabel" / "devB.json")  # default: a folder per --out
    assert result.exit_code == 0, result.output
    assert sorted(os.listdir(str(tmp_path / "relabel"))) == ["devA.json", "devA_images", "devB.json", "devB_images"]
    before = {n: open(str(tmp_path / "relabel" / "devA_images" / n), "rb").read()
              for n in os.listdir(str(tmp_path / "relabel" / "devA_images"))}
    # into one folder by hand: refused before anything is written
    result = _export(tmp_path / "devB", tmp_path / "relabel" / "devB2.json",
                     "--images-out", str(tmp_path / "relabel" / "devA_images"))
    assert result.exit_code == 1
    assert result.stderr == ("Error: %s already holds 2 of these image names with other pictures (the first, "
                             "000000000010.jpg): another queue's export (the device numbers its frames from 0 again "
                             "after a fresh event log, and every device does), or another dataset's images; give this "
                             "export its own --images-out (the default is --out's name + _images)\n"
                             % (tmp_path / "relabel" / "devA_images"))
    assert not os.path.exists(str(tmp_path / "relabel" / "devB2.json"))
    assert {n: open(str(tmp_path / "relabel" / "devA_images" / n), "rb").read()
            for n in os.listdir(str(tmp_path / "relabel" / "devA_images"))} == before
    # the same queue again into its own folder: the same pictures, so written again without a word
    assert _export(tmp_path / "devA", tmp_path / "relabel" / "devA.json").exit_code == 0


def test_a_queue_copied_while_the_device_wrote_it_exports_every_whole_entry_and_lists_the_rest(tmp_path):
    queue_dir = tmp_path / "q"
    fill_queue(str(queue_dir))  # frames 10, 11, 12
    queue = HardExampleQueue(str(queue_dir), LABELS, band=(0.3, 0.6), min_interval_s=0.0)
    for seq in range(20, 28):
        queue.maybe_save(frame_with_boxes([]), seq, [Detection(0, "bottle", 0.5, BBox(0, 0, 30, 30))])

    def sidecar(seq, **changes):
        path = queue_dir / ("%012d.json" % seq)
        record = json.loads(path.read_text())
        record.update(changes)
        path.write_text(json.dumps(record))

    os.remove(str(queue_dir / "000000000020.jpg"))  # evicted (or not copied yet) under its sidecar
    (queue_dir / "000000000021.json").write_text('{"seq": 21, "fi')  # cut short
    os.remove(str(queue_dir / "000000000022.json"))  # an image without its sidecar
    data = (queue_dir / "000000000023.jpg").read_bytes()
    (queue_dir / "000000000023.jpg").write_bytes(data[:len(data) // 2])  # a JPEG cut short
    (queue_dir / "000000000024.json").write_text("5")
    sidecar(25, file="../elsewhere.jpg")  # never read or written outside the two folders
    sidecar(26, detections=[{"class_id": 0, "score": 0.5}])  # another version's detections
    sidecar(27, best_score=None)  # fine: sorted as 0
    result = _export(queue_dir, tmp_path / "relabel.json")
    assert result.exit_code == 0, result.stderr
    q = str(queue_dir) + os.sep
    assert result.stderr.splitlines() == [
        "queue export: skipped 7 entries that cannot be exported:",
        "  %s000000000020.json: names image 000000000020.jpg, which is not in the queue (evicted by the quota, or "
        "not copied yet: copy the queue again once the device is stopped)" % q,
        "  %s000000000021.json: not readable JSON (Unterminated string starting at: line 1 column 13 (char 12)): "
        "cut short while it was copied?" % q,
        "  %s000000000023.json: its image 000000000023.jpg is cut short (no JPEG end marker: copied while the "
        "device wrote it?); copy it again" % q,
        "  %s000000000024.json: not a hard-example sidecar (a JSON int, not an object)" % q,
        "  %s000000000025.json: its 'file' '../elsewhere.jpg' is not the name of an image in the queue folder" % q,
        "  ... and 2 more (listed under info.skipped in %s)" % (tmp_path / "relabel.json")]
    coco = json.loads((tmp_path / "relabel.json").read_text())
    assert [im["device_seq"] for im in coco["images"]] == [27, 12, 11, 10]
    assert [(s["path"][len(q):], s["reason"][:40]) for s in coco["info"]["skipped"]][5:] == [
        ("000000000026.json", "detection 0 has no 'bbox' of 4 numbers ["),
        ("000000000022.jpg", "an image without its sidecar .json (copi")]
    assert sorted(os.listdir(str(tmp_path / "relabel_images"))) == [
        "000000000010.jpg", "000000000011.jpg", "000000000012.jpg", "000000000027.jpg"]
    assert not os.path.exists(str(tmp_path / "elsewhere.jpg"))
    # nothing whole at all: an error, not an empty success
    for name in os.listdir(str(queue_dir)):
        if name.endswith(".jpg"):
            os.remove(str(queue_dir / name))
    result = _export(queue_dir, tmp_path / "none.json")
    assert result.exit_code == 1 and not os.path.exists(str(tmp_path / "none.json"))
    assert result.stderr.endswith("Error: nothing exported: not one entry of %s could be read (above); copy the "
                                  "queue again once the device is stopped\n" % queue_dir)


def test_a_damaged_labels_file_is_named_with_its_fix_and_no_usage_banner(tmp_path):
    queue_dir = tmp_path / "q"
    fill_queue(str(queue_dir))
    (queue_dir / "labels.json").write_text('["bottle", "can"')
    result = _export(queue_dir, tmp_path / "relabel.json")
    assert result.exit_code == 1 and "Usage:" not in result.stderr
    assert result.stderr.startswith("Error: %s is not readable JSON (" % (queue_dir / "labels.json"))
    assert result.stderr.endswith("): copy it again from the device's queue folder (the service writes it at "
                                  "every start)\n")
    (queue_dir / "labels.json").write_text('{"0": "bottle"}')
    result = _export(queue_dir, tmp_path / "relabel.json")
    assert result.exit_code == 1 and "is not a list of class names" in result.stderr


def test_boxes_saved_by_an_earlier_model_keep_the_class_the_device_gave_them(tmp_path):
    """The service rewrites labels.json at each start: a new model with its classes in another order once
    turned every earlier "can" into "bottle" in the export."""
    queue_dir = str(tmp_path / "q")
    fill_queue(queue_dir)  # LABELS: bottle, can, carton
    queue = HardExampleQueue(queue_dir, ["can", "bottle", "cup"], band=(0.3, 0.6), min_interval_s=0.0)
    queue.maybe_save(frame_with_boxes([]), 30, [Detection(2, "cup", 0.33, BBox(1, 1, 9, 9))])
    result = _export(queue_dir, tmp_path / "relabel.json")
    assert result.exit_code == 0, result.stderr
    assert result.stdout.splitlines()[0] == ("note: 4 detections came from a model whose classes differ from the "
                                             "queue's labels.json (the model was updated): each is filed under the "
                                             "class name the device gave it")
    coco = json.loads((tmp_path / "relabel.json").read_text())
    assert [c["name"] for c in coco["categories"]] == ["can", "bottle", "cup", "carton"]
    name_of = {c["id"]: c["name"] for c in coco["categories"]}
    seq_of = {im["id"]: im["device_seq"] for im in coco["images"]}
    saved = {}
    for seq in (10, 11, 12, 30):
        record = json.load(open(os.path.join(queue_dir, "%012d.json" % seq)))
        saved[seq] = sorted(d["label"] for d in record["detections"])
    got = {}
    for ann in coco["annotations"]:
        got.setdefault(seq_of[ann["image_id"]], []).append(name_of[ann["category_id"]])
    assert {seq: sorted(names) for seq, names in got.items()} == saved == {
        10: ["bottle"], 11: ["can", "carton"], 12: ["carton"], 30: ["cup"]}


def test_the_operator_pages_coco_names_the_queues_own_files(tmp_path):
    """The page's download holds no images: it names the queue's files (PPM without Pillow), so
    build-tfrecords --images QUEUE finds them; the CLI's export names the JPEGs it writes."""
    from edge_trash.edge_runtime.queue_export import build_queue_coco

    fill_queue(str(tmp_path / "q"), use_pillow=False)
    page, _ = build_queue_coco(str(tmp_path / "q"), names_in_queue=True)
    cli_coco, _ = build_queue_coco(str(tmp_path / "q"))
    assert [im["file_name"] for im in page["images"]] == ["000000000012.ppm", "000000000011.ppm", "000000000010.ppm"]
    assert all(os.path.isfile(str(tmp_path / "q" / im["file_name"])) for im in page["images"])
    assert [im["file_name"] for im in cli_coco["images"]] == ["000000000012.jpg", "000000000011.jpg",
                                                               "000000000010.jpg"]


def test_the_quota_removes_a_sidecar_before_its_image(tmp_path, monkeypatch):
    """A queue copied while the quota evicts finds at worst an image without its sidecar (skipped and listed),
    never a sidecar naming an image already gone."""
    from edge_trash.edge_runtime import hard_examples

    removed = []
    real_remove = hard_examples._remove
    monkeypatch.setattr(hard_examples, "_remove", lambda path: (removed.append(os.path.basename(path)),
                                                                real_remove(path)))
    queue = HardExampleQueue(str(tmp_path / "q"), LABELS, min_interval_s=0.0, quota_bytes=1)
    for seq in (1, 2):
        queue.maybe_save(frame_with_boxes([]), seq, [Detection(0, "bottle", 0.5, BBox(0, 0, 5, 5))])
    assert removed == ["000000000001.json", "000000000001.jpg", "000000000002.json", "000000000002.jpg"]


def test_a_relabeled_export_builds_with_the_original_class_map_and_unreviewed_boxes_are_named(tmp_path):
    """With TACO's --class-map every exported box was dropped ("category 'bottle' is not in the class map")
    and its frame trained as background; an export never reviewed built as ground truth, --strict too."""
    from PIL import Image

    fill_queue(str(tmp_path / "q"))  # bottle, can, carton: the class map's targets
    assert _export(tmp_path / "q", tmp_path / "relabel.json").exit_code == 0
    (tmp_path / "orig").mkdir()
    images, anns = [], []
    for k, (name, cat) in enumerate([("a.jpg", 1), ("b.jpg", 2), ("c.jpg", 3), ("d.jpg", 1)] * 3):
        Image.new("RGB", (64, 48), (40 * k % 255, 60, 90)).save(str(tmp_path / "orig" / ("%d%s" % (k, name))))
        images.append({"id": k + 1, "file_name": "%d%s" % (k, name), "width": 64, "height": 48})
        anns.append({"id": k + 1, "image_id": k + 1, "category_id": cat, "bbox": [4, 4, 20, 20], "iscrowd": 0})
    anns[0]["score"] = 0.9  # one pseudo-label among the original's: its own warning, not the export's boxes
    (tmp_path / "orig.json").write_text(json.dumps({"images": images, "annotations": anns, "categories": [
        {"id": 1, "name": "Plastic bottle"}, {"id": 2, "name": "Drink can"}, {"id": 3, "name": "Drink carton"}]}))
    (tmp_path / "map.csv").write_text("source,target\nPlastic bottle,bottle\nDrink can,can\nDrink carton,carton\n")
    args = ["build-tfrecords", "--annotations", str(tmp_path / "orig.json"), "--annotations",
            str(tmp_path / "relabel.json"), "--images", str(tmp_path / "orig"), "--images",
            str(tmp_path / "relabel_images"), "--class-map", str(tmp_path / "map.csv"), "--quiet"]
    result = CliRunner().invoke(cli, args + ["--out", str(tmp_path / "data")])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "data" / "report.json").read_text())
    assert report["boxes_dropped"] == [] and report["boxes_written"] == 12 + 4
    assert report["categories_kept_as_target"] == ["bottle", "can", "carton"]
    assert ("warning: 3 categories the class map does not name bear the name of one of its targets and are kept as "
            "that class (a relabeled queue export?): 'bottle', 'can', 'carton'; map them to an empty target to drop"
            ) in result.output.splitlines()
    warning = ("warning: 4 boxes in %s are still the device's detections (\"pre_annotation\": true, as `edge-trash "
               "queue export` writes them), trained as ground truth: correct them in a labelling tool (its export "
               "drops the mark), or delete the mark from the boxes you checked; --strict refuses them"
               % (tmp_path / "relabel.json"))
    assert warning in result.output.splitlines()
    assert "warning: 1 usable annotation carries a 'score' (0.9 to 0.9, median 0.9)" in result.output
    assert report["annotations_with_score"]["count"] == 1
    result = CliRunner().invoke(cli, args + ["--out", str(tmp_path / "strict"), "--strict"])
    assert result.exit_code == 4
    assert "--strict: 4 boxes are still the device's detections, not reviewed (above)" in result.output
    from edge_trash.tfrecords.analyze import analyze  # says so too, once, not also as "carry a 'score'"

    kinds = {f["kind"]: f for f in analyze(tmp_path / "relabel.json", None, out=tmp_path / "analysis",
                                           plots=False)["flags"]}
    assert kinds["device_pre_annotations"]["count"] == 4 and "annotations_with_score" not in kinds
    assert kinds["device_pre_annotations"]["message"] == warning[len("warning: "):]
    # reviewed in a labelling tool: its export has no mark, and --strict passes
    coco = json.loads((tmp_path / "relabel.json").read_text())
    for ann in coco["annotations"]:
        del ann["pre_annotation"], ann["score"]
    (tmp_path / "relabel.json").write_text(json.dumps(coco))
    result = CliRunner().invoke(cli, args + ["--out", str(tmp_path / "reviewed"), "--strict"])
    assert result.exit_code == 0 and "device's detections" not in result.output, result.output


def test_a_half_copied_ppm_is_skipped_and_a_corrected_relabel_file_is_never_replaced(tmp_path):
    """A device without Pillow saves PPM: one cut short ended the export with a traceback after some images
    were written. A relabel.json corrected by hand was replaced by the next export's device guesses."""
    queue_dir = tmp_path / "q"
    fill_queue(str(queue_dir), use_pillow=False)
    data = (queue_dir / "000000000011.ppm").read_bytes()
    (queue_dir / "000000000011.ppm").write_bytes(data[:len(data) // 2])
    out = tmp_path / "relabel.json"
    result = _export(queue_dir, out)
    assert result.exit_code == 0, result.stderr
    assert result.stderr.splitlines()[1].startswith(
        "  %s: its image cannot be read (" % (queue_dir / "000000000011.json"))
    assert sorted(os.listdir(str(tmp_path / "relabel_images"))) == ["000000000010.jpg", "000000000012.jpg"]
    assert _export(queue_dir, out).exit_code == 0  # the same export again: the same file, written again
    corrected = json.loads(out.read_text())
    corrected["annotations"][0]["category_id"] = 2
    out.write_text(json.dumps(corrected))
    result = _export(queue_dir, out)
    assert result.exit_code == 1 and json.loads(out.read_text()) == corrected
    assert result.stderr == ("Error: %s exists and holds other annotations (corrected ones?): give this export "
                             "another --out, or move that file away first\n" % out)


def test_an_image_left_without_its_sidecar_is_counted_and_evicted_first(tmp_path):
    """Removing an example, the quota deletes its sidecar first: a power cut between the two left an image no
    restart counted, never evicted, and listed as skipped by every export."""
    queue_dir = str(tmp_path / "q")
    fill_queue(queue_dir)  # 10, 11, 12
    os.remove(os.path.join(queue_dir, "000000000010.json"))
    with open(os.path.join(queue_dir, "notes.txt"), "w") as f:
        f.write("the operator's")  # not ours: never counted nor removed
    size = os.path.getsize(os.path.join(queue_dir, "000000000010.jpg"))
    total = sum(os.path.getsize(os.path.join(queue_dir, n)) for n in os.listdir(queue_dir)
                if n.startswith("0000"))
    restarted = HardExampleQueue(queue_dir, LABELS, min_interval_s=0.0, quota_bytes=total - size)
    assert restarted.bytes_used == total and list(restarted._entries)[0] == "000000000010"
    restarted._enforce_quota()
    assert sorted(os.listdir(queue_dir)) == ["000000000011.jpg", "000000000011.json", "000000000012.jpg",
                                             "000000000012.json", "labels.json", "notes.txt"]
    assert restarted.bytes_used == total - size


def test_a_detection_named_without_a_class_id_is_not_counted_as_an_earlier_models(tmp_path):
    from edge_trash.edge_runtime.queue_export import build_queue_coco

    queue_dir = tmp_path / "q"
    fill_queue(str(queue_dir))
    path = queue_dir / "000000000010.json"
    record = json.loads(path.read_text())
    del record["detections"][0]["class_id"]  # named by its label alone (a hand-made or other version's sidecar)
    path.write_text(json.dumps(record))
    coco, _ = build_queue_coco(str(queue_dir))
    assert coco["info"]["detections_of_an_earlier_model"] == 0 and coco["info"]["skipped"] == []
    name_of = {c["id"]: c["name"] for c in coco["categories"]}
    assert [name_of[a["category_id"]] for a in coco["annotations"] if a["image_id"] == 3] == ["bottle"]
