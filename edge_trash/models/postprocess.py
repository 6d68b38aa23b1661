"""Float decoding of raw SSD outputs (Keras / SavedModel evaluation), with TF ops.

Uses Model Garden's ``box_ops.decode_boxes`` (the inverse of the ``AnchorLabeler``'s
Faster R-CNN box coder) and TensorFlow's combined NMS. The int8 TFLite model does
the same with ``TFLite_Detection_PostProcess`` (same anchors, same scales).
"""

from __future__ import annotations

from typing import Dict

from edge_trash.models.anchors import generate_anchor_corners
from edge_trash.models.config import SSDConfig


def decode_boxes(box_encodings, config: SSDConfig):
    """``[B, N, 4]`` encodings -> ``[B, N, 4]`` normalized (ymin, xmin, ymax, xmax), unclipped."""
    import tensorflow as tf
    from official.vision.ops import box_ops  # Model Garden

    anchors = tf.constant(generate_anchor_corners(config))
    return box_ops.decode_boxes(tf.cast(box_encodings, tf.float32), anchors[tf.newaxis],
                                weights=list(config.box_coder_scales))


def decode_detections(box_encodings, class_logits, config: SSDConfig) -> Dict[str, "object"]:
    """Decode and non-max-suppress raw model outputs.

    Returns ``dict(boxes [B, K, 4] normalized ymin, xmin, ymax, xmax clipped to [0, 1],
    classes [B, K] int32 0-based without background, scores [B, K],
    num_detections [B] int32)`` with ``K = config.max_detections``; rows past
    ``num_detections`` are zero. Scores are sigmoid probabilities (background column dropped).
    """
    import tensorflow as tf

    boxes = decode_boxes(box_encodings, config)
    scores = tf.sigmoid(tf.cast(class_logits, tf.float32))[..., 1:]
    k = config.max_detections
    nmsed = tf.image.combined_non_max_suppression(
        boxes[:, :, tf.newaxis, :], scores, max_output_size_per_class=k, max_total_size=k,
        iou_threshold=config.iou_threshold, score_threshold=config.score_threshold,
        clip_boxes=True)
    return {
        "boxes": nmsed.nmsed_boxes,
        "classes": tf.cast(nmsed.nmsed_classes, tf.int32),
        "scores": nmsed.nmsed_scores,
        "num_detections": tf.cast(nmsed.valid_detections, tf.int32),
    }
