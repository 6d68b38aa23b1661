"""COCO evaluation of the model being trained, on the val split, in the training process.

Runs the Keras model and the float decoder (``decode_detections``) over the val
dataset and scores the detections with ``edge_trash.train.evaluate.coco_metrics``
(the project's single COCO path). Boxes are scored in pixels of the model input.
"""

from __future__ import annotations

import contextlib
import io
from typing import Any, Dict, Iterable, List, Sequence

from edge_trash.models.config import SSDConfig

METRIC_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")


def coco_metrics(gt_coco: Dict[str, Any], detections: List[Dict[str, Any]]) -> Dict[str, Any]:
    """COCO box metrics (pycocotools fractions, -1 when undefined) and ``per_class`` AP.

    Delegates to ``edge_trash.train.evaluate.coco_metrics`` when that module exists.
    """
    try:
        from edge_trash.train.evaluate import coco_metrics as project_coco_metrics
    except ImportError:
        return _pycocotools_metrics(gt_coco, detections)
    return project_coco_metrics(gt_coco, detections)


def _pycocotools_metrics(gt_coco: Dict[str, Any], detections: List[Dict[str, Any]]) -> Dict[str, Any]:
    import numpy as np
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    if not detections:
        metrics: Dict[str, Any] = {key: 0.0 for key in METRIC_KEYS}
        metrics["per_class"] = {c["name"]: 0.0 for c in gt_coco["categories"]}
        return metrics
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = gt_coco
        gt.createIndex()
        dt = gt.loadRes(detections)
        ev = COCOeval(gt, dt, "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    metrics = {key: float(v) for key, v in zip(METRIC_KEYS, ev.stats)}
    per_class = {}
    precision = ev.eval["precision"]  # [T, R, K, A, M]
    for k, cat_id in enumerate(ev.params.catIds):
        p = precision[:, :, k, 0, -1]
        p = p[p > -1]
        name = gt.cats[cat_id]["name"]
        per_class[name] = float(np.mean(p)) if p.size else -1.0
    metrics["per_class"] = per_class
    return metrics


def make_predict_fn(model, config: SSDConfig):
    """A ``tf.function`` mapping float images ``[B, S, S, 3]`` (0..255) to decoded detections."""
    import tensorflow as tf

    from edge_trash.models.postprocess import decode_detections

    @tf.function
    def predict(images):
        boxes, logits = model(images, training=False)
        return decode_detections(boxes, logits, config)

    return predict


def evaluate_model(predict_fn, dataset: Iterable, config: SSDConfig, class_names: Sequence[str],
                   max_images: int = 0) -> Dict[str, Any]:
    """Run ``predict_fn`` over ``dataset`` batches ``(images, {"boxes", "classes", ...})``.

    Returns the COCO metrics dict plus ``num_images``.
    """
    size = float(config.input_size)
    images_out: List[Dict[str, Any]] = []
    annotations: List[Dict[str, Any]] = []
    detections: List[Dict[str, Any]] = []
    image_id = 0
    for images, labels in dataset:
        out = predict_fn(images)
        gt_boxes = labels["boxes"].numpy()
        gt_classes = labels["classes"].numpy()
        boxes, classes = out["boxes"].numpy(), out["classes"].numpy()
        scores, counts = out["scores"].numpy(), out["num_detections"].numpy()
        for b in range(gt_boxes.shape[0]):
            if max_images and image_id >= max_images:
                break
            image_id += 1
            images_out.append({"id": image_id, "width": int(size), "height": int(size)})
            for box, cls in zip(gt_boxes[b], gt_classes[b]):
                if cls == 0:  # padding
                    continue
                x, y = box[1] * size, box[0] * size
                w, h = (box[3] - box[1]) * size, (box[2] - box[0]) * size
                annotations.append({"id": len(annotations) + 1, "image_id": image_id,  # cls < 0: a crowd box
                                    "category_id": abs(int(cls)), "bbox": [float(x), float(y), float(w), float(h)],
                                    "area": float(w * h), "iscrowd": int(cls < 0)})
            for k in range(int(counts[b])):
                box = boxes[b, k]
                detections.append({
                    "image_id": image_id, "category_id": int(classes[b, k]) + 1,
                    "bbox": [float(box[1] * size), float(box[0] * size),
                             float((box[3] - box[1]) * size), float((box[2] - box[0]) * size)],
                    "score": float(scores[b, k])})
        if max_images and image_id >= max_images:
            break
    gt_coco = {"images": images_out, "annotations": annotations,
               "categories": [{"id": i + 1, "name": n} for i, n in enumerate(class_names)]}
    metrics = coco_metrics(gt_coco, detections)
    metrics["num_images"] = image_id
    return metrics
