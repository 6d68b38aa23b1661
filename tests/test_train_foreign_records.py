"""Records that other tools wrote (Model Garden's converter, the TF Object Detection API's scripts, a hand-written
labels.txt) reach ``edge-trash train`` and ``evaluate``: what the schema does not allow is refused before the model
is built, naming the record and the fix, and a run folder is left only by a run that starts."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from click.testing import CliRunner
from PIL import Image

from edge_trash.cli import cli
from edge_trash.tfrecords.tf_example import ObjectBox, make_example_bytes
from edge_trash.tfrecords.tfrecord_file import TFRecordWriter

NAMES = ["bottle", "can", "cup"]


def _jpeg() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (32, 24), (90, 120, 30)).save(buf, format="JPEG")
    return buf.getvalue()


def _box(label: int, text: str = "", box=(0.1, 0.2, 0.5, 0.6)) -> ObjectBox:
    xmin, ymin, xmax, ymax = box
    return ObjectBox(xmin=xmin, ymin=ymin, xmax=xmax, ymax=ymax, label=label, text=text or NAMES[label - 1],
                     is_crowd=0, area=10.0)


def _data(root: Path, train, val, names=NAMES, labels: bool = True) -> Path:
    """``train``/``val``: lists of records, each a list of objects."""
    root.mkdir(parents=True)
    jpeg = _jpeg()
    for split, records in (("train", train), ("val", val)):
        with TFRecordWriter(root / f"{split}-00000-of-00001.tfrecord") as w:
            for i, objects in enumerate(records):
                w.write(make_example_bytes(jpeg, 32, 24, f"{split}{i}.jpg", f"{split}{i}", objects))
    if labels:
        (root / "labels.txt").write_text("\n".join(names) + "\n")
    return root


def _train(data: Path, out: Path):
    return CliRunner().invoke(cli, ["train", "--data", str(data), "--out", str(out), "--steps", "2",
                                    "--batch-size", "2", "--input-size", "128", "--no-progress"])


GOOD = [[_box(1)], [_box(2)], [_box(3)]]


@pytest.mark.parametrize("train,val,names,message", [
    # Model Garden's converter with labels.txt written from the categories in file order (a placeholder first)
    (GOOD, GOOD, ["litter-objects", "bottle", "can"],
     "names class id 1 'bottle', which is line 2 of labels.txt, not line 1 ('litter-objects'; 2 such pairs of id "
     "and name): labels.txt must list the classes in id order; the records' own names give labels.txt: bottle, can, "
     "cup"),
    (GOOD, [[_box(1, box=(10, 20, 50, 60))]], NAMES,  # boxes in pixels
     "val-00000-of-00001.tfrecord: record 0 (source_id val0): box 0 is [ymin, xmin, ymax, xmax] = "
     "[20.0, 10.0, 60.0, 50.0] (pixels?); records need boxes normalised to [0, 1]"),
    ([[_box(1, box=(0.1, 0.6, 0.5, 0.2))]], GOOD, NAMES,  # ymin > ymax
     "train-00000-of-00001.tfrecord: record 0 (source_id train0): box 0 is [ymin, xmin, ymax, xmax] = "
     "[0.6, 0.1, 0.2, 0.5]; records need boxes normalised"),
    ([[_box(1)], [ObjectBox(0.1, 0.1, 0.2, 0.2, 0, "bottle", 0, 1.0)]], GOOD, NAMES,  # 0-based ids
     "train-00000-of-00001.tfrecord: record 1 (source_id train1) has class id 0, as 1 of the split's 2 records do "
     "(ids run 0..1, labels.txt has 3 classes): the records number their classes from 0, but 0 is background in the "
     "schema edge-trash reads (class ids 1..N, line k of labels.txt names id k), so each class would train under the "
     "name of the line before its own and the first not at all: rebuild the records from the dataset's COCO JSON "
     "with `edge-trash build-tfrecords`, or write them with every image/object/class/label 1 higher"),
    ([[_box(1)], [_box(4, text="cup")]], GOOD, NAMES,  # an id past labels.txt
     "record 1 (source_id train1) has class ids [4] outside 1..3 of labels.txt; records need boxes normalised to "
     "[0, 1] (xmin <= xmax, ymin <= ymax) and class ids 1..N in the order of labels.txt (0 is background)"),
    (GOOD, [[], []], NAMES,  # val records without a box: no AP to keep the best checkpoint by
     "the val split holds 2 records and no box other than crowd boxes, so there is nothing to keep the checkpoint "
     "with the best val AP by: rebuild with boxes in it"),
    ([[], []], GOOD, NAMES,
     "the train split holds 2 records and no box other than crowd boxes, so there is nothing to train on"),
])
def test_records_training_cannot_use_are_refused_before_the_run_starts(tmp_path, train, val, names, message):
    data = _data(tmp_path / "data", train, val, names)
    result = _train(data, tmp_path / "run")
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split())
    assert "Traceback" not in result.output
    assert not (tmp_path / "run").exists()  # nothing that a rerun would have to --resume


def test_box_lists_of_another_length_than_the_labels_are_refused(tmp_path):
    data = _data(tmp_path / "data", GOOD, GOOD)
    from edge_trash.train.input_pipeline import RecordError, load_split

    import tensorflow as tf

    ex = tf.train.Example.FromString(make_example_bytes(_jpeg(), 32, 24, "x.jpg", "7", [_box(1)]))
    ex.features.feature["image/object/class/label"].int64_list.value.append(2)  # one label more than boxes
    with TFRecordWriter(data / "val-00000-of-00001.tfrecord") as w:
        w.write(ex.SerializeToString())
    with pytest.raises(RecordError, match=r"record 0 \(source_id 7\) has 2 class ids and box lists of \[1\] values"):
        load_split(data, "val")


def test_evaluate_reads_the_records_through_the_same_checks(tmp_path):
    from edge_trash.train.evaluate import gt_from_tfrecords
    from edge_trash.train.input_pipeline import RecordError

    data = _data(tmp_path / "data", GOOD, [[_box(1, box=(10, 20, 50, 60))]])
    with pytest.raises(RecordError, match=r"val-00000-of-00001.tfrecord: record 0 \(source_id val0\): box 0 is "):
        gt_from_tfrecords(data, "val")
    gt, images = gt_from_tfrecords(data, "train")
    assert len(images) == 3 and len(gt["annotations"]) == 3


def test_labels_renamed_for_display_or_boxes_a_little_past_the_edge_still_train(tmp_path):
    """Only a text that is another line's name is refused (labels.txt in another order); 'Bottle' for 'bottle',
    a name in NFD, a display name, or a box within 1% past the edge (clipped in training) are read."""
    from edge_trash.train.input_pipeline import load_split

    data = _data(tmp_path / "data", [[_box(1, box=(-0.005, 0.2, 0.5, 1.004))], [_box(2)], [_box(3)]], GOOD,
                 names=["Bottle", "cane\u0301", "paper cup"])  # 'can' in the records: 'cane' is no line's name
    assert [len(labels) for labels in load_split(data, "train").labels] == [1, 1, 1]
    (data / "labels.txt").write_text("can\nbottle\ncup\n")  # two lines swapped
    with pytest.raises(ValueError, match="names class id 1 'bottle', which is line 2 of labels.txt, not line 1 "
                                         r"\('can'; 2 such pairs of id and name\)"):
        load_split(data, "val")


def test_a_missing_labels_txt_says_how_to_write_it(tmp_path):
    data = _data(tmp_path / "data", GOOD, GOOD, labels=False)
    (data / "label_map.pbtxt").write_text('item { id: 2 name: "can" }\nitem { id: 1 name: "bottle" }\n')
    result = _train(data, tmp_path / "run")
    assert result.exit_code == 2
    assert (f"--data {data}: no labels.txt; `edge-trash build-tfrecords` writes it beside the records: one class "
            f"name per line, line k for class id k; the label_map.pbtxt there names them: printf '%s\\n' bottle can > "
            f"{data}/labels.txt") in " ".join(result.output.split())
    (data / "label_map.pbtxt").write_text('item { id: 2 name: "can" }\n')  # no id 1: the names cannot be lines
    result = _train(data, tmp_path / "run")
    assert result.exit_code == 2 and not (tmp_path / "run").exists()
    assert ("line k for class id k (the label_map.pbtxt there names them: list its names in id order)"
            in " ".join(result.output.split()))


ROBOFLOW_LABEL_MAP = "".join(f'item {{\n    name: "{n}",\n    id: {i},\n    display_name: "{n}"\n}}\n'
                             for i, n in enumerate(NAMES, 1))


def test_roboflow_tfrecord_export_is_named_with_the_commands_that_read_it(tmp_path):
    """Roboflow's TFRecord export (train/, valid/, test/, each with litter.tfrecord and litter_label_map.pbtxt) was
    refused with "no labels.txt", or "no shards named like ...": nothing said what the folder held."""
    import subprocess

    from edge_trash.tfrecords.split_layout import training_splits
    from edge_trash.train.input_pipeline import load_split, read_class_names

    built = _data(tmp_path / "ours", GOOD, GOOD[:2])
    rb = tmp_path / "rb"
    for ours, theirs in (("train", "train"), ("val", "valid"), ("val", "test")):
        (rb / theirs).mkdir(parents=True)
        (rb / theirs / "litter.tfrecord").write_bytes((built / f"{ours}-00000-of-00001.tfrecord").read_bytes())
        (rb / theirs / "litter_label_map.pbtxt").write_text(ROBOFLOW_LABEL_MAP)
    commands = [f"  ln -s train/litter.tfrecord {rb}/train-00000-of-00001.tfrecord",
                f"  ln -s valid/litter.tfrecord {rb}/val-00000-of-00001.tfrecord",
                f"  ln -s test/litter.tfrecord {rb}/test-00000-of-00001.tfrecord",
                f"  printf '%s\\n' bottle can cup > {rb}/labels.txt"]
    expected = "\n".join([
        f"--data {rb}: no shards named like 'train-00000-of-00001.tfrecord'; it holds TFRecords laid out as "
        "Roboflow's TFRecord export lays them (a folder per split): test/litter.tfrecord, train/litter.tfrecord, "
        "valid/litter.tfrecord. Exporting the dataset as COCO JSON for `edge-trash build-tfrecords` checks every box "
        "and shrinks the photos; to read these records as they are, give them the names edge-trash reads:",
        *commands])
    result = _train(rb, tmp_path / "run")
    assert result.exit_code == 2 and not (tmp_path / "run").exists()
    assert expected in result.output
    result = CliRunner().invoke(cli, ["analyze", "--tfrecords", str(rb), "--out", str(tmp_path / "an")])
    assert result.exit_code == 1 and expected.replace("--data", "--tfrecords", 1) in result.output
    subprocess.run(["bash", "-c", "\n".join(commands)], check=True)  # what the user copies
    assert training_splits(rb) == ("train", "val")
    assert read_class_names(rb) == NAMES
    assert [len(labels) for labels in load_split(rb, "val").labels] == [1, 1]
    result = CliRunner().invoke(cli, ["analyze", "--tfrecords", str(rb), "--out", str(tmp_path / "an"), "--no-plots"])
    assert result.exit_code == 0 and "train 3 images / 3 boxes, val 2 images / 2 boxes, test 2 images / 2 boxes" \
        in result.output


def test_tf_object_detection_api_record_names_and_a_label_map_with_gaps(tmp_path):
    from edge_trash.tfrecords.split_layout import DataSplitError, training_splits
    from edge_trash.train.input_pipeline import split_files

    built = _data(tmp_path / "ours", GOOD, GOOD)
    data = tmp_path / "od"
    data.mkdir()
    record = (built / "train-00000-of-00001.tfrecord").read_bytes()
    for name in ("coco_train.record-00000-of-00002", "coco_train.record-00001-of-00002", "eval.record",
                 "mine.tfrecord"):
        (data / name).write_bytes(record)
    (data / "label_map.pbtxt").write_text("item { id: 1 name: 'bottle' }\nitem { id: 3 name: 'cup' }\n")
    expected = "\n".join([
        f"--data {data}: no shards named like 'train-00000-of-00001.tfrecord'; it holds TFRecords named as the TF "
        "Object Detection API's scripts name them: coco_train.record-00000-of-00002, "
        "coco_train.record-00001-of-00002, eval.record, mine.tfrecord. Exporting the dataset as COCO JSON for "
        "`edge-trash build-tfrecords` checks every box and shrinks the photos; to read these records as they are, "
        "give them the names edge-trash reads:",
        f"  ln -s coco_train.record-00000-of-00002 {data}/train-00000-of-00002.tfrecord",
        f"  ln -s coco_train.record-00001-of-00002 {data}/train-00001-of-00002.tfrecord",
        f"  ln -s eval.record {data}/val-00000-of-00001.tfrecord",
        "  (and name each of mine.tfrecord train-, val- or test-NNNNN-of-NNNNN.tfrecord by the split it holds)",
        f"  and write {data}/labels.txt: one class name per line, line k naming the records' class id k (as "
        "label_map.pbtxt does)"])
    with pytest.raises(DataSplitError) as err:
        training_splits(data)
    assert str(err.value) == expected
    with pytest.raises(FileNotFoundError) as err:
        split_files(data, "val")  # what evaluate and the export's calibration read
    assert str(err.value) == expected


def test_label_map_names_read_what_label_map_pbtxt_writes():
    from edge_trash.tfrecords.class_map import label_map_names, label_map_pbtxt

    names = ["bottle", "it's", "back\\slash", "Flasche\u0301", "a } b"]
    assert label_map_names(label_map_pbtxt(names)) == dict(enumerate(names, 1))
    assert label_map_names(ROBOFLOW_LABEL_MAP) == {1: "bottle", 2: "can", 3: "cup"}
    assert label_map_names('item { id: 4 display_name: "Can" } item { name: "x" } item { id: 2 }') == {4: "Can"}
    assert label_map_names("item { id: 1 name: '/m/01g317' display_name: 'person' }") == {1: "person"}  # Open Images


@pytest.mark.parametrize("encoding", ["utf-8-sig", "utf-16"])
def test_labels_txt_saved_by_windows_editors_reads_as_utf8(tmp_path, encoding):
    """PowerShell's > writes UTF-16, Notepad once wrote a byte-order mark: a crash, or the class '\\ufeffbottle'."""
    from edge_trash.models.run_dir import RunDirError, read_labels

    path = tmp_path / "labels.txt"
    path.write_bytes("bottle\r\ncan\r\n".encode(encoding))
    assert read_labels(path) == ["bottle", "can"]
    # train and evaluate read the data's labels.txt the same way (the records' class check saw '\ufeffbottle')
    from edge_trash.train.input_pipeline import load_split

    data = _data(tmp_path / "data", GOOD, GOOD)
    (data / "labels.txt").write_bytes("\n".join(NAMES).encode(encoding))
    assert load_split(data, "train").class_names == NAMES
    path.write_bytes(b"bo\xe9\xfftle\n")  # neither UTF-8 nor with a UTF-16 mark
    with pytest.raises(RunDirError, match="cannot read it as UTF-8 text .*; save it as UTF-8"):
        read_labels(path)


ZERO_BASED = [[_box(1, text="can")], [ObjectBox(0.1, 0.1, 0.2, 0.2, 0, "bottle", 0, 1.0)],
              [ObjectBox(0.1, 0.1, 0.2, 0.2, 0, "bottle", 0, 1.0), _box(2, text="cup")]]


def test_records_numbered_from_0_are_refused_naming_the_shard_after_reading_the_split(tmp_path):
    """A converter that numbers classes from 0 (a YOLO conversion): id 0 is background here, so every class would
    train under the previous line's name; the message counts the records and gives the fix."""
    data = _data(tmp_path / "data", GOOD, ZERO_BASED)
    result = _train(data, tmp_path / "run")
    assert result.exit_code == 2, result.output
    assert (f"{data}/val-00000-of-00001.tfrecord: record 1 (source_id val1) has class id 0, as 2 of the split's 3 "
            "records do (ids run 0..2, labels.txt has 3 classes): the records number their classes from 0") in \
        " ".join(result.output.split())
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("first", ["background", "__background__", "???", "Background "])
def test_a_labels_txt_with_a_background_first_line_is_refused(tmp_path, first):
    data = _data(tmp_path / "data", GOOD, GOOD, names=[first] + NAMES)
    result = _train(data, tmp_path / "run")
    assert result.exit_code == 2, result.output
    assert (f"{data}/labels.txt: its first line is {first.strip()!r}, a background entry as other tools write one "
            "for class id 0; edge-trash's labels.txt lists the classes alone (line k names class id k, and id 0, "
            "background, has no line), so every class would train under the name of the line before its own: drop "
            f"that line (sed -i 1d {data}/labels.txt), or rebuild the records with `edge-trash build-tfrecords`") in \
        " ".join(result.output.split())
    assert not (tmp_path / "run").exists()


def test_background_line_problem_only_for_a_background_first_line(tmp_path):
    from edge_trash.tfrecords.other_formats import background_line_problem

    path = tmp_path / "labels.txt"
    assert background_line_problem(NAMES, path) == ""
    assert background_line_problem([], path) == ""
    assert background_line_problem(["bottle", "background"], path) == ""  # a class some dataset has, not first
    assert background_line_problem(["__BACKGROUND__", "bottle"], path).startswith(
        f"{path}: its first line is '__BACKGROUND__', a background entry")


def test_analyze_flags_records_numbered_from_0_and_a_background_line(tmp_path):
    import json

    data = _data(tmp_path / "data", GOOD, ZERO_BASED, names=["???"] + NAMES)
    result = CliRunner().invoke(cli, ["analyze", "--tfrecords", str(data), "--out", str(tmp_path / "an"),
                                      "--no-plots"])
    assert result.exit_code == 0, result.output
    flags = json.loads((tmp_path / "an" / "stats.json").read_text())["flags"]
    found = {f["kind"]: f for f in flags if f["kind"] in ("class_ids_from_0", "labels_background_line")}
    assert found["labels_background_line"]["where"] == "tfrecords"
    assert found["labels_background_line"]["items"] == ["???"]
    assert found["labels_background_line"]["message"].startswith(f"{data}/labels.txt: its first line is '???', a "
                                                                 "background entry")
    zero = found["class_ids_from_0"]
    assert (zero["where"], zero["count"]) == ("tfrecords/val", 2)
    assert zero["message"] == (
        f"{data}/val-00000-of-00001.tfrecord: record 1 (source_id val1) has class id 0, as 2 of the split's 3 "
        "records do (ids run 0..2, labels.txt has 4 classes): the records number their classes from 0, but 0 is "
        "background in the schema edge-trash reads (class ids 1..N, line k of labels.txt names id k), so each class "
        "would train under the name of the line before its own and the first not at all: rebuild the records from "
        "the dataset's COCO JSON with `edge-trash build-tfrecords`, or write them with every "
        "image/object/class/label 1 higher")
    assert [f["kind"] for f in flags].count("class_ids_from_0") == 1  # train is numbered from 1
    report = (tmp_path / "an" / "report.md").read_text()
    assert "- **class ids from 0** (tfrecords/val): " in report
    assert "- **labels background line** (tfrecords): " in report


def test_a_label_map_background_item_takes_no_line_of_labels_txt(tmp_path):
    from edge_trash.tfrecords.other_formats import labels_txt_command

    label_map = tmp_path / "label_map.pbtxt"
    label_map.write_text("item { id: 0 name: 'background' }\nitem { id: 1 name: 'bottle' }\n"
                         "item { id: 2 name: 'can' }\n")
    assert labels_txt_command(tmp_path, label_map) == f"printf '%s\\n' bottle can > {tmp_path}/labels.txt"
    label_map.write_text("item { id: 1 name: '???' }\nitem { id: 2 name: 'can' }\n")  # background as id 1
    assert labels_txt_command(tmp_path, label_map) == ""
