"""Export checks the run against its --data before converting: the classes of both labels.txt."""

from __future__ import annotations

import pytest

from edge_trash.export.run_checks import class_differences


@pytest.mark.parametrize("run, data, expected", [
    (["can", "cup"], ["can", "cup"], []),
    (["can", "cup", "lid"], ["can", "cup"], ["gone from the data: lid"]),
    (["can", "cup"], ["can", "cup", "lid"], ["new in the data: lid"]),
    (["can", "cup"], ["cup", "can"],
     ["in another order: can (line 1 in the run, 2 in the data), cup (line 2 in the run, 1 in the data)"]),
    # A class dropped from the middle moves the ones below it, yet their order is kept: not "reordered".
    (["can", "cup", "lid"], ["can", "lid"], ["gone from the data: cup"]),
    (["can", "cup", "lid"], ["lid", "paper", "can"],
     ["gone from the data: cup", "new in the data: paper",
      "in another order: can (line 1 in the run, 3 in the data), lid (line 3 in the run, 1 in the data)"]),
    ([f"c{i}" for i in range(8)], [], ["gone from the data: c0, c1, c2, c3, c4 and 3 more"]),
])
def test_class_differences_table(run, data, expected):
    run_before, data_before = list(run), list(data)
    assert class_differences(run, data) == expected
    assert (run, data) == (run_before, data_before)  # inputs untouched


def _dirs(tmp_path, run_labels, data_labels):
    run, data = tmp_path / "run", tmp_path / "data"
    run.mkdir()
    data.mkdir()
    for split in ("train", "val"):  # names only: validate checks that the splits export reads are there
        (data / f"{split}-00000-of-00001.tfrecord").write_bytes(b"")
    if run_labels is not None:
        (run / "labels.txt").write_text(run_labels, encoding="utf-8")
    if data_labels is not None:
        (data / "labels.txt").write_text(data_labels, encoding="utf-8")
    return run, data


def _validate(tmp_path, run, data):
    from edge_trash.export.bundle import ExportOptions

    ExportOptions(model=str(run), data=str(data), out=str(tmp_path / "bundle")).validate()


def test_validate_refuses_data_of_other_classes_naming_both_files_and_the_fix(tmp_path):
    run, data = _dirs(tmp_path, "can\ncup\nlid\n", "cup\ncan\npaper\n")
    with pytest.raises(ValueError) as err:
        _validate(tmp_path, run, data)
    assert str(err.value) == (
        f"{data}/labels.txt does not list the classes the run was trained on ({run}/labels.txt): "
        "gone from the data: lid; new in the data: paper; in another order: can (line 1 in the run, 2 in the data), "
        "cup (line 2 in the run, 1 in the data). The int8 model would be calibrated and checked against float on "
        "records whose class ids mean other classes. Export with the --data the run was trained on, or retrain on "
        f"this data: edge-trash train --data {data} --out NEW_RUN --init {run}")


def test_validate_accepts_the_same_classes_written_with_a_byte_order_mark(tmp_path):
    run, data = _dirs(tmp_path, "can\ncup\n", None)
    (data / "labels.txt").write_bytes("\ufeffcan\r\ncup\r\n".encode("utf-8"))  # Windows Notepad
    _validate(tmp_path, run, data)


def test_validate_refuses_data_without_labels_txt(tmp_path):
    run, data = _dirs(tmp_path, "can\ncup\n", None)
    (data / "label_map.pbtxt").write_text('item {\n  id: 1\n  name: "can"\n}\nitem {\n  id: 2\n  name: "cup"\n}\n')
    with pytest.raises(ValueError) as err:
        _validate(tmp_path, run, data)
    assert str(err.value) == (
        f"--data {data}: no labels.txt; `edge-trash build-tfrecords` writes it beside the records: one class name "
        f"per line, line k for class id k; the label_map.pbtxt there names them: printf '%s\\n' can cup > "
        f"{data}/labels.txt\nexport compares it with {run}/labels.txt before calibrating: give the --data the run "
        "was trained on")


def test_validate_refuses_a_run_without_labels_txt(tmp_path):
    run, data = _dirs(tmp_path, None, "can\n")
    with pytest.raises(ValueError) as err:
        _validate(tmp_path, run, data)
    assert str(err.value) == (f"--model {run}: no labels.txt, the classes the model predicts; pass the --out of "
                              "`edge-trash train` (it copies labels.txt from its --data)")


def test_validate_names_the_run_a_model_folder_inside_it_belongs_to(tmp_path):
    run, data = _dirs(tmp_path, "can\n", "can\n")
    (run / "config.json").write_text("{}")
    saved = run / "saved_model"
    saved.mkdir()
    with pytest.raises(ValueError) as err:
        _validate(tmp_path, saved, data)
    assert str(err.value) == (f"--model {saved} is inside the run {run.absolute()}: export reads the whole run (its "
                              f"weights, config.json and labels.txt); pass --model {run.absolute()}")


def test_cli_reports_the_mismatch_before_loading_tensorflow(tmp_path):
    import subprocess
    import sys

    run, data = _dirs(tmp_path, "can\ncup\n", "can\n")
    code = ("import sys; from click.testing import CliRunner; from edge_trash.cli import cli; "
            f"r = CliRunner().invoke(cli, ['export', '--model', {str(run)!r}, '--data', {str(data)!r}, '--out', "
            f"{str(tmp_path / 'bundle')!r}]); print(r.exit_code); print(r.output); "
            "print('TF', 'tensorflow' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.splitlines()[0] == "1"
    assert f"Error: {data}/labels.txt does not list the classes the run was trained on ({run}/labels.txt): " \
           "gone from the data: cup. " in out
    assert "TF False" in out
    assert not (tmp_path / "bundle").exists()


def _run_with_metrics(tmp_path, metrics, train=None):
    import json

    run = tmp_path / "run"
    run.mkdir(exist_ok=True)
    if metrics is not None:
        (run / "metrics.json").write_text(json.dumps(metrics))
    (run / "config.json").write_text(json.dumps({"model": {}, "train": train or {"steps": 4000}}))
    return run


def test_training_state_reads_metrics_and_config(tmp_path):
    from edge_trash.export.run_checks import training_state, unfinished_run_warning

    run = _run_with_metrics(tmp_path, {"step": 1500, "finished": False, "best_step": 1000, "history": []})
    state = training_state(str(run))
    assert state == {"finished": False, "step": 1500, "steps": 4000, "best_step": 1000}
    assert unfinished_run_warning(state, str(run), "data dir") == (
        f"{run} has not finished training (metrics.json: step 1500 of 4000, finished false): this bundle holds its "
        f"best weights so far, from step 1000; finish it with edge-trash train --data 'data dir' --out {run} "
        "--resume, then export again")
    finished = _run_with_metrics(tmp_path, {"step": 4000, "finished": True, "best_step": 3000})
    assert training_state(str(finished))["finished"] is True
    assert unfinished_run_warning(training_state(str(finished)), str(run), "d") is None
    (run / "metrics.json").write_text("{not json")
    assert training_state(str(run)) is None and unfinished_run_warning(None, str(run), "d") is None


@pytest.mark.slow
def test_export_of_an_unfinished_run_warns_and_records_it_in_the_manifest(tmp_path, sample_build, monkeypatch):
    import json
    from pathlib import Path

    from export_helpers import TinyConfig, tiny_anchors, tiny_ssd

    from edge_trash.export.bundle import ExitCode, ExportOptions, export_bundle

    data_dir, _ = sample_build
    names = (Path(data_dir) / "labels.txt").read_text().split()
    run = _run_with_metrics(tmp_path, {"step": 1500, "finished": False, "best_step": 1000})
    (run / "labels.txt").write_text("\n".join(names) + "\n")
    monkeypatch.setenv("PATH", str(tmp_path))

    def load(run_dir):
        return tiny_ssd(len(names)), TinyConfig(num_classes=len(names)), names, tiny_anchors()

    result = export_bundle(ExportOptions(model=str(run), data=str(data_dir), out=str(tmp_path / "bundle"),
                                         calibration_images=4, parity=False, latency_runs=1), loader=load)
    assert result.exit_code == ExitCode.OK
    assert (f"{run} has not finished training (metrics.json: step 1500 of 4000, finished false): this bundle holds "
            "its best weights so far, from step 1000; finish it with edge-trash train --data "
            f"{data_dir} --out {run} --resume, then export again") in result.warnings
    manifest = json.loads((tmp_path / "bundle" / "manifest.json").read_text())
    assert manifest["training"] == {"finished": False, "step": 1500, "steps": 4000, "best_step": 1000}


def test_classes_not_in_train_come_from_the_build_report(tmp_path):
    import json

    from edge_trash.export.run_checks import classes_not_in_train, not_learned_warning

    data = tmp_path / "data"
    data.mkdir()
    assert classes_not_in_train(str(data), ["can", "cup"]) == []  # no report.json: nothing to say
    (data / "report.json").write_text(json.dumps({"classes_not_in_train": ["lid", "cup"]}))
    assert classes_not_in_train(str(data), ["can", "cup", "lid"]) == ["cup", "lid"]  # in label order
    # an older report: per-class boxes by split
    (data / "report.json").write_text(json.dumps({"classes": [
        {"name": "can", "boxes_by_split": {"train": 4, "val": 1}},
        {"name": "cup", "boxes_by_split": {"train": 0, "val": 2}}]}))
    assert classes_not_in_train(str(data), ["can", "cup"]) == ["cup"]
    assert not_learned_warning(str(data), []) is None
    assert not_learned_warning(str(data), ["cup"]) == (
        f"{data}/report.json: the train split holds no box of class cup: the model never learned it and will not "
        "detect it on the device; add photos with such boxes and rebuild the records (then retrain), or leave the "
        "class out with build-tfrecords --class-map")
    assert not_learned_warning(str(data), ["cup", "lid"]) == (
        f"{data}/report.json: the train split holds no box of classes cup, lid: the model never learned them and "
        "will not detect them on the device; add photos with such boxes and rebuild the records (then retrain), or "
        "leave the classes out with build-tfrecords --class-map")


@pytest.mark.slow
def test_export_warns_about_classes_without_a_train_box_and_notes_learned_parity_images(tmp_path, sample_build,
                                                                                        monkeypatch):
    import json
    import shutil
    from pathlib import Path

    from export_helpers import TinyConfig, tiny_anchors, tiny_ssd

    from edge_trash.export.bundle import ExitCode, ExportOptions, export_bundle
    from edge_trash.tfrecords.splits import read_splits_json, split_listing
    from edge_trash.train.data_record import write_data_record

    built, _ = sample_build
    data = tmp_path / "data"
    shutil.copytree(built, data)
    names = (data / "labels.txt").read_text().split()
    report = json.loads((data / "report.json").read_text())
    assert report["classes_not_in_train"] == []
    report["classes_not_in_train"] = [names[-1]]  # as a build whose train split lost that class says
    (data / "report.json").write_text(json.dumps(report))
    run = tmp_path / "run"
    run.mkdir()
    (run / "labels.txt").write_text("\n".join(names) + "\n")
    # The run learned three of this build's val images (its data.json; a --fold run exported with a build without
    # --folds does): the parity scores get a note and parity.json the count. (One export checks both, for time.)
    val = split_listing(read_splits_json(data / "splits.json"), "val")
    write_data_record(run, {"version": 1, "data": str(tmp_path / "other build"), "fold": 1, "labels": names,
                            "splits": {"train": {"split": "fold0+fold2", "images": ["x.jpg"] + val[:3],
                                                 "shards": []}}})
    monkeypatch.setenv("PATH", str(tmp_path))
    scored = {"passed": True, "float": {"AP50": 0.61}, "int8": {"AP50": 0.6}, "drop_points": {"AP50": 1.0}}
    result = export_bundle(ExportOptions(model=str(run), data=str(data), out=str(tmp_path / "bundle"),
                                         calibration_images=4, latency_runs=1),
                           loader=lambda _: (tiny_ssd(len(names)), TinyConfig(num_classes=len(names)), names,
                                             tiny_anchors()),
                           parity_runner=lambda options, model: dict(scored))
    assert result.exit_code == ExitCode.OK
    assert result.notes == [
        f"3 of the {len(val)} images in val of {data}, where float and int8 are compared, were in the train split "
        f"{run} learned from (its data.json: --data {tmp_path / 'other build'}): {', '.join(val[:3])}. Both AP50s "
        "read high on them (the int8 drop against float still holds); for held-out AP50s export with --data "
        f"'{tmp_path / 'other build'}'"]
    assert json.loads((tmp_path / "bundle" / "parity.json").read_text())["split_images_trained_on"] == 3
    assert result.warnings[0] == (
        f"{data}/report.json: the train split holds no box of class {names[-1]}: the model never learned it and "
        "will not detect it on the device; add photos with such boxes and rebuild the records (then retrain), or "
        "leave the class out with build-tfrecords --class-map")
    manifest = json.loads((Path(result.bundle_dir) / "manifest.json").read_text())
    assert manifest["classes_not_in_train"] == [names[-1]]


def test_learned_parity_note_needs_the_runs_data_json_and_the_datas_listing(tmp_path):
    import json

    from edge_trash.export.run_checks import learned_parity_note
    from edge_trash.train.data_record import write_data_record

    run, data = _dirs(tmp_path, "can\n", "can\n")
    assert learned_parity_note(str(run), str(data), "val") == (None, 0)  # a run from before data.json
    write_data_record(run, {"version": 1, "data": "/d", "fold": None, "labels": ["can"],
                            "splits": {"train": {"split": "train", "images": ["a.jpg", "b.jpg"], "shards": []}}})
    assert learned_parity_note(str(run), str(data), "val") == (None, 0)  # records without splits.json
    (data / "splits.json").write_text(json.dumps({"file_names": {"train": ["a.jpg"], "val": ["c.jpg", "d.jpg"]}}))
    assert learned_parity_note(str(run), str(data), "val") == (None, 0)  # val held out from the run
    (data / "splits.json").write_text(json.dumps({"file_names": {"train": ["c.jpg"], "val": ["b.jpg", "d.jpg"]}}))
    assert learned_parity_note(str(run), str(data), "val") == (
        f"1 of the 2 images in val of {data}, where float and int8 are compared, was in the train split {run} "
        "learned from (its data.json: --data /d): b.jpg. Both AP50s read high on them (the int8 drop against float "
        "still holds); for held-out AP50s export with --data /d", 1)
