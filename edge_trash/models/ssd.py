"""SSD MobileNet v2 (TF Object Detection API layout) as a ``tf_keras`` model.

Feature maps: the expansion output of block 13 (stride 16, 19x19 at 300 px), the
final 1280-channel layer (stride 32), then extra layers halving down to 1x1.
Heads: ``ssd`` (3x3 convolutions) or ``ssdlite`` (depthwise 3x3 + BN + ReLU6 + 1x1).

Edge TPU safe by construction: convolutions, batch norm (folded at export), ReLU6,
reshape and concatenation only; the input rescale is one multiply-add. Nothing here
converts to TILE, GATHER, HARD_SWISH or a resize.
"""

from __future__ import annotations

import math
from typing import List, Tuple

from edge_trash.models.anchors import anchors_per_location
from edge_trash.models.config import SSDConfig

BACKBONE_NAME = "backbone"
FEATURE_LAYERS = ("block_13_expand_relu", "out_relu")  # TF OD API ssd_mobilenet_v2 feature maps
BOX_OUTPUT = "box_encodings"
CLASS_OUTPUT = "class_logits"


def _keras():
    import tf_keras as keras  # Keras 2, what Model Garden 2.20 uses

    return keras


def build_backbone(config: SSDConfig):
    """``tf_keras.applications.MobileNetV2`` (no top, no weights) returning the two feature maps.

    The returned model is named ``backbone`` and holds every layer of the Keras
    application under its original names, so Keras' ImageNet ``.h5`` loads into it.
    """
    keras = _keras()
    app = keras.applications.MobileNetV2(
        input_shape=(config.input_size, config.input_size, 3), alpha=config.width_multiplier,
        include_top=False, weights=None)
    outputs = [app.get_layer(name).output for name in FEATURE_LAYERS]
    return keras.Model(app.input, outputs, name=BACKBONE_NAME)


def _conv_bn_relu6(x, filters: int, kernel: int, stride: int, name: str, depthwise: bool = False):
    keras = _keras()
    layers = keras.layers
    if depthwise:
        x = layers.DepthwiseConv2D(kernel, strides=stride, padding="same", use_bias=False,
                                   name=f"{name}_depthwise")(x)
        x = layers.BatchNormalization(name=f"{name}_depthwise_bn")(x)
        x = layers.ReLU(6.0, name=f"{name}_depthwise_relu6")(x)
        kernel, stride = 1, 1
    x = layers.Conv2D(filters, kernel, strides=stride, padding="same", use_bias=False, name=name)(x)
    x = layers.BatchNormalization(name=f"{name}_bn")(x)
    return layers.ReLU(6.0, name=f"{name}_relu6")(x)


def _extra_layers(x, config: SSDConfig) -> List:
    """TF OD API extra feature layers: 1x1 to depth/2, then a stride-2 3x3 to depth."""
    features = []
    for i, base_depth in enumerate(config.extra_layer_depths):
        depth = max(int(base_depth * config.width_multiplier), config.min_depth)
        x = _conv_bn_relu6(x, max(depth // 2, config.min_depth), 1, 1, name=f"extra_{i}_1x1")
        x = _conv_bn_relu6(x, depth, 3, 2, name=f"extra_{i}_3x3",
                           depthwise=config.head == "ssdlite")
        features.append(x)
    return features


def _head(x, channels: int, name: str, config: SSDConfig, bias_initializer):
    keras = _keras()
    layers = keras.layers
    if config.head == "ssdlite":
        x = layers.DepthwiseConv2D(3, padding="same", use_bias=False, name=f"{name}_depthwise")(x)
        x = layers.BatchNormalization(name=f"{name}_depthwise_bn")(x)
        x = layers.ReLU(6.0, name=f"{name}_depthwise_relu6")(x)
        return layers.Conv2D(channels, 1, padding="same", bias_initializer=bias_initializer,
                             name=name)(x)
    return layers.Conv2D(channels, 3, padding="same", bias_initializer=bias_initializer, name=name)(x)


def class_bias(config: SSDConfig, anchors_here: int):
    """Class-head bias: background column starts at 1 - prior, classes at ``prior_probability``."""
    import numpy as np

    p = config.prior_probability
    row = np.full([config.num_classes + 1], -math.log((1.0 - p) / p), dtype=np.float32)
    row[0] = math.log((1.0 - p) / p)
    return np.tile(row, anchors_here)


def build_ssd(config: SSDConfig):
    """Build the SSD detector.

    Input: float32 ``[B, S, S, 3]`` with values 0..255 (the model rescales to [-1, 1]).
    Outputs: ``(box_encodings [B, N, 4], class_logits [B, N, C + 1])``; column 0 of the
    logits is background; box encodings are (ty, tx, th, tw) scaled by
    ``config.box_coder_scales`` against ``generate_anchors(config)``.
    """
    config.validate()
    keras = _keras()
    layers = keras.layers
    size = config.input_size
    inputs = keras.Input((size, size, 3), name="image")
    # One MUL + ADD: uint8 input of an int8 export maps straight onto it.
    x = layers.Rescaling(1.0 / 127.5, offset=-1.0, name="rescale")(inputs)
    backbone = build_backbone(config)
    features = list(backbone(x))
    features += _extra_layers(features[-1], config)

    box_outputs, class_outputs = [], []
    for level, (feature, anchors_here) in enumerate(zip(features, anchors_per_location(config))):
        boxes = _head(feature, anchors_here * 4, f"box_head_{level}", config, "zeros")
        bias = class_bias(config, anchors_here)
        logits = _head(feature, anchors_here * (config.num_classes + 1), f"class_head_{level}",
                       config, keras.initializers.Constant(bias))
        box_outputs.append(layers.Reshape((-1, 4), name=f"box_reshape_{level}")(boxes))
        class_outputs.append(layers.Reshape((-1, config.num_classes + 1),
                                            name=f"class_reshape_{level}")(logits))
    box_encodings = layers.Concatenate(axis=1, name="box_concat")(box_outputs)
    class_logits = layers.Concatenate(axis=1, name="class_concat")(class_outputs)
    # float32 outputs also under a mixed-precision policy.
    box_encodings = layers.Activation("linear", dtype="float32", name=BOX_OUTPUT)(box_encodings)
    class_logits = layers.Activation("linear", dtype="float32", name=CLASS_OUTPUT)(class_logits)
    model = keras.Model(inputs, [box_encodings, class_logits],
                        name=f"ssd_mobilenet_v2_{config.head}_{config.width_multiplier}_{size}")
    set_batch_norm_momentum(model, config.batch_norm_momentum)
    return model


def set_batch_norm_momentum(model, momentum: float) -> None:
    """Set the moving-average momentum of every BatchNormalization layer (nested models too)."""
    keras = _keras()
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            set_batch_norm_momentum(layer, momentum)
        elif isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = momentum


def output_shapes(config: SSDConfig) -> Tuple[Tuple[int, int], Tuple[int, int]]:
    """``((N, 4), (N, C + 1))`` without building the model."""
    from edge_trash.models.anchors import num_anchors

    n = num_anchors(config)
    return (n, 4), (n, config.num_classes + 1)
