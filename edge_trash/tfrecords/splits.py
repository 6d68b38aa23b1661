"""Deterministic, class-stratified train/val/test splits and k folds.

Stratified means: every class with enough images (2 for val, 3 for val and test)
has at least one image in val (and test), the rarest classes served first; the
remaining places are filled in a seeded order of the images' file names that a
rebuild of a grown or shrunk dataset keeps (see ``shuffled``). No image moves to val or
test if it holds the last training image of one of its classes, so every class is
learned (unless that would leave val empty: then val takes the image costing train
the fewest classes), nor if it would leave a class fewer than half its share of boxes
in train (one photo of 14 batteries among 22 stays in train), unless no other image
can give a rare class its place in val or test. The same ids, labels and seed always
give the same split.

Images that must stay together (runs of video frames, see ``split_units``) are
given as ``unit_of``: a unit moves as one, and split sizes count its images.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import unicodedata
from collections import Counter
from pathlib import Path, PurePosixPath
from typing import Any, Dict, Hashable, List, Mapping, Optional, Sequence, Set, Tuple

from edge_trash.tfrecords.split_units import MAX_VARIANTS, roboflow_original


def split_key(file_name: str, photo: bool = True) -> str:
    """What places an image in the seeded order and matches it with an earlier build: its file's
    path (as :func:`~edge_trash.tfrecords.build.found_names` gives it) in one case, Unicode form and
    separator; with ``photo``, a Roboflow export's ``IMG_1_jpg.rf.<hash>.jpg`` as the photo's own
    name (``img_1.jpg``), which a re-export keeps while the hash may change."""
    name = unicodedata.normalize("NFC", file_name.replace("\\", "/")).casefold()
    if photo:
        folder, _, base = name.rpartition("/")
        original = roboflow_original(base)  # (already in one case)
        if original:
            name = f"{folder}/{original}" if folder else original
    return name


def split_keys(read_as: Mapping[int, str], photos: bool = True) -> Dict[int, str]:
    """:func:`split_key` of each image's file; with ``photos`` a Roboflow file is keyed by its photo,
    unless more than ``MAX_VARIANTS`` files share that photo's name (photos uploaded under one
    generic name, such as ``image.jpg``, which ``split_units`` splits one by one)."""
    original = {iid: roboflow_original(PurePosixPath(name).name) for iid, name in read_as.items()}
    shared = Counter(o for o in original.values() if o)
    return {iid: split_key(name, photo=photos and shared[original[iid]] <= MAX_VARIANTS)
            for iid, name in read_as.items()}


def shuffled(ids: Sequence[int], seed: int, keys: Optional[Mapping[int, str]] = None) -> List[int]:
    """The ids in a seeded random order that each id keeps whatever other ids there are: sorted by a
    seeded hash of the id's key (``keys[id]``, the image's file name; the id itself without one), ties
    by id. Adding, removing or losing a few images moves no other image in the order, so a rebuild of
    a grown dataset keeps its earlier val and test images held out (a shuffle of the whole list gave
    every image a new place: one missing file of TACO's 3,831 moved 644 of 956 held-out images)."""
    digest = _digests(ids, seed, keys)
    return sorted(ids, key=lambda iid: (digest[iid], iid))


def _digests(ids: Sequence[int], seed: int, keys: Optional[Mapping[int, str]]) -> Dict[int, bytes]:
    """The seeded hash of each id's key (the order of :func:`shuffled`, and a fold's home)."""
    return {iid: hashlib.blake2b(f"{seed}\0{iid if keys is None else keys[iid]}".encode("utf-8", "surrogatepass"),
                                 digest_size=8).digest() for iid in ids}


class _Units:
    """The images of each unit in the seeded order, and how many images of each class a unit holds."""

    def __init__(self, order: Sequence[int], image_classes: Mapping[int, Set[int]],
                 unit_of: Optional[Mapping[int, Hashable]],
                 image_boxes: Optional[Mapping[int, Mapping[int, int]]] = None) -> None:
        self.members: Dict[Hashable, List[int]] = {}
        for iid in order:  # units in the order their first image comes
            self.members.setdefault(unit_of.get(iid, iid) if unit_of else iid, []).append(iid)
        self.classes = {u: Counter(c for iid in ids for c in image_classes.get(iid, ()))
                        for u, ids in self.members.items()}
        # boxes of each class a unit holds (one per image holding it when box counts are not given)
        self.boxes = self.classes
        if image_boxes is not None:
            self.boxes = {u: Counter() for u in self.members}
            for u, ids in self.members.items():
                for iid in ids:
                    self.boxes[u].update(image_boxes.get(iid, {}))
        self.of_class: Dict[int, List[Hashable]] = {}  # class -> the units that hold it, in order
        for u, counts in self.classes.items():
            for c in counts:
                self.of_class.setdefault(c, []).append(u)

    def rarest_first(self) -> List[int]:
        """Classes by how few units hold them (ties by class id)."""
        return sorted(self.of_class, key=lambda c: (len(self.of_class[c]), c))


def assign_splits(image_ids: Sequence[int], image_classes: Mapping[int, Set[int]], val_fraction: float,
                  test_fraction: float, seed: int, unit_of: Optional[Mapping[int, Hashable]] = None,
                  keys: Optional[Mapping[int, str]] = None,
                  image_boxes: Optional[Mapping[int, Mapping[int, int]]] = None) -> Dict[str, List[int]]:
    """Split image ids into ``train``, ``val`` and ``test`` (each list in the seeded order of
    :func:`shuffled` over ``keys``); the images of one ``unit_of`` value land in the same split.

    Val is taken from the front of that order and test from its back, so raising one fraction moves
    images from train into that split alone, and a grown dataset keeps its earlier held-out images.
    ``image_boxes`` (image -> class -> boxes) keeps at least half of each class's share of boxes in train
    (without it, each image counts as one box of each of its classes)."""
    for name, frac in (("--val-fraction", val_fraction), ("--test-fraction", test_fraction)):
        if not 0.0 <= frac < 1.0:
            raise ValueError(f"{name} must be in [0, 1), got {frac}")
    if val_fraction + test_fraction >= 1.0:
        raise ValueError(f"--val-fraction + --test-fraction must be below 1, got {val_fraction + test_fraction}")
    order = shuffled(image_ids, seed, keys)
    n = len(order)
    targets = {"test": round(n * test_fraction), "val": round(n * val_fraction)}
    if test_fraction > 0 and n >= 3:
        targets["test"] = max(1, targets["test"])
    if val_fraction > 0 and n >= 2:
        targets["val"] = max(1, targets["val"])
    units = _Units(order, image_classes, unit_of, image_boxes)
    left = Counter(c for iid in order for c in image_classes.get(iid, ()))  # images of each class in train
    boxes_left: Counter = Counter()  # boxes of each class in train
    for counts in units.boxes.values():
        boxes_left.update(counts)
    floor = {c: n * (1.0 - val_fraction - test_fraction) / 2 for c, n in boxes_left.items()}
    assigned: Dict[Hashable, str] = {}
    held = {"test": 0, "val": 0}  # images held out

    def hold(u: Hashable, split: str, force: bool = False, boxes: bool = True) -> bool:
        """Move unit ``u`` to ``split`` unless that takes the last training image of one of its classes,
        leaves one of them under half its share of boxes in train (unless not ``boxes``) or overshoots the
        split's size by more than it would fall short without it."""
        size = len(units.members[u])
        if u in assigned or not force and (2 * held[split] + size > 2 * targets[split] or any(
                left[c] <= k for c, k in units.classes[u].items()) or boxes and any(
                boxes_left[c] - k < floor[c] for c, k in units.boxes[u].items())):
            return False
        assigned[u] = split
        held[split] += size
        left.subtract(units.classes[u])
        boxes_left.subtract(units.boxes[u])
        return True

    # A class needs one unit left for training plus one per held-out split it appears in.
    for split, min_units in (("val", 2), ("test", 3)):
        if targets[split] == 0:
            continue
        covered: Set[int] = set()  # classes that already have an image in this split
        for c in units.rarest_first():
            if c in covered or len(units.of_class[c]) < min_units or held[split] >= targets[split]:
                continue
            candidates = units.of_class[c] if split == "val" else units.of_class[c][::-1]
            # the first unit that keeps train's share of boxes, else the first that keeps an image (a unit may
            # be the image id 0: compared with None, not by truth)
            u = next((u for u in candidates if hold(u, split)), None)
            if u is None:
                u = next((u for u in candidates if hold(u, split, boxes=False)), None)
            if u is not None:
                covered.update(units.classes[u])
    # The rest of each held-out split in the seeded order (test from its end); no class loses its last
    # training image, so a class seen in val or test is always also learned. A split may come out smaller
    # than its fraction.
    for split in ("val", "test"):
        for u in (units.members if split == "val" else reversed(list(units.members))):
            if held[split] >= targets[split]:
                break
            hold(u, split)
    # Training needs a val image: when every unit left holds a class's last one (one class per image), val
    # takes the unit that costs train the fewest classes, then the smallest, then the first.
    free = [u for u in units.members if u not in assigned]
    if targets["val"] and not held["val"] and len(free) >= 2:  # and train keeps one

        def cost(pos_u: Tuple[int, Hashable]) -> Tuple[int, int, int]:
            pos, u = pos_u
            return sum(1 for c, k in units.classes[u].items() if left[c] <= k), len(units.members[u]), pos

        hold(min(enumerate(free), key=cost)[1], "val", force=True)
    split_of = {iid: assigned.get(u, "train") for u, ids in units.members.items() for iid in ids}
    return {name: [i for i in order if split_of[i] == name] for name in ("train", "val", "test")}


def assign_folds(image_ids: Sequence[int], image_classes: Mapping[int, Set[int]], folds: int,
                 seed: int, unit_of: Optional[Mapping[int, Hashable]] = None,
                 keys: Optional[Mapping[int, str]] = None) -> List[List[int]]:
    """Deal image ids into ``folds`` folds, rarest class first, so each class spreads evenly; the
    images of one ``unit_of`` value land in the same fold. Among the folds a unit may take, it takes
    its home fold (from the hash of its first image's key), so a grown dataset keeps most images
    where they were."""
    if folds < 2:
        raise ValueError(f"--folds must be at least 2, got {folds}")
    if folds > len(image_ids):
        raise ValueError(f"--folds {folds} is more than the {len(image_ids)} usable images")
    digest = _digests(image_ids, seed, keys)
    order = sorted(image_ids, key=lambda iid: (digest[iid], iid))  # as shuffled() orders them
    units = _Units(order, image_classes, unit_of)
    fold_of: Dict[Hashable, int] = {}
    sizes = [0] * folds
    class_count: List[Counter] = [Counter() for _ in range(folds)]

    def place(u: Hashable, k: int) -> None:
        fold_of[u] = k
        sizes[k] += len(units.members[u])
        class_count[k].update(units.classes[u])

    # Each unit has a home fold from the hash of its first image's key: among the folds the class
    # allows, a unit goes home unless that fold is already fuller than the smallest by the unit or by
    # 5% of a fold, so a grown dataset keeps most images in their earlier fold.
    home = {u: int.from_bytes(digest[ids[0]], "big") % folds for u, ids in units.members.items()}
    slack = len(order) / folds / 20

    def crowded(k: int, u: Hashable) -> bool:
        return sizes[k] - min(sizes) >= max(len(units.members[u]), slack)

    for c in units.rarest_first():
        # deal the units of this class to the folds that hold fewest of it, within a margin that grows with
        # the class once every fold holds it (none for a class of fewer than two units per fold)
        held = len(units.of_class[c])
        margin = int(math.sqrt(held / folds)) if held >= 2 * folds else 0
        for u in units.of_class[c]:
            if u not in fold_of:
                fewest = min(class_count[k][c] for k in range(folds))
                room = fewest + margin if fewest else 0  # every fold gets the class before any margin
                place(u, min(range(folds), key=lambda k: (class_count[k][c] > room, crowded(k, u),
                                                          k != home[u], class_count[k][c], sizes[k], k)))
    for u in units.members:  # images with no class: home unless that fold is crowded, then the smallest
        if u not in fold_of:
            place(u, min(range(folds), key=lambda k: (crowded(k, u), k != home[u], sizes[k], k)))
    out: List[List[int]] = [[] for _ in range(folds)]
    for u, ids in units.members.items():
        out[fold_of[u]].extend(ids)
    order_of = {iid: pos for pos, iid in enumerate(order)}
    return [sorted(fold, key=order_of.__getitem__) for fold in out]


HELD_OUT = ("val", "test")  # the splits a model is scored on; train and folds are trained on


def split_changes(earlier: Optional[Mapping[str, Any]], names: Mapping[str, Sequence[str]],
                  folds: int = 0, pictures: Optional[Mapping[str, Sequence[str]]] = None) -> Optional[Dict[str, Any]]:
    """How this build's split (``names``: the files of each split) differs from the ``earlier``
    build's ``splits.json`` (None when there was none), matching files by :func:`split_key`, then
    those left by their stored picture (``pictures``: a hash of each file's stored JPEG, in the order of
    ``names``, as splits.json keeps them), so a renamed folder or a flattened copy is matched:
    ``{earlier_images, matched, matched_by_picture, earlier_held_out, held_out_now_in_train, earlier_train,
    train_now_held_out, fold_changed, earlier_folds}`` (val and test are held out; ``fold_changed``
    counts images in another fold of a build with as many folds), or ``{"not_compared": why}`` (with
    ``"warning": True`` when the earlier build's splits.json is gone, or none of its files is in this one)."""
    if earlier is None:
        return None
    if earlier.get("missing"):
        return {"not_compared": "the earlier build here has no splits.json (deleted, or not copied with its "
                                "records): whether its val/test images are in training now cannot be told",
                "warning": True}
    before = earlier.get("file_names")
    if not isinstance(before, dict) or not all(isinstance(v, list) for v in before.values()):
        why = earlier.get("unreadable") or ("it lists no file names (written by an older edge-trash)"
                                           if "splits" in earlier else "it is not one of ours")
        return {"not_compared": f"the earlier build's splits.json was not compared: {why}"}

    def splits_of(listing: Mapping[str, Sequence[Any]]) -> Dict[str, Counter]:
        out: Dict[str, Counter] = {}
        for split, keys in listing.items():
            for key in keys:
                if isinstance(key, str):
                    out.setdefault(split_key(key), Counter())[split] += 1
        return out

    def by_picture(listing: Mapping[str, Sequence[Any]], hashes: Any, named: Mapping[str, Any]
                   ) -> Dict[str, Counter]:  # the files whose name the other build lacks, keyed by picture
        out: Dict[str, Counter] = {}
        for split, keys in listing.items():
            held = hashes.get(split) if isinstance(hashes, dict) else None
            for key, picture in zip(keys, held if isinstance(held, list) else []):
                if isinstance(key, str) and isinstance(picture, str) and split_key(key) not in named:
                    out.setdefault("\0" + picture, Counter())[split] += 1  # (no file name holds a NUL)
        return out

    was, is_now = splits_of(before), splits_of(names)
    earlier_images = sum(sum(c.values()) for c in was.values())
    if pictures is not None:
        was_pictures = by_picture(before, earlier.get("pictures"), is_now)
        is_now.update(by_picture(names, pictures, was))
        was.update(was_pictures)
    shared = [key for key in was if key in is_now]
    if not shared:
        return {"not_compared": "the earlier build here holds none of these files (by name, nor by picture): its "
                                "split cannot be compared", "warning": True}
    earlier_folds = earlier.get("folds") if type(earlier.get("folds")) is int else 0
    counts: Counter = Counter()
    for key in shared:
        a, b = was[key], is_now[key]
        held_a, held_b = sum(a[s] for s in HELD_OUT), sum(b[s] for s in HELD_OUT)
        counts["matched"] += min(sum(a.values()), sum(b.values()))
        counts["earlier_held_out"] += held_a
        counts["earlier_train"] += sum(a.values()) - held_a
        counts["held_out_now_in_train"] += max(0, held_a - held_b)
        counts["train_now_held_out"] += max(0, held_b - held_a)
        if earlier_folds == folds:
            left_fold = sum(max(0, n - b[s]) for s, n in a.items() if s.startswith("fold"))
            counts["fold_changed"] += max(0, left_fold - max(0, held_b - held_a))  # not those now in test
        counts["matched_by_picture"] += min(sum(a.values()), sum(b.values())) if key.startswith("\0") else 0
    return {"earlier_images": earlier_images, "earlier_folds": earlier_folds,
            **{k: counts[k] for k in ("matched", "matched_by_picture", "earlier_held_out", "held_out_now_in_train",
                                      "earlier_train", "train_now_held_out", "fold_changed")}}


class SplitsJsonError(ValueError):
    """A ``splits.json`` that cannot be read as one; ``why`` is the reason without the file's name."""

    def __init__(self, path: Path, why: str) -> None:
        super().__init__(f"{path}: {why}")
        self.why = why


def read_splits_json(path: "os.PathLike[str] | str") -> Optional[Dict[str, Any]]:
    """The ``splits.json`` a build wrote (``{"seed", "folds", "splits", "file_names", "pictures"}``); None when
    there is none (another tool's records); :class:`SplitsJsonError` naming the file when it is not a JSON
    object."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise SplitsJsonError(path, f"cannot read it ({type(exc).__name__})") from None
    if not isinstance(data, dict):
        raise SplitsJsonError(path, f"expected a JSON object, got {type(data).__name__}")
    return data


def _per_split(splits_json: Optional[Mapping[str, Any]], key: str, spec: str) -> Optional[List[str]]:
    """``splits_json[key]``'s lists of the splits of ``spec`` joined in order; None when one is missing or is not
    a list of strings."""
    table = splits_json.get(key) if splits_json else None
    if not isinstance(table, dict):
        return None
    listing: List[str] = []
    for split in spec.split("+"):
        items = table.get(split)
        if not isinstance(items, list) or not all(isinstance(item, str) for item in items):
            return None
        listing += items
    return listing


def split_pictures(splits_json: Optional[Mapping[str, Any]], spec: str) -> Optional[List[str]]:
    """The stored pictures' hashes of split ``spec`` as ``splits.json`` lists them (``pictures``, in the order of
    its ``file_names``); None when it lists none for one of the splits, or not one per file."""
    pictures = _per_split(splits_json, "pictures", spec)
    names = split_listing(splits_json, spec)
    return pictures if pictures is not None and names is not None and len(pictures) == len(names) else None


def split_listing(splits_json: Optional[Mapping[str, Any]], spec: str) -> Optional[List[str]]:
    """The image files of split ``spec`` (one split, or several joined by ``+``: ``fold0+fold2``) as
    ``splits.json`` lists them, in its order; None when it lists none for one of them (no splits.json, or one
    written by an older edge-trash without ``file_names``)."""
    return _per_split(splits_json, "file_names", spec)
