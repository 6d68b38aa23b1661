"""From the source file's categories to our contiguous class ids (1..K, 0 = background).

Order of our classes: the source categories sorted by id; with ``--class-map`` the
target names in the order the map first names them; with ``--supercategories`` the
supercategories in the order of the sorted categories. Classes without any box are
left out of the label set (and reported); ``--min-instances`` folds rarer classes
into ``other`` or drops them.
"""

from __future__ import annotations

import csv
import io
import re
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Set

from edge_trash.tfrecords.coco import BoxRecord, Category, clean_name

OTHER = "other"
CATCH_ALL = ("other", "others", "misc", "miscellaneous")  # a dataset's own class for everything else (any case)
RARE_POLICIES = ("other", "drop")


class ClassMapError(ValueError):
    """A class-map file or option is unusable; the message names the file and line."""


@dataclass
class ClassMapping:
    """The label set and how each source category reaches it."""

    names: List[str]  # names[i] has our id i + 1
    target_of_category: Dict[int, Optional[int]]  # source category id -> our id, None = dropped
    drop_reasons: Dict[int, str] = field(default_factory=dict)  # source category id -> why dropped
    unused: List[str] = field(default_factory=list)  # target classes with no box
    folded_into_other: List[str] = field(default_factory=list)
    other_class: str = ""  # the class the rare ones were folded into, with the source's spelling when it had one
    other_from_source: bool = False  # the source already had a class of that name: the rare ones joined it
    dropped_rare: List[str] = field(default_factory=list)
    map_unknown_sources: List[str] = field(default_factory=list)  # map rows naming no category
    similar: List[List[str]] = field(default_factory=list)  # kept names that differ only in case or spacing
    read_as_indices: List[str] = field(default_factory=list)  # names other label readers take for an index
    merged_by_name: List[Dict[str, object]] = field(default_factory=list)  # {name, category_ids} sharing a name
    supercategories_warning: str = ""  # --supercategories made one class of several; "" when not
    dropped_as_asked: Set[int] = field(default_factory=set)  # category ids dropped by the user's choice
    # categories no class-map key names that bear a target's name (a relabeled queue export): kept as that class
    kept_as_target: List[str] = field(default_factory=list)

    def as_report(self) -> Dict[str, object]:
        """The mapping facts that go into report.json."""
        return {
            "classes_unused": self.unused,
            "classes_folded_into_other": self.folded_into_other,
            "other_class": self.other_class,
            "other_class_from_source": self.other_from_source,
            "classes_dropped_rare": self.dropped_rare,
            "class_map_unknown_sources": self.map_unknown_sources,
            "categories_kept_as_target": self.kept_as_target,
            "similar_class_names": self.similar,
            "class_names_read_as_indices": self.read_as_indices,
            "categories_merged_by_name": self.merged_by_name,
            "supercategories_warning": self.supercategories_warning,
        }


_SPACING = re.compile(r"[\s_\-]+")


def similar_names(names: Sequence[str]) -> List[List[str]]:
    """Groups of two or more ``names`` that differ only in case, spaces, ``-`` or ``_``
    (``Bottle`` / ``bottle``, ``plastic-bag`` / ``Plastic bag``, a CJK keyboard's full-width
    ``ｃａｎ`` / ``can``): usually one class typed
    two ways by different annotators, which then compete for the same objects."""
    groups: Dict[str, List[str]] = {}
    for name in names:
        groups.setdefault(_SPACING.sub("", unicodedata.normalize("NFKC", clean_name(name)).casefold()), []).append(name)
    return [g for g in groups.values() if len(g) > 1]


def _csv_row(source: str, target: str) -> str:
    """One class-map CSV row, quoted as the CSV reader needs it (``"glass, broken",Glass``)."""
    out = io.StringIO()
    csv.writer(out, lineterminator="").writerow([source, target])
    return f"'{out.getvalue()}'"


def similar_names_warning(group: Sequence[str]) -> str:
    """What to tell the user about one :func:`similar_names` group, with the
    ``--class-map`` CSV rows that merge it into its first name."""
    rows = "; ".join(_csv_row(n, group[0]) for n in group[1:])
    return (f"classes {' / '.join(repr(n) for n in group)} differ only in case or spacing; if they are one class, "
            f"merge them with a --class-map listing every class, with the rows {rows}")


_LEADING_INDEX = re.compile(r"\d+[:\s]")  # pycoral's read_label_file: an "N name", "N: name" or "N:" line


def names_read_as_indices(names: Sequence[str]) -> List[str]:
    """The ``names`` that label readers other than ours would take apart in ``labels.txt``:
    pycoral's ``read_label_file`` (used by Coral's examples) reads a line ``6 pack rings`` as
    class 6 named ``pack rings``; Frigate reads the whole file as ``index name`` lines when the
    first line is one, and fails on the others. A name that is a number alone is read whole."""
    return [n for n in names if _LEADING_INDEX.match(n)]


def read_as_indices_warning(names: Sequence[str]) -> str:
    """What the build summary says about :func:`names_read_as_indices`."""
    return (f"{'class name' if len(names) == 1 else 'class names'} {', '.join(repr(n) for n in names)} "
            f"{'begins' if len(names) == 1 else 'begin'} with a number: pycoral's read_label_file (Coral's "
            "examples) and Frigate read a leading number in labels.txt as the class index, so they would show "
            "wrong names (edge-trash's own device service reads it line by line and is not affected); to use "
            "those tools, rename them with a --class-map listing every class (a class it leaves out is dropped), "
            f"with rows such as {_csv_row(names[0], 'NEW NAME')}")


_QUOTED = re.compile(r'"[^"]*(?:"|$)')  # a quoted field (a doubled "" inside splits it in two: still quoted)


def _csv_delimiter(text: str) -> str:
    """``,``, or the ``;`` Excel writes where the decimal mark is a comma, or a tab, when the
    first row that is not a comment holds that one and no comma outside double quotes
    (``bottle;"glass, plastic"`` is ``;``-separated)."""
    first = next((ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")), "")
    first = _QUOTED.sub("", first)
    if "," not in first:
        for other in (";", "\t"):
            if other in first:
                return other
    return ","


def read_class_map(path: "str | Path") -> Dict[str, Optional[str]]:
    """Read ``source_name -> target_name`` from a CSV (TACO's ``map_*.csv``) or YAML file.

    CSV rows are ``source_name,target_name`` (a header row naming no class is skipped;
    ``;`` or a tab may separate them instead, as European Excel and TSV files do; the
    text is UTF-8, else Windows-1252 as Excel saves CSV on Windows); YAML is a mapping
    of source name to target name, where an empty target drops the class.
    """
    path = Path(path)
    if not path.is_file():
        raise ClassMapError(f"{path}: class map not found (give a CSV 'source_name,target_name' or a YAML mapping)")
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ClassMapError(f"{path}: cannot read the class map ({exc})")
    try:
        text = raw.decode("utf-8-sig")  # Excel writes a byte-order mark
    except UnicodeDecodeError as exc:
        try:  # Excel on Windows saves "CSV (Comma delimited)" in its ANSI code page
            text = raw.decode("cp1252")
        except UnicodeDecodeError:
            raise ClassMapError(f"{path}: cannot read the class map ({exc}); save it as UTF-8 text")
    mapping: Dict[str, Optional[str]] = {}
    if path.suffix.lower() in (".yaml", ".yml"):
        import yaml

        class _NoRepeatedKeys(yaml.SafeLoader):
            """YAML keeps the last of two equal keys without a word; a class map must not."""

            def construct_mapping(self, node: Any, deep: bool = False) -> Any:
                mapping = super().construct_mapping(node, deep=deep)
                first: Dict[Any, Any] = {}  # key -> its first value's node
                for key_node, value_node in node.value:
                    key = self.construct_object(key_node)
                    if key in first:
                        raise ClassMapError(f"{path}:{key_node.start_mark.line + 1}: '{key}' is mapped twice "
                                            f"('{self.construct_object(first[key])}' and '{mapping[key]}')")
                    first[key] = value_node
                return mapping

        try:
            data = yaml.load(text, Loader=_NoRepeatedKeys)  # noqa: S506 - a SafeLoader
        except yaml.YAMLError as exc:
            raise ClassMapError(f"{path}: not valid YAML: {exc}")
        if not isinstance(data, dict):
            raise ClassMapError(f"{path}: expected a mapping 'source name: target name', got {type(data).__name__}")
        for src, dst in data.items():
            if src is None or isinstance(src, bool):  # null, ~, yes, no, on, off: YAML's words, not names
                raise ClassMapError(f"{path}: key {src!r}: YAML reads this key as {src!r}, not as a class name; quote "
                                    "it (\"no\": ...)")
            if dst is not None and not isinstance(dst, str):
                raise ClassMapError(f"{path}: key '{src}': the target must be a class name or empty, got {dst!r}"
                                    + ("; quote it if it is a class name" if isinstance(dst, (bool, int, float))
                                       else ""))
            mapping[clean_name(str(src))] = clean_name(dst) if isinstance(dst, str) and clean_name(dst) else None
        return mapping
    first_row = True
    with io.StringIO(text, newline="") as f:  # newline="": a quoted name may hold a line break
        for lineno, row in enumerate(csv.reader(f, delimiter=_csv_delimiter(text)), start=1):
            if not row or all(not c.strip() for c in row) or row[0].lstrip().startswith("#"):
                continue
            if len(row) != 2:
                raise ClassMapError(f"{path}:{lineno}: expected 2 columns 'source_name,target_name', got {row!r}")
            src, dst = clean_name(row[0]), clean_name(row[1])
            is_header = first_row and src.lower() in ("source_name", "source", "taco_name", "name")
            first_row = False
            if is_header:  # the header is the first row that is neither blank nor a comment
                continue
            if src in mapping and mapping[src] != (dst or None):
                raise ClassMapError(f"{path}:{lineno}: '{src}' is mapped twice ('{mapping[src]}' and '{dst}')")
            mapping[src] = dst or None
    if not mapping:
        raise ClassMapError(f"{path}: the class map has no rows")
    return mapping


def build_class_mapping(categories: Sequence[Category], boxes: Sequence[BoxRecord],
                        class_map: Optional[Dict[str, Optional[str]]] = None,
                        supercategories: bool = False, min_instances: int = 1,
                        rare: str = "other") -> ClassMapping:
    """Decide our label set from the source categories and the valid boxes."""
    if class_map is not None and supercategories:
        raise ClassMapError("use either --class-map or --supercategories, not both")
    if rare not in RARE_POLICIES:
        raise ClassMapError(f"--rare must be one of {', '.join(RARE_POLICIES)}, got '{rare}'")
    if min_instances < 0:
        raise ClassMapError(f"--min-instances must be >= 0, got {min_instances}")
    cats = sorted(categories, key=lambda c: c.id)
    merged: List[Dict[str, object]] = []
    target_name: Dict[int, Optional[str]] = {}
    drop_reasons: Dict[int, str] = {}
    asked: Set[int] = set()  # dropped by an empty class-map target or --rare drop
    unknown: List[str] = []
    kept_as_target: List[str] = []
    if class_map is not None:
        by_name = {c.name: c for c in cats}
        by_lower = {c.name.lower(): c for c in cats}
        for src in class_map:
            if src not in by_name and src.lower() not in by_lower:
                unknown.append(src)
        by_key_lower: Dict[str, List[str]] = {}
        for src in class_map:
            by_key_lower.setdefault(src.lower(), []).append(src)
        for keys in by_key_lower.values():  # 'Bottle,plastic' and 'bottle,glass': one row was silently unused
            if len({class_map[k] for k in keys}) > 1 and not all(k in by_name for k in keys):
                said = " and ".join(f"'{k}' -> '{class_map[k]}'" for k in keys)
                raise ClassMapError(f"the class map has {said}, which differ only in case: category names match "
                                    "a key ignoring case when none matches exactly, so one of them maps nothing; "
                                    "keep one row per category")
        targets = {t.lower(): t for t in reversed([t for t in class_map.values() if t is not None])}
        for c in cats:
            if c.name in class_map:
                dst = class_map[c.name]
            elif c.name.lower() in {k.lower() for k in class_map}:
                dst = next(v for k, v in class_map.items() if k.lower() == c.name.lower())
            elif c.name.lower() in targets:  # already one of our classes (a relabeled `queue export`)
                target_name[c.id] = targets[c.name.lower()]
                kept_as_target.append(c.name)
                continue
            else:
                target_name[c.id] = None
                drop_reasons[c.id] = f"category '{c.name}' is not in the class map" + (
                    f" (its keys are category names; its key '{c.id}' is this category's id)"
                    if str(c.id) in unknown else "")
                continue
            target_name[c.id] = dst
            if dst is None:
                drop_reasons[c.id] = f"category '{c.name}' is mapped to nothing in the class map"
                asked.add(c.id)
        order = [t for t in dict.fromkeys(class_map.values()) if t is not None]
    elif supercategories:
        for c in cats:
            target_name[c.id] = c.supercategory
        order = list(dict.fromkeys(c.supercategory for c in cats))
    else:
        for c in cats:
            target_name[c.id] = c.name
        order = list(dict.fromkeys(c.name for c in cats))
        merged = categories_sharing_a_name(cats)

    counts: Counter = Counter()
    for b in boxes:
        t = target_name.get(b.category_id)
        if t is not None:
            counts[t] += 1
    unused = [t for t in order if counts[t] == 0]
    # With --rare other a rare class named 'other' (or 'others', 'misc') is where the rare ones go, not one of them.
    rare_names = [t for t in order if 0 < counts[t] < min_instances
                  and not (rare == "other" and t.strip().lower() in CATCH_ALL)]
    kept = [t for t in order if counts[t] > 0 and t not in rare_names]
    folded: List[str] = []
    dropped: List[str] = []
    other_name, other_from_source = "", False
    if rare_names and rare == "other":
        folded = rare_names
        other_name = next((t for t in kept if t.strip().lower() in CATCH_ALL), "")
        other_from_source = bool(other_name)
        if not other_name:
            other_name = OTHER
            kept.append(other_name)
        for cid, t in target_name.items():
            if t in rare_names:
                target_name[cid] = other_name
        if other_name in unused:  # a source class of that name without boxes: it is the trained fold target now
            unused.remove(other_name)
    elif rare_names:
        dropped = rare_names
        for cid, t in target_name.items():
            if t in rare_names:
                drop_reasons[cid] = (f"class '{t}' has only {counts[t]} box{'' if counts[t] == 1 else 'es'} "
                                     f"(fewer than --min-instances {min_instances}; --rare drop)")
                target_name[cid] = None
                asked.add(cid)
    ids = {name: i + 1 for i, name in enumerate(kept)}
    target_of = {cid: (ids.get(t) if t is not None else None) for cid, t in target_name.items()}
    return ClassMapping(names=kept, target_of_category=target_of, drop_reasons=drop_reasons, unused=unused,
                        folded_into_other=folded, other_class=other_name, other_from_source=other_from_source,
                        dropped_rare=dropped, map_unknown_sources=unknown,
                        similar=similar_names(kept), read_as_indices=names_read_as_indices(kept),
                        merged_by_name=merged, dropped_as_asked=asked, kept_as_target=kept_as_target,
                        supercategories_warning=_one_supercategory_warning(cats, boxes, order, counts)
                        if supercategories else "")


def _one_supercategory_warning(cats: Sequence[Category], boxes: Sequence[BoxRecord], order: Sequence[str],
                               counts: Counter) -> str:
    """What to tell the user when ``--supercategories`` made one class of two or more classes
    with boxes (Roboflow writes the project name as every class's supercategory); else ``""``."""
    with_boxes = [t for t in order if counts[t] > 0]
    name_of = {c.id: c.name for c in cats}
    sources = {name_of[b.category_id] for b in boxes if b.category_id in name_of}
    if len(with_boxes) != 1 or len(sources) < 2:
        return ""
    sup = with_boxes[0]
    roboflow = any(c.name == sup and c.name not in sources for c in cats)  # its category-0 placeholder
    return (f"--supercategories: every class with boxes has the supercategory '{sup}'"
            + (" (Roboflow writes the project name there)" if roboflow else "")
            + f", so {len(sources)} classes became one: leave --supercategories out to train them apart")


def categories_sharing_a_name(cats: Sequence[Category]) -> List[Dict[str, object]]:
    """``{name, category_ids}`` for each name that two or more categories carry (one file's
    list holding 'cup' as ids 3 and 4): they become one class, as they would by name in a merge."""
    ids: Dict[str, List[object]] = {}
    for c in sorted(cats, key=lambda c: c.id):
        ids.setdefault(c.name, []).append(c.text_id if c.text_id is not None else c.id)
    return [{"name": name, "category_ids": found} for name, found in ids.items() if len(found) > 1]


_LABEL_MAP_ITEM = re.compile(r"\bitem\s*\{((?:[^{}'\"]|'(?:\\.|[^'\\])*'|\"(?:\\.|[^\"\\])*\")*)\}", re.S)
_LABEL_MAP_FIELD = re.compile(r"\b(id|name|display_name)\s*:\s*(-?\d+|'(?:\\.|[^'\\])*'|\"(?:\\.|[^\"\\])*\")")
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r"}


def label_map_names(text: str) -> Dict[int, str]:
    """``{id: name}`` of a TF Object Detection API ``label_map.pbtxt`` (``item { id: 1 name: 'can' }``, fields
    in any order, either quote; an item's ``display_name`` where it has one, as the TF Object Detection API shows
    classes: Open Images' ``name`` is a code); items without an id and a name are left out."""
    found: Dict[int, str] = {}
    for item in _LABEL_MAP_ITEM.finditer(text):
        fields = {key: value for key, value in _LABEL_MAP_FIELD.findall(item.group(1))}
        quoted = fields.get("display_name") or fields.get("name")  # Open Images: name '/m/01g317', display 'person'
        if "id" in fields and quoted and quoted[0] in "'\"":
            found[int(fields["id"])] = re.sub(r"\\(.)", lambda m: _ESCAPES.get(m.group(1), m.group(1)), quoted[1:-1])
    return found


def label_map_pbtxt(names: Sequence[str]) -> str:
    """The TF Object Detection API ``label_map.pbtxt`` text for ``names`` (ids from 1)."""
    items = []
    for i, name in enumerate(names, start=1):
        escaped = name.replace("\\", "\\\\").replace("'", "\\'")
        items.append(f"item {{\n  id: {i}\n  name: '{escaped}'\n}}\n")
    return "".join(items)
