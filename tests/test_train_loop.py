"""The training loop end to end on tiny TFRecords: overfit, resume, MirroredStrategy."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import List, Tuple

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
TOY_CLASSES = ("square", "bar")
# (class id, ymin, xmin, ymax, xmax) normalized, per image; big, well separated objects.
TOY_OBJECTS: Tuple[Tuple[Tuple[int, float, float, float, float], ...], ...] = (
    ((1, 0.10, 0.10, 0.45, 0.45), (2, 0.55, 0.20, 0.90, 0.40)),
    ((2, 0.10, 0.55, 0.45, 0.75), (1, 0.50, 0.50, 0.90, 0.90)),
    ((1, 0.30, 0.30, 0.70, 0.70),),
    ((2, 0.05, 0.05, 0.40, 0.25), (2, 0.55, 0.70, 0.95, 0.90), (1, 0.15, 0.50, 0.45, 0.80)),
)
COLORS = {1: (220, 40, 40), 2: (40, 60, 220)}


def _example(image: np.ndarray, objects, image_id: int) -> bytes:
    """One record through the converter's own writer (JPEG quality 95)."""
    import io

    from PIL import Image

    from edge_trash.tfrecords.tf_example import ObjectBox, make_example_bytes

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=95)
    h, w = image.shape[:2]
    boxes = [ObjectBox(xmin=x0, ymin=y0, xmax=x1, ymax=y1, label=cls, text=TOY_CLASSES[cls - 1], is_crowd=0,
                       area=(x1 - x0) * w * (y1 - y0) * h) for cls, y0, x0, y1, x1 in objects]
    return make_example_bytes(buf.getvalue(), w, h, f"{image_id}.jpg", str(image_id), boxes)


def write_toy_data(out: Path, size: int = 128, splits=("train", "val")) -> Path:
    """Four images of red squares and blue bars on grey; the same records in every split."""
    from edge_trash.tfrecords.tfrecord_file import TFRecordWriter

    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    records = []
    for i, objects in enumerate(TOY_OBJECTS):
        image = np.full((size, size, 3), 128, np.uint8) + rng.integers(0, 20, (size, size, 3), dtype=np.uint8)
        for cls, y0, x0, y1, x1 in objects:
            image[int(y0 * size):int(y1 * size), int(x0 * size):int(x1 * size)] = COLORS[cls]
        records.append(_example(image, objects, i + 1))
    for split in splits:
        with TFRecordWriter(out / f"{split}-00000-of-00001.tfrecord") as writer:
            for record in records:
                writer.write(record)
    (out / "labels.txt").write_text("\n".join(TOY_CLASSES) + "\n")
    return out


def toy_configs(steps: int, **train_changes):
    """A tiny model (128 px, width 0.35, SSDLite) and a fast schedule for the toy data."""
    from edge_trash.models.config import get_preset
    from edge_trash.train.train_config import TrainConfig

    model = get_preset("demo").replace(width_multiplier=0.35, input_size=128)
    train = TrainConfig(steps=steps, batch_size=4, optimizer="adam", learning_rate=0.01,
                        warmup_steps=10, weight_decay=0.0, checkpoint_every=10, eval_every=steps,
                        log_every=10, augment=None, init="scratch", seed=3)
    return model, train.replace(**train_changes)


@pytest.mark.slow
def test_overfit_reaches_ap50(tmp_path, capsys, monkeypatch):
    """Anchors, targets, loss and decoding agree: 4 images are learned to AP50 >= 0.9."""
    from edge_trash.export import compat
    from edge_trash.models.run_dir import load_run
    from edge_trash.train.trainer import TrainOptions, train

    data = write_toy_data(tmp_path / "data")
    model, cfg = toy_configs(steps=70, eval_every=70)
    monkeypatch.setattr(compat, "PARAMETER_CACHE_BYTES", 100_000)  # as if this model were too big for the TPU
    result = train(TrainOptions(data_dir=data, out_dir=tmp_path / "run", model=model, train=cfg))
    assert result.best_metrics["AP50"] >= 0.9, result.best_metrics
    # said before training, not first at the export hours later
    assert [n[:40] for n in result.notes] == ["for the Edge TPU, this model is big: the"]
    said = capsys.readouterr()
    err = said.err
    assert "note: for the Edge TPU, this model is big: the Edge TPU parameters, " in said.out
    # the bar's last draw shows the best AP of the evaluation at the last step (it showed ap=0.000, from before it)
    last_draw = err.rstrip().split("\r")[-1]
    assert last_draw.startswith("train: 100%") and last_draw.endswith(f"ap={result.best_metrics['AP']:.3f}]"), last_draw
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["finished"] and metrics["best"]["AP50"] == result.best_metrics["AP50"]
    assert [h["step"] for h in metrics["history"]] == [70]
    # The run directory loads back (best weights) and the SavedModel has the raw outputs.
    keras_model, config, names = load_run(tmp_path / "run")
    assert names == list(TOY_CLASSES) and config.num_classes == 2
    import tensorflow as tf

    loaded = tf.saved_model.load(str(tmp_path / "run" / "saved_model"))
    image = tf.zeros([1, 128, 128, 3])
    out = loaded.signatures["serving_default"](images=image)
    boxes, logits = keras_model(image, training=False)
    np.testing.assert_allclose(out["class_logits"].numpy(), logits.numpy(), atol=1e-4)
    np.testing.assert_allclose(out["box_encodings"].numpy(), boxes.numpy(), atol=1e-4)


class _Killed(RuntimeError):
    pass


@pytest.mark.slow
def test_resume_after_kill_repeats_the_uninterrupted_loss_curve(tmp_path):
    """Killed at step 11 (last checkpoint 9, mid-epoch), resumed: steps 10..16 match."""
    from edge_trash.train.trainer import TrainOptions, train

    data = write_toy_data(tmp_path / "data")
    # batch 2 over 4 images: 2 steps per epoch, so step 9 resumes half-way through epoch 4.
    model, cfg = toy_configs(steps=16, batch_size=2, checkpoint_every=3, eval_every=100)
    straight = train(TrainOptions(data_dir=data, out_dir=tmp_path / "a", model=model, train=cfg,
                                  progress=False))

    def kill(step, logs):
        if step == 11:
            raise _Killed("simulated kill")

    with pytest.raises(_Killed):
        train(TrainOptions(data_dir=data, out_dir=tmp_path / "b", model=model, train=cfg,
                           progress=False, on_step=kill))
    assert not (tmp_path / "b" / "saved_model").exists()
    from test_train_event_logs import logged_scalars

    logged = [step for step, tag, _ in logged_scalars(tmp_path / "b" / "logs") if tag == "train/loss"]
    assert logged == [10]  # logged before the kill at 11, after the checkpoint at 9: trained again by the resume
    resumed = train(TrainOptions(data_dir=data, out_dir=tmp_path / "b", model=model, train=cfg,
                                 progress=False, resume=True))
    assert resumed.first_step == 9 and resumed.step == 16
    logged = [(step, tag) for step, tag, _ in logged_scalars(tmp_path / "b" / "logs")]
    assert [step for step, tag in logged if tag == "train/loss"] == [10, 16]  # each step once
    assert logged == [(step, tag) for step, tag, _ in logged_scalars(tmp_path / "a" / "logs")]
    assert len(straight.losses) == 16 and len(resumed.losses) == 7
    np.testing.assert_allclose(resumed.losses, straight.losses[9:], rtol=2e-3)
    # A different data position would give different losses: the check can fail.
    assert not np.allclose(straight.losses[8:15], straight.losses[9:16], rtol=2e-3)
    # Resuming a finished run with the same step count did nothing and called it trained: now refused.
    from edge_trash.train.trainer import TrainError

    with pytest.raises(TrainError, match=f"--resume: {tmp_path / 'b'} already reached step 16 and finished; "
                                         "--steps 16 leaves nothing to train: give --steps 17 or more"):
        train(TrainOptions(data_dir=data, out_dir=tmp_path / "b", model=model, train=cfg, progress=False,
                           resume=True))


@pytest.mark.slow
def test_a_run_killed_while_saving_its_model_is_finished_by_a_resume(tmp_path, monkeypatch):
    """Killed after its last checkpoint, before its SavedModel: ``--resume`` was refused ("already reached step
    N and finished") while export said to resume it. Now the resume trains nothing and writes what is missing."""
    from edge_trash.train import trainer
    from edge_trash.train.trainer import TrainOptions, train

    data = write_toy_data(tmp_path / "data")
    model, cfg = toy_configs(steps=4, warmup_steps=1, checkpoint_every=2, eval_every=4)
    saver = trainer.export_saved_model

    def killed(*args, **kwargs):
        raise _Killed("simulated kill while saving")

    monkeypatch.setattr(trainer, "export_saved_model", killed)
    with pytest.raises(_Killed):
        train(TrainOptions(data_dir=data, out_dir=tmp_path / "run", model=model, train=cfg, progress=False))
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert (metrics["step"], metrics["finished"]) == (4, False) and not (tmp_path / "run" / "saved_model").exists()
    monkeypatch.setattr(trainer, "export_saved_model", saver)
    resumed = train(TrainOptions(data_dir=data, out_dir=tmp_path / "run", model=model, train=cfg, progress=False,
                                 resume=True, keep_run_steps=True))
    assert (resumed.first_step, resumed.step, resumed.losses) == (4, 4, [])
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert (metrics["step"], metrics["finished"]) == (4, True) and (tmp_path / "run" / "saved_model").is_dir()
    assert [h["step"] for h in metrics["history"]] == [4]  # the evaluation before the kill is kept, not repeated
    # the same for a run that had stopped early (below its steps): the resume does not train on towards them
    model, cfg = toy_configs(steps=40, warmup_steps=1, checkpoint_every=2, eval_every=2, early_stopping_patience=1,
                             early_stopping_min_delta=1.0)  # no evaluation gains a whole AP point: stops at step 4
    monkeypatch.setattr(trainer, "export_saved_model", killed)
    with pytest.raises(_Killed):
        train(TrainOptions(data_dir=data, out_dir=tmp_path / "early", model=model, train=cfg, progress=False))
    assert json.loads((tmp_path / "early" / "metrics.json").read_text())["step"] == 4
    monkeypatch.setattr(trainer, "export_saved_model", saver)
    resumed = train(TrainOptions(data_dir=data, out_dir=tmp_path / "early", model=model, train=cfg, progress=False,
                                 resume=True, keep_run_steps=True))
    assert (resumed.first_step, resumed.step, resumed.losses, resumed.stopped_early) == (4, 4, [], True)
    assert json.loads((tmp_path / "early" / "metrics.json").read_text())["finished"] is True


MIRRORED_SCRIPT = textwrap.dedent("""
    import json, sys
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()])
    sys.path.insert(0, sys.argv[3])
    from test_train_loop import toy_configs
    from edge_trash.train.trainer import TrainOptions, make_strategy, train
    model, cfg = toy_configs(steps=8, warmup_steps=2, strategy="mirrored", eval_every=8)
    replicas = make_strategy("mirrored").num_replicas_in_sync
    result = train(TrainOptions(data_dir=sys.argv[1], out_dir=sys.argv[2], model=model,
                                train=cfg, progress=False))
    print("RESULT " + json.dumps({"replicas": replicas, "losses": result.losses,
                                  "step": result.step}))
""")


@pytest.mark.slow
def test_mirrored_strategy_on_two_logical_cpus(tmp_path):
    data = write_toy_data(tmp_path / "data")
    proc = subprocess.run(
        [sys.executable, "-c", MIRRORED_SCRIPT, str(data), str(tmp_path / "run"),
         str(Path(__file__).parent)],
        capture_output=True, text=True, timeout=600, cwd=REPO)
    lines = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stderr[-3000:]
    result = json.loads(lines[-1][len("RESULT "):])
    assert result["replicas"] == 2 and result["step"] == 8
    losses = result["losses"]
    assert len(losses) == 8 and all(np.isfinite(losses))
    assert losses[-1] < losses[0]
    assert (tmp_path / "run" / "saved_model" / "saved_model.pb").is_file()


CLIP_SCRIPT = textwrap.dedent("""
    import json
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()])
    from edge_trash.train.schedule import build_optimizer
    from edge_trash.train.train_config import TrainConfig
    from edge_trash.train.trainer import apply_replica_gradients
    config = TrainConfig(steps=10, warmup_steps=0, optimizer="sgd", momentum=0.0, learning_rate=1.0, clip_norm=1.0)
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    with strategy.scope():
        weights = tf.Variable([0.0, 0.0])
        optimizer = build_optimizer(config)

    def replica_step():
        first = tf.distribute.get_replica_context().replica_id_in_sync_group == 0
        apply_replica_gradients(optimizer, [tf.where(first, [3.0, 0.0], [0.0, 4.0])], [weights], False)

    tf.function(lambda: strategy.run(replica_step))()
    print("RESULT " + json.dumps(weights.numpy().tolist()))
""")


LOSS_SCRIPT = textwrap.dedent("""
    import json
    import numpy as np
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()])
    from edge_trash.models.losses import detection_loss, global_positives
    rng = np.random.default_rng(0)
    n, columns = 50, 4
    positive = np.zeros((4, n), np.float32)
    positive[0, :7] = positive[1, :6] = 1  # replica 0 holds 13 positives, replica 1 (images 2, 3) only background
    batch = {"box_weights": positive, "cls_weights": np.ones((4, n), np.float32),
             "cls_targets": (positive * rng.integers(1, columns, (4, n))).astype(np.int32),
             "box_targets": rng.normal(size=(4, n, 4)).astype(np.float32)}
    boxes, logits = rng.normal(size=(4, n, 4)).astype(np.float32), rng.normal(size=(4, n, columns)).astype(np.float32)
    whole, _ = detection_loss(boxes, logits, batch, normalizer=global_positives(batch))  # one replica
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])

    def half(array):
        return strategy.experimental_distribute_values_from_function(
            lambda context: tf.constant(array[2 * context.replica_id_in_sync_group:][:2]))

    def replica_loss(boxes, logits, targets):
        return detection_loss(boxes, logits, targets, normalizer=global_positives(targets))[0]

    shares = strategy.run(tf.function(replica_loss), args=(half(boxes), half(logits),
                                                           {k: half(v) for k, v in batch.items()}))
    summed = strategy.reduce(tf.distribute.ReduceOp.SUM, shares, axis=None)
    print("RESULT " + json.dumps([float(whole), float(summed)]))
""")


def test_the_loss_of_a_batch_is_the_same_on_one_replica_or_two():
    """Each replica divided by its own positives (a background-only one by 1) and the mean was taken: 10.19 on two
    replicas against 10.38 on one for the same batch. Over the whole batch's positives, the shares add up to it."""
    proc = subprocess.run([sys.executable, "-c", LOSS_SCRIPT], capture_output=True, text=True, timeout=300,
                          cwd=REPO, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stderr[-3000:]
    whole, summed = json.loads(lines[-1][len("RESULT "):])
    assert whole > 0 and summed == pytest.approx(whole, rel=1e-6)


def test_the_gradient_clip_acts_on_the_sum_over_replicas():
    """Two replicas' shares (3, 0) and (0, 4) sum to (3, 4), norm 5: clipped to norm 1 that is (0.6, 0.8), the
    step of one replica with the whole batch. A clip of each share first gave (0.71, 0.71)."""
    proc = subprocess.run([sys.executable, "-c", CLIP_SCRIPT], capture_output=True, text=True, timeout=300,
                          cwd=REPO, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stderr[-3000:]
    np.testing.assert_allclose(json.loads(lines[-1][len("RESULT "):]), [-0.6, -0.8], atol=1e-6)


@pytest.mark.slow
def test_mixed_precision_trains_with_loss_scaling_and_exports_float32(tmp_path):
    """train.mixed_precision: float16 compute with a loss-scale optimizer, float32 outputs."""
    import tensorflow as tf
    import tf_keras as keras

    from edge_trash.train.trainer import TrainOptions, train

    data = write_toy_data(tmp_path / "data")
    model, cfg = toy_configs(steps=6, warmup_steps=2, eval_every=6, mixed_precision=True)
    seen = []
    result = train(TrainOptions(data_dir=data, out_dir=tmp_path / "run", model=model, train=cfg,
                                progress=False, on_step=lambda step, logs: seen.append(step)))
    assert result.step == 6 and seen == [1, 2, 3, 4, 5, 6]
    assert len(result.losses) == 6 and all(np.isfinite(result.losses))
    assert keras.mixed_precision.global_policy().name == "float32"  # the caller's policy is restored
    checkpoint = tf.train.latest_checkpoint(str(tmp_path / "run" / "checkpoints"))
    names = [name for name, _ in tf.train.list_variables(checkpoint)]
    assert any("loss_scale" in name for name in names), names[:20]
    kernels = [name for name in names if name.startswith("model/") and "kernel" in name]
    # float32 master weights under float16 compute
    assert kernels and tf.train.load_variable(checkpoint, kernels[0]).dtype == np.float32
    loaded = tf.saved_model.load(str(tmp_path / "run" / "saved_model"))
    out = loaded.signatures["serving_default"](images=tf.zeros([1, 128, 128, 3]))
    assert out["class_logits"].dtype == tf.float32 and out["box_encodings"].dtype == tf.float32
    assert np.isfinite(out["class_logits"].numpy()).all()


MULTI_WORKER_SCRIPT = textwrap.dedent("""
    import json, sys
    sys.path.insert(0, sys.argv[3])
    from test_train_loop import toy_configs
    from edge_trash.train.trainer import TrainOptions, train
    model, cfg = toy_configs(steps=4, warmup_steps=1, strategy="multi_worker", eval_every=4,
                             checkpoint_every=2)
    result = train(TrainOptions(data_dir=sys.argv[1], out_dir=sys.argv[2], model=model,
                                train=cfg, progress=False))
    print("RESULT " + json.dumps({"losses": result.losses, "step": result.step}))
""")


def _free_loopback_ports(count: int) -> List[int]:
    import socket

    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


@pytest.mark.slow
def test_multi_worker_strategy_two_workers_on_loopback(tmp_path):
    """Two processes under MultiWorkerMirroredStrategy (TF_CONFIG, 127.0.0.1): the same
    all-reduced losses on both, one run directory written by the chief, no scratch left."""
    data = write_toy_data(tmp_path / "data")
    cluster = {"worker": [f"127.0.0.1:{port}" for port in _free_loopback_ports(2)]}
    procs = []
    for index in range(2):
        env = {**os.environ, "TF_CONFIG": json.dumps({"cluster": cluster,
                                                      "task": {"type": "worker", "index": index}})}
        procs.append(subprocess.Popen(
            [sys.executable, "-c", MULTI_WORKER_SCRIPT, str(data), str(tmp_path / "run"),
             str(Path(__file__).parent)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            cwd=REPO, env=env))
    try:
        outputs = [p.communicate(timeout=600) for p in procs]
    finally:
        for p in procs:
            p.kill()
    results = []
    for proc, (stdout, stderr) in zip(procs, outputs):
        lines = [l for l in stdout.splitlines() if l.startswith("RESULT ")]
        assert proc.returncode == 0 and lines, stderr[-3000:]
        results.append(json.loads(lines[-1][len("RESULT "):]))
    chief, other = results
    assert chief["step"] == other["step"] == 4
    assert len(chief["losses"]) == 4 and all(np.isfinite(chief["losses"]))
    np.testing.assert_allclose(chief["losses"], other["losses"], rtol=1e-6)
    run = tmp_path / "run"
    assert sorted(p.name for p in run.iterdir()) == ["checkpoints", "config.json", "data.json", "labels.txt",
                                                     "logs", "metrics.json", "model.weights.h5", "saved_model"]
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["finished"] and metrics["step"] == 4 and [h["step"] for h in metrics["history"]] == [4]
    import tensorflow as tf

    assert tf.train.latest_checkpoint(str(run / "checkpoints")).endswith("ckpt-4")


def test_resume_takes_the_newest_checkpoint_that_reads_whole(tmp_path):
    """ckpt-2 cut short (a full disk, a copy stopped): --resume ended in 'IndexError: Read less bytes than
    requested' while ckpt-1 lay beside it, whole."""
    import tensorflow as tf

    from edge_trash.train.trainer import readable_checkpoint

    folder = tmp_path / "checkpoints"
    assert readable_checkpoint(folder) == (None, [])  # none saved yet
    checkpoint = tf.train.Checkpoint(weights=tf.Variable(tf.ones([300, 100])))
    manager = tf.train.CheckpointManager(checkpoint, str(folder), max_to_keep=3)
    first, second = manager.save(1), manager.save(2)
    assert readable_checkpoint(folder) == (second, [])
    data = next(folder.glob("ckpt-2.data-*"))
    os.truncate(data, 1000)
    assert readable_checkpoint(folder) == (first, [f"{second} (Read less bytes than requested)"])
    (folder / "ckpt-1.index").unlink()
    latest, unreadable = readable_checkpoint(folder)
    assert latest is None and unreadable[0] == f"{second} (Read less bytes than requested)"
    assert unreadable[1].startswith(f"{first} (Unsuccessful TensorSliceReader constructor")


def test_multi_worker_without_the_workers_in_tf_config_is_refused():
    """Without TF_CONFIG (a launcher or sudo dropping it) MultiWorkerMirroredStrategy trained on one machine and
    recorded "multi_worker" in config.json: N machines paid for, one used, nothing said."""
    from edge_trash.train.trainer import TrainError, multi_worker_tasks

    with pytest.raises(TrainError, match=r"^--strategy multi_worker: TF_CONFIG is not set, so this would train on "
                                         r"this machine alone; set it on every worker, e\.g\. TF_CONFIG="):
        multi_worker_tasks({})
    one = json.dumps({"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", "index": 0}})
    with pytest.raises(TrainError, match=r"TF_CONFIG names 1 worker \(its cluster's chief and worker lists\)"):
        multi_worker_tasks({"TF_CONFIG": one})
    with pytest.raises(TrainError, match=r"TF_CONFIG is not the JSON TensorFlow reads"):
        multi_worker_tasks({"TF_CONFIG": "{cluster: a:1}"})
    two = {"cluster": {"chief": ["a:1"], "worker": ["b:1"]}, "task": {"type": "chief", "index": 0}}
    assert multi_worker_tasks({"TF_CONFIG": json.dumps(two)}) == 2


TPU_SCRIPT = textwrap.dedent("""
    import sys, time
    from edge_trash.train.trainer import TrainError, make_strategy
    started = time.monotonic()
    try:
        make_strategy("tpu", tpu_timeout_s=2.0)
    except TrainError as exc:
        print("RESULT %.1f %s" % (time.monotonic() - started, exc))
    sys.exit(3)
""")


def test_a_tpu_address_nothing_answers_is_given_up_on_and_the_process_exits(tmp_path):
    """TPU_NAME at a grpc:// address nothing answers held `train` for good, deaf to SIGTERM (the connection
    blocks in C++, where the Python handler never runs)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    env = dict(os.environ, TPU_NAME=f"grpc://127.0.0.1:{port}", TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run([sys.executable, "-c", TPU_SCRIPT], capture_output=True, text=True, timeout=120,
                          cwd=REPO, env=env)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert proc.returncode == 3 and lines, proc.stderr[-3000:]  # exited, the blocked connection left behind
    took, message = lines[0][len("RESULT "):].split(" ", 1)
    assert message == (f"--strategy tpu: grpc://127.0.0.1:{port} did not answer within 2 s; check TPU_NAME (the "
                       "TPU's name or grpc:// address) and that the TPU is up and reachable from here")
    assert float(took) < 60  # TensorFlow's import included, on a busy machine
    assert f"train: connecting to grpc://127.0.0.1:{port} (up to 2 s) ..." in proc.stderr


@pytest.mark.skipif(bool(os.environ.get("TPU_NAME")) or os.path.exists("/dev/accel0"),
                    reason="a TPU may be reachable here")
def test_tpu_strategy_without_a_tpu_says_what_to_do():
    from edge_trash.train.trainer import TrainError, make_strategy

    with pytest.raises(TrainError, match=r"--strategy tpu: no TPU to connect to \(.+\); run on a Cloud TPU VM, or "
                                         r"set TPU_NAME"):
        make_strategy("tpu")
