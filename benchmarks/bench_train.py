"""Training throughput: our SSD MobileNet v2 vs Model Garden's RetinaNet-MobileNetV2, and the
input pipeline (with augmentation) vs what the model consumes.

    .venv/bin/python benchmarks/bench_train.py --out bench-output/train.json \
        [--input-size 320] [--batch-size 8] [--steps 10] [--data TFRECORD_DIR]

Prints a table and writes the numbers as JSON. Targets: our step at least as fast as
Model Garden's; the input pipeline at least 2x the model's consumption. Without
``--data`` the built-in sample dataset is generated into a temporary folder.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _time_steps(step: Callable[[], Any], warmup: int, steps: int) -> float:
    """Seconds per step after ``warmup`` untimed steps (the first one traces)."""
    for _ in range(warmup):
        step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - start) / steps


def bench_ssd(size: int, batch: int, width: float, head: str, num_classes: int, warmup: int,
              steps: int) -> Dict[str, Any]:
    """Our model's full training step (forward, focal + Huber loss on real targets, SGD)."""
    import numpy as np
    import tensorflow as tf
    import tf_keras as keras

    from edge_trash.models.config import SSDConfig
    from edge_trash.models.losses import detection_loss
    from edge_trash.models.ssd import build_ssd
    from edge_trash.models.targets import make_target_fn

    config = SSDConfig(input_size=size, width_multiplier=width, head=head,
                       num_classes=num_classes).validate()
    model = build_ssd(config)
    optimizer = keras.optimizers.SGD(0.01, momentum=0.9)
    rng = np.random.default_rng(0)
    images = tf.constant(rng.uniform(0, 255, (batch, size, size, 3)).astype(np.float32))
    target_fn = make_target_fn(config)
    per_image = [target_fn(tf.constant([[0.1, 0.1, 0.4, 0.5], [0.5, 0.3, 0.9, 0.7]]),
                           tf.constant([1, 2])) for _ in range(batch)]
    targets = {k: tf.stack([t[k] for t in per_image]) for k in per_image[0]}

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            boxes, logits = model(images, training=True)
            loss, _ = detection_loss(boxes, logits, targets)
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return loss

    seconds = _time_steps(step, warmup, steps)
    return {"model": f"edge-trash SSD MobileNetV2 {width} ({head})", "params": model.count_params(),
            "seconds_per_step": seconds, "images_per_second": batch / seconds}


def bench_retinanet(size: int, batch: int, num_classes: int, warmup: int,
                    steps: int) -> Dict[str, Any]:
    """Model Garden RetinaNet with a MobileNetV2 backbone (FPN, separable head), built from its
    config; training step with Model Garden's focal loss + Huber on the raw outputs."""
    import numpy as np
    import tensorflow as tf
    import tf_keras as keras
    from official.core import exp_factory
    from official.vision.losses import focal_loss
    from official.vision.modeling import factory

    exp = exp_factory.get_exp_config("retinanet")
    model_cfg = exp.task.model
    model_cfg.override({
        "num_classes": num_classes + 1,
        "input_size": [size, size, 3],
        "min_level": 3, "max_level": 7,
        "backbone": {"type": "mobilenet", "mobilenet": {"model_id": "MobileNetV2"}},
        "decoder": {"type": "fpn", "fpn": {"use_separable_conv": True, "use_keras_layer": True}},
        "head": {"num_filters": 128, "num_convs": 4, "use_separable_conv": True},
        "norm_activation": {"activation": "relu6", "use_sync_bn": False},
    }, is_strict=False)
    model = factory.build_retinanet(keras.layers.InputSpec(shape=[None, size, size, 3]), model_cfg)
    optimizer = keras.optimizers.SGD(0.01, momentum=0.9)
    rng = np.random.default_rng(0)
    images = tf.constant(rng.uniform(-1, 1, (batch, size, size, 3)).astype(np.float32))
    focal = focal_loss.FocalLoss(alpha=0.25, gamma=2.0, reduction=keras.losses.Reduction.SUM)
    huber = keras.losses.Huber(reduction=keras.losses.Reduction.SUM)

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            out = model(images, training=True)
            loss = 0.0
            for level in out["cls_outputs"]:
                cls = out["cls_outputs"][level]
                loss += focal(tf.zeros_like(cls), cls)
                box = out["box_outputs"][level]
                loss += huber(tf.zeros_like(box), box)
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return loss

    seconds = _time_steps(step, warmup, steps)
    return {"model": "Model Garden RetinaNet MobileNetV2 (FPN P3-P7)",
            "params": model.count_params(), "seconds_per_step": seconds,
            "images_per_second": batch / seconds}


def bench_input(data_dir: Path, size: int, batch: int, augment: str, batches: int,
                num_classes: int) -> Dict[str, Any]:
    """The training input pipeline with augmentation and our target function, batches/s."""
    from edge_trash.models.config import SSDConfig
    from edge_trash.models.targets import make_target_fn
    from edge_trash.train import input_pipeline
    from edge_trash.train.augment import get_augment_config

    config = SSDConfig(input_size=size, num_classes=num_classes)
    target_fn = make_target_fn(config)
    ds = input_pipeline.make_dataset(data_dir, "train", batch, size, get_augment_config(augment),
                                     None, 0, True, lambda im, b, c: target_fn(b, c))
    it = iter(ds)
    next(it)  # start-up (index, first epoch plan)
    start = time.perf_counter()
    for _ in range(batches):
        next(it)
    seconds = (time.perf_counter() - start) / batches
    return {"pipeline": f"make_dataset(augment={augment!r}) + anchor targets",
            "seconds_per_batch": seconds, "images_per_second": batch / seconds}


def _sample_data(tmp: Path) -> Path:
    from edge_trash.tfrecords.build import BuildOptions, build_tfrecords
    from edge_trash.tfrecords.sample_data import write_sample_dataset

    sample = write_sample_dataset(tmp / "sample", num_images=60, seed=0)
    build_tfrecords(BuildOptions(annotations=sample.annotations, images=sample.images,
                                 out=tmp / "data", seed=0))
    return tmp / "data"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("bench-output/train.json"), help="JSON file to write")
    parser.add_argument("--input-size", type=int, default=320)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--width", type=float, default=1.0)
    parser.add_argument("--head", choices=["ssd", "ssdlite"], default="ssd")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per model")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--data", type=Path, default=None, help="TFRecord dir for the input bench")
    parser.add_argument("--augment", default="default")
    parser.add_argument("--input-batches", type=int, default=20)
    parser.add_argument("--skip-retinanet", action="store_true")
    args = parser.parse_args(argv)

    num_classes = 6
    results: Dict[str, Any] = {
        "input_size": args.input_size, "batch_size": args.batch_size,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
    }
    results["ssd"] = bench_ssd(args.input_size, args.batch_size, args.width, args.head,
                               num_classes, args.warmup, args.steps)
    if not args.skip_retinanet:
        results["retinanet"] = bench_retinanet(args.input_size, args.batch_size, num_classes,
                                               args.warmup, args.steps)
    with tempfile.TemporaryDirectory() as tmp:
        data = args.data or _sample_data(Path(tmp))
        results["input"] = bench_input(data, args.input_size, args.batch_size, args.augment,
                                       args.input_batches, num_classes)
    ssd_ips = results["ssd"]["images_per_second"]
    results["input_over_consumption"] = results["input"]["images_per_second"] / ssd_ips
    results["targets"] = {"input_at_least_2x": results["input_over_consumption"] >= 2.0}
    if "retinanet" in results:
        results["ssd_over_retinanet"] = ssd_ips / results["retinanet"]["images_per_second"]
        results["targets"]["ssd_at_least_as_fast"] = results["ssd_over_retinanet"] >= 1.0

    rows = [(results["ssd"]["model"], results["ssd"]["seconds_per_step"], ssd_ips)]
    if "retinanet" in results:
        r = results["retinanet"]
        rows.append((r["model"], r["seconds_per_step"], r["images_per_second"]))
    i = results["input"]
    rows.append((i["pipeline"], i["seconds_per_batch"], i["images_per_second"]))
    print(f"batch {args.batch_size}, {args.input_size} px, {os.cpu_count()} CPUs")
    print(f"{'what':<58} {'s/step':>8} {'img/s':>8}")
    for name, sec, ips in rows:
        print(f"{name:<58} {sec:>8.3f} {ips:>8.1f}")
    print(f"input / consumption: {results['input_over_consumption']:.2f}x (target >= 2x)")
    if "ssd_over_retinanet" in results:
        print(f"SSD / RetinaNet speed: {results['ssd_over_retinanet']:.2f}x (target >= 1x)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp_out = args.out.with_name(f".{args.out.name}.tmp")
    tmp_out.write_text(json.dumps(results, indent=2) + "\n")
    os.replace(tmp_out, args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
