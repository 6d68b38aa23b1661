"""``edge-trash train``: fine-tune SSD MobileNet v2 on the TFRecords (thin CLI over trainer.train)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import click

from edge_trash.models.config import INPUT_STRIDE, MAX_INPUT_SIZE, MIN_INPUT_SIZE  # (stdlib only: no TensorFlow)

RESUME_FIXED = ("config", "batch_size", "input_size", "init", "mixed_precision", "fold")


def _dir_size_mb(path: Path) -> float:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 1e6


def is_run_config(config: Optional[str]) -> bool:
    """Whether ``--config`` names a run's own ``RUN/config.json`` (beside the run's labels.txt), as the
    ``--init RUN --config RUN/config.json`` commands edge-trash prints do."""
    if not config:
        return False
    path = Path(config)
    return path.name == "config.json" and path.is_file() and (path.parent / "labels.txt").is_file()


@click.command("train")
@click.option("--data", "data_dir", required=True,
              type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="TFRecord directory written by build-tfrecords (train-*, val-*, labels.txt; or fold0-*.. "
                   "with --fold).")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Run directory to create (or to continue with --resume).")
@click.option("--config", "config", default=None, metavar="FILE|PRESET",
              help="YAML/JSON file with 'model' and 'train' sections (a run's RUN/config.json too: its settings, "
                   "without its fold), or a preset: ssd_mobilenet_v2_320 (default), ssdlite_mobilenet_v2_320, demo.")
@click.option("--steps", type=click.IntRange(min=1), default=None,
              help="Training steps (with --resume: the new total, past the step the run reached; without it the "
                   "run's own count).")
@click.option("--batch-size", type=click.IntRange(min=1), default=None, help="Global batch size.")
@click.option("--input-size", type=click.IntRange(MIN_INPUT_SIZE, MAX_INPUT_SIZE), default=None,
              help=f"Model input size in pixels (a multiple of {INPUT_STRIDE}; 224..416 for real use).")
@click.option("--init", "init", default=None, metavar="PATH|imagenet|scratch",
              help="Keras MobileNetV2 ImageNet .h5 (also looked up in ~/.keras/models), "
                   "'imagenet' (that file for the configured width), a previous run directory "
                   "(its class head kept for the same classes, reordered for the same ones in another order, "
                   "kept for the classes both have and fresh for new ones otherwise, as metrics.json's init "
                   "says), or 'scratch' (poor accuracy). "
                   "Default: the config's train.init, imagenet (the demo preset: scratch).")
@click.option("--fold", type=click.IntRange(min=0), default=None,
              help="For a build-tfrecords --folds K folder: train on every other fold and validate on this "
                   "one (one run per fold, each with its own --out).")
@click.option("--resume", is_flag=True, help="Continue RUN_DIR after a stop, same step, schedule and data "
                                             "order, on the data it was trained on (RUN_DIR/data.json), "
                                             "with RUN_DIR/config.json: only --steps and --strategy "
                                             "can change.")
@click.option("--strategy", type=click.Choice(["auto", "mirrored", "multi_worker", "tpu"]),
              default=None, help="tf.distribute strategy (auto: Mirrored over several GPUs; multi_worker: "
                   "one process per worker with TF_CONFIG set, all with the same --out, which "
                   "only the chief writes).")
@click.option("--mixed-precision", is_flag=True, default=None,
              help="Train in mixed_float16 (GPUs/TPUs; slower on CPU).")
@click.option("--no-progress", is_flag=True, help="No progress bar (logs only).")
def train(data_dir: Path, out_dir: Path, config: Optional[str], steps: Optional[int],
          batch_size: Optional[int], input_size: Optional[int], init: Optional[str],
          fold: Optional[int], resume: bool, strategy: Optional[str], mixed_precision: Optional[bool],
          no_progress: bool) -> None:
    """Train SSD MobileNet v2 on TFRecords from build-tfrecords; write a run directory."""
    from edge_trash.models.init_weights import InitError
    from edge_trash.models.run_dir import RunDirError
    from edge_trash.train.train_config import load_config
    from edge_trash.train.trainer import TrainError, TrainOptions
    from edge_trash.train.trainer import train as run_training

    given = {"config": config, "batch_size": batch_size, "input_size": input_size, "init": init,
             "mixed_precision": mixed_precision, "fold": fold}
    if resume:
        fixed = [f"--{k.replace('_', '-')}" for k in RESUME_FIXED if given[k] is not None]
        if fixed:
            raise click.UsageError(f"--resume continues with {out_dir}/config.json; {', '.join(fixed)} "
                                   "cannot change (only --steps and --strategy can)")
    try:
        model_cfg, train_cfg = load_config(config)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--config") from None
    if fold is None and train_cfg.fold is not None and is_run_config(config):
        # the fold belongs to that run's --data (a --folds build), not to its settings: --fold picks one here
        click.echo(f"note: --config {config}: that run validated on fold {train_cfg.fold} (train --fold "
                   f"{train_cfg.fold}); this run does not, unless --fold says so", err=True)
        train_cfg = train_cfg.replace(fold=None)
    changes = {k: v for k, v in (("steps", steps), ("batch_size", batch_size), ("init", init),
                                 ("strategy", strategy), ("mixed_precision", mixed_precision), ("fold", fold))
               if v is not None}
    try:
        config_steps, config_warmup = train_cfg.steps, train_cfg.warmup_steps
        train_cfg = train_cfg.replace(**changes)
        if not resume and train_cfg.steps < config_steps and config_warmup:
            from edge_trash.terminal import plural

            # a shorter run keeps the warm-up's share of the config's schedule (500 of 20000 was all of --steps 501)
            train_cfg = train_cfg.replace(warmup_steps=config_warmup * train_cfg.steps // config_steps)
            click.echo(f"note: warm-up {plural(train_cfg.warmup_steps, 'step')}: the config's {config_warmup} of "
                       f"{config_steps}, scaled to --steps {train_cfg.steps}", err=True)
        if resume and train_cfg.warmup_steps >= train_cfg.steps:
            train_cfg = train_cfg.replace(warmup_steps=0)  # unused: a resume keeps its run's own schedule
        train_cfg.validate()
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--steps/--batch-size/--config") from None
    if input_size is not None:
        try:
            model_cfg = model_cfg.replace(input_size=input_size).validate()
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--input-size") from None

    started = time.monotonic()
    from edge_trash.terminal import stop_on_sigterm

    stop_on_sigterm()  # a `kill` stops it like Ctrl-C, with the same word on how to go on
    try:
        result = run_training(TrainOptions(data_dir=data_dir, out_dir=out_dir, model=model_cfg,
                                           train=train_cfg, resume=resume,
                                           keep_run_steps=resume and steps is None,
                                           progress=not no_progress))
    except KeyboardInterrupt:
        click.echo(interrupted_message(data_dir, out_dir, steps, strategy), err=True)
        raise
    except InitError as exc:  # not given, it is the run's or the config's, which the message names as if given
        whose = f"the run's, in {out_dir}/config.json" if resume else "the config's"
        hint = "--init" if init is not None else f"--init (not given; {whose})"
        raise click.BadParameter(str(exc), param_hint=hint) from None
    except (TrainError, RunDirError) as exc:
        raise click.UsageError(str(exc)) from None
    except OSError as exc:  # an --out that cannot be written, a file that vanished
        from edge_trash.atomic_files import os_error_message

        raise click.ClickException(os_error_message(exc, out_dir)) from None
    best = result.best_metrics
    size = _dir_size_mb(out_dir / "saved_model") if (out_dir / "saved_model").exists() else 0.0
    if result.val_split == "val":
        from edge_trash.terminal import shell_word

        on, after = "val", (f"next: edge-trash export --model {shell_word(out_dir)} --data {shell_word(data_dir)} "
                            "--out bundle/ --edgetpu")
    else:  # one fold of a cross-validation
        on = f"{result.val_split} (trained on {result.train_split})"
        after = ("next: a run for each other fold (--fold K, each with its own --out), then compare their "
                 "best AP in RUN/metrics.json; for the model to deploy, build-tfrecords without --folds, "
                 "train on that and export it")
    from edge_trash.terminal import plural

    if result.first_step and result.step == result.first_step:  # stopped after its last step, before saving
        trained = (f"Finished the run at step {result.step} in {time.monotonic() - started:.0f} s (no step was "
                   f"left to train; its saved model was written)")
    else:
        trained = ((f"Trained {plural(result.step, 'step')}" if not result.first_step else
                    f"Trained to step {result.step} ({plural(result.step - result.first_step, 'step')} after "
                    f"resuming at step {result.first_step})") +
                   f" in {time.monotonic() - started:.0f} s ({result.seconds:.0f} s in the training loop at "
                   f"{result.images_per_second:.1f} images/s, the rest start-up and saving"
                   f"{'; stopped early' if result.stopped_early else ''})")
    click.echo(
        f"{trained}: "
        f"best {on} AP {best.get('AP', float('nan')):.3f}, AP50 {best.get('AP50', float('nan')):.3f} "
        f"at step {result.best_step}. Wrote {out_dir} (saved_model/ {size:.1f} MB, "
        f"model.weights.h5, metrics.json). init: {result.init}.\n{after}")


def interrupted_message(data_dir: Path, out_dir: Path, steps: Optional[int] = None,
                        strategy: Optional[str] = None) -> str:
    """What ``train`` says when Ctrl-C or SIGTERM stops it: the last checkpoint and the command that goes on
    (with the ``--steps`` and ``--strategy`` this command was given: a resume to a new count goes on to it)."""
    from edge_trash.models.run_dir import latest_checkpoint_step, resume_command
    from edge_trash.terminal import shell_word

    if not (out_dir / "config.json").is_file():
        return f"train: stopped before the run began: nothing in {out_dir} to resume; run the same command again"
    step = latest_checkpoint_step(out_dir)
    kept = f"keeps its checkpoint from step {step}" if step is not None else "has no checkpoint yet (it starts over)"
    return (f"train: stopped; {out_dir} {kept}: go on with "
            f"{resume_command(shell_word(data_dir), out_dir, steps, strategy)}")
