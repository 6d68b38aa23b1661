"""``edge-trash analyze``: parse options, call :func:`~edge_trash.tfrecords.analyze.analyze`, print the summary."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import click

from edge_trash.terminal import stop_on_sigterm
from edge_trash.tfrecords.build_cli import announce_big_annotations
from edge_trash.tfrecords.workers import WorkerLost, worker_count


def summarize(stats: Dict[str, Any], out: Path, seconds: float) -> str:
    """The short summary printed at the end of ``analyze``."""
    from edge_trash.tfrecords.build import counted, split_counts

    lines: List[str] = []
    ann = stats.get("annotations")
    if ann:
        p = ann["problems"]
        unread = ann.get("boxes_on_unreadable_images")
        on_unread = f", {unread} of them on images that cannot be read" if unread else ""
        lines.append(f"annotations: {counted(ann['images'], 'image', 'images')}, "
                     f"{counted(p['boxes_in_file'], 'box', 'boxes')} ({ann['boxes']} usable{on_unread}), "
                     f"{counted(ann['categories'], 'category', 'categories')}; rejected boxes: {p['boxes_rejected']}, "
                     f"clipped: {p['boxes_clipped']}, images without boxes: {p['images_without_boxes']}")
    tfr = stats.get("tfrecords")
    if tfr:
        lines.append("tfrecords: " + split_counts(tfr["splits"]))
    flags = stats["flags"]
    lines.append(f"flags ({len(flags)}):" if flags else "flags: none")
    for flag in flags:
        message = "".join(c if c.isprintable() else c.encode("unicode_escape", "backslashreplace").decode("ascii")
                          for c in flag["message"])  # a file name's line break or tab stays on one line
        message = message if len(message) <= 160 else message[:157] + "..."
        lines.append(f"  [{flag['where']}] {flag['kind']}: {message}")
    plots = [name for s in [ann] + list((tfr or {}).get("splits", {}).values()) if s for name in s["plots"]]
    size = sum((out / name).stat().st_size for name in ["report.md", "stats.json", *plots] if (out / name).is_file())
    shown = f"{size / 1e6:.1f} MB" if size >= 1e6 else f"{size / 1e3:.0f} kB"
    lines.append(f"analyze: wrote report.md, stats.json and {len(plots)} plots ({shown}) to {out} in {seconds:.1f}s")
    return "\n".join(lines)


def next_command(annotations: Sequence[Path], images: Sequence[Path], tfrecords: Optional[Path],
                 usable_boxes: Optional[int] = None, split_boxes: Optional[Dict[str, int]] = None) -> str:
    """The command a user runs after looking at the report (``usable_boxes``: the annotations' boxes
    build-tfrecords could use; with none, the annotations need fixing first; ``split_boxes``: the boxes of
    each split of ``tfrecords``)."""
    if tfrecords is None and usable_boxes == 0:
        return ("next: fix the annotations first: not one box in them is usable (report.md says why), and "
                "build-tfrecords needs at least one")
    if tfrecords is not None:
        from edge_trash.tfrecords.split_layout import train_command

        train = train_command(tfrecords, split_boxes)
        return (f"next: {train}" if train else "next: these records lack the train or val images (or boxes) "
                "edge-trash train needs; rebuild them (build-tfrecords' summary says which)")
    from edge_trash.terminal import shell_word
    from edge_trash.tfrecords.image_paths import default_images_folder, holds_no_image

    given = " ".join([f"--annotations {shell_word(a)}" for a in annotations]
                     + [f"--images {shell_word(d)}" for d in images])
    dataset_folders = {Path(p).resolve() for p in [*images, *(Path(a).parent for a in annotations)]}
    out = "tfrecords/" if Path("data").resolve() in dataset_folders else "data/"  # never into the photos' folder
    if not images:  # the build's default folder: a copy of the JSON alone has no photo beside it
        empty = [default_images_folder(Path(a))[0] for a in annotations]
        empty = [str(f) for f in dict.fromkeys(empty) if holds_no_image(f)]
        if empty:
            return (f"next: edge-trash build-tfrecords {given} --images IMAGES --out {out} (IMAGES: the folder the "
                    f"file_name entries are relative to; {' and '.join(empty)} holds no image)")
    return f"next: edge-trash build-tfrecords {given} --out {out}"


@click.command("analyze")
@click.option("--annotations", multiple=True, type=click.Path(path_type=Path),
              help="COCO annotation JSON; repeat it to analyse several as one (merged as build-tfrecords does).")
@click.option("--images", multiple=True, type=click.Path(path_type=Path),
              help="Folder the JSON file_name entries are relative to (adds brightness, unreadable files, "
                   "size mismatches and copies of one picture): once for all files, or once per --annotations.")
@click.option("--tfrecords", "tfrecords_given", multiple=True, type=click.Path(file_okay=False, path_type=Path),
              help="The --out folder of build-tfrecords: analyse each split as stored.")
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder for report.md, stats.json and the plots.")
@click.option("--rare-instances", default=20, show_default=True, type=click.IntRange(min=0),
              help="Flag classes with fewer instances than this.")
@click.option("--dark-luma", default=50.0, show_default=True, type=click.FloatRange(0, 255),
              help="Flag images whose mean luma (0-255) is below this.")
@click.option("--max-pixels", default=150_000_000, show_default=True, type=click.IntRange(min=1),
              help="Refuse images with more pixels (decompression bombs), as build-tfrecords --max-pixels does.")
@click.option("--no-plots", is_flag=True, help="Skip the PNG plots (faster on huge datasets).")
@click.option("--workers", type=click.IntRange(min=1),
              help="Processes reading the images (at most one per usable CPU); the report is the same with any "
                   "number.  [default: one per CPU]")
@click.option("--quiet", "--no-progress", "quiet", is_flag=True,
              help="No progress bar (as train --no-progress).")
def analyze(annotations: Tuple[Path, ...], images: Tuple[Path, ...], tfrecords_given: Tuple[Path, ...], out: Path,
            rare_instances: int, dark_luma: float, max_pixels: int, no_plots: bool, workers: Optional[int],
            quiet: bool) -> None:
    """Report class balance, box sizes and image problems of a dataset.

    Give --annotations (with --images to also read the files: brightness,
    unreadable files, files whose size differs from the JSON, one picture
    under several entries), --tfrecords, or both. Writes report.md, stats.json
    and PNG plots into OUT and flags long-tail classes, tiny objects (and
    classes mostly of them), dark images, outlier image sizes, annotation
    problems (NaN/Infinity boxes,
    boxes past the image, unknown ids, duplicate ids, unused categories,
    images without boxes) and leaks between splits (one picture, neighbouring
    video frames or a photo's Roboflow variants in train and val/test).
    """
    if len(tfrecords_given) > 1:  # click would keep the last one silently
        raise click.UsageError(f"--tfrecords given {len(tfrecords_given)} times: analyze reads one build; to compare "
                               "builds, run analyze once for each, with its own --out")
    tfrecords = tfrecords_given[0] if tfrecords_given else None
    if images and not annotations:
        raise click.UsageError("--images needs --annotations (the image file names come from the JSON)")
    if not annotations and tfrecords is None:
        raise click.UsageError("give --annotations A.json, --tfrecords DIR, or both")
    from edge_trash.tfrecords.analyze import AnalyzeError, Thresholds
    from edge_trash.tfrecords.analyze import analyze as run_analysis
    from edge_trash.tfrecords.coco import CocoFormatError

    start = time.monotonic()
    stop_on_sigterm()  # kill, timeout, docker stop: end the workers as after Ctrl-C
    processes, note = worker_count(workers)
    if note:
        click.echo(note, err=True)
    if not quiet:
        announce_big_annotations(annotations)
    try:
        stats = run_analysis(list(annotations) or None, list(images) or None, tfrecords, out=out,
                             thresholds=Thresholds(rare_instances=rare_instances, dark_luma=dark_luma),
                             plots=not no_plots, progress=not quiet, workers=processes,
                             max_pixels=max_pixels)
    except (AnalyzeError, CocoFormatError) as exc:
        raise click.ClickException(str(exc))
    except WorkerLost as exc:
        raise click.ClickException(f"{exc}; nothing was written to {out}")
    except OSError as exc:
        from edge_trash.atomic_files import os_error_message

        raise click.ClickException(os_error_message(exc, out))
    click.echo(summarize(stats, out, time.monotonic() - start))
    split_boxes = {name: split["boxes"] - split["crowd_boxes"]  # training leaves crowd regions out
                   for name, split in (stats.get("tfrecords") or {}).get("splits", {}).items()}
    click.echo(next_command(annotations, images, tfrecords, (stats.get("annotations") or {}).get("boxes"),
                            split_boxes if tfrecords is not None else None))
