"""The training / evaluation input pipeline: sharded TFRecords -> batched tensors.

One path for both modes. Records are read by random access (an offset index over the
shards, built once), so the class-balanced :class:`~edge_trash.train.balancing.BalancedSampler`
can decide each epoch exactly which records to draw and with which augmentation seed:

    epoch plan (numpy, from seed + epoch) -> read record -> parse + decode JPEG (TF, parallel)
    -> augment + stretch to S x S (albumentations in tf.numpy_function, parallel)
    -> pad boxes to max_boxes (or target_fn) -> batch -> prefetch

In training mode the dataset is an endless stream of epochs starting at ``epoch``; every
epoch has exactly ``steps_per_epoch * batch_size`` samples and depends only on
``(seed, epoch)``, so a resumed run passes the epoch it resumes at and sees the same data
an uninterrupted run would. In evaluation mode it is one pass over the split in record
order, without augmentation or balancing.
"""

from __future__ import annotations

import functools
import os
import threading
import unicodedata
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from edge_trash.tfrecords import feature_keys as keys
from edge_trash.tfrecords.tfrecord_file import FOOTER, HEADER
from edge_trash.train.augment import AugmentConfig, Augmenter
from edge_trash.train.balancing import BalanceConfig, BalancedSampler

DEFAULT_MAX_BOXES = 100


def split_files(data_dir: os.PathLike, split: str) -> List[Path]:
    """The shards of ``split`` in ``data_dir`` (``{split}-NNNNN-of-NNNNN.tfrecord``), sorted;
    ``split`` may join several with ``+`` (``fold0+fold2``: the folds a ``--fold 1`` run trains on)."""
    root = Path(data_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"--data {root}: not a folder; build it with "
                                "`edge-trash build-tfrecords --out DIR`")
    from edge_trash.tfrecords.split_layout import broken_shard_set, split_shards, splits_found

    files: List[Path] = []
    parts = split.split("+")
    for part in parts:
        if not part or any(c in part for c in "*?[]/\\"):  # a glob matched every split ('*': train+val+test)
            raise FileNotFoundError(f"--split {split!r}: {part!r} is not a split name (splits found: "
                                    f"{', '.join(splits_found(root)) or 'none'}; join several with +)")
        if parts.count(part) > 1:
            raise FileNotFoundError(f"--split {split!r} names {part} {parts.count(part)} times: each of its images "
                                    "would be counted as often")
        found = split_shards(root, part)
        if not found:
            from edge_trash.tfrecords.other_formats import other_record_layout

            other = other_record_layout(root, "--data")
            if other:
                raise FileNotFoundError(other)
            raise FileNotFoundError(f"{root}: no {part}-*.tfrecord shards (splits found: "
                                    f"{', '.join(splits_found(root)) or 'none'}); pass --split one of those or rebuild")
        broken = broken_shard_set(found)
        if broken:
            raise FileNotFoundError(broken)
        files += found
    return files


def read_class_names(data_dir: os.PathLike) -> List[str]:
    """Class names from ``labels.txt`` (line k = class id k + 1)."""
    from edge_trash.models.run_dir import labels_text

    path = Path(data_dir) / "labels.txt"
    try:
        names = [line.strip() for line in labels_text(path).splitlines()]
    except OSError as exc:
        raise FileNotFoundError(f"{path}: cannot read the class names ({exc}); it is written "
                                "by `edge-trash build-tfrecords`") from exc
    names = [n for n in names if n]
    if not names:
        raise ValueError(f"{path}: no class names")
    return names


class TFRecordIndex:
    """Random access to the records of TFRecord shards (uncompressed), thread-safe."""

    def __init__(self, files: Sequence[os.PathLike]) -> None:
        self.files = [Path(f) for f in files]
        self._entries: List[Tuple[int, int, int]] = []  # (file number, data offset, length)
        for number, path in enumerate(self.files):
            self._entries.extend((number, off, n) for off, n in _scan(path))
        self._fds: List[Optional[int]] = [None] * len(self.files)
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def location(self, i: int) -> Tuple[Path, int]:
        """(shard, byte offset of the record header) of record ``i``, for error messages."""
        number, offset, _ = self._entries[int(i)]
        return self.files[number], offset - HEADER.size

    def read(self, i: int) -> bytes:
        """The serialized ``tf.train.Example`` of record ``i`` (in shard order)."""
        number, offset, length = self._entries[int(i)]
        fd = self._fds[number]
        if fd is None:
            with self._lock:
                fd = self._fds[number]
                if fd is None:
                    fd = self._fds[number] = os.open(self.files[number], os.O_RDONLY)
        data = os.pread(fd, length, offset)
        if len(data) != length:
            raise IOError(f"{self.files[number]}: record at byte {offset} is truncated; rebuild")
        return data

    def close(self) -> None:
        """Close the shard files (reopened on the next read)."""
        with self._lock:
            for k, fd in enumerate(self._fds):
                if fd is not None:
                    os.close(fd)
                    self._fds[k] = None

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # interpreter shutdown
            pass


def _scan(path: Path) -> List[Tuple[int, int]]:
    """(data offset, length) of every record of one shard, from the record headers."""
    size = path.stat().st_size
    out: List[Tuple[int, int]] = []
    with open(path, "rb") as f:
        head = f.read(2)
        if head == b"\x1f\x8b":
            raise ValueError(f"{path}: GZIP-compressed TFRecords are not supported; rebuild "
                             "uncompressed with `edge-trash build-tfrecords`")
        pos = 0
        while pos < size:
            f.seek(pos)
            header = f.read(HEADER.size)
            if len(header) < HEADER.size:
                raise ValueError(f"{path}: truncated record header at byte {pos}; rebuild")
            length, _ = HEADER.unpack(header)
            end = pos + HEADER.size + length + FOOTER.size
            if end > size:
                raise ValueError(f"{path}: record at byte {pos} claims {length} bytes but the "
                                 "file ends first (truncated or not a TFRecord); rebuild")
            out.append((pos + HEADER.size, length))
            pos = end
    return out


@dataclass
class SplitData:
    """A split's shards, its record index, the class ids of every record (crowd boxes left out), the class
    names, and the most boxes one record holds (crowd boxes included)."""

    files: List[Path]
    index: TFRecordIndex
    labels: List[List[int]]
    class_names: List[str]
    most_boxes: int = 0


def _file_stamp(files: Sequence[Path]) -> Tuple[Tuple[str, int, int], ...]:
    return tuple((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in files)


def load_split(data_dir: os.PathLike, split: str) -> SplitData:
    """Index the shards of ``split`` and read every record's class ids (cached per process)."""
    from edge_trash.tfrecords.other_formats import background_line_problem

    files = split_files(data_dir, split)
    names = read_class_names(data_dir)
    problem = background_line_problem(names, Path(data_dir) / "labels.txt")
    if problem:
        raise RecordError(problem)
    return _load_split_cached(_file_stamp(files), tuple(names))


@functools.lru_cache(maxsize=8)
def _load_split_cached(stamp: Tuple[Tuple[str, int, int], ...],
                       names: Tuple[str, ...]) -> SplitData:
    import tensorflow as tf

    files = [Path(s[0]) for s in stamp]
    index = TFRecordIndex(files)
    labels: List[List[int]] = []
    most_boxes = 0
    texts: Dict[int, Counter] = {}  # class id -> the class/text records give it, and how often
    first_text: Dict[Tuple[int, str], str] = {}  # (id, text) -> the first record that says so
    zero_first, zero_records, highest = "", 0, 0  # the first record holding class id 0, how many do, the top id
    for i in range(len(index)):
        example = tf.train.Example.FromString(index.read(i))
        feature = example.features.feature
        ids = [int(v) for v in feature[keys.CLASS_LABEL].int64_list.value]
        crowd = list(feature[keys.IS_CROWD].int64_list.value)
        _check_record(feature, ids, len(names), lambda: _record_name(index, i, feature))
        if 0 in ids:  # ids numbered from 0: refused once the whole split is counted
            zero_first = zero_first or _record_name(index, i, feature)
            zero_records += 1
        highest = max([highest, *ids])
        for c, text in zip(ids, feature[keys.CLASS_TEXT].bytes_list.value):
            said = text.decode("utf-8", "replace").strip()
            texts.setdefault(c, Counter())[said] += 1
            if (c, said) not in first_text:
                first_text[(c, said)] = _record_name(index, i, feature)
        labels.append([c for k, c in enumerate(ids) if k >= len(crowd) or not crowd[k]])  # what training learns
        most_boxes = max(most_boxes, len(ids))
    if zero_records:
        from edge_trash.tfrecords.other_formats import class_ids_from_0_problem

        raise RecordError(class_ids_from_0_problem(zero_first, zero_records, len(index), highest, len(names)))
    _check_class_texts(texts, first_text, names)
    return SplitData(files=files, index=index, labels=labels, class_names=list(names), most_boxes=most_boxes)


class RecordError(ValueError):
    """A record that training cannot read as the TF Object Detection API schema says; the message names it."""


def _record_name(index: TFRecordIndex, i: int, feature: Any) -> str:
    source = feature[keys.SOURCE_ID].bytes_list.value
    return f"{index.location(i)[0]}: record {i} (source_id {source[0].decode('utf-8', 'replace') if source else '?'})"


_SCHEMA = ("boxes normalised to [0, 1] (xmin <= xmax, ymin <= ymax) and class ids 1..N in the order of labels.txt "
           "(0 is background), as `edge-trash build-tfrecords` writes them")


def _check_record(feature: Any, ids: List[int], num_classes: int, name: Callable[[], str]) -> None:
    """Refuse a record whose class ids or boxes are not what the schema says (another tool's records: pixel
    boxes, 0-based ids, box lists of other lengths)."""
    bad = [c for c in ids if not 0 <= c <= num_classes]  # 0: the split is refused once all its ids are read
    if bad:
        raise RecordError(f"{name()} has class ids {bad} outside 1..{num_classes} of labels.txt; records need "
                          f"{_SCHEMA}: rebuild the TFRecords, or write labels.txt with one name per class id")
    box = [list(feature[k].float_list.value) for k in (keys.BBOX_YMIN, keys.BBOX_XMIN, keys.BBOX_YMAX, keys.BBOX_XMAX)]
    lengths = {len(v) for v in box}
    if lengths != {len(ids)}:
        raise RecordError(f"{name()} has {len(ids)} class ids and box lists of {sorted(lengths)} values "
                          f"(ymin, xmin, ymax, xmax); records need one class id per box: rebuild the TFRecords")
    for k, (ymin, xmin, ymax, xmax) in enumerate(zip(*box)):  # a little past an edge is clipped in training
        if not (-0.01 <= ymin <= ymax <= 1.01 and -0.01 <= xmin <= xmax <= 1.01):
            looks = " (pixels?)" if max(ymax, xmax) > 1.01 else ""
            raise RecordError(f"{name()}: box {k} is [ymin, xmin, ymax, xmax] = "
                              f"{[round(v, 4) for v in (ymin, xmin, ymax, xmax)]}{looks}; records need {_SCHEMA}")


def _loose_name(name: str) -> str:
    return unicodedata.normalize("NFC", name).casefold()


def _check_class_texts(texts: Dict[int, Counter], first: Dict[Tuple[int, str], str],
                       names: Sequence[str]) -> None:
    """Refuse records whose ``class/text`` is the name another line of labels.txt gives (ignoring case and
    Unicode form): a labels.txt written in another order would train every class under another's name. Other
    texts (a class renamed in labels.txt for display) are let be."""
    line_of = {_loose_name(n): k for k, n in enumerate(names, start=1)}
    wrong = sorted((c, said) for c, seen in texts.items() for said in seen
                   if line_of.get(_loose_name(said), c) != c)
    if not wrong:
        return
    c, said = wrong[0]
    implied = {c: max((t for t in seen if t), key=seen.get) for c, seen in texts.items() if any(seen)}
    lines = [implied.get(k, names[k - 1]) for k in range(1, len(names) + 1)]
    hint = (f"; the records' own names give labels.txt: {', '.join(lines)}"
            if all(len([t for t in seen if t]) == 1 for seen in texts.values()) else "")
    pairs = "1 such pair" if len(wrong) == 1 else f"{len(wrong)} such pairs"
    raise RecordError(f"{first[(c, said)]} names class id {c} {said!r}, which is line {line_of[_loose_name(said)]} "
                      f"of labels.txt, not line {c} ({names[c - 1]!r}; {pairs} of id and name): labels.txt must list "
                      f"the classes in id order{hint}")


def make_sampler(data_dir: os.PathLike, split: str, balance_config: BalanceConfig,
                 seed: int, shuffle: bool = True) -> BalancedSampler:
    """The class-balanced sampler of a split (its ``report()`` is the before/after table)."""
    data = load_split(data_dir, split)
    return BalancedSampler(data.labels, len(data.class_names), balance_config, seed, shuffle)


def steps_per_epoch(sampler: BalancedSampler, batch_size: int) -> int:
    """Training steps per epoch: the expected balanced epoch size over the batch size (>= 1)."""
    if batch_size < 1:
        raise ValueError(f"batch_size: got {batch_size}, expected >= 1")
    return max(1, int(round(sampler.expected_epoch_size())) // batch_size)


def parse_example(serialized: Any) -> Tuple[Any, Any, Any, Any]:
    """Decode one serialized example: (uint8 image [H,W,3], float32 boxes [K,4] yxyx, int32 classes [K],
    bool crowd [K]) (``image/object/is_crowd``; a record without it has no crowd box)."""
    import tensorflow as tf

    spec = {
        keys.ENCODED: tf.io.FixedLenFeature([], tf.string),
        keys.BBOX_YMIN: tf.io.VarLenFeature(tf.float32),
        keys.BBOX_XMIN: tf.io.VarLenFeature(tf.float32),
        keys.BBOX_YMAX: tf.io.VarLenFeature(tf.float32),
        keys.BBOX_XMAX: tf.io.VarLenFeature(tf.float32),
        keys.CLASS_LABEL: tf.io.VarLenFeature(tf.int64),
        keys.IS_CROWD: tf.io.VarLenFeature(tf.int64),
    }
    parsed = tf.io.parse_single_example(serialized, spec)
    image = tf.io.decode_image(parsed[keys.ENCODED], channels=3, expand_animations=False)
    image.set_shape([None, None, 3])
    boxes = tf.stack([tf.sparse.to_dense(parsed[k]) for k in
                      (keys.BBOX_YMIN, keys.BBOX_XMIN, keys.BBOX_YMAX, keys.BBOX_XMAX)], axis=-1)
    classes = tf.cast(tf.sparse.to_dense(parsed[keys.CLASS_LABEL]), tf.int32)
    flags = tf.concat([tf.sparse.to_dense(parsed[keys.IS_CROWD]), tf.zeros_like(classes, tf.int64)], 0)
    crowd = tf.not_equal(flags[:tf.size(classes)], 0)  # missing flags: not crowd
    return image, tf.reshape(boxes, [-1, 4]), classes, crowd


def make_dataset(data_dir: os.PathLike, split: str, batch_size: int, input_size: int,
                 augment_config: Optional[AugmentConfig], balance_config: Optional[BalanceConfig],
                 seed: int, training: bool,
                 target_fn: Optional[Callable[[Any, Any, Any], Any]] = None, *,
                 epoch: int = 0, max_boxes: int = DEFAULT_MAX_BOXES,
                 steps: Optional[int] = None, num_parallel_calls: Optional[int] = None) -> Any:
    """A ``tf.data.Dataset`` of batches from ``data_dir``'s ``split`` shards.

    Yields ``(images float32 [B,S,S,3] in 0..255, {"boxes": float32 [B,M,4] normalized
    ymin,xmin,ymax,xmax, "classes": int32 [B,M] 1-based with 0 padding, "num_boxes": int32
    [B]})`` with ``M = max_boxes`` (extra boxes beyond M are dropped in training; for evaluation M grows to the
    most boxes a record of the split holds), or, with
    ``target_fn``, ``(images, target_fn(image, boxes, classes))`` where ``target_fn`` gets one
    unbatched float32 image [S,S,3], its boxes [K,4] and classes [K] and must return tensors
    of fixed shape.

    ``training=True``: augmentation (``augment_config``; None = none) and class balancing
    (``balance_config``; None = none), endless stream of epochs from ``epoch``, each of
    ``steps`` (default :func:`steps_per_epoch`) full batches; crowd boxes (``is_crowd``) are
    left out, as Model Garden's training skips them. ``training=False``: one pass in record
    order, no augmentation, last batch may be partial; a crowd box's class is negative
    (``-c``), for an evaluation that ignores what is detected inside it.
    """
    import tensorflow as tf

    if batch_size < 1:
        raise ValueError(f"batch_size: got {batch_size}, expected >= 1")
    if input_size < 1:
        raise ValueError(f"input_size: got {input_size}, expected >= 1")
    if max_boxes < 1:
        raise ValueError(f"max_boxes: got {max_boxes}, expected >= 1")
    data = load_split(data_dir, split)
    if not training:  # evaluation scores every ground-truth box, as `edge-trash evaluate` does
        max_boxes = max(max_boxes, data.most_boxes)
    parallel = num_parallel_calls or tf.data.AUTOTUNE
    augment = augment_config if (training and augment_config is not None) else AugmentConfig()
    augmenter = Augmenter(augment, input_size)

    if training:
        sampler = BalancedSampler(data.labels, len(data.class_names),
                                  balance_config or BalanceConfig(), seed, shuffle=True)
        per_epoch = (steps or steps_per_epoch(sampler, batch_size)) * batch_size

        def plan(e: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
            p = sampler.epoch_plan(int(e), per_epoch)
            return p.indices, p.seeds

        def epoch_samples(e: Any) -> Any:
            idx, seeds = tf.numpy_function(plan, [e], (tf.int64, tf.int64), stateful=False)
            return tf.data.Dataset.from_tensor_slices((tf.reshape(idx, [per_epoch]),
                                                       tf.reshape(seeds, [per_epoch])))

        samples = tf.data.Dataset.range(int(epoch), 2**62).flat_map(epoch_samples)
    else:
        n = len(data.index)
        if n == 0:
            raise ValueError(f"{data_dir}: split {split!r} has no records")
        samples = tf.data.Dataset.from_tensor_slices(
            (np.arange(n, dtype=np.int64), np.zeros(n, dtype=np.int64)))

    index = data.index

    def read(i: np.ndarray) -> bytes:
        return index.read(int(i))

    def apply(image: np.ndarray, boxes: np.ndarray, classes: np.ndarray,
              sample_seed: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        return augmenter(image, boxes, classes, int(sample_seed))

    def load(i: Any, sample_seed: Any) -> Tuple[Any, Any, Any]:
        serialized = tf.numpy_function(read, [i], tf.string, stateful=False)
        image, boxes, classes, crowd = parse_example(tf.reshape(serialized, []))
        if training:  # a crowd box (COCO's iscrowd) is a region not to learn from, as Model Garden skips it
            keep = tf.logical_not(crowd)
            boxes, classes = tf.boolean_mask(boxes, keep), tf.boolean_mask(classes, keep)
        else:  # kept for evaluation, which ignores detections inside it: marked by a negative class
            classes = tf.where(crowd, -classes, classes)
        image, boxes, classes = tf.numpy_function(
            apply, [image, boxes, classes, sample_seed], (tf.uint8, tf.float32, tf.int32),
            stateful=False)
        image = tf.cast(tf.reshape(image, [input_size, input_size, 3]), tf.float32)
        return image, tf.reshape(boxes, [-1, 4]), tf.reshape(classes, [-1])

    ds = samples.map(load, num_parallel_calls=parallel, deterministic=True)
    if target_fn is not None:
        ds = ds.map(lambda image, boxes, classes: (image, target_fn(image, boxes, classes)),
                    num_parallel_calls=parallel, deterministic=True)
    else:
        def pad(image: Any, boxes: Any, classes: Any) -> Tuple[Any, Dict[str, Any]]:
            boxes, classes = boxes[:max_boxes], classes[:max_boxes]
            count = tf.shape(classes)[0]
            boxes = tf.pad(boxes, [[0, max_boxes - count], [0, 0]])
            classes = tf.pad(classes, [[0, max_boxes - count]])
            return image, {"boxes": tf.ensure_shape(boxes, [max_boxes, 4]),
                           "classes": tf.ensure_shape(classes, [max_boxes]),
                           "num_boxes": count}

        ds = ds.map(pad, num_parallel_calls=parallel, deterministic=True)
    ds = ds.batch(batch_size, drop_remainder=training)
    return ds.prefetch(tf.data.AUTOTUNE)
