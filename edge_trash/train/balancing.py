"""Class-balanced sampling of training images: repeat-factor sampling and TrashNet's top-up.

Pure numpy. A :class:`BalancedSampler` turns the class labels of every image of a split
into an *epoch plan*: which image each training sample comes from and the seed its
augmentation uses. The plan depends only on ``(seed, epoch)``, never on earlier epochs,
so ``train --resume`` at epoch ``k`` sees exactly the samples an uninterrupted run sees.

Two recipes:

* ``repeat_factor`` (LVIS, Gupta et al. 2019): ``f(c)`` = fraction of images that contain
  class ``c``; ``r(c) = max(1, sqrt(t / f(c)))``; an image repeats ``max_c r(c)`` times
  over its classes (1 for an image without boxes). Fractional repeats are rounded
  stochastically, seeded per epoch, so the expected count is exact.
* ``min_per_class`` (TrashNet): while a class has fewer than ``N`` instances, images that
  contain it are drawn again (cycling through them in a seeded order); each copy gets
  its own augmentation seed, so each is augmented differently.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Dict, Mapping, Optional, Sequence

import numpy as np

from edge_trash.terminal import plural

METHODS = ("none", "repeat_factor", "min_per_class")

# Independent random streams per (seed, epoch); the last word names the stream.
_STREAM_ROUNDING = 0
_STREAM_TOP_UP = 1
_STREAM_ORDER = 2
_STREAM_SEEDS = 3
_STREAM_EXTEND = 4


@dataclass(frozen=True)
class BalanceConfig:
    """How to rebalance classes when sampling training images.

    ``method``: one of ``none``, ``repeat_factor`` (uses ``repeat_threshold`` t: classes
    in fewer than a fraction t of the images are oversampled) or ``min_per_class`` (uses
    ``min_per_class`` N: every class is topped up to at least N instances per epoch).
    """

    method: str = "none"
    repeat_threshold: float = 0.1
    min_per_class: int = 0

    def validate(self) -> "BalanceConfig":
        """Raise ``ValueError`` naming the bad key and the valid values; return self."""
        if self.method not in METHODS:
            raise ValueError(f"balance.method: got {self.method!r}, expected one of {METHODS}")
        if not 0.0 < float(self.repeat_threshold) <= 1.0:
            raise ValueError(
                f"balance.repeat_threshold: got {self.repeat_threshold}, expected a fraction of "
                "images in (0, 1] (LVIS uses 0.001 for 1000 classes; 0.05-0.3 suits a few classes)")
        if int(self.min_per_class) != self.min_per_class or self.min_per_class < 0:
            raise ValueError(
                f"balance.min_per_class: got {self.min_per_class!r}, expected an integer >= 0")
        if self.method == "min_per_class" and self.min_per_class < 1:
            raise ValueError("balance.min_per_class: must be >= 1 when balance.method is "
                             "'min_per_class' (for example 500)")
        return self

    def to_dict(self) -> Dict[str, Any]:
        """Plain dict for config.json."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "BalanceConfig":
        """Inverse of :meth:`to_dict`; unknown keys raise ``ValueError`` naming them."""
        known = {"method", "repeat_threshold", "min_per_class"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"balance: unknown key(s) {unknown}, expected some of {sorted(known)}")
        return cls(**dict(data)).validate()


@dataclass(frozen=True)
class EpochPlan:
    """The samples of one epoch, in order: the image each comes from and its augmentation seed."""

    epoch: int
    indices: np.ndarray  # int64 [L]: index of the image (record) in the split
    seeds: np.ndarray  # int64 [L]: per-sample augmentation seed, in [0, 2**31)

    def __len__(self) -> int:
        return int(self.indices.shape[0])


def image_fractions(image_labels: Sequence[Sequence[int]], num_classes: int) -> np.ndarray:
    """Fraction of images that contain each class id 1..num_classes; index 0 is unused (0.0)."""
    counts = np.zeros(num_classes + 1, dtype=np.float64)
    for labels in image_labels:
        for c in set(int(x) for x in labels):
            counts[c] += 1
    return counts / max(1, len(image_labels))


def repeat_factors(image_labels: Sequence[Sequence[int]], num_classes: int,
                   threshold: float) -> np.ndarray:
    """LVIS repeat factor of every image: ``max over its classes of max(1, sqrt(t / f(c)))``.

    Images without boxes get 1. Returns float64 ``[num_images]``.
    """
    fractions = image_fractions(image_labels, num_classes)
    with np.errstate(divide="ignore"):
        class_factor = np.maximum(1.0, np.sqrt(threshold / np.where(fractions > 0, fractions, 1.0)))
    factors = np.ones(len(image_labels), dtype=np.float64)
    for i, labels in enumerate(image_labels):
        if len(labels):
            factors[i] = max(class_factor[int(c)] for c in labels)
    return factors


def instance_counts(image_labels: Sequence[Sequence[int]], num_classes: int,
                    indices: Optional[np.ndarray] = None) -> np.ndarray:
    """Instances per class id (index 0 unused) over ``indices`` (all images once when None)."""
    per_image = _per_image_counts(image_labels, num_classes)
    if indices is None:
        return per_image.sum(axis=0)
    return np.bincount(np.asarray(indices, dtype=np.int64), minlength=len(image_labels)) @ per_image


def _per_image_counts(image_labels: Sequence[Sequence[int]], num_classes: int) -> np.ndarray:
    table = np.zeros((len(image_labels), num_classes + 1), dtype=np.int64)
    for i, labels in enumerate(image_labels):
        for c in labels:
            table[i, int(c)] += 1
    return table


def _rng(seed: int, epoch: int, stream: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), int(epoch), stream])


class BalancedSampler:
    """Deterministic per-epoch sampling plans for one split.

    ``image_labels[i]`` lists the 1-based class id of every box of image ``i`` (the
    record order of the split). ``shuffle=False`` keeps record order (evaluation).
    """

    def __init__(self, image_labels: Sequence[Sequence[int]], num_classes: int,
                 config: BalanceConfig = BalanceConfig(), seed: int = 0,
                 shuffle: bool = True) -> None:
        config.validate()
        if num_classes < 1:
            raise ValueError(f"num_classes: got {num_classes}, expected >= 1")
        for i, labels in enumerate(image_labels):
            for c in labels:
                if not 1 <= int(c) <= num_classes:
                    raise ValueError(
                        f"image {i}: class id {c} outside 1..{num_classes}; labels.txt and the "
                        "records disagree: rebuild the TFRecords")
        self.image_labels = [tuple(int(c) for c in labels) for labels in image_labels]
        self.num_classes = num_classes
        self.config = config
        self.seed = int(seed)
        self.shuffle = shuffle
        self._per_image = _per_image_counts(self.image_labels, num_classes)
        self._factors = (repeat_factors(self.image_labels, num_classes, config.repeat_threshold)
                         if config.method == "repeat_factor" else None)

    @property
    def num_images(self) -> int:
        """Images in the split (each sampled at least once per epoch)."""
        return len(self.image_labels)

    def expected_epoch_size(self) -> float:
        """Expected samples per epoch (exact for ``none`` and ``min_per_class``)."""
        if self._factors is not None:
            return float(self._factors.sum())
        return float(self.repeats(0).sum())

    def repeats(self, epoch: int) -> np.ndarray:
        """How many times each image is drawn in ``epoch`` (int64 ``[num_images]``, each >= 1)."""
        n = self.num_images
        method = self.config.method
        if method == "none":
            return np.ones(n, dtype=np.int64)
        if method == "repeat_factor":
            assert self._factors is not None
            whole = np.floor(self._factors)
            frac = self._factors - whole
            draw = _rng(self.seed, epoch, _STREAM_ROUNDING).random(n)
            return (whole + (draw < frac)).astype(np.int64)
        return self._top_up(epoch)

    def _top_up(self, epoch: int) -> np.ndarray:
        """TrashNet: draw images of under-represented classes again until each has N instances."""
        target = int(self.config.min_per_class)
        reps = np.ones(self.num_images, dtype=np.int64)
        counts = self._per_image.sum(axis=0).copy()
        rng = _rng(self.seed, epoch, _STREAM_TOP_UP)
        # Rarest class first: topping it up also adds instances of the classes it co-occurs with.
        for c in sorted(range(1, self.num_classes + 1), key=lambda k: (counts[k], k)):
            holders = np.flatnonzero(self._per_image[:, c])
            if counts[c] >= target or holders.size == 0:
                continue
            order = rng.permutation(holders)
            k = 0
            while counts[c] < target:
                i = order[k % order.size]
                reps[i] += 1
                counts += self._per_image[i]
                k += 1
        return reps

    def epoch_plan(self, epoch: int, length: Optional[int] = None) -> EpochPlan:
        """The ordered samples of ``epoch``; with ``length``, cut or extended to exactly that many.

        Extending appends further shuffled passes over the same balanced multiset, so the
        class proportions stay as balanced; every sample has its own seed either way.
        """
        if epoch < 0:
            raise ValueError(f"epoch: got {epoch}, expected >= 0")
        base = np.repeat(np.arange(self.num_images, dtype=np.int64), self.repeats(epoch))
        indices = _rng(self.seed, epoch, _STREAM_ORDER).permutation(base) if self.shuffle else base
        if length is not None:
            if length < 1:
                raise ValueError(f"length: got {length}, expected >= 1")
            if indices.size == 0:
                raise ValueError("the split has no images: nothing to sample")
            extend_rng = _rng(self.seed, epoch, _STREAM_EXTEND)
            parts = [indices]
            total = indices.size
            while total < length:
                parts.append(extend_rng.permutation(base) if self.shuffle else base)
                total += base.size
            indices = np.concatenate(parts)[:length]
        seeds = _rng(self.seed, epoch, _STREAM_SEEDS).integers(0, 2**31, size=indices.size,
                                                               dtype=np.int64)
        return EpochPlan(epoch=int(epoch), indices=indices, seeds=seeds)

    def report(self, class_names: Sequence[str], epoch: int = 0) -> Dict[str, Any]:
        """Instances and images per class before balancing and in ``epoch``'s plan.

        Returns ``{"method", "images_before", "images_after", "before": {name: n},
        "after": {name: n}}`` (the table ``train`` prints; see :func:`format_balance_table`).
        """
        if len(class_names) != self.num_classes:
            raise ValueError(f"class_names: got {len(class_names)} names for "
                             f"{plural(self.num_classes, 'class')}")
        plan = self.epoch_plan(epoch)
        before = self._per_image.sum(axis=0)
        after = np.bincount(plan.indices, minlength=self.num_images) @ self._per_image
        return {
            "method": self.config.method,
            "epoch": int(epoch),
            "images_before": self.num_images,
            "images_after": len(plan),
            "before": {name: int(before[k + 1]) for k, name in enumerate(class_names)},
            "after": {name: int(after[k + 1]) for k, name in enumerate(class_names)},
        }


def format_balance_table(report: Mapping[str, Any]) -> str:
    """Text table of a :meth:`BalancedSampler.report`: class, instances before, after, factor."""
    names = list(report["before"])
    width = max([len("class")] + [len(n) for n in names])
    lines = [f"class balance ({report['method']}, epoch {report.get('epoch', 0)}):",
             f"  {'class':<{width}}  {'before':>8}  {'after':>8}  {'x':>6}"]
    for name in names:
        b, a = report["before"][name], report["after"][name]
        ratio = f"{a / b:.2f}" if b else "-"
        lines.append(f"  {name:<{width}}  {b:>8d}  {a:>8d}  {ratio:>6}")
    lines.append(f"  {'images':<{width}}  {report['images_before']:>8d}  "
                 f"{report['images_after']:>8d}")
    return "\n".join(lines)

