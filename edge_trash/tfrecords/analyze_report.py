"""``analyze``'s output: the PNG plots and the Markdown report of the statistics
:mod:`edge_trash.tfrecords.analyze` computed (matplotlib is imported only to plot)."""

from __future__ import annotations

import io
import math
import re
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, Iterable, List, Optional, Sequence, Tuple

from edge_trash.terminal import plural


if TYPE_CHECKING:
    from edge_trash.tfrecords.analyze import Thresholds


def held_out(where: str) -> bool:
    """Whether the source ``where`` names is a held-out split of a build (val, test, a fold): small
    counts there are expected, so the long-tail and tiny-object flags and marks judge the data the
    model learns from (the annotations, train) instead."""
    return where.startswith("tfrecords/") and where != "tfrecords/train"


PLOT_CLASSES = 60  # bars in the classes plot; more classes show the fewest and the most


def plotted_classes(classes: Sequence[Dict[str, Any]]) -> Tuple[List[Dict[str, Any]], str]:
    """``(bars, what is shown)``: the classes by instances, fewest first; past ``PLOT_CLASSES`` (LVIS
    has 1203: one bar each would be a picture 24,000 px tall) the half with the fewest and the half
    with the most, a ``(N more)`` bar of 0 between them, and a line saying so."""
    ordered = sorted(classes, key=lambda c: c["instances"])
    if len(ordered) <= PLOT_CLASSES:
        return ordered, ""
    half = PLOT_CLASSES // 2
    gap = {"name": f"({len(ordered) - 2 * half} more)", "instances": 0}
    return (ordered[:half] + [gap] + ordered[-half:],
            f"{len(ordered)} classes: the {half} with the fewest and most (all in stats.json)")


TICK_LABEL_CHARS = 40  # longer class names are cut with "…" in the plots (LVIS names run to 40 and more)


def tick_label(name: str) -> str:
    """A class name short enough to label a bar: cut to ``TICK_LABEL_CHARS`` with "…" (whole in stats.json)."""
    return name if len(name) <= TICK_LABEL_CHARS else name[:TICK_LABEL_CHARS - 1] + "…"


BOX_COUNT_BARS = 60  # at most this many bars in the boxes-per-image plot


def boxes_per_image_bars(histogram: Dict[str, int]) -> Tuple[List[int], List[int], int]:
    """``(bar starts, images per bar, boxes per bar)`` for the boxes-per-image plot: one bar per count
    up to ``BOX_COUNT_BARS``; past it, bars of several counts, so that one image of 2000 boxes beside
    nine of one box does not shrink every bar to less than a pixel."""
    counts = {int(k): n for k, n in histogram.items()}
    if not counts:
        return [], [], 1
    width = max(1, math.ceil((max(counts) + 1) / BOX_COUNT_BARS))
    bars: Dict[int, int] = {}
    for count, images in counts.items():
        start = count - count % width
        bars[start] = bars.get(start, 0) + images
    starts = sorted(bars)
    return starts, [bars[s] for s in starts], width


PLOT_FILE = re.compile(r"(annotations|tfrecords_[A-Za-z0-9_]+)_(classes|boxes_per_image|box_sizes|image_sizes|"
                       r"brightness)\.png")  # the names draw_plots gives


def stale_plots(out: Path, written: Sequence[str]) -> List[str]:
    """The plots an earlier ``analyze`` wrote into ``out`` that this one does not (the fold plots of a build
    since rebuilt without ``--folds``), to remove so the folder holds what report.md shows. Only file names
    ``draw_plots`` gives are named."""
    return [path.name for path in sorted(out.glob("*.png"))
            if PLOT_FILE.fullmatch(path.name) and path.name not in written and path.is_file()]


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", name).strip("_")


def draw_plots(name: str, stats: Dict[str, Any], sqrt_areas: Sequence[float], th: Thresholds) -> Dict[str, bytes]:
    """The PNG plots of one source: ``{file name: PNG bytes}``, written by the caller with the rest.

    ``sqrt_areas`` are the square roots of the box areas, for the box-size histogram.
    """
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    slug = _slug(name)
    written: Dict[str, bytes] = {}

    def save(fig: Any, suffix: str) -> None:
        buf = io.BytesIO()
        with warnings.catch_warnings():  # emoji and CJK names: DejaVu Sans has no glyph for them
            warnings.filterwarnings("ignore", message=r"Glyph \d+ .*missing from")
            warnings.filterwarnings("ignore", message="Tight layout not applied")
            fig.tight_layout()
            fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")  # never cut a label or the title
        plt.close(fig)
        written[f"{slug}_{suffix}.png"] = buf.getvalue()

    classes, shown = plotted_classes(stats["classes"])
    title = f"{name}: instances per class" + (f"\n{shown}" if shown else "")
    fig, ax = plt.subplots(figsize=(7, max(2.5, 0.22 * len(classes) + 1)))
    tail = not held_out(name)  # a held-out split's small counts are expected: no long-tail marks there
    colors = ["tab:red" if tail and 0 < c["instances"] < th.rare_instances else "tab:blue" for c in classes]
    ax.barh(range(len(classes)), [c["instances"] for c in classes], color=colors,
            tick_label=[tick_label(c["name"]) for c in classes])
    if tail:
        ax.axvline(th.rare_instances, color="tab:red", linestyle="--", linewidth=1,
                   label=f"long tail (< {th.rare_instances})")
    used = [c["instances"] for c in classes if c["instances"] > 0]
    if used and max(used) > 50 * min(used):
        ax.set_xscale("symlog")
    ax.set_xlabel("instances")
    ax.set_title(title)
    if tail:
        ax.legend(loc="lower right", fontsize=8)
    ax.tick_params(axis="y", labelsize=7)
    save(fig, "classes")

    starts, heights, width = boxes_per_image_bars(stats["boxes_per_image"]["histogram"])
    fig, ax = plt.subplots(figsize=(6, 3))
    ax.bar(starts, heights, width=0.8 * width, align="edge" if width > 1 else "center", color="tab:blue")
    ax.set_xlabel("boxes in the image" + (f" (bars of {width})" if width > 1 else ""))
    ax.set_ylabel("images")
    ax.set_title(f"{name}: boxes per image")
    save(fig, "boxes_per_image")

    sq = list(sqrt_areas)
    fig, ax = plt.subplots(figsize=(6, 3))
    if sq:
        positive = [max(v, 0.5) for v in sq]
        bins = [10 ** (k / 20) for k in range(int(math.floor(20 * math.log10(min(positive)))),
                                                int(math.ceil(20 * math.log10(max(positive)))) + 2)]
        ax.hist(positive, bins=bins, color="tab:blue")
        ax.set_xscale("log")
    for edge, label in ((math.sqrt(th.small_area), "small | medium"), (math.sqrt(th.medium_area), "medium | large")):
        ax.axvline(edge, color="tab:red", linestyle="--", linewidth=1)
        ax.text(edge, 0.92, f" {label}", color="tab:red", fontsize=7, transform=ax.get_xaxis_transform())
    ax.set_xlabel("sqrt(box area) in " + stats["frame"].split(" (")[0])
    ax.set_ylabel("boxes")
    ax.set_title(f"{name}: box sizes")
    save(fig, "box_sizes")

    dims = stats["image_sizes"]["distinct"]
    fig, ax = plt.subplots(figsize=(5, 4))
    if dims:
        ax.scatter([d["width"] for d in dims], [d["height"] for d in dims],
                   s=[20 + 180 * d["images"] / max(x["images"] for x in dims) for d in dims], alpha=0.6)
    ax.set_xlabel("width (px)")
    ax.set_ylabel("height (px)")
    ax.set_title(f"{name}: image sizes")
    save(fig, "image_sizes")

    bright = stats.get("brightness")
    if bright and bright["per_image"]:
        fig, ax = plt.subplots(figsize=(6, 3))
        ax.hist(list(bright["per_image"].values()), bins=[4 * k for k in range(65)], color="tab:blue")
        ax.axvline(th.dark_luma, color="tab:red", linestyle="--", linewidth=1, label=f"dark (< {th.dark_luma:g})")
        ax.set_xlabel("mean luma (0-255)")
        ax.set_ylabel("images")
        ax.set_title(f"{name}: brightness")
        ax.legend(fontsize=8)
        save(fig, "brightness")
    return written


_MARKDOWN_SPECIAL = re.compile(r"([\\`*_\[\]<>|~&])")


def md_text(text: Any) -> str:
    """``text`` as Markdown shows it literally: a class named ``can|bottle`` would split a table
    row in two, ``*x*`` turn italic and ``<b>`` pass as HTML; their special characters are escaped."""
    return _MARKDOWN_SPECIAL.sub(r"\\\1", str(text))


def md_code(text: Any) -> str:
    """``text`` as a Markdown code span, fenced by more backticks than it holds (a path may hold one).
    For text outside tables: inside a code span a backslash is shown as it is, so nothing is escaped."""
    text = str(text)
    fence = "`" * (max((len(run) for run in re.findall("`+", text)), default=0) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def _table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> List[str]:
    """A Markdown table; every cell is shown literally (see :func:`md_text`)."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(md_text(v) for v in row) + " |" for row in rows]
    return lines + [""]


def _fmt(value: Optional[float], digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _without_boxes(s: Dict[str, Any]) -> str:
    """The images with no box: in an annotation file, those with no annotation (background
    examples) apart from those whose every box is unusable (the build leaves them out)."""
    problems = s.get("problems")
    if problems is None:  # records: a record with no box is a background example
        return f"images without boxes: {s['boxes_per_image']['histogram'].get('0', 0)}"
    dropped = len(problems.get("image_ids_every_box_dropped", []))
    return (f"images without boxes: {problems['images_without_boxes']}"
            + (f", and {dropped} more whose every box is unusable (build-tfrecords leaves them out)" if dropped
               else ""))


def render_report(stats: Dict[str, Any], sections: List[Tuple[str, Dict[str, Any], List[str]]]) -> str:
    """``report.md``: flags first, then one section per ``(name, stats, plot files)`` with tables and plots."""
    th = stats["thresholds"]
    lines = ["# Dataset analysis", ""]
    src = stats["inputs"]
    def shown(value: Any) -> str:
        return ", ".join(md_code(v) for v in value) if isinstance(value, list) else md_code(value)

    lines += [f"- annotations: {shown(src['annotations'])}" if src["annotations"] else "- annotations: not given",
              f"- images: {shown(src['images'])}" if src["images"] else
              "- images: not read (brightness measured on the pictures stored in the TFRecords)" if src["tfrecords"]
              else "- images: not read (brightness not measured)",
              f"- tfrecords: {md_code(src['tfrecords'])}" if src["tfrecords"] else "- tfrecords: not given", ""]
    lines += ["## Flags", ""]
    if stats["flags"]:
        lines += [f"- **{f['kind'].replace('_', ' ')}** ({md_text(f['where'])}): {md_text(f['message'])}"
                  for f in stats["flags"]]
    else:
        lines.append("None.")
    lines.append("")
    if stats.get("tfrecords") and len(stats["tfrecords"]["splits"]) > 1:
        splits = stats["tfrecords"]["splits"]
        names: List[str] = []
        for s in splits.values():
            names += [c["name"] for c in s["classes"] if c["name"] not in names]
        counts = {split: {c["name"]: c["instances"] for c in s["classes"]} for split, s in splits.items()}
        lines += ["## Classes per split (TFRecords)", ""]
        lines += _table(["class"] + list(splits), [[n] + [counts[s].get(n, 0) for s in splits] for n in names])
    for name, s, plots in sections:
        counts = f"{plural(s['images'], 'image')}, {plural(s['boxes'], 'box')}"
        lines += [f"## {name}", "", f"{counts}. Box sizes in {s['frame']}.", ""]
        lines += _table(["class", "instances", "share", "images", "small", "medium", "large", "tiny"],
                        [[c["name"] + (" (long tail)" if not held_out(name) and 0 < c["instances"] < th["rare_instances"]
                                       else ""),
                          c["instances"], f"{c['share']:.1%}", c["images"], c["small"], c["medium"], c["large"],
                          c["tiny"]] for c in sorted(s["classes"], key=lambda c: -c["instances"])])
        b, z = s["boxes_per_image"], s["box_sizes"]
        lines += [f"Boxes per image: median {_fmt(b['median'])}, mean {_fmt(b['mean'], 2)}, max {_fmt(b['max'], 0)}; "
                  f"{_without_boxes(s)}.", "",
                  f"Box sizes by box area (w x h; COCO's size classes: small < {th['small_area']:g} px², medium < "
                  f"{th['medium_area']:g} px²; COCO's own evaluator sorts by the annotation's `area`, a mask's area "
                  f"where there is one): small {z['small']}, medium {z['medium']}, large {z['large']}; tiny (small "
                  f"or a side < {th['tiny_relative_side']:.0%} of the image): {z['tiny']} ({z['tiny_share']:.1%}); "
                  f"median sqrt(area) {_fmt(z['sqrt_area_px']['median'])} px.", ""]
        sizes, a = s["image_sizes"], s["aspect_ratios"]
        lines += _table(["width x height", "images"], [[f"{d['width']} x {d['height']}", d["images"]]
                                                       for d in sizes["distinct"][:10]])
        if len(sizes["distinct"]) > 10:
            lines += [f"... and {len(sizes['distinct']) - 10} more sizes.", ""]
        lines += [f"Aspect ratio (width/height): median {_fmt(a['median'], 2)}, range {_fmt(a['min'], 2)}-"
                  f"{_fmt(a['max'], 2)}; landscape {a['landscape']}, portrait {a['portrait']}, square {a['square']}. "
                  f"Size outliers: {len(sizes['outliers'])}."
                  + (f" Files whose size differs from the JSON: {len(sizes['json_mismatch'])}."
                     if "json_mismatch" in sizes else ""), ""]
        if s["brightness"]:
            m = s["brightness"]["mean_luma"]
            lines += [f"Brightness (mean luma of {s['brightness']['measured']} images): median {_fmt(m['median'])}, "
                      f"range {_fmt(m['min'])}-{_fmt(m['max'])}; dark (< {th['dark_luma']:g}): "
                      f"{len(s['brightness']['dark'])}; unreadable: {len(s['brightness']['unreadable'])}.", ""]
        if s.get("problems"):
            p = s["problems"]
            lines += ["Annotation problems:", ""]
            rows = [[k.replace("_", " "), n] for k, n in p["boxes_rejected_by_kind"].items() if n]
            rows += [["boxes past the image (clipped + outside)", p["boxes_past_image"]],
                     ["boxes clipped to the image (kept)", p["boxes_clipped"]],
                     ["boxes taken from the segmentation (no bbox, or [] or [0, 0, 0, 0])",
                      p["boxes_from_segmentation"]],
                     ["rotated boxes (attributes.rotation), kept as the upright box around them",
                      p["boxes_rotated"]],
                     ["duplicate annotation ids", len(p["duplicate_annotation_ids"])],
                     ["rejected image entries", len(p["images_rejected"])],
                     ["image sizes read from the files", len(p["image_sizes_read_from_files"])],
                     ["image ids written as text (numbered by build-tfrecords)", p["image_ids_as_text"]],
                     ["unused categories", len(p["unused_categories"])],
                     ["images without annotations (background)", p["images_without_boxes"]],
                     ["images whose every box is unusable (left out)",
                      len(p.get("image_ids_every_box_dropped", []))]]
            lines += _table(["problem", "count"], rows)
        lines += [f"![{Path(p).stem}]({p})" for p in plots] + [""]
    return "\n".join(lines)
