"""The command line: fast --help without TensorFlow, the whole data stage through a real subprocess."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time

from conftest import REPO

CHECK_NO_TF = """
import sys
from edge_trash.cli import cli, COMMANDS
for name in [None] + list(COMMANDS):
    args = ["--help"] if name is None else [name, "--help"]
    try:
        cli.main(args=args, standalone_mode=False)
    except SystemExit:
        pass
heavy = [m for m in ("tensorflow", "tf_keras", "official", "albumentations", "matplotlib") if m in sys.modules]
print("HEAVY=" + ",".join(heavy))
"""


def test_help_of_every_command_is_fast_and_imports_no_tensorflow():
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", CHECK_NO_TF], capture_output=True, text=True, cwd=REPO,
                          timeout=120)
    elapsed = time.monotonic() - start
    assert proc.returncode == 0, proc.stderr
    assert "HEAVY=\n" in proc.stdout, proc.stdout
    assert elapsed < 10, f"--help of all commands took {elapsed:.1f}s"


def test_sample_data_then_build_through_a_real_subprocess(tmp_path):
    exe = [sys.executable, "-m", "edge_trash"]
    proc = subprocess.run(exe + ["sample-data", "--out", str(tmp_path / "s"), "--num-images", "20"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "next: edge-trash build-tfrecords" in proc.stdout
    images = tmp_path / "s" / "images"
    entries = json.loads((tmp_path / "s" / "annotations.json").read_text())["images"]
    listed = [images / im["file_name"] for im in entries]
    size = sum(p.stat().st_size for p in listed if p.exists())
    assert f"sample-data: wrote 19 image files ({size / 1e6:.1f} MB) to {images} and " in proc.stdout  # 1 left out
    (images / "stray.bin").write_bytes(b"x" * 3_000_000)  # a file of the user's: not counted as written
    again = subprocess.run(exe + ["sample-data", "--out", str(tmp_path / "s"), "--num-images", "20"],
                           capture_output=True, text=True, timeout=300)
    assert f"sample-data: wrote 19 image files ({size / 1e6:.1f} MB) to {images} and " in again.stdout
    (images / "stray.bin").unlink()
    proc = subprocess.run(exe + ["build-tfrecords", "--annotations", str(tmp_path / "s" / "annotations.json"),
                                 "--images", str(tmp_path / "s" / "images"), "--out", str(tmp_path / "t"),
                                 "--no-progress"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "img/s" not in proc.stderr  # --no-progress (train's name for build's --quiet): no bar
    report = json.loads((tmp_path / "t" / "report.json").read_text())
    assert f"images: {report['images_written']} written, 4 skipped of 20" in proc.stdout
    assert "next: edge-trash analyze" in proc.stdout
    assert "Traceback" not in proc.stderr


def test_sample_data_counts_the_files_it_wrote_and_names_the_one_left_out_on_purpose(tmp_path):
    from click.testing import CliRunner

    from edge_trash.cli import cli

    result = CliRunner().invoke(cli, ["sample-data", "--out", str(tmp_path / "s"), "--num-images", "50"])
    assert result.exit_code == 0, result.output
    entries = json.loads((tmp_path / "s" / "annotations.json").read_text())["images"]
    files = [tmp_path / "s" / "images" / im["file_name"] for im in entries]
    written = [f for f in files if f.is_file()]
    assert len(entries) - len(written) == 1  # the planted missing photo
    assert re.fullmatch(r"sample-data: wrote 49 image files \(%.1f MB\) to .* in [0-9.]+s; on purpose \(--clean "
                        r"leaves them out\), a few are broken and the JSON lists 1 more with no file"
                        % (sum(f.stat().st_size for f in written) / 1e6), result.output.splitlines()[0])
    result = CliRunner().invoke(cli, ["sample-data", "--out", str(tmp_path / "c"), "--num-images", "20", "--clean"])
    assert re.fullmatch(r"sample-data: wrote 20 image files \([0-9.]+ MB\) to .* in [0-9.]+s",
                        result.output.splitlines()[0])


def test_sample_data_into_an_earlier_larger_run_removes_its_photos_and_clean_takes_fewer_than_20(tmp_path):
    """An earlier run's photos stayed: the build found the planted missing photo (another dataset than asked)."""
    from click.testing import CliRunner

    from edge_trash.cli import cli

    out = tmp_path / "s"
    (out / "images" / "batch_1").mkdir(parents=True)
    (out / "images" / "batch_1" / "mine.jpg").write_bytes(b"the user's")  # not a name sample-data gives
    assert CliRunner().invoke(cli, ["sample-data", "--out", str(out), "--num-images", "30", "--clean"]).exit_code == 0
    result = CliRunner().invoke(cli, ["sample-data", "--out", str(out), "--num-images", "20"])
    assert result.exit_code == 0, result.output
    assert ("a few are broken and the JSON lists 1 more with no file\nsample-data: removed 12 photos an earlier "
            f"sample-data run left in {out / 'images'} that this dataset does not list (the first, 000009.jpg)\n"
            in result.output)  # 21-30, the planted missing photo 9 and 17 (a PNG now)
    on_disk = {str(p.relative_to(out / "images")) for p in (out / "images").rglob("*") if p.is_file()}
    listed = {im["file_name"] for im in json.loads((out / "annotations.json").read_text())["images"]}
    assert on_disk == (listed - {"batch_1/000009.jpg"}) | {"batch_1/mine.jpg"}

    result = CliRunner().invoke(cli, ["sample-data", "--out", str(tmp_path / "few"), "--num-images", "5", "--clean"])
    assert result.exit_code == 0 and "wrote 5 image files" in result.output, result.output
    result = CliRunner().invoke(cli, ["sample-data", "--out", str(tmp_path / "bad"), "--num-images", "5"])
    assert result.exit_code == 2 and not (tmp_path / "bad").exists()
    assert ("Invalid value for '--num-images': 5 is under 20: the deliberately broken files take the first 20 "
            "images; give --num-images 20 or more, or --clean") in result.output


def test_sample_data_refuses_a_negative_seed_with_a_usage_error(tmp_path):
    from click.testing import CliRunner

    from edge_trash.cli import cli

    result = CliRunner().invoke(cli, ["sample-data", "--out", str(tmp_path / "s"), "--seed", "-1"])
    assert result.exit_code == 2
    assert "Invalid value for '--seed': -1 is not in the range x>=0." in result.output
    assert not (tmp_path / "s").exists()


def test_an_output_folder_that_cannot_be_made_is_one_error_not_a_traceback(tmp_path, sample_dataset):
    from click.testing import CliRunner

    from edge_trash.cli import cli

    blocker = tmp_path / "a_file"
    blocker.write_text("")
    out = blocker / "sub"  # cannot be created: its parent is a file
    for args in (["sample-data", "--num-images", "20"],
                 ["analyze", "--annotations", str(sample_dataset.annotations), "--no-plots", "--quiet"]):
        result = CliRunner().invoke(cli, args + ["--out", str(out)])
        assert result.exit_code == 1 and "Traceback" not in result.output
        assert re.fullmatch(rf"Error: cannot write {re.escape(str(out))}(/images)?: Not a directory; "
                            r"choose another --out, and run again", result.output.strip()), result.output


def test_os_error_message_tells_writing_from_reading(tmp_path):
    from edge_trash.atomic_files import os_error_message

    out = tmp_path / "bundle"
    full = OSError(28, "No space left on device", str(out / "model.tflite"))
    assert os_error_message(full, out) == (f"cannot write {out / 'model.tflite'}: No space left on device; free "
                                           "space or choose another --out, and run again")
    beside = FileNotFoundError(2, "No such file or directory", str(tmp_path / ".bundle.partial-x1"))
    assert os_error_message(beside, out).startswith(f"cannot write {tmp_path / '.bundle.partial-x1'}: ")
    missing = FileNotFoundError(2, "No such file or directory", str(tmp_path / "runs" / "weights.h5"))
    assert os_error_message(missing, out) == f"cannot read {tmp_path / 'runs' / 'weights.h5'}: No such file or directory"
    assert os_error_message(FileNotFoundError("no saved_model in runs/ssd"), out) == "no saved_model in runs/ssd"
    # A write() on a full disk names no file: the message names the output folder.
    assert os_error_message(OSError(28, "No space left on device"), out) == (
        f"cannot write into {out}: No space left on device; free space or choose another --out, and run again")
    assert os_error_message(OSError(5, "Input/output error"), out) == "[Errno 5] Input/output error"
    # A folder this user may not write to is no full disk ("free space" sent users looking for space they had).
    for code, said in ((1, "Operation not permitted"), (13, "Permission denied"), (30, "Read-only file system")):
        assert os_error_message(OSError(code, said, str(out / "report.md")), out) == (
            f"cannot write {out / 'report.md'}: {said}; choose an --out you can write to, or let this user write "
            "there, and run again")


def test_train_and_evaluate_with_an_out_that_cannot_be_made_fail_at_once(tmp_path, sample_build):
    from click.testing import CliRunner

    from edge_trash.cli import cli

    blocker = tmp_path / "a_file"
    blocker.write_text("")
    gt = tmp_path / "gt.json"
    gt.write_text(json.dumps({"images": [{"id": 1, "width": 10, "height": 10}], "annotations": [],
                              "categories": [{"id": 1, "name": "can"}]}))
    for args in (["train", "--data", str(sample_build[0]), "--out", str(blocker / "run"), "--steps", "1",
                  "--config", "demo", "--no-progress"],
                 ["evaluate", "--detections", str(gt), "--annotations", str(gt), "--out", str(blocker / "m.json")]):
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 1 and "Traceback" not in result.output, result.output
        assert re.search(rf"Error: cannot write {re.escape(str(blocker))}\S*: (Not a directory|File exists); "
                         r"choose another --out, and run again", result.output), result.output


def test_option_values_out_of_range_are_usage_errors_before_anything_runs(tmp_path):
    # --folds 1 was an error of the build (exit 1) although --help promises 2 for a value out of range, and
    # --input-size showed the range [x>=1] while 128..640 is what the model takes
    from click.testing import CliRunner

    from edge_trash.cli import cli

    ann = tmp_path / "a.json"
    ann.write_text('{"images": [], "annotations": [], "categories": []}')
    result = CliRunner().invoke(cli, ["build-tfrecords", "--annotations", str(ann), "--out", str(tmp_path / "o"),
                                      "--folds", "1"])
    assert result.exit_code == 2 and not (tmp_path / "o").exists()
    assert result.output.splitlines()[-1] == ("Error: Invalid value for '--folds': 0 (off) or at least 2, got 1: one "
                                              "fold leaves nothing to validate on")
    result = CliRunner().invoke(cli, ["train", "--data", str(tmp_path), "--out", str(tmp_path / "r"),
                                      "--input-size", "100"])
    assert result.exit_code == 2 and not (tmp_path / "r").exists()
    assert result.output.splitlines()[-1] == "Error: Invalid value for '--input-size': 100 is not in the range " \
                                             "128<=x<=640."


def test_a_missing_annotation_file_is_named_before_its_images_folder(tmp_path):
    """The images folder defaults to the file's own: '--images r: no such folder' named the wrong mistake."""
    from click.testing import CliRunner

    from edge_trash.cli import cli

    ann = tmp_path / "r" / "annotations.json"
    result = CliRunner().invoke(cli, ["build-tfrecords", "--annotations", str(ann), "--out", str(tmp_path / "o")])
    assert result.exit_code == 1 and result.output == (
        f"Error: {ann}: file not found (give the COCO annotation JSON with --annotations)\n")
    assert not (tmp_path / "o").exists()


def test_no_val_split_from_too_few_images_says_to_add_images_not_to_raise_the_fraction(tmp_path):
    """One image at the default --val-fraction 0.15: 'rebuild with --val-fraction above 0' changed nothing."""
    import json

    from click.testing import CliRunner

    from edge_trash.cli import cli
    from edge_trash.tfrecords.sample_data import write_sample_dataset

    data = write_sample_dataset(tmp_path / "s", num_images=20, seed=0, with_problems=False)
    coco = json.loads(data.annotations.read_text())
    first = coco["images"][0]
    coco["images"] = [first]
    coco["annotations"] = [a for a in coco["annotations"] if a["image_id"] == first["id"]]
    one = tmp_path / "one.json"
    one.write_text(json.dumps(coco))
    result = CliRunner().invoke(cli, ["build-tfrecords", "--annotations", str(one), "--images", str(data.images),
                                      "--out", str(tmp_path / "o"), "--quiet"])
    assert result.exit_code == 0, result.output
    assert ("warning: no val split, which `edge-trash train` needs to keep its best checkpoint: 1 image is too few "
            "to hold one out at --val-fraction 0.15: add annotated images") in result.output.splitlines()


def test_options_that_do_not_combine_are_said_before_what_the_build_would_read(tmp_path):
    from click.testing import CliRunner

    from edge_trash.cli import cli

    ann = tmp_path / "annotations.json"
    ann.write_text('{"images": [], "annotations": [], "categories": []}')
    result = CliRunner().invoke(cli, ["build-tfrecords", "--annotations", str(ann), "--out", str(tmp_path / "o"),
                                      "--val-fraction", "0.6", "--test-fraction", "0.5"])
    assert result.exit_code == 1 and result.output == (  # no "images: reading file_name entries under ..." first
        "Error: --val-fraction 0.6 + --test-fraction 0.5 leave no image to train on: their sum must be below 1\n")


def test_no_val_split_from_frames_kept_together_also_names_split_by_image():
    from edge_trash.tfrecords.build_cli import _untrainable_warning

    report = {"options": {"val_fraction": 0.15}, "images_skipped": [], "images_written": 12,
              "splits": {"train": {"images": 12, "boxes": 30, "crowd_boxes": 0}},
              "split_units": {"frames": 12, "same_files": 0, "variants": 0}}
    assert _untrainable_warning(report) == (
        "warning: no val split, which `edge-trash train` needs to keep its best checkpoint: 12 images are too few to "
        "hold one out at --val-fraction 0.15: add annotated images, or rebuild with --split-by image (frames, copies "
        "or variants of one photo now move together; val may then hold near-copies of training images)")
    report["split_units"]["frames"] = 0
    assert _untrainable_warning(report).endswith("at --val-fraction 0.15: add annotated images")
