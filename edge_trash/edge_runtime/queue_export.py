"""Turn a hard-example queue directory into a COCO file for relabeling (runs on the host).

Images are listed least confident first (by their best detection score, then sequence number);
the device's detections become pre-annotations (``score`` and ``pre_annotation`` kept as extra
fields). Every image is written as JPEG into ``images_out`` (copied when it already is one,
converted from PPM/NPY with Pillow otherwise), so the result feeds ``edge-trash build-tfrecords
--annotations OUT --images IMAGES_OUT`` directly.
"""

import json
import os
import shutil
from typing import Dict, List, Tuple

from edge_trash.edge_runtime.files import write_atomically

from edge_trash.edge_runtime.hard_examples import LABELS_FILE
from edge_trash.edge_runtime.sources import read_image


class QueueError(Exception):
    """The queue directory is missing or unreadable."""


def _sidecars(queue_dir: str) -> List[Dict]:
    records = []
    for name in sorted(os.listdir(queue_dir)):
        if not name.endswith(".json") or name == LABELS_FILE or name.startswith("."):
            continue
        path = os.path.join(queue_dir, name)
        try:
            with open(path, "r", encoding="utf-8") as f:
                record = json.load(f)
        except ValueError as exc:
            raise QueueError("%s is not valid JSON (%s); delete it or re-run the device" % (path, exc))
        for key in ("seq", "file", "width", "height", "detections"):
            if key not in record:
                raise QueueError("%s has no %r: not a hard-example sidecar" % (path, key))
        if not os.path.exists(os.path.join(queue_dir, record["file"])):
            raise QueueError("%s names image %s which is missing from %s" % (path, record["file"], queue_dir))
        records.append(record)
    return records


def build_queue_coco(queue_dir: str) -> Tuple[Dict, List[Tuple[str, str]]]:
    """The queue as a COCO dict (least confident first) and ``(source image, COCO file_name)`` pairs."""
    labels_path = os.path.join(queue_dir, LABELS_FILE)
    if not os.path.isdir(queue_dir) or not os.path.exists(labels_path):
        raise QueueError("%s is not a hard-example queue (no %s); copy the device's hard_examples.dir" % (
            queue_dir, LABELS_FILE))
    with open(labels_path, "r", encoding="utf-8") as f:
        labels = json.load(f)
    records = _sidecars(queue_dir)
    records.sort(key=lambda r: (r.get("best_score", 0.0), r["seq"]))
    images, annotations, files = [], [], []
    for image_id, record in enumerate(records, start=1):
        file_name = os.path.splitext(record["file"])[0] + ".jpg"
        files.append((os.path.join(queue_dir, record["file"]), file_name))
        images.append({"id": image_id, "file_name": file_name, "width": record["width"], "height": record["height"],
                       "device_seq": record["seq"], "hard_reason": record.get("reason"),
                       "best_score": record.get("best_score")})
        for det in record["detections"]:
            xmin, ymin, xmax, ymax = det["bbox"]
            w, h = xmax - xmin, ymax - ymin
            if w <= 0 or h <= 0:
                continue
            annotations.append({"id": len(annotations) + 1, "image_id": image_id,
                                "category_id": int(det["class_id"]) + 1, "bbox": [xmin, ymin, w, h],
                                "area": w * h, "iscrowd": 0, "score": det["score"], "pre_annotation": True})
    coco = {"info": {"description": "edge-trash hard examples for relabeling (least confident first); "
                                    "boxes are the device's detections: correct them before training"},
            "images": images, "annotations": annotations,
            "categories": [{"id": k + 1, "name": name, "supercategory": name} for k, name in enumerate(labels)]}
    return coco, files


def export_queue_as_coco(queue_dir: str, out_json: str, images_out: str) -> Dict:
    """Write ``out_json`` (COCO) and the images into ``images_out``; returns a summary dict. An empty queue
    writes nothing (``images`` 0)."""
    coco, files = build_queue_coco(queue_dir)
    if not files:
        return {"images": 0, "annotations": 0, "out": out_json, "images_out": images_out}
    if not os.path.isdir(images_out):
        os.makedirs(images_out)
    for src, file_name in files:
        dst = os.path.join(images_out, file_name)
        if src.lower().endswith((".jpg", ".jpeg")):
            shutil.copyfile(src, dst)
        else:
            from PIL import Image  # host only
            Image.fromarray(read_image(src)).save(dst, format="JPEG", quality=95)
    images, annotations = coco["images"], coco["annotations"]
    directory = os.path.dirname(os.path.abspath(out_json))
    if not os.path.isdir(directory):
        os.makedirs(directory)
    write_atomically(out_json, json.dumps(coco, indent=1).encode("utf-8"))
    return {"images": len(images), "annotations": len(annotations), "out": out_json, "images_out": images_out}
