"""Helpers for the export tests: a tiny SSD with the edge-trash model contract and its anchors.

The tiny model has the same contract as ``edge_trash.models.build_ssd``: float images 0..255 in,
``(box_encodings [B,N,4], class_logits [B,N,C+1])`` out, column 0 = background.
"""

from __future__ import annotations

import dataclasses
from typing import List, Tuple

import numpy as np

TINY_SIZE = 32
TINY_ANCHORS_PER_CELL = 2
TINY_FEATURE_SIZES = (8, 4)


@dataclasses.dataclass
class TinyConfig:
    """The SSDConfig fields the exporter reads."""

    input_size: int = TINY_SIZE
    num_classes: int = 3
    max_detections: int = 10
    score_threshold: float = 0.05
    iou_threshold: float = 0.5
    box_coder_scales: Tuple[float, float, float, float] = (10.0, 10.0, 5.0, 5.0)


def tiny_anchors() -> np.ndarray:
    """[N,4] (ycenter, xcenter, h, w) normalized for the tiny model's two feature maps."""
    rows: List[List[float]] = []
    for size, scale in zip(TINY_FEATURE_SIZES, (0.3, 0.6)):
        for i in range(size):
            for j in range(size):
                for aspect in (1.0, 2.0):
                    h, w = scale / np.sqrt(aspect), scale * np.sqrt(aspect)
                    rows.append([(i + 0.5) / size, (j + 0.5) / size, h, w])
    return np.asarray(rows, dtype=np.float32)


def tiny_ssd(num_classes: int = 3, seed: int = 0, planted_class: int = 0, activation: str = "relu6"):
    """A two-level SSD of a few thousand parameters with the edge-trash output contract.

    ``planted_class`` (1-based, 0 = none) gets +3 on its logit bias at every anchor, so it wins
    every detection: a test can check that class id k comes out as output class k - 1.
    ``activation`` is the backbone activation (e.g. "leaky_relu" to plant a non-Edge-TPU op).
    """
    import tf_keras as keras

    c = num_classes + 1
    a = TINY_ANCHORS_PER_CELL
    images = keras.Input([TINY_SIZE, TINY_SIZE, 3], name="images")
    x = keras.layers.Rescaling(1.0 / 127.5, offset=-1.0)(images)
    act = keras.layers.LeakyReLU(0.1) if activation == "leaky_relu" else keras.layers.ReLU(6.0)
    x = act(keras.layers.Conv2D(8, 3, strides=2, padding="same")(x))
    f1 = keras.layers.Conv2D(16, 3, strides=2, padding="same", activation="relu6")(x)   # 8x8
    f2 = keras.layers.DepthwiseConv2D(3, strides=2, padding="same", activation="relu6")(f1)  # 4x4
    boxes, logits = [], []
    heads = []
    for f in (f1, f2):
        boxes.append(keras.layers.Reshape([-1, 4])(keras.layers.Conv2D(4 * a, 1)(f)))
        heads.append(keras.layers.Conv2D(c * a, 1))
        logits.append(keras.layers.Reshape([-1, c])(heads[-1](f)))
    box_encodings = keras.layers.Concatenate(axis=1, name="box_encodings")(boxes)
    class_logits = keras.layers.Concatenate(axis=1, name="class_logits")(logits)
    model = keras.Model(images, [box_encodings, class_logits])
    # Weights from our own seeded generator: Keras initializers depend on how many models the
    # process built before, which would make the tests depend on their order.
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        weights = layer.get_weights()
        if weights:
            kernel = weights[0]
            fan_in = int(np.prod(kernel.shape[:-1]))
            fan_out = int(kernel.shape[-1])
            limit = np.sqrt(6.0 / (fan_in + fan_out))
            new = [rng.uniform(-limit, limit, kernel.shape).astype(np.float32)]
            new += [np.zeros_like(w) for w in weights[1:]]
            layer.set_weights(new)
    if planted_class:
        for head in heads:
            kernel, bias = head.get_weights()
            bias = bias.reshape(a, c)
            bias[:, planted_class] += 3.0
            head.set_weights([kernel, bias.reshape(-1)])
    return model


def random_images(count: int, seed: int = 0, low: int = 0, high: int = 255) -> List[np.ndarray]:
    """Deterministic uint8 noise images [S,S,3] with values in low..high."""
    rng = np.random.default_rng(seed)
    return [rng.integers(low, high, size=(TINY_SIZE, TINY_SIZE, 3), endpoint=True, dtype=np.uint8)
            for _ in range(count)]


def with_op_version(tflite_bytes: bytes, builtin_code: int, version: int) -> bytes:
    """The model with every op of ``builtin_code`` at ``version`` (99: newer than any TFLite, which then
    refuses it with "Didn't find op for builtin opcode ... version '99'")."""
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model_from_bytearray(bytearray(tflite_bytes))
    for code in model.operatorCodes:
        if max(code.builtinCode, code.deprecatedBuiltinCode) == builtin_code:
            code.version = version
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def fake_compiled_model(tflite_bytes: bytes) -> bytes:
    """What edgetpu_compiler makes of an SSD-shaped int8 model, structurally: the ops before the
    trailing DEQUANTIZE/postprocess replaced by one ``edgetpu-custom-op``, and no signature (for a
    replaying fake compiler; the interpreter cannot run it, ``inspect`` can read it)."""
    import copy

    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model_from_bytearray(bytearray(tflite_bytes))
    graph = model.subgraphs[0]
    codes = [max(c.builtinCode, c.deprecatedBuiltinCode) for c in model.operatorCodes]
    first_tail = next(i for i, op in enumerate(graph.operators)
                      if codes[op.opcodeIndex] == 6 or codes[op.opcodeIndex] == 32)
    tail = graph.operators[first_tail:]
    produced = {int(t) for op in graph.operators[:first_tail] for t in op.outputs}
    bridge = sorted({int(t) for op in tail for t in op.inputs if int(t) in produced})
    code = schema.OperatorCodeT()
    code.builtinCode = code.deprecatedBuiltinCode = 32  # CUSTOM
    code.customCode = "edgetpu-custom-op"
    code.version = 1
    model.operatorCodes.append(code)
    custom = schema.OperatorT()
    custom.opcodeIndex = len(model.operatorCodes) - 1
    custom.inputs = list(graph.inputs)
    custom.outputs = bridge
    custom.customOptions = b"\x00"
    graph.operators = [custom] + [copy.deepcopy(op) for op in tail]
    model.signatureDefs = []  # compiler 16 drops them (keras_lstm_mnist_ptq's _edgetpu file has none)
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def fake_compiler_output(model_name: str, edgetpu_ops: int, cpu_table: List[Tuple[str, int, str]],
                         mapped_table: List[Tuple[str, int]]) -> Tuple[str, str]:
    """(stdout, log) in compiler 16's exact format for a replaying fake compiler."""
    stem = model_name.rsplit(".", 1)[0]
    cpu_ops = sum(count for _, count, _ in cpu_table)
    stdout = "\n".join([
        "Edge TPU Compiler version 16.0.384591198",
        "Started a compilation timeout timer of 180 seconds.",
        "",
        "Model compiled successfully in 97 ms.",
        "",
        f"Input model: {model_name}",
        "Input size: 13.07KiB",
        f"Output model: {stem}_edgetpu.tflite",
        "Output size: 60.12KiB",
        "On-chip memory used for caching model parameters: 5.25KiB",
        "On-chip memory remaining for caching model parameters: 7.99MiB",
        "Off-chip memory used for streaming uncached model parameters: 0.00B",
        "Number of Edge TPU subgraphs: 1",
        f"Total number of operations: {edgetpu_ops + cpu_ops}",
        f"Operation log: {stem}_edgetpu.log",
        "",
        "Model successfully compiled but not all operations are supported by the Edge TPU. A percentage "
        "of the model will instead run on the CPU, which is slower. If possible, consider updating your "
        "model to use only operations supported by the Edge TPU. For details, visit g.co/coral/model-reqs.",
        f"Number of operations that will run on Edge TPU: {edgetpu_ops}",
        f"Number of operations that will run on CPU: {cpu_ops}",
        "See the operation log file for individual operation details.",
        "Compilation child process completed within timeout period.",
        "Compilation succeeded! ",
        ""])
    rows = [f"{name:<31}{count:<11}Mapped to Edge TPU" for name, count in mapped_table]
    rows += [f"{name:<31}{count:<11}{status}" for name, count, status in cpu_table]
    log = "\n".join([
        "Edge TPU Compiler version 16.0.384591198",
        f"Input: {model_name}",
        f"Output: {stem}_edgetpu.tflite",
        "",
        f"{'Operator':<31}{'Count':<11}Status",
        "",
        *rows,
        ""])
    return stdout, log
