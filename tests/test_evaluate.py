"""COCO evaluation: hand-computed AP, duplicate annotation ids, ground truth from TFRecords."""

import contextlib
import io

import numpy as np
import pytest
from conftest import SHARED

from edge_trash.train.evaluate import (EvaluationError, coco_metrics, confusion_matrix,
                                       evaluate_detector, format_metrics_table, run_cocoeval)

# COCO's AP averages interpolated precision at 101 recall points (0, 0.01, ..., 1).
POINTS = 101


def _gt(annotation_ids=(1, 2)):
    """2 images of 100x100, one 30x30 box each (area 900 < 32^2: 'small'), one category."""
    return {
        "images": [{"id": 1, "width": 100, "height": 100}, {"id": 2, "width": 100, "height": 100}],
        "annotations": [
            {"id": annotation_ids[0], "image_id": 1, "category_id": 1, "bbox": [0, 0, 30, 30],
             "area": 900, "iscrowd": 0},
            {"id": annotation_ids[1], "image_id": 2, "category_id": 1, "bbox": [50, 50, 30, 30],
             "area": 900, "iscrowd": 0},
        ],
        "categories": [{"id": 1, "name": "can"}, {"id": 2, "name": "cup"}],
    }


def test_hand_computed_ap_with_one_tp_one_fp_one_miss():
    # Image 1: detection [0,0,30,20] at score 0.9 overlaps its box by 600/900 = IoU 2/3.
    # Image 2: detection at score 0.8 far from its box: a false positive; that box is missed.
    # At IoU thresholds 0.50..0.65 (4 of 10) the ranked list is TP, FP: recall 0.5 at
    # precision 1, so interpolated precision is 1 at the 51 recall points 0..0.50 and 0
    # above: AP_t = 51/101. At 0.70..0.95 both are false positives: AP_t = 0.
    detections = [
        {"image_id": 1, "category_id": 1, "bbox": [0, 0, 30, 20], "score": 0.9},
        {"image_id": 2, "category_id": 1, "bbox": [0, 0, 20, 20], "score": 0.8},
    ]
    m = coco_metrics(_gt(), detections)
    assert m["AP50"] == pytest.approx(51 / POINTS)
    assert m["AP75"] == 0.0
    assert m["AP"] == pytest.approx(0.4 * 51 / POINTS)
    assert m["APs"] == pytest.approx(0.4 * 51 / POINTS)  # every box is small
    assert m["APm"] == -1.0 and m["APl"] == -1.0  # no medium or large ground truth
    assert m["AR100"] == pytest.approx(0.4 * 0.5)  # recall 0.5 at 4 of 10 thresholds
    assert m["AR1"] == pytest.approx(0.2)
    assert m["per_class"] == {"can": pytest.approx(0.4 * 51 / POINTS), "cup": -1.0}
    assert m["per_class_AP50"] == {"can": pytest.approx(51 / POINTS), "cup": -1.0}


def test_hand_computed_ap_when_the_false_positive_ranks_first():
    # Ranked FP (0.95), TP (0.9): precision 1/2 at recall 0.5, so AP50 = 0.5 * 51/101.
    detections = [
        {"image_id": 2, "category_id": 1, "bbox": [0, 0, 20, 20], "score": 0.95},
        {"image_id": 1, "category_id": 1, "bbox": [0, 0, 30, 30], "score": 0.9},
    ]
    m = coco_metrics(_gt(), detections)
    assert m["AP50"] == pytest.approx(0.5 * 51 / POINTS)
    assert m["AP"] == pytest.approx(0.5 * 51 / POINTS)  # exact box: TP at every threshold
    assert m["AR100"] == pytest.approx(0.5)


@pytest.mark.parametrize("ids", [(0, 0), (7, 7), (0, 1)])
def test_duplicate_or_zero_annotation_ids_are_renumbered(ids):
    perfect = [
        {"image_id": 1, "category_id": 1, "bbox": [0, 0, 30, 30], "score": 0.9},
        {"image_id": 2, "category_id": 1, "bbox": [50, 50, 30, 30], "score": 0.8},
    ]
    gt = _gt(ids)
    assert coco_metrics(gt, perfect)["AP"] == pytest.approx(1.0)
    assert gt["annotations"][0]["id"] == ids[0]  # the caller's dict is not changed


def test_plain_pycocotools_gets_duplicate_ids_wrong():
    """Why renumbering matters: the same data through pycocotools directly scores below 1."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    perfect = [
        {"image_id": 1, "category_id": 1, "bbox": [0, 0, 30, 30], "score": 0.9},
        {"image_id": 2, "category_id": 1, "bbox": [50, 50, 30, 30], "score": 0.8},
    ]
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = _gt((0, 0))
        gt.createIndex()
        ev = COCOeval(gt, gt.loadRes(perfect), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    assert ev.stats[0] < 0.99


def test_no_detections_scores_zero_not_an_error():
    m = coco_metrics(_gt(), [])
    assert m["AP"] == 0.0 and m["AR100"] == 0.0 and m["per_class"]["can"] == 0.0


@pytest.mark.parametrize("det, match", [
    ({"image_id": 9, "category_id": 1, "bbox": [0, 0, 1, 1], "score": 1.0},
     "detection #1: image_id 9 is not in the ground truth"),
    ({"image_id": 1, "category_id": 5, "bbox": [0, 0, 1, 1], "score": 1.0},
     r"detection #1: category_id 5 not in the ground truth categories \[1, 2\]"),
    ({"image_id": 1, "category_id": 1, "bbox": [0, 0, 1], "score": 1.0},
     "detection #1: bbox .* is not 4 finite numbers"),
    ({"image_id": 1, "category_id": 1, "bbox": [0, 0, 1, 1]}, r"detection #1: missing \['score'\]"),
    # found by fuzzing: each was a TypeError inside pycocotools or our preparation
    ({"image_id": [1], "category_id": 1, "bbox": [0, 0, 1, 1], "score": 1.0},
     r"detection #1: image_id \[1\] is not in the ground truth"),
    ({"image_id": 1, "category_id": 1, "bbox": [0, 0, {}, 1], "score": 1.0},
     r"detection #1: bbox \[0, 0, \{\}, 1\] is not 4 finite numbers"),
    ({"image_id": 1, "category_id": 1, "bbox": [0, 0, 1, 1], "score": [1]},
     r"detection #1: score \[1\] is not a finite number"),
    (3, "detection #1 is not an object: 3"),
])
def test_bad_detections_are_named(det, match):
    with pytest.raises(EvaluationError, match=match):
        coco_metrics(_gt(), [det])


@pytest.mark.parametrize("change, match", [
    (lambda gt: gt["images"][1].pop("id"), r"ground truth: images\[1\] needs 'id'"),
    (lambda gt: gt["categories"][0].update(name=7), r"ground truth: categories\[0\] needs 'id' and 'name'"),
    (lambda gt: gt["annotations"][0].pop("bbox"),  # records' ground truth: no word of a --save-detections pair
     r"^ground truth: annotation #1: bbox None is not 4 finite numbers \[x, y, w, h\]: fix or drop that annotation\.$"),
    (lambda gt: gt["annotations"][1].update(image_id=[2]), r"annotation #2 refers to unknown image_id \[2\]"),
    (lambda gt: gt["annotations"][1].update(category_id={}), r"annotation #2: category_id \{\} is not an id"),
    (lambda gt: gt["annotations"].append(None), r"ground truth: annotation #3 is not an object: None"),
])
def test_bad_ground_truth_records_are_named(change, match):
    gt = _gt()
    change(gt)
    with pytest.raises(EvaluationError, match=match):
        coco_metrics(gt, [])


def test_ground_truth_area_and_iscrowd_are_filled_when_unusable():
    gt = _gt()
    gt["annotations"][0].update(area=None, iscrowd="yes")
    gt["annotations"][1].update(area=float("nan"))
    ev = run_cocoeval(gt, [])
    assert [(a["area"], a["iscrowd"]) for a in ev.cocoGt.dataset["annotations"]] == [(900.0, 0), (900.0, 0)]


def test_confusion_matrix_by_hand():
    gt = _gt()
    detections = [
        {"image_id": 1, "category_id": 2, "bbox": [0, 0, 30, 30], "score": 0.9},  # can seen as cup
        {"image_id": 1, "category_id": 1, "bbox": [60, 60, 10, 10], "score": 0.8},  # no box there
        {"image_id": 2, "category_id": 1, "bbox": [50, 50, 30, 30], "score": 0.2},  # below 0.3
    ]
    matrix, names = confusion_matrix(gt, detections, iou_threshold=0.5, score_threshold=0.3)
    assert names == ["can", "cup"]
    # rows: can, cup, background; columns: can, cup, missed
    assert matrix.tolist() == [[0, 1, 1], [0, 0, 0], [1, 0, 0]]


def test_confusion_labels_never_repeat_a_class_name(tmp_path, monkeypatch):
    # A dataset with a class named "background" got two rows of that name in confusion_matrix.png.
    from edge_trash.train import render
    from edge_trash.train.evaluate import confusion_labels

    assert confusion_labels(["can", "cup"]) == (["can", "cup", "background"], ["can", "cup", "missed"])
    assert confusion_labels(["background", "(background)", "missed"]) == (
        ["background", "(background)", "missed", "((background))"],
        ["background", "(background)", "missed", "(missed)"])
    drawn = {}
    monkeypatch.setattr(render, "_save_figure", lambda fig, path: drawn.update(
        rows=[t.get_text() for t in fig.axes[0].get_yticklabels()],
        cols=[t.get_text() for t in fig.axes[0].get_xticklabels()]) or path)
    render.plot_confusion_matrix(np.zeros((3, 3), int), ["background", "can"], tmp_path / "m.png")
    assert drawn == {"rows": ["background", "can", "(background)"], "cols": ["background", "can", "missed"]}


def test_precision_recall_curve_is_the_interpolated_precision():
    from edge_trash.train.evaluate import precision_recall_curves

    ev = run_cocoeval(_gt(), [{"image_id": 1, "category_id": 1, "bbox": [0, 0, 30, 30], "score": 0.9}])
    curves = precision_recall_curves(ev, iou=0.5)
    recall, precision = curves["can"]
    assert list(curves) == ["can"]  # cup has no ground truth: no curve
    np.testing.assert_allclose(precision, [1.0] * 51 + [0.0] * 50, atol=1e-9)
    assert recall[50] == pytest.approx(0.5)


def test_metrics_table_shows_each_class():
    m = coco_metrics(_gt(), [{"image_id": 1, "category_id": 1, "bbox": [0, 0, 30, 30], "score": 0.9}])
    lines = format_metrics_table(m, {"can": 2, "cup": 0}).splitlines()
    assert lines[1].split() == ["can", "2", f"{m['per_class']['can']:.3f}"]
    assert lines[2].split() == ["cup", "0", "n/a"]
    assert lines[3].startswith(f"AP {m['AP']:.3f}  AP50 {m['AP50']:.3f}")


# ---------------------------------------------------------------- TFRecord ground truth


@pytest.fixture(scope="module")
def val_dir(tmp_path_factory):
    from test_input_pipeline import write_split

    root = tmp_path_factory.mktemp("evaldata")
    write_split(root, "val", shards=2)
    return root


def test_gt_from_tfrecords_gives_pixel_boxes_and_source_ids(val_dir):
    from test_input_pipeline import IMAGES

    from edge_trash.train.evaluate import gt_from_tfrecords

    gt, images = gt_from_tfrecords(val_dir, "val")
    assert [im["id"] for im in gt["images"]] == [100, 101, 102, 103, 104]
    assert [(im.width, im.height) for im in images] == [(w, h) for h, w, _, _ in IMAGES]
    assert gt["categories"] == [{"id": 1, "name": "bottle"}, {"id": 2, "name": "can"},
                                {"id": 3, "name": "cup"}]
    first = gt["annotations"][0]
    # image 0 is 64 wide, 48 high, box y 0.1..0.5, x 0.2..0.6
    assert first["image_id"] == 100 and first["category_id"] == 1
    np.testing.assert_allclose(first["bbox"], [0.2 * 64, 0.1 * 48, 0.4 * 64, 0.4 * 48], rtol=1e-6)
    assert len(gt["annotations"]) == sum(len(c) for *_, c in IMAGES)
    assert images[1].decode().shape == (64, 48, 3)


class LookupDetector:
    """A fake detector that 'finds' the true boxes of each image, recognised by its size."""

    input_size = 32

    def __init__(self, class_names=None, shift=0.0):
        from test_input_pipeline import IMAGES

        self.class_names = class_names
        self.by_shape = {(h, w): (np.asarray(b, np.float32).reshape(-1, 4) + shift, np.asarray(c))
                         for h, w, b, c in IMAGES}

    def detect(self, image):
        boxes, classes = self.by_shape[image.shape[:2]]
        return np.clip(boxes, 0, 1), classes, np.linspace(0.9, 0.5, len(classes))


def test_evaluate_detector_scores_a_perfect_detector_at_one(val_dir):
    metrics, detections = evaluate_detector(LookupDetector(["bottle", "can", "cup"]), val_dir, "val")
    assert metrics["AP"] == pytest.approx(1.0)
    assert metrics["per_class"] == {"bottle": pytest.approx(1.0), "can": pytest.approx(1.0),
                                    "cup": pytest.approx(1.0)}
    assert metrics["num_images"] == 5 and metrics["num_detections"] == 7 == len(detections)
    shifted, _ = evaluate_detector(LookupDetector(shift=0.3), val_dir, "val")
    assert shifted["AP"] < 0.2


def test_evaluate_detector_refuses_a_model_of_other_classes(val_dir):
    with pytest.raises(EvaluationError, match=r"the model's classes \['paper'\] differ"):
        evaluate_detector(LookupDetector(["paper"]), val_dir, "val")


def test_an_empty_split_or_a_split_given_as_a_pattern_or_twice_is_refused(val_dir, tmp_path):
    """An empty split scored AP -1 for 0 images and exited 0 with "next: export"; '*' evaluated train, val and
    test together, 'val+val' every image twice."""
    import shutil

    from edge_trash.train.evaluate import gt_from_tfrecords

    empty = tmp_path / "empty"
    shutil.copytree(val_dir, empty)
    for shard in empty.glob("val-*.tfrecord"):
        shard.write_bytes(b"")
    with pytest.raises(EvaluationError, match=r"^%s: split 'val' holds no records; rebuild with a --val-fraction "
                                             r"\(or --test-fraction\) above 0, or evaluate another --split$" % empty):
        evaluate_detector(LookupDetector(), empty, "val")
    with pytest.raises(FileNotFoundError, match=r"^--split '\*': '\*' is not a split name \(splits found: val; "
                                               r"join several with \+\)$"):
        gt_from_tfrecords(val_dir, "*")
    with pytest.raises(FileNotFoundError, match=r"^--split 'val\+val' names val 2 times: each of its images would be "
                                               r"counted as often$"):
        gt_from_tfrecords(val_dir, "val+val")


def test_evaluate_detector_max_images_keeps_only_their_ground_truth(val_dir):
    metrics, detections = evaluate_detector(LookupDetector(), val_dir, "val", max_images=2)
    assert metrics["num_images"] == 2 and {d["image_id"] for d in detections} == {100, 101}
    assert metrics["AP"] == pytest.approx(1.0)  # the other images' boxes do not count as missed


@pytest.mark.slow
def test_keras_and_saved_model_detectors_decode_the_same_raw_outputs(tmp_path, val_dir):
    """A SavedModel laid out like `train`'s (signature images -> box_encodings, class_logits,
    config.json and labels.txt in the run directory around it) and a Keras-style callable with
    the same raw outputs give the same detections. Fixed raw outputs stand in for a trained
    SSD, which keeps this test fast; the run directory itself is tested by the trainer."""
    import json

    import tensorflow as tf

    from edge_trash.models.anchors import generate_anchors
    from edge_trash.models.config import get_preset
    from edge_trash.train.evaluate import KerasDetector, SavedModelDetector, load_detector

    config = get_preset("demo").replace(width_multiplier=0.35, input_size=128, num_classes=3)
    n = len(generate_anchors(config))
    rng = np.random.default_rng(0)
    encodings = tf.constant(rng.normal(0, 0.5, (1, n, 4)).astype(np.float32))
    logits = tf.constant(rng.normal(-3, 2, (1, n, 4)).astype(np.float32))

    class Raw(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, 128, 128, 3], tf.float32, name="images")])
        def serve(self, images):
            zero = tf.reduce_mean(images) * 0.0
            return {"box_encodings": encodings + zero, "class_logits": logits + zero}

    run = tmp_path / "run"
    raw = Raw()
    tf.saved_model.save(raw, str(run / "saved_model"), signatures={"serving_default": raw.serve})
    (run / "config.json").write_text(json.dumps({"model": config.to_dict(), "train": {}}))
    (run / "labels.txt").write_text("bottle\ncan\ncup\n")

    saved_detector = load_detector(run / "saved_model")
    keras_detector = KerasDetector(lambda images, training: (encodings, logits), config,
                                   ["bottle", "can", "cup"])
    assert isinstance(saved_detector, SavedModelDetector) and saved_detector.input_size == 128
    assert saved_detector.class_names == ["bottle", "can", "cup"]
    image = rng.integers(0, 256, (90, 120, 3), dtype=np.uint8)
    (kb, kc, ks), (sb, sc, ss) = keras_detector.detect(image), saved_detector.detect(image)
    assert 0 < len(kc) <= config.max_detections
    assert kc.min() >= 1 and kc.max() <= 3  # 1-based, background column excluded
    assert (kb >= 0).all() and (kb <= 1).all() and (np.diff(ks) <= 1e-6).all()
    assert ks.min() >= config.score_threshold
    np.testing.assert_allclose(sb, kb, atol=1e-5)
    np.testing.assert_array_equal(sc, kc)
    np.testing.assert_allclose(ss, ks, atol=1e-5)
    metrics, _ = evaluate_detector(saved_detector, val_dir, "val", max_images=2)
    assert metrics["num_images"] == 2 and 0.0 <= metrics["AP"] <= 1.0


def test_load_detector_rejects_what_it_cannot_evaluate(tmp_path):
    from edge_trash.train.evaluate import load_detector

    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(EvaluationError, match="expected a RUN_DIR, a SavedModel folder or a .tflite"):
        load_detector(tmp_path / "notes.txt")
    with pytest.raises(EvaluationError, match="neither a run directory"):
        load_detector(tmp_path)
    (tmp_path / "bundle").mkdir()
    (tmp_path / "bundle" / "model_int8.tflite").write_bytes(b"")
    with pytest.raises(EvaluationError) as err:
        load_detector(tmp_path / "bundle")
    assert str(err.value) == (f"--model {tmp_path / 'bundle'}: an export bundle; evaluate one of its models: "
                              f"--model {tmp_path / 'bundle' / 'model_int8.tflite'}")
    (tmp_path / "saved_model.pb").write_bytes(b"")
    with pytest.raises(EvaluationError, match="SavedModel without a config.json"):
        load_detector(tmp_path)


def test_a_tflite_file_that_is_not_a_model_is_named_with_what_is_wrong(tmp_path):
    """TFLite's own words were the whole message: 'mmap of size 0 requested.The model allocation is null/empty'."""
    from edge_trash.train.evaluate import load_detector

    empty, junk = tmp_path / "empty.tflite", tmp_path / "junk.tflite"
    empty.write_bytes(b"")
    junk.write_bytes(b"PK\x03\x04" + bytes(60))  # a zip renamed
    with pytest.raises(EvaluationError) as err:
        load_detector(empty)
    assert str(err.value) == (f"{empty}: not a TFLite model: expected the flatbuffer identifier 'TFL3' at bytes 4-8, "
                              "found b''. Pass the .tflite file written by the TFLite converter.")
    with pytest.raises(EvaluationError, match=r"junk.tflite: not a TFLite model: expected the flatbuffer identifier"):
        load_detector(junk)


def test_a_tflite_model_tflite_refuses_to_load_is_named_with_tflites_words_on_one_line(tmp_path):
    """A well-formed flatbuffer the interpreter refuses (an op version newer than this TFLite)."""
    from export_helpers import with_op_version

    from edge_trash.train.evaluate import load_detector

    source = SHARED / "edgetpu" / "models" / "mobilenet_v1_0.25_128_quant.tflite"
    if not source.is_file():
        pytest.skip(f"{source} not present")
    newer = tmp_path / "newer.tflite"
    newer.write_bytes(with_op_version(source.read_bytes(), 25, 99))  # SOFTMAX
    with pytest.raises(EvaluationError) as err:
        load_detector(newer)
    assert str(err.value) == (f"{newer}: TFLite cannot load it (Didn't find op for builtin opcode 'SOFTMAX' version "
                              "'99'. An older version of this builtin might be supported. Are you using an old "
                              "TFLite binary with a newer model? Registration failed.); pass a model "
                              "`edge-trash export` wrote (BUNDLE/model_int8.tflite)")


# ai_edge_litert's Delegate.__del__ raises on a delegate that failed to load (its bug, not ours).
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_edgetpu_model_without_a_tpu_says_what_to_do_instead():
    from edge_trash.train.evaluate import TFLiteDetector

    compiled = SHARED / "edgetpu" / "models" / "ssd_mobilenet_v2_coco_quant_postprocess_segment_1_of_2_edgetpu.tflite"
    if not compiled.is_file():
        pytest.skip(f"{compiled} not present")
    try:
        from ai_edge_litert.interpreter import load_delegate

        load_delegate("libedgetpu.so.1")
    except (ValueError, OSError):
        pass
    else:
        pytest.skip("an Edge TPU is attached: the no-TPU message cannot be checked here")
    with pytest.raises(EvaluationError, match="needs an attached Edge TPU and libedgetpu.so.1 .*"
                                              "evaluate the int8 .tflite it was compiled from"):
        TFLiteDetector(compiled)


def test_metrics_table_aligns_long_wide_and_decomposed_class_names():
    """Columns were padded by characters: a CJK name (two columns a character) or an accent written apart (none)
    pushed its row's numbers off the header's."""
    from edge_trash.terminal import display_width

    long_name = "Other plastic bottle cap (screw-on, any colour)"
    m = {"per_class": {"can": 0.5, long_name: 0.25, "塑料瓶": -1.0, "cafe\u0301": 0.125},
         **{k: 0.0 for k in ("AP", "AP50", "AP75", "APs", "APm", "APl")}}
    lines = format_metrics_table(m, {"can": 2, long_name: 13, "塑料瓶": 0, "cafe\u0301": 1}).splitlines()
    width = len(long_name)
    assert lines[0] == "class" + " " * (width - 5) + "   boxes      AP"
    assert lines[1] == "can" + " " * (width - 3) + "       2   0.500"
    assert lines[2] == long_name + "      13   0.250"
    assert lines[3] == "塑料瓶" + " " * (width - 6) + "       0     n/a"
    assert lines[4] == "cafe\u0301" + " " * (width - 4) + "       1   0.125"
    assert {display_width(line) for line in lines[:5]} == {width + 16}
    assert display_width("🥤 cup") == 6 and display_width("cafe\u0301") == 4
