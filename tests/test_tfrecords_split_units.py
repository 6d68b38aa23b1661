"""Video frames and folders move between splits as one (split_units + assign_splits/assign_folds)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from edge_trash.tfrecords.build import BuildError, BuildOptions, build_tfrecords
from edge_trash.tfrecords.build_cli import summarize
from edge_trash.tfrecords.split_units import (MAX_VARIANTS, frames_next_to_train, roboflow_original, split_units,
                                             summary_line, variants_across_splits, video_frame)
from edge_trash.tfrecords.splits import assign_folds, assign_splits


@pytest.mark.parametrize("name,expected", [
    ("vid_000002_frame0000001.jpg", ("vid_000002", 1)),  # TrashCan
    ("01_frame_001440.PNG", ("01", 1440)),  # ZeroWaste
    ("frame_000123.PNG", (".", 123)),  # CVAT, a video task
    ("clip3/Frame-12.jpg", ("clip3", 12)),
    ("clip3\\frame 12.jpg", ("clip3", 12)),
    ("clip3_frames/000123.jpg", ("clip3_frames", 123)),  # ffmpeg -i clip3.mp4 clip3_frames/%06d.jpg
    ("vid_000002_frame0000001_jpg.rf.8c7b1e3d2f4a5b6c7d8e9f0a1b2c3d4e.jpg", ("vid_000002", 1)),  # Roboflow
    ("belt_mp4-12_jpg.rf.8c7b1e3d2f4a5b6c7d8e9f0a1b2c3d4e.jpg", ("belt", 12)),  # Roboflow, an uploaded video
    ("train/DJI_0042_MOV-0003_jpg.rf.8c7b1e3d2f4a5b6c7d8e9f0a1b2c3d4e.jpg", ("train/DJI_0042", 3)),
    ("clip_avi-7.png", ("clip", 7)),
    ("batch_1/000006.jpg", None),  # TACO: numbered photos, not frames
    ("IMG_20190301-1.jpg", None),
    ("report_mp4.jpg", None),
    ("IMG_1234.jpg", None),
    ("frameworks/0001.jpg", None),
    ("picture frame.jpg", None),
])
def test_video_frames_are_recognised_by_name(name, expected):
    assert video_frame(name) == expected


def _frames(videos: int, frames: int):
    """``(image id, source, file_name)`` for ``videos`` videos of ``frames`` frames, ids from 1."""
    return [(v * frames + f + 1, 0, f"vid_{v}_frame{f:05d}.jpg") for v in range(videos) for f in range(frames)]


def test_a_few_long_videos_are_cut_into_runs_and_many_videos_stay_whole():
    few = split_units(_frames(2, 400) + [(1000, 0, "IMG_1.jpg"), (1001, 0, "lone_frame7.jpg")], "auto")
    assert (few.videos, few.frames, few.units) == (2, 800, 40)
    assert 1000 not in few.unit_of and 1001 not in few.unit_of  # a photo and a video's only frame move alone
    runs = {}
    for iid, unit in few.unit_of.items():
        runs.setdefault(unit, []).append(iid)
    assert sorted(len(r) for r in runs.values()) == [20] * 40
    assert all(max(r) - min(r) == 19 for r in runs.values())  # consecutive frames
    many = split_units(_frames(50, 4), "auto")
    assert (many.videos, many.frames, many.units) == (50, 200, 50)
    assert split_units(_frames(2, 10), "image").unit_of == {}
    assert summary_line(few.as_report()) == (
        "note: 800 images are frames of 2 videos (file names like 'vid_0_frame00000.jpg'), split as 40 runs of "
        "consecutive frames, not frame by frame (--split-by image)")
    assert summary_line(many.as_report(), {"held_out_frames": 48, "next_to_train": 0, "example": ""}) == (
        "note: 200 images are frames of 50 videos (file names like 'vid_0_frame00000.jpg'), split as whole "
        "videos, not frame by frame (--split-by image): no val/test frame sits next to a training frame (a near "
        "copy)")
    assert summary_line(split_units([(1, 0, "a.jpg")], "auto").as_report()) == ""


def test_a_video_split_across_two_annotation_files_is_one_video():
    """A dataset's train and val files may hold frames of one video: they must not be held apart."""
    units = split_units([(1, 0, "vid_3_frame1.jpg"), (2, 0, "vid_3_frame2.jpg"),
                         (3, 1, "vid_3_frame3.jpg"), (4, 1, "vid_3_frame4.jpg")], "auto")
    assert units.videos == 1 and len({units.unit_of[i] for i in range(1, 5)}) == 1


def test_two_files_that_both_have_frame_0_are_two_videos():
    """A CVAT project names every task's frames frame_000000.PNG...: its Train and Validation files are two
    videos, so its own split puts no val frame beside a training one (one video cannot hold frame 0 twice)."""
    cvat = [(i, i // 10, f"frame_{i % 10:06d}.PNG") for i in range(20)]
    assert split_units(cvat, "auto").videos == 2
    given = {i: "train" if i < 10 else "val" for i in range(20)}
    assert frames_next_to_train(cvat, given)["next_to_train"] == 0
    # a Roboflow export deals one video's frames to its files: frame numbers do not repeat, one video
    dealt = [(i, i % 2, f"belt_mp4-{i}_jpg.rf.{i:032x}.jpg") for i in range(20)]
    assert split_units(dealt, "auto").videos == 1
    assert frames_next_to_train(dealt, {i: "train" if i % 2 == 0 else "val" for i in range(20)}) == {
        "held_out_frames": 10, "next_to_train": 10, "example": f"belt_mp4-1_jpg.rf.{1:032x}.jpg"}


def _leaks(split, neighbours):
    """Held-out images with a neighbouring frame in train."""
    train = set(split["train"])
    return sum(1 for name in ("val", "test") for i in split[name] if neighbours[i] & train)


@pytest.mark.parametrize("seed", range(5))
def test_runs_stay_in_one_split_and_fewer_held_out_frames_sit_next_to_training_ones(seed):
    images = _frames(3, 120)
    classes = {iid: {iid % 3} for iid, _, _ in images}
    units = split_units(images, "auto")
    neighbours = {iid: {iid - 1, iid + 1} for iid, _, _ in images}  # ids run along each video
    by_unit = assign_splits([i for i, _, _ in images], classes, 0.15, 0.1, seed, units.unit_of)
    by_image = assign_splits([i for i, _, _ in images], classes, 0.15, 0.1, seed)
    split_of = {i: name for name, ids in by_unit.items() for i in ids}
    assert all(len({split_of[i] for i, u in units.unit_of.items() if u == unit}) == 1
               for unit in set(units.unit_of.values()))
    assert len(by_unit["val"]) == pytest.approx(54, abs=9) and len(by_unit["test"]) == pytest.approx(36, abs=9)
    # a held-out run of 9 frames touches train at its two ends at most; frame by frame, most held-out frames do
    assert _leaks(by_unit, neighbours) <= 2 * (len(by_unit["val"]) + len(by_unit["test"])) // 9 + 2
    assert _leaks(by_image, neighbours) > 3 * _leaks(by_unit, neighbours)


def test_folds_keep_units_together_and_stay_balanced():
    images = _frames(4, 30)
    units = split_units(images, "auto")
    folds = assign_folds([i for i, _, _ in images], {i: {0} for i, _, _ in images}, 4, 0, units.unit_of)
    fold_of = {i: k for k, ids in enumerate(folds) for i in ids}
    for unit in set(units.unit_of.values()):
        assert len({fold_of[i] for i, u in units.unit_of.items() if u == unit}) == 1
    assert sorted(fold_of) == [i for i, _, _ in images]
    assert max(map(len, folds)) - min(map(len, folds)) <= 3  # runs of 3 frames


def _video_dataset(root: Path, names) -> Path:
    images, annotations = [], []
    for i, name in enumerate(names, start=1):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (32, 24), (i * 3 % 256, i * 7 % 256, 120)).save(root / name, format="JPEG")
        images.append({"id": i, "file_name": name, "width": 32, "height": 24})
        annotations.append({"id": i, "image_id": i, "category_id": 1, "bbox": [2, 2, 10, 10]})
    ann = root / "ann.json"
    ann.write_text(json.dumps({"images": images, "annotations": annotations,
                               "categories": [{"id": 1, "name": "can"}]}))
    return ann


def test_build_keeps_runs_of_frames_together_and_says_so(tmp_path):
    from click.testing import CliRunner

    from edge_trash.cli import cli

    ann = _video_dataset(tmp_path, [f"belt/run{v}_frame_{f:04d}.jpg" for v in range(2) for f in range(40)])
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["build-tfrecords", "--annotations", str(ann), "--out", str(out), "--quiet",
                                      "--workers", "1"])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert report["split_units"] == {"split_by": "auto", "videos": 2, "frames": 80, "units": 8,
                                     "example": "belt/run0_frame_0000.jpg", "same_files": 0, "variants": 0,
                                     "variant_photos": 0, "variant_example": "", "generic_names": 0}  # runs of 10+
    near = report["frames_next_to_train"]
    assert near["held_out_frames"] == len(splits_of(out)["val"]) + len(splits_of(out)["test"])
    assert (f"note: 80 images are frames of 2 videos (file names like 'belt/run0_frame_0000.jpg'), split as 8 "
            f"runs of consecutive frames, not frame by frame (--split-by image): only {near['next_to_train']} of "
            f"{near['held_out_frames']} val/test frames sit next to a training frame") in result.output
    assert "warning" not in result.output
    splits = json.loads((out / "splits.json").read_text())["splits"]
    split_of = {i: name for name, ids in splits.items() for i in ids}
    assert all(len({split_of[i] for i in range(k, k + 10)}) == 1 for k in range(1, 80, 10))  # 1-10, 11-20, ..
    assert near["next_to_train"] <= 2 * near["held_out_frames"] // 10  # a held-out run's two ends at most
    image_by_image = build_tfrecords(BuildOptions(annotations=ann, images=tmp_path, out=tmp_path / "each",
                                                  split_by="image"))
    assert image_by_image["split_units"]["frames"] == 0
    each = image_by_image["frames_next_to_train"]
    assert each["next_to_train"] > 3 * near["next_to_train"]
    assert (f"warning: {each['next_to_train']} of {each['held_out_frames']} val/test video frames sit next to a "
            f"frame of the same video in train (e.g. {each['example']!r}): near copies, so held-out scores are "
            "inflated; leave --split-by out to split whole runs of frames") in summarize(image_by_image, out, 1.0)


def splits_of(out: Path):
    return json.loads((out / "splits.json").read_text())["splits"]


def test_frames_next_to_train_counts_held_out_frames_with_a_training_neighbour():
    images = [(i, 0, f"v_frame{i}.jpg") for i in range(1, 9)] + [(20, 1, "other_frame1.jpg"), (21, 1, "IMG_2.jpg")]
    split_of = {1: "train", 2: "val", 3: "val", 4: "val", 5: "train", 6: "test", 7: "test", 8: "test",
                20: "val", 21: "val"}
    assert frames_next_to_train(images, split_of) == {"held_out_frames": 7, "next_to_train": 3,
                                                      "example": "v_frame2.jpg"}  # 2, 4 and 6; a lone frame
    # frames missing from the split (skipped files) are left out: 3 and 8 now neighbour the training frame 5
    del split_of[4], split_of[6], split_of[7]
    assert frames_next_to_train(images, split_of) == {"held_out_frames": 4, "next_to_train": 3,
                                                      "example": "v_frame2.jpg"}  # 2, 3 and 8


def test_keep_splits_warns_when_the_given_split_put_neighbouring_frames_apart(tmp_path):
    """A Roboflow export of video frames: its random split puts most valid frames next to train ones."""
    from click.testing import CliRunner

    from edge_trash.cli import cli

    files = []
    for folder, frames in (("train", [0, 1, 3, 4, 6, 7, 9]), ("valid", [2, 5, 8])):
        names = [f"vid_1_frame{f:03d}_jpg.rf.{f:032x}.jpg" for f in frames]
        files.append(_video_dataset(tmp_path / folder, names))
    result = CliRunner().invoke(cli, ["build-tfrecords", "--annotations", str(files[0]), "--annotations",
                                      str(files[1]), "--keep-splits", "--out", str(tmp_path / "out"), "--quiet",
                                      "--workers", "1"])
    assert result.exit_code == 0, result.output
    assert ("warning: 3 of 3 val/test video frames sit next to a frame of the same video in train (e.g. "
            "'vid_1_frame002_jpg.rf.00000000000000000000000000000002.jpg'): near copies, so held-out scores are "
            "inflated; leave --keep-splits out to split whole runs of frames") in result.output


def test_split_by_folder_keeps_each_folder_in_one_split_and_needs_two(tmp_path):
    ann = _video_dataset(tmp_path, [f"session{s}/IMG_{i}.jpg" for s in range(6) for i in range(5)])
    report = build_tfrecords(BuildOptions(annotations=ann, images=tmp_path, out=tmp_path / "out",
                                          split_by="folder", val_fraction=0.2, test_fraction=0.1))
    assert report["split_units"]["units"] == 6
    splits = json.loads((tmp_path / "out" / "splits.json").read_text())["splits"]
    coco = json.loads(ann.read_text())
    folder = {im["id"]: im["file_name"].split("/")[0] for im in coco["images"]}
    assert {k: len(v) for k, v in splits.items()} == {"train": 20, "val": 5, "test": 5}
    for ids in splits.values():
        for other in splits.values():
            assert ids is other or not {folder[i] for i in ids} & {folder[i] for i in other}
    flat = _video_dataset(tmp_path / "flat", [f"IMG_{i}.jpg" for i in range(5)])
    with pytest.raises(BuildError, match="--split-by folder: every image is in the same folder"):
        build_tfrecords(BuildOptions(annotations=flat, images=tmp_path / "flat", out=tmp_path / "o2",
                                     split_by="folder"))


def test_analyze_flags_frames_split_one_by_one_in_records_and_in_an_exports_files(tmp_path):
    from edge_trash.tfrecords.analyze import analyze

    ann = _video_dataset(tmp_path / "video", [f"vid_1_frame{f:03d}.jpg" for f in range(60)])
    for split_by in ("image", "auto"):
        build_tfrecords(BuildOptions(annotations=ann, images=tmp_path / "video", out=tmp_path / split_by,
                                     split_by=split_by))
    stats = analyze(tfrecords=tmp_path / "image", out=tmp_path / "an_image", plots=False)
    flags = [f for f in stats["flags"] if f["kind"] == "frames_next_to_train"]
    near = stats["tfrecords"]["frames_next_to_train"]
    assert near == json.loads((tmp_path / "image" / "report.json").read_text())["frames_next_to_train"]
    assert [f["message"] for f in flags] == [
        f"{near['next_to_train']} of {near['held_out_frames']} val/test video frames sit next to a frame of the same "
        f"video in train (e.g. {near['example']!r}): near copies, so held-out scores are inflated; rebuild with "
        "build-tfrecords (--split-by auto splits whole runs of frames)"]
    stats = analyze(tfrecords=tmp_path / "auto", out=tmp_path / "an_auto", plots=False)
    assert not [f for f in stats["flags"] if f["kind"] == "frames_next_to_train"]  # 6 runs of 10: 1 in val

    files = []
    for folder, frames in (("train", [0, 1, 3, 4, 6, 7, 9]), ("valid", [2, 5, 8])):
        files.append(_video_dataset(tmp_path / "export" / folder, [f"v_frame{f}.jpg" for f in frames]))
    stats = analyze(annotations=files, out=tmp_path / "an_export", plots=False)
    assert stats["annotations"]["frames_next_to_train"] == {"held_out_frames": 3, "next_to_train": 3,
                                                            "example": "v_frame2.jpg"}
    assert [f["message"].split("; ")[-1] for f in stats["flags"] if f["kind"] == "frames_next_to_train"] == [
        "build-tfrecords without --keep-splits splits whole runs of frames"]


def test_video_id_and_frame_id_in_the_json_come_before_the_name(tmp_path):
    """COCO-VID / TAO / MOT converters name frames freely (000001.jpg) and say the video in the entry."""
    ann = _video_dataset(tmp_path, [f"seq{v}/{f:06d}.jpg" for v in range(2) for f in range(30)])
    coco = json.loads(ann.read_text())
    for im in coco["images"]:
        im["video_id"], im["frame_index"] = int(im["file_name"][3]) + 7, int(im["file_name"][5:11])
    coco["images"][0]["frame_index"] = "x"  # not a number: the image id orders it
    ann.write_text(json.dumps(coco))
    report = build_tfrecords(BuildOptions(annotations=ann, images=tmp_path, out=tmp_path / "out"))
    assert report["split_units"] == {"split_by": "auto", "videos": 2, "frames": 60, "units": 6,
                                     "example": "seq0/000000.jpg", "same_files": 0, "variants": 0,
                                     "variant_photos": 0, "variant_example": "", "generic_names": 0}
    splits = splits_of(tmp_path / "out")
    split_of = {i: name for name, ids in splits.items() for i in ids}
    assert all(len({split_of[i] for i in range(k, k + 10)}) == 1 for k in range(1, 60, 10))


def test_identical_files_are_found_by_size_then_bytes(tmp_path):
    from edge_trash.tfrecords.split_units import identical_files

    body = bytes(range(256)) * 400  # 100 KiB: the first 64 KiB agree, the ends do not
    files = {1: body, 2: body[:-1] + b"x", 3: body, 4: b"short", 5: body[:-1] + b"x"}
    for iid, data in files.items():
        (tmp_path / f"{iid}.bin").write_bytes(data)
    sized = {iid: (str(tmp_path / f"{iid}.bin"), len(data)) for iid, data in files.items()}
    sized[6] = sized[4]  # two entries naming one file
    sized[7] = (str(tmp_path / "gone.bin"), len(body))  # removed since its size was read: skipped
    assert identical_files(sized) == [[1, 3], [2, 5], [4, 6]]


@pytest.mark.parametrize("split_by", ["auto", "image"])
def test_copies_of_one_photo_land_in_one_split(tmp_path, split_by):
    names = [f"IMG_{i}.jpg" for i in range(1, 31)]
    ann = _video_dataset(tmp_path, names)
    for copy in ("IMG_7.jpg", "IMG_13.jpg", "IMG_29.jpg"):
        (tmp_path / copy).write_bytes((tmp_path / "IMG_1.jpg").read_bytes())
    coco = json.loads(ann.read_text())
    coco["images"][2]["file_name"] = "IMG_2.jpg"  # entries 2 and 3 name one file
    ann.write_text(json.dumps(coco))
    for seed in range(4):
        out = tmp_path / f"out{seed}"
        report = build_tfrecords(BuildOptions(annotations=ann, images=tmp_path, out=out, val_fraction=0.3,
                                              test_fraction=0.2, seed=seed, split_by=split_by))
        assert report["split_units"]["same_files"] == 2
        split_of = {i: name for name, ids in splits_of(out).items() for i in ids}
        assert len({split_of[i] for i in (1, 7, 13, 29)}) == 1 and split_of[2] == split_of[3]
        assert [g["splits"] for g in report["duplicate_images"]] == [[split_of[1]], [split_of[2]]]


def test_a_copy_that_bridges_two_runs_joins_them():
    units = split_units(_frames(2, 20) + [(100, 0, "IMG_1.jpg"), (101, 0, "IMG_2.jpg")], "auto")
    assert units.units == 4  # runs of 10: ids 1-10, 11-20 (video 0), 21-30, 31-40 (video 1)
    units.join([[1, 21, 100]])  # frame 0 of each video and a photo hold the same bytes
    joined = {i for i, u in units.unit_of.items() if u == units.unit_of[1]}
    assert joined == set(range(1, 11)) | set(range(21, 31)) | {100}
    assert len(set(units.unit_of.values())) == 3 and 101 not in units.unit_of and units.same_files == 1


# ----------------------------------------------------------------------------- Roboflow's augmented variants

H1, H2, H3 = "0123456789abcdef0123456789abcdef", "fedcba9876543210fedcba9876543210", "00112233445566778899aabbccddeeff"


@pytest.mark.parametrize("name,expected", [
    (f"IMG_1_jpg.rf.{H1}.jpg", "img_1.jpg"),
    (f"train/IMG_1_JPG.rf.{H2}.jpg", "img_1.jpg"),  # a variant in another folder: the same photo
    (f"bottle_2.5L_png.rf.{H3}.jpg", "bottle_2.5l.png"),
    ("IMG_1.jpg", None),
    ("IMG_1_jpg.rf.not-hex.jpg", None),
    (f"IMG_1_txt.rf.{H1}.jpg", None),
])
def test_roboflow_originals_are_read_from_the_export_name(name, expected):
    assert roboflow_original(name) == expected


def test_a_photos_augmented_variants_are_one_unit():
    images = [(1, 0, f"a_jpg.rf.{H1}.jpg"), (2, 0, f"a_jpg.rf.{H2}.jpg"), (3, 1, f"valid/A_jpg.rf.{H3}.jpg"),
              (4, 0, f"b_png.rf.{H1}.jpg"), (5, 0, f"b_png.rf.{H2}.jpg"), (6, 0, f"c_jpg.rf.{H1}.jpg"),
              (7, 0, "IMG_9.jpg"), (8, 0, f"clip_frame_0001_jpg.rf.{H1}.jpg"), (9, 0, f"clip_frame_0002_jpg.rf.{H1}.jpg")]
    units = split_units(images, "auto")
    assert units.unit_of[1] == units.unit_of[2] == units.unit_of[3] != units.unit_of[4] == units.unit_of[5]
    assert 6 not in units.unit_of and 7 not in units.unit_of  # one variant, a plain photo: alone
    assert units.unit_of[8] == units.unit_of[9] and units.frames == 2  # frames: in their run, not as variants
    assert (units.variants, units.variant_photos, units.variant_example) == (5, 2, f"a_jpg.rf.{H1}.jpg")
    assert split_units(images, "image").unit_of == {}
    assert summary_line(split_units(images[:7], "auto").as_report()) == (
        f"note: 5 images are Roboflow variants of 2 photos (augmented copies, file names like 'a_jpg.rf.{H1}.jpg'), "
        "each photo's variants kept in one split")
    # a name on more files than augmentation makes of one photo: many photos uploaded as image.jpg
    generic = [(100 + k, 0, f"image_jpg.rf.{k:032x}.jpg") for k in range(MAX_VARIANTS + 1)]
    units = split_units(images[:7] + generic, "auto")
    assert not any(100 + k in units.unit_of for k in range(MAX_VARIANTS + 1))
    assert (units.variants, units.variant_photos, units.generic_names) == (5, 2, 1)
    assert summary_line(units.as_report()).splitlines()[1] == (
        "note: 1 original name is shared by more than 20 Roboflow files each: photos uploaded under one name "
        "(image.jpg), not variants of one photo, so split one by one")
    assert split_units(generic[:MAX_VARIANTS], "auto").variant_photos == 1  # up to 20: variants
    spread = {100 + k: ("train", "val")[k % 2] for k in range(MAX_VARIANTS + 1)}
    assert variants_across_splits([(i, name) for i, _, name in generic], spread)["photos"] == 0  # not variants
    assert variants_across_splits([(i, name) for i, _, name in generic[:3]], spread)["photos"] == 1
    split_of = {1: "train", 2: "train", 3: "val", 4: "train", 5: "train", 6: "test"}
    assert variants_across_splits([(i, name) for i, _, name in images], split_of) == {
        "photos": 1, "example": f"a_jpg.rf.{H1}.jpg"}


def _augmented_export(root: Path, photos: int, copies: int) -> Path:
    """A Roboflow export made with augmentation: each photo ``copies`` times (not the same bytes)."""
    hashes = [f"{k:032x}" for k in range(copies)]
    return _video_dataset(root, [f"IMG_{p}_jpg.rf.{hashes[c]}.jpg" for p in range(photos) for c in range(copies)])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_build_keeps_a_photos_variants_in_one_split_and_analyze_flags_records_that_do_not(tmp_path, seed):
    from edge_trash.tfrecords.analyze import analyze

    ann = _augmented_export(tmp_path / "export", 20, 3)
    report = build_tfrecords(BuildOptions(annotations=ann, images=tmp_path / "export", out=tmp_path / "auto",
                                          val_fraction=0.2, test_fraction=0.2, seed=seed))
    assert (report["split_units"]["variants"], report["split_units"]["variant_photos"]) == (60, 20)
    split_of = {i: name for name, ids in splits_of(tmp_path / "auto").items() for i in ids}
    assert all(len({split_of[3 * p + c + 1] for c in range(3)}) == 1 for p in range(20))
    assert len({split_of[i] for i in split_of}) == 3  # and still a val and a test split
    assert ("note: 60 images are Roboflow variants of 20 photos (augmented copies, file names like "
            "'IMG_0_jpg.rf.00000000000000000000000000000000.jpg'), each photo's variants kept in one split"
            ) in summarize(report, tmp_path / "auto", 1.0)
    stats = analyze(tfrecords=tmp_path / "auto", out=tmp_path / "an_auto", plots=False)
    assert stats["tfrecords"]["variants_in_several_splits"] == {"photos": 0, "example": ""}
    assert report["variants_in_several_splits"] == {"photos": 0, "example": ""}
    assert "Roboflow variants (augmented copies) in more than one split" not in summarize(report, tmp_path, 1.0)
    each = build_tfrecords(BuildOptions(annotations=ann, images=tmp_path / "export", out=tmp_path / "each",
                                        val_fraction=0.2, test_fraction=0.2, seed=seed, split_by="image"))
    assert each["split_units"]["variants"] == 0
    assert (f"warning: {each['variants_in_several_splits']['photos']} photos have Roboflow variants (augmented "
            f"copies) in more than one split (e.g. {each['variants_in_several_splits']['example']!r}): val/test "
            "scores count flipped or recoloured copies of training photos; leave --split-by out to keep each "
            "photo's variants in one split") in summarize(each, tmp_path, 1.0)
    stats = analyze(tfrecords=tmp_path / "each", out=tmp_path / "an_each", plots=False)
    found = stats["tfrecords"]["variants_in_several_splits"]
    assert found["photos"] == each["variants_in_several_splits"]["photos"]  # analyze of the records agrees
    split_of = {i: name for name, ids in splits_of(tmp_path / "each").items() for i in ids}
    assert found["photos"] == sum(len({split_of[3 * p + c + 1] for c in range(3)}) > 1 for p in range(20)) > 0
    [flag] = [f for f in stats["flags"] if f["kind"] == "variants_in_several_splits"]
    assert flag["message"] == (
        f"{found['photos']} photos have Roboflow variants (augmented copies) in more than one split (e.g. "
        f"{found['example']!r}): val/test scores count flipped or recoloured copies of training photos; rebuild "
        "with build-tfrecords (--split-by auto keeps a photo's variants in one split)")


def test_analyze_flags_a_photos_variants_in_two_of_an_exports_split_files(tmp_path):
    from edge_trash.tfrecords.analyze import analyze

    train = _video_dataset(tmp_path / "train", [f"IMG_1_jpg.rf.{H1}.jpg", f"IMG_1_jpg.rf.{H2}.jpg",
                                                f"IMG_2_jpg.rf.{H1}.jpg"])
    valid = _video_dataset(tmp_path / "valid", [f"IMG_1_jpg.rf.{H3}.jpg", f"IMG_3_jpg.rf.{H1}.jpg"])
    stats = analyze(annotations=[train, valid], out=tmp_path / "an", plots=False)
    assert stats["annotations"]["variants_in_several_splits"] == {"photos": 1, "example": f"IMG_1_jpg.rf.{H1}.jpg"}
    [flag] = [f for f in stats["flags"] if f["kind"] == "variants_in_several_splits"]
    assert flag["message"].endswith("; build-tfrecords without --keep-splits keeps a photo's variants in one split")
