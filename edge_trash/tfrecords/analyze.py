"""``analyze`` as a library: what a detector will learn from a dataset, before training.

Reads a COCO annotation file (optionally with its images) and/or the TFRecords a
build wrote, and describes each source the same way: instances and images per
class, boxes per image, box sizes (COCO small / medium / large), image sizes,
aspect ratios and brightness. Then it flags what hurts a small SSD on a 320x320
input: long-tail classes, tiny objects, dark images, outlier image sizes, and
(for the JSON) the records ``load_coco`` had to reject.

Box areas are measured in the pixels of the image the boxes were drawn on: the
ORIGINAL image for the JSON, the ENCODED (shrunk) image for TFRecords. The
result goes to ``OUT/stats.json``, ``OUT/report.md`` and PNG plots. TensorFlow is
never imported: TFRecords are read and parsed by ``tfrecord_file`` and ``tf_example``.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import statistics
import sys
import time
from collections import Counter
from contextlib import closing
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

from edge_trash.atomic_files import check_can_create, write_files_together
from edge_trash.tfrecords import feature_keys as K
from edge_trash.tfrecords.class_map import (categories_sharing_a_name, names_read_as_indices, read_as_indices_warning,
                                            similar_names, similar_names_warning)
from edge_trash.tfrecords.analyze_report import draw_plots, held_out, render_report, stale_plots
from edge_trash.tfrecords.build import (BIG_DATASET_IMAGES, counted as _n, examples as _examples, ignored_message,
                                        iscrowd_message, pre_annotation_message, score_message, score_summary,
                                        sizes_of_found)
from edge_trash.tfrecords.coco import CocoDataset, Rejected, load_coco_files
from edge_trash.tfrecords.image_paths import SourceImages, other_photos_of_one_name, source_images
from edge_trash.tfrecords.images import DEFAULT_MAX_PIXELS, bomb_reason, pillow_pixel_limit
from edge_trash.tfrecords.other_formats import (background_line_problem, class_ids_from_0_problem,
                                                 images_folder_problem, other_record_layout)
from edge_trash.tfrecords.split_layout import SHARD_RE, broken_shard_set, shards_unlike_report, unfinished_build
from edge_trash.tfrecords.split_units import identical_files, variants_across_splits, variants_leak_message
from edge_trash.tfrecords.tf_example import parse_example
from edge_trash.tfrecords.tfrecord_file import TFRecordCorruptError, read_records
from edge_trash.tfrecords.workers import ordered_map

SPLIT_ORDER = ("train", "val", "test")
STATS_VERSION = 1


class AnalyzeError(ValueError):
    """The analysis cannot start (bad option or unusable input); the message says what to fix."""


@dataclass(frozen=True)
class Thresholds:
    """Every limit a flag uses, in one place (written into ``stats.json``)."""

    rare_instances: int = 20  # a class with fewer instances is "long tail"
    small_area: float = 32.0 ** 2  # COCO "small": area below this many pixels
    medium_area: float = 96.0 ** 2  # COCO "medium": below this, else "large"
    tiny_relative_side: float = 0.02  # box side below 2% of the image side is tiny too
    tiny_share: float = 0.05  # flag tiny objects when at least this share of boxes is tiny
    tiny_class_share: float = 0.5  # flag a class when at least this share of its boxes is tiny ...
    tiny_class_boxes: int = 5  # ... and it has at least this many boxes
    # 50 separates underexposed photos (sample "dark" scenes: 15-26) from normally lit dark
    # conveyor belts (sample: 54-70); the field's usual 60 would flag plain belts.
    dark_luma: float = 50.0
    large_pixels_factor: float = 3.0  # more pixels than this times the median is an outlier
    min_short_side: int = 320  # fewer pixels than the model input on the short side
    max_aspect: float = 2.5  # long side / short side above this is an odd aspect ratio

    def validate(self) -> None:
        """Reject limits that make no sense, naming the field."""
        if self.rare_instances < 0:
            raise AnalyzeError(f"rare_instances must be >= 0, got {self.rare_instances}")
        if not 0 <= self.dark_luma <= 255:
            raise AnalyzeError(f"dark_luma must be in 0..255, got {self.dark_luma}")
        if not 0 < self.small_area < self.medium_area:
            raise AnalyzeError(f"need 0 < small_area < medium_area, got {self.small_area}, {self.medium_area}")
        if self.large_pixels_factor <= 1 or self.max_aspect < 1:
            raise AnalyzeError("large_pixels_factor must be > 1 and max_aspect >= 1, got "
                               f"{self.large_pixels_factor}, {self.max_aspect}")


@dataclass(frozen=True)
class ImageEntry:
    """One image as a source describes it; ``width``/``height`` in the frame its boxes use."""

    image_id: Any
    file_name: str
    width: int
    height: int


@dataclass(frozen=True)
class BoxEntry:
    """One box: its class name and its size in pixels of its image's frame."""

    image_id: Any
    class_name: str
    width: float
    height: float
    crowd: bool = False  # a crowd region (iscrowd 1): training and COCO's AP leave it out


@dataclass
class Source:
    """What one source (the JSON, or one TFRecord split) contributes to the analysis."""

    name: str  # "annotations" or "tfrecords/train"
    frame: str  # which pixels box sizes are measured in
    images: List[ImageEntry]
    boxes: List[BoxEntry]
    class_names: List[str]  # in the source's own order
    luma: Optional[Dict[Any, float]] = None  # image id -> mean luma, when images were read
    unreadable: List[Dict[str, Any]] = field(default_factory=list)
    # files whose size differs from their JSON entry (annotations with images only): what build does
    size_mismatch: Optional[List[Dict[str, Any]]] = None
    # the same picture more than once: groups of image ids (annotations with images: identical files)
    copies: List[List[Any]] = field(default_factory=list)
    # (file name, image/key/sha256) of each record (TFRecords): the same key is the same stored picture
    picture_keys: List[Tuple[str, str]] = field(default_factory=list)
    # records holding class id 0 (TFRecords numbered from 0): {"records", "first", "highest"}; None when none
    zero_ids: Optional[Dict[str, Any]] = None


# ----------------------------------------------------------------------------- brightness


def mean_luma(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> float:
    """Mean luma (ITU-R 601 Y, 0..255) of an encoded image.

    JPEGs are decoded at 1/8 scale straight to grayscale (Pillow's draft mode),
    about 20 ms of CPU for a 9 MP photo (its entropy decoding); each pixel of the small
    picture is weighted by the pixels it stands for (one at the edge of a 401 px wide
    photo stands for one column, not eight). An image of more than ``max_pixels``
    raises ``Image.DecompressionBombError``, as build-tfrecords refuses it (Pillow's
    own 179 MP limit is raised to fit, never lowered).
    """
    import numpy as np
    from PIL import Image, ImageStat, JpegImagePlugin

    with pillow_pixel_limit(None):  # the header only: checked against max_pixels below
        img = Image.open(io.BytesIO(data))
    full = img.size
    reason = bomb_reason(full, max_pixels)
    if reason:
        raise Image.DecompressionBombError(reason)
    if isinstance(img, JpegImagePlugin.JpegImageFile):  # MPO phone photos too
        img.draft("L", (max(1, img.width // 8), max(1, img.height // 8)))
    with pillow_pixel_limit(max_pixels):
        img.load()
    if img.mode not in ("L", "RGB"):  # the same conversion build-tfrecords makes
        from edge_trash.tfrecords.images import to_rgb

        img = to_rgb(img, [])
    if img.mode != "L":
        img = img.convert("L")
    if img.size == full:  # decoded whole (PNG, TIFF, a small JPEG): every pixel stands for one
        return float(ImageStat.Stat(img).mean[0])
    luma = np.asarray(img, dtype=np.float64)  # small: 1/8 of each side
    rows, cols = _covered(full[1], img.height), _covered(full[0], img.width)
    return float(rows @ luma @ cols / (full[0] * full[1]))


def _covered(full: int, scaled: int) -> Any:
    """How many of ``full`` pixels each of ``scaled`` decoded pixels stands for (a numpy vector): a
    JPEG decoded at 1/k scale (k = 1, 2, 4 or 8) gives ``ceil(full / k)`` pixels, each for k of the
    original but the last, which stands for the rest."""
    import numpy as np

    k = next((k for k in (1, 2, 4, 8) if -(-full // k) == scaled), None)
    if k is None:  # not a DCT scale: every pixel alike
        return np.full(scaled, full / scaled)
    weights = np.full(scaled, float(k))
    weights[-1] = full - k * (scaled - 1)
    return weights


def _read_luma(path: Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> Tuple[Optional[float], str, bytes]:
    """``(mean luma, "", file bytes)``, or ``(None, reason, b"")`` for a file that cannot be read."""
    from PIL import Image, UnidentifiedImageError

    from edge_trash.tfrecords.images import (HEAD_BYTES, file_reason, incomplete_jpeg_reason,  # (lets Pillow open
                                             truncated_reason, unidentified_reason)  # HEIC)

    reason = file_reason(path)  # missing, a link loop, a named pipe (reading it would block), empty
    if reason:
        return None, reason, b""
    try:
        data = path.read_bytes()
    except OSError as exc:
        return None, f"cannot read {path}: {exc.strerror or exc}", b""
    reason = incomplete_jpeg_reason(path, data)
    if reason:
        return None, reason, b""
    try:
        return mean_luma(data, max_pixels), "", data
    except UnidentifiedImageError:
        return None, unidentified_reason(path, data[:HEAD_BYTES]), b""
    except Image.DecompressionBombError as exc:
        message = str(exc)
        return None, message if message.startswith("refused") else f"refused as a decompression bomb: {exc}", b""
    except (OSError, SyntaxError, ValueError) as exc:
        return None, truncated_reason(path, exc), b""


def _progress(items: Iterable[Any], desc: str, enabled: bool, total: Optional[int] = None) -> Iterable[Any]:
    if not enabled:
        return items
    from edge_trash.terminal import progress_bar

    if total is None and isinstance(items, Sequence):
        total = len(items)
    return progress_bar(items, total=total, unit="img", desc=desc)


# ----------------------------------------------------------------------------- sources


PROBLEM_KINDS: Tuple[Tuple[str, str], ...] = (
    # (key in stats, substring of load_coco's reason)
    ("nan_or_infinity", "NaN or Infinity"),
    ("outside_image", "lies outside"),
    ("under_a_pixel", "less than a pixel"),
    ("zero_or_negative_size", "zero or negative size"),
    ("normalised", "looks normalised"),
    ("unknown_category", "unknown category_id"),
    ("unknown_image", "unknown image_id"),
    ("image_rejected", "its image was skipped"),
    ("duplicate_box", "duplicate box:"),
)


def _problem_kind(reason: str) -> str:
    for key, text in PROBLEM_KINDS:
        if text in reason:
            return key
    return "malformed_bbox"


def _rejected_rows(items: List[Rejected]) -> List[Dict[str, Any]]:
    return [{"record_id": r.record_id, "image_id": r.image_id, "file_name": r.file_name, "reason": r.reason}
            for r in items]


def annotation_problems(dataset: CocoDataset) -> Dict[str, Any]:
    """The records ``load_coco`` rejected or repaired, counted by kind."""
    kinds = Counter(_problem_kind(r.reason) for r in dataset.rejected_boxes)
    used = {b.category_id for b in dataset.boxes}
    used_names = {c.name for c in dataset.categories if c.id in used}
    with_boxes = {b.image_id for b in dataset.boxes}
    every_box_dropped = dataset.images_with_every_box_dropped
    no_boxes = [im.id for im in dataset.images if im.id not in with_boxes and im.id not in every_box_dropped]
    boxes_by_kind = {key: kinds.get(key, 0) for key, _ in PROBLEM_KINDS}
    boxes_by_kind["malformed_bbox"] = kinds.get("malformed_bbox", 0)
    return {
        "boxes_in_file": dataset.boxes_total,
        "boxes_usable": len(dataset.boxes),
        "boxes_rejected": len(dataset.rejected_boxes),
        "boxes_rejected_by_kind": boxes_by_kind,
        # past the image = kept after clipping + dropped because nothing was left inside
        "boxes_past_image": dataset.boxes_clipped + kinds.get("outside_image", 0),
        "boxes_clipped": dataset.boxes_clipped,
        "boxes_from_segmentation": dataset.boxes_from_segmentation,
        "boxes_rotated": dataset.boxes_rotated,
        "bbox_format_warning": dataset.bbox_format_warning(),
        "unknown_category_ids": {str(k): n for k, n in dataset.unknown_category_ids.items()},  # -> annotations
        "category_ids_warning": dataset.category_ids_warning(),
        "crowd_masks_warning": dataset.crowd_masks_warning(),
        "duplicate_annotation_ids": dataset.duplicate_annotation_ids,
        "images_rejected": _rejected_rows(dataset.rejected_images),
        "image_sizes_read_from_files": sorted(dataset.size_notes),
        "image_ids_as_text": len(dataset.text_image_ids),
        # by name: categories sharing a name are one class, used when any of them has a box
        "unused_categories": list(dict.fromkeys(c.name for c in dataset.categories if c.name not in used_names)),
        "categories_sharing_a_name": categories_sharing_a_name(dataset.categories),
        "similar_class_names": similar_names(list(dict.fromkeys(c.name for c in dataset.categories
                                                                 if c.id in used))),
        "class_names_read_as_indices": names_read_as_indices(list(dict.fromkeys(c.name for c in dataset.categories
                                                                                 if c.id in used))),
        "images_without_boxes": len(no_boxes),  # no annotation at all: background examples
        "image_ids_without_boxes": no_boxes,
        # annotated, but every box unusable: build-tfrecords leaves them out
        "image_ids_every_box_dropped": sorted(every_box_dropped),
        "repeated_categories_note": dataset.repeated_categories_note(),
        "bbox_from_mask_note": dataset.bbox_from_mask_note(),
        "files_every_box_dropped": [im.file_name for im in sorted(dataset.images, key=lambda im: im.id)
                                    if im.id in every_box_dropped],
        "iscrowd_not_understood": dataset.iscrowd_not_understood,
        "ignored_as_crowd": dataset.ignored_as_crowd,
        "annotations_with_score": score_summary(dataset.scores),
        "device_pre_annotations": dataset.pre_annotations(),  # a queue export's boxes, not reviewed yet
        "rejected_boxes": _rejected_rows(dataset.rejected_boxes),
    }


def image_facts(job: Tuple[str, int]) -> Tuple[Optional[float], str, Optional[Tuple[Tuple[int, int], int]]]:
    """``(mean luma, reason, (stored size, EXIF orientation))`` of one image file (``job`` is its
    path and --max-pixels); runs in worker processes, so it reads the file once and returns only
    small values."""
    from edge_trash.tfrecords.images import read_size_and_orientation

    value, reason, data = _read_luma(Path(job[0]), job[1])
    if value is None:
        return None, reason, None
    found, _ = read_size_and_orientation(io.BytesIO(data))  # the header, from the bytes read once
    return value, "", found


def _json_source(dataset: CocoDataset, paths: Optional[List[SourceImages]], progress: bool,
                 workers: int = 1, max_pixels: int = DEFAULT_MAX_PIXELS) -> Source:
    names = {c.id: c.name for c in dataset.categories}
    images = [ImageEntry(im.id, im.file_name, im.width, im.height) for im in dataset.images]
    boxes = [BoxEntry(b.image_id, names[b.category_id], b.w, b.h, bool(b.iscrowd)) for b in dataset.boxes]
    source = Source("annotations", "original image pixels (the JSON width/height)", images, boxes,
                    [c.name for c in dataset.categories])
    if paths:
        from edge_trash.tfrecords.images import NO_EXIF_TURN, match_json_size

        source.luma, source.size_mismatch = {}, []
        if progress and len(dataset.images) >= BIG_DATASET_IMAGES and sys.stderr is not None:  # seconds, no bar
            print(f"analyze: finding the {len(dataset.images):,} image files ...", file=sys.stderr, flush=True)
        resolved = [paths[im.source].resolve(im.file_name) for im in dataset.images]
        another = other_photos_of_one_name(dataset.images, {im.id: at for im, at in zip(dataset.images, resolved)},
                                           paths)  # as the build leaves them out
        jobs = [(str(path), max_pixels) for path, _ in resolved]
        with closing(ordered_map(image_facts, jobs, workers, chunksize=4)) as facts:  # an exception stops the workers
            # the bar first: zip stops at the first exhausted iterable, and a bar not asked for its next item
            # after its last one never counts that item (it closed at 1499/1500)
            for (value, reason, found), im, (_, path_note) in zip(
                    _progress(facts, "analyze images", progress, len(dataset.images)), dataset.images, resolved):
                if im.id in another:
                    value, reason, path_note = None, another[im.id], None
                if value is None:
                    reason = f"{reason}; {path_note}" if path_note else reason
                    source.unreadable.append({"image_id": im.id, "file_name": im.file_name, "reason": reason})
                    continue
                source.luma[im.id] = value
                if found is not None:
                    _, note, skip = match_json_size(found[0], found[1], (im.width, im.height))
                    if NO_EXIF_TURN in skip:  # its boxes may say the JSON's width and height are swapped
                        skip = dataset.swapped_size_reason(im) or skip
                    if note or skip:
                        source.size_mismatch.append({"image_id": im.id, "file_name": im.file_name,
                                                     "build_skips": bool(skip), "what": skip or note})
        found = sizes_of_found({im.id: at for im, at in zip(dataset.images, resolved) if im.id in source.luma})
        source.copies = identical_files({iid: (str(path), size) for iid, (path, size) in found.items()})
    return source


def find_shards(tfrecords: Path) -> Dict[str, List[Path]]:
    """Shards of a build folder grouped by split, in split order (train, val, test, fold0...)."""
    if not tfrecords.is_dir():
        raise AnalyzeError(f"--tfrecords {tfrecords}: not a directory (give the --out folder of build-tfrecords)")
    unfinished = unfinished_build(tfrecords, "--tfrecords")
    if unfinished:
        raise AnalyzeError(unfinished)
    found: Dict[str, List[Path]] = {}
    for path in sorted(tfrecords.iterdir()):
        match = SHARD_RE.match(path.name)
        if match:
            found.setdefault(match.group(1), []).append(path)
    if not found:
        other = other_record_layout(tfrecords, "--tfrecords")
        if other:
            raise AnalyzeError(other)
        raise AnalyzeError(f"--tfrecords {tfrecords}: no shards named like 'train-00000-of-00001.tfrecord'; "
                           "run edge-trash build-tfrecords --out into this folder first")

    for files in found.values():
        broken = broken_shard_set(files, "--tfrecords")
        if broken:
            raise AnalyzeError(broken)
    unlike = shards_unlike_report(tfrecords, "--tfrecords")
    if unlike:
        raise AnalyzeError(unlike)

    def order(split: str) -> Tuple[int, int]:
        if split in SPLIT_ORDER:
            return 0, SPLIT_ORDER.index(split)
        return 1, int(split[4:])

    return {split: found[split] for split in sorted(found, key=order)}


def _built_keeping_splits(tfrecords: Path) -> Optional[bool]:
    """Whether the build's ``report.json`` says it kept the annotation files' splits (None: no build's report)."""
    try:
        return bool(json.loads((tfrecords / "report.json").read_text(encoding="utf-8"))["options"]["keep_splits"])
    except (OSError, ValueError, TypeError, KeyError):
        return None


def _planned_records(tfrecords: Path) -> Dict[str, int]:
    """Records per shard as the build's ``report.json`` lists them (only sizes the progress bar)."""
    try:
        report = json.loads((tfrecords / "report.json").read_text(encoding="utf-8"))
        return {s["file"]: int(s["records"]) for s in report.get("shards", [])}
    except (OSError, ValueError, TypeError, KeyError):
        return {}


def _iter_records(files: List[Path]) -> Iterator[Tuple[Path, int, bytes]]:
    for path in files:
        try:
            for n, raw in enumerate(read_records(path)):
                yield path, n, raw
        except TFRecordCorruptError as exc:
            raise AnalyzeError(f"{path}: corrupt TFRecord ({exc}); build the TFRecords again") from None


def _stored_size(encoded: bytes) -> Tuple[int, int]:
    """``(width, height)`` of an encoded image from its header, as a decoder returns its pixels (no EXIF
    rotation: training's ``decode_image`` applies none); ``(0, 0)`` when it cannot be read."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(encoded)) as img:
            return img.size
    except Exception:  # noqa: BLE001 - whatever Pillow raises for bytes that are no image
        return 0, 0


def _record_source(split: str, files: List[Path], label_names: List[str], read_images: bool,
                   progress: bool, total: Optional[int] = None) -> Source:
    def values(feature: Dict[str, Tuple[str, list]], key: str, kind: str) -> list:
        found_kind, found = feature.get(key, ("", []))
        return found if found_kind == kind else []

    def ints(feature: Dict[str, Tuple[str, list]], key: str) -> List[int]:
        return values(feature, key, "int64")

    def floats(feature: Dict[str, Tuple[str, list]], key: str) -> List[float]:
        return values(feature, key, "float")

    def texts(feature: Dict[str, Tuple[str, list]], key: str) -> List[str]:
        return [v.decode("utf-8", "replace") for v in values(feature, key, "bytes")]

    source = Source(f"tfrecords/{split}", "encoded image pixels (as stored in the records, after --max-size)",
                    [], [], list(label_names), {} if read_images else None)
    seen_names: List[str] = []
    highest = 0  # the largest class id
    for path, n, raw in _progress(_iter_records(files), f"analyze {split}", progress, total):
        where = f"{path.name} record {n}"
        try:
            feature = parse_example(raw)
        except ValueError as exc:
            raise AnalyzeError(f"{where}: not a tf.train.Example ({exc}); build the TFRecords again") from None
        stored = values(feature, K.ENCODED, "bytes")
        encoded = stored[0] if stored else b""
        width, height = (ints(feature, K.WIDTH) or [0])[0], (ints(feature, K.HEIGHT) or [0])[0]
        if width <= 0 or height <= 0:  # optional for training (it decodes the image): the stored image's header
            width, height = _stored_size(encoded)
            if width <= 0:
                raise AnalyzeError(f"{where}: missing or bad {K.WIDTH}/{K.HEIGHT}, and no readable {K.ENCODED} to "
                                   "take them from; build the TFRecords again")
        source_id = (texts(feature, K.SOURCE_ID) or [f"{path.name}:{n}"])[0]
        file_name = (texts(feature, K.FILENAME) or [""])[0]
        source.images.append(ImageEntry(source_id, file_name, width, height))
        key = (texts(feature, K.KEY_SHA256) or [hashlib.sha256(encoded).hexdigest() if encoded else ""])[0]
        if key:
            source.picture_keys.append((file_name or source_id, key))
        xmin, ymin = floats(feature, K.BBOX_XMIN), floats(feature, K.BBOX_YMIN)
        xmax, ymax = floats(feature, K.BBOX_XMAX), floats(feature, K.BBOX_YMAX)
        labels, text, crowd = ints(feature, K.CLASS_LABEL), texts(feature, K.CLASS_TEXT), ints(feature, K.IS_CROWD)
        if not len(xmin) == len(ymin) == len(xmax) == len(ymax) == len(labels):
            raise AnalyzeError(f"{where}: box lists of different lengths; build the TFRecords again")
        if 0 in labels:
            if source.zero_ids is None:
                source.zero_ids = {"records": 0, "first": f"{path}: record {n} (source_id {source_id})", "highest": 0}
            source.zero_ids["records"] += 1
        highest = max([highest, *labels])
        for i in range(len(xmin)):
            if text and i < len(text):
                name = text[i]
            elif 1 <= labels[i] <= len(label_names):
                name = label_names[labels[i] - 1]
            else:
                name = f"label {labels[i]}"
            if name not in source.class_names and name not in seen_names:
                seen_names.append(name)
            source.boxes.append(BoxEntry(source_id, name, (xmax[i] - xmin[i]) * width, (ymax[i] - ymin[i]) * height,
                                         i < len(crowd) and crowd[i] == 1))
        if read_images and source.luma is not None:
            try:
                source.luma[source_id] = mean_luma(encoded)
            except Exception as exc:  # report every undecodable record, whatever Pillow raises
                source.unreadable.append({"image_id": source_id, "file_name": file_name,
                                          "reason": f"{where}: stored image cannot be decoded: {exc}"})
    source.class_names.extend(seen_names)
    if source.zero_ids is not None:
        source.zero_ids["highest"] = highest
    return source


# ----------------------------------------------------------------------------- statistics


def _r(value: float, digits: int = 4) -> float:
    return round(float(value), digits)


def _summary(values: Sequence[float]) -> Dict[str, Optional[float]]:
    if not values:
        return {"min": None, "p5": None, "median": None, "mean": None, "p95": None, "max": None}
    ordered = sorted(values)

    def pct(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]

    return {"min": _r(ordered[0]), "p5": _r(pct(0.05)), "median": _r(statistics.median(ordered)),
            "mean": _r(statistics.fmean(ordered)), "p95": _r(pct(0.95)), "max": _r(ordered[-1])}


def size_class(area: float, th: Thresholds) -> str:
    """COCO's size bucket of a box area in pixels: ``small``, ``medium`` or ``large``."""
    if area < th.small_area:
        return "small"
    return "medium" if area < th.medium_area else "large"


def is_tiny(box: BoxEntry, image: ImageEntry, th: Thresholds) -> bool:
    """COCO-small, or a side below ``tiny_relative_side`` of the image's matching side."""
    return (box.width * box.height < th.small_area or box.width < th.tiny_relative_side * image.width
            or box.height < th.tiny_relative_side * image.height)


def describe(source: Source, th: Thresholds) -> Dict[str, Any]:
    """Statistics of one source (the JSON or one split)."""
    by_id = {im.image_id: im for im in source.images}
    names = list(source.class_names)
    per_class: Dict[str, Dict[str, Any]] = {
        n: {"name": n, "instances": 0, "images": set(), "small": 0, "medium": 0, "large": 0, "tiny": 0, "crowd": 0}
        for n in names}
    per_image = Counter()
    sizes = {"small": 0, "medium": 0, "large": 0}
    tiny = 0
    sqrt_areas: List[float] = []
    for box in source.boxes:
        image = by_id[box.image_id]
        row = per_class.setdefault(box.class_name, {"name": box.class_name, "instances": 0, "images": set(),
                                                    "small": 0, "medium": 0, "large": 0, "tiny": 0, "crowd": 0})
        area = box.width * box.height
        bucket = size_class(area, th)
        row["instances"] += 1
        row["crowd"] += box.crowd
        row["images"].add(box.image_id)
        row[bucket] += 1
        sizes[bucket] += 1
        if is_tiny(box, image, th):
            row["tiny"] += 1
            tiny += 1
        per_image[box.image_id] += 1
        sqrt_areas.append(math.sqrt(max(0.0, area)))
    classes = []
    for row in per_class.values():
        classes.append({**row, "images": len(row["images"]),
                        "share": _r(row["instances"] / len(source.boxes)) if source.boxes else 0.0})

    counts = [per_image.get(im.image_id, 0) for im in source.images]
    histogram = Counter(counts)
    aspects = [im.width / im.height for im in source.images]
    stats: Dict[str, Any] = {
        "frame": source.frame,
        "images": len(source.images),
        "boxes": len(source.boxes),
        "crowd_boxes": sum(c["crowd"] for c in classes),  # training and COCO's AP leave them out
        "classes": classes,
        "boxes_per_image": {**_summary(counts), "histogram": {str(k): histogram[k] for k in sorted(histogram)}},
        "box_sizes": {
            **sizes,
            "tiny": tiny,
            "tiny_share": _r(tiny / len(source.boxes)) if source.boxes else 0.0,
            "sqrt_area_px": _summary(sqrt_areas),
        },
        "image_sizes": image_size_stats(source.images, th, stored=source.frame.startswith("encoded")),
        "aspect_ratios": {
            **_summary(aspects),
            "landscape": sum(1 for a in aspects if a > 1.0),
            "portrait": sum(1 for a in aspects if a < 1.0),
            "square": sum(1 for a in aspects if a == 1.0),
        },
        "brightness": None,
    }
    if source.luma is not None:
        stats["brightness"] = brightness_stats(source.images, source.luma, source.unreadable, th)
        unread = {u["image_id"] for u in source.unreadable}  # build-tfrecords skips these images and their boxes
        stats["boxes_on_unreadable_images"] = sum(per_image.get(i, 0) for i in unread)
    if source.size_mismatch is not None:
        stats["image_sizes"]["json_mismatch"] = source.size_mismatch
    return stats


def image_size_stats(images: List[ImageEntry], th: Thresholds, stored: bool = False) -> Dict[str, Any]:
    """Distinct sizes (most common first), the median pixel count and the outliers with their reasons. For
    ``stored`` images (records, shrunk to the build's --max-size) a short side is no outlier: the build chose it,
    and with --max-size 320 every record would be flagged."""
    pixels = [im.width * im.height for im in images]
    median_pixels = statistics.median(pixels) if pixels else 0
    outliers = []
    for im in images:
        reasons = {}
        if median_pixels and im.width * im.height > th.large_pixels_factor * median_pixels:
            reasons["large"] = f"{im.width * im.height / median_pixels:.1f}x the median pixel count"
        if not stored and min(im.width, im.height) < th.min_short_side:
            reasons["small"] = f"short side {min(im.width, im.height)} px < {th.min_short_side}"
        ratio = max(im.width, im.height) / min(im.width, im.height)
        if ratio > th.max_aspect:
            reasons["aspect"] = f"aspect {ratio:.2f}:1 > {th.max_aspect}:1"
        if reasons:
            outliers.append({"image_id": im.image_id, "file_name": im.file_name, "width": im.width,
                             "height": im.height, "reason": "; ".join(reasons.values()), "kinds": list(reasons)})
    dims = Counter((im.width, im.height) for im in images)
    return {"distinct": [{"width": w, "height": h, "images": n} for (w, h), n in dims.most_common()],
            "median_pixels": median_pixels, "outliers": outliers}


def _outlier_kinds(outliers: List[Dict[str, Any]], median_pixels: float, th: Thresholds) -> str:
    """How many outliers are large, small or elongated: ``"2 over 3x the median's 12,000,000 pixels, 1 ..."``."""
    counts = Counter(kind for o in outliers for kind in o["kinds"])
    words = {"large": f"over {th.large_pixels_factor:g}x the median's {median_pixels:,.0f} pixels",
             "small": f"under {th.min_short_side} px on the short side",
             "aspect": f"with an aspect ratio above {th.max_aspect:g}:1"}
    said = ", ".join(f"{counts[kind]} {words[kind]}" for kind in words if counts[kind])
    return said + ("; an image may be both" if sum(counts.values()) > len(outliers) else "")


def brightness_stats(images: List[ImageEntry], luma: Dict[Any, float], unreadable: List[Dict[str, Any]],
                     th: Thresholds) -> Dict[str, Any]:
    """Mean-luma summary, the dark images (darkest first), the unreadable ones and every image's value."""
    measured = [im for im in images if im.image_id in luma]
    dark = [{"image_id": im.image_id, "file_name": im.file_name, "mean_luma": _r(luma[im.image_id], 2)}
            for im in measured if luma[im.image_id] < th.dark_luma]
    return {
        "measured": len(measured),
        "mean_luma": _summary([luma[im.image_id] for im in measured]),
        "dark": sorted(dark, key=lambda d: d["mean_luma"]),
        "unreadable": unreadable,
        "per_image": {str(k): _r(v, 2) for k, v in luma.items()},
    }


def long_tail_flags(where: str, classes: Sequence[Dict[str, Any]], th: Thresholds) -> List[Dict[str, Any]]:
    """The ``long_tail_classes`` flag (a list of one, or empty) for ``classes`` (``{name, instances}``)."""
    rare = sorted((c for c in classes if 0 < c["instances"] < th.rare_instances), key=lambda c: c["instances"])
    if not rare:
        return []
    return [{"kind": "long_tail_classes", "where": where, "count": len(rare), "items": [c["name"] for c in rare],
             "message": f"{_n(len(rare), 'class has', 'classes have')} fewer than {th.rare_instances} instances: "
             + _examples([f"{c['name']} ({c['instances']})" for c in rare], 8)
             + "; merge them (--class-map), fold them into 'other' (--min-instances) or collect more"}]


def _tiny_what(th: Thresholds, frame: str) -> str:
    return (f"area < {th.small_area:g} px² or a side < {th.tiny_relative_side:.0%} of the image, in "
            f"{frame.split(' (')[0]}")


def tiny_class_flags(where: str, classes: Sequence[Dict[str, Any]], th: Thresholds,
                     frame: str) -> List[Dict[str, Any]]:
    """The ``tiny_classes`` flag (a list of one, or empty) for ``classes`` (``{name, instances, tiny}``):
    those with at least ``tiny_class_boxes`` boxes, ``tiny_class_share`` of them tiny."""
    tiny = sorted((c for c in classes
                   if c["instances"] >= th.tiny_class_boxes and c["tiny"] >= th.tiny_class_share * c["instances"]),
                  key=lambda c: (-c["tiny"] / c["instances"], c["name"]))
    if not tiny:
        return []
    return [{"kind": "tiny_classes", "where": where, "count": len(tiny), "items": [c["name"] for c in tiny],
             "message": f"{_n(len(tiny), 'class has', 'classes have')} {th.tiny_class_share:.0%} or more of its "
             f"boxes tiny ({_tiny_what(th, frame)}): "
             + _examples([f"{c['name']} ({c['tiny']} of {c['instances']})" for c in tiny], 8)
             + "; expect a low AP for them at a 320x320 input (a larger train --input-size, such as 416, sees "
             "them wider; or photograph them closer)"}]


def find_flags(where: str, stats: Dict[str, Any], th: Thresholds,
               problems: Optional[Dict[str, Any]] = None) -> List[Dict[str, Any]]:
    """The warnings for one source: each ``{"kind", "where", "count", "message", "items"}``."""
    flags: List[Dict[str, Any]] = []

    def add(kind: str, items: List[Any], message: str, count: Optional[int] = None) -> None:
        flags.append({"kind": kind, "where": where, "count": len(items) if count is None else count,
                      "message": message, "items": items})

    held = held_out(where)
    missing = [c["name"] for c in stats["classes"] if c["instances"] == c["crowd"]]  # crowd regions count for none
    if any(c["crowd"] for c in stats["classes"] if c["name"] in missing):
        missing_what = f"{_n(len(missing), 'class has', 'classes have')} no box other than crowd regions"
    else:
        missing_what = f"{_n(len(missing), 'class has', 'classes have')} no box"
    if held and missing:  # a class absent from an evaluation split cannot be scored there
        add("classes_missing", missing, f"{missing_what} in this split: "
            + _examples(missing, 8) + "; their AP cannot be measured on this split (collect more, or merge classes)")
    if where == "tfrecords/train" and missing:  # labels.txt names them, training never sees one
        add("classes_missing", missing, f"{missing_what} in train, so the "
            f"model cannot learn {'it' if len(missing) == 1 else 'them'}: " + _examples(missing, 8)
            + " (collect more, merge or drop them with a --class-map, and rebuild)")
    if not held:  # small counts in val/test are expected; the tail matters where the model learns
        flags += long_tail_flags(where, stats["classes"], th)
    sizes = stats["box_sizes"]
    if not held and stats["boxes"] and sizes["tiny_share"] >= th.tiny_share:  # a held-out split's share is noise
        add("tiny_objects", [], f"{sizes['tiny_share']:.1%} of boxes are tiny ({_tiny_what(th, stats['frame'])}); "
            "at a 320x320 input they are a few pixels wide")
        flags[-1]["count"] = sizes["tiny"]
    if not held:  # cigarette butts: a class a 320x320 input barely resolves
        flags += tiny_class_flags(where, stats["classes"], th, stats["frame"])
    bright = stats.get("brightness")
    if bright and bright["dark"]:
        add("dark_images", [d["image_id"] for d in bright["dark"]],
            f"{_n(len(bright['dark']), 'image has', 'images have')} a mean luma below {th.dark_luma:g}/255: "
            + _examples([f"{d['file_name'] or d['image_id']} ({d['mean_luma']:.1f})" for d in bright["dark"]])
            + "; check exposure, or brighten them in augmentation")
    if bright and bright["unreadable"]:
        unreadable = bright["unreadable"]
        none_found = (len(unreadable) == stats["images"]
                      and all(u["reason"].startswith("file not found") for u in unreadable))
        add("unreadable_images", [u["image_id"] for u in unreadable],
            (f"none of the {stats['images']} image files was found: give --images as the folder the file_name "
             "entries are relative to (" if none_found
             else f"{_n(len(unreadable), 'image cannot', 'images cannot')} be read: ")
            + _examples([u["reason"] for u in unreadable], 3) + (")" if none_found else ""))
    mismatch = stats["image_sizes"].get("json_mismatch") or []
    skipped = [m for m in mismatch if m["build_skips"]]
    if skipped:
        add("size_mismatch_skipped", [m["image_id"] for m in skipped],
            f"{_n(len(skipped), 'image file does', 'image files do')} not have the size (nor the aspect ratio) "
            "their JSON entry gives; build-tfrecords will skip them: "
            + _examples([f"{m['file_name']}: {m['what']}" for m in skipped], 3))
    if len(mismatch) > len(skipped):
        adjusted = [m for m in mismatch if not m["build_skips"]]
        add("size_mismatch_adjusted", [m["image_id"] for m in adjusted],
            f"{_n(len(adjusted), 'image file differs', 'image files differ')} in size from their JSON entry in "
            "a way build-tfrecords can follow: " + _examples([f"{m['file_name']}: {m['what']}" for m in adjusted], 3))
    outliers = stats["image_sizes"]["outliers"]
    if outliers:
        add("image_size_outliers", [o["image_id"] for o in outliers],
            f"{len(outliers)} of {_n(sum(d['images'] for d in stats['image_sizes']['distinct']), 'image', 'images')} "
            f"{'has' if len(outliers) == 1 else 'have'} an outlier size or aspect ratio "
            f"({_outlier_kinds(outliers, stats['image_sizes']['median_pixels'], th)}): "
            + _examples([f"{o['file_name'] or o['image_id']} {o['width']}x{o['height']} ({o['reason']})"
                         for o in outliers], 3))
    if problems:
        kinds = problems["boxes_rejected_by_kind"]
        parts = [f"{n} {k.replace('_', ' ')}" for k, n in kinds.items() if n]
        if problems["boxes_rejected"]:
            add("rejected_boxes", [r["record_id"] for r in problems["rejected_boxes"]],
                f"{problems['boxes_rejected']} of {problems['boxes_in_file']} boxes "
                f"{'is' if problems['boxes_rejected'] == 1 else 'are'} unusable: " + ", ".join(parts) + " ("
                + _examples([f"annotation {r['record_id']}" + (f" on {r['file_name']}" if r["file_name"] else "")
                             for r in problems["rejected_boxes"]], 3) + "; each with its reason in stats.json)")
        if problems.get("bbox_format_warning"):
            add("bbox_format", [], problems["bbox_format_warning"])
        if problems.get("category_ids_warning"):
            add("category_ids_from_0", [], problems["category_ids_warning"])
        if problems.get("repeated_categories_note"):
            add("repeated_categories", [], problems["repeated_categories_note"])
        if problems.get("bbox_from_mask_note"):
            add("bbox_from_segmentation", [], problems["bbox_from_mask_note"])
        if problems.get("crowd_masks_warning"):
            add("crowd_masks", [], problems["crowd_masks_warning"])
        if problems["boxes_clipped"]:
            add("clipped_boxes", [], _n(problems["boxes_clipped"], "box runs past its image and is",
                                        "boxes run past their image and are") + " clipped to it")
            flags[-1]["count"] = problems["boxes_clipped"]
        if problems["images_rejected"]:
            add("rejected_images", [r["record_id"] for r in problems["images_rejected"]],
                f"{_n(len(problems['images_rejected']), 'image entry is', 'image entries are')} unusable: "
                + _examples([r["reason"] for r in problems["images_rejected"]], 3))
        if problems["image_sizes_read_from_files"]:
            add("image_sizes_read_from_files", list(problems["image_sizes_read_from_files"]),
                _n(len(problems["image_sizes_read_from_files"]), "image entry has", "image entries have")
                + " no usable width/height: their sizes were read from the image files (fix the JSON to match)")
        if problems["duplicate_annotation_ids"]:
            add("duplicate_annotation_ids", list(problems["duplicate_annotation_ids"]),
                _n(len(problems["duplicate_annotation_ids"]), "annotation id is", "annotation ids are")
                + " used more than once: "
                + _examples(problems["duplicate_annotation_ids"]))
        for group in problems.get("categories_sharing_a_name", []):
            ids = group["category_ids"]
            add("categories_sharing_a_name", list(ids), f"categories {', '.join(str(i) for i in ids)} share the "
                f"name '{group['name']}': build-tfrecords makes them one class")
        for group in problems.get("similar_class_names", []):
            add("similar_class_names", list(group), similar_names_warning(group))
        if problems.get("class_names_read_as_indices"):
            names = problems["class_names_read_as_indices"]
            add("class_names_read_as_indices", list(names), read_as_indices_warning(names))
        if problems["unused_categories"]:
            add("unused_categories", list(problems["unused_categories"]),
                f"{_n(len(problems['unused_categories']), 'category has', 'categories have')} no usable box: "
                + _examples(problems["unused_categories"], 8))
        if problems["images_without_boxes"]:
            add("images_without_boxes", list(problems["image_ids_without_boxes"]),
                f"{_n(problems['images_without_boxes'], 'image has', 'images have')} no annotation (background images)")
        dropped_all = problems.get("image_ids_every_box_dropped", [])
        if dropped_all:
            add("images_every_box_dropped", list(dropped_all),
                f"{_n(len(dropped_all), 'image has', 'images have')} annotations but not one usable box: "
                "build-tfrecords leaves them out (written without boxes, the objects in them would be trained as "
                "background): " + _examples(problems.get("files_every_box_dropped") or
                                             [f"image id {i}" for i in dropped_all]))
        if problems.get("iscrowd_not_understood"):
            odd = problems["iscrowd_not_understood"]
            add("iscrowd_not_understood", list(odd), iscrowd_message(odd))
        if problems.get("ignored_as_crowd"):
            add("ignored_as_crowd", list(problems["ignored_as_crowd"]), ignored_message(problems["ignored_as_crowd"]))
        unreviewed = problems.get("device_pre_annotations")
        if unreviewed:
            add("device_pre_annotations", [], pre_annotation_message(unreviewed), sum(unreviewed.values()))
        scored = problems.get("annotations_with_score")
        if scored:
            add("annotations_with_score", [], score_message(scored), scored["count"])
    return flags


# ----------------------------------------------------------------------------- entry point


def _as_paths(value: Any) -> List[Path]:
    """None, one path or several, as a list of paths."""
    if value is None:
        return []
    if isinstance(value, (str, os.PathLike)):
        return [Path(value)]
    return [Path(v) for v in value]


def _shown_paths(paths: List[Path]) -> "str | List[str] | None":
    return None if not paths else str(paths[0]) if len(paths) == 1 else [str(p) for p in paths]


def frames_flag(where: str, images: Sequence[Tuple[Any, int, str]], split_of: Dict[Any, str],
                fix: str) -> Tuple[Dict[str, Any], List[Dict[str, Any]]]:
    """``(frames_next_to_train, flags)`` for images of several splits: a flag when half or more of the
    val/test video frames have a neighbouring frame in train (near copies inflate held-out scores)."""
    from edge_trash.tfrecords.split_units import frames_leak_message, frames_next_to_train, split_frame_by_frame

    near = frames_next_to_train(images, split_of)
    if not split_frame_by_frame(near):
        return near, []
    return near, [{"kind": "frames_next_to_train", "where": where, "count": near["next_to_train"],
                   "message": frames_leak_message(near, fix), "items": [near["example"]]}]


def variants_flag(where: str, names: Sequence[Tuple[Any, str]], split_of: Dict[Any, str],
                  fix: str) -> Tuple[Dict[str, Any], List[Dict[str, Any]]]:
    """``(variants_in_several_splits, flags)``: a flag when a photo's Roboflow variants (augmented
    copies, ``IMG_1_jpg.rf.<hash>.jpg``) sit in more than one split."""
    found = variants_across_splits(names, split_of)
    if not found["photos"]:
        return found, []
    return found, [{"kind": "variants_in_several_splits", "where": where, "count": found["photos"],
                    "message": variants_leak_message(found, fix), "items": [found["example"]]}]


def copies_flag(dataset: CocoDataset, copies: List[List[Any]]) -> List[Dict[str, Any]]:
    """A flag for pictures named by more than one image entry (identical files), saying how many sit in
    more than one of an export's split files (a --keep-splits build would score val/test on copies)."""
    if not copies:
        return []
    by_id = {im.id: im for im in dataset.images}
    split_of_source = [src.split for src in dataset.sources]
    splits_of = [{split_of_source[by_id[i].source] for i in g} for g in copies]
    across = [found for found in splits_of if len(found) > 1 and None not in found]
    shown = [" = ".join(by_id[i].file_name for i in g[:3]) + (" = ..." if len(g) > 3 else "") for g in copies]
    return [{"kind": "duplicate_images", "where": "annotations", "count": len(copies),
             "message": f"{_n(len(copies), 'picture appears', 'pictures appear')} under more than one image entry "
                        f"({sum(len(g) for g in copies)} entries): {_examples(shown, 4)}"
                        + (f"; {len(across)} of them in more than one split file (a --keep-splits build scores "
                           "val/test on pictures it trained on: remove the copies)" if across else "")
                        + "; build-tfrecords keeps the copies of one picture in one split",
             "items": [list(g) for g in copies]}]


def pictures_across_splits(pictures: Dict[str, List[Tuple[str, str]]], keep_splits: Optional[bool] = None
                           ) -> Tuple[int, List[Dict[str, Any]]]:
    """``(count, flags)`` for records of several splits holding the same stored picture (equal
    ``image/key/sha256``): val/test scores then count pictures the model trained on. ``keep_splits``: whether
    the build kept the annotation files' splits (None: unknown, another converter's records); without it, the
    copies were files that differ (one photo at two sizes) until the shrink made them alike."""
    by_key: Dict[str, List[Tuple[str, str]]] = {}
    for split, keys in pictures.items():
        for name, key in keys:
            by_key.setdefault(key, []).append((split, name))
    shared = [entries for entries in by_key.values() if len({split for split, _ in entries}) > 1]
    if not shared:
        return 0, []
    shown = []
    for entries in shared:  # one of each split first: the example shows the splits it is in
        firsts = list({split: (split, name) for split, name in reversed(entries)}.values())[::-1]
        ordered = firsts + [e for e in entries if e not in firsts]
        shown.append(" = ".join(f"{name} ({split})" for split, name in ordered[:3])
                     + (" = ..." if len(entries) > 3 else ""))
    fix = ("remove the copies (files that differ, such as one photo at two sizes, came out alike only once shrunk, "
           "so the build could not keep them in one split)" if keep_splits is False else
           "remove the copies, or build without --keep-splits (copies of one picture stay in one split)")
    return len(shared), [{
        "kind": "pictures_in_several_splits", "where": "tfrecords", "count": len(shared),
        "message": f"{_n(len(shared), 'picture is', 'pictures are')} stored in more than one split: "
                   f"{_examples(shown, 3)}; val/test scores count pictures the model trained on: {fix}",
        "items": [[name for _, name in entries] for entries in shared]}]


def analyze(annotations: "Optional[os.PathLike | str | Sequence[os.PathLike | str]]" = None,
            images: "Optional[os.PathLike | str | Sequence[os.PathLike | str]]" = None,
            tfrecords: "Optional[os.PathLike | str]" = None, *, out: "os.PathLike | str",
            thresholds: Optional[Thresholds] = None, plots: bool = True,
            progress: bool = False, workers: int = 1, max_pixels: int = DEFAULT_MAX_PIXELS) -> Dict[str, Any]:
    """Analyse a COCO file (with its images if given) and/or a build's TFRecords.

    ``workers`` processes read the images (the statistics are the same with any number);
    an image of more than ``max_pixels`` is unreadable here as build-tfrecords refuses it.

    Writes ``OUT/stats.json``, ``OUT/report.md`` and PNG plots; returns the stats
    (the content of ``stats.json``). Raises :class:`AnalyzeError` for a bad option
    and :class:`~edge_trash.tfrecords.coco.CocoFormatError` for an unreadable JSON.
    TensorFlow is never imported (records are read by ``tfrecord_file`` and ``tf_example``).
    """
    start = time.monotonic()
    th = thresholds or Thresholds()
    th.validate()
    if images is not None and annotations is None:
        raise AnalyzeError("--images needs --annotations (image file names come from the JSON)")
    if annotations is None and tfrecords is None:
        raise AnalyzeError("give --annotations A.json, --tfrecords DIR, or both")
    if workers < 1:
        raise AnalyzeError(f"--workers must be at least 1, got {workers}")
    ann_files, image_dirs = _as_paths(annotations), _as_paths(images)
    if image_dirs and len(image_dirs) not in (1, len(ann_files)):
        raise AnalyzeError(f"give one --images folder for all {len(ann_files)} --annotations files, or one per "
                           f"file in the same order (got {len(image_dirs)})")
    for folder in image_dirs:
        problem = images_folder_problem(folder)
        if problem:
            raise AnalyzeError(problem)
    if len(image_dirs) == 1:
        image_dirs = image_dirs * len(ann_files)
    shards = find_shards(Path(tfrecords)) if tfrecords is not None else {}
    out_dir = Path(out)
    check_can_create(out_dir)  # made only when the report is written: a run that fails leaves no folder

    stats: Dict[str, Any] = {
        "version": STATS_VERSION,
        "inputs": {"annotations": _shown_paths(ann_files), "images": _shown_paths(_as_paths(images)),
                   "tfrecords": str(tfrecords) if tfrecords is not None else None},
        "thresholds": asdict(th),
        "flags": [],
        "annotations": None,
        "tfrecords": None,
    }
    sections: List[Tuple[str, Dict[str, Any], List[str]]] = []
    pngs: Dict[str, bytes] = {}  # the plots, written with stats.json and report.md at the end

    def finish(source: Source, problems: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
        s = describe(source, th)
        if problems is not None:
            s["problems"] = problems
        stats["flags"].extend(find_flags(source.name, s, th, problems))
        names: List[str] = []
        if plots:
            if progress and sys.stderr is not None:  # a second or more per source, after its bar has finished
                print(f"analyze: drawing the plots of {source.name} ...", file=sys.stderr, flush=True)
            sqrt_areas = [math.sqrt(max(0.0, b.width * b.height)) for b in source.boxes]
            drawn = draw_plots(source.name, s, sqrt_areas, th)
            pngs.update(drawn)
            names = list(drawn)
        s["plots"] = names
        sections.append((source.name, s, names))
        return s

    if ann_files:
        size_of, paths = None, None
        if image_dirs:
            from edge_trash.tfrecords.images import read_displayed_size

            paths = source_images(image_dirs, ann_files)
            size_of = lambda name, k: read_displayed_size(paths[k].resolve(name)[0])  # noqa: E731
        dataset = load_coco_files(ann_files, size_of=size_of)
        source = _json_source(dataset, paths, progress, workers, max_pixels)
        stats["annotations"] = {"file": _shown_paths(ann_files), "categories": len(dataset.categories),
                                "sources": [src.as_report() for src in dataset.sources],
                                **finish(source, annotation_problems(dataset))}
        if paths:
            names = {im.id: im.file_name for im in dataset.images}
            stats["annotations"]["duplicate_images"] = [{"image_ids": list(g), "file_names": [names[i] for i in g]}
                                                        for g in source.copies]
            stats["flags"].extend(copies_flag(dataset, source.copies))
        split_names = [src.split for src in dataset.sources]
        if "train" in split_names and None not in split_names and len(set(split_names)) > 1:  # an export's splits
            entries = [(im.id, im.source, im.file_name, im.video) for im in dataset.images]
            split_of = {im.id: split_names[im.source] for im in dataset.images}
            near, flags = frames_flag("annotations", entries, split_of,
                                      "build-tfrecords without --keep-splits splits whole runs of frames")
            stats["annotations"]["frames_next_to_train"] = near
            stats["flags"].extend(flags)
            found, flags = variants_flag("annotations", [(im.id, im.file_name) for im in dataset.images], split_of,
                                         "build-tfrecords without --keep-splits keeps a photo's variants in one split")
            stats["annotations"]["variants_in_several_splits"] = found
            stats["flags"].extend(flags)
    if shards:
        root = Path(tfrecords)  # type: ignore[arg-type]
        labels_file = root / "labels.txt"
        from edge_trash.models.run_dir import RunDirError, labels_text  # UTF-8, with a BOM, or UTF-16

        try:
            text = labels_text(labels_file) if labels_file.is_file() else ""
        except RunDirError as exc:
            raise AnalyzeError(str(exc)) from None
        labels = [ln.strip() for ln in text.splitlines() if ln.strip()]
        background = background_line_problem(labels, labels_file)
        if background:
            stats["flags"].append({"kind": "labels_background_line", "where": "tfrecords", "count": 1,
                                   "message": background, "items": [labels[0]]})
        stats["tfrecords"] = {"dir": str(root), "labels": labels, "splits": {},
                              # what a later build into that folder compares to tell this report stale
                              "shard_bytes": {f.name: f.stat().st_size for files in shards.values() for f in files}}
        planned = _planned_records(root)
        # (position, split index, file name) of every record: a frame number in two splits is two videos
        records: List[Tuple[Any, int, str]] = []
        split_of: Dict[Any, str] = {}
        pictures: Dict[str, List[Tuple[str, str]]] = {}
        for index, (split, files) in enumerate(shards.items()):
            total = sum(planned[f.name] for f in files) if all(f.name in planned for f in files) else None
            source = _record_source(split, files, labels, read_images=True, progress=progress, total=total)
            stats["tfrecords"]["splits"][split] = {"shards": [f.name for f in files], **finish(source)}
            if source.zero_ids is not None:
                zero = source.zero_ids
                stats["flags"].append({
                    "kind": "class_ids_from_0", "where": source.name, "count": zero["records"],
                    "message": class_ids_from_0_problem(zero["first"], zero["records"], len(source.images),
                                                        zero["highest"], len(labels)),
                    "items": [zero["first"]]})
            pictures[split] = source.picture_keys
            for im in source.images:
                split_of[len(records)] = split
                records.append((len(records), index, im.file_name))
        folds = [split for split in shards if split.startswith("fold")]
        if folds:  # each fold is held out by one run and trained on by the others: the tail of them all
            counts: Counter = Counter()
            for split in folds:
                counts.update({c["name"]: c["instances"] for c in stats["tfrecords"]["splits"][split]["classes"]})
            tiny: Counter = Counter()
            for split in folds:
                tiny.update({c["name"]: c["tiny"] for c in stats["tfrecords"]["splits"][split]["classes"]})
            where = f"tfrecords/{folds[0]}..{folds[-1]}"
            stats["flags"].extend(long_tail_flags(where, [{"name": n, "instances": k} for n, k in counts.items()], th))
            stats["flags"].extend(tiny_class_flags(where, [{"name": n, "instances": k, "tiny": tiny[n]}
                                                           for n, k in counts.items()], th,
                                                   stats["tfrecords"]["splits"][folds[0]]["frame"]))
        shared, flags = pictures_across_splits(pictures, _built_keeping_splits(root))
        stats["tfrecords"]["pictures_in_several_splits"] = shared
        stats["flags"].extend(flags)
        if "train" in shards and len(shards) > 1:
            near, flags = frames_flag("tfrecords", records, split_of,
                                      "rebuild with build-tfrecords (--split-by auto splits whole runs of frames)")
            stats["tfrecords"]["frames_next_to_train"] = near
            stats["flags"].extend(flags)
            found, flags = variants_flag("tfrecords", [(pos, name) for pos, _, name in records], split_of,
                                         "rebuild with build-tfrecords (--split-by auto keeps a photo's variants "
                                         "in one split)")
            stats["tfrecords"]["variants_in_several_splits"] = found
            stats["flags"].extend(flags)

    report = render_report(stats, sections)
    stats["seconds"] = _r(time.monotonic() - start, 2)
    out_dir.mkdir(parents=True, exist_ok=True)
    # one set: an interrupted run leaves the earlier report, stats and plots together, not new plots beside them
    # (backslashreplace: a file name listed from disk may hold bytes that were not UTF-8)
    write_files_together(out_dir, {**pngs, "stats.json": (json.dumps(stats, indent=1, allow_nan=False, default=str)
                                                          + "\n").encode("utf-8"),
                                   "report.md": report.encode("utf-8", "backslashreplace")},
                         remove=stale_plots(out_dir, list(pngs)))
    return stats
