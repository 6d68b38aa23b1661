"""Deterministic, class-stratified train/val/test splits and k folds.

Stratified means: every class with enough images (2 for val, 3 for val and test)
has at least one image in val (and test), the rarest classes served first; the
remaining places are filled in a seeded random order. No image moves to val or
test if it holds the last training image of one of its classes, so every class is
learned. The same ids, labels and seed always give the same split.
"""

from __future__ import annotations

import random
from typing import Dict, List, Mapping, Sequence, Set


def shuffled(ids: Sequence[int], seed: int) -> List[int]:
    """The ids in a seeded random order (the same for the same ids and seed)."""
    order = sorted(ids)
    random.Random(seed).shuffle(order)
    return order


def _images_by_class(order: Sequence[int], image_classes: Mapping[int, Set[int]]) -> Dict[int, List[int]]:
    """Class -> its images, in ``order``."""
    images_of: Dict[int, List[int]] = {}
    for iid in order:
        for c in image_classes.get(iid, ()):
            images_of.setdefault(c, []).append(iid)
    return images_of


def _rarest_first(images_of: Mapping[int, List[int]]) -> List[int]:
    """Classes by how few images hold them (ties by class id)."""
    return sorted(images_of, key=lambda c: (len(images_of[c]), c))


def assign_splits(image_ids: Sequence[int], image_classes: Mapping[int, Set[int]], val_fraction: float,
                  test_fraction: float, seed: int) -> Dict[str, List[int]]:
    """Split image ids into ``train``, ``val`` and ``test`` (each list in a seeded random order)."""
    for name, frac in (("--val-fraction", val_fraction), ("--test-fraction", test_fraction)):
        if not 0.0 <= frac < 1.0:
            raise ValueError(f"{name} must be in [0, 1), got {frac}")
    if val_fraction + test_fraction >= 1.0:
        raise ValueError(f"--val-fraction + --test-fraction must be below 1, got {val_fraction + test_fraction}")
    order = shuffled(image_ids, seed)
    n = len(order)
    targets = {"test": round(n * test_fraction), "val": round(n * val_fraction)}
    if test_fraction > 0 and n >= 3:
        targets["test"] = max(1, targets["test"])
    if val_fraction > 0 and n >= 2:
        targets["val"] = max(1, targets["val"])
    images_of = _images_by_class(order, image_classes)
    left = {c: len(members) for c, members in images_of.items()}  # images of each class still in train
    assigned: Dict[int, str] = {}
    held: Dict[str, List[int]] = {"test": [], "val": []}

    def hold(iid: int, split: str, force: bool = False) -> bool:
        """Move ``iid`` to ``split`` unless that takes the last training image of one of its classes."""
        if iid in assigned or not force and any(left[c] < 2 for c in image_classes.get(iid, ())):
            return False
        assigned[iid] = split
        held[split].append(iid)
        for c in image_classes.get(iid, ()):
            left[c] -= 1
        return True

    # A class needs one image left for training plus one per held-out split it appears in.
    for split, min_images in (("val", 2), ("test", 3)):
        if targets[split] == 0:
            continue
        covered: Set[int] = set()  # classes that already have an image in this split
        for c in _rarest_first(images_of):
            if c in covered or len(images_of[c]) < min_images or len(held[split]) >= targets[split]:
                continue
            for iid in images_of[c]:
                if hold(iid, split):
                    covered.update(image_classes.get(iid, ()))
                    break
    # The rest of each held-out split in the seeded order; no class loses its last training image, so a
    # class seen in val or test is always also learned. A split may come out smaller than its fraction,
    # but not empty: when every image left holds a class's last one (one class per image), the first is taken.
    for split in ("val", "test"):
        for iid in order:
            if len(held[split]) >= targets[split]:
                break
            hold(iid, split)
        free = [i for i in order if i not in assigned]
        if targets[split] and not held[split] and len(free) >= 2:  # and train keeps one
            hold(free[0], split, force=True)
    train = [i for i in order if i not in assigned]
    return {"train": train, "val": [i for i in order if assigned.get(i) == "val"],
            "test": [i for i in order if assigned.get(i) == "test"]}


def assign_folds(image_ids: Sequence[int], image_classes: Mapping[int, Set[int]], folds: int,
                 seed: int) -> List[List[int]]:
    """Deal image ids into ``folds`` folds, rarest class first, so each class spreads evenly."""
    if folds < 2:
        raise ValueError(f"--folds must be at least 2, got {folds}")
    if folds > len(image_ids):
        raise ValueError(f"--folds {folds} is more than the {len(image_ids)} usable images")
    order = shuffled(image_ids, seed)
    out: List[List[int]] = [[] for _ in range(folds)]
    placed: Set[int] = set()

    def smallest() -> int:
        return min(range(folds), key=lambda k: (len(out[k]), k))

    images_of = _images_by_class(order, image_classes)
    class_count: List[Dict[int, int]] = [{} for _ in range(folds)]
    for c in _rarest_first(images_of):
        members = [i for i in images_of[c] if i not in placed]
        # deal the images of this class to the folds that hold fewest of it
        for iid in members:
            k = min(range(folds), key=lambda k: (class_count[k].get(c, 0), len(out[k]), k))
            out[k].append(iid)
            placed.add(iid)
            for cls in image_classes.get(iid, ()):
                class_count[k][cls] = class_count[k].get(cls, 0) + 1
    for iid in order:
        if iid not in placed:
            out[smallest()].append(iid)
            placed.add(iid)
    return out
