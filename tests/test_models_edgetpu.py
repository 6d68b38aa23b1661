"""The SSD converts to a full-int8 TFLite model whose every op the Edge TPU compiler maps.

Checked with the project's compiler model (``edge_trash.export.compat.inspect_tflite``,
which applies the op table and the op-version table of /work/shared/edgetpu/README.md)
and, independently, against the op set an SSD MobileNet v2 is expected to use.
"""

from __future__ import annotations

import numpy as np
import pytest

# What a MobileNetV2 + SSD head gives at full int8 with uint8 input (README section 3).
EXPECTED_OPS = {"ADD", "CONCATENATION", "CONV_2D", "DEPTHWISE_CONV_2D", "MUL", "QUANTIZE", "RESHAPE"}
FORBIDDEN_OPS = {"TILE", "HARD_SWISH", "GATHER", "GATHER_ND", "RESIZE_BILINEAR",
                 "RESIZE_NEAREST_NEIGHBOR", "DEQUANTIZE", "CAST", "EXP", "LEAKY_RELU"}


def _int8_tflite(config) -> bytes:
    import tensorflow as tf

    from edge_trash.models.ssd import build_ssd

    model = build_ssd(config)
    size = config.input_size
    rng = np.random.default_rng(0)

    def representative():
        for _ in range(4):
            yield [rng.uniform(0, 255, (1, size, size, 3)).astype(np.float32)]

    @tf.function(input_signature=[tf.TensorSpec([1, size, size, 3], tf.float32)])
    def serve(images):
        return model(images, training=False)

    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [serve.get_concrete_function()], model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.uint8
    converter.inference_output_type = tf.uint8
    return converter.convert()


@pytest.mark.slow
def test_untrained_ssd_maps_fully_to_edgetpu():
    # SSDLite uses every op type the SSD head does (CONV_2D) plus DEPTHWISE_CONV_2D in the
    # heads and extra layers, so one conversion (about a minute of CPU) covers both heads.
    head = "ssdlite"
    from edge_trash.export.compat import inspect_tflite
    from edge_trash.models.anchors import num_anchors
    from edge_trash.models.config import get_preset

    config = get_preset("demo").replace(width_multiplier=0.35, head=head, input_size=128, num_classes=3)
    flatbuffer = _int8_tflite(config)
    report = inspect_tflite(flatbuffer)
    assert report.compiler_can_parse, report.compiler_error
    not_mapped = [(op.name, op.version, op.reason) for op in report.ops if not op.on_edgetpu]
    assert not_mapped == [], not_mapped
    names = {op.name for op in report.ops}
    assert not names & FORBIDDEN_OPS
    assert names <= EXPECTED_OPS, names - EXPECTED_OPS
    assert report.fits_parameter_cache

    # The int8 model keeps the output contract: [1, N, 4] and [1, N, C + 1], uint8 in and out.
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=flatbuffer)
    (inp,) = interpreter.get_input_details()
    assert inp["dtype"] == np.uint8 and list(inp["shape"]) == [1, 128, 128, 3]
    shapes = sorted(tuple(d["shape"]) for d in interpreter.get_output_details())
    n = num_anchors(config)
    assert shapes == sorted([(1, n, 4), (1, n, config.num_classes + 1)])
