"""``edge-trash analyze``: exact counts against the JSON, flags, TFRecord mode, report files, the CLI."""

from __future__ import annotations

import io
import json
import math
import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from conftest import REPO, SHARED
from edge_trash.cli import cli
from edge_trash.tfrecords.analyze import (AnalyzeError, BoxEntry, ImageEntry, Source, Thresholds, analyze,
                                          describe, find_flags, is_tiny, mean_luma, size_class)

TACO = SHARED / "data" / "coco" / "taco_unofficial.json"
UAVVASTE = SHARED / "data" / "coco" / "uavvaste.json"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _flag(stats, kind, where="annotations"):
    found = [f for f in stats["flags"] if f["kind"] == kind and f["where"] == where]
    assert len(found) <= 1
    return found[0] if found else None


def _valid_annotations(coco):
    """Annotations a converter can use, decided from the raw JSON (independently of load_coco)."""
    cats = {c["id"] for c in coco["categories"]}
    images = {im["id"]: im for im in coco["images"]}
    valid = []
    for a in coco["annotations"]:
        x, y, w, h = a["bbox"]
        if a["category_id"] not in cats or a["image_id"] not in images:
            continue
        if not all(math.isfinite(v) for v in a["bbox"]) or w <= 0 or h <= 0:
            continue
        im = images[a["image_id"]]
        if min(im["width"], x + w) - max(0, x) < 1 or min(im["height"], y + h) - max(0, y) < 1:
            continue
        valid.append(a)
    return valid


def _full_decode_luma(path: Path) -> float:
    """Mean of Pillow's L conversion of the fully decoded image (no draft, no shortcut)."""
    img = Image.open(path)
    img.load()
    rgb = img.convert("RGBA").convert("RGB") if "A" in img.getbands() else img.convert("RGB")
    return float(np.asarray(rgb.convert("L"), dtype=np.float64).mean())


@pytest.fixture(scope="module")
def sample_analysis(sample_dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("analysis")
    stats = analyze(sample_dataset.annotations, sample_dataset.images, out=out)
    return out, stats


# ----------------------------------------------------------------------------- real annotation files


@pytest.mark.skipif(not TACO.is_file(), reason=f"{TACO} not present")
def test_taco_without_images_counts_nan_infinity_and_boxes_past_the_image(tmp_path):
    raw = json.loads(TACO.read_text())
    images = {im["id"]: im for im in raw["images"]}
    infinite = [a for a in raw["annotations"] if a["bbox"] == [math.inf, math.inf, -math.inf, -math.inf]]
    def overshoot(a):
        x, y, w, h = a["bbox"]
        return max(-x, -y, x + w - images[a["image_id"]]["width"], y + h - images[a["image_id"]]["height"])

    finite = [a for a in raw["annotations"] if all(math.isfinite(v) for v in a["bbox"])]
    past = [a for a in finite if overshoot(a) > 0]
    rounding = [a["id"] for a in past if overshoot(a) <= 1e-3]
    assert (len(infinite), len(past), rounding) == (15, 27, [6548])  # checked by hand against the file

    stats = analyze(annotations=TACO, out=tmp_path, plots=False)
    p = stats["annotations"]["problems"]
    assert p["boxes_rejected_by_kind"]["nan_or_infinity"] == 15
    # 6548's x is -5.96e-06 (float32 rounding): not counted as past the image
    assert p["boxes_past_image"] == 26
    assert p["boxes_clipped"] + p["boxes_rejected_by_kind"]["outside_image"] == 26
    assert p["boxes_in_file"] == len(raw["annotations"]) == 8334
    assert stats["annotations"]["images"] == 3831
    expected = Counter(a["category_id"] for a in _valid_annotations(raw))
    names = {c["id"]: c["name"] for c in raw["categories"]}
    got = {c["name"]: c["instances"] for c in stats["annotations"]["classes"]}
    assert got == {names[cid]: expected.get(cid, 0) for cid in names}
    rare = _flag(stats, "long_tail_classes")
    assert set(rare["items"]) == {n for n, k in got.items() if 0 < k < 20}
    assert stats["tfrecords"] is None and stats["annotations"]["brightness"] is None
    # every rejected box names its photo, and the flag shows the first ones: the user can open them
    files = {im["id"]: im["file_name"] for im in raw["images"]}
    assert [(r["record_id"], r["file_name"]) for r in p["rejected_boxes"]] == [
        (r["record_id"], files[r["image_id"]]) for r in p["rejected_boxes"]]
    first = p["rejected_boxes"][0]
    assert f"(annotation {first['record_id']} on {first['file_name']}, " in _flag(stats, "rejected_boxes")["message"]
    dropped_all = p["image_ids_every_box_dropped"]
    assert len(dropped_all) == 7 and p["files_every_box_dropped"] == [files[i] for i in dropped_all]
    assert files[dropped_all[0]] in _flag(stats, "images_every_box_dropped")["message"]


@pytest.mark.skipif(not UAVVASTE.is_file(), reason=f"{UAVVASTE} not present")
def test_uavvaste_single_class_and_tiny_share(tmp_path):
    raw = json.loads(UAVVASTE.read_text())
    images = {im["id"]: im for im in raw["images"]}
    tiny = sum(1 for a in raw["annotations"] if a["bbox"][2] * a["bbox"][3] < 32 ** 2
               or a["bbox"][2] < 0.02 * images[a["image_id"]]["width"]
               or a["bbox"][3] < 0.02 * images[a["image_id"]]["height"])
    stats = analyze(annotations=UAVVASTE, out=tmp_path, plots=False)
    ann = stats["annotations"]
    assert (ann["images"], ann["boxes"], ann["problems"]["boxes_rejected"]) == (772, 3718, 0)
    assert [(c["name"], c["instances"]) for c in ann["classes"]] == [("rubbish", 3718)]
    assert ann["box_sizes"]["tiny"] == tiny
    assert _flag(stats, "tiny_objects")["count"] == tiny
    sizes = ann["box_sizes"]
    assert sizes["small"] + sizes["medium"] + sizes["large"] == 3718


# ----------------------------------------------------------------------------- sample data


def test_sample_counts_per_class_match_the_json(sample_dataset, sample_analysis):
    _, stats = sample_analysis
    raw = json.loads(sample_dataset.annotations.read_text())
    valid = _valid_annotations(raw)
    names = {c["id"]: c["name"] for c in raw["categories"]}
    per_class = Counter(names[a["category_id"]] for a in valid)
    images_per_class = {n: len({a["image_id"] for a in valid if names[a["category_id"]] == n}) for n in per_class}
    got = {c["name"]: (c["instances"], c["images"]) for c in stats["annotations"]["classes"] if c["instances"]}
    assert got == {n: (per_class[n], images_per_class[n]) for n in per_class}
    assert stats["annotations"]["boxes"] == len(valid)
    boxes_per_image = Counter(a["image_id"] for a in valid)
    expected_hist = Counter(boxes_per_image.get(im["id"], 0) for im in raw["images"])
    assert stats["annotations"]["boxes_per_image"]["histogram"] == {str(k): v for k, v in sorted(expected_hist.items())}


def test_sample_rare_class_is_flagged(sample_analysis, sample_dataset):
    _, stats = sample_analysis
    raw = json.loads(sample_dataset.annotations.read_text())
    names = {c["id"]: c["name"] for c in raw["categories"]}
    counts = Counter(names[a["category_id"]] for a in _valid_annotations(raw))
    rare = {n for n, k in counts.items() if k < 20}
    assert "cigarette" in rare  # the sample's long tail
    assert set(_flag(stats, "long_tail_classes")["items"]) == rare
    assert "cigarette" in _flag(stats, "long_tail_classes")["message"]


def test_sample_dark_scenes_and_unreadable_files_are_found(sample_dataset, sample_analysis):
    _, stats = sample_analysis
    raw = json.loads(sample_dataset.annotations.read_text())
    broken = {i for k in ("truncated", "empty_file", "missing_file", "not_an_image")
              for i in sample_dataset.injected[k]}
    luma = {im["id"]: _full_decode_luma(sample_dataset.images / im["file_name"])
            for im in raw["images"] if im["id"] not in broken}
    dark = {i for i, v in luma.items() if v < 50}
    assert dark, "the sample data should contain dark scenes"
    assert max(luma[i] for i in dark) < 30 < min(v for i, v in luma.items() if i not in dark) - 20
    assert set(_flag(stats, "dark_images")["items"]) == dark
    measured = stats["annotations"]["brightness"]["per_image"]
    assert all(abs(measured[str(i)] - v) < 1.5 for i, v in luma.items())
    assert {u["image_id"] for u in stats["annotations"]["brightness"]["unreadable"]} == broken
    assert set(_flag(stats, "unreadable_images")["items"]) == broken
    # the usable boxes on those files: build-tfrecords skips them with their image, and the summary says so
    on_broken = sum(1 for a in _valid_annotations(raw) if a["image_id"] in broken)
    assert stats["annotations"]["boxes_on_unreadable_images"] == on_broken > 0
    from edge_trash.tfrecords.analyze_cli import summarize

    assert f"usable, {on_broken} of them on images that cannot be read)" in summarize(stats, Path("o"), 1.0)


def test_sample_annotation_problems(sample_dataset, sample_analysis):
    _, stats = sample_analysis
    p = stats["annotations"]["problems"]
    inj = sample_dataset.injected
    kinds = p["boxes_rejected_by_kind"]
    assert kinds["nan_or_infinity"] == len(inj["nan_box"]) + len(inj["infinity_box"]) == 2
    assert kinds["unknown_category"] == len(inj["unknown_category"]) == 1
    assert kinds["unknown_image"] == len(inj["unknown_image"]) == 1
    assert p["boxes_clipped"] == len(inj["edge_box_clipped"]) == 1
    assert p["duplicate_annotation_ids"] == inj["duplicate_annotation_id"]
    assert p["unused_categories"] == ["litter-objects"]
    raw = json.loads(sample_dataset.annotations.read_text())
    with_boxes = {a["image_id"] for a in _valid_annotations(raw)}
    assert p["image_ids_without_boxes"] == [im["id"] for im in raw["images"] if im["id"] not in with_boxes]
    assert set(inj["background"]) <= set(p["image_ids_without_boxes"])


def test_report_plots_and_stats_are_written(sample_analysis):
    out, stats = sample_analysis
    on_disk = json.loads((out / "stats.json").read_text())
    assert on_disk == json.loads(json.dumps(stats))
    plots = stats["annotations"]["plots"]
    assert sorted(plots) == sorted(f"annotations_{p}.png" for p in
                                   ("classes", "boxes_per_image", "box_sizes", "image_sizes", "brightness"))
    report = (out / "report.md").read_text()
    for name in plots:
        data = (out / name).read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 5000
        assert f"]({name})" in report
    assert "| cigarette (long tail) |" in report
    assert not list(out.glob(".*.tmp"))


def test_report_md_words_match_the_numbers(tmp_path, capsys):
    # report.md said "images without boxes: 1" where the summary said 0 (the image whose every box is unusable,
    # which the build leaves out), "images: not read (brightness not measured)" above the brightness of the
    # records, "area < 1024 px" for an area; the dark flag rounded 49.5 to "(50)" under "below 50".
    images = tmp_path / "img"
    images.mkdir()
    dim = np.full((30, 40, 3), 49, np.uint8)
    dim[:, 20:] = 50  # mean 49.5: below 50, "50" when rounded
    Image.fromarray(dim).save(images / "dim.png")
    Image.new("RGB", (40, 30), (200, 200, 200)).save(images / "lit.png")
    coco = {"images": [{"id": 1, "file_name": "dim.png", "width": 40, "height": 30},
                       {"id": 2, "file_name": "lit.png", "width": 40, "height": 30}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [2, 2, 10, 10]},
                            {"id": 2, "image_id": 2, "category_id": 1, "bbox": [90, 90, 10, 10]}],
            "categories": [{"id": 1, "name": "can"}]}
    ann = tmp_path / "a.json"
    ann.write_text(json.dumps(coco))
    stats = analyze(ann, images, out=tmp_path / "an", plots=False, progress=True)
    assert "analyze images: 100%|██████████| 2/2 " in capsys.readouterr().err  # the bar closed at 1/2 (50%)
    luma = stats["annotations"]["brightness"]["per_image"]["1"]
    assert luma == 49.5 and stats["annotations"]["problems"]["images_without_boxes"] == 0
    report = (tmp_path / "an" / "report.md").read_text()
    assert "images without boxes: 0, and 1 more whose every box is unusable (build-tfrecords leaves them out)." in report
    assert "Box sizes by box area (w x h; COCO's size classes: small < 1024 px², medium < 9216 px²;" in report
    assert "1 image has a mean luma below 50/255: dim.png (49.5);" in report
    built = tmp_path / "tfr"
    from edge_trash.tfrecords.build import BuildOptions, build_tfrecords

    build_tfrecords(BuildOptions(annotations=ann, images=images, out=built, val_fraction=0, test_fraction=0))
    analyze(tfrecords=built, out=tmp_path / "an2", plots=False)
    report = (tmp_path / "an2" / "report.md").read_text()
    assert "- images: not read (brightness measured on the pictures stored in the TFRecords)" in report
    assert "Brightness (mean luma of 1 image" in report and "images without boxes: 0." in report


def test_the_classes_plot_of_a_thousand_classes_shows_the_fewest_and_the_most(tmp_path):
    """LVIS-sized class lists (1203 classes): one bar each made a PNG 24,000 px tall (6000 classes: 119,000 px,
    43 s); the plot shows the 30 with the fewest and the 30 with the most instances, stats.json has them all."""
    from edge_trash.tfrecords.analyze_report import PLOT_CLASSES, plotted_classes

    n = 1203
    ann = tmp_path / "lvis_like.json"
    ann.write_text(json.dumps({
        "images": [{"id": 1, "file_name": "a.jpg", "width": 640, "height": 480}],
        "annotations": [{"id": k, "image_id": 1, "category_id": c, "bbox": [1 + r, 1, 20, 20]}  # r: not one box twice
                        for k, (c, r) in enumerate(((c, r) for c in range(1, n + 1) for r in range(1 + c % 7)),
                                                   start=1)],
        "categories": [{"id": c, "name": f"class_{c:04d}"} for c in range(1, n + 1)]}))
    stats = analyze(ann, out=tmp_path / "out")
    assert len(stats["annotations"]["classes"]) == n
    png = Image.open(tmp_path / "out" / "annotations_classes.png")
    one_bar = 0.22 * 90  # inches per bar at the plot's 90 dpi
    assert png.height < (PLOT_CLASSES + 1) * one_bar + 400 < n * one_bar / 10
    bars, shown = plotted_classes(stats["annotations"]["classes"])
    by_count = sorted(stats["annotations"]["classes"], key=lambda c: c["instances"])
    assert [b["name"] for b in bars] == ([c["name"] for c in by_count[:30]] + ["(1143 more)"]
                                         + [c["name"] for c in by_count[-30:]])
    assert {b["instances"] for b in bars[:30]} == {1} and {b["instances"] for b in bars[-30:]} == {7}
    assert shown == "1203 classes: the 30 with the fewest and most (all in stats.json)"
    few = stats["annotations"]["classes"][:PLOT_CLASSES]
    assert plotted_classes(few) == (sorted(few, key=lambda c: c["instances"]), "")  # up to 60: every class


def _copies_export(tmp_path):
    """An export's train and val files where val's b.jpg is a byte copy of train's a.jpg."""
    folder = tmp_path / "photos"
    folder.mkdir()
    for name, colour in (("a.jpg", (200, 30, 30)), ("c.jpg", (30, 200, 30)), ("d.jpg", (30, 30, 200)),
                         ("e.jpg", (200, 200, 30))):
        Image.new("RGB", (64, 48), colour).save(folder / name, quality=95)
    (folder / "b.jpg").write_bytes((folder / "a.jpg").read_bytes())
    files = []
    for split, names, first in (("train", ["a.jpg", "c.jpg", "e.jpg"], 1), ("val", ["b.jpg", "d.jpg"], 11)):
        path = tmp_path / f"instances_{split}.json"
        ids = range(first, first + len(names))
        path.write_text(json.dumps({
            "images": [{"id": i, "file_name": n, "width": 64, "height": 48} for i, n in zip(ids, names)],
            "annotations": [{"id": i, "image_id": i, "category_id": 1, "bbox": [4, 4, 20, 20]} for i in ids],
            "categories": [{"id": 1, "name": "can"}]}))
        files.append(path)
    return files, folder


def test_analyze_flags_one_picture_under_two_entries_and_in_two_splits(tmp_path):
    from edge_trash.tfrecords.build import BuildOptions, build_tfrecords

    files, folder = _copies_export(tmp_path)
    stats = analyze(files, folder, out=tmp_path / "a1", plots=False)
    assert stats["annotations"]["duplicate_images"] == [{"image_ids": [1, 11], "file_names": ["a.jpg", "b.jpg"]}]
    flag = _flag(stats, "duplicate_images")
    assert flag["message"] == ("1 picture appears under more than one image entry (2 entries): a.jpg = b.jpg; 1 of "
                               "them in more than one split file (a --keep-splits build scores val/test on pictures "
                               "it trained on: remove the copies); build-tfrecords keeps the copies of one picture "
                               "in one split")
    assert flag["items"] == [[1, 11]]
    # the records of a --keep-splits build hold the copy in train and in val: flagged from image/key/sha256
    kept = tmp_path / "kept"
    build_tfrecords(BuildOptions(annotations=files, images=folder, out=kept, keep_splits=True))
    stats = analyze(tfrecords=kept, out=tmp_path / "a2", plots=False)
    assert stats["tfrecords"]["pictures_in_several_splits"] == 1
    flag = _flag(stats, "pictures_in_several_splits", "tfrecords")
    assert flag["message"] == ("1 picture is stored in more than one split: a.jpg (train) = b.jpg (val); val/test "
                               "scores count pictures the model trained on: remove the copies, or build without "
                               "--keep-splits (copies of one picture stay in one split)")
    # a new split keeps the copies together: nothing to flag
    fresh = tmp_path / "fresh"
    build_tfrecords(BuildOptions(annotations=files, images=folder, out=fresh, val_fraction=0.4, test_fraction=0))
    stats = analyze(tfrecords=fresh, out=tmp_path / "a3", plots=False)
    assert stats["tfrecords"]["pictures_in_several_splits"] == 0
    assert _flag(stats, "pictures_in_several_splits", "tfrecords") is None
    # one file, no copies: no flag, an empty list
    stats = analyze(files[0], folder, out=tmp_path / "a4", plots=False)
    assert stats["annotations"]["duplicate_images"] == [] and _flag(stats, "duplicate_images") is None


def test_a_picture_in_several_splits_is_shown_with_its_splits_and_the_fix_the_build_allows():
    # The example showed three train copies of a picture whose val copies were the point, and told a build without
    # --keep-splits to build without --keep-splits: its copies were files that differ (one photo at two sizes)
    # until the shrink made them alike.
    from edge_trash.tfrecords.analyze import pictures_across_splits

    pictures = {"train": [("9.jpg", "k"), ("11.jpg", "k"), ("10.jpg", "k"), ("1.jpg", "x")],
                "val": [("7.jpg", "k"), ("5.jpg", "k")]}
    count, flags = pictures_across_splits(pictures, keep_splits=False)
    assert count == 1 and flags[0]["items"] == [["9.jpg", "11.jpg", "10.jpg", "7.jpg", "5.jpg"]]
    assert flags[0]["message"] == (
        "1 picture is stored in more than one split: 9.jpg (train) = 7.jpg (val) = 11.jpg (train) = ...; val/test "
        "scores count pictures the model trained on: remove the copies (files that differ, such as one photo at two "
        "sizes, came out alike only once shrunk, so the build could not keep them in one split)")
    for keep in (True, None):
        assert pictures_across_splits(pictures, keep)[1][0]["message"].endswith(
            "remove the copies, or build without --keep-splits (copies of one picture stay in one split)")


def test_records_without_a_sha256_key_are_matched_by_their_stored_bytes(tmp_path):
    """Other converters may leave image/key/sha256 out: the stored picture's own hash stands in."""
    from edge_trash.tfrecords import feature_keys as K
    from edge_trash.tfrecords.tf_example import BYTES, INT64, serialize_example
    from edge_trash.tfrecords.tfrecord_file import TFRecordWriter

    photo = io.BytesIO()
    Image.new("RGB", (32, 24), (90, 120, 150)).save(photo, format="JPEG")
    other = io.BytesIO()
    Image.new("RGB", (32, 24), (10, 20, 30)).save(other, format="JPEG")
    for split, pictures in (("train", [("x.jpg", photo), ("y.jpg", other)]), ("val", [("z.jpg", photo)])):
        with TFRecordWriter(tmp_path / f"{split}-00000-of-00001.tfrecord") as writer:
            for n, (name, data) in enumerate(pictures):
                writer.write(serialize_example({
                    K.ENCODED: (BYTES, [data.getvalue()]), K.FILENAME: (BYTES, [name.encode()]),
                    K.SOURCE_ID: (BYTES, [f"{split}{n}".encode()]), K.WIDTH: (INT64, [32]),
                    K.HEIGHT: (INT64, [24])}))
    stats = analyze(tfrecords=tmp_path, out=tmp_path / "out", plots=False)
    assert stats["tfrecords"]["pictures_in_several_splits"] == 1
    assert _flag(stats, "pictures_in_several_splits", "tfrecords")["items"] == [["x.jpg", "z.jpg"]]


def test_records_without_width_and_height_take_them_from_the_stored_image(tmp_path):
    """Training reads records without image/width and image/height (it decodes the image); analyze refused them."""
    from edge_trash.tfrecords import feature_keys as K
    from edge_trash.tfrecords.tf_example import BYTES, FLOAT, INT64, serialize_example
    from edge_trash.tfrecords.tfrecord_file import TFRecordWriter

    photo = io.BytesIO()
    Image.new("RGB", (40, 30), (90, 120, 150)).save(photo, format="JPEG")
    box = {K.BBOX_XMIN: (FLOAT, [0.25]), K.BBOX_YMIN: (FLOAT, [0.5]), K.BBOX_XMAX: (FLOAT, [0.75]),
           K.BBOX_YMAX: (FLOAT, [1.0]), K.CLASS_LABEL: (INT64, [1])}
    (tmp_path / "labels.txt").write_text("can\n")
    for split in ("train", "val"):
        with TFRecordWriter(tmp_path / f"{split}-00000-of-00001.tfrecord") as writer:
            writer.write(serialize_example({K.ENCODED: (BYTES, [photo.getvalue()]), **box}))
    stats = analyze(tfrecords=tmp_path, out=tmp_path / "out", plots=False)
    train = stats["tfrecords"]["splits"]["train"]
    assert train["image_sizes"]["distinct"] == [{"width": 40, "height": 30, "images": 1}]
    assert train["box_sizes"]["sqrt_area_px"]["median"] == round(math.sqrt(20 * 15), 4)  # 0.5 x 0.5 of 40x30
    with TFRecordWriter(tmp_path / "val-00000-of-00001.tfrecord") as writer:  # nothing to take them from
        writer.write(serialize_example({K.ENCODED: (BYTES, [b"not an image"]), **box}))
    with pytest.raises(AnalyzeError, match=r"^val-00000-of-00001.tfrecord record 0: missing or bad image/width/"
                                           r"image/height, and no readable image/encoded to take them from; "):
        analyze(tfrecords=tmp_path, out=tmp_path / "out", plots=False)


def test_thresholds_change_the_flags(sample_dataset, tmp_path):
    stats = analyze(sample_dataset.annotations, sample_dataset.images, out=tmp_path, plots=False,
                    thresholds=Thresholds(dark_luma=0, rare_instances=0))
    assert _flag(stats, "dark_images") is None and _flag(stats, "long_tail_classes") is None
    assert stats["thresholds"]["dark_luma"] == 0


# ----------------------------------------------------------------------------- TFRecords


@pytest.mark.slow
def test_tfrecord_mode_per_split_matches_the_build_report(sample_dataset, sample_build, sample_analysis, tmp_path):
    tfr, report = sample_build
    stats = analyze(tfrecords=tfr, out=tmp_path)
    splits = stats["tfrecords"]["splits"]
    assert {s: (v["images"], v["boxes"]) for s, v in splits.items()} == \
        {s: (v["images"], v["boxes"]) for s, v in report["splits"].items()}
    totals = Counter()
    for split in splits.values():
        assert "encoded image pixels" in split["frame"]
        for c in split["classes"]:
            totals[c["name"]] += c["instances"]
        z = split["box_sizes"]
        assert z["small"] + z["medium"] + z["large"] == split["boxes"]
        assert max(max(d["width"], d["height"]) for d in split["image_sizes"]["distinct"]) <= 640
    assert dict(totals) == {c["name"]: c["boxes"] for c in report["classes"]}
    # dark images survive the re-encode: the same ids as from the source JPEGs
    dark_json = {d["image_id"] for d in sample_analysis[1]["annotations"]["brightness"]["dark"]}
    written = {i for ids in json.loads((tfr / "splits.json").read_text())["splits"].values() for i in ids}
    dark_records = {int(d["image_id"]) for s in splits.values() for d in s["brightness"]["dark"]}
    assert dark_records == dark_json & written and dark_records
    assert _flag(stats, "long_tail_classes", "tfrecords/val") is None  # the tail is judged on train only
    assert _flag(stats, "tiny_objects", "tfrecords/val") is None
    report_md = (tmp_path / "report.md").read_text()
    sections = {part.split("\n", 1)[0]: part for part in report_md.split("\n## ")}
    assert "(long tail)" in sections["tfrecords/train"]  # the 30-image sample's train has rare classes
    assert "(long tail)" not in sections["tfrecords/val"] + sections["tfrecords/test"]
    assert {p for s in splits for p in splits[s]["plots"]} <= {f.name for f in tmp_path.glob("*.png")}
    assert "## Classes per split (TFRecords)" in (tmp_path / "report.md").read_text()


# ----------------------------------------------------------------------------- small pieces


@pytest.mark.parametrize("area,bucket", [(0.5, "small"), (1023.9, "small"), (1024, "medium"),
                                         (9215.9, "medium"), (9216, "large"), (1e7, "large")])
def test_coco_size_buckets(area, bucket):
    assert size_class(area, Thresholds()) == bucket


def test_tiny_by_relative_side():
    image = ImageEntry(1, "a.jpg", 4000, 3000)
    assert is_tiny(BoxEntry(1, "can", 79.9, 500), image, Thresholds())  # 79.9 < 2% of 4000
    assert not is_tiny(BoxEntry(1, "can", 80, 60), image, Thresholds())  # 2% exactly, area 4800
    assert is_tiny(BoxEntry(1, "can", 30, 30), ImageEntry(1, "b", 100, 100), Thresholds())  # area 900


@pytest.mark.parametrize("mode,fmt", [("RGB", "JPEG"), ("L", "JPEG"), ("CMYK", "JPEG"), ("RGBA", "PNG")])
def test_mean_luma_of_a_flat_image(mode, fmt):
    img = Image.new("RGB", (640, 480), (100, 100, 100)).convert(mode)
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    assert abs(mean_luma(buf.getvalue()) - 100) <= 1.5


@pytest.mark.parametrize("size", [(401, 401), (546, 417), (9, 17), (640, 480)])
def test_mean_luma_weighs_the_partial_edge_blocks_by_the_pixels_they_stand_for(size):
    # At 1/8 scale a 401 px photo decodes to 51 px, the last standing for one column: counted as a whole one, a
    # dark photo (43) with a white 1 px edge read 51.2 and escaped the dark flag (< 50).
    width, height = size
    arr = np.full((height, width, 3), 43, np.uint8)
    arr[:, -1] = arr[-1, :] = 255
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=100)
    decoded = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("L"), dtype=float).mean()
    assert mean_luma(buf.getvalue()) == pytest.approx(decoded, abs=0.3)


def test_covered_pixels_of_each_scaled_pixel():
    from edge_trash.tfrecords.analyze import _covered

    assert _covered(401, 51).tolist() == [8.0] * 50 + [1.0]
    assert _covered(9, 2).tolist() == [8.0, 1.0]  # 1/8 scale, though ceil(9 / 2) = 5
    assert _covered(30, 8).tolist() == [4.0] * 7 + [2.0]
    assert _covered(640, 640).tolist() == [1.0] * 640
    assert _covered(10, 4).tolist() == [2.5] * 4  # no DCT scale gives 4: alike


def test_mean_luma_of_16_bit_and_float_images_matches_what_build_writes():
    # 100/255 of full scale in each: build-tfrecords scales these ranges to 8 bits, so the luma is 100
    for arr in (np.full((48, 64), 100 * 257, np.uint16), np.full((48, 64), 100 / 255, np.float32)):
        buf = io.BytesIO()
        Image.fromarray(arr).save(buf, format="TIFF")
        assert abs(mean_luma(buf.getvalue()) - 100) <= 1


def test_library_errors_name_the_option(tmp_path):
    with pytest.raises(AnalyzeError, match="--annotations A.json, --tfrecords DIR"):
        analyze(out=tmp_path)
    with pytest.raises(AnalyzeError, match="--tfrecords .*no shards.*build-tfrecords"):
        analyze(tfrecords=tmp_path, out=tmp_path / "o")
    with pytest.raises(AnalyzeError, match="dark_luma must be in 0..255, got 300"):
        analyze(annotations=TACO, out=tmp_path, thresholds=Thresholds(dark_luma=300))


# ----------------------------------------------------------------------------- CLI


def test_cli_through_clirunner(sample_dataset, tmp_path):
    out = tmp_path / "a"
    result = CliRunner().invoke(cli, ["analyze", "--annotations", str(sample_dataset.annotations), "--images",
                                      str(sample_dataset.images), "--out", str(out), "--quiet", "--no-plots"])
    assert result.exit_code == 0, result.output
    stats = json.loads((out / "stats.json").read_text())
    assert f"annotations: {stats['annotations']['images']} images" in result.output
    assert "long_tail_classes: " in result.output and "dark_images: " in result.output
    size = (out / "report.md").stat().st_size + (out / "stats.json").stat().st_size
    assert f"analyze: wrote report.md, stats.json and 0 plots ({size / 1e3:.0f} kB) to {out}" in result.output
    assert result.output.rstrip().splitlines()[-1] == (
        f"next: edge-trash build-tfrecords --annotations {sample_dataset.annotations} "
        f"--images {sample_dataset.images} --out data/")


@pytest.mark.parametrize("args,message", [
    ([], "give --annotations A.json, --tfrecords DIR, or both"),
    (["--images", "."], "--images needs --annotations"),
    (["--tfrecords", "a", "--tfrecords", "b"], "--tfrecords given 2 times: analyze reads one build; to compare builds, "
                                               "run analyze once for each, with its own --out"),  # kept the last
])
def test_cli_usage_errors(tmp_path, args, message):
    result = CliRunner().invoke(cli, ["analyze", "--out", str(tmp_path)] + args)
    assert result.exit_code == 2 and message in result.output


def test_cli_bad_json_names_the_file(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"images": [}')
    result = CliRunner().invoke(cli, ["analyze", "--annotations", str(bad), "--out", str(tmp_path / "o")])
    assert result.exit_code == 1
    assert f"{bad}: not valid JSON at line 1" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "o").exists()  # a run that fails leaves no empty --out behind


def test_an_out_folder_it_cannot_make_is_named_before_the_work_and_none_is_left(tmp_path, monkeypatch):
    from edge_trash.tfrecords.sample_data import write_sample_dataset

    data = write_sample_dataset(tmp_path / "s", num_images=20, seed=0, with_problems=False)
    args = ["analyze", "--annotations", str(data.annotations), "--no-plots", "--quiet", "--out"]
    result = CliRunner().invoke(cli, args + [str(data.annotations / "report")])
    assert result.exit_code == 1 and result.output == (
        f"Error: cannot write {data.annotations / 'report'}: Not a directory; choose another --out, and run again\n")
    (tmp_path / "gone").symlink_to(tmp_path / "nowhere")  # a link to a folder not there: mkdir would refuse it
    result = CliRunner().invoke(cli, args + [str(tmp_path / "gone")])
    assert result.exit_code == 1 and result.output.startswith(
        f"Error: cannot write {tmp_path / 'gone'}: a symbolic link to {tmp_path / 'nowhere'}, which does not exist")
    read = []
    monkeypatch.setattr("edge_trash.tfrecords.analyze.load_coco_files", lambda *a, **k: read.append(a))
    access = os.access
    monkeypatch.setattr("os.access", lambda path, mode: Path(path) != tmp_path and access(path, mode))
    result = CliRunner().invoke(cli, args + [str(tmp_path / "a" / "b")])
    assert result.exit_code == 1 and result.output.startswith(
        f"Error: cannot write {tmp_path / 'a' / 'b'}: Permission denied; choose an --out you can write to, or let "
        "this user write there, and run again")
    assert not read and not (tmp_path / "a").exists()


def test_real_subprocess_never_imports_tensorflow(sample_dataset, sample_build, tmp_path):
    # TFRecords too: they are read and parsed without TensorFlow (3.5 s of imports saved, no CUDA probing).
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "edge_trash", "analyze", "--annotations",
                           str(sample_dataset.annotations), "--images", str(sample_dataset.images),
                           "--tfrecords", str(sample_build[0]), "--out", str(tmp_path), "--quiet"],
                          capture_output=True, text=True, cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    imported = re.findall(r"^import time:.*\|\s*(\S+)$", proc.stderr, flags=re.M)
    assert "matplotlib" in imported  # the import log is real
    assert not [m for m in imported if m.split(".")[0] == "tensorflow"]
    stats = json.loads((tmp_path / "stats.json").read_text())
    assert {s: v["images"] for s, v in stats["tfrecords"]["splits"].items()} == \
        {s: v["images"] for s, v in sample_build[1]["splits"].items()}
    assert (tmp_path / "report.md").is_file() and "next: edge-trash train" in proc.stdout


def test_any_number_of_workers_gives_the_same_statistics(sample_dataset, sample_analysis, tmp_path):
    _, one = sample_analysis  # one process
    two = analyze(sample_dataset.annotations, sample_dataset.images, out=tmp_path, workers=2)
    assert one["annotations"]["brightness"]["unreadable"]  # the sample's broken files are in both
    assert {k: v for k, v in two.items() if k != "seconds"} == {k: v for k, v in one.items() if k != "seconds"}
    with pytest.raises(AnalyzeError, match="--workers must be at least 1, got 0"):
        analyze(sample_dataset.annotations, sample_dataset.images, out=tmp_path, workers=0)


def test_outlier_sizes_and_their_reasons():
    images = [ImageEntry(i, f"{i}.jpg", 4000, 3000) for i in range(5)]
    images += [ImageEntry(10, "big.jpg", 8000, 6000), ImageEntry(11, "pano.jpg", 3000, 1000),
               ImageEntry(12, "thumb.jpg", 400, 300)]
    stats = describe(Source("annotations", "px", images, [], ["can"]), Thresholds())
    reasons = {o["image_id"]: o["reason"] for o in stats["image_sizes"]["outliers"]}
    assert reasons == {10: "4.0x the median pixel count", 11: "aspect 3.00:1 > 2.5:1",
                       12: "short side 300 px < 320"}
    assert stats["image_sizes"]["median_pixels"] == 12_000_000
    assert stats["image_sizes"]["distinct"][0] == {"width": 4000, "height": 3000, "images": 5}
    flag = {f["kind"]: f for f in find_flags("annotations", stats, Thresholds())}["image_size_outliers"]
    assert flag["message"].startswith("3 of 8 images have an outlier size or aspect ratio (1 over 3x the median's "
                                      "12,000,000 pixels, 1 under 320 px on the short side, 1 with an aspect ratio "
                                      "above 2.5:1): big.jpg 8000x6000 (4.0x the median pixel count)")
    images = [ImageEntry(i, f"{i}.jpg", 300, 100) for i in range(4)] + [ImageEntry(9, "x.jpg", 1000, 400)]
    stats = describe(Source("annotations", "px", images, [], ["can"]), Thresholds())
    assert [o["kinds"] for o in stats["image_sizes"]["outliers"]] == [["small", "aspect"]] * 4 + [["large"]]
    flag = {f["kind"]: f for f in find_flags("annotations", stats, Thresholds())}["image_size_outliers"]
    assert flag["message"].startswith("5 of 5 images have an outlier size or aspect ratio (1 over 3x the median's "
                                      "30,000 pixels, 4 under 320 px on the short side, 4 with an aspect ratio "
                                      "above 2.5:1; an image may be both): 0.jpg 300x100")  # 9 kinds, 5 images
    # records shrunk to --max-size 320: their short side is the build's choice, flagged for every record before
    stored = describe(Source("tfrecords/train", "encoded image pixels (as stored in the records, after --max-size)",
                             [ImageEntry(i, f"{i}.jpg", 320, 240) for i in range(6)], [], ["can"]), Thresholds())
    assert stored["image_sizes"]["outliers"] == []
    assert [o["kinds"] for o in describe(Source("tfrecords/train", "encoded image pixels", images, [], ["can"]),
                                         Thresholds())["image_sizes"]["outliers"]] == [["aspect"]] * 4 + [["large"]]


def _flags_of(where):
    """The flags of three images with one 'can' each, in a source whose classes are can and cup."""
    images = [ImageEntry(str(i), f"{i}.jpg", 640, 480) for i in range(3)]
    boxes = [BoxEntry(str(i), "can", 100, 100) for i in range(3)]
    stats = describe(Source(where, "px", images, boxes, ["can", "cup"]), Thresholds())
    return {f["kind"]: f for f in find_flags(where, stats, Thresholds())}


def test_long_tail_is_judged_on_train_and_missing_classes_on_every_split_of_the_records():
    for where, kinds in (("tfrecords/train", {"long_tail_classes", "classes_missing"}),
                         ("tfrecords/val", {"classes_missing"}), ("annotations", {"long_tail_classes"})):
        flags = _flags_of(where)
        assert set(flags) == kinds
        if "long_tail_classes" in flags:
            assert flags["long_tail_classes"]["items"] == ["can"]
        if "classes_missing" in flags:
            assert flags["classes_missing"]["items"] == ["cup"]
    # a class labels.txt names and train lacks: the model never sees one (it was not flagged at all)
    assert _flags_of("tfrecords/train")["classes_missing"]["message"] == (
        "1 class has no box in train, so the model cannot learn it: cup (collect more, merge or drop them with a "
        "--class-map, and rebuild)")


def test_records_from_other_tools_with_empty_or_repeated_fields_are_reported_not_a_crash(tmp_path):
    import tensorflow as tf

    def feature(**kw):
        return {k: (tf.train.Feature(int64_list=tf.train.Int64List(value=v)) if isinstance(v[0] if v else 0, int)
                    else tf.train.Feature(bytes_list=tf.train.BytesList(value=v))) for k, v in kw.items()}

    buf = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 200, 200)).save(buf, format="JPEG")
    records = [  # a width written twice; a record whose image/encoded list is empty
        feature(**{"image/width": [64, 99], "image/height": [48], "image/encoded": [buf.getvalue()],
                   "image/source_id": [b"1"]}),
        feature(**{"image/width": [64], "image/height": [48], "image/encoded": [], "image/source_id": [b"2"]})]
    folder = tmp_path / "records"
    folder.mkdir()
    with tf.io.TFRecordWriter(str(folder / "train-00000-of-00001.tfrecord")) as writer:
        for f in records:
            writer.write(tf.train.Example(features=tf.train.Features(feature=f)).SerializeToString())
    stats = analyze(tfrecords=folder, out=tmp_path / "out", plots=False)
    split = stats["tfrecords"]["splits"]["train"]
    assert split["images"] == 2
    assert split["image_sizes"]["distinct"] == [{"width": 64, "height": 48, "images": 2}]  # the first width
    assert [u["image_id"] for u in split["brightness"]["unreadable"]] == ["2"]
    assert split["brightness"]["unreadable"][0]["reason"].startswith(
        "train-00000-of-00001.tfrecord record 1: stored image cannot be decoded: ")


def test_records_written_by_model_gardens_converter_are_read_without_tensorflow(tmp_path):
    pytest.importorskip("official")
    images = tmp_path / "images"
    images.mkdir()
    coco = {"images": [], "annotations": [], "categories": [{"id": 1, "name": "can"}, {"id": 2, "name": "cup"}]}
    for i in range(1, 4):
        Image.new("RGB", (64, 48), (40 * i, 90, 90)).save(images / f"{i}.jpg")
        coco["images"].append({"id": i, "file_name": f"{i}.jpg", "width": 64, "height": 48})
        for k in range(i):  # image i holds i boxes
            coco["annotations"].append({"id": len(coco["annotations"]) + 1, "image_id": i, "category_id": 1 + k % 2,
                                        "bbox": [2 + 10 * k, 4, 8, 8], "area": 64, "iscrowd": 0})
    ann = tmp_path / "ann.json"
    ann.write_text(json.dumps(coco))
    records = tmp_path / "records"
    records.mkdir()
    proc = subprocess.run([sys.executable, "-m", "official.vision.data.create_coco_tf_record", f"--image_dir={images}",
                           f"--object_annotations_file={ann}", f"--output_file_prefix={records / 'train'}",
                           "--num_shards=1"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    stats = analyze(tfrecords=records, out=tmp_path / "out", plots=False)
    train = stats["tfrecords"]["splits"]["train"]
    assert (train["images"], train["boxes"]) == (3, 6)
    assert {c["name"]: c["instances"] for c in train["classes"]} == {"can": 4, "cup": 2}
    assert train["brightness"]["unreadable"] == []


def test_the_next_command_keeps_the_default_images_folder_and_never_writes_into_the_dataset(tmp_path, monkeypatch):
    from edge_trash.tfrecords.analyze_cli import next_command

    monkeypatch.chdir(tmp_path)
    for folder in ("photos", "data"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "1.jpg").write_bytes(b"x")
    assert next_command([Path("photos/ann.json")], [], None) == (
        "next: edge-trash build-tfrecords --annotations photos/ann.json --out data/")
    (tmp_path / "jsons").mkdir()  # the JSON copied away from its photos: the default folder would find none
    (tmp_path / "jsons" / "notes.csv").write_text("a,b\n")
    assert next_command([Path("jsons/ann.json")], [], None) == (
        "next: edge-trash build-tfrecords --annotations jsons/ann.json --images IMAGES --out data/ (IMAGES: the "
        "folder the file_name entries are relative to; jsons holds no image)")
    assert next_command([Path("data/ann.json")], [], None) == (
        "next: edge-trash build-tfrecords --annotations data/ann.json --out tfrecords/")
    assert next_command([Path("a.json")], [Path("data")], None) == (
        "next: edge-trash build-tfrecords --annotations a.json --images data --out tfrecords/")
    built = tmp_path / "built"
    built.mkdir()
    for split in ("train", "val"):
        (built / f"{split}-00000-of-00001.tfrecord").write_bytes(b"x")
    assert next_command([Path("a.json")], [], Path("built")) == "next: edge-trash train --data built --out runs/ssd"
    (built / "val-00000-of-00001.tfrecord").write_bytes(b"")  # an empty val split: train would refuse it
    assert next_command([Path("a.json")], [], Path("built")) == (
        "next: these records lack the train or val images (or boxes) edge-trash train needs; rebuild them "
        "(build-tfrecords' summary says which)")
    for k in range(3):
        (built / f"fold{k}-00000-of-00001.tfrecord").write_bytes(b"x")
    for split in ("train", "val"):
        (built / f"{split}-00000-of-00001.tfrecord").unlink()
    assert next_command([Path("a.json")], [], Path("built")) == (
        "next: edge-trash train --data built --fold 0 --out runs/ssd-fold0 (one run per fold: --fold 0 .. 2)")


def test_flags_agree_with_a_count_of_one_and_say_when_no_image_was_found(tmp_path):
    ann = tmp_path / "ann.json"
    ann.write_text(json.dumps({
        "images": [{"id": 1, "file_name": "a.jpg", "width": 64, "height": 48},
                   {"id": 2, "file_name": "b.jpg", "width": 64, "height": 48}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [50, 2, 30, 30]},
                        {"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 9, 9]}],
        "categories": [{"id": 1, "name": "can"}, {"id": 2, "name": "cup"}]}))
    (tmp_path / "photos").mkdir()
    stats = analyze(ann, tmp_path / "photos", out=tmp_path / "a", plots=False)
    messages = {f["kind"]: f["message"] for f in stats["flags"]}
    assert messages["long_tail_classes"].startswith("1 class has fewer than 20 instances: can (2);")
    assert messages["clipped_boxes"] == "1 box runs past its image and is clipped to it"
    assert messages["duplicate_annotation_ids"] == "1 annotation id is used more than once: 1"
    assert messages["unused_categories"] == "1 category has no usable box: cup"
    assert messages["images_without_boxes"] == "1 image has no annotation (background images)"
    assert messages["unreadable_images"] == (
        f"none of the 2 image files was found: give --images as the folder the file_name entries are relative to "
        f"(file not found: {tmp_path / 'photos' / 'a.jpg'}, file not found: {tmp_path / 'photos' / 'b.jpg'})")
    Image.new("RGB", (64, 48)).save(tmp_path / "photos" / "a.jpg")
    stats = analyze(ann, tmp_path / "photos", out=tmp_path / "a", plots=False)
    assert _flag(stats, "unreadable_images")["message"] == (
        f"1 image cannot be read: file not found: {tmp_path / 'photos' / 'b.jpg'}")


def test_tiny_objects_and_mostly_tiny_classes_are_judged_where_the_model_learns():
    # A 111-box val split with 6% tiny boxes was the only tiny warning a user saw, while cigarette, 75% tiny
    # in train, got none: held-out splits are not judged, and a mostly tiny class gets its own flag.
    images = [ImageEntry(str(i), f"{i}.jpg", 640, 480) for i in range(10)]
    boxes = ([BoxEntry(str(i % 10), "can", 100, 100) for i in range(40)]
             + [BoxEntry(str(i), "cigarette", 12, 20) for i in range(6)]  # tiny: area 240 px²
             + [BoxEntry("0", "cigarette", 60, 40)])  # 6 of 7 tiny
    flags = {}
    for where in ("annotations", "tfrecords/train", "tfrecords/val"):
        stats = describe(Source(where, "px", images, boxes, ["can", "cigarette"]), Thresholds())
        assert stats["box_sizes"]["tiny"] == 6
        flags[where] = {f["kind"]: f for f in find_flags(where, stats, Thresholds(rare_instances=0))}
    assert set(flags["annotations"]) == set(flags["tfrecords/train"]) == {"tiny_objects", "tiny_classes"}
    assert flags["tfrecords/val"] == {}
    tiny = flags["annotations"]["tiny_classes"]
    assert tiny["items"] == ["cigarette"] and tiny["message"].startswith(
        "1 class has 50% or more of its boxes tiny (area < 1024 px² or a side < 2% of the image, in px): "
        "cigarette (6 of 7); expect a low AP")
    assert flags["annotations"]["tiny_objects"]["count"] == 6
    few = boxes[:40] + boxes[40:44]  # 4 tiny boxes: too few to judge a class by
    stats = describe(Source("annotations", "px", images, few, ["can", "cigarette"]), Thresholds())
    assert "tiny_classes" not in {f["kind"] for f in find_flags("annotations", stats, Thresholds())}


def test_a_folds_build_is_flagged_for_its_long_tail_over_all_folds(sample_dataset, tmp_path):
    """Each fold is held out once, so no fold alone gets the flag; the folds together do."""
    from edge_trash.tfrecords.build import BuildOptions, build_tfrecords

    out = tmp_path / "folds"
    report = build_tfrecords(BuildOptions(annotations=sample_dataset.annotations, images=sample_dataset.images,
                                          out=out, folds=3, test_fraction=0))
    stats = analyze(tfrecords=out, out=tmp_path / "a", plots=False)
    tails = [f for f in stats["flags"] if f["kind"] == "long_tail_classes"]
    assert [f["where"] for f in tails] == ["tfrecords/fold0..fold2"]
    boxes = {c["name"]: c["boxes"] for c in report["classes"]}  # what the folds hold, by the build's count
    rare = [n for n, k in boxes.items() if 0 < k < 20]
    assert sorted(tails[0]["items"]) == sorted(rare) and rare
    rarest = min(rare, key=boxes.__getitem__)
    assert f"{rarest} ({boxes[rarest]})" in tails[0]["message"]


def test_a_folds_build_is_flagged_for_its_mostly_tiny_classes_over_all_folds(tmp_path):
    from edge_trash.tfrecords.build import BuildOptions, build_tfrecords

    images = tmp_path / "images"
    images.mkdir()
    for i in range(12):
        Image.new("RGB", (200, 200), (90 + 10 * i, 90, 90)).save(images / f"{i}.jpg")  # no two files alike
    ann = tmp_path / "ann.json"
    ann.write_text(json.dumps({
        "images": [{"id": i + 1, "file_name": f"{i}.jpg", "width": 200, "height": 200} for i in range(12)],
        "annotations": [{"id": 2 * i + k + 1, "image_id": i + 1, "category_id": k + 1,
                         "bbox": [10, 10, 100, 100] if k == 0 else [150, 150, 10, 10]}
                        for i in range(12) for k in range(2)],
        "categories": [{"id": 1, "name": "can"}, {"id": 2, "name": "butt"}]}))
    build_tfrecords(BuildOptions(annotations=ann, images=images, out=tmp_path / "folds", folds=3, test_fraction=0))
    stats = analyze(tfrecords=tmp_path / "folds", out=tmp_path / "a", plots=False)
    flagged = [f for f in stats["flags"] if f["kind"] in ("tiny_classes", "tiny_objects")]
    # no fold alone is judged (each is held out by one run); the folds together are, as for the long tail
    assert [(f["where"], f["kind"], f["items"]) for f in flagged] == [("tfrecords/fold0..fold2", "tiny_classes",
                                                                       ["butt"])]
    assert "butt (12 of 12)" in flagged[0]["message"]


def test_a_class_used_under_one_of_its_category_ids_is_not_called_unused(tmp_path):
    ann = tmp_path / "ann.json"
    ann.write_text(json.dumps({
        "images": [{"id": 1, "file_name": "a.jpg", "width": 64, "height": 48}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 3, "bbox": [1, 1, 9, 9]}],
        "categories": [{"id": 0, "name": "litter-objects"}, {"id": 3, "name": "cup"}, {"id": 7, "name": "cup"},
                       {"id": 8, "name": "lid"}, {"id": 9, "name": "lid"}]}))
    stats = analyze(ann, None, out=tmp_path / "a", plots=False)
    assert stats["annotations"]["problems"]["unused_categories"] == ["litter-objects", "lid"]
    assert _flag(stats, "unused_categories")["message"] == "2 categories have no usable box: litter-objects, lid"


def _table_cells(markdown: str):
    """Every table row of ``markdown`` as parsed by a CommonMark + GFM-tables parser: a list of cells,
    each ``(text, kinds of inline tokens)``; text that shows literally has only ``text`` tokens."""
    from markdown_it import MarkdownIt

    rows, row = [], None
    for token in MarkdownIt("commonmark").enable("table").parse(markdown):
        if token.type == "tr_open":
            row = []
        elif token.type == "inline" and row is not None:
            row.append(("".join(c.content for c in token.children), {c.type for c in token.children}))
        elif token.type == "tr_close":
            rows.append(row)
            row = None
    return rows


def test_report_md_shows_class_names_literally(tmp_path):
    """A class named "can|bottle" split its row in every table of report.md (train 4 showed as "bottle", the
    last count lost); "*x*" turned italic, "<b>" passed as HTML, "[l](u)" became a link."""
    names = ["can|bottle", "*bold*", "<b>html</b>", "[link](http://x)", "`tick`", "trailing|", "a_b_c", "x & y"]
    ann = tmp_path / "odd names.json"
    ann.write_text(json.dumps({
        "images": [{"id": i, "file_name": f"{i}.jpg", "width": 640, "height": 480} for i in range(1, 4)],
        "annotations": [{"id": 10 * c + i, "image_id": i, "category_id": c, "bbox": [5 * c, 5, 30, 30]}
                        for c in range(1, len(names) + 1) for i in range(1, 4)],
        "categories": [{"id": c, "name": n} for c, n in enumerate(names, start=1)]}))
    analyze(ann, out=tmp_path / "out")
    report = (tmp_path / "out" / "report.md").read_text()
    rows = _table_cells(report)
    class_rows = [r for r in rows if len(r) == 8 and r[0][0] != "class"]  # the class table
    assert sorted(r[0][0] for r in class_rows) == sorted(f"{n} (long tail)" for n in names)
    assert all(kinds <= {"text"} for r in class_rows for _, kinds in r)  # no emphasis, HTML, link or code
    assert all([text for text, _ in r[1:4]] == ["3", "12.5%", "3"] for r in class_rows)
    flag = next(line for line in report.splitlines() if line.startswith("- **long tail classes**"))
    from markdown_it import MarkdownIt

    html = MarkdownIt("commonmark").render(flag)
    assert "can|bottle" in html and "*bold*" in html and "&lt;b&gt;html&lt;/b&gt;" in html
    assert "<a " not in html and "<code>" not in html and html.count("<strong>") == 1
    title = next(line for line in report.splitlines() if line.startswith("- annotations:"))
    assert MarkdownIt("commonmark").render(title).count("<code>") == 1 and "odd names.json</code>" in \
        MarkdownIt("commonmark").render(title)


def test_md_code_fences_a_path_holding_backticks():
    from markdown_it import MarkdownIt

    from edge_trash.tfrecords.analyze_report import md_code

    for path in ("a`b/c.json", "``x``", "`lead", "plain/a.json", "a|b.json", "c:\\data\\a.json"):
        html = MarkdownIt("commonmark").renderInline(md_code(path))
        assert html == "<code>" + path.replace("&", "&amp;").replace("<", "&lt;") + "</code>", path


def test_the_boxes_per_image_plot_shows_nine_images_beside_one_of_2000_boxes(tmp_path):
    """One image of 2000 boxes beside nine of one: bars 0.8 wide on an axis of 2000 were drawn less than a pixel
    wide, so the plot was empty; counts are grouped into at most 60 bars."""
    from edge_trash.tfrecords.analyze_report import BOX_COUNT_BARS, boxes_per_image_bars

    ann = tmp_path / "crowded.json"
    boxes = [(1, k) for k in range(2000)] + [(i, 0) for i in range(2, 11)]
    ann.write_text(json.dumps({
        "images": [{"id": i, "file_name": f"{i}.jpg", "width": 4000, "height": 3000} for i in range(1, 11)],
        "annotations": [{"id": n, "image_id": i, "category_id": 1, "bbox": [k % 60 * 60, k // 60 * 60, 40, 40]}
                        for n, (i, k) in enumerate(boxes, start=1)],
        "categories": [{"id": 1, "name": "butt"}]}))
    stats = analyze(ann, out=tmp_path / "out")
    assert stats["annotations"]["boxes_per_image"]["histogram"] == {"1": 9, "2000": 1}
    assert boxes_per_image_bars({"1": 9, "2000": 1}) == ([0, 1972], [9, 1], 34)
    assert boxes_per_image_bars({"0": 3, "1": 9, "59": 1}) == ([0, 1, 59], [3, 9, 1], 1)  # up to 60: one per count
    assert boxes_per_image_bars({"0": 3, "60": 2}) == ([0, 60], [3, 2], 2)
    assert boxes_per_image_bars({}) == ([], [], 1)
    assert len(boxes_per_image_bars({str(k): 1 for k in range(500)})[0]) <= BOX_COUNT_BARS
    pixels = np.asarray(Image.open(tmp_path / "out" / "annotations_boxes_per_image.png").convert("RGB")).astype(int)
    blue = (np.abs(pixels - [31, 119, 180]).sum(axis=2) < 30)  # matplotlib's tab:blue
    assert blue.sum() > 1000  # the bar of nine images, at least 1000 px of the 486x270 plot


def test_long_and_emoji_class_names_are_cut_in_the_plot_without_warnings(tmp_path):
    """LVIS-length names were cut off at the plot's left edge (the title at its right), with matplotlib's
    "Tight layout not applied" and one "Glyph ... missing" warning per emoji on stderr."""
    import warnings

    from edge_trash.tfrecords.analyze_report import TICK_LABEL_CHARS, tick_label

    names = [f"peeler_(tool_for_fruit_and_vegetables)_{k:02d}_and_more_words" for k in range(70)] + ["🥤 cup 瓶"]
    ann = tmp_path / "lvis_names.json"
    ann.write_text(json.dumps({
        "images": [{"id": 1, "file_name": "a.jpg", "width": 640, "height": 480}],
        "annotations": [{"id": c, "image_id": 1, "category_id": c, "bbox": [1, 1, 20, 20]}
                        for c in range(1, len(names) + 1)],
        "categories": [{"id": c, "name": n} for c, n in enumerate(names, start=1)]}))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        stats = analyze(ann, out=tmp_path / "out")
    assert [str(w.message) for w in caught if "Glyph" in str(w.message) or "ight layout" in str(w.message)] == []
    assert [c["name"] for c in stats["annotations"]["classes"]] == names  # whole in stats.json
    assert tick_label(names[0]) == names[0][:TICK_LABEL_CHARS - 1] + "…" and len(tick_label(names[0])) == 40
    assert tick_label("can") == "can" and tick_label("x" * 40) == "x" * 40
    png = Image.open(tmp_path / "out" / "annotations_classes.png")
    assert png.width > 7 * 90  # grown to hold the labels and the title, not cut at 7 inches


def test_plots_of_an_earlier_analysis_that_this_one_did_not_draw_are_removed(tmp_path):
    """A build with --folds analysed, rebuilt without, analysed again into the same folder: the fifteen fold
    plots stayed beside a report.md that no longer showed them."""
    ann = tmp_path / "a.json"
    ann.write_text(json.dumps({
        "images": [{"id": 1, "file_name": "a.jpg", "width": 64, "height": 48}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 20, 20]}],
        "categories": [{"id": 1, "name": "can"}]}))
    out = tmp_path / "analysis"
    out.mkdir()
    for name in ("tfrecords_fold0_classes.png", "tfrecords_fold1_box_sizes.png", "annotations_brightness.png",
                 "my_classes.png", "photo.png", "tfrecords_fold0_classes.png.bak"):
        (out / name).write_bytes(PNG_MAGIC)
    stats = analyze(ann, out=out)
    drawn = stats["annotations"]["plots"]
    assert sorted(drawn) == ["annotations_box_sizes.png", "annotations_boxes_per_image.png",
                             "annotations_classes.png", "annotations_image_sizes.png"]
    assert sorted(p.name for p in out.iterdir()) == sorted(
        drawn + ["my_classes.png", "photo.png", "tfrecords_fold0_classes.png.bak", "report.md", "stats.json"])
    analyze(ann, out=out, plots=False)
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["my_classes.png", "photo.png", "tfrecords_fold0_classes.png.bak", "report.md", "stats.json"])


def test_the_summary_agrees_with_one_and_names_no_build_when_no_box_is_usable(tmp_path):
    """"annotations: 1 images, 1 boxes ... 1 categories"; and a file without one usable box was sent on to
    build-tfrecords, which then stopped with "no class has a usable box"."""
    ann = tmp_path / "a.json"
    ann.write_text(json.dumps({
        "images": [{"id": 1, "file_name": "a.jpg", "width": 64, "height": 48}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 0, 0]}],
        "categories": [{"id": 1, "name": "can"}]}))
    result = CliRunner().invoke(cli, ["analyze", "--annotations", str(ann), "--out", str(tmp_path / "out"),
                                      "--no-plots", "--quiet"])
    assert result.exit_code == 0, result.output
    assert "annotations: 1 image, 1 box (0 usable), 1 category; rejected boxes: 1" in result.output
    assert result.output.rstrip().splitlines()[-1] == (
        "next: fix the annotations first: not one box in them is usable (report.md says why), and build-tfrecords "
        "needs at least one")


@pytest.mark.parametrize("encoding", ["utf-16", "utf-8-sig"])
def test_a_labels_txt_saved_by_windows_tools_is_read(sample_build, tmp_path, encoding):
    """A labels.txt rewritten by PowerShell's > (UTF-16) crashed analyze --tfrecords with UnicodeDecodeError; one
    with a byte-order mark named the first class '\\ufeffbottle'."""
    import shutil

    data = tmp_path / "data"
    shutil.copytree(sample_build[0], data)
    names = (data / "labels.txt").read_text().split("\n")[:-1]
    (data / "labels.txt").write_bytes("\r\n".join(names).encode(encoding))
    stats = analyze(tfrecords=data, out=tmp_path / "out", plots=False)
    assert stats["tfrecords"]["labels"] == names


def test_a_coco_size_dataset_says_it_is_finding_its_files_before_the_bar(sample_dataset, tmp_path, monkeypatch):
    """At COCO's size the image files take seconds to find before the first bar: said, as the build says it."""
    from edge_trash.cli import cli
    from edge_trash.tfrecords import analyze as analyze_module

    args = ["analyze", "--annotations", str(sample_dataset.annotations), "--images", str(sample_dataset.images),
            "--no-plots", "--workers", "1"]
    entries = len(json.loads(sample_dataset.annotations.read_text())["images"])
    result = CliRunner().invoke(cli, args + ["--out", str(tmp_path / "small")])
    assert result.exit_code == 0 and "image files" not in result.stderr
    monkeypatch.setattr(analyze_module, "BIG_DATASET_IMAGES", entries)
    result = CliRunner().invoke(cli, args + ["--out", str(tmp_path / "big")])
    assert result.exit_code == 0
    said = result.stderr.index(f"analyze: finding the {entries:,} image files ...\n")
    assert said < result.stderr.index(f"0/{entries} [")  # before the bar, whose total is every entry


def test_an_interrupted_analyze_leaves_the_earlier_report_and_plots_together(sample_dataset, tmp_path, monkeypatch):
    """A Ctrl-C after the plots were drawn left the new dataset's plots beside the old report.md and stats.json."""
    from edge_trash.tfrecords import analyze as analyze_module

    out = tmp_path / "analysis"
    analyze(sample_dataset.annotations, sample_dataset.images, out=out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert any(name.endswith(".png") for name in before)

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    coco = json.loads(sample_dataset.annotations.read_text())
    for c in coco["categories"]:
        c["name"] = f"renamed {c['name']}"  # another dataset: every plot differs
    other = tmp_path / "other.json"
    other.write_text(json.dumps(coco))
    monkeypatch.setattr(analyze_module, "render_report", interrupted)  # after every plot is drawn
    with pytest.raises(KeyboardInterrupt):
        analyze(other, sample_dataset.images, out=out)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # no new plot, no temporary file
