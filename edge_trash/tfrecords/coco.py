"""Read a COCO annotation file and sort its records into usable and rejected ones.

A file whose structure is wrong (not JSON, no ``images`` list, a category without a
name...) raises :class:`CocoFormatError` naming the file and the field. A single bad
record (an annotation with a NaN box, an unknown category, an image entry without a
file name) never stops the conversion: it is kept out and reported with its reason.
"""

from __future__ import annotations

import json
import math
import posixpath
import re
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple
from urllib.parse import unquote, urlsplit

from edge_trash.tfrecords.name_encodings import readable_text, unnameable_reason
from edge_trash.tfrecords.other_formats import EXPORT_COCO, other_binary_format, other_json_format, other_text_format

# Reads an image's displayed size from its file, given its file_name and the index of the
# annotation file it came from: ``((width, height), "")`` or ``(None, reason)``.
SizeReader = Callable[[str, int], Tuple[Optional[Tuple[int, int]], str]]


def clean_name(text: str) -> str:
    """A class name as we store it: Unicode NFC, control characters removed, runs of
    whitespace (tabs, line breaks) as one space, no leading or trailing space, lone
    surrogates decoded (:func:`readable_text`), invisible format characters removed (a
    zero-width space, a byte-order mark, a left-to-right mark: 'Can' and '\ufeffCan' would
    be two classes that print alike; the joiner inside an emoji sequence stays).
    ``labels.txt`` holds one name per line, so a line break inside a name would shift
    every later class id on the device."""
    text = unicodedata.normalize("NFC", readable_text(text))
    text = "".join(" " if unicodedata.category(ch) == "Cc" else "" if unicodedata.category(ch) == "Cf"
                   and ch != ZERO_WIDTH_JOINER else ch for ch in text)
    return " ".join(text.split())


ZERO_WIDTH_JOINER = "\u200d"  # joins emoji into one (a format character that is part of the name)


class CocoFormatError(ValueError):
    """The annotation file as a whole cannot be read; the message names the file and field."""


@dataclass(frozen=True)
class Category:
    """A category as the source file defines it."""

    id: int
    name: str
    supercategory: str
    text_id: Optional[str] = None  # the id as the file wrote it when that was text, not a number


@dataclass(frozen=True)
class ImageRecord:
    """An image entry; ``width``/``height`` are the displayed (EXIF-rotated) size."""

    id: int
    file_name: str
    width: int
    height: int
    source: int = 0  # index of the annotation file it came from (several --annotations)
    video: Optional[Tuple[str, int]] = None  # (video_id, frame number) when the entry says (COCO-VID, TAO, MOT)
    split: Optional[str] = None  # train/val/test when the entry says: a 'split' field, or a split folder in file_name
    # (used by --keep-splits only for files whose own name names no split)


def split_of_entry(entry: Dict[str, Any]) -> Optional[str]:
    """The split an image entry names: its ``split`` field (``"valid"``), else the innermost folder of its own
    ``file_name`` named by a split word alone (``images/train/a.jpg``, ``val2017/b.jpg``; not ``test_site/``,
    nor a ``coco_url``'s path: LVIS draws both its splits from COCO's folders); None when it names none."""
    from edge_trash.tfrecords.split_names import split_of_path, split_word

    given, name = entry.get("split"), entry.get("file_name")
    if isinstance(given, str) and given.strip():
        return split_word(given)
    return split_of_path(name, whole=True) if isinstance(name, str) else None


VIDEO_FRAME_KEYS = ("frame_id", "frame_index", "frame_number", "frame")


def video_of_entry(entry: Dict[str, Any], image_id: int) -> Optional[Tuple[str, int]]:
    """``(video, frame number)`` from an image entry's ``video_id`` and ``frame_id`` (or ``frame_index``,
    as TAO writes it; without one, the image id orders the frames), else None."""
    video = entry.get("video_id")
    if video is None or isinstance(video, (dict, list)):
        return None
    frame = next((entry[k] for k in VIDEO_FRAME_KEYS if is_integral(entry.get(k))), image_id)
    return str(video), int(frame)


@dataclass
class BoxRecord:
    """An annotation box in source pixels ``(x, y, w, h)``, clipped to its image."""

    annotation_id: int  # renumbered, unique (1..N in file order)
    source_id: Any  # the id as the file gave it
    image_id: int
    category_id: int
    x: float
    y: float
    w: float
    h: float
    iscrowd: int
    clipped: bool = False
    pre_annotation: bool = False  # marked "pre_annotation": true: a device's detection, not reviewed yet


@dataclass
class Rejected:
    """A record left out, with the reason a user can act on."""

    kind: str  # "image" or "annotation"
    record_id: Any
    image_id: Any
    reason: str
    file_name: Optional[str] = None

    def __post_init__(self) -> None:
        self.record_id, self.image_id = _reportable(self.record_id), _reportable(self.image_id)


def _reportable(value: Any) -> Any:
    """An id as the file gave it, or its ``repr`` when JSON cannot hold it (``NaN``,
    ``Infinity``), so that report.json can list the record."""
    if value is None or type(value) in (int, str):
        return value
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError):
        return repr(value)
    return value


def repeated_categories_note(ids: Sequence[Any]) -> Optional[str]:
    """The note on categories listed twice alike (``ids``), or None when there are none."""
    if not ids:
        return None
    from edge_trash.terminal import examples

    return (f"{len(ids)} {'category is' if len(ids) == 1 else 'categories are'} listed twice alike (id, name and "
            f"supercategory; two exports joined by hand?), each kept once: ids {examples(list(ids))}")


def bbox_from_mask_note(ids: Sequence[Any]) -> Optional[str]:
    """The note on annotations (``ids``) whose 'bbox' could not be read, boxed from their segmentation."""
    if not ids:
        return None
    from edge_trash.terminal import examples

    return (f"{len(ids)} {'annotation has' if len(ids) == 1 else 'annotations have'} a 'bbox' that is not "
            "[x, y, width, height] (too few or many values, text, an object): the box around "
            f"{'its' if len(ids) == 1 else 'their'} segmentation was used instead (annotation ids {examples(list(ids))})")


@dataclass
class CocoDataset:
    """The usable content of an annotation file plus everything that was left out."""

    path: Path
    categories: List[Category]
    images: List[ImageRecord]
    boxes: List[BoxRecord]
    rejected_images: List[Rejected] = field(default_factory=list)
    rejected_boxes: List[Rejected] = field(default_factory=list)
    boxes_total: int = 0
    boxes_clipped: int = 0
    boxes_from_segmentation: int = 0  # no 'bbox' (or [] or [0, 0, 0, 0]): the box came from the mask
    boxes_rotated: int = 0  # CVAT's rotated boxes ('attributes.rotation'), kept as the upright box around them
    duplicate_annotation_ids: List[Any] = field(default_factory=list)
    # image ids that entries give to different files: none of those images is written (a box's photo is unknown)
    image_ids_of_several_files: List[Any] = field(default_factory=list)
    # category_id values of annotations that no category has -> how many annotations use each
    unknown_category_ids: Dict[Any, int] = field(default_factory=dict)
    # image id -> what was done when the JSON had no usable width/height (read from the file)
    size_notes: Dict[int, str] = field(default_factory=dict)
    # image id -> where its file name came from when the entry had no 'file_name' (LVIS: its 'coco_url')
    name_notes: Dict[int, str] = field(default_factory=dict)
    sources: List[Any] = field(default_factory=list)  # coco_merge.MergedSource, one per annotation file
    boxes_read_as_corners: int = 0  # kept boxes whose 4 numbers also read as a valid [x1, y1, x2, y2]
    areas_of_corners: int = 0  # kept boxes whose 'area' is (x2 - x1)(y2 - y1) of them read as corners, not w x h
    boxes_marked_as_corners: int = 0  # kept boxes whose annotation says "bbox_mode": 0 (Detectron2's XYXY_ABS)
    text_image_ids: Dict[str, int] = field(default_factory=dict)  # image ids written as text -> our number
    # image id -> how many annotations it had, all dropped as unusable: not a background example
    images_with_every_box_dropped: Dict[int, int] = field(default_factory=dict)
    iscrowd_not_understood: List[Any] = field(default_factory=list)  # annotation ids; their boxes read as not crowd
    ignored_as_crowd: List[Any] = field(default_factory=list)  # annotation ids with "ignore": 1, carried as crowd
    # the 'score' of each kept box that has one (predictions?), but a queue export's (pre_annotations())
    scores: List[float] = field(default_factory=list)
    # annotation ids of masks (RLE) with iscrowd 1 in a file with CVAT's per-annotation 'attributes'
    crowd_masks: List[Any] = field(default_factory=list)
    # ids of categories given twice alike (two exports joined by hand): each kept once
    repeated_categories: List[Any] = field(default_factory=list)
    # annotation ids whose 'bbox' is not [x, y, width, height] ([10, 10, 50], text): the box came from the mask
    bbox_unreadable_boxed_from_mask: List[Any] = field(default_factory=list)
    # image id -> (right, bottom): the furthest its boxes that run past the JSON's size reach, before clipping
    boxes_reach_past: Dict[int, Tuple[float, float]] = field(default_factory=dict)

    def reach_inside_turned(self, image: ImageRecord) -> Optional[Tuple[float, float]]:
        """How far right and down ``image``'s boxes reach when some run past its JSON size yet all fit inside
        that size turned a quarter turn (its width and height swapped?); else None."""
        reach = self.boxes_reach_past.get(image.id)
        if reach is None or image.width == image.height:
            return None
        if reach[0] > image.height + CLIP_TOLERANCE_PX or reach[1] > image.width + CLIP_TOLERANCE_PX:
            return None  # past the turned size too: not a swap
        return reach

    def swapped_size_reason(self, image: ImageRecord) -> Optional[str]:
        """The reason to skip ``image`` when its file is its JSON size turned a quarter turn and its boxes say
        the JSON's width and height are swapped: they run past the JSON's size and fit inside the file's. None
        when they do not say so (the photo may have lost its EXIF rotation instead)."""
        reach = self.reach_inside_turned(image)
        if reach is None:
            return None
        right, bottom = reach
        return (f"its file is the JSON's {image.width}x{image.height} turned a quarter turn, and its boxes reach "
                f"x {right:g}, y {bottom:g}: past the JSON's size, inside the turned one. The JSON's width and height "
                "look swapped (a converter that wrote the height as the width?): swap them in the JSON and run again "
                "(the boxes past the JSON's size were clipped or dropped against it)")

    def bbox_from_mask_note(self) -> Optional[str]:
        """A note when boxes were taken from the segmentation because their 'bbox' could not be read."""
        return bbox_from_mask_note(self.bbox_unreadable_boxed_from_mask)

    def repeated_categories_note(self) -> Optional[str]:
        """A note when the file lists categories twice alike, else None."""
        return repeated_categories_note(self.repeated_categories)

    def id_notes(self) -> Dict[int, str]:
        """image id -> a note for each image whose id the file wrote as text."""
        return {n: f"image id {t!r} is {'beyond 64-bit integers' if is_integral(t) else 'text'}: numbered {n} "
                   "(splits.json and image/source_id hold the number)"
                for t, n in self.text_image_ids.items()}

    def bbox_format_warning(self) -> Optional[str]:
        """A warning when the boxes look written as ``[x1, y1, x2, y2]`` instead of COCO's
        ``[x, y, width, height]``: many run past their image (the far corner read as a
        size), while nearly all read as corners inside it. None when they look right."""
        n = len(self.boxes) - self.boxes_from_segmentation
        if self.boxes_marked_as_corners:
            said = (f"{self.boxes_marked_as_corners} of {n} annotations say \"bbox_mode\": 0, Detectron2's XYXY_ABS: "
                    "their 'bbox' is written as [x1, y1, x2, y2] corners")
        elif n >= AREA_CHECK_MIN_BOXES and self.areas_of_corners >= CORNER_CHECK_AS_CORNERS * n:
            said = (f"{self.areas_of_corners} of {n} boxes have an 'area' of (x2 - x1) x (y2 - y1) with their 4 "
                    "numbers read as [x1, y1, x2, y2] corners, not width x height: the file's 'bbox' is probably "
                    "written as corners")
        elif n >= CORNER_CHECK_MIN_BOXES and self.boxes_clipped >= CORNER_CHECK_CLIPPED * n \
                and self.boxes_read_as_corners >= CORNER_CHECK_AS_CORNERS * n:
            said = (f"{self.boxes_clipped} of {n} boxes run past their image, yet {self.boxes_read_as_corners} read "
                    "as [x1, y1, x2, y2] corners inside it: the file's 'bbox' is probably written as corners")
        else:
            return None
        return (said + ", not COCO's [x, y, width, height]. Convert it (width = x2 - x1, height = y2 - y1) and run "
                "again, or every box is trained too large")

    def category_ids_warning(self) -> Optional[str]:
        """A warning when the annotations number their classes from 0 and the categories from 1 (a YOLO
        conversion), or the other way round (categories from 0, as labelme2coco, FiftyOne and Detectron2 number
        them, and annotations from 1): one end id is in no category, the other end's category has no annotation,
        and every id between is used. Read as they are, the boxes of the unknown id are dropped and every other
        box takes the class listed next to its own."""
        ids = sorted(c.id for c in self.categories)
        used = Counter(b.category_id for b in self.boxes)
        n = len(ids)
        if n < 2 or len(self.unknown_category_ids) != 1:
            return None
        unknown, count = next(iter(self.unknown_category_ids.items()))
        if ids == list(range(1, n + 1)) and unknown == 0:
            shift, empty, inner = 1, n, range(1, n)  # annotations from 0: add 1
        elif ids == list(range(n)) and unknown == n:
            shift, empty, inner = -1, 0, range(1, n)  # annotations from 1: take 1 away
        else:
            return None
        # every inner id in use, the empty end in none, and the unknown id used about as often as the rarest class:
        # a stray label or two beside a class not labelled yet is not a shifted file (the fix would shift every
        # correct label)
        if empty in used or set(used) != set(inner) or count < 2 or 2 * count < min(used.values()):
            return None
        names = {c.id: c.name for c in self.categories}
        paths = [str(src.path) for src in self.sources] or [str(self.path)]
        from edge_trash.terminal import shell_word

        change, suffix = ("add 1 to", "_ids_from_1") if shift > 0 else ("take 1 from", "_ids_from_0")
        fix = ("python -c \"import json, sys; d = json.load(open(sys.argv[1])); "
               f"[a.update(category_id=a['category_id'] {'+' if shift > 0 else '-'} 1) for a in d['annotations']]; "
               "json.dump(d, open(sys.argv[2], 'w'))\" "
               f"{shell_word(paths[0])} {shell_word(str(Path(paths[0]).with_suffix('')) + suffix + '.json')}")
        if shift > 0:
            seems = "the annotations seem to number their classes from 0 and the categories from 1 (a YOLO conversion?)"
            example = f"(a {names[2]!r} box as {names[1]!r})"
        else:
            seems = "the categories seem to number their classes from 0 and the annotations from 1"
            example = f"(a {names[0]!r} box as {names[1]!r})"
        return (f"{seems}: {count} annotations use category_id {unknown}, which no category has, and none uses "
                f"{empty} ({names[empty]!r}); read as they are, every other box is written as the class listed just "
                f"{'before' if shift > 0 else 'after'} its own {example}. If so, {change} each annotation's "
                "category_id" + (f" ({fix})" if len(paths) == 1 else f" in each of {', '.join(paths)}")
                + " and build again")

    def pre_annotations(self, trained: Optional[Callable[[BoxRecord], bool]] = None) -> Dict[str, int]:
        """Annotation file -> its boxes still marked ``"pre_annotation": true`` (a device's detections, not reviewed
        yet): all kept boxes, or those ``trained`` says go into the records (a class map may drop some)."""
        source_of = {im.id: im.source for im in self.images}
        marked = Counter(source_of[b.image_id] for b in self.boxes
                         if b.pre_annotation and (trained is None or trained(b)))
        paths = [str(src.path) for src in self.sources] or [str(self.path)]
        return {paths[k]: n for k, n in sorted(marked.items())}

    def crowd_masks_warning(self) -> Optional[str]:
        """A warning when masks carry ``iscrowd`` 1 in a file with CVAT's ``attributes`` on its annotations: CVAT
        (through Datumaro) exports every mask so, whether it covers a crowd or one object, and training leaves
        crowd regions out, so the objects drawn as masks are not learned. Without CVAT's marks, the same warning
        when every usable box (two or more) is a crowd region, as other tools' mask exports give."""
        paths = [str(src.path) for src in self.sources] or [str(self.path)]
        from edge_trash.terminal import shell_word

        def fix(which: str, suffix: str) -> str:  # the command that sets iscrowd 0 on the annotations `which` keeps
            return ("python -c \"import json, sys; d = json.load(open(sys.argv[1])); "
                    f"[a.update(iscrowd=0) for a in d['annotations'] if a.get('iscrowd'){which}]; "
                    "json.dump(d, open(sys.argv[2], 'w'))\" "
                    f"{shell_word(paths[0])} {shell_word(str(Path(paths[0]).with_suffix('')) + suffix)}")

        if not self.crowd_masks:
            if len(self.boxes) < 2 or not all(b.iscrowd for b in self.boxes):
                return None
            # every box a crowd region: an export that marks each object so (masks from a tool other than CVAT)
            every = fix("", "_as_objects.json")
            return (f"every one of the {len(self.boxes)} usable boxes is a crowd region (iscrowd 1): training and "
                    "COCO's AP leave crowd regions out, so nothing would be learned. If each is one object, as an "
                    "export that marks every mask so writes them, set iscrowd to 0"
                    + (f" ({every})" if len(paths) == 1 else f" in each of {', '.join(paths)}") + " and build again")
        masks = fix(" and isinstance(a.get('segmentation'), dict)", "_masks_as_objects.json")
        n = len(self.crowd_masks)
        ids = ", ".join(map(str, self.crowd_masks[:5])) + (f" and {n - 5} more" if n > 5 else "")
        return (f"{n} {'annotation is a mask' if n == 1 else 'annotations are masks'} with iscrowd 1 "
                f"(annotation ids {ids}), as CVAT exports every mask, whether it covers a crowd or one "
                "object: training leaves crowd regions out, so these objects are not learned. If each is one object, "
                "set their iscrowd to 0" + (f" ({masks})" if len(paths) == 1 else f" in each of {', '.join(paths)}")
                + " and build again; or export from CVAT with polygons instead of masks")

    def boxes_by_image(self) -> Dict[int, List[BoxRecord]]:
        """Boxes grouped by image id (every image present, possibly with an empty list), each image's
        in the order of their ids as the file gave them, then category and place: the same boxes make
        the same record bytes whatever the order of the file's ``annotations`` list."""
        out: Dict[int, List[BoxRecord]] = {im.id: [] for im in self.images}
        for box in self.boxes:
            out[box.image_id].append(box)
        for boxes in out.values():
            boxes.sort(key=_box_order)
        return out


_POSITION_KEY = re.compile(r"annotations\[\d+\]")  # the key of an annotation without an id: its place


def _box_order(box: BoxRecord) -> Tuple[Any, ...]:
    given = box.source_id
    number = isinstance(given, (int, float)) and not isinstance(given, bool) and math.isfinite(given)
    if number:
        first: Tuple[Any, ...] = (0, given, "")
    elif isinstance(given, str) and _POSITION_KEY.fullmatch(given):
        first = (2, 0, "")  # no id: ordered by what the box is, not where the file put it
    else:
        first = (1, 0, str(given))
    return first + (box.category_id, box.x, box.y, box.w, box.h, box.iscrowd)


_DIGITS = re.compile(r"\s*-?[0-9]+\s*")
# bbox_format_warning: at least this many boxes, this share clipped, this share valid as corners
CORNER_CHECK_MIN_BOXES, CORNER_CHECK_CLIPPED, CORNER_CHECK_AS_CORNERS = 20, 0.2, 0.9
AREA_CHECK_MIN_BOXES = 5  # boxes whose 'area' tells corners from a size: the evidence is per box
CLIP_TOLERANCE_PX = 1e-3  # a box past its image by no more than this is rounding, not counted as clipped


def is_integral(value: Any) -> bool:
    """Whether ``value`` is an id or size we read as an integer: an integer, an integral
    float (``3.0``) or a string of digits (``"3"``, as some exporters write ids)."""
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return True
    if isinstance(value, str):
        return _DIGITS.fullmatch(value) is not None
    return isinstance(value, float) and math.isfinite(value) and value.is_integer()


def as_int(value: Any) -> Optional[int]:
    """An id as an integer (3, 3.0 and "3" alike) when :func:`is_integral`, else None
    (fast for plain ints)."""
    if type(value) is int:
        return value
    return int(value) if is_integral(value) else None


def _id_text(value: Any) -> str:
    return str(int(value)) if is_integral(value) else str(value).strip()


# The compressions an annotation file may come in: (its first bytes, its name, the module that unpacks it).
PACKED = ((b"\x1f\x8b", "gzip", "gzip"), (b"\xfd7zXZ\x00", "xz", "lzma"), (b"BZh", "bzip2", "bz2"))


def annotation_file_missing(path: Path) -> CocoFormatError:
    """The error for an annotation file that is not there."""
    return CocoFormatError(f"{path}: file not found (give the COCO annotation JSON with --annotations)")


def read_json_text(path: Path) -> str:
    """The text of an annotation file as exporters write it: UTF-8 with or without a
    byte-order mark, UTF-16 with one (PowerShell's ``>``), or any of these compressed with gzip,
    xz or bzip2 (``.json.gz``, ``.json.xz``, ``.json.bz2``)."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise annotation_file_missing(path)
    except IsADirectoryError:
        inside = sorted(p.relative_to(path).as_posix() for p in [*path.glob("*.json"), *path.glob("*/*.json")])
        listed = (f"it holds {', '.join(inside[:6])}{', ...' if len(inside) > 6 else ''}" if inside
                  else "it holds no .json file (nor do its sub-folders)")
        raise CocoFormatError(f"{path}: a folder, not an annotation file; {listed}: give the COCO JSON with "
                              "--annotations (repeat it to merge several, such as a Roboflow export's train, valid "
                              "and test)")
    except OSError as exc:
        raise CocoFormatError(f"{path}: cannot read the file: {exc}")
    for magic, kind, module in PACKED:
        if raw.startswith(magic):
            import importlib

            try:
                raw = importlib.import_module(module).decompress(raw)
            except Exception as exc:  # noqa: BLE001 - each module has its own error (zlib.error, LZMAError, ...)
                raise CocoFormatError(f"{path}: a {kind} file that cannot be unpacked ({exc}); is the download "
                                      "complete?")
            break
    binary = other_binary_format(path, raw)
    if binary:
        raise CocoFormatError(f"{path}: {binary}")
    encoding = "utf-16" if raw[:2] in (b"\xff\xfe", b"\xfe\xff") else "utf-8-sig"
    try:
        return raw.decode(encoding)
    except UnicodeDecodeError as exc:
        raise CocoFormatError(f"{path}: cannot read the file as {'UTF-16' if encoding == 'utf-16' else 'UTF-8'} "
                              f"text ({exc}); save it as UTF-8 JSON")


_RLE_MARK = "\0rle"  # set on an annotation whose dropped segmentation was a mask; no JSON key can clash


def _without_unused_mask(obj: Dict[str, Any]) -> Dict[str, Any]:
    """An object as the JSON parser builds it, without a ``segmentation`` that a usable ``bbox`` makes
    unneeded: the polygons go as each annotation is parsed (they are most of a COCO file: 263 MB of
    75-point polygons took 1.6 GB as a tree, 0.5 GB this way, in half the time)."""
    if "segmentation" in obj and not _needs_segmentation(obj.get("bbox")):
        if isinstance(obj["segmentation"], dict):  # a mask (RLE): CVAT writes each with iscrowd 1, crowd or not
            obj[_RLE_MARK] = True
        obj[_SEGMENTATION_SKETCH] = _sketch(obj.pop("segmentation"))
    return obj


_SEGMENTATION_SKETCH = "\0seg"  # a small int standing for the dropped segmentation, to tell copies from others


def _sketch(segmentation: Any) -> int:
    """A hash of a segmentation's first points (or a mask's first counts): two annotations with the same box but
    other masks differ in it, and a copy does not; a few coordinates, so the polygons need not be kept."""
    try:
        if isinstance(segmentation, dict):
            return hash(str(segmentation.get("counts"))[:64])
        first = segmentation[0] if isinstance(segmentation, list) and segmentation else segmentation
        return hash((len(segmentation), tuple(first[:8]) if isinstance(first, list) else repr(first)[:64]))
    except TypeError:  # something unhashable inside: too odd to call anything a copy of it
        return id(segmentation)


def _read_json(path: Path) -> Dict[str, Any]:
    text = read_json_text(path)
    if not text.strip():
        raise CocoFormatError(f"{path}: the file is empty (an export or download that did not finish?); export "
                              "the annotations again in COCO JSON format")
    try:  # Python's json accepts the bare NaN / Infinity tokens TACO uses
        data = json.loads(text, object_hook=_without_unused_mask)
    except RecursionError:
        raise CocoFormatError(f"{path}: nested too deeply to read (about a thousand '[' or '{{' inside each other): "
                              "not a COCO file; export the annotations again in COCO JSON format") from None
    except json.JSONDecodeError as exc:
        other = other_text_format(text)
        if other:
            raise CocoFormatError(f"{path}: {other}, not COCO JSON. {EXPORT_COCO}") from None
        raise CocoFormatError(
            f"{path}: not valid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}. "
            "Export the annotations again in COCO JSON format.")
    except ValueError as exc:  # an integer of more than 4300 digits (Python's limit on int("..."))
        raise CocoFormatError(f"{path}: cannot be read: {exc.args[0].split(';')[0]} (a number of thousands of "
                              "digits); fix that value in the file") from None
    other = other_json_format(data)
    if other:
        raise CocoFormatError(f"{path}: {other}, not COCO JSON. {EXPORT_COCO}")
    if not isinstance(data, dict):
        raise CocoFormatError(f"{path}: the top level must be a JSON object with 'images', "
                              f"'annotations' and 'categories', got {type(data).__name__}")
    for key in ("images", "annotations", "categories"):
        if key not in data:
            raise CocoFormatError(f"{path}: missing the top-level key '{key}' (a COCO file needs "
                                  "'images', 'annotations' and 'categories')")
        if not isinstance(data[key], list):
            raise CocoFormatError(f"{path}: '{key}' must be a list, got {type(data[key]).__name__}")
    return data


def text_id(value: Any) -> Optional[str]:
    """An id written as text that is not a number (``"000a1249af2bc5f0"``), stripped, or a number beyond
    64-bit integers (Model Garden reads ``image/source_id`` as an int64), as text; else None."""
    if isinstance(value, str) and value.strip() and not is_integral(value):
        return value.strip()
    if is_integral(value) and not -2 ** 63 <= int(value) < 2 ** 63:
        return str(int(value))
    return None


def _first_free_id(records: List[Any]) -> int:
    """The number after the largest numeric ``id`` among ``records`` (1 when there is none):
    where ids written as text start."""
    return max((int(r["id"]) for r in records if isinstance(r, dict) and is_integral(r.get("id"))
                and text_id(r["id"]) is None), default=0) + 1


def _parse_categories(path: Path, raw: List[Any], repeats: Optional[List[Any]] = None) -> List[Category]:
    """The file's categories; ids written as text (``"can"``) are numbered after the
    largest numeric id, in file order (the text is kept in ``text_id``). A category given
    again with its id, name and supercategory (two exports joined by hand) is kept once, its
    id added to ``repeats``; an id given again with another name is an error."""
    cats: List[Category] = []
    seen: Dict[Any, str] = {}
    first: Dict[Any, Tuple[str, Any]] = {}
    first_free = _first_free_id(raw)
    numbered = 0
    for i, c in enumerate(raw):
        where = f"{path}: categories[{i}]"
        if not isinstance(c, dict):
            raise CocoFormatError(f"{where}: expected an object with 'id' and 'name', got {c!r}")
        text = text_id(c.get("id"))
        if text is None and ("id" not in c or not is_integral(c["id"])):
            raise CocoFormatError(f"{where}.id: expected an integer, got {c.get('id')!r}")
        if not isinstance(c.get("name"), str) and is_integral(c.get("name")):  # "name": 5 (YOLO class indices)
            c = {**c, "name": str(int(c["name"]))}
        if not isinstance(c.get("name"), str) or not clean_name(c["name"]):
            raise CocoFormatError(f"{where}.name: expected a non-empty string, got {c.get('name')!r}; give the "
                                  "category a name, or remove it when no annotation uses it")
        key: Any = text if text is not None else int(c["id"])
        if key in seen and first[key] == (clean_name(c["name"]), c.get("supercategory")):
            if repeats is not None:
                repeats.append(c["id"])
            continue
        if key in seen:
            raise CocoFormatError(f"{where}.id: id {key!r} is used twice ('{seen[key]}' and '{c['name']}'); "
                                  "category ids must be unique")
        seen[key] = c["name"]
        first[key] = (clean_name(c["name"]), c.get("supercategory"))
        name, sup = clean_name(c["name"]), c.get("supercategory")
        sup = clean_name(sup) if isinstance(sup, str) else ""
        if text is not None:
            key, numbered = first_free + numbered, numbered + 1
        cats.append(Category(key, name, sup or name, text))
    if not cats:
        raise CocoFormatError(f"{path}: 'categories' is empty; at least one category is needed")
    return cats


def _name_from_url(im: Dict[str, Any]) -> Optional[str]:
    """The file name an entry without ``file_name`` gives in its ``coco_url`` (LVIS writes
    ``http://images.cocodataset.org/val2017/000000397133.jpg`` and no file_name): the URL's path,
    ``val2017/000000397133.jpg``, which is where COCO's own folders hold that photo."""
    url = im.get("coco_url")
    if not isinstance(url, str) or "://" not in url:
        return None
    try:
        path = urlsplit(url.strip()).path
    except ValueError:
        return None
    path = unquote(path).strip("/")
    return path or None


def _parse_images(raw: List[Any], size_of: Optional[SizeReader] = None, sources: Optional[List[int]] = None,
                  shared: Optional[Dict[Any, str]] = None
                  ) -> Tuple[List[ImageRecord], List[Rejected], Dict[int, str], Dict[str, int], Dict[int, str]]:
    """``(images, rejected, size_notes, text_ids, name_notes)``. Ids written as text are numbered
    after the largest numeric id, in file order (``text_ids``: text -> number); an entry without
    ``file_name`` takes its ``coco_url``'s path (``name_notes`` say so); entries with an id of ``shared``
    (``{id: reason}``) are rejected."""
    images: List[ImageRecord] = []
    rejected: List[Rejected] = []
    size_notes: Dict[int, str] = {}
    name_notes: Dict[int, str] = {}
    text_ids: Dict[str, int] = {}
    first_free = _first_free_id(raw)
    seen: set = set()
    shared = shared or {}  # ids of several files (see _ids_of_several_files): each with its reason
    for i, im in enumerate(raw):
        if not isinstance(im, dict):
            rejected.append(Rejected("image", f"images[{i}]", None, f"not an object: {im!r}"[:200]))
            continue
        iid, name = im.get("id"), im.get("file_name")
        text = text_id(iid)
        if text is None and not is_integral(iid):
            rejected.append(Rejected("image", f"images[{i}]", iid, f"'id' must be an integer, got {iid!r}",
                                     name if isinstance(name, str) else None))
            continue
        shown = text if text is not None else int(iid)  # the id as reports name it
        if shown in shared:
            rejected.append(Rejected("image", shown, shown, shared[shown], name if isinstance(name, str) else None))
            continue
        duplicate = text in text_ids if text is not None else shown in seen
        if duplicate:
            rejected.append(Rejected("image", shown, shown, "duplicate image id: the same entry twice, the first is "
                                     "used", name if isinstance(name, str) else None))
            continue
        iid = first_free + len(text_ids) if text is not None else int(iid)
        if name is None:
            name = _name_from_url(im)
            if name is not None:
                name_notes[iid] = (f"no 'file_name': read {name!r}, the path of its 'coco_url' (LVIS writes no "
                                   "file_name; COCO's folders hold each photo at that path)")
        if name is None:
            rejected.append(Rejected("image", shown, shown, "'file_name' is missing (and no 'coco_url' gives one): "
                                     "write each image's file name, relative to the images folder, into the JSON"))
            continue
        if not isinstance(name, str) or not name.strip():
            rejected.append(Rejected("image", shown, shown, f"'file_name' must be a non-empty string, got {name!r}",
                                     name if isinstance(name, str) else None))  # '' as given; 12345 in the reason
            continue
        unnameable = unnameable_reason(name)
        if unnameable:
            rejected.append(Rejected("image", shown, shown, f"'file_name' {name!r} holds {unnameable}, which no "
                                     "file name can: write the name in the JSON as it is on disk", name))
            continue
        w, h = im.get("width"), im.get("height")
        if not (is_integral(w) and is_integral(h) and int(w) > 0 and int(h) > 0):
            given = "missing" if w is None and h is None else f"{w!r} x {h!r}"
            if size_of is None:
                rejected.append(Rejected("image", shown, shown, f"'width'/'height' must be positive integers, got "
                                         f"{given}: fix them in the JSON, or give the images folder so they are "
                                         "read from the file", name))
                continue
            size, why = size_of(name, sources[i] if sources else 0)
            if size is None:
                rejected.append(Rejected("image", shown, shown, f"'width'/'height' are {given} in the JSON and the "
                                         f"size cannot be read from the file: {why}", name))
                continue
            w, h = size
            size_notes[iid] = f"'width'/'height' are {given} in the JSON: used {w}x{h} read from the file"
        seen.add(iid)
        if text is not None:
            text_ids[text] = iid
        images.append(ImageRecord(iid, name, int(w), int(h), sources[i] if sources else 0,
                                  video_of_entry(im, iid), split_of_entry(im)))
    return images, rejected, size_notes, text_ids, name_notes


_NUMBER = (int, float)  # exact types: JSON numbers; True/False are not numbers


def _coordinate(value: Any) -> Optional[float]:
    """A polygon coordinate: a finite JSON number, or one written as text (``"12.5"``)."""
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            return None
    if type(value) not in _NUMBER or not math.isfinite(value):
        return None
    return float(value)


def _is_pair(value: Any) -> bool:
    return isinstance(value, list) and len(value) == 2 and not any(isinstance(v, (list, dict)) for v in value)


def _polygons(segmentation: List[Any]) -> List[Any]:
    """The polygons of a segmentation list as COCO nests them (``[[x1, y1, x2, y2, ...], ...]``), also
    from the shapes converters write: one flat ``[x1, y1, ...]``, or ``[x, y]`` pairs (one polygon
    ``[[x1, y1], [x2, y2], ...]`` or several ``[[[x1, y1], ...], ...]``)."""
    if segmentation and not any(isinstance(v, (list, dict)) for v in segmentation):
        return [segmentation]  # one flat polygon
    if len(segmentation) >= 3 and all(_is_pair(v) for v in segmentation):
        return [[c for pair in segmentation for c in pair]]
    return [[c for pair in poly for c in pair] if isinstance(poly, list) and len(poly) >= 3
            and all(_is_pair(v) for v in poly) else poly for poly in segmentation]


def bbox_from_segmentation(segmentation: Any) -> Optional[List[float]]:
    """``[x, y, w, h]`` around a COCO polygon list or RLE mask, or None when it holds no shape
    (see :func:`_polygons` for the polygon shapes read)."""
    if isinstance(segmentation, list):
        xs: List[float] = []
        ys: List[float] = []
        for poly in _polygons(segmentation):
            if not isinstance(poly, list) or len(poly) < 6 or len(poly) % 2:
                continue
            values = [_coordinate(v) for v in poly]
            if None in values:
                continue
            xs.extend(values[0::2])  # type: ignore[arg-type]
            ys.extend(values[1::2])  # type: ignore[arg-type]
        if not xs:
            return None
        return [min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys)]
    if isinstance(segmentation, dict) and "counts" in segmentation and "size" in segmentation:
        from pycocotools import mask as mask_utils

        rle = segmentation
        if isinstance(rle["counts"], list):  # uncompressed RLE (iscrowd regions)
            h, w = rle["size"]
            rle = mask_utils.frPyObjects(rle, h, w)
        box = [float(v) for v in mask_utils.toBbox(rle)]
        return box if box[2] > 0 and box[3] > 0 else None
    return None


def _mask_size_mismatch(segmentation: Any, image: ImageRecord) -> Optional[str]:
    """Why a mask (RLE) cannot give this image's box: its ``size`` is not the image's ``[height, width]``
    (written as ``[width, height]``, or of another resolution); None for a polygon or a mask that fits."""
    if not isinstance(segmentation, dict) or not isinstance(segmentation.get("size"), (list, tuple)):
        return None
    size = list(segmentation["size"])
    if size == [image.height, image.width]:
        return None
    if size == [image.width, image.height]:
        return (f"its mask's 'size' {size!r} is [width, height] of the {image.width}x{image.height} image, where "
                "COCO's RLE takes [height, width]: the box read from it would be wrong; export the masks again")
    return (f"its mask's 'size' {size!r} is not the image's [height, width], [{image.height}, {image.width}]: a box "
            "read from it would be in other pixels; export the masks again at the image's size")


def _parse_box(ann: Dict[str, Any], image: ImageRecord
               ) -> Tuple[Optional[Tuple[float, float, float, float]], bool, str, str]:
    """Validate and clip one bbox; returns ``(box, clipped, reason_if_rejected, origin)``,
    ``origin`` being ``"bbox"``, ``"rotated"`` (a CVAT rotated box, made upright) or
    ``"segmentation"`` (no usable bbox: taken from the mask)."""
    bbox = ann.get("bbox")
    origin = "bbox"
    if ann.get("segmentation") and _needs_segmentation(bbox):
        origin = "segmentation"
        given = ("no 'bbox'" if bbox is None else f"'bbox' {bbox!r} is a placeholder" if _placeholder_bbox(bbox)
                 else f"'bbox' {bbox!r} is not [x, y, width, height]")
        mismatch = _mask_size_mismatch(ann["segmentation"], image)
        if mismatch:
            return None, False, f"{given}, and {mismatch}", origin
        try:
            bbox = bbox_from_segmentation(ann["segmentation"])
        except Exception as exc:  # a malformed RLE must not stop the file
            return None, False, f"{given}, and its 'segmentation' cannot be read: {exc}", origin
        if bbox is None:
            return None, False, f"{given}, and its 'segmentation' holds no polygon or mask to take one from", origin
    if isinstance(bbox, (list, tuple)) and len(bbox) == 5:
        return None, False, (f"'bbox' has 5 values, {bbox!r}: a rotated box [x, y, width, height, angle]? Its "
                             "angle's unit and centre are not standard: export the boxes upright, as polygons, or "
                             "with CVAT's attributes.rotation (read here)"), origin
    if bbox is None:  # no key, or null, and no segmentation either
        return None, False, ("no 'bbox' [x, y, width, height] and no 'segmentation' to take one from: give the "
                             "annotation its box in pixels"), origin
    if not isinstance(bbox, (list, tuple)) or len(bbox) != 4:
        return None, False, f"'bbox' must be a list [x, y, width, height], got {bbox!r}", origin
    x, y, w, h = bbox
    if not (type(x) in _NUMBER and type(y) in _NUMBER and type(w) in _NUMBER and type(h) in _NUMBER):
        try:  # numbers written as text ("12.5"), as some spreadsheet-made files have them
            x, y, w, h = (float(v) if type(v) is str else v for v in bbox)
        except ValueError:
            return None, False, f"'bbox' values must be numbers, got {bbox!r}", origin
        if not all(type(v) in _NUMBER for v in (x, y, w, h)):  # (a bool is not a number here)
            return None, False, f"'bbox' values must be numbers, got {bbox!r}", origin
    if not (math.isfinite(x) and math.isfinite(y) and math.isfinite(w) and math.isfinite(h)):
        return None, False, f"'bbox' has NaN or Infinity: {bbox!r}", origin
    x, y, w, h = float(x), float(y), float(w), float(h)
    if w <= 0 or h <= 0:
        drawn_back = ("; drawn from its right or bottom edge? COCO's form of it is [x + width, y + height, -width, "
                      "-height] with the negative ones" if min(w, h) < 0 and max(w, h) != 0 else "")
        return None, False, f"'bbox' has zero or negative size: {bbox!r}{drawn_back}", origin
    angle = box_rotation(ann) if origin == "bbox" else 0.0  # a mask's box is upright already
    if angle:
        x, y, w, h = upright_box(x, y, w, h, angle)
        origin = "rotated"
    if max(x + w, y + h) <= 1.0 and min(image.width, image.height) > 2:  # [0, 0, 1, 1] too: the whole photo
        return None, False, (f"'bbox' {bbox!r} looks normalised to 0..1: COCO boxes are in pixels (multiply x "
                             f"and width by the image width {image.width}, y and height by its height "
                             f"{image.height})"), origin
    x0, y0 = max(0.0, x), max(0.0, y)
    x1, y1 = min(float(image.width), x + w), min(float(image.height), y + h)
    # past the image by more than rounding (Label Studio's percentages end 1e-13 px past the edge)
    clipped = min(x, y) < -CLIP_TOLERANCE_PX or x + w > image.width + CLIP_TOLERANCE_PX \
        or y + h > image.height + CLIP_TOLERANCE_PX
    if x1 - x0 < 1.0 or y1 - y0 < 1.0:
        if min(w, h) < 1.0 and x1 >= x0 and y1 >= y0:  # (x + 1e-300 is x: a width that vanishes in the sum)
            return None, clipped, (f"'bbox' {bbox!r} is less than a pixel {'wide' if w < 1.0 else 'high'}: too "
                                   "small to learn from"), origin
        left = "" if x1 <= x0 or y1 <= y0 else " (less than 1 px left after clipping)"
        return None, clipped, f"'bbox' {bbox!r} lies outside the {image.width}x{image.height} image{left}", origin
    return (x0, y0, x1 - x0, y1 - y0), clipped, "", origin


def crowd_flag(value: Any) -> Optional[int]:
    """``iscrowd`` as 0 or 1: a number, a bool, or those written as text (``"1"``, ``"true"``);
    None for a value that says neither."""
    if isinstance(value, str):
        value = {"1": 1, "true": 1, "yes": 1, "0": 0, "false": 0, "no": 0, "": 0}.get(value.strip().lower(), value)
    if value is None or value in (0, 1):  # (True == 1 and False == 0)
        return int(bool(value))
    return None


def box_rotation(ann: Dict[str, Any]) -> float:
    """The angle in degrees of a rotated box (CVAT writes it as ``attributes.rotation``
    beside the box before rotation, since COCO has no angle); 0 when there is none or
    it leaves the upright box unchanged (a multiple of 180)."""
    attributes = ann.get("attributes")
    if not isinstance(attributes, dict):
        return 0.0
    angle = attributes.get("rotation")
    if type(angle) is str:
        try:
            angle = float(angle)
        except ValueError:
            return 0.0
    if type(angle) not in _NUMBER or not math.isfinite(angle) or angle % 180 == 0:
        return 0.0
    return float(angle)


def upright_box(x: float, y: float, w: float, h: float, degrees: float) -> Tuple[float, float, float, float]:
    """``[x, y, w, h]`` of the upright box around the box ``x, y, w, h`` turned ``degrees``
    about its centre (either way: the enclosing box is the same)."""
    c, s = abs(math.cos(math.radians(degrees))), abs(math.sin(math.radians(degrees)))
    width, height = w * c + h * s, w * s + h * c
    return x + (w - width) / 2, y + (h - height) / 2, width, height


def _placeholder_bbox(bbox: Any) -> bool:
    """No box at all: missing, ``[]`` or ``[0, 0, 0, 0]`` (what some mask-first tools write),
    so a segmentation, when there is one, gives the box."""
    return bbox is None or (isinstance(bbox, list) and (not bbox or (
        len(bbox) == 4 and all(type(v) in _NUMBER and v == 0 for v in bbox))))


def _malformed_bbox(bbox: Any) -> bool:
    """A ``bbox`` given but not as ``[x, y, width, height]`` numbers (nor numbers as text), nor a
    placeholder: ``[10, 10, 50]``, ``"10 10 50 40"``, ``{"x": ...}``, a 5-value rotated box; a
    segmentation, when there is one, then gives the box."""
    if bbox is None or _placeholder_bbox(bbox):
        return False
    if not isinstance(bbox, list) or len(bbox) != 4:
        return True
    for v in bbox:
        if type(v) in _NUMBER:
            continue
        if type(v) is not str:
            return True
        try:
            float(v)
        except ValueError:
            return True
    return False


def _needs_segmentation(bbox: Any) -> bool:
    """Whether a segmentation has to give the box: ``bbox`` is a placeholder or malformed (see
    :func:`_placeholder_bbox` and :func:`_malformed_bbox`); four numbers, nearly every box, decided first,
    as the JSON reader asks it of every annotation."""
    if type(bbox) is list and len(bbox) == 4:
        x, y, w, h = bbox
        if type(x) in _NUMBER and type(y) in _NUMBER and type(w) in _NUMBER and type(h) in _NUMBER:
            return x == 0 and y == 0 and w == 0 and h == 0
    return _placeholder_bbox(bbox) or _malformed_bbox(bbox)


def _file_key(name: Any) -> Any:
    """A ``file_name`` as a path to compare (``./a.jpg``, ``a.jpg`` and ``sub\\..\\a.jpg`` alike; any case)."""
    return posixpath.normpath(name.replace("\\", "/")).lower() if isinstance(name, str) else name


def _same_file(a: Any, b: Any) -> bool:
    """Whether two spellings of a ``file_name`` name one file: equal as paths, or one the other's tail
    (``a.jpg``, ``images/a.jpg`` and ``/content/drive/data/images/a.jpg``); ``train/1.jpg`` and ``val/1.jpg``
    are two."""
    a, b = _file_key(a), _file_key(b)
    if not (isinstance(a, str) and isinstance(b, str)):
        return a == b
    return a == b or a.endswith("/" + b) or b.endswith("/" + a)


def _ids_of_several_files(raw: List[Any]) -> Dict[Any, str]:
    """Image ids (as reports name them) that entries give to different files, each with the reason none of
    them is written: a box with that id cannot be placed (two COCO files joined by hand number both from 1)."""
    names: Dict[Any, List[Any]] = {}
    for im in raw:
        if isinstance(im, dict):
            iid = im.get("id")
            text = text_id(iid)
            key = text if text is not None else int(iid) if is_integral(iid) else None
            if key is not None:
                names.setdefault(key, []).append(im.get("file_name"))
    shared = {}
    for key, given in names.items():
        files: List[Any] = []
        for name in given:  # one spelling of each file
            if not any(_same_file(name, seen) for seen in files):
                files.append(name)
        if len(files) > 1:
            shown = ", ".join(repr(n) for n in files[:3]) + (f" and {len(files) - 3} more" if len(files) > 3 else "")
            shared[key] = (f"duplicate image id: {len(files)} different files ({shown}) have this id, so which of them "
                           "each box with it is on cannot be told, and none is written; give each image its own id "
                           "(two COCO files joined into one? give each as its own --annotations: clashing ids are "
                           "renumbered)")
    return shared


def load_coco(path: "str | Path", size_of: Optional[SizeReader] = None) -> CocoDataset:
    """Read and validate a COCO detection file (see :func:`load_coco_files`)."""
    return load_coco_files([path], size_of)


def _same_but_id(a: Dict[str, Any], b: Dict[str, Any]) -> bool:
    """Whether two annotations hold the same fields and values, their ids aside."""
    return len(a) == len(b) and all(k == "id" or (k in b and b[k] == v) for k, v in a.items())


def load_coco_files(paths: "Sequence[str | Path]", size_of: Optional[SizeReader] = None) -> CocoDataset:
    """Read, validate and (when there are several) merge COCO detection files.

    ``size_of`` (given the ``file_name`` and the index of its file) supplies an image's
    displayed size when the JSON's ``width``/``height`` are missing or unusable;
    without it such images are rejected with that reason. Several files are merged by
    :func:`~edge_trash.tfrecords.coco_merge.merge_coco` (categories by name, clashing
    ids shifted by a recorded offset).

    Raises :class:`CocoFormatError` when a file as a whole is unusable. Bad
    images and annotations are listed in ``rejected_images`` / ``rejected_boxes``.
    Boxes are clipped to their image; annotation ids are renumbered 1..N in file
    order, and ids the file used more than once are listed in
    ``duplicate_annotation_ids`` (those records are all kept, unless one repeats
    another in every field: then the copy is a rejected ``duplicate box``).
    """
    from edge_trash.tfrecords.coco_merge import merge_coco

    if not paths:
        raise CocoFormatError("no annotation file given")
    given: Dict[Path, Path] = {}  # resolved -> as first given
    for p in map(Path, paths):
        first = given.get(p.resolve())
        if first is not None:
            also = "" if first == p else f" (also as {first})"
            raise CocoFormatError(f"{p}: given twice as --annotations{also}; give each file once, or its images "
                                  "would be counted twice")
        given[p.resolve()] = p
    files = []
    for p in paths:
        data = _read_json(Path(p))
        _parse_categories(Path(p), data["categories"])  # each file's own errors name that file
        files.append((Path(p), data))
    data, image_source, sources = merge_coco(files)
    path = Path(paths[0])
    repeated_categories: List[Any] = []
    categories = _parse_categories(path, data["categories"], repeated_categories)
    cat_ids = {c.id for c in categories}
    text_cat_ids = {c.text_id: c.id for c in categories if c.text_id is not None}
    shared = _ids_of_several_files(data["images"])
    images, rejected_images, size_notes, text_ids, name_notes = _parse_images(data["images"], size_of, image_source,
                                                                              shared)
    by_id = {im.id: im for im in images}
    # ids of rejected image entries, as text: "7" for 7, 7.0 and "7"; "IMG_1" for "IMG_1"
    rejected_ids = {_id_text(r.image_id) for r in rejected_images if r.image_id is not None}
    rejected_names = {_id_text(r.image_id): r.file_name for r in rejected_images if r.image_id is not None}

    boxes: List[BoxRecord] = []
    rejected_boxes: List[Rejected] = []
    id_count: Dict[Any, int] = {}
    clipped_count = 0
    from_segmentation = 0
    rotated = 0
    as_corners = 0
    areas_of_corners = 0
    marked_as_corners = 0
    odd_crowd: List[Any] = []  # annotation ids whose iscrowd says neither 0 nor 1 (read as 0)
    ignored: List[Any] = []  # annotation ids marked "ignore": 1 (CityPersons, VisDrone, TinyPerson conversions)
    scores: List[float] = []  # a model's confidence, on annotations that are predictions (pseudo-labels)
    crowd_masks: List[Any] = []  # annotation ids of masks with iscrowd 1 and CVAT's 'attributes'
    bbox_from_mask: List[Any] = []  # annotation ids whose 'bbox' is not [x, y, w, h]: boxed from the segmentation
    reach_past: Dict[int, Tuple[float, float]] = {}  # image id -> how far right and down its boxes past it reach
    dropped_of_image: Counter = Counter()  # image id -> its annotations dropped as unusable
    unknown_cats: Counter = Counter()  # a category_id no category has -> its annotations
    # (image, class, crowd, box) -> the first annotation with them: one equal to it in all but its id is a copy
    first_of_box: Dict[Tuple[int, int, int, Tuple[float, ...]], Dict[str, Any]] = {}
    for i, ann in enumerate(data["annotations"]):
        if not isinstance(ann, dict):
            rejected_boxes.append(Rejected("annotation", f"annotations[{i}]", None,
                                           f"not an object: {ann!r}"[:200]))
            continue
        aid, iid, cid = ann.get("id"), ann.get("image_id"), ann.get("category_id")
        key = aid if isinstance(aid, (int, str)) and not isinstance(aid, bool) else f"annotations[{i}]"
        id_count[key] = id_count.get(key, 0) + 1
        image = by_id.get(as_int(iid))  # type: ignore[arg-type]
        text = text_id(iid) if image is None and text_ids else None
        if text is not None:
            image = by_id.get(text_ids.get(text))  # type: ignore[arg-type]
        if image is None:
            skipped = iid is not None and _id_text(iid) in rejected_ids
            why = "its image was skipped" if skipped else f"unknown image_id {iid!r} (no entry in 'images')"
            rejected_boxes.append(Rejected("annotation", key, iid, why,
                                           rejected_names.get(_id_text(iid)) if skipped else None))
            continue
        text = text_id(cid) if text_cat_ids else None  # the fast path skips it for files with numeric ids
        cid = as_int(cid) if text is None else text_cat_ids.get(text)
        if cid not in cat_ids:
            unknown_cats[cid if cid is not None else repr(ann.get("category_id"))] += 1
            rejected_boxes.append(Rejected("annotation", key, iid,
                                           f"unknown category_id {ann.get('category_id')!r} (not in 'categories')",
                                           image.file_name))
            dropped_of_image[image.id] += 1
            continue
        box, clipped, reason, origin = _parse_box(ann, image)
        raw = ann.get("bbox")
        if (clipped or box is None) and origin == "bbox" and isinstance(raw, list) and len(raw) == 4 \
                and all(type(v) in _NUMBER and math.isfinite(v) for v in raw) and raw[2] > 0 and raw[3] > 0:
            right, bottom = raw[0] + raw[2], raw[1] + raw[3]
            if right > image.width + CLIP_TOLERANCE_PX or bottom > image.height + CLIP_TOLERANCE_PX:
                had = reach_past.get(image.id, (0.0, 0.0))
                reach_past[image.id] = (max(had[0], right), max(had[1], bottom))
        if box is None:
            rejected_boxes.append(Rejected("annotation", key, iid, reason, image.file_name))
            dropped_of_image[image.id] += 1
            continue
        clipped_count += int(clipped)
        rotated += int(origin == "rotated")
        from_segmentation += int(origin == "segmentation")
        if origin == "segmentation" and _malformed_bbox(raw):
            bbox_from_mask.append(key)
        if origin != "segmentation" and all(type(v) in _NUMBER for v in raw):  # x2 > x1, y2 > y1 inside: corners?
            corners = raw[0] < raw[2] <= image.width and raw[1] < raw[3] <= image.height
            as_corners += int(corners)
            area = ann.get("area")
            if corners and type(area) in _NUMBER and area > 0:  # the converter's own area, of the box it meant
                corner_area, size_area = (raw[2] - raw[0]) * (raw[3] - raw[1]), raw[2] * raw[3]
                areas_of_corners += int(abs(area - corner_area) <= 0.001 * area + 0.5
                                        and abs(area - size_area) > 0.01 * area)
            marked_as_corners += int(ann.get("bbox_mode") == 0)
        crowd = crowd_flag(ann.get("iscrowd"))
        if crowd != 1 and "ignore" in ann and crowd_flag(ann["ignore"]) == 1:  # a region not to learn from
            crowd = 1
            ignored.append(key)
        elif crowd is None:
            odd_crowd.append(key)
        if crowd == 1 and isinstance(ann.get("attributes"), dict) and \
                (ann.get(_RLE_MARK) or isinstance(ann.get("segmentation"), dict)):
            crowd_masks.append(key)  # CVAT's (Datumaro's) export: a mask drawn around one object reads as a crowd
        score = ann.get("score")
        if score is not None and ann.get("pre_annotation") is not True:  # a queue export's: counted on their own
            score = _coordinate(score)  # a number, or one written as text ("0.87"), as some exporters write it
            if score is not None:
                scores.append(score)
        same = (image.id, cid, crowd or 0, tuple(box))
        first = first_of_box.setdefault(same, ann)
        if first is not ann and _same_but_id(first, ann):
            # exported twice (a merged or re-imported export): trained twice, and in val a copy never matched
            rejected_boxes.append(Rejected("annotation", key, iid,
                                           f"duplicate box: annotation {first.get('id')!r} again (every field the "
                                           "same but the id: exported twice); kept once", image.file_name))
            continue
        boxes.append(BoxRecord(annotation_id=0, source_id=key, image_id=image.id, category_id=cid,
                               x=box[0], y=box[1], w=box[2], h=box[3], iscrowd=crowd or 0, clipped=clipped,
                               # as `edge-trash queue export` writes them; a labelling tool drops the mark
                               pre_annotation=ann.get("pre_annotation") is True))
    for n, box in enumerate(boxes, start=1):
        box.annotation_id = n
    with_box = {box.image_id for box in boxes}
    duplicates = sorted((k for k, n in id_count.items() if n > 1), key=str)
    return CocoDataset(path=path, categories=categories, images=images, boxes=boxes,
                       rejected_images=rejected_images, rejected_boxes=rejected_boxes,
                       boxes_total=len(data["annotations"]), boxes_clipped=clipped_count,
                       repeated_categories=repeated_categories, bbox_unreadable_boxed_from_mask=bbox_from_mask,
                       boxes_reach_past=reach_past,
                       boxes_from_segmentation=from_segmentation, boxes_rotated=rotated,
                       duplicate_annotation_ids=duplicates,
                       image_ids_of_several_files=sorted(shared, key=lambda v: (isinstance(v, str), str(v).zfill(20))),
                       unknown_category_ids=dict(unknown_cats),
                       size_notes=size_notes, name_notes=name_notes,
                       sources=sources,
                       boxes_read_as_corners=as_corners, areas_of_corners=areas_of_corners,
                       boxes_marked_as_corners=marked_as_corners, text_image_ids=text_ids,
                       images_with_every_box_dropped={i: n for i, n in dropped_of_image.items() if i not in with_box},
                       iscrowd_not_understood=odd_crowd, ignored_as_crowd=ignored, scores=scores,
                       crowd_masks=crowd_masks)
