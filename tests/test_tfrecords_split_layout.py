"""Which shards a run trains and validates on: train/val, or the folds of a ``--folds`` build."""

from __future__ import annotations

import json
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
    (data / "fold1-00000-of-00001.tfrecord").rename(data / "fold1-00000-of-00002.tfrecord")
    (data / "fold1-00001-of-00002.tfrecord").write_bytes(b"x")  # a second shard of fold1
    (data / "fold9-notes.tfrecord").write_bytes(b"x")  # not a shard's name: no fold 9
    assert folds_in(data) == [0, 1, 2]
    assert training_splits(data, 1) == ("fold0+fold2", "fold1")
    assert training_splits(data, 0) == ("fold1+fold2", "fold0")
    assert [p.name for p in split_files(data, "fold1+fold2")] == [
        "fold1-00000-of-00002.tfrecord", "fold1-00001-of-00002.tfrecord", "fold2-00000-of-00001.tfrecord"]
    with pytest.raises(FileNotFoundError, match=r"no fold7-\*\.tfrecord shards \(splits found: fold0, fold1, "
                                                r"fold2, fold9, test\)"):
        split_files(data, "fold0+fold7")


def test_a_split_with_a_shard_missing_or_shards_of_two_builds_is_refused(tmp_path):
    # analyze reported 110 of 147 train images as healthy with one of 4 shards not copied, and 183 with another
    # build's shard copied in (36 records twice); training read them the same way.
    from edge_trash.tfrecords.analyze import AnalyzeError, find_shards

    data = _shards(tmp_path / "data", val=9)
    for i in (0, 2, 3):
        (data / f"train-0000{i}-of-00004.tfrecord").write_bytes(b"x")
    missing = (f"--data {data}: 1 of the 4 train shards is missing (train-00001-of-00004.tfrecord): copy it from "
               "the build's folder, or rebuild")
    for check in (lambda: training_splits(data), lambda: split_files(data, "train")):
        with pytest.raises((DataSplitError, FileNotFoundError)) as err:
            check()
        assert str(err.value) == missing
    with pytest.raises(AnalyzeError) as err:
        find_shards(data)
    assert str(err.value) == missing.replace("--data", "--tfrecords")
    (data / "train-00001-of-00004.tfrecord").write_bytes(b"x")
    assert training_splits(data) == ("train", "val")
    (data / "train-00000-of-00001.tfrecord").write_bytes(b"x")  # an earlier build's single shard
    with pytest.raises(DataSplitError) as err:
        training_splits(data)
    assert str(err.value) == (
        f"--data {data}: the train shards are of different builds: 1 numbered out of 1 "
        "(train-00000-of-00001.tfrecord); 4 numbered out of 4 (train-00000-of-00004.tfrecord, ...); their records "
        "would be read twice or mixed: rebuild into an empty --out, or remove the other build's shards")
    (data / "train-00000-of-00001.tfrecord").unlink()
    for i in range(2, 8):
        (data / f"val-0000{i}-of-00009.tfrecord").write_bytes(b"x")
    (data / "val-00000-of-00001.tfrecord").rename(data / "val-00000-of-00009.tfrecord")
    with pytest.raises(AnalyzeError, match=r": 2 of the 9 val shards are missing \(val-00001-of-00009.tfrecord, "
                                           r"val-00008-of-00009.tfrecord\): copy them from"):
        find_shards(data)


def test_shards_unlike_the_builds_report_are_refused(tmp_path, sample_dataset):
    # A shard of another build copied over one of the same name (the same count of shards) is not told by the
    # names: the build's report.json lists each shard's size.
    from edge_trash.tfrecords.analyze import AnalyzeError, find_shards
    from edge_trash.tfrecords.build import BuildOptions, build_tfrecords

    out = tmp_path / "out"
    build_tfrecords(BuildOptions(annotations=sample_dataset.annotations, images=sample_dataset.images, out=out,
                                 shard_size=8))
    assert training_splits(out) == ("train", "val") and set(find_shards(out)) == {"train", "val", "test"}
    shard = sorted(out.glob("train-*.tfrecord"))[1]
    size = shard.stat().st_size
    shard.write_bytes(shard.read_bytes()[:100])
    with pytest.raises(DataSplitError) as err:
        training_splits(out)
    assert str(err.value) == (
        f"--data {out}: its shards are not the ones its report.json lists ({shard.name} is 100 "
        f"bytes, listed {size:,}): another build's shards copied in? rebuild, or copy the build's folder whole")
    with pytest.raises(AnalyzeError, match=f"^--tfrecords .*{shard.name} is 100 bytes"):
        find_shards(out)


def test_the_train_command_of_folds_says_which_folds_hold_no_shard(tmp_path):
    # "--fold 0 .. 197" was offered while fold94 and fold131 held no shard (every image of theirs unreadable):
    # "--fold 94" then failed with "holds folds 0, 1, ...".
    from edge_trash.tfrecords.split_layout import train_command

    data = _shards(tmp_path / "d1", fold0=9, fold1=9, fold3=9, fold5=9)
    assert train_command(data) == (f"edge-trash train --data {data} --fold 0 --out runs/ssd-fold0 (one run per "
                                   "fold: --fold 0 .. 5; no folds 2, 4: they hold no shard)")
    data = _shards(tmp_path / "d2", fold0=9, fold2=9)
    assert train_command(data).endswith("(one run per fold: --fold 0 .. 2; no fold1: it holds no shard)")
    data = _shards(tmp_path / "d3", fold0=9, fold1=9)
    assert train_command(data).endswith("(one run per fold: --fold 0 .. 1)")


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


def test_more_folds_than_groups_is_refused_and_an_empty_test_split_is_said(tmp_path):
    """--split-by folder with two folders cannot make five folds (three would be empty)."""
    from PIL import Image

    from edge_trash.tfrecords.build import BuildError, BuildOptions, build_tfrecords
    from edge_trash.tfrecords.build_cli import summarize

    images, anns = [], []
    for i in range(8):
        name = f"{'ab'[i % 2]}/{i}.jpg"
        (tmp_path / name).parent.mkdir(exist_ok=True)
        Image.new("RGB", (32, 24), (30 * i, 60, 90)).save(tmp_path / name)
        images.append({"id": i, "file_name": name, "width": 32, "height": 24})
        anns.append({"id": i, "image_id": i, "category_id": 1, "bbox": [2, 2, 10, 10]})
    ann = tmp_path / "ann.json"
    ann.write_text(json.dumps({"images": images, "annotations": anns, "categories": [{"id": 1, "name": "can"}]}))
    opts = dict(annotations=ann, images=tmp_path, split_by="folder")
    with pytest.raises(BuildError) as err:
        build_tfrecords(BuildOptions(out=tmp_path / "o5", folds=5, **opts))
    assert str(err.value) == ("--folds 5: the 8 images left for the folds form only 2 groups that each stay in one "
                              "fold (--split-by folder keeps each folder of file_name in one); give --folds 2 or fewer")
    assert not (tmp_path / "o5").exists()  # refused before any photo is converted
    report = build_tfrecords(BuildOptions(out=tmp_path / "o2", folds=2, **opts))
    assert sorted(report["splits"]) == ["fold0", "fold1"]  # 2 folders: no third one for a test split
    assert ("note: --test-fraction 0.1 held out no image (too few images, or groups that move as one, to spare "
            "one): there is no test split") in summarize(report, tmp_path / "o2", 1.0).splitlines()
    report = build_tfrecords(BuildOptions(out=tmp_path / "o0", folds=2, test_fraction=0, **opts))
    assert "--test-fraction" not in summarize(report, tmp_path / "o0", 1.0)


def test_an_empty_fold_names_the_fix_for_folds(tmp_path):
    for k in range(3):
        (tmp_path / f"fold{k}-00000-of-00001.tfrecord").write_bytes(b"" if k == 1 else b"x")
    with pytest.raises(DataSplitError) as err:
        training_splits(tmp_path, 1)
    assert str(err.value) == f"--fold 1: fold1 of --data {tmp_path} holds no record; rebuild with fewer --folds"


def test_every_stage_finds_the_same_shards_in_a_folder_whose_name_holds_glob_characters(tmp_path):
    from edge_trash.export.bundle import split_missing
    from edge_trash.export.calibration import split_files as calibration_files
    from edge_trash.tfrecords.split_layout import split_shards, splits_found

    data = _shards(tmp_path / "litter [2026] *", fold2=10, fold0=10, val=10)
    (data / "fold0-00000-of-00001.tfrecord").rename(data / "fold0-00001-of-00002.tfrecord")
    (data / "fold0-00000-of-00002.tfrecord").write_bytes(b"x")
    assert [p.name for p in split_shards(data, "fold2+fold0")] == [
        "fold2-00000-of-00001.tfrecord", "fold0-00000-of-00002.tfrecord", "fold0-00001-of-00002.tfrecord"]
    assert splits_found(data) == ["fold0", "fold2", "val"]
    assert [Path(p).name for p in calibration_files(str(data), "val")] == ["val-00000-of-00001.tfrecord"]
    assert [p.name for p in split_files(data, "fold2+fold0")] == [p.name for p in split_shards(data, "fold2+fold0")]
    assert split_missing(str(data), "val", "calibrates on it", "rebuild") == ""
    assert split_missing(str(data), "train", "calibrates on it", "rebuild") == (
        f"--data {data}: no train-*.tfrecord shards (splits found: fold0, fold2, val), and export calibrates on it: "
        "rebuild")
    with pytest.raises(FileNotFoundError, match=r"no train TFRecords match .*: pass the --out directory"):
        calibration_files(str(data), "train")
