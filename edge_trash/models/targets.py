"""Per-anchor training targets, computed with Model Garden's ``AnchorLabeler``.

``make_target_fn(config)`` returns a function that maps ONE sample's ground truth
(boxes ``[M, 4]`` normalized ymin, xmin, ymax, xmax; classes ``[M]`` int32 1-based,
0 = padding) to the targets the loss reads. The input pipeline calls it per sample
(``make_dataset(..., target_fn=...)``), before batching.
"""

from __future__ import annotations

from typing import Callable, Dict

from edge_trash.models.anchors import generate_anchor_corners
from edge_trash.models.config import SSDConfig

# Keys of the per-sample target dict (each gets a leading batch dimension once batched).
CLS_TARGETS = "cls_targets"  # [N] int32: 0 = background, k = class id k (1-based)
BOX_TARGETS = "box_targets"  # [N, 4] float32 encoded (ty, tx, th, tw) * box_coder_scales
CLS_WEIGHTS = "cls_weights"  # [N] float32: 0 for anchors ignored (IoU between thresholds)
BOX_WEIGHTS = "box_weights"  # [N] float32: 1 for positive anchors
TARGET_KEYS = (CLS_TARGETS, BOX_TARGETS, CLS_WEIGHTS, BOX_WEIGHTS)


def make_target_fn(config: SSDConfig) -> Callable:
    """Return ``target_fn(boxes [M, 4], classes [M]) -> dict`` of per-anchor targets.

    Rows with class 0 (padding) are ignored. Every ground-truth box is matched to its
    best anchor even below ``match_threshold`` (Model Garden's forced column match).
    """
    import tensorflow as tf
    from official.vision.ops import anchor as mg_anchor  # Model Garden

    anchors = generate_anchor_corners(config)
    num = anchors.shape[0]
    # One "level" of height 1 and width N with one anchor per location: the labeler then
    # returns targets in our flat output order.
    anchor_dict = {"all": tf.constant(anchors.reshape(1, num, 4))}
    labeler = mg_anchor.AnchorLabeler(
        match_threshold=config.match_threshold,
        unmatched_threshold=config.unmatched_threshold,
        box_coder_weights=list(config.box_coder_scales))

    def target_fn(boxes, classes) -> Dict[str, "tf.Tensor"]:
        boxes = tf.reshape(tf.cast(boxes, tf.float32), [-1, 4])
        classes = tf.reshape(tf.cast(classes, tf.int32), [-1])
        keep = classes > 0
        boxes = tf.boolean_mask(boxes, keep)
        classes = tf.boolean_mask(classes, keep)
        cls_targets, box_targets, _, cls_weights, box_weights = labeler.label_anchors(
            anchor_dict, boxes, tf.expand_dims(classes, -1))
        cls = tf.reshape(cls_targets["all"], [num])
        cls = tf.where(cls > 0, cls, tf.zeros_like(cls))  # -1 (negative/ignored) -> background
        box = tf.reshape(box_targets["all"], [num, 4])
        box_weights = tf.reshape(box_weights, [num])
        return {
            CLS_TARGETS: tf.cast(cls, tf.int32),
            BOX_TARGETS: box * tf.expand_dims(box_weights, -1),  # zeros where not positive
            CLS_WEIGHTS: tf.reshape(cls_weights, [num]),
            BOX_WEIGHTS: box_weights,
        }

    return target_fn


def make_batch_target_fn(config: SSDConfig) -> Callable:
    """Batched form: ``fn(labels)`` with ``labels = {"boxes": [B, M, 4], "classes": [B, M], ...}``.

    For a pipeline that yields padded labels (the ``make_dataset`` contract without
    ``target_fn``); maps ``make_target_fn`` over the batch.
    """
    import tensorflow as tf

    target_fn = make_target_fn(config)
    spec = _target_spec(config)

    def batch_fn(labels):
        return tf.map_fn(lambda x: target_fn(x[0], x[1]), (labels["boxes"], labels["classes"]),
                         fn_output_signature=spec)

    return batch_fn


def _target_spec(config: SSDConfig):
    import tensorflow as tf

    from edge_trash.models.anchors import num_anchors

    n = num_anchors(config)
    return {
        CLS_TARGETS: tf.TensorSpec([n], tf.int32),
        BOX_TARGETS: tf.TensorSpec([n, 4], tf.float32),
        CLS_WEIGHTS: tf.TensorSpec([n], tf.float32),
        BOX_WEIGHTS: tf.TensorSpec([n], tf.float32),
    }
