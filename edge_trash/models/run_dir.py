"""The layout of a training run directory and loading a trained model from it.

RUN_DIR/
  config.json        {"model": SSDConfig dict, "train": TrainConfig dict, ...}
  labels.txt         class names, line k = class id k + 1 (copied from the TFRecords)
  data.json          the data trained on: --data, fold, labels, each split's images and shards
                     (edge_trash.train.data_record; train --resume checks --data against it)
  model.weights.h5   best weights (by validation AP)
  saved_model/       SavedModel with raw outputs (box_encodings, class_logits)
  checkpoints/       tf.train.Checkpoint files (model, optimizer, step, data iterator)
  metrics.json       evaluation history, best and final metrics
  logs/              TensorBoard event files
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from edge_trash.atomic_files import write_text_atomic
from edge_trash.models.config import SSDConfig
from edge_trash.terminal import plural, shell_word

CONFIG_JSON = "config.json"
LABELS_TXT = "labels.txt"
WEIGHTS_H5 = "model.weights.h5"
SAVED_MODEL = "saved_model"
CHECKPOINTS = "checkpoints"
METRICS_JSON = "metrics.json"
LOGS = "logs"
DATA_JSON = "data.json"  # written by edge_trash.train.data_record

# What `train` writes into a run directory, and what reads each (a file of another command there would replace it)
RUN_FILES = {
    CONFIG_JSON: "settings (train --resume, export and evaluate read them)",
    DATA_JSON: "record of the data it was trained on (train --resume checks --data against it)",
    METRICS_JSON: "training record (train --resume, export's not-finished warning and evaluate's note on splits it "
                  "was trained on read it)",
    LABELS_TXT: "class list (export and evaluate read it)",
    WEIGHTS_H5: "best weights (export, evaluate and train --init RUN read them)",
}
RUN_FOLDERS = {
    SAVED_MODEL: "SavedModel (export and evaluate read it)",
    CHECKPOINTS: "checkpoints (train --resume continues from them)",
    LOGS: "TensorBoard logs",
}


class RunDirError(ValueError):
    """A run directory is missing a file or holds an inconsistent one."""


def write_json_atomic(path: Path, data: Any) -> None:
    """Write ``data`` as indented JSON, atomically."""
    write_text_atomic(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


def labels_text(path: Path) -> str:
    """The text of a ``labels.txt`` as editors write it: UTF-8 with or without a byte-order mark, or UTF-16
    with one (PowerShell's ``>``); :class:`RunDirError` naming the file for anything else."""
    raw = Path(path).read_bytes()
    try:
        return raw.decode("utf-16" if raw[:2] in (b"\xff\xfe", b"\xfe\xff") else "utf-8-sig")
    except UnicodeDecodeError as exc:
        raise RunDirError(f"{path}: cannot read it as UTF-8 text ({exc}); save it as UTF-8") from None


def read_labels(path: Path) -> List[str]:
    """Class names from a ``labels.txt`` (one per line, blank lines at the end ignored)."""
    path = Path(path)
    if not path.is_file():
        raise RunDirError(f"{path}: labels file not found")
    names = [line.strip() for line in labels_text(path).splitlines()]
    while names and not names[-1]:
        names.pop()
    if not names or any(not n for n in names):
        raise RunDirError(f"{path}: expected one non-empty class name per line")
    return names


def read_run_config(run_dir: Path) -> Dict[str, Any]:
    """The parsed ``config.json`` of a run (``{"model": ..., "train": ...}``)."""
    path = Path(run_dir) / CONFIG_JSON
    if not path.is_file():
        raise RunDirError(f"{path}: not found; is {run_dir} an edge-trash run directory "
                          "(written by `edge-trash train --out`)?")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise RunDirError(f"{path}: invalid JSON ({exc}); `edge-trash train` wrote it: undo the hand edit, or "
                          "start a new run") from exc
    if not isinstance(data, dict) or "model" not in data:
        raise RunDirError(f"{path}: expected an object with a 'model' key")
    return data


def load_run(run_dir: os.PathLike) -> Tuple[Any, SSDConfig, List[str]]:
    """Load ``(keras_model, config, class_names)`` from a run directory (best weights)."""
    from edge_trash.models.ssd import build_ssd

    run_dir = Path(run_dir)
    config = SSDConfig.from_dict(read_run_config(run_dir)["model"]).validate()
    class_names = read_labels(run_dir / LABELS_TXT)
    if len(class_names) != config.num_classes:
        raise RunDirError(f"{run_dir / LABELS_TXT}: {plural(len(class_names), 'class')} but config.json "
                          f"says num_classes={config.num_classes}")
    weights = run_dir / WEIGHTS_H5
    if not weights.is_file():
        raise RunDirError(no_weights_message(run_dir))
    model = build_ssd(config)
    try:
        model.load_weights(str(weights))
    except OSError as exc:  # h5py's own words name no file: "truncated file: eof = 50000", "file signature not found"
        raise RunDirError(f"{weights}: cannot be read as weights ({exc}): the file is damaged or cut short (a copy "
                          "that did not finish, a disk that filled while training wrote it); copy the run folder "
                          "again from where it trained")
    except ValueError as exc:  # weights of another model: config.json edited, or files of two runs mixed
        raise RunDirError(f"{weights}: does not fit the model config.json describes ({str(exc)[:200]}): the two "
                          "come from different runs; copy the whole run folder again")
    return model, config, class_names


def latest_checkpoint_step(run_dir: os.PathLike) -> Optional[int]:
    """The step of the latest checkpoint of a run (``ckpt-N`` in TensorFlow's text index
    ``checkpoints/checkpoint``, read without TensorFlow); None when it has saved none."""
    index = Path(run_dir) / CHECKPOINTS / "checkpoint"
    try:
        text = index.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    match = re.search(r'^model_checkpoint_path:\s*"(?:.*[/\\])?ckpt-(\d+)"', text, re.M)
    return int(match.group(1)) if match else None


def resume_command(data_word: str, run_dir: os.PathLike, steps: Optional[int] = None,
                   strategy: Optional[str] = None) -> str:
    """``edge-trash train --data DATA --out RUN --resume [--steps N] [--strategy S]``: ``data_word`` as the shell
    should read it (quoted by the caller, or a placeholder such as ``DATA``); ``steps`` the target a resumed run was
    given (without it, resume trains to the run's own count)."""
    more = (f" --steps {steps}" if steps is not None else "") + (f" --strategy {strategy}" if strategy else "")
    return f"edge-trash train --data {data_word} --out {shell_word(run_dir)} --resume{more}"


def no_weights_message(run_dir: os.PathLike) -> str:
    """Why a run directory has no ``model.weights.h5`` (training writes it at its first evaluation on val,
    the best so far at each one after) and what to do: resume it, naming the step it saved last."""
    run_dir = Path(run_dir)
    step = latest_checkpoint_step(run_dir)
    saved = (f"its latest checkpoint is from step {step}" if step is not None else "it has saved no checkpoint")
    from edge_trash.train.data_record import read_data_record

    record = read_data_record(run_dir)  # the --data it was trained on, when its data.json says
    data = record.get("data") if record else None
    data, what = (shell_word(data), "") if isinstance(data, str) else ("DATA", " (DATA: the --data it was trained on)")
    return (f"{run_dir}: no {WEIGHTS_H5} yet: a run writes its weights at its first evaluation on val (every "
            f"train.eval_every steps) and {saved}; resume it until it evaluates: {resume_command(data, run_dir)}{what}")
