"""Float vs int8 parity: matching, AP drops, the gate's advice, CPU latency."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edge_trash.export.parity import (ImageDetections, box_iou, count_reproduced, group_coco_detections,
                                      measure_cpu_latency, parity_advice, parity_report, reproduced_fraction)

SHARED_MODELS = Path(__file__).resolve().parents[2] / "shared" / "edgetpu" / "models"


def test_box_iou_values():
    a = np.array([[0, 0, 2, 2], [0, 0, 1, 1]], float)
    b = np.array([[1, 1, 3, 3], [0, 0, 2, 2], [5, 5, 5, 5]], float)
    expected = np.array([[1 / 7, 1.0, 0.0], [0.0, 0.25, 0.0]])
    np.testing.assert_allclose(box_iou(a, b), expected)
    assert box_iou(np.zeros((0, 4)), b).shape == (0, 3)


def test_count_reproduced_needs_same_class_iou_and_one_to_one():
    ref = ImageDetections(np.array([[0, 0, 10, 10], [0, 0, 10, 10], [20, 20, 30, 30]], float),
                          np.array([1, 1, 2]), np.array([0.9, 0.8, 0.7]))
    cand = ImageDetections(np.array([[0, 0, 10, 9], [20, 20, 30, 30]], float), np.array([1, 3]),
                           np.array([0.85, 0.7]))
    # Only the first reference box matches: the second has no unused candidate left, the third
    # has the wrong class.
    assert count_reproduced(ref, cand) == (1, 3)
    assert count_reproduced(ref, cand, min_score=0.85) == (1, 1)
    assert count_reproduced(ref, ImageDetections.empty()) == (0, 3)
    result = reproduced_fraction({"a": ref, "b": ImageDetections.empty()}, {"a": cand}, min_score=0.0)
    assert result == {"fraction": 1 / 3, "matched": 1, "total": 3, "iou_threshold": 0.5, "min_score": 0.0}
    # nothing to reproduce is n/a, not "100% of 0"
    assert reproduced_fraction({}, {}) == {"fraction": None, "matched": 0, "total": 0, "iou_threshold": 0.5,
                                           "min_score": 0.3}


def test_group_coco_detections_converts_xywh_to_corners():
    dets = [{"image_id": 7, "category_id": 2, "bbox": [10, 20, 30, 40], "score": 0.5},
            {"image_id": 7, "category_id": 1, "bbox": [0, 0, 1, 1], "score": 0.25},
            {"image_id": 9, "category_id": 3, "bbox": [1, 2, 3, 4], "score": 0.75}]
    grouped = group_coco_detections(dets)
    assert sorted(grouped) == [7, 9]
    np.testing.assert_array_equal(grouped[7].boxes, [[20, 10, 60, 40], [0, 0, 1, 1]])
    assert grouped[7].class_ids.tolist() == [2, 1] and grouped[9].scores.tolist() == [0.75]


def test_parity_report_drops_in_points_and_gate():
    float_metrics = {"AP": 0.40, "AP50": 0.60, "per_class": {"can": 0.5, "cup": -1.0}}
    int8_metrics = {"AP": 0.38, "AP50": 0.57, "per_class": {"can": 0.45, "cup": -1.0}}
    reproduced = {"fraction": 0.9, "matched": 9, "total": 10}
    report = parity_report(float_metrics, int8_metrics, reproduced, max_ap50_drop=2.0)
    assert report["float"] == {"AP": 40.0, "AP50": 60.0} and report["int8"] == {"AP": 38.0, "AP50": 57.0}
    assert report["drop_points"] == {"AP": 2.0, "AP50": 3.0}
    assert report["per_class"]["can"] == {"float_AP": 50.0, "int8_AP": 45.0, "drop": 5.0}
    assert report["per_class"]["cup"]["drop"] is None  # undefined (-1) stays undefined
    assert report["passed"] is False
    advice = parity_advice(report)
    assert "3.00 points" in advice and "can (-5.0)" in advice and "--calibration-images" in advice
    assert parity_report(float_metrics, int8_metrics, reproduced, max_ap50_drop=3.0)["passed"] is True
    # with per-class AP50 (the gate's measure), the advice ranks classes by it, not by AP
    float_metrics.update(per_class={"can": 0.5, "cup": 0.3}, per_class_AP50={"can": 0.6, "cup": 0.7})
    int8_metrics.update(per_class={"can": 0.45, "cup": 0.29}, per_class_AP50={"can": 0.6, "cup": 0.62})
    report = parity_report(float_metrics, int8_metrics, reproduced, max_ap50_drop=2.0)
    assert report["per_class"]["cup"] == {"float_AP": 30.0, "int8_AP": 29.0, "drop": 1.0, "float_AP50": 70.0,
                                          "int8_AP50": 62.0, "drop_AP50": 8.0}
    assert "worst classes by AP50: cup (-8.0). " in parity_advice(report)


def test_parity_is_not_applicable_when_the_float_model_finds_nothing():
    nothing = {"AP": 0.0, "AP50": 0.0, "per_class": {"can": 0.0}, "num_images": 12, "num_detections": 0}
    reproduced = reproduced_fraction({}, {})
    report = parity_report(nothing, dict(nothing), reproduced, max_ap50_drop=2.0)
    assert report["passed"] is None and report["drop_points"] == {"AP": 0.0, "AP50": 0.0}
    assert report["not_applicable"] == (
        "parity n/a: the float model found nothing on the 12 images of the val split (no detection; AP50 0.0), so "
        "there is nothing to compare the int8 model with and its accuracy is unchecked; is the model undertrained? "
        "Check its val AP in the run's metrics.json, train longer, then export again")
    faint = dict(nothing, num_detections=40, AP50=-1.0)  # pycocotools' -1: undefined
    assert parity_report(faint, nothing, reproduced, split="test")["not_applicable"] == (
        "parity n/a: the float model found nothing on the 12 images of the test split (40 detections, none scoring "
        "0.3 or more; AP50 n/a), so there is nothing to compare the int8 model with and its accuracy is unchecked; "
        "is the model undertrained? Check its val AP in the run's metrics.json, train longer, then export again")
    # Low-scoring detections that still earn AP: the AP gate stands, only the reproduced share is n/a.
    scoring = dict(nothing, AP50=0.2, num_detections=40)
    report = parity_report(scoring, dict(scoring, AP50=0.1), reproduced, max_ap50_drop=2.0)
    assert report["not_applicable"] is None and report["passed"] is False
    assert parity_report(scoring, scoring, reproduced)["passed"] is True


@pytest.mark.slow
def test_export_warns_and_does_not_pass_when_parity_is_not_applicable(tmp_path, sample_build):
    pytest.importorskip("tensorflow")
    import json

    from export_helpers import TinyConfig, tiny_anchors, tiny_ssd

    from edge_trash.export.bundle import ExitCode, ExportOptions, export_bundle

    data_dir, _ = sample_build
    names = (Path(data_dir) / "labels.txt").read_text().split()
    run = tmp_path / "run"
    run.mkdir()
    (run / "labels.txt").write_text("\n".join(names) + "\n")
    nothing = {"AP": 0.0, "AP50": 0.0, "per_class": {}, "num_images": 5, "num_detections": 0}

    def blind_parity(options, int8_model):
        return parity_report(nothing, nothing, reproduced_fraction({}, {}), options.max_ap_drop)

    result = export_bundle(ExportOptions(model=str(run), data=str(data_dir), out=str(tmp_path / "bundle"),
                                         calibration_images=4, parity=True, latency_runs=1),
                           loader=lambda _: (tiny_ssd(len(names)), TinyConfig(num_classes=len(names)), names,
                                             tiny_anchors()),
                           parity_runner=blind_parity)
    assert result.exit_code == ExitCode.OK
    message = ("parity n/a: the float model found nothing on the 5 images of the val split (no detection; AP50 0.0), "
               "so there is nothing to compare the int8 model with and its accuracy is unchecked; is the model "
               "undertrained? Check its val AP in the run's metrics.json, train longer, then export again")
    assert message in result.warnings
    manifest = json.loads((tmp_path / "bundle" / "manifest.json").read_text())
    assert manifest["parity"]["passed"] is None and manifest["parity"]["not_applicable"] == message


def test_measure_cpu_latency_on_a_real_int8_model():
    model = SHARED_MODELS / "mobilenet_v1_0.25_128_quant.tflite"
    if not model.exists():
        pytest.skip(f"{model} not present")
    latency = measure_cpu_latency(str(model), runs=5, warmup=1)
    assert latency["runs"] == 5
    assert 0 < latency["min_ms"] <= latency["median_ms"] <= latency["max_ms"]
    with pytest.raises(ValueError, match="runs must be >= 1"):
        measure_cpu_latency(str(model), runs=0)
