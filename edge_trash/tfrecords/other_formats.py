"""Recognise annotation files of other tools given where COCO JSON belongs, so the error
names the format and the export to choose instead of a JSON parser's complaint."""

from __future__ import annotations

import re
from typing import Any

EXPORT_COCO = ("Export the annotations as COCO JSON (CVAT: 'COCO 1.0'; Label Studio, Roboflow: 'COCO'), or "
               "convert them, and give that file")
_YOLO_LINE = re.compile(r"^\s*\d+(\s+-?\d*\.?\d+(e-?\d+)?){4,}\s*$")


def other_text_format(text: str) -> str:
    """What a file that is not JSON is, when it is another annotation format ("" otherwise)."""
    head = text[:4096]
    lines = [ln for ln in head.splitlines() if ln.strip()][:5]
    if "<annotation" in head:
        return "a Pascal VOC XML file"
    if re.search(r"^names\s*:", head, re.M) and re.search(r"^(nc|train|val)\s*:", head, re.M):
        return "a YOLO dataset YAML (its labels are .txt files beside the images)"
    if lines and all(_YOLO_LINE.match(ln) for ln in lines):
        return "a YOLO label file (class x_center y_center width height per line)"
    first = lines[0].lower() if lines else ""
    if "," in first and ("xmin" in first or "x_min" in first) and "filename" in first.replace("_", ""):
        return "a CSV of boxes (filename, ..., xmin, ymin, xmax, ymax)"
    return ""


def other_json_format(data: Any) -> str:
    """What a JSON document that is not COCO is, when it is another tool's format ("" otherwise)."""
    if isinstance(data, list) and data and isinstance(data[0], dict) and "data" in data[0] \
            and ("annotations" in data[0] or "predictions" in data[0] or "id" in data[0]):
        return "a Label Studio JSON export (a list of tasks)"
    if isinstance(data, dict):
        if "shapes" in data and "imagePath" in data:
            return "a LabelMe JSON file (one per image)"
        if "_via_img_metadata" in data or (data and all(isinstance(v, dict) and "regions" in v
                                                        for v in list(data.values())[:5])):
            return "a VGG Image Annotator (VIA) project"
    return ""
