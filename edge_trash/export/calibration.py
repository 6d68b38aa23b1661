"""Calibration images for int8 post-training quantization, drawn from the TRAIN split only.

Images are picked stratified by class (round robin over classes, rarest class first), so a
long-tailed dataset still shows the quantizer every class: a class the calibration never sees
gets activation ranges fitted to the others. The selection is deterministic for a seed.
"""

from __future__ import annotations

import dataclasses
import os
import random
from collections import defaultdict
from typing import Dict, List, Sequence

import numpy as np

from edge_trash.tfrecords import feature_keys as keys

DEFAULT_CALIBRATION_IMAGES = 300
#: Below this many calibration images the activation ranges are noticeably less reliable.
MIN_RECOMMENDED_IMAGES = 100


@dataclasses.dataclass
class CalibrationSet:
    """The picked calibration images, resized to the model input, and what they cover."""

    images: List[np.ndarray]  # uint8 [S,S,3]
    source_ids: List[str]
    images_per_class: Dict[int, int]  # 1-based class id -> picked images that contain it
    available_images: int
    warnings: List[str]

    def __len__(self) -> int:
        return len(self.images)


def split_files(data_dir: str, split: str) -> List[str]:
    """The sorted TFRecord shards of ``split`` in ``data_dir``; raise FileNotFoundError naming the pattern."""
    from pathlib import Path

    from edge_trash.tfrecords.split_layout import broken_shard_set, split_shards

    files = [str(f) for f in split_shards(Path(data_dir), split)]
    if not files:
        pattern = os.path.join(data_dir, f"{split}-*.tfrecord")
        raise FileNotFoundError(
            f"no {split} TFRecords match {pattern}: pass the --out directory of "
            "`edge-trash build-tfrecords` as --data")
    broken = broken_shard_set([Path(f) for f in files])  # two builds' shards, or one left out of a copy
    if broken:
        raise FileNotFoundError(broken)
    return files


def stratified_pick(labels_per_image: Sequence[Sequence[int]], count: int, seed: int = 0) -> List[int]:
    """Pick up to ``count`` image indices, round robin over classes from the rarest class up.

    Args:
      labels_per_image: the class ids in each image (an image may hold several classes; an
        image without boxes is picked only after every class is exhausted).
      count: how many indices to return (fewer when fewer images exist).
      seed: shuffles the order inside each class.

    Returns:
      Distinct indices, in pick order.
    """
    rng = random.Random(seed)
    by_class: Dict[int, List[int]] = defaultdict(list)
    empty: List[int] = []
    for index, labels in enumerate(labels_per_image):
        for label in sorted(set(int(v) for v in labels)):
            by_class[label].append(index)
        if len(labels) == 0:
            empty.append(index)
    queues = []
    for label in sorted(by_class, key=lambda c: (len(by_class[c]), c)):
        members = list(by_class[label])
        rng.shuffle(members)
        queues.append(members)
    rng.shuffle(empty)
    picked: List[int] = []
    seen = set()
    while len(picked) < count and any(queues):
        for queue in queues:
            while queue and queue[0] in seen:
                queue.pop(0)
            if queue and len(picked) < count:
                index = queue.pop(0)
                seen.add(index)
                picked.append(index)
    for index in empty:
        if len(picked) >= count:
            break
        picked.append(index)
    return picked


def resize_for_model(image: np.ndarray, size: int) -> np.ndarray:
    """Resize an RGB uint8 image to [size,size,3] as training, evaluate and the device do (a plain bilinear
    stretch, ``augment.stretch_resize``): the int8 ranges are measured on the inputs the model will meet
    (Pillow's antialiased resize was a third way)."""
    from edge_trash.train.augment import stretch_resize

    return np.ascontiguousarray(stretch_resize(np.asarray(image, dtype=np.uint8), size))


def load_calibration_set(data_dir: str, input_size: int, count: int = DEFAULT_CALIBRATION_IMAGES,
                         seed: int = 0) -> CalibrationSet:
    """Read the train split of ``data_dir`` and return ``count`` stratified, resized images.

    Raises:
      FileNotFoundError: no ``train-*.tfrecord`` in ``data_dir``.
      ValueError: ``count`` < 1, or the train split holds no image.
    """
    import tensorflow as tf

    if count < 1:
        raise ValueError(f"--calibration-images must be >= 1, got {count}")
    files = split_files(data_dir, "train")
    label_spec = {
        keys.CLASS_LABEL: tf.io.VarLenFeature(tf.int64),
        keys.SOURCE_ID: tf.io.FixedLenFeature([], tf.string, default_value=""),
    }
    labels_per_image: List[List[int]] = []
    source_ids: List[str] = []
    for record in tf.data.TFRecordDataset(files):
        parsed = tf.io.parse_single_example(record, label_spec)
        labels_per_image.append([int(v) for v in tf.sparse.to_dense(parsed[keys.CLASS_LABEL]).numpy()])
        source_ids.append(parsed[keys.SOURCE_ID].numpy().decode("utf-8"))
    if not labels_per_image:
        raise ValueError(f"the train split in {data_dir} holds no records: rebuild the TFRecords")

    order = stratified_pick(labels_per_image, count, seed)
    wanted = {index: position for position, index in enumerate(order)}
    images: List[np.ndarray] = [np.zeros(0, np.uint8)] * len(order)
    image_spec = {keys.ENCODED: tf.io.FixedLenFeature([], tf.string)}
    for index, record in enumerate(tf.data.TFRecordDataset(files)):
        if index not in wanted:
            continue
        encoded = tf.io.parse_single_example(record, image_spec)[keys.ENCODED]
        decoded = tf.io.decode_image(encoded, channels=3, expand_animations=False).numpy()
        images[wanted[index]] = resize_for_model(decoded, input_size)

    per_class: Dict[int, int] = defaultdict(int)
    for index in order:
        for label in set(labels_per_image[index]):
            per_class[label] += 1
    warnings: List[str] = []
    if len(order) < MIN_RECOMMENDED_IMAGES:
        fix = ("add training images (the train split holds no more)" if len(order) >= len(labels_per_image) else
               f"a larger --calibration-images (the train split holds {len(labels_per_image)})")
        warnings.append(
            f"only {len(order)} calibration images (of {len(labels_per_image)} in the train split; "
            f"asked for {count}): int8 ranges from fewer than {MIN_RECOMMENDED_IMAGES} images can cost "
            f"accuracy; {fix}")
    all_classes = {label for labels in labels_per_image for label in labels}
    missing = sorted(all_classes - set(per_class))
    if missing:
        warnings.append(f"classes {missing} have no calibration image: raise --calibration-images")
    return CalibrationSet(
        images=images,
        source_ids=[source_ids[i] for i in order],
        images_per_class=dict(sorted(per_class.items())),
        available_images=len(labels_per_image),
        warnings=warnings,
    )
