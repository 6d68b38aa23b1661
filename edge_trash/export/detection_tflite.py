"""Convert a trained SSD (Keras) into the int8 detection TFLite model the Edge TPU and pycoral expect.

The converted graph is::

    uint8 image [1,S,S,3] -> QUANTIZE -> int8 SSD (CONV_2D, ..., LOGISTIC on the class logits)
      -> DEQUANTIZE x2 -> TFLite_Detection_PostProcess (float outputs)

and carries ONE signature whose outputs are named ``output_0``..``output_3`` = count, scores,
classes (0-based, background excluded), boxes ([ymin, xmin, ymax, xmax], normalized). That is
the order pycoral's ``detect.get_objects`` reads, and the shape Coral's own SSD compiles to:
one ``edgetpu-custom-op`` followed by DEQUANTIZE + postprocess on the CPU. The model's outputs
are listed boxes, classes, scores, count (Coral's SSD's order), for readers without the signature:
``edgetpu_compiler`` drops it, and pycoral then reads them by position, as Frigate always does.

TensorFlow is imported inside the functions so that importing this module stays cheap.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Dict, Iterable, Iterator, List, Mapping, Tuple

import numpy as np

POSTPROCESS_OP_NAME = "TFLite_Detection_PostProcess"
#: The order pycoral's ``detect.get_objects`` reads the signature outputs in.
OUTPUT_ORDER: Tuple[str, str, str, str] = ("count", "scores", "classes", "boxes")
OUTPUT_NAMES: Tuple[str, str, str, str] = ("output_0", "output_1", "output_2", "output_3")


@dataclasses.dataclass(frozen=True)
class PostprocessParams:
    """Attributes of the TFLite_Detection_PostProcess op (all read from the model's SSDConfig).

    ``num_classes`` excludes background; the class scores fed to the op have one more column
    (column 0 = background), which the op skips, so output class k is labels.txt line k.
    """

    num_classes: int
    max_detections: int
    score_threshold: float
    iou_threshold: float
    box_scales: Tuple[float, float, float, float] = (10.0, 10.0, 5.0, 5.0)
    max_classes_per_detection: int = 1
    detections_per_class: int = 100
    # Regular (per-class) NMS is what the float decoder does (combined NMS in
    # edge_trash.models.postprocess): int8 AP50 51.53 against 51.53 for the Keras float path on
    # the demo SSD (225 val images). Fast NMS (False: class-agnostic, one class per box, Coral's
    # default) is a little quicker and keeps one class per box. Run the op on one thread: with
    # more, LiteRT's regular NMS drops whole classes (see evaluate.TFLiteDetector).
    use_regular_nms: bool = True

    def validate(self) -> None:
        """Raise ValueError naming the bad field and its valid range."""
        if self.num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {self.num_classes}")
        if self.max_detections < 1:
            raise ValueError(f"max_detections must be >= 1, got {self.max_detections}")
        if not 0.0 <= self.score_threshold < 1.0:
            raise ValueError(f"score_threshold must be in [0, 1), got {self.score_threshold}")
        if not 0.0 < self.iou_threshold <= 1.0:
            raise ValueError(f"iou_threshold must be in (0, 1], got {self.iou_threshold}")
        if len(self.box_scales) != 4 or any(s <= 0 for s in self.box_scales):
            raise ValueError(f"box_scales must be 4 positive numbers (y, x, h, w), got {self.box_scales}")

    def to_dict(self) -> Dict[str, Any]:
        """A JSON-friendly dict (for the bundle manifest)."""
        out = dataclasses.asdict(self)
        out["box_scales"] = list(self.box_scales)
        return out


def postprocess_params_from_config(config: Any) -> PostprocessParams:
    """Read the postprocess attributes from an ``SSDConfig`` (or anything with the same fields):
    num_classes, max_detections, score_threshold, iou_threshold, box_coder_scales and, optionally,
    use_regular_nms."""
    params = PostprocessParams(
        num_classes=int(config.num_classes),
        max_detections=int(config.max_detections),
        score_threshold=float(config.score_threshold),
        iou_threshold=float(config.iou_threshold),
        box_scales=tuple(float(v) for v in config.box_coder_scales),  # type: ignore[arg-type]
        # combined NMS keeps up to max_detections per class before the overall top-k.
        detections_per_class=int(config.max_detections),
        use_regular_nms=bool(getattr(config, "use_regular_nms", True)),
    )
    params.validate()
    return params


def _implements_signature(params: PostprocessParams) -> str:
    """The ``experimental_implements`` string the MLIR converter turns into the custom op.

    Same encoding as Model Garden's ``detection_generator`` (legalized by
    tensorflow/compiler/mlir/lite/utils/nms_utils.cc).
    """
    y, x, h, w = params.box_scales
    attrs = [
        f'name: "{POSTPROCESS_OP_NAME}"',
        f'attr {{ key: "max_detections" value {{ i: {params.max_detections} }} }}',
        f'attr {{ key: "max_classes_per_detection" value {{ i: {params.max_classes_per_detection} }} }}',
        f'attr {{ key: "detections_per_class" value {{ i: {params.detections_per_class} }} }}',
        f'attr {{ key: "use_regular_nms" value {{ b: {str(params.use_regular_nms).lower()} }} }}',
        f'attr {{ key: "nms_score_threshold" value {{ f: {params.score_threshold:f} }} }}',
        f'attr {{ key: "nms_iou_threshold" value {{ f: {params.iou_threshold:f} }} }}',
        f'attr {{ key: "y_scale" value {{ f: {y:f} }} }}',
        f'attr {{ key: "x_scale" value {{ f: {x:f} }} }}',
        f'attr {{ key: "h_scale" value {{ f: {h:f} }} }}',
        f'attr {{ key: "w_scale" value {{ f: {w:f} }} }}',
        f'attr {{ key: "num_classes" value {{ i: {params.num_classes} }} }}',
    ]
    return " ".join(attrs)


def build_detection_module(keras_model: Any, anchors: np.ndarray, params: PostprocessParams) -> Any:
    """Wrap a Keras SSD into a ``tf.Module`` whose ``serve`` ends in the TFLite postprocess op.

    Args:
      keras_model: takes float images [B,S,S,3] in 0..255 and returns ``(box_encodings [B,N,4],
        class_logits [B,N,C+1])`` with column 0 = background (the edge-trash SSD contract).
      anchors: [N,4] (ycenter, xcenter, h, w) normalized, as ``generate_anchors(config)`` returns.
      params: the postprocess attributes.

    The module is only meant for TFLite conversion: its TensorFlow outputs are placeholders
    (zeros) because TensorFlow has no kernel for the postprocess op.
    """
    import tensorflow as tf

    params.validate()
    anchors = np.asarray(anchors, dtype=np.float32)
    input_shape = [int(d) for d in keras_model.inputs[0].shape[1:]]
    if len(input_shape) != 3 or input_shape[2] != 3 or input_shape[0] != input_shape[1]:
        raise ValueError(f"the model's input must be [B,S,S,3], got [B,{input_shape}]")
    box_shape, logit_shape = (o.shape for o in keras_model.outputs)
    if box_shape[-1] != 4 or box_shape[1] != anchors.shape[0]:
        raise ValueError(
            f"box_encodings {list(box_shape)} do not match {anchors.shape[0]} anchors x 4: "
            "were the anchors generated from the same SSDConfig as the model?")
    if logit_shape[-1] != params.num_classes + 1:
        raise ValueError(
            f"class_logits have {logit_shape[-1]} columns, expected num_classes + 1 = "
            f"{params.num_classes + 1} (column 0 = background)")

    @tf.function(experimental_implements=_implements_signature(params))
    def _postprocess(box_encodings, class_scores, anchor_boxes):  # noqa: ARG001 - replaced by the op
        boxes = tf.constant(0.0, dtype=tf.float32, name="boxes")
        classes = tf.constant(0.0, dtype=tf.float32, name="classes")
        scores = tf.constant(0.0, dtype=tf.float32, name="scores")
        count = tf.constant(0.0, dtype=tf.float32, name="num_detections")
        # Order of the op's outputs (detection_postprocess.cc): boxes, classes, scores, count.
        return boxes, classes, scores, count

    anchor_const = tf.constant(anchors)
    size = input_shape[0]

    class DetectionModule(tf.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = keras_model

        @tf.function(input_signature=[tf.TensorSpec([1, size, size, 3], tf.float32, name="images")])
        def serve(self, images):
            box_encodings, class_logits = self.model(images, training=False)
            # LOGISTIC is an Edge TPU op; the postprocess op expects probabilities.
            class_scores = tf.sigmoid(class_logits)
            boxes, classes, scores, count = _postprocess(box_encodings, class_scores, anchor_const)
            return {"output_0": count, "output_1": scores, "output_2": classes, "output_3": boxes}

    return DetectionModule()


@dataclasses.dataclass
class ConversionResult:
    """The int8 detection model and the head ranges its quantization used (None: plain min/max)."""

    model: bytes
    head_ranges: Any = None  # head_ranges.HeadRanges


def convert_detection_model(
    keras_model: Any,
    anchors: np.ndarray,
    params: PostprocessParams,
    representative_images: Callable[[], Iterable[np.ndarray]],
    fit_head_ranges: bool = True,
) -> ConversionResult:
    """Full-integer post-training quantization with uint8 input and FLOAT postprocess outputs.

    Args:
      keras_model, anchors, params: see :func:`build_detection_module`.
      representative_images: a callable returning an iterable of uint8 images [S,S,3] (or
        [1,S,S,3]) from the TRAIN split (see ``calibration.py``).
      fit_head_ranges: quantize the class-logit and box tensors over the ranges that can become
        detections instead of their calibrated min/max (see ``head_ranges.py``).
    """
    import tensorflow as tf
    from tensorflow.lite.python.convert import mlir_quantize

    from edge_trash.export import head_ranges as ranges_lib

    module = build_detection_module(keras_model, anchors, params)
    concrete = module.serve.get_concrete_function()

    def _dataset() -> Iterator[List[np.ndarray]]:
        first = True
        for image in representative_images():
            array = np.asarray(image, dtype=np.float32)
            if array.ndim == 3:
                array = array[None]
            if first:
                # Pin the input range to 0..255 so the uint8 input is the raw pixel (scale 1, zero
                # point 0): the device feeds camera pixels without rescaling.
                yield [_with_full_input_range(array)]
                first = False
            yield [array]

    # From the concrete function directly: a SavedModel round trip gives the same graph and
    # signature but serializes every Keras layer's call function first (minutes for an SSD).
    converter = tf.lite.TFLiteConverter.from_concrete_functions([concrete], module)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = _dataset
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.uint8
    # The postprocess outputs stay float: quantizing them (Model Garden's int8_full) breaks
    # the boxes and scores the device reads.
    converter.inference_output_type = tf.float32
    converter.allow_custom_ops = True
    fitted = None
    if fit_head_ranges:
        # Calibrate, replace the head tensors' statistics, then quantize: the same two steps
        # converter.convert() runs, with our ranges in between.
        converter._experimental_calibrate_only = True  # pylint: disable=protected-access
        calibrated = converter.convert()
        fitted = ranges_lib.fit_head_ranges(
            *ranges_lib.predict_head_outputs(keras_model, representative_images()), params.score_threshold)
        calibrated, _ = ranges_lib.apply_head_ranges(calibrated, fitted)
        quantized = mlir_quantize(calibrated, False, input_data_type=tf.uint8, output_data_type=tf.float32)
    else:
        quantized = converter.convert()
    model_bytes = finish_graph(quantized)
    quantization = summarize_io(model_bytes)["input_quantization"]
    if abs(quantization["scale"] - 1.0) > 1e-6 or quantization["zero_point"] != 0:
        raise ValueError(f"the uint8 input came out with scale {quantization['scale']} and zero point "
                         f"{quantization['zero_point']}, not 1 and 0: the device feeds raw pixels, so the "
                         "model must take 0..255 (does the model rescale its input itself?)")
    return ConversionResult(model=model_bytes, head_ranges=fitted)


def convert_to_int8_detection_tflite(
    keras_model: Any,
    anchors: np.ndarray,
    params: PostprocessParams,
    representative_images: Callable[[], Iterable[np.ndarray]],
    fit_head_ranges: bool = True,
) -> bytes:
    """:func:`convert_detection_model`, returning only the .tflite bytes."""
    return convert_detection_model(keras_model, anchors, params, representative_images, fit_head_ranges).model


def _with_full_input_range(batch: np.ndarray) -> np.ndarray:
    """A copy of ``batch`` with one pixel at 0 and one at 255 (the input's calibration range)."""
    pinned = batch.copy()
    pinned[0, 0, 0, :] = 0.0
    pinned[0, -1, -1, :] = 255.0
    return pinned


_DEQUANTIZE_CODE = 6  # BuiltinOperator.DEQUANTIZE


def finish_graph(tflite_model: bytes) -> bytes:
    """:func:`defer_cpu_tail`, then the outputs in Coral's order (:func:`_outputs_in_tf1_order`), in one read
    and one write of the flatbuffer."""
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model_from_bytearray(bytearray(tflite_model))
    _defer_cpu_tail(model)
    _outputs_in_tf1_order(model)
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def defer_cpu_tail(tflite_model: bytes) -> bytes:
    """Reorder ops so every DEQUANTIZE (and all that depends on it) runs after the last int8 op.

    Edge TPU workaround: the compiler cuts the graph once, at the first op in EXECUTION ORDER that
    cannot map, and leaves everything after it on the CPU. The converter emits the box branch's
    DEQUANTIZE before the class branch's convolutions, which would push those convolutions to
    the CPU. Any topological order is a valid TFLite execution order, so we keep the original
    order inside two groups: ops that do not depend on a DEQUANTIZE, then the rest.
    """
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model_from_bytearray(bytearray(tflite_model))
    _defer_cpu_tail(model)
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def _defer_cpu_tail(model: Any) -> None:
    """:func:`defer_cpu_tail` on a read model (flatbuffer object API), in place."""
    codes = [max(code.builtinCode, code.deprecatedBuiltinCode) for code in model.operatorCodes]
    for subgraph in model.subgraphs:
        tail_tensors = set()
        head, tail = [], []
        for op in subgraph.operators:
            inputs = set(int(i) for i in (op.inputs if op.inputs is not None else []) if i >= 0)
            if codes[op.opcodeIndex] == _DEQUANTIZE_CODE and _is_activation(subgraph, model, op) \
                    or inputs & tail_tensors:
                tail.append(op)
                tail_tensors.update(int(o) for o in op.outputs)
            else:
                head.append(op)
        subgraph.operators = head + tail


def _outputs_in_tf1_order(model: Any) -> None:
    """List a read model's outputs as the postprocess op emits them: boxes, classes, scores, count (in place).

    The converter lists them scores, boxes, count, classes. The signature names each one (``output_0``..``3``),
    whatever the order; but ``edgetpu_compiler`` drops signatures, and a reader without one (pycoral's
    ``detect.get_objects``, Frigate, Coral's examples) takes the outputs by position in this order, Coral's own
    SSD's. A subgraph without exactly one postprocess op producing every output is left as it was.
    """
    names = [code.customCode.decode() if isinstance(code.customCode, bytes) else code.customCode
             for code in model.operatorCodes]
    for subgraph in model.subgraphs:
        post = [op for op in subgraph.operators if names[op.opcodeIndex] == POSTPROCESS_OP_NAME]
        outputs = [int(t) for t in subgraph.outputs]
        if len(post) == 1 and sorted(int(t) for t in post[0].outputs) == sorted(outputs):
            subgraph.outputs = [int(t) for t in post[0].outputs]


def _is_activation(subgraph: Any, model: Any, op: Any) -> bool:
    """True when the op's first input is computed at run time (not a constant buffer)."""
    tensor = subgraph.tensors[int(op.inputs[0])]
    buffer = model.buffers[tensor.buffer] if tensor.buffer < len(model.buffers) else None
    return buffer is None or buffer.data is None or len(buffer.data) == 0


def summarize_io(tflite_model: bytes) -> Mapping[str, Any]:
    """Input size/type/quantization and output names of a detection .tflite (for the manifest)."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=tflite_model)
    detail = interpreter.get_input_details()[0]
    scale, zero_point = detail["quantization"]
    return {
        "input_shape": [int(d) for d in detail["shape"]],
        "input_dtype": np.dtype(detail["dtype"]).name,
        "input_quantization": {"scale": float(scale), "zero_point": int(zero_point)},
        "signatures": {k: list(v["outputs"]) for k, v in interpreter.get_signature_list().items()},
    }
