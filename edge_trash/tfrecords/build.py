"""``build-tfrecords`` as a library: COCO annotations and images in, sharded TFRecords out.

Every image and box of the source either reaches a record or is listed in
``report.json`` with its reason: ``boxes_total == boxes_written + len(boxes_dropped)``
and ``images_total == images_written + len(images_skipped)``. Every output is written
to a hidden temporary file, and they are renamed into place together once all are
complete, so a run that fails (a full disk, Ctrl-C) leaves OUT's earlier build as it
was and no half-written shard; the same inputs and seed give byte-identical outputs.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import stat
import statistics
import sys
from collections import Counter
from contextlib import closing
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, NamedTuple, Optional, Sequence, Tuple

from edge_trash.atomic_files import signals_held, write_bytes_atomic
from edge_trash.terminal import counted, examples  # (also imported from here by the CLIs and analyze)
from edge_trash.tfrecords.class_map import build_class_mapping, label_map_pbtxt, read_class_map
from edge_trash.tfrecords.coco import CocoDataset, annotation_file_missing, load_coco_files
from edge_trash.tfrecords.name_encodings import readable_text, utf8_text
from edge_trash.tfrecords.image_paths import (NOT_FOUND_WHY, SourceImages, default_images_folder, folders_of_several,
                                              missing_found_above, other_photos_of_one_name, source_images)
from edge_trash.tfrecords.images import (DEFAULT_MAX_PIXELS, MISMATCH_FIX, NO_EXIF_TURN, ImageJob, ImageResult,
                                         convert_image, file_reason, read_displayed_size)
from edge_trash.tfrecords.other_formats import images_folder_problem
from edge_trash.tfrecords.split_layout import BUILD_LOCK, COMMIT_JOURNAL, SHARD_RE
from edge_trash.tfrecords.split_units import (SPLIT_BY, SplitUnits, frames_next_to_train, identical_files,
                                              roboflow_original, split_units, variants_across_splits)
from edge_trash.tfrecords.splits import (SplitsJsonError, assign_folds, assign_splits, read_splits_json, shuffled,
                                         split_changes, split_keys)
from edge_trash.tfrecords.tf_example import ObjectBox, make_example_bytes
from edge_trash.tfrecords.tfrecord_file import TFRecordWriter
from edge_trash.tfrecords.workers import ordered_map


class BuildError(ValueError):
    """The build cannot start (bad option or unusable input); the message says what to fix."""


def _images_folder_hint(found_deeper: Counter, images_of_source: Counter,
                        image_dirs: List[Path]) -> Optional[Dict[str, Any]]:
    """``{folders, images}`` when, for an annotation file, at least half of its images were found
    in one folder below its ``--images``: the ``--images`` per annotation file (in order; its own
    where nothing better was found) that spares the search, and how many images that covers."""
    folders, covered = [], 0
    for k, given in enumerate(image_dirs):
        best = max(((n, folder) for (source, folder), n in found_deeper.items() if source == k), default=None)
        if best is not None and 2 * best[0] >= images_of_source[k]:
            folders.append(best[1])
            covered += best[0]
        else:
            folders.append(str(given))
    return {"folders": folders, "images": covered} if covered else None


def _images_folder_above_hint(missing: Mapping[int, Sequence[str]],
                              image_dirs: List[Path]) -> Optional[Dict[str, Any]]:
    """``{folders, images, missing}`` when, for an annotation file, at least half of the ``file_name`` entries not
    found under its ``--images`` (``missing``: source -> those names) are files under a folder above it (an
    ``--images`` given too deep, see :func:`~edge_trash.tfrecords.image_paths.missing_found_above`): that folder
    per annotation file (in order; its own ``--images`` where not), how many missing images they hold, and how
    many were missing in all. They were not read from there (it could be another photo of the same name)."""
    folders, covered = [], 0
    for k, given in enumerate(image_dirs):
        names = missing.get(k, [])
        above = missing_found_above(given, names) if names else None
        if above is not None:
            folders.append(str(above[0]))
            covered += above[1]
        else:
            folders.append(str(given))
    return {"folders": folders, "images": covered, "missing": sum(map(len, missing.values()))} if covered else None


def reason_kind(reason: str) -> str:
    """A skip or drop reason without its particulars (values, sizes, paths), to count alike ones together."""
    if reason.startswith(("cannot read ", "cannot open ")):  # "cannot read PATH: Permission denied"
        verb = " ".join(reason.split(" ")[:2])
        said = reason.split("; file_name ")[0]  # without the note of a file found under another name
        errno_said = re.search(r"\[Errno \d+\] ([^:;]*)", said)  # OSError's own words: the path may hold ": "
        why = errno_said.group(1) if errno_said else said.rpartition(": ")[2]
        why = re.sub(r"-?\d+(?:\.\d+)?", "…", why).strip()
        return f"{verb} ({why[:50]})" if why else verb
    kind = reason.split(": ")[0].split(" (")[0].split(", got ")[0]  # not the values the file gave
    if kind.startswith("unknown category_id "):  # the id itself says what is wrong (0: a 0-based file?)
        merged = re.match(r"unknown category_id '(\S+) \(not in the categories of ", reason)  # a merge's
        return f"unknown category_id {merged.group(1)} (not in its file's categories)" if merged else kind[:70]
    if kind == "file not found":
        why = next((why for phrase, why in NOT_FOUND_WHY if phrase in reason), None)
        if why:
            return f"{kind} ({why})"
    kind = re.sub(r"\s+", " ", re.sub(r"\[[^\]]*\]|(?<!\.)-?\d+(?:\.\d+)?(?:x\d+)?(?!\.\.)", "…", kind)).strip()  # 0..1 kept
    kind = re.sub(r", …$", "", kind)  # "'bbox' has 5 values, [...]": the box itself says nothing of the kind
    return kind if len(kind) <= 70 else kind[:70].rsplit(" ", 1)[0] + " …"  # cut between words


def every_box_dropped_reason(count: int) -> str:
    """Why an image whose annotations were all dropped is left out rather than kept as background."""
    return (f"every box was dropped ({counted(count, 'annotation', 'annotations')}, each in boxes_dropped with why): "
            "written without them, the objects in it would be trained as background; fix the boxes to keep it")


def iscrowd_message(annotation_ids: Sequence[Any]) -> str:
    """What the build summary and ``analyze`` say about annotations whose ``iscrowd`` was not understood."""
    return (f"{counted(len(annotation_ids), 'annotation has', 'annotations have')} an 'iscrowd' that is neither 0 "
            f"nor 1, read as 0 (not crowd): annotation ids {examples(annotation_ids)}")


def ignored_message(annotation_ids: Sequence[Any]) -> str:
    """What the build summary and ``analyze`` say about annotations marked ``"ignore": 1``."""
    return (f"{counted(len(annotation_ids), 'annotation is', 'annotations are')} marked \"ignore\": 1 (a region "
            "not to learn from), written with is_crowd 1 as COCO's evaluator and Model Garden's training read it: "
            f"annotation ids {examples(annotation_ids)}")


def score_summary(scores: Sequence[float]) -> Optional[Dict[str, Any]]:
    """``{count, min, median, max}`` of the annotations' ``score`` values (None without any)."""
    if not scores:
        return None
    return {"count": len(scores), "min": round(min(scores), 4), "median": round(statistics.median(scores), 4),
            "max": round(max(scores), 4)}


def score_message(summary: Dict[str, Any]) -> str:
    """What the build summary and ``analyze`` say about annotations that carry a ``score``."""
    carry = counted(summary["count"], "usable annotation carries", "usable annotations carry")
    return (f"{carry} a 'score' ({summary['min']:g} to "
            f"{summary['max']:g}, median {summary['median']:g}), as a model's predictions do (pseudo-labels, a "
            "results file inside a COCO dict): they are trained as ground truth; if they are predictions, keep "
            "only the confident ones in the file (or review them) before training")


def pre_annotation_message(files: Dict[str, int]) -> str:
    """What the build says about boxes still marked ``"pre_annotation": true`` (``{file: count}``)."""
    where = "; ".join(f"{counted(n, 'box', 'boxes')} in {name}" for name, n in files.items())
    return (f"{where} {'is' if sum(files.values()) == 1 else 'are'} still the device's detections "
            "(\"pre_annotation\": true, as `edge-trash queue export` writes them), trained as ground truth: correct "
            "them in a labelling tool (its export drops the mark), or delete the mark from the boxes you checked; "
            "--strict refuses them")


def split_counts(splits: Dict[str, Dict[str, int]]) -> str:
    """``"train 30 images / 95 boxes (2 crowd), val 1 image / 2 boxes"`` for ``{split: {images, boxes,
    crowd_boxes}}``."""
    return ", ".join(f"{name} {counted(s['images'], 'image', 'images')} / {counted(s['boxes'], 'box', 'boxes')}"
                     + (f" ({s['crowd_boxes']} crowd)" if s.get("crowd_boxes") else "") for name, s in splits.items())


def reasons_by_kind(reasons: Sequence[str], top: int = 6, where: str = "") -> str:
    """``"20x file not found; 3x 'bbox' has zero or negative size"``: the commonest kinds of reason, and how
    many more kinds (and records) there are, to be read ``where`` (``"in report.json"``), or, when every kind is
    shown, that each record is listed ``where``."""
    counts = Counter(reason_kind(r) for r in reasons).most_common()
    shown = "; ".join(f"{n}x {kind}" for kind, n in counts[:top])
    rest = counts[top:]
    if not rest:  # the kinds alone do not name the files: say where they are
        return shown + (f"; each listed {where}" if where else "")
    return shown + (f"; {counted(len(rest), 'more kind', 'more kinds')} ({sum(n for _, n in rest)}x)"
                    f"{' ' + where if where else ''}")


def _nothing_to_train_on(given: str, dataset: CocoDataset, mapping: Any) -> BuildError:
    """The error when no box survives but crowd regions (which training and COCO's AP leave out), with why the
    records were left out (the report is never written)."""
    drop_reasons: Dict[int, str] = mapping.drop_reasons
    why = []
    for what, rejected, total in (("image entries", dataset.rejected_images, len(dataset.rejected_images)
                                   + len(dataset.images)),
                                  ("boxes", dataset.rejected_boxes, dataset.boxes_total)):
        if rejected:
            first = rejected[0]
            why.append(f"{len(rejected)} of {total} {what} left out ({reasons_by_kind([r.reason for r in rejected], 3)}"
                       f"; the first, {first.record_id}: {first.reason})")
    if dataset.boxes and drop_reasons:
        why.append("every class was dropped by the class mapping (" + "; ".join(
            dict.fromkeys(drop_reasons.values())) + ")")
    crowd = sum(1 for b in dataset.boxes if b.iscrowd and mapping.target_of_category.get(b.category_id) is not None)
    if crowd:  # the fix command of a crowd export where there is one (every box in the file so, or CVAT's masks)
        left = "the one box left is a crowd region" if crowd == 1 else f"all {crowd} boxes left are crowd regions"
        why.append(dataset.crowd_masks_warning() or f"{left} (iscrowd 1: a pile, not one item), which training and "
                   "COCO's AP leave out: set iscrowd to 0 on the boxes that each outline one item")
    if not dataset.boxes_total:
        why.append(f"its 'annotations' list is empty ({counted(len(dataset.images), 'image entry', 'image entries')}"
                   " and no box): export the annotations again with their boxes (an export of images alone?)")
    return BuildError(f"{given}: no class has a usable box after validation and mapping; nothing to train on"
                      + (": " + "; ".join(why) if why else ""))


@dataclass
class BuildOptions:
    """Options of ``edge-trash build-tfrecords`` (see ``--help`` for each)."""

    annotations: "Path | Sequence[Path]"  # several files are merged (a Roboflow export's train/valid/test)
    images: "Optional[Path | Sequence[Path]]"  # one folder for all, one per file, or None: each file's folder
    out: Path
    class_map: Optional[Path] = None
    supercategories: bool = False
    min_instances: int = 1
    rare: str = "other"
    val_fraction: float = 0.15
    test_fraction: float = 0.1
    folds: int = 0
    max_size: int = 640
    max_pixels: int = DEFAULT_MAX_PIXELS
    quality: int = 90
    shard_size: int = 256
    workers: int = 1
    seed: int = 0
    strict: bool = False
    keep_splits: bool = False  # each file's split from its name or folder instead of a new split
    split_by: str = "auto"  # what moves between splits as one: see split_units

    def annotation_files(self) -> List[Path]:
        """The annotation files, as a list."""
        if isinstance(self.annotations, (str, os.PathLike)):
            return [Path(self.annotations)]
        return [Path(p) for p in self.annotations]

    def image_dirs(self) -> List[Path]:
        """The images folder of each annotation file, in the same order."""
        files = self.annotation_files()
        if self.images is None:
            return [default_images_folder(f)[0] for f in files]
        if isinstance(self.images, (str, os.PathLike)):
            return [Path(self.images)] * len(files)
        dirs = [Path(d) for d in self.images]
        if len(dirs) == 1:
            return dirs * len(files)
        if len(dirs) != len(files):
            raise BuildError(f"give one --images folder for all {len(files)} --annotations files, or one per "
                             f"file in the same order (got {len(dirs)})")
        return dirs

    def validate(self) -> None:
        """Reject a missing annotation file (:class:`~edge_trash.tfrecords.coco.CocoFormatError`), an images
        folder that is none and bad combinations of options (:class:`BuildError`), each with a message naming the
        file or the option."""
        for path in self.annotation_files():  # named before the images folder, which defaults to the file's own
            try:
                path.stat()
            except FileNotFoundError:
                raise annotation_file_missing(path) from None
            except OSError:  # a name too long, a folder this user may not enter: the reader names it
                pass
        for folder in dict.fromkeys(self.image_dirs()):
            problem = images_folder_problem(folder)
            if problem:
                raise BuildError(problem)
        if self.split_by not in SPLIT_BY:
            raise BuildError(f"--split-by must be one of {', '.join(SPLIT_BY)}, got {self.split_by!r}")
        if self.keep_splits and self.split_by != "auto":
            raise BuildError(f"--keep-splits and --split-by {self.split_by} do not combine: the files already fix "
                             "the splits")
        if self.keep_splits and self.folds:
            raise BuildError("--keep-splits and --folds do not combine: the files already fix the splits")
        if self.max_size < 32:
            raise BuildError(f"--max-size must be at least 32 px, got {self.max_size}")
        if not 1 <= self.quality <= 100:
            raise BuildError(f"--quality must be in 1..100, got {self.quality}")
        if self.shard_size < 1:
            raise BuildError(f"--shard-size must be at least 1, got {self.shard_size}")
        if self.workers < 1:
            raise BuildError(f"--workers must be at least 1, got {self.workers}")
        if self.folds == 1 or self.folds < 0:
            raise BuildError(f"--folds must be 0 (off) or at least 2, got {self.folds}")
        for name, fraction in (("--val-fraction", self.val_fraction), ("--test-fraction", self.test_fraction)):
            if not 0.0 <= fraction < 1.0:
                raise BuildError(f"{name} must be at least 0 and below 1, got {fraction}")
        if not (self.keep_splits or self.folds) and self.val_fraction + self.test_fraction >= 1.0:
            raise BuildError(f"--val-fraction {self.val_fraction} + --test-fraction {self.test_fraction} leave no "
                             "image to train on: their sum must be below 1")
        out = Path(self.out)
        if out.is_symlink() and not out.exists():
            raise BuildError(f"--out {out} is a symbolic link to {os.readlink(out)}, which does not exist: create "
                             "that folder, or choose another --out")


def shard_name(split: str, index: int, count: int) -> str:
    """``train-00000-of-00004.tfrecord``."""
    return f"{split}-{index:05d}-of-{count:05d}.tfrecord"


BIG_DATASET_IMAGES = 20_000  # from here the steps before the progress bar take seconds: each is announced
OUTPUT_FILES = ("labels.txt", "label_map.pbtxt", "splits.json", "report.json")  # beside the shards


def _json_bytes(obj: Any) -> bytes:
    return (json.dumps(obj, indent=2, sort_keys=False, allow_nan=False) + "\n").encode("utf-8")


# The temporary files a build writes into OUT: the spool and each output's ".NAME.tmp".
OUR_TEMP_RE = re.compile(r"^\.(records\.spool|(train|val|test|fold\d+)-\d{5}-of-\d{5}\.tfrecord|"
                         + "|".join(re.escape(name) for name in OUTPUT_FILES) + r")\.tmp$")


class _StagedFiles:
    """Outputs written under hidden temporary names (``.NAME.tmp`` in OUT) and renamed into place
    together by :meth:`commit`; :meth:`discard` removes them instead, leaving OUT as it was."""

    def __init__(self) -> None:
        self.pairs: List[Tuple[Path, Path]] = []  # (temporary file, final path)
        self.interrupted = False  # a Ctrl-C or SIGTERM came while the files were moved into place

    def add(self, tmp: Path, final: Path) -> None:
        """Take over ``tmp``, complete, to become ``final``."""
        self.pairs.append((tmp, final))

    def write(self, final: Path, data: bytes) -> None:
        """Write ``data`` for ``final``."""
        tmp = final.parent / f".{final.name}.tmp"
        self.add(tmp, final)
        tmp.write_bytes(data)

    def commit(self, out: Path, stale: Sequence[str]) -> None:
        """Rename every file into place and remove the ``stale`` shards of an earlier build.

        Ctrl-C and SIGTERM wait until it is done. A rename that fails midway (a full directory)
        leaves ``COMMIT_JOURNAL`` naming the new and stale files, and the files not yet moved:
        training refuses the folder, the next build first finishes the move
        (:func:`finish_interrupted_commit`), and the error says to run the build again."""
        journal = out / COMMIT_JOURNAL
        try:
            journal.write_text(json.dumps({"new": [final.name for _, final in self.pairs], "stale": list(stale),
                                           "sizes": [tmp.stat().st_size for tmp, _ in self.pairs]}))
        except BaseException:
            journal.unlink(missing_ok=True)
            raise
        with signals_held(deliver=False) as received:  # once all is moved, there is nothing left to stop
            try:
                for tmp, final in self.pairs:
                    os.replace(tmp, final)
                for name in stale:
                    (out / name).unlink(missing_ok=True)
            except OSError as exc:
                self.pairs = []  # the files not moved stay for the next build to move first (the journal names them)
                raise BuildError(f"the new build was only partly moved into {out} ({exc.strerror or exc}): run "
                                 "the same command again to finish it; until then training refuses the folder") from exc
            journal.unlink()
            self.pairs = []
        self.interrupted = bool(received)

    def discard(self) -> None:
        """Remove every temporary file."""
        for tmp, _ in self.pairs:
            tmp.unlink(missing_ok=True)
        self.pairs = []


class _ShardWriter:
    """Writes one split's shards, each to a hidden temp file handed to ``staged`` when complete."""

    def __init__(self, out: Path, split: str, planned: int, shard_size: int, staged: _StagedFiles) -> None:
        self.out, self.split, self.staged = out, split, staged
        self.count = max(1, math.ceil(planned / shard_size))
        self.per_shard = max(1, math.ceil(planned / self.count))
        self.current = -1
        self.writer: Optional[TFRecordWriter] = None
        self.tmp: Optional[Path] = None
        self.records: List[int] = [0] * self.count
        self.files: List[str] = []
        self.sizes: List[int] = []

    def _open(self, index: int) -> None:
        while self.current < index:
            self._close()
            self.current += 1
            name = shard_name(self.split, self.current, self.count)
            self.tmp = self.out / f".{name}.tmp"
            self.writer = TFRecordWriter(self.tmp)

    def _close(self) -> None:
        if self.writer is not None and self.tmp is not None:
            self.writer.close()
            final = self.out / shard_name(self.split, self.current, self.count)
            self.staged.add(self.tmp, final)
            self.files.append(final.name)
            self.sizes.append(self.tmp.stat().st_size)
            self.writer, self.tmp = None, None

    def write(self, position: int, record: bytes) -> None:
        """Write the record of the image planned at ``position`` within the split."""
        index = min(position // self.per_shard, self.count - 1)
        self._open(index)
        self.writer.write(record)  # type: ignore[union-attr]
        self.records[index] += 1

    def finish(self) -> None:
        """Close the last shard and write empty ones so every ``-of-N`` shard exists."""
        self._open(self.count - 1)
        self._close()

    def abort(self) -> None:
        """Drop the shard in progress (used when the run fails)."""
        if self.writer is not None and self.tmp is not None:
            try:
                self.writer.close()
            except OSError:  # a full disk fails the final flush too; the file goes either way
                pass
            self.tmp.unlink(missing_ok=True)
            self.writer = None


class _RecordSpool:
    """Records kept in a hidden temp file in OUT until the split is known (removed on exit)."""

    def __init__(self, out: Path) -> None:
        self.path = out / ".records.spool.tmp"

    def __enter__(self) -> "_RecordSpool":
        self.file = open(self.path, "w+b")
        self.size = 0
        return self

    def __exit__(self, *exc: Any) -> None:
        self.file.close()
        self.path.unlink(missing_ok=True)

    def append(self, record: bytes) -> Tuple[int, int]:
        """Store ``record``; returns its ``(offset, length)``."""
        self.file.write(record)
        self.size += len(record)
        return self.size - len(record), len(record)

    def read(self, place: Tuple[int, int]) -> bytes:
        """The record stored at ``place`` (once every record is appended)."""
        self.file.seek(place[0])
        return self.file.read(place[1])


class _Converted(NamedTuple):
    """One converted image, its record waiting in the spool."""

    place: Tuple[int, int]  # in the spool
    labels: List[int]  # each box's class
    learnable: List[int]  # the classes of the boxes that are not crowd regions
    sha256: str  # of the stored JPEG


@dataclass
class _Written:
    """What :func:`_write_splits` wrote, per split."""

    shards: List[Dict[str, Any]]  # {file, records, bytes}
    stats: Dict[str, Dict[str, int]]  # split -> {images, boxes, crowd_boxes}
    ids: Dict[str, List[int]]  # split -> image ids in record order
    class_boxes: Dict[str, List[int]]  # split -> boxes per class (index = class id - 1)
    learnable: Dict[str, List[int]]  # split -> boxes per class that are not crowd regions (training's, COCO AP's)
    same_pixels: Dict[str, List[Tuple[int, str]]]  # sha256 of the stored JPEG -> [(image id, split)]


def _write_splits(out: Path, plan: List[Tuple[str, List[int]]], converted: Dict[int, _Converted], spool: _RecordSpool,
                  shard_size: int, classes: int, staged: _StagedFiles) -> _Written:
    """Write each split's shards in plan order from the spooled records (``converted``: image id ->
    :class:`_Converted`) into ``staged``; a failure leaves no half-written shard."""
    written = _Written([], {}, {}, {}, {}, {})
    writers = {split: _ShardWriter(out, split, len(members), shard_size, staged) for split, members in plan}
    try:
        for split, members in plan:
            stats = written.stats[split] = {"images": 0, "boxes": 0, "crowd_boxes": 0}
            counts = written.class_boxes[split] = [0] * classes
            learnable = written.learnable[split] = [0] * classes
            written.ids[split] = list(members)
            for pos, iid in enumerate(members):
                record = converted[iid]
                writers[split].write(pos, spool.read(record.place))
                written.same_pixels.setdefault(record.sha256, []).append((iid, split))
                for label in record.labels:
                    counts[label - 1] += 1
                for label in record.learnable:
                    learnable[label - 1] += 1
                stats["images"] += 1
                stats["boxes"] += len(record.labels)
                stats["crowd_boxes"] += len(record.labels) - len(record.learnable)
            writers[split].finish()
    except BaseException:
        for writer in writers.values():
            writer.abort()
        raise
    written.shards = [{"file": f, "records": w.records[i], "bytes": w.sizes[i]}
                      for w in writers.values() for i, f in enumerate(w.files)]
    return written


def sizes_of_found(located: Dict[int, Tuple[Path, Optional[str]]]) -> Dict[int, Tuple[Path, int]]:
    """``{image id: (path, size)}`` for the regular, non-empty files that are there, one ``stat`` each.
    A broken link is missing too (its content was never fetched); a folder or a named pipe (which
    would block whoever opens it) is left out, as is an empty file: ``file_reason`` says why."""
    found = {}
    for iid, (path, _) in located.items():
        try:
            info = os.stat(path)
        except (OSError, ValueError):  # ValueError: a NUL in the name
            continue
        if stat.S_ISREG(info.st_mode) and info.st_size:
            found[iid] = (path, info.st_size)
    return found


# the end of images.match_json_size's reason for a file of another size and aspect ratio than its JSON entry's,
# and what it says instead for a photo read under the name it had before an annotation tool renamed the upload
RESIZED_EXPORT_FIX = ("read under its name before the annotation tool renamed the upload, this is the original photo, "
                      "and the export resized or cropped it (Roboflow's Resize or Static Crop preprocessing): its boxes "
                      "fit the export's images; give --images as the folder of the images that came with the export")


def _variants_of_one_original(images: Sequence[Any], located: Dict[int, Tuple[Path, Optional[str]]],
                              paths: List[SourceImages]) -> Dict[int, str]:
    """``{image id: skip reason}`` for Roboflow entries that reach one photo only under the name it had
    before Roboflow renamed it, several entries to one photo: the augmented variants an export makes
    (flipped, rotated, cropped), whose boxes belong to those copies, not to the original."""
    by_path: Dict[Path, List[int]] = {}
    for im in images:
        if paths[im.source].found_under_original_name(im.file_name) and roboflow_original(im.file_name):
            by_path.setdefault(located[im.id][0], []).append(im.id)
    return {iid: (f"augmented variant of a photo found only under its original name: {len(ids)} image entries "
                  f"reach {path.name} that way, copies the tool flipped, rotated or cropped whose boxes do not fit "
                  "the original; export the images with the JSON")
            for path, ids in by_path.items() if len(ids) > 1 for iid in ids}


def software_versions() -> Dict[str, Optional[str]]:
    """The versions that decide the bytes a build writes: ours, and Pillow's with the JPEG codec that
    re-encodes shrunk photos and the colour engine that converts their profiles to sRGB."""
    from PIL import __version__ as pillow
    from PIL import features

    from edge_trash import __version__

    return {"edge-trash": __version__, "Pillow": pillow, "libjpeg-turbo": features.version("libjpeg_turbo"),
            "littlecms2": features.version("littlecms2")}


def found_names(dataset: CocoDataset, found: Dict[int, Tuple[Path, int]], options: BuildOptions,
                paths: Optional[Sequence[Any]] = None) -> Dict[int, str]:
    """Each found image's file as a relative path: ``file_name`` itself, spelled as on disk, when it is a
    relative path the file was found under (``paths``, the
    :class:`~edge_trash.tfrecords.image_paths.SourceImages` of each annotation file, tell), whether ``--images``
    is the folder it is relative to, one above it (as the build's hint then says) or one inside it; else the path
    under the folder ``file_name`` is relative to when found below ``--images``, or under ``--images``. So it is
    the same for every spelling of one ``file_name`` that reaches it (case, separators, a URL or another
    machine's prefix), wherever the dataset is copied and whatever other folders are given. Two annotation files'
    photos of one name (TrashCan's ``train/`` and ``val/``) share it: they sit side by side in the seeded order
    and are counted as a pair when builds are compared."""
    dirs = [os.path.abspath(d) for d in options.image_dirs()]
    images_by_id = {im.id: im for im in dataset.images}
    names: Dict[int, str] = {}
    for iid, (path, _) in found.items():
        im = images_by_id[iid]
        spelled = paths[im.source].spelled_by_name(im.file_name, path) if paths is not None else None
        if spelled is not None:
            names[iid] = utf8_text(spelled)
            continue
        base = dirs[im.source]
        deeper = paths[im.source].folder_above(im.file_name, path) if paths is not None else None
        if deeper is not None:  # a rooted file_name ("/images/x.jpg") found below --images
            base = os.path.abspath(deeper)
        try:
            names[iid] = utf8_text(Path(os.path.relpath(os.path.abspath(path), base)).as_posix())
        except ValueError:  # another drive (Windows)
            names[iid] = Path(path).as_posix()
    return names


def stale_analyses(out: Path, shards: Sequence[Mapping[str, Any]], labels: Optional[Sequence[str]] = None
                   ) -> List[str]:
    """The folders directly in ``out`` where ``edge-trash analyze`` reported on records other than ``shards``
    (``{file, bytes}``: this build's) or classes other than ``labels``: its ``stats.json`` lists other shards or
    sizes (names alone, from an analyze before it kept sizes) or other class names (a class map that renamed
    'Bottle' to 'bottle' keeps every shard's size), so its report describes an earlier build."""
    now = {s["file"]: s["bytes"] for s in shards}
    stale = []
    try:
        folders = sorted(p for p in out.iterdir() if p.is_dir() and (p / "stats.json").is_file())
    except OSError:
        return []
    for folder in folders:
        try:
            seen = json.loads((folder / "stats.json").read_text(encoding="utf-8")).get("tfrecords") or {}
        except (OSError, ValueError, AttributeError):
            continue
        if not seen:
            continue  # a report on annotations alone
        sizes = seen.get("shard_bytes")
        names = sorted(f for split in (seen.get("splits") or {}).values() for f in split.get("shards", []))
        if ((sizes if sizes is not None else names) != (now if sizes is not None else sorted(now))
                or (labels is not None and seen.get("labels") is not None and list(seen["labels"]) != list(labels))):
            stale.append(folder.name)
    return stale


def _earlier_class_names(out: Path) -> Optional[List[str]]:
    """The class names of the build in ``out`` (its ``labels.txt``), None when there is none or it cannot be read."""
    try:
        return (out / "labels.txt").read_text(encoding="utf-8").splitlines()
    except (OSError, ValueError):
        return None


PICTURE_HASH_CHARS = 16  # of each stored JPEG's sha256 in splits.json: 64 bits tell a dataset's pictures apart


def _earlier_splits(out: Path) -> Optional[Dict[str, Any]]:
    """The ``splits.json`` an earlier build left in ``out``: None when there is no earlier build,
    ``{"unreadable": why}`` when it cannot be read as one, or there is none beside the build's files."""
    path = out / "splits.json"
    if not path.exists():
        if (out / "report.json").exists() or any(SHARD_RE.match(p.name) for p in out.iterdir()):
            return {"missing": True}
        return None
    try:
        return read_splits_json(path)
    except SplitsJsonError as exc:
        return {"unreadable": exc.why}


def _plan(dataset: CocoDataset, options: BuildOptions, target_of: Dict[int, Optional[int]],
          found: Dict[int, Tuple[Path, int]], copies: List[List[int]], read_as: Dict[int, str]
          ) -> Tuple[List[Tuple[str, List[int]]], Optional[SplitUnits]]:
    """``[(split, image ids)]`` for the images whose file was ``found`` (``{id: (path, size)}``; a
    missing file takes no place in val or test, nor a rare class's training image), and the units a
    new split kept together: runs of video frames (``--split-by``) and ``copies`` of one file (groups
    of ids, :func:`identical_files`; members not in ``found`` are left out). ``read_as`` is
    :func:`found_names` of every found image: their places in the seeded order."""
    classes_of: Dict[int, set] = {im.id: set() for im in dataset.images}
    boxes_of: Dict[int, Counter] = {im.id: Counter() for im in dataset.images}  # the boxes training sees
    for box in dataset.boxes:
        t = target_of.get(box.category_id)
        if t is not None:
            classes_of[box.image_id].add(t)
            if not box.iscrowd:
                boxes_of[box.image_id][t] += 1
    ids = [im.id for im in dataset.images if im.id in found]
    # each image's place in the seeded order: the file it was read from (however the JSON spells it), its
    # photo's name for a Roboflow export unless asked to move every image alone
    names = split_keys(read_as, photos=options.split_by != "image")
    if options.keep_splits:
        split_of = {im.id: dataset.sources[im.source].split or im.split for im in dataset.images}  # the file's first
        unnamed = [str(src.path) for k, src in enumerate(dataset.sources)
                   if any(split_of[im.id] is None for im in dataset.images if im.source == k)]
        if unnamed:
            raise BuildError(f"--keep-splits: cannot tell the split of {', '.join(unnamed)} from its name or "
                             "folder (put 'train', 'valid' or 'test' in it), nor of each of its images (a 'split' "
                             "field, or a split folder in file_name), or leave --keep-splits out for a new stratified "
                             "split")
        kept = {name: [i for i in ids if split_of[i] == name] for name in ("train", "val", "test")}
        plan = [(name, shuffled(members, options.seed, names)) for name, members in kept.items()]
        return [(name, members) for name, members in plan if members or name == "train"], None
    by_id = {im.id: im for im in dataset.images}
    units = split_units([(i, by_id[i].source, by_id[i].file_name, by_id[i].video) for i in ids],
                        options.split_by)
    units.join([kept for kept in ([i for i in group if i in found] for group in copies) if len(kept) > 1])
    if options.split_by == "folder" and units.units < 2 and len(ids) > 1:
        raise BuildError("--split-by folder: every image is in the same folder, so nothing could be held out; "
                         "leave --split-by out (auto) or give --split-by image")
    if options.folds:
        held = assign_splits(ids, classes_of, 0.0, options.test_fraction, options.seed, units.unit_of, names,
                             boxes_of)
        rest = held["train"]
        if options.folds > len(rest):
            raise BuildError(f"--folds {options.folds}: only {len(rest)} images are left for the folds after "
                             f"--test-fraction {options.test_fraction} (of {len(ids)} usable); give fewer folds")
        groups = len({units.unit_of.get(i, ("image", i)) for i in rest})
        if options.folds > groups:
            what = ("--split-by folder keeps each folder of file_name in one" if options.split_by == "folder" else
                    "runs of video frames, copies of one file and a photo's variants each move as one; "
                    "--split-by image moves every image alone")
            raise BuildError(f"--folds {options.folds}: the {len(rest)} images left for the folds form only {groups} "
                             f"groups that each stay in one fold ({what}); give --folds {groups} or fewer")
        folds = assign_folds(rest, classes_of, options.folds, options.seed, units.unit_of, names)
        plan = [(f"fold{k}", fold) for k, fold in enumerate(folds)] + [("test", held["test"])]
    else:
        splits = assign_splits(ids, classes_of, options.val_fraction, options.test_fraction, options.seed,
                               units.unit_of, names, boxes_of)
        plan = [(name, splits[name]) for name in ("train", "val", "test")]
    return [(name, members) for name, members in plan if members or name == "train"], units


def _plan_again(dataset: CocoDataset, options: BuildOptions, target_of: Dict[int, Optional[int]],
                plan: List[Tuple[str, List[int]]], units: Optional[SplitUnits],
                converted: Dict[int, Tuple[Path, int]], copies: List[List[int]], read_as: Dict[int, str]
                ) -> Tuple[List[Tuple[str, List[int]]], Optional[SplitUnits]]:
    """The split drawn anew over the images that ``converted``; when they cannot be split as asked (too
    few left for the folds, one folder left with --split-by folder, none at all), the first ``plan``
    without the others, so the report still says which files failed and why."""
    if converted:
        try:
            return _plan(dataset, options, target_of, converted, copies, read_as)
        except BuildError:
            pass
    kept = [(name, [i for i in members if i in converted]) for name, members in plan]
    return [(name, members) for name, members in kept if members or name == "train"], units


def _classes_not_in_val(names: Sequence[str], options: BuildOptions, split_ids: Mapping[str, Sequence[int]],
                        learnable: Mapping[str, Sequence[int]], converted: Mapping[int, _Converted]) -> List[str]:
    """The classes of two images or more with no box in val (none with --folds, or without a val); crowd
    regions count for neither (COCO's AP leaves them out)."""
    if options.folds or not (options.val_fraction if not options.keep_splits else split_ids.get("val")):
        return []
    images = Counter(label for ids in split_ids.values() for i in ids for label in set(converted[i].learnable))
    in_val = learnable.get("val", [0] * len(names))
    return [n for i, n in enumerate(names) if images[i + 1] >= 2 and not in_val[i]]


def _objects(im: Any, boxes: Sequence[Any], result: ImageResult, mapping: Any,
             boxes_dropped: List[Dict[str, Any]]) -> List[ObjectBox]:
    """The record's objects: an image's boxes in their target classes, normalised (the stored area in
    pixels of the shrunk image); boxes whose class the mapping drops go to ``boxes_dropped``."""
    objects: List[ObjectBox] = []
    sx, sy = result.width / im.width, result.height / im.height
    for box in boxes:
        target = mapping.target_of_category.get(box.category_id)
        if target is None:
            boxes_dropped.append({"annotation_id": box.source_id, "image_id": im.id, "file_name": im.file_name,
                                  "reason": mapping.drop_reasons.get(box.category_id, "its class has no boxes left")})
            if box.category_id in mapping.dropped_as_asked:
                boxes_dropped[-1]["as_asked"] = True  # an empty class-map target or --rare drop: not bad data
            continue
        objects.append(ObjectBox(
            xmin=box.x / im.width, ymin=box.y / im.height,
            xmax=(box.x + box.w) / im.width, ymax=(box.y + box.h) / im.height,
            label=target, text=mapping.names[target - 1], is_crowd=box.iscrowd,
            area=round(box.w * sx * box.h * sy, 3)))
    return objects


def _progress(iterable: Iterable[ImageResult], total: int, enabled: bool) -> Iterable[ImageResult]:
    if not enabled:
        return iterable
    from edge_trash.terminal import progress_bar

    return progress_bar(iterable, total=total, unit="img", desc="build-tfrecords")


def finish_interrupted_commit(out: Path) -> str:
    """Finish moving into place a build that was stopped while it renamed its files (``COMMIT_JOURNAL`` left:
    a ``kill -9``, a power cut, a full directory), before anything here deletes its waiting files: ``"finished"``
    when every new file was there to move (``out`` then holds that build, whole), ``"unfinished"`` when some
    were gone (the folder stays refused by training until a build completes), ``""`` with no journal."""
    journal = out / COMMIT_JOURNAL
    try:
        listed = json.loads(journal.read_text(encoding="utf-8"))
        new, stale, sizes = [str(n) for n in listed["new"]], [str(n) for n in listed["stale"]], listed["sizes"]
    except FileNotFoundError:
        return ""
    except (OSError, ValueError, KeyError, TypeError):
        return "unfinished"
    waiting = [(out / f".{name}.tmp").is_file() for name in new]
    moved = waiting.index(True) if True in waiting else len(new)  # renamed in order: those before the first waiting
    places = [out / name for name in new[:moved]] + [out / f".{name}.tmp" for name in new[moved:]]
    if not all(waiting[moved:]) or len(sizes) != len(new) or any(
            not p.is_file() or p.stat().st_size != size for p, size in zip(places, sizes)):
        return "unfinished"  # a file gone, or an earlier build's where this one's belongs
    with signals_held():
        for name in new:
            if (out / f".{name}.tmp").is_file():
                os.replace(out / f".{name}.tmp", out / name)
        for name in stale:
            (out / name).unlink(missing_ok=True)
        journal.unlink()
    return "finished"


def foreign_shards(out: Path) -> List[str]:
    """Shard-named files in ``out`` that the ``report.json`` there (an earlier build's) does not
    list: another tool's records (Model Garden's converter names its shards alike), which a build
    must not delete as its own stale ones."""
    shards = sorted(p.name for p in out.iterdir() if SHARD_RE.match(p.name))
    if not shards:
        return []
    try:
        listed = {s["file"] for s in json.loads((out / "report.json").read_text(encoding="utf-8"))["shards"]}
    except (OSError, ValueError, KeyError, TypeError):  # none, unreadable, or not ours
        listed = set()
    listed |= _journal_names(out)  # a build that failed while moving its files into place: its files are ours
    return [name for name in shards if name not in listed]


def _journal_names(out: Path) -> set:
    """The new and stale files the journal of a build stopped while moving them into place lists (none without)."""
    try:
        journal = json.loads((out / COMMIT_JOURNAL).read_text(encoding="utf-8"))
        return set(journal["new"]) | set(journal["stale"])
    except (OSError, ValueError, KeyError, TypeError):
        return set()


def foreign_outputs(out: Path) -> List[str]:
    """Files in ``out`` named like a build's (``labels.txt``, ``label_map.pbtxt``, ``splits.json``,
    ``report.json``) that no build wrote, as far as can be told: all there are when the ``report.json`` there is
    missing or not a build's, save those an interrupted build's journal lists. A dataset's own ``labels.txt``
    must not be replaced by a build pointed at its folder."""
    present = [name for name in OUTPUT_FILES if (out / name).is_file()]
    if not present:
        return []
    try:
        report = json.loads((out / "report.json").read_text(encoding="utf-8"))
        if isinstance(report, dict) and "images_total" in report and isinstance(report.get("shards"), list):
            return []
    except (OSError, ValueError):
        pass
    listed = _journal_names(out)
    return [name for name in present if name not in listed]


class _OutLock:
    """One build at a time in an output folder: a second one would delete the first's temporary
    files as stale and rename its own over them. An advisory lock on ``OUT/.build-tfrecords.lock``
    (none where ``fcntl`` is missing, on Windows); released, and the file removed, when the build ends."""

    NAME = BUILD_LOCK

    def __init__(self, out: Path) -> None:
        self.path = out / self.NAME
        self.file: Optional[Any] = None

    def take(self) -> None:
        """Lock OUT (it exists), or raise :class:`BuildError` naming the process that holds it."""
        try:
            import fcntl
        except ImportError:
            return
        while True:
            handle = open(self.path, "a+")
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                if os.fstat(handle.fileno()).st_ino == os.stat(self.path).st_ino:
                    break
            except FileNotFoundError:
                pass
            except BlockingIOError:  # EWOULDBLOCK: another process holds it
                handle.seek(0)
                holder = handle.read().strip()
                handle.close()
                raise BuildError(f"another build-tfrecords{f' (process {holder})' if holder.isdigit() else ''} is "
                                 f"writing into {self.path.parent}: wait for it to finish, or choose another --out")
            except OSError:  # a file system without locks (ENOLCK: NFS without lockd, some FUSE and SMB mounts)
                handle.close()
                self.path.unlink(missing_ok=True)
                return
            handle.close()  # its holder removed the file as we opened it: lock the one there now
        handle.truncate(0)
        handle.write(str(os.getpid()))
        handle.flush()
        self.file = handle

    def release(self) -> None:
        """Remove the lock file and unlock."""
        if self.file is not None:
            self.path.unlink(missing_ok=True)
            self.file.close()
            self.file = None


def build_tfrecords(options: BuildOptions, progress: bool = False) -> Dict[str, Any]:
    """Convert the dataset; returns the report (also written to ``OUT/report.json``).

    Raises :class:`BuildError` when the build cannot start (another build is writing into OUT too). A build
    that fails or is stopped leaves no empty OUT behind where there was none.
    """
    out = Path(options.out)
    new_out = not os.path.lexists(out)
    lock = _OutLock(out)
    report = None
    try:
        report = _build(options, progress, lock)
        return report
    finally:
        lock.release()
        if report is None and new_out:  # failed or stopped
            try:
                out.rmdir()  # only if empty: nothing this build made is left in it
            except OSError:
                pass


def _build(options: BuildOptions, progress: bool, lock: _OutLock) -> Dict[str, Any]:
    options.validate()
    paths = source_images(options.image_dirs(), options.annotation_files())
    dataset = load_coco_files(options.annotation_files(),
                              size_of=lambda name, k: read_displayed_size(paths[k].resolve(name)[0]))
    class_map = read_class_map(options.class_map) if options.class_map else None
    mapping = build_class_mapping(dataset.categories, dataset.boxes, class_map, options.supercategories,
                                  options.min_instances, options.rare)
    if not any(not b.iscrowd and mapping.target_of_category.get(b.category_id) is not None for b in dataset.boxes):
        given = ", ".join(map(str, options.annotation_files()))
        raise _nothing_to_train_on(given, dataset, mapping)
    names = mapping.names
    images_by_id = {im.id: im for im in dataset.images}
    say = progress and len(dataset.images) >= BIG_DATASET_IMAGES and sys.stderr is not None  # seconds before the bar
    if say:
        print(f"build-tfrecords: finding the {len(dataset.images):,} image files ...", file=sys.stderr, flush=True)
    located = {im.id: paths[im.source].resolve(im.file_name) for im in dataset.images}
    unusable = _variants_of_one_original(dataset.images, located, paths)  # image id -> why it is left out
    for iid, why in other_photos_of_one_name(dataset.images, located, paths).items():
        unusable.setdefault(iid, why)
        located[iid] = (located[iid][0], None)  # the reason says where the search went
    for iid, n in dataset.images_with_every_box_dropped.items():
        unusable[iid] = every_box_dropped_reason(n)
        im = images_by_id[iid]
        reach = dataset.reach_inside_turned(im)
        if reach is not None:  # dropped as outside an image whose JSON width and height may be swapped
            unusable[iid] += (f" (they reach x {reach[0]:g}, y {reach[1]:g}: past the JSON's {im.width}x{im.height}, "
                              "inside it turned a quarter turn: are its width and height swapped?)")
    found = {iid: v for iid, v in sizes_of_found(located).items() if iid not in unusable}
    copies = [] if options.keep_splits else identical_files({i: (str(p), size) for i, (p, size) in found.items()})
    read_as = found_names(dataset, found, options, paths)  # each found file's path under its (hinted) --images
    if say:
        print(f"build-tfrecords: {len(found):,} found; drawing the split ...", file=sys.stderr, flush=True)
    plan, units = _plan(dataset, options, mapping.target_of_category, found, copies, read_as)

    boxes_dropped: List[Dict[str, Any]] = [
        {"annotation_id": r.record_id, "image_id": r.image_id, "file_name": r.file_name, "reason": r.reason}
        for r in dataset.rejected_boxes]
    images_skipped: List[Dict[str, Any]] = [
        {"image_id": r.image_id if r.image_id is not None else r.record_id, "file_name": r.file_name,
         "reason": r.reason} for r in dataset.rejected_images]
    boxes_of = dataset.boxes_by_image()
    id_notes = dataset.id_notes()

    out = Path(options.out)
    out.mkdir(parents=True, exist_ok=True)
    lock.take()
    foreign = foreign_shards(out)
    if foreign:
        raise BuildError(f"--out {out} holds TFRecords no build-tfrecords report there lists ({examples(foreign, 3)}): "
                         "another tool's, or a build whose report.json is gone; this build would replace or delete "
                         "them: move them away, or choose another --out")
    theirs = foreign_outputs(out)
    if theirs:
        listed = " and ".join([", ".join(theirs[:-1]), theirs[-1]] if len(theirs) > 1 else theirs)
        raise BuildError(f"--out {out} holds {listed}, with no build-tfrecords report.json beside them: "
                         "another tool's files, or a build's whose report.json is gone; this build would replace "
                         "them: move them away, or choose another --out")
    interrupted = finish_interrupted_commit(out)
    in_the_way = [name for name in OUTPUT_FILES if (out / name).is_dir()]
    if in_the_way:
        one = len(in_the_way) == 1
        raise BuildError(f"--out {out}: {', '.join(in_the_way)} there {'is a folder' if one else 'are folders'}, "
                         f"where the build writes a file: move {'it' if one else 'them'} away, or choose another --out")
    for stale in out.iterdir():  # left by a run that was killed (our names only: OUT may hold other files)
        if OUR_TEMP_RE.match(stale.name):
            stale.unlink()

    path_notes: Dict[int, str] = {}  # how the file was found; part of the reason when it is skipped
    found_deeper: Counter = Counter()  # (source, the folder file_name is relative to), when below --images
    several: Counter = Counter()  # the folders a name not read was in, each of several (MJU-Waste's RGB and depth)
    image_dirs = options.image_dirs()
    for im in dataset.images:
        path, path_note = located[im.id]
        if path_note:
            path_notes[im.id] = path_note
            several.update(str(image_dirs[im.source] / folder)
                           for folder in folders_of_several(path_note))
            deeper = paths[im.source].folder_above(im.file_name, path) if im.id in found else None
            if deeper is not None:
                found_deeper[im.source, str(deeper)] += 1

    def skip(im: Any, reason: str) -> None:
        swapped = dataset.swapped_size_reason(im) if NO_EXIF_TURN in reason else None
        if swapped:  # not a lost EXIF tag (rotating the photo would put every box wrong): the JSON's size
            reason = swapped
        if reason.endswith(MISMATCH_FIX) and paths[im.source].found_under_original_name(im.file_name):
            # the original photo, not the upload the export resized (Roboflow's Resize or Static Crop)
            reason = reason[:-len(MISMATCH_FIX)] + RESIZED_EXPORT_FIX
        reason = f"{reason}; {path_notes[im.id]}" if im.id in path_notes else reason
        images_skipped.append({"image_id": im.id, "file_name": im.file_name, "reason": reason})
        for box in boxes_of[im.id]:
            boxes_dropped.append({"annotation_id": box.source_id, "image_id": im.id, "file_name": im.file_name,
                                  "reason": "its image was skipped"})  # why: in images_skipped

    missing: Dict[int, List[str]] = {}  # source -> the file_names not found under its --images
    for im in dataset.images:
        if im.id in unusable:
            skip(im, unusable[im.id])
        elif im.id not in found:
            reason = file_reason(located[im.id][0])
            if reason.startswith("file not found"):
                missing.setdefault(im.source, []).append(im.file_name)
            skip(im, reason)
    # Every photo is converted before the split is final: one that turns out unreadable must take no place in
    # val or test, nor a rare class's only training image. Records wait in a spool (about the output's size).
    jobs = [ImageJob(im.id, str(found[im.id][0]), im.width, im.height, options.max_size, options.max_pixels,
                     options.quality) for im in dataset.images if im.id in found]
    converted: Dict[int, _Converted] = {}
    image_notes: List[Dict[str, Any]] = []
    subpixel: List[int] = []  # images with a box under one stored pixel wide or high (shrunk to --max-size)
    staged = _StagedFiles()  # renamed into place together: a failure leaves the earlier build as it was
    try:
        # closed on any exception: the workers stop at once (an interrupted build must not finish every photo)
        with _RecordSpool(out) as spool, closing(ordered_map(convert_image, jobs, options.workers)) as converting:
            for result in _progress(converting, len(jobs), progress):
                im = images_by_id[result.image_id]
                if not result.ok:
                    skip(im, result.reason)
                    continue
                notes = [n for n in (id_notes.get(im.id), dataset.name_notes.get(im.id),
                                     dataset.size_notes.get(im.id), path_notes.get(im.id)) if n] + result.notes
                if notes:
                    image_notes.append({"image_id": im.id, "file_name": im.file_name, "notes": notes})
                objects = _objects(im, boxes_of[im.id], result, mapping, boxes_dropped)
                shrunk = max(im.width, im.height) > options.max_size and \
                    max(result.width, result.height) >= options.max_size - 1  # not a file smaller than its JSON size
                if shrunk:  # boxes the shrink to --max-size made tiny
                    subpixel += [im.id] * sum(1 for o in objects if min((o.xmax - o.xmin) * result.width,
                                                                        (o.ymax - o.ymin) * result.height) < 1 - 1e-6)
                digest = hashlib.sha256(result.jpeg or b"").hexdigest()  # image/key/sha256, and duplicate pictures
                record = make_example_bytes(result.jpeg or b"", result.width, result.height,
                                            readable_text(im.file_name), str(im.id), objects, sha256_hex=digest)
                converted[im.id] = _Converted(spool.append(record), [o.label for o in objects],
                                              [o.label for o in objects if not o.is_crowd], digest)
            if len(converted) < len(found):  # a file that could not be read: split the others anew
                plan, units = _plan_again(dataset, options, mapping.target_of_category, plan, units,
                                          {iid: v for iid, v in found.items() if iid in converted}, copies,
                                          read_as)
            written = _write_splits(out, plan, converted, spool, options.shard_size, len(names), staged)

        split_stats, split_ids, split_class_boxes = written.stats, written.ids, written.class_boxes
        class_boxes = [sum(counts[i] for counts in split_class_boxes.values()) for i in range(len(names))]
        learnable = [sum(counts[i] for counts in written.learnable.values()) for i in range(len(names))]
        background = {split: sum(1 for i in ids if not converted[i].labels) for split, ids in split_ids.items()}
        files = {shard["file"] for shard in written.shards}
        stale_shards = sorted(p.name for p in out.iterdir() if SHARD_RE.match(p.name) and p.name not in files)

        duplicate_images = sorted(({"image_ids": [i for i, _ in sorted(group)],
                                    "file_names": [images_by_id[i].file_name for i, _ in sorted(group)],
                                    "splits": sorted({sp for _, sp in group})}
                                   for group in written.same_pixels.values() if len(group) > 1),
                                  key=lambda g: g["image_ids"])
        shards = written.shards
        images_written = sum(s["images"] for s in split_stats.values())
        boxes_written = sum(s["boxes"] for s in split_stats.values())
        staged.write(out / "labels.txt", ("\n".join(names) + "\n").encode("utf-8"))
        staged.write(out / "label_map.pbtxt", label_map_pbtxt(names).encode("utf-8"))
        split_names = {split: [read_as[i] for i in ids] for split, ids in split_ids.items()}
        # the stored pictures, to match the files of a renamed folder or a flattened copy with the earlier build's
        pictures = {split: [converted[i].sha256[:PICTURE_HASH_CHARS] for i in ids] for split, ids in split_ids.items()}
        changes = split_changes(_earlier_splits(out), split_names, options.folds, pictures)
        earlier_names = _earlier_class_names(out)
        staged.write(out / "splits.json", _json_bytes({
            "seed": options.seed, "folds": options.folds,
            "splits": {split: ids for split, ids in split_ids.items()},
            "file_names": split_names,  # the files read, to compare splits across builds whose ids differ
            "pictures": pictures}))
        opts = {k: (str(v) if isinstance(v, Path) else [str(p) for p in v] if isinstance(v, (list, tuple)) else v)
                for k, v in asdict(options).items() if k != "workers"}  # the output is the same with any number
        annotation_files = options.annotation_files()
        split_of_written = {iid: split for split, ids in split_ids.items() for iid in ids}
        report: Dict[str, Any] = {
            "annotations": (str(annotation_files[0]) if len(annotation_files) == 1
                            else [str(f) for f in annotation_files]),
            "sources": [dict(src.as_report(), images_dir=str(d))
                        for src, d in zip(dataset.sources, options.image_dirs())],
            "images_total": len(dataset.images) + len(dataset.rejected_images),
            "images_written": images_written,
            "images_skipped": images_skipped,
            "boxes_total": dataset.boxes_total,
            "boxes_written": boxes_written,
            "boxes_dropped": boxes_dropped,
            "boxes_clipped": dataset.boxes_clipped,
            "boxes_from_segmentation": dataset.boxes_from_segmentation,
            "boxes_rotated": dataset.boxes_rotated,
            # boxes kept that the shrink to --max-size left under one pixel wide or high: no detector sees them
            "boxes_under_a_stored_pixel": {"boxes": len(subpixel), "image_ids": sorted(set(subpixel))},
            "bbox_format_warning": dataset.bbox_format_warning(),
            "unknown_category_ids": {str(k): n for k, n in dataset.unknown_category_ids.items()},  # -> annotations
            "category_ids_warning": dataset.category_ids_warning(),
            "repeated_categories": dataset.repeated_categories,  # ids listed twice alike, each kept once
            "bbox_unreadable_boxed_from_mask": dataset.bbox_unreadable_boxed_from_mask,  # annotation ids
            "crowd_masks_warning": dataset.crowd_masks_warning(),
            "duplicate_annotation_ids": dataset.duplicate_annotation_ids,
            "image_ids_of_several_files": dataset.image_ids_of_several_files,  # none of their images written
            # images of files whose name says no split, by the split their entry names ('unnamed': none)
            "splits_named_per_image": dict(Counter(im.split or "unnamed" for im in dataset.images
                                                   if not dataset.sources[im.source].split)),
            "iscrowd_not_understood": dataset.iscrowd_not_understood,  # annotation ids, read as not crowd
            "ignored_as_crowd": dataset.ignored_as_crowd,  # annotation ids with "ignore": 1, written as crowd
            "annotations_with_score": score_summary(dataset.scores),  # predictions used as labels?
            # a queue export's boxes, never reviewed? (those written: not a class the mapping drops)
            "device_pre_annotations": dataset.pre_annotations(
                lambda b: b.image_id in converted and mapping.target_of_category.get(b.category_id) is not None),
            "image_sizes_read_from_files": sorted(dataset.size_notes),
            "image_ids_numbered": len(dataset.text_image_ids),  # ids written as text; image_notes map them back
            # the same picture under several image entries; across splits it inflates held-out scores
            "duplicate_images": duplicate_images,
            # records with no box: images without annotations, and those whose boxes the class mapping dropped
            "background_images": sum(background.values()),
            "background_images_by_split": background,
            "splits": split_stats,
            "split_units": units.as_report() if units else None,  # images kept in one split together
            # val/test frames with a neighbouring frame in train: near copies that inflate held-out scores
            "frames_next_to_train": frames_next_to_train(
                [(im.id, im.source, im.file_name, im.video) for im in dataset.images], split_of_written),
            # photos whose Roboflow variants (augmented copies) sit in more than one split
            "variants_in_several_splits": variants_across_splits([(im.id, im.file_name) for im in dataset.images],
                                                                 split_of_written),
            "classes": [{"id": i + 1, "name": n, "boxes": class_boxes[i],
                         "boxes_by_split": {split: counts[i] for split, counts in split_class_boxes.items()},
                         "crowd_boxes": class_boxes[i] - learnable[i]}
                        for i, n in enumerate(names)],
            # classes the model cannot learn: no box in train other than crowd regions (with folds: none at all)
            "classes_not_in_train": [n for i, n in enumerate(names)
                                     if not written.learnable.get("train", learnable)[i]],
            # classes of two images or more that val cannot score: val too small for every class, or given so
            "classes_not_in_val": _classes_not_in_val(names, options, split_ids, written.learnable, converted),
            **mapping.as_report(),
            "image_notes": image_notes,
            # folders below --images a name not read was in, each among several: the --images to choose from
            "folders_sharing_names": sorted(several),
            # with "missing": the folder above --images most images not found are under; they were not read
            "images_folder_hint": (_images_folder_hint(found_deeper, Counter(im.source for im in dataset.images),
                                                       options.image_dirs())
                                   or _images_folder_above_hint(missing, options.image_dirs())),
            "shards": shards,
            # folders in OUT where analyze reported on other records (the build this one replaced)
            "stale_analysis": stale_analyses(out, shards, names),
            "bytes_written": sum(s["bytes"] for s in shards),
            "stale_shards_removed": stale_shards,
            # a build stopped here while moving its files into place: "finished" first, or "unfinished" (files gone)
            "interrupted_build": interrupted,
            # the earlier build in --out against this one: its val/test images now in train and the reverse
            "split_changes": changes,
            # the classes of the build this one replaced, when they differ: its models and bundles no longer match
            "classes_changed": ({"earlier": earlier_names, "now": names}
                                if earlier_names is not None and earlier_names != names else None),
            "options": opts,
            "software": software_versions(),  # a rebuild months later gives the same bytes with the same ones
        }
        if not converted:  # a mistyped --images: no empty shard; an earlier build here stays as it was
            staged.discard()
            if any(SHARD_RE.match(p.name) or p.name in OUTPUT_FILES and p.name != "report.json"
                   for p in out.iterdir()):  # not the reasons alone an earlier failed run left: they are replaced
                return {**report, "earlier_build_kept": True}
            report = {**report, "shards": [], "bytes_written": 0, "only_report_written": True}  # the reasons
            write_bytes_atomic(out / "report.json", _json_bytes(report))
            return report
        staged.write(out / "report.json", _json_bytes(report))
    except BaseException:
        staged.discard()
        raise
    try:
        staged.commit(out, stale_shards)
    except BaseException:
        staged.discard()  # what was not moved into place
        raise
    if staged.interrupted:  # the build is whole in OUT: said, rather than "Aborted!" over a complete build
        return {**report, "interrupted_after_writing": True}
    return report
