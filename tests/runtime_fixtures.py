"""Fixtures for the device runtime tests: tiny int8 detectors and a fake interpreter.

``build_color_detector`` builds a real full-int8 TFLite detector (uint8 input, then the
``TFLite_Detection_PostProcess`` custom op with FLOAT outputs named ``output_0``..``output_3``:
count, scores, classes, boxes) the way the export stage does. Its weights are set by hand so it
is *predictable*: the image is split into a GRID x GRID grid of cells, one anchor per cell, and a
cell filled with pure red / green / blue is detected as class 0 / 1 / 2 with the cell as its box.
Tests can therefore draw a coloured square and know exactly what the real interpreter must return.

``build_ssd_like_detector`` builds a MobileNetV2-backbone SSD of realistic size (for the
benchmark): random weights, same I/O contract.

``FakeInterpreter`` is a pure-numpy stand-in with the same methods as a TFLite interpreter that
detects pure-colour blobs, so the service loop can be tested fast and without TensorFlow; the
``conveyor_*`` helpers draw synthetic items moving across a trigger line with known ground truth.
"""

import os
import tempfile
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

LABELS = ["bottle", "can", "carton"]  # class 0 = red, 1 = green, 2 = blue
DEFAULT_INPUT_SIZE = 64
DEFAULT_GRID = 8
MAX_DETECTIONS = 10
SCORE_THRESHOLD = 0.3
IOU_THRESHOLD = 0.5


def grid_anchors(grid: int) -> np.ndarray:
    """One anchor per grid cell as (ycenter, xcenter, h, w) normalized, row-major."""
    centers = (np.arange(grid, dtype=np.float32) + 0.5) / grid
    yc, xc = np.meshgrid(centers, centers, indexing="ij")
    size = np.full(grid * grid, 1.0 / grid, dtype=np.float32)
    return np.stack([yc.ravel(), xc.ravel(), size, size], axis=-1).astype(np.float32)


def _postprocess_signature(num_classes: int, max_detections: int, score_threshold: float,
                           iou_threshold: float) -> str:
    """The ``experimental_implements`` string the MLIR converter turns into the custom op."""
    attrs = [
        'name: "TFLite_Detection_PostProcess"',
        'attr { key: "max_detections" value { i: %d } }' % max_detections,
        'attr { key: "max_classes_per_detection" value { i: 1 } }',
        'attr { key: "detections_per_class" value { i: 5 } }',
        'attr { key: "use_regular_nms" value { b: false } }',
        'attr { key: "nms_score_threshold" value { f: %f } }' % score_threshold,
        'attr { key: "nms_iou_threshold" value { f: %f } }' % iou_threshold,
        'attr { key: "y_scale" value { f: 10.0 } }',
        'attr { key: "x_scale" value { f: 10.0 } }',
        'attr { key: "h_scale" value { f: 5.0 } }',
        'attr { key: "w_scale" value { f: 5.0 } }',
        'attr { key: "num_classes" value { i: %d } }' % num_classes,
    ]
    return " ".join(attrs)


def _convert_with_postprocess(keras_model, anchors: np.ndarray, num_classes: int,
                              input_size: int, representative: List[np.ndarray],
                              max_detections: int = MAX_DETECTIONS,
                              score_threshold: float = SCORE_THRESHOLD,
                              iou_threshold: float = IOU_THRESHOLD) -> bytes:
    """Wrap ``keras_model`` (float image 0..255 -> box encodings, class scores) with the
    TFLite postprocess op and convert it to full int8 with uint8 input. Returns the flatbuffer."""
    import tensorflow as tf

    anchors_t = tf.constant(anchors, dtype=tf.float32)

    @tf.function(experimental_implements=_postprocess_signature(
        num_classes, max_detections, score_threshold, iou_threshold))
    def detection_postprocess(box_encodings, class_scores, anchor_boxes):
        # A placeholder body: the converter replaces this function with the custom op.
        del box_encodings, class_scores, anchor_boxes
        boxes = tf.constant(0.0, dtype=tf.float32, name="boxes")
        classes = tf.constant(0.0, dtype=tf.float32, name="classes")
        scores = tf.constant(0.0, dtype=tf.float32, name="scores")
        count = tf.constant(0.0, dtype=tf.float32, name="num_detections")
        return boxes, classes, scores, count

    class Detector(tf.Module):
        def __init__(self, model):
            super().__init__()
            self.model = model

        @tf.function(input_signature=[tf.TensorSpec([1, input_size, input_size, 3], tf.float32)])
        def serve(self, images):
            box_encodings, class_scores = self.model(images, training=False)
            boxes, classes, scores, count = detection_postprocess(
                box_encodings, class_scores, anchors_t)
            # pycoral's detect.get_objects reads these names (edgetpu README section 6).
            return {"output_0": count, "output_1": scores, "output_2": classes, "output_3": boxes}

    module = Detector(keras_model)
    with tempfile.TemporaryDirectory() as tmp:
        saved = os.path.join(tmp, "saved_model")
        tf.saved_model.save(module, saved, signatures={"serving_default": module.serve})
        converter = tf.lite.TFLiteConverter.from_saved_model(saved)
        converter.optimizations = [tf.lite.Optimize.DEFAULT]

        def representative_dataset():
            for image in representative:
                yield [image[None].astype(np.float32)]

        converter.representative_dataset = representative_dataset
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.uint8
        converter.allow_custom_ops = True
        return converter.convert()


def color_image(size: int, squares: Sequence[Tuple[int, int, int, int, int]] = (),
                background: int = 0) -> np.ndarray:
    """An RGB uint8 image with filled squares ``(class_id, y0, x0, y1, x1)`` in pure
    red/green/blue (class 0/1/2) on a grey ``background``."""
    image = np.full((size, size, 3), background, dtype=np.uint8)
    for class_id, y0, x0, y1, x1 in squares:
        image[y0:y1, x0:x1] = 0
        image[y0:y1, x0:x1, class_id] = 255
    return image


def build_color_detector(path: str, input_size: int = DEFAULT_INPUT_SIZE,
                         grid: int = DEFAULT_GRID) -> str:
    """Build the hand-weighted colour detector described in the module docstring at ``path``."""
    import tensorflow as tf
    import tf_keras as keras

    num_classes = len(LABELS)
    cell = input_size // grid
    image = keras.Input([input_size, input_size, 3], batch_size=1)
    x = keras.layers.Rescaling(1.0 / 127.5, offset=-1.0)(image)
    pooled = keras.layers.AveragePooling2D(pool_size=cell, strides=cell)(x)  # [1,G,G,3] in [-1,1]
    # class k logit = 4*c_k - 2*(other channels) - 2: pure colour k -> +6, black/white -> -2.
    kernel = np.full((1, 1, 3, num_classes + 1), -2.0, dtype=np.float32)
    for k in range(num_classes):
        kernel[0, 0, k, k + 1] = 4.0
    kernel[0, 0, :, 0] = 0.0
    bias = np.array([0.0] + [-2.0] * num_classes, dtype=np.float32)
    logits = keras.layers.Conv2D(num_classes + 1, 1, name="class_head")(pooled)
    scores = keras.layers.Activation("sigmoid")(logits)
    scores = keras.layers.Reshape([grid * grid, num_classes + 1])(scores)
    # Box encodings: a tiny dependence on the input keeps the quantization range non-degenerate;
    # the decoded boxes stay within a fraction of a pixel of the anchors.
    boxes = keras.layers.Conv2D(4, 1, name="box_head")(pooled)
    boxes = keras.layers.Reshape([grid * grid, 4])(boxes)
    model = keras.Model(image, [boxes, scores])
    model.get_layer("class_head").set_weights([kernel, bias])
    model.get_layer("box_head").set_weights(
        [np.full((1, 1, 3, 4), 1e-3, dtype=np.float32), np.zeros(4, np.float32)])

    rng = np.random.default_rng(0)
    representative = []
    for i in range(24):
        squares = []
        for _ in range(2):
            y, x = rng.integers(0, grid, 2) * cell
            squares.append((i % num_classes, y, x, y + cell, x + cell))
        representative.append(color_image(input_size, squares, background=int(rng.integers(0, 256))))
    tflite_model = _convert_with_postprocess(model, grid_anchors(grid), num_classes, input_size,
                                             representative)
    del tf
    with open(path, "wb") as f:
        f.write(tflite_model)
    return path


def build_ssd_like_detector(path: str, input_size: int = 320, num_classes: int = 6,
                            alpha: float = 1.0) -> str:
    """Build a MobileNetV2 SSD (two feature maps, 6 anchors per cell, random weights) as a full
    int8 TFLite detector with the same postprocess and output names as the real export."""
    import tf_keras as keras

    anchors_per_cell = 6
    image = keras.Input([input_size, input_size, 3], batch_size=1)
    x = keras.layers.Rescaling(1.0 / 127.5, offset=-1.0)(image)
    backbone = keras.applications.MobileNetV2(input_shape=(input_size, input_size, 3), alpha=alpha,
                                              include_top=False, weights=None)
    features = keras.Model(backbone.input, [backbone.get_layer("block_13_expand_relu").output,
                                            backbone.output])(x)
    all_boxes, all_scores, anchors = [], [], []
    rng = np.random.default_rng(0)
    for level, feature in enumerate(features):
        g = int(feature.shape[1])
        b = keras.layers.SeparableConv2D(anchors_per_cell * 4, 3, padding="same")(feature)
        s = keras.layers.SeparableConv2D(anchors_per_cell * (num_classes + 1), 3, padding="same",
                                         activation="sigmoid")(feature)
        all_boxes.append(keras.layers.Reshape([g * g * anchors_per_cell, 4])(b))
        all_scores.append(keras.layers.Reshape([g * g * anchors_per_cell, num_classes + 1])(s))
        base = grid_anchors(g)
        scale = 0.2 + 0.3 * level
        for yc, xc, _, _ in base:
            for aspect in (1.0, 2.0, 0.5, 3.0, 1.0 / 3.0, 1.0):
                anchors.append([yc, xc, scale / np.sqrt(aspect), scale * np.sqrt(aspect)])
    boxes = keras.layers.Concatenate(axis=1)(all_boxes)
    scores = keras.layers.Concatenate(axis=1)(all_scores)
    model = keras.Model(image, [boxes, scores])
    representative = [rng.integers(0, 256, (input_size, input_size, 3)).astype(np.float32)
                      for _ in range(8)]
    tflite_model = _convert_with_postprocess(model, np.asarray(anchors, np.float32), num_classes,
                                             input_size, representative, max_detections=20,
                                             score_threshold=0.5)
    with open(path, "wb") as f:
        f.write(tflite_model)
    return path


class FakeInterpreter:
    """A pure-numpy interpreter with the TFLite API subset the runtime uses.

    It "detects" every blob of pure red / green / blue (class 0 / 1 / 2: the channel is >= 64 and
    the other two are < 32) in the input image, split into blobs by gaps in the column and row
    projections; box = the blob's extent, score = the blob's mean channel value / 255 (so a
    colour of 153 scores 0.6). ``fail_on`` holds 0-based invoke indices that raise
    ``RuntimeError`` (fault injection); ``delay_s`` simulates inference time and ``stall_on``
    ({invoke index: seconds}) one slow inference (so a live source drops frames). Outputs are listed
    in the TF1 order (boxes, classes, scores, count), the signature maps output_0..3.
    """

    def __init__(self, input_size: int = DEFAULT_INPUT_SIZE, max_detections: int = MAX_DETECTIONS,
                 fail_on: Sequence[int] = (), delay_s: float = 0.0, with_signature: bool = True,
                 stall_on: Optional[Dict[int, float]] = None):
        self.input_size = input_size
        self.stall_on = dict(stall_on or {})
        self.max_detections = max_detections
        self.fail_on = set(fail_on)
        self.delay_s = delay_s
        self.with_signature = with_signature
        self.invocations = 0
        self._input = np.zeros((1, input_size, input_size, 3), np.uint8)
        self._outputs = {}  # type: Dict[int, np.ndarray]

    def allocate_tensors(self) -> None:
        """No-op (API compatibility)."""

    def get_input_details(self) -> List[dict]:
        """One uint8 input [1,S,S,3] with a uint8 quantization of scale 1."""
        return [{"name": "serving_default_images:0", "index": 0,
                 "shape": np.array([1, self.input_size, self.input_size, 3], np.int32),
                 "dtype": np.uint8, "quantization": (1.0, 0)}]

    def get_output_details(self) -> List[dict]:
        """Outputs in the TF1 postprocess order: boxes, classes, scores, count."""
        m = self.max_detections
        shapes = [[1, m, 4], [1, m], [1, m], [1]]
        names = ["StatefulPartitionedCall:3", "StatefulPartitionedCall:2",
                 "StatefulPartitionedCall:1", "StatefulPartitionedCall:0"]
        return [{"name": n, "index": 10 + i, "shape": np.array(s, np.int32), "dtype": np.float32,
                 "quantization": (0.0, 0)} for i, (n, s) in enumerate(zip(names, shapes))]

    def _get_full_signature_list(self) -> dict:
        if not self.with_signature:
            return {}
        return {"serving_default": {"inputs": {"images": 0},
                                    "outputs": {"output_0": 13, "output_1": 12,
                                                "output_2": 11, "output_3": 10}}}

    def set_tensor(self, index: int, value: np.ndarray) -> None:
        """Copy the input image."""
        if index != 0 or value.shape != self._input.shape or value.dtype != np.uint8:
            raise ValueError("FakeInterpreter: bad input %r %r" % (value.shape, value.dtype))
        self._input = value.copy()

    @staticmethod
    def _runs(flags: np.ndarray) -> List[Tuple[int, int]]:
        padded = np.concatenate([[0], flags.astype(np.int8), [0]])
        edges = np.flatnonzero(np.diff(padded))
        return list(zip(edges[0::2], edges[1::2]))

    def invoke(self) -> None:
        """Find the blobs."""
        n = self.invocations
        self.invocations += 1
        if n in self.fail_on:
            raise RuntimeError("FakeInterpreter: injected inference failure at invoke %d" % n)
        if self.delay_s or n in self.stall_on:
            import time
            time.sleep(self.delay_s + self.stall_on.get(n, 0.0))
        img = self._input[0]
        s = float(self.input_size)
        found = []
        for k in range(3):
            others = [c for c in range(3) if c != k]
            mask = (img[:, :, k] >= 64) & (img[:, :, others[0]] < 32) & (img[:, :, others[1]] < 32)
            if not mask.any():
                continue
            for x0, x1 in self._runs(mask.any(axis=0)):
                for y0, y1 in self._runs(mask[:, x0:x1].any(axis=1)):
                    score = float(img[y0:y1, x0:x1, k][mask[y0:y1, x0:x1]].mean()) / 255.0
                    found.append((score, k, [y0 / s, x0 / s, y1 / s, x1 / s]))
        found.sort(key=lambda f: -f[0])
        found = [f for f in found if f[0] >= SCORE_THRESHOLD][:self.max_detections]
        m = self.max_detections
        boxes = np.zeros((1, m, 4), np.float32)
        classes = np.zeros((1, m), np.float32)
        scores = np.zeros((1, m), np.float32)
        for i, (score, k, box) in enumerate(found):
            boxes[0, i], classes[0, i], scores[0, i] = box, k, score
        self._outputs = {10: boxes, 11: classes, 12: scores, 13: np.array([len(found)], np.float32)}

    def get_tensor(self, index: int) -> np.ndarray:
        """An output tensor by index (a copy, like TFLite)."""
        return self._outputs[index].copy()


def make_fake_loader(fake: Optional[FakeInterpreter] = None, **kwargs):
    """An ``interpreter_loader`` for ``edge_trash.edge_runtime.service`` returning a fake on 'cpu'."""
    from edge_trash.edge_runtime.interpreter import LoadedInterpreter

    def loader(cpu_model, edgetpu_model=None, device=None):
        del edgetpu_model, device
        return LoadedInterpreter(fake if fake is not None else FakeInterpreter(**kwargs), "cpu",
                                 cpu_model, "fake")
    return loader


def make_bundle(bundle_dir: str, model_path: Optional[str] = None, labels: Sequence[str] = LABELS,
                input_size: int = DEFAULT_INPUT_SIZE, sort_overrides: Optional[dict] = None) -> str:
    """Write a device bundle: the model (a placeholder file when ``model_path`` is None, for the
    fake interpreter), labels.txt, sort.yaml (the default template updated with
    ``sort_overrides``, written as JSON) and manifest.json."""
    import json
    import shutil
    from edge_trash.edge_runtime import manifest, sort_config as policy

    os.makedirs(bundle_dir, exist_ok=True)
    target = os.path.join(bundle_dir, manifest.CPU_MODEL)
    if model_path is None:
        with open(target, "wb") as f:
            f.write(b"placeholder for FakeInterpreter")
    else:
        shutil.copyfile(model_path, target)
    with open(os.path.join(bundle_dir, manifest.LABELS), "w") as f:
        f.write("\n".join(labels) + "\n")
    config = policy.parse_config_text(policy.default_sort_config(labels), "template")
    for key, value in (sort_overrides or {}).items():
        if isinstance(value, dict) and isinstance(config.get(key), dict):
            config[key] = dict(config[key], **value)
        else:
            config[key] = value
    with open(os.path.join(bundle_dir, manifest.SORT_CONFIG), "w") as f:
        json.dump(config, f, indent=1)
    manifest.write_manifest(bundle_dir, {
        "input_shape": [1, input_size, input_size, 3], "input_dtype": "uint8", "class_names": list(labels),
        "score_threshold": SCORE_THRESHOLD, "iou_threshold": IOU_THRESHOLD, "max_detections": MAX_DETECTIONS,
        "versions": {"edge_trash": "test"}})
    return bundle_dir


class ConveyorItem:
    """Ground truth of one synthetic item: class, lane, first frame and the frame its centre
    crosses the middle of the frame (x = width / 2)."""

    def __init__(self, index: int, class_id: int, lane: int, start: int, crossing: int, value: int,
                 flip_class: Optional[int] = None):
        self.index, self.class_id, self.lane, self.start = index, class_id, lane, start
        self.crossing, self.value, self.flip_class = crossing, value, flip_class


def conveyor_items(num_frames: int, width: int = 64, size: int = 8, speed: int = 2, spawn_every: int = 20,
                   seed: int = 0) -> List[ConveyorItem]:
    """Items entering from the left every ``spawn_every`` frames, alternating 2 lanes, moving
    ``speed`` px per frame. Every 7th item is dim (score ~0.55: a hard example); every 11th
    changes colour half-way (its votes disagree)."""
    rng = np.random.default_rng(seed)
    items = []
    for i, start in enumerate(range(0, num_frames, spawn_every)):
        # left edge x(t) = -size + speed * (t - start); centre crosses width/2 when x + size/2 = width/2
        crossing = start + int(np.ceil((width / 2 + size / 2) / speed))
        value = 140 if i % 7 == 3 else 255
        flip = int((i + 1) % 3) if i % 11 == 5 else None
        items.append(ConveyorItem(i, int(rng.integers(0, 3)), i % 2, start, crossing, value, flip))
    return items


def conveyor_frame(t: int, items: Sequence[ConveyorItem], height: int = 32, width: int = 64, size: int = 8,
                   speed: int = 2) -> np.ndarray:
    """Frame ``t`` of the synthetic conveyor (black belt, coloured squares)."""
    frame = np.zeros((height, width, 3), np.uint8)
    for item in items:
        x0 = -size + speed * (t - item.start)
        if x0 >= width or x0 + size <= 0 or t < item.start:
            continue
        y0 = 4 + item.lane * (height // 2)
        cls = item.class_id
        if item.flip_class is not None and x0 + size / 2 >= width / 4:
            cls = item.flip_class
        frame[y0:y0 + size, max(x0, 0):min(x0 + size, width), cls] = item.value
    return frame


def write_conveyor_frames(out_dir: str, num_frames: int, corrupt: Sequence[int] = ()) -> List[ConveyorItem]:
    """Write frames 0..num_frames-1 as ``%06d.npy`` (``corrupt`` ones as garbage) and return the items."""
    os.makedirs(out_dir, exist_ok=True)
    items = conveyor_items(num_frames)
    bad = set(corrupt)
    for t in range(num_frames):
        path = os.path.join(out_dir, "%06d.npy" % t)
        if t in bad:
            with open(path, "wb") as f:
                f.write(b"\x93NUMPY truncated")
        else:
            np.save(path, conveyor_frame(t, items))
    return items


def run_fake_service(argv: List[str], fail_on: Sequence[int] = (), delay_s: float = 0.0,
                     stall_on: Optional[Dict[int, float]] = None) -> int:
    """``edge-trash-device`` main with the fake interpreter (for subprocess tests)."""
    from edge_trash.edge_runtime.__main__ import main
    return main(argv, interpreter_loader=make_fake_loader(fail_on=fail_on, delay_s=delay_s, stall_on=stall_on))


def q(db: str, sql: str) -> list:
    """Rows of ``sql`` on the SQLite file ``db`` (its own short-lived connection)."""
    import sqlite3

    con = sqlite3.connect(db)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()
