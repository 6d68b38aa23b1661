"""build-tfrecords on what real exports and phones produce: odd file_name paths, missing
image sizes, MPO and HEIC photos, and the CLI defaults (images beside the JSON, one worker per CPU)."""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, JpegImagePlugin

from edge_trash.tfrecords.build import BuildOptions, build_tfrecords
from edge_trash.tfrecords.build_cli import _note_kind
from edge_trash.tfrecords.image_paths import ImagePaths
from edge_trash.tfrecords.images import ImageJob, convert_image, read_displayed_size


def _read_records(path: Path):
    import tensorflow as tf

    return [tf.train.Example.FromString(r.numpy()) for r in tf.data.TFRecordDataset(str(path))]


def _examples(out: Path):
    return [ex for shard in sorted(out.glob("*.tfrecord")) for ex in _read_records(shard)]


def _jpeg(path: Path, size, color=(200, 40, 40)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path, format="JPEG", quality=95)


def _one_can_per_image(ann: Path, file_names, size=(64, 48)) -> Path:
    """A COCO file: image i+1 is ``file_names[i]`` (``size``) with one 'can' box."""
    ids = range(1, len(file_names) + 1)
    ann.write_text(json.dumps({
        "images": [{"id": i, "file_name": n, "width": size[0], "height": size[1]} for i, n in zip(ids, file_names)],
        "annotations": [{"id": i, "image_id": i, "category_id": 1, "bbox": [4, 4, 20, 20]} for i in ids],
        "categories": [{"id": 1, "name": "can"}]}))
    return ann


# ----------------------------------------------------------------------------- file_name resolution


def test_image_paths_find_files_the_way_exports_name_them(tmp_path):
    root = tmp_path / "data"
    for rel in ("batch_1/000006.jpg", "batch_2/000006.jpg", "Batch_3/IMG_1.JPG", "plain.jpg", "my photo.jpg"):
        _jpeg(root / rel, (8, 8))
    paths = ImagePaths(root)

    assert paths.resolve("plain.jpg") == (root / "plain.jpg", None)
    cases = {
        "batch_2\\000006.jpg": "batch_2/000006.jpg",  # written on Windows
        "C:\\Users\\ann\\TACO\\data\\batch_2\\000006.jpg": "batch_2/000006.jpg",  # absolute, another disk
        "/home/ann/TACO/data/batch_1/000006.jpg": "batch_1/000006.jpg",  # absolute, another machine
        "data/batch_1/000006.jpg": "batch_1/000006.jpg",  # the folder --images already names
        "batch_3/img_1.jpg": "Batch_3/IMG_1.JPG",  # case differs in folder and file
        "./images/plain.JPG": "plain.jpg",  # a folder that does not exist, then the case
        "/data/upload/my%20photo.jpg": "my photo.jpg",  # URL-escaped by a web annotation tool
        "https://b.s3.amazonaws.com/batch_1/000006.jpg?X-Amz-Signature=ab%2F": "batch_1/000006.jpg",  # signed URL
        "s3://bucket/TACO/data/batch_2/000006.jpg": "batch_2/000006.jpg",  # cloud storage
        "/data/local-files/?d=TACO/data/Batch_3/IMG_1.JPG": "Batch_3/IMG_1.JPG",  # Label Studio's local storage
        "http://localhost:8080/data/local-files/?d=photos%2Fmy%20photo.jpg": "my photo.jpg",  # ... with its host
        " plain.jpg\n": "plain.jpg",  # blanks around the name (a spreadsheet's cell)
        "http://[host/plain.jpg": "plain.jpg",  # a URL Python's parser rejects
        "plain.jpg?raw=1": "plain.jpg",  # a URL's path and query without its host
        "batch_2/000006.jpg?dl=0&x=a/b": "batch_2/000006.jpg",
    }
    for file_name, expected in cases.items():
        path, note = paths.resolve(file_name)
        assert path == root / expected, file_name
        assert note == (f"file_name {file_name!r} not found as given; read {expected!r} under the images folder")

    # The longest tail wins: the sub-folder keeps two files of the same name apart.
    assert paths.resolve("x/batch_2/000006.jpg")[0] == root / "batch_2/000006.jpg"
    # Nothing found: the plain path (reading it reports "file not found") and no note.
    assert paths.resolve("batch_9/nope.jpg") == (root / "batch_9/nope.jpg", None)


def test_photos_renamed_by_annotation_tools_are_found_under_their_original_names(tmp_path):
    # The user has the original photos and only the tool's JSON, which names the renamed uploads.
    root = tmp_path / "photos"
    for rel in ("site_a/IMG_0001.JPG", "site_a/beach.png", "can.jpg", "x/dup.jpg", "y/dup.jpg"):
        _jpeg(root / rel, (8, 8))
    paths = ImagePaths(root)
    ls = "Label Studio (it prefixes uploads with 8 hex digits and '-')"
    rf = "Roboflow (it renames 'NAME.EXT' to 'NAME_EXT.rf.<hash>.jpg')"
    cases = {
        "images\\cb0618f6-can.jpg": ("can.jpg", ls),
        "..\\..\\label-studio\\media\\upload\\4\\90fbb0c7-IMG_0001.JPG": ("site_a/IMG_0001.JPG", ls),
        "IMG_0001_JPG.rf.0123456789abcdef0123456789abcdef.jpg": ("site_a/IMG_0001.JPG", rf),
        "site_a/beach_png.rf.fedcba9876543210fedcba9876543210.jpg": ("site_a/beach.png", rf),
    }
    for file_name, (expected, tool) in cases.items():
        assert paths.resolve(file_name) == (root / expected, f"file_name {file_name!r} not found as given; read "
                                                             f"{expected!r}, its name before {tool} renamed it")
    # two originals of that name, or no tool's pattern: not found, as before
    assert paths.resolve("cb0618f6-dup.jpg")[0] == root / "cb0618f6-dup.jpg"
    assert paths.resolve("cb0618f6-dup.jpg")[1] == (
        f"2 files under the images folder have the name 'dup.jpg' it had before {ls} renamed it ('x/dup.jpg', "
        "'y/dup.jpg'): give --images as the folder of the right one")
    assert paths.resolve("cb0618g6-can.jpg") == (root / "cb0618g6-can.jpg", None)


def test_augmented_variants_are_not_drawn_on_their_original_photo(tmp_path):
    """A Roboflow export made with augmentation names each training photo several times; with only the JSON
    and the originals, every variant's boxes (for its flipped or rotated copy) would land on the original."""
    from edge_trash.tfrecords.build_cli import summarize

    for name in ("IMG_1.jpg", "IMG_2.jpg", "cb.jpg"):
        _jpeg(tmp_path / "photos" / name, (64, 48))
    h = [f"{k:032x}" for k in range(3)]
    names = [f"IMG_1_jpg.rf.{h[0]}.jpg", f"IMG_1_jpg.rf.{h[1]}.jpg", f"IMG_1_jpg.rf.{h[2]}.jpg",
             f"IMG_2_jpg.rf.{h[0]}.jpg", "cb0618f6-cb.jpg", "90fbb0c7-cb.jpg"]
    ann = _one_can_per_image(tmp_path / "ann.json", names)
    report = build_tfrecords(BuildOptions(annotations=ann, images=tmp_path / "photos", out=tmp_path / "out",
                                          val_fraction=0, test_fraction=0))
    skipped = {s["image_id"]: s["reason"] for s in report["images_skipped"]}
    assert sorted(skipped) == [1, 2, 3]  # IMG_2's single entry is only renamed; Label Studio does not augment
    assert skipped[1] == (
        "augmented variant of a photo found only under its original name: 3 image entries reach IMG_1.jpg that way, "
        "copies the tool flipped, rotated or cropped whose boxes do not fit the original; export the images with "
        f"the JSON; file_name 'IMG_1_jpg.rf.{h[0]}.jpg' not found as given; read 'IMG_1.jpg', its name before "
        "Roboflow (it renames 'NAME.EXT' to 'NAME_EXT.rf.<hash>.jpg') renamed it")
    assert report["images_written"] == 3
    assert ("skipped images by reason: 3x augmented variant of a photo found only under its original name"
            in summarize(report, tmp_path / "out", 1.0))


def test_originals_of_a_resized_export_are_told_to_use_the_exports_images(tmp_path):
    """A Roboflow export resized to 640x640 (Resize: stretch) read with the original 4:3 photos: each was skipped
    with "fix width/height in the annotation file or the image", which would draw 640x640 boxes on the photo."""
    from edge_trash.tfrecords.build import RESIZED_EXPORT_FIX

    _jpeg(tmp_path / "photos" / "IMG_1.jpg", (400, 300))
    _jpeg(tmp_path / "photos" / "IMG_2.jpg", (400, 300))  # under its own name: the plain fix stands
    name = f"IMG_1_jpg.rf.{7:032x}.jpg"
    ann = _one_can_per_image(tmp_path / "ann.json", [name, "IMG_2.jpg"], size=(640, 640))
    report = build_tfrecords(BuildOptions(annotations=ann, images=tmp_path / "photos", out=tmp_path / "out",
                                          val_fraction=0, test_fraction=0))
    skipped = {s["image_id"]: s["reason"] for s in report["images_skipped"]}
    assert skipped[1] == (
        "decoded size 400x300 does not match the JSON size 640x640 (nor its aspect ratio): read under its name "
        "before the annotation tool renamed the upload, this is the original photo, and the export resized or "
        "cropped it (Roboflow's Resize or Static Crop preprocessing): its boxes fit the export's images; give "
        f"--images as the folder of the images that came with the export; file_name {name!r} not found as given; "
        "read 'IMG_1.jpg', its name before Roboflow (it renames 'NAME.EXT' to 'NAME_EXT.rf.<hash>.jpg') renamed it")
    assert skipped[2].endswith("(nor its aspect ratio): fix width/height in the annotation file or the image")
    assert RESIZED_EXPORT_FIX not in skipped[2]


def test_a_photo_with_another_image_extension_is_found_when_it_is_the_only_one(tmp_path):
    root = tmp_path / "photos"
    for rel in ("IMG_0001.jpg", "b1/scan.png", "b2/scan.png", "b1/pano.JPEG", "notes.txt", "c/IMG_9.jpg",
                "masks/IMG_5.png", "d/two.jpg", "d/two.png"):
        _jpeg(root / rel, (8, 8))
    paths = ImagePaths(root)
    note = "the only image file beside it with that name and another extension (converted after annotation?)"
    cases = {"IMG_0001.HEIC": "IMG_0001.jpg",  # iPhone photos converted to JPEG after annotation
             "IMG_0001": "IMG_0001.jpg",  # file_name written without an extension
             "b2/scan.jpg": "b2/scan.png",  # the folder tells the two scans apart
             "b1/PANO.jpg": "b1/pano.JPEG",
             "x/c/IMG_9.png": "c/IMG_9.jpg"}  # a folder --images already names, as for any name
    for file_name, expected in cases.items():
        assert paths.resolve(file_name) == (root / expected,
                                            f"file_name {file_name!r} not found as given; read {expected!r}, {note}")
    # Not found: the two scans are in sub-folders, a text file is no image, IMG_9 is in another folder, a mask
    # of the photo's name must never stand in for it, and two images of that name leave the choice unknowable.
    for missing in ("scan.jpg", "notes.jpg", "d/IMG_9.png", "IMG_5.jpg", "d/two.webp"):
        assert paths.resolve(missing)[0] == root / missing
    # A one-channel PNG of few values beside a missing JPEG is its label mask (class ids), or a 16-bit one its depth
    # map, not the photo converted: it was read, and the boxes trained on a black picture. A grey photo (an X-ray
    # or thermal PNG of many levels, a black-and-white JPEG) still stands in.
    (root / "e").mkdir(exist_ok=True)
    ramp = np.tile(np.arange(0, 256, 2, dtype=np.uint8), (8, 1))  # 128 grey levels
    for name, picture in (("mask", Image.new("L", (8, 8))), ("palette", Image.new("P", (8, 8))),
                          ("depth", Image.new("I;16", (8, 8))), ("xray", Image.fromarray(ramp, "L")),
                          ("bw", Image.new("L", (8, 8)))):
        picture.save(root / "e" / f"{name}.{'jpg' if name == 'bw' else 'png'}")
    paths = ImagePaths(root)
    for name in ("mask", "palette", "depth"):
        assert paths.resolve(f"e/{name}.jpg") == (root / f"e/{name}.jpg", (
            f"the only image file beside it with that name, 'e/{name}.png', is a label mask or depth map (one "
            "channel, few values or 16-bit), not the photo: not read in its place"))
    assert paths.resolve("e/xray.jpg")[0] == root / "e/xray.png"
    assert paths.resolve("e/bw.HEIC")[0] == root / "e/bw.jpg"
    # photos kept flat while file_name says 'train/': the only file of its stem stands in, as a same-named one does
    assert paths.resolve("train/IMG_0001.HEIC")[0] == root / "IMG_0001.jpg"


def test_build_reads_windows_and_foreign_paths_and_says_so(tmp_path):
    root = tmp_path / "data"
    _jpeg(root / "batch_1" / "a.jpg", (64, 48))
    _jpeg(root / "batch_2" / "a.jpg", (64, 48), color=(40, 40, 200))
    ann = _one_can_per_image(root / "ann.json", ["batch_1\\a.jpg", "D:\\labels\\data\\batch_2\\A.JPG",
                                                 "batch_3/a.jpg"])
    report = build_tfrecords(BuildOptions(annotations=ann, images=root, out=tmp_path / "out",
                                          val_fraction=0, test_fraction=0))
    assert report["images_written"] == 2
    assert [s["image_id"] for s in report["images_skipped"]] == [3]
    assert report["images_skipped"][0]["reason"] == f"file not found: {root / 'batch_3/a.jpg'}"
    notes = {n["image_id"]: n["notes"] for n in report["image_notes"]}
    assert notes[1] == ["file_name 'batch_1\\\\a.jpg' not found as given; read 'batch_1/a.jpg' under the "
                        "images folder"]
    assert "read 'batch_2/a.jpg'" in notes[2][0]
    # Each record holds its own file's pixels: red from batch_1, blue from batch_2.
    colours = {}
    for ex in _examples(tmp_path / "out"):
        f = ex.features.feature
        img = np.asarray(Image.open(io.BytesIO(f["image/encoded"].bytes_list.value[0])))
        colours[int(f["image/source_id"].bytes_list.value[0])] = "red" if img[..., 0].mean() > 128 else "blue"
    assert colours == {1: "red", 2: "blue"}


def test_a_name_in_several_split_folders_is_read_from_the_annotation_files_split(tmp_path):
    root = tmp_path / "ds"
    for rel in ("train/1.jpg", "val/1.jpg", "val2017/2.jpg", "train2017/2.jpg", "trainval/3.jpg", "val/3.jpg",
                "train/4.jpg", "extra/5.jpg", "val/5.jpg", "test/6.jpg"):
        _jpeg(root / rel, (64, 48))
    paths = ImagePaths(root)
    assert paths.resolve("1.jpg")[0] == root / "1.jpg"  # no split said: two candidates, found nowhere
    assert "2 files under the images folder have its name" in paths.resolve("1.jpg")[1]
    from edge_trash.tfrecords.build import reason_kind

    assert reason_kind(f"file not found: {root / '1.jpg'}; {paths.resolve('1.jpg')[1]}") == \
        "file not found (its name is in several sub-folders)"  # the summary's count
    assert reason_kind(f"file not found: {root / '4.jpg'}; {paths.resolve('4.jpg', 'val')[1]}") == \
        "file not found (only in another split's folder)"
    assert reason_kind(f"file not found: {root / '9.jpg'}") == "file not found"
    for name, split, used in (("1.jpg", "train", "train/1.jpg"), ("1.jpg", "val", "val/1.jpg"),
                              ("2.jpg", "val", "val2017/2.jpg"), ("2.jpg", "train", "train2017/2.jpg"),
                              ("3.jpg", "val", "val/3.jpg"), ("5.jpg", "val", "val/5.jpg")):
        path, note = paths.resolve(name, split)
        assert path == root / used, (name, split)
        assert note == (f"file_name {name!r} not found as given; read {used!r}, of the 2 files of that name under "
                        f"the images folder the one in the folder of this annotation file's split ({split})")
    # in no split's folder ('trainval' says neither; 'extra' nothing): the one left when the split's is not there
    assert paths.resolve("3.jpg", "train")[0] == root / "trainval/3.jpg"
    assert paths.resolve("5.jpg", "train")[0] == root / "extra/5.jpg"
    # the only file of that name is another split's: another photo that reuses the name, not this one
    for name, split, there in (("4.jpg", "val", "'train/4.jpg'"), ("6.jpg", "train", "'test/6.jpg'")):
        path, note = paths.resolve(name, split)
        assert path == root / name
        assert note == (f"the only file of that name under the images folder ({there}) is in another split's "
                        f"folder, while this annotation file is for {split}: probably another photo of the same "
                        "name (datasets that number each split from 1 reuse names); if it is this one, write its "
                        "sub-folder into file_name")
    assert paths.resolve("4.jpg")[0] == root / "train/4.jpg"  # a file that says no split: as before
    assert paths.resolve("train/1.jpg", "val")[0] == root / "train/1.jpg"  # a folder written out is what it says
    # no folder named for the file's split: the folder names are not a split layout (a test.json of one's own)
    _jpeg(tmp_path / "own" / "training_images" / "7.jpg", (64, 48))
    assert ImagePaths(tmp_path / "own").resolve("7.jpg", "test")[0] == tmp_path / "own" / "training_images/7.jpg"


def test_coco_layout_builds_each_split_from_its_own_folder(tmp_path):
    """COCO's layout (and TrashCan's, and any dataset numbering each split from 1): the JSON files
    in ``annotations/``, the photos in ``train/`` and ``val/`` beside it, the same names in both."""
    from click.testing import CliRunner

    from edge_trash.cli import cli
    from edge_trash.tfrecords.image_paths import default_images_folder

    root = tmp_path / "ds"
    red, blue = (220, 30, 30), (30, 30, 220)
    for i in range(6):
        _jpeg(root / "train" / f"{i:06d}.jpg", (64, 48), red)
    for i in range(3):
        _jpeg(root / "val" / f"{i:06d}.jpg", (64, 48), blue)
    (root / "annotations").mkdir()
    train = _one_can_per_image(root / "annotations" / "instances_train.json", [f"{i:06d}.jpg" for i in range(6)])
    val = _one_can_per_image(root / "annotations" / "instances_val.json", [f"{i:06d}.jpg" for i in range(4)])
    assert default_images_folder(train) == (root, "the folder above annotations/, which holds only annotation "
                                                  "files, as COCO lays datasets out")
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["build-tfrecords", "--annotations", str(train), "--annotations", str(val),
                                      "--out", str(out), "--keep-splits", "--quiet", "--workers", "1"])
    assert result.exit_code == 0, result.output
    assert (f"images: reading file_name entries under {root} (the folder above annotations/, which holds only "
            "annotation files, as COCO lays datasets out); --images changes it") in result.output
    assert (f"hint: 9 images were found in the folders their file_name is relative to, below --images: give "
            f"--images {root / 'train'} --images {root / 'val'} (one per --annotations, in order) to spare the "
            "search") in result.output
    assert "skipped images by reason: 1x file not found (only in another split's folder)" in result.output
    report = json.loads((out / "report.json").read_text())
    assert report["images_folder_hint"] == {"folders": [str(root / "train"), str(root / "val")], "images": 9}
    assert report["splits"]["train"]["images"] == 6 and report["splits"]["val"]["images"] == 3
    # val's 000003.jpg exists only in train/: another photo, not read in its place
    [skipped] = report["images_skipped"]
    assert skipped["file_name"] == "000003.jpg"
    assert "('train/000003.jpg') is in another split's folder, while this annotation file is for val" in skipped["reason"]
    import tensorflow as tf

    for split, colour in (("train", red), ("val", blue)):
        for shard in sorted(out.glob(f"{split}-*.tfrecord")):
            for ex in _read_records(shard):
                pixels = tf.io.decode_jpeg(ex.features.feature["image/encoded"].bytes_list.value[0]).numpy()
                assert np.abs(pixels.reshape(-1, 3).mean(axis=0) - colour).max() < 8, split
    # the hint's --images, one per file, finds every photo where its file_name says
    again = CliRunner().invoke(cli, ["build-tfrecords", "--annotations", str(train), "--annotations", str(val),
                                     "--images", str(root / "train"), "--images", str(root / "val"),
                                     "--out", str(tmp_path / "out2"), "--keep-splits", "--quiet", "--workers", "1"])
    assert again.exit_code == 0, again.output
    assert "hint:" not in again.output and "images adjusted" not in again.output


def test_the_default_images_folder_is_the_json_folder_unless_it_holds_annotations_alone(tmp_path):
    from edge_trash.tfrecords.image_paths import default_images_folder

    coco = tmp_path / "coco" / "annotations" / "instances_val2017.json"
    coco.parent.mkdir(parents=True)
    coco.write_text("{}")
    (coco.parent / "instances_train2017.json").write_text("{}")
    assert default_images_folder(coco)[0] == tmp_path / "coco"
    with_photo = tmp_path / "flat" / "annotations" / "a.json"  # the photos sit beside the JSON
    _jpeg(with_photo.parent / "1.JPG", (8, 8))
    with_photo.write_text("{}")
    assert default_images_folder(with_photo) == (with_photo.parent, "the annotation file's folder")
    with_folder = tmp_path / "nested" / "labels" / "a.json"  # a sub-folder: possibly the photos
    (with_folder.parent / "batch_1").mkdir(parents=True)
    with_folder.write_text("{}")
    assert default_images_folder(with_folder)[0] == with_folder.parent
    taco = tmp_path / "TACO" / "data" / "annotations.json"  # not an annotations folder: its own
    taco.parent.mkdir(parents=True)
    taco.write_text("{}")
    assert default_images_folder(taco)[0] == taco.parent


# ----------------------------------------------------------------------------- sizes missing from the JSON


def _exif_rotated_jpeg(path: Path, stored_size, orientation: int) -> None:
    exif = Image.Exif()
    exif[0x0112] = orientation
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", stored_size, (90, 90, 90)).save(path, format="JPEG", exif=exif.tobytes())


def test_missing_image_sizes_are_read_from_the_files(tmp_path):
    root = tmp_path / "img"
    _jpeg(root / "a.jpg", (120, 80))
    _exif_rotated_jpeg(root / "b.jpg", (120, 80), orientation=6)  # displayed 80x120
    coco = {"images": [{"id": 1, "file_name": "a.jpg"},
                       {"id": 2, "file_name": "b.jpg", "width": None, "height": None},
                       {"id": 3, "file_name": "c.jpg", "width": 0, "height": 0},  # no such file
                       {"id": 4, "file_name": "a.jpg", "width": 120, "height": 80}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [60, 40, 100, 100]},
                            {"id": 2, "image_id": 2, "category_id": 1, "bbox": [10, 60, 60, 50]},
                            {"id": 3, "image_id": 3, "category_id": 1, "bbox": [1, 1, 5, 5]}],
            "categories": [{"id": 1, "name": "can"}]}
    ann = tmp_path / "ann.json"
    ann.write_text(json.dumps(coco))
    report = build_tfrecords(BuildOptions(annotations=ann, images=root, out=tmp_path / "out",
                                          val_fraction=0, test_fraction=0))
    assert report["image_sizes_read_from_files"] == [1, 2]
    notes = {n["image_id"]: n["notes"] for n in report["image_notes"]}
    assert notes[1][0] == "'width'/'height' are missing in the JSON: used 120x80 read from the file"
    assert notes[2][0] == "'width'/'height' are missing in the JSON: used 80x120 read from the file"
    skipped = {s["image_id"]: s["reason"] for s in report["images_skipped"]}
    assert skipped == {3: f"'width'/'height' are 0 x 0 in the JSON and the size cannot be read from the "
                          f"file: file not found: {root / 'c.jpg'}"}
    assert report["images_written"] == 3
    # The box past the image was clipped against the size read from the file.
    assert report["boxes_clipped"] == 1
    boxes = {}
    for ex in _examples(tmp_path / "out"):
        f = ex.features.feature
        coords = zip(*(f[f"image/object/bbox/{k}"].float_list.value for k in ("xmin", "ymin", "xmax", "ymax")))
        boxes[int(f["image/source_id"].bytes_list.value[0])] = [[round(v, 6) for v in c] for c in coords]
    assert boxes == {1: [[0.5, 0.5, 1.0, 1.0]], 2: [[0.125, 0.5, 0.875, round(110 / 120, 6)]], 4: []}


def test_analyze_without_images_names_the_fix_for_missing_sizes(tmp_path):
    from edge_trash.tfrecords.analyze import analyze

    root = tmp_path / "img"
    _jpeg(root / "a.jpg", (120, 80))
    ann = tmp_path / "ann.json"
    ann.write_text(json.dumps({"images": [{"id": 1, "file_name": "a.jpg"}],
                               "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 9, 9]}],
                               "categories": [{"id": 1, "name": "can"}]}))
    without = analyze(annotations=ann, out=tmp_path / "a1", plots=False)
    rejected = without["annotations"]["problems"]["images_rejected"]
    assert [r["reason"] for r in rejected] == [
        "'width'/'height' must be positive integers, got missing: fix them in the JSON, or give the images "
        "folder so they are read from the file"]
    with_images = analyze(annotations=ann, images=root, out=tmp_path / "a2", plots=False)
    problems = with_images["annotations"]["problems"]
    assert problems["images_rejected"] == [] and problems["image_sizes_read_from_files"] == [1]
    assert any(f["kind"] == "image_sizes_read_from_files" for f in with_images["flags"])


# ----------------------------------------------------------------------------- MPO and HEIC photos


def test_mpo_photos_are_decoded_at_reduced_scale(tmp_path, monkeypatch):
    """Phone JPEGs with a second frame open as MPO; they must still use the scaled decode."""
    display = Image.new("RGB", (1600, 1200), (20, 120, 20))
    display.paste((230, 20, 20), (800, 600, 1600, 1200))
    path = tmp_path / "photo.jpg"
    display.save(path, format="MPO", save_all=True, append_images=[display.resize((160, 120))], quality=95)
    assert Image.open(path).format == "MPO"

    requested = []
    original = JpegImagePlugin.JpegImageFile.draft

    def spy(self, mode, size):
        requested.append(size)
        return original(self, mode, size)

    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "draft", spy)
    result = convert_image(ImageJob(1, str(path), 1600, 1200, max_size=400))
    assert result.ok and (result.width, result.height) == (400, 300)
    assert requested == [(400, 300)]
    img = np.asarray(Image.open(io.BytesIO(result.jpeg)))
    assert img[250, 350, 0] > 200 and img[50, 50, 1] > 100  # red quadrant bottom right, green elsewhere


def test_heic_photos_convert_with_their_rotation(tmp_path):
    pytest.importorskip("pillow_heif")
    exif = Image.Exif()
    exif[0x0112] = 6  # stored 96x64, displayed 64x96
    stored = np.zeros((64, 96, 3), np.uint8)
    stored[:32, :32] = 255  # top-left of the stored frame: top-right once displayed
    path = tmp_path / "IMG_0001.HEIC"
    Image.fromarray(stored).save(path, format="HEIF", exif=exif.tobytes(), quality=95)
    assert read_displayed_size(path) == ((64, 96), "")
    result = convert_image(ImageJob(1, str(path), 64, 96))
    assert result.ok, result.reason
    img = np.asarray(Image.open(io.BytesIO(result.jpeg)))
    assert img.shape == (96, 64, 3)
    bright = np.argwhere(img.mean(axis=2) > 128)
    assert bright[:, 0].max() < 40 and bright[:, 1].min() > 24  # top right


def test_heic_without_the_plugin_says_what_to_install(tmp_path):
    path = tmp_path / "IMG_0002.HEIC"
    path.write_bytes(b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + bytes(64))
    code = ("import sys; sys.modules['pillow_heif'] = None\n"
            "from edge_trash.tfrecords.images import ImageJob, convert_image\n"
            f"print(convert_image(ImageJob(1, {str(path)!r}, 10, 10)).reason)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == (f"HEIC/HEIF photo, which Pillow cannot decode without a plug-in: {path}; pip install "
                   "pillow-heif (edge-trash then reads it; Python >= 3.10) or convert it to JPEG")


def test_unreadable_heic_with_the_plugin_is_called_corrupt(tmp_path):
    pytest.importorskip("pillow_heif")
    path = tmp_path / "broken.heic"
    path.write_bytes(b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + bytes(64))
    reason = convert_image(ImageJob(1, str(path), 10, 10)).reason
    assert reason == f"corrupt or unsupported HEIC/HEIF file (pillow-heif cannot read it): {path}"


# ----------------------------------------------------------------------------- CLI defaults


def test_cli_defaults_to_the_annotation_folder_and_every_cpu(tmp_path, monkeypatch):
    from click.testing import CliRunner

    import edge_trash.tfrecords.build as build_module
    from edge_trash.cli import cli

    root = tmp_path / "train"  # a Roboflow export: _annotations.coco.json beside the images
    _jpeg(root / "a.jpg", (64, 48))
    ann = root / "_annotations.coco.json"
    ann.write_text(json.dumps({"images": [{"id": 0, "file_name": "a.jpg", "width": 64, "height": 48}],
                               "annotations": [{"id": 0, "image_id": 0, "category_id": 1, "bbox": [1, 1, 9, 9]}],
                               "categories": [{"id": 0, "name": "trash", "supercategory": "none"},
                                              {"id": 1, "name": "can", "supercategory": "trash"}]}))
    seen = {}
    real = build_module.build_tfrecords

    def spy(options, progress=False):
        seen["workers"], seen["images"] = options.workers, options.image_dirs()
        return real(options, progress)

    monkeypatch.setattr(build_module, "build_tfrecords", spy)
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 1, 2}, raising=False)
    result = CliRunner().invoke(cli, ["build-tfrecords", "--annotations", str(ann), "--out", str(tmp_path / "out"),
                                      "--quiet", "--val-fraction", "0", "--test-fraction", "0"])
    assert result.exit_code == 0, result.output
    assert seen == {"workers": 3, "images": [root]}
    assert f"images: reading file_name entries under {root} (the annotation file's folder" in result.output
    assert (tmp_path / "out" / "labels.txt").read_text() == "can\n"


# ----------------------------------------------------------------------------- the same picture twice


def test_the_same_picture_under_two_entries_is_reported_with_its_splits(tmp_path):
    from edge_trash.tfrecords.build_cli import summarize

    root = tmp_path / "img"
    for name, colour in (("a.jpg", (200, 0, 0)), ("b.jpg", (0, 200, 0)), ("c.jpg", (0, 0, 200)),
                         ("d.jpg", (200, 200, 0))):
        _jpeg(root / name, (64, 48), colour)
    (root / "b_copy.jpg").write_bytes((root / "b.jpg").read_bytes())
    files = ["a.jpg", "a.jpg", "b.jpg", "b_copy.jpg", "c.jpg", "d.jpg"]
    coco = {"images": [{"id": i, "file_name": f, "width": 64, "height": 48} for i, f in enumerate(files, start=1)],
            "annotations": [{"id": i, "image_id": i, "category_id": 1, "bbox": [2, 2, 30, 30]} for i in range(1, 7)],
            "categories": [{"id": 1, "name": "can"}]}
    ann = tmp_path / "ann.json"
    ann.write_text(json.dumps(coco))
    out = tmp_path / "out"
    report = build_tfrecords(BuildOptions(annotations=ann, images=root, out=out, val_fraction=0.5,
                                          test_fraction=0, workers=2))
    split_of = {i: s for s, ids in json.loads((out / "splits.json").read_text())["splits"].items() for i in ids}
    groups = sorted(report["duplicate_images"], key=lambda g: g["image_ids"])
    assert [g["image_ids"] for g in groups] == [[1, 2], [3, 4]]
    assert groups[1]["file_names"] == ["b.jpg", "b_copy.jpg"]
    for g in groups:
        assert g["splits"] == sorted({split_of[i] for i in g["image_ids"]})
    leaks = sum(1 for g in groups if len(g["splits"]) > 1)
    line = [ln for ln in summarize(report, out, 1.0).splitlines() if ln.startswith("warning:")]
    expected = "warning: 2 pictures appear under more than one image entry (4 entries)"
    if leaks:
        expected += f", {leaks} of them in more than one split (held-out scores are inflated: remove the copies " \
                    "from the annotations)"
    assert line == [expected + " (see duplicate_images in report.json)"]


# ----------------------------------------------------------------------------- boxes from masks


def test_annotations_without_bbox_take_it_from_their_segmentation(tmp_path):
    from pycocotools import mask as mask_utils

    from edge_trash.tfrecords.coco import load_coco

    mask = np.zeros((48, 64), np.uint8, order="F")
    mask[10:30, 20:50] = 1  # rows 10..29, columns 20..49
    rle = mask_utils.encode(mask)
    rle["counts"] = rle["counts"].decode("ascii")
    anns = [
        {"id": 1, "image_id": 1, "category_id": 1,
         "segmentation": [[5, 6, 25, 6, 25, 16, 5, 16], [30, 2, 31, 3, 30, 4]]},
        {"id": 2, "image_id": 1, "category_id": 1, "segmentation": rle},
        {"id": 3, "image_id": 1, "category_id": 1, "segmentation": [[1, 2, 3]]},  # no polygon left
        {"id": 4, "image_id": 1, "category_id": 1, "segmentation": {"counts": "@@@", "size": "x"}},
        {"id": 5, "image_id": 1, "category_id": 1, "bbox": [1, 1, 4, 4], "segmentation": [[0, 0, 60, 0, 60, 40]]},
        # placeholders some mask-first tools write: the polygon gives the box
        {"id": 6, "image_id": 1, "category_id": 1, "bbox": [0, 0, 0, 0], "segmentation": [[2, 3, 12, 3, 12, 9]]},
        {"id": 7, "image_id": 1, "category_id": 1, "bbox": [], "segmentation": [[2, 3, 12, 3, 12, 9]]},
        {"id": 8, "image_id": 1, "category_id": 1, "bbox": [0, 0, 0, 0], "segmentation": []},  # nothing to use
        {"id": 9, "image_id": 1, "category_id": 1, "bbox": [0, 0, 0, 0], "segmentation": [[1, 2, 3]]},
        {"id": 10, "image_id": 1, "category_id": 1, "segmentation": []},  # neither a box nor a shape
        {"id": 11, "image_id": 1, "category_id": 1, "bbox": None},
    ]
    ann = tmp_path / "ann.json"
    ann.write_text(json.dumps({"images": [{"id": 1, "file_name": "a.jpg", "width": 64, "height": 48}],
                               "annotations": anns, "categories": [{"id": 1, "name": "can"}]}))
    data = load_coco(ann)
    assert [(b.source_id, (b.x, b.y, b.w, b.h)) for b in data.boxes] == [
        (1, (5.0, 2.0, 26.0, 14.0)), (2, (20.0, 10.0, 30.0, 20.0)), (5, (1.0, 1.0, 4.0, 4.0)),
        (6, (2.0, 3.0, 10.0, 6.0)), (7, (2.0, 3.0, 10.0, 6.0))]
    assert data.boxes_from_segmentation == 4
    reasons = {r.record_id: r.reason for r in data.rejected_boxes}
    assert reasons[3] == "no 'bbox', and its 'segmentation' holds no polygon or mask to take one from"
    assert reasons[4].startswith("no 'bbox', and its 'segmentation' cannot be read: ")
    assert reasons[8] == "'bbox' has zero or negative size: [0, 0, 0, 0]"
    assert reasons[9] == ("'bbox' [0, 0, 0, 0] is a placeholder, and its 'segmentation' holds no polygon or mask "
                          "to take one from")
    assert reasons[10] == reasons[11] == ("no 'bbox' [x, y, width, height] and no 'segmentation' to take one from: "
                                          "give the annotation its box in pixels")


def test_segmentations_in_the_shapes_converters_write_give_their_box(tmp_path):
    """A flat polygon, numbers as text and [x, y] pairs (labelme and shapely conversions) were dropped as
    "holds no polygon or mask" although each holds one."""
    from edge_trash.tfrecords.coco import load_coco

    shapes = {1: [10, 10, 50, 10, 50, 40],  # one flat polygon, not nested
              2: [["10", "10", "50", "10", "50", "40"]],  # numbers as text, as 'bbox' may have them
              3: [[10, 10], [50, 10], [50, 40]],  # one polygon of [x, y] pairs
              4: [[[10, 10], [50, 10], [50, 40]], [[55, 20], [60, 20], [60, 44]]],  # polygons of pairs
              5: [[1, 2], [3, 4]],  # two pairs: no polygon
              6: [["a", "10", "50", "10", "50", "40"]]}  # not a number
    anns = [{"id": k, "image_id": 1, "category_id": 1, "segmentation": seg} for k, seg in shapes.items()]
    ann = tmp_path / "ann.json"
    ann.write_text(json.dumps({"images": [{"id": 1, "file_name": "a.jpg", "width": 64, "height": 48}],
                               "annotations": anns, "categories": [{"id": 1, "name": "can"}]}))
    data = load_coco(ann)
    assert [(b.source_id, (b.x, b.y, b.w, b.h)) for b in data.boxes] == [
        (1, (10.0, 10.0, 40.0, 30.0)), (2, (10.0, 10.0, 40.0, 30.0)), (3, (10.0, 10.0, 40.0, 30.0)),
        (4, (10.0, 10.0, 50.0, 34.0))]
    assert sorted(r.record_id for r in data.rejected_boxes) == [5, 6]


def test_polygons_beside_usable_boxes_are_not_held_while_the_file_is_read(tmp_path):
    """COCO and TACO files are mostly polygon masks; the reader built them all into Python lists (6-7x the
    file size in memory: 6.4 GB for a 934 MB file) although only a box-less annotation needs its mask."""
    import random
    import tracemalloc

    from edge_trash.tfrecords.coco import load_coco

    rng = random.Random(0)
    anns = [{"id": a, "image_id": 1 + a % 100, "category_id": 1, "bbox": [a % 500, 10, 20, 30], "area": 600,
             "iscrowd": 0, "segmentation": [[round(rng.uniform(0, 600), 2) for _ in range(150)]]}
            for a in range(1, 3001)]
    anns.append({"id": 3001, "image_id": 1, "category_id": 1, "bbox": [0, 0, 0, 0],
                 "segmentation": [[2.5, 3, 12, 3, 12, 9.25]]})  # the box comes from the mask: it is kept
    ann = tmp_path / "ann.json"
    ann.write_text(json.dumps({"images": [{"id": i, "file_name": f"{i}.jpg", "width": 640, "height": 480}
                                          for i in range(1, 101)],
                               "annotations": anns, "categories": [{"id": 1, "name": "can"}]}))
    size = ann.stat().st_size
    tracemalloc.start()
    try:
        data = load_coco(ann)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len(data.boxes) == 3001 and data.boxes_from_segmentation == 1
    assert (data.boxes[0].x, data.boxes[0].y, data.boxes[0].w, data.boxes[0].h) == (1.0, 10.0, 20.0, 30.0)
    assert (data.boxes[-1].x, data.boxes[-1].y, data.boxes[-1].w, data.boxes[-1].h) == (2.5, 3.0, 9.5, 6.25)
    assert peak < 3 * size, f"peak {peak / size:.1f}x the file's {size} bytes"  # 5.3x with every polygon built


def test_a_box_too_thin_to_add_to_its_x_is_called_thin_not_outside(tmp_path):
    from edge_trash.tfrecords.coco import load_coco

    anns = [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 1e-300, 20]},
            {"id": 2, "image_id": 1, "category_id": 1, "bbox": [10, 10, 20, 1e-300]},
            {"id": 3, "image_id": 1, "category_id": 1, "bbox": [400, 10, 1e-300, 20]}]
    ann = tmp_path / "ann.json"
    ann.write_text(json.dumps({"images": [{"id": 1, "file_name": "a.jpg", "width": 320, "height": 240}],
                               "annotations": anns, "categories": [{"id": 1, "name": "can"}]}))
    reasons = {r.record_id: r.reason for r in load_coco(ann).rejected_boxes}
    assert reasons == {1: "'bbox' [10, 10, 1e-300, 20] is less than a pixel wide: too small to learn from",
                       2: "'bbox' [10, 10, 20, 1e-300] is less than a pixel high: too small to learn from",
                       3: "'bbox' [400, 10, 1e-300, 20] lies outside the 320x240 image"}


def test_ids_and_sizes_written_as_digit_strings_are_read_as_numbers(tmp_path):
    from edge_trash.tfrecords.coco import load_coco

    ann = tmp_path / "ann.json"
    ann.write_text(json.dumps({
        "images": [{"id": "7", "file_name": "a.jpg", "width": "64", "height": 48},
                   {"id": "IMG_0008", "file_name": "b.jpg", "width": 64, "height": 48}],
        "annotations": [{"id": "1", "image_id": "7", "category_id": " 2 ", "bbox": [1, 2, 10, 10]},
                        {"id": 2, "image_id": 7.0, "category_id": 2, "bbox": [3, 4, 10, 10]},
                        {"id": 3, "image_id": "IMG_0008", "category_id": 2, "bbox": [3, 4, 10, 10]}],
        "categories": [{"id": "2", "name": "can"}]}))
    data = load_coco(ann)
    # "IMG_0008" is no number: it is numbered after the largest numeric id (see the text-id test below).
    assert [(im.id, im.width, im.height) for im in data.images] == [(7, 64, 48), (8, 64, 48)]
    assert [(b.image_id, b.category_id, b.x, b.y) for b in data.boxes] == [
        (7, 2, 1.0, 2.0), (7, 2, 3.0, 4.0), (8, 2, 3.0, 4.0)]
    assert data.text_image_ids == {"IMG_0008": 8}
    assert data.rejected_images == [] and data.rejected_boxes == []


def test_analyze_reads_heic_and_mpo_photos(tmp_path):
    pytest.importorskip("pillow_heif")
    from edge_trash.tfrecords.analyze import analyze

    root = tmp_path / "img"
    root.mkdir()
    Image.new("RGB", (96, 64), (250, 250, 250)).save(root / "a.heic", format="HEIF", quality=95)
    frame = Image.new("RGB", (96, 64), (10, 10, 10))
    frame.save(root / "b.jpg", format="MPO", save_all=True, append_images=[frame.resize((48, 32))])
    ann = tmp_path / "ann.json"
    ann.write_text(json.dumps({"images": [{"id": 1, "file_name": "a.heic", "width": 96, "height": 64},
                                          {"id": 2, "file_name": "b.jpg", "width": 96, "height": 64}],
                               "annotations": [], "categories": [{"id": 1, "name": "can"}]}))
    stats = analyze(annotations=ann, images=root, out=tmp_path / "a", plots=False)
    brightness = stats["annotations"]["brightness"]
    assert brightness["unreadable"] == []
    assert [d["image_id"] for d in brightness["dark"]] == [2]


# ----------------------------------------------------------------------------- several files (Roboflow)


def _roboflow_export(root: Path) -> dict:
    """train/valid/test folders, each with _annotations.coco.json numbered from 0 and a placeholder class."""
    colours = {"bottle": (20, 200, 20), "can": (200, 20, 20), "cup": (20, 20, 200)}
    layout = {  # folder: (categories in that file's order, [(file, class of its one box)])
        "train": (["bottle", "can"], [("img_0.jpg", "bottle"), ("img_1.jpg", "can"), ("img_2.jpg", "bottle")]),
        "valid": (["can", "bottle"], [("img_0.jpg", "can"), ("img_1.jpg", "bottle")]),
        "test": (["bottle", "can", "cup"], [("img_0.jpg", "cup")]),
    }
    for folder, (names, images) in layout.items():
        cats = [{"id": 0, "name": "litter", "supercategory": "none"}]
        cats += [{"id": i, "name": n, "supercategory": "litter"} for i, n in enumerate(names, start=1)]
        cat_id = {c["name"]: c["id"] for c in cats}
        coco = {"images": [], "annotations": [], "categories": cats}
        for i, (file_name, cls) in enumerate(images):
            _jpeg(root / folder / file_name, (64, 48), colours[cls])
            coco["images"].append({"id": i, "file_name": file_name, "width": 64, "height": 48})
            coco["annotations"].append({"id": i, "image_id": i, "category_id": cat_id[cls], "bbox": [8, 8, 32, 24],
                                        "area": 768, "iscrowd": 0, "segmentation": []})
        (root / folder / "_annotations.coco.json").write_text(json.dumps(coco))
    return {folder: [cls for _, cls in images] for folder, (_, images) in layout.items()}


def test_a_roboflow_export_merges_by_class_name_and_keeps_its_splits(tmp_path):
    from click.testing import CliRunner

    from edge_trash.cli import cli

    root = tmp_path / "export"
    truth = _roboflow_export(root)
    files = [root / f / "_annotations.coco.json" for f in ("train", "valid", "test")]
    out = tmp_path / "out"
    args = ["build-tfrecords", "--out", str(out), "--quiet", "--keep-splits", "--workers", "1"]
    for f in files:
        args += ["--annotations", str(f)]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert [(s["file"], s["image_id_offset"], s["annotation_id_offset"], s["split_in_name"], s["images_dir"])
            for s in report["sources"]] == [(str(f), 10 * k, 10 * k, split, str(f.parent))
                                            for k, (f, split) in enumerate(zip(files, ("train", "val", "test")))]
    assert report["duplicate_annotation_ids"] == [] and report["images_skipped"] == []
    assert (out / "labels.txt").read_text().splitlines() == ["bottle", "can", "cup"]
    assert report["classes_unused"] == ["litter"]
    splits = json.loads((out / "splits.json").read_text())["splits"]
    assert {k: sorted(v) for k, v in splits.items()} == {"train": [0, 1, 2], "val": [10, 11], "test": [20]}
    # the export's one cup is in its test file: kept there, and the summary says the model cannot learn it
    assert report["classes_not_in_train"] == ["cup"]
    assert [c["boxes_by_split"] for c in report["classes"]] == [
        {"train": 2, "val": 1, "test": 0}, {"train": 1, "val": 1, "test": 0}, {"train": 0, "val": 0, "test": 1}]
    assert ("warning: 1 class has no box in train, so the model cannot learn it: cup (only in the given val/test "
            "files)\n") in result.output
    # Every record carries the class of its own file's category id, and its own folder's pixels.
    seen = {}
    for ex in _examples(out):
        f = ex.features.feature
        iid = int(f["image/source_id"].bytes_list.value[0])
        img = np.asarray(Image.open(io.BytesIO(f["image/encoded"].bytes_list.value[0]))).reshape(-1, 3).mean(0)
        seen[iid] = (f["image/object/class/text"].bytes_list.value[0].decode(), "rgb"[int(np.argmax(img))])
    colour = {"bottle": "g", "can": "r", "cup": "b"}
    expected = {10 * k + i: (cls, colour[cls]) for k, folder in enumerate(("train", "valid", "test"))
                for i, cls in enumerate(truth[folder])}
    assert seen == expected


def test_merged_files_get_a_new_stratified_split_without_keep_splits(tmp_path):
    root = tmp_path / "export"
    _roboflow_export(root)
    files = [root / f / "_annotations.coco.json" for f in ("train", "valid", "test")]
    report = build_tfrecords(BuildOptions(annotations=files, images=None, out=tmp_path / "out",
                                          val_fraction=0.3, test_fraction=0))
    assert report["images_written"] == 6 and report["boxes_written"] == 6
    splits = json.loads((tmp_path / "out" / "splits.json").read_text())["splits"]
    assert sorted(i for ids in splits.values() for i in ids) == [0, 1, 2, 10, 11, 20]
    assert set(splits) == {"train", "val"}
    # The summary says the dataset's own splits were not kept, and how to keep them.
    from edge_trash.tfrecords.build_cli import summarize

    lines = summarize(report, tmp_path / "out", 1.0).splitlines()
    assert lines[2] == ("note: the annotation files name their splits (train, val, test); their images were pooled "
                        "and split anew (stratified by class); --keep-splits keeps the dataset's own splits (to "
                        "compare with results published on them)")
    other = tmp_path / "extra" / "more.json"
    other.parent.mkdir()
    other.write_text(files[2].read_text())
    report = build_tfrecords(BuildOptions(annotations=[*files[:2], other], images=None, out=tmp_path / "o2",
                                          folds=2))
    assert ("note: the annotation files name their splits (train, val); their images were pooled and split into "
            "folds; to keep a dataset's own splits, give every file a split word in its name or folder and "
            "--keep-splits") in summarize(report, tmp_path / "o2", 1.0).splitlines()
    report = build_tfrecords(BuildOptions(annotations=[files[0], other], images=None, out=tmp_path / "o5"))
    assert "note: the annotation files" not in summarize(report, tmp_path / "o5", 1.0)  # only 'train' is named
    report = build_tfrecords(BuildOptions(annotations=files, images=None, out=tmp_path / "o3", keep_splits=True))
    assert "note: the annotation files" not in summarize(report, tmp_path / "o3", 1.0)
    report = build_tfrecords(BuildOptions(annotations=[other], images=None, out=tmp_path / "o4"))
    assert "note: the annotation files" not in summarize(report, tmp_path / "o4", 1.0)


def test_the_summary_says_when_records_cannot_train_and_next_names_the_train_command_they_allow(tmp_path):
    from click.testing import CliRunner

    from edge_trash.cli import cli

    root = tmp_path / "export"
    _roboflow_export(root)
    files = {f: root / f / "_annotations.coco.json" for f in ("train", "valid", "test")}

    def build(out, *args, files_=("train", "valid", "test")):
        cmd = ["build-tfrecords", "--out", str(tmp_path / out), "--workers", "1", *args]
        for f in files_:
            cmd += ["--annotations", str(files[f])]
        result = CliRunner().invoke(cli, cmd)
        assert result.exit_code == 0, result.output
        lines = result.output.splitlines()
        return lines + [line for line in lines if line.startswith("next: ")]  # lines[-1]: the next command

    lines = build("held", "--keep-splits", files_=("valid", "test"))
    assert ("warning: no training images (none of the annotation files is a train split: give one too), so "
            "`edge-trash train` cannot use these records; `edge-trash evaluate` can") in lines
    assert lines[-1] == (f"next: edge-trash analyze --annotations {files['valid']} --annotations {files['test']} "
                         f"--images {files['valid'].parent} --images {files['test'].parent} "  # the folders read
                         f"--tfrecords {tmp_path / 'held'} --out {tmp_path / 'held' / 'analysis'}")
    lines = build("noval", "--val-fraction", "0", "--test-fraction", "0")
    assert ("warning: no val split, which `edge-trash train` needs to keep its best checkpoint: rebuild with "
            "--val-fraction above 0") in lines
    assert "edge-trash train" not in lines[-1]
    lines = build("folds", "--folds", "2", "--test-fraction", "0")
    assert not [line for line in lines if line.startswith("warning: no")]
    assert lines[-1].endswith(f"  |  edge-trash train --data {tmp_path / 'folds'} --fold 0 --out runs/ssd-fold0 "
                              "(one run per fold: --fold 0 .. 1)")
    lines = build("plain", "--val-fraction", "0.3", "--test-fraction", "0")
    assert lines[-1].endswith(f"  |  edge-trash train --data {tmp_path / 'plain'} --out runs/ssd")
    lines = build("super", "--supercategories")  # Roboflow: the project name is every class's supercategory
    assert [line for line in lines if "supercategor" in line] == [
        "warning: --supercategories: every class with boxes has the supercategory 'litter' (Roboflow writes the "
        "project name there), so 3 classes became one: leave --supercategories out to train them apart"]
    assert "classes without boxes (left out): 'none'" in lines
    valid = json.loads(files["valid"].read_text())
    files["valid"].write_text(json.dumps(dict(valid, annotations=[])))  # val photos with no box
    lines = build("valempty", "--keep-splits")
    assert (f"warning: the val split holds {len(valid['images'])} images and not one box, so no AP can be measured "
            "on it and `edge-trash train` cannot choose its best checkpoint: give a val annotation file with "
            "boxes") in lines


def test_keep_splits_needs_a_split_in_each_name_and_merge_errors_name_their_file(tmp_path):
    from edge_trash.tfrecords.build import BuildError
    from edge_trash.tfrecords.coco import CocoFormatError

    root = tmp_path / "export"
    _roboflow_export(root)
    other = tmp_path / "extra" / "more.json"
    other.parent.mkdir()
    other.write_text((root / "test" / "_annotations.coco.json").read_text())
    files = [root / "train" / "_annotations.coco.json", other]
    with pytest.raises(BuildError, match=rf"--keep-splits: cannot tell the split of {other} from its name or "
                                         r"folder \(put 'train', 'valid' or 'test' in it\)"):
        build_tfrecords(BuildOptions(annotations=files, images=None, out=tmp_path / "o1", keep_splits=True))
    broken = tmp_path / "valid" / "instances_val2017.json"
    broken.parent.mkdir()
    broken.write_text(json.dumps({"images": [], "annotations": [], "categories": [{"id": 1}]}))
    with pytest.raises(CocoFormatError, match=rf"^{broken}: categories\[0\]\.name: expected a non-empty string"):
        build_tfrecords(BuildOptions(annotations=[files[0], broken], images=None, out=tmp_path / "o2"))
    with pytest.raises(BuildError, match="give one --images folder for all 2 --annotations files, or one per file"):
        build_tfrecords(BuildOptions(annotations=files, images=[root, root, root], out=tmp_path / "o3"))


def test_a_category_id_a_later_file_does_not_define_is_not_taken_from_another_file(tmp_path):
    from edge_trash.tfrecords.coco import load_coco_files

    first, second = tmp_path / "a.json", tmp_path / "b.json"
    first.write_text(json.dumps({"images": [{"id": 1, "file_name": "a.jpg", "width": 9, "height": 9}],
                                 "annotations": [], "categories": [{"id": 7, "name": "can"}]}))
    second.write_text(json.dumps({"images": [{"id": 2, "file_name": "b.jpg", "width": 9, "height": 9}],
                                  "annotations": [{"id": 1, "image_id": 2, "category_id": 7, "bbox": [1, 1, 5, 5]},
                                                  {"id": 2, "image_id": 2, "category_id": 1, "bbox": [1, 1, 5, 5]}],
                                  "categories": [{"id": 1, "name": "cup"}]}))
    data = load_coco_files([first, second])
    assert [(c.id, c.name) for c in data.categories] == [(7, "can"), (8, "cup")]
    assert [(b.source_id, b.category_id) for b in data.boxes] == [(2, 8)]
    assert [r.reason for r in data.rejected_boxes] == [
        f"unknown category_id '7 (not in the categories of {second})' (not in 'categories')"]


def test_split_names_are_read_from_files_and_folders():
    from edge_trash.tfrecords.split_names import split_in_name

    cases = {"export/train/_annotations.coco.json": "train", "export/valid/_annotations.coco.json": "val",
             "coco/instances_val2017.json": "val", "data/test.json": "test", "x/validation/a.json": "val",
             "annotations/annotations.json": None, "contest/a.json": None, "trainee/labels.json": None,
             # Supervisely's export to COCO: the split is the folder above annotations/
             "project/train/annotations/instances.json": "train", "project/val/annotations/instances.json": "val",
             "project/test/labels/x.json": "test", "project/test/other/x.json": None}
    assert {p: split_in_name(Path(p)) for p in cases} == cases


def test_a_copy_with_flattened_folders_is_read(tmp_path):
    """A Kaggle re-upload of TACO: data/batch_1_000006.jpg while the JSON says batch_1/000006.jpg."""
    for batch, colour in ((1, (200, 20, 20)), (2, (20, 20, 200))):
        _jpeg(tmp_path / "data" / f"batch_{batch}_000006.jpg", (64, 48), colour)
    ann = tmp_path / "annotations.json"
    ann.write_text(json.dumps({
        "images": [{"id": b, "file_name": f"batch_{b}/000006.jpg", "width": 64, "height": 48} for b in (1, 2)],
        "annotations": [{"id": b, "image_id": b, "category_id": 1, "bbox": [4, 4, 20, 20]} for b in (1, 2)],
        "categories": [{"id": 1, "name": "can"}]}))
    report = build_tfrecords(BuildOptions(annotations=ann, images=tmp_path / "data", out=tmp_path / "out",
                                          val_fraction=0, test_fraction=0))
    assert report["images_written"] == 2
    assert [n["notes"] for n in report["image_notes"]] == [[
        f"file_name 'batch_{b}/000006.jpg' not found as given; read 'batch_{b}_000006.jpg', its folders joined to "
        "its name with '_' (a copy with flattened folders)"] for b in (1, 2)]


def test_a_mask_of_the_same_name_does_not_make_the_photo_ambiguous(tmp_path):
    """ZeroWaste-f as released: train/labels.json, photos in train/data/, masks of the same names in
    train/sem_seg/; a name in two photo folders stays ambiguous."""
    _jpeg(tmp_path / "train" / "data" / "01_frame_000010.PNG", (64, 48), (200, 20, 20))
    _jpeg(tmp_path / "train" / "sem_seg" / "01_frame_000010.PNG", (64, 48), (1, 1, 1))
    _jpeg(tmp_path / "train" / "data" / "01_frame_000020.PNG", (64, 48), (200, 20, 20))
    _jpeg(tmp_path / "train" / "other" / "01_frame_000020.PNG", (64, 48), (1, 1, 1))
    ann = tmp_path / "train" / "labels.json"
    ann.write_text(json.dumps({
        "images": [{"id": i, "file_name": f"01_frame_0000{k}.PNG", "width": 64, "height": 48}
                   for i, k in ((1, 10), (2, 20))],
        "annotations": [{"id": i, "image_id": i, "category_id": 1, "bbox": [4, 4, 20, 20]} for i in (1, 2)],
        "categories": [{"id": 1, "name": "metal"}]}))
    report = build_tfrecords(BuildOptions(annotations=ann, images=None, out=tmp_path / "out",
                                          val_fraction=0, test_fraction=0))
    assert report["image_notes"][0]["notes"] == [
        "file_name '01_frame_000010.PNG' not found as given; read 'data/01_frame_000010.PNG', the one file of that "
        "name under the images folder outside a mask folder (not 'sem_seg/01_frame_000010.PNG')"]
    assert [s["image_id"] for s in report["images_skipped"]] == [2]
    assert "2 files under the images folder have its name" in report["images_skipped"][0]["reason"]


def test_analyze_reads_several_annotation_files_as_one(tmp_path):
    from edge_trash.tfrecords.analyze import analyze

    root = tmp_path / "export"
    _roboflow_export(root)
    files = [root / f / "_annotations.coco.json" for f in ("train", "valid", "test")]
    stats = analyze(annotations=files, images=[f.parent for f in files], out=tmp_path / "a", plots=False)
    ann = stats["annotations"]
    assert ann["images"] == 6 and ann["boxes"] == 6
    assert [s["image_id_offset"] for s in ann["sources"]] == [0, 10, 20]
    assert ann["brightness"]["unreadable"] == []
    assert {c["name"]: c["instances"] for c in ann["classes"]} == {"litter": 0, "bottle": 3, "can": 2, "cup": 1}


def test_the_summary_counts_alike_reasons_together(tmp_path):
    from edge_trash.tfrecords.build_cli import summarize

    root = tmp_path / "img"
    _jpeg(root / "a.jpg", (64, 48))
    _jpeg(root / "b.jpg", (40, 40))
    anns = [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [100, 5, 5, 5]},
            {"id": 2, "image_id": 1, "category_id": 1, "bbox": [5, 300.5, 7, 7]},
            {"id": 3, "image_id": 1, "category_id": 1, "bbox": [float("nan"), 1, 2, 2]},
            {"id": 4, "image_id": 1, "category_id": 1, "bbox": [1, 1, 20, 20]},
            {"id": 5, "image_id": 2, "category_id": 1, "bbox": [1, 1, 20, 20]},
            {"id": 6, "image_id": 3, "category_id": 1, "bbox": [1, 1, 20, 20]}]
    images = [{"id": 1, "file_name": "a.jpg", "width": 64, "height": 48},
              {"id": 2, "file_name": "b.jpg", "width": 80, "height": 30}]
    ann = tmp_path / "ann.json"
    ann.write_text(json.dumps({"images": images, "annotations": anns, "categories": [{"id": 1, "name": "can"}]}))
    report = build_tfrecords(BuildOptions(annotations=ann, images=root, out=tmp_path / "out",
                                          val_fraction=0, test_fraction=0))
    lines = summarize(report, tmp_path / "out", 1.0).splitlines()
    assert ("skipped images by reason: 1x decoded size … does not match the JSON size …; each listed in "
            "images_skipped in report.json") in lines
    assert ("dropped boxes by reason: 2x 'bbox' … lies outside the … image; 1x 'bbox' has NaN or Infinity; "
            "1x unknown image_id …; 1x its image was skipped; each listed in boxes_dropped in report.json") in lines


def test_analyze_predicts_which_size_mismatches_build_skips(tmp_path):
    from edge_trash.tfrecords.analyze import analyze

    root = tmp_path / "img"
    _jpeg(root / "ok.jpg", (120, 80))
    _jpeg(root / "half.jpg", (60, 40))  # JSON 120x80: same aspect, boxes scaled
    _jpeg(root / "square.jpg", (80, 80))  # JSON 120x80: skipped
    _exif_rotated_jpeg(root / "rot.jpg", (120, 80), orientation=6)  # JSON gives the stored 120x80
    _jpeg(root / "stripped.jpg", (80, 120))  # annotated upright through EXIF, then the tag was stripped
    names = ["ok.jpg", "half.jpg", "square.jpg", "rot.jpg", "stripped.jpg"]
    ann = tmp_path / "ann.json"
    ann.write_text(json.dumps({
        "images": [{"id": i, "file_name": n, "width": 120, "height": 80} for i, n in enumerate(names, start=1)],
        "annotations": [{"id": i, "image_id": i, "category_id": 1, "bbox": [5, 5, 30, 30]} for i in range(1, 6)],
        "categories": [{"id": 1, "name": "can"}]}))
    stats = analyze(annotations=ann, images=root, out=tmp_path / "a", plots=False)
    found = stats["annotations"]["image_sizes"]["json_mismatch"]
    mismatch = {m["image_id"]: (m["build_skips"], m["what"]) for m in found}
    assert mismatch == {
        2: (False, "decoded 60x40 but JSON says 120x80 (same aspect ratio): boxes scaled to the decoded image"),
        3: (True, "decoded size 80x80 does not match the JSON size 120x80 (nor its aspect ratio): fix width/height "
                  "in the annotation file or the image"),
        4: (False, "JSON size 120x80 matches the stored pixels, not the EXIF-rotated picture: EXIF orientation 6 "
                   "ignored"),
        5: (True, "decoded size 80x120 is the JSON size 120x80 turned a quarter turn, and the file has no EXIF "
                  "rotation: it was probably annotated while its EXIF tag turned it, and the tag was lost when the "
                  "file was re-saved or stripped; which way it turned cannot be told from the pixels: use the "
                  "original photo, or rotate this one upright to 120x80")}
    flags = {f["kind"]: f["items"] for f in stats["flags"]}
    assert flags["size_mismatch_skipped"] == [3, 5] and flags["size_mismatch_adjusted"] == [2, 4]
    report = build_tfrecords(BuildOptions(annotations=ann, images=root, out=tmp_path / "out",
                                          val_fraction=0, test_fraction=0))
    assert [(s["image_id"], s["reason"]) for s in report["images_skipped"]] == [
        (3, mismatch[3][1]), (5, mismatch[5][1])]
    notes = {n["image_id"]: n["notes"][0] for n in report["image_notes"]}
    assert notes == {2: mismatch[2][1], 4: mismatch[4][1]}


# ----------------------------------------------------------------------------- names, encodings, scale


def test_file_names_in_the_other_unicode_form_are_found(tmp_path):
    import unicodedata

    root = tmp_path / "data"
    nfd_dir, nfd_file = unicodedata.normalize("NFD", "Müll"), unicodedata.normalize("NFD", "café.jpg")
    _jpeg(root / nfd_dir / nfd_file, (8, 8))  # as unpacked from a macOS archive
    _jpeg(root / unicodedata.normalize("NFC", "crème.jpg"), (8, 8))
    paths = ImagePaths(root)

    nfc_name = unicodedata.normalize("NFC", "Müll/café.jpg")  # as a web tool or Linux writes it
    assert nfc_name != f"{nfd_dir}/{nfd_file}"
    path, note = paths.resolve(nfc_name)
    assert path == root / nfd_dir / nfd_file
    assert note == (f"file_name {nfc_name!r} not found as given; read {nfd_dir + '/' + nfd_file!r} (the same "
                    "letters, one of them in Unicode NFD form as macOS writes names) under the images folder")
    nfd_name = unicodedata.normalize("NFD", "CRÈME.JPG")  # the other way round, and the case differs
    assert paths.resolve(nfd_name)[0] == root / unicodedata.normalize("NFC", "crème.jpg")


def test_class_names_with_line_breaks_keep_labels_txt_one_class_per_line(tmp_path):
    root = tmp_path / "img"
    for name in ("a.jpg", "b.jpg", "c.jpg"):
        _jpeg(root / name, (64, 48))
    coco = {"images": [{"id": i, "file_name": n, "width": 64, "height": 48} for i, n in enumerate("abc", 1)
                       for n in [n + ".jpg"]],
            "annotations": [{"id": i, "image_id": i, "category_id": i, "bbox": [4, 4, 20, 20]} for i in (1, 2, 3)],
            "categories": [{"id": 1, "name": "glass\nbottle"}, {"id": 2, "name": " can\t(alu) "},
                           {"id": 3, "name": "paper\r\n cup\x00"}]}
    ann = tmp_path / "ann.json"
    ann.write_text(json.dumps(coco))
    out = tmp_path / "out"
    report = build_tfrecords(BuildOptions(annotations=ann, images=root, out=out, val_fraction=0, test_fraction=0))
    names = ["glass bottle", "can (alu)", "paper cup"]
    assert [c["name"] for c in report["classes"]] == names
    assert (out / "labels.txt").read_text(encoding="utf-8") == "glass bottle\ncan (alu)\npaper cup\n"
    texts = sorted(o.decode() for ex in _examples(out) for o in ex.features.feature["image/object/class/text"]
                   .bytes_list.value)
    assert texts == sorted(names)
    # A class map names them the way a person types them.
    cmap = tmp_path / "map.csv"
    cmap.write_text("glass bottle,bottle\ncan (alu),can\n\"paper\ncup\",cup\n")
    report = build_tfrecords(BuildOptions(annotations=ann, images=root, out=out, class_map=cmap,
                                          val_fraction=0, test_fraction=0))
    assert [(c["name"], c["boxes"]) for c in report["classes"]] == [("bottle", 1), ("can", 1), ("cup", 1)]


def test_classes_that_differ_only_in_case_or_spacing_are_flagged(tmp_path):
    from edge_trash.tfrecords.analyze import analyze
    from edge_trash.tfrecords.build_cli import summarize

    root = tmp_path / "img"
    for name in ("a.jpg", "b.jpg", "c.jpg", "d.jpg"):
        _jpeg(root / name, (64, 48))
    cats = [{"id": 1, "name": "Plastic bag"}, {"id": 2, "name": "plastic-bag"}, {"id": 3, "name": "can"},
            {"id": 4, "name": "can"}]  # 3 and 4: the same name twice, merged into one class
    coco = {"images": [{"id": i, "file_name": f"{n}.jpg", "width": 64, "height": 48} for i, n in enumerate("abcd", 1)],
            "annotations": [{"id": i, "image_id": i, "category_id": i, "bbox": [4, 4, 20, 20]} for i in (1, 2, 3, 4)],
            "categories": cats}
    ann = tmp_path / "ann.json"
    ann.write_text(json.dumps(coco))
    report = build_tfrecords(BuildOptions(annotations=ann, images=root, out=tmp_path / "out",
                                          val_fraction=0, test_fraction=0))
    assert [(c["name"], c["boxes"]) for c in report["classes"]] == [("Plastic bag", 1), ("plastic-bag", 1),
                                                                      ("can", 2)]
    assert report["similar_class_names"] == [["Plastic bag", "plastic-bag"]]
    assert ("warning: classes 'Plastic bag' / 'plastic-bag' differ only in case or spacing; if they are one class, "
            "merge them with a --class-map listing every class, with the rows 'plastic-bag,Plastic bag'"
            ) in summarize(report, tmp_path / "out", 1.0).splitlines()

    stats = analyze(ann, out=tmp_path / "analysis", plots=False)
    flags = [f for f in stats["flags"] if f["kind"] == "similar_class_names"]
    assert [f["items"] for f in flags] == [["Plastic bag", "plastic-bag"]]
    assert flags[0]["message"] == ("classes 'Plastic bag' / 'plastic-bag' differ only in case or spacing; if they are "
                                   "one class, merge them with a --class-map listing every class, with the rows "
                                   "'plastic-bag,Plastic bag'")


@pytest.mark.parametrize("encode", ["utf-8-sig", "utf-16", "gzip", "xz", "bzip2"])
def test_annotation_files_in_other_encodings_and_gzipped_are_read(tmp_path, encode):
    import bz2
    import gzip
    import lzma

    packers = {"gzip": (".json.gz", gzip.compress), "xz": (".json.xz", lzma.compress), "bzip2": (".json.bz2",
                                                                                                 bz2.compress)}

    root = tmp_path / "img"
    _jpeg(root / "é.jpg", (64, 48))
    text = json.dumps({"images": [{"id": 1, "file_name": "é.jpg", "width": 64, "height": 48}],
                       "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [4, 4, 20, 20]}],
                       "categories": [{"id": 1, "name": "bouteille à lait"}]}, ensure_ascii=False)
    suffix, pack = packers.get(encode, (".json", None))
    ann = tmp_path / f"ann{suffix}"  # xz and bzip2 were "cannot read the file as UTF-8 text ...; save it as UTF-8"
    ann.write_bytes(pack(text.encode("utf-8")) if pack else text.encode(encode))
    report = build_tfrecords(BuildOptions(annotations=ann, images=root, out=tmp_path / "out",
                                          val_fraction=0, test_fraction=0))
    assert (report["images_written"], report["boxes_written"]) == (1, 1)
    assert report["classes"][0]["name"] == "bouteille à lait"


def test_unreadable_annotation_bytes_name_the_file_and_the_fix(tmp_path):
    from edge_trash.tfrecords.coco import CocoFormatError, load_coco

    latin = tmp_path / "latin1.json"
    latin.write_bytes('{"images": [], "annotations": [], "categories": [{"id": 1, "name": "bouteille à"}]}'
                      .encode("latin-1"))
    with pytest.raises(CocoFormatError, match=r"latin1\.json: cannot read the file as UTF-8 text .*save it as "
                                               r"UTF-8 JSON"):
        load_coco(latin)
    cut = tmp_path / "cut.json.gz"
    import gzip

    cut.write_bytes(gzip.compress(b'{"images": []}' * 100)[:30])
    with pytest.raises(CocoFormatError, match=r"cut\.json\.gz: a gzip file that cannot be unpacked .*is the "
                                              r"download complete\?"):
        load_coco(cut)


# ----------------------------------------------------------------------------- colour profiles

# sRGB's colorants adapted to D50, as ICC matrix/TRC profiles store them.
_SRGB_RED, _SRGB_GREEN, _SRGB_BLUE = (0.4361, 0.2225, 0.0139), (0.3851, 0.7169, 0.0971), (0.1431, 0.0606, 0.7141)


def _icc_rgb_profile(name: str, red, green, blue, gamma: float = 2.2) -> bytes:
    """A minimal ICC v2 RGB matrix/TRC display profile (what phones and cameras embed)."""
    import struct

    def s15(v: float) -> bytes:
        return struct.pack(">i", round(v * 65536))

    def xyz(v) -> bytes:
        return b"XYZ \0\0\0\0" + b"".join(s15(c) for c in v)

    ascii_name = name.encode("ascii") + b"\0"
    desc = (b"desc\0\0\0\0" + struct.pack(">I", len(ascii_name)) + ascii_name + b"\0" * 8 + b"\0\0\0" + b"\0" * 67)
    curve = b"curv\0\0\0\0" + struct.pack(">IH", 1, round(gamma * 256)) + b"\0\0"
    tags = [(b"desc", desc), (b"wtpt", xyz((0.9642, 1.0, 0.8249))), (b"rXYZ", xyz(red)), (b"gXYZ", xyz(green)),
            (b"bXYZ", xyz(blue)), (b"rTRC", curve), (b"gTRC", curve), (b"bTRC", curve),
            (b"cprt", b"text\0\0\0\0no copyright\0")]
    offset, table, body = 128 + 4 + 12 * len(tags), b"", b""
    for sig, data in tags:
        data += b"\0" * (-len(data) % 4)
        table += sig + struct.pack(">II", offset + len(body), len(data))
        body += data
    size = offset + len(body)
    header = (struct.pack(">I", size) + b"lcms" + bytes([2, 0x10, 0, 0]) + b"mntrRGB XYZ " + struct.pack(">6H", 2026, 1, 1, 0, 0, 0)
              + b"acsp" + b"\0" * 24 + struct.pack(">I", 0) + s15(0.9642) + s15(1.0) + s15(0.8249) + b"\0" * 48)
    assert len(header) == 128
    return header + struct.pack(">I", len(tags)) + table + body


def test_photos_tagged_with_another_colour_profile_are_stored_as_srgb(tmp_path, monkeypatch):
    from PIL import ImageCms

    from edge_trash.tfrecords import images

    monkeypatch.setattr(images, "_transforms", {})  # count only this test's profiles

    # Red and green colorants swapped: a file whose stored (255, 0, 0) is sRGB's pure green.
    swapped = _icc_rgb_profile("Swapped RG", _SRGB_GREEN, _SRGB_RED, _SRGB_BLUE)
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    pixels = np.zeros((60, 80, 3), np.uint8)
    pixels[:, :40] = (255, 0, 0)
    pixels[:, 40:] = (0, 0, 255)
    jobs = {}
    for name, icc, size in (("tagged.jpg", swapped, 40), ("tagged_small.jpg", swapped, 640),
                            ("srgb_small.jpg", srgb, 640), ("plain_small.jpg", None, 640)):
        path = tmp_path / name
        Image.fromarray(pixels).save(path, format="JPEG", quality=95, **({"icc_profile": icc} if icc else {}))
        jobs[name] = convert_image(ImageJob(1, str(path), 80, 60, max_size=size))

    for name in ("tagged.jpg", "tagged_small.jpg"):  # shrunk, and at its own size (not passed through)
        result = jobs[name]
        assert result.notes == ["converted colours from the embedded profile 'Swapped RG' to sRGB"], name
        assert _note_kind(result.notes[0]) == "colour profile converted or ignored"
        out = np.asarray(Image.open(io.BytesIO(result.jpeg)).convert("RGB"), dtype=int)
        h, w = out.shape[:2]
        left, right = out[h // 2, w // 4], out[h // 2, 3 * w // 4]
        assert left[1] > 220 and left[0] < 40 and left[2] < 40, (name, left)  # green, as the profile says
        assert right[2] > 220 and right[0] < 40 and right[1] < 40, (name, right)  # blue stays blue
        assert "icc_profile" not in Image.open(io.BytesIO(result.jpeg)).info  # the pixels are sRGB now

    # sRGB-tagged and untagged JPEGs at their own size are stored byte for byte.
    for name in ("srgb_small.jpg", "plain_small.jpg"):
        assert jobs[name].notes == [] and jobs[name].jpeg == (tmp_path / name).read_bytes(), name
    # One transform per profile in a worker, not one per photo.
    assert sum(1 for key in images._transforms if key[1] == "RGB") == 2  # the swapped profile and sRGB


def test_a_broken_colour_profile_is_noted_and_the_photo_kept(tmp_path):
    path = tmp_path / "broken_icc.jpg"
    Image.new("RGB", (80, 60), (200, 40, 40)).save(path, format="JPEG", icc_profile=b"not a profile" * 20)
    result = convert_image(ImageJob(1, str(path), 80, 60, max_size=40))
    assert result.ok
    assert len(result.notes) == 1 and result.notes[0].startswith("embedded colour profile is unreadable (")
    assert result.notes[0].endswith("); colours used as sRGB")
    out = np.asarray(Image.open(io.BytesIO(result.jpeg)).convert("RGB"), dtype=int)
    assert abs(out[15, 20] - (200, 40, 40)).max() < 12


# ----------------------------------------------------------------------------- boxes written the wrong way


def _boxes_file(tmp_path: Path, boxes, name: str = "ann.json") -> Path:
    coco = {"images": [{"id": 1, "file_name": "a.jpg", "width": 200, "height": 150}],
            "annotations": [{"id": i, "image_id": 1, "category_id": 1, "bbox": b} for i, b in enumerate(boxes, 1)],
            "categories": [{"id": 1, "name": "can"}]}
    ann = tmp_path / name
    ann.write_text(json.dumps(coco))
    return ann


def test_boxes_written_as_corners_are_flagged_and_right_ones_are_not(tmp_path):
    from edge_trash.tfrecords.analyze import analyze
    from edge_trash.tfrecords.build_cli import summarize
    from edge_trash.tfrecords.coco import load_coco

    _jpeg(tmp_path / "a.jpg", (200, 150))
    rng = np.random.default_rng(3)
    corners = []
    for _ in range(40):  # objects spread over the image, written [x1, y1, x2, y2]
        x1, y1 = rng.uniform(0, 150), rng.uniform(0, 110)
        corners.append([round(x1, 1), round(y1, 1), round(x1 + rng.uniform(8, 45), 1),
                        round(y1 + rng.uniform(8, 35), 1)])
    as_coco = [[x1, y1, round(x2 - x1, 1), round(y2 - y1, 1)] for x1, y1, x2, y2 in corners]

    wrong, right = _boxes_file(tmp_path, corners, "wrong.json"), _boxes_file(tmp_path, as_coco, "right.json")
    assert load_coco(right).bbox_format_warning() is None
    dataset = load_coco(wrong)
    warning = dataset.bbox_format_warning()
    assert warning == (f"{dataset.boxes_clipped} of 40 boxes run past their image, yet 40 read as [x1, y1, x2, y2] "
                       "corners inside it: the file's 'bbox' is probably written as corners, not COCO's [x, y, width, "
                       "height]. Convert it (width = x2 - x1, height = y2 - y1) and run again, or every box is "
                       "trained too large")
    assert dataset.boxes_clipped >= 8  # the check needs a fifth clipped

    report = build_tfrecords(BuildOptions(annotations=wrong, images=tmp_path, out=tmp_path / "out",
                                          val_fraction=0, test_fraction=0))
    assert report["bbox_format_warning"] == warning
    assert f"warning: {warning}" in summarize(report, tmp_path / "out", 1.0).splitlines()
    stats = analyze(wrong, out=tmp_path / "analysis", plots=False)
    assert [f["message"] for f in stats["flags"] if f["kind"] == "bbox_format"] == [warning]
    assert not [f for f in analyze(right, out=tmp_path / "a2", plots=False)["flags"] if f["kind"] == "bbox_format"]


def test_few_boxes_written_as_corners_are_told_by_their_area_or_bbox_mode(tmp_path):
    """16 boxes written [x1, y1, x2, y2] in the top-left of their images, none past the edge: no warning, as the
    check needed 20 boxes and a fifth clipped; the converter's own 'area' (or Detectron2's "bbox_mode": 0) says."""
    from edge_trash.tfrecords.coco import load_coco

    rng = np.random.default_rng(5)
    corners = []
    for _ in range(16):
        x1, y1 = rng.uniform(0, 60), rng.uniform(0, 40)
        corners.append([round(x1, 1), round(y1, 1), round(x1 + rng.uniform(8, 40), 1), round(y1 + rng.uniform(8, 30), 1)])

    def with_fields(name: str, **fields) -> Path:
        path = _boxes_file(tmp_path, corners, name)
        coco = json.loads(path.read_text())
        for ann, (x1, y1, x2, y2) in zip(coco["annotations"], corners):
            ann.update({k: f(x1, y1, x2, y2) for k, f in fields.items()})
        path.write_text(json.dumps(coco))
        return path

    tail = (", not COCO's [x, y, width, height]. Convert it (width = x2 - x1, height = y2 - y1) and run again, or "
            "every box is trained too large")
    dataset = load_coco(with_fields("area.json", area=lambda x1, y1, x2, y2: round((x2 - x1) * (y2 - y1), 2)))
    assert dataset.boxes_clipped == 0 and dataset.bbox_format_warning() == (
        "16 of 16 boxes have an 'area' of (x2 - x1) x (y2 - y1) with their 4 numbers read as [x1, y1, x2, y2] "
        "corners, not width x height: the file's 'bbox' is probably written as corners" + tail)
    assert load_coco(with_fields("mode.json", bbox_mode=lambda *_: 0)).bbox_format_warning() == (
        "16 of 16 annotations say \"bbox_mode\": 0, Detectron2's XYXY_ABS: their 'bbox' is written as [x1, y1, x2, "
        "y2] corners" + tail)
    # the same numbers as COCO boxes whose area is width x height, or a polygon's, or Detectron2's XYWH_ABS: no word
    for name, fields in (("size.json", {"area": lambda x1, y1, x2, y2: x2 * y2}),
                         ("polygon.json", {"area": lambda x1, y1, x2, y2: round(0.7 * x2 * y2, 1)}),
                         ("xywh.json", {"bbox_mode": lambda *_: 1}), ("none.json", {})):
        assert load_coco(with_fields(name, **fields)).bbox_format_warning() is None, name


def test_normalised_boxes_get_their_own_reason_and_numbers_as_text_are_read(tmp_path):
    from edge_trash.tfrecords.coco import load_coco

    from edge_trash.tfrecords.analyze import annotation_problems
    from edge_trash.tfrecords.build import reasons_by_kind

    # Azure ML's export: normalised boxes, one of them the whole photo ([0, 0, 1, 1] was kept as a 1 px box)
    dataset = load_coco(_boxes_file(tmp_path, [[0.1, 0.2, 0.3, 0.25], ["12.5", "20", "30", " 40 "], ["a", 1, 2, 3],
                                               [True, 1, 2, 3], [0.0, 0.0, 1.0, 1.0], [90, 100, -80, -85]]))
    assert [(b.x, b.y, b.w, b.h) for b in dataset.boxes] == [(12.5, 20.0, 30.0, 40.0)]
    reasons = [r.reason for r in dataset.rejected_boxes]
    assert reasons == [
        "'bbox' [0.1, 0.2, 0.3, 0.25] looks normalised to 0..1: COCO boxes are in pixels (multiply x and width by "
        "the image width 200, y and height by its height 150)",
        "'bbox' values must be numbers, got ['a', 1, 2, 3]",
        "'bbox' values must be numbers, got [True, 1, 2, 3]",
        "'bbox' [0.0, 0.0, 1.0, 1.0] looks normalised to 0..1: COCO boxes are in pixels (multiply x and width by "
        "the image width 200, y and height by its height 150)",
        "'bbox' has zero or negative size: [90, 100, -80, -85]; drawn from its right or bottom edge? COCO's form of "
        "it is [x + width, y + height, -width, -height] with the negative ones"]
    # the summary's kinds keep "0..1" (it read "…..…"), analyze names them (it called them malformed)
    assert reasons_by_kind(reasons) == ("2x 'bbox' … looks normalised to 0..1; 2x 'bbox' values must be numbers; "
                                        "1x 'bbox' has zero or negative size")
    assert annotation_problems(dataset)["boxes_rejected_by_kind"]["normalised"] == 2


def test_bare_file_names_are_found_in_sub_folders_when_unambiguous(tmp_path):
    from edge_trash.tfrecords.analyze import analyze

    root = tmp_path / "data"
    _jpeg(root / "batch_1" / "IMG_0001.jpg", (64, 48))
    _jpeg(root / "batch_2" / "deep" / "IMG_0002.JPG", (64, 48), color=(40, 40, 200))
    _jpeg(root / "batch_1" / "000006.jpg", (64, 48))
    _jpeg(root / "batch_2" / "000006.jpg", (64, 48))
    paths = ImagePaths(root)
    assert paths.resolve("IMG_0001.jpg") == (root / "batch_1/IMG_0001.jpg", (
        "file_name 'IMG_0001.jpg' not found as given; read 'batch_1/IMG_0001.jpg', the only file of that name "
        "under the images folder"))
    assert paths.resolve("img_0002.jpg")[0] == root / "batch_2/deep/IMG_0002.JPG"
    assert paths.resolve("000006.jpg") == (root / "000006.jpg", (
        "2 files under the images folder have its name ('batch_1/000006.jpg', 'batch_2/000006.jpg'): write the "
        "sub-folder into file_name, or give --images as the folder it is relative to"))
    # A folder in file_name is never swapped for another folder's file of the same name.
    assert paths.resolve("batch_9/IMG_0001.jpg") == (root / "batch_9/IMG_0001.jpg", None)
    assert paths.resolve("nothing.jpg") == (root / "nothing.jpg", None)

    ann = _one_can_per_image(tmp_path / "ann.json", ["IMG_0001.jpg", "000006.jpg"])
    report = build_tfrecords(BuildOptions(annotations=ann, images=root, out=tmp_path / "out",
                                          val_fraction=0, test_fraction=0))
    assert report["images_written"] == 1
    [skipped] = report["images_skipped"]
    assert skipped["reason"] == (f"file not found: {root / '000006.jpg'}; 2 files under the images folder have its "
                                 "name ('batch_1/000006.jpg', 'batch_2/000006.jpg'): write the sub-folder into "
                                 "file_name, or give --images as the folder it is relative to")
    stats = analyze(ann, root, out=tmp_path / "analysis", plots=False)  # analyze says the same
    assert [u["reason"] for u in stats["annotations"]["brightness"]["unreadable"]] == [skipped["reason"]]


def test_the_name_search_stops_at_its_limit_and_says_so(tmp_path, monkeypatch):
    from edge_trash.tfrecords import image_paths

    monkeypatch.setattr(image_paths, "TREE_INDEX_LIMIT", 3)
    for i in range(6):
        _jpeg(tmp_path / f"d{i}" / f"{i}.jpg", (8, 8))
    path, note = ImagePaths(tmp_path).resolve("5.jpg")
    assert path == tmp_path / "5.jpg"
    assert note == ("only the first 3 files under the images folder were searched by name: is --images the "
                    "dataset's folder?")


def test_names_with_folders_are_found_below_an_images_folder_given_too_high(tmp_path):
    # TACO's layout with --images at the dataset root instead of data/: file_name "batch_1/000006.jpg".
    root = tmp_path / "TACO"
    _jpeg(root / "data" / "batch_1" / "000006.jpg", (64, 48))
    _jpeg(root / "data" / "batch_2" / "000006.jpg", (64, 48))
    _jpeg(root / "old" / "000007.jpg", (64, 48))
    _jpeg(root / "a" / "batch_3" / "000008.jpg", (64, 48))
    _jpeg(root / "b" / "batch_3" / "000008.jpg", (64, 48))
    _jpeg(root / "x" / "data" / "batch_4" / "000009.jpg", (64, 48))
    _jpeg(root / "y" / "batch_4" / "000009.jpg", (64, 48))
    paths = ImagePaths(root)
    assert paths.resolve("batch_2/000006.jpg") == (root / "data/batch_2/000006.jpg", (
        "file_name 'batch_2/000006.jpg' not found as given; read 'data/batch_2/000006.jpg', the only file under the "
        "images folder whose path ends in 'batch_2/000006.jpg': --images is probably a folder above the one "
        "file_name is relative to"))
    assert paths.resolve("BATCH_1\\000006.JPG")[0] == root / "data/batch_1/000006.jpg"  # Windows, other case
    # The innermost folder must match: batch_9/000006.jpg and new/000007.jpg are other photos.
    assert paths.resolve("batch_9/000006.jpg") == (root / "batch_9/000006.jpg", None)
    assert paths.resolve("new/000007.jpg") == (root / "new/000007.jpg", None)
    # Two equally good matches: neither is guessed.
    assert paths.resolve("batch_3/000008.jpg") == (root / "batch_3/000008.jpg", (
        "2 files under the images folder end in 'batch_3/000008.jpg' ('a/batch_3/000008.jpg', "
        "'b/batch_3/000008.jpg'): write the sub-folder into file_name, or give --images as the folder it is "
        "relative to"))
    # The file that matches more of the given folders wins.
    assert paths.resolve("/home/ann/data/batch_4/000009.jpg")[0] == root / "x/data/batch_4/000009.jpg"
    # Another machine's absolute path whose folders are nowhere here: found by its name when that is unique (it was
    # "file not found" unless its last folder happened to exist under --images); a relative one still is not.
    _jpeg(root / "z" / "only_one.jpg", (64, 48))
    paths = ImagePaths(root)  # its index of names is built once
    for absolute in ("/home/someone/photos/only_one.jpg", "C:\\Users\\Ann\\Pictures\\only_one.jpg"):
        assert paths.resolve(absolute) == (root / "z/only_one.jpg", (
            f"file_name {absolute!r} not found as given; read 'z/only_one.jpg', the only file of that name under the "
            "images folder"))
    assert paths.resolve("photos/only_one.jpg") == (root / "photos/only_one.jpg", None)
    assert paths.resolve("/home/someone/photos/000006.jpg")[1].startswith("2 files under the images folder have "
                                                                          "its name")

    assert paths.folder_above("batch_2/000006.jpg", root / "data/batch_2/000006.jpg") == root / "data"
    assert paths.folder_above("000006.jpg", root / "data/batch_2/000006.jpg") == root / "data/batch_2"
    assert paths.folder_above("batch_2/000006.jpg", root / "batch_2/000006.jpg") is None  # found where it says
    assert paths.folder_above("img.jpg", root / "data/batch_2/000006.jpg") is None  # another name

    from edge_trash.tfrecords.build_cli import summarize

    ann = _one_can_per_image(tmp_path / "ann.json", ["batch_1/000006.jpg", "batch_2/000006.jpg", "old/000007.jpg"])
    report = build_tfrecords(BuildOptions(annotations=ann, images=root, out=tmp_path / "out",
                                          val_fraction=0, test_fraction=0))
    assert (report["images_written"], report["images_skipped"]) == (3, [])
    assert report["images_folder_hint"] == {"folders": [str(root / "data")], "images": 2}
    assert (f"hint: 2 images were found under {root / 'data'}, the folder their file_name is relative to: give "
            f"--images {root / 'data'} to spare the search") in summarize(report, tmp_path, 1.0)
    plain = _one_can_per_image(tmp_path / "ann2.json", ["old/000007.jpg"])
    report = build_tfrecords(BuildOptions(annotations=plain, images=root, out=tmp_path / "out2",
                                          val_fraction=0, test_fraction=0))
    assert report["images_folder_hint"] is None  # every image found where its file_name says


def test_a_missing_photo_is_never_read_from_another_photo_of_its_name(tmp_path):
    # An audit found three ways a missing file read another photo under the entry's boxes: a name with a folder fell
    # back to a top-level file of its name while another folder held one too; another machine's absolute path read
    # the only file of its name in another batch (TACO numbers each batch_N/ from 1: a partial download); and a
    # date-prefixed name ('20230115-IMG_0001.jpg', 8 digits are 8 hex digits) was taken for a Label Studio upload
    # and its "original" read from another day's folder.
    from edge_trash.tfrecords.build_cli import summarize

    root = tmp_path / "data"
    colors = {"000001.jpg": (250, 0, 0), "batch_2/000001.jpg": (0, 250, 0), "batch_2/000006.jpg": (0, 0, 250),
              "day1/IMG_0001.jpg": (250, 250, 0), "z/only_one.jpg": (0, 250, 250)}
    for rel, color in colors.items():
        _jpeg(root / rel, (64, 48), color)
    paths = ImagePaths(root)
    # a bare top-level name stands for a name with folders only when no other file has its name
    assert paths.resolve("batch_1/000001.jpg") == (root / "batch_1/000001.jpg", (
        "'000001.jpg' at the top of the images folder has its name, and so does 'batch_2/000001.jpg': which one it "
        "means is unknowable; write its path into file_name"))
    _jpeg(root / "top_only.jpg", (64, 48))
    assert paths.resolve("batch_1/top_only.jpg")[0] == root / "top_only.jpg"  # unique: read, with its note
    assert paths.resolve("batch_1/only_one.jpg") == (root / "batch_1/only_one.jpg", None)  # never another folder's
    # ... or when the folder it drops is the images folder itself
    _jpeg(tmp_path / "images" / "0001.jpg", (64, 48))
    _jpeg(tmp_path / "images" / "sub" / "0001.jpg", (64, 48))
    assert ImagePaths(tmp_path / "images").resolve("images/0001.jpg")[0] == tmp_path / "images/0001.jpg"
    # the date prefix is no upload's; a real one looks for the original in the entry's own folder
    assert paths.resolve("day2/20230115-IMG_0001.jpg") == (root / "day2/20230115-IMG_0001.jpg", None)
    assert paths.resolve("day2/cb0618f6-IMG_0001.jpg") == (root / "day2/cb0618f6-IMG_0001.jpg", None)
    assert paths.resolve("day1/cb0618f6-IMG_0001.jpg")[0] == root / "day1/IMG_0001.jpg"

    names = ["000001.jpg", "batch_2/000001.jpg", "batch_2/000006.jpg", "batch_1/000001.jpg",
             "/home/alice/TACO/data/batch_1/000006.jpg", "/home/alice/photos/only_one.jpg", "day1/IMG_0001.jpg",
             "cb0618f6-IMG_0001.jpg"]
    ann = _one_can_per_image(tmp_path / "ann.json", names)
    report = build_tfrecords(BuildOptions(annotations=ann, images=root, out=tmp_path / "out", val_fraction=0,
                                          test_fraction=0))
    skipped = {s["file_name"]: s["reason"] for s in report["images_skipped"]}
    assert skipped == {
        "batch_1/000001.jpg": (
            f"file not found: {root / 'batch_1/000001.jpg'}; '000001.jpg' at the top of the images folder has its "
            "name, and so does 'batch_2/000001.jpg': which one it means is unknowable; write its path into "
            "file_name"),
        "/home/alice/TACO/data/batch_1/000006.jpg": (
            "file not found: /home/alice/TACO/data/batch_1/000006.jpg; the one file of its name found, "
            "'batch_2/000006.jpg', is the photo of image 3 ('batch_2/000006.jpg'): probably another photo of the "
            "same name (or this photo listed twice: then join its boxes to that entry); if it is this one, write its path "
            "into file_name"),
        "cb0618f6-IMG_0001.jpg": (  # a Label Studio upload whose original another entry names
            f"file not found: {root / 'cb0618f6-IMG_0001.jpg'}; the one file of its name found, 'day1/IMG_0001.jpg', is "
            "the photo of image 7 ('day1/IMG_0001.jpg'): probably another photo of the same name (or this photo "
            "listed twice: then join its boxes to that entry); if it is this one, write its path into file_name")}
    assert report["images_written"] == 5  # the top-level 000001.jpg, batch_2's two, only_one.jpg, day1's
    assert "file not found (only another photo of that name)" in summarize(report, tmp_path, 1.0)
    # Without the entry that names it, a batch_2/ file is still another batch's photo: the annotation file names
    # batch_2/ for other photos.
    ann = _one_can_per_image(tmp_path / "ann2.json", ["batch_2/000001.jpg", "/home/alice/TACO/data/batch_1/000006.jpg"])
    report = build_tfrecords(BuildOptions(annotations=ann, images=root, out=tmp_path / "out2", val_fraction=0,
                                          test_fraction=0))
    assert [s["reason"].split("; ")[1] for s in report["images_skipped"]] == [
        "the one file of its name found, 'batch_2/000006.jpg', is in 'batch_2/', a folder the annotation file "
        "names for other photos (datasets number the photos of each folder from 1): probably another photo of "
        "the same name"]
    # analyze leaves out the same ones
    from edge_trash.tfrecords.analyze import analyze

    stats = analyze(annotations=[ann], images=[root], out=tmp_path / "an", progress=False)
    assert [u["reason"] for u in stats["annotations"]["brightness"]["unreadable"]] == [
        s["reason"] for s in report["images_skipped"]]
    # Photos kept flat, the JSON naming train/0001.jpg and val/0001.jpg: both read the one 0001.jpg.
    flat = tmp_path / "flat"
    _jpeg(flat / "0001.jpg", (64, 48))
    _jpeg(flat / "0002.jpg", (64, 48), (0, 0, 200))
    ann = _one_can_per_image(tmp_path / "ann3.json", ["train/0001.jpg", "val/0001.jpg", "train/0002.jpg"])
    report = build_tfrecords(BuildOptions(annotations=ann, images=flat, out=tmp_path / "out3", val_fraction=0,
                                          test_fraction=0))
    assert report["images_written"] == 1  # train/0002.jpg, the only file of its name
    assert [s["reason"] for s in report["images_skipped"]] == [
        f"file not found: {flat / name}; 2 entries in 2 folders ('train/0001.jpg', 'val/0001.jpg') reach only "
        "'0001.jpg', the one file of their name: at most one is that photo, probably another photo of the same name "
        "for the rest; write each one's path into its file_name" for name in ("train/0001.jpg", "val/0001.jpg")]


def test_a_file_name_out_of_the_images_folder_is_read_there_unless_a_copy_with_its_folder_is_in_it(tmp_path):
    # An absolute file_name that exists on this machine was read from there, with no note, while --images held
    # a copy.
    old, new = tmp_path / "absA", tmp_path / "absB"
    _jpeg(old / "a.jpg", (64, 48), (250, 0, 0))
    _jpeg(new / "a.jpg", (64, 48), (0, 250, 0))
    _jpeg(tmp_path / "outside.jpg", (64, 48))
    _jpeg(new / "absA" / "b.jpg", (64, 48), (0, 250, 0))
    _jpeg(old / "b.jpg", (64, 48), (250, 0, 0))
    paths = ImagePaths(new)
    # a copy under --images with its folder and name is read; a file of its name alone may be another photo: the
    # path is read, and the note names the other
    assert paths.resolve(str(old / "b.jpg")) == (new / "absA/b.jpg", (
        f"file_name {str(old / 'b.jpg')!r} not found as given; read 'absA/b.jpg' under the images folder"))
    assert paths.resolve(str(old / "a.jpg")) == (old / "a.jpg", (
        f"file_name {str(old / 'a.jpg')!r} read where it points, outside the images folder; 'a.jpg' under it has "
        "its name: if that copy is meant, write its path into file_name"))
    assert paths.resolve("../outside.jpg") == (new / "../outside.jpg", None)  # as it says: nothing else of its name
    assert paths.resolve(str(new / "a.jpg")) == (new / "a.jpg", None)  # an absolute path inside it


def test_following_the_images_hint_keeps_the_split(tmp_path):
    # The hint says "give --images DATA to spare the search"; the split was drawn from paths under --images, so
    # following it put other photos in val and test (5 of 5 val images changed in a sample build). Photos named
    # "data/batch_k/N.jpg" under root/: --images root/.. (too high, found by the search), root (as named) and
    # root/data (too low, found by name) give one split and the same bytes.
    root = tmp_path / "root"
    names = [f"data/batch_{i % 3}/{i:06d}.jpg" for i in range(24)]
    for i, name in enumerate(names):
        _jpeg(root / name, (64, 48), color=(10 * i, 40, 40))
    ann = _one_can_per_image(tmp_path / "ann.json", names)
    listings = []
    for n, images in enumerate((tmp_path, root, root / "data")):
        out = tmp_path / f"out{n}"
        report = build_tfrecords(BuildOptions(annotations=ann, images=images, out=out, val_fraction=0.25,
                                              test_fraction=0.25))
        assert report["images_written"] == 24
        assert report["images_folder_hint"] == ({"folders": [str(root)], "images": 24} if n == 0 else None)
        listings.append(json.loads((out / "splits.json").read_text())["file_names"])
    assert listings[0] == listings[1] == listings[2]
    assert sorted(listings[0]["train"] + listings[0]["val"] + listings[0]["test"]) == sorted(names)
    shards = [sorted(p.read_bytes() for p in (tmp_path / f"out{n}").glob("*.tfrecord")) for n in range(3)]
    assert shards[0] == shards[1] == shards[2]
    # and the next command (analyze) reads the folder the hint names, as the build was told to
    from click.testing import CliRunner

    from edge_trash.cli import cli

    result = CliRunner().invoke(cli, ["build-tfrecords", "--annotations", str(ann), "--images", str(tmp_path),
                                      "--out", str(tmp_path / "out3"), "--quiet"])
    assert result.exit_code == 0, result.output
    assert (f"next: edge-trash analyze --annotations {ann} --images {root} --tfrecords "
            f"{tmp_path / 'out3'} ") in result.output


def _batches(root: Path) -> None:
    """The sample data's layout: ``root/images/batch_1/`` holds the odd photos, ``batch_2/`` the even ones."""
    for i in range(1, 7):
        _jpeg(root / "images" / f"batch_{2 - i % 2}" / f"{i:06d}.jpg", (64, 48), color=(30 * i, 40, 40))


def test_images_given_too_deep_hints_the_folder_above(tmp_path):
    # The sample data with --images S/images/batch_1 (one folder too deep): 'batch_2/000002.jpg' was "file not
    # found: S/images/batch_1/batch_2/000002.jpg" with no hint, while --images too high gave one.
    from click.testing import CliRunner

    from edge_trash.cli import cli

    root = tmp_path / "S"
    _batches(root)
    names = [f"batch_{2 - i % 2}/{i:06d}.jpg" for i in range(1, 7)] + ["batch_2/000008.jpg"]  # 000008: nowhere
    ann = _one_can_per_image(tmp_path / "ann.json", names)
    too_deep, out = root / "images" / "batch_1", tmp_path / "out"
    result = CliRunner().invoke(cli, ["build-tfrecords", "--annotations", str(ann), "--images", str(too_deep),
                                      "--out", str(out), "--quiet", "--workers", "1"])
    assert result.exit_code == 0, result.output
    assert f"hint: 3 of the 4 missing images are under {root / 'images'}: give --images {root / 'images'}\n" in (
        result.output)
    report = json.loads((out / "report.json").read_text())
    assert report["images_folder_hint"] == {"folders": [str(root / "images")], "images": 3, "missing": 4}
    # only hinted: nothing is read from the folder above (a file of that name there could be another photo)
    assert report["images_written"] == 3
    assert sorted(s["reason"] for s in report["images_skipped"]) == [
        f"file not found: {too_deep / 'batch_2' / f'{i:06d}.jpg'}" for i in (2, 4, 6, 8)]
    # the next command reads what the build read
    assert f"next: edge-trash analyze --annotations {ann} --images {too_deep} --tfrecords {out} " in result.output

    # two folders too deep, nothing found at all: the hint comes before the error
    empty = too_deep / "empty"
    empty.mkdir()
    result = CliRunner().invoke(cli, ["build-tfrecords", "--annotations", str(ann), "--images", str(empty),
                                      "--out", str(tmp_path / "out2"), "--quiet", "--workers", "1"])
    assert result.exit_code != 0
    assert f"hint: 6 of the 7 missing images are under {root / 'images'}: give --images {root / 'images'}\n" in (
        result.output)
    assert json.loads((tmp_path / "out2" / "report.json").read_text())["images_folder_hint"] == {
        "folders": [str(root / "images")], "images": 6, "missing": 7}


def test_no_images_folder_hint_when_nothing_is_missing_or_few_missing_are_above(tmp_path):
    from click.testing import CliRunner

    from edge_trash.cli import cli

    root = tmp_path / "S"
    _batches(root)
    cases = [  # (file_names, --images)
        ([f"batch_{2 - i % 2}/{i:06d}.jpg" for i in range(1, 7)], root / "images"),  # every image found
        (["batch_1/000001.jpg", "batch_2/000009.jpg"], root / "images"),  # the missing one is above neither
        # 1 of the 3 missing is above batch_1/: fewer than half, no hint
        (["batch_1/000001.jpg", "batch_2/000002.jpg", "batch_2/000010.jpg", "batch_2/000012.jpg"],
         root / "images" / "batch_1"),
    ]
    for n, (names, images) in enumerate(cases):
        ann = _one_can_per_image(tmp_path / f"ann{n}.json", names)
        out = tmp_path / f"out{n}"
        result = CliRunner().invoke(cli, ["build-tfrecords", "--annotations", str(ann), "--images", str(images),
                                          "--out", str(out), "--quiet", "--workers", "1"])
        assert result.exit_code == 0, result.output
        assert "hint:" not in result.output
        report = json.loads((out / "report.json").read_text())
        assert report["images_folder_hint"] is None
        assert len(report["images_skipped"]) == [0, 1, 3][n]


def test_missing_found_above_stats_only_the_missing_names_in_the_folders_above(tmp_path, monkeypatch):
    from edge_trash.tfrecords.image_paths import folders_above, missing_found_above

    assert folders_above(Path("S/images/batch_1")) == [Path("S/images"), Path("S")]
    assert folders_above(Path("batch_1")) == [Path("."), Path("..")]
    assert folders_above(Path(".")) == [Path(".."), Path("../..")]
    assert folders_above(Path("/a")) == [Path("/")]
    assert folders_above(Path("/")) == []

    root = tmp_path / "S"
    _batches(root)
    _jpeg(root / "batch_2" / "000002.jpg", (8, 8))  # the same relative name two folders up too: the nearer wins
    deep = root / "images" / "batch_1"
    assert missing_found_above(deep, ["batch_2/000002.jpg", "batch_2\\000004.jpg"]) == (root / "images", 2)
    assert missing_found_above(deep / "x", ["batch_1/000001.jpg"]) == (root / "images", 1)  # two folders up
    assert missing_found_above(deep, ["batch_2/000009.jpg"]) is None
    # the hint's threshold: half the names not found or more
    assert missing_found_above(deep, ["batch_2/000002.jpg", "batch_9/1.jpg"]) == (root / "images", 1)
    assert missing_found_above(deep, ["batch_2/000002.jpg", "batch_9/1.jpg", "batch_9/2.jpg"]) is None
    assert missing_found_above(deep, []) is None
    # a path from the root, a URL or '..' says nothing of where --images should be
    for name in (str(root / "images" / "batch_2" / "000002.jpg"), "../batch_2/000002.jpg",
                 "https://host/batch_2/000002.jpg"):
        assert missing_found_above(deep, [name]) is None, name
    # many names missing everywhere: a sample is looked for, not every name in every folder above
    from edge_trash.tfrecords import image_paths

    stats = []
    real_isfile = image_paths.os.path.isfile

    def counted_isfile(path):
        stats.append(path)
        return real_isfile(path)
    monkeypatch.setattr(image_paths.os.path, "isfile", counted_isfile)
    gone = [f"batch_9/{k:06d}.jpg" for k in range(5000)]
    assert missing_found_above(deep, gone) is None and len(stats) == 2 * image_paths.MISSING_SAMPLED
    stats.clear()  # found above: the sample, then every name in the folder chosen
    names = ["batch_2/000002.jpg"] * 300 + gone[:100]
    assert missing_found_above(deep, names) == (root / "images", 300)
    assert len(stats) == 2 * image_paths.MISSING_SAMPLED + len(names)


def test_the_too_deep_hint_line(tmp_path):
    from edge_trash.tfrecords.build_cli import _folder_above_hint

    cases = [  # (images, missing, folders) -> line
        (25, 26, ["S/images"], "hint: 25 of the 26 missing images are under S/images: give --images S/images"),
        (1, 3, ["S/images"], "hint: 1 of the 3 missing images is under S/images: give --images S/images"),
        (4, 4, ["S/images"], "hint: all 4 missing images are under S/images: give --images S/images"),
        (1, 1, ["my data"], "hint: the missing image is under my data: give --images 'my data'"),
        (5, 6, ["S/a", "S/a"], "hint: 5 of the 6 missing images are under S/a: give --images S/a"),
        (5, 6, ["S/a", "T"], "hint: 5 of the 6 missing images are in folders above --images: give --images S/a "
                             "--images T (one per --annotations, in order)"),
    ]
    for images, missing, folders, line in cases:
        assert _folder_above_hint({"folders": folders, "images": images, "missing": missing}) == line


def test_nothing_to_train_on_says_why_the_records_were_left_out(tmp_path):
    from edge_trash.tfrecords.build import BuildError

    ann = tmp_path / "ann.json"
    ann.write_text(json.dumps({  # fractional ids the file's own annotations use: every image entry is refused
        "images": [{"id": i + 0.5, "file_name": f"{i}.jpg", "width": 64, "height": 48} for i in (1, 2)],
        "annotations": [{"id": i, "image_id": i + 0.5, "category_id": 1, "bbox": [4, 4, 20, 20]} for i in (1, 2)],
        "categories": [{"id": 1, "name": "can"}]}))
    with pytest.raises(BuildError) as err:
        build_tfrecords(BuildOptions(annotations=ann, images=tmp_path, out=tmp_path / "out"))
    assert str(err.value) == (
        f"{ann}: no class has a usable box after validation and mapping; nothing to train on: 2 of 2 image entries "
        "left out (2x 'id' must be an integer; the first, images[0]: 'id' must be an integer, got 1.5); 2 of "
        "2 boxes left out (2x its image was skipped; the first, 1: its image was skipped)")

    class_map = tmp_path / "map.csv"  # a map that names none of the file's classes
    class_map.write_text("bottle,bottle\n")
    _one_can_per_image(ann, ["1.jpg"])
    with pytest.raises(BuildError) as err:
        build_tfrecords(BuildOptions(annotations=ann, images=tmp_path, out=tmp_path / "out", class_map=class_map))
    assert str(err.value) == (f"{ann}: no class has a usable box after validation and mapping; nothing to train "
                              "on: every class was dropped by the class mapping (category 'can' is not in the class "
                              "map)")

    raw = json.loads(ann.read_text())  # an export of the images alone
    raw["annotations"] = []
    ann.write_text(json.dumps(raw))
    with pytest.raises(BuildError) as err:
        build_tfrecords(BuildOptions(annotations=ann, images=tmp_path, out=tmp_path / "out"))
    assert str(err.value).endswith(
        "nothing to train on: its 'annotations' list is empty (1 image entry and no box): export the annotations "
        "again with their boxes (an export of images alone?)")


def test_ids_json_cannot_hold_are_reported_not_a_crash_after_the_shards(tmp_path):
    # Python's json reads bare NaN/Infinity; report.json (strict JSON) must still list those records.
    from edge_trash.tfrecords.analyze import analyze

    root = tmp_path / "export"
    _roboflow_export(root)
    train, valid = root / "train" / "_annotations.coco.json", root / "valid" / "_annotations.coco.json"
    coco = json.loads(train.read_text())
    coco["images"][0]["id"] = float("nan")
    coco["annotations"][1]["image_id"] = float("inf")
    train.write_text(json.dumps(coco))
    coco = json.loads(valid.read_text())
    coco["annotations"][0]["category_id"] = [2]  # a list where an id belongs, in the second file of a merge
    valid.write_text(json.dumps(coco))
    report = build_tfrecords(BuildOptions(annotations=[train, valid], images=None, out=tmp_path / "out"))
    written = json.loads((tmp_path / "out" / "report.json").read_text())
    assert written["images_written"] == 3 and report["images_written"] == 3  # of 6
    assert [(s["image_id"], s["reason"].split(" (")[0]) for s in written["images_skipped"]] == [
        ("nan", "'id' must be an integer, got nan"),
        (10, "every box was dropped")]  # its one box's category is unusable: not a background image
    assert [(d["annotation_id"], d["image_id"], d["reason"]) for d in written["boxes_dropped"]] == [
        (0, 0, "unknown image_id 0 (no entry in 'images')"),  # the image entry whose id was NaN
        (1, "inf", "unknown image_id inf (no entry in 'images')"),
        (10, 10, f"unknown category_id '[2] (not in the categories of {valid})' (not in 'categories')")]
    stats = analyze([train, valid], None, out=tmp_path / "analysis", plots=False)
    assert json.loads((tmp_path / "analysis" / "stats.json").read_text())["annotations"]["images"] == \
        stats["annotations"]["images"]


def test_image_ids_written_as_text_are_numbered_after_the_numeric_ones(tmp_path):
    # Open Images style hex ids, mixed with numeric ones; a text id used twice, and one whose entry is unusable.
    from edge_trash.tfrecords.analyze import analyze
    from edge_trash.tfrecords.build_cli import summarize

    for name in ("a.jpg", "b.jpg", "c.jpg", "d.jpg"):
        _jpeg(tmp_path / name, (64, 48))
    ann = tmp_path / "ann.json"
    ann.write_text(json.dumps({
        "images": [{"id": "000a1249af2bc5f0", "file_name": "a.jpg", "width": 64, "height": 48},
                   {"id": 7, "file_name": "b.jpg", "width": 64, "height": 48},
                   {"id": " 0b3c ", "file_name": "c.jpg", "width": 64, "height": 48},
                   {"id": "0b3c", "file_name": "d.jpg", "width": 64, "height": 48},
                   {"id": "broken", "file_name": "", "width": 64, "height": 48},
                   {"id": 7, "file_name": "b.jpg", "width": 64, "height": 48}],
        "annotations": [{"id": 1, "image_id": "000a1249af2bc5f0", "category_id": 1, "bbox": [4, 4, 20, 20]},
                        {"id": 2, "image_id": 7, "category_id": 1, "bbox": [4, 4, 20, 20]},
                        {"id": 3, "image_id": "0b3c", "category_id": 1, "bbox": [4, 4, 20, 20]},
                        {"id": 4, "image_id": "broken", "category_id": 1, "bbox": [4, 4, 20, 20]},
                        {"id": 5, "image_id": "nowhere", "category_id": 1, "bbox": [4, 4, 20, 20]}],
        "categories": [{"id": 1, "name": "can"}]}))
    report = build_tfrecords(BuildOptions(annotations=ann, images=tmp_path, out=tmp_path / "out",
                                          val_fraction=0, test_fraction=0))
    assert report["image_ids_numbered"] == 1
    assert sorted(json.loads((tmp_path / "out" / "splits.json").read_text())["splits"]["train"]) == [7, 8]
    assert sorted((n["image_id"], n["file_name"], n["notes"][0]) for n in report["image_notes"]) == [
        (8, "a.jpg", "image id '000a1249af2bc5f0' is text: numbered 8 (splits.json and image/source_id hold the "
                     "number)")]
    # ' 0b3c ' and '0b3c' name two files: box 3 could be on either, so neither image is written (it was put on c.jpg)
    shared = ("duplicate image id: 2 different files ('c.jpg', 'd.jpg') have this id, so which of them each box with "
              "it is on cannot be told, and none is written; give each image its own id (two COCO files joined into "
              "one? give each as its own --annotations: clashing ids are renumbered)")
    assert [(s["image_id"], s["file_name"], s["reason"]) for s in report["images_skipped"]] == [
        ("0b3c", "c.jpg", shared), ("0b3c", "d.jpg", shared),
        ("broken", "", "'file_name' must be a non-empty string, got ''"),
        (7, "b.jpg", "duplicate image id: the same entry twice, the first is used")]
    assert [(d["annotation_id"], d["reason"]) for d in report["boxes_dropped"]] == [
        (3, "its image was skipped"), (4, "its image was skipped"),
        (5, "unknown image_id 'nowhere' (no entry in 'images')")]
    assert {int(ex.features.feature["image/source_id"].bytes_list.value[0]) for ex in _examples(tmp_path / "out")} \
        == {7, 8}
    assert "image ids written as text, numbered after the numeric ones: 1 " in summarize(report, tmp_path, 1.0)
    stats = analyze(ann, None, out=tmp_path / "analysis", plots=False)
    assert stats["annotations"]["problems"]["image_ids_as_text"] == 1


def test_image_ids_beyond_64_bits_are_numbered_like_text_ids(tmp_path):
    """Ids 2**63 and 10**30 were written as image/source_id unchanged; Model Garden reads it as an int64 and failed
    on those records. They are numbered after the numeric ids, as text ids are."""
    for k in range(4):
        _jpeg(tmp_path / f"a{k}.jpg", (64, 48), (40 * k, 50, 50))
    ids = [2 ** 63, 10 ** 30, 7, "8"]
    ann = tmp_path / "ann.json"
    ann.write_text(json.dumps({
        "images": [{"id": i, "file_name": f"a{k}.jpg", "width": 64, "height": 48} for k, i in enumerate(ids)],
        "annotations": [{"id": k, "image_id": i, "category_id": 1, "bbox": [4, 4, 20, 20]} for k, i in enumerate(ids)],
        "categories": [{"id": 1, "name": "can"}]}))
    report = build_tfrecords(BuildOptions(annotations=ann, images=tmp_path, out=tmp_path / "out",
                                          val_fraction=0, test_fraction=0))
    assert report["boxes_written"] == 4 and report["image_ids_numbered"] == 2
    assert sorted((n["image_id"], n["notes"][0]) for n in report["image_notes"]) == [
        (9, f"image id '{2 ** 63}' is beyond 64-bit integers: numbered 9 (splits.json and image/source_id hold the "
            "number)"),
        (10, f"image id '{10 ** 30}' is beyond 64-bit integers: numbered 10 (splits.json and image/source_id hold "
             "the number)")]
    assert {int(ex.features.feature["image/source_id"].bytes_list.value[0]) for ex in _examples(tmp_path / "out")} \
        == {7, 8, 9, 10}


def test_an_entry_without_file_name_is_read_from_its_coco_url_path(tmp_path):
    """LVIS writes no file_name, only ``coco_url``; its images sit in COCO's train2017/ and val2017/."""
    _jpeg(tmp_path / "coco" / "val2017" / "000000000139.jpg", (64, 48))
    _jpeg(tmp_path / "coco" / "train2017" / "000000000009.jpg", (64, 48), (20, 200, 20))
    ann = tmp_path / "coco" / "annotations" / "lvis_v1_val.json"
    ann.parent.mkdir()
    ann.write_text(json.dumps({
        "images": [{"id": 139, "coco_url": "http://images.cocodataset.org/val2017/000000000139.jpg",
                    "width": 64, "height": 48, "neg_category_ids": [], "not_exhaustive_category_ids": []},
                   {"id": 9, "coco_url": "http://images.cocodataset.org/train2017/000000000009.jpg",
                    "width": 64, "height": 48},
                   {"id": 5, "width": 64, "height": 48}],
        "annotations": [{"id": i, "image_id": im, "category_id": 1, "bbox": [4, 4, 20, 20]}
                        for i, im in enumerate((139, 9, 5), start=1)],
        "categories": [{"id": 1, "name": "bottle", "synonyms": ["bottle"], "frequency": "f"}]}))
    report = build_tfrecords(BuildOptions(annotations=ann, images=None, out=tmp_path / "out",
                                          val_fraction=0, test_fraction=0))
    assert report["images_written"] == 2
    assert sorted((n["image_id"], n["file_name"], n["notes"][0]) for n in report["image_notes"]) == [
        (9, "train2017/000000000009.jpg", "no 'file_name': read 'train2017/000000000009.jpg', the path of its "
                                          "'coco_url' (LVIS writes no file_name; COCO's folders hold each photo at "
                                          "that path)"),
        (139, "val2017/000000000139.jpg", "no 'file_name': read 'val2017/000000000139.jpg', the path of its "
                                          "'coco_url' (LVIS writes no file_name; COCO's folders hold each photo at "
                                          "that path)")]
    assert [(s["image_id"], s["reason"]) for s in report["images_skipped"]] == [
        (5, "'file_name' is missing (and no 'coco_url' gives one): write each image's file name, relative to the "
            "images folder, into the JSON")]
    names = sorted(ex.features.feature["image/filename"].bytes_list.value[0] for ex in _examples(tmp_path / "out"))
    assert names == [b"train2017/000000000009.jpg", b"val2017/000000000139.jpg"]
    # --images one folder too high (Detectron2's datasets/): the split in the path, not the file's name, decides
    report = build_tfrecords(BuildOptions(annotations=ann, images=tmp_path, out=tmp_path / "high",
                                          val_fraction=0, test_fraction=0))
    assert report["images_written"] == 2
    assert sorted((n["image_id"], n["notes"][1]) for n in report["image_notes"]) == [
        (9, "file_name 'train2017/000000000009.jpg' not found as given; read 'coco/train2017/000000000009.jpg', the "
            "only file under the images folder whose path ends in 'train2017/000000000009.jpg': --images is probably "
            "a folder above the one file_name is relative to"),
        (139, "file_name 'val2017/000000000139.jpg' not found as given; read 'coco/val2017/000000000139.jpg', the "
              "only file under the images folder whose path ends in 'val2017/000000000139.jpg': --images is probably "
              "a folder above the one file_name is relative to")]


def test_category_ids_written_as_text_are_matched_by_that_text(tmp_path):
    from edge_trash.tfrecords.coco import CocoFormatError, load_coco, load_coco_files

    ann = tmp_path / "ann.json"
    coco = {"images": [{"id": 1, "file_name": "a.jpg", "width": 64, "height": 48}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": "can", "bbox": [1, 1, 9, 9]},
                            {"id": 2, "image_id": 1, "category_id": 4, "bbox": [2, 2, 9, 9]},
                            {"id": 3, "image_id": 1, "category_id": " cup ", "bbox": [3, 3, 9, 9]},
                            {"id": 4, "image_id": 1, "category_id": "lid", "bbox": [4, 4, 9, 9]}],
            "categories": [{"id": "can", "name": "Can"}, {"id": 4, "name": "bottle"}, {"id": "cup", "name": "cup"}]}
    ann.write_text(json.dumps(coco))
    data = load_coco(ann)
    assert [(c.id, c.name, c.text_id) for c in data.categories] == [(5, "Can", "can"), (4, "bottle", None),
                                                                     (6, "cup", "cup")]
    assert [(b.source_id, b.category_id) for b in data.boxes] == [(1, 5), (2, 4), (3, 6)]
    assert [(r.record_id, r.reason) for r in data.rejected_boxes] == [
        (4, "unknown category_id 'lid' (not in 'categories')")]
    # A second file of a merge names the same classes by other ids: matched by name as always.
    other = tmp_path / "valid" / "ann.json"
    other.parent.mkdir()
    other.write_text(json.dumps({
        "images": [{"id": 1, "file_name": "b.jpg", "width": 64, "height": 48}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": "c1", "bbox": [1, 1, 9, 9]}],
        "categories": [{"id": "c1", "name": "cup"}]}))
    merged = load_coco_files([ann, other])
    assert [(b.image_id, b.category_id) for b in merged.boxes][-1] == (11, 6)
    coco["categories"].append({"id": "can", "name": "tin"})
    ann.write_text(json.dumps(coco))
    with pytest.raises(CocoFormatError, match=r"categories\[3\]\.id: id 'can' is used twice \('Can' and 'tin'\)"):
        load_coco(ann)


def test_category_names_written_as_numbers_are_read_as_their_digits(tmp_path):
    from edge_trash.tfrecords.coco import load_coco

    ann = tmp_path / "ann.json"
    ann.write_text(json.dumps({"images": [], "annotations": [],
                               "categories": [{"id": 1, "name": 0}, {"id": 2, "name": 7.0}, {"id": 3, "name": "07"}]}))
    assert [c.name for c in load_coco(ann).categories] == ["0", "7", "07"]


def test_text_image_ids_shared_by_merged_files_keep_each_box_on_its_own_files_image(tmp_path):
    from edge_trash.tfrecords.coco import load_coco_files

    files = []
    for split, box in (("train", [1, 1, 9, 9]), ("valid", [20, 20, 9, 9])):
        ann = tmp_path / split / "_annotations.coco.json"
        ann.parent.mkdir()
        ann.write_text(json.dumps({
            "images": [{"id": "img_1", "file_name": "a.jpg", "width": 64, "height": 48}],
            "annotations": [{"id": 1, "image_id": "img_1", "category_id": 1, "bbox": box}],
            "categories": [{"id": 1, "name": "can"}]}))
        files.append(ann)
    data = load_coco_files(files)
    assert data.rejected_images == [] and data.rejected_boxes == []
    assert data.text_image_ids == {"img_1": 1, f"img_1 (from {files[1]})": 2}
    assert [(im.id, im.source) for im in data.images] == [(1, 0), (2, 1)]
    assert [(b.image_id, b.x) for b in data.boxes] == [(1, 1.0), (2, 20.0)]


def test_categories_sharing_a_name_become_one_class_and_the_summary_says_so(tmp_path):
    from edge_trash.tfrecords.build_cli import summarize

    for name in ("a.jpg", "b.jpg"):
        _jpeg(tmp_path / name, (64, 48))
    ann = tmp_path / "ann.json"
    ann.write_text(json.dumps({
        "images": [{"id": 1, "file_name": "a.jpg", "width": 64, "height": 48},
                   {"id": 2, "file_name": "b.jpg", "width": 64, "height": 48}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 3, "bbox": [1, 1, 9, 9]},
                        {"id": 2, "image_id": 2, "category_id": 4, "bbox": [1, 1, 9, 9]},
                        {"id": 3, "image_id": 2, "category_id": 1, "bbox": [20, 20, 9, 9]}],
        "categories": [{"id": 1, "name": "can"}, {"id": 3, "name": "cup"}, {"id": 4, "name": "cup"}]}))
    report = build_tfrecords(BuildOptions(annotations=ann, images=tmp_path, out=tmp_path / "out",
                                          val_fraction=0, test_fraction=0))
    assert report["classes"] == [{"id": 1, "name": "can", "boxes": 1, "boxes_by_split": {"train": 1}, "crowd_boxes": 0},
                                 {"id": 2, "name": "cup", "boxes": 2, "boxes_by_split": {"train": 2}, "crowd_boxes": 0}]
    assert report["categories_merged_by_name"] == [{"name": "cup", "category_ids": [3, 4]}]
    assert "note: categories 3, 4 share the name 'cup' and became one class" in summarize(report, tmp_path, 1.0)
    labels = sorted(int(v) for ex in _examples(tmp_path / "out")
                    for v in ex.features.feature["image/object/class/label"].int64_list.value)
    assert labels == [1, 2, 2]
    from edge_trash.tfrecords.analyze import analyze

    stats = analyze(ann, None, out=tmp_path / "analysis", plots=False)
    flag = next(f for f in stats["flags"] if f["kind"] == "categories_sharing_a_name")
    assert flag["message"] == "categories 3, 4 share the name 'cup': build-tfrecords makes them one class"
    # with --supercategories the names do not decide the classes, so nothing is reported
    report = build_tfrecords(BuildOptions(annotations=ann, images=tmp_path, out=tmp_path / "out2",
                                          val_fraction=0, test_fraction=0, supercategories=True))
    assert report["categories_merged_by_name"] == []


def test_file_names_not_in_utf8_on_disk_or_escaped_in_the_json_are_found_and_stored_readable(tmp_path):
    # A zip made on Windows, unpacked by unzip: 'café' in Latin-1 and 'Müll' in cp437 bytes on disk.
    # JSON written by Python from such a listing escapes the odd byte ('caf\udce9'); a lone '\ud800'
    # names no file at all; class names with escapes must still leave labels.txt valid UTF-8.
    import os

    from edge_trash.tfrecords.analyze import analyze

    folder = tmp_path / "img"
    for name, raw in (("café.jpg", "café.jpg".encode("latin-1")), ("Müll.jpg", "Müll.jpg".encode("cp437")),
                      ("tea.jpg", "t\xe9a.jpg".encode("latin-1"))):
        _jpeg(folder / "x.jpg", (64, 48), (200, 40, 40) if name != "tea.jpg" else (40, 40, 200))
        os.rename(folder / "x.jpg", os.fsencode(folder) + b"/" + raw)
    ann = tmp_path / "ann.json"
    ann.write_text(json.dumps({  # json.dumps writes the lone surrogates as \udce9 and \ud800 escapes
        "images": [{"id": 1, "file_name": "café.jpg", "width": 64, "height": 48},
                   {"id": 2, "file_name": "Müll.jpg", "width": 64, "height": 48},
                   {"id": 3, "file_name": "t\udce9a.jpg", "width": 64, "height": 48},
                   {"id": 4, "file_name": "z\ud800.jpg", "width": 64, "height": 48},
                   {"id": 5, "file_name": "a\u0000.jpg", "width": 64, "height": 48}],
        "annotations": [{"id": i, "image_id": i, "category_id": 1 if i < 3 else 2, "bbox": [1, 1, 9, 9]}
                        for i in (1, 2, 3, 4, 5)],
        "categories": [{"id": 1, "name": "can"}, {"id": 2, "name": "caf\udce9 lid \ud800"}]}))
    out = tmp_path / "out"
    report = build_tfrecords(BuildOptions(annotations=ann, images=folder, out=out, val_fraction=0, test_fraction=0))
    assert report["images_written"] == 3
    assert report["images_skipped"] == [
        {"image_id": 4, "file_name": "z\ud800.jpg",
         "reason": "'file_name' 'z\\ud800.jpg' holds an escaped lone surrogate, which no file name can: write the "
                   "name in the JSON as it is on disk"},
        {"image_id": 5, "file_name": "a\x00.jpg",
         "reason": "'file_name' 'a\\x00.jpg' holds a NUL character (\\u0000), which no file name can: write the "
                   "name in the JSON as it is on disk"}]
    notes = {n["image_id"]: n["notes"][0] for n in report["image_notes"] if n["image_id"] in (1, 2)}
    assert notes[1] == ("file_name 'café.jpg' not found as given; read 'caf\\udce9.jpg' (its name on disk is not "
                        "UTF-8 but a legacy encoding such as cp437 or cp1252, as zips made on Windows store names; "
                        "'unzip -O cp437' or convmv renames such files) under the images folder")
    assert notes[2].startswith("file_name 'Müll.jpg' not found as given; read 'M\\udc81ll.jpg' (its name")
    assert (out / "labels.txt").read_text(encoding="utf-8") == "can\ncafé lid \\ud800\n"
    records = {int(ex.features.feature["image/source_id"].bytes_list.value[0]): ex for ex in _examples(out)}
    assert records[3].features.feature["image/filename"].bytes_list.value[0].decode("utf-8") == "téa.jpg"
    blue = np.asarray(Image.open(io.BytesIO(records[3].features.feature["image/encoded"].bytes_list.value[0])))
    assert blue[..., 2].mean() > 150  # the escaped name opened the file it names, not another
    stats = analyze(ann, folder, out=tmp_path / "analysis", plots=False)
    luma = {k: round(v) for k, v in stats["annotations"]["brightness"]["per_image"].items()}
    assert luma == {"1": 88, "2": 88, "3": 58}  # red, red, blue: each name read its own file
    assert "t\\udce9a.jpg" in (tmp_path / "analysis" / "report.md").read_text(encoding="utf-8")


def test_the_cli_prints_names_with_undecodable_bytes_on_a_strict_utf8_terminal(tmp_path):
    ann = tmp_path / "ann.json"  # a 64x48 image is a size outlier, so the flag prints its file_name
    ann.write_text(json.dumps({"images": [{"id": 1, "file_name": "caf\udce9.jpg", "width": 64, "height": 48}],
                               "annotations": [], "categories": [{"id": 1, "name": "can"}]}))
    env = {**__import__("os").environ, "PYTHONIOENCODING": "utf-8:strict"}
    run = subprocess.run([sys.executable, "-m", "edge_trash", "analyze", "--annotations", str(ann),
                          "--out", str(tmp_path / "a")], capture_output=True, text=True, env=env,
                         encoding="utf-8", errors="replace")
    assert run.returncode == 0, run.stderr
    assert "caf\\udce9.jpg 64x48 (short side 48 px < 320)" in run.stdout


def test_lfs_pointers_saved_web_pages_and_unfetched_links_say_how_to_get_the_picture(tmp_path):
    import os

    from edge_trash.tfrecords.analyze import analyze

    folder = tmp_path / "img"
    _jpeg(folder / "good.jpg", (64, 48))
    (folder / "lfs.jpg").write_bytes(b"version https://git-lfs.github.com/spec/v1\noid sha256:" + b"0" * 64
                                     + b"\nsize 3402114\n")
    (folder / "page.jpg").write_bytes(b"\n<!DOCTYPE html><html><body>This photo is no longer available</body>")
    os.symlink("../.git/annex/objects/Xy/Zw/SHA256E-s1--abc.jpg/SHA256E-s1--abc.jpg", folder / "annex.jpg")
    os.symlink("/nowhere/dvc-cache/ab/cdef", folder / "link.jpg")
    names = ["good.jpg", "lfs.jpg", "page.jpg", "annex.jpg", "link.jpg"]
    ann = _one_can_per_image(tmp_path / "ann.json", names)
    report = build_tfrecords(BuildOptions(annotations=ann, images=folder, out=tmp_path / "out",
                                          val_fraction=0, test_fraction=0))
    reasons = {s["file_name"]: s["reason"] for s in report["images_skipped"]}
    expected = {
        "lfs.jpg": f"a Git LFS pointer, not the picture: {folder / 'lfs.jpg'}; run 'git lfs pull' in the dataset's "
                   "repository (cloned without Git LFS, or with GIT_LFS_SKIP_SMUDGE)",
        "page.jpg": f"a web page (HTML/XML), not a picture: {folder / 'page.jpg'}; probably a failed download (an "
                    "error or login page saved under the image's name): download it again",
        "annex.jpg": f"broken symbolic link: {folder / 'annex.jpg'} points to ../.git/annex/objects/Xy/Zw/"
                     "SHA256E-s1--abc.jpg/SHA256E-s1--abc.jpg, which does not exist (a git-annex file whose "
                     "content is not here: run 'git annex get')",
        "link.jpg": f"broken symbolic link: {folder / 'link.jpg'} points to /nowhere/dvc-cache/ab/cdef, which does "
                    "not exist (a DVC or git-annex dataset not fetched? run 'dvc pull' or 'git annex get')"}
    assert reasons == expected
    assert report["images_written"] == 1
    stats = analyze(ann, folder, out=tmp_path / "analysis", plots=False)
    unreadable = {u["file_name"]: u["reason"] for u in stats["annotations"]["brightness"]["unreadable"]}
    assert unreadable == expected


def test_cvat_rotated_boxes_become_the_upright_box_around_them(tmp_path):
    # CVAT's COCO export writes a rotated rectangle as its box before rotation plus attributes.rotation
    # (degrees, about the centre); read as a plain box it would be trained in the wrong place.
    from edge_trash.tfrecords.analyze import analyze
    from edge_trash.tfrecords.build_cli import summarize
    from edge_trash.tfrecords.coco import load_coco

    _jpeg(tmp_path / "a.jpg", (100, 60))
    anns = [{"id": k, "image_id": 1, "category_id": 1, "bbox": [20, 20, 40, 10], "segmentation": [],
             "attributes": {"occluded": False, "rotation": r}}
            for k, r in ((1, 30.0), (2, -30), (3, 0.0), (4, 180.0), (5, "45.0"), (6, 90))]
    anns.append({"id": 7, "image_id": 1, "category_id": 1, "bbox": [20, 20, 40, 10], "attributes": "none"})
    anns.append({"id": 8, "image_id": 1, "category_id": 1, "bbox": [20, 20, 40, 10, 0.5]})  # another tool's angle
    # a placeholder bbox beside a polygon: the polygon's box is upright already, whatever the attribute says
    anns.append({"id": 9, "image_id": 1, "category_id": 1, "bbox": [0, 0, 0, 0], "attributes": {"rotation": 30},
                 "segmentation": [[2, 3, 12, 3, 12, 9]]})
    ann = tmp_path / "ann.json"
    ann.write_text(json.dumps({"images": [{"id": 1, "file_name": "a.jpg", "width": 100, "height": 60}],
                               "annotations": anns, "categories": [{"id": 1, "name": "straw"}]}))
    data = load_coco(ann)
    got = {b.source_id: tuple(round(v, 2) for v in (b.x, b.y, b.w, b.h)) for b in data.boxes}
    assert got == {1: (20.18, 10.67, 39.64, 28.66), 2: (20.18, 10.67, 39.64, 28.66),  # either way: the same box
                   3: (20.0, 20.0, 40.0, 10.0), 4: (20.0, 20.0, 40.0, 10.0), 5: (22.32, 7.32, 35.36, 35.36),
                   6: (35.0, 5.0, 10.0, 40.0), 7: (20.0, 20.0, 40.0, 10.0), 9: (2.0, 3.0, 10.0, 6.0)}
    assert (data.boxes_rotated, data.boxes_from_segmentation) == (4, 1)
    assert [r.reason for r in data.rejected_boxes] == [
        "'bbox' has 5 values, [20, 20, 40, 10, 0.5]: a rotated box [x, y, width, height, angle]? Its angle's unit "
        "and centre are not standard: export the boxes upright, as polygons, or with CVAT's attributes.rotation "
        "(read here)"]
    report = build_tfrecords(BuildOptions(annotations=ann, images=tmp_path, out=tmp_path / "out",
                                          val_fraction=0, test_fraction=0))
    assert report["boxes_rotated"] == 4 and report["boxes_written"] == 8
    assert ("rotated boxes (CVAT's attributes.rotation): 4, each kept as the upright box around it (COCO and the "
            "detector have no angle)") in summarize(report, tmp_path, 1.0)
    ex = _examples(tmp_path / "out")[0]
    assert ex.features.feature["image/object/bbox/ymin"].float_list.value[0] == pytest.approx(10.67 / 60, abs=1e-3)
    stats = analyze(ann, None, out=tmp_path / "analysis", plots=False)
    assert stats["annotations"]["problems"]["boxes_rotated"] == 4


def test_a_cut_off_coco_file_is_not_called_a_csv():
    from edge_trash.tfrecords.other_formats import other_text_format

    cut = '{"images": [{"id": 1, "file_name": "a.jpg"}], "annotations": [{"attributes": {"x1": 3, "name": "a"}, '
    assert other_text_format(cut) == "" and other_text_format(cut.replace(", ", ",\n")) == ""


@pytest.mark.parametrize("name,content,what", [
    ("voc.xml", "<annotation><filename>a.jpg</filename><object><name>can</name></object></annotation>",
     "a Pascal VOC XML file"),
    ("data.yaml", "train: ../train/images\nval: ../valid/images\nnc: 2\nnames: ['can', 'cup']\n",
     "a YOLO dataset YAML (its labels are .txt files beside the images)"),
    ("a.txt", "0 0.5 0.5 0.2 0.25\n1 0.1 0.2 0.05 0.05\n",
     "a YOLO label file (class x_center y_center width height per line)"),
    ("boxes.csv", "filename,width,height,class,xmin,ymin,xmax,ymax\na.jpg,64,48,can,1,1,20,20\n",
     "a CSV of boxes (filename, ..., xmin, ymin, xmax, ymax)"),
    ("aquatrash.csv", "image_name,x_min,y_min,x_max,y_max,class_name\n000006.jpg,10,10,60,60,plastic\n",
     "a CSV of boxes (filename, ..., xmin, ymin, xmax, ymax)"),
    ("bare.csv", "000006.jpg,10,10,60,60,plastic\n000007.JPG,1,1,9,9,metal\n",
     "a CSV of boxes without a header line (filename, ..., xmin, ymin, xmax, ymax)"),
    ("openlittermap.csv", "id,verified,phone,datetime,lat,lon,smoking,butts\n1,1,iPhone,2020-01-01,51.5,-0.1,1,3\n",
     "a CSV file (comma-separated values)"),
    ("tasks.json", '[{"id": 1, "data": {"image": "/data/upload/1/a.jpg"}, "annotations": []}]',
     "a Label Studio JSON export (a list of tasks)"),
    ("a.json", '{"version": "5.0.1", "flags": {}, "shapes": [], "imagePath": "a.jpg"}',
     "a LabelMe JSON file (one per image)"),
    ("via.json", '{"a.jpg123": {"filename": "a.jpg", "size": 123, "regions": []}}',
     "a VGG Image Annotator (VIA) project"),
    ("min.json", '[{"image": "/data/upload/1/a.jpg", "id": 1, "label": [], "annotator": 1, "annotation_id": 2}]',
     "a Label Studio JSON-MIN export"),
    ("results.json", '[{"image_id": 1, "category_id": 2, "bbox": [1, 2, 3, 4], "score": 0.9}]',
     "a COCO results file (a model's detections with scores; give the dataset's own annotation file)"),
    ("createml.json", '[{"image": "a.jpg", "annotations": [{"label": "can", "coordinates": {"x": 5}}]}]',
     "a Create ML JSON file"),
    ("labelbox.json", '[{"ID": "ck1", "Labeled Data": "https://x/a.jpg", "Label": {"objects": []}}]',
     "a Labelbox export"),
    ("export.ndjson", '{"data_row": {"id": "a"}, "projects": {}}\n{"data_row": {"id": "b"}, "projects": {}}\n',
     "a JSON Lines file, one JSON object per line (Labelbox's NDJSON export)"),
    ("one.ndjson", '{"data_row": {"id": "a"}, "projects": {}}\n', "a Labelbox export"),  # one image: a JSON dict
    ("task.xml", '<?xml version="1.0"?>\n<annotations>\n  <image id="0" name="a.jpg" width="5" height="4">\n'
                 '  </image>\n</annotations>', "a CVAT XML export ('CVAT for images 1.1')"),  # without <meta>
    ("lines.json", '{"a": 1}\n{"a": 2}\n', "a JSON Lines file, one JSON object per line"),
    ("vertex.jsonl", '{"imageGcsUri": "gs://b/a.jpg", "boundingBoxAnnotations": []}\n'
                     '{"imageGcsUri": "gs://b/b.jpg", "boundingBoxAnnotations": []}\n',
     "a JSON Lines file, one JSON object per line (a Vertex AI image object detection import file)"),
    ("one.jsonl", '{"imageGcsUri": "gs://b/a.jpg", "boundingBoxAnnotations": []}\n',
     "a Vertex AI image object detection import file (JSON Lines)"),
    ("output.manifest", '{"source-ref": "s3://b/a.jpg", "job": {"annotations": []}}\n'
                        '{"source-ref": "s3://b/b.jpg", "job": {"annotations": []}}\n',
     "a JSON Lines file, one JSON object per line (a SageMaker Ground Truth output manifest)"),
    ("d2.json", '[{"file_name": "a.jpg", "image_id": 1, "height": 4, "width": 5, '
                '"annotations": [{"bbox": [1, 1, 2, 2], "bbox_mode": 1, "category_id": 0}]}]',
     "a Detectron2 dataset list (a dict per image; detectron2.data.datasets.coco.convert_to_coco_json writes COCO JSON "
     "from a registered dataset)"),
    ("mmdet2.json", '[{"filename": "a.jpg", "width": 5, "height": 4, "ann": {"bboxes": [[1, 1, 3, 3]], '
                    '"labels": [0]}}]',
     "an MMDetection 2.x middle-format list (filename, ann.bboxes, ann.labels per image)"),
    ("mmdet3.json", '{"metainfo": {"classes": ["can"]}, "data_list": [{"img_path": "a.jpg", "instances": []}]}',
     "an MMDetection 3.x annotation file (metainfo, data_list)"),
    ("ann.json", '{"description": "", "tags": [], "size": {"height": 4, "width": 5}, "objects": []}',
     "a Supervisely annotation (one per image)"),
    ("panoptic.json", '{"images": [], "categories": [], "annotations": [{"image_id": 1, "file_name": "a.png", '
                      '"segments_info": [{"id": 1, "category_id": 1, "bbox": [1, 2, 3, 4]}]}]}',
     "a COCO panoptic file (its boxes are in segments_info; panopticapi's converters/"
     "panoptic2detection_coco_format.py writes COCO detection JSON from it)"),
])
def test_annotation_files_in_other_tools_formats_are_named(tmp_path, name, content, what):
    from edge_trash.tfrecords.coco import CocoFormatError, load_coco

    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(CocoFormatError) as err:
        load_coco(path)
    assert str(err.value) == (f"{path}: {what}, not COCO JSON. Export the annotations as COCO JSON (CVAT: "
                              "'COCO 1.0'; Label Studio, Roboflow: 'COCO'), or convert them, and give that file")


def test_readable_text_decodes_escaped_bytes_as_utf8_then_cp1252_then_latin1():
    from edge_trash.tfrecords.name_encodings import readable_text

    assert readable_text("caf\udcc3\udca9") == "café"  # UTF-8 bytes escaped one by one
    assert readable_text("caf\udce9") == "café"  # cp1252
    assert readable_text("\udc81x") == "\x81x"  # undefined in cp1252: Latin-1
    assert readable_text("a\ud800b\udce9") == "a\\ud800bé"  # a surrogate no byte explains stays visible
    assert readable_text("plain é") == "plain é"


def test_a_zip_archive_or_a_photo_given_as_annotations_says_what_to_give(tmp_path):
    import zipfile

    from edge_trash.tfrecords.coco import CocoFormatError, load_coco

    archive = tmp_path / "export.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("train/_annotations.coco.json", "{}")
        z.writestr("train/a.jpg", b"\xff\xd8\xff")
    photo = tmp_path / "a.jpg"
    _jpeg(photo, (8, 8))
    import io
    import tarfile

    tars = {}
    for name, mode in (("export.tar", "w"), ("export.tar.gz", "w:gz"), ("export.tar.xz", "w:xz")):
        tars[name] = tmp_path / name
        with tarfile.open(tars[name], mode) as t:
            data = b"{}"
            info = tarfile.TarInfo("annotations/instances_train2017.json")
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    (tmp_path / "export.7z").write_bytes(b"7z\xbc\xaf\x27\x1c" + bytes(40))
    (tmp_path / "cvat.xml").write_text('<?xml version="1.0" encoding="utf-8"?>\n<annotations>\n  <version>1.1'
                                       '</version>\n  <meta>\n    <task><id>3</id></task>\n  </meta>\n</annotations>')
    tar_says = ("a tar archive (holding annotations/instances_train2017.json): unpack it (tar -xf {} -C DIR) and "
                "give the COCO JSON inside with --annotations, and its image folder with --images")
    (tmp_path / "my export.rar").write_bytes(b"Rar!\x1a\x07\x01\x00" + bytes(40))
    from edge_trash.tfrecords.tfrecord_file import TFRecordWriter

    record = tmp_path / "train-00000-of-00001.tfrecord"
    with TFRecordWriter(record) as writer:
        writer.write(b"\xab" * 30)
    for path, message in (  # a tar file was "not valid JSON at line 1, column 1 ... export again"
            (tars["export.tar"], tar_says.format(tars["export.tar"])),
            (tars["export.tar.gz"], tar_says.format(tars["export.tar.gz"])),  # GNU tar and bsdtar detect it
            (tars["export.tar.xz"], tar_says.format(tars["export.tar.xz"])),
            (tmp_path / "my export.rar", f"a RAR archive: unpack it (unrar x '{tmp_path / 'my export.rar'}' DIR/) "
                                         "and give the COCO JSON inside with --annotations, and its image folder "
                                         "with --images"),
            (tmp_path / "export.7z", f"a 7z archive: unpack it (7z x {tmp_path / 'export.7z'} -oDIR) and give the "
                                     "COCO JSON inside with --annotations, and its image folder with --images"),
            (tmp_path / "cvat.xml", "a CVAT XML export ('CVAT for images 1.1'), not COCO JSON. Export the "
                                    "annotations as COCO JSON (CVAT: 'COCO 1.0'; Label Studio, Roboflow: 'COCO'), or "
                                    "convert them, and give that file"),
            (archive, "a zip archive (holding train/_annotations.coco.json): unpack it and give the COCO JSON "
                      "inside with --annotations, and its image folder with --images"),
            (photo, "a JPEG image, not an annotation file: give the COCO JSON with --annotations and the photos' "
                    "folder with --images"),
            (record, "a TFRecord file, not an annotation file: pass its folder with --tfrecords (analyze) or --data "
                     "(train, evaluate, export); --annotations takes COCO JSON")):  # was "cannot read as UTF-8 text"
        with pytest.raises(CocoFormatError) as err:
            load_coco(path)
        assert str(err.value) == f"{path}: {message}"


def test_the_summary_counts_image_adjustments_by_kind(tmp_path):
    from edge_trash.tfrecords.build_cli import summarize

    root = tmp_path / "img"
    _exif_rotated_jpeg(root / "r1.jpg", (64, 48), orientation=6)  # displayed 48x64
    _exif_rotated_jpeg(root / "r2.jpg", (64, 48), orientation=8)
    Image.new("P", (64, 48), 3).save(root / "pal.png")
    _jpeg(root / "sub" / "deep.jpg", (64, 48))  # a bare file_name found in a sub-folder
    _jpeg(root / "half.jpg", (32, 24))  # JSON says 64x48: same aspect, boxes scaled
    entries = [("r1.jpg", 48, 64), ("r2.jpg", 48, 64), ("pal.png", 64, 48), ("deep.jpg", 64, 48), ("half.jpg", 64, 48)]
    ann = tmp_path / "ann.json"
    ann.write_text(json.dumps({
        "images": [{"id": i, "file_name": n, "width": w, "height": h} for i, (n, w, h) in enumerate(entries, 1)],
        "annotations": [{"id": i, "image_id": i, "category_id": 1, "bbox": [2, 2, 10, 10]} for i in range(1, 6)],
        "categories": [{"id": 1, "name": "can"}]}))
    report = build_tfrecords(BuildOptions(annotations=ann, images=root, out=tmp_path / "out",
                                          val_fraction=0, test_fraction=0))
    line = next(ln for ln in summarize(report, tmp_path, 1.0).splitlines() if ln.startswith("images adjusted"))
    assert line == ("images adjusted: 5 (2x EXIF orientation applied; 1x colour mode converted to RGB; "
                    "1x found under another path or name; 1x size differs from the JSON; see image_notes in "
                    "report.json)")
    assert [_note_kind(n) for n in ("applied EXIF orientation 6", "invalid EXIF orientation 9 ignored",
                                    "unreadable EXIF block ignored")] == [
        "EXIF orientation applied", "EXIF orientation ignored", "EXIF orientation ignored"]  # which of the two


def test_the_summary_lists_few_classes_in_id_order_and_many_by_their_extremes(tmp_path):
    from edge_trash.tfrecords.build_cli import summarize

    root = tmp_path / "img"
    _jpeg(root / "a.jpg", (64, 48))

    def build(n_classes, name):
        anns = [{"id": c * 100 + k + 1, "image_id": 1, "category_id": c, "bbox": [1 + k, 1, 9, 9]}
                for c in range(1, n_classes + 1) for k in range(c if c != 3 else 20)]
        ann = tmp_path / f"{name}.json"
        ann.write_text(json.dumps({"images": [{"id": 1, "file_name": "a.jpg", "width": 64, "height": 48}],
                                   "annotations": anns,
                                   "categories": [{"id": c, "name": f"c{c}"} for c in range(1, n_classes + 1)]}))
        report = build_tfrecords(BuildOptions(annotations=ann, images=root, out=tmp_path / name,
                                              val_fraction=0, test_fraction=0))
        lines = summarize(report, tmp_path, 1.0).splitlines()
        assert lines[1] == f"splits: train 1 image / {len(anns)} boxes"
        assert lines[-1].startswith("build-tfrecords: wrote 1 shard (")
        return next(ln for ln in lines if ln.startswith("classes ("))

    assert build(3, "few") == "classes (3): c1 1, c2 2, c3 20"
    assert build(14, "many") == ("classes (14): most boxes c3 20, c14 14, c13 13, c12 12, c11 11, c10 10; "
                                 "fewest c7 7, c6 6, c5 5, c4 4, c2 2, c1 1 (all in report.json)")


@pytest.mark.parametrize("name, shown", [
    ("Glass bottle", "Glass bottle"), ("c1", "c1"), ("Plastique à usage unique", "Plastique à usage unique"),
    ("Glass, broken", "'Glass, broken'"), ("a;b", "'a;b'"), ("Bottle 2", "'Bottle 2'"), ("cap ", "'cap '"),
    ("it's", '"it\'s"'), ("tab\there", "'tab\\there'"), ("", "''")])
def test_summary_class_list_quotes_names_a_reader_would_split_wrongly(name, shown):
    # "classes (2): Glass, broken 3, can 1" read as three classes; "Bottle 2 5" as a count of 2 or 5.
    from edge_trash.tfrecords.build_cli import _classes_line, listed_name

    assert listed_name(name) == shown
    assert _classes_line([{"id": 1, "name": name, "boxes": 3}, {"id": 2, "name": "can", "boxes": 1}]) == (
        f"classes (2): {shown} 3, can 1")


@pytest.mark.parametrize("command", ["build-tfrecords", "analyze"])
def test_an_images_option_that_is_not_a_folder_says_what_it_is(tmp_path, command):
    from click.testing import CliRunner

    from edge_trash.cli import cli

    ann = _one_can_per_image(tmp_path / "ann.json", ["a.jpg"])
    zipped = tmp_path / "photos.download"  # a zip by its bytes, whatever its name
    with zipfile.ZipFile(zipped, "w") as archive:
        archive.writestr("images/a.jpg", b"")
    (tmp_path / "photos.tar.gz").write_bytes(b"\x1f\x8b")
    (tmp_path / "notes.txt").write_text("x")
    expected = {
        zipped: f"an archive, not a folder: unpack it (unzip {zipped} -d DIR) and give the folder of the photos",
        tmp_path / "photos.tar.gz": f"an archive, not a folder: unpack it (tar -xzf {tmp_path / 'photos.tar.gz'} "
                                    "-C DIR) and give the folder of the photos",
        ann: "a file, not a folder (the annotations go to --annotations; --images takes the folder the file_name "
             "entries are relative to)",
        tmp_path / "notes.txt": "a file, not a folder: give the folder the file_name entries are relative to",
        tmp_path / "nowhere": "no such folder (give the folder the file_name entries are relative to)",
    }
    for images, message in expected.items():
        result = CliRunner().invoke(cli, [command, "--annotations", str(ann), "--images", str(images),
                                          "--out", str(tmp_path / "out"), "--quiet"])
        assert result.exit_code == 1, result.output
        assert result.output.splitlines()[-1] == f"Error: --images {images}: {message}"
    assert not (tmp_path / "out" / "report.json").exists()


@pytest.mark.parametrize("command", ["build-tfrecords", "analyze"])
def test_an_annotations_folder_lists_the_json_files_in_it(tmp_path, command):
    from click.testing import CliRunner

    from edge_trash.cli import cli

    export = tmp_path / "export"
    for split in ("train", "valid"):
        (export / split).mkdir(parents=True)
        _one_can_per_image(export / split / "_annotations.coco.json", [])
    (tmp_path / "empty").mkdir()
    for folder, held in ((export, "it holds train/_annotations.coco.json, valid/_annotations.coco.json"),
                         (tmp_path / "empty", "it holds no .json file (nor do its sub-folders)")):
        result = CliRunner().invoke(cli, [command, "--annotations", str(folder), "--out", str(tmp_path / "out"),
                                          "--quiet"])
        assert result.exit_code == 1, result.output
        assert result.output.splitlines() == [
            f"Error: {folder}: a folder, not an annotation file; {held}: give the COCO JSON with --annotations "
            "(repeat it to merge several, such as a Roboflow export's train, valid and test)"]


def test_an_annotation_file_given_twice_is_refused_before_its_images_count_double(tmp_path):
    from edge_trash.tfrecords.coco import CocoFormatError, load_coco_files

    ann = _one_can_per_image(tmp_path / "ann.json", ["a.jpg"])
    with pytest.raises(CocoFormatError) as err:
        load_coco_files([ann, ann])
    assert str(err.value) == (f"{ann}: given twice as --annotations; give each file once, or its images would be "
                              "counted twice")
    again = tmp_path / "x" / ".." / "ann.json"
    (tmp_path / "x").mkdir()
    with pytest.raises(CocoFormatError, match=rf"^{re.escape(str(again))}: given twice as --annotations \(also as "
                                              rf"{re.escape(str(ann))}\);"):
        load_coco_files([ann, again])


def test_the_sub_folder_search_follows_linked_folders_once_and_survives_a_link_loop(tmp_path):
    storage = tmp_path / "storage" / "batch_7"
    _jpeg(storage / "000042.jpg", (8, 8))
    root = tmp_path / "data"
    root.mkdir()
    (root / "batch_7").symlink_to(storage, target_is_directory=True)  # photos kept on another disk
    (root / "loop").mkdir()
    (root / "loop" / "back").symlink_to(root, target_is_directory=True)
    path, note = ImagePaths(root).resolve("000042.jpg")
    assert path == root / "batch_7" / "000042.jpg"
    assert note == ("file_name '000042.jpg' not found as given; read 'batch_7/000042.jpg', the only file of that "
                    "name under the images folder")


def test_missing_photos_take_no_place_in_the_splits_and_unlearnable_classes_are_named(tmp_path):
    """Splits are planned over the photos that are there: with half of them missing, val still gets its
    fraction of the written images, and a class whose only photo is missing is named in the summary."""
    from edge_trash.tfrecords.build_cli import summarize

    images, annotations = [], []
    for i in range(1, 41):
        images.append({"id": i, "file_name": f"{i}.jpg", "width": 64, "height": 48})
        annotations.append({"id": i, "image_id": i, "category_id": 1 if i < 40 else 2, "bbox": [4, 4, 20, 20]})
        if i % 2 or i == 40:  # the odd ones and the only cup are missing
            continue
        _jpeg(tmp_path / "img" / f"{i}.jpg", (64, 48), (6 * i, 40, 40))  # distinct: copies move as one
    ann = tmp_path / "ann.json"
    ann.write_text(json.dumps({"images": images, "annotations": annotations,
                               "categories": [{"id": 1, "name": "can"}, {"id": 2, "name": "cup"}]}))
    out = tmp_path / "out"
    report = build_tfrecords(BuildOptions(annotations=ann, images=tmp_path / "img", out=out,
                                          val_fraction=0.25, test_fraction=0.1, workers=1))
    assert report["images_written"] == 19 and len(report["images_skipped"]) == 21
    assert {k: v["images"] for k, v in report["splits"].items()} == {"train": 12, "val": 5, "test": 2}
    assert report["classes_not_in_train"] == ["cup"]
    assert report["classes"][1] == {"id": 2, "name": "cup", "boxes": 0,
                                    "boxes_by_split": {"train": 0, "val": 0, "test": 0}, "crowd_boxes": 0}
    assert f"file not found: {tmp_path / 'img' / '40.jpg'}" in {s["reason"] for s in report["images_skipped"]}
    assert ("warning: 1 class has no box in train, so the model cannot learn it: cup (every image with one was "
            "skipped: see images_skipped in report.json)") in summarize(report, out, 1.0).splitlines()


def test_ignore_regions_are_crowd_and_scored_annotations_are_said(tmp_path):
    """`"ignore": 1` regions (CityPersons, VisDrone, TinyPerson conversions) were written as ordinary objects, and a
    COCO dict of a model's detections with their `score` (detect-waste's OpenLitterMap pseudo-labels, FiftyOne
    prediction exports) was trained as ground truth without a word."""
    from click.testing import CliRunner

    from edge_trash.cli import cli
    from edge_trash.tfrecords.analyze import analyze

    root = tmp_path / "img"
    anns = []
    for i in range(1, 5):
        _jpeg(root / f"{i}.jpg", (320, 240))
        for k, (score, ignore) in enumerate(((0.91, 0), (0.12, 1), (0.03, "true"))):
            anns.append({"id": 10 * i + k, "image_id": i, "category_id": 1, "bbox": [10 + 90 * k, 20, 60, 60],
                         "iscrowd": 0, "score": score if i < 4 else str(score), "ignore": ignore})  # text too
    anns.append({"id": 99, "image_id": 4, "category_id": 1, "bbox": [5, 150, 40, 40], "ignore": 0})  # Label Studio
    anns.append({"id": 98, "image_id": 4, "category_id": 1, "bbox": [60, 150, 40, 40], "iscrowd": 2})  # odd alone
    anns.append({"id": 97, "image_id": 4, "category_id": 1, "bbox": [110, 150, 40, 40], "iscrowd": 2, "ignore": 1})
    ann = tmp_path / "olm_pseudo.json"
    ann.write_text(json.dumps({"images": [{"id": i, "file_name": f"{i}.jpg", "width": 320, "height": 240}
                                          for i in range(1, 5)],
                               "annotations": anns, "categories": [{"id": 1, "name": "litter"}]}))
    result = CliRunner().invoke(cli, ["build-tfrecords", "--annotations", str(ann), "--images", str(root), "--out",
                                      str(tmp_path / "out"), "--val-fraction", "0", "--test-fraction", "0"])
    assert result.exit_code == 0, result.output
    assert ("note: 9 annotations are marked \"ignore\": 1 (a region not to learn from), written with is_crowd 1 as "
            "COCO's evaluator and Model Garden's training read it: annotation ids 11, 12, 21, 22, 31 and 4 more"
            ) in result.output
    assert ("warning: 12 usable annotations carry a 'score' (0.03 to 0.91, median 0.12), as a model's predictions do "
            "(pseudo-labels, a results file inside a COCO dict): they are trained as ground truth; if they are "
            "predictions, keep only the confident ones in the file (or review them) before training") in result.output
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["ignored_as_crowd"] == [11, 12, 21, 22, 31, 32, 41, 42, 97]
    assert report["iscrowd_not_understood"] == [98]  # 97's iscrowd 2 is not called "read as 0": it is crowd
    assert report["annotations_with_score"] == {"count": 12, "min": 0.03, "median": 0.12, "max": 0.91}
    crowd = {int(ex.features.feature["image/source_id"].bytes_list.value[0]):
             list(ex.features.feature["image/object/is_crowd"].int64_list.value) for ex in _examples(tmp_path / "out")}
    assert crowd == {1: [0, 1, 1], 2: [0, 1, 1], 3: [0, 1, 1], 4: [0, 1, 1, 1, 0, 0]}  # ids 40-42, 97, 98, 99
    stats = analyze(ann, None, out=tmp_path / "analysis", plots=False)
    kinds = {f["kind"]: f for f in stats["flags"]}
    assert kinds["ignored_as_crowd"]["count"] == 9 and kinds["annotations_with_score"]["count"] == 12
    assert stats["annotations"]["problems"]["annotations_with_score"]["median"] == 0.12


def test_an_image_id_given_to_two_files_writes_neither_rather_than_boxes_on_the_wrong_photo(tmp_path):
    """Two COCO files joined by hand (a Kaggle upload) number images and boxes from 1 in both: every box was put on
    the first file's image with its id, so the second file's boxes were trained on the wrong photos."""
    from click.testing import CliRunner

    from edge_trash.cli import cli

    images, anns = [], []
    for prefix in ("a", "b"):
        for i in range(1, 4):
            _jpeg(tmp_path / "img" / f"{prefix}_{i}.jpg", (64, 48))
            images.append({"id": i, "file_name": f"{prefix}_{i}.jpg", "width": 64, "height": 48})
            anns.append({"id": i, "image_id": i, "category_id": 1, "bbox": [4, 4, 20, 20]})
    _jpeg(tmp_path / "img" / "c.jpg", (64, 48))
    images += [{"id": 4, "file_name": "c.jpg", "width": 64, "height": 48},  # the same file spelled three ways
               {"id": 4, "file_name": "./c.jpg", "width": 64, "height": 48},  # (kept once)
               {"id": 4, "file_name": "/content/drive/MyDrive/data/img/C.JPG", "width": 64, "height": 48}]
    anns.append({"id": 9, "image_id": 4, "category_id": 1, "bbox": [8, 8, 20, 20]})
    ann = tmp_path / "joined.json"
    ann.write_text(json.dumps({"images": images, "annotations": anns, "categories": [{"id": 1, "name": "can"}]}))
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["build-tfrecords", "--annotations", str(ann), "--images", str(tmp_path / "img"),
                                      "--out", str(out), "--val-fraction", "0", "--test-fraction", "0"])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert (report["images_written"], report["boxes_written"]) == (1, 1)
    assert sorted((s["image_id"], s["file_name"]) for s in report["images_skipped"]) == [
        (1, "a_1.jpg"), (1, "b_1.jpg"), (2, "a_2.jpg"), (2, "b_2.jpg"), (3, "a_3.jpg"), (3, "b_3.jpg"), (4, "./c.jpg"),
        (4, "/content/drive/MyDrive/data/img/C.JPG")]
    assert sorted(d["annotation_id"] for d in report["boxes_dropped"]) == [1, 1, 2, 2, 3, 3]  # as the file has them
    assert report["image_ids_of_several_files"] == [1, 2, 3]
    assert ("warning: 3 image ids are each given to different files (1, 2, 3; two COCO files joined into one?): which "
            "photo each of their boxes is on cannot be told, so none of those images is written "
            "(image_ids_of_several_files in report.json); give each image its own id, or each file as its own "
            "--annotations (clashing ids are renumbered)") in " ".join(result.output.split())
    assert [s["reason"] for s in report["images_skipped"] if s["file_name"] == "b_3.jpg"] == [
        "duplicate image id: 2 different files ('a_3.jpg', 'b_3.jpg') have this id, so which of them each box with it "
        "is on cannot be told, and none is written; give each image its own id (two COCO files joined into one? give "
        "each as its own --annotations: clashing ids are renumbered)"]


def _build_with_shifted_ids(tmp_path: Path, names, boxes_from: int, categories_from: int):
    """``(ann, args, result)``: 12 photos, box i of class ``names[i % 4]`` written as id ``i % 4 + boxes_from``
    while the categories are numbered from ``categories_from``, built into ``tmp_path / "o1"`` with ``args``."""
    from click.testing import CliRunner

    from edge_trash.cli import cli

    images, anns = [], []
    for i in range(12):
        _jpeg(tmp_path / "img" / f"{i}.jpg", (64, 48), (20 * i, 90, 90))
        images.append({"id": i, "file_name": f"{i}.jpg", "width": 64, "height": 48})
        anns.append({"id": i, "image_id": i, "category_id": i % 4 + boxes_from, "bbox": [4, 4, 20, 20]})
    ann = tmp_path / "annotations.json"
    ann.write_text(json.dumps({"images": images, "annotations": anns,
                               "categories": [{"id": k + categories_from, "name": n} for k, n in enumerate(names)]}))
    args = ["--images", str(tmp_path / "img"), "--val-fraction", "0", "--test-fraction", "0"]
    result = CliRunner().invoke(cli, ["build-tfrecords", "--annotations", str(ann), "--out", str(tmp_path / "o1"),
                                      *args])
    assert result.exit_code == 0, result.output
    return ann, args, result


def test_class_ids_numbered_from_0_against_categories_from_1_are_named_with_the_fix(tmp_path):
    """A YOLO-to-COCO script that numbers the categories 1..N but writes each box's YOLO class (0..N-1): the boxes of
    class 0 were dropped as "unknown category_id" and every other box written as the class before its own, silently."""
    import subprocess

    from click.testing import CliRunner

    from edge_trash.cli import cli
    from edge_trash.tfrecords.analyze import analyze

    names = ["AluCan", "Glass", "HDPEM", "PET"]
    ann, args, result = _build_with_shifted_ids(tmp_path, names, boxes_from=0, categories_from=1)  # the YOLO class
    fixed = tmp_path / "annotations_ids_from_1.json"
    fix = ("python -c \"import json, sys; d = json.load(open(sys.argv[1])); [a.update(category_id=a['category_id'] + "
           "1) for a in d['annotations']]; json.dump(d, open(sys.argv[2], 'w'))\" " f"{ann} {fixed}")
    said = ("the annotations seem to number their classes from 0 and the categories from 1 (a YOLO conversion?): 3 "
            "annotations use category_id 0, which no category has, and none uses 4 ('PET'); read as they are, every "
            "other box is written as the class listed just before its own (a 'Glass' box as 'AluCan'). If so, add 1 "
            f"to each annotation's category_id ({fix}) and build again")
    assert f"warning: {said}" in result.output.splitlines()
    report = json.loads((tmp_path / "o1" / "report.json").read_text())
    assert report["unknown_category_ids"] == {"0": 3} and report["category_ids_warning"] == said
    stats = analyze(ann, None, out=tmp_path / "a1", plots=False)
    assert [f["message"] for f in stats["flags"] if f["kind"] == "category_ids_from_0"] == [said]
    subprocess.run(fix.replace("python", sys.executable, 1), shell=True, check=True)  # what the user copies
    result = CliRunner().invoke(cli, ["build-tfrecords", "--annotations", str(fixed), "--out", str(tmp_path / "o2"),
                                      *args])
    report = json.loads((tmp_path / "o2" / "report.json").read_text())
    assert report["category_ids_warning"] is None and report["boxes_written"] == 12
    assert [(c["name"], c["boxes"]) for c in report["classes"]] == [(n, 3) for n in names]
    # ids 0..3 with categories 0..3 are read as they are; so is a stray id 0 when class N has boxes, or a stray one
    # beside a class not labelled yet (the fix would shift every correct label)
    stray = [0, 0] + [1 + i % 3 for i in range(30)]  # two 0s against classes of 10 boxes, class 4 unused
    images = json.loads(ann.read_text())["images"]
    for cats, ids in ((range(4), [i % 4 for i in range(12)]), (range(1, 5), [0] + [1 + i % 4 for i in range(11)]),
                      (range(1, 5), stray)):
        ann.write_text(json.dumps({"images": images, "categories": [{"id": k, "name": f"c{k}"} for k in cats],
                                   "annotations": [{"id": k, "image_id": k % 12, "category_id": c,
                                                    "bbox": [4 + k // 12, 4, 20, 20]}  # no box twice
                                                   for k, c in enumerate(ids)]}))
        stats = analyze(ann, None, out=tmp_path / "a2", plots=False)
        assert stats["annotations"]["problems"]["category_ids_warning"] is None


def test_categories_numbered_from_0_against_class_ids_from_1_are_named_with_the_fix(tmp_path):
    """The other way round (labelme2coco, FiftyOne and Detectron2 number the categories from 0; a box's class written
    from 1): every box was written as the class listed after its own, the boxes of id N dropped, no warning."""
    import subprocess

    from click.testing import CliRunner

    from edge_trash.cli import cli

    names = ["bottle", "can", "bag", "cup"]
    ann, args, result = _build_with_shifted_ids(tmp_path, names, boxes_from=1, categories_from=0)
    fixed = tmp_path / "annotations_ids_from_0.json"
    fix = ("python -c \"import json, sys; d = json.load(open(sys.argv[1])); [a.update(category_id=a['category_id'] - "
           "1) for a in d['annotations']]; json.dump(d, open(sys.argv[2], 'w'))\" " f"{ann} {fixed}")
    said = ("the categories seem to number their classes from 0 and the annotations from 1: 3 annotations use "
            "category_id 4, which no category has, and none uses 0 ('bottle'); read as they are, every other box is "
            "written as the class listed just after its own (a 'bottle' box as 'can'). If so, take 1 from each "
            f"annotation's category_id ({fix}) and build again")
    assert f"warning: {said}" in result.output.splitlines()
    report = json.loads((tmp_path / "o1" / "report.json").read_text())
    assert report["unknown_category_ids"] == {"4": 3} and report["category_ids_warning"] == said
    subprocess.run(fix.replace("python", sys.executable, 1), shell=True, check=True)  # what the user copies
    result = CliRunner().invoke(cli, ["build-tfrecords", "--annotations", str(fixed), "--out", str(tmp_path / "o2"),
                                      *args])
    report = json.loads((tmp_path / "o2" / "report.json").read_text())
    assert report["category_ids_warning"] is None and report["boxes_written"] == 12
    assert [(c["name"], c["boxes"]) for c in report["classes"]] == [(n, 3) for n in names]


def test_masks_cvat_exports_with_iscrowd_1_are_named_with_the_fix(tmp_path):
    """CVAT (through Datumaro) writes every mask as uncompressed RLE with iscrowd 1, a crowd or one bottle alike:
    the objects drawn as masks were carried as crowd regions, which training leaves out, with no word."""
    import subprocess

    from click.testing import CliRunner

    from edge_trash.cli import cli
    from edge_trash.tfrecords.analyze import analyze

    images, anns = [], []
    for i in range(6):
        _jpeg(tmp_path / "images" / f"IMG_{i}.jpg", (64, 48), (30 * i, 90, 90))
        images.append({"id": i + 1, "file_name": f"IMG_{i}.jpg", "width": 64, "height": 48, "license": 0,
                       "flickr_url": "", "coco_url": "", "date_captured": 0})
        anns.append({"id": 2 * i + 1, "image_id": i + 1, "category_id": 1, "iscrowd": 0, "area": 300.0,
                     "segmentation": [[4, 4, 24, 4, 24, 19, 4, 19]], "bbox": [4, 4, 20, 15],
                     "attributes": {"occluded": False}})
        anns.append({"id": 2 * i + 2, "image_id": i + 1, "category_id": 1 + i % 2, "iscrowd": 1, "area": 200.0,
                     "segmentation": {"counts": [30 * 48 + 10, 20, 28, 20, 64 * 48], "size": [48, 64]},
                     "bbox": [30, 10, 10, 20], "attributes": {"occluded": False}})
    ann = tmp_path / "instances_default.json"
    ann.write_text(json.dumps({"licenses": [{"name": "", "id": 0, "url": ""}], "images": images,
                               "annotations": anns, "categories": [{"id": 1, "name": "bottle", "supercategory": ""},
                                                                   {"id": 2, "name": "can", "supercategory": ""}]}))
    args = ["--images", str(tmp_path / "images"), "--val-fraction", "0", "--test-fraction", "0"]
    result = CliRunner().invoke(cli, ["build-tfrecords", "--annotations", str(ann), "--out", str(tmp_path / "o1"),
                                      *args])
    assert result.exit_code == 0, result.output
    fixed = tmp_path / "instances_default_masks_as_objects.json"
    fix = ("python -c \"import json, sys; d = json.load(open(sys.argv[1])); [a.update(iscrowd=0) for a in "
           "d['annotations'] if a.get('iscrowd') and isinstance(a.get('segmentation'), dict)]; json.dump(d, "
           f"open(sys.argv[2], 'w'))\" {ann} {fixed}")
    said = ("6 annotations are masks with iscrowd 1 (annotation ids 2, 4, 6, 8, 10 and 1 more), as CVAT exports "
            "every mask, whether it covers a crowd or one object: training leaves crowd regions out, so these "
            f"objects are not learned. If each is one object, set their iscrowd to 0 ({fix}) and build again; or "
            "export from CVAT with polygons instead of masks")
    assert f"warning: {said}" in result.output.splitlines()
    report = json.loads((tmp_path / "o1" / "report.json").read_text())
    assert report["crowd_masks_warning"] == said and report["splits"]["train"]["crowd_boxes"] == 6
    stats = analyze(ann, None, out=tmp_path / "a1", plots=False)
    assert [f["message"] for f in stats["flags"] if f["kind"] == "crowd_masks"] == [said]
    subprocess.run(fix.replace("python", sys.executable, 1), shell=True, check=True)  # what the user copies
    result = CliRunner().invoke(cli, ["build-tfrecords", "--annotations", str(fixed), "--out", str(tmp_path / "o2"),
                                      *args])
    report = json.loads((tmp_path / "o2" / "report.json").read_text())
    assert report["crowd_masks_warning"] is None and report["splits"]["train"].get("crowd_boxes", 0) == 0
    assert [(c["name"], c["boxes"]) for c in report["classes"]] == [("bottle", 9), ("can", 3)]
    # COCO's own crowd regions (no CVAT attributes) are crowds
    for a in anns:
        del a["attributes"]
    ann.write_text(json.dumps({"images": images, "annotations": anns,
                               "categories": [{"id": 1, "name": "bottle"}, {"id": 2, "name": "can"}]}))
    stats = analyze(ann, None, out=tmp_path / "a2", plots=False)
    assert stats["annotations"]["problems"]["crowd_masks_warning"] is None


def test_an_annotation_file_without_one_annotation_is_said_to_become_background(tmp_path):
    """Unlabelled frames (ZeroWaste-s ships them with "annotations": []) merged with a labelled split: every one was
    written as background, so the litter in them was trained as not litter, and no line of the summary said so."""
    from click.testing import CliRunner

    from edge_trash.cli import cli

    (tmp_path / "train").mkdir()
    labelled = _one_can_per_image(tmp_path / "train" / "labels.json", [f"{i}.jpg" for i in range(6)])
    for i in range(6):
        _jpeg(tmp_path / "train" / f"{i}.jpg", (64, 48), (30 * i, 90, 90))
        _jpeg(tmp_path / "unlabelled" / f"u{i}.jpg", (64, 48), (90, 30 * i, 90))
    unlabelled = tmp_path / "unlabelled" / "labels.json"
    unlabelled.write_text(json.dumps({"images": [{"id": i, "file_name": f"u{i}.jpg", "width": 64, "height": 48}
                                                 for i in range(4)],
                                      "annotations": [], "categories": [{"id": 1, "name": "can"}]}))
    result = CliRunner().invoke(cli, ["build-tfrecords", "--annotations", str(labelled), "--annotations",
                                      str(unlabelled), "--out", str(tmp_path / "out"), "--val-fraction", "0.2",
                                      "--test-fraction", "0"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    by_split = json.loads((tmp_path / "out" / "report.json").read_text())["background_images_by_split"]
    assert sum(by_split.values()) == 4 and by_split["train"] and by_split.get("val")
    assert (f"background images (no box): {by_split['train']} the model learns from (what is not an object); "
            f"{by_split['val']} in val/test (any detection on them counts as a false positive)") in lines
    assert (f"warning: {unlabelled} has 4 images and not one annotation: they are written as background, so any "
            "object in them is trained as not an object; if they are unlabelled, leave the file out") in lines
    test_file = tmp_path / "test" / "labels.json"  # kept as the test split: never trained on
    test_file.parent.mkdir()
    test_file.write_text(unlabelled.read_text().replace('"u', '"../unlabelled/u'))
    result = CliRunner().invoke(cli, ["build-tfrecords", "--annotations", str(labelled), "--annotations",
                                      str(test_file), "--out", str(tmp_path / "kept"), "--keep-splits"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert "background images (no box): 4 in val/test (any detection on them counts as a false positive)" in lines
    assert (f"warning: {test_file} has 4 images and not one annotation: they are kept as val/test images without "
            "objects, so any detection on them counts as a false positive; if they are unlabelled, leave the file "
            "out") in lines
    result = CliRunner().invoke(cli, ["build-tfrecords", "--annotations", str(labelled), "--out",
                                      str(tmp_path / "out2")])
    assert result.exit_code == 0 and "background" not in result.output


@pytest.mark.parametrize("how", ["field", "folder"])
def test_one_annotation_file_naming_each_images_split_keeps_them_with_keep_splits(tmp_path, how):
    """One COCO file for every split, each entry's split in a 'split' field or its file_name's folder: --keep-splits
    refused, advising a split word in the file's name, which then put val and test into train."""
    from click.testing import CliRunner

    from edge_trash.cli import cli

    tmp_path = tmp_path / "ds"  # pytest's folder name holds 'test', a split word
    images, anns = [], []
    for i, split in enumerate(["train"] * 6 + ["valid"] * 3 + ["test"] * 3):
        name = f"{i}.jpg" if how == "field" else f"images/{split}/{i}.jpg"
        _jpeg(tmp_path / name, (64, 48), (20 * i, 90, 90))
        images.append({"id": i, "file_name": name, "width": 64, "height": 48, **({"split": split} if how == "field"
                                                                                   else {})})
        anns.append({"id": i, "image_id": i, "category_id": 1, "bbox": [4, 4, 20, 20]})
    ann = tmp_path / "annotations.json"
    ann.write_text(json.dumps({"images": images, "annotations": anns, "categories": [{"id": 1, "name": "can"}]}))
    args = ["build-tfrecords", "--annotations", str(ann), "--images", str(tmp_path)]
    result = CliRunner().invoke(cli, [*args, "--out", str(tmp_path / "kept"), "--keep-splits"])
    assert result.exit_code == 0, result.output
    splits = json.loads((tmp_path / "kept" / "splits.json").read_text())["splits"]
    assert {k: sorted(v) for k, v in splits.items()} == {"train": [0, 1, 2, 3, 4, 5], "val": [6, 7, 8],
                                                         "test": [9, 10, 11]}
    result = CliRunner().invoke(cli, [*args, "--out", str(tmp_path / "new")])
    assert ("note: the annotations name their images' splits (train, val, test); their images were pooled and split "
            "anew (stratified by class); --keep-splits keeps the dataset's own splits (to compare with results "
            "published on them)") in result.output.splitlines()
    images[0].pop("split", None)
    images[0]["file_name"] = "0.jpg"
    _jpeg(tmp_path / "0.jpg", (64, 48))
    ann.write_text(json.dumps({"images": images, "annotations": anns, "categories": [{"id": 1, "name": "can"}]}))
    result = CliRunner().invoke(cli, [*args, "--out", str(tmp_path / "mixed"), "--keep-splits"])
    assert result.exit_code == 1 and (
        f"--keep-splits: cannot tell the split of {ann} from its name or folder (put 'train', 'valid' or 'test' in "
        "it), nor of each of its images (a 'split' field, or a split folder in file_name), or leave --keep-splits out "
        "for a new stratified split") in " ".join(result.output.split())


def test_the_split_an_annotation_file_names_wins_over_folders_in_its_file_names(tmp_path):
    """Per-image splits are for a file that names none: train.json and val.json whose photos sit in 'field_test/'
    went to test, and LVIS's val (photos in COCO's train2017/ and val2017/ by coco_url) into train."""
    from edge_trash.tfrecords.coco import load_coco_files

    for split, ids in (("train", range(0, 6)), ("val", range(6, 9))):
        for i in ids:
            _jpeg(tmp_path / "field_test" / f"{i}.jpg", (64, 48), (20 * i, 90, 90))
        (tmp_path / f"{split}.json").write_text(json.dumps({
            "images": [{"id": i, "file_name": f"field_test/{i}.jpg", "width": 64, "height": 48} for i in ids],
            "annotations": [{"id": i, "image_id": i, "category_id": 1, "bbox": [4, 4, 20, 20]} for i in ids],
            "categories": [{"id": 1, "name": "can"}]}))
    report = build_tfrecords(BuildOptions(annotations=[tmp_path / "train.json", tmp_path / "val.json"],
                                          images=tmp_path, out=tmp_path / "out", keep_splits=True))
    splits = json.loads((tmp_path / "out" / "splits.json").read_text())["splits"]
    assert {k: sorted(v) for k, v in splits.items()} == {"train": [0, 1, 2, 3, 4, 5], "val": [6, 7, 8]}
    assert report["splits_named_per_image"] == {}
    lvis = tmp_path / "lvis_v1_val.json"  # no file_name: its coco_url's path, COCO's train2017/ folder, is no split
    lvis.write_text(json.dumps({"images": [{"id": 1, "coco_url": "http://images.cocodataset.org/train2017/1.jpg",
                                            "width": 64, "height": 48}],
                                "annotations": [], "categories": [{"id": 1, "name": "can"}]}))
    assert [im.split for im in load_coco_files([lvis]).images] == [None]
    from edge_trash.tfrecords.coco import split_of_entry  # a folder is a split only by that word alone

    assert [split_of_entry({"file_name": n}) for n in ("images/train/a.jpg", "val2017/b.jpg", "Valid/c.jpg",
                                                       "test_site/d.jpg", "training_day/e.jpg", "f.jpg")] == [
        "train", "val", "val", None, None, None]
    assert split_of_entry({"file_name": "train/a.jpg", "split": "valid"}) == "val"  # the field first


# ----------------------------------------------------------------------------- hand-made and odd exports


def _cli(args):
    from click.testing import CliRunner

    from edge_trash.cli import cli

    return CliRunner().invoke(cli, args)


def test_a_malformed_bbox_beside_a_usable_polygon_takes_the_polygons_box_and_says_so(tmp_path):
    # [10, 10, 50], text, nested or an object as 'bbox' dropped the annotation although its polygon held the box.
    from edge_trash.tfrecords.coco import load_coco

    polygon = [[10, 10, 50, 10, 50, 40, 10, 40]]
    bboxes = {1: [10, 10, 50], 2: "10 10 50 40", 3: [[10, 10, 40, 30]], 4: {"x": 10}, 5: [10, 10, 40, 30, 15]}
    anns = [{"id": k, "image_id": 1, "category_id": 1, "bbox": b, "segmentation": polygon} for k, b in bboxes.items()]
    anns.append({"id": 6, "image_id": 1, "category_id": 1, "bbox": [10, 10, 50]})  # no polygon: still dropped
    anns.append({"id": 7, "image_id": 1, "category_id": 1, "bbox": ["1", "2", "30", "20"], "segmentation": polygon})
    ann = tmp_path / "ann.json"
    ann.write_text(json.dumps({"images": [{"id": 1, "file_name": "a.jpg", "width": 64, "height": 48}],
                               "annotations": anns, "categories": [{"id": 1, "name": "can"}]}))
    data = load_coco(ann)
    assert [(b.source_id, (b.x, b.y, b.w, b.h)) for b in data.boxes] == (
        [(k, (10.0, 10.0, 40.0, 30.0)) for k in range(1, 6)] + [(7, (1.0, 2.0, 30.0, 20.0))])  # text numbers: read
    assert data.bbox_unreadable_boxed_from_mask == [1, 2, 3, 4, 5] and data.boxes_from_segmentation == 5
    assert [(r.record_id, r.reason) for r in data.rejected_boxes] == [
        (6, "'bbox' must be a list [x, y, width, height], got [10, 10, 50]")]
    from edge_trash.tfrecords.build import reason_kind  # the summary counts them as one kind, whatever they hold

    assert {reason_kind(f"'bbox' must be a list [x, y, width, height], got {b!r}") for b in bboxes.values()} == {
        "'bbox' must be a list …"}
    assert reason_kind("'bbox' has 5 values, [10, 10, 40, 30, 15]: a rotated box") == "'bbox' has … values"
    _jpeg(tmp_path / "a.jpg", (64, 48))
    result = _cli(["build-tfrecords", "--annotations", str(ann), "--out", str(tmp_path / "out"), "--quiet"])
    assert ("note: 5 annotations have a 'bbox' that is not [x, y, width, height] (too few or many values, text, an "
            "object): the box around their segmentation was used instead (annotation ids 1, 2, 3, 4, 5)"
            in result.output)
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["bbox_unreadable_boxed_from_mask"] == [1, 2, 3, 4, 5] and report["boxes_written"] == 6


def test_a_mask_whose_size_is_not_the_images_height_and_width_is_dropped_with_why(tmp_path):
    # size [400, 300] on a 400x300 image (COCO's order is [height, width]) gave a wrong box, silently.
    from pycocotools import mask as mask_utils

    from edge_trash.tfrecords.coco import load_coco

    def rle(height, width):
        mask = np.zeros((height, width), np.uint8, order="F")
        mask[50:100, 100:250] = 1
        encoded = mask_utils.encode(mask)
        return {"counts": encoded["counts"].decode("ascii"), "size": [height, width]}

    swapped = rle(400, 300)  # encoded as if the 400x300 image were 300 wide
    anns = [{"id": 1, "image_id": 1, "category_id": 1, "segmentation": rle(300, 400)},
            {"id": 2, "image_id": 1, "category_id": 1, "segmentation": swapped},
            {"id": 3, "image_id": 1, "category_id": 1, "segmentation": rle(150, 400)}]
    ann = tmp_path / "ann.json"
    ann.write_text(json.dumps({"images": [{"id": 1, "file_name": "a.jpg", "width": 400, "height": 300}],
                               "annotations": anns, "categories": [{"id": 1, "name": "can"}]}))
    data = load_coco(ann)
    assert [(b.source_id, (b.x, b.y, b.w, b.h)) for b in data.boxes] == [(1, (100.0, 50.0, 150.0, 50.0))]
    assert [(r.record_id, r.reason) for r in data.rejected_boxes] == [
        (2, "no 'bbox', and its mask's 'size' [400, 300] is [width, height] of the 400x300 image, where COCO's RLE "
            "takes [height, width]: the box read from it would be wrong; export the masks again"),
        (3, "no 'bbox', and its mask's 'size' [150, 400] is not the image's [height, width], [300, 400]: a box read "
            "from it would be in other pixels; export the masks again at the image's size")]


def test_two_exports_joined_by_hand_keep_each_repeated_category_once(tmp_path):
    # Concatenating two COCO files' lists repeats every category: that stopped the build with "id 1 is used twice".
    from edge_trash.tfrecords.coco import CocoFormatError, load_coco

    cats = [{"id": 1, "name": "bottle", "supercategory": "Bottle"}, {"id": 2, "name": "can", "supercategory": "Can"}]
    ann = _one_can_per_image(tmp_path / "joined.json", ["1.jpg", "2.jpg"])
    raw = json.loads(ann.read_text())
    raw["categories"] = cats + [dict(c) for c in cats]
    ann.write_text(json.dumps(raw))
    data = load_coco(ann)
    assert [(c.id, c.name) for c in data.categories] == [(1, "bottle"), (2, "can")]
    assert data.repeated_categories == [1, 2]
    for name in ("1.jpg", "2.jpg"):
        _jpeg(tmp_path / name, (64, 48))
    result = _cli(["build-tfrecords", "--annotations", str(ann), "--out", str(tmp_path / "out"), "--quiet",
                   "--val-fraction", "0.5", "--test-fraction", "0"])
    assert result.exit_code == 0, result.output
    assert ("note: 2 categories are listed twice alike (id, name and supercategory; two exports joined by hand?), "
            "each kept once: ids 1, 2") in result.output
    raw["categories"][3] = {"id": 2, "name": "tin", "supercategory": "Can"}  # the same id, another class: an error
    ann.write_text(json.dumps(raw))
    with pytest.raises(CocoFormatError, match=r"categories\[3\]\.id: id 2 is used twice \('can' and 'tin'\)"):
        load_coco(ann)


def test_a_name_saved_with_its_percent_escape_is_found_in_a_sub_folder(tmp_path):
    # wget saves 'beach%20litter.jpg' under that very name; the sub-folder search only tried 'beach litter.jpg'.
    root = tmp_path / "data"
    for rel in ("images/beach%20litter.jpg", "images/with space.jpg"):
        _jpeg(root / rel, (8, 8))
    paths = ImagePaths(root)
    assert paths.resolve("beach%20litter.jpg") == (
        root / "images/beach%20litter.jpg",
        "file_name 'beach%20litter.jpg' not found as given; read 'images/beach%20litter.jpg', the only file of that "
        "name under the images folder")
    assert paths.resolve("with%20space.jpg")[0] == root / "images/with space.jpg"  # the escaped form still wins


@pytest.mark.parametrize("content,message", [
    (b"", "the file is empty (an export or download that did not finish?); export the annotations again in COCO "
          "JSON format"),
    (b"  \n", "the file is empty"),
    (b'{"images": [{"id": ' + b"9" * 5000 + b"}]}",
     "cannot be read: Exceeds the limit (4300 digits) for integer string conversion: value has 5000 digits (a "
     "number of thousands of digits); fix that value in the file"),
    (b"[" * 100_000, "nested too deeply to read (about a thousand '[' or '{' inside each other): not a COCO file"),
])
def test_empty_huge_number_and_deeply_nested_files_get_one_line_not_a_traceback(tmp_path, content, message):
    from edge_trash.tfrecords.coco import CocoFormatError, load_coco

    ann = tmp_path / "ann.json"
    ann.write_bytes(content)
    with pytest.raises(CocoFormatError) as err:
        load_coco(ann)
    assert str(err.value).startswith(f"{ann}: {message}")
    result = _cli(["analyze", "--annotations", str(ann), "--out", str(tmp_path / "a"), "--quiet"])
    assert result.exit_code == 1 and f"{ann}: {message}" in result.output and "Traceback" not in result.output


def test_16_bit_images_using_a_narrow_band_of_values_keep_their_contrast(tmp_path):
    # 12-bit sensor data (0-4095) was stored as 0-15 and thermal counts (7000-9000) as 27-35: nearly flat.
    from edge_trash.tfrecords.build_cli import _note_kind
    from edge_trash.tfrecords.images import to_rgb

    ramp = np.arange(64 * 48, dtype=np.float64).reshape(48, 64) / (64 * 48 - 1)
    cases = {"12-bit": (ramp * 4095, 0, 4095, "6.2%"), "thermal": (7000 + ramp * 2000, 7000, 9000, "3.1%"),
             "16-bit": (ramp * 65535, None, None, None)}
    for name, (values, low, high, share) in cases.items():
        img = Image.fromarray(values.round().astype(np.uint16))
        img.save(tmp_path / f"{name}.png")
        notes = []
        with Image.open(tmp_path / f"{name}.png") as read:
            out = np.asarray(to_rgb(read, notes))
        assert (out.min(), out.max()) == (0, 255), name  # each keeps the full 8-bit range
        mode = Image.open(tmp_path / f"{name}.png").mode
        if low is None:
            assert notes == [f"converted {mode} (values 0-65535) to 8-bit RGB"]
            continue
        assert notes == [f"stretched {mode} values {low}-{high} to 8-bit RGB 0-255: they use {share} of 0-65535 "
                         "(12-bit sensor or thermal data?), which scaled as 16 bits would be nearly flat"]
        assert _note_kind(notes[0]) == "narrow 16-bit values stretched to 0-255"
    assert _note_kind("image id '123456789012345678901234' is beyond 64-bit integers: numbered 3 (splits.json "
                      "and image/source_id hold the number)") == "image id beyond 64 bits numbered"


def test_width_and_height_swapped_in_the_json_are_told_apart_from_a_lost_exif_tag(tmp_path):
    # A converter that wrote width, height = img.shape[:2]: every photo was skipped as a lost EXIF tag, and the
    # advice (rotate the photos) would have put every box wrong. Its boxes run past the JSON's size, inside the file.
    from edge_trash.tfrecords.analyze import analyze

    names = ["swapped.jpg", "lost_tag.jpg", "all_outside.jpg"]
    for name in names:
        _jpeg(tmp_path / name, (640, 480))
    ann = tmp_path / "ann.json"
    ann.write_text(json.dumps({
        "images": [{"id": i + 1, "file_name": n, "width": 480, "height": 640} for i, n in enumerate(names)],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [504.8, 12.2, 80, 80]},  # past x 480
                        {"id": 2, "image_id": 1, "category_id": 1, "bbox": [10, 10, 80, 80]},
                        {"id": 3, "image_id": 2, "category_id": 1, "bbox": [10, 500, 80, 80]},  # fits 480x640
                        {"id": 4, "image_id": 3, "category_id": 1, "bbox": [500, 10, 80, 80]},  # outside 480x640
                        {"id": 5, "image_id": 4, "category_id": 1, "bbox": [10, 10, 80, 80]}],
        "categories": [{"id": 1, "name": "can"}]}))
    raw = json.loads(ann.read_text())  # one good image, so that the build writes something
    raw["images"].append({"id": 4, "file_name": "good.jpg", "width": 640, "height": 480})
    ann.write_text(json.dumps(raw))
    _jpeg(tmp_path / "good.jpg", (640, 480))
    report = build_tfrecords(BuildOptions(annotations=ann, images=tmp_path, out=tmp_path / "out", val_fraction=0,
                                          test_fraction=0))
    reasons = {s["file_name"]: s["reason"] for s in report["images_skipped"]}
    assert reasons["swapped.jpg"] == (
        "its file is the JSON's 480x640 turned a quarter turn, and its boxes reach x 584.8, y 92.2: past the JSON's "
        "size, inside the turned one. The JSON's width and height look swapped (a converter that wrote the height as "
        "the width?): swap them in the JSON and run again (the boxes past the JSON's size were clipped or dropped "
        "against it)")
    assert "and the file has no EXIF rotation: it was probably annotated" in reasons["lost_tag.jpg"]
    assert reasons["all_outside.jpg"].endswith(
        "(they reach x 580, y 90: past the JSON's 480x640, inside it turned a quarter turn: are its width and height "
        "swapped?)")
    stats = analyze(annotations=ann, images=tmp_path, out=tmp_path / "a", plots=False)
    predicted = {m["file_name"]: m["what"] for m in stats["annotations"]["image_sizes"]["json_mismatch"]}
    assert predicted["swapped.jpg"] == reasons["swapped.jpg"]
    assert predicted["lost_tag.jpg"] == reasons["lost_tag.jpg"]


def test_a_file_whose_every_box_is_a_crowd_region_is_told_how_to_make_them_objects(tmp_path):
    # Masks exported with iscrowd 1 by a tool other than CVAT: exit 0 with a warning with no fix, and nothing
    # learnable; now nothing to train on, and the command that makes them objects.
    import shlex

    ann = _one_can_per_image(tmp_path / "ann.json", [f"{i}.jpg" for i in range(6)])
    raw = json.loads(ann.read_text())
    for a in raw["annotations"]:
        a["iscrowd"] = 1
    ann.write_text(json.dumps(raw))
    for i in range(6):
        _jpeg(tmp_path / f"{i}.jpg", (64, 48), (40 * i, 40, 40))
    result = _cli(["build-tfrecords", "--annotations", str(ann), "--out", str(tmp_path / "out"), "--quiet"])
    fixed = tmp_path / "ann_as_objects.json"
    fix = ("python -c \"import json, sys; d = json.load(open(sys.argv[1])); [a.update(iscrowd=0) for a in "
           "d['annotations'] if a.get('iscrowd')]; json.dump(d, open(sys.argv[2], 'w'))\" "
           f"{ann} {fixed}")
    assert result.exit_code == 1 and not (tmp_path / "out").exists()  # nothing to train on: no records
    assert ("nothing to train on: every one of the 6 usable boxes is a crowd region (iscrowd 1): training and COCO's "
            "AP leave crowd regions out, so nothing would be learned. If each is one object, as an export that marks "
            f"every mask so writes them, set iscrowd to 0 ({fix}) and build again") in result.output
    command = shlex.split(fix)
    subprocess.run([sys.executable, *command[1:]], check=True)  # the command as printed does what it says
    assert {a["iscrowd"] for a in json.loads(fixed.read_text())["annotations"]} == {0}
    raw["annotations"][0]["iscrowd"] = 0  # one object among crowd regions: a real crowd, no warning
    ann.write_text(json.dumps(raw))
    from edge_trash.tfrecords.coco import load_coco

    assert load_coco(ann).crowd_masks_warning() is None
