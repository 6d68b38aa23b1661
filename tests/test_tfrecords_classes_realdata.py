"""Class mapping, --min-instances, and the real annotation files in ../shared/data."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from PIL import Image

from edge_trash.tfrecords.build import BuildOptions, build_tfrecords
from edge_trash.tfrecords.class_map import ClassMapError, build_class_mapping, read_class_map
from edge_trash.tfrecords.coco import BoxRecord, Category

from conftest import SHARED

CATS = [Category(0, "Bottle cap", "Cap"), Category(1, "Glass bottle", "Bottle"),
        Category(2, "Plastic bottle", "Bottle"), Category(3, "Drink can", "Can"), Category(7, "Unused", "None")]


def _boxes(counts):
    out = []
    for cid, n in counts.items():
        for k in range(n):
            out.append(BoxRecord(0, k, 1, cid, 0, 0, 5, 5, 0))
    return out


def test_default_classes_are_contiguous_from_one_and_unused_left_out():
    m = build_class_mapping(CATS, _boxes({0: 3, 1: 2, 2: 5, 3: 1}))
    assert m.names == ["Bottle cap", "Glass bottle", "Plastic bottle", "Drink can"]
    assert m.target_of_category == {0: 1, 1: 2, 2: 3, 3: 4, 7: None}
    assert m.unused == ["Unused"]


def test_supercategories_merge_classes():
    m = build_class_mapping(CATS, _boxes({0: 3, 1: 2, 2: 5, 3: 1}), supercategories=True)
    assert m.names == ["Cap", "Bottle", "Can"]
    assert m.target_of_category[1] == m.target_of_category[2] == 2


def test_min_instances_folds_rare_classes_into_other_or_drops_them():
    boxes = _boxes({0: 3, 1: 2, 2: 5, 3: 1})
    m = build_class_mapping(CATS, boxes, min_instances=3, rare="other")
    assert m.names == ["Bottle cap", "Plastic bottle", "other"]
    assert m.target_of_category[1] == m.target_of_category[3] == 3
    assert m.folded_into_other == ["Glass bottle", "Drink can"]
    assert (m.other_class, m.other_from_source) == ("other", False)
    # A dataset with its own 'Other' class: the rare ones join it under its spelling, and the summary says so.
    cats = CATS + [Category(9, "Other", "Other")]
    m = build_class_mapping(cats, boxes + _boxes({9: 1}), min_instances=3, rare="other")
    assert m.names == ["Bottle cap", "Plastic bottle", "Other"]
    assert m.target_of_category[1] == m.target_of_category[3] == m.target_of_category[9] == 3
    assert m.as_report()["other_class"] == "Other" and m.as_report()["other_class_from_source"] is True
    m = build_class_mapping(CATS, boxes, min_instances=3, rare="drop")
    assert (m.other_class, m.folded_into_other) == ("", [])
    assert m.names == ["Bottle cap", "Plastic bottle"]
    assert m.target_of_category[1] is None
    assert m.drop_reasons[3] == "class 'Drink can' has only 1 box (fewer than --min-instances 3; --rare drop)"


def test_the_summary_names_the_datasets_own_other_class_the_rare_ones_joined(sample_dataset, tmp_path):
    from edge_trash.tfrecords.build_cli import summarize

    from collections import Counter

    from edge_trash.tfrecords.coco import load_coco_files

    dataset = load_coco_files([sample_dataset.annotations])  # --min-instances counts the annotation file's boxes
    name_of = {c.id: c.name for c in dataset.categories}
    counts = sorted((n, name) for name, n in Counter(name_of[b.category_id] for b in dataset.boxes).items())
    (fewest, rarest), (second, _), commonest = counts[0], counts[1], counts[-1][1]
    assert fewest < second  # so --min-instances fewest+1 folds the rarest class alone
    opts = dict(images=sample_dataset.images, min_instances=fewest + 1, seed=0)
    report = build_tfrecords(BuildOptions(annotations=sample_dataset.annotations, out=tmp_path / "o1", **opts))
    assert report["other_class"] == "other" and report["other_class_from_source"] is False
    assert f"classes folded into 'other': '{rarest}'" in summarize(report, tmp_path / "o1", 1.0).splitlines()
    coco = json.loads(sample_dataset.annotations.read_text())
    for c in coco["categories"]:
        c["name"] = "Others" if c["name"] == commonest else c["name"]  # BePLi's catch-all: not a second 'other'
    (tmp_path / "a.json").write_text(json.dumps(coco))
    report = build_tfrecords(BuildOptions(annotations=tmp_path / "a.json", out=tmp_path / "o2", **opts))
    assert report["other_class"] == "Others" and report["other_class_from_source"] is True
    assert report["classes_folded_into_other"] == [rarest]
    plain = build_tfrecords(BuildOptions(annotations=sample_dataset.annotations, out=tmp_path / "o0",
                                         images=sample_dataset.images, seed=0))
    written = {c["name"]: c["boxes"] for c in plain["classes"]}
    assert {c["name"]: c["boxes"] for c in report["classes"]}["Others"] == written[rarest] + written[commonest]
    assert "other" not in (tmp_path / "o2" / "labels.txt").read_text().splitlines()  # no second catch-all
    assert (f"classes folded into 'Others' (the dataset's own class for everything else, which they joined): '{rarest}'"
            ) in summarize(report, tmp_path / "o2", 1.0).splitlines()


def test_csv_and_yaml_class_maps(tmp_path):
    csv_path = tmp_path / "map.csv"
    csv_path.write_text("source_name,target_name\nBottle cap,Other\nGlass bottle,Bottle\nPlastic bottle,Bottle\n"
                        "Drink can,Can\nStyrofoam,Other\n")
    mapping = read_class_map(csv_path)
    m = build_class_mapping(CATS, _boxes({0: 3, 1: 2, 2: 5, 3: 1}), mapping)
    assert m.names == ["Other", "Bottle", "Can"]
    assert m.map_unknown_sources == ["Styrofoam"]
    assert m.drop_reasons[7] == "category 'Unused' is not in the class map"
    yaml_path = tmp_path / "map.yaml"
    yaml_path.write_text("Glass bottle: bottle\nPlastic bottle: bottle\nDrink can: can\nBottle cap:\n")
    m = build_class_mapping(CATS, _boxes({0: 3, 1: 2, 2: 5, 3: 1}), read_class_map(yaml_path))
    assert m.names == ["bottle", "can"]
    assert m.target_of_category[0] is None
    assert "mapped to nothing" in m.drop_reasons[0]
    # A map keyed by category ids: the categories it misses say so.
    yaml_path.write_text("1: bottle\n2: bottle\n")
    m = build_class_mapping(CATS, _boxes({0: 3, 1: 2, 2: 5, 3: 1}), read_class_map(yaml_path))
    assert m.drop_reasons[1] == (f"category '{CATS[1].name}' is not in the class map (its keys are category names; "
                                 "its key '1' is this category's id)")
    assert m.drop_reasons[0] == f"category '{CATS[0].name}' is not in the class map"


def test_class_map_errors_name_file_and_line(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("A,B\nC\n")
    with pytest.raises(ClassMapError, match=r"bad.csv:2: expected 2 columns"):
        read_class_map(bad)
    with pytest.raises(ClassMapError, match="class map not found"):
        read_class_map(tmp_path / "nope.csv")
    excel = tmp_path / "excel.csv"  # saved by Excel on Windows: CP-1252, not UTF-8
    excel.write_bytes("Papier,papier à recycler\n".encode("cp1252"))
    assert read_class_map(excel) == {"Papier": "papier à recycler"}
    excel.write_bytes(b"Papier,papier \x81\x8d\xe0\n")  # bytes neither UTF-8 nor Windows-1252 define
    with pytest.raises(ClassMapError, match=r"excel\.csv: cannot read the class map \(.*\); save it as UTF-8 text"):
        read_class_map(excel)
    # European Excel separates with ';' (the comma is its decimal mark); TSV with tabs
    excel.write_bytes("taco_name;target_class\nBottle cap;Other\nGlass bottle;Bottle\n".encode("cp1252"))
    assert read_class_map(excel) == {"Bottle cap": "Other", "Glass bottle": "Bottle"}
    excel.write_text("Bottle cap\tOther\n# a comment, with a comma\nGlass bottle\tBottle\n")
    assert read_class_map(excel) == {"Bottle cap": "Other", "Glass bottle": "Bottle"}
    # Excel's UTF-8 (with a byte-order mark) and a quoted name across a line break read as the names mean.
    excel.write_bytes("\ufeffsource,target\nPapier,papier à recycler\n\"glass\nbottle\",glass\n".encode("utf-8"))
    assert read_class_map(excel) == {"Papier": "papier à recycler", "glass bottle": "glass"}
    with pytest.raises(ClassMapError, match="either --class-map or --supercategories"):
        build_class_mapping(CATS, [], {"a": "b"}, supercategories=True)
    # a key twice in YAML: PyYAML kept the last without a word, where the same CSV rows are refused
    twice = tmp_path / "map.yaml"
    twice.write_text("can: metal\nbottle: plastic\ncan: plastic\n")
    with pytest.raises(ClassMapError, match=r"map\.yaml:3: 'can' is mapped twice \('metal' and 'plastic'\)"):
        read_class_map(twice)
    twice.write_text("can: metal\nbottle:\n  plastic\n")  # one key each: read as before
    assert read_class_map(twice) == {"can": "metal", "bottle": "plastic"}


def _write_scaled_images(coco: dict, images_dir: Path, ids, scale: int = 8) -> None:
    by_id = {im["id"]: im for im in coco["images"]}
    for iid in ids:
        im = by_id[iid]
        path = images_dir / im["file_name"]
        path.parent.mkdir(parents=True, exist_ok=True)
        w = max(8, im["width"] // scale)
        size = (w, max(8, round(im["height"] * w / im["width"])))
        Image.new("RGB", size, ((iid * 37) % 255, 90, 120)).save(path, format="JPEG", quality=80)


@pytest.mark.parametrize("name,class_map", [("taco_unofficial.json", None),
                                             ("taco_unofficial.json", "taco_map_10.csv"),
                                             ("uavvaste.json", None)])
def test_real_annotation_files_convert(tmp_path, name, class_map):
    src = SHARED / "data" / "coco" / name
    if not src.exists():
        pytest.skip(f"{src} not present")
    coco = json.loads(src.read_text())
    nonfinite = {a["id"] for a in coco["annotations"] if not all(math.isfinite(v) for v in a["bbox"])}
    with_nonfinite = {a["image_id"] for a in coco["annotations"] if a["id"] in nonfinite}
    ids = sorted({im["id"] for im in coco["images"][:24]} | set(list(with_nonfinite)[:3]))
    _write_scaled_images(coco, tmp_path / "img", ids)
    report = build_tfrecords(BuildOptions(annotations=src, images=tmp_path / "img", out=tmp_path / "out",
                                          class_map=SHARED / "data" / "coco" / class_map if class_map else None))
    sizes = {im["id"]: (im["width"], im["height"]) for im in coco["images"]}

    def usable(a):
        x, y, w, h = a["bbox"]
        width, height = sizes[a["image_id"]]
        return all(math.isfinite(v) for v in a["bbox"]) and min(width, x + w) - max(0, x) >= 1 \
            and min(height, y + h) - max(0, y) >= 1

    annotated = {a["image_id"] for a in coco["annotations"]}
    every_box_unusable = sorted(annotated - {a["image_id"] for a in coco["annotations"] if usable(a)})
    left_out = [i for i in ids if i in every_box_unusable]  # annotated, no usable box: not background
    assert report["images_written"] == len(ids) - len(left_out)
    assert sorted(s["image_id"] for s in report["images_skipped"] if s["reason"].startswith("every box")) == \
        every_box_unusable
    assert report["images_total"] == len(coco["images"])
    assert report["boxes_total"] == len(coco["annotations"])
    assert report["boxes_total"] == report["boxes_written"] + len(report["boxes_dropped"])
    reasons = {d["annotation_id"]: d["reason"] for d in report["boxes_dropped"]}
    for aid in nonfinite:
        assert "NaN or Infinity" in reasons[aid]
    names = (tmp_path / "out" / "labels.txt").read_text().splitlines()
    assert names == [c["name"] for c in report["classes"]]
    if name == "uavvaste.json":
        assert names == ["rubbish"]  # source id 0 becomes our id 1
    if name.startswith("taco"):
        assert len(nonfinite) == 15
        assert len({n["image_id"] for n in report["image_notes"]}) == len(ids) - len(left_out)  # all scaled 1/8
        assert len(every_box_unusable) == 7 and len(left_out) == 1
    if class_map:
        assert len(report["class_map_unknown_sources"]) == 4
        assert len(names) <= 10
