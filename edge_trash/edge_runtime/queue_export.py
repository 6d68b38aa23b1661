"""Turn a hard-example queue directory into a COCO file for relabeling (runs on the host).

Images are listed least confident first (by their best detection score, then sequence number);
the device's detections become pre-annotations (``score`` and ``pre_annotation`` kept as extra
fields; ``build-tfrecords`` warns about boxes still so marked). Every image is written as JPEG into
``images_out`` (copied when it already is one, converted from PPM or PNG with Pillow otherwise), so the
result feeds ``edge-trash build-tfrecords --annotations OUT --images IMAGES_OUT`` directly.

A queue is often copied off a running device: an entry caught half-written (a sidecar cut short, an image
without its sidecar or the reverse, a JPEG without its end) is skipped and listed, never the whole export.
A detection is filed under the class name the device gave it (its ``label``): a queue filled by an
earlier model whose classes were in another order keeps each box's class. An image is never written over
another picture of the same name (two devices' queues exported into one folder): that export is refused
before anything is written.
"""

import json
import math
import os
from typing import Callable, Dict, Iterable, List, Optional, Tuple

from edge_trash.edge_runtime.files import is_temporary, write_atomically
from edge_trash.edge_runtime.hard_examples import IMAGE_EXTENSIONS, LABELS_FILE, QUEUE_FILE_RE
from edge_trash.edge_runtime.sources import FrameReadError, ppm_cut_short, read_image



class QueueError(Exception):
    """The queue as a whole cannot be read, or its export would overwrite other pictures."""


class NotAQueueError(QueueError):
    """The folder is no hard-example queue at all (no ``labels.json``)."""


def _number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _labels(queue_dir: str) -> List[str]:
    """The model's class names as the device wrote them (``labels.json``)."""
    path = os.path.join(queue_dir, LABELS_FILE)
    try:
        with open(path, "r", encoding="utf-8") as f:
            labels = json.load(f)
    except (ValueError, UnicodeDecodeError) as exc:
        raise QueueError("%s is not readable JSON (%s): copy it again from the device's queue folder (the service "
                         "writes it at every start)" % (path, exc))
    if not isinstance(labels, list) or not all(isinstance(name, str) and name for name in labels):
        raise QueueError("%s is not a list of class names: copy it again from the device's queue folder (the "
                         "service writes it at every start)" % path)
    return labels


def jpeg_cut_short(path: str, tail: int = 4096) -> bool:
    """Whether the file ``path`` starts as a JPEG but lacks its end marker (copied while it was written);
    zero bytes after the end count as its end (a copy into a file made full size first)."""
    with open(path, "rb") as f:
        if f.read(2) != b"\xff\xd8":
            return False  # no JPEG: the build's reader says what it is
        f.seek(0, os.SEEK_END)
        f.seek(max(2, f.tell() - tail))
        return f.read().rstrip(b"\x00")[-2:] != b"\xff\xd9"


def _check_record(queue_dir: str, record: object, labels: List[str]) -> Optional[str]:
    """Why the sidecar ``record`` cannot be exported (a reason for the list of skipped entries), or None."""
    if not isinstance(record, dict):
        return "not a hard-example sidecar (a JSON %s, not an object)" % type(record).__name__
    for key in ("seq", "file", "width", "height", "detections"):
        if key not in record:
            return "has no %r: not a hard-example sidecar (another tool's, or another version's)" % key
    name = record["file"]
    if not isinstance(name, str) or not QUEUE_FILE_RE.match(name):
        return "its 'file' %r is not the name of an image in the queue folder" % (name,)
    if not _number(record["seq"]) or record.get("best_score") is not None and not _number(record["best_score"]):
        return "its 'seq' or 'best_score' is not a number"
    for key in ("width", "height"):
        if not isinstance(record[key], int) or isinstance(record[key], bool) or record[key] <= 0:
            return "its %r %r is not a positive whole number" % (key, record[key])
    if not isinstance(record["detections"], list):
        return "its 'detections' is not a list"
    for k, det in enumerate(record["detections"]):
        if not isinstance(det, dict):
            return "detection %d is not an object" % k
        box = det.get("bbox")
        if not isinstance(box, list) or len(box) != 4 or not all(_number(v) for v in box):
            return "detection %d has no 'bbox' of 4 numbers [xmin, ymin, xmax, ymax]" % k
        if not _number(det.get("score")):
            return "detection %d has no numeric 'score'" % k
        label, class_id = det.get("label"), det.get("class_id")
        known_id = isinstance(class_id, int) and not isinstance(class_id, bool) and 0 <= class_id < len(labels)
        if not (isinstance(label, str) and label) and not known_id:
            return ("detection %d has neither a 'label' nor a 'class_id' among the %d classes of %s"
                    % (k, len(labels), LABELS_FILE))
    image = os.path.join(queue_dir, name)
    if not os.path.isfile(image):
        return ("names image %s, which is not in the queue (evicted by the quota, or not copied yet: copy the "
                "queue again once the device is stopped)" % name)
    if name.endswith((".jpg", ".jpeg")):  # QUEUE_FILE_RE admits lower-case extensions only
        if jpeg_cut_short(image):
            return ("its image %s is cut short (no JPEG end marker: copied while the device wrote it?); copy it "
                    "again" % name)
        return None
    if name.endswith(".ppm"):  # a device without Pillow: told from its header and size, without reading it
        problem = ppm_cut_short(image)
    else:  # a PNG put there by hand: read whole
        try:
            read_image(image)
            problem = None
        except FrameReadError as exc:
            problem = str(exc)
    return None if problem is None else ("its image cannot be read (%s): copied while the device wrote it? copy "
                                         "it again" % problem)


def read_queue(queue_dir: str) -> Tuple[List[str], List[Dict], List[Tuple[str, str]]]:
    """``(labels, records, skipped)``: the model's class names, the sidecars that can be exported, and
    ``(path, reason)`` for each entry that cannot (a damaged sidecar, an image without one). Raises
    :class:`QueueError` when ``queue_dir`` is no queue or its ``labels.json`` is damaged."""
    labels_path = os.path.join(queue_dir, LABELS_FILE)
    if not os.path.isdir(queue_dir) or not os.path.exists(labels_path):
        raise NotAQueueError("%s is not a hard-example queue (no %s); copy the device's hard_examples.dir" % (
            queue_dir, LABELS_FILE))
    labels = _labels(queue_dir)
    names = sorted(os.listdir(queue_dir))
    records, skipped, named = [], [], set()
    for name in names:
        if not name.endswith(".json") or name == LABELS_FILE or name.startswith("."):
            continue
        path = os.path.join(queue_dir, name)
        try:
            with open(path, "r", encoding="utf-8") as f:
                record = json.load(f)
        except (ValueError, UnicodeDecodeError) as exc:
            skipped.append((path, "not readable JSON (%s): cut short while it was copied?" % exc))
            continue
        except OSError as exc:
            skipped.append((path, "cannot be read (%s)" % (exc.strerror or exc)))
            continue
        if isinstance(record, dict) and isinstance(record.get("file"), str):
            named.add(record["file"])  # an image a sidecar names is no orphan, even when the sidecar is skipped
        try:
            reason = _check_record(queue_dir, record, labels)
        except OSError as exc:  # its image unreadable (permissions of a copy made as root)
            reason = "its image cannot be read (%s)" % (exc.strerror or exc)
        if reason is not None:
            skipped.append((path, reason))
            continue
        records.append(record)
    stems = {name[:-len(".json")] for name in names if name.endswith(".json")}
    for name in names:  # an image without its sidecar: the device writes the image first, so it was cut off
        if name.endswith(IMAGE_EXTENSIONS) and not name.startswith(".") and not is_temporary(name) \
                and name not in named and os.path.splitext(name)[0] not in stems:
            skipped.append((os.path.join(queue_dir, name), "an image without its sidecar .json (copied while the "
                                                            "device wrote it, or the sidecar was deleted)"))
    return labels, records, skipped


def build_queue_coco(queue_dir: str, names_in_queue: bool = False) -> Tuple[Dict, List[Tuple[str, str]]]:
    """The queue as a COCO dict (least confident first) and ``(source image, COCO file_name)`` pairs.
    Entries that cannot be exported are left out and listed in ``coco["info"]["skipped"]``. The
    ``file_name`` is a JPEG's name (what :func:`export_queue_as_coco` writes), or with ``names_in_queue``
    the queue's own file (for the COCO the operator page serves, which names the queue's images)."""
    labels, records, skipped = read_queue(queue_dir)
    records.sort(key=lambda r: (r.get("best_score") or 0.0, r["seq"], r["file"]))
    names = list(labels)  # category k + 1 is names[k]: the model's classes, then names only earlier models had
    relabeled = 0
    images, annotations, files = [], [], []
    for image_id, record in enumerate(records, start=1):
        file_name = record["file"] if names_in_queue else os.path.splitext(record["file"])[0] + ".jpg"
        files.append((os.path.join(queue_dir, record["file"]), file_name))
        images.append({"id": image_id, "file_name": file_name, "width": record["width"], "height": record["height"],
                       "device_seq": record["seq"], "hard_reason": record.get("reason"),
                       "best_score": record.get("best_score")})
        for det in record["detections"]:
            xmin, ymin, xmax, ymax = det["bbox"]
            w, h = xmax - xmin, ymax - ymin
            if w <= 0 or h <= 0:
                continue
            label, class_id = det.get("label"), det.get("class_id")
            known_id = isinstance(class_id, int) and not isinstance(class_id, bool) and 0 <= class_id < len(labels)
            if not (isinstance(label, str) and label):
                label = labels[class_id]
            elif known_id and labels[class_id] != label:
                relabeled += 1  # saved by a model whose classes were in another order
            if label not in names:
                names.append(label)
            annotations.append({"id": len(annotations) + 1, "image_id": image_id,
                                "category_id": names.index(label) + 1, "bbox": [xmin, ymin, w, h],
                                "area": w * h, "iscrowd": 0, "score": det["score"], "pre_annotation": True})
    coco = {"info": {"description": "edge-trash hard examples for relabeling (least confident first); "
                                    "boxes are the device's detections: correct them before training",
                     "skipped": [{"path": path, "reason": reason} for path, reason in skipped],
                     "detections_of_an_earlier_model": relabeled},
            "images": images, "annotations": annotations,
            "categories": [{"id": k + 1, "name": name, "supercategory": name} for k, name in enumerate(names)]}
    return coco, files


def _image_bytes(src: str) -> bytes:
    """The JPEG to write for the queue image ``src``: its own bytes, or it converted (PPM, PNG)."""
    if src.lower().endswith((".jpg", ".jpeg")):
        with open(src, "rb") as f:
            return f.read()
    import io

    from PIL import Image  # host only

    buf = io.BytesIO()
    Image.fromarray(read_image(src)).save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def export_queue_as_coco(queue_dir: str, out_json: str, images_out: str,
                         wrap: Optional[Callable[[Iterable, int], Iterable]] = None) -> Dict:
    """Write ``out_json`` (COCO) and the images into ``images_out``; returns a summary dict (``images``,
    ``annotations``, ``skipped`` as ``(path, reason)`` pairs, ``relabeled``: detections filed under the
    name an earlier model gave them). ``wrap(iterable, total)`` may wrap the images as they are written (a
    progress bar). An empty queue writes nothing (``images`` 0). Raises
    :class:`QueueError` before writing anything when ``images_out`` holds another picture under one of the
    names (another queue's export), or ``out_json`` exists with other annotations (corrected since)."""
    coco, files = build_queue_coco(queue_dir)
    skipped = [(item["path"], item["reason"]) for item in coco["info"]["skipped"]]
    summary = {"images": len(coco["images"]), "annotations": len(coco["annotations"]), "out": out_json,
               "images_out": images_out, "skipped": skipped,
               "relabeled": coco["info"]["detections_of_an_earlier_model"]}
    if not files:
        return summary
    clashes = []
    for src, file_name in files:  # checked before anything is written: two devices' exports into one folder
        dst = os.path.join(images_out, file_name)
        if os.path.lexists(dst):
            try:
                with open(dst, "rb") as f:
                    same = f.read() == _image_bytes(src)
            except (OSError, FrameReadError):
                same = False
            if not same:
                clashes.append(file_name)
    if clashes:
        raise QueueError("%s already holds %d of these image names with other pictures (the first, %s): another "
                         "queue's export (the device numbers its frames from 0 again after a fresh event log, and "
                         "every device does), or another dataset's images; give this export its own --images-out "
                         "(the default is --out's name + _images)" % (images_out, len(clashes), clashes[0]))
    text = json.dumps(coco, indent=1).encode("utf-8")
    if os.path.exists(out_json):  # a relabel file corrected by hand must not be replaced by the device's guesses
        with open(out_json, "rb") as f:
            if f.read() != text:
                raise QueueError("%s exists and holds other annotations (corrected ones?): give this export another "
                                 "--out, or move that file away first" % out_json)
    if not os.path.isdir(images_out):
        os.makedirs(images_out)
    for src, file_name in (wrap(files, len(files)) if wrap is not None else files):
        write_atomically(os.path.join(images_out, file_name), _image_bytes(src))
    directory = os.path.dirname(os.path.abspath(out_json))
    if not os.path.isdir(directory):
        os.makedirs(directory)
    write_atomically(out_json, text)
    return summary
