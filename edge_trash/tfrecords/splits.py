"""Deterministic, class-stratified train/val/test splits and k folds.

Stratified means: every class with enough images (2 for val, 3 for val and test)
has at least one image in val (and test), the rarest classes served first; the
remaining places are filled in a seeded random order. No image moves to val or
test if it holds the last training image of one of its classes, so every class is
learned (unless that would leave val empty: then val takes the image costing train
the fewest classes). The same ids, labels and seed always give the same split.

Images that must stay together (runs of video frames, see ``split_units``) are
given as ``unit_of``: a unit moves as one, and split sizes count its images.
"""

from __future__ import annotations

import random
from collections import Counter
from typing import Dict, Hashable, List, Mapping, Optional, Sequence, Set, Tuple


def shuffled(ids: Sequence[int], seed: int) -> List[int]:
    """The ids in a seeded random order (the same for the same ids and seed)."""
    order = sorted(ids)
    random.Random(seed).shuffle(order)
    return order


class _Units:
    """The images of each unit in the seeded order, and how many images of each class a unit holds."""

    def __init__(self, order: Sequence[int], image_classes: Mapping[int, Set[int]],
                 unit_of: Optional[Mapping[int, Hashable]]) -> None:
        self.members: Dict[Hashable, List[int]] = {}
        for iid in order:  # units in the order their first image comes
            self.members.setdefault(unit_of.get(iid, iid) if unit_of else iid, []).append(iid)
        self.classes = {u: Counter(c for iid in ids for c in image_classes.get(iid, ()))
                        for u, ids in self.members.items()}
        self.of_class: Dict[int, List[Hashable]] = {}  # class -> the units that hold it, in order
        for u, counts in self.classes.items():
            for c in counts:
                self.of_class.setdefault(c, []).append(u)

    def rarest_first(self) -> List[int]:
        """Classes by how few units hold them (ties by class id)."""
        return sorted(self.of_class, key=lambda c: (len(self.of_class[c]), c))


def assign_splits(image_ids: Sequence[int], image_classes: Mapping[int, Set[int]], val_fraction: float,
                  test_fraction: float, seed: int, unit_of: Optional[Mapping[int, Hashable]] = None
                  ) -> Dict[str, List[int]]:
    """Split image ids into ``train``, ``val`` and ``test`` (each list in a seeded random order);
    the images of one ``unit_of`` value land in the same split."""
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
    units = _Units(order, image_classes, unit_of)
    left = Counter(c for iid in order for c in image_classes.get(iid, ()))  # images of each class in train
    assigned: Dict[Hashable, str] = {}
    held = {"test": 0, "val": 0}  # images held out

    def hold(u: Hashable, split: str, force: bool = False) -> bool:
        """Move unit ``u`` to ``split`` unless that takes the last training image of one of its classes
        or overshoots the split's size by more than it would fall short without it."""
        size = len(units.members[u])
        if u in assigned or not force and (2 * held[split] + size > 2 * targets[split] or any(
                left[c] <= k for c, k in units.classes[u].items())):
            return False
        assigned[u] = split
        held[split] += size
        left.subtract(units.classes[u])
        return True

    # A class needs one unit left for training plus one per held-out split it appears in.
    for split, min_units in (("val", 2), ("test", 3)):
        if targets[split] == 0:
            continue
        covered: Set[int] = set()  # classes that already have an image in this split
        for c in units.rarest_first():
            if c in covered or len(units.of_class[c]) < min_units or held[split] >= targets[split]:
                continue
            for u in units.of_class[c]:
                if hold(u, split):
                    covered.update(units.classes[u])
                    break
    # The rest of each held-out split in the seeded order; no class loses its last training image, so a
    # class seen in val or test is always also learned. A split may come out smaller than its fraction.
    for split in ("val", "test"):
        for u in units.members:
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
                 seed: int, unit_of: Optional[Mapping[int, Hashable]] = None) -> List[List[int]]:
    """Deal image ids into ``folds`` folds, rarest class first, so each class spreads evenly; the
    images of one ``unit_of`` value land in the same fold."""
    if folds < 2:
        raise ValueError(f"--folds must be at least 2, got {folds}")
    if folds > len(image_ids):
        raise ValueError(f"--folds {folds} is more than the {len(image_ids)} usable images")
    order = shuffled(image_ids, seed)
    units = _Units(order, image_classes, unit_of)
    fold_of: Dict[Hashable, int] = {}
    sizes = [0] * folds
    class_count: List[Counter] = [Counter() for _ in range(folds)]

    def place(u: Hashable, k: int) -> None:
        fold_of[u] = k
        sizes[k] += len(units.members[u])
        class_count[k].update(units.classes[u])

    for c in units.rarest_first():
        # deal the units of this class to the folds that hold fewest of it
        for u in units.of_class[c]:
            if u not in fold_of:
                place(u, min(range(folds), key=lambda k: (class_count[k][c], sizes[k], k)))
    for u in units.members:
        if u not in fold_of:
            place(u, min(range(folds), key=lambda k: (sizes[k], k)))
    out: List[List[int]] = [[] for _ in range(folds)]
    for u, ids in units.members.items():
        out[fold_of[u]].extend(ids)
    order_of = {iid: pos for pos, iid in enumerate(order)}
    return [sorted(fold, key=order_of.__getitem__) for fold in out]
