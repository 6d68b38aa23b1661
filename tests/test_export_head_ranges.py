"""Head ranges: int8 ranges of the class logits and boxes fitted to what can become a detection."""

from __future__ import annotations

import math

import numpy as np
import pytest

from edge_trash.export.head_ranges import BOX_MARGIN, LOGIT_MARGIN, fit_head_ranges
from export_helpers import TinyConfig, random_images, tiny_anchors, tiny_ssd


def test_fit_head_ranges_values():
    t = 0.05
    t_logit = math.log(t / (1 - t))  # -2.944
    logits = np.array([[[30.0, -40.0, -5.0],    # background-only anchor
                        [-1.0, 2.5, -3.0],      # passes: best foreground 2.5
                        [0.0, -2.0, 1.0]]])     # passes: best foreground 1.0
    boxes = np.array([[[-30.0, 0.0, 0.0, 12.0],
                       [-1.0, 2.0, 0.5, 0.0],
                       [1.0, -0.5, 3.0, 0.0]]])
    r = fit_head_ranges(boxes, logits, t)
    assert r.class_logits == pytest.approx((t_logit - LOGIT_MARGIN, 2.5))
    span = 3.0 - (-1.0)  # encodings of the two passing anchors
    assert r.box_encodings == pytest.approx((-1.0 - BOX_MARGIN * span, 3.0 + BOX_MARGIN * span))
    assert r.observed_logits == (-40.0, 30.0) and r.observed_boxes == (-30.0, 12.0)
    assert r.anchors_passing == 2
    assert r.to_dict()["class_logits"] == pytest.approx([t_logit - LOGIT_MARGIN, 2.5])


def test_fit_head_ranges_never_widens_and_keeps_boxes_without_detections():
    logits = np.full((1, 4, 3), -6.0)  # nothing passes 0.05
    logits[0, 0, 0] = -5.5
    boxes = np.linspace(-1, 1, 16).reshape(1, 4, 4)
    r = fit_head_ranges(boxes, logits, 0.05)
    assert r.class_logits == (-6.0, -5.5)  # all below the threshold: the calibrated range
    assert r.box_encodings is None and r.anchors_passing == 0
    with pytest.raises(ValueError, match="score_threshold must be in"):
        fit_head_ranges(boxes, logits, 1.0)


@pytest.mark.slow
def test_conversion_quantizes_logits_over_the_fitted_range():
    from ai_edge_litert.interpreter import Interpreter

    from edge_trash.export.detection_tflite import convert_detection_model, postprocess_params_from_config

    config = TinyConfig()
    model = tiny_ssd(config.num_classes, planted_class=2)
    # A range hog like a trained SSD's: background logits around +20 the postprocess never reads.
    for layer in model.layers:
        if layer.name.startswith("conv2d") and layer.filters == 2 * (config.num_classes + 1):
            kernel, bias = layer.get_weights()
            bias = bias.reshape(2, -1)
            bias[:, 0] += 20.0
            layer.set_weights([kernel, bias.reshape(-1)])
    result = convert_detection_model(model, tiny_anchors(), postprocess_params_from_config(config),
                                     lambda: random_images(6))
    lo, hi = result.head_ranges.class_logits
    assert result.head_ranges.observed_logits[1] > 15 and hi < 10  # background clipped away
    interpreter = Interpreter(model_content=result.model)
    tensors = {t["index"]: t for t in interpreter.get_tensor_details()}
    logistic = next(op for op in interpreter._get_ops_details() if op["op_name"] == "LOGISTIC")
    scale, zero_point = tensors[logistic["inputs"][0]]["quantization"]
    assert scale == pytest.approx((hi - lo) / 255, rel=1e-3)
    assert zero_point == pytest.approx(-128 - lo / scale, abs=1)
