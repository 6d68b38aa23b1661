"""Pre-processing (frame -> model input) and decoding of the 4 postprocess outputs (pure numpy).

Like pycoral's ``adapters/detect.py``: it takes the interpreter as an argument and never imports
an interpreter package. Outputs are read BY SIGNATURE NAME (``output_0``..``output_3`` = count,
scores, classes, boxes), with pycoral's fallback by the documented TF1/TF2 orders.
"""

from typing import List, Optional, Sequence, Tuple

import numpy as np

from edge_trash.edge_runtime.geometry import BBox, Detection

SIGNATURE_OUTPUTS = ("output_0", "output_1", "output_2", "output_3")  # count, scores, classes, boxes
RESIZE_MODES = ("stretch", "letterbox")


class DecodeError(Exception):
    """The model's outputs do not follow the detector contract."""


class BoxMapping:
    """How one frame was mapped into the model input: turns normalized model boxes back into that
    frame's pixels. Immutable, so a frame pre-processed in the capture thread keeps its own."""

    __slots__ = ("scale", "offset", "frame_w", "frame_h")

    def __init__(self, scale: Tuple[float, float], offset: Tuple[float, float], frame_w: int, frame_h: int):
        self.scale, self.offset, self.frame_w, self.frame_h = scale, offset, frame_w, frame_h

    def to_frame(self, ymin: float, xmin: float, ymax: float, xmax: float) -> BBox:
        """A normalized model box [ymin, xmin, ymax, xmax] in frame pixels, clipped to the frame."""
        sx, sy = self.scale
        dx, dy = self.offset
        box = BBox(xmin * sx + dx, ymin * sy + dy, xmax * sx + dx, ymax * sy + dy)
        return box.clip(self.frame_w, self.frame_h)


def _linear_taps(source: int, size: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For bilinear resizing of ``source`` pixels to ``size`` (as OpenCV's INTER_LINEAR): each output pixel's
    two source indices and the weight of the second."""
    centre = (np.arange(size, dtype=np.float64) + 0.5) * (source / float(size)) - 0.5
    centre = np.clip(centre, 0.0, source - 1.0)
    first = np.floor(centre).astype(np.intp)
    second = np.minimum(first + 1, source - 1)
    weight = (centre - first).astype(np.float32)
    return first, second, weight


class Preprocessor:
    """Maps a HxWx3 uint8 frame to the model input [1,S,S,3] and boxes back to frame pixels.

    ``mode='stretch'`` resizes the whole frame to the input size (aspect ratio changes, as in
    training with a plain resize); ``'letterbox'`` keeps the aspect ratio and pads with
    ``pad_value``. Resizing is bilinear, as training and ``edge-trash evaluate`` resize
    (``augment.stretch_resize``): OpenCV's ``INTER_LINEAR`` when cv2 is importable, else the same
    interpolation in numpy (pixel centres aligned, edges clamped; within 1 of OpenCV's fixed-point
    rounding). OpenCV takes 0.1-0.2 ms for 640x480 -> 320x320 on a desktop core, numpy 3-8 ms (in the
    capture thread, overlapping inference; the unit's camera needs OpenCV anyway). It was
    nearest-neighbour, which the model never saw in training: AP measured on the host overstated the
    device's.
    """

    def __init__(self, input_height: int, input_width: int, mode: str = "stretch", pad_value: int = 0,
                 use_cv2: Optional[bool] = None):
        if mode not in RESIZE_MODES:
            raise ValueError("resize mode %r is not one of %s" % (mode, ", ".join(RESIZE_MODES)))
        self.input_height = int(input_height)
        self.input_width = int(input_width)
        self.mode = mode
        self.pad_value = int(pad_value)
        self._frame_shape = None  # type: Tuple[int, int]
        self.mapping = None  # type: Optional[BoxMapping]  of the last pre-processed frame
        self._buffer = np.full((1, self.input_height, self.input_width, 3), self.pad_value, np.uint8)
        self._cv2 = None
        if use_cv2 is not False:
            try:
                import cv2  # optional: faster resizing
                self._cv2 = cv2
            except ImportError:
                if use_cv2:
                    raise

    def _prepare(self, frame_h: int, frame_w: int) -> None:
        ih, iw = self.input_height, self.input_width
        if self.mode == "stretch":
            sy, sx = ih / float(frame_h), iw / float(frame_w)
            nh, nw, oy, ox = ih, iw, 0, 0
        else:
            s = min(ih / float(frame_h), iw / float(frame_w))
            sy = sx = s
            nh, nw = max(1, int(round(frame_h * s))), max(1, int(round(frame_w * s)))
            oy, ox = (ih - nh) // 2, (iw - nw) // 2
        if self._cv2 is None:  # numpy: the source rows and columns each output pixel blends, and their weights
            y0, y1, wy = _linear_taps(frame_h, nh)
            x0, x1, wx = _linear_taps(frame_w, nw)
            self._rows, self._cols = (y0, y1, wy[:, None, None]), (x0, x1, wx[:, None])  # broadcast on H, W
        self._region = (slice(oy, oy + nh), slice(ox, ox + nw))
        self._size = (nw, nh)
        # normalized model box -> frame pixels: x_frame = (x_norm * iw - ox) * frame_w / nw
        self.mapping = BoxMapping((iw * frame_w / float(nw), ih * frame_h / float(nh)),
                                  (-ox * frame_w / float(nw), -oy * frame_h / float(nh)), frame_w, frame_h)
        self._buffer[...] = self.pad_value
        self._frame_shape = (frame_h, frame_w)
        del sx, sy

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        """The model input for ``frame`` (a view of an internal buffer: copy it to keep it)."""
        if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
            raise ValueError("expected an HxWx3 uint8 RGB frame, got shape %s dtype %s"
                             % (frame.shape, frame.dtype))
        if self._frame_shape != frame.shape[:2]:
            self._prepare(frame.shape[0], frame.shape[1])
        rows, cols = self._region
        if self._cv2 is not None:
            self._buffer[0, rows, cols] = self._cv2.resize(frame, self._size, interpolation=self._cv2.INTER_LINEAR)
        else:
            (y0, y1, wy), (x0, x1, wx) = self._rows, self._cols
            top = frame[y0].astype(np.float32)
            blended = top + (frame[y1] - top) * wy  # rows first: fewer of them to blend across
            left = blended[:, x0]
            out = left + (blended[:, x1] - left) * wx
            self._buffer[0, rows, cols] = np.rint(out).astype(np.uint8)
        return self._buffer

    def make_input(self, frame: np.ndarray) -> Tuple[np.ndarray, BoxMapping]:
        """(a new model input array, its BoxMapping): for pre-processing in the capture thread."""
        return self(frame).copy(), self.mapping

    def to_frame(self, ymin: float, xmin: float, ymax: float, xmax: float) -> BBox:
        """A normalized model box [ymin, xmin, ymax, xmax] in the last frame's pixels, clipped."""
        if self.mapping is None:
            raise RuntimeError("Preprocessor.to_frame called before any frame was pre-processed")
        return self.mapping.to_frame(ymin, xmin, ymax, xmax)


class OutputReader:
    """Finds the 4 postprocess output tensors of ``interpreter`` once and reads them per frame."""

    def __init__(self, interpreter):
        self.interpreter = interpreter
        self.source = ""
        get_sigs = getattr(interpreter, "_get_full_signature_list", None)
        signatures = get_sigs() if get_sigs is not None else {}
        if signatures:
            if len(signatures) > 1:
                raise DecodeError("the model has %d signatures (%s); the detector contract is exactly "
                                  "one" % (len(signatures), ", ".join(sorted(signatures))))
            outputs = next(iter(signatures.values()))["outputs"]
            missing = [n for n in SIGNATURE_OUTPUTS if n not in outputs]
            if missing:
                raise DecodeError(
                    "the model's signature outputs are %s but the detector contract (and pycoral's "
                    "detect.get_objects) needs %s = count, scores, classes, boxes. Re-export it with "
                    "`edge-trash export`, which names them so." % (sorted(outputs), list(SIGNATURE_OUTPUTS)))
            self.indices = [int(outputs[n]) for n in SIGNATURE_OUTPUTS]
            self.source = "signature"
            return
        details = interpreter.get_output_details()
        if len(details) != 4:
            raise DecodeError("expected the 4 outputs of TFLite_Detection_PostProcess, the model has %d"
                              % len(details))
        idx = [int(d["index"]) for d in details]
        if int(np.prod(details[3]["shape"])) == 1:  # TF1 order: boxes, classes, scores, count
            self.indices = [idx[3], idx[2], idx[1], idx[0]]
            self.source = "tf1-order"
        else:  # TF2 order: scores, boxes, count, classes
            self.indices = [idx[2], idx[0], idx[3], idx[1]]
            self.source = "tf2-order"

    def read(self) -> Tuple[int, np.ndarray, np.ndarray, np.ndarray]:
        """(count, scores [N], classes [N], boxes [N,4]) of the last invoke()."""
        get = self.interpreter.get_tensor
        count_t, scores_t, classes_t, boxes_t = [get(i) for i in self.indices]
        scores, classes, boxes = scores_t[0], classes_t[0], boxes_t[0]
        if boxes.ndim != 2 or boxes.shape[-1] != 4 or scores.shape[0] != boxes.shape[0]:
            raise DecodeError("postprocess outputs have unexpected shapes: scores %s, classes %s, boxes %s"
                              % (scores_t.shape, classes_t.shape, boxes_t.shape))
        count = int(min(max(int(count_t.reshape(-1)[0]), 0), boxes.shape[0]))
        return count, scores, classes, boxes


def decode_detections(count: int, scores: np.ndarray, classes: np.ndarray, boxes: np.ndarray,
                      labels: Sequence[str], mapping, score_threshold: float) -> List[Detection]:
    """Detections with ``score >= score_threshold`` in frame pixels, best first.

    ``mapping`` is the frame's ``BoxMapping`` (or the ``Preprocessor`` that handled it last).
    A class index outside ``labels`` raises ``DecodeError`` (labels.txt and model disagree).
    """
    result = []
    for i in range(count):
        score = float(scores[i])
        if score < score_threshold:
            continue
        class_id = int(classes[i])
        if class_id < 0 or class_id >= len(labels):
            raise DecodeError("the model output class index %d but labels.txt has %d classes (0..%d); "
                              "the bundle's labels do not match its model" % (class_id, len(labels), len(labels) - 1))
        ymin, xmin, ymax, xmax = [float(v) for v in boxes[i]]
        bbox = mapping.to_frame(ymin, xmin, ymax, xmax)
        if bbox.area <= 0:
            continue
        result.append(Detection(class_id, labels[class_id], score, bbox))
    result.sort(key=lambda d: -d.score)
    return result


ONE_ITEM_IOU = 0.6


def one_box_per_item(detections: Sequence[Detection], iou_threshold: float = ONE_ITEM_IOU) -> List[Detection]:
    """Keep the best of detections that overlap by more than ``iou_threshold``, whatever their class.

    The detector's NMS runs per class, so one uncertain item can come out as a 'can' box and a 'cup'
    box on top of each other; the sorter must see one item (one track, one decision), and the
    track's class vote over frames settles the class. ``detections`` best first (as decoded).
    """
    n = len(detections)
    if n < 2:
        return list(detections)
    b = np.array([d.bbox for d in detections], dtype=np.float64)  # [n, 4] xmin, ymin, xmax, ymax
    area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    iw = np.clip(np.minimum(b[:, None, 2], b[None, :, 2]) - np.maximum(b[:, None, 0], b[None, :, 0]), 0, None)
    ih = np.clip(np.minimum(b[:, None, 3], b[None, :, 3]) - np.maximum(b[:, None, 1], b[None, :, 1]), 0, None)
    inter = iw * ih
    union = area[:, None] + area[None, :] - inter
    overlaps = inter > iou_threshold * np.where(union > 0, union, np.inf)
    kept = []  # type: List[Detection]
    suppressed = np.zeros(n, dtype=bool)
    for i in range(n):
        if not suppressed[i]:
            kept.append(detections[i])
            suppressed |= overlaps[i]
    return kept
