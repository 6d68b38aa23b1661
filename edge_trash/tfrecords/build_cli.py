"""``edge-trash build-tfrecords``: parse options, call :func:`build_tfrecords`, print the summary."""

from __future__ import annotations

import re
import time
from collections import Counter
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import click

from edge_trash.terminal import plural, shell_word, stop_on_sigterm
from edge_trash.tfrecords.workers import WorkerLost, worker_count

EXIT_NOTHING_WRITTEN = 1
EXIT_STRICT = 4


BIG_ANNOTATIONS_BYTES = 50_000_000  # about 2 s of JSON parsing: say what the wait is for


def build_os_error(exc: OSError, out: Path) -> str:
    """One line for an ``OSError`` that stopped a build: reading an input (said as such), or writing
    into ``out`` (a full disk, a read-only folder), which changed nothing there, with the fix."""
    import errno

    from edge_trash.atomic_files import os_error_message

    message = os_error_message(exc, out)
    if not message.startswith("cannot write"):
        return message
    full = exc.errno in (errno.ENOSPC, errno.EDQUOT)
    fix = ("free space (a build needs about twice its output while it runs, three times when it replaces an "
           "earlier build) or choose another --out" if full else
           "a file may not grow that large here (a FAT32 drive holds files under 4 GiB; `ulimit -f` sets a limit): the "
           "records wait in one temp file about the output's size, so choose an --out on another file system"
           if exc.errno == errno.EFBIG else "choose another --out")
    return (f"cannot write {exc.filename or out}: {exc.strerror or exc}. Nothing in {out} was changed (the new "
            f"files are renamed into place together, once all are complete); {fix}, and run again")


# How long the annotation reader takes (measured on box-only and polygon COCO files: about 11 and 25 MB/s): a
# rate per byte, or one per object (``{``) where the file is mostly small objects, as a box-only file is
_PARSE_BYTES_PER_SECOND = 25e6
_PARSE_SECONDS_PER_OBJECT = 13e-6
_SAMPLE_BYTES = 1 << 20


def json_read_estimate(path: Path) -> Optional[Tuple[int, float]]:
    """The size of the JSON in a regular file, unpacked (gzip says it in its last four bytes; xz and bzip2 are
    taken as a tenth of it), and about how many seconds it takes to read: by its bytes, or by its objects per
    byte in a sample (the middle of a plain file, where a COCO file's annotations are, or the start of a packed
    one) for a file of many small ones; None for anything else or one that cannot be looked at (the annotation
    reader then says why: not found, a folder, permission denied, a name too long)."""
    import importlib
    import lzma

    from edge_trash.tfrecords.coco import PACKED

    try:
        if not path.is_file():
            return None
        size = path.stat().st_size
        with path.open("rb") as f:
            head = f.read(6)
            packed = next(((kind, module) for magic, kind, module in PACKED if head.startswith(magic)), None)
            if packed is None:
                f.seek(max(0, size // 2 - _SAMPLE_BYTES // 2))
                sample = f.read(_SAMPLE_BYTES)
            else:
                f.seek(0)
                sample = importlib.import_module(packed[1]).open(f).read(_SAMPLE_BYTES)
            if packed and packed[0] == "gzip" and size >= 18:
                f.seek(-4, 2)
                size = max(size, int.from_bytes(f.read(4), "little"))  # modulo 4 GiB
            elif packed:
                size *= 10
        objects = size * sample.count(b"{") / max(1, len(sample))
        return size, max(size / _PARSE_BYTES_PER_SECOND, objects * _PARSE_SECONDS_PER_OBJECT)
    except (OSError, ValueError, EOFError, lzma.LZMAError):  # a cut-off or corrupt packed file
        return None


def announce_big_annotations(paths: Tuple[Path, ...]) -> None:
    """Say on stderr that a large annotation set is being read (a 314 MB COCO-size file takes ~12 s, with no bar),
    and about how long it takes."""
    measured = [found for found in map(json_read_estimate, paths) if found is not None]
    total = sum(size for size, _ in measured)
    if total >= BIG_ANNOTATIONS_BYTES:
        seconds = sum(seconds for _, seconds in measured)
        click.echo(f"reading {total / 1e6:.0f} MB of annotations ({', '.join(map(str, paths))}): about "
                   f"{seconds:.0f} s ...", err=True)


# What each kind of image note says, by a phrase it contains (the first match wins).
_NOTE_KINDS = (
    ("not found as given", "found under another path or name"),
    ("JSON says", "size differs from the JSON"), ("JSON size", "size differs from the JSON"),
    ("in the JSON: used", "size read from the file"),
    ("applied EXIF orientation", "EXIF orientation applied"), ("EXIF", "EXIF orientation ignored"),
    ("profile", "colour profile converted or ignored"),
    ("stretched", "narrow 16-bit values stretched to 0-255"),
    ("transparency", "colour mode converted to RGB"), ("RGB", "colour mode converted to RGB"),
    ("frames", "first frame of an animation used"),
    ("is text: numbered", "text image id numbered"),
    ("beyond 64-bit integers: numbered", "image id beyond 64 bits numbered"),
    ("no 'file_name': read", "file name taken from coco_url"),
)


def _note_kind(note: str) -> str:
    return next((kind for phrase, kind in _NOTE_KINDS if phrase in note), "other")


_NEEDS_QUOTES = re.compile(r"[,;'\"]|^\s|\s$|\s\d+$|^$")


def listed_name(name: str) -> str:
    """``name`` as written in a ``name count, name count`` list: quoted (repr) where it holds a comma,
    semicolon or quote, ends in a number or space, or has a character that does not print."""
    return repr(name) if _NEEDS_QUOTES.search(name) or not name.isprintable() else name


def _classes_line(classes: List[Dict[str, Any]], shown: int = 12) -> str:
    """All classes in id order, or, with many, the `shown` // 2 with the most and the fewest boxes."""
    def listed(items: List[Dict[str, Any]]) -> str:
        return ", ".join(f"{listed_name(c['name'])} {c['boxes']}" for c in items)

    if len(classes) <= shown:
        return f"classes ({len(classes)}): {listed(classes)}"
    if not any(c["boxes"] for c in classes):  # nothing written: a ranking of zeros says nothing
        return f"classes ({len(classes)}): no box written (all in report.json)"
    by_boxes = sorted(classes, key=lambda c: (-c["boxes"], c["id"]))
    half = shown // 2
    return (f"classes ({len(classes)}): most boxes {listed(by_boxes[:half])}; fewest {listed(by_boxes[-half:])} "
            "(all in report.json)")


def _not_in_val_warning(report: Dict[str, Any]) -> str:
    """The classes of two images or more that val cannot score, with the fix."""
    from edge_trash.tfrecords.build import counted, examples

    missing = report["classes_not_in_val"]
    val = report["splits"].get("val", {}).get("images", 0)
    fix = ("the given val file holds none" if report["options"].get("keep_splits") else
           f"val holds {counted(val, 'image', 'images')}: a larger --val-fraction gives them one, unless their "
           "images must stay in train, as a class's last training image or a run of video frames or copies of one "
           "picture with one does")
    return (f"warning: {counted(len(missing), 'class', 'classes')} of two images or more "
            f"{'has no box in val, so its' if len(missing) == 1 else 'have no box in val, so their'} AP cannot be "
            "measured: "
            f"{examples(missing, 8)} ({fix}; all in classes_not_in_val in report.json)")


def _not_in_train_warning(report: Dict[str, Any]) -> str:
    """The classes with no box in train, each with why: all its images skipped, or held out only."""
    from edge_trash.tfrecords.build import counted, examples

    boxes = {c["name"]: c["boxes"] for c in report["classes"]}
    crowd = {c["name"]: c.get("crowd_boxes", 0) for c in report["classes"]}
    missing = report["classes_not_in_train"]
    skipped = [n for n in missing if not boxes[n]]
    crowds = [n for n in missing if boxes[n] and crowd[n] == boxes[n]]
    held = [n for n in missing if boxes[n] > crowd[n]]
    why = []
    if skipped:
        why.append(f"{examples(skipped, 8)} (every image with one was skipped: see images_skipped in report.json)")
    if crowds:
        why.append(f"{examples(crowds, 8)} (only crowd regions, iscrowd 1, which training leaves out)")
    if held:
        why.append(f"{examples(held, 8)} (only in " + (
            "the given val/test files" if report["options"].get("keep_splits") else
            "val/test: val needed an image and each image or group that moves as one (copies of one picture, a run "
            "of video frames) held a class's last training picture; add other photos of "
            + ("it" if len(held) == 1 else "each")) + ")")
    return (f"warning: {counted(len(missing), 'class has', 'classes have')} no box in train, so the model "
            f"cannot learn {'it' if len(missing) == 1 else 'them'}: " + "; ".join(why)
            + (" (all in classes_not_in_train in report.json)" if len(missing) > 8 else ""))


def _untrainable_warning(report: Dict[str, Any]) -> str:
    """Why ``edge-trash train`` cannot use these records: no train images, or no val split."""
    from edge_trash.tfrecords.build import counted

    splits, options = report["splits"], report["options"]
    if options.get("folds"):
        return ""
    if not splits.get("train", {}).get("images"):
        failed = sum(1 for s in report["images_skipped"] if not s["reason"].startswith("file not found"))
        why = ("none of the annotation files is a train split: give one too" if options.get("keep_splits")
               else "every image went to val/test" + (f"; {counted(failed, 'image was', 'images were')} skipped, "
                                                      "see below" if failed else ""))
        return (f"warning: no training images ({why}), so `edge-trash train` cannot use these records; "
                "`edge-trash evaluate` can")
    if not splits.get("val", {}).get("images"):
        fraction = options.get("val_fraction") or 0
        return ("warning: no val split, which `edge-trash train` needs to keep its best checkpoint: "
                + ("give a val annotation file too" if options.get("keep_splits") else
                   "rebuild with --val-fraction above 0" if fraction <= 0 else
                   f"{counted(report['images_written'], 'image is', 'images are')} too few to hold one out at "
                   f"--val-fraction {fraction:g}: add annotated images" + (
                       ", or rebuild with --split-by image (frames, copies or variants of one photo now move "
                       "together; val may then hold near-copies of training images)"
                       if any((report.get("split_units") or {}).get(k) for k in ("frames", "same_files", "variants"))
                       else "")))
    val = splits["val"]
    if val["boxes"] == val["crowd_boxes"]:  # COCO's AP leaves crowd regions out
        crowd = f" other than {counted(val['crowd_boxes'], 'crowd region', 'crowd regions')}" if val["boxes"] else ""
        return (f"warning: the val split holds {counted(val['images'], 'image', 'images')} and not one box{crowd}, "
                "so no AP can be measured on it and `edge-trash train` cannot choose its best checkpoint: "
                + ("give a val annotation file with boxes" if options.get("keep_splits") else
                   "rebuild with a larger --val-fraction or more annotated images"))
    return ""


def _resplit_note(report: Dict[str, Any]) -> str:
    """A note when the annotation files name their splits (a dataset's official train/val/test) and the
    build split them anew: scores on the new val are not comparable with results published on the old one.
    Nothing when fewer than two splits are named (a lone ``instances_train2017.json`` is simply split)."""
    options = report["options"]
    named = [src.get("split_in_name") for src in report.get("sources", [])]
    per_image = dict(report.get("splits_named_per_image") or {})
    unnamed = per_image.pop("unnamed", 0)  # images whose file and entry name no split
    splits = sorted({split for split in named if split} | set(per_image), key=("train", "val", "test").index)
    if options.get("keep_splits") or len(splits) < 2:
        return ""  # one file named 'train' alone has no other split to keep
    given = ", ".join(splits)
    how = "split into folds" if options.get("folds") else "split anew (stratified by class)"
    if unnamed:
        keep = "; to keep a dataset's own splits, give every file a split word in its name or folder and --keep-splits"
    else:
        keep = "; --keep-splits keeps the dataset's own splits (to compare with results published on them)"
    whose = "the annotations name their images' splits" if per_image else "the annotation files name their splits"
    return f"note: {whose} ({given}); their images were pooled and {how}" + keep


def _oversized_split_note(report: Dict[str, Any]) -> str:
    """A note when val or test holds far more of the images than its fraction asks (at least twice as many
    images and 10 points more): they move in groups (runs of video frames, copies of one picture) and the split
    took a whole one. "" otherwise."""
    options = report["options"]
    if options.get("keep_splits") or options.get("folds"):
        return ""
    total = sum(s.get("images", 0) for s in report["splits"].values())
    notes = []
    for split in ("val", "test"):
        asked = options.get(f"{split}_fraction") or 0
        got = report["splits"].get(split, {}).get("images", 0)
        if asked and total and got >= 2 * max(1, round(total * asked)) and got / total >= asked + 0.1:
            notes.append(f"{split} holds {got} of the {total} images ({got / total:.0%}), far more than "
                         f"--{split}-fraction {asked} asks")
    if not notes:
        return ""
    return (f"note: {'; '.join(notes)}: images move in groups that stay in one split (runs of video frames, copies "
            "of one picture, a photo's variants) and a whole group was the smallest that could go; more videos or "
            "photos bring it nearer (see split_units in report.json)")


def _folder_above_hint(hint: Dict[str, Any]) -> str:
    """The summary's line for an ``images_folder_hint`` with ``missing``: ``--images`` given too deep."""
    n, missing = hint["images"], hint["missing"]
    which = ("the missing image is" if missing == 1 else f"all {missing} missing images are" if n == missing
             else f"{n} of the {missing} missing images {'is' if n == 1 else 'are'}")
    folders = list(dict.fromkeys(hint["folders"]))
    if len(folders) == 1:
        return f"hint: {which} under {folders[0]}: give --images {shell_word(folders[0])}"
    return (f"hint: {which} in folders above --images: give "
            + " ".join(f"--images {shell_word(f)}" for f in hint["folders"]) + " (one per --annotations, in order)")


def summarize(report: Dict[str, Any], out: Path, seconds: float) -> str:
    """The human summary printed at the end of a build."""
    from edge_trash.tfrecords.build import (counted, examples, ignored_message, iscrowd_message,
                                            pre_annotation_message, reasons_by_kind, score_message, split_counts)
    from edge_trash.tfrecords.split_units import (frames_leak_message, split_frame_by_frame, summary_line,
                                                  variants_leak_message)

    lines = []
    lines.append(f"images: {report['images_written']} written, {len(report['images_skipped'])} skipped "
                 f"of {report['images_total']}; boxes: {report['boxes_written']} written, "
                 f"{len(report['boxes_dropped'])} dropped, {report['boxes_clipped']} clipped of {report['boxes_total']}")
    lines.append(f"splits: {split_counts(report['splits'])}")
    written = report["images_written"] > 0  # else the CLI's error says why, and split notes would mislead
    untrainable = _untrainable_warning(report) if written else ""
    if untrainable:
        lines.append(untrainable)
    resplit = _resplit_note(report)
    if resplit:
        lines.append(resplit)
    held = report["options"].get("test_fraction")
    if written and held and not report["options"].get("keep_splits") and \
            not report["splits"].get("test", {}).get("images"):
        lines.append(f"note: --test-fraction {held} held out no image (too few images, or groups that move as one, "
                     "to spare one): there is no test split" + ("" if report["options"].get("folds") else
                                                               ", and `edge-trash evaluate` scores val"))
    oversized = _oversized_split_note(report) if written else ""
    if oversized:
        lines.append(oversized)
    near = report.get("frames_next_to_train") or {}
    units = summary_line(report.get("split_units"), near)
    if units:
        lines.append(units)
    options = report["options"]
    chosen = ("leave --keep-splits out" if options.get("keep_splits")
              else "leave --split-by out" if options.get("split_by") == "image" else "")
    if chosen and split_frame_by_frame(near):
        lines.append(f"warning: {frames_leak_message(near, chosen + ' to split whole runs of frames')}")
    variants = report.get("variants_in_several_splits") or {}
    if variants.get("photos"):
        lines.append("warning: " + variants_leak_message(
            variants, f"{chosen} to keep each photo's variants in one split" if chosen else ""))
    lines.append(_classes_line(report["classes"]))
    folded_into = (f"folded into '{report.get('other_class') or 'other'}'"
                   + (" (the dataset's own class for everything else, which they joined)"
                      if report.get("other_class_from_source") else ""))
    for key, label in (("classes_folded_into_other", folded_into),
                       ("classes_dropped_rare", "dropped as rare"), ("classes_unused", "without boxes (left out)"),
                       ("class_map_unknown_sources", "named by the class map but absent")):
        if report.get(key):  # quoted: a class named 'none' must not read as "no class"
            lines.append(f"classes {label}: {examples([repr(n) for n in report[key]], 12)}"
                         + (f" (all in {key} in report.json)" if len(report[key]) > 12 else ""))
    if report.get("categories_kept_as_target"):  # once dropped: a relabeled queue export's boxes all went
        kept = report["categories_kept_as_target"]
        lines.append(f"warning: {counted(len(kept), 'category', 'categories')} the class map does not name "
                     f"{'bears' if len(kept) == 1 else 'bear'} the name of one of its targets and "
                     f"{'is' if len(kept) == 1 else 'are'} kept as that class (a relabeled queue export?): "
                     f"{examples([repr(n) for n in kept], 12)}; map {'it' if len(kept) == 1 else 'them'} to an empty "
                     "target to drop")
    if report.get("classes_not_in_train") and report["images_written"]:  # with none, the error says why
        lines.append(_not_in_train_warning(report))
    if report.get("classes_not_in_val"):
        lines.append(_not_in_val_warning(report))
    tiny = report.get("boxes_under_a_stored_pixel") or {}
    if tiny.get("boxes"):
        lines.append(f"note: {counted(tiny['boxes'], 'box is', 'boxes are')} under one pixel wide or high in the "
                     f"stored images (the shrink to --max-size {report['options']['max_size']} made them so; "
                     f"{counted(len(tiny['image_ids']), 'image', 'images')}: boxes_under_a_stored_pixel in "
                     "report.json): kept, though too small for a detector to see; a larger --max-size keeps them")
    folds = report["options"].get("folds") or 0
    written = [name for name in report["splits"] if name.startswith("fold")]
    if folds and report["images_written"] and len(written) < folds:  # files found unreadable while converting
        fix = (f"--folds {len(written)} or fewer for folds numbered from 0" if len(written) >= 2 else
               "--folds 0 for a train/val split")
        lines.append(f"warning: --folds {folds} asked, but only {counted(len(written), 'fold holds', 'folds hold')} "
                     f"images ({', '.join(written)}): too few images converted for {folds} (see images_skipped in "
                     f"report.json); rebuild with {fix}")
    if report.get("boxes_rotated"):
        lines.append(f"rotated boxes (CVAT's attributes.rotation): {report['boxes_rotated']}, each kept as the "
                     "upright box around it (COCO and the detector have no angle)")
    if report.get("repeated_categories"):
        from edge_trash.tfrecords.coco import repeated_categories_note

        lines.append(f"note: {repeated_categories_note(report['repeated_categories'])}")
    if report.get("bbox_unreadable_boxed_from_mask"):
        from edge_trash.tfrecords.coco import bbox_from_mask_note

        lines.append(f"note: {bbox_from_mask_note(report['bbox_unreadable_boxed_from_mask'])}")
    for group in report.get("categories_merged_by_name", []):
        lines.append(f"note: categories {', '.join(str(i) for i in group['category_ids'])} share the name "
                     f"'{group['name']}' and became one class")
    for key in ("bbox_format_warning", "category_ids_warning", "crowd_masks_warning"):
        if report.get(key):
            lines.append(f"warning: {report[key]}")
    if report.get("supercategories_warning"):
        lines.append(f"warning: {report['supercategories_warning']}")
    if report.get("similar_class_names"):
        from edge_trash.tfrecords.class_map import similar_names_warning

        lines += [f"warning: {similar_names_warning(group)}" for group in report["similar_class_names"]]
    if report.get("class_names_read_as_indices"):
        from edge_trash.tfrecords.class_map import read_as_indices_warning

        lines.append(f"warning: {read_as_indices_warning(report['class_names_read_as_indices'])}")
    if report.get("image_ids_numbered"):
        lines.append(f"image ids written as text, numbered after the numeric ones: {report['image_ids_numbered']} "
                     "(splits.json and image/source_id hold the numbers; image_notes map them back)")
    background = report.get("background_images_by_split") or {}
    learned = sum(n for split, n in background.items() if split == "train" or split.startswith("fold"))
    held = sum(background.values()) - learned
    if learned or held:
        lines.append("background images (no box): " + "; ".join(
            ([f"{learned} the model learns from (what is not an object)"] if learned else [])
            + ([f"{held} in val/test (any detection on them counts as a false positive)"] if held else [])))
    held_out = ("val", "test") if report["options"].get("keep_splits") else ()
    unannotated = [src for src in report["sources"] if src["images"] and not src["annotations"]]
    if unannotated and len(report["sources"]) > 1:
        lines += [f"warning: {src['file']} has {counted(src['images'], 'image', 'images')} and not one annotation: "
                  + ("they are kept as val/test images without objects, so any detection on them counts as a false "
                     "positive" if src.get("split_in_name") in held_out else
                     "they are written as background, so any object in them is trained as not an object")
                  + "; if they are unlabelled, leave the file out" for src in unannotated]
    if report.get("image_ids_of_several_files"):
        shared = report["image_ids_of_several_files"]
        lines.append(f"warning: {counted(len(shared), 'image id is', 'image ids are')} each given to different files "
                     f"({examples(shared)}; two COCO files joined into one?): which photo each of their boxes is on "
                     "cannot be told, so none of those images is written (image_ids_of_several_files in report.json); "
                     "give each image its own id, or each file as its own --annotations (clashing ids are renumbered)")
    if report["duplicate_annotation_ids"]:
        lines.append(f"duplicate annotation ids (kept, renumbered): {len(report['duplicate_annotation_ids'])}")
    if report.get("iscrowd_not_understood"):
        lines.append(f"warning: {iscrowd_message(report['iscrowd_not_understood'])}")
    if report.get("ignored_as_crowd"):
        lines.append(f"note: {ignored_message(report['ignored_as_crowd'])}")
    if report.get("device_pre_annotations"):
        lines.append(f"warning: {pre_annotation_message(report['device_pre_annotations'])}")
    if report.get("annotations_with_score"):
        lines.append(f"warning: {score_message(report['annotations_with_score'])}")
    for title, key in (("skipped images", "images_skipped"), ("dropped boxes", "boxes_dropped")):
        if report[key]:
            where = "" if report.get("earlier_build_kept") else f"in {key} in report.json"  # none written
            lines.append(f"{title} by reason: " + reasons_by_kind([i["reason"] for i in report[key]], where=where))
    if report.get("duplicate_images"):
        groups = report["duplicate_images"]
        leaks = sum(1 for g in groups if len(g["splits"]) > 1)
        entries = sum(len(g["image_ids"]) for g in groups)
        lines.append(f"warning: {len(groups)} {'picture appears' if len(groups) == 1 else 'pictures appear'} "
                     f"under more than one image entry ({entries} entries)"
                     + (f", {leaks} of them in more than one split (held-out scores are inflated: remove the "
                        "copies from the annotations)" if leaks else "") + " (see duplicate_images in report.json)")
    if report["image_notes"]:
        kinds = Counter(_note_kind(n) for entry in report["image_notes"] for n in entry["notes"])
        commonest = sorted(kinds.items(), key=lambda kind_n: (-kind_n[1], kind_n[0]))[:6]
        lines.append(f"images adjusted: {len(report['image_notes'])} ("
                     + "; ".join(f"{n}x {kind}" for kind, n in commonest) + "; see image_notes in report.json)")
    hint = report.get("images_folder_hint")
    if hint and hint.get("missing"):  # --images too deep: names not found under it are files above it
        lines.append(_folder_above_hint(hint))
    elif hint:
        folders = list(dict.fromkeys(hint["folders"]))
        found = f"{plural(hint['images'], 'image')} {'was' if hint['images'] == 1 else 'were'} found"
        if len(folders) == 1:
            lines.append(f"hint: {found} under {folders[0]}, the folder their file_name "
                         f"is relative to: give --images {shell_word(folders[0])} to spare the search")
        else:
            lines.append(f"hint: {found} in the folders their file_name is relative to, "
                         "below --images: give " + " ".join(f"--images {shell_word(f)}" for f in hint["folders"])
                         + " (one per --annotations, in order) to spare the search")
    if report.get("interrupted_build") == "finished":
        lines.append(f"note: {out} held a build stopped while moving its files into place: it was finished first")
    if report.get("earlier_build_kept") and report.get("interrupted_build") == "unfinished":
        lines.append(f"build-tfrecords: no image converted, so nothing was written; {out} still holds a build "
                     "stopped while moving its files into place, some of them gone: training refuses it until a "
                     "build there completes")
        return "\n".join(lines)
    if report.get("earlier_build_kept"):
        lines.append(f"build-tfrecords: no image converted, so nothing was written: the earlier build in {out} is "
                     "as it was")
        return "\n".join(lines)
    if report.get("only_report_written"):
        lines.append(f"build-tfrecords: no image converted, so only report.json (the reasons) was written to {out}")
        return "\n".join(lines)
    changes = report.get("split_changes")
    if changes:
        lines.append(split_changes_line(changes, (report.get("options") or {}).get("folds") or 0))
    if report.get("classes_changed"):
        lines.append(classes_changed_line(report["classes_changed"]))
    stale_reports = report.get("stale_analysis") or []
    if stale_reports:
        lines.append(f"note: {', '.join(str(out / name) for name in stale_reports)} "
                     f"{'holds' if len(stale_reports) == 1 else 'hold'} analyze's report on the earlier build here: "
                     "run edge-trash analyze again with --out there to bring it up to date")
    mb = report["bytes_written"] / 1e6
    stale = report.get("stale_shards_removed") or []
    replaced = f", replacing the earlier build there ({len(stale)} of its shards removed)" if stale else ""
    lines.append(f"build-tfrecords: wrote {counted(len(report['shards']), 'shard', 'shards')} ({mb:.1f} MB), "
                 f"labels.txt, label_map.pbtxt, splits.json, report.json to {out}{replaced} in {seconds:.1f}s")
    if report.get("interrupted_after_writing"):
        lines.append("note: the stop (Ctrl-C or SIGTERM) came while the files were moved into place: the build is "
                     f"complete in {out}, as above")
    return "\n".join(lines)


def classes_changed_line(changed: Dict[str, List[str]]) -> str:
    """The summary's warning that the build replaced in ``--out`` had other classes."""
    from edge_trash.tfrecords.build import examples

    earlier, now = changed["earlier"], changed["now"]
    gone, new = [n for n in earlier if n not in now], [n for n in now if n not in earlier]
    parts = []
    if gone:
        parts.append(f"{len(gone)} gone: {examples(gone)}")
    if new:
        parts.append(f"{len(new)} new: {examples(new)}")
    what = "; ".join(parts) or "the same names in another order"
    return (f"warning: the earlier build here had other classes ({len(earlier)}, now {len(now)}; {what}): a model "
            "or bundle trained on it does not match this build's labels.txt; train on this one (train --init RUN "
            "--config RUN/config.json starts from such a model's weights)")


def split_changes_line(changes: Dict[str, Any], folds: int = 0) -> str:
    """The summary's line on how the split moved from the earlier build in ``--out`` (``folds``:
    this build's ``--folds``)."""
    from edge_trash.tfrecords.build import counted

    if "not_compared" in changes:
        return f"{'warning' if changes.get('warning') else 'note'}: {changes['not_compared']}"
    matched, total = changes["matched"], changes["earlier_images"]
    said = (f"the earlier build here: {matched} of its {counted(total, 'image', 'images')} "
            f"{'is' if matched == 1 else 'are'} in this one")
    moved_files = changes.get("matched_by_picture") or 0
    if moved_files or matched < total:
        said += " (" + "; ".join(([f"{moved_files} found by their picture under another name"] if moved_files else [])
                                 + ([f"{total - matched} renamed, removed or not found now"] if matched < total
                                    else [])) + ")"
    moved, seen, refolded = changes["held_out_now_in_train"], changes["train_now_held_out"], changes["fold_changed"]
    earlier_folds = changes.get("earlier_folds") or 0
    parts = []
    if earlier_folds != folds:
        parts.append(f"it was split into {earlier_folds} folds" if earlier_folds else "it had no folds")
    if refolded:
        parts.append(f"{counted(refolded, 'image is', 'images are')} in another fold now (cross-validation scores "
                     "are not comparable with the earlier build's)")
    if seen:
        parts.append(f"{counted(seen, 'of its training images is', 'of its training images are')} in val/test now: "
                     "a model trained on the earlier build (or fine-tuned from one with --init) has seen them, which "
                     "inflates its scores on this build's val/test")
    if moved:
        parts.append(f"{counted(moved, 'of its val/test images is', 'of its val/test images are')} in training now")
    if not parts:
        return f"note: {said}, each in the split it was in"
    many = moved + seen > 0.25 * max(1, changes["earlier_held_out"]) or refolded > 0.25 * changes["earlier_train"]
    return (f"warning: {said}; " + "; ".join(parts)
            + (" (a changed --seed, fraction, --folds, --keep-splits or class map, or renamed files, moves many)"
               if many else ""))


def _folds_value(ctx: click.Context, param: click.Parameter, value: int) -> int:
    if value == 1:  # a usage error (exit 2), as the values IntRange refuses are
        raise click.BadParameter("0 (off) or at least 2, got 1: one fold leaves nothing to validate on")
    return value


@click.command("build-tfrecords")
@click.option("--annotations", required=True, multiple=True, type=click.Path(path_type=Path),
              help="COCO annotation JSON; repeat it to merge several (a Roboflow export's train, valid and "
                   "test: categories matched by name).")
@click.option("--images", multiple=True, type=click.Path(path_type=Path),
              help="Folder the file_name entries are relative to: once for all files, or once per "
                   "--annotations in the same order.  [default: each annotation file's folder, as in TACO and "
                   "Roboflow exports, or the folder above an 'annotations' folder of JSON files alone, as in "
                   "COCO]")
@click.option("--keep-splits", is_flag=True,
              help="Keep the split each annotation file's name or folder gives (train, valid, test), or for a file "
                   "naming none, each image entry's (a 'split' field, or a train/valid/test folder in its "
                   "file_name), instead of a new stratified split; --val-fraction and --test-fraction are then "
                   "unused.")
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path), help="Output folder.")
@click.option("--class-map", type=click.Path(dir_okay=False, path_type=Path),
              help="CSV 'source_name,target_name' (TACO map_*.csv; ';' or tab separated and Excel's "
                   "Windows-1252 CSV read too) or YAML mapping.")
@click.option("--supercategories", is_flag=True, help="Train on the COCO supercategories.")
@click.option("--min-instances", default=1, show_default=True, type=click.IntRange(min=0),
              help="Classes with fewer valid boxes in the annotation files (as analyze counts them) are folded "
                   "into 'other' (or a class of that name the dataset has) or dropped (--rare).")
@click.option("--rare", type=click.Choice(["other", "drop"]), default="other", show_default=True,
              help="What --min-instances does with a rarer class: fold it into 'other', or drop its boxes (its "
                   "images stay, as background where nothing else is in them).")
@click.option("--val-fraction", default=0.15, show_default=True, type=click.FloatRange(0, 1, max_open=True),
              help="Share of images held out to validate on, stratified: every class with two images gets one "
                   "while val has room (a class it cannot hold is named).")
@click.option("--test-fraction", default=0.1, show_default=True, type=click.FloatRange(0, 1, max_open=True),
              help="Share of images held out for the final test (with --folds too).")
@click.option("--split-by", type=click.Choice(["auto", "image", "folder"]), default="auto", show_default=True,
              help="What moves between splits as one (copies of one file always do). auto: runs of consecutive "
                   "video frames (video_id/frame_id in the JSON, or 'frame' and a number in the file name: "
                   "vid_2_frame0001.jpg), so val frames touch train only where runs meet, a Roboflow photo's augmented "
                   "variants (IMG_1_jpg.rf.<hash>.jpg), and each other image alone; image: every image alone; "
                   "folder: each folder of file_name (one recording session per folder).")
@click.option("--folds", default=0, show_default=True, type=click.IntRange(min=0), callback=_folds_value,
              help="0 (off) or K >= 2: write K stratified folds (fold0..foldK-1) instead of train/val (and test, "
                   "from --test-fraction; --val-fraction is unused); `edge-trash train --fold k` trains on the others "
                   "and validates on fold k.")
@click.option("--max-size", default=640, show_default=True, type=click.IntRange(min=32),
              help="Shrink so the long side is at most this many pixels.")
@click.option("--max-pixels", default=150_000_000, show_default=True, type=click.IntRange(min=1),
              help="Refuse images with more pixels (decompression bombs).")
@click.option("--quality", default=90, show_default=True, type=click.IntRange(1, 100), help="JPEG quality.")
@click.option("--shard-size", default=256, show_default=True, type=click.IntRange(min=1),
              help="Images per shard (about).")
@click.option("--workers", type=click.IntRange(min=1),
              help="Decoding processes (at most one per usable CPU); the output is the same with any number.  "
                   "[default: one per CPU]")
@click.option("--seed", default=0, show_default=True, type=int,
              help="Split seed; same seed, same bytes. Each image's place is a seeded hash of its file, so a rebuild "
                   "after adding or removing photos leaves nearly all others in their split (and says so).")
@click.option("--strict", is_flag=True,
              help="Exit non-zero (4) when any image or box was skipped (not the boxes an empty class-map target "
                   "or --rare drop asks to drop), or a box is still a device's detection (\"pre_annotation\": "
                   "true, from `queue export`); the build is still written.")
@click.option("--quiet", "--no-progress", "quiet", is_flag=True,
              help="No progress bar (as train --no-progress).")
def build_tfrecords(annotations: Tuple[Path, ...], images: Tuple[Path, ...], keep_splits: bool, out: Path,
                    class_map: Optional[Path], supercategories: bool, min_instances: int, rare: str,
                    val_fraction: float, test_fraction: float, split_by: str, folds: int, max_size: int,
                    max_pixels: int, quality: int, shard_size: int, workers: Optional[int], seed: int, strict: bool,
                    quiet: bool) -> None:
    """Convert a COCO detection dataset into validated, sharded TFRecords.

    Writes train/val/test shards, labels.txt, label_map.pbtxt, splits.json and
    report.json into OUT. Bad images and boxes are skipped and reported with
    their reason. Exit code: 0 when anything usable came out; 1 when no image
    converted (an earlier build in OUT is left as it was) or on an error (options
    that do not combine, such as fractions summing to 1 or more, among them); 2 for
    an option value out of its range (--folds 1 too); 4 with --strict when anything
    was skipped or a box is still marked as a device's unreviewed detection.
    """
    from edge_trash.tfrecords.build import BuildError, BuildOptions
    from edge_trash.tfrecords.build import build_tfrecords as build
    from edge_trash.tfrecords.class_map import ClassMapError
    from edge_trash.tfrecords.coco import CocoFormatError

    workers, note = worker_count(workers)
    options = BuildOptions(annotations=list(annotations), images=list(images) or None, out=out,
                           keep_splits=keep_splits, class_map=class_map, supercategories=supercategories,
                           min_instances=min_instances, rare=rare,
                           val_fraction=val_fraction, test_fraction=test_fraction, split_by=split_by, folds=folds,
                           max_size=max_size, max_pixels=max_pixels, quality=quality, shard_size=shard_size,
                           workers=workers, seed=seed, strict=strict)
    try:  # options that do not combine are said before any line on what the build will read (build checks again)
        options.validate()
    except (CocoFormatError, BuildError) as exc:
        raise click.ClickException(str(exc))
    except OSError as exc:  # a folder on the way this user may not enter
        raise click.ClickException(build_os_error(exc, out))
    if not images and all(json_read_estimate(a) is not None for a in annotations):
        from edge_trash.tfrecords.image_paths import default_images_folder

        folders = dict.fromkeys(default_images_folder(a) for a in annotations)
        click.echo("images: reading file_name entries under " + ", ".join(f"{folder} ({why})" for folder, why in folders)
                   + "; --images changes it")
    if note:
        click.echo(note, err=True)
    start = time.monotonic()
    stop_on_sigterm()  # kill, timeout, docker stop: clean up as after Ctrl-C
    if not quiet:
        announce_big_annotations(annotations)
    try:
        report = build(options, progress=not quiet)
    except (CocoFormatError, ClassMapError, BuildError) as exc:
        raise click.ClickException(str(exc))
    except WorkerLost as exc:
        raise click.ClickException(f"{exc}; nothing was written: {out} is as it was")
    except OSError as exc:
        raise click.ClickException(build_os_error(exc, out))
    click.echo(summarize(report, out, time.monotonic() - start))
    if report["images_written"] == 0:
        missing = sum(1 for i in report["images_skipped"] if i["reason"].startswith("file not found"))
        # the images whose file was looked for: not those left out for their annotations alone
        looked_up = [i for i in report["images_skipped"]
                     if not i["reason"].startswith(("every box was dropped", "duplicate image id"))]
        from edge_trash.tfrecords.image_paths import NOT_FOUND_WHY

        places = report.get("folders_sharing_names") or []  # each name in several of them: not read
        several = [i for i in report["images_skipped"] if i["reason"].endswith(NOT_FOUND_WHY[0][0])]
        if missing and missing == len(looked_up) == len(several) and places:
            click.echo(f"error: none of the {missing} image files could be told apart from another file of its name "
                       f"(each is in several sub-folders): give the folder the file_name entries are relative to, one "
                       f"of {' '.join(f'--images {shell_word(p)}' for p in places)}", err=True)
        elif missing and missing == len(looked_up):
            folders = ", ".join(dict.fromkeys(src["images_dir"] for src in report["sources"]))
            first = looked_up[0]["file_name"]
            fix = ("check --images: it must be" if images else "give --images,")
            click.echo(f"error: none of the {missing} image files was found under {folders}: {fix} the folder the "
                       f"file_name entries are relative to (the first is {first!r})", err=True)
        elif report.get("earlier_build_kept"):
            click.echo("error: no image could be converted (the reasons are above)", err=True)
        else:
            click.echo("error: no image could be converted; see images_skipped in report.json", err=True)
        raise SystemExit(EXIT_NOTHING_WRITTEN)
    bad_boxes = [d for d in report["boxes_dropped"] if not d.get("as_asked")]  # not those the options drop
    if strict and (report["images_skipped"] or bad_boxes):
        skipped = f"{plural(len(report['images_skipped']), 'image')} and {plural(len(bad_boxes), 'box')}"
        click.echo(f"--strict: {skipped} were skipped; see report.json", err=True)
        raise SystemExit(EXIT_STRICT)
    unreviewed = sum((report.get("device_pre_annotations") or {}).values())
    if strict and unreviewed:
        click.echo(f"--strict: {plural(unreviewed, 'box')} {'is' if unreviewed == 1 else 'are'} still the device's "
                   "detections, not reviewed (above)", err=True)
        raise SystemExit(EXIT_STRICT)
    folders = [src["images_dir"] for src in report["sources"]]  # the folders the build read: analyze reads them too
    hint = report.get("images_folder_hint")
    if hint and not hint.get("missing") and len(hint.get("folders") or []) == len(folders):
        folders = list(hint["folders"])  # the --images the hint above names: analyze is spared the search too
    folders = folders[:1] if len(set(folders)) == 1 else folders
    given = " ".join([f"--annotations {shell_word(a)}" for a in annotations]
                     + [f"--images {shell_word(f)}" for f in folders])
    from edge_trash.tfrecords.split_layout import train_command

    train = train_command(out, {name: split["boxes"] - split["crowd_boxes"]  # training leaves crowd regions out
                                for name, split in report["splits"].items()})
    click.echo(f"next: edge-trash analyze {given} --tfrecords {shell_word(out)} --out {shell_word(out / 'analysis')}"
               + (f"  |  {train}" if train else ""))

