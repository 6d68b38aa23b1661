"""The tf.data input pipeline over tiny sharded TFRecords written here with the project's keys."""

import io
from pathlib import Path
from typing import List, Tuple

import numpy as np
import pytest

from edge_trash.tfrecords import feature_keys as keys

CLASS_NAMES = ["bottle", "can", "cup"]
# (height, width, boxes yxyx normalized, 1-based classes) per image.
IMAGES: List[Tuple[int, int, List[List[float]], List[int]]] = [
    (48, 64, [[0.1, 0.2, 0.5, 0.6]], [1]),
    (64, 48, [[0.25, 0.25, 0.75, 0.75], [0.0, 0.5, 0.25, 1.0]], [2, 1]),
    (40, 40, [], []),
    (50, 70, [[0.2, 0.1, 0.9, 0.4], [0.3, 0.3, 0.6, 0.6], [0.5, 0.5, 0.7, 0.9]], [3, 3, 1]),
    (48, 48, [[0.4, 0.4, 0.6, 0.6]], [1]),
]


def image_pixels(index: int, height: int, width: int) -> np.ndarray:
    """A smooth, deterministic picture (JPEG-friendly) for image ``index``."""
    y, x = np.mgrid[0:height, 0:width]
    return np.stack([(x * 255 // max(1, width - 1)), (y * 255 // max(1, height - 1)),
                     np.full_like(x, 40 * index)], axis=-1).astype(np.uint8)


def write_split(root: Path, split: str = "train", images=IMAGES, class_names=CLASS_NAMES,
                shards: int = 2, first_id: int = 100, crowd=None) -> List[bytes]:
    """Write ``images`` as ``{split}-0000k-of-0000n.tfrecord`` + labels.txt; return the JPEGs.

    Shards hold consecutive blocks, so the split's record order is the order of ``images``.
    ``crowd``: ``{image index: is_crowd flags}`` (default: none is crowd).
    """
    import tensorflow as tf
    from PIL import Image

    root.mkdir(parents=True, exist_ok=True)
    (root / "labels.txt").write_text("\n".join(class_names) + "\n")
    per_shard = -(-len(images) // shards)
    encoded_all = []
    for s in range(shards):
        path = root / f"{split}-{s:05d}-of-{shards:05d}.tfrecord"
        with tf.io.TFRecordWriter(str(path)) as writer:
            for i in range(s * per_shard, min(len(images), (s + 1) * per_shard)):
                h, w, boxes, classes = images[i]
                buf = io.BytesIO()
                Image.fromarray(image_pixels(i, h, w)).save(buf, format="JPEG", quality=95)
                encoded_all.append(buf.getvalue())
                b = np.asarray(boxes, np.float32).reshape(-1, 4)

                def fl(v):
                    return tf.train.Feature(float_list=tf.train.FloatList(value=list(v)))

                def il(v):
                    return tf.train.Feature(int64_list=tf.train.Int64List(value=list(v)))

                def bl(v):
                    return tf.train.Feature(bytes_list=tf.train.BytesList(value=list(v)))

                area = (b[:, 2] - b[:, 0]) * h * (b[:, 3] - b[:, 1]) * w
                feature = {
                    keys.ENCODED: bl([buf.getvalue()]), keys.FORMAT: bl([b"jpeg"]),
                    keys.HEIGHT: il([h]), keys.WIDTH: il([w]),
                    keys.SOURCE_ID: bl([str(first_id + i).encode()]),
                    keys.FILENAME: bl([f"img{i}.jpg".encode()]),
                    keys.BBOX_YMIN: fl(b[:, 0]), keys.BBOX_XMIN: fl(b[:, 1]),
                    keys.BBOX_YMAX: fl(b[:, 2]), keys.BBOX_XMAX: fl(b[:, 3]),
                    keys.CLASS_LABEL: il(classes),
                    keys.CLASS_TEXT: bl([(class_names[c - 1] if c <= len(class_names) else "?").encode()
                                         for c in classes]),
                    keys.IS_CROWD: il((crowd or {}).get(i, [0] * len(classes))), keys.AREA: fl(area),
                }
                example = tf.train.Example(features=tf.train.Features(feature=feature))
                writer.write(example.SerializeToString())
    return encoded_all


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("tfrecords")
    write_split(root, "train")
    write_split(root, "val", images=IMAGES[:3], shards=1)
    return root


def _batches(ds, n):
    out = []
    for k, batch in enumerate(ds):
        if k == n:
            break
        out.append(batch)
    return out


def test_index_reads_the_same_records_as_tfrecorddataset(data_dir):
    import tensorflow as tf

    from edge_trash.train.input_pipeline import TFRecordIndex, split_files

    files = split_files(data_dir, "train")
    assert [f.name for f in files] == ["train-00000-of-00002.tfrecord", "train-00001-of-00002.tfrecord"]
    index = TFRecordIndex(files)
    expected = [r.numpy() for r in tf.data.TFRecordDataset([str(f) for f in files])]
    assert len(index) == 5
    assert [index.read(i) for i in range(5)] == expected


def test_truncated_shard_is_reported_with_its_path(tmp_path, data_dir):
    from edge_trash.train.input_pipeline import TFRecordIndex

    bad = tmp_path / "train-00000-of-00001.tfrecord"
    bad.write_bytes((data_dir / "train-00000-of-00002.tfrecord").read_bytes()[:-10])
    with pytest.raises(ValueError, match=rf"{bad}: record at byte \d+ claims \d+ bytes"):
        TFRecordIndex([bad])


def test_missing_split_lists_the_splits_found(data_dir):
    from edge_trash.train.input_pipeline import split_files

    found = r"no test-\*.tfrecord shards \(splits found: train, val\)"
    with pytest.raises(FileNotFoundError, match=found):
        split_files(data_dir, "test")


@pytest.mark.slow
def test_eval_mode_round_trips_boxes_classes_and_pixels(data_dir):
    import tensorflow as tf

    from edge_trash.train.augment import stretch_resize
    from edge_trash.train.input_pipeline import make_dataset

    ds = make_dataset(data_dir, "train", 2, 32, None, None, seed=0, training=False, max_boxes=4)
    batches = list(ds)
    assert [b[0].shape[0] for b in batches] == [2, 2, 1]  # last batch partial in eval mode
    images = np.concatenate([b[0].numpy() for b in batches])
    boxes = np.concatenate([b[1]["boxes"].numpy() for b in batches])
    classes = np.concatenate([b[1]["classes"].numpy() for b in batches])
    counts = np.concatenate([b[1]["num_boxes"].numpy() for b in batches])
    assert images.dtype == np.float32 and images.shape == (5, 32, 32, 3)
    assert boxes.shape == (5, 4, 4) and classes.dtype == np.int32
    for i, (h, w, true_boxes, true_classes) in enumerate(IMAGES):  # record order kept
        k = len(true_classes)
        assert counts[i] == k
        np.testing.assert_array_equal(boxes[i, :k], np.asarray(true_boxes, np.float32).reshape(-1, 4))
        assert classes[i, :k].tolist() == true_classes
        assert (classes[i, k:] == 0).all() and (boxes[i, k:] == 0).all()
    first = tf.io.decode_jpeg(_first_jpeg(data_dir)).numpy()
    np.testing.assert_array_equal(images[0], stretch_resize(first, 32).astype(np.float32))


def _first_jpeg(data_dir):
    import tensorflow as tf

    from edge_trash.train.input_pipeline import TFRecordIndex, split_files

    record = TFRecordIndex(split_files(data_dir, "train")).read(0)
    return tf.train.Example.FromString(record).features.feature[keys.ENCODED].bytes_list.value[0]


@pytest.mark.slow
def test_max_boxes_truncates_and_target_fn_replaces_the_dict(data_dir):
    import tensorflow as tf

    from edge_trash.train.input_pipeline import make_dataset

    ds = make_dataset(data_dir, "train", 5, 16, None, None, 0, True, max_boxes=2, steps=1)
    (_, target), = list(ds.take(1))  # training: one epoch of the 5 images, shuffled, each cut to 2 boxes
    assert sorted(target["num_boxes"].numpy().tolist()) == [0, 1, 1, 2, 2]
    assert target["classes"].shape == (5, 2)
    # evaluation scores every ground-truth box (as `edge-trash evaluate` does): the padding grows to the most a
    # record holds, so the 3-box image keeps its third box (validation in training cut it at max_boxes)
    ds = make_dataset(data_dir, "train", 5, 16, None, None, 0, False, max_boxes=2)
    (_, target), = list(ds)
    assert target["num_boxes"].numpy().tolist() == [1, 2, 0, 3, 1]
    assert target["classes"].numpy()[3].tolist() == [3, 3, 1]

    def target_fn(image, boxes, classes):
        return {"n": tf.shape(classes)[0], "sum": tf.reduce_sum(classes),
                "mean_pixel": tf.reduce_mean(image)}

    ds = make_dataset(data_dir, "train", 5, 16, None, None, 0, False, target_fn=target_fn)
    (images, target), = list(ds)
    assert target["n"].numpy().tolist() == [1, 2, 0, 3, 1]
    assert target["sum"].numpy().tolist() == [1, 3, 0, 7, 1]
    np.testing.assert_allclose(target["mean_pixel"].numpy(), images.numpy().mean(axis=(1, 2, 3)),
                               rtol=1e-5)


@pytest.mark.slow
def test_training_stream_is_deterministic_and_resumes_at_an_epoch(data_dir):
    from edge_trash.train.augment import get_augment_config
    from edge_trash.train.balancing import BalanceConfig
    from edge_trash.train.input_pipeline import make_dataset, make_sampler, steps_per_epoch

    balance = BalanceConfig("repeat_factor", repeat_threshold=0.5)
    sampler = make_sampler(data_dir, "train", balance, seed=4)
    steps = steps_per_epoch(sampler, 2)
    assert steps == int(round(sampler.expected_epoch_size())) // 2
    augment = get_augment_config("default")

    def run(epoch, n):
        ds = make_dataset(data_dir, "train", 2, 32, augment, balance, seed=4, training=True,
                          epoch=epoch)
        return _batches(ds, n)

    first = run(0, steps + 1)
    again = run(0, 2)
    resumed = run(1, 1)
    for a, b in zip(first[:2], again):
        np.testing.assert_array_equal(a[0].numpy(), b[0].numpy())
        np.testing.assert_array_equal(a[1]["boxes"].numpy(), b[1]["boxes"].numpy())
    np.testing.assert_array_equal(first[steps][0].numpy(), resumed[0][0].numpy())
    np.testing.assert_array_equal(first[steps][1]["classes"].numpy(), resumed[0][1]["classes"].numpy())
    assert all(b[0].shape == (2, 32, 32, 3) for b in first)  # full batches only
    values = np.concatenate([b[0].numpy().ravel() for b in first])
    assert values.min() >= 0.0 and values.max() <= 255.0


def test_bad_class_id_names_the_record(tmp_path):
    from edge_trash.train.input_pipeline import load_split

    write_split(tmp_path, "train", images=[(20, 20, [[0.1, 0.1, 0.5, 0.5]], [7])], shards=1)
    with pytest.raises(ValueError, match=r"record 0 \(source_id 100\) has class ids \[7\] outside 1..3"):
        load_split(tmp_path, "train")


@pytest.mark.slow
def test_crowd_boxes_are_left_out_of_training_and_marked_for_evaluation(tmp_path):
    """A crowd box (COCO's iscrowd, or an "ignore": 1 region the data stage writes as crowd) was trained as an
    object and counted by the class balancing; Model Garden skips it in training and COCO evaluation ignores
    what is detected inside it."""
    import tensorflow as tf

    from edge_trash.train.input_pipeline import load_split, make_dataset
    from edge_trash.train.validation import evaluate_model

    images = [(48, 64, [[0.1, 0.1, 0.4, 0.4], [0.5, 0.5, 0.9, 0.9]], [1, 2]),
              (48, 64, [[0.2, 0.2, 0.8, 0.8]], [3])]
    write_split(tmp_path, "train", images=images, shards=1, crowd={0: [0, 1], 1: [1]})
    assert load_split(tmp_path, "train").labels == [[1], []]  # what the balancing counts

    def target_fn(image, boxes, classes):
        return {"n": tf.shape(classes)[0], "sum": tf.reduce_sum(classes)}

    ds = make_dataset(tmp_path, "train", 2, 16, None, None, 0, True, target_fn=target_fn, steps=3)
    seen = {(int(n), int(c)) for _, t in _batches(ds, 3) for n, c in zip(t["n"].numpy(), t["sum"].numpy())}
    assert seen <= {(1, 1), (0, 0)} and (1, 1) in seen
    (_, labels), = list(make_dataset(tmp_path, "train", 2, 16, None, None, 0, False, max_boxes=3))
    assert labels["classes"].numpy().tolist() == [[1, -2, 0], [-3, 0, 0]]
    assert labels["num_boxes"].numpy().tolist() == [2, 1]

    # Evaluation: a detection inside a crowd box is ignored (dropping the crowd box would make it a false positive
    # ranked first: 0.5) and a crowd box found by nothing is no miss (kept as an object: 2 of 3 found, 0.67).
    eval_images = [(48, 64, [[0.1, 0.1, 0.4, 0.4], [0.5, 0.5, 0.9, 0.9], [0.05, 0.6, 0.3, 0.95]], [1, 1, 1])]
    write_split(tmp_path / "eval", "val", images=eval_images, shards=1, crowd={0: [0, 1, 1]})

    def predict(batch):  # the ordinary box, and the first crowd region with a higher score
        boxes = np.array([[[0.1, 0.1, 0.4, 0.4], [0.5, 0.5, 0.9, 0.9]]], np.float32)
        return {"boxes": tf.constant(boxes), "classes": tf.zeros((1, 2), tf.int32),
                "scores": tf.constant([[0.9, 0.95]], tf.float32), "num_detections": tf.constant([2], tf.int32)}

    from edge_trash.models.config import SSDConfig

    metrics = evaluate_model(predict, make_dataset(tmp_path / "eval", "val", 1, 16, None, None, 0, False),
                             SSDConfig(input_size=16, num_classes=3), ["bottle", "can", "cup"])
    assert metrics["AP50"] == pytest.approx(1.0)
