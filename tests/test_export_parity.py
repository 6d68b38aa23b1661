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
    assert reproduced_fraction({}, {})["fraction"] == 1.0


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


def test_measure_cpu_latency_on_a_real_int8_model():
    model = SHARED_MODELS / "mobilenet_v1_0.25_128_quant.tflite"
    if not model.exists():
        pytest.skip(f"{model} not present")
    latency = measure_cpu_latency(str(model), runs=5, warmup=1)
    assert latency["runs"] == 5
    assert 0 < latency["min_ms"] <= latency["median_ms"] <= latency["max_ms"]
    with pytest.raises(ValueError, match="runs must be >= 1"):
        measure_cpu_latency(str(model), runs=0)
