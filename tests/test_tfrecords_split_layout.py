"""Which shards a run trains and validates on: train/val, or the folds of a ``--folds`` build."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_trash.tfrecords.split_layout import DataSplitError, folds_in, training_splits
from edge_trash.train.input_pipeline import split_files


def _shards(root: Path, **splits: int) -> Path:
    """One shard per split, ``n`` bytes long (a TFRecord file with any byte holds a record)."""
    root.mkdir(parents=True, exist_ok=True)
    for split, size in splits.items():
        (root / f"{split}-00000-of-00001.tfrecord").write_bytes(b"x" * size)
    return root


def test_a_plain_build_trains_on_train_and_validates_on_val(tmp_path):
    data = _shards(tmp_path, train=10, val=10, test=10)
    assert folds_in(data) == []
    assert training_splits(data) == ("train", "val")


def test_a_folds_build_trains_on_the_other_folds(tmp_path):
    data = _shards(tmp_path, fold0=10, fold1=10, fold2=10, test=10)
    (data / "fold1-00001-of-00002.tfrecord").write_bytes(b"x")  # a second shard of fold1
    (data / "fold9-notes.tfrecord").write_bytes(b"x")  # not a shard's name: no fold 9
    assert folds_in(data) == [0, 1, 2]
    assert training_splits(data, 1) == ("fold0+fold2", "fold1")
    assert training_splits(data, 0) == ("fold1+fold2", "fold0")
    assert [p.name for p in split_files(data, "fold1+fold2")] == [
        "fold1-00000-of-00001.tfrecord", "fold1-00001-of-00002.tfrecord", "fold2-00000-of-00001.tfrecord"]
    with pytest.raises(FileNotFoundError, match=r"no fold7-\*\.tfrecord shards \(splits found: \['fold0', 'fold1', "
                                                r"'fold2', 'fold9', 'test'\]\)"):
        split_files(data, "fold0+fold7")


@pytest.mark.parametrize("shards, fold, message", [
    (dict(fold0=9, fold1=9, fold2=9, test=9), None,
     "holds 3 folds (fold0..fold2, from build-tfrecords --folds) and no train split: pass --fold K to train on the "
     "other folds and validate on fold K (one run per fold: --fold 0 .. --fold 2)"),
    (dict(fold0=9, fold1=9), 2, "--fold 2: --data {d} holds folds 0, 1"),
    (dict(fold0=9, test=9), 0, "--fold 0: --data {d} holds one fold, so none is left to train on; build with "
                               "--folds 2 or more"),
    (dict(train=9, val=9), 0, "--fold 0: --data {d} holds no folds; build it with `edge-trash build-tfrecords "
                              "--folds K`, or leave --fold out to use its train/val"),
    (dict(train=0, val=9, test=9), None,
     "--data {d}: no training images (the train shards hold no record); with --keep-splits, give a train "
     "annotation file too, or rebuild without --keep-splits for a new split"),
    (dict(val=9), None, "--data {d}: no training images (no train-*.tfrecord shards)"),
    (dict(fold0=0, fold1=9, fold2=0), 1, "--data {d}: no training images (the train shards hold no record); "
                                          "rebuild the folds"),
    (dict(), None, "--data {d}: no .tfrecord shards; pass the --out folder of `edge-trash build-tfrecords`"),
    (dict(train=9), None, "--data {d}: no validation images (no val-*.tfrecord shards); training keeps the "
                          "checkpoint with the best val AP: rebuild with --val-fraction above 0 (with --keep-splits, "
                          "give a val annotation file too)"),
    (dict(train=9, val=0), None, "--data {d}: no validation images (the val shards hold no record)"),
])
def test_folders_that_cannot_train_say_what_to_do(tmp_path, shards, fold, message):
    data = _shards(tmp_path / "data", **shards)
    with pytest.raises(DataSplitError) as err:
        training_splits(data, fold)
    assert message.format(d=data) in str(err.value)
