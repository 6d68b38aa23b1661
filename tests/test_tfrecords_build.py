"""build-tfrecords: schema round trip, EXIF, bad input, determinism, atomic shards."""

from __future__ import annotations

import io
import json
import math
import os
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edge_trash.tfrecords.build import BuildOptions, build_tfrecords
from edge_trash.tfrecords.coco import CocoFormatError, load_coco


def _records(path: Path):
    import tensorflow as tf

    return [r.numpy() for r in tf.data.TFRecordDataset(str(path))]


def _all_records(out: Path, split: str):
    recs = []
    for shard in sorted(out.glob(f"{split}-*-of-*.tfrecord")):
        recs.extend(_records(shard))
    return recs


def _reasons(report, key, record_key):
    return {item[record_key]: item["reason"] for item in report[key]}


def test_model_garden_decoder_reads_our_records_exactly(sample_dataset, sample_build):
    from official.vision.dataloaders.tf_example_decoder import TfExampleDecoder

    out, report = sample_build
    coco = json.loads(sample_dataset.annotations.read_text())
    images = {im["id"]: im for im in coco["images"]}
    names = (out / "labels.txt").read_text().splitlines()
    cat_name = {c["id"]: c["name"] for c in coco["categories"]}
    decoder = TfExampleDecoder(include_mask=False)
    seen = 0
    for split in report["splits"]:
        for rec in _all_records(out, split):
            d = decoder.decode(rec)
            iid = int(d["source_id"].numpy())
            im = images[iid]
            expected = []
            for a in coco["annotations"]:
                if a["image_id"] != iid or a["category_id"] not in cat_name or cat_name[a["category_id"]] not in names:
                    continue
                x, y, w, h = a["bbox"]
                if not all(math.isfinite(v) for v in (x, y, w, h)):
                    continue
                x0, y0 = max(0, x), max(0, y)
                x1, y1 = min(im["width"], x + w), min(im["height"], y + h)
                expected.append([y0 / im["height"], x0 / im["width"], y1 / im["height"], x1 / im["width"]])
            boxes = d["groundtruth_boxes"].numpy()
            assert boxes.shape == (len(expected), 4)
            if expected:
                np.testing.assert_allclose(boxes, np.array(expected), atol=1e-6)
            classes = d["groundtruth_classes"].numpy()
            assert classes.min(initial=1) >= 1 and classes.max(initial=1) <= len(names)
            img = d["image"].numpy()
            assert img.shape[2] == 3 and max(img.shape[:2]) <= 640
            assert (int(d["height"]), int(d["width"])) == img.shape[:2]
            seen += 1
    assert seen == report["images_written"] > 0


def test_every_source_box_and_image_is_accounted_for(sample_build):
    _, report = sample_build
    assert report["boxes_total"] == report["boxes_written"] + len(report["boxes_dropped"])
    assert report["images_total"] == report["images_written"] + len(report["images_skipped"])
    assert sum(s["boxes"] for s in report["splits"].values()) == report["boxes_written"]
    assert sum(c["boxes"] for c in report["classes"]) == report["boxes_written"]
    # a box of a skipped image says so once; why the image was skipped is in images_skipped (a COCO-size file
    # with most photos missing repeated each image's reason on every box: 95 MB of a 123 MB report.json)
    skipped = {s["image_id"] for s in report["images_skipped"]}
    of_skipped = [d for d in report["boxes_dropped"] if d["image_id"] in skipped]
    assert of_skipped and {d["reason"] for d in of_skipped} == {"its image was skipped"}


def test_each_planted_problem_is_reported_with_its_reason(sample_dataset, sample_build):
    _, report = sample_build
    inj = sample_dataset.injected
    skipped = _reasons(report, "images_skipped", "image_id")
    assert skipped[inj["missing_file"][0]].startswith("file not found")
    assert skipped[inj["empty_file"][0]].startswith("empty file (0 bytes)")
    assert skipped[inj["not_an_image"][0]].startswith("not an image Pillow can decode")
    assert skipped[inj["truncated"][0]].startswith("truncated or corrupt image data")
    assert len(skipped) == 4
    dropped = _reasons(report, "boxes_dropped", "annotation_id")
    assert "NaN or Infinity" in dropped[inj["nan_box"][0]]
    assert "NaN or Infinity" in dropped[inj["infinity_box"][0]]
    assert dropped[inj["unknown_category"][0]] == "unknown category_id 99 (not in 'categories')"
    assert dropped[inj["unknown_image"][0]] == "unknown image_id 999999 (no entry in 'images')"
    assert report["duplicate_annotation_ids"] == inj["duplicate_annotation_id"]
    assert report["boxes_clipped"] == 1
    assert report["classes_unused"] == ["litter-objects"]
    notes = {n["image_id"]: " ".join(n["notes"]) for n in report["image_notes"]}
    for iid in inj["exif_rotated"]:
        assert "applied EXIF orientation" in notes[iid]
    assert "converted L to RGB" in notes[inj["grayscale"][0]]
    assert "converted CMYK to RGB" in notes[inj["cmyk"][0]]
    assert "flattened RGBA transparency" in notes[inj["rgba_png"][0]]
    # background images are kept as records with no boxes
    assert report["background_images"] == len(inj["background"])


def test_both_twins_of_a_duplicate_annotation_id_are_written(sample_dataset, sample_build):
    out, report = sample_build
    dup = sample_dataset.injected["duplicate_annotation_id"][0]
    coco = json.loads(sample_dataset.annotations.read_text())
    twins = [a for a in coco["annotations"] if a["id"] == dup]
    assert len(twins) == 2
    dropped_ids = {d["annotation_id"] for d in report["boxes_dropped"]}
    assert dup not in dropped_ids


def _exif_jpeg(display: Image.Image, orientation: int) -> bytes:
    stored = {6: display.transpose(Image.Transpose.ROTATE_90), 8: display.transpose(Image.Transpose.ROTATE_270),
              3: display.transpose(Image.Transpose.ROTATE_180)}[orientation]
    exif = Image.Exif()
    exif[0x0112] = orientation
    buf = io.BytesIO()
    stored.save(buf, format="JPEG", quality=95, exif=exif.tobytes())
    return buf.getvalue()


@pytest.mark.parametrize("orientation", [6, 8, 3])
def test_exif_rotated_box_lands_on_the_drawn_object(tmp_path, orientation):
    import tensorflow as tf

    width, height = 1200, 900  # displayed size, as the JSON states it
    box = (700, 150, 260, 420)  # x, y, w, h of a red block in the displayed picture
    display = Image.new("RGB", (width, height), (30, 90, 30))
    display.paste((230, 20, 20), (box[0], box[1], box[0] + box[2], box[1] + box[3]))
    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "a.jpg").write_bytes(_exif_jpeg(display, orientation))
    coco = {"images": [{"id": 1, "file_name": "a.jpg", "width": width, "height": height}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": list(box), "iscrowd": 0}],
            "categories": [{"id": 1, "name": "block"}]}
    (tmp_path / "a.json").write_text(json.dumps(coco))
    report = build_tfrecords(BuildOptions(annotations=tmp_path / "a.json", images=tmp_path / "img",
                                          out=tmp_path / "out", val_fraction=0, test_fraction=0, max_size=400))
    assert report["images_written"] == 1
    ex = tf.train.Example.FromString(_all_records(tmp_path / "out", "train")[0])
    f = ex.features.feature
    img = np.array(Image.open(io.BytesIO(f["image/encoded"].bytes_list.value[0])).convert("RGB")).astype(int)
    assert img.shape[:2] == (300, 400)  # landscape, long side 400
    red = (img[..., 0] > 150) & (img[..., 1] < 90)
    ys, xs = np.nonzero(red)
    h, w = img.shape[:2]
    xmin = f["image/object/bbox/xmin"].float_list.value[0]
    ymin = f["image/object/bbox/ymin"].float_list.value[0]
    xmax = f["image/object/bbox/xmax"].float_list.value[0]
    ymax = f["image/object/bbox/ymax"].float_list.value[0]
    assert abs(xs.min() - xmin * w) <= 2 and abs(xs.max() + 1 - xmax * w) <= 2
    assert abs(ys.min() - ymin * h) <= 2 and abs(ys.max() + 1 - ymax * h) <= 2


def _tiny_coco(tmp_path: Path, images, annotations, categories=None) -> Path:
    path = tmp_path / "ann.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations,
                                "categories": categories or [{"id": 1, "name": "can"}]}))
    return path


def _solid_jpeg(path: Path, size, color=(120, 120, 120), fmt="JPEG", mode="RGB"):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, color if mode == "RGB" else 0).save(path, format=fmt)


def _cans_and_cups(ann: Path, root: Path, folder: str = "", count: int = 20, names=("can", "cup")) -> None:
    """``count`` photos under ``root`` (``folder`` + ``1.jpg``..), photo i of one box of class
    ``names[i % len(names)]``, and their COCO file ``ann``."""
    coco = {"images": [], "annotations": [],
            "categories": [{"id": k, "name": n} for k, n in enumerate(names, 1)]}
    for i in range(1, count + 1):
        _solid_jpeg(root / f"{folder}{i}.jpg", (64, 48), (200 * i // count, 70, 70))
        coco["images"].append({"id": i, "file_name": f"{folder}{i}.jpg", "width": 64, "height": 48})
        coco["annotations"].append({"id": i, "image_id": i, "category_id": 1 + i % len(names),
                                    "bbox": [3, 3, 20, 20]})
    ann.parent.mkdir(parents=True, exist_ok=True)
    ann.write_text(json.dumps(coco))


def test_size_mismatch_decompression_bomb_and_scaled_image(tmp_path):
    imgs = tmp_path / "img"
    _solid_jpeg(imgs / "ok.jpg", (200, 100))
    _solid_jpeg(imgs / "half.jpg", (100, 50))  # JSON says 200x100: same aspect, boxes scale
    _solid_jpeg(imgs / "wrong.jpg", (100, 100))  # JSON says 200x100: different aspect
    _solid_jpeg(imgs / "big.jpg", (400, 400))
    images = [{"id": 1, "file_name": "ok.jpg", "width": 200, "height": 100},
              {"id": 2, "file_name": "half.jpg", "width": 200, "height": 100},
              {"id": 3, "file_name": "wrong.jpg", "width": 200, "height": 100},
              {"id": 4, "file_name": "big.jpg", "width": 400, "height": 400}]
    anns = [{"id": i, "image_id": i, "category_id": 1, "bbox": [10, 10, 50, 50]} for i in range(1, 5)]
    anns.append({"id": 9, "image_id": 1, "category_id": 1, "bbox": [250, 10, 50, 50]})  # wholly outside
    anns.append({"id": 10, "image_id": 1, "category_id": 1, "bbox": [10, 10, 0, 50]})  # empty
    anns.append({"id": 11, "image_id": 1, "category_id": 1, "bbox": "10,10,5,5"})  # wrong type
    report = build_tfrecords(BuildOptions(annotations=_tiny_coco(tmp_path, images, anns), images=imgs,
                                          out=tmp_path / "out", val_fraction=0, test_fraction=0,
                                          max_pixels=100_000))
    skipped = _reasons(report, "images_skipped", "image_id")
    assert skipped[3].startswith("decoded size 100x100 does not match the JSON size 200x100")
    assert skipped[4].startswith("refused as a decompression bomb: 400x400 = 160,000 pixels")
    notes = {n["image_id"]: n["notes"] for n in report["image_notes"]}
    assert "same aspect ratio" in notes[2][0]
    dropped = _reasons(report, "boxes_dropped", "annotation_id")
    assert "lies outside the 200x100 image" in dropped[9]
    assert "zero or negative size" in dropped[10]
    assert dropped[11].startswith("'bbox' must be a list")
    assert report["images_written"] == 2 and report["boxes_written"] == 2


def test_colour_modes_are_converted_to_rgb(tmp_path):
    imgs = tmp_path / "img"
    imgs.mkdir()
    Image.fromarray((np.arange(64 * 48).reshape(48, 64) * 20).astype(np.uint16)).save(imgs / "a16.png")
    Image.new("P", (64, 48), 3).save(imgs / "pal.png")
    Image.new("RGBA", (64, 48), (255, 0, 0, 128)).save(imgs / "rgba.png")
    Image.new("CMYK", (64, 48), (0, 255, 255, 0)).save(imgs / "cmyk.jpg")
    Image.fromarray(np.full((48, 64), 0.8, np.float32)).save(imgs / "float.tif")  # values 0-1
    frames = [Image.new("RGB", (64, 48), (0, 0, 255)), Image.new("RGB", (64, 48), (255, 255, 0))]
    frames[0].save(imgs / "anim.gif", save_all=True, append_images=frames[1:])
    names = ["a16.png", "pal.png", "rgba.png", "cmyk.jpg", "float.tif", "anim.gif"]
    images = [{"id": i + 1, "file_name": n, "width": 64, "height": 48} for i, n in enumerate(names)]
    anns = [{"id": i + 1, "image_id": i + 1, "category_id": 1, "bbox": [1, 1, 20, 20]} for i in range(len(names))]
    out = tmp_path / "out"
    report = build_tfrecords(BuildOptions(annotations=_tiny_coco(tmp_path, images, anns), images=imgs, out=out,
                                          val_fraction=0, test_fraction=0))
    assert report["images_written"] == len(names)
    notes = {n["image_id"]: " ".join(n["notes"]) for n in report["image_notes"]}
    assert notes[1] == "converted I;16 (values 0-65535) to 8-bit RGB"
    assert "palette" in notes[2] and "RGBA" in notes[3] and "CMYK" in notes[4]
    assert notes[5] == "converted F (values 0-1) to 8-bit RGB"
    assert notes[6].startswith("2 frames (an animation or multi-page file): the first was used")
    from edge_trash.tfrecords.build_cli import _note_kind  # the summary counts each of these notes by kind

    kinds = {n["image_id"]: [_note_kind(t) for t in n["notes"]] for n in report["image_notes"]}
    assert kinds == {i: ["colour mode converted to RGB"] for i in range(1, 6)} | {
        6: ["first frame of an animation used", "colour mode converted to RGB"]}
    import tensorflow as tf

    for rec in _all_records(out, "train"):
        ex = tf.train.Example.FromString(rec)
        decoded = Image.open(io.BytesIO(ex.features.feature["image/encoded"].bytes_list.value[0]))
        assert decoded.mode == "RGB" and decoded.format == "JPEG"
        arr = np.asarray(decoded).astype(int)
        source_id = ex.features.feature["image/source_id"].bytes_list.value[0]
        if source_id == b"1":
            # 16-bit ramp keeps its range: the brightest corner is far above the darkest
            assert arr[-1, -1].mean() - arr[0, 0].mean() > 20
        elif source_id == b"5":  # 0.8 of full scale stays 0.8 (it was black: 0.8 of 255 rounds to 0)
            assert abs(arr.mean() - 204) < 3
        elif source_id == b"6":  # the first frame, blue
            assert arr[..., 2].mean() > 200 and arr[..., 0].mean() < 50


def test_a_multi_page_file_whose_frames_cannot_be_counted_still_converts(tmp_path, monkeypatch):
    # Found by fuzzing: a damaged TIFF raised TypeError from Pillow's n_frames, outside every handler.
    from PIL import TiffImagePlugin

    from edge_trash.tfrecords.images import ImageJob, convert_image

    def broken(self):
        raise TypeError("Missing dimensions")

    monkeypatch.setattr(TiffImagePlugin.TiffImageFile, "n_frames", property(broken))
    Image.new("RGB", (64, 48), (0, 0, 255)).save(tmp_path / "a.tif")
    result = convert_image(ImageJob(1, str(tmp_path / "a.tif"), 64, 48, 640, 10**8, 90))
    assert result.reason == "" and (result.width, result.height) == (64, 48)
    assert not any("frames" in n for n in result.notes)


@pytest.mark.parametrize("content,message", [
    ("{not json", "not valid JSON at line 1"),
    ("[]", "the top level must be a JSON object"),
    ('{"images": [], "annotations": []}', "missing the top-level key 'categories'"),
    ('{"images": {}, "annotations": [], "categories": []}', "'images' must be a list, got dict"),
    ('{"images": [], "annotations": [], "categories": [{"id": 1.5, "name": "a"}]}',
     "categories[0].id: expected an integer, got 1.5"),
    ('{"images": [], "annotations": [], "categories": [{"id": 1}]}',
     "categories[0].name: expected a non-empty string, got None; give the category a name, or remove it when no "
     "annotation uses it"),
    ('{"images": [], "annotations": [], "categories": [{"id": 1, "name": true}]}',
     "categories[0].name: expected a non-empty string, got True"),
])
def test_bad_annotation_files_get_one_clear_error(tmp_path, content, message):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(CocoFormatError) as info:
        load_coco(path)
    assert str(path) in str(info.value)
    assert message in str(info.value)


def test_cli_reports_bad_file_without_traceback(tmp_path):
    from click.testing import CliRunner

    from edge_trash.cli import cli

    (tmp_path / "img").mkdir()
    bad = tmp_path / "bad.json"
    bad.write_text('{"images": 3, "annotations": [], "categories": []}')
    result = CliRunner().invoke(cli, ["build-tfrecords", "--annotations", str(bad), "--images",
                                      str(tmp_path / "img"), "--out", str(tmp_path / "out"), "--quiet"])
    assert result.exit_code == 1
    assert f"Error: {bad}: 'images' must be a list, got int" in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize("options, message", [
    (["--val-fraction", "0.6", "--test-fraction", "0.5"],
     "--val-fraction 0.6 + --test-fraction 0.5 leave no image to train on: their sum must be below 1"),
    (["--folds", "50", "--test-fraction", "0.5"],
     "--folds 50: only 10 images are left for the folds after --test-fraction 0.5 (of 20 usable); give fewer folds"),
    (["--keep-splits", "--split-by", "folder"],
     "--keep-splits and --split-by folder do not combine: the files already fix the splits"),
])
def test_split_options_that_cannot_be_met_get_one_clear_error(tmp_path, options, message):
    from click.testing import CliRunner

    from edge_trash.cli import cli

    images = tmp_path / "img"
    images.mkdir()
    for i in range(20):  # distinct pictures: copies of one file would move between splits as one
        Image.new("RGB", (32, 24), (200, 10 * i, 40)).save(images / f"{i}.jpg")
    ann = tmp_path / "ann.json"
    ann.write_text(json.dumps({
        "images": [{"id": i, "file_name": f"{i}.jpg", "width": 32, "height": 24} for i in range(20)],
        "annotations": [{"id": i, "image_id": i, "category_id": 1, "bbox": [2, 2, 10, 10]} for i in range(20)],
        "categories": [{"id": 1, "name": "can"}]}))
    result = CliRunner().invoke(cli, ["build-tfrecords", "--annotations", str(ann), "--images", str(images),
                                      "--out", str(tmp_path / "out"), "--quiet", "--workers", "1", *options])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert result.output.strip() == f"Error: {message}"


def test_photos_not_found_are_named_though_other_images_were_left_out_for_their_boxes(tmp_path):
    """TACO without its photos: its images whose every box is unusable were left out before any file was looked
    for, and that used to turn the fix (give --images) into "no image could be converted"."""
    from click.testing import CliRunner

    from edge_trash.cli import cli

    ann = _tiny_coco(tmp_path, [{"id": 1, "file_name": "gone.jpg", "width": 10, "height": 10},
                                {"id": 2, "file_name": "flat.jpg", "width": 10, "height": 10}],
                     [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 5, 5]},
                      {"id": 2, "image_id": 2, "category_id": 1, "bbox": [1, 1, 0, 5]}])
    result = CliRunner().invoke(cli, ["build-tfrecords", "--annotations", str(ann), "--out", str(tmp_path / "o"),
                                      "--quiet"])
    assert result.exit_code == 1, result.output
    assert (f"error: none of the 1 image files was found under {tmp_path}: give --images, the folder the file_name "
            "entries are relative to (the first is 'gone.jpg')") in " ".join(result.output.split())


def test_exit_codes_nothing_written_and_strict(tmp_path, sample_dataset):
    from click.testing import CliRunner

    from edge_trash.cli import cli

    imgs = tmp_path / "img"
    imgs.mkdir()
    ann = _tiny_coco(tmp_path, [{"id": 1, "file_name": "gone.jpg", "width": 10, "height": 10}],
                     [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 5, 5]}])
    runner = CliRunner()
    result = runner.invoke(cli, ["build-tfrecords", "--annotations", str(ann), "--images", str(imgs),
                                 "--out", str(tmp_path / "o1"), "--quiet"])
    assert result.exit_code == 1, result.output
    assert "1 skipped of 1" in result.output
    assert (f"error: none of the 1 image files was found under {imgs}: check --images: it must be the folder the "
            "file_name entries are relative to (the first is 'gone.jpg')") in " ".join(result.output.split())
    assert "warning: no training images" not in result.output and "--test-fraction" not in result.output
    result = runner.invoke(cli, ["build-tfrecords", "--annotations", str(ann), "--out", str(tmp_path / "o0"),
                                 "--quiet"])
    assert (f"error: none of the 1 image files was found under {tmp_path}: give --images, the folder the file_name "
            "entries are relative to (the first is 'gone.jpg')") in " ".join(result.output.split())
    result = runner.invoke(cli, ["build-tfrecords", "--annotations", str(sample_dataset.annotations), "--images",
                                 str(sample_dataset.images), "--out", str(tmp_path / "o2"), "--quiet", "--strict"])
    assert result.exit_code == 4, result.output
    assert "--strict: 4 images and" in result.output
    assert "next: edge-trash analyze" not in result.output
    # boxes the options drop (an empty class-map target, --rare drop) are no reason to fail --strict
    good = _tiny_coco(tmp_path, [{"id": i, "file_name": f"{i}.jpg", "width": 64, "height": 48} for i in range(3)],
                      [{"id": i, "image_id": i, "category_id": 1 + i % 2, "bbox": [1, 1, 9, 9]} for i in range(3)],
                      [{"id": 1, "name": "can"}, {"id": 2, "name": "cup"}])
    for i in range(3):
        _solid_jpeg(imgs / f"{i}.jpg", (64, 48), (40 * i, 90, 90))
    class_map = tmp_path / "map.csv"
    class_map.write_text("can,can\ncup,\n")
    for args, dropped in ((["--class-map", str(class_map)], 1), (["--min-instances", "2", "--rare", "drop"], 1),
                          (["--class-map", str(class_map), "--min-instances", "3", "--rare", "drop"], None)):
        out = tmp_path / f"strict{len(args)}"
        result = runner.invoke(cli, ["build-tfrecords", "--annotations", str(good), "--images", str(imgs),
                                     "--out", str(out), "--quiet", "--strict", *args])
        if dropped is None:  # every class dropped: nothing to train on
            assert result.exit_code == 1 and "nothing to train on" in result.output
            continue
        assert result.exit_code == 0, result.output
        report = json.loads((out / "report.json").read_text())
        assert [d["as_asked"] for d in report["boxes_dropped"]] == [True] * dropped
    class_map.write_text("can,can\n")  # cup left out of the map: perhaps an oversight, so --strict fails
    result = runner.invoke(cli, ["build-tfrecords", "--annotations", str(good), "--images", str(imgs),
                                 "--out", str(tmp_path / "unmapped"), "--quiet", "--strict", "--class-map",
                                 str(class_map)])
    assert result.exit_code == 4 and "--strict: 0 images and 1 box were skipped" in result.output


def test_a_build_that_converts_nothing_leaves_the_earlier_build_as_it_was(tmp_path, sample_dataset, sample_build):
    """A mistyped --images (a folder without the photos) replaced a good build by one empty shard, then said
    'error: none of the files was found'. With nothing converted, an earlier build in --out is left alone."""
    import shutil

    from click.testing import CliRunner

    from edge_trash.cli import cli

    out = tmp_path / "b"
    shutil.copytree(sample_build[0], out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    (tmp_path / "empty").mkdir()
    result = CliRunner().invoke(cli, ["build-tfrecords", "--annotations", str(sample_dataset.annotations),
                                      "--images", str(tmp_path / "empty"), "--out", str(out), "--quiet"])
    assert result.exit_code == 1, result.output
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    text = " ".join(result.output.split())
    assert f"build-tfrecords: no image converted, so nothing was written: the earlier build in {out} is as it " \
           "was" in text
    assert "error: none of the" in text and "no box in train" not in text and "replacing" not in text
    result = CliRunner().invoke(cli, ["build-tfrecords", "--annotations", str(sample_dataset.annotations),
                                      "--images", str(tmp_path / "empty"), "--out", str(tmp_path / "new"), "--quiet"])
    assert result.exit_code == 1  # a new folder gets the reasons alone: no empty shard, no "wrote 1 shard"
    assert sorted(p.name for p in (tmp_path / "new").iterdir()) == ["report.json"]
    assert json.loads((tmp_path / "new" / "report.json").read_text())["shards"] == []
    other = tmp_path / "other.json"  # a second failed run there: its reasons replace the first's
    other.write_text(sample_dataset.annotations.read_text().replace("batch_1/", "batch_9/"))
    result = CliRunner().invoke(cli, ["build-tfrecords", "--annotations", str(other), "--images",
                                      str(tmp_path / "empty"), "--out", str(tmp_path / "new"), "--quiet"])
    assert "only report.json (the reasons) was written" in " ".join(result.output.split())
    assert "batch_9/" in (tmp_path / "new" / "report.json").read_text()
    assert (f"build-tfrecords: no image converted, so only report.json (the reasons) was written to {tmp_path / 'new'}"
            in " ".join(result.output.split()))


def test_names_each_in_two_sub_folders_are_not_called_missing(tmp_path):
    """MJU-Waste keeps each photo's depth map under the same name in another folder: every image was skipped as
    ambiguous, then the error said "none of the 3 image files was found" (each was found twice)."""
    from click.testing import CliRunner

    from edge_trash.cli import cli

    for folder in ("RGB", "Depth16"):
        for i in range(3):
            _solid_jpeg(tmp_path / "data" / folder / f"{i}.jpg", (64, 48))
    ann = _tiny_coco(tmp_path, [{"id": i, "file_name": f"{i}.jpg", "width": 64, "height": 48} for i in range(3)],
                     [{"id": i, "image_id": i, "category_id": 1, "bbox": [4, 4, 20, 20]} for i in range(3)])
    result = CliRunner().invoke(cli, ["build-tfrecords", "--annotations", str(ann), "--images", str(tmp_path / "data"),
                                      "--out", str(tmp_path / "out"), "--quiet"])
    assert result.exit_code == 1
    assert ("error: none of the 3 image files could be told apart from another file of its name (each is in several "
            f"sub-folders): give the folder the file_name entries are relative to, one of --images "
            f"{tmp_path / 'data' / 'Depth16'} --images {tmp_path / 'data' / 'RGB'}") in " ".join(result.output.split())
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["folders_sharing_names"] == [str(tmp_path / "data" / "Depth16"), str(tmp_path / "data" / "RGB")]
    from edge_trash.tfrecords.image_paths import folders_of_several

    assert folders_of_several("file_name 'a.jpg' not found as given; read 'b/a.jpg'") == []  # another note
    # a folder of depth maps (MJU-Waste's DepthImages) is passed over as mask folders are: the photos are read
    (tmp_path / "data" / "Depth16").rename(tmp_path / "data" / "DepthImages")
    result = CliRunner().invoke(cli, ["build-tfrecords", "--annotations", str(ann), "--images", str(tmp_path / "data"),
                                      "--out", str(tmp_path / "out"), "--quiet", "--val-fraction", "0"])
    assert result.exit_code == 0 and "images: 3 written, 0 skipped of 3" in result.output


def test_same_inputs_give_identical_bytes_with_any_worker_count(sample_dataset, sample_build, tmp_path):
    out1, _ = sample_build
    build_tfrecords(BuildOptions(annotations=sample_dataset.annotations, images=sample_dataset.images,
                                 out=tmp_path / "w2", shard_size=8, seed=0, workers=2))
    files1 = sorted(p.name for p in out1.iterdir() if p.is_file())
    files2 = sorted(p.name for p in (tmp_path / "w2").iterdir() if p.is_file())
    assert files1 == files2
    for name in files1:
        if name == "report.json":
            r1, r2 = json.loads((out1 / name).read_text()), json.loads((tmp_path / "w2" / name).read_text())
            r1["options"] = r2["options"] = None
            assert r1 == r2
        else:
            assert (out1 / name).read_bytes() == (tmp_path / "w2" / name).read_bytes(), name
    # another seed gives another split
    other = build_tfrecords(BuildOptions(annotations=sample_dataset.annotations, images=sample_dataset.images,
                                         out=tmp_path / "s1", shard_size=8, seed=1))
    s0 = json.loads((out1 / "splits.json").read_text())["splits"]
    s1 = json.loads((tmp_path / "s1" / "splits.json").read_text())["splits"]
    assert s0["val"] != s1["val"] and other["images_written"] == sum(len(v) for v in s1.values())


def test_interrupted_run_leaves_no_half_written_shard(sample_dataset, tmp_path, monkeypatch):
    import edge_trash.tfrecords.build as build_mod

    opts = dict(annotations=sample_dataset.annotations, images=sample_dataset.images, shard_size=4, seed=0)
    build_tfrecords(BuildOptions(out=tmp_path / "before", **opts))
    before = {p.name: p.read_bytes() for p in (tmp_path / "before").iterdir()}
    real_convert, real_read = build_mod.convert_image, build_mod._RecordSpool.read
    calls = {"convert": 0, "read": 0}

    def dying_convert(job):
        calls["convert"] += 1
        if calls["convert"] == 13:
            raise KeyboardInterrupt("simulated Ctrl-C")
        return real_convert(job)

    def dying_read(self, place):
        calls["read"] += 1
        if calls["read"] == 13:
            raise KeyboardInterrupt("simulated Ctrl-C")
        return real_read(self, place)

    # Ctrl-C while converting: nothing is written yet, so the folder still holds the earlier build whole
    monkeypatch.setattr(build_mod, "convert_image", dying_convert)
    with pytest.raises(KeyboardInterrupt):
        build_tfrecords(BuildOptions(out=tmp_path / "before", **dict(opts, seed=1)))
    assert {p.name: p.read_bytes() for p in (tmp_path / "before").iterdir()} == before  # no spool left either
    monkeypatch.setattr(build_mod, "convert_image", real_convert)
    # Ctrl-C while writing the shards (3 of them written): the earlier build is still whole, not a mix of the
    # new train shards and the old val, test and report
    monkeypatch.setattr(build_mod._RecordSpool, "read", dying_read)
    with pytest.raises(KeyboardInterrupt):
        build_tfrecords(BuildOptions(out=tmp_path / "before", **dict(opts, seed=1)))
    assert {p.name: p.read_bytes() for p in (tmp_path / "before").iterdir()} == before  # no temporary file left
    out, calls["read"] = tmp_path / "out", 0
    with pytest.raises(KeyboardInterrupt):
        build_tfrecords(BuildOptions(out=out, **opts))
    assert not out.exists()  # into a new folder: not even the folder is left (an empty one once was)
    out.mkdir()
    calls["read"] = 0
    with pytest.raises(KeyboardInterrupt):
        build_tfrecords(BuildOptions(out=out, **opts))
    assert list(out.iterdir()) == []  # into an empty folder the user made: nothing at all, and the folder stays
    monkeypatch.setattr(build_mod._RecordSpool, "read", real_read)
    build_tfrecords(BuildOptions(out=out, **opts))
    assert {p.name: p.read_bytes() for p in out.iterdir()} == {
        name: data.replace(str(tmp_path / "before").encode(), str(out).encode()) if name == "report.json" else data
        for name, data in before.items()}


@pytest.mark.parametrize("failing", ["shard", "labels.txt", "report.json"])
def test_a_full_disk_leaves_the_earlier_build_as_it_was(sample_dataset, tmp_path, monkeypatch, failing):
    # A full disk while writing the second shard, labels.txt or the report: before, the shards already written
    # replaced the earlier build's, which lost its report (or kept one describing other shards).
    import errno

    import edge_trash.tfrecords.build as build_mod
    from edge_trash.atomic_files import os_error_message

    out = tmp_path / "out"
    opts = dict(annotations=sample_dataset.annotations, images=sample_dataset.images, out=out, shard_size=4)
    build_tfrecords(BuildOptions(seed=0, **opts))
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    full = OSError(errno.ENOSPC, "No space left on device")
    if failing == "shard":
        real_write, written = build_mod.TFRecordWriter.write, []

        def write(self, record):
            written.append(record)
            if len(written) == 5:
                raise full
            real_write(self, record)

        monkeypatch.setattr(build_mod.TFRecordWriter, "write", write)
    else:
        real_write_bytes = Path.write_bytes

        def write_bytes(self, data):
            if self.name == f".{failing}.tmp":
                real_write_bytes(self, data[:10])
                raise OSError(errno.ENOSPC, "No space left on device", str(self))
            return real_write_bytes(self, data)

        monkeypatch.setattr(Path, "write_bytes", write_bytes)
    with pytest.raises(OSError) as caught:
        build_tfrecords(BuildOptions(seed=1, **opts))
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    if failing != "shard":
        assert os_error_message(caught.value, out) == (
            f"cannot write {out / ('.' + failing + '.tmp')}: No space left on device; free space or choose "
            "another --out, and run again")


def test_stale_shards_of_an_earlier_run_are_removed(sample_dataset, tmp_path):
    out = tmp_path / "out"
    opts = dict(annotations=sample_dataset.annotations, images=sample_dataset.images, out=out, seed=0)
    build_tfrecords(BuildOptions(shard_size=4, **opts))
    many = {p.name for p in out.glob("train-*.tfrecord")}
    report = build_tfrecords(BuildOptions(shard_size=1000, **opts))
    now = {p.name for p in out.glob("train-*.tfrecord")}
    assert now == {"train-00000-of-00001.tfrecord"}
    assert set(report["stale_shards_removed"]) >= many - now


def test_splits_are_stratified_and_folds_cover_every_image(sample_dataset, sample_build, tmp_path):
    import tensorflow as tf

    out, report = sample_build
    splits = json.loads((out / "splits.json").read_text())["splits"]
    assert set(splits) == {"train", "val", "test"}
    all_ids = splits["train"] + splits["val"] + splits["test"]
    assert len(all_ids) == len(set(all_ids)) == report["images_written"]

    def labels_in(split):
        found = set()
        for rec in _all_records(out, split):
            found |= set(tf.train.Example.FromString(rec).features.feature[
                "image/object/class/label"].int64_list.value)
        return found

    train_labels = labels_in("train")
    # every class with at least 2 images in the data appears in val
    per_class_images = {}
    for split in splits:
        for rec in _all_records(out, split):
            ex = tf.train.Example.FromString(rec)
            for lab in set(ex.features.feature["image/object/class/label"].int64_list.value):
                per_class_images[lab] = per_class_images.get(lab, 0) + 1
    assert {c for c, n in per_class_images.items() if n >= 2} <= labels_in("val")
    assert set(per_class_images) == train_labels

    rep = build_tfrecords(BuildOptions(annotations=sample_dataset.annotations, images=sample_dataset.images,
                                       out=tmp_path / "folds", folds=3, test_fraction=0, seed=0))
    assert set(rep["splits"]) == {"fold0", "fold1", "fold2"}
    sizes = [rep["splits"][f"fold{k}"]["images"] for k in range(3)]
    assert sum(sizes) == rep["images_written"] and max(sizes) - min(sizes) <= 2
    assert sorted(p.name for p in (tmp_path / "folds").glob("*.tfrecord")) == [
        "fold0-00000-of-00001.tfrecord", "fold1-00000-of-00001.tfrecord", "fold2-00000-of-00001.tfrecord"]


def test_a_full_disk_gets_one_clear_error_and_no_half_written_shard(sample_dataset, tmp_path, monkeypatch):
    import errno

    from click.testing import CliRunner

    from edge_trash.cli import cli
    from edge_trash.tfrecords import tfrecord_file

    real_write, real_close = tfrecord_file.TFRecordWriter.write, tfrecord_file.TFRecordWriter.close
    calls = {"n": 0}

    def filling_up(self, record):
        calls["n"] += 1
        if calls["n"] >= 7:  # as a real write does: no file name in the error
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(self, record)

    def close_on_full_disk(self):
        real_close(self)
        if calls["n"] >= 7:  # flushing the buffered tail fails too
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(tfrecord_file.TFRecordWriter, "write", filling_up)
    monkeypatch.setattr(tfrecord_file.TFRecordWriter, "close", close_on_full_disk)
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["build-tfrecords", "--annotations", str(sample_dataset.annotations),
                                      "--images", str(sample_dataset.images), "--out", str(out),
                                      "--shard-size", "4", "--workers", "1", "--quiet"])
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    assert result.output == (f"Error: cannot write {out}: No space left on device. Nothing in {out} was changed "
                             "(the new files are renamed into place together, once all are complete); free space "
                             "(a build needs about twice its output while it runs, three times when it replaces an "
                             "earlier build) or choose another --out, and run again\n")
    assert not out.exists()  # a new --out: not even an empty folder is left


def test_the_announced_read_time_counts_objects_as_well_as_bytes(tmp_path):
    """A box-only file reads at under half the bytes per second of a polygon file (many small objects): its
    estimate is higher for the same size, the same packed or not; a cut-off packed file gets none."""
    import gzip
    import lzma
    import random

    from edge_trash.tfrecords.build_cli import json_read_estimate

    rng = random.Random(0)
    images = [{"id": i, "file_name": f"{i:06d}.jpg", "width": 4000, "height": 3000} for i in range(2000)]

    def write(name: str, boxes: int, points: int) -> Path:
        annotations = [{"id": j, "image_id": j % 2000, "category_id": 1, "iscrowd": 0, "area": 100.0,
                        "bbox": [rng.uniform(0, 3000), rng.uniform(0, 2000), 50.0, 60.0],
                        "segmentation": [[round(rng.uniform(0, 3000), 1) for _ in range(points)]] if points else []}
                       for j in range(boxes)]
        path = tmp_path / name
        path.write_text(json.dumps({"images": images, "annotations": annotations,
                                    "categories": [{"id": 1, "name": "can"}]}))
        return path

    box_only, polygons = write("boxes.json", 20000, 0), write("polygons.json", 2400, 150)
    (box_size, box_seconds), (polygon_size, polygon_seconds) = map(json_read_estimate, (box_only, polygons))
    assert (box_size, polygon_size) == (box_only.stat().st_size, polygons.stat().st_size)
    assert 0.8 < box_size / polygon_size < 1.25
    assert box_seconds / box_size > 2 * polygon_seconds / polygon_size
    assert polygon_seconds == pytest.approx(polygon_size / 25e6)
    packed = tmp_path / "boxes.json.gz"
    packed.write_bytes(gzip.compress(box_only.read_bytes()))
    assert json_read_estimate(packed)[0] == box_size
    assert json_read_estimate(packed)[1] == pytest.approx(box_seconds, rel=0.25)  # sampled from its start
    cut = tmp_path / "cut.json.xz"
    cut.write_bytes(lzma.compress(box_only.read_bytes())[:500])
    assert json_read_estimate(cut) is None


def test_a_large_annotation_file_is_announced_before_the_silent_read(sample_dataset, tmp_path, monkeypatch):
    from click.testing import CliRunner

    from edge_trash.cli import cli
    from edge_trash.tfrecords import build_cli

    size = sample_dataset.annotations.stat().st_size
    args = ["build-tfrecords", "--annotations", str(sample_dataset.annotations), "--images",
            str(sample_dataset.images), "--out", str(tmp_path / "out"), "--workers", "1"]
    monkeypatch.setattr(build_cli, "BIG_ANNOTATIONS_BYTES", size + 1)
    assert "of annotations" not in CliRunner().invoke(cli, args).stderr
    monkeypatch.setattr(build_cli, "BIG_ANNOTATIONS_BYTES", size)
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0
    assert f"reading {size / 1e6:.0f} MB of annotations ({sample_dataset.annotations}): about 0 s ..." \
        in result.stderr
    # gzip-packed, the JSON's own size counts (a 61 MB file packed to 15 MB was not announced)
    import gzip

    packed = tmp_path / "annotations.json.gz"
    packed.write_bytes(gzip.compress(sample_dataset.annotations.read_bytes()))
    assert packed.stat().st_size < size
    result = CliRunner().invoke(cli, ["build-tfrecords", "--annotations", str(packed), *args[3:]])
    assert result.exit_code == 0
    assert f"reading {size / 1e6:.0f} MB of annotations ({packed}): about 0 s ..." in result.stderr
    # a dataset of COCO's size spends seconds finding its files and drawing the split before the bar: each said
    from edge_trash.tfrecords import build

    monkeypatch.setattr(build, "BIG_DATASET_IMAGES", 10)
    result = CliRunner().invoke(cli, args[:-2] + ["--out", str(tmp_path / "big"), "--workers", "1"])
    announced = re.search(r"build-tfrecords: finding the (\d+) image files \.\.\.\n"
                          r"build-tfrecords: (\d+) found; drawing the split \.\.\.\n", result.stderr)
    converting = re.search(r"0/(\d+) \[", result.stderr)  # the bar's total: the files found
    entries = len(json.loads(sample_dataset.annotations.read_text())["images"])
    assert announced and converting and int(announced[2]) == int(converting[1]) < int(announced[1]) <= entries


@pytest.mark.parametrize("seed", range(40))
def test_no_class_is_held_out_without_a_training_image(seed):
    """A long tail of classes with one to three images each: whatever the seed, every class in val or test
    also has an image in train (the random fill used to take a rare class's last one), and val is not empty."""
    import random

    from edge_trash.tfrecords.splits import assign_splits

    rng = random.Random(seed)
    image_classes = {i: {rng.choice(range(12))} | ({rng.randrange(12, 40)} if rng.random() < 0.5 else set())
                     for i in range(60)}
    splits = assign_splits(list(image_classes), image_classes, 0.2, 0.15, seed)
    assert sorted(splits["train"] + splits["val"] + splits["test"]) == list(range(60))
    learned = set().union(*(image_classes[i] for i in splits["train"]))
    held_out = set().union(*(image_classes[i] for i in splits["val"] + splits["test"]))
    assert held_out <= learned
    assert splits["val"] and splits["test"]


def test_one_class_per_image_still_gets_a_val_image():
    from edge_trash.tfrecords.splits import assign_splits

    splits = assign_splits(list(range(10)), {i: {i} for i in range(10)}, 0.2, 0.0, 0)
    assert len(splits["val"]) == 1 and len(splits["train"]) == 9 and splits["test"] == []


def test_when_val_must_take_a_last_image_it_takes_the_one_costing_fewest_classes():
    from edge_trash.tfrecords.splits import assign_splits

    image_classes = {0: {1, 2}, 1: {3}, 2: {4, 5, 6}, 3: {7}}  # every class in one image only
    for seed in range(10):
        splits = assign_splits(list(image_classes), image_classes, 0.25, 0.25, seed)
        assert splits["val"] in ([1], [3])  # one class lost from train, not two or three
        assert splits["test"] == []  # test is not forced: training does not need one


def test_a_long_list_of_unused_classes_is_cut_short_in_the_summary(tmp_path):
    """LVIS lists 1203 classes, hundreds without a box in a subset: the summary named every one on one line."""
    from edge_trash.tfrecords.build_cli import summarize

    _solid_jpeg(tmp_path / "a.jpg", (64, 48))
    cats = [{"id": 1, "name": "can"}] + [{"id": i, "name": f"unused_{i:02d}"} for i in range(2, 22)]
    ann = _tiny_coco(tmp_path, [{"id": 1, "file_name": "a.jpg", "width": 64, "height": 48}],
                     [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [2, 2, 20, 20]}], cats)
    report = build_tfrecords(BuildOptions(annotations=ann, images=tmp_path, out=tmp_path / "out",
                                          val_fraction=0, test_fraction=0))
    assert report["classes_unused"] == [f"unused_{i:02d}" for i in range(2, 22)]
    text = summarize(report, tmp_path / "out", 1.0)
    assert ("classes without boxes (left out): " + ", ".join(f"'unused_{i:02d}'" for i in range(2, 14))
            + " and 8 more (all in classes_unused in report.json)\n") in text
    few = dict(report, classes_unused=["unused_02", "none"])  # Roboflow's placeholder's supercategory
    assert "classes without boxes (left out): 'unused_02', 'none'\n" in summarize(few, tmp_path / "out", 1.0)


def test_an_image_whose_every_box_is_unusable_is_left_out_not_trained_as_background(tmp_path):
    """TACO's unofficial file has 7 photos whose every box is off the image or Infinity: written
    without boxes they would teach the model that their litter is background."""
    from edge_trash.tfrecords.analyze import analyze

    imgs = tmp_path / "img"
    for name in ("ok.jpg", "bad.jpg", "empty.jpg", "mixed.jpg"):
        _solid_jpeg(imgs / name, (200, 100))
    images = [{"id": i + 1, "file_name": n, "width": 200, "height": 100}
              for i, n in enumerate(("ok.jpg", "bad.jpg", "empty.jpg", "mixed.jpg"))]
    anns = [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 50, 50]},
            {"id": 2, "image_id": 2, "category_id": 1, "bbox": [9000, 10, 50, 50]},  # off the image
            {"id": 3, "image_id": 2, "category_id": 1, "bbox": [math.inf, math.inf, -math.inf, -math.inf]},
            {"id": 4, "image_id": 4, "category_id": 1, "bbox": [9000, 10, 50, 50]},
            {"id": 5, "image_id": 4, "category_id": 1, "bbox": [20, 20, 30, 30]}]
    ann = _tiny_coco(tmp_path, images, anns)
    report = build_tfrecords(BuildOptions(annotations=ann, images=imgs, out=tmp_path / "out",
                                          val_fraction=0, test_fraction=0))
    assert _reasons(report, "images_skipped", "image_id") == {2: (
        "every box was dropped (2 annotations, each in boxes_dropped with why): written without them, the "
        "objects in it would be trained as background; fix the boxes to keep it")}
    assert sorted(_reasons(report, "boxes_dropped", "annotation_id")) == [2, 3, 4]
    assert report["images_written"] == 3 and report["boxes_written"] == 2
    assert report["background_images"] == 1  # empty.jpg, which has no annotation at all
    assert report["splits"]["train"] == {"images": 3, "boxes": 2, "crowd_boxes": 0}

    stats = analyze(ann, imgs, out=tmp_path / "a", plots=False)
    flags = {f["kind"]: f for f in stats["flags"]}
    assert flags["images_without_boxes"]["items"] == [3]
    assert flags["images_every_box_dropped"]["message"] == (
        "1 image has annotations but not one usable box: build-tfrecords leaves them out (written without boxes, "
        "the objects in them would be trained as background): bad.jpg")


def test_rounding_past_the_edge_is_not_clipping_and_reasons_say_what_is_wrong(tmp_path):
    """Label Studio stores boxes in percent: an edge box ends 6e-14 px past the image."""
    imgs = tmp_path / "img"
    _solid_jpeg(imgs / "a.jpg", (300, 300))
    edge = [150.0, 99.99999999999999, 150.0, 200.00000000000006]  # y + h = 300.00000000000006
    anns = [{"id": 1, "image_id": 1, "category_id": 1, "bbox": edge, "iscrowd": "true"},
            {"id": 2, "image_id": 1, "category_id": 1, "bbox": [100, 100, 0.6, 20]},  # inside, too thin
            {"id": 3, "image_id": 1, "category_id": 1, "bbox": [299.5, 100, 20, 20]},  # 0.5 px left inside
            {"id": 4, "image_id": 1, "category_id": 1, "bbox": [400, 100, 20, 20]},  # wholly outside
            {"id": 5, "image_id": 1, "category_id": 1, "bbox": [10, 10, 20, 20.5], "iscrowd": "no"},
            {"id": 6, "image_id": 1, "category_id": 1, "bbox": [10, 10, 20, 20], "iscrowd": "maybe"},
            {"id": 7, "image_id": 1, "category_id": 1, "bbox": [-0.01, 10, 20, 20], "iscrowd": True}]
    ann = _tiny_coco(tmp_path, [{"id": 1, "file_name": "a.jpg", "width": 300, "height": 300}], anns)
    dataset = load_coco(ann)
    assert dataset.boxes_clipped == 1  # only 7, a hundredth of a pixel past the left edge
    assert [b.iscrowd for b in dataset.boxes] == [1, 0, 0, 1]
    assert dataset.iscrowd_not_understood == [6]
    assert {r.record_id: r.reason for r in dataset.rejected_boxes} == {
        2: "'bbox' [100, 100, 0.6, 20] is less than a pixel wide: too small to learn from",
        3: "'bbox' [299.5, 100, 20, 20] lies outside the 300x300 image (less than 1 px left after clipping)",
        4: "'bbox' [400, 100, 20, 20] lies outside the 300x300 image"}
    edge_box = dataset.boxes[0]
    assert (edge_box.y + edge_box.h, edge_box.clipped) == (300.0, False)  # still clamped to the image
    from edge_trash.tfrecords.analyze import analyze
    from edge_trash.tfrecords.build_cli import summarize

    said = "1 annotation has an 'iscrowd' that is neither 0 nor 1, read as 0 (not crowd): annotation ids 6"
    report = build_tfrecords(BuildOptions(annotations=ann, images=imgs, out=tmp_path / "out", val_fraction=0,
                                          test_fraction=0))
    assert report["iscrowd_not_understood"] == [6] and report["boxes_clipped"] == 1
    assert f"warning: {said}" in summarize(report, tmp_path / "out", 1.0).splitlines()
    flags = {f["kind"]: f for f in analyze(ann, imgs, out=tmp_path / "a", plots=False)["flags"]}
    assert (flags["iscrowd_not_understood"]["message"], flags["iscrowd_not_understood"]["items"]) == (said, [6])


def test_the_split_is_drawn_over_the_photos_that_convert(tmp_path):
    """A truncated photo takes no place in val, nor counts as a class's training image: the rare
    class's one readable photo stays in train whatever the seed, and every class is in val."""
    imgs = tmp_path / "img"
    names = [f"{i}.jpg" for i in range(12)]
    for i, name in enumerate(names):
        _solid_jpeg(imgs / name, (64, 48), (20 * i, 90, 120))  # distinct files: copies stay in one split
    good = (imgs / "0.jpg").read_bytes()
    (imgs / "0.jpg").write_bytes(good[:len(good) // 2])  # truncated: found, but it cannot be decoded
    images = [{"id": i, "file_name": n, "width": 64, "height": 48} for i, n in enumerate(names)]
    anns = [{"id": i, "image_id": i, "category_id": 2 if i < 2 else 1, "bbox": [4, 4, 20, 20]} for i in range(12)]
    ann = _tiny_coco(tmp_path, images, anns, [{"id": 1, "name": "can"}, {"id": 2, "name": "rare"}])
    for seed in range(6):
        report = build_tfrecords(BuildOptions(annotations=ann, images=imgs, out=tmp_path / f"s{seed}", seed=seed,
                                              val_fraction=0.3, test_fraction=0))
        assert [s["image_id"] for s in report["images_skipped"]] == [0]
        by_split = {c["name"]: c["boxes_by_split"] for c in report["classes"]}
        assert by_split["rare"] == {"train": 1, "val": 0}, seed
        assert report["splits"]["val"]["images"] == 3 and by_split["can"]["val"] == 3
        assert sum(s["images"] for s in report["splits"].values()) == 11


def test_background_images_count_records_whose_boxes_the_class_map_dropped(tmp_path):
    imgs = tmp_path / "img"
    for i in range(4):
        _solid_jpeg(imgs / f"{i}.jpg", (64, 48))
    images = [{"id": i, "file_name": f"{i}.jpg", "width": 64, "height": 48} for i in range(4)]
    anns = [{"id": 1, "image_id": 0, "category_id": 1, "bbox": [4, 4, 20, 20]},
            {"id": 2, "image_id": 1, "category_id": 2, "bbox": [4, 4, 20, 20]},
            {"id": 3, "image_id": 2, "category_id": 2, "bbox": [4, 4, 20, 20]}]  # image 3: no annotation
    ann = _tiny_coco(tmp_path, images, anns, [{"id": 1, "name": "can"}, {"id": 2, "name": "cup"}])
    class_map = tmp_path / "map.csv"
    class_map.write_text("can,can\ncup,\n")  # an empty target drops the class
    report = build_tfrecords(BuildOptions(annotations=ann, images=imgs, out=tmp_path / "out", class_map=class_map,
                                          val_fraction=0, test_fraction=0))
    assert report["background_images"] == 3  # images 1 and 2 lost their only box to the map; 3 had none
    records = _all_records(tmp_path / "out", "train")
    import tensorflow as tf

    empty = sum(1 for r in records
                if not tf.train.Example.FromString(r).features.feature["image/object/class/label"].int64_list.value)
    assert (len(records), empty) == (4, 3)


def test_unreviewed_device_boxes_count_only_those_the_records_keep(tmp_path):
    """Boxes still marked as a device's detections in a class the map drops are not trained: they made --strict
    refuse a build that trains none of them."""
    from click.testing import CliRunner

    from edge_trash.cli import cli

    imgs = tmp_path / "img"
    for i in range(3):
        _solid_jpeg(imgs / f"{i}.jpg", (64, 48), (40 * i, 90, 90))
    images = [{"id": i, "file_name": f"{i}.jpg", "width": 64, "height": 48} for i in range(3)]
    anns = [{"id": 1, "image_id": 0, "category_id": 1, "bbox": [4, 4, 20, 20], "pre_annotation": True},
            {"id": 2, "image_id": 1, "category_id": 2, "bbox": [4, 4, 20, 20], "pre_annotation": True},
            {"id": 3, "image_id": 2, "category_id": 2, "bbox": [4, 4, 20, 20], "pre_annotation": True},
            {"id": 4, "image_id": 2, "category_id": 1, "bbox": [30, 4, 20, 20]}]
    ann = _tiny_coco(tmp_path, images, anns, [{"id": 1, "name": "can"}, {"id": 2, "name": "cup"}])
    class_map = tmp_path / "map.csv"
    class_map.write_text("can,can\ncup,\n")  # the cup boxes are dropped, reviewed or not
    args = ["build-tfrecords", "--annotations", str(ann), "--images", str(imgs), "--class-map", str(class_map),
            "--quiet", "--strict"]
    result = CliRunner().invoke(cli, args + ["--out", str(tmp_path / "a")])
    assert result.exit_code == 4
    assert "--strict: 1 box is still the device's detections, not reviewed (above)" in result.output
    report = json.loads((tmp_path / "a" / "report.json").read_text())
    assert report["device_pre_annotations"] == {str(ann): 1}
    coco = json.loads(ann.read_text())
    del coco["annotations"][0]["pre_annotation"]  # the can reviewed; the cups still marked, and dropped
    ann.write_text(json.dumps(coco))
    result = CliRunner().invoke(cli, args + ["--out", str(tmp_path / "b")])
    assert result.exit_code == 0 and "device's detections" not in result.output, result.output


def _lfs_pointer(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    import hashlib

    oid = hashlib.sha256(str(path).encode()).hexdigest()  # distinct pointers: copies of one would stay together
    path.write_text(f"version https://git-lfs.github.com/spec/v1\noid sha256:{oid}\nsize 123456\n")


def test_when_the_photos_that_convert_cannot_be_split_as_asked_the_report_still_says_why(tmp_path):
    """Folder B holds Git LFS pointers, not photos: with --split-by folder one folder is left, which
    cannot be split; the build keeps its first split without them and reports the pointers."""
    from edge_trash.tfrecords.build_cli import summarize

    imgs = tmp_path / "img"
    images = []
    for i in range(6):
        name = f"{'AB'[i // 3]}/{i}.jpg"
        if i < 3:
            _solid_jpeg(imgs / name, (64, 48), (40 * i, 90, 90))
        else:
            _lfs_pointer(imgs / name)
        images.append({"id": i, "file_name": name, "width": 64, "height": 48})
    anns = [{"id": i, "image_id": i, "category_id": 1, "bbox": [4, 4, 20, 20]} for i in range(6)]
    ann = _tiny_coco(tmp_path, images, anns)
    report = build_tfrecords(BuildOptions(annotations=ann, images=imgs, out=tmp_path / "out", split_by="folder"))
    assert sorted(s["image_id"] for s in report["images_skipped"]) == [3, 4, 5]
    assert all("Git LFS pointer" in s["reason"] for s in report["images_skipped"])
    assert report["images_written"] == 3 and (tmp_path / "out" / "report.json").is_file()
    assert sum(s["images"] for s in report["splits"].values()) == 3  # the first split, without folder B
    held_out_a = dict(report, splits={"train": {"images": 0, "boxes": 0}, "val": {"images": 3, "boxes": 3}})
    assert ("warning: no training images (every image went to val/test; 3 images were skipped, see below), so "
            "`edge-trash train` cannot use these records; `edge-trash evaluate` can") in \
        summarize(held_out_a, tmp_path / "out", 1.0).splitlines()
    for i in range(3):
        _lfs_pointer(imgs / f"A/{i}.jpg")
    report = build_tfrecords(BuildOptions(annotations=ann, images=imgs, out=tmp_path / "none", folds=2))
    assert report["images_written"] == 0 and len(report["images_skipped"]) == 6  # the CLI then exits 1


def test_a_named_pipe_beside_an_empty_file_never_blocks_the_build(tmp_path):
    """Copies of one file are found by reading files of equal size: a pipe and an empty file are both
    'size 0', and opening the pipe would block for ever."""
    import os
    import threading

    if not hasattr(os, "mkfifo"):
        pytest.skip("no named pipes here")
    imgs = tmp_path / "img"
    _solid_jpeg(imgs / "a.jpg", (64, 48))
    (imgs / "empty.jpg").write_bytes(b"")
    (imgs / "empty2.jpg").write_bytes(b"")
    os.mkfifo(imgs / "pipe.jpg")
    names = ["a.jpg", "empty.jpg", "empty2.jpg", "pipe.jpg"]
    images = [{"id": i, "file_name": n, "width": 64, "height": 48} for i, n in enumerate(names)]
    anns = [{"id": i, "image_id": i, "category_id": 1, "bbox": [4, 4, 20, 20]} for i in range(4)]
    ann = _tiny_coco(tmp_path, images, anns)
    box: list = []
    worker = threading.Thread(daemon=True, target=lambda: box.append(build_tfrecords(BuildOptions(
        annotations=ann, images=imgs, out=tmp_path / "out", val_fraction=0, test_fraction=0))))
    worker.start()
    worker.join(timeout=20)
    if not box:
        with open(os.open(imgs / "pipe.jpg", os.O_RDWR), "wb"):  # unblock the reader
            pass
    assert box, "build-tfrecords blocked on the named pipe"
    assert _reasons(box[0], "images_skipped", "image_id") == {
        1: f"empty file (0 bytes): {imgs / 'empty.jpg'}; download or copy it again",
        2: f"empty file (0 bytes): {imgs / 'empty2.jpg'}; download or copy it again",
        3: f"not a regular file but a named pipe (FIFO): {imgs / 'pipe.jpg'}; put the picture file there"}


def test_a_second_build_into_the_same_folder_is_refused_while_the_first_runs(sample_dataset, tmp_path):
    # Two builds into one --out (a command started twice): the second deleted the first's spool and temporary
    # shards as stale, and their renames mixed two splits' shards in one folder.
    import subprocess
    import sys

    from click.testing import CliRunner

    from edge_trash.cli import cli
    from edge_trash.tfrecords.build import BuildError

    out = tmp_path / "out"
    opts = dict(annotations=sample_dataset.annotations, images=sample_dataset.images, out=out, seed=0)
    build_tfrecords(BuildOptions(**opts))
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert ".build-tfrecords.lock" not in before  # removed when a build ends
    holder = subprocess.Popen([sys.executable, "-c", (
        "import fcntl, os, sys, time\n"
        f"f = open({str(out / '.build-tfrecords.lock')!r}, 'a+'); fcntl.flock(f, fcntl.LOCK_EX)\n"
        "f.write(str(os.getpid())); f.flush(); print('locked', flush=True); time.sleep(60)\n")],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "locked\n"
        message = (f"another build-tfrecords (process {holder.pid}) is writing into {out}: wait for it to finish, "
                   "or choose another --out")
        with pytest.raises(BuildError) as caught:
            build_tfrecords(BuildOptions(**dict(opts, seed=1)))
        assert str(caught.value) == message
        result = CliRunner().invoke(cli, ["build-tfrecords", "--annotations", str(sample_dataset.annotations),
                                          "--images", str(sample_dataset.images), "--out", str(out), "--quiet"])
        assert (result.exit_code, result.output) == (1, f"Error: {message}\n")
        assert {p.name: p.read_bytes() for p in out.iterdir() if p.name != ".build-tfrecords.lock"} == before
    finally:
        holder.kill()
        holder.wait()
    build_tfrecords(BuildOptions(**dict(opts, seed=1)))  # the holder is gone (killed): the lock went with it
    assert not (out / ".build-tfrecords.lock").exists()
    assert json.loads((out / "report.json").read_text())["options"]["seed"] == 1
    from PIL import __version__ as pillow
    from PIL import features

    import edge_trash

    assert json.loads((out / "report.json").read_text())["software"] == {
        "edge-trash": edge_trash.__version__, "Pillow": pillow, "libjpeg-turbo": features.version("libjpeg_turbo"),
        "littlecms2": features.version("littlecms2")}


def _long_tail(n, seed=3):
    import random

    rng = random.Random(seed)
    return {i: {min(int(rng.expovariate(0.25)), 30)} | ({rng.randrange(31, 45)} if rng.random() < 0.3 else set())
            for i in range(n)}


def test_a_grown_or_shrunk_dataset_keeps_its_held_out_images_out_of_train():
    """The split was a shuffle of the whole id list: one image more or less gave every image a new place (one
    missing file of TACO's 3,831 moved 644 of its 956 val/test images into train, 380 trained ones into val).
    Each image's place now comes from a hash of its key, val from the front of the order, test from its back."""
    from edge_trash.tfrecords.splits import assign_splits

    classes = _long_tail(1000)
    keys = {i: f"batch_{i % 7}/{i:06d}.jpg" for i in classes}
    base = assign_splits(list(classes), classes, 0.15, 0.1, 0, keys=keys)
    held = set(base["val"] + base["test"])
    assert len(base["val"]) == 150 and len(base["test"]) == 100
    grown = {**classes, **{i: _long_tail(50, seed=9)[i - 1000] for i in range(1000, 1050)}}
    keys_grown = {**keys, **{i: f"new/{i}.jpg" for i in range(1000, 1050)}}
    for ids, cls, ks in ((list(grown), grown, keys_grown),  # 5% more photos
                         ([i for i in classes if i not in (5, 77, 400)], classes, keys),  # three removed or missing
                         (list(classes)[::-1], classes, keys)):  # the same images listed in another order
        again = assign_splits(ids, cls, 0.15, 0.1, 0, keys=ks)
        assert len(held & set(again["train"])) <= 10, len(held & set(again["train"]))  # 1%; a shuffle: half
        assert len(set(base["train"]) & set(again["val"] + again["test"])) <= 10
    # Ids renumbered (a re-export, text ids, files given in another order), the same file names: the same split.
    renumbered = {i + 5000: c for i, c in classes.items()}
    again = assign_splits(list(renumbered), renumbered, 0.15, 0.1, 0, keys={i + 5000: k for i, k in keys.items()})
    assert {name: sorted(i - 5000 for i in ids) for name, ids in again.items()} == \
        {name: sorted(ids) for name, ids in base.items()}
    # A larger val takes from train only; test keeps every image it had.
    wider = assign_splits(list(classes), classes, 0.25, 0.1, 0, keys=keys)
    assert set(wider["test"]) == set(base["test"]) and set(base["val"]) < set(wider["val"])
    assert assign_splits(list(classes), classes, 0.15, 0.1, 1, keys=keys) != base  # the seed still matters


def test_a_grown_dataset_keeps_most_images_in_their_fold():
    """Dealt by class with no home, 756 of TACO's 3,824 images kept their fold after 5% more photos (chance: one
    in five); a unit now goes to its hash's fold unless that holds more of the class than another by a margin."""
    from edge_trash.tfrecords.splits import assign_folds

    classes = {**_long_tail(1000), **{i: set() for i in range(1000, 1300)}}  # and 300 background images
    keys = {i: f"{i:06d}.jpg" for i in classes}
    base = assign_folds(list(classes), classes, 5, 0, keys=keys)
    grown = {**classes, **{i: _long_tail(50, seed=9)[i - 2000] for i in range(2000, 2050)}}
    again = assign_folds(list(grown), grown, 5, 0, keys={**keys, **{i: f"n{i}.jpg" for i in range(2000, 2050)}})
    fold_of = {i: k for k, fold in enumerate(again) for i in fold}
    kept = sum(fold_of[i] == k for k, fold in enumerate(base) for i in fold if i < 1000)
    assert kept > 0.7 * 1000, kept  # chance: 200; dealt by class alone: 460
    kept = sum(fold_of[i] == k for k, fold in enumerate(base) for i in fold if i >= 1000)
    assert kept > 0.8 * 300, kept  # background images go home (they were dealt by size alone: 4 of 300 kept)
    sizes = [len(f) for f in base]
    assert max(sizes) - min(sizes) <= 0.1 * 260, sizes
    import random

    for trial in range(300):  # images of several classes: the margin never keeps a class out of a fold
        rng = random.Random(trial)
        n, kinds = rng.randint(20, 80), rng.randint(2, 8)
        mixed = {i: set(rng.sample(range(kinds), min(rng.choice([1, 1, 2, 3]), kinds))) for i in range(n)}
        dealt = assign_folds(list(mixed), mixed, 5, 0, keys={i: f"img{rng.getrandbits(32)}_{i}.jpg" for i in mixed})
        for c in range(kinds):
            if sum(c in cs for cs in mixed.values()) >= 10:  # two images per fold (fewer: dealt without a margin)
                assert all(any(c in mixed[i] for i in fold) for fold in dealt), (trial, c)
    for c in {c for cs in classes.values() for c in cs}:  # each class still spread over the folds
        per_fold = [sum(c in classes[i] for i in fold) for fold in base]
        images = sum(per_fold)  # a rare class exactly, a common one within a margin of sqrt(images per fold)
        margin = int(math.sqrt(images / 5)) if images >= 10 else 0
        assert max(per_fold) - min(per_fold) <= margin + 1, (c, per_fold)


def test_rebuilds_keep_the_split_by_file_name(tmp_path):
    """Two exports numbered from 0 given in the other order (ids offset by position) moved 80 of 100 held-out
    images into train; so did one missing photo. The build orders images by their file_name's hash."""
    import tensorflow as tf

    folder = tmp_path / "photos"
    files = []
    for part in ("a", "b"):
        coco = {"images": [], "annotations": [], "categories": [{"id": c, "name": f"c{c}"} for c in range(3)]}
        for i in range(30):
            name = f"{part}{i:02d}.jpg"
            _solid_jpeg(folder / name, (64, 48), (4 * i, 100, 150 if part == "a" else 50))
            coco["images"].append({"id": i, "file_name": name, "width": 64, "height": 48})
            coco["annotations"].append({"id": i, "image_id": i, "category_id": i % 3, "bbox": [4, 4, 20, 20]})
        files.append(tmp_path / f"{part}.json")
        files[-1].write_text(json.dumps(coco))

    def split_names(out, annotations):
        build_tfrecords(BuildOptions(annotations=annotations, images=folder, out=out, workers=1))
        return {split: sorted(tf.train.Example.FromString(r).features.feature["image/filename"].bytes_list.value[0]
                              .decode() for r in _all_records(out, split)) for split in ("train", "val", "test")}

    base = split_names(tmp_path / "ab", files)
    assert len(base["val"]) == 9 and len(base["test"]) == 6
    assert split_names(tmp_path / "ba", files[::-1]) == base
    gone = base["train"][0]
    (folder / gone).unlink()
    again = split_names(tmp_path / "one_missing", files)
    assert set(again["val"] + again["test"]) == set(base["val"] + base["test"])
    assert set(again["train"]) == set(base["train"]) - {gone}


def test_a_photo_holding_most_of_a_class_boxes_stays_in_train(tmp_path):
    """The split counted images, not boxes: TACO's one photo of 14 batteries (of 22) went to val, leaving 6
    battery boxes to train on. A held-out image may not leave a class under half its share of boxes in train."""
    folder = tmp_path / "photos"
    coco = {"images": [], "annotations": [], "categories": [{"id": 1, "name": "battery"}, {"id": 2, "name": "can"}]}
    for i in range(20):
        name = f"battery{i:02d}.jpg" if i < 10 else f"can{i:02d}.jpg"
        _solid_jpeg(folder / name, (64, 48), (10 * i, 100, 150))
        coco["images"].append({"id": i, "file_name": name, "width": 64, "height": 48})
        for k in range(20 if i == 0 else 1):  # battery00.jpg: a pile of 20 batteries
            coco["annotations"].append({"id": len(coco["annotations"]), "image_id": i, "category_id": 1 + (i >= 10),
                                        "bbox": [1 + 3 * (k % 10), 1 + 20 * (k // 10), 2, 2]})
    (tmp_path / "a.json").write_text(json.dumps(coco))
    report = build_tfrecords(BuildOptions(annotations=tmp_path / "a.json", images=folder, out=tmp_path / "out",
                                          val_fraction=0.2, test_fraction=0.0, workers=1))
    splits = json.loads((tmp_path / "out" / "splits.json").read_text())["splits"]
    assert 0 in splits["train"] and len(splits["val"]) == 4  # seed 0 put the pile first in val before
    battery = {c["name"]: c for c in report["classes"]}["battery"]
    val_batteries = sum(1 for i in splits["val"] if 1 <= i < 10)
    assert report["splits"]["val"]["boxes"] == 4 and battery["boxes"] == 29 and val_batteries >= 1


def test_classes_that_val_is_too_small_to_hold_are_named(tmp_path):
    """Ten classes of four single-class photos and a val of 6 images: four classes had no val image and nothing
    said so, although the README promised each class of two images one."""
    from click.testing import CliRunner

    from edge_trash.cli import cli

    coco = {"images": [], "annotations": [], "categories": [{"id": c, "name": f"c{c}"} for c in range(1, 11)]}
    for i in range(40):
        _solid_jpeg(tmp_path / "img" / f"{i}.jpg", (64, 48), (5 * i, 90, 90))
        coco["images"].append({"id": i, "file_name": f"{i}.jpg", "width": 64, "height": 48})
        coco["annotations"].append({"id": i, "image_id": i, "category_id": 1 + i % 10, "bbox": [2, 2, 10, 10]})
    (tmp_path / "a.json").write_text(json.dumps(coco))

    def build(out, *args):
        result = CliRunner().invoke(cli, ["build-tfrecords", "--annotations", str(tmp_path / "a.json"), "--images",
                                          str(tmp_path / "img"), "--out", str(tmp_path / out), "--quiet", *args])
        assert result.exit_code == 0, result.output
        report = json.loads((tmp_path / out / "report.json").read_text())
        return " ".join(result.output.split()), report

    text, report = build("small")
    missing = [c["name"] for c in report["classes"] if not c["boxes_by_split"].get("val")]
    assert report["classes_not_in_val"] == missing and len(missing) == 4
    assert (f"warning: 4 classes of two images or more have no box in val, so their AP cannot be measured: "
            f"{', '.join(missing)} (val holds 6 images: a larger --val-fraction gives them one, unless their images "
            "must stay in train, as a class's last training image or a run of video frames or copies of one picture with "
            "one does; all in "
            "classes_not_in_val in report.json)") in text
    text, report = build("larger", "--val-fraction", "0.25")
    assert report["classes_not_in_val"] == [] and "no box in val" not in text
    text, report = build("folds", "--folds", "4")
    assert report["classes_not_in_val"] == []


def test_no_train_command_is_offered_when_val_holds_no_box(tmp_path):
    """One photo with a box among nine background ones: val got two background images, and the build still
    printed 'edge-trash train', whose run then found no AP to keep a checkpoint by."""
    from click.testing import CliRunner

    from edge_trash.cli import cli

    coco = {"images": [], "annotations": [{"id": 1, "image_id": 0, "category_id": 1, "bbox": [2, 2, 10, 10]}],
            "categories": [{"id": 1, "name": "can"}]}
    for i in range(10):
        _solid_jpeg(tmp_path / "img" / f"{i}.jpg", (64, 48), (20 * i, 90, 90))
        coco["images"].append({"id": i, "file_name": f"{i}.jpg", "width": 64, "height": 48})
    (tmp_path / "a.json").write_text(json.dumps(coco))
    result = CliRunner().invoke(cli, ["build-tfrecords", "--annotations", str(tmp_path / "a.json"), "--images",
                                      str(tmp_path / "img"), "--out", str(tmp_path / "out"), "--quiet"])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["splits"]["val"] == {"images": 2, "boxes": 0, "crowd_boxes": 0}
    next_line = next(line for line in result.output.splitlines() if line.startswith("next: "))
    assert next_line.startswith("next: edge-trash analyze") and "edge-trash train --data" not in next_line
    result = CliRunner().invoke(cli, ["analyze", "--tfrecords", str(tmp_path / "out"), "--out", str(tmp_path / "an")])
    assert "next: these records lack the train or val images (or boxes) edge-trash train needs" in \
        " ".join(result.output.split())


def test_folds_left_empty_by_files_that_fail_to_convert_are_said(tmp_path):
    """--folds 5 over six photos, three of them undecodable: folds 2..4 were written without a word (with the three
    files missing instead, the build refuses --folds 5 before converting)."""
    from click.testing import CliRunner

    from edge_trash.cli import cli

    coco = {"images": [], "annotations": [], "categories": [{"id": 1, "name": "can"}]}
    for i in range(6):
        path = tmp_path / "img" / f"a{i}.jpg"
        if i < 3:
            _solid_jpeg(path, (100, 80), (30 * i, 50, 50))
        else:
            path.write_bytes(b"\xff\xd8\xff\xe0 not a jpeg %d" % i)  # no two alike: copies share a fold
        coco["images"].append({"id": i + 1, "file_name": path.name, "width": 100, "height": 80})
        coco["annotations"].append({"id": i + 1, "image_id": i + 1, "category_id": 1, "bbox": [10, 10, 30, 20]})
    (tmp_path / "a.json").write_text(json.dumps(coco))
    result = CliRunner().invoke(cli, ["build-tfrecords", "--annotations", str(tmp_path / "a.json"), "--images",
                                      str(tmp_path / "img"), "--out", str(tmp_path / "out"), "--folds", "5",
                                      "--test-fraction", "0", "--workers", "1", "--quiet"])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    written = sorted(report["splits"])
    assert len(written) == 3
    assert (f"warning: --folds 5 asked, but only 3 folds hold images ({', '.join(written)}): too few images "
            "converted for 5 (see images_skipped in report.json); rebuild with --folds 3 or fewer for folds numbered "
            "from 0") in " ".join(result.output.split())


def test_boxes_the_shrink_leaves_under_a_pixel_are_counted(tmp_path):
    """A 2000x1500 photo shrunk to 640: a 2x2 box is stored 0.64 px wide, a 3x400 one 0.96 px wide, without a word
    (the under-a-pixel rule was applied in source pixels only)."""
    from click.testing import CliRunner

    from edge_trash.cli import cli

    _solid_jpeg(tmp_path / "img" / "big.jpg", (2000, 1500), (90, 50, 50))
    _solid_jpeg(tmp_path / "img" / "small.jpg", (200, 150), (50, 90, 50))
    _solid_jpeg(tmp_path / "img" / "copy.jpg", (100, 75), (50, 50, 90))  # a 1/10 copy: not the shrink's doing
    boxes = [(1, [100, 100, 2, 2]), (1, [1000, 1000, 3, 400]), (1, [10, 10, 40, 40]), (2, [1, 1, 2, 2]),
             (2, [20.59, 38.57, 25.37, 1.0]), (3, [10, 10, 5, 5])]  # 1.0 px high: 0.99999... in floats
    (tmp_path / "a.json").write_text(json.dumps({
        "images": [{"id": 1, "file_name": "big.jpg", "width": 2000, "height": 1500},
                   {"id": 2, "file_name": "small.jpg", "width": 200, "height": 150},
                   {"id": 3, "file_name": "copy.jpg", "width": 1000, "height": 750}],
        "annotations": [{"id": k, "image_id": i, "category_id": 1, "bbox": b} for k, (i, b) in enumerate(boxes)],
        "categories": [{"id": 1, "name": "can"}]}))
    result = CliRunner().invoke(cli, ["build-tfrecords", "--annotations", str(tmp_path / "a.json"), "--images",
                                      str(tmp_path / "img"), "--out", str(tmp_path / "out"), "--quiet",
                                      "--val-fraction", "0", "--test-fraction", "0"])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["boxes_written"] == 6  # kept: the annotation is right, the size is the user's choice
    assert report["boxes_under_a_stored_pixel"] == {"boxes": 2, "image_ids": [1]}
    assert ("note: 2 boxes are under one pixel wide or high in the stored images (the shrink to --max-size 640 made "
            "them so; 1 image: boxes_under_a_stored_pixel in report.json): kept, though too small for a detector to "
            "see; a larger --max-size keeps them") in " ".join(result.output.split())


def test_only_classes_of_a_few_images_keep_under_half_their_share_of_boxes_in_train():
    """Random long tails with one to fifteen boxes per image: a class's boxes in train fall under half their
    share only for a class of at most five images, whose val and test places need them (133 classes across
    these 30 datasets when images are counted, not boxes; 23 with the boxes)."""
    import random

    from edge_trash.tfrecords.splits import assign_splits

    short = {"boxes": 0, "images": 0}
    for seed in range(30):
        rng = random.Random(seed)
        classes = _long_tail(300, seed=seed)
        boxes = {i: {c: 1 + int(rng.expovariate(0.4)) % 15 for c in cls} for i, cls in classes.items()}
        for counted, extra in (("boxes", {"image_boxes": boxes}), ("images", {})):
            splits = assign_splits(list(classes), classes, 0.15, 0.1, seed, **extra)
            for c in set().union(*classes.values()):
                total = sum(b.get(c, 0) for b in boxes.values())
                if sum(boxes[i].get(c, 0) for i in splits["train"]) < total * 0.75 / 2:
                    short[counted] += 1
                    if counted == "boxes":
                        assert sum(1 for cls in classes.values() if c in cls) <= 5, (seed, c)
    assert short == {"boxes": 23, "images": 133}


def test_taco_battery_photo_stays_in_train():
    """TACO's real annotation file: its photo of 14 batteries stays in train, and every class whose images allow
    it keeps at least half its share of boxes there."""
    import math
    from collections import Counter

    from edge_trash.tfrecords.splits import assign_splits

    src = Path(__file__).resolve().parents[2] / "shared" / "data" / "coco" / "taco_unofficial.json"
    if not src.exists():
        pytest.skip(f"{src} not present")
    coco = json.loads(src.read_text())
    classes = {im["id"]: set() for im in coco["images"]}
    boxes = {im["id"]: Counter() for im in coco["images"]}
    for a in coco["annotations"]:
        if all(math.isfinite(v) for v in a["bbox"]):
            classes[a["image_id"]].add(a["category_id"])
            boxes[a["image_id"]][a["category_id"]] += 1
    keys = {im["id"]: im["file_name"] for im in coco["images"]}
    splits = assign_splits(list(classes), classes, 0.15, 0.1, 0, keys=keys, image_boxes=boxes)
    battery = next(c["id"] for c in coco["categories"] if c["name"] == "Battery")
    pile = max(classes, key=lambda i: boxes[i][battery])
    assert boxes[pile][battery] == 14 and pile in splits["train"]
    assert sum(boxes[i][battery] for i in splits["train"]) >= 19  # of 22; 6 before
    short = [c for c in set().union(*classes.values())
             if sum(boxes[i][c] for i in splits["train"]) < sum(b[c] for b in boxes.values()) * 0.75 / 2]
    assert short == []


def test_the_order_of_the_annotations_list_does_not_change_the_records(tmp_path):
    """A re-export that only reorders `annotations` (or `images`) gave every shard other bytes: the objects of
    a record came in file order."""
    import random

    folder = tmp_path / "photos"
    coco = {"images": [], "annotations": [], "categories": [{"id": c, "name": f"c{c}"} for c in range(1, 4)]}
    for i in range(1, 13):
        _solid_jpeg(folder / f"{i}.jpg", (64, 48), (10 * i, 90, 90))
        coco["images"].append({"id": i, "file_name": f"{i}.jpg", "width": 64, "height": 48})
        for k in range(3):
            coco["annotations"].append({"id": 100 * k + i, "image_id": i, "category_id": 1 + (i + k) % 3,
                                        "bbox": [2 + 5 * k, 3, 10, 10]})
    coco["annotations"].append(dict(coco["annotations"][0], bbox=[40, 20, 8, 8]))  # a duplicate id
    coco["annotations"] += [{"image_id": 3, "category_id": c, "bbox": [30, 5 * c, 6, 6]} for c in (1, 2, 3)]  # no id
    outputs = []
    for n, order in enumerate((lambda x: x, lambda x: x[::-1], lambda x: random.Random(5).sample(x, len(x)))):
        ann = tmp_path / f"a{n}.json"
        ann.write_text(json.dumps(dict(coco, annotations=order(coco["annotations"]), images=order(coco["images"]))))
        out = tmp_path / f"out{n}"
        build_tfrecords(BuildOptions(annotations=ann, images=folder, out=out, workers=1))
        outputs.append({p.name: p.read_bytes() for p in sorted(out.iterdir()) if p.suffix != ".json"
                        or p.name == "splits.json"})
    assert len(outputs[0]) >= 5 and outputs[1] == outputs[0] and outputs[2] == outputs[0]


def test_a_rebuild_says_how_the_split_moved_from_the_earlier_build(tmp_path):
    """Nothing told a user that a rebuild put earlier val/test images into train (or the reverse); the summary
    and report.json now compare with the splits.json the earlier build left in --out."""
    from click.testing import CliRunner

    from edge_trash.cli import cli

    folder = tmp_path / "photos"
    ann = tmp_path / "a.json"
    _cans_and_cups(ann, folder, "sub/", count=40)
    coco = json.loads(ann.read_text())
    out = tmp_path / "data"

    def build(*args, coco_file=ann):
        result = CliRunner().invoke(cli, ["build-tfrecords", "--annotations", str(coco_file), "--images",
                                          str(folder), "--out", str(out), "--workers", "1", "--quiet", *args])
        assert result.exit_code == 0, result.output
        return result.output, json.loads((out / "report.json").read_text())

    output, report = build()
    assert report["split_changes"] is None and "earlier build" not in output
    splits = json.loads((out / "splits.json").read_text())
    assert splits["file_names"] == {s: [f"sub/{i}.jpg" for i in ids] for s, ids in splits["splits"].items()}
    output, report = build()
    assert report["split_changes"] == {"earlier_images": 40, "earlier_folds": 0, "matched": 40,
                                       "matched_by_picture": 0, "earlier_held_out": 10, "held_out_now_in_train": 0,
                                       "earlier_train": 30, "train_now_held_out": 0, "fold_changed": 0}
    assert ("note: the earlier build here: 40 of its 40 images are in this one, each in the split it was in"
            ) in output
    # The same photos spelled otherwise in the JSON (case, Windows separators, "./"): the same files, the same split.
    respelled = tmp_path / "respelled.json"
    respelled.write_text(json.dumps(dict(coco, images=[
        dict(im, file_name=[f"SUB/{im['id']}.JPG", f"sub\\{im['id']}.jpg", f"./sub/{im['id']}.jpg"][im["id"] % 3])
        for im in coco["images"]])))
    output, report = build(coco_file=respelled)
    assert report["split_changes"]["matched"] == 40 and "each in the split it was in" in output
    assert json.loads((out / "splits.json").read_text())["splits"] == splits["splits"]
    output, report = build("--seed", "7")
    changes = report["split_changes"]
    assert changes["held_out_now_in_train"] == changes["train_now_held_out"] > 0  # sizes kept: as many each way
    assert (f"{changes['train_now_held_out']} of its training images are in val/test now: a model trained on the "
            "earlier build (or fine-tuned from one with --init) has seen them, which inflates its scores on this "
            f"build's val/test; {changes['held_out_now_in_train']} of its val/test images are in training now "
            "(a changed --seed, fraction, --folds, --keep-splits or class map, or renamed files, moves many)") in output
    output, report = build("--folds", "3")
    assert "; it had no folds; " in output and report["split_changes"]["fold_changed"] == 0
    output, report = build("--folds", "3", "--seed", "4")
    assert report["split_changes"]["fold_changed"] > 0 and " in another fold now " in output
    output, report = build()
    assert "; it was split into 3 folds; " in output
    # An earlier splits.json that cannot be compared is said, never a traceback.
    for content, why in (('{"seed": 0, "folds": 0, "splits": {"train": [1]}}',
                          "it lists no file names (written by an older edge-trash)"),
                         ("[" * 100000 + "]" * 100000, "cannot read it (RecursionError)"),
                         ("", "cannot read it (JSONDecodeError)"), ("[1]", "expected a JSON object, got list"),
                         ('{"file_names": {"train": ["elsewhere/1.jpg"]}}', None)):
        (out / "splits.json").write_text(content)
        output, report = build()
        said = (f"the earlier build's splits.json was not compared: {why}" if why else
                "the earlier build here holds none of these files (by name, nor by picture): its split cannot be "
                "compared")
        assert report["split_changes"] == {"not_compared": said, **({} if why else {"warning": True})}
        assert f"{'note' if why else 'warning'}: {said}" in output
    # A splits.json lost in a copy beside the records: a reshuffle was silent (30 of 40 held-out images moved)
    (out / "splits.json").unlink()
    output, report = build("--seed", "3")
    said = ("the earlier build here has no splits.json (deleted, or not copied with its records): whether its val/test "
            "images are in training now cannot be told")
    assert report["split_changes"] == {"not_compared": said, "warning": True} and f"warning: {said}" in output
    # The images folder's sub-folder renamed (or the files flattened into one folder): found by their picture
    # (the seeded order hashes the path, so a renamed folder moves its files: the count of those moved was 3, not 16)
    build()
    before = json.loads((out / "splits.json").read_text())
    (folder / "sub").rename(folder / "renamed")
    moved = tmp_path / "moved.json"
    moved.write_text(json.dumps(dict(coco, images=[dict(im, file_name=f"renamed/{im['id']}.jpg")
                                                   for im in coco["images"]])))
    output, report = build(coco_file=moved)
    after = json.loads((out / "splits.json").read_text())  # the image ids are the same in both: recount by them
    was_held, now_held = ({i for split in ("val", "test") for i in listing["splits"].get(split, [])}
                          for listing in (before, after))
    assert report["split_changes"] == {"earlier_images": 40, "earlier_folds": 0, "matched": 40,
                                       "matched_by_picture": 40, "earlier_held_out": 10,
                                       "held_out_now_in_train": len(was_held - now_held), "earlier_train": 30,
                                       "train_now_held_out": len(now_held - was_held), "fold_changed": 0}
    assert report["split_changes"]["held_out_now_in_train"] > 0
    assert "the earlier build here: 40 of its 40 images are in this one (40 found by their picture under another " \
           "name); " in output
    (out / "splits.json").unlink()
    (out / "splits.json").mkdir()
    result = CliRunner().invoke(cli, ["build-tfrecords", "--annotations", str(ann), "--images", str(folder), "--out",
                                      str(out), "--quiet"])
    assert result.exit_code != 0 and (f"--out {out}: splits.json there is a folder, where the build writes a file: "
                                      "move it away, or choose another --out") in result.output


def test_a_rebuild_says_when_an_analysis_in_out_describes_the_earlier_build(tmp_path):
    """analyze's report in OUT/analysis stayed after a rebuild changed the records, and nothing said that it
    now describes a build that is gone."""
    from click.testing import CliRunner

    from edge_trash.cli import cli
    from edge_trash.tfrecords.analyze import analyze

    _cans_and_cups(tmp_path / "a.json", tmp_path / "photos")
    data = tmp_path / "data"

    def build(*args):
        result = CliRunner().invoke(cli, ["build-tfrecords", "--annotations", str(tmp_path / "a.json"), "--images",
                                          str(tmp_path / "photos"), "--out", str(data), "--quiet", *args])
        assert result.exit_code == 0, result.output
        return result.output, json.loads((data / "report.json").read_text())["stale_analysis"]

    build()
    analyze(None, None, tfrecords=data, out=data / "analysis", plots=False)
    (data / "notes").mkdir()  # a folder of the user's own: never named
    output, stale = build()  # the same records: the report still holds
    assert stale == [] and "analyze's report" not in output
    output, stale = build("--val-fraction", "0.3")
    assert stale == ["analysis"]
    assert (f"note: {data / 'analysis'} holds analyze's report on the earlier build here: run edge-trash analyze "
            "again with --out there to bring it up to date") in output.splitlines()
    analyze(None, None, tfrecords=data, out=data / "analysis", plots=False)
    assert build("--val-fraction", "0.3")[1] == []
    # classes renamed to names of the same length: every shard keeps its size, the report's classes are gone
    (tmp_path / "map.csv").write_text("can,tin\ncup,mug\n")
    output, stale = build("--val-fraction", "0.3", "--class-map", str(tmp_path / "map.csv"))
    assert stale == ["analysis"] and "holds analyze's report on the earlier build here" in output


def test_a_split_far_larger_than_its_fraction_says_why(tmp_path):
    """Two videos of 12 frames (CVAT's video export): val took a whole video, 50% of the images where 15% was
    asked, and the summary said only the split's size."""
    from click.testing import CliRunner

    from edge_trash.cli import cli

    coco = {"images": [], "annotations": [], "categories": [{"id": 1, "name": "can"}]}
    for v in (1, 2):
        for f in range(12):
            iid = 12 * v + f
            _solid_jpeg(tmp_path / "frames" / f"v{v}_{f:06d}.jpg", (64, 48), (10 * f, 20 * v, 80))
            coco["images"].append({"id": iid, "file_name": f"v{v}_{f:06d}.jpg", "width": 64, "height": 48,
                                   "video_id": v, "frame_id": f})
            coco["annotations"].append({"id": iid, "image_id": iid, "category_id": 1, "bbox": [4, 4, 20, 20]})
    (tmp_path / "a.json").write_text(json.dumps(coco))

    def build(*args):
        result = CliRunner().invoke(cli, ["build-tfrecords", "--annotations", str(tmp_path / "a.json"), "--images",
                                          str(tmp_path / "frames"), "--out", str(tmp_path / "out"), "--quiet", *args])
        assert result.exit_code == 0, result.output
        return result.output.splitlines()

    assert ("note: val holds 12 of the 24 images (50%), far more than --val-fraction 0.15 asks: images move in "
            "groups that stay in one split (runs of video frames, copies of one picture, a photo's variants) and a "
            "whole group was the smallest that could go; more videos or photos bring it nearer (see split_units in "
            "report.json)") in build()
    assert not [line for line in build("--split-by", "image") if "far more than" in line]  # 4 of 24 frames: as asked


def test_a_class_held_out_because_every_group_held_a_last_picture_says_so(tmp_path):
    """Two classes, each photographed once and copied three times (copies of one picture move as one): val needs
    an image, so one class's copies all went to val and the warning said only "(only in val/test)", as if a
    fraction could fix it, and the other class's "a larger --val-fraction gives them one" could not either."""
    from click.testing import CliRunner

    from edge_trash.cli import cli

    coco = {"images": [], "annotations": [], "categories": [{"id": 1, "name": "bottle"}, {"id": 2, "name": "battery"}]}
    for c, colour in ((1, (200, 0, 0)), (2, (0, 0, 200))):
        for k in range(3):
            _solid_jpeg(tmp_path / "photos" / f"c{c}_{k}.jpg", (64, 48), colour)  # byte-identical copies
            iid = 3 * c + k
            coco["images"].append({"id": iid, "file_name": f"c{c}_{k}.jpg", "width": 64, "height": 48})
            coco["annotations"].append({"id": iid, "image_id": iid, "category_id": c, "bbox": [4, 4, 20, 20]})
    (tmp_path / "a.json").write_text(json.dumps(coco))
    result = CliRunner().invoke(cli, ["build-tfrecords", "--annotations", str(tmp_path / "a.json"), "--images",
                                      str(tmp_path / "photos"), "--out", str(tmp_path / "data"), "--quiet"])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "data" / "report.json").read_text())
    held, kept = report["classes_not_in_train"], report["classes_not_in_val"]
    assert len(held) == 1 and len(kept) == 1 and set(held + kept) == {"bottle", "battery"}
    assert report["splits"]["val"]["images"] == 3 and report["splits"]["train"]["images"] == 3
    text = " ".join(result.output.split())
    assert (f"warning: 1 class has no box in train, so the model cannot learn it: {held[0]} (only in val/test: val "
            "needed an image and each image or group that moves as one (copies of one picture, a run of video "
            "frames) held a class's last training picture; add other photos of it)") in text
    assert ("as a class's last training image or a run of video frames or copies of one picture with one does; "
            "all in classes_not_in_val in report.json)") in text


def test_a_rebuild_with_other_classes_says_its_models_no_longer_match(tmp_path):
    """A rebuild with a class map that merged two classes said only "each in the split it was in": nothing told
    that runs and bundles trained on the earlier build no longer match its labels.txt."""
    from click.testing import CliRunner

    from edge_trash.cli import cli

    ann = tmp_path / "a.json"
    _cans_and_cups(ann, tmp_path / "photos", count=12, names=("bottle", "can", "cup"))
    (tmp_path / "merge.csv").write_text("bottle,container\ncan,container\ncup,cup\n")
    (tmp_path / "order.csv").write_text("cup,cup\nbottle,bottle\ncan,can\n")

    def build(*args):
        result = CliRunner().invoke(cli, ["build-tfrecords", "--annotations", str(ann), "--images",
                                          str(tmp_path / "photos"), "--out", str(tmp_path / "data"), "--quiet", *args])
        assert result.exit_code == 0, result.output
        return result.output, json.loads((tmp_path / "data" / "report.json").read_text())["classes_changed"]

    assert build()[1] is None  # the first build: nothing earlier to compare
    output, changed = build()
    assert changed is None and "other classes" not in output
    output, changed = build("--class-map", str(tmp_path / "merge.csv"))
    assert changed == {"earlier": ["bottle", "can", "cup"], "now": ["container", "cup"]}
    assert ("warning: the earlier build here had other classes (3, now 2; 2 gone: bottle, can; 1 new: container): "
            "a model or bundle trained on it does not match this build's labels.txt; train on this one (train --init "
            "RUN --config RUN/config.json starts from such a model's weights)") in output.splitlines()
    build()
    output, changed = build("--class-map", str(tmp_path / "order.csv"))
    assert changed == {"earlier": ["bottle", "can", "cup"], "now": ["cup", "bottle", "can"]}
    assert "other classes (3, now 3; the same names in another order)" in output


def test_split_changes_counts_pairs_and_files_in_two_folders_apart():
    from edge_trash.tfrecords.build_cli import split_changes_line
    from edge_trash.tfrecords.splits import split_changes

    # Two annotation files' photos of one name, in two folders: two files, each compared with itself.
    earlier = {"folds": 0, "file_names": {"train": ["A/0001.jpg", "B/0002.jpg"], "val": ["B/0001.jpg"]}}
    assert split_changes(earlier, {"train": ["B/0001.jpg", "B/0002.jpg"], "val": ["A/0001.jpg"]}) == {
        "earlier_images": 3, "earlier_folds": 0, "matched": 3, "matched_by_picture": 0, "earlier_held_out": 1, "held_out_now_in_train": 1,
        "earlier_train": 2, "train_now_held_out": 1, "fold_changed": 0}
    # Folds swapped whole: nothing left val or test, yet every image is in another fold.
    folds = {"folds": 2, "file_names": {"fold0": ["a", "b"], "fold1": ["c"], "test": ["d"]}}
    assert split_changes(folds, {"fold0": ["c"], "fold1": ["a", "b"], "test": ["d"]}, 2)["fold_changed"] == 3
    assert split_changes(folds, {"fold0": ["a"], "fold1": ["c"], "test": ["d", "b"]}, 2) == {
        "earlier_images": 4, "earlier_folds": 2, "matched": 4, "matched_by_picture": 0, "earlier_held_out": 1, "held_out_now_in_train": 0,
        "earlier_train": 3, "train_now_held_out": 1, "fold_changed": 0}  # b went to test: said once
    assert split_changes(None, {"train": ["a"]}) is None
    assert split_changes_line({"earlier_images": 10, "earlier_folds": 0, "matched": 1, "earlier_held_out": 0,
                               "held_out_now_in_train": 0, "earlier_train": 1, "train_now_held_out": 0,
                               "fold_changed": 0}) == ("note: the earlier build here: 1 of its 10 images is in this one "
                                                       "(9 renamed, removed or not found now), each in the split it "
                                                       "was in")
    assert split_changes_line({"earlier_images": 10, "earlier_folds": 0, "matched": 9, "earlier_held_out": 3,
                               "held_out_now_in_train": 1, "earlier_train": 6, "train_now_held_out": 0,
                               "fold_changed": 0}) == (
        "warning: the earlier build here: 9 of its 10 images are in this one (1 renamed, removed or not found now); "
        "1 of its val/test images is in training now (a changed --seed, fraction, --folds, --keep-splits or class "
        "map, or renamed files, moves many)")


def test_a_second_images_folder_keeps_the_first_ones_split_and_photos_of_one_name_stay_apart(tmp_path):
    """Keys were paths under the folder holding every --images folder: adding a second folder turned 1.jpg into
    A/1.jpg, so the split moved and the rebuild could not compare; and photos uploaded under one generic Roboflow
    name were placed as one block (all in val, or none)."""
    from edge_trash.tfrecords.splits import assign_splits, split_keys

    files = []
    for part in ("A", "B"):
        coco = {"images": [], "annotations": [], "categories": [{"id": 1, "name": "can"}, {"id": 2, "name": "cup"}]}
        for i in range(1, 31):
            _solid_jpeg(tmp_path / "ds" / part / f"{i}.jpg", (64, 48), (4 * i, 90, 40 if part == "A" else 160))
            coco["images"].append({"id": i, "file_name": f"{i}.jpg", "width": 64, "height": 48})
            coco["annotations"].append({"id": i, "image_id": i, "category_id": 1 + i % 2, "bbox": [4, 4, 20, 20]})
        files.append(tmp_path / "ds" / part / "coco.json")
        files[-1].write_text(json.dumps(coco))
    alone = tmp_path / "out"
    build_tfrecords(BuildOptions(annotations=files[0], images=None, out=alone, workers=1))
    before = json.loads((alone / "splits.json").read_text())["file_names"]
    report = build_tfrecords(BuildOptions(annotations=files, images=None, out=alone, workers=1))
    after = json.loads((alone / "splits.json").read_text())["file_names"]
    assert sorted(after["val"] + after["test"] + after["train"])[:4] == ["1.jpg", "1.jpg", "10.jpg", "10.jpg"]
    changes = report["split_changes"]  # B's photos of the same names are counted as pairs, A's found again
    assert (changes["earlier_images"], changes["matched"], changes["held_out_now_in_train"]) == (30, 30, 0)
    assert set(before["val"] + before["test"]) <= set(after["val"] + after["test"])
    # Photos uploaded as image.jpg (more than 20 Roboflow files of one name) are placed one by one.
    read_as = {i: f"image_jpg.rf.{i:032x}.jpg" if i < 100 else f"{i}.jpg" for i in range(1000)}
    keys = split_keys(read_as)
    assert len(set(keys.values())) == 1000 and keys[5] == f"image_jpg.rf.{5:032x}.jpg"
    assert split_keys({1: "IMG_1_jpg.rf.ab12cd34.jpg", 2: "IMG_1_jpg.rf.ffee0011.jpg"}) == \
        {1: "img_1.jpg", 2: "img_1.jpg"}
    classes = {i: {i % 3} for i in range(1000)}
    for seed in range(4):
        val = assign_splits(list(classes), classes, 0.15, 0.1, seed, keys=keys)["val"]
        assert 3 <= sum(i < 100 for i in val) <= 35, seed  # about 15 of the 100, not 0 or 100


def test_a_roboflow_re_export_with_new_hashes_keeps_the_split():
    """Roboflow names files IMG_1_jpg.rf.<hash>.jpg, and a re-export may give new hashes: the photo's own name
    places it, so the split and the comparison with the earlier build survive the rename."""
    from edge_trash.tfrecords.splits import assign_splits, split_changes, split_key

    assert split_key("IMG_0001_jpg.rf.3f2a1b9c8d7e6f50.jpg") == "img_0001.jpg"
    assert split_key("batch_1/000001.jpg") == "batch_1/000001.jpg"
    classes = _long_tail(300)
    first = {i: f"IMG_{i:04d}_jpg.rf.{i * 7919:012x}.jpg" for i in classes}
    again = {i: f"IMG_{i:04d}_jpg.rf.{i * 104729 + 5:012x}.jpg" for i in classes}
    a = assign_splits(list(classes), classes, 0.15, 0.1, 0, keys={i: split_key(n) for i, n in first.items()})
    b = assign_splits(list(classes), classes, 0.15, 0.1, 0, keys={i: split_key(n) for i, n in again.items()})
    assert a == b
    earlier = {"file_names": {s: [first[i] for i in ids] for s, ids in a.items()}}
    changes = split_changes(earlier, {s: [again[i] for i in ids] for s, ids in b.items()})
    assert changes["earlier_held_out"] == len(a["val"]) + len(a["test"]) and changes["held_out_now_in_train"] == 0


def test_a_copy_of_the_dataset_elsewhere_gives_the_same_bytes(tmp_path):
    """The README promises the same output from any folder (report.json aside: it records the paths given);
    splits.json now lists files, relative to each --images folder."""
    import shutil

    first = tmp_path / "here" / "ds"
    _cans_and_cups(first / "a.json", first, "img/")
    second = tmp_path / "elsewhere" / "deeper" / "ds"
    shutil.copytree(first, second)
    outputs = []
    for ds, out in ((first, tmp_path / "o1"), (second, tmp_path / "x" / "o2")):
        build_tfrecords(BuildOptions(annotations=ds / "a.json", images=ds, out=out, workers=1))
        outputs.append({p.name: p.read_bytes() for p in sorted(out.iterdir()) if p.name != "report.json"})
    assert len(outputs[0]) >= 6 and outputs[0] == outputs[1]
    assert b'"img/1.jpg"' in outputs[0]["splits.json"]


def test_an_image_id_of_zero_is_held_out_like_any_other():
    """The val place of a rare class went to a second image when the first one held was image 0 (read as
    'none held'): the same photos split otherwise with ids from 0 (TACO, Roboflow) than from 1000."""
    from edge_trash.tfrecords.splits import assign_splits

    for seed in range(20):
        splits = []
        for base in (0, 1000):
            classes = {base + i: {2} if i < 6 else {1} for i in range(40)}  # class 2, the rarest, in images 0..5
            keys = {base + i: f"img{i}.jpg" for i in range(40)}
            got = assign_splits(list(classes), classes, 0.1, 0.0, seed, keys=keys)
            splits.append({name: sorted(i - base for i in ids) for name, ids in got.items()})
        assert splits[0] == splits[1], seed


def test_a_dataset_of_crowd_regions_alone_is_nothing_to_train_on(tmp_path):
    """Every box iscrowd 1: the build wrote records and exited 0, and `train` refused them after."""
    from click.testing import CliRunner

    from edge_trash.cli import cli

    imgs = tmp_path / "img"
    for i in range(2):
        _solid_jpeg(imgs / f"{i}.jpg", (64, 48), (40 * i, 90, 90))
    images = [{"id": i, "file_name": f"{i}.jpg", "width": 64, "height": 48} for i in range(2)]
    anns = [{"id": i, "image_id": i, "category_id": 1, "bbox": [4, 4, 20, 20], "iscrowd": 1} for i in range(2)]
    ann = _tiny_coco(tmp_path, images, anns, [{"id": 1, "name": "can"}])
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["build-tfrecords", "--annotations", str(ann), "--images", str(imgs),
                                      "--out", str(out), "--quiet"])
    assert result.exit_code == 1 and not out.exists()
    said = " ".join(result.output.split())
    assert (f"{ann}: no class has a usable box after validation and mapping; nothing to train on: every one of the 2 "
            "usable boxes is a crowd region (iscrowd 1): training and COCO's AP leave crowd regions out, so nothing "
            "would be learned. If each is one object, as an export that marks every mask so writes them, set iscrowd "
            "to 0 (python -c") in said
    tmp_path.joinpath("other.json").write_text(json.dumps({  # a class map dropped every item: no command to run
        "images": images, "annotations": anns + [{"id": 5, "image_id": 0, "category_id": 2, "bbox": [1, 1, 9, 9]}],
        "categories": [{"id": 1, "name": "can"}, {"id": 2, "name": "cup"}]}))
    tmp_path.joinpath("map.csv").write_text("can,can\ncup,\n")
    result = CliRunner().invoke(cli, ["build-tfrecords", "--annotations", str(tmp_path / "other.json"), "--images",
                                      str(imgs), "--class-map", str(tmp_path / "map.csv"), "--out", str(out)])
    assert result.exit_code == 1 and not out.exists()
    assert ("all 2 boxes left are crowd regions (iscrowd 1: a pile, not one item), which training and COCO's AP leave "
            "out: set iscrowd to 0 on the boxes that each outline one item") in " ".join(result.output.split())
    anns[1]["iscrowd"] = 0  # one item is enough to build
    ann = _tiny_coco(tmp_path, images, anns, [{"id": 1, "name": "can"}])
    result = CliRunner().invoke(cli, ["build-tfrecords", "--annotations", str(ann), "--images", str(imgs),
                                      "--out", str(out), "--quiet"])
    assert result.exit_code == 0, result.output


def test_crowd_regions_count_for_no_class_or_split_that_training_and_ap_need(tmp_path):
    """Training and COCO's AP leave crowd regions (iscrowd 1) out: a class with only crowd boxes in train was not
    called unlearnable, a val of crowd boxes alone got a `train` command that then refused to run."""
    from click.testing import CliRunner

    from edge_trash.cli import cli

    imgs = tmp_path / "img"
    cats = [{"id": 1, "name": "can"}, {"id": 2, "name": "tarp"}]
    for split, n in (("train", 4), ("val", 2)):
        images = [{"id": 10 * (split == "val") + i, "file_name": f"{split}{i}.jpg", "width": 64, "height": 48}
                  for i in range(n)]
        for im in images:
            _solid_jpeg(imgs / im["file_name"], (64, 48), (20 * im["id"], 90, 90))
        anns = [{"id": 100 + im["id"] * 2 + k, "image_id": im["id"], "category_id": 1 + k, "bbox": [4, 4, 20, 20],
                 "iscrowd": int(split == "val" or k == 1)} for im in images for k in range(2)]
        (tmp_path / f"{split}.json").write_text(json.dumps({"images": images, "annotations": anns,
                                                            "categories": cats}))
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["build-tfrecords", "--annotations", str(tmp_path / "train.json"),
                                      "--annotations", str(tmp_path / "val.json"), "--images", str(imgs),
                                      "--out", str(out), "--keep-splits", "--workers", "1", "--quiet"])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert report["splits"] == {"train": {"images": 4, "boxes": 8, "crowd_boxes": 4},
                                "val": {"images": 2, "boxes": 4, "crowd_boxes": 4}}
    assert [(c["name"], c["boxes"], c["crowd_boxes"]) for c in report["classes"]] == [("can", 6, 2), ("tarp", 6, 6)]
    assert report["classes_not_in_train"] == ["tarp"]
    assert report["classes_not_in_val"] == ["can"]  # tarp has no box to score anywhere
    said = " ".join(result.output.split())
    assert "splits: train 4 images / 8 boxes (4 crowd), val 2 images / 4 boxes (4 crowd)" in said
    assert ("warning: 1 class has no box in train, so the model cannot learn it: tarp (only crowd regions, iscrowd 1, "
            "which training leaves out)") in said
    assert ("warning: the val split holds 2 images and not one box other than 4 crowd regions, so no AP can be "
            "measured on it") in said
    assert said.endswith("--out " + str(out / "analysis"))  # no `edge-trash train` offered: it would refuse
    result = CliRunner().invoke(cli, ["analyze", "--tfrecords", str(out), "--out", str(tmp_path / "an"), "--no-plots"])
    stats = json.loads((tmp_path / "an" / "stats.json").read_text())["tfrecords"]["splits"]
    assert (stats["train"]["crowd_boxes"], stats["val"]["crowd_boxes"]) == (4, 4)
    said = " ".join(result.output.split())
    assert ("[tfrecords/train] classes_missing: 1 class has no box other than crowd regions in train, so the model "
            "cannot learn it: tarp") in said
    assert "next: these records lack the train or val images (or boxes) edge-trash train needs" in said


def test_a_build_stopped_while_moving_its_files_is_finished_by_the_next_one(sample_dataset, sample_build, tmp_path,
                                                                           monkeypatch):
    """A build killed (or failing) midway through its renames left shards of two builds; the next build deleted the
    files still waiting to be moved and, converting nothing, said the earlier build was "as it was"."""
    import shutil

    from click.testing import CliRunner

    from edge_trash.cli import cli
    from edge_trash.tfrecords import build as build_module
    from edge_trash.tfrecords.split_layout import COMMIT_JOURNAL

    args = ["build-tfrecords", "--annotations", str(sample_dataset.annotations), "--workers", "1", "--quiet",
            "--shard-size", "8"]  # as sample_build
    out = tmp_path / "out"
    assert CliRunner().invoke(cli, [*args, "--images", str(sample_dataset.images), "--out", str(out),
                                    "--folds", "3"]).exit_code == 0
    replace, moved = os.replace, []

    def fail_at_the_third(src, dst):
        if str(src).endswith(".tmp"):
            moved.append(src)
            if len(moved) == 3:
                raise OSError(5, "Input/output error")
        return replace(src, dst)

    monkeypatch.setattr(build_module.os, "replace", fail_at_the_third)
    result = CliRunner().invoke(cli, [*args, "--images", str(sample_dataset.images), "--out", str(out)])
    monkeypatch.setattr(build_module.os, "replace", replace)
    assert result.exit_code == 1 and "only partly moved" in result.output and (out / COMMIT_JOURNAL).exists()
    waiting = sorted(p.name for p in out.glob(".*.tmp"))
    assert waiting and any(p.name.startswith("fold") for p in out.iterdir())  # two builds side by side
    broken = tmp_path / "broken"
    shutil.copytree(out, broken)
    (tmp_path / "empty").mkdir()
    result = CliRunner().invoke(cli, [*args, "--images", str(tmp_path / "empty"), "--out", str(out)])
    assert result.exit_code == 1
    said = " ".join(result.output.split())
    assert (f"note: {out} held a build stopped while moving its files into place: it was finished first" in said
            and f"the earlier build in {out} is as it was" in said)
    plain = sample_build[0]  # the same command, never interrupted
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.name != "report.json"} == \
        {p.name: p.read_bytes() for p in plain.iterdir() if p.name != "report.json" and p.is_file()}
    (broken / waiting[0]).unlink()  # a file the move needs is gone: the folder cannot be finished
    result = CliRunner().invoke(cli, [*args, "--images", str(tmp_path / "empty"), "--out", str(broken)])
    assert (f"{broken} still holds a build stopped while moving its files into place, some of them gone: training "
            "refuses it until a build there completes") in " ".join(result.output.split())
    assert (broken / COMMIT_JOURNAL).exists()


def test_a_stop_while_the_files_are_moved_into_place_says_the_build_is_complete(sample_dataset, tmp_path,
                                                                               monkeypatch):
    """A Ctrl-C during the renames was held until they were done, then raised: "Aborted!" and exit 1 over a build
    that was complete in --out, the earlier one gone."""
    import signal

    from edge_trash.tfrecords import build as build_module
    from edge_trash.tfrecords.build import BuildOptions, build_tfrecords
    from edge_trash.tfrecords.build_cli import summarize

    replace, moved = os.replace, []

    def ctrl_c_at_the_second(src, dst):
        if str(src).endswith(".tmp"):
            moved.append(src)
            if len(moved) == 2:
                signal.raise_signal(signal.SIGINT)
        return replace(src, dst)

    monkeypatch.setattr(build_module.os, "replace", ctrl_c_at_the_second)
    out = tmp_path / "out"
    report = build_tfrecords(BuildOptions(annotations=sample_dataset.annotations, images=sample_dataset.images,
                                          out=out, workers=1))  # no KeyboardInterrupt: the build is whole
    assert len(moved) > 2 and report["interrupted_after_writing"] is True
    assert sorted(p.name for p in out.iterdir()) == sorted([s["file"] for s in report["shards"]] + [
        "label_map.pbtxt", "labels.txt", "report.json", "splits.json"])
    assert (f"note: the stop (Ctrl-C or SIGTERM) came while the files were moved into place: the build is complete "
            f"in {out}, as above") in summarize(report, out, 1.0).splitlines()
    # a Ctrl-C before the move still stops the build, leaving --out as it was
    monkeypatch.setattr(build_module, "make_example_bytes", lambda *a, **k: signal.raise_signal(signal.SIGINT))
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    handler = signal.signal(signal.SIGINT, signal.default_int_handler)  # as from a terminal (not a background job)
    try:
        with pytest.raises(KeyboardInterrupt):
            build_tfrecords(BuildOptions(annotations=sample_dataset.annotations, images=sample_dataset.images,
                                         out=out, workers=1, seed=5))
    finally:
        signal.signal(signal.SIGINT, handler)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_the_classes_line_ranks_nothing_when_no_box_was_written():
    from edge_trash.tfrecords.build_cli import _classes_line

    classes = [{"id": k, "name": f"c{k}", "boxes": 0} for k in range(60)]
    assert _classes_line(classes) == "classes (60): no box written (all in report.json)"
    classes[5]["boxes"] = 3
    assert _classes_line(classes).startswith("classes (60): most boxes c5 3, c0 0,")


def test_a_box_exported_twice_is_kept_once_and_reported_with_both_ids(tmp_path):
    """The same annotation under two ids (a hand-merged or re-imported export) was written twice: trained with
    double weight, and in val a copy no detection can match. Other boxes, even of the same place, stay."""
    from edge_trash.tfrecords.analyze import annotation_problems
    from edge_trash.tfrecords.coco import load_coco_files

    ann = _tiny_coco(tmp_path, [{"id": 1, "file_name": "a.jpg", "width": 40, "height": 30}],
                     [{"id": 10, "image_id": 1, "category_id": 1, "bbox": [1, 2, 10, 8]},
                      {"id": 11, "image_id": 1, "category_id": 1, "bbox": [1, 2, 10, 8]},  # the copy
                      {"id": 12, "image_id": 1, "category_id": 2, "bbox": [1, 2, 10, 8]},  # another class: kept
                      {"id": 13, "image_id": 1, "category_id": 1, "bbox": [1, 2, 10, 9]},  # another box: kept
                      {"id": 14, "image_id": 1, "category_id": 1, "bbox": [1, 2, 10, 8], "iscrowd": 1},  # crowd
                      {"id": 15, "image_id": 1, "category_id": 1, "bbox": [1, 2, 10, 8], "area": 80}],  # not a copy
                     [{"id": 1, "name": "can"}, {"id": 2, "name": "cup"}])
    dataset = load_coco_files([ann])
    assert [b.source_id for b in dataset.boxes] == [10, 12, 13, 14, 15]
    assert [(r.record_id, r.reason) for r in dataset.rejected_boxes] == [
        (11, "duplicate box: annotation 10 again (every field the same but the id: exported twice); kept once")]
    assert annotation_problems(dataset)["boxes_rejected_by_kind"]["duplicate_box"] == 1
    _solid_jpeg(tmp_path / "a.jpg", (40, 30))
    report = build_tfrecords(BuildOptions(annotations=ann, images=tmp_path, out=tmp_path / "out",
                                          val_fraction=0, test_fraction=0, workers=1))
    assert report["boxes_written"] == 5 and [d["annotation_id"] for d in report["boxes_dropped"]] == [11]
