"""Learning-rate schedule: linear warm-up from 0, then cosine decay to a floor."""

from __future__ import annotations

from edge_trash.train.train_config import TrainConfig


def build_lr_schedule(config: TrainConfig):
    """A ``tf_keras`` schedule of the optimizer step: 0 -> peak over ``warmup_steps``,
    then cosine down to ``peak * min_learning_rate_fraction`` at ``steps``."""
    import tf_keras as keras

    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=0.0 if config.warmup_steps else config.learning_rate,
        decay_steps=config.steps - config.warmup_steps,
        alpha=config.min_learning_rate_fraction,
        warmup_target=config.learning_rate if config.warmup_steps else None,
        warmup_steps=config.warmup_steps)


def build_optimizer(config: TrainConfig):
    """SGD with momentum or Adam over ``build_lr_schedule``; wrapped for loss scaling under
    mixed precision."""
    import tf_keras as keras

    schedule = build_lr_schedule(config)
    clip = {"global_clipnorm": config.clip_norm} if config.clip_norm else {}
    if config.optimizer == "sgd":
        optimizer = keras.optimizers.SGD(schedule, momentum=config.momentum, **clip)
    else:
        optimizer = keras.optimizers.Adam(schedule, **clip)
    if config.mixed_precision:
        optimizer = keras.mixed_precision.LossScaleOptimizer(optimizer)
    return optimizer
