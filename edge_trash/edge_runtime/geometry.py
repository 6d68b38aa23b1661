"""Named value types for boxes and detections (pure Python, like pycoral's ``BBox``/``Object``)."""

import collections
from typing import NamedTuple


class BBox(collections.namedtuple("BBox", ["xmin", "ymin", "xmax", "ymax"])):
    """An axis-aligned box. Units are whatever the caller uses (normalized or pixels)."""

    __slots__ = ()

    @property
    def width(self) -> float:
        """Width (xmax - xmin)."""
        return self.xmax - self.xmin

    @property
    def height(self) -> float:
        """Height (ymax - ymin)."""
        return self.ymax - self.ymin

    @property
    def area(self) -> float:
        """Area; 0 for an invalid box."""
        return self.width * self.height if self.valid else 0.0

    @property
    def valid(self) -> bool:
        """True when the box has non-negative width and height."""
        return self.width >= 0 and self.height >= 0

    @property
    def center(self):
        """(x, y) of the centre."""
        return ((self.xmin + self.xmax) / 2.0, (self.ymin + self.ymax) / 2.0)

    def scale(self, sx: float, sy: float) -> "BBox":
        """The box with x scaled by ``sx`` and y by ``sy``."""
        return BBox(self.xmin * sx, self.ymin * sy, self.xmax * sx, self.ymax * sy)

    def translate(self, dx: float, dy: float) -> "BBox":
        """The box moved by (dx, dy)."""
        return BBox(self.xmin + dx, self.ymin + dy, self.xmax + dx, self.ymax + dy)

    def clip(self, width: float, height: float) -> "BBox":
        """The box clipped to [0, width] x [0, height]."""
        return BBox(min(max(self.xmin, 0.0), width), min(max(self.ymin, 0.0), height),
                    min(max(self.xmax, 0.0), width), min(max(self.ymax, 0.0), height))

    @staticmethod
    def intersect(a: "BBox", b: "BBox") -> "BBox":
        """The intersection (may be invalid when they do not overlap)."""
        return BBox(max(a.xmin, b.xmin), max(a.ymin, b.ymin), min(a.xmax, b.xmax), min(a.ymax, b.ymax))

    @staticmethod
    def iou(a: "BBox", b: "BBox") -> float:
        """Intersection over union, 0.0 when they do not overlap."""
        inter = BBox.intersect(a, b).area
        union = a.area + b.area - inter
        return inter / union if union > 0 else 0.0

    def to_list(self):
        """[xmin, ymin, xmax, ymax] as plain floats (for JSON)."""
        return [float(v) for v in self]


class Detection(NamedTuple):
    """One detected object in FRAME pixel coordinates.

    ``class_id`` is 0-based without background (line k of labels.txt); ``label`` its name.
    """

    class_id: int
    label: str
    score: float
    bbox: BBox

    def to_dict(self) -> dict:
        """JSON-friendly form."""
        return {"class_id": int(self.class_id), "label": self.label, "score": float(self.score),
                "bbox": self.bbox.to_list()}
