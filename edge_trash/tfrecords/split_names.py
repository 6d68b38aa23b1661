"""The split (train, val, test) a file or folder name says, the way datasets name them.

``instances_train2017.json``, ``train/_annotations.coco.json``, ``valid/``, ``val2017/``,
``test_images/``: a split word not run into other letters (``trainval`` says neither).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Optional

_SPLIT_WORDS = {"train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val",
                "dev": "val", "test": "test", "testing": "test"}
_SPLIT_RE = re.compile(r"(?<![a-z])(" + "|".join(sorted(_SPLIT_WORDS, key=len, reverse=True)) + r")(?![a-z])")


def split_word(text: str) -> Optional[str]:
    """``train``/``val``/``test`` when ``text`` (one file or folder name) holds a split word."""
    match = _SPLIT_RE.search(text.lower())
    return _SPLIT_WORDS[match.group(1)] if match else None


def split_in_name(path: Path) -> Optional[str]:
    """``train``/``val``/``test`` when the file's name (first) or its folder's says so."""
    for text in (path.stem, path.parent.name):
        split = split_word(text)
        if split:
            return split
    return None
