"""SSD training loss: Model Garden's sigmoid focal loss + Huber (smooth-L1) box loss.

Both are summed over anchors and divided by the number of positive anchors in the
(per-replica) batch, as RetinaNet and the TF OD API do.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Tuple

from edge_trash.models.targets import BOX_TARGETS, BOX_WEIGHTS, CLS_TARGETS, CLS_WEIGHTS


@dataclass(frozen=True)
class LossConfig:
    """Loss weights and shape parameters."""

    focal_alpha: float = 0.25
    focal_gamma: float = 2.0
    huber_delta: float = 1.0
    box_loss_weight: float = 1.0


def detection_loss(box_encodings, class_logits, targets: Dict[str, "object"],
                   loss_config: LossConfig = LossConfig(), normalizer=None) -> Tuple["object", Dict[str, "object"]]:
    """Return ``(total_loss, parts)`` for one (per-replica) batch.

    ``class_logits`` is ``[B, N, C + 1]`` with column 0 background; the class target
    is the one-hot of ``cls_targets`` over all C + 1 columns (background anchors train
    column 0 up and the rest down). ``parts`` has ``cls_loss``, ``box_loss``, ``num_positives``.
    Both losses are sums over anchors divided by ``normalizer``: by default this batch's positive
    anchors (at least 1); under a strategy, :func:`global_positives` (every replica's), so that the
    replicas' losses add up to the whole batch's.
    """
    import tensorflow as tf
    import tf_keras as keras
    from official.vision.losses import focal_loss  # Model Garden

    class_logits = tf.cast(class_logits, tf.float32)
    box_encodings = tf.cast(box_encodings, tf.float32)
    num_columns = class_logits.shape[-1]
    box_weights = tf.cast(targets[BOX_WEIGHTS], tf.float32)
    cls_weights = tf.cast(targets[CLS_WEIGHTS], tf.float32)
    if normalizer is None:
        normalizer = tf.maximum(tf.reduce_sum(box_weights), 1.0)

    focal = focal_loss.FocalLoss(alpha=loss_config.focal_alpha, gamma=loss_config.focal_gamma,
                                 reduction=keras.losses.Reduction.NONE)
    one_hot = tf.one_hot(targets[CLS_TARGETS], num_columns)
    cls_loss = tf.reduce_sum(focal(one_hot, class_logits), axis=-1)  # [B, N, C + 1] -> [B, N]
    cls_loss = tf.reduce_sum(cls_loss * cls_weights) / normalizer

    huber = keras.losses.Huber(delta=loss_config.huber_delta, reduction=keras.losses.Reduction.NONE)
    # Huber averages over the last axis; * 4 makes it the sum over (ty, tx, th, tw).
    box_loss = huber(targets[BOX_TARGETS][..., tf.newaxis], box_encodings[..., tf.newaxis])
    box_loss = tf.reduce_sum(box_loss * box_weights[..., tf.newaxis]) / normalizer

    total = cls_loss + loss_config.box_loss_weight * box_loss
    return total, {"cls_loss": cls_loss, "box_loss": box_loss, "num_positives": normalizer}


def global_positives(targets: Dict[str, "object"]):
    """The positive anchors of the whole batch, summed over the replicas of the current strategy (at least 1),
    inside a replica context (``strategy.run``, or none: the default strategy's): the normalizer that makes the
    loss of a global batch the same whatever the number of replicas it is split over. Each replica's own count
    gave another loss (10.19 on two replicas against 10.38 on one, for the same batch), and a replica holding
    only background images divided its focal loss by 1."""
    import tensorflow as tf

    positives = tf.stop_gradient(tf.reduce_sum(tf.cast(targets[BOX_WEIGHTS], tf.float32)))
    context = tf.distribute.get_replica_context()
    if context is not None and context.num_replicas_in_sync > 1:
        positives = context.all_reduce(tf.distribute.ReduceOp.SUM, positives)
    return tf.maximum(positives, 1.0)
