"""Merge several COCO files (a Roboflow export's train/valid/test, say) into one.

Each file's structure is checked on its own, so an error names the file it is in.
Categories are matched by name: the first file keeps its ids, a name first seen in a
later file gets the next free id. Image and annotation ids are kept when no two files
share one; when they do (Roboflow numbers every file from 0), each later file's ids are
shifted by a round offset (10000, 20000... whatever clears the largest id) that
``MergedSource`` records, so an id in a report leads back to its file. Image ids
written as text that two files share (``img_1`` in train and in valid) get
`` (from PATH)`` appended in every later file, so each box stays with its own file's
image.

A file's split is read from its name or its folder (``train``, ``valid``/``val``,
``test``) for ``--keep-splits``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from edge_trash.tfrecords.coco import as_int, clean_name, text_id
from edge_trash.tfrecords.split_names import split_in_name


@dataclass
class MergedSource:
    """One input file of a merge and how its ids were moved."""

    path: Path
    images: int
    annotations: int
    image_id_offset: int = 0
    annotation_id_offset: int = 0
    split: Optional[str] = None  # what its name or folder says, if anything

    def as_report(self) -> Dict[str, Any]:
        """The entry of ``sources`` in report.json / stats.json."""
        return {"file": str(self.path), "images": self.images, "annotations": self.annotations,
                "image_id_offset": self.image_id_offset, "annotation_id_offset": self.annotation_id_offset,
                "split_in_name": self.split}


def _int_ids(records: List[Any]) -> List[int]:
    ids = (as_int(r.get("id")) if isinstance(r, dict) else None for r in records)
    return [i for i in ids if i is not None]


def _offsets(id_lists: List[List[int]]) -> List[int]:
    """0 for every file when no id appears in two files; else k * step for file k."""
    seen: set = set()
    clash = False
    for ids in id_lists:
        unique = set(ids)
        if unique & seen:
            clash = True
            break
        seen |= unique
    if not clash:
        return [0] * len(id_lists)
    largest = max((abs(i) for ids in id_lists for i in ids), default=0)
    step = 10 ** len(str(largest))  # the power of ten above every id: 0..9 -> 10, 0..4130 -> 10000
    return [k * step for k in range(len(id_lists))]


def _shift(value: Any, offset: int, text_suffix: str = "") -> Any:
    """An image or annotation id moved apart from the other files' ids: a number by
    ``offset``, a text id (when the files' text ids clash) by ``text_suffix``."""
    text = text_id(value) if text_suffix else None
    if text is not None:
        return f"{text} {text_suffix}"
    number = as_int(value)
    if offset == 0 or number is None:
        return value  # unmoved, or not an id we can move: reported as it stands
    return number + offset


def _text_ids_clash(files: Sequence[Tuple[Path, Dict[str, Any]]]) -> bool:
    """Whether two files use the same image id written as text (``img_1`` in train and valid)."""
    seen: set = set()
    for _, data in files:
        texts = {text_id(im.get("id")) for im in data["images"] if isinstance(im, dict)} - {None}
        if texts & seen:
            return True
        seen |= texts
    return False


def merge_coco(files: Sequence[Tuple[Path, Dict[str, Any]]]
               ) -> Tuple[Dict[str, Any], List[int], List[MergedSource]]:
    """``(merged, image_source, sources)``: one COCO dict, the index of the file each
    entry of ``merged["images"]`` came from, and what was done to each file.

    ``files`` are ``(path, data)`` pairs whose top-level structure is already checked.
    """
    if len(files) == 1:
        path, data = files[0]
        return data, [0] * len(data["images"]), [MergedSource(path, len(data["images"]), len(data["annotations"]),
                                                              split=split_in_name(path))]
    image_offsets = _offsets([_int_ids(data["images"]) for _, data in files])
    ann_offsets = _offsets([_int_ids(data["annotations"]) for _, data in files])
    text_clash = _text_ids_clash(files)

    categories: List[Dict[str, Any]] = []
    id_of_name: Dict[str, Any] = {}
    for c in files[0][1]["categories"]:
        categories.append(c)
        id_of_name.setdefault(clean_name(str(c.get("name", ""))), c.get("id"))
    next_id = max((i for i in (as_int(c.get("id")) for c in categories) if i is not None), default=0) + 1

    images: List[Any] = []
    annotations: List[Any] = []
    image_source: List[int] = []
    sources: List[MergedSource] = []
    for k, (path, data) in enumerate(files):
        remap: Dict[Any, Any] = {}
        if k > 0:
            for c in data["categories"]:
                name = clean_name(str(c.get("name", "")))
                if name not in id_of_name:
                    id_of_name[name] = next_id
                    categories.append({**c, "id": next_id})
                    next_id += 1
                remap[_key(c.get("id"))] = id_of_name[name]
        suffix = f"(from {path})" if text_clash and k > 0 else ""
        for im in data["images"]:
            images.append({**im, "id": _shift(im.get("id"), image_offsets[k], suffix)} if isinstance(im, dict)
                          else im)
            image_source.append(k)
        for ann in data["annotations"]:
            if isinstance(ann, dict):
                ann = {**ann, "id": _shift(ann.get("id"), ann_offsets[k]),
                       "image_id": _shift(ann.get("image_id"), image_offsets[k], suffix)}
                if k > 0:  # an id its own file does not define must not land on another file's class
                    cid = ann.get("category_id")
                    ann["category_id"] = remap.get(_key(cid), f"{cid} (not in the categories of {path})")
            annotations.append(ann)
        sources.append(MergedSource(path, len(data["images"]), len(data["annotations"]), image_offsets[k],
                                    ann_offsets[k], split_in_name(path)))
    return {"images": images, "annotations": annotations, "categories": categories}, image_source, sources


def _key(value: Any) -> Any:
    """A category id as a dict key: 3, 3.0 and "3" are the same id; a list or object
    (no id at all) is keyed by its text."""
    number = as_int(value)
    if number is not None:
        return number
    return value if isinstance(value, (str, float, type(None))) else repr(value)
