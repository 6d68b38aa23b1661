"""The built-in sample dataset: synthetic litter photos in COCO format.

Deterministic for a seed. Each image shows 0-6 trash items (bottles, cans, cups,
cartons, wrappers, cigarette butts) with distinct shapes and colours, rotated and
sometimes overlapping, on a conveyor belt, on the ground or in a dark scene. The
classes are unbalanced as TACO's are, milder (5 bottles per cigarette butt; TACO's
spread is 400:1): at 200 images no class falls under analyze's long-tail line of 20
boxes, at 30 the rarest do. Boxes are exact: each item is drawn
on its own transparent layer and its box is read from that layer's alpha channel.

Like real exports, the dataset carries the problems a converter must survive:
EXIF-rotated JPEGs, a truncated file, an empty file, a missing file, a text file
named ``.jpg``, NaN and Infinity boxes, a box past the image edge, an unknown
category, an annotation of an unknown image, duplicate annotation ids, an unused
placeholder category (id 0), images with no objects, sub-folders and ``.JPG``
names, and grayscale / RGBA PNG / CMYK images. ``SampleDataset.injected`` lists them
so tests can check that each one is reported.
"""

from __future__ import annotations

import io
import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from edge_trash.atomic_files import write_bytes_atomic as _write_atomic

# (name, supercategory, share of items): unbalanced as TACO is, milder (5:1, TACO's is 400:1).
CLASSES: Tuple[Tuple[str, str, float], ...] = (
    ("bottle", "Bottle", 0.30),
    ("can", "Can", 0.24),
    ("cup", "Cup", 0.17),
    ("carton", "Carton", 0.13),
    ("wrapper", "Plastic bag & wrapper", 0.10),
    ("cigarette", "Cigarette", 0.06),
)
PLACEHOLDER_CATEGORY = {"id": 0, "name": "litter-objects", "supercategory": "none"}
IMAGE_SIZES: Tuple[Tuple[int, int], ...] = (
    (640, 480), (800, 600), (480, 640), (960, 720), (720, 540), (1024, 768),
)
# Item length as a fraction of the image's short side: (min, max).
ITEM_SIZE = {
    "bottle": (0.22, 0.42), "can": (0.13, 0.24), "cup": (0.13, 0.24),
    "carton": (0.16, 0.30), "wrapper": (0.13, 0.28), "cigarette": (0.06, 0.10),
}

Color = Tuple[int, int, int]


@dataclass
class SampleDataset:
    """Where a generated sample dataset lies and which problems were planted in it."""

    root: Path
    annotations: Path
    images: Path
    class_names: List[str]
    num_images: int
    injected: Dict[str, List[int]] = field(default_factory=dict)
    removed: List[Path] = field(default_factory=list)  # photos an earlier run left that this one does not list


# The folders and names this module gives its photos (even images in the first): an earlier run's that this one
# does not write are removed.
_OUR_FOLDERS = ("batch_1", "batch_2")
_OUR_PHOTO = re.compile(r"\d{6}\.(jpg|JPG|png)")


# ----------------------------------------------------------------------------- items


def _rgba(size: Tuple[int, int]) -> Tuple[Image.Image, ImageDraw.ImageDraw]:
    layer = Image.new("RGBA", size, (0, 0, 0, 0))
    return layer, ImageDraw.Draw(layer)


def _pick(rng: np.random.Generator, options: List[Color]) -> Color:
    base = options[int(rng.integers(len(options)))]
    jitter = rng.integers(-18, 19, size=3)
    return tuple(int(np.clip(c + j, 0, 255)) for c, j in zip(base, jitter))  # type: ignore[return-value]


def _draw_bottle(rng: np.random.Generator, length: int) -> Image.Image:
    w = max(8, int(length * 0.32))
    layer, d = _rgba((w, length))
    body = _pick(rng, [(70, 170, 95), (120, 185, 225), (130, 75, 35)])
    neck_w = max(3, w // 3)
    shoulder = int(length * 0.3)
    d.rounded_rectangle([0, shoulder, w - 1, length - 1], radius=w // 4, fill=body + (235,))
    d.polygon([(0, shoulder + w // 4), (w - 1, shoulder + w // 4), ((w + neck_w) // 2, int(length * 0.12)),
               ((w - neck_w) // 2, int(length * 0.12))], fill=body + (235,))
    d.rectangle([(w - neck_w) // 2, int(length * 0.12), (w + neck_w) // 2, shoulder], fill=body + (235,))
    cap = _pick(rng, [(210, 30, 30), (30, 60, 200), (240, 240, 240)])
    d.rectangle([(w - neck_w) // 2 - 1, 0, (w + neck_w) // 2 + 1, int(length * 0.12)], fill=cap + (255,))
    label = _pick(rng, [(250, 250, 250), (240, 200, 40), (200, 40, 40)])
    d.rectangle([0, int(length * 0.5), w - 1, int(length * 0.72)], fill=label + (255,))
    d.line([(w // 4, shoulder + 4), (w // 4, length - 6)], fill=(255, 255, 255, 160), width=max(1, w // 10))
    return layer


def _draw_can(rng: np.random.Generator, length: int) -> Image.Image:
    w = max(8, int(length * 0.56))
    layer, d = _rgba((w, length))
    body = _pick(rng, [(200, 20, 30), (25, 60, 180), (185, 190, 195), (30, 140, 60)])
    rim = (200, 200, 205)
    e = max(2, w // 5)
    d.rectangle([0, e // 2, w - 1, length - 1 - e // 2], fill=body + (255,))
    d.ellipse([0, 0, w - 1, e], fill=rim + (255,))
    d.ellipse([0, length - 1 - e, w - 1, length - 1], fill=rim + (255,))
    d.rectangle([0, int(length * 0.35), w - 1, int(length * 0.5)], fill=(245, 245, 245, 255))
    d.line([(w // 5, e), (w // 5, length - e)], fill=(255, 255, 255, 200), width=max(1, w // 8))
    return layer


def _draw_cup(rng: np.random.Generator, length: int) -> Image.Image:
    w = max(8, int(length * 0.8))
    layer, d = _rgba((w, length))
    body = _pick(rng, [(245, 245, 240), (200, 35, 35), (150, 100, 60)])
    inset = int(w * 0.18)
    d.polygon([(0, 0), (w - 1, 0), (w - 1 - inset, length - 1), (inset, length - 1)], fill=body + (255,))
    d.ellipse([0, 0, w - 1, max(3, length // 8)], fill=(90, 60, 40, 255))
    band = _pick(rng, [(30, 110, 60), (20, 20, 20), (240, 190, 30)])
    d.polygon([(inset // 2, length // 3), (w - 1 - inset // 2, length // 3),
               (w - 1 - int(inset * 0.75), int(length * 0.55)), (int(inset * 0.75), int(length * 0.55))],
              fill=band + (255,))
    return layer


def _draw_carton(rng: np.random.Generator, length: int) -> Image.Image:
    w = max(8, int(length * 0.5))
    layer, d = _rgba((w, length))
    body = _pick(rng, [(245, 245, 245), (175, 130, 80)])
    stripe = _pick(rng, [(30, 80, 200), (210, 40, 40), (40, 160, 70)])
    gable = int(length * 0.2)
    d.polygon([(0, gable), (w // 2, 0), (w - 1, gable)], fill=body + (255,))
    d.rectangle([0, gable, w - 1, length - 1], fill=body + (255,))
    d.rectangle([0, int(length * 0.45), w - 1, int(length * 0.7)], fill=stripe + (255,))
    d.line([(w // 2, 0), (w // 2, gable)], fill=(90, 90, 90, 255), width=1)
    return layer


def _draw_wrapper(rng: np.random.Generator, length: int) -> Image.Image:
    h = max(8, int(length * 0.55))
    layer, d = _rgba((length, h))
    color = _pick(rng, [(245, 205, 25), (130, 40, 160), (245, 120, 20)])
    pts = []
    n = 14
    for k in range(n):
        a = 2 * math.pi * k / n
        r = 0.5 + 0.45 * rng.random()
        pts.append((length / 2 + math.cos(a) * length / 2 * r, h / 2 + math.sin(a) * h / 2 * r))
    d.polygon(pts, fill=color + (255,))
    for _ in range(4):
        x0, y0 = rng.integers(0, length), rng.integers(0, h)
        d.line([(x0, y0), (x0 + length // 6, y0 + h // 5)], fill=(255, 255, 255, 220), width=2)
    zig = [(0, 0), (length // 10, h // 2), (0, h - 1)]
    d.polygon(zig, fill=(255, 255, 255, 200))
    return layer


def _draw_cigarette(rng: np.random.Generator, length: int) -> Image.Image:
    w = max(4, int(length * 0.26))
    layer, d = _rgba((w, length))
    filt = int(length * 0.45)
    d.rectangle([0, 0, w - 1, filt], fill=(215, 140, 60, 255))
    d.rectangle([0, filt, w - 1, length - 1], fill=(250, 250, 245, 255))
    d.rectangle([0, length - max(2, length // 10), w - 1, length - 1], fill=(70, 60, 55, 255))
    return layer


DRAWERS: Dict[str, Callable[[np.random.Generator, int], Image.Image]] = {
    "bottle": _draw_bottle, "can": _draw_can, "cup": _draw_cup,
    "carton": _draw_carton, "wrapper": _draw_wrapper, "cigarette": _draw_cigarette,
}

# ----------------------------------------------------------------------------- scenes


def _background(rng: np.random.Generator, width: int, height: int, scene: str) -> Image.Image:
    if scene == "ground":
        base = np.array([120, 100, 70], dtype=np.float32) + rng.integers(-25, 26, size=3)
        noise = rng.normal(0, 22, size=(height // 8 + 1, width // 8 + 1, 3)).astype(np.float32)
        img = Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8)).resize((width, height),
                                                                                     Image.BILINEAR)
        d = ImageDraw.Draw(img)
        for _ in range(40):
            x, y = int(rng.integers(0, width)), int(rng.integers(0, height))
            r = int(rng.integers(2, 7))
            g = int(rng.integers(90, 170))
            d.ellipse([x - r, y - r, x + r, y + r], fill=(g, g - 10, g - 30))
        return img.filter(ImageFilter.GaussianBlur(1))
    # conveyor belt: dark grey with belt ribs and rails
    g = int(rng.integers(45, 75))
    arr = np.full((height, width, 3), g, dtype=np.float32)
    arr += rng.normal(0, 6, size=(height, width, 1)).astype(np.float32)
    arr[:, ::12] -= 10  # belt ribs across the direction of travel
    rail = max(4, height // 24)
    arr[:rail] = 150
    arr[-rail:] = 150
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def _iou(a: Tuple[float, float, float, float], b: Tuple[float, float, float, float]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def render_scene(rng: np.random.Generator, width: int, height: int, num_items: int,
                 scene: Optional[str] = None, edge_item: bool = False
                 ) -> Tuple[Image.Image, List[Tuple[str, Tuple[float, float, float, float]]]]:
    """Draw one scene; returns the RGB image and ``(class_name, (x0, y0, x1, y1))`` per visible item.

    With ``edge_item`` the last item is placed so that it runs past the right edge
    (its returned box is the visible part, clipped to the image).
    """
    if scene is None:
        scene = ("conveyor", "ground", "dark")[int(rng.choice(3, p=[0.5, 0.35, 0.15]))]
    img = _background(rng, width, height, "ground" if scene == "ground" else "conveyor")
    names = [c[0] for c in CLASSES]
    probs = np.array([c[2] for c in CLASSES])
    probs = probs / probs.sum()
    items: List[Tuple[str, Tuple[float, float, float, float]]] = []
    short = min(width, height)
    for k in range(num_items):
        name = names[int(rng.choice(len(names), p=probs))]
        lo, hi = ITEM_SIZE[name]
        length = max(10, int(short * rng.uniform(lo, hi)))
        layer = DRAWERS[name](rng, length)
        layer = layer.rotate(float(rng.uniform(0, 360)), resample=Image.BICUBIC, expand=True)
        alpha_box = layer.getchannel("A").point(lambda a: 255 if a > 40 else 0).getbbox()
        if alpha_box is None:
            continue
        layer = layer.crop(alpha_box)
        lw, lh = layer.size
        last_edge = edge_item and k == num_items - 1
        for _ in range(30):
            if last_edge:
                x = width - lw // 2
            else:
                x = int(rng.integers(0, max(1, width - lw)))
            y = int(rng.integers(0, max(1, height - lh)))
            box = (float(x), float(y), float(min(width, x + lw)), float(min(height, y + lh)))
            if last_edge or all(_iou(box, other) < 0.25 for _, other in items):
                break
        else:
            continue
        img.paste(layer, (x, y), layer)
        items.append((name, box))
    if scene == "dark":
        arr = np.asarray(img, dtype=np.float32) * rng.uniform(0.22, 0.38)
        img = Image.fromarray(arr.astype(np.uint8))
    return img, items


# ----------------------------------------------------------------------------- dataset


def _jpeg_bytes(img: Image.Image, **kwargs: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=92, **kwargs)
    return buf.getvalue()


def _exif_rotated_jpeg(img: Image.Image, orientation: int) -> bytes:
    """Store ``img`` (the displayed picture) rotated, with the EXIF tag that undoes it."""
    stored = {6: img.transpose(Image.Transpose.ROTATE_90),
              8: img.transpose(Image.Transpose.ROTATE_270),
              3: img.transpose(Image.Transpose.ROTATE_180)}[orientation]
    exif = Image.Exif()
    exif[0x0112] = orientation
    return _jpeg_bytes(stored, exif=exif.tobytes())


def write_sample_dataset(out_dir: os.PathLike, num_images: int = 200, seed: int = 0,
                         with_problems: bool = True) -> SampleDataset:
    """Write the sample dataset (``annotations.json`` and ``images/``) into ``out_dir``.

    The same ``num_images`` and ``seed`` always give the same bytes. With
    ``with_problems`` (the default) a handful of broken files and records are
    planted (see the module docstring); at least 20 images are then needed.
    """
    if num_images < (20 if with_problems else 1):
        raise ValueError(f"num_images must be at least {20 if with_problems else 1}, got {num_images}")
    root = Path(out_dir)
    images_dir = root / "images"
    images_dir.mkdir(parents=True, exist_ok=True)
    class_names = [c[0] for c in CLASSES]
    categories = [dict(PLACEHOLDER_CATEGORY)] + [
        {"id": i + 1, "name": name, "supercategory": sup} for i, (name, sup, _) in enumerate(CLASSES)]
    cat_id = {c["name"]: c["id"] for c in categories}

    # Which image carries which planted problem (fixed positions, so tests can find them).
    problems: Dict[str, List[int]] = {
        "exif_rotated": [], "background": [3, 11], "truncated": [5], "empty_file": [7],
        "missing_file": [9], "not_an_image": [13], "grayscale": [15], "rgba_png": [17],
        "cmyk": [19], "edge_box_clipped": [2], "nan_box": [], "infinity_box": [],
        "unknown_category": [], "unknown_image": [], "duplicate_annotation_id": [],
    } if with_problems else {}
    exif_every = 12

    images: List[dict] = []
    annotations: List[dict] = []
    next_ann = 1
    for idx in range(num_images):
        image_id = idx + 1
        rng = np.random.default_rng([seed, idx])
        width, height = IMAGE_SIZES[int(rng.integers(len(IMAGE_SIZES)))]
        is_bg = image_id in problems.get("background", [])
        num_items = 0 if is_bg else int(rng.integers(1, 7))
        edge = image_id in problems.get("edge_box_clipped", [])
        img, items = render_scene(rng, width, height, max(num_items, 2 if edge else 0) if not is_bg else 0,
                                  edge_item=edge)
        folder = _OUR_FOLDERS[idx % 2]
        ext = ".JPG" if idx % 5 == 4 else ".jpg"
        orientation = 0
        if with_problems and idx % exif_every == 9:
            orientation = (6, 8, 3)[(idx // exif_every) % 3]
            problems["exif_rotated"].append(image_id)
        if image_id in problems.get("rgba_png", []):
            ext = ".png"
        file_name = f"{folder}/{image_id:06d}{ext}"
        path = images_dir / file_name
        if image_id in problems.get("missing_file", []):
            pass  # referenced in the JSON, never written
        elif image_id in problems.get("empty_file", []):
            _write_atomic(path, b"")
        elif image_id in problems.get("not_an_image", []):
            _write_atomic(path, b"this is not a JPEG, it is a text file\n")
        elif image_id in problems.get("truncated", []):
            data = _jpeg_bytes(img)
            _write_atomic(path, data[: len(data) // 2])
        elif image_id in problems.get("grayscale", []):
            _write_atomic(path, _jpeg_bytes(img.convert("L")))
        elif image_id in problems.get("cmyk", []):
            _write_atomic(path, _jpeg_bytes(img.convert("CMYK")))
        elif image_id in problems.get("rgba_png", []):
            buf = io.BytesIO()
            img.convert("RGBA").save(buf, format="PNG")
            _write_atomic(path, buf.getvalue())
        elif orientation:
            _write_atomic(path, _exif_rotated_jpeg(img, orientation))
        else:
            _write_atomic(path, _jpeg_bytes(img))
        images.append({"id": image_id, "file_name": file_name, "width": width, "height": height})
        for k, (name, (x0, y0, x1, y1)) in enumerate(items):
            bbox = [round(x0, 1), round(y0, 1), round(x1 - x0, 1), round(y1 - y0, 1)]
            if edge and k == len(items) - 1:
                # As exported by a labelling tool that let the box run past the edge.
                bbox[2] = round(bbox[2] + 37.5, 1)
            annotations.append({"id": next_ann, "image_id": image_id, "category_id": cat_id[name],
                                "bbox": bbox, "area": round(bbox[2] * bbox[3], 1), "iscrowd": 0,
                                "segmentation": []})
            next_ann += 1

    if with_problems:
        def planted(kind: str, image_id: int, category_id: int, bbox: List[float]) -> None:
            nonlocal next_ann
            annotations.append({"id": next_ann, "image_id": image_id, "category_id": category_id,
                                "bbox": bbox, "area": 0.0, "iscrowd": 0})
            problems[kind].append(next_ann)
            next_ann += 1

        planted("nan_box", 1, 1, [float("nan"), 10.0, 20.0, 20.0])
        planted("infinity_box", 1, 1, [float("inf"), float("inf"), float("-inf"), float("-inf")])
        planted("unknown_category", 1, 99, [10.0, 10.0, 20.0, 20.0])
        planted("unknown_image", 999999, 1, [10.0, 10.0, 20.0, 20.0])
        # A real box of image 4 exported twice under the same id by a buggy tool:
        # both records are kept (and renumbered) as the export stated them.
        dup = next(a for a in annotations if a["image_id"] == 4)
        problems["duplicate_annotation_id"].append(dup["id"])
        twin = next(a for a in annotations if a["image_id"] == 8)
        twin["id"] = dup["id"]

    coco = {
        "info": {"description": "edge-trash synthetic litter sample", "version": "1", "seed": seed},
        "licenses": [],
        "images": images,
        "annotations": annotations,
        "categories": categories,
    }
    ann_path = root / "annotations.json"
    _write_atomic(ann_path, json.dumps(coco, indent=1).encode("utf-8"))  # NaN/Infinity as TACO has them
    # An earlier, larger run's photos (or one whose planted missing photo this run wrote) would be found by the
    # build's search and make this dataset another: the photos of our names the JSON does not list are removed.
    listed = {im["file_name"] for im in images if im["id"] not in problems.get("missing_file", [])}
    removed = [path for folder in _OUR_FOLDERS if (images_dir / folder).is_dir()
               for path in sorted((images_dir / folder).iterdir())
               if _OUR_PHOTO.fullmatch(path.name) and f"{folder}/{path.name}" not in listed and path.is_file()]
    for path in removed:
        path.unlink()
    return SampleDataset(root=root, annotations=ann_path, images=images_dir, class_names=class_names,
                         num_images=num_images, injected=problems, removed=removed)


# ----------------------------------------------------------------------------- conveyor replay


@dataclass
class ConveyorReplay:
    """Frames of items riding a belt past a trigger line, with the truth of each item."""

    frames_dir: Path
    truth: Path
    num_frames: int
    items: List[dict]


def write_conveyor_frames(out_dir: os.PathLike, num_items: int = 24, seed: int = 1000, width: int = 640,
                          height: int = 480, speed_px: int = 24, spacing_px: int = 260,
                          trigger: float = 0.5) -> ConveyorReplay:
    """Write a conveyor recording (``frames/000000.jpg``...) and ``truth.json``.

    Items (drawn like the sample dataset's, with other seeds, so they are held out)
    enter on the left and move right ``speed_px`` per frame, ``spacing_px`` apart;
    ``truth.json`` lists each item's class and the frame where its centre crosses
    the vertical trigger line at ``trigger`` * width.
    """
    root = Path(out_dir)
    frames_dir = root / "frames"
    frames_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng([seed, 7])
    names = [c[0] for c in CLASSES]
    # an even-ish mix so every class is seen in the replay
    classes = [names[k % len(names)] for k in range(num_items)]
    rng.shuffle(classes)
    items = []
    for k, name in enumerate(classes):
        lo, hi = ITEM_SIZE[name]
        length = max(16, int(height * rng.uniform(lo, hi)))
        layer = DRAWERS[name](rng, length)
        layer = layer.rotate(float(rng.uniform(0, 360)), resample=Image.BICUBIC, expand=True)
        box = layer.getchannel("A").point(lambda a: 255 if a > 40 else 0).getbbox()
        layer = layer.crop(box) if box else layer
        y = int(rng.integers(height // 8, max(height // 8 + 1, height - height // 8 - layer.size[1])))
        start_x = -layer.size[0] - k * spacing_px  # left edge at frame 0
        items.append({"item": k, "class": name, "layer": layer, "y": y, "start_x": start_x})
    line_x = trigger * width
    last_x = max(-it["start_x"] for it in items) + width
    num_frames = int(math.ceil(last_x / speed_px)) + 2
    base = _background(np.random.default_rng([seed, 8]), width + speed_px * 12, height, "conveyor")
    truth = []
    for it in items:
        w = it["layer"].size[0]
        cross = int(math.ceil((line_x - w / 2.0 - it["start_x"]) / speed_px))
        truth.append({"item": it["item"], "class": it["class"], "crossing_frame": cross})
    for f in range(num_frames):
        offset = (f * speed_px) % (speed_px * 12)
        img = base.crop((speed_px * 12 - offset, 0, speed_px * 12 - offset + width, height))
        for it in items:
            x = it["start_x"] + f * speed_px
            if x + it["layer"].size[0] <= 0 or x >= width:
                continue
            img.paste(it["layer"], (x, it["y"]), it["layer"])
        _write_atomic(frames_dir / f"{f:06d}.jpg", _jpeg_bytes(img))
    truth_path = root / "truth.json"
    _write_atomic(truth_path, json.dumps({"width": width, "height": height, "trigger": {"axis": "x",
                                          "position": trigger, "direction": 1}, "speed_px": speed_px,
                                          "items": truth}, indent=1).encode("utf-8"))
    return ConveyorReplay(frames_dir=frames_dir, truth=truth_path, num_frames=num_frames, items=truth)
