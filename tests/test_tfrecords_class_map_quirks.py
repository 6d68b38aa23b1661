"""Class maps and --supercategories / --rare on the files people actually have: a class the
dataset names 'other', a commented CSV, European Excel's ';' with quoted commas, Roboflow exports."""

from __future__ import annotations

from edge_trash.tfrecords.class_map import build_class_mapping, read_class_map
from edge_trash.tfrecords.coco import BoxRecord, Category

CATS = [Category(0, "Bottle cap", "Cap"), Category(1, "Glass bottle", "Bottle"),
        Category(2, "Plastic bottle", "Bottle"), Category(3, "Drink can", "Can"), Category(7, "Unused", "None")]


def _boxes(counts):
    return [BoxRecord(0, k, 1, cid, 0, 0, 5, 5, 0) for cid, n in counts.items() for k in range(n)]


def test_with_rare_drop_a_rare_class_named_other_is_dropped_like_the_rest():
    cats = CATS + [Category(9, "Other", "Other")]
    boxes = _boxes({0: 3, 1: 2, 2: 5, 3: 1, 9: 1})
    m = build_class_mapping(cats, boxes, min_instances=3, rare="drop")
    assert m.names == ["Bottle cap", "Plastic bottle"]
    assert m.dropped_rare == ["Glass bottle", "Drink can", "Other"]
    assert m.target_of_category[9] is None
    assert m.drop_reasons[9] == "class 'Other' has only 1 box (fewer than --min-instances 3; --rare drop)"
    # --rare other: the dataset's rare 'Other' is the class the rare ones join, not one of them
    m = build_class_mapping(cats, boxes, min_instances=3, rare="other")
    assert m.names == ["Bottle cap", "Plastic bottle", "Other"]
    assert (m.folded_into_other, m.other_class, m.other_from_source) == (["Glass bottle", "Drink can"], "Other", True)


def test_with_rare_other_an_empty_source_class_named_other_is_the_fold_target_not_left_out():
    # The summary said "classes without boxes (left out): 'other'" while labels.txt held 'other', the class the
    # rare ones were folded into (report.json: classes_unused ['other']).
    cats = CATS + [Category(9, "other", "Other")]
    m = build_class_mapping(cats, _boxes({0: 3, 1: 2, 2: 5, 3: 1}), min_instances=3, rare="other")
    assert m.names == ["Bottle cap", "Plastic bottle", "other"]
    assert (m.folded_into_other, m.other_class, m.other_from_source) == (["Glass bottle", "Drink can"], "other", False)
    assert m.unused == ["Unused"]
    assert m.target_of_category[9] == 3 and m.target_of_category[1] == 3


def test_class_map_keys_differing_only_in_case_are_refused_unless_each_names_a_category():
    import pytest

    from edge_trash.tfrecords.class_map import ClassMapError

    boxes = _boxes({0: 3, 1: 2, 2: 5, 3: 1})
    with pytest.raises(ClassMapError) as err:  # 'Drink Can' matched nothing: 'metal' showed only as "without boxes"
        build_class_mapping(CATS, boxes, {"Drink Can": "metal", "drink can": "can", "Bottle cap": "cap"})
    assert str(err.value) == (
        "the class map has 'Drink Can' -> 'metal' and 'drink can' -> 'can', which differ only in case: category "
        "names match a key ignoring case when none matches exactly, so one of them maps nothing; keep one row per "
        "category")
    assert build_class_mapping(CATS, boxes, {"Drink Can": "can", "drink can": "can"}).names == ["can"]  # alike
    cats = CATS + [Category(8, "drink can", "Can")]  # two categories that differ in case: each row is used
    assert build_class_mapping(cats, boxes + _boxes({8: 1}), {"Drink can": "a", "drink can": "b"}).names == ["a", "b"]


def test_a_csv_header_after_comments_and_blank_lines_is_a_header(tmp_path):
    path = tmp_path / "map.csv"
    path.write_text("# my map\n\nsource_name,target_name\nBottle cap,Other\n")
    assert read_class_map(path) == {"Bottle cap": "Other"}
    # only the first row can be the header: a class named 'name' further down is a class
    path.write_text("# my map\nBottle cap,Other\nname,label\n")
    assert read_class_map(path) == {"Bottle cap": "Other", "name": "label"}


def test_separators_inside_quotes_do_not_decide_the_csv_separator(tmp_path):
    path = tmp_path / "map.csv"
    path.write_text('bottle;"glass, plastic"\ncan;metal\n')  # European Excel: ';', quoting a name with a comma
    assert read_class_map(path) == {"bottle": "glass, plastic", "can": "metal"}
    path.write_text('bottle;"glass, plastic"\ncan;"metal, tin"\n')
    assert read_class_map(path) == {"bottle": "glass, plastic", "can": "metal, tin"}
    path.write_text('"bottle; glass",glass\ncan,metal\n')  # and a ';' quoted in a comma-separated map
    assert read_class_map(path) == {"bottle; glass": "glass", "can": "metal"}
    path.write_text('bottle\t"glass, plastic"\ncan\tmetal\n')
    assert read_class_map(path) == {"bottle": "glass, plastic", "can": "metal"}


def test_supercategories_that_make_one_class_of_several_say_so():
    # Roboflow: the project name is every class's supercategory; its category 0 placeholder has 'none'
    cats = [Category(0, "trash-4Xm2", "none"), Category(1, "bottle", "trash-4Xm2"),
            Category(2, "can", "trash-4Xm2"), Category(3, "paper", "trash-4Xm2")]
    m = build_class_mapping(cats, _boxes({1: 4, 2: 3, 3: 2}), supercategories=True)
    assert (m.names, m.unused) == (["trash-4Xm2"], ["none"])
    assert m.as_report()["supercategories_warning"] == (
        "--supercategories: every class with boxes has the supercategory 'trash-4Xm2' (Roboflow writes the "
        "project name there), so 3 classes became one: leave --supercategories out to train them apart")
    m = build_class_mapping(CATS, _boxes({1: 2, 2: 5}), supercategories=True)  # not Roboflow's layout
    assert m.supercategories_warning == (
        "--supercategories: every class with boxes has the supercategory 'Bottle', so 2 classes became one: "
        "leave --supercategories out to train them apart")
    # nothing to say: several supercategories, one class with boxes, or no --supercategories
    assert build_class_mapping(CATS, _boxes({0: 3, 1: 2, 2: 5}), supercategories=True).supercategories_warning == ""
    assert build_class_mapping(cats, _boxes({1: 4}), supercategories=True).supercategories_warning == ""
    assert build_class_mapping(cats, _boxes({1: 4, 2: 3})).as_report()["supercategories_warning"] == ""


def test_invisible_characters_do_not_make_a_second_class_that_prints_alike(tmp_path):
    import json

    from edge_trash.tfrecords.coco import clean_name, load_coco

    assert [clean_name(n) for n in ("\u200bPlastic", "\ufeffCan", "Glass\u200e", "soft\u00adplastic")] == \
        ["Plastic", "Can", "Glass", "softplastic"]
    scientist = "\U0001F469\u200d\U0001F52C"
    assert clean_name(scientist) == scientist  # an emoji sequence keeps its joiner
    ann = tmp_path / "ann.json"
    ann.write_text(json.dumps({"images": [], "annotations": [],
                               "categories": [{"id": 1, "name": "Plastic"}, {"id": 2, "name": "\u200bPlastic"}]}))
    assert [c.name for c in load_coco(ann).categories] == ["Plastic", "Plastic"]  # one class, merged by name


def test_yaml_keys_yaml_reads_as_words_are_refused_with_the_fix(tmp_path):
    import pytest

    from edge_trash.tfrecords.class_map import ClassMapError

    path = tmp_path / "map.yaml"
    for key, read in (("no", False), ("null", None), ("~", None), ("yes", True)):
        path.write_text(f"can: metal\n{key}: other\n")
        with pytest.raises(ClassMapError) as err:
            read_class_map(path)
        assert str(err.value) == (f"{path}: key {read!r}: YAML reads this key as {read!r}, not as a class name; "
                                  "quote it (\"no\": ...)")
    path.write_text("can: no\n")
    with pytest.raises(ClassMapError, match="the target must be a class name or empty, got False; quote it if it "):
        read_class_map(path)
    path.write_text('"no": metal\n"null": other\n')
    assert read_class_map(path) == {"no": "metal", "null": "other"}


def test_the_rows_suggested_for_similar_names_read_back_as_a_class_map(tmp_path):
    from edge_trash.tfrecords.class_map import similar_names_warning

    warning = similar_names_warning(["Glass, broken", "glass, broken", 'the "cap"'])
    rows = warning.split("with the rows ")[1].split("; ")
    assert rows == ["'\"glass, broken\",\"Glass, broken\"'", "'\"the \"\"cap\"\"\",\"Glass, broken\"'"]
    path = tmp_path / "map.csv"
    path.write_text("\n".join(row[1:-1] for row in rows) + "\n")
    assert read_class_map(path) == {"glass, broken": "Glass, broken", 'the "cap"': "Glass, broken"}


def test_class_names_other_label_readers_take_for_an_index_are_warned(tmp_path):
    """pycoral's read_label_file reads a labels.txt line "6 pack rings" as class 6 "pack rings" (classes 0 and 3
    of this build would have no name) and Frigate fails on the file; the build now says so."""
    import json
    import re as _re

    from click.testing import CliRunner
    from PIL import Image

    from edge_trash.cli import cli
    from edge_trash.tfrecords.class_map import names_read_as_indices

    names = ["6 pack rings", "can", "500 ml bottle", "2:glass", "7up can"]
    images = tmp_path / "images"
    images.mkdir()
    Image.new("RGB", (64, 48), (90, 90, 90)).save(images / "1.jpg")
    ann = tmp_path / "a.json"
    ann.write_text(json.dumps({
        "images": [{"id": 1, "file_name": "1.jpg", "width": 64, "height": 48}],
        "annotations": [{"id": c, "image_id": 1, "category_id": c, "bbox": [2 * c, 2, 10, 10]} for c in range(1, 6)],
        "categories": [{"id": c, "name": n} for c, n in enumerate(names, start=1)]}))
    result = CliRunner().invoke(cli, ["build-tfrecords", "--annotations", str(ann), "--images", str(images),
                                      "--out", str(tmp_path / "out"), "--val-fraction", "0", "--test-fraction", "0"])
    assert result.exit_code == 0, result.output
    assert ("warning: class names '6 pack rings', '500 ml bottle', '2:glass' begin with a number: pycoral's "
            "read_label_file (Coral's examples) and Frigate read a leading number in labels.txt as the class index, "
            "so they would show wrong names (edge-trash's own device service reads it line by line and is not "
            "affected); to use those tools, rename them with a --class-map listing every class (a class it leaves "
            "out is dropped), with rows such as '6 pack rings,NEW NAME'"
            ) in result.output
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["class_names_read_as_indices"] == ["6 pack rings", "500 ml bottle", "2:glass"]

    def pycoral_read_label_file(text):  # pycoral.utils.dataset.read_label_file, as published
        ret = {}
        for row_number, content in enumerate(text.splitlines(True)):
            pair = _re.split(r"[:\s]+", content.strip(), maxsplit=1)
            if len(pair) == 2 and pair[0].strip().isdigit():
                ret[int(pair[0])] = pair[1].strip()
            else:
                ret[row_number] = content.strip()
        return ret

    read = pycoral_read_label_file((tmp_path / "out" / "labels.txt").read_text())
    misread = {n for k, n in enumerate(names) if read.get(k) != n}
    assert misread == set(report["class_names_read_as_indices"])  # the warning names exactly those
    from edge_trash.tfrecords.analyze import analyze

    flags = {f["kind"]: f for f in analyze(ann, out=tmp_path / "analysis", plots=False)["flags"]}
    assert flags["class_names_read_as_indices"]["items"] == ["6 pack rings", "500 ml bottle", "2:glass"]
    assert names_read_as_indices(["7", "can", "6:"]) == ["6:"]  # "7" is read whole; "6:" as class 6 named ""
    assert names_read_as_indices(["can", "7up can", "3D print"]) == []


def test_full_width_spellings_are_flagged_as_similar_names():
    from edge_trash.tfrecords.class_map import similar_names

    assert similar_names(["ｃａｎ", "can", "Ｂｏｔｔｌｅ", "bottle", "ﬁlm", "film", "cup"]) == [
        ["ｃａｎ", "can"], ["Ｂｏｔｔｌｅ", "bottle"], ["ﬁlm", "film"]]
