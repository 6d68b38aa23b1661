"""Anchor labeling (Model Garden AnchorLabeler), loss and decoding agree with each other."""

from __future__ import annotations

import numpy as np
import pytest

from edge_trash.models.config import get_preset


@pytest.fixture(scope="module")
def config():
    return get_preset("demo").replace(width_multiplier=0.35, num_classes=3)


def test_encode_then_decode_returns_the_ground_truth(config):
    import tensorflow as tf

    from edge_trash.models.postprocess import decode_detections
    from edge_trash.models.targets import make_target_fn

    gt = np.array([[0.10, 0.10, 0.40, 0.30], [0.50, 0.45, 0.90, 0.95]], np.float32)
    classes = np.array([2, 3, 0], np.int32)  # trailing padding row
    boxes = np.concatenate([gt, np.zeros([1, 4], np.float32)])
    targets = make_target_fn(config)(tf.constant(boxes), tf.constant(classes))
    cls = targets["cls_targets"].numpy()
    positive = targets["box_weights"].numpy() > 0
    assert positive.sum() >= 2 and set(cls[positive]) == {2, 3}
    assert set(np.unique(cls)) == {0, 2, 3}  # padding row never matched
    assert (targets["box_targets"].numpy()[~positive] == 0).all()

    # Logits that put each anchor on its target class reproduce the boxes exactly.
    logits = np.where(np.eye(config.num_classes + 1)[cls] > 0, 12.0, -12.0)[None]
    out = decode_detections(targets["box_targets"][None], tf.constant(logits, tf.float32), config)
    n = int(out["num_detections"][0])
    assert n == 2
    order = np.argsort(out["boxes"][0, :n, 0].numpy())
    np.testing.assert_allclose(out["boxes"][0, :n].numpy()[order], gt, atol=1e-5)
    np.testing.assert_array_equal(out["classes"][0, :n].numpy()[order], [1, 2])  # 0-based


def test_tiny_box_is_still_matched_to_its_best_anchor(config):
    import tensorflow as tf

    from edge_trash.models.targets import make_target_fn

    box = tf.constant([[0.50, 0.50, 0.52, 0.51]])  # IoU with any anchor << 0.5
    targets = make_target_fn(config)(box, tf.constant([1]))
    assert targets["box_weights"].numpy().sum() == 1
    assert (targets["cls_targets"].numpy() == 1).sum() == 1


def test_image_without_boxes_is_all_background(config):
    import tensorflow as tf

    from edge_trash.models.anchors import num_anchors
    from edge_trash.models.targets import make_target_fn

    targets = make_target_fn(config)(tf.zeros([0, 4]), tf.zeros([0], tf.int32))
    n = num_anchors(config)
    assert (targets["cls_targets"].numpy() == 0).all()
    assert targets["cls_weights"].numpy().sum() == n
    assert targets["box_weights"].numpy().sum() == 0


def test_loss_is_low_for_perfect_predictions_and_high_for_wrong_ones(config):
    import tensorflow as tf

    from edge_trash.models.losses import detection_loss
    from edge_trash.models.targets import make_target_fn

    targets = make_target_fn(config)(tf.constant([[0.1, 0.1, 0.5, 0.5]]), tf.constant([1]))
    batch = {k: v[None] for k, v in targets.items()}
    cls = targets["cls_targets"].numpy()
    right = np.where(np.eye(config.num_classes + 1)[cls] > 0, 9.0, -9.0)[None].astype(np.float32)
    wrong = -right
    good, parts = detection_loss(batch["box_targets"], tf.constant(right), batch)
    bad, _ = detection_loss(batch["box_targets"] + 1.0, tf.constant(wrong), batch)
    assert float(parts["box_loss"]) == 0.0
    assert float(good) < 1e-3
    assert float(bad) > 100 * max(float(good), 1e-6)
    assert float(parts["num_positives"]) == targets["box_weights"].numpy().sum()


def test_model_outputs_match_anchor_count(config):
    from edge_trash.models.anchors import num_anchors
    from edge_trash.models.ssd import build_ssd

    small = config.replace(input_size=128)
    model = build_ssd(small)
    boxes, logits = model.outputs
    assert boxes.shape.as_list() == [None, num_anchors(small), 4]
    assert logits.shape.as_list() == [None, num_anchors(small), small.num_classes + 1]
    # The class-head bias starts at the focal-loss prior: background ~0.99, classes ~0.01.
    import tensorflow as tf

    probs = tf.sigmoid(model(tf.zeros([1, 128, 128, 3]))[1]).numpy()[0]
    assert probs[:, 0].mean() > 0.9 and probs[:, 1:].mean() < 0.1
