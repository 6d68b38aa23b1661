"""Float vs int8 parity: AP drop, per-class drop, reproduced detections, and int8 CPU latency.

Pure numpy except :func:`measure_cpu_latency` (ai-edge-litert) and :func:`evaluate_parity`
(which runs the evaluation stage's single code path, ``edge_trash.train.evaluate``).
"""

from __future__ import annotations

import dataclasses
import os
import statistics
import time
from typing import Any, Dict, Iterable, List, Mapping, Optional, Tuple

import numpy as np

from edge_trash.terminal import plural

DEFAULT_MAX_AP_DROP = 2.0  # AP50 points
LATENCY_RUNS = 50
MATCH_IOU = 0.5
#: Float detections below this score are not counted when asking "does int8 reproduce it":
#: near-threshold detections flicker under any perturbation and would only add noise.
DEFAULT_MATCH_MIN_SCORE = 0.3


@dataclasses.dataclass
class ImageDetections:
    """Detections of one image: boxes [K,4] (ymin, xmin, ymax, xmax, any consistent unit), class ids, scores."""

    boxes: np.ndarray
    class_ids: np.ndarray
    scores: np.ndarray

    @classmethod
    def empty(cls) -> "ImageDetections":
        """No detections."""
        return cls(np.zeros((0, 4), np.float32), np.zeros((0,), np.int64), np.zeros((0,), np.float32))


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix [len(a), len(b)] of boxes given as (ymin, xmin, ymax, xmax)."""
    a = np.asarray(a, np.float64).reshape(-1, 4)
    b = np.asarray(b, np.float64).reshape(-1, 4)
    ymin = np.maximum(a[:, None, 0], b[None, :, 0])
    xmin = np.maximum(a[:, None, 1], b[None, :, 1])
    ymax = np.minimum(a[:, None, 2], b[None, :, 2])
    xmax = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(ymax - ymin, 0, None) * np.clip(xmax - xmin, 0, None)
    area_a = np.clip(a[:, 2] - a[:, 0], 0, None) * np.clip(a[:, 3] - a[:, 1], 0, None)
    area_b = np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def count_reproduced(reference: ImageDetections, candidate: ImageDetections,
                     iou_threshold: float = MATCH_IOU, min_score: float = 0.0) -> Tuple[int, int]:
    """Greedy one-to-one matching, highest reference score first.

    Returns ``(matched, total)``: of the ``total`` reference detections scoring >= ``min_score``,
    ``matched`` have a distinct candidate detection of the SAME class with IoU >= ``iou_threshold``.
    """
    keep = np.asarray(reference.scores) >= min_score
    ref_boxes = np.asarray(reference.boxes).reshape(-1, 4)[keep]
    ref_classes = np.asarray(reference.class_ids)[keep]
    ref_scores = np.asarray(reference.scores)[keep]
    total = int(len(ref_boxes))
    if total == 0 or len(candidate.boxes) == 0:
        return 0, total
    ious = box_iou(ref_boxes, candidate.boxes)
    same_class = ref_classes[:, None] == np.asarray(candidate.class_ids)[None, :]
    ious = np.where(same_class, ious, -1.0)
    used = np.zeros(len(candidate.boxes), bool)
    matched = 0
    for r in np.argsort(-ref_scores, kind="stable"):
        row = np.where(used, -1.0, ious[r])
        best = int(np.argmax(row))
        if row[best] >= iou_threshold:
            used[best] = True
            matched += 1
    return matched, total


def reproduced_fraction(reference: Mapping[Any, ImageDetections], candidate: Mapping[Any, ImageDetections],
                        iou_threshold: float = MATCH_IOU,
                        min_score: float = DEFAULT_MATCH_MIN_SCORE) -> Dict[str, Any]:
    """Fraction of reference (float) detections the candidate (int8) reproduces, over all images.

    Returns ``{"fraction", "matched", "total", "iou_threshold", "min_score"}``; ``fraction`` is
    None (n/a, not "100% of 0") when the reference has no detection at or above ``min_score``.
    """
    matched = total = 0
    for key, ref in reference.items():
        m, t = count_reproduced(ref, candidate.get(key, ImageDetections.empty()), iou_threshold, min_score)
        matched += m
        total += t
    return {"fraction": matched / total if total else None, "matched": matched, "total": total,
            "iou_threshold": iou_threshold, "min_score": min_score}


def group_coco_detections(detections: Iterable[Mapping[str, Any]]) -> Dict[Any, ImageDetections]:
    """Group COCO result dicts (``image_id``, ``category_id``, ``bbox`` [x,y,w,h], ``score``) by image."""
    grouped: Dict[Any, List[Mapping[str, Any]]] = {}
    for det in detections:
        grouped.setdefault(det["image_id"], []).append(det)
    out: Dict[Any, ImageDetections] = {}
    for image_id, dets in grouped.items():
        boxes = np.array([[d["bbox"][1], d["bbox"][0], d["bbox"][1] + d["bbox"][3], d["bbox"][0] + d["bbox"][2]]
                          for d in dets], np.float64)
        out[image_id] = ImageDetections(boxes, np.array([int(d["category_id"]) for d in dets]),
                                        np.array([float(d["score"]) for d in dets]))
    return out


def _points(value: Optional[float]) -> Optional[float]:
    """A pycocotools fraction as AP points (None when undefined: pycocotools' -1)."""
    if value is None or value < 0:
        return None
    return round(100.0 * float(value), 3)


def _drop(before: Optional[float], after: Optional[float]) -> Optional[float]:
    if before is None or after is None:
        return None
    return round(before - after, 3)


def nothing_detected_warning(float_metrics: Mapping[str, Any], reproduced: Mapping[str, Any],
                             split: str = "val") -> Optional[str]:
    """Why parity cannot be judged when the float model found nothing on the parity images (no detection
    at or above the match score, and no AP50), else None: int8 then "reproduces 100% of 0 detections" and
    "loses 0 points" of an AP of 0, which says nothing about the int8 model."""
    if reproduced.get("total"):
        return None
    ap50 = _points(float_metrics.get("AP50"))
    if ap50:
        return None
    images = float_metrics.get("num_images")
    detections = float_metrics.get("num_detections")
    on = f"the {plural(images, 'image')} of the {split} split" if images is not None else f"the {split} split"
    found = (f"{detections} detections, none scoring {reproduced.get('min_score', DEFAULT_MATCH_MIN_SCORE)} or more"
             if detections else "no detection")
    return (f"parity n/a: the float model found nothing on {on} ({found}; AP50 {ap50 if ap50 is not None else 'n/a'}),"
            " so there is nothing to compare the int8 model with and its accuracy is unchecked; is the model "
            "undertrained? Check its val AP in the run's metrics.json, train longer, then export again")


def parity_report(float_metrics: Mapping[str, Any], int8_metrics: Mapping[str, Any],
                  reproduced: Mapping[str, Any], max_ap50_drop: float = DEFAULT_MAX_AP_DROP,
                  latency: Optional[Mapping[str, Any]] = None, split: str = "val") -> Dict[str, Any]:
    """The content of ``parity.json``: AP/AP50 of both models in points, drops, per-class drops.

    ``passed`` is False when the AP50 drop exceeds ``max_ap50_drop`` points, and None (n/a) when the
    float model found nothing on the parity images: ``not_applicable`` then says so
    (:func:`nothing_detected_warning`).
    """
    f_ap, i_ap = _points(float_metrics.get("AP")), _points(int8_metrics.get("AP"))
    f_ap50, i_ap50 = _points(float_metrics.get("AP50")), _points(int8_metrics.get("AP50"))
    per_class = {}
    float_classes = float_metrics.get("per_class", {}) or {}
    int8_classes = int8_metrics.get("per_class", {}) or {}
    float_ap50 = float_metrics.get("per_class_AP50", {}) or {}
    int8_ap50 = int8_metrics.get("per_class_AP50", {}) or {}
    for name in float_classes:
        before, after = _points(float_classes.get(name)), _points(int8_classes.get(name))
        per_class[name] = {"float_AP": before, "int8_AP": after, "drop": _drop(before, after)}
        if name in float_ap50:  # the gate's measure: the advice ranks classes by it
            before50, after50 = _points(float_ap50.get(name)), _points(int8_ap50.get(name))
            per_class[name].update(float_AP50=before50, int8_AP50=after50, drop_AP50=_drop(before50, after50))
    ap50_drop = _drop(f_ap50, i_ap50)
    not_applicable = nothing_detected_warning(float_metrics, reproduced, split)
    passed: Optional[bool] = ap50_drop is None or ap50_drop <= max_ap50_drop
    if not_applicable and passed:
        passed = None
    return {
        "float": {"AP": f_ap, "AP50": f_ap50},
        "int8": {"AP": i_ap, "AP50": i_ap50},
        "drop_points": {"AP": _drop(f_ap, i_ap), "AP50": ap50_drop},
        "per_class": per_class,
        "reproduced": dict(reproduced),
        "max_ap50_drop": max_ap50_drop,
        "passed": passed,
        "not_applicable": not_applicable,
        "int8_cpu_latency_ms": dict(latency) if latency else None,
    }


def parity_advice(report: Mapping[str, Any]) -> str:
    """What to try when the int8 model loses too much AP50 (names the classes whose AP50 dropped most; AP for a
    report made without per-class AP50)."""
    classes = report.get("per_class", {})
    key = "drop_AP50" if any("drop_AP50" in v for v in classes.values()) else "drop"
    worst = sorted(((v.get(key), k) for k, v in classes.items() if v.get(key) is not None), reverse=True)[:3]
    worst_text = ", ".join(f"{name} (-{drop:.1f})" for drop, name in worst if drop > 0) or "none stands out"
    measure = "AP50" if key == "drop_AP50" else "AP"
    return (f"int8 AP50 dropped {report['drop_points']['AP50']:.2f} points (limit --max-ap-drop "
            f"{report['max_ap50_drop']:.2f}); worst classes by {measure}: {worst_text}. Try more calibration images "
            "(--calibration-images 500, drawn stratified from the train split), check that rare classes "
            "have calibration images, or retrain with quantization-friendly ranges (ReLU6 heads, fewer "
            "outlier logits); --max-ap-drop raises the limit if the loss is acceptable.")


def measure_cpu_latency(tflite_path: str, runs: int = LATENCY_RUNS, warmup: int = 3,
                        num_threads: Optional[int] = None) -> Dict[str, Any]:
    """Median/min/max milliseconds of ``runs`` invocations of an int8 .tflite on the CPU (ai-edge-litert)."""
    from ai_edge_litert.interpreter import Interpreter

    if runs < 1:
        raise ValueError(f"runs must be >= 1, got {runs}")
    interpreter = Interpreter(model_path=tflite_path, num_threads=num_threads)
    interpreter.allocate_tensors()
    detail = interpreter.get_input_details()[0]
    rng = np.random.default_rng(0)
    info = np.iinfo(detail["dtype"]) if np.issubdtype(detail["dtype"], np.integer) else None
    if info is not None:
        data = rng.integers(info.min, info.max, size=detail["shape"], endpoint=True).astype(detail["dtype"])
    else:
        data = rng.uniform(0, 255, size=detail["shape"]).astype(detail["dtype"])
    interpreter.set_tensor(detail["index"], data)
    for _ in range(warmup):
        interpreter.invoke()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        interpreter.invoke()
        times.append((time.perf_counter() - start) * 1000.0)
    return {"median_ms": round(statistics.median(times), 3), "min_ms": round(min(times), 3),
            "max_ms": round(max(times), 3), "runs": runs, "num_threads": num_threads}


def evaluate_parity(float_model: str, int8_model: str, data_dir: str, split: str = "val",
                    max_ap50_drop: float = DEFAULT_MAX_AP_DROP, latency_runs: int = LATENCY_RUNS,
                    match_min_score: float = DEFAULT_MATCH_MIN_SCORE) -> Dict[str, Any]:
    """Evaluate both models with ``edge_trash.train.evaluate`` and return :func:`parity_report`'s dict."""
    from edge_trash.train.evaluate import evaluate_detector, load_detector

    float_metrics, float_dets = evaluate_detector(load_detector(float_model), data_dir, split=split)
    int8_metrics, int8_dets = evaluate_detector(load_detector(int8_model), data_dir, split=split)
    reproduced = reproduced_fraction(group_coco_detections(float_dets), group_coco_detections(int8_dets),
                                     min_score=match_min_score)
    latency = measure_cpu_latency(int8_model, runs=latency_runs)
    report = parity_report(float_metrics, int8_metrics, reproduced, max_ap50_drop, latency, split)
    report.update(split=split, data=os.path.abspath(data_dir), images=float_metrics.get("num_images"),
                  detections={"float": float_metrics.get("num_detections"),
                              "int8": int8_metrics.get("num_detections")})
    return report
