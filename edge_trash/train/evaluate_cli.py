"""``edge-trash evaluate``: COCO metrics of a run, SavedModel or .tflite on a TFRecord split.

Two forms::

    edge-trash evaluate --model RUN_DIR|SAVED_MODEL|MODEL.tflite --data TFRECORDS --out m.json
    edge-trash evaluate --detections DETS.json --annotations GT.json --out m.json

Imports only click and the standard library at module level.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import click

from edge_trash.atomic_files import write_text_atomic
from edge_trash.terminal import plural


def _write_json(path: Path, data: Any) -> None:
    write_text_atomic(path, json.dumps(data, indent=2) + "\n")


def _run_dir_of(model_path: Path) -> Optional[Path]:
    """The ``edge-trash train`` run a model comes from: the folder itself or, for its
    ``saved_model/``, the folder above (None for a .tflite or a foreign model)."""
    if (model_path / "config.json").is_file():
        return model_path
    if (model_path / "saved_model.pb").is_file() and (model_path.parent / "config.json").is_file():
        return model_path.parent
    return None


def run_file_problem(path: Path, flag: str, instead: str) -> str:
    """Why ``flag`` ``path`` must not be written ("" when it may): it is one of the files a run directory's
    ``train`` wrote (config.json, data.json, metrics.json, labels.txt, model.weights.h5, or a path inside its
    saved_model/, checkpoints/ or logs/), which evaluate would overwrite. ``instead`` names the file to suggest in
    ``RUN/eval/`` (``val.json``)."""
    from edge_trash.models.run_dir import CONFIG_JSON, RUN_FILES, RUN_FOLDERS

    path = Path(path)
    run, what = None, ""
    if (path.parent / CONFIG_JSON).is_file() and (path.name in RUN_FILES or path.name in RUN_FOLDERS):
        run = path.parent
        what = f"{path.name} is its {RUN_FILES.get(path.name) or RUN_FOLDERS[path.name]}"
    else:
        for folder in path.parents:
            if folder.name in RUN_FOLDERS and (folder.parent / CONFIG_JSON).is_file():
                run, what = folder.parent, f"{folder.name}/ holds its {RUN_FOLDERS[folder.name]}"
                break
    if run is None:
        return ""
    from edge_trash.terminal import shell_word

    return (f"{flag} {path}: {run} is a training run and {what}; evaluate would overwrite it: write it "
            f"elsewhere, e.g. {flag} {shell_word(run / 'eval' / instead)}")


def next_step(run: Path, data_dir: Path) -> str:
    """The ``next:`` line after evaluating run ``run`` on ``data_dir``, as train's summary says it: the export
    command, or for a ``--folds`` folder (which export refuses) what to do instead."""
    from edge_trash.terminal import shell_word
    from edge_trash.tfrecords.split_layout import folds_without_train

    if folds_without_train(data_dir):
        return (f"next: export takes a build without --folds ({data_dir} holds folds and no train split, while "
                "export calibrates on a train split and checks int8 against float on val): compare the best AP of a "
                "run for each fold (--fold K, each with its own --out); for the model to deploy, build-tfrecords "
                "without --folds, train on that and export it")
    # export takes a run folder (RUN/saved_model/ given to evaluate: the run above it)
    return f"next: edge-trash export --model {shell_word(run)} --data {shell_word(data_dir)} --out bundle/ --edgetpu"


def _same_path(a: Path, b: Path) -> bool:
    return Path(a).resolve() == Path(b).resolve()


def reuse_line(detections: Path, ground_truth: Path) -> str:
    """What the summary says of ``--save-detections``: the pair it wrote and the command scoring it again."""
    from edge_trash.terminal import shell_word

    return (f"detections: {detections} pair with the ground truth written beside them, {ground_truth} (boxes in "
            "pixels of the stored images, labels.txt category ids; the source annotation file has neither); "
            f"score them again with: edge-trash evaluate --detections {shell_word(detections)} --annotations "
            f"{shell_word(ground_truth)} --out metrics.json")


def other_ground_truth_warning(detections: Path, annotations: Path, gt: Any) -> Optional[str]:
    """A warning when ``detections`` were written by ``evaluate --save-detections`` (their ground truth lies
    beside them) and ``annotations`` (read as ``gt``) is another ground truth: their AP against it pairs boxes
    of other pixels or category ids and is silently wrong. None when it is that file or a copy of it."""
    from edge_trash.train import evaluate as ev

    paired = ev.paired_ground_truth_path(detections)
    if not paired.is_file() or _same_path(paired, annotations):
        return None
    try:
        if ev.load_coco_json(paired, "--annotations") == gt:
            return None
    except ev.EvaluationError:
        return None  # not a ground truth evaluate wrote: nothing to compare with
    from edge_trash.terminal import shell_word

    return (f"warning: evaluate --save-detections wrote --detections {detections} with their ground truth beside "
            f"them, {paired} (boxes in pixels of the stored images, labels.txt category ids); --annotations "
            f"{annotations} is another, and scores against boxes of other pixels or category ids (a source "
            f"annotation file) are wrong. For the scores evaluate reported, pass --annotations {shell_word(paired)}")


def _read_json_object(path: Path) -> Dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _learned_images_note(run: Path, data_dir: Path, split: str) -> Optional[str]:
    """A note when images of ``split`` in ``data_dir`` are among those the run was trained on (see
    :func:`edge_trash.train.data_record.learned_images`)."""
    from edge_trash.train.data_record import learned_images

    learned = learned_images(run, data_dir, split)
    if learned is None:
        return None
    return (f"note: {learned.sentence(run, data_dir, split)}. Their scores measure memory; evaluate on the data "
            "the run was trained on, or train on this build")


def split_for_run(model_path: Path, split: Optional[str],
                  data_dir: Optional[Path] = None) -> Tuple[str, List[str]]:
    """The split to evaluate on and notes for the user.

    Without ``--split``: the fold a ``train --fold K`` run validated on (``foldK``), else
    ``val``. A split the run was trained on gets a note that its scores measure memory; so does a
    split of ``data_dir`` holding images the run's data.json lists as trained on (another build of
    the same photos, split otherwise).
    """
    run = _run_dir_of(model_path)
    notes: List[str] = []
    if run is None:
        return split or "val", notes
    train = _read_json_object(run / "config.json").get("train")
    fold = train.get("fold") if isinstance(train, dict) else None
    if split is None:
        if type(fold) is int and fold >= 0:
            split = f"fold{fold}"
            notes.append(f"note: evaluating on {split}, the fold {run} was validated on "
                         f"(train --fold {fold}); --split chooses another")
        else:
            split = "val"
    trained = str(_read_json_object(run / "metrics.json").get("trained_on") or "").split("+")
    if type(fold) is not int and trained == [""]:
        trained = ["train"]
    seen = [part for part in split.split("+") if part in trained]
    if seen:
        notes.append(f"note: {run} was trained on {'+'.join(seen)}: scores on images it learned "
                     "measure memory, not how it does on new photos")
    elif data_dir is not None:
        learned = _learned_images_note(run, data_dir, split)
        if learned:
            notes.append(learned)
    return split, notes


@click.command("evaluate")
@click.option("--model", "model_path", type=click.Path(exists=True, path_type=Path),
              help="RUN_DIR, SavedModel folder, or .tflite (float, int8, Edge TPU with a TPU).")
@click.option("--data", "data_dir", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="TFRecord folder written by build-tfrecords.")
@click.option("--split", default=None,
              help="Split to evaluate (val, test, train, foldK; joined with +).  [default: val, or "
                   "for a `train --fold K` run the fold K it validated on]")
@click.option("--detections", "detections_path",
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="COCO results JSON (instead of --model).")
@click.option("--annotations", "annotations_path",
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="COCO ground-truth JSON (with --detections); for detections --save-detections wrote, "
                   "the DETS.ground_truth.json written beside them.")
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="metrics.json to write; pictures go into its folder.")
@click.option("--render", default=0, show_default=True, type=click.IntRange(min=0),
              help="Draw N images with true and predicted boxes, plus PR curves and a confusion "
                   "matrix (PNG).")
@click.option("--max-images", type=click.IntRange(min=1), default=None,
              help="Evaluate only the first N images of the split (a quick look).")
@click.option("--save-detections", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write the detections (COCO results JSON: boxes in pixels of the stored images, "
                   "labels.txt category ids) and, with --model, beside them, as DETS.ground_truth.json, the ground "
                   "truth they pair with; reuse the two together: --detections DETS.json --annotations "
                   "DETS.ground_truth.json.")
@click.option("--score-threshold", default=0.3, show_default=True,
              type=click.FloatRange(0.0, 1.0),
              help="Minimum score of boxes drawn by --render and counted in the confusion matrix.")
def evaluate(model_path: Optional[Path], data_dir: Optional[Path], split: Optional[str],
             detections_path: Optional[Path], annotations_path: Optional[Path], out: Path,
             render: int, max_images: Optional[int], save_detections: Optional[Path],
             score_threshold: float) -> None:
    """COCO-evaluate a run, SavedModel or .tflite on a split (or a detections file)."""
    from edge_trash.train import evaluate as ev

    start = time.monotonic()
    if model_path is not None or data_dir is not None:
        if detections_path is not None or annotations_path is not None:
            raise click.UsageError("use either --model with --data, or --detections with "
                                   "--annotations, not both")
        if model_path is None or data_dir is None:
            raise click.UsageError("--model and --data go together")
    elif detections_path is None or annotations_path is None:
        raise click.UsageError("give --model MODEL --data TFRECORDS, or --detections DETS.json "
                               "--annotations GT.json")
    from edge_trash.atomic_files import os_error_message

    for flag, path, instead in (("--out", out, None), ("--save-detections", save_detections, "detections.json")):
        if path is not None and run_file_problem(path, flag, "_"):
            if instead is None:  # the file to suggest is named after the split the run is scored on
                instead = ("metrics.json" if model_path is None else
                           f"{split_for_run(model_path, split)[0].replace('+', '_')}.json")
            raise click.UsageError(run_file_problem(path, flag, instead))
    # the ground truth the detections pair with: the one built from the records (--model); with --detections the
    # given one may be a source annotation file, which the pair would then pass off as theirs
    paired_gt = (ev.paired_ground_truth_path(save_detections)
                 if save_detections is not None and model_path is not None else None)
    if paired_gt is not None:
        for path, what in ((save_detections, "it"), (paired_gt, f"the ground truth beside it, {paired_gt},")):
            if _same_path(path, out):
                raise click.UsageError(f"--save-detections {save_detections}: {what} would overwrite the --out "
                                       "file; give them different names")
    try:  # before the evaluation, not after it: an --out that cannot be written fails at once
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise click.ClickException(os_error_message(exc, out.parent)) from None
    images = None
    try:
        if model_path is not None:
            split, notes = split_for_run(model_path, split, data_dir)
            for note in notes:
                click.echo(note, err=True)
            detector = ev.load_detector(model_path)
            if detector.class_names is None:  # a .tflite copied away from its bundle: scored blind
                folder = model_path if model_path.is_dir() else model_path.parent
                click.echo(f"warning: no labels.txt beside {model_path}, so its classes are not checked against "
                           f"{data_dir / 'labels.txt'}: a model of other classes would be scored as if they were "
                           f"these; copy its bundle's labels.txt to {folder}", err=True)
            gt, images = ev.first_images(*ev.gt_from_tfrecords(data_dir, split), max_images)

            def progress(n: int, total: int) -> None:
                if n == total or n % 50 == 0:
                    click.echo(f"  {n}/{plural(total, 'image')}", err=True)

            metrics, detections = ev.evaluate_on_images(detector, gt, images, progress)
            source = {"model": str(model_path), "data": str(data_dir), "split": split}
        else:
            if render:
                raise click.UsageError("--render needs the images: use --model with --data")
            gt = ev.load_coco_json(annotations_path, "--annotations")
            warning = other_ground_truth_warning(detections_path, annotations_path, gt)
            if warning:
                click.echo(warning, err=True)
            detections = ev.load_coco_json(detections_path, "--detections")
            if isinstance(detections, dict) and "annotations" in detections:
                detections = detections["annotations"]
            if not isinstance(detections, list):
                raise ev.EvaluationError(f"--detections {detections_path}: expected a list of "
                                         "COCO results (image_id, category_id, bbox, score)")
            metrics = ev.coco_metrics(gt, detections, gt_name=f"--annotations {annotations_path}")
            metrics["num_images"] = len(gt["images"])
            metrics["num_detections"] = len(detections)
            source = {"detections": str(detections_path), "annotations": str(annotations_path)}
    except (ev.EvaluationError, FileNotFoundError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc

    written = [out]
    if render:
        from edge_trash.train import render as rd

        folder = out.parent
        written += rd.render_images(images[:render], gt, detections, folder, f"render_{split}",
                                    score_threshold)
        evaluator = ev.run_cocoeval(gt, detections)
        written.append(rd.plot_precision_recall(ev.precision_recall_curves(evaluator),
                                                folder / "precision_recall.png"))
        matrix, names = ev.confusion_matrix(gt, detections, score_threshold=score_threshold)
        written.append(rd.plot_confusion_matrix(matrix, names, folder / "confusion_matrix.png"))
        row_labels, column_labels = ev.confusion_labels(names)
        metrics["confusion_matrix"] = {"classes": names, "rows": "true + background",
                                       "columns": "predicted + missed", "row_labels": row_labels,
                                       "column_labels": column_labels, "matrix": matrix.tolist()}
    seconds = time.monotonic() - start
    result: Dict[str, Any] = dict(source, **metrics, seconds=round(seconds, 2))
    try:
        _write_json(out, result)
        if save_detections is not None:
            _write_json(save_detections, detections)
            written.append(save_detections)
            if paired_gt is not None:
                _write_json(paired_gt, ev.paired_ground_truth(gt, source))
                written.append(paired_gt)
    except OSError as exc:
        raise click.ClickException(os_error_message(exc, out.parent)) from None
    click.echo(ev.format_metrics_table(metrics, ev.instances_per_class(gt)))
    size = out.stat().st_size
    more = f" and {plural(len(written) - 1, 'more file')}" if len(written) > 1 else ""
    click.echo(f"evaluate: wrote {out} ({size} B){more} for "
               f"{plural(metrics['num_images'], 'image')} in {seconds:.1f} s: AP {metrics['AP']:.3f}, "
               f"AP50 {metrics['AP50']:.3f}")
    if paired_gt is not None:
        click.echo(reuse_line(save_detections, paired_gt))
    run = _run_dir_of(model_path) if model_path is not None else None
    if run is not None:
        click.echo(next_step(run, data_dir))
