"""RUN_DIR/data.json: what data a run was trained on, and the check that ``train --resume`` continues on it
(no TensorFlow: the records are files of bytes, the listing a splits.json)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from edge_trash.terminal import plural
from edge_trash.tfrecords.splits import read_splits_json, split_listing
from edge_trash.train.data_record import (data_differences, data_record, no_record_note, read_data_record,
                                          resume_data_problem, write_data_record)

NAMES = ["bottle", "can", "cup"]


def _data(root: Path, train=("a.jpg", "b.jpg", "c.jpg"), val=("d.jpg", "e.jpg"), names=NAMES,
          splits_json: bool = True, shard_bytes: int = 10) -> Path:
    root.mkdir(parents=True)
    for split in ("train", "val"):
        (root / f"{split}-00000-of-00001.tfrecord").write_bytes(b"x" * shard_bytes)
    (root / "labels.txt").write_text("\n".join(names) + "\n")
    if splits_json:
        (root / "splits.json").write_text(json.dumps({"seed": 0, "folds": 0, "splits": {"train": [1, 2, 3]},
                                                      "file_names": {"train": list(train), "val": list(val)}}))
    return root


def test_the_record_lists_path_fold_labels_images_and_shards(tmp_path):
    data = _data(tmp_path / "data")
    record = data_record(data, "train", "val", None, NAMES)
    assert record == {
        "version": 1, "data": os.path.abspath(data), "fold": None, "labels": NAMES,
        "splits": {"train": {"split": "train", "images": ["a.jpg", "b.jpg", "c.jpg"], "pictures": None,
                             "shards": [{"name": "train-00000-of-00001.tfrecord", "bytes": 10}]},
                   "val": {"split": "val", "images": ["d.jpg", "e.jpg"], "pictures": None,
                           "shards": [{"name": "val-00000-of-00001.tfrecord", "bytes": 10}]}}}
    run = tmp_path / "run"
    assert write_data_record(run, record) == run / "data.json"
    assert sorted(p.name for p in run.iterdir()) == ["data.json"]  # no temporary file left
    assert read_data_record(run) == record
    assert data_differences(record, data_record(data, "train", "val", None, NAMES)) == []


def test_a_fold_run_lists_the_folds_it_reads_and_records_without_splits_json_list_none(tmp_path):
    root = tmp_path / "folds"
    root.mkdir()
    for k in range(3):
        (root / f"fold{k}-00000-of-00001.tfrecord").write_bytes(b"y" * (k + 1))
    (root / "splits.json").write_text(json.dumps({"folds": 3, "file_names": {"fold0": ["a"], "fold1": ["b"],
                                                                             "fold2": ["c", "d"]},
                                                  "pictures": {"fold0": ["1a"], "fold1": ["1b"],
                                                               "fold2": ["1c", "1d"]}}))
    record = data_record(root, "fold0+fold2", "fold1", 1, NAMES)
    assert record["fold"] == 1
    assert record["splits"]["train"] == {"split": "fold0+fold2", "images": ["a", "c", "d"],
                                         "pictures": ["1a", "1c", "1d"], "shards": [
        {"name": "fold0-00000-of-00001.tfrecord", "bytes": 1}, {"name": "fold2-00000-of-00001.tfrecord", "bytes": 3}]}
    assert record["splits"]["val"]["images"] == ["b"]
    foreign = _data(tmp_path / "foreign", splits_json=False)
    assert data_record(foreign, "train", "val", None, NAMES)["splits"]["val"]["images"] is None


def test_splits_json_listing():
    listed = {"file_names": {"fold0": ["a.jpg"], "fold2": ["c.jpg", "b.jpg"], "val": "broken"}}
    assert split_listing(listed, "fold0+fold2") == ["a.jpg", "c.jpg", "b.jpg"]
    assert split_listing(listed, "fold1") is None  # not listed
    assert split_listing(listed, "val") is None  # not a list
    assert split_listing({"splits": {"train": [1]}}, "train") is None  # an older build: ids, no file names
    assert split_listing(None, "train") is None


def test_splits_json_pictures_are_listed_only_one_per_file():
    from edge_trash.tfrecords.splits import split_pictures

    listed = {"file_names": {"fold0": ["a.jpg"], "fold2": ["c.jpg", "b.jpg"]},
              "pictures": {"fold0": ["aa"], "fold2": ["cc", "bb"]}}
    assert split_pictures(listed, "fold0+fold2") == ["aa", "cc", "bb"]
    assert split_pictures(dict(listed, pictures={"fold0": ["aa"], "fold2": ["cc"]}), "fold2") is None  # one short
    assert split_pictures({"file_names": listed["file_names"]}, "fold0") is None  # an older build: no pictures
    assert split_pictures(None, "fold0") is None


def test_read_splits_json(tmp_path):
    assert read_splits_json(tmp_path / "splits.json") is None
    (tmp_path / "splits.json").write_text('{"file_names": {"val": ["a.jpg"]}}')
    assert read_splits_json(tmp_path / "splits.json") == {"file_names": {"val": ["a.jpg"]}}
    (tmp_path / "splits.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match=r"splits.json: expected a JSON object, got list"):
        read_splits_json(tmp_path / "splits.json")
    (tmp_path / "splits.json").write_text("{")
    with pytest.raises(ValueError, match=r"splits.json: cannot read it \(JSONDecodeError\)$"):
        read_splits_json(tmp_path / "splits.json")


def test_an_unreadable_data_json_counts_as_none(tmp_path):
    assert read_data_record(tmp_path) is None
    (tmp_path / "data.json").write_text("{not json")
    assert read_data_record(tmp_path) is None
    (tmp_path / "data.json").write_text('{"labels": "bottle"}')
    assert read_data_record(tmp_path) is None


@pytest.mark.parametrize("names, expected", [
    (NAMES[:2] + ["cup", "lid", "straw"], "labels.txt has 5 classes, the run was trained on 3 (not in the run: lid, "
                                          "straw)"),
    (["bottle"], "labels.txt has 1 class, the run was trained on 3 (gone: can, cup)"),
    (["can", "bottle", "cup"], "labels.txt lists the run's classes in another order"),
    (["bottle", "can", "lid"], "labels.txt names other classes (not in the run: lid; gone: cup)"),
])
def test_label_differences_say_what_changed(tmp_path, names, expected):
    was = data_record(_data(tmp_path / "a"), "train", "val", None, NAMES)
    now = data_record(_data(tmp_path / "b", names=names), "train", "val", None, names)
    assert data_differences(was, now) == [expected]


def test_image_differences_count_other_and_missing_images(tmp_path):
    was = data_record(_data(tmp_path / "a"), "train", "val", None, NAMES)
    now = data_record(_data(tmp_path / "b", train=("a.jpg", "b.jpg"), val=("d.jpg", "x.jpg", "y.jpg")),
                      "train", "val", None, NAMES)
    assert data_differences(was, now) == ["train lacks 1 of the run's 3 images",
                                          "val holds 2 other images and lacks 1 of the run's 2 images"]
    # the same images in a rebuilt shard (another --quality) are the same data
    same = data_record(_data(tmp_path / "c", shard_bytes=99), "train", "val", None, NAMES)
    assert data_differences(was, same) == []


def test_records_without_a_listing_are_compared_by_their_shards(tmp_path):
    was = data_record(_data(tmp_path / "a", splits_json=False), "train", "val", None, NAMES)
    assert data_differences(was, data_record(_data(tmp_path / "b", splits_json=False), "train", "val", None,
                                             NAMES)) == []
    now = data_record(_data(tmp_path / "c", splits_json=False, shard_bytes=12), "train", "val", None, NAMES)
    assert data_differences(was, now) == [
        "the train shards are not the run's (1 shard of 12 bytes, the run's 1 of 10; no splits.json lists their "
        "images)",
        "the val shards are not the run's (1 shard of 12 bytes, the run's 1 of 10; no splits.json lists their "
        "images)"]


def test_the_resume_refusal_names_both_folders_what_differs_and_the_fix(tmp_path):
    old, new, run = _data(tmp_path / "old"), tmp_path / "new", tmp_path / "run"
    _data(new, val=("d.jpg", "x.jpg"), names=NAMES + ["lid"])
    recorded = data_record(old, "train", "val", None, NAMES)
    problem = resume_data_problem(run, new, recorded, data_record(new, "train", "val", None, NAMES + ["lid"]))
    assert problem == (
        f"--resume: --data {new} is not the data {run} was trained on (--data {old}, as {run}/data.json records): "
        "labels.txt has 4 classes, the run was trained on 3 (not in the run: lid); val holds 1 other image and "
        f"lacks 1 of the run's 2 images. Resume with the data it was trained on (--data {old}), start a new run "
        f"with another --out, or fine-tune this run on the new data: edge-trash train --data {new} --out NEW_RUN "
        f"--init {run}")
    assert resume_data_problem(run, old, recorded, data_record(old, "train", "val", None, NAMES)) == ""


def test_a_run_without_data_json_resumes_with_a_note_and_its_labels_checked(tmp_path):
    from edge_trash.train.trainer import TrainError, resume_data_notes

    data, run = _data(tmp_path / "data"), tmp_path / "run"
    run.mkdir()
    (run / "labels.txt").write_text("bottle\ncan\ncup\n")
    current = data_record(data, "train", "val", None, NAMES)
    assert resume_data_notes(run, data, current) == [
        f"{run} has no data.json (made by an older edge-trash): whether --data holds the images it was trained on "
        "cannot be checked; only its labels.txt was compared"] == [no_record_note(run)]
    (run / "labels.txt").write_text("bottle\ncan\n")
    with pytest.raises(TrainError) as err:
        resume_data_notes(run, data, current)
    assert str(err.value) == (
        f"--resume: --data {data} is not the data {run} was trained on (as its {run}/labels.txt says): labels.txt "
        "has 3 classes, the run was trained on 2 (not in the run: cup). Resume with the data it was trained on, "
        f"start a new run with another --out, or fine-tune this run on the new data: edge-trash train --data {data} "
        f"--out NEW_RUN --init {run}")
    write_data_record(run, current)  # with data.json the recorded labels are compared
    assert resume_data_notes(run, data, current) == []


@pytest.mark.parametrize("n, word, expected", [
    (1, "class", "1 class"), (2, "class", "2 classes"), (0, "box", "0 boxes"), (1, "box", "1 box"),
    (3, "image", "3 images"), (2, "other image", "2 other images"), (2, "category", "2 categories"),
    (2, "day", "2 days"), (2, "shelf", "2 shelves"),
])
def test_plural(n, word, expected):
    assert plural(n, word, "shelves" if word == "shelf" else None) == expected
