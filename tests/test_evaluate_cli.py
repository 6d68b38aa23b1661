"""``edge-trash evaluate`` through click's CliRunner, a tiny real .tflite, and one subprocess."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from edge_trash.cli import cli

REPO = Path(__file__).resolve().parents[1]
GT = {
    "images": [{"id": 1, "width": 100, "height": 100}, {"id": 2, "width": 100, "height": 100}],
    "annotations": [
        {"id": 0, "image_id": 1, "category_id": 1, "bbox": [0, 0, 30, 30], "area": 900, "iscrowd": 0},
        {"id": 0, "image_id": 2, "category_id": 1, "bbox": [50, 50, 30, 30], "area": 900, "iscrowd": 0},
    ],
    "categories": [{"id": 1, "name": "can"}],
}
# One TP at IoU 2/3 (score 0.9), one FP (0.8), one miss: AP50 = 51/101, AP = 0.4 * 51/101.
DETS = [{"image_id": 1, "category_id": 1, "bbox": [0, 0, 30, 20], "score": 0.9},
        {"image_id": 2, "category_id": 1, "bbox": [0, 0, 20, 20], "score": 0.8}]


@pytest.fixture
def coco_files(tmp_path):
    gt, dets = tmp_path / "gt.json", tmp_path / "dets.json"
    gt.write_text(json.dumps(GT))
    dets.write_text(json.dumps(DETS))
    return gt, dets


def test_detections_mode_writes_the_hand_computed_metrics(tmp_path, coco_files):
    gt, dets = coco_files
    out = tmp_path / "eval" / "metrics.json"
    result = CliRunner().invoke(cli, ["evaluate", "--detections", str(dets), "--annotations",
                                      str(gt), "--out", str(out)])
    assert result.exit_code == 0, result.output
    metrics = json.loads(out.read_text())
    assert metrics["AP50"] == pytest.approx(51 / 101)
    assert metrics["AP"] == pytest.approx(0.4 * 51 / 101)
    assert metrics["per_class"] == {"can": pytest.approx(0.4 * 51 / 101)}
    assert metrics["num_images"] == 2 and metrics["num_detections"] == 2
    assert f"evaluate: wrote {out} ({out.stat().st_size} B) for 2 images in " in result.output  # not "and 0 more"
    assert "can" in result.output.splitlines()[1]


@pytest.mark.parametrize("args, message", [
    ([], "give --model MODEL --data TFRECORDS, or --detections"),
    (["--model", "{dets}"], "--model and --data go together"),
    (["--model", "{dets}", "--data", "{dir}", "--detections", "{dets}"], "not both"),
    (["--detections", "{dets}", "--annotations", "{gt}", "--render", "2"],
     "--render needs the images"),
])
def test_usage_errors_name_the_flags(tmp_path, coco_files, args, message):
    gt, dets = coco_files
    args = [a.format(dets=dets, gt=gt, dir=tmp_path) for a in args]
    result = CliRunner().invoke(cli, ["evaluate", *args, "--out", str(tmp_path / "m.json")])
    assert result.exit_code == 2
    assert message in result.output


def test_bad_detection_file_is_a_clean_error(tmp_path, coco_files):
    gt, _ = coco_files
    dets = tmp_path / "bad.json"
    dets.write_text(json.dumps([{"image_id": 3, "category_id": 1, "bbox": [0, 0, 1, 1], "score": 1}]))
    result = CliRunner().invoke(cli, ["evaluate", "--detections", str(dets), "--annotations",
                                      str(gt), "--out", str(tmp_path / "m.json")])
    assert result.exit_code == 1
    assert "detection #1: image_id 3 is not in the ground truth" in result.output
    assert not (tmp_path / "m.json").exists()


def _tiny_detection_tflite(path: Path) -> None:
    """A .tflite with the export contract: uint8 [1,32,32,3] in; output_0..3 = count, scores,
    classes, boxes. It always reports 1 detection (class 0, score 0.9, box .25..75) and pads
    a second row that ``count`` excludes."""
    import tensorflow as tf

    class Model(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([1, 32, 32, 3], tf.uint8, name="images")])
        def serve(self, images):
            zero = tf.reduce_mean(tf.cast(images, tf.float32)) * 0.0
            return {
                "output_0": tf.reshape(1.0 + zero, [1]),
                "output_1": tf.constant([[0.9, 0.7]]) + zero,
                "output_2": tf.constant([[0.0, 1.0]]) + zero,
                "output_3": tf.constant([[[0.25, 0.25, 0.75, 0.75], [0.0, 0.0, 0.1, 0.1]]]) + zero,
            }

    model = Model()
    saved = path.parent / "tiny_saved_model"
    tf.saved_model.save(model, str(saved), signatures={"serving_default": model.serve})
    path.write_bytes(tf.lite.TFLiteConverter.from_saved_model(str(saved)).convert())


@pytest.mark.slow
def test_model_mode_with_a_real_tflite_renders_and_round_trips(tmp_path):
    from test_input_pipeline import write_split

    box = [[0.25, 0.25, 0.75, 0.75]]
    data = tmp_path / "data"
    write_split(data, "val", images=[(48, 64, box, [1]), (40, 40, box, [1])],
                class_names=["bottle", "can"], shards=1)
    model = tmp_path / "model.tflite"
    _tiny_detection_tflite(model)
    out = tmp_path / "eval" / "metrics.json"
    dets = tmp_path / "eval" / "detections.json"
    result = CliRunner().invoke(cli, ["evaluate", "--model", str(model), "--data", str(data),
                                      "--out", str(out), "--render", "2", "--save-detections",
                                      str(dets)])
    assert result.exit_code == 0, result.output
    # a .tflite without its bundle's labels.txt: scored, but its classes cannot be checked, and it says so
    assert (f"warning: no labels.txt beside {model}, so its classes are not checked against {data / 'labels.txt'}: "
            f"a model of other classes would be scored as if they were these; copy its bundle's labels.txt to "
            f"{tmp_path}") in " ".join(result.output.split())
    metrics = json.loads(out.read_text())
    assert metrics["AP"] == pytest.approx(1.0) and metrics["num_detections"] == 2  # count obeyed
    assert metrics["split"] == "val" and metrics["model"] == str(model)
    assert metrics["confusion_matrix"]["matrix"] == [[2, 0, 0], [0, 0, 0], [0, 0, 0]]
    assert metrics["confusion_matrix"]["row_labels"] == ["bottle", "can", "background"]
    assert metrics["confusion_matrix"]["column_labels"] == ["bottle", "can", "missed"]
    for name in ("render_val_100.png", "render_val_101.png", "precision_recall.png",
                 "confusion_matrix.png"):
        png = out.parent / name
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    from PIL import Image

    drawn = np.asarray(Image.open(out.parent / "render_val_100.png").convert("RGB"))
    assert drawn.shape == (48, 64, 3)
    assert tuple(drawn[24, 16]) == (230, 40, 40)  # left edge of the predicted box (x = 16 px)
    saved = json.loads(dets.read_text())
    assert saved[0]["bbox"] == [16.0, 12.0, 32.0, 24.0] and saved[0]["category_id"] == 1

    # The saved detections and the ground truth beside them score the same through the --detections form, in a
    # real subprocess.
    gt_path = tmp_path / "eval" / "detections.ground_truth.json"
    again = tmp_path / "again.json"
    proc = subprocess.run([sys.executable, "-m", "edge_trash", "evaluate", "--detections", str(dets),
                           "--annotations", str(gt_path), "--out", str(again)],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(again.read_text())["AP"] == metrics["AP"]


class _ShapeDetector:
    """A detector whose answer depends on the image's shape (h, w): normalized boxes, 1-based classes, scores."""

    input_size = 32
    class_names = ["bottle", "can"]
    ANSWERS = {
        (48, 64): ([[0.27, 0.24, 0.77, 0.74], [0.0, 0.0, 0.2, 0.2]], [1, 2], [0.9, 0.6]),
        (40, 40): ([[0.12, 0.1, 0.45, 0.52], [0.5, 0.5, 0.9, 0.9]], [1, 1], [0.8, 0.7]),
        (64, 32): ([[0.2, 0.3, 0.62, 0.88]], [2], [0.85]),
    }

    def detect(self, image):
        boxes, classes, scores = self.ANSWERS[image.shape[:2]]
        return np.array(boxes, np.float32), np.array(classes, np.int64), np.array(scores, np.float32)


def test_saved_detections_with_the_ground_truth_beside_them_score_exactly_as_evaluate_did(tmp_path, monkeypatch):
    # --save-detections wrote boxes in pixels of the stored (shrunk) images and labels.txt ids, "reusable with
    # --detections", but nothing they pair with: against the dataset's source annotations AP was silently wrong
    from test_input_pipeline import write_split

    from edge_trash.train import evaluate as ev

    data = tmp_path / "data"
    write_split(data, "val", class_names=["bottle", "can"], shards=1, images=[
        (48, 64, [[0.25, 0.25, 0.75, 0.75]], [1]),
        (40, 40, [[0.1, 0.1, 0.5, 0.5], [0.5, 0.5, 0.9, 0.9]], [1, 2]),
        (64, 32, [[0.2, 0.3, 0.6, 0.9]], [2])])
    model = tmp_path / "model.tflite"
    model.write_bytes(b"")
    monkeypatch.setattr(ev, "load_detector", lambda path: _ShapeDetector())
    out, dets = tmp_path / "eval" / "m.json", tmp_path / "eval" / "dets.json"
    paired = tmp_path / "eval" / "dets.ground_truth.json"
    result = CliRunner().invoke(cli, ["evaluate", "--model", str(model), "--data", str(data), "--out", str(out),
                                      "--save-detections", str(dets)])
    assert result.exit_code == 0, result.output
    direct = json.loads(out.read_text())
    assert 0.1 < direct["AP"] < 0.9 and direct["num_detections"] == 5  # neither trivial nor perfect
    assert f"evaluate: wrote {out} ({out.stat().st_size} B) and 2 more files for 3 images in " in result.output
    assert result.output.splitlines()[-1] == (
        f"detections: {dets} pair with the ground truth written beside them, {paired} (boxes in pixels of the "
        "stored images, labels.txt category ids; the source annotation file has neither); score them again with: "
        f"edge-trash evaluate --detections {dets} --annotations {paired} --out metrics.json")
    gt, _ = ev.gt_from_tfrecords(data, "val")
    written = json.loads(paired.read_text())
    assert {k: written[k] for k in ("images", "annotations", "categories")} == json.loads(json.dumps(gt))
    assert written["info"]["model"] == str(model) and written["info"]["split"] == "val"

    # the pair, given back: the very same numbers, and no warning
    again = tmp_path / "again.json"
    result = CliRunner().invoke(cli, ["evaluate", "--detections", str(dets), "--annotations", str(paired),
                                      "--out", str(again)])
    assert result.exit_code == 0, result.output
    assert "warning" not in result.output
    scored = json.loads(again.read_text())
    for key in (*ev.METRIC_KEYS, "per_class", "num_images", "num_detections"):
        assert scored[key] == direct[key], key
    copy = tmp_path / "copy.json"  # a copy of the pair's ground truth is that ground truth
    copy.write_text(paired.read_text())
    result = CliRunner().invoke(cli, ["evaluate", "--detections", str(dets), "--annotations", str(copy),
                                      "--out", str(again)])
    assert result.exit_code == 0 and "warning" not in result.output
    assert json.loads(again.read_text())["AP"] == direct["AP"]

    # the source annotations (images twice as large before build-tfrecords shrank them): other AP, and a warning
    source = json.loads(json.dumps(gt))
    for image in source["images"]:
        image.update(width=image["width"] * 2, height=image["height"] * 2)
    for ann in source["annotations"]:
        ann.update(bbox=[v * 2 for v in ann["bbox"]], area=ann["area"] * 4)
    source_path = tmp_path / "annotations.json"
    source_path.write_text(json.dumps(source))
    warning = (f"warning: evaluate --save-detections wrote --detections {dets} with their ground truth beside them, "
               f"{paired} (boxes in pixels of the stored images, labels.txt category ids); --annotations "
               f"{source_path} is another, and scores against boxes of other pixels or category ids (a source "
               f"annotation file) are wrong. For the scores evaluate reported, pass --annotations {paired}")
    result = CliRunner().invoke(cli, ["evaluate", "--detections", str(dets), "--annotations", str(source_path),
                                      "--out", str(again)])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[0] == warning
    assert json.loads(again.read_text())["AP"] < direct["AP"]
    # saved again from --detections: no ground truth beside the copy (the given one is no pair of theirs)
    result = CliRunner().invoke(cli, ["evaluate", "--detections", str(dets), "--annotations", str(source_path),
                                      "--out", str(again), "--save-detections", str(tmp_path / "copied.json")])
    assert result.exit_code == 0 and (tmp_path / "copied.json").is_file(), result.output
    assert not (tmp_path / "copied.ground_truth.json").exists() and "pair with" not in result.output

    # a source file holding a box build-tfrecords dropped: the error names the file and the fix
    source["annotations"].append({"id": 9, "image_id": source["images"][0]["id"], "category_id": 1,
                                  "bbox": [float("nan"), 10.0, 20.0, 20.0]})
    source_path.write_text(json.dumps(source))  # NaN, as Python's json writes it
    result = CliRunner().invoke(cli, ["evaluate", "--detections", str(dets), "--annotations", str(source_path),
                                      "--out", str(tmp_path / "nan.json")])
    assert result.exit_code == 1
    assert result.output.splitlines() == [warning, (
        f"Error: --annotations {source_path}: annotation #5: bbox [nan, 10.0, 20.0, 20.0] is not 4 finite numbers "
        "[x, y, w, h]: fix or drop that annotation. For detections `edge-trash evaluate --save-detections` wrote, "
        "pass --annotations the .ground_truth.json file written beside them: a source annotation file is not their "
        "ground truth (build-tfrecords drops such boxes, shrinks images to --max-size and numbers the categories as "
        "labels.txt does)")]
    assert not (tmp_path / "nan.json").exists()


@pytest.mark.parametrize("save, what", [
    ("m.json", "it"), ("m", "the ground truth beside it, {dir}/m.ground_truth.json,")])
def test_saved_detections_or_their_ground_truth_may_not_overwrite_out(tmp_path, save, what):
    out = tmp_path / ("m.ground_truth.json" if save == "m" else "m.json")
    result = CliRunner().invoke(cli, ["evaluate", "--model", str(tmp_path), "--data", str(tmp_path), "--out",
                                      str(out), "--save-detections", str(tmp_path / save)])
    assert result.exit_code == 2
    assert (f"--save-detections {tmp_path / save}: {what.format(dir=tmp_path)} would overwrite the --out file; "
            "give them different names") in " ".join(result.output.split())


def _run_dir(path: Path, fold=None, trained_on=None) -> Path:
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps({"model": {}, "train": {"fold": fold}}))
    (path / "saved_model").mkdir()
    (path / "saved_model" / "saved_model.pb").write_bytes(b"")
    if trained_on is not None:
        (path / "metrics.json").write_text(json.dumps({"trained_on": trained_on}))
    return path


def test_the_split_defaults_to_the_fold_a_run_validated_on_and_notes_a_learned_one(tmp_path):
    from edge_trash.train.evaluate_cli import split_for_run

    plain = _run_dir(tmp_path / "plain", trained_on="train")
    fold = _run_dir(tmp_path / "fold2", fold=2, trained_on="fold0+fold1")
    tflite = tmp_path / "model.tflite"
    tflite.write_bytes(b"")
    assert split_for_run(tflite, None) == ("val", [])
    assert split_for_run(tflite, "train") == ("train", [])  # no run to know what it learned
    assert split_for_run(plain, None) == ("val", [])
    assert split_for_run(plain / "saved_model", "test") == ("test", [])
    split, notes = split_for_run(plain / "saved_model", "train")
    assert split == "train"
    assert notes == [f"note: {plain} was trained on train: scores on images it learned measure "
                     "memory, not how it does on new photos"]
    assert split_for_run(fold, None) == ("fold2", [
        f"note: evaluating on fold2, the fold {fold} was validated on (train --fold 2); --split "
        "chooses another"])
    split, notes = split_for_run(fold, "fold1+fold2")
    assert split == "fold1+fold2" and len(notes) == 1
    assert notes[0].startswith(f"note: {fold} was trained on fold1: ")
    # a run from before metrics.json said what it trained on: a plain run learned "train"
    old = _run_dir(tmp_path / "old")
    assert split_for_run(old, "train")[1][0].startswith(f"note: {old} was trained on train: ")
    assert split_for_run(_run_dir(tmp_path / "oldfold", fold=0), "fold1") == ("fold1", [])


def test_a_val_of_another_build_holding_images_the_run_learned_gets_a_note(tmp_path):
    # a rebuild with another seed moves photos between splits under the same names: its "val" held what the run
    # was trained on, and evaluate reported the inflated AP without a word
    from edge_trash.train.data_record import write_data_record
    from edge_trash.train.evaluate_cli import split_for_run

    run = _run_dir(tmp_path / "run", trained_on="train")
    first, rebuilt = tmp_path / "data", tmp_path / "rebuilt"
    write_data_record(run, {"version": 1, "data": str(first), "fold": None, "labels": ["can"],
                            "splits": {"train": {"split": "train", "images": ["a.jpg", "b.jpg", "c.jpg", "d.jpg",
                                                                              "e.jpg"], "shards": []},
                                       "val": {"split": "val", "images": ["f.jpg"], "shards": []}}})
    first.mkdir()
    (first / "splits.json").write_text(json.dumps({"file_names": {"train": ["a.jpg"], "val": ["f.jpg"]}}))
    rebuilt.mkdir()
    (rebuilt / "splits.json").write_text(json.dumps(
        {"file_names": {"train": ["f.jpg"], "val": ["b.jpg", "g.jpg", "d.jpg", "a.jpg", "e.jpg"]}}))
    assert split_for_run(run, None, first) == ("val", [])
    assert split_for_run(run, None, rebuilt) == ("val", [
        f"note: 4 of the 5 images in val of {rebuilt} were in the train split {run} learned from (its data.json: "
        f"--data {first}): b.jpg, d.jpg, a.jpg and 1 more. Their scores measure memory; evaluate on the data the run was "
        "trained on, or train on this build"])
    # the split named as trained on says so once; records without a listing, or a run without data.json: no note
    assert split_for_run(run, "train", rebuilt)[1] == [
        f"note: {run} was trained on train: scores on images it learned measure memory, not how it does on new photos"]
    (tmp_path / "foreign").mkdir()
    assert split_for_run(run, None, tmp_path / "foreign") == ("val", [])
    # where both list the stored pictures, those decide: another photo under a learned name (per-split folders
    # numbering their files alike) is not counted, one of the learned photos under another name is
    record = json.loads((run / "data.json").read_text())
    record["splits"]["train"]["pictures"] = ["pa", "pb", "pc", "pd", "pe"]
    write_data_record(run, record)
    (rebuilt / "splits.json").write_text(json.dumps(
        {"file_names": {"train": ["f.jpg"], "val": ["b.jpg", "g.jpg", "d.jpg", "a.jpg", "e.jpg"]},
         "pictures": {"train": ["pf"], "val": ["other b", "pc", "other d", "pa", "other e"]}}))
    assert split_for_run(run, None, rebuilt)[1] == [
        f"note: 2 of the 5 images in val of {rebuilt} were in the train split {run} learned from (its data.json: "
        f"--data {first}): g.jpg, a.jpg. Their scores measure memory; evaluate on the data the run was trained on, "
        "or train on this build"]
    (run / "data.json").unlink()
    assert split_for_run(run, None, rebuilt) == ("val", [])


def test_a_run_stopped_before_its_first_evaluation_gets_its_own_message(tmp_path):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"model": {}, "train": {"steps": 4000, "eval_every": 1000}}))
    (run / "labels.txt").write_text("can\n")
    (run / "checkpoints" / "checkpoint").write_text(
        'model_checkpoint_path: "ckpt-600"\nall_model_checkpoint_paths: "ckpt-300"\n'
        'all_model_checkpoint_paths: "ckpt-600"\n')
    data = tmp_path / "data"
    data.mkdir()
    result = CliRunner().invoke(cli, ["evaluate", "--model", str(run), "--data", str(data), "--out",
                                      str(tmp_path / "m.json")])
    assert result.exit_code == 1
    assert result.output.splitlines()[-1] == (
        f"Error: --model {run}: no model.weights.h5 yet: a run writes its weights at its first evaluation on val "
        "(every train.eval_every steps) and its latest checkpoint is from step 600; resume it until it evaluates: "
        f"edge-trash train --data DATA --out {run} --resume (DATA: the --data it was trained on)")
    (run / "checkpoints" / "checkpoint").unlink()
    result = CliRunner().invoke(cli, ["evaluate", "--model", str(run), "--data", str(data), "--out",
                                      str(tmp_path / "m.json")])
    assert "and it has saved no checkpoint; resume it" in result.output
    # a run whose data.json records its --data: the resume command names it
    from edge_trash.train.data_record import write_data_record

    write_data_record(run, {"version": 1, "data": str(tmp_path / "my data"), "fold": None, "labels": ["can"],
                            "splits": {}})
    result = CliRunner().invoke(cli, ["evaluate", "--model", str(run), "--data", str(data), "--out",
                                      str(tmp_path / "m.json")])
    assert result.output.splitlines()[-1].endswith(
        f"resume it until it evaluates: edge-trash train --data '{tmp_path / 'my data'}' --out {run} --resume")
