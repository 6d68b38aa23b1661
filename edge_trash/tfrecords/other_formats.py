"""Recognise annotation files of other tools given where COCO JSON belongs, so the error
names the format and the export to choose instead of a JSON parser's complaint; and say
what an ``--images`` that is not a folder is (an archive to unpack, the JSON itself)."""

from __future__ import annotations

import json
import os
import re
import zipfile
from pathlib import Path
from typing import Any, Sequence

from edge_trash.terminal import examples, plural, shell_word

EXPORT_COCO = ("Export the annotations as COCO JSON (CVAT: 'COCO 1.0'; Label Studio, Roboflow: 'COCO'), or "
               "convert them, and give that file")
_IMAGE_NAME = re.compile(r"\.(jpe?g|png|bmp|tiff?|webp|heic)\s*\"?\s*$", re.I)  # a CSV row's first cell
_YOLO_LINE = re.compile(r"^\s*\d+(\s+-?\d*\.?\d+(e-?\d+)?){4,}\s*$")


# JSON Lines exports, each told by a key its lines hold
_JSON_LINES_TOOLS = (('"data_row"', "Labelbox's NDJSON export"),
                     ('"imageGcsUri"', "a Vertex AI image object detection import file"),
                     ('"source-ref"', "a SageMaker Ground Truth output manifest"))


def other_text_format(text: str) -> str:
    """What a file that is not JSON is, when it is another annotation format ("" otherwise)."""
    head = text[:4096]
    lines = [ln for ln in head.splitlines() if ln.strip()][:5]
    if re.search(r"<annotations[\s>]", head):  # Pascal VOC's root is <annotation>
        return "a CVAT XML export ('CVAT for images 1.1')"
    if "<annotation" in head:
        return "a Pascal VOC XML file"
    if re.search(r"^names\s*:", head, re.M) and re.search(r"^(nc|train|val)\s*:", head, re.M):
        return "a YOLO dataset YAML (its labels are .txt files beside the images)"
    if lines and all(_YOLO_LINE.match(ln) for ln in lines):
        return "a YOLO label file (class x_center y_center width height per line)"
    first = lines[0].lower() if lines else ""
    if first.lstrip().startswith(("{", "[")):  # broken JSON, or JSON Lines: never a CSV
        first = ""
    if "," in first and re.search(r"\bx_?(min|max)\b|\bx1\b", first) and re.search(r"file|image|img|path|name", first):
        return "a CSV of boxes (filename, ..., xmin, ymin, xmax, ymax)"
    rows = [ln.split(",") for ln in lines] if first else []
    if rows and all(len(r) >= 5 and _IMAGE_NAME.search(r[0]) for r in rows):
        return "a CSV of boxes without a header line (filename, ..., xmin, ymin, xmax, ymax)"
    if first and len(rows) > 1 and all(len(r) >= 3 for r in rows):
        return "a CSV file (comma-separated values)"
    if len(lines) > 1 and all(ln.lstrip().startswith("{") and ln.rstrip().endswith("}") for ln in lines):
        tool = next((f" ({name})" for mark, name in _JSON_LINES_TOOLS if mark in head), "")
        return f"a JSON Lines file, one JSON object per line{tool}"
    return ""


def other_json_format(data: Any) -> str:
    """What a JSON document that is not COCO is, when it is another tool's format ("" otherwise)."""
    first = data[0] if isinstance(data, list) and data and isinstance(data[0], dict) else None
    if first is not None:
        if "data" in first and ("annotations" in first or "predictions" in first or "id" in first):
            return "a Label Studio JSON export (a list of tasks)"
        if "annotation_id" in first and "annotator" in first:
            return "a Label Studio JSON-MIN export"
        if {"image_id", "category_id", "score"} <= first.keys():
            return ("a COCO results file (a model's detections with scores; give the dataset's own annotation "
                    "file)")
        if "image" in first and isinstance(first.get("annotations"), list):
            return "a Create ML JSON file"
        if "file_name" in first and isinstance(first.get("annotations"), list):
            return ("a Detectron2 dataset list (a dict per image; detectron2.data.datasets.coco.convert_to_coco_json "
                    "writes COCO JSON from a registered dataset)")
        if "filename" in first and isinstance(first.get("ann"), dict):
            return "an MMDetection 2.x middle-format list (filename, ann.bboxes, ann.labels per image)"
        if "Labeled Data" in first or "data_row" in first:
            return "a Labelbox export"
    if isinstance(data, dict):
        if "data_row" in data or "Labeled Data" in data:  # an NDJSON export of one image
            return "a Labelbox export"
        if "imageGcsUri" in data:  # JSON Lines of one image
            return "a Vertex AI image object detection import file (JSON Lines)"
        if "source-ref" in data:
            return "a SageMaker Ground Truth output manifest (JSON Lines)"
        if "data_list" in data and "metainfo" in data:
            return "an MMDetection 3.x annotation file (metainfo, data_list)"
        if "shapes" in data and "imagePath" in data:
            return "a LabelMe JSON file (one per image)"
        if "objects" in data and isinstance(data.get("size"), dict):
            return "a Supervisely annotation (one per image)"
        anns = data.get("annotations")
        if isinstance(anns, list) and anns and isinstance(anns[0], dict) and "segments_info" in anns[0]:
            return ("a COCO panoptic file (its boxes are in segments_info; panopticapi's "
                    "converters/panoptic2detection_coco_format.py writes COCO detection JSON from it)")
        if "_via_img_metadata" in data or (data and all(isinstance(v, dict) and "regions" in v
                                                        for v in list(data.values())[:5])):
            return "a VGG Image Annotator (VIA) project"
    return ""


_IMAGE_MAGIC = ((b"\xff\xd8\xff", "a JPEG image"), (b"\x89PNG", "a PNG image"), (b"RIFF", "a RIFF (WebP) file"),
                (b"GIF8", "a GIF image"), (b"II*\x00", "a TIFF image"), (b"MM\x00*", "a TIFF image"))


def other_binary_format(path: Path, raw: bytes) -> str:
    """What to say of a binary file given as the annotation file ("" when it may be text): a zip
    or tar archive (with the JSON files inside it to unpack; ``raw`` of a ``.tar.gz`` is already
    unpacked from gzip, xz or bzip2: ``tar -xf`` unpacks any of them), a 7z or RAR archive, or an image."""
    if raw[257:262] == b"ustar":  # a tar file's header
        import io
        import tarfile

        try:
            with tarfile.open(fileobj=io.BytesIO(raw)) as archive:
                inside = [n for n in archive.getnames() if n.lower().endswith(".json")]
        except (tarfile.TarError, OSError, EOFError) as exc:
            return f"a tar archive that cannot be read ({exc}); is the download complete?"
        listed = ", ".join(inside[:5]) + (", ..." if len(inside) > 5 else "") if inside else "no .json file"
        return (f"a tar archive (holding {listed}): unpack it (tar -xf {shell_word(path)} -C DIR) and give the "
                "COCO JSON inside with --annotations, and its image folder with --images")
    for magic, what, unpack in ((b"7z\xbc\xaf\x27\x1c", "a 7z archive", f"7z x {shell_word(path)} -oDIR"),
                                (b"Rar!\x1a\x07", "a RAR archive", f"unrar x {shell_word(path)} DIR/")):
        if raw.startswith(magic):
            return (f"{what}: unpack it ({unpack}) and give the COCO JSON inside with --annotations, and its image "
                    "folder with --images")
    if raw[:4] == b"PK\x03\x04":
        try:
            with zipfile.ZipFile(path) as archive:
                inside = [n for n in archive.namelist() if n.lower().endswith(".json")]
        except (zipfile.BadZipFile, OSError) as exc:
            return f"a zip archive that cannot be opened ({exc}); is the download complete?"
        listed = ", ".join(inside[:5]) + (", ..." if len(inside) > 5 else "") if inside else "no .json file"
        return (f"a zip archive (holding {listed}): unpack it and give the COCO JSON inside with --annotations, "
                "and its image folder with --images")
    if _is_tfrecord(raw):
        return ("a TFRecord file, not an annotation file: pass its folder with --tfrecords (analyze) or --data "
                "(train, evaluate, export); --annotations takes COCO JSON")
    for magic, what in _IMAGE_MAGIC:
        if raw.startswith(magic):
            return f"{what}, not an annotation file: give the COCO JSON with --annotations and the photos' folder " \
                   "with --images"
    return ""


def _is_tfrecord(raw: bytes) -> bool:
    """Whether ``raw`` starts as a TFRecord file does (its first record's header)."""
    from edge_trash.tfrecords.tfrecord_file import header_checks_out

    try:
        return header_checks_out(raw)
    except ImportError:  # google-crc32c missing: the file is read as text and refused as such
        return False


_ARCHIVES = ((".tar.gz", "tar -xzf {p} -C DIR"), (".tgz", "tar -xzf {p} -C DIR"), (".tar", "tar -xf {p} -C DIR"),
             (".zip", "unzip {p} -d DIR"), (".7z", "7z x {p} -oDIR"), (".rar", "unrar x {p} DIR/"))


def images_folder_problem(folder: Path) -> str:
    """Why ``folder`` given as ``--images`` is not a folder of photos ("" when it is one):
    missing, an archive still to unpack, the annotation file, or another file."""
    if folder.is_dir():
        return ""
    if not folder.exists():
        return f"--images {folder}: no such folder (give the folder the file_name entries are relative to)"
    name = folder.name.lower()
    try:
        with open(folder, "rb") as f:
            zipped = f.read(4) == b"PK\x03\x04"
    except OSError:
        zipped = False
    for suffix, unpack in _ARCHIVES:
        if name.endswith(suffix) or (zipped and suffix == ".zip"):
            return (f"--images {folder}: an archive, not a folder: unpack it ({unpack.format(p=folder)}) and give "
                    "the folder of the photos")
    if name.endswith(".json"):
        return (f"--images {folder}: a file, not a folder (the annotations go to --annotations; --images takes the "
                "folder the file_name entries are relative to)")
    return f"--images {folder}: a file, not a folder: give the folder the file_name entries are relative to"


# A TFRecord file as other tools name it: litter.tfrecord, train.record, coco_train.record-00000-of-00100; not
# TensorFlow's checkpoint variables (ckpt-300.data-00000-of-00001, variables.data-00000-of-00001).
_RECORD_FILE = re.compile(r"\.(tfrecords?|records?)(-\d{5}-of-\d{5})?$|(?<!\.data)-\d{5}-of-\d{5}$", re.I)


def other_record_layout(folder: Path, flag: str) -> str:
    """What ``folder`` (given as ``flag``) holds when its TFRecords are not named as ``build-tfrecords``
    names them (Roboflow's export: a folder per split; the TF Object Detection API's ``train.record``), with
    the commands that let edge-trash read them as they are; "" when it holds no such file, or shards of ours."""
    from edge_trash.tfrecords.split_layout import SHARD_RE
    from edge_trash.tfrecords.split_names import split_word

    if not folder.is_dir() or any(SHARD_RE.match(p.name) for p in folder.iterdir()):
        return ""
    builds = builds_inside(folder)
    if builds:
        return several_builds(folder, flag, builds)
    places = [folder] + sorted(p for p in folder.iterdir() if p.is_dir())
    files = [f for place in places for f in _listed(place) if f.is_file() and _RECORD_FILE.search(f.name)]
    if not files:
        return not_records(folder, flag)
    by_split: "dict[str, list[Path]]" = {}
    unknown = []
    for f in files:
        split = (split_word(f.parent.name) if f.parent != folder else None) or split_word(f.stem)
        (by_split.setdefault(split, []) if split else unknown).append(f)
    seen = [f.relative_to(folder).as_posix() for f in files]
    kind = ("laid out as Roboflow's TFRecord export lays them (a folder per split)" if any(
        f.parent != folder for f in files) and any(folder.glob("*/*_label_map.pbtxt"))
        else "named as the TF Object Detection API's scripts name them" if any(".record" in f.name.lower()
                                                                                for f in files)
        else "under other names")
    lines = [f"{flag} {folder}: no shards named like 'train-00000-of-00001.tfrecord'; it holds TFRecords {kind}: "
             f"{', '.join(seen[:6])}{', ...' if len(seen) > 6 else ''}. Exporting the dataset as COCO JSON "
             "for `edge-trash build-tfrecords` checks every box and shrinks the photos; to read these records as "
             "they are, give them the names edge-trash reads:"]
    for split in ("train", "val", "test"):
        for k, f in enumerate(by_split.get(split, [])):
            link = folder / f"{split}-{k:05d}-of-{len(by_split[split]):05d}.tfrecord"
            lines.append(f"  ln -s {shell_word(f.relative_to(folder).as_posix())} {shell_word(link)}")
    if unknown:
        lines.append(f"  (and name each of {', '.join(f.relative_to(folder).as_posix() for f in unknown)} "
                     "train-, val- or test-NNNNN-of-NNNNN.tfrecord by the split it holds)")
    if not (folder / "labels.txt").is_file():
        maps = sorted(folder.glob("*.pbtxt")) + sorted(folder.glob("*/*.pbtxt"))
        command = labels_txt_command(folder, maps[0]) if maps else ""
        lines.append(f"  {command}" if command else
                     f"  and write {folder / 'labels.txt'}: one class name per line, line k naming the records' "
                     f"class id k{f' (as {maps[0].relative_to(folder).as_posix()} does)' if maps else ''}")
    if "val" not in by_split:
        lines.append("  (training needs a val split too: records of photos it does not train on)")
    return "\n".join(lines)


def _listed(folder: Path) -> "list[Path]":
    """``folder``'s entries, sorted; none for a folder this user cannot list (``lost+found`` on a disk's root)."""
    try:
        return sorted(folder.iterdir())
    except OSError:
        return []


def _holds_photos(folder: Path) -> bool:
    from edge_trash.tfrecords.image_paths import IMAGE_SUFFIXES

    try:
        return any(e.name.casefold().endswith(IMAGE_SUFFIXES) and e.is_file() for e in os.scandir(folder))
    except OSError:
        return False


def _subfolders(folders: "list[Path]") -> "list[Path]":
    return sorted(p for f in folders for p in _listed(f) if p.is_dir() and not p.name.startswith("."))


def _photo_root(folder: Path) -> "Path | None":
    """The folder holding the photos in or up to two levels under ``folder`` (TACO: ``data/batch_N/*.jpg``; the
    sample: ``images/batch_N/*.jpg``; COCO: ``val2017/*.jpg``), or None when there are none."""
    level = [folder]
    for _ in range(3):
        with_photos = [f for f in level if _holds_photos(f)]
        if with_photos:
            parents = {f.parent for f in with_photos}
            return with_photos[0] if len(with_photos) == 1 else parents.pop() if len(parents) == 1 else folder
        level = _subfolders(level)
    return None


_FILE_NAME = re.compile(rb'"file_name"\s*:\s*"((?:[^"\\]|\\.)*)"')


def _coco_head(path: Path) -> "bytes | None":
    """The first MiB of ``path`` when it reads as COCO JSON (it names ``images``), else None."""
    try:
        with open(path, "rb") as f:
            head = f.read(1 << 20)
    except OSError:
        return None
    return head if b'"images"' in head else None


def _coco_near(folder: Path, photos: Path) -> "list[tuple[Path, bytes]]":
    """COCO JSON files where datasets keep them: in ``folder``, the folder above it, the folders from ``folder``
    down to the photos, and an ``annotations/`` folder beside the photos (COCO's layout)."""
    places = [folder, folder.parent]
    if photos != folder and folder in photos.parents:
        places += [p for p in reversed(photos.parents) if folder in p.parents] + [photos]
    places += [p / "annotations" for p in (folder, photos.parent)]
    found = {}
    for place in dict.fromkeys(places):
        for path in sorted(place.glob("*.json"))[:50] if place.is_dir() else []:  # LabelMe: a JSON per photo
            head = _coco_head(path)
            if head is not None:
                found[path] = head
    return list(found.items())


def _images_for(annotations: Path, head: bytes, folder: Path, photos: Path) -> Path:
    """The ``--images`` folder for ``annotations``: where its first ``file_name`` exists (TACO's ``batch_1/x.jpg``
    from ``data/``), else the photos' folder."""
    from edge_trash.tfrecords.image_paths import default_images_folder

    match = _FILE_NAME.search(head)
    if match:
        try:
            name = json.loads(b'"' + match.group(1) + b'"')
        except ValueError:
            name = ""
        candidates = [photos] + [p for p in photos.parents if p == folder or folder in p.parents]
        candidates += [default_images_folder(annotations)[0]] + _subfolders([photos])  # COCO: val2017/
        for place in candidates:
            if name and (place / name).is_file():
                return place
    return photos


def _run_or_bundle(folder: Path, flag: str) -> str:
    """What to say of a training run or an export bundle given as ``flag``: the records it came from where its
    ``data.json`` names them (a run's), else the folder to pass; "" for any other folder."""
    from edge_trash.models.run_dir import CHECKPOINTS, CONFIG_JSON, DATA_JSON, WEIGHTS_H5

    build = "pass the --out folder of `edge-trash build-tfrecords`"
    if (folder / "manifest.json").is_file() and any(folder.glob("*.tflite")):
        return f"{flag} {folder}: an export bundle (manifest.json, its .tflite models), not records: {build}"
    if not (folder / CONFIG_JSON).is_file() or not any((folder / n).exists() for n in (DATA_JSON, WEIGHTS_H5,
                                                                                       CHECKPOINTS)):
        return ""
    try:
        data = json.loads((folder / DATA_JSON).read_text(encoding="utf-8")).get("data")
    except (OSError, UnicodeDecodeError, ValueError, AttributeError):
        data = None
    trained = (f" (this run trained on {shell_word(data)}, as its {DATA_JSON} records)"
               if isinstance(data, str) and Path(data).is_dir() else "")
    return f"{flag} {folder}: a training run of `edge-trash train`, not records: {build}{trained}"


def not_records(folder: Path, flag: str) -> str:
    """What a folder with no TFRecords holds when a user passes it as ``flag`` by mistake: the report of
    ``edge-trash analyze``, a training run or an export bundle, or photos (with their COCO JSON) not yet built,
    with the command that builds them;
    "" for anything else."""
    if (folder / "stats.json").is_file() and (folder / "report.md").is_file():
        return (f"{flag} {folder}: a report of `edge-trash analyze` (report.md, stats.json), not records: pass the "
                "--out folder of `edge-trash build-tfrecords`")
    run = _run_or_bundle(folder, flag)
    if run:
        return run
    try:
        photos = _photo_root(folder)
        found = _coco_near(folder, photos) if photos is not None else []
    except OSError:
        return ""
    if photos is None:
        return ""
    images = _images_for(found[0][0], found[0][1], folder, photos) if len(found) == 1 else photos
    annotations = shell_word(found[0][0]) if len(found) == 1 else "ANNOTATIONS.json"
    which = (f" ({found[0][0]})" if len(found) == 1 else
             f" (one of {examples([str(p) for p, _ in found], 4)})" if found else " (export their boxes as COCO JSON)")
    also = (f" (or analyze the photos as they are: edge-trash analyze --annotations {annotations} --images "
            f"{shell_word(images)} --out OUT)" if flag == "--tfrecords" else "")
    return (f"{flag} {folder}: no TFRecords; it holds photos{' and annotations' if found else ''}{which}. Build "
            f"records from them first: edge-trash build-tfrecords --annotations {annotations} --images "
            f"{shell_word(images)} --out records, then pass {flag} records{also}")


def builds_inside(folder: Path) -> "list[Path]":
    """The subfolders of ``folder`` that each hold a ``build-tfrecords`` output: shards named as it names them
    (``train-00000-of-00001.tfrecord``, ``fold0-...``) and a ``labels.txt``, sorted by name."""
    from edge_trash.tfrecords.split_layout import SHARD_RE

    found = []
    for sub in sorted(p for p in folder.iterdir() if p.is_dir()):
        try:
            if (sub / "labels.txt").is_file() and any(SHARD_RE.match(f.name) for f in sub.iterdir()):
                found.append(sub)
        except OSError:  # a subfolder this user cannot list is no build to name
            continue
    return found


def several_builds(folder: Path, flag: str, builds: Sequence[Path]) -> str:
    """What to say of a ``flag`` ``folder`` with no shards of its own whose subfolders ``builds`` are whole
    ``build-tfrecords`` outputs: pass one of them. Linking their shards into ``folder`` would merge builds (the
    same photos counted twice, one build's records under another's labels.txt)."""
    from edge_trash.terminal import examples

    names = [shell_word(b) for b in builds]
    if len(builds) == 1:
        return (f"{flag} {folder}: no shards of its own; it holds a build-tfrecords output in a subfolder (its "
                f"shards and labels.txt): pass it as {flag}: {flag} {names[0]}")
    return (f"{flag} {folder}: no shards of its own; this folder holds {len(builds)} builds of build-tfrecords, each "
            f"in a subfolder with its own shards and labels.txt: pass one of them as {flag}: {examples(names, 8)}")


def labels_txt_command(folder: Path, label_map: Path) -> str:
    """The shell command that writes ``folder/labels.txt`` from a ``label_map.pbtxt`` whose ids run 1..N (an item
    ``id: 0`` named background is left out: "" for one with other ids, id 1 named background, or none)."""
    from edge_trash.tfrecords.class_map import label_map_names

    try:
        names = label_map_names(label_map.read_text(encoding="utf-8", errors="replace"))
    except OSError:
        return ""
    if 0 in names and is_background_name(names[0]):  # id 0 is background here too: it takes no line
        del names[0]
    if not names or sorted(names) != list(range(1, len(names) + 1)) or is_background_name(names[1]):
        return ""
    words = " ".join(shell_word(names[i]) for i in sorted(names))
    return f"printf '%s\\n' {words} > {shell_word(folder / 'labels.txt')}"


def missing_labels_txt(data_dir: Path) -> str:
    """Why ``--data`` cannot train without ``labels.txt``, and how to write it: from the label map beside the
    records, or (another tool's layout) with the names edge-trash reads."""
    other = other_record_layout(data_dir, "--data")
    if other:
        return other
    label_map = data_dir / "label_map.pbtxt"
    command = labels_txt_command(data_dir, label_map) if label_map.is_file() else ""
    beside = (f"; the label_map.pbtxt there names them: {command}" if command else
              " (the label_map.pbtxt there names them: list its names in id order)" if label_map.is_file() else "")
    return (f"--data {data_dir}: no labels.txt; `edge-trash build-tfrecords` writes it beside the records: one class "
            f"name per line, line k for class id k{beside}")


# First lines other tools give a label file for class id 0 (TFLite's COCO labels: '???'; Detectron2, torchvision:
# '__background__'); edge-trash's labels.txt has no line for it.
BACKGROUND_NAMES = ("background", "__background__", "???", "__bg__")


def is_background_name(name: str) -> bool:
    """Whether ``name`` is how other tools name class id 0, background (``background``, ``__background__``,
    ``???``; any case)."""
    return name.strip().casefold() in BACKGROUND_NAMES


def background_line_problem(names: Sequence[str], path: Path) -> str:
    """Why a label file (``labels.txt``, or the names of a label map in id order) whose first entry is a
    background entry cannot train ("" when it is not one): line k names class id k, so every class would train
    under the name of the line before its own; with the fix."""
    if not names or not is_background_name(names[0]):
        return ""
    return (f"{path}: its first line is {names[0].strip()!r}, a background entry as other tools write one for class "
            f"id 0; edge-trash's labels.txt lists the classes alone (line k names class id k, and id 0, background, "
            f"has no line), so every class would train under the name of the line before its own: drop that line "
            f"(sed -i 1d {shell_word(path)}), or rebuild the records with `edge-trash build-tfrecords`")


def class_ids_from_0_problem(first: str, records: int, total: int, highest: int, num_classes: int) -> str:
    """Why records that hold class id 0 (``image/object/class/label``: a converter that numbers classes from 0)
    cannot train: edge-trash reads 0 as background. ``first`` names the first record that holds it; ``records``
    of ``total`` hold one; ``highest`` is the largest id seen; ``num_classes`` the lines of labels.txt."""
    return (f"{first} has class id 0, as {records} of the split's {plural(total, 'record')} do (ids run 0..{highest}, "
            f"labels.txt has {plural(num_classes, 'class')}): the records number their classes from 0, but 0 is "
            "background in the schema edge-trash reads (class ids 1..N, line k of labels.txt names id k), so each "
            "class would train under the name of the line before its own and the first not at all: rebuild the "
            "records from the dataset's COCO JSON with `edge-trash build-tfrecords`, or write them with every "
            "image/object/class/label 1 higher")
