"""Flows the audit walked that ended in a broken run or a printed command that fails when typed: ``train --out``
in the data folder or a folder of other files, ``evaluate --out RUN/metrics.json``, ``--init RUN`` commands for a
run of another config, evaluate's next step on a ``--folds`` build, and a ``--data`` folder holding several builds."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from edge_trash.cli import cli

sys.path.insert(0, str(Path(__file__).parent))
from test_train_foreign_records import GOOD, _data  # noqa: E402

RUNS = "choose a new --out outside the data, e.g. --out runs/"
MIXED = ("the run's files (config.json, labels.txt, checkpoints/, ...) would lie among the records, and a later "
         "build-tfrecords --out there replaces the run's labels.txt: " + RUNS)


def _said(result) -> str:
    return " ".join(result.output.split())


def _train(*args: str):
    return CliRunner().invoke(cli, ["train", *args, "--config", "demo", "--steps", "2", "--no-progress"])


# 1. train --out: not the data folder, not a folder of other files


@pytest.mark.parametrize("data_at, out_at, where", [
    ("t2", "t2", "--out {out} is the --data folder"),
    ("t2", "t2/run", "--out {out} is inside --data {data}"),
    ("runs/a/data", "runs/a", "--data {data} is inside --out {out}"),
])
def test_train_refuses_an_out_that_is_or_holds_or_lies_in_the_data(tmp_path, data_at, out_at, where):
    """`train --data s/t2 --out s/t2` trained into the data folder; a later build-tfrecords --out s/t2 replaced the
    run's labels.txt and export then refused the run."""
    data = _data(tmp_path / data_at, GOOD, GOOD)
    out = tmp_path / out_at
    before = sorted(p.name for p in tmp_path.rglob("*"))
    result = _train("--data", str(data), "--out", str(out))
    assert result.exit_code == 2, result.output
    assert f"Error: {where.format(out=out, data=data)}: {MIXED}{data.name}" in _said(result)
    assert sorted(p.name for p in tmp_path.rglob("*")) == before  # nothing written


def test_train_refuses_an_out_of_other_files_but_takes_one_a_stopped_run_left(tmp_path):
    from edge_trash.train.trainer import out_dir_problem

    data = _data(tmp_path / "data", GOOD, GOOD)
    out = tmp_path / "photos"
    (out / "images").mkdir(parents=True)
    for name in ("notes.txt", "annotations.json", "labels.txt", "b.jpg"):
        (out / name).write_text("x")
    result = _train("--data", str(data), "--out", str(out))
    assert result.exit_code == 2, result.output
    assert (f"Error: --out {out}: not empty and not a run directory (no config.json): it holds 4 entries a run does "
            "not write (annotations.json, b.jpg, images/ and 1 more), which the run's files would mix with: choose a "
            "new --out (a folder that does not exist yet, or an empty one), e.g. --out runs/data") in _said(result)
    assert sorted(p.name for p in out.iterdir()) == ["annotations.json", "b.jpg", "images", "labels.txt", "notes.txt"]
    # what a run writes (one stopped before config.json, or its scratch files) is no reason to refuse; nor is an
    # empty or a new folder
    stopped = tmp_path / "stopped"
    (stopped / "logs").mkdir(parents=True)
    for name in ("labels.txt", "data.json", ".labels.txt.abc123.tmp", ".tmp.model.weights.h5", ".DS_Store"):
        (stopped / name).write_text("x")
    (stopped / ".worker-1").mkdir()
    (tmp_path / "empty").mkdir()
    for fine in (stopped, tmp_path / "empty", tmp_path / "new"):
        assert out_dir_problem(data, fine) == ""
    # a run folder: still refused as a run (or continued with --resume), never as "not empty"
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text("{}")
    (run / "notes.txt").write_text("x")
    assert out_dir_problem(data, run) == ""
    result = _train("--data", str(data), "--out", str(run))
    assert result.exit_code == 2
    assert (f"--out {run}: already holds a run ({run}/config.json); pass --resume to continue it or choose a new "
            "directory") in _said(result)
    assert out_dir_problem(data, data, resume=True) == ""  # a resume keeps its --out (its own checks apply)


# 2. evaluate --out: not one of the files of a run


def _run_dir(path: Path) -> Path:
    """A run folder as evaluate reads it (config.json, saved_model/saved_model.pb, metrics.json of train)."""
    (path / "saved_model").mkdir(parents=True)
    (path / "config.json").write_text(json.dumps({"model": {}, "train": {"fold": None}}))
    (path / "saved_model" / "saved_model.pb").write_bytes(b"")
    (path / "metrics.json").write_text(json.dumps({"step": 40, "finished": True, "trained_on": "train"}))
    return path


@pytest.mark.parametrize("flag, target, said", [
    ("--out", "metrics.json", "metrics.json is its training record (train --resume, export's not-finished warning "
                              "and evaluate's note on splits it was trained on read it); evaluate would overwrite it: "
                              "write it elsewhere, e.g. --out {run}/eval/val.json"),
    ("--out", "config.json", "config.json is its settings (train --resume, export and evaluate read them); evaluate "
                             "would overwrite it: write it elsewhere, e.g. --out {run}/eval/val.json"),
    ("--out", "saved_model/m.json", "saved_model/ holds its SavedModel (export and evaluate read it); evaluate would "
                                    "overwrite it: write it elsewhere, e.g. --out {run}/eval/val.json"),
    ("--save-detections", "labels.txt", "labels.txt is its class list (export and evaluate read it); evaluate would "
                                        "overwrite it: write it elsewhere, e.g. --save-detections "
                                        "{run}/eval/detections.json"),
])
def test_evaluate_refuses_to_write_over_a_file_of_the_run(tmp_path, flag, target, said):
    """evaluate --out RUN/metrics.json replaced train's record, which --resume, export's not-finished warning and
    evaluate's fold default read."""
    run = _run_dir(tmp_path / "run")
    (run / "labels.txt").write_text("can\n")
    data = tmp_path / "data"
    data.mkdir()
    record = (run / "metrics.json").read_text()
    out = ["--out", str(tmp_path / "m.json")] if flag != "--out" else []
    result = CliRunner().invoke(cli, ["evaluate", "--model", str(run), "--data", str(data), flag, str(run / target),
                                      *out])
    assert result.exit_code == 2, result.output
    assert result.output.splitlines()[-1] == f"Error: {flag} {run / target}: {run} is a training run and " + \
        said.format(run=run)
    assert (run / "metrics.json").read_text() == record


def test_evaluate_writes_beside_a_run_and_in_its_eval_folder(tmp_path):
    from edge_trash.train.evaluate_cli import run_file_problem

    run = _run_dir(tmp_path / "run")
    for fine in (run / "eval" / "val.json", run / "val.json", tmp_path / "metrics.json", run / "eval" / "metrics.json"):
        assert run_file_problem(fine, "--out", "val.json") == "", fine
    assert run_file_problem(run / "checkpoints" / "x" / "m.json", "--out", "fold1.json") == (
        f"--out {run}/checkpoints/x/m.json: {run} is a training run and checkpoints/ holds its checkpoints (train "
        f"--resume continues from them); evaluate would overwrite it: write it elsewhere, e.g. --out "
        f"{run}/eval/fold1.json")
    # the suggested name is the split evaluated: a fold run's own fold by default
    fold_run = tmp_path / "fold2"
    _run_dir(fold_run)
    (fold_run / "config.json").write_text(json.dumps({"model": {}, "train": {"fold": 2}}))
    data = tmp_path / "data"
    data.mkdir()
    result = CliRunner().invoke(cli, ["evaluate", "--model", str(fold_run), "--data", str(data), "--out",
                                      str(fold_run / "metrics.json")])
    assert result.exit_code == 2 and result.output.splitlines()[-1].endswith(f"e.g. --out {fold_run}/eval/fold2.json")


# 3. every printed --init RUN command carries --config RUN/config.json, and works when typed


def _demo_run(path: Path, labels, fold=None) -> Path:
    """A run trained with --config demo (width 0.35, ssdlite) as train leaves it, without weights (the typed command
    stops at the weights, after the model settings were compared)."""
    from edge_trash.train.train_config import load_config

    model, train = load_config("demo")
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps({
        "model": model.replace(num_classes=len(labels), input_size=128).to_dict(),
        "train": train.replace(steps=4, batch_size=2, warmup_steps=1, eval_every=2, fold=fold).to_dict()}))
    (path / "labels.txt").write_text("\n".join(labels) + "\n")
    return path


def _typed(command: str, new_run: Path):
    """Run a printed ``edge-trash train ...`` command as a user types it, with NEW_RUN filled in."""
    words = shlex.split(command)
    assert words[:2] == ["edge-trash", "train"], command
    return CliRunner().invoke(cli, [str(new_run) if w == "NEW_RUN" else w for w in words[1:]] + ["--no-progress"])


def test_the_printed_init_commands_name_the_runs_config_and_reach_its_weights(tmp_path):
    """`edge-trash train --data s/fewer --out NEW_RUN --init runs/a`, as export and train --resume print it, failed
    for a run of --config demo: 'model.width_multiplier is 0.35 there but 1.0 here'."""
    from edge_trash.export.run_checks import check_run_classes
    from edge_trash.train.data_record import data_record, resume_data_problem

    run = _demo_run(tmp_path / "runs" / "a", ["bottle", "can", "cup", "lid"], fold=1)  # a fold run, too
    data = _data(tmp_path / "fewer", GOOD, GOOD)
    with pytest.raises(ValueError) as err:
        check_run_classes(str(run), str(data))
    command = f"edge-trash train --data {data} --out NEW_RUN --init {run} --config {run}/config.json"
    assert str(err.value).endswith(f"Export with the --data the run was trained on, or retrain on this data: {command}")
    recorded = data_record(data, "train", "val", None, ["bottle", "can", "cup", "lid"])
    assert resume_data_problem(run, data, recorded, data_record(data, "train", "val", None, ["bottle", "can", "cup"])) \
        .endswith(f"or fine-tune this run on the new data: {command}")
    result = _typed(command, tmp_path / "new")
    assert result.exit_code == 2
    said = _said(result)
    assert (f"note: --config {run}/config.json: that run validated on fold 1 (train --fold 1); this run does not, "
            "unless --fold says so") in said
    # past the data and the model settings: what stops it is the missing weights of this weightless run
    assert f"Invalid value for --init: --init {run}: {run}/model.weights.h5 not found (the run never evaluated)" \
        in said
    assert "there but" not in said


def test_init_from_a_run_of_another_config_names_the_config_flag(tmp_path):
    from edge_trash.models.init_weights import InitError, load_from_run
    from edge_trash.train.train_config import load_config

    run = _demo_run(tmp_path / "run", ["can", "cup"])
    default, _ = load_config(None)
    with pytest.raises(InitError) as err:
        load_from_run(None, run, default.replace(num_classes=2))
    assert str(err.value) == (f"--init {run}: model.width_multiplier is 0.35 there but 1.0 here; they must match to "
                              f"carry weights over: add --config {run}/config.json to train with that run's model "
                              "settings")
    model, train = load_config(str(run / "config.json"))  # what that flag loads: the run's model
    saved = json.loads((run / "config.json").read_text())
    assert model.to_dict() == saved["model"] and train.to_dict() == saved["train"]
    with pytest.raises(InitError, match="model.weights.h5 not found"):  # the settings match: on to the weights
        load_from_run(None, run, model)


def test_fine_tune_command_names_the_config_only_where_the_run_has_one(tmp_path):
    from edge_trash.models.init_weights import fine_tune_command

    run = tmp_path / "my run"
    run.mkdir()
    assert fine_tune_command(Path("s/fewer"), run) == f"edge-trash train --data s/fewer --out NEW_RUN --init '{run}'"
    (run / "config.json").write_text("{}")
    assert fine_tune_command(Path("s/fewer"), run) == (f"edge-trash train --data s/fewer --out NEW_RUN --init '{run}' "
                                                       f"--config '{run}/config.json'")


# 4. evaluate on a --folds build: no export command (export refuses that folder)


def test_evaluates_next_step_on_a_folds_build_is_not_an_export_command(tmp_path):
    from edge_trash.train.evaluate_cli import next_step

    folds, plain = tmp_path / "folds", tmp_path / "plain"
    for folder, splits in ((folds, ("fold0", "fold1", "fold2", "test")), (plain, ("train", "val"))):
        folder.mkdir()
        for split in splits:
            (folder / f"{split}-00000-of-00001.tfrecord").write_bytes(b"")
    run = tmp_path / "runs" / "fold0"
    assert next_step(run, folds) == (
        f"next: export takes a build without --folds ({folds} holds folds and no train split, while export calibrates "
        "on a train split and checks int8 against float on val): compare the best AP of a run for each fold (--fold "
        "K, each with its own --out); for the model to deploy, build-tfrecords without --folds, train on that and "
        "export it")
    assert next_step(run, plain) == f"next: edge-trash export --model {run} --data {plain} --out bundle/ --edgetpu"


# 5. a --data folder holding whole builds in subfolders: pass one, never link them together


def _build(folder: Path, splits=("train", "val")) -> Path:
    folder.mkdir(parents=True)
    for split in splits:
        (folder / f"{split}-00000-of-00001.tfrecord").write_bytes(b"x")
    (folder / "labels.txt").write_text("can\n")
    (folder / "label_map.pbtxt").write_text('item { id: 1 name: "can" }\n')
    return folder


def test_a_folder_of_builds_says_pass_one_of_them(tmp_path):
    """--data s (holding s/tfrecords, s/notest, s/folds) was answered with ln -s lines that merged the builds into
    s: records counted twice, one build's records under another's labels.txt."""
    from edge_trash.tfrecords.other_formats import other_record_layout

    s = tmp_path / "s"
    _build(s / "tfrecords", ("train", "val", "test"))
    _build(s / "notest")
    _build(s / "folds", ("fold0", "fold1", "test"))
    (s / "images").mkdir()
    (s / "annotations.json").write_text("{}")
    (s / "odd").mkdir()  # shards without labels.txt: no build
    (s / "odd" / "train-00000-of-00001.tfrecord").write_bytes(b"x")
    expected = (f"--data {s}: no shards of its own; this folder holds 3 builds of build-tfrecords, each in a subfolder "
                f"with its own shards and labels.txt: pass one of them as --data: {s}/folds, {s}/notest, "
                f"{s}/tfrecords")
    assert other_record_layout(s, "--data") == expected
    result = _train("--data", str(s), "--out", str(tmp_path / "run"))
    assert result.exit_code == 2 and "ln -s" not in result.output
    assert f"Error: {expected}" in _said(result)
    assert not (tmp_path / "run").exists()
    one = tmp_path / "one"
    _build(one / "tfrecords")
    assert other_record_layout(one, "--tfrecords") == (
        f"--tfrecords {one}: no shards of its own; it holds a build-tfrecords output in a subfolder (its shards and "
        f"labels.txt): pass it as --tfrecords: --tfrecords {one}/tfrecords")


def test_a_photo_folder_or_an_analyze_report_as_data_says_what_it_is(tmp_path, monkeypatch):
    """--data given the dataset itself (photos and their COCO JSON) or analyze's report was answered "no
    labels.txt" (train) or "no val-*.tfrecord shards" (evaluate), and a user who wrote a labels.txt met the next."""
    from edge_trash.tfrecords.other_formats import not_records

    monkeypatch.chdir(tmp_path)
    for batch in ("batch_1", "batch_2"):  # the sample's layout: annotations.json, images/batch_N/*.jpg
        (tmp_path / "sample" / "images" / batch).mkdir(parents=True)
        (tmp_path / "sample" / "images" / batch / "0001.JPG").write_bytes(b"")
    (tmp_path / "sample" / "annotations.json").write_text(json.dumps({"images": [{"id": 1, "file_name":
                                                                                 "batch_1/0001.JPG"}]}))
    (tmp_path / "package.json").write_text('{"name": "not COCO"}')  # beside --data, not a dataset's
    build = ("Build records from them first: edge-trash build-tfrecords --annotations sample/annotations.json "
             "--images sample/images --out records, then pass --data records")
    for folder in ("sample", "sample/images"):  # the dataset folder, or its photo folder
        expected = f"--data {folder}: no TFRecords; it holds photos and annotations (sample/annotations.json). {build}"
        assert not_records(Path(folder), "--data") == expected
    result = _train("--data", "sample", "--out", "run")
    assert result.exit_code == 2 and "Error: --data sample: no TFRecords; it holds photos" in _said(result)
    assert build in _said(result) and not (tmp_path / "run").exists()
    from edge_trash.train.input_pipeline import split_files  # evaluate's and export's way to the records

    with pytest.raises(FileNotFoundError, match=r"^--data sample/images: no TFRecords; it holds photos and "):
        split_files("sample/images", "val")
    # analyze --tfrecords also names the way to analyze the photos as they are
    assert not_records(Path("sample"), "--tfrecords").endswith(
        "then pass --tfrecords records (or analyze the photos as they are: edge-trash analyze --annotations "
        "sample/annotations.json --images sample/images --out OUT)")
    # one folder of photos, no JSON near it
    assert not_records(Path("sample/images/batch_1"), "--data") == (
        "--data sample/images/batch_1: no TFRecords; it holds photos (export their boxes as COCO JSON). Build records "
        "from them first: edge-trash build-tfrecords --annotations ANNOTATIONS.json --images sample/images/batch_1 "
        "--out records, then pass --data records")
    # COCO's layout: annotations/instances_val2017.json beside val2017/ and train2017/
    for split, photo in (("val2017", "0001.jpg"), ("train2017", "0002.jpg")):
        (tmp_path / "coco" / split).mkdir(parents=True)
        (tmp_path / "coco" / split / photo).write_bytes(b"")
    (tmp_path / "coco" / "annotations").mkdir()
    (tmp_path / "coco" / "annotations" / "instances_val2017.json").write_text(json.dumps(
        {"info": {}, "images": [{"id": 7, "file_name": "0001.jpg"}]}))
    assert not_records(Path("coco"), "--data") == (
        "--data coco: no TFRecords; it holds photos and annotations (coco/annotations/instances_val2017.json). Build "
        "records from them first: edge-trash build-tfrecords --annotations coco/annotations/instances_val2017.json "
        "--images coco/val2017 --out records, then pass --data records")
    report = tmp_path / "an"
    report.mkdir()
    for name in ("report.md", "stats.json", "annotations_classes.png"):
        (report / name).write_text("")
    result = _train("--data", "an", "--out", "run")
    assert result.exit_code == 2 and _said(result).endswith(
        "Error: --data an: a report of `edge-trash analyze` (report.md, stats.json), not records: pass the --out "
        "folder of `edge-trash build-tfrecords`")
    (tmp_path / "empty").mkdir()
    assert not_records(tmp_path / "empty", "--data") == ""  # nothing to name: the generic answer stays


def test_a_run_or_a_bundle_given_as_data_is_named_not_read_as_records(tmp_path, monkeypatch):
    """A run's checkpoints/ckpt-300.data-00000-of-00001 was taken for a shard under another name, with advice to
    link it as train-00000-of-00001.tfrecord."""
    from edge_trash.tfrecords.other_formats import other_record_layout

    monkeypatch.chdir(tmp_path)
    records = tmp_path / "my records"
    records.mkdir()
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    for name in ("config.json", "checkpoints/ckpt-300.data-00000-of-00001", "checkpoints/ckpt-300.index"):
        (tmp_path / "run" / name).write_text("{}")
    no_data_json = ("--data run: a training run of `edge-trash train`, not records: pass the --out folder of "
                    "`edge-trash build-tfrecords`")
    assert other_record_layout(Path("run"), "--data") == no_data_json
    (tmp_path / "run" / "data.json").write_text(json.dumps({"version": 1, "data": str(records)}))
    result = _train("--data", "run", "--out", "run2")
    assert result.exit_code == 2 and _said(result).endswith(
        f"Error: --data run: a training run of `edge-trash train`, not records: pass the --out folder of "
        f"`edge-trash build-tfrecords` (this run trained on '{records}', as its data.json records)")
    assert not (tmp_path / "run2").exists()
    assert other_record_layout(Path("run"), "--tfrecords").startswith("--tfrecords run: a training run of ")
    (tmp_path / "run" / "data.json").write_text(json.dumps({"data": str(tmp_path / "gone")}))
    assert other_record_layout(Path("run"), "--data") == no_data_json  # records no longer there: not named
    (tmp_path / "bundle").mkdir()
    for name in ("manifest.json", "model_int8.tflite", "labels.txt"):
        (tmp_path / "bundle" / name).write_text("")
    assert other_record_layout(Path("bundle"), "--data") == (
        "--data bundle: an export bundle (manifest.json, its .tflite models), not records: pass the --out folder "
        "of `edge-trash build-tfrecords`")
    # records under another name still are (a sharded name without TensorFlow's '.data' before it)
    (tmp_path / "odd").mkdir()
    (tmp_path / "odd" / "litter-00000-of-00001").write_text("")
    assert "it holds TFRecords under other names: litter-00000-of-00001" in other_record_layout(Path("odd"), "--data")


def test_a_subfolder_this_user_cannot_list_is_passed_over(tmp_path, monkeypatch):
    """--data at a disk's root: its lost+found (root's, mode 0700) was a PermissionError traceback."""
    from edge_trash.tfrecords.other_formats import other_record_layout

    (tmp_path / "lost+found").mkdir()
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "a.jpg").write_bytes(b"")
    listing = Path.iterdir

    def iterdir(self):
        if self.name == "lost+found":
            raise PermissionError(13, "Permission denied", str(self))
        return listing(self)

    monkeypatch.setattr(Path, "iterdir", iterdir)
    assert other_record_layout(tmp_path, "--data") == (
        f"--data {tmp_path}: no TFRecords; it holds photos (export their boxes as COCO JSON). Build records from "
        f"them first: edge-trash build-tfrecords --annotations ANNOTATIONS.json --images {tmp_path}/photos --out "
        "records, then pass --data records")


def test_an_interrupted_train_says_how_to_go_on(tmp_path):
    from edge_trash.train.train_cli import interrupted_message

    data, out = tmp_path / "my data", tmp_path / "run"
    assert interrupted_message(data, out) == (f"train: stopped before the run began: nothing in {out} to resume; run "
                                              "the same command again")
    out.mkdir()
    (out / "config.json").write_text("{}")
    assert interrupted_message(data, out) == (f"train: stopped; {out} has no checkpoint yet (it starts over): go on "
                                              f"with edge-trash train --data '{data}' --out {out} --resume")
    (out / "checkpoints").mkdir()
    (out / "checkpoints" / "checkpoint").write_text('model_checkpoint_path: "ckpt-7"\n'
                                                    'all_model_checkpoint_paths: "ckpt-7"\n')
    assert interrupted_message(data, out).startswith(f"train: stopped; {out} keeps its checkpoint from step 7: ")
    # a resume to a new count stopped on the way goes on to that count (without --steps: the run's first one)
    assert interrupted_message(data, out, 300, "mirrored").endswith(
        f"go on with edge-trash train --data '{data}' --out {out} --resume --steps 300 --strategy mirrored")


def test_ctrl_c_in_train_prints_how_to_go_on_then_aborts(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from edge_trash.cli import cli

    def interrupted(options):
        (options.out_dir).mkdir()
        (options.out_dir / "config.json").write_text("{}")
        raise KeyboardInterrupt

    monkeypatch.setattr("edge_trash.train.trainer.train", interrupted)
    data = tmp_path / "data"
    data.mkdir()
    result = CliRunner().invoke(cli, ["train", "--data", str(data), "--out", str(tmp_path / "run"),
                                      "--config", "demo"])
    assert result.exit_code != 0
    assert (f"train: stopped; {tmp_path / 'run'} has no checkpoint yet (it starts over): go on with edge-trash train "
            f"--data {data} --out {tmp_path / 'run'} --resume") in result.stderr
