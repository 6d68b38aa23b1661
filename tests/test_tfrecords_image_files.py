"""build-tfrecords on awkward image files: TIFF orientation, Pillow's own pixel limit, lossless JPEG,
colour profiles on images with alpha or a palette, link loops, named pipes and empty files."""

from __future__ import annotations

import base64
import io
import json
import os
import struct
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edge_trash.tfrecords.build import BuildOptions, build_tfrecords
from edge_trash.tfrecords.images import (ImageJob, convert_image, file_reason, match_json_size, missing_file_reason,
                                         read_displayed_size, read_size_and_orientation)

# ----------------------------------------------------------------------------- helpers

# Displayed picture 120x80 with a bright block at BOX (x, y, w, h): off-centre both ways, so any flip moves it.
WIDTH, HEIGHT, BOX = 120, 80, (70, 15, 30, 40)
# What turns the displayed picture into the pixels a file with each orientation stores.
TO_STORED = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
             5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_90, 7: Image.Transpose.TRANSVERSE,
             8: Image.Transpose.ROTATE_270}


def _picture(size, box) -> Image.Image:
    img = Image.new("RGB", size, (30, 30, 30))
    img.paste((250, 250, 250), (box[0], box[1], box[0] + box[2], box[1] + box[3]))
    return img


def _build(tmp_path: Path, entries, **options) -> dict:
    """Build from ``entries`` [(file_name, width or None, height or None, bbox)], all in ``tmp_path/img``."""
    images, annotations = [], []
    for i, (name, width, height, box) in enumerate(entries, 1):
        images.append({"id": i, "file_name": name, **({"width": width, "height": height} if width else {})})
        annotations.append({"id": i, "image_id": i, "category_id": 1, "bbox": list(box), "iscrowd": 0})
    ann = tmp_path / "ann.json"
    ann.write_text(json.dumps({"images": images, "annotations": annotations,
                               "categories": [{"id": 1, "name": "block"}]}))
    return build_tfrecords(BuildOptions(annotations=ann, images=tmp_path / "img", out=tmp_path / "out",
                                        val_fraction=0, test_fraction=0, workers=1, **options))


def _records(out: Path) -> dict:
    """``{file name: (decoded RGB pixels, (xmin, ymin, xmax, ymax) of the first box)}``."""
    import tensorflow as tf

    found = {}
    for shard in sorted(out.glob("train-*-of-*.tfrecord")):
        for raw in tf.data.TFRecordDataset(str(shard)):
            f = tf.train.Example.FromString(raw.numpy()).features.feature
            pixels = tf.io.decode_jpeg(f["image/encoded"].bytes_list.value[0], channels=3).numpy()
            box = tuple(f[f"image/object/bbox/{k}"].float_list.value[0] for k in ("xmin", "ymin", "xmax", "ymax"))
            found[f["image/filename"].bytes_list.value[0].decode()] = (pixels, box)
    return found


def _bright_extent(pixels: np.ndarray):
    ys, xs = np.nonzero(pixels.min(axis=2) > 150)
    return xs.min(), ys.min(), xs.max() + 1, ys.max() + 1


# ----------------------------------------------------------------------------- TIFF orientation

def _tiff_cases():
    for o in TO_STORED:
        yield f"displayed{o}.tif", o, "displayed"  # JSON width/height = displayed size, as the README asks
    for o in (3, 6, 8):
        yield f"unsized{o}.tif", o, "missing"  # no width/height in the JSON: read from the file
    for o in (5, 6, 7, 8):
        yield f"stored{o}.tif", o, "stored"  # JSON describes the stored pixels (annotated without EXIF)


@pytest.fixture(scope="module")
def tiff_build(tmp_path_factory):
    """One build of TIFFs tagged with every orientation; each draws a block where its box is."""
    tmp_path = tmp_path_factory.mktemp("tiff")
    (tmp_path / "img").mkdir()
    entries = []
    stored_box = (10, 70, 20, 30)  # in the stored 80x120 frame of a quarter-turned file
    for name, o, json_size in _tiff_cases():
        if json_size == "stored":
            _picture((HEIGHT, WIDTH), stored_box).save(tmp_path / "img" / name, tiffinfo={0x0112: o})
            entries.append((name, HEIGHT, WIDTH, stored_box))
        else:
            _picture((WIDTH, HEIGHT), BOX).transpose(TO_STORED[o]).save(tmp_path / "img" / name, tiffinfo={0x0112: o})
            entries.append((name, *((WIDTH, HEIGHT) if json_size == "displayed" else (None, None)), BOX))
    report = _build(tmp_path, entries)
    notes = {n["file_name"]: n["notes"] for n in report["image_notes"]}
    return report, _records(tmp_path / "out"), notes


@pytest.mark.parametrize("name, orientation, json_size", list(_tiff_cases()))
def test_a_tiff_orientation_tag_is_applied_once_and_the_box_lands_on_the_drawn_object(
        tiff_build, name, orientation, json_size):
    # Pillow turns a TIFF upright by itself as it loads it (and reports the upright size at open); applying
    # the tag again mirrored 2 and 4, left 3 upside down, and put 5-8 half a turn off their boxes.
    report, records, notes = tiff_build
    assert report["images_skipped"] == []
    pixels, (xmin, ymin, xmax, ymax) = records[name]
    h, w = pixels.shape[:2]
    assert (w, h) == ((HEIGHT, WIDTH) if json_size == "stored" else (WIDTH, HEIGHT))
    x0, y0, x1, y1 = _bright_extent(pixels)
    assert abs(x0 - xmin * w) <= 1 and abs(x1 - xmax * w) <= 1, (name, (x0, x1), (xmin * w, xmax * w))
    assert abs(y0 - ymin * h) <= 1 and abs(y1 - ymax * h) <= 1, (name, (y0, y1), (ymin * h, ymax * h))
    if json_size == "stored":
        assert notes[name] == [f"JSON size {HEIGHT}x{WIDTH} matches the stored pixels, not the EXIF-rotated "
                               f"picture: EXIF orientation {orientation} ignored"]
    elif json_size == "displayed":
        assert notes[name] == [f"applied EXIF orientation {orientation}"]
    else:
        assert notes[name][-1] == f"applied EXIF orientation {orientation}"
        assert f"used {WIDTH}x{HEIGHT} read from the file" in notes[name][0]


def test_an_xmp_orientation_without_exif_is_not_applied(tmp_path):
    # Pillow's getexif() fills in Orientation from an XMP tiff:Orientation when EXIF has none; browsers, and the
    # web tools that drew the boxes, show such a photo as stored. A square one was turned under its boxes, with
    # the note "applied EXIF orientation 6". A real EXIF tag beside the XMP one still wins.
    xmp = (b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
           b'<rdf:Description xmlns:tiff="http://ns.adobe.com/tiff/1.0/" tiff:Orientation="6"/></rdf:RDF>'
           b'</x:xmpmeta>')
    (tmp_path / "img").mkdir()
    box = (4, 8, 20, 12)
    _picture((64, 64), box).save(tmp_path / "img" / "xmp.jpg", quality=95, xmp=xmp)
    exif = Image.Exif()
    exif[0x0112] = 3
    _picture((64, 64), box).transpose(TO_STORED[3]).save(tmp_path / "img" / "both.jpg", quality=95, xmp=xmp,
                                                            exif=exif)
    report = _build(tmp_path, [("xmp.jpg", 64, 64, box), ("both.jpg", 64, 64, box)])
    notes = {n["file_name"]: n["notes"] for n in report["image_notes"]}
    assert "xmp.jpg" not in notes and notes["both.jpg"] == ["applied EXIF orientation 3"]
    for name, (pixels, (xmin, ymin, xmax, ymax)) in _records(tmp_path / "out").items():
        x0, y0, x1, y1 = _bright_extent(pixels)
        assert (x0, y0, x1, y1) == (4, 8, 24, 20), name
        assert np.allclose((xmin * 64, ymin * 64, xmax * 64, ymax * 64), (4, 8, 24, 20)), name


@pytest.mark.parametrize("orientation", [5, 6, 7, 8])
def test_a_quarter_turned_tiff_header_gives_the_stored_size_and_its_orientation(tmp_path, orientation):
    # analyze compares these with the JSON size; it said "EXIF orientation ignored" for a correct JSON.
    path = tmp_path / "a.tif"
    _picture((WIDTH, HEIGHT), BOX).transpose(TO_STORED[orientation]).save(path, tiffinfo={0x0112: orientation})
    assert read_size_and_orientation(path) == (((HEIGHT, WIDTH), orientation), "")
    assert read_size_and_orientation(io.BytesIO(path.read_bytes())) == (((HEIGHT, WIDTH), orientation), "")
    assert read_displayed_size(path) == ((WIDTH, HEIGHT), "")
    assert match_json_size((HEIGHT, WIDTH), orientation, (WIDTH, HEIGHT)) == (True, "", "")


# ----------------------------------------------------------------------------- --max-pixels over Pillow's limit

@pytest.mark.parametrize("fmt", ["JPEG", "TIFF"])
def test_max_pixels_above_pillows_own_limit_governs(tmp_path, monkeypatch, fmt):
    # Pillow refuses more than 2 * Image.MAX_IMAGE_PIXELS (178,956,970) pixels at open, and a TIFF again at
    # load; a 2,400-pixel picture plays a drone orthomosaic here, with Pillow's limit lowered to 1,000.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1_000)
    path = tmp_path / f"ortho.{fmt.lower()}"
    Image.new("RGB", (60, 40), (90, 120, 60)).save(path, format=fmt)

    allowed = convert_image(ImageJob(1, str(path), 60, 40, max_pixels=10_000))
    assert allowed.reason == "" and (allowed.width, allowed.height) == (60, 40)
    refused = convert_image(ImageJob(1, str(path), 60, 40, max_pixels=2_000))
    assert refused.reason == "refused as a decompression bomb: 60x40 = 2,400 pixels, more than --max-pixels 2,000"
    assert read_displayed_size(path) == ((60, 40), "")  # a header only: --max-pixels is checked on conversion
    assert Image.MAX_IMAGE_PIXELS == 1_000  # restored after each call


@pytest.mark.parametrize("fmt", ["JPEG", "TIFF"])
def test_analyze_reads_brightness_under_max_pixels_as_build_does(tmp_path, monkeypatch, fmt):
    # analyze --images kept Pillow's own limit: a drone mosaic build-tfrecords --max-pixels accepts was
    # "unreadable" in the report, and one over --max-pixels was read although the build refuses it.
    from click.testing import CliRunner

    from edge_trash.cli import cli

    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1_000)  # Pillow refuses above 2,000
    images = tmp_path / "images"
    images.mkdir()
    Image.new("RGB", (60, 40), (100, 100, 100)).save(images / f"ortho.{fmt.lower()}", format=fmt)
    coco = {"images": [{"id": 1, "file_name": f"ortho.{fmt.lower()}", "width": 60, "height": 40}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [5, 5, 20, 10]}],
            "categories": [{"id": 1, "name": "can"}]}
    ann = tmp_path / "a.json"
    ann.write_text(json.dumps(coco))

    def analyze(max_pixels: int) -> dict:
        result = CliRunner().invoke(cli, ["analyze", "--annotations", str(ann), "--images", str(images), "--out",
                                           str(tmp_path / "an"), "--max-pixels", str(max_pixels), "--quiet",
                                           "--no-plots", "--workers", "1"])
        assert result.exit_code == 0, result.output
        return json.loads((tmp_path / "an" / "stats.json").read_text())["annotations"]

    allowed = analyze(10_000)
    assert allowed["brightness"]["unreadable"] == [] and allowed["brightness"]["measured"] == 1
    assert allowed["brightness"]["per_image"]["1"] == pytest.approx(100, abs=1)
    refused = analyze(2_000)
    assert [r["reason"] for r in refused["brightness"]["unreadable"]] == [
        "refused as a decompression bomb: 60x40 = 2,400 pixels, more than --max-pixels 2,000"]
    assert Image.MAX_IMAGE_PIXELS == 1_000  # restored


def test_pillows_pixel_limit_is_raised_for_max_pixels_never_lowered(monkeypatch):
    from edge_trash.tfrecords.images import pillow_pixel_limit

    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1_000)  # Pillow refuses above 2,000
    with pillow_pixel_limit(1_500):
        assert Image.MAX_IMAGE_PIXELS == 1_000  # the default stays as safe as Pillow made it
    with pillow_pixel_limit(5_001):
        assert Image.MAX_IMAGE_PIXELS == 2_501  # refuses above 5,002: nothing --max-pixels allows
    with pillow_pixel_limit(None):
        assert Image.MAX_IMAGE_PIXELS is None
    assert Image.MAX_IMAGE_PIXELS == 1_000


# ----------------------------------------------------------------------------- lossless JPEG

# A 24x16 lossless JPEG (SOF3, libjpeg-turbo 3's -lossless; RGB, no colour transform): grey 40 with a
# white block at x 6-18, y 4-10. Pillow 13 decodes it; TensorFlow does not ("Unsupported JPEG process").
LOSSLESS_JPEG = base64.b64decode(
    "/9j/7gAOQWRvYmUAZAAAAAAA/8MAEQgAEAAYA1IRAEcRAEIRAP/EABYAAQEBAAAAAAAAAAAAAAAAAAAIB//aAAwDUgBHAEIAAQAAyfJ8nAAA"
    "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAFr2va4AAAAAiiKIoAAAAAFr2va4AAAAAiiKIoAAAAAFr2va4AAAAAiiKIoAAA"
    "AAFr2va4AAAAAiiKIoAAAAAFr2va4AAAAAiiKIoAAAAAFr2va4AAAAAiiKIoAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
    "AAAAAAAAAAAAAAAAAAAAAAAAAAH/2Q==")


def test_a_lossless_jpeg_is_re_encoded_for_tensorflow_not_stored_as_is(tmp_path):
    import tensorflow as tf

    assert LOSSLESS_JPEG[:2] == b"\xff\xd8" and b"\xff\xc3" in LOSSLESS_JPEG
    path = tmp_path / "lossless.jpg"
    path.write_bytes(LOSSLESS_JPEG)
    result = convert_image(ImageJob(1, str(path), 24, 16))
    assert result.reason == "" and (result.width, result.height) == (24, 16)
    assert result.jpeg != LOSSLESS_JPEG
    pixels = tf.io.decode_jpeg(result.jpeg, channels=3).numpy().astype(int)
    expected = np.full((16, 24, 3), 40)
    expected[4:10, 6:18] = 255
    assert np.abs(pixels - expected).max() < 40


@pytest.mark.parametrize("kind", ["baseline", "progressive", "with EXIF and an sRGB profile"])
def test_baseline_and_progressive_jpegs_are_still_stored_byte_for_byte(tmp_path, kind):
    from PIL import ImageCms

    exif = Image.Exif()
    exif[0x010F] = "PhoneMaker"
    options = {"baseline": {}, "progressive": {"progressive": True},
               "with EXIF and an sRGB profile": {"exif": exif.tobytes(), "icc_profile": ImageCms.ImageCmsProfile(
                   ImageCms.createProfile("sRGB")).tobytes()}}[kind]
    path = tmp_path / "a.jpg"
    Image.new("RGB", (48, 32), (200, 40, 40)).save(path, quality=90, **options)
    result = convert_image(ImageJob(1, str(path), 48, 32))
    assert result.reason == "" and result.jpeg == path.read_bytes()


# ----------------------------------------------------------------------------- colour profiles with alpha

def _icc_swapped_rg() -> bytes:
    """A minimal ICC v2 RGB matrix/TRC profile, 'Swapped RG', with sRGB's red and green colorants swapped:
    a stored (255, 0, 0) is sRGB's pure green."""
    def xyz(v) -> bytes:
        return b"XYZ \0\0\0\0" + b"".join(struct.pack(">i", round(c * 65536)) for c in v)

    desc = b"desc\0\0\0\0" + struct.pack(">I", 11) + b"Swapped RG\0" + b"\0" * 78
    curve = b"curv\0\0\0\0" + struct.pack(">IH", 1, 563) + b"\0\0"  # gamma 2.2
    tags = [(b"desc", desc), (b"wtpt", xyz((0.9642, 1.0, 0.8249))), (b"rXYZ", xyz((0.3851, 0.7169, 0.0971))),
            (b"gXYZ", xyz((0.4361, 0.2225, 0.0139))), (b"bXYZ", xyz((0.1431, 0.0606, 0.7141))),
            (b"rTRC", curve), (b"gTRC", curve), (b"bTRC", curve)]
    offset, table, body = 128 + 4 + 12 * len(tags), b"", b""
    for sig, data in tags:
        data += b"\0" * (-len(data) % 4)
        table += sig + struct.pack(">II", offset + len(body), len(data))
        body += data
    header = (struct.pack(">I", offset + len(body)) + b"lcms" + bytes([2, 0x10, 0, 0]) + b"mntrRGB XYZ "
              + b"\0" * 12 + b"acsp" + b"\0" * 28 + b"".join(struct.pack(">i", round(c * 65536))
                                                         for c in (0.9642, 1.0, 0.8249)) + b"\0" * 48)
    return header + struct.pack(">I", len(tags)) + table + body


@pytest.mark.parametrize("mode, note", [("RGBA", "flattened RGBA transparency onto grey"),
                                        ("P", "converted palette image to RGB")])
def test_a_colour_profile_is_applied_to_images_with_alpha_or_a_palette(tmp_path, mode, note):
    # macOS 'Export as PNG' keeps alpha and the photo's Display P3 tag: it was stored unconverted, silently.
    path = tmp_path / "tagged.png"
    img = Image.new("RGB", (40, 30), (255, 0, 0))
    (img.convert("RGBA") if mode == "RGBA" else img.quantize(4)).save(path, icc_profile=_icc_swapped_rg())
    assert Image.open(path).mode == mode
    result = convert_image(ImageJob(1, str(path), 40, 30))
    assert result.notes == ["converted colours from the embedded profile 'Swapped RG' to sRGB", note]
    red, green, blue = np.asarray(Image.open(io.BytesIO(result.jpeg)).convert("RGB"), dtype=int)[15, 20]
    assert green > 220 and red < 40 and blue < 40, (red, green, blue)  # green, as the profile says


# ----------------------------------------------------------------------------- links, pipes, empty files

def _returns_without_hanging(call):
    """``call()``'s value; fails (and unblocks the reader) when it blocks on a named pipe."""
    box = []
    worker = threading.Thread(target=lambda: box.append(call()), daemon=True)
    worker.start()
    worker.join(timeout=10)
    return box[0] if box else None


def test_link_loops_pipes_and_empty_files_are_skipped_with_what_they_are(tmp_path):
    if not hasattr(os, "mkfifo"):
        pytest.skip("no named pipes here")
    img = tmp_path / "img"
    img.mkdir()
    _picture((WIDTH, HEIGHT), BOX).save(img / "good.jpg")
    os.symlink("loop.jpg", img / "loop.jpg")
    os.symlink("b.jpg", img / "a.jpg")
    os.symlink("a.jpg", img / "b.jpg")
    (img / "empty.jpg").write_bytes(b"")
    os.mkfifo(img / "pipe.jpg")
    (img / "folder.jpg").mkdir()
    entries = [("good.jpg", WIDTH, HEIGHT, BOX), ("loop.jpg", WIDTH, HEIGHT, BOX), ("a.jpg", WIDTH, HEIGHT, BOX),
               ("empty.jpg", None, None, BOX), ("pipe.jpg", None, None, BOX), ("folder.jpg", WIDTH, HEIGHT, BOX)]
    try:
        report = _returns_without_hanging(lambda: _build(tmp_path, entries))
    finally:
        with open(os.open(img / "pipe.jpg", os.O_RDWR), "wb"):  # a blocked reader sees the end of the file
            pass
    assert report is not None, "build-tfrecords blocked reading the named pipe"
    reasons = {s["file_name"]: s["reason"] for s in report["images_skipped"]}
    assert reasons["loop.jpg"] == (f"symbolic link loop: {img / 'loop.jpg'} (it points to loop.jpg) leads through "
                                   "links back to itself, never to a file; point the link at the picture")
    assert reasons["a.jpg"] == (f"symbolic link loop: {img / 'a.jpg'} (it points to b.jpg) leads through links "
                                "back to itself, never to a file; point the link at the picture")
    assert reasons["empty.jpg"].endswith(f": empty file (0 bytes): {img / 'empty.jpg'}; download or copy it again")
    assert reasons["pipe.jpg"].endswith(f": not a regular file but a named pipe (FIFO): {img / 'pipe.jpg'}; "
                                        "put the picture file there")
    assert reasons["folder.jpg"] == f"not a regular file but a folder: {img / 'folder.jpg'}; put the picture file there"
    assert report["images_written"] == 1


def test_header_reads_and_conversion_never_open_a_named_pipe(tmp_path):
    if not hasattr(os, "mkfifo"):
        pytest.skip("no named pipes here")
    pipe = tmp_path / "pipe.jpg"
    os.mkfifo(pipe)
    expected = f"not a regular file but a named pipe (FIFO): {pipe}; put the picture file there"
    try:
        assert _returns_without_hanging(lambda: read_displayed_size(pipe)) == (None, expected)
        assert _returns_without_hanging(lambda: convert_image(ImageJob(1, str(pipe), 60, 40)).reason) == expected
        from edge_trash.tfrecords.analyze import image_facts  # analyze's brightness read, in its workers

        assert _returns_without_hanging(lambda: image_facts((str(pipe), 10 ** 8))) == (None, expected, None)
    finally:
        with open(os.open(pipe, os.O_RDWR), "wb"):
            pass
    assert file_reason(f"{tmp_path}/a\x00.jpg") == (
        f"file not found: '{tmp_path}/a\\x00.jpg' (its name holds a NUL character)")
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    assert read_displayed_size(empty) == (None, f"empty file (0 bytes): {empty}; download or copy it again")
    assert missing_file_reason(tmp_path / "gone.jpg") == f"file not found: {tmp_path / 'gone.jpg'}"


def test_an_unfinished_download_ending_in_zero_bytes_is_skipped_not_stored_half_grey(tmp_path):
    """A download into a file sized in advance (aria2, a torrent, a sync tool) leaves the rest of the JPEG as
    zero bytes; Pillow decodes it without a word, the lower half grey or garbage, and its boxes were trained on
    that. Zeros after a complete JPEG's end marker are harmless and kept."""
    from edge_trash.tfrecords.analyze import _read_luma

    img = tmp_path / "img"
    img.mkdir()
    noise = np.random.default_rng(0).integers(0, 255, (HEIGHT, WIDTH, 3), dtype=np.uint8)
    Image.fromarray(noise).save(img / "whole.jpg", quality=90)
    data = (img / "whole.jpg").read_bytes()
    half = len(data) // 2
    (img / "unfinished.jpg").write_bytes(data[:half] + bytes(len(data) - half))
    (img / "padded.jpg").write_bytes(data + bytes(4096))  # complete, then zeros after the end marker
    (img / "motion.jpg").write_bytes(data + b"ftypmp42" + bytes(4096))  # complete, then a trailer ending in zeros
    with Image.open(img / "unfinished.jpg") as im:
        im.load()  # what made it slip through: Pillow decodes it without an error
    report = _build(tmp_path, [(n, WIDTH, HEIGHT, BOX) for n in ("whole.jpg", "unfinished.jpg", "padded.jpg",
                                                                 "motion.jpg")])
    reasons = {s["file_name"]: s["reason"] for s in report["images_skipped"]}
    zeros = len(data) - half
    expected = (f"incomplete download: {img / 'unfinished.jpg'} ends in {zeros:,} zero bytes "
                f"({100.0 * zeros / len(data):.0f}% of the file) where the rest of the JPEG should be, so part of "
                "the picture would be grey; download it again")
    assert reasons == {"unfinished.jpg": expected}
    assert sorted(_records(tmp_path / "out")) == ["motion.jpg", "padded.jpg", "whole.jpg"]
    assert _read_luma(img / "unfinished.jpg") == (None, expected, b"")  # analyze --images says the same
    assert _read_luma(img / "padded.jpg")[1] == ""
