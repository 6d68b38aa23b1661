"""Pictures of an evaluation: images with true and predicted boxes, PR curves, a confusion matrix.

matplotlib (Agg backend, no display needed) and Pillow; every file is written atomically.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any, Dict, List, Mapping, Sequence, Tuple

import numpy as np

from edge_trash.atomic_files import write_bytes_atomic as _write_atomic

TRUE_COLOR = (40, 200, 40)
PRED_COLOR = (230, 40, 40)


def draw_boxes(image: np.ndarray, truth: Sequence[Mapping[str, Any]],
               predicted: Sequence[Mapping[str, Any]], class_names: Mapping[int, str],
               score_threshold: float = 0.3) -> Any:
    """A PIL image with true boxes (green) and predictions >= threshold (red, with score).

    ``truth`` and ``predicted`` are COCO rows (``bbox`` [x, y, w, h] pixels, ``category_id``,
    ``score`` for predictions) of this image.
    """
    from PIL import Image, ImageDraw

    canvas = Image.fromarray(np.asarray(image, dtype=np.uint8)).convert("RGB")
    draw = ImageDraw.Draw(canvas)
    width = max(1, round(max(canvas.size) / 320))
    for ann in truth:
        x, y, w, h = ann["bbox"]
        draw.rectangle([x, y, x + w, y + h], outline=TRUE_COLOR, width=width)
        draw.text((x + 2, y + 1), class_names.get(ann["category_id"], "?"), fill=TRUE_COLOR)
    for det in predicted:
        if det["score"] < score_threshold:
            continue
        x, y, w, h = det["bbox"]
        draw.rectangle([x, y, x + w, y + h], outline=PRED_COLOR, width=width)
        label = f"{class_names.get(det['category_id'], '?')} {det['score']:.2f}"
        draw.text((x + 2, max(0, y + h - 12)), label, fill=PRED_COLOR)
    return canvas


def render_images(images: Sequence[Any], gt_coco: Mapping[str, Any],
                  detections: Sequence[Mapping[str, Any]], out_dir: Path, prefix: str,
                  score_threshold: float = 0.3) -> List[Path]:
    """Write one PNG per image (``EvalImage``) with its true and predicted boxes; return paths."""
    names = {c["id"]: c["name"] for c in gt_coco["categories"]}
    truth: Dict[Any, List[Mapping[str, Any]]] = {}
    for ann in gt_coco["annotations"]:
        truth.setdefault(ann["image_id"], []).append(ann)
    preds: Dict[Any, List[Mapping[str, Any]]] = {}
    for det in detections:
        preds.setdefault(det["image_id"], []).append(det)
    paths = []
    for image in images:
        canvas = draw_boxes(image.decode(), truth.get(image.image_id, []),
                            preds.get(image.image_id, []), names, score_threshold)
        buf = io.BytesIO()
        canvas.save(buf, format="PNG")
        path = Path(out_dir) / f"{prefix}_{image.image_id}.png"
        _write_atomic(path, buf.getvalue())
        paths.append(path)
    return paths


def _save_figure(fig: Any, path: Path) -> Path:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    _write_atomic(path, buf.getvalue())
    return path


def plot_precision_recall(curves: Mapping[str, Tuple[np.ndarray, np.ndarray]], path: Path,
                          iou: float = 0.5) -> Path:
    """Precision-recall curve per class (from ``evaluate.precision_recall_curves``) as PNG.

    Each label shows the class's AP at this IoU: the mean of its 101 interpolated points.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 5))
    for name, (recall, precision) in curves.items():
        ax.plot(recall, precision, label=f"{name} (AP{round(iou * 100)} {np.mean(precision):.3f})")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_title(f"Precision-recall at IoU {iou:.2f} (COCO 101-point interpolation)")
    if curves:
        ax.legend(loc="lower left", fontsize=8)
    ax.grid(alpha=0.3)
    try:
        return _save_figure(fig, Path(path))
    finally:
        plt.close(fig)


def plot_confusion_matrix(matrix: np.ndarray, class_names: Sequence[str], path: Path) -> Path:
    """Confusion matrix (rows true + 'background', columns predicted + 'missed') as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from edge_trash.train.evaluate import confusion_labels

    rows, cols = confusion_labels(class_names)
    size = 1.2 + 0.6 * len(cols)
    fig, ax = plt.subplots(figsize=(size + 1.5, size))
    image = ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(len(cols)), cols, rotation=45, ha="right")
    ax.set_yticks(range(len(rows)), rows)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    top = matrix.max() if matrix.size else 0
    for i in range(matrix.shape[0]):
        for j in range(matrix.shape[1]):
            ax.text(j, i, str(int(matrix[i, j])), ha="center", va="center",
                    color="white" if top and matrix[i, j] > top / 2 else "black", fontsize=8)
    fig.colorbar(image, ax=ax, fraction=0.046)
    ax.set_title("Class confusion (IoU >= 0.5)")
    try:
        return _save_figure(fig, Path(path))
    finally:
        plt.close(fig)
