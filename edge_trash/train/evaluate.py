"""COCO evaluation of any detector the project makes, through one code path.

``load_detector(path)`` returns a :class:`Detector` for a training run directory, a
SavedModel, or a ``.tflite`` (float, int8, or Edge TPU-compiled when a TPU is attached).
Every detector answers ``detect(image_uint8 HxWx3) -> (boxes [K,4] normalized ymin, xmin,
ymax, xmax, class_ids [K] 1-based, scores [K])``; :func:`evaluate_detector` runs one over
a TFRecord split and scores it with :func:`coco_metrics` (pycocotools).

Images are stretched to the model input exactly like training and the device do
(:func:`edge_trash.train.augment.stretch_resize`); boxes are scored in pixels of the
encoded image stored in the TFRecords.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Protocol, Sequence, Tuple

import numpy as np

from edge_trash.tfrecords import feature_keys as keys
from edge_trash.train.augment import stretch_resize

METRIC_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl",
               "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")
TFLITE_OUTPUTS = ("output_0", "output_1", "output_2", "output_3")  # count, scores, classes, boxes
EDGETPU_CUSTOM_OP = b"edgetpu-custom-op"
GROUND_TRUTH_SUFFIX = ".ground_truth.json"  # evaluate --save-detections DETS.json: DETS.ground_truth.json

DetectResult = Tuple[np.ndarray, np.ndarray, np.ndarray]


class EvaluationError(ValueError):
    """A model, dataset or detections file cannot be evaluated; the message says why and the fix."""


class Detector(Protocol):
    """What evaluation needs from a model. ``class_names`` is None when the model carries none."""

    input_size: int
    class_names: Optional[List[str]]

    def detect(self, image: np.ndarray) -> DetectResult:
        """(boxes [K,4] normalized ymin,xmin,ymax,xmax, class_ids [K] 1-based, scores [K])."""
        ...


# --------------------------------------------------------------------------- detectors


class KerasDetector:
    """A Keras SSD (raw outputs) plus the float decoder ``decode_detections``."""

    def __init__(self, model: Any, config: Any, class_names: Optional[List[str]]) -> None:
        import tensorflow as tf

        from edge_trash.models.postprocess import decode_detections

        self.input_size = int(config.input_size)
        self.class_names = class_names
        self.config = config

        @tf.function(input_signature=[tf.TensorSpec([1, self.input_size, self.input_size, 3],
                                                    tf.float32)])
        def predict(images: Any) -> Dict[str, Any]:
            box_encodings, class_logits = model(images, training=False)
            return decode_detections(box_encodings, class_logits, config)

        self._predict = predict

    def detect(self, image: np.ndarray) -> DetectResult:
        """Detect objects in one uint8 HxWx3 image."""
        x = stretch_resize(_check_image(image), self.input_size).astype(np.float32)[None]
        out = self._predict(x)
        n = int(out["num_detections"][0])
        return (np.asarray(out["boxes"][0, :n], np.float32),
                np.asarray(out["classes"][0, :n], np.int64) + 1,
                np.asarray(out["scores"][0, :n], np.float32))


class SavedModelDetector(KerasDetector):
    """A SavedModel with raw outputs ``(box_encodings, class_logits)``, decoded with its config.

    The SSDConfig comes from ``config.json`` in the SavedModel folder, its ``assets/``, or
    the run directory around it.
    """

    def __init__(self, path: Path, config: Any, class_names: Optional[List[str]]) -> None:
        import tensorflow as tf

        loaded = tf.saved_model.load(str(path))
        signature = loaded.signatures.get("serving_default")
        if signature is None:
            raise EvaluationError(f"{path}: SavedModel has no 'serving_default' signature")
        names = sorted(signature.structured_outputs)
        if {"box_encodings", "class_logits"} <= set(names):
            order = ("box_encodings", "class_logits")
        elif names == ["output_0", "output_1"]:
            order = ("output_0", "output_1")  # Keras export of outputs (box_encodings, class_logits)
        else:
            raise EvaluationError(
                f"{path}: signature outputs {names}; expected 'box_encodings' and 'class_logits' "
                "(raw SSD outputs, as `edge-trash train` saves them)")
        input_name = next(iter(signature.structured_input_signature[1]))

        def model(images: Any, training: bool = False) -> Tuple[Any, Any]:
            out = signature(**{input_name: images})
            return out[order[0]], out[order[1]]

        self._loaded = loaded  # keep the variables alive
        super().__init__(model, config, class_names)


class TFLiteDetector:
    """A detection ``.tflite`` with TFLite_Detection_PostProcess, read by signature names.

    Outputs ``output_0..3`` = count, scores, classes (0-based), boxes (the pycoral contract).
    An Edge TPU-compiled model loads the ``libedgetpu.so.1`` delegate.

    One thread by default: with more, the postprocess op's regular (per-class) NMS in
    ai-edge-litert drops whole classes (tensorflow/tensorflow#56058, still in LiteRT 2.3: on the
    demo model every cup went missing, 10 points of int8 AP50). The op's output with one
    thread matches a reference NMS (tests/test_export_detection_tflite.py).
    """

    def __init__(self, path: Path, class_names: Optional[List[str]] = None,
                 num_threads: Optional[int] = None) -> None:
        from ai_edge_litert.interpreter import Interpreter, load_delegate

        self.path = Path(path)
        self.edgetpu = EDGETPU_CUSTOM_OP in self.path.read_bytes()
        delegates = []
        if self.edgetpu:
            try:
                delegates = [load_delegate("libedgetpu.so.1")]
            except (ValueError, OSError) as exc:
                raise EvaluationError(
                    f"{path}: an Edge TPU-compiled model needs an attached Edge TPU and "
                    f"libedgetpu.so.1 ({exc}); evaluate the int8 .tflite it was compiled from "
                    "instead") from exc
        try:
            self.interpreter = Interpreter(model_path=str(path), experimental_delegates=delegates,
                                           num_threads=num_threads or 1)
        except (ValueError, RuntimeError) as exc:  # TFLite's own words: "mmap of size 0 requested", ...
            from edge_trash.export.tflite_model import TfliteFormatError, read_tflite

            try:
                read_tflite(self.path)
            except TfliteFormatError as why:  # names the file and what is wrong with it
                raise EvaluationError(str(why)) from exc
            said = " ".join(str(exc).split())  # TFLite's words run over lines ("...\nRegistration failed.\n")
            raise EvaluationError(f"{path}: TFLite cannot load it ({said}); pass a model `edge-trash export` "
                                  "wrote (BUNDLE/model_int8.tflite)") from exc
        signatures = self.interpreter.get_signature_list()
        key = "serving_default" if "serving_default" in signatures else next(iter(signatures), None)
        outputs = list(signatures[key]["outputs"]) if key else []
        if key is None or sorted(outputs) != list(TFLITE_OUTPUTS):
            raise EvaluationError(
                f"{path}: expected a signature with outputs {list(TFLITE_OUTPUTS)} (count, scores, "
                f"classes, boxes); found {outputs or 'no signature'}. Re-export with "
                "`edge-trash export`")
        self._runner = self.interpreter.get_signature_runner(key)
        self._input_name = signatures[key]["inputs"][0]
        detail = self._runner.get_input_details()[self._input_name]
        shape = list(detail["shape"])
        if len(shape) != 4 or shape[0] != 1 or shape[3] != 3 or shape[1] != shape[2]:
            raise EvaluationError(f"{path}: input shape {shape}; expected [1, S, S, 3]")
        self.input_size = int(shape[1])
        self._dtype = np.dtype(detail["dtype"])
        self._quant = detail.get("quantization", (0.0, 0))
        self.class_names = class_names

    def _input(self, image: np.ndarray) -> np.ndarray:
        x = stretch_resize(_check_image(image), self.input_size)[None]
        if self._dtype == np.uint8:
            return x
        if self._dtype == np.int8:
            scale, zero = self._quant
            if not scale:
                return (x.astype(np.int16) - 128).astype(np.int8)
            q = np.round(x.astype(np.float32) / scale + zero)
            return np.clip(q, -128, 127).astype(np.int8)
        return x.astype(np.float32)

    def detect(self, image: np.ndarray) -> DetectResult:
        """Detect objects in one uint8 HxWx3 image."""
        out = self._runner(**{self._input_name: self._input(image)})
        n = int(np.asarray(out["output_0"]).reshape(-1)[0])
        scores = np.asarray(out["output_1"], np.float32).reshape(-1)[:n]
        classes = np.asarray(out["output_2"]).reshape(-1)[:n].astype(np.int64) + 1
        boxes = np.clip(np.asarray(out["output_3"], np.float32).reshape(-1, 4)[:n], 0.0, 1.0)
        return boxes, classes, scores


def _check_image(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise EvaluationError(f"detect: expected a uint8 HxWx3 image, got {image.dtype} "
                              f"{list(image.shape)}")
    return image


def _find_config_dir(path: Path) -> Optional[Path]:
    for candidate in (path, path / "assets", path.parent):
        if (candidate / "config.json").is_file():
            return candidate
    return None


def _labels_near(path: Path) -> Optional[List[str]]:
    folder = path if path.is_dir() else path.parent
    for candidate in (folder / "labels.txt", folder / "assets" / "labels.txt",
                      folder.parent / "labels.txt" if path.is_dir() else None):
        if candidate is not None and candidate.is_file():
            names = [line.strip() for line in candidate.read_text(encoding="utf-8").splitlines()]
            return [n for n in names if n]
    return None


def load_detector(path: os.PathLike) -> Detector:
    """A :class:`Detector` for a RUN_DIR, a SavedModel folder, or a ``.tflite`` file."""
    path = Path(path)
    if path.is_file():
        if path.suffix != ".tflite":
            raise EvaluationError(f"--model {path}: expected a RUN_DIR, a SavedModel folder or a "
                                  ".tflite file")
        return TFLiteDetector(path, _labels_near(path))
    if not path.is_dir():
        raise EvaluationError(f"--model {path}: no such file or folder")
    if (path / "config.json").is_file() and (path / "model.weights.h5").is_file():
        from edge_trash.models.run_dir import load_run

        model, config, class_names = load_run(path)
        return KerasDetector(model, config, class_names)
    if (path / "config.json").is_file() and not (path / "saved_model.pb").is_file():
        from edge_trash.models.run_dir import no_weights_message  # a run stopped before its first evaluation

        raise EvaluationError(f"--model {no_weights_message(path)}")
    if (path / "saved_model.pb").is_file():
        config_dir = _find_config_dir(path)
        if config_dir is None:
            raise EvaluationError(
                f"{path}: SavedModel without a config.json beside it (in the folder, its assets/ "
                "or the run directory around it); the decoder needs the SSD config")
        from edge_trash.models.config import SSDConfig
        from edge_trash.models.run_dir import read_run_config

        config = SSDConfig.from_dict(read_run_config(config_dir)["model"]).validate()
        return SavedModelDetector(path, config, _labels_near(path))
    models = [path / name for name in ("model_int8_edgetpu.tflite", "model_int8.tflite") if (path / name).is_file()]
    if models:  # an export bundle: its models are files in it
        choices = " or ".join(f"--model {m}" for m in models)
        edgetpu = " (the _edgetpu one needs an Edge TPU on this machine)" if len(models) > 1 else ""
        raise EvaluationError(f"--model {path}: an export bundle; evaluate one of its models: {choices}{edgetpu}")
    raise EvaluationError(
        f"--model {path}: neither a run directory (config.json + model.weights.h5), a SavedModel "
        "(saved_model.pb) nor a .tflite file")


# --------------------------------------------------------------------------- ground truth


@dataclass(frozen=True)
class EvalImage:
    """One image of a split: its COCO id, size, and encoded bytes (decoded on demand)."""

    image_id: int
    file_name: str
    width: int
    height: int
    encoded: bytes

    def decode(self) -> np.ndarray:
        """The image as uint8 HxWx3 RGB, decoded by TensorFlow exactly as the input pipeline
        decodes it (Pillow's JPEG decoder differs by a few levels on half the pixels)."""
        import tensorflow as tf

        image = tf.io.decode_image(self.encoded, channels=3, expand_animations=False)
        return image.numpy()


def gt_from_tfrecords(data_dir: os.PathLike, split: str = "val") -> Tuple[Dict[str, Any],
                                                                       List[EvalImage]]:
    """COCO ground truth (boxes in pixels of the encoded images) and the images of a split.

    Image ids are the records' ``image/source_id`` when every one is a distinct integer,
    else 1..N in record order.
    """
    import tensorflow as tf

    from edge_trash.train.input_pipeline import load_split

    data = load_split(data_dir, split)
    if not len(data.index):  # AP -1 for 0 images, exit 0 and "next: export" was what it said
        raise EvaluationError(f"{data_dir}: split {split!r} holds no records; rebuild with a --val-fraction (or "
                              "--test-fraction) above 0, or evaluate another --split")
    parsed = []
    for i in range(len(data.index)):
        f = tf.train.Example.FromString(data.index.read(i)).features.feature

        def floats(key: str) -> List[float]:
            return list(f[key].float_list.value)

        def ints(key: str) -> List[int]:
            return list(f[key].int64_list.value)

        source = f[keys.SOURCE_ID].bytes_list.value
        filename = f[keys.FILENAME].bytes_list.value
        encoded = f[keys.ENCODED].bytes_list.value
        if not encoded:
            raise EvaluationError(f"{data_dir}: record {i} of split {split!r} has no image")
        width, height = ints(keys.WIDTH), ints(keys.HEIGHT)
        if not width or not height:
            from PIL import Image

            with Image.open(io.BytesIO(encoded[0])) as im:
                width, height = [im.width], [im.height]
        parsed.append(dict(
            source=source[0].decode("utf-8") if source else str(i),
            file_name=filename[0].decode("utf-8") if filename else f"{split}-{i}",
            width=int(width[0]), height=int(height[0]), encoded=encoded[0],
            ymin=floats(keys.BBOX_YMIN), xmin=floats(keys.BBOX_XMIN),
            ymax=floats(keys.BBOX_YMAX), xmax=floats(keys.BBOX_XMAX),
            labels=ints(keys.CLASS_LABEL), area=floats(keys.AREA), crowd=ints(keys.IS_CROWD)))
    sources = [p["source"] for p in parsed]
    numeric = all(s.isdigit() for s in sources) and len(set(sources)) == len(sources)
    images: List[EvalImage] = []
    annotations: List[Dict[str, Any]] = []
    for i, p in enumerate(parsed):
        image_id = int(p["source"]) if numeric else i + 1
        images.append(EvalImage(image_id, p["file_name"], p["width"], p["height"], p["encoded"]))
        w, h = p["width"], p["height"]
        for k, label in enumerate(p["labels"]):
            x0, y0 = p["xmin"][k] * w, p["ymin"][k] * h
            bw, bh = (p["xmax"][k] - p["xmin"][k]) * w, (p["ymax"][k] - p["ymin"][k]) * h
            area = p["area"][k] if k < len(p["area"]) else bw * bh
            annotations.append({
                "id": len(annotations) + 1, "image_id": image_id, "category_id": int(label),
                "bbox": [x0, y0, bw, bh], "area": float(area),
                "iscrowd": int(p["crowd"][k]) if k < len(p["crowd"]) else 0})
    coco = {
        "images": [{"id": im.image_id, "file_name": im.file_name, "width": im.width,
                    "height": im.height} for im in images],
        "annotations": annotations,
        "categories": [{"id": k + 1, "name": name} for k, name in enumerate(data.class_names)],
    }
    return coco, images


# --------------------------------------------------------------------------- COCO metrics


def _id(value: Any) -> bool:
    """Whether ``value`` can be a COCO id (an integer or a text; not a bool, float, list or object)."""
    return isinstance(value, (int, str)) and not isinstance(value, bool)


def _number(value: Any) -> bool:
    """Whether ``value`` is a finite int or float (not a bool)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _box(value: Any) -> Optional[List[float]]:
    """``[x, y, w, h]`` as 4 finite floats, or None when ``value`` is not that."""
    if not isinstance(value, (list, tuple)) or len(value) != 4 or not all(_number(v) for v in value):
        return None
    return [float(v) for v in value]


def _prepare_gt(gt_coco: Mapping[str, Any], name: str = "ground truth") -> Dict[str, Any]:
    """A copy with annotation ids renumbered 1..N (pycocotools treats id 0 as 'unmatched' and
    keys annotations by id, so duplicates or zeros silently corrupt matching), area and
    iscrowd filled in. A record pycocotools cannot use raises :class:`EvaluationError`
    naming it, after ``name`` (the flag and file at the CLI), and evaluation never guesses what
    the ground truth meant."""
    if not isinstance(gt_coco, Mapping):
        raise EvaluationError(f"{name}: expected a COCO dataset object with 'images', 'annotations' "
                              "and 'categories'")
    for key in ("images", "annotations", "categories"):
        if not isinstance(gt_coco.get(key), list):
            raise EvaluationError(f"{name}: missing the {key!r} list of a COCO dataset")
    for key, needs in (("images", ("id",)), ("categories", ("id", "name"))):
        for i, rec in enumerate(gt_coco[key]):
            if not isinstance(rec, Mapping) or not _id(rec.get("id")) or (
                    "name" in needs and not isinstance(rec.get("name"), str)):
                raise EvaluationError(f"{name}: {key}[{i}] needs {' and '.join(repr(n) for n in needs)} "
                                      f"(an integer id{', a text name' if 'name' in needs else ''}), got "
                                      f"{str(rec)[:120]}")
    image_ids = {im["id"] for im in gt_coco["images"]}
    annotations = []
    for n, ann in enumerate(gt_coco["annotations"], start=1):
        where = f"{name}: annotation #{n}"
        if not isinstance(ann, Mapping):
            raise EvaluationError(f"{where} is not an object: {str(ann)[:120]}")
        bbox = _box(ann.get("bbox"))
        if bbox is None:
            paired = ("" if not name.startswith("--annotations") else  # a file the user gave, not the records
                      " For detections `edge-trash evaluate --save-detections` wrote, pass --annotations the "
                      f"{GROUND_TRUTH_SUFFIX} file written beside them: a source annotation file is not their ground "
                      "truth (build-tfrecords drops such boxes, shrinks images to --max-size and numbers the "
                      "categories as labels.txt does)")
            raise EvaluationError(f"{where}: bbox {ann.get('bbox')!r} is not 4 finite numbers [x, y, w, h]: fix or "
                                  f"drop that annotation.{paired}")
        if not _id(ann.get("image_id")) or ann["image_id"] not in image_ids:
            raise EvaluationError(f"{where} refers to unknown image_id {ann.get('image_id')!r}")
        if not _id(ann.get("category_id")):
            raise EvaluationError(f"{where}: category_id {ann.get('category_id')!r} is not an id")
        fixed = dict(ann, id=n, bbox=bbox)
        if not _number(fixed.get("area")):
            fixed["area"] = bbox[2] * bbox[3]
        fixed["iscrowd"] = 1 if fixed.get("iscrowd") in (1, True) else 0
        fixed.pop("segmentation", None)
        annotations.append(fixed)
    return {"images": [dict(im) for im in gt_coco["images"]], "annotations": annotations,
            "categories": [dict(c) for c in gt_coco["categories"]]}


def _prepare_detections(gt: Mapping[str, Any], detections: Sequence[Mapping[str, Any]]
                        ) -> List[Dict[str, Any]]:
    image_ids = {im["id"] for im in gt["images"]}
    cat_ids = {c["id"] for c in gt["categories"]}
    out = []
    for n, det in enumerate(detections, start=1):
        if not isinstance(det, Mapping):
            raise EvaluationError(f"detection #{n} is not an object: {str(det)[:120]}")
        missing = [k for k in ("image_id", "category_id", "bbox", "score") if k not in det]
        if missing:
            raise EvaluationError(f"detection #{n}: missing {missing} (COCO results format: "
                                  "image_id, category_id, bbox [x, y, w, h] pixels, score)")
        if not _id(det["image_id"]) or det["image_id"] not in image_ids:
            raise EvaluationError(f"detection #{n}: image_id {det['image_id']!r} is not in the "
                                  "ground truth; evaluate against the same split")
        if not _id(det["category_id"]) or det["category_id"] not in cat_ids:
            raise EvaluationError(f"detection #{n}: category_id {det['category_id']!r} not in "
                                  f"the ground truth categories {sorted(cat_ids, key=str)}")
        bbox = _box(det["bbox"])
        if bbox is None:
            raise EvaluationError(f"detection #{n}: bbox {det['bbox']!r} is not 4 finite numbers")
        if not _number(det["score"]):
            raise EvaluationError(f"detection #{n}: score {det['score']!r} is not a finite number")
        out.append({"id": n, "image_id": det["image_id"], "category_id": det["category_id"],
                    "bbox": bbox, "area": bbox[2] * bbox[3], "score": float(det["score"]),
                    "iscrowd": 0})
    return out


def run_cocoeval(gt_coco: Mapping[str, Any], detections: Sequence[Mapping[str, Any]], *,
                 gt_name: str = "ground truth") -> Any:
    """An evaluated, accumulated and summarized ``pycocotools`` ``COCOeval`` (stdout silenced).
    ``gt_name`` begins the message of a ground truth that cannot be used (``--annotations GT.json``)."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    gt_data = _prepare_gt(gt_coco, gt_name)
    dets = _prepare_detections(gt_data, detections)
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = gt_data
        gt.createIndex()
        dt = COCO()
        dt.dataset = {"images": gt_data["images"], "categories": gt_data["categories"],
                      "annotations": dets}
        dt.createIndex()
        ev = COCOeval(gt, dt, "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev


def coco_metrics(gt_coco: Mapping[str, Any], detections: Sequence[Mapping[str, Any]], *,
                 gt_name: str = "ground truth") -> Dict[str, Any]:
    """COCO box metrics as pycocotools reports them (fractions; -1 when undefined).

    ``detections``: COCO results (``image_id``, ``category_id``, ``bbox`` [x, y, w, h] in
    pixels, ``score``). Returns keys :data:`METRIC_KEYS` plus ``per_class`` {name: AP} and ``per_class_AP50``
    {name: AP50}, -1 for a class without ground truth; ``gt_name`` as for :func:`run_cocoeval`.
    """
    ev = run_cocoeval(gt_coco, detections, gt_name=gt_name)
    metrics: Dict[str, Any] = {key: float(v) for key, v in zip(METRIC_KEYS, ev.stats)}
    metrics["per_class"] = per_class_ap(ev)
    metrics["per_class_AP50"] = per_class_ap(ev, iou=0.5)
    return metrics


def per_class_ap(ev: Any, iou: Optional[float] = None) -> Dict[str, float]:
    """AP@[.5:.95] (all areas, 100 detections) per category name from an accumulated COCOeval; at one IoU
    threshold with ``iou`` (0.5: AP50)."""
    precision = ev.eval["precision"]  # [T, R, K, A, M]
    if iou is not None:
        t = int(np.argmin(np.abs(ev.params.iouThrs - iou)))
        precision = precision[t:t + 1]
    out: Dict[str, float] = {}
    for k, cat_id in enumerate(ev.params.catIds):
        p = precision[:, :, k, 0, -1]
        p = p[p > -1]
        out[ev.cocoGt.cats[cat_id]["name"]] = float(np.mean(p)) if p.size else -1.0
    return out


def precision_recall_curves(ev: Any, iou: float = 0.5) -> Dict[str, Tuple[np.ndarray, np.ndarray]]:
    """Interpolated precision at COCO's 101 recall points per class name, at one IoU threshold."""
    t = int(np.argmin(np.abs(ev.params.iouThrs - iou)))
    recall = np.asarray(ev.params.recThrs)
    out = {}
    for k, cat_id in enumerate(ev.params.catIds):
        p = ev.eval["precision"][t, :, k, 0, -1]
        if (p > -1).any():
            out[ev.cocoGt.cats[cat_id]["name"]] = (recall, np.clip(p, 0.0, 1.0))
    return out


def _iou_xywh(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix of [N,4] and [M,4] boxes in [x, y, w, h]."""
    ax1, ay1, ax2, ay2 = a[:, 0], a[:, 1], a[:, 0] + a[:, 2], a[:, 1] + a[:, 3]
    bx1, by1, bx2, by2 = b[:, 0], b[:, 1], b[:, 0] + b[:, 2], b[:, 1] + b[:, 3]
    iw = np.clip(np.minimum(ax2[:, None], bx2) - np.maximum(ax1[:, None], bx1), 0, None)
    ih = np.clip(np.minimum(ay2[:, None], by2) - np.maximum(ay1[:, None], by1), 0, None)
    inter = iw * ih
    union = (a[:, 2] * a[:, 3])[:, None] + (b[:, 2] * b[:, 3])[None] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def confusion_matrix(gt_coco: Mapping[str, Any], detections: Sequence[Mapping[str, Any]],
                     iou_threshold: float = 0.5, score_threshold: float = 0.3
                     ) -> Tuple[np.ndarray, List[str]]:
    """Class confusion of detections (score >= threshold) matched to ground truth by IoU.

    Greedy per image, highest score first, any class. Returns ``(matrix [C+1, C+1], names)``:
    rows = true class, columns = predicted class; the last row (``background``) counts
    detections matching no box, the last column (``missed``) boxes no detection matched.
    """
    cats = sorted(gt_coco["categories"], key=lambda c: c["id"])
    col = {c["id"]: k for k, c in enumerate(cats)}
    c = len(cats)
    matrix = np.zeros((c + 1, c + 1), dtype=np.int64)
    by_image: Dict[Any, Tuple[List[Mapping[str, Any]], List[Mapping[str, Any]]]] = {}
    for im in gt_coco["images"]:
        by_image[im["id"]] = ([], [])
    for ann in gt_coco["annotations"]:
        if not ann.get("iscrowd", 0):
            by_image[ann["image_id"]][0].append(ann)
    for det in detections:
        if det["score"] >= score_threshold and det["image_id"] in by_image:
            by_image[det["image_id"]][1].append(det)
    for gts, dets in by_image.values():
        dets = sorted(dets, key=lambda d: -d["score"])
        taken = np.zeros(len(gts), dtype=bool)
        if gts and dets:
            ious = _iou_xywh(np.array([d["bbox"] for d in dets], float),
                             np.array([g["bbox"] for g in gts], float))
        for i, det in enumerate(dets):
            best = -1
            if gts:
                candidates = np.where(taken, -1.0, ious[i])
                j = int(np.argmax(candidates))
                if candidates[j] >= iou_threshold:
                    best = j
            if best >= 0:
                taken[best] = True
                matrix[col[gts[best]["category_id"]], col[det["category_id"]]] += 1
            else:
                matrix[c, col[det["category_id"]]] += 1
        for j, g in enumerate(gts):
            if not taken[j]:
                matrix[col[g["category_id"]], c] += 1
    return matrix, [cat["name"] for cat in cats]


def confusion_labels(class_names: Sequence[str]) -> Tuple[List[str], List[str]]:
    """Row and column labels of :func:`confusion_matrix`: the classes plus ``background`` (rows)
    and ``missed`` (columns), bracketed (``(background)``) where a class already has that name."""
    def extra(label: str) -> str:
        while label in class_names:
            label = f"({label})"
        return label

    return list(class_names) + [extra("background")], list(class_names) + [extra("missed")]


# --------------------------------------------------------------------------- running


def detections_to_coco(image: EvalImage, result: DetectResult) -> List[Dict[str, Any]]:
    """COCO results rows (pixels of ``image``) for one detector output."""
    boxes, class_ids, scores = result
    rows = []
    for (ymin, xmin, ymax, xmax), cid, score in zip(np.asarray(boxes, float), class_ids, scores):
        x, y = xmin * image.width, ymin * image.height
        rows.append({"image_id": image.image_id, "category_id": int(cid),
                     "bbox": [round(x, 2), round(y, 2), round((xmax - xmin) * image.width, 2),
                              round((ymax - ymin) * image.height, 2)],
                     "score": round(float(score), 5)})
    return rows


def paired_ground_truth_path(detections_path: os.PathLike) -> Path:
    """Where ``evaluate --save-detections DETS.json`` writes the ground truth those detections pair with:
    ``DETS.ground_truth.json`` beside them. Its boxes are in pixels of the images stored in the TFRecords and
    its category ids those of labels.txt (1..C), as the detections' are; the dataset's source annotation file
    has neither (build-tfrecords shrinks images to --max-size and numbers the classes anew)."""
    path = Path(detections_path)
    return path.with_name(f"{path.stem}{GROUND_TRUTH_SUFFIX}")


def paired_ground_truth(gt_coco: Mapping[str, Any], source: Mapping[str, Any]) -> Dict[str, Any]:
    """``gt_coco`` (from :func:`gt_from_tfrecords`) as the file :func:`paired_ground_truth_path` names, with a
    COCO ``info`` saying what it is and where it comes from (``source``: model, data, split)."""
    info = {"description": "ground truth of the detections beside it (evaluate --save-detections): boxes in "
                           "pixels of the images stored in the TFRecords, category ids of labels.txt",
            **{key: str(value) for key, value in source.items()}}
    return {"info": info, "images": list(gt_coco["images"]), "annotations": list(gt_coco["annotations"]),
            "categories": list(gt_coco["categories"])}


def first_images(gt_coco: Mapping[str, Any], images: List[EvalImage], max_images: Optional[int]
                 ) -> Tuple[Dict[str, Any], List[EvalImage]]:
    """Ground truth and images cut to the first ``max_images`` images (all when None)."""
    if max_images is None or max_images >= len(images):
        return dict(gt_coco), list(images)
    images = list(images[:max_images])
    kept = {im.image_id for im in images}
    return dict(gt_coco, images=[im for im in gt_coco["images"] if im["id"] in kept],
                annotations=[a for a in gt_coco["annotations"] if a["image_id"] in kept]), images


def evaluate_on_images(detector: Detector, gt_coco: Mapping[str, Any], images: Sequence[EvalImage],
                       progress: Optional[Callable[[int, int], None]] = None
                       ) -> Tuple[Dict[str, Any], List[Dict[str, Any]]]:
    """Run ``detector`` on ``images`` and score against ``gt_coco``: (metrics, COCO results).

    The metrics add ``num_images`` and ``num_detections``. Raises :class:`EvaluationError`
    when the model's classes are not the dataset's.
    """
    names = [c["name"] for c in sorted(gt_coco["categories"], key=lambda c: c["id"])]
    if detector.class_names is not None and list(detector.class_names) != names:
        raise EvaluationError(
            f"the model's classes {list(detector.class_names)} differ from the dataset's "
            f"{names} (the labels.txt of the model and of --data); evaluate on the dataset the model was trained "
            "for (its run's data.json names it)")
    detections: List[Dict[str, Any]] = []
    for n, image in enumerate(images, start=1):
        boxes, class_ids, scores = detector.detect(image.decode())
        bad = [int(c) for c in class_ids if not 1 <= int(c) <= len(names)]
        if bad:
            raise EvaluationError(f"image {image.file_name}: the model returned class ids {bad} "
                                  f"outside 1..{len(names)}")
        detections.extend(detections_to_coco(image, (boxes, class_ids, scores)))
        if progress is not None:
            progress(n, len(images))
    metrics = coco_metrics(gt_coco, detections)
    metrics["num_images"] = len(images)
    metrics["num_detections"] = len(detections)
    return metrics, detections


def evaluate_detector(detector: Detector, data_dir: os.PathLike, split: str = "val", *,
                      max_images: Optional[int] = None,
                      progress: Optional[Callable[[int, int], None]] = None
                      ) -> Tuple[Dict[str, Any], List[Dict[str, Any]]]:
    """Run ``detector`` over a TFRecord split; return (COCO metrics, COCO results rows)."""
    gt, images = first_images(*gt_from_tfrecords(data_dir, split), max_images)
    return evaluate_on_images(detector, gt, images, progress)


def instances_per_class(gt_coco: Mapping[str, Any]) -> Dict[str, int]:
    """Ground-truth boxes per category name (crowd boxes excluded)."""
    names = {c["id"]: c["name"] for c in gt_coco["categories"]}
    counts = {name: 0 for name in names.values()}
    for ann in gt_coco["annotations"]:
        if not ann.get("iscrowd", 0) and ann["category_id"] in names:
            counts[names[ann["category_id"]]] += 1
    return counts


def format_metrics_table(metrics: Mapping[str, Any],
                         instances: Optional[Mapping[str, int]] = None) -> str:
    """Per-class AP table followed by the summary metrics, for the terminal."""
    from edge_trash.terminal import display_width, pad_right

    per_class = metrics.get("per_class", {})
    # columns, not characters: a CJK name or an emoji takes two per character, an accent written apart none
    width = max([len("class")] + [display_width(n) for n in per_class])
    lines = [f"{pad_right('class', width)}  {'boxes':>6}  {'AP':>6}"]
    for name, ap in per_class.items():
        count = f"{instances[name]:>6d}" if instances and name in instances else f"{'-':>6}"
        shown = f"{ap:6.3f}" if ap >= 0 else f"{'n/a':>6}"
        lines.append(f"{pad_right(name, width)}  {count}  {shown}")
    lines.append("  ".join(f"{k} {metrics[k]:.3f}" for k in METRIC_KEYS[:6] if k in metrics))
    lines.append("  ".join(f"{k} {metrics[k]:.3f}" for k in METRIC_KEYS[6:] if k in metrics))
    return "\n".join(lines)


def load_coco_json(path: os.PathLike, what: str) -> Any:
    """Read a COCO JSON file (ground truth or results) with an error naming the flag and file."""
    from edge_trash.tfrecords.coco import CocoFormatError, read_json_text

    try:
        return json.loads(read_json_text(Path(path)))  # UTF-8 with or without BOM, UTF-16, gzipped
    except (CocoFormatError, json.JSONDecodeError) as exc:
        raise EvaluationError(f"{what} {path}: cannot read COCO JSON ({exc})") from exc
