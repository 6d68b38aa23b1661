"""The split (train, val, test) a file or folder name says, the way datasets name them.

``instances_train2017.json``, ``train/_annotations.coco.json``, ``valid/``, ``val2017/``,
``test_images/``: a split word not run into other letters (``trainval`` says neither).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Optional

_SPLIT_WORDS = {"train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val",
                "dev": "val", "eval": "val", "test": "test", "testing": "test"}
_SPLIT_RE = re.compile(r"(?<![a-z])(" + "|".join(sorted(_SPLIT_WORDS, key=len, reverse=True)) + r")(?![a-z])")


def split_word(text: str) -> Optional[str]:
    """``train``/``val``/``test`` when ``text`` (one file or folder name) holds a split word."""
    match = _SPLIT_RE.search(text.lower())
    return _SPLIT_WORDS[match.group(1)] if match else None


_SPLIT_FOLDER = re.compile(r"^(" + "|".join(_SPLIT_WORDS) + r")\d*$")  # a folder that is a split alone: val2017


def split_of_path(rel: str, whole: bool = False) -> Optional[str]:
    """The split named by the innermost folder of ``rel`` that names one (``val2017/a.jpg``: val); with
    ``whole``, only by a folder whose name is the split word alone (``train/``, ``val2017/``; not ``test_site/``
    or ``training_day/``)."""
    for folder in reversed(rel.replace("\\", "/").split("/")[:-1]):
        alone = _SPLIT_FOLDER.match(folder.lower())
        split = (_SPLIT_WORDS[alone.group(1)] if alone else None) if whole else split_word(folder)
        if split:
            return split
    return None


# folders that hold annotation files alone: the images, and the split, are then the folder above (COCO's
# annotations/instances_val2017.json, Supervisely's train/annotations/instances.json)
ANNOTATION_FOLDERS = frozenset({"annotations", "annotation", "anns", "ann", "labels"})


def split_in_name(path: Path) -> Optional[str]:
    """``train``/``val``/``test`` when the file's name (first) or its folder's says so, or for a file in
    an ``annotations`` folder, the folder above it."""
    texts = [path.stem, path.parent.name]
    if path.parent.name.casefold() in ANNOTATION_FOLDERS:
        texts.append(path.parent.parent.name)
    for text in texts:
        split = split_word(text)
        if split:
            return split
    return None
