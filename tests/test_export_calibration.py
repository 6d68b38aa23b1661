"""Calibration images: stratified by class, from the train split only, resized to the model input."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from edge_trash.export.calibration import load_calibration_set, resize_for_model, split_files, stratified_pick


def test_stratified_pick_takes_rarest_class_first_then_round_robin():
    # class 1 in images 0-5, class 2 in images 6-7, class 3 only in image 8; image 9 has no boxes.
    labels = [[1]] * 6 + [[2], [2]] + [[3, 1]] + [[]]
    picked = stratified_pick(labels, 4, seed=0)
    assert len(picked) == 4 and len(set(picked)) == 4
    assert picked[0] == 8  # the only image of the rarest class comes first
    assert picked[1] in (6, 7)  # then class 2, then class 1
    assert picked[2] in range(6)
    assert picked[3] in (6, 7) and picked[3] != picked[1]


def test_stratified_pick_is_deterministic_and_bounded():
    labels = [[i % 3 + 1] for i in range(20)] + [[]]
    assert stratified_pick(labels, 7, seed=3) == stratified_pick(labels, 7, seed=3)
    assert stratified_pick(labels, 7, seed=3) != stratified_pick(labels, 7, seed=4)
    everything = stratified_pick(labels, 100, seed=0)
    assert sorted(everything) == list(range(21))  # the empty image comes last, once every class ran out
    assert everything[-1] == 20
    per_class = [labels[i][0] for i in stratified_pick(labels, 6, seed=1)]
    assert sorted(per_class) == [1, 1, 2, 2, 3, 3]  # balanced when every class has enough images
    assert stratified_pick([], 5) == []


def test_resize_for_model_shape_and_identity():
    image = np.arange(40 * 60 * 3, dtype=np.uint32).reshape(40, 60, 3).astype(np.uint8)
    out = resize_for_model(image, 32)
    assert out.shape == (32, 32, 3) and out.dtype == np.uint8
    same = resize_for_model(out, 32)
    np.testing.assert_array_equal(same, out)
    assert image.shape == (40, 60, 3)  # input untouched
    from edge_trash.edge_runtime.decode import Preprocessor
    # the int8 ranges are measured on what the device feeds (Pillow's antialiased resize was a third way)
    np.testing.assert_array_equal(out, Preprocessor(32, 32, "stretch")(image)[0])


def test_missing_split_names_the_pattern(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"train-\*\.tfrecord.*build-tfrecords"):
        split_files(str(tmp_path), "train")


@pytest.mark.slow
def test_load_calibration_set_uses_only_train_images(sample_build):
    data_dir, _ = sample_build
    splits = json.loads((data_dir / "splits.json").read_text())["splits"]
    train_ids = {str(i) for i in splits["train"]}
    calib = load_calibration_set(str(data_dir), 48, count=5, seed=0)
    assert len(calib) == 5
    assert set(calib.source_ids) <= train_ids
    assert all(img.shape == (48, 48, 3) and img.dtype == np.uint8 for img in calib.images)
    assert calib.available_images == len(splits["train"])
    n = len(train_ids)
    assert [w for w in calib.warnings if "only 5 calibration images" in w] == [  # below 100: warned
        f"only 5 calibration images (of {n} in the train split; asked for 5): int8 ranges from fewer than 100 "
        f"images can cost accuracy; a larger --calibration-images (the train split holds {n})"]
    everything = load_calibration_set(str(data_dir), 48, count=1000, seed=0)
    assert sorted(everything.source_ids) == sorted(train_ids)
    # all of a small train split: a larger --calibration-images cannot help
    assert n < 100 and everything.warnings[0].endswith("can cost accuracy; add training images (the train split "
                                                       "holds no more)")
    # Stratified: each of the 5 picks adds a class not yet covered while classes remain.
    assert len(calib.images_per_class) >= min(5, len(everything.images_per_class))
    with pytest.raises(ValueError, match="--calibration-images"):
        load_calibration_set(str(data_dir), 48, count=0)


def test_calibration_refuses_shards_of_two_builds_or_a_set_with_one_missing(tmp_path):
    from edge_trash.tfrecords.split_layout import broken_shard_set

    for name in ("train-00000-of-00001.tfrecord", "train-00000-of-00003.tfrecord", "train-00001-of-00003.tfrecord",
                 "train-00002-of-00003.tfrecord"):
        (tmp_path / name).write_bytes(b"")
    with pytest.raises(FileNotFoundError) as err:
        split_files(str(tmp_path), "train")
    assert str(err.value) == broken_shard_set(sorted(tmp_path.glob("train-*.tfrecord"))) != ""
    (tmp_path / "train-00000-of-00001.tfrecord").unlink()
    (tmp_path / "train-00001-of-00003.tfrecord").unlink()
    with pytest.raises(FileNotFoundError, match="train-00001-of-00003"):
        split_files(str(tmp_path), "train")
    (tmp_path / "train-00001-of-00003.tfrecord").write_bytes(b"")
    assert [os.path.basename(f) for f in split_files(str(tmp_path), "train")] == [
        "train-00000-of-00003.tfrecord", "train-00001-of-00003.tfrecord", "train-00002-of-00003.tfrecord"]
