"""What data a run was trained on: ``RUN_DIR/data.json``, and the check that ``train --resume`` continues on it.

``edge-trash train`` writes, beside ``config.json``::

    {"version": 1, "data": "/abs/path/of/--data", "fold": null, "labels": ["bottle", "can"],
     "splits": {"train": {"split": "train", "images": ["a.jpg", ...],
                          "shards": [{"name": "train-00000-of-00001.tfrecord", "bytes": 123456}]},
                "val": {...}}}

``images`` is the split's listing in the data's ``splits.json`` (null for records another tool wrote, which
have none); ``split`` is the shards a role reads (``fold0+fold2`` for a ``--fold 1`` run). A resume on a
``--data`` whose labels or image listing differ is refused (:func:`resume_data_problem`): the weights would
continue on other classes or other images under the same schedule. Records without a listing are compared
by their shards' names and sizes instead. A run an older edge-trash wrote has no ``data.json``; it resumes
with :func:`no_record_note`.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path
from typing import Any, Dict, List, Mapping, NamedTuple, Optional, Sequence

from edge_trash.atomic_files import write_text_atomic
from edge_trash.terminal import examples, plural, shell_word
from edge_trash.tfrecords.splits import read_splits_json, split_listing, split_pictures

from edge_trash.models.run_dir import DATA_JSON  # the file's name, importable from here too
VERSION = 1
ROLES = ("train", "val")  # the shards a run learns from, and those its best checkpoint is chosen on


def shard_files(data_dir: Path, spec: str) -> List[Path]:
    """The shards of split ``spec`` (one split or several joined by ``+``) in ``data_dir``, in read order."""
    return [f for split in spec.split("+") for f in sorted(Path(data_dir).glob(f"{split}-*-of-*.tfrecord"))]


def data_record(data_dir: Path, train_split: str, val_split: str, fold: Optional[int],
                labels: Sequence[str]) -> Dict[str, Any]:
    """The ``data.json`` of a run on ``data_dir``: its absolute path, the fold, the class names, and for the
    train and val roles the split read, the images ``splits.json`` lists for it and their stored pictures' hashes
    (None without them) and the shards (name and size in bytes)."""
    data_dir = Path(data_dir)
    try:
        listed = read_splits_json(data_dir / "splits.json")
    except ValueError:  # unreadable: compared by the shards alone
        listed = None
    splits = {}
    for role, spec in zip(ROLES, (train_split, val_split)):
        splits[role] = {"split": spec, "images": split_listing(listed, spec), "pictures": split_pictures(listed, spec),
                        "shards": [{"name": f.name, "bytes": f.stat().st_size} for f in shard_files(data_dir, spec)]}
    return {"version": VERSION, "data": os.path.abspath(data_dir), "fold": fold, "labels": list(labels),
            "splits": splits}


def write_data_record(run_dir: Path, record: Mapping[str, Any]) -> Path:
    """Write ``record`` to ``run_dir/data.json`` atomically; return the path."""
    path = Path(run_dir) / DATA_JSON
    write_text_atomic(path, json.dumps(record, indent=1, ensure_ascii=False) + "\n")
    return path


def read_data_record(run_dir: Path) -> Optional[Dict[str, Any]]:
    """The ``data.json`` of a run; None when it has none (written by an older edge-trash) or it cannot be read as
    one (then nothing can be checked against it either)."""
    path = Path(run_dir) / DATA_JSON
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    if not isinstance(record, dict) or not isinstance(record.get("labels"), list) \
            or not isinstance(record.get("splits"), dict):
        return None
    return record


def _label_difference(was: Sequence[str], now: Sequence[str]) -> str:
    if list(was) == list(now):
        return ""
    new = [n for n in now if n not in was]
    gone = [n for n in was if n not in now]
    which = "; ".join(part for part in (f"not in the run: {', '.join(new)}" if new else "",
                                        f"gone: {', '.join(gone)}" if gone else "") if part)
    if len(was) != len(now):
        return f"labels.txt has {plural(len(now), 'class')}, the run was trained on {len(was)} ({which})"
    if not new:
        return "labels.txt lists the run's classes in another order"
    return f"labels.txt names other classes ({which})"


def _split_difference(role: str, was: Mapping[str, Any], now: Mapping[str, Any]) -> str:
    spec, old_spec = now.get("split"), was.get("split")
    if spec != old_spec:
        return f"the run's {role} split was {old_spec}, this data's is {spec}"
    old_images, images = was.get("images"), now.get("images")
    if isinstance(old_images, list) and isinstance(images, list):
        added = sum((Counter(images) - Counter(old_images)).values())
        gone = sum((Counter(old_images) - Counter(images)).values())
        parts = ([f"{spec} holds {plural(added, 'other image')}"] if added else []) + (
            [f"lacks {gone} of the run's {plural(len(old_images), 'image')}" if added else
             f"{spec} lacks {gone} of the run's {plural(len(old_images), 'image')}"] if gone else [])
        return " and ".join(parts)
    shards = [(s.get("name"), s.get("bytes")) for s in now.get("shards", [])]
    old_shards = [(s.get("name"), s.get("bytes")) for s in was.get("shards", [])]
    if shards == old_shards:
        return ""
    return (f"the {spec} shards are not the run's ({plural(len(shards), 'shard')} of "
            f"{sum(b or 0 for _, b in shards)} bytes, the run's {len(old_shards)} of "
            f"{sum(b or 0 for _, b in old_shards)}; no splits.json lists their images)")


def data_differences(recorded: Mapping[str, Any], current: Mapping[str, Any]) -> List[str]:
    """What differs between the data a run recorded and ``current`` (both :func:`data_record` dicts): the class
    names, then for train and val the images listed (by file name, counted), or, where either has no listing, the
    shards' names and sizes. Empty when the run may continue on ``current``."""
    found = [_label_difference(recorded.get("labels", []), current.get("labels", []))]
    for role in ROLES:
        was = recorded.get("splits", {}).get(role)
        now = current.get("splits", {}).get(role)
        if isinstance(was, dict) and isinstance(now, dict):
            found.append(_split_difference(role, was, now))
    return [f for f in found if f]


def resume_data_problem(run_dir: Path, data_dir: Path, recorded: Mapping[str, Any],
                        current: Mapping[str, Any]) -> str:
    """Why ``train --resume`` of ``run_dir`` must not continue on ``data_dir`` ("" when it may): the
    differences of :func:`data_differences`, both folders, and the three ways on."""
    from edge_trash.models.init_weights import fine_tune_command

    found = data_differences(recorded, current)
    if not found:
        return ""
    was = recorded.get("data")
    source = (f"--data {was}, as {Path(run_dir) / DATA_JSON} records" if was else
              f"as its {Path(run_dir) / 'labels.txt'} says")
    return (f"--resume: --data {data_dir} is not the data {run_dir} was trained on ({source}): {'; '.join(found)}. "
            f"Resume with the data it was trained on{f' (--data {shell_word(was)})' if was else ''}, start a new run "
            f"with another --out, or fine-tune this run on the new data: {fine_tune_command(data_dir, run_dir)}")


def no_record_note(run_dir: Path) -> str:
    """The note for resuming a run with no ``data.json`` (an older edge-trash made it)."""
    return (f"{run_dir} has no {DATA_JSON} (made by an older edge-trash): whether --data holds the images it was "
            "trained on cannot be checked; only its labels.txt was compared")


class LearnedImages(NamedTuple):
    """Images of a split that a run was trained on: ``names`` (in the split's order), of ``split_images``,
    learned from ``data`` (the run's ``--data``, as its data.json records it)."""

    names: List[str]
    split_images: int
    data: Optional[str]

    def sentence(self, run_dir: Path, data_dir: Path, split: str, where: str = "") -> str:
        """``"2 of the 5 images in val of DATA{where} were in the train split RUN learned from (its data.json:
        --data D): a.jpg, b.jpg"``: what evaluate's and export's notes say first."""
        count = len(self.names)
        return (f"{count} of the {plural(self.split_images, 'image')} in {split} of {data_dir}{where} "
                f"{'was' if count == 1 else 'were'} in the train split {run_dir} learned from (its data.json: "
                f"--data {self.data}): {examples(self.names, 3)}")


def learned_images(run_dir: Path, data_dir: Path, split: str) -> Optional[LearnedImages]:
    """The images of ``split`` in ``data_dir`` (as its splits.json lists them) that ``run_dir`` was trained on
    (as its data.json lists its train split); None when there are none or nothing to compare.

    A rebuild of the same photos with another seed or fraction moves them between splits under the same
    names, so the "val" of another build can hold what the run learned. Where both list the stored pictures'
    hashes, those decide (a photo under another name is found, and another photo under a learned name, as
    per-split folders that number their files alike give, is not); else the names do. A run without data.json
    (an older edge-trash), or records without a splits.json listing (another tool's), give None.
    """
    record = read_data_record(run_dir)
    train = record["splits"].get("train") if record else None
    learned = train.get("images") if isinstance(train, dict) else None
    if not isinstance(learned, list):
        return None
    try:
        splits_json = read_splits_json(Path(data_dir) / "splits.json")
    except ValueError:
        return None
    listed = split_listing(splits_json, split)
    if not listed:
        return None
    learned_pictures = train.get("pictures") if isinstance(train, dict) else None
    pictures = split_pictures(splits_json, split)
    if isinstance(learned_pictures, list) and pictures is not None:
        seen = set(h for h in learned_pictures if isinstance(h, str))
        overlap = [name for name, picture in zip(listed, pictures) if picture in seen]
    else:
        seen = set(name for name in learned if isinstance(name, str))
        overlap = [name for name in listed if name in seen]
    if not overlap:
        return None
    data = record.get("data") if record else None
    return LearnedImages(overlap, len(listed), data if isinstance(data, str) else None)
