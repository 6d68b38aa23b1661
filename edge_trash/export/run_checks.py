"""Checks of the run against the data export is given, made before anything is converted.

The run's ``labels.txt`` are the classes the model predicts; the data's ``labels.txt`` are the classes its
records are labelled with. Export calibrates on the data's train split and scores int8 against float on its
val split, so the two must be the same list in the same order.

Only the standard library is imported here (``ExportOptions.validate`` runs before TensorFlow loads).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

LABELS_TXT = "labels.txt"
#: Reordered classes named in a message before it says "and N more".
MAX_NAMED = 5


def _names(names: Sequence[str]) -> str:
    shown = ", ".join(names[:MAX_NAMED])
    return shown + (f" and {len(names) - MAX_NAMED} more" if len(names) > MAX_NAMED else "")


def class_differences(run_names: Sequence[str], data_names: Sequence[str]) -> List[str]:
    """What differs between the run's classes and the data's, one phrase per kind ([] when equal).

    Phrases, in this order: classes only the run has (``gone from the data``), classes only the data has
    (``new in the data``), and classes both have at other lines once those are set aside (``in another
    order``, each with its line in either file; lines count from 1 as an editor shows them).
    """
    if list(run_names) == list(data_names):
        return []
    in_run, in_data = set(run_names), set(data_names)
    phrases = []
    gone = [n for n in run_names if n not in in_data]
    new = [n for n in data_names if n not in in_run]
    if gone:
        phrases.append(f"gone from the data: {_names(gone)}")
    if new:
        phrases.append(f"new in the data: {_names(new)}")
    shared_run = [n for n in run_names if n in in_data]
    shared_data = [n for n in data_names if n in in_run]
    if shared_run != shared_data:
        run_line = {n: i + 1 for i, n in enumerate(run_names)}
        data_line = {n: i + 1 for i, n in enumerate(data_names)}
        moved = [f"{n} (line {run_line[n]} in the run, {data_line[n]} in the data)"
                 for n in shared_run if run_line[n] != data_line[n]]
        phrases.append(f"in another order: {_names(moved)}")
    return phrases


def check_run_classes(run_dir: str, data_dir: str) -> List[str]:
    """The run's class names once they match the data's; ValueError naming both files otherwise.

    Raises:
      ValueError: ``RUN/labels.txt`` or ``DATA/labels.txt`` is missing or unreadable, or the two lists differ
        (the message says what is gone, new or reordered, and the fix: the run's own ``--data``, or a
        retraining on this one).
    """
    from edge_trash.models.init_weights import fine_tune_command
    from edge_trash.models.run_dir import read_labels

    run_labels, data_labels = Path(run_dir) / LABELS_TXT, Path(data_dir) / LABELS_TXT
    if not run_labels.is_file():
        run = next((p for p in Path(run_dir).absolute().parents if (p / "config.json").is_file()
                    and (p / LABELS_TXT).is_file()), None)
        if run is not None:  # RUN/saved_model, RUN/checkpoints: the run itself is what export reads
            raise ValueError(f"--model {run_dir} is inside the run {run}: export reads the whole run (its "
                             f"weights, config.json and labels.txt); pass --model {run}")
        raise ValueError(f"--model {run_dir}: no {LABELS_TXT}, the classes the model predicts; pass the --out of "
                         "`edge-trash train` (it copies labels.txt from its --data)")
    if not data_labels.is_file():
        from edge_trash.tfrecords.other_formats import missing_labels_txt

        raise ValueError(f"{missing_labels_txt(Path(data_dir))}\nexport compares it with {run_labels} before "
                         "calibrating: give the --data the run was trained on")
    run_names, data_names = read_labels(run_labels), read_labels(data_labels)
    differences = class_differences(run_names, data_names)
    if differences:
        raise ValueError(
            f"{data_labels} does not list the classes the run was trained on ({run_labels}): "
            f"{'; '.join(differences)}. The int8 model would be calibrated and checked against float on records "
            "whose class ids mean other classes. Export with the --data the run was trained on, or retrain on "
            f"this data: {fine_tune_command(Path(data_dir), Path(run_dir))}")
    return run_names


def training_state(run_dir: str) -> Optional[Dict[str, Any]]:
    """How far training got, from ``RUN/metrics.json`` and ``RUN/config.json``: ``{"finished", "step",
    "steps", "best_step"}`` (``steps``: the steps it was asked for; ``best_step``: where the exported
    weights come from). None when the run has no readable metrics.json (not written by `edge-trash train`)."""
    metrics = _json_object(Path(run_dir) / "metrics.json")
    if not metrics or not isinstance(metrics.get("finished"), bool):
        return None
    train = _json_object(Path(run_dir) / "config.json").get("train")
    steps = train.get("steps") if isinstance(train, dict) else None
    return {"finished": metrics["finished"], "step": _int_or_none(metrics.get("step")),
            "steps": _int_or_none(steps), "best_step": _int_or_none(metrics.get("best_step"))}


def unfinished_run_warning(state: Optional[Dict[str, Any]], run_dir: str, data_dir: str) -> Optional[str]:
    """The warning for a run whose training has not finished (None when it has, or cannot be told)."""
    if not state or state["finished"]:
        return None
    from edge_trash.models.run_dir import resume_command
    from edge_trash.terminal import shell_word

    of = f" of {state['steps']}" if state["steps"] is not None else ""
    best = f", from step {state['best_step']}" if state["best_step"] is not None else ""
    return (f"{run_dir} has not finished training (metrics.json: step {state['step']}{of}, finished false): this "
            f"bundle holds its best weights so far{best}; finish it with "
            f"{resume_command(shell_word(data_dir), run_dir)}, then export again")


def classes_not_in_train(data_dir: str, class_names: Sequence[str]) -> List[str]:
    """The classes of ``class_names`` with no box to learn from in the train split of ``data_dir``, from its
    ``report.json`` (``classes_not_in_train``, or each class's ``boxes_by_split`` in an older report); []
    when the report is missing or says nothing."""
    report = _json_object(Path(data_dir) / "report.json")
    listed = report.get("classes_not_in_train")
    if isinstance(listed, list):
        missing = {str(n) for n in listed}
    else:
        missing = {str(c.get("name")) for c in report.get("classes") or [] if isinstance(c, dict)
                   and isinstance(c.get("boxes_by_split"), dict) and c["boxes_by_split"].get("train", 1) == 0}
    return [n for n in class_names if n in missing]


def not_learned_warning(data_dir: str, names: Sequence[str]) -> Optional[str]:
    """The warning for classes the model never saw a box of (None when there are none)."""
    if not names:
        return None
    which, them = ("class", "it") if len(names) == 1 else ("classes", "them")
    return (f"{Path(data_dir) / 'report.json'}: the train split holds no box of {which} {', '.join(names)}: the "
            f"model never learned {them} and will not detect {them} on the device; add photos with such boxes and "
            f"rebuild the records (then retrain), or leave the {which} out with build-tfrecords --class-map")


def learned_parity_note(run_dir: str, data_dir: str, split: str) -> Tuple[Optional[str], int]:
    """The note for a parity split holding images the run was trained on, and how many it holds ((None, 0)
    when none, or nothing to compare: see :func:`edge_trash.train.data_record.learned_images`).

    A ``train --fold K`` run exported with a build of the same photos without ``--folds``, or a run exported
    with a rebuild under another seed, scores float and int8 partly on images it learned.
    """
    from edge_trash.terminal import shell_word
    from edge_trash.train.data_record import learned_images

    learned = learned_images(Path(run_dir), Path(data_dir), split)
    if learned is None:
        return None, 0
    trained_data = shell_word(learned.data) if learned.data else "DATA (the data it was trained on)"
    return (learned.sentence(run_dir, data_dir, split, ", where float and int8 are compared,") + ". Both AP50s "
            "read high on them (the int8 drop against float still holds); for held-out AP50s export with --data "
            f"{trained_data}"), len(learned.names)


def _json_object(path: Path) -> Dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _int_or_none(value: Any) -> Optional[int]:
    return value if type(value) is int else None
