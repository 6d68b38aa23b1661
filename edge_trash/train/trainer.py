"""The SSD training loop: strategy-agnostic (tf.distribute), resumable, evaluated on val
(or, for a ``--folds`` build, on the fold ``train.fold`` names while training on the others).

``train(TrainOptions(...)) -> TrainResult`` writes a run directory (see
``edge_trash.models.run_dir``). Under ``MultiWorkerMirroredStrategy`` every worker runs
this same function; only the chief writes the run directory, the others save (checkpoints
and the SavedModel take part in collectives) into ``RUN_DIR/.worker-N`` and remove it at
the end. Resuming restores model, optimizer (hence the step and
the learning-rate schedule), the best-AP bookkeeping, and the data position: the input
pipeline's epochs depend only on ``(seed, epoch)``, so a resumed run restarts the epoch
it was killed in and skips the batches already used, seeing exactly the data an
uninterrupted run would.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Tuple

from edge_trash.models import run_dir as rd
from edge_trash.models.config import SSDConfig
from edge_trash.tfrecords.split_layout import DataSplitError, training_splits
from edge_trash.terminal import plural, shell_word
from edge_trash.train.data_record import (data_record, no_record_note, read_data_record,
                                          resume_data_problem, write_data_record)
from edge_trash.train.train_config import TrainConfig

if TYPE_CHECKING:
    from edge_trash.train.balancing import BalanceConfig

log = logging.getLogger(__name__)

# dataset_fn(split, batch_size, training, seed, target_fn, epoch) -> (tf.data.Dataset, steps_per_epoch)
DatasetFn = Callable[..., Any]


class TrainError(ValueError):
    """A training run cannot start (bad data directory, run directory, flags)."""


@dataclass
class TrainOptions:
    """One training run. ``model.num_classes`` is taken from the data's labels.txt."""

    data_dir: Path
    out_dir: Path
    model: SSDConfig
    train: TrainConfig
    resume: bool = False
    keep_run_steps: bool = False  # with resume: train to the run's own train.steps, not train.steps here
    progress: bool = True
    dataset_fn: Optional[DatasetFn] = None  # default: edge_trash.train.input_pipeline
    on_step: Optional[Callable[[int, Dict[str, float]], None]] = None  # called after each step


@dataclass
class TrainResult:
    """What a run did: final step, best validation metrics, per-step losses of this process."""

    run_dir: Path
    step: int
    best_step: int
    best_metrics: Dict[str, Any]
    final_metrics: Dict[str, Any]
    stopped_early: bool
    seconds: float
    images_per_second: float
    losses: List[float] = field(default_factory=list)  # total loss of each step run here
    notes: List[str] = field(default_factory=list)  # said before training (a resume whose data cannot be checked)
    init: str = ""  # the weights the model started from (initialise's line; a resume names its checkpoint)
    first_step: int = 0  # step number of losses[0] is first_step + 1
    train_split: str = "train"  # the shards trained on: "train", or the other folds ("fold0+fold2")
    val_split: str = "val"  # the shards the best checkpoint was chosen on: "val" or "fold1"


TPU_CONNECT_TIMEOUT_S = 300.0  # a TPU that has not answered by then is not coming: a message, not a hang

TF_CONFIG_EXAMPLE = ('TF_CONFIG=\'{"cluster": {"worker": ["host1:12345", "host2:12345"]}, "task": {"type": '
                     '"worker", "index": 0}}\' (the same cluster on every worker, each with its own index)')


def multi_worker_tasks(environ: Optional[Dict[str, str]] = None) -> int:
    """The chief and worker tasks TF_CONFIG names; ``TrainError`` when it is unset, unreadable or names one: a
    MultiWorkerMirroredStrategy without it trains on this machine alone, and said nothing of it."""
    raw = (os.environ if environ is None else environ).get("TF_CONFIG", "")
    if not raw.strip():
        raise TrainError("--strategy multi_worker: TF_CONFIG is not set, so this would train on this machine "
                         f"alone; set it on every worker, e.g. {TF_CONFIG_EXAMPLE}, or use --strategy mirrored for "
                         "the GPUs of one machine")
    try:
        cluster = json.loads(raw).get("cluster") or {}
        tasks = sum(len(cluster.get(kind) or []) for kind in ("chief", "worker"))
    except (ValueError, AttributeError, TypeError) as exc:
        raise TrainError(f"--strategy multi_worker: TF_CONFIG is not the JSON TensorFlow reads ({exc}); e.g. "
                         f"{TF_CONFIG_EXAMPLE}") from None
    if tasks < 2:
        raise TrainError(f"--strategy multi_worker: TF_CONFIG names {plural(tasks, 'worker')} (its cluster's chief "
                         f"and worker lists); give every worker, e.g. {TF_CONFIG_EXAMPLE}, "
                         "or use --strategy mirrored for the GPUs of one machine")
    return tasks


def connect_tpu(timeout_s: float = TPU_CONNECT_TIMEOUT_S):
    """The TPU's cluster resolver, connected and initialised, or ``TrainError`` (no TPU, or none answering within
    ``timeout_s``). The connection blocks in TensorFlow's C++ code, where neither Ctrl-C nor SIGTERM reach a
    Python handler (a grpc:// address nothing answers held the process for good): it runs in a daemon thread
    the main thread waits for, so both still stop the run and a process that gives up can exit."""
    import threading

    import tensorflow as tf

    outcome: Dict[str, Any] = {}

    def connect() -> None:
        try:
            resolver = tf.distribute.cluster_resolver.TPUClusterResolver()
            tf.config.experimental_connect_to_cluster(resolver)
            tf.tpu.experimental.initialize_tpu_system(resolver)
            outcome["resolver"] = resolver
        except (ValueError, RuntimeError, OSError, tf.errors.OpError) as exc:  # OSError: metadata server lookups
            outcome["error"] = exc

    where = os.environ.get("TPU_NAME") or "this machine's TPU"
    print(f"train: connecting to {where} (up to {timeout_s:.0f} s) ...", file=sys.stderr, flush=True)
    thread = threading.Thread(target=connect, name="tpu-connect", daemon=True)
    thread.start()
    thread.join(timeout_s)
    if thread.is_alive():
        raise TrainError(f"--strategy tpu: {where} did not answer within {timeout_s:.0f} s; check TPU_NAME (the "
                         "TPU's name or grpc:// address) and that the TPU is up and reachable from here")
    if "error" in outcome:
        raise TrainError(f"--strategy tpu: no TPU to connect to ({outcome['error']}); run on a Cloud TPU VM, or set "
                         "TPU_NAME to the TPU's name or grpc:// address")
    return outcome["resolver"]


def readable_checkpoint(directory: os.PathLike) -> Tuple[Optional[str], List[str]]:
    """The newest checkpoint in ``directory`` whose every tensor reads (None when none does, or there is none),
    and the newer ones that do not, each with why: one cut short (a full disk, a copy stopped) made ``--resume``
    end in a traceback while older good ones lay beside it."""
    import tensorflow as tf

    state = tf.train.get_checkpoint_state(str(directory))
    paths = list(state.all_model_checkpoint_paths) if state is not None else []
    if state is not None and state.model_checkpoint_path and state.model_checkpoint_path not in paths:
        paths.append(state.model_checkpoint_path)
    unreadable: List[str] = []
    for path in reversed(paths):
        try:
            reader = tf.train.load_checkpoint(path)
            for name in reader.get_variable_to_shape_map():
                reader.get_tensor(name)
        except (tf.errors.OpError, ValueError, IndexError) as exc:  # IndexError: data file cut short
            why = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            unreadable.append(f"{path} ({why})")
            continue
        return path, unreadable
    return None, unreadable


def make_strategy(name: str, tpu_timeout_s: float = TPU_CONNECT_TIMEOUT_S):
    """``auto`` (Mirrored over several GPUs, else the default), ``mirrored`` (all GPUs, or all
    logical CPUs when there is no GPU), ``multi_worker`` (TF_CONFIG, which must name the workers) or ``tpu``
    (``tpu_timeout_s`` to connect)."""
    import tensorflow as tf

    # These two configure the runtime, so they come before anything (listing devices too)
    # initialises it: "Collective ops must be configured at program startup".
    if name == "multi_worker":
        multi_worker_tasks()
        return tf.distribute.MultiWorkerMirroredStrategy()
    if name == "tpu":
        return tf.distribute.TPUStrategy(connect_tpu(tpu_timeout_s))
    gpus = tf.config.list_logical_devices("GPU")
    if name == "auto":
        return tf.distribute.MirroredStrategy() if len(gpus) > 1 else tf.distribute.get_strategy()
    if name == "mirrored":
        if gpus:
            return tf.distribute.MirroredStrategy()
        return tf.distribute.MirroredStrategy([d.name for d in tf.config.list_logical_devices("CPU")])
    raise TrainError(f"--strategy: got {name!r}, expected auto, mirrored, multi_worker or tpu")


def balance_config(train: TrainConfig) -> BalanceConfig:
    """The ``BalanceConfig`` of ``train.balance`` (method ``none`` when it is unset)."""
    from edge_trash.train.balancing import BalanceConfig

    if train.balance is None:
        return BalanceConfig()
    if isinstance(train.balance, dict):
        return BalanceConfig.from_dict(train.balance)
    return BalanceConfig(method=str(train.balance)).validate()


def default_dataset_fn(data_dir: Path, model: SSDConfig, train: TrainConfig) -> DatasetFn:
    """Datasets from ``edge_trash.train.input_pipeline.make_dataset`` for this config."""
    from edge_trash.train import input_pipeline
    from edge_trash.train.augment import AugmentConfig, get_augment_config

    if train.augment is None:
        augment = None
    elif isinstance(train.augment, dict):
        augment = AugmentConfig.from_dict(train.augment, name="train.augment").validate()
    else:
        augment = get_augment_config(str(train.augment))
    balance = balance_config(train)

    def dataset_fn(split: str, batch_size: int, training: bool, seed: int,
                   target_fn: Optional[Callable] = None, epoch: int = 0):
        per_epoch = None
        if training:
            sampler = input_pipeline.make_sampler(data_dir, split, balance, seed)
            per_epoch = input_pipeline.steps_per_epoch(sampler, batch_size)
        wrapped = None
        if target_fn is not None:
            wrapped = lambda image, boxes, classes: target_fn(boxes, classes)  # noqa: E731
        ds = input_pipeline.make_dataset(
            data_dir, split, batch_size, model.input_size, augment, balance, seed, training,
            wrapped, epoch=epoch, steps=per_epoch)
        return ds, per_epoch

    return dataset_fn


#: What ``train`` writes into a run directory: an --out holding nothing else, and no config.json, is a run that
#: stopped before its config was written.
RUN_ENTRIES = tuple(rd.RUN_FILES) + tuple(rd.RUN_FOLDERS)


def _is_run_entry(name: str) -> bool:
    """Whether ``name`` (an entry of an --out folder) is one a run writes: a file of :data:`RUN_ENTRIES`, or the
    scratch names it writes through (``.worker-N``, ``.saved_model.tmp``, ``.tmp.model.weights.h5``, atomic
    ``.NAME.*.tmp`` files); ``.DS_Store`` (macOS Finder) too."""
    return (name in RUN_ENTRIES or name == ".DS_Store" or name.startswith((".worker-", ".tmp."))
            or (name.startswith(".") and name.endswith(".tmp")))


def out_dir_problem(data_dir: Path, out_dir: Path, resume: bool = False) -> str:
    """Why ``--out`` cannot hold a new run of ``--data`` ("" when it can): the data folder itself, a folder inside
    it, a folder the data lies in, or (not for ``resume``) a folder that is not empty and not a run directory
    (no config.json) while it holds something a run does not write; the message names a few entries and the fix.

    A run written into its data folder mixes with the records: a later ``build-tfrecords --out`` there replaces
    the run's labels.txt, and export and evaluate then refuse the run.
    """
    if resume:
        return ""
    data, out = Path(data_dir), Path(out_dir)
    real_data, real_out = data.resolve(), out.resolve()
    example = f"runs/{real_data.name or 'run'}"
    if real_out == real_data:
        where = f"--out {out} is the --data folder"
    elif real_data in real_out.parents:
        where = f"--out {out} is inside --data {data}"
    elif real_out in real_data.parents:
        where = f"--data {data} is inside --out {out}"
    else:
        where = ""
    if where:
        return (f"{where}: the run's files (config.json, labels.txt, checkpoints/, ...) would lie among the "
                f"records, and a later build-tfrecords --out there replaces the run's labels.txt: choose a new "
                f"--out outside the data, e.g. --out {shell_word(example)}")
    if not out.is_dir() or (out / rd.CONFIG_JSON).exists():
        return ""  # a new folder, or a run (refused or resumed by _prepare_run_dir)
    others = sorted(p.name + ("/" if p.is_dir() else "") for p in out.iterdir() if not _is_run_entry(p.name))
    if not others:
        return ""
    from edge_trash.terminal import examples

    return (f"--out {out}: not empty and not a run directory (no {rd.CONFIG_JSON}): it holds "
            f"{plural(len(others), 'entry', 'entries')} a run does not write ({examples(others, 3)}), which the "
            f"run's files would mix with: choose a new --out (a folder that does not exist yet, or an empty one), "
            f"e.g. --out {shell_word(example)}")


def _prepare_run_dir(options: TrainOptions, class_names: List[str], is_chief: bool = True) -> tuple:
    """Check the run directory; return the (model, train) configs to use.

    Only the chief refuses an existing run or an --out holding other files (:func:`out_dir_problem`): other
    workers start after it wrote config.json.
    """
    out = Path(options.out_dir)
    config_path = out / rd.CONFIG_JSON
    problem = out_dir_problem(options.data_dir, out, options.resume) if is_chief else ""
    if problem:
        raise TrainError(problem)
    if options.resume:
        if not config_path.is_file():
            raise TrainError(f"--resume: {config_path} not found; start a new run without --resume")
        saved = rd.read_run_config(out)
        model = SSDConfig.from_dict(saved["model"])
        train = TrainConfig.from_dict(saved["train"])
        # The settings a resume may change: the step count and the strategy (another machine).
        steps = train.steps if options.keep_run_steps else options.train.steps
        problem = resume_steps_problem(out, steps, train.steps, train.warmup_steps, options.keep_run_steps)
        if problem:
            raise TrainError(problem)
        train = train.replace(steps=steps, strategy=options.train.strategy).validate()
        return model, train
    if config_path.exists() and is_chief:
        raise TrainError(f"--out {out}: already holds a run ({config_path}); pass --resume to "
                         "continue it or choose a new directory")
    model = options.model.replace(num_classes=len(class_names)).validate()
    train = options.train.validate()
    return model, train


def resume_steps_problem(run_dir: Path, steps: int, run_steps: int, warmup_steps: int, kept: bool = False) -> str:
    """Why ``train --resume`` of ``run_dir`` to ``steps`` cannot train ("" when it can): the run's latest
    checkpoint already reached that step (it did nothing and called the run trained), or ``steps`` ends inside
    its warm-up (the schedule needs steps past it). A run stopped at ``steps`` after its last checkpoint but
    before its SavedModel (``metrics.json`` says ``finished: false``) can: the resume trains nothing and writes
    what the run lacks. ``run_steps`` is the step count the run was started for; ``kept``: no ``--steps`` was
    given, so ``steps`` is that count."""
    reached = rd.latest_checkpoint_step(run_dir)
    if reached is not None and steps == reached and _recorded(run_dir, "finished") is False:
        return ""
    least = max(reached or 0, warmup_steps) + 1
    asked = f"--steps {steps}" if not kept else f"without --steps it trains to the {steps} it was started for, and"
    if reached is not None and steps <= reached:
        done = " and finished" if reached >= run_steps else f" of the {run_steps} it was started for"
        return (f"--resume: {run_dir} already reached step {reached}{done}; {asked} leaves nothing to train: give "
                f"--steps {least} or more to train on, or use the run as it is (edge-trash evaluate --model "
                f"{shell_word(run_dir)} ...)")
    if steps <= warmup_steps:
        return (f"--resume: {asked} ends inside the warm-up of {run_dir} ({plural(warmup_steps, 'step')}, where the "
                f"learning rate still rises to its peak): give --steps {least} or more")
    return ""


def schedule_change_note(trained_for: int, train: TrainConfig, reached: int) -> str:
    """A note when a resume trains to another step count than its checkpoint's schedule was built for (recorded
    in the checkpoint: a run resumed with ``--steps`` before trained on that count since, whatever config.json
    says): the cosine schedule is rebuilt for the new count, so the learning rate jumps at ``reached`` (with a
    short run resumed to twice its steps, from 8.7e-5 to 1.1e-3), and a user reading the curve should know why."""
    from edge_trash.train.schedule import build_lr_schedule

    if trained_for == train.steps:
        return ""
    before = float(build_lr_schedule(train.replace(steps=trained_for))(reached))
    after = float(build_lr_schedule(train)(reached))
    return (f"this resume trains to step {train.steps}, where the checkpoint's learning-rate schedule was built for "
            f"{trained_for} steps: it is rebuilt for {train.steps}, so at step {reached} the rate goes from "
            f"{before:.3g} to {after:.3g}")


def _write_run_config(out: Path, model: SSDConfig, train: TrainConfig, class_names: List[str]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    rd.write_text_atomic(out / rd.LABELS_TXT, "\n".join(class_names) + "\n")
    rd.write_json_atomic(out / rd.CONFIG_JSON, {"model": model.to_dict(), "train": train.to_dict()})


def _recorded(run_dir: Path, key: str) -> Any:
    """``key`` of a run's ``metrics.json`` (None when the file or the key is missing or unreadable)."""
    try:
        return json.loads((Path(run_dir) / rd.METRICS_JSON).read_text(encoding="utf-8")).get(key)
    except (OSError, ValueError, AttributeError):
        return None


def _recorded_init(run_dir: Path) -> str:
    """What a run's weights started from, as its ``metrics.json`` says ("" when it says nothing)."""
    init = _recorded(run_dir, "init")
    return init if isinstance(init, str) else ""


def _save_weights_atomic(model, path: Path) -> None:
    tmp = path.with_name(f".tmp.{path.name}")  # same suffix: tf_keras picks the format by it
    model.save_weights(str(tmp))
    os.replace(tmp, path)


def export_saved_model(model, config: SSDConfig, out_dir: Path) -> Path:
    """Write a SavedModel with a ``serving_default`` signature: ``images`` float32
    [B, S, S, 3] 0..255 -> ``box_encodings`` [B, N, 4], ``class_logits`` [B, N, C + 1]."""
    import tensorflow as tf

    from edge_trash.models.ssd import BOX_OUTPUT, CLASS_OUTPUT

    size = config.input_size

    @tf.function(input_signature=[tf.TensorSpec([None, size, size, 3], tf.float32, name="images")])
    def serve(images):
        boxes, logits = model(images, training=False)
        return {BOX_OUTPUT: boxes, CLASS_OUTPUT: logits}

    target = Path(out_dir) / rd.SAVED_MODEL
    tmp = Path(out_dir) / f".{rd.SAVED_MODEL}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tf.saved_model.save(model, str(tmp), signatures={"serving_default": serve})
    shutil.rmtree(target, ignore_errors=True)
    os.replace(tmp, target)
    return target


def resume_data_notes(run_dir: Path, data_dir: Path, data: Dict[str, Any]) -> List[str]:
    """Before a resume: :class:`TrainError` when ``data`` (:func:`~edge_trash.train.data_record.data_record` of
    ``--data``) holds other classes or images than the run's ``data.json`` records; the notes to print (a run
    without ``data.json`` is checked by its ``labels.txt`` alone, saying so)."""
    recorded = read_data_record(run_dir)
    notes = []
    if recorded is None:
        recorded = {"labels": rd.read_labels(Path(run_dir) / rd.LABELS_TXT), "splits": {}}
        notes.append(no_record_note(run_dir))
    problem = resume_data_problem(run_dir, data_dir, recorded, data)
    if problem:
        raise TrainError(problem)
    return notes


def other_data_for_resume(run_dir: Path, data_dir: Path) -> str:
    """Why a resume cannot read ``data_dir`` as its data, when the run's ``data.json`` names another folder
    (the folder's own fix, such as ``--fold``, cannot be given to a resume); "" otherwise."""
    recorded = read_data_record(run_dir)
    if not recorded or not isinstance(recorded.get("data"), str):
        return ""
    if Path(recorded["data"]).resolve() == Path(data_dir).resolve():
        return ""
    return (f"--resume: --data {data_dir} is not the data {run_dir} was trained on (--data {recorded['data']}, as "
            f"{Path(run_dir) / rd.DATA_JSON} records), and cannot be trained on as it is. Resume with the data it was "
            f"trained on (--data {shell_word(recorded['data'])}), or start a new run with another --out")


def check_splits(data_dir: Path, train_split: str, val_split: str) -> None:
    """Return once every record of the train and val specs (:func:`training_splits` of ``data_dir``) reads as
    the schema says and each split holds a box; :class:`TrainError` with the fix otherwise."""
    from edge_trash.train import input_pipeline

    try:
        splits = [(spec, input_pipeline.load_split(data_dir, spec)) for spec in (train_split, val_split)]
    except ValueError as exc:
        raise TrainError(str(exc)) from None
    for (spec, data), role in zip(splits, ("train on", "keep the checkpoint with the best val AP by")):
        if not any(data.labels):
            raise TrainError(f"--data {data_dir}: the {spec} split holds {plural(len(data.labels), 'record')} and no "
                             f"box other than crowd boxes, so there is nothing to {role}: rebuild with boxes in it")


def apply_replica_gradients(optimizer, grads, variables, mixed_precision: bool) -> None:
    """One replica's share of a step's gradients into ``optimizer`` (in a replica context). ``train.clip_norm`` is
    the optimizer's ``global_clipnorm`` (:func:`~edge_trash.train.schedule.build_optimizer`), which tf_keras applies
    to the gradients summed over the replicas: a clip here would act on each replica's share, and so depend on
    how many replicas there are."""
    if mixed_precision:
        grads = optimizer.get_unscaled_gradients(grads)
    optimizer.apply_gradients(zip(grads, variables))


def edgetpu_size_note(weights: int, model_cfg: Any) -> str:
    """What to say before training a model whose ``weights`` (int8 on the Edge TPU: about one byte each, a
    little over what the export measures) will not fit the Edge TPU's on-chip memory; "" when they fit."""
    from edge_trash.export.compat import PARAMETER_CACHE_BYTES, parameter_memory_warning

    if weights <= PARAMETER_CACHE_BYTES:
        return ""
    return (f"for the Edge TPU, this model is big: {parameter_memory_warning(weights, model_cfg)} (estimated from "
            f"its {weights:,} weights; the export measures it)")


def train(options: TrainOptions) -> TrainResult:
    """Run (or resume) training; see the module docstring. Returns a ``TrainResult``."""
    import tensorflow as tf
    import tf_keras as keras
    from edge_trash.terminal import progress_bar

    from edge_trash.models.init_weights import initialise, resolve_init
    from edge_trash.models.losses import detection_loss, global_positives
    from edge_trash.models.ssd import build_ssd
    from edge_trash.models.targets import make_target_fn
    from edge_trash.train.schedule import build_optimizer
    from edge_trash.train.validation import evaluate_model, make_predict_fn

    data_dir, out = Path(options.data_dir), Path(options.out_dir)
    if not (data_dir / rd.LABELS_TXT).is_file():
        from edge_trash.tfrecords.other_formats import missing_labels_txt

        raise TrainError(missing_labels_txt(data_dir))
    class_names = rd.read_labels(data_dir / rd.LABELS_TXT)
    strategy = make_strategy(options.train.strategy)
    is_chief = bool(strategy.extended.should_checkpoint)
    # Where this worker writes: the run directory (chief), or a scratch folder removed at the end.
    work = out if is_chief else out / f".worker-{strategy.cluster_resolver.task_id}"
    model_cfg, train_cfg = _prepare_run_dir(options, class_names, is_chief)
    train_split, val_split = "train", "val"
    if options.dataset_fn is None:
        try:
            train_split, val_split = training_splits(data_dir, train_cfg.fold)
        except DataSplitError as exc:
            raise TrainError((options.resume and other_data_for_resume(out, data_dir)) or str(exc)) from None
    data = data_record(data_dir, train_split, val_split, train_cfg.fold, class_names)
    # other data than the run's is named as such before its records are read (they may not fit the run's labels)
    notes = resume_data_notes(out, data_dir, data) if options.resume else []
    if options.dataset_fn is None:  # before the run folder is written: a refused run leaves nothing to resume
        check_splits(data_dir, train_split, val_split)
    if not is_chief:
        work.mkdir(parents=True, exist_ok=True)
    init_source = None if options.resume else resolve_init(train_cfg.init, model_cfg)
    replicas = strategy.num_replicas_in_sync
    if train_cfg.batch_size % replicas:
        raise TrainError(f"--batch-size {train_cfg.batch_size} is not divisible by the "
                         f"{replicas} replicas of the strategy")
    dataset_fn = options.dataset_fn or default_dataset_fn(data_dir, model_cfg, train_cfg)

    keras.utils.set_random_seed(train_cfg.seed)  # same initial weights for the same seed
    if train_cfg.mixed_precision:
        keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        with strategy.scope():
            model = build_ssd(model_cfg)
            optimizer = build_optimizer(train_cfg)
            best_ap = tf.Variable(-1.0, trainable=False, dtype=tf.float32)
            best_step = tf.Variable(0, trainable=False, dtype=tf.int64)
            evals_without_gain = tf.Variable(0, trainable=False, dtype=tf.int64)
            # the step count the schedule was built for, kept in the checkpoint (config.json keeps the first)
            schedule_steps = tf.Variable(rd.read_run_config(out)["train"]["steps"] if options.resume
                                         else train_cfg.steps, trainable=False, dtype=tf.int64)
    finally:
        if train_cfg.mixed_precision:
            keras.mixed_precision.set_global_policy("float32")

    too_big = edgetpu_size_note(model.count_params(), model_cfg)
    if too_big:  # said before hours of training, not first at the export
        notes.append(too_big)
    checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer, best_ap=best_ap, best_step=best_step,
                                     evals_without_gain=evals_without_gain, schedule_steps=schedule_steps)
    manager = tf.train.CheckpointManager(checkpoint, str(work / rd.CHECKPOINTS),
                                         max_to_keep=train_cfg.keep_checkpoints)
    latest, unreadable = readable_checkpoint(out / rd.CHECKPOINTS) if options.resume else (None, [])
    if unreadable and latest is None:
        raise TrainError(f"--resume: no checkpoint of {out} can be read: {'; '.join(unreadable)} (cut short by a "
                         "full disk or a copy?); start the run again without --resume, into a new --out")
    for bad in unreadable:
        notes.append(f"checkpoint {bad} could not be read (cut short by a full disk or a copy?): resumed from the "
                     "one before it, and the steps since are trained again")
    started_from = ""
    if latest:
        checkpoint.restore(latest).expect_partial()
        started_from = _recorded_init(out)
        init_note = f"resumed from {latest}" + (f"; the run started from {started_from}" if started_from else "")
    elif options.resume:
        init_note = "resumed before the first checkpoint: " + initialise(
            model, resolve_init(train_cfg.init, model_cfg), model_cfg, class_names)
    else:
        init_note = initialise(model, init_source, model_cfg, class_names)
        # Written only once the weights loaded, so a bad --init leaves no half-made run.
        if is_chief:
            _write_run_config(out, model_cfg, train_cfg, class_names)
            write_data_record(out, data)
    log.info("init: %s", init_note)
    recorded_init = started_from if latest and started_from else init_note  # metrics.json: what the run started from
    start_step = int(optimizer.iterations.numpy())
    if latest:
        notes += [note for note in [schedule_change_note(int(schedule_steps.numpy()), train_cfg, start_step)] if note]
    schedule_steps.assign(train_cfg.steps)
    if options.resume and is_chief and (out / rd.LOGS).is_dir():
        from edge_trash.train.event_logs import trim_event_files

        repeated = trim_event_files(out / rd.LOGS, start_step)
        if repeated:
            log.info("TensorBoard: dropped %d events logged after step %d, which this resume trains again",
                     repeated, start_step)

    # Data: restart the epoch the step falls in and skip the batches already used.
    target_fn = make_target_fn(model_cfg)
    probe, per_epoch = dataset_fn(train_split, train_cfg.batch_size, True, train_cfg.seed, target_fn, 0)
    del probe
    per_epoch = per_epoch or 0
    epoch = start_step // per_epoch if per_epoch else 0
    skip = start_step - epoch * per_epoch if per_epoch else start_step
    train_ds, _ = dataset_fn(train_split, train_cfg.batch_size, True, train_cfg.seed, target_fn, epoch)
    train_ds = train_ds.repeat().skip(skip)
    # Records come from an index, not files: each worker keeps its share of the batches.
    shard = tf.data.Options()
    shard.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    train_ds = train_ds.with_options(shard)
    iterator = iter(strategy.experimental_distribute_dataset(train_ds))

    decay_vars = [v for v in model.trainable_variables if "kernel" in v.name]
    loss_cfg = train_cfg.loss_config()

    def replica_step(images, targets):
        with tf.GradientTape() as tape:
            box_enc, logits = model(images, training=True)
            # over the whole batch's positives: this replica's share of the global batch's loss
            loss, parts = detection_loss(box_enc, logits, targets, loss_cfg, normalizer=global_positives(targets))
            scaled = loss
            if train_cfg.weight_decay:  # the same on every replica: each adds its share of it once
                scaled += train_cfg.weight_decay * tf.add_n([tf.nn.l2_loss(tf.cast(v, tf.float32))
                                                             for v in decay_vars]) / replicas
            total = scaled
            if train_cfg.mixed_precision:
                scaled = optimizer.get_scaled_loss(scaled)
        variables = model.trainable_variables
        apply_replica_gradients(optimizer, tape.gradient(scaled, variables), variables, train_cfg.mixed_precision)
        return {"loss": total, "cls_loss": parts["cls_loss"], "box_loss": parts["box_loss"]}

    @tf.function
    def train_step(it):
        images, targets = next(it)
        per_replica = strategy.run(replica_step, args=(images, targets))
        return {k: strategy.reduce(tf.distribute.ReduceOp.SUM, v, axis=None)
                for k, v in per_replica.items()}

    predict_fn = make_predict_fn(model, model_cfg)
    metrics_path = work / rd.METRICS_JSON
    history: List[Dict[str, Any]] = []
    if options.resume and (out / rd.METRICS_JSON).is_file():
        history = json.loads((out / rd.METRICS_JSON).read_text(encoding="utf-8")).get("history", [])
        history = [h for h in history if h["step"] <= start_step]

    if is_chief:
        writer = tf.summary.create_file_writer(str(out / rd.LOGS / "train"))
        val_writer = tf.summary.create_file_writer(str(out / rd.LOGS / "val"))
    else:
        writer = val_writer = tf.summary.create_noop_writer()

    def run_eval(step: int) -> Dict[str, Any]:
        val_ds, _ = dataset_fn(val_split, train_cfg.batch_size, False, train_cfg.seed, None, 0)
        metrics = evaluate_model(predict_fn, val_ds, model_cfg, class_names,
                                 train_cfg.eval_max_images)
        with val_writer.as_default(step=step):
            for key in ("AP", "AP50", "AP75", "AR100"):
                tf.summary.scalar(f"val/{key}", metrics[key])
        entry = {"step": step, **metrics}
        history.append(entry)
        ap = float(metrics["AP"])
        if ap > float(best_ap.numpy()) + (train_cfg.early_stopping_min_delta
                                          if best_ap.numpy() >= 0 else 0.0):
            best_ap.assign(ap)
            best_step.assign(step)
            evals_without_gain.assign(0)
            _save_weights_atomic(model, work / rd.WEIGHTS_H5)
        else:
            evals_without_gain.assign_add(1)
        return metrics

    def write_metrics(step: int, done: bool, extra: Dict[str, Any]) -> None:
        best = next((h for h in history if h["step"] == int(best_step.numpy())), {})
        rd.write_json_atomic(metrics_path, {
            "step": step, "finished": done, "best_step": int(best_step.numpy()),
            "best": best, "final": history[-1] if history else {}, "history": history,
            "trained_on": train_split, "validated_on": val_split, "init": recorded_init,
            **({"class_balance": balance_report} if balance_report else {}), **extra})

    losses: List[float] = []
    # a run that had stopped early, killed while saving its model: a plain resume finishes it, training nothing
    patience = train_cfg.early_stopping_patience
    stopped_early = bool(latest and options.keep_run_steps and patience and _recorded(out, "finished") is False
                         and int(evals_without_gain.numpy()) >= patience)
    final_metrics: Dict[str, Any] = {}
    step = start_step
    started = time.monotonic()
    bar = progress_bar(total=train_cfg.steps, initial=start_step, disable=not (options.progress and is_chief),
                       unit="step", desc="train")
    balance_report: Dict[str, Any] = {}
    postfix: Dict[str, str] = {}  # loss, lr and the best val AP so far, as the bar shows them
    if is_chief:
        for note in notes:
            bar.write(f"note: {note}")
    if options.dataset_fn is None and is_chief:  # the instances per class the sampler gives, as the README says
        from edge_trash.train import input_pipeline
        from edge_trash.train.balancing import format_balance_table

        sampler = input_pipeline.make_sampler(data_dir, train_split, balance_config(train_cfg), train_cfg.seed)
        balance_report = sampler.report(class_names, epoch)
        bar.write(format_balance_table(balance_report))
        if train_cfg.batch_size > sampler.num_images:
            bar.write(f"note: --batch-size {train_cfg.batch_size} is more than the {plural(sampler.num_images, 'image')} "
                      f"of the {train_split} split: every batch repeats images (each step then costs more and teaches "
                      f"no more); a smaller --batch-size trains faster")
    try:
        while step < train_cfg.steps and not stopped_early:
            logs = {k: float(v) for k, v in train_step(iterator).items()}
            step += 1
            losses.append(logs["loss"])
            if not math.isfinite(logs["loss"]):
                raise TrainError(f"step {step}: loss is {logs['loss']}; lower train.learning_rate "
                                 f"(now {train_cfg.learning_rate}) or check the data")
            bar.update(1)
            if step % train_cfg.log_every == 0 or step == train_cfg.steps:
                lr_value = optimizer.learning_rate  # a schedule, or its current value
                if callable(lr_value):
                    lr_value = lr_value(optimizer.iterations - 1)
                lr = float(tf.convert_to_tensor(lr_value).numpy())
                postfix.update(loss=f"{logs['loss']:.3f}", lr=f"{lr:.2e}",
                               ap=f"{max(float(best_ap.numpy()), 0):.3f}")
                bar.set_postfix(postfix)
                with writer.as_default(step=step):
                    for key, value in logs.items():
                        tf.summary.scalar(f"train/{key}", value)
                    tf.summary.scalar("train/learning_rate", lr)
            if options.on_step is not None:
                options.on_step(step, logs)
            evaluated = False
            if step % train_cfg.eval_every == 0 or step == train_cfg.steps:
                final_metrics = run_eval(step)
                evaluated = True
                postfix["ap"] = f"{max(float(best_ap.numpy()), 0):.3f}"  # the bar's last draw shows the best AP
                bar.set_postfix(postfix)
                bar.write(f"step {step}: {val_split} AP {final_metrics['AP']:.3f} "
                          f"AP50 {final_metrics['AP50']:.3f} (best AP {float(best_ap.numpy()):.3f} "
                          f"at step {int(best_step.numpy())})")
            if evaluated and patience and int(evals_without_gain.numpy()) >= patience:
                stopped_early = True
                bar.write(f"early stopping at step {step}: no AP gain in {plural(patience, 'evaluation')}")
            if step % train_cfg.checkpoint_every == 0 or evaluated or step == train_cfg.steps:
                manager.save(checkpoint_number=step)
                write_metrics(step, False, {})
            if stopped_early:
                break
    finally:
        bar.close()
        writer.flush()
        val_writer.flush()
    seconds = time.monotonic() - started
    done_steps = step - start_step
    images_per_second = done_steps * train_cfg.batch_size / seconds if seconds > 0 else 0.0

    if (work / rd.WEIGHTS_H5).is_file():
        model.load_weights(str(work / rd.WEIGHTS_H5))  # the SavedModel holds the best weights
    export_saved_model(model, model_cfg, work)
    best = next((h for h in history if h["step"] == int(best_step.numpy())), {})
    write_metrics(step, True, {"stopped_early": stopped_early, "train_seconds": round(seconds, 1),
                               "images_per_second": round(images_per_second, 2),
                               "saved_model_step": int(best_step.numpy())})
    if not is_chief:
        shutil.rmtree(work, ignore_errors=True)
    return TrainResult(run_dir=out, step=step, best_step=int(best_step.numpy()), best_metrics=best,
                       final_metrics=final_metrics, stopped_early=stopped_early, seconds=seconds,
                       images_per_second=images_per_second, losses=losses, notes=notes, init=init_note,
                       first_step=start_step,
                       train_split=train_split, val_split=val_split)
