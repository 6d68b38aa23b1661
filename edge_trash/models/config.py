"""SSD MobileNet v2 configuration: one typed dataclass, named presets, validation.

Every number the model, the anchors, the decoder and the exporter need lives here,
so no module copies a threshold or a scale of its own.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Dict, List, Tuple

HEADS = ("ssd", "ssdlite")
# Widths Keras publishes MobileNetV2 weights for (and that keep channel counts Edge TPU friendly).
WIDTHS = (0.35, 0.5, 0.75, 1.0)
MIN_INPUT_SIZE = 128  # below this the 1x1 extra layers collapse; tests use 128, products 224..416
MAX_INPUT_SIZE = 640
INPUT_STRIDE = 32  # MobileNetV2's output stride; sizes must divide evenly


@dataclass
class SSDConfig:
    """Configuration of an SSD detector with a MobileNetV2 backbone.

    ``num_classes`` excludes the background class. Anchors follow the TF Object
    Detection API's ``ssd_anchor_generator``: ``num_layers`` scales linearly spaced
    between ``min_scale`` and ``max_scale``, each with ``aspect_ratios`` plus one
    interpolated scale at aspect ratio 1; the lowest layer has 3 anchors
    ((0.1, 1), (min_scale, 2), (min_scale, 0.5)) when ``reduce_boxes_in_lowest_layer``.
    """

    num_classes: int = 6
    input_size: int = 320
    width_multiplier: float = 1.0
    head: str = "ssd"
    # Extra feature layers after the backbone (TF OD API ssd_mobilenet_v2: 512, 256, 256, 128).
    extra_layer_depths: Tuple[int, ...] = (512, 256, 256, 128)
    min_depth: int = 16
    # Anchors.
    min_scale: float = 0.2
    max_scale: float = 0.95
    aspect_ratios: Tuple[float, ...] = (1.0, 2.0, 0.5, 3.0, 1.0 / 3.0)
    interpolated_scale_aspect_ratio: float = 1.0
    reduce_boxes_in_lowest_layer: bool = True
    # Box coder scales (ty, tx, th, tw), as TFLite_Detection_PostProcess's y/x/h/w_scale.
    box_coder_scales: Tuple[float, float, float, float] = (10.0, 10.0, 5.0, 5.0)
    # Anchor matching (IoU).
    match_threshold: float = 0.5
    unmatched_threshold: float = 0.4
    # Post-processing.
    max_detections: int = 100
    score_threshold: float = 0.05
    iou_threshold: float = 0.6
    # Initial foreground probability of the class head (focal-loss prior).
    prior_probability: float = 0.01
    # BatchNorm moving-average momentum for every layer (Keras' MobileNetV2 uses 0.999,
    # too slow for short runs from scratch: evaluation then sees stale statistics).
    batch_norm_momentum: float = 0.99

    @property
    def num_layers(self) -> int:
        """Number of feature maps: block 13 expansion, the 1280 layer, then the extra layers."""
        return 2 + len(self.extra_layer_depths)

    def feature_map_sizes(self) -> List[int]:
        """Spatial size of each feature map for ``input_size`` (stride 16, 32, then /2 each, ceil)."""
        sizes = [-(-self.input_size // 16), -(-self.input_size // 32)]
        for _ in self.extra_layer_depths:
            sizes.append(-(-sizes[-1] // 2))
        return sizes

    def validate(self) -> "SSDConfig":
        """Raise ``ValueError`` naming the bad field and the valid choices; return self."""
        if self.head not in HEADS:
            raise ValueError(f"model.head: got {self.head!r}, expected one of {HEADS}")
        if self.width_multiplier not in WIDTHS:
            raise ValueError(
                f"model.width_multiplier: got {self.width_multiplier}, expected one of {WIDTHS}")
        if not (MIN_INPUT_SIZE <= self.input_size <= MAX_INPUT_SIZE) or self.input_size % INPUT_STRIDE:
            raise ValueError(
                f"model.input_size: got {self.input_size}, expected a multiple of {INPUT_STRIDE} "
                f"between {MIN_INPUT_SIZE} and {MAX_INPUT_SIZE} (224..416 for real use)")
        if self.num_classes < 1:
            raise ValueError(f"model.num_classes: got {self.num_classes}, expected >= 1")
        if not 0.0 < self.min_scale < self.max_scale <= 1.0:
            raise ValueError(
                f"model.min_scale/max_scale: got {self.min_scale}/{self.max_scale}, "
                "expected 0 < min_scale < max_scale <= 1")
        if not self.aspect_ratios or any(r <= 0 for r in self.aspect_ratios):
            raise ValueError(f"model.aspect_ratios: got {self.aspect_ratios}, expected positive values")
        if len(self.box_coder_scales) != 4 or any(s <= 0 for s in self.box_coder_scales):
            raise ValueError(
                f"model.box_coder_scales: got {self.box_coder_scales}, expected 4 positive values")
        if not 0.0 < self.unmatched_threshold <= self.match_threshold < 1.0:
            raise ValueError(
                f"model.unmatched_threshold/match_threshold: got {self.unmatched_threshold}/"
                f"{self.match_threshold}, expected 0 < unmatched <= match < 1")
        for name in ("score_threshold", "iou_threshold", "prior_probability", "batch_norm_momentum"):
            value = getattr(self, name)
            if not 0.0 < value < 1.0:
                raise ValueError(f"model.{name}: got {value}, expected a value in (0, 1)")
        if self.max_detections < 1:
            raise ValueError(f"model.max_detections: got {self.max_detections}, expected >= 1")
        if any(d < 1 for d in self.extra_layer_depths):
            raise ValueError(f"model.extra_layer_depths: got {self.extra_layer_depths}, expected >= 1")
        return self

    def to_dict(self) -> Dict[str, Any]:
        """A JSON-serialisable dict (tuples become lists)."""
        out = dataclasses.asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> "SSDConfig":
        """Build from ``to_dict()`` output; unknown keys are an error naming them."""
        known = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise ValueError(f"model: unknown keys {unknown}; valid keys: {sorted(known)}")
        values = {}
        for key, value in data.items():
            if isinstance(value, list):
                value = tuple(value)
            values[key] = value
        return cls(**values)

    def replace(self, **changes: Any) -> "SSDConfig":
        """A copy with ``changes`` applied (the original is never modified)."""
        return dataclasses.replace(self, **changes)


PRESETS: Dict[str, SSDConfig] = {
    # The TF OD API's ssd_mobilenet_v2 (Coral's reference detector), at 320 px.
    "ssd_mobilenet_v2_320": SSDConfig(input_size=320, width_multiplier=1.0, head="ssd"),
    # Same feature maps with SSDLite (depthwise separable) heads and extra layers.
    "ssdlite_mobilenet_v2_320": SSDConfig(input_size=320, width_multiplier=1.0, head="ssdlite"),
    # Small and fast: trains from scratch on the sample data on 2 CPU cores (make demo).
    "demo": SSDConfig(input_size=224, width_multiplier=0.35, head="ssdlite", batch_norm_momentum=0.9),
}


def get_preset(name: str) -> SSDConfig:
    """Return a copy of the named preset; ``KeyError`` lists the names."""
    if name not in PRESETS:
        raise KeyError(f"unknown model preset {name!r}; choose one of {sorted(PRESETS)}")
    return dataclasses.replace(PRESETS[name])
